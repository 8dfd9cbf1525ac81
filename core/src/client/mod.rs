//! The SMTP client session machine: delivering to another server (an MX host, a smarthost,
//! a submission service).
//!
//! It follows the crate's driving contract (see the crate docs). The driver connects, then
//! only moves bytes: [`Input::Received`] with what the server sent, [`Input::PeerClosed`] on
//! EOF, [`Input::Timeout`] when the deadline from [`Output::Idle`] passed; the machine
//! appends what to send to the caller's buffer. The session greets, says EHLO (HELO when
//! EHLO is refused), does STARTTLS according to [`TlsMode`] with the rustls client inside
//! the machine (EHLO again afterwards), authenticates when configured, and then emits
//! [`Event::Ready`]. Transactions are handed in one at a time with [`Input::Deliver`]; each
//! ends with [`Event::Done`] carrying a result per recipient and for the message. After
//! `Done` the next [`Input::Deliver`] may follow on the same connection; [`Input::Quit`] ends
//! the session politely. A delivery handed in before `Ready` starts as soon as the session
//! is ready.
//!
//! A failure that ends the connection (greeting refused, EOF, timeout, TLS failure) is
//! reported as [`Event::Failed`] (its [`ErrorKind`] says whose fault: an error reply, a
//! server that broke the protocol or lacks what the delivery needs, a transport failure, or
//! API misuse), preceded by a [`Event::Done`] for a transaction in flight
//! (its unanswered recipients carry the error); then [`Output::Close`]. From then on
//! `handle` returns that error.

mod error;
#[cfg(test)]
mod tests;

pub use error::{ClientError, ErrorKind, PeerIncompatible, PeerMisbehaved, Stage, Transport};

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;

use crate::rng::Rng;
use crate::sasl::{ClientAuth, Mechanism};
use crate::smtp::{
    dot_stuff, Body, Command, Enhanced, ForwardPath, Host, MailParams, RcptParams, Reply,
    ReplyParser, ReversePath,
};
use crate::time::Now;
use crate::timer::TimerTable;
use crate::tls::{ClientVerify, TlsFailure, TlsInfo, TlsLayer, Tlsa, VerifyReport};

/// Whether and how STARTTLS is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Never use TLS, even when offered.
    Skip,
    /// Use STARTTLS when offered; go on in plaintext when not.
    Opportunistic,
    /// Always attempt STARTTLS, even when not announced; any failure is a permanent error.
    RequiredStartTls,
}

/// How the server's certificate is checked once STARTTLS is used.
#[derive(Clone)]
pub enum Verify {
    /// PKIX: this rustls config (its roots) checks the chain and `remote_hostname`.
    Pkix(Arc<rustls::ClientConfig>),
    /// Verification errors are ignored: any certificate is accepted, nothing reported
    /// (`TLS-Required: No` or MTA-STS `testing` when no roots are configured to verify
    /// with; with roots, [`Verify::PkixReport`]).
    IgnoreErrors,
    /// DANE: the certificate must match one of these TLSA records (usage 2 or 3), checked
    /// inside the handshake.
    Dane(DaneCheck),
    /// No verification (opportunistic TLS accepts any certificate, RFC 7435).
    None,
    /// PKIX from these roots (path and `remote_hostname`), but a failure does not stop the
    /// session: it is reported ([`Event::VerifyFailed`]) and TLS is used anyway (MTA-STS
    /// `testing`, `TLS-Required: No` with roots configured).
    PkixReport(Arc<rustls::RootCertStore>),
    /// DANE as [`Verify::Dane`], a failure reported as for [`Verify::PkixReport`].
    DaneReport(DaneCheck),
}

/// DANE verification of one host (RFC 7672): its records and the names to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaneCheck {
    /// The usable TLSA records (usage 2 or 3).
    pub records: Vec<Tlsa>,
    /// The SNI to send: the TLSA base domain (RFC 7672 8.1), which may be the MX host's
    /// CNAME target. `None`: [`ClientConfig::remote_hostname`].
    pub sni: Option<String>,
    /// The reference identifiers a DANE-TA chain may match besides the SNI: the TLSA base
    /// domain and the MX host name before CNAME expansion (RFC 7672 3.2.2). DANE-EE checks
    /// no name.
    pub names: Vec<String>,
}

impl DaneCheck {
    /// These records, the SNI and the only name the remote host name.
    pub fn new(records: Vec<Tlsa>) -> DaneCheck {
        DaneCheck {
            records,
            sni: None,
            names: Vec::new(),
        }
    }
}

impl fmt::Debug for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verify::Pkix(_) => f.write_str("Pkix"),
            Verify::IgnoreErrors => f.write_str("IgnoreErrors"),
            Verify::Dane(d) => write!(f, "Dane({} records, sni {:?})", d.records.len(), d.sni),
            Verify::None => f.write_str("None"),
            Verify::PkixReport(_) => f.write_str("PkixReport"),
            Verify::DaneReport(d) => {
                write!(
                    f,
                    "DaneReport({} records, sni {:?})",
                    d.records.len(),
                    d.sni
                )
            }
        }
    }
}

/// Credentials for AUTH.
#[derive(Clone)]
pub struct Credentials {
    /// The mechanism to use; `None` picks the strongest both sides support.
    pub mechanism: Option<Mechanism>,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How long to wait for each reply (RFC 5321 4.5.3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// The 220 greeting (5 minutes).
    pub greeting: Duration,
    /// EHLO, STARTTLS, AUTH, RSET, QUIT replies and the TLS handshake (5 minutes).
    pub command: Duration,
    /// MAIL (5 minutes).
    pub mail: Duration,
    /// RCPT (5 minutes).
    pub rcpt: Duration,
    /// The 354 after DATA (2 minutes).
    pub data_init: Duration,
    /// A BDAT chunk's reply (3 minutes, the data block timeout).
    pub data_block: Duration,
    /// The reply after the final dot (10 minutes).
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            greeting: Duration::from_secs(300),
            command: Duration::from_secs(300),
            mail: Duration::from_secs(300),
            rcpt: Duration::from_secs(300),
            data_init: Duration::from_secs(120),
            data_block: Duration::from_secs(180),
            data_end: Duration::from_secs(600),
        }
    }
}

