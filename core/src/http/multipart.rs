//! multipart/form-data request bodies (RFC 7578) read into their parts, without copying: a
//! part's data is a slice of the body. The webapi takes such bodies as mox does: a field
//! `request` with the JSON request and, for Send, file fields `alternativefile`,
//! `inlinefile` and `attachedfile`.
//!
//! What is read (RFC 2046 5.1 with RFC 7578's rules):
//!
//! * The request's Content-Type is `multipart/form-data` with a `boundary` parameter, quoted
//!   or not, of 1 to 70 of RFC 2046's `bchars` (see [`boundary`]).
//! * The first delimiter line starts the body or follows a line end; the preamble before it
//!   and the epilogue after the close delimiter are ignored.
//! * A delimiter is a line end, `--` and the boundary, optional transport padding (spaces,
//!   tabs) and a line end; `--boundary--` is the close delimiter. A line that starts with
//!   `--boundary` followed by anything else is data, as in Go's `mime/multipart` (mox's
//!   reader). A body that ends before the close delimiter is refused as truncated.
//! * Line ends: CRLF, as the RFCs say, and also bare LF, which some hand-written scripts
//!   send. The line end of the first delimiter line decides for the whole body: after CRLF
//!   every delimiter is CRLF `--boundary`, after a bare LF it is LF `--boundary` (a part's
//!   data then ends before that LF, a CR before it stays data). Header lines of a part may
//!   end with CRLF or bare LF in either case.
//! * A part's header fields end with an empty line. A part may also end right after its
//!   header fields (RFC 2046's body-part without a body); its data is then empty. Header
//!   names are case-insensitive, folded lines are unfolded, bytes that are not UTF-8 become
//!   U+FFFD, unknown fields are ignored, and `Content-Disposition`, `Content-Type`,
//!   `Content-ID` and `Content-Transfer-Encoding` may appear once each.
//! * `Content-Disposition` must be `form-data` with a `name`. Parameter values are tokens
//!   or quoted strings. In a quoted string a backslash escapes a following `"`, `\` or other
//!   tspecial (RFC 2045) and is kept before any other character: browsers and urllib3 do not
//!   escape backslashes, and Windows paths are full of them. Browsers write `"`, CR and LF
//!   in names and file names as `%22`, `%0D` and `%0A` (the HTML form encoding) and other
//!   characters as raw UTF-8; both are decoded. A name that really contains the text `%22`
//!   cannot be told apart (browsers do not escape `%`).
//! * `filename*=UTF-8''...` (RFC 8187, ISO-8859-1 too) is decoded and preferred over
//!   `filename`. Only the last path component of a file name is kept (after the last `/` or
//!   `\`). Nothing else is removed: a caller that writes the name somewhere checks it there.
//! * A `Content-Transfer-Encoding` other than 7bit, 8bit or binary is refused (RFC 7578 4.7
//!   deprecates it; data is never decoded here).
//!
//! Time is linear in the body size: delimiters are found with `memchr`'s memmem (a match
//! cannot overlap the next, as the delimiter starts with a line end that no boundary
//! contains), and a part's header section is scanned at most up to
//! [`FormLimits::max_part_header_bytes`]. No input panics.

use memchr::memmem;

#[cfg(test)]
mod tests;

/// One part (form field or file) of a multipart/form-data body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormPart<'a> {
    /// The field name, from `Content-Disposition: form-data; name="..."`.
    pub name: String,
    /// The file name, from `filename*` (preferred) or `filename`, without any directory the
    /// client put in it. Empty if the client sent `filename=""` (browsers do for a file input
    /// with no file chosen). `None` for a plain field.
    pub filename: Option<String>,
    /// The part's `Content-Type` value as sent (parameters included), if present and not
    /// empty. RFC 7578 4.4: absent means text/plain for a field; clients send
    /// application/octet-stream or nothing for a file of unknown type.
    pub content_type: Option<String>,
    /// The part's `Content-ID` value as sent (angle brackets included), if present and not
    /// empty.
    pub content_id: Option<String>,
    /// The part's data: any bytes, borrowed from the request body.
    pub data: &'a [u8],
}

/// Limits on what a body can make the reader do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FormLimits {
    /// The most parts in a body ([`FormError::TooManyParts`] beyond).
    pub max_parts: usize,
    /// The largest header section of one part in bytes, from just after its delimiter line
    /// through the empty line that ends it ([`FormError::HeaderTooLarge`] beyond).
    pub max_part_header_bytes: usize,
}

