//! The SMTP server session machine: one machine for incoming delivery (port 25) and for
//! authenticated submission (587, 465).
//!
//! It follows the crate's driving contract (see the crate docs). Everything the session
//! needs from the outside world is an [`Effect`] with a [`Token`]: the connection policy,
//! password and credential checks, sender and recipient decisions, and storing the message.
//! The session only sends `250` after DATA once the store effect has completed
//! successfully: the `Spooled` fact (in `state`) can only be made from that completion.
//!
//! TLS (STARTTLS and implicit TLS) happens inside the machine through [`crate::tls`], so a
//! driver only moves bytes.
//!
//! # Layout
//!
//! * this module: the public vocabulary (config, inputs, outputs, effects, completions,
//!   events, timers, errors);
//! * `state`: the protocol state as types (what the session expects next, owning the hello
//!   facts, the transaction, the message being read, an AUTH exchange or a pending effect);
//! * `session`: the [`ServerSession`] itself: `handle`/`poll`, bytes, TLS, timers;
//! * `commands`: one command line at a time (EHLO, STARTTLS, MAIL, RCPT, RSET, ..);
//! * `data`: DATA and BDAT, the finished message and its store;
//! * `auth`: the AUTH exchange;
//! * `completions`: the answers to effects, and what happens when none comes in time;
//! * `spool`: message data past a threshold goes to a spool file as it arrives;
//! * `checks`, `outcome`: the DNS checks of incoming mail, and what a store outcome means.
//!
//! # Deadlines
//!
//! Everything the session waits for has a [`Timer`]: the next command, message data, the
//! TLS handshake, a held-back reply, and the answer to an effect. An effect not answered
//! within [`ServerConfig::effect_timeout`] ([`ServerConfig::checks_timeout`] for the DNS
//! checks of one command) is given up: inside a transaction the command is answered
//! `451 4.3.0` and the session goes on; otherwise (connection policy, AUTH) the session
//! answers `421 4.3.0` and closes. A completion that arrives after that is ignored.

mod auth;
pub mod checks;
mod commands;
mod completions;
mod data;
pub mod outcome;
mod session;
pub mod spool;
mod state;
#[cfg(test)]
mod tests;

pub use checks::{IncomingChecks, Verdicts};
pub use outcome::{
    is_unknown_recipients_only, partial_failure_dsn, should_send_dsn, transaction_failed_reply,
    DsnFacts, FailureCause, RecipientFailure, StoreOutcome,
};
pub use session::ServerSession;
pub use spool::{MemorySpool, MessageData, SpoolAnswer, SpoolId, SpooledBytes};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::sasl::{CredentialKind, Mechanism, StoredCredentials};
use crate::smtp::{Enhanced, ForwardPath, MailParams, RcptParams, Reply, ReversePath};
use crate::time::UnixTime;
use crate::tls::{TlsError, TlsInfo};
use crate::Token;

