//! The TLS requirement for one MX host of one delivery attempt: the recipient domain's
//! MTA-STS policy, the host's DANE verdict and the message's REQUIRETLS (RFC 8689) or
//! `TLS-Required: No` flag, combined into what the client session must do.
//!
//! Rules, in order:
//! 1. REQUIRETLS (the MAIL FROM parameter; the `TLS-Required` header is then ignored,
//!    RFC 8689 5): the connection must be verified by DANE or MTA-STS and the next hop must
//!    announce REQUIRETLS; never downgraded. An MTA-STS policy in testing mode is applied as
//!    enforce (RFC 8689 4.2.1). A DANE temporary failure defers the host; a host that no
//!    policy can verify fails the recipients with a DSN (5.7.10).
//! 2. `TLS-Required: No` (RFC 8689 5): MTA-STS and DANE are not applied as requirements.
//!    STARTTLS is used when offered and the policy's verification is still attempted, but
//!    its failures are only recorded (mox: verification errors ignored), and plaintext is
//!    allowed.
//! 3. Otherwise: an MTA-STS policy in enforce mode skips an MX host that matches no
//!    pattern (temporary failure when no host is left). DANE (secure TLSA) is used when
//!    present (it wins over MTA-STS, RFC 8461 2); a DANE temporary failure defers the
//!    host; validated but unusable TLSA records make TLS mandatory without
//!    authentication (or WebPKI when MTA-STS enforces). Without DANE, MTA-STS enforce
//!    requires STARTTLS with WebPKI verification of the MX host name (as published,
//!    before CNAMEs). MTA-STS testing delivers anyway: WebPKI is attempted and a failure
//!    (or an MX mismatch) is recorded for the TLS report. No policy: opportunistic
//!    STARTTLS, no verification.

use super::dane::{DaneSecure, DaneVerdict};
use super::mtasts::{Mode, StsPolicy};
use super::tlsrpt::PolicyType;
use crate::client::TlsMode;

/// The message's TLS requirement from its sender (as stored with the queue entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MessageTls {
    /// No statement: the recipient's policies decide.
    #[default]
    Default,
    /// The REQUIRETLS MAIL FROM parameter (RFC 8689 4).
    RequireTls,
    /// The `TLS-Required: No` header field (RFC 8689 5) and no REQUIRETLS.
    TlsRequiredNo,
}

/// Whether STARTTLS must succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartTls {
    /// STARTTLS must be offered and succeed; otherwise the host is not delivered to.
    Required,
    /// STARTTLS when offered; plaintext otherwise, or after a failed handshake (with a
    /// new connection).
    Opportunistic,
}

/// How the server's certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verification {
    /// Any certificate (opportunistic TLS, RFC 7435).
    None,
    /// WebPKI: a chain to a trusted root for one of these names (RFC 8461 4.2).
    WebPki {
        /// The names the certificate must cover (the MX host name).
        names: Vec<String>,
    },
    /// DANE with these records, base domain (SNI) and names.
    Dane(DaneSecure),
}

/// What happens when verification fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnFailure {
    /// The host is not delivered to.
    Abort,
    /// Deliver anyway and record the failure for the TLS report (MTA-STS testing,
    /// `TLS-Required: No`).
    DeliverAndReport,
}

/// Why an MX host is not used now (temporary: another host or a later attempt may do).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The MTA-STS policy (enforce) lists no pattern matching the host.
    StsMxMismatch,
    /// The DANE TLSA lookup failed temporarily (or was bogus).
    DaneTempFail {
        /// The TLSA name.
        name: String,
        /// The resolver's reason.
        reason: String,
    },
}

/// Why a REQUIRETLS message cannot go to this host (permanent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// Neither DANE nor MTA-STS can verify the host (RFC 8689 4.2.1).
    NoVerifiedTls,
    /// The next hop did not announce REQUIRETLS after TLS (RFC 8689 4.2.1 step 4; the
    /// client session reports it; named here for the DSN code).
    NextHopLacksRequireTls,
}

impl FailReason {
    /// The enhanced status code for the DSN.
    pub fn enhanced(self) -> &'static str {
        match self {
            FailReason::NoVerifiedTls => "5.7.10",
            FailReason::NextHopLacksRequireTls => "5.7.30",
        }
    }
}

