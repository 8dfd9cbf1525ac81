//! Sending TLS reports (RFC 8460 section 5): which stored session results become a report,
//! who receives it, and the report message itself. Pure: the caller reads the stored
//! results, looks up `_smtp._tls.DOMAIN`, signs and queues.
//!
//! Behaviour follows mox (seed 001): one report per policy domain and scope (results of
//! MTA-STS and no-policy sessions go to the recipient domain's record, DANE results to the
//! MX host's own record), for a finished UTC day; no report when the domain has no TLSRPT
//! record or no usable `mailto:` or `https:` rua, none when every session succeeded (only failures
//! are worth a message), and none to our own domains or host (we would report to
//! ourselves).

use std::collections::BTreeMap;

use super::tlsrpt::{day_range, DateRange, Report, ReportScope, SessionResult, TlsResults};
use super::TlsrptRecord;
use crate::UnixTime;

/// One report to consider: a policy domain and scope over one finished day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingReport {
    /// The policy domain (lowercase) whose `_smtp._tls` record is looked up.
    pub domain: String,
    /// Recipient domain or MX host.
    pub scope: ReportScope,
    /// The report (counts aggregated over the day).
    pub report: Report,
}

/// Groups stored results of one policy domain (`(stored time, result)`) by finished UTC
/// day and scope: the reports that can be sent at `now`. Results of the current day are
/// left for a later run; the caller removes stored results before
/// [`finished_before`]`(now)` once handled. `submitter` is our host name (organization and
/// report id).
pub fn pending_reports(
    submitter: &str,
    results: &[(UnixTime, SessionResult)],
    now: UnixTime,
) -> Vec<PendingReport> {
    let cutoff = finished_before(now);
    let mut by_day: BTreeMap<i64, TlsResults> = BTreeMap::new();
    for (t, r) in results {
        if t.0 >= cutoff.0 {
            continue;
        }
        by_day
            .entry(day_range(*t).start_datetime.0)
            .or_default()
            .record(r);
    }
    let mut out = Vec::new();
    for (start, results) in by_day {
        let range: DateRange = day_range(UnixTime(start));
        for (domain, scope) in results.domains() {
            let tag = match scope {
                ReportScope::RecipientDomain => "rcpt",
                ReportScope::MxHost => "host",
            };
            let id = format!("{start}.{tag}.{domain}@{submitter}");
            if let Some(report) = results.report(
                &domain,
                scope,
                submitter,
                &format!("postmaster@{submitter}"),
                &id,
                range,
            ) {
                out.push(PendingReport {
                    domain,
                    scope,
                    report,
                });
            }
        }
    }
    out
}

/// The start of the current UTC day: results stored before it belong to finished days.
pub fn finished_before(now: UnixTime) -> UnixTime {
    day_range(now).start_datetime
}

/// Why no report is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoReport {
    /// The policy domain is one of ours (our host or a configured domain).
    Ours,
    /// No (valid) TLSRPT record at `_smtp._tls.DOMAIN`.
    NoRecord,
    /// Every session succeeded: nothing worth reporting.
    OnlySuccess,
    /// The record has no usable `mailto:` or `https:` rua.
    NoRua,
}

impl NoReport {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NoReport::Ours => "policy domain is ours",
            NoReport::NoRecord => "no tlsrpt record",
            NoReport::OnlySuccess => "only successful sessions",
            NoReport::NoRua => "no mailto or https rua",
        }
    }
}

/// Who receives a report: the `mailto:` addresses and the `https:` URIs of the record's
/// `rua`, each in order, without duplicates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipients {
    /// Addresses to mail the report to.
    pub mailto: Vec<String>,
    /// URIs to POST the report to ([`report_post`]).
    pub https: Vec<String>,
}

/// Decides whether `p` is sent and to whom, given the policy domain's TLSRPT record.
/// `ours`: the policy domain is our host name or one of our domains.
pub fn report_recipients(
    p: &PendingReport,
    record: Option<&TlsrptRecord>,
    ours: bool,
) -> Result<Recipients, NoReport> {
    if ours {
        return Err(NoReport::Ours);
    }
    let record = record.ok_or(NoReport::NoRecord)?;
    let failed = p
        .report
        .policies
        .iter()
        .any(|r| r.summary.total_failure_session_count > 0 || !r.failure_details.is_empty());
    if !failed {
        return Err(NoReport::OnlySuccess);
    }
    let mut mailto: Vec<String> = Vec::new();
    let mut https = Vec::new();
    for u in &record.rua {
        if let Some(a) = u.mailto() {
            let valid = a
                .rsplit_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty());
            if valid && !mailto.iter().any(|m| m.eq_ignore_ascii_case(a)) {
                mailto.push(a.to_string());
            }
        } else if u.is_https() && !https.contains(&u.0) {
            https.push(u.0.clone());
        }
    }
    if mailto.is_empty() && https.is_empty() {
        return Err(NoReport::NoRua);
    }
    Ok(Recipients { mailto, https })
}

