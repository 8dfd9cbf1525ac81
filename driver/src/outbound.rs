//! The outbound loop: drives one [`DeliverySession`] (a queue entry or a combined
//! transaction) to its [`Report`] on any runtime.
//!
//! The machine decides everything (MX plan, addresses, fallbacks, SOCKS5, TLS, SMTP); this
//! loop opens the TCP connections it asks for ([`Net::connect`], with the effect's source
//! address and timeout), keeps a map of open connections, races their reads against effect
//! answers and the machine's deadline, writes what it transmits and closes what it closes.
//! DNS questions and TLS requirements are answered by a [`DeliveryAnswerer`]: on the
//! runtime's blocking pool, or at once when the answer needs no blocking work.
//!
//! With a [`DeliveryAnswerer::policy`], the TLS requirement of each MX host
//! ([`Effect::HostTls`]) comes from the TLS policy machine ([`PolicySession`]: MTA-STS and
//! DANE) that this loop runs beside the delivery, one per delivery: its DNS questions go to
//! the [`PolicyAnswerer`]'s asynchronous lookup, its cache reads and writes to the blocking
//! pool, its policy fetches to [`crate::fetch::fetch`] over [`Net::connect`]; its deadline
//! joins the delivery's. When the delivery is done, [`deliver_reporting`] turns each
//! connection made under a verdict (and a failed policy fetch) into the TLS report results
//! to record ([`Delivered::tls_results`]).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt, FutureExt};
use rmox_core::delivery::{
    Completion, ConnId, DeliverySession, Effect, Event, HostTls, Input, Output, Report,
};
use rmox_core::dns::{Lookup, LookupResult};
use rmox_core::queue::{AttemptResult, Failure};
use rmox_core::smtp::Enhanced;
use rmox_core::tlspolicy::session::{
    Completion as PCompletion, Effect as PEffect, Input as PInput, Output as POutput,
};
use rmox_core::tlspolicy::{
    message_tls, CacheUpdate, FetchResponse, HostVerdict, PolicyConfig, PolicySession,
    SessionResult, StsCacheEntry,
};
use rmox_core::Token;

use crate::{now, Runtime};

/// What the outbound loop needs from a runtime beyond [`Runtime`]: outgoing TCP
/// connections and local tasks. Nothing here needs `Send` (glommio tasks are `!Send`).
pub trait Net: Runtime {
    /// A connected TCP stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;

    /// Connects to `addr`, from `source` (port chosen by the system) when given, giving up
    /// after `timeout`. Never blocks the runtime's thread.
    fn connect(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = io::Result<Self::Stream>>>>;

    /// Runs `f` as a task on this thread's executor. The returned future completes when the
    /// task has ended; keep it until then (dropping it may cancel the task).
    fn spawn<F: Future<Output = ()> + 'static>(&self, f: F) -> Pin<Box<dyn Future<Output = ()>>>;
}

/// Answers a delivery's effects other than connections. [`DeliveryAnswerer::answer`] runs
/// on the blocking pool and may block (DNS through a blocking resolver).
pub trait DeliveryAnswerer: Send + Sync + 'static {
    /// Answers [`Effect::Dns`] and [`Effect::HostTls`]; never given [`Effect::Connect`].
    fn answer(&self, effect: Effect) -> Completion;

    /// Answers `effect` at once when that needs no blocking work; called on the runtime's
    /// thread, must not block. By default the TLS requirement ([`Effect::HostTls`]) comes
    /// from [`DeliveryAnswerer::host_tls`].
    fn answer_now(&self, effect: &Effect) -> Option<Completion> {
        match effect {
            Effect::HostTls {
                domain,
                host,
                requiretls,
            } => Some(Completion::HostTls(self.host_tls(
                domain,
                host,
                *requiretls,
            ))),
            _ => None,
        }
    }

