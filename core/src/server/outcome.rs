//! What became of a stored transaction, recipient by recipient, and the decisions that
//! follow from it: the one reply when every recipient failed
//! ([`transaction_failed_reply`]), whether a delivery status notification about the failed
//! recipients may go to the sender ([`should_send_dsn`]), and that notification's content
//! ([`partial_failure_dsn`]).
//!
//! A 250 after DATA is a promise for every recipient: when some recipients got the message
//! and others did not, the 250 is only honest if the sender hears about the others, which is
//! what the DSN is for. The DSN goes only to senders whose MAIL FROM was verified (SPF pass,
//! or a DKIM signature of an aligned domain), so that forged senders do not receive
//! backscatter; otherwise the failures are only logged.

use crate::queue::{Action, DsnInput, DsnKind, DsnRecipient};
use crate::smtp::{Enhanced, ForwardPath, Host, Reply, Ret, ReversePath};

use super::Transaction;

/// Why one recipient did not get the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureCause {
    /// No such address at a domain we host (accepted at RCPT on purpose, refused after DATA
    /// so addresses cannot be probed cheaply).
    UnknownUser,
    /// The account's storage quota would be exceeded by this message.
    MailboxFull,
    /// The domain or account does not take mail now.
    Disabled,
    /// Storing into this recipient's mailbox failed.
    Storage,
    /// Local policy refused the message for this recipient.
    Policy,
}

/// One recipient that did not get the message, with its own reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientFailure {
    /// The recipient as given in RCPT TO.
    pub recipient: String,
    /// Reply code: 4xx temporary, 5xx permanent.
    pub code: u16,
    /// Enhanced status code (class matches `code`).
    pub enhanced: Enhanced,
    /// One line of text.
    pub reason: String,
    /// Caused by what the sender asked for (unknown user, full mailbox), not by a fault of
    /// ours; when every failure is one, a failed transaction is answered 554, else 451.
    pub user_error: bool,
    /// Why.
    pub cause: FailureCause,
}

impl RecipientFailure {
    fn new(
        recipient: &str,
        code: u16,
        enhanced: Enhanced,
        reason: impl Into<String>,
        user_error: bool,
        cause: FailureCause,
    ) -> RecipientFailure {
        RecipientFailure {
            recipient: recipient.to_string(),
            code,
            enhanced,
            reason: single_line(&reason.into()),
            user_error,
            cause,
        }
    }

    /// `550 5.1.1 no such user`.
    pub fn unknown_user(recipient: &str) -> RecipientFailure {
        Self::new(
            recipient,
            550,
            Enhanced::new(5, 1, 1),
            "no such user",
            true,
            FailureCause::UnknownUser,
        )
    }

    /// `452 4.2.2 account storage full`.
    pub fn mailbox_full(recipient: &str) -> RecipientFailure {
        Self::new(
            recipient,
            452,
            Enhanced::new(4, 2, 2),
            "account storage full",
            true,
            FailureCause::MailboxFull,
        )
    }

    /// `450 4.2.1 domain is disabled, try again later`.
    pub fn domain_disabled(recipient: &str) -> RecipientFailure {
        Self::new(
            recipient,
            450,
            Enhanced::new(4, 2, 1),
            "domain is disabled, try again later",
            false,
            FailureCause::Disabled,
        )
    }

    /// Storing failed for this recipient: the storage's reply (451 4.3.0, or 452 4.3.1 when
    /// the disk is full).
    pub fn storage(recipient: &str, reply: &Reply) -> RecipientFailure {
        Self::new(
            recipient,
            reply.code,
            reply.enhanced.unwrap_or(Enhanced::new(4, 3, 0)),
            reply.lines.join(" "),
            false,
            FailureCause::Storage,
        )
    }

