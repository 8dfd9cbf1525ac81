//! The webapi: mox's `/webapi/v0/` methods over HTTP for applications (send mail, manage
//! the suppression list, read and change the account's messages). Requests and the
//! composition of messages are core's ([`rmox_core::webapi`]); this module authenticates,
//! reads and writes storage, and submits through [`World::webapi_send`].
//!
//! Every error is JSON `{"Code": ..., "Message": ...}`: 400 for a bad request, 401 for
//! missing or wrong credentials, 404 for an unknown method, 405 for a method other than
//! POST, 429 while the client's IP is over `limits.auth_failures_per_minute`, 500 when
//! storage fails. The description of every method is `docs/webapi.openapi.json`, served at
//! `/webapi/v0/openapi.json`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use rmox_core::http::{Header, RequestHead, Response};
use rmox_core::server::PasswordCheck;
use rmox_core::webapi::{self as api, ApiError};
use rmox_storage::MailStore;
use rmox_storage::{MessageId, MessageRecord};

use crate::world::World;

/// The OpenAPI description of the methods.
pub const OPENAPI: &str = include_str!("../docs/webapi.openapi.json");

/// The webapi's answers.
pub struct Webapi {
    world: Arc<World>,
    store: Arc<dyn MailStore>,
    /// localserve's web inbox, on the same port.
    inbox: Option<crate::inbox::Inbox>,
}

/// The answerer of webapi ports, bound before the server's [`World`] exists and given its
/// [`Webapi`] once it does; let go of it when the server stops (so that the store can
/// close). Without one requests get 503.
#[derive(Default)]
pub struct Late(RwLock<Option<Arc<Webapi>>>);

impl Late {
    /// Serves `w` from now on.
    pub fn set(&self, w: Webapi) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(w));
    }

    /// Lets go of the server's world and store.
    pub fn clear(&self) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl rmox_driver::http::HttpAnswerer for Late {
    fn answer(&self, remote: SocketAddr, head: RequestHead, body: Vec<u8>) -> Response {
        let w = self.0.read().unwrap_or_else(|e| e.into_inner()).clone();
        match w {
            Some(w) => w.answer(remote, &head, &body),
            None => error(
                503,
                &ApiError::new("server", "not serving (starting or stopping)"),
            ),
        }
    }
}

/// A JSON response.
fn json_response(status: u16, body: Vec<u8>) -> Response {
    Response::new(status, "application/json; charset=utf-8", body)
}

fn error(status: u16, e: &ApiError) -> Response {
    json_response(status, e.to_json())
}

/// A storage failure: logged, answered without details.
fn server_error(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "webapi: storage");
    ApiError::new("server", "storage error; see the server log")
}

/// The JSON names of the flags rmox stores (IMAP keywords, case-insensitive).
const FLAGS: &[&str] = &["\\Seen", "$Junk", "$NotJunk"];

impl Webapi {
    /// The webapi of a server.
    pub fn new(world: Arc<World>, store: Arc<dyn MailStore>) -> Webapi {
        Webapi {
            world,
            store,
            inbox: None,
        }
    }

    /// Serves `inbox` on the paths outside `/webapi/`.
    pub fn with_inbox(mut self, inbox: crate::inbox::Inbox) -> Webapi {
        self.inbox = Some(inbox);
        self
    }

    /// Answers one request; logs it with its result (a refusal with its reason: the JSON
    /// error's message, as the client got it).
    pub fn answer(&self, remote: SocketAddr, head: &RequestHead, body: &[u8]) -> Response {
        let (r, who) = self.route(remote, head, body);
        let reason = if r.status >= 400 {
            serde_json::from_slice::<ApiError>(&r.body)
                .map(|e| format!("{}: {}", e.code, e.message))
                .unwrap_or_else(|_| String::from_utf8_lossy(&r.body).trim().to_string())
        } else {
            String::new()
        };
        tracing::info!(
            %remote,
            method = %head.method,
            target = %head.target,
            status = r.status,
            account = who.as_deref().unwrap_or("-"),
            reason = %reason,
            "webapi request"
        );
        r
    }

