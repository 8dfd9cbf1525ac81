//! Delivery over SMTP: the core client machine driven with blocking reads and writes over
//! one of the transports: direct to the MX hosts (MX plan through the binary's DNS, each
//! host's addresses in order, IPv4/IPv6 switches), the same through a SOCKS5 proxy, or to
//! a fixed smarthost or submission service (STARTTLS inside the machine, or implicit TLS
//! with a rustls stream around the socket; optional or required AUTH).

use std::collections::BTreeMap;
use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rmox_core::client::{
    ClientConfig, ClientError, ClientSession, Credentials, Delivery, ErrorKind, Event, Extensions,
    Input, Needs, Outcome, Output, Stage, TlsMode, Verify,
};
use rmox_core::delivery::is_connection_level;
use rmox_core::dns::{Lookup, LookupResult, Record, RecordType};
use rmox_core::queue::{
    AttemptResult, Failure, MxOptions, MxPlan, MxVerdict, SmtpAuth, SmtpTls, Transport,
    TransportSocks5,
};
use rmox_core::sasl::Mechanism;
use rmox_core::smtp::{Enhanced, ForwardPath, Host, MailParams, RcptParams, ReversePath};
use rmox_core::Rng;

use super::tlsresult::{classify, mode_name, TlsAttempt, TlsPolicy};
use super::{socks5, Connector, Job};
use crate::config::TransportSetup;
use crate::resolve::Dns;

/// SMTP delivery to the MX hosts of the recipient domain.
pub struct SmtpConnector {
    dns: Dns,
    our_hostname: Host,
    port: u16,
    connect_timeout: Duration,
    seed: AtomicU64,
    transports: BTreeMap<String, TransportSetup>,
    source_ipv4: Option<std::net::Ipv4Addr>,
    source_ipv6: Option<std::net::Ipv6Addr>,
}

impl SmtpConnector {
    /// A connector saying EHLO `hostname`, connecting to `port` of each MX host.
    pub fn new(
        dns: Dns,
        hostname: &str,
        port: u16,
        connect_timeout: Duration,
        seed: u64,
    ) -> Result<SmtpConnector, crate::Fail> {
        let our_hostname = Host::parse(hostname)
            .map_err(|e| crate::Fail(format!("hostname {hostname:?}: {e}")))?;
        Ok(SmtpConnector {
            dns,
            our_hostname,
            port,
            connect_timeout,
            seed: AtomicU64::new(seed),
            transports: BTreeMap::new(),
            source_ipv4: None,
            source_ipv6: None,
        })
    }

    /// Makes outgoing connections from these local addresses (per family).
    pub fn with_source_addresses(
        mut self,
        v4: Option<std::net::Ipv4Addr>,
        v6: Option<std::net::Ipv6Addr>,
    ) -> Self {
        self.source_ipv4 = v4;
        self.source_ipv6 = v6;
        self
    }

    /// A TCP connection to `addr` from the configured source address of its family.
    fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let source: Option<std::net::IpAddr> = match addr {
            SocketAddr::V4(_) => self.source_ipv4.map(Into::into),
            SocketAddr::V6(_) => self.source_ipv6.map(Into::into),
        };
        let Some(src) = source else {
            return TcpStream::connect_timeout(&addr, self.connect_timeout);
        };
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        s.bind(&SocketAddr::new(src, 0).into())?;
        s.connect_timeout(&addr.into(), self.connect_timeout)?;
        Ok(s.into())
    }

    /// Uses these named transports (routes refer to them by name).
    pub fn with_transports(mut self, transports: BTreeMap<String, TransportSetup>) -> Self {
        self.transports = transports;
        self
    }

    fn next_seed(&self) -> u64 {
        let s = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        Rng::new(s).next_u64()
    }
}

