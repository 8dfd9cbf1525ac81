//! The outbound delivery machine: one queue entry, or one combined transaction (several
//! recipients with the same sender, message and destination domain), from DNS to the
//! per-recipient results.
//!
//! It follows the crate's driving contract (see the crate docs), with connection ids: a
//! delivery may open several connections one after the other.
//!
//! * DNS is asked for as [`Effect::Dns`]: the MX plan of [`crate::queue::mx`] (null MX,
//!   implicit MX, preference order, address families), or the addresses of a relay host.
//! * Connections are asked for as [`Effect::Connect`]; the driver answers
//!   [`Completion::Connected`] or [`Completion::ConnectFailed`], then moves bytes with
//!   [`Input::Received`] / [`Output::Transmit`] for that [`ConnId`] and reports EOF with
//!   [`Input::Closed`]. [`Output::Close`] tells it to close (or abandon) a connection.
//! * The SOCKS5 handshake ([`socks5`]), implicit TLS and STARTTLS all happen inside the
//!   machine: drivers only open TCP connections.
//! * The TLS requirement of each MX host is [`HostTls`]: computed by [`builtin_host_tls`]
//!   (today's behaviour) or, with [`HostTlsSource::Ask`], asked for as [`Effect::HostTls`]
//!   so that a policy layer (MTA-STS, DANE) decides it.
//! * Fallbacks: after a failed connection, a refused greeting, a failed STARTTLS or TLS
//!   handshake, a temporary error, or a connection that broke before the message data, the
//!   next address, then the next host; a permanent error in the conversation about the
//!   message, or any answer per recipient, ends the attempt.
//! * Everything waited on has a deadline: effects ([`DeliveryConfig::effect_timeout`]),
//!   connecting and the proxy handshake ([`DeliveryConfig::connect_timeout`]), every reply and
//!   the TLS handshake (the client session's [`Timeouts`]).
//!
//! When [`Output::Done`] is returned the [`Report`] is ready: one [`AttemptResult`] per
//! recipient, the TLS result of every connection, and the remote MTA for DSNs.
//!
//! Connection reuse: [`DeliverySession::new_many`] takes several jobs for the same
//! destination (domain, transport, REQUIRETLS state). They are delivered one after the
//! other, each on the connection the one before it used while that connection stays
//! healthy (a transaction that ended with replies, not with a broken or failed session);
//! a job whose connection fails goes on to the next address as a single job would. A
//! failure before or of a whole session (DNS, no address reachable, a refused greeting or
//! TLS) ends the jobs that did not get their turn with the same result. There is one
//! [`Report`] per job, in order ([`DeliverySession::reports`]).

pub mod socks5;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{
    self, ClientConfig, ClientError, ClientSession, Credentials, Delivery, ErrorKind, Extensions,
    Needs, Outcome, PeerIncompatible, Stage, Timeouts, TlsMode, Verify,
};
use crate::dns::{
    CheckInput, CheckLimits, CheckOutput, CheckSession, Lookup, LookupResult, Record, RecordType,
};
use crate::queue::mx::{MxOptions, MxPlan, MxVerdict};
use crate::queue::route::{SmtpAuth, SmtpTls, Transport, TransportDirect};
use crate::queue::{AttemptResult, Failure};
use crate::rng::Rng;
use crate::sasl::Mechanism;
use crate::smtp::{Enhanced, ForwardPath, Host, MailParams, RcptParams, ReversePath};
use crate::time::Now;
use crate::timer::TimerTable;
use crate::tls::TlsFailureReason;
use crate::tls::TlsInfo;
use crate::Token;

use socks5::Socks5Client;

/// Questions the MX plan may ask in one effect, and over the whole plan (far above what it
/// asks: the MX question, then two per host, hosts capped at [`crate::queue::mx::MAX_MX_HOSTS`]).
const MX_PLAN_QUESTIONS: usize = 64;

/// Names one connection of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// The policy a connection was made under (RFC 8460 `policy-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsPolicyKind {
    /// No MTA-STS or DANE policy.
    NoPolicy,
    /// An MTA-STS policy.
    Sts,
    /// DANE TLSA records.
    Tlsa,
}

/// How to connect to one MX host, as the TLS policy decided.
#[derive(Clone, Debug)]
pub struct HostTlsConnect {
    /// STARTTLS use.
    pub mode: TlsMode,
    /// Certificate verification (PKIX for MTA-STS, DANE records, none).
    pub verify: Verify,
    /// The policy the attempt is reported under.
    pub policy: TlsPolicyKind,
}

/// The TLS requirement for one MX host: the input where the MTA-STS/DANE verdict plugs in.
#[derive(Clone, Debug)]
pub enum HostTls {
    /// Connect under these rules.
    Connect(HostTlsConnect),
    /// Do not use this host now (temporary: another host or a later attempt may do), why.
    Skip(String),
    /// The message cannot go through this host (REQUIRETLS without verifiable TLS): every
    /// recipient fails permanently.
    Fail {
        /// The status for the DSN (5.7.10 for REQUIRETLS without verified TLS).
        enhanced: Enhanced,
        /// What went wrong.
        detail: String,
    },
}

/// Where the TLS requirement of an MX host comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostTlsSource {
    /// [`builtin_host_tls`]: opportunistic STARTTLS; PKIX-verified and required for
    /// REQUIRETLS; verification errors ignored for `TLS-Required: No`.
    Builtin,
    /// Ask the driver with [`Effect::HostTls`] for every MX host (the policy layer).
    Ask,
}

/// How a delivery behaves; shared by the deliveries of a queue runner.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// Our host name for EHLO (a SOCKS5 transport's `ehlo_hostname` replaces it).
    pub our_hostname: Host,
    /// The SMTP port of MX hosts (25).
    pub smtp_port: u16,
    /// How to deliver.
    pub transport: Transport,
    /// User name and password for the SOCKS5 proxy, if it wants them.
    pub proxy_auth: Option<(String, String)>,
    /// Trusted roots for verified TLS (REQUIRETLS, smarthosts with verify, submission);
    /// `None`: such deliveries fail temporarily.
    pub pkix: Option<Arc<rustls::ClientConfig>>,
    /// Local addresses to connect from (the first of the right family is used).
    pub source_ips: Vec<IpAddr>,
    /// Reply and TLS handshake timeouts.
    pub timeouts: Timeouts,
    /// Time to connect (and to finish the SOCKS5 handshake).
    pub connect_timeout: Duration,
    /// Time an effect (DNS answers, the TLS requirement) may take.
    pub effect_timeout: Duration,
    /// Where MX hosts' TLS requirements come from.
    pub host_tls: HostTlsSource,
}

impl DeliveryConfig {
    /// Direct delivery to port 25 with RFC 5321 timeouts and today's TLS behaviour.
    pub fn new(our_hostname: Host) -> DeliveryConfig {
        DeliveryConfig {
            our_hostname,
            smtp_port: 25,
            transport: Transport::Direct(TransportDirect::default()),
            proxy_auth: None,
            pkix: None,
            source_ips: Vec::new(),
            timeouts: Timeouts::default(),
            connect_timeout: Duration::from_secs(30),
            effect_timeout: Duration::from_secs(60),
            host_tls: HostTlsSource::Builtin,
        }
    }
}

/// What to deliver: one transaction to one destination domain.
#[derive(Clone, Debug)]
pub struct Job {
    /// The recipient domain (A-label form, or an address literal).
    pub domain: String,
    /// MAIL FROM.
    pub mail_from: ReversePath,
    /// The recipients; the report has one result per entry, in order.
    pub recipients: Vec<(ForwardPath, RcptParams)>,
    /// MAIL parameters (RET, ENVID).
    pub params: MailParams,
    /// The message, CRLF line endings, not dot-stuffed.
    pub message: Arc<[u8]>,
    /// What the message needs (SMTPUTF8, 8BITMIME); `requiretls` is set from
    /// [`Job::requiretls`].
    pub needs: Needs,
    /// REQUIRETLS (`Some(true)`), `TLS-Required: No` (`Some(false)`), or neither.
    pub requiretls: Option<bool>,
    /// Seed for the host shuffle and SASL nonces.
    pub seed: u64,
}

