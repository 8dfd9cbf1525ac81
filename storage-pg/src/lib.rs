//! rmox's storage on PostgreSQL: [`PgStore`] implements [`rmox_storage::MailStore`] on a
//! database that several rmox nodes can share.
//!
//! Guarantees, as the embedded redb store gives them:
//!
//! * Every write that returns `Ok` is committed: each connection sets
//!   `synchronous_commit = on`, and a method returns after `COMMIT` returned.
//! * Every method is one transaction, or one savepoint of a shared one (group commit,
//!   below): a refusal, e.g. [`StoreError::QuotaExceeded`], rolls it back and nothing is
//!   stored. `deliver_and_queue` and `queue_record_with` are all or nothing.
//! * Message bodies and queued messages are `bytea` columns beside their records; records
//!   are the storage crate's serde types as JSON. Ids come from sequences and are never
//!   reused.
//! * The schema is created and migrated by [`PgStore::open`] with versioned migrations (the
//!   `rmox_schema` table), each in one transaction.
//! * Quota and usage: the account row is locked (`FOR UPDATE`) for the check and the
//!   update, so concurrent deliveries from several nodes cannot overrun a quota.
//! * Group commit: deliveries and queue additions (`deliver`, `deliver_many`,
//!   `deliver_and_queue`, `deliver_and_queue_ids`, `queue_add`, `queue_add_parts`) made at
//!   once by many threads share one transaction and one `COMMIT` (up to [`MAX_BATCH`] of
//!   them; at most [`MAX_PENDING`] wait, more callers block). Each runs inside a savepoint:
//!   one refused for its own reason (no account, over quota, invalid) is rolled back and
//!   fails alone, the others are stored. Every call still returns `Ok` only after the
//!   commit that holds its write returned, with the ids that commit stored; a failed commit
//!   or a lost connection fails every call of the batch ([`StoreError::Backend`]), and then
//!   whether the batch was stored is unknown. [`PgStore::group_stats`] counts the commits.
//! * Queue leases between nodes: [`MailStore::queue_claim`] leases the entries it returns
//!   to this node ([`PgOptions::node`]) for [`PgOptions::lease_secs`], skipping those
//!   another node leases or is leasing at that moment (`FOR UPDATE SKIP LOCKED`): one node
//!   at a time attempts an entry. `queue_due` leaves out entries another node leases and
//!   `queue_next_due` counts them due when their lease ends. Recording the attempt's result
//!   (any change of the entry) ends the lease; a node that dies loses its leases when they
//!   run out, and another node takes the entries then.
//!
//! Not supported (yet): the file-system methods (`backup` to a directory, maildir copies,
//! `maildir_junk_sync`) return [`StoreError::Unsupported`].
//!
//! Connections come from a small pool of the crate's own ([`Pool`]); a connection that
//! failed is dropped, not reused.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use postgres::types::{FromSql, ToSql};
use postgres::{Client, GenericClient, NoTls, Row, Statement};
use rmox_core::UnixTime;
use rmox_storage::{
    ip_networks, Account, Attempt, BackupReport, Delivery, Flags, HistoryHit, HoldRule, IndexHit,
    IndexKind, MailStore, Maildir, MessageId, MessageRecord, MtaStsRecord, Notice, NoticeMessage,
    NoticeOutcome, Outcome, QueueChange, QueueEntry, QueueFilter, QueueId, QueueRecipient,
    QueueRecord, Recorded, ReportKind, RetiredEntry, SentTo, StoreError, Suppression, Validation,
    Webhook,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

mod admin;
mod group;
mod lease;
mod schema;

pub use group::{GroupStats, MAX_BATCH, MAX_PENDING};
pub use postgres::Config;
pub use schema::SCHEMA_VERSION;

const BACKEND: &str = "postgres";

/// A PostgreSQL failure as a [`StoreError`].
pub(crate) fn pg(e: postgres::Error) -> StoreError {
    let message = match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => e.to_string(),
    };
    StoreError::Backend {
        backend: BACKEND,
        message,
    }
}

fn unsupported(what: &'static str) -> StoreError {
    StoreError::Unsupported {
        backend: BACKEND,
        what,
    }
}

/// Column `i` of a row.
pub(crate) fn col<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T, StoreError> {
    r.try_get(i).map_err(pg)
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Invalid(format!("encode: {e}")))
}

fn dec<T: DeserializeOwned>(table: &'static str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

/// The record in column `i`.
fn rec<T: DeserializeOwned>(table: &'static str, r: &Row, i: usize) -> Result<T, StoreError> {
    dec(table, col::<&[u8]>(r, i)?)
}

/// A u64 as a bigint.
fn big(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{v} does not fit a bigint")))
}

/// A bigint as a u64 (never negative as written; a negative one is corrupt).
fn unbig(table: &'static str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("negative {v}"),
    })
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Queries with [`StoreError`]s, on a client or a transaction.
pub(crate) trait Q {
    /// All rows.
    fn q(&mut self, sql: &str, p: Params<'_>) -> Result<Vec<Row>, StoreError>;
    /// At most one row.
    fn opt(&mut self, sql: &str, p: Params<'_>) -> Result<Option<Row>, StoreError>;
    /// Rows changed.
    fn x(&mut self, sql: &str, p: Params<'_>) -> Result<u64, StoreError>;
}

impl<C: GenericClient> Q for C {
    fn q(&mut self, sql: &str, p: Params<'_>) -> Result<Vec<Row>, StoreError> {
        self.query(sql, p).map_err(pg)
    }
    fn opt(&mut self, sql: &str, p: Params<'_>) -> Result<Option<Row>, StoreError> {
        self.query_opt(sql, p).map_err(pg)
    }
    fn x(&mut self, sql: &str, p: Params<'_>) -> Result<u64, StoreError> {
        self.execute(sql, p).map_err(pg)
    }
}

/// Most prepared statements kept per connection (the store's SQL is a fixed set; more
/// means text built at run time, and the cache starts over).
const MAX_STATEMENTS: usize = 256;

/// A pooled connection and the statements prepared on it: a statement is parsed once per
/// connection, then each use is one round trip (a statement given as text costs two: one
/// to prepare it, one to run it).
pub(crate) struct Conn {
    client: Client,
    stmts: HashMap<String, Statement>,
}

/// A transaction on a pooled connection, running its SQL as cached prepared statements.
pub(crate) struct Tx<'a> {
    t: postgres::Transaction<'a>,
    stmts: &'a mut HashMap<String, Statement>,
}

impl<'a> Tx<'a> {
    /// Begins a transaction on `conn`.
    pub(crate) fn begin(conn: &'a mut Conn) -> Result<Tx<'a>, StoreError> {
        let Conn { client, stmts } = conn;
        Ok(Tx {
            t: client.transaction().map_err(pg)?,
            stmts,
        })
    }

    /// Commits.
    pub(crate) fn commit(self) -> Result<(), postgres::Error> {
        self.t.commit()
    }

    /// Rolls back.
    pub(crate) fn rollback(self) -> Result<(), postgres::Error> {
        self.t.rollback()
    }

    /// Runs `sql` (one or more statements, no parameters) as text.
    pub(crate) fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.t.batch_execute(sql)
    }

    /// A nested transaction (a savepoint), with the same statements.
    pub(crate) fn transaction(&mut self) -> Result<Tx<'_>, postgres::Error> {
        let Tx { t, stmts } = self;
        Ok(Tx {
            t: t.transaction()?,
            stmts,
        })
    }

    /// `sql` prepared on this connection (once).
    fn stmt(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.t.prepare(sql).map_err(pg)?;
        if self.stmts.len() >= MAX_STATEMENTS {
            self.stmts.clear();
        }
        self.stmts.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

impl Q for Tx<'_> {
    fn q(&mut self, sql: &str, p: Params<'_>) -> Result<Vec<Row>, StoreError> {
        let s = self.stmt(sql)?;
        self.t.query(&s, p).map_err(pg)
    }
    fn opt(&mut self, sql: &str, p: Params<'_>) -> Result<Option<Row>, StoreError> {
        let s = self.stmt(sql)?;
        self.t.query_opt(&s, p).map_err(pg)
    }
    fn x(&mut self, sql: &str, p: Params<'_>) -> Result<u64, StoreError> {
        let s = self.stmt(sql)?;
        self.t.execute(&s, p).map_err(pg)
    }
}

/// A few open connections, reused; a connection is opened when none is idle.
pub struct Pool {
    config: Config,
    idle: Mutex<Vec<Conn>>,
    max_idle: usize,
}

impl Pool {
    fn get(&self) -> Result<Conn, StoreError> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(c) = idle {
            if !c.client.is_closed() {
                return Ok(c);
            }
        }
        let mut c = self.config.connect(NoTls).map_err(pg)?;
        // A 250 means durable: the commit waits for the WAL flush, whatever the server's
        // default.
        c.batch_execute("SET synchronous_commit = on").map_err(pg)?;
        Ok(Conn {
            client: c,
            stmts: HashMap::new(),
        })
    }

    fn put(&self, c: Conn) {
        if c.client.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(c);
        }
    }
}

