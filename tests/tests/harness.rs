//! End to end against real DNS and real mail servers: the test world of ../shared/harness
//! (NSD + validating Unbound on 127.53.0.x, aiosmtpd peers and Postfix on 127.10.0.x).
//! `.ci/run` starts it; elsewhere the tests skip with a printed reason unless
//! `$HARNESS_DIR/env.sh` exists (`../shared/harness/up.sh`, with `HARNESS_HOME` pointing
//! at the scripts when they are not at ../shared/harness beside the checkout).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rmox_tests::harness::{big_spf_record, smtp_sink, Harness, LATER_MX, RESOLVER};
use rmox_tests::*;

/// `rmox ARGS --resolver 127.53.0.2:53`: (success, stdout + stderr).
fn cli(args: &[&str]) -> (bool, String) {
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--resolver", RESOLVER]);
    let out = rmox(&a, None);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[track_caller]
fn cli_ok(args: &[&str]) -> String {
    let (ok, out) = cli(args);
    assert!(ok, "rmox {args:?} failed:\n{out}");
    out
}

/// The DNS tools of the binary against the real resolver: UDP answers, and a TXT record
/// too big for the 1232-octet EDNS payload that only arrives over TCP.
#[test]
fn cli_spf_and_dnsbl_real_dns() {
    let Some(_h) = Harness::get("cli_spf_and_dnsbl_real_dns") else {
        return;
    };
    // SPF over UDP: example.org allows 127.10.0.0/24.
    let out = cli_ok(&["spf", "check", "example.org", "127.10.0.11"]);
    assert!(out.contains("result: pass"), "{out}");
    assert!(out.contains("mechanism: ip4:127.10.0.0/24"), "{out}");
    let out = cli_ok(&["spf", "check", "example.org", "127.20.0.1"]);
    assert!(out.contains("result: fail"), "{out}");
    assert!(out.starts_with("result: fail") && out.contains("Received-SPF: fail"));
    // mox.example: ip4 of the MTA.
    let out = cli_ok(&["spf", "check", "mox.example", "127.10.0.2"]);
    assert!(out.contains("result: pass"), "{out}");
    let out = cli_ok(&["spf", "lookup", "example.org"]);
    assert!(
        out.contains("v=spf1 ip4:127.10.0.0/24 -all\nvalid"),
        "{out}"
    );
    // DNSSEC-bogus zone: SERVFAIL from the validating resolver, a temporary error.
    let out = cli_ok(&["spf", "check", "bogus.example", "127.10.0.17"]);
    assert!(out.contains("result: temperror"), "{out}");

    // Over TCP: the record is longer than the UDP payload, so the UDP answer is
    // truncated; only a TCP retry can return it whole.
    let big = big_spf_record();
    assert!(big.len() > 1232, "{}", big.len());
    let out = cli_ok(&["spf", "lookup", "bigspf.example.org"]);
    assert!(out.contains(&format!("{big}\nvalid")), "{out}");
    let out = cli_ok(&["spf", "check", "bigspf.example.org", "127.10.0.2"]);
    assert!(out.contains("result: pass"), "{out}");
    assert!(out.contains("mechanism: ip4:127.10.0.2"), "{out}");
    let out = cli_ok(&["spf", "check", "bigspf.example.org", "127.20.0.1"]);
    assert!(out.contains("result: fail"), "{out}");

    // DNSBL: bl.example.org lists 127.10.0.15 (and 127.0.0.2 for the health check).
    let out = cli_ok(&["dnsbl", "check", "bl.example.org", "127.10.0.15"]);
    assert!(
        out.contains("bl.example.org: Fail(\"listed by the rmox harness test\")"),
        "{out}"
    );
    assert!(out.contains("bl.example.org health: Healthy"), "{out}");
    let out = cli_ok(&["dnsbl", "check", "bl.example.org", "127.10.0.11"]);
    assert!(out.contains("bl.example.org: Pass"), "{out}");
    let out = cli_ok(&["dnsbl", "check", "bl.bogus.example", "127.10.0.15"]);
    assert!(out.contains("bl.bogus.example: TempError"), "{out}");
}

fn serve_config(h: &Harness) -> String {
    format!(
        r#"hostname = "{host}"
data_dir = "data"
resolver = ["{RESOLVER}"]

[[listener]]
name = "harness"
ip = "{ip}"
smtp = {{ port = 25 }}
submission = {{ port = 587 }}
tls = {{ cert_file = "{cert}", key_file = "{key}" }}
no_require_starttls = true
webapi = {{ port = 1080, tls = false }}

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}
subjectpass_period_secs = 3600

[postmaster]
account = "mjl"
mailbox = "Inbox"

[limits]
auth_failure_delay_secs = 0
unknown_recipient_delay_secs = 0

[incoming]
checks = true
dnsbl = ["bl.example.org"]
require_iprev_for_unknown_senders = true
"#,
        host = h.var("HARNESS_MTA_HOSTNAME"),
        ip = h.var("HARNESS_MTA_ADDR"),
        cert = h.var("HARNESS_MTA_CERT"),
        key = h.var("HARNESS_MTA_KEY"),
    )
}

