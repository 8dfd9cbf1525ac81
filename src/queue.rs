//! The queue runner: outgoing delivery of queued messages, retries, DSNs, suppression.
//!
//! The runner is a task on the server's runtime ([`Runner::run`], generic over the
//! driver's [`Net`]). It loads due entries from the store ([`Store::queue_due`]), maps them
//! to the core scheduler's [`QueueItem`]s, groups them into transactions with
//! [`QueueConfig::due`] and runs each batch as a local task, at most `queue.workers` at a
//! time. A batch suppresses recipients on the sender's suppression list, delivers the rest
//! (SMTP: core's delivery machine driven by the runtime's outbound loop, [`SmtpDelivery`];
//! or a blocking [`Connector`]: localserve's delivery back into the sender's account,
//! [`LocalserveConnector`], or canned outcomes in tests), then applies
//! [`QueueConfig::after_attempt`]: the attempt is recorded in storage, delivered and failed
//! entries are retired, DSNs are composed and queued (or delivered locally when the sender is
//! one of ours). Storage calls run on the runtime's blocking pool. The runner sleeps until
//! the next due time or a [`Wakeup`]. Everything lives in the store, so a restart loses
//! nothing.

pub mod cli;
mod deliver;
mod refresh;

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
#[cfg(test)]
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use rmox_core::delivery::TlsAttempt;
use rmox_core::queue::{
    compose_dsn, AttemptResult, Batch, Decision, DsnInput, DsnKind, DsnNotice, DsnParams, Failure,
    InFlight, QueueConfig, QueueItem, Routes,
};
use rmox_core::smtp::{Enhanced, Notify, Ret};
use rmox_core::tlspolicy::SessionResult;
use rmox_core::{Rng, UnixTime};
use rmox_driver::outbound::Net;
use rmox_storage::{
    Attempt, Delivery, Flags, MailStore, MessageInfo, Outcome, QueueEntry, QueueId, QueueRecipient,
    QueueRecord, ReportKind, RequireTls, StoreError, Suppression,
};
use rmox_storage::{Notice, NoticeMessage, NoticeOutcome};

use crate::config::{Config, Resolution};
use crate::rt::{OnRuntime, Runtime};

pub(crate) use deliver::pkix_for;
pub use deliver::{Recorder, SmtpDelivery};
pub use refresh::StsRefresher;

/// Most entries loaded per pass.
const DUE_LIMIT: usize = 1000;
/// Longest sleep between passes (the runner also wakes for new messages and finished
/// batches).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How long the runner starts deliveries from the due entries it read (its backlog) before
/// it reads them again from storage (at once when a message was queued meanwhile).
const BACKLOG_MAX_AGE: Duration = Duration::from_secs(1);

/// Entries per recipient domain (the first ones due) the scheduler looks at in one pass over
/// the backlog; a transaction of more recipients of one message and domain is split.
const BACKLOG_HEAD: usize = 128;

/// Due entries the runner read and has not started yet, and when it read them.
#[derive(Default)]
struct Backlog {
    entries: Vec<QueueEntry>,
    read: Option<Instant>,
}

/// Wakes the runner: a new message was queued, a batch finished, or it must stop. Safe to
/// use from any thread; the runner waits for it asynchronously.
#[derive(Debug, Default)]
pub struct Wakeup {
    pending: AtomicBool,
    /// Set by [`Wakeup::notify`], not by [`Wakeup::notify_finished`]: the queue may hold
    /// entries the runner's backlog lacks.
    changed: AtomicBool,
    stop: AtomicBool,
    event: event_listener::Event,
}

impl Wakeup {
    /// Something changed: look at the queue again.
    pub fn notify(&self) {
        self.changed.store(true, Ordering::SeqCst);
        self.pending.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    /// A delivery of the runner ended: a slot is free (the queue itself is as the runner
    /// last read it, apart from that delivery's entries).
    fn notify_finished(&self) {
        self.pending.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    /// Whether [`Wakeup::notify`] was called since the last call.
    fn take_changed(&self) -> bool {
        self.changed.swap(false, Ordering::SeqCst)
    }

    /// Ask the runner to stop.
    #[cfg(test)]
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.notify();
    }

    /// Whether stop was asked.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Completes at the next notification (at once when one came since the last wait).
    async fn notified(&self) {
        loop {
            if self.pending.swap(false, Ordering::SeqCst) {
                return;
            }
            let listener = self.event.listen();
            if self.pending.swap(false, Ordering::SeqCst) {
                return;
            }
            listener.await;
        }
    }
}

/// One transaction to attempt: recipients of one message sharing sender, domain, transport
/// and REQUIRETLS state.
pub struct Job<'a> {
    /// What the recipients share.
    pub batch: &'a Batch,
    /// The scheduler's view of each recipient.
    pub items: &'a [QueueItem],
    /// The stored entries, in the same order (8-bit, SMTPUTF8 flags).
    pub entries: &'a [QueueEntry],
    /// The message.
    pub message: &'a Arc<[u8]>,
}

/// Delivers a job with blocking work (run on the runtime's blocking pool): localserve's
/// local delivery, canned outcomes in tests.
pub trait Connector: Send + Sync {
    /// One result per item of `job`, in order.
    fn deliver(&self, job: &Job<'_>) -> Vec<AttemptResult>;

    /// As [`Connector::deliver`], with the TLS of each connection made, in order.
    fn deliver_recorded(&self, job: &Job<'_>) -> (Vec<AttemptResult>, Vec<TlsAttempt>) {
        (self.deliver(job), Vec::new())
    }
}

/// How the runner delivers.
#[derive(Clone)]
pub enum Deliverer {
    /// SMTP through the delivery machine and the runtime's outbound loop.
    Smtp(Arc<SmtpDelivery>),
    /// A blocking connector on the runtime's blocking pool.
    Blocking(Arc<dyn Connector>),
}

impl From<Arc<dyn Connector>> for Deliverer {
    fn from(c: Arc<dyn Connector>) -> Deliverer {
        Deliverer::Blocking(c)
    }
}

impl<C: Connector + 'static> From<Arc<C>> for Deliverer {
    fn from(c: Arc<C>) -> Deliverer {
        Deliverer::Blocking(c)
    }
}

/// The wall clock the runner uses (virtual in tests).
pub type Clock = Arc<dyn Fn() -> UnixTime + Send + Sync>;

/// The wall clock.
pub fn wall_clock() -> Clock {
    Arc::new(|| rmox_driver::now().wall)
}