/// The PostgreSQL backend of [`MailStore`].
pub struct PgStore {
    pool: Pool,
    /// Accounts with a maildir copy (refused: not supported by this backend).
    maildirs: Mutex<BTreeMap<String, Maildir>>,
    /// This node's name in queue leases ([`PgOptions::node`]).
    node: String,
    /// How long a lease taken by [`MailStore::queue_claim`] runs ([`PgOptions::lease_secs`]).
    lease_secs: i64,
    /// The shared commits of deliveries and queue additions.
    group: group::Committer,
}

/// What [`PgStore::open_with`] may change.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Idle connections kept for reuse.
    pub max_idle: usize,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// This node's name in queue leases (default `"rmox"`): every node sharing the
    /// database needs its own, or two nodes take each other's leases as their own. A
    /// restarted node with the same name takes its unfinished leases back at once. Empty
    /// is refused ([`StoreError::Invalid`]).
    pub node: String,
    /// How long (seconds) an entry taken by [`MailStore::queue_claim`] stays this node's
    /// (default 600): longer than an attempt can take, since once it runs out another node
    /// may attempt the entry too; short enough that a dead node's entries do not wait long.
    /// Must be more than 0.
    pub lease_secs: i64,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_idle: 8,
            connect_timeout: Duration::from_secs(10),
            node: "rmox".into(),
            lease_secs: 600,
        }
    }
}

impl PgStore {
    /// Connects to the database at `url` (a libpq connection string or a `postgresql://`
    /// URL) and creates or migrates the schema.
    pub fn open(url: &str) -> Result<PgStore, StoreError> {
        PgStore::open_with(url, PgOptions::default())
    }

    /// [`PgStore::open`] with options.
    pub fn open_with(url: &str, opts: PgOptions) -> Result<PgStore, StoreError> {
        let config: Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("postgres url: {e}")))?;
        PgStore::open_config(config, opts)
    }

    /// [`PgStore::open`] with a parsed connection configuration.
    pub fn open_config(mut config: Config, opts: PgOptions) -> Result<PgStore, StoreError> {
        if opts.node.is_empty() {
            return Err(StoreError::Invalid("postgres node name: empty".into()));
        }
        if opts.lease_secs <= 0 {
            return Err(StoreError::Invalid(format!(
                "postgres lease_secs: {} (must be more than 0)",
                opts.lease_secs
            )));
        }
        config.connect_timeout(opts.connect_timeout);
        let s = PgStore {
            pool: Pool {
                config,
                idle: Mutex::new(Vec::new()),
                max_idle: opts.max_idle,
            },
            maildirs: Mutex::new(BTreeMap::new()),
            node: opts.node,
            lease_secs: opts.lease_secs,
            group: group::Committer::default(),
        };
        let mut c = s.pool.get()?;
        schema::migrate(&mut c.client)?;
        s.pool.put(c);
        Ok(s)
    }

    /// Runs `f` in one transaction, committed when it returns `Ok` (rolled back otherwise).
    fn tx<R>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let mut c = self.pool.get()?;
        let r = (|| {
            let mut t = Tx::begin(&mut c)?;
            let r = f(&mut t)?;
            t.commit().map_err(pg)?;
            Ok(r)
        })();
        self.pool.put(c);
        r
    }

    /// Runs reads on one connection (each statement sees committed data).
    fn read<R>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut c = self.pool.get()?;
        let r = f(&mut c.client);
        self.pool.put(c);
        r
    }

    fn has_maildir(&self, account: &str) -> bool {
        self.maildirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(account)
    }
}

// ---- helpers inside a transaction ----

/// The index code of a kind (the redb store's codes, so both read alike).
/// The kind's code in stored index rows (the storage crate's, as every backend's).
fn kind_code(k: IndexKind) -> Result<i16, StoreError> {
    Ok(i16::from(k.code()))
}

const MAILBOX_CODE: i16 = 10;

/// An index value as indexed (the storage crate's normalisation).
fn normalize(kind: IndexKind, value: &str) -> String {
    rmox_storage::normalize_index_value(kind, value)
}

/// The (kind code, value) index entries of a record, as the storage crate derives them.
fn index_entries(r: &MessageRecord) -> Vec<(i16, String)> {
    rmox_storage::index_entries(r)
        .into_iter()
        .map(|(k, v)| (i16::from(k), v))
        .collect()
}

fn account_locked(t: &mut Tx<'_>, name: &str) -> Result<(Account, u64), StoreError> {
    let r = t
        .opt(
            "SELECT rec, usage FROM rmox_accounts WHERE name = $1 FOR UPDATE",
            &[&name],
        )?
        .ok_or_else(|| StoreError::NoAccount(name.to_string()))?;
    Ok((rec("accounts", &r, 0)?, unbig("accounts", col(&r, 1)?)?))
}

fn account_update(
    t: &mut Tx<'_>,
    name: &str,
    f: impl FnOnce(&mut Account),
) -> Result<Account, StoreError> {
    let (mut a, _) = account_locked(t, name)?;
    f(&mut a);
    t.x(
        "UPDATE rmox_accounts SET rec = $2 WHERE name = $1",
        &[&name, &enc(&a)?],
    )?;
    Ok(a)
}

fn message_locked(t: &mut Tx<'_>, id: MessageId) -> Result<MessageRecord, StoreError> {
    let r = t
        .opt(
            "SELECT rec FROM rmox_messages WHERE id = $1 FOR UPDATE",
            &[&big(id.0)?],
        )?
        .ok_or(StoreError::NoMessage(id))?;
    rec("messages", &r, 0)
}

fn put_message_rec(t: &mut Tx<'_>, r: &MessageRecord) -> Result<(), StoreError> {
    t.x(
        "UPDATE rmox_messages SET rec = $2 WHERE id = $1",
        &[&big(r.id.0)?, &enc(r)?],
    )?;
    Ok(())
}

/// A [`Delivery`] owning its bytes (head and message joined), to hand to the group commit.
struct Owned {
    account: String,
    mailbox: String,
    body: Vec<u8>,
    flags: Flags,
    received: UnixTime,
    info: rmox_storage::MessageInfo,
}

impl Owned {
    fn new(d: Delivery<'_>) -> Owned {
        let mut body = Vec::with_capacity(d.head.len() + d.message.len());
        body.extend_from_slice(d.head);
        body.extend_from_slice(d.message);
        Owned {
            account: d.account,
            mailbox: d.mailbox,
            body,
            flags: d.flags,
            received: d.received,
            info: d.info,
        }
    }
}

/// Stores deliveries (account and quota checked first, in account name order: a refusal
/// writes nothing). Ids in order.
fn deliver_tx(t: &mut Tx<'_>, reqs: &[Owned]) -> Result<Vec<MessageId>, StoreError> {
    let mut per: BTreeMap<&str, u64> = BTreeMap::new();
    for d in reqs {
        *per.entry(d.account.as_str()).or_default() += d.body.len() as u64;
    }
    let mut usage = Vec::new();
    for (acc, size) in &per {
        let (a, used) = account_locked(t, acc)?;
        if let Some(q) = a.quota_bytes {
            if used.saturating_add(*size) > q {
                return Err(StoreError::QuotaExceeded {
                    account: acc.to_string(),
                    used,
                    size: *size,
                    quota: q,
                });
            }
        }
        usage.push((*acc, used.saturating_add(*size)));
    }
    // The ids of all of them in one round trip.
    let n = i64::try_from(reqs.len()).map_err(|_| StoreError::Invalid("too many".into()))?;
    let mut fresh = Vec::with_capacity(reqs.len());
    for row in t.q(
        "SELECT nextval('rmox_message_ids') FROM generate_series(1::bigint, $1::bigint)",
        &[&n],
    )? {
        fresh.push(MessageId(unbig("messages", col(&row, 0)?)?));
    }
    if fresh.len() != reqs.len() {
        return Err(StoreError::Invalid("too few ids from the sequence".into()));
    }
    let mut ids = Vec::with_capacity(reqs.len());
    for (d, id) in reqs.iter().zip(fresh) {
        let r = MessageRecord {
            id,
            account: d.account.clone(),
            mailbox: d.mailbox.clone(),
            received: d.received,
            flags: d.flags,
            size: d.body.len() as u64,
            info: d.info.clone(),
            networks: d.info.remote_ip.map(ip_networks).unwrap_or_default(),
            expunged: false,
        };
        // The message, its mailbox and its index rows in one statement (one round trip).
        let (kinds, values): (Vec<i16>, Vec<String>) = index_entries(&r).into_iter().unzip();
        t.x(
            "WITH m AS (
                 INSERT INTO rmox_messages (id, account, rec, body) VALUES ($1, $2, $3, $4)
             ), b AS (
                 INSERT INTO rmox_mailboxes (account, name) VALUES ($2, $5)
                 ON CONFLICT DO NOTHING
             )
             INSERT INTO rmox_msg_index (account, kind, value, received, msg_id)
             SELECT $2, k, v, $6, $1 FROM unnest($7::smallint[], $8::text[]) AS u(k, v)
             ON CONFLICT DO NOTHING",
            &[
                &big(id.0)?,
                &r.account,
                &enc(&r)?,
                &d.body,
                &r.mailbox,
                &r.received.0,
                &kinds,
                &values,
            ],
        )?;
        ids.push(id);
    }
    for (acc, n) in usage {
        t.x(
            "UPDATE rmox_accounts SET usage = $2 WHERE name = $1",
            &[&acc, &big(n)?],
        )?;
    }
    Ok(ids)
}

