//! The webapi answered in process: authentication and its limit, every method, and the
//! errors of bad requests (what a real HTTP client sees is tested in tests/tests/webapi.rs).

use std::net::SocketAddr;
use std::sync::Arc;

use rmox_core::http::{Header, RequestHead, Response};
use rmox_storage::{Delivery, Flags, MailStore, MessageId, Store};
use serde_json::{json, Value};

use super::Webapi;
use crate::config::Config;
use crate::testutil::Tmp;
use crate::world::World;

const CONFIG: &str = r#"
hostname = "host.mox.example"
data_dir = "data"

[domain."mox.example"]
[domain."other.example"]

[account.mjl]
domain = "mox.example"
destinations = { "mjl@mox.example" = {} }
max_outgoing_messages_per_day = 2
[account.mjl.junk_filter]

[account.other]
domain = "other.example"
destinations = { "other@other.example" = {} }

[limits]
auth_failures_per_minute = 3
"#;

struct Env {
    _tmp: Tmp,
    store: Arc<Store>,
    api: Webapi,
    config: Arc<Config>,
}

fn env(tag: &str) -> Env {
    env_with(tag, CONFIG)
}

fn env_with(tag: &str, config: &str) -> Env {
    let tmp = Tmp::new(tag);
    let c = Config::parse(config, &tmp.0.join("rmox.toml")).unwrap();
    let store = Arc::new(Store::open(&c.data_dir()).unwrap());
    for (name, a) in &c.account {
        store.account_add(name, &a.domain).unwrap();
        crate::admin::set_password(store.as_ref(), name, "testtest").unwrap();
    }
    let c = Arc::new(c);
    let world = Arc::new(
        World::new(
            Arc::clone(&c),
            Arc::clone(&store) as Arc<dyn MailStore>,
            None,
        )
        .unwrap(),
    );
    Env {
        _tmp: tmp,
        api: Webapi::new(world, store.clone()),
        store,
        config: c,
    }
}

const MJL: &str = "Basic bWpsQG1veC5leGFtcGxlOnRlc3R0ZXN0"; // mjl@mox.example:testtest

fn remote(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 40000)
}

impl Env {
    fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        ct: Option<&str>,
        body: &[u8],
        ip: &str,
    ) -> Response {
        let mut headers = vec![Header::new("Host", "localhost")];
        if let Some(a) = auth {
            headers.push(Header::new("Authorization", a));
        }
        if let Some(c) = ct {
            headers.push(Header::new("Content-Type", c));
        }
        let head = RequestHead {
            method: method.into(),
            target: path.into(),
            minor: 1,
            headers,
        };
        self.api.answer(remote(ip), &head, body)
    }

    /// A JSON call as mjl; the status and the JSON answer.
    fn call(&self, method: &str, req: Value) -> (u16, Value) {
        let r = self.request(
            "POST",
            &format!("/webapi/v0/{method}"),
            Some(MJL),
            Some("application/json"),
            req.to_string().as_bytes(),
            "192.0.2.1",
        );
        (r.status, body_json(&r))
    }

    fn deliver(&self, account: &str, msg: &[u8]) -> MessageId {
        self.store
            .deliver(Delivery {
                account: account.into(),
                mailbox: "Inbox".into(),
                head: b"",
                message: msg,
                flags: Flags::default(),
                received: rmox_core::UnixTime(1_800_000_000),
                info: rmox_storage::MessageInfo {
                    mail_from: Some("bob@example.org".into()),
                    remote_ip: Some("198.51.100.7".parse().unwrap()),
                    ..Default::default()
                },
            })
            .unwrap()
    }
}

fn body_json(r: &Response) -> Value {
    assert!(
        r.content_type()
            .unwrap_or("")
            .starts_with("application/json"),
        "{} {:?}: {}",
        r.status,
        r.content_type(),
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).unwrap()
}

fn code(v: &Value) -> &str {
    v["Code"].as_str().unwrap_or("")
}