    /// Any other refusal, with its reply.
    pub fn from_reply(
        recipient: &str,
        reply: &Reply,
        user_error: bool,
        cause: FailureCause,
    ) -> RecipientFailure {
        let class = if reply.code >= 500 { 5 } else { 4 };
        Self::new(
            recipient,
            reply.code,
            reply.enhanced.unwrap_or(Enhanced::new(class, 0, 0)),
            reply.lines.join(" "),
            user_error,
            cause,
        )
    }

    /// A permanent failure (5xx).
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// This failure as a one-line reply.
    pub fn reply(&self) -> Reply {
        Reply::new(self.code, Some(self.enhanced), self.reason.clone())
    }
}

/// Control characters (CR, LF) would break a reply line or a header.
fn single_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The answer to [`super::Effect::Store`]: what became of the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Every recipient got the message (or it was queued), durably.
    Delivered,
    /// Some recipients got the message durably; these did not. When the sender may be told,
    /// a DSN naming them is durable too.
    Partial {
        /// The recipients that did not get it.
        failed: Vec<RecipientFailure>,
    },
    /// No recipient got the message; one failure per recipient.
    Failed(Vec<RecipientFailure>),
    /// The transaction as a whole was refused (policy, storage error): this reply.
    Refused(Reply),
}

impl From<Result<(), Reply>> for StoreOutcome {
    fn from(r: Result<(), Reply>) -> StoreOutcome {
        match r {
            Ok(()) => StoreOutcome::Delivered,
            Err(r) => StoreOutcome::Refused(r),
        }
    }
}

/// The one reply for a transaction in which every recipient failed. Failures with the same
/// code and enhanced code give that code with their reasons (each reason once); otherwise
/// one line per recipient (`550 5.1.1 <rcpt>: reason`) and `multiple errors`, coded
/// `554 5.3.0` when every failure was the sender's doing (unknown user, full mailbox), else
/// `451 4.3.0` so the sender tries again.
pub fn transaction_failed_reply(failures: &[RecipientFailure]) -> Reply {
    let Some(first) = failures.first() else {
        return Reply::new(451, Some(Enhanced::new(4, 3, 0)), "error processing");
    };
    let same = failures
        .iter()
        .all(|f| f.code == first.code && f.enhanced == first.enhanced);
    if same {
        let mut lines: Vec<String> = Vec::new();
        for f in failures {
            if !lines.contains(&f.reason) {
                lines.push(f.reason.clone());
            }
        }
        return Reply {
            code: first.code,
            enhanced: Some(first.enhanced),
            lines,
        };
    }
    let mut lines: Vec<String> = failures
        .iter()
        .map(|f| format!("{} {} <{}>: {}", f.code, f.enhanced, f.recipient, f.reason))
        .collect();
    lines.push("multiple errors".to_string());
    let (code, enhanced) = if failures.iter().all(|f| f.user_error) {
        (554, Enhanced::new(5, 3, 0))
    } else {
        (451, Enhanced::new(4, 3, 0))
    };
    Reply {
        code,
        enhanced: Some(enhanced),
        lines,
    }
}

/// Whether the reply to a failed transaction is held back by the unknown-recipient delay:
/// every recipient was an unknown user (someone guessing addresses).
pub fn is_unknown_recipients_only(failures: &[RecipientFailure]) -> bool {
    !failures.is_empty()
        && failures
            .iter()
            .all(|f| f.cause == FailureCause::UnknownUser)
}

/// What is known about the sender of a transaction, for [`should_send_dsn`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DsnFacts {
    /// The MAIL FROM domain, lower-case; `None` for the null sender or an IP literal.
    pub mail_from_domain: Option<String>,
    /// The domain SPF was evaluated for, when the result was pass.
    pub spf_pass_domain: Option<String>,
    /// The domains (`d=`) of DKIM signatures that verified.
    pub dkim_pass_domains: Vec<String>,
}

