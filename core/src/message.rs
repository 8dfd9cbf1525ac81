//! Small, fast views of a message's header section, for the checks the SMTP server makes
//! on every message (separation of header and body, From, Return-Path, Message-Id, Date,
//! TLS-Required). Whole-message parsing uses `mail-parser`.
//!
//! # When a message "cannot be parsed"
//!
//! The server refuses a message after DATA (`554 5.6.0`) only when [`check_structure`]
//! finds one of these, and nothing else, so that real mail (odd, old or sloppy) passes:
//!
//! 1. No header/body separator: no empty line ends the header section (checked first, by
//!    [`body_offset`]).
//! 2. A line of the header section that is neither a field (a name of printable US-ASCII
//!    characters other than `:`, optionally followed by spaces or tabs, then `:`) nor a
//!    continuation line (starting with a space or tab, not as the first line).
//! 3. A multipart part (`Content-Type: multipart/...`, at any nesting level of the
//!    message itself; attached `message/rfc822` messages are not inspected) without a
//!    `boundary` parameter, or whose body never contains a delimiter line
//!    (`--boundary` at the start of a line).
//!
//! Not refused: missing or unterminated close delimiters, bad encodings (base64,
//! quoted-printable, encoded words), 8-bit or NUL bytes, unknown content types, missing
//! From/Date/Message-Id (checked separately on submission), and a multipart message the
//! MIME parser gives up on (mail-parser panics on some; rule 3 is then not checked).

/// Offset of the body: just after the first empty line (`CRLF CRLF`, or a message that
/// starts with `CRLF`). `None` when there is no header/body separator.
pub fn body_offset(msg: &[u8]) -> Option<usize> {
    if msg.starts_with(b"\r\n") {
        return Some(2);
    }
    msg.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// One header field: its name as written and its raw value (unfolded lines kept as is,
/// without the final CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field name, e.g. `From`.
    pub name: &'a [u8],
    /// The raw value after the colon, folding included.
    pub value: &'a [u8],
}

/// The fields of a header section (`header` up to, not including, the empty line).
/// Malformed lines (no colon) end the iteration.
pub fn fields(header: &[u8]) -> impl Iterator<Item = Field<'_>> {
    let mut rest = header;
    std::iter::from_fn(move || {
        if rest.is_empty() || rest.starts_with(b"\r\n") {
            return None;
        }
        // Find the end of this field: a CRLF not followed by WSP.
        let mut end = 0;
        let len = loop {
            match rest[end..].windows(2).position(|w| w == b"\r\n") {
                None => break rest.len(),
                Some(p) => {
                    let at = end + p;
                    match rest.get(at + 2) {
                        Some(b' ') | Some(b'\t') => end = at + 2,
                        _ => break at,
                    }
                }
            }
        };
        let line = &rest[..len];
        rest = rest.get(len + 2..).unwrap_or(&[]);
        let colon = line.iter().position(|&c| c == b':')?;
        let name = trim(&line[..colon]);
        if name.is_empty() || name.iter().any(|c| !c.is_ascii_graphic()) {
            return None;
        }
        Some(Field {
            name,
            value: &line[colon + 1..],
        })
    })
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// Values of all fields named `name` (case-insensitive), whitespace-trimmed.
pub fn values<'a>(header: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    fields(header)
        .filter(move |f| f.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| trim(f.value))
}

/// Whether the header has a field named `name`.
pub fn has_field(header: &[u8], name: &str) -> bool {
    values(header, name).next().is_some()
}

/// The addresses in the From field(s) (addr-spec only, display names dropped), as written.
pub fn from_addresses(header: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    with_fields_parsed(header, "From", |parsed| {
        if let Some(from) = parsed.from() {
            for a in from.iter() {
                if let Some(addr) = a.address() {
                    out.push(addr.to_string());
                }
            }
        }
    });
    out
}

/// The addresses in the fields named `field` (`from`, `to`, `cc`...; addr-spec only,
/// display names dropped, groups flattened), as written.
pub fn addresses(header: &[u8], field: &str) -> Vec<String> {
    let mut out = Vec::new();
    with_fields_parsed(header, field, |parsed| {
        for v in parsed.header_values(field) {
            if let mail_parser::HeaderValue::Address(list) = v {
                for a in list.iter() {
                    if let Some(addr) = a.address() {
                        out.push(addr.to_string());
                    }
                }
            }
        }
    });
    out
}

