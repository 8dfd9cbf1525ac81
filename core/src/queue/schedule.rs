//! Scheduling: which recipients are due and how they are combined, what happens after an
//! attempt (backoff with jitter, delayed DSN, final failure), future release.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::dsn::{must_not_send_dsn, Action, DsnKind, DsnRecipient};
use super::route::Routes;
use super::{should_suppress, QueueItem};
use crate::smtp::{Enhanced, Reply};
use crate::{Rng, UnixTime};

/// Why a [`QueueConfigBuilder`] was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QueueConfigError {
    /// The backoff list is empty.
    #[error("queue backoff: at least one interval is needed")]
    EmptyBackoff,
    /// An interval is shorter than the one before it.
    #[error("queue backoff: interval {0} is shorter than the one before it")]
    BackoffNotMonotone(usize),
    /// The jitter fraction is not within 0 to 0.5.
    #[error("queue jitter: {0} is not between 0 and 0.5")]
    Jitter(String),
    /// `max_attempts` is zero.
    #[error("queue max_attempts: must be at least 1")]
    ZeroAttempts,
    /// A limit (named) is zero.
    #[error("queue {0}: must be at least 1")]
    ZeroLimit(&'static str),
}

/// The knobs of the scheduler, with public fields; [`QueueConfigBuilder::build`] checks them
/// and gives a [`QueueConfig`]. `Default` gives mox-like values.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueConfigBuilder {
    /// Wait after the n-th failed attempt: entry `n-1`, the last entry for later attempts.
    /// Must be non-decreasing.
    pub backoff: Vec<Duration>,
    /// Each wait is spread by up to this fraction either way (0 to 0.5).
    pub jitter: f64,
    /// A delay DSN is sent after this failed attempt (once); 0 for never.
    pub delayed_dsn_after_attempt: u32,
    /// After this many failed attempts the message fails.
    pub max_attempts: u32,
    /// Transactions in flight to one recipient domain.
    pub max_per_domain: usize,
    /// Transactions in flight in total.
    pub max_total: usize,
    /// Recipients in one transaction.
    pub max_recipients_per_batch: usize,
    /// Transactions (messages) delivered over one connection, one after the other
    /// ([`QueueConfig::due_connections`]); 1 turns connection reuse off.
    pub max_transactions_per_connection: usize,
}

impl Default for QueueConfigBuilder {
    fn default() -> Self {
        let m = |x: u64| Duration::from_secs(x * 60);
        QueueConfigBuilder {
            backoff: vec![
                Duration::from_secs(450),
                m(15),
                m(30),
                m(60),
                m(120),
                m(240),
                m(480),
                m(480),
            ],
            jitter: 0.1,
            delayed_dsn_after_attempt: 5,
            max_attempts: 8,
            max_per_domain: 4,
            max_total: 100,
            max_recipients_per_batch: 100,
            max_transactions_per_connection: 20,
        }
    }
}

impl QueueConfigBuilder {
    /// Checks the values.
    pub fn build(self) -> Result<QueueConfig, QueueConfigError> {
        if self.backoff.is_empty() {
            return Err(QueueConfigError::EmptyBackoff);
        }
        if let Some(i) = (1..self.backoff.len()).find(|&i| {
            self.backoff.get(i) < self.backoff.get(i - 1) // both exist: i < len
        }) {
            return Err(QueueConfigError::BackoffNotMonotone(i));
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            return Err(QueueConfigError::Jitter(self.jitter.to_string()));
        }
        if self.max_attempts == 0 {
            return Err(QueueConfigError::ZeroAttempts);
        }
        for (name, v) in [
            ("max_per_domain", self.max_per_domain),
            ("max_total", self.max_total),
            ("max_recipients_per_batch", self.max_recipients_per_batch),
            (
                "max_transactions_per_connection",
                self.max_transactions_per_connection,
            ),
        ] {
            if v == 0 {
                return Err(QueueConfigError::ZeroLimit(name));
            }
        }
        Ok(QueueConfig {
            jitter_permille: (self.jitter * 1000.0).round() as u64,
            b: self,
        })
    }
}

/// A checked scheduler configuration; the scheduling functions are its methods.
#[derive(Clone, Debug, PartialEq)]
pub struct QueueConfig {
    b: QueueConfigBuilder,
    jitter_permille: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            jitter_permille: 100,
            b: QueueConfigBuilder::default(),
        }
    }
}

/// How one delivery attempt for one recipient ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// Accepted by the next hop (or delivered locally).
    Delivered {
        /// The host that accepted it; `None` for local delivery.
        host: Option<String>,
        /// Its final reply, if any.
        reply: Option<Reply>,
        /// The host announced DSN and the parameters were passed on, so it reports success
        /// itself.
        remote_supports_dsn: bool,
    },
    /// Try again later.
    Temporary(Failure),
    /// Do not try again.
    Permanent(Failure),
}

impl AttemptResult {
    /// Classifies a recipient's final reply: 2xx/3xx delivered, 4xx temporary, else
    /// permanent.
    pub fn from_reply(host: &str, reply: Reply, remote_supports_dsn: bool) -> AttemptResult {
        if reply.is_positive() {
            AttemptResult::Delivered {
                host: Some(host.to_string()),
                reply: Some(reply),
                remote_supports_dsn,
            }
        } else if reply.is_transient() {
            AttemptResult::Temporary(Failure::from_reply(host, reply))
        } else {
            AttemptResult::Permanent(Failure::from_reply(host, reply))
        }
    }
}

/// What went wrong in an attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The host that was tried, when one was reached or chosen.
    pub host: Option<String>,
    /// The remote reply, complete (all lines), when there was one.
    pub reply: Option<Reply>,
    /// A local description (connection refused, TLS error, no MX); may be empty.
    pub detail: String,
    /// The status when the reply carries none (or there is no reply).
    pub enhanced: Option<Enhanced>,
}

