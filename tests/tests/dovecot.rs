//! Mailboxes that Dovecot serves (issue 16), through the real binaries on every runtime:
//! `rmox serve` receives a message for an account with a `maildir`, Dovecot (the Debian
//! package, started here on loopback with its own config, as another user reading through
//! `maildir_group`) serves it over IMAP, Python's imaplib reads it, moves it to Junk, and
//! rmox then sees it as junk (`rmox message list`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rmox_tests::*;

const SMTP: u16 = 2525;
const IMAP: u16 = 1143;
const DOVECOT: &str = "/usr/sbin/dovecot";

/// Dovecot is there, or (outside CI) the test says why it does not run.
fn have_dovecot() -> bool {
    let ok = std::path::Path::new(DOVECOT).exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "dovecot (dovecot-imapd) is not installed but CI is set"
        );
        eprintln!("SKIP: dovecot not installed; CI is not set");
    }
    ok
}

struct Dovecot(Child);

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_dovecot(dir: &std::path::Path, ip: Ipv4Addr) -> Dovecot {
    for d in ["run", "state"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(dir.join("passwd"), "mjl:{PLAIN}s3cret-pass::::::\n").unwrap();
    let d = dir.display();
    let conf = format!(
        r#"base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = {ip}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = 100
mail_location = maildir:{d}/maildir/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={d}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {ip}
    port = {IMAP}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
"#
    );
    std::fs::write(dir.join("dovecot.conf"), conf).unwrap();
    let child = Command::new(DOVECOT)
        .args(["-F", "-c"])
        .arg(dir.join("dovecot.conf"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dc = Dovecot(child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect((ip, IMAP)).is_err() {
        assert!(
            Instant::now() < deadline,
            "dovecot did not listen: {}",
            std::fs::read_to_string(dir.join("dovecot.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    dc
}

/// imaplib: log in, check the message is in INBOX, then move it to Junk.
const IMAP_SCRIPT: &str = r#"
import imaplib, sys
m = imaplib.IMAP4(sys.argv[1], int(sys.argv[2]), timeout=20)
m.login("mjl", "s3cret-pass")
typ, data = m.select("INBOX")
assert typ == "OK" and int(data[0]) == 1, (typ, data)
typ, data = m.fetch("1", "(RFC822)")
body = data[0][1].decode()
assert "Subject: read me over imap" in body, body
assert "hello from rmox" in body, body
m.create("Junk")
typ, data = m.copy("1", "Junk")
assert typ == "OK", (typ, data)
m.store("1", "+FLAGS", "\\Deleted")
m.expunge()
typ, data = m.select("Junk")
assert int(data[0]) == 1, data
m.logout()
print("ok")
"#;

fn dovecot_reads_and_junk_is_seen(rt: &str) {
    if !have_dovecot() {
        return;
    }
    let dir = TempDir::new(&format!("dovecot-{rt}"));
    // Dovecot's mail processes run as the dovecot user: the way to the maildir must be
    // open to it; the maildir itself is shared through its group.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(dir.path().join("maildir")).unwrap();
    std::fs::set_permissions(
        dir.path().join("maildir"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let ip = unique_ip();
    std::fs::write(
        dir.path().join("rmox.toml"),
        format!(
            r#"hostname = "mail.mox.example"
data_dir = "data"
maildir_group = "dovecot"

[[listener]]
name = "test"
ip = "{ip}"
smtp = {{ port = {SMTP} }}

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}
maildir = "maildir/mjl"

[incoming]
checks = false
"#
        ),
    )
    .unwrap();
    let base = dir.path().to_path_buf();
    let srv = Server::serve(rt, dir, ip, SMTP);
    let _dovecot = start_dovecot(&base, ip);

    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.expect_cmd("EHLO client.example", 250);
    c.expect_cmd("MAIL FROM:<remote@example.org>", 250);
    c.expect_cmd("RCPT TO:<mjl@mox.example>", 250);
    c.expect_cmd("DATA", 354);
    c.send(b"From: <remote@example.org>\r\nSubject: read me over imap\r\nMessage-Id: <imap1@example.org>\r\n\r\nhello from rmox\r\n.\r\n");
    match c.reply() {
        ReplyOrClose::Reply(code, text) => assert_eq!(code, 250, "{text}"),
        ReplyOrClose::Closed => panic!("closed after DATA:\n{}", srv.stderr()),
    }
    c.shutdown();
    // On disk before the 250: a Maildir++ file in new/, readable by the dovecot group.
    let new: Vec<_> = std::fs::read_dir(base.join("maildir/mjl/new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(new.len(), 1, "{new:?}");
    assert_eq!(
        std::fs::metadata(&new[0]).unwrap().permissions().mode() & 0o777,
        0o660
    );

    let out = Command::new("/usr/bin/python3")
        .args(["-c", IMAP_SCRIPT, &ip.to_string(), &IMAP.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "imaplib: {}{}\ndovecot log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(base.join("dovecot.log")).unwrap_or_default()
    );

    // rmox sees the move: the message is junk now (evidence for reputation).
    let cfg = srv.config_path();
    let out = rmox(
        &[
            "message",
            "list",
            "mjl",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let junk_files: Vec<_> = ["cur", "new"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(base.join("maildir/mjl/.Junk").join(d))
                .into_iter()
                .flatten()
        })
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(list[0]["junk"], true, "{list} {junk_files:?}");
}

rmox_tests::on_every_runtime!(dovecot_reads_and_junk_is_seen);