/// Maps a stored entry to the scheduler's item.
pub fn to_item(e: &QueueEntry) -> QueueItem {
    QueueItem {
        id: e.id.0,
        msg_id: e.msg_id,
        sender_account: e.rcpt.sender_account.clone(),
        mail_from: e.rcpt.mail_from.clone(),
        recipient: e.rcpt.recipient.clone(),
        recipient_domain: rmox_core::queue::domain_of(&e.rcpt.recipient),
        next_attempt: e.rcpt.next_attempt,
        attempts: e.attempts,
        hold: e.rcpt.hold,
        requiretls: match e.rcpt.requiretls {
            RequireTls::Default => None,
            RequireTls::Required => Some(true),
            RequireTls::NotRequired => Some(false),
        },
        size: e.size,
        transport: e.rcpt.transport.clone(),
        last_error: e.last_error.clone(),
        dsn: DsnParams {
            envid: e.rcpt.dsn.envid.clone(),
            ret: e
                .rcpt
                .dsn
                .ret_full
                .map(|f| if f { Ret::Full } else { Ret::Hdrs }),
            notify: notify_of(&e.rcpt.dsn.notify),
            orcpt: e.rcpt.dsn.orcpt.as_ref().and_then(|o| {
                o.split_once(';')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            }),
        },
        is_dsn: e.rcpt.is_dsn,
        queued: e.rcpt.queued,
    }
}

fn notify_of(words: &[String]) -> Option<Notify> {
    if words.is_empty() {
        return None;
    }
    let mut n = Notify::default();
    for w in words {
        match w.to_ascii_uppercase().as_str() {
            "NEVER" => n.never = true,
            "SUCCESS" => n.success = true,
            "FAILURE" => n.failure = true,
            "DELAY" => n.delay = true,
            _ => {}
        }
    }
    Some(n)
}

/// The queue runner.
pub struct Runner {
    store: Arc<dyn MailStore>,
    config: Arc<Config>,
    qc: QueueConfig,
    routes: Routes,
    deliverer: Deliverer,
    rng: Mutex<Rng>,
    wakeup: Arc<Wakeup>,
    in_flight: Mutex<InFlight>,
    /// Entries this node claimed for the attempts in flight, with their next attempt then
    /// ([`MailStore::queue_claim`]); a store shared with other nodes has their leases
    /// renewed while the attempts run ([`Runner::renew_leases`]).
    claimed: Mutex<BTreeMap<u64, UnixTime>>,
    clock: Clock,
    runtime: Runtime,
    /// Reads of the due entries by the runner loop (tests).
    #[cfg(test)]
    due_reads: AtomicUsize,
}