/// How to connect to one MX host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectTls {
    /// STARTTLS required or opportunistic.
    pub starttls: StartTls,
    /// Certificate verification.
    pub verify: Verification,
    /// What a verification failure does.
    pub on_failure: OnFailure,
    /// The next hop must announce REQUIRETLS and MAIL FROM carries it (RFC 8689).
    pub requiretls: bool,
    /// The policy type the attempt's result is reported under (RFC 8460).
    pub report: PolicyType,
    /// An MTA-STS testing-mode MX mismatch to record as a failure (delivery goes on).
    pub sts_testing_mismatch: bool,
}

impl ConnectTls {
    /// The client machine's STARTTLS mode for this requirement.
    pub fn tls_mode(&self) -> TlsMode {
        match self.starttls {
            StartTls::Required => TlsMode::RequiredStartTls,
            StartTls::Opportunistic => TlsMode::Opportunistic,
        }
    }
}

/// The verdict for one MX host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsRequirement {
    /// Connect under these rules.
    Connect(ConnectTls),
    /// Do not use this host now (temporary).
    Skip(SkipReason),
    /// A REQUIRETLS message cannot be delivered through this host: fail with a DSN.
    Fail(FailReason),
}

/// The MTA-STS policy as far as this decision needs it.
fn sts_applies(sts: Option<&StsPolicy>) -> Option<&StsPolicy> {
    sts.filter(|p| p.mode != Mode::None)
}

/// Combines the policies for one MX host (`mx_host` as published in the MX record).
/// `sts` is the policy [`super::mtasts::decide`] chose (`None`: no MTA-STS).
pub fn requirement(
    sts: Option<&StsPolicy>,
    mx_host: &str,
    dane: &DaneVerdict,
    message: MessageTls,
) -> TlsRequirement {
    let sts = sts_applies(sts);
    let webpki = || Verification::WebPki {
        names: vec![mx_host.trim_end_matches('.').to_ascii_lowercase()],
    };
    let sts_match = sts.map(|p| p.matches_mx(mx_host));
    match message {
        MessageTls::RequireTls => {
            // Testing applied as enforce: a mismatch is a skip too.
            if sts_match == Some(false) {
                return TlsRequirement::Skip(SkipReason::StsMxMismatch);
            }
            let connect = |verify, report| {
                TlsRequirement::Connect(ConnectTls {
                    starttls: StartTls::Required,
                    verify,
                    on_failure: OnFailure::Abort,
                    requiretls: true,
                    report,
                    sts_testing_mismatch: false,
                })
            };
            match dane {
                DaneVerdict::Secure(s) => connect(Verification::Dane(s.clone()), PolicyType::Tlsa),
                DaneVerdict::TempFail { name, reason } => {
                    TlsRequirement::Skip(SkipReason::DaneTempFail {
                        name: name.clone(),
                        reason: reason.clone(),
                    })
                }
                DaneVerdict::Insecure(_) | DaneVerdict::NoUsableRecords { .. } => match sts {
                    Some(_) => connect(webpki(), PolicyType::Sts),
                    None => TlsRequirement::Fail(FailReason::NoVerifiedTls),
                },
            }
        }
        MessageTls::TlsRequiredNo => {
            let (verify, report) = match (dane, sts) {
                (DaneVerdict::Secure(s), _) => (Verification::Dane(s.clone()), PolicyType::Tlsa),
                (_, Some(_)) => (webpki(), PolicyType::Sts),
                _ => (Verification::None, PolicyType::NoPolicyFound),
            };
            TlsRequirement::Connect(ConnectTls {
                starttls: StartTls::Opportunistic,
                verify,
                on_failure: OnFailure::DeliverAndReport,
                requiretls: false,
                report,
                sts_testing_mismatch: false,
            })
        }
        MessageTls::Default => {
            let enforce = sts.is_some_and(|p| p.mode == Mode::Enforce);
            if enforce && sts_match == Some(false) {
                return TlsRequirement::Skip(SkipReason::StsMxMismatch);
            }
            let testing_mismatch = !enforce && sts_match == Some(false);
            let connect = |starttls, verify, on_failure, report| {
                TlsRequirement::Connect(ConnectTls {
                    starttls,
                    verify,
                    on_failure,
                    requiretls: false,
                    report,
                    sts_testing_mismatch: testing_mismatch,
                })
            };
            match dane {
                DaneVerdict::Secure(s) => connect(
                    StartTls::Required,
                    Verification::Dane(s.clone()),
                    OnFailure::Abort,
                    PolicyType::Tlsa,
                ),
                DaneVerdict::TempFail { name, reason } => {
                    TlsRequirement::Skip(SkipReason::DaneTempFail {
                        name: name.clone(),
                        reason: reason.clone(),
                    })
                }
                DaneVerdict::NoUsableRecords { .. } if enforce => connect(
                    StartTls::Required,
                    webpki(),
                    OnFailure::Abort,
                    PolicyType::Sts,
                ),
                DaneVerdict::NoUsableRecords { .. } => connect(
                    StartTls::Required,
                    Verification::None,
                    OnFailure::Abort,
                    PolicyType::Tlsa,
                ),
                DaneVerdict::Insecure(_) => match sts {
                    Some(_) if enforce => connect(
                        StartTls::Required,
                        webpki(),
                        OnFailure::Abort,
                        PolicyType::Sts,
                    ),
                    Some(_) => connect(
                        StartTls::Opportunistic,
                        webpki(),
                        OnFailure::DeliverAndReport,
                        PolicyType::Sts,
                    ),
                    None => connect(
                        StartTls::Opportunistic,
                        Verification::None,
                        OnFailure::DeliverAndReport,
                        PolicyType::NoPolicyFound,
                    ),
                },
            }
        }
    }
}

