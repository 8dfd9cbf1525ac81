//! iprev (RFC 8601 section 3): forward-confirmed reverse DNS as a [`Check`].
//!
//! The PTR records of the client IP are looked up, then the addresses (A for IPv4, AAAA for
//! IPv6) of at most [`MAX_NAMES`] of the names, all at once. The names whose addresses
//! include the client IP pass.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::dns::{reverse_name, Check, CheckStep, Lookup, LookupResult, Record, RecordType};

/// PTR names whose addresses are looked up; the rest are ignored.
pub const MAX_NAMES: usize = 10;

/// The verdict of an iprev check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IprevResult {
    /// These names (lower-case, no trailing dot) point back at the IP.
    Pass(Vec<String>),
    /// PTR names exist but none of them resolves to the IP.
    Fail,
    /// A lookup failed temporarily and nothing passed.
    TempError(String),
    /// The IP has no PTR records (NXDOMAIN or NODATA).
    PermError(String),
}

#[derive(Debug, Clone)]
enum State {
    Start,
    WaitPtr(Lookup),
    WaitAddrs {
        names: Vec<String>,
        asked: Vec<Lookup>,
        answers: HashMap<Lookup, LookupResult>,
    },
    Done(IprevResult),
}

/// Forward-confirmed reverse DNS of one IP.
#[derive(Debug, Clone)]
pub struct IprevCheck {
    ip: IpAddr,
    state: State,
    queue: Vec<Lookup>,
}

impl IprevCheck {
    /// A check of `ip` (an IPv4-mapped IPv6 address is checked as IPv4).
    pub fn new(ip: IpAddr) -> IprevCheck {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        IprevCheck {
            ip,
            state: State::Start,
            queue: Vec::new(),
        }
    }

    fn addr_type(&self) -> RecordType {
        match self.ip {
            IpAddr::V4(_) => RecordType::A,
            IpAddr::V6(_) => RecordType::Aaaa,
        }
    }

    fn conclude(&self, names: &[String], answers: &HashMap<Lookup, LookupResult>) -> IprevResult {
        let mut pass = Vec::new();
        let mut temp: Option<String> = None;
        for n in names {
            let l = Lookup {
                name: n.clone(),
                rtype: self.addr_type(),
            };
            match answers.get(&l) {
                Some(LookupResult::Records { records, .. }) => {
                    let hit = records.iter().any(|r| match (r, self.ip) {
                        (Record::A(a), IpAddr::V4(ip)) => *a == ip,
                        (Record::Aaaa(a), IpAddr::V6(ip)) => *a == ip,
                        _ => false,
                    });
                    if hit {
                        pass.push(n.clone());
                    }
                }
                Some(LookupResult::TempFail(e)) => temp = Some(format!("{n}: {e}")),
                _ => {}
            }
        }
        if !pass.is_empty() {
            IprevResult::Pass(pass)
        } else if let Some(e) = temp {
            IprevResult::TempError(e)
        } else {
            IprevResult::Fail
        }
    }
}

impl Check for IprevCheck {
    type Verdict = IprevResult;