impl Failure {
    /// A failure given by a remote reply.
    pub fn from_reply(host: &str, reply: Reply) -> Failure {
        Failure {
            host: Some(host.to_string()),
            reply: Some(reply),
            detail: String::new(),
            enhanced: None,
        }
    }

    /// The failure for a recipient on the sender account's suppression list (fail it with
    /// [`QueueConfig::fail`] instead of attempting delivery).
    pub fn suppressed() -> Failure {
        Failure::local(
            "recipient is on the suppression list of the sending account",
            Enhanced::new(5, 7, 1),
        )
    }

    /// A failure without a remote reply.
    pub fn local(detail: impl Into<String>, enhanced: Enhanced) -> Failure {
        Failure {
            host: None,
            reply: None,
            detail: detail.into(),
            enhanced: Some(enhanced),
        }
    }

    /// The enhanced status for a DSN: the reply's, else the given one, else `X.0.0` from the
    /// reply code or from `permanent`.
    pub fn status(&self, permanent: bool) -> Enhanced {
        if let Some(e) = self
            .reply
            .as_ref()
            .and_then(|r| r.enhanced)
            .or(self.enhanced)
        {
            return e;
        }
        let class = match self.reply.as_ref().map(|r| r.code / 100) {
            Some(4) => 4,
            Some(5) => 5,
            _ if permanent => 5,
            _ => 4,
        };
        Enhanced::new(class, 0, 0)
    }

    /// The full text for the queue record and logs: every reply line in wire form, then
    /// the local detail.
    pub fn text(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(r) = &self.reply {
            let mut w = Vec::new();
            r.render(&mut w);
            let s = String::from_utf8_lossy(&w);
            parts.extend(s.split("\r\n").filter(|l| !l.is_empty()).map(String::from));
        }
        if !self.detail.is_empty() {
            parts.push(self.detail.clone());
        }
        parts.join("\n")
    }
}

/// A DSN the driver must compose (with [`super::dsn::compose_dsn`]) and queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DsnNotice {
    /// Failure, delay or success.
    pub kind: DsnKind,
    /// The per-recipient part.
    pub recipient: DsnRecipient,
}

/// What to do with an item after an attempt (the item itself is already updated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Done: retire the item as delivered; send the DSN when there is one.
    Delivered {
        /// A success DSN (`NOTIFY=SUCCESS` and the next hop did not take over DSNs).
        dsn: Option<DsnNotice>,
    },
    /// Keep the item; its `next_attempt` is set.
    Retry {
        /// When to try again.
        next_attempt: UnixTime,
        /// A delay DSN, sent once after the configured attempt.
        dsn: Option<DsnNotice>,
    },
    /// Done: retire the item as failed; send the DSN when there is one.
    Failed {
        /// The failure DSN (none for a DSN, the null sender or `NOTIFY` without FAILURE).
        dsn: Option<DsnNotice>,
        /// Add the recipient to the sender account's suppression list.
        suppress: bool,
    },
}

/// What makes recipients combinable into one transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchKey {
    /// The queued message.
    pub msg_id: u64,
    /// Sender account.
    pub sender_account: Option<String>,
    /// MAIL FROM.
    pub mail_from: String,
    /// Recipient domain.
    pub recipient_domain: String,
    /// The transport for this attempt (`None` direct), from the item or the routes.
    pub transport: Option<String>,
    /// REQUIRETLS state.
    pub requiretls: Option<bool>,
}

/// Recipients to deliver in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// What they share.
    pub key: BatchKey,
    /// Item ids, earliest due first.
    pub items: Vec<u64>,
}

/// Transactions in flight, so that [`QueueConfig::due`] respects the concurrency limits and
/// does not hand out an item twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    items: BTreeSet<u64>,
    domains: BTreeMap<String, usize>,
    total: usize,
}

impl InFlight {
    /// A batch was started.
    pub fn start(&mut self, b: &Batch) {
        self.items.extend(b.items.iter().copied());
        *self
            .domains
            .entry(b.key.recipient_domain.clone())
            .or_default() += 1;
        self.total += 1;
    }

    /// Batches delivered over one connection were started: their items are in flight, and
    /// the connection counts once against the limits (as one batch).
    pub fn start_connection(&mut self, batches: &[Batch]) {
        let Some(first) = batches.first() else {
            return;
        };
        self.start(first);
        for b in batches.iter().skip(1) {
            self.items.extend(b.items.iter().copied());
        }
    }

    /// Batches started together by [`InFlight::start_connection`] finished.
    pub fn finish_connection(&mut self, batches: &[Batch]) {
        let Some(first) = batches.first() else {
            return;
        };
        self.finish(first);
        for b in batches.iter().skip(1) {
            for id in &b.items {
                self.items.remove(id);
            }
        }
    }

    /// A batch started earlier finished.
    pub fn finish(&mut self, b: &Batch) {
        for id in &b.items {
            self.items.remove(id);
        }
        if let Some(n) = self.domains.get_mut(&b.key.recipient_domain) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.domains.remove(&b.key.recipient_domain);
            }
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Whether item `id` is being delivered.
    pub fn contains(&self, id: u64) -> bool {
        self.items.contains(&id)
    }

    /// Transactions in flight.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Transactions in flight to `domain`.
    pub fn to_domain(&self, domain: &str) -> usize {
        self.domains.get(domain).copied().unwrap_or(0)
    }
}

/// The earliest `next_attempt` of the items not on hold: when the driver must look again
/// (new items, releases and finished batches also wake it).
pub fn next_wakeup(items: &[QueueItem]) -> Option<UnixTime> {
    items
        .iter()
        .filter(|i| !i.hold)
        .map(|i| i.next_attempt)
        .min()
}

