//! The storage interface the server and the queue use, as a trait, so a second backend
//! (e.g. a distributed one) can be added without touching core or the protocol code. The
//! redb-backed [`Store`] is the embedded default. Every method is synchronous and may
//! block; every write that returns `Ok` is durable.

use std::path::Path;

use rmox_core::UnixTime;

use crate::{
    Account, Attempt, BackupReport, Delivery, Flags, HoldRule, IndexKind, MessageId, MessageRecord,
    MtaStsRecord, Notice, Outcome, QueueEntry, QueueFilter, QueueId, QueueRecipient, QueueRecord,
    Recorded, ReportKind, RetiredEntry, Store, StoreError, Suppression,
};

/// A boxed in-place change of a queue entry.
pub type QueueChange = Box<dyn FnOnce(&mut QueueEntry) + Send + 'static>;

/// The queue's administration: hold rules, drops with their webhook, and the start-up
/// cleanup of message bytes no entry references.
pub trait QueueAdminStore: Send + Sync {
    /// Adds a hold rule (its `id` is assigned); returns the id.
    fn hold_rule_add(&self, rule: HoldRule) -> Result<u64, StoreError>;
    /// Removes a hold rule; true if it existed. Entries it held stay held.
    fn hold_rule_remove(&self, id: u64) -> Result<bool, StoreError>;
    /// Removes an entry without delivering it, storing `hook` (the `canceled` webhook) in
    /// the same commit.
    fn queue_drop_with(&self, id: QueueId, hook: Option<crate::Webhook>) -> Result<(), StoreError>;
    /// Removes queued message bytes no entry references (left by a crash between two
    /// steps); called at start, before the queue is used. Returns the removed message ids.
    /// A backend that stores bytes and references in one transaction has none.
    fn queue_remove_orphans(&self) -> Result<Vec<u64>, StoreError>;
}

