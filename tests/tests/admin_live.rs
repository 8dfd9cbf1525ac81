//! Administration of a running server through the real binary (issue 16): every admin
//! command used to refuse while `rmox serve` ran ("stop the server first"); they now go
//! through the server's admin socket, and the same commands work on the stopped server's
//! data directory. Configuration reload (`rmox config reload`, SIGHUP) keeps open
//! connections and refuses a broken file, keeping the old configuration.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::process::Output;

use rmox_tests::*;

const SMTP: u16 = 2525;
const SUBMISSION: u16 = 2587;

fn config_text(ip: Ipv4Addr, extra_accounts: &str) -> String {
    // A port nobody listens on: what is released is not delivered during the test.
    let closed = std::net::TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!(
        r#"hostname = "mail.mox.example"
data_dir = "data"
resolver = ["zonefile:zone.txt"]

[[listener]]
name = "test"
ip = "{ip}"
smtp = {{ port = {SMTP} }}
submission = {{ port = {SUBMISSION} }}
no_require_starttls = true

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}
{extra_accounts}
[incoming]
checks = false

[queue]
smtp_port = {closed}
"#
    )
}

fn ok(out: &Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\nstdout: {text}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn submit(ip: Ipv4Addr, to: &str, subject: &str, password: &str) -> (i32, String) {
    py_send(&[
        "--host".into(),
        ip.to_string(),
        "--port".into(),
        SUBMISSION.to_string(),
        "--auth".into(),
        "PLAIN".into(),
        "--user".into(),
        "mjl@mox.example".into(),
        "--password".into(),
        password.into(),
        "--mail-from".into(),
        "mjl@mox.example".into(),
        "--to".into(),
        to.into(),
        "--subject".into(),
        subject.into(),
    ])
}

fn deliver(ip: Ipv4Addr, to: &str, subject: &str) -> (i32, String) {
    py_send(&[
        "--host".into(),
        ip.to_string(),
        "--port".into(),
        SMTP.to_string(),
        "--mail-from".into(),
        "someone@other.example".into(),
        "--to".into(),
        to.into(),
        "--subject".into(),
        subject.into(),
    ])
}

fn queue_json(cfg: &str) -> Vec<serde_json::Value> {
    let out = rmox(&["queue", "list", "--json", "--config", cfg], None);
    let text = ok(&out, "queue list --json");
    serde_json::from_str::<Vec<serde_json::Value>>(&text)
        .unwrap_or_else(|e| panic!("queue list --json is not a JSON array: {e}\n{text}"))
}

/// Every admin command against a running server, then the same on its stopped data
/// directory.
fn admin_commands_work_while_serving(rt: &str) {
    let dir = TempDir::new(&format!("admin-{rt}"));
    let ip = unique_ip();
    std::fs::write(dir.path().join("rmox.toml"), config_text(ip, "")).unwrap();
    std::fs::write(dir.path().join("zone.txt"), "").unwrap();
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let cfg = srv.config_path();
    let cfg = cfg.to_str().unwrap();

    // Accounts: the password is set through the server.
    let out = rmox(
        &["account", "setpassword", "mjl", "--config", cfg],
        Some("s3cret-pass\n"),
    );
    assert!(ok(&out, "setpassword").contains("password set for mjl"));
    // Hold everything, then submit: the message waits in the queue.
    let out = rmox(&["queue", "holdrule", "add", "--config", cfg], None);
    assert!(ok(&out, "holdrule add").contains("hold rule"));
    let (code, text) = submit(ip, "x@example.net", &format!("admin-{rt}"), "s3cret-pass");
    assert_eq!(code, 0, "{text}");
    let list = queue_json(cfg);
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_u64().unwrap().to_string();
    assert_eq!(
        list[0]["rcpt"]["hold"],
        serde_json::Value::Bool(true),
        "{list:?}"
    );
    let out = rmox(&["queue", "list", "--config", cfg], None);
    assert!(ok(&out, "queue list").contains("held"));
    let out = rmox(&["queue", "show", &id, "--config", cfg], None);
    assert!(ok(&out, "queue show").contains(&format!("Subject: admin-{rt}")));
    let out = rmox(
        &["queue", "holdrule", "list", "--json", "--config", cfg],
        None,
    );
    let rules: Vec<serde_json::Value> = serde_json::from_str(&ok(&out, "holdrule list")).unwrap();
    assert_eq!(rules.len(), 1);
    let rule = rules[0]["id"].as_u64().unwrap().to_string();
    // Kick a held entry: it says so and nothing happens.
    let out = rmox(&["queue", "kick", &id, "--config", cfg], None);
    assert!(ok(&out, "kick held").contains("held"));
    // Fail it: the DSN lands in the sender's mailbox (checked below with export).
    let out = rmox(&["queue", "fail", &id, "--config", cfg], None);
    assert!(ok(&out, "queue fail").contains("failed"));
    assert!(queue_json(cfg).is_empty());
    let out = rmox(&["queue", "retired", "list", "--config", cfg], None);
    assert!(ok(&out, "retired list").contains(&id));
    // Another message, dropped.
    let (code, text) = submit(ip, "y@example.net", &format!("drop-{rt}"), "s3cret-pass");
    assert_eq!(code, 0, "{text}");
    let id2 = queue_json(cfg)[0]["id"].as_u64().unwrap().to_string();
    let out = rmox(&["queue", "drop", &id2, "--config", cfg], None);
    assert!(ok(&out, "queue drop").contains("dropped"));
    assert!(queue_json(cfg).is_empty());
    let out = rmox(
        &["queue", "holdrule", "remove", &rule, "--config", cfg],
        None,
    );
    assert!(ok(&out, "holdrule remove").contains("removed"));
    // Suppression list.
    let out = rmox(
        &[
            "queue",
            "suppression",
            "add",
            "mjl",
            "no@example.net",
            "--config",
            cfg,
        ],
        None,
    );
    ok(&out, "suppression add");
    let out = rmox(
        &[
            "queue",
            "suppression",
            "list",
            "mjl",
            "--json",
            "--config",
            cfg,
        ],
        None,
    );
    let sup: Vec<serde_json::Value> = serde_json::from_str(&ok(&out, "suppression list")).unwrap();
    assert_eq!(sup.len(), 1, "{sup:?}");
    let out = rmox(
        &[
            "queue",
            "suppression",
            "remove",
            "mjl",
            "no@example.net",
            "--config",
            cfg,
        ],
        None,
    );
    ok(&out, "suppression remove");
    // TLS reports (none stored) and a backup.
    let out = rmox(&["tlsrpt", "list", "--json", "--config", cfg], None);
    assert_eq!(ok(&out, "tlsrpt list").trim(), "[]");
    let backup = srv.dir.path().join("backup");
    let out = rmox(&["backup", backup.to_str().unwrap(), "--config", cfg], None);
    assert!(ok(&out, "backup").contains("backup written"));
    // Logins disabled and enabled again, live.
    let out = rmox(
        &["account", "disable", "mjl", "on holiday", "--config", cfg],
        None,
    );
    assert!(ok(&out, "disable").contains("disabled"));
    let (code, text) = submit(ip, "z@example.net", "refused", "s3cret-pass");
    assert_ne!(code, 0, "a disabled account logged in: {text}");
    let out = rmox(&["account", "enable", "mjl", "--config", cfg], None);
    ok(&out, "enable");
    // Export while serving: the DSN of the failed message is there.
    let mbox = srv.dir.path().join("mjl.mbox");
    let out = rmox(
        &[
            "export",
            "mbox",
            "mjl",
            mbox.to_str().unwrap(),
            "--config",
            cfg,
        ],
        None,
    );
    assert!(ok(&out, "export").contains("exported"));
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(text.contains("Action: failed"), "{text}");

    // A quota set while serving applies at once; removed again, mail arrives.
    let out = rmox(&["account", "quota", "mjl", "1", "--config", cfg], None);
    assert!(ok(&out, "quota").contains("server: configuration reloaded"));
    let (code, _) = deliver(ip, "mjl@mox.example", "over-quota");
    assert_ne!(code, 0, "accepted over the quota");
    let out = rmox(&["account", "quota", "mjl", "0", "--config", cfg], None);
    ok(&out, "quota 0");
    let (code, text) = deliver(ip, "mjl@mox.example", "under-quota");
    assert_eq!(code, 0, "{text}");

    // The same commands on the stopped server's data directory, same JSON shape.
    srv.stop_clean();
    assert!(queue_json(cfg).is_empty());
    let out = rmox(
        &["queue", "retired", "list", "--json", "--config", cfg],
        None,
    );
    let retired: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&out, "retired offline")).unwrap();
    assert_eq!(retired.len(), 1, "{retired:?}");
    let out = rmox(&["config", "reload", "--config", cfg], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no server is running"));
}

