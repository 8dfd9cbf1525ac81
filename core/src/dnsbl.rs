//! DNS block lists (RFC 5782) as [`Check`]s.
//!
//! [`DnsblCheck`] asks each zone about one IP: the IP's labels reversed (IPv4 octets, IPv6
//! nibbles) under the zone, type A. An answer in 127.0.0.0/24 means listed, and the TXT
//! record at the same name gives the reason. NXDOMAIN or NODATA means not listed. Any other
//! answer (e.g. 127.255.255.x, which lists use to say "you may not query us") or a failed
//! lookup is a temporary error: the caller must not treat it as listed.
//!
//! [`DnsblHealthCheck`] tells whether a zone works: 127.0.0.2 must be listed and 127.0.0.1
//! must not (RFC 5782 section 5).

use std::net::{IpAddr, Ipv4Addr};

use crate::dns::{reversed_labels, Check, CheckStep, Lookup, LookupResult, Record, RecordType};

/// The status of an IP on one list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsblStatus {
    /// Not listed.
    Pass,
    /// Listed; the reason from the TXT record (or `listed` when there is none).
    Fail(String),
    /// The list could not be asked, or answered something unexpected.
    TempError(String),
}

/// Whether a list works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsblHealth {
    /// 127.0.0.2 is listed and 127.0.0.1 is not.
    Healthy,
    /// The list answered wrongly; why.
    Unhealthy(String),
    /// The list could not be asked.
    TempError(String),
}

#[derive(Debug, Clone)]
enum ZoneState {
    Ask,
    WaitA(Lookup),
    AskTxt(Lookup),
    WaitTxt(Lookup),
    Done(DnsblStatus),
}

/// One IP against several DNSBL zones, asked in parallel.
#[derive(Debug, Clone)]
pub struct DnsblCheck {
    zones: Vec<(String, ZoneState)>,
    labels: String,
}

fn is_listed_addr(a: Ipv4Addr) -> bool {
    let [x, y, z, _] = a.octets();
    x == 127 && y == 0 && z == 0
}

impl DnsblCheck {
    /// A check of `ip` against `zones` (e.g. `zen.spamhaus.org`).
    pub fn new(ip: IpAddr, zones: &[String]) -> DnsblCheck {
        DnsblCheck {
            zones: zones
                .iter()
                .map(|z| (crate::dns::zone::normalize_name(z), ZoneState::Ask))
                .collect(),
            labels: reversed_labels(ip),
        }
    }

    /// The name asked for `ip` in `zone`.
    #[cfg(test)]
    pub fn query_name(ip: IpAddr, zone: &str) -> String {
        format!(
            "{}.{}",
            reversed_labels(ip),
            crate::dns::zone::normalize_name(zone)
        )
    }
}

impl Check for DnsblCheck {
    /// Per zone, in the order given.
    type Verdict = Vec<(String, DnsblStatus)>;

    fn poll(&mut self) -> CheckStep<Self::Verdict> {
        for (zone, st) in &mut self.zones {
            if let ZoneState::Ask = st {
                let l = Lookup {
                    name: format!("{}.{zone}", self.labels),
                    rtype: RecordType::A,
                };
                *st = ZoneState::WaitA(l.clone());
                return CheckStep::Lookup(l);
            }
            if let ZoneState::AskTxt(l) = st {
                let l = l.clone();
                *st = ZoneState::WaitTxt(l.clone());
                return CheckStep::Lookup(l);
            }
        }
        let mut out = Vec::new();
        for (zone, st) in &self.zones {
            match st {
                ZoneState::Done(s) => out.push((zone.clone(), s.clone())),
                _ => return CheckStep::Wait,
            }
        }
        CheckStep::Done(out)
    }

    fn answer(&mut self, lookup: &Lookup, result: LookupResult) {
        for (_, st) in &mut self.zones {
            match st {
                ZoneState::WaitA(l) if l == lookup => {
                    *st = match result {
                        LookupResult::Records { records, .. } => {
                            let addrs: Vec<Ipv4Addr> = records
                                .iter()
                                .filter_map(|r| match r {
                                    Record::A(a) => Some(*a),
                                    _ => None,
                                })
                                .collect();
                            if !addrs.is_empty() && addrs.iter().all(|a| is_listed_addr(*a)) {
                                ZoneState::AskTxt(Lookup {
                                    name: lookup.name.clone(),
                                    rtype: RecordType::Txt,
                                })
                            } else {
                                ZoneState::Done(DnsblStatus::TempError(format!(
                                    "unexpected answer {addrs:?}"
                                )))
                            }
                        }
                        LookupResult::NxDomain | LookupResult::NoData => {
                            ZoneState::Done(DnsblStatus::Pass)
                        }
                        LookupResult::TempFail(e) => ZoneState::Done(DnsblStatus::TempError(e)),
                    };
                    return;
                }
                ZoneState::WaitTxt(l) if l == lookup => {
                    let reason = match result {
                        LookupResult::Records { records, .. } => records
                            .iter()
                            .filter_map(|r| match r {
                                Record::Txt(parts) => {
                                    Some(String::from_utf8_lossy(&parts.concat()).into_owned())
                                }
                                _ => None,
                            })
                            .collect::<Vec<_>>()
                            .join("; "),
                        _ => String::new(),
                    };
                    let reason = if reason.is_empty() {
                        "listed".to_string()
                    } else {
                        reason
                    };
                    *st = ZoneState::Done(DnsblStatus::Fail(reason));
                    return;
                }
                _ => {}
            }
        }
    }
}

/// Health of several DNSBL zones: 127.0.0.2 listed, 127.0.0.1 not.
#[derive(Debug, Clone)]
pub struct DnsblHealthCheck {
    listed: DnsblCheck,
    unlisted: DnsblCheck,
    zones: Vec<String>,
}

