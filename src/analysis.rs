//! The incoming analysis' outside world: the reputation facts of a transaction and the
//! answers to core's [`Reputation`] questions from an account's history in storage. The
//! decisions are core's (`rmox_core::reputation`, `IncomingPolicy::analyze`).

use rmox_core::reputation::{
    Answer, Facts, FromFacts, Hit, Key, Outcome, Query, Reputation, SentKey, Step,
};
use rmox_core::server::{Transaction, Verdicts};
use rmox_core::smtp::ReversePath;
use rmox_core::spf::SpfStatus;
use rmox_core::UnixTime;
use rmox_storage::{IndexKind, MailStore, SentTo, StoreError};

/// Questions one analysis asks at most (core asks at most about a dozen plus one per DKIM
/// domain; this bounds a message with very many signatures).
pub const MAX_QUESTIONS: usize = 64;

/// The From header address of a message with exactly one: (local part, domain), lowercase.
pub fn from_address(t: &Transaction) -> Option<(String, String)> {
    let header = t.message.header();
    let froms = rmox_core::message::from_addresses(&header);
    let [one] = froms.as_slice() else {
        return None;
    };
    let (lp, d) = one.rsplit_once('@')?;
    Some((lp.to_lowercase(), d.to_ascii_lowercase()))
}

/// What the analysis knows about a transaction (the same for every receiving account).
pub fn facts(t: &Transaction, v: &Verdicts) -> Facts {
    let dmarc_pass = v
        .dmarc
        .as_ref()
        .is_some_and(|d| d.status == rmox_core::dmarc::DmarcStatus::Pass);
    let from = from_address(t).map(|(localpart, domain)| FromFacts {
        org_domain: rmox_core::publicsuffix::organizational_domain(&domain),
        localpart,
        domain,
        validated: dmarc_pass,
    });
    let spf_pass = v.spf.as_ref().is_some_and(|s| s.result == SpfStatus::Pass);
    let (mail_from, mail_from_domain) = match &t.mail_from {
        ReversePath::Mailbox(a) => {
            let s = a.to_string().to_lowercase();
            let d = s.rsplit_once('@').map(|(_, d)| d.to_string());
            (Some(s), d)
        }
        ReversePath::Null => (None, None),
    };
    // SPF checks the EHLO name when MAIL FROM is null.
    let ehlo_validated = spf_pass && mail_from.is_none();
    let dkim_domains = v
        .dkim
        .iter()
        .flatten()
        .filter(|r| r.status == rmox_core::dkim::Status::Pass)
        .map(|r| r.domain.to_ascii_lowercase())
        .collect();
    Facts {
        from,
        mail_from_validated: spf_pass && mail_from.is_some(),
        mail_from,
        mail_from_domain,
        ehlo: Some(t.ehlo.to_ascii_lowercase()).filter(|e| !e.is_empty()),
        ehlo_validated,
        dkim_domains,
        networks: rmox_storage::ip_networks(t.remote_ip),
        ipv6: t.remote_ip.to_canonical().is_ipv6(),
    }
}

/// The domains verified for a message: the SPF-passed MAIL FROM domain and the domains of
/// passing DKIM signatures (lowercase), what a ruleset's `verified_domain` is checked against.
pub fn verified_domains(t: &Transaction) -> Vec<String> {
    let mut out = Vec::new();
    let Some(v) = &t.auth else { return out };
    if v.spf.as_ref().is_some_and(|s| s.result == SpfStatus::Pass) {
        if let ReversePath::Mailbox(a) = &t.mail_from {
            if let Some((_, d)) = a.to_string().rsplit_once('@') {
                out.push(d.to_ascii_lowercase());
            }
        }
    }
    for r in v.dkim.iter().flatten() {
        if r.status == rmox_core::dkim::Status::Pass {
            out.push(r.domain.to_ascii_lowercase());
        }
    }
    out
}

/// The facts of a message a ruleset says came through a forwarder: the forwarder's IP,
/// EHLO and MAIL FROM domain, and its own DKIM signature (`forwarder_domain`), say nothing
/// about the original sender, so they are left out.
pub fn forwarded(mut f: Facts, forwarder_domain: &str) -> Facts {
    f.networks.clear();
    f.ehlo = None;
    f.ehlo_validated = false;
    f.mail_from_domain = None;
    f.mail_from_validated = false;
    f.dkim_domains
        .retain(|d| !d.eq_ignore_ascii_case(forwarder_domain));
    f
}

/// Runs core's reputation analysis for `account`, answering its questions from storage.
/// Messages in `rejects_mailbox` are not evidence.
pub fn reputation(
    store: &dyn MailStore,
    account: &str,
    rejects_mailbox: Option<&str>,
    facts: Facts,
    now: UnixTime,
) -> Result<Outcome, StoreError> {
    let mut r = Reputation::new(facts, now);
    for _ in 0..MAX_QUESTIONS {
        let q = match r.poll() {
            Step::Done(o) => return Ok(o),
            Step::Ask(q) => q,
        };
        let answer = match q {
            Query::Messages {
                key,
                since,
                limit,
                from_validated,
            } => {
                let (kind, value) = match key {
                    Key::FromAddress(v) => (IndexKind::FromAddress, v),
                    Key::FromDomain(v) => (IndexKind::FromDomain, v),
                    Key::FromOrgDomain(v) => (IndexKind::FromOrgDomain, v),
                    Key::DkimDomain(v) => (IndexKind::DkimDomain, v),
                    Key::MailFrom(v) => (IndexKind::MailFrom, v),
                    Key::MailFromDomain(v) => (IndexKind::MailFromDomain, v),
                    Key::Ehlo(v) => (IndexKind::Ehlo, v),
                    Key::Network(v) => (IndexKind::Network, v),
                };
                let hits = store.history(
                    account,
                    kind,
                    &value,
                    since,
                    limit,
                    from_validated,
                    rejects_mailbox,
                )?;
                Answer::Messages(
                    hits.into_iter()
                        .map(|h| Hit {
                            junk: h.junk,
                            from_localpart: h.from_localpart,
                        })
                        .collect(),
                )
            }
            Query::SentTo { key, since } => {
                let to = match &key {
                    SentKey::Address(a) => SentTo::Address(a),
                    SentKey::Domain(d) => SentTo::Domain(d),
                    SentKey::Within(d) => SentTo::Within(d),
                };
                Answer::SentTo(store.sent_to_since(account, to, since)?)
            }
        };
        r.handle(answer);
    }
    Err(StoreError::Invalid(format!(
        "reputation analysis asked more than {MAX_QUESTIONS} questions"
    )))
}
