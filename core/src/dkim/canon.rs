//! Message splitting and canonicalisation (RFC 6376 3.4).
//!
//! The message is CRLF-terminated as received over SMTP. Header fields are found with a
//! small splitter (no MIME parse): a field starts at a line that does not begin with
//! space or tab and runs until the next such line; the header ends at the first empty
//! line.

use std::ops::Range;

/// Canonicalisation algorithm for header or body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Canon {
    /// `simple`: almost no changes.
    Simple,
    /// `relaxed`: whitespace and header-name case changes tolerated.
    Relaxed,
}

impl Canon {
    /// The name in a `c=` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Canon::Simple => "simple",
            Canon::Relaxed => "relaxed",
        }
    }
}

/// One header field of a message: byte ranges into the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderField {
    /// The field name, without trailing whitespace.
    pub name: Range<usize>,
    /// The whole field, name to final CRLF inclusive (continuation lines included).
    pub raw: Range<usize>,
    /// The value: after the colon up to, not including, the final CRLF.
    pub value: Range<usize>,
}

/// Why a message's header could not be split.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The message starts with a continuation line.
    #[error("message starts with a continuation line")]
    LeadingContinuation,
    /// A header line has no colon.
    #[error("header line without colon at byte {0}")]
    MissingColon(usize),
    /// A header field name is empty or has a byte outside printable ASCII.
    #[error("bad header field name at byte {0}")]
    BadName(usize),
}

/// A message split into header fields and the body offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMessage {
    /// The header fields, top to bottom.
    pub fields: Vec<HeaderField>,
    /// Where the body starts (after the empty line), or the message length if there is
    /// none.
    pub body_start: usize,
}

/// Splits `msg` into header fields and body. Lines end in CRLF; a bare LF also ends a
/// line (so the splitter never loses bytes), but canonicalisation keeps it as is.
pub fn split_message(msg: &[u8]) -> Result<SplitMessage, HeaderError> {
    let mut fields: Vec<HeaderField> = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let line_end = match memchr_lf(&msg[pos..]) {
            Some(i) => pos + i + 1,
            None => msg.len(),
        };
        let line = &msg[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            return Ok(SplitMessage {
                fields,
                body_start: line_end,
            });
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            let Some(last) = fields.last_mut() else {
                return Err(HeaderError::LeadingContinuation);
            };
            last.raw.end = line_end;
            last.value.end = line_end - eol_len(line);
        } else {
            let Some(colon) = line.iter().position(|&c| c == b':') else {
                return Err(HeaderError::MissingColon(pos));
            };
            let mut name_end = colon;
            while name_end > 0 && matches!(line[name_end - 1], b' ' | b'\t') {
                name_end -= 1;
            }
            if name_end == 0 || line[..name_end].iter().any(|&c| !(0x21..0x7f).contains(&c)) {
                return Err(HeaderError::BadName(pos));
            }
            fields.push(HeaderField {
                name: pos..pos + name_end,
                raw: pos..line_end,
                value: pos + colon + 1..line_end - eol_len(line),
            });
        }
        pos = line_end;
    }
    Ok(SplitMessage {
        fields,
        body_start: msg.len(),
    })
}

