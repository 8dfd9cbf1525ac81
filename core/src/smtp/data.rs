//! The DATA codec: dot-unstuffing with smuggling protection (server) and dot-stuffing (client).

/// How a DATA transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataEnd {
    /// A bare CR or LF was seen next to a dot (an SMTP smuggling attempt, or a broken
    /// client): the message must be refused with `500 5.5.2`.
    pub smuggling: bool,
    /// More than the size limit was received; the excess was discarded.
    pub too_large: bool,
    /// A bare CR or bare LF was seen anywhere in the message.
    pub bare_newline: bool,
}

/// Reads DATA content up to and including `CRLF.CRLF`.
#[derive(Debug)]
pub struct DataReader {
    pub(crate) max_size: u64,
    pub(crate) size: u64,
    pub(crate) state: u8,
    pub(crate) end: DataEnd,
}