/// Requests for the outside world.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Answer these DNS questions; [`Completion::Dns`], one result per lookup, in order.
    Dns(Vec<Lookup>),
    /// Open a TCP connection; [`Completion::Connected`] or [`Completion::ConnectFailed`].
    /// Bytes of this connection then carry `conn`.
    Connect {
        /// The id of the new connection.
        conn: ConnId,
        /// Where to connect (the SOCKS5 proxy for that transport).
        addr: SocketAddr,
        /// The local address to bind, if configured.
        source_ip: Option<IpAddr>,
        /// The machine gives up after this long (the driver may use it too).
        timeout: Duration,
    },
    /// The TLS requirement for an MX host ([`HostTlsSource::Ask`]);
    /// [`Completion::HostTls`].
    HostTls {
        /// The recipient domain (the MTA-STS policy domain).
        domain: String,
        /// The MX host, as published.
        host: String,
        /// The message's REQUIRETLS / `TLS-Required: No`.
        requiretls: Option<bool>,
    },
}

/// Answers to effects, matched by token.
#[derive(Debug, Clone)]
pub enum Completion {
    /// Answer to [`Effect::Dns`].
    Dns(Vec<LookupResult>),
    /// [`Effect::Connect`] succeeded.
    Connected,
    /// [`Effect::Connect`] failed, why.
    ConnectFailed(String),
    /// Answer to [`Effect::HostTls`].
    HostTls(HostTls),
}

/// Inputs to [`DeliverySession::handle`].
#[derive(Debug)]
pub enum Input<'a> {
    /// The answer to an earlier effect. Answers to effects the machine gave up on (after
    /// their deadline) are ignored.
    Completed(Token, Completion),
    /// Bytes from the peer of a connection.
    Received(ConnId, &'a [u8]),
    /// The peer closed the connection (EOF or error).
    Closed(ConnId),
    /// A deadline may have passed.
    Timeout,
}

/// How one connection's TLS ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsResult {
    /// TLS was established.
    Established(TlsInfo),
    /// The session went on without TLS.
    Plaintext,
    /// TLS was attempted and failed.
    Failed {
        /// The RFC 8460 result type, e.g. `certificate-not-trusted`.
        result_type: &'static str,
        /// What went wrong.
        detail: String,
    },
}

/// The TLS of one connection (what the TLS report and the attempt history record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsAttempt {
    /// The domain whose policy applied (the recipient domain, or the relay host).
    pub policy_domain: String,
    /// The host connected to.
    pub mx_host: String,
    /// Its address.
    pub receiving_ip: IpAddr,
    /// The policy applied.
    pub policy: TlsPolicyKind,
    /// `opportunistic`, `required`, `skip` or `implicit`.
    pub mode: &'static str,
    /// The result.
    pub result: TlsResult,
}

impl TlsPolicyKind {
    /// The RFC 8460 `policy-type` name.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsPolicyKind::NoPolicy => "no-policy-found",
            TlsPolicyKind::Sts => "sts",
            TlsPolicyKind::Tlsa => "tlsa",
        }
    }
}

impl TlsAttempt {
    /// The text of the result in the attempt history.
    pub fn result_text(&self) -> String {
        match &self.result {
            TlsResult::Established(i) => format!("{} {}", i.version, i.cipher),
            TlsResult::Plaintext => "plaintext".into(),
            TlsResult::Failed {
                result_type,
                detail,
            } => format!("failed: {result_type}: {detail}"),
        }
    }

    /// Whether the attempt belongs in TLS reports: TLS was established or failed.
    pub fn is_reportable(&self) -> bool {
        !matches!(self.result, TlsResult::Plaintext)
    }

    /// The stored TLS result record: one JSON object for this connection, counts of 1
    /// (aggregated when TLS reports are made).
    pub fn to_json(&self) -> Vec<u8> {
        let (success, failure, result_type, detail) = match &self.result {
            TlsResult::Failed {
                result_type,
                detail,
            } => (0, 1, Some(*result_type), Some(detail.as_str())),
            _ => (1, 0, None, None),
        };
        let v = serde_json::json!({
            "policy-type": self.policy.as_str(),
            "policy-domain": self.policy_domain,
            "mx-host": self.mx_host,
            "receiving-ip": self.receiving_ip.to_string(),
            "mode": self.mode,
            "success-count": success,
            "failure-count": failure,
            "result-type": result_type,
            "failure-reason": detail,
        });
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// Things worth a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Connecting to a host.
    Connecting {
        /// The host name.
        host: String,
        /// Its address (not the proxy's).
        addr: SocketAddr,
    },
    /// A connection attempt failed; the next address or host follows when there is one.
    AttemptFailed {
        /// The host name.
        host: String,
        /// Its address.
        addr: SocketAddr,
        /// What went wrong.
        error: String,
    },
    /// The TLS result of a connection.
    Tls(TlsAttempt),
    /// An event of the SMTP client session on a connection.
    Client(ConnId, client::Event),
    /// The report of job `job` (0: the first) is final
    /// ([`DeliverySession::job_report`]): with connection reuse, before the jobs after it
    /// are delivered, so that it can be recorded at once.
    JobDone {
        /// The job's index.
        job: usize,
    },
}

/// Outputs drained with [`DeliverySession::poll`].
#[derive(Debug)]
pub enum Output {
    /// Bytes for this connection were appended to the transmit buffer: write them.
    Transmit(ConnId),
    /// Perform this effect and answer with [`Input::Completed`].
    Effect(Token, Effect),
    /// Log this.
    Event(Event),
    /// Flush what was transmitted on this connection and close it (or abandon the
    /// connection attempt).
    Close(ConnId),
    /// Nothing more now: wait for input, a completion or the deadline.
    Idle {
        /// The earliest deadline, if any.
        deadline: Option<Instant>,
        /// The timer that deadline belongs to.
        timer: Option<Timer>,
    },
    /// The delivery is over: [`DeliverySession::report`] holds the results. Returned from
    /// then on.
    Done,
}

/// What a delivery found out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// One result per recipient of the job, in order.
    pub results: Vec<AttemptResult>,
    /// The TLS of every connection that got as far as TLS could be tried.
    pub tls: Vec<TlsAttempt>,
    /// The host whose answer decided the results (the Remote-MTA of a DSN), when one was
    /// reached.
    pub remote_mta: Option<String>,
}

/// Why `handle` refused an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// A completion of the wrong kind for its effect.
    #[error("api misuse: {0}")]
    Misuse(&'static str),
}

/// The TLS requirement today's delivery applies to an MX host without a policy layer:
/// REQUIRETLS needs STARTTLS with PKIX verification (temporary failure when no roots are
/// configured), `TLS-Required: No` ignores verification errors, otherwise opportunistic
/// STARTTLS without verification (RFC 7435).
pub fn builtin_host_tls(
    requiretls: Option<bool>,
    pkix: Option<&Arc<rustls::ClientConfig>>,
) -> HostTls {
    match requiretls {
        Some(true) => match pkix {
            Some(c) => HostTls::Connect(HostTlsConnect {
                mode: TlsMode::RequiredStartTls,
                verify: Verify::Pkix(Arc::clone(c)),
                policy: TlsPolicyKind::NoPolicy,
            }),
            None => HostTls::Skip("no trusted roots configured for verified TLS".into()),
        },
        Some(false) => HostTls::Connect(HostTlsConnect {
            mode: TlsMode::Opportunistic,
            verify: Verify::IgnoreErrors,
            policy: TlsPolicyKind::NoPolicy,
        }),
        None => HostTls::Connect(HostTlsConnect {
            mode: TlsMode::Opportunistic,
            verify: Verify::None,
            policy: TlsPolicyKind::NoPolicy,
        }),
    }
}

