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
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
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
use rmox_core::{Now, Token};

use crate::machine::{
    drive, Answer, Answers, Connecting, End, Eof, In, IoOp, Machine, Overflow, Step,
};
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

    /// Whether [`DeliveryAnswerer::job_done`] records reports (default: no; they come back
    /// in [`Delivered::reports`] only).
    fn records_jobs(&self) -> bool {
        false
    }

    /// Records the final report of job `job` as soon as the machine has it
    /// ([`Event::JobDone`]), while the jobs after it are being delivered over the same
    /// connection; runs on the blocking pool. The delivery is done only after every
    /// record has returned.
    fn job_done(&self, _job: usize, _report: Report) {}
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
    /// The delivery machine's report (of its first job).
    pub report: Report,
    /// The report of every job, in order (connection reuse: [`DeliverySession::new_many`]);
    /// empty when the delivery could not finish.
    pub reports: Vec<Report>,
    /// One result per connection under a policy verdict (two for DANE: the recipient
    /// domain's and the MX host's), and the failed policy fetch if any.
    pub tls_results: Vec<SessionResult>,
}

/// Longest a write may block (the peer not reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(300);

/// Unconsumed input kept per connection before it is treated as broken.
const MAX_UNCONSUMED: usize = 1 << 20;

/// DNS answers on their way ([`DeliveryAnswerer::lookup`]): one per lookup, in order.
pub type AsyncAnswers = Pin<Box<dyn Future<Output = Vec<LookupResult>>>>;

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
/// [`DeliveryAnswerer::policy`]): [`crate::machine::drive`] over [`Delivery`].
pub async fn deliver_reporting<R: Net>(
    rt: R,
    session: DeliverySession,
    answerer: Arc<dyn DeliveryAnswerer>,
    cid: u64,
) -> Delivered {
    let policy = answerer.policy();
    let machine = Delivery {
        record_jobs: answerer.records_jobs(),
        session,
        policy_answerer: policy.clone(),
        policy: None,
        out: VecDeque::new(),
        writes: 0,
        records: 0,
        cid,
    };
    let answers = DeliveryAnswers {
        rt: rt.clone(),
        answerer,
        policy,
        cid,
    };
    match drive(&rt, machine, &answers, None::<(ConnId, R::Stream)>, None).await {
        Ok(d) => d,
        Err(never) => match never {},
    }
}

/// The policy machine of one delivery and what it waits for.
struct Policy {
    session: PolicySession,
    /// Delivery tokens waiting for a host's verdict.
    asks: Vec<(String, Token)>,
    /// Verdicts given, by host (the last one per host).
    verdicts: BTreeMap<String, HostVerdict>,
    deadline: Option<Instant>,
}

/// A delivery (with its TLS policy machine beside it, when the answerer has a policy) as a
/// [`Machine`]: many connections by [`ConnId`], opened as it asks; the end of stream, an
/// I/O error or 1 MiB of unconsumed input drops a connection. The policy machine's effects
/// and cache writes are effects of this machine; its verdicts answer the delivery's
/// [`Effect::HostTls`] questions inside; its deadline joins the delivery's. Done waits for
/// the cache writes.
struct Delivery {
    session: DeliverySession,
    policy_answerer: Option<Arc<dyn PolicyAnswerer>>,
    policy: Option<Policy>,
    /// Steps of the policy machine not given to the loop yet.
    out: VecDeque<Step<Delivery>>,
    /// Cache writes and job records in progress.
    writes: usize,
    /// Job records in progress. While one is, the session is not polled: the next job's
    /// message is not sent before the last one's result is recorded, so a crash leaves at
    /// most one delivered-but-unrecorded message per connection (the duplicate bound of
    /// README's Durability section), however slow the recording is.
    records: usize,
    /// Job reports go out as effects ([`DeliveryAnswerer::job_done`]).
    record_jobs: bool,
    cid: u64,
}

