//! The webapi's decisions, sans-IO: how a request body is read (mox's form field `request`
//! holding JSON, or a JSON body), HTTP basic credentials, the JSON shapes of mox's
//! `/webapi/v0/` methods, and the composition of a `Send` request into a MIME message with
//! its envelope. The server (`src/webapi.rs`) authenticates, stores and queues.
//!
//! Field names follow mox's webapi (Go's JSON of its structs: `PascalCase`, `CC`, `BCC`,
//! `HTML`, `MessageID`, `RequireTLS`), so that clients written for mox work unchanged.
//! Unknown fields are refused, as mox does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::smtp::ForwardPath;
use crate::time::UnixTime;

#[cfg(test)]
mod tests;

/// The path prefix of the methods.
pub const PREFIX: &str = "/webapi/v0/";

/// The methods served, in mox's order.
pub const METHODS: &[&str] = &[
    "Send",
    "SuppressionList",
    "SuppressionAdd",
    "SuppressionRemove",
    "SuppressionPresent",
    "MessageGet",
    "MessageRawGet",
    "MessagePartGet",
    "MessageDelete",
    "MessageFlagsAdd",
    "MessageFlagsRemove",
    "MessageMove",
    "WebhookList",
    "WebhookRetiredList",
    "QueueList",
    "QueueHold",
    "QueueRelease",
    "QueueKick",
    "QueueDrop",
];

/// An error answer: `{"Code": ..., "Message": ...}` with status 400 (401 for credentials,
/// 429 when the client's IP made too many failed attempts), as mox's webapi.Error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiError {
    /// For programs: `protocol` (the request could not be read), `user` (a bad value),
    /// `badAddress`, `missingBody`, `badFrom`, `noRecipients`, `notFound`, `server`, ...
    pub code: String,
    /// For people.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code: code.into(),
            message: message.into(),
        }
    }

    /// The JSON text of the error.
    pub fn to_json(&self) -> Vec<u8> {
        json(self)
    }
}

/// JSON text of a value (the shapes here cannot fail to serialise).
pub fn json<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec(v).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    out
}

/// Files of a `multipart/form-data` request, for `Send` (mox's form fields
/// `alternativefile`, `inlinefile`, `attachedfile`), as [`File`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FormFiles {
    /// `alternativefile` parts.
    pub alternative: Vec<File>,
    /// `inlinefile` parts.
    pub inline: Vec<File>,
    /// `attachedfile` parts.
    pub attached: Vec<File>,
}

impl FormFiles {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.alternative.is_empty() && self.inline.is_empty() && self.attached.is_empty()
    }

    /// Adds them after the request's own files (as mox does).
    pub fn add_to(self, req: &mut SendRequest) {
        req.alternative_files.extend(self.alternative);
        req.inline_files.extend(self.inline);
        req.attached_files.extend(self.attached);
    }
}

/// A method call's request: its JSON and, from a `multipart/form-data` body, its files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiRequest {
    /// The JSON text.
    pub json: String,
    /// Files sent as form parts.
    pub files: FormFiles,
}

/// Reads a method call: the form field `request` of an `application/x-www-form-urlencoded`
/// body (what mox's clients send) or of a `multipart/form-data` body (with files), or the
/// whole body when it is `application/json`.
pub fn read_request(content_type: Option<&str>, body: &[u8]) -> Result<ApiRequest, ApiError> {
    use crate::http::multipart::{parse_form_data, FormLimits};
    let ct = content_type.unwrap_or("");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "multipart/form-data" {
        return Ok(ApiRequest {
            json: request_json(content_type, body)?,
            files: FormFiles::default(),
        });
    }
    let parts = parse_form_data(ct, body, &FormLimits::default())
        .map_err(|e| ApiError::new("protocol", format!("parsing form: {e}")))?;
    let mut out = ApiRequest::default();
    let mut json = None;
    for p in parts {
        let list = match p.name.as_str() {
            "request" => {
                if json.is_none() {
                    let text = std::str::from_utf8(p.data).map_err(|_| {
                        ApiError::new("protocol", "form field request is not UTF-8")
                    })?;
                    json = Some(text.to_string());
                }
                continue;
            }
            "alternativefile" => &mut out.files.alternative,
            "inlinefile" => &mut out.files.inline,
            "attachedfile" => &mut out.files.attached,
            // Other fields are ignored, as an HTML form's extra fields would be.
            _ => continue,
        };
        use base64::Engine;
        list.push(File {
            name: p.filename.unwrap_or_default(),
            content_type: p
                .content_type
                .filter(|t| !t.eq_ignore_ascii_case("application/octet-stream"))
                .unwrap_or_default(),
            content_id: p.content_id.unwrap_or_default(),
            data: base64::engine::general_purpose::STANDARD.encode(p.data),
        });
    }
    out.json = json
        .filter(|j| !j.trim().is_empty())
        .ok_or_else(|| ApiError::new("protocol", "missing/empty request"))?;
    Ok(out)
}