/// How the server session behaves; validated when built, shared by all sessions of a
/// listener.
#[derive(Clone)]
pub struct ServerConfig {
    /// Our host name, in the greeting, EHLO reply and Received header.
    pub hostname: String,
    /// The name of the listener this port belongs to (logs and metrics label by it).
    pub listener: Arc<str>,
    /// A submission listener: AUTH required, messages are queued for delivery.
    pub submission: bool,
    /// TLS from the first byte (port 465).
    pub implicit_tls: bool,
    /// TLS configuration; `None` disables STARTTLS and implicit TLS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// AUTH is only offered and accepted inside TLS.
    pub require_tls_for_auth: bool,
    /// MAIL is only accepted inside TLS (`530 5.7.0`): mox's RequireSTARTTLS on port 25,
    /// and on submission unless NoRequireSTARTTLS.
    pub require_tls_for_delivery: bool,
    /// Largest message accepted, in octets (SIZE).
    pub max_message_size: u64,
    /// Recipients per transaction (LIMITS RCPTMAX); more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Port 25: a message with more `Received` fields than this is refused as a mail loop
    /// (`550 5.4.6`); 100 by default.
    pub max_received_headers: usize,
    /// SASL mechanisms offered on submission.
    pub auth_mechanisms: Vec<Mechanism>,
    /// Failed AUTH attempts before the connection is closed with 421.
    pub max_auth_failures: u32,
    /// Delay before a failed AUTH is answered, multiplied by the number of failures so far.
    pub auth_failure_delay: Duration,
    /// Failed commands (MAIL, RCPT, DATA, unknown) tolerated without a delivered message
    /// before the connection is closed with 550.
    pub max_errors: u32,
    /// Time to wait for a command (RFC 5321 4.5.3.2.7: at least 5 minutes).
    pub command_timeout: Duration,
    /// Time to wait for more message data (RFC 5321 4.5.3.2.7 applies per read).
    pub data_timeout: Duration,
    /// Time a TLS handshake may take.
    pub tls_handshake_timeout: Duration,
    /// Time the answer to an effect (connection policy, password check, sender and
    /// recipient checks, store) may take before the session gives up on it (`451 4.3.0`
    /// inside a transaction, `421 4.3.0` and close otherwise); 120 s by default, like
    /// Postfix's 100 s for its policy service: far above a healthy answer, far below the
    /// client's own timeouts (RFC 5321 4.5.3.2: 5 to 10 minutes).
    pub effect_timeout: Duration,
    /// Time all DNS checks of one command (at MAIL FROM, after the message) may take
    /// together, over all their rounds of lookups; 180 s by default (mox gives each of SPF,
    /// DKIM, DMARC and iprev a minute; a client waits 10 minutes for the reply to the final
    /// dot). Past it the command is answered `451 4.3.0`.
    pub checks_timeout: Duration,
    /// Maximum FUTURERELEASE interval (RFC 4865); 60 days by default.
    pub future_release_max: Duration,
    /// Delay before answering a transaction whose recipients were all unknown users (slows
    /// down address guessing); 5 s by default.
    pub unknown_recipient_delay: Duration,
    /// Seed for per-session randomness (SASL nonces, Message-Id).
    pub seed: u64,
    /// DNS-based checks of incoming delivery; `None` runs none (submission, tests,
    /// localserve).
    pub checks: Option<IncomingChecks>,
    /// Message data held in memory before it goes to a spool file ([`Effect::Spool`]); a
    /// spooled message's header must fit in it too. 256 KiB by default.
    pub spool_threshold: usize,
}

impl ServerConfig {
    /// Defaults for a listener with the given host name.
    pub fn new(hostname: impl Into<String>) -> ServerConfig {
        ServerConfig {
            hostname: hostname.into(),
            listener: Arc::from(""),
            submission: false,
            implicit_tls: false,
            tls: None,
            require_tls_for_auth: true,
            require_tls_for_delivery: false,
            max_message_size: 100 << 20,
            max_recipients: 1000,
            max_received_headers: 100,
            auth_mechanisms: Mechanism::ALL.to_vec(),
            max_auth_failures: 3,
            auth_failure_delay: Duration::from_secs(1),
            max_errors: 10,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(300),
            tls_handshake_timeout: Duration::from_secs(30),
            effect_timeout: Duration::from_secs(120),
            checks_timeout: Duration::from_secs(180),
            future_release_max: Duration::from_secs(60 * 24 * 3600),
            unknown_recipient_delay: Duration::from_secs(5),
            seed: 0,
            checks: None,
            spool_threshold: 256 << 10,
        }
    }
}

/// Who is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The remote IP address.
    pub ip: IpAddr,
    /// Connection id, for logs and the Received header.
    pub cid: u64,
}

/// Inputs to [`ServerSession::handle`].
#[derive(Debug)]
pub enum Input<'a> {
    /// Bytes from the peer (ciphertext once TLS is up).
    Received(&'a [u8]),
    /// The answer to an earlier effect.
    Completed(Token, Completion),
    /// A deadline may have passed.
    Timeout,
    /// The peer closed its side (EOF).
    PeerClosed,
    /// The server is shutting down: the next command is answered 421.
    Shutdown,
    /// The driver holds more unconsumed input than it keeps (the peer sent far ahead of
    /// the replies): the session answers `421 4.7.0` and closes.
    Overflow,
}

/// A yes-or-no policy answer with the reply for the no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Accept,
    /// Refuse with this reply.
    Reject(Reply),
}