    fn poll(&mut self) -> CheckStep<IprevResult> {
        if let Some(l) = self.queue.pop() {
            return CheckStep::Lookup(l);
        }
        match &self.state {
            State::Start => {
                let l = Lookup {
                    name: reverse_name(self.ip),
                    rtype: RecordType::Ptr,
                };
                self.state = State::WaitPtr(l.clone());
                CheckStep::Lookup(l)
            }
            State::WaitPtr(_) => CheckStep::Wait,
            State::WaitAddrs {
                names,
                asked,
                answers,
            } => {
                if asked.iter().all(|l| answers.contains_key(l)) {
                    let v = self.conclude(names, answers);
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
        let rtype = self.addr_type();
        match &mut self.state {
            State::WaitPtr(l) if l == lookup => {
                let next = match result {
                    LookupResult::Records { records, .. } => {
                        let mut names: Vec<String> = Vec::new();
                        for r in records {
                            if let Record::Ptr(n) = r {
                                let n = crate::dns::zone::normalize_name(&n);
                                if !n.is_empty() && !names.contains(&n) {
                                    names.push(n);
                                }
                            }
                        }
                        names.truncate(MAX_NAMES);
                        if names.is_empty() {
                            State::Done(IprevResult::PermError("no PTR names".into()))
                        } else {
                            let asked: Vec<Lookup> = names
                                .iter()
                                .map(|n| Lookup {
                                    name: n.clone(),
                                    rtype,
                                })
                                .collect();
                            self.queue = asked.iter().rev().cloned().collect();
                            State::WaitAddrs {
                                names,
                                asked,
                                answers: HashMap::new(),
                            }
                        }
                    }
                    LookupResult::NxDomain | LookupResult::NoData => {
                        State::Done(IprevResult::PermError("no PTR records".into()))
                    }
                    LookupResult::TempFail(e) => State::Done(IprevResult::TempError(e)),
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
4.2.0.192.in-addr.arpa. PTR mail.example.org.
5.2.0.192.in-addr.arpa. PTR other.example.org.
5.2.0.192.in-addr.arpa. PTR mail.example.org.
6.2.0.192.in-addr.arpa. PTR nowhere.example.org.
7.2.0.192.in-addr.arpa. PTR broken.example.org.
;@tempfail 8.2.0.192.in-addr.arpa.
mail.example.org. A 192.0.2.4
mail.example.org. A 192.0.2.5
mail.example.org. AAAA 2001:db8::4
other.example.org. A 192.0.2.99
4.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR mail.example.org.
;@tempfail broken.example.org.
";

    #[test]
    fn table() {
        let zone = StaticZone::parse(ZONE).unwrap();
        let cases: Vec<(&str, IprevResult)> = vec![
            (
                "192.0.2.4",
                IprevResult::Pass(vec!["mail.example.org".into()]),
            ),
            (
                "::ffff:192.0.2.4",
                IprevResult::Pass(vec!["mail.example.org".into()]),
            ),
            (
                "192.0.2.5",
                IprevResult::Pass(vec!["mail.example.org".into()]),
            ),
            (
                "2001:db8::4",
                IprevResult::Pass(vec!["mail.example.org".into()]),
            ),
            ("192.0.2.6", IprevResult::Fail),
            (
                "192.0.2.99",
                IprevResult::PermError("no PTR records".into()),
            ),
        ];
        for (ip, want) in cases {
            let mut c = IprevCheck::new(ip.parse().unwrap());
            assert_eq!(run_sync(&mut c, |q| zone.lookup(q), 50), Some(want), "{ip}");
        }
        for ip in ["192.0.2.7", "192.0.2.8"] {
            let mut c = IprevCheck::new(ip.parse().unwrap());
            let v = run_sync(&mut c, |q| zone.lookup(q), 50);
            assert!(matches!(v, Some(IprevResult::TempError(_))), "{ip}: {v:?}");
        }
    }

    #[test]
    fn asks_all_names_at_once_and_caps_them() {
        let mut zone = StaticZone::new();
        for i in 0..15 {
            zone.add(
                "1.2.0.192.in-addr.arpa",
                Record::Ptr(format!("n{i}.example.org")),
            );
        }
        zone.add("n14.example.org", Record::A([192, 0, 2, 1].into()));
        let mut c = IprevCheck::new("192.0.2.1".parse().unwrap());
        let CheckStep::Lookup(ptr) = c.poll() else {
            panic!("first step is the PTR lookup")
        };
        assert_eq!(ptr.name, "1.2.0.192.in-addr.arpa");
        assert_eq!(c.poll(), CheckStep::Wait);
        c.answer(&ptr, zone.lookup(&ptr));
        let mut asked = Vec::new();
        while let CheckStep::Lookup(l) = c.poll() {
            asked.push(l);
        }
        assert_eq!(asked.len(), MAX_NAMES);
        for l in &asked {
            c.answer(l, zone.lookup(l));
        }
        // n14 is beyond the first 10 names.
        assert_eq!(c.poll(), CheckStep::Done(IprevResult::Fail));
    }
}