    /// The TLS requirement of MX `host` of `domain` when the machine asks
    /// ([`Effect::HostTls`]) and there is no [`DeliveryAnswerer::policy`] (relays, tests):
    /// typically core's `builtin_host_tls`. Must not block.
    fn host_tls(&self, domain: &str, host: &str, requiretls: Option<bool>) -> HostTls;

    /// The answers to the delivery's DNS questions ([`Effect::Dns`]) without blocking: a
    /// future polled on the runtime's thread (a resolver task or channel), one answer per
    /// lookup, in order. `Err` gives the lookups back (the default): then
    /// [`DeliveryAnswerer::answer`] answers them on the blocking pool.
    fn lookup(&self, lookups: Vec<Lookup>) -> Result<AsyncAnswers, Vec<Lookup>> {
        Err(lookups)
    }

    /// The TLS policy (MTA-STS, DANE) of this delivery: when given, [`Effect::HostTls`] is
    /// answered by a [`PolicySession`] the loop runs beside the delivery (one per
    /// delivery, created at the first question), and [`DeliveryAnswerer::host_tls`] is not
    /// used. `None` (the default): `host_tls` answers.
    fn policy(&self) -> Option<Arc<dyn PolicyAnswerer>> {
        None
    }
}

/// Answers the effects of the TLS policy machine ([`PolicySession`]) for the outbound loop.
/// DNS is asynchronous (a resolver task or channel); the cache calls may block and run on
/// the runtime's blocking pool; fetches are made by the loop itself ([`crate::fetch`]) with
/// [`PolicyAnswerer::fetch_roots`].
pub trait PolicyAnswerer: Send + Sync + 'static {
    /// The machine's settings (DNSSEC trust, WebPKI roots for MX hosts, effect timeout).
    fn config(&self) -> Arc<PolicyConfig>;

    /// The answers to `lookups`, one per lookup, in order; must not block the thread (the
    /// future is polled on the runtime's thread).
    fn lookup(&self, lookups: Vec<Lookup>) -> Pin<Box<dyn Future<Output = Vec<LookupResult>>>>;

    /// The cached MTA-STS policy of `domain`, expired or not (blocking allowed).
    fn cache_get(&self, domain: &str) -> Option<StsCacheEntry>;

    /// Writes a cache change (blocking allowed); a failure only costs a refetch.
    fn cache_update(&self, update: CacheUpdate);

    /// The WebPKI roots of MTA-STS policy fetches; `None`: fetches fail (the policy cannot
    /// be verified).
    fn fetch_roots(&self) -> Option<Arc<rustls::ClientConfig>>;
}

/// What a delivery ended with: the machine's report and the TLS report results of its
/// connections and policy fetch (RFC 8460), by policy domain.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The delivery machine's report.
    pub report: Report,
    /// One result per connection under a policy verdict (two for DANE: the recipient
    /// domain's and the MX host's), and the failed policy fetch if any.
    pub tls_results: Vec<SessionResult>,
}

impl Policy {
    fn new(answerer: Arc<dyn PolicyAnswerer>, domain: &str, requiretls: Option<bool>) -> Policy {
        Policy {
            session: PolicySession::new(answerer.config(), domain, message_tls(requiretls), now()),
            answerer,
            asks: Vec::new(),
            verdicts: BTreeMap::new(),
            pending: Vec::new(),
            writes: Vec::new(),
            deadline: None,
        }
    }
}

/// A policy effect being answered.
type PolicyAnswering = Pin<Box<dyn Future<Output = PCompletion>>>;

/// The policy machine of one delivery and what it waits for.
struct Policy {
    answerer: Arc<dyn PolicyAnswerer>,
    session: PolicySession,
    /// Delivery tokens waiting for a host's verdict.
    asks: Vec<(String, Token)>,
    /// Verdicts given, by host (the last one per host).
    verdicts: BTreeMap<String, HostVerdict>,
    pending: Vec<(Token, PolicyAnswering)>,
    /// Cache writes in progress.
    writes: Vec<Pin<Box<dyn Future<Output = ()>>>>,
    deadline: Option<Instant>,
}

