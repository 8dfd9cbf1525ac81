//! dkimpy (Debian's python3-dkim) as the other side of the DKIM interop tests: runs
//! tests/py/dkimpy_tool.py with Debian's python (the one python3-dkim installs into) and
//! makes the keys and key records both sides use.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The python that has Debian's packages (python3-dkim, python3-nacl): /usr/bin/python3,
/// not a python3 earlier in PATH (pyenv) that lacks them.
pub fn debian_python() -> PathBuf {
    PathBuf::from("/usr/bin/python3")
}

/// Whether dkimpy can be imported. Outside CI a missing dkimpy skips (false, with a printed
/// reason); in CI (env CI set) it must be there.
pub fn have_dkimpy() -> bool {
    let ok = Command::new(debian_python())
        .args(["-c", "import dkim, nacl"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "dkimpy is not installed but CI is set: apt-get install python3-dkim"
        );
        eprintln!("SKIP: dkimpy not installed (apt-get install python3-dkim); CI is not set");
    }
    ok
}

/// Runs dkimpy_tool.py with ARGS and the message on stdin; (exit code, stdout, stderr).
pub fn dkimpy(args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = Command::new(debian_python())
        .arg(crate::py_dir().join("dkimpy_tool.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running /usr/bin/python3");
    {
        let mut si = child.stdin.take().expect("stdin");
        si.write_all(stdin).expect("writing to dkimpy_tool.py");
    }
    let out = child.wait_with_output().expect("dkimpy_tool.py output");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs openssl with ARGS; panics with its stderr when it fails. Returns stdout.
pub fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A 2048-bit RSA key made with openssl in DIR: (PKCS#8 PEM path for rmox, PKCS#1 PEM path
/// for dkimpy, key record text `v=DKIM1; k=rsa; p=...`).
pub fn rsa_key(dir: &Path) -> (PathBuf, PathBuf, String) {
    let p8 = dir.join("rsa-pkcs8.pem");
    let p1 = dir.join("rsa-pkcs1.pem");
    let s8 = p8.to_str().expect("utf-8 path");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        s8,
    ]);
    openssl(&[
        "rsa",
        "-in",
        s8,
        "-traditional",
        "-out",
        p1.to_str().expect("utf-8 path"),
    ]);
    let spki = openssl(&["pkey", "-in", s8, "-pubout", "-outform", "DER"]);
    (p8, p1, format!("v=DKIM1; k=rsa; p={}", base64(&spki)))
}

/// A zone-file TXT line for NAME with TEXT split into quoted strings of at most 200 bytes.
pub fn txt_line(name: &str, text: &str) -> String {
    let parts: Vec<String> = text
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!("{name}. IN TXT {}\n", parts.join(" "))
}

/// Standard base64 with padding (core's codec).
pub fn base64(b: &[u8]) -> String {
    rmox_core::codec::base64(b)
}
