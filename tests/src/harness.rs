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
use std::time::{Duration, Instant};

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
const EXTRA_MARKER: &str = "; rmox tests/src/harness.rs records v2";
/// The start of every version's marker, and the end of the block.
const EXTRA_PREFIX: &str = "; rmox tests/src/harness.rs records";
const EXTRA_END: &str = "; end rmox\n";

/// An address nothing in the harness uses: `later-mx.example.org`, the MX of
/// `later.example.org`. Connections are refused until a test listens there.
pub const LATER_MX: &str = "127.10.0.97";

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
; later.example.org: MX refused until a test listens on {LATER_MX}.
later             IN MX 10 later-mx.example.org.
later-mx          IN A {LATER_MX}
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
        // env.sh stays after down.sh: check the resolver actually answers (TCP port 53).
        let alive = RESOLVER.parse::<std::net::SocketAddr>().is_ok_and(|a| {
            std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok()
        });
        if !alive {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: CI is set but the harness resolver {RESOLVER} does not answer"
            );
            eprintln!(
                "SKIP {test}: {} exists but the harness is down",
                env_sh.display()
            );
            return None;
        }
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
            let mut old = std::fs::read_to_string(&p).unwrap_or_default();
            if old.contains(EXTRA_MARKER) {
                return;
            }
            // Replace an older version of the block.
            if let Some(start) = old.find(EXTRA_PREFIX) {
                let end = old[start..]
                    .find(EXTRA_END)
                    .map_or(old.len(), |e| start + e + EXTRA_END.len());
                old.replace_range(start..end, "");
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

/// A minimal SMTP server on `ip:25` for one connection (no STARTTLS): accepts every
/// command and returns the transcript of what the client sent. The listener is bound
/// before this returns.
pub fn smtp_sink(ip: &str) -> std::thread::JoinHandle<String> {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind((ip, 25)).unwrap_or_else(|e| panic!("bind {ip}:25: {e}"));
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        let mut seen = String::new();
        let _ = w.write_all(b"220 sink.example ESMTP\r\n");
        let mut in_data = false;
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            seen.push_str(&line);
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    let _ = w.write_all(b"250 2.0.0 stored\r\n");
                }
                continue;
            }
            let cmd = line.get(..4).unwrap_or("").to_ascii_uppercase();
            let reply: &[u8] = match cmd.as_str() {
                "EHLO" => b"250-sink.example\r\n250 8BITMIME\r\n",
                "DATA" => {
                    in_data = true;
                    b"354 go ahead\r\n"
                }
                "QUIT" => {
                    let _ = w.write_all(b"221 2.0.0 bye\r\n");
                    break;
                }
                _ => b"250 2.0.0 ok\r\n",
            };
            let _ = w.write_all(reply);
        }
        seen
    })
}

/// `rmox serve` listening on `ip` (not the shared MTA address: only submission is needed)
/// with a 2-second connect timeout.
pub fn serve_config(h: &Harness, ip: &str) -> String {
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

/// Submits one message to `ip`:587 with python's smtplib (see `SUBMIT`); panics when it
/// is not sent.
pub fn submit(ip: &str, subject: &str, requiretls: bool, rcpt: &str) {
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
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}
