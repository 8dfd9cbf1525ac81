//! The SMTP server session machine: one machine for incoming delivery (port 25) and for
//! authenticated submission (587, 465).
//!
//! It follows the crate's driving contract (see the crate docs). Everything the session
//! needs from the outside world is an [`Effect`] with a [`Token`]: the connection policy,
//! password and credential checks, sender and recipient decisions, and storing the message.
//! The session only sends `250` after DATA once the store effect has completed
//! successfully: the [`Spooled`] fact can only be made from that completion.
//!
//! TLS (STARTTLS and implicit TLS) happens inside the machine through [`crate::tls`], so a
//! driver only moves bytes.

pub mod checks;
pub mod outcome;
#[cfg(test)]
mod tests;

use checks::CheckSet;
pub use checks::{IncomingChecks, Verdicts};
pub use outcome::{
    is_unknown_recipients_only, partial_failure_dsn, should_send_dsn, transaction_failed_reply,
    DsnFacts, FailureCause, RecipientFailure, StoreOutcome,
};

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use crate::message;
use crate::rng::Rng;
use crate::sasl::{CredentialKind, Mechanism, ServerAuth, ServerStep, StoredCredentials};
use crate::smtp::{
    split_line, Address, Body, Command, DataEnd, DataReader, Enhanced, ForwardPath, Hold, Host,
    LineResult, MailParams, RcptParams, Reply, ReversePath, MAX_COMMAND_LINE,
};
use crate::time::{Now, UnixTime};
use crate::timer::TimerTable;
use crate::tls::{TlsError, TlsInfo, TlsLayer};
use crate::Token;

/// How the server session behaves; validated when built, shared by all sessions of a
/// listener.
#[derive(Clone)]
pub struct ServerConfig {
    /// Our host name, in the greeting, EHLO reply and Received header.
    pub hostname: String,
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
}

