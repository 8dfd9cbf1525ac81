//! DANE for SMTP (RFC 7672, with V. Dukhovni's implementation checklist): from DNS facts
//! about one MX host to a verdict: verify with these TLSA records, no DANE, unusable
//! records (TLS without authentication), or a temporary failure.
//!
//! The caller looks things up; [`DaneInput::step`] says what to ask next:
//!
//! ```text
//! let mut input = DaneInput::new(mx_host, mx_secure, address, trust_ad);
//! loop {
//!     match input.step() {
//!         DaneStep::LookupTlsa(name) => input.tlsa.push(answer_for(&name)),
//!         DaneStep::Verdict(v) => break v,
//!     }
//! }
//! ```
//!
//! Rules (RFC 7672 2.1, 2.2):
//! * The AD bit counts only from a trusted resolver (`trust_ad`); without it every answer
//!   is insecure and DANE does not apply.
//! * The MX RRset (or, for an implicit MX, the denial of MX records) must be secure, and so
//!   must the whole CNAME chain of the host's addresses; otherwise no TLSA lookup: insecure.
//! * With a secure CNAME chain, the TLSA records of the fully expanded name are tried
//!   first, then those of the MX host name as published (2.2.2). The name whose records are
//!   used is the TLSA base domain; it is the SNI. The reference identifiers for DANE-TA
//!   name checks are the TLSA base domain and the MX host name.
//! * SERVFAIL, timeouts and DNSSEC bogus answers are temporary failures: this MX host is
//!   not used now (no downgrade, 2.1.1).
//! * TLSA records from an insecure answer are ignored (insecure). A secure denial moves
//!   on to the next candidate name; none left: insecure.
//! * Only DANE-TA(2) and DANE-EE(3) with selector 0/1 and matching type 0/1/2 (with a
//!   digest of the right length) are usable; PKIX-TA(0)/PKIX-EE(1) are not (3.1.3). A
//!   secure RRset with no usable record: TLS is mandatory but not authenticated (2.2).

use crate::dns::{run_sync, Check, CheckStep, Lookup, LookupResult, Record, RecordType};
use crate::tls::Tlsa;

/// The TLSA query name for SMTP on port 25 at `base`: `_25._tcp.BASE`.
pub fn tlsa_name(base: &str) -> String {
    format!("_25._tcp.{}", base.trim_end_matches('.'))
}

/// The outcome of the address lookup of an MX host: the CNAME chain followed, and whether
/// every step of it (and the final A/AAAA answer) was DNSSEC-validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressFacts {
    /// CNAME targets in the order followed (empty: the host name has addresses itself).
    pub cnames: Vec<String>,
    /// The AD bit on every answer of the chain.
    pub secure: bool,
}

/// Facts about one MX host, and the TLSA answers gathered so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaneInput {
    /// The MX host name as in the MX record (the domain itself for an implicit MX),
    /// lower-case, no trailing dot.
    pub mx_host: String,
    /// Whether the MX answer (or its denial, for an implicit MX) had the AD bit.
    pub mx_secure: bool,
    /// The address lookup of `mx_host`.
    pub address: AddressFacts,
    /// Whether the AD bit is trusted (the resolver validates and the path to it is
    /// trusted; configuration).
    pub trust_ad: bool,
    /// TLSA answers, one per [`DaneStep::LookupTlsa`] asked, in order.
    pub tlsa: Vec<LookupResult>,
}

/// The usable TLSA records of a secure host and the names to use with them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaneSecure {
    /// The usable records (DANE-TA and DANE-EE only); never empty.
    pub records: Vec<Tlsa>,
    /// The name whose TLSA records these are; also the SNI to send (RFC 7672 8.1).
    pub base_domain: String,
    /// Reference identifiers for DANE-TA name checks: the TLSA base domain, then the MX
    /// host name when it differs (RFC 7672 3.2.2).
    pub names: Vec<String>,
}

/// Why DANE does not apply to a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsecureReason {
    /// The AD bit is not trusted by configuration.
    UntrustedResolver,
    /// The MX answer was not DNSSEC-validated.
    MxInsecure,
    /// The host's address answers (or its CNAME chain) were not DNSSEC-validated.
    AddressInsecure,
    /// The TLSA answer was not DNSSEC-validated.
    TlsaInsecure,
    /// A validated denial: the host publishes no TLSA records.
    NoTlsa,
}

