//! Webhooks end to end on every runtime: an application sends through the webapi to
//! localserve, whose queue delivers one recipient and fails another; the account's
//! receiver (Python's http.server, checking every signature with Python's hmac) fails
//! the first POST of each hook, lets the second time out and takes the third; every hook
//! (delivered, failed, and incoming for each message that arrived) ends retired as
//! delivered after three attempts, their results kept and listed by `rmox webhook retired`.
//! With mox's fromid, a bounce that Python composes (email package) and sends (smtplib) to
//! a message's unique return address becomes a `failed` hook of that message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rmox_tests::*;

const SECRET: &str = "webhook-test-secret-0123";

fn webhooks_retry_and_sign(rt: &str) {
    let mut srv = Server::localserve(rt);
    let dir = TempDir::new(&format!("webhooks-{rt}"));
    let log = dir.path().join("hooks.jsonl");
    let (mut receiver, port) = receiver(&log, "4");

    srv.stop_clean();
    let cfg = srv.config_path();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(&format!(
        "\n[account.rmox.webhooks]\noutgoing_url = \"http://127.0.0.1:{port}/outgoing\"\n\
         incoming_url = \"http://127.0.0.1:{port}/incoming\"\nsecret = \"{SECRET}\"\n\
         [webhooks]\nretry_intervals_secs = [1, 1, 1]\ntimeout_secs = 1\n"
    ));
    std::fs::write(&cfg, text).unwrap();
    srv.start();

    let subj = subject("webhooks", rt);
    let req = serde_json::json!({
        "To": [{"Address": "someone@localhost"}, {"Address": "queuepermerror@localhost"}],
        "Subject": subj,
        "Text": "hooked\n",
        "Extra": {"order-id": "A-17"},
    });
    let out = Command::new("python3")
        .arg(py_dir().join("webapi_client.py"))
        .args([
            &format!("http://{}:1080/webapi/v0", srv.ip),
            "rmox@localhost",
            "rmoxrmox",
            "Send",
            &req.to_string(),
        ])
        .output()
        .unwrap();
    let sent = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(sent.starts_with("STATUS 200"), "{sent}");
    let sent: serde_json::Value =
        serde_json::from_str(sent.splitn(3, '\n').nth(2).unwrap()).unwrap();
    let queue_ids: Vec<u64> = sent["Submissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["QueueMsgID"].as_u64().unwrap())
        .collect();

    // Outgoing: delivered and failed; incoming: the message and the DSN about the failure.
    let cfgs = cfg.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let retired = loop {
        let out = rmox(&["webhook", "retired", "--json", "--config", cfgs], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v.as_array().is_some_and(|a| a.len() >= 4) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "not all hooks retired: {v}\n{}\n{}",
            String::from_utf8_lossy(&rmox(&["webhook", "list", "--config", cfgs], None).stdout),
            srv.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let retired = retired.as_array().unwrap();
    let mut events: Vec<&str> = retired
        .iter()
        .map(|r| r["hook"]["event"].as_str().unwrap())
        .collect();
    events.sort_unstable();
    assert_eq!(
        events,
        ["delivered", "failed", "incoming", "incoming"],
        "{retired:?}"
    );
    for r in retired {
        assert_eq!(r["success"], true, "{r}");
        let results = r["hook"]["results"].as_array().unwrap();
        let statuses: Vec<u64> = results
            .iter()
            .map(|x| x["status"].as_u64().unwrap())
            .collect();
        assert_eq!(statuses, [500, 0, 204], "{r}");
        assert!(
            results[1]["error"].as_str().unwrap().contains("timed out"),
            "{r}"
        );
    }
    let human = rmox(&["webhook", "retired", "--config", cfgs], None);
    let human = String::from_utf8_lossy(&human.stdout);
    assert!(
        human.contains("delivered") && human.contains("ok"),
        "{human}"
    );

    // What the receiver got: valid signatures, mox's shapes.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12, "three attempts per hook");
    assert!(lines.iter().all(|l| l["sig_ok"] == true), "{lines:?}");
    assert!(lines
        .iter()
        .all(|l| l["header_attempt"].as_str() == Some(&l["attempt"].to_string())));
    let taken: Vec<&serde_json::Value> = lines.iter().filter(|l| l["attempt"] == 3).collect();
    let delivered = taken
        .iter()
        .find(|l| l["body"]["Event"] == "delivered")
        .expect("delivered hook");
    assert_eq!(delivered["path"], "/outgoing");
    assert_eq!(delivered["body"]["QueueMsgID"].as_u64(), Some(queue_ids[0]));
    assert_eq!(delivered["body"]["MessageID"], sent["MessageID"]);
    assert_eq!(delivered["body"]["Subject"], subj.as_str());
    assert_eq!(
        delivered["body"]["Extra"],
        serde_json::json!({"Order-Id": "A-17"})
    );
    let failed = taken
        .iter()
        .find(|l| l["body"]["Event"] == "failed")
        .expect("failed hook");
    assert_eq!(failed["body"]["QueueMsgID"].as_u64(), Some(queue_ids[1]));
    assert!(
        failed["body"]["SMTPCode"]
            .as_u64()
            .is_some_and(|c| c >= 500),
        "{failed}"
    );
    assert!(!failed["body"]["Error"].as_str().unwrap().is_empty());
    let incoming = taken
        .iter()
        .find(|l| l["path"] == "/incoming" && l["body"]["Subject"] == subj.as_str())
        .expect("incoming hook of the delivered copy");
    assert_eq!(incoming["body"]["From"][0]["Address"], "rmox@localhost");
    assert_eq!(incoming["body"]["Text"].as_str().unwrap().trim(), "hooked");
    assert!(incoming["body"]["Meta"]["MsgID"].as_u64().is_some());
    assert_eq!(incoming["body"]["Meta"]["MailboxName"], "Inbox");
    srv.stop_clean();
    let _ = receiver.kill();
    let _ = receiver.wait();
}

/// Starts the receiver (see webhook_receiver.py; its second answer waits `slow` seconds):
/// it, and its port.
fn receiver(log: &std::path::Path, slow: &str) -> (std::process::Child, u16) {
    let mut child = Command::new("python3")
        .arg(py_dir().join("webhook_receiver.py"))
        .args([SECRET, log.to_str().unwrap(), slow, "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line.trim().strip_prefix("PORT ").unwrap().parse().unwrap();
    (child, port)
}

/// A webapi call as rmox@localhost through Python's urllib: the status and the JSON.
fn webapi(ip: &str, method: &str, req: &serde_json::Value) -> (u16, serde_json::Value) {
    let out = Command::new("python3")
        .arg(py_dir().join("webapi_client.py"))
        .args([
            &format!("http://{ip}:1080/webapi/v0"),
            "rmox@localhost",
            "rmoxrmox",
            method,
            &req.to_string(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let status = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("STATUS "))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let body = text.splitn(3, '\n').nth(2).unwrap_or("null");
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// mox's fromid end to end: logged in as a from-id address, the webapi answers a FromID and
/// the message leaves with MAIL FROM rmox+ID@localhost; its `delivered` hook carries the
/// FromID; a DSN composed by Python's email package and sent by smtplib to that address
/// (as a remote MTA bouncing later would) becomes a `failed` hook of the same queue entry
/// with `DSN: true`, suppresses the recipient, and both hooks are listed by the webapi's
/// WebhookRetiredList.
fn webhooks_from_returned_dsn(rt: &str) {
    let mut srv = Server::localserve(rt);
    let dir = TempDir::new(&format!("webhooks-dsn-{rt}"));
    let log = dir.path().join("hooks.jsonl");
    let (mut rcv, port) = receiver(&log, "2");
    srv.stop_clean();
    let cfg = srv.config_path();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "\n[postmaster]",
        "from_id_login_addresses = [\"rmox@localhost\"]\n\n[postmaster]",
    );
    let text = format!(
        "{text}\n[account.rmox.webhooks]\noutgoing_url = \"http://127.0.0.1:{port}/outgoing\"\n\
         secret = \"{SECRET}\"\n[webhooks]\nretry_intervals_secs = [1, 1, 1]\ntimeout_secs = 1\n"
    );
    std::fs::write(&cfg, text).unwrap();
    srv.start();
    let ip = srv.ip.to_string();

    let subj = subject("webhooks-dsn", rt);
    let (status, sent) = webapi(
        &ip,
        "Send",
        &serde_json::json!({"To": [{"Address": "someone@localhost"}], "Subject": subj,
                            "Text": "bounce me later\n", "Extra": {"ticket": "9"}}),
    );
    assert_eq!(status, 200, "{sent}");
    let from_id = sent["Submissions"][0]["FromID"]
        .as_str()
        .unwrap()
        .to_string();
    let queue_id = sent["Submissions"][0]["QueueMsgID"].as_u64().unwrap();
    assert_eq!(from_id.len(), 22, "{sent}");

    let out = Command::new("python3")
        .arg(py_dir().join("send_dsn.py"))
        .args([
            ip.as_str(),
            "1025",
            &format!("rmox+{from_id}@localhost"),
            "someone@localhost",
            "failed",
            "5.1.1",
            "550 5.1.1 <someone@localhost>: Recipient address rejected",
            sent["MessageID"].as_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SENT"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(90);
    let hooks = loop {
        let (status, v) = webapi(&ip, "WebhookRetiredList", &serde_json::json!({}));
        assert_eq!(status, 200, "{v}");
        let list = v["Webhooks"].as_array().cloned().unwrap_or_default();
        if list.len() >= 2 {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "hooks not retired: {v}\n{}",
            srv.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let find = |event: &str| {
        hooks
            .iter()
            .find(|h| h["Event"] == event)
            .unwrap_or_else(|| panic!("no {event} hook in {hooks:?}"))
            .clone()
    };
    let delivered = find("delivered");
    assert_eq!(delivered["Payload"]["FromID"], from_id.as_str());
    assert_eq!(delivered["Payload"]["DSN"], false);
    let failed = find("failed");
    assert_eq!(failed["Success"], true, "{failed}");
    let p = &failed["Payload"];
    assert_eq!(p["DSN"], true, "{p}");
    assert_eq!(p["FromID"], from_id.as_str());
    assert_eq!(p["QueueMsgID"].as_u64(), Some(queue_id));
    assert_eq!(p["MessageID"], sent["MessageID"]);
    assert_eq!(p["Subject"], subj.as_str());
    assert_eq!(
        (p["SMTPCode"].as_u64(), p["SMTPEnhancedCode"].as_str()),
        (Some(550), Some("5.1.1"))
    );
    assert_eq!(p["Suppressing"], true);
    assert_eq!(p["Extra"], serde_json::json!({"Ticket": "9"}));
    let (_, v) = webapi(
        &ip,
        "SuppressionPresent",
        &serde_json::json!({"EmailAddress": "someone@localhost"}),
    );
    assert_eq!(v["Present"], true, "{v}");
    // The receiver saw the signed POSTs.
    let lines = std::fs::read_to_string(&log).unwrap();
    assert!(
        lines.lines().all(|l| l.contains("\"sig_ok\": true")),
        "{lines}"
    );
    srv.stop_clean();
    let _ = rcv.kill();
    let _ = rcv.wait();
}

rmox_tests::on_every_runtime!(webhooks_retry_and_sign, webhooks_from_returned_dsn);