/// Names an effect of a [`Delivery`]: the delivery's, the policy machine's, a cache write.
#[derive(Clone, Copy)]
enum DTok {
    Delivery(Token),
    Policy(Token),
    Write,
    Record,
}

/// An effect of a [`Delivery`].
enum DEffect {
    Delivery(Effect),
    Policy(PEffect),
    Write(CacheUpdate),
    /// A job's final report to record.
    Record(usize, Report),
}

/// An answer to a [`DEffect`].
enum DCompletion {
    Delivery(Completion),
    Policy(PCompletion),
    Written,
}

/// A connection the delivery asks for.
struct Dial {
    token: Token,
    addr: SocketAddr,
    source_ip: Option<IpAddr>,
    timeout: Duration,
}

impl Machine for Delivery {
    type Token = DTok;
    type Effect = DEffect;
    type Completion = DCompletion;
    type Event = Event;
    type Dial = Dial;
    type Outcome = Delivered;
    type Error = std::convert::Infallible;

    const MAX_UNCONSUMED: usize = MAX_UNCONSUMED;
    const OVERFLOW: Overflow = Overflow::Drop;
    const EOF: Eof = Eof::Drop;
    const WRITE_TIMEOUT: Option<Duration> = Some(WRITE_TIMEOUT);

    fn poll(&mut self, now: Now, tx: &mut Vec<u8>) -> Step<Self> {
        loop {
            if let Some(s) = self.out.pop_front() {
                return s;
            }
            if self.records > 0 {
                // Woken by the record's completion.
                return Step::Idle(None);
            }
            return match self.session.poll(now, tx) {
                Output::Transmit(id) => Step::Transmit(id),
                Output::Effect(
                    token,
                    Effect::Connect {
                        conn,
                        addr,
                        source_ip,
                        timeout,
                    },
                ) => Step::Connect(
                    conn,
                    Dial {
                        token,
                        addr,
                        source_ip,
                        timeout,
                    },
                ),
                Output::Effect(
                    token,
                    Effect::HostTls {
                        domain,
                        host,
                        requiretls,
                    },
                ) if self.policy_answerer.is_some() => {
                    if self.policy.is_none() {
                        if let Some(a) = &self.policy_answerer {
                            self.policy = Some(Policy {
                                session: PolicySession::new(
                                    a.config(),
                                    &domain,
                                    message_tls(requiretls),
                                    now,
                                ),
                                asks: Vec::new(),
                                verdicts: BTreeMap::new(),
                                deadline: None,
                            });
                        }
                    }
                    let Some(p) = self.policy.as_mut() else {
                        continue;
                    };
                    p.asks.push((host.clone(), token));
                    if let Err(e) = p.session.handle(now, PInput::Ask(host)) {
                        tracing::warn!(cid = self.cid, error = %e, "policy question refused");
                    }
                    self.drain_policy(now);
                    continue;
                }
                Output::Effect(token, effect) => {
                    Step::Effect(DTok::Delivery(token), DEffect::Delivery(effect))
                }
                Output::Event(Event::JobDone { job }) if self.record_jobs => {
                    if let Some(r) = self.session.job_report(job) {
                        self.writes += 1;
                        self.records += 1;
                        self.out
                            .push_back(Step::Effect(DTok::Record, DEffect::Record(job, r.clone())));
                    }
                    Step::Event(Event::JobDone { job })
                }
                Output::Event(ev) => Step::Event(ev),
                Output::Close(id) => Step::Close(id),
                Output::Idle { deadline, .. } => {
                    let policy = self.policy.as_ref().and_then(|p| p.deadline);
                    Step::Idle(match (deadline, policy) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    })
                }
                // The cache writes and job records end before the delivery does.
                Output::Done if self.writes > 0 => Step::Idle(None),
                Output::Done => Step::Done,
            };
        }
    }

    fn handle(&mut self, now: Now, input: In<'_, Self>) -> Result<usize, Self::Error> {
        let cid = self.cid;
        let closed = match input {
            In::Received(id, bytes) => {
                return Ok(match self.session.handle(now, Input::Received(id, bytes)) {
                    Ok(used) => used,
                    Err(e) => {
                        tracing::warn!(cid, error = %e, "delivery input refused");
                        0
                    }
                })
            }
            In::Closed(id) => id,
            In::Failed(id, IoOp::Read, e) => {
                tracing::debug!(cid, conn = id.0, error = %e, "read failed");
                id
            }
            In::Failed(id, IoOp::Write, e) => {
                tracing::debug!(cid, conn = id.0, error = %e, "write failed");
                id
            }
            In::Failed(_, IoOp::Flush, e) => {
                tracing::debug!(cid, error = %e, "flush failed");
                return Ok(0);
            }
            In::Overflow(id) => {
                tracing::info!(cid, conn = id.0, "peer sent too much unconsumed input");
                id
            }
            In::Connected(_, dial, r) => {
                let c = match r {
                    Ok(()) => Completion::Connected,
                    Err(e) => Completion::ConnectFailed(e.to_string()),
                };
                completed(&mut self.session, dial.token, c);
                return Ok(0);
            }
            In::Completed(DTok::Delivery(token), DCompletion::Delivery(c)) => {
                completed(&mut self.session, token, c);
                return Ok(0);
            }
            In::Completed(DTok::Policy(token), DCompletion::Policy(c)) => {
                if let Some(p) = self.policy.as_mut() {
                    if let Err(e) = p.session.handle(now, PInput::Completed(token, c)) {
                        tracing::warn!(cid, error = %e, "policy completion refused");
                    }
                    self.drain_policy(now);
                }
                return Ok(0);
            }
            In::Completed(tok, _) => {
                // A cache write or a job record ended (tokens and answers always pair up).
                self.writes = self.writes.saturating_sub(1);
                if matches!(tok, DTok::Record) {
                    self.records = self.records.saturating_sub(1);
                }
                return Ok(0);
            }
            In::Timeout => {
                if let Some(p) = self.policy.as_mut() {
                    let _ = p.session.handle(now, PInput::Timeout);
                    self.drain_policy(now);
                }
                let _ = self.session.handle(now, Input::Timeout);
                return Ok(0);
            }
            In::Shutdown => return Ok(0),
        };
        let _ = self.session.handle(now, Input::Closed(closed));
        Ok(0)
    }

    fn end(self, how: End) -> Delivered {
        if how == End::Stalled {
            // Waiting for nothing anyone can give: the machine would never finish.
            tracing::error!(cid = self.cid, "delivery stalled without a deadline");
            return Delivered {
                report: no_report(),
                reports: Vec::new(),
                tls_results: Vec::new(),
            };
        }
        let reports = self.session.reports().to_vec();
        let report = match reports.first() {
            Some(r) => r.clone(),
            // Done means the report is there; never without one.
            None => no_report(),
        };
        let mut tls_results = Vec::new();
        if let Some(p) = self.policy {
            // Each connection once, however many jobs it carried.
            for t in self.session.connections_tls() {
                if let Some(v) = p.verdicts.get(&t.mx_host) {
                    tls_results.extend(v.session_results(p.session.domain(), t));
                }
            }
            tls_results.extend(p.session.fetch_failure());
        }
        Delivered {
            report,
            reports,
            tls_results,
        }
    }
}