/// How a client session behaves.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Our host name for EHLO/HELO.
    pub our_hostname: Host,
    /// The server's host name: SNI and the PKIX name check.
    pub remote_hostname: String,
    /// STARTTLS use.
    pub tls_mode: TlsMode,
    /// Certificate verification when TLS is used.
    pub verification: Verify,
    /// AUTH, when set.
    pub auth: Option<Credentials>,
    /// Reply timeouts.
    pub timeouts: Timeouts,
    /// Seed for randomness (SASL nonces).
    pub seed: u64,
    /// TLS from the first byte (submissions, port 465): the handshake, checked as
    /// [`ClientConfig::verification`] says, comes before the greeting; STARTTLS is then
    /// never used.
    pub implicit_tls: bool,
    /// After QUIT, close at once instead of waiting for the server's 221 (Postfix's
    /// `smtp_skip_quit_response`): the outcome is known at the reply to the data, and the
    /// queue records it as soon as the session ends (issue 15: the window in which a crash
    /// sends a message twice ends with that record).
    pub skip_quit_response: bool,
}

impl ClientConfig {
    /// Opportunistic TLS without verification, no AUTH, RFC 5321 timeouts.
    pub fn new(our_hostname: Host, remote_hostname: impl Into<String>) -> ClientConfig {
        ClientConfig {
            our_hostname,
            remote_hostname: remote_hostname.into(),
            tls_mode: TlsMode::Opportunistic,
            verification: Verify::None,
            auth: None,
            timeouts: Timeouts::default(),
            seed: 0,
            implicit_tls: false,
            skip_quit_response: false,
        }
    }
}

/// What a message needs from the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Addresses or headers use UTF-8: the server must offer SMTPUTF8.
    pub smtputf8: bool,
    /// REQUIRETLS (RFC 8689): the server must offer it (only offered over TLS).
    pub requiretls: bool,
    /// 8-bit content: `BODY=8BITMIME` is sent when offered; the message is sent anyway
    /// when not.
    pub eightbit: bool,
}

/// One transaction to deliver.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// MAIL FROM.
    pub mail_from: ReversePath,
    /// RCPT TO, in order; the outcome has one result per entry.
    pub recipients: Vec<(ForwardPath, RcptParams)>,
    /// MAIL parameters. SIZE, BODY, SMTPUTF8 and REQUIRETLS are set by the session; DSN
    /// parameters are dropped when the server does not offer DSN.
    pub params: MailParams,
    /// The message, with CRLF line endings, not dot-stuffed.
    pub message: Arc<[u8]>,
    /// What the message needs.
    pub needs: Needs,
}

/// The extensions the server announced in its EHLO reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// EHLO was accepted (false: HELO fallback, no extensions).
    pub esmtp: bool,
    /// PIPELINING.
    pub pipelining: bool,
    /// SIZE, with its limit (0: no limit given).
    pub size: Option<u64>,
    /// 8BITMIME.
    pub eightbitmime: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// STARTTLS.
    pub starttls: bool,
    /// ENHANCEDSTATUSCODES.
    pub enhanced_status_codes: bool,
    /// REQUIRETLS.
    pub requiretls: bool,
    /// AUTH mechanisms we know, in announced order.
    pub auth: Vec<Mechanism>,
    /// LIMITS RCPTMAX.
    pub rcptmax: Option<usize>,
    /// CHUNKING (BDAT).
    pub chunking: bool,
    /// DSN.
    pub dsn: bool,
}

impl Extensions {
    /// Parses the lines of a 250 EHLO reply. The first line starts with the server's name,
    /// which is never a keyword; it is parsed too, so that a one-line `250 PIPELINING`
    /// (seen from minimal servers and in mox's tests) counts.
    pub fn parse(lines: &[String]) -> Extensions {
        let mut e = Extensions {
            esmtp: true,
            ..Extensions::default()
        };
        for line in lines {
            let mut words = line.split_ascii_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => e.pipelining = true,
                "SIZE" => e.size = Some(words.next().and_then(|w| w.parse().ok()).unwrap_or(0)),
                "8BITMIME" => e.eightbitmime = true,
                "SMTPUTF8" => e.smtputf8 = true,
                "STARTTLS" => e.starttls = true,
                "ENHANCEDSTATUSCODES" => e.enhanced_status_codes = true,
                "REQUIRETLS" => e.requiretls = true,
                "CHUNKING" => e.chunking = true,
                "DSN" => e.dsn = true,
                "AUTH" => {
                    for m in words.filter_map(Mechanism::from_name) {
                        if !e.auth.contains(&m) {
                            e.auth.push(m);
                        }
                    }
                }
                "LIMITS" => {
                    for w in words {
                        if let Some((k, v)) = w.split_once('=') {
                            if k.eq_ignore_ascii_case("RCPTMAX") {
                                e.rcptmax = v.parse().ok().filter(|&n: &usize| n > 0);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        e
    }
}

/// The result of one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// One result per recipient of the delivery, in order: the RCPT reply, or why it
    /// failed (the MAIL error when MAIL failed; [`ErrorKind::NotAttempted`] for those to
    /// send in another transaction).
    pub recipients: Vec<Result<Reply, ClientError>>,
    /// The message: the reply after the data, or why it was not accepted. When every
    /// recipient failed this is the first recipient error, permanent only when all were.
    pub data: Result<Reply, ClientError>,
}

impl Outcome {
    /// Recipients accepted and the message accepted: these are delivered.
    pub fn delivered(&self) -> impl Iterator<Item = usize> + '_ {
        let ok = self.data.is_ok();
        self.recipients
            .iter()
            .enumerate()
            .filter(move |(_, r)| ok && r.is_ok())
            .map(|(i, _)| i)
    }

    /// Indices of recipients not attempted, for another transaction.
    pub fn not_attempted(&self) -> impl Iterator<Item = usize> + '_ {
        self.recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Err(e) if e.kind == ErrorKind::NotAttempted))
            .map(|(i, _)| i)
    }