/// The DANE verdict for one MX host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaneVerdict {
    /// Verify the server with these records.
    Secure(DaneSecure),
    /// DANE does not apply: MTA-STS or opportunistic TLS decide.
    Insecure(InsecureReason),
    /// Validated TLSA records exist but none is usable: TLS is mandatory, without
    /// authentication (RFC 7672 2.2).
    NoUsableRecords {
        /// The name whose records were unusable.
        base_domain: String,
    },
    /// The TLSA lookup failed (SERVFAIL, bogus, timeout): do not use this host now.
    TempFail {
        /// The name looked up.
        name: String,
        /// What the resolver said.
        reason: String,
    },
}

/// What [`DaneInput::step`] needs next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaneStep {
    /// Look up TLSA records at this name (`_25._tcp.BASE`) and push the answer.
    LookupTlsa(String),
    /// Done.
    Verdict(DaneVerdict),
}

/// Whether a TLSA record can be used for SMTP (RFC 7672 3.1.3, Dukhovni's checklist:
/// PKIX usages, unknown selectors or matching types, and digests of the wrong length are
/// unusable).
pub fn is_usable(t: &Tlsa) -> bool {
    matches!(t.usage, 2 | 3)
        && matches!(t.selector, 0 | 1)
        && match t.matching {
            0 => !t.data.is_empty(),
            1 => t.data.len() == 32,
            2 => t.data.len() == 64,
            _ => false,
        }
}

impl DaneInput {
    /// Facts without TLSA answers yet.
    pub fn new(mx_host: &str, mx_secure: bool, address: AddressFacts, trust_ad: bool) -> Self {
        DaneInput {
            mx_host: mx_host.trim_end_matches('.').to_ascii_lowercase(),
            mx_secure,
            address,
            trust_ad,
            tlsa: Vec::new(),
        }
    }

    /// The candidate TLSA base domains in the order to try: the fully CNAME-expanded name
    /// (when there is a chain), then the MX host name.
    pub fn candidates(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(last) = self.address.cnames.last() {
            let last = last.trim_end_matches('.').to_ascii_lowercase();
            if last != self.mx_host {
                out.push(last);
            }
        }
        out.push(self.mx_host.clone());
        out
    }

    /// The next lookup, or the verdict once enough answers are in.
    pub fn step(&self) -> DaneStep {
        use DaneStep::Verdict;
        use DaneVerdict::Insecure;
        if !self.trust_ad {
            return Verdict(Insecure(InsecureReason::UntrustedResolver));
        }
        if !self.mx_secure {
            return Verdict(Insecure(InsecureReason::MxInsecure));
        }
        if !self.address.secure {
            return Verdict(Insecure(InsecureReason::AddressInsecure));
        }
        let candidates = self.candidates();
        for (i, base) in candidates.iter().enumerate() {
            let Some(answer) = self.tlsa.get(i) else {
                return DaneStep::LookupTlsa(tlsa_name(base));
            };
            match answer {
                LookupResult::TempFail(reason) => {
                    return Verdict(DaneVerdict::TempFail {
                        name: tlsa_name(base),
                        reason: reason.clone(),
                    })
                }
                LookupResult::NxDomain | LookupResult::NoData => continue,
                LookupResult::Records {
                    authentic: false, ..
                } => return Verdict(Insecure(InsecureReason::TlsaInsecure)),
                LookupResult::Records {
                    records,
                    authentic: true,
                } => {
                    let all: Vec<Tlsa> = records
                        .iter()
                        .filter_map(|r| match r {
                            Record::Tlsa {
                                usage,
                                selector,
                                matching,
                                data,
                            } => Some(Tlsa {
                                usage: *usage,
                                selector: *selector,
                                matching: *matching,
                                data: data.clone(),
                            }),
                            _ => None,
                        })
                        .collect();
                    if all.is_empty() {
                        // Only CNAMEs or other types: as no TLSA records here.
                        continue;
                    }
                    let usable: Vec<Tlsa> = all.into_iter().filter(is_usable).collect();
                    if usable.is_empty() {
                        return Verdict(DaneVerdict::NoUsableRecords {
                            base_domain: base.clone(),
                        });
                    }
                    let mut names = vec![base.clone()];
                    if *base != self.mx_host {
                        names.push(self.mx_host.clone());
                    }
                    return Verdict(DaneVerdict::Secure(DaneSecure {
                        records: usable,
                        base_domain: base.clone(),
                        names,
                    }));
                }
            }
        }
        Verdict(Insecure(InsecureReason::NoTlsa))
    }