impl ServerConfig {
    /// Defaults for a listener with the given host name.
    pub fn new(hostname: impl Into<String>) -> ServerConfig {
        ServerConfig {
            hostname: hostname.into(),
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
            future_release_max: Duration::from_secs(60 * 24 * 3600),
            unknown_recipient_delay: Duration::from_secs(5),
            seed: 0,
            checks: None,
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
    pub message: Vec<u8>,
    /// REQUIRETLS (`Some(true)`), `TLS-Required: No` (`Some(false)`), or neither.
    pub requiretls: Option<bool>,
    /// FUTURERELEASE: do not deliver before this time.
    pub hold_until: Option<UnixTime>,
    /// The From header address (submission).
    pub from_header: Option<String>,
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
    /// A message was accepted with 250.
    Accepted {
        /// Size in octets (with our headers).
        size: usize,
        /// Number of recipients.
        recipients: usize,
    },
    /// The session ends.
    Closing(String),
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
        /// The earliest timer, if any.
        deadline: Option<std::time::Instant>,
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

/// Timers of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Waiting for a command line.
    Command,
    /// Waiting for message data.
    Data,
    /// The TLS handshake.
    Handshake,
    /// A reply held back (failed AUTH, unknown recipients).
    Delay,
}

/// Proof that a transaction was stored durably: only made from a
/// [`Completion::Stored`] with [`StoreOutcome::Delivered`] or [`StoreOutcome::Partial`], and
/// required to send the 250 after DATA.
struct Spooled(());

/// A reply held back until [`Timer::Delay`] expires.
enum Delayed {
    /// A failed AUTH; `close` ends the session after it.
    Auth { reply: Reply, close: bool },
    /// A failed transaction (all recipients unknown): an error reply.
    Error(Reply),
}

/// The transaction being built: MAIL given, recipients collected.
#[derive(Debug)]
struct Txn {
    mail_from: ReversePath,
    params: MailParams,
    recipients: Vec<(ForwardPath, RcptParams)>,
    hold_until: Option<UnixTime>,
    /// Results of the checks made at MAIL FROM.
    verdicts: Verdicts,
}

/// Reading the message of a DATA command.
struct DataPhase {
    reader: DataReader,
    msg: Vec<u8>,
}

/// Reading the bytes of a BDAT chunk.
struct BdatPhase {
    remaining: u64,
    last: bool,
    /// Set when the chunk is read only to be discarded, with the reply to send after it.
    discard: Option<Reply>,
}

/// An AUTH exchange waiting for the client's next line.
struct AuthPhase {
    auth: ServerAuth,
    mechanism: Mechanism,
    /// The server-final data was sent; an empty response completes the exchange.
    final_sent: Option<String>,
}

/// What the session reads next.
enum Phase {
    /// Command lines.
    Command,
    /// DATA content.
    Data(DataPhase),
    /// BDAT chunk content.
    Bdat(BdatPhase),
    /// An AUTH response line.
    Auth(AuthPhase),
    /// Nothing more: the session is over.
    Closed,
}

/// What a pending effect's answer continues.
enum Pending {
    Connection,
    Sender {
        txn: Box<Txn>,
    },
    Recipient {
        path: ForwardPath,
        params: RcptParams,
    },
    Password {
        auth: AuthPhase,
        username: String,
    },
    Credentials {
        auth: AuthPhase,
        username: String,
    },
    FromHeader {
        txn: Box<Transaction>,
    },
    Store {
        size: usize,
        recipients: usize,
    },
    Checks {
        set: CheckSet,
        after: AfterChecks,
    },
}

/// What follows when a set of checks is done.
enum AfterChecks {
    /// The checks at MAIL FROM.
    Mail { txn: Box<Txn> },
    /// The checks after DATA; `dmarc` is false until the DMARC round ran.
    Data {
        t: Box<Transaction>,
        verdicts: Box<Verdicts>,
        dmarc: bool,
    },
}

/// One SMTP server session.
pub struct ServerSession {
    config: Arc<ServerConfig>,
    peer: Peer,
    rng: Rng,
    phase: Phase,
    timers: TimerTable<Timer>,
    tls: Option<TlsLayer>,
    tls_announced: bool,
    plain_in: Vec<u8>,
    out_raw: Vec<u8>,
    out_plain: Vec<u8>,
    outputs: std::collections::VecDeque<Output>,
    next_token: u64,
    pending: Option<(Token, Pending)>,
    delayed: Option<Delayed>,
    ehlo: Option<String>,
    ehlo_host: Option<Host>,
    esmtp: bool,
    account: Option<String>,
    /// The account an AUTH exchange in progress resolved to.
    auth_account: Option<String>,
    txn: Option<Txn>,
    /// Message collected by BDAT chunks so far.
    bdat_msg: Option<Vec<u8>>,
    commands: u64,
    errors: u32,
    delivered: u32,
    auth_failures: u32,
    shutting_down: bool,
    close_after_flush: bool,
    closed: bool,
    /// More input followed the command line being handled (in the same read).
    input_follows: bool,
    /// The TLS layer made by an accepted STARTTLS, started once its 220 is out.
    starting_tls: Option<TlsLayer>,
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("peer", &self.peer)
            .field("ehlo", &self.ehlo)
            .field("account", &self.account)
            .finish()
    }
}

/// Largest amount of decrypted input buffered while the session waits for an effect.
const MAX_PLAIN_BUFFER: usize = 1 << 20;

impl ServerSession {
    /// A new session for a connection from `peer`. The connection policy is asked first
    /// ([`Effect::CheckConnection`]); the greeting follows its acceptance.
    pub fn new(
        config: Arc<ServerConfig>,
        peer: Peer,
        now: Now,
    ) -> Result<ServerSession, SessionError> {
        let mut seed = Rng::new(config.seed ^ peer.cid.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let rng = seed.child();
        let tls = match (&config.tls, config.implicit_tls) {
            (Some(tc), true) => Some(TlsLayer::server(Arc::clone(tc))?),
            (None, true) => return Err(SessionError::Misuse("implicit TLS without TLS config")),
            _ => None,
        };
        let mut s = ServerSession {
            config,
            peer,
            rng,
            phase: Phase::Command,
            timers: TimerTable::default(),
            tls,
            tls_announced: false,
            plain_in: Vec::new(),
            out_raw: Vec::new(),
            out_plain: Vec::new(),
            outputs: Default::default(),
            next_token: 0,
            pending: None,
            delayed: None,
            ehlo: None,
            ehlo_host: None,
            esmtp: false,
            account: None,
            auth_account: None,
            txn: None,
            bdat_msg: None,
            commands: 0,
            errors: 0,
            delivered: 0,
            auth_failures: 0,
            shutting_down: false,
            close_after_flush: false,
            closed: false,
            input_follows: false,
            starting_tls: None,
        };
        if s.tls.is_some() {
            s.timers
                .set(Timer::Handshake, now.mono + s.config.tls_handshake_timeout);
        }
        s.effect(
            Pending::Connection,
            Effect::CheckConnection {
                ip: peer.ip,
                cid: peer.cid,
                submission: s.config.submission,
            },
        );
        Ok(s)
    }

    /// Whether TLS is active (implicit, or after STARTTLS).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The authenticated account, if any.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// Takes one input. For [`Input::Received`], returns how many bytes were consumed; the
    /// caller keeps the rest and offers it again (with more) after the next input.
    pub fn handle(&mut self, now: Now, input: Input<'_>) -> Result<usize, SessionError> {
        if self.closed {
            return Ok(match input {
                Input::Received(b) => b.len(),
                _ => 0,
            });
        }
        let consumed = match input {
            Input::Received(bytes) => self.handle_received(now, bytes)?,
            Input::Completed(token, completion) => {
                self.handle_completion(now, token, completion)?;
                self.resume(now)?;
                0
            }
            Input::Timeout => {
                self.handle_timeout(now);
                self.resume(now)?;
                0
            }
            Input::PeerClosed => {
                // A transaction in progress is dropped: nothing was acknowledged.
                self.finish("peer closed connection");
                0
            }
            Input::Overflow => {
                // A transaction in progress is dropped: nothing was acknowledged.
                self.reply(Reply::new(
                    421,
                    Some(Enhanced::new(4, 7, 0)),
                    "too much input ahead of our replies, closing",
                ));
                self.finish("input overflow");
                0
            }
            Input::Shutdown => {
                self.shutting_down = true;
                if matches!(self.phase, Phase::Command)
                    && self.pending.is_none()
                    && self.txn.is_none()
                {
                    self.reply(Reply::new(
                        421,
                        Some(Enhanced::new(4, 3, 2)),
                        "shutting down",
                    ));
                    self.finish("shutting down");
                }
                0
            }
        };
        Ok(consumed)
    }

    /// The next output; call until it returns `Idle` (or `Close`) after every `handle`.
    pub fn poll(&mut self, _now: Now, tx: &mut Vec<u8>) -> Output {
        if let Some(o) = self.outputs.pop_front() {
            return o;
        }
        let before = tx.len();
        tx.append(&mut self.out_raw);
        if let Some(tls) = &mut self.tls {
            if !self.out_plain.is_empty() {
                tls.write_plain(&self.out_plain);
                self.out_plain.clear();
            }
            if self.closed && self.close_after_flush {
                tls.close();
                self.close_after_flush = false;
            }
            tls.take_ciphertext(tx);
        } else {
            tx.append(&mut self.out_plain);
        }
        if tx.len() > before {
            return Output::Transmit;
        }
        if self.closed {
            return Output::Close;
        }
        Output::Idle {
            deadline: self.timers.next_timeout(),
        }
    }

    fn next_token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn effect(&mut self, pending: Pending, effect: Effect) {
        let t = self.next_token();
        self.pending = Some((t, pending));
        self.timers.stop(Timer::Command);
        self.timers.stop(Timer::Data);
        self.outputs.push_back(Output::Effect(t, effect));
    }

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    fn reply(&mut self, r: Reply) {
        r.render(&mut self.out_plain);
        self.outputs.push_back(Output::Event(Event::Reply(r.code)));
    }

    /// A failed MAIL/RCPT/DATA or unknown command: counted toward the error limit.
    fn reply_error(&mut self, r: Reply) {
        self.reply(r);
        self.errors += 1;
        if self.errors > self.config.max_errors && self.delivered == 0 {
            self.reply(Reply::new(
                550,
                Some(Enhanced::new(5, 1, 0)),
                "too many failures",
            ));
            self.finish("too many failures");
        }
    }

    fn finish(&mut self, why: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.close_after_flush = true;
        self.phase = Phase::Closed;
        self.timers.clear();
        self.pending = None;
        self.event(Event::Closing(why.to_string()));
    }

    fn is_blocked(&self) -> bool {
        self.pending.is_some() || self.delayed.is_some() || self.closed
    }

    fn handle_received(&mut self, now: Now, bytes: &[u8]) -> Result<usize, SessionError> {
        if bytes.is_empty() {
            return Ok(0);
        }
        if self.tls.is_none() {
            if self.is_blocked() {
                return Ok(0);
            }
            self.touch_timer(now);
            return Ok(self.process(now, bytes));
        }
        // TLS: rustls takes the ciphertext; plaintext is buffered here.
        if self.plain_in.len() > MAX_PLAIN_BUFFER {
            return Ok(0);
        }
        let mut plain = std::mem::take(&mut self.plain_in);
        let fed = match self.tls.as_mut() {
            Some(tls) => tls.feed(bytes, &mut plain),
            None => Ok(0),
        };
        self.plain_in = plain;
        let n = match fed {
            Ok(n) => n,
            Err(e) => {
                // The peer broke TLS: rustls queued an alert saying why, which goes out
                // before the close (the close is the session's, not an `Err`).
                self.finish(&format!("tls error: {e}"));
                return Ok(bytes.len());
            }
        };
        self.check_handshake(now);
        self.touch_timer(now);
        self.resume(now)?;
        Ok(n)
    }

    fn check_handshake(&mut self, _now: Now) {
        if self.tls_announced {
            return;
        }
        let info = match &self.tls {
            Some(t) if !t.is_handshaking() => t.info(),
            _ => return,
        };
        self.tls_announced = true;
        self.timers.stop(Timer::Handshake);
        if let Some(info) = info {
            self.event(Event::TlsEstablished(info));
        }
    }

    fn touch_timer(&mut self, now: Now) {
        if self.is_blocked() {
            return;
        }
        match self.phase {
            Phase::Data(_) | Phase::Bdat(_) => self
                .timers
                .set(Timer::Data, now.mono + self.config.data_timeout),
            Phase::Command | Phase::Auth(_) => self
                .timers
                .set(Timer::Command, now.mono + self.config.command_timeout),
            Phase::Closed => {}
        }
    }

    /// Processes buffered plaintext (TLS) after something unblocked the session.
    fn resume(&mut self, now: Now) -> Result<(), SessionError> {
        if self.tls.is_some() && !self.plain_in.is_empty() && !self.is_blocked() {
            let plain = std::mem::take(&mut self.plain_in);
            let used = self.process(now, &plain);
            let mut rest = plain;
            rest.drain(..used.min(rest.len()));
            // Bytes that arrived while processing stay after the leftover.
            rest.append(&mut self.plain_in);
            self.plain_in = rest;
        }
        if !self.is_blocked() {
            self.touch_timer(now);
        }
        Ok(())
    }

    /// Processes plaintext protocol bytes; returns how many were consumed.
    fn process(&mut self, now: Now, data: &[u8]) -> usize {
        let mut pos = 0;
        while pos < data.len() && !self.is_blocked() {
            let rest = &data[pos..];
            match &mut self.phase {
                Phase::Closed => return data.len(),
                Phase::Data(dp) => {
                    let (n, end) = dp.reader.feed(rest, &mut dp.msg);
                    pos += n;
                    match end {
                        Some(end) => self.data_end(now, end),
                        None => break,
                    }
                }
                Phase::Bdat(bp) => {
                    let take = usize::try_from(bp.remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    if bp.discard.is_none() {
                        if let Some(msg) = self.bdat_msg.as_mut() {
                            if (msg.len() + take) as u64 <= self.config.max_message_size {
                                msg.extend_from_slice(&rest[..take]);
                            } else {
                                bp.discard = Some(Reply::new(
                                    552,
                                    Some(Enhanced::new(5, 3, 4)),
                                    "message too large",
                                ));
                            }
                        }
                    }
                    bp.remaining -= take as u64;
                    pos += take;
                    if bp.remaining == 0 {
                        self.bdat_end(now);
                    } else {
                        break;
                    }
                }
                Phase::Command | Phase::Auth(_) => match split_line(rest, MAX_COMMAND_LINE) {
                    LineResult::Line(line, n) => {
                        pos += n;
                        self.input_follows = pos < data.len();
                        let starttls = self.line(now, line);
                        if starttls {
                            self.start_tls(now);
                            return pos;
                        }
                    }
                    LineResult::Partial => break,
                    LineResult::TooLong => {
                        self.reply(Reply::new(
                            500,
                            Some(Enhanced::new(5, 5, 2)),
                            "line too long, smtp max is 512 and we allow 4096",
                        ));
                        self.finish("line too long");
                        return data.len();
                    }
                },
            }
        }
        pos
    }

    fn start_tls(&mut self, now: Now) {
        let Some(t) = self.starting_tls.take() else {
            return;
        };
        // The 220 goes out in plaintext, everything after it through TLS.
        self.out_raw.append(&mut self.out_plain);
        self.tls = Some(t);
        self.timers.set(
            Timer::Handshake,
            now.mono + self.config.tls_handshake_timeout,
        );
        // RFC 3207 4.2: forget everything learned before TLS.
        self.ehlo = None;
        self.ehlo_host = None;
        self.esmtp = false;
        self.txn = None;
        self.bdat_msg = None;
    }

    fn handle_timeout(&mut self, now: Now) {
        while let Some(t) = self.timers.expired(now.mono) {
            match t {
                Timer::Delay => match self.delayed.take() {
                    Some(Delayed::Auth { reply, close }) => {
                        self.reply(reply);
                        if close {
                            self.finish("too many authentication failures");
                        }
                    }
                    Some(Delayed::Error(r)) => self.reply_error(r),
                    None => {}
                },
                Timer::Command | Timer::Data | Timer::Handshake => {
                    if self.tls_announced || t != Timer::Handshake {
                        self.reply(Reply::new(
                            421,
                            Some(Enhanced::new(4, 4, 2)),
                            "timeout, closing",
                        ));
                    }
                    self.finish("timeout");
                }
            }
        }
    }

    // ---- Commands ----

    /// Handles one line; returns true when TLS must start after it.
    fn line(&mut self, now: Now, line: &[u8]) -> bool {
        if let Phase::Auth(_) = self.phase {
            let Phase::Auth(ap) = std::mem::replace(&mut self.phase, Phase::Command) else {
                return false;
            };
            self.auth_response(now, ap, line);
            return false;
        }
        self.commands += 1;
        let cmd = match Command::parse(line) {
            Ok(c) => c,
            Err(e) => {
                let r = e.reply();
                if self.commands == 1 && r.code == 500 {
                    // Not SMTP at all (e.g. HTTP): say so and hang up.
                    self.reply(Reply::new(
                        500,
                        Some(Enhanced::new(5, 5, 2)),
                        "please try again speaking smtp",
                    ));
                    self.finish("non-smtp first command");
                } else {
                    self.reply_error(r);
                }
                return false;
            }
        };
        self.event(Event::Command(cmd.verb().to_string()));
        if self.shutting_down && !matches!(cmd, Command::Quit) {
            self.reply(Reply::new(
                421,
                Some(Enhanced::new(4, 3, 2)),
                "shutting down",
            ));
            self.finish("shutting down");
            return false;
        }
        match cmd {
            Command::Ehlo(host) => self.cmd_hello(now, host, true),
            Command::Helo(host) => self.cmd_hello(now, host, false),
            Command::StartTls => return self.cmd_starttls(),
            Command::Auth {
                mechanism,
                initial_response,
            } => self.cmd_auth(now, &mechanism, initial_response.as_deref()),
            Command::Mail(path, params) => self.cmd_mail(now, path, params),
            Command::Rcpt(path, params) => self.cmd_rcpt(path, params),
            Command::Data => self.cmd_data(),
            Command::Bdat { size, last } => self.cmd_bdat(now, size, last),
            Command::Rset => {
                self.txn = None;
                self.bdat_msg = None;
                self.reply(Reply::new(250, Some(Enhanced::new(2, 0, 0)), "all clear"));
            }
            Command::Vrfy(_) => self.reply(Reply::new(
                252,
                Some(Enhanced::new(2, 7, 0)),
                "no verify but will try delivery",
            )),
            Command::Expn(_) => self.reply(Reply::new(
                252,
                Some(Enhanced::new(2, 7, 0)),
                "no expand but will try delivery",
            )),
            Command::Help(_) => self.reply(Reply::new(
                214,
                Some(Enhanced::new(2, 0, 0)),
                "see rfc 5321 (smtp)",
            )),
            Command::Noop(_) => {
                self.reply(Reply::new(250, Some(Enhanced::new(2, 0, 0)), "alrighty"))
            }
            Command::Quit => {
                self.reply(Reply::new(
                    221,
                    Some(Enhanced::new(2, 0, 0)),
                    "okay thanks bye",
                ));
                self.finish("quit");
            }
        }
        false
    }

    fn cmd_hello(&mut self, now: Now, host: Host, ehlo: bool) {
        self.txn = None;
        self.bdat_msg = None;
        self.ehlo = Some(host.to_string());
        self.ehlo_host = Some(host);
        self.esmtp = ehlo;
        if !ehlo {
            let r = Reply::new(250, None, self.config.hostname.clone());
            self.reply(r);
            return;
        }
        let c = &self.config;
        let mut lines = vec![
            c.hostname.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", c.max_message_size),
        ];
        let tls_active = self.tls.is_some();
        if c.tls.is_some() && !tls_active {
            lines.push("STARTTLS".into());
        }
        if tls_active {
            lines.push("REQUIRETLS".into());
        }
        if c.submission && self.account.is_none() && (tls_active || !c.require_tls_for_auth) {
            let mut mechs: Vec<&Mechanism> = c
                .auth_mechanisms
                .iter()
                .filter(|m| tls_active || !m.needs_channel_binding())
                .collect();
            mechs.sort_by_key(|m| std::cmp::Reverse(m.strength()));
            if !mechs.is_empty() {
                let names: Vec<&str> = mechs.iter().map(|m| m.name()).collect();
                lines.push(format!("AUTH {}", names.join(" ")));
            }
        }
        if c.submission {
            let max = c.future_release_max;
            lines.push(format!(
                "FUTURERELEASE {} {}",
                max.as_secs(),
                now.wall.add(max).rfc3339()
            ));
        }
        lines.push(format!("LIMITS RCPTMAX={}", c.max_recipients));
        lines.push("DSN".into());
        lines.push("8BITMIME".into());
        lines.push("SMTPUTF8".into());
        lines.push("ENHANCEDSTATUSCODES".into());
        lines.push("CHUNKING".into());
        let r = Reply {
            code: 250,
            enhanced: None,
            lines,
        };
        self.reply(r);
    }

    fn cmd_starttls(&mut self) -> bool {
        if self.tls.is_some() {
            self.reply_error(Reply::new(
                503,
                Some(Enhanced::new(5, 5, 1)),
                "already speaking tls",
            ));
            return false;
        }
        let Some(tc) = self.config.tls.clone() else {
            self.reply_error(Reply::new(
                502,
                Some(Enhanced::new(5, 5, 1)),
                "STARTTLS not available",
            ));
            return false;
        };
        if self.account.is_some() {
            self.reply_error(Reply::new(
                503,
                Some(Enhanced::new(5, 5, 1)),
                "cannot starttls after authentication",
            ));
            return false;
        }
        if self.input_follows {
            // RFC 3207 5: nothing may follow STARTTLS before the handshake; bytes that did
            // would be taken as said inside TLS (command injection). Say why, then close.
            self.reply(Reply::new(
                500,
                Some(Enhanced::new(5, 5, 0)),
                "data pipelined after STARTTLS, closing",
            ));
            self.finish("data pipelined after STARTTLS");
            return false;
        }
        match TlsLayer::server(tc) {
            Ok(t) => self.starting_tls = Some(t),
            Err(_) => {
                self.reply_error(Reply::new(
                    454,
                    Some(Enhanced::new(4, 7, 0)),
                    "TLS not available due to temporary reason",
                ));
                return false;
            }
        }
        self.reply(Reply::new(220, Some(Enhanced::new(2, 0, 0)), "go!"));
        true
    }

    fn cmd_mail(&mut self, now: Now, path: ReversePath, params: MailParams) {
        if self.ehlo.is_none() {
            return self.reply_error(seq_error("no ehlo/helo yet"));
        }
        if self.config.require_tls_for_delivery && self.tls.is_none() {
            return self.reply_error(Reply::new(
                530,
                Some(Enhanced::new(5, 7, 0)),
                "STARTTLS required for mail delivery",
            ));
        }
        if self.config.submission && self.account.is_none() {
            return self.reply_error(Reply::new(
                530,
                Some(Enhanced::new(5, 7, 0)),
                "authentication required",
            ));
        }
        if self.txn.is_some() {
            return self.reply_error(seq_error("already have MAIL"));
        }
        if let Some(size) = params.size {
            if size > self.config.max_message_size {
                return self.reply_error(Reply::new(
                    552,
                    Some(Enhanced::new(5, 3, 4)),
                    "message too large",
                ));
            }
        }
        if params.requiretls && self.tls.is_none() {
            return self.reply_error(Reply::new(
                530,
                Some(Enhanced::new(5, 7, 10)),
                "REQUIRETLS requires a TLS connection",
            ));
        }
        if let ReversePath::Mailbox(a) = &path {
            if !a.is_ascii() && !params.smtputf8 {
                return self.reply_error(Reply::new(
                    553,
                    Some(Enhanced::new(5, 6, 7)),
                    "non-ascii address requires SMTPUTF8",
                ));
            }
        }
        if let ReversePath::Mailbox(a) = &path {
            if !self.config.submission && !matches!(a.host, Host::Domain(_)) {
                return self.reply_error(Reply::new(
                    550,
                    Some(Enhanced::new(5, 7, 0)),
                    "domain name required",
                ));
            }
        }
        let mut hold_until = None;
        if let Some(hold) = params.hold {
            if !self.config.submission {
                return self.reply_error(Reply::new(
                    555,
                    Some(Enhanced::new(5, 3, 3)),
                    "unrecognized parameter: future release only on submission",
                ));
            }
            let max = now.wall.add(self.config.future_release_max);
            let until = match hold {
                Hold::For(0) => {
                    return self.reply_error(Reply::new(
                        501,
                        Some(Enhanced::new(5, 5, 4)),
                        "HOLDFOR must be at least 1 second",
                    ));
                }
                Hold::For(secs) => UnixTime(
                    now.wall
                        .0
                        .saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)),
                ),
                Hold::Until(t) => t,
            };
            if until <= now.wall {
                return self.reply_error(Reply::new(
                    554,
                    Some(Enhanced::new(5, 5, 4)),
                    "requested future release time is in the past",
                ));
            }
            if until > max {
                return self.reply_error(Reply::new(
                    554,
                    Some(Enhanced::new(5, 5, 4)),
                    "requested future release time is too far in the future",
                ));
            }
            hold_until = Some(until);
        }
        let txn = Txn {
            mail_from: path.clone(),
            params,
            recipients: Vec::new(),
            hold_until,
            verdicts: Verdicts::default(),
        };
        if let (false, Some(c)) = (self.config.submission, self.config.checks.clone()) {
            let ehlo = match self.ehlo_host.as_ref() {
                Some(Host::Domain(d)) => Some(d.ascii.clone()),
                _ => None,
            };
            let mail_from = match &path {
                ReversePath::Mailbox(a) => match &a.host {
                    Host::Domain(d) => Some((a.to_string(), d.ascii.clone())),
                    _ => None,
                },
                ReversePath::Null => None,
            };
            let list = checks::mail_checks(
                &c,
                self.peer.ip,
                ehlo.as_deref(),
                mail_from.as_ref().map(|(a, d)| (a.as_str(), d.as_str())),
                &self.config.hostname,
                now.wall,
            );
            return self.run_checks(
                CheckSet::new(list),
                AfterChecks::Mail { txn: Box::new(txn) },
            );
        }
        self.mail_checked(txn);
    }

