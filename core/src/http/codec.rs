//! HTTP/1.1 messages (RFC 9112): request and response heads parsed with `httparse`, body
//! framing (Content-Length, chunked, until close) with a streaming decoder, and encoders.
//!
//! Every limit is a field of [`Limits`]; a peer that exceeds one gets a typed
//! [`HttpError`], never a panic. Parsing is strict where laxness allows request smuggling:
//! both `Transfer-Encoding` and `Content-Length`, several differing `Content-Length`s, a
//! transfer coding other than `chunked`, and chunk lines not ended by CRLF are errors.

/// Size limits of the codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest head (start line and header fields, final empty line included), and the
    /// largest trailer section of a chunked body.
    pub max_head: usize,
    /// The most header fields in a head.
    pub max_headers: usize,
    /// The largest body (decoded, without chunk framing).
    pub max_body: usize,
}

impl Default for Limits {
    /// 16 KiB heads, 64 header fields, 1 MiB bodies.
    fn default() -> Self {
        Limits {
            max_head: 16 * 1024,
            max_headers: 64,
            max_body: 1024 * 1024,
        }
    }
}

/// The longest chunk-size line (size, extensions and CRLF).
const MAX_CHUNK_LINE: usize = 1024;

/// Why a message could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The head is not valid HTTP/1.x (the parser's reason).
    #[error("http: malformed head: {0}")]
    Malformed(String),
    /// The head is larger than [`Limits::max_head`].
    #[error("http: head larger than {0} bytes")]
    HeadTooLarge(usize),
    /// The head has more than [`Limits::max_headers`] fields.
    #[error("http: more than {0} header fields")]
    TooManyHeaders(usize),
    /// A `Content-Length` that is not a number, or several that differ.
    #[error("http: bad content-length")]
    BadContentLength,
    /// Both `Transfer-Encoding` and `Content-Length` (a smuggling vector, RFC 9112 6.1).
    #[error("http: both transfer-encoding and content-length")]
    AmbiguousLength,
    /// A transfer coding other than `chunked` alone.
    #[error("http: unsupported transfer-encoding {0:?}")]
    UnsupportedTransferEncoding(String),
    /// The body is larger than [`Limits::max_body`].
    #[error("http: body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// The chunked framing is broken.
    #[error("http: bad chunk: {0}")]
    BadChunk(&'static str),
    /// The connection ended inside a message.
    #[error("http: connection closed inside a message")]
    UnexpectedEof,
}

/// One header field. The value keeps its bytes (obs-text is allowed by RFC 9110).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The field name as sent.
    pub name: String,
    /// The field value, surrounding whitespace removed.
    pub value: Vec<u8>,
}

impl Header {
    /// A header field from text.
    pub fn new(name: &str, value: &str) -> Header {
        Header {
            name: name.to_string(),
            value: value.as_bytes().to_vec(),
        }
    }
}

/// The first value of header `name` (case-insensitive) if it is UTF-8.
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(&h.value).ok())
}

/// A request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, e.g. `GET`.
    pub method: String,
    /// The request target, e.g. `/.well-known/mta-sts.txt`.
    pub target: String,
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor: u8,
    /// The header fields in order.
    pub headers: Vec<Header>,
}

impl RequestHead {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Whether the connection stays open after this request (RFC 9112 9.3).
    pub fn is_keep_alive(&self) -> bool {
        keep_alive(self.minor, &self.headers)
    }
}

/// A response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// The minor version: 1 for HTTP/1.1, 0 for HTTP/1.0.
    pub minor: u8,
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The header fields in order.
    pub headers: Vec<Header>,
}