    fn all(n: usize, e: &ClientError) -> Outcome {
        Outcome {
            recipients: vec![Err(e.clone()); n],
            data: Err(e.clone()),
        }
    }
}

/// Inputs to [`ClientSession::handle`].
#[derive(Debug)]
pub enum Input<'a> {
    /// Bytes from the server (ciphertext once TLS is up).
    Received(&'a [u8]),
    /// A deadline may have passed.
    Timeout,
    /// The server closed its side (EOF).
    PeerClosed,
    /// Reading from or writing to the connection failed (the driver's description of the
    /// I/O error): the session fails with [`Transport::Io`].
    IoError(String),
    /// Deliver this transaction (after `Ready`, or queued until then). One at a time: the
    /// next after [`Event::Done`].
    Deliver(Box<Delivery>),
    /// Send RSET before the next transaction.
    Reset,
    /// Say QUIT and close once the server answers.
    Quit,
}

/// Things worth a log line, and the results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A command was sent (verb only; AUTH data is secret).
    Command(&'static str),
    /// A reply was received.
    Reply(u16),
    /// The certificate did not verify under a reporting mode ([`Verify::PkixReport`],
    /// [`Verify::DaneReport`]); the session goes on over TLS. Comes before
    /// [`Event::TlsEstablished`].
    VerifyFailed(TlsFailure),
    /// TLS is established.
    TlsEstablished(TlsInfo),
    /// AUTH succeeded with this mechanism.
    Authenticated(Mechanism),
    /// Greeting, EHLO, STARTTLS and AUTH are done: transactions can be delivered.
    Ready(Extensions),
    /// A transaction ended.
    Done(Outcome),
    /// The connection failed; the session ends.
    Failed(ClientError),
}

/// Outputs drained with [`ClientSession::poll`].
#[derive(Debug)]
pub enum Output {
    /// Bytes were appended to the transmit buffer: write them.
    Transmit,
    /// Log or act on this.
    Event(Event),
    /// Nothing more now: wait for input or the deadline.
    Idle {
        /// The earliest timer, if any.
        deadline: Option<std::time::Instant>,
    },
    /// Flush what was transmitted and close the connection. Returned from then on.
    Close,
}

/// Timers of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Waiting for a reply.
    Reply,
    /// The TLS handshake.
    Handshake,
}

/// The reply we wait for, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    Auth,
    Rset,
    Mail,
    Rcpt(usize),
    Data,
    DataEnd { discard: bool },
    Bdat,
    Quit,
}

impl Expect {
    fn stage(self) -> Stage {
        match self {
            Expect::Greeting => Stage::Greeting,
            Expect::Ehlo | Expect::Helo => Stage::Ehlo,
            Expect::StartTls => Stage::StartTls,
            Expect::Auth => Stage::Auth,
            Expect::Rset | Expect::Quit => Stage::Quit,
            Expect::Mail => Stage::Mail,
            Expect::Rcpt(_) => Stage::Rcpt,
            Expect::Data | Expect::DataEnd { .. } | Expect::Bdat => Stage::Data,
        }
    }

    fn timeout(self, t: &Timeouts) -> Duration {
        match self {
            Expect::Greeting => t.greeting,
            Expect::Mail => t.mail,
            Expect::Rcpt(_) => t.rcpt,
            Expect::Data => t.data_init,
            Expect::Bdat => t.data_block.max(t.data_end),
            Expect::DataEnd { .. } => t.data_end,
            _ => t.command,
        }
    }
}

/// A transaction in progress.
#[derive(Debug)]
struct Txn {
    delivery: Box<Delivery>,
    /// Recipients attempted in this transaction (RCPTMAX).
    attempt: usize,
    /// RCPT commands sent so far.
    rcpts_sent: usize,
    mail: Option<Result<Reply, ClientError>>,
    rcpts: Vec<Option<Result<Reply, ClientError>>>,
    data_sent: bool,
    data: Option<Result<Reply, ClientError>>,
    /// The server said "too many recipients": the rest goes in another transaction.
    too_many: bool,
}

impl Txn {
    fn any_rcpt_ok(&self) -> bool {
        self.rcpts.iter().any(|r| matches!(r, Some(Ok(_))))
    }

    fn rcpts_done(&self) -> bool {
        self.rcpts.iter().take(self.attempt).all(Option::is_some)
    }
}

/// Where the session is, between replies.
#[derive(Debug)]
enum Phase {
    /// Greeting, EHLO, STARTTLS, TLS handshake, AUTH.
    Setup,
    /// The TLS handshake is in progress (after 220 to STARTTLS).
    Handshake,
    /// An AUTH exchange.
    Auth(Box<ClientAuth>),
    /// Ready for a transaction.
    Ready,
    /// A transaction.
    Txn(Box<Txn>),
    /// QUIT sent.
    Quitting,
    /// Done.
    Closed,
}

/// Most plaintext buffered from the server before we stop reading.
const MAX_PLAIN_BUFFER: usize = 64 * 1024;