/// The answer to [`Effect::CheckPassword`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordCheck {
    /// The password is right; the session is now authenticated as `account`.
    Valid {
        /// The account logged in to.
        account: String,
    },
    /// Unknown user or wrong password.
    Invalid,
    /// Logins to this account are disabled; the message is shown in the 535 reply.
    Disabled(String),
    /// Too many failures from this IP recently: the session closes with 421.
    RateLimited,
}

/// The answer to [`Effect::LookupCredentials`].
#[derive(Debug, Clone)]
pub enum CredentialsAnswer {
    /// The stored credentials of `account`.
    Found {
        /// The account the user name belongs to.
        account: String,
        /// Its credentials of the kind asked for.
        credentials: StoredCredentials,
    },
    /// No such user (the exchange continues with fake values and fails at the end).
    Unknown,
    /// Logins to this account are disabled; the message is shown in the 535 reply.
    Disabled(String),
    /// Too many failures from this IP recently: the session closes with 421.
    RateLimited,
}

/// Answers to effects, matched by token.
#[derive(Debug, Clone)]
pub enum Completion {
    /// Answer to [`Effect::CheckConnection`], [`Effect::CheckSender`] and
    /// [`Effect::CheckRecipient`].
    Verdict(Verdict),
    /// Answer to [`Effect::CheckPassword`].
    Password(PasswordCheck),
    /// Answer to [`Effect::LookupCredentials`].
    Credentials(CredentialsAnswer),
    /// Answer to [`Effect::Dns`]: one result per lookup, in order.
    Dns(Vec<crate::dns::LookupResult>),
    /// Answer to [`Effect::Spool`].
    Spool(SpoolAnswer),
    /// Answer to [`Effect::Store`]: [`StoreOutcome::Delivered`] or
    /// [`StoreOutcome::Partial`] only once the message is durable for the recipients that got
    /// it (delivered to the mailboxes, or queued), and the DSN about the others too when one
    /// is sent; the other outcomes carry the failures or the reply to send.
    Stored(StoreOutcome),
}

/// Where a sender address being checked comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderSource {
    /// The MAIL FROM path.
    MailFrom,
    /// The message's From header (submission).
    FromHeader,
}

/// A complete transaction, handed out to be made durable.
#[derive(Debug, Clone)]
pub struct Transaction {
    /// Connection id.
    pub cid: u64,
    /// Remote IP.
    pub remote_ip: IpAddr,
    /// The EHLO/HELO name.
    pub ehlo: String,
    /// TLS facts, when the session is encrypted.
    pub tls: Option<TlsInfo>,
    /// The authenticated account (submission).
    pub account: Option<String>,
    /// MAIL FROM.
    pub mail_from: ReversePath,
    /// MAIL FROM parameters.
    pub params: MailParams,
    /// Accepted recipients with their parameters.
    pub recipients: Vec<(ForwardPath, RcptParams)>,
    /// The message, with our Received header (and, on submission, Message-Id/Date when
    /// missing) prepended.
    pub message: MessageData,
    /// REQUIRETLS (`Some(true)`), `TLS-Required: No` (`Some(false)`), or neither.
    pub requiretls: Option<bool>,
    /// FUTURERELEASE: do not deliver before this time.
    pub hold_until: Option<UnixTime>,
    /// The From header address (submission).
    pub from_header: Option<String>,
    /// The user name the client authenticated with (submission): an address or an account
    /// name.
    pub login: Option<String>,
    /// When the transaction completed.
    pub received: UnixTime,
    /// Results of the incoming checks (SPF, DKIM, DMARC, iprev, DNSBL), when they ran.
    pub auth: Option<Box<Verdicts>>,
}