/// A compact form for logs and tests: `required/webpki=mx.example/abort/sts`,
/// `opportunistic/none/deliver/no-policy-found`, `required/dane=BASE/abort/tlsa/requiretls`,
/// `skip:mismatch`, `skip:dane-tempfail`, `fail:5.7.10`. A testing-mode MX mismatch adds
/// `/mismatch`.
impl std::fmt::Display for TlsRequirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsRequirement::Skip(SkipReason::StsMxMismatch) => f.write_str("skip:mismatch"),
            TlsRequirement::Skip(SkipReason::DaneTempFail { .. }) => {
                f.write_str("skip:dane-tempfail")
            }
            TlsRequirement::Fail(r) => write!(f, "fail:{}", r.enhanced()),
            TlsRequirement::Connect(c) => {
                let starttls = match c.starttls {
                    StartTls::Required => "required",
                    StartTls::Opportunistic => "opportunistic",
                };
                let verify = match &c.verify {
                    Verification::None => "none".to_string(),
                    Verification::WebPki { names } => format!("webpki={}", names.join(",")),
                    Verification::Dane(d) => format!("dane={}", d.base_domain),
                };
                let on_failure = match c.on_failure {
                    OnFailure::Abort => "abort",
                    OnFailure::DeliverAndReport => "deliver",
                };
                write!(f, "{starttls}/{verify}/{on_failure}/{}", c.report.as_str())?;
                if c.requiretls {
                    f.write_str("/requiretls")?;
                }
                if c.sts_testing_mismatch {
                    f.write_str("/mismatch")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Tlsa;
    use crate::tlspolicy::dane::InsecureReason;
    use crate::tlspolicy::mtasts::MxPattern;

    fn sts(mode: Mode, mx: &[&str]) -> StsPolicy {
        StsPolicy {
            mode,
            max_age: 86400,
            mx: mx.iter().map(|m| MxPattern::parse(m).unwrap()).collect(),
            extensions: vec![],
        }
    }

    fn secure(host: &str) -> DaneVerdict {
        DaneVerdict::Secure(DaneSecure {
            records: vec![Tlsa {
                usage: 3,
                selector: 1,
                matching: 1,
                data: vec![1; 32],
            }],
            base_domain: host.into(),
            names: vec![host.into()],
        })
    }

    const INSECURE: DaneVerdict = DaneVerdict::Insecure(InsecureReason::MxInsecure);

    fn tempfail() -> DaneVerdict {
        DaneVerdict::TempFail {
            name: "_25._tcp.mx.bogus.example".into(),
            reason: "SERVFAIL".into(),
        }
    }

    /// The harness scenarios (../shared/harness/README.md section 4, plus the MTA-STS
    /// ones Postfix lacks) and the REQUIRETLS / TLS-Required rows.
    #[test]
    fn requirements() {
        use MessageTls::*;
        let enforce = sts(Mode::Enforce, &["mx1.example.org", "*.mx.example.org"]);
        let testing = sts(Mode::Testing, &["mx1.example.org"]);
        let none = sts(Mode::None, &[]);
        type Row<'a> = (
            &'a str,
            Option<&'a StsPolicy>,
            &'a str,
            DaneVerdict,
            MessageTls,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (
                "example.org enforce, matching",
                Some(&enforce),
                "mx1.example.org",
                INSECURE,
                Default,
                "required/webpki=mx1.example.org/abort/sts",
            ),
            (
                "enforce, wildcard match",
                Some(&enforce),
                "a.mx.example.org",
                INSECURE,
                Default,
                "required/webpki=a.mx.example.org/abort/sts",
            ),
            (
                "sts-mismatch: enforce, MX not listed",
                Some(&enforce),
                "mx9.example.net",
                INSECURE,
                Default,
                "skip:mismatch",
            ),
            (
                "sts-notls / sts-badcert: enforce requires verified STARTTLS",
                Some(&enforce),
                "mx1.example.org",
                INSECURE,
                Default,
                "required/webpki=mx1.example.org/abort/sts",
            ),
            (
                "sts-testing: deliver anyway, report",
                Some(&testing),
                "mx1.example.org",
                INSECURE,
                Default,
                "opportunistic/webpki=mx1.example.org/deliver/sts",
            ),
            (
                "sts-testing, mismatch: deliver, record mismatch",
                Some(&testing),
                "mx9.example.net",
                INSECURE,
                Default,
                "opportunistic/webpki=mx9.example.net/deliver/sts/mismatch",
            ),
            (
                "mode none: as no policy",
                Some(&none),
                "mx9.example.net",
                INSECURE,
                Default,
                "opportunistic/none/deliver/no-policy-found",
            ),
            (
                "no policy: opportunistic",
                None,
                "mx1.notls.example.org",
                INSECURE,
                Default,
                "opportunistic/none/deliver/no-policy-found",
            ),
            (
                "dane.example: DANE",
                None,
                "mx.dane.example",
                secure("mx.dane.example"),
                Default,
                "required/dane=mx.dane.example/abort/tlsa",
            ),
            (
                "DANE wins over MTA-STS",
                Some(&enforce),
                "mx1.example.org",
                secure("mx1.example.org"),
                Default,
                "required/dane=mx1.example.org/abort/tlsa",
            ),
            (
                "enforce mismatch skips even with DANE",
                Some(&enforce),
                "mx.dane.example",
                secure("mx.dane.example"),
                Default,
                "skip:mismatch",
            ),
            (
                "bogus.example: DANE tempfail defers",
                None,
                "mx.bogus.example",
                tempfail(),
                Default,
                "skip:dane-tempfail",
            ),
            (
                "unusable TLSA: mandatory unauthenticated TLS",
                None,
                "mx.dane.example",
                DaneVerdict::NoUsableRecords {
                    base_domain: "mx.dane.example".into(),
                },
                Default,
                "required/none/abort/tlsa",
            ),
            (
                "unusable TLSA with MTA-STS enforce: WebPKI",
                Some(&enforce),
                "mx1.example.org",
                DaneVerdict::NoUsableRecords {
                    base_domain: "mx1.example.org".into(),
                },
                Default,
                "required/webpki=mx1.example.org/abort/sts",
            ),
            // REQUIRETLS.
            (
                "REQUIRETLS + DANE",
                None,
                "mx.dane.example",
                secure("mx.dane.example"),
                RequireTls,
                "required/dane=mx.dane.example/abort/tlsa/requiretls",
            ),
            (
                "REQUIRETLS + enforce",
                Some(&enforce),
                "mx1.example.org",
                INSECURE,
                RequireTls,
                "required/webpki=mx1.example.org/abort/sts/requiretls",
            ),
            (
                "REQUIRETLS + testing: applied as enforce",
                Some(&testing),
                "mx1.example.org",
                INSECURE,
                RequireTls,
                "required/webpki=mx1.example.org/abort/sts/requiretls",
            ),
            (
                "REQUIRETLS + testing mismatch: skip",
                Some(&testing),
                "mx9.example.net",
                INSECURE,
                RequireTls,
                "skip:mismatch",
            ),
            (
                "REQUIRETLS, no policy: DSN",
                None,
                "mx1.notls.example.org",
                INSECURE,
                RequireTls,
                "fail:5.7.10",
            ),
            (
                "REQUIRETLS, mode none: DSN",
                Some(&none),
                "mx1.example.org",
                INSECURE,
                RequireTls,
                "fail:5.7.10",
            ),
            (
                "REQUIRETLS, unusable TLSA, no STS: DSN",
                None,
                "mx.dane.example",
                DaneVerdict::NoUsableRecords {
                    base_domain: "mx.dane.example".into(),
                },
                RequireTls,
                "fail:5.7.10",
            ),
            (
                "REQUIRETLS, DANE tempfail: defer",
                None,
                "mx.bogus.example",
                tempfail(),
                RequireTls,
                "skip:dane-tempfail",
            ),
            // TLS-Required: No.
            (
                "TLS-Required: No + enforce mismatch: not skipped",
                Some(&enforce),
                "mx9.example.net",
                INSECURE,
                TlsRequiredNo,
                "opportunistic/webpki=mx9.example.net/deliver/sts",
            ),
            (
                "TLS-Required: No + DANE: verify, ignore failure",
                None,
                "mx.dane.example",
                secure("mx.dane.example"),
                TlsRequiredNo,
                "opportunistic/dane=mx.dane.example/deliver/tlsa",
            ),
            (
                "TLS-Required: No + DANE tempfail: still delivers",
                None,
                "mx.bogus.example",
                tempfail(),
                TlsRequiredNo,
                "opportunistic/none/deliver/no-policy-found",
            ),
            (
                "TLS-Required: No, no policy",
                None,
                "mx1.example.org",
                INSECURE,
                TlsRequiredNo,
                "opportunistic/none/deliver/no-policy-found",
            ),
        ];
        for (name, sts, host, dane, msg, want) in rows {
            let got = requirement(sts, host, &dane, msg);
            assert_eq!(got.to_string(), want, "{name}");
        }
    }

    fn arb_dane() -> impl proptest::strategy::Strategy<Value = DaneVerdict> {
        use proptest::prelude::*;
        prop_oneof![
            Just(INSECURE),
            Just(secure("mx.example.org")),
            Just(tempfail()),
            Just(DaneVerdict::NoUsableRecords {
                base_domain: "mx.example.org".into()
            }),
        ]
    }

    proptest::proptest! {
        /// Invariants over every combination: REQUIRETLS is never opportunistic, never
        /// unverified and always asks the next hop for REQUIRETLS; `TLS-Required: No`
        /// never skips or fails a host and never aborts on a verification failure; an
        /// enforce policy is never opportunistic without that header; DANE verification
        /// is always required STARTTLS unless the header relaxes it.
        #[test]
        fn invariants(
            mode in proptest::prop_oneof![
                proptest::strategy::Just(None),
                proptest::strategy::Just(Some(Mode::Enforce)),
                proptest::strategy::Just(Some(Mode::Testing)),
                proptest::strategy::Just(Some(Mode::None)),
            ],
            matches in proptest::bool::ANY,
            dane in arb_dane(),
            msg in proptest::prop_oneof![
                proptest::strategy::Just(MessageTls::Default),
                proptest::strategy::Just(MessageTls::RequireTls),
                proptest::strategy::Just(MessageTls::TlsRequiredNo),
            ],
        ) {
            let policy = mode.map(|m| sts(m, &["mx.example.org"]));
            let host = if matches { "mx.example.org" } else { "other.example.net" };
            let r = requirement(policy.as_ref(), host, &dane, msg);
            match (&r, msg) {
                (TlsRequirement::Connect(c), MessageTls::RequireTls) => {
                    proptest::prop_assert!(c.starttls == StartTls::Required);
                    proptest::prop_assert!(c.verify != Verification::None);
                    proptest::prop_assert!(c.requiretls && c.on_failure == OnFailure::Abort);
                }
                (TlsRequirement::Connect(c), MessageTls::TlsRequiredNo) => {
                    proptest::prop_assert!(c.on_failure == OnFailure::DeliverAndReport);
                    proptest::prop_assert!(c.starttls == StartTls::Opportunistic);
                }
                (_, MessageTls::TlsRequiredNo) => proptest::prop_assert!(false, "{r}"),
                (TlsRequirement::Connect(c), MessageTls::Default) => {
                    if mode == Some(Mode::Enforce) || matches!(c.verify, Verification::Dane(_)) {
                        proptest::prop_assert!(c.starttls == StartTls::Required, "{r}");
                        proptest::prop_assert!(c.on_failure == OnFailure::Abort, "{r}");
                    }
                    proptest::prop_assert!(!c.requiretls);
                }
                (TlsRequirement::Fail(_), MessageTls::Default) => proptest::prop_assert!(false, "{r}"),
                _ => {}
            }
        }
    }

    #[test]
    fn client_modes() {
        let r = requirement(None, "mx.example", &INSECURE, MessageTls::Default);
        let TlsRequirement::Connect(c) = r else {
            panic!()
        };
        assert_eq!(c.tls_mode(), TlsMode::Opportunistic);
        let r = requirement(
            None,
            "mx.example",
            &secure("mx.example"),
            MessageTls::Default,
        );
        let TlsRequirement::Connect(c) = r else {
            panic!()
        };
        assert_eq!(c.tls_mode(), TlsMode::RequiredStartTls);
        assert_eq!(FailReason::NextHopLacksRequireTls.enhanced(), "5.7.30");
    }
}
