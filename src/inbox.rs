//! The web inbox of `rmox localserve`, on the webapi's port (1080): a page listing what
//! arrived (new mail appears without a reload), a message view, and a JSON API compatible
//! with Mailpit's `/api/v1/` for the parts test suites use: list, get, raw, headers, parts,
//! search, mark read, delete. Search is core's ([`rmox_core::inbox::Query`]).
//!
//! The message's HTML is served on its own (`/view/ID.html`) with a Content-Security-Policy
//! that forbids scripts and every remote load, and the page shows it in a sandboxed iframe.

use std::collections::BTreeMap;
use std::sync::Arc;

use mail_parser::{Address, MessageParser, MimeHeaders};
use rmox_core::http::{Header, RequestHead, Response};
use rmox_core::inbox::{Facts, Query};
use rmox_core::webapi::query_param;
use rmox_storage::{MessageId, MessageRecord, Store};
use serde_json::{json, Value};

/// The page.
const PAGE: &str = include_str!("inbox.html");

/// The policy of a message's HTML: inline styles and embedded images only.
pub const HTML_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox";

/// Most messages in one list answer (Mailpit's default is 50).
const MAX_LIMIT: usize = 1000;

/// The inbox of one account.
pub struct Inbox {
    store: Arc<Store>,
    account: String,
}

fn text(status: u16, body: &str) -> Response {
    Response::new(status, "text/plain; charset=utf-8", body.to_string())
}

fn json_ok(v: &Value) -> Response {
    Response::new(
        200,
        "application/json; charset=utf-8",
        rmox_core::webapi::json(v),
    )
}

