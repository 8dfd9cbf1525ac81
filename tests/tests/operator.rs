//! What an operator runs into, through the real binary: a second server on the same
//! address, `config check` against `serve`, a relative data directory, file permissions,
//! SIGHUP, and localserve's `--ip` on an existing directory (defects of issue 15).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rmox_tests::*;

const SMTP: u16 = 2525;

/// A minimal serve config listening on `ip`, data in `data_dir` (relative to the config).
fn write_config(dir: &TempDir, ip: Ipv4Addr, data_dir: &str, extra: &str) {
    std::fs::write(
        dir.path().join("rmox.toml"),
        format!(
            r#"hostname = "mail.mox.example"
data_dir = "{data_dir}"

[[listener]]
name = "test"
ip = "{ip}"
smtp = {{ port = {SMTP} }}

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}

[incoming]
checks = false
{extra}
"#
        ),
    )
    .unwrap();
}

/// Runs `rmox ARGS`, killing it after `limit`: (exited by itself, stderr).
fn run_bounded(args: &[&str], limit: Duration) -> (bool, String) {
    let mut child = Command::new(rmox_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let exited = loop {
        if child.try_wait().unwrap().is_some() {
            break true;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    (exited, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Listeners set SO_REUSEPORT, so a second `rmox serve` on the same address started and took
/// part of the mail. It must fail with "address in use" and leave the first one serving.
fn second_server_on_same_address_fails(rt: &str) {
    let dir = TempDir::new(&format!("second-{rt}"));
    let ip = unique_ip();
    write_config(&dir, ip, "data", "");
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    // The second instance: the same address, its own data directory.
    let dir2 = TempDir::new(&format!("second2-{rt}"));
    write_config(&dir2, ip, "data", "");
    let cfg2 = dir2.path().join("rmox.toml");
    let (exited, err) = run_bounded(
        &["serve", "--config", cfg2.to_str().unwrap(), "--runtime", rt],
        Duration::from_secs(20),
    );
    assert!(
        exited,
        "a second server on {ip}:{SMTP} kept running:\n{err}"
    );
    assert!(
        err.contains("cannot listen on") && err.contains("already in use"),
        "{err}"
    );
    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.shutdown();
    srv.stop_clean();
}

/// SIGHUP killed `serve` without a log line. It reloads the configuration now (logged),
/// and the server keeps serving (`admin_live.rs` tests what a reload changes).
fn sighup_is_logged_and_ignored(rt: &str) {
    let dir = TempDir::new(&format!("hup-{rt}"));
    let ip = unique_ip();
    write_config(&dir, ip, "data", "");
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let pid = srv.pid();
    assert!(Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !srv.stderr().contains("configuration reloaded") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        srv.running(),
        "SIGHUP stopped the server:\n{}",
        srv.stderr()
    );
    assert!(
        srv.stderr().contains("configuration reloaded"),
        "{}",
        srv.stderr()
    );
    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.shutdown();
    srv.stop_clean();
}

/// Every stop left the database unclean: after SIGTERM (and kill -9) `rmox verifydata` said
/// "damaged" until a read-write open repaired it silently. A graceful stop now closes the
/// database; after kill -9 verifydata says it needs redb's ordinary recovery, checks a
/// recovered copy, and reports no damage.
fn verifydata_after_stops(rt: &str) {
    let dir = TempDir::new(&format!("verify-{rt}"));
    let ip = unique_ip();
    write_config(&dir, ip, "data", "");
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let data = srv.dir.path().join("data");
    let verify = |data: &std::path::Path| {
        let out = rmox(&["verifydata", data.to_str().unwrap()], None);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let deliver = |srv: &Server| {
        let mut c = srv.connect(SMTP);
        c.expect(220);
        c.expect_cmd("EHLO client.example", 250);
        c.transaction(
            "remote@example.org",
            &["mjl@mox.example"],
            "Subject: v\r\n\r\nbody\r\n",
        )
        .unwrap();
        c.shutdown();
    };
    deliver(&srv);
    srv.stop_clean();
    let (ok, out) = verify(&data);
    assert!(
        ok && !out.contains("not closed cleanly"),
        "after SIGTERM:\n{out}\n{}",
        srv.stderr()
    );
    srv.start();
    deliver(&srv);
    srv.kill_hard();
    let (ok, out) = verify(&data);
    assert!(ok, "after kill -9:\n{out}");
    assert!(out.contains("not closed cleanly"), "after kill -9:\n{out}");
    // The server recovers it and serves again; both messages are there.
    srv.start();
    srv.stop_clean();
    let mbox = srv.export_mbox("mjl");
    assert_eq!(mbox_messages(&mbox).len(), 2, "{mbox}");
}

/// A session whose effect answer never came waited forever (issue 14: pending effects need
/// a deadline). With a resolver that never answers and `checks_timeout_secs = 1`, MAIL FROM
/// is answered `451 4.3.0` after about a second, and the connection stays usable.
fn unanswered_checks_get_451(rt: &str) {
    let dir = TempDir::new(&format!("deadline-{rt}"));
    let ip = unique_ip();
    // A DNS server that reads queries and never answers.
    let dns = std::net::UdpSocket::bind((ip, 0)).unwrap();
    let dns_addr = dns.local_addr().unwrap();
    std::fs::write(
        dir.path().join("rmox.toml"),
        format!(
            r#"hostname = "mail.mox.example"
data_dir = "data"
resolver = ["{dns_addr}"]

[[listener]]
name = "test"
ip = "{ip}"
smtp = {{ port = {SMTP} }}

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}

[limits]
checks_timeout_secs = 1
"#
        ),
    )
    .unwrap();
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let mut c = srv.connect(SMTP);
    c.set_read_timeout(Duration::from_secs(30));
    c.expect(220);
    c.expect_cmd("EHLO client.example", 250);
    let r = c.expect_cmd("MAIL FROM:<someone@example.org>", 451);
    // The session's deadline, not the resolver's own give-up (6 s, a temporary DNS error).
    assert!(r.contains("4.3.0") && r.contains("timeout"), "{r}");
    // Still usable after the deadline.
    c.expect_cmd("NOOP", 250);
    c.shutdown();
    drop(dns);
    srv.stop_clean();
}

/// mail-parser panicked on some nested message/rfc822 multiparts with a bare LF, and the
/// server ran it on every message after DATA: any client could panic a session (found by the
/// message_structure fuzz target). The message is answered and the server keeps serving.
fn mail_parser_panic_input_is_answered(rt: &str) {
    let dir = TempDir::new(&format!("mpanic-{rt}"));
    let ip = unique_ip();
    write_config(&dir, ip, "data", "");
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.expect_cmd("EHLO client.example", 250);
    c.expect_cmd("MAIL FROM:<remote@example.org>", 250);
    c.expect_cmd("RCPT TO:<mjl@mox.example>", 250);
    c.expect_cmd("DATA", 354);
    c.send(b"X: y\r\nContent-Type: multipart/mxed; boundary=\"BOUND\"\r\n\r\n--BOUND\r\nContent-Type: message/rfc822\r\n\nContent-Type: message/rfc822\r\n64\r\n\r\n\r\n--BOUND--UN\r\n.\r\n");
    match c.reply() {
        ReplyOrClose::Reply(code, text) => assert!(code == 250 || code >= 500, "{code} {text}"),
        ReplyOrClose::Closed => panic!("connection dropped after DATA:\n{}", srv.stderr()),
    }
    c.expect_cmd("NOOP", 250);
    c.shutdown();
    for _ in 0..3 {
        let mut c = srv.connect(SMTP);
        c.expect(220);
        c.shutdown();
    }
    srv.stop_clean();
}

/// Issue 16: a transaction's outcome was spread over "message accepted", "refused" and
/// per-recipient lines (and an abandoned one left no line). Each transaction now ends with
/// exactly one `transaction` line: connection id, client IP, verdict, reason, sender,
/// recipients and the ones refused.
fn transactions_are_logged_one_line_each(rt: &str) {
    let dir = TempDir::new(&format!("txnlog-{rt}"));
    let ip = unique_ip();
    write_config(&dir, ip, "data", "");
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.expect_cmd("EHLO client.example", 250);
    c.expect_cmd("MAIL FROM:<remote@example.org>", 250);
    c.expect_cmd("RCPT TO:<mjl@mox.example>", 250);
    c.expect_cmd("RCPT TO:<x@elsewhere.example>", 550);
    c.expect_cmd("DATA", 354);
    c.send(b"Subject: hi\r\n\r\nhello\r\n.\r\n");
    match c.reply() {
        ReplyOrClose::Reply(code, text) => assert_eq!(code, 250, "{text}"),
        ReplyOrClose::Closed => panic!("closed after DATA:\n{}", srv.stderr()),
    }
    c.expect_cmd("MAIL FROM:<second@example.org>", 250);
    c.expect_cmd("RCPT TO:<mjl@mox.example>", 250);
    c.expect_cmd("RSET", 250);
    c.shutdown();
    srv.stop_clean();
    let log = srv.stderr();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(" transaction")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    for (l, want) in lines.iter().zip([
        &[
            "INFO",
            "cid=",
            "ip=127.0.0.1",
            "verdict=accepted",
            "reason=stored",
            "from=<remote@example.org>",
            "rcpts=<mjl@mox.example>",
            "refused=<x@elsewhere.example>=550",
            "auth=",
        ][..],
        &[
            "INFO",
            "verdict=abandoned",
            "reason=RSET",
            "from=<second@example.org>",
            "size=-",
        ][..],
    ]) {
        for w in want {
            assert!(l.contains(w), "{w:?} not in {l}\n{log}");
        }
    }
    assert!(!log.contains("message accepted"), "{log}");
}

/// The runtime's worker threads of the process `pid`: the distinct names `rmox-RUNTIME-N`
/// (threads a worker starts without a name of their own, such as glommio's blocking pool,
/// inherit its name).
fn worker_threads(pid: u32, rt: &str) -> usize {
    let prefix = format!("rmox-{rt}-");
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim().to_string())
        .filter(|comm| {
            comm.strip_prefix(&prefix)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// `threads` sets how many worker threads serve: with `threads = 3` the runtime runs three;
/// unset, tokio and smol run one per CPU and glommio one per two CPUs (at least one). The
/// count is read from the server's threads in /proc, not from its log.
fn threads_setting_starts_that_many_workers(rt: &str) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let default = if rt == "glommio" {
        cpus.div_ceil(2)
    } else {
        cpus
    };
    for (setting, want) in [("threads = 3\n", 3), ("", default)] {
        let dir = TempDir::new(&format!("threads-{rt}-{want}"));
        let ip = unique_ip();
        write_config(&dir, ip, "data", "");
        // A top-level key: before the first table.
        let path = dir.path().join("rmox.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{setting}{config}")).unwrap();
        let mut srv = Server::serve(rt, dir, ip, SMTP);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = worker_threads(srv.pid(), rt);
        while got != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            got = worker_threads(srv.pid(), rt);
        }
        assert_eq!(
            got,
            want,
            "{rt} with {setting:?} on {cpus} CPUs:\n{}",
            srv.stderr()
        );
        let mut c = srv.connect(SMTP);
        c.expect(220);
        c.shutdown();
        srv.stop_clean();
    }
}

rmox_tests::on_every_runtime!(
    transactions_are_logged_one_line_each,
    threads_setting_starts_that_many_workers,
    second_server_on_same_address_fails,
    mail_parser_panic_input_is_answered,
    unanswered_checks_get_451,
    verifydata_after_stops,
    sighup_is_logged_and_ignored,
);

/// `config check` passed configs that `serve` then refused. Each of these is refused by
/// both, with one line naming the file and key.
#[cfg(feature = "smol")]
#[test]
fn config_check_refuses_what_serve_refuses() {
    let ip = unique_ip();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "missing certificate",
            "[[listener]]\nname = \"x\"\nip = \"IP\"\nsmtp = { port = 2526 }\ntls = { cert_file = \"nope.pem\", key_file = \"nope.pem\" }\n".into(),
            "tls.cert_file",
        ),
        (
            "certificate given as key",
            "[[listener]]\nname = \"x\"\nip = \"IP\"\nsmtp = { port = 2526 }\ntls = { cert_file = \"cert.pem\", key_file = \"cert.pem\" }\n".into(),
            "listener[1].tls",
        ),
        (
            "missing DKIM key",
            "[domain.\"other.example\".dkim]\nselectors = { s1 = \"nokey.pem\" }\nsign = [\"s1\"]\n".into(),
            "dkim.selectors",
        ),
        (
            "port 0",
            "[[listener]]\nname = \"x\"\nip = \"IP\"\nsmtp = { port = 0 }\n".into(),
            "listener[1].smtp.port",
        ),
        (
            "duplicate port",
            "[[listener]]\nname = \"x\"\nip = \"IP\"\nsubmission = { port = 2525 }\nno_require_starttls = true\n".into(),
            "listener[1].submission.port",
        ),
        (
            "message size 0",
            "[limits]\nmax_message_size = 0\n".into(),
            "limits.max_message_size",
        ),
    ];
    for (what, extra, key) in cases {
        let dir = TempDir::new("check");
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), ck.cert.pem()).unwrap();
        write_config(&dir, ip, "data", &extra.replace("IP", &ip.to_string()));
        let cfg = dir.path().join("rmox.toml");
        let check = rmox(
            &["config", "check", "--config", cfg.to_str().unwrap()],
            None,
        );
        let err = String::from_utf8_lossy(&check.stderr).into_owned();
        assert!(!check.status.success(), "{what}: config check passed");
        assert!(err.contains(key), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        let (exited, serve_err) = run_bounded(
            &[
                "serve",
                "--config",
                cfg.to_str().unwrap(),
                "--runtime",
                "smol",
            ],
            Duration::from_secs(20),
        );
        assert!(exited, "{what}: serve kept running");
        assert!(serve_err.contains(key), "{what}: {serve_err}");
        assert!(
            !dir.path().join("data").exists(),
            "{what}: serve created its data before refusing the config"
        );
    }
}

/// `serve` with a relative, nested, missing data directory failed with an empty path
/// ("create directory : No such file or directory"). It creates it, private (0700), with
/// private files, and warns when a key file is readable by others.
#[cfg(feature = "smol")]
#[test]
fn serve_creates_private_data_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("datadir");
    let ip = unique_ip();
    let key = dir.path().join("dkim.pem");
    let gen = rmox(
        &[
            "dkim",
            "gened25519",
            "mox.example",
            "s1",
            key.to_str().unwrap(),
        ],
        None,
    );
    assert!(gen.status.success(), "{gen:?}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&key),
        0o600,
        "dkim gened25519 wrote a world-readable key"
    );
    // A key made readable by others on purpose: serve warns.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_config(
        &dir,
        ip,
        "nested/data",
        "[domain.\"mox.example\".dkim]\nselectors = { s1 = \"dkim.pem\" }\nsign = [\"s1\"]\n",
    );
    let mut srv = Server::serve("smol", dir, ip, SMTP);
    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.expect_cmd("EHLO client.example", 250);
    // Larger than rmox_storage::INLINE_BODY_MAX: the message gets a file of its own.
    let body = format!("Subject: x\r\n\r\n{}", "body line of text\r\n".repeat(2400));
    c.transaction("remote@example.org", &["mjl@mox.example"], &body)
        .unwrap();
    c.shutdown();
    srv.stop_clean();
    let data = srv.dir.path().join("nested/data");
    assert!(data.is_dir(), "{}", srv.stderr());
    assert_eq!(mode(&data), 0o700);
    let mut files = 0;
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "{}", p.display());
                stack.push(p);
            } else {
                assert_eq!(mode(&p) & 0o077, 0, "{} is readable by others", p.display());
                files += 1;
            }
        }
    }
    assert!(files >= 2, "database and one message file expected");
    assert!(
        srv.stderr().contains("readable by other users"),
        "{}",
        srv.stderr()
    );
}