/// The Message-ID of a header section (the `msg-id` without angle brackets), read by
/// mail-parser: comments and folding around it are not part of it. `None` when there is
/// none (or the header does not parse).
pub fn message_id(header: &[u8]) -> Option<String> {
    with_fields_parsed(header, "Message-ID", |parsed| {
        parsed
            .message_id()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_string)
    })
    .flatten()
}

/// Runs `read` on mail-parser's parse of the fields named `name` only. The server reads a
/// field or two of every message; parsing them alone skips the costly rest (a long chain of
/// `Received` fields is most of a header). A field's value parses the same without the
/// others, so the answer is the whole header's; when a line of `header` is not a field (the
/// splitter and mail-parser could disagree on where fields end) the whole header is parsed.
/// `None` when mail-parser finds no header (or panics).
fn with_fields_parsed<T>(
    header: &[u8],
    name: &str,
    read: impl FnOnce(&mail_parser::Message<'_>) -> T,
) -> Option<T> {
    fn parse(h: &[u8]) -> Option<mail_parser::Message<'_>> {
        no_panic(|| mail_parser::MessageParser::new().parse_headers(h))
    }
    match only_fields(header, name) {
        Some(only) => parse(&only).map(|m| read(&m)),
        None => parse(header).map(|m| read(&m)),
    }
}

/// The fields of `header` named `name`, as written, ending with the empty line (so a
/// header section of their own); `None` when a line of `header` is not a field or a
/// continuation of one, or a field is empty of any byte after its name.
fn only_fields(header: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut next = 0;
    for f in fields(header) {
        let start = f.name.as_ptr() as usize - header.as_ptr() as usize;
        // `fields` trims the name; only an untrimmed line start is a field as written.
        if start != next {
            return None;
        }
        let end = f.value.as_ptr() as usize - header.as_ptr() as usize + f.value.len();
        if f.name.eq_ignore_ascii_case(name.as_bytes()) {
            out.extend_from_slice(&header[start..end]);
            out.extend_from_slice(b"\r\n");
        }
        next = end + 2;
    }
    // Every byte up to the end (or the empty line that ends the section) was a field.
    let rest = header.get(next..).unwrap_or(&[]);
    if !(rest.is_empty() || rest.starts_with(b"\r\n")) {
        return None;
    }
    if out.is_empty() {
        // No such field: an empty section (mail-parser finds no header at all then).
        return Some(b"X: \r\n\r\n".to_vec());
    }
    out.extend_from_slice(b"\r\n");
    Some(out)
}

/// The first leaf part of `msg` (a whole message) that `parse` reads: `parse` says `None`
/// for a part that is not a candidate. `None` when the message does not parse or has no
/// candidate; the first candidate's error when none parsed. Report readers (DMARC, TLSRPT)
/// find their attachment with it.
pub fn first_part<T, E>(
    msg: &[u8],
    mut parse: impl FnMut(&[u8]) -> Option<Result<T, E>>,
) -> Option<Result<T, E>> {
    let parsed = parse_mime(msg)?;
    let mut first_err = None;
    for part in parsed.parts.iter().filter(|p| !p.is_multipart()) {
        match parse(part.contents()) {
            Some(Ok(v)) => return Some(Ok(v)),
            Some(Err(e)) => {
                first_err.get_or_insert(e);
            }
            None => {}
        }
    }
    first_err.map(Err)
}

/// Number of `Received` fields in a header section.
pub fn received_count(header: &[u8]) -> usize {
    fields(header)
        .filter(|f| f.name.eq_ignore_ascii_case(b"Received"))
        .count()
}

/// Why a message cannot be parsed (see the module doc for the rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// No empty line ends the header section.
    #[error("message requires both header and body section")]
    NoBody,
    /// A header line is neither a field nor a continuation (1-based line number).
    #[error("header line {0} is not a header field")]
    HeaderLine(usize),
    /// A multipart part without a boundary parameter.
    #[error("multipart part without boundary parameter")]
    NoBoundary,
    /// A multipart part whose body has no delimiter line for its boundary.
    #[error("multipart part without any part delimiter")]
    NoDelimiter,
}

fn is_field_line(line: &[u8]) -> bool {
    let Some(colon) = line.iter().position(|&c| c == b':') else {
        return false;
    };
    let name = &line[..colon];
    let end = name
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(0, |e| e + 1);
    end > 0 && name[..end].iter().all(|&c| (33..=126).contains(&c))
}