/// One outgoing SMTP connection.
pub struct ClientSession {
    config: Arc<ClientConfig>,
    rng: Rng,
    phase: Phase,
    expect: VecDeque<Expect>,
    parser: ReplyParser,
    timers: TimerTable<Timer>,
    tls: Option<TlsLayer>,
    /// Where a reporting verification keeps its failure, until the handshake is done.
    verify_report: Option<VerifyReport>,
    tls_announced: bool,
    ext: Extensions,
    plain_in: Vec<u8>,
    out_raw: Vec<u8>,
    out_plain: Vec<u8>,
    outputs: VecDeque<Output>,
    queued: Option<Box<Delivery>>,
    needs_rset: bool,
    quit_requested: bool,
    /// The ready event was sent.
    ready: bool,
    closed: bool,
    error: Option<ClientError>,
}

impl fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSession")
            .field("phase", &self.phase)
            .field("expect", &self.expect)
            .field("tls", &self.tls.is_some())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

impl ClientSession {
    /// A session on a new connection; it waits for the greeting.
    pub fn new(config: Arc<ClientConfig>, now: Now) -> ClientSession {
        let mut seed = Rng::new(config.seed);
        let rng = seed.child();
        let mut s = ClientSession {
            config,
            rng,
            phase: Phase::Setup,
            expect: VecDeque::new(),
            parser: ReplyParser::new(),
            timers: TimerTable::default(),
            tls: None,
            verify_report: None,
            tls_announced: false,
            ext: Extensions::default(),
            plain_in: Vec::new(),
            out_raw: Vec::new(),
            out_plain: Vec::new(),
            outputs: VecDeque::new(),
            queued: None,
            needs_rset: false,
            quit_requested: false,
            ready: false,
            closed: false,
            error: None,
        };
        s.wait(now, Expect::Greeting);
        if s.config.implicit_tls {
            match s.tls_layer() {
                Ok(t) => {
                    s.tls = Some(t);
                    s.timers
                        .set(Timer::Handshake, now.mono + s.config.timeouts.command);
                }
                Err(e) => s.fail(ClientError::new(Stage::Connect, false, e)),
            }
        }
        s
    }

    /// The TLS client for the configured verification (and where a reporting mode keeps
    /// its failure).
    fn tls_layer(&mut self) -> Result<TlsLayer, ErrorKind> {
        let report = VerifyReport::default();
        let reporting = |v| ClientVerify::Report(Box::new(v), report.clone());
        let dane = |d: &DaneCheck| ClientVerify::DaneNames(d.records.clone(), d.names.clone());
        let mut sni = self.config.remote_hostname.as_str();
        let cfg = match &self.config.verification {
            Verify::Pkix(c) => Ok(Arc::clone(c)),
            Verify::IgnoreErrors | Verify::None => {
                crate::tls::client_config(ClientVerify::AcceptAny)
            }
            Verify::Dane(d) => {
                sni = d.sni.as_deref().unwrap_or(sni);
                crate::tls::client_config(dane(d))
            }
            Verify::PkixReport(roots) => {
                self.verify_report = Some(report.clone());
                crate::tls::client_config(reporting(ClientVerify::Pkix(Arc::clone(roots))))
            }
            Verify::DaneReport(d) => {
                sni = d.sni.as_deref().unwrap_or(sni);
                self.verify_report = Some(report.clone());
                crate::tls::client_config(reporting(dane(d)))
            }
        };
        cfg.and_then(|c| TlsLayer::client(c, sni))
            .map_err(|e| ErrorKind::Transport(Transport::Tls(TlsFailure::from(&e))))
    }

    /// The failure a reporting verification let through, once (before TLS is announced).
    fn report_verify_failure(&mut self) {
        if let Some(f) = self.verify_report.take().and_then(|r| r.failure()) {
            self.event(Event::VerifyFailed(f));
        }
    }

    /// Whether TLS is active.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The extensions of the last EHLO reply.
    pub fn extensions(&self) -> &Extensions {
        &self.ext
    }

    /// The error that ended the session, if any.
    pub fn error(&self) -> Option<&ClientError> {
        self.error.as_ref()
    }

    /// Takes one input. For [`Input::Received`], returns how many bytes were consumed; the
    /// caller keeps the rest and offers it again with more. After the session failed, every
    /// call returns the error that ended it.
    pub fn handle(&mut self, now: Now, input: Input<'_>) -> Result<usize, ClientError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.closed {
            return match input {
                Input::Received(b) => Ok(b.len()),
                Input::Deliver(_) => Err(ClientError::new(
                    Stage::Connect,
                    false,
                    ErrorKind::Misuse("session closed"),
                )),
                _ => Ok(0),
            };
        }
        match input {
            Input::Received(bytes) => return Ok(self.handle_received(now, bytes)),
            Input::Timeout => self.handle_timeout(now),
            Input::PeerClosed => {
                if matches!(self.phase, Phase::Quitting) {
                    self.finish();
                } else {
                    let stage = self.current_stage();
                    self.fail(ClientError::new(
                        stage,
                        false,
                        ErrorKind::Transport(Transport::Closed),
                    ));
                }
            }
            Input::IoError(detail) => {
                let stage = self.current_stage();
                self.fail(ClientError::io(stage, detail));
            }
            Input::Deliver(d) => {
                if self.queued.is_some()
                    || matches!(self.phase, Phase::Txn(_))
                    || self.quit_requested
                {
                    return Err(ClientError::new(
                        Stage::Mail,
                        false,
                        ErrorKind::Misuse("delivery while another is in progress"),
                    ));
                }
                self.queued = Some(d);
                if matches!(self.phase, Phase::Ready) {
                    self.next_step(now);
                }
            }
            Input::Reset => self.needs_rset = true,
            Input::Quit => {
                self.quit_requested = true;
                if matches!(self.phase, Phase::Ready) {
                    self.next_step(now);
                }
            }
        }
        Ok(0)
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

    // ---- plumbing ----

    fn event(&mut self, e: Event) {
        self.outputs.push_back(Output::Event(e));
    }

