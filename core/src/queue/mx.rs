//! Which hosts to try, in which order, for direct delivery to a domain (RFC 5321 5.1,
//! RFC 7505): MX records by preference with equal preferences shuffled by the seeded
//! [`Rng`], the domain itself when it has no MX records (implicit MX), a null MX as a
//! permanent failure, then the addresses (A and/or AAAA) of every host, asked all at once.
//! CNAMEs are followed by the resolver.

use std::collections::HashMap;
use std::net::IpAddr;

use super::schedule::{AttemptResult, Failure};
use crate::dns::{Check, CheckStep, Lookup, LookupResult, Record, RecordType};
use crate::smtp::Enhanced;
use crate::Rng;

/// MX hosts whose addresses are looked up; the rest are ignored.
pub const MAX_MX_HOSTS: usize = 10;

/// Address families and their order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MxOptions {
    /// Use IPv4 addresses.
    pub ipv4: bool,
    /// Use IPv6 addresses.
    pub ipv6: bool,
    /// Try a host's IPv6 addresses before its IPv4 addresses.
    pub prefer_ipv6: bool,
}

impl Default for MxOptions {
    fn default() -> Self {
        MxOptions {
            ipv4: true,
            ipv6: true,
            prefer_ipv6: true,
        }
    }
}

/// One host to try, with its addresses in the order to try them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    /// Host name (lower-case, no trailing dot), or the address literal as written.
    pub host: String,
    /// MX preference (0 for implicit MX and literals).
    pub preference: u16,
    /// The domain itself, used because it has no MX records.
    pub implicit: bool,
    /// The addresses, never empty.
    pub ips: Vec<IpAddr>,
}

/// The outcome of an [`MxPlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MxVerdict {
    /// Try these hosts in order (at least one, each with at least one address).
    Hosts(Vec<MxHost>),
    /// The domain publishes a null MX: it accepts no mail (permanent).
    NullMx,
    /// The domain does not exist (permanent).
    NoDomain,
    /// The domain has neither MX nor address records (permanent).
    NoAddress,
    /// Try again later: a lookup failed, or no MX host has an address now.
    TempFail(String),
}