impl DsnFacts {
    /// The facts of a transaction (its MAIL FROM and the results of the incoming checks).
    pub fn of(t: &Transaction) -> DsnFacts {
        let mail_from_domain = match &t.mail_from {
            ReversePath::Mailbox(a) => match &a.host {
                Host::Domain(_) => Some(a.host.to_string().to_ascii_lowercase()),
                _ => None,
            },
            ReversePath::Null => None,
        };
        let mut f = DsnFacts {
            mail_from_domain,
            ..DsnFacts::default()
        };
        if let Some(v) = &t.auth {
            if let (Some(spf), Some(args)) = (&v.spf, &v.spf_args) {
                if spf.result == crate::spf::SpfStatus::Pass {
                    f.spf_pass_domain = Some(args.domain.to_ascii_lowercase());
                }
            }
            if let Some(dkim) = &v.dkim {
                f.dkim_pass_domains = dkim
                    .iter()
                    .filter(|r| r.status == crate::dkim::Status::Pass)
                    .map(|r| r.domain.clone())
                    .collect();
            }
        }
        f
    }
}

/// Whether a DSN about failed recipients may go to the MAIL FROM address: never to the null
/// sender, and only when the sender is verified, so a forged MAIL FROM gets no backscatter:
/// SPF passed for the MAIL FROM domain itself, or a DKIM signature verified for a domain
/// aligned with it (same organizational domain).
pub fn should_send_dsn(f: &DsnFacts) -> bool {
    let Some(domain) = f.mail_from_domain.as_deref() else {
        return false;
    };
    let domain = domain.trim_end_matches('.');
    if f.spf_pass_domain
        .as_deref()
        .is_some_and(|d| d.trim_end_matches('.').eq_ignore_ascii_case(domain))
    {
        return true;
    }
    f.dkim_pass_domains
        .iter()
        .any(|d| !d.is_empty() && same_organization(d, domain))
}

/// Whether two domains have the same registrable domain by the public suffix list (a
/// heuristic for backscatter, not DMARC alignment, which RFC 9989 bases on the DNS tree
/// walk).
fn same_organization(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim_end_matches('.'), b.trim_end_matches('.'));
    a.eq_ignore_ascii_case(b)
        || crate::publicsuffix::organizational_domain(a)
            == crate::publicsuffix::organizational_domain(b)
}

