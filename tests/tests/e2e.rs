//! End-to-end tests of the `rmox` binary against real clients, one suite instantiated per
//! runtime (tokio, smol, glommio). Each test starts its own server on its own loopback
//! address, so tests and runtimes run in parallel without colliding.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rmox_tests::*;

fn s(x: impl ToString) -> String {
    x.to_string()
}

/// smtplib through port 1025 (plain), 1587 with STARTTLS and each of AUTH PLAIN, LOGIN and
/// CRAM-MD5 (forced), and 1465 with implicit TLS; every message is then found with
/// `rmox export mbox`.
fn smtplib_all_ports(rt: &str) {
    let mut srv = Server::localserve(rt);
    let ip = s(srv.ip);
    let mut sent = Vec::new();
    let runs: Vec<(u16, &str, &str)> = vec![
        (SMTP_PORT, "plain", "none"),
        (SUBMISSION_PORT, "starttls", "PLAIN"),
        (SUBMISSION_PORT, "starttls", "LOGIN"),
        (SUBMISSION_PORT, "starttls", "CRAM-MD5"),
        (SUBMISSIONS_PORT, "tls", "PLAIN"),
    ];
    for (port, mode, auth) in runs {
        let subj = subject(&format!("smtplib-{port}-{mode}-{auth}"), rt);
        let mut args = vec![
            s("--host"),
            ip.clone(),
            s("--port"),
            s(port),
            s("--mode"),
            s(mode),
            s("--auth"),
            s(auth),
            s("--subject"),
            subj.clone(),
        ];
        if auth == "none" {
            args.extend([
                s("--mail-from"),
                s("remote@example.org"),
                s("--to"),
                s("someone@localhost"),
            ]);
        } else {
            args.extend([
                s("--user"),
                s("rmox@localhost"),
                s("--password"),
                s("rmoxrmox"),
                s("--mail-from"),
                s("rmox@localhost"),
                s("--to"),
                s("friend@example.com"),
            ]);
        }
        let (code, out) = py_send(&args);
        assert_eq!(code, 0, "smtplib port {port} {mode} {auth}: {out}");
        assert!(out.contains("SENT"), "{out}");
        sent.push(subj);
    }
    // A wrong password is refused with 535 over the same client.
    let (code, out) = py_send(&[
        s("--host"),
        ip.clone(),
        s("--port"),
        s(SUBMISSION_PORT),
        s("--mode"),
        s("starttls"),
        s("--auth"),
        s("PLAIN"),
        s("--user"),
        s("rmox@localhost"),
        s("--password"),
        s("wrongwrong"),
        s("--mail-from"),
        s("rmox@localhost"),
        s("--to"),
        s("friend@example.com"),
        s("--subject"),
        subject("badpass", rt),
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("SMTPERR 535"), "{out}");

    srv.stop_clean();
    let mbox = srv.export_mbox("rmox");
    for subj in &sent {
        assert_eq!(
            count_subject(&mbox, subj),
            1,
            "message {subj:?} not stored exactly once; mbox:\n{mbox}"
        );
    }
    assert_eq!(
        mbox_messages(&mbox).len(),
        sent.len(),
        "unexpected extra messages; mbox:\n{mbox}"
    );
}

/// swaks: AUTH (PLAIN, LOGIN, CRAM-MD5) over STARTTLS and implicit TLS, and pipelined
/// transactions on port 25 and with AUTH.
fn swaks_runs(rt: &str) {
    if !have_swaks() {
        return;
    }
    let mut srv = Server::localserve(rt);
    let ip = s(srv.ip);
    let mut sent = Vec::new();
    let auths: Vec<(u16, &str, Vec<&str>)> = vec![
        (SUBMISSION_PORT, "PLAIN", vec!["--tls"]),
        (SUBMISSION_PORT, "LOGIN", vec!["--tls"]),
        (SUBMISSION_PORT, "CRAM-MD5", vec!["--tls"]),
        (SUBMISSIONS_PORT, "PLAIN", vec!["--tlsc"]),
        (SUBMISSION_PORT, "PLAIN", vec!["--tls", "--pipeline"]),
    ];
    for (port, mech, extra) in auths {
        let subj = subject(&format!("swaks-{port}-{mech}-{}", extra.join("")), rt);
        let mut args = vec![
            s("--server"),
            ip.clone(),
            s("--port"),
            s(port),
            s("--auth"),
            s(mech),
            s("--auth-user"),
            s("rmox@localhost"),
            s("--auth-password"),
            s("rmoxrmox"),
            s("--from"),
            s("rmox@localhost"),
            s("--to"),
            s("friend@example.com"),
            s("--header"),
            format!("Subject: {subj}"),
        ];
        args.extend(extra.iter().map(s));
        let (code, out) = swaks(&args);
        assert_eq!(code, 0, "swaks {port} {mech} {extra:?}:\n{out}");
        sent.push(subj);
    }
    // Pipelining on port 25 with two recipients.
    let subj = subject("swaks-pipeline-25", rt);
    let (code, out) = swaks(&[
        s("--server"),
        ip.clone(),
        s("--port"),
        s(SMTP_PORT),
        s("--pipeline"),
        s("--from"),
        s("remote@example.org"),
        s("--to"),
        s("a@localhost,b@localhost"),
        s("--header"),
        format!("Subject: {subj}"),
    ]);
    assert_eq!(code, 0, "swaks pipeline:\n{out}");
    assert!(
        out.contains("PIPELINING"),
        "server did not offer PIPELINING:\n{out}"
    );
    sent.push(subj);
    // A wrong password fails the swaks run.
    let (code, out) = swaks(&[
        s("--server"),
        ip.clone(),
        s("--port"),
        s(SUBMISSION_PORT),
        s("--tls"),
        s("--auth"),
        s("PLAIN"),
        s("--auth-user"),
        s("rmox@localhost"),
        s("--auth-password"),
        s("nottheone"),
        s("--from"),
        s("rmox@localhost"),
        s("--to"),
        s("friend@example.com"),
    ]);
    assert_ne!(code, 0, "swaks with a wrong password succeeded:\n{out}");
    assert!(out.contains("535"), "{out}");

    srv.stop_clean();
    let mbox = srv.export_mbox("rmox");
    for subj in &sent {
        assert_eq!(
            count_subject(&mbox, subj),
            1,
            "message {subj:?} not stored exactly once; mbox:\n{mbox}"
        );
    }
}

/// Opens a connection and reads the 220 greeting.
fn greeted(srv: &Server, port: u16) -> Conn {
    let mut c = srv.connect(port);
    c.expect(220);
    c
}

/// Bad input over real sockets: non-SMTP first line, overlong line, smuggling, a client that
/// disconnects mid-DATA. Nothing is stored for the bad transactions; a control message is.
fn bad_input(rt: &str) {
    let mut srv = Server::localserve(rt);

    // Not SMTP: 500 5.5.2 and closed.
    let mut c = greeted(&srv, SMTP_PORT);
    let t = match c.cmd("GET / HTTP/1.0") {
        ReplyOrClose::Reply(500, t) => t,
        other => panic!("non-SMTP first line: {other:?}"),
    };
    assert!(t.starts_with("500 5.5.2 "), "{t}");
    c.expect_closed();

    // Overlong line: 500 and closed.
    let mut c = greeted(&srv, SMTP_PORT);
    c.expect_closed_after_long_line();

    // Smuggling: "\n.\n" inside DATA, then the real end. 500 5.5.2 naming smuggling, and
    // neither the outer nor the smuggled message stored.
    let smug = subject("smuggling-outer", rt);
    let inner = subject("smuggling-inner", rt);
    let mut c = greeted(&srv, SMTP_PORT);
    c.expect_cmd("EHLO e2e.example", 250);
    c.expect_cmd("MAIL FROM:<remote@example.org>", 250);
    c.expect_cmd("RCPT TO:<rmox@localhost>", 250);
    c.expect_cmd("DATA", 354);
    c.send(
        format!(
            "From: <remote@example.org>\r\nSubject: {smug}\r\n\r\nbody\n.\nMAIL FROM:<evil@example.org>\r\nRCPT TO:<rmox@localhost>\r\nDATA\r\nFrom: <evil@example.org>\r\nSubject: {inner}\r\n\r\nsmuggled\r\n.\r\n"
        )
        .as_bytes(),
    );
    let t = match c.reply() {
        ReplyOrClose::Reply(500, t) => t,
        other => panic!("smuggling: expected 500, got {other:?}"),
    };
    assert!(
        t.starts_with("500 5.5.2 ") && t.contains("smuggling"),
        "{t}"
    );
    // The session goes on after the refusal.
    c.expect_cmd("RSET", 250);
    c.expect_cmd("QUIT", 221);

    // Disconnect in the middle of DATA.
    let cut = subject("cut-mid-data", rt);
    let mut c = greeted(&srv, SMTP_PORT);
    c.expect_cmd("EHLO e2e.example", 250);
    c.expect_cmd("MAIL FROM:<remote@example.org>", 250);
    c.expect_cmd("RCPT TO:<rmox@localhost>", 250);
    c.expect_cmd("DATA", 354);
    c.send(
        format!("From: <remote@example.org>\r\nSubject: {cut}\r\n\r\nhalf a message\r\n")
            .as_bytes(),
    );
    c.shutdown();

    // A control message on a fresh connection after all that.
    let ok = subject("control", rt);
    let mut c = greeted(&srv, SMTP_PORT);
    c.expect_cmd("EHLO e2e.example", 250);
    c.expect_cmd("MAIL FROM:<remote@example.org>", 250);
    c.expect_cmd("RCPT TO:<rmox@localhost>", 250);
    c.expect_cmd("DATA", 354);
    c.send(format!("From: <remote@example.org>\r\nSubject: {ok}\r\n\r\nfine\r\n.\r\n").as_bytes());
    c.expect(250);
    c.expect_cmd("QUIT", 221);
    // Give the server a moment to see the cut connection's EOF before stopping.
    std::thread::sleep(Duration::from_millis(200));

    srv.stop_clean();
    let mbox = srv.export_mbox("rmox");
    assert_eq!(
        count_subject(&mbox, &ok),
        1,
        "control message missing; mbox:\n{mbox}"
    );
    for bad in [&smug, &inner, &cut] {
        assert_eq!(
            count_subject(&mbox, bad),
            0,
            "{bad:?} was stored; mbox:\n{mbox}"
        );
    }
    assert!(
        !mbox.contains("evil@example.org"),
        "smuggled transaction stored; mbox:\n{mbox}"
    );
    assert_eq!(mbox_messages(&mbox).len(), 1, "mbox:\n{mbox}");
}

/// A client that says nothing gets 421 after `command_timeout_secs` (set to 2 in the config
/// written by the first run).
fn slow_client(rt: &str) {
    let mut srv = Server::localserve(rt);
    srv.stop_clean();
    let cfg = srv.config_path();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        !text.contains("[limits]"),
        "localserve config already has [limits]:\n{text}"
    );
    text.push_str("\n[limits]\ncommand_timeout_secs = 2\n");
    std::fs::write(&cfg, text).unwrap();
    srv.start();

    let mut c = greeted(&srv, SMTP_PORT);
    c.set_read_timeout(Duration::from_secs(10));
    let start = Instant::now();
    let t = match c.reply() {
        ReplyOrClose::Reply(421, t) => t,
        other => panic!("idle client: expected 421, got {other:?}"),
    };
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "421 after {took:?}: {t}"
    );
    c.expect_closed();

    // A client that goes quiet in the middle of a command line gets the same, counted from
    // its last command (a timer set at the greeting would fire 1 s after the NOOP).
    let mut c = greeted(&srv, SMTP_PORT);
    c.set_read_timeout(Duration::from_secs(10));
    c.expect_cmd("EHLO e2e.example", 250);
    std::thread::sleep(Duration::from_secs(1));
    c.expect_cmd("NOOP", 250);
    let start = Instant::now();
    c.send(b"MAIL FROM:<slow@exa");
    c.expect(421);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "421 {took:?} after the last command"
    );
    srv.stop_clean();
}

