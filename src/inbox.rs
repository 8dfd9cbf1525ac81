//! The web inbox of `rmox localserve`, on the webapi's port (1080): a page listing what
//! arrived (new mail appears without a reload), a message view, and a JSON API compatible
//! with Mailpit's `/api/v1/` for the parts test suites use: list, get, raw, headers, parts,
//! search, mark read, delete. Search is core's ([`rmox_core::inbox::Query`]).
//!
//! The message's HTML is served on its own (`/view/ID.html`) with a Content-Security-Policy
//! that forbids scripts and every remote load, and the page shows it in a sandboxed iframe.
//!
//! The routes are `ROUTES`; the router answers nothing else, and
//! `docs/inbox.openapi.json` (served at `/api/v1/openapi.json`) describes exactly them (a
//! test compares the two). Every refusal under `/api/v1/` is JSON `{"Code", "Message"}`
//! (`Refusal`): 400 `protocol` for a body that cannot be read, 400 `user` for a bad value,
//! 404 `notFound`, 405 `protocol` (with `Allow`), 500 `server`. The HTTP layer's own
//! refusals on this listener (413 for a body over `limits.http_max_body_size`, 400, 408,
//! 431, 501, 503) are JSON too: the webapi listener sets `ServerConfig::json_errors`. The
//! page and `/view/` answer their refusals as plain text.

use std::collections::BTreeMap;
use std::sync::Arc;

use mail_parser::{Address, MessageParser, MimeHeaders};
use rmox_core::http::{Header, RequestHead, Response};
use rmox_core::inbox::{Facts, Query};
use rmox_core::webapi::query_param;
use rmox_storage::MailStore;
use rmox_storage::{MessageId, MessageRecord};
use serde_json::{json, Value};

/// The page.
const PAGE: &str = include_str!("inbox.html");

/// The OpenAPI description of the routes, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../docs/inbox.openapi.json");

/// The policy of a message's HTML: inline styles and embedded images only.
pub const HTML_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox";

/// Most messages in one list answer (Mailpit's default is 50).
const MAX_LIMIT: usize = 1000;

/// The inbox of one account.
pub struct Inbox {
    store: Arc<dyn MailStore>,
    account: String,
}

/// What a route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// The page.
    Page,
    /// A message's HTML under [`HTML_POLICY`].
    View,
    /// Mailpit's MessagesSummary of every message.
    List,
    /// Marks messages read or unread.
    MarkRead,
    /// Deletes the given messages, or all.
    Delete,
    /// Mailpit's MessagesSummary of the messages matching a query.
    Search,
    /// Deletes the messages matching a query.
    DeleteSearch,
    /// Mailpit's Message (marks it read).
    Message,
    /// The message as received.
    Raw,
    /// The message's header fields.
    Headers,
    /// One MIME part's decoded content.
    Part,
    /// Mailpit's AppInformation.
    Info,
    /// [`OPENAPI`].
    Describe,
}

/// One route: a method and a path whose `{Name}` stands for one segment, or for the start
/// of one before a literal suffix (`{ID}.html`).
#[derive(Clone, Copy, Debug)]
struct Route {
    method: &'static str,
    path: &'static str,
    op: Op,
}

const fn route(method: &'static str, path: &'static str, op: Op) -> Route {
    Route { method, path, op }
}

/// Every route of the inbox, in the words of `docs/inbox.openapi.json`. The router answers
/// only these (a path that matches none is 404, a path that matches with another method
/// 405), so a route cannot be served without being listed here, and the tests check that
/// the document describes exactly this list.
const ROUTES: &[Route] = &[
    route("GET", "/", Op::Page),
    route("GET", "/view/{ID}.html", Op::View),
    route("GET", "/api/v1/messages", Op::List),
    route("PUT", "/api/v1/messages", Op::MarkRead),
    route("DELETE", "/api/v1/messages", Op::Delete),
    route("GET", "/api/v1/search", Op::Search),
    route("DELETE", "/api/v1/search", Op::DeleteSearch),
    route("GET", "/api/v1/message/{ID}", Op::Message),
    route("GET", "/api/v1/message/{ID}/raw", Op::Raw),
    route("GET", "/api/v1/message/{ID}/headers", Op::Headers),
    route("GET", "/api/v1/message/{ID}/part/{PartID}", Op::Part),
    route("GET", "/api/v1/info", Op::Info),
    route("GET", "/api/v1/openapi.json", Op::Describe),
];

