//! Delivery status notifications (RFC 3464, RFC 3461; RFC 6533 for UTF-8 addresses): a
//! `multipart/report` with a human-readable part, a `message/delivery-status` part and the
//! original message's header (or the whole message when `RET=FULL`).
//!
//! The full remote reply, all its lines, goes into `Diagnostic-Code` (one folded line per
//! reply line) and into the human-readable part. Header fields are folded, every line ends
//! in CRLF and stays below 998 octets (78 where it can).

use super::{domain_of, QueueItem};
use crate::smtp::{Enhanced, Reply, Ret};
use crate::UnixTime;

/// Which notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DsnKind {
    /// Delivery failed for good.
    Failure,
    /// Delivery is delayed; attempts continue.
    Delay,
    /// Delivered or relayed (`NOTIFY=SUCCESS`).
    Success,
}

/// The `Action` of a recipient (RFC 3464 2.3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `failed`.
    Failed,
    /// `delayed`.
    Delayed,
    /// `delivered`.
    Delivered,
    /// `relayed`: passed to a host that does not do DSNs.
    Relayed,
    /// `expanded`: delivered and forwarded to several recipients.
    Expanded,
}

impl Action {
    /// The field value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }
}

/// One recipient's part of a DSN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsnRecipient {
    /// The address delivery was attempted to.
    pub final_recipient: String,
    /// ORCPT as given: (address type, decoded address).
    pub original_recipient: Option<(String, String)>,
    /// What happened.
    pub action: Action,
    /// The enhanced status code.
    pub status: Enhanced,
    /// The remote host that gave the reply.
    pub remote_mta: Option<String>,
    /// The remote reply, complete.
    pub diagnostic: Option<Reply>,
    /// A local explanation (no reply, connection error, administrator action); shown in the
    /// text and as a comment on `Status`.
    pub detail: Option<String>,
    /// When the last attempt was made.
    pub last_attempt: Option<UnixTime>,
    /// Delay DSNs: when attempts stop.
    pub will_retry_until: Option<UnixTime>,
}

/// Everything [`compose_dsn`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsnInput<'a> {
    /// Our host name (`Reporting-MTA`, Message-ID domain).
    pub reporting_mta: String,
    /// The DSN's From: `postmaster@` the original sender's domain.
    pub from: String,
    /// The DSN's To: the original MAIL FROM.
    pub to: String,
    /// Failure, delay or success.
    pub kind: DsnKind,
    /// The recipients reported on (at least one for a useful DSN).
    pub recipients: Vec<DsnRecipient>,
    /// The original message (header and body, CRLF).
    pub original: &'a [u8],
    /// Return the full message (`RET=FULL`) or only its header.
    pub ret: Ret,
    /// The original `ENVID`.
    pub envid: Option<String>,
    /// When the original message arrived.
    pub arrival_date: Option<UnixTime>,
    /// A unique value (e.g. the queue id and a random number) for Message-ID and boundary.
    pub message_id: String,
}

impl<'a> DsnInput<'a> {
    /// The input for a DSN about `item` (the recipients usually come from
    /// [`super::DsnNotice`]s of items of one message). Delay DSNs return the header only;
    /// otherwise `RET` decides, headers by default.
    pub fn for_item(
        item: &QueueItem,
        kind: DsnKind,
        recipients: Vec<DsnRecipient>,
        reporting_mta: &str,
        original: &'a [u8],
        message_id: String,
    ) -> DsnInput<'a> {
        let ret = match (kind, item.dsn.ret) {
            (DsnKind::Delay, _) | (_, None) => Ret::Hdrs,
            (_, Some(r)) => r,
        };
        DsnInput {
            reporting_mta: reporting_mta.to_string(),
            from: format!("postmaster@{}", domain_of(&item.mail_from)),
            to: item.mail_from.clone(),
            kind,
            recipients,
            original,
            ret,
            envid: item.dsn.envid.clone(),
            arrival_date: Some(item.queued),
            message_id,
        }
    }
}

/// Never send a DSN about this item: its MAIL FROM is null or it is itself a DSN
/// (RFC 3461 6.2, no loops).
pub fn must_not_send_dsn(item: &QueueItem) -> bool {
    item.mail_from.is_empty() || item.is_dsn
}

/// Longest line we write, CRLF excluded (RFC 5322 allows 998).
const HARD_LIMIT: usize = 990;
/// Preferred line length for folding.
const SOFT_LIMIT: usize = 78;