/// The DSN input about the failed recipients of a delivered transaction, to the MAIL FROM
/// address, from `postmaster@` the first failed recipient's domain (or `reporting_mta` when
/// it has none). Recipients that asked for no failure notice (`NOTIFY` without `FAILURE`)
/// are left out; `None` when none is left or the sender is null. Whether to send it at all
/// is [`should_send_dsn`]'s decision.
pub fn partial_failure_dsn<'a>(
    t: &'a Transaction,
    failed: &[RecipientFailure],
    reporting_mta: &str,
    message_id: String,
) -> Option<DsnInput<'a>> {
    let ReversePath::Mailbox(sender) = &t.mail_from else {
        return None;
    };
    let mut recipients = Vec::new();
    for f in failed {
        let params = t.recipients.iter().find_map(|(p, params)| {
            let text = match p {
                ForwardPath::Postmaster => "postmaster".to_string(),
                ForwardPath::Mailbox(a) => a.to_string(),
            };
            (text == f.recipient).then_some(params)
        });
        if params
            .and_then(|p| p.notify)
            .is_some_and(|n| n.never || !n.failure)
        {
            continue;
        }
        let detail = if f.is_permanent() {
            "permanent failure"
        } else {
            "temporary failure"
        };
        recipients.push(DsnRecipient {
            final_recipient: f.recipient.clone(),
            original_recipient: params.and_then(|p| p.orcpt.clone()),
            action: Action::Failed,
            status: f.enhanced,
            remote_mta: None,
            diagnostic: Some(f.reply()),
            detail: Some(detail.to_string()),
            last_attempt: Some(t.received),
            will_retry_until: None,
        });
    }
    if recipients.is_empty() {
        return None;
    }
    let from_domain = failed
        .first()
        .and_then(|f| f.recipient.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_else(|| reporting_mta.to_string());
    Some(DsnInput {
        reporting_mta: reporting_mta.to_string(),
        from: format!("postmaster@{from_domain}"),
        to: sender.to_string(),
        kind: DsnKind::Failure,
        recipients,
        original: t.message.original(),
        // A spooled message is past the memory threshold: its DSN carries the header only
        // (RET=FULL would compose the whole message in memory).
        ret: match t.message.is_spooled() {
            true => Ret::Hdrs,
            false => t.params.ret.unwrap_or(Ret::Hdrs),
        },
        envid: t.params.envid.clone(),
        arrival_date: Some(t.received),
        message_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DSN about a spooled message returns its header only, even with RET=FULL: the
    /// whole message would be composed in memory.
    #[test]
    fn spooled_message_dsn_returns_headers_only() {
        use crate::server::{MessageData, SpooledBytes};
        use crate::smtp::{Address, MailParams};
        let sender = Address::parse("s@example.org").unwrap();
        let rcpt = Address::parse("r@mox.example").unwrap();
        let mk = |message| Transaction {
            cid: 1,
            remote_ip: "192.0.2.1".parse().unwrap(),
            ehlo: "x".into(),
            tls: None,
            account: None,
            mail_from: ReversePath::Mailbox(sender.clone()),
            params: MailParams {
                ret: Some(Ret::Full),
                ..Default::default()
            },
            recipients: vec![(ForwardPath::Mailbox(rcpt.clone()), Default::default())],
            message,
            requiretls: None,
            hold_until: None,
            from_header: None,
            login: None,
            received: crate::UnixTime(1),
            auth: None,
        };
        let msg = b"Subject: x\r\n\r\nbody\r\n".to_vec();
        let failed = [f("r@mox.example", 550, (5, 1, 1), "no", true)];
        let memory = mk(MessageData::memory(msg.clone()));
        let d = partial_failure_dsn(&memory, &failed, "mx", "id".into()).unwrap();
        assert_eq!(d.ret, Ret::Full);
        let spooled = mk(MessageData::spooled(
            Vec::new(),
            SpooledBytes::new(std::sync::Arc::new(msg)),
        ));
        let d = partial_failure_dsn(&spooled, &failed, "mx", "id".into()).unwrap();
        assert_eq!(d.ret, Ret::Hdrs);
    }

    fn f(rcpt: &str, code: u16, e: (u8, u16, u16), reason: &str, user: bool) -> RecipientFailure {
        RecipientFailure {
            recipient: rcpt.to_string(),
            code,
            enhanced: Enhanced::new(e.0, e.1, e.2),
            reason: reason.to_string(),
            user_error: user,
            cause: FailureCause::Policy,
        }
    }

    fn render(r: &Reply) -> String {
        let mut w = Vec::new();
        r.render(&mut w);
        String::from_utf8(w).unwrap()
    }

    #[test]
    fn failed_reply_table() {
        let unknown = |r: &str| RecipientFailure::unknown_user(r);
        let full = |r: &str| RecipientFailure::mailbox_full(r);
        let storage = |r: &str| {
            RecipientFailure::storage(
                r,
                &Reply::new(451, Some(Enhanced::new(4, 3, 0)), "error processing"),
            )
        };
        let cases: Vec<(&str, Vec<RecipientFailure>, &str)> = vec![
            (
                "one unknown user",
                vec![unknown("a@x.example")],
                "550 5.1.1 no such user\r\n",
            ),
            (
                "same code: reasons once each",
                vec![unknown("a@x.example"), unknown("b@x.example")],
                "550 5.1.1 no such user\r\n",
            ),
            (
                "same code, different reasons: joined",
                vec![
                    f("a@x.example", 550, (5, 7, 1), "refused a", true),
                    f("b@x.example", 550, (5, 7, 1), "refused b", true),
                ],
                "550-5.7.1 refused a\r\n550 5.7.1 refused b\r\n",
            ),
            (
                "user errors of different codes: 554",
                vec![unknown("a@x.example"), full("b@x.example")],
                "554-5.3.0 550 5.1.1 <a@x.example>: no such user\r\n\
                 554-5.3.0 452 4.2.2 <b@x.example>: account storage full\r\n\
                 554 5.3.0 multiple errors\r\n",
            ),
            (
                "a server error among them: 451",
                vec![unknown("a@x.example"), storage("b@x.example")],
                "451-4.3.0 550 5.1.1 <a@x.example>: no such user\r\n\
                 451-4.3.0 451 4.3.0 <b@x.example>: error processing\r\n\
                 451 4.3.0 multiple errors\r\n",
            ),
            (
                "same code but one a server error: the shared code",
                vec![storage("a@x.example"), storage("b@x.example")],
                "451 4.3.0 error processing\r\n",
            ),
            ("empty", vec![], "451 4.3.0 error processing\r\n"),
        ];
        for (name, failures, want) in cases {
            assert_eq!(render(&transaction_failed_reply(&failures)), want, "{name}");
        }
    }

    #[test]
    fn reasons_stay_on_one_line() {
        let r = RecipientFailure::from_reply(
            "a@x.example",
            &Reply::new(550, None, "bad\r\n250 injected"),
            true,
            FailureCause::Policy,
        );
        assert_eq!(r.reason, "bad 250 injected");
        assert_eq!(r.enhanced, Enhanced::new(5, 0, 0));
    }

    #[test]
    fn unknown_recipients_only() {
        let u = RecipientFailure::unknown_user("a@x.example");
        let q = RecipientFailure::mailbox_full("b@x.example");
        assert!(is_unknown_recipients_only(&[u.clone(), u.clone()]));
        assert!(!is_unknown_recipients_only(&[u, q]));
        assert!(!is_unknown_recipients_only(&[]));
    }

    #[test]
    fn should_send_dsn_table() {
        let facts = |from: Option<&str>, spf: Option<&str>, dkim: &[&str]| DsnFacts {
            mail_from_domain: from.map(String::from),
            spf_pass_domain: spf.map(String::from),
            dkim_pass_domains: dkim.iter().map(|d| d.to_string()).collect(),
        };
        let cases = [
            ("null sender", facts(None, Some("example.org"), &[]), false),
            (
                "null sender with dkim",
                facts(None, None, &["example.org"]),
                false,
            ),
            (
                "nothing verified",
                facts(Some("example.org"), None, &[]),
                false,
            ),
            (
                "spf pass for the mail from domain",
                facts(Some("example.org"), Some("example.org"), &[]),
                true,
            ),
            (
                "spf pass, case and trailing dot",
                facts(Some("example.org"), Some("Example.ORG."), &[]),
                true,
            ),
            (
                "spf pass for another domain (helo)",
                facts(Some("example.org"), Some("mail.example.org"), &[]),
                false,
            ),
            (
                "dkim pass, same domain",
                facts(Some("example.org"), None, &["example.org"]),
                true,
            ),
            (
                "dkim pass, relaxed alignment (subdomain)",
                facts(Some("bounces.example.org"), None, &["example.org"]),
                true,
            ),
            (
                "dkim pass, relaxed alignment under a public suffix",
                facts(Some("a.example.co.uk"), None, &["b.example.co.uk"]),
                true,
            ),
            (
                "dkim pass, different organization",
                facts(Some("example.org"), None, &["example.net"]),
                false,
            ),
            (
                "dkim pass for a public suffix sibling",
                facts(Some("one.co.uk"), None, &["two.co.uk"]),
                false,
            ),
            (
                "empty dkim domain",
                facts(Some("example.org"), None, &[""]),
                false,
            ),
        ];
        for (name, f, want) in cases {
            assert_eq!(should_send_dsn(&f), want, "{name}");
        }
    }
}