/// No credentials or wrong ones: 401 JSON with a Basic challenge; after
/// `auth_failures_per_minute` failures from one IP even the right password gets 429,
/// while another IP is not affected.
#[test]
fn authentication_and_its_limit() {
    let e = env("webapi-auth");
    let body = br#"{}"#;
    let path = "/webapi/v0/SuppressionList";
    let r = e.request(
        "POST",
        path,
        None,
        Some("application/json"),
        body,
        "192.0.2.9",
    );
    assert_eq!(r.status, 401);
    assert_eq!(code(&body_json(&r)), "badAuth");
    assert_eq!(
        rmox_core::http::codec::header(&r.headers, "www-authenticate"),
        Some("Basic realm=\"webapi\"")
    );
    // The right password, by address and by account name.
    let r = e.request(
        "POST",
        path,
        Some(MJL),
        Some("application/json"),
        body,
        "192.0.2.9",
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let by_name = "Basic bWpsOnRlc3R0ZXN0"; // mjl:testtest
    let r = e.request(
        "POST",
        path,
        Some(by_name),
        Some("application/json"),
        body,
        "192.0.2.9",
    );
    assert_eq!(r.status, 200);
    let wrong = "Basic bWpsQG1veC5leGFtcGxlOndyb25n"; // mjl@mox.example:wrong
    for _ in 0..3 {
        let r = e.request(
            "POST",
            path,
            Some(wrong),
            Some("application/json"),
            body,
            "192.0.2.9",
        );
        assert_eq!(r.status, 401);
    }
    let r = e.request(
        "POST",
        path,
        Some(MJL),
        Some("application/json"),
        body,
        "192.0.2.9",
    );
    assert_eq!(r.status, 429);
    assert_eq!(code(&body_json(&r)), "tooManyAuthFailures");
    let r = e.request(
        "POST",
        path,
        Some(MJL),
        Some("application/json"),
        body,
        "192.0.2.10",
    );
    assert_eq!(r.status, 200);
}

/// Paths and methods: redirect, index, description, unknown method 404, GET on a method
/// 405; malformed requests 400 with code protocol.
#[test]
fn routes_and_bad_requests() {
    let e = env("webapi-routes");
    let r = e.request("GET", "/webapi/", None, None, b"", "192.0.2.1");
    assert_eq!(r.status, 303);
    let r = e.request("GET", "/webapi/v0/", None, None, b"", "192.0.2.1");
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("SuppressionList"));
    let r = e.request(
        "GET",
        "/webapi/v0/openapi.json",
        None,
        None,
        b"",
        "192.0.2.1",
    );
    let doc = body_json(&r);
    // Every method served is described, and nothing else.
    let mut described: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.strip_prefix("/webapi/v0/").unwrap())
        .collect();
    described.sort_unstable();
    let mut served = rmox_core::webapi::METHODS.to_vec();
    served.sort_unstable();
    assert_eq!(described, served);
    let r = e.request("POST", "/webapi/v0/Nope", Some(MJL), None, b"", "192.0.2.1");
    assert_eq!(
        (r.status, code(&body_json(&r)).to_string()),
        (404, "notFound".into())
    );
    let r = e.request("GET", "/webapi/v0/Send", Some(MJL), None, b"", "192.0.2.1");
    assert_eq!(r.status, 405);
    assert_eq!(code(&body_json(&r)), "protocol");
    for (ct, body, want) in [
        (
            Some("application/json"),
            &b"{\"To\": ["[..],
            "parsing request",
        ),
        (Some("application/json"), b"{\"Bogus\": 1}", "unknown field"),
        (Some("text/plain"), b"{}", "content-type"),
        (None, b"{}", "content-type"),
        (
            Some("application/x-www-form-urlencoded"),
            b"other=1",
            "missing/empty request",
        ),
    ] {
        let r = e.request("POST", "/webapi/v0/Send", Some(MJL), ct, body, "192.0.2.1");
        assert_eq!(r.status, 400);
        let v = body_json(&r);
        assert_eq!(code(&v), "protocol");
        assert!(v["Message"].as_str().unwrap().contains(want), "{v}");
    }
}