/// A runner on its own thread (tests; the server runs it on its runtime): stop it with
/// [`RunnerHandle::stop`].
#[cfg(test)]
pub struct RunnerHandle {
    wakeup: Arc<Wakeup>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[cfg(test)]
impl RunnerHandle {
    /// Stops the runner and waits for deliveries in flight.
    pub fn stop(mut self) {
        self.wakeup.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The batches of one connection (connection reuse), each with its stored entries.
type Conn = Vec<(Batch, Vec<QueueEntry>)>;

/// What a batch needs delivered after the suppression check.
struct Prepared {
    message: Arc<[u8]>,
    items: Vec<QueueItem>,
    entries: Vec<QueueEntry>,
}

/// A DSN composed for the entries `about` (`item` is the first: its sender).
struct ComposedDsn {
    item: QueueItem,
    dsn: Vec<u8>,
    about: Vec<QueueId>,
}

/// The DSN notice a decision calls for.
fn dsn_of(d: &Decision) -> Option<&DsnNotice> {
    match d {
        Decision::Delivered { dsn }
        | Decision::Retry { dsn, .. }
        | Decision::Failed { dsn, .. } => dsn.as_ref(),
    }
}

/// One recipient's decided result, to record.
struct Decided {
    item: QueueItem,
    result: Option<AttemptResult>,
    decision: Decision,
}

/// The host and text recorded for `item`'s attempt: the result's, or (an administrative
/// failure, no attempt) the entry's last error.
fn outcome_text(item: &QueueItem, result: Option<&AttemptResult>) -> (String, String) {
    match result {
        Some(AttemptResult::Delivered { host, reply, .. }) => (
            host.clone().unwrap_or_else(|| "local".into()),
            reply
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_else(|| "delivered".into()),
        ),
        Some(AttemptResult::Temporary(f)) | Some(AttemptResult::Permanent(f)) => {
            (f.host.clone().unwrap_or_default(), f.text())
        }
        None => (String::new(), item.last_error.clone().unwrap_or_default()),
    }
}

/// The storage record of `item`'s attempt (`result`; none for an administrative failure)
/// and of core's decision `d`: the attempt in the entry's history, and the entry retired
/// when delivered or failed. Written with the others of its transaction in one commit
/// ([`rmox_storage::Store::queue_record`]).
fn attempt_record(
    item: &QueueItem,
    result: Option<&AttemptResult>,
    tls: Option<&TlsAttempt>,
    d: &Decision,
    now: UnixTime,
) -> QueueRecord {
    let (host, text) = outcome_text(item, result);
    let attempts = item.attempts;
    let last_error = item.last_error.clone();
    let next = item.next_attempt;
    let record = result.is_some();
    let tls_mode = tls.map(|t| t.mode.to_string());
    let tls_result = tls.map(TlsAttempt::result_text);
    let retire = match d {
        Decision::Delivered { .. } => Some(Outcome::Delivered(text.clone())),
        Decision::Failed { .. } => Some(Outcome::Failed(text.clone())),
        Decision::Retry { .. } => None,
    };
    // Storage counts failed messages in a row (a delivery ends the streak); core decides
    // (three suppress). Failed DSNs are not counted.
    let streak = match (d, &item.sender_account, result) {
        (Decision::Delivered { .. }, Some(a), Some(_)) => {
            Some((a.clone(), item.recipient.clone(), false))
        }
        (Decision::Failed { .. }, Some(a), Some(_)) if !item.is_dsn => {
            Some((a.clone(), item.recipient.clone(), true))
        }
        _ => None,
    };
    QueueRecord {
        id: QueueId(item.id),
        change: Box::new(move |e| {
            e.attempts = attempts;
            e.last_error = last_error;
            e.rcpt.next_attempt = next;
            if record {
                e.last_attempt = Some(now);
                e.history.push(Attempt {
                    time: now,
                    host,
                    result: text,
                    tls_mode,
                    tls_result,
                });
            }
        }),
        retire,
        streak,
        webhook: None,
    }
}

/// An item's result, or a temporary failure when the deliverer gave none.
fn result_at(results: &[AttemptResult], i: usize) -> AttemptResult {
    results.get(i).cloned().unwrap_or_else(|| {
        AttemptResult::Temporary(Failure::local(
            "no result for recipient",
            Enhanced::new(4, 0, 0),
        ))
    })
}

impl Runner {
    /// A runner over `store` delivering with `deliverer`.
    pub fn new(
        store: Arc<dyn MailStore>,
        config: Arc<Config>,
        deliverer: impl Into<Deliverer>,
        seed: u64,
        clock: Clock,
    ) -> Runner {
        Runner {
            store,
            qc: QueueConfig::default(),
            routes: config.routes(),
            config,
            deliverer: deliverer.into(),
            rng: Mutex::new(Rng::new(seed)),
            wakeup: Arc::new(Wakeup::default()),
            in_flight: Mutex::new(InFlight::default()),
            claimed: Mutex::new(BTreeMap::new()),
            clock,
            runtime: Runtime::one_off(),
            #[cfg(test)]
            due_reads: AtomicUsize::new(0),
        }
    }

    /// The deliverer a config asks for: localserve delivers back into the sender's account,
    /// otherwise SMTP to the MX hosts (or the configured transports) through `dns`.
    pub fn connector_for(
        config: &Arc<Config>,
        store: &Arc<dyn MailStore>,
        dns: Option<crate::resolve::Dns>,
        seed: u64,
    ) -> Result<Deliverer, crate::Fail> {
        if config.localserve {
            return Ok(Deliverer::Blocking(Arc::new(LocalserveConnector {
                store: Arc::clone(store),
                config: Arc::clone(config),
            })));
        }
        let dns = match dns {
            Some(d) => d,
            None => {
                let base = config
                    .path
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .to_path_buf();
                crate::resolve::Dns::from_config(&config.resolver, config.resolver_trust_ad, &base)?
            }
        };
        let transports = config.transports()?;
        let source_ips = [
            config.queue.source_ipv4.map(std::net::IpAddr::V4),
            config.queue.source_ipv6.map(std::net::IpAddr::V6),
        ]
        .into_iter()
        .flatten()
        .collect();
        Ok(Deliverer::Smtp(Arc::new(SmtpDelivery::new(
            Arc::clone(store),
            dns,
            &config.hostname,
            config.queue.smtp_port,
            Duration::from_secs(config.queue.connect_timeout_secs.max(1)),
            transports,
            source_ips,
            config.resolver_trust_ad != crate::config::TrustAd::Never,
            seed,
        )?)))
    }

    /// Replaces the scheduler settings.
    pub fn with_queue_config(mut self, qc: QueueConfig) -> Runner {
        self.qc = qc;
        self
    }

    /// Uses `w` as this runner's wakeup.
    pub fn with_wakeup(mut self, w: Arc<Wakeup>) -> Runner {
        self.wakeup = w;
        self
    }

    /// The runtime for [`Runner::run_selected`] and [`Runner::spawn`] (default:
    /// [`Runtime::one_off`]).
    pub fn with_runtime(mut self, rt: Runtime) -> Runner {
        self.runtime = rt;
        self
    }

    fn rng(&self) -> Rng {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).child()
    }

    /// The due batches at `now` (only those containing `only` when given), marked in
    /// flight, each with its stored entries.
    fn take_due(&self, now: UnixTime, only: Option<QueueId>) -> Result<Vec<Conn>, StoreError> {
        let entries = self.store.queue_due(now, DUE_LIMIT)?;
        Ok(self.select(entries, now, only).0)
    }

    /// The batches due at `now` among `entries` (only those containing `only` when given),
    /// marked in flight, each with its entries; and the entries left (due, not in flight,
    /// not taken: waiting for a slot under the scheduler's limits).
    fn select(
        &self,
        entries: Vec<QueueEntry>,
        now: UnixTime,
        only: Option<QueueId>,
    ) -> (Vec<Conn>, Vec<QueueEntry>) {
        let items: Vec<QueueItem> = entries.iter().map(to_item).collect();
        let mut by_id: BTreeMap<u64, QueueEntry> =
            entries.into_iter().map(|e| (e.id.0, e)).collect();
        let mut inf = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for bs in self.qc.due_connections(&items, now, &self.routes, &inf) {
            let bs: Vec<Batch> = match only {
                // An administrator's kick: that batch alone.
                Some(id) => bs.into_iter().filter(|b| b.items.contains(&id.0)).collect(),
                None => bs,
            };
            if bs.is_empty() {
                continue;
            }
            inf.start_connection(&bs);
            let conn = bs
                .into_iter()
                .map(|b| {
                    let es: Vec<QueueEntry> =
                        b.items.iter().filter_map(|id| by_id.remove(id)).collect();
                    (b, es)
                })
                .collect();
            out.push(conn);
        }
        let rest = by_id
            .into_values()
            .filter(|e| !inf.contains(e.id.0))
            .collect();
        (out, rest)
    }

    /// The runner's next batches at `now`, marked in flight: from `backlog` (due entries
    /// read before and not started for lack of a slot) while it is younger than
    /// [`BACKLOG_MAX_AGE`] and nothing was queued since ([`Wakeup::notify`]), else from a
    /// fresh read of the due entries, whose rest becomes the backlog. So a delivery's end
    /// does not cost a read and decoding of up to [`DUE_LIMIT`] entries; [`Runner::prepare`]
    /// reads each taken entry again before its delivery.
    async fn next_batches<R: Net>(
        self: &Arc<Self>,
        rt: &R,
        backlog: &mut Backlog,
        now: UnixTime,
    ) -> Vec<Conn> {
        let changed = self.wakeup.take_changed();
        let fresh = backlog.read.is_some_and(|t| t.elapsed() < BACKLOG_MAX_AGE);
        if fresh && !changed && !backlog.entries.is_empty() {
            // The scheduler looks at the first entries of each recipient domain only, so a
            // pass costs what the domains' heads cost, not the whole backlog.
            let entries = std::mem::take(&mut backlog.entries);
            let mut per_domain: BTreeMap<&str, usize> = BTreeMap::new();
            let heads: Vec<bool> = entries
                .iter()
                .map(|e| {
                    let d = e.rcpt.recipient.rsplit('@').next().unwrap_or_default();
                    let n = per_domain.entry(d).or_default();
                    *n += 1;
                    *n <= BACKLOG_HEAD
                })
                .collect();
            let (head, tail): (Vec<_>, Vec<_>) =
                entries.into_iter().zip(heads).partition(|(_, h)| *h);
            let (out, mut rest) =
                self.select(head.into_iter().map(|(e, _)| e).collect(), now, None);
            rest.extend(tail.into_iter().map(|(e, _)| e));
            rest.sort_by_key(|e| (e.rcpt.next_attempt, e.id.0));
            backlog.entries = rest;
            return out;
        }
        #[cfg(test)]
        self.due_reads.fetch_add(1, Ordering::SeqCst);
        let me = Arc::clone(self);
        let read = rt
            .unblock(Box::new(move || {
                let entries = me.store.queue_due(now, DUE_LIMIT)?;
                Ok::<_, StoreError>(me.select(entries, now, None))
            }))
            .await;
        match read {
            Ok((out, rest)) => {
                backlog.entries = rest;
                backlog.read = Some(Instant::now());
                out
            }
            Err(e) => {
                tracing::error!(error = %e, "queue: loading due entries");
                Vec::new()
            }
        }
    }

    /// `entries` as stored now, without those that left the queue, were held or were
    /// rescheduled later since they were read (a backlog is read before its delivery), or
    /// (a store shared by several nodes) that another node is delivering: the entries
    /// returned are this node's until their results are recorded
    /// ([`MailStore::queue_claim`]).
    fn reread(&self, entries: Vec<QueueEntry>) -> Result<Vec<QueueEntry>, StoreError> {
        let read: Vec<(QueueId, UnixTime)> = entries
            .iter()
            .map(|e| (e.id, e.rcpt.next_attempt))
            .collect();
        let claimed = self.store.queue_claim(&read, (self.clock)())?;
        {
            let mut c = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
            for e in &claimed {
                c.insert(e.id.0, e.rcpt.next_attempt);
            }
        }
        if claimed.len() < read.len() {
            tracing::debug!(
                read = read.len(),
                claimed = claimed.len(),
                "queue: entries gone, held, rescheduled or leased by another node"
            );
        }
        Ok(claimed)
    }

    /// Runs one pass at `now` on this thread (a runtime of its own): every due batch is
    /// attempted and its result applied. Returns the number of batches.
    #[cfg(test)]
    pub fn run_once(self: &Arc<Self>, now: UnixTime) -> Result<usize, StoreError> {
        self.run_selected(now, None)
    }

    /// As [`Runner::run_once`], only batches containing entry `only` when given.
    pub fn run_selected(
        self: &Arc<Self>,
        now: UnixTime,
        only: Option<QueueId>,
    ) -> Result<usize, StoreError> {
        struct Pass(Arc<Runner>, UnixTime, Option<QueueId>);
        impl OnRuntime for Pass {
            type Output = Result<usize, StoreError>;
            async fn run<R: Net>(self, rt: R) -> Self::Output {
                let Pass(me, now, only) = self;
                let m = Arc::clone(&me);
                let conns = rt.unblock(Box::new(move || m.take_due(now, only))).await?;
                let n = conns.iter().map(Vec::len).sum();
                let mut first_err = None;
                for conn in conns {
                    let batches: Vec<Batch> = conn.iter().map(|(b, _)| b.clone()).collect();
                    let r = me.process_connection(&rt, conn).await;
                    me.finish(&batches);
                    if let Err(e) = r {
                        first_err.get_or_insert(e);
                    }
                }
                match first_err {
                    Some(e) => Err(e),
                    None => Ok(n),
                }
            }
        }
        self.runtime
            .block_on(Pass(Arc::clone(self), now, only))
            .map_err(|e| StoreError::Io {
                op: "start runtime",
                path: std::path::PathBuf::from(self.runtime.name()),
                source: Arc::new(e),
            })?
    }

    fn finish(&self, batches: &[Batch]) {
        {
            let mut c = self.claimed.lock().unwrap_or_else(|e| e.into_inner());
            for id in batches.iter().flat_map(|b| b.items.iter()) {
                c.remove(id);
            }
        }
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish_connection(batches);
    }

    /// Whether the store is shared with other nodes (leases matter).
    fn shared_store(&self) -> bool {
        self.config.storage.kind == crate::config::StorageKind::Postgres
    }

    /// How often the leases of the entries being attempted are renewed: a third of a lease,
    /// so that an attempt longer than `[storage] lease_secs` keeps its entries.
    fn renew_every(&self) -> Duration {
        Duration::from_secs((self.config.storage.lease_secs / 3).max(1))
    }

    /// Renews this node's leases of the entries whose attempts run (a store shared with
    /// other nodes; blocking: storage). An entry whose result was recorded meanwhile is
    /// not taken again (its lease ended, and its next attempt moved or it left the queue).
    fn renew_leases(&self) {
        let list: Vec<(QueueId, UnixTime)> = self
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, due)| (QueueId(*id), *due))
            .collect();
        if list.is_empty() {
            return;
        }
        match self.store.queue_claim(&list, (self.clock)()) {
            Ok(kept) if kept.len() < list.len() => tracing::debug!(
                renewed = kept.len(),
                of = list.len(),
                "queue: leases renewed (the others were recorded meanwhile)"
            ),
            Ok(kept) => tracing::debug!(renewed = kept.len(), "queue: leases renewed"),
            Err(e) => tracing::warn!(error = %e, "queue: renewing leases"),
        }
    }

