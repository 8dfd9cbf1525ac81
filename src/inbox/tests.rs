//! The inbox's routes answered in process: Mailpit's shapes, search, read marks, parts,
//! the HTML policy, deletion; another account's messages stay invisible.

use std::sync::Arc;

use rmox_core::http::{Header, RequestHead, Response};
use rmox_storage::{Delivery, Flags, MessageId, Store};
use serde_json::Value;

use super::{match_path, Inbox, HTML_POLICY, OPENAPI, ROUTES};
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
        inbox: Inbox::new(store.clone(), "rmox"),
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

/// The served document: `docs/inbox.openapi.json`, parsed.
fn document(e: &Env) -> Value {
    let r = e.req("GET", "/api/v1/openapi.json", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), Some("application/json; charset=utf-8"));
    assert_eq!(r.body, OPENAPI.as_bytes());
    let doc: Value = serde_json::from_slice(&r.body).expect("docs/inbox.openapi.json parses");
    assert_eq!(doc["openapi"], "3.1.0");
    doc
}

/// `v` with its `$ref`s followed within `doc`.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("remote $ref {r}"));
        v = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {r}"));
    }
    v
}

/// The (METHOD, path) pairs the document describes.
fn described(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    out.sort();
    out
}

/// Checks `v` against `schema` (the part of JSON Schema the document uses: `$ref`, `type`
/// as a name or a list, `oneOf`, `enum`, `const`, `properties`, `required`,
/// `additionalProperties`, `items`).
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let s = resolve(doc, schema);
    if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
        let n = alts
            .iter()
            .filter(|a| conforms(doc, a, v, at).is_ok())
            .count();
        if n != 1 {
            return Err(format!("{at}: {n} alternatives of oneOf match {v}"));
        }
    }
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            t => t.as_str().into_iter().collect(),
        };
        let actual = match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !types
            .iter()
            .any(|t| *t == actual || (*t == "number" && actual == "integer"))
        {
            return Err(format!("{at}: {actual}, the document says {types:?}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            return Err(format!("{at}: {v} is not {c}"));
        }
    }
    match v {
        Value::Object(o) => {
            for r in s["required"].as_array().into_iter().flatten() {
                let r = r.as_str().unwrap();
                if !o.contains_key(r) {
                    return Err(format!("{at}: no {r}"));
                }
            }
            for (k, x) in o {
                let at = format!("{at}.{k}");
                match (s["properties"].get(k), s.get("additionalProperties")) {
                    (Some(p), _) => conforms(doc, p, x, &at)?,
                    (None, Some(Value::Bool(false))) => {
                        return Err(format!("{at}: not in the document"))
                    }
                    (None, Some(ap @ Value::Object(_))) => conforms(doc, ap, x, &at)?,
                    (None, _) => {}
                }
            }
        }
        Value::Array(a) => {
            if let Some(items) = s.get("items") {
                for (i, x) in a.iter().enumerate() {
                    conforms(doc, items, x, &format!("{at}[{i}]"))?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The document describes exactly the routes the router serves ([`ROUTES`]), declares the
/// parameters of each path, and answers every refusal under `/api/v1/` with the Error
/// schema as JSON; the page and `/view/` refuse in text.
#[test]
fn openapi_describes_the_routes() {
    let e = env("inbox-openapi");
    let doc = document(&e);
    let mut served: Vec<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    served.sort();
    let n = served.len();
    served.dedup();
    assert_eq!(served.len(), n, "a route is listed twice in ROUTES");
    assert_eq!(described(&doc), served);
    for (method, path) in described(&doc) {
        let op = &doc["paths"][&path][method.to_ascii_lowercase()];
        assert!(op["operationId"].is_string(), "{method} {path}");
        assert!(op["summary"].is_string(), "{method} {path}");
        let params: Vec<&Value> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| resolve(&doc, p))
            .collect();
        // Every {Name} of the path is a required path parameter, and nothing else is.
        let mut in_path: Vec<&str> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{method} {path}: {p}");
                p["name"].as_str().unwrap()
            })
            .collect();
        in_path.sort_unstable();
        let mut names: Vec<&str> = path
            .split('{')
            .skip(1)
            .map(|s| s.split('}').next().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(in_path, names, "{method} {path}");
        for (status, resp) in op["responses"].as_object().unwrap() {
            let resp = resolve(&doc, resp);
            let status: u16 = status.parse().unwrap();
            if status < 400 {
                continue;
            }
            if path.starts_with("/api/v1/") {
                let schema = &resp["content"]["application/json"]["schema"];
                assert_eq!(
                    resolve(&doc, schema),
                    &doc["components"]["schemas"]["Error"],
                    "{method} {path} {status}"
                );
                let codes = &doc["components"]["schemas"]["Error"]["properties"]["Code"];
                assert!(codes["enum"].as_array().unwrap().len() >= 4);
            } else {
                assert!(
                    resp["content"]["text/plain"].is_object(),
                    "{method} {path} {status}"
                );
            }
        }
    }
}

/// The request bodies the document names are the fields the code reads (Mailpit's names:
/// SetReadStatus reads `IDs`, `Read`, `Search`; DeleteMessages reads `IDs`), and every
/// answer of the JSON API has the shape the document gives it.
#[test]
fn openapi_bodies_and_shapes() {
    let e = env("inbox-shapes");
    let doc = document(&e);
    let schema = |method: &str, path: &str| -> Value {
        let body = &doc["paths"][path][method]["requestBody"]["content"]["application/json"];
        resolve(&doc, &body["schema"]).clone()
    };
    let fields = |s: &Value| -> Vec<String> {
        let mut v: Vec<String> = s["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    };
    let put = schema("put", "/api/v1/messages");
    let delete = schema("delete", "/api/v1/messages");
    assert_eq!(fields(&put), ["IDs", "Read", "Search"]);
    assert_eq!(fields(&delete), ["IDs"]);
    assert_eq!(put["additionalProperties"], false);
    assert_eq!(delete["additionalProperties"], false);
    // Each field the document names is read (null is its absence), in any case as Go's
    // decoder matches it; a field it does not name is refused.
    for name in fields(&put) {
        for n in [name.clone(), name.to_lowercase()] {
            let r = e.req(
                "PUT",
                "/api/v1/messages",
                format!("{{\"{n}\": null}}").as_bytes(),
            );
            assert_eq!(r.status, 200, "{n}: {}", String::from_utf8_lossy(&r.body));
        }
    }
    let r = e.req("PUT", "/api/v1/messages", b"{\"Unread\": true}");
    assert_eq!(r.status, 400);
    let r = e.req("DELETE", "/api/v1/messages", b"{\"Search\": \"x\"}");
    assert_eq!(
        r.status, 400,
        "DELETE reads no Search: it would delete everything"
    );
    for n in ["IDs", "ids"] {
        let r = e.req(
            "DELETE",
            "/api/v1/messages",
            format!("{{\"{n}\": null}}").as_bytes(),
        );
        assert_eq!(r.status, 200, "{n}");
    }

    let inv = e.deliver("rmox", HTML_MSG);
    e.deliver("rmox", PLAIN_MSG);
    let ok_schema = |method: &str, path: &str| -> Value {
        let resp = resolve(&doc, &doc["paths"][path][method]["responses"]["200"]);
        resp["content"]["application/json"]["schema"].clone()
    };
    for (target, path) in [
        ("/api/v1/messages?limit=5".to_string(), "/api/v1/messages"),
        ("/api/v1/search?query=invoice".into(), "/api/v1/search"),
        (format!("/api/v1/message/{}", inv.0), "/api/v1/message/{ID}"),
        ("/api/v1/message/latest".into(), "/api/v1/message/{ID}"),
        (
            format!("/api/v1/message/{}/headers", inv.0),
            "/api/v1/message/{ID}/headers",
        ),
        ("/api/v1/info".into(), "/api/v1/info"),
    ] {
        let v = e.json(&target);
        if let Err(m) = conforms(&doc, &ok_schema("get", path), &v, &target) {
            panic!("{m}\n{v:#}");
        }
    }
    // The error shape itself.
    let r = e.req("GET", "/api/v1/message/abc", b"");
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    conforms(&doc, &doc["components"]["schemas"]["Error"], &v, "Error").unwrap();
}

/// One refused request: method, target, body; status, code (for JSON answers) and a piece
/// of the message.
struct Refused {
    method: &'static str,
    target: String,
    body: &'static [u8],
    status: u16,
    code: &'static str,
    says: &'static str,
}

fn refused(
    method: &'static str,
    target: impl Into<String>,
    body: &'static [u8],
    status: u16,
    code: &'static str,
    says: &'static str,
) -> Refused {
    Refused {
        method,
        target: target.into(),
        body,
        status,
        code,
        says,
    }
}

/// Every refusal under `/api/v1/` is JSON `{"Code", "Message"}` with the status of its
/// fault, and every refusal status the document names for a route (but 413, which the HTTP
/// layer answers before the route sees the body, and 500, a storage failure) is exercised
/// here; a path served with another method is 405 with `Allow`. Nothing is changed by a
/// refused request. The page and `/view/` refuse in text, as before.
#[test]
fn every_refusal_is_json() {
    let e = env("inbox-refusals");
    let doc = document(&e);
    let empty = env("inbox-refusals-empty");
    let id = e.deliver("rmox", HTML_MSG);
    let theirs = e.deliver("other", PLAIN_MSG);
    let before = e.json("/api/v1/messages");
    let msg = format!("/api/v1/message/{}", id.0);
    let mut cases = Vec::new();
    for m in ["PUT", "DELETE"] {
        cases.extend([
            refused(m, "/api/v1/messages", b"{", 400, "protocol", "not JSON"),
            refused(
                m,
                "/api/v1/messages",
                b"[\"1\"]",
                400,
                "protocol",
                "an array",
            ),
            refused(
                m,
                "/api/v1/messages",
                b"{\"IDs\": 5}",
                400,
                "protocol",
                "IDs is a number",
            ),
            refused(
                m,
                "/api/v1/messages",
                b"{\"IDs\": \"1\"}",
                400,
                "protocol",
                "array of",
            ),
            refused(
                m,
                "/api/v1/messages",
                b"{\"IDs\": [5]}",
                400,
                "protocol",
                "IDs[0]",
            ),
            refused(
                m,
                "/api/v1/messages",
                b"{\"Bogus\": 1}",
                400,
                "protocol",
                "unknown field",
            ),
            refused(
                m,
                "/api/v1/messages",
                b"{\"IDs\": [\"abc\"]}",
                400,
                "user",
                "invalid message ID",
            ),
            refused(
                m,
                "/api/v1/messages",
                b"{\"IDs\": [\"999999\"]}",
                404,
                "notFound",
                "999999",
            ),
            refused(
                m,
                "/api/v1/messages",
                b"{\"IDs\": [], \"ids\": []}",
                400,
                "protocol",
                "twice",
            ),
        ]);
    }
    let theirs_body: &'static [u8] = Box::leak(
        format!("{{\"IDs\": [\"{}\"]}}", theirs.0)
            .into_bytes()
            .into_boxed_slice(),
    );
    cases.extend([
        refused(
            "DELETE",
            "/api/v1/messages",
            theirs_body,
            404,
            "notFound",
            "no message",
        ),
        refused(
            "PUT",
            "/api/v1/messages",
            b"{\"Read\": \"yes\"}",
            400,
            "protocol",
            "true or false",
        ),
        refused(
            "PUT",
            "/api/v1/messages",
            b"{\"Search\": 1}",
            400,
            "protocol",
            "Search is a number",
        ),
        refused(
            "PUT",
            "/api/v1/messages",
            b"{\"Search\": \"\\\"\\\"\"}",
            400,
            "user",
            "no search terms",
        ),
        refused(
            "PUT",
            "/api/v1/messages",
            b"{\"IDs\": [\"1\"], \"Search\": \"x\"}",
            400,
            "user",
            "not both",
        ),
        refused(
            "DELETE",
            "/api/v1/search",
            b"",
            400,
            "user",
            "needs a search",
        ),
        refused(
            "DELETE",
            "/api/v1/search?query=",
            b"",
            400,
            "user",
            "needs a search",
        ),
        refused("GET", "/api/v1/search", b"", 400, "user", "needs a search"),
        refused(
            "GET",
            "/api/v1/search?query=%20",
            b"",
            400,
            "user",
            "needs a search",
        ),
        refused(
            "DELETE",
            "/api/v1/search?query=%20",
            b"",
            400,
            "user",
            "needs a search",
        ),
        refused(
            "GET",
            "/api/v1/message/abc",
            b"",
            400,
            "user",
            "expected a number",
        ),
        refused(
            "GET",
            "/api/v1/message/-1",
            b"",
            400,
            "user",
            "invalid message ID",
        ),
        refused(
            "GET",
            "/api/v1/message/999999",
            b"",
            404,
            "notFound",
            "no message with ID 999999",
        ),
        refused(
            "GET",
            format!("/api/v1/message/{}", theirs.0),
            b"",
            404,
            "notFound",
            "no message",
        ),
        refused(
            "GET",
            "/api/v1/message/abc/raw",
            b"",
            400,
            "user",
            "invalid message ID",
        ),
        refused(
            "GET",
            "/api/v1/message/999999/raw",
            b"",
            404,
            "notFound",
            "no message",
        ),
        refused(
            "GET",
            "/api/v1/message/abc/headers",
            b"",
            400,
            "user",
            "invalid message ID",
        ),
        refused(
            "GET",
            "/api/v1/message/999999/headers",
            b"",
            404,
            "notFound",
            "no message",
        ),
        refused(
            "GET",
            "/api/v1/message/abc/part/1",
            b"",
            400,
            "user",
            "invalid message ID",
        ),
        refused(
            "GET",
            "/api/v1/message/999999/part/1",
            b"",
            404,
            "notFound",
            "no message",
        ),
        refused(
            "GET",
            format!("{msg}/part/99"),
            b"",
            404,
            "notFound",
            "has no part",
        ),
        refused(
            "GET",
            format!("{msg}/part/x"),
            b"",
            404,
            "notFound",
            "has no part",
        ),
        refused(
            "GET",
            format!("{msg}/part/0"),
            b"",
            404,
            "notFound",
            "has no part",
        ),
        refused("GET", "/api/v1/nope", b"", 404, "notFound", "openapi.json"),
        refused(
            "GET",
            format!("{msg}/nope"),
            b"",
            404,
            "notFound",
            "no route",
        ),
        refused("GET", "/api/v1/message/", b"", 404, "notFound", "no route"),
        refused("GET", "/api/v2/messages", b"", 404, "notFound", "no route"),
        refused(
            "POST",
            "/api/v1/messages",
            b"{}",
            405,
            "protocol",
            "use GET, PUT, DELETE",
        ),
        refused(
            "PATCH",
            "/api/v1/search",
            b"",
            405,
            "protocol",
            "use GET, DELETE",
        ),
        refused("DELETE", msg.clone(), b"", 405, "protocol", "use GET"),
        // The page and the view: text, as before.
        refused("GET", "/view/abc.html", b"", 400, "", "invalid message ID"),
        refused("GET", "/view/999999.html", b"", 404, "", "no message"),
        refused("POST", "/", b"", 405, "", "use GET"),
        refused("GET", "/nope", b"", 404, "", "no route"),
    ]);
    for c in &cases {
        let r = e.req(c.method, &c.target, c.body);
        let what = format!(
            "{} {} {}: {} {}",
            c.method,
            c.target,
            String::from_utf8_lossy(c.body),
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.status, c.status, "{what}");
        if c.target.starts_with("/api/") {
            assert_eq!(
                r.content_type(),
                Some("application/json; charset=utf-8"),
                "{what}"
            );
            let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("{what}"));
            assert_eq!(v["Code"], c.code, "{what}");
            assert!(v["Message"].as_str().unwrap().contains(c.says), "{what}");
            assert_eq!(v.as_object().unwrap().len(), 2, "{what}");
        } else {
            assert_eq!(
                r.content_type(),
                Some("text/plain; charset=utf-8"),
                "{what}"
            );
            assert!(String::from_utf8_lossy(&r.body).contains(c.says), "{what}");
        }
        // A refusal of a served route is one the document names for it.
        let path = c.target.split('?').next().unwrap();
        if let Some((m, p)) = described(&doc)
            .into_iter()
            .find(|(m, p)| *m == c.method && match_path(p, path).is_some())
        {
            let responses = &doc["paths"][&p][m.to_ascii_lowercase()]["responses"];
            assert!(
                responses.get(c.status.to_string()).is_some(),
                "{what}: the document names no {} for {m} {p}",
                c.status
            );
        }
        let allow = rmox_core::http::codec::header(&r.headers, "allow");
        assert_eq!(allow.is_some(), r.status == 405, "{what}");
        if let Some(allow) = allow {
            // Allow lists exactly the methods the document gives the path.
            let path = c.target.split('?').next().unwrap();
            let mut want: Vec<String> = described(&doc)
                .into_iter()
                .filter(|(_, p)| match_path(p, path).is_some())
                .map(|(m, _)| m)
                .collect();
            let mut got: Vec<String> = allow.split(", ").map(str::to_string).collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{what}");
        }
    }
    let r = empty.req("GET", "/api/v1/message/latest", b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.content_type(), Some("application/json; charset=utf-8"));
    // Nothing changed: the same list, nothing read, nothing deleted.
    assert_eq!(e.json("/api/v1/messages"), before);
    assert!(e
        .store
        .message(theirs)
        .unwrap()
        .is_some_and(|m| !m.expunged));

    // Every refusal status the document names is exercised above, per route.
    for (method, path) in described(&doc) {
        let op = &doc["paths"][&path][method.to_ascii_lowercase()];
        for status in op["responses"].as_object().unwrap().keys() {
            let status: u16 = status.parse().unwrap();
            if status < 400 || status == 413 || status == 500 {
                continue;
            }
            assert!(
                cases.iter().any(|c| c.method == method
                    && c.status == status
                    && match_path(&path, c.target.split('?').next().unwrap()).is_some()),
                "no case for {status} of {method} {path}"
            );
        }
    }
    // Every path answers another method with 405 (the document's MethodNotAllowed).
    for r in ROUTES {
        let path = r
            .path
            .replace("{ID}", &id.0.to_string())
            .replace("{PartID}", "1");
        let resp = e.req("OPTIONS", &path, b"");
        assert_eq!(resp.status, 405, "{path}");
    }
    assert!(doc["components"]["responses"]["MethodNotAllowed"].is_object());
}
