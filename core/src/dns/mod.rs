//! DNS as the checks see it: a check (SPF, DKIM, DMARC, iprev, DNSBL, MX lookup) is a machine
//! that asks for [`Lookup`]s and is answered with [`LookupResult`]s. Who answers is not its
//! business: the sans-IO stub resolver in this module (driven by a runtime's UDP/TCP), or
//! the static zone data in tests ([`run_sync`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub mod resolver;
pub mod session;
pub mod zone;

pub use resolver::{
    parse_resolv_conf, QueryId, Resolver, ResolverConfig, ResolverInput, ResolverOutput,
    ResolverTimer,
};
pub use session::{CheckInput, CheckLimits, CheckOutput, CheckSession, CheckTimer, GiveUp};
pub use zone::{StaticZone, ZoneError};

/// Record types the checks ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Mail exchanger.
    Mx,
    /// Text (SPF, DKIM keys, DMARC, MTA-STS, TLSRPT).
    Txt,
    /// Reverse name.
    Ptr,
    /// Canonical name.
    Cname,
    /// DANE TLSA.
    Tlsa,
}

/// One question: a name (absolute, lower-case ASCII, no trailing dot) and a type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lookup {
    /// The name asked for.
    pub name: String,
    /// The record type.
    pub rtype: RecordType,
}

/// One answer record, in the form the checks use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A mail exchanger; `host` is lower-case, no trailing dot, `""` for null MX (`.`).
    Mx {
        /// Preference, lower is tried first.
        preference: u16,
        /// The exchanger's host name.
        host: String,
    },
    /// A TXT record: its character-strings, in order (checks concatenate them).
    Txt(Vec<Vec<u8>>),
    /// A PTR target, lower-case, no trailing dot.
    Ptr(String),
    /// A CNAME target, lower-case, no trailing dot.
    Cname(String),
    /// A DANE TLSA record.
    Tlsa {
        /// Certificate usage (0-3).
        usage: u8,
        /// Selector (0 full certificate, 1 SubjectPublicKeyInfo).
        selector: u8,
        /// Matching type (0 exact, 1 SHA-256, 2 SHA-512).
        matching: u8,
        /// Certificate association data.
        data: Vec<u8>,
    },
}

/// The outcome of one lookup. The distinction between the variants decides between
/// permanent and temporary answers in every check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LookupResult {
    /// One or more records of the type asked for.
    Records {
        /// The records (CNAMEs already followed).
        records: Vec<Record>,
        /// The resolver set the AD bit (DNSSEC-validated); trusted only from a trusted
        /// resolver.
        authentic: bool,
    },
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// The name exists but has no records of this type (NODATA).
    NoData,
    /// The answer could not be had now: SERVFAIL, timeout, DNSSEC bogus, network error.
    TempFail(String),
}

/// The labels of an IP in reverse order: `4.3.2.1` for 1.2.3.4, 32 nibbles for IPv6
/// (`1.0.0.0...8.b.d.0.1.0.0.2`), as used below `in-addr.arpa`, `ip6.arpa` and DNSBL zones.
/// An IPv4-mapped IPv6 address gives the IPv4 form.
pub fn reversed_labels(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}")
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(64);
            for (i, b) in v6.octets().iter().rev().enumerate() {
                if i > 0 {
                    s.push('.');
                }
                s.push_str(&format!("{:x}.{:x}", b & 0xf, b >> 4));
            }
            s
        }
    }
}

/// The PTR name of an IP: `4.3.2.1.in-addr.arpa`, or nibbles under `ip6.arpa`.
pub fn reverse_name(ip: IpAddr) -> String {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let suffix = match ip {
        IpAddr::V4(_) => "in-addr.arpa",
        IpAddr::V6(_) => "ip6.arpa",
    };
    format!("{}.{suffix}", reversed_labels(ip))
}

/// One step of a DNS-driven check (SPF, DKIM, DMARC, iprev, DNSBL, MX resolution).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckStep<V> {
    /// Ask this question and hand the answer to [`Check::answer`]. A check may ask several
    /// questions before it waits; answers may come back in any order.
    Lookup(Lookup),
    /// Waiting for answers to questions already asked.
    Wait,
    /// The verdict. Polling again returns the same verdict.
    Done(V),
}

/// A check that needs DNS, as the steps of its own logic: poll it for questions, answer
/// them, until it is done.
///
/// Drivers do not run these steps themselves: they run the check as a [`CheckSession`] (the
/// session shape of every machine here: `handle(now, input)`, `poll` until `Idle`, effects
/// with tokens, deadlines inside), or, without a clock, with [`run_sync`]/[`run_batched`].
/// Both collect a round's questions with [`round`].
pub trait Check {
    /// What the check concludes.
    type Verdict;
    /// The next question, `Wait`, or the verdict.
    fn poll(&mut self) -> CheckStep<Self::Verdict>;
    /// The answer to a question asked earlier.
    fn answer(&mut self, lookup: &Lookup, result: LookupResult);
}

impl<C: Check + ?Sized> Check for &mut C {
    type Verdict = C::Verdict;
    fn poll(&mut self) -> CheckStep<C::Verdict> {
        (**self).poll()
    }
    fn answer(&mut self, lookup: &Lookup, result: LookupResult) {
        (**self).answer(lookup, result)
    }
}