impl Default for FormLimits {
    /// 256 parts, 8 KiB of header section per part.
    fn default() -> Self {
        FormLimits {
            max_parts: 256,
            max_part_header_bytes: 8 * 1024,
        }
    }
}

/// Why a multipart/form-data body could not be read. All are the client's fault; the
/// messages are meant for the developer of that client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormError {
    /// The request's media type is not multipart/form-data (the media type sent).
    #[error("multipart/form-data: the request's Content-Type is {0:?}, not multipart/form-data")]
    NotFormData(String),
    /// The request's Content-Type has no `boundary` parameter.
    #[error("multipart/form-data: the request's Content-Type has no boundary parameter")]
    NoBoundary,
    /// The `boundary` parameter breaks RFC 2046's rules (what is wrong with it).
    #[error(
        "multipart/form-data: bad boundary parameter: {0} (RFC 2046: 1 to 70 letters, digits, \
         spaces and '()+_,-./:=? characters, not ending in a space)"
    )]
    BadBoundary(&'static str),
    /// The body or a part's header section breaks the syntax (what, and in which part,
    /// counted from 1).
    #[error("multipart/form-data: {0}")]
    Malformed(String),
    /// The body has more parts than [`FormLimits::max_parts`] (the limit).
    #[error("multipart/form-data: more than {0} parts")]
    TooManyParts(usize),
    /// A part's header section is larger than [`FormLimits::max_part_header_bytes`].
    #[error("multipart/form-data: the header section of part {part} is larger than {limit} bytes")]
    HeaderTooLarge {
        /// The part, counted from 1.
        part: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A part has a `Content-Transfer-Encoding` other than 7bit, 8bit or binary.
    #[error(
        "multipart/form-data: part {part} has Content-Transfer-Encoding {encoding:?}: send the \
         data as it is, without a transfer encoding (RFC 7578 4.7)"
    )]
    UnsupportedTransferEncoding {
        /// The part, counted from 1.
        part: usize,
        /// The encoding as sent.
        encoding: String,
    },
}

/// The boundary of a multipart/form-data body, from the request's Content-Type value
/// (`multipart/form-data; boundary=...`, media type and parameter names case-insensitive,
/// the value quoted or not). Errors: another media type, no boundary, a boundary given
/// twice or that breaks RFC 2046 (1 to 70 `bchars`, not ending in a space), or a parameter
/// list that does not parse.
pub fn boundary(content_type: &str) -> Result<String, FormError> {
    let (media, params) = content_type.split_once(';').unwrap_or((content_type, ""));
    let media = trim_ws(media);
    if !media.eq_ignore_ascii_case("multipart/form-data") {
        return Err(FormError::NotFormData(media.to_string()));
    }
    let params = parse_params(params)
        .map_err(|e| FormError::Malformed(format!("the request's Content-Type: {e}")))?;
    let mut found = None;
    for (key, value) in params {
        if key == "boundary" && found.replace(value).is_some() {
            return Err(FormError::BadBoundary("it is given twice"));
        }
    }
    let b = found.ok_or(FormError::NoBoundary)?;
    if b.is_empty() {
        return Err(FormError::BadBoundary("it is empty"));
    }
    if b.len() > 70 {
        return Err(FormError::BadBoundary("it is longer than 70 characters"));
    }
    if !b.bytes().all(is_bchar) {
        return Err(FormError::BadBoundary(
            "it has a character outside that set",
        ));
    }
    if b.ends_with(' ') {
        return Err(FormError::BadBoundary("it ends with a space"));
    }
    Ok(b)
}

