//! `rmox tlsrpt list|show`: the incoming TLS reports (RFC 8460) that were stored (see
//! `reports::store_incoming_tls_report`), through the admin API ([`crate::ctl`]) as every
//! administration command.
//!
//! A report's ID is `TIME-SEQ-DOMAIN`: when it arrived (Unix seconds), its sequence number
//! within that second, and our policy domain it is stored under.

use rmox_storage::{MailStore, ReportKind};
use serde::Serialize;

use crate::reports::StoredTlsReport;
use crate::Fail;

/// One stored report with its ID, as `list --json` prints it.
#[derive(Serialize)]
struct Listed {
    id: String,
    #[serde(flatten)]
    record: StoredTlsReport,
}

fn id(domain: &str, time: i64, seq: u64) -> String {
    format!("{time}-{seq}-{domain}")
}

fn parse_id(s: &str) -> Option<(i64, u64, &str)> {
    let mut it = s.splitn(3, '-');
    let time = it.next()?.parse().ok()?;
    let seq = it.next()?.parse().ok()?;
    let domain = it.next().filter(|d| !d.is_empty())?;
    Some((time, seq, domain))
}

fn decode(raw: &[u8]) -> Result<StoredTlsReport, Fail> {
    serde_json::from_slice(raw).map_err(|e| Fail(format!("stored tls report unreadable: {e}")))
}

/// One line for `list`.
fn line(id: &str, r: &StoredTlsReport) -> String {
    let (ok, failed) = r
        .report
        .policies
        .iter()
        .filter(|p| {
            p.policy
                .policy_domain
                .trim_end_matches('.')
                .eq_ignore_ascii_case(&r.policy_domain)
        })
        .fold((0u64, 0u64), |(o, f), p| {
            (
                o + p.summary.total_successful_session_count,
                f + p.summary.total_failure_session_count,
            )
        });
    format!(
        "{id} domain {}{} from {} organization {:?} report-id {:?} start {} end {} success {ok} failure {failed}",
        r.policy_domain,
        if r.host_report { " (host)" } else { "" },
        r.from_domain,
        r.report.organization_name,
        r.report.report_id,
        r.report.date_range.start_datetime.0,
        r.report.date_range.end_datetime.0,
    )
}

/// The lines `rmox tlsrpt list [--json]` prints: one per stored report (by domain, oldest
/// first), or one JSON array.
pub fn list_lines(store: &dyn MailStore, json: bool) -> Result<Vec<String>, Fail> {
    let mut out = Vec::new();
    let mut all = Vec::new();
    for e in store.report_entries(ReportKind::TlsReport)? {
        let id = id(&e.domain, e.time.0, e.seq);
        let record = decode(&e.record)?;
        if json {
            all.push(Listed { id, record });
        } else {
            out.push(line(&id, &record));
        }
    }
    if json {
        out.push(serde_json::to_string_pretty(&all).map_err(|e| Fail(e.to_string()))?);
    }
    Ok(out)
}

/// The text `rmox tlsrpt show ID` prints: the stored record as JSON, the report included.
pub fn show_text(store: &dyn MailStore, report_id: &str) -> Result<String, Fail> {
    let Some((time, seq, domain)) = parse_id(report_id) else {
        return Err(Fail(format!(
            "tls report id {report_id:?}: expected TIME-SEQ-DOMAIN as `rmox tlsrpt list` prints"
        )));
    };
    let Some(raw) = store.report_get(
        ReportKind::TlsReport,
        domain,
        rmox_core::UnixTime(time),
        seq,
    )?
    else {
        return Err(Fail(format!("tls report {report_id} not found")));
    };
    let record = decode(&raw)?;
    serde_json::to_string_pretty(&Listed {
        id: report_id.to_string(),
        record,
    })
    .map_err(|e| Fail(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn ids() {
        assert_eq!(id("mox.example", 12, 3), "12-3-mox.example");
        assert_eq!(
            parse_id("12-3-mail-host.example"),
            Some((12, 3, "mail-host.example"))
        );
        assert_eq!(parse_id("12-3-"), None);
        assert_eq!(parse_id("x-3-a.example"), None);
        assert_eq!(parse_id("12"), None);
    }
}
