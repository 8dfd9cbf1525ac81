//! Outgoing delivery against the harness (../shared/harness): MX fallback when the first MX
//! times out (`blackhole.example.org`: MX10 never answers, MX20 is mx1), with a short
//! `[queue] connect_timeout_secs`; and REQUIRETLS to mx1, which offers verified STARTTLS
//! but not REQUIRETLS: a permanent failure with a DSN to the sender. Skips with a printed
//! reason when the harness is not up (an error in CI).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rmox_tests::harness::{serve_config as config, submit, wait_for, Harness};
use rmox_tests::*;

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
