//! The inbox's routes answered in process: Mailpit's shapes, search, read marks, parts,
//! the HTML policy, deletion; another account's messages stay invisible.

use std::sync::Arc;

use rmox_core::http::{Header, RequestHead, Response};
use rmox_storage::{Delivery, Flags, MessageId, Store};
use serde_json::Value;

use super::{Inbox, HTML_POLICY};
use crate::testutil::Tmp;

const HTML_MSG: &[u8] = b"From: Alice <alice@example.org>\r\nTo: Bob <bob@localhost>, carol@localhost\r\n\
Cc: dave@localhost\r\nSubject: Invoice 42\r\nMessage-ID: <inv42@example.org>\r\n\
Authentication-Results: localhost; spf=pass smtp.mailfrom=example.org\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\nContent-Type: multipart/alternative; boundary=a\r\n\r\n\
--a\r\nContent-Type: text/plain\r\n\r\nPlease pay the invoice.\r\n--a\r\nContent-Type: text/html\r\n\r\n\
<p>Please pay</p><script>alert(1)</script><img src=\"http://remote.example/x.png\">\r\n--a--\r\n\
--m\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\nContent-Disposition: attachment; filename=\"invoice.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--m--\r\n";

const PLAIN_MSG: &[u8] =
    b"From: bob@example.net\r\nTo: rmox@localhost\r\nSubject: lunch\r\n\r\nnoon?\r\n";

struct Env {
    _tmp: Tmp,
    store: Arc<Store>,
    inbox: Inbox,
}

fn env(tag: &str) -> Env {
    let tmp = Tmp::new(tag);
    let store = Arc::new(Store::open(&tmp.0.join("data")).unwrap());
    store.account_add("rmox", "localhost").unwrap();
    store.account_add("other", "localhost").unwrap();
    Env {
        inbox: Inbox::new(Arc::clone(&store), "rmox"),
        store,
        _tmp: tmp,
    }
}

impl Env {
    fn deliver(&self, account: &str, msg: &[u8]) -> MessageId {
        self.store
            .deliver(Delivery {
                account: account.into(),
                mailbox: "Inbox".into(),
                head: b"",
                message: msg,
                flags: Flags::default(),
                received: rmox_core::UnixTime(1_800_000_000),
                info: Default::default(),
            })
            .unwrap()
    }

    fn req(&self, method: &str, target: &str, body: &[u8]) -> Response {
        let head = RequestHead {
            method: method.into(),
            target: target.into(),
            minor: 1,
            headers: vec![Header::new("Host", "localhost")],
        };
        self.inbox.route(&head, body)
    }

    fn json(&self, target: &str) -> Value {
        let r = self.req("GET", target, b"");
        assert_eq!(
            r.status,
            200,
            "{target}: {}",
            String::from_utf8_lossy(&r.body)
        );
        serde_json::from_slice(&r.body).unwrap()
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["ID"].as_str().unwrap().to_string())
        .collect()
}

/// List (newest first, paged), search, get (marks read), headers, raw, parts.
#[test]
fn list_search_get() {
    let e = env("inbox-list");
    let inv = e.deliver("rmox", HTML_MSG);
    let lunch = e.deliver("rmox", PLAIN_MSG);
    e.deliver("other", PLAIN_MSG);
    let l = e.json("/api/v1/messages");
    assert_eq!(ids(&l), [lunch.0.to_string(), inv.0.to_string()]);
    assert_eq!(
        (
            l["total"].as_u64(),
            l["unread"].as_u64(),
            l["messages_count"].as_u64()
        ),
        (Some(2), Some(2), Some(2))
    );
    let m = &l["messages"][1];
    assert_eq!(m["Subject"], "Invoice 42");
    assert_eq!(m["From"]["Name"], "Alice");
    assert_eq!(m["To"][0]["Address"], "bob@localhost");
    assert_eq!(m["Cc"][0]["Address"], "dave@localhost");
    assert_eq!(m["Attachments"], 1);
    assert_eq!(m["Snippet"], "Please pay the invoice.");
    assert_eq!(m["MessageID"], "inv42@example.org");
    assert!(m["Authentication"].as_str().unwrap().contains("spf=pass"));
    assert_eq!(m["Created"], "2027-01-15T08:00:00Z");
    let page = e.json("/api/v1/messages?start=1&limit=1");
    assert_eq!(ids(&page), [inv.0.to_string()]);
    assert_eq!(page["start"], 1);
    for (q, want) in [
        ("invoice", vec![inv]),
        ("from%3Aalice", vec![inv]),
        ("to%3Adave", vec![inv]),
        ("subject%3Alunch", vec![lunch]),
        ("has%3Aattachment", vec![inv]),
        ("-has%3Aattachment", vec![lunch]),
        ("nothing-matches", vec![]),
    ] {
        let r = e.json(&format!("/api/v1/search?query={q}"));
        let want: Vec<String> = want.iter().map(|i| i.0.to_string()).collect();
        assert_eq!(ids(&r), want, "{q}");
        assert_eq!(r["messages_count"].as_u64(), Some(want.len() as u64));
        assert_eq!(r["total"], 2);
    }
    // Get: Mailpit's Message; it is read afterwards.
    let g = e.json(&format!("/api/v1/message/{}", inv.0));
    assert_eq!(g["Subject"], "Invoice 42");
    assert_eq!(
        g["Text"].as_str().unwrap().trim(),
        "Please pay the invoice."
    );
    assert!(g["HTML"].as_str().unwrap().contains("<p>Please pay</p>"));
    assert_eq!(g["Attachments"][0]["FileName"], "invoice.pdf");
    assert_eq!(g["Attachments"][0]["ContentType"], "application/pdf");
    assert_eq!(
        e.json("/api/v1/search?query=is%3Aunread")["messages_count"],
        1
    );
    assert_eq!(e.json("/api/v1/messages")["unread"], 1);
    let latest = e.json("/api/v1/message/latest");
    assert_eq!(latest["ID"], lunch.0.to_string());
    let part = g["Attachments"][0]["PartID"].as_str().unwrap().to_string();
    let p = e.req(
        "GET",
        &format!("/api/v1/message/{}/part/{part}", inv.0),
        b"",
    );
    assert_eq!((p.status, p.body.as_slice()), (200, &b"%PDF-1.4\n"[..]));
    assert_eq!(p.content_type(), Some("application/pdf"));
    let raw = e.req("GET", &format!("/api/v1/message/{}/raw", inv.0), b"");
    assert_eq!(raw.body, HTML_MSG);
    let h = e.json(&format!("/api/v1/message/{}/headers", inv.0));
    assert_eq!(h["Subject"], serde_json::json!(["Invoice 42"]));
    assert_eq!(
        h["To"],
        serde_json::json!(["Bob <bob@localhost>, carol@localhost"])
    );
    // Unknown, malformed and other accounts' ids.
    let theirs = MessageId(lunch.0 + 1);
    for t in [
        format!("/api/v1/message/{}", theirs.0),
        "/api/v1/message/999".into(),
    ] {
        assert_eq!(e.req("GET", &t, b"").status, 404, "{t}");
    }
    assert_eq!(e.req("GET", "/api/v1/message/abc", b"").status, 400);
    assert_eq!(
        e.req("GET", &format!("/api/v1/message/{}/part/99", inv.0), b"")
            .status,
        404
    );
    assert_eq!(e.req("POST", "/api/v1/messages", b"").status, 405);
    assert_eq!(e.req("GET", "/nope", b"").status, 404);
    let page = e.req("GET", "/", b"");
    assert!(String::from_utf8_lossy(&page.body).contains("id=\"messages\""));
}

