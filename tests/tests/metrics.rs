//! Prometheus metrics (issue 16) through the real binary on every runtime: `metrics = {
//! port }` serves `/metrics`, scraped and parsed by Python's prometheus_client (Debian
//! python3-prometheus-client), whose counters must match what the test did.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use rmox_tests::*;

const SMTP: u16 = 2525;
const SUBMISSION: u16 = 2587;
const METRICS: u16 = 9100;

/// Parses the exposition at `url` with prometheus_client: "name{labels} value" per sample,
/// labels sorted.
const PARSE: &str = r#"
import sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
for fam in text_string_to_metric_families(text):
    for s in fam.samples:
        labels = ",".join("%s=%s" % (k, v) for k, v in sorted(s.labels.items()))
        print("%s{%s} %r" % (s.name, labels, s.value))
"#;

fn have_prometheus_client() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import prometheus_client.parser"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3-prometheus-client is not installed but CI is set"
        );
        eprintln!("SKIP: python3-prometheus-client not installed; CI is not set");
    }
    ok
}

fn scrape(ip: Ipv4Addr) -> BTreeMap<String, f64> {
    let out = Command::new("/usr/bin/python3")
        .args(["-c", PARSE, &format!("http://{ip}:{METRICS}/metrics")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        panic!(
            "{key} not in the metrics: {:#?}",
            m.keys().collect::<Vec<_>>()
        )
    })
}

fn send(ip: Ipv4Addr, port: u16, to: &str, auth: Option<&str>) -> i32 {
    let mut args: Vec<String> = vec![
        "--host".into(),
        ip.to_string(),
        "--port".into(),
        port.to_string(),
        "--mail-from".into(),
        "mjl@mox.example".into(),
        "--to".into(),
        to.into(),
        "--subject".into(),
        "metrics".into(),
    ];
    if let Some(pw) = auth {
        args.extend([
            "--auth".into(),
            "PLAIN".into(),
            "--user".into(),
            "mjl@mox.example".into(),
            "--password".into(),
            pw.into(),
        ]);
    }
    py_send(&args).0
}

fn metrics_scraped_and_parsed(rt: &str) {
    if !have_prometheus_client() {
        return;
    }
    let dir = TempDir::new(&format!("metrics-{rt}"));
    let ip = unique_ip();
    std::fs::write(
        dir.path().join("rmox.toml"),
        format!(
            r#"hostname = "mail.mox.example"
data_dir = "data"
resolver = ["zonefile:zone.txt"]

[[listener]]
name = "test"
ip = "{ip}"
smtp = {{ port = {SMTP} }}
metrics = {{ port = {METRICS} }}

[[listener]]
name = "submit"
ip = "{ip}"
submission = {{ port = {SUBMISSION} }}
no_require_starttls = true

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}

[incoming]
checks = false

[[route]]
transport = "nowhere"

[transport.nowhere]
kind = "smarthost"
host = "127.0.0.1"
port = 9
tls = "none"

[queue]
workers = 1
"#
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("zone.txt"), "").unwrap();
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let cfg = srv.config_path();
    let out = rmox(
        &[
            "account",
            "setpassword",
            "mjl",
            "--config",
            cfg.to_str().unwrap(),
        ],
        Some("s3cret-pass\n"),
    );
    assert!(out.status.success());
    let before = scrape(ip);
    // One accepted, one refused recipient on port 25; one failed and one good AUTH.
    assert_eq!(send(ip, SMTP, "mjl@mox.example", None), 0);
    assert_ne!(send(ip, SMTP, "nobody@mox.example", None), 0);
    assert_ne!(
        send(ip, SUBMISSION, "x@example.net", Some("wrong-password")),
        0
    );
    assert_eq!(
        send(ip, SUBMISSION, "x@example.net", Some("s3cret-pass")),
        0
    );
    let after = scrape(ip);
    let delta = |k: &str| get(&after, k) - before.get(k).copied().unwrap_or(0.0);
    assert_eq!(delta("rmox_messages_accepted_total{kind=smtp}"), 1.0);
    assert_eq!(delta("rmox_messages_accepted_total{kind=submission}"), 1.0);
    assert_eq!(delta("rmox_auth_total{mechanism=PLAIN,result=failed}"), 1.0);
    assert_eq!(delta("rmox_auth_total{mechanism=PLAIN,result=ok}"), 1.0);
    assert!(delta("rmox_smtp_connections_total{kind=smtp,listener=test,result=accepted}") >= 2.0);
    // Two RCPTs on port 25 (listener "test"), at least one on submission ("submit").
    assert!(delta("rmox_smtp_commands_total{listener=test,verb=RCPT}") >= 2.0);
    assert!(delta("rmox_smtp_commands_total{listener=submit,verb=AUTH}") >= 2.0);
    assert_eq!(
        delta("rmox_smtp_commands_total{listener=test,verb=AUTH}"),
        0.0
    );
    // The unknown recipient on port 25, the wrong password on submission.
    assert!(delta("rmox_smtp_replies_total{class=5xx,listener=test}") >= 1.0);
    assert!(delta("rmox_smtp_replies_total{class=5xx,listener=submit}") >= 1.0);
    assert!(
        delta("rmox_smtp_connections_total{kind=submission,listener=submit,result=accepted}")
            >= 2.0
    );
    assert!(delta("rmox_storage_commit_seconds_count{}") >= 2.0);
    assert!(get(&after, "rmox_storage_commit_writes_total{}") >= 2.0);
    // The submitted message waits in the queue (its relay is down): due or waiting.
    let queued = get(&after, "rmox_queue_entries{state=due}")
        + get(&after, "rmox_queue_entries{state=waiting}");
    assert_eq!(queued, 1.0, "{after:#?}");
    // Its delivery attempt fails temporarily (nothing listens): counted, no TLS.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let m = scrape(ip);
        if m.get("rmox_delivery_attempts_total{result=temporary,tls=none}")
            .copied()
            .unwrap_or(0.0)
            >= 1.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no delivery attempt counted: {m:#?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // Another path is not found.
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, urllib.request, urllib.error\ntry:\n    urllib.request.urlopen(sys.argv[1], timeout=10)\nexcept urllib.error.HTTPError as e:\n    print(e.code)",
            &format!("http://{ip}:{METRICS}/other"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "404");
    srv.stop_clean();
}

on_every_runtime!(metrics_scraped_and_parsed);