/// The report message (RFC 8460 5.3): From `postmaster@SUBMITTER`, the RFC's Subject, the
/// `TLS-Report-Domain` and `TLS-Report-Submitter` headers, `multipart/report;
/// report-type="tlsrpt"` with a short text part and the gzipped JSON as
/// `application/tlsrpt+gzip` under the RFC's file name. Unsigned: the caller DKIM-signs it
/// (with [`SIGNED_HEADERS`] added to the signed header list).
pub fn report_message(submitter: &str, p: &PendingReport, to: &[String], now: UnixTime) -> Vec<u8> {
    let r = &p.report;
    let domain = &p.domain;
    let boundary = format!("rmox-tlsrpt-{}", now.0);
    let to = to
        .iter()
        .map(|a| format!("<{a}>"))
        .collect::<Vec<_>>()
        .join(", ");
    let id: String = r
        .report_id
        .chars()
        .map(|c| if c == '@' { '.' } else { c })
        .collect();
    let mut m = format!(
        "From: <postmaster@{submitter}>\r\n\
         To: {to}\r\n\
         Subject: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <{id}@{submitter}>\r\n\
         TLS-Report-Domain: {domain}\r\n\
         TLS-Report-Submitter: {submitter}\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         TLS report (RFC 8460) for {domain} from {submitter}, {begin} to {end} (Unix time).\r\n\r\n\
         --{boundary}\r\nContent-Type: {media}\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"{filename}\"\r\n\r\n",
        subject = r.subject(submitter, domain),
        date = now.rfc5322(),
        begin = r.date_range.start_datetime.secs(),
        end = r.date_range.end_datetime.secs(),
        media = super::tlsrpt::MEDIA_TYPE_GZIP,
        filename = r.filename(submitter, domain),
    );
    m.push_str(&crate::codec::base64_lines(&r.to_gzip()));
    m.push_str(&format!("--{boundary}--\r\n"));
    m.into_bytes()
}

/// The request that delivers `report` to an `https:` rua (RFC 8460 5.3.2): a POST of the
/// gzipped JSON report as `application/tlsrpt+gzip`.
pub fn report_post(report: &Report, uri: &str) -> crate::http::FetchRequest {
    crate::http::FetchRequest::post(uri, super::tlsrpt::MEDIA_TYPE_GZIP, report.to_gzip())
}

/// Whether the answer to [`report_post`] means the report was taken: a 2xx status
/// (RFC 8460 5.3.2); anything else (redirects included) is a failure, logged, not retried.
pub fn post_accepted(status: u16) -> bool {
    (200..300).contains(&status)
}

/// The stored result of one delivery connection's TLS: the policy type it was made under
/// (without the policy text, which the attempt does not carry), reported to the MX host's
/// record for DANE and to the policy domain's otherwise; a failure with its result type,
/// MX host, IP and detail.
pub fn attempt_result(t: &crate::delivery::TlsAttempt) -> SessionResult {
    use super::tlsrpt::{FailureDetails, Policy, PolicyType, ResultType};
    use crate::delivery::{TlsPolicyKind, TlsResult};
    let (scope, policy_type, domain) = match t.policy {
        TlsPolicyKind::Tlsa => (ReportScope::MxHost, PolicyType::Tlsa, &t.mx_host),
        TlsPolicyKind::Sts => (
            ReportScope::RecipientDomain,
            PolicyType::Sts,
            &t.policy_domain,
        ),
        TlsPolicyKind::NoPolicy => (
            ReportScope::RecipientDomain,
            PolicyType::NoPolicyFound,
            &t.policy_domain,
        ),
    };
    let failure = match &t.result {
        TlsResult::Failed {
            result_type,
            detail,
        } => Some(FailureDetails {
            result_type: ResultType::from(result_type.to_string()),
            sending_mta_ip: None,
            receiving_mx_hostname: Some(t.mx_host.to_ascii_lowercase()),
            receiving_mx_helo: None,
            receiving_ip: Some(t.receiving_ip.to_string()),
            failed_session_count: 1,
            additional_information: None,
            failure_reason_code: (!detail.is_empty()).then(|| detail.clone()),
        }),
        _ => None,
    };
    SessionResult {
        scope,
        policy: Policy {
            policy_type,
            policy_string: Vec::new(),
            policy_domain: domain.to_ascii_lowercase(),
            mx_host: Vec::new(),
        },
        failure,
    }
}