    fn send(&mut self, now: Now, cmd: &Command, expect: Expect) {
        cmd.render(&mut self.out_plain);
        self.event(Event::Command(cmd.verb()));
        self.wait(now, expect);
    }

    fn wait(&mut self, now: Now, expect: Expect) {
        if self.expect.is_empty() {
            self.timers.set(
                Timer::Reply,
                now.mono + expect.timeout(&self.config.timeouts),
            );
        }
        self.expect.push_back(expect);
    }

    fn current_stage(&self) -> Stage {
        if let Some(e) = self.expect.front() {
            return e.stage();
        }
        match &self.phase {
            Phase::Handshake => Stage::StartTls,
            Phase::Auth(_) => Stage::Auth,
            Phase::Txn(_) => Stage::Data,
            _ => Stage::Connect,
        }
    }

    /// Ends the session with an error: a transaction in flight gets its outcome first.
    fn fail(&mut self, err: ClientError) {
        if self.closed {
            return;
        }
        if let Phase::Txn(txn) = std::mem::replace(&mut self.phase, Phase::Closed) {
            let outcome = complete(*txn, Some(&err));
            self.event(Event::Done(outcome));
        } else if let Some(d) = self.queued.take() {
            self.event(Event::Done(Outcome::all(d.recipients.len(), &err)));
        }
        self.event(Event::Failed(err.clone()));
        self.error = Some(err);
        self.finish();
    }

    fn finish(&mut self) {
        self.closed = true;
        self.phase = Phase::Closed;
        self.timers.clear();
        self.expect.clear();
    }

    fn handle_timeout(&mut self, now: Now) {
        if let Some(t) = self.timers.expired(now.mono) {
            if matches!(self.phase, Phase::Quitting) {
                return self.finish();
            }
            let stage = match t {
                Timer::Handshake => Stage::StartTls,
                Timer::Reply => self.current_stage(),
            };
            self.fail(ClientError::new(
                stage,
                false,
                ErrorKind::Transport(Transport::Timeout),
            ));
        }
    }

    fn handle_received(&mut self, now: Now, bytes: &[u8]) -> usize {
        if bytes.is_empty() {
            return 0;
        }
        if self.plain_in.len() > MAX_PLAIN_BUFFER {
            return 0;
        }
        let n = match self.tls.as_mut() {
            None => {
                self.plain_in.extend_from_slice(bytes);
                bytes.len()
            }
            Some(tls) => match tls.feed(bytes, &mut self.plain_in) {
                Ok(n) => n,
                Err(e) => {
                    let permanent = self.config.tls_mode == TlsMode::RequiredStartTls;
                    self.fail(ClientError::new(
                        Stage::StartTls,
                        permanent,
                        ErrorKind::Transport(Transport::Tls(TlsFailure::from(&e))),
                    ));
                    return bytes.len();
                }
            },
        };
        if matches!(self.phase, Phase::Handshake) {
            self.check_handshake(now);
        } else if self.config.implicit_tls && !self.tls_announced {
            self.check_implicit_handshake();
        }
        self.process(now);
        n
    }

    fn check_handshake(&mut self, now: Now) {
        let info = match &self.tls {
            Some(t) if !t.is_handshaking() => t.info(),
            _ => return,
        };
        self.timers.stop(Timer::Handshake);
        self.tls_announced = true;
        self.report_verify_failure();
        if let Some(info) = info {
            self.event(Event::TlsEstablished(info));
        }
        self.phase = Phase::Setup;
        // RFC 3207 4.2: forget what was learned before TLS.
        self.ext = Extensions::default();
        let host = self.config.our_hostname.clone();
        self.send(now, &Command::Ehlo(host), Expect::Ehlo);
    }

    /// Implicit TLS: announces the finished handshake once (the greeting follows inside).
    fn check_implicit_handshake(&mut self) {
        let info = match &self.tls {
            Some(t) if !t.is_handshaking() => t.info(),
            _ => return,
        };
        self.timers.stop(Timer::Handshake);
        self.tls_announced = true;
        self.report_verify_failure();
        if let Some(info) = info {
            self.event(Event::TlsEstablished(info));
        }
    }