/// The JSON request of a method call: the form field `request` of an
/// `application/x-www-form-urlencoded` body (what mox's clients send), or the whole body
/// when it is `application/json`; [`read_request`] also reads `multipart/form-data`.
pub fn request_json(content_type: Option<&str>, body: &[u8]) -> Result<String, ApiError> {
    let media = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let text = match media.as_str() {
        "application/json" => std::str::from_utf8(body)
            .map_err(|_| ApiError::new("protocol", "request body is not UTF-8"))?
            .to_string(),
        "application/x-www-form-urlencoded" => {
            let body = std::str::from_utf8(body)
                .map_err(|_| ApiError::new("protocol", "form body is not UTF-8"))?;
            let mut found = None;
            for pair in body.split('&') {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                if form_decode(k)? == "request" {
                    found = Some(form_decode(v)?);
                    break;
                }
            }
            found.unwrap_or_default()
        }
        "multipart/form-data" => return read_request(content_type, body).map(|r| r.json),
        "" => {
            return Err(ApiError::new(
                "protocol",
                "missing content-type: use application/x-www-form-urlencoded or multipart/form-data with field \"request\", or application/json",
            ))
        }
        other => {
            return Err(ApiError::new(
                "protocol",
                format!("unknown content-type {other}"),
            ))
        }
    };
    if text.trim().is_empty() {
        return Err(ApiError::new("protocol", "missing/empty request"));
    }
    Ok(text)
}

/// Decodes one `application/x-www-form-urlencoded` name or value (`+` is a space).
pub fn form_decode(s: &str) -> Result<String, ApiError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::new("protocol", "bad %-escape in form body"))?;
                out.push(hex);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::new("protocol", "form value is not UTF-8"))
}

/// The value of parameter `name` in the query string of a request target, decoded.
pub fn query_param(target: &str, name: &str) -> Option<String> {
    let (_, q) = target.split_once('?')?;
    let q = q.split('#').next().unwrap_or("");
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (form_decode(k).ok()? == name).then(|| form_decode(v).ok())?
    })
}

/// Parses a method's request: unknown fields and wrong types are `protocol` errors naming
/// the field.
pub fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, ApiError> {
    serde_json::from_str(text)
        .map_err(|e| ApiError::new("protocol", format!("parsing request: {e}")))
}

/// The user name and password of an `Authorization: Basic` header.
pub fn basic_auth(header: Option<&str>) -> Option<(String, String)> {
    use base64::Engine;
    let v = header?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// A name and address (`{"Name": "...", "Address": "..."}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct NameAddress {
    /// Display name, optional.
    #[serde(default)]
    pub name: String,
    /// The address.
    pub address: String,
}

/// A file of a message to send (data base64).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct File {
    /// File name, optional.
    #[serde(default)]
    pub name: String,
    /// Media type; from the name's extension when empty.
    #[serde(default)]
    pub content_type: String,
    /// `<id>` for `cid:` references from HTML, optional.
    #[serde(default, rename = "ContentID")]
    pub content_id: String,
    /// Base64 of the contents.
    pub data: String,
}