/// The name of a STARTTLS mode (`implicit` for TLS from the first byte).
pub fn mode_name(mode: TlsMode, implicit: bool) -> &'static str {
    if implicit {
        return "implicit";
    }
    match mode {
        TlsMode::Skip => "skip",
        TlsMode::Opportunistic => "opportunistic",
        TlsMode::RequiredStartTls => "required",
    }
}

/// The RFC 8460 result type of a TLS error message.
/// Both rustls's Debug names (`NotValidForName`) and its Display text ("certificate not
/// valid for name") are recognized.
pub fn result_type(detail: &str) -> &'static str {
    let d = detail.to_ascii_lowercase();
    let has = |a: &str| d.contains(a);
    if has("starttls refused") {
        "starttls-not-supported"
    } else if has("notvalidforname") || has("not valid for name") {
        "certificate-host-mismatch"
    } else if has("expired") {
        "certificate-expired"
    } else if has("unknownissuer")
        || has("unknown issuer")
        || has("badsignature")
        || has("bad signature")
        || has("not trusted")
    {
        "certificate-not-trusted"
    } else {
        "validation-failure"
    }
}

/// The TLS result of a connection: `info` when the handshake completed, else from the
/// error that ended it. `None` when the connection ended before TLS could be tried.
pub fn classify(info: Option<&TlsInfo>, error: Option<&ClientError>) -> Option<TlsResult> {
    if let Some(i) = info {
        return Some(TlsResult::Established(i.clone()));
    }
    match error {
        Some(e) if e.is_tls() => {
            let (result_type, detail) = tls_failure(e)?;
            Some(TlsResult::Failed {
                result_type,
                detail,
            })
        }
        Some(e) if matches!(e.stage, Stage::Connect | Stage::Greeting | Stage::Ehlo) => None,
        _ => Some(TlsResult::Plaintext),
    }
}

/// Whether a failed session failed at the connection level (greeting, TLS) rather than in
/// the conversation about this message: other addresses and hosts are still worth trying.
pub fn is_connection_level(e: &ClientError) -> bool {
    matches!(e.stage, Stage::Connect | Stage::Greeting | Stage::StartTls) || e.is_tls()
}

/// The RFC 8460 result type and the detail of a TLS failure, from the error's kind; `None`
/// when the error is not about TLS (see [`ClientError::is_tls`]).
pub fn tls_failure(e: &ClientError) -> Option<(&'static str, String)> {
    match &e.kind {
        ErrorKind::PeerIncompatible(PeerIncompatible::StartTls) => {
            Some(("starttls-not-supported", e.kind.to_string()))
        }
        ErrorKind::Transport(client::Transport::Tls(f)) => {
            Some((failure_result_type(f), f.detail.clone()))
        }
        _ => None,
    }
}

/// The RFC 8460 result type of a TLS failure.
fn failure_result_type(f: &crate::tls::TlsFailure) -> &'static str {
    match f.reason {
        TlsFailureReason::CertificateExpired => "certificate-expired",
        TlsFailureReason::CertificateHostMismatch => "certificate-host-mismatch",
        TlsFailureReason::CertificateNotTrusted => "certificate-not-trusted",
        // DANE and other verifier failures carry only text.
        _ => result_type(&f.detail),
    }
}

/// Whether an error is about the AUTH mechanism (not offered, refused with 504, channel
/// binding unavailable) rather than the credentials or the connection.
fn mechanism_problem(e: &ClientError) -> bool {
    e.stage == Stage::Auth && e.reply.as_ref().is_none_or(|r| r.code == 504)
}

fn temp(detail: String, e: Enhanced) -> AttemptResult {
    AttemptResult::Temporary(Failure::local(detail, e))
}

/// A failed TLS session is temporary unless the message requires TLS (REQUIRETLS, RFC 8689
/// 4.1, is permanent): a DANE mismatch (RFC 7672 2.2, "4.7.5" as Postfix says) or an MX host
/// refusing STARTTLS under an enforced MTA-STS policy (RFC 8461 5) only defer the message;
/// the TLS client marks them permanent for REQUIRETLS' sake.
fn policy_tls_temporary(r: AttemptResult, e: &ClientError) -> AttemptResult {
    match r {
        AttemptResult::Permanent(mut f) if tls_failure(e).is_some() => {
            if f.reply.is_none() {
                f.enhanced = Some(Enhanced::new(4, 7, 5));
            }
            AttemptResult::Temporary(f)
        }
        r => r,
    }
}

/// The attempt result of a client error (a reply, or a local description).
fn error_result(host: &str, e: &ClientError) -> AttemptResult {
    if e.kind == ErrorKind::NotAttempted {
        return AttemptResult::Temporary(Failure {
            host: Some(host.to_string()),
            reply: None,
            detail: format!("{host}: recipient not attempted in this transaction"),
            enhanced: Some(Enhanced::new(4, 5, 3)),
        });
    }
    let f = match &e.reply {
        Some(r) => Failure::from_reply(host, r.clone()),
        None => Failure {
            host: Some(host.to_string()),
            reply: None,
            detail: match e.kind {
                // RFC 8689 5: the DSN's status for a next hop without REQUIRETLS.
                ErrorKind::PeerIncompatible(PeerIncompatible::RequireTls) => {
                    format!("{host}: REQUIRETLS support required, not offered by next hop")
                }
                _ => format!("{host}: {e}"),
            },
            enhanced: Some(match (&e.kind, e.permanent) {
                (ErrorKind::PeerIncompatible(PeerIncompatible::RequireTls), _) => {
                    Enhanced::new(5, 7, 30)
                }
                (ErrorKind::PeerIncompatible(PeerIncompatible::SmtpUtf8), _) => {
                    Enhanced::new(5, 6, 7)
                }
                (ErrorKind::PeerIncompatible(PeerIncompatible::MessageTooLarge { .. }), _) => {
                    Enhanced::new(5, 3, 4)
                }
                (_, true) => Enhanced::new(5, 0, 0),
                (_, false) => Enhanced::new(4, 4, 2),
            }),
        },
    };
    if e.permanent {
        AttemptResult::Permanent(f)
    } else {
        AttemptResult::Temporary(f)
    }
}

/// One result per recipient from a transaction's outcome.
fn outcome_results(
    host: &str,
    outcome: &Outcome,
    ext: &Extensions,
    n: usize,
) -> Vec<AttemptResult> {
    (0..n)
        .map(|i| match (outcome.recipients.get(i), &outcome.data) {
            (Some(Ok(_)), Ok(reply)) => AttemptResult::Delivered {
                host: Some(host.to_string()),
                reply: Some(reply.clone()),
                remote_supports_dsn: ext.dsn,
            },
            (Some(Ok(_)), Err(e)) | (Some(Err(e)), _) => error_result(host, e),
            (None, _) => temp(
                format!("{host}: no result for recipient"),
                Enhanced::new(4, 0, 0),
            ),
        })
        .collect()
}

/// How one SMTP session ended.
enum SessionEnd {
    /// The transaction completed (some recipients may have failed).
    Done(Outcome, Extensions),
    /// The connection failed before the transaction completed.
    Failed(ClientError),
}

/// Whether an error means the connection broke (no reply in time, EOF, I/O, garbage) before the
/// message data was sent: nothing was accepted, so another address may be tried at once.
/// After the data the message may have arrived; that is left to the next attempt.
fn broken_before_data(e: &ClientError) -> bool {
    !e.permanent
        && e.reply.is_none()
        && e.stage != Stage::Data
        && matches!(
            e.kind,
            ErrorKind::Transport(_) | ErrorKind::PeerMisbehaved(_)
        )
}