/// The parts of a multipart/form-data body, in order, with the boundary from the request's
/// `content_type` (see [`boundary`]). The rules are in the module docs. A body with only a
/// close delimiter has no parts.
pub fn parse_form_data<'a>(
    content_type: &str,
    body: &'a [u8],
    limits: &FormLimits,
) -> Result<Vec<FormPart<'a>>, FormError> {
    let boundary = boundary(content_type)?;
    let dash = format!("--{boundary}");
    let truncated = || {
        FormError::Malformed(format!(
            "truncated: the body ends before the close delimiter \"{dash}--\""
        ))
    };
    let (mut start, bare_lf) = match first_delimiter(body, dash.as_bytes()) {
        Some((after, Delimiter::Open { len, bare_lf })) => (after + len, bare_lf),
        Some((_, Delimiter::Close)) => return Ok(Vec::new()),
        Some((_, Delimiter::Truncated | Delimiter::Data)) => return Err(truncated()),
        None => {
            return Err(FormError::Malformed(format!(
                "no delimiter line \"{dash}\" in the body (is the boundary parameter the one \
                 the body uses?)"
            )))
        }
    };
    let mut needle = Vec::with_capacity(dash.len() + 2);
    if !bare_lf {
        needle.push(b'\r');
    }
    needle.push(b'\n');
    needle.extend_from_slice(dash.as_bytes());
    let finder = memmem::Finder::new(&needle);
    let mut parts = Vec::new();
    loop {
        if parts.len() >= limits.max_parts {
            return Err(FormError::TooManyParts(limits.max_parts));
        }
        // The end of this part: the next delimiter, lines that only look like one skipped.
        let mut from = start;
        let (end, next) = loop {
            let Some(i) = finder.find(&body[from..]) else {
                return Err(truncated());
            };
            let at = from + i;
            let after = at + needle.len();
            match classify(&body[after..]) {
                Delimiter::Open { len, .. } => break (at, Some(after + len)),
                Delimiter::Close => break (at, None),
                Delimiter::Truncated => return Err(truncated()),
                Delimiter::Data => from = after,
            }
        };
        let part = read_part(&body[start..end], parts.len() + 1, limits)?;
        parts.push(part);
        match next {
            Some(next) => start = next,
            None => return Ok(parts),
        }
    }
}

/// What follows `--boundary` where a delimiter may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Delimiter {
    /// A delimiter line: `len` bytes of padding and line end follow; `bare_lf` if the line
    /// end is LF alone.
    Open { len: usize, bare_lf: bool },
    /// The close delimiter `--boundary--`.
    Close,
    /// The body ends inside what can only be a delimiter line.
    Truncated,
    /// Data that starts like a delimiter.
    Data,
}

/// Classifies the bytes after `--boundary`.
fn classify(rest: &[u8]) -> Delimiter {
    if rest.starts_with(b"--") {
        return Delimiter::Close;
    }
    let pad = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    match &rest[pad..] {
        [b'\r', b'\n', ..] => Delimiter::Open {
            len: pad + 2,
            bare_lf: false,
        },
        [b'\n', ..] => Delimiter::Open {
            len: pad + 1,
            bare_lf: true,
        },
        [] | [b'\r'] => Delimiter::Truncated,
        [b'-'] if pad == 0 => Delimiter::Truncated,
        _ => Delimiter::Data,
    }
}

/// The first delimiter line: its position just after `--boundary`, and what follows. It
/// starts the body or follows an LF (of CRLF or alone) in the preamble.
fn first_delimiter(body: &[u8], dash: &[u8]) -> Option<(usize, Delimiter)> {
    if body.starts_with(dash) {
        match classify(&body[dash.len()..]) {
            Delimiter::Data => {}
            d => return Some((dash.len(), d)),
        }
    }
    let mut needle = Vec::with_capacity(dash.len() + 1);
    needle.push(b'\n');
    needle.extend_from_slice(dash);
    memmem::find_iter(body, &needle)
        .map(|at| at + needle.len())
        .map(|after| (after, classify(&body[after..])))
        .find(|(_, d)| *d != Delimiter::Data)
}