/// `Send`: mox's SendRequest (its Message fields at the top level).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct SendRequest {
    /// At most one; the login address when empty.
    #[serde(default)]
    pub from: Vec<NameAddress>,
    /// To.
    #[serde(default)]
    pub to: Vec<NameAddress>,
    /// Cc.
    #[serde(default, rename = "CC")]
    pub cc: Vec<NameAddress>,
    /// Recipients not named in the header.
    #[serde(default, rename = "BCC")]
    pub bcc: Vec<NameAddress>,
    /// Reply-To.
    #[serde(default)]
    pub reply_to: Vec<NameAddress>,
    /// `<id@host>`; made when empty.
    #[serde(default, rename = "MessageID")]
    pub message_id: String,
    /// Message ids (with `<>`), oldest first; the last becomes In-Reply-To.
    #[serde(default)]
    pub references: Vec<String>,
    /// RFC 3339; now when absent.
    #[serde(default)]
    pub date: Option<String>,
    /// Subject.
    #[serde(default)]
    pub subject: String,
    /// Text body (`\n` lines).
    #[serde(default)]
    pub text: String,
    /// HTML body.
    #[serde(default, rename = "HTML")]
    pub html: String,
    /// Metadata returned in delivery webhooks (sent as `X-Mox-Extra-<Key>` headers).
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
    /// Extra header fields, `[name, value]`.
    #[serde(default)]
    pub headers: Vec<[String; 2]>,
    /// Alternative representations (multipart/alternative).
    #[serde(default)]
    pub alternative_files: Vec<File>,
    /// Inline files (multipart/related).
    #[serde(default)]
    pub inline_files: Vec<File>,
    /// Attachments (multipart/mixed).
    #[serde(default)]
    pub attached_files: Vec<File>,
    /// `true`: REQUIRETLS; `false`: TLS policies relaxed (TLS-Required: No); absent: default.
    #[serde(default, rename = "RequireTLS")]
    pub require_tls: Option<bool>,
    /// RFC 3339 time of the first delivery attempt.
    #[serde(default)]
    pub future_release: Option<String>,
    /// Keep a copy in the Sent mailbox (rmox keeps none for submissions: refused when true).
    #[serde(default)]
    pub save_sent: bool,
}

/// `Send`'s result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SendResult {
    /// The Message-ID, with `<>`.
    #[serde(rename = "MessageID")]
    pub message_id: String,
    /// One per recipient, To, Cc then Bcc.
    pub submissions: Vec<Submission>,
}

/// One queued recipient.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Submission {
    /// The recipient.
    pub address: String,
    /// Its queue entry.
    #[serde(rename = "QueueMsgID")]
    pub queue_msg_id: u64,
    /// The per-message MAIL FROM id (empty: rmox sends with the From address).
    #[serde(rename = "FromID")]
    pub from_id: String,
}

/// A request naming an address (`SuppressionAdd` adds `Manual` and `Reason`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AddressRequest {
    /// The address.
    pub email_address: String,
    /// Added by hand.
    #[serde(default)]
    pub manual: bool,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// A request with no fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// A request naming a message, with flags or a part path for the methods that take them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MessageRequest {
    /// The message id.
    #[serde(rename = "MsgID")]
    pub msg_id: u64,
    /// For MessageFlagsAdd/Remove.
    #[serde(default)]
    pub flags: Vec<String>,
    /// For MessagePartGet: indexes into the MIME tree.
    #[serde(default)]
    pub part_path: Vec<usize>,
}

/// MessageMove's request (mox's MessageMoveRequest).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct MessageMoveRequest {
    /// The message id.
    #[serde(rename = "MsgID")]
    pub msg_id: u64,
    /// The mailbox to move it to: one the account has, or a standard one
    /// ([`STANDARD_MAILBOXES`]).
    pub dest_mailbox_name: String,
}

/// Mailboxes a message can be moved to before any message was delivered there.
pub const STANDARD_MAILBOXES: &[&str] = &["Inbox", "Sent", "Archive", "Drafts", "Trash", "Junk"];

/// WebhookList's and WebhookRetiredList's request (rmox's additions): the newest `Limit`
/// hooks of the account (default and most: [`WEBHOOK_LIST_MAX`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct WebhookListRequest {
    /// How many at most.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// QueueHold's, QueueRelease's, QueueKick's and QueueDrop's request (rmox's additions): one
/// of the account's queue entries, by the id `Send` answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct QueueEntryRequest {
    /// The queue entry.
    #[serde(rename = "QueueMsgID")]
    pub queue_msg_id: u64,
}

/// The most hooks one WebhookList or WebhookRetiredList answer holds.
pub const WEBHOOK_LIST_MAX: usize = 1000;