impl QueueConfig {
    /// The default configuration (same as `QueueConfigBuilder::default().build()`).
    pub fn new() -> QueueConfig {
        QueueConfig::default()
    }

    /// The checked values.
    pub fn values(&self) -> &QueueConfigBuilder {
        &self.b
    }

    /// Attempts after which a message fails.
    pub fn max_attempts(&self) -> u32 {
        self.b.max_attempts
    }

    /// The wait after the `n`-th failed attempt (`n` >= 1), without jitter.
    pub fn backoff(&self, n: u32) -> Duration {
        let i = (n.max(1) - 1) as usize;
        self.b
            .backoff
            .get(i)
            .or(self.b.backoff.last())
            .copied()
            .unwrap_or_default()
    }

    /// The wait after the `n`-th failed attempt with jitter: within `backoff(n)` plus or
    /// minus the jitter fraction.
    pub fn backoff_jittered(&self, n: u32, rng: &mut Rng) -> Duration {
        let base = self.backoff(n).as_secs();
        let range = base.saturating_mul(self.jitter_permille) / 1000;
        let off = rng.below(range.saturating_mul(2).saturating_add(1));
        Duration::from_secs(base.saturating_sub(range).saturating_add(off))
    }

    /// The due items (not held, `next_attempt <= now`, not in flight), combined into batches:
    /// same message, sender account, MAIL FROM, recipient domain, transport (the item's, else
    /// the first matching route for this attempt) and REQUIRETLS state; at most
    /// `max_recipients_per_batch` each. Batches come earliest first; those that would exceed
    /// the per-domain or total limit (counting `in_flight`) are left for later.
    pub fn due(
        &self,
        items: &[QueueItem],
        now: UnixTime,
        routes: &Routes,
        in_flight: &InFlight,
    ) -> Vec<Batch> {
        let groups = self.batches(items, now, routes, in_flight);
        let mut total = in_flight.total();
        let mut per_domain: BTreeMap<String, usize> = BTreeMap::new();
        let mut out = Vec::new();
        for b in groups {
            if total >= self.b.max_total {
                break;
            }
            let d = &b.key.recipient_domain;
            let n = per_domain
                .entry(d.clone())
                .or_insert_with(|| in_flight.to_domain(d));
            if *n >= self.b.max_per_domain {
                continue;
            }
            *n += 1;
            total += 1;
            out.push(b);
        }
        out
    }

    /// The due batches as [`QueueConfig::due`] makes them, in connections: batches for the
    /// same recipient domain, transport and REQUIRETLS state share a connection, one
    /// transaction after the other, up to `max_transactions_per_connection` each. A
    /// connection counts once against the per-domain and total limits. New connections are
    /// opened while the limits allow, so a short queue still goes out in parallel; only
    /// then do batches join the open connection with the fewest. Start each with
    /// [`InFlight::start_connection`].
    pub fn due_connections(
        &self,
        items: &[QueueItem],
        now: UnixTime,
        routes: &Routes,
        in_flight: &InFlight,
    ) -> Vec<Vec<Batch>> {
        type ConnKey = (String, Option<String>, Option<bool>);
        let key = |b: &Batch| -> ConnKey {
            (
                b.key.recipient_domain.clone(),
                b.key.transport.clone(),
                b.key.requiretls,
            )
        };
        let mut total = in_flight.total();
        let mut per_domain: BTreeMap<String, usize> = BTreeMap::new();
        let mut conns: Vec<(ConnKey, Vec<Batch>)> = Vec::new();
        for b in self.batches(items, now, routes, in_flight) {
            let d = &b.key.recipient_domain;
            let n = per_domain
                .entry(d.clone())
                .or_insert_with(|| in_flight.to_domain(d));
            if total < self.b.max_total && *n < self.b.max_per_domain {
                *n += 1;
                total += 1;
                conns.push((key(&b), vec![b]));
                continue;
            }
            let k = key(&b);
            let join = conns
                .iter_mut()
                .filter(|(ck, bs)| *ck == k && bs.len() < self.b.max_transactions_per_connection)
                .min_by_key(|(_, bs)| bs.len());
            if let Some((_, bs)) = join {
                bs.push(b);
            }
        }
        conns.into_iter().map(|(_, bs)| bs).collect()
    }

    /// The due items not in flight combined into batches, earliest first (no limits).
    fn batches(
        &self,
        items: &[QueueItem],
        now: UnixTime,
        routes: &Routes,
        in_flight: &InFlight,
    ) -> Vec<Batch> {
        let mut due: Vec<&QueueItem> = items
            .iter()
            .filter(|i| i.is_due(now) && !in_flight.contains(i.id))
            .collect();
        due.sort_by_key(|i| (i.next_attempt, i.id));
        let mut groups: Vec<Batch> = Vec::new();
        let mut index: BTreeMap<BatchKey, usize> = BTreeMap::new();
        let mut seen: BTreeSet<u64> = BTreeSet::new();
        for it in due {
            if !seen.insert(it.id) {
                continue; // duplicate id in the input: hand it out once
            }
            let transport = match it.transport.as_deref() {
                Some(t) if !t.is_empty() => Some(t.to_string()),
                Some(_) => None,
                None => routes.select(it).map(str::to_string),
            };
            let key = BatchKey {
                msg_id: it.msg_id,
                sender_account: it.sender_account.clone(),
                mail_from: it.mail_from.clone(),
                recipient_domain: it.recipient_domain.clone(),
                transport,
                requiretls: it.requiretls,
            };
            let slot = index.get(&key).copied().and_then(|g| {
                groups
                    .get(g)
                    .is_some_and(|b| b.items.len() < self.b.max_recipients_per_batch)
                    .then_some(g)
            });
            match slot.and_then(|g| groups.get_mut(g)) {
                Some(b) => b.items.push(it.id),
                None => {
                    index.insert(key.clone(), groups.len());
                    groups.push(Batch {
                        key,
                        items: vec![it.id],
                    });
                }
            }
        }
        groups
    }

