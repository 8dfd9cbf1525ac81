//! The test world of `../shared/harness` (NSD + Unbound DNS, aiosmtpd peers, a real Postfix
//! on 127.10.0.x): finding it, the extra DNS records the rmox tests add to it, sending
//! through its `lib/inject.py`, and reading what its peers received.
//!
//! Outside CI a missing harness skips the tests with a printed reason; with `CI` set it
//! is an error (`.ci/run` starts the harness).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, Once};

/// The validating resolver every lookup should use.
pub const RESOLVER: &str = "127.53.0.2:53";

/// A running harness: its directory and the settings of its env.sh.
pub struct Harness {
    /// `$HARNESS_DIR` (default /tmp/harness/run).
    pub dir: PathBuf,
    env: HashMap<String, String>,
}

/// Records the rmox tests add to the example.org zone (through `dns/extra`, then
/// `dns-reload.sh`). A marker line makes adding them idempotent.
const EXTRA_MARKER: &str = "; rmox tests/src/harness.rs records v1";

/// Long SPF record for `bigspf.example.org`: more than the 1232-octet EDNS payload, so the
/// UDP answer is truncated and the resolver must retry over TCP.
pub fn big_spf_record() -> String {
    let mut s = String::from("v=spf1");
    for i in 1..=100 {
        s.push_str(&format!(" ip4:192.0.2.{i}"));
    }
    s.push_str(" ip4:198.51.100.0/24 ip4:127.10.0.2 -all");
    s
}

fn extra_records() -> String {
    // Quoted as several <=250-octet character-strings.
    let spf = big_spf_record();
    let chunks: Vec<String> = spf
        .as_bytes()
        .chunks(250)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!(
        "{EXTRA_MARKER}
bigspf            IN TXT {}
nullmx            IN MX 0 .
nullmx            IN A 127.10.0.99
; DNSBL zone bl.example.org: 127.0.0.2 (the health check) and 127.10.0.15 are listed.
2.0.0.127.bl      IN A 127.0.0.2
2.0.0.127.bl      IN TXT \"test entry\"
15.0.10.127.bl    IN A 127.0.0.2
15.0.10.127.bl    IN TXT \"listed by the rmox harness test\"
; end rmox
",
        chunks.join(" ")
    )
}

static SERIAL: Mutex<()> = Mutex::new(());

impl Harness {
    /// The harness when it is up (`$HARNESS_DIR/env.sh` exists); `None` with a printed
    /// reason outside CI; panics in CI. Also makes sure the extra records are in DNS.
    pub fn get(test: &str) -> Option<Harness> {
        let dir = PathBuf::from(
            std::env::var("HARNESS_DIR").unwrap_or_else(|_| "/tmp/harness/run".into()),
        );
        let env_sh = dir.join("env.sh");
        let Ok(text) = std::fs::read_to_string(&env_sh) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: CI is set but {} is missing: .ci/run must start the harness",
                env_sh.display()
            );
            eprintln!(
                "SKIP {test}: {} missing (start ../shared/harness/up.sh)",
                env_sh.display()
            );
            return None;
        };
        let mut env = HashMap::new();
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("export ") else {
                continue;
            };
            let rest = rest.split(" #").next().unwrap_or(rest).trim();
            if let Some((k, v)) = rest.split_once('=') {
                env.insert(k.to_string(), v.to_string());
            }
        }
        let h = Harness { dir, env };
        h.add_extra_records();
        Some(h)
    }

    /// A setting from env.sh (panics when absent).
    pub fn var(&self, k: &str) -> String {
        self.env
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} not in {}/env.sh", self.dir.display()))
    }

    /// The harness scripts: `$HARNESS_HOME`, else `../shared/harness` beside the checkout.
    pub fn home() -> PathBuf {
        if let Some(h) = std::env::var_os("HARNESS_HOME") {
            return PathBuf::from(h);
        }
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/harness")
    }

    /// Only one test at a time may use the MTA address 127.10.0.2:25.
    pub fn lock() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add_extra_records(&self) {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            let p = self.dir.join("dns/extra/example.org.zone");
            let old = std::fs::read_to_string(&p).unwrap_or_default();
            if old.contains(EXTRA_MARKER) {
                return;
            }
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("{old}{}", extra_records())).unwrap();
            let script = Self::home().join("dns-reload.sh");
            let out = Command::new(&script)
                .env("HARNESS_DIR", &self.dir)
                .stdin(Stdio::null())
                .output()
                .unwrap_or_else(|e| panic!("running {} (set HARNESS_HOME): {e}", script.display()));
            assert!(
                out.status.success(),
                "dns-reload.sh: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        });
    }

    /// Runs `lib/inject.py ARGS` (Debian's python3, which has dkimpy); returns (exit code,
    /// output). The last output line is the server's final reply ("250 accepted" or
    /// "CODE text").
    pub fn inject(&self, args: &[&str]) -> (i32, String) {
        let script = Self::home().join("lib/inject.py");
        let out = Command::new("/usr/bin/python3")
            .arg(&script)
            .args(args)
            .env("HARNESS_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// The peers' transaction log (events.jsonl), one line per transaction.
    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(self.var("HARNESS_MAIL_EVENTS"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The messages in Postfix's catchall Maildir (new/ and cur/).
    pub fn postfix_messages(&self) -> Vec<String> {
        let md = PathBuf::from(self.var("HARNESS_POSTFIX_MAILDIR"));
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(rd) = std::fs::read_dir(md.join(sub)) else {
                continue;
            };
            for e in rd.flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path()) {
                    out.push(t);
                }
            }
        }
        out
    }
}
