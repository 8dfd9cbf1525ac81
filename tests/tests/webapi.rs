//! The webapi through Python's urllib (a client we did not write), against `rmox
//! localserve` on every runtime: Send queues a message that localserve delivers back into
//! the account, MessageGet and MessageRawGet read it, the suppression list round-trips, and
//! bad input (wrong credentials, malformed JSON, an oversize body, an unknown method) gets a
//! JSON error. curl sends multipart/form-data requests with files, as mox's documentation
//! shows, and the files end up in the message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rmox_tests::*;

const WEBAPI_PORT: u16 = 1080;

/// Status and body of one call through tests/py/webapi_client.py.
fn call(
    srv: &Server,
    user: &str,
    pass: &str,
    method: &str,
    args: &[&str],
) -> (u16, String, String) {
    let url = format!("http://{}:{WEBAPI_PORT}/webapi/v0", srv.ip);
    let out = Command::new("python3")
        .arg(py_dir().join("webapi_client.py"))
        .args([url.as_str(), user, pass, method])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running python3");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.splitn(3, '\n');
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("STATUS "))
        .unwrap_or_else(|| panic!("no status: {text}"))
        .parse()
        .unwrap();
    let ct = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("CONTENT-TYPE ")
        .to_string();
    (status, ct, lines.next().unwrap_or("").to_string())
}

fn api(srv: &Server, method: &str, req: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, ct, body) = call(
        srv,
        "rmox@localhost",
        "rmoxrmox",
        method,
        &[&req.to_string()],
    );
    assert!(ct.starts_with("application/json"), "{status} {ct}: {body}");
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