/// A PKIX client config trusting the CA certificates in the PEM file at `path`.
fn roots_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let p = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("CA bundle {p}: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("CA bundle {p}: no certificates"));
    }
    let cfg = rustls::ClientConfig::builder_with_provider(rmox_core::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The system's CA roots for PKIX verification (REQUIRETLS): `SSL_CERT_FILE`, else
/// /etc/ssl/certs/ca-certificates.crt.
fn pkix_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let path = std::env::var("SSL_CERT_FILE")
                .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
            roots_config(Path::new(&path))
        })
        .clone()
}

/// PKIX with `ca_file` when given, else the system's roots.
fn pkix_for(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    match ca_file {
        Some(p) => roots_config(p),
        None => pkix_config(),
    }
}

fn temp(detail: String, e: Enhanced) -> AttemptResult {
    AttemptResult::Temporary(Failure::local(detail, e))
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

/// The attempt result of a client error (a reply, or a local description).
fn error_result(host: &str, e: &ClientError) -> AttemptResult {
    if e.kind == ErrorKind::NotAttempted {
        return temp(
            format!("{host}: recipient not attempted in this transaction"),
            Enhanced::new(4, 5, 3),
        );
    }
    let f = match &e.reply {
        Some(r) => Failure::from_reply(host, r.clone()),
        None => Failure {
            host: Some(host.to_string()),
            reply: None,
            detail: format!("{host}: {e}"),
            enhanced: Some(if e.permanent {
                Enhanced::new(5, 0, 0)
            } else {
                Enhanced::new(4, 4, 2)
            }),
        },
    };
    if e.permanent {
        AttemptResult::Permanent(f)
    } else {
        AttemptResult::Temporary(f)
    }
}

/// How one connection ended.
enum SessionEnd {
    /// The transaction completed (some recipients may have failed).
    Done(Outcome, Extensions),
    /// The connection failed before the transaction completed.
    Failed(ClientError),
}

/// A blocking connection the client machine runs over: a TCP stream, or a TLS stream around
/// one (implicit TLS).
trait Conn: Read + Write {
    /// Bounds the next reads.
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()>;
}

impl Conn for TcpStream {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, d)
    }
}

impl Conn for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        self.sock.set_read_timeout(d)
    }
}

