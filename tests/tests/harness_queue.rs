//! Outgoing delivery against the harness (../shared/harness): MX fallback when the first MX
//! times out (`blackhole.example.org`: MX10 never answers, MX20 is mx1), with a short
//! `[queue] connect_timeout_secs`; and REQUIRETLS to mx1, which offers verified STARTTLS
//! but not REQUIRETLS: a permanent failure with a DSN to the sender. Skips with a printed
//! reason when the harness is not up (an error in CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rmox_tests::harness::{Harness, RESOLVER};
use rmox_tests::*;

/// `rmox serve` listening on `ip` (not the shared MTA address: only submission is needed)
/// with a 2-second connect timeout.
fn config(h: &Harness, ip: &str) -> String {
    format!(
        r#"hostname = "{host}"
data_dir = "data"
resolver = ["{RESOLVER}"]

[[listener]]
name = "q"
ip = "{ip}"
smtp = {{ port = 25 }}
submission = {{ port = 587 }}
tls = {{ cert_file = "{cert}", key_file = "{key}" }}
no_require_starttls = true

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}

[postmaster]
account = "mjl"
mailbox = "Inbox"

[limits]
auth_failure_delay_secs = 0
unknown_recipient_delay_secs = 0

[queue]
connect_timeout_secs = 2
"#,
        host = h.var("HARNESS_MTA_HOSTNAME"),
        cert = h.var("HARNESS_MTA_CERT"),
        key = h.var("HARNESS_MTA_KEY"),
    )
}

/// Submits one message over STARTTLS with AUTH PLAIN, with REQUIRETLS when asked.
const SUBMIT: &str = r#"
import smtplib, ssl, sys
host, port, subject, requiretls, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", sys.argv[5]
s = smtplib.SMTP(host, port, timeout=30)
s.ehlo()
s.starttls(context=ssl._create_unverified_context())
s.ehlo()
s.login("mjl@mox.example", "testtest")
msg = "From: <mjl@mox.example>\r\nTo: <%s>\r\nSubject: %s\r\n\r\nhello\r\n" % (rcpt, subject)
s.sendmail("mjl@mox.example", [rcpt], msg, mail_options=["REQUIRETLS"] if requiretls else [])
s.quit()
print("sent")
"#;

fn submit(ip: &str, subject: &str, requiretls: bool, rcpt: &str) {
    let out = Command::new("python3")
        .args(["-c", SUBMIT, ip, "587", subject])
        .arg(if requiretls { "1" } else { "0" })
        .arg(rcpt)
        .stdin(Stdio::null())
        .output()
        .expect("running python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("sent"),
        "submit: {text}"
    );
}

/// Waits up to `secs` for `f` to hold.
fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

fn queue_scenarios(rt: &str) {
    let test = format!("queue_scenarios({rt})");
    let Some(h) = Harness::get(&test) else {
        return;
    };
    let _guard = Harness::lock();
    // REQUIRETLS needs PKIX-verified TLS: trust the harness CA (the server inherits it).
    std::env::set_var("SSL_CERT_FILE", h.var("HARNESS_CA_BUNDLE"));
    let ip = unique_ip();
    let ips = ip.to_string();
    let dir = TempDir::new(&format!("harness-queue-{rt}"));
    let cfg = dir.path().join("rmox.toml");
    std::fs::write(&cfg, config(&h, &ips)).unwrap();
    let cfgs = cfg.to_str().unwrap().to_string();
    let out = rmox(
        &["account", "setpassword", "mjl", "--config", &cfgs],
        Some("testtest\n"),
    );
    assert!(out.status.success(), "setpassword");
    let mut srv = Server::serve(rt, dir, ip, 587);

    let tag = format!("{rt}{}", std::process::id());
    let r_black = format!("rcpt-{tag}@blackhole.example.org");
    let r_rtls = format!("requiretls-{tag}@example.org");
    let subject = subject("harness-queue", rt);
    let start = Instant::now();
    submit(&ips, &subject, false, &r_black);
    submit(&ips, &subject, true, &r_rtls);

    // MX10 times out after 2 s, MX20 (mx1) takes it.
    let delivered = wait_for(40, || {
        h.events().iter().any(|l| {
            l.contains(&format!("\"{r_black}\""))
                && l.contains("\"result\": \"250\"")
                && l.contains("\"peer\": \"mx1.example.org\"")
        })
    });
    assert!(
        delivered,
        "{r_black} not delivered by mx1:\n{}\nstderr:\n{}",
        h.events().join("\n"),
        srv.stderr()
    );
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "no connect timeout first"
    );
    // REQUIRETLS: mx1 never sees the recipient; the runner fails it with a DSN.
    // (The store is the server's while it runs: watch its log.)
    let failed = wait_for(30, || {
        srv.stderr()
            .lines()
            .any(|l| l.contains(&r_rtls) && l.contains("failed"))
    });
    srv.stop_clean();
    let (_, retired) = rmox_out(&["queue", "retired", "list", "--config", &cfgs]);
    assert!(failed, "{r_rtls} not retired:\n{retired}\n{}", srv.stderr());
    assert!(
        !h.events()
            .iter()
            .any(|l| l.contains(&format!("\"rcpt\": \"{r_rtls}\""))),
        "mx1 got a RCPT for {r_rtls}"
    );
    let (_, list) = rmox_out(&["queue", "list", "--config", &cfgs]);
    assert!(
        !list.contains(&r_rtls) && !list.contains(&r_black),
        "{list}"
    );
    let mbox = srv.export_mbox("mjl");
    let dsn = mbox_messages(&mbox)
        .into_iter()
        .find(|m| m.contains("multipart/report") && m.contains(&r_rtls))
        .unwrap_or_else(|| panic!("no DSN for {r_rtls}:\n{mbox}\n{retired}"));
    assert!(dsn.contains("Action: failed"), "{dsn}");
    // RFC 8689 5: status 5.7.30 for a next hop without REQUIRETLS (core's delivery
    // machine; the old blocking connector said 5.0.0 "REQUIRETLS required but not
    // supported").
    assert!(dsn.contains("Status: 5.7.30"), "{dsn}");
    assert!(dsn.contains("REQUIRETLS support required"), "{dsn}");
    assert!(dsn.contains("Remote-MTA: dns; mx1.example.org"), "{dsn}");
    assert!(
        !mbox_messages(&mbox)
            .iter()
            .any(|m| m.contains(&r_black) && m.contains("multipart/report")),
        "DSN for the delivered message"
    );
}

/// `rmox ARGS`: (success, stdout + stderr).
fn rmox_out(args: &[&str]) -> (bool, String) {
    let out = rmox(args, None);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

rmox_tests::on_every_runtime!(queue_scenarios,);
