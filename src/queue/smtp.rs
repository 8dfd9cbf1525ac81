//! Direct delivery over SMTP: MX plan through the binary's DNS, TCP connections to each
//! host's addresses in order, the core client machine driven with blocking reads and
//! writes.

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rmox_core::client::{
    ClientConfig, ClientError, ClientSession, Delivery, ErrorKind, Event, Extensions, Input, Needs,
    Outcome, Output, TlsMode, Verify,
};
use rmox_core::queue::{AttemptResult, Failure, MxOptions, MxPlan, MxVerdict};
use rmox_core::smtp::{Enhanced, ForwardPath, Host, MailParams, RcptParams, ReversePath};
use rmox_core::Rng;

use super::{Connector, Job};
use crate::resolve::Dns;

/// SMTP delivery to the MX hosts of the recipient domain.
pub struct SmtpConnector {
    dns: Dns,
    our_hostname: Host,
    port: u16,
    connect_timeout: Duration,
    seed: AtomicU64,
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
        })
    }

    fn next_seed(&self) -> u64 {
        let s = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        Rng::new(s).next_u64()
    }
}

/// The system's CA roots for PKIX verification (REQUIRETLS): `SSL_CERT_FILE`, else
/// /etc/ssl/certs/ca-certificates.crt.
fn pkix_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let path = std::env::var("SSL_CERT_FILE")
                .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
            let pem = std::fs::read(&path).map_err(|e| format!("CA bundle {path}: {e}"))?;
            let mut roots = rustls::RootCertStore::empty();
            let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                .filter_map(Result::ok)
                .collect();
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!("CA bundle {path}: no certificates"));
            }
            let cfg = rustls::ClientConfig::builder_with_provider(rmox_core::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(cfg))
        })
        .clone()
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

/// Drives a client session over a blocking stream until it closes.
fn drive(stream: &mut TcpStream, cfg: Arc<ClientConfig>, delivery: Delivery) -> SessionEnd {
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
    let io_err = |e: std::io::Error| ClientError {
        stage: rmox_core::client::Stage::Connect,
        permanent: false,
        kind: ErrorKind::Protocol(format!("i/o: {e}")),
        reply: None,
    };
    loop {
        let mut deadline = None;
        let mut closed = false;
        loop {
            match s.poll(now, &mut tx) {
                Output::Transmit => {
                    if let Err(e) = stream.write_all(&tx) {
                        return SessionEnd::Failed(io_err(e));
                    }
                    tx.clear();
                }
                Output::Event(Event::Ready(x)) => ext = x,
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
    let _ = stream.write_all(&tx);
    match (done, failed) {
        (Some((o, x)), _) => SessionEnd::Done(o, x),
        (None, Some(e)) => SessionEnd::Failed(e),
        (None, None) => SessionEnd::Failed(ClientError {
            stage: rmox_core::client::Stage::Quit,
            permanent: false,
            kind: ErrorKind::Eof,
            reply: None,
        }),
    }
}

impl Connector for SmtpConnector {
    fn deliver(&self, job: &Job<'_>) -> Vec<AttemptResult> {
        let n = job.items.len();
        let all = |r: AttemptResult| vec![r; n];
        let key = &job.batch.key;
        if let Some(t) = key.transport.as_deref().filter(|t| !t.is_empty()) {
            return all(temp(
                format!("transport {t:?} is not configured"),
                Enhanced::new(4, 3, 5),
            ));
        }
        let domain = &key.recipient_domain;
        let mut plan = MxPlan::new(domain, MxOptions::default(), Rng::new(self.next_seed()));
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
        // The message and its envelope.
        let mail_from = if key.mail_from.is_empty() {
            Ok(ReversePath::Null)
        } else {
            ReversePath::parse(&format!("<{}>", key.mail_from))
        };
        let Ok(mail_from) = mail_from else {
            return all(AttemptResult::Permanent(Failure::local(
                format!("bad MAIL FROM address {:?}", key.mail_from),
                Enhanced::new(5, 1, 7),
            )));
        };
        let mut recipients = Vec::with_capacity(n);
        for it in job.items {
            let Ok(p) = ForwardPath::parse(&format!("<{}>", it.recipient)) else {
                return all(AttemptResult::Permanent(Failure::local(
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
        let params = MailParams {
            ret: first.and_then(|i| i.dsn.ret),
            envid: first.and_then(|i| i.dsn.envid.clone()),
            ..MailParams::default()
        };
        let needs = Needs {
            smtputf8: job.entries.iter().any(|e| e.rcpt.smtputf8),
            requiretls: key.requiretls == Some(true),
            eightbit: job.entries.iter().any(|e| e.rcpt.has_8bit),
        };
        let (tls_mode, verification) = match key.requiretls {
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
                let mut stream = match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::info!(host = %h.host, %addr, error = %e, "connect failed");
                        last = AttemptResult::Temporary(Failure {
                            host: Some(h.host.clone()),
                            reply: None,
                            detail: format!("connecting to {} ({addr}): {e}", h.host),
                            enhanced: Some(Enhanced::new(4, 4, 1)),
                        });
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let _ = stream.set_write_timeout(Some(Duration::from_secs(300)));
                let mut cfg = ClientConfig::new(self.our_hostname.clone(), h.host.clone());
                cfg.tls_mode = tls_mode;
                cfg.verification = verification.clone();
                cfg.seed = self.next_seed();
                let delivery = Delivery {
                    mail_from: mail_from.clone(),
                    recipients: recipients.clone(),
                    params: params.clone(),
                    message: Arc::clone(job.message),
                    needs,
                };
                match drive(&mut stream, Arc::new(cfg), delivery) {
                    SessionEnd::Done(o, ext) => return outcome_results(&h.host, &o, &ext, n),
                    SessionEnd::Failed(e) => {
                        tracing::info!(host = %h.host, %addr, error = %e, "delivery attempt failed");
                        let r = error_result(&h.host, &e);
                        if matches!(r, AttemptResult::Permanent(_)) {
                            return all(r);
                        }
                        last = r;
                    }
                }
            }
        }
        all(last)
    }
}
