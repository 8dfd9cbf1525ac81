//! mox's seed scenarios (TestCatchall, TestPostmaster, TestEmptylocalpart, TestQuota, the
//! DNS-free parts of TestDelivery, TestLimitOutgoing and a login-disabled account) through
//! the `rmox serve` binary with a written config file, on each runtime. The same scenarios
//! are tested in memory, in more detail, in src/world.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;

use rmox_tests::*;

const SMTP: u16 = 2025;
const SUBMISSION: u16 = 2587;

fn config(ip: Ipv4Addr) -> String {
    format!(
        r#"hostname = "host.mox.example"
data_dir = "data"

[[listener]]
name = "test"
ip = "{ip}"
smtp = {{ port = {SMTP} }}
submission = {{ port = {SUBMISSION} }}
no_require_starttls = true

[domain."mox.example"]
localpart_catchall_separator = "+"
[domain."other.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}}, "\"\"@mox.example" = {{ mailbox = "Empty" }} }}
max_outgoing_messages_per_day = 4
max_first_time_recipients_per_day = 2

[account.catchall]
domain = "mox.example"
destinations = {{ "@mox.example" = {{}} }}

[account.known]
domain = "other.example"
destinations = {{ "known@other.example" = {{}} }}

[account.full]
domain = "other.example"
destinations = {{ "full@other.example" = {{}} }}
quota_message_size = 1

[account.off]
domain = "other.example"
destinations = {{ "off@other.example" = {{}} }}
login_disabled = "account suspended for the e2e test"

[postmaster]
account = "mjl"
mailbox = "Postmaster"

[limits]
auth_failure_delay_secs = 0
unknown_recipient_delay_secs = 0

# The scenarios are the parts without DNS.
[incoming]
checks = false
"#
    )
}

fn msg(from: &str, to: &str, subj: &str) -> String {
    format!(
        "From: <{from}>\nTo: <{to}>\nSubject: {subj}\nMessage-Id: <{}@e2e.example>\n\ntest email\n",
        subj.replace(' ', ".")
    )
}