/// Drives a client session over a blocking stream until it closes; `tls` is set when TLS
/// was established.
fn drive<S: Conn>(
    stream: &mut S,
    cfg: Arc<ClientConfig>,
    delivery: Delivery,
    tls: &mut Option<rmox_core::tls::TlsInfo>,
) -> SessionEnd {
    let mut now = rmox_driver::now();
    let mut s = ClientSession::new(cfg, now);
    let mut done: Option<(Outcome, Extensions)> = None;
    let mut failed: Option<ClientError> = None;
    let mut ext = Extensions::default();
    if let Err(e) = s.handle(now, Input::Deliver(Box::new(delivery))) {
        return SessionEnd::Failed(e);
    }
    let mut tx = Vec::new();
    let mut inbuf: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let io_err = |e: std::io::Error| ClientError::io(rmox_core::client::Stage::Connect, e);
    loop {
        let mut deadline = None;
        let mut closed = false;
        loop {
            match s.poll(now, &mut tx) {
                Output::Transmit => {
                    if let Err(e) = stream.write_all(&tx).and_then(|_| stream.flush()) {
                        return SessionEnd::Failed(io_err(e));
                    }
                    tx.clear();
                }
                Output::Event(Event::Ready(x)) => ext = x,
                Output::Event(Event::TlsEstablished(i)) => *tls = Some(i),
                Output::Event(Event::Done(o)) => {
                    done = Some((o, ext.clone()));
                    let _ = s.handle(now, Input::Quit);
                }
                Output::Event(Event::Failed(e)) => failed = Some(e),
                Output::Event(ev) => tracing::trace!(?ev, "client"),
                Output::Idle { deadline: d } => {
                    deadline = d;
                    break;
                }
                Output::Close => {
                    closed = true;
                    break;
                }
            }
        }
        if closed || failed.is_some() {
            break;
        }
        now = rmox_driver::now();
        let wait = match deadline {
            Some(d) if d > now.mono => d - now.mono,
            Some(_) => Duration::from_millis(1),
            None => Duration::from_secs(600),
        };
        let _ = stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let r = stream.read(&mut buf);
        now = rmox_driver::now();
        let input_result = match r {
            Ok(0) => s.handle(now, Input::PeerClosed).map(|_| ()),
            Ok(n) => {
                inbuf.extend_from_slice(buf.get(..n).unwrap_or_default());
                match s.handle(now, Input::Received(&inbuf)) {
                    Ok(used) => {
                        inbuf.drain(..used.min(inbuf.len()));
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) if matches!(e.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut) => {
                s.handle(now, Input::Timeout).map(|_| ())
            }
            Err(e) if e.kind() == IoErrorKind::Interrupted => Ok(()),
            Err(e) => s
                .handle(now, Input::PeerClosed)
                .map(|_| ())
                .and(Err(io_err(e))),
        };
        if let Err(e) = input_result {
            if failed.is_none() && done.is_none() {
                failed = Some(e);
            }
            // Drain the remaining outputs (a Done for the transaction in flight).
            while let Output::Event(ev) = s.poll(now, &mut tx) {
                match ev {
                    Event::Done(o) if done.is_none() => done = Some((o, ext.clone())),
                    _ => {}
                }
            }
            break;
        }
    }
    let _ = stream.write_all(&tx).and_then(|_| stream.flush());
    match (done, failed) {
        (Some((o, x)), _) => SessionEnd::Done(o, x),
        (None, Some(e)) => SessionEnd::Failed(e),
        (None, None) => SessionEnd::Failed(ClientError {
            stage: rmox_core::client::Stage::Quit,
            permanent: false,
            kind: ErrorKind::Transport(rmox_core::client::Transport::Closed),
            reply: None,
        }),
    }
}

/// What every connection of one job sends.
struct Envelope {
    mail_from: ReversePath,
    recipients: Vec<(ForwardPath, RcptParams)>,
    params: MailParams,
    needs: Needs,
    message: Arc<[u8]>,
    /// REQUIRETLS state of the batch.
    requiretls: Option<bool>,
}

impl Envelope {
    fn from_job(job: &Job<'_>) -> Result<Envelope, AttemptResult> {
        let key = &job.batch.key;
        let mail_from = if key.mail_from.is_empty() {
            Ok(ReversePath::Null)
        } else {
            ReversePath::parse(&format!("<{}>", key.mail_from))
        };
        let Ok(mail_from) = mail_from else {
            return Err(AttemptResult::Permanent(Failure::local(
                format!("bad MAIL FROM address {:?}", key.mail_from),
                Enhanced::new(5, 1, 7),
            )));
        };
        let mut recipients = Vec::with_capacity(job.items.len());
        for it in job.items {
            let Ok(p) = ForwardPath::parse(&format!("<{}>", it.recipient)) else {
                return Err(AttemptResult::Permanent(Failure::local(
                    format!("bad recipient address {:?}", it.recipient),
                    Enhanced::new(5, 1, 3),
                )));
            };
            recipients.push((
                p,
                RcptParams {
                    notify: it.dsn.notify,
                    orcpt: it.dsn.orcpt.clone(),
                },
            ));
        }
        let first = job.items.first();
        Ok(Envelope {
            mail_from,
            recipients,
            params: MailParams {
                ret: first.and_then(|i| i.dsn.ret),
                envid: first.and_then(|i| i.dsn.envid.clone()),
                ..MailParams::default()
            },
            needs: Needs {
                smtputf8: job.entries.iter().any(|e| e.rcpt.smtputf8),
                requiretls: key.requiretls == Some(true),
                eightbit: job.entries.iter().any(|e| e.rcpt.has_8bit),
            },
            message: Arc::clone(job.message),
            requiretls: key.requiretls,
        })
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            mail_from: self.mail_from.clone(),
            recipients: self.recipients.clone(),
            params: self.params.clone(),
            message: Arc::clone(&self.message),
            needs: self.needs,
        }
    }
}

/// A fixed next hop.
struct Relay<'a> {
    host: &'a str,
    port: u16,
    tls: SmtpTls,
    auth: Option<&'a SmtpAuth>,
    ca_file: Option<&'a Path>,
}