    /// MAIL FROM passed the protocol and DNS checks: ask the policy.
    fn mail_checked(&mut self, txn: Txn) {
        let path = txn.mail_from.clone();
        let account = self.account.clone();
        self.effect(
            Pending::Sender { txn: Box::new(txn) },
            Effect::CheckSender {
                account,
                address: path,
                source: SenderSource::MailFrom,
                ip: self.peer.ip,
            },
        );
    }

    fn cmd_rcpt(&mut self, path: ForwardPath, params: RcptParams) {
        let Some(txn) = &self.txn else {
            return self.reply_error(seq_error("missing MAIL FROM"));
        };
        if txn.recipients.len() >= self.config.max_recipients {
            let r = Reply::new(
                452,
                Some(Enhanced::new(4, 5, 3)),
                format!("max of {} recipients reached", self.config.max_recipients),
            );
            return self.reply_error(r);
        }
        let spf_pass = txn
            .verdicts
            .spf
            .as_ref()
            .is_some_and(|r| r.result == crate::spf::SpfStatus::Pass);
        let need_spf = self
            .config
            .checks
            .as_ref()
            .is_some_and(|c| c.multiple_recipients_need_spf_pass);
        if !self.config.submission && need_spf && !spf_pass && !txn.recipients.is_empty() {
            return self.reply_error(Reply::new(
                452,
                Some(Enhanced::new(4, 5, 3)),
                "only one recipient allowed without spf pass",
            ));
        }
        if txn.mail_from == ReversePath::Null && !txn.recipients.is_empty() {
            return self.reply_error(Reply::new(
                452,
                Some(Enhanced::new(4, 5, 3)),
                "only one recipient allowed with null reverse address",
            ));
        }
        if let ForwardPath::Mailbox(a) = &path {
            if !a.is_ascii() && !txn.params.smtputf8 {
                return self.reply_error(Reply::new(
                    553,
                    Some(Enhanced::new(5, 6, 7)),
                    "non-ascii address requires SMTPUTF8",
                ));
            }
            if !self.config.submission && !matches!(a.host, Host::Domain(_)) {
                return self.reply_error(Reply::new(
                    550,
                    Some(Enhanced::new(5, 1, 1)),
                    "not accepting email for ip",
                ));
            }
        }
        let effect = Effect::CheckRecipient {
            account: self.account.clone(),
            mail_from: txn.mail_from.clone(),
            recipient: path.clone(),
            ip: self.peer.ip,
        };
        self.effect(Pending::Recipient { path, params }, effect);
    }

