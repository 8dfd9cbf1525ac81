//! Reading delivery status notifications (RFC 3464; RFC 6533 for UTF-8 addresses): the
//! other direction of [`super::dsn::compose_dsn`], for DSNs that come back to one of our
//! per-message return addresses and become webhook events (delivered, relayed, expanded,
//! delayed, failed) with their SMTP codes.
//!
//! A DSN is a `multipart/report` with a `message/delivery-status` (or, RFC 6533,
//! `message/global-delivery-status`) part, normally the second. mail-parser finds the MIME
//! parts and undoes base64 and quoted-printable; it keeps these two types as binary parts
//! (only `message/rfc822` and `message/global` become nested messages), gives an
//! unterminated part (no closing boundary) as text of its raw bytes, and so does a part whose
//! transfer encoding does not decode (that one is [`DsnReadError::Malformed`] here). The
//! status part is parsed here ([`read_delivery_status`]): header-style fields (RFC 5322
//! unfolding, case-insensitive names, CRLF or bare LF), in groups separated by blank lines;
//! the first group is about the message, every later one about one recipient.
//!
//! Lenient where real senders differ from the RFC, strict where a value would be guessed:
//! * the `report-type` parameter is not checked (some senders leave it out); a
//!   `multipart/report` anywhere in the message's own MIME tree counts, one inside an
//!   attached message does not (a forwarded bounce is not a DSN about our message);
//! * a first group that also holds recipient fields (a missing blank line after the
//!   per-message fields) is read as both;
//! * comments are removed where RFC 3464 has tokens (`Action`, `Status`, address and MTA
//!   types, `dns` host names), not from addresses or `Diagnostic-Code` (`*text` there);
//! * `<...>` around an address is removed; an address without a type is taken whole;
//! * `utf-8` addresses have their `\x{HHHH}` escapes decoded (RFC 6533 3);
//! * values that are not UTF-8 are read lossily (U+FFFD), never rejected;
//! * the first of repeated fields counts; unknown fields are skipped;
//! * a recipient group without `Final-Recipient`, `Action` or `Status`, or with a `Status`
//!   that is not an RFC 3463 code, makes the whole DSN [`DsnReadError::Malformed`].
//!
//! Bounds: [`MAX_MESSAGE_LEN`], [`MAX_STATUS_LEN`], [`MAX_FIELD_LEN`] and
//! [`MAX_RECIPIENTS`]; over one is [`DsnReadError::TooLarge`]. Reading the status part is
//! linear in its length, and so is what it allocates (lossy UTF-8 at most triples an invalid
//! octet); nothing panics (mail-parser's own panics are caught, see
//! `crate::message::parse_mime`).

use std::borrow::Cow;

use mail_parser::{MessagePart, MimeHeaders, PartType};

use crate::smtp::Enhanced;

#[cfg(test)]
mod tests;

/// Largest message [`read_dsn`] reads: above the default `limits.max_message_size`
/// (100 MiB), so that any DSN we accepted is read, whatever original it returns.
pub const MAX_MESSAGE_LEN: usize = 128 << 20;
/// Largest status part (after transfer decoding): about 1000 recipients with long
/// diagnostics.
pub const MAX_STATUS_LEN: usize = 1 << 20;
/// Longest field, name and unfolded value (a `Diagnostic-Code` holds a whole multi-line
/// reply).
pub const MAX_FIELD_LEN: usize = 16 << 10;
/// Most recipient groups in one DSN.
pub const MAX_RECIPIENTS: usize = 1000;

/// What happened to a recipient, the `Action` field (RFC 3464 2.3.3), case-insensitive.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DsnAction {
    /// `failed`: delivery failed for good.
    Failed,
    /// `delayed`: not delivered yet, attempts continue.
    Delayed,
    /// `delivered`: delivered to the recipient's mailbox.
    Delivered,
    /// `relayed`: passed on to a system that does not send DSNs.
    Relayed,
    /// `expanded`: delivered and forwarded to several further recipients.
    Expanded,
    /// Any other value, as written (comments removed).
    Other(String),
}