/// Whether an error is about the AUTH mechanism (not offered, refused with 504, channel
/// binding unavailable) rather than the credentials or the connection.
fn mechanism_problem(e: &ClientError) -> bool {
    e.stage == Stage::Auth && e.reply.as_ref().is_none_or(|r| r.code == 504)
}

/// How MX connections are made.
enum Via<'a> {
    /// Straight TCP.
    Direct,
    /// Through a SOCKS5 proxy.
    Socks5 {
        s: &'a TransportSocks5,
        auth: Option<(&'a str, &'a str)>,
    },
}

/// A transaction that failed as a whole at the connection level (the machine reports a
/// failed STARTTLS as a transaction whose recipients all carry the error) as a failed
/// connection.
fn connection_failure(end: SessionEnd) -> SessionEnd {
    match end {
        SessionEnd::Done(o, x) => match &o.data {
            Err(e)
                if is_connection_level(e)
                    && o.recipients
                        .iter()
                        .all(|r| r.as_ref().is_err_and(is_connection_level)) =>
            {
                SessionEnd::Failed(e.clone())
            }
            _ => SessionEnd::Done(o, x),
        },
        f => f,
    }
}

fn connect_failure(host: &str, addr: SocketAddr, e: impl std::fmt::Display) -> AttemptResult {
    AttemptResult::Temporary(Failure {
        host: Some(host.to_string()),
        reply: None,
        detail: format!("connecting to {host} ({addr}): {e}"),
        enhanced: Some(Enhanced::new(4, 4, 1)),
    })
}