/// Longest a write may block (the peer not reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(300);

/// Size of one socket read.
const READ_CHUNK: usize = 16 * 1024;

/// Unconsumed input kept per connection before it is treated as broken.
const MAX_UNCONSUMED: usize = 1 << 20;

/// An effect being answered on the blocking pool.
type Answering = Pin<Box<dyn Future<Output = Completion>>>;

/// DNS answers on their way ([`DeliveryAnswerer::lookup`]): one per lookup, in order.
pub type AsyncAnswers = Pin<Box<dyn Future<Output = Vec<LookupResult>>>>;

/// A connection being opened.
type Connecting<S> = Pin<Box<dyn Future<Output = io::Result<S>>>>;

/// One open connection.
struct Open<S> {
    stream: S,
    inbuf: Vec<u8>,
}

/// What ended one wait.
enum Woke<S> {
    Answer(Token, Completion),
    Connected(ConnId, Token, io::Result<S>),
    Read(ConnId, io::Result<usize>),
    /// A policy effect's answer (index in the pending list).
    Policy(usize, Token, PCompletion),
    Timer,
}

/// Drives `session` until it is done and returns its report. `cid` names the delivery
/// in log lines.
pub async fn deliver<R: Net>(
    rt: R,
    session: DeliverySession,
    answerer: Arc<dyn DeliveryAnswerer>,
    cid: u64,
) -> Report {
    deliver_reporting(rt, session, answerer, cid).await.report
}