/// Replaces CR, LF and other control characters (hostile reply text, ENVID) with spaces.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Appends a header field, folded: each segment starts on a new (continuation) line; within
/// a segment, lines break at spaces near 78 octets and are cut hard before 990.
fn field(out: &mut String, name: &str, segments: &[String]) {
    let mut line_len = name.len() + 1;
    out.push_str(name);
    out.push(':');
    for (i, seg) in segments.iter().enumerate() {
        let seg = clean(seg);
        let mut new_line = i > 0;
        for word in seg.split(' ').filter(|w| !w.is_empty()) {
            let mut word = word;
            if std::mem::take(&mut new_line) {
                out.push_str("\r\n");
                line_len = 0;
            }
            if line_len + 1 + word.len() > SOFT_LIMIT && line_len > 1 {
                out.push_str("\r\n");
                line_len = 0;
            }
            out.push(' ');
            line_len += 1;
            while line_len + word.len() > HARD_LIMIT {
                let mut cut = HARD_LIMIT.saturating_sub(line_len).max(1);
                while cut < word.len() && !word.is_char_boundary(cut) {
                    cut += 1;
                }
                let (a, b) = word.split_at(cut.min(word.len()));
                out.push_str(a);
                out.push_str("\r\n ");
                line_len = 1;
                word = b;
            }
            out.push_str(word);
            line_len += word.len();
        }
    }
    out.push_str("\r\n");
}

fn field1(out: &mut String, name: &str, value: &str) {
    field(out, name, &[value.to_string()]);
}

