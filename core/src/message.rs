//! Small, fast views of a message's header section, for the checks the SMTP server makes
//! on every message (separation of header and body, From, Return-Path, Message-Id, Date,
//! TLS-Required). Whole-message parsing uses `mail-parser`.

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
    let Some(parsed) = mail_parser::MessageParser::new().parse_headers(header) else {
        return out;
    };
    if let Some(from) = parsed.from() {
        for a in from.iter() {
            if let Some(addr) = a.address() {
                out.push(addr.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