/// Checks that `msg` can be parsed as a message: the rules of the module doc.
pub fn check_structure(msg: &[u8]) -> Result<(), Malformed> {
    let body_at = body_offset(msg).ok_or(Malformed::NoBody)?;
    // The header lines without the CRLF of the last one and the empty line (a message
    // may start with the empty line: no header at all).
    let header = &msg[..body_at.saturating_sub(4)];
    if !header.is_empty() {
        for (i, line) in crlf_lines(header).enumerate() {
            let continuation = matches!(line.first(), Some(b' ') | Some(b'\t'));
            if (continuation && i == 0) || (!continuation && !is_field_line(line)) {
                return Err(Malformed::HeaderLine(i + 1));
            }
        }
    }
    // Only a multipart message has MIME structure to check; skip the full parse otherwise.
    let multipart = values(header_section(msg, body_at), "Content-Type")
        .any(|v| v.windows(9).any(|w| w.eq_ignore_ascii_case(b"multipart")));
    if !multipart {
        return Ok(());
    }
    let Some(parsed) = parse_mime(msg) else {
        // mail-parser finds no header at all: only a message that starts with the
        // separator, whose empty header is valid here. Or mail-parser panicked (see
        // `parse_mime`): the MIME structure cannot be checked, and real mail passes.
        return Ok(());
    };
    for part in &parsed.parts {
        use mail_parser::MimeHeaders;
        let Some(ct) = part.content_type() else {
            continue;
        };
        if !ct.ctype().eq_ignore_ascii_case("multipart") {
            continue;
        }
        let boundary = match ct.attribute("boundary") {
            Some(b) if !b.is_empty() => b,
            _ => return Err(Malformed::NoBoundary),
        };
        let start = (part.offset_body as usize).min(msg.len());
        let end = (part.offset_end as usize).clamp(start, msg.len());
        if !has_delimiter(&msg[start..end], boundary.as_bytes()) {
            return Err(Malformed::NoDelimiter);
        }
    }
    Ok(())
}

/// Runs mail-parser, turning a panic of it into `None`: mail-parser 0.11.9 panics
/// ("Invalid part ID, could not find multipart.") on some messages with `message/rfc822`
/// parts (found by the `message_structure` fuzz target; regression tests
/// `mail_parser_panic_*`), and a peer's message must never panic the server. The panic
/// hook still runs (a line on stderr); the caller sees a message that does not parse.
fn no_panic<T>(parse: impl FnOnce() -> Option<T> + std::panic::UnwindSafe) -> Option<T> {
    std::panic::catch_unwind(parse).ok().flatten()
}

/// The whole-message parse of [`first_part`] and [`check_structure`], panic-free.
pub(crate) fn parse_mime(msg: &[u8]) -> Option<mail_parser::Message<'_>> {
    no_panic(|| mail_parser::MessageParser::default().parse(msg))
}