    /// Reads the message and fails suppressed recipients (blocking: storage).
    fn prepare(&self, entries: Vec<QueueEntry>) -> Result<Option<Prepared>, StoreError> {
        let entries = self.reread(entries)?;
        let Some(first) = entries.first() else {
            return Ok(None);
        };
        let msg_id = first.msg_id;
        let message: Arc<[u8]> = match self.store.queue_message(msg_id) {
            Ok(m) => m.into(),
            Err(e) => {
                tracing::error!(msg_id, error = %e, "reading queued message");
                return Err(e);
            }
        };
        let now = (self.clock)();
        // Recipients on the sender's suppression list fail at once.
        let mut items = Vec::new();
        let mut keep_entries = Vec::new();
        let mut suppressed = Vec::new();
        for e in entries {
            let mut item = to_item(&e);
            let is_suppressed = match &item.sender_account {
                Some(a) if !item.is_dsn => self.store.is_suppressed(a, &item.recipient)?,
                _ => false,
            };
            if is_suppressed {
                let decision = self.qc.fail(&mut item, &Failure::suppressed(), now);
                suppressed.push(Decided {
                    item,
                    result: None,
                    decision,
                });
            } else {
                items.push(item);
                keep_entries.push(e);
            }
        }
        if !suppressed.is_empty() {
            self.record_decided(suppressed, None, &message, now)?;
        }
        Ok(Some(Prepared {
            message,
            items,
            entries: keep_entries,
        }))
    }