/// Queues a message for its recipients (hold rules applied, from ids unique).
fn queue_add_tx(
    t: &mut Tx<'_>,
    msg: &[u8],
    recipients: Vec<QueueRecipient>,
) -> Result<Vec<QueueId>, StoreError> {
    if recipients.is_empty() {
        return Err(StoreError::Invalid("queue_add without recipients".into()));
    }
    let rules: Vec<HoldRule> = t
        .q("SELECT rec FROM rmox_hold_rules ORDER BY id", &[])?
        .iter()
        .map(|r| rec("hold_rules", r, 0))
        .collect::<Result<_, _>>()?;
    let row = t
        .opt("SELECT nextval('rmox_queue_msg_ids')", &[])?
        .ok_or_else(|| StoreError::Invalid("no id from the sequence".into()))?;
    let msg_id: i64 = col(&row, 0)?;
    t.x(
        "INSERT INTO rmox_queue_msgs (id, refs, body) VALUES ($1, $2, $3)",
        &[&msg_id, &big(recipients.len() as u64)?, &msg],
    )?;
    let mut ids = Vec::with_capacity(recipients.len());
    for mut rcpt in recipients {
        if rules.iter().any(|r| r.matches(&rcpt)) {
            rcpt.hold = true;
        }
        let row = t
            .opt("SELECT nextval('rmox_queue_ids')", &[])?
            .ok_or_else(|| StoreError::Invalid("no id from the sequence".into()))?;
        let id: i64 = col(&row, 0)?;
        if let Some(f) = &rcpt.from_id {
            let fresh = !f.id.is_empty()
                && t.x(
                    "INSERT INTO rmox_from_ids (from_id, queue_id) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&f.id, &id],
                )? == 1;
            if !fresh {
                return Err(StoreError::Invalid(format!(
                    "queue_add: from id {:?} empty or not unique",
                    f.id
                )));
            }
        }
        let e = QueueEntry {
            id: QueueId(unbig("queue", id)?),
            msg_id: unbig("queue", msg_id)?,
            size: msg.len() as u64,
            rcpt,
            attempts: 0,
            last_error: None,
            last_attempt: None,
            history: Vec::new(),
        };
        t.x(
            "INSERT INTO rmox_queue (id, msg_id, held, next_attempt, rec) VALUES ($1, $2, $3, $4, $5)",
            &[&id, &msg_id, &e.rcpt.hold, &e.rcpt.next_attempt.0, &enc(&e)?],
        )?;
        ids.push(e.id);
    }
    Ok(ids)
}

fn entry_locked(t: &mut Tx<'_>, id: QueueId) -> Result<QueueEntry, StoreError> {
    let r = t
        .opt(
            "SELECT rec FROM rmox_queue WHERE id = $1 FOR UPDATE",
            &[&big(id.0)?],
        )?
        .ok_or(StoreError::NoQueueEntry(id))?;
    rec("queue", &r, 0)
}

fn put_entry(t: &mut Tx<'_>, e: &QueueEntry) -> Result<(), StoreError> {
    t.x(
        // A recorded change ends the entry's lease (see PgStore::queue_lease).
        "UPDATE rmox_queue SET held = $2, next_attempt = $3, rec = $4,
         lease_node = NULL, lease_until = NULL WHERE id = $1",
        &[
            &big(e.id.0)?,
            &e.rcpt.hold,
            &e.rcpt.next_attempt.0,
            &enc(e)?,
        ],
    )?;
    Ok(())
}

/// Removes an entry and its reference to its message (the message goes with the last).
fn remove_entry(t: &mut Tx<'_>, e: &QueueEntry) -> Result<(), StoreError> {
    t.x("DELETE FROM rmox_queue WHERE id = $1", &[&big(e.id.0)?])?;
    let m = big(e.msg_id)?;
    t.x(
        "UPDATE rmox_queue_msgs SET refs = refs - 1 WHERE id = $1",
        &[&m],
    )?;
    t.x(
        "DELETE FROM rmox_queue_msgs WHERE id = $1 AND refs <= 0",
        &[&m],
    )?;
    Ok(())
}

fn retire_tx(
    t: &mut Tx<'_>,
    old: &QueueEntry,
    new: QueueEntry,
    outcome: Outcome,
    now: UnixTime,
) -> Result<(), StoreError> {
    remove_entry(t, old)?;
    let id = big(new.id.0)?;
    let r = RetiredEntry {
        entry: new,
        outcome,
        retired: now,
    };
    t.x(
        "INSERT INTO rmox_retired (id, retired, rec) VALUES ($1, $2, $3)",
        &[&id, &now.0, &enc(&r)?],
    )?;
    Ok(())
}

/// A failure streak change (`address` lower case); the failures in a row now.
fn streak_tx(
    t: &mut Tx<'_>,
    account: &str,
    address: &str,
    failed: bool,
) -> Result<u32, StoreError> {
    if !failed {
        t.x(
            "DELETE FROM rmox_failure_streaks WHERE account = $1 AND address = $2",
            &[&account, &address],
        )?;
        return Ok(0);
    }
    let r = t
        .opt(
            "INSERT INTO rmox_failure_streaks (account, address, n) VALUES ($1, $2, 1)
             ON CONFLICT (account, address)
             DO UPDATE SET n = LEAST(rmox_failure_streaks.n + 1, 4294967295)
             RETURNING n",
            &[&account, &address],
        )?
        .ok_or_else(|| StoreError::Invalid("no streak returned".into()))?;
    Ok(u32::try_from(col::<i64>(&r, 0)?).unwrap_or(u32::MAX))
}

fn webhook_add_tx(t: &mut Tx<'_>, hook: &Webhook) -> Result<u64, StoreError> {
    let row = t
        .opt("SELECT nextval('rmox_webhook_ids')", &[])?
        .ok_or_else(|| StoreError::Invalid("no id from the sequence".into()))?;
    let id: i64 = col(&row, 0)?;
    let h = Webhook {
        id: unbig("webhooks", id)?,
        ..hook.clone()
    };
    t.x(
        "INSERT INTO rmox_webhooks (id, next_attempt, rec) VALUES ($1, $2, $3)",
        &[&id, &h.next_attempt.0, &enc(&h)?],
    )?;
    Ok(h.id)
}

fn filter_match(f: &QueueFilter, e: &QueueEntry) -> bool {
    let conditions = rmox_core::queue::HoldRule {
        account: f.account.as_deref(),
        sender_domain: f.from_domain.as_deref(),
        recipient_domain: f.to_domain.as_deref(),
    };
    f.ids.as_ref().is_none_or(|ids| ids.contains(&e.id))
        && conditions.matches(
            e.rcpt.sender_account.as_deref(),
            &e.rcpt.mail_from,
            &e.rcpt.recipient,
        )
        && f.hold.is_none_or(|h| e.rcpt.hold == h)
        && f.due_by.is_none_or(|t| e.rcpt.next_attempt <= t)
        && f.transport.as_ref().is_none_or(|t| *t == e.rcpt.transport)
}

fn report_code(k: ReportKind) -> Result<i16, StoreError> {
    Ok(match k {
        ReportKind::DmarcEval => 1,
        ReportKind::TlsResult => 2,
        ReportKind::DmarcReport => 3,
        ReportKind::TlsReport => 4,
        _ => return Err(unsupported("a report kind newer than this backend")),
    })
}

// ---- junk filter ----

const TRAINED_SPAM: i16 = 1;
const ONEGRAMS: i16 = 2;
const TWOGRAMS: i16 = 4;
/// The token under which an account's message totals are kept.
const TOTALS: &str = "";

fn junk_bits(spam: bool, p: &rmox_core::junk::Params) -> i16 {
    (if spam { TRAINED_SPAM } else { 0 })
        | (if p.onegrams { ONEGRAMS } else { 0 })
        | (if p.twograms { TWOGRAMS } else { 0 })
}