    /// An estimate of the last attempt for an item that just failed its `attempts`-th
    /// attempt at `now`: the remaining waits without jitter.
    pub fn retry_until(&self, attempts: u32, now: UnixTime) -> UnixTime {
        let mut t = now;
        for n in attempts.max(1)..self.b.max_attempts {
            t = t.add(self.backoff(n));
        }
        t
    }

    /// Records an attempt on `item` (attempt count, last error, next attempt) and decides
    /// what follows: delivered; a permanent failure fails at once; a temporary one is retried
    /// after the backoff with jitter until `max_attempts`, with a delay DSN after
    /// `delayed_dsn_after_attempt` (once, as attempts only grow). DSNs follow NOTIFY and are
    /// never made for DSNs or the null sender.
    pub fn after_attempt(
        &self,
        item: &mut QueueItem,
        result: &AttemptResult,
        now: UnixTime,
        rng: &mut Rng,
    ) -> Decision {
        item.attempts = item.attempts.saturating_add(1);
        let dsn_ok = !must_not_send_dsn(item);
        match result {
            AttemptResult::Delivered {
                host,
                reply,
                remote_supports_dsn,
            } => {
                item.last_error = None;
                let dsn = (dsn_ok && item.dsn.wants_success() && !remote_supports_dsn).then(|| {
                    DsnNotice {
                        kind: DsnKind::Success,
                        recipient: DsnRecipient {
                            action: if host.is_some() {
                                Action::Relayed
                            } else {
                                Action::Delivered
                            },
                            status: reply
                                .as_ref()
                                .and_then(|r| r.enhanced)
                                .unwrap_or(Enhanced::new(2, 0, 0)),
                            remote_mta: host.clone(),
                            diagnostic: reply.clone(),
                            ..self.dsn_recipient(item, now)
                        },
                    }
                });
                Decision::Delivered { dsn }
            }
            AttemptResult::Permanent(f) => {
                item.last_error = Some(f.text());
                Decision::Failed {
                    dsn: (dsn_ok && item.dsn.wants_failure())
                        .then(|| self.failure_notice(item, f, true, now)),
                    suppress: f.reply.as_ref().is_some_and(should_suppress),
                }
            }
            AttemptResult::Temporary(f) => {
                item.last_error = Some(f.text());
                if item.attempts >= self.b.max_attempts {
                    return Decision::Failed {
                        dsn: (dsn_ok && item.dsn.wants_failure())
                            .then(|| self.failure_notice(item, f, false, now)),
                        suppress: false,
                    };
                }
                let next = now.add(self.backoff_jittered(item.attempts, rng));
                item.next_attempt = next;
                let dsn = (dsn_ok
                    && item.dsn.wants_delay()
                    && self.b.delayed_dsn_after_attempt != 0
                    && item.attempts == self.b.delayed_dsn_after_attempt)
                    .then(|| DsnNotice {
                        kind: DsnKind::Delay,
                        recipient: DsnRecipient {
                            action: Action::Delayed,
                            status: f.status(false),
                            remote_mta: f.host.clone(),
                            diagnostic: f.reply.clone(),
                            detail: (!f.detail.is_empty()).then(|| f.detail.clone()),
                            will_retry_until: Some(self.retry_until(item.attempts, now)),
                            ..self.dsn_recipient(item, now)
                        },
                    });
                Decision::Retry {
                    next_attempt: next,
                    dsn,
                }
            }
        }
    }

    /// Fails `item` without an attempt (administrator `fail`, recipient on the suppression
    /// list): a failure DSN as for a permanent error, no suppression.
    pub fn fail(&self, item: &mut QueueItem, failure: &Failure, now: UnixTime) -> Decision {
        item.last_error = Some(failure.text());
        let dsn = (!must_not_send_dsn(item) && item.dsn.wants_failure())
            .then(|| self.failure_notice(item, failure, true, now));
        Decision::Failed {
            dsn,
            suppress: false,
        }
    }

    fn dsn_recipient(&self, item: &QueueItem, now: UnixTime) -> DsnRecipient {
        DsnRecipient {
            final_recipient: item.recipient.clone(),
            original_recipient: item.dsn.orcpt.clone(),
            action: Action::Failed,
            status: Enhanced::new(5, 0, 0),
            remote_mta: None,
            diagnostic: None,
            detail: None,
            last_attempt: Some(now),
            will_retry_until: None,
        }
    }

