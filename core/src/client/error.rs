//! The client's errors, split by fault as the server's are: the server answered with an
//! error reply, the server broke the protocol, the server lacks something this delivery
//! needs, the connection failed underneath the protocol, or the caller misused the API.
//! A failure of the transport (I/O, EOF, timeout, TLS handshake) is never reported as a
//! protocol error, and a session's sticky error keeps its kind.

use std::fmt;

use crate::sasl::ClientAuthError;
use crate::smtp::{Enhanced, Reply};
use crate::tls::TlsFailure;

/// The step of the conversation an error happened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Setting up the connection (before any reply).
    Connect,
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO or HELO.
    Ehlo,
    /// STARTTLS and the TLS handshake.
    StartTls,
    /// AUTH.
    Auth,
    /// MAIL FROM (and checks before it).
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA or BDAT and the message.
    Data,
    /// RSET or QUIT.
    Quit,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "ehlo",
            Stage::StartTls => "starttls",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Quit => "quit",
        })
    }
}

/// What went wrong, by whose fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The server answered with a 4xx reply; the reply is in [`ClientError::reply`].
    #[error("temporary error reply")]
    TemporaryReply,
    /// The server answered with a 5xx reply; the reply is in [`ClientError::reply`].
    #[error("permanent error reply")]
    PermanentReply,
    /// The server broke the protocol.
    #[error("server misbehaved: {0}")]
    PeerMisbehaved(PeerMisbehaved),
    /// The server works, but lacks something this delivery needs.
    #[error("server incompatible: {0}")]
    PeerIncompatible(PeerIncompatible),
    /// The connection failed underneath the protocol.
    #[error("{0}")]
    Transport(Transport),
    /// The caller misused the API (a delivery while another is in progress, no recipients,
    /// credentials the configured mechanism cannot send).
    #[error("api misuse: {0}")]
    Misuse(&'static str),
    /// The recipient was not attempted (beyond the server's RCPTMAX, or after it said "too
    /// many recipients"): send it in another transaction. Nobody's fault.
    #[error("recipient not attempted, deliver in another transaction")]
    NotAttempted,
}

/// How the server broke the protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// Bytes that are not an SMTP reply: garbage, a code with the wrong number of digits, a
    /// multi-line reply with different codes, a line too long. The parser's description.
    #[error("unparsable reply: {0}")]
    UnparsableReply(String),
    /// A reply arrived when none was expected.
    #[error("unexpected reply")]
    UnexpectedReply,
    /// A reply code that makes no sense at this step (e.g. 354 to MAIL).
    #[error("unexpected reply code")]
    UnexpectedCode,
    /// Plaintext followed the 220 to STARTTLS before the handshake (response injection,
    /// RFC 3207 5).
    #[error("data after STARTTLS reply")]
    DataAfterStartTls,
    /// The 334 challenge is not base64.
    #[error("bad base64 in 334")]
    BadChallengeEncoding,
    /// The SASL exchange failed because of what the server sent (malformed challenge,
    /// SCRAM server signature wrong, SCRAM `e=`).
    #[error("authentication: {0}")]
    Auth(ClientAuthError),
    /// A transaction ended without a reply the client was waiting for.
    #[error("no reply")]
    MissingReply,
}

/// What the server lacks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIncompatible {
    /// The message needs SMTPUTF8 and the server does not offer it.
    #[error("SMTPUTF8 required but not supported by server")]
    SmtpUtf8,
    /// The message needs REQUIRETLS and the server does not offer it.
    #[error("REQUIRETLS required but not supported by server")]
    RequireTls,
    /// STARTTLS was needed (required, or announced and tried) and the server refused it;
    /// its reply is in [`ClientError::reply`].
    #[error("STARTTLS refused")]
    StartTls,
    /// AUTH is configured but the server offers no mechanism we can use.
    #[error("no usable authentication mechanism offered")]
    NoAuthMechanism,
    /// The message is larger than the server's announced SIZE.
    #[error("message of {size} bytes larger than server limit {max}")]
    MessageTooLarge {
        /// Message size.
        size: u64,
        /// The server's limit.
        max: u64,
    },
}

