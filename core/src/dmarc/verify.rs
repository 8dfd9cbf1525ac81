//! DMARC policy discovery and evaluation as a [`Check`] (RFC 7489 6.6).

use std::fmt;

use super::record::{Align, DmarcRecord, Policy, RecordError};
use crate::dkim::{DkimResult, Status as DkimStatus};
use crate::dns::{Check, CheckStep, Lookup, LookupResult, Record, RecordType};
use crate::publicsuffix::organizational_domain;

/// What DMARC evaluation needs about a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcInput {
    /// The RFC5322.From domain, lower-case A-labels.
    pub from_domain: String,
    /// The domain SPF passed for (MAIL FROM domain, or HELO for the null sender), if SPF
    /// passed.
    pub spf_pass_domain: Option<String>,
    /// The `d=` of every DKIM signature that passed.
    pub dkim_pass_domains: Vec<String>,
    /// A random value in 0..100 for `pct` sampling: the policy applies when
    /// `sample < pct`.
    pub sample: u8,
    /// Whether the From domain exists in DNS. When false and the policy comes from the
    /// organizational domain, `np=` applies (RFC 9091). Default true.
    pub from_domain_exists: bool,
}

impl DmarcInput {
    /// Input from the SPF outcome and the DKIM results.
    pub fn new(
        from_domain: &str,
        spf_pass_domain: Option<&str>,
        dkim: &[DkimResult],
        sample: u8,
    ) -> DmarcInput {
        DmarcInput {
            from_domain: from_domain.trim_end_matches('.').to_ascii_lowercase(),
            spf_pass_domain: spf_pass_domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase()),
            dkim_pass_domains: dkim
                .iter()
                .filter(|r| r.status == DkimStatus::Pass)
                .map(|r| r.domain.clone())
                .collect(),
            sample,
            from_domain_exists: true,
        }
    }
}

/// The DMARC outcome (RFC 8601 values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmarcStatus {
    /// An aligned SPF or DKIM pass.
    Pass,
    /// A policy exists and nothing aligned passed.
    Fail,
    /// No policy published.
    None,
    /// The policy could not be looked up now.
    Temperror,
    /// The published policy is broken.
    Permerror,
}

impl DmarcStatus {
    /// The Authentication-Results name.
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcStatus::Pass => "pass",
            DmarcStatus::Fail => "fail",
            DmarcStatus::None => "none",
            DmarcStatus::Temperror => "temperror",
            DmarcStatus::Permerror => "permerror",
        }
    }
}

impl fmt::Display for DmarcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why evaluation did not come to pass or fail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DmarcError {
    /// The record does not parse.
    #[error("bad DMARC record: {0}")]
    Record(RecordError),
    /// More than one DMARC record at the name (policy discovery stops, RFC 7489 6.6.3).
    #[error("multiple DMARC records")]
    MultipleRecords,
    /// The lookup failed temporarily.
    #[error("DMARC lookup failed: {0}")]
    Dns(String),
    /// No From domain to evaluate.
    #[error("no From domain")]
    NoFromDomain,
}

/// The verdict of [`DmarcVerify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcResult {
    /// pass, fail, none, temperror or permerror.
    pub status: DmarcStatus,
    /// What to do with the message after pct sampling: always `None` unless `Fail`.
    pub disposition: Policy,
    /// The policy the record asked for (before sampling), `None` without a record.
    pub requested: Policy,
    /// Where the record was found (the From domain or its organizational domain); empty
    /// if none.
    pub policy_domain: String,
    /// The record used.
    pub record: Option<DmarcRecord>,
    /// A DKIM pass aligned with From.
    pub dkim_aligned: bool,
    /// The SPF pass aligned with From.
    pub spf_aligned: bool,
    /// pct sampling made the disposition milder than requested.
    pub sampled_out: bool,
    /// Why the status is temperror, permerror or none, if known.
    pub error: Option<DmarcError>,
}

impl DmarcResult {
    /// Whether the message should be rejected (before local overrides).
    pub fn is_reject(&self) -> bool {
        self.disposition == Policy::Reject
    }

    /// The Authentication-Results fragment: `dmarc=pass header.from=example.org`.
    pub fn auth_results(&self, from_domain: &str) -> String {
        let mut s = format!("dmarc={}", self.status);
        if let Some(e) = &self.error {
            let reason: String = e
                .to_string()
                .chars()
                .filter(|c| !matches!(c, '(' | ')' | '\\') && !c.is_control())
                .collect();
            s.push_str(&format!(" ({reason})"));
        }
        s.push_str(&format!(" header.from={from_domain}"));
        s
    }