impl ResponseHead {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

fn keep_alive(minor: u8, headers: &[Header]) -> bool {
    let mut close = false;
    let mut keep = false;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
    {
        for opt in h.value.split(|&b| b == b',') {
            let opt = opt.trim_ascii();
            close |= opt.eq_ignore_ascii_case(b"close");
            keep |= opt.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    !close && (minor >= 1 || keep)
}

fn owned_headers(parsed: &[httparse::Header<'_>]) -> Vec<Header> {
    parsed
        .iter()
        .map(|h| Header {
            name: h.name.to_string(),
            value: h.value.trim_ascii().to_vec(),
        })
        .collect()
}

fn head_error(e: httparse::Error, limits: &Limits) -> HttpError {
    match e {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders(limits.max_headers),
        e => HttpError::Malformed(e.to_string()),
    }
}

/// Parses a request head at the start of `buf`: `Ok(None)` when more bytes are needed,
/// else the head and the number of bytes it took. Empty lines before the request line are
/// skipped (RFC 9112 2.2).
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > limits.max_head => {
            Err(HttpError::HeadTooLarge(limits.max_head))
        }
        Ok(httparse::Status::Complete(n)) => Ok(Some((
            RequestHead {
                method: req.method.unwrap_or_default().to_string(),
                target: req.path.unwrap_or_default().to_string(),
                minor: req.version.unwrap_or_default(),
                headers: owned_headers(req.headers),
            },
            n,
        ))),
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => {
            Err(HttpError::HeadTooLarge(limits.max_head))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(head_error(e, limits)),
    }
}

/// Parses a response head at the start of `buf`, as [`parse_request`].
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let mut headers = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > limits.max_head => {
            Err(HttpError::HeadTooLarge(limits.max_head))
        }
        Ok(httparse::Status::Complete(n)) => Ok(Some((
            ResponseHead {
                minor: resp.version.unwrap_or_default(),
                status: resp.code.unwrap_or_default(),
                reason: resp.reason.unwrap_or_default().to_string(),
                headers: owned_headers(resp.headers),
            },
            n,
        ))),
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head => {
            Err(HttpError::HeadTooLarge(limits.max_head))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(head_error(e, limits)),
    }
}

/// How a message's body is delimited (RFC 9112 6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// The framing given by the headers: `None` when neither Transfer-Encoding nor
/// Content-Length is present.
fn framing_from_headers(headers: &[Header]) -> Result<Option<Framing>, HttpError> {
    let mut te: Option<Vec<u8>> = None;
    let mut cl: Option<u64> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let t = te.get_or_insert_with(Vec::new);
            if !t.is_empty() {
                t.push(b',');
            }
            t.extend_from_slice(&h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // A list of identical values is allowed (RFC 9110 8.6); anything else is not.
            for v in h.value.split(|&b| b == b',') {
                let v = v.trim_ascii();
                if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                    return Err(HttpError::BadContentLength);
                }
                let n: u64 = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or(HttpError::BadContentLength)?;
                if cl.is_some_and(|c| c != n) {
                    return Err(HttpError::BadContentLength);
                }
                cl = Some(n);
            }
        }
    }
    match (te, cl) {
        (Some(_), Some(_)) => Err(HttpError::AmbiguousLength),
        (Some(t), None) => {
            let codings: Vec<&[u8]> = t
                .split(|&b| b == b',')
                .map(<[u8]>::trim_ascii)
                .filter(|c| !c.is_empty())
                .collect();
            if codings.len() == 1 && codings[0].eq_ignore_ascii_case(b"chunked") {
                Ok(Some(Framing::Chunked))
            } else {
                Err(HttpError::UnsupportedTransferEncoding(
                    String::from_utf8_lossy(&t).into_owned(),
                ))
            }
        }
        (None, Some(n)) => Ok(Some(Framing::Length(n))),
        (None, None) => Ok(None),
    }
}

impl RequestHead {
    /// The body framing of this request: no framing header means no body.
    pub fn framing(&self) -> Result<Framing, HttpError> {
        Ok(match framing_from_headers(&self.headers)? {
            Some(Framing::Length(0)) | None => Framing::Empty,
            Some(f) => f,
        })
    }
}