    /// Parses buffered plaintext into replies and acts on them.
    fn process(&mut self, now: Now) {
        let mut pos = 0;
        while !self.closed && !matches!(self.phase, Phase::Handshake) {
            let rest = self.plain_in.get(pos..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            match self.parser.feed(rest) {
                Ok((Some(reply), n)) => {
                    pos += n;
                    let starttls = self.expect.front() == Some(&Expect::StartTls);
                    self.reply(now, reply);
                    if starttls && matches!(self.phase, Phase::Handshake) {
                        // RFC 3207 5: nothing may follow the 220 before the handshake
                        // (response injection).
                        if pos < self.plain_in.len() {
                            self.tls = None;
                            let permanent = self.config.tls_mode == TlsMode::RequiredStartTls;
                            self.fail(ClientError {
                                permanent,
                                ..ClientError::misbehaved(
                                    Stage::StartTls,
                                    PeerMisbehaved::DataAfterStartTls,
                                )
                            });
                        }
                        self.plain_in.clear();
                        return;
                    }
                }
                Ok((None, n)) => {
                    pos += n;
                    break;
                }
                Err(e) => {
                    let stage = self.current_stage();
                    self.fail(ClientError::misbehaved(
                        stage,
                        PeerMisbehaved::UnparsableReply(e.to_string()),
                    ));
                    break;
                }
            }
        }
        if self.closed {
            self.plain_in.clear();
        } else {
            self.plain_in.drain(..pos.min(self.plain_in.len()));
        }
    }

    /// One complete reply.
    fn reply(&mut self, now: Now, reply: Reply) {
        self.event(Event::Reply(reply.code));
        let Some(exp) = self.expect.pop_front() else {
            let stage = self.current_stage();
            return self.fail(
                ClientError::misbehaved(stage, PeerMisbehaved::UnexpectedReply).with_reply(reply),
            );
        };
        match self.expect.front() {
            Some(next) => {
                let t = next.timeout(&self.config.timeouts);
                self.timers.set(Timer::Reply, now.mono + t);
            }
            None => self.timers.stop(Timer::Reply),
        }
        match exp {
            Expect::Greeting => {
                if reply.code == 220 {
                    let host = self.config.our_hostname.clone();
                    self.send(now, &Command::Ehlo(host), Expect::Ehlo);
                } else if reply.is_permanent() || reply.is_transient() {
                    self.fail(ClientError::status(Stage::Greeting, reply));
                } else {
                    self.fail(ClientError::protocol(Stage::Greeting, reply));
                }
            }
            Expect::Ehlo => {
                if reply.code == 250 {
                    self.ext = Extensions::parse(&reply.lines);
                    self.after_ehlo(now);
                } else if reply.is_permanent() && !self.tls_announced {
                    self.ext = Extensions::default();
                    let host = self.config.our_hostname.clone();
                    self.send(now, &Command::Helo(host), Expect::Helo);
                } else if reply.is_permanent() || reply.is_transient() {
                    self.fail(ClientError::status(Stage::Ehlo, reply));
                } else {
                    self.fail(ClientError::protocol(Stage::Ehlo, reply));
                }
            }
            Expect::Helo => {
                if reply.code == 250 {
                    self.ext = Extensions::default();
                    self.after_ehlo(now);
                } else if reply.is_permanent() || reply.is_transient() {
                    self.fail(ClientError::status(Stage::Ehlo, reply));
                } else {
                    self.fail(ClientError::protocol(Stage::Ehlo, reply));
                }
            }
            Expect::StartTls => self.starttls_reply(now, reply),
            Expect::Auth => self.auth_reply(now, reply),
            Expect::Quit => self.finish(),
            Expect::Rset
            | Expect::Mail
            | Expect::Rcpt(_)
            | Expect::Data
            | Expect::DataEnd { .. }
            | Expect::Bdat => self.txn_reply(now, exp, reply),
        }
    }

    // ---- setup ----

    fn after_ehlo(&mut self, now: Now) {
        let want_tls = match self.config.tls_mode {
            TlsMode::Skip => false,
            TlsMode::Opportunistic => self.ext.starttls,
            TlsMode::RequiredStartTls => true,
        };
        if self.tls.is_none() && want_tls {
            self.send(now, &Command::StartTls, Expect::StartTls);
            return;
        }
        self.start_auth(now);
    }

    fn starttls_reply(&mut self, now: Now, reply: Reply) {
        let permanent = self.config.tls_mode == TlsMode::RequiredStartTls;
        if reply.code != 220 {
            let kind = ErrorKind::PeerIncompatible(PeerIncompatible::StartTls);
            return self.fail(ClientError::new(Stage::StartTls, permanent, kind).with_reply(reply));
        }
        match self.tls_layer() {
            Ok(t) => {
                // Whatever plaintext is queued goes out before the handshake.
                self.out_raw.append(&mut self.out_plain);
                self.tls = Some(t);
                self.phase = Phase::Handshake;
                self.timers
                    .set(Timer::Handshake, now.mono + self.config.timeouts.command);
            }
            Err(kind) => self.fail(ClientError::new(Stage::StartTls, permanent, kind)),
        }
    }

    fn start_auth(&mut self, now: Now) {
        let Some(cred) = self.config.auth.clone() else {
            return self.setup_done(now);
        };
        let cb = self.tls.as_ref().and_then(TlsLayer::channel_binding);
        let mech = match cred.mechanism {
            Some(m) => Some(m),
            None => Mechanism::strongest(
                self.ext
                    .auth
                    .iter()
                    .copied()
                    .filter(|m| cb.is_some() || !m.needs_channel_binding()),
            ),
        };
        let Some(mech) = mech else {
            let kind = ErrorKind::PeerIncompatible(PeerIncompatible::NoAuthMechanism);
            return self.fail(ClientError::new(Stage::Auth, true, kind));
        };
        // Channel binding with a plain SCRAM mechanism makes the client say "I could bind
        // but you do not offer -PLUS" (gs2 flag y); when the server does offer -PLUS and a
        // plain variant was configured, that looks like a downgrade to it: say "n".
        let plus_offered = self.ext.auth.iter().any(|m| m.needs_channel_binding());
        let cb = if mech.needs_channel_binding() || !plus_offered {
            cb
        } else {
            None
        };
        let mut auth =
            match ClientAuth::try_new(mech, &cred.username, &cred.password, &mut self.rng, cb) {
                Ok(a) => a,
                Err(e) => {
                    return self.fail(ClientError::new(
                        Stage::Auth,
                        true,
                        ErrorKind::Misuse(error::auth_misuse(&e)),
                    ))
                }
            };
        let initial_response = auth.initial_response().map(|ir| {
            if ir.is_empty() {
                "=".to_string()
            } else {
                b64(&ir)
            }
        });
        let cmd = Command::Auth {
            mechanism: mech.name().to_string(),
            initial_response,
        };
        self.phase = Phase::Auth(Box::new(auth));
        self.send(now, &cmd, Expect::Auth);
    }

    fn auth_reply(&mut self, now: Now, reply: Reply) {
        let Phase::Auth(mut auth) = std::mem::replace(&mut self.phase, Phase::Setup) else {
            return self.fail(ClientError::protocol(Stage::Auth, reply));
        };
        match reply.code {
            334 => {
                let text = reply.lines.first().map(|l| l.trim()).unwrap_or_default();
                let challenge = match base64::engine::general_purpose::STANDARD.decode(text) {
                    Ok(c) => c,
                    Err(_) => {
                        return self.fail(
                            ClientError::misbehaved(
                                Stage::Auth,
                                PeerMisbehaved::BadChallengeEncoding,
                            )
                            .with_reply(reply),
                        )
                    }
                };
                match auth.respond(&challenge) {
                    Ok(resp) => {
                        let mut line = b64(&resp).into_bytes();
                        line.extend_from_slice(b"\r\n");
                        self.out_plain.extend_from_slice(&line);
                        self.phase = Phase::Auth(auth);
                        self.wait(now, Expect::Auth);
                    }
                    Err(e) => {
                        // Cancel the exchange; the server's 501 is not waited for.
                        self.out_plain.extend_from_slice(b"*\r\n");
                        self.fail(ClientError::new(
                            Stage::Auth,
                            true,
                            ErrorKind::PeerMisbehaved(PeerMisbehaved::Auth(e)),
                        ));
                    }
                }
            }
            235 => match auth.finish() {
                Ok(()) => {
                    self.event(Event::Authenticated(auth.mechanism()));
                    self.setup_done(now);
                }
                Err(e) => self.fail(
                    ClientError::new(
                        Stage::Auth,
                        true,
                        ErrorKind::PeerMisbehaved(PeerMisbehaved::Auth(e)),
                    )
                    .with_reply(reply),
                ),
            },
            c if (400..600).contains(&c) => self.fail(ClientError::status(Stage::Auth, reply)),
            _ => self.fail(ClientError::protocol(Stage::Auth, reply)),
        }
    }

    fn setup_done(&mut self, now: Now) {
        self.phase = Phase::Ready;
        self.ready = true;
        self.event(Event::Ready(self.ext.clone()));
        self.next_step(now);
    }

    /// In `Ready`: start a queued delivery, or QUIT when asked.
    fn next_step(&mut self, now: Now) {
        if !matches!(self.phase, Phase::Ready) {
            return;
        }
        if let Some(d) = self.queued.take() {
            return self.start_txn(now, d);
        }
        if self.quit_requested {
            self.phase = Phase::Quitting;
            self.send(now, &Command::Quit, Expect::Quit);
            if self.config.skip_quit_response {
                // QUIT still goes out (poll transmits before it says Close).
                self.finish();
            }
        }
    }

    // ---- transactions ----

    fn start_txn(&mut self, now: Now, delivery: Box<Delivery>) {
        let n = delivery.recipients.len();
        let size = delivery.message.len() as u64;
        let ext = &self.ext;
        let early = if n == 0 {
            Some(ClientError::new(
                Stage::Rcpt,
                true,
                ErrorKind::Misuse("no recipients"),
            ))
        } else if delivery.needs.smtputf8 && !ext.smtputf8 {
            Some(ClientError::new(
                Stage::Mail,
                true,
                ErrorKind::PeerIncompatible(PeerIncompatible::SmtpUtf8),
            ))
        } else if delivery.needs.requiretls && !ext.requiretls {
            Some(ClientError::new(
                Stage::Mail,
                true,
                ErrorKind::PeerIncompatible(PeerIncompatible::RequireTls),
            ))
        } else {
            match ext.size {
                Some(max) if max > 0 && size > max => Some(ClientError::new(
                    Stage::Mail,
                    true,
                    ErrorKind::PeerIncompatible(PeerIncompatible::MessageTooLarge { size, max }),
                )),
                _ => None,
            }
        };
        if let Some(e) = early {
            self.phase = Phase::Ready;
            self.event(Event::Done(Outcome::all(n, &e)));
            return self.next_step(now);
        }
        let mut params = delivery.params.clone();
        params.size = ext.size.map(|_| size);
        params.body = if delivery.needs.eightbit && ext.eightbitmime {
            Some(Body::EightBitMime)
        } else {
            None
        };
        params.smtputf8 = delivery.needs.smtputf8;
        params.requiretls = delivery.needs.requiretls;
        if !ext.dsn {
            params.ret = None;
            params.envid = None;
        }
        let attempt = ext.rcptmax.map_or(n, |m| m.min(n));
        let pipelining = ext.pipelining;
        let chunking = ext.chunking;
        let mail = Command::Mail(delivery.mail_from.clone(), params);
        let mut txn = Box::new(Txn {
            delivery,
            attempt,
            rcpts_sent: 0,
            mail: None,
            rcpts: vec![None; n],
            data_sent: false,
            data: None,
            too_many: false,
        });
        if self.needs_rset {
            self.needs_rset = false;
            self.send(now, &Command::Rset, Expect::Rset);
        }
        self.send(now, &mail, Expect::Mail);
        if pipelining {
            while txn.rcpts_sent < txn.attempt {
                self.send_rcpt(now, &mut txn);
            }
            if !chunking {
                txn.data_sent = true;
                self.send(now, &Command::Data, Expect::Data);
            }
        }
        self.phase = Phase::Txn(txn);
    }

    fn send_rcpt(&mut self, now: Now, txn: &mut Txn) {
        let i = txn.rcpts_sent;
        let Some((path, params)) = txn.delivery.recipients.get(i) else {
            return;
        };
        let mut params = params.clone();
        if !self.ext.dsn {
            params.notify = None;
            params.orcpt = None;
        }
        let cmd = Command::Rcpt(path.clone(), params);
        txn.rcpts_sent += 1;
        self.send(now, &cmd, Expect::Rcpt(i));
    }

    fn txn_reply(&mut self, now: Now, exp: Expect, reply: Reply) {
        if !matches!(self.phase, Phase::Txn(_)) {
            // Only sent inside a transaction; nothing to record.
            return;
        }
        let Phase::Txn(mut txn) = std::mem::replace(&mut self.phase, Phase::Ready) else {
            return;
        };
        match exp {
            Expect::Rset => {}
            Expect::Mail => {
                txn.mail = Some(if reply.code == 250 {
                    Ok(reply)
                } else {
                    Err(ClientError::status_or_protocol(Stage::Mail, reply))
                });
            }
            Expect::Rcpt(i) => {
                let r = if reply.code == 250 || reply.code == 251 {
                    Ok(reply)
                } else if txn.mail.as_ref().is_some_and(|m| m.is_err()) {
                    // Pipelined after a failed MAIL: the MAIL error counts.
                    Err(ClientError::new(
                        Stage::Rcpt,
                        false,
                        ErrorKind::NotAttempted,
                    ))
                } else if i > 0 && too_many_recipients(&reply) {
                    txn.too_many = true;
                    Err(
                        ClientError::new(Stage::Rcpt, false, ErrorKind::NotAttempted)
                            .with_reply(reply),
                    )
                } else if txn.too_many && reply.is_transient() {
                    Err(
                        ClientError::new(Stage::Rcpt, false, ErrorKind::NotAttempted)
                            .with_reply(reply),
                    )
                } else {
                    Err(ClientError::status_or_protocol(Stage::Rcpt, reply))
                };
                if let Some(slot) = txn.rcpts.get_mut(i) {
                    *slot = Some(r);
                }
            }
            Expect::Data => {
                let ok = matches!(txn.mail, Some(Ok(_))) && txn.any_rcpt_ok();
                if reply.code == 354 {
                    if ok {
                        let mut out = Vec::new();
                        dot_stuff(&txn.delivery.message, &mut out);
                        self.out_plain.extend_from_slice(&out);
                        self.wait(now, Expect::DataEnd { discard: false });
                    } else {
                        // RFC 2920 3.1: a 354 after failed recipients still needs the end.
                        self.out_plain.extend_from_slice(b".\r\n");
                        self.wait(now, Expect::DataEnd { discard: true });
                    }
                } else if ok {
                    txn.data = Some(Err(ClientError::status_or_protocol(Stage::Data, reply)));
                }
            }
            Expect::DataEnd { discard: false } => {
                txn.data = Some(if reply.code == 250 {
                    Ok(reply)
                } else {
                    Err(ClientError::status_or_protocol(Stage::Data, reply))
                });
            }
            Expect::DataEnd { discard: true } => {}
            Expect::Bdat => {
                txn.data = Some(if reply.code == 250 {
                    Ok(reply)
                } else {
                    Err(ClientError::status_or_protocol(Stage::Data, reply))
                });
            }
            _ => {}
        }
        self.phase = Phase::Txn(txn);
        if self.expect.is_empty() {
            self.advance_txn(now);
        }
    }

    /// All replies sent for are in: send the next command or end the transaction.
    fn advance_txn(&mut self, now: Now) {
        if !matches!(self.phase, Phase::Txn(_)) {
            return;
        }
        let Phase::Txn(mut txn) = std::mem::replace(&mut self.phase, Phase::Ready) else {
            return;
        };
        let mail_ok = matches!(txn.mail, Some(Ok(_)));
        if mail_ok && txn.data.is_none() {
            if !txn.rcpts_done() && !txn.too_many {
                self.send_rcpt(now, &mut txn);
                self.phase = Phase::Txn(txn);
                return;
            }
            if txn.any_rcpt_ok() && !txn.data_sent {
                txn.data_sent = true;
                if self.ext.chunking {
                    let size = txn.delivery.message.len() as u64;
                    self.send(now, &Command::Bdat { size, last: true }, Expect::Bdat);
                    self.out_plain.extend_from_slice(&txn.delivery.message);
                } else {
                    self.send(now, &Command::Data, Expect::Data);
                }
                self.phase = Phase::Txn(txn);
                return;
            }
        }
        let outcome = complete(*txn, None);
        if outcome.data.is_err() {
            self.needs_rset = true;
        }
        self.phase = Phase::Ready;
        self.event(Event::Done(outcome));
        self.next_step(now);
    }
}

/// The outcome of a transaction; `conn` is the connection error that ended it early.
fn complete(txn: Txn, conn: Option<&ClientError>) -> Outcome {
    let Txn {
        mail,
        rcpts,
        data,
        attempt,
        too_many,
        ..
    } = txn;
    let not_attempted = ClientError::new(Stage::Rcpt, false, ErrorKind::NotAttempted);
    let missing = |stage| -> ClientError {
        match conn {
            Some(e) => ClientError { stage, ..e.clone() },
            None => ClientError::misbehaved(stage, PeerMisbehaved::MissingReply),
        }
    };
    if let Some(Err(e)) = mail {
        let n = rcpts.len();
        return Outcome::all(n, &e);
    }
    if mail.is_none() {
        return Outcome::all(rcpts.len(), &missing(Stage::Mail));
    }
    let recipients: Vec<Result<Reply, ClientError>> = rcpts
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Some(r) => r,
            None if i >= attempt || too_many => Err(not_attempted.clone()),
            None => Err(missing(Stage::Rcpt)),
        })
        .collect();
    let failures: Vec<&ClientError> = recipients
        .iter()
        .filter_map(|r| r.as_ref().err())
        .filter(|e| e.kind != ErrorKind::NotAttempted)
        .collect();
    let data = if recipients.iter().all(Result::is_err) {
        match failures.first() {
            Some(first) => {
                let mut e = (*first).clone();
                e.permanent = failures.iter().all(|e| e.permanent);
                Err(e)
            }
            None => Err(not_attempted.clone()),
        }
    } else {
        match data {
            Some(d) => d,
            None => Err(missing(Stage::Data)),
        }
    };
    Outcome { recipients, data }
}

/// "Too many recipients" (RFC 5321 4.5.3.1.10): 452, or 552 with 5.5.3 or that text.
fn too_many_recipients(r: &Reply) -> bool {
    r.code == 452
        || (r.code == 552
            && (r.enhanced == Some(Enhanced::new(5, 5, 3))
                || r.text()
                    .to_ascii_lowercase()
                    .contains("too many recipients")))
}