impl MxVerdict {
    /// The attempt result when no host can be tried: permanent for null MX, a missing
    /// domain or no addresses; temporary otherwise. `None` for [`MxVerdict::Hosts`].
    pub fn attempt_result(&self, domain: &str) -> Option<AttemptResult> {
        let perm = |d: String, e: Enhanced| Some(AttemptResult::Permanent(Failure::local(d, e)));
        match self {
            MxVerdict::Hosts(_) => None,
            MxVerdict::NullMx => perm(
                format!("{domain} does not accept mail (null MX)"),
                Enhanced::new(5, 1, 10),
            ),
            MxVerdict::NoDomain => perm(
                format!("domain {domain} does not exist"),
                Enhanced::new(5, 1, 2),
            ),
            MxVerdict::NoAddress => perm(
                format!("domain {domain} has no MX or address records"),
                Enhanced::new(5, 1, 2),
            ),
            MxVerdict::TempFail(e) => Some(AttemptResult::Temporary(Failure::local(
                format!("looking up mail servers for {domain}: {e}"),
                Enhanced::new(4, 4, 3),
            ))),
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    Start,
    WaitMx(Lookup),
    WaitAddrs {
        hosts: Vec<(String, u16)>,
        implicit: bool,
        asked: Vec<Lookup>,
        answers: HashMap<Lookup, LookupResult>,
    },
    Done(MxVerdict),
}

/// The host plan for one domain, as a DNS [`Check`].
#[derive(Debug, Clone)]
pub struct MxPlan {
    domain: String,
    opts: MxOptions,
    rng: Rng,
    state: State,
    queue: Vec<Lookup>,
}

/// Parses `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("ipv6:") => inner
            .get(5..)?
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(IpAddr::V6),
        _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

impl MxPlan {
    /// A plan for `domain` (A-label form, or an address literal in brackets). `rng` shuffles
    /// hosts of equal preference.
    pub fn new(domain: &str, opts: MxOptions, rng: Rng) -> MxPlan {
        let mut p = MxPlan {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            opts,
            rng,
            state: State::Start,
            queue: Vec::new(),
        };
        if domain.starts_with('[') {
            p.state = State::Done(match address_literal(domain) {
                Some(ip) if p.family_ok(ip) => MxVerdict::Hosts(vec![MxHost {
                    host: domain.to_string(),
                    preference: 0,
                    implicit: true,
                    ips: vec![ip],
                }]),
                Some(_) => MxVerdict::TempFail("address family disabled".into()),
                None => MxVerdict::NoDomain,
            });
        } else if !opts.ipv4 && !opts.ipv6 {
            p.state = State::Done(MxVerdict::TempFail("IPv4 and IPv6 both disabled".into()));
        }
        p
    }

    fn family_ok(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.opts.ipv4,
            IpAddr::V6(_) => self.opts.ipv6,
        }
    }

    fn families(&self) -> Vec<RecordType> {
        let mut f = Vec::new();
        let (first, second) = if self.opts.prefer_ipv6 {
            (
                (self.opts.ipv6, RecordType::Aaaa),
                (self.opts.ipv4, RecordType::A),
            )
        } else {
            (
                (self.opts.ipv4, RecordType::A),
                (self.opts.ipv6, RecordType::Aaaa),
            )
        };
        for (on, t) in [first, second] {
            if on {
                f.push(t);
            }
        }
        f
    }

    fn ask_addresses(&mut self, hosts: Vec<(String, u16)>, implicit: bool) -> State {
        let mut asked = Vec::new();
        for (h, _) in &hosts {
            for t in self.families() {
                asked.push(Lookup {
                    name: h.clone(),
                    rtype: t,
                });
            }
        }
        self.queue = asked.iter().rev().cloned().collect();
        State::WaitAddrs {
            hosts,
            implicit,
            asked,
            answers: HashMap::new(),
        }
    }

    fn handle_mx(&mut self, records: Vec<Record>) -> State {
        let mx: Vec<(u16, String)> = records
            .into_iter()
            .filter_map(|r| match r {
                Record::Mx { preference, host } => Some((preference, host)),
                _ => None,
            })
            .collect();
        if mx.is_empty() {
            return self.ask_addresses(vec![(self.domain.clone(), 0)], true);
        }
        if mx.iter().all(|(_, h)| h.is_empty() || h == ".") {
            return State::Done(MxVerdict::NullMx);
        }
        let mut hosts: Vec<(u16, String)> = Vec::new();
        for (p, h) in mx {
            let h = h.trim_end_matches('.').to_ascii_lowercase();
            if !h.is_empty() && !hosts.iter().any(|(_, x)| *x == h) {
                hosts.push((p, h));
            }
        }
        hosts.sort_by_key(|(p, _)| *p);
        let mut i = 0;
        while i < hosts.len() {
            let p = hosts.get(i).map(|(p, _)| *p);
            let n = hosts
                .get(i..)
                .unwrap_or_default()
                .iter()
                .take_while(|(q, _)| Some(*q) == p)
                .count()
                .max(1);
            if let Some(group) = hosts.get_mut(i..i + n) {
                self.rng.shuffle(group);
            }
            i += n;
        }
        hosts.truncate(MAX_MX_HOSTS);
        self.ask_addresses(hosts.into_iter().map(|(p, h)| (h, p)).collect(), false)
    }

    fn conclude(
        &self,
        hosts: &[(String, u16)],
        implicit: bool,
        answers: &HashMap<Lookup, LookupResult>,
    ) -> MxVerdict {
        let mut out = Vec::new();
        let mut temp: Option<String> = None;
        let mut nxdomain = 0;
        let mut lookups = 0;
        for (h, p) in hosts {
            let mut ips = Vec::new();
            for t in self.families() {
                lookups += 1;
                let l = Lookup {
                    name: h.clone(),
                    rtype: t,
                };
                match answers.get(&l) {
                    Some(LookupResult::Records { records, .. }) => {
                        for r in records {
                            let ip = match r {
                                Record::A(a) => IpAddr::V4(*a),
                                Record::Aaaa(a) => IpAddr::V6(*a),
                                _ => continue,
                            };
                            if self.family_ok(ip) && !ips.contains(&ip) {
                                ips.push(ip);
                            }
                        }
                    }
                    Some(LookupResult::TempFail(e)) => {
                        temp.get_or_insert_with(|| format!("{h}: {e}"));
                    }
                    Some(LookupResult::NxDomain) => nxdomain += 1,
                    _ => {}
                }
            }
            if !ips.is_empty() {
                out.push(MxHost {
                    host: h.clone(),
                    preference: *p,
                    implicit,
                    ips,
                });
            }
        }
        if !out.is_empty() {
            MxVerdict::Hosts(out)
        } else if let Some(e) = temp {
            MxVerdict::TempFail(e)
        } else if implicit && nxdomain == lookups {
            MxVerdict::NoDomain
        } else if implicit {
            MxVerdict::NoAddress
        } else {
            MxVerdict::TempFail("no MX host has an address".into())
        }
    }
}

impl Check for MxPlan {
    type Verdict = MxVerdict;

