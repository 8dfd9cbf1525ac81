//! From the outcome of one connection (or one MTA-STS fetch) to the TLS report results to
//! record ([`SessionResult`]s for [`super::TlsResults`]).
//!
//! Rules: the result goes to the recipient domain's report under the policy type the
//! [`ConnectTls`] names (`sts` with the MTA-STS policy, or `no-policy-found`); a DANE
//! connection is also recorded under `tlsa` in the MX host's own report (seed 001:
//! HostTLSRPT), whose policy domain is the TLSA base domain. An MTA-STS testing-mode MX
//! mismatch makes the session a failure (`validation-failure`, reason code
//! `mx-not-in-policy`) even when TLS worked. A connection that ended before STARTTLS could
//! be tried is not recorded.

use std::net::IpAddr;

use super::mtasts::{FetchError, StsPolicy};
use super::requirement::{ConnectTls, Verification};
use super::tlsrpt::{FailureDetails, Policy, PolicyType, ReportScope, ResultType, SessionResult};

/// How TLS went on one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsOutcome {
    /// TLS was established (and verified as the requirement asked).
    Established,
    /// The server did not offer STARTTLS (or refused it).
    NotOffered,
    /// The handshake or verification failed.
    Failed {
        /// The RFC 8460 result type.
        result_type: ResultType,
        /// What went wrong (the failure reason code in the report).
        detail: String,
    },
    /// The connection ended before TLS could be tried (refused, timeout, bad greeting).
    NotAttempted,
}

/// The connection's endpoints, for the failure details.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoints {
    /// Our address.
    pub sending_ip: Option<IpAddr>,
    /// The MX host's address.
    pub receiving_ip: Option<IpAddr>,
    /// The name the MX host gave in its greeting or EHLO reply.
    pub receiving_helo: Option<String>,
}

fn failure(
    result_type: ResultType,
    code: Option<String>,
    mx_host: &str,
    ends: &Endpoints,
) -> FailureDetails {
    FailureDetails {
        result_type,
        sending_mta_ip: ends.sending_ip.map(|i| i.to_string()),
        receiving_mx_hostname: Some(mx_host.to_string()),
        receiving_mx_helo: ends.receiving_helo.clone(),
        receiving_ip: ends.receiving_ip.map(|i| i.to_string()),
        failed_session_count: 1,
        additional_information: None,
        failure_reason_code: code,
    }
}

/// The results to record for one connection to `mx_host` for `recipient_domain` made under
/// `req`; `sts` is the MTA-STS policy that applied (if any).
pub fn session_results(
    req: &ConnectTls,
    recipient_domain: &str,
    sts: Option<&StsPolicy>,
    mx_host: &str,
    ends: &Endpoints,
    outcome: &TlsOutcome,
) -> Vec<SessionResult> {
    let base_failure = match outcome {
        TlsOutcome::NotAttempted => return Vec::new(),
        TlsOutcome::Established => None,
        TlsOutcome::NotOffered => Some(failure(
            ResultType::StarttlsNotSupported,
            None,
            mx_host,
            ends,
        )),
        TlsOutcome::Failed {
            result_type,
            detail,
        } => Some(failure(
            result_type.clone(),
            Some(detail.clone()),
            mx_host,
            ends,
        )),
    };
    let domain_policy = match sts {
        Some(p) if req.report != PolicyType::NoPolicyFound => Policy::sts(recipient_domain, p),
        _ => Policy::none(recipient_domain),
    };
    let domain_failure = if req.sts_testing_mismatch && base_failure.is_none() {
        Some(failure(
            ResultType::ValidationFailure,
            Some("mx-not-in-policy".into()),
            mx_host,
            ends,
        ))
    } else {
        base_failure.clone()
    };
    let mut out = vec![SessionResult {
        scope: ReportScope::RecipientDomain,
        policy: domain_policy,
        failure: domain_failure,
    }];
    if let Verification::Dane(d) = &req.verify {
        out.push(SessionResult {
            scope: ReportScope::MxHost,
            policy: Policy::tlsa(&d.base_domain, &d.records),
            failure: base_failure,
        });
    }
    out
}