impl DsnAction {
    /// The action named by `value` (already without comments and surrounding space).
    pub fn parse(value: &str) -> DsnAction {
        [
            DsnAction::Failed,
            DsnAction::Delayed,
            DsnAction::Delivered,
            DsnAction::Relayed,
            DsnAction::Expanded,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(value))
        .unwrap_or_else(|| DsnAction::Other(value.to_string()))
    }

    /// The field value: lower case for the five defined actions, [`DsnAction::Other`]'s text
    /// as written.
    pub fn as_str(&self) -> &str {
        match self {
            DsnAction::Failed => "failed",
            DsnAction::Delayed => "delayed",
            DsnAction::Delivered => "delivered",
            DsnAction::Relayed => "relayed",
            DsnAction::Expanded => "expanded",
            DsnAction::Other(s) => s,
        }
    }
}

impl From<super::dsn::Action> for DsnAction {
    fn from(a: super::dsn::Action) -> DsnAction {
        DsnAction::parse(a.as_str())
    }
}

/// One DSN, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsnReport {
    /// The status part was `message/global-delivery-status` (RFC 6533): its fields may hold
    /// UTF-8.
    pub utf8: bool,
    /// `Reporting-MTA`: the name after the type (`dns; mx.example.org` gives
    /// `mx.example.org`), trimmed.
    pub reporting_mta: Option<String>,
    /// `Original-Envelope-Id`: the `ENVID` given with the original message, trimmed.
    pub original_envelope_id: Option<String>,
    /// One entry per recipient group, in order; never empty.
    pub recipients: Vec<DsnRecipientStatus>,
}

/// The status of one recipient: one group of per-recipient fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsnRecipientStatus {
    /// `Final-Recipient`: the address after its type (`rfc822; a@b` gives `a@b`).
    pub final_recipient: String,
    /// `Original-Recipient` (the `ORCPT`), the address after its type.
    pub original_recipient: Option<String>,
    /// `Action`.
    pub action: DsnAction,
    /// `Status`: the RFC 3463 code without its comment, e.g. `5.1.1`.
    pub status: String,
    /// `Remote-MTA`: the name after the type.
    pub remote_mta: Option<String>,
    /// `Diagnostic-Code`: the whole value, unfolded and trimmed, e.g.
    /// `smtp; 550 5.1.1 no such user`.
    pub diagnostic_code: Option<String>,
}

impl DsnRecipientStatus {
    /// SMTP code and enhanced status code for reporting. From an `smtp;` `Diagnostic-Code`
    /// that starts with a 3-digit code 2xx-5xx: that code, with the enhanced code after it
    /// when there is one of the same class, otherwise `Status`. Without such a diagnostic,
    /// from `Status`: class 2 gives 200, class 4 gives 400, class 5 gives 500, with the
    /// status. `(0, None)` when neither says anything.
    pub fn codes(&self) -> (u16, Option<String>) {
        let status = Enhanced::parse(&self.status);
        if let Some((code, enhanced)) = self.diagnostic_code.as_deref().and_then(smtp_codes) {
            return (
                code,
                enhanced.or_else(|| status.map(|_| self.status.clone())),
            );
        }
        match status {
            Some(e) => (u16::from(e.class) * 100, Some(self.status.clone())),
            None => (0, None),
        }
    }
}

/// Why a message was not read as a DSN.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DsnReadError {
    /// Not a DSN: no `multipart/report` with a `message/delivery-status` or
    /// `message/global-delivery-status` part (a plain message, an MDN, a report whose
    /// boundary is missing, a message mail-parser cannot parse).
    #[error("not a delivery status notification")]
    NotReport,
    /// A DSN whose status part breaks RFC 3464; the text says what and where (line numbers
    /// count from the start of the status part).
    #[error("malformed delivery status notification: {0}")]
    Malformed(String),
    /// Over one of the limits.
    #[error("delivery status notification too large: {0}")]
    TooLarge(DsnLimit),
}

