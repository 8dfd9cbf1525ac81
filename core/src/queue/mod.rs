//! The outgoing queue's decisions, without the I/O: which recipients are due and how they
//! are combined into one transaction ([`QueueConfig::due`]), what happens after a delivery
//! attempt (backoff with jitter, permanent failure, delayed DSN, suppression:
//! [`QueueConfig::after_attempt`]), holds and hold rules, future release, routes and
//! transports ([`route`]), the order of the hosts to try ([`mx::MxPlan`]) and the DSN
//! messages sent back to senders ([`dsn::compose_dsn`]).
//!
//! Everything is a function of its arguments: wall time comes in as [`UnixTime`], randomness
//! as a [`Rng`](crate::Rng). Queue records live in storage; a [`QueueItem`] is the part of one record
//! (one recipient of one message) that the scheduler looks at, and maps field by field to
//! the storage model.
//!
//! A driver's loop:
//!
//! ```text
//! loop {
//!     let items = store.queue_list(..);
//!     for batch in config.due(&items, now.wall, &routes, &in_flight) {
//!         in_flight.start(&batch);
//!         spawn: resolve (MxPlan), deliver with the client machine, then for each item
//!             match config.after_attempt(&mut item, &result, now.wall, &mut rng) { .. }
//!             write item back / retire it, compose and queue DSNs, in_flight.finish(&batch)
//!     }
//!     sleep until next_wakeup(&items) or a new message or a finished batch
//! }
//! ```

pub mod dsn;
pub mod dsnread;
pub mod mx;
pub mod route;
pub mod schedule;

pub use dsn::{compose_dsn, must_not_send_dsn, Action, DsnInput, DsnKind, DsnRecipient};
pub use mx::{MxHost, MxOptions, MxPlan, MxVerdict};
pub use route::{
    select_transport, Route, Routes, SmtpAuth, SmtpTls, Transport, TransportDirect, TransportSmtp,
    TransportSocks5, TransportSubmission,
};
pub use schedule::{
    next_wakeup, AttemptResult, Batch, BatchKey, Decision, DsnNotice, Failure, InFlight,
    QueueConfig, QueueConfigBuilder, QueueConfigError,
};

use crate::smtp::{Enhanced, Notify, Reply, Ret};
use crate::UnixTime;

/// The DSN parameters (RFC 3461) given with the message and the recipient.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DsnParams {
    /// `ENVID=`, xtext-decoded.
    pub envid: Option<String>,
    /// `RET=`; `None` when not given (headers only are returned).
    pub ret: Option<Ret>,
    /// `NOTIFY=`; `None` when not given (failure and delay are reported).
    pub notify: Option<Notify>,
    /// `ORCPT=` as (address type, decoded address).
    pub orcpt: Option<(String, String)>,
}

impl DsnParams {
    /// Whether a failure DSN is wanted (default yes; `NOTIFY=NEVER` or a list without
    /// `FAILURE` says no).
    pub fn wants_failure(&self) -> bool {
        self.notify.is_none_or(|n| !n.never && n.failure)
    }

    /// Whether a delay DSN is wanted (default yes).
    pub fn wants_delay(&self) -> bool {
        self.notify.is_none_or(|n| !n.never && n.delay)
    }

    /// Whether a success DSN is wanted (only when asked for).
    pub fn wants_success(&self) -> bool {
        self.notify.is_some_and(|n| !n.never && n.success)
    }
}

