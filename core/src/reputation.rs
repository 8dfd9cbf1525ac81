//! Reputation: is an incoming message wanted, judged from the receiving account's own
//! history?
//!
//! The evidence is tried strongest first, and the first kind that has any history decides
//! (the order and thresholds follow mox's analysis; the code is rmox's own):
//!
//! 1. earlier messages with the same From address, validated (DMARC pass) or not, kept
//!    apart; then whether the account ever sent to that address;
//! 2. the same for the From domain, then for its organisational domain;
//! 3. the verified DKIM domains and the SPF-verified MAIL FROM address or domain (or the
//!    verified EHLO name);
//! 4. the client's IP: the exact address, then its /26, then its /21 (IPv6: /64, /48, /32),
//!    needing more messages for a conclusive answer the wider the net.
//!
//! A message in the history is good evidence unless it was classified junk. The answer is
//! an [`Outcome`]: junk or not (or no opinion), whether that is conclusive, which evidence
//! decided ([`Method`]) and a human-readable reason (for the `X-Rmox-Reason` header).
//!
//! The machine never reads storage: each question is a [`Query`], answered with an
//! [`Answer`], one at a time. The caller answers from indexes, so the cost per message does
//! not grow with the account's history (every query is limited and keyed).
//!
//! ```text
//! let mut r = Reputation::new(facts, now);
//! while let Step::Ask(q) = r.poll() { let a = answer_from_storage(&q); r.handle(a); }
//! let Step::Done(outcome) = r.poll() else { unreachable!() };
//! ```

use crate::time::UnixTime;

/// Seconds in a (365-day) year, the unit of the history windows.
pub const YEAR: i64 = 365 * 24 * 3600;

/// What is known about the incoming message, for one receiving account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The From header address, when the message has exactly one.
    pub from: Option<FromFacts>,
    /// The MAIL FROM address (lowercase), `None` for the null sender.
    pub mail_from: Option<String>,
    /// The MAIL FROM domain (lowercase).
    pub mail_from_domain: Option<String>,
    /// SPF passed for the MAIL FROM domain.
    pub mail_from_validated: bool,
    /// The EHLO name (lowercase).
    pub ehlo: Option<String>,
    /// SPF passed for the EHLO name.
    pub ehlo_validated: bool,
    /// Domains with a passing DKIM signature (lowercase).
    pub dkim_domains: Vec<String>,
    /// The client's networks, narrowest first: IPv4 /32, /26, /21 or IPv6 /64, /48, /32
    /// (as the storage indexes them). Empty for a forwarded message.
    pub networks: Vec<String>,
    /// The client address is IPv6 (for the reason text).
    pub ipv6: bool,
}

/// The From header address.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FromFacts {
    /// The local part (lowercase).
    pub localpart: String,
    /// The domain (lowercase).
    pub domain: String,
    /// The organisational domain of `domain`.
    pub org_domain: String,
    /// DMARC passed: SPF or DKIM aligned with the From domain.
    pub validated: bool,
}

impl FromFacts {
    /// `localpart@domain`.
    pub fn address(&self) -> String {
        format!("{}@{}", self.localpart, self.domain)
    }
}

/// Which history a [`Query::Messages`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// Messages whose From header had this address.
    FromAddress(String),
    /// Messages whose From header had this domain.
    FromDomain(String),
    /// Messages whose From header domain has this organisational domain.
    FromOrgDomain(String),
    /// Messages with a passing DKIM signature of this domain.
    DkimDomain(String),
    /// Messages with this MAIL FROM address.
    MailFrom(String),
    /// Messages with this MAIL FROM domain.
    MailFromDomain(String),
    /// Messages with this EHLO name.
    Ehlo(String),
    /// Messages from this network (a [`Facts::networks`] entry).
    Network(String),
}

/// Whether the account sent a message to ...
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SentKey {
    /// ... exactly this address.
    Address(String),
    /// ... an address at exactly this domain.
    Domain(String),
    /// ... an address at this domain or below it.
    Within(String),
}

/// A question for the account's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Query {
    /// The newest messages (at most `limit`) received since `since` under `key`, newest
    /// first, leaving out messages in the rejects mailbox; only those whose From was
    /// validated (or not) when `from_validated` says so. Answered with
    /// [`Answer::Messages`].
    Messages {
        /// The index.
        key: Key,
        /// The oldest time that counts.
        since: UnixTime,
        /// At most this many.
        limit: usize,
        /// Only messages whose From header was (`Some(true)`) or was not validated.
        from_validated: Option<bool>,
    },
    /// Did the account send to `key` since `since`? Answered with [`Answer::SentTo`].
    SentTo {
        /// The recipient.
        key: SentKey,
        /// The oldest time that counts.
        since: UnixTime,
    },
}

