//! mox's TestForward through the binary and the harness DNS (issue 17), on every runtime:
//! `rmox serve` with the DNS checks on receives, from 127.10.0.11 (mx1.example.org, in
//! example.org's SPF), mail that the user then marks as junk; a later message from a new
//! sender through that same host is refused for the host's history when it arrives at an
//! address without rules, and accepted into the ruleset's mailbox when it arrives at an
//! address whose ruleset says mail from example.org there is forwarded (`is_forward`: the
//! forwarder's IP, EHLO and MAIL FROM are not evidence). Messages are sent by Python's
//! smtplib from that source address. Before that, the reputation part of mox's
//! TestDelivery: an unknown sender whose SPF passes but whose address has no reverse DNS
//! (127.10.0.50) is refused with 451, the same from mx1.example.org is accepted. Skipped
//! without the harness (fails in CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rmox_tests::harness::{Harness, RESOLVER};
use rmox_tests::*;

const FORWARDER: &str = "127.10.0.11";

fn config(h: &Harness, ip: &str) -> String {
    format!(
        r#"hostname = "{host}"
data_dir = "data"
resolver = ["{RESOLVER}"]

[[listener]]
name = "fwd"
ip = "{ip}"
smtp = {{ port = 25 }}

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}}, "mjl3@mox.example" = {{ rulesets = [{{ smtp_mail_from_regexp = "@example\\.org$", verified_domain = "example.org", is_forward = true, mailbox = "Forwarded" }}] }} }}

[postmaster]
account = "mjl"
mailbox = "Inbox"

[limits]
unknown_recipient_delay_secs = 0

[incoming]
checks = true
require_iprev_for_unknown_senders = true
"#,
        host = h.var("HARNESS_MTA_HOSTNAME"),
    )
}

/// One message through tests/py/forward_send.py from the forwarder: the final reply.
fn send(ip: &str, mail_from: &str, rcpt: &str, from: &str, subject: &str) -> String {
    send_from(
        FORWARDER,
        "mx1.example.org",
        ip,
        mail_from,
        rcpt,
        from,
        subject,
    )
}

/// One message from `source` (EHLO `helo`): the final reply.
fn send_from(
    source: &str,
    helo: &str,
    ip: &str,
    mail_from: &str,
    rcpt: &str,
    from: &str,
    subject: &str,
) -> String {
    let out = std::process::Command::new("python3")
        .arg(py_dir().join("forward_send.py"))
        .args([ip, "25", source, helo, mail_from, rcpt, from, subject])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !text.is_empty(),
        "forward_send.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn messages(cfg: &str) -> Vec<serde_json::Value> {
    let out = rmox(&["message", "list", "mjl", "--json", "--config", cfg], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn forward_through_harness(rt: &str) {
    let test = format!("forward_through_harness({rt})");
    let Some(h) = Harness::get(&test) else {
        return;
    };
    // An address of its own per runtime: the shared MTA address is not needed.
    let ip = match rt {
        "tokio" => "127.10.3.1",
        "smol" => "127.10.3.2",
        _ => "127.10.3.3",
    };
    let dir = TempDir::new(&format!("harness-forward-{rt}"));
    let cfg = dir.path().join("rmox.toml");
    std::fs::write(&cfg, config(&h, ip)).unwrap();
    let cfgs = cfg.to_str().unwrap().to_string();
    let out = rmox(&["config", "check", "--config", &cfgs], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut srv = Server::serve(rt, dir, ip.parse().unwrap(), 25);

    // mox's TestDelivery: an unknown sender, SPF passing (127.10.0.0/24 is in example.org's
    // record), but no reverse DNS for 127.10.0.50: refused until it has one.
    let s_new = subject("forward-noptr", rt);
    let r = send_from(
        "127.10.0.50",
        "mx1.example.org",
        ip,
        "newcomer@example.org",
        "mjl@mox.example",
        "newcomer@example.org",
        &s_new,
    );
    assert!(
        r.starts_with("451 4.7.0") && r.contains("reverse dns"),
        "{r}\n{}",
        srv.stderr()
    );
    assert!(messages(&cfgs).is_empty());

    // History of the forwarding host: its mail, then marked junk by the user.
    for i in 0..5 {
        let r = send(
            ip,
            "lists@example.org",
            "mjl@mox.example",
            "spammer@dane.example",
            &subject(&format!("forward-junk{i}"), rt),
        );
        assert!(
            r.starts_with("250"),
            "history message {i}: {r}\n{}",
            srv.stderr()
        );
    }
    for m in messages(&cfgs) {
        let id = m["id"].to_string();
        let out = rmox(&["message", "junk", "mjl", &id, "--config", &cfgs], None);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A new sender through that host, at the address without rules: the host's history
    // refuses it (without details).
    let s_plain = subject("forward-plain", rt);
    let r = send(
        ip,
        "remote@example.org",
        "mjl@mox.example",
        "friend@good.invalid",
        &s_plain,
    );
    assert!(r.starts_with("451 4.3.0"), "{r}\n{}", srv.stderr());
    // The same through the forward ruleset: accepted into its mailbox, not junk.
    let s_fwd = subject("forward-ruleset", rt);
    let r = send(
        ip,
        "remote@example.org",
        "mjl3@mox.example",
        "friend@good.invalid",
        &s_fwd,
    );
    assert!(r.starts_with("250"), "{r}\n{}", srv.stderr());
    let all = messages(&cfgs);
    let fwd: Vec<&serde_json::Value> = all.iter().filter(|m| m["mailbox"] == "Forwarded").collect();
    assert_eq!(fwd.len(), 1, "{all:?}");
    assert_eq!(fwd[0]["junk"], false);
    assert_eq!(fwd[0]["from"], "friend@good.invalid");
    srv.stop_clean();
}

rmox_tests::on_every_runtime!(forward_through_harness);