/// Send queues one entry per recipient with the composed message; the From must be the
/// account's; the account's sending limit answers messageLimitReached.
#[test]
fn send_queues_each_recipient() {
    let e = env("webapi-send");
    let (status, v) = e.call(
        "Send",
        json!({"To": [{"Name": "Bob", "Address": "bob@example.org"}],
               "BCC": [{"Address": "carol@example.org"}],
               "Subject": "webapi test", "Text": "hello\n",
               "AttachedFiles": [{"Name": "a.txt", "Data": "aGk="}]}),
    );
    assert_eq!(status, 200, "{v}");
    let subs = v["Submissions"].as_array().unwrap();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[1]["Address"], "carol@example.org");
    let msgid = v["MessageID"].as_str().unwrap();
    for (s, rcpt) in subs.iter().zip(["bob@example.org", "carol@example.org"]) {
        let id = rmox_storage::QueueId(s["QueueMsgID"].as_u64().unwrap());
        let q = e.store.queue_get(id).unwrap().expect("queued");
        assert_eq!(q.rcpt.recipient, rcpt);
        assert_eq!(q.rcpt.mail_from, "mjl@mox.example");
        let m = e.store.queue_message(q.msg_id).unwrap();
        let text = String::from_utf8_lossy(&m);
        assert!(text.contains("Subject: webapi test\r\n"), "{text}");
        assert!(text.contains(&format!("Message-ID: {msgid}\r\n")));
        assert!(text.contains("filename=\"a.txt\""));
        assert!(!text.contains("carol"), "Bcc stays out of the message");
    }
    let (status, v) = e.call(
        "Send",
        json!({"From": [{"Address": "other@other.example"}], "To": [{"Address": "bob@example.org"}], "Text": "x"}),
    );
    assert_eq!((status, code(&v)), (400, "badFrom"));
    let (status, v) = e.call(
        "Send",
        json!({"To": [{"Address": "bob@example.org"}], "Text": "x"}),
    );
    assert_eq!(status, 200, "{v}");
    // max_outgoing_messages_per_day = 2.
    let (status, v) = e.call(
        "Send",
        json!({"To": [{"Address": "bob@example.org"}], "Text": "x"}),
    );
    assert_eq!((status, code(&v)), (400, "messageLimitReached"), "{v}");
}

/// A DSN in RFC 3464's form about `rcpt`, sent back by `mta`.
fn dsn(to: &str, rcpt: &str, action: &str, status: &str, diagnostic: &str) -> Vec<u8> {
    format!(
        "From: MAILER-DAEMON@mta.example.org\r\nTo: {to}\r\nSubject: Delivery Status Notification\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
         --b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\
         --b1\r\nContent-Type: message/delivery-status\r\n\r\n\
         Reporting-MTA: dns; mta.example.org\r\n\r\n\
         Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n{diagnostic}\
         \r\n--b1--\r\n"
    )
    .into_bytes()
}

