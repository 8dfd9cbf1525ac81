//! `rmox sendmail` (issue 16) through the real binary on every runtime: mail(1) from
//! Debian's bsd-mailx (which runs `sendmail -i -t`) and Python's subprocess submit through
//! the running server as the `[sendmail]` account; the message is queued (held here, to
//! read it) with Bcc removed and Date/Message-Id/From added; a sender that is not the
//! account's is refused (65); with the server stopped the command says so (75).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};

use rmox_tests::*;

const SMTP: u16 = 2525;

fn have_mailx() -> bool {
    let ok = std::path::Path::new("/usr/bin/bsd-mailx").exists();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "bsd-mailx is not installed but CI is set"
        );
        eprintln!("SKIP: bsd-mailx not installed; CI is not set");
    }
    ok
}

/// Runs `program ARGS` with `stdin`, RMOX_CONFIG set: (exit code, stderr).
fn run(program: &std::path::Path, args: &[&str], stdin: &str, config: &str) -> (i32, String) {
    let mut child = Command::new(program)
        .args(args)
        .env("RMOX_CONFIG", config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn queued(cfg: &str) -> Vec<(String, String, String)> {
    let out = rmox(&["queue", "list", "--json", "--config", cfg], None);
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    list.iter()
        .map(|e| {
            let id = e["id"].as_u64().unwrap().to_string();
            let out = rmox(&["queue", "show", &id, "--config", cfg], None);
            (
                e["rcpt"]["recipient"].as_str().unwrap().to_string(),
                e["rcpt"]["mail_from"].as_str().unwrap().to_string(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        })
        .collect()
}

fn sendmail_submits_through_the_server(rt: &str) {
    let dir = TempDir::new(&format!("sendmail-{rt}"));
    let ip = unique_ip();
    std::fs::write(
        dir.path().join("rmox.toml"),
        format!(
            r#"hostname = "mail.mox.example"
data_dir = "data"
resolver = ["zonefile:zone.txt"]

[[listener]]
name = "t"
ip = "{ip}"
smtp = {{ port = {SMTP} }}

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}}, "cron@mox.example" = {{}} }}

[sendmail]
account = "mjl"
"#
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("zone.txt"), "").unwrap();
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let cfg_path = srv.config_path();
    let cfg = cfg_path.to_str().unwrap().to_string();
    assert!(rmox(&["queue", "holdrule", "add", "--config", &cfg], None)
        .status
        .success());
    // A link named sendmail, as /usr/sbin/sendmail would be.
    let link = srv.dir.path().join("sendmail");
    std::os::unix::fs::symlink(rmox_bin(), &link).unwrap();

    // Python's subprocess: -t with To and Bcc, -oi, -f.
    let msg = format!(
        "From: <cron@mox.example>\nTo: a@example.net\nBcc: hidden@example.net\nSubject: py-{rt}\n\nline\n.\nafter the dot\n"
    );
    let out = Command::new("python3")
        .args([
            "-c",
            "import subprocess, sys\nr = subprocess.run([sys.argv[1], '-t', '-oi', '-f', 'cron@mox.example'], input=sys.argv[2].encode())\nsys.exit(r.returncode)",
            link.to_str().unwrap(),
            &msg,
        ])
        .env("RMOX_CONFIG", &cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = queued(&cfg);
    let rcpts: Vec<&str> = q.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(rcpts, ["a@example.net", "hidden@example.net"], "{q:?}");
    for (_, from, text) in &q {
        assert_eq!(from, "cron@mox.example");
        assert!(!text.contains("hidden@example.net"), "Bcc kept: {text}");
        assert!(text.contains("after the dot"), "-oi: {text}");
        assert!(
            text.contains("Message-Id: <") && text.contains("Date: "),
            "{text}"
        );
    }

    // mail(1) (bsd-mailx runs `sendmail -i -t`), no From: the account's address is added.
    if have_mailx() {
        let rc = srv.dir.path().join("mailrc");
        std::fs::write(&rc, format!("set sendmail={}\n", link.display())).unwrap();
        let mut child = Command::new("/usr/bin/bsd-mailx")
            .args(["-s", &format!("mailx-{rt}"), "b@example.net"])
            .env("MAILRC", &rc)
            .env("RMOX_CONFIG", &cfg)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"from mail(1)\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // mail(1) may hand over in the background: wait for the entry.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let entry = loop {
            let q = queued(&cfg);
            if let Some(e) = q.into_iter().find(|(r, _, _)| r == "b@example.net") {
                break e;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mail(1) message not queued"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        assert!(entry.2.contains("From: <mjl@mox.example>"), "{}", entry.2);
        assert!(
            entry.2.contains(&format!("Subject: mailx-{rt}")),
            "{}",
            entry.2
        );
        assert_eq!(entry.1, "mjl@mox.example");
    }

    // A 3 MB message (the admin socket once took 1 MiB requests at most).
    let big = format!(
        "Subject: big-{rt}\n\n{}",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n".repeat(48_000)
    );
    let (code, err) = run(&link, &["big@example.net"], &big, &cfg);
    assert_eq!(code, 0, "{err}");
    let q = queued(&cfg);
    let e = q.iter().find(|(r, _, _)| r == "big@example.net").unwrap();
    assert!(e.2.len() > 3_000_000, "{}", e.2.len());

    // A sender that is not the account's: refused, nothing queued.
    let before = queued(&cfg).len();
    let (code, err) = run(
        &rmox_bin(),
        &[
            "sendmail",
            "-f",
            "someone@elsewhere.example",
            "c@example.net",
        ],
        "Subject: x\n\nbody\n",
        &cfg,
    );
    assert_eq!(code, 65, "{err}");
    assert!(err.contains("not an address of account mjl"), "{err}");
    assert_eq!(queued(&cfg).len(), before);

    // The server stopped: a temporary failure, said so.
    srv.stop_clean();
    let (code, err) = run(&link, &["d@example.net"], "Subject: x\n\nbody\n", &cfg);
    assert_eq!(code, 75, "{err}");
    assert!(err.contains("not running"), "{err}");
}

on_every_runtime!(sendmail_submits_through_the_server);