    fn route(
        &self,
        remote: SocketAddr,
        head: &RequestHead,
        body: &[u8],
    ) -> (Response, Option<String>) {
        let path = head.target.split(['?', '#']).next().unwrap_or_default();
        let get = head.method.eq_ignore_ascii_case("GET");
        if let Some(inbox) = self.inbox.as_ref().filter(|_| !path.starts_with("/webapi")) {
            return (inbox.route(head, body), None);
        }
        if path == "/webapi" || path == "/webapi/" {
            let mut r = Response::new(303, "text/plain; charset=utf-8", "see /webapi/v0/\n");
            r.headers.push(Header::new("Location", api::PREFIX));
            return (r, None);
        }
        if path == api::PREFIX && get {
            return (index(), None);
        }
        if path == "/webapi/v0/openapi.json" && get {
            return (json_response(200, OPENAPI.as_bytes().to_vec()), None);
        }
        let Some(method) = path
            .strip_prefix(api::PREFIX)
            .filter(|m| api::METHODS.contains(m))
        else {
            let e = ApiError::new("notFound", format!("no webapi method at {path}"));
            return (error(404, &e), None);
        };
        if !head.method.eq_ignore_ascii_case("POST") {
            let mut r = error(
                405,
                &ApiError::new("protocol", format!("{method}: use POST")),
            );
            r.headers.push(Header::new("Allow", "POST"));
            return (r, None);
        }
        let ip = remote.ip();
        let Some((user, pass)) = api::basic_auth(head.header("authorization")) else {
            return (
                unauthorized("use http basic auth with email address as username"),
                None,
            );
        };
        let account = match self.world.http_login(&user, &pass, ip) {
            PasswordCheck::Valid { account } => account,
            PasswordCheck::RateLimited => {
                let e = ApiError::new(
                    "tooManyAuthFailures",
                    "too many failed authentications from your address; try later",
                );
                return (error(429, &e), None);
            }
            PasswordCheck::Disabled(_) => {
                return (unauthorized("login is disabled for this account"), None);
            }
            _ => {
                tracing::info!(%ip, username = %user, "webapi: authentication failed");
                return (
                    unauthorized("use http basic auth with email address as username"),
                    None,
                );
            }
        };
        let r = api::read_request(head.header("content-type"), body)
            .and_then(|req| self.call(method, &account, &user, ip, req));
        let r = match r {
            Ok(r) => r,
            Err(e) if e.code == "server" => error(500, &e),
            Err(e) => error(400, &e),
        };
        (r, Some(account))
    }