/// The lines of `s`, split at CRLF only (a bare LF stays inside its line).
fn crlf_lines(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(2).position(|w| w == b"\r\n") {
            Some(p) => {
                rest = Some(&r[p + 2..]);
                Some(&r[..p])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// The header section including the CRLF of its last line (what [`fields`] takes).
fn header_section(msg: &[u8], body_at: usize) -> &[u8] {
    &msg[..body_at.saturating_sub(2)]
}

/// Whether `body` has a line starting with `--boundary`.
fn has_delimiter(body: &[u8], boundary: &[u8]) -> bool {
    let mut delim = Vec::with_capacity(boundary.len() + 2);
    delim.extend_from_slice(b"--");
    delim.extend_from_slice(boundary);
    body.split(|&c| c == b'\n').any(|l| l.starts_with(&delim))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first candidate part that parses wins; else the first candidate's error; no
    /// candidate is `None`.
    #[test]
    fn first_part_table() {
        let msg = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nskip\r\n--b\r\n\r\nbad 1\r\n--b\r\n\r\ngood 2\r\n--b\r\n\r\ngood 3\r\n--b--\r\n";
        let parse = |c: &[u8]| -> Option<Result<String, String>> {
            let t = String::from_utf8_lossy(c).trim().to_string();
            if t.starts_with("good") {
                Some(Ok(t))
            } else if t.starts_with("bad") {
                Some(Err(t))
            } else {
                None
            }
        };
        assert_eq!(first_part(msg, parse), Some(Ok("good 2".to_string())));
        let only_bad = b"Subject: x\r\n\r\nbad 1\r\n";
        assert_eq!(first_part(only_bad, parse), Some(Err("bad 1".to_string())));
        let none = b"Subject: x\r\n\r\nskip\r\n";
        assert_eq!(first_part(none, parse), None);
    }

    /// Every message of the shared corpora (converted to CRLF), with the verdict.
    fn corpus() -> Vec<(String, Result<(), Malformed>)> {
        let base = crate::dkim::test_vectors_dir();
        let mut files = Vec::new();
        for dir in [
            "mail-parser/resources/eml/rfc",
            "mail-parser/resources/eml/legacy",
            "mail-parser/resources/eml/thirdparty",
            "mail-parser/resources/eml/malformed",
        ] {
            for e in std::fs::read_dir(base.join(dir)).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|x| x == "eml") {
                    files.push(p);
                }
            }
        }
        for e in std::fs::read_dir(base.join("python-email-testdata")).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("msg_") && name.ends_with(".txt") {
                files.push(p);
            }
        }
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let raw = std::fs::read(&p).unwrap();
                let mut crlf = Vec::with_capacity(raw.len() + raw.len() / 20);
                for (i, &c) in raw.iter().enumerate() {
                    if c == b'\n' && (i == 0 || raw[i - 1] != b'\r') {
                        crlf.push(b'\r');
                    }
                    crlf.push(c);
                }
                let name = p.strip_prefix(&base).unwrap().display().to_string();
                (name, check_structure(&crlf))
            })
            .collect()
    }

    /// The shared corpora (mail-parser's and CPython's test messages, 158 files): every
    /// message is accepted except these, each broken by the rules of the module doc (and
    /// each reported as a defect by CPython's or Dovecot's tests).
    #[test]
    fn corpus_verdicts() {
        let refused: Vec<(String, Malformed)> = corpus()
            .into_iter()
            .filter_map(|(n, v)| v.err().map(|e| (n, e)))
            .collect();
        let want = [
            // `Content-Type: multipart/mixed; boundary="ab"` and no `--ab` line.
            (
                "mail-parser/resources/eml/malformed/002.eml",
                Malformed::NoDelimiter,
            ),
            // multipart/mixed whose body is plain text.
            ("python-email-testdata/msg_17.txt", Malformed::NoDelimiter),
            // Starts with a line of text, not a field.
            ("python-email-testdata/msg_19.txt", Malformed::HeaderLine(1)),
            // An mbox "From " separator line before the header.
            ("python-email-testdata/msg_25.txt", Malformed::HeaderLine(1)),
            // boundary=BOUNDARY_ but the parts are delimited by --BOUNDARY.
            ("python-email-testdata/msg_31.txt", Malformed::NoDelimiter),
            // No empty line after the header.
            ("python-email-testdata/msg_35.txt", Malformed::NoBody),
            // multipart/alternative without a boundary parameter.
            ("python-email-testdata/msg_41.txt", Malformed::NoBoundary),
            // An mbox "From " separator line before the header.
            ("python-email-testdata/msg_43.txt", Malformed::HeaderLine(1)),
        ];
        let want: Vec<(String, Malformed)> = want
            .iter()
            .map(|(n, e)| (n.to_string(), e.clone()))
            .collect();
        assert_eq!(refused, want);
    }

    #[test]
    fn structure_rules() {
        let ok: &[&[u8]] = &[
            b"\r\nbody only\r\n",
            b"Subject: x\r\n\r\n",
            b"Subject : obsolete space before colon\r\n\r\nb\r\n",
            b"Subject: x\r\n folded\r\n\tagain\r\n\r\nb\r\n",
            b"Subject: bare\nlf inside a line\r\n\r\nb\r\n",
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nunterminated\r\n",
            b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64\r\n",
        ];
        for m in ok {
            assert_eq!(check_structure(m), Ok(()), "{}", String::from_utf8_lossy(m));
        }
        let bad: &[(&[u8], Malformed)] = &[
            (b"Subject: x\r\nbody\r\n", Malformed::NoBody),
            (b" folded first\r\n\r\nb\r\n", Malformed::HeaderLine(1)),
            (
                b"Subject: x\r\nno colon here\r\n\r\nb\r\n",
                Malformed::HeaderLine(2),
            ),
            (b": empty name\r\n\r\nb\r\n", Malformed::HeaderLine(1)),
            (
                b"Sub ject: space in name\r\n\r\nb\r\n",
                Malformed::HeaderLine(1),
            ),
            (
                b"Content-Type: multipart/mixed\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
                Malformed::NoBoundary,
            ),
            (
                b"Content-Type: multipart/mixed; boundary=b\r\n\r\njust text\r\n",
                Malformed::NoDelimiter,
            ),
        ];
        for (m, e) in bad {
            assert_eq!(
                check_structure(m).as_ref(),
                Err(e),
                "{}",
                String::from_utf8_lossy(m)
            );
        }
        assert_eq!(
            received_count(b"Received: a\r\nreceived: b\r\n c\r\nX: y\r\n"),
            2
        );
    }

    /// What the field readers answered before they parsed only the fields they read: the
    /// whole header through mail-parser.
    fn whole_parse(header: &[u8]) -> (Vec<String>, Vec<String>, Option<String>) {
        let Some(p) = no_panic(|| mail_parser::MessageParser::new().parse_headers(header)) else {
            return (Vec::new(), Vec::new(), None);
        };
        let list = |v: &mail_parser::HeaderValue<'_>| -> Vec<String> {
            match v {
                mail_parser::HeaderValue::Address(l) => l
                    .iter()
                    .filter_map(|a| a.address().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            }
        };
        let from = p.from().map(|f| {
            f.iter()
                .filter_map(|a| a.address().map(str::to_string))
                .collect()
        });
        let to = p.header_values("to").flat_map(list).collect();
        let id = p
            .message_id()
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .map(str::to_string);
        (from.unwrap_or_default(), to, id)
    }

    fn field_reads(header: &[u8]) -> (Vec<String>, Vec<String>, Option<String>) {
        (
            from_addresses(header),
            addresses(header, "to"),
            message_id(header),
        )
    }

    /// The fields read alone give the whole header's answers: with Received chains, folded
    /// and repeated fields, odd names, a malformed line (then the whole header is parsed),
    /// no such field and no header at all.
    #[test]
    fn fields_read_alone_as_in_the_whole_header() {
        let cases: &[&[u8]] = &[
            b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\nReceived: from c\r\n by d\r\nFrom: \"A\" <a@x.example>\r\nTo: b@y.example, c@z.example\r\nMessage-ID: <m1@x.example>\r\n",
            b"from: a@x.example\r\nFROM: b@x.example\r\nmessage-id:\r\n <m2@x>\r\n",
            b"From : spaced@x.example\r\nTo:\r\n  g: one@x.example, two@x.example;\r\n",
            b"Subject: no from\r\n",
            b"not a field\r\nFrom: after@x.example\r\n",
            b" leading continuation\r\nFrom: a@x.example\r\n",
            b"From: a@x.example\r\n\r\nFrom: body@x.example\r\n",
            b"",
            b"From: <unterminated@x.example\r\n",
            b"To: a@x.example\r\nFrom: \xff\xfe@x.example\r\n",
        ];
        for h in cases {
            assert_eq!(
                field_reads(h),
                whole_parse(h),
                "{}",
                String::from_utf8_lossy(h)
            );
        }
        assert_eq!(from_addresses(cases[0]), vec!["a@x.example".to_string()]);
        assert_eq!(message_id(cases[1]).as_deref(), Some("m2@x"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Arbitrary headers of Received, From, To, Message-ID and other fields (folded,
        /// odd bytes, now and then a line that is no field): the same answers as the whole
        /// header's parse.
        #[test]
        fn fields_read_alone_match_the_whole_parse(
            lines in proptest::collection::vec(
                (0usize..7, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), proptest::prelude::any::<bool>()),
                0..12,
            )
        ) {
            let names = ["Received", "From", "To", "Message-ID", "Subject", "from", "X-Odd"];
            let mut h = Vec::new();
            for (n, value, fold) in &lines {
                let value: Vec<u8> = value.iter().map(|&c| if c == b'\r' || c == b'\n' { b' ' } else { c }).collect();
                if *n == 6 && *fold {
                    // A line that is not a field.
                    h.extend_from_slice(b"no colon here");
                } else {
                    h.extend_from_slice(names[*n].as_bytes());
                    h.extend_from_slice(b": ");
                }
                let cut = value.len() / 2;
                h.extend_from_slice(&value[..cut]);
                if *fold {
                    h.extend_from_slice(b"\r\n ");
                }
                h.extend_from_slice(&value[cut..]);
                h.extend_from_slice(b"\r\n");
            }
            proptest::prop_assert_eq!(field_reads(&h), whole_parse(&h));
        }
    }

    #[test]
    fn body_offsets() {
        assert_eq!(body_offset(b"A: b\r\n\r\nbody"), Some(8));
        assert_eq!(body_offset(b"\r\nbody"), Some(2));
        assert_eq!(body_offset(b"A: b\r\nbody\r\n"), None);
    }

    #[test]
    fn field_iteration_with_folding() {
        let h = b"From: <a@b>\r\nSubject: x\r\n  y\r\nTLS-Required: No\r\n";
        let f: Vec<_> = fields(h).collect();
        assert_eq!(f.len(), 3);
        assert_eq!(f[1].name, b"Subject");
        assert_eq!(f[1].value, b" x\r\n  y");
        assert_eq!(
            values(h, "tls-required").collect::<Vec<_>>(),
            vec![b"No".as_slice()]
        );
        assert!(has_field(h, "FROM"));
        assert!(!has_field(h, "Date"));
    }

    #[test]
    fn from_address() {
        let h = b"From: \"Mjl\" <mjl@mox.example>\r\nTo: x@y\r\n\r\n";
        assert_eq!(from_addresses(h), vec!["mjl@mox.example".to_string()]);
        assert!(from_addresses(b"Subject: x\r\n\r\n").is_empty());
    }

    /// The Message-ID was read by hand (the field's value with `<` and `>` trimmed), so a
    /// comment after it became part of the id (`a@b> (sent by x`) and the reputation index
    /// had a key no other message matches.
    #[test]
    fn message_id_through_mail_parser() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"Message-Id: <a@b.example>\r\n\r\n", Some("a@b.example")),
            (
                b"Message-ID: <a@b.example> (sent by x)\r\n\r\n",
                Some("a@b.example"),
            ),
            (
                b"Message-ID:\r\n <a@b.example>\r\n\r\n",
                Some("a@b.example"),
            ),
            (
                b"message-id:   <a@b.example>  \r\nSubject: x\r\n\r\n",
                Some("a@b.example"),
            ),
            (
                b"Message-Id: bare@b.example\r\n\r\n",
                Some("bare@b.example"),
            ),
            (b"Subject: x\r\n\r\n", None),
            (b"Message-Id: \r\n\r\n", None),
        ];
        for (header, want) in cases {
            assert_eq!(
                message_id(header).as_deref(),
                *want,
                "{}",
                String::from_utf8_lossy(header)
            );
        }
    }

    /// The message the `message_structure` fuzz target found (minimized): a `message/rfc822`
    /// part whose header ends with a bare LF and holds another `message/rfc822`.
    const MAIL_PARSER_PANIC: &[u8] = b"8ach\0\nContent-Type: multipart/mxed; boundary=\"BOUND\"\r\n\r\n--BOUND\r\nContent-Type: message/rfc822\r\n\nContent-Type: message/rfc822\r\n64\r\n\r\n\r\n--BOUND--UN";

    /// The same body behind a valid header, so that `check_structure` gets to the parse.
    const MAIL_PARSER_PANIC_VALID_HEADER: &[u8] = b"X: y\r\nContent-Type: multipart/mxed; boundary=\"BOUND\"\r\n\r\n--BOUND\r\nContent-Type: message/rfc822\r\n\nContent-Type: message/rfc822\r\n64\r\n\r\n\r\n--BOUND--UN";

    /// mail-parser 0.11.9 panicked ("Invalid part ID, could not find multipart.") inside
    /// `check_structure`, which runs on every message after DATA: any SMTP peer could
    /// panic the server session. The panic is now caught and the message passes (its MIME
    /// structure cannot be checked).
    #[test]
    fn mail_parser_panic_check_structure() {
        assert_eq!(check_structure(MAIL_PARSER_PANIC_VALID_HEADER), Ok(()));
        assert_eq!(
            check_structure(MAIL_PARSER_PANIC),
            Err(Malformed::HeaderLine(1))
        );
    }

    /// The same mail-parser panic inside `first_part`, which the DMARC and TLS report
    /// readers run on incoming report messages: now "does not parse" (`None`).
    #[test]
    fn mail_parser_panic_first_part() {
        for m in [MAIL_PARSER_PANIC, MAIL_PARSER_PANIC_VALID_HEADER] {
            assert!(first_part(m, |p| Some(Ok::<usize, ()>(p.len()))).is_none());
        }
    }
}
