//! Issue 12, "no failure hidden behind a 250", through the `rmox serve` binary on each
//! runtime, with DNS from a zone file (`resolver = ["zonefile:zone"]`) so the sender's SPF
//! passes: a transaction to a valid recipient, an unknown user and an account over quota is
//! answered 250, the valid one gets the message and exactly one DSN about the other two is
//! queued to the sender (read back with `rmox queue show` and parsed by Python's `email`
//! package); and a transaction whose recipients are all unknown is answered 550 5.1.1 only
//! after `limits.unknown_recipient_delay_secs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rmox_tests::*;

const SMTP: u16 = 2025;

fn config(ip: Ipv4Addr, delay: u64) -> String {
    format!(
        r#"hostname = "host.mox.example"
data_dir = "data"
resolver = ["zonefile:zone"]

[[listener]]
name = "test"
ip = "{ip}"
smtp = {{ port = {SMTP} }}

[domain."mox.example"]
[domain."other.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}

[account.full]
domain = "other.example"
destinations = {{ "full@other.example" = {{}} }}
quota_message_size = 1

[limits]
unknown_recipient_delay_secs = {delay}

[incoming]
checks = true
"#
    )
}

/// The client is client.example (forward and reverse DNS agree: iprev passes) and
/// sender.example's SPF allows it. Clients connect from 127.0.0.1 whatever loopback address
/// the server listens on.
const ZONE: &str = "\
client.example. A 127.0.0.1
1.0.0.127.in-addr.arpa. PTR client.example.
sender.example. MX 10 client.example.
sender.example. TXT \"v=spf1 ip4:127.0.0.0/8 -all\"
";

fn start(rt: &str, tag: &str, delay: u64) -> Server {
    let dir = TempDir::new(&format!("{tag}-{rt}"));
    let ip = unique_ip();
    std::fs::write(dir.path().join("rmox.toml"), config(ip, delay)).unwrap();
    std::fs::write(dir.path().join("zone"), ZONE).unwrap();
    let cfg = dir.path().join("rmox.toml");
    let cfgs = cfg.to_str().unwrap();
    let out = rmox(&["config", "check", "--config", cfgs], None);
    assert!(
        out.status.success(),
        "config check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // DSNs to the sender stay in the queue, held, instead of being delivered.
    let out = rmox(
        &[
            "queue",
            "holdrule",
            "add",
            "--recipient-domain",
            "sender.example",
            "--config",
            cfgs,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "holdrule add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Server::serve(rt, dir, ip, SMTP)
}

fn greeted(srv: &Server) -> Conn {
    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.expect_cmd("EHLO client.example", 250);
    c
}

fn queue(srv: &Server, args: &[&str]) -> String {
    let cfg = srv.config_path();
    let mut all = vec!["queue"];
    all.extend_from_slice(args);
    all.extend(["--config", cfg.to_str().unwrap()]);
    let out = rmox(&all, None);
    assert!(
        out.status.success(),
        "rmox {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Parses a DSN with Python's email package; prints the content type, report-type and one
/// line per per-recipient status group.
const PY_DSN: &str = r#"
import email, sys
from email import policy
m = email.message_from_binary_file(sys.stdin.buffer, policy=policy.compat32)
print("type", m.get_content_type())
print("report-type", m.get_param("report-type"))
print("to", m["To"])
parts = m.get_payload()
print("parts", ",".join(p.get_content_type() for p in parts))
status = [p for p in parts if p.get_content_type() == "message/delivery-status"][0]
groups = status.get_payload()
# The first block is the per-message fields, the others one per recipient.
for g in groups[1:]:
    print("rcpt", g["Final-Recipient"], g["Action"], g["Status"].split()[0])
headers = [p for p in parts if p.get_content_type() == "text/rfc822-headers"][0]
print("original-subject", "Subject: partial" in headers.get_payload())
"#;

fn python_dsn(dsn: &str) -> String {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(PY_DSN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dsn.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Issue 12: three recipients (valid, unknown user, over quota) from an SPF-verified sender
/// were answered 250 with only the valid one served and nothing reported. Now: 250, one
/// message for mjl, one DSN (multipart/report, delivery-status) to the sender with two
/// failed recipients and their own statuses.
fn partial_delivery_dsn(rt: &str) {
    let mut srv = start(rt, "partial", 0);
    let mut c = greeted(&srv);
    let msg = "From: <remote@sender.example>\nTo: <mjl@mox.example>\nSubject: partial\nMessage-Id: <partial@sender.example>\n\ntest email\n";
    c.transaction(
        "remote@sender.example",
        &[
            "mjl@mox.example",
            "nobody@other.example",
            "full@other.example",
        ],
        msg,
    )
    .unwrap_or_else(|e| panic!("partial delivery refused: {e:?}"));
    c.expect_cmd("QUIT", 221);
    srv.stop_clean();
    let stderr = srv.stderr();
    assert!(
        stderr.contains("delivery to recipient failed") && stderr.contains("nobody@other.example"),
        "failed recipients are logged: {stderr}"
    );

    let list = queue(&srv, &["list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 1, "one queue entry: {list}");
    assert!(
        lines[0].contains(" held dsn from <> to <remote@sender.example>"),
        "{list}"
    );
    let id = lines[0].split_whitespace().next().unwrap();
    let dsn = queue(&srv, &["show", id]);
    let parsed = python_dsn(&dsn);
    for want in [
        "type multipart/report",
        "report-type delivery-status",
        "to <remote@sender.example>",
        "parts text/plain,message/delivery-status,text/rfc822-headers",
        "rcpt rfc822; nobody@other.example failed 5.1.1",
        "rcpt rfc822; full@other.example failed 4.2.2",
        "original-subject True",
    ] {
        assert!(
            parsed.lines().any(|l| l == want),
            "missing {want:?} in:\n{parsed}\n{dsn}"
        );
    }
    assert_eq!(
        parsed.lines().filter(|l| l.starts_with("rcpt ")).count(),
        2,
        "{parsed}"
    );
    let mbox = srv.export_mbox("mjl");
    assert_eq!(count_subject(&mbox, "partial"), 1, "{mbox}");
    let mbox = srv.export_mbox("full");
    assert_eq!(mbox_messages(&mbox).len(), 0, "{mbox}");
}

/// Issue 12: when every recipient is an unknown user the refusal is held back by
/// `limits.unknown_recipient_delay_secs` (2 here), and nothing is queued.
fn unknown_recipients_delayed(rt: &str) {
    let mut srv = start(rt, "unknown-delay", 2);
    let mut c = greeted(&srv);
    c.expect_cmd("MAIL FROM:<remote@sender.example>", 250);
    c.expect_cmd("RCPT TO:<nobody@other.example>", 250);
    c.expect_cmd("RCPT TO:<noone@other.example>", 250);
    c.expect_cmd("DATA", 354);
    let start = Instant::now();
    c.send(b"From: <remote@sender.example>\r\nSubject: guess\r\n\r\nhello\r\n.\r\n");
    let r = c.expect(550);
    let waited = start.elapsed();
    assert!(r.starts_with("550 5.1.1 no such user"), "{r}");
    assert!(
        waited >= Duration::from_secs(2),
        "answered after {waited:?}, before the 2 s delay"
    );
    c.expect_cmd("QUIT", 221);
    srv.stop_clean();
    assert_eq!(queue(&srv, &["list"]).trim(), "", "nothing queued");
}

rmox_tests::on_every_runtime!(partial_delivery_dsn, unknown_recipients_delayed,);