/// As [`deliver`], with the TLS report results of the delivery (empty without a
/// [`DeliveryAnswerer::policy`]).
pub async fn deliver_reporting<R: Net>(
    rt: R,
    mut session: DeliverySession,
    answerer: Arc<dyn DeliveryAnswerer>,
    cid: u64,
) -> Delivered {
    let policy_answerer = answerer.policy();
    let mut policy: Option<Policy> = None;
    let mut open: BTreeMap<ConnId, Open<R::Stream>> = BTreeMap::new();
    let mut connecting: BTreeMap<ConnId, (Token, Connecting<R::Stream>)> = BTreeMap::new();
    let mut pending: VecDeque<(Token, Answering)> = VecDeque::new();
    let mut tx: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let deadline = loop {
            match session.poll(now(), &mut tx) {
                Output::Transmit(id) => {
                    let r = match open.get_mut(&id) {
                        Some(c) => {
                            let limit = rt.sleep_until(Instant::now() + WRITE_TIMEOUT);
                            c.stream
                                .write_all(&tx)
                                .or(async {
                                    limit.await;
                                    Err(io::Error::from(io::ErrorKind::TimedOut))
                                })
                                .await
                        }
                        None => Err(io::Error::from(io::ErrorKind::NotConnected)),
                    };
                    tx.clear();
                    if let Err(e) = r {
                        tracing::debug!(cid, conn = id.0, error = %e, "write failed");
                        open.remove(&id);
                        let _ = session.handle(now(), Input::Closed(id));
                    }
                }
                Output::Effect(
                    token,
                    Effect::Connect {
                        conn,
                        addr,
                        source_ip,
                        timeout,
                    },
                ) => {
                    connecting.insert(conn, (token, rt.connect(addr, source_ip, timeout)));
                }
                Output::Effect(
                    token,
                    Effect::HostTls {
                        domain,
                        host,
                        requiretls,
                    },
                ) if policy_answerer.is_some() => {
                    if policy.is_none() {
                        if let Some(a) = &policy_answerer {
                            policy = Some(Policy::new(Arc::clone(a), &domain, requiretls));
                        }
                    }
                    let Some(p) = policy.as_mut() else { continue };
                    p.asks.push((host.clone(), token));
                    if let Err(e) = p.session.handle(now(), PInput::Ask(host)) {
                        tracing::warn!(cid, error = %e, "policy question refused");
                    }
                    drain_policy(&rt, p, &mut session, cid);
                }
                Output::Effect(token, effect) => {
                    // DNS asynchronously when the answerer can (no blocking-pool thread
                    // waiting on the resolver).
                    let effect = match effect {
                        Effect::Dns(lookups) => match answerer.lookup(lookups) {
                            Ok(f) => {
                                let f = async move { Completion::Dns(f.await) };
                                pending.push_back((token, Box::pin(f)));
                                continue;
                            }
                            Err(lookups) => Effect::Dns(lookups),
                        },
                        other => other,
                    };
                    match answerer.answer_now(&effect) {
                        Some(c) => completed(&mut session, token, c),
                        None => {
                            let a = Arc::clone(&answerer);
                            pending
                                .push_back((token, rt.unblock(Box::new(move || a.answer(effect)))));
                        }
                    }
                }
                Output::Event(ev) => log_event(cid, &ev),
                Output::Close(id) => {
                    connecting.remove(&id);
                    if let Some(mut c) = open.remove(&id) {
                        let _ = c.stream.flush().await;
                        let _ = c.stream.close().await;
                    }
                }
                Output::Idle { deadline, .. } => break deadline,
                Output::Done => {
                    for (_, mut c) in std::mem::take(&mut open) {
                        let _ = c.stream.close().await;
                    }
                    let report = match session.report() {
                        Some(r) => r.clone(),
                        // Done means the report is there; never without one.
                        None => no_report(),
                    };
                    let mut tls_results = Vec::new();
                    if let Some(mut p) = policy {
                        for w in p.writes.drain(..) {
                            w.await;
                        }
                        for t in &report.tls {
                            if let Some(v) = p.verdicts.get(&t.mx_host) {
                                tls_results.extend(v.session_results(p.session.domain(), t));
                            }
                        }
                        tls_results.extend(p.session.fetch_failure());
                    }
                    return Delivered {
                        report,
                        tls_results,
                    };
                }
            }
        };
        for c in open.values_mut() {
            if let Err(e) = c.stream.flush().await {
                tracing::debug!(cid, error = %e, "flush failed");
            }
        }
        if let Some(p) = policy.as_mut() {
            if p.deadline.is_some_and(|d| Instant::now() >= d) {
                let _ = p.session.handle(now(), PInput::Timeout);
                drain_policy(&rt, p, &mut session, cid);
                continue;
            }
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                let _ = session.handle(now(), Input::Timeout);
                continue;
            }
        }
        let policy_waits = policy
            .as_ref()
            .is_some_and(|p| !p.pending.is_empty() || p.deadline.is_some());
        if deadline.is_none()
            && pending.is_empty()
            && connecting.is_empty()
            && open.is_empty()
            && !policy_waits
        {
            // Waiting for nothing anyone can give: the machine would never finish.
            tracing::error!(cid, "delivery stalled without a deadline");
            return Delivered {
                report: no_report(),
                tls_results: Vec::new(),
            };
        }
        let deadline = match (deadline, policy.as_ref().and_then(|p| p.deadline)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut timer = deadline.map(|d| rt.sleep_until(d));
        let woke = futures_lite::future::poll_fn(|cx| {
            if let Some((token, f)) = pending.front_mut() {
                if let Poll::Ready(c) = f.as_mut().poll(cx) {
                    return Poll::Ready(Woke::Answer(*token, c));
                }
            }
            for (id, (token, f)) in connecting.iter_mut() {
                if let Poll::Ready(r) = f.as_mut().poll(cx) {
                    return Poll::Ready(Woke::Connected(*id, *token, r));
                }
            }
            for (id, c) in open.iter_mut() {
                if let Poll::Ready(r) = Pin::new(&mut c.stream).poll_read(cx, &mut chunk) {
                    return Poll::Ready(Woke::Read(*id, r));
                }
            }
            if let Some(p) = policy.as_mut() {
                p.writes.retain_mut(|w| w.as_mut().poll(cx).is_pending());
                for (i, (token, f)) in p.pending.iter_mut().enumerate() {
                    if let Poll::Ready(c) = f.as_mut().poll(cx) {
                        return Poll::Ready(Woke::Policy(i, *token, c));
                    }
                }
            }
            if let Some(t) = timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Timer);
                }
            }
            Poll::Pending
        })
        .await;
        match woke {
            Woke::Answer(token, c) => {
                pending.pop_front();
                completed(&mut session, token, c);
            }
            Woke::Connected(id, token, r) => {
                connecting.remove(&id);
                let c = match r {
                    Ok(stream) => {
                        open.insert(
                            id,
                            Open {
                                stream,
                                inbuf: Vec::new(),
                            },
                        );
                        Completion::Connected
                    }
                    Err(e) => Completion::ConnectFailed(e.to_string()),
                };
                completed(&mut session, token, c);
            }
            Woke::Read(id, Ok(n)) if n > 0 => {
                let Some(c) = open.get_mut(&id) else { continue };
                c.inbuf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
                match session.handle(now(), Input::Received(id, &c.inbuf)) {
                    Ok(used) => {
                        c.inbuf.drain(..used.min(c.inbuf.len()));
                    }
                    Err(e) => tracing::warn!(cid, error = %e, "delivery input refused"),
                }
                if c.inbuf.len() > MAX_UNCONSUMED {
                    tracing::info!(cid, conn = id.0, "peer sent too much unconsumed input");
                    open.remove(&id);
                    let _ = session.handle(now(), Input::Closed(id));
                }
            }
            Woke::Read(id, r) => {
                if let Err(e) = r {
                    tracing::debug!(cid, conn = id.0, error = %e, "read failed");
                }
                open.remove(&id);
                let _ = session.handle(now(), Input::Closed(id));
            }
            Woke::Policy(i, token, c) => {
                if let Some(p) = policy.as_mut() {
                    drop(p.pending.remove(i));
                    if let Err(e) = p.session.handle(now(), PInput::Completed(token, c)) {
                        tracing::warn!(cid, error = %e, "policy completion refused");
                    }
                    drain_policy(&rt, p, &mut session, cid);
                }
            }
            Woke::Timer => {
                if let Some(p) = policy.as_mut() {
                    let _ = p.session.handle(now(), PInput::Timeout);
                    drain_policy(&rt, p, &mut session, cid);
                }
                let _ = session.handle(now(), Input::Timeout);
            }
        }
    }
}