impl ResponseHead {
    /// The body framing of this response to a request with `method`: none for HEAD, 1xx,
    /// 204 and 304; until close when no framing header is present.
    pub fn framing(&self, method: &str) -> Result<Framing, HttpError> {
        if method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            return Ok(Framing::Empty);
        }
        Ok(match framing_from_headers(&self.headers)? {
            Some(Framing::Length(0)) => Framing::Empty,
            Some(f) => f,
            None => Framing::UntilClose,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum BodyState {
    /// Bytes left of a Content-Length body.
    Length(u64),
    /// Reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Bytes left of a chunk's data.
    ChunkData(u64),
    /// The CRLF after chunk data; `true` once the CR was seen.
    ChunkEnd(bool),
    /// The trailer section: the current line, and the section's size so far.
    Trailer(Vec<u8>, usize),
    /// Everything until EOF.
    UntilClose,
    /// The body is complete.
    Done,
}

/// Decodes one body incrementally: feed it bytes with [`BodyDecoder::decode`] until
/// [`BodyDecoder::is_done`]; at EOF call [`BodyDecoder::finish`].
#[derive(Clone, Debug)]
pub struct BodyDecoder {
    state: BodyState,
    max_body: usize,
    max_trailer: usize,
    received: usize,
}

impl BodyDecoder {
    /// A decoder for `framing` under `limits`. A declared length over the limit fails at
    /// once.
    pub fn new(framing: Framing, limits: &Limits) -> Result<BodyDecoder, HttpError> {
        let state = match framing {
            Framing::Empty => BodyState::Done,
            Framing::Length(n) if n > limits.max_body as u64 => {
                return Err(HttpError::BodyTooLarge(limits.max_body))
            }
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::ChunkSize(Vec::new()),
            Framing::UntilClose => BodyState::UntilClose,
        };
        let mut d = BodyDecoder {
            state,
            max_body: limits.max_body,
            max_trailer: limits.max_head,
            received: 0,
        };
        if d.state == BodyState::Length(0) {
            d.state = BodyState::Done;
        }
        Ok(d)
    }

    /// Whether the whole body was read.
    pub fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// Decoded body bytes so far.
    pub fn received(&self) -> usize {
        self.received
    }

    fn take(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), HttpError> {
        if self.received + data.len() > self.max_body {
            return Err(HttpError::BodyTooLarge(self.max_body));
        }
        self.received += data.len();
        out.extend_from_slice(data);
        Ok(())
    }

    /// Decodes from `input`, appending body bytes to `out`. Returns how many input bytes
    /// were consumed: all of them unless the body ended inside `input` (the rest belongs to
    /// the next message).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, HttpError> {
        let mut i = 0;
        while i < input.len() {
            let rest = &input[i..];
            match &mut self.state {
                BodyState::Done => break,
                BodyState::UntilClose => {
                    self.take(rest, out)?;
                    i = input.len();
                }
                BodyState::Length(left) => {
                    let n = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let left = *left - n as u64;
                    self.take(&rest[..n], out)?;
                    i += n;
                    self.state = if left == 0 {
                        BodyState::Done
                    } else {
                        BodyState::Length(left)
                    };
                }
                BodyState::ChunkData(left) => {
                    let n = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let left = *left - n as u64;
                    self.take(&rest[..n], out)?;
                    i += n;
                    self.state = if left == 0 {
                        BodyState::ChunkEnd(false)
                    } else {
                        BodyState::ChunkData(left)
                    };
                }
                BodyState::ChunkEnd(cr) => {
                    match (*cr, rest[0]) {
                        (false, b'\r') => *cr = true,
                        (true, b'\n') => self.state = BodyState::ChunkSize(Vec::new()),
                        _ => return Err(HttpError::BadChunk("chunk data not followed by CRLF")),
                    }
                    i += 1;
                }
                BodyState::ChunkSize(line) => {
                    let b = rest[0];
                    i += 1;
                    line.push(b);
                    if line.len() > MAX_CHUNK_LINE {
                        return Err(HttpError::BadChunk("chunk size line too long"));
                    }
                    if b == b'\n' {
                        let size = chunk_size(line)?;
                        self.state = if size == 0 {
                            BodyState::Trailer(Vec::new(), 0)
                        } else if size > (self.max_body - self.received) as u64 {
                            return Err(HttpError::BodyTooLarge(self.max_body));
                        } else {
                            BodyState::ChunkData(size)
                        };
                    }
                }
                BodyState::Trailer(line, total) => {
                    let b = rest[0];
                    i += 1;
                    line.push(b);
                    *total += 1;
                    if *total > self.max_trailer {
                        return Err(HttpError::HeadTooLarge(self.max_trailer));
                    }
                    if b == b'\n' {
                        if !line.ends_with(b"\r\n") {
                            return Err(HttpError::BadChunk("trailer line not ended by CRLF"));
                        }
                        if line.len() == 2 {
                            self.state = BodyState::Done;
                        } else if !line.contains(&b':') || line[0] == b' ' || line[0] == b'\t' {
                            return Err(HttpError::BadChunk("malformed trailer field"));
                        } else {
                            line.clear();
                        }
                    }
                }
            }
        }
        Ok(i)
    }

    /// The connection ended: fine for an until-close body, an error inside any other.
    pub fn finish(&mut self) -> Result<(), HttpError> {
        match self.state {
            BodyState::Done => Ok(()),
            BodyState::UntilClose => {
                self.state = BodyState::Done;
                Ok(())
            }
            _ => Err(HttpError::UnexpectedEof),
        }
    }
}

/// The size of a chunk-size line (`1a;ext=v\r\n`).
fn chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let Some(line) = line.strip_suffix(b"\r\n") else {
        return Err(HttpError::BadChunk("chunk size line not ended by CRLF"));
    };
    let hex = match line.iter().position(|&b| b == b';') {
        Some(p) => &line[..p],
        None => line,
    };
    // Whitespace before the extensions (BWS).
    let hex = hex.trim_ascii_end();
    if hex.is_empty() || hex.len() > 15 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(HttpError::BadChunk("bad chunk size"));
    }
    let s = std::str::from_utf8(hex).map_err(|_| HttpError::BadChunk("bad chunk size"))?;
    u64::from_str_radix(s, 16).map_err(|_| HttpError::BadChunk("bad chunk size"))
}