/// One message of the history, as the analysis needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hit {
    /// It was classified junk.
    pub junk: bool,
    /// The local part of its From address (lowercase), when known.
    pub from_localpart: Option<String>,
}

/// The answer to a [`Query`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// For [`Query::Messages`], newest first.
    Messages(Vec<Hit>),
    /// For [`Query::SentTo`].
    SentTo(bool),
}

/// The evidence that decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Messages from the exact From address.
    MsgFromFull,
    /// The account sent to the exact From address.
    MsgToFull,
    /// Messages from the From domain.
    MsgFromDomain,
    /// Messages from the From organisational domain.
    MsgFromOrgDomain,
    /// The account sent to the From domain.
    MsgToDomain,
    /// The account sent within the From organisational domain.
    MsgToOrgDomain,
    /// DKIM domains and SPF-verified MAIL FROM or EHLO.
    DkimSpf,
    /// The exact IP address (IPv6: /64).
    Ip1,
    /// The IP's /26 (IPv6: /48).
    Ip2,
    /// The IP's /21 (IPv6: /32).
    Ip3,
    /// No history at all.
    None,
}

impl Method {
    /// The name in logs and the `X-Rmox-Reason` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::MsgFromFull => "msgfromfull",
            Method::MsgToFull => "msgtofull",
            Method::MsgFromDomain => "msgfromdomain",
            Method::MsgFromOrgDomain => "msgfromorgdomain",
            Method::MsgToDomain => "msgtodomain",
            Method::MsgToOrgDomain => "msgtoorgdomain",
            Method::DkimSpf => "dkimspf",
            Method::Ip1 => "ip1",
            Method::Ip2 => "ip2",
            Method::Ip3 => "ip3",
            Method::None => "none",
        }
    }

    /// Weak evidence: not about the sender's address or domain (DKIM/SPF, IP or none).
    /// Other signals (SPF fail, iprev) weigh more then.
    pub fn is_weak(self) -> bool {
        matches!(
            self,
            Method::DkimSpf | Method::Ip1 | Method::Ip2 | Method::Ip3 | Method::None
        )
    }
}

/// The result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Junk (`Some(true)`), not junk (`Some(false)`), or no opinion.
    pub junk: Option<bool>,
    /// The evidence is strong enough to decide on its own.
    pub conclusive: bool,
    /// Which evidence.
    pub method: Method,
    /// Why, for people.
    pub reason: String,
}

/// What [`Reputation::poll`] gives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Answer this with [`Reputation::handle`].
    Ask(Query),
    /// The analysis is complete.
    Done(Outcome),
}

/// Where the analysis is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    FromFull,
    FromFullValidated,
    SentToFull,
    Domain { org: bool },
    DomainValidated { org: bool },
    SentToDomain { org: bool },
    Dkim { next: usize },
    MailFrom,
    MailFromDomain,
    Ehlo,
    Ip { level: usize },
    Done(Outcome),
}

/// The analysis of one message for one account; see the module docs.
#[derive(Clone, Debug)]
pub struct Reputation {
    facts: Facts,
    now: UnixTime,
    stage: Stage,
    /// DKIM/SPF evidence gathered: (domain, fraction junk).
    signals: Vec<(String, f64)>,
    /// The most messages one DKIM/SPF signal was based on.
    signal_msgs: usize,
}

/// "The newest message was junk, and so was the one before it if there was one."
fn newest_junk(hits: &[Hit]) -> bool {
    hits.first().is_some_and(|h| h.junk) && hits.get(1).is_none_or(|h| h.junk)
}

fn fraction_junk(hits: &[Hit]) -> f64 {
    if hits.is_empty() {
        return 0.0;
    }
    hits.iter().filter(|h| h.junk).count() as f64 / hits.len() as f64
}

impl Reputation {
    /// Starts the analysis of a message with these facts at `now`.
    pub fn new(facts: Facts, now: UnixTime) -> Reputation {
        let mut r = Reputation {
            facts,
            now,
            stage: Stage::FromFull,
            signals: Vec::new(),
            signal_msgs: 0,
        };
        if r.facts.from.is_none() {
            r.stage = r.dkim_stage(0);
        }
        r
    }

