//! rmox-storage: everything rmox keeps, durable before acknowledged.
//!
//! One data directory holds a redb database (`index.db`: accounts, credentials, mailboxes,
//! message records and indexes, queue, history, hold rules, suppression list, outgoing log,
//! reports, policy caches) and the message bytes as files (`msg/…`, `queue/…`). The API is
//! synchronous: runtimes call it from their blocking pools, from many threads at once.
//! [`Store`] is `Send + Sync`; share one in an `Arc`.
//!
//! # Guarantees
//!
//! * **Durable before `Ok`.** A delivery or a queued message returns `Ok` only after its
//!   redo record (records and message bytes) is in the acceptance log and the log was
//!   `fdatasync`ed (see the `alog` module: the database commit of such a batch has no
//!   sync; checkpoints make files and database durable, replay at open applies what
//!   follows the last one). Every other write returns `Ok` after its message files and
//!   directory entries were synced and the redb transaction committed with
//!   [`redb::Durability::Immediate`] (a checkpoint). Any
//!   failure (full disk, I/O error, redb error) returns `Err`, never `Ok`;
//!   [`StoreError::is_storage_failure`] / [`StoreError::is_disk_full`] tell the server
//!   to answer 451 or 452.
//! * **Crash safety.** Files are written before the record that references them is
//!   committed and removed only after the record stopped referencing them. A crash leaves at
//!   worst an unreferenced file, which [`verify`] reports as "orphan, safe to delete". A new
//!   data directory's database is created as `index.db.new` and renamed to `index.db` once
//!   initialised, so a crash during the first start never leaves a half-written database.
//!   A new shard directory's entry is fsynced in its parent before any file in it is
//!   committed, whichever thread created it. After a crash, [`verify`] checks a recovered
//!   copy of the database and says recovery is due ([`VerifyReport::recovered`]);
//!   the next start recovers it.
//!
//! # How the guarantees are tested
//!
//! * `storage/tests/crash.rs` SIGKILLs a process writing from four threads (group commit)
//!   at seeded random moments, 20 times, and checks every acknowledged id.
//! * `storage/tests/crash_points.rs` chooses crash points exactly. With the `testing`
//!   feature the database can live on a custom redb `StorageBackend`
//!   (`Store::open_with_backend`) and every message-file operation (create, link, rename,
//!   remove, data fsync, directory fsync, `syncfs`) goes through a hook; one counter spans
//!   both. A workload (deliveries, a delivery to three mailboxes sharing one file, a DSN
//!   queued in the same commit, queue add/update/release/retire, expunge, suppression,
//!   failure streak, counts, a reopen) runs once to count its I/O operations, then once
//!   per operation N with a crash at N (N and all later operations fail without
//!   happening). Two images are built from what survives: power loss (redb's bytes as of
//!   its last sync; a file's data only if fsynced or `syncfs`ed, else empty; a directory
//!   entry only if its directory was fsynced or `syncfs`ed) and process crash (everything
//!   written). Each must open, show exactly the state before or after the operation in
//!   flight (message bytes, index counts, queue, retired entries, suppressions...), pass
//!   [`verify`] before being opened again (it may say recovery is due) and after (orphans
//!   allowed), and accept a new delivery and queue entry with fresh
//!   ids. Both fsync modes (one `syncfs` per batch; per-file fsync). A proptest crashes
//!   random workloads at random points. Not covered: torn or reordered writes inside one
//!   redb write or one file write, data reaching disk before its sync in any order other
//!   than "all" (process crash) or "none" (power loss), concurrent writers (the crash
//!   workload is single-threaded; concurrency is the SIGKILL test's), and the real kernel's
//!   behaviour (the model follows POSIX: a new entry needs its directory fsynced).
//! * `storage/tests/model.rs` (proptest) and the cargo-fuzz target `storage_model` drive
//!   the same model-based checker (`testing::check`): operation sequences decoded from
//!   arbitrary bytes run on a real store and on an in-memory model, and every answer and
//!   the whole observable state must agree after every step, and after every reopen
//!   (where [`verify`] must find neither problems nor orphans).
//! * **Group commit.** Concurrent writes share one write transaction and one commit: callers
//!   write and fsync their files in parallel, enqueue a closure; one of them becomes the
//!   leader, runs up to 512 queued closures in one transaction, fsyncs the touched
//!   directories once, commits once and wakes the others. At most 4096 jobs wait; more
//!   callers block (bounded memory). A job refused for its own reason (no account, over
//!   quota) fails alone and changes nothing; a storage failure fails the whole batch.
//! * **Indexes, not scans.** Reputation and rate questions ([`Store::lookup`],
//!   [`Store::count_since`], [`Store::count_outgoing`], [`Store::queue_due`]) are range
//!   scans over keyed tables, so their cost grows with the answer, not with the account.
//! * **Schema version.** `meta.schema_version` is [`SCHEMA_VERSION`]; [`Store::open`]
//!   migrates older data (version 1 had no per-account usage counters) and refuses newer
//!   data with [`StoreError::SchemaTooNew`].
//!
//! # API overview (all methods on [`Store`] unless noted)
//!
//! ```text
//! Store::open(data_dir: &Path) -> Result<Store>
//! Store::open_readonly(data_dir: &Path) -> Result<Store>          // writes fail: ReadOnly
//!
//! // accounts and credentials
//! account_add(name: &str, domain: &str) -> Result<()>
//! account_remove(name: &str) -> Result<()>
//! accounts() -> Result<Vec<Account>>;  account(name) -> Result<Option<Account>>
//! account_set_login_disabled(name, Option<String>) -> Result<()>
//! account_set_quota(name, Option<u64>) -> Result<()>
//! account_usage(name) -> Result<u64>                                // bytes, a counter
//! set_credentials(account, Vec<(String /*kind*/, Vec<u8>)>) -> Result<()>   // replaces all
//! credentials(account, kind: &str) -> Result<Option<Vec<u8>>>
//!
//! // delivery and messages
//! deliver(Delivery<'_>) -> Result<MessageId>
//! deliver_many(Vec<Delivery<'_>>) -> Result<Vec<MessageId>>       // one commit, all or none
//! deliver_and_queue(Vec<Delivery<'_>>, Option<(&[u8], Vec<QueueRecipient>)>)
//!     -> Result<Vec<MessageId>>     // deliveries + a queued DSN, one commit, all or none
//! messages(account) -> Result<Vec<MessageRecord>>;  message(id) -> Result<Option<MessageRecord>>
//! message_bytes(id) -> Result<Vec<u8>>;  mailboxes(account) -> Result<Vec<String>>
//! set_flags(id, Flags) -> Result<()>;  expunge(id) -> Result<()>
//! lookup(account, IndexKind, value, since: UnixTime, limit) -> Result<Vec<IndexHit>>  // newest first
//! count_since(account, IndexKind, value, since) -> Result<u64>
//! ip_networks(IpAddr) -> Vec<String>                                // free function
//!
//! // queue
//! queue_add(msg: &[u8], Vec<QueueRecipient>) -> Result<Vec<QueueId>>
//! queue_list(&QueueFilter) -> Result<Vec<QueueEntry>>;  queue_get(QueueId) -> Result<Option<QueueEntry>>
//! queue_due(now, limit) -> Result<Vec<QueueEntry>>;  queue_next_due() -> Result<Option<UnixTime>>
//! queue_message(msg_id: u64) -> Result<Vec<u8>>
//! queue_update(QueueId, FnOnce(&mut QueueEntry)) -> Result<QueueEntry>
//! queue_hold(QueueId), queue_release(QueueId) -> Result<()>
//! queue_retire(QueueId, Outcome, now) -> Result<()>;  queue_drop(QueueId) -> Result<()>
//! queue_record(Vec<QueueRecord>, now) -> Result<Recorded>  // attempts, retirements, failure streaks: one commit
//! queue_record_with(Vec<QueueRecord>, Vec<Notice>, now) -> Result<Recorded>  // and the DSNs they call for, same commit
//! queue_remove_orphans() -> Result<Vec<u64>>   // unreferenced queue message files, at start
//! queue_retired(limit) -> Result<Vec<RetiredEntry>>;  queue_retired_cleanup(before) -> Result<u64>
//! hold_rule_add(HoldRule) -> Result<u64>;  hold_rules();  hold_rule_remove(id) -> Result<bool>
//! suppression_add(account, Suppression);  suppressions(account);  suppression_remove(account, addr);
//! is_suppressed(account, addr) -> Result<bool>
//! record_outgoing(account, &[String], time) -> Result<u32 /*first-time*/>
//! count_outgoing(account, since) -> Result<(u64 /*messages*/, u64 /*first-time rcpts*/)>
//! has_sent_to(account, addr) -> Result<bool>;  outgoing_cleanup(before)
//!
//! // per-network delivery counts per UTC day (per-day rate limits)
//! delivery_counts(day: i64, network: &str) -> Result<(u64 /*messages*/, u64 /*bytes*/)>  // a point read
//! delivery_counts_add(day, Vec<(String, u64, u64)>) -> Result<()>    // adds, one commit
//! delivery_counts_cleanup(before_day) -> Result<u64>
//!
//! // reports and policy caches
//! report_add(ReportKind, domain, time, Vec<u8>);  reports(kind, domain);  report_domains(kind);
//! report_entries(kind);  report_get(kind, domain, time, seq);
//! reports_remove(kind, domain, before)
//! mtasts_put(MtaStsRecord);  mtasts_get(domain);  mtasts_remove(domain)
//! mtasts_touch(domain, at) -> Result<bool>;  mtasts_list() -> Result<Vec<MtaStsRecord>>  // also on MailStore
//!
//! // backup and verify
//! backup(&self, dest: &Path) -> Result<BackupReport>
//! verify(data_dir: &Path) -> VerifyReport                           // free function
//! ```