/// mox's fromid: logged in as a `from_id_login_addresses` address, each recipient gets its
/// own MAIL FROM; what comes back to it (a failed DSN, a delayed DSN, something else)
/// becomes an outgoing webhook of that entry, noted in its history, a failure suppressing
/// the recipient. SaveSent keeps a copy in Sent. Logged in otherwise, no ids.
#[test]
fn from_ids_attribute_returned_messages() {
    let config = CONFIG
        .replace(
            "[domain.\"mox.example\"]\n",
            "[domain.\"mox.example\"]\nlocalpart_catchall_separator = \"+\"\n",
        )
        .replace(
            "max_outgoing_messages_per_day = 2\n",
            "from_id_login_addresses = [\"mjl@mox.example\"]\n\
             [account.mjl.webhooks]\noutgoing_url = \"http://127.0.0.1:9/out\"\nsecret = \"0123456789abcdef\"\n",
        );
    let e = env_with("webapi-fromid", &config);
    let (status, v) = e.call(
        "Send",
        json!({"To": [{"Address": "bob@example.org"}, {"Address": "carol@example.org"}],
               "Subject": "order 7", "Text": "hello\n", "SaveSent": true,
               "Extra": {"order": "7"}}),
    );
    assert_eq!(status, 200, "{v}");
    let msgid = v["MessageID"].as_str().unwrap().to_string();
    let subs = v["Submissions"].as_array().unwrap();
    let mut ids = Vec::new();
    for s in subs {
        let fid = s["FromID"].as_str().unwrap().to_string();
        assert_eq!(fid.len(), 22, "{fid}");
        assert!(fid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let q = rmox_storage::QueueId(s["QueueMsgID"].as_u64().unwrap());
        let entry = e.store.queue_get(q).unwrap().unwrap();
        assert_eq!(entry.rcpt.mail_from, format!("mjl+{fid}@mox.example"));
        assert_eq!(entry.rcpt.from_id.as_ref().unwrap().message_id, msgid);
        ids.push((fid, q));
    }
    assert_ne!(ids[0].0, ids[1].0);
    // The Sent copy, read, with the queued bytes.
    let sent: Vec<_> = e
        .store
        .messages("mjl")
        .unwrap()
        .into_iter()
        .filter(|m| m.mailbox == "Sent")
        .collect();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].flags.seen);
    let copy = e.store.message_bytes(sent[0].id).unwrap();
    assert!(String::from_utf8_lossy(&copy).contains("Subject: order 7\r\n"));

    let arrive = |to: &str, msg: &[u8]| {
        let id = e
            .store
            .deliver(Delivery {
                account: "mjl".into(),
                mailbox: "Inbox".into(),
                head: b"",
                message: msg,
                flags: Flags::default(),
                received: rmox_core::UnixTime(1_800_000_000),
                info: rmox_storage::MessageInfo {
                    rcpt_to: Some(to.into()),
                    ..Default::default()
                },
            })
            .unwrap();
        crate::webhooks::store_incoming(e.store.as_ref(), &e.config, &[id]);
    };
    let hooks = || -> Vec<Value> {
        e.store
            .webhooks()
            .unwrap()
            .iter()
            .map(|h| serde_json::from_str(&h.payload).unwrap())
            .collect()
    };
    let (bob, carol) = (&ids[0], &ids[1]);
    arrive(
        &format!("mjl+{}@mox.example", bob.0),
        &dsn(
            "mjl@mox.example",
            "bob@example.org",
            "failed",
            "5.1.1",
            "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.org>: no such user\r\n",
        ),
    );
    arrive(
        &format!("mjl+{}@mox.example", carol.0),
        &dsn(
            "mjl@mox.example",
            "carol@example.org",
            "delayed",
            "4.4.1",
            "",
        ),
    );
    arrive(
        &format!("mjl+{}@mox.example", carol.0),
        b"Subject: out of office\r\n\r\nBack monday.\r\n",
    );
    // An id nobody sent with is ordinary mail (and without incoming_url, no hook).
    arrive(
        "mjl+AAAAAAAAAAAAAAAAAAAAAA@mox.example",
        &dsn("mjl@mox.example", "x@example.org", "failed", "5.1.1", ""),
    );
    let h = hooks();
    assert_eq!(h.len(), 3, "{h:?}");
    assert_eq!(h[0]["Event"], "failed");
    assert_eq!(h[0]["DSN"], true);
    assert_eq!(h[0]["Suppressing"], true);
    assert_eq!(h[0]["FromID"], bob.0.as_str());
    assert_eq!(h[0]["QueueMsgID"], bob.1 .0);
    assert_eq!(h[0]["MessageID"], msgid.as_str());
    assert_eq!(h[0]["Subject"], "order 7");
    assert_eq!(h[0]["SMTPCode"], 550);
    assert_eq!(h[0]["SMTPEnhancedCode"], "5.1.1");
    assert_eq!(h[0]["Extra"]["Order"], "7");
    assert_eq!(h[1]["Event"], "delayed");
    assert_eq!(
        (h[1]["SMTPCode"].clone(), h[1]["Suppressing"].clone()),
        (json!(400), json!(false))
    );
    assert_eq!(h[1]["SMTPEnhancedCode"], "4.4.1");
    assert_eq!(
        (h[2]["Event"].clone(), h[2]["DSN"].clone()),
        (json!("unrecognized"), json!(false))
    );
    assert!(e.store.is_suppressed("mjl", "bob@example.org").unwrap());
    assert!(!e.store.is_suppressed("mjl", "carol@example.org").unwrap());
    let history = e.store.queue_get(carol.1).unwrap().unwrap().history;
    let notes: Vec<&str> = history.iter().map(|a| a.result.as_str()).collect();
    assert_eq!(notes, ["dsn: delayed 4.4.1", "incoming message not a dsn"]);

    // Logged in by account name (not a from-id login address): one plain MAIL FROM.
    let r = e.request(
        "POST",
        "/webapi/v0/Send",
        Some("Basic bWpsOnRlc3R0ZXN0"), // mjl:testtest
        Some("application/json"),
        json!({"To": [{"Address": "dave@example.org"}], "Text": "x"})
            .to_string()
            .as_bytes(),
        "192.0.2.1",
    );
    let v = body_json(&r);
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v["Submissions"][0]["FromID"], "");
    let q = rmox_storage::QueueId(v["Submissions"][0]["QueueMsgID"].as_u64().unwrap());
    assert_eq!(
        e.store.queue_get(q).unwrap().unwrap().rcpt.mail_from,
        "mjl@mox.example"
    );
}