    fn bare(status: DmarcStatus, error: Option<DmarcError>) -> DmarcResult {
        DmarcResult {
            status,
            disposition: Policy::None,
            requested: Policy::None,
            policy_domain: String::new(),
            record: None,
            dkim_aligned: false,
            spf_aligned: false,
            sampled_out: false,
            error,
        }
    }
}

/// Whether `a` and `b` are aligned under `mode`.
pub fn aligned(mode: Align, a: &str, b: &str) -> bool {
    let a = a.trim_end_matches('.');
    let b = b.trim_end_matches('.');
    if a.eq_ignore_ascii_case(b) {
        return true;
    }
    mode == Align::Relaxed && organizational_domain(a) == organizational_domain(b)
}

enum Stage {
    AskFrom,
    WaitFrom,
    AskOrg,
    WaitOrg,
    Done(DmarcResult),
}

/// DMARC evaluation: looks up `_dmarc.<From domain>`, then `_dmarc.<organizational
/// domain>`, and evaluates alignment and policy.
pub struct DmarcVerify {
    input: DmarcInput,
    org: String,
    stage: Stage,
}

impl DmarcVerify {
    /// Starts evaluation.
    pub fn new(input: DmarcInput) -> DmarcVerify {
        let org = organizational_domain(&input.from_domain);
        let stage = if input.from_domain.is_empty() {
            Stage::Done(DmarcResult::bare(
                DmarcStatus::None,
                Some(DmarcError::NoFromDomain),
            ))
        } else {
            Stage::AskFrom
        };
        DmarcVerify { input, org, stage }
    }

    fn evaluate(&self, record: DmarcRecord, at_org: bool) -> DmarcResult {
        let i = &self.input;
        let dkim_aligned = i
            .dkim_pass_domains
            .iter()
            .any(|d| aligned(record.adkim, d, &i.from_domain));
        let spf_aligned = i
            .spf_pass_domain
            .as_deref()
            .is_some_and(|d| aligned(record.aspf, d, &i.from_domain));
        let requested = if at_org {
            let sp = record.subdomain_policy.unwrap_or(record.policy);
            if i.from_domain_exists {
                sp
            } else {
                record.nonexistent_policy.unwrap_or(sp)
            }
        } else {
            record.policy
        };
        let pass = dkim_aligned || spf_aligned;
        let (status, disposition, sampled_out) = if pass {
            (DmarcStatus::Pass, Policy::None, false)
        } else if i.sample < record.percentage {
            (DmarcStatus::Fail, requested, false)
        } else {
            (
                DmarcStatus::Fail,
                requested.milder(),
                requested != Policy::None,
            )
        };
        DmarcResult {
            status,
            disposition,
            requested,
            policy_domain: if at_org {
                self.org.clone()
            } else {
                i.from_domain.clone()
            },
            record: Some(record),
            dkim_aligned,
            spf_aligned,
            sampled_out,
            error: None,
        }
    }

    /// The outcome of one lookup: `Some` result, or `None` to go on to the next name.
    fn handle(&self, result: LookupResult, at_org: bool) -> Option<DmarcResult> {
        let records = match result {
            LookupResult::Records { records, .. } => records,
            LookupResult::NxDomain | LookupResult::NoData => return None,
            LookupResult::TempFail(e) => {
                return Some(DmarcResult::bare(
                    DmarcStatus::Temperror,
                    Some(DmarcError::Dns(e)),
                ))
            }
        };
        let txts: Vec<String> = records
            .into_iter()
            .filter_map(|r| match r {
                Record::Txt(s) => Some(String::from_utf8_lossy(&s.concat()).into_owned()),
                _ => None,
            })
            .filter(|t| DmarcRecord::is_dmarc(t))
            .collect();
        match txts.as_slice() {
            [] => None,
            [one] => Some(match DmarcRecord::parse(one) {
                Ok(rec) => self.evaluate(rec, at_org),
                Err(e) => DmarcResult::bare(DmarcStatus::Permerror, Some(DmarcError::Record(e))),
            }),
            _ => Some(DmarcResult::bare(
                DmarcStatus::None,
                Some(DmarcError::MultipleRecords),
            )),
        }
    }
}

impl Check for DmarcVerify {
    type Verdict = DmarcResult;