/// SIGTERM with a client connected but idle: it gets 421 and the server exits cleanly.
fn graceful_shutdown(rt: &str) {
    let mut srv = Server::localserve(rt);
    let mut c = greeted(&srv, SMTP_PORT);
    c.expect_cmd("EHLO e2e.example", 250);
    let (st, graceful) = srv.stop();
    assert!(graceful && st.success(), "exit {st}, graceful {graceful}");
    match c.reply() {
        ReplyOrClose::Reply(421, _) | ReplyOrClose::Closed => {}
        other => panic!("idle client at shutdown: {other:?}"),
    }
}

/// `rmox backup` while the server runs goes through the control socket, and the copy
/// verifies and holds the messages acknowledged before it.
fn backup_while_running(rt: &str) {
    let srv = Server::localserve(rt);
    let mut c = greeted(&srv, SMTP_PORT);
    c.expect_cmd("EHLO e2e.example", 250);
    for i in 0..3 {
        let subj = format!("backup {rt} {i}");
        c.transaction(
            "a@example.org",
            &["rmox@localhost"],
            &format!("Subject: {subj}\r\n\r\nbody\r\n"),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
    }
    let dest = TempDir::new("backup");
    let target = dest.path().join("copy");
    let cfg = srv.config_path();
    let out = rmox(
        &[
            "backup",
            target.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "backup failed: {text}");
    assert!(text.contains("3 messages"), "{text}");
    let out = rmox(&["verifydata", target.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "verifydata: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// localserve's special local parts: failures at MAIL, RCPT and DATA as mox localserve does.
/// A `timeout` recipient's reply waits (3 s) while another session goes on.
fn localserve_special_localparts(rt: &str) {
    let mut srv = Server::localserve(rt);
    let mut slow = greeted(&srv, SMTP_PORT);
    slow.expect_cmd("EHLO slow.example", 250);
    slow.expect_cmd("MAIL FROM:<remote@example.org>", 250);
    slow.send(b"RCPT TO:<rcpttotimeout@localhost>\r\n");
    let mut c = greeted(&srv, SMTP_PORT);
    c.expect_cmd("EHLO e2e.example", 250);
    let cases: [(&str, &str, &str, u16); 5] = [
        ("mailfrom550@example.org", "rmox@localhost", "mail", 550),
        (
            "mailfromtemperror@example.org",
            "rmox@localhost",
            "mail",
            451,
        ),
        (
            "remote@example.org",
            "rcpttopermerror@localhost",
            "rcpt",
            550,
        ),
        ("remote@example.org", "x-temperror@localhost", "data", 451),
        ("remote@example.org", "x-552@localhost", "data", 552),
    ];
    for (from, to, stage, code) in cases {
        let m = format!("From: <{from}>\nSubject: {}\n\nx\n", subject("special", rt));
        match c.transaction(from, &[to], &m) {
            Err((s, got, _)) if s == stage && got == code => {}
            other => panic!("{from} -> {to}: expected {code} at {stage}, got {other:?}"),
        }
        let _ = c.cmd("RSET");
    }
    let ok = subject("special-ok", rt);
    c.transaction(
        "remote@example.org",
        &["anyone@example.net"],
        &format!("From: <remote@example.org>\nSubject: {ok}\n\nx\n"),
    )
    .unwrap();
    c.expect_cmd("QUIT", 221);
    match slow.reply() {
        ReplyOrClose::Reply(451, t) if t.contains("4.4.2") && t.contains("timing out") => {}
        other => panic!("rcpttotimeout: {other:?}"),
    }
    slow.expect_cmd("QUIT", 221);
    srv.stop_clean();
    let mbox = srv.export_mbox("rmox");
    assert_eq!(count_subject(&mbox, &ok), 1, "mbox:\n{mbox}");
    assert_eq!(
        mbox_messages(&mbox).len(),
        1,
        "a failed special transaction was stored; mbox:\n{mbox}"
    );
}

/// SIGTERM during DATA: the open transaction finishes (250, stored), the next command gets
/// 421, and the server exits cleanly.
fn shutdown_mid_transaction(rt: &str) {
    let mut srv = Server::localserve(rt);
    let subj = subject("shutdown-mid-data", rt);
    let mut c = greeted(&srv, SMTP_PORT);
    c.expect_cmd("EHLO e2e.example", 250);
    c.expect_cmd("MAIL FROM:<remote@example.org>", 250);
    c.expect_cmd("RCPT TO:<rmox@localhost>", 250);
    c.expect_cmd("DATA", 354);
    c.send(
        format!("From: <remote@example.org>\r\nSubject: {subj}\r\n\r\nfirst half\r\n").as_bytes(),
    );
    srv.signal_term();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        srv.running(),
        "server exited with a transaction open; stderr:\n{}",
        srv.stderr()
    );
    c.send(b"second half\r\n.\r\n");
    c.expect(250);
    match c.cmd("NOOP") {
        ReplyOrClose::Reply(421, _) | ReplyOrClose::Closed => {}
        other => panic!("command after shutdown: {other:?}"),
    }
    srv.stop_clean();
    let mbox = srv.export_mbox("rmox");
    assert_eq!(count_subject(&mbox, &subj), 1, "mbox:\n{mbox}");
}

/// Many clients at once, on every port kind; every message is stored exactly once.
fn concurrent_clients(rt: &str) {
    let mut srv = Server::localserve(rt);
    let subjects: Vec<Vec<String>> = (0..8)
        .map(|t| {
            (0..4)
                .map(|i| subject(&format!("conc-{t}-{i}"), rt))
                .collect()
        })
        .collect();
    std::thread::scope(|scope| {
        for subs in &subjects {
            let srv = &srv;
            scope.spawn(move || {
                let mut c = greeted(srv, SMTP_PORT);
                c.expect_cmd("EHLO e2e.example", 250);
                for s in subs {
                    let m = format!(
                        "From: <remote@example.org>\nSubject: {s}\n\n{}\n",
                        "line of text ".repeat(200)
                    );
                    c.transaction("remote@example.org", &["rmox@localhost"], &m)
                        .unwrap_or_else(|e| panic!("{s}: {e:?}"));
                }
                c.expect_cmd("QUIT", 221);
            });
        }
    });
    srv.stop_clean();
    let mbox = srv.export_mbox("rmox");
    for s in subjects.iter().flatten() {
        assert_eq!(count_subject(&mbox, s), 1, "{s:?}");
    }
    assert_eq!(mbox_messages(&mbox).len(), 32);
}

/// A 3 MB message over implicit TLS and over STARTTLS arrives intact.
fn large_message_tls(rt: &str) {
    let mut srv = Server::localserve(rt);
    let ip = s(srv.ip);
    let mut sent = Vec::new();
    for (port, mode) in [(SUBMISSIONS_PORT, "tls"), (SUBMISSION_PORT, "starttls")] {
        let subj = subject(&format!("large-{mode}"), rt);
        let (code, out) = py_send(&[
            s("--host"),
            ip.clone(),
            s("--port"),
            s(port),
            s("--mode"),
            s(mode),
            s("--auth"),
            s("PLAIN"),
            s("--user"),
            s("rmox@localhost"),
            s("--password"),
            s("rmoxrmox"),
            s("--mail-from"),
            s("rmox@localhost"),
            s("--to"),
            s("friend@example.com"),
            s("--subject"),
            subj.clone(),
            s("--body-repeat"),
            s("40000"),
        ]);
        assert_eq!(code, 0, "{out}");
        sent.push(subj);
    }
    srv.stop_clean();
    let mbox = srv.export_mbox("rmox");
    let msgs = mbox_messages(&mbox);
    assert_eq!(msgs.len(), 2);
    // The queue delivers the two back in either order (regression: zipping with the send
    // order failed now and then).
    for subj in &sent {
        let m = msgs
            .iter()
            .find(|m| m.contains(subj.as_str()))
            .unwrap_or_else(|| panic!("{subj:?} not found"));
        let lines = m
            .lines()
            .filter(|l| *l == "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .!")
            .count();
        assert_eq!(lines, 40000, "body lines of {subj:?}");
    }
}

/// `rmox export mbox` converted messages with a lossy UTF-8 conversion, so a Latin-1 message
/// came out with U+FFFD in place of its 8-bit bytes. The export now carries the received bytes.
#[cfg(feature = "smol")]
#[test]
fn export_mbox_keeps_8bit_bytes() {
    let mut srv = Server::localserve("smol");
    let mut c = greeted(&srv, SMTP_PORT);
    c.expect_cmd("EHLO client.example", 250);
    c.expect_cmd("MAIL FROM:<remote@example.org> BODY=8BITMIME", 250);
    c.expect_cmd("RCPT TO:<someone@localhost>", 250);
    c.expect_cmd("DATA", 354);
    c.send(b"Subject: latin1\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\ncaf\xe9 \xff\xfe\r\nFrom here\r\n.\r\n");
    c.expect(250);
    c.shutdown();
    srv.stop_clean();
    let dest = srv.dir.path().join("latin1.mbox");
    let out = rmox(
        &[
            "export",
            "mbox",
            "rmox",
            dest.to_str().unwrap(),
            "--config",
            srv.config_path().to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let mbox = std::fs::read(&dest).unwrap();
    let want: &[u8] = b"\r\n\r\ncaf\xe9 \xff\xfe\r\n>From here\r\n";
    assert!(
        mbox.windows(want.len()).any(|w| w == want),
        "8-bit body not exported byte for byte: {}",
        String::from_utf8_lossy(&mbox)
    );
}

/// Submission and message rules through real clients: localserve's submission port takes
/// AUTH and MAIL without STARTTLS (as mox localserve) but MAIL FROM and From must be the
/// account's (as serve); port 25 refuses an IP-literal MAIL FROM, a mail loop, an
/// unparsable message, and answers STARTTLS with pipelined data before closing.
/// Regression: localserve accepted any sender on submission.
fn submission_and_message_rules(rt: &str) {
    let mut srv = Server::localserve(rt);
    let ip = s(srv.ip);
    let send = |mode: &str, from: &str, header: &str, subj: &str| {
        py_send(&[
            s("--host"),
            ip.clone(),
            s("--port"),
            s(SUBMISSION_PORT),
            s("--mode"),
            s(mode),
            s("--auth"),
            s("PLAIN"),
            s("--user"),
            s("rmox@localhost"),
            s("--password"),
            s("rmoxrmox"),
            s("--mail-from"),
            s(from),
            s("--from-header"),
            s(header),
            s("--to"),
            s("friend@example.com"),
            s("--subject"),
            s(subj),
        ])
    };
    let ok = subject("submission-plain", rt);
    let (code, out) = send("plain", "rmox@localhost", "rmox@localhost", &ok);
    assert_eq!(code, 0, "plain submission on localserve: {out}");
    let (code, out) = send(
        "starttls",
        "someone@example.com",
        "someone@example.com",
        &subject("submission-foreign", rt),
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("SMTPERR 550"), "{out}");
    assert!(out.contains("must match authenticated user"), "{out}");
    let (code, out) = send(
        "starttls",
        "rmox@localhost",
        "someone@example.com",
        &subject("submission-foreign-from", rt),
    );
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("SMTPERR 550"), "{out}");

    let mut c = greeted(&srv, SMTP_PORT);
    c.expect_cmd("EHLO e2e.example", 250);
    let t = c.expect_cmd("MAIL FROM:<x@[192.0.2.1]>", 550);
    assert!(t.starts_with("550 5.7.0 domain name required"), "{t}");
    let mut looped = String::new();
    for _ in 0..101 {
        looped.push_str("Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\n");
    }
    looped.push_str("From: <remote@example.org>\nSubject: loop\n\nx\n");
    match c.transaction("remote@example.org", &["rmox@localhost"], &looped) {
        Err(("data", 550, t)) => assert!(t.contains("5.4.6"), "{t}"),
        other => panic!("loop: {other:?}"),
    }
    let broken = "From: <remote@example.org>\nthis is no header\n\nx\n";
    match c.transaction("remote@example.org", &["rmox@localhost"], broken) {
        Err(("data", 554, t)) => assert!(t.contains("5.6.0 malformed message"), "{t}"),
        other => panic!("malformed: {other:?}"),
    }
    c.send(b"STARTTLS\r\nNOOP\r\n");
    match c.reply() {
        ReplyOrClose::Reply(500, t) => assert!(t.contains("pipelined after STARTTLS"), "{t}"),
        other => panic!("pipelined STARTTLS: {other:?}"),
    }
    c.expect_closed();

    srv.stop_clean();
    let mbox = srv.export_mbox("rmox");
    assert_eq!(count_subject(&mbox, &ok), 1, "mbox:\n{mbox}");
    assert_eq!(mbox_messages(&mbox).len(), 1, "mbox:\n{mbox}");
}

trait ConnExt {
    fn expect_closed_after_long_line(&mut self);
}

impl ConnExt for Conn {
    fn expect_closed_after_long_line(&mut self) {
        let mut line = b"EHLO ".to_vec();
        line.extend(std::iter::repeat_n(b'a', 20_000));
        line.extend_from_slice(b"\r\n");
        self.send(&line);
        let t = match self.reply() {
            ReplyOrClose::Reply(500, t) => t,
            other => panic!("overlong line: expected 500, got {other:?}"),
        };
        assert!(t.starts_with("500 "), "{t}");
        self.expect_closed();
    }
}

rmox_tests::on_every_runtime!(
    smtplib_all_ports,
    swaks_runs,
    bad_input,
    slow_client,
    graceful_shutdown,
    localserve_special_localparts,
    shutdown_mid_transaction,
    concurrent_clients,
    large_message_tls,
    backup_while_running,
    submission_and_message_rules,
);