mod alog;
mod backend;
mod backup;
mod bloom;
mod counts;
mod error;
mod files;
mod group;
mod ikey;
mod junk;
mod maildir;
mod model;
mod overlay;
mod queue;
mod store;
mod tables;
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;
#[cfg(target_os = "linux")]
mod uring;
mod webhook;

pub use alog::{CHECKPOINT_AFTER, LOG_MAX, LOG_WRITE_MAX};
pub use backend::{
    DeliverySoon, MailStore, QueueAdminStore, QueueChange, ReportStore, TaskLeases, WebhookStore,
};
pub use backup::{verify, BackupReport, VerifyReport};
pub use error::{DbFailure, StoreError};
pub use group::{commit_stats, log_stats, CommitStats, COMMIT_BUCKETS, MAX_BATCH, MAX_PENDING};
pub use junk::Trained;
pub use maildir::Maildir;
pub use model::*;
pub use overlay::{INDEX_FLUSH_AT, INDEX_FLUSH_CHUNK};
pub use queue::{Notice, NoticeMessage, NoticeOutcome, QueueRecord, Recorded, SentTo};
pub use store::{
    index_entries, ip_networks, normalize as normalize_index_value, Store, DB_FILE,
    DEFAULT_CACHE_BYTES, HISTORY_SCAN_FACTOR, INLINE_BODY_MAX, SOON_FILE_MAX,
};
pub use tables::SCHEMA_VERSION;
pub use webhook::{RetiredWebhook, Webhook, WebhookResult};
