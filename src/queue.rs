//! The queue runner: outgoing delivery of queued messages, retries, DSNs, suppression.
//!
//! One runner thread loads due entries from the store ([`Store::queue_due`]), maps them to
//! the core scheduler's [`QueueItem`]s, groups them into transactions with
//! [`QueueConfig::due`] and hands each batch to a pool of worker threads. A worker suppresses
//! recipients on the sender's suppression list, asks a [`Connector`] to deliver the rest
//! (SMTP to the MX hosts, [`SmtpConnector`]; or back into the sender's account in
//! localserve, [`LocalserveConnector`]), then applies [`QueueConfig::after_attempt`]: the
//! attempt is recorded in storage, delivered and failed entries are retired, DSNs are
//! composed and queued (or delivered locally when the sender is one of ours). The runner
//! sleeps until the next due time or a [`Wakeup`]. Everything lives in the store, so a
//! restart loses nothing.

pub mod cli;
mod smtp;
pub mod socks5;
pub mod tlsresult;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use rmox_core::queue::{
    compose_dsn, AttemptResult, Batch, Decision, DsnInput, DsnKind, DsnNotice, DsnParams, Failure,
    InFlight, QueueConfig, QueueItem, Routes,
};
use rmox_core::smtp::{Enhanced, Notify, Ret};
use rmox_core::{Rng, UnixTime};
use rmox_storage::{
    Attempt, Delivery, Flags, MailStore, MessageInfo, Outcome, QueueEntry, QueueId, QueueRecipient,
    ReportKind, RequireTls, Store, StoreError, Suppression,
};

use crate::config::{Config, Resolution};

pub use smtp::SmtpConnector;
pub use tlsresult::TlsAttempt;

/// Most entries loaded per pass.
const DUE_LIMIT: usize = 1000;
/// Longest sleep between passes (the runner also wakes for new messages and finished
/// batches).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Wakes the runner: a new message was queued, a batch finished, or it must stop.
#[derive(Debug, Default)]
pub struct Wakeup {
    pending: Mutex<bool>,
    cv: Condvar,
    stop: AtomicBool,
}

impl Wakeup {
    /// Something changed: look at the queue again.
    pub fn notify(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *p = true;
        self.cv.notify_all();
    }