/// The result to record when fetching the MTA-STS policy of `domain` failed: an `sts`
/// policy without policy text, failed with the fetch's result type.
pub fn fetch_failure_result(domain: &str, error: &FetchError) -> SessionResult {
    SessionResult {
        scope: ReportScope::RecipientDomain,
        policy: Policy {
            policy_type: PolicyType::Sts,
            policy_string: Vec::new(),
            policy_domain: domain.to_ascii_lowercase(),
            mx_host: Vec::new(),
        },
        failure: Some(FailureDetails {
            result_type: error.result_type(),
            sending_mta_ip: None,
            receiving_mx_hostname: None,
            receiving_mx_helo: None,
            receiving_ip: None,
            failed_session_count: 1,
            additional_information: None,
            failure_reason_code: Some(error.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::UnixTime;
    use crate::tls::Tlsa;
    use crate::tlspolicy::dane::{DaneSecure, DaneVerdict, InsecureReason};
    use crate::tlspolicy::day_range;
    use crate::tlspolicy::mtasts::{Mode, MxPattern};
    use crate::tlspolicy::requirement::{requirement, MessageTls, TlsRequirement};
    use crate::tlspolicy::tlsrpt::TlsResults;

    fn connect(sts: Option<&StsPolicy>, mx: &str, dane: &DaneVerdict) -> ConnectTls {
        match requirement(sts, mx, dane, MessageTls::Default) {
            TlsRequirement::Connect(c) => c,
            r => panic!("{r}"),
        }
    }

    fn policy(mode: Mode, mx: &str) -> StsPolicy {
        StsPolicy {
            mode,
            max_age: 86400,
            mx: vec![MxPattern::parse(mx).unwrap()],
            extensions: vec![],
        }
    }

    fn summary(r: &[SessionResult]) -> Vec<String> {
        r.iter()
            .map(|s| {
                format!(
                    "{:?}/{}/{}/{}",
                    s.scope,
                    s.policy.policy_type.as_str(),
                    s.policy.policy_domain,
                    s.failure
                        .as_ref()
                        .map(|f| f.result_type.as_str().to_string())
                        .unwrap_or("ok".into())
                )
            })
            .collect()
    }

    /// One row per rule: (name, requirement inputs, outcome, expected results).
    #[test]
    fn results_per_outcome() {
        let insecure = DaneVerdict::Insecure(InsecureReason::MxInsecure);
        let dane = DaneVerdict::Secure(DaneSecure {
            records: vec![Tlsa {
                usage: 3,
                selector: 1,
                matching: 1,
                data: vec![1; 32],
            }],
            base_domain: "mx.dane.example".into(),
            names: vec!["mx.dane.example".into()],
        });
        let testing = policy(Mode::Testing, "mx-selfsigned.example.org");
        let untrusted = TlsOutcome::Failed {
            result_type: ResultType::CertificateNotTrusted,
            detail: "UnknownIssuer".into(),
        };
        let ends = Endpoints {
            sending_ip: Some("127.10.0.2".parse().unwrap()),
            receiving_ip: Some("127.10.0.18".parse().unwrap()),
            receiving_helo: None,
        };
        type Row<'a> = (
            &'a str,
            Option<&'a StsPolicy>,
            &'a str,
            &'a DaneVerdict,
            TlsOutcome,
            &'a [&'a str],
        );
        let rows: Vec<Row> = vec![
            (
                "sts-testing, untrusted certificate: sts failure to the domain",
                Some(&testing),
                "mx-selfsigned.example.org",
                &insecure,
                untrusted.clone(),
                &["RecipientDomain/sts/sts-testing.example.org/certificate-not-trusted"],
            ),
            (
                "sts-testing, mismatch but TLS fine: still a failure",
                Some(&testing),
                "mx1.example.org",
                &insecure,
                TlsOutcome::Established,
                &["RecipientDomain/sts/sts-testing.example.org/validation-failure"],
            ),
            (
                "no policy, STARTTLS not offered",
                None,
                "mx-notls.example.org",
                &insecure,
                TlsOutcome::NotOffered,
                &["RecipientDomain/no-policy-found/sts-testing.example.org/starttls-not-supported"],
            ),
            (
                "no policy, success",
                None,
                "mx1.example.org",
                &insecure,
                TlsOutcome::Established,
                &["RecipientDomain/no-policy-found/sts-testing.example.org/ok"],
            ),
            (
                "DANE: domain report and MX host report",
                None,
                "mx.dane.example",
                &dane,
                TlsOutcome::Established,
                &[
                    "RecipientDomain/no-policy-found/sts-testing.example.org/ok",
                    "MxHost/tlsa/mx.dane.example/ok",
                ],
            ),
            (
                "DANE mismatch: failure in both",
                None,
                "mx.dane.example",
                &dane,
                TlsOutcome::Failed {
                    result_type: ResultType::ValidationFailure,
                    detail: "no TLSA record matches".into(),
                },
                &[
                    "RecipientDomain/no-policy-found/sts-testing.example.org/validation-failure",
                    "MxHost/tlsa/mx.dane.example/validation-failure",
                ],
            ),
            (
                "refused connection: nothing",
                None,
                "dead.example.org",
                &insecure,
                TlsOutcome::NotAttempted,
                &[],
            ),
        ];
        for (name, sts, mx, dane, outcome, want) in rows {
            let req = connect(sts, mx, dane);
            let got = session_results(&req, "sts-testing.example.org", sts, mx, &ends, &outcome);
            assert_eq!(summary(&got), want, "{name}");
        }
    }

    /// The sts-testing scenario's report, as it should reach mx1: one sts policy with the
    /// policy lines, one failure with the addresses.
    #[test]
    fn sts_testing_report() {
        let testing = policy(Mode::Testing, "mx-selfsigned.example.org");
        let req = connect(
            Some(&testing),
            "mx-selfsigned.example.org",
            &DaneVerdict::Insecure(InsecureReason::MxInsecure),
        );
        let ends = Endpoints {
            sending_ip: Some("127.10.0.2".parse().unwrap()),
            receiving_ip: Some("127.10.0.18".parse().unwrap()),
            receiving_helo: Some("mx-selfsigned.example.org".into()),
        };
        let mut c = TlsResults::new();
        for r in session_results(
            &req,
            "sts-testing.example.org",
            Some(&testing),
            "mx-selfsigned.example.org",
            &ends,
            &TlsOutcome::Failed {
                result_type: ResultType::CertificateNotTrusted,
                detail: "invalid peer certificate: UnknownIssuer".into(),
            },
        ) {
            c.record(&r);
        }
        c.record(&fetch_failure_result(
            "sts-badcert.example.org",
            &FetchError::WebPki("UnknownIssuer".into()),
        ));
        let r = c
            .report(
                "sts-testing.example.org",
                ReportScope::RecipientDomain,
                "mail.mox.example",
                "postmaster@mox.example",
                "r1",
                day_range(UnixTime(1_700_000_000)),
            )
            .unwrap();
        let json = r.to_json();
        for want in [
            r#""policy-type":"sts""#,
            r#""policy-string":["version: STSv1","mode: testing","mx: mx-selfsigned.example.org","max_age: 86400"]"#,
            r#""mx-host":["mx-selfsigned.example.org"]"#,
            r#""result-type":"certificate-not-trusted""#,
            r#""sending-mta-ip":"127.10.0.2""#,
            r#""receiving-ip":"127.10.0.18""#,
            r#""receiving-mx-helo":"mx-selfsigned.example.org""#,
            r#""total-failure-session-count":1"#,
        ] {
            assert!(json.contains(want), "{want} not in {json}");
        }
        let b = c
            .report(
                "sts-badcert.example.org",
                ReportScope::RecipientDomain,
                "o",
                "c",
                "r2",
                day_range(UnixTime(0)),
            )
            .unwrap();
        assert_eq!(
            b.policies[0].failure_details[0].result_type,
            ResultType::StsWebpkiInvalid
        );
    }
}