/// Accounts added while the server runs receive mail at once (the configuration is
/// reloaded); a broken configuration is refused and the old one stays; an SMTP session open
/// before a reload finishes its transaction after it; SIGHUP reloads as well.
fn reload_keeps_connections_and_refuses_broken_files(rt: &str) {
    let dir = TempDir::new(&format!("reload-{rt}"));
    let ip = unique_ip();
    std::fs::write(dir.path().join("rmox.toml"), config_text(ip, "")).unwrap();
    std::fs::write(dir.path().join("zone.txt"), "").unwrap();
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let cfg_path = srv.config_path();
    let cfg = cfg_path.to_str().unwrap();
    let (code, _) = deliver(ip, "bob@mox.example", "before");
    assert_ne!(code, 0, "bob does not exist yet");
    // A session opened before the change.
    let mut open = srv.connect(SMTP);
    open.expect(220);
    open.expect_cmd("EHLO client.example", 250);
    // `account add` edits the file and the running server reloads it.
    let out = rmox(
        &["account", "add", "bob", "bob@mox.example", "--config", cfg],
        None,
    );
    let text = ok(&out, "account add");
    assert!(text.contains("server: configuration reloaded"), "{text}");
    let (code, text) = deliver(ip, "bob@mox.example", &format!("to-bob-{rt}"));
    assert_eq!(code, 0, "{text}");
    // The old session goes on, and sees the new account too.
    open.expect_cmd("MAIL FROM:<a@other.example>", 250);
    open.expect_cmd("RCPT TO:<bob@mox.example>", 250);
    open.expect_cmd("DATA", 354);
    open.send(b"Subject: open-session\r\n\r\nkept\r\n.\r\n");
    open.expect(250);
    open.shutdown();
    // A broken file is refused with its key; the old configuration serves on.
    let good = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        good.replace("[incoming]", "[incoming]\nbogus_key = 1"),
    )
    .unwrap();
    let out = rmox(&["config", "reload", "--config", cfg], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus_key"), "{err}");
    let (code, text) = deliver(ip, "bob@mox.example", "still-bob");
    assert_eq!(code, 0, "{text}");
    // SIGHUP with a good file adding carol.
    std::fs::write(
        &cfg_path,
        good.replace(
            "[incoming]",
            "[account.carol]\ndomain = \"mox.example\"\ndestinations = { \"carol@mox.example\" = {} }\n\n[incoming]",
        ),
    )
    .unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &srv.pid().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !srv.stderr().contains("configuration reloaded")
        || deliver(ip, "carol@mox.example", "c").0 != 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "carol not accepted after SIGHUP:\n{}",
            srv.stderr()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(srv.running());
    srv.stop_clean();
    let bob = srv.export_mbox("bob");
    assert_eq!(count_subject(&bob, &format!("to-bob-{rt}")), 1, "{bob}");
    assert_eq!(count_subject(&bob, "open-session"), 1, "{bob}");
}

on_every_runtime!(
    admin_commands_work_while_serving,
    reload_keeps_connections_and_refuses_broken_files
);