    fn since(&self, secs: i64) -> UnixTime {
        UnixTime(self.now.0.saturating_sub(secs))
    }

    fn done(junk: Option<bool>, conclusive: bool, method: Method, reason: String) -> Stage {
        Stage::Done(Outcome {
            junk,
            conclusive,
            method,
            reason,
        })
    }

    /// The next question, or the outcome.
    pub fn poll(&self) -> Step {
        let from = self.facts.from.as_ref();
        let messages = |key: Key, since: UnixTime, limit: usize, from_validated: Option<bool>| {
            Step::Ask(Query::Messages {
                key,
                since,
                limit,
                from_validated,
            })
        };
        let domain_key = |org: bool, f: &FromFacts| {
            if org {
                Key::FromOrgDomain(f.org_domain.clone())
            } else {
                Key::FromDomain(f.domain.clone())
            }
        };
        match (&self.stage, from) {
            (Stage::Done(o), _) => Step::Done(o.clone()),
            (Stage::FromFull, Some(f)) => messages(
                Key::FromAddress(f.address()),
                self.since(3 * YEAR),
                2,
                Some(f.validated),
            ),
            (Stage::FromFullValidated, Some(f)) => messages(
                Key::FromAddress(f.address()),
                self.since(3 * YEAR),
                2,
                Some(true),
            ),
            (Stage::SentToFull, Some(f)) => Step::Ask(Query::SentTo {
                key: SentKey::Address(f.address()),
                since: self.since(3 * YEAR),
            }),
            (Stage::Domain { org }, Some(f)) => messages(
                domain_key(*org, f),
                self.since(2 * YEAR),
                20,
                Some(f.validated),
            ),
            (Stage::DomainValidated { org }, Some(f)) => {
                messages(domain_key(*org, f), self.since(2 * YEAR), 2, Some(true))
            }
            (Stage::SentToDomain { org }, Some(f)) => Step::Ask(Query::SentTo {
                key: if *org {
                    SentKey::Within(f.org_domain.clone())
                } else {
                    SentKey::Domain(f.domain.clone())
                },
                since: self.since(2 * YEAR),
            }),
            (Stage::Dkim { next }, _) => match self.facts.dkim_domains.get(*next) {
                Some(d) => messages(Key::DkimDomain(d.clone()), self.since(YEAR / 2), 50, None),
                // dkim_stage never makes a Dkim stage past the list.
                None => Step::Done(self.no_history()),
            },
            (Stage::MailFrom, _) => match &self.facts.mail_from {
                Some(a) => messages(Key::MailFrom(a.clone()), self.since(YEAR / 2), 50, None),
                None => Step::Done(self.no_history()),
            },
            (Stage::MailFromDomain, _) => match &self.facts.mail_from_domain {
                Some(d) => messages(
                    Key::MailFromDomain(d.clone()),
                    self.since(YEAR / 2),
                    50,
                    None,
                ),
                None => Step::Done(self.no_history()),
            },
            (Stage::Ehlo, _) => match &self.facts.ehlo {
                Some(e) => messages(Key::Ehlo(e.clone()), self.since(YEAR / 2), 50, None),
                None => Step::Done(self.no_history()),
            },
            (Stage::Ip { level }, _) => match self.facts.networks.get(*level) {
                Some(n) => messages(Key::Network(n.clone()), self.since(YEAR / 4), 50, None),
                None => Step::Done(Outcome {
                    junk: None,
                    conclusive: false,
                    method: Method::None,
                    reason: "no address, dkim/spf or ip reputation".into(),
                }),
            },
            // The From stages are only entered with From facts (`new`, `handle`).
            (_, None) => Step::Done(self.no_history()),
        }
    }

    /// No evidence at all (also what a From stage without From facts, which `new` and
    /// `handle` never make, would give).
    fn no_history(&self) -> Outcome {
        Outcome {
            junk: None,
            conclusive: false,
            method: Method::None,
            reason: "no address, dkim/spf or ip reputation".into(),
        }
    }

