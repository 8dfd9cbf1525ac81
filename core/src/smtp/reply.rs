//! Replies: code, optional enhanced status code (RFC 3463/2034) and text lines.

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
}