impl Delivery {
    /// Takes the policy machine's outputs: effects and cache writes become steps, verdicts
    /// answer the delivery's questions for their host.
    fn drain_policy(&mut self, now: Now) {
        let Some(p) = self.policy.as_mut() else {
            return;
        };
        loop {
            match p.session.poll(now) {
                POutput::Effect(token, effect) => self
                    .out
                    .push_back(Step::Effect(DTok::Policy(token), DEffect::Policy(effect))),
                POutput::Cache(update) => {
                    self.writes += 1;
                    self.out
                        .push_back(Step::Effect(DTok::Write, DEffect::Write(update)));
                }
                POutput::Verdict(v) => {
                    tracing::debug!(cid = self.cid, host = %v.host, requirement = %v.requirement, "tls policy verdict");
                    let mut i = 0;
                    while i < p.asks.len() {
                        if p.asks.get(i).is_some_and(|(h, _)| *h == v.host) {
                            let (_, token) = p.asks.remove(i);
                            completed(
                                &mut self.session,
                                token,
                                Completion::HostTls(v.host_tls.clone()),
                            );
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
}

/// Answers a [`Delivery`]'s effects and opens its connections ([`Net::connect`]).
struct DeliveryAnswers<R> {
    rt: R,
    answerer: Arc<dyn DeliveryAnswerer>,
    policy: Option<Arc<dyn PolicyAnswerer>>,
    cid: u64,
}

impl<R: Net> Answers<Delivery, R::Stream> for DeliveryAnswers<R> {
    fn answer(&self, effect: DEffect) -> Answer<DCompletion> {
        let later = |answer: Pin<Box<dyn Future<Output = DCompletion>>>| Answer::Later {
            answer,
            hold_input: false,
        };
        let effect = match effect {
            DEffect::Delivery(e) => e,
            DEffect::Policy(e) => {
                let Some(pa) = self.policy.as_ref().map(Arc::clone) else {
                    // Policy effects come only from a policy machine, made only with an
                    // answerer; never without one.
                    return later(Box::pin(futures_lite::future::pending()));
                };
                return later(match e {
                    PEffect::Dns(lookups) => {
                        let f = pa.lookup(lookups);
                        Box::pin(async move { DCompletion::Policy(PCompletion::Dns(f.await)) })
                    }
                    PEffect::CacheGet { domain } => self.rt.unblock(Box::new(move || {
                        DCompletion::Policy(PCompletion::Cached(pa.cache_get(&domain)))
                    })),
                    PEffect::Fetch(req) => {
                        tracing::info!(cid = self.cid, url = %req.url, "fetching MTA-STS policy");
                        let f = policy_fetch(self.rt.clone(), pa, req);
                        Box::pin(async move { DCompletion::Policy(PCompletion::Fetched(f.await)) })
                    }
                });
            }
            DEffect::Record(job, report) => {
                let a = Arc::clone(&self.answerer);
                return later(self.rt.unblock(Box::new(move || {
                    a.job_done(job, report);
                    DCompletion::Written
                })));
            }
            DEffect::Write(update) => {
                let Some(pa) = self.policy.as_ref().map(Arc::clone) else {
                    return Answer::Now(DCompletion::Written);
                };
                return later(self.rt.unblock(Box::new(move || {
                    pa.cache_update(update);
                    DCompletion::Written
                })));
            }
        };
        // DNS asynchronously when the answerer can (no blocking-pool thread waiting on the
        // resolver).
        let effect = match effect {
            Effect::Dns(lookups) => match self.answerer.lookup(lookups) {
                Ok(f) => {
                    return later(Box::pin(async move {
                        DCompletion::Delivery(Completion::Dns(f.await))
                    }))
                }
                Err(lookups) => Effect::Dns(lookups),
            },
            other => other,
        };
        match self.answerer.answer_now(&effect) {
            Some(c) => Answer::Now(DCompletion::Delivery(c)),
            None => {
                let a = Arc::clone(&self.answerer);
                later(
                    self.rt
                        .unblock(Box::new(move || DCompletion::Delivery(a.answer(effect)))),
                )
            }
        }
    }

    fn connect(&self, dial: &Dial) -> Connecting<R::Stream> {
        self.rt.connect(dial.addr, dial.source_ip, dial.timeout)
    }

    fn event(&self, ev: Event) {
        log_event(self.cid, &ev);
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
        Event::JobDone { job } => tracing::trace!(cid, job, "job done"),
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