/// Takes the policy machine's outputs: effects start, cache writes start, verdicts answer
/// the delivery's questions for their host.
fn drain_policy<R: Net>(rt: &R, p: &mut Policy, session: &mut DeliverySession, cid: u64) {
    loop {
        match p.session.poll(now()) {
            POutput::Effect(token, PEffect::Dns(lookups)) => {
                let f = p.answerer.lookup(lookups);
                p.pending
                    .push((token, Box::pin(async move { PCompletion::Dns(f.await) })));
            }
            POutput::Effect(token, PEffect::CacheGet { domain }) => {
                let a = Arc::clone(&p.answerer);
                let f = rt.unblock(Box::new(move || a.cache_get(&domain)));
                p.pending
                    .push((token, Box::pin(async move { PCompletion::Cached(f.await) })));
            }
            POutput::Effect(token, PEffect::Fetch(req)) => {
                tracing::info!(cid, url = %req.url, "fetching MTA-STS policy");
                let f = policy_fetch(rt.clone(), Arc::clone(&p.answerer), req);
                p.pending.push((
                    token,
                    Box::pin(async move { PCompletion::Fetched(f.await) }),
                ));
            }
            POutput::Cache(update) => {
                let a = Arc::clone(&p.answerer);
                p.writes
                    .push(rt.unblock(Box::new(move || a.cache_update(update))));
            }
            POutput::Verdict(v) => {
                tracing::debug!(cid, host = %v.host, requirement = %v.requirement, "tls policy verdict");
                let mut i = 0;
                while i < p.asks.len() {
                    if p.asks.get(i).is_some_and(|(h, _)| *h == v.host) {
                        let (_, token) = p.asks.remove(i);
                        completed(session, token, Completion::HostTls(v.host_tls.clone()));
                    } else {
                        i += 1;
                    }
                }
                p.verdicts.insert(v.host.clone(), *v);
            }
            POutput::Idle { deadline } => {
                p.deadline = deadline;
                return;
            }
        }
    }
}

