//! Replies: code, optional enhanced status code (RFC 3463/2034) and text lines.

use std::fmt;

use super::line::{split_line, LineResult};
use super::MAX_REPLY_LINE;

/// Longest reply line the parser accepts, line ending included. Servers are supposed to stay
/// within 512 octets; we are lenient on input.
pub const MAX_REPLY_LINE_IN: usize = 2048;
/// Most lines accepted in one reply.
pub const MAX_REPLY_LINES: usize = 256;

/// An enhanced status code `class.subject.detail`, e.g. `5.7.1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Enhanced {
    /// 2, 4 or 5.
    pub class: u8,
    /// Subject, 0-999.
    pub subject: u16,
    /// Detail, 0-999.
    pub detail: u16,
}

impl Enhanced {
    /// An enhanced code from its three parts.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Enhanced {
        Enhanced {
            class,
            subject,
            detail,
        }
    }

    /// Parses `class.subject.detail`: class 2, 4 or 5, subject and detail 1-3 digits.
    pub fn parse(s: &str) -> Option<Enhanced> {
        let mut parts = s.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() {
            return None;
        }
        if !matches!(class, "2" | "4" | "5") {
            return None;
        }
        let num = |p: &str| -> Option<u16> {
            if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        Some(Enhanced {
            class: class.parse().ok()?,
            subject: num(subject)?,
            detail: num(detail)?,
        })
    }
}

impl fmt::Display for Enhanced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// A reply, possibly multi-line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit code, 200-599.
    pub code: u16,
    /// Enhanced status code, when the server uses ENHANCEDSTATUSCODES.
    pub enhanced: Option<Enhanced>,
    /// The text, one entry per line, without code, enhanced code or CRLF. At least one line
    /// (possibly empty).
    pub lines: Vec<String>,
}

/// Splits text at CRLF, CR or LF; always at least one (possibly empty) piece.
fn split_text(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            Some(i) => {
                let after = s.get(i..).unwrap_or_default();
                let skip = if after.starts_with("\r\n") { 2 } else { 1 };
                rest = Some(s.get(i + skip..).unwrap_or_default());
                Some(s.get(..i).unwrap_or_default())
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

/// Cuts `s` into pieces of at most `width` bytes, preferring to break after a space; the
/// space stays at the end of the earlier piece, so concatenating the pieces gives `s`.
fn wrap(s: &str, width: usize) -> impl Iterator<Item = &str> {
    let width = width.max(4);
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        if s.len() <= width {
            rest = None;
            return Some(s);
        }
        let mut cut = width;
        while cut > 0 && !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let head = s.get(..cut).unwrap_or_default();
        if let Some(sp) = head.rfind(' ') {
            cut = sp + 1;
        }
        // width >= 4 and a char is at most 4 bytes, so cut > 0 and we make progress.
        let (a, b) = (s.get(..cut).unwrap_or(s), s.get(cut..).unwrap_or_default());
        rest = if b.is_empty() { None } else { Some(b) };
        Some(a)
    })
}

impl Reply {
    /// A reply; `text` is split into lines at CR/LF.
    pub fn new(code: u16, enhanced: Option<Enhanced>, text: impl Into<String>) -> Reply {
        let text = text.into();
        Reply {
            code,
            enhanced,
            lines: split_text(&text).map(str::to_owned).collect(),
        }
    }