    /// The answer to the question [`Reputation::poll`] gave. An answer of the wrong kind
    /// counts as "no history".
    pub fn handle(&mut self, answer: Answer) {
        let hits = match &answer {
            Answer::Messages(h) => h.as_slice(),
            Answer::SentTo(_) => &[],
        };
        let sent = matches!(answer, Answer::SentTo(true));
        let validated = self.facts.from.as_ref().is_some_and(|f| f.validated);
        let stage = std::mem::replace(&mut self.stage, Stage::FromFull);
        self.stage = match stage {
            Stage::Done(o) => Stage::Done(o),
            Stage::FromFull if !hits.is_empty() => Self::done(
                Some(newest_junk(hits)),
                validated,
                Method::MsgFromFull,
                "reputation of exact message-from address".into(),
            ),
            Stage::FromFull if !validated => Stage::FromFullValidated,
            Stage::FromFull => Stage::SentToFull,
            Stage::FromFullValidated if !hits.is_empty() => Self::done(
                Some(true),
                newest_junk(hits),
                Method::MsgFromFull,
                "unvalidated message with validated earlier messages from the exact message-from address".into(),
            ),
            Stage::FromFullValidated => Stage::SentToFull,
            Stage::SentToFull if sent => Self::done(
                Some(false),
                true,
                Method::MsgToFull,
                "exact message-from address was an earlier recipient".into(),
            ),
            Stage::SentToFull => Stage::Domain { org: false },
            Stage::Domain { org } if !hits.is_empty() => Self::domain_verdict(org, hits),
            Stage::Domain { org } if !validated => Stage::DomainValidated { org },
            Stage::Domain { org } => Stage::SentToDomain { org },
            Stage::DomainValidated { org } if !hits.is_empty() => Self::done(
                Some(true),
                newest_junk(hits),
                if org {
                    Method::MsgFromOrgDomain
                } else {
                    Method::MsgFromDomain
                },
                format!(
                    "unvalidated message with validated earlier messages from the {}",
                    domain_source(org)
                ),
            ),
            Stage::DomainValidated { org } => Stage::SentToDomain { org },
            Stage::SentToDomain { org } if sent => Self::done(
                Some(false),
                true,
                if org {
                    Method::MsgToOrgDomain
                } else {
                    Method::MsgToDomain
                },
                format!("{} was an earlier recipient", domain_source(org)),
            ),
            Stage::SentToDomain { org: false } => Stage::Domain { org: true },
            Stage::SentToDomain { org: true } => self.dkim_stage(0),
            Stage::Dkim { next } => {
                self.signal(next, hits);
                self.dkim_stage(next + 1)
            }
            Stage::MailFrom if hits.is_empty() => Stage::MailFromDomain,
            Stage::MailFrom | Stage::MailFromDomain if !hits.is_empty() => {
                let d = self.facts.mail_from_domain.clone().unwrap_or_default();
                self.add_signal(d, hits);
                self.dkimspf_verdict()
            }
            Stage::MailFromDomain if self.facts.ehlo_validated && self.facts.ehlo.is_some() => {
                Stage::Ehlo
            }
            Stage::MailFromDomain | Stage::MailFrom => self.dkimspf_verdict(),
            Stage::Ehlo => {
                let e = self.facts.ehlo.clone().unwrap_or_default();
                self.add_signal(e, hits);
                self.dkimspf_verdict()
            }
            Stage::Ip { level } if !hits.is_empty() => self.ip_verdict(level, hits),
            Stage::Ip { level } if level + 1 < self.facts.networks.len().min(3) => {
                Stage::Ip { level: level + 1 }
            }
            Stage::Ip { .. } => Self::done(
                None,
                false,
                Method::None,
                "no address, dkim/spf or ip reputation".into(),
            ),
        };
    }

    /// The DKIM stage for domain `next`, or what follows the DKIM domains.
    fn dkim_stage(&self, next: usize) -> Stage {
        if next < self.facts.dkim_domains.len() {
            return Stage::Dkim { next };
        }
        if self.facts.mail_from_validated && self.facts.mail_from_domain.is_some() {
            if self.facts.mail_from.is_some() {
                return Stage::MailFrom;
            }
            return Stage::MailFromDomain;
        }
        if self.facts.ehlo_validated && self.facts.ehlo.is_some() {
            return Stage::Ehlo;
        }
        self.dkimspf_verdict()
    }

    fn signal(&mut self, dkim_index: usize, hits: &[Hit]) {
        if let Some(d) = self.facts.dkim_domains.get(dkim_index).cloned() {
            self.add_signal(d, hits);
        }
    }