/// One recipient of one queued message, as the scheduler sees it. Maps to storage's
/// `QueueEntry` (id, msg_id, size, attempts, last_error) and `QueueRecipient` (the rest;
/// `requiretls`: `None` = default, `Some(true)` = REQUIRETLS, `Some(false)` =
/// `TLS-Required: No`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueItem {
    /// Id of this entry.
    pub id: u64,
    /// Id of the queued message bytes, shared by the recipients of one message.
    pub msg_id: u64,
    /// The submitting account (the postmaster account for DSNs).
    pub sender_account: Option<String>,
    /// MAIL FROM address; empty for the null sender `<>`.
    pub mail_from: String,
    /// The recipient address.
    pub recipient: String,
    /// The recipient's domain: lower-case A-label form (or an address literal as written).
    pub recipient_domain: String,
    /// Not attempted before this time (the first one is the FUTURERELEASE time or the time of
    /// queueing).
    pub next_attempt: UnixTime,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// On hold: never due until released.
    pub hold: bool,
    /// REQUIRETLS state: `None` default policy, `Some(true)` REQUIRETLS, `Some(false)`
    /// `TLS-Required: No`.
    pub requiretls: Option<bool>,
    /// Message size in bytes.
    pub size: u64,
    /// Transport chosen at submission; `None` lets routes decide.
    pub transport: Option<String>,
    /// The last error, full text (possibly several reply lines).
    pub last_error: Option<String>,
    /// DSN parameters.
    pub dsn: DsnParams,
    /// This message is itself a DSN.
    pub is_dsn: bool,
    /// When the message was queued.
    pub queued: UnixTime,
}

/// Whether a queued recipient is due at `now`: not held and its next attempt time has
/// come. The scheduler and storage's due index both follow it.
pub fn is_due(hold: bool, next_attempt: UnixTime, now: UnixTime) -> bool {
    !hold && next_attempt <= now
}

/// The lower-case domain of an address (`""` when there is no `@`).
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}

impl QueueItem {
    /// The domain of MAIL FROM, lower-case; `""` for the null sender.
    pub fn sender_domain(&self) -> String {
        domain_of(&self.mail_from)
    }

    /// Due at `now`: not held and its next attempt time has come ([`is_due`]).
    pub fn is_due(&self, now: UnixTime) -> bool {
        is_due(self.hold, self.next_attempt, now)
    }

    /// Administrator `kick`: attempt at `now` (a held item stays held).
    pub fn kick(&mut self, now: UnixTime) {
        self.next_attempt = now;
    }

    /// Administrator `release` (and hold rule removal): takes the item off hold; its
    /// `next_attempt` is kept, so a FUTURERELEASE time still applies.
    pub fn release(&mut self) {
        self.hold = false;
    }
}

/// A rule that puts newly queued messages on hold, borrowed from wherever it is kept
/// (storage keeps the rules). Every condition that is set must match; a rule with no
/// condition holds everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoldRule<'a> {
    /// The sender account equals this.
    pub account: Option<&'a str>,
    /// The MAIL FROM domain equals this (case-insensitive).
    pub sender_domain: Option<&'a str>,
    /// The recipient domain equals this (case-insensitive).
    pub recipient_domain: Option<&'a str>,
}

impl HoldRule<'_> {
    /// Whether a new recipient matches: its sender account, MAIL FROM and recipient
    /// address. An address without `@` has no domain and matches no domain condition.
    pub fn matches(&self, sender_account: Option<&str>, mail_from: &str, recipient: &str) -> bool {
        let domain_is = |want: Option<&str>, address: &str| {
            want.is_none_or(|d| {
                address
                    .rsplit_once('@')
                    .is_some_and(|(_, got)| got.eq_ignore_ascii_case(d))
            })
        };
        self.account.is_none_or(|a| sender_account == Some(a))
            && domain_is(self.sender_domain, mail_from)
            && domain_is(self.recipient_domain, recipient)
    }
}

/// Reply codes whose permanent failure puts the recipient on the sender account's
/// suppression list.
pub const SUPPRESS_CODES: [u16; 5] = [521, 550, 551, 553, 556];

/// Enhanced codes (class 5) whose permanent failure puts the recipient on the suppression
/// list: bad mailbox, bad system, bad syntax, mailbox moved, mailbox disabled, refused by
/// policy.
pub const SUPPRESS_ENHANCED: [(u16, u16); 6] = [(1, 1), (1, 2), (1, 3), (1, 6), (2, 1), (7, 1)];

/// Failed deliveries in a row to one recipient after which it is suppressed.
pub const SUPPRESS_AFTER_FAILURES: u32 = 3;