    /// Appends the reply in wire form: `250-a\r\n250 b\r\n`, the enhanced code after the
    /// code on every line when set. Lines are wrapped (at a space when possible) so that no
    /// line exceeds 512 octets including CRLF; CR and LF in the text start new lines.
    pub fn render(&self, out: &mut Vec<u8>) {
        let code = self.code.min(999);
        let enhanced = self.enhanced.map(|e| e.to_string());
        let prefix_len = 4 + enhanced.as_ref().map_or(0, |e| e.len() + 1);
        let width = MAX_REPLY_LINE.saturating_sub(2 + prefix_len);
        let mut pieces: Vec<&str> = Vec::new();
        for line in &self.lines {
            for l in split_text(line) {
                pieces.extend(wrap(l, width));
            }
        }
        if pieces.is_empty() {
            pieces.push("");
        }
        let n = pieces.len();
        for (i, piece) in pieces.into_iter().enumerate() {
            let sep = if i + 1 == n { b' ' } else { b'-' };
            out.extend_from_slice(format!("{code:03}").as_bytes());
            match &enhanced {
                Some(e) => {
                    out.push(sep);
                    out.extend_from_slice(e.as_bytes());
                    if !piece.is_empty() {
                        out.push(b' ');
                        out.extend_from_slice(piece.as_bytes());
                    }
                }
                None if piece.is_empty() => {
                    if sep == b'-' {
                        out.push(b'-');
                    }
                }
                None => {
                    out.push(sep);
                    out.extend_from_slice(piece.as_bytes());
                }
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The text lines joined with `\n`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl fmt::Display for Reply {
    /// One line for logs and error messages: `550 5.7.1 text; more text`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        let text = self.lines.join("; ");
        if !text.is_empty() {
            write!(f, " {text}")?;
        }
        Ok(())
    }
}

/// Why reply bytes did not parse (client side).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// A line does not start with three digits followed by space, `-` or end of line.
    #[error("malformed reply line: {0:?}")]
    Malformed(String),
    /// The lines of one multi-line reply carry different codes.
    #[error("reply lines with different codes: {0} and {1}")]
    CodeMismatch(u16, u16),
    /// A reply line is longer than the limit.
    #[error("reply line too long")]
    LineTooLong,
    /// Too many lines in one reply.
    #[error("too many reply lines")]
    TooManyLines,
}

/// Push parser for replies: feed bytes, get complete replies.
#[derive(Debug, Default)]
pub struct ReplyParser {
    pub(crate) lines: Vec<String>,
    pub(crate) code: Option<u16>,
    pub(crate) enhanced: Option<Enhanced>,
}

/// Splits `5.7.1 text` into the code and the rest (one space removed) when it starts with an
/// enhanced code of class `class`.
fn split_enhanced(text: &str, class: u8) -> Option<(Enhanced, &str)> {
    let (head, rest) = match text.find(' ') {
        Some(i) => (text.get(..i)?, text.get(i + 1..)?),
        None => (text, ""),
    };
    let e = Enhanced::parse(head)?;
    (e.class == class).then_some((e, rest))
}

impl ReplyParser {
    /// A parser expecting the first line of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes complete lines of at most one reply from `input`. Returns `(Some(reply),
    /// consumed)` when a reply completed and `(None, consumed)` when more input is needed;
    /// an incomplete last line is not consumed. After an error the parser is reset.
    pub fn feed(&mut self, input: &[u8]) -> Result<(Option<Reply>, usize), ReplyError> {
        let r = self.feed_inner(input);
        if r.is_err() {
            *self = Self::default();
        }
        r
    }

    fn feed_inner(&mut self, input: &[u8]) -> Result<(Option<Reply>, usize), ReplyError> {
        let mut pos = 0;
        loop {
            let rest = input.get(pos..).unwrap_or_default();
            let (line, used) = match split_line(rest, MAX_REPLY_LINE_IN) {
                LineResult::Line(l, n) => (l, n),
                LineResult::Partial => return Ok((None, pos)),
                LineResult::TooLong => return Err(ReplyError::LineTooLong),
            };
            pos += used;
            let (code, last, text) = parse_line(line)?;
            if let Some(prev) = self.code {
                if prev != code {
                    return Err(ReplyError::CodeMismatch(prev, code));
                }
            }
            if self.lines.len() >= MAX_REPLY_LINES {
                return Err(ReplyError::TooManyLines);
            }
            let class = (code / 100) as u8;
            let text = if self.code.is_none() {
                self.code = Some(code);
                match split_enhanced(text, class) {
                    Some((e, t)) => {
                        self.enhanced = Some(e);
                        t
                    }
                    None => text,
                }
            } else {
                match (self.enhanced, split_enhanced(text, class)) {
                    (Some(e), Some((e2, t))) if e == e2 => t,
                    _ => text,
                }
            };
            self.lines.push(text.to_owned());
            if last {
                let reply = Reply {
                    code,
                    enhanced: self.enhanced.take(),
                    lines: std::mem::take(&mut self.lines),
                };
                self.code = None;
                return Ok((Some(reply), pos));
            }
        }
    }
}

/// Parses one reply line: code, whether it is the last line, and the text.
fn parse_line(line: &[u8]) -> Result<(u16, bool, &str), ReplyError> {
    let malformed = || ReplyError::Malformed(String::from_utf8_lossy(line).into_owned());
    let (digits, rest) = match line {
        [a, b, c, rest @ ..] => ([*a, *b, *c], rest),
        _ => return Err(malformed()),
    };
    if !digits.iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&digits[0]) {
        return Err(malformed());
    }
    let code = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    let (last, text) = match rest {
        [] => (true, &[][..]),
        [b' ', t @ ..] => (true, t),
        [b'-', t @ ..] => (false, t),
        _ => return Err(malformed()),
    };
    let text = std::str::from_utf8(text).map_err(|_| malformed())?;
    Ok((code, last, text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn render(r: &Reply) -> String {
        let mut out = Vec::new();
        r.render(&mut out);
        String::from_utf8(out).unwrap()
    }

    fn parse_all(mut input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut p = ReplyParser::new();
        let mut out = Vec::new();
        loop {
            let (r, n) = p.feed(input)?;
            input = &input[n..];
            match r {
                Some(r) => out.push(r),
                None => {
                    assert!(input.iter().all(|&b| b != b'\n'), "unconsumed line");
                    return Ok(out);
                }
            }
        }
    }

    #[test]
    fn enhanced_parse() {
        let cases: &[(&str, Option<Enhanced>)] = &[
            ("5.7.1", Some(Enhanced::new(5, 7, 1))),
            ("2.0.0", Some(Enhanced::new(2, 0, 0))),
            ("4.999.999", Some(Enhanced::new(4, 999, 999))),
            ("5.1.10", Some(Enhanced::new(5, 1, 10))),
            ("3.0.0", None),
            ("5.1", None),
            ("5.1.1.1", None),
            ("5..1", None),
            ("5.1000.1", None),
            ("5.a.1", None),
            ("5.+1.1", None),
            ("", None),
            ("25.0.0", None),
        ];
        for (s, want) in cases {
            assert_eq!(Enhanced::parse(s), *want, "{s}");
            if let Some(e) = want {
                assert_eq!(e.to_string(), *s);
            }
        }
    }

    #[test]
    fn render_table() {
        let e = Some(Enhanced::new(2, 0, 0));
        let cases: &[(Reply, &str)] = &[
            (Reply::new(250, None, "ok"), "250 ok\r\n"),
            (Reply::new(250, e, "ok"), "250 2.0.0 ok\r\n"),
            (Reply::new(250, None, ""), "250\r\n"),
            (Reply::new(250, e, ""), "250 2.0.0\r\n"),
            (Reply::new(250, None, "a\nb"), "250-a\r\n250 b\r\n"),
            (
                Reply::new(250, None, "a\r\nb\rc"),
                "250-a\r\n250-b\r\n250 c\r\n",
            ),
            (
                Reply::new(250, e, "a\n\nb"),
                "250-2.0.0 a\r\n250-2.0.0\r\n250 2.0.0 b\r\n",
            ),
            (Reply::new(354, None, "go"), "354 go\r\n"),
            (
                Reply {
                    code: 550,
                    enhanced: None,
                    lines: vec!["x\ry".into()],
                },
                "550-x\r\n550 y\r\n",
            ),
            (
                Reply {
                    code: 550,
                    enhanced: None,
                    lines: vec![],
                },
                "550\r\n",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(render(r), *want, "{r:?}");
        }
    }

    #[test]
    fn render_wraps_long_lines() {
        let word = "abcdefghi ";
        let text = word.repeat(120);
        let r = Reply::new(550, Some(Enhanced::new(5, 7, 1)), text.clone());
        let s = render(&r);
        let lines: Vec<&str> = s.split_inclusive("\r\n").collect();
        assert!(lines.len() >= 3);
        for l in &lines {
            assert!(l.len() <= 512, "{}", l.len());
            assert!(l.starts_with("550"));
        }
        // Wrapped after a space.
        assert!(lines[0].ends_with(" \r\n"));
        let parsed = parse_all(s.as_bytes()).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].lines.concat(), text);

        // No space: hard split, UTF-8 boundaries respected.
        let text = "é".repeat(700);
        let s = render(&Reply::new(250, None, text.clone()));
        for l in s.split_inclusive("\r\n") {
            assert!(l.len() <= 512);
        }
        assert_eq!(parse_all(s.as_bytes()).unwrap()[0].lines.concat(), text);
    }

    #[test]
    fn parse_table() {
        let ok: &[(&str, Reply)] = &[
            ("250 ok\r\n", Reply::new(250, None, "ok")),
            ("250 ok\n", Reply::new(250, None, "ok")),
            ("250\r\n", Reply::new(250, None, "")),
            ("250 \r\n", Reply::new(250, None, "")),
            (
                "250 2.0.0 ok\r\n",
                Reply::new(250, Some(Enhanced::new(2, 0, 0)), "ok"),
            ),
            (
                "250 2.0.0\r\n",
                Reply::new(250, Some(Enhanced::new(2, 0, 0)), ""),
            ),
            // Class must match the code.
            ("250 5.0.0 ok\r\n", Reply::new(250, None, "5.0.0 ok")),
            ("250 2.0 ok\r\n", Reply::new(250, None, "2.0 ok")),
            ("250 2.0.0ok\r\n", Reply::new(250, None, "2.0.0ok")),
            (
                "250-mx.example Hello\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
                Reply::new(250, None, "mx.example Hello\nPIPELINING\nSIZE 1000"),
            ),
            (
                "550-5.7.1 a\r\n550-5.7.1 b\r\n550 5.7.1\r\n",
                Reply::new(550, Some(Enhanced::new(5, 7, 1)), "a\nb\n"),
            ),
            (
                "550-5.7.1 a\r\n550-b\r\n550 5.7.2 c\r\n",
                Reply::new(550, Some(Enhanced::new(5, 7, 1)), "a\nb\n5.7.2 c"),
            ),
            ("421 bye\r\n", Reply::new(421, None, "bye")),
        ];
        for (input, want) in ok {
            let got = parse_all(input.as_bytes()).unwrap();
            assert_eq!(got, vec![want.clone()], "{input:?}");
        }
        let bad: &[(&[u8], ReplyError)] = &[
            (b"25 ok\r\n", ReplyError::Malformed("25 ok".into())),
            (b"2500 ok\r\n", ReplyError::Malformed("2500 ok".into())),
            (b"abc ok\r\n", ReplyError::Malformed("abc ok".into())),
            (b"150 ok\r\n", ReplyError::Malformed("150 ok".into())),
            (b"650 ok\r\n", ReplyError::Malformed("650 ok".into())),
            (b"250_ok\r\n", ReplyError::Malformed("250_ok".into())),
            (b"\r\n", ReplyError::Malformed("".into())),
            (b"hello\r\n", ReplyError::Malformed("hello".into())),
            (b"250-a\r\n251 b\r\n", ReplyError::CodeMismatch(250, 251)),
            (
                b"250 \xff\r\n",
                ReplyError::Malformed("250 \u{fffd}".into()),
            ),
        ];
        for (input, want) in bad {
            assert_eq!(parse_all(input), Err(want.clone()), "{input:?}");
        }
        let long = format!("250 {}\r\n", "a".repeat(3000));
        assert_eq!(parse_all(long.as_bytes()), Err(ReplyError::LineTooLong));
        // Lenient beyond 512 on input.
        let longish = format!("250 {}\r\n", "a".repeat(1500));
        assert_eq!(parse_all(longish.as_bytes()).unwrap().len(), 1);
        let many = "250-x\r\n".repeat(300) + "250 x\r\n";
        assert_eq!(parse_all(many.as_bytes()), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn feed_partial_and_pipelined() {
        let mut p = ReplyParser::new();
        assert_eq!(p.feed(b"250-a\r\n250 b"), Ok((None, 7)));
        let (r, n) = p.feed(b"250 b\r\n354 go\r\n").unwrap();
        assert_eq!(r, Some(Reply::new(250, None, "a\nb")));
        assert_eq!(n, 7);
        assert_eq!(
            p.feed(b"354 go\r\n"),
            Ok((Some(Reply::new(354, None, "go")), 8))
        );
        assert_eq!(p.feed(b""), Ok((None, 0)));
    }

    #[test]
    fn predicates() {
        let r = |c| Reply::new(c, None, "");
        assert!(r(250).is_positive() && r(354).is_positive() && !r(421).is_positive());
        assert!(r(421).is_transient() && !r(550).is_transient());
        assert!(r(550).is_permanent() && !r(250).is_permanent());
        assert_eq!(Reply::new(250, None, "a\r\nb").text(), "a\nb");
        assert_eq!(
            Reply::new(550, Some(Enhanced::new(5, 1, 1)), "no\nsuch").to_string(),
            "550 5.1.1 no; such"
        );
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        let code = prop_oneof![200u16..600];
        let enh = proptest::option::of((
            prop_oneof![Just(2u8), Just(4), Just(5)],
            0u16..1000,
            0u16..1000,
        ));
        let line = "[a-zA-Z][a-zA-Z0-9 .é-]{0,80}|";
        (code, enh, proptest::collection::vec(line, 1..5)).prop_map(|(code, enh, lines)| {
            let class = (code / 100) as u8;
            let enhanced = enh
                .filter(|_| class != 3)
                .map(|(_, s, d)| Enhanced::new(class, s, d));
            Reply {
                code,
                enhanced,
                lines,
            }
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn roundtrip(r in arb_reply()) {
            let s = render(&r);
            let got = parse_all(s.as_bytes()).unwrap();
            prop_assert_eq!(got, vec![r]);
        }

        #[test]
        fn roundtrip_long(code in 200u16..600, words in proptest::collection::vec("[a-z]{1,40}|[a-zé]{300,600}", 1..60), enh in any::<bool>()) {
            let text = words.join(" ");
            let class = (code / 100) as u8;
            let enhanced = (enh && class != 3).then(|| Enhanced::new(class, 999, 999));
            let r = Reply::new(code, enhanced, text.clone());
            let s = render(&r);
            for l in s.as_bytes().split_inclusive(|&b| b == b'\n') {
                prop_assert!(l.len() <= 512);
            }
            let got = parse_all(s.as_bytes()).unwrap();
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(got[0].code, code);
            prop_assert_eq!(got[0].enhanced, enhanced);
            prop_assert_eq!(got[0].lines.concat(), text);
        }

        #[test]
        fn parser_never_panics(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_all(&input);
        }
    }
}