    /// Runs one method for an authenticated account.
    fn call(
        &self,
        method: &str,
        account: &str,
        login: &str,
        ip: std::net::IpAddr,
        request: api::ApiRequest,
    ) -> Result<Response, ApiError> {
        let ok = |v: &dyn erased::Json| Ok(json_response(200, v.json()));
        let text = request.json.as_str();
        if method != "Send" && !request.files.is_empty() {
            return Err(ApiError::new("user", format!("{method} takes no files")));
        }
        match method {
            "Send" => {
                let mut req: api::SendRequest = api::parse(text)?;
                request.files.add_to(&mut req);
                let c = self.world.config();
                let default_from = api::NameAddress {
                    name: String::new(),
                    address: if login.contains('@') {
                        login.to_string()
                    } else {
                        self.default_address(account)?
                    },
                };
                let cx = api::ComposeContext {
                    default_from,
                    hostname: c.hostname.clone(),
                    now: rmox_driver::now().wall,
                    random: crate::serve::os_seed(),
                    max_size: usize::try_from(c.limits.max_message_size).unwrap_or(usize::MAX),
                };
                let composed = api::compose(&req, &cx)?;
                let ids = self.world.webapi_send(account, login, &composed, ip)?;
                let result = api::SendResult {
                    message_id: composed.message_id.clone(),
                    submissions: composed
                        .recipients
                        .iter()
                        .zip(ids)
                        .map(|(a, (id, from_id))| api::Submission {
                            address: a.clone(),
                            queue_msg_id: id.0,
                            from_id,
                        })
                        .collect(),
                };
                ok(&result)
            }
            "SuppressionList" => {
                let _: api::Empty = api::parse(text)?;
                let list = self.store.suppressions(account).map_err(server_error)?;
                let out: Vec<api::Suppression> = list
                    .into_iter()
                    .enumerate()
                    .map(|(i, s)| api::Suppression {
                        id: i as u64 + 1,
                        created: s.created.rfc3339(),
                        account: account.to_string(),
                        base_address: s.address.clone(),
                        original_address: s.address,
                        manual: s.manual,
                        reason: s.reason,
                    })
                    .collect();
                ok(&serde_json::json!({ "Suppressions": out }))
            }
            "SuppressionAdd" | "SuppressionRemove" | "SuppressionPresent" => {
                let req: api::AddressRequest = api::parse(text)?;
                let addr = req.email_address.trim();
                if rmox_core::smtp::Address::parse(addr).is_err() {
                    return Err(ApiError::new(
                        "badAddress",
                        format!("invalid address {addr:?}"),
                    ));
                }
                match method {
                    "SuppressionAdd" => {
                        let s = rmox_storage::Suppression {
                            address: addr.to_ascii_lowercase(),
                            reason: req.reason,
                            manual: req.manual,
                            created: rmox_driver::now().wall,
                        };
                        self.store
                            .suppression_add(account, s)
                            .map_err(server_error)?;
                        ok(&serde_json::json!({}))
                    }
                    "SuppressionRemove" => {
                        if !self
                            .store
                            .suppression_remove(account, addr)
                            .map_err(server_error)?
                        {
                            return Err(ApiError::new(
                                "notFound",
                                format!("{addr} is not on the suppression list"),
                            ));
                        }
                        ok(&serde_json::json!({}))
                    }
                    _ => {
                        let present = self
                            .store
                            .is_suppressed(account, addr)
                            .map_err(server_error)?;
                        ok(&serde_json::json!({ "Present": present }))
                    }
                }
            }
            "MessageGet" | "MessageRawGet" | "MessagePartGet" | "MessageDelete"
            | "MessageFlagsAdd" | "MessageFlagsRemove" => {
                let req: api::MessageRequest = api::parse(text)?;
                let id = MessageId(req.msg_id);
                let rec = self.own_message(account, id)?;
                match method {
                    "MessageDelete" => {
                        self.store.expunge(id).map_err(server_error)?;
                        ok(&serde_json::json!({}))
                    }
                    "MessageFlagsAdd" | "MessageFlagsRemove" => {
                        let on = method == "MessageFlagsAdd";
                        let mut flags = rec.flags;
                        for f in &req.flags {
                            match f.to_ascii_lowercase().as_str() {
                                "\\seen" => flags.seen = on,
                                "$junk" => flags.junk = on,
                                "$notjunk" | "$nonjunk" => flags.notjunk = on,
                                _ => {
                                    return Err(ApiError::new(
                                        "user",
                                        format!(
                                            "flag {f:?} is not stored by rmox (it keeps {})",
                                            FLAGS.join(", ")
                                        ),
                                    ))
                                }
                            }
                        }
                        if flags != rec.flags {
                            self.store.set_flags(id, flags).map_err(server_error)?;
                            if flags.junk != rec.flags.junk || flags.notjunk != rec.flags.notjunk {
                                let c = self.world.config();
                                crate::junk::sync(
                                    self.store.as_ref(),
                                    &c,
                                    id,
                                    rmox_driver::now().wall,
                                )
                                .map_err(server_error)?;
                            }
                        }
                        ok(&serde_json::json!({}))
                    }
                    _ => {
                        let bytes = self.store.message_bytes(id).map_err(server_error)?;
                        match method {
                            "MessageRawGet" => {
                                Ok(Response::new(200, "text/plain; charset=utf-8", bytes))
                            }
                            "MessagePartGet" => part(&bytes, &req.part_path),
                            _ => ok(&message_get(&rec, &bytes)),
                        }
                    }
                }
            }
            "MessageMove" => {
                let req: api::MessageMoveRequest = api::parse(text)?;
                let id = MessageId(req.msg_id);
                let rec = self.own_message(account, id)?;
                let dest = self.mailbox_named(account, &req.dest_mailbox_name)?;
                if dest != rec.mailbox {
                    self.store.message_move(id, &dest).map_err(server_error)?;
                    // Its junk training follows the mailbox (Junk: spam; others: ham).
                    let c = self.world.config();
                    crate::junk::sync(self.store.as_ref(), &c, id, rmox_driver::now().wall)
                        .map_err(server_error)?;
                }
                ok(&serde_json::json!({}))
            }
            "WebhookList" | "WebhookRetiredList" => {
                let req: api::WebhookListRequest = api::parse(text)?;
                let limit = req
                    .limit
                    .unwrap_or(api::WEBHOOK_LIST_MAX)
                    .min(api::WEBHOOK_LIST_MAX);
                let list: Vec<serde_json::Value> = if method == "WebhookList" {
                    let mut v = self.store.webhooks().map_err(server_error)?;
                    v.retain(|h| h.account == account);
                    v.iter()
                        .rev()
                        .take(limit)
                        .map(|h| hook_json(h, None))
                        .collect()
                } else {
                    let mut v = self.store.webhooks_retired().map_err(server_error)?;
                    v.retain(|r| r.hook.account == account);
                    v.iter()
                        .rev()
                        .take(limit)
                        .map(|r| hook_json(&r.hook, Some(r)))
                        .collect()
                };
                ok(&serde_json::json!({ "Webhooks": list }))
            }
            "QueueList" => {
                let _: api::Empty = api::parse(text)?;
                let f = rmox_storage::QueueFilter {
                    account: Some(account.to_string()),
                    ..Default::default()
                };
                let list = self.store.queue_list(&f).map_err(server_error)?;
                let out: Vec<serde_json::Value> = list.iter().map(queue_json).collect();
                ok(&serde_json::json!({ "Entries": out }))
            }
            "QueueHold" | "QueueRelease" | "QueueKick" | "QueueDrop" => {
                let req: api::QueueEntryRequest = api::parse(text)?;
                let id = rmox_storage::QueueId(req.queue_msg_id);
                let e = self
                    .store
                    .queue_get(id)
                    .map_err(server_error)?
                    .filter(|e| e.rcpt.sender_account.as_deref() == Some(account))
                    .ok_or_else(|| ApiError::new("notFound", "queue entry not found"))?;
                let now = rmox_driver::now().wall;
                match method {
                    "QueueHold" => {
                        self.store.queue_hold(id).map_err(server_error)?;
                    }
                    "QueueRelease" => {
                        self.store.queue_release(id).map_err(server_error)?;
                        self.world.wake_queue();
                    }
                    "QueueKick" => {
                        if e.rcpt.hold {
                            return Err(ApiError::new(
                                "user",
                                "the entry is held: QueueRelease it first",
                            ));
                        }
                        self.store
                            .queue_update_with(id, Box::new(move |e| e.rcpt.next_attempt = now))
                            .map_err(server_error)?;
                        self.world.wake_queue();
                    }
                    _ => {
                        let c = self.world.config();
                        crate::queue::cli::drop_entry(&c, self.store.as_ref(), &e)
                            .map_err(server_error)?;
                    }
                }
                tracing::info!(
                    account,
                    queue_id = id.0,
                    method,
                    "webapi: queue entry changed"
                );
                ok(&serde_json::json!({}))
            }
            _ => Err(ApiError::new("notFound", format!("no method {method}"))),
        }
    }