type Refusal = (&'static str, u16, String);

fn deliver(srv: &Server, from: &str, to: &str, subj: &str) -> Result<(), Refusal> {
    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.expect_cmd("EHLO remote.example", 250);
    let r = c.transaction(from, &[to], &msg(from, to, subj));
    let _ = c.cmd("QUIT");
    r
}

fn submit(
    srv: &Server,
    user: &str,
    pass: &str,
    from: &str,
    to: &str,
    subj: &str,
) -> Result<(), Refusal> {
    let mut c = srv.connect(SUBMISSION);
    c.expect(220);
    c.expect_cmd("EHLO client.example", 250);
    let ir = rmox_core::codec::base64(format!("\0{user}\0{pass}").as_bytes());
    match c.cmd(&format!("AUTH PLAIN {ir}")) {
        ReplyOrClose::Reply(235, _) => {}
        ReplyOrClose::Reply(code, t) => return Err(("auth", code, t)),
        ReplyOrClose::Closed => return Err(("auth", 0, "closed".into())),
    }
    let r = c.transaction(from, &[to], &msg(from, to, subj));
    let _ = c.cmd("QUIT");
    r
}

#[track_caller]
fn refused(r: Result<(), Refusal>, stage: &str, code: u16, enhanced: &str) -> String {
    match r {
        Err((s, c, t))
            if s == stage && c == code && t.starts_with(&format!("{code} {enhanced}")) =>
        {
            t
        }
        other => panic!("expected {code} {enhanced} at {stage}, got {other:?}"),
    }
}

fn seed_scenarios(rt: &str) {
    let dir = TempDir::new(&format!("seeds-{rt}"));
    let ip = unique_ip();
    let cfg = dir.path().join("rmox.toml");
    std::fs::write(&cfg, config(ip)).unwrap();
    let cfgs = cfg.to_str().unwrap();
    let out = rmox(&["config", "check", "--config", cfgs], None);
    assert!(
        out.status.success(),
        "config check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for account in ["mjl", "off"] {
        let out = rmox(
            &["account", "setpassword", account, "--config", cfgs],
            Some("testtest\n"),
        );
        assert!(
            out.status.success(),
            "setpassword {account}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let sub = |what: &str| subject(&format!("seed-{what}"), rt);
    let mut to_mjl = Vec::new();
    let mut to_catchall = Vec::new();

    // TestCatchall.
    for rcpt in [
        "mjl@mox.example",
        "mjl+test@mox.example",
        "MJL+TEST@mox.example",
    ] {
        let s = sub(&format!("catchall-{rcpt}"));
        deliver(&srv, "mjl@other.example", rcpt, &s).unwrap_or_else(|e| panic!("{rcpt}: {e:?}"));
        to_mjl.push(s);
    }
    let s = sub("catchall-unknown");
    deliver(&srv, "mjl@other.example", "unknown@mox.example", &s).unwrap();
    to_catchall.push(s);

    // TestPostmaster.
    for rcpt in [
        "postmaster",
        "postmaster@host.mox.example",
        "postmaster@mox.example",
    ] {
        let s = sub(&format!("postmaster-{rcpt}"));
        deliver(&srv, "mjl@other.example", rcpt, &s).unwrap_or_else(|e| panic!("{rcpt}: {e:?}"));
        to_mjl.push(s);
    }
    refused(
        deliver(
            &srv,
            "mjl@other.example",
            "postmaster@unknown.example",
            &sub("pm-unknown"),
        ),
        "rcpt",
        550,
        "5.1.1",
    );

    // TestEmptylocalpart.
    let s = sub("emptylocalpart");
    deliver(&srv, "\"\"@other.example", "\"\"@mox.example", &s).unwrap();
    to_mjl.push(s);

    // TestDelivery without DNS: IP literal, unknown domain at RCPT; unknown user after DATA.
    refused(
        deliver(&srv, "remote@example.org", "mjl@[127.0.0.10]", &sub("ip")),
        "rcpt",
        550,
        "",
    );
    refused(
        deliver(&srv, "remote@example.org", "mjl@test.example", &sub("dom")),
        "rcpt",
        550,
        "5.1.1",
    );
    refused(
        deliver(
            &srv,
            "remote@example.org",
            "unknown@other.example",
            &sub("user"),
        ),
        "data",
        550,
        "5.1.1",
    );
    let s = sub("known");
    deliver(&srv, "remote@example.org", "known@other.example", &s).unwrap();

    // TestQuota: the account's quota is 1 octet.
    refused(
        deliver(
            &srv,
            "mjl@other.example",
            "full@other.example",
            &sub("quota"),
        ),
        "data",
        452,
        "4.2.2",
    );

    // Login-disabled account: 535 with its message.
    let t = refused(
        submit(
            &srv,
            "off@other.example",
            "testtest",
            "off@other.example",
            "x@example.org",
            &sub("off"),
        ),
        "auth",
        535,
        "",
    );
    assert!(t.contains("account suspended for the e2e test"), "{t}");

    // TestLimitOutgoing: 4 messages a day, 2 first-time recipients.
    let ok = |to: &str| {
        submit(
            &srv,
            "mjl@mox.example",
            "testtest",
            "mjl@mox.example",
            to,
            &sub("limit"),
        )
        .unwrap_or_else(|e| panic!("{to}: {e:?}"))
    };
    ok("b@remote.example");
    ok("c@remote.example");
    refused(
        submit(
            &srv,
            "mjl@mox.example",
            "testtest",
            "mjl@mox.example",
            "d@remote.example",
            &sub("limit"),
        ),
        "data",
        451,
        "4.7.1",
    );
    ok("b@remote.example");
    ok("b@remote.example");
    refused(
        submit(
            &srv,
            "mjl@mox.example",
            "testtest",
            "mjl@mox.example",
            "b@remote.example",
            &sub("limit"),
        ),
        "data",
        451,
        "4.7.1",
    );

    srv.stop_clean();
    let mbox = srv.export_mbox("mjl");
    for s in &to_mjl {
        assert_eq!(
            count_subject(&mbox, s),
            1,
            "{s:?} not in mjl; mbox:\n{mbox}"
        );
    }
    // Submitted messages to remote.example are queued and, without DNS for it here, come
    // back as delivery status notifications: those are not part of the count.
    let delivered: Vec<String> = mbox_messages(&mbox)
        .into_iter()
        .filter(|m| !m.contains("multipart/report"))
        .collect();
    assert_eq!(delivered.len(), to_mjl.len(), "mjl mbox:\n{mbox}");
    let mbox = srv.export_mbox("catchall");
    assert_eq!(mbox_messages(&mbox).len(), 1, "catchall mbox:\n{mbox}");
    assert_eq!(
        count_subject(&mbox, &to_catchall[0]),
        1,
        "catchall mbox:\n{mbox}"
    );
    let mbox = srv.export_mbox("known");
    assert_eq!(mbox_messages(&mbox).len(), 1, "known mbox:\n{mbox}");
    let mbox = srv.export_mbox("full");
    assert_eq!(mbox_messages(&mbox).len(), 0, "full mbox:\n{mbox}");
    let out = rmox(
        &["verifydata", srv.dir.path().join("data").to_str().unwrap()],
        None,
    );
    assert!(
        out.status.success(),
        "verifydata: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

rmox_tests::on_every_runtime!(seed_scenarios,);