/// A transaction that failed as a whole at the connection level (the client reports a
/// failed STARTTLS as a transaction whose recipients all carry the error), or because the
/// connection broke before the data, is a failed connection.
fn connection_failure(end: SessionEnd) -> SessionEnd {
    let level = |e: &ClientError| is_connection_level(e) || broken_before_data(e);
    match end {
        SessionEnd::Done(o, x) => match &o.data {
            Err(e) if level(e) && o.recipients.iter().all(|r| r.as_ref().is_err_and(level)) => {
                SessionEnd::Failed(e.clone())
            }
            _ => SessionEnd::Done(o, x),
        },
        f => f,
    }
}

/// Where the message goes.
#[derive(Debug, Clone)]
enum Target {
    /// The MX hosts of the domain, directly or through a SOCKS5 proxy.
    Mx {
        opts: MxOptions,
        proxy: Option<SocketAddr>,
        ehlo: Host,
    },
    /// A fixed host (smarthost, submission).
    Relay {
        host: String,
        port: u16,
        tls: SmtpTls,
        auth: Option<SmtpAuth>,
    },
}

/// One host to try.
#[derive(Debug, Clone)]
struct HostEntry {
    host: String,
    ips: Vec<IpAddr>,
    tls: Option<HostTls>,
}

/// The DNS part: the MX plan (a check session, whose effects the delivery forwards with its
/// own tokens, and whose answer deadline is the delivery's effect timer), or the addresses of
/// a relay host.
enum Resolve {
    Mx(Box<CheckSession<MxPlan>>),
    Relay,
}

/// What the machine waits for.
enum Pending {
    /// DNS answers; `plan` is the MX plan session's token for the same effect.
    Dns {
        token: Token,
        lookups: Vec<Lookup>,
        plan: Option<Token>,
    },
    /// The TLS requirement of host `hosts[i]`.
    HostTls { token: Token },
    /// A connection.
    Connect { token: Token, conn: ConnId },
}

/// The stage of the current connection.
enum Link {
    /// Waiting for the TCP connection; the verification to use once it is up.
    Connecting(Verify),
    /// The SOCKS5 handshake.
    Socks(Socks5Client),
    /// The SMTP session.
    Smtp(Box<ClientSession>),
}

/// The current connection.
struct Conn {
    id: ConnId,
    host: String,
    addr: SocketAddr,
    out: Vec<u8>,
    link: Link,
    /// For the TLS record.
    mode: TlsMode,
    implicit: bool,
    policy: TlsPolicyKind,
    info: Option<TlsInfo>,
    /// A reporting verification's failure: TLS was used anyway.
    verify_failed: Option<crate::tls::TlsFailure>,
    ext: Extensions,
    done: Option<(Outcome, Extensions)>,
    failed: Option<ClientError>,
}

/// The deadlines a delivery keeps; [`Output::Idle`] names the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timer {
    /// An effect's answer: [`DeliveryConfig::effect_timeout`].
    Effect,
    /// Connecting, and the SOCKS5 handshake: [`DeliveryConfig::connect_timeout`].
    Connect,
    /// A reply or the TLS handshake of the SMTP session: [`DeliveryConfig::timeouts`].
    Session,
}

impl DeliverySession {
    /// The delivery's own earliest timer, with its deadline.
    fn next_timer(&self) -> Option<(Timer, Instant)> {
        [Timer::Effect, Timer::Connect]
            .into_iter()
            .filter_map(|t| self.timers.deadline(t).map(|at| (t, at)))
            .min_by_key(|(_, at)| *at)
    }

    /// `Idle` for the earliest of our timers and the session's deadline.
    fn idle(&self, session: Option<Instant>) -> Output {
        let next = match (self.next_timer(), session) {
            (Some((t, a)), Some(b)) if a <= b => Some((t, a)),
            (_, Some(b)) => Some((Timer::Session, b)),
            (ours, None) => ours,
        };
        Output::Idle {
            deadline: next.map(|(_, at)| at),
            timer: next.map(|(t, _)| t),
        }
    }
}

/// One delivery.
pub struct DeliverySession {
    config: Arc<DeliveryConfig>,
    /// The job being delivered.
    job: Job,
    /// The jobs after it, for the same destination (connection reuse).
    follow: VecDeque<Job>,
    /// One report per finished job, in order.
    reports: Vec<Report>,
    /// The TLS of every connection, once each (TLS reporting).
    connections_tls: Vec<TlsAttempt>,
    target: Target,
    rng: Rng,
    resolve: Option<Resolve>,
    hosts: Vec<HostEntry>,
    host_i: usize,
    ip_i: usize,
    mech_i: usize,
    mechanisms: Vec<Option<Mechanism>>,
    pending: Option<Pending>,
    conn: Option<Conn>,
    timers: TimerTable<Timer>,
    outputs: VecDeque<Output>,
    next_token: u64,
    next_conn: u64,
    last: AttemptResult,
    /// Every job has its report.
    done: bool,
    /// The TLS of the connections the current job used.
    tls_log: Vec<TlsAttempt>,
    last_now: Option<Instant>,
    /// The verification for the SMTP session while the SOCKS5 handshake runs.
    socks_verify: Option<Verify>,
}

