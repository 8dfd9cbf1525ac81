//! `rmox dns check` (issue 16) against the harness DNS: mox.example publishes MX, A, PTR,
//! SPF, DKIM (RSA and Ed25519), DMARC, MTA-STS, TLSRPT and TLSA for mail.mox.example; the
//! check says OK for each record that matches the configuration (the harness's own DKIM
//! keys and certificate), ERROR for a signing selector that is not published, WARN for
//! what only weakens delivery, and exits non-zero because of the ERROR.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rmox_tests::harness::Harness;
use rmox_tests::*;

#[test]
fn dns_check_against_the_harness() {
    let Some(h) = Harness::get("dns_check_against_the_harness") else {
        return;
    };
    let dir = TempDir::new("dnscheck");
    let hd = h.var("HARNESS_DIR");
    let wrong = dir.path().join("wrong.pem");
    let out = rmox(
        &[
            "dkim",
            "gened25519",
            "mox.example",
            "wrong",
            wrong.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success());
    std::fs::write(
        dir.path().join("rmox.toml"),
        format!(
            r#"hostname = "mail.mox.example"
data_dir = "data"

[[listener]]
name = "t"
ip = "127.0.0.1"
smtp = {{ port = 2599 }}
tls = {{ cert_file = "{hd}/pki/mail.mox.example.chain.crt", key_file = "{hd}/pki/mail.mox.example.key" }}

[domain."mox.example"]
dkim = {{ selectors = {{ "harness" = "{hd}/dkim/mox.example.rsa.pem", "harness-ed" = "{hd}/dkim/mox.example.ed25519.pem", "wrong" = "wrong.pem" }}, sign = ["harness", "harness-ed", "wrong"] }}
"#
        ),
    )
    .unwrap();
    let cfg = dir.path().join("rmox.toml");
    let resolver = h.var("HARNESS_DNS_RESOLVER");
    let out = rmox(
        &[
            "dns",
            "check",
            "mox.example",
            "--config",
            cfg.to_str().unwrap(),
            "--resolver",
            &resolver,
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    for want in [
        "OK    MX mox.example: mail.mox.example",
        "OK    A/AAAA mail.mox.example: 127.10.0.2",
        "OK    PTR 127.10.0.2: mail.mox.example",
        "OK    SPF mox.example: passes 127.10.0.2",
        "OK    DKIM harness._domainkey.mox.example",
        "OK    DKIM harness-ed._domainkey.mox.example",
        "ERROR DKIM wrong._domainkey.mox.example: no key published",
        "OK    DMARC _dmarc.mox.example: p=reject",
        "OK    TLSRPT _smtp._tls.mox.example",
        "WARN  TLSRPT _smtp._tls.mail.mox.example",
        "OK    TLSA _25._tcp.mail.mox.example: 3 1 1 matches the certificate",
        "WARN  MTA-STS _mta-sts.mox.example",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    assert_eq!(text.matches("ERROR").count(), 1, "{text}");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 problem(s)"));
}