/// `localserve --ip` on an existing directory was ignored while the banner printed the new
/// address: it now listens on the address given.
#[cfg(feature = "smol")]
#[test]
fn localserve_ip_on_existing_directory() {
    let mut srv = Server::localserve("smol");
    srv.stop_clean();
    // Same directory, another address.
    srv.ip = unique_ip();
    srv.start();
    let mut c = srv.connect(SMTP_PORT);
    c.expect(220);
    c.shutdown();
    srv.stop_clean();
}

/// Rejections were not logged at info level and auth failures carried no IP, so fail2ban
/// could not use them. Every refusal logs one line with the connection id, the client IP,
/// the reply and its reason; a failed login logs the IP.
#[cfg(feature = "smol")]
#[test]
fn refusals_are_logged_with_the_client_ip() {
    let dir = TempDir::new("refusals");
    let ip = unique_ip();
    write_config(&dir, ip, "data", "[limits]\nauth_failure_delay_secs = 0\n");
    // A submission port without TLS, for the login failure.
    let cfg = dir.path().join("rmox.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(
            &format!("smtp = {{ port = {SMTP} }}\n"),
            &format!("smtp = {{ port = {SMTP} }}\nsubmission = {{ port = 2587 }}\nno_require_starttls = true\n"),
        );
    std::fs::write(&cfg, text).unwrap();
    let mut srv = Server::serve("smol", dir, ip, SMTP);
    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.expect_cmd("EHLO client.example", 250);
    c.expect_cmd("RCPT TO:<mjl@mox.example>", 503);
    c.expect_cmd("MAIL FROM:<x@[192.0.2.1]>", 550);
    c.shutdown();
    let mut c = srv.connect(2587);
    c.expect(220);
    c.expect_cmd("EHLO client.example", 250);
    // "\0mjl@mox.example\0wrong" in base64.
    c.expect_cmd("AUTH PLAIN AG1qbEBtb3guZXhhbXBsZQB3cm9uZw==", 535);
    c.shutdown();
    srv.stop_clean();
    let log = srv.stderr();
    let lines: Vec<&str> = log.lines().collect();
    let has = |needles: &[&str]| lines.iter().any(|l| needles.iter().all(|n| l.contains(n)));
    // The test client connects from 127.0.0.1.
    let ip_field = "ip=127.0.0.1".to_string();
    assert!(
        has(&["INFO", "refused", &ip_field, "code=503", "cid="]),
        "{log}"
    );
    assert!(
        has(&[
            "INFO",
            "refused",
            &ip_field,
            "code=550",
            "domain name required"
        ]),
        "{log}"
    );
    assert!(
        has(&[
            "INFO",
            "authentication failed",
            &ip_field,
            "mjl@mox.example"
        ]),
        "{log}"
    );
}