/// How the connection failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Transport {
    /// The server closed the connection before replying.
    #[error("connection closed by server")]
    Closed,
    /// No reply in time.
    #[error("timeout waiting for reply")]
    Timeout,
    /// The driver's reading or writing failed; its description.
    #[error("i/o: {0}")]
    Io(String),
    /// The TLS handshake or a TLS record failed (certificate refused etc.).
    #[error("tls: {0}")]
    Tls(TlsFailure),
}

/// An error of a connection, a recipient or a message, with what a DSN needs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{stage}: {kind}{}", reply.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
pub struct ClientError {
    /// Where in the conversation.
    pub stage: Stage,
    /// Whether trying again later is pointless.
    pub permanent: bool,
    /// What went wrong.
    pub kind: ErrorKind,
    /// The server's reply, all lines, when there was one (always for
    /// [`ErrorKind::TemporaryReply`] and [`ErrorKind::PermanentReply`]).
    pub reply: Option<Reply>,
}

impl ClientError {
    pub(crate) fn new(stage: Stage, permanent: bool, kind: ErrorKind) -> ClientError {
        ClientError {
            stage,
            permanent,
            kind,
            reply: None,
        }
    }

    /// The same error with the server's reply attached.
    pub(crate) fn with_reply(self, reply: Reply) -> ClientError {
        ClientError {
            reply: Some(reply),
            ..self
        }
    }

    /// An error for an error reply (4xx temporary, 5xx permanent).
    pub(crate) fn status(stage: Stage, reply: Reply) -> ClientError {
        let permanent = reply.is_permanent();
        let kind = if permanent {
            ErrorKind::PermanentReply
        } else {
            ErrorKind::TemporaryReply
        };
        ClientError::new(stage, permanent, kind).with_reply(reply)
    }

    /// An error reply (4xx, 5xx) as [`ClientError::status`], any other code as a protocol
    /// violation.
    pub(crate) fn status_or_protocol(stage: Stage, reply: Reply) -> ClientError {
        if reply.is_transient() || reply.is_permanent() {
            ClientError::status(stage, reply)
        } else {
            ClientError::protocol(stage, reply)
        }
    }

    /// A reply whose code makes no sense at this step.
    pub(crate) fn protocol(stage: Stage, reply: Reply) -> ClientError {
        ClientError::misbehaved(stage, PeerMisbehaved::UnexpectedCode).with_reply(reply)
    }

    /// A protocol violation by the server (temporary: another server, or this one later,
    /// may do better).
    pub(crate) fn misbehaved(stage: Stage, m: PeerMisbehaved) -> ClientError {
        ClientError::new(stage, false, ErrorKind::PeerMisbehaved(m))
    }

    /// A failure of the transport the driver saw (a read or write error): what a driver
    /// reports for a connection that broke underneath the session.
    pub fn io(stage: Stage, detail: impl fmt::Display) -> ClientError {
        ClientError::new(
            stage,
            false,
            ErrorKind::Transport(Transport::Io(detail.to_string())),
        )
    }

    /// The enhanced status code of the reply, if any.
    pub fn enhanced(&self) -> Option<Enhanced> {
        self.reply.as_ref().and_then(|r| r.enhanced)
    }

    /// Whether the server answered with an error reply (4xx or 5xx).
    pub fn is_reply(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::TemporaryReply | ErrorKind::PermanentReply
        )
    }

    /// Whether the connection failed underneath the protocol (I/O, EOF, timeout, TLS).
    pub fn is_transport(&self) -> bool {
        matches!(self.kind, ErrorKind::Transport(_))
    }

    /// Whether TLS failed: the handshake or a record ([`Transport::Tls`]), or the server
    /// refused STARTTLS ([`PeerIncompatible::StartTls`]).
    pub fn is_tls(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::Transport(Transport::Tls(_))
                | ErrorKind::PeerIncompatible(PeerIncompatible::StartTls)
        )
    }
}

/// What a caller-side SASL failure (before anything was sent) says: the credentials or the
/// configured mechanism cannot be used.
pub(crate) fn auth_misuse(e: &ClientAuthError) -> &'static str {
    match e {
        ClientAuthError::ChannelBindingUnavailable => {
            "channel binding required by the configured mechanism but unavailable"
        }
        ClientAuthError::UnsendableCredentials(why) => why,
        _ => "authentication could not start",
    }
}