/// `rmox ARGS` without a resolver: (success, stdout + stderr).
fn rmox_out(args: &[&str]) -> (bool, String) {
    let out = rmox(args, None);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The final reply inject.py printed (its last line).
fn last_line(out: &str) -> &str {
    out.trim_end().lines().last().unwrap_or("")
}

#[track_caller]
fn inject_expect(h: &Harness, args: &[&str], want: &str) {
    let (_, out) = h.inject(args);
    assert!(
        last_line(&out).starts_with(want),
        "inject {args:?}: want {want:?}, got:\n{out}"
    );
}

/// Waits up to `secs` for `f` to hold.
fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    f()
}

/// `rmox serve` as mail.mox.example on 127.10.0.2:25 with the DNS checks on: the seed
/// scenarios that need DNS, then outgoing delivery to the real Postfix MX and the peers.
fn serve_scenarios(rt: &str) {
    let test = format!("serve_scenarios({rt})");
    let Some(h) = Harness::get(&test) else {
        return;
    };
    let _guard = Harness::lock();
    let dir = TempDir::new(&format!("harness-{rt}"));
    let cfg = dir.path().join("rmox.toml");
    // The account's application: a webhook receiver (fails, times out, then takes each hook).
    let hook_log = dir.path().join("hooks.jsonl");
    let mut receiver = std::process::Command::new("python3")
        .arg(py_dir().join("webhook_receiver.py"))
        .args([
            "harness-webhook-secret",
            hook_log.to_str().unwrap(),
            "3",
            "600",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let hook_port: u16 = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(receiver.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim().strip_prefix("PORT ").unwrap().parse().unwrap()
    };
    let config = format!(
        "{}\n[account.mjl.webhooks]\noutgoing_url = \"http://127.0.0.1:{hook_port}/outgoing\"\n\
         secret = \"harness-webhook-secret\"\n[webhooks]\nretry_intervals_secs = [1, 1, 1]\n\
         timeout_secs = 1\n",
        serve_config(&h)
    );
    std::fs::write(&cfg, config).unwrap();
    let cfgs = cfg.to_str().unwrap().to_string();
    let out = rmox(&["config", "check", "--config", &cfgs], None);
    assert!(
        out.status.success(),
        "config check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = rmox(
        &["account", "setpassword", "mjl", "--config", &cfgs],
        Some("testtest\n"),
    );
    assert!(out.status.success(), "setpassword");
    let ip: std::net::Ipv4Addr = h.var("HARNESS_MTA_ADDR").parse().unwrap();
    let mut srv = Server::serve(rt, dir, ip, 25);
    let sub = |what: &str| subject(&format!("harness-{what}"), rt);
    let to = "mjl@mox.example";

    // EHLO name that does not exist: 550 at MAIL FROM.
    inject_expect(
        &h,
        &[
            "--to",
            to,
            "--helo",
            "nonexistent.example.org",
            "--tls",
            "none",
        ],
        "550",
    );
    // MAIL FROM domain with a null MX: 550 5.7.27; DNSSEC-bogus (SERVFAIL): 451 4.4.0.
    inject_expect(
        &h,
        &["--to", to, "--from", "a@nullmx.example.org"],
        "550 5.7.27",
    );
    inject_expect(&h, &["--to", to, "--from", "a@bogus.example"], "451 4.4.0");
    // Listed in bl.example.org (127.10.0.15 = mx-notls.example.org), DMARC passing (DKIM),
    // no history: mox's TestBlocklistedSubjectpass, a 550 5.7.1 with a pass for the
    // Subject (the account has subjectpass on).
    let s_dnsbl = sub("dnsbl");
    let listed = |subject: &str| -> Vec<String> {
        [
            "--to",
            to,
            "--source-ip",
            "127.10.0.15",
            "--helo",
            "mx-notls.example.org",
            "--dkim",
            "example.org:harness",
            "--subject",
            subject,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    let a = listed(&s_dnsbl);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let (_, out) = h.inject(&a);
    let refusal = last_line(&out).to_string();
    assert!(
        refusal.starts_with("550 5.7.1 your message resembles spam"),
        "{out}"
    );
    let pass = refusal
        .split_whitespace()
        .find(|w| w.starts_with("rmoxpass-"))
        .unwrap_or_else(|| panic!("no pass in {refusal:?}"))
        .to_string();
    // A wrong pass does not help: the listing's 550 again.
    let a = listed(&format!("{s_dnsbl} rmoxpass-AAAAAAAAAAAAAAAAAAAAAAAAAAAA"));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    inject_expect(&h, &a, "550 5.7.1");
    // No PTR for 127.20.0.1, example.org not yet known, SPF fails (DKIM keeps DMARC
    // passing): the analysis refuses an unknown sender whose SPF fails, 451 4.3.0 without
    // details (mox's order; the iprev rule comes after it).
    let s_noptr = sub("noptr");
    inject_expect(
        &h,
        &[
            "--to",
            to,
            "--source-ip",
            "127.20.0.1",
            "--dkim",
            "example.org:harness",
            "--subject",
            &s_noptr,
        ],
        "451 4.3.0",
    );
    // The sender puts the pass in the Subject: accepted from the listed IP.
    let a = listed(&format!("{s_dnsbl} {pass}"));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    inject_expect(&h, &a, "250");
    // mox's TestDMARCSent: the account writes to bob@example.org (a submission: what it
    // sent is recorded at once); his first message, still without PTR and failing SPF, is
    // accepted because the account wrote to him (msgtofull), before what the domain's
    // other senders did counts.
    let s_sent = sub("dmarcsent");
    let (code, out) = py_send(
        &[
            "--host",
            &ip.to_string(),
            "--port",
            "587",
            "--mode",
            "starttls",
            "--auth",
            "PLAIN",
            "--user",
            "mjl@mox.example",
            "--password",
            "testtest",
            "--mail-from",
            "mjl@mox.example",
            "--subject",
            &format!("to bob {s_sent}"),
            "--to",
            "bob@example.org",
        ]
        .iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>(),
    );
    assert_eq!(code, 0, "submission to bob: {out}");
    inject_expect(
        &h,
        &[
            "--to",
            to,
            "--source-ip",
            "127.20.0.1",
            "--from",
            "bob@example.org",
            "--dkim",
            "example.org:harness",
            "--subject",
            &s_sent,
        ],
        "250",
    );
    // With PTR (127.10.0.11 = mx1.example.org), SPF pass, DKIM: accepted over STARTTLS
    // verified against the harness CA and name.
    let s_ok = sub("ok");
    inject_expect(
        &h,
        &[
            "--to",
            to,
            "--source-ip",
            "127.10.0.11",
            "--dkim",
            "example.org:harness",
            "--tls",
            "verify",
            "--sni",
            "mail.mox.example",
            "--subject",
            &s_ok,
        ],
        "250",
    );
    // Now example.org is a known sender: no PTR is accepted, SPF fails.
    let s_known = sub("known");
    inject_expect(
        &h,
        &[
            "--to",
            to,
            "--source-ip",
            "127.20.0.1",
            "--dkim",
            "example.org:harness",
            "--subject",
            &s_known,
        ],
        "250",
    );

    // Reputation (issue 17, mox's TestSpam through the harness DNS): the user marks what
    // example.org sent as junk (`rmox message junk`, through the running server); its next
    // message is refused without details; marked not junk again, it is accepted.
    let ids = |what: &str| -> Vec<String> {
        let out = rmox(
            &["message", "list", "mjl", "--json", "--config", &cfgs],
            None,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let ids: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| {
                m["from"]
                    .as_str()
                    .is_some_and(|f| f.ends_with("@example.org"))
            })
            .map(|m| m["id"].to_string())
            .collect();
        assert!(!ids.is_empty(), "{what}: no messages from example.org: {v}");
        ids
    };
    let classify = |what: &str| {
        for id in ids(what) {
            let out = rmox(&["message", what, "mjl", &id, "--config", &cfgs], None);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let ok_args = |subject: &str| -> Vec<String> {
        [
            "--to",
            to,
            "--source-ip",
            "127.10.0.11",
            "--dkim",
            "example.org:harness",
            "--subject",
            subject,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect()
    };
    classify("junk");
    let s_junk = sub("junk");
    let a = ok_args(&s_junk);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    inject_expect(&h, &a, "451 4.3.0");
    classify("notjunk");
    inject_expect(&h, &a, "250");

    // Outgoing (issue 8): one submitted message to the real Postfix MX, to a domain whose
    // MX10 refuses connections (fallback to MX20 = mx1), and to mx1's tempfail/permfail.
    let tag = format!("{rt}{}", std::process::id());
    let r_pf = format!("rcpt-{tag}@pf.example.org");
    let r_multi = format!("rcpt-{tag}@multi.example.org");
    let r_temp = format!("tempfail-{tag}@example.org");
    let r_perm = format!("permfail-{tag}@example.org");
    let r_later = format!("rcpt-{tag}@later.example.org");
    let s_out = sub("outgoing");
    let mut args: Vec<String> = [
        "--host",
        &ip.to_string(),
        "--port",
        "587",
        "--mode",
        "starttls",
        "--auth",
        "PLAIN",
        "--user",
        "mjl@mox.example",
        "--password",
        "testtest",
        "--mail-from",
        "mjl@mox.example",
        "--subject",
        &s_out,
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    for r in [&r_pf, &r_multi, &r_temp, &r_perm, &r_later] {
        args.push("--to".into());
        args.push(r.clone());
    }
    let (code, out) = py_send(&args);
    assert_eq!(code, 0, "submission: {out}");
    // Postfix stored it (over STARTTLS, per its Received header).
    let mut pf_msg = None;
    let delivered = wait_for(30, || {
        pf_msg = h
            .postfix_messages()
            .into_iter()
            .find(|m| m.contains(&format!("Subject: {s_out}")));
        pf_msg.is_some()
    });
    assert!(
        delivered,
        "{s_out} not in the Postfix Maildir; stderr:\n{}",
        srv.stderr()
    );
    let pf_msg = pf_msg.unwrap();
    assert!(
        pf_msg.contains(&format!("Delivered-To: {r_pf}")),
        "{pf_msg}"
    );
    assert!(pf_msg.contains("(using TLSv1."), "no TLS: {pf_msg}");
    assert!(
        pf_msg.contains("by mx2.example.org (Postfix) with ESMTPS"),
        "{pf_msg}"
    );
    // The peers saw the MX20 delivery and refused tempfail (451) and permfail (550).
    let has_event = |f: &dyn Fn(&str) -> bool| h.events().iter().any(|l| f(l));
    let ok = wait_for(30, || {
        has_event(&|l: &str| {
            l.contains(&format!("\"{r_multi}\""))
                && l.contains("\"result\": \"250\"")
                && l.contains("\"peer\": \"mx1.example.org\"")
        }) && has_event(&|l: &str| {
            l.contains(&format!("\"rcpt\": \"{r_temp}\"")) && l.contains("\"result\": \"451")
        }) && has_event(&|l: &str| {
            l.contains(&format!("\"rcpt\": \"{r_perm}\"")) && l.contains("\"result\": \"550")
        })
    });
    assert!(
        ok,
        "events for {tag} missing:\n{}\nstderr:\n{}",
        h.events().join("\n"),
        srv.stderr()
    );
    // The DSN for permfail is delivered locally by the runner: give it a moment.
    std::thread::sleep(std::time::Duration::from_secs(1));

    // An application sends through the webapi to the real Postfix and learns of the
    // delivery from its webhook (issue 19).
    let s_api = sub("webapi");
    let r_api = format!("api-{tag}@pf.example.org");
    let req = serde_json::json!({
        "To": [{"Address": r_api}], "Subject": s_api, "Text": "through the webapi\n",
    });
    let out = std::process::Command::new("python3")
        .arg(py_dir().join("webapi_client.py"))
        .args([
            &format!("http://{ip}:1080/webapi/v0"),
            "mjl@mox.example",
            "testtest",
            "Send",
            &req.to_string(),
        ])
        .output()
        .unwrap();
    let answer = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        answer.starts_with("STATUS 200"),
        "{answer}\n{}",
        srv.stderr()
    );
    let sent: serde_json::Value =
        serde_json::from_str(answer.splitn(3, '\n').nth(2).unwrap()).unwrap();
    let qid = sent["Submissions"][0]["QueueMsgID"].as_u64().unwrap();
    assert!(
        wait_for(30, || h
            .postfix_messages()
            .iter()
            .any(|m| m.contains(&format!("Subject: {s_api}")))),
        "{s_api} not in the Postfix Maildir; stderr:\n{}",
        srv.stderr()
    );
    let mut hooks = serde_json::Value::Null;
    let hooked = wait_for(60, || {
        let out = rmox(&["webhook", "retired", "--json", "--config", &cfgs], None);
        hooks = serde_json::from_slice(&out.stdout).unwrap_or_default();
        hooks.as_array().is_some_and(|a| {
            a.iter().any(|r| {
                let p: serde_json::Value =
                    serde_json::from_str(r["hook"]["payload"].as_str().unwrap_or(""))
                        .unwrap_or_default();
                p["Event"] == "delivered"
                    && p["QueueMsgID"].as_u64() == Some(qid)
                    && r["success"] == true
            })
        })
    });
    assert!(
        hooked,
        "no delivered webhook for queue entry {qid}: {hooks}\n{}",
        srv.stderr()
    );
    let received = std::fs::read_to_string(&hook_log).unwrap();
    let delivered = received
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| {
            l["body"]["Event"] == "delivered"
                && l["body"]["QueueMsgID"].as_u64() == Some(qid)
                && l["attempt"] == 3
        })
        .unwrap_or_else(|| panic!("{received}"));
    assert_eq!(delivered["sig_ok"], true);
    assert_eq!(delivered["body"]["Subject"], s_api.as_str());
    assert_eq!(delivered["body"]["MessageID"], sent["MessageID"]);

    srv.stop_clean();
    let _ = receiver.kill();
    let _ = receiver.wait();

    // tempfail is still queued after one attempt; `rmox queue kick` attempts it again now.
    let (_, list) = rmox_out(&["queue", "list", "--config", &cfgs]);
    let line = list
        .lines()
        .find(|l| l.contains(&r_temp))
        .unwrap_or_else(|| panic!("{r_temp} not queued:\n{list}"));
    assert!(
        line.contains("attempts 1") && line.contains("451"),
        "{line}"
    );
    assert!(
        !list.contains(&r_pf) && !list.contains(&r_multi) && !list.contains(&r_perm),
        "{list}"
    );
    let id = line.split_whitespace().next().unwrap();
    let (ok, kick) = rmox_out(&["queue", "kick", id, "--config", &cfgs]);
    assert!(ok, "{kick}");
    assert!(
        kick.contains("still queued") && kick.contains("attempts 2") && kick.contains("451"),
        "{kick}"
    );
    let temp_events = h
        .events()
        .iter()
        .filter(|l| l.contains(&format!("\"rcpt\": \"{r_temp}\"")))
        .count();
    assert_eq!(temp_events, 2, "kick did not reach mx1");

    // later.example.org: its MX refused the connection (temporary); once it listens,
    // `queue kick` delivers.
    let line = list
        .lines()
        .find(|l| l.contains(&r_later))
        .unwrap_or_else(|| panic!("{r_later} not queued:\n{list}"));
    assert!(line.contains("attempts 1"), "{line}");
    let id = line.split_whitespace().next().unwrap();
    let sink = smtp_sink(LATER_MX);
    let (ok, kick) = rmox_out(&["queue", "kick", id, "--config", &cfgs]);
    assert!(ok && kick.contains("Delivered"), "{kick}");
    let seen = sink.join().unwrap();
    assert!(seen.contains(&format!("RCPT TO:<{r_later}>")), "{seen}");
    assert!(seen.contains(&format!("Subject: {s_out}")), "{seen}");
    let (_, list) = rmox_out(&["queue", "list", "--config", &cfgs]);
    assert!(!list.contains(&r_later), "{list}");

    let mbox = srv.export_mbox("mjl");
    let dsn = mbox_messages(&mbox)
        .into_iter()
        .find(|m| m.contains("multipart/report") && m.contains(&r_perm))
        .unwrap_or_else(|| panic!("no DSN for {r_perm}:\n{mbox}"));
    assert!(dsn.contains("Action: failed"), "{dsn}");
    assert!(dsn.contains("Remote-MTA: dns; mx1.example.org"), "{dsn}");
    assert!(dsn.contains("550"), "{dsn}");
    let msgs = mbox_messages(&mbox);
    let find = |s: &str| {
        msgs.iter()
            .find(|m| m.contains(&format!("Subject: {s}")))
            .cloned()
    };
    assert!(find(&s_noptr).is_none(), "{mbox}");
    let sent = find(&s_sent).unwrap_or_else(|| panic!("{s_sent} not stored:\n{mbox}"));
    assert!(sent.contains("X-Rmox-Reason: msgtofull;"), "{sent}");
    // Of the listed sender's three tries only the one with the pass was stored.
    let passed: Vec<&String> = msgs
        .iter()
        .filter(|m| m.contains(&format!("Subject: {s_dnsbl}")))
        .collect();
    assert_eq!(passed.len(), 1, "{mbox}");
    assert!(
        passed[0].contains(&format!("Subject: {s_dnsbl} {pass}"))
            && passed[0].contains("X-Rmox-Reason: subjectpass;"),
        "{}",
        passed[0]
    );
    let ok = find(&s_ok).unwrap_or_else(|| panic!("{s_ok} not stored:\n{mbox}"));
    let ar: String = ok.split("\n\n").next().unwrap_or("").to_string();
    for want in [
        "Authentication-Results: mail.mox.example",
        "iprev=pass",
        "spf=pass",
        "dkim=pass",
        "dmarc=pass",
    ] {
        assert!(ar.contains(want), "{want} missing in:\n{ar}");
    }
    let known = find(&s_known).unwrap_or_else(|| panic!("{s_known} not stored:\n{mbox}"));
    let ar = known.split("\n\n").next().unwrap_or("").to_string();
    for want in ["iprev=", "spf=fail", "dkim=pass", "dmarc=pass"] {
        assert!(ar.contains(want), "{want} missing in:\n{ar}");
    }
    assert!(!ar.contains("iprev=pass"), "{ar}");
}

rmox_tests::on_every_runtime!(serve_scenarios,);
