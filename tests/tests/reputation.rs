//! mox's TestSpam through the real binary on every runtime (issue 17): a sender's first
//! message is accepted (no bad signals), the user classifies it as junk with `rmox message
//! junk` while the server runs, the sender's next message is refused (451, nothing leaked)
//! and kept in the rejects mailbox, and after `rmox message notjunk` it is accepted with an
//! `X-Rmox-Reason` saying why. The DNS checks run on a zone file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use rmox_tests::*;

const SMTP: u16 = 2525;

const ZONE: &str = "remote.example. IN A 127.0.0.1
example.org. IN A 127.0.0.1
example.org. IN TXT \"v=spf1 ip4:127.0.0.1 -all\"
_dmarc.example.org. IN TXT \"v=DMARC1;p=reject\"
1.0.0.127.in-addr.arpa. IN PTR remote.example.
";

fn config_text(ip: Ipv4Addr) -> String {
    format!(
        r#"hostname = "mail.mox.example"
data_dir = "data"
resolver = ["zonefile:zone.txt"]

[[listener]]
name = "test"
ip = "{ip}"
smtp = {{ port = {SMTP} }}

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}
rejects_mailbox = "Rejects"
"#
    )
}

/// One message from remote@example.org (SPF and DMARC pass); the final reply's code.
fn send(srv: &Server, n: u32) -> u16 {
    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.expect_cmd("EHLO remote.example", 250);
    c.expect_cmd("MAIL FROM:<remote@example.org>", 250);
    c.expect_cmd("RCPT TO:<mjl@mox.example>", 250);
    c.expect_cmd("DATA", 354);
    c.send(
        format!("From: <remote@example.org>\r\nTo: <mjl@mox.example>\r\nSubject: offer {n}\r\nMessage-Id: <offer{n}@example.org>\r\n\r\nbuy now\r\n.\r\n")
            .as_bytes(),
    );
    let code = match c.reply() {
        ReplyOrClose::Reply(code, text) => {
            if code == 451 {
                assert_eq!(
                    text.trim_end(),
                    "451 4.3.0 error processing, try again later"
                );
            }
            code
        }
        ReplyOrClose::Closed => panic!("closed after DATA:\n{}", srv.stderr()),
    };
    c.shutdown();
    code
}

fn messages(cfg: &str) -> Vec<serde_json::Value> {
    let out = rmox(&["message", "list", "mjl", "--json", "--config", cfg], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn classify(cfg: &str, what: &str, id: u64) {
    let out = rmox(
        &["message", what, "mjl", &id.to_string(), "--config", cfg],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn junk_then_rescued(rt: &str) {
    let dir = TempDir::new(&format!("reputation-{rt}"));
    let ip = unique_ip();
    std::fs::write(dir.path().join("rmox.toml"), config_text(ip)).unwrap();
    std::fs::write(dir.path().join("zone.txt"), ZONE).unwrap();
    let srv = Server::serve(rt, dir, ip, SMTP);
    let cfg = srv.config_path();
    let cfg = cfg.to_str().unwrap();

    assert_eq!(send(&srv, 1), 250, "{}", srv.stderr());
    let list = messages(cfg);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["from"], "remote@example.org");
    let first = list[0]["id"].as_u64().unwrap();
    classify(cfg, "junk", first);
    assert_eq!(messages(cfg)[0]["junk"], true);

    // Known junk: refused, kept once in Rejects however often the sender retries.
    assert_eq!(send(&srv, 2), 451, "{}", srv.stderr());
    assert_eq!(send(&srv, 2), 451);
    let rejects: Vec<_> = messages(cfg)
        .into_iter()
        .filter(|m| m["mailbox"] == "Rejects")
        .collect();
    assert_eq!(rejects.len(), 1, "{rejects:?}");

    // The user rescues the sender: accepted, and gone from Rejects.
    classify(cfg, "notjunk", first);
    assert_eq!(send(&srv, 2), 250, "{}", srv.stderr());
    let list = messages(cfg);
    assert!(!list.iter().any(|m| m["mailbox"] == "Rejects"), "{list:?}");
    assert_eq!(list.len(), 2, "{list:?}");
    let log = srv.stderr();
    assert!(
        log.contains("incoming analysis") && log.contains("reason=msgfromfull"),
        "{log}"
    );
    // The stored copy says why it was accepted.
    let out = rmox(
        &[
            "export",
            "mbox",
            "mjl",
            dir_of(cfg).join("out.mbox").to_str().unwrap(),
            "--config",
            cfg,
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mbox = std::fs::read_to_string(dir_of(cfg).join("out.mbox")).unwrap();
    assert!(mbox.contains("X-Rmox-Reason: msgfromfull;"), "{mbox}");
    assert!(mbox.contains("X-Rmox-Reason: no-bad-signals;"), "{mbox}");
    // Bad input: an unknown message id is a clear error.
    let out = rmox(&["message", "junk", "mjl", "999999", "--config", cfg], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no message 999999"));
}

fn dir_of(cfg: &str) -> std::path::PathBuf {
    std::path::Path::new(cfg).parent().unwrap().to_path_buf()
}

rmox_tests::on_every_runtime!(junk_then_rescued);