    /// Records the results of a delivery and the DSNs they call for (blocking: storage).
    fn conclude(
        &self,
        p: Prepared,
        results: Vec<AttemptResult>,
        tls: Vec<TlsAttempt>,
        tls_results: Vec<SessionResult>,
    ) -> Result<(), StoreError> {
        let Prepared { message, items, .. } = p;
        if items.is_empty() {
            return Ok(());
        }
        let now = (self.clock)();
        let mut rng = self.rng();
        let mut decided = Vec::with_capacity(items.len());
        for (i, mut item) in items.into_iter().enumerate() {
            let result = result_at(&results, i);
            let decision = self.qc.after_attempt(&mut item, &result, now, &mut rng);
            tracing::info!(id = item.id, recipient = %item.recipient, decision = ?decision_name(&decision), "delivery attempt");
            decided.push(Decided {
                item,
                result: Some(result),
                decision,
            });
        }
        // Our own TLS reports' deliveries are not reported (mox), so a failing report
        // delivery does not become the next day's report.
        if !rmox_core::tlspolicy::outgoing::is_tls_report_message(&message) {
            self.record_tls_results(&tls_results, now);
        }
        let rec = self.record_decided(decided, tls.last(), &message, now)?;
        for id in &rec.gone {
            // Dropped or retired by the administrator during the delivery.
            tracing::info!(
                id = id.0,
                "queue entry gone during its delivery; result not recorded"
            );
        }
        Ok(())
    }

    /// Stores the TLS report results (RFC 8460), one record each under its policy domain (the
    /// recipient domain, or the MX host for DANE) as the report sender reads them. A lost
    /// record must not keep the results from being applied: failures are logged.
    fn record_tls_results(&self, tls_results: &[SessionResult], now: UnixTime) {
        for t in tls_results {
            let domain = &t.policy.policy_domain;
            let r = match serde_json::to_vec(t) {
                Ok(json) => self
                    .store
                    .report_add(ReportKind::TlsResult, domain, now, json)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = r {
                tracing::error!(%domain, error = %e, "storing TLS result");
            }
        }
    }

    /// Delivers the batches of one connection (from [`QueueConfig::due_connections`]): one
    /// after the other over one SMTP connection while it stays healthy, each batch's
    /// results recorded as soon as they are final (so a crash loses no more than a single
    /// delivery in flight would), then the TLS report results of the connections. TLS
    /// report messages go alone, as do batches of a blocking deliverer.
    async fn process_connection<R: Net>(
        self: &Arc<Self>,
        rt: &R,
        conn: Conn,
    ) -> Result<(), StoreError> {
        let Deliverer::Smtp(d) = &self.deliverer else {
            return self.process_each(rt, conn).await;
        };
        if conn.len() < 2 {
            return self.process_each(rt, conn).await;
        }
        let me = Arc::clone(self);
        let prepared = rt
            .unblock(Box::new(move || {
                let mut out = Vec::new();
                for (b, es) in conn {
                    if let Some(p) = me.prepare(es)? {
                        if !p.items.is_empty() {
                            out.push((b, p));
                        }
                    }
                }
                Ok::<_, StoreError>(out)
            }))
            .await?;
        let (alone, together): (Vec<_>, Vec<_>) = prepared
            .into_iter()
            .partition(|(_, p)| rmox_core::tlspolicy::outgoing::is_tls_report_message(&p.message));
        let mut first_err = None;
        for (b, p) in alone {
            if let Err(e) = self.deliver_prepared(rt, &b, p).await {
                first_err.get_or_insert(e);
            }
        }
        if together.is_empty() {
            return first_err.map_or(Ok(()), Err);
        }
        type View = (Batch, Vec<QueueItem>, Vec<QueueEntry>, Arc<[u8]>);
        let views: Vec<View> = together
            .iter()
            .map(|(b, p)| {
                (
                    b.clone(),
                    p.items.clone(),
                    p.entries.clone(),
                    Arc::clone(&p.message),
                )
            })
            .collect();
        let slots: Arc<Mutex<Vec<Option<Prepared>>>> = Arc::new(Mutex::new(
            together.into_iter().map(|(_, p)| Some(p)).collect(),
        ));
        let me = Arc::clone(self);
        let s2 = Arc::clone(&slots);
        let recorder: Recorder = Arc::new(move |i, results, tls| {
            let p = s2
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(i)
                .and_then(Option::take);
            if let Some(p) = p {
                if let Err(e) = me.conclude(p, results, tls, Vec::new()) {
                    tracing::error!(error = %e, "queue: applying delivery result");
                }
            }
        });
        let jobs: Vec<Job<'_>> = views
            .iter()
            .map(|(b, items, entries, message)| Job {
                batch: b,
                items,
                entries,
                message,
            })
            .collect();
        let tls_results = d.deliver_many(rt.clone(), &jobs, recorder).await;
        let me = Arc::clone(self);
        rt.unblock(Box::new(move || {
            let now = (me.clock)();
            me.record_tls_results(&tls_results, now);
            // Every job was recorded (the delivery reports each); a slot left over means a
            // job without results: it is tried again as due.
            let left = slots
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|p| p.is_some())
                .count();
            if left > 0 {
                tracing::error!(left, "queue: jobs of a connection without results");
            }
        }))
        .await;
        first_err.map_or(Ok(()), Err)
    }