/// Whether a permanent failure with this reply puts the recipient on the suppression list.
/// Transient replies never do.
pub fn should_suppress(reply: &Reply) -> bool {
    reply.is_permanent() && should_suppress_codes(reply.code, reply.enhanced)
}

/// [`should_suppress`] for a failure known by its codes only (a DSN's Diagnostic-Code
/// and Status): a 5xx code that suppresses, or a suppressing enhanced code.
pub fn should_suppress_codes(code: u16, enhanced: Option<Enhanced>) -> bool {
    (500..600).contains(&code)
        && (SUPPRESS_CODES.contains(&code) || enhanced.is_some_and(is_suppress_enhanced))
}

fn is_suppress_enhanced(e: Enhanced) -> bool {
    e.class == 5 && SUPPRESS_ENHANCED.contains(&(e.subject, e.detail))
}

/// What a recipient's final failure does to the sender account's suppression list: the
/// reason to record, or `None`. `by_reply`: the reply itself suppresses
/// ([`should_suppress`], decided with the failure); `streak`: failed messages in a row to
/// the recipient, this one included, as storage counted them; `text`: the failure.
pub fn suppression_after_failure(by_reply: bool, streak: u32, text: &str) -> Option<String> {
    if by_reply {
        Some(text.to_string())
    } else if streak >= SUPPRESS_AFTER_FAILURES {
        Some(format!("{streak} failed deliveries in a row; last: {text}"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn item(id: u64) -> QueueItem {
        QueueItem {
            id,
            msg_id: 1,
            sender_account: Some("alice".into()),
            mail_from: "alice@example.org".into(),
            recipient: format!("r{id}@example.net"),
            recipient_domain: "example.net".into(),
            next_attempt: UnixTime(1000),
            attempts: 0,
            hold: false,
            requiretls: None,
            size: 100,
            transport: None,
            last_error: None,
            dsn: DsnParams::default(),
            is_dsn: false,
            queued: UnixTime(1000),
        }
    }

    #[test]
    fn suppression_codes() {
        let cases: &[(u16, Option<&str>, bool)] = &[
            (550, None, true),
            (521, None, true),
            (551, None, true),
            (553, None, true),
            (556, None, true),
            (554, None, false),
            (552, None, false),
            (554, Some("5.1.1"), true),
            (554, Some("5.1.2"), true),
            (554, Some("5.1.3"), true),
            (554, Some("5.1.6"), true),
            (554, Some("5.2.1"), true),
            (554, Some("5.7.1"), true),
            (554, Some("5.7.0"), false),
            (554, Some("5.2.2"), false),
            (450, Some("4.1.1"), false),
            (421, None, false),
            (250, None, false),
        ];
        for &(code, e, want) in cases {
            let r = Reply::new(code, e.and_then(Enhanced::parse), "x");
            assert_eq!(should_suppress(&r), want, "{code} {e:?}");
        }
    }

    /// Three failed deliveries in a row suppress; a suppressing reply does at once.
    #[test]
    fn suppression_after_failure_table() {
        let cases: [(bool, u32, Option<&str>); 6] = [
            (false, 0, None),
            (false, 1, None),
            (false, 2, None),
            (false, 3, Some("3 failed deliveries in a row; last: 550 no")),
            (false, 7, Some("7 failed deliveries in a row; last: 550 no")),
            (true, 1, Some("550 no")),
        ];
        for (by_reply, streak, want) in cases {
            assert_eq!(
                suppression_after_failure(by_reply, streak, "550 no").as_deref(),
                want,
                "{by_reply} {streak}"
            );
        }
        assert_eq!(
            suppression_after_failure(true, 5, "550 no").as_deref(),
            Some("550 no")
        );
    }

    #[test]
    fn hold_rules() {
        let rule =
            |a: Option<&'static str>, s: Option<&'static str>, r: Option<&'static str>| HoldRule {
                account: a,
                sender_domain: s,
                recipient_domain: r,
            };
        let cases = [
            (rule(None, None, None), true),
            (rule(Some("alice"), None, None), true),
            (rule(Some("bob"), None, None), false),
            (rule(None, Some("EXAMPLE.org"), None), true),
            (rule(None, Some("example.net"), None), false),
            (rule(None, None, Some("Example.Net")), true),
            (rule(None, None, Some("example.org")), false),
            (
                rule(Some("alice"), Some("example.org"), Some("example.net")),
                true,
            ),
            (
                rule(Some("alice"), Some("example.org"), Some("other")),
                false,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(
                r.matches(Some("alice"), "a@Example.Org", "b@example.net"),
                want,
                "{r:?}"
            );
        }
        // No sender account, the null sender, an address without a domain.
        assert!(!rule(Some("alice"), None, None).matches(None, "", "b@example.net"));
        assert!(!rule(None, Some(""), None).matches(None, "", "b@example.net"));
        assert!(!rule(None, None, Some("x")).matches(None, "", "x"));
        assert!(rule(None, None, None).matches(None, "", "x"));
    }

    /// Transcript across the pieces: a due item to a null-MX domain is planned, fails
    /// permanently without a connection, and its sender gets a failure DSN.
    #[test]
    fn null_mx_to_dsn() {
        use crate::dns::{run_sync, StaticZone};
        let zone = StaticZone::parse("example.net. MX 0 .\n").unwrap();
        let c = QueueConfig::default();
        let mut items = vec![item(1)];
        let batches = c.due(
            &items,
            UnixTime(1000),
            &Routes::default(),
            &InFlight::default(),
        );
        assert_eq!(batches.len(), 1);
        let mut plan = MxPlan::new(
            &batches[0].key.recipient_domain,
            MxOptions::default(),
            crate::Rng::new(1),
        );
        let verdict = run_sync(&mut plan, |q| zone.lookup(q), 10).unwrap();
        assert_eq!(verdict, MxVerdict::NullMx);
        let result = verdict.attempt_result("example.net").unwrap();
        let mut rng = crate::Rng::new(2);
        let Decision::Failed {
            dsn: Some(notice),
            suppress: false,
        } = c.after_attempt(&mut items[0], &result, UnixTime(1000), &mut rng)
        else {
            panic!("null MX fails at once")
        };
        let original = b"Subject: hi\r\n\r\nbody\r\n";
        let input = DsnInput::for_item(
            &items[0],
            notice.kind,
            vec![notice.recipient],
            "mail.example.org",
            original,
            "q1".into(),
        );
        let msg = String::from_utf8(compose_dsn(&input, UnixTime(1001))).unwrap();
        assert!(msg.contains("To: <alice@example.org>\r\n"));
        assert!(msg.contains("From: <postmaster@example.org>\r\n"));
        assert!(msg.contains("Final-Recipient: rfc822; r1@example.net\r\n"));
        assert!(
            msg.contains("Status: 5.1.10 (example.net does not accept mail [null MX])\r\n"),
            "{msg}"
        );
    }

    #[test]
    fn kick_and_release() {
        let mut it = item(1);
        it.next_attempt = UnixTime(5000);
        it.hold = true;
        it.kick(UnixTime(2000));
        assert!(
            !it.is_due(UnixTime(2000)),
            "held items stay held when kicked"
        );
        it.release();
        assert!(it.is_due(UnixTime(2000)));
        it.next_attempt = UnixTime(9000);
        assert!(!it.is_due(UnixTime(2000)));
    }

    #[test]
    fn notify_defaults() {
        let mut p = DsnParams::default();
        assert!(p.wants_failure() && p.wants_delay() && !p.wants_success());
        p.notify = Some(Notify {
            never: true,
            ..Notify::default()
        });
        assert!(!p.wants_failure() && !p.wants_delay() && !p.wants_success());
        p.notify = Some(Notify {
            success: true,
            ..Notify::default()
        });
        assert!(!p.wants_failure() && !p.wants_delay() && p.wants_success());
    }
}