    fn data_allowed(&mut self) -> Result<(), Reply> {
        let Some(txn) = &self.txn else {
            return Err(seq_error("missing MAIL FROM"));
        };
        if txn.recipients.is_empty() {
            return Err(seq_error("missing RCPT TO"));
        }
        Ok(())
    }

    fn cmd_data(&mut self) {
        if let Err(r) = self.data_allowed() {
            return self.reply_error(r);
        }
        if self.bdat_msg.is_some() {
            return self.reply_error(seq_error("DATA not allowed after BDAT"));
        }
        if self.txn.as_ref().and_then(|t| t.params.body) == Some(Body::BinaryMime) {
            return self.reply_error(seq_error("BINARYMIME requires BDAT"));
        }
        self.reply(Reply::new(354, None, "see you at the bare dot"));
        self.phase = Phase::Data(DataPhase {
            reader: DataReader::new(self.config.max_message_size),
            msg: Vec::new(),
        });
    }

    fn cmd_bdat(&mut self, now: Now, size: u64, last: bool) {
        let discard = match self.data_allowed() {
            Err(r) => Some(r),
            Ok(()) => {
                if self.bdat_msg.is_none() {
                    self.bdat_msg = Some(Vec::new());
                }
                None
            }
        };
        if discard.is_some() {
            self.bdat_msg = None;
        }
        self.phase = Phase::Bdat(BdatPhase {
            remaining: size,
            last,
            discard,
        });
        if size == 0 {
            // No chunk bytes follow: the chunk is complete now.
            self.bdat_end(now);
        }
    }
}

fn seq_error(msg: &str) -> Reply {
    Reply::new(503, Some(Enhanced::new(5, 5, 1)), msg)
}

impl ServerSession {
    // ---- Message data ----

