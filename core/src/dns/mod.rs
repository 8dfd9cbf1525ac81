//! DNS as the checks see it: a check (SPF, DKIM, DMARC, iprev, DNSBL, MX lookup) is a machine
//! that asks for [`Lookup`]s and is answered with [`LookupResult`]s. Who answers is not its
//! business: the sans-IO stub resolver in this module (driven by a runtime's UDP/TCP), or
//! the static zone data in tests and tools ([`run_sync`]).
//!
//! Why two layers: a check is written as the steps of its own logic ([`Check`]: poll for a
//! question, take an answer, conclude) and is run by one wrapper, [`CheckSession`], which
//! alone holds tokens, the fan-out into batches, the question budget, the clock guard and
//! the answer deadline. Making every check a session would repeat those five things in each
//! of nine checks (and in their combinations, like [`crate::server::checks`]'s `AnyCheck`)
//! for no change in what any check decides; [`run_sync`] drives the same session untimed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub mod resolver;
pub mod session;
pub mod zone;

pub use resolver::{
    parse_resolv_conf, QueryId, Resolver, ResolverConfig, ResolverInput, ResolverOutput,
    ResolverTimer,
};
pub use session::{
    run_batched, run_sync, CheckInput, CheckLimits, CheckOutput, CheckSession, CheckTimer, GiveUp,
};
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
/// with tokens, deadlines inside), or, without a clock, with [`run_sync`]/[`run_batched`],
/// which drive the same session.
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