    /// Runs [`DaneInput::step`] to the verdict with a lookup function (tests, tools), as a
    /// [`DaneCheck`] through [`run_sync`].
    pub fn evaluate(self, mut lookup: impl FnMut(&str) -> LookupResult) -> DaneVerdict {
        let name = tlsa_name(&self.mx_host);
        // At most one lookup per candidate (two): the run is bounded.
        run_sync(&mut DaneCheck::new(self), |l| lookup(&l.name), 4).unwrap_or(
            DaneVerdict::TempFail {
                name,
                reason: "too many lookups".into(),
            },
        )
    }
}

/// [`DaneInput`] as a DNS [`Check`], so the drivers of checks
/// ([`crate::dns::CheckSession`], [`run_sync`]) run it: each TLSA question is asked once
/// and its answer pushed to [`DaneInput::tlsa`].
#[derive(Clone, Debug)]
pub struct DaneCheck {
    input: DaneInput,
    /// TLSA questions asked so far (answered ones are in `input.tlsa`).
    asked: usize,
}

impl DaneCheck {
    /// The check for `input` (its TLSA answers so far count as asked).
    pub fn new(input: DaneInput) -> DaneCheck {
        let asked = input.tlsa.len();
        DaneCheck { input, asked }
    }

    /// The facts gathered so far.
    pub fn input(&self) -> &DaneInput {
        &self.input
    }
}

impl Check for DaneCheck {
    type Verdict = DaneVerdict;

    fn poll(&mut self) -> CheckStep<DaneVerdict> {
        match self.input.step() {
            DaneStep::Verdict(v) => CheckStep::Done(v),
            DaneStep::LookupTlsa(_) if self.asked > self.input.tlsa.len() => CheckStep::Wait,
            DaneStep::LookupTlsa(name) => {
                self.asked += 1;
                CheckStep::Lookup(Lookup {
                    name,
                    rtype: RecordType::Tlsa,
                })
            }
        }
    }

