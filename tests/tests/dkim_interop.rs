//! DKIM interop with dkimpy (Debian python3-dkim), both ways: dkimpy verifies what
//! `rmox dkim sign` signs and `rmox dkim verify` verifies what dkimpy signs, for ed25519 and
//! RSA keys and all four canonicalisation pairs. DNS answers come from the key record
//! (dkimpy's `dnsfunc`, rmox's `zonefile:`), so no DNS server is involved. A tampered
//! message must fail on both sides, so a verifier that accepts everything fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use rmox_tests::dkimpy::{dkimpy, have_dkimpy, rsa_key, txt_line};
use rmox_tests::{rmox, TempDir};

const CANONS: [&str; 4] = [
    "relaxed/relaxed",
    "relaxed/simple",
    "simple/relaxed",
    "simple/simple",
];

/// A message whose header whitespace and case and body whitespace differ between relaxed
/// and simple canonicalisation.
const MSG: &str = "From: Alice <alice@example.org>\r\n\
To: bob@example.com\r\n\
subject:   Interop   test\r\n\
Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\
Message-ID: <interop@example.org>\r\n\
\r\n\
A body  with   spaces \r\n\
\r\n\
and a trailing empty line.\r\n\
\r\n";

/// Key material for one key type.
struct Key {
    /// `ed25519` or `rsa` (dkimpy_tool's --algo).
    algo: &'static str,
    selector: &'static str,
    /// The key file rmox signs with.
    rmox_key: String,
    /// The key file dkimpy signs with.
    dkimpy_key: String,
    /// The TXT record text.
    record: String,
}

fn keys(dir: &Path) -> Vec<Key> {
    let ed = dir.join("ed25519.pem");
    let out = rmox(
        &[
            "dkim",
            "gened25519",
            "example.org",
            "ed",
            ed.to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "gened25519: {out:?}");
    let line = String::from_utf8(out.stdout).unwrap();
    let record = line
        .split_once('"')
        .and_then(|(_, r)| r.trim_end().strip_suffix('"'))
        .unwrap_or_else(|| panic!("no quoted record in {line:?}"))
        .to_string();
    let (p8, p1, rsa_record) = rsa_key(dir);
    vec![
        Key {
            algo: "ed25519",
            selector: "ed",
            rmox_key: ed.to_str().unwrap().to_string(),
            dkimpy_key: ed.to_str().unwrap().to_string(),
            record,
        },
        Key {
            algo: "rsa",
            selector: "rs",
            rmox_key: p8.to_str().unwrap().to_string(),
            dkimpy_key: p1.to_str().unwrap().to_string(),
            record: rsa_record,
        },
    ]
}

/// Changes one body word: signatures over the body must no longer verify.
fn tamper(signed: &[u8]) -> Vec<u8> {
    let s = String::from_utf8_lossy(signed);
    assert!(s.contains("trailing empty"), "{s}");
    s.replacen("trailing empty", "trailing emptx", 1)
        .into_bytes()
}

#[test]
fn dkimpy_verifies_rmox_signatures() {
    if !have_dkimpy() {
        return;
    }
    let dir = TempDir::new("dkimpy-verify");
    let msg_path = dir.path().join("msg.eml");
    std::fs::write(&msg_path, MSG).unwrap();
    for key in keys(dir.path()) {
        let rec_path = dir.path().join(format!("{}.txt", key.algo));
        std::fs::write(&rec_path, &key.record).unwrap();
        let name = format!("{}._domainkey.example.org", key.selector);
        for canon in CANONS {
            let out = rmox(
                &[
                    "dkim",
                    "sign",
                    "example.org",
                    key.selector,
                    &key.rmox_key,
                    msg_path.to_str().unwrap(),
                    "--canon",
                    canon,
                ],
                None,
            );
            assert!(out.status.success(), "rmox dkim sign {canon}: {out:?}");
            let signed = out.stdout;
            let sig = String::from_utf8_lossy(&signed);
            assert!(
                sig.contains(&format!("c={canon}")),
                "{canon}: c= missing in {sig}"
            );
            let args = [
                "verify",
                "--record",
                rec_path.to_str().unwrap(),
                "--name",
                &name,
            ];
            let (code, stdout, stderr) = dkimpy(&args, &signed);
            assert_eq!(
                code,
                0,
                "dkimpy rejects rmox's {} {canon} signature: {} {stderr}\n{sig}",
                key.algo,
                String::from_utf8_lossy(&stdout)
            );
            let (code, _, stderr) = dkimpy(&args, &tamper(&signed));
            assert_eq!(
                code, 3,
                "dkimpy accepts a tampered {} {canon} message: {stderr}",
                key.algo
            );
        }
    }
}

#[test]
fn rmox_verifies_dkimpy_signatures() {
    if !have_dkimpy() {
        return;
    }
    let dir = TempDir::new("dkimpy-sign");
    let keys = keys(dir.path());
    let zone_path = dir.path().join("zone");
    let zone: String = keys
        .iter()
        .map(|k| txt_line(&format!("{}._domainkey.example.org", k.selector), &k.record))
        .collect();
    std::fs::write(&zone_path, zone).unwrap();
    let resolver = format!("zonefile:{}", zone_path.display());
    for key in &keys {
        for canon in CANONS {
            let (code, header, stderr) = dkimpy(
                &[
                    "sign",
                    "--domain",
                    "example.org",
                    "--selector",
                    key.selector,
                    "--key",
                    &key.dkimpy_key,
                    "--algo",
                    key.algo,
                    "--canon",
                    canon,
                ],
                MSG.as_bytes(),
            );
            assert_eq!(code, 0, "dkimpy sign {} {canon}: {stderr}", key.algo);
            let mut signed = header;
            signed.extend_from_slice(MSG.as_bytes());
            let path = dir.path().join(format!("signed-{}.eml", key.algo));
            for (msg, want) in [
                (signed.clone(), "dkim=pass"),
                (tamper(&signed), "dkim=fail"),
            ] {
                std::fs::write(&path, &msg).unwrap();
                let out = rmox(
                    &[
                        "dkim",
                        "verify",
                        path.to_str().unwrap(),
                        "--resolver",
                        &resolver,
                    ],
                    None,
                );
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(out.status.success(), "rmox dkim verify: {out:?}");
                assert!(
                    text.lines().next().is_some_and(|l| l.starts_with(want))
                        && text.contains(&format!("header.s={}", key.selector)),
                    "{} {canon}: want {want}, rmox says {text}\n{}",
                    key.algo,
                    String::from_utf8_lossy(&msg)
                );
            }
        }
    }
}