fn memchr_lf(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

fn eol_len(line: &[u8]) -> usize {
    if line.ends_with(b"\r\n") {
        2
    } else if line.ends_with(b"\n") {
        1
    } else {
        0
    }
}

/// Appends the canonical form of one header field (`raw`: name to CRLF inclusive, or
/// without the final CRLF) to `out`. Relaxed output always ends in CRLF; simple output
/// is `raw` unchanged.
pub fn canon_header(c: Canon, raw: &[u8], out: &mut Vec<u8>) {
    match c {
        Canon::Simple => out.extend_from_slice(raw),
        Canon::Relaxed => {
            relaxed_header_no_crlf(raw, out);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// Relaxed header canonicalisation without the final CRLF (the DKIM-Signature field
/// itself is hashed this way).
pub fn relaxed_header_no_crlf(raw: &[u8], out: &mut Vec<u8>) {
    let (name, value) = match raw.iter().position(|&c| c == b':') {
        Some(i) => (&raw[..i], &raw[i + 1..]),
        None => (raw, &raw[raw.len()..]),
    };
    let name_trimmed = trim_end_wsp(name);
    out.extend(name_trimmed.iter().map(|c| c.to_ascii_lowercase()));
    out.push(b':');
    // Unfold (drop CR and LF), collapse WSP runs, trim both ends.
    let start = out.len();
    let mut pending_space = false;
    for &c in value {
        match c {
            b'\r' | b'\n' => {}
            b' ' | b'\t' => pending_space = true,
            _ => {
                if pending_space && out.len() > start {
                    out.push(b' ');
                }
                pending_space = false;
                out.push(c);
            }
        }
    }
}

fn trim_end_wsp(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && matches!(b[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    &b[..end]
}

/// The canonical body (RFC 6376 3.4.3, 3.4.4).
pub fn canon_body(c: Canon, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 2);
    canon_body_into(c, body, &mut |b| out.extend_from_slice(b));
    out
}

/// The canonical body handed to `sink` in pieces, without building it: a body hash over a
/// spooled message of many MiB costs no heap (the body is only read).
pub fn canon_body_into(c: Canon, body: &[u8], sink: &mut dyn FnMut(&[u8])) {
    // Empty lines are held back until a non-empty line follows: trailing ones are dropped.
    let mut empty = 0usize;
    let mut any = false;
    let mut rest = body;
    while !rest.is_empty() {
        let line = match find_crlf(rest) {
            Some(i) => {
                let l = &rest[..i];
                rest = &rest[i + 2..];
                l
            }
            None => std::mem::take(&mut rest),
        };
        let blank = match c {
            Canon::Simple => line.is_empty(),
            Canon::Relaxed => line.iter().all(|&ch| ch == b' ' || ch == b'\t'),
        };
        if blank {
            empty += 1;
            continue;
        }
        for _ in 0..empty {
            sink(b"\r\n");
        }
        empty = 0;
        any = true;
        match c {
            Canon::Simple => sink(line),
            Canon::Relaxed => relaxed_line(line, sink),
        }
        sink(b"\r\n");
    }
    if !any && c == Canon::Simple {
        sink(b"\r\n");
    }
}

/// One body line in relaxed form (whitespace runs as one space, none at the end), as
/// slices of the line.
fn relaxed_line(line: &[u8], sink: &mut dyn FnMut(&[u8])) {
    let wsp = |ch: &u8| *ch == b' ' || *ch == b'\t';
    let mut rest = line;
    let mut space = false;
    while !rest.is_empty() {
        let n = rest.iter().position(wsp).unwrap_or(rest.len());
        if n > 0 {
            if space {
                sink(b" ");
            }
            sink(&rest[..n]);
            space = false;
            rest = &rest[n..];
        }
        let w = rest.iter().position(|c| !wsp(c)).unwrap_or(rest.len());
        if w > 0 {
            space = true;
            rest = &rest[w..];
        }
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// `msg` with every bare LF turned into CRLF (for messages read from files written with
/// Unix line endings; messages from SMTP are CRLF already).
pub fn to_crlf(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 32);
    let mut prev = 0u8;
    for &c in msg {
        if c == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc6376_example_3_4_5() {
        let msg = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
        let s = split_message(msg).unwrap();
        assert_eq!(s.fields.len(), 2);
        let mut relaxed = Vec::new();
        for f in &s.fields {
            canon_header(Canon::Relaxed, &msg[f.raw.clone()], &mut relaxed);
        }
        assert_eq!(relaxed, b"a:X\r\nb:Y Z\r\n");
        let mut simple = Vec::new();
        for f in &s.fields {
            canon_header(Canon::Simple, &msg[f.raw.clone()], &mut simple);
        }
        assert_eq!(simple, b"A: X\r\nB : Y\t\r\n\tZ  \r\n");
        let body = &msg[s.body_start..];
        assert_eq!(canon_body(Canon::Relaxed, body), b" C\r\nD E\r\n");
        assert_eq!(canon_body(Canon::Simple, body), b" C \r\nD \t E\r\n");
    }

    #[test]
    fn bodies() {
        let table: &[(&[u8], &[u8], &[u8])] = &[
            // (body, simple, relaxed)
            (b"", b"\r\n", b""),
            (b"\r\n", b"\r\n", b""),
            (b"\r\n\r\n", b"\r\n", b""),
            (b"a", b"a\r\n", b"a\r\n"),
            (b"a \r\n\r\n", b"a \r\n", b"a\r\n"),
            (b" \r\n", b" \r\n", b""),
            (
                b"a\r\n \t\r\nb\r\n",
                b"a\r\n \t\r\nb\r\n",
                b"a\r\n\r\nb\r\n",
            ),
        ];
        for (body, simple, relaxed) in table {
            assert_eq!(canon_body(Canon::Simple, body), *simple, "{body:?}");
            assert_eq!(canon_body(Canon::Relaxed, body), *relaxed, "{body:?}");
        }
    }

    #[test]
    fn split_errors() {
        assert_eq!(
            split_message(b" a: b\r\n").unwrap_err(),
            HeaderError::LeadingContinuation
        );
        assert_eq!(
            split_message(b"a: b\r\nnocolon\r\n").unwrap_err(),
            HeaderError::MissingColon(6)
        );
        assert_eq!(
            split_message(b": b\r\n").unwrap_err(),
            HeaderError::BadName(0)
        );
        let s = split_message(b"a: b").unwrap();
        assert_eq!(s.fields.len(), 1);
        assert_eq!(s.body_start, 4);
        assert_eq!(to_crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\nc\r\n");
    }

    fn arb_body() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b' '),
                Just(b'\t'),
                Just(b'\r'),
                Just(b'\n'),
                Just(b'a'),
                Just(b'b')
            ],
            0..64,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn body_canon_idempotent(body in arb_body()) {
            for c in [Canon::Simple, Canon::Relaxed] {
                let once = canon_body(c, &body);
                prop_assert_eq!(canon_body(c, &once), once.clone());
            }
        }

        #[test]
        fn header_canon_idempotent(value in "[ \\ta-z:]{0,30}") {
            let raw = format!("Subject:{value}\r\n");
            let mut once = Vec::new();
            canon_header(Canon::Relaxed, raw.as_bytes(), &mut once);
            let mut twice = Vec::new();
            canon_header(Canon::Relaxed, &once, &mut twice);
            prop_assert_eq!(twice, once);
        }

        /// Relaxed header canonicalisation does not see where a field was folded.
        #[test]
        fn relaxed_folding_invariant(words in proptest::collection::vec("[a-z0-9]{1,8}", 1..8), folds in proptest::collection::vec(any::<bool>(), 8)) {
            let plain = format!("Subject: {}\r\n", words.join(" "));
            let mut folded = String::from("Subject:");
            for (i, w) in words.iter().enumerate() {
                if folds[i % folds.len()] { folded.push_str("\r\n\t "); } else { folded.push(' '); }
                folded.push_str(w);
            }
            folded.push_str("\r\n");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            canon_header(Canon::Relaxed, plain.as_bytes(), &mut a);
            canon_header(Canon::Relaxed, folded.as_bytes(), &mut b);
            prop_assert_eq!(a, b);
        }
    }
}