/// One part: `region` is everything between its delimiter line and the line end that starts
/// the next delimiter; `n` its position, counted from 1.
fn read_part<'a>(
    region: &'a [u8],
    n: usize,
    limits: &FormLimits,
) -> Result<FormPart<'a>, FormError> {
    // Header fields as (name, raw value), folded lines joined.
    let mut fields: Vec<(String, String)> = Vec::new();
    let window_end = region.len().min(limits.max_part_header_bytes);
    let mut pos = 0;
    let data_start = loop {
        if pos == region.len() {
            // Header fields directly followed by the delimiter: no body.
            break pos;
        }
        let window = region.get(pos..window_end).unwrap_or(&[]);
        let Some(i) = memchr::memchr(b'\n', window) else {
            if window_end < region.len() {
                return Err(FormError::HeaderTooLarge {
                    part: n,
                    limit: limits.max_part_header_bytes,
                });
            }
            return Err(FormError::Malformed(format!(
                "part {n}: the header section does not end with an empty line"
            )));
        };
        let mut line = &region[pos..pos + i];
        if let [rest @ .., b'\r'] = line {
            line = rest;
        }
        pos += i + 1;
        match line {
            [] => break pos,
            [b' ' | b'\t', ..] => match fields.last_mut() {
                Some((_, value)) => value.push_str(&String::from_utf8_lossy(line)),
                None => {
                    return Err(FormError::Malformed(format!(
                        "part {n}: the header section starts with a continuation line"
                    )))
                }
            },
            _ => {
                let Some(colon) = memchr::memchr(b':', line) else {
                    return Err(FormError::Malformed(format!(
                        "part {n}: header line {:?} has no colon",
                        String::from_utf8_lossy(line)
                    )));
                };
                let name = String::from_utf8_lossy(&line[..colon]);
                let name = trim_ws(&name);
                if name.is_empty() {
                    return Err(FormError::Malformed(format!(
                        "part {n}: a header line has no field name"
                    )));
                }
                let value = String::from_utf8_lossy(&line[colon + 1..]).into_owned();
                fields.push((name.to_string(), value));
            }
        }
    };

    let mut disposition = None;
    let mut content_type = None;
    let mut content_id = None;
    let mut encoding = None;
    for (name, value) in fields {
        let slot = match name.to_ascii_lowercase().as_str() {
            "content-disposition" => &mut disposition,
            "content-type" => &mut content_type,
            "content-id" => &mut content_id,
            "content-transfer-encoding" => &mut encoding,
            _ => continue,
        };
        if slot.replace(trim_ws(&value).to_string()).is_some() {
            return Err(FormError::Malformed(format!(
                "part {n}: header field {name} appears twice"
            )));
        }
    }
    if let Some(encoding) = encoding {
        if !["7bit", "8bit", "binary"]
            .iter()
            .any(|e| encoding.eq_ignore_ascii_case(e))
        {
            return Err(FormError::UnsupportedTransferEncoding { part: n, encoding });
        }
    }
    let Some(disposition) = disposition else {
        return Err(FormError::Malformed(format!(
            "part {n} has no Content-Disposition header field (form-data; name=\"...\")"
        )));
    };
    let (name, filename) = parse_disposition(&disposition)
        .map_err(|e| FormError::Malformed(format!("part {n}: Content-Disposition: {e}")))?;
    Ok(FormPart {
        name,
        filename,
        content_type: content_type.filter(|v| !v.is_empty()),
        content_id: content_id.filter(|v| !v.is_empty()),
        data: &region[data_start..],
    })
}

/// The name and file name of a `Content-Disposition: form-data` value.
fn parse_disposition(value: &str) -> Result<(String, Option<String>), String> {
    let (kind, params) = value.split_once(';').unwrap_or((value, ""));
    let kind = trim_ws(kind);
    if !kind.eq_ignore_ascii_case("form-data") {
        return Err(format!("the disposition is {kind:?}, not form-data"));
    }
    let mut name = None;
    let mut filename = None;
    let mut filename_ext = None;
    for (key, value) in parse_params(params)? {
        let slot = match key.as_str() {
            "name" => &mut name,
            "filename" => &mut filename,
            "filename*" => &mut filename_ext,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(format!("parameter {key} appears twice"));
        }
    }
    let Some(name) = name else {
        return Err("no name parameter (form-data; name=\"...\")".to_string());
    };
    let filename = match filename_ext {
        Some(ext) => Some(decode_ext_value(&ext)?),
        None => filename.map(|f| decode_form_escapes(&f)),
    };
    Ok((
        decode_form_escapes(&name),
        filename.map(|f| last_path_component(&f).to_string()),
    ))
}