    fn data_end(&mut self, now: Now, end: DataEnd) {
        let Phase::Data(dp) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        if end.smuggling {
            self.txn = None;
            self.event(Event::Smuggling);
            return self.reply_error(Reply::new(
                500,
                Some(Enhanced::new(5, 5, 2)),
                "bare carriage return or linefeed next to a dot: refusing possible smtp smuggling",
            ));
        }
        if end.too_large {
            self.txn = None;
            return self.reply_error(Reply::new(
                552,
                Some(Enhanced::new(5, 3, 4)),
                "message too large",
            ));
        }
        self.message_complete(now, dp.msg);
    }

    fn bdat_end(&mut self, now: Now) {
        let Phase::Bdat(bp) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return;
        };
        if let Some(r) = bp.discard {
            self.txn = None;
            self.bdat_msg = None;
            return self.reply_error(r);
        }
        if !bp.last {
            let size = self.bdat_msg.as_ref().map_or(0, Vec::len);
            return self.reply(Reply::new(
                250,
                Some(Enhanced::new(2, 0, 0)),
                format!("chunk received, {size} octets so far"),
            ));
        }
        let msg = self.bdat_msg.take().unwrap_or_default();
        self.message_complete(now, msg);
    }

    /// The message of the transaction is complete: check it, then store it.
    fn message_complete(&mut self, now: Now, msg: Vec<u8>) {
        let Some(txn) = self.txn.take() else {
            return self.reply_error(seq_error("missing MAIL FROM"));
        };
        if let Err(e) = message::check_structure(&msg) {
            let text = match e {
                message::Malformed::NoBody => e.to_string(),
                _ => format!("malformed message: {e}"),
            };
            return self.reply_error(Reply::new(554, Some(Enhanced::new(5, 6, 0)), text));
        }
        let Some(body_at) = message::body_offset(&msg) else {
            // check_structure refuses a message without a separator; kept as a reply.
            return self.reply_error(Reply::new(
                554,
                Some(Enhanced::new(5, 6, 0)),
                "message requires both header and body section",
            ));
        };
        let header = &msg[..body_at];
        if !self.config.submission
            && message::received_count(header) > self.config.max_received_headers
        {
            return self.reply_error(Reply::new(
                550,
                Some(Enhanced::new(5, 4, 6)),
                format!(
                    "loop detected, more than {} Received headers",
                    self.config.max_received_headers
                ),
            ));
        }
        let mut requiretls = if txn.params.requiretls {
            Some(true)
        } else {
            None
        };
        let mut from_header = None;
        let mut prefix = String::new();
        if self.config.submission {
            if message::has_field(header, "Return-Path") {
                return self.reply_error(Reply::new(
                    550,
                    Some(Enhanced::new(5, 6, 0)),
                    "message must not have Return-Path header",
                ));
            }
            let froms = message::from_addresses(header);
            if froms.len() != 1 {
                return self.reply_error(Reply::new(
                    550,
                    Some(Enhanced::new(5, 6, 0)),
                    "message must have exactly one From address",
                ));
            }
            from_header = froms.into_iter().next();
            if requiretls.is_none() {
                // RFC 8689 5: TLS-Required: No, only when given once and exactly so.
                let v: Vec<&[u8]> = message::values(header, "TLS-Required").collect();
                if v.len() == 1 && v[0].eq_ignore_ascii_case(b"no") {
                    requiretls = Some(false);
                }
            }
            if !message::has_field(header, "Message-Id") {
                let r = self.rng.next_u64();
                prefix.push_str(&format!(
                    "Message-Id: <{:016x}.{}@{}>\r\n",
                    r, self.peer.cid, self.config.hostname
                ));
            }
            if !message::has_field(header, "Date") {
                prefix.push_str(&format!("Date: {}\r\n", now.wall.rfc5322()));
            }
        }
        let received = self.received_header(now, &txn);
        let txn_verdicts = txn.verdicts.clone();
        let mut full = Vec::with_capacity(received.len() + prefix.len() + msg.len());
        full.extend_from_slice(received.as_bytes());
        full.extend_from_slice(prefix.as_bytes());
        full.extend_from_slice(&msg);
        let t = Box::new(Transaction {
            cid: self.peer.cid,
            remote_ip: self.peer.ip,
            ehlo: self.ehlo.clone().unwrap_or_default(),
            tls: self.tls.as_ref().and_then(TlsLayer::info),
            account: self.account.clone(),
            mail_from: txn.mail_from,
            params: txn.params,
            recipients: txn.recipients,
            message: full,
            requiretls,
            hold_until: txn.hold_until,
            from_header: from_header.clone(),
            received: now.wall,
            auth: None,
        });
        if let (false, Some(c)) = (self.config.submission, self.config.checks.clone()) {
            let list = checks::data_checks(&c, self.peer.ip, &msg, now.wall);
            let verdicts = Box::new(txn_verdicts);
            return self.run_checks(
                CheckSet::new(list),
                AfterChecks::Data {
                    t,
                    verdicts,
                    dmarc: false,
                },
            );
        }
        match from_header {
            Some(f) => {
                let address = match Address::parse(&f) {
                    Ok(a) => ReversePath::Mailbox(a),
                    Err(_) => {
                        return self.reply_error(Reply::new(
                            550,
                            Some(Enhanced::new(5, 6, 0)),
                            "cannot parse From address",
                        ))
                    }
                };
                let account = self.account.clone();
                self.effect(
                    Pending::FromHeader { txn: t },
                    Effect::CheckSender {
                        account,
                        address,
                        source: SenderSource::FromHeader,
                        ip: self.peer.ip,
                    },
                );
            }
            None => self.store(t),
        }
    }