/// The reply in wire form, one string per line (`550-5.1.1 text`).
fn reply_lines(r: &Reply) -> Vec<String> {
    let mut w = Vec::new();
    r.render(&mut w);
    String::from_utf8_lossy(&w)
        .split("\r\n")
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// An address with its RFC 3464/6533 type: `rfc822` for ASCII, `utf-8` otherwise.
fn typed_address(addr: &str) -> String {
    let t = if addr.is_ascii() { "rfc822" } else { "utf-8" };
    format!("{t}; {addr}")
}

/// Text wrapped for a body: lines of at most `HARD_LIMIT` octets (at char boundaries).
fn push_body_line(out: &mut String, line: &str) {
    let mut rest = clean(line);
    loop {
        if rest.len() <= HARD_LIMIT {
            out.push_str(&rest);
            out.push_str("\r\n");
            return;
        }
        let mut cut = HARD_LIMIT;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let tail = rest.split_off(cut);
        out.push_str(&rest);
        out.push_str("\r\n");
        rest = tail;
    }
}

fn human_text(input: &DsnInput<'_>) -> String {
    let mut t = String::new();
    let intro = match input.kind {
        DsnKind::Failure => "Delivery of your message failed for the following recipients:",
        DsnKind::Delay => {
            "Delivery of your message is delayed for the following recipients; attempts continue:"
        }
        DsnKind::Success => "Your message was delivered to the following recipients:",
    };
    push_body_line(&mut t, intro);
    push_body_line(&mut t, "");
    for r in &input.recipients {
        push_body_line(&mut t, &format!("    {}", r.final_recipient));
        if let Some(d) = &r.diagnostic {
            let from = r
                .remote_mta
                .as_deref()
                .map(|h| format!(" from {h}"))
                .unwrap_or_default();
            push_body_line(&mut t, &format!("    Reply{from}:"));
            for l in reply_lines(d) {
                push_body_line(&mut t, &format!("        {l}"));
            }
        }
        if let Some(d) = &r.detail {
            for l in d.lines() {
                push_body_line(&mut t, &format!("    {l}"));
            }
        }
        if let Some(u) = r.will_retry_until {
            push_body_line(
                &mut t,
                &format!("    Attempts continue until {}.", u.rfc5322()),
            );
        }
        push_body_line(&mut t, "");
    }
    if input.kind == DsnKind::Failure {
        push_body_line(
            &mut t,
            "The original message's header (or the message) is attached.",
        );
    }
    t
}

fn status_part(input: &DsnInput<'_>) -> String {
    let mut s = String::new();
    field1(
        &mut s,
        "Reporting-MTA",
        &format!("dns; {}", input.reporting_mta),
    );
    if let Some(e) = &input.envid {
        field1(&mut s, "Original-Envelope-Id", e);
    }
    if let Some(a) = input.arrival_date {
        field1(&mut s, "Arrival-Date", &a.rfc5322());
    }
    for r in &input.recipients {
        s.push_str("\r\n");
        if let Some((t, a)) = &r.original_recipient {
            field1(&mut s, "Original-Recipient", &format!("{t}; {a}"));
        }
        field1(
            &mut s,
            "Final-Recipient",
            &typed_address(&r.final_recipient),
        );
        field1(&mut s, "Action", r.action.as_str());
        let status = match &r.detail {
            Some(d) => {
                let d: String = d
                    .chars()
                    .map(|c| match c {
                        '(' => '[',
                        ')' => ']',
                        '\\' => '/',
                        c => c,
                    })
                    .collect();
                format!("{} ({d})", r.status)
            }
            None => r.status.to_string(),
        };
        field1(&mut s, "Status", &status);
        if let Some(h) = &r.remote_mta {
            field1(&mut s, "Remote-MTA", &format!("dns; {h}"));
        }
        if let Some(d) = &r.diagnostic {
            let mut lines = reply_lines(d);
            if let Some(first) = lines.first_mut() {
                *first = format!("smtp; {first}");
            }
            field(&mut s, "Diagnostic-Code", &lines);
        }
        if let Some(t) = r.last_attempt {
            field1(&mut s, "Last-Attempt-Date", &t.rfc5322());
        }
        if let Some(t) = r.will_retry_until {
            field1(&mut s, "Will-Retry-Until", &t.rfc5322());
        }
    }
    s
}

fn fnv(data: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The original message's header section, ending in CRLF (the whole message when it has
/// no body separator).
fn header_section(msg: &[u8]) -> &[u8] {
    match crate::message::body_offset(msg) {
        Some(off) => msg.get(..off.saturating_sub(2)).unwrap_or(msg),
        None => msg,
    }
}

/// Composes the DSN message (CRLF line endings). `now` is its Date.
pub fn compose_dsn(input: &DsnInput<'_>, now: UnixTime) -> Vec<u8> {
    let text = human_text(input);
    let status = status_part(input);
    let (orig_type, orig): (&str, &[u8]) = match input.ret {
        Ret::Full => ("message/rfc822", input.original),
        Ret::Hdrs => ("text/rfc822-headers", header_section(input.original)),
    };
    let global = !status.is_ascii();
    let mut boundary = String::new();
    for i in 0u64.. {
        boundary = format!(
            "rmox-dsn-{:016x}",
            fnv(input.message_id.as_bytes(), i.wrapping_add(1))
        );
        let b = boundary.as_bytes();
        if !contains(orig, b) && !contains(text.as_bytes(), b) && !contains(status.as_bytes(), b) {
            break;
        }
    }

    let subject = match input.kind {
        DsnKind::Failure => "Delivery Status Notification (Failure)",
        DsnKind::Delay => "Delivery Status Notification (Delay)",
        DsnKind::Success => "Delivery Status Notification (Success)",
    };
    let mut h = String::new();
    field1(&mut h, "From", &format!("<{}>", input.from));
    field1(&mut h, "To", &format!("<{}>", input.to));
    field1(&mut h, "Subject", subject);
    field1(
        &mut h,
        "Message-ID",
        &format!(
            "<{}@{}>",
            clean(&input.message_id).replace(' ', ""),
            input.reporting_mta
        ),
    );
    field1(&mut h, "Date", &now.rfc5322());
    field1(&mut h, "MIME-Version", "1.0");
    field1(&mut h, "Auto-Submitted", "auto-replied");
    field(
        &mut h,
        "Content-Type",
        &[
            "multipart/report; report-type=delivery-status;".to_string(),
            format!("boundary=\"{boundary}\""),
        ],
    );
    h.push_str("\r\n");
    h.push_str("This is a MIME-formatted delivery status notification.\r\n");

    // Part 1: human-readable.
    h.push_str(&format!("\r\n--{boundary}\r\n"));
    field1(&mut h, "Content-Type", "text/plain; charset=utf-8");
    if text.is_ascii() {
        field1(&mut h, "Content-Transfer-Encoding", "7bit");
        h.push_str("\r\n");
        h.push_str(&text);
    } else {
        field1(&mut h, "Content-Transfer-Encoding", "base64");
        h.push_str("\r\n");
        h.push_str(&crate::codec::base64_lines(text.as_bytes()));
    }

    // Part 2: machine-readable.
    h.push_str(&format!("\r\n--{boundary}\r\n"));
    let st = if global {
        "message/global-delivery-status"
    } else {
        "message/delivery-status"
    };
    field1(&mut h, "Content-Type", st);
    h.push_str("\r\n");
    h.push_str(&status);

    // Part 3: the original.
    h.push_str(&format!("\r\n--{boundary}\r\n"));
    field1(&mut h, "Content-Type", orig_type);
    h.push_str("\r\n");
    let mut out = h.into_bytes();
    out.extend_from_slice(orig);
    if !orig.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::item;
    use mail_parser::{MessageParser, MimeHeaders};

    const ORIGINAL: &[u8] = b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\nMessage-ID: <m1@example.org>\r\n\r\nHi Bob,\r\nthe body.\r\n";

    fn recipient() -> DsnRecipient {
        DsnRecipient {
            final_recipient: "bob@example.net".into(),
            original_recipient: Some(("rfc822".into(), "Bob@example.net".into())),
            action: Action::Failed,
            status: Enhanced::new(5, 1, 1),
            remote_mta: Some("mx.example.net".into()),
            diagnostic: Some(Reply::new(
                550,
                Enhanced::parse("5.1.1"),
                "The email account that you tried to reach does not exist.\nPlease try double-checking the recipient's email address for typos or\nunnecessary spaces. https://support.example.net/mail/?p=NoSuchUser",
            )),
            detail: None,
            last_attempt: Some(UnixTime(1_795_315_268)),
            will_retry_until: None,
        }
    }

    fn input(kind: DsnKind, ret: Ret) -> DsnInput<'static> {
        DsnInput {
            reporting_mta: "mail.example.org".into(),
            from: "postmaster@example.org".into(),
            to: "alice@example.org".into(),
            kind,
            recipients: vec![recipient()],
            original: ORIGINAL,
            ret,
            envid: Some("env-123".into()),
            arrival_date: Some(UnixTime(1_795_300_000)),
            message_id: "dsn-42".into(),
        }
    }

    /// Unfolds a header block: CRLF followed by whitespace joins lines.
    fn unfold(s: &str) -> String {
        s.replace("\r\n ", " ").replace("\r\n\t", " ")
    }

    fn check_lines(msg: &[u8]) {
        assert!(
            !msg.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "bare LF"
        );
        for line in msg.split(|b| *b == b'\n') {
            assert!(line.len() < 998, "line of {} octets", line.len());
        }
    }

    #[test]
    fn failure_dsn_parts_and_fields() {
        let msg = compose_dsn(&input(DsnKind::Failure, Ret::Hdrs), UnixTime(1_795_315_300));
        check_lines(&msg);
        let m = MessageParser::default().parse(&msg).unwrap();
        assert_eq!(m.subject(), Some("Delivery Status Notification (Failure)"));
        assert_eq!(m.message_id(), Some("dsn-42@mail.example.org"));
        let ct = m.content_type().unwrap();
        assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("report")));
        assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
        assert_eq!(
            m.from().unwrap().first().unwrap().address(),
            Some("postmaster@example.org")
        );
        assert_eq!(
            m.to().unwrap().first().unwrap().address(),
            Some("alice@example.org")
        );
        let leaves: Vec<_> = m.parts.iter().filter(|p| !p.is_multipart()).collect();
        assert_eq!(leaves.len(), 3, "{:?}", leaves);
        let types: Vec<String> = leaves
            .iter()
            .map(|p| {
                let c = p.content_type().unwrap();
                format!("{}/{}", c.ctype(), c.subtype().unwrap_or(""))
            })
            .collect();
        assert_eq!(
            types,
            [
                "text/plain",
                "message/delivery-status",
                "text/rfc822-headers"
            ]
        );
        let text = leaves[0].text_contents().unwrap();
        assert!(text.contains("bob@example.net"));
        assert!(text.contains("550-5.1.1 The email account"));
        assert!(text.contains("550 5.1.1 unnecessary spaces."));

        let status = String::from_utf8(leaves[1].contents().to_vec()).unwrap();
        let u = unfold(&status);
        for want in [
            "Reporting-MTA: dns; mail.example.org\r\n",
            "Original-Envelope-Id: env-123\r\n",
            "Arrival-Date: ",
            "\r\n\r\nOriginal-Recipient: rfc822; Bob@example.net\r\n",
            "Final-Recipient: rfc822; bob@example.net\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Remote-MTA: dns; mx.example.net\r\n",
            "Last-Attempt-Date: Sun, 22 Nov 2026 02:41:08 +0000\r\n",
        ] {
            assert!(u.contains(want), "{want:?} in {u}");
        }
        // The whole multi-line reply, each line its own folded line.
        assert!(status.contains("Diagnostic-Code: smtp; 550-5.1.1 The email account"));
        assert!(status.contains("\r\n 550-5.1.1 Please try double-checking"));
        assert!(status.contains("\r\n 550 5.1.1 unnecessary spaces."));
        assert!(u.contains(
            "550-5.1.1 Please try double-checking the recipient's email address for typos or 550 5.1.1 unnecessary spaces. https://support.example.net/mail/?p=NoSuchUser"
        ));
        for l in status.split("\r\n") {
            assert!(l.len() <= 78, "folded: {l:?}");
        }
        assert!(!u.contains("Will-Retry-Until"));

        let orig = leaves[2].contents();
        assert!(orig.starts_with(b"From: Alice <alice@example.org>\r\n"));
        assert!(contains(orig, b"Subject: hello\r\n"));
        assert!(!contains(orig, b"the body"));
    }

    #[test]
    fn ret_full_attaches_message() {
        let msg = compose_dsn(&input(DsnKind::Failure, Ret::Full), UnixTime(1));
        check_lines(&msg);
        let m = MessageParser::default().parse(&msg).unwrap();
        let inner = m
            .parts
            .iter()
            .find_map(|p| p.message())
            .expect("message/rfc822 part");
        assert_eq!(inner.subject(), Some("hello"));
        assert!(inner.body_text(0).unwrap().contains("the body."));
    }

    #[test]
    fn delay_and_success_and_detail() {
        let mut inp = input(DsnKind::Delay, Ret::Hdrs);
        inp.recipients[0].action = Action::Delayed;
        inp.recipients[0].status = Enhanced::new(4, 4, 1);
        inp.recipients[0].diagnostic = None;
        inp.recipients[0].detail = Some("connection refused (port 25)".into());
        inp.recipients[0].will_retry_until = Some(UnixTime(1_795_400_000));
        inp.envid = None;
        let msg = compose_dsn(&inp, UnixTime(1));
        check_lines(&msg);
        let m = MessageParser::default().parse(&msg).unwrap();
        assert_eq!(m.subject(), Some("Delivery Status Notification (Delay)"));
        let status = String::from_utf8(m.parts[2].contents().to_vec()).unwrap();
        let u = unfold(&status);
        assert!(u.contains("Action: delayed\r\n"), "{u}");
        assert!(
            u.contains("Status: 4.4.1 (connection refused [port 25])\r\n"),
            "{u}"
        );
        assert!(u.contains("Will-Retry-Until: "), "{u}");
        assert!(!u.contains("Diagnostic-Code"));
        assert!(!u.contains("Original-Envelope-Id"));
        let text = m.parts[1].text_contents().unwrap();
        assert!(text.contains("connection refused"));
        assert!(text.contains("Attempts continue until"));

        let mut s = input(DsnKind::Success, Ret::Hdrs);
        s.recipients[0].action = Action::Relayed;
        let m2 = compose_dsn(&s, UnixTime(1));
        let m = MessageParser::default().parse(&m2).unwrap();
        assert_eq!(m.subject(), Some("Delivery Status Notification (Success)"));
    }

    #[test]
    fn hostile_values_stay_in_their_fields() {
        let mut inp = input(DsnKind::Failure, Ret::Hdrs);
        inp.envid = Some("x\r\nBcc: evil@example.com".into());
        let long = "a".repeat(3000);
        inp.recipients[0].diagnostic = Some(Reply {
            code: 550,
            enhanced: None,
            lines: vec![long.clone(), format!("word {long} end")],
        });
        inp.recipients[0].detail = Some(format!("{long}\nsecond"));
        let msg = compose_dsn(&inp, UnixTime(1));
        check_lines(&msg);
        let s = String::from_utf8_lossy(&msg);
        assert!(!s.contains("\r\nBcc:"));
        let m = MessageParser::default().parse(&msg).unwrap();
        assert_eq!(m.parts.iter().filter(|p| !p.is_multipart()).count(), 3);
    }

    #[test]
    fn boundary_not_in_content_and_utf8_addresses() {
        let first = format!("--rmox-dsn-{:016x}", fnv(b"dsn-42", 1));
        let mut orig = ORIGINAL.to_vec();
        orig.extend_from_slice(first.as_bytes());
        orig.extend_from_slice(b"\r\n");
        let mut inp = input(DsnKind::Failure, Ret::Full);
        inp.original = &orig;
        inp.recipients[0].final_recipient = "björn@example.net".into();
        let msg = compose_dsn(&inp, UnixTime(1));
        let s = String::from_utf8_lossy(&msg);
        assert!(!s.contains(&format!("boundary=\"{}\"", &first[2..])));
        let m = MessageParser::default().parse(&msg).unwrap();
        let leaves: Vec<_> = m.parts.iter().filter(|p| !p.is_multipart()).collect();
        assert!(leaves.len() >= 3);
        assert!(s.contains("Content-Type: message/global-delivery-status\r\n"));
        assert!(s.contains("Final-Recipient: utf-8; björn@example.net\r\n"));
        // Non-ASCII human text is base64, so it survives 7-bit transport.
        assert!(leaves[0]
            .text_contents()
            .unwrap()
            .contains("björn@example.net"));
    }

    #[test]
    fn for_item_and_loops() {
        let mut it = item(1);
        it.dsn.envid = Some("E1".into());
        it.dsn.ret = Some(Ret::Full);
        let i = DsnInput::for_item(
            &it,
            DsnKind::Failure,
            vec![recipient()],
            "mail.example.org",
            ORIGINAL,
            "q1".into(),
        );
        assert_eq!(i.from, "postmaster@example.org");
        assert_eq!(i.to, "alice@example.org");
        assert_eq!(i.ret, Ret::Full);
        assert_eq!(i.envid.as_deref(), Some("E1"));
        assert_eq!(i.arrival_date, Some(it.queued));
        let d = DsnInput::for_item(&it, DsnKind::Delay, vec![], "h", ORIGINAL, "q".into());
        assert_eq!(d.ret, Ret::Hdrs);
        assert!(!must_not_send_dsn(&it));
        it.is_dsn = true;
        assert!(must_not_send_dsn(&it));
        it.is_dsn = false;
        it.mail_from.clear();
        assert!(must_not_send_dsn(&it));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever the reply text, ENVID and detail: CRLF only, every line below 998
        /// octets, three leaf parts, and the status part still has one Final-Recipient per
        /// recipient.
        #[test]
        fn any_input_gives_a_well_formed_dsn(
            lines in proptest::collection::vec("[ -~\u{80}-\u{10ff}\r\n]{0,1200}", 1..5),
            envid in "[ -~\r\n]{0,300}",
            detail in proptest::option::of("[ -~\r\n()]{0,1200}"),
            nrcpt in 1usize..4,
            full in proptest::bool::ANY,
        ) {
            let mut inp = input(DsnKind::Failure, if full { Ret::Full } else { Ret::Hdrs });
            inp.envid = Some(envid);
            let mut r = recipient();
            r.diagnostic = Some(Reply { code: 554, enhanced: None, lines });
            r.detail = detail;
            inp.recipients = vec![r; nrcpt];
            let msg = compose_dsn(&inp, UnixTime(1));
            check_lines(&msg);
            let m = MessageParser::default().parse(&msg).unwrap();
            let leaves: Vec<_> = m.parts.iter().filter(|p| !p.is_multipart()).collect();
            proptest::prop_assert!(leaves.len() >= 3);
            let status = unfold(&String::from_utf8_lossy(leaves[1].contents()));
            proptest::prop_assert_eq!(status.matches("\r\nFinal-Recipient: ").count(), nrcpt);
        }
    }

    #[test]
    fn field_folding() {
        let mut s = String::new();
        field(&mut s, "X", &["a b".into(), "c".into()]);
        assert_eq!(s, "X: a b\r\n c\r\n");
        let mut s = String::new();
        let words: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
        field1(&mut s, "Subject", &words.join(" "));
        assert!(s.split("\r\n").all(|l| l.len() <= 78));
        assert_eq!(unfold(&s), format!("Subject: {}\r\n", words.join(" ")));
    }
}