/// The limit a DSN went over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DsnLimit {
    /// The message is larger than [`MAX_MESSAGE_LEN`].
    #[error("message larger than {} octets", MAX_MESSAGE_LEN)]
    Message,
    /// The status part is larger than [`MAX_STATUS_LEN`].
    #[error("status part larger than {} octets", MAX_STATUS_LEN)]
    StatusPart,
    /// A field is longer than [`MAX_FIELD_LEN`].
    #[error("a field longer than {} octets", MAX_FIELD_LEN)]
    Field,
    /// More than [`MAX_RECIPIENTS`] recipient groups.
    #[error("more than {} recipient groups", MAX_RECIPIENTS)]
    Recipients,
}

/// Reads `message` (a whole message, header and body) as a DSN.
pub fn read_dsn(message: &[u8]) -> Result<DsnReport, DsnReadError> {
    if message.len() > MAX_MESSAGE_LEN {
        return Err(DsnReadError::TooLarge(DsnLimit::Message));
    }
    let parsed = crate::message::parse_mime(message).ok_or(DsnReadError::NotReport)?;
    let (part, utf8) = find_status_part(&parsed).ok_or(DsnReadError::NotReport)?;
    read_delivery_status(part_body(part)?, utf8)
}

/// Reads the body of a status part (transfer encoding already undone); `utf8` for
/// `message/global-delivery-status`.
pub fn read_delivery_status(body: &[u8], utf8: bool) -> Result<DsnReport, DsnReadError> {
    if body.len() > MAX_STATUS_LEN {
        return Err(DsnReadError::TooLarge(DsnLimit::StatusPart));
    }
    let mut reader = Reader {
        report: DsnReport {
            utf8,
            reporting_mta: None,
            original_envelope_id: None,
            recipients: Vec::new(),
        },
        seen_first: false,
        group: Group::default(),
        pending: None,
    };
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        reader.line(i + 1, line.strip_suffix(b"\r").unwrap_or(line))?;
    }
    reader.end_group()?;
    if reader.report.recipients.is_empty() {
        return Err(DsnReadError::Malformed(
            "no recipient fields (Final-Recipient, Action, Status) in the status part".into(),
        ));
    }
    Ok(reader.report)
}

/// The first `message/(global-)delivery-status` child of a `multipart/report` in the
/// message's own MIME tree, and whether it is the global (UTF-8) kind.
fn find_status_part<'m, 'x>(
    msg: &'m mail_parser::Message<'x>,
) -> Option<(&'m MessagePart<'x>, bool)> {
    msg.parts
        .iter()
        .filter(|p| is_type(p, "multipart", "report"))
        .filter_map(|p| p.sub_parts())
        .flatten()
        .filter_map(|&id| msg.parts.get(usize::try_from(id).ok()?))
        .find_map(|p| {
            if is_type(p, "message", "delivery-status") {
                Some((p, false))
            } else if is_type(p, "message", "global-delivery-status") {
                Some((p, true))
            } else {
                None
            }
        })
}

fn is_type(part: &MessagePart<'_>, ctype: &str, subtype: &str) -> bool {
    part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case(ctype)
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case(subtype))
    })
}

/// The status part's content. mail-parser gives these types as `Binary` (transfer encoding
/// undone); as `Text` (raw bytes, lossy UTF-8) when the part has no closing boundary or its
/// transfer encoding does not decode, the latter being refused here. `Message` and
/// `Multipart` do not happen for these types; their raw bytes or nothing are taken.
fn part_body<'p>(part: &'p MessagePart<'_>) -> Result<&'p [u8], DsnReadError> {
    if part.is_encoding_problem {
        let encoded = part.content_transfer_encoding().is_some_and(|e| {
            e.eq_ignore_ascii_case("base64") || e.eq_ignore_ascii_case("quoted-printable")
        });
        if encoded {
            return Err(DsnReadError::Malformed(
                "the status part's transfer encoding does not decode".into(),
            ));
        }
    }
    Ok(match &part.body {
        PartType::Binary(b) | PartType::InlineBinary(b) => b,
        PartType::Text(t) | PartType::Html(t) => t.as_bytes(),
        PartType::Message(m) => m.raw_message(),
        PartType::Multipart(_) => b"",
    })
}