fn server_error(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "inbox: storage");
    text(500, "storage error; see the server log\n")
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
    pub fn new(store: Arc<Store>, account: &str) -> Inbox {
        Inbox {
            store,
            account: account.to_string(),
        }
    }

    /// The account's messages, newest first.
    fn records(&self) -> Result<Vec<MessageRecord>, Response> {
        let mut v: Vec<MessageRecord> = self
            .store
            .messages(&self.account)
            .map_err(server_error)?
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
    fn list(&self, target: &str, q: &Query) -> Response {
        let recs = match self.records() {
            Ok(r) => r,
            Err(r) => return r,
        };
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
        json_ok(&json!({
            "total": total,
            "unread": unread,
            "count": page.len(),
            "messages_count": matched,
            "messages_unread": if q.is_empty() { unread } else { unread_matched },
            "start": start,
            "tags": [],
            "messages": page,
        }))
    }

    /// The record of `id` (`latest`: the newest) when it is the account's.
    fn record(&self, id: &str) -> Result<MessageRecord, Response> {
        if id == "latest" {
            return self
                .records()?
                .into_iter()
                .next()
                .ok_or_else(|| text(404, "message not found\n"));
        }
        let n: u64 = id.parse().map_err(|_| text(400, "invalid message ID\n"))?;
        self.store
            .message(MessageId(n))
            .map_err(server_error)?
            .filter(|m| m.account == self.account && !m.expunged)
            .ok_or_else(|| text(404, "message not found\n"))
    }

    /// Mailpit's Message, marking it read.
    fn message(&self, rec: &MessageRecord) -> Response {
        let bytes = match self.store.message_bytes(rec.id) {
            Ok(b) => b,
            Err(e) => return server_error(e),
        };
        let Some(m) = MessageParser::default().parse(&bytes) else {
            return text(500, "message cannot be parsed\n");
        };
        if !rec.flags.seen {
            let mut f = rec.flags;
            f.seen = true;
            if let Err(e) = self.store.set_flags(rec.id, f) {
                return server_error(e);
            }
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
        json_ok(&json!({
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
        }))
    }

    /// The IDs of a DELETE/PUT body (`{"IDs": [...]}`; none or empty: every message).
    fn ids(&self, body: &[u8]) -> Result<Vec<MessageId>, Response> {
        let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|e| text(400, &format!("invalid JSON: {e}\n")))?
        };
        let ids: Vec<String> = match v.get("IDs") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| text(400, "IDs must be strings\n"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(text(400, "IDs must be an array\n")),
        };
        if ids.is_empty() {
            return Ok(self.records()?.iter().map(|r| r.id).collect());
        }
        ids.iter().map(|id| self.record(id).map(|r| r.id)).collect()
    }

    /// Answers one request of the inbox.
    pub fn route(&self, head: &RequestHead, body: &[u8]) -> Response {
        let path = head.target.split(['?', '#']).next().unwrap_or_default();
        let m = head.method.to_ascii_uppercase();
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (m.as_str(), segs.as_slice()) {
            ("GET", [""]) => Response::new(200, "text/html; charset=utf-8", PAGE),
            ("GET", ["api", "v1", "messages"]) => self.list(&head.target, &Query::default()),
            ("GET", ["api", "v1", "search"]) => {
                let q = query_param(&head.target, "query").unwrap_or_default();
                self.list(&head.target, &Query::parse(&q))
            }
            ("DELETE", ["api", "v1", "messages"]) => match self.ids(body) {
                Ok(ids) => self.delete(&ids),
                Err(r) => r,
            },
            ("DELETE", ["api", "v1", "search"]) => {
                let q = Query::parse(&query_param(&head.target, "query").unwrap_or_default());
                if q.is_empty() {
                    return text(400, "no search query\n");
                }
                let recs = match self.records() {
                    Ok(r) => r,
                    Err(r) => return r,
                };
                let ids: Vec<MessageId> = recs
                    .iter()
                    .filter(|r| Self::matches(&q, &self.summary(r)))
                    .map(|r| r.id)
                    .collect();
                self.delete(&ids)
            }
            ("PUT", ["api", "v1", "messages"]) => {
                let read = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v.get("Read").and_then(Value::as_bool))
                    .unwrap_or(true);
                let ids = match self.ids(body) {
                    Ok(ids) => ids,
                    Err(r) => return r,
                };
                for id in ids {
                    let Ok(Some(rec)) = self.store.message(id) else {
                        continue;
                    };
                    let mut f = rec.flags;
                    f.seen = read;
                    if let Err(e) = self.store.set_flags(id, f) {
                        return server_error(e);
                    }
                }
                text(200, "ok")
            }
            ("GET", ["api", "v1", "message", id]) => match self.record(id) {
                Ok(r) => self.message(&r),
                Err(r) => r,
            },
            ("GET", ["api", "v1", "message", id, what]) => {
                let rec = match self.record(id) {
                    Ok(r) => r,
                    Err(r) => return r,
                };
                let bytes = match self.store.message_bytes(rec.id) {
                    Ok(b) => b,
                    Err(e) => return server_error(e),
                };
                match *what {
                    "raw" => Response::new(200, "text/plain; charset=utf-8", bytes),
                    "headers" => {
                        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
                        for (n, v) in header_fields(&bytes) {
                            map.entry(n).or_default().push(v);
                        }
                        json_ok(&json!(map))
                    }
                    _ => text(404, "not found\n"),
                }
            }
            ("GET", ["api", "v1", "message", id, "part", part]) => {
                let rec = match self.record(id) {
                    Ok(r) => r,
                    Err(r) => return r,
                };
                let bytes = self.store.message_bytes(rec.id).unwrap_or_default();
                let m = MessageParser::default().parse(&bytes);
                let p = part
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| m.as_ref()?.parts.get(i));
                match p {
                    Some(p) if !matches!(p.body, mail_parser::PartType::Multipart(_)) => {
                        let ct = p
                            .content_type()
                            .map(|c| {
                                format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream"))
                            })
                            .unwrap_or_else(|| "application/octet-stream".into());
                        let mut r = Response::new(200, &ct, p.contents().to_vec());
                        if let Some(n) = p.attachment_name() {
                            let n = n.replace(['"', '\\', '\r', '\n'], "");
                            r.headers.push(Header::new(
                                "Content-Disposition",
                                &format!("attachment; filename=\"{n}\""),
                            ));
                        }
                        r
                    }
                    _ => text(404, "part not found\n"),
                }
            }
            ("GET", ["view", file]) if file.ends_with(".html") => {
                let rec = match self.record(file.trim_end_matches(".html")) {
                    Ok(r) => r,
                    Err(r) => return r,
                };
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
                r
            }
            ("GET", ["api", "v1", "info"]) => {
                let recs = self.records().unwrap_or_default();
                json_ok(&json!({
                    "Version": concat!("rmox ", env!("CARGO_PKG_VERSION")),
                    "LatestVersion": "",
                    "Database": "",
                    "DatabaseSize": 0,
                    "Messages": recs.len(),
                    "Unread": recs.iter().filter(|r| !r.flags.seen).count(),
                    "Tags": {},
                    "RuntimeStats": {},
                }))
            }
            (_, ["api", ..] | ["view", ..] | [""]) => text(405, "method not allowed\n"),
            _ => text(404, "not found\n"),
        }
    }

    fn delete(&self, ids: &[MessageId]) -> Response {
        for id in ids {
            if let Err(e) = self.store.expunge(*id) {
                return server_error(e);
            }
        }
        text(200, "ok")
    }
}

#[cfg(test)]
mod tests;