/// Whether a queued message is one of our TLS reports (it has a `TLS-Report-Domain`
/// header): the TLS results of delivering it are not recorded, as mox does, so a failing
/// report delivery does not itself become the next day's report.
pub fn is_tls_report_message(msg: &[u8]) -> bool {
    let end = crate::message::body_offset(msg).unwrap_or(msg.len());
    crate::message::has_field(&msg[..end], "TLS-Report-Domain")
}

/// Headers a report's DKIM signature must also cover (RFC 8460 3).
pub const SIGNED_HEADERS: [&str; 2] = ["TLS-Report-Domain", "TLS-Report-Submitter"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tlspolicy::tlsrpt::{FailureDetails, Policy, ResultType};

    fn sts_policy() -> Policy {
        Policy {
            policy_type: crate::tlspolicy::tlsrpt::PolicyType::Sts,
            policy_string: vec!["version: STSv1".into(), "mode: testing".into()],
            policy_domain: "sts-testing.example.org".into(),
            mx_host: vec!["mx1.example.org".into()],
        }
    }

    fn failure(result_type: ResultType) -> FailureDetails {
        FailureDetails {
            result_type,
            sending_mta_ip: Some("10.0.0.1".into()),
            receiving_mx_hostname: Some("mx1.example.org".into()),
            receiving_mx_helo: None,
            receiving_ip: Some("10.0.0.25".into()),
            failed_session_count: 0,
            additional_information: None,
            failure_reason_code: None,
        }
    }

    fn result(scope: ReportScope, policy: Policy, f: Option<FailureDetails>) -> SessionResult {
        SessionResult {
            scope,
            policy,
            failure: f,
        }
    }

    const DAY: i64 = 1_700_006_400; // 2023-11-15 00:00:00 UTC.

    /// Results are grouped by finished UTC day and scope; today's are held back; counts
    /// and failure details aggregate.
    #[test]
    fn pending_groups_by_day_and_scope() {
        let sts = sts_policy();
        let dane = Policy::tlsa("mx1.example.org", &[]);
        let bad = failure(ResultType::ValidationFailure);
        let rows = vec![
            (
                UnixTime(DAY + 10),
                result(ReportScope::RecipientDomain, sts.clone(), None),
            ),
            (
                UnixTime(DAY + 20),
                result(ReportScope::RecipientDomain, sts.clone(), Some(bad.clone())),
            ),
            (
                UnixTime(DAY + 30),
                result(ReportScope::RecipientDomain, sts.clone(), Some(bad.clone())),
            ),
            (
                UnixTime(DAY + 40),
                result(ReportScope::MxHost, dane.clone(), None),
            ),
            // The next day, and today (not finished).
            (
                UnixTime(DAY + 86_400 + 5),
                result(ReportScope::RecipientDomain, sts.clone(), None),
            ),
            (
                UnixTime(DAY + 2 * 86_400 + 5),
                result(ReportScope::RecipientDomain, sts.clone(), None),
            ),
        ];
        let now = UnixTime(DAY + 2 * 86_400 + 100);
        let p = pending_reports("mail.mox.example", &rows, now);
        let summary: Vec<_> = p
            .iter()
            .map(|p| {
                (
                    p.domain.as_str(),
                    p.scope,
                    p.report.date_range.start_datetime.0,
                    p.report.policies[0].summary.total_successful_session_count,
                    p.report.policies[0].summary.total_failure_session_count,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("mx1.example.org", ReportScope::MxHost, DAY, 1, 0),
                (
                    "sts-testing.example.org",
                    ReportScope::RecipientDomain,
                    DAY,
                    1,
                    2
                ),
                (
                    "sts-testing.example.org",
                    ReportScope::RecipientDomain,
                    DAY + 86_400,
                    1,
                    0
                ),
            ]
        );
        let r = &p[1].report;
        assert_eq!(r.policies[0].failure_details.len(), 1);
        assert_eq!(r.policies[0].failure_details[0].failed_session_count, 2);
        assert_eq!(r.date_range.end_datetime.0, DAY + 86_399);
        assert_eq!(r.organization_name, "mail.mox.example");
        assert_eq!(r.contact_info, "postmaster@mail.mox.example");
        // Report ids are unique.
        assert_ne!(p[1].report.report_id, p[2].report.report_id);
        assert_ne!(p[0].report.report_id, p[1].report.report_id);
        assert_eq!(finished_before(now), UnixTime(DAY + 2 * 86_400));
        assert!(pending_reports("h", &rows[5..], now).is_empty());
    }

    /// Who gets a report, as mox decides (seed 001).
    #[test]
    fn recipients_table() {
        let rec = |s: &str| TlsrptRecord::parse(s).unwrap();
        let failing = PendingReport {
            domain: "sts-testing.example.org".into(),
            scope: ReportScope::RecipientDomain,
            report: pending_reports(
                "h",
                &[(
                    UnixTime(DAY),
                    result(
                        ReportScope::RecipientDomain,
                        sts_policy(),
                        Some(failure(ResultType::StsPolicyInvalid)),
                    ),
                )],
                UnixTime(DAY + 86_400),
            )[0]
            .report
            .clone(),
        };
        let mut ok = failing.clone();
        ok.report.policies[0].summary.total_failure_session_count = 0;
        ok.report.policies[0].summary.total_successful_session_count = 3;
        ok.report.policies[0].failure_details.clear();
        type Case<'a> = (
            &'a PendingReport,
            Option<&'a str>,
            bool,
            Result<Vec<&'a str>, NoReport>,
        );
        let table: &[Case] = &[
            (&failing, Some("v=TLSRPTv1; rua=mailto:tls@example.org"), false, Ok(vec!["tls@example.org"])),
            // Ours: never, even with a record.
            (&failing, Some("v=TLSRPTv1; rua=mailto:tls@example.org"), true, Err(NoReport::Ours)),
            (&failing, None, false, Err(NoReport::NoRecord)),
            (&ok, Some("v=TLSRPTv1; rua=mailto:tls@example.org"), false, Err(NoReport::OnlySuccess)),
            // https only: sent (POSTed), no mailto address.
            (&failing, Some("v=TLSRPTv1; rua=https://r.example.org/tlsrpt"), false, Ok(vec![])),
            (&failing, Some("v=TLSRPTv1; rua=ftp://r.example.org/tlsrpt"), false, Err(NoReport::NoRua)),
            (
                &failing,
                Some("v=TLSRPTv1; rua=mailto:a@example.org?subject=x,https://r.example.org/x,mailto:A@example.org,mailto:b@example.net"),
                false,
                Ok(vec!["a@example.org", "b@example.net"]),
            ),
        ];
        for (i, (p, r, ours, want)) in table.iter().enumerate() {
            let r = r.map(rec);
            let got = report_recipients(p, r.as_ref(), *ours).map(|r| r.mailto);
            let want = want
                .clone()
                .map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "case {i}");
        }
        let r = report_recipients(
            &failing,
            Some(&rec(
                "v=TLSRPTv1; rua=mailto:a@example.org,https://r.example.org/x",
            )),
            false,
        )
        .unwrap();
        assert_eq!(r.https, ["https://r.example.org/x"]);
    }

    /// An https rua gets a POST of the gzipped JSON as application/tlsrpt+gzip (RFC 8460
    /// 5.3.2), which parses back to the report; only 2xx counts as taken.
    #[test]
    fn https_post() {
        let p = pending_reports(
            "mail.mox.example",
            &[(
                UnixTime(DAY + 1),
                result(
                    ReportScope::RecipientDomain,
                    sts_policy(),
                    Some(failure(ResultType::CertificateExpired)),
                ),
            )],
            UnixTime(DAY + 86_400 + 7),
        )
        .remove(0);
        let req = report_post(&p.report, "https://r.example.org/tlsrpt");
        assert_eq!(req.method, crate::http::Method::Post);
        assert_eq!(req.url, "https://r.example.org/tlsrpt");
        assert_eq!(req.headers.len(), 1);
        assert!(req.headers[0].name.eq_ignore_ascii_case("content-type"));
        assert_eq!(req.headers[0].value, b"application/tlsrpt+gzip");
        let back = super::super::tlsrpt::parse_report_file(&req.body).unwrap();
        assert_eq!(back, p.report);
        for (status, ok) in [
            (200, true),
            (201, true),
            (204, true),
            (299, true),
            (199, false),
            (301, false),
            (400, false),
            (500, false),
        ] {
            assert_eq!(post_accepted(status), ok, "{status}");
        }
    }

    /// The message is multipart/report with the RFC's headers and file name, and parses
    /// back to the same report.
    #[test]
    fn message_parses_back() {
        let p = pending_reports(
            "mail.mox.example",
            &[(
                UnixTime(DAY + 1),
                result(
                    ReportScope::RecipientDomain,
                    sts_policy(),
                    Some(failure(ResultType::CertificateExpired)),
                ),
            )],
            UnixTime(DAY + 86_400 + 7),
        )
        .remove(0);
        let to = ["tls@example.org".to_string(), "b@example.net".to_string()];
        let m = report_message("mail.mox.example", &p, &to, UnixTime(DAY + 86_400 + 7));
        let text = String::from_utf8(m.clone()).unwrap();
        for want in [
            "From: <postmaster@mail.mox.example>\r\n",
            "To: <tls@example.org>, <b@example.net>\r\n",
            "Subject: Report Domain: sts-testing.example.org Submitter: mail.mox.example Report-ID: <",
            "TLS-Report-Domain: sts-testing.example.org\r\n",
            "TLS-Report-Submitter: mail.mox.example\r\n",
            "Content-Type: multipart/report; report-type=\"tlsrpt\"; boundary=",
            "Content-Type: application/tlsrpt+gzip\r\n",
            &format!(
                "filename=\"mail.mox.example!sts-testing.example.org!{DAY}!{}!",
                DAY + 86_399
            ),
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        assert!(
            text.contains(&format!(
                "Message-ID: <{DAY}.rcpt.sts-testing.example.org.mail.mox.example@mail.mox.example>\r\n"
            )),
            "{text}"
        );
        let back = crate::tlspolicy::parse_report_message(&m).unwrap();
        assert_eq!(back, p.report);
        assert_eq!(
            back.policies[0].failure_details[0].result_type,
            ResultType::CertificateExpired
        );
    }

    /// A delivery attempt's TLS becomes the stored result: DANE to the MX host's record,
    /// MTA-STS and no policy to the recipient domain's; failures keep type, host and IP.
    #[test]
    fn attempt_results() {
        use crate::delivery::{TlsAttempt, TlsPolicyKind, TlsResult};
        let a = |policy, result| TlsAttempt {
            policy_domain: "Example.ORG".into(),
            mx_host: "MX1.example.org".into(),
            receiving_ip: "10.0.0.25".parse().unwrap(),
            policy,
            mode: "required",
            result,
        };
        let failed = || TlsResult::Failed {
            result_type: "certificate-not-trusted",
            detail: "unknown issuer".into(),
        };
        let r = attempt_result(&a(TlsPolicyKind::Tlsa, failed()));
        assert_eq!(r.scope, ReportScope::MxHost);
        assert_eq!(r.policy.policy_domain, "mx1.example.org");
        let f = r.failure.unwrap();
        assert_eq!(f.result_type, ResultType::CertificateNotTrusted);
        assert_eq!(f.receiving_mx_hostname.as_deref(), Some("mx1.example.org"));
        assert_eq!(f.receiving_ip.as_deref(), Some("10.0.0.25"));
        assert_eq!(f.failure_reason_code.as_deref(), Some("unknown issuer"));
        let r = attempt_result(&a(TlsPolicyKind::Sts, failed()));
        assert_eq!(
            (
                r.scope,
                r.policy.policy_type,
                r.policy.policy_domain.as_str()
            ),
            (
                ReportScope::RecipientDomain,
                crate::tlspolicy::PolicyType::Sts,
                "example.org"
            )
        );
        let r = attempt_result(&a(TlsPolicyKind::NoPolicy, TlsResult::Plaintext));
        assert_eq!(r.policy, Policy::none("example.org"));
        assert!(r.failure.is_none());
        // Round trip through the stored JSON.
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(serde_json::from_slice::<SessionResult>(&json).unwrap(), r);
    }

    /// Our report messages are recognized (their delivery's TLS is not recorded); other
    /// mail, including a body that mentions the header, is not.
    #[test]
    fn report_messages_recognized() {
        let p = pending_reports(
            "h.example",
            &[(
                UnixTime(DAY),
                result(
                    ReportScope::RecipientDomain,
                    sts_policy(),
                    Some(failure(ResultType::StsPolicyInvalid)),
                ),
            )],
            UnixTime(DAY + 86_400),
        )
        .remove(0);
        let m = report_message("h.example", &p, &["a@example.org".into()], UnixTime(DAY));
        assert!(is_tls_report_message(&m));
        assert!(is_tls_report_message(
            b"DKIM-Signature: v=1\r\ntls-report-domain: x\r\n\r\nbody\r\n"
        ));
        assert!(!is_tls_report_message(
            b"Subject: hi\r\n\r\nTLS-Report-Domain: x\r\n"
        ));
    }
}