    /// Ask the runner to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.notify();
    }

    /// Whether stop was asked.
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Waits for a notification or `d`.
    fn wait(&self, d: Duration) {
        let p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let (mut p, _) = self
            .cv
            .wait_timeout_while(p, d, |p| !*p)
            .unwrap_or_else(|e| e.into_inner());
        *p = false;
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

/// Delivers a job; behind a trait so tests give canned outcomes.
pub trait Connector: Send + Sync {
    /// One result per item of `job`, in order.
    fn deliver(&self, job: &Job<'_>) -> Vec<AttemptResult>;

    /// As [`Connector::deliver`], with the TLS of each connection made, in order.
    fn deliver_recorded(&self, job: &Job<'_>) -> (Vec<AttemptResult>, Vec<TlsAttempt>) {
        (self.deliver(job), Vec::new())
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
    store: Arc<Store>,
    config: Arc<Config>,
    qc: QueueConfig,
    routes: Routes,
    connector: Arc<dyn Connector>,
    rng: Mutex<Rng>,
    wakeup: Arc<Wakeup>,
    in_flight: Mutex<InFlight>,
    clock: Clock,
}

/// A running runner: stop it with [`RunnerHandle::stop`].
pub struct RunnerHandle {
    wakeup: Arc<Wakeup>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunnerHandle {
    /// Stops the runner and waits for batches in progress.
    pub fn stop(mut self) {
        self.wakeup.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Runner {
    /// A runner over `store` delivering with `connector`.
    pub fn new(
        store: Arc<Store>,
        config: Arc<Config>,
        connector: Arc<dyn Connector>,
        seed: u64,
        clock: Clock,
    ) -> Runner {
        Runner {
            store,
            qc: QueueConfig::default(),
            routes: config.routes(),
            config,
            connector,
            rng: Mutex::new(Rng::new(seed)),
            wakeup: Arc::new(Wakeup::default()),
            in_flight: Mutex::new(InFlight::default()),
            clock,
        }
    }

    /// The connector a config asks for: localserve delivers back into the sender's account,
    /// otherwise SMTP to the MX hosts through `dns`.
    pub fn connector_for(
        config: &Arc<Config>,
        store: &Arc<Store>,
        dns: Option<crate::resolve::Dns>,
        seed: u64,
    ) -> Result<Arc<dyn Connector>, crate::Fail> {
        if config.localserve {
            return Ok(Arc::new(LocalserveConnector {
                store: Arc::clone(store),
                config: Arc::clone(config),
            }));
        }
        let dns = match dns {
            Some(d) => d,
            None => {
                let base = config
                    .path
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .to_path_buf();
                crate::resolve::Dns::from_config(&config.resolver, &base)?
            }
        };
        let transports = config.transports()?;
        Ok(Arc::new(
            SmtpConnector::new(
                dns,
                &config.hostname,
                config.queue.smtp_port,
                Duration::from_secs(config.queue.connect_timeout_secs.max(1)),
                seed,
            )?
            .with_transports(transports)
            .with_source_addresses(config.queue.source_ipv4, config.queue.source_ipv6),
        ))
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

    fn rng(&self) -> Rng {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).child()
    }

    /// The due batches at `now` (only those containing `only` when given), marked in
    /// flight, each with its stored entries.
    fn take_due(
        &self,
        now: UnixTime,
        only: Option<QueueId>,
    ) -> Result<Vec<(Batch, Vec<QueueEntry>)>, StoreError> {
        let entries = self.store.queue_due(now, DUE_LIMIT)?;
        let items: Vec<QueueItem> = entries.iter().map(to_item).collect();
        let by_id: BTreeMap<u64, &QueueEntry> = entries.iter().map(|e| (e.id.0, e)).collect();
        let mut inf = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for b in self.qc.due(&items, now, &self.routes, &inf) {
            if only.is_some_and(|id| !b.items.contains(&id.0)) {
                continue;
            }
            let es: Vec<QueueEntry> = b
                .items
                .iter()
                .filter_map(|id| by_id.get(id).map(|e| (*e).clone()))
                .collect();
            inf.start(&b);
            out.push((b, es));
        }
        Ok(out)
    }

    /// Runs one pass at `now` in this thread: every due batch is attempted and its result
    /// applied. Returns the number of batches.
    #[cfg(test)]
    pub fn run_once(&self, now: UnixTime) -> Result<usize, StoreError> {
        self.run_selected(now, None)
    }

    /// As [`Runner::run_once`], only batches containing entry `only` when given.
    pub fn run_selected(&self, now: UnixTime, only: Option<QueueId>) -> Result<usize, StoreError> {
        let batches = self.take_due(now, only)?;
        let n = batches.len();
        for (b, es) in batches {
            let r = self.process(&b, es);
            self.finish(&b);
            r?;
        }
        Ok(n)
    }

    fn finish(&self, b: &Batch) {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish(b);
    }

    /// Delivers one batch and applies the results.
    pub fn process(&self, batch: &Batch, entries: Vec<QueueEntry>) -> Result<(), StoreError> {
        let Some(first) = entries.first() else {
            return Ok(());
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
        let mut keep_items = Vec::new();
        let mut keep_entries = Vec::new();
        let mut notices: Vec<(QueueItem, DsnNotice)> = Vec::new();
        for e in entries {
            let mut item = to_item(&e);
            let suppressed = match &item.sender_account {
                Some(a) if !item.is_dsn => self.store.is_suppressed(a, &item.recipient)?,
                _ => false,
            };
            if suppressed {
                let d = self.qc.fail(&mut item, &Failure::suppressed(), now);
                self.apply(&item, None, None, &d, now, &mut notices)?;
            } else {
                keep_items.push(item);
                keep_entries.push(e);
            }
        }
        if !keep_items.is_empty() {
            let job = Job {
                batch,
                items: &keep_items,
                entries: &keep_entries,
                message: &message,
            };
            let (results, tls) = self.connector.deliver_recorded(&job);
            let now = (self.clock)();
            // A lost report record must not keep the results from being applied.
            for t in tls.iter().filter(|t| t.is_reportable()) {
                let r = self.store.report_add(
                    ReportKind::TlsResult,
                    &t.policy_domain,
                    now,
                    t.to_json(),
                );
                if let Err(e) = r {
                    tracing::error!(domain = %t.policy_domain, error = %e, "storing TLS result");
                }
            }
            let mut rng = self.rng();
            for (i, mut item) in keep_items.into_iter().enumerate() {
                let result = results.get(i).cloned().unwrap_or_else(|| {
                    AttemptResult::Temporary(Failure::local(
                        "no result for recipient",
                        Enhanced::new(4, 0, 0),
                    ))
                });
                let d = self.qc.after_attempt(&mut item, &result, now, &mut rng);
                tracing::info!(id = item.id, recipient = %item.recipient, decision = ?decision_name(&d), "delivery attempt");
                self.apply(&item, Some(&result), tls.last(), &d, now, &mut notices)?;
            }
        }
        self.send_dsns(notices, &message, now)
    }

    /// Records the attempt (or administrative failure) of `item` in storage.
    fn apply(
        &self,
        item: &QueueItem,
        result: Option<&AttemptResult>,
        tls: Option<&TlsAttempt>,
        d: &Decision,
        now: UnixTime,
        notices: &mut Vec<(QueueItem, DsnNotice)>,
    ) -> Result<(), StoreError> {
        let (host, text) = match result {
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
        };
        let attempts = item.attempts;
        let last_error = item.last_error.clone();
        let next = item.next_attempt;
        let record = result.is_some();
        let (h, t) = (host.clone(), text.clone());
        let tls_mode = tls.map(|t| t.mode.to_string());
        let tls_result = tls.map(TlsAttempt::result_text);
        self.store.queue_update(QueueId(item.id), move |e| {
            e.attempts = attempts;
            e.last_error = last_error;
            e.rcpt.next_attempt = next;
            if record {
                e.last_attempt = Some(now);
                e.history.push(Attempt {
                    time: now,
                    host: h,
                    result: t,
                    tls_mode,
                    tls_result,
                });
            }
        })?;
        match d {
            Decision::Delivered { dsn } => {
                self.store
                    .queue_retire(QueueId(item.id), Outcome::Delivered(text), now)?;
                if let (Some(a), Some(_)) = (&item.sender_account, result) {
                    self.store
                        .failure_streak_record(a, &item.recipient, false)?;
                }
                if let Some(n) = dsn {
                    notices.push((item.clone(), n.clone()));
                }
            }
            Decision::Retry { dsn, .. } => {
                if let Some(n) = dsn {
                    notices.push((item.clone(), n.clone()));
                }
            }
            Decision::Failed { dsn, suppress } => {
                self.store
                    .queue_retire(QueueId(item.id), Outcome::Failed(text.clone()), now)?;
                // Storage counts failed messages in a row; core decides (three suppress).
                let streak = match (&item.sender_account, result) {
                    (Some(a), Some(_)) if !item.is_dsn => {
                        self.store.failure_streak_record(a, &item.recipient, true)?
                    }
                    _ => 0,
                };
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
                if let Some(n) = dsn {
                    notices.push((item.clone(), n.clone()));
                }
            }
        }
        Ok(())
    }

    /// Composes one DSN per kind for the notices (all about one message) and sends them.
    fn send_dsns(
        &self,
        notices: Vec<(QueueItem, DsnNotice)>,
        original: &[u8],
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let mut by_kind: Vec<(DsnKind, QueueItem, Vec<rmox_core::queue::DsnRecipient>)> =
            Vec::new();
        for (item, n) in notices {
            match by_kind.iter_mut().find(|(k, _, _)| *k == n.kind) {
                Some((_, _, v)) => v.push(n.recipient),
                None => by_kind.push((n.kind, item, vec![n.recipient])),
            }
        }
        for (kind, item, recipients) in by_kind {
            let nonce = self.rng().next_u64();
            let input = DsnInput::for_item(
                &item,
                kind,
                recipients,
                &self.config.hostname,
                original,
                format!("{}.{nonce:016x}", item.id),
            );
            let dsn = compose_dsn(&input, now);
            self.send_dsn(&item, &dsn, now)?;
        }
        Ok(())
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
        let mut notices = Vec::new();
        self.apply(&item, None, None, &d, now, &mut notices)?;
        self.send_dsns(notices, &message, now)
    }

    /// Starts the runner thread with `workers` delivery threads.
    pub fn spawn(self: Arc<Self>, workers: usize) -> Result<RunnerHandle, crate::Fail> {
        let wakeup = Arc::clone(&self.wakeup);
        let thread = std::thread::Builder::new()
            .name("rmox-queue".into())
            .spawn(move || self.run_loop(workers.max(1)))
            .map_err(|e| crate::Fail(format!("starting queue runner: {e}")))?;
        Ok(RunnerHandle {
            wakeup,
            thread: Some(thread),
        })
    }

    fn run_loop(self: Arc<Self>, workers: usize) {
        type Work = (Batch, Vec<QueueEntry>);
        let (tx, rx) = mpsc::channel::<Work>();
        let rx = Arc::new(Mutex::new(rx));
        let mut pool = Vec::new();
        for i in 0..workers {
            let rx = Arc::clone(&rx);
            let me = Arc::clone(&self);
            let t = std::thread::Builder::new()
                .name(format!("rmox-deliver-{i}"))
                .spawn(move || loop {
                    let job = {
                        let r = rx.lock().unwrap_or_else(|e| e.into_inner());
                        r.recv()
                    };
                    let Ok((b, es)) = job else { return };
                    if let Err(e) = me.process(&b, es) {
                        tracing::error!(error = %e, "queue: applying delivery result");
                    }
                    me.finish(&b);
                    me.wakeup.notify();
                });
            match t {
                Ok(t) => pool.push(t),
                Err(e) => tracing::error!(error = %e, "starting delivery worker"),
            }
        }
        if pool.is_empty() {
            return;
        }
        tracing::info!(workers = pool.len(), "queue runner started");
        while !self.wakeup.is_stopped() {
            let now = (self.clock)();
            match self.take_due(now, None) {
                Ok(batches) => {
                    for b in batches {
                        if tx.send(b).is_err() {
                            break;
                        }
                    }
                }
                Err(e) => tracing::error!(error = %e, "queue: loading due entries"),
            }
            let sleep = match self.store.queue_next_due() {
                Ok(Some(t)) => {
                    let secs = t.0.saturating_sub((self.clock)().0).max(1);
                    Duration::from_secs(u64::try_from(secs).unwrap_or(1)).min(MAX_SLEEP)
                }
                _ => MAX_SLEEP,
            };
            self.wakeup.wait(sleep);
        }
        drop(tx);
        for t in pool {
            let _ = t.join();
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
    store: Arc<Store>,
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
                    Ok(_) => AttemptResult::Delivered {
                        host: None,
                        reply: None,
                        remote_supports_dsn: false,
                    },
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
