//! localserve's web inbox in a real browser: headless Chromium (Debian's package), driven over
//! its DevTools protocol by tests/py/cdp_inbox.py, loads the page on an empty inbox, swaks
//! sends a message, and the page shows it without a reload; a click opens the view with its
//! headers, text, attachment and HTML, and the HTML (which tries a script and a remote image)
//! runs nothing and loads nothing. The checks read the DOM, not pixels.
//!
//! The JSON API through Python's urllib (tests/py/inbox_client.py): bad requests (malformed
//! JSON, wrong types, an unknown ID, a search without a query, an unknown route, a wrong
//! method, a body over the size limit) get JSON `{"Code", "Message"}` answers, and
//! `/api/v1/openapi.json` describes the API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rmox_tests::*;

/// The Chromium binary, or `None` outside CI when it is not installed (in CI it must be).
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is not installed but CI is set: apt-get install chromium"
        );
        eprintln!("SKIP: chromium not installed; CI is not set");
    }
    found
}

fn inbox_in_chromium(rt: &str) {
    let Some(bin) = chromium() else { return };
    if !have_swaks() {
        return;
    }
    let mut srv = Server::localserve(rt);
    let ip = srv.ip.to_string();
    let profile = TempDir::new(&format!("chromium-{rt}"));
    // Anything the message's HTML manages to load would connect here.
    let probe = TcpListener::bind("127.0.0.1:0").unwrap();
    probe.set_nonblocking(true).unwrap();
    let probe_port = probe.local_addr().unwrap().port();

    let subj = subject("inbox-chromium", rt);
    let msg = format!(
        "From: Alice <alice@example.org>\r\nTo: rmox@localhost\r\nSubject: {subj}\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=m\r\n\r\n\
         --m\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n\
         --a\r\nContent-Type: text/plain\r\n\r\nthe plain text\r\n\
         --a\r\nContent-Type: text/html\r\n\r\n<p>the <b>html</b></p>\
         <script>fetch('/api/v1/messages', {{method: 'DELETE'}})</script>\
         <img src=\"http://127.0.0.1:{probe_port}/remote.png\">\r\n--a--\r\n\
         --m\r\nContent-Type: text/plain; name=\"notes.txt\"\r\n\
         Content-Disposition: attachment; filename=\"notes.txt\"\r\n\r\nattached notes\r\n--m--\r\n"
    );
    let file = profile.path().join("msg.eml");
    std::fs::write(&file, &msg).unwrap();
    let swaks_cmd = [
        "swaks".to_string(),
        "--server".into(),
        format!("{ip}:{SMTP_PORT}"),
        "--from".into(),
        "alice@example.org".into(),
        "--to".into(),
        "rmox@localhost".into(),
        "--data".into(),
        format!("@{}", file.display()),
    ];
    let url = format!("http://{ip}:1080/");
    let chrome_profile = profile.path().join("chromium");
    let child = Command::new("/usr/bin/python3")
        .arg(py_dir().join("cdp_inbox.py"))
        .args([bin, url.as_str(), chrome_profile.to_str().unwrap()])
        .args(&swaks_cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running tests/py/cdp_inbox.py (apt-get install python3-websocket)");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(150))
        .expect("the browser run did not finish within 150 s")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{text}\nserver log:\n{}",
        srv.stderr()
    );
    let line = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(str::to_string))
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
    };
    // The page first drew an empty inbox; the message appeared in the same page.
    assert_eq!(line("FIRST_COUNT "), "0", "{text}");
    assert_eq!(line("SENT "), "0", "{text}");
    let row = line("ROW ");
    assert!(row.contains(&subj), "{row}");
    assert!(row.starts_with("<tr class=\"message unread"), "{row}");
    assert!(
        row.contains("alice@example.org") && row.contains("rmox@localhost"),
        "{row}"
    );
    assert_eq!(line("SAME_PAGE "), "true", "the page reloaded: {text}");
    let view = line("VIEW ");
    assert!(
        view.contains(&format!("<h2 id=\"subject\">{subj}</h2>")),
        "{view}"
    );
    assert!(view.contains("<pre id=\"text\">the plain text"), "{view}");
    assert!(view.contains(">notes.txt</a>"), "{view}");
    assert!(view.contains("<td>Subject</td>"), "{view}");
    assert!(
        view.contains("<iframe id=\"html\" sandbox=\"\" src=\"/view/"),
        "{view}"
    );
    // The HTML loaded nothing remote and ran no script (its script would have deleted
    // every message).
    assert!(
        probe.accept().is_err(),
        "the message's HTML made a remote request"
    );
    let cfg = srv.config_path();
    let out = rmox(
        &[
            "message",
            "list",
            "rmox",
            "--json",
            "--config",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["seen"], true, "viewing marked it read");
    srv.stop_clean();
}