/// The message's HTML is served with a policy that allows no script and no remote load.
#[test]
fn html_view_policy() {
    let e = env("inbox-html");
    let id = e.deliver("rmox", HTML_MSG);
    let r = e.req("GET", &format!("/view/{}.html", id.0), b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), Some("text/html; charset=utf-8"));
    assert_eq!(
        rmox_core::http::codec::header(&r.headers, "content-security-policy"),
        Some(HTML_POLICY)
    );
    assert!(HTML_POLICY.contains("default-src 'none'") && HTML_POLICY.contains("sandbox"));
    assert!(!HTML_POLICY.contains("script-src"));
}

/// PUT marks read/unread, DELETE removes the given IDs or all; DELETE on a search removes
/// what matches; bad bodies are 400.
#[test]
fn mark_and_delete() {
    let e = env("inbox-del");
    let a = e.deliver("rmox", HTML_MSG);
    let b = e.deliver("rmox", PLAIN_MSG);
    let c = e.deliver("rmox", PLAIN_MSG);
    let theirs = e.deliver("other", PLAIN_MSG);
    let r = e.req(
        "PUT",
        "/api/v1/messages",
        format!("{{\"IDs\": [\"{}\"], \"Read\": true}}", a.0).as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(e.json("/api/v1/messages")["unread"], 2);
    e.req("PUT", "/api/v1/messages", b"{\"Read\": true}");
    assert_eq!(e.json("/api/v1/messages")["unread"], 0);
    e.req("PUT", "/api/v1/messages", b"{\"Read\": false}");
    assert_eq!(e.json("/api/v1/messages")["unread"], 3);
    let r = e.req(
        "DELETE",
        "/api/v1/messages",
        format!("{{\"IDs\": [\"{}\"]}}", b.0).as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        ids(&e.json("/api/v1/messages")),
        [c.0.to_string(), a.0.to_string()]
    );
    assert_eq!(
        e.req("DELETE", "/api/v1/search?query=invoice", b"").status,
        200
    );
    assert_eq!(ids(&e.json("/api/v1/messages")), [c.0.to_string()]);
    assert_eq!(e.req("DELETE", "/api/v1/search", b"").status, 400);
    for bad in [&b"{"[..], b"{\"IDs\": 5}", b"{\"IDs\": [5]}"] {
        assert_eq!(e.req("DELETE", "/api/v1/messages", bad).status, 400);
    }
    // Another account's id is not found, and nothing is deleted.
    let r = e.req(
        "DELETE",
        "/api/v1/messages",
        format!("{{\"IDs\": [\"{}\"]}}", theirs.0).as_bytes(),
    );
    assert_eq!(r.status, 404);
    assert_eq!(ids(&e.json("/api/v1/messages")), [c.0.to_string()]);
    assert_eq!(e.req("DELETE", "/api/v1/messages", b"").status, 200);
    assert_eq!(e.json("/api/v1/messages")["total"], 0);
    assert!(e
        .store
        .message(theirs)
        .unwrap()
        .is_some_and(|m| !m.expunged));
}