impl SmtpConnector {
    /// Delivery to the MX hosts of the recipient domain.
    fn deliver_mx(
        &self,
        job: &Job<'_>,
        env: &Envelope,
        opts: MxOptions,
        via: Via<'_>,
        log: &mut Vec<TlsAttempt>,
    ) -> Vec<AttemptResult> {
        let n = job.items.len();
        let all = |r: AttemptResult| vec![r; n];
        let domain = &job.batch.key.recipient_domain;
        let mut plan = MxPlan::new(domain, opts, Rng::new(self.next_seed()));
        let verdict = rmox_core::dns::run_sync(&mut plan, |q| self.dns.lookup(q), 64)
            .unwrap_or_else(|| MxVerdict::TempFail("DNS lookups did not finish".into()));
        let hosts = match verdict {
            MxVerdict::Hosts(h) => h,
            v => {
                return all(v.attempt_result(domain).unwrap_or_else(|| {
                    temp(format!("no hosts for {domain}"), Enhanced::new(4, 4, 4))
                }))
            }
        };
        let our_hostname = match &via {
            Via::Socks5 { s, .. } => match Host::parse(&s.ehlo_hostname) {
                Ok(h) => h,
                Err(e) => {
                    return all(temp(
                        format!("ehlo_hostname {:?}: {e}", s.ehlo_hostname),
                        Enhanced::new(4, 3, 5),
                    ))
                }
            },
            Via::Direct => self.our_hostname.clone(),
        };
        let (tls_mode, verification) = match env.requiretls {
            Some(true) => match pkix_config() {
                Ok(c) => (TlsMode::RequiredStartTls, Verify::Pkix(c)),
                Err(e) => return all(temp(e, Enhanced::new(4, 7, 10))),
            },
            Some(false) => (TlsMode::Opportunistic, Verify::IgnoreErrors),
            None => (TlsMode::Opportunistic, Verify::None),
        };
        let mut last = temp(
            format!("no host of {domain} reachable"),
            Enhanced::new(4, 4, 1),
        );
        for h in &hosts {
            for ip in &h.ips {
                let addr = SocketAddr::new(*ip, self.port);
                let conn = match &via {
                    Via::Direct => self.connect(addr).map_err(|e| e.to_string()),
                    Via::Socks5 { s, auth } => {
                        socks5::connect(s.proxy, *auth, addr, self.connect_timeout)
                            .map_err(|e| format!("through SOCKS5 proxy {}: {e}", s.proxy))
                    }
                };
                let mut stream = match conn {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::info!(host = %h.host, %addr, error = %e, "connect failed");
                        last = connect_failure(&h.host, addr, e);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(300)));
                let mut cfg = ClientConfig::new(our_hostname.clone(), h.host.clone());
                cfg.tls_mode = tls_mode;
                cfg.verification = verification.clone();
                cfg.seed = self.next_seed();
                let mut info = None;
                let end = connection_failure(drive(
                    &mut stream,
                    Arc::new(cfg),
                    env.delivery(),
                    &mut info,
                ));
                let err = match &end {
                    SessionEnd::Failed(e) => Some(e),
                    SessionEnd::Done(..) => None,
                };
                if let Some(result) = classify(info.as_ref(), err) {
                    log.push(TlsAttempt {
                        policy_domain: domain.clone(),
                        mx_host: h.host.clone(),
                        receiving_ip: ip.to_string(),
                        policy: TlsPolicy::NoPolicy,
                        mode: mode_name(tls_mode, false),
                        result,
                    });
                }
                match end {
                    SessionEnd::Done(o, ext) => return outcome_results(&h.host, &o, &ext, n),
                    SessionEnd::Failed(e) => {
                        tracing::info!(host = %h.host, %addr, error = %e, "delivery attempt failed");
                        let r = error_result(&h.host, &e);
                        // A refused greeting or a TLS failure may be particular to this
                        // address (the other family, another host): try the rest first.
                        if matches!(r, AttemptResult::Permanent(_)) && !is_connection_level(&e) {
                            return all(r);
                        }
                        last = r;
                    }
                }
            }
        }
        all(last)
    }

    /// The addresses of a smarthost: the IP itself, or its A and AAAA records.
    fn host_ips(&self, host: &str) -> Result<Vec<IpAddr>, AttemptResult> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        let lookups = [RecordType::A, RecordType::Aaaa].map(|rtype| Lookup {
            name: name.clone(),
            rtype,
        });
        let mut ips = Vec::new();
        let mut tempfail = None;
        for r in self.dns.lookup_many(&lookups) {
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
            return Err(AttemptResult::Temporary(Failure {
                host: Some(host.to_string()),
                reply: None,
                detail: format!("looking up {host}: {why}"),
                enhanced: Some(Enhanced::new(4, 4, 3)),
            }));
        }
        Ok(ips)
    }

    /// Delivery to a fixed host (smarthost, submission service).
    fn deliver_relay(
        &self,
        n: usize,
        env: &Envelope,
        relay: Relay<'_>,
        log: &mut Vec<TlsAttempt>,
    ) -> Vec<AttemptResult> {
        let Relay {
            host,
            port,
            tls,
            auth,
            ca_file,
        } = relay;
        let all = |r: AttemptResult| vec![r; n];
        // REQUIRETLS needs verified TLS whatever the transport says.
        let tls = match (env.requiretls, tls) {
            (Some(true), SmtpTls::Implicit { .. }) => SmtpTls::Implicit { verify: true },
            (Some(true), _) => SmtpTls::StartTls { verify: true },
            (_, t) => t,
        };
        let pkix = |verify: bool| -> Result<Option<Arc<rustls::ClientConfig>>, AttemptResult> {
            if !verify {
                return Ok(None);
            }
            pkix_for(ca_file)
                .map(Some)
                .map_err(|e| temp(e, Enhanced::new(4, 7, 10)))
        };
        // (STARTTLS mode, its verification, the rustls config for implicit TLS)
        let setup = match tls {
            SmtpTls::Opportunistic => Ok((TlsMode::Opportunistic, Verify::None, None)),
            SmtpTls::None => Ok((TlsMode::Skip, Verify::None, None)),
            SmtpTls::StartTls { verify } => pkix(verify).map(|c| {
                (
                    TlsMode::RequiredStartTls,
                    c.map_or(Verify::None, Verify::Pkix),
                    None,
                )
            }),
            SmtpTls::Implicit { verify } => pkix(verify).and_then(|c| {
                let c = match c {
                    Some(c) => c,
                    None => rmox_core::tls::client_config(rmox_core::tls::ClientVerify::AcceptAny)
                        .map_err(|e| temp(e.to_string(), Enhanced::new(4, 7, 0)))?,
                };
                Ok((TlsMode::Skip, Verify::None, Some(c)))
            }),
        };
        let (tls_mode, verification, implicit) = match setup {
            Ok(s) => s,
            Err(r) => return all(r),
        };
        let ips = match self.host_ips(host) {
            Ok(ips) => ips,
            Err(r) => return all(r),
        };
        // Configured mechanisms are tried in order, each on a new connection, while the
        // failure is about the mechanism (not offered, refused with 504, no channel
        // binding); none configured: the strongest the server offers.
        let mechanisms: Vec<Option<Mechanism>> = match auth {
            Some(a) if !a.mechanisms.is_empty() => a
                .mechanisms
                .iter()
                .filter_map(|m| Mechanism::from_name(m))
                .map(Some)
                .collect(),
            _ => vec![None],
        };
        let mut last = temp(format!("{host} not reachable"), Enhanced::new(4, 4, 1));
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            for (mi, mechanism) in mechanisms.iter().enumerate() {
                let stream = match self.connect(addr) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::info!(%host, %addr, error = %e, "connect failed");
                        last = connect_failure(host, addr, e);
                        break;
                    }
                };
                let _ = stream.set_nodelay(true);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(300)));
                let mut cfg = ClientConfig::new(self.our_hostname.clone(), host.to_string());
                cfg.tls_mode = tls_mode;
                cfg.verification = verification.clone();
                cfg.auth = auth.map(|a| Credentials {
                    mechanism: *mechanism,
                    username: a.username.clone(),
                    password: a.password.clone(),
                });
                cfg.seed = self.next_seed();
                let cfg = Arc::new(cfg);
                let mut info = None;
                let end = match &implicit {
                    None => {
                        let mut stream = stream;
                        drive(&mut stream, cfg, env.delivery(), &mut info)
                    }
                    Some(tc) => {
                        let name = match rustls::pki_types::ServerName::try_from(host.to_string()) {
                            Ok(n) => n,
                            Err(e) => {
                                return all(AttemptResult::Permanent(Failure::local(
                                    format!("{host}: not a TLS server name: {e}"),
                                    Enhanced::new(5, 7, 0),
                                )))
                            }
                        };
                        match rustls::ClientConnection::new(Arc::clone(tc), name) {
                            Ok(c) => {
                                let mut tls = rustls::StreamOwned::new(c, stream);
                                let end = drive(&mut tls, cfg, env.delivery(), &mut info);
                                if let (Some(v), Some(c)) = (
                                    tls.conn.protocol_version(),
                                    tls.conn.negotiated_cipher_suite(),
                                ) {
                                    info = Some(rmox_core::tls::TlsInfo {
                                        version: format!("{v:?}"),
                                        cipher: format!("{:?}", c.suite()),
                                        sni: None,
                                    });
                                }
                                end
                            }
                            Err(e) => {
                                return all(temp(
                                    format!("{host}: TLS: {e}"),
                                    Enhanced::new(4, 7, 0),
                                ))
                            }
                        }
                    }
                };
                let end = connection_failure(end);
                let err = match &end {
                    SessionEnd::Failed(e) => Some(e),
                    SessionEnd::Done(..) => None,
                };
                if let Some(result) = classify(info.as_ref(), err) {
                    log.push(TlsAttempt {
                        policy_domain: host.to_ascii_lowercase(),
                        mx_host: host.to_string(),
                        receiving_ip: ip.to_string(),
                        policy: TlsPolicy::NoPolicy,
                        mode: mode_name(tls_mode, implicit.is_some()),
                        result,
                    });
                }
                let more = mi + 1 < mechanisms.len();
                match end {
                    SessionEnd::Done(o, _)
                        if more
                            && !o.recipients.is_empty()
                            && o.recipients
                                .iter()
                                .all(|r| r.as_ref().is_err_and(mechanism_problem)) =>
                    {
                        continue
                    }
                    SessionEnd::Done(o, ext) => return outcome_results(host, &o, &ext, n),
                    SessionEnd::Failed(e) => {
                        tracing::info!(%host, %addr, error = %e, "delivery attempt failed");
                        if more && mechanism_problem(&e) {
                            continue;
                        }
                        let r = error_result(host, &e);
                        if matches!(r, AttemptResult::Permanent(_)) {
                            return all(r);
                        }
                        last = r;
                        break;
                    }
                }
            }
        }
        all(last)
    }
}