/// A suppressed address as listed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Suppression {
    /// Position in the list (1-based; rmox keys suppressions by address).
    #[serde(rename = "ID")]
    pub id: u64,
    /// RFC 3339.
    pub created: String,
    /// The account.
    pub account: String,
    /// The address as stored (lower case).
    pub base_address: String,
    /// The address as given.
    pub original_address: String,
    /// Added by hand.
    pub manual: bool,
    /// Why.
    pub reason: String,
}

/// What a composition needs besides the request.
#[derive(Clone, Debug)]
pub struct ComposeContext {
    /// The From used when the request has none (the login address).
    pub default_from: NameAddress,
    /// The host name for Message-IDs.
    pub hostname: String,
    /// Now.
    pub now: UnixTime,
    /// Randomness for the Message-ID and MIME boundaries.
    pub random: u64,
    /// The largest message accepted (bytes).
    pub max_size: usize,
}

/// A composed message with its envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Composed {
    /// The message (CRLF lines).
    pub message: Vec<u8>,
    /// The From address (the envelope sender).
    pub from: String,
    /// To, Cc then Bcc addresses.
    pub recipients: Vec<String>,
    /// The Message-ID, with `<>`.
    pub message_id: String,
    /// REQUIRETLS choice.
    pub require_tls: Option<bool>,
    /// First attempt not before.
    pub hold_until: Option<UnixTime>,
    /// The Subject as given (unencoded), for webhooks.
    pub subject: String,
    /// The request's `Extra` values, canonical keys.
    pub extra: BTreeMap<String, String>,
    /// Keep a copy in the account's Sent mailbox (`SaveSent`).
    pub save_sent: bool,
}

/// Checks an address as an SMTP path would take it; `what` names it in the error.
fn address(a: &NameAddress, what: &str) -> Result<String, ApiError> {
    let addr = a.address.trim();
    match ForwardPath::parse(&format!("<{addr}>")) {
        Ok(ForwardPath::Mailbox(_)) => Ok(addr.to_string()),
        _ => Err(ApiError::new(
            "badAddress",
            format!("{what}: invalid address {addr:?}"),
        )),
    }
}