impl DnsblHealthCheck {
    /// A health check of `zones`.
    pub fn new(zones: &[String]) -> DnsblHealthCheck {
        DnsblHealthCheck {
            listed: DnsblCheck::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), zones),
            unlisted: DnsblCheck::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), zones),
            zones: zones
                .iter()
                .map(|z| crate::dns::zone::normalize_name(z))
                .collect(),
        }
    }
}

impl Check for DnsblHealthCheck {
    /// Per zone, in the order given.
    type Verdict = Vec<(String, DnsblHealth)>;

    fn poll(&mut self) -> CheckStep<Self::Verdict> {
        let a = match self.listed.poll() {
            CheckStep::Lookup(l) => return CheckStep::Lookup(l),
            other => other,
        };
        let b = match self.unlisted.poll() {
            CheckStep::Lookup(l) => return CheckStep::Lookup(l),
            other => other,
        };
        let (CheckStep::Done(a), CheckStep::Done(b)) = (a, b) else {
            return CheckStep::Wait;
        };
        let out = self
            .zones
            .iter()
            .zip(a.into_iter().zip(b))
            .map(|(zone, ((_, two), (_, one)))| {
                let h = match (two, one) {
                    (DnsblStatus::TempError(e), _) | (_, DnsblStatus::TempError(e)) => {
                        DnsblHealth::TempError(e)
                    }
                    (DnsblStatus::Fail(_), DnsblStatus::Pass) => DnsblHealth::Healthy,
                    (DnsblStatus::Pass, _) => {
                        DnsblHealth::Unhealthy("127.0.0.2 is not listed".into())
                    }
                    (_, DnsblStatus::Fail(_)) => {
                        DnsblHealth::Unhealthy("127.0.0.1 is listed".into())
                    }
                };
                (zone.clone(), h)
            })
            .collect();
        CheckStep::Done(out)
    }

    fn answer(&mut self, lookup: &Lookup, result: LookupResult) {
        self.listed.answer(lookup, result.clone());
        self.unlisted.answer(lookup, result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{run_sync, StaticZone};

    const ZONE: &str = r#"
$ORIGIN bl.example.
2.0.0.127       A 127.0.0.2
                TXT "test entry" " see https://bl.example/"
4.2.0.192       A 127.0.0.3
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2 A 127.0.0.4
                TXT "v6 spammer"
9.2.0.192       A 127.255.255.254
;@tempfail 8.2.0.192
$ORIGIN broken.example.
1.0.0.127       A 127.0.0.2
2.0.0.127       A 127.0.0.2
$ORIGIN empty.example.
@               TXT "nothing listed"
;@tempfail 2.0.0.127.down.example.
"#;

    fn zones(z: &[&str]) -> Vec<String> {
        z.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn query_names() {
        assert_eq!(
            DnsblCheck::query_name("192.0.2.4".parse().unwrap(), "bl.example."),
            "4.2.0.192.bl.example"
        );
        assert_eq!(
            DnsblCheck::query_name("2001:db8::1".parse().unwrap(), "BL.example"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.example"
        );
    }

    #[test]
    fn table() {
        let zone = StaticZone::parse(ZONE).unwrap();
        let cases: Vec<(&str, DnsblStatus)> = vec![
            ("192.0.2.4", DnsblStatus::Fail("listed".into())),
            ("192.0.2.5", DnsblStatus::Pass),
            (
                "127.0.0.2",
                DnsblStatus::Fail("test entry see https://bl.example/".into()),
            ),
            ("2001:db8::1", DnsblStatus::Fail("v6 spammer".into())),
        ];
        for (ip, want) in cases {
            let mut c = DnsblCheck::new(ip.parse().unwrap(), &zones(&["bl.example"]));
            let v = run_sync(&mut c, |q| zone.lookup(q), 20).unwrap();
            assert_eq!(v, vec![("bl.example".to_string(), want)], "{ip}");
        }
        for ip in ["192.0.2.8", "192.0.2.9"] {
            let mut c = DnsblCheck::new(ip.parse().unwrap(), &zones(&["bl.example"]));
            let v = run_sync(&mut c, |q| zone.lookup(q), 20).unwrap();
            assert!(matches!(v[0].1, DnsblStatus::TempError(_)), "{ip}: {v:?}");
        }
        // Several zones at once, results in the order given.
        let mut c = DnsblCheck::new(
            "127.0.0.2".parse().unwrap(),
            &zones(&["empty.example", "bl.example"]),
        );
        let v = run_sync(&mut c, |q| zone.lookup(q), 20).unwrap();
        assert_eq!(v[0], ("empty.example".into(), DnsblStatus::Pass));
        assert!(matches!(v[1].1, DnsblStatus::Fail(_)));
    }

    #[test]
    fn health() {
        let zone = StaticZone::parse(ZONE).unwrap();
        let mut c = DnsblHealthCheck::new(&zones(&[
            "bl.example",
            "broken.example",
            "empty.example",
            "down.example",
        ]));
        let v = run_sync(&mut c, |q| zone.lookup(q), 50).unwrap();
        assert_eq!(v[0], ("bl.example".into(), DnsblHealth::Healthy));
        assert_eq!(
            v[1],
            (
                "broken.example".into(),
                DnsblHealth::Unhealthy("127.0.0.1 is listed".into())
            )
        );
        assert_eq!(
            v[2],
            (
                "empty.example".into(),
                DnsblHealth::Unhealthy("127.0.0.2 is not listed".into())
            )
        );
        assert!(matches!(v[3].1, DnsblHealth::TempError(_)), "{v:?}");
    }
}