    fn answer(&mut self, lookup: &Lookup, result: LookupResult) {
        if lookup.rtype == RecordType::Tlsa && self.asked > self.input.tlsa.len() {
            self.input.tlsa.push(result);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tlsa(usage: u8, selector: u8, matching: u8, len: usize) -> Record {
        Record::Tlsa {
            usage,
            selector,
            matching,
            data: vec![0xab; len],
        }
    }

    fn secure(records: Vec<Record>) -> LookupResult {
        LookupResult::Records {
            records,
            authentic: true,
        }
    }

    fn addr(cnames: &[&str], secure: bool) -> AddressFacts {
        AddressFacts {
            cnames: cnames.iter().map(|s| s.to_string()).collect(),
            secure,
        }
    }

    /// The harness scenarios (../shared/harness/README.md section 4) as DNS facts, and one
    /// row per rule: (name, input, answers by query name, expected verdict kind, base).
    #[test]
    fn verdicts() {
        type Answers = Vec<(&'static str, LookupResult)>;
        let ee = || secure(vec![tlsa(3, 1, 1, 32)]);
        let rows: Vec<(&str, DaneInput, Answers, &str, Option<&str>)> = vec![
            (
                "dane.example: DANE-EE, secure",
                DaneInput::new("mx.dane.example", true, addr(&[], true), true),
                vec![("_25._tcp.mx.dane.example", ee())],
                "secure",
                Some("mx.dane.example"),
            ),
            (
                "ta.dane.example: DANE-TA, secure",
                DaneInput::new("mx.ta.dane.example", true, addr(&[], true), true),
                vec![(
                    "_25._tcp.mx.ta.dane.example",
                    secure(vec![tlsa(2, 0, 1, 32)]),
                )],
                "secure",
                Some("mx.ta.dane.example"),
            ),
            (
                "bad.dane.example: records usable, mismatch found later in the handshake",
                DaneInput::new("mx.bad.dane.example", true, addr(&[], true), true),
                vec![("_25._tcp.mx.bad.dane.example", ee())],
                "secure",
                Some("mx.bad.dane.example"),
            ),
            (
                "bogus.example: SERVFAIL on TLSA is a temporary failure",
                DaneInput::new("mx.bogus.example", true, addr(&[], true), true),
                vec![(
                    "_25._tcp.mx.bogus.example",
                    LookupResult::TempFail("SERVFAIL".into()),
                )],
                "tempfail",
                None,
            ),
            (
                "example.org: unsigned zone, no DANE",
                DaneInput::new("mx1.example.org", false, addr(&[], false), true),
                vec![],
                "insecure:mx",
                None,
            ),
            (
                "untrusted resolver: no DANE even with AD",
                DaneInput::new("mx.dane.example", true, addr(&[], true), false),
                vec![],
                "insecure:untrusted",
                None,
            ),
            (
                "secure MX, insecure addresses: no TLSA lookup",
                DaneInput::new("mx.dane.example", true, addr(&[], false), true),
                vec![],
                "insecure:address",
                None,
            ),
            (
                "TLSA answer without AD: ignored",
                DaneInput::new("mx.dane.example", true, addr(&[], true), true),
                vec![(
                    "_25._tcp.mx.dane.example",
                    LookupResult::Records {
                        records: vec![tlsa(3, 1, 1, 32)],
                        authentic: false,
                    },
                )],
                "insecure:tlsa",
                None,
            ),
            (
                "secure NXDOMAIN: no TLSA",
                DaneInput::new("mx.dane.example", true, addr(&[], true), true),
                vec![("_25._tcp.mx.dane.example", LookupResult::NxDomain)],
                "insecure:notlsa",
                None,
            ),
            (
                "only PKIX usages: unusable, TLS mandatory",
                DaneInput::new("mx.dane.example", true, addr(&[], true), true),
                vec![(
                    "_25._tcp.mx.dane.example",
                    secure(vec![tlsa(0, 0, 1, 32), tlsa(1, 1, 1, 32)]),
                )],
                "unusable",
                Some("mx.dane.example"),
            ),
            (
                "bad selector, matching type, digest lengths: unusable",
                DaneInput::new("mx.dane.example", true, addr(&[], true), true),
                vec![(
                    "_25._tcp.mx.dane.example",
                    secure(vec![
                        tlsa(3, 2, 1, 32),
                        tlsa(3, 1, 3, 32),
                        tlsa(3, 1, 1, 31),
                        tlsa(3, 1, 2, 32),
                        tlsa(3, 0, 0, 0),
                    ]),
                )],
                "unusable",
                Some("mx.dane.example"),
            ),
            (
                "secure CNAME chain: expanded name first",
                DaneInput::new(
                    "mx.dane.example",
                    true,
                    addr(&["a.other.example", "b.host.example"], true),
                    true,
                ),
                vec![("_25._tcp.b.host.example", ee())],
                "secure",
                Some("b.host.example"),
            ),
            (
                "secure CNAME chain, no TLSA at target: MX host name",
                DaneInput::new(
                    "mx.dane.example",
                    true,
                    addr(&["b.host.example"], true),
                    true,
                ),
                vec![
                    ("_25._tcp.b.host.example", LookupResult::NoData),
                    ("_25._tcp.mx.dane.example", ee()),
                ],
                "secure",
                Some("mx.dane.example"),
            ),
            (
                "insecure CNAME chain: no DANE",
                DaneInput::new(
                    "mx.dane.example",
                    true,
                    addr(&["b.host.example"], false),
                    true,
                ),
                vec![],
                "insecure:address",
                None,
            ),
            (
                "secure CNAME chain, tempfail at target: no fallback to the original",
                DaneInput::new(
                    "mx.dane.example",
                    true,
                    addr(&["b.host.example"], true),
                    true,
                ),
                vec![(
                    "_25._tcp.b.host.example",
                    LookupResult::TempFail("timeout".into()),
                )],
                "tempfail",
                None,
            ),
        ];
        for (name, input, answers, want, base) in rows {
            let mut asked = Vec::new();
            let v = input.evaluate(|q| {
                asked.push(q.to_string());
                answers
                    .iter()
                    .find(|(n, _)| *n == q)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_else(|| panic!("{name}: unexpected lookup {q}"))
            });
            let (kind, got_base) = match &v {
                DaneVerdict::Secure(s) => ("secure", Some(s.base_domain.as_str())),
                DaneVerdict::NoUsableRecords { base_domain } => {
                    ("unusable", Some(base_domain.as_str()))
                }
                DaneVerdict::TempFail { .. } => ("tempfail", None),
                DaneVerdict::Insecure(r) => (
                    match r {
                        InsecureReason::UntrustedResolver => "insecure:untrusted",
                        InsecureReason::MxInsecure => "insecure:mx",
                        InsecureReason::AddressInsecure => "insecure:address",
                        InsecureReason::TlsaInsecure => "insecure:tlsa",
                        InsecureReason::NoTlsa => "insecure:notlsa",
                    },
                    None,
                ),
            };
            assert_eq!((kind, got_base), (want, base), "{name}: {v:?}");
            assert_eq!(asked.len(), answers.len(), "{name}: lookups {asked:?}");
        }
    }

    #[test]
    fn names_with_cname() {
        let input = DaneInput::new(
            "MX.Dane.Example.",
            true,
            addr(&["b.host.example."], true),
            true,
        );
        let v = input.evaluate(|_| secure(vec![tlsa(2, 1, 2, 64), tlsa(0, 1, 1, 32)]));
        let DaneVerdict::Secure(s) = v else {
            panic!("{v:?}")
        };
        assert_eq!(s.records.len(), 1, "PKIX record dropped, DANE-TA kept");
        assert_eq!(s.base_domain, "b.host.example");
        assert_eq!(s.names, vec!["b.host.example", "mx.dane.example"]);
        assert_eq!(tlsa_name("x.example."), "_25._tcp.x.example");
    }

    /// DANE in the session shape: the TLSA questions come as effects with tokens, one
    /// candidate at a time (expanded name first, then the MX host name after a secure
    /// denial), and the verdict is the one `evaluate` gives.
    #[test]
    fn dane_check_as_a_session() {
        use crate::dns::{CheckInput, CheckLimits, CheckOutput, CheckSession};
        #[allow(clippy::disallowed_methods)]
        let now = crate::Now {
            mono: std::time::Instant::now(),
            wall: crate::UnixTime(1_700_000_000),
        };
        let input = DaneInput::new(
            "mx.dane.example",
            true,
            addr(&["b.host.example"], true),
            true,
        );
        let mut s = CheckSession::new(DaneCheck::new(input), CheckLimits::default());
        let CheckOutput::Effect(t0, q0) = s.poll(now) else {
            panic!("expected the first TLSA effect");
        };
        assert_eq!(q0.len(), 1);
        assert_eq!(q0[0].name, "_25._tcp.b.host.example");
        assert_eq!(q0[0].rtype, RecordType::Tlsa);
        assert!(matches!(s.poll(now), CheckOutput::Idle { .. }));
        s.handle(now, CheckInput::Answered(t0, vec![LookupResult::NxDomain]));
        let CheckOutput::Effect(t1, q1) = s.poll(now) else {
            panic!("expected the second TLSA effect");
        };
        assert_ne!(t1, t0);
        assert_eq!(q1[0].name, "_25._tcp.mx.dane.example");
        s.handle(
            now,
            CheckInput::Answered(t1, vec![secure(vec![tlsa(3, 1, 1, 32)])]),
        );
        match s.poll(now) {
            CheckOutput::Done(DaneVerdict::Secure(d)) => {
                assert_eq!(d.base_domain, "mx.dane.example")
            }
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        /// Whatever the answers, the evaluation ends with at most two lookups and never
        /// calls a host secure from an unauthenticated or untrusted answer.
        #[test]
        fn evaluation_is_bounded_and_sound(
            mx_secure in any::<bool>(), addr_secure in any::<bool>(), trust in any::<bool>(),
            cname in any::<bool>(),
            answers in proptest::collection::vec((0u8..4, any::<bool>(), proptest::collection::vec((0u8..5, 0u8..3, 0u8..4, 0usize..70), 0..4)), 2),
        ) {
            let facts = addr(if cname { &["t.example"] } else { &[] }, addr_secure);
            let input = DaneInput::new("mx.example", mx_secure, facts, trust);
            let mut n = 0;
            let mut last_auth = true;
            let v = input.evaluate(|_| {
                let (kind, auth, recs) = &answers[n.min(1)];
                n += 1;
                last_auth = *auth;
                match kind {
                    0 => LookupResult::NxDomain,
                    1 => LookupResult::TempFail("x".into()),
                    _ => LookupResult::Records {
                        records: recs.iter().map(|&(u, s, m, l)| tlsa(u, s, m, l)).collect(),
                        authentic: *auth,
                    },
                }
            });
            prop_assert!(n <= 2);
            if let DaneVerdict::Secure(s) = &v {
                prop_assert!(trust && mx_secure && addr_secure && last_auth);
                prop_assert!(!s.records.is_empty() && s.records.iter().all(is_usable));
            }
        }
    }
}