/// Composes `req` into a message: validation first (each refusal with mox's code), then the
/// header (From, To, Cc, Reply-To, Subject, Date, Message-ID, References, In-Reply-To,
/// the request's headers, User-Agent) and the MIME tree: text and/or HTML (with alternative
/// files: multipart/alternative), inline files (multipart/related), attachments
/// (multipart/mixed).
pub fn compose(req: &SendRequest, cx: &ComposeContext) -> Result<Composed, ApiError> {
    if req.text.is_empty() && req.html.is_empty() {
        return Err(ApiError::new(
            "missingBody",
            "at least text or html body required",
        ));
    }
    let mut extra = Vec::new();
    for (k, v) in &req.extra {
        let key = canonical_extra_key(k).ok_or_else(|| {
            ApiError::new(
                "user",
                format!("Extra: invalid key {k:?} (letters, digits and dashes)"),
            )
        })?;
        if v.contains(['\r', '\n']) {
            return Err(ApiError::new(
                "user",
                format!("Extra: the value of {k} has a line break"),
            ));
        }
        if extra.iter().any(|(e, _)| *e == key) {
            return Err(ApiError::new("user", format!("Extra: duplicate key {key}")));
        }
        extra.push((key, v.clone()));
    }
    let from = match req.from.as_slice() {
        [] => cx.default_from.clone(),
        [one] => one.clone(),
        _ => {
            return Err(ApiError::new(
                "multipleFrom",
                "multiple from-addresses not allowed",
            ))
        }
    };
    let from_addr = address(&from, "From")?;
    let mut recipients = Vec::new();
    for (list, what) in [(&req.to, "To"), (&req.cc, "CC"), (&req.bcc, "BCC")] {
        for a in list {
            recipients.push(address(a, what)?);
        }
    }
    for a in &req.reply_to {
        address(a, "ReplyTo")?;
    }
    if recipients.is_empty() {
        return Err(ApiError::new("noRecipients", "no recipients"));
    }
    let date = match &req.date {
        Some(d) => UnixTime::parse_rfc3339(d)
            .ok_or_else(|| ApiError::new("user", format!("Date: not an RFC 3339 time: {d:?}")))?,
        None => cx.now,
    };
    let hold_until = match &req.future_release {
        Some(t) => {
            let at = UnixTime::parse_rfc3339(t).ok_or_else(|| {
                ApiError::new(
                    "user",
                    format!("FutureRelease: not an RFC 3339 time: {t:?}"),
                )
            })?;
            if at.0 <= cx.now.0 {
                return Err(ApiError::new(
                    "user",
                    "FutureRelease: the time must be in the future",
                ));
            }
            Some(at)
        }
        None => None,
    };
    let message_id = if req.message_id.is_empty() {
        format!("<{:016x}.webapi@{}>", cx.random, cx.hostname)
    } else if is_msg_id(&req.message_id) {
        req.message_id.clone()
    } else {
        return Err(ApiError::new(
            "user",
            format!("MessageID: not <local@domain>: {:?}", req.message_id),
        ));
    };
    for r in &req.references {
        if !is_msg_id(r) {
            return Err(ApiError::new(
                "user",
                format!("References: not <local@domain>: {r:?}"),
            ));
        }
    }
    let mut user_agent = false;
    for [name, value] in &req.headers {
        let ok_name = !name.is_empty() && name.bytes().all(|c| c.is_ascii_graphic() && c != b':');
        if !ok_name {
            return Err(ApiError::new(
                "user",
                format!("Headers: invalid field name {name:?}"),
            ));
        }
        if value.contains(['\r', '\n']) {
            return Err(ApiError::new(
                "user",
                format!("Headers: the value of {name} has a line break"),
            ));
        }
        const OURS: &[&str] = &[
            "from",
            "to",
            "cc",
            "bcc",
            "reply-to",
            "subject",
            "date",
            "message-id",
            "references",
            "in-reply-to",
            "mime-version",
            "content-type",
            "content-transfer-encoding",
        ];
        if OURS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ApiError::new(
                "user",
                format!("Headers: {name} is set from the request's own fields"),
            ));
        }
        user_agent |=
            name.eq_ignore_ascii_case("user-agent") || name.eq_ignore_ascii_case("x-mailer");
    }

    let mut h = String::new();
    h.push_str(&format!("From: {}\r\n", name_address(&from)));
    for (field, list) in [
        ("To", &req.to),
        ("Cc", &req.cc),
        ("Reply-To", &req.reply_to),
    ] {
        if !list.is_empty() {
            let v: Vec<String> = list.iter().map(name_address).collect();
            h.push_str(&format!("{field}: {}\r\n", v.join(",\r\n\t")));
        }
    }
    if !req.subject.is_empty() {
        h.push_str(&format!("Subject: {}\r\n", encode_text(&req.subject)));
    }
    h.push_str(&format!("Date: {}\r\n", date.rfc5322()));
    h.push_str(&format!("Message-ID: {message_id}\r\n"));
    if let Some(last) = req.references.last() {
        h.push_str(&format!(
            "References: {}\r\n",
            req.references.join("\r\n\t")
        ));
        h.push_str(&format!("In-Reply-To: {last}\r\n"));
    }
    for [name, value] in &req.headers {
        h.push_str(&format!("{name}: {}\r\n", encode_text(value)));
    }
    // Extra travels with the message, as mox's X-Mox-Extra- headers do for SMTP
    // submissions, and comes back in the delivery webhooks.
    for (k, v) in &extra {
        h.push_str(&format!("{EXTRA_PREFIX}{k}: {}\r\n", encode_text(v)));
    }
    if !user_agent {
        h.push_str("User-Agent: rmox-webapi\r\n");
    }
    h.push_str("MIME-Version: 1.0\r\n");

    let mut boundary_n = 0u32;
    let mut boundary = || {
        boundary_n += 1;
        format!("rmox-{:016x}-{boundary_n}", cx.random)
    };
    let mut body = match (req.text.is_empty(), req.html.is_empty()) {
        (false, true) => text_part(&req.text, "plain"),
        (true, false) => text_part(&req.html, "html"),
        _ => multipart(
            "alternative",
            &boundary(),
            vec![text_part(&req.text, "plain"), text_part(&req.html, "html")],
        ),
    };
    if !req.alternative_files.is_empty() {
        let mut parts = vec![body];
        for f in &req.alternative_files {
            parts.push(file_part(f, None)?);
        }
        body = multipart("alternative", &boundary(), parts);
    }
    if !req.inline_files.is_empty() {
        let mut parts = vec![body];
        for f in &req.inline_files {
            parts.push(file_part(f, Some("inline"))?);
        }
        body = multipart("related", &boundary(), parts);
    }
    if !req.attached_files.is_empty() {
        let mut parts = vec![body];
        for f in &req.attached_files {
            parts.push(file_part(f, Some("attachment"))?);
        }
        body = multipart("mixed", &boundary(), parts);
    }
    let mut message = h.into_bytes();
    message.extend_from_slice(&body);
    if message.len() > cx.max_size {
        return Err(ApiError::new(
            "messageTooLarge",
            format!(
                "the composed message is {} bytes, over the limit of {}",
                message.len(),
                cx.max_size
            ),
        ));
    }
    Ok(Composed {
        message,
        from: from_addr,
        recipients,
        message_id,
        require_tls: req.require_tls,
        hold_until,
        subject: req.subject.clone(),
        extra: extra.into_iter().collect(),
        save_sent: req.save_sent,
    })
}