impl std::fmt::Debug for DeliverySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliverySession")
            .field("domain", &self.job.domain)
            .field("host_i", &self.host_i)
            .field("ip_i", &self.ip_i)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl DeliverySession {
    /// A delivery of `job`; the first effects are ready to poll.
    pub fn new(config: Arc<DeliveryConfig>, job: Job, now: Now) -> DeliverySession {
        DeliverySession::new_many(config, job, Vec::new(), now)
    }

    /// A delivery of `job`, then of the `follow` jobs on the same connection while it stays
    /// healthy (connection reuse). They must have `job`'s domain and REQUIRETLS state (the
    /// TLS requirement of a host is decided once); what differs is checked per transaction
    /// by the SMTP session (SMTPUTF8, 8BITMIME, SIZE).
    pub fn new_many(
        config: Arc<DeliveryConfig>,
        mut job: Job,
        follow: Vec<Job>,
        now: Now,
    ) -> DeliverySession {
        job.needs.requiretls = job.requiretls == Some(true);
        let follow: VecDeque<Job> = follow
            .into_iter()
            .map(|mut j| {
                j.needs.requiretls = j.requiretls == Some(true);
                j
            })
            .collect();
        let mut rng = Rng::new(job.seed);
        let mut setup_error = None;
        let target = match &config.transport {
            Transport::Direct(d) => Target::Mx {
                opts: MxOptions {
                    ipv4: d.ipv4,
                    ipv6: d.ipv6,
                    ..MxOptions::default()
                },
                proxy: None,
                ehlo: config.our_hostname.clone(),
            },
            Transport::Socks5(s) => Target::Mx {
                opts: MxOptions::default(),
                proxy: Some(s.proxy),
                ehlo: match Host::parse(&s.ehlo_hostname) {
                    Ok(h) => h,
                    Err(e) => {
                        setup_error = Some(temp(
                            format!("ehlo_hostname {:?}: {e}", s.ehlo_hostname),
                            Enhanced::new(4, 3, 5),
                        ));
                        config.our_hostname.clone()
                    }
                },
            },
            Transport::Smarthost(t) => Target::Relay {
                host: t.host.clone(),
                port: t.port,
                tls: t.tls,
                auth: t.auth.clone(),
            },
            Transport::Submission(t) => Target::Relay {
                host: t.host.clone(),
                port: t.port,
                tls: if t.implicit_tls {
                    SmtpTls::Implicit { verify: true }
                } else {
                    SmtpTls::StartTls { verify: true }
                },
                auth: Some(t.auth.clone()),
            },
        };
        let mechanisms = match &target {
            Target::Relay { auth: Some(a), .. } if !a.mechanisms.is_empty() => {
                a.mechanisms.iter().copied().map(Some).collect()
            }
            _ => vec![None],
        };
        let domain = job.domain.clone();
        let mut s = DeliverySession {
            last: temp(
                format!("no host of {domain} reachable"),
                Enhanced::new(4, 4, 1),
            ),
            resolve: None,
            hosts: Vec::new(),
            host_i: 0,
            ip_i: 0,
            mech_i: 0,
            mechanisms,
            pending: None,
            conn: None,
            timers: TimerTable::default(),
            outputs: VecDeque::new(),
            next_token: 0,
            next_conn: 0,
            done: false,
            follow,
            reports: Vec::new(),
            connections_tls: Vec::new(),
            tls_log: Vec::new(),
            last_now: Some(now.mono),
            socks_verify: None,
            rng: rng.child(),
            config,
            job,
            target,
        };
        match setup_error {
            Some(r) => s.finish_all(r),
            None => s.start(now),
        }
        s
    }

    /// The results of the first job, once [`Output::Done`] was returned.
    pub fn report(&self) -> Option<&Report> {
        self.reports.first().filter(|_| self.done)
    }

    /// The results of every job, in order, once [`Output::Done`] was returned (empty
    /// before).
    pub fn reports(&self) -> &[Report] {
        if self.done {
            &self.reports
        } else {
            &[]
        }
    }

    /// The report of job `i` (0: the first) once it is final ([`Event::JobDone`]), even
    /// while later jobs are being delivered.
    pub fn job_report(&self, i: usize) -> Option<&Report> {
        self.reports.get(i)
    }

    /// The TLS of every connection the delivery used, once each (for TLS reports; a
    /// job's [`Report::tls`] names the connections it used, so a reused connection is in
    /// several).
    pub fn connections_tls(&self) -> &[TlsAttempt] {
        &self.connections_tls
    }

    /// Whether the delivery is over.
    pub fn is_done(&self) -> bool {
        self.done && self.outputs.is_empty()
    }

    fn start(&mut self, now: Now) {
        match self.target.clone() {
            Target::Mx { opts, .. } => {
                let plan = MxPlan::new(&self.job.domain, opts, self.rng.child());
                let limits = CheckLimits {
                    answer_timeout: self.config.effect_timeout,
                    max_questions: MX_PLAN_QUESTIONS,
                    max_batch: MX_PLAN_QUESTIONS,
                };
                self.resolve = Some(Resolve::Mx(Box::new(CheckSession::new(plan, limits))));
                self.advance_dns(now);
            }
            Target::Relay { host, .. } => {
                if let Ok(ip) = host.parse::<IpAddr>() {
                    self.hosts.push(HostEntry {
                        host,
                        ips: vec![ip],
                        tls: None,
                    });
                    return self.next_attempt(now);
                }
                let name = host.trim_end_matches('.').to_ascii_lowercase();
                let lookups: Vec<Lookup> = [RecordType::A, RecordType::Aaaa]
                    .into_iter()
                    .map(|rtype| Lookup {
                        name: name.clone(),
                        rtype,
                    })
                    .collect();
                self.resolve = Some(Resolve::Relay);
                self.ask_dns(lookups, None);
                self.timers
                    .set(Timer::Effect, now.mono + self.config.effect_timeout);
            }
        }
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    /// Gives DNS lookups out as an effect with our token (`plan`: the MX plan session's
    /// token for them).
    fn ask_dns(&mut self, lookups: Vec<Lookup>, plan: Option<Token>) {
        let token = self.token();
        self.outputs
            .push_back(Output::Effect(token, Effect::Dns(lookups.clone())));
        self.pending = Some(Pending::Dns {
            token,
            lookups,
            plan,
        });
    }

    /// Polls the MX plan's session: forwards its effect (with its deadline as our effect
    /// timer), or acts on its verdict.
    fn advance_dns(&mut self, now: Now) {
        let Some(Resolve::Mx(plan)) = &mut self.resolve else {
            return;
        };
        let verdict = match plan.poll(now) {
            CheckOutput::Effect(inner, lookups) => {
                let deadline = match plan.poll(now) {
                    CheckOutput::Idle { deadline, .. } => deadline,
                    _ => None,
                };
                self.ask_dns(lookups, Some(inner));
                match deadline {
                    Some(at) => self.timers.set(Timer::Effect, at),
                    None => self.timers.stop(Timer::Effect),
                }
                return;
            }
            CheckOutput::Idle { deadline, .. } => {
                // Still waiting (an early timeout): keep the effect and its deadline.
                if let Some(at) = deadline {
                    self.timers.set(Timer::Effect, at);
                }
                return;
            }
            CheckOutput::Done(v) => v,
            CheckOutput::GaveUp(_) => {
                // Too many questions, or waiting without a question asked: do not hang on
                // it.
                self.resolve = None;
                self.pending = None;
                self.timers.stop(Timer::Effect);
                return self.finish_all(temp(
                    "DNS lookups did not finish".into(),
                    Enhanced::new(4, 4, 3),
                ));
            }
        };
        self.resolve = None;
        self.pending = None;
        self.timers.stop(Timer::Effect);
        match verdict {
            MxVerdict::Hosts(hosts) => {
                self.hosts = hosts
                    .into_iter()
                    .map(|h| HostEntry {
                        host: h.host,
                        ips: h.ips,
                        tls: None,
                    })
                    .collect();
                self.next_attempt(now);
            }
            v => {
                let domain = self.job.domain.clone();
                let r = v.attempt_result(&domain).unwrap_or_else(|| {
                    temp(format!("no hosts for {domain}"), Enhanced::new(4, 4, 4))
                });
                self.finish_all(r);
            }
        }
    }

    fn relay_addresses(&mut self, now: Now, lookups: &[Lookup], answers: Vec<LookupResult>) {
        let host = match &self.target {
            Target::Relay { host, .. } => host.clone(),
            Target::Mx { .. } => return,
        };
        let mut ips = Vec::new();
        let mut tempfail = None;
        for (_, r) in lookups.iter().zip(answers) {
            match r {
                LookupResult::Records { records, .. } => {
                    ips.extend(records.iter().filter_map(|r| match r {
                        Record::A(a) => Some(IpAddr::V4(*a)),
                        Record::Aaaa(a) => Some(IpAddr::V6(*a)),
                        _ => None,
                    }))
                }
                LookupResult::TempFail(e) => tempfail = Some(e),
                LookupResult::NxDomain | LookupResult::NoData => {}
            }
        }
        if ips.is_empty() {
            let why = tempfail.unwrap_or_else(|| "no A or AAAA records".into());
            return self.finish_all(AttemptResult::Temporary(Failure {
                host: Some(host.clone()),
                reply: None,
                detail: format!("looking up {host}: {why}"),
                enhanced: Some(Enhanced::new(4, 4, 3)),
            }));
        }
        self.hosts.push(HostEntry {
            host,
            ips,
            tls: None,
        });
        self.next_attempt(now);
    }

    /// The TLS of the relay target as a host requirement, and whether it is implicit.
    fn relay_tls(&self, tls: SmtpTls) -> Result<(HostTlsConnect, bool), AttemptResult> {
        // REQUIRETLS needs verified TLS whatever the transport says.
        let tls = match (self.job.requiretls, tls) {
            (Some(true), SmtpTls::Implicit { .. }) => SmtpTls::Implicit { verify: true },
            (Some(true), _) => SmtpTls::StartTls { verify: true },
            (_, t) => t,
        };
        let verify = |v: bool| -> Result<Verify, AttemptResult> {
            if !v {
                return Ok(Verify::None);
            }
            match &self.config.pkix {
                Some(c) => Ok(Verify::Pkix(Arc::clone(c))),
                None => Err(temp(
                    "no trusted roots configured for verified TLS".into(),
                    Enhanced::new(4, 7, 10),
                )),
            }
        };
        let c = |mode, verify| HostTlsConnect {
            mode,
            verify,
            policy: TlsPolicyKind::NoPolicy,
        };
        Ok(match tls {
            SmtpTls::Opportunistic => (c(TlsMode::Opportunistic, Verify::None), false),
            SmtpTls::None => (c(TlsMode::Skip, Verify::None), false),
            SmtpTls::StartTls { verify: v } => (c(TlsMode::RequiredStartTls, verify(v)?), false),
            SmtpTls::Implicit { verify: v } => (c(TlsMode::Skip, verify(v)?), true),
        })
    }

    /// Starts the next connection attempt, or ends the delivery when none is left.
    fn next_attempt(&mut self, now: Now) {
        loop {
            let Some(h) = self.hosts.get(self.host_i) else {
                let last = self.last.clone();
                return self.finish_all(last);
            };
            let host = h.host.clone();
            let Some(ip) = h.ips.get(self.ip_i).copied() else {
                self.host_i += 1;
                self.ip_i = 0;
                self.mech_i = 0;
                continue;
            };
            let (connect, implicit, port) = match self.target.clone() {
                Target::Relay { tls, port, .. } => match self.relay_tls(tls) {
                    Ok((c, i)) => (c, i, port),
                    Err(r) => return self.finish_all(r),
                },
                Target::Mx { .. } => {
                    let tls = match &h.tls {
                        Some(t) => t.clone(),
                        None => match self.config.host_tls {
                            HostTlsSource::Builtin => {
                                let t = builtin_host_tls(
                                    self.job.requiretls,
                                    self.config.pkix.as_ref(),
                                );
                                if let Some(h) = self.hosts.get_mut(self.host_i) {
                                    h.tls = Some(t.clone());
                                }
                                t
                            }
                            HostTlsSource::Ask => {
                                let token = self.token();
                                self.outputs.push_back(Output::Effect(
                                    token,
                                    Effect::HostTls {
                                        domain: self.job.domain.clone(),
                                        host,
                                        requiretls: self.job.requiretls,
                                    },
                                ));
                                self.pending = Some(Pending::HostTls { token });
                                self.timers
                                    .set(Timer::Effect, now.mono + self.config.effect_timeout);
                                return;
                            }
                        },
                    };
                    match tls {
                        HostTls::Connect(c) => (c, false, self.config.smtp_port),
                        HostTls::Skip(why) => {
                            self.last = AttemptResult::Temporary(Failure {
                                host: Some(host.clone()),
                                reply: None,
                                detail: format!("{host}: {why}"),
                                enhanced: Some(Enhanced::new(4, 7, 5)),
                            });
                            self.host_i += 1;
                            self.ip_i = 0;
                            continue;
                        }
                        HostTls::Fail { enhanced, detail } => {
                            return self.finish_all(AttemptResult::Permanent(Failure {
                                host: Some(host.clone()),
                                reply: None,
                                detail: format!("{host}: {detail}"),
                                enhanced: Some(enhanced),
                            }));
                        }
                    }
                }
            };
            return self.connect(now, host, SocketAddr::new(ip, port), connect, implicit);
        }
    }

    fn connect(
        &mut self,
        now: Now,
        host: String,
        addr: SocketAddr,
        tls: HostTlsConnect,
        implicit: bool,
    ) {
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        let proxy = match &self.target {
            Target::Mx { proxy, .. } => *proxy,
            Target::Relay { .. } => None,
        };
        let dial = proxy.unwrap_or(addr);
        let source_ip = self
            .config
            .source_ips
            .iter()
            .find(|s| s.is_ipv4() == dial.is_ipv4())
            .copied();
        let token = self.token();
        self.outputs.push_back(Output::Event(Event::Connecting {
            host: host.clone(),
            addr,
        }));
        self.outputs.push_back(Output::Effect(
            token,
            Effect::Connect {
                conn: id,
                addr: dial,
                source_ip,
                timeout: self.config.connect_timeout,
            },
        ));
        self.pending = Some(Pending::Connect { token, conn: id });
        self.timers
            .set(Timer::Connect, now.mono + self.config.connect_timeout);
        // The session config is kept until the connection is up.
        self.conn = Some(Conn {
            id,
            host,
            addr,
            out: Vec::new(),
            link: Link::Connecting(tls.verify),
            mode: tls.mode,
            implicit,
            policy: tls.policy,
            info: None,
            verify_failed: None,
            ext: Extensions::default(),
            done: None,
            failed: None,
        });
    }

    /// Takes one input. For [`Input::Received`], returns how many bytes were consumed; the
    /// caller keeps the rest and offers it again with more input.
    pub fn handle(&mut self, now: Now, input: Input<'_>) -> Result<usize, DeliveryError> {
        let now = self.guard(now);
        match input {
            Input::Completed(token, c) => self.completed(now, token, c).map(|()| 0),
            Input::Received(id, bytes) => Ok(self.received(now, id, bytes)),
            Input::Closed(id) => {
                self.closed(now, id);
                Ok(0)
            }
            Input::Timeout => {
                self.timeout(now);
                Ok(0)
            }
        }
    }

    /// A `now` earlier than one seen before is replaced by the latest.
    fn guard(&mut self, now: Now) -> Now {
        match self.last_now {
            Some(l) if l > now.mono => Now { mono: l, ..now },
            _ => {
                self.last_now = Some(now.mono);
                now
            }
        }
    }

    /// The next output; call until it returns `Idle` (or `Done`) after every `handle`.
    pub fn poll(&mut self, now: Now, tx: &mut Vec<u8>) -> Output {
        let now = self.guard(now);
        loop {
            if let Some(o) = self.outputs.pop_front() {
                return o;
            }
            let Some(conn) = self.conn.as_mut() else {
                if self.done {
                    return Output::Done;
                }
                return self.idle(None);
            };
            if !conn.out.is_empty() {
                tx.append(&mut conn.out);
                return Output::Transmit(conn.id);
            }
            let Link::Smtp(client) = &mut conn.link else {
                return self.idle(None);
            };
            match client.poll(now, tx) {
                client::Output::Transmit => return Output::Transmit(conn.id),
                client::Output::Event(ev) => self.client_event(now, ev),
                client::Output::Idle { deadline, .. } => return self.idle(deadline),
                client::Output::Close => self.end_session(now),
            }
        }
    }

    fn completed(&mut self, now: Now, token: Token, c: Completion) -> Result<(), DeliveryError> {
        let matches = match &self.pending {
            Some(Pending::Dns { token: t, .. })
            | Some(Pending::HostTls { token: t })
            | Some(Pending::Connect { token: t, .. }) => *t == token,
            None => false,
        };
        if !matches {
            // An answer to an effect given up on (deadline passed): nothing waits for it.
            return Ok(());
        }
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        match (pending, c) {
            (Pending::Dns { lookups, plan, .. }, Completion::Dns(answers)) => {
                self.timers.stop(Timer::Effect);
                match (self.resolve.as_mut(), plan) {
                    (Some(Resolve::Mx(session)), Some(inner)) => {
                        session.handle(now, CheckInput::Answered(inner, answers));
                        self.advance_dns(now);
                    }
                    (Some(Resolve::Relay), _) => {
                        self.resolve = None;
                        self.relay_addresses(now, &lookups, answers);
                    }
                    _ => {}
                }
            }
            (Pending::HostTls { .. }, Completion::HostTls(t)) => {
                self.timers.stop(Timer::Effect);
                if let Some(h) = self.hosts.get_mut(self.host_i) {
                    h.tls = Some(t);
                }
                self.next_attempt(now);
            }
            (Pending::Connect { conn, .. }, Completion::Connected) => self.connected(now, conn),
            (Pending::Connect { .. }, Completion::ConnectFailed(why)) => {
                self.timers.stop(Timer::Connect);
                self.link_failed(now, why);
            }
            (p, _) => {
                self.pending = Some(p);
                return Err(DeliveryError::Misuse("completion of the wrong kind"));
            }
        }
        Ok(())
    }

    fn connected(&mut self, now: Now, id: ConnId) {
        let proxy = match &self.target {
            Target::Mx { proxy, .. } => *proxy,
            Target::Relay { .. } => None,
        };
        let Some(conn) = self.conn.as_mut().filter(|c| c.id == id) else {
            return;
        };
        match proxy {
            Some(_) => {
                // The proxy handshake shares the connect deadline.
                let verify = match std::mem::replace(&mut conn.link, Link::Connecting(Verify::None))
                {
                    Link::Connecting(v) => v,
                    other => {
                        conn.link = other;
                        return;
                    }
                };
                let socks =
                    Socks5Client::new(conn.addr, self.config.proxy_auth.clone(), &mut conn.out);
                conn.link = Link::Socks(socks);
                self.socks_verify = Some(verify);
            }
            None => {
                self.timers.stop(Timer::Connect);
                self.start_smtp(now);
            }
        }
    }

    /// Starts the SMTP session on the current connection.
    fn start_smtp(&mut self, now: Now) {
        let (ehlo, auth) = match &self.target {
            Target::Mx { ehlo, .. } => (ehlo.clone(), None),
            Target::Relay { auth, .. } => (self.config.our_hostname.clone(), auth.clone()),
        };
        let mechanism = self.mechanisms.get(self.mech_i).copied().flatten();
        let seed = self.rng.next_u64();
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let verify = match std::mem::replace(&mut conn.link, Link::Connecting(Verify::None)) {
            Link::Connecting(v) => v,
            Link::Socks(_) => self.socks_verify.take().unwrap_or(Verify::None),
            Link::Smtp(c) => {
                conn.link = Link::Smtp(c);
                return;
            }
        };
        let mut cfg = ClientConfig::new(ehlo, conn.host.clone());
        cfg.tls_mode = conn.mode;
        cfg.verification = verify;
        cfg.implicit_tls = conn.implicit;
        // The results are final at the reply to the data: the session ends right after
        // QUIT is sent, so that the queue records them without waiting for the 221.
        cfg.skip_quit_response = true;
        cfg.timeouts = self.config.timeouts;
        cfg.seed = seed;
        cfg.auth = auth.map(|a| Credentials {
            mechanism,
            username: a.username,
            password: a.password,
        });
        let mut client = ClientSession::new(Arc::new(cfg), now);
        let delivery = Delivery {
            mail_from: self.job.mail_from.clone(),
            recipients: self.job.recipients.clone(),
            params: self.job.params.clone(),
            message: Arc::clone(&self.job.message),
            needs: self.job.needs,
        };
        // A session that already failed (TLS setup) reports it through its events.
        let _ = client.handle(now, client::Input::Deliver(Box::new(delivery)));
        conn.link = Link::Smtp(Box::new(client));
    }

    fn received(&mut self, now: Now, id: ConnId, bytes: &[u8]) -> usize {
        let Some(conn) = self.conn.as_mut().filter(|c| c.id == id) else {
            // A connection we closed: its bytes are dropped.
            return bytes.len();
        };
        match &mut conn.link {
            Link::Connecting(_) => bytes.len(),
            Link::Smtp(client) => client
                .handle(now, client::Input::Received(bytes))
                .unwrap_or(bytes.len()),
            Link::Socks(socks) => match socks.feed(bytes, &mut conn.out) {
                Ok(n) => {
                    if !socks.is_done() {
                        return n;
                    }
                    self.timers.stop(Timer::Connect);
                    self.start_smtp(now);
                    let rest = bytes.get(n..).unwrap_or_default();
                    if rest.is_empty() {
                        return n;
                    }
                    n + self.received(now, id, rest)
                }
                Err(e) => {
                    self.timers.stop(Timer::Connect);
                    let proxy = self.proxy_name();
                    self.link_failed(now, format!("through SOCKS5 proxy {proxy}: {e}"));
                    bytes.len()
                }
            },
        }
    }

    fn proxy_name(&self) -> String {
        match &self.target {
            Target::Mx { proxy: Some(p), .. } => p.to_string(),
            _ => String::new(),
        }
    }

    fn closed(&mut self, now: Now, id: ConnId) {
        let Some(conn) = self.conn.as_mut().filter(|c| c.id == id) else {
            return;
        };
        match &mut conn.link {
            Link::Smtp(client) => {
                let _ = client.handle(now, client::Input::PeerClosed);
            }
            Link::Socks(_) => {
                self.timers.stop(Timer::Connect);
                let proxy = self.proxy_name();
                self.link_failed(
                    now,
                    format!("through SOCKS5 proxy {proxy}: proxy closed the connection"),
                );
            }
            Link::Connecting(_) => {}
        }
    }

    fn timeout(&mut self, now: Now) {
        while let Some(t) = self.timers.expired(now.mono) {
            match t {
                Timer::Effect => match self.pending.take() {
                    // The MX plan's deadline is its session's: the session answers the
                    // overdue lookups with temporary failures and goes on to its verdict.
                    Some(p @ Pending::Dns { plan: Some(_), .. }) => {
                        self.pending = Some(p);
                        if let Some(Resolve::Mx(session)) = &mut self.resolve {
                            session.handle(now, CheckInput::Timeout);
                        }
                        self.advance_dns(now);
                    }
                    Some(Pending::Dns { .. }) => {
                        let domain = self.job.domain.clone();
                        self.resolve = None;
                        self.finish_all(temp(
                            format!("looking up mail servers for {domain}: DNS timed out"),
                            Enhanced::new(4, 4, 3),
                        ));
                    }
                    Some(Pending::HostTls { .. }) => {
                        if let Some(h) = self.hosts.get_mut(self.host_i) {
                            h.tls = Some(HostTls::Skip("TLS policy not known in time".into()));
                        }
                        self.next_attempt(now);
                    }
                    p => self.pending = p,
                },
                Timer::Connect => {
                    let what = match self.conn.as_ref().map(|c| &c.link) {
                        Some(Link::Socks(_)) => {
                            let proxy = self.proxy_name();
                            format!("through SOCKS5 proxy {proxy}: handshake timed out")
                        }
                        _ => "connection timed out".to_string(),
                    };
                    self.pending = None;
                    self.link_failed(now, what);
                }
                // Kept by the client session, never in our table.
                Timer::Session => {}
            }
        }
        if let Some(Conn {
            link: Link::Smtp(client),
            ..
        }) = self.conn.as_mut()
        {
            let _ = client.handle(now, client::Input::Timeout);
        }
    }

    /// The current connection failed before SMTP: the next address.
    fn link_failed(&mut self, now: Now, why: String) {
        self.pending = None;
        let Some(conn) = self.conn.take() else {
            return;
        };
        self.socks_verify = None;
        self.outputs.push_back(Output::Close(conn.id));
        self.outputs.push_back(Output::Event(Event::AttemptFailed {
            host: conn.host.clone(),
            addr: conn.addr,
            error: why.clone(),
        }));
        self.last = AttemptResult::Temporary(Failure {
            host: Some(conn.host.clone()),
            reply: None,
            detail: format!("connecting to {} ({}): {why}", conn.host, conn.addr),
            enhanced: Some(Enhanced::new(4, 4, 1)),
        });
        self.ip_i += 1;
        self.mech_i = 0;
        self.next_attempt(now);
    }

    fn client_event(&mut self, now: Now, ev: client::Event) {
        if let client::Event::Done(o) = &ev {
            if self.reuse_for_next(o) {
                self.next_on_connection(now, o);
                if let Some(conn) = self.conn.as_ref() {
                    let id = conn.id;
                    self.outputs.push_back(Output::Event(Event::Client(id, ev)));
                }
                return;
            }
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match &ev {
            client::Event::Ready(x) => conn.ext = x.clone(),
            client::Event::TlsEstablished(i) => conn.info = Some(i.clone()),
            client::Event::VerifyFailed(f) => conn.verify_failed = Some(f.clone()),
            client::Event::Done(o) => {
                if conn.done.is_none() {
                    conn.done = Some((o.clone(), conn.ext.clone()));
                }
                if let Link::Smtp(c) = &mut conn.link {
                    let _ = c.handle(now, client::Input::Quit);
                }
            }
            client::Event::Failed(e) if conn.failed.is_none() => conn.failed = Some(e.clone()),
            _ => {}
        }
        let id = conn.id;
        self.outputs.push_back(Output::Event(Event::Client(id, ev)));
    }

    /// Whether the transaction that ended with `o` leaves the connection for the next job:
    /// a job waits, the session is healthy (no failure behind this `Done`), the outcome is
    /// not a connection-level failure, and it is not a relay's authentication problem that
    /// the next mechanism is to retry.
    fn reuse_for_next(&self, o: &Outcome) -> bool {
        if self.follow.is_empty() {
            return false;
        }
        let Some(conn) = self.conn.as_ref() else {
            return false;
        };
        let Link::Smtp(client) = &conn.link else {
            return false;
        };
        if conn.done.is_some() || conn.failed.is_some() || client.error().is_some() {
            return false;
        }
        let relay = matches!(self.target, Target::Relay { .. });
        let retry_mechanism = relay
            && self.mech_i + 1 < self.mechanisms.len()
            && !o.recipients.is_empty()
            && o.recipients
                .iter()
                .all(|r| r.as_ref().is_err_and(mechanism_problem));
        !retry_mechanism
            && matches!(
                connection_failure(SessionEnd::Done(o.clone(), conn.ext.clone())),
                SessionEnd::Done(..)
            )
    }

    /// The current job's transaction ended with `o` on a connection that goes on: its
    /// report, then the next job's transaction on the same session.
    fn next_on_connection(&mut self, now: Now, o: &Outcome) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let n = self.job.recipients.len();
        let results = outcome_results(&conn.host, o, &conn.ext, n);
        let host = conn.host.clone();
        let mut tls = std::mem::take(&mut self.tls_log);
        tls.extend(self.conn_tls(conn, None));
        self.push_report(Report {
            results,
            tls,
            remote_mta: Some(host),
        });
        let Some(next) = self.follow.pop_front() else {
            return;
        };
        self.job = next;
        let delivery = Delivery {
            mail_from: self.job.mail_from.clone(),
            recipients: self.job.recipients.clone(),
            params: self.job.params.clone(),
            message: Arc::clone(&self.job.message),
            needs: self.job.needs,
        };
        if let Some(Conn {
            link: Link::Smtp(client),
            ..
        }) = self.conn.as_mut()
        {
            // A session that cannot take it reports why through its events.
            let _ = client.handle(now, client::Input::Deliver(Box::new(delivery)));
        }
    }

    /// Adds the current job's report and says so.
    fn push_report(&mut self, r: Report) {
        let job = self.reports.len();
        self.reports.push(r);
        self.outputs
            .push_back(Output::Event(Event::JobDone { job }));
    }

    /// The TLS record of a connection (`err`: how its session failed, if it did).
    fn conn_tls(&self, conn: &Conn, err: Option<&ClientError>) -> Option<TlsAttempt> {
        let result = match &conn.verify_failed {
            // Delivered (or tried) over TLS that did not verify: a failure for the report.
            Some(f) if conn.info.is_some() => Some(TlsResult::Failed {
                result_type: failure_result_type(f),
                detail: f.detail.clone(),
            }),
            _ => classify(conn.info.as_ref(), err),
        }?;
        let policy_domain = match &self.target {
            Target::Mx { .. } => self.job.domain.clone(),
            Target::Relay { host, .. } => host.to_ascii_lowercase(),
        };
        Some(TlsAttempt {
            policy_domain,
            mx_host: conn.host.clone(),
            receiving_ip: conn.addr.ip(),
            policy: conn.policy,
            mode: mode_name(conn.mode, conn.implicit),
            result,
        })
    }

    /// The SMTP session of the current connection ended: results, or the next attempt.
    fn end_session(&mut self, now: Now) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        self.outputs.push_back(Output::Close(conn.id));
        let end = match (conn.done.take(), conn.failed.take()) {
            (Some((o, x)), _) => SessionEnd::Done(o, x),
            (None, Some(e)) => SessionEnd::Failed(e),
            (None, None) => SessionEnd::Failed(ClientError {
                stage: Stage::Quit,
                permanent: false,
                kind: ErrorKind::Transport(client::Transport::Closed),
                reply: None,
            }),
        };
        let end = connection_failure(end);
        let err = match &end {
            SessionEnd::Failed(e) => Some(e),
            SessionEnd::Done(..) => None,
        };
        if let Some(t) = self.conn_tls(&conn, err) {
            self.outputs.push_back(Output::Event(Event::Tls(t.clone())));
            self.connections_tls.push(t.clone());
            self.tls_log.push(t);
        }
        let n = self.job.recipients.len();
        let relay = matches!(self.target, Target::Relay { .. });
        let more = relay && self.mech_i + 1 < self.mechanisms.len();
        match end {
            SessionEnd::Done(o, _)
                if more
                    && !o.recipients.is_empty()
                    && o.recipients
                        .iter()
                        .all(|r| r.as_ref().is_err_and(mechanism_problem)) =>
            {
                self.mech_i += 1;
                self.next_attempt(now);
            }
            SessionEnd::Done(o, ext) => {
                let results = outcome_results(&conn.host, &o, &ext, n);
                self.finish(results, Some(conn.host));
            }
            SessionEnd::Failed(e) => {
                self.outputs.push_back(Output::Event(Event::AttemptFailed {
                    host: conn.host.clone(),
                    addr: conn.addr,
                    error: e.to_string(),
                }));
                if more && mechanism_problem(&e) {
                    self.mech_i += 1;
                    return self.next_attempt(now);
                }
                let mut r = error_result(&conn.host, &e);
                if !self.job.needs.requiretls {
                    r = policy_tls_temporary(r, &e);
                }
                // A refused greeting or a TLS failure may be particular to this address
                // (the other family, another host): try the rest first. A relay's
                // permanent error ends the attempt whatever its stage.
                if matches!(r, AttemptResult::Permanent(_)) && (relay || !is_connection_level(&e)) {
                    return self.finish(vec![r; n], Some(conn.host));
                }
                self.last = r;
                self.ip_i += 1;
                self.mech_i = 0;
                self.next_attempt(now);
            }
        }
    }

    fn finish_all(&mut self, r: AttemptResult) {
        let host = match &r {
            AttemptResult::Temporary(f) | AttemptResult::Permanent(f) => f.host.clone(),
            AttemptResult::Delivered { host, .. } => host.clone(),
        };
        let n = self.job.recipients.len();
        self.finish(vec![r; n], host);
    }

    /// The current job's results, and the end of the delivery: jobs still waiting get the
    /// same result (the session or connection failure that ended the current job would end
    /// theirs; a session that ended normally leaves none waiting).
    fn finish(&mut self, results: Vec<AttemptResult>, remote_mta: Option<String>) {
        if self.done {
            return;
        }
        self.done = true;
        self.timers.clear();
        self.pending = None;
        if let Some(c) = self.conn.take() {
            self.outputs.push_back(Output::Close(c.id));
        }
        let rest = results
            .first()
            .cloned()
            .unwrap_or_else(|| self.last.clone());
        let tls = std::mem::take(&mut self.tls_log);
        self.push_report(Report {
            results,
            tls,
            remote_mta: remote_mta.clone(),
        });
        for j in std::mem::take(&mut self.follow) {
            self.push_report(Report {
                results: vec![rest.clone(); j.recipients.len()],
                tls: Vec::new(),
                remote_mta: remote_mta.clone(),
            });
        }
    }
}