    /// Message `id` when it is the account's and not expunged; `notFound` otherwise.
    fn own_message(&self, account: &str, id: MessageId) -> Result<MessageRecord, ApiError> {
        self.store
            .message(id)
            .map_err(server_error)?
            .filter(|m| m.account == account && !m.expunged)
            .ok_or_else(|| ApiError::new("notFound", "message not found"))
    }

    /// The account's mailbox called `name` (any case for the standard ones and those it
    /// has), as it is stored; `notFound` for one it does not have.
    fn mailbox_named(&self, account: &str, name: &str) -> Result<String, ApiError> {
        let have = self.store.mailboxes(account).map_err(server_error)?;
        let std = api::STANDARD_MAILBOXES.iter().map(|m| m.to_string());
        have.into_iter()
            .chain(std)
            .find(|m| m.eq_ignore_ascii_case(name))
            .ok_or_else(|| ApiError::new("notFound", format!("mailbox {name:?} not found")))
    }

    /// `ACCOUNT@DOMAIN` when it is an address of the account, else its first address.
    fn default_address(&self, account: &str) -> Result<String, ApiError> {
        self.world
            .config()
            .account_address(account)
            .ok_or_else(|| ApiError::new("badFrom", "the account has no address to send from"))
    }
}

/// Serialisable values behind one reference.
mod erased {
    /// A value that becomes JSON.
    pub(super) trait Json {
        fn json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Vec<u8> {
            rmox_core::webapi::json(self)
        }
    }
}

fn unauthorized(msg: &str) -> Response {
    let mut r = error(401, &ApiError::new("badAuth", msg));
    r.headers
        .push(Header::new("WWW-Authenticate", "Basic realm=\"webapi\""));
    r
}

/// The page at `/webapi/v0/`: what the API is and its methods.
fn index() -> Response {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>rmox webapi</title></head><body>\
         <h1>rmox webapi v0</h1><p>POST to <code>/webapi/v0/METHOD</code> with HTTP basic \
         authentication (address and password) and the request as JSON, either as the form \
         field <code>request</code> (application/x-www-form-urlencoded) or as an \
         application/json body. Errors are JSON <code>{\"Code\", \"Message\"}</code>. \
         Description: <a href=\"openapi.json\">openapi.json</a>.</p><ul>",
    );
    for m in api::METHODS {
        html.push_str(&format!("<li>{m}</li>"));
    }
    html.push_str("</ul></body></html>\n");
    Response::new(200, "text/html; charset=utf-8", html)
}