impl<C: Check + ?Sized> Check for Box<C> {
    type Verdict = C::Verdict;
    fn poll(&mut self) -> CheckStep<C::Verdict> {
        (**self).poll()
    }
    fn answer(&mut self, lookup: &Lookup, result: LookupResult) {
        (**self).answer(lookup, result)
    }
}

/// One round of a check: every question it asks before it waits, or its verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round<V> {
    /// Ask these (together, as one batch) and give every answer to [`Check::answer`];
    /// empty when the check waits without asking anything (stuck: nobody will answer).
    Ask(Vec<Lookup>),
    /// The verdict.
    Done(V),
}

/// The "ask N lookups, collect, decide" fan-out, written once for every check (SPF, DKIM,
/// DMARC, iprev, DNSBL, MX) and every driver of checks: polls `check` until it waits or
/// concludes. At most `max` questions are collected; a check with more gets the rest in
/// its next round.
pub fn round<C: Check + ?Sized>(check: &mut C, max: usize) -> Round<C::Verdict> {
    let mut ask = Vec::new();
    while ask.len() < max {
        match check.poll() {
            CheckStep::Lookup(q) => ask.push(q),
            CheckStep::Wait => break,
            CheckStep::Done(v) => return Round::Done(v),
        }
    }
    Round::Ask(ask)
}

/// Runs a check to completion, answering each round's questions as one batch with
/// `resolve_many` (answers in the order asked). Gives up with `None` after `max_questions`
/// questions, or when the check waits for nothing, so a broken check cannot loop forever.
pub fn run_batched<C: Check>(
    check: &mut C,
    mut resolve_many: impl FnMut(&[Lookup]) -> Vec<LookupResult>,
    max_questions: usize,
) -> Option<C::Verdict> {
    let mut budget = max_questions;
    loop {
        // At least one poll, even with the budget spent: the verdict may be there.
        match round(check, budget.max(1)) {
            Round::Done(v) => return Some(v),
            Round::Ask(qs) if qs.is_empty() || budget == 0 => return None,
            Round::Ask(qs) => {
                budget = budget.saturating_sub(qs.len());
                let mut answers = resolve_many(&qs).into_iter();
                for q in &qs {
                    let r = answers
                        .next()
                        .unwrap_or_else(|| LookupResult::TempFail("no answer".into()));
                    check.answer(q, r);
                }
            }
        }
    }
}

/// Runs a check to completion with a synchronous answer function (tests, CLI tools over a
/// static zone); see [`run_batched`].
pub fn run_sync<C: Check>(
    check: &mut C,
    mut resolve: impl FnMut(&Lookup) -> LookupResult,
    max_questions: usize,
) -> Option<C::Verdict> {
    run_batched(
        check,
        |qs| qs.iter().map(&mut resolve).collect(),
        max_questions,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asks `names` all at once, then one more name after the answers, then concludes
    /// with the number of answers it got; `stuck` waits without asking instead.
    struct Fan {
        names: Vec<&'static str>,
        asked: usize,
        answered: usize,
        second: bool,
        stuck: bool,
    }

    impl Check for Fan {
        type Verdict = usize;
        fn poll(&mut self) -> CheckStep<usize> {
            if self.stuck {
                return CheckStep::Wait;
            }
            if let Some(n) = self.names.get(self.asked) {
                self.asked += 1;
                return CheckStep::Lookup(Lookup {
                    name: (*n).into(),
                    rtype: RecordType::A,
                });
            }
            if self.answered < self.asked {
                return CheckStep::Wait;
            }
            if !self.second {
                self.second = true;
                self.names.push("last.test");
                return self.poll();
            }
            CheckStep::Done(self.answered)
        }
        fn answer(&mut self, _: &Lookup, _: LookupResult) {
            self.answered += 1;
        }
    }

    fn fan(names: &[&'static str]) -> Fan {
        Fan {
            names: names.to_vec(),
            asked: 0,
            answered: 0,
            second: false,
            stuck: false,
        }
    }

    /// The questions a check asks before it waits go out as one batch, not one by one.
    #[test]
    fn rounds_batch_the_questions() {
        let mut batches = Vec::new();
        let v = run_batched(
            &mut fan(&["a.test", "b.test", "c.test"]),
            |qs| {
                batches.push(qs.len());
                qs.iter().map(|_| LookupResult::NxDomain).collect()
            },
            10,
        );
        assert_eq!(v, Some(4));
        assert_eq!(batches, vec![3, 1]);
        // A round of at most 2: the third question waits for the next round.
        let mut f = fan(&["a.test", "b.test", "c.test"]);
        assert!(matches!(round(&mut f, 2), Round::Ask(q) if q.len() == 2));
    }

    /// Bounded: a budget smaller than the check's questions, or a check that waits for
    /// nothing, gives `None` instead of looping.
    #[test]
    fn rounds_are_bounded() {
        let nx = |qs: &[Lookup]| qs.iter().map(|_| LookupResult::NxDomain).collect();
        assert_eq!(run_batched(&mut fan(&["a.test", "b.test"]), nx, 2), None);
        assert_eq!(run_batched(&mut fan(&["a.test", "b.test"]), nx, 3), Some(3));
        let mut stuck = fan(&["a.test"]);
        stuck.stuck = true;
        assert_eq!(run_batched(&mut stuck, nx, 10), None);
        // Fewer answers than questions: the missing ones are temporary failures.
        assert_eq!(
            run_batched(&mut fan(&["a.test", "b.test"]), |_| Vec::new(), 5),
            Some(3)
        );
    }
}
