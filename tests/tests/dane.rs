//! `rmox dane makerecord` through the real binary, against OpenSSL's view of the same
//! certificates: the TLSA record an operator publishes must match what a DANE client (and
//! `openssl x509 -pubkey | openssl pkey -pubin -outform DER | sha256sum`) computes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use rmox_tests::*;

/// Runs a shell pipeline in `dir` (bash, pipefail) and returns its stdout.
fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail; {script}"))
        .current_dir(dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The first word of `sha256sum`/`sha512sum` output.
fn digest(dir: &Path, script: &str) -> String {
    sh(dir, script)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `rmox dane makerecord ARGS` in `dir`: (exit success, stdout, stderr).
fn makerecord(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(rmox_bin())
        .args(["dane", "makerecord"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A self-signed certificate (EC P-256 or RSA) for mail.mox.example in `dir`/NAME.
fn selfsigned(dir: &Path, name: &str, key: &str) {
    sh(
        dir,
        &format!(
            "openssl req -x509 -newkey {key} -nodes -keyout {name}.key -out {name}.pem -days 2 \
             -subj /CN=mail.mox.example \
             -addext subjectAltName=DNS:mail.mox.example,DNS:mox.example 2>/dev/null"
        ),
    );
}

/// The default record (3 1 1) for EC and RSA certificates is the SHA-256 of the public
/// key as OpenSSL extracts it, and the owner name is `_25._tcp.` plus the certificate's
/// first DNS name (or the `--host` given, lower-cased, with `--port`).
#[test]
fn default_record_matches_openssl() {
    let dir = TempDir::new("dane-ee");
    let d = dir.path();
    for (name, key) in [
        ("ec", "ec -pkeyopt ec_paramgen_curve:P-256"),
        ("rsa", "rsa:2048"),
    ] {
        selfsigned(d, name, key);
        let want = digest(
            d,
            &format!(
                "openssl x509 -in {name}.pem -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum"
            ),
        );
        assert_eq!(want.len(), 64);
        let (ok, out, err) = makerecord(d, &[&format!("{name}.pem")]);
        assert!(ok, "{err}");
        assert_eq!(
            out,
            format!("_25._tcp.mail.mox.example. IN TLSA 3 1 1 {want}\n"),
            "{name}"
        );
        let (ok, out, err) = makerecord(
            d,
            &[
                &format!("{name}.pem"),
                "--host",
                "MX.Example.ORG.",
                "--port",
                "465",
            ],
        );
        assert!(ok, "{err}");
        assert_eq!(
            out,
            format!("_465._tcp.mx.example.org. IN TLSA 3 1 1 {want}\n")
        );
    }
    // A DER certificate file works as well.
    sh(d, "openssl x509 -in ec.pem -outform DER -out ec.der");
    let (ok, out, _) = makerecord(d, &["ec.der"]);
    assert!(ok);
    let want = digest(
        d,
        "openssl x509 -in ec.pem -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum",
    );
    assert!(out.ends_with(&format!(" 3 1 1 {want}\n")), "{out}");
}

/// A chain file (leaf, then its CA): usage 3 describes the leaf, usage 2 the CA; selector 0
/// is the full certificate and matching type 2 SHA-512, as OpenSSL computes them.
#[test]
fn chain_usage2_and_full_certificate() {
    let dir = TempDir::new("dane-ta");
    let d = dir.path();
    sh(
        d,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
           -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key \
           -out leaf.csr -subj /CN=mx.ta.dane.example 2>/dev/null
         printf 'subjectAltName=DNS:mx.ta.dane.example\\n' > ext.cnf
         openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
           -extfile ext.cnf -out leaf.pem 2>/dev/null
         cat leaf.pem ca.pem > chain.pem",
    );
    let ca_spki = digest(
        d,
        "openssl x509 -in ca.pem -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum",
    );
    let ca_full = digest(d, "openssl x509 -in ca.pem -outform DER | sha256sum");
    let leaf_spki = digest(
        d,
        "openssl x509 -in leaf.pem -pubkey -noout | openssl pkey -pubin -outform DER | sha256sum",
    );
    let leaf_full512 = digest(d, "openssl x509 -in leaf.pem -outform DER | sha512sum");
    let rows: &[(&[&str], String)] = &[
        (
            &["chain.pem"],
            format!("_25._tcp.mx.ta.dane.example. IN TLSA 3 1 1 {leaf_spki}\n"),
        ),
        (
            &["chain.pem", "--usage", "2"],
            format!("_25._tcp.mx.ta.dane.example. IN TLSA 2 1 1 {ca_spki}\n"),
        ),
        (
            &["chain.pem", "--usage", "2", "--selector", "0"],
            format!("_25._tcp.mx.ta.dane.example. IN TLSA 2 0 1 {ca_full}\n"),
        ),
        (
            &["chain.pem", "--selector", "0", "--matching", "2"],
            format!("_25._tcp.mx.ta.dane.example. IN TLSA 3 0 2 {leaf_full512}\n"),
        ),
    ];
    for (args, want) in rows {
        let (ok, out, err) = makerecord(d, args);
        assert!(ok, "{args:?}: {err}");
        assert_eq!(&out, want, "{args:?}");
    }
    // The CA names no DNS host: without --host that is an error, with it a record.
    let (ok, _, err) = makerecord(d, &["ca.pem"]);
    assert!(!ok);
    assert!(err.contains("--host"), "{err}");
    let (ok, out, _) = makerecord(d, &["ca.pem", "--usage", "2", "--host", "mx.example"]);
    assert!(ok);
    assert_eq!(
        out,
        format!("_25._tcp.mx.example. IN TLSA 2 1 1 {ca_spki}\n")
    );
}

/// What is refused: a file without a certificate, a missing file, PKIX usages (unusable
/// for SMTP, RFC 7672 3.1.3).
#[test]
fn refusals() {
    let dir = TempDir::new("dane-bad");
    let d = dir.path();
    selfsigned(d, "c", "ec -pkeyopt ec_paramgen_curve:P-256");
    let (ok, _, err) = makerecord(d, &["c.key"]);
    assert!(!ok);
    assert!(err.contains("no certificate found"), "{err}");
    let (ok, _, err) = makerecord(d, &["missing.pem"]);
    assert!(!ok);
    assert!(err.contains("missing.pem"), "{err}");
    for usage in ["0", "1"] {
        let (ok, out, _) = makerecord(d, &["c.pem", "--usage", usage]);
        assert!(!ok && out.is_empty(), "usage {usage}");
    }
}
