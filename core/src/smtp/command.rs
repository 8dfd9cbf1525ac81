//! SMTP commands and their parameters (RFC 5321, 1870, 6152, 3030, 6531, 8689, 4865, 3461,
//! 4954).

use super::address::{ForwardPath, Host, ReversePath};
use crate::time::UnixTime;

/// One command line, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain` or `EHLO [address-literal]`.
    Ehlo(Host),
    /// `HELO domain`.
    Helo(Host),
    /// `MAIL FROM:<path> params`.
    Mail(ReversePath, MailParams),
    /// `RCPT TO:<path> params`.
    Rcpt(ForwardPath, RcptParams),
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]` (RFC 3030); the chunk bytes follow the line.
    Bdat {
        /// Chunk size in octets.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `VRFY string`.
    Vrfy(String),
    /// `EXPN string`.
    Expn(String),
    /// `HELP [topic]`.
    Help(Option<String>),
    /// `NOOP [string]`.
    Noop(Option<String>),
    /// `QUIT`.
    Quit,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mechanism [initial-response]` (RFC 4954). The initial response is the raw
    /// base64 text, `=` for an empty response.
    Auth {
        /// Mechanism name, upper-cased.
        mechanism: String,
        /// Initial response as sent (base64 or `=`).
        initial_response: Option<String>,
    },
}

/// `BODY=` (RFC 6152, RFC 3030).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `7BIT`.
    SevenBit,
    /// `8BITMIME`.
    EightBitMime,
    /// `BINARYMIME` (requires BDAT).
    BinaryMime,
}

/// `RET=` (RFC 3461).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    /// `RET=FULL`.
    Full,
    /// `RET=HDRS`.
    Hdrs,
}

/// FUTURERELEASE (RFC 4865): `HOLDFOR=seconds` or `HOLDUNTIL=rfc3339`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// `HOLDFOR=` seconds.
    For(u64),
    /// `HOLDUNTIL=` time.
    Until(UnixTime),
}

/// `NOTIFY=` (RFC 3461).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Notify {
    /// `NEVER` (exclusive with the others).
    pub never: bool,
    /// `SUCCESS`.
    pub success: bool,
    /// `FAILURE`.
    pub failure: bool,
    /// `DELAY`.
    pub delay: bool,
}

/// Parameters of MAIL FROM.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MailParams {
    /// `SIZE=` (RFC 1870).
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<Body>,
    /// `SMTPUTF8` (RFC 6531).
    pub smtputf8: bool,
    /// `REQUIRETLS` (RFC 8689).
    pub requiretls: bool,
    /// `HOLDFOR`/`HOLDUNTIL` (RFC 4865).
    pub hold: Option<Hold>,
    /// `RET=` (RFC 3461).
    pub ret: Option<Ret>,
    /// `ENVID=` (RFC 3461), xtext-decoded.
    pub envid: Option<String>,
    /// `AUTH=` (RFC 4954), xtext-decoded; `<>` kept as is.
    pub auth: Option<String>,
}

/// Parameters of RCPT TO.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RcptParams {
    /// `NOTIFY=`.
    pub notify: Option<Notify>,
    /// `ORCPT=addr-type;xtext`, as (type, decoded address).
    pub orcpt: Option<(String, String)>,
}

/// Why a command line did not parse. Each maps to the reply the server sends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The verb is not an SMTP command we know: `500 5.5.1`.
    #[error("unknown command")]
    Unknown,
    /// The command is known but its arguments are malformed: `501 5.5.4` (or `501 5.1.7`
    /// for a bad sender path, `501 5.1.3` for a bad recipient path).
    #[error("syntax error: {0}")]
    Syntax(String),
    /// The MAIL FROM path is malformed: `501 5.1.7`.
    #[error("bad sender address: {0}")]
    BadSender(String),
    /// The RCPT TO path is malformed: `501 5.1.3`.
    #[error("bad recipient address: {0}")]
    BadRecipient(String),
    /// An unknown MAIL/RCPT parameter: `555 5.5.4`.
    #[error("unrecognized parameter {0}")]
    UnknownParameter(String),
    /// A parameter given twice: `501 5.5.4`.
    #[error("duplicate parameter {0}")]
    DuplicateParameter(String),
    /// The line is not valid UTF-8 (or has NUL/control characters): `500 5.5.2`.
    #[error("invalid characters in command")]
    InvalidCharacters,
}