    fn failure_notice(
        &self,
        item: &QueueItem,
        f: &Failure,
        permanent: bool,
        now: UnixTime,
    ) -> DsnNotice {
        DsnNotice {
            kind: DsnKind::Failure,
            recipient: DsnRecipient {
                action: Action::Failed,
                status: f.status(permanent),
                remote_mta: f.host.clone(),
                diagnostic: f.reply.clone(),
                detail: (!f.detail.is_empty()).then(|| f.detail.clone()),
                ..self.dsn_recipient(item, now)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::route::Route;
    use crate::queue::tests::item;
    use crate::queue::DsnParams;
    use crate::smtp::Notify;
    use crate::Rng;
    use proptest::prelude::*;

    fn cfg() -> QueueConfig {
        QueueConfigBuilder::default().build().unwrap()
    }

    fn no_jitter() -> QueueConfig {
        QueueConfigBuilder {
            jitter: 0.0,
            ..QueueConfigBuilder::default()
        }
        .build()
        .unwrap()
    }

    fn temp(code: u16, e: &str) -> AttemptResult {
        AttemptResult::Temporary(Failure::from_reply(
            "mx.example.net",
            Reply::new(code, Enhanced::parse(e), "try later"),
        ))
    }

    fn perm(code: u16, e: &str, text: &str) -> AttemptResult {
        AttemptResult::Permanent(Failure::from_reply(
            "mx.example.net",
            Reply::new(code, Enhanced::parse(e), text),
        ))
    }

    fn ok() -> AttemptResult {
        AttemptResult::Delivered {
            host: Some("mx.example.net".into()),
            reply: Some(Reply::new(250, Enhanced::parse("2.0.0"), "ok")),
            remote_supports_dsn: false,
        }
    }

    #[test]
    fn config_validation() {
        let d = QueueConfigBuilder::default;
        let cases: Vec<(QueueConfigBuilder, Option<QueueConfigError>)> = vec![
            (d(), None),
            (
                QueueConfigBuilder {
                    backoff: vec![],
                    ..d()
                },
                Some(QueueConfigError::EmptyBackoff),
            ),
            (
                QueueConfigBuilder {
                    backoff: vec![Duration::from_secs(10), Duration::from_secs(5)],
                    ..d()
                },
                Some(QueueConfigError::BackoffNotMonotone(1)),
            ),
            (
                QueueConfigBuilder { jitter: 0.6, ..d() },
                Some(QueueConfigError::Jitter("0.6".into())),
            ),
            (
                QueueConfigBuilder {
                    jitter: f64::NAN,
                    ..d()
                },
                Some(QueueConfigError::Jitter("NaN".into())),
            ),
            (
                QueueConfigBuilder {
                    max_attempts: 0,
                    ..d()
                },
                Some(QueueConfigError::ZeroAttempts),
            ),
            (
                QueueConfigBuilder {
                    max_per_domain: 0,
                    ..d()
                },
                Some(QueueConfigError::ZeroLimit("max_per_domain")),
            ),
        ];
        for (b, want) in cases {
            assert_eq!(b.clone().build().err(), want, "{b:?}");
        }
        assert_eq!(QueueConfig::default(), cfg());
    }

    #[test]
    fn default_backoff_schedule() {
        let c = no_jitter();
        let mins: Vec<u64> = (1..=9).map(|n| c.backoff(n).as_secs()).collect();
        assert_eq!(
            mins,
            [450, 900, 1800, 3600, 7200, 14400, 28800, 28800, 28800]
        );
        let mut rng = Rng::new(1);
        assert_eq!(c.backoff_jittered(1, &mut rng), Duration::from_secs(450));
    }

    /// Transcript: a recipient that fails temporarily 8 times: backoff doubling with jitter,
    /// one delay DSN after attempt 5, then a failure DSN; nothing after that.
    #[test]
    fn transcript_backoff_delay_dsn_then_failure() {
        let c = cfg();
        let mut rng = Rng::new(42);
        let mut it = item(1);
        let mut now = it.next_attempt;
        let mut log = Vec::new();
        loop {
            assert!(it.is_due(now));
            let d = c.after_attempt(&mut it, &temp(451, "4.3.0"), now, &mut rng);
            match d {
                Decision::Retry { next_attempt, dsn } => {
                    let wait = (next_attempt.0 - now.0) as u64;
                    let base = c.backoff(it.attempts).as_secs();
                    assert!(
                        wait >= base - base / 10 && wait <= base + base / 10,
                        "{wait}"
                    );
                    assert!(!it.is_due(UnixTime(next_attempt.0 - 1)));
                    log.push(format!(
                        "attempt {} retry {} dsn={:?}",
                        it.attempts,
                        base,
                        dsn.map(|d| d.kind)
                    ));
                    now = next_attempt;
                }
                Decision::Failed { dsn, suppress } => {
                    let d = dsn.unwrap();
                    assert_eq!(d.recipient.action, Action::Failed);
                    assert_eq!(d.recipient.status, Enhanced::new(4, 3, 0));
                    assert_eq!(d.recipient.diagnostic.as_ref().map(|r| r.code), Some(451));
                    log.push(format!(
                        "attempt {} failed suppress={suppress}",
                        it.attempts
                    ));
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            log,
            [
                "attempt 1 retry 450 dsn=None",
                "attempt 2 retry 900 dsn=None",
                "attempt 3 retry 1800 dsn=None",
                "attempt 4 retry 3600 dsn=None",
                "attempt 5 retry 7200 dsn=Some(Delay)",
                "attempt 6 retry 14400 dsn=None",
                "attempt 7 retry 28800 dsn=None",
                "attempt 8 failed suppress=false",
            ]
        );
        assert_eq!(it.last_error.as_deref(), Some("451 4.3.0 try later"));
    }

    #[test]
    fn delay_dsn_has_retry_until_and_respects_notify() {
        let c = no_jitter();
        let mut rng = Rng::new(1);
        let mut it = item(1);
        it.attempts = 4;
        let now = UnixTime(10_000);
        let Decision::Retry { dsn: Some(d), .. } =
            c.after_attempt(&mut it, &temp(421, ""), now, &mut rng)
        else {
            panic!()
        };
        assert_eq!(d.recipient.action, Action::Delayed);
        assert_eq!(d.recipient.status, Enhanced::new(4, 0, 0));
        assert_eq!(
            d.recipient.will_retry_until,
            Some(UnixTime(10_000 + 7200 + 14400 + 28800))
        );
        // NOTIFY=FAILURE only: no delay DSN.
        let mut it = item(1);
        it.attempts = 4;
        it.dsn.notify = Some(Notify {
            failure: true,
            ..Notify::default()
        });
        assert!(matches!(
            c.after_attempt(&mut it, &temp(421, ""), now, &mut rng),
            Decision::Retry { dsn: None, .. }
        ));
        // delayed_dsn_after_attempt = 0: never.
        let c0 = QueueConfigBuilder {
            delayed_dsn_after_attempt: 0,
            ..QueueConfigBuilder::default()
        }
        .build()
        .unwrap();
        let mut it = item(1);
        for _ in 0..7 {
            assert!(matches!(
                c0.after_attempt(&mut it, &temp(421, ""), now, &mut rng),
                Decision::Retry { dsn: None, .. }
            ));
        }
    }

    #[test]
    fn permanent_fails_at_once_and_suppresses() {
        let c = cfg();
        let mut rng = Rng::new(1);
        let cases = [
            (550, "5.1.1", true),
            (554, "5.7.1", true),
            (552, "5.3.4", false),
            (554, "", false),
        ];
        for (code, e, sup) in cases {
            let mut it = item(1);
            let d = c.after_attempt(
                &mut it,
                &perm(code, e, "no such user"),
                UnixTime(1000),
                &mut rng,
            );
            let Decision::Failed { dsn, suppress } = d else {
                panic!("{d:?}")
            };
            assert_eq!(suppress, sup, "{code} {e}");
            assert_eq!(it.attempts, 1);
            let r = dsn.unwrap().recipient;
            assert_eq!(r.status.class, 5);
            assert_eq!(r.remote_mta.as_deref(), Some("mx.example.net"));
        }
    }

    #[test]
    fn never_a_dsn_for_a_dsn_or_null_sender() {
        let c = cfg();
        let mut rng = Rng::new(1);
        let mut a = item(1);
        a.is_dsn = true;
        let mut b = item(2);
        b.mail_from = String::new();
        for it in [&mut a, &mut b] {
            assert!(matches!(
                c.after_attempt(it, &perm(550, "5.1.1", "x"), UnixTime(1), &mut rng),
                Decision::Failed { dsn: None, .. }
            ));
            it.attempts = 4;
            assert!(matches!(
                c.after_attempt(it, &temp(450, ""), UnixTime(1), &mut rng),
                Decision::Retry { dsn: None, .. }
            ));
            assert!(matches!(
                c.fail(
                    it,
                    &Failure::local("admin", Enhanced::new(5, 0, 0)),
                    UnixTime(1)
                ),
                Decision::Failed { dsn: None, .. }
            ));
        }
    }

    #[test]
    fn success_dsn_only_when_asked_and_not_passed_on() {
        let c = cfg();
        let mut rng = Rng::new(1);
        let mut it = item(1);
        assert_eq!(
            c.after_attempt(&mut it, &ok(), UnixTime(5), &mut rng),
            Decision::Delivered { dsn: None }
        );
        it.dsn = DsnParams {
            notify: Some(Notify {
                success: true,
                ..Notify::default()
            }),
            orcpt: Some(("rfc822".into(), "R1@example.net".into())),
            ..DsnParams::default()
        };
        let Decision::Delivered { dsn: Some(d) } =
            c.after_attempt(&mut it, &ok(), UnixTime(5), &mut rng)
        else {
            panic!()
        };
        assert_eq!(d.kind, DsnKind::Success);
        assert_eq!(d.recipient.action, Action::Relayed);
        assert_eq!(d.recipient.status, Enhanced::new(2, 0, 0));
        assert_eq!(
            d.recipient.original_recipient,
            Some(("rfc822".into(), "R1@example.net".into()))
        );
        let passed_on = AttemptResult::Delivered {
            host: Some("mx".into()),
            reply: None,
            remote_supports_dsn: true,
        };
        assert_eq!(
            c.after_attempt(&mut it, &passed_on, UnixTime(5), &mut rng),
            Decision::Delivered { dsn: None }
        );
    }

    #[test]
    fn admin_fail_and_local_failures() {
        let c = cfg();
        let mut it = item(1);
        let f = Failure::suppressed();
        let Decision::Failed {
            dsn: Some(d),
            suppress: false,
        } = c.fail(&mut it, &f, UnixTime(3))
        else {
            panic!()
        };
        assert_eq!(it.attempts, 0);
        assert_eq!(d.recipient.status, Enhanced::new(5, 7, 1));
        assert_eq!(
            d.recipient.detail.as_deref(),
            Some("recipient is on the suppression list of the sending account")
        );
        assert_eq!(d.recipient.diagnostic, None);
        let mut rng = Rng::new(1);
        let refused = AttemptResult::Temporary(Failure {
            host: Some("mx".into()),
            reply: None,
            detail: "connection refused".into(),
            enhanced: None,
        });
        c.after_attempt(&mut it, &refused, UnixTime(3), &mut rng);
        assert_eq!(it.last_error.as_deref(), Some("connection refused"));
    }

    #[test]
    fn failure_text_keeps_all_lines() {
        let f = Failure::from_reply(
            "mx",
            Reply::new(550, Enhanced::parse("5.1.1"), "no such user\nsee https://x"),
        );
        assert_eq!(f.text(), "550-5.1.1 no such user\n550 5.1.1 see https://x");
    }

    /// Transcript: an item released in the future (FUTURERELEASE, decided by the server
    /// session) is not due before its time.
    #[test]
    fn future_release() {
        let c = cfg();
        // Transcript: an item released in the future is not due before its time.
        let mut it = item(1);
        it.next_attempt = UnixTime(1_000_600);
        let routes = Routes::default();
        let fl = InFlight::default();
        assert!(c
            .due(&[it.clone()], UnixTime(1_000_599), &routes, &fl)
            .is_empty());
        assert_eq!(
            c.due(&[it.clone()], UnixTime(1_000_600), &routes, &fl)
                .len(),
            1
        );
        assert_eq!(next_wakeup(&[it]), Some(UnixTime(1_000_600)));
    }

    /// Transcript: held items are never due and do not wake the scheduler; released, they are.
    #[test]
    fn holds() {
        let c = cfg();
        let routes = Routes::default();
        let fl = InFlight::default();
        let mut a = item(1);
        a.hold = true;
        let mut b = item(2);
        b.next_attempt = UnixTime(5000);
        let items = vec![a.clone(), b.clone()];
        assert!(c.due(&items, UnixTime(2000), &routes, &fl).is_empty());
        assert_eq!(next_wakeup(&items), Some(UnixTime(5000)));
        a.hold = false;
        let items = vec![a, b];
        let d = c.due(&items, UnixTime(2000), &routes, &fl);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].items, vec![1]);
        assert_eq!(next_wakeup(&items), Some(UnixTime(1000)));
        assert_eq!(next_wakeup(&[]), None);
    }

    /// Connection reuse: messages (each its own batch) to one destination share
    /// connections, opened first up to the per-domain limit, then filled evenly up to
    /// `max_transactions_per_connection`; a connection counts once against the limits;
    /// another transport, REQUIRETLS state or domain never shares.
    #[test]
    fn connections() {
        let c = QueueConfigBuilder {
            max_per_domain: 2,
            max_total: 3,
            max_transactions_per_connection: 3,
            ..QueueConfigBuilder::default()
        }
        .build()
        .unwrap();
        let routes = Routes::default();
        let mut fl = InFlight::default();
        // Ten messages to example.net (ids 1..=10), one to other.example (11), one with
        // REQUIRETLS (12), one through a relay (13).
        let mut items: Vec<QueueItem> = (1..=13)
            .map(|i| {
                let mut it = item(i);
                it.msg_id = i;
                it
            })
            .collect();
        items[10].recipient_domain = "other.example".into();
        items[11].requiretls = Some(true);
        items[12].transport = Some("relay".into());
        let conns = c.due_connections(&items, UnixTime(1000), &routes, &fl);
        let got: Vec<Vec<Vec<u64>>> = conns.iter().map(|bs| ids(bs)).collect();
        assert_eq!(
            got,
            vec![
                vec![vec![1], vec![3], vec![5]],
                vec![vec![2], vec![4], vec![6]],
                vec![vec![11]],
            ],
            "two connections to example.net (the per-domain limit), three transactions each; \
             the total limit of 3 leaves REQUIRETLS and the relay for later"
        );
        for bs in &conns {
            fl.start_connection(bs);
        }
        assert_eq!((fl.total(), fl.to_domain("example.net")), (3, 2));
        assert!(fl.contains(6) && !fl.contains(7));
        assert!(c
            .due_connections(&items, UnixTime(1000), &routes, &fl)
            .is_empty());
        fl.finish_connection(&conns[0]);
        assert_eq!((fl.total(), fl.to_domain("example.net")), (2, 1));
        assert!(!fl.contains(5));
        let next = c.due_connections(&items, UnixTime(1000), &routes, &fl);
        assert_eq!(next.len(), 1, "one slot: {next:?}");
        assert_eq!(ids(&next[0]), vec![vec![1], vec![3], vec![5]]);
        // With reuse off, one batch per connection, as `due` gives them.
        let one = QueueConfigBuilder {
            max_transactions_per_connection: 1,
            ..QueueConfigBuilder::default()
        }
        .build()
        .unwrap();
        let fl = InFlight::default();
        let flat: Vec<Vec<Batch>> = one
            .due(&items, UnixTime(1000), &routes, &fl)
            .into_iter()
            .map(|b| vec![b])
            .collect();
        assert_eq!(
            one.due_connections(&items, UnixTime(1000), &routes, &fl),
            flat
        );
    }

    fn ids(b: &[Batch]) -> Vec<Vec<u64>> {
        b.iter().map(|b| b.items.clone()).collect()
    }

    #[test]
    fn combining() {
        let c = QueueConfigBuilder {
            max_recipients_per_batch: 2,
            max_per_domain: 100,
            ..QueueConfigBuilder::default()
        }
        .build()
        .unwrap();
        let routes = Routes::default();
        let fl = InFlight::default();
        let mut items: Vec<QueueItem> = (1..=9).map(item).collect();
        items[3].recipient_domain = "other.example".into(); // 4
        items[4].msg_id = 2; // 5
        items[5].mail_from = "bob@example.org".into(); // 6
        items[6].transport = Some("relay".into()); // 7
        items[7].next_attempt = UnixTime(999); // 8, earliest
        items[8].requiretls = Some(true); // 9
        let b = c.due(&items, UnixTime(1000), &routes, &fl);
        assert_eq!(
            ids(&b),
            vec![
                vec![8, 1],
                vec![2, 3],
                vec![4],
                vec![5],
                vec![6],
                vec![7],
                vec![9]
            ]
        );
        assert_eq!(b[5].key.transport.as_deref(), Some("relay"));
        assert_eq!(b[0].key.transport, None);
    }

    #[test]
    fn concurrency_limits_and_in_flight() {
        let c = QueueConfigBuilder {
            max_per_domain: 2,
            max_total: 3,
            ..QueueConfigBuilder::default()
        }
        .build()
        .unwrap();
        let routes = Routes::default();
        let mut items: Vec<QueueItem> = (1..=5).map(item).collect();
        for (i, it) in items.iter_mut().enumerate() {
            it.msg_id = i as u64; // five separate messages
        }
        items[4].recipient_domain = "b.example".into();
        let mut fl = InFlight::default();
        let b = c.due(&items, UnixTime(1000), &routes, &fl);
        assert_eq!(ids(&b), vec![vec![1], vec![2], vec![5]]);
        fl.start(&b[0]);
        fl.start(&b[2]);
        assert!(fl.contains(1) && !fl.contains(2));
        let b2 = c.due(&items, UnixTime(1000), &routes, &fl);
        assert_eq!(ids(&b2), vec![vec![2]]);
        fl.start(&b2[0]);
        assert!(c.due(&items, UnixTime(1000), &routes, &fl).is_empty());
        fl.finish(&b[0]);
        fl.finish(&b[2]);
        assert_eq!(fl.total(), 1);
        assert_eq!(fl.to_domain("example.net"), 1);
        assert_eq!(
            ids(&c.due(&items, UnixTime(1000), &routes, &fl)),
            vec![vec![1], vec![5]],
            "one more to example.net (2 is in flight), then the total limit"
        );
    }

    #[test]
    fn routes_pick_transport_per_attempt() {
        let c = cfg();
        let routes = Routes {
            global: vec![Route {
                min_attempts: 4,
                transport: "thirdparty".into(),
                ..Route::default()
            }],
            ..Routes::default()
        };
        let fl = InFlight::default();
        let mut a = item(1);
        let b = c.due(&[a.clone()], UnixTime(1000), &routes, &fl);
        assert_eq!(b[0].key.transport, None);
        a.attempts = 3; // the 4th attempt
        let b = c.due(&[a.clone()], UnixTime(1000), &routes, &fl);
        assert_eq!(b[0].key.transport.as_deref(), Some("thirdparty"));
        a.transport = Some(String::new()); // explicitly direct
        let b = c.due(&[a], UnixTime(1000), &routes, &fl);
        assert_eq!(b[0].key.transport, None);
    }

    #[derive(Clone, Debug)]
    enum Ev {
        Advance(u32),
        Attempt(u8, u8), // item index, outcome
        Hold(u8, bool),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        prop_oneof![
            (0u32..40_000).prop_map(Ev::Advance),
            (0u8..6, 0u8..10).prop_map(|(i, o)| Ev::Attempt(i, o)),
            (0u8..6, any::<bool>()).prop_map(|(i, h)| Ev::Hold(i, h)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Over random sequences of time, attempts and holds: every item ends delivered or
        /// failed exactly once or is still queued; due items are only handed out when due;
        /// next attempt >= now; attempts never exceed the maximum; base backoff is monotone
        /// and the jittered wait stays within the jitter.
        #[test]
        fn scheduler_invariants(seed in any::<u64>(), evs in prop::collection::vec(ev(), 1..120)) {
            let c = cfg();
            let routes = Routes::default();
            let fl = InFlight::default();
            let mut rng = Rng::new(seed);
            let mut queue: Vec<QueueItem> = (0..6).map(|i| {
                let mut it = item(i);
                it.msg_id = i % 2;
                it
            }).collect();
            let mut retired: BTreeMap<u64, &'static str> = BTreeMap::new();
            let mut delay_dsns: BTreeMap<u64, u32> = BTreeMap::new();
            let mut now = UnixTime(1000);
            let mut prev_base = Duration::ZERO;
            for n in 1..=12 {
                let b = c.backoff(n);
                prop_assert!(b >= prev_base);
                prev_base = b;
            }
            for e in evs {
                match e {
                    Ev::Advance(s) => now = UnixTime(now.0 + i64::from(s)),
                    Ev::Hold(i, h) => {
                        if let Some(it) = queue.iter_mut().find(|it| it.id == u64::from(i)) {
                            it.hold = h;
                        }
                    }
                    Ev::Attempt(i, o) => {
                        let batches = c.due(&queue, now, &routes, &fl);
                        let handed: Vec<u64> = batches.iter().flat_map(|b| b.items.clone()).collect();
                        let mut sorted = handed.clone();
                        sorted.sort();
                        sorted.dedup();
                        prop_assert_eq!(sorted.len(), handed.len(), "an item handed out twice");
                        for id in &handed {
                            let it = queue.iter().find(|it| it.id == *id).unwrap();
                            prop_assert!(it.is_due(now));
                        }
                        let Some(id) = handed.get(usize::from(i) % handed.len().max(1)) else { continue };
                        let pos = queue.iter().position(|it| it.id == *id).unwrap();
                        let result = match o {
                            0..=1 => ok(),
                            2 => perm(550, "5.1.1", "gone"),
                            _ => temp(451, "4.4.1"),
                        };
                        let before = queue[pos].attempts;
                        let d = c.after_attempt(&mut queue[pos], &result, now, &mut rng);
                        let it = &queue[pos];
                        prop_assert_eq!(it.attempts, before + 1);
                        prop_assert!(it.attempts <= c.max_attempts());
                        match d {
                            Decision::Retry { next_attempt, dsn } => {
                                if let Some(d) = dsn {
                                    prop_assert_eq!(d.kind, DsnKind::Delay);
                                    prop_assert_eq!(it.attempts, 5);
                                    let n = delay_dsns.entry(*id).or_default();
                                    *n += 1;
                                    prop_assert_eq!(*n, 1, "delay DSN twice");
                                }
                                prop_assert!(next_attempt >= now);
                                prop_assert_eq!(next_attempt, it.next_attempt);
                                let base = c.backoff(it.attempts).as_secs() as i64;
                                let wait = next_attempt.0 - now.0;
                                prop_assert!(wait >= base - base / 10 && wait <= base + base / 10);
                                prop_assert!(it.attempts < c.max_attempts());
                            }
                            Decision::Delivered { .. } => {
                                prop_assert!(retired.insert(*id, "delivered").is_none());
                                queue.remove(pos);
                            }
                            Decision::Failed { .. } => {
                                prop_assert!(retired.insert(*id, "failed").is_none());
                                queue.remove(pos);
                            }
                        }
                    }
                }
                if let Some(w) = next_wakeup(&queue) {
                    prop_assert!(queue.iter().any(|it| !it.hold && it.next_attempt == w));
                }
            }
            // Nothing lost: every item is queued or retired, never both.
            for id in 0..6u64 {
                let queued = queue.iter().any(|it| it.id == id);
                prop_assert!(queued != retired.contains_key(&id), "item {}", id);
            }
        }
    }
}
