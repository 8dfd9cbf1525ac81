//! `rmox quickstart` (issue 16) through the real binary: the configuration it writes passes
//! `config check` and serves once its addresses are moved to loopback; the account's
//! printed password logs in; a submitted message carries both DKIM signatures (RSA and
//! Ed25519), each verified by dkimpy against the DNS record quickstart printed; every DNS
//! record a new domain needs is printed, TXT strings at most 255 octets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use rmox_tests::dkimpy::{dkimpy, have_dkimpy};
use rmox_tests::*;

/// The TXT text of a zone-file line's quoted strings, joined.
fn txt_text(line: &str) -> String {
    line.split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .concat()
}

/// `msg` without its first DKIM-Signature field (and its continuation lines).
fn drop_first_signature(msg: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    let mut done = false;
    for line in msg.split_inclusive('\n') {
        if !done && line.to_ascii_lowercase().starts_with("dkim-signature:") {
            skipping = true;
            done = true;
            continue;
        }
        if skipping && (line.starts_with(' ') || line.starts_with('\t')) {
            continue;
        }
        skipping = false;
        out.push_str(line);
    }
    out
}

fn quickstart_config_serves_and_signs_twice(rt: &str) {
    let dir = TempDir::new(&format!("qs-{rt}"));
    let qs = dir.path().to_path_buf();
    let out = rmox(
        &[
            "quickstart",
            "mjl@example.org",
            "--hostname",
            "mail.example.org",
            "--dir",
            qs.to_str().unwrap(),
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "example.org. IN MX 10 mail.example.org.",
        "example.org. IN TXT \"v=spf1 mx ~all\"",
        "_dmarc.example.org. IN TXT \"v=DMARC1; p=reject; rua=mailto:dmarc-reports@example.org\"",
        "mta-sts.example.org. IN CNAME mail.example.org.",
        "_mta-sts.example.org. IN TXT \"v=STSv1; id=",
        "_smtp._tls.example.org. IN TXT \"v=TLSRPTv1; rua=mailto:tls-reports@example.org\"",
        "_smtp._tls.mail.example.org. IN TXT",
        "_25._tcp.mail.example.org. IN TLSA 3 1 1 ",
        "PTR",
    ] {
        assert!(text.contains(want), "{want:?} not printed:\n{text}");
    }
    for l in text.lines().filter(|l| l.contains(" IN TXT ")) {
        for s in l.split('"').skip(1).step_by(2) {
            assert!(s.len() <= 255, "a TXT string over 255 octets: {l}");
        }
    }
    let password = text
        .lines()
        .skip_while(|l| !l.starts_with("Account mjl"))
        .nth(2)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(password.len(), 20, "{text}");
    let records: BTreeMap<String, String> = text
        .lines()
        .filter(|l| l.contains("._domainkey.example.org. IN TXT"))
        .map(|l| (l.split('.').next().unwrap().to_string(), txt_text(l)))
        .collect();
    assert_eq!(records.len(), 2, "{text}");
    let cfg = qs.join("rmox.toml");
    let out = rmox(
        &["config", "check", "--config", cfg.to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Serve it on loopback ports.
    let ip = unique_ip();
    let conf = std::fs::read_to_string(&cfg).unwrap();
    let conf = conf
        .replace("ip = \"0.0.0.0\"", &format!("ip = \"{ip}\""))
        .replace("port = 25 }", "port = 2525 }")
        .replace("port = 587 }", "port = 2587 }")
        .replace("port = 465 }", "port = 2465 }")
        .replace("port = 443 }", "port = 2443 }");
    // DNS from an empty zone file: no lookup leaves the machine.
    let conf = conf.replacen(
        "data_dir = \"data\"",
        "data_dir = \"data\"\nresolver = [\"zonefile:zone.txt\"]",
        1,
    );
    std::fs::write(&cfg, conf).unwrap();
    std::fs::write(qs.join("zone.txt"), "").unwrap();
    let mut srv = Server::serve(rt, dir, ip, 2525);
    let cfgs = cfg.to_str().unwrap().to_string();
    // Held in the queue, to read the message as it would leave.
    let out = rmox(&["queue", "holdrule", "add", "--config", &cfgs], None);
    assert!(out.status.success());
    let (code, out) = py_send(&[
        "--host".into(),
        ip.to_string(),
        "--port".into(),
        "2587".into(),
        "--mode".into(),
        "starttls".into(),
        "--auth".into(),
        "PLAIN".into(),
        "--user".into(),
        "mjl@example.org".into(),
        "--password".into(),
        password,
        "--mail-from".into(),
        "mjl@example.org".into(),
        "--to".into(),
        "someone@example.net".into(),
        "--subject".into(),
        format!("quickstart-{rt}"),
    ]);
    assert_eq!(code, 0, "{out}");
    let out = rmox(&["queue", "list", "--json", "--config", &cfgs], None);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = list[0]["id"].as_u64().unwrap().to_string();
    let out = rmox(&["queue", "show", &id, "--config", &cfgs], None);
    let msg = String::from_utf8_lossy(&out.stdout).into_owned();
    srv.stop_clean();
    assert!(msg.contains(&format!("quickstart-{rt}")), "{msg}");
    assert_eq!(msg.matches("DKIM-Signature:").count(), 2, "{msg}");
    assert!(
        msg.contains("a=rsa-sha256") && msg.contains("a=ed25519-sha256"),
        "{msg}"
    );
    if !have_dkimpy() {
        return;
    }
    // Each signature verified by dkimpy against the record quickstart printed: the first,
    // then (without it) the second.
    let msg = msg.replace("\r\n", "\n").replace('\n', "\r\n");
    let mut m = msg.clone();
    let mut failed = Vec::new();
    for _ in 0..2 {
        let sel = m
            .split("DKIM-Signature:")
            .nth(1)
            .and_then(|sig| sig.split("s=").nth(1))
            .map(|s| s.split(';').next().unwrap().trim().to_string())
            .unwrap();
        let record = srv.dir.path().join(format!("record-{sel}.txt"));
        std::fs::write(&record, &records[&sel]).unwrap();
        let (code, outb, err) = dkimpy(
            &["verify", "--record", record.to_str().unwrap()],
            m.as_bytes(),
        );
        if code != 0 {
            failed.push(format!("{sel}: {} {err}", String::from_utf8_lossy(&outb)));
        }
        m = drop_first_signature(&m);
    }
    assert!(
        failed.is_empty(),
        "dkimpy did not verify: {failed:?}\n{msg}"
    );
}

on_every_runtime!(quickstart_config_serves_and_signs_twice);

/// `--acme`: the listener gets its certificates from the ACME CA (tls-alpn-01 on the
/// MTA-STS port 443) instead of a self-signed file; `config check` accepts what it wrote,
/// no TLSA is printed for keys that change at each renewal, and a bad value is one line.
/// (That ACME itself works is `tests/tests/acme.rs`, against Pebble.)
#[cfg(feature = "smol")]
#[test]
fn quickstart_with_acme() {
    let dir = TempDir::new("qs-acme");
    let qs = dir.path().join("conf");
    let q = qs.to_str().unwrap();
    let out = rmox(
        &[
            "quickstart",
            "mjl@example.org",
            "--acme",
            "letsencrypt",
            "--dir",
            q,
        ],
        None,
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = std::fs::read_to_string(qs.join("rmox.toml")).unwrap();
    assert!(
        cfg.contains("acme = { directory_url = \"https://acme-v02.api.letsencrypt.org/directory\", contact = [\"mailto:mjl@example.org\"], challenge = \"tls-alpn-01\", hostnames = [\"mail.example.org\", \"mta-sts.example.org\"] }"),
        "{cfg}"
    );
    assert!(!cfg.contains("cert_file"), "{cfg}");
    assert!(!qs.join("tls/cert.pem").exists());
    assert!(!text.contains("IN TLSA"), "{text}");
    let out = rmox(
        &[
            "config",
            "check",
            "--config",
            qs.join("rmox.toml").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad");
    let out = rmox(
        &[
            "quickstart",
            "mjl@example.org",
            "--acme",
            "ftp://x",
            "--dir",
            bad.to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--acme \"ftp://x\""), "{err}");
}