/// The header prefix of per-message metadata (mox's): `X-Mox-Extra-<Key>: <value>`, set
/// through the webapi's `Extra` or by an SMTP submitter, returned in delivery webhooks.
pub const EXTRA_PREFIX: &str = "X-Mox-Extra-";

/// An Extra key as mox canonicalises it (each dash-separated word capitalised, the rest
/// lower case), or `None` when it is empty or has other than letters, digits and dashes.
pub fn canonical_extra_key(k: &str) -> Option<String> {
    if k.is_empty() || !k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-') {
        return None;
    }
    let words: Vec<String> = k
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect();
    Some(words.join("-"))
}

/// The Extra metadata in a message header (`X-Mox-Extra-<Key>` fields), keys canonical.
pub fn extra_from_header(header: &[u8]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let text = String::from_utf8_lossy(header);
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
        } else if let Some((n, v)) = line.split_once(':') {
            fields.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    for (n, v) in fields {
        let lower = n.to_ascii_lowercase();
        if let Some(k) = lower.strip_prefix(&EXTRA_PREFIX.to_ascii_lowercase()) {
            if let Some(k) = canonical_extra_key(k) {
                out.entry(k).or_insert(v);
            }
        }
    }
    out
}

/// `<local@domain>` without spaces or nested brackets.
fn is_msg_id(s: &str) -> bool {
    s.strip_prefix('<')
        .and_then(|r| r.strip_suffix('>'))
        .and_then(|r| r.split_once('@'))
        .is_some_and(|(l, d)| {
            let ok = |p: &str| {
                !p.is_empty()
                    && p.bytes()
                        .all(|c| c.is_ascii_graphic() && !b"<>@".contains(&c))
            };
            ok(l) && ok(d)
        })
}

/// `"Name" <addr>` (RFC 2047 for a non-ASCII name) or `<addr>`.
fn name_address(a: &NameAddress) -> String {
    let addr = a.address.trim();
    let name = a.name.replace(['\r', '\n'], " ");
    if name.trim().is_empty() {
        return format!("<{addr}>");
    }
    if name.is_ascii() {
        let q = name.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{q}\" <{addr}>")
    } else {
        format!("{} <{addr}>", encoded_words(&name))
    }
}

/// A header value as is when short ASCII, else as RFC 2047 encoded words.
fn encode_text(s: &str) -> String {
    let s = s.replace(['\r', '\n'], " ");
    // Long ASCII values go as encoded words too: they split into short lines.
    if s.is_ascii() && s.len() <= 900 {
        s
    } else {
        encoded_words(&s)
    }
}