    fn add_signal(&mut self, domain: String, hits: &[Hit]) {
        if hits.is_empty() {
            return;
        }
        self.signals.push((domain, fraction_junk(hits)));
        self.signal_msgs = self.signal_msgs.max(hits.len());
    }

    /// The verdict on the DKIM/SPF signals, or on to the IP when there are none.
    fn dkimspf_verdict(&self) -> Stage {
        if self.signals.is_empty() {
            return self.ip_stage();
        }
        let ham: Vec<&str> = self
            .signals
            .iter()
            .filter(|(_, p)| *p < 0.1)
            .map(|(d, _)| d.as_str())
            .collect();
        let spam: Vec<&str> = self
            .signals
            .iter()
            .filter(|(_, p)| *p > 0.9)
            .map(|(d, _)| d.as_str())
            .collect();
        match (ham.is_empty(), spam.is_empty()) {
            (false, true) => Self::done(
                Some(false),
                true,
                Method::DkimSpf,
                format!("positive dkim/spf reputation for {}", ham.join(",")),
            ),
            (true, false) => Self::done(
                Some(true),
                self.signal_msgs > 1,
                Method::DkimSpf,
                format!("negative dkim/spf reputation for {}", spam.join(",")),
            ),
            _ => Self::done(
                None,
                false,
                Method::DkimSpf,
                format!(
                    "mixed dkim/spf reputation, positive for {:?}, negative for {:?}",
                    ham.join(","),
                    spam.join(",")
                ),
            ),
        }
    }

    fn ip_stage(&self) -> Stage {
        if self.facts.networks.is_empty() {
            return Self::done(
                None,
                false,
                Method::None,
                "no address, dkim/spf or ip reputation".into(),
            );
        }
        Stage::Ip { level: 0 }
    }

    /// A wider net needs more messages to be conclusive, and a strong signal.
    fn ip_verdict(&self, level: usize, hits: &[Hit]) -> Stage {
        let (method, need, v4, v6) = match level {
            0 => (Method::Ip1, 2, "/32", "/64"),
            1 => (Method::Ip2, 5, "/26", "/48"),
            _ => (Method::Ip3, 10, "/21", "/32"),
        };
        let p = fraction_junk(hits);
        let junk = if p < 0.25 {
            Some(false)
        } else if p > 0.75 {
            Some(true)
        } else {
            None
        };
        let conclusive = hits.len() >= need && !(0.1..0.9).contains(&p);
        let net = self
            .facts
            .networks
            .get(level)
            .map(String::as_str)
            .unwrap_or("");
        let mask = if self.facts.ipv6 { v6 } else { v4 };
        let net = net.split('/').next().unwrap_or(net);
        Self::done(
            junk,
            conclusive,
            method,
            format!(
                "reputation of ip {net}{mask}, junk fraction {p:.2} of {} messages",
                hits.len()
            ),
        )
    }

    /// The verdict on messages from the From (organisational) domain: mostly good is
    /// good; all junk from at least three addresses is conclusively junk; mixed is no
    /// opinion (a new sender at a mixed domain is not blocked).
    fn domain_verdict(org: bool, hits: &[Hit]) -> Stage {
        let method = if org {
            Method::MsgFromOrgDomain
        } else {
            Method::MsgFromDomain
        };
        let source = domain_source(org);
        let good = hits.iter().filter(|h| !h.junk).count();
        if 100 * good / hits.len() > 80 {
            return Self::done(
                Some(false),
                true,
                method,
                format!(
                    "positive reputation of the {source}, {} messages",
                    hits.len()
                ),
            );
        }
        if good == 0 {
            let mut parts: Vec<&str> = hits
                .iter()
                .filter_map(|h| h.from_localpart.as_deref())
                .collect();
            parts.sort_unstable();
            parts.dedup();
            let conclusive = parts.len() >= 3;
            return Self::done(
                Some(true),
                conclusive,
                method,
                format!(
                    "negative reputation of the {source}, {} messages from {} addresses",
                    hits.len(),
                    parts.len()
                ),
            );
        }
        Self::done(
            None,
            false,
            method,
            format!("mixed reputation of the {source}, {} messages", hits.len()),
        )
    }
}

fn domain_source(org: bool) -> &'static str {
    if org {
        "organizational domain of the message-from address"
    } else {
        "exact domain of the message-from address"
    }
}

#[cfg(test)]
mod tests;
