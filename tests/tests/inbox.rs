//! localserve's web inbox in a real browser: headless Chromium (Debian's package), driven over
//! its DevTools protocol by tests/py/cdp_inbox.py, loads the page on an empty inbox, swaks
//! sends a message, and the page shows it without a reload; a click opens the view with its
//! headers, text, attachment and HTML, and the HTML (which tries a script and a remote image)
//! runs nothing and loads nothing. The checks read the DOM, not pixels.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;

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

rmox_tests::on_every_runtime!(inbox_in_chromium);