/// The values of the `{Name}` segments of `pattern` when `path` matches it.
fn match_path<'a>(pattern: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let mut want = pattern.split('/');
    let mut got = path.split('/');
    let mut params = Vec::new();
    loop {
        match (want.next(), got.next()) {
            (None, None) => return Some(params),
            (Some(w), Some(g)) => match w.strip_prefix('{') {
                Some(rest) => {
                    let (_, suffix) = rest.split_once('}')?;
                    let v = g.strip_suffix(suffix).filter(|v| !v.is_empty())?;
                    params.push(v);
                }
                None if w == g => {}
                None => return None,
            },
            _ => return None,
        }
    }
}

/// Why a request is refused. Under `/api/v1/` the answer is JSON `{"Code": ..., "Message":
/// ...}` (the shape of the webapi's errors); on the page and `/view/` it is plain text.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Refusal {
    /// The request cannot be read: its body is not JSON, not an object, has a field of the
    /// wrong type or an unknown field. 400, code `protocol`.
    Protocol(String),
    /// A value is not acceptable: an ID that is not one, a search without a query, IDs and
    /// Search together. 400, code `user`.
    User(String),
    /// No such message, part or route. 404, code `notFound`.
    NotFound(String),
    /// The path is served, but not for this method; `allow` lists the methods. 405, code
    /// `protocol`, with an `Allow` header.
    Method {
        /// What was wrong.
        message: String,
        /// The methods the path is served for, comma-separated.
        allow: String,
    },
    /// Storage failed, or a stored message cannot be read (logged when made). 500, code
    /// `server`.
    Server(String),
}

impl Refusal {
    fn status_code(&self) -> (u16, &'static str) {
        match self {
            Refusal::Protocol(_) => (400, "protocol"),
            Refusal::User(_) => (400, "user"),
            Refusal::NotFound(_) => (404, "notFound"),
            Refusal::Method { .. } => (405, "protocol"),
            Refusal::Server(_) => (500, "server"),
        }
    }

    fn message(&self) -> &str {
        match self {
            Refusal::Protocol(m)
            | Refusal::User(m)
            | Refusal::NotFound(m)
            | Refusal::Server(m)
            | Refusal::Method { message: m, .. } => m,
        }
    }

    /// The answer under `/api/v1/`.
    fn json(&self) -> Response {
        let (status, code) = self.status_code();
        let body = rmox_core::webapi::json(&json!({"Code": code, "Message": self.message()}));
        self.with_allow(Response::new(
            status,
            "application/json; charset=utf-8",
            body,
        ))
    }

    /// The answer on the page and `/view/`.
    fn text(&self) -> Response {
        let (status, _) = self.status_code();
        self.with_allow(Response::new(
            status,
            "text/plain; charset=utf-8",
            format!("{}\n", self.message()),
        ))
    }

    fn with_allow(&self, mut r: Response) -> Response {
        if let Refusal::Method { allow, .. } = self {
            r.headers.push(Header::new("Allow", allow));
        }
        r
    }
}

/// A storage failure: logged, answered without details.
fn storage(e: impl std::fmt::Display) -> Refusal {
    tracing::error!(error = %e, "inbox: storage");
    Refusal::Server("storage error; see the server log".into())
}

/// `v` for a message: at most 64 characters, quoted and escaped.
fn shown(v: &str) -> String {
    let cut: String = v.chars().take(64).collect();
    if cut.len() < v.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// What kind of JSON value `v` is, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn json_ok(v: &Value) -> Response {
    Response::new(
        200,
        "application/json; charset=utf-8",
        rmox_core::webapi::json(v),
    )
}