/// One request through tests/py/inbox_client.py: status, Content-Type, Allow and body.
fn call(srv: &Server, method: &str, path: &str, args: &[&str]) -> (u16, String, String, String) {
    let url = format!("http://{}:1080{path}", srv.ip);
    let mut child = Command::new("python3")
        .arg(py_dir().join("inbox_client.py"))
        .args([method, url.as_str()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running python3");
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{method} {path}: no answer within 30 s\n{}", srv.stderr());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{method} {path}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.splitn(4, '\n');
    let mut field = |name: &str| {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name}in: {text}"))
            .to_string()
    };
    let status = field("STATUS ").parse().unwrap();
    let ct = field("CONTENT-TYPE ");
    let allow = field("ALLOW ");
    (status, ct, allow, lines.next().unwrap_or("").to_string())
}

/// One bad request: method, path, arguments of inbox_client.py; the status, Code and a
/// piece of the Message it must get.
type Case<'a> = (&'a str, &'a str, &'a [&'a str], u16, &'a str, &'a str);

/// Each bad request to the JSON API gets its status and a JSON `{"Code", "Message"}`; the
/// description is served; the refused requests changed nothing (the one message stays,
/// unread).
fn inbox_api_errors(rt: &str) {
    let mut srv = Server::localserve(rt);
    let (status, ct, _, body) = call(&srv, "GET", "/api/v1/openapi.json", &[]);
    assert_eq!(status, 200, "{body}\n{}", srv.stderr());
    assert!(ct.starts_with("application/json"), "{ct}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for p in ["/api/v1/messages", "/api/v1/search", "/api/v1/message/{ID}"] {
        assert!(doc["paths"][p].is_object(), "{p} not described");
    }
    assert!(doc["components"]["schemas"]["Error"]["properties"]["Code"].is_object());

    // Nothing is the latest of an empty inbox.
    let (status, ct, _, body) = call(&srv, "GET", "/api/v1/message/latest", &[]);
    assert_eq!(
        (status, ct.as_str()),
        (404, "application/json; charset=utf-8")
    );
    assert!(body.contains("\"notFound\""), "{body}");

    // One message (Python's smtplib), which no refused request may change.
    let subj = subject("inbox-api", rt);
    let ip = srv.ip.to_string();
    let port = SMTP_PORT.to_string();
    let (code, out) = py_send(
        &[
            "--host",
            &ip,
            "--port",
            &port,
            "--mail-from",
            "alice@example.org",
            "--to",
            "rmox@localhost",
            "--subject",
            &subj,
        ]
        .map(String::from),
    );
    assert_eq!(code, 0, "{out}\n{}", srv.stderr());
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let (status, _, _, body) = call(&srv, "GET", "/api/v1/messages", &[]);
        assert_eq!(status, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        if list["total"] == 1 {
            assert_eq!(list["messages"][0]["Subject"], subj.as_str(), "{list}");
            break list["messages"][0]["ID"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "not delivered: {list}\n{}",
            srv.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let known_and_unknown = format!("{{\"IDs\": [\"{id}\", \"999999\"]}}");

    let cases: &[Case] = &[
        (
            "PUT",
            "/api/v1/messages",
            &["{\"Read\": \"yes\"}"],
            400,
            "protocol",
            "true or false",
        ),
        (
            "DELETE",
            "/api/v1/messages",
            &["{\"IDs\": ["],
            400,
            "protocol",
            "not JSON",
        ),
        (
            "PUT",
            "/api/v1/messages",
            &["{\"IDs\": 5, \"Read\": true}"],
            400,
            "protocol",
            "IDs is a number",
        ),
        (
            "PUT",
            "/api/v1/messages",
            &["{\"IDs\": [7]}"],
            400,
            "protocol",
            "IDs[0]",
        ),
        (
            "DELETE",
            "/api/v1/messages",
            &[known_and_unknown.as_str()],
            404,
            "notFound",
            "999999",
        ),
        (
            "GET",
            "/api/v1/message/999999",
            &[],
            404,
            "notFound",
            "999999",
        ),
        (
            "GET",
            "/api/v1/message/abc",
            &[],
            400,
            "user",
            "invalid message ID",
        ),
        ("DELETE", "/api/v1/search", &[], 400, "user", "query"),
        ("GET", "/api/v1/nope", &[], 404, "notFound", "no route"),
        (
            "POST",
            "/api/v1/messages",
            &["{}"],
            405,
            "protocol",
            "use GET, PUT, DELETE",
        ),
        // Over limits.http_max_body_size (1 MiB by default): refused from the head by the
        // HTTP layer, which answers JSON on the webapi's port.
        (
            "DELETE",
            "/api/v1/messages",
            &["--oversize", "2000000"],
            413,
            "protocol",
            "413",
        ),
    ];
    for (method, path, args, want, code, says) in cases {
        let (status, ct, allow, body) = call(&srv, method, path, args);
        let what = format!("{method} {path} {args:?}: {status} {ct} {body}");
        assert_eq!(status, *want, "{what}\n{}", srv.stderr());
        assert!(ct.starts_with("application/json"), "{what}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {what}"));
        assert_eq!(v["Code"], *code, "{what}");
        let m = v["Message"].as_str().unwrap_or("");
        assert!(m.contains(says), "{what}");
        assert_eq!(allow.is_empty(), status != 405, "{what}");
    }
    // Nothing was deleted or marked read.
    let (_, _, _, body) = call(&srv, "GET", "/api/v1/messages", &[]);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&list["total"], &list["unread"]),
        (&1.into(), &1.into()),
        "{list}"
    );
    // The page and the view are still HTML and text.
    let (status, ct, _, body) = call(&srv, "GET", "/", &[]);
    assert_eq!(status, 200);
    assert!(
        ct.starts_with("text/html") && body.contains("id=\"messages\""),
        "{ct}"
    );
    let (status, ct, _, _) = call(&srv, "GET", "/view/999999.html", &[]);
    assert_eq!((status, ct.as_str()), (404, "text/plain; charset=utf-8"));
    srv.stop_clean();
    let log = srv.stderr();
    assert!(!log.contains("panicked"), "{log}");
}

rmox_tests::on_every_runtime!(inbox_in_chromium, inbox_api_errors);