/// Why a message could not be encoded: the caller gave bytes that would change the
/// message's structure (header injection).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A method, target, reason phrase, header name or value with bytes it may not have.
    #[error("http encode: invalid {0}")]
    Invalid(&'static str),
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn write_headers(headers: &[Header], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for h in headers {
        if !is_token(&h.name) {
            return Err(EncodeError::Invalid("header name"));
        }
        if h.value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(EncodeError::Invalid("header value"));
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&h.value);
        out.extend_from_slice(b"\r\n");
    }
    Ok(())
}

fn has_framing(headers: &[Header]) -> bool {
    headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
    })
}

/// Appends a request to `out`: the head, a `Content-Length` for a non-empty body (or a
/// POST/PUT) unless the headers frame the body themselves, and the body.
pub fn encode_request(
    head: &RequestHead,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if !is_token(&head.method) {
        return Err(EncodeError::Invalid("method"));
    }
    if head.target.is_empty() || head.target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(EncodeError::Invalid("target"));
    }
    let start = out.len();
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(format!(" HTTP/1.{}\r\n", head.minor.min(1)).as_bytes());
    if let Err(e) = write_headers(&head.headers, out) {
        out.truncate(start);
        return Err(e);
    }
    let wants_length = !body.is_empty()
        || head.method.eq_ignore_ascii_case("POST")
        || head.method.eq_ignore_ascii_case("PUT");
    if wants_length && !has_framing(&head.headers) {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(())
}