/// Requests for the outside world.
#[derive(Debug, Clone)]
pub enum Effect {
    /// May this IP connect now (connection count and rate limits, blocklists)? Answered
    /// with a [`Completion::Verdict`]; a reject closes the connection after its reply.
    CheckConnection {
        /// The remote IP.
        ip: IpAddr,
        /// The connection id (events carry it; policy counts open connections by it).
        cid: u64,
        /// A submission port (failed-login limits refuse connections there).
        submission: bool,
        /// The listener's name ([`ServerConfig::listener`]).
        listener: Arc<str>,
    },
    /// PLAIN/LOGIN: is this password right? Answered with [`Completion::Password`].
    CheckPassword {
        /// User name as given.
        username: String,
        /// The password.
        password: String,
        /// The remote IP (for failure rate limits).
        ip: IpAddr,
    },
    /// CRAM-MD5/SCRAM: the stored credentials of a user. Answered with
    /// [`Completion::Credentials`].
    LookupCredentials {
        /// User name as given.
        username: String,
        /// Which credentials.
        kind: CredentialKind,
        /// The remote IP.
        ip: IpAddr,
    },
    /// Is this sender acceptable? On submission: does the address belong to the
    /// authenticated account. On port 25: the MAIL FROM domain checks and rate limits.
    /// Answered with a [`Completion::Verdict`].
    CheckSender {
        /// The authenticated account (submission).
        account: Option<String>,
        /// The address.
        address: ReversePath,
        /// Where it comes from.
        source: SenderSource,
        /// The remote IP.
        ip: IpAddr,
    },
    /// Is this recipient acceptable (does it exist, quota, rate limits, send limits)?
    /// Answered with a [`Completion::Verdict`].
    CheckRecipient {
        /// The authenticated account (submission).
        account: Option<String>,
        /// MAIL FROM of the transaction.
        mail_from: ReversePath,
        /// The recipient.
        recipient: ForwardPath,
        /// The remote IP.
        ip: IpAddr,
    },
    /// Append message data to the transaction's spool file (created by the first chunk).
    /// The session reads no more input until answered with [`Completion::Spool`]; the
    /// last chunk's answer gives the whole message ([`SpoolAnswer::Complete`]). The file is
    /// no longer needed after [`Event::SpoolEnded`] (or the end of the connection).
    Spool {
        /// The transaction's spool.
        spool: SpoolId,
        /// The message bytes to append (already unstuffed).
        chunk: Vec<u8>,
        /// Whether this is the last chunk (the message is complete).
        last: bool,
    },
    /// Make the transaction durable: deliver (port 25) or queue (submission). Answered with
    /// [`Completion::Stored`].
    Store(Box<Transaction>),
    /// Answer these DNS questions (all of them, any order of work). Answered with
    /// [`Completion::Dns`].
    Dns(Vec<crate::dns::Lookup>),
}

/// Things worth a log line or a metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A command was received (verb only; arguments may be secret).
    Command(String),
    /// A reply was sent.
    Reply(u16),
    /// TLS is established.
    TlsEstablished(TlsInfo),
    /// AUTH succeeded.
    Authenticated {
        /// The account.
        account: String,
        /// The mechanism.
        mechanism: &'static str,
    },
    /// AUTH failed (counts toward per-IP limits).
    AuthFailed {
        /// The user name tried, when known.
        username: Option<String>,
        /// The SASL mechanism (`PLAIN`, `SCRAM-SHA-256`, ...).
        mechanism: &'static str,
    },
    /// The message could not be accepted because it contained a smuggling sequence.
    Smuggling,
    /// A recipient of a stored transaction did not get the message.
    RecipientFailed {
        /// The recipient.
        recipient: String,
        /// The reply code of its failure.
        code: u16,
        /// The enhanced status code.
        enhanced: Enhanced,
        /// The reason.
        reason: String,
    },
    /// A command was refused or the session ended with an error reply (4xx/5xx): one log
    /// line per refusal, with the client's address, for operators and tools like fail2ban.
    Refused {
        /// The client's IP address.
        ip: IpAddr,
        /// The reply code.
        code: u16,
        /// The enhanced status code, when the reply has one.
        enhanced: Option<Enhanced>,
        /// The reply text (lines joined with "; ").
        text: String,
    },
    /// A message was accepted with 250.
    Accepted {
        /// Size in octets (with our headers).
        size: usize,
        /// Number of recipients.
        recipients: usize,
    },
    /// The transaction that had this spool file ended (stored, refused, reset or the
    /// connection closed): the file can be removed.
    SpoolEnded(SpoolId),
    /// The session ends.
    Closing(String),
    /// A mail transaction ended (stored, refused, reset or abandoned): one log line per
    /// transaction, with its verdict and the reason.
    Transaction(Box<TransactionLog>),
}

/// Recipient addresses a [`TransactionLog`] lists by name (the counts are always whole).
pub const LOGGED_RECIPIENTS: usize = 20;