/// `MessageGet`: the parsed message (addresses, subject, text, HTML), its MIME structure
/// and what rmox knows of its delivery.
pub(crate) fn message_get(rec: &MessageRecord, bytes: &[u8]) -> serde_json::Value {
    use mail_parser::{Address, HeaderValue, MessageParser, MimeHeaders};
    use serde_json::json;
    let parsed = MessageParser::default().parse(bytes);
    let addrs = |a: Option<&Address<'_>>| -> Vec<serde_json::Value> {
        a.map(|a| {
            a.iter()
                .map(|x| {
                    json!({"Name": x.name().unwrap_or(""), "Address": x.address().unwrap_or("")})
                })
                .collect()
        })
        .unwrap_or_default()
    };
    const LIMIT: usize = 1 << 20;
    let cut = |s: Option<std::borrow::Cow<'_, str>>| -> String {
        let s = s.map(|s| s.into_owned()).unwrap_or_default();
        if s.len() <= LIMIT {
            return s;
        }
        let mut end = LIMIT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    };
    let message = match &parsed {
        Some(m) => json!({
            "From": addrs(m.from()),
            "To": addrs(m.to()),
            "CC": addrs(m.cc()),
            "BCC": addrs(m.bcc()),
            "ReplyTo": addrs(m.reply_to()),
            "MessageID": m.message_id().map(|i| format!("<{i}>")).unwrap_or_default(),
            "References": match m.references() {
                HeaderValue::Text(t) => vec![format!("<{t}>")],
                HeaderValue::TextList(l) => l.iter().map(|t| format!("<{t}>")).collect(),
                _ => vec![],
            },
            "Date": m.date().map(|d| d.to_rfc3339()),
            "Subject": m.subject().unwrap_or(""),
            "Text": cut(m.body_text(0)),
            "HTML": cut(m.body_html(0).filter(|_| m.html_body_count() > 0 && m.html_body.first() != m.text_body.first())),
        }),
        None => json!({}),
    };
    let structure = parsed
        .as_ref()
        .map(|m| structure(m, 0))
        .unwrap_or_else(|| json!({}));
    let info = &rec.info;
    let validated = |v: rmox_storage::Validation| {
        matches!(
            v,
            rmox_storage::Validation::Pass
                | rmox_storage::Validation::Strict
                | rmox_storage::Validation::Dmarc
                | rmox_storage::Validation::Relaxed
        )
    };
    let mut flags = Vec::new();
    if rec.flags.seen {
        flags.push("\\seen");
    }
    if rec.flags.junk {
        flags.push("$junk");
    }
    if rec.flags.notjunk {
        flags.push("$notjunk");
    }
    let dsn = parsed.as_ref().is_some_and(|m| {
        m.content_type()
            .and_then(|c| c.attribute("report-type"))
            .is_some_and(|t| t.eq_ignore_ascii_case("delivery-status"))
    });
    json!({
        "Message": message,
        "Structure": structure,
        "Meta": {
            "Size": rec.size,
            "DSN": dsn,
            "Flags": flags,
            "MailFrom": info.mail_from.clone().unwrap_or_default(),
            "MailFromValidated": validated(info.mail_from_validation),
            "RcptTo": info.rcpt_to.clone().unwrap_or_default(),
            "MsgFrom": info.from_address.clone().unwrap_or_default(),
            "MsgFromValidated": validated(info.from_validation),
            "DKIMVerifiedDomains": info.dkim_domains,
            "RemoteIP": info.remote_ip.map(|i| i.to_string()).unwrap_or_default(),
            "MailboxName": rec.mailbox,
        }
    })
}