/// RFC 2047 `B` encoded words of at most 75 characters, split between characters, joined
/// by folding white space.
fn encoded_words(s: &str) -> String {
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in s.chars() {
        // 39 bytes of UTF-8 -> 52 base64 characters, +12 for =?utf-8?b??=: a word fits on
        // a 78-character line after a field name.
        if chunk.len() + c.len_utf8() > 39 {
            words.push(format!(
                "=?utf-8?b?{}?=",
                crate::codec::base64(chunk.as_bytes())
            ));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(format!(
            "=?utf-8?b?{}?=",
            crate::codec::base64(chunk.as_bytes())
        ));
    }
    words.join("\r\n ")
}

/// A text part: 7bit when every line is short ASCII, else quoted-printable; `\n` lines
/// become CRLF.
fn text_part(text: &str, subtype: &str) -> Vec<u8> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let plain = text.is_ascii()
        && lines
            .iter()
            .all(|l| l.len() <= 78 && !l.contains('\r') && !l.starts_with('.'));
    let mut out = format!("Content-Type: text/{subtype}; charset=utf-8\r\n").into_bytes();
    if plain {
        out.extend_from_slice(b"Content-Transfer-Encoding: 7bit\r\n\r\n");
        for l in &lines {
            out.extend_from_slice(l.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    } else {
        out.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        for l in &lines {
            out.extend_from_slice(quoted_printable_line(l.as_bytes()).as_bytes());
        }
    }
    out
}

/// One line as quoted-printable (RFC 2045 6.7): soft breaks keep lines at 76 characters,
/// trailing white space and a leading dot are encoded. Ends with CRLF.
pub fn quoted_printable_line(line: &[u8]) -> String {
    let mut out = String::new();
    let mut width = 0;
    for (i, &b) in line.iter().enumerate() {
        let last = i + 1 == line.len();
        let literal = (b == b' ' || b == b'\t') && !last
            || (b.is_ascii_graphic() && b != b'=' && !(b == b'.' && width == 0));
        let piece = if literal {
            char::from(b).to_string()
        } else {
            format!("={b:02X}")
        };
        if width + piece.len() > 75 {
            out.push_str("=\r\n");
            width = 0;
        }
        // After a soft break a dot may start the line: encode it.
        if width == 0 && piece == "." {
            out.push_str("=2E");
            width += 3;
            continue;
        }
        width += piece.len();
        out.push_str(&piece);
    }
    out.push_str("\r\n");
    out
}

/// A file part, base64; `disposition` inline/attachment (none for alternatives).
fn file_part(f: &File, disposition: Option<&str>) -> Result<Vec<u8>, ApiError> {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD
        .decode(f.data.trim())
        .map_err(|e| {
            ApiError::new(
                "user",
                format!("file {:?}: Data is not base64: {e}", f.name),
            )
        })?;
    let name = f.name.replace(['\r', '\n', '"', '\\'], "");
    let ct = if f.content_type.is_empty() {
        content_type_for(&name).to_string()
    } else {
        let ok = f.content_type.split_once('/').is_some_and(|(a, b)| {
            let tok = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&c))
            };
            tok(a) && tok(b.split(';').next().unwrap_or("").trim())
        }) && !f.content_type.contains(['\r', '\n']);
        if !ok {
            return Err(ApiError::new(
                "user",
                format!("file {:?}: bad ContentType {:?}", f.name, f.content_type),
            ));
        }
        f.content_type.clone()
    };
    let mut h = format!("Content-Type: {ct}");
    if !name.is_empty() {
        h.push_str(&format!("; name=\"{}\"", encode_text(&name)));
    }
    h.push_str("\r\nContent-Transfer-Encoding: base64\r\n");
    if let Some(d) = disposition {
        h.push_str(&format!("Content-Disposition: {d}"));
        if !name.is_empty() {
            h.push_str(&format!("; filename=\"{}\"", encode_text(&name)));
        }
        h.push_str("\r\n");
    }
    if !f.content_id.is_empty() {
        if !is_msg_id(&f.content_id) {
            return Err(ApiError::new(
                "user",
                format!(
                    "file {:?}: ContentID not <id@host>: {:?}",
                    f.name, f.content_id
                ),
            ));
        }
        h.push_str(&format!("Content-ID: {}\r\n", f.content_id));
    }
    h.push_str("\r\n");
    let mut out = h.into_bytes();
    out.extend_from_slice(crate::codec::base64_lines(&data).as_bytes());
    Ok(out)
}

/// A media type from a file name's extension.
fn content_type_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" => "text/plain",
        "html" | "htm" => "text/html",
        "csv" => "text/csv",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "zip" => "application/zip",
        "json" => "application/json",
        "ics" => "text/calendar",
        _ => "application/octet-stream",
    }
}

/// A multipart body of `parts` (each with its own header).
fn multipart(subtype: &str, boundary: &str, parts: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out =
        format!("Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\n").into_bytes();
    for p in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}
