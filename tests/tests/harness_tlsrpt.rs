//! Sending TLS reports (RFC 8460) through the binary, against the harness DNS and mx1:
//! stored results of yesterday for sts-testing.example.org (MTA-STS testing, one session
//! succeeded and two failed certificate verification) are turned by `rmox serve`'s report
//! sender (`[reports] tls_interval_secs = 1`) into one report for the domain's
//! `_smtp._tls` rua (`tlsrpt@example.org`, at mx1), DKIM-signed for mox.example; the
//! message mx1 received is a valid report that parses back, and `rmox dkim verify` passes
//! against the harness DNS. Skipped with a reason when the harness is not up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use rmox_core::tlspolicy::{
    FailureDetails, Policy, PolicyType, ReportScope, ResultType, SessionResult,
};
use rmox_core::UnixTime;
use rmox_tests::harness::{Harness, RESOLVER};
use rmox_tests::*;

/// `rmox serve` config: mail.mox.example signing with the harness's mox.example keys, TLS
/// reports every second, no DMARC reports.
fn config(h: &Harness) -> String {
    let dkim = h.dir.join("dkim");
    format!(
        r#"hostname = "{host}"
data_dir = "data"
resolver = ["{RESOLVER}"]

[[listener]]
name = "harness"
ip = "{ip}"
smtp = {{ port = 25 }}
tls = {{ cert_file = "{cert}", key_file = "{key}" }}

[domain."mox.example"]
dkim = {{ selectors = {{ "harness" = "{rsa}", "harness-ed" = "{ed}" }}, sign = ["harness-ed", "harness"] }}

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}

[postmaster]
account = "mjl"
mailbox = "Inbox"

[reports]
dmarc_interval_secs = 0
tls_interval_secs = 1
"#,
        host = h.var("HARNESS_MTA_HOSTNAME"),
        ip = h.var("HARNESS_MTA_ADDR"),
        cert = h.var("HARNESS_MTA_CERT"),
        key = h.var("HARNESS_MTA_KEY"),
        rsa = dkim.join("mox.example.rsa.pem").display(),
        ed = dkim.join("mox.example.ed25519.pem").display(),
    )
}

/// The message files mx1 stored.
fn mx1_files(h: &Harness) -> BTreeSet<PathBuf> {
    std::fs::read_dir(h.dir.join("mail/mx1.example.org"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// One stored result: an MTA-STS session to mx1 of sts-testing.example.org.
fn result(failed: bool) -> SessionResult {
    SessionResult {
        scope: ReportScope::RecipientDomain,
        policy: Policy {
            policy_type: PolicyType::Sts,
            policy_string: vec![
                "version: STSv1".into(),
                "mode: testing".into(),
                "mx: mx1.example.org".into(),
                "max_age: 86400".into(),
            ],
            policy_domain: "sts-testing.example.org".into(),
            mx_host: vec!["mx1.example.org".into()],
        },
        failure: failed.then(|| FailureDetails {
            result_type: ResultType::CertificateNotTrusted,
            sending_mta_ip: Some("127.10.0.2".into()),
            receiving_mx_hostname: Some("mx1.example.org".into()),
            receiving_mx_helo: None,
            receiving_ip: Some("127.10.0.10".into()),
            failed_session_count: 1,
            additional_information: None,
            failure_reason_code: Some("unknown issuer".into()),
        }),
    }
}

fn tls_report_sent(rt: &str) {
    let test = format!("tls_report_sent({rt})");
    let Some(h) = Harness::get(&test) else {
        return;
    };
    let _guard = Harness::lock();
    let dir = TempDir::new(&format!("harness-tlsrpt-{rt}"));
    let cfg = dir.path().join("rmox.toml");
    std::fs::write(&cfg, config(&h)).unwrap();
    let cfgs = cfg.to_str().unwrap().to_string();
    let out = rmox(&["config", "check", "--config", &cfgs], None);
    assert!(
        out.status.success(),
        "config check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Yesterday's results (a finished UTC day), seeded before the server opens the store.
    // A unique MX IP per run tells this run's report from earlier ones at mx1.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let yesterday = now - 86_400;
    let marker = format!("127.10.0.{}", 100 + std::process::id() % 100);
    {
        let store = rmox_storage::Store::open(&dir.path().join("data")).unwrap();
        for (i, failed) in [false, true, true].into_iter().enumerate() {
            let mut r = result(failed);
            if let Some(f) = &mut r.failure {
                f.receiving_ip = Some(marker.clone());
            }
            store
                .report_add(
                    rmox_storage::ReportKind::TlsResult,
                    "sts-testing.example.org",
                    UnixTime(yesterday + i as i64),
                    serde_json::to_vec(&r).unwrap(),
                )
                .unwrap();
        }
    }
    let ip: std::net::Ipv4Addr = h.var("HARNESS_MTA_ADDR").parse().unwrap();
    let before = mx1_files(&h);
    let mut srv = Server::serve(rt, dir, ip, 25);
    let mut found: Option<(PathBuf, String)> = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while found.is_none() && std::time::Instant::now() < deadline {
        found = mx1_files(&h).difference(&before).find_map(|p| {
            let t = std::fs::read_to_string(p).ok()?;
            let report = rmox_core::tlspolicy::parse_report_message(t.as_bytes()).ok()?;
            let ours = report.policies.iter().any(|p| {
                p.failure_details
                    .iter()
                    .any(|f| f.receiving_ip.as_deref() == Some(marker.as_str()))
            });
            ours.then(|| (p.clone(), t))
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let Some((file, text)) = found else {
        panic!("no tls report at mx1; stderr:\n{}", srv.stderr());
    };
    for want in [
        "TLS-Report-Domain: sts-testing.example.org\r\n",
        "TLS-Report-Submitter: mail.mox.example\r\n",
        "report-type=\"tlsrpt\"",
        "Content-Type: application/tlsrpt+gzip",
        "To: <tlsrpt@example.org>",
    ] {
        assert!(text.contains(want), "{want:?} missing:\n{text}");
    }
    let report = rmox_core::tlspolicy::parse_report_message(text.as_bytes()).unwrap();
    assert_eq!(report.organization_name, "mail.mox.example");
    let day = yesterday - yesterday.rem_euclid(86_400);
    assert_eq!(report.date_range.start_datetime, UnixTime(day));
    assert_eq!(report.policies.len(), 1);
    let p = &report.policies[0];
    assert_eq!(p.policy.policy_type, PolicyType::Sts);
    assert_eq!(p.policy.policy_domain, "sts-testing.example.org");
    assert_eq!(p.summary.total_successful_session_count, 1);
    assert_eq!(p.summary.total_failure_session_count, 2);
    assert_eq!(p.failure_details[0].failed_session_count, 2);
    assert_eq!(
        p.failure_details[0].result_type,
        ResultType::CertificateNotTrusted
    );
    // DKIM-signed for mox.example, verified against the harness DNS.
    let out = rmox(
        &[
            "dkim",
            "verify",
            file.to_str().unwrap(),
            "--resolver",
            RESOLVER,
        ],
        None,
    );
    let v = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "dkim verify: {v}");
    assert!(
        v.contains("dkim=pass") && v.contains("header.d=mox.example"),
        "{v}"
    );
    assert!(!v.contains("dkim=fail"), "{v}");
    srv.stop_clean();
    let _ = std::fs::remove_file(&file);
}

rmox_tests::on_every_runtime!(tls_report_sent,);