    /// Each batch of `conn` on its own, one after the other.
    async fn process_each<R: Net>(self: &Arc<Self>, rt: &R, conn: Conn) -> Result<(), StoreError> {
        let mut first_err = None;
        for (b, es) in conn {
            if let Err(e) = self.process(rt, &b, es).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Records decided results in one durable commit (issue 15): every recipient's
    /// attempt, the retirement of the entries that are done (their message file is removed
    /// when it was the last), and the DSNs the decisions call for, composed one per kind
    /// and delivered locally or queued. So what was delivered is never sent again after a
    /// crash, and a recorded failure never loses its DSN. Then the suppression list, which
    /// needs the failure streaks the commit counted.
    fn record_decided(
        &self,
        decided: Vec<Decided>,
        tls: Option<&TlsAttempt>,
        message: &[u8],
        now: UnixTime,
    ) -> Result<rmox_storage::Recorded, StoreError> {
        for d in &decided {
            if let Some(r) = &d.result {
                crate::metrics::get().delivery(r, tls.map(|t| t.mode));
            }
        }
        let records = decided
            .iter()
            .map(|d| {
                let mut r = attempt_record(&d.item, d.result.as_ref(), tls, &d.decision, now);
                r.webhook = self.outgoing_hook(d, message, now);
                r
            })
            .collect();
        let notices: Vec<(QueueItem, DsnNotice)> = decided
            .iter()
            .filter_map(|d| dsn_of(&d.decision).map(|n| (d.item.clone(), n.clone())))
            .collect();
        let dsns = self.compose_dsns(&notices, message, now);
        let store_notices = dsns
            .iter()
            .map(|c| Notice {
                about: c.about.clone(),
                message: match dsn_local_destination(
                    &self.config,
                    &c.item.mail_from,
                    c.item.sender_account.as_deref(),
                ) {
                    Some((account, mailbox)) => NoticeMessage::Deliver(dsn_delivery(
                        account,
                        mailbox,
                        &c.item.mail_from,
                        &c.dsn,
                        now,
                    )),
                    None => NoticeMessage::Queue(
                        &c.dsn,
                        dsn_queue_recipient(&c.item.mail_from, &c.dsn, now),
                    ),
                },
            })
            .collect();
        let rec = self.store.queue_record_with(records, store_notices, now)?;
        let mut queued = false;
        let mut again = Vec::new();
        for (c, outcome) in dsns.iter().zip(&rec.notices) {
            match outcome {
                NoticeOutcome::Queued(_) => queued = true,
                NoticeOutcome::Delivered(_) => {}
                NoticeOutcome::Refused(e) => {
                    tracing::error!(to = %c.item.mail_from, error = %e, "DSN not delivered to the local sender")
                }
                // An entry it reports on was dropped during the delivery: the DSN goes
                // out again for the other entries (a rare, administrative race; this one
                // takes a commit of its own).
                NoticeOutcome::Gone => again.extend(
                    notices
                        .iter()
                        .filter(|(i, _)| {
                            c.about.contains(&QueueId(i.id)) && !rec.gone.contains(&QueueId(i.id))
                        })
                        .cloned(),
                ),
            }
        }
        if queued {
            self.wakeup.notify();
        }
        // DSNs delivered into a local account are incoming mail for its webhooks.
        let local_dsns: Vec<rmox_storage::MessageId> = rec
            .notices
            .iter()
            .filter_map(|n| match n {
                NoticeOutcome::Delivered(id) => Some(*id),
                _ => None,
            })
            .collect();
        crate::webhooks::store_incoming(self.store.as_ref(), &self.config, &local_dsns);
        for (i, d) in decided.iter().enumerate() {
            if rec.gone.contains(&QueueId(d.item.id)) {
                continue;
            }
            let streak = rec.streaks.get(i).copied().unwrap_or(0);
            self.suppress_after(&d.item, d.result.as_ref(), &d.decision, now, streak)?;
        }
        if !again.is_empty() {
            for c in self.compose_dsns(&again, message, now) {
                self.send_dsn(&c.item, &c.dsn, now)?;
            }
        }
        Ok(rec)
    }

    /// Delivers one batch on runtime `rt` and applies the results; storage work runs on
    /// the runtime's blocking pool.
    async fn process<R: Net>(
        self: &Arc<Self>,
        rt: &R,
        batch: &Batch,
        entries: Vec<QueueEntry>,
    ) -> Result<(), StoreError> {
        let me = Arc::clone(self);
        let Some(p) = rt.unblock(Box::new(move || me.prepare(entries))).await? else {
            return Ok(());
        };
        self.deliver_prepared(rt, batch, p).await
    }

    /// Delivers a prepared batch on runtime `rt` and applies the results.
    async fn deliver_prepared<R: Net>(
        self: &Arc<Self>,
        rt: &R,
        batch: &Batch,
        p: Prepared,
    ) -> Result<(), StoreError> {
        let (results, tls, tls_results) = if p.items.is_empty() {
            (Vec::new(), Vec::new(), Vec::new())
        } else {
            match &self.deliverer {
                Deliverer::Smtp(d) => {
                    let job = Job {
                        batch,
                        items: &p.items,
                        entries: &p.entries,
                        message: &p.message,
                    };
                    d.deliver(rt.clone(), &job).await
                }
                Deliverer::Blocking(c) => {
                    let c = Arc::clone(c);
                    let (b, items, entries, message) = (
                        batch.clone(),
                        p.items.clone(),
                        p.entries.clone(),
                        Arc::clone(&p.message),
                    );
                    let (results, tls) = rt
                        .unblock(Box::new(move || {
                            c.deliver_recorded(&Job {
                                batch: &b,
                                items: &items,
                                entries: &entries,
                                message: &message,
                            })
                        }))
                        .await;
                    (results, tls, Vec::new())
                }
            }
        };
        let me = Arc::clone(self);
        rt.unblock(Box::new(move || me.conclude(p, results, tls, tls_results)))
            .await
    }

    /// The outgoing webhook of a decided attempt, when its sender account has one: whether
    /// the failure suppresses the recipient is decided as [`Runner::suppress_after`] will,
    /// from the streak storage holds plus this failure.
    fn outgoing_hook(
        &self,
        d: &Decided,
        message: &[u8],
        now: UnixTime,
    ) -> Option<rmox_storage::Webhook> {
        let account = d.item.sender_account.as_deref()?;
        let w = self.config.account.get(account)?.webhooks.as_ref()?;
        w.outgoing_url.as_ref()?;
        let text = outcome_text(&d.item, d.result.as_ref()).1;
        let suppressing = match &d.decision {
            Decision::Failed { suppress, .. } if d.result.is_some() => {
                let prior = self
                    .store
                    .failure_streak(account, &d.item.recipient.to_ascii_lowercase())
                    .unwrap_or(0);
                rmox_core::queue::suppression_after_failure(*suppress, prior + 1, &text).is_some()
            }
            _ => false,
        };
        let suppressed = d.result.is_none()
            && matches!(d.decision, Decision::Failed { .. })
            && text == Failure::suppressed().text();
        // The entry's unique return-address id: in its MAIL FROM after the separator, when
        // storage knows that id as this entry's.
        let from_id = d
            .item
            .mail_from
            .rsplit_once('@')
            .and_then(|(lp, dom)| lp.split_once(self.config.catchall_separator(dom)?))
            .map(|(_, id)| id)
            .filter(|id| {
                matches!(self.store.queue_by_from_id(id), Ok(Some((e, _))) if e.id.0 == d.item.id)
            })
            .unwrap_or_default();
        crate::webhooks::outgoing_for_attempt(
            &self.config,
            &d.item,
            &d.decision,
            &text,
            suppressing,
            suppressed,
            from_id,
            message,
            now,
        )
    }

    /// Adds the recipient of a failed delivery to the sender's suppression list when core
    /// says so (from the failure and the sender's failures in a row to it, `streak`, as the
    /// commit of the decision counted them).
    fn suppress_after(
        &self,
        item: &QueueItem,
        result: Option<&AttemptResult>,
        d: &Decision,
        now: UnixTime,
        streak: u32,
    ) -> Result<(), StoreError> {
        let Decision::Failed { suppress, .. } = d else {
            return Ok(());
        };
        let text = outcome_text(item, result).1;
        let reason = rmox_core::queue::suppression_after_failure(*suppress, streak, &text);
        if let (Some(reason), Some(a)) = (reason, &item.sender_account) {
            self.store.suppression_add(
                a,
                Suppression {
                    address: item.recipient.clone(),
                    reason,
                    manual: false,
                    created: now,
                },
            )?;
        }
        Ok(())
    }

    /// Composes one DSN per kind for the notices (all about one message).
    fn compose_dsns(
        &self,
        notices: &[(QueueItem, DsnNotice)],
        original: &[u8],
        now: UnixTime,
    ) -> Vec<ComposedDsn> {
        let mut by_kind: Vec<(
            DsnKind,
            &QueueItem,
            Vec<rmox_core::queue::DsnRecipient>,
            Vec<QueueId>,
        )> = Vec::new();
        for (item, n) in notices {
            match by_kind.iter_mut().find(|(k, ..)| *k == n.kind) {
                Some((_, _, v, about)) => {
                    v.push(n.recipient.clone());
                    about.push(QueueId(item.id));
                }
                None => by_kind.push((
                    n.kind,
                    item,
                    vec![n.recipient.clone()],
                    vec![QueueId(item.id)],
                )),
            }
        }
        let mut out = Vec::with_capacity(by_kind.len());
        for (kind, item, recipients, about) in by_kind {
            let nonce = self.rng().next_u64();
            let input = DsnInput::for_item(
                item,
                kind,
                recipients,
                &self.config.hostname,
                original,
                format!("{}.{nonce:016x}", item.id),
            );
            out.push(ComposedDsn {
                item: item.clone(),
                dsn: compose_dsn(&input, now),
                about,
            });
        }
        out
    }

    /// Delivers a DSN about `item` to its MAIL FROM: into a local account when the sender is
    /// ours (always in localserve), else queued with the null sender.
    pub fn send_dsn(&self, item: &QueueItem, dsn: &[u8], now: UnixTime) -> Result<(), StoreError> {
        let queued = deliver_or_queue_dsn(
            self.store.as_ref(),
            &self.config,
            &item.mail_from,
            item.sender_account.as_deref(),
            dsn,
            now,
        )?;
        if queued {
            self.wakeup.notify();
        }
        Ok(())
    }

    /// Administrator `fail`: fails the entry now with a DSN to the sender.
    pub fn fail_entry(&self, id: QueueId) -> Result<(), StoreError> {
        let Some(e) = self.store.queue_get(id)? else {
            return Err(StoreError::NoQueueEntry(id));
        };
        let message = self.store.queue_message(e.msg_id)?;
        let now = (self.clock)();
        let mut item = to_item(&e);
        let d = self.qc.fail(
            &mut item,
            &Failure::local(
                "delivery failed by the administrator",
                Enhanced::new(5, 3, 0),
            ),
            now,
        );
        let rec = self.record_decided(
            vec![Decided {
                item,
                result: None,
                decision: d,
            }],
            None,
            &message,
            now,
        )?;
        match rec.gone.first() {
            Some(id) => Err(StoreError::NoQueueEntry(*id)),
            None => Ok(()),
        }
    }

    /// Starts the runner on a thread of its own, on this runner's runtime, with at most
    /// `workers` deliveries in flight (tests; the server runs [`Runner::run`] on its
    /// runtime).
    #[cfg(test)]
    pub fn spawn(self: Arc<Self>, workers: usize) -> Result<RunnerHandle, crate::Fail> {
        struct Loop(Arc<Runner>, usize);
        impl OnRuntime for Loop {
            type Output = ();
            async fn run<R: Net>(self, rt: R) {
                self.0.run(rt, self.1, None).await
            }
        }
        let wakeup = Arc::clone(&self.wakeup);
        let rt = self.runtime;
        let thread = std::thread::Builder::new()
            .name("rmox-queue".into())
            .spawn(move || {
                if let Err(e) = rt.block_on(Loop(self, workers)) {
                    tracing::error!(error = %e, "queue runner: runtime");
                }
            })
            .map_err(|e| crate::Fail(format!("starting queue runner: {e}")))?;
        Ok(RunnerHandle {
            wakeup,
            thread: Some(thread),
        })
    }

    /// The runner as a task on runtime `rt`: passes over the due entries, each batch a local
    /// task, at most `workers` in flight. Returns once stopped ([`Wakeup::stop`], or
    /// `shutdown`) and the deliveries in flight have ended.
    pub async fn run<R: Net>(
        self: Arc<Self>,
        rt: R,
        workers: usize,
        shutdown: Option<Arc<rmox_driver::Shutdown>>,
    ) {
        let workers = workers.max(1);
        let mut waiting: VecDeque<Conn> = VecDeque::new();
        let mut backlog = Backlog::default();
        let mut running: Vec<Pin<Box<dyn Future<Output = ()>>>> = Vec::new();
        tracing::info!(workers, "queue runner started");
        let stopped =
            |w: &Wakeup| w.is_stopped() || shutdown.as_ref().is_some_and(|s| s.is_triggered());
        let shared = self.shared_store();
        let mut renewed = Instant::now();
        while !stopped(&self.wakeup) {
            let now = (self.clock)();
            if shared && renewed.elapsed() >= self.renew_every() {
                renewed = Instant::now();
                let me = Arc::clone(&self);
                rt.unblock(Box::new(move || me.renew_leases())).await;
            }
            if waiting.is_empty() {
                waiting.extend(self.next_batches(&rt, &mut backlog, now).await);
            }
            // Drop the handles of ended deliveries, then start more up to the limit.
            let mut still = Vec::with_capacity(running.len());
            for mut h in running {
                if futures_lite::future::poll_once(&mut h).await.is_none() {
                    still.push(h);
                }
            }
            running = still;
            while running.len() < workers {
                let Some(conn) = waiting.pop_front() else {
                    break;
                };
                let me = Arc::clone(&self);
                let rt2 = rt.clone();
                running.push(rt.spawn(async move {
                    let batches: Vec<Batch> = conn.iter().map(|(b, _)| b.clone()).collect();
                    if let Err(e) = me.process_connection(&rt2, conn).await {
                        tracing::error!(error = %e, "queue: applying delivery result");
                    }
                    me.finish(&batches);
                    me.wakeup.notify_finished();
                }));
            }
            // Other nodes sharing the store queue entries without waking this one, and a
            // node that dies leaves its leased entries: look again within a lease at most.
            let mut max_sleep =
                MAX_SLEEP.min(Duration::from_secs(self.config.storage.lease_secs.max(1)));
            if shared && !running.is_empty() {
                // Attempts run: wake to renew their leases in time.
                max_sleep = max_sleep.min(self.renew_every());
            }
            let sleep = if !waiting.is_empty() {
                // Batches wait for a free slot: the end of a delivery wakes us.
                max_sleep
            } else if !backlog.entries.is_empty() {
                // Entries wait for a slot (the end of a delivery wakes us) or a new look.
                BACKLOG_MAX_AGE
            } else {
                let me = Arc::clone(&self);
                match rt
                    .unblock(Box::new(move || me.store.queue_next_due()))
                    .await
                {
                    Ok(Some(t)) => {
                        let secs = t.0.saturating_sub((self.clock)().0).max(1);
                        Duration::from_secs(u64::try_from(secs).unwrap_or(1)).min(max_sleep)
                    }
                    _ => max_sleep,
                }
            };
            let stop = async {
                match &shutdown {
                    Some(s) => s.wait().await,
                    None => futures_lite::future::pending::<()>().await,
                }
            };
            self.wakeup
                .notified()
                .or(rt.sleep_until(Instant::now() + sleep))
                .or(stop)
                .await;
        }
        // Batches taken but not started are due again at the next start.
        for conn in waiting {
            let batches: Vec<Batch> = conn.into_iter().map(|(b, _)| b).collect();
            self.finish(&batches);
        }
        for h in running {
            h.await;
        }
        tracing::info!("queue runner stopped");
    }
}

fn decision_name(d: &Decision) -> &'static str {
    match d {
        Decision::Delivered { .. } => "delivered",
        Decision::Retry { .. } => "retry",
        Decision::Failed { .. } => "failed",
    }
}

/// localserve delivery: back into the sender's account, except local parts starting with
/// `queue` that fail like mox localserve does: `queuetemperror*` temporarily,
/// `queuepermerror*` permanently, `queuetimeout*` with a (temporary) timeout.
pub struct LocalserveConnector {
    store: Arc<dyn MailStore>,
    config: Arc<Config>,
}

/// What a localserve recipient's local part asks for (core's table, `Stage::Queue`).
fn localserve_special(recipient: &str) -> Option<AttemptResult> {
    use rmox_core::localserve::{localpart, special, Stage};
    special(Stage::Queue, localpart(recipient)).map(|s| s.attempt_result())
}

impl Connector for LocalserveConnector {
    fn deliver(&self, job: &Job<'_>) -> Vec<AttemptResult> {
        job.items
            .iter()
            .map(|item| {
                if let Some(r) = localserve_special(&item.recipient) {
                    return r;
                }
                let account = item
                    .sender_account
                    .clone()
                    .or_else(|| self.config.postmaster.as_ref().map(|p| p.account.clone()));
                let Some(account) = account else {
                    return AttemptResult::Permanent(Failure::local(
                        "no account to deliver to",
                        Enhanced::new(5, 1, 1),
                    ));
                };
                let info = MessageInfo {
                    mail_from: (!item.mail_from.is_empty()).then(|| item.mail_from.clone()),
                    rcpt_to: Some(item.recipient.clone()),
                    ..MessageInfo::default()
                };
                let r = self.store.deliver(Delivery {
                    account,
                    mailbox: "Inbox".into(),
                    head: &[],
                    message: job.message,
                    flags: Flags::default(),
                    received: rmox_driver::now().wall,
                    info,
                });
                match r {
                    Ok(id) => {
                        crate::webhooks::store_incoming(self.store.as_ref(), &self.config, &[id]);
                        AttemptResult::Delivered {
                            host: None,
                            reply: None,
                            remote_supports_dsn: false,
                        }
                    }
                    Err(e) => AttemptResult::Temporary(Failure::local(
                        format!("local delivery: {e}"),
                        Enhanced::new(4, 3, 0),
                    )),
                }
            })
            .collect()
    }
}

/// Where a DSN to `to` (an original MAIL FROM) is delivered locally: the account and mailbox
/// when the address is ours (in localserve: the sending account, else the postmaster's);
/// `None` when it must be queued ([`dsn_queue_recipient`]).
pub fn dsn_local_destination(
    config: &Config,
    to: &str,
    sender_account: Option<&str>,
) -> Option<(String, String)> {
    if config.localserve {
        sender_account
            .map(String::from)
            .or_else(|| config.postmaster.as_ref().map(|p| p.account.clone()))
            .map(|a| (a, "Inbox".to_string()))
    } else {
        to.rsplit_once('@').and_then(
            |(lp, d)| match config.resolve(lp, &d.to_ascii_lowercase()) {
                Resolution::Account { account, mailbox } => Some((account, mailbox)),
                _ => None,
            },
        )
    }
}

/// The queue entry of a DSN to `to`: the null sender, marked as a DSN so no DSN is ever sent
/// about it.
pub fn dsn_queue_recipient(to: &str, dsn: &[u8], now: UnixTime) -> QueueRecipient {
    QueueRecipient {
        sender_account: None,
        mail_from: String::new(),
        recipient: to.to_string(),
        has_8bit: dsn.iter().any(|b| *b >= 0x80),
        smtputf8: !to.is_ascii(),
        requiretls: RequireTls::Default,
        transport: None,
        next_attempt: now,
        queued: now,
        hold: false,
        dsn: rmox_storage::DsnParams::default(),
        is_dsn: true,
        from_id: None,
    }
}

/// The local delivery of a DSN into `account`'s `mailbox`.
pub fn dsn_delivery<'a>(
    account: String,
    mailbox: String,
    to: &str,
    dsn: &'a [u8],
    now: UnixTime,
) -> Delivery<'a> {
    Delivery {
        account,
        mailbox,
        head: &[],
        message: dsn,
        flags: Flags::default(),
        received: now,
        info: MessageInfo {
            rcpt_to: Some(to.to_string()),
            ..MessageInfo::default()
        },
    }
}

/// Sends a DSN to `to` (an original MAIL FROM): delivered into a local account
/// ([`dsn_local_destination`]), else queued ([`dsn_queue_recipient`]). Returns whether it
/// was queued (the caller wakes the queue runner). Durable when it returns `Ok`.
pub fn deliver_or_queue_dsn(
    store: &dyn MailStore,
    config: &Config,
    to: &str,
    sender_account: Option<&str>,
    dsn: &[u8],
    now: UnixTime,
) -> Result<bool, StoreError> {
    if let Some((account, mailbox)) = dsn_local_destination(config, to, sender_account) {
        store.deliver(dsn_delivery(account, mailbox, to, dsn, now))?;
        return Ok(false);
    }
    store.queue_add(dsn, vec![dsn_queue_recipient(to, dsn, now)])?;
    Ok(true)
}

#[cfg(test)]
mod tests;