/// The parameters after a media type or disposition type (the text after its first `;`):
/// `key=value` pairs separated by `;`, keys lowercased, values unquoted. Empty parameters
/// (`;;`, a trailing `;`) are skipped.
fn parse_params(s: &str) -> Result<Vec<(String, String)>, String> {
    let b = s.as_bytes();
    let skip_ws = |mut i: usize| {
        while matches!(b.get(i), Some(b' ' | b'\t')) {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        i = skip_ws(i);
        match b.get(i) {
            None => return Ok(out),
            Some(b';') => {
                i += 1;
                continue;
            }
            Some(_) => {}
        }
        let key_start = i;
        while b.get(i).is_some_and(|&c| is_token_byte(c)) {
            i += 1;
        }
        if i == key_start {
            return Err(format!(
                "expected a parameter name at {:?}",
                s.get(i..).unwrap_or("")
            ));
        }
        let key = s[key_start..i].to_ascii_lowercase();
        i = skip_ws(i);
        if b.get(i) != Some(&b'=') {
            return Err(format!("parameter {key} has no value"));
        }
        i = skip_ws(i + 1);
        let value = if b.get(i) == Some(&b'"') {
            i += 1;
            let mut v = Vec::new();
            loop {
                match b.get(i) {
                    None => return Err(format!("parameter {key}: unterminated quoted string")),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    // A backslash escapes a tspecial only: others are literal (see the
                    // module docs).
                    Some(b'\\') if b.get(i + 1).is_some_and(|&c| is_tspecial(c)) => {
                        v.push(b[i + 1]);
                        i += 2;
                    }
                    Some(&c) => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            i = skip_ws(i);
            if !matches!(b.get(i), None | Some(b';')) {
                return Err(format!(
                    "parameter {key}: text after the closing quote (a missing \";\"?)"
                ));
            }
            // Only ASCII backslashes were dropped from valid UTF-8: still valid.
            String::from_utf8_lossy(&v).into_owned()
        } else {
            let value_start = i;
            while !matches!(b.get(i), None | Some(b';')) {
                i += 1;
            }
            let v = trim_ws(&s[value_start..i]);
            if v.is_empty() {
                return Err(format!("parameter {key} has no value"));
            }
            v.to_string()
        };
        out.push((key, value));
    }
}

/// A name or file name with the HTML form encoding's `%22`, `%0D` and `%0A` decoded (hex
/// digits in either case); any other `%` is kept.
fn decode_form_escapes(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = match b.get(i..i + 3) {
            Some([b'%', b'2', b'2']) => Some(b'"'),
            Some([b'%', b'0', b'D' | b'd']) => Some(b'\r'),
            Some([b'%', b'0', b'A' | b'a']) => Some(b'\n'),
            _ => None,
        };
        match decoded {
            Some(c) => {
                out.push(c);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    // ASCII replaced ASCII in valid UTF-8: still valid.
    String::from_utf8_lossy(&out).into_owned()
}

/// An RFC 8187 ext-value (`charset'language'percent-encoded`), UTF-8 or ISO-8859-1.
fn decode_ext_value(v: &str) -> Result<String, String> {
    let mut fields = v.splitn(3, '\'');
    let (Some(charset), Some(_language), Some(text)) =
        (fields.next(), fields.next(), fields.next())
    else {
        return Err("filename* is not charset'language'value (RFC 8187)".to_string());
    };
    let mut bytes = Vec::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = match b.get(i + 1..i + 3) {
                Some(&[hi, lo]) => hex_digit(hi).zip(hex_digit(lo)),
                _ => None,
            };
            let Some((hi, lo)) = hex else {
                return Err("filename*: a % not followed by two hex digits".to_string());
            };
            bytes.push(hi << 4 | lo);
            i += 3;
        } else {
            bytes.push(b[i]);
            i += 1;
        }
    }
    if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8(bytes).map_err(|_| "filename*: the decoded name is not UTF-8".to_string())
    } else if charset.eq_ignore_ascii_case("iso-8859-1") {
        Ok(bytes.into_iter().map(char::from).collect())
    } else {
        Err(format!(
            "filename*: unsupported charset {charset:?} (use UTF-8)"
        ))
    }
}

/// The value of a hex digit.
fn hex_digit(c: u8) -> Option<u8> {
    char::from(c)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// The text after the last `/` or `\`.
fn last_path_component(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

/// `s` without leading and trailing spaces and tabs.
fn trim_ws(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// RFC 2046 `bchars`: digits, letters, `'()+_,-./:=?` and space.
fn is_bchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c)
}

/// RFC 2045 `tspecials`.
fn is_tspecial(c: u8) -> bool {
    b"()<>@,;:\\\"/[]?=".contains(&c)
}

/// RFC 2045 `token` characters: ASCII graphic characters other than tspecials.
fn is_token_byte(c: u8) -> bool {
    c.is_ascii_graphic() && !is_tspecial(c)
}