impl Connector for SmtpConnector {
    fn deliver(&self, job: &Job<'_>) -> Vec<AttemptResult> {
        self.deliver_recorded(job).0
    }

    fn deliver_recorded(&self, job: &Job<'_>) -> (Vec<AttemptResult>, Vec<TlsAttempt>) {
        let mut log = Vec::new();
        let r = self.deliver_logged(job, &mut log);
        (r, log)
    }
}

impl SmtpConnector {
    fn deliver_logged(&self, job: &Job<'_>, log: &mut Vec<TlsAttempt>) -> Vec<AttemptResult> {
        let n = job.items.len();
        let all = |r: AttemptResult| vec![r; n];
        let key = &job.batch.key;
        let setup = match key.transport.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => match self.transports.get(t) {
                Some(s) => Some(s),
                None => {
                    return all(temp(
                        format!("transport {t:?} is not configured"),
                        Enhanced::new(4, 3, 5),
                    ))
                }
            },
        };
        let env = match Envelope::from_job(job) {
            Ok(e) => e,
            Err(r) => return all(r),
        };
        let Some(setup) = setup else {
            return self.deliver_mx(job, &env, MxOptions::default(), Via::Direct, log);
        };
        let ca_file = setup.ca_file.as_deref();
        match &setup.transport {
            Transport::Direct(d) => {
                let opts = MxOptions {
                    ipv4: d.ipv4,
                    ipv6: d.ipv6,
                    ..MxOptions::default()
                };
                self.deliver_mx(job, &env, opts, Via::Direct, log)
            }
            Transport::Socks5(s) => {
                let auth = setup
                    .proxy_auth
                    .as_ref()
                    .map(|(u, p)| (u.as_str(), p.as_str()));
                self.deliver_mx(
                    job,
                    &env,
                    MxOptions::default(),
                    Via::Socks5 { s, auth },
                    log,
                )
            }
            Transport::Smarthost(t) => self.deliver_relay(
                n,
                &env,
                Relay {
                    host: &t.host,
                    port: t.port,
                    tls: t.tls,
                    auth: t.auth.as_ref(),
                    ca_file,
                },
                log,
            ),
            Transport::Submission(t) => {
                let tls = if t.implicit_tls {
                    SmtpTls::Implicit { verify: true }
                } else {
                    SmtpTls::StartTls { verify: true }
                };
                self.deliver_relay(
                    n,
                    &env,
                    Relay {
                        host: &t.host,
                        port: t.port,
                        tls,
                        auth: Some(&t.auth),
                        ca_file,
                    },
                    log,
                )
            }
            other => all(temp(
                format!("transport {other:?} is not supported"),
                Enhanced::new(4, 3, 5),
            )),
        }
    }
}