    fn poll(&mut self) -> CheckStep<MxVerdict> {
        if let Some(l) = self.queue.pop() {
            return CheckStep::Lookup(l);
        }
        match &self.state {
            State::Start => {
                let l = Lookup {
                    name: self.domain.clone(),
                    rtype: RecordType::Mx,
                };
                self.state = State::WaitMx(l.clone());
                CheckStep::Lookup(l)
            }
            State::WaitMx(_) => CheckStep::Wait,
            State::WaitAddrs {
                hosts,
                implicit,
                asked,
                answers,
            } => {
                if asked.iter().all(|l| answers.contains_key(l)) {
                    let v = self.conclude(hosts, *implicit, answers);
                    self.state = State::Done(v.clone());
                    CheckStep::Done(v)
                } else {
                    CheckStep::Wait
                }
            }
            State::Done(v) => CheckStep::Done(v.clone()),
        }
    }

    fn answer(&mut self, lookup: &Lookup, result: LookupResult) {
        match &mut self.state {
            State::WaitMx(l) if l == lookup => {
                let next = match result {
                    LookupResult::Records { records, .. } => self.handle_mx(records),
                    LookupResult::NoData => {
                        self.ask_addresses(vec![(self.domain.clone(), 0)], true)
                    }
                    LookupResult::NxDomain => State::Done(MxVerdict::NoDomain),
                    LookupResult::TempFail(e) => State::Done(MxVerdict::TempFail(e)),
                };
                self.state = next;
            }
            State::WaitAddrs { asked, answers, .. } if asked.contains(lookup) => {
                answers.insert(lookup.clone(), result);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{run_sync, StaticZone};

    const ZONE: &str = "
example.net. MX 20 mx3.example.net.
example.net. MX 10 mx1.example.net.
example.net. MX 10 mx2.example.net.
example.net. MX 10 mx2.example.net.
mx1.example.net. A 192.0.2.1
mx1.example.net. AAAA 2001:db8::1
mx2.example.net. A 192.0.2.2
mx3.example.net. A 192.0.2.3
null.example. MX 0 .
implicit.example. A 192.0.2.9
implicit.example. AAAA 2001:db8::9
noaddr.example. TXT \"v=spf1 -all\"
dangling.example. MX 10 nowhere.example.
brokenmx.example. MX 10 mx1.example.net.
brokenmx.example. MX 20 broken.example.
;@tempfail broken.example.
;@tempfail servfail.example.
v6only.example. MX 10 mx6.example.
mx6.example. AAAA 2001:db8::6
cname.example. MX 10 alias.example.
alias.example. CNAME mx2.example.net.
";

    fn plan(domain: &str, opts: MxOptions, seed: u64) -> Option<MxVerdict> {
        let zone = StaticZone::parse(ZONE).unwrap();
        let mut p = MxPlan::new(domain, opts, Rng::new(seed));
        run_sync(&mut p, |q| zone.lookup(q), 100)
    }

    fn hosts(v: &Option<MxVerdict>) -> Vec<(String, Vec<String>)> {
        match v {
            Some(MxVerdict::Hosts(h)) => h
                .iter()
                .map(|h| {
                    (
                        h.host.clone(),
                        h.ips.iter().map(|i| i.to_string()).collect(),
                    )
                })
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn preference_order_and_shuffle() {
        let mut firsts = std::collections::BTreeSet::new();
        for seed in 0..32 {
            let h = hosts(&plan("example.net", MxOptions::default(), seed));
            assert_eq!(h.len(), 3, "duplicates removed");
            assert_eq!(h[2].0, "mx3.example.net", "preference 20 last");
            firsts.insert(h[0].0.clone());
            let mx1 = h.iter().find(|x| x.0 == "mx1.example.net").unwrap();
            assert_eq!(mx1.1, ["2001:db8::1", "192.0.2.1"], "IPv6 first");
        }
        assert_eq!(firsts.len(), 2, "equal preferences shuffled: {firsts:?}");
        // Deterministic for a seed.
        assert_eq!(
            plan("example.net", MxOptions::default(), 7),
            plan("example.net", MxOptions::default(), 7)
        );
    }

    #[test]
    fn families() {
        let v4 = MxOptions {
            ipv6: false,
            ..MxOptions::default()
        };
        let h = hosts(&plan("implicit.example", v4, 1));
        assert_eq!(
            h,
            [(
                "implicit.example".to_string(),
                vec!["192.0.2.9".to_string()]
            )]
        );
        let v4first = MxOptions {
            prefer_ipv6: false,
            ..MxOptions::default()
        };
        let h = hosts(&plan("implicit.example", v4first, 1));
        assert_eq!(h[0].1, ["192.0.2.9", "2001:db8::9"]);
        assert_eq!(
            plan("v6only.example", v4, 1),
            Some(MxVerdict::TempFail("no MX host has an address".into()))
        );
        let none = MxOptions {
            ipv4: false,
            ipv6: false,
            prefer_ipv6: false,
        };
        assert!(matches!(
            plan("example.net", none, 1),
            Some(MxVerdict::TempFail(_))
        ));
    }

    #[test]
    fn table() {
        let d = MxOptions::default();
        let cases: Vec<(&str, MxVerdict)> = vec![
            ("null.example", MxVerdict::NullMx),
            ("nonexistent.example", MxVerdict::NoDomain),
            ("noaddr.example", MxVerdict::NoAddress),
            (
                "dangling.example",
                MxVerdict::TempFail("no MX host has an address".into()),
            ),
        ];
        for (dom, want) in cases {
            assert_eq!(plan(dom, d, 1), Some(want), "{dom}");
        }
        assert!(matches!(
            plan("servfail.example", d, 1),
            Some(MxVerdict::TempFail(_))
        ));
        // One MX host fails temporarily: the others are still tried.
        let h = hosts(&plan("brokenmx.example", d, 1));
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].0, "mx1.example.net");
        // Implicit MX.
        let v = plan("implicit.example", d, 1);
        let Some(MxVerdict::Hosts(hs)) = &v else {
            panic!()
        };
        assert!(hs[0].implicit);
        // CNAME followed.
        let h = hosts(&plan("cname.example", d, 1));
        assert_eq!(h[0].1, ["192.0.2.2"]);
    }

    #[test]
    fn literals() {
        let d = MxOptions::default();
        let h = hosts(&plan("[192.0.2.7]", d, 1));
        assert_eq!(
            h,
            [("[192.0.2.7]".to_string(), vec!["192.0.2.7".to_string()])]
        );
        let h = hosts(&plan("[IPv6:2001:db8::7]", d, 1));
        assert_eq!(h[0].1, ["2001:db8::7"]);
        assert_eq!(plan("[bogus]", d, 1), Some(MxVerdict::NoDomain));
    }

    #[test]
    fn verdict_results() {
        let perm = |v: MxVerdict| match v.attempt_result("d.example") {
            Some(AttemptResult::Permanent(f)) => f.status(true).to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(perm(MxVerdict::NullMx), "5.1.10");
        assert_eq!(perm(MxVerdict::NoDomain), "5.1.2");
        assert_eq!(perm(MxVerdict::NoAddress), "5.1.2");
        assert!(matches!(
            MxVerdict::TempFail("x".into()).attempt_result("d"),
            Some(AttemptResult::Temporary(_))
        ));
        assert_eq!(MxVerdict::Hosts(vec![]).attempt_result("d"), None);
    }

    #[test]
    fn asks_all_addresses_at_once_and_caps_hosts() {
        let mut zone = StaticZone::new();
        for i in 0..15u16 {
            zone.add(
                "many.example",
                Record::Mx {
                    preference: i,
                    host: format!("mx{i}.many.example"),
                },
            );
        }
        zone.add("mx14.many.example", Record::A([192, 0, 2, 14].into()));
        zone.add("mx3.many.example", Record::A([192, 0, 2, 3].into()));
        let mut p = MxPlan::new("many.example", MxOptions::default(), Rng::new(1));
        let CheckStep::Lookup(mx) = p.poll() else {
            panic!()
        };
        assert_eq!(p.poll(), CheckStep::Wait);
        p.answer(&mx, zone.lookup(&mx));
        let mut asked = Vec::new();
        while let CheckStep::Lookup(l) = p.poll() {
            asked.push(l);
        }
        assert_eq!(asked.len(), 2 * MAX_MX_HOSTS);
        for l in asked.iter().rev() {
            p.answer(l, zone.lookup(l));
        }
        let CheckStep::Done(MxVerdict::Hosts(h)) = p.poll() else {
            panic!()
        };
        assert_eq!(h.len(), 1, "mx14 is beyond the cap");
        assert_eq!(h[0].host, "mx3.many.example");
        assert_eq!(h[0].preference, 3);
    }
}