fn json_error(status: u16, ct: &str, body: &str) -> (u16, String) {
    assert!(ct.starts_with("application/json"), "{status} {ct}: {body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(
        v["Message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    (status, v["Code"].as_str().unwrap().to_string())
}

fn webapi_send_and_read(rt: &str) {
    let mut srv = Server::localserve(rt);
    let subj = subject("webapi-send", rt);
    let (status, v) = api(
        &srv,
        "Send",
        serde_json::json!({
            "To": [{"Name": "Someone", "Address": "someone@localhost"}],
            "Subject": subj,
            "Text": "sent through the webapi\n",
            "HTML": "<p>sent through the <b>webapi</b></p>",
            "AttachedFiles": [{"Name": "hello.txt", "Data": "aGVsbG8K"}],
        }),
    );
    assert_eq!(status, 200, "{v}\n{}", srv.stderr());
    let subs = v["Submissions"].as_array().unwrap();
    assert_eq!(subs.len(), 1, "{v}");
    assert_eq!(subs[0]["Address"], "someone@localhost");
    assert!(subs[0]["QueueMsgID"].as_u64().unwrap() > 0);
    let message_id = v["MessageID"].as_str().unwrap().to_string();

    // localserve's queue delivers it back into the account.
    let cfg = srv.config_path();
    let cfg = cfg.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let out = rmox(
            &["message", "list", "rmox", "--json", "--config", cfg],
            None,
        );
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        // The account is new: the message sent is its only one.
        let found = list
            .as_array()
            .filter(|l| l.len() == 1)
            .and_then(|l| l[0]["id"].as_u64());
        if let Some(id) = found {
            break id;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered: {list}\n{}",
            srv.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (status, m) = api(&srv, "MessageGet", serde_json::json!({"MsgID": id}));
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["Message"]["Subject"], subj.as_str());
    assert_eq!(m["Message"]["From"][0]["Address"], "rmox@localhost");
    assert_eq!(m["Message"]["To"][0]["Name"], "Someone");
    assert_eq!(
        m["Message"]["Text"].as_str().unwrap().trim(),
        "sent through the webapi"
    );
    assert!(
        m["Message"]["HTML"]
            .as_str()
            .unwrap()
            .contains("<b>webapi</b>"),
        "{m}"
    );
    assert_eq!(m["Structure"]["ContentType"], "multipart/mixed");
    let (status, _, raw) = call(
        &srv,
        "rmox@localhost",
        "rmoxrmox",
        "MessageRawGet",
        &[&format!("{{\"MsgID\": {id}}}")],
    );
    assert_eq!(status, 200);
    assert!(raw.contains(&format!("Message-ID: {message_id}")), "{raw}");
    assert!(raw.contains("filename=\"hello.txt\""), "{raw}");
    // The JSON body form of a request works as the form field does.
    let (status, _, body) = call(
        &srv,
        "rmox@localhost",
        "rmoxrmox",
        "SuppressionAdd",
        &[
            "{\"EmailAddress\": \"bounced@example.org\", \"Reason\": \"test\"}",
            "--json-body",
        ],
    );
    assert_eq!(status, 200, "{body}");
    let (_, v) = api(
        &srv,
        "SuppressionPresent",
        serde_json::json!({"EmailAddress": "bounced@example.org"}),
    );
    assert_eq!(v["Present"], true);
    let (_, v) = api(&srv, "SuppressionList", serde_json::json!({}));
    assert_eq!(v["Suppressions"][0]["BaseAddress"], "bounced@example.org");
    let (status, _) = api(&srv, "MessageDelete", serde_json::json!({"MsgID": id}));
    assert_eq!(status, 200);
    let (status, v) = api(&srv, "MessageGet", serde_json::json!({"MsgID": id}));
    assert_eq!((status, v["Code"].as_str().unwrap()), (400, "notFound"));

    // The account's queue: a message released next year waits, is listed, and is dropped.
    let (status, v) = api(
        &srv,
        "Send",
        serde_json::json!({"To": [{"Address": "later@localhost"}], "Text": "later\n",
                           "FutureRelease": "2099-01-01T00:00:00Z"}),
    );
    assert_eq!(status, 200, "{v}");
    let qid = v["Submissions"][0]["QueueMsgID"].as_u64().unwrap();
    let (_, v) = api(&srv, "QueueList", serde_json::json!({}));
    assert_eq!(v["Entries"][0]["QueueMsgID"].as_u64(), Some(qid), "{v}");
    assert_eq!(v["Entries"][0]["Recipient"], "later@localhost");
    let (status, _) = api(&srv, "QueueDrop", serde_json::json!({"QueueMsgID": qid}));
    assert_eq!(status, 200);
    let (_, v) = api(&srv, "QueueList", serde_json::json!({}));
    assert_eq!(v["Entries"], serde_json::json!([]), "{v}");
    srv.stop_clean();
}

fn webapi_bad_input(rt: &str) {
    let mut srv = Server::localserve(rt);
    let send = "{\"To\": [{\"Address\": \"x@localhost\"}], \"Text\": \"x\"}";
    let (s, ct, b) = call(&srv, "rmox@localhost", "wrongwrong", "Send", &[send]);
    assert_eq!(json_error(s, &ct, &b), (401, "badAuth".into()));
    let (s, ct, b) = call(&srv, "", "", "Send", &[send]);
    assert_eq!(json_error(s, &ct, &b), (401, "badAuth".into()));
    let (s, ct, b) = call(&srv, "rmox@localhost", "rmoxrmox", "Send", &["{\"To\": [}"]);
    assert_eq!(json_error(s, &ct, &b), (400, "protocol".into()));
    let (s, ct, b) = call(
        &srv,
        "rmox@localhost",
        "rmoxrmox",
        "Send",
        &["{\"Tooo\": 1}"],
    );
    assert_eq!(json_error(s, &ct, &b), (400, "protocol".into()));
    assert!(b.contains("Tooo"), "{b}");
    let (s, ct, b) = call(
        &srv,
        "rmox@localhost",
        "rmoxrmox",
        "Send",
        &["{\"To\": [{\"Address\": \"x@localhost\"}]}"],
    );
    assert_eq!(json_error(s, &ct, &b), (400, "missingBody".into()));
    let (s, ct, b) = call(&srv, "rmox@localhost", "rmoxrmox", "NoSuchMethod", &["{}"]);
    assert_eq!(json_error(s, &ct, &b), (404, "notFound".into()));
    // Over limits.http_max_body_size (1 MiB by default): refused from the head, as JSON.
    let (s, ct, b) = call(
        &srv,
        "rmox@localhost",
        "rmoxrmox",
        "Send",
        &["--oversize", "2000000"],
    );
    assert_eq!(json_error(s, &ct, &b), (413, "protocol".into()));
    srv.stop_clean();
    let log = srv.stderr();
    assert!(log.contains("webapi request"), "{log}");
}

/// The webapi over TLS (the default off loopback): Python verifies localserve's certificate
/// and authenticates; a plain-HTTP request to the TLS port gets no answer.
fn webapi_over_tls(rt: &str) {
    let mut srv = Server::localserve(rt);
    srv.stop_clean();
    let cfg = srv.config_path();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        "webapi = { port = 1080, tls = false }",
        "webapi = { port = 1080 }",
    );
    assert!(text.contains("webapi = { port = 1080 }\n"), "{text}");
    std::fs::write(&cfg, text).unwrap();
    srv.start();
    let ca = cfg.parent().unwrap().join("tls/cert.pem");
    let url = format!("https://{}:{WEBAPI_PORT}/webapi/v0", srv.ip);
    let run = |user: &str, pass: &str| {
        let out = Command::new("python3")
            .arg(py_dir().join("webapi_client.py"))
            .args([url.as_str(), user, pass, "SuppressionList", "{}"])
            .env("CAFILE", &ca)
            .stdin(Stdio::null())
            .output()
            .expect("running python3");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let ok = run("rmox@localhost", "rmoxrmox");
    assert!(ok.starts_with("STATUS 200"), "{ok}\n{}", srv.stderr());
    assert!(ok.contains("\"Suppressions\":[]"), "{ok}");
    let bad = run("rmox@localhost", "wrongwrong");
    assert!(bad.starts_with("STATUS 401"), "{bad}");
    // Plain HTTP to the TLS port: no HTTP answer.
    let plain = Command::new("python3")
        .arg(py_dir().join("webapi_client.py"))
        .args([
            format!("http://{}:{WEBAPI_PORT}/webapi/v0", srv.ip).as_str(),
            "rmox@localhost",
            "rmoxrmox",
            "SuppressionList",
            "{}",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let plain = String::from_utf8_lossy(&plain.stdout);
    assert!(
        !plain.starts_with("STATUS 200"),
        "plain HTTP was answered on the TLS port: {plain}"
    );
    srv.stop_clean();
}

/// curl -F against Send: the JSON in the form field `request`, an attachment and an inline
/// file (with its Content-ID) as file fields; the delivered message has them, and SaveSent
/// kept a read copy in Sent. A form without `request`, and files for another method, get
/// JSON errors.
fn webapi_multipart_form(rt: &str) {
    let mut srv = Server::localserve(rt);
    let dir = TempDir::new(&format!("webapi-form-{rt}"));
    let csv = dir.path().join("report.csv");
    std::fs::write(&csv, "day,count\r\nmonday,7\r\n").unwrap();
    let png = dir.path().join("logo.png");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR-not-really").unwrap();
    let url = |m: &str| format!("http://{}:{WEBAPI_PORT}/webapi/v0/{m}", srv.ip);
    let curl = |m: &str, fields: &[String]| -> (u16, serde_json::Value) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-m",
            "30",
            "-u",
            "rmox@localhost:rmoxrmox",
            "-w",
            "\n%{http_code}",
        ]);
        for f in fields {
            cmd.arg("-F").arg(f);
        }
        let out = cmd.arg(url(m)).output().expect("running curl");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}")),
        )
    };
    let subj = subject("webapi-form", rt);
    let req = serde_json::json!({
        "To": [{"Address": "someone@localhost"}],
        "Subject": subj,
        "Text": "see the report\n",
        "HTML": "<p><img src=\"cid:logo1@example.org\"></p>",
        "SaveSent": true,
    });
    let (status, v) = curl(
        "Send",
        &[
            format!("request={req}"),
            format!("attachedfile=@{};type=text/csv", csv.display()),
            format!(
                "inlinefile=@{};type=image/png;headers=\"Content-ID: <logo1@example.org>\"",
                png.display()
            ),
        ],
    );
    assert_eq!(status, 200, "{v}\n{}", srv.stderr());
    let message_id = v["MessageID"].as_str().unwrap().to_string();

    let cfg = srv.config_path();
    let cfg = cfg.to_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = loop {
        let out = rmox(
            &["message", "list", "rmox", "--json", "--config", cfg],
            None,
        );
        let list: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        // The Sent copy and the delivered one.
        if list.as_array().is_some_and(|l| l.len() == 2) {
            break list;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered: {list}\n{}",
            srv.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let list = list.as_array().unwrap();
    let sent = list
        .iter()
        .find(|m| m["mailbox"] == "Sent")
        .expect("a Sent copy");
    assert_eq!(sent["seen"], true, "{sent}");
    let got = list
        .iter()
        .find(|m| m["mailbox"] == "Inbox")
        .expect("delivered");
    let (status, _, raw) = call(
        &srv,
        "rmox@localhost",
        "rmoxrmox",
        "MessageRawGet",
        &[&format!("{{\"MsgID\": {}}}", got["id"])],
    );
    assert_eq!(status, 200);
    assert!(raw.contains(&format!("Message-ID: {message_id}")), "{raw}");
    assert!(raw.contains("filename=\"report.csv\""), "{raw}");
    assert!(raw.contains("Content-Type: text/csv"), "{raw}");
    assert!(raw.contains("Content-ID: <logo1@example.org>"), "{raw}");
    assert!(raw.contains("multipart/related"), "{raw}");
    // base64 of the file as written above.
    assert!(raw.contains("ZGF5LGNvdW50DQptb25kYXksNw0K"), "{raw}");

    let (status, v) = curl("Send", &[format!("attachedfile=@{}", csv.display())]);
    assert_eq!((status, v["Code"].as_str()), (400, Some("protocol")), "{v}");
    let (status, v) = curl(
        "SuppressionList",
        &[
            "request={}".into(),
            format!("attachedfile=@{}", csv.display()),
        ],
    );
    assert_eq!((status, v["Code"].as_str()), (400, Some("user")), "{v}");
    srv.stop_clean();
}

rmox_tests::on_every_runtime!(
    webapi_send_and_read,
    webapi_bad_input,
    webapi_over_tls,
    webapi_multipart_form
);