/// Mailpit's answer to a change: `ok` as text.
fn ok() -> Response {
    Response::new(200, "text/plain; charset=utf-8", "ok")
}

/// The fields of the JSON body of `PUT` and `DELETE /api/v1/messages`, read as Mailpit
/// reads them (Go's encoding/json): a field's name matches case-insensitively, `null` is
/// the field's absence, an empty body is `{}`. Unlike Mailpit, a body that is not a JSON
/// object or has an unknown field is refused: with `IDs` misspelt the request would
/// otherwise apply to every message.
#[derive(Debug, Default)]
struct Selection {
    /// `IDs`: message IDs (strings); none: every message.
    ids: Vec<String>,
    /// `Read` (PUT): mark read (`true`) or unread (`false`, the default, as Mailpit).
    read: Option<bool>,
    /// `Search` (PUT): a search query selecting the messages instead of `IDs`.
    search: String,
}

impl Selection {
    /// Reads `body` with the fields `allowed` (of `IDs`, `Read`, `Search`).
    fn parse(body: &[u8], allowed: &[&str]) -> Result<Selection, Refusal> {
        let mut sel = Selection::default();
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(sel);
        }
        let expected = allowed.join(", ");
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            Refusal::Protocol(format!(
                "the body is not JSON ({e}); expected an object with the fields {expected}, \
                 such as {{\"IDs\": [\"1\"]}}"
            ))
        })?;
        let Value::Object(fields) = v else {
            return Err(Refusal::Protocol(format!(
                "the body is {}; expected a JSON object with the fields {expected}, such as \
                 {{\"IDs\": [\"1\"]}}",
                kind(&v)
            )));
        };
        let mut seen: Vec<&str> = Vec::new();
        for (key, value) in &fields {
            let Some(name) = allowed
                .iter()
                .copied()
                .find(|n| n.eq_ignore_ascii_case(key))
            else {
                return Err(Refusal::Protocol(format!(
                    "unknown field {} in the body; expected {expected}",
                    shown(key)
                )));
            };
            if seen.contains(&name) {
                return Err(Refusal::Protocol(format!(
                    "field {name} is given twice (names match case-insensitively)"
                )));
            }
            seen.push(name);
            match (name, value) {
                (_, Value::Null) => {}
                ("IDs", Value::Array(a)) => {
                    for (i, x) in a.iter().enumerate() {
                        let Value::String(id) = x else {
                            return Err(Refusal::Protocol(format!(
                                "IDs[{i}] is {}; every ID must be a string, such as \"1\"",
                                kind(x)
                            )));
                        };
                        sel.ids.push(id.clone());
                    }
                }
                ("IDs", x) => {
                    return Err(Refusal::Protocol(format!(
                        "IDs is {}; expected an array of message ID strings, such as \
                         [\"1\", \"2\"]",
                        kind(x)
                    )))
                }
                ("Read", Value::Bool(b)) => sel.read = Some(*b),
                ("Read", x) => {
                    return Err(Refusal::Protocol(format!(
                        "Read is {}; expected true or false",
                        kind(x)
                    )))
                }
                ("Search", Value::String(q)) => sel.search = q.trim().to_string(),
                (_, x) => {
                    return Err(Refusal::Protocol(format!(
                        "{name} is {}; expected a search query string, such as \
                         \"subject:invoice\"",
                        kind(x)
                    )))
                }
            }
        }
        Ok(sel)
    }
}

/// `{"Name", "Address"}` of each address.
fn addresses(a: Option<&Address<'_>>) -> Vec<Value> {
    a.map(|a| {
        a.iter()
            .map(|x| json!({"Name": x.name().unwrap_or(""), "Address": x.address().unwrap_or("")}))
            .collect()
    })
    .unwrap_or_default()
}