fn junk_params(bits: i16) -> rmox_core::junk::Params {
    rmox_core::junk::Params {
        onegrams: bits & ONEGRAMS != 0,
        twograms: bits & TWOGRAMS != 0,
        ..rmox_core::junk::Params::default()
    }
}

/// Adds or subtracts (saturating at 0 and u32::MAX) one message of a class with `tokens`;
/// counts that reach (0, 0) are removed.
fn junk_apply(
    t: &mut Tx<'_>,
    account: &str,
    tokens: &BTreeSet<String>,
    spam: bool,
    add: bool,
) -> Result<(), StoreError> {
    let mut words: Vec<&str> = tokens.iter().map(String::as_str).collect();
    words.push(TOTALS);
    let d: i64 = if add { 1 } else { -1 };
    let (dh, ds) = if spam { (0i64, d) } else { (d, 0i64) };
    t.x(
        "INSERT INTO rmox_junk_words (account, word, ham, spam)
         SELECT $1, w, GREATEST($3::bigint, 0), GREATEST($4::bigint, 0) FROM unnest($2::text[]) AS w
         ON CONFLICT (account, word) DO UPDATE SET
           ham = LEAST(GREATEST(rmox_junk_words.ham + $3, 0), 4294967295),
           spam = LEAST(GREATEST(rmox_junk_words.spam + $4, 0), 4294967295)",
        &[&account, &words, &dh, &ds],
    )?;
    t.x(
        "DELETE FROM rmox_junk_words WHERE account = $1 AND word = ANY($2) AND ham = 0 AND spam = 0",
        &[&account, &words],
    )?;
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn records<T: DeserializeOwned>(table: &'static str, rows: &[Row]) -> Result<Vec<T>, StoreError> {
    rows.iter().map(|r| rec(table, r, 0)).collect()
}

impl PgStore {
    /// Leases up to `limit` entries due at `now` to `node` for `lease_secs` seconds: entries
    /// not held, whose lease is absent or over, oldest first. Rows another node is leasing
    /// at the same moment are skipped (`FOR UPDATE SKIP LOCKED`), so while a lease runs no
    /// other node gets the entry; a node that dies loses its leases when they end, and
    /// another node takes the entries then. Recording the attempt's result (any change of
    /// the entry) or retiring it ends the lease.
    pub fn queue_lease(
        &self,
        node: &str,
        now: UnixTime,
        lease_secs: i64,
        limit: usize,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        if lease_secs <= 0 {
            return Err(StoreError::Invalid(format!(
                "lease of {lease_secs} seconds"
            )));
        }
        let limit = big(limit.min(i64::MAX as usize) as u64)?;
        self.tx(|t| lease::lease_tx(t, node, now, lease_secs, lease::Pick::Due { limit }))
    }

    /// The node holding entry `id`'s lease and when it ends, if a lease was taken and not
    /// ended by a change of the entry.
    pub fn queue_lease_of(&self, id: QueueId) -> Result<Option<(String, UnixTime)>, StoreError> {
        self.read(|c| {
            let Some(r) = c.opt(
                "SELECT lease_node, lease_until FROM rmox_queue WHERE id = $1",
                &[&big(id.0)?],
            )?
            else {
                return Ok(None);
            };
            let node: Option<String> = col(&r, 0)?;
            let until: Option<i64> = col(&r, 1)?;
            Ok(node.zip(until.map(UnixTime)))
        })
    }

    /// What the group commit of deliveries and queue additions has done so far (see the
    /// crate docs).
    pub fn group_stats(&self) -> GroupStats {
        self.group.stats()
    }

    /// This node's name in queue leases ([`PgOptions::node`]).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Expunge inside a transaction (junk training already removed).
    fn expunge_tx(t: &mut Tx<'_>, id: MessageId) -> Result<(), StoreError> {
        let mut r = message_locked(t, id)?;
        if r.expunged {
            return Ok(());
        }
        r.expunged = true;
        t.x(
            "UPDATE rmox_messages SET rec = $2, body = NULL WHERE id = $1",
            &[&big(id.0)?, &enc(&r)?],
        )?;
        t.x(
            "DELETE FROM rmox_msg_index WHERE account = $1 AND kind = $2 AND value = $3
             AND received = $4 AND msg_id = $5",
            &[
                &r.account,
                &MAILBOX_CODE,
                &normalize(IndexKind::Mailbox, &r.mailbox),
                &r.received.0,
                &big(id.0)?,
            ],
        )?;
        t.x(
            "UPDATE rmox_accounts SET usage = GREATEST(usage - $2, 0) WHERE name = $1",
            &[&r.account, &big(r.size)?],
        )?;
        Ok(())
    }

    /// Index rows of (`account`, `kind`, `value`) since `since`, newest first: (message
    /// record), at most `limit`.
    fn index_scan(
        &self,
        account: &str,
        kind: IndexKind,
        value: &str,
        since: UnixTime,
        limit: usize,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        let code = kind_code(kind)?;
        let v = normalize(kind, value);
        let limit = big(limit.min(i64::MAX as usize) as u64)?;
        self.read(|c| {
            let rows = c.q(
                "SELECT m.rec FROM rmox_msg_index i JOIN rmox_messages m ON m.id = i.msg_id
                 WHERE i.account = $1 AND i.kind = $2 AND i.value = $3 AND i.received >= $4
                 ORDER BY i.received DESC, i.msg_id DESC LIMIT $5",
                &[&account, &code, &v, &since.0, &limit],
            )?;
            records("messages", &rows)
        })
    }
}

impl MailStore for PgStore {
    fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        self.read(|c| {
            c.opt("SELECT rec FROM rmox_accounts WHERE name = $1", &[&name])?
                .map(|r| rec("accounts", &r, 0))
                .transpose()
        })
    }

    fn account_add(&self, name: &str, domain: &str) -> Result<(), StoreError> {
        if name.is_empty() {
            return Err(StoreError::Invalid("empty account name".into()));
        }
        let acc = Account {
            name: name.to_string(),
            domain: domain.to_string(),
            login_disabled: None,
            quota_bytes: None,
            subjectpass_key: None,
        };
        self.tx(|t| {
            let n = t.x(
                "INSERT INTO rmox_accounts (name, rec, usage) VALUES ($1, $2, 0)
                 ON CONFLICT DO NOTHING",
                &[&name, &enc(&acc)?],
            )?;
            if n == 0 {
                return Err(StoreError::AccountExists(name.to_string()));
            }
            Ok(())
        })
    }

    fn account_set_login_disabled(
        &self,
        name: &str,
        message: Option<String>,
    ) -> Result<(), StoreError> {
        self.tx(|t| account_update(t, name, |a| a.login_disabled = message).map(|_| ()))
    }

    fn account_usage(&self, name: &str) -> Result<u64, StoreError> {
        self.read(|c| {
            let r = c
                .opt("SELECT usage FROM rmox_accounts WHERE name = $1", &[&name])?
                .ok_or_else(|| StoreError::NoAccount(name.to_string()))?;
            unbig("accounts", col(&r, 0)?)
        })
    }

    fn set_credentials(
        &self,
        account: &str,
        creds: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        self.tx(|t| {
            account_locked(t, account)?;
            t.x(
                "DELETE FROM rmox_credentials WHERE account = $1",
                &[&account],
            )?;
            for (kind, bytes) in &creds {
                t.x(
                    "INSERT INTO rmox_credentials (account, kind, bytes) VALUES ($1, $2, $3)
                     ON CONFLICT (account, kind) DO UPDATE SET bytes = EXCLUDED.bytes",
                    &[&account, kind, bytes],
                )?;
            }
            Ok(())
        })
    }

    fn credentials(&self, account: &str, kind: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|c| {
            c.opt(
                "SELECT bytes FROM rmox_credentials WHERE account = $1 AND kind = $2",
                &[&account, &kind],
            )?
            .map(|r| col::<Vec<u8>>(&r, 0))
            .transpose()
        })
    }

    fn deliver(&self, req: Delivery<'_>) -> Result<MessageId, StoreError> {
        self.deliver_many(vec![req])?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Invalid("no id for the delivery".into()))
    }

    fn deliver_many(&self, reqs: Vec<Delivery<'_>>) -> Result<Vec<MessageId>, StoreError> {
        self.deliver_and_queue_opt(reqs, None).map(|(m, _)| m)
    }

    fn deliver_and_queue(
        &self,
        reqs: Vec<Delivery<'_>>,
        msg: &[u8],
        recipients: Vec<QueueRecipient>,
    ) -> Result<Vec<MessageId>, StoreError> {
        self.deliver_and_queue_opt(reqs, Some((msg, recipients)))
            .map(|(m, _)| m)
    }

    fn deliver_and_queue_ids(
        &self,
        reqs: Vec<Delivery<'_>>,
        msg: &[u8],
        recipients: Vec<QueueRecipient>,
    ) -> Result<(Vec<MessageId>, Vec<QueueId>), StoreError> {
        self.deliver_and_queue_opt(reqs, Some((msg, recipients)))
    }

    fn messages(&self, account: &str) -> Result<Vec<MessageRecord>, StoreError> {
        self.read(|c| {
            let rows = c.q(
                "SELECT rec FROM rmox_messages WHERE account = $1 ORDER BY id",
                &[&account],
            )?;
            records("messages", &rows)
        })
    }

    fn message_move(&self, id: MessageId, mailbox: &str) -> Result<String, StoreError> {
        if mailbox.is_empty() || mailbox.len() > 200 || mailbox.contains(['\0', '\r', '\n']) {
            return Err(StoreError::Invalid(format!("mailbox name {mailbox:?}")));
        }
        self.tx(|t| {
            let mut r = message_locked(t, id)?;
            if r.expunged {
                return Err(StoreError::NoMessage(id));
            }
            if self.has_maildir(&r.account) {
                return Err(unsupported("maildir copies"));
            }
            let from = std::mem::replace(&mut r.mailbox, mailbox.to_string());
            if from == r.mailbox {
                return Ok(from);
            }
            put_message_rec(t, &r)?;
            let idb = big(id.0)?;
            t.x(
                "DELETE FROM rmox_msg_index WHERE account = $1 AND kind = $2 AND value = $3
                 AND received = $4 AND msg_id = $5",
                &[
                    &r.account,
                    &MAILBOX_CODE,
                    &normalize(IndexKind::Mailbox, &from),
                    &r.received.0,
                    &idb,
                ],
            )?;
            t.x(
                "INSERT INTO rmox_msg_index (account, kind, value, received, msg_id)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &r.account,
                    &MAILBOX_CODE,
                    &normalize(IndexKind::Mailbox, &r.mailbox),
                    &r.received.0,
                    &idb,
                ],
            )?;
            t.x(
                "INSERT INTO rmox_mailboxes (account, name) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&r.account, &r.mailbox],
            )?;
            Ok(from)
        })
    }

    fn message_bytes(&self, id: MessageId) -> Result<Vec<u8>, StoreError> {
        self.read(|c| {
            let r = c.opt(
                "SELECT body FROM rmox_messages WHERE id = $1",
                &[&big(id.0)?],
            )?;
            match r {
                Some(r) => col::<Option<Vec<u8>>>(&r, 0)?.ok_or(StoreError::NoMessage(id)),
                None => Err(StoreError::NoMessage(id)),
            }
        })
    }

    fn count_since(
        &self,
        account: &str,
        kind: IndexKind,
        value: &str,
        since: UnixTime,
    ) -> Result<u64, StoreError> {
        let code = kind_code(kind)?;
        let v = normalize(kind, value);
        self.read(|c| {
            let r = c
                .opt(
                    "SELECT count(*) FROM rmox_msg_index
                     WHERE account = $1 AND kind = $2 AND value = $3 AND received >= $4",
                    &[&account, &code, &v, &since.0],
                )?
                .ok_or_else(|| StoreError::Invalid("no count".into()))?;
            unbig("msg_index", col(&r, 0)?)
        })
    }

    fn queue_add(
        &self,
        msg: &[u8],
        recipients: Vec<QueueRecipient>,
    ) -> Result<Vec<QueueId>, StoreError> {
        if recipients.is_empty() {
            return Err(StoreError::Invalid("queue_add without recipients".into()));
        }
        let msg = msg.to_vec();
        self.group.run(&self.pool, Vec::new(), move |t| {
            queue_add_tx(t, &msg, recipients)
        })
    }

    fn queue_due(&self, now: UnixTime, limit: usize) -> Result<Vec<QueueEntry>, StoreError> {
        let limit = big(limit.min(i64::MAX as usize) as u64)?;
        self.read(|c| {
            // Not what another node leases now; this node's own leases are due (a restarted
            // node takes its entries back at once).
            let sql = format!(
                "SELECT rec FROM rmox_queue WHERE NOT held AND next_attempt <= $1 AND {}
                 ORDER BY next_attempt, id LIMIT $2",
                lease::lease_free("", "$1", Some("$3"))
            );
            let rows = c.q(&sql, &[&now.0, &limit, &self.node])?;
            records("queue", &rows)
        })
    }

    fn queue_next_due(&self) -> Result<Option<UnixTime>, StoreError> {
        self.read(|c| {
            let r = c
                .opt(lease::NEXT_DUE, &[&self.node])?
                .ok_or_else(|| StoreError::Invalid("no minimum".into()))?;
            Ok(col::<Option<i64>>(&r, 0)?.map(UnixTime))
        })
    }

    fn queue_claim(
        &self,
        entries: &[(QueueId, UnixTime)],
        now: UnixTime,
    ) -> Result<Vec<QueueEntry>, StoreError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.tx(|t| {
            lease::lease_tx(
                t,
                &self.node,
                now,
                self.lease_secs,
                lease::Pick::Listed(entries),
            )
        })
    }

    fn queue_get(&self, id: QueueId) -> Result<Option<QueueEntry>, StoreError> {
        self.read(|c| {
            c.opt("SELECT rec FROM rmox_queue WHERE id = $1", &[&big(id.0)?])?
                .map(|r| rec("queue", &r, 0))
                .transpose()
        })
    }

    fn queue_by_from_id(&self, from_id: &str) -> Result<Option<(QueueEntry, bool)>, StoreError> {
        self.read(|c| {
            let Some(r) = c.opt(
                "SELECT queue_id FROM rmox_from_ids WHERE from_id = $1",
                &[&from_id],
            )?
            else {
                return Ok(None);
            };
            let id: i64 = col(&r, 0)?;
            if let Some(r) = c.opt("SELECT rec FROM rmox_queue WHERE id = $1", &[&id])? {
                return Ok(Some((rec("queue", &r, 0)?, false)));
            }
            match c.opt("SELECT rec FROM rmox_retired WHERE id = $1", &[&id])? {
                Some(r) => Ok(Some((rec::<RetiredEntry>("retired", &r, 0)?.entry, true))),
                None => Ok(None),
            }
        })
    }

    fn queue_note(&self, id: QueueId, attempt: Attempt) -> Result<bool, StoreError> {
        self.tx(|t| {
            let idb = big(id.0)?;
            if let Some(r) = t.opt(
                "SELECT rec FROM rmox_queue WHERE id = $1 FOR UPDATE",
                &[&idb],
            )? {
                let mut e: QueueEntry = rec("queue", &r, 0)?;
                e.history.push(attempt);
                // A note is no change of the entry's schedule: its lease stays.
                t.x(
                    "UPDATE rmox_queue SET rec = $2 WHERE id = $1",
                    &[&idb, &enc(&e)?],
                )?;
                return Ok(true);
            }
            let Some(r) = t.opt(
                "SELECT rec FROM rmox_retired WHERE id = $1 FOR UPDATE",
                &[&idb],
            )?
            else {
                return Ok(false);
            };
            let mut e: RetiredEntry = rec("retired", &r, 0)?;
            e.entry.history.push(attempt);
            t.x(
                "UPDATE rmox_retired SET rec = $2 WHERE id = $1",
                &[&idb, &enc(&e)?],
            )?;
            Ok(true)
        })
    }

    fn queue_message(&self, msg_id: u64) -> Result<Vec<u8>, StoreError> {
        self.read(|c| {
            match c.opt(
                "SELECT body FROM rmox_queue_msgs WHERE id = $1",
                &[&big(msg_id)?],
            )? {
                Some(r) => col(&r, 0),
                None => Err(StoreError::Io {
                    op: "read",
                    path: format!("postgres rmox_queue_msgs/{msg_id}").into(),
                    source: std::sync::Arc::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
                }),
            }
        })
    }

    fn queue_update_with(&self, id: QueueId, f: QueueChange) -> Result<QueueEntry, StoreError> {
        self.tx(|t| {
            let old = entry_locked(t, id)?;
            let mut new = old.clone();
            f(&mut new);
            new.id = old.id;
            new.msg_id = old.msg_id;
            new.size = old.size;
            put_entry(t, &new)?;
            Ok(new)
        })
    }

    fn queue_retire(&self, id: QueueId, outcome: Outcome, now: UnixTime) -> Result<(), StoreError> {
        self.tx(|t| {
            let e = entry_locked(t, id)?;
            retire_tx(t, &e, e.clone(), outcome, now)
        })
    }

    fn hold_rules(&self) -> Result<Vec<HoldRule>, StoreError> {
        self.read(|c| {
            let rows = c.q("SELECT rec FROM rmox_hold_rules ORDER BY id", &[])?;
            records("hold_rules", &rows)
        })
    }

    fn suppression_add(&self, account: &str, s: Suppression) -> Result<(), StoreError> {
        let s = Suppression {
            address: s.address.to_ascii_lowercase(),
            ..s
        };
        self.tx(|t| {
            t.x(
                "INSERT INTO rmox_suppressions (account, address, rec) VALUES ($1, $2, $3)
                 ON CONFLICT (account, address) DO UPDATE SET rec = EXCLUDED.rec",
                &[&account, &s.address, &enc(&s)?],
            )?;
            Ok(())
        })
    }

    fn is_suppressed(&self, account: &str, address: &str) -> Result<bool, StoreError> {
        let a = address.to_ascii_lowercase();
        self.read(|c| {
            Ok(c.opt(
                "SELECT 1 FROM rmox_suppressions WHERE account = $1 AND address = $2",
                &[&account, &a],
            )?
            .is_some())
        })
    }

    fn record_outgoing(
        &self,
        account: &str,
        recipients: &[String],
        time: UnixTime,
    ) -> Result<u32, StoreError> {
        let rcpts: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
        self.tx(|t| {
            let upsert = "INSERT INTO rmox_sent_to (account, key, time) VALUES ($1, $2, $3)
                 ON CONFLICT (account, key) DO UPDATE SET time = EXCLUDED.time
                 RETURNING (xmax = 0)";
            let mut first = 0u32;
            let mut seen = BTreeSet::new();
            for r in &rcpts {
                if !seen.insert(r.as_str()) {
                    continue;
                }
                let row = t
                    .opt(upsert, &[&account, r, &time.0])?
                    .ok_or_else(|| StoreError::Invalid("no upsert result".into()))?;
                if col::<bool>(&row, 0)? {
                    first += 1;
                }
                // Reputation asks about domains too: "@domain" for the exact domain and
                // "@.d" for each domain d at or above it.
                if let Some((_, dom)) = r.rsplit_once('@') {
                    t.x(upsert, &[&account, &format!("@{dom}"), &time.0])?;
                    let mut d = dom;
                    loop {
                        t.x(upsert, &[&account, &format!("@.{d}"), &time.0])?;
                        match d.split_once('.') {
                            Some((_, rest)) if !rest.is_empty() => d = rest,
                            _ => break,
                        }
                    }
                }
            }
            t.x(
                "INSERT INTO rmox_outgoing (account, time, recipients, first_time)
                 VALUES ($1, $2, $3, $4)",
                &[&account, &time.0, &(seen.len() as i64), &i64::from(first)],
            )?;
            Ok(first)
        })
    }

    fn count_outgoing(&self, account: &str, since: UnixTime) -> Result<(u64, u64), StoreError> {
        self.read(|c| {
            let r = c
                .opt(
                    "SELECT count(*), COALESCE(sum(first_time), 0)::bigint FROM rmox_outgoing
                     WHERE account = $1 AND time >= $2",
                    &[&account, &since.0],
                )?
                .ok_or_else(|| StoreError::Invalid("no count".into()))?;
            Ok((
                unbig("outgoing", col(&r, 0)?)?,
                unbig("outgoing", col(&r, 1)?)?,
            ))
        })
    }

    fn has_sent_to(&self, account: &str, address: &str) -> Result<bool, StoreError> {
        let a = address.to_ascii_lowercase();
        self.read(|c| {
            Ok(c.opt(
                "SELECT 1 FROM rmox_sent_to WHERE account = $1 AND key = $2",
                &[&account, &a],
            )?
            .is_some())
        })
    }

    fn lookup(
        &self,
        account: &str,
        kind: IndexKind,
        value: &str,
        since: UnixTime,
        limit: usize,
    ) -> Result<Vec<IndexHit>, StoreError> {
        Ok(self
            .index_scan(account, kind, value, since, limit)?
            .into_iter()
            .map(|r| IndexHit {
                id: r.id,
                received: r.received,
                flags: r.flags,
                mailbox: r.mailbox,
                expunged: r.expunged,
                size: r.size,
            })
            .collect())
    }

    fn first_seen(&self, account: &str, key: &str, now: UnixTime) -> Result<UnixTime, StoreError> {
        self.tx(|t| {
            t.x(
                "INSERT INTO rmox_first_seen (account, key, time) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
                &[&account, &key, &now.0],
            )?;
            let r = t
                .opt(
                    "SELECT time FROM rmox_first_seen WHERE account = $1 AND key = $2",
                    &[&account, &key],
                )?
                .ok_or_else(|| StoreError::Invalid("first_seen row missing".into()))?;
            Ok(UnixTime(col(&r, 0)?))
        })
    }

    fn account_subjectpass_key(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        self.tx(|t| {
            let a = account_update(t, name, |a| {
                if a.subjectpass_key.is_none() {
                    a.subjectpass_key = Some(hex(fresh));
                }
            })?;
            a.subjectpass_key
                .as_deref()
                .and_then(unhex)
                .ok_or_else(|| StoreError::Corrupt {
                    table: "accounts",
                    detail: format!("subjectpass key of {name:?} is not hex"),
                })
        })
    }

    fn set_maildirs(&self, maildirs: BTreeMap<String, Maildir>) {
        // Deliveries to these accounts are refused (Unsupported), not silently uncopied.
        *self.maildirs.lock().unwrap_or_else(|e| e.into_inner()) = maildirs;
    }

    fn maildir_junk_sync(&self, _account: &str) -> Result<Vec<MessageId>, StoreError> {
        Err(unsupported("maildir_junk_sync (maildir copies)"))
    }

    fn message(&self, id: MessageId) -> Result<Option<MessageRecord>, StoreError> {
        self.read(|c| {
            c.opt(
                "SELECT rec FROM rmox_messages WHERE id = $1",
                &[&big(id.0)?],
            )?
            .map(|r| rec("messages", &r, 0))
            .transpose()
        })
    }

    fn junk_counts(
        &self,
        account: &str,
        tokens: &[String],
    ) -> Result<(u32, u32, Vec<rmox_core::junk::Counts>), StoreError> {
        let mut words: Vec<&str> = tokens.iter().map(String::as_str).collect();
        words.push(TOTALS);
        let counts: BTreeMap<String, (u32, u32)> = self.read(|c| {
            let rows = c.q(
                "SELECT word, ham, spam FROM rmox_junk_words WHERE account = $1 AND word = ANY($2)",
                &[&account, &words],
            )?;
            let n = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
            rows.iter()
                .map(|r| Ok((col(r, 0)?, (n(col(r, 1)?), n(col(r, 2)?)))))
                .collect()
        })?;
        let (hams, spams) = counts.get(TOTALS).copied().unwrap_or((0, 0));
        let v = tokens
            .iter()
            .map(|w| {
                let (ham, spam) = if w.is_empty() {
                    (0, 0)
                } else {
                    counts.get(w).copied().unwrap_or((0, 0))
                };
                rmox_core::junk::Counts { ham, spam }
            })
            .collect();
        Ok((hams, spams, v))
    }

    fn junk_set_class(
        &self,
        id: MessageId,
        class: Option<bool>,
        params: &rmox_core::junk::Params,
    ) -> Result<bool, StoreError> {
        self.tx(|t| {
            let r = t
                .opt(
                    "SELECT rec, body FROM rmox_messages WHERE id = $1 FOR UPDATE",
                    &[&big(id.0)?],
                )?
                .ok_or(StoreError::NoMessage(id))?;
            let m: MessageRecord = rec("messages", &r, 0)?;
            let bytes: Option<Vec<u8>> = col(&r, 1)?;
            let key: [&(dyn ToSql + Sync); 3] = [&m.account, &m.received.0, &big(id.0)?];
            let before: Option<i16> = t
                .opt(
                    "SELECT bits FROM rmox_junk_trained
                     WHERE account = $1 AND received = $2 AND msg_id = $3",
                    &key,
                )?
                .map(|r| col(&r, 0))
                .transpose()?;
            let want = if m.expunged { None } else { class };
            if before.map(|b| (b & TRAINED_SPAM != 0, b)) == want.map(|s| (s, junk_bits(s, params)))
            {
                return Ok(false);
            }
            if before.is_none() && want.is_none() {
                return Ok(false);
            }
            let new_tokens = match (want, &bytes) {
                (Some(_), Some(b)) => Some(rmox_core::junk::tokenize(params, b)),
                (Some(_), None) => return Err(StoreError::NoMessage(id)),
                _ => None,
            };
            if let Some(b) = before {
                let old = match &bytes {
                    Some(m) => rmox_core::junk::tokenize(&junk_params(b), m),
                    None => BTreeSet::new(),
                };
                junk_apply(t, &m.account, &old, b & TRAINED_SPAM != 0, false)?;
                t.x(
                    "DELETE FROM rmox_junk_trained
                     WHERE account = $1 AND received = $2 AND msg_id = $3",
                    &key,
                )?;
            }
            if let (Some(spam), Some(tokens)) = (want, &new_tokens) {
                junk_apply(t, &m.account, tokens, spam, true)?;
                t.x(
                    "INSERT INTO rmox_junk_trained (account, received, msg_id, bits)
                     VALUES ($1, $2, $3, $4)",
                    &[
                        &m.account,
                        &m.received.0,
                        &big(id.0)?,
                        &junk_bits(spam, params),
                    ],
                )?;
            }
            Ok(true)
        })
    }

    fn junk_train_tokens(
        &self,
        account: &str,
        messages: Vec<(bool, BTreeSet<String>)>,
    ) -> Result<(), StoreError> {
        self.tx(|t| {
            for (spam, tokens) in &messages {
                junk_apply(t, account, tokens, *spam, true)?;
            }
            Ok(())
        })
    }

    fn junk_trained_before(
        &self,
        account: &str,
        before: UnixTime,
        limit: usize,
    ) -> Result<Vec<MessageId>, StoreError> {
        let limit = big(limit.min(i64::MAX as usize) as u64)?;
        self.read(|c| {
            c.q(
                "SELECT msg_id FROM rmox_junk_trained WHERE account = $1 AND received < $2
                 ORDER BY received, msg_id LIMIT $3",
                &[&account, &before.0, &limit],
            )?
            .iter()
            .map(|r| Ok(MessageId(unbig("junk_trained", col(r, 0)?)?)))
            .collect()
        })
    }

    fn junk_reset(&self, account: &str) -> Result<(), StoreError> {
        self.tx(|t| {
            t.x(
                "DELETE FROM rmox_junk_words WHERE account = $1",
                &[&account],
            )?;
            t.x(
                "DELETE FROM rmox_junk_trained WHERE account = $1",
                &[&account],
            )?;
            Ok(())
        })
    }

    fn expunge(&self, id: MessageId) -> Result<(), StoreError> {
        // Its training goes with its bytes (untrained from them first), as in redb.
        let trained = self.read(|c| {
            Ok(c.opt(
                "SELECT 1 FROM rmox_junk_trained WHERE msg_id = $1",
                &[&big(id.0)?],
            )?
            .is_some())
        })?;
        if trained {
            self.junk_set_class(id, None, &rmox_core::junk::Params::default())?;
        }
        self.tx(|t| PgStore::expunge_tx(t, id))
    }

    fn mailbox_expunge_before(
        &self,
        account: &str,
        mailbox: &str,
        before: UnixTime,
        max: usize,
    ) -> Result<usize, StoreError> {
        let v = normalize(IndexKind::Mailbox, mailbox);
        let limit = big(max.min(i64::MAX as usize) as u64)?;
        let ids: Vec<MessageId> = self.read(|c| {
            c.q(
                "SELECT msg_id FROM rmox_msg_index
                 WHERE account = $1 AND kind = $2 AND value = $3 AND received < $4
                 ORDER BY received, msg_id LIMIT $5",
                &[&account, &MAILBOX_CODE, &v, &before.0, &limit],
            )?
            .iter()
            .map(|r| Ok(MessageId(unbig("msg_index", col(r, 0)?)?)))
            .collect()
        })?;
        for id in &ids {
            self.expunge(*id)?;
        }
        Ok(ids.len())
    }

    fn sent_to_since(
        &self,
        account: &str,
        to: SentTo<'_>,
        since: UnixTime,
    ) -> Result<bool, StoreError> {
        let key = match to {
            SentTo::Address(a) => a.to_ascii_lowercase(),
            SentTo::Domain(d) => format!("@{}", d.to_ascii_lowercase()),
            SentTo::Within(d) => format!("@.{}", d.to_ascii_lowercase()),
        };
        self.read(|c| {
            Ok(c.opt(
                "SELECT 1 FROM rmox_sent_to WHERE account = $1 AND key = $2 AND time >= $3",
                &[&account, &key, &since.0],
            )?
            .is_some())
        })
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
    ) -> Result<Vec<HistoryHit>, StoreError> {
        let scan = limit.saturating_mul(rmox_storage::HISTORY_SCAN_FACTOR);
        let mut hits = Vec::new();
        for r in self.index_scan(account, kind, value, since, scan)? {
            if hits.len() >= limit {
                break;
            }
            if skip_mailbox.is_some_and(|m| m == r.mailbox) {
                continue;
            }
            let validated = r.info.from_validation == Validation::Dmarc;
            if from_validated.is_some_and(|want| want != validated) {
                continue;
            }
            hits.push(HistoryHit {
                junk: r.flags.junk,
                from_localpart: r
                    .info
                    .from_address
                    .as_deref()
                    .and_then(|a| a.rsplit_once('@'))
                    .map(|(l, _)| l.to_ascii_lowercase())
                    .filter(|l| !l.is_empty()),
            });
        }
        Ok(hits)
    }

    fn report_add(
        &self,
        kind: ReportKind,
        domain: &str,
        time: UnixTime,
        record: Vec<u8>,
    ) -> Result<(), StoreError> {
        let k = report_code(kind)?;
        let d = domain.to_ascii_lowercase();
        self.tx(|t| {
            // Writers of one (kind, domain) queue here, so the sequence number is free.
            t.x(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, $2))",
                &[&d, &i64::from(k)],
            )?;
            t.x(
                "INSERT INTO rmox_reports (kind, domain, time, seq, record)
                 SELECT $1, $2, $3, COALESCE(max(seq) + 1, 0), $4 FROM rmox_reports
                 WHERE kind = $1 AND domain = $2 AND time = $3",
                &[&k, &d, &time.0, &record],
            )?;
            Ok(())
        })
    }

    fn delivery_counts(&self, day: i64, network: &str) -> Result<(u64, u64), StoreError> {
        self.read(|c| {
            match c.opt(
                "SELECT messages, bytes FROM rmox_delivery_counts WHERE day = $1 AND network = $2",
                &[&day, &network],
            )? {
                Some(r) => Ok((
                    unbig("delivery_counts", col(&r, 0)?)?,
                    unbig("delivery_counts", col(&r, 1)?)?,
                )),
                None => Ok((0, 0)),
            }
        })
    }

    fn delivery_counts_add(
        &self,
        day: i64,
        adds: Vec<(String, u64, u64)>,
    ) -> Result<(), StoreError> {
        if adds.is_empty() {
            return Ok(());
        }
        self.tx(|t| {
            for (net, m, b) in &adds {
                t.x(
                    "INSERT INTO rmox_delivery_counts (day, network, messages, bytes)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (day, network) DO UPDATE SET
                       messages = rmox_delivery_counts.messages + EXCLUDED.messages,
                       bytes = rmox_delivery_counts.bytes + EXCLUDED.bytes",
                    &[&day, net, &big(*m)?, &big(*b)?],
                )?;
            }
            Ok(())
        })
    }

    fn delivery_counts_cleanup(&self, before_day: i64) -> Result<u64, StoreError> {
        self.tx(|t| {
            t.x(
                "DELETE FROM rmox_delivery_counts WHERE day < $1",
                &[&before_day],
            )
        })
    }

    fn mtasts_put(&self, rec: MtaStsRecord) -> Result<(), StoreError> {
        let mut rec = rec;
        rec.domain = rec.domain.to_ascii_lowercase();
        self.tx(|t| {
            t.x(
                "INSERT INTO rmox_mtasts (domain, rec) VALUES ($1, $2)
                 ON CONFLICT (domain) DO UPDATE SET rec = EXCLUDED.rec",
                &[&rec.domain, &enc(&rec)?],
            )?;
            Ok(())
        })
    }

    fn mtasts_get(&self, domain: &str) -> Result<Option<MtaStsRecord>, StoreError> {
        let d = domain.to_ascii_lowercase();
        self.read(|c| {
            c.opt("SELECT rec FROM rmox_mtasts WHERE domain = $1", &[&d])?
                .map(|r| rec("mtasts", &r, 0))
                .transpose()
        })
    }

    fn mtasts_remove(&self, domain: &str) -> Result<(), StoreError> {
        let d = domain.to_ascii_lowercase();
        self.tx(|t| {
            t.x("DELETE FROM rmox_mtasts WHERE domain = $1", &[&d])?;
            Ok(())
        })
    }

    fn mtasts_touch(&self, domain: &str, at: UnixTime) -> Result<bool, StoreError> {
        let d = domain.to_ascii_lowercase();
        self.tx(|t| {
            let Some(r) = t.opt(
                "SELECT rec FROM rmox_mtasts WHERE domain = $1 FOR UPDATE",
                &[&d],
            )?
            else {
                return Ok(false);
            };
            let mut m: MtaStsRecord = rec("mtasts", &r, 0)?;
            m.last_use = Some(at);
            t.x(
                "UPDATE rmox_mtasts SET rec = $2 WHERE domain = $1",
                &[&d, &enc(&m)?],
            )?;
            Ok(true)
        })
    }

    fn mtasts_list(&self) -> Result<Vec<MtaStsRecord>, StoreError> {
        self.read(|c| {
            let rows = c.q("SELECT rec FROM rmox_mtasts ORDER BY domain", &[])?;
            records("mtasts", &rows)
        })
    }

    fn backup(&self, _dest: &Path) -> Result<BackupReport, StoreError> {
        Err(unsupported("backup to a directory (use pg_dump)"))
    }

    fn webhook_add(&self, hook: Webhook) -> Result<u64, StoreError> {
        self.tx(|t| webhook_add_tx(t, &hook))
    }

    fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.read(|c| {
            let rows = c.q(
                "SELECT rec FROM rmox_accounts ORDER BY name COLLATE \"C\"",
                &[],
            )?;
            records("accounts", &rows)
        })
    }

    fn account_remove(&self, name: &str) -> Result<(), StoreError> {
        self.tx(|t| {
            account_locked(t, name)?;
            t.x("DELETE FROM rmox_msg_index WHERE account = $1", &[&name])?;
            for table in [
                "rmox_credentials",
                "rmox_mailboxes",
                "rmox_suppressions",
                "rmox_failure_streaks",
                "rmox_sent_to",
                "rmox_outgoing",
                "rmox_messages",
            ] {
                t.x(&format!("DELETE FROM {table} WHERE account = $1"), &[&name])?;
            }
            t.x("DELETE FROM rmox_accounts WHERE name = $1", &[&name])?;
            Ok(())
        })
    }

    fn account_set_quota(&self, name: &str, quota_bytes: Option<u64>) -> Result<(), StoreError> {
        self.tx(|t| account_update(t, name, |a| a.quota_bytes = quota_bytes).map(|_| ()))
    }

    fn mailboxes(&self, account: &str) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            c.q(
                "SELECT name FROM rmox_mailboxes WHERE account = $1 ORDER BY name COLLATE \"C\"",
                &[&account],
            )?
            .iter()
            .map(|r| col(r, 0))
            .collect()
        })
    }

    fn set_flags(&self, id: MessageId, flags: Flags) -> Result<(), StoreError> {
        self.tx(|t| {
            let mut r = message_locked(t, id)?;
            r.flags = flags;
            put_message_rec(t, &r)
        })
    }

    fn queue_list(&self, filter: &QueueFilter) -> Result<Vec<QueueEntry>, StoreError> {
        let all: Vec<QueueEntry> = self.read(|c| {
            let rows = c.q("SELECT rec FROM rmox_queue ORDER BY id", &[])?;
            records("queue", &rows)
        })?;
        Ok(all
            .into_iter()
            .filter(|e| filter_match(filter, e))
            .collect())
    }

    fn queue_hold(&self, id: QueueId) -> Result<(), StoreError> {
        self.queue_update_with(id, Box::new(|e| e.rcpt.hold = true))
            .map(|_| ())
    }

    fn queue_release(&self, id: QueueId) -> Result<(), StoreError> {
        self.queue_update_with(id, Box::new(|e| e.rcpt.hold = false))
            .map(|_| ())
    }

    fn queue_drop(&self, id: QueueId) -> Result<(), StoreError> {
        self.tx(|t| {
            let e = entry_locked(t, id)?;
            remove_entry(t, &e)
        })
    }

    fn queue_retired(&self, limit: usize) -> Result<Vec<RetiredEntry>, StoreError> {
        let limit = big(limit.min(i64::MAX as usize) as u64)?;
        self.read(|c| {
            let rows = c.q(
                "SELECT rec FROM rmox_retired ORDER BY id DESC LIMIT $1",
                &[&limit],
            )?;
            records("retired", &rows)
        })
    }

    fn queue_record_with(
        &self,
        records: Vec<QueueRecord>,
        notices: Vec<Notice<'_>>,
        now: UnixTime,
    ) -> Result<Recorded, StoreError> {
        if records.is_empty() && notices.is_empty() {
            return Ok(Recorded::default());
        }
        self.tx(|t| {
            let mut done = Recorded::default();
            for r in records {
                let old = match entry_locked(t, r.id) {
                    Ok(e) => e,
                    Err(StoreError::NoQueueEntry(id)) => {
                        done.gone.push(id);
                        done.streaks.push(0);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                done.streaks.push(match &r.streak {
                    Some((account, address, failed)) => {
                        streak_tx(t, account, &address.to_ascii_lowercase(), *failed)?
                    }
                    None => 0,
                });
                if let Some(h) = &r.webhook {
                    webhook_add_tx(t, h)?;
                }
                let mut new = old.clone();
                (r.change)(&mut new);
                new.id = old.id;
                new.msg_id = old.msg_id;
                new.size = old.size;
                match r.retire {
                    None => put_entry(t, &new)?,
                    Some(outcome) => retire_tx(t, &old, new, outcome, now)?,
                }
            }
            for n in notices {
                if n.about.iter().any(|id| done.gone.contains(id)) {
                    done.notices.push(NoticeOutcome::Gone);
                    continue;
                }
                let outcome = match n.message {
                    NoticeMessage::Deliver(d) => {
                        if self.has_maildir(&d.account) {
                            return Err(unsupported("maildir copies"));
                        }
                        // A refusal rolls back to here; the results stay recorded.
                        let mut sp = t.transaction().map_err(pg)?;
                        match deliver_tx(&mut sp, &[Owned::new(d)]) {
                            Ok(ids) => {
                                sp.commit().map_err(pg)?;
                                match ids.first() {
                                    Some(id) => NoticeOutcome::Delivered(*id),
                                    None => {
                                        return Err(StoreError::Invalid(
                                            "no id for the notice".into(),
                                        ))
                                    }
                                }
                            }
                            Err(
                                e @ (StoreError::NoAccount(_) | StoreError::QuotaExceeded { .. }),
                            ) => {
                                sp.rollback().map_err(pg)?;
                                NoticeOutcome::Refused(e)
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    NoticeMessage::Queue(msg, rcpt) => {
                        let ids = queue_add_tx(t, msg, vec![rcpt])?;
                        match ids.first() {
                            Some(id) => NoticeOutcome::Queued(*id),
                            None => return Err(StoreError::Invalid("no id for the notice".into())),
                        }
                    }
                };
                done.notices.push(outcome);
            }
            Ok(done)
        })
    }

    fn suppressions(&self, account: &str) -> Result<Vec<Suppression>, StoreError> {
        self.read(|c| {
            let rows = c.q(
                "SELECT rec FROM rmox_suppressions WHERE account = $1 ORDER BY address COLLATE \"C\"",
                &[&account],
            )?;
            records("suppressions", &rows)
        })
    }

    fn suppression_remove(&self, account: &str, address: &str) -> Result<bool, StoreError> {
        let a = address.to_ascii_lowercase();
        self.tx(|t| {
            Ok(t.x(
                "DELETE FROM rmox_suppressions WHERE account = $1 AND address = $2",
                &[&account, &a],
            )? > 0)
        })
    }

    fn failure_streak_record(
        &self,
        account: &str,
        address: &str,
        failed: bool,
    ) -> Result<u32, StoreError> {
        let a = address.to_ascii_lowercase();
        self.tx(|t| streak_tx(t, account, &a, failed))
    }

    fn failure_streak(&self, account: &str, address: &str) -> Result<u32, StoreError> {
        let a = address.to_ascii_lowercase();
        self.read(|c| {
            Ok(c.opt(
                "SELECT n FROM rmox_failure_streaks WHERE account = $1 AND address = $2",
                &[&account, &a],
            )?
            .map(|r| col::<i64>(&r, 0))
            .transpose()?
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)))
        })
    }
}

impl PgStore {
    fn deliver_and_queue_opt(
        &self,
        reqs: Vec<Delivery<'_>>,
        queued: Option<(&[u8], Vec<QueueRecipient>)>,
    ) -> Result<(Vec<MessageId>, Vec<QueueId>), StoreError> {
        if reqs.is_empty() && queued.is_none() {
            return Ok((Vec::new(), Vec::new()));
        }
        if queued.as_ref().is_some_and(|(_, r)| r.is_empty()) {
            return Err(StoreError::Invalid("queue_add without recipients".into()));
        }
        if reqs.iter().any(|d| self.has_maildir(&d.account)) {
            return Err(unsupported("maildir copies"));
        }
        let reqs: Vec<Owned> = reqs.into_iter().map(Owned::new).collect();
        let queued = queued.map(|(m, r)| (m.to_vec(), r));
        let accounts = reqs.iter().map(|d| d.account.clone()).collect();
        self.group.run(&self.pool, accounts, move |t| {
            let ids = deliver_tx(t, &reqs)?;
            let q = match queued {
                Some((msg, rcpts)) => queue_add_tx(t, &msg, rcpts)?,
                None => Vec::new(),
            };
            Ok((ids, q))
        })
    }
}