    fn store(&mut self, t: Box<Transaction>) {
        let (size, recipients) = (t.message.len(), t.recipients.len());
        self.effect(Pending::Store { size, recipients }, Effect::Store(t));
    }

    fn received_header(&self, now: Now, txn: &Txn) -> String {
        let with = match (self.tls.is_some(), self.account.is_some(), self.esmtp) {
            (_, _, false) => "SMTP",
            (true, true, _) => "ESMTPSA",
            (true, false, _) => "ESMTPS",
            (false, true, _) => "ESMTPA",
            (false, false, _) => "ESMTP",
        };
        let ip = match self.peer.ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("IPv6:{v6}"),
        };
        let mut h = format!(
            "Received: from {} ([{}])\r\n\tby {} with {} id {}",
            sanitize(self.ehlo.as_deref().unwrap_or("unknown")),
            ip,
            self.config.hostname,
            with,
            self.peer.cid
        );
        if let Some(info) = self.tls.as_ref().and_then(TlsLayer::info) {
            h.push_str(&format!(
                "\r\n\t(version={} cipher={})",
                info.version, info.cipher
            ));
        }
        if let [(ForwardPath::Mailbox(a), _)] = txn.recipients.as_slice() {
            h.push_str(&format!("\r\n\tfor <{a}>"));
        }
        h.push_str(&format!(";\r\n\t{}\r\n", now.wall.rfc5322()));
        h
    }

    // ---- AUTH ----

    fn cmd_auth(&mut self, now: Now, mechanism: &str, initial: Option<&str>) {
        if !self.config.submission {
            return self.reply_error(seq_error("authentication only allowed on submission ports"));
        }
        if self.account.is_some() {
            return self.reply_error(seq_error("already authenticated"));
        }
        if self.txn.is_some() {
            return self.reply_error(seq_error(
                "authentication not allowed during mail transaction",
            ));
        }
        if self.tls.is_none() && self.config.require_tls_for_auth {
            return self.reply_error(Reply::new(
                538,
                Some(Enhanced::new(5, 7, 11)),
                "authentication requires tls",
            ));
        }
        let mech = match Mechanism::from_name(mechanism) {
            Some(m) if self.config.auth_mechanisms.contains(&m) => m,
            _ => {
                return self.reply_error(Reply::new(
                    504,
                    Some(Enhanced::new(5, 5, 4)),
                    format!("mechanism {mechanism} not supported"),
                ))
            }
        };
        let cb = self.tls.as_ref().and_then(TlsLayer::channel_binding);
        if mech.needs_channel_binding() && cb.is_none() {
            return self.reply_error(Reply::new(
                504,
                Some(Enhanced::new(5, 5, 4)),
                format!("mechanism {mechanism} requires tls"),
            ));
        }
        let initial = match initial {
            None => None,
            Some("=") => Some(Vec::new()),
            Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(v) => Some(v),
                Err(_) => {
                    return self.reply_error(Reply::new(
                        501,
                        Some(Enhanced::new(5, 5, 2)),
                        "invalid base64",
                    ))
                }
            },
        };
        let mut auth = ServerAuth::new(mech, &mut self.rng, &self.config.hostname, cb);
        let step = auth.start(initial.as_deref());
        let ap = AuthPhase {
            auth,
            mechanism: mech,
            final_sent: None,
        };
        self.auth_step(now, ap, step);
    }

    fn auth_response(&mut self, now: Now, mut ap: AuthPhase, line: &[u8]) {
        if line == b"*" {
            return self.reply_error(Reply::new(
                501,
                Some(Enhanced::new(5, 0, 0)),
                "authentication aborted",
            ));
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(line) else {
            return self.reply_error(Reply::new(
                501,
                Some(Enhanced::new(5, 5, 2)),
                "invalid base64",
            ));
        };
        if let Some(account) = ap.final_sent.take() {
            return self.auth_success(account, ap.mechanism);
        }
        let step = ap.auth.respond(&decoded);
        self.auth_step(now, ap, step);
    }

    fn auth_step(&mut self, now: Now, mut ap: AuthPhase, step: ServerStep) {
        match step {
            ServerStep::Challenge(c) => {
                let text = base64::engine::general_purpose::STANDARD.encode(c);
                self.reply(Reply::new(334, None, text));
                self.phase = Phase::Auth(ap);
            }
            ServerStep::CheckPassword { username, password } => {
                let ip = self.peer.ip;
                self.effect(
                    Pending::Password {
                        auth: ap,
                        username: username.clone(),
                    },
                    Effect::CheckPassword {
                        username,
                        password,
                        ip,
                    },
                );
            }
            ServerStep::NeedCredentials { username, kind } => {
                let ip = self.peer.ip;
                self.effect(
                    Pending::Credentials {
                        auth: ap,
                        username: username.clone(),
                    },
                    Effect::LookupCredentials { username, kind, ip },
                );
            }
            ServerStep::Success {
                username,
                final_data,
            } => {
                // The account comes from the completion that led here; see auth_verified.
                let account = self.auth_account.take().unwrap_or(username);
                match final_data {
                    Some(d) => {
                        let text = base64::engine::general_purpose::STANDARD.encode(d);
                        self.reply(Reply::new(334, None, text));
                        ap.final_sent = Some(account);
                        self.phase = Phase::Auth(ap);
                    }
                    None => self.auth_success(account, ap.mechanism),
                }
            }
            ServerStep::Failure(f) => {
                let r = if f.is_malformed() {
                    Reply::new(
                        501,
                        Some(Enhanced::new(5, 5, 2)),
                        format!("malformed authentication: {f}"),
                    )
                } else {
                    Reply::new(535, Some(Enhanced::new(5, 7, 8)), "bad user/pass")
                };
                self.auth_failed(now, None, r);
            }
        }
    }

    fn auth_success(&mut self, account: String, mech: Mechanism) {
        self.event(Event::Authenticated {
            account: account.clone(),
            mechanism: mech.name(),
        });
        self.account = Some(account);
        self.reply(Reply::new(235, Some(Enhanced::new(2, 7, 0)), "nice"));
    }

    fn auth_failed(&mut self, now: Now, username: Option<String>, r: Reply) {
        self.auth_failures += 1;
        self.errors += 1;
        self.event(Event::AuthFailed { username });
        let close = self.auth_failures >= self.config.max_auth_failures;
        let delay = self.config.auth_failure_delay * self.auth_failures;
        let mut replies = r;
        if close {
            let mut lines = replies.lines.clone();
            lines.push("too many authentication failures".into());
            replies = Reply {
                code: replies.code,
                enhanced: replies.enhanced,
                lines,
            };
        }
        if delay.is_zero() {
            self.reply(replies);
            if close {
                self.finish("too many authentication failures");
            }
        } else {
            self.delayed = Some(Delayed::Auth {
                reply: replies,
                close,
            });
            self.timers.stop(Timer::Command);
            self.timers.set(Timer::Delay, now.mono + delay);
        }
    }

    // ---- Completions ----

    fn handle_completion(
        &mut self,
        now: Now,
        token: Token,
        c: Completion,
    ) -> Result<(), SessionError> {
        let Some((t, pending)) = self.pending.take() else {
            return Err(SessionError::Misuse("completion without a pending effect"));
        };
        if t != token {
            self.pending = Some((t, pending));
            return Err(SessionError::Misuse("completion with an unknown token"));
        }
        match (pending, c) {
            (Pending::Connection, Completion::Verdict(v)) => match v {
                Verdict::Accept => {
                    let r = Reply::new(220, None, format!("{} ESMTP rmox", self.config.hostname));
                    self.reply(r);
                }
                Verdict::Reject(r) => {
                    self.reply(r);
                    self.finish("connection refused by policy");
                }
            },
            (Pending::Sender { txn }, Completion::Verdict(v)) => match v {
                Verdict::Accept => {
                    self.txn = Some(*txn);
                    self.reply(Reply::new(
                        250,
                        Some(Enhanced::new(2, 1, 0)),
                        "looking good",
                    ));
                }
                Verdict::Reject(r) => self.reply_error(r),
            },
            (Pending::Recipient { path, params }, Completion::Verdict(v)) => match v {
                Verdict::Accept => {
                    if let Some(txn) = self.txn.as_mut() {
                        txn.recipients.push((path, params));
                    }
                    self.reply(Reply::new(
                        250,
                        Some(Enhanced::new(2, 1, 5)),
                        "now on the list",
                    ));
                }
                Verdict::Reject(r) => self.reply_error(r),
            },
            (Pending::FromHeader { txn }, Completion::Verdict(v)) => match v {
                Verdict::Accept => self.store(txn),
                Verdict::Reject(r) => self.reply_error(r),
            },
            (Pending::Store { size, recipients }, Completion::Stored(outcome)) => {
                self.stored(now, outcome, size, recipients)
            }
            (Pending::Checks { mut set, after }, Completion::Dns(results)) => {
                set.answer(results);
                self.run_checks(set, after);
            }
            (Pending::Password { auth, username }, Completion::Password(p)) => {
                let mut auth = auth;
                match p {
                    PasswordCheck::Valid { account } => {
                        self.auth_account = Some(account);
                        let step = auth.auth.password_checked(true);
                        self.auth_step(now, auth, step);
                    }
                    PasswordCheck::Invalid => {
                        let r = Reply::new(535, Some(Enhanced::new(5, 7, 8)), "bad user/pass");
                        self.auth_failed(now, Some(username), r);
                    }
                    PasswordCheck::Disabled(msg) => {
                        let r = Reply::new(
                            535,
                            Some(Enhanced::new(5, 7, 8)),
                            format!("login disabled: {msg}"),
                        );
                        self.auth_failed(now, Some(username), r);
                    }
                    PasswordCheck::RateLimited => self.auth_rate_limited(),
                }
            }
            (Pending::Credentials { auth, username }, Completion::Credentials(a)) => {
                let mut auth = auth;
                match a {
                    CredentialsAnswer::Found {
                        account,
                        credentials,
                    } => {
                        self.auth_account = Some(account);
                        let step = auth.auth.credentials(Some(credentials));
                        self.auth_step(now, auth, step);
                    }
                    CredentialsAnswer::Unknown => {
                        let step = auth.auth.credentials(None);
                        self.auth_step(now, auth, step);
                    }
                    CredentialsAnswer::Disabled(msg) => {
                        let r = Reply::new(
                            535,
                            Some(Enhanced::new(5, 7, 8)),
                            format!("login disabled: {msg}"),
                        );
                        self.auth_failed(now, Some(username), r);
                    }
                    CredentialsAnswer::RateLimited => self.auth_rate_limited(),
                }
            }
            _ => return Err(SessionError::Misuse("completion of the wrong kind")),
        }
        Ok(())
    }

    fn auth_rate_limited(&mut self) {
        self.reply(Reply::new(
            421,
            Some(Enhanced::new(4, 7, 0)),
            "too many auth failures",
        ));
        self.finish("auth rate limited");
    }

    fn stored(&mut self, now: Now, outcome: StoreOutcome, size: usize, recipients: usize) {
        match outcome {
            StoreOutcome::Delivered => self.accepted(Spooled(()), size, recipients),
            StoreOutcome::Partial { failed } => {
                self.recipients_failed(&failed);
                let delivered = recipients.saturating_sub(failed.len());
                self.accepted(Spooled(()), size, delivered);
            }
            StoreOutcome::Failed(failed) => {
                self.recipients_failed(&failed);
                let r = transaction_failed_reply(&failed);
                let delay = self.config.unknown_recipient_delay;
                if is_unknown_recipients_only(&failed) && !delay.is_zero() {
                    // Slows down address guessing; the session waits, input is buffered.
                    self.delayed = Some(Delayed::Error(r));
                    self.timers.stop(Timer::Command);
                    self.timers.set(Timer::Delay, now.mono + delay);
                } else {
                    self.reply_error(r);
                }
            }
            StoreOutcome::Refused(r) => self.reply_error(r),
        }
    }

    fn recipients_failed(&mut self, failed: &[RecipientFailure]) {
        for f in failed {
            self.event(Event::RecipientFailed {
                recipient: f.recipient.clone(),
                code: f.code,
                enhanced: f.enhanced,
                reason: f.reason.clone(),
            });
        }
    }

    fn accepted(&mut self, _proof: Spooled, size: usize, recipients: usize) {
        self.delivered += 1;
        self.event(Event::Accepted { size, recipients });
        self.reply(Reply::new(250, Some(Enhanced::new(2, 0, 0)), "it is done"));
    }
}