/// "Name address" strings of `v` (search facts).
fn flat(v: &[Value]) -> String {
    v.iter()
        .map(|a| {
            format!(
                "{} {}",
                a["Name"].as_str().unwrap_or(""),
                a["Address"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The unfolded header fields of a message, in order.
fn header_fields(bytes: &[u8]) -> Vec<(String, String)> {
    let end = rmox_core::message::body_offset(bytes).unwrap_or(bytes.len());
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// One message as the list shows it, with what search needs.
struct Summary {
    json: Value,
    text: String,
}

impl Inbox {
    /// The inbox of `account`.
    pub fn new(store: Arc<dyn MailStore>, account: &str) -> Inbox {
        Inbox {
            store,
            account: account.to_string(),
        }
    }

    /// The account's messages, newest first.
    fn records(&self) -> Result<Vec<MessageRecord>, Refusal> {
        let mut v: Vec<MessageRecord> = self
            .store
            .messages(&self.account)
            .map_err(storage)?
            .into_iter()
            .filter(|m| !m.expunged)
            .collect();
        v.sort_by_key(|m| std::cmp::Reverse(m.id));
        Ok(v)
    }

    fn summary(&self, rec: &MessageRecord) -> Summary {
        let bytes = self.store.message_bytes(rec.id).unwrap_or_default();
        let m = MessageParser::default().parse(&bytes);
        let (from, to, cc, bcc, reply_to, subject, message_id, text, attachments) = match &m {
            Some(m) => (
                addresses(m.from())
                    .into_iter()
                    .next()
                    .unwrap_or(Value::Null),
                addresses(m.to()),
                addresses(m.cc()),
                addresses(m.bcc()),
                addresses(m.reply_to()),
                m.subject().unwrap_or("").to_string(),
                m.message_id().unwrap_or("").to_string(),
                m.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
                m.attachment_count(),
            ),
            None => Default::default(),
        };
        let snippet: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let snippet: String = snippet.chars().take(250).collect();
        let auth = header_fields(&bytes)
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("authentication-results"))
            .map(|(_, v)| v)
            .unwrap_or_default();
        Summary {
            json: json!({
                "ID": rec.id.0.to_string(),
                "MessageID": message_id,
                "Read": rec.flags.seen,
                "From": from,
                "To": to,
                "Cc": cc,
                "Bcc": bcc,
                "ReplyTo": reply_to,
                "Subject": subject,
                "Created": rec.received.rfc3339(),
                "Username": "",
                "Tags": [],
                "Size": rec.size,
                "Attachments": attachments,
                "Snippet": snippet,
                "Authentication": auth,
            }),
            text,
        }
    }

    fn matches(q: &Query, s: &Summary) -> bool {
        let j = &s.json;
        let from = flat(std::slice::from_ref(&j["From"]));
        let mut to = Vec::new();
        for k in ["To", "Cc", "Bcc"] {
            to.extend(j[k].as_array().cloned().unwrap_or_default());
        }
        q.matches(&Facts {
            from: &from,
            to: &flat(&to),
            subject: j["Subject"].as_str().unwrap_or(""),
            text: &s.text,
            read: j["Read"].as_bool().unwrap_or(false),
            attachments: j["Attachments"].as_u64().unwrap_or(0) as usize,
        })
    }

    /// Mailpit's MessagesSummary of the messages matching `q`.
    fn list(&self, target: &str, q: &Query) -> Result<Response, Refusal> {
        let recs = self.records()?;
        let start: usize = query_param(target, "start")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let limit: usize = query_param(target, "limit")
            .and_then(|s| s.parse().ok())
            .unwrap_or(50)
            .clamp(1, MAX_LIMIT);
        let total = recs.len();
        let unread = recs.iter().filter(|r| !r.flags.seen).count();
        let (matched, page): (usize, Vec<Value>) = if q.is_empty() {
            let page = recs
                .iter()
                .skip(start)
                .take(limit)
                .map(|r| self.summary(r).json)
                .collect();
            (total, page)
        } else {
            let hits: Vec<Summary> = recs
                .iter()
                .map(|r| self.summary(r))
                .filter(|s| Self::matches(q, s))
                .collect();
            let n = hits.len();
            (
                n,
                hits.into_iter()
                    .skip(start)
                    .take(limit)
                    .map(|s| s.json)
                    .collect(),
            )
        };
        let unread_matched = page.iter().filter(|m| m["Read"] == false).count();
        Ok(json_ok(&json!({
            "total": total,
            "unread": unread,
            "count": page.len(),
            "messages_count": matched,
            "messages_unread": if q.is_empty() { unread } else { unread_matched },
            "start": start,
            "tags": [],
            "messages": page,
        })))
    }

    /// The record of `id` (`latest`: the newest) when it is the account's.
    fn record(&self, id: &str) -> Result<MessageRecord, Refusal> {
        if id == "latest" {
            return self.records()?.into_iter().next().ok_or_else(|| {
                Refusal::NotFound("there are no messages, so none is the latest".into())
            });
        }
        let n: u64 = id.parse().map_err(|_| {
            Refusal::User(format!(
                "invalid message ID {}: expected a number (the ID of a message in \
                 /api/v1/messages) or latest",
                shown(id)
            ))
        })?;
        self.store
            .message(MessageId(n))
            .map_err(storage)?
            .filter(|m| m.account == self.account && !m.expunged)
            .ok_or_else(|| Refusal::NotFound(format!("no message with ID {n}")))
    }

    /// Mailpit's Message, marking it read.
    fn message(&self, rec: &MessageRecord) -> Result<Response, Refusal> {
        let bytes = self.store.message_bytes(rec.id).map_err(storage)?;
        let Some(m) = MessageParser::default().parse(&bytes) else {
            tracing::error!(id = rec.id.0, "inbox: a stored message cannot be parsed");
            return Err(Refusal::Server(format!(
                "message {} cannot be parsed; GET /api/v1/message/{}/raw has its bytes",
                rec.id.0, rec.id.0
            )));
        };
        if !rec.flags.seen {
            let mut f = rec.flags;
            f.seen = true;
            self.store.set_flags(rec.id, f).map_err(storage)?;
        }
        let mut inline = Vec::new();
        let mut attached = Vec::new();
        for (i, p) in m.parts.iter().enumerate() {
            let is_body = m.text_body.contains(&(i as u32)) || m.html_body.contains(&(i as u32));
            let leaf = !matches!(
                p.body,
                mail_parser::PartType::Multipart(_) | mail_parser::PartType::Message(_)
            );
            if !leaf || is_body && p.attachment_name().is_none() {
                continue;
            }
            if i == 0 {
                continue;
            }
            let a = json!({
                "PartID": i.to_string(),
                "FileName": p.attachment_name().unwrap_or(""),
                "ContentType": p.content_type().map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream"))).unwrap_or_else(|| "text/plain".into()),
                "ContentID": p.content_id().unwrap_or(""),
                "Size": p.contents().len(),
            });
            if p.content_disposition()
                .is_some_and(|d| d.ctype().eq_ignore_ascii_case("inline"))
                || p.content_id().is_some()
            {
                inline.push(a);
            } else {
                attached.push(a);
            }
        }
        let html = if m.html_body.first() != m.text_body.first() {
            m.body_html(0).map(|h| h.into_owned()).unwrap_or_default()
        } else {
            String::new()
        };
        let return_path = header_fields(&bytes)
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("return-path"))
            .map(|(_, v)| v.trim_matches(['<', '>']).to_string())
            .unwrap_or_else(|| rec.info.mail_from.clone().unwrap_or_default());
        Ok(json_ok(&json!({
            "ID": rec.id.0.to_string(),
            "MessageID": m.message_id().unwrap_or(""),
            "From": addresses(m.from()).into_iter().next().unwrap_or(Value::Null),
            "To": addresses(m.to()),
            "Cc": addresses(m.cc()),
            "Bcc": addresses(m.bcc()),
            "ReplyTo": addresses(m.reply_to()),
            "ReturnPath": return_path,
            "Subject": m.subject().unwrap_or(""),
            "ListUnsubscribe": {"Header": "", "Links": [], "Errors": "", "HeaderPost": ""},
            "Date": m.date().map(|d| d.to_rfc3339()).unwrap_or_else(|| rec.received.rfc3339()),
            "Tags": [],
            "Username": "",
            "Text": m.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
            "HTML": html,
            "Size": rec.size,
            "Inline": inline,
            "Attachments": attached,
        })))
    }

    /// The bytes of message `id` as received.
    fn stored(&self, id: &str) -> Result<Vec<u8>, Refusal> {
        let rec = self.record(id)?;
        self.store.message_bytes(rec.id).map_err(storage)
    }

    /// The messages `ids` name (none: every message); all of them must be the account's.
    fn select(&self, ids: &[String]) -> Result<Vec<MessageId>, Refusal> {
        if ids.is_empty() {
            return Ok(self.records()?.iter().map(|r| r.id).collect());
        }
        ids.iter().map(|id| self.record(id).map(|r| r.id)).collect()
    }

    /// The messages matching `q`.
    fn matching(&self, q: &Query) -> Result<Vec<MessageId>, Refusal> {
        Ok(self
            .records()?
            .iter()
            .filter(|r| Self::matches(q, &self.summary(r)))
            .map(|r| r.id)
            .collect())
    }

    /// Answers one request of the inbox.
    pub fn route(&self, head: &RequestHead, body: &[u8]) -> Response {
        let path = head.target.split(['?', '#']).next().unwrap_or_default();
        match self.dispatch(head, path, body) {
            Ok(r) => r,
            Err(e) if path.starts_with("/api/") => e.json(),
            Err(e) => e.text(),
        }
    }

    /// The route of `path` and `head.method` among [`ROUTES`], answered.
    fn dispatch(&self, head: &RequestHead, path: &str, body: &[u8]) -> Result<Response, Refusal> {
        let mut allow: Vec<&str> = Vec::new();
        for r in ROUTES {
            let Some(params) = match_path(r.path, path) else {
                continue;
            };
            if head.method.eq_ignore_ascii_case(r.method) {
                return self.call(r.op, &head.target, &params, body);
            }
            allow.push(r.method);
        }
        if allow.is_empty() {
            return Err(Refusal::NotFound(format!(
                "no route {} {}; the routes are described at /api/v1/openapi.json",
                head.method,
                shown(path)
            )));
        }
        let allow = allow.join(", ");
        Err(Refusal::Method {
            message: format!(
                "{} is not served for {}; use {allow}",
                shown(path),
                head.method
            ),
            allow,
        })
    }

    /// Runs `op` with the `{Name}` values of its path.
    fn call(
        &self,
        op: Op,
        target: &str,
        params: &[&str],
        body: &[u8],
    ) -> Result<Response, Refusal> {
        let param = |i: usize| params.get(i).copied().unwrap_or_default();
        let query = || query_param(target, "query").unwrap_or_default();
        match op {
            Op::Page => Ok(Response::new(200, "text/html; charset=utf-8", PAGE)),
            Op::Describe => Ok(Response::new(
                200,
                "application/json; charset=utf-8",
                OPENAPI,
            )),
            Op::List => self.list(target, &Query::default()),
            Op::Search => {
                let q = Query::parse(&query());
                if q.is_empty() {
                    return Err(Refusal::User(
                        "GET /api/v1/search needs a search in the query parameter, such as \
                         ?query=subject:invoice (GET /api/v1/messages lists every message)"
                            .into(),
                    ));
                }
                self.list(target, &q)
            }
            Op::Delete => {
                let sel = Selection::parse(body, &["IDs"])?;
                self.delete(&self.select(&sel.ids)?)
            }
            Op::DeleteSearch => {
                let q = Query::parse(&query());
                if q.is_empty() {
                    return Err(Refusal::User(
                        "DELETE /api/v1/search needs a search in the query parameter, such as \
                         ?query=subject:invoice (DELETE /api/v1/messages deletes every message)"
                            .into(),
                    ));
                }
                self.delete(&self.matching(&q)?)
            }
            Op::MarkRead => self.mark(body),
            Op::Message => self.message(&self.record(param(0))?),
            Op::Raw => Ok(Response::new(
                200,
                "text/plain; charset=utf-8",
                self.stored(param(0))?,
            )),
            Op::Headers => {
                let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (n, v) in header_fields(&self.stored(param(0))?) {
                    map.entry(n).or_default().push(v);
                }
                Ok(json_ok(&json!(map)))
            }
            Op::Part => self.part(param(0), param(1)),
            Op::View => self.view(param(0)),
            Op::Info => {
                let recs = self.records()?;
                Ok(json_ok(&json!({
                    "Version": concat!("rmox ", env!("CARGO_PKG_VERSION")),
                    "LatestVersion": "",
                    "Database": "",
                    "DatabaseSize": 0,
                    "Messages": recs.len(),
                    "Unread": recs.iter().filter(|r| !r.flags.seen).count(),
                    "Tags": {},
                    "RuntimeStats": {},
                })))
            }
        }
    }

    /// `PUT /api/v1/messages`: marks the messages of `IDs`, of `Search`, or every message,
    /// read (`Read` true) or unread (`Read` false or absent, as Mailpit).
    fn mark(&self, body: &[u8]) -> Result<Response, Refusal> {
        let sel = Selection::parse(body, &["IDs", "Read", "Search"])?;
        let ids = if sel.search.is_empty() {
            self.select(&sel.ids)?
        } else {
            if !sel.ids.is_empty() {
                return Err(Refusal::User("give either IDs or Search, not both".into()));
            }
            let q = Query::parse(&sel.search);
            if q.is_empty() {
                return Err(Refusal::User(format!(
                    "Search {} has no search terms; leave it out to mark every message",
                    shown(&sel.search)
                )));
            }
            self.matching(&q)?
        };
        let read = sel.read.unwrap_or(false);
        for id in ids {
            let Some(rec) = self.store.message(id).map_err(storage)? else {
                continue;
            };
            let mut f = rec.flags;
            f.seen = read;
            self.store.set_flags(id, f).map_err(storage)?;
        }
        Ok(ok())
    }

    /// `GET /api/v1/message/{ID}/part/{PartID}`: the decoded content of a leaf part.
    fn part(&self, id: &str, part: &str) -> Result<Response, Refusal> {
        let rec = self.record(id)?;
        let bytes = self.store.message_bytes(rec.id).map_err(storage)?;
        let m = MessageParser::default().parse(&bytes);
        let p = part
            .parse::<usize>()
            .ok()
            .and_then(|i| m.as_ref()?.parts.get(i))
            .filter(|p| !matches!(p.body, mail_parser::PartType::Multipart(_)));
        let Some(p) = p else {
            return Err(Refusal::NotFound(format!(
                "message {} has no part {}; the PartID of each is in Inline and Attachments \
                 of GET /api/v1/message/{}",
                rec.id.0,
                shown(part),
                rec.id.0
            )));
        };
        let ct = p
            .content_type()
            .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream")))
            .unwrap_or_else(|| "application/octet-stream".into());
        let mut r = Response::new(200, &ct, p.contents().to_vec());
        if let Some(n) = p.attachment_name() {
            let n = n.replace(['"', '\\', '\r', '\n'], "");
            r.headers.push(Header::new(
                "Content-Disposition",
                &format!("attachment; filename=\"{n}\""),
            ));
        }
        Ok(r)
    }

    /// `GET /view/{ID}.html`: the message's HTML under [`HTML_POLICY`].
    fn view(&self, id: &str) -> Result<Response, Refusal> {
        let rec = self.record(id)?;
        let bytes = self.store.message_bytes(rec.id).unwrap_or_default();
        let html = MessageParser::default()
            .parse(&bytes)
            .and_then(|m| m.body_html(0).map(|h| h.into_owned()))
            .unwrap_or_default();
        let mut r = Response::new(200, "text/html; charset=utf-8", html);
        r.headers
            .push(Header::new("Content-Security-Policy", HTML_POLICY));
        r.headers
            .push(Header::new("X-Content-Type-Options", "nosniff"));
        Ok(r)
    }

    fn delete(&self, ids: &[MessageId]) -> Result<Response, Refusal> {
        for id in ids {
            self.store.expunge(*id).map_err(storage)?;
        }
        Ok(ok())
    }
}

#[cfg(test)]
mod tests;
