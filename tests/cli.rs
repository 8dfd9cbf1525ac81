//! Integration tests of the `rmox` command line (an integration test of the root package:
//! its presence also makes `cargo test --workspace` build `target/debug/rmox`, which the
//! end-to-end suite in the rmox-tests crate runs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn rmox(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rmox"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("rmox-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn config_example_passes_config_check() {
    let (ok, example, err) = rmox(&["config", "example"]);
    assert!(ok, "{err}");
    let dir = tmpdir("example");
    let path = dir.join("rmox.toml");
    std::fs::write(&path, example).unwrap();
    // `config check` reads what serve reads: without the files the example names, it fails.
    let (ok, _, err) = rmox(&["config", "check", "--config", path.to_str().unwrap()]);
    assert!(!ok && err.contains("tls.cert_file"), "{err}");
    std::fs::create_dir_all(dir.join("tls")).unwrap();
    std::fs::create_dir_all(dir.join("dkim")).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["mail.example.org".to_string()]).unwrap();
    std::fs::write(dir.join("tls/cert.pem"), ck.cert.pem()).unwrap();
    std::fs::write(dir.join("tls/key.pem"), ck.key_pair.serialize_pem()).unwrap();
    let key = dir.join("dkim/2026a.ed25519.pem");
    let (ok, _, err) = rmox(&[
        "dkim",
        "gened25519",
        "example.org",
        "2026a",
        key.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = rmox(&["config", "check", "--config", path.to_str().unwrap()]);
    assert!(ok, "config check of the example failed: {err}");
    assert!(out.contains(": ok"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_config_is_one_line_naming_file_key_and_problem() {
    let dir = tmpdir("bad");
    let path = dir.join("rmox.toml");
    std::fs::write(&path, "hostname = \"bad host\"\ndata_dir = \"data\"\n").unwrap();
    let (ok, _, err) = rmox(&["config", "check", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(path.to_str().unwrap()) && err.contains("hostname"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `rmox dkim genrsa` and `gened25519` write keys whose printed DNS records verify what
/// `rmox dkim sign` signs with them (DNS from a zone file).
#[test]
fn dkim_keys_sign_and_verify() {
    let dir = tmpdir("dkimgen");
    let msg = dir.join("msg.eml");
    std::fs::write(
        &msg,
        "From: <a@example.org>\r\nTo: <b@example.net>\r\nSubject: keys\r\n\r\nbody\r\n",
    )
    .unwrap();
    for (cmd, sel) in [("genrsa", "r1"), ("gened25519", "e1")] {
        let key = dir.join(format!("{sel}.pem"));
        let (ok, record, err) = rmox(&["dkim", cmd, "example.org", sel, key.to_str().unwrap()]);
        assert!(ok, "{cmd}: {err}");
        assert!(
            record.starts_with(&format!("{sel}._domainkey.example.org. IN TXT \"v=DKIM1;")),
            "{record}"
        );
        let (ok, again, _) = rmox(&["dkim", cmd, "example.org", sel, key.to_str().unwrap()]);
        assert!(!ok, "overwrote an existing key: {again}");
        let zone = dir.join(format!("{sel}.zone"));
        std::fs::write(&zone, record.trim().replace("IN TXT", "300 IN TXT") + "\n").unwrap();
        let (ok, signed, err) = rmox(&[
            "dkim",
            "sign",
            "example.org",
            sel,
            key.to_str().unwrap(),
            msg.to_str().unwrap(),
        ]);
        assert!(ok, "sign: {err}");
        let signed_path = dir.join(format!("{sel}.signed"));
        std::fs::write(&signed_path, signed).unwrap();
        let resolver = format!("zonefile:{}", zone.display());
        let (ok, out, err) = rmox(&[
            "dkim",
            "verify",
            signed_path.to_str().unwrap(),
            "--resolver",
            &resolver,
        ]);
        assert!(ok, "verify: {err}");
        assert!(out.contains("dkim=pass"), "{cmd}: {out}");
    }
    let (ok, _, err) = rmox(&[
        "dkim",
        "genrsa",
        "example.org",
        "x",
        dir.join("x.pem").to_str().unwrap(),
        "--bits",
        "1024",
    ]);
    assert!(!ok && err.contains("--bits 1024"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A build without glommio (the portable build, or any non-Linux host) must refuse
/// `--runtime glommio` with one line that names the missing io_uring runtime and the feature,
/// before it binds or opens anything.
#[cfg(not(all(feature = "glommio", target_os = "linux")))]
#[test]
fn runtime_not_in_this_build_is_named() {
    let dir = tmpdir("noglommio");
    let (ok, out, err) = rmox(&[
        "localserve",
        "--dir",
        dir.join("ls").to_str().unwrap(),
        "--ip",
        "127.77.0.1",
        "--runtime",
        "glommio",
    ]);
    assert!(!ok, "{out}{err}");
    assert!(
        err.contains("no glommio runtime") && err.contains("--features glommio"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        !dir.join("ls").exists(),
        "localserve created its directory before failing"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