/// Keeps a peer-supplied name safe inside a header comment.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control()) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl ServerSession {
    // ---- DNS checks ----

    /// Advances a set of checks: asks its next batch of questions, or finishes.
    fn run_checks(&mut self, mut set: CheckSet, after: AfterChecks) {
        match set.step() {
            Some(lookups) => self.effect(Pending::Checks { set, after }, Effect::Dns(lookups)),
            None => self.checks_done(set, after),
        }
    }

    fn checks_done(&mut self, set: CheckSet, after: AfterChecks) {
        match after {
            AfterChecks::Mail { mut txn } => {
                set.collect(&mut txn.verdicts);
                let v = &txn.verdicts;
                if v.ehlo == Some(checks::HostStatus::NotFound) {
                    return self.reply_error(Reply::new(
                        550,
                        Some(Enhanced::new(5, 5, 0)),
                        "your ehlo domain does not resolve to an IP address",
                    ));
                }
                match v.mail_domain {
                    Some(checks::MailDomainStatus::NullMx)
                    | Some(checks::MailDomainStatus::NotFound) => {
                        return self.reply_error(Reply::new(
                            550,
                            Some(Enhanced::new(5, 7, 27)),
                            "mailfrom domain not configured for mail",
                        ));
                    }
                    Some(checks::MailDomainStatus::TempFail) => {
                        return self.reply_error(Reply::new(
                            451,
                            Some(Enhanced::new(4, 4, 0)),
                            "cannot verify mx records for mailfrom domain",
                        ));
                    }
                    _ => {}
                }
                self.mail_checked(*txn);
            }
            AfterChecks::Data {
                mut t,
                mut verdicts,
                dmarc,
            } => {
                set.collect(&mut verdicts);
                let want_dmarc = self.config.checks.as_ref().is_some_and(|c| c.dmarc);
                if !dmarc && want_dmarc {
                    let header_end = message::body_offset(&t.message).unwrap_or(t.message.len());
                    let from = message::from_addresses(&t.message[..header_end])
                        .first()
                        .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()));
                    if let Some(d) = from {
                        let sample = (self.rng.below(100)) as u8;
                        let check = checks::dmarc_check(&d, &verdicts, sample);
                        verdicts.from_domain = Some(d);
                        return self.run_checks(
                            CheckSet::new(vec![check]),
                            AfterChecks::Data {
                                t,
                                verdicts,
                                dmarc: true,
                            },
                        );
                    }
                }
                let headers = checks::auth_headers(&self.config.hostname, self.peer.ip, &verdicts);
                let mut msg = Vec::with_capacity(headers.len() + t.message.len());
                msg.extend_from_slice(headers.as_bytes());
                msg.extend_from_slice(&t.message);
                t.message = msg;
                t.auth = Some(verdicts);
                self.store(t);
            }
        }
    }
}