/// One MTA-STS policy fetch through [`crate::fetch::fetch`], with the answerer's roots and
/// DNS and the request's limits.
async fn policy_fetch<R: Net>(
    rt: R,
    answerer: Arc<dyn PolicyAnswerer>,
    req: rmox_core::tlspolicy::FetchRequest,
) -> Result<FetchResponse, rmox_core::tlspolicy::FetchError> {
    let Some(roots) = answerer.fetch_roots() else {
        return Err(rmox_core::tlspolicy::FetchError::Fetch(
            "no trusted roots for the policy fetch".into(),
        ));
    };
    let mut config = rmox_core::http::FetchConfig::mta_sts(roots);
    config.limits.max_body = req.max_body;
    config.timeout = req.timeout;
    let a = Arc::clone(&answerer);
    let resolve: crate::fetch::Resolve = Arc::new(move |l| a.lookup(l));
    let r = crate::fetch::fetch(
        rt,
        Arc::new(config),
        &rmox_core::http::FetchRequest::get(&req.url),
        resolve,
    )
    .await;
    match r {
        Ok(r) => Ok(FetchResponse {
            status: r.status,
            content_type: r.content_type().map(str::to_string),
            body: r.body,
        }),
        Err(e) => Err(e.to_sts()),
    }
}

/// Hands an effect's answer to the session.
fn completed(session: &mut DeliverySession, token: Token, c: Completion) {
    if let Err(e) = session.handle(now(), Input::Completed(token, c)) {
        tracing::warn!(error = %e, "delivery completion refused");
    }
}

/// The report of a delivery that could not finish (never expected).
fn no_report() -> Report {
    Report {
        results: vec![AttemptResult::Temporary(Failure::local(
            "delivery ended without a result",
            Enhanced::new(4, 0, 0),
        ))],
        tls: Vec::new(),
        remote_mta: None,
    }
}

/// The log lines of a delivery.
fn log_event(cid: u64, ev: &Event) {
    match ev {
        Event::Connecting { host, addr } => tracing::debug!(cid, %host, %addr, "connecting"),
        Event::AttemptFailed { host, addr, error } => {
            tracing::info!(cid, %host, %addr, %error, "delivery attempt failed")
        }
        Event::Tls(t) => {
            tracing::debug!(cid, host = %t.mx_host, mode = t.mode, result = ?t.result, "tls")
        }
        Event::Client(id, e) => tracing::trace!(cid, conn = id.0, event = ?e, "client"),
    }
}

/// A blocking TCP connection to `addr` from `source` (port chosen by the system) within
/// `timeout`: for runtimes without a way to bind before an asynchronous connect; call it on
/// the blocking pool ([`Runtime::unblock`]), never on the runtime's thread.
pub fn bound_connect(
    addr: SocketAddr,
    source: IpAddr,
    timeout: Duration,
) -> io::Result<std::net::TcpStream> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.bind(&SocketAddr::new(source, 0).into())?;
    s.connect_timeout(&addr.into(), timeout.max(Duration::from_millis(1)))?;
    s.set_nonblocking(true)?;
    let _ = s.set_tcp_nodelay(true);
    Ok(s.into())
}

/// The error of a connection attempt that took longer than its timeout.
pub fn connect_timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection timed out")
}