    fn poll(&mut self) -> CheckStep<DmarcResult> {
        match &self.stage {
            Stage::AskFrom => {
                self.stage = Stage::WaitFrom;
                CheckStep::Lookup(Lookup {
                    name: format!("_dmarc.{}", self.input.from_domain),
                    rtype: RecordType::Txt,
                })
            }
            Stage::AskOrg => {
                self.stage = Stage::WaitOrg;
                CheckStep::Lookup(Lookup {
                    name: format!("_dmarc.{}", self.org),
                    rtype: RecordType::Txt,
                })
            }
            Stage::WaitFrom | Stage::WaitOrg => CheckStep::Wait,
            Stage::Done(r) => CheckStep::Done(r.clone()),
        }
    }

    fn answer(&mut self, lookup: &Lookup, result: LookupResult) {
        match self.stage {
            Stage::WaitFrom if lookup.name == format!("_dmarc.{}", self.input.from_domain) => {
                self.stage = match self.handle(result, false) {
                    Some(r) => Stage::Done(r),
                    None if self.org != self.input.from_domain => Stage::AskOrg,
                    None => Stage::Done(DmarcResult::bare(DmarcStatus::None, None)),
                };
            }
            Stage::WaitOrg if lookup.name == format!("_dmarc.{}", self.org) => {
                self.stage = Stage::Done(
                    self.handle(result, true)
                        .unwrap_or_else(|| DmarcResult::bare(DmarcStatus::None, None)),
                );
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::run_sync;
    use std::collections::HashMap;

    fn run(input: DmarcInput, z: &[(&str, LookupResult)]) -> (DmarcResult, Vec<String>) {
        let z: HashMap<&str, LookupResult> = z.iter().cloned().collect();
        let mut asked = Vec::new();
        let mut v = DmarcVerify::new(input);
        let r = run_sync(
            &mut v,
            |q| {
                asked.push(q.name.clone());
                z.get(q.name.as_str())
                    .cloned()
                    .unwrap_or(LookupResult::NxDomain)
            },
            10,
        )
        .unwrap();
        (r, asked)
    }

    fn txt(s: &str) -> LookupResult {
        LookupResult::Records {
            records: vec![Record::Txt(vec![s.as_bytes().to_vec()])],
            authentic: false,
        }
    }

    fn input(from: &str, spf: Option<&str>, dkim: &[&str], sample: u8) -> DmarcInput {
        DmarcInput {
            from_domain: from.into(),
            spf_pass_domain: spf.map(Into::into),
            dkim_pass_domains: dkim.iter().map(|s| s.to_string()).collect(),
            sample,
            from_domain_exists: true,
        }
    }

    #[test]
    fn alignment() {
        let table = [
            (Align::Relaxed, "mail.example.org", "example.org", true),
            (Align::Strict, "mail.example.org", "example.org", false),
            (Align::Strict, "Example.org", "example.org.", true),
            (Align::Relaxed, "a.example.co.uk", "b.example.co.uk", true),
            (Align::Relaxed, "a.co.uk", "b.co.uk", false),
            (Align::Relaxed, "example.com", "example.org", false),
        ];
        for (m, a, b, want) in table {
            assert_eq!(aligned(m, a, b), want, "{m:?} {a} {b}");
        }
    }

    #[test]
    fn evaluation_table() {
        let reject = txt("v=DMARC1; p=reject; sp=quarantine; pct=50");
        let strict = txt("v=DMARC1; p=reject; adkim=s; aspf=s");
        struct Case {
            input: DmarcInput,
            zone: Vec<(&'static str, LookupResult)>,
            status: DmarcStatus,
            disposition: Policy,
            asked: &'static [&'static str],
        }
        let cases = vec![
            // DKIM aligned (relaxed) passes.
            Case {
                input: input("example.org", None, &["mail.example.org"], 0),
                zone: vec![("_dmarc.example.org", reject.clone())],
                status: DmarcStatus::Pass,
                disposition: Policy::None,
                asked: &["_dmarc.example.org"],
            },
            // SPF aligned passes.
            Case {
                input: input("example.org", Some("bounce.example.org"), &[], 0),
                zone: vec![("_dmarc.example.org", reject.clone())],
                status: DmarcStatus::Pass,
                disposition: Policy::None,
                asked: &["_dmarc.example.org"],
            },
            // Nothing aligned: reject, sampled in.
            Case {
                input: input("example.org", Some("other.example"), &["other.example"], 49),
                zone: vec![("_dmarc.example.org", reject.clone())],
                status: DmarcStatus::Fail,
                disposition: Policy::Reject,
                asked: &["_dmarc.example.org"],
            },
            // Sampled out: one step milder.
            Case {
                input: input("example.org", None, &[], 50),
                zone: vec![("_dmarc.example.org", reject.clone())],
                status: DmarcStatus::Fail,
                disposition: Policy::Quarantine,
                asked: &["_dmarc.example.org"],
            },
            // Subdomain without a record: org record's sp applies.
            Case {
                input: input("a.b.example.org", None, &[], 0),
                zone: vec![("_dmarc.example.org", reject.clone())],
                status: DmarcStatus::Fail,
                disposition: Policy::Quarantine,
                asked: &["_dmarc.a.b.example.org", "_dmarc.example.org"],
            },
            // Strict alignment.
            Case {
                input: input(
                    "example.org",
                    Some("mail.example.org"),
                    &["mail.example.org"],
                    0,
                ),
                zone: vec![("_dmarc.example.org", strict.clone())],
                status: DmarcStatus::Fail,
                disposition: Policy::Reject,
                asked: &["_dmarc.example.org"],
            },
            Case {
                input: input("example.org", None, &["example.org"], 0),
                zone: vec![("_dmarc.example.org", strict.clone())],
                status: DmarcStatus::Pass,
                disposition: Policy::None,
                asked: &["_dmarc.example.org"],
            },
            // No record anywhere.
            Case {
                input: input("a.example.org", None, &[], 0),
                zone: vec![],
                status: DmarcStatus::None,
                disposition: Policy::None,
                asked: &["_dmarc.a.example.org", "_dmarc.example.org"],
            },
            // Org domain itself: one lookup only.
            Case {
                input: input("example.org", None, &[], 0),
                zone: vec![],
                status: DmarcStatus::None,
                disposition: Policy::None,
                asked: &["_dmarc.example.org"],
            },
            // Non-DMARC TXT records are ignored.
            Case {
                input: input("example.org", None, &[], 0),
                zone: vec![("_dmarc.example.org", txt("v=spf1 -all"))],
                status: DmarcStatus::None,
                disposition: Policy::None,
                asked: &["_dmarc.example.org"],
            },
            // Broken record.
            Case {
                input: input("example.org", None, &[], 0),
                zone: vec![("_dmarc.example.org", txt("v=DMARC1; p=reject; pct=200"))],
                status: DmarcStatus::Permerror,
                disposition: Policy::None,
                asked: &["_dmarc.example.org"],
            },
            // Temporary failure.
            Case {
                input: input("example.org", None, &[], 0),
                zone: vec![(
                    "_dmarc.example.org",
                    LookupResult::TempFail("servfail".into()),
                )],
                status: DmarcStatus::Temperror,
                disposition: Policy::None,
                asked: &["_dmarc.example.org"],
            },
            // Multiple records.
            Case {
                input: input("example.org", None, &[], 0),
                zone: vec![(
                    "_dmarc.example.org",
                    LookupResult::Records {
                        records: vec![
                            Record::Txt(vec![b"v=DMARC1; p=none".to_vec()]),
                            Record::Txt(vec![b"v=DMARC1; p=reject".to_vec()]),
                        ],
                        authentic: false,
                    },
                )],
                status: DmarcStatus::None,
                disposition: Policy::None,
                asked: &["_dmarc.example.org"],
            },
        ];
        for (n, c) in cases.into_iter().enumerate() {
            let (r, asked) = run(c.input, &c.zone);
            assert_eq!(
                (r.status, r.disposition),
                (c.status, c.disposition),
                "case {n}: {r:?}"
            );
            assert_eq!(asked, c.asked, "case {n}");
        }
    }

    #[test]
    fn nonexistent_policy_and_auth_results() {
        let mut i = input("gone.example.org", None, &[], 0);
        i.from_domain_exists = false;
        let z = vec![("_dmarc.example.org", txt("v=DMARC1; p=none; np=reject"))];
        let (r, _) = run(i, &z);
        assert_eq!(r.disposition, Policy::Reject);
        assert!(r.is_reject());
        assert_eq!(r.policy_domain, "example.org");
        assert_eq!(
            r.auth_results("gone.example.org"),
            "dmarc=fail header.from=gone.example.org"
        );
        let (r, _) = run(input("", None, &[], 0), &[]);
        assert_eq!(r.error, Some(DmarcError::NoFromDomain));
        let dk = DkimResult {
            status: DkimStatus::Pass,
            domain: "example.org".into(),
            selector: "s".into(),
            identity: None,
            algorithm: None,
            b: String::new(),
            key_bits: None,
            testing: false,
            error: None,
        };
        let i = DmarcInput::new("Example.ORG.", Some("x.example"), &[dk], 3);
        assert_eq!(i.from_domain, "example.org");
        assert_eq!(i.dkim_pass_domains, vec!["example.org"]);
    }
}