/// MessageMove: to a standard mailbox (any case) or one the account has, its training
/// following (Junk: spam, Archive: ham); an unknown mailbox, another account's message or
/// an unknown field is refused. WebhookList/WebhookRetiredList show the account's hooks only.
#[test]
fn message_move_and_webhook_lists() {
    let e = env("webapi-move");
    let id = e.deliver(
        "mjl",
        b"From: bob@example.org\r\nSubject: move me\r\n\r\nhello\r\n",
    );
    let (status, v) = e.call(
        "MessageMove",
        json!({"MsgID": id.0, "DestMailboxName": "junk"}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(e.store.message(id).unwrap().unwrap().mailbox, "Junk");
    assert!(e.store.junk_trained(id).unwrap().unwrap().spam);
    let (status, v) = e.call(
        "MessageMove",
        json!({"MsgID": id.0, "DestMailboxName": "Archive"}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(!e.store.junk_trained(id).unwrap().unwrap().spam);
    let (status, v) = e.call(
        "MessageMove",
        json!({"MsgID": id.0, "DestMailboxName": "Nope"}),
    );
    assert_eq!((status, code(&v)), (400, "notFound"), "{v}");
    let theirs = e.deliver("other", b"Subject: x\r\n\r\nx\r\n");
    let (status, v) = e.call(
        "MessageMove",
        json!({"MsgID": theirs.0, "DestMailboxName": "Junk"}),
    );
    assert_eq!((status, code(&v)), (400, "notFound"), "{v}");
    let (status, v) = e.call("MessageMove", json!({"MsgID": id.0, "Mailbox": "Junk"}));
    assert_eq!((status, code(&v)), (400, "protocol"), "{v}");
    assert_eq!(e.store.message(id).unwrap().unwrap().mailbox, "Archive");

    let hook = |account: &str, event: &str| rmox_storage::Webhook {
        id: 0,
        account: account.into(),
        url: "http://127.0.0.1:9/h".into(),
        kind: "outgoing".into(),
        event: event.into(),
        payload: json!({"Event": event}).to_string(),
        queued: rmox_core::UnixTime(1_800_000_000),
        attempts: 0,
        next_attempt: rmox_core::UnixTime(1_800_000_000),
        results: Vec::new(),
    };
    let a = e.store.webhook_add(hook("mjl", "delivered")).unwrap();
    e.store.webhook_add(hook("other", "failed")).unwrap();
    e.store.webhook_add(hook("mjl", "delayed")).unwrap();
    let result = rmox_storage::WebhookResult {
        time: rmox_core::UnixTime(1_800_000_001),
        status: 204,
        error: String::new(),
        duration_ms: 3,
    };
    e.store
        .webhook_result(a, result, None, true, rmox_core::UnixTime(1_800_000_001))
        .unwrap();
    let (status, v) = e.call("WebhookList", json!({}));
    assert_eq!(status, 200, "{v}");
    let events: Vec<&str> = v["Webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["Event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["delayed"]);
    assert_eq!(v["Webhooks"][0]["Payload"]["Event"], "delayed");
    let (status, v) = e.call("WebhookRetiredList", json!({"Limit": 5}));
    assert_eq!(status, 200, "{v}");
    let list = v["Webhooks"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    assert_eq!(
        (list[0]["ID"].as_u64(), list[0]["Success"].as_bool()),
        (Some(a), Some(true))
    );
    assert_eq!(list[0]["Results"][0]["Status"], 204);
    let (status, v) = e.call("WebhookList", json!({"Limit": "x"}));
    assert_eq!((status, code(&v)), (400, "protocol"), "{v}");
}

/// The account's own queue over the webapi: listed, held, released, kicked, dropped (with
/// a canceled webhook); another account's entry is not found; a held entry is not kicked.
#[test]
fn queue_management() {
    let config = CONFIG.replace(
        "max_outgoing_messages_per_day = 2\n",
        "[account.mjl.webhooks]\noutgoing_url = \"http://127.0.0.1:9/out\"\nsecret = \"0123456789abcdef\"\n",
    );
    let e = env_with("webapi-queue", &config);
    let (status, v) = e.call(
        "Send",
        json!({"To": [{"Address": "bob@example.org"}, {"Address": "carol@example.org"}], "Text": "x",
               "FutureRelease": "2099-01-01T00:00:00Z"}),
    );
    assert_eq!(status, 200, "{v}");
    let ids: Vec<u64> = v["Submissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["QueueMsgID"].as_u64().unwrap())
        .collect();
    let theirs = e
        .store
        .queue_add(
            b"Subject: x\r\n\r\nx\r\n",
            vec![rmox_storage::QueueRecipient {
                sender_account: Some("other".into()),
                mail_from: "other@other.example".into(),
                recipient: "z@example.org".into(),
                has_8bit: false,
                smtputf8: false,
                requiretls: rmox_storage::RequireTls::Default,
                transport: None,
                next_attempt: rmox_core::UnixTime(4_000_000_000),
                queued: rmox_core::UnixTime(1),
                hold: false,
                dsn: Default::default(),
                is_dsn: false,
                from_id: None,
            }],
        )
        .unwrap()[0];
    let (status, v) = e.call("QueueList", json!({}));
    assert_eq!(status, 200, "{v}");
    let listed: Vec<(u64, &str)> = v["Entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["QueueMsgID"].as_u64().unwrap(),
                x["Recipient"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [(ids[0], "bob@example.org"), (ids[1], "carol@example.org")]
    );
    assert_eq!(v["Entries"][0]["NextAttempt"], "2099-01-01T00:00:00Z");

    let q = |id: u64| e.store.queue_get(rmox_storage::QueueId(id)).unwrap();
    let (status, v) = e.call("QueueHold", json!({"QueueMsgID": ids[0]}));
    assert_eq!(status, 200, "{v}");
    assert!(q(ids[0]).unwrap().rcpt.hold);
    let (status, v) = e.call("QueueKick", json!({"QueueMsgID": ids[0]}));
    assert_eq!((status, code(&v)), (400, "user"), "{v}");
    let (status, _) = e.call("QueueRelease", json!({"QueueMsgID": ids[0]}));
    assert_eq!(status, 200);
    assert!(!q(ids[0]).unwrap().rcpt.hold);
    let (status, _) = e.call("QueueKick", json!({"QueueMsgID": ids[0]}));
    assert_eq!(status, 200);
    assert!(q(ids[0]).unwrap().rcpt.next_attempt.0 < 4_000_000_000);
    let (status, _) = e.call("QueueDrop", json!({"QueueMsgID": ids[1]}));
    assert_eq!(status, 200);
    assert!(q(ids[1]).is_none());
    let hooks = e.store.webhooks().unwrap();
    assert_eq!(hooks.len(), 1);
    assert_eq!(hooks[0].event, "canceled");
    for m in ["QueueHold", "QueueRelease", "QueueKick", "QueueDrop"] {
        let (status, v) = e.call(m, json!({"QueueMsgID": theirs.0}));
        assert_eq!((status, code(&v)), (400, "notFound"), "{m}: {v}");
    }
    assert!(q(theirs.0).is_some());
    let (status, v) = e.call("QueueDrop", json!({"ID": 1}));
    assert_eq!((status, code(&v)), (400, "protocol"), "{v}");
}

#[test]
fn suppressions() {
    let e = env("webapi-suppr");
    let present = |e: &Env| {
        e.call(
            "SuppressionPresent",
            json!({"EmailAddress": "Bob@Example.org"}),
        )
        .1["Present"]
            .clone()
    };
    assert_eq!(present(&e), json!(false));
    let (s, _) = e.call(
        "SuppressionAdd",
        json!({"EmailAddress": "bob@example.org", "Manual": true, "Reason": "asked"}),
    );
    assert_eq!(s, 200);
    assert_eq!(present(&e), json!(true));
    let (_, v) = e.call("SuppressionList", json!({}));
    let list = v["Suppressions"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["BaseAddress"], "bob@example.org");
    assert_eq!(list[0]["Manual"], true);
    assert_eq!(list[0]["Reason"], "asked");
    assert_eq!(list[0]["Account"], "mjl");
    // The queue refuses to send to it.
    assert!(e.store.is_suppressed("mjl", "bob@example.org").unwrap());
    let (s, _) = e.call(
        "SuppressionRemove",
        json!({"EmailAddress": "bob@example.org"}),
    );
    assert_eq!(s, 200);
    assert_eq!(present(&e), json!(false));
    let (s, v) = e.call(
        "SuppressionRemove",
        json!({"EmailAddress": "bob@example.org"}),
    );
    assert_eq!((s, code(&v)), (400, "notFound"));
    let (s, v) = e.call("SuppressionAdd", json!({"EmailAddress": "not an address"}));
    assert_eq!((s, code(&v)), (400, "badAddress"));
}

/// The account's own messages: parsed, raw, a part, flags (junk flags train), delete;
/// another account's message and a deleted one are notFound.
#[test]
fn messages() {
    let e = env("webapi-msgs");
    let msg = b"From: Bob <bob@example.org>\r\nTo: mjl@mox.example\r\nSubject: parts\r\n\
        Message-ID: <m1@example.org>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
        the text\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n\
        AAECAw==\r\n--b--\r\n";
    let id = e.deliver("mjl", msg);
    let theirs = e.deliver("other", msg);
    let (s, v) = e.call("MessageGet", json!({"MsgID": id.0}));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["Message"]["Subject"], "parts");
    assert_eq!(v["Message"]["From"][0]["Address"], "bob@example.org");
    assert_eq!(v["Message"]["MessageID"], "<m1@example.org>");
    assert_eq!(v["Message"]["Text"].as_str().unwrap().trim(), "the text");
    assert_eq!(v["Structure"]["ContentType"], "multipart/mixed");
    assert_eq!(v["Structure"]["Parts"][1]["DecodedSize"], 4);
    assert_eq!(v["Meta"]["MailboxName"], "Inbox");
    assert_eq!(v["Meta"]["MailFrom"], "bob@example.org");
    assert_eq!(v["Meta"]["RemoteIP"], "198.51.100.7");
    let raw = e.request(
        "POST",
        "/webapi/v0/MessageRawGet",
        Some(MJL),
        Some("application/json"),
        json!({"MsgID": id.0}).to_string().as_bytes(),
        "192.0.2.1",
    );
    assert_eq!((raw.status, raw.body.as_slice()), (200, &msg[..]));
    let p = e.request(
        "POST",
        "/webapi/v0/MessagePartGet",
        Some(MJL),
        Some("application/json"),
        json!({"MsgID": id.0, "PartPath": [1]})
            .to_string()
            .as_bytes(),
        "192.0.2.1",
    );
    assert_eq!((p.status, p.body.as_slice()), (200, &[0u8, 1, 2, 3][..]));
    assert_eq!(p.content_type(), Some("application/octet-stream"));
    let (s, v) = e.call("MessagePartGet", json!({"MsgID": id.0, "PartPath": [5]}));
    assert_eq!((s, code(&v)), (400, "notFound"));
    let (s, v) = e.call("MessagePartGet", json!({"MsgID": id.0, "PartPath": [0, 0]}));
    assert_eq!((s, code(&v)), (400, "notFound"));
    let (s, _) = e.call(
        "MessageFlagsAdd",
        json!({"MsgID": id.0, "Flags": ["\\Seen", "$Junk"]}),
    );
    assert_eq!(s, 200);
    let rec = e.store.message(id).unwrap().unwrap();
    assert!(rec.flags.seen && rec.flags.junk);
    assert!(
        e.store.junk_trained(id).unwrap().is_some(),
        "junk flag trains the filter"
    );
    let (_, v) = e.call("MessageGet", json!({"MsgID": id.0}));
    assert_eq!(v["Meta"]["Flags"], json!(["\\seen", "$junk"]));
    let (s, _) = e.call(
        "MessageFlagsRemove",
        json!({"MsgID": id.0, "Flags": ["$junk"]}),
    );
    assert_eq!(s, 200);
    assert!(!e.store.message(id).unwrap().unwrap().flags.junk);
    let (s, v) = e.call(
        "MessageFlagsAdd",
        json!({"MsgID": id.0, "Flags": ["$Forwarded"]}),
    );
    assert_eq!((s, code(&v)), (400, "user"));
    let (s, v) = e.call("MessageGet", json!({"MsgID": theirs.0}));
    assert_eq!((s, code(&v)), (400, "notFound"));
    let (s, v) = e.call("MessageDelete", json!({"MsgID": theirs.0}));
    assert_eq!((s, code(&v)), (400, "notFound"));
    let (s, _) = e.call("MessageDelete", json!({"MsgID": id.0}));
    assert_eq!(s, 200);
    let (s, v) = e.call("MessageGet", json!({"MsgID": id.0}));
    assert_eq!((s, code(&v)), (400, "notFound"));
    let (s, v) = e.call("MessageGet", json!({"MsgID": 999_999}));
    assert_eq!((s, code(&v)), (400, "notFound"));
}

/// `listener.webapi`: TLS by default (needs the listener's certificate), plain HTTP only on
/// loopback or in localserve, its port neither shared nor 0.
#[test]
fn listener_config() {
    let parse = |ip: &str, extra: &str, webapi: &str| {
        let text = format!(
            "hostname = \"mail.example.org\"\ndata_dir = \"data\"\n{extra}\
             [[listener]]\nname = \"l\"\nip = \"{ip}\"\nsmtp = {{ port = 25 }}\n{webapi}\n"
        );
        Config::parse(&text, std::path::Path::new("rmox.toml")).map_err(|e| e.to_string())
    };
    let tls = "tls = { cert_file = \"c.pem\", key_file = \"k.pem\" }\n";
    assert!(parse("127.0.0.1", "", "webapi = { port = 1080, tls = false }").is_ok());
    assert!(parse("192.0.2.1", "", &format!("{tls}webapi = {{ port = 1443 }}")).is_ok());
    assert!(parse(
        "0.0.0.0",
        "localserve = true\n",
        "webapi = { port = 1080, tls = false }"
    )
    .is_ok());
    // Disabled: nothing checked.
    assert!(parse(
        "192.0.2.1",
        "",
        "webapi = { port = 1080, tls = false, enabled = false }"
    )
    .is_ok());
    let e = parse("192.0.2.1", "", "webapi = { port = 1080, tls = false }").unwrap_err();
    assert!(
        e.contains("listener[0].webapi.tls") && e.contains("loopback"),
        "{e}"
    );
    let e = parse("127.0.0.1", "", "webapi = { port = 1443 }").unwrap_err();
    assert!(
        e.contains("listener[0].webapi") && e.contains("set tls"),
        "{e}"
    );
    let e = parse("127.0.0.1", "", "webapi = { port = 25, tls = false }").unwrap_err();
    assert!(
        e.contains("listener[0].webapi.port") && e.contains("also"),
        "{e}"
    );
    let e = parse(
        "127.0.0.1",
        "",
        "webapi = { port = 1080, tls = false, bogus = 1 }",
    )
    .unwrap_err();
    assert!(e.contains("bogus"), "{e}");

    let tmp = Tmp::new("webapi-bind");
    let ip = "127.0.0.1";
    let text = format!(
        "hostname = \"mail.example.org\"\ndata_dir = \"data\"\n\
         [[listener]]\nname = \"l\"\nip = \"{ip}\"\nwebapi = {{ port = 0, tls = false }}\n"
    );
    // Port 0 is refused like every other port.
    let e = Config::parse(&text, &tmp.0.join("rmox.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("listener[0].webapi.port") && e.contains("port 0"),
        "{e}"
    );
}