/// Appends a response to `out`: the head, a `Content-Length` unless the status has no body
/// (1xx, 204, 304) or the headers frame the body themselves, and the body.
pub fn encode_response(
    head: &ResponseHead,
    body: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    if !(100..=999).contains(&head.status) {
        return Err(EncodeError::Invalid("status"));
    }
    if head
        .reason
        .bytes()
        .any(|b| b == b'\r' || b == b'\n' || b == 0)
    {
        return Err(EncodeError::Invalid("reason"));
    }
    let start = out.len();
    out.extend_from_slice(format!("HTTP/1.{} {} ", head.minor.min(1), head.status).as_bytes());
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Err(e) = write_headers(&head.headers, out) {
        out.truncate(start);
        return Err(e);
    }
    let no_body = (100..200).contains(&head.status) || head.status == 204 || head.status == 304;
    if !no_body && !has_framing(&head.headers) {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if !no_body {
        out.extend_from_slice(body);
    }
    Ok(())
}

/// Appends `body` in chunked coding, split into chunks of at most `chunk` bytes, with the
/// last chunk.
pub fn encode_chunked(body: &[u8], chunk: usize, out: &mut Vec<u8>) {
    for c in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
}

/// The standard reason phrase of a status code (empty for unknown codes).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::type_complexity)]
    use super::*;
    use proptest::prelude::*;

    fn lim() -> Limits {
        Limits::default()
    }

    /// Decodes a whole body from `input` fed in pieces of `step` bytes; returns the body
    /// and the bytes consumed.
    fn decode_all(
        framing: Framing,
        input: &[u8],
        step: usize,
        l: &Limits,
    ) -> Result<(Vec<u8>, usize), HttpError> {
        let mut d = BodyDecoder::new(framing, l)?;
        let mut out = Vec::new();
        let mut used = 0;
        while used < input.len() && !d.is_done() {
            let end = (used + step).min(input.len());
            used += d.decode(&input[used..end], &mut out)?;
        }
        if !d.is_done() {
            d.finish()?;
        }
        Ok((out, used))
    }

    #[test]
    fn request_heads() {
        let cases: &[(&[u8], Result<Option<(&str, &str, u8, usize)>, HttpError>)] = &[
            (
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Ok(Some(("GET", "/", 1, 1))),
            ),
            (
                b"GET /x?y HTTP/1.0\r\n\r\nrest",
                Ok(Some(("GET", "/x?y", 0, 0))),
            ),
            (
                b"\r\nPOST /p HTTP/1.1\r\nA: 1\r\nB:2\r\n\r\n",
                Ok(Some(("POST", "/p", 1, 2))),
            ),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Ok(None)),
            (b"GET", Ok(None)),
            (
                b"GET / HTTP/2.0\r\n\r\n",
                Err(HttpError::Malformed("invalid HTTP version".into())),
            ),
            (
                b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                Err(HttpError::Malformed("invalid header name".into())),
            ),
            (
                b"G\x01T / HTTP/1.1\r\n\r\n",
                Err(HttpError::Malformed("invalid token".into())),
            ),
        ];
        for (input, want) in cases {
            let got = parse_request(input, &lim()).map(|o| {
                o.map(|(h, _)| (h.method.clone(), h.target.clone(), h.minor, h.headers.len()))
            });
            let want = want
                .clone()
                .map(|o| o.map(|(m, t, v, n)| (m.to_string(), t.to_string(), v, n)));
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(input));
        }
        let (h, n) = parse_request(b"GET / HTTP/1.1\r\nHost:  a.example \r\n\r\nX", &lim())
            .unwrap()
            .unwrap();
        assert_eq!(n, 37);
        assert_eq!(h.header("host"), Some("a.example"));
        assert!(h.is_keep_alive());
    }

    #[test]
    fn response_heads() {
        let (h, n) = parse_response(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\r\n",
            &lim(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (h.status, h.reason.as_str(), h.minor, n),
            (404, "Not Found", 1, 52)
        );
        assert_eq!(h.header("content-type"), Some("text/plain"));
        assert_eq!(parse_response(b"HTTP/1.1 200", &lim()), Ok(None));
        assert!(matches!(
            parse_response(b"HTTP/1.1 2x0 OK\r\n\r\n", &lim()),
            Err(HttpError::Malformed(_))
        ));
        assert!(matches!(
            parse_response(b"SMTP 220 hi\r\n\r\n", &lim()),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn head_limits() {
        let l = Limits {
            max_head: 64,
            max_headers: 2,
            max_body: 10,
        };
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert_eq!(
            parse_request(long.as_bytes(), &l),
            Err(HttpError::HeadTooLarge(64))
        );
        let complete = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(60));
        assert_eq!(
            parse_request(complete.as_bytes(), &l),
            Err(HttpError::HeadTooLarge(64))
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", &l),
            Err(HttpError::TooManyHeaders(2))
        );
        assert!(parse_request(b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", &l)
            .unwrap()
            .is_some());
        assert_eq!(
            parse_response(format!("HTTP/1.1 200 {}", "x".repeat(70)).as_bytes(), &l),
            Err(HttpError::HeadTooLarge(64))
        );
    }

    fn req_with(headers: &[(&str, &str)]) -> RequestHead {
        RequestHead {
            method: "POST".into(),
            target: "/".into(),
            minor: 1,
            headers: headers.iter().map(|(n, v)| Header::new(n, v)).collect(),
        }
    }

    #[test]
    fn framing_table() {
        let cases: &[(&[(&str, &str)], Result<Framing, HttpError>)] = &[
            (&[], Ok(Framing::Empty)),
            (&[("Content-Length", "0")], Ok(Framing::Empty)),
            (&[("Content-Length", "12")], Ok(Framing::Length(12))),
            (&[("content-length", "12, 12")], Ok(Framing::Length(12))),
            (
                &[("Content-Length", "12"), ("Content-Length", "12")],
                Ok(Framing::Length(12)),
            ),
            (
                &[("Content-Length", "12"), ("Content-Length", "13")],
                Err(HttpError::BadContentLength),
            ),
            (
                &[("Content-Length", "-1")],
                Err(HttpError::BadContentLength),
            ),
            (
                &[("Content-Length", "+1")],
                Err(HttpError::BadContentLength),
            ),
            (&[("Content-Length", "")], Err(HttpError::BadContentLength)),
            (
                &[("Content-Length", "99999999999999999999999")],
                Err(HttpError::BadContentLength),
            ),
            (&[("Transfer-Encoding", "chunked")], Ok(Framing::Chunked)),
            (&[("Transfer-Encoding", "Chunked")], Ok(Framing::Chunked)),
            (
                &[("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
                Err(HttpError::AmbiguousLength),
            ),
            (
                &[("Transfer-Encoding", "gzip, chunked")],
                Err(HttpError::UnsupportedTransferEncoding(
                    "gzip, chunked".into(),
                )),
            ),
            (
                &[
                    ("Transfer-Encoding", "chunked"),
                    ("Transfer-Encoding", "chunked"),
                ],
                Err(HttpError::UnsupportedTransferEncoding(
                    "chunked,chunked".into(),
                )),
            ),
            (
                &[("Transfer-Encoding", "identity")],
                Err(HttpError::UnsupportedTransferEncoding("identity".into())),
            ),
        ];
        for (headers, want) in cases {
            assert_eq!(&req_with(headers).framing(), want, "{headers:?}");
        }
        let resp = |status, headers: &[(&str, &str)]| ResponseHead {
            minor: 1,
            status,
            reason: String::new(),
            headers: headers.iter().map(|(n, v)| Header::new(n, v)).collect(),
        };
        assert_eq!(resp(200, &[]).framing("GET"), Ok(Framing::UntilClose));
        assert_eq!(
            resp(200, &[("Content-Length", "5")]).framing("HEAD"),
            Ok(Framing::Empty)
        );
        assert_eq!(resp(204, &[]).framing("GET"), Ok(Framing::Empty));
        assert_eq!(
            resp(304, &[("Content-Length", "5")]).framing("GET"),
            Ok(Framing::Empty)
        );
        assert_eq!(
            resp(200, &[("Content-Length", "5")]).framing("GET"),
            Ok(Framing::Length(5))
        );
    }

    #[test]
    fn chunked_table() {
        let cases: &[(&[u8], Result<(&[u8], usize), HttpError>)] = &[
            (b"5\r\nhello\r\n0\r\n\r\nNEXT", Ok((b"hello", 15))),
            (
                b"5;ext=1\r\nhello\r\n6 ; a=\"b\"\r\n world\r\n0\r\n\r\n",
                Ok((b"hello world", 40)),
            ),
            (
                b"A\r\n0123456789\r\n0\r\nExpires: never\r\n\r\n",
                Ok((b"0123456789", 36)),
            ),
            (b"0\r\n\r\n", Ok((b"", 5))),
            (
                b"5\nhello\r\n0\r\n\r\n",
                Err(HttpError::BadChunk("chunk size line not ended by CRLF")),
            ),
            (
                b"5\r\nhelloX\r\n0\r\n\r\n",
                Err(HttpError::BadChunk("chunk data not followed by CRLF")),
            ),
            (b"x\r\n", Err(HttpError::BadChunk("bad chunk size"))),
            (b"\r\n", Err(HttpError::BadChunk("bad chunk size"))),
            (b"-5\r\n", Err(HttpError::BadChunk("bad chunk size"))),
            (
                b"fffffffffffffffff\r\n",
                Err(HttpError::BadChunk("bad chunk size")),
            ),
            (
                b"0\r\nno colon\r\n\r\n",
                Err(HttpError::BadChunk("malformed trailer field")),
            ),
            (
                b"0\r\nA: b\n\r\n",
                Err(HttpError::BadChunk("trailer line not ended by CRLF")),
            ),
            (b"5\r\nhel", Err(HttpError::UnexpectedEof)),
            (b"800\r\n", Err(HttpError::BodyTooLarge(1024))),
        ];
        let l = Limits {
            max_body: 1024,
            ..Limits::default()
        };
        for (input, want) in cases {
            let want = want.clone().map(|(b, n)| (b.to_vec(), n));
            for step in [1, 2, 3, 7, input.len()] {
                assert_eq!(
                    decode_all(Framing::Chunked, input, step, &l),
                    want,
                    "{:?} step {step}",
                    String::from_utf8_lossy(input)
                );
            }
        }
        // Many small chunks add up past the limit.
        let mut many = Vec::new();
        encode_chunked(&[b'a'; 2000], 100, &mut many);
        assert_eq!(
            decode_all(Framing::Chunked, &many, 50, &l),
            Err(HttpError::BodyTooLarge(1024))
        );
        // An endless chunk-size line or trailer is bounded.
        let long = vec![b'0'; 5000];
        assert_eq!(
            decode_all(Framing::Chunked, &long, 100, &l),
            Err(HttpError::BadChunk("chunk size line too long"))
        );
        let mut trailer = b"0\r\n".to_vec();
        trailer.extend(std::iter::repeat_n(b"A: b\r\n".as_slice(), 10_000).flatten());
        assert_eq!(
            decode_all(Framing::Chunked, &trailer, 100, &l),
            Err(HttpError::HeadTooLarge(l.max_head))
        );
    }

    #[test]
    fn length_and_close_bodies() {
        let l = Limits {
            max_body: 10,
            ..Limits::default()
        };
        assert_eq!(
            decode_all(Framing::Length(3), b"abcdef", 1, &l),
            Ok((b"abc".to_vec(), 3))
        );
        assert_eq!(
            decode_all(Framing::Length(3), b"ab", 1, &l),
            Err(HttpError::UnexpectedEof)
        );
        assert_eq!(
            BodyDecoder::new(Framing::Length(11), &l).err(),
            Some(HttpError::BodyTooLarge(10))
        );
        assert_eq!(
            decode_all(Framing::UntilClose, b"0123456789", 3, &l),
            Ok((b"0123456789".to_vec(), 10))
        );
        assert_eq!(
            decode_all(Framing::UntilClose, b"0123456789X", 3, &l),
            Err(HttpError::BodyTooLarge(10))
        );
        assert_eq!(
            decode_all(Framing::Empty, b"abc", 1, &l),
            Ok((Vec::new(), 0))
        );
    }

    #[test]
    fn encoders() {
        let mut out = Vec::new();
        let head = RequestHead {
            method: "GET".into(),
            target: "/.well-known/mta-sts.txt".into(),
            minor: 1,
            headers: vec![Header::new("Host", "mta-sts.example.com")],
        };
        encode_request(&head, b"", &mut out).unwrap();
        assert_eq!(
            out,
            b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\n\r\n"
        );
        out.clear();
        let post = RequestHead {
            method: "POST".into(),
            ..head.clone()
        };
        encode_request(&post, b"{}", &mut out).unwrap();
        assert!(out.ends_with(b"Content-Length: 2\r\n\r\n{}"));
        out.clear();
        let resp = ResponseHead {
            minor: 1,
            status: 204,
            reason: reason(204).into(),
            headers: vec![],
        };
        encode_response(&resp, b"ignored", &mut out).unwrap();
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
        // Header injection is refused and leaves `out` as it was.
        out.clear();
        let bad = RequestHead {
            headers: vec![Header::new("X", "a\r\nEvil: 1")],
            ..head.clone()
        };
        assert_eq!(
            encode_request(&bad, b"", &mut out),
            Err(EncodeError::Invalid("header value"))
        );
        assert!(out.is_empty());
        let bad = RequestHead {
            headers: vec![Header::new("X Y", "a")],
            ..head.clone()
        };
        assert_eq!(
            encode_request(&bad, b"", &mut out),
            Err(EncodeError::Invalid("header name"))
        );
        let bad = RequestHead {
            target: "/a b".into(),
            ..head.clone()
        };
        assert_eq!(
            encode_request(&bad, b"", &mut out),
            Err(EncodeError::Invalid("target"))
        );
        let bad = ResponseHead {
            minor: 1,
            status: 200,
            reason: "OK\r\nX: y".into(),
            headers: vec![],
        };
        assert_eq!(
            encode_response(&bad, b"", &mut out),
            Err(EncodeError::Invalid("reason"))
        );
        assert!(out.is_empty());
    }

    fn arb_token() -> impl Strategy<Value = String> {
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}"
    }

    fn arb_headers() -> impl Strategy<Value = Vec<Header>> {
        proptest::collection::vec(
            (arb_token(), "[!-~]([ -~]{0,20}[!-~])?").prop_filter_map("framing", |(n, v)| {
                let lower = n.to_ascii_lowercase();
                (lower != "content-length" && lower != "transfer-encoding")
                    .then(|| Header::new(&n, &v))
            }),
            0..8,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let l = Limits { max_head: 128, max_headers: 4, max_body: 64 };
            let _ = parse_request(&data, &l);
            if let Ok(Some((h, n))) = parse_response(&data, &l) {
                prop_assert!(n <= data.len());
                if let Ok(f) = h.framing("GET") {
                    if let Ok(mut d) = BodyDecoder::new(f, &l) {
                        let mut out = Vec::new();
                        if let Ok(used) = d.decode(&data[n..], &mut out) {
                            prop_assert!(used <= data.len() - n);
                            prop_assert!(out.len() <= 64);
                        }
                    }
                }
            }
            for f in [Framing::Chunked, Framing::Length(10), Framing::UntilClose] {
                let mut d = BodyDecoder::new(f, &l).unwrap();
                let mut out = Vec::new();
                if let Ok(used) = d.decode(&data, &mut out) {
                    prop_assert!(used <= data.len());
                    prop_assert!(out.len() <= 64);
                }
            }
        }

        #[test]
        fn request_roundtrip(method in arb_token(), target in "/[!-~]{0,30}", headers in arb_headers(),
                             body in proptest::collection::vec(any::<u8>(), 0..100), chunked: bool) {
            let mut head = RequestHead { method, target, minor: 1, headers };
            let mut out = Vec::new();
            if chunked {
                head.headers.push(Header::new("Transfer-Encoding", "chunked"));
                encode_request(&head, b"", &mut out).unwrap();
                encode_chunked(&body, 7, &mut out);
            } else {
                encode_request(&head, &body, &mut out).unwrap();
            }
            out.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
            let (got, n) = parse_request(&out, &lim()).unwrap().unwrap();
            let mut want = head.clone();
            let wants_length = !body.is_empty() || ["POST", "PUT"].iter().any(|m| head.method.eq_ignore_ascii_case(m));
            if !chunked && wants_length {
                want.headers.push(Header::new("Content-Length", &body.len().to_string()));
            }
            prop_assert_eq!(&got, &want);
            let (decoded, used) = decode_all(got.framing().unwrap(), &out[n..], 1000, &lim()).unwrap();
            prop_assert_eq!(decoded, body);
            prop_assert_eq!(&out[n + used..], b"GET /next HTTP/1.1\r\n\r\n".as_slice());
        }

        #[test]
        fn response_roundtrip(status in 200u16..600, reason in "[ -~]{0,20}", headers in arb_headers(),
                              body in proptest::collection::vec(any::<u8>(), 0..100)) {
            let head = ResponseHead { minor: 1, status, reason: reason.trim().to_string(), headers };
            let mut out = Vec::new();
            encode_response(&head, &body, &mut out).unwrap();
            let (got, n) = parse_response(&out, &lim()).unwrap().unwrap();
            prop_assert_eq!(got.status, head.status);
            prop_assert_eq!(got.reason.trim(), head.reason.as_str());
            prop_assert_eq!(&got.headers[..head.headers.len()], &head.headers[..]);
            let (decoded, _) = decode_all(got.framing("GET").unwrap(), &out[n..], 1000, &lim()).unwrap();
            let want = if status == 204 || status == 304 { Vec::new() } else { body };
            prop_assert_eq!(decoded, want);
        }

        /// Any split of a chunked body into two feeds decodes the same body.
        #[test]
        fn chunked_any_split(body in proptest::collection::vec(any::<u8>(), 0..200), size in 1usize..40) {
            let mut enc = Vec::new();
            encode_chunked(&body, size, &mut enc);
            enc.extend_from_slice(b"XYZ");
            for cut in 0..=enc.len() {
                let mut d = BodyDecoder::new(Framing::Chunked, &lim()).unwrap();
                let mut out = Vec::new();
                let a = d.decode(&enc[..cut], &mut out).unwrap();
                let mut used = a;
                if !d.is_done() {
                    prop_assert_eq!(a, cut);
                    used += d.decode(&enc[cut..], &mut out).unwrap();
                }
                prop_assert!(d.is_done());
                prop_assert_eq!(&out, &body);
                prop_assert_eq!(used, enc.len() - 3);
            }
        }
    }
}