/// The fields this reader keeps.
#[derive(Clone, Copy)]
enum Known {
    ReportingMta,
    EnvelopeId,
    FinalRecipient,
    OriginalRecipient,
    Action,
    Status,
    RemoteMta,
    DiagnosticCode,
}

impl Known {
    fn from_name(name: &[u8]) -> Option<Known> {
        const NAMES: [(&str, Known); 8] = [
            ("Reporting-MTA", Known::ReportingMta),
            ("Original-Envelope-Id", Known::EnvelopeId),
            ("Final-Recipient", Known::FinalRecipient),
            ("Original-Recipient", Known::OriginalRecipient),
            ("Action", Known::Action),
            ("Status", Known::Status),
            ("Remote-MTA", Known::RemoteMta),
            ("Diagnostic-Code", Known::DiagnosticCode),
        ];
        NAMES
            .iter()
            .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))
            .map(|&(_, k)| k)
    }
}

/// The values of one group's known fields: unfolded, trimmed, otherwise raw.
#[derive(Default)]
struct Group {
    /// Line of the first field; 0 while the group is empty.
    line: usize,
    reporting_mta: Option<String>,
    envelope_id: Option<String>,
    final_recipient: Option<String>,
    original_recipient: Option<String>,
    action: Option<String>,
    status: Option<String>,
    remote_mta: Option<String>,
    diagnostic_code: Option<String>,
}

impl Group {
    fn slot(&mut self, k: Known) -> &mut Option<String> {
        match k {
            Known::ReportingMta => &mut self.reporting_mta,
            Known::EnvelopeId => &mut self.envelope_id,
            Known::FinalRecipient => &mut self.final_recipient,
            Known::OriginalRecipient => &mut self.original_recipient,
            Known::Action => &mut self.action,
            Known::Status => &mut self.status,
            Known::RemoteMta => &mut self.remote_mta,
            Known::DiagnosticCode => &mut self.diagnostic_code,
        }
    }

    fn has_recipient_fields(&self) -> bool {
        self.final_recipient.is_some() || self.action.is_some() || self.status.is_some()
    }

    /// The recipient status of a group about a recipient.
    fn recipient(self) -> Result<DsnRecipientStatus, DsnReadError> {
        let line = self.line;
        let missing: Vec<&str> = [
            ("Final-Recipient", self.final_recipient.is_none()),
            ("Action", self.action.is_none()),
            ("Status", self.status.is_none()),
        ]
        .into_iter()
        .filter_map(|(n, m)| m.then_some(n))
        .collect();
        let (Some(final_raw), Some(action_raw), Some(status_raw)) =
            (self.final_recipient, self.action, self.status)
        else {
            return Err(DsnReadError::Malformed(format!(
                "the recipient fields at line {line} have no {} field",
                missing.join(" and no ")
            )));
        };
        let malformed = |what: &str, value: &str| {
            DsnReadError::Malformed(format!(
                "{what} in the recipient fields at line {line}: {:?}",
                excerpt(value)
            ))
        };
        let final_recipient = address(&final_raw)
            .ok_or_else(|| malformed("Final-Recipient without address", &final_raw))?;
        let action = strip_comments(&action_raw);
        let action = trim_wsp(&action);
        if action.is_empty() {
            return Err(malformed("empty Action", &action_raw));
        }
        let status = status_code(&status_raw)
            .ok_or_else(|| malformed("Status that is not a status code", &status_raw))?;
        Ok(DsnRecipientStatus {
            final_recipient,
            original_recipient: self.original_recipient.as_deref().and_then(address),
            action: DsnAction::parse(action),
            status,
            remote_mta: self.remote_mta.as_deref().and_then(mta_name),
            diagnostic_code: self
                .diagnostic_code
                .as_deref()
                .map(trim_wsp)
                .filter(|d| !d.is_empty())
                .map(str::to_string),
        })
    }
}

/// A field being read: its kind (`None`: not kept), its value so far, and its length so far
/// (name and value, kept or not).
struct Pending {
    known: Option<Known>,
    value: Vec<u8>,
    len: usize,
}

/// The line-by-line state of [`read_delivery_status`].
struct Reader {
    report: DsnReport,
    /// The per-message group has been read.
    seen_first: bool,
    group: Group,
    pending: Option<Pending>,
}