/// How a transaction ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnVerdict {
    /// Stored for every recipient it had (250).
    Accepted,
    /// Stored for some recipients; the others failed (250, with DSNs or failure events).
    Partial,
    /// Refused after MAIL FROM was accepted (at RCPT, DATA or the store), with this code.
    Refused(u16),
    /// Ended without a message: RSET, a new EHLO/HELO, STARTTLS, QUIT or the connection
    /// closing while the transaction was open.
    Abandoned,
}

impl TxnVerdict {
    /// The verdict's name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            TxnVerdict::Accepted => "accepted",
            TxnVerdict::Partial => "partial",
            TxnVerdict::Refused(c) if c < 500 => "deferred",
            TxnVerdict::Refused(_) => "rejected",
            TxnVerdict::Abandoned => "abandoned",
        }
    }
}

/// One transaction as it ended, for [`Event::Transaction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionLog {
    /// MAIL FROM (`<>` for the null path).
    pub mail_from: String,
    /// Recipients accepted at RCPT TO (how many).
    pub recipients: usize,
    /// The first [`LOGGED_RECIPIENTS`] of them.
    pub recipient_names: Vec<String>,
    /// Recipients refused at RCPT TO, with the reply code (the first
    /// [`LOGGED_RECIPIENTS`]); `refused_count` has them all.
    pub refused: Vec<(String, u16)>,
    /// How many recipients were refused at RCPT TO.
    pub refused_count: usize,
    /// The message size, once a message was received.
    pub size: Option<usize>,
    /// The message authentication results (`iprev=pass dkim=pass spf=pass dmarc=pass`),
    /// when the incoming checks ran.
    pub auth: Option<String>,
    /// How it ended.
    pub verdict: TxnVerdict,
    /// Why: the final reply's text, or what ended it.
    pub reason: String,
}

impl TransactionLog {
    pub(crate) fn new(mail_from: &ReversePath) -> TransactionLog {
        TransactionLog {
            mail_from: mail_from.to_string(),
            recipients: 0,
            recipient_names: Vec::new(),
            refused: Vec::new(),
            refused_count: 0,
            size: None,
            auth: None,
            verdict: TxnVerdict::Abandoned,
            reason: String::new(),
        }
    }

    pub(crate) fn recipient_accepted(&mut self, r: &ForwardPath) {
        self.recipients += 1;
        if self.recipient_names.len() < LOGGED_RECIPIENTS {
            self.recipient_names.push(r.to_string());
        }
    }

    pub(crate) fn recipient_refused(&mut self, r: &ForwardPath, code: u16) {
        self.refused_count += 1;
        if self.refused.len() < LOGGED_RECIPIENTS {
            self.refused.push((r.to_string(), code));
        }
    }
}

/// Outputs drained with [`ServerSession::poll`].
#[derive(Debug)]
pub enum Output {
    /// Bytes were appended to the transmit buffer: write them.
    Transmit,
    /// Perform this effect and answer with [`Input::Completed`].
    Effect(Token, Effect),
    /// Log or count this.
    Event(Event),
    /// Nothing more now: wait for input, a completion or the deadline.
    Idle {
        /// The earliest deadline, if any.
        deadline: Option<std::time::Instant>,
        /// The timer that deadline belongs to.
        timer: Option<Timer>,
    },
    /// Flush what was transmitted and close the connection. Returned from then on.
    Close,
}

/// Why the session cannot continue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The TLS layer could not be set up (implicit TLS). A peer's TLS failure is not an
    /// error: it is answered with an alert and the session closes.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The caller misused the API: a completion with an unknown token or of the wrong
    /// kind.
    #[error("api misuse: {0}")]
    Misuse(&'static str),
}

/// The deadlines a session keeps; [`Output::Idle`] names the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timer {
    /// Waiting for a command line (or an AUTH response): [`ServerConfig::command_timeout`].
    Command,
    /// Waiting for message data: [`ServerConfig::data_timeout`].
    Data,
    /// The TLS handshake: [`ServerConfig::tls_handshake_timeout`].
    Handshake,
    /// A reply held back (failed AUTH, all recipients unknown).
    Delay,
    /// Waiting for the answer to an effect: [`ServerConfig::effect_timeout`] or
    /// [`ServerConfig::checks_timeout`].
    Effect,
}