/// mox's webhook.Structure of part `i`: content type and parameters, Content-ID, decoded
/// size, sub-parts.
fn structure(m: &mail_parser::Message<'_>, i: u32) -> serde_json::Value {
    use mail_parser::{MimeHeaders, PartType};
    let Some(p) = m.part(i) else {
        return serde_json::json!({});
    };
    let (ct, params) = match p.content_type() {
        Some(c) => (
            format!("{}/{}", c.ctype(), c.subtype().unwrap_or("")).to_ascii_lowercase(),
            c.attributes()
                .map(|a| {
                    a.iter()
                        .map(|x| {
                            (
                                x.name.to_ascii_lowercase(),
                                serde_json::Value::from(x.value.to_string()),
                            )
                        })
                        .collect::<serde_json::Map<_, _>>()
                })
                .unwrap_or_default(),
        ),
        None => ("text/plain".into(), Default::default()),
    };
    let parts: Vec<serde_json::Value> = match &p.body {
        PartType::Multipart(children) => children.iter().map(|c| structure(m, *c)).collect(),
        _ => vec![],
    };
    serde_json::json!({
        "ContentType": ct,
        "ContentTypeParams": params,
        "ContentID": p.content_id().map(|c| format!("<{c}>")).unwrap_or_default(),
        "DecodedSize": p.contents().len(),
        "Parts": parts,
    })
}

/// `MessagePartGet`: the decoded contents of the part at `path` (indexes into multiparts
/// from the root), with its content type.
fn part(bytes: &[u8], path: &[usize]) -> Result<Response, ApiError> {
    use mail_parser::{MimeHeaders, PartType};
    let m = mail_parser::MessageParser::default()
        .parse(bytes)
        .ok_or_else(|| ApiError::new("server", "message cannot be parsed"))?;
    let mut at = 0u32;
    for (depth, &i) in path.iter().enumerate() {
        let children = match m.part(at).map(|p| &p.body) {
            Some(PartType::Multipart(c)) => c,
            _ => {
                return Err(ApiError::new(
                    "notFound",
                    format!(
                        "part path {:?}: part {depth} is not multipart",
                        &path[..depth]
                    ),
                ))
            }
        };
        at = *children.get(i).ok_or_else(|| {
            ApiError::new(
                "notFound",
                format!("part path {:?}: no part {i}", &path[..=depth]),
            )
        })?;
    }
    let p = m
        .part(at)
        .ok_or_else(|| ApiError::new("notFound", "no such part"))?;
    if matches!(p.body, PartType::Multipart(_)) {
        return Err(ApiError::new(
            "user",
            "the part is multipart: give the path of a leaf part",
        ));
    }
    let ct = p
        .content_type()
        .map(|c| format!("{}/{}", c.ctype(), c.subtype().unwrap_or("octet-stream")))
        .unwrap_or_else(|| "text/plain".into());
    Ok(Response::new(200, &ct, p.contents().to_vec()))
}

#[cfg(test)]
mod tests;

/// A queue entry as QueueList shows it.
fn queue_json(e: &rmox_storage::QueueEntry) -> serde_json::Value {
    serde_json::json!({
        "QueueMsgID": e.id.0,
        "Recipient": e.rcpt.recipient,
        "MailFrom": e.rcpt.mail_from,
        "FromID": e.rcpt.from_id.as_ref().map_or("", |f| f.id.as_str()),
        "Size": e.size,
        "Queued": e.rcpt.queued.rfc3339(),
        "NextAttempt": e.rcpt.next_attempt.rfc3339(),
        "Hold": e.rcpt.hold,
        "Attempts": e.attempts,
        "LastAttempt": e.last_attempt.map(|t| t.rfc3339()),
        "LastError": e.last_error,
        "RequireTLS": match e.rcpt.requiretls {
            rmox_storage::RequireTls::Required => Some(true),
            rmox_storage::RequireTls::NotRequired => Some(false),
            _ => None,
        },
    })
}

/// A webhook as WebhookList and WebhookRetiredList show it (the payload as JSON).
fn hook_json(
    h: &rmox_storage::Webhook,
    retired: Option<&rmox_storage::RetiredWebhook>,
) -> serde_json::Value {
    let results: Vec<serde_json::Value> = h
        .results
        .iter()
        .map(|r| {
            serde_json::json!({
                "Time": r.time.rfc3339(),
                "Status": r.status,
                "Error": r.error,
                "DurationMS": r.duration_ms,
            })
        })
        .collect();
    let mut v = serde_json::json!({
        "ID": h.id,
        "Kind": h.kind,
        "Event": h.event,
        "URL": h.url,
        "Queued": h.queued.rfc3339(),
        "Attempts": h.attempts,
        "NextAttempt": h.next_attempt.rfc3339(),
        "Payload": serde_json::from_str::<serde_json::Value>(&h.payload).unwrap_or(serde_json::Value::Null),
        "Results": results,
    });
    if let Some(r) = retired {
        v["Success"] = r.success.into();
        v["Retired"] = r.retired.rfc3339().into();
    }
    v
}