impl Reader {
    fn line(&mut self, n: usize, line: &[u8]) -> Result<(), DsnReadError> {
        if line.iter().all(|&b| is_wsp(b)) {
            return self.end_group();
        }
        if line.first().is_some_and(|&b| is_wsp(b)) {
            let Some(p) = self.pending.as_mut() else {
                return Err(DsnReadError::Malformed(format!(
                    "line {n} continues a field but follows no field"
                )));
            };
            p.len = p.len.saturating_add(line.len());
            if p.len > MAX_FIELD_LEN {
                return Err(DsnReadError::TooLarge(DsnLimit::Field));
            }
            if p.known.is_some() {
                p.value.extend_from_slice(line);
            }
            return Ok(());
        }
        self.end_field();
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(not_a_field(n, line));
        };
        // `colon` is an index into `line`: the split cannot fail; `rest` starts with ':'.
        let (name, rest) = line.split_at(colon);
        // obs-optional (RFC 5322 4.5.8): white space between name and colon.
        let name = match name.iter().rposition(|&b| !is_wsp(b)) {
            Some(last) => name.get(..=last).unwrap_or_default(),
            None => &[],
        };
        if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
            return Err(not_a_field(n, line));
        }
        if line.len() > MAX_FIELD_LEN {
            return Err(DsnReadError::TooLarge(DsnLimit::Field));
        }
        let known = Known::from_name(name);
        let value = match known {
            Some(_) => rest.get(1..).unwrap_or_default().to_vec(),
            None => Vec::new(),
        };
        if self.group.line == 0 {
            self.group.line = n;
        }
        self.pending = Some(Pending {
            known,
            value,
            len: line.len(),
        });
        Ok(())
    }

    /// Stores the field being read, if it is kept and the first of its name in the group.
    fn end_field(&mut self) {
        let Some(p) = self.pending.take() else {
            return;
        };
        let Some(k) = p.known else {
            return;
        };
        let slot = self.group.slot(k);
        if slot.is_none() {
            *slot = Some(trim_wsp(&String::from_utf8_lossy(&p.value)).to_string());
        }
    }

    /// Ends the group being read: the first non-empty group is the per-message one (and a
    /// recipient's too when it has recipient fields), every later one a recipient's.
    fn end_group(&mut self) -> Result<(), DsnReadError> {
        self.end_field();
        let group = std::mem::take(&mut self.group);
        if group.line == 0 {
            return Ok(());
        }
        if !self.seen_first {
            self.seen_first = true;
            self.report.reporting_mta = group.reporting_mta.as_deref().and_then(mta_name);
            self.report.original_envelope_id = group
                .envelope_id
                .as_deref()
                .map(trim_wsp)
                .filter(|e| !e.is_empty())
                .map(str::to_string);
            if !group.has_recipient_fields() {
                return Ok(());
            }
        }
        if self.report.recipients.len() >= MAX_RECIPIENTS {
            return Err(DsnReadError::TooLarge(DsnLimit::Recipients));
        }
        self.report.recipients.push(group.recipient()?);
        Ok(())
    }
}

fn not_a_field(n: usize, line: &[u8]) -> DsnReadError {
    DsnReadError::Malformed(format!(
        "line {n} is not a field: {:?}",
        excerpt(&String::from_utf8_lossy(line.get(..80).unwrap_or(line)))
    ))
}

fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without surrounding spaces, tabs and stray CRs (not Unicode white space: that is
/// content).
fn trim_wsp(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\r'])
}

/// At most 60 characters of `s`, for error messages.
fn excerpt(s: &str) -> String {
    let mut chars = s.chars();
    let mut out: String = chars.by_ref().take(60).collect();
    if chars.next().is_some() {
        out.push_str("...");
    }
    out
}

/// `s` with RFC 5322 comments replaced by a space: nested parentheses, `\` escapes inside
/// them, parentheses in quoted strings kept. An unclosed comment runs to the end.
fn strip_comments(s: &str) -> Cow<'_, str> {
    if !s.contains('(') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut depth = 0usize;
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' if depth > 0 || quoted => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '(' if !quoted => {
                if depth == 0 {
                    out.push(' ');
                }
                depth += 1;
            }
            ')' if depth > 0 => depth -= 1,
            _ if depth > 0 => {}
            '"' => {
                quoted = !quoted;
                out.push(c);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Splits `type; rest` into the type (comments removed, trimmed) and the rest; no `;` means
/// no type.
fn split_type(value: &str) -> (Option<String>, &str) {
    match value.split_once(';') {
        Some((t, rest)) => (Some(trim_wsp(&strip_comments(t)).to_string()), rest),
        None => (None, value),
    }
}

/// The address of a `Final-Recipient` or `Original-Recipient` value; `None` when empty.
fn address(value: &str) -> Option<String> {
    let (kind, addr) = split_type(value);
    let mut addr = trim_wsp(addr);
    if let Some(inner) = addr.strip_prefix('<').and_then(|a| a.strip_suffix('>')) {
        addr = trim_wsp(inner);
    }
    if addr.is_empty() {
        return None;
    }
    if kind.is_some_and(|k| k.eq_ignore_ascii_case("utf-8")) {
        return Some(decode_unicode_escapes(addr));
    }
    Some(addr.to_string())
}

/// The name of a `Reporting-MTA` or `Remote-MTA` value (comments removed for `dns` names);
/// `None` when empty.
fn mta_name(value: &str) -> Option<String> {
    let (kind, name) = split_type(value);
    let name = if kind.is_some_and(|k| k.eq_ignore_ascii_case("dns")) {
        strip_comments(name)
    } else {
        Cow::Borrowed(name)
    };
    let name = trim_wsp(&name);
    (!name.is_empty()).then(|| name.to_string())
}

/// The status code of a `Status` value: its first word after removing comments, when it is
/// an RFC 3463 code.
fn status_code(value: &str) -> Option<String> {
    let v = strip_comments(value);
    let word = v.split([' ', '\t', '\r']).find(|w| !w.is_empty())?;
    Enhanced::parse(word).map(|_| word.to_string())
}

/// Decodes the `\x{HHHH}` escapes of RFC 6533 `utf-8` addresses (1 to 6 hex digits, a
/// Unicode scalar value); anything else stays as written.
fn decode_unicode_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\\x{") {
        out.push_str(rest.get(..i).unwrap_or_default());
        let after = rest.get(i + 3..).unwrap_or_default();
        let decoded = after.find('}').and_then(|end| {
            let hex = after.get(..end)?;
            if hex.is_empty() || hex.len() > 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
            Some((c, end + 1))
        });
        match decoded {
            Some((c, used)) => {
                out.push(c);
                rest = after.get(used..).unwrap_or_default();
            }
            None => {
                out.push('\\');
                rest = rest.get(i + 1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

/// The reply code (2xx-5xx) at the start of an `smtp;` diagnostic, and the enhanced code
/// after it when there is one of the same class (`550 5.1.1 ...`, `550-5.1.1 ...`).
fn smtp_codes(diagnostic: &str) -> Option<(u16, Option<String>)> {
    let (kind, text) = split_type(diagnostic);
    if !kind?.eq_ignore_ascii_case("smtp") {
        return None;
    }
    let text = text.trim_start_matches([' ', '\t']);
    let &[d0, d1, d2] = text.as_bytes().get(..3)? else {
        return None;
    };
    if !(b'2'..=b'5').contains(&d0) || !d1.is_ascii_digit() || !d2.is_ascii_digit() {
        return None;
    }
    let rest = match text.as_bytes().get(3) {
        None => "",
        Some(b' ' | b'\t' | b'-') => text.get(4..)?,
        Some(_) => return None,
    };
    let code = [d0, d1, d2]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let word = rest
        .trim_start_matches([' ', '\t'])
        .split([' ', '\t'])
        .next()
        .unwrap_or_default();
    let enhanced = Enhanced::parse(word)
        .filter(|e| u16::from(e.class) == code / 100)
        .map(|_| word.to_string());
    Some((code, enhanced))
}