/// The records reports are made from (DMARC aggregate, TLS), by kind and domain.
pub trait ReportStore: Send + Sync {
    /// Report records of `kind` for `domain`, oldest first, with their times.
    fn reports(
        &self,
        kind: ReportKind,
        domain: &str,
    ) -> Result<Vec<(UnixTime, Vec<u8>)>, StoreError>;
    /// Domains with report records of `kind`.
    fn report_domains(&self, kind: ReportKind) -> Result<Vec<String>, StoreError>;
    /// All report records of `kind`, by domain then oldest first; domain, time and
    /// sequence number identify a record ([`ReportStore::report_get`]).
    fn report_entries(&self, kind: ReportKind) -> Result<Vec<crate::ReportEntry>, StoreError>;
    /// The report record of `kind` for `domain` stored at `time` with sequence number `seq`.
    fn report_get(
        &self,
        kind: ReportKind,
        domain: &str,
        time: UnixTime,
        seq: u64,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes report records of `kind` for `domain` older than `before` (after sending).
    fn reports_remove(
        &self,
        kind: ReportKind,
        domain: &str,
        before: UnixTime,
    ) -> Result<(), StoreError>;
}

/// Outgoing webhooks waiting to be POSTed, and those retired.
pub trait WebhookStore: Send + Sync {
    /// The webhooks waiting, by id.
    fn webhooks(&self) -> Result<Vec<crate::Webhook>, StoreError>;
    /// The webhooks due at `now`, by due time then id, at most `limit`.
    fn webhooks_due(&self, now: UnixTime, limit: usize) -> Result<Vec<crate::Webhook>, StoreError>;
    /// Records a POST's result: with `next` the hook waits until then, without it it is
    /// retired (`success` says how). False when the hook is gone (dropped meanwhile).
    fn webhook_result(
        &self,
        id: u64,
        result: crate::WebhookResult,
        next: Option<UnixTime>,
        success: bool,
        now: UnixTime,
    ) -> Result<bool, StoreError>;
    /// Retires a waiting webhook without POSTing it again (an administrator's drop).
    fn webhook_drop(&self, id: u64, now: UnixTime) -> Result<bool, StoreError>;
    /// The retired webhooks, by id.
    fn webhooks_retired(&self) -> Result<Vec<crate::RetiredWebhook>, StoreError>;
}

/// Background tasks that one node at a time runs when several nodes share a store.
pub trait TaskLeases: Send + Sync {
    /// Takes or renews this node's lease on a background `task` (sending reports, POSTing
    /// webhooks): true when this node holds it from `now` for `secs` seconds, false when
    /// another node's lease has not run out.
    fn task_lease(&self, task: &str, now: UnixTime, secs: i64) -> Result<bool, StoreError>;
}

/// A delivery on its way to being durable ([`MailStore::deliver_soon`]).
pub type DeliverySoon =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<MessageId, StoreError>> + Send>>;

/// What rmox keeps, whatever keeps it: one interface (with its focused parts
/// [`QueueAdminStore`], [`ReportStore`], [`WebhookStore`], [`TaskLeases`]) for every
/// backend.
pub trait MailStore:
    QueueAdminStore + ReportStore + WebhookStore + TaskLeases + Send + Sync
{
    /// The account record.
    fn account(&self, name: &str) -> Result<Option<Account>, StoreError>;
    /// Creates an account.
    fn account_add(&self, name: &str, domain: &str) -> Result<(), StoreError>;
    /// Refuses (Some) or allows (None) logins.
    fn account_set_login_disabled(
        &self,
        name: &str,
        message: Option<String>,
    ) -> Result<(), StoreError>;
    /// Bytes of stored messages.
    fn account_usage(&self, name: &str) -> Result<u64, StoreError>;
    /// Replaces all credentials of an account (kind name, derived bytes).
    fn set_credentials(
        &self,
        account: &str,
        creds: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError>;
    /// One kind of credentials.
    fn credentials(&self, account: &str, kind: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Delivers one message to one mailbox, durably.
    fn deliver(&self, req: Delivery<'_>) -> Result<MessageId, StoreError>;
    /// [`MailStore::deliver`] for a caller that must not block (an async runtime's
    /// thread), where this backend can: what needs no waiting is done here, and the future
    /// is ready once the delivery is durable. `None` (the default, and for deliveries the
    /// backend cannot do so): call [`MailStore::deliver`] where blocking is allowed.
    fn deliver_soon(&self, req: Delivery<'_>) -> Option<DeliverySoon> {
        let _ = req;
        None
    }
    /// Delivers one message to several accounts/mailboxes, all or nothing, durably.
    fn deliver_many(&self, reqs: Vec<Delivery<'_>>) -> Result<Vec<MessageId>, StoreError>;
    /// Delivers and queues a message for its recipients (a DSN about the recipients that
    /// failed) in one commit: all or nothing, durably.
    fn deliver_and_queue(
        &self,
        reqs: Vec<Delivery<'_>>,
        msg: &[u8],
        recipients: Vec<QueueRecipient>,
    ) -> Result<Vec<MessageId>, StoreError>;
    /// [`MailStore::deliver_and_queue`], returning the queue entry ids too.
    fn deliver_and_queue_ids(
        &self,
        reqs: Vec<Delivery<'_>>,
        msg: &[u8],
        recipients: Vec<QueueRecipient>,
    ) -> Result<(Vec<MessageId>, Vec<QueueId>), StoreError>;
    /// The messages of an account.
    fn messages(&self, account: &str) -> Result<Vec<MessageRecord>, StoreError>;
    /// Moves a message to another mailbox of its account; the mailbox it was in.
    fn message_move(&self, id: MessageId, mailbox: &str) -> Result<String, StoreError>;
    /// A message's bytes.
    fn message_bytes(&self, id: MessageId) -> Result<Vec<u8>, StoreError>;
    /// Messages indexed under `value` of `kind` since a time (reputation, rate limits).
    fn count_since(
        &self,
        account: &str,
        kind: IndexKind,
        value: &str,
        since: UnixTime,
    ) -> Result<u64, StoreError>;
    /// Queues a message for its recipients, durably.
    fn queue_add(
        &self,
        msg: &[u8],
        recipients: Vec<QueueRecipient>,
    ) -> Result<Vec<QueueId>, StoreError>;
    /// Queues a message given in consecutive parts (a spooled message after our header
    /// fields), durably. By default the parts are joined in memory; a backend that can
    /// write them in order does so.
    fn queue_add_parts(
        &self,
        parts: &[&[u8]],
        recipients: Vec<QueueRecipient>,
    ) -> Result<Vec<QueueId>, StoreError> {
        self.queue_add(&parts.concat(), recipients)
    }
    /// Entries due at `now`, not held, oldest first.
    fn queue_due(&self, now: UnixTime, limit: usize) -> Result<Vec<QueueEntry>, StoreError>;
    /// The earliest next attempt of any entry not held.
    fn queue_next_due(&self) -> Result<Option<UnixTime>, StoreError>;
    /// Takes entries for one delivery attempt by this node: each `(id, due)` read earlier
    /// (from [`MailStore::queue_due`], `due` its next attempt then) comes back as stored now
    /// when it is still queued, not held, not rescheduled past `due`, and (on a store shared
    /// by several nodes) not leased by another node; the entries returned are leased to
    /// this node until the attempt's result is recorded or the lease runs out. Entries not
    /// returned must not be attempted. The embedded store serves one node: no lease, every
    /// entry still queued and due comes back.
    fn queue_claim(
        &self,
        entries: &[(QueueId, UnixTime)],
        now: UnixTime,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        let _ = now;
        let mut out = Vec::with_capacity(entries.len());
        for (id, due) in entries {
            match self.queue_get(*id)? {
                Some(s) if !s.rcpt.hold && s.rcpt.next_attempt <= *due => out.push(s),
                _ => {}
            }
        }
        Ok(out)
    }
    /// One entry.
    fn queue_get(&self, id: QueueId) -> Result<Option<QueueEntry>, StoreError>;
    /// The entry (queued, or retired: `true`) whose MAIL FROM carried `from_id`.
    fn queue_by_from_id(&self, from_id: &str) -> Result<Option<(QueueEntry, bool)>, StoreError>;
    /// Appends an attempt to a queued or retired entry's history; `false` when it is gone.
    fn queue_note(&self, id: QueueId, attempt: Attempt) -> Result<bool, StoreError>;
    /// A queued message's bytes.
    fn queue_message(&self, msg_id: u64) -> Result<Vec<u8>, StoreError>;
    /// Changes an entry in place.
    fn queue_update_with(&self, id: QueueId, f: QueueChange) -> Result<QueueEntry, StoreError>;
    /// Moves an entry to the retired list with its outcome.
    fn queue_retire(&self, id: QueueId, outcome: Outcome, now: UnixTime) -> Result<(), StoreError>;
    /// Hold rules.
    fn hold_rules(&self) -> Result<Vec<HoldRule>, StoreError>;
    /// Adds an address to an account's suppression list.
    fn suppression_add(&self, account: &str, s: Suppression) -> Result<(), StoreError>;
    /// Whether an address is on an account's suppression list.
    fn is_suppressed(&self, account: &str, address: &str) -> Result<bool, StoreError>;
    /// Logs outgoing recipients; returns how many were first-time.
    fn record_outgoing(
        &self,
        account: &str,
        recipients: &[String],
        time: UnixTime,
    ) -> Result<u32, StoreError>;
    /// (messages, first-time recipients) sent since a time.
    fn count_outgoing(&self, account: &str, since: UnixTime) -> Result<(u64, u64), StoreError>;
    /// Whether the account sent to this address before.
    fn has_sent_to(&self, account: &str, address: &str) -> Result<bool, StoreError>;
    /// Messages indexed under (`kind`, `value`) since a time, newest first, at most `limit`.
    fn lookup(
        &self,
        account: &str,
        kind: IndexKind,
        value: &str,
        since: UnixTime,
        limit: usize,
    ) -> Result<Vec<crate::IndexHit>, StoreError>;
    /// When a first-time sender was first seen (stored as `now` the first time).
    fn first_seen(&self, account: &str, key: &str, now: UnixTime) -> Result<UnixTime, StoreError>;
    /// The account's subjectpass key (made from `fresh` on first use).
    fn account_subjectpass_key(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// The accounts whose messages are also written to a maildir.
    fn set_maildirs(&self, maildirs: std::collections::BTreeMap<String, crate::Maildir>);
    /// Marks as junk what the user moved to the account's maildir Junk folder; the
    /// messages it marked.
    fn maildir_junk_sync(&self, account: &str) -> Result<Vec<MessageId>, StoreError>;
    /// One message's record.
    fn message(&self, id: MessageId) -> Result<Option<MessageRecord>, StoreError>;
    /// The junk filter's message totals (ham, spam) and the counts of `tokens`.
    fn junk_counts(
        &self,
        account: &str,
        tokens: &[String],
    ) -> Result<(u32, u32, Vec<rmox_core::junk::Counts>), StoreError>;
    /// Trains a stored message as spam, ham or not at all (see [`Store::junk_set_class`]).
    fn junk_set_class(
        &self,
        id: MessageId,
        class: Option<bool>,
        params: &rmox_core::junk::Params,
    ) -> Result<bool, StoreError>;
    /// Trains token sets of messages not stored here.
    fn junk_train_tokens(
        &self,
        account: &str,
        messages: Vec<(bool, std::collections::BTreeSet<String>)>,
    ) -> Result<(), StoreError>;
    /// Trained messages received before `before`.
    fn junk_trained_before(
        &self,
        account: &str,
        before: UnixTime,
        limit: usize,
    ) -> Result<Vec<MessageId>, StoreError>;
    /// Forgets what the account's junk filter learned.
    fn junk_reset(&self, account: &str) -> Result<(), StoreError>;
    /// Removes a message (its record stays for reputation).
    fn expunge(&self, id: MessageId) -> Result<(), StoreError>;
    /// Expunges a mailbox's messages received before a time, oldest first, at most `max`.
    fn mailbox_expunge_before(
        &self,
        account: &str,
        mailbox: &str,
        before: UnixTime,
        max: usize,
    ) -> Result<usize, StoreError>;
    /// Whether the account sent to an address, a domain, or within a domain since a time.
    fn sent_to_since(
        &self,
        account: &str,
        to: crate::SentTo<'_>,
        since: UnixTime,
    ) -> Result<bool, StoreError>;
    /// Reputation's view of the account's history (see [`Store::history`]).
    #[allow(clippy::too_many_arguments)]
    fn history(
        &self,
        account: &str,
        kind: IndexKind,
        value: &str,
        since: UnixTime,
        limit: usize,
        from_validated: Option<bool>,
        skip_mailbox: Option<&str>,
    ) -> Result<Vec<crate::HistoryHit>, StoreError>;
    /// Keeps a report record (DMARC evaluation, TLS result, incoming report).
    fn report_add(
        &self,
        kind: ReportKind,
        domain: &str,
        time: UnixTime,
        record: Vec<u8>,
    ) -> Result<(), StoreError>;
    /// (messages, bytes) delivered from `network` on `day` (UTC days since the epoch).
    fn delivery_counts(&self, day: i64, network: &str) -> Result<(u64, u64), StoreError>;
    /// Adds (network, messages, bytes) to the counts of `day`, durably.
    fn delivery_counts_add(
        &self,
        day: i64,
        adds: Vec<(String, u64, u64)>,
    ) -> Result<(), StoreError>;
    /// Forgets the counts of days before `before_day`; returns how many rows went.
    fn delivery_counts_cleanup(&self, before_day: i64) -> Result<u64, StoreError>;
    /// Stores (replaces) a cached MTA-STS policy.
    fn mtasts_put(&self, rec: MtaStsRecord) -> Result<(), StoreError>;
    /// The cached MTA-STS policy of a domain, expired or not.
    fn mtasts_get(&self, domain: &str) -> Result<Option<MtaStsRecord>, StoreError>;
    /// Forgets the cached MTA-STS policy of a domain.
    fn mtasts_remove(&self, domain: &str) -> Result<(), StoreError>;
    /// Sets the last-use time of a cached policy; `false` when none is cached.
    fn mtasts_touch(&self, domain: &str, at: UnixTime) -> Result<bool, StoreError>;
    /// Every cached MTA-STS policy, by domain.
    fn mtasts_list(&self) -> Result<Vec<MtaStsRecord>, StoreError>;
    /// A consistent copy into `dest`, while in use.
    fn backup(&self, dest: &Path) -> Result<BackupReport, StoreError>;
    /// Stores a webhook to be POSTed; its id.
    fn webhook_add(&self, hook: crate::Webhook) -> Result<u64, StoreError>;
    /// All accounts, by name.
    fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Removes an account with its credentials, messages, indexes, suppression list,
    /// failure streaks and outgoing log (queue entries it submitted stay queued).
    fn account_remove(&self, name: &str) -> Result<(), StoreError>;
    /// Sets the quota in bytes (`None`: unlimited).
    fn account_set_quota(&self, name: &str, quota_bytes: Option<u64>) -> Result<(), StoreError>;
    /// Mailbox names of the account (created on delivery), by name.
    fn mailboxes(&self, account: &str) -> Result<Vec<String>, StoreError>;
    /// Sets a message's flags.
    fn set_flags(&self, id: MessageId, flags: Flags) -> Result<(), StoreError>;
    /// Queue entries matching `filter`, by id.
    fn queue_list(&self, filter: &QueueFilter) -> Result<Vec<QueueEntry>, StoreError>;
    /// Holds an entry (not due until released).
    fn queue_hold(&self, id: QueueId) -> Result<(), StoreError>;
    /// Releases a held entry.
    fn queue_release(&self, id: QueueId) -> Result<(), StoreError>;
    /// Removes an entry without a trace (administrator's drop).
    fn queue_drop(&self, id: QueueId) -> Result<(), StoreError>;
    /// Retired entries, newest id first, at most `limit`.
    fn queue_retired(&self, limit: usize) -> Result<Vec<RetiredEntry>, StoreError>;
    /// Records delivery attempts (and retirements, failure streaks, webhooks) of several
    /// entries and writes the notices (DSNs) they call for, in one commit (see
    /// [`Store::queue_record_with`]).
    fn queue_record_with(
        &self,
        records: Vec<QueueRecord>,
        notices: Vec<Notice<'_>>,
        now: UnixTime,
    ) -> Result<Recorded, StoreError>;
    /// The account's suppression list, by address.
    fn suppressions(&self, account: &str) -> Result<Vec<Suppression>, StoreError>;
    /// Removes an address from the suppression list (case-insensitive); true if it was there.
    fn suppression_remove(&self, account: &str, address: &str) -> Result<bool, StoreError>;
    /// Records the end of a delivery (failed adds one, delivered ends the streak); the
    /// failures in a row now.
    fn failure_streak_record(
        &self,
        account: &str,
        address: &str,
        failed: bool,
    ) -> Result<u32, StoreError>;
    /// The failed deliveries in a row to `address` for `account`.
    fn failure_streak(&self, account: &str, address: &str) -> Result<u32, StoreError>;
}

impl QueueAdminStore for Store {
    fn hold_rule_add(&self, rule: HoldRule) -> Result<u64, StoreError> {
        Store::hold_rule_add(self, rule)
    }
    fn hold_rule_remove(&self, id: u64) -> Result<bool, StoreError> {
        Store::hold_rule_remove(self, id)
    }
    fn queue_drop_with(&self, id: QueueId, hook: Option<crate::Webhook>) -> Result<(), StoreError> {
        Store::queue_drop_with(self, id, hook)
    }
    fn queue_remove_orphans(&self) -> Result<Vec<u64>, StoreError> {
        Store::queue_remove_orphans(self)
    }
}

/// The embedded store serves one node: it always holds every task.
impl TaskLeases for Store {
    fn task_lease(&self, _task: &str, _now: UnixTime, _secs: i64) -> Result<bool, StoreError> {
        Ok(true)
    }
}

impl ReportStore for Store {
    fn reports(
        &self,
        kind: ReportKind,
        domain: &str,
    ) -> Result<Vec<(UnixTime, Vec<u8>)>, StoreError> {
        Store::reports(self, kind, domain)
    }
    fn report_domains(&self, kind: ReportKind) -> Result<Vec<String>, StoreError> {
        Store::report_domains(self, kind)
    }
    fn report_entries(&self, kind: ReportKind) -> Result<Vec<crate::ReportEntry>, StoreError> {
        Store::report_entries(self, kind)
    }
    fn report_get(
        &self,
        kind: ReportKind,
        domain: &str,
        time: UnixTime,
        seq: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Store::report_get(self, kind, domain, time, seq)
    }
    fn reports_remove(
        &self,
        kind: ReportKind,
        domain: &str,
        before: UnixTime,
    ) -> Result<(), StoreError> {
        Store::reports_remove(self, kind, domain, before)
    }
}

impl WebhookStore for Store {
    fn webhooks(&self) -> Result<Vec<crate::Webhook>, StoreError> {
        Store::webhooks(self)
    }
    fn webhooks_due(&self, now: UnixTime, limit: usize) -> Result<Vec<crate::Webhook>, StoreError> {
        Store::webhooks_due(self, now, limit)
    }
    fn webhook_result(
        &self,
        id: u64,
        result: crate::WebhookResult,
        next: Option<UnixTime>,
        success: bool,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        Store::webhook_result(self, id, result, next, success, now)
    }
    fn webhook_drop(&self, id: u64, now: UnixTime) -> Result<bool, StoreError> {
        Store::webhook_drop(self, id, now)
    }
    fn webhooks_retired(&self) -> Result<Vec<crate::RetiredWebhook>, StoreError> {
        Store::webhooks_retired(self)
    }
}

impl MailStore for Store {
    fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        Store::account(self, name)
    }
    fn account_add(&self, name: &str, domain: &str) -> Result<(), StoreError> {
        Store::account_add(self, name, domain)
    }
    fn account_set_login_disabled(
        &self,
        name: &str,
        message: Option<String>,
    ) -> Result<(), StoreError> {
        Store::account_set_login_disabled(self, name, message)
    }
    fn account_usage(&self, name: &str) -> Result<u64, StoreError> {
        Store::account_usage(self, name)
    }
    fn set_credentials(
        &self,
        account: &str,
        creds: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        Store::set_credentials(self, account, creds)
    }
    fn credentials(&self, account: &str, kind: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Store::credentials(self, account, kind)
    }
    fn deliver(&self, req: Delivery<'_>) -> Result<MessageId, StoreError> {
        Store::deliver(self, req)
    }
    fn deliver_soon(&self, req: Delivery<'_>) -> Option<DeliverySoon> {
        Store::deliver_soon(self, req).map(|f| Box::pin(f) as DeliverySoon)
    }
    fn deliver_many(&self, reqs: Vec<Delivery<'_>>) -> Result<Vec<MessageId>, StoreError> {
        Store::deliver_many(self, reqs)
    }
    fn deliver_and_queue(
        &self,
        reqs: Vec<Delivery<'_>>,
        msg: &[u8],
        recipients: Vec<QueueRecipient>,
    ) -> Result<Vec<MessageId>, StoreError> {
        Store::deliver_and_queue(self, reqs, Some((msg, recipients)))
    }
    fn deliver_and_queue_ids(
        &self,
        reqs: Vec<Delivery<'_>>,
        msg: &[u8],
        recipients: Vec<QueueRecipient>,
    ) -> Result<(Vec<MessageId>, Vec<QueueId>), StoreError> {
        Store::deliver_and_queue_ids(self, reqs, Some((msg, recipients)))
    }
    fn messages(&self, account: &str) -> Result<Vec<MessageRecord>, StoreError> {
        Store::messages(self, account)
    }
    fn message_bytes(&self, id: MessageId) -> Result<Vec<u8>, StoreError> {
        Store::message_bytes(self, id)
    }
    fn message_move(&self, id: MessageId, mailbox: &str) -> Result<String, StoreError> {
        Store::message_move(self, id, mailbox)
    }
    fn count_since(
        &self,
        account: &str,
        kind: IndexKind,
        value: &str,
        since: UnixTime,
    ) -> Result<u64, StoreError> {
        Store::count_since(self, account, kind, value, since)
    }
    fn queue_add(
        &self,
        msg: &[u8],
        recipients: Vec<QueueRecipient>,
    ) -> Result<Vec<QueueId>, StoreError> {
        Store::queue_add(self, msg, recipients)
    }
    fn queue_add_parts(
        &self,
        parts: &[&[u8]],
        recipients: Vec<QueueRecipient>,
    ) -> Result<Vec<QueueId>, StoreError> {
        Store::queue_add_parts(self, parts, recipients)
    }
    fn queue_due(&self, now: UnixTime, limit: usize) -> Result<Vec<QueueEntry>, StoreError> {
        Store::queue_due(self, now, limit)
    }
    fn queue_next_due(&self) -> Result<Option<UnixTime>, StoreError> {
        Store::queue_next_due(self)
    }
    fn queue_get(&self, id: QueueId) -> Result<Option<QueueEntry>, StoreError> {
        Store::queue_get(self, id)
    }
    fn queue_by_from_id(&self, from_id: &str) -> Result<Option<(QueueEntry, bool)>, StoreError> {
        Store::queue_by_from_id(self, from_id)
    }
    fn queue_note(&self, id: QueueId, attempt: Attempt) -> Result<bool, StoreError> {
        Store::queue_note(self, id, attempt)
    }
    fn queue_message(&self, msg_id: u64) -> Result<Vec<u8>, StoreError> {
        Store::queue_message(self, msg_id)
    }
    fn queue_update_with(&self, id: QueueId, f: QueueChange) -> Result<QueueEntry, StoreError> {
        Store::queue_update(self, id, f)
    }
    fn queue_retire(&self, id: QueueId, outcome: Outcome, now: UnixTime) -> Result<(), StoreError> {
        Store::queue_retire(self, id, outcome, now)
    }
    fn hold_rules(&self) -> Result<Vec<HoldRule>, StoreError> {
        Store::hold_rules(self)
    }
    fn suppression_add(&self, account: &str, s: Suppression) -> Result<(), StoreError> {
        Store::suppression_add(self, account, s)
    }
    fn is_suppressed(&self, account: &str, address: &str) -> Result<bool, StoreError> {
        Store::is_suppressed(self, account, address)
    }
    fn record_outgoing(
        &self,
        account: &str,
        recipients: &[String],
        time: UnixTime,
    ) -> Result<u32, StoreError> {
        Store::record_outgoing(self, account, recipients, time)
    }
    fn count_outgoing(&self, account: &str, since: UnixTime) -> Result<(u64, u64), StoreError> {
        Store::count_outgoing(self, account, since)
    }
    fn has_sent_to(&self, account: &str, address: &str) -> Result<bool, StoreError> {
        Store::has_sent_to(self, account, address)
    }
    fn sent_to_since(
        &self,
        account: &str,
        to: crate::SentTo<'_>,
        since: UnixTime,
    ) -> Result<bool, StoreError> {
        Store::sent_to_since(self, account, to, since)
    }
    fn lookup(
        &self,
        account: &str,
        kind: IndexKind,
        value: &str,
        since: UnixTime,
        limit: usize,
    ) -> Result<Vec<crate::IndexHit>, StoreError> {
        Store::lookup(self, account, kind, value, since, limit)
    }
    fn expunge(&self, id: MessageId) -> Result<(), StoreError> {
        Store::expunge(self, id)
    }
    fn account_subjectpass_key(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        Store::account_subjectpass_key(self, name, fresh)
    }
    fn first_seen(&self, account: &str, key: &str, now: UnixTime) -> Result<UnixTime, StoreError> {
        Store::first_seen(self, account, key, now)
    }
    fn set_maildirs(&self, maildirs: std::collections::BTreeMap<String, crate::Maildir>) {
        Store::set_maildirs(self, maildirs)
    }
    fn maildir_junk_sync(&self, account: &str) -> Result<Vec<MessageId>, StoreError> {
        Store::maildir_junk_sync(self, account)
    }
    fn message(&self, id: MessageId) -> Result<Option<MessageRecord>, StoreError> {
        Store::message(self, id)
    }
    fn junk_counts(
        &self,
        account: &str,
        tokens: &[String],
    ) -> Result<(u32, u32, Vec<rmox_core::junk::Counts>), StoreError> {
        Store::junk_counts(self, account, tokens)
    }
    fn junk_set_class(
        &self,
        id: MessageId,
        class: Option<bool>,
        params: &rmox_core::junk::Params,
    ) -> Result<bool, StoreError> {
        Store::junk_set_class(self, id, class, params)
    }
    fn junk_train_tokens(
        &self,
        account: &str,
        messages: Vec<(bool, std::collections::BTreeSet<String>)>,
    ) -> Result<(), StoreError> {
        Store::junk_train_tokens(self, account, messages)
    }
    fn junk_trained_before(
        &self,
        account: &str,
        before: UnixTime,
        limit: usize,
    ) -> Result<Vec<MessageId>, StoreError> {
        Store::junk_trained_before(self, account, before, limit)
    }
    fn junk_reset(&self, account: &str) -> Result<(), StoreError> {
        Store::junk_reset(self, account)
    }
    fn mailbox_expunge_before(
        &self,
        account: &str,
        mailbox: &str,
        before: UnixTime,
        max: usize,
    ) -> Result<usize, StoreError> {
        Store::mailbox_expunge_before(self, account, mailbox, before, max)
    }
    fn history(
        &self,
        account: &str,
        kind: IndexKind,
        value: &str,
        since: UnixTime,
        limit: usize,
        from_validated: Option<bool>,
        skip_mailbox: Option<&str>,
    ) -> Result<Vec<crate::HistoryHit>, StoreError> {
        Store::history(
            self,
            account,
            kind,
            value,
            since,
            limit,
            from_validated,
            skip_mailbox,
        )
    }
    fn report_add(
        &self,
        kind: ReportKind,
        domain: &str,
        time: UnixTime,
        record: Vec<u8>,
    ) -> Result<(), StoreError> {
        Store::report_add(self, kind, domain, time, record)
    }
    fn delivery_counts(&self, day: i64, network: &str) -> Result<(u64, u64), StoreError> {
        Store::delivery_counts(self, day, network)
    }
    fn delivery_counts_add(
        &self,
        day: i64,
        adds: Vec<(String, u64, u64)>,
    ) -> Result<(), StoreError> {
        Store::delivery_counts_add(self, day, adds)
    }
    fn delivery_counts_cleanup(&self, before_day: i64) -> Result<u64, StoreError> {
        Store::delivery_counts_cleanup(self, before_day)
    }
    fn mtasts_put(&self, rec: MtaStsRecord) -> Result<(), StoreError> {
        Store::mtasts_put(self, rec)
    }
    fn mtasts_get(&self, domain: &str) -> Result<Option<MtaStsRecord>, StoreError> {
        Store::mtasts_get(self, domain)
    }
    fn mtasts_remove(&self, domain: &str) -> Result<(), StoreError> {
        Store::mtasts_remove(self, domain)
    }
    fn mtasts_touch(&self, domain: &str, at: UnixTime) -> Result<bool, StoreError> {
        Store::mtasts_touch(self, domain, at)
    }
    fn mtasts_list(&self) -> Result<Vec<MtaStsRecord>, StoreError> {
        Store::mtasts_list(self)
    }
    fn backup(&self, dest: &Path) -> Result<BackupReport, StoreError> {
        Store::backup(self, dest)
    }
    fn webhook_add(&self, hook: crate::Webhook) -> Result<u64, StoreError> {
        Store::webhook_add(self, hook)
    }
    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        Store::accounts(self)
    }
    fn account_remove(&self, name: &str) -> Result<(), StoreError> {
        Store::account_remove(self, name)
    }
    fn account_set_quota(&self, name: &str, quota_bytes: Option<u64>) -> Result<(), StoreError> {
        Store::account_set_quota(self, name, quota_bytes)
    }
    fn mailboxes(&self, account: &str) -> Result<Vec<String>, StoreError> {
        Store::mailboxes(self, account)
    }
    fn set_flags(&self, id: MessageId, flags: Flags) -> Result<(), StoreError> {
        Store::set_flags(self, id, flags)
    }
    fn queue_list(&self, filter: &QueueFilter) -> Result<Vec<QueueEntry>, StoreError> {
        Store::queue_list(self, filter)
    }
    fn queue_hold(&self, id: QueueId) -> Result<(), StoreError> {
        Store::queue_hold(self, id)
    }
    fn queue_release(&self, id: QueueId) -> Result<(), StoreError> {
        Store::queue_release(self, id)
    }
    fn queue_drop(&self, id: QueueId) -> Result<(), StoreError> {
        Store::queue_drop(self, id)
    }
    fn queue_retired(&self, limit: usize) -> Result<Vec<RetiredEntry>, StoreError> {
        Store::queue_retired(self, limit)
    }
    fn queue_record_with(
        &self,
        records: Vec<QueueRecord>,
        notices: Vec<Notice<'_>>,
        now: UnixTime,
    ) -> Result<Recorded, StoreError> {
        Store::queue_record_with(self, records, notices, now)
    }
    fn suppressions(&self, account: &str) -> Result<Vec<Suppression>, StoreError> {
        Store::suppressions(self, account)
    }
    fn suppression_remove(&self, account: &str, address: &str) -> Result<bool, StoreError> {
        Store::suppression_remove(self, account, address)
    }
    fn failure_streak_record(
        &self,
        account: &str,
        address: &str,
        failed: bool,
    ) -> Result<u32, StoreError> {
        Store::failure_streak_record(self, account, address, failed)
    }
    fn failure_streak(&self, account: &str, address: &str) -> Result<u32, StoreError> {
        Store::failure_streak(self, account, address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The server holds the store as a trait object; this is what it relies on.
    #[test]
    fn store_works_as_a_trait_object() {
        let dir = std::env::temp_dir().join(format!("rmox-backend-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s: Arc<dyn MailStore> = Arc::new(Store::open(&dir).unwrap());
        s.account_add("a", "example.org").unwrap();
        s.set_credentials("a", vec![("k".into(), vec![1, 2, 3])])
            .unwrap();
        assert_eq!(s.credentials("a", "k").unwrap(), Some(vec![1, 2, 3]));
        let d = Delivery {
            account: "a".into(),
            mailbox: "Inbox".into(),
            head: &[],
            message: b"Subject: x\r\n\r\nbody\r\n",
            flags: Default::default(),
            received: UnixTime(1000),
            info: Default::default(),
        };
        let ids = s.deliver_many(vec![d]).unwrap();
        assert_eq!(
            s.message_bytes(ids[0]).unwrap(),
            b"Subject: x\r\n\r\nbody\r\n"
        );
        assert_eq!(s.account_usage("a").unwrap(), 20);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
