//! The store: opening, accounts, credentials, delivery, messages and their indexes.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{
    Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, WriteTransaction,
};
use rmox_core::UnixTime;

use crate::error::StoreError;
use crate::files::{self, Area};
use crate::group::Committer;
use crate::ikey::IndexKeyer;
use crate::model::*;
use crate::overlay::Overlay;
use crate::tables::*;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "index.db";
/// The database while a new data directory is being created; renamed to [`DB_FILE`] once
/// initialised, so that a crash during creation never leaves a half-written `index.db`.
pub(crate) const DB_NEW: &str = "index.db.new";

pub(crate) enum Db {
    /// Shared with the commit thread ([`crate::group`]).
    Rw(Arc<Database>),
    Ro(ReadOnlyDatabase),
}

/// Next ids to hand out; persisted in `meta` with every commit.
#[derive(Default)]
pub(crate) struct Counters {
    pub next_msg: AtomicU64,
    pub next_qmsg: AtomicU64,
    pub next_queue: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Deletes {
    /// Backups running: file removals are deferred until they end.
    pub backups: usize,
    pub deferred: Vec<PathBuf>,
}

/// rmox's storage: a redb database plus durable message files in one data directory.
/// `Send + Sync`; share it in an `Arc` and call it from many threads at once. Every write
/// returns only once durable; concurrent writes share commits (see the crate docs).
pub struct Store {
    pub(crate) dir: PathBuf,
    pub(crate) db: Db,
    pub(crate) committer: Arc<Committer>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) deletes: Mutex<Deletes>,
    /// Accounts whose messages are also written to a maildir ([`Store::set_maildirs`]).
    pub(crate) maildirs: std::sync::RwLock<BTreeMap<String, crate::Maildir>>,
    /// Per account, when its maildir Junk folder was last read (seconds).
    pub(crate) junk_synced: Mutex<BTreeMap<String, i64>>,
    /// The message index's keys ([`crate::bloom`]); `None` for a read-only store.
    pub(crate) bloom: Option<Arc<crate::bloom::IndexBloom>>,
    /// The message index's hash key ([`crate::ikey`]).
    pub(crate) ikeys: IndexKeyer,
    /// Index entries of recent deliveries not yet in the table ([`crate::overlay`]);
    /// every index read merges them.
    pub(crate) overlay: Arc<Overlay>,
    /// The commit thread once started ([`Store::deliver_soon`]): stopped and joined when
    /// the store is dropped, so that the database is closed when `drop` returns.
    pub(crate) commit_thread: Mutex<Option<CommitThread>>,
}

/// The store's commit thread: its handle and the flag that tells it to end.
pub(crate) struct CommitThread {
    handle: std::thread::JoinHandle<()>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

/// A write made ready for the committer: the files it wrote (removed when it fails
/// before the commit), the directories whose entries must be durable, its redo record and
/// its work in the batch's transaction.
pub(crate) struct PreparedWrite<R> {
    pub new_files: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
    pub log: Option<Vec<u8>>,
    pub work: TxnWork<R>,
}

/// A write's work in its batch's transaction.
pub(crate) type TxnWork<R> = Box<dyn FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send>;

/// What a delivery's work returns: the messages' ids and the queue entries' ids.
type Delivered = (Vec<MessageId>, Vec<QueueId>);

/// Starts the store's commit thread ([`crate::group`]): it leads batches whenever it is
/// woken to, until the store is gone (checked at least every second; the store is held
/// only while there is work). `None`: no thread could be started (logged).
fn commit_thread(
    committer: std::sync::Weak<Committer>,
    wanted: Arc<std::sync::atomic::AtomicBool>,
    db: std::sync::Weak<Database>,
) -> Option<CommitThread> {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let spawned = std::thread::Builder::new()
        .name("rmox-commit".into())
        .spawn(move || loop {
            std::thread::park_timeout(std::time::Duration::from_secs(1));
            // Jobs waiting are committed first, also when the store is being dropped.
            if wanted.load(Ordering::SeqCst) {
                let (Some(c), Some(db)) = (committer.upgrade(), db.upgrade()) else {
                    return;
                };
                c.helper_round(&db);
            }
            if stopped.load(Ordering::SeqCst) || committer.strong_count() == 0 {
                return;
            }
        });
    match spawned {
        Ok(handle) => Some(CommitThread { handle, stop }),
        Err(e) => {
            tracing::warn!(error = %e, "storage: cannot start the commit thread; deliveries wait on the blocking pool");
            None
        }
    }
}

/// Messages of at most this many bytes are kept in the database itself, committed with their
/// records: their delivery writes no file, so it costs no file-system sync (`syncfs`) of
/// its own, only the database commit it shares with the rest of its batch. Larger messages
/// get a file each (written, then synced once per batch before the commit).
pub const INLINE_BODY_MAX: usize = 32 * 1024;

/// [`Store::deliver_soon`] writes a message file on the caller's thread up to this size
/// (where the store syncs the file system per batch): writing into the page cache is a
/// copy, but it blocks the runtime's thread for its duration, so larger messages go to
/// [`Store::deliver`] on the blocking pool.
pub const SOON_FILE_MAX: usize = 128 * 1024;

/// [`Store::history`] looks at no more than this many index entries per hit wanted.
pub const HISTORY_SCAN_FACTOR: usize = 8;

/// redb's page cache for [`Store::open`]: enough for the hot tables of a small deployment,
/// small enough that memory stays flat while an import or a big account grows the database.
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

fn last_key<V: redb::Value + 'static>(t: &impl ReadableTable<u64, V>) -> Result<u64, StoreError> {
    Ok(t.last()?
        .map(|(k, _)| k.value().saturating_add(1))
        .unwrap_or(1))
}

impl Store {
    /// Opens (creating if needed) the data directory `data_dir`: creates the directories and
    /// the database, records the schema version or migrates an older one, and refuses a
    /// newer one ([`StoreError::SchemaTooNew`]). Only one process may open a data directory.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(data_dir, DEFAULT_CACHE_BYTES)
    }

    /// [`Store::open`] with redb's page cache limited to `cache_bytes` (redb's own default is
    /// 1 GiB, which a long import or a large account would fill: memory would grow with the
    /// data instead of staying flat).
    pub fn open_with_cache(data_dir: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        // One syncfs per batch instead of one fsync per message file, where the platform
        // has it and it works for this directory; `RMOX_STORAGE_FSYNC=file` keeps per-file
        // fsyncs (for file systems where syncfs is slow because of unrelated traffic).
        let per_file = std::env::var("RMOX_STORAGE_FSYNC").is_ok_and(|v| v == "file");
        Store::open_with(data_dir, per_file, true, false, |p| {
            Ok(redb::Builder::new().set_cache_size(cache_bytes).create(p)?)
        })
    }

    /// Opens `data_dir` with its database on a custom redb storage backend (tests: crash
    /// simulation; the database is not `index.db` then). `per_file_fsync` selects per-file
    /// fsyncs instead of one `syncfs` per batch (without probing whether syncfs works).
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn open_with_backend(
        data_dir: &Path,
        backend: impl redb::StorageBackend,
        per_file_fsync: bool,
    ) -> Result<Store, StoreError> {
        // The backend holds the bytes; an empty file stands for its name (creation and
        // rename as with a real file, which the crash simulation follows).
        Store::open_with(data_dir, per_file_fsync, false, true, move |_| {
            Ok(redb::Builder::new().create_with_backend(backend)?)
        })
    }

    fn open_with(
        data_dir: &Path,
        per_file: bool,
        probe_syncfs: bool,
        placeholder: bool,
        create: impl FnOnce(&Path) -> Result<Database, StoreError>,
    ) -> Result<Store, StoreError> {
        files::ensure_dir(data_dir)?;
        files::ensure_dir(&data_dir.join(Area::Msg.dir_name()))?;
        files::ensure_dir(&data_dir.join(Area::Queue.dir_name()))?;
        let db_file = data_dir.join(DB_FILE);
        let db = if db_file.exists() {
            create(&db_file)?
        } else {
            // A new data directory: create and initialise the database under a temporary
            // name, then rename it into place. A crash before the rename leaves only the
            // temporary file, replaced on the next start; redb refuses a half-created file.
            let tmp = data_dir.join(DB_NEW);
            files::remove(&tmp);
            #[cfg(feature = "testing")]
            if placeholder {
                files::create_empty(&tmp)?;
            }
            #[cfg(not(feature = "testing"))]
            let _ = placeholder;
            let db = create(&tmp)?;
            let txn = db.begin_write()?;
            migrate(&txn)?;
            txn.commit()?;
            // The open database follows the rename (Unix semantics).
            files::rename(&tmp, &db_file)?;
            files::sync_dir(data_dir)?;
            db
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&db_file, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| StoreError::io("set permissions", &db_file, e))?;
        }
        let txn = db.begin_write()?;
        migrate(&txn)?;
        let ikeys = index_keyer(&txn)?;
        fill_facts(&txn)?;
        crate::webhook::fill_due(&txn)?;
        let syncfs_root = (!per_file && (!probe_syncfs || files::syncfs_works(data_dir)))
            .then(|| data_dir.to_path_buf());
        let mut log = replay(&txn, data_dir, ikeys, syncfs_root.as_deref())?;
        // `RMOX_STORAGE_URING=off`: the log writes and syncs by itself, after the index
        // commit (for comparison; also where io_uring is missing).
        if std::env::var("RMOX_STORAGE_URING").is_ok_and(|v| v == "off") {
            log.without_ring();
        }
        tracing::debug!(
            data = %data_dir.display(),
            io_uring = log.overlaps(),
            "acceptance log open"
        );
        let counters = Arc::new(Counters::default());
        {
            let meta = txn.open_table(META)?;
            let get = |k: &str| -> Result<u64, StoreError> {
                Ok(meta.get(k)?.map(|g| g.value()).unwrap_or(1).max(1))
            };
            let m = get(K_NEXT_MSG)?.max(last_key(&txn.open_table(MESSAGES)?)?);
            let qm = get(K_NEXT_QMSG)?.max(last_key(&txn.open_table(QUEUE_MSGS)?)?);
            let q = get(K_NEXT_QUEUE)?
                .max(last_key(&txn.open_table(QUEUE)?)?)
                .max(last_key(&txn.open_table(RETIRED)?)?);
            counters.next_msg.store(m, Ordering::SeqCst);
            counters.next_qmsg.store(qm, Ordering::SeqCst);
            counters.next_queue.store(q, Ordering::SeqCst);
        }
        txn.commit()?;
        let bloom = Arc::new(index_bloom(&db)?);
        let overlay = Arc::new(Overlay::default());
        let c = Arc::clone(&counters);
        let committer = Committer::new(
            Box::new(move |txn: &WriteTransaction| {
                let mut meta = txn.open_table(META)?;
                meta.insert(K_NEXT_MSG, c.next_msg.load(Ordering::SeqCst))?;
                meta.insert(K_NEXT_QMSG, c.next_qmsg.load(Ordering::SeqCst))?;
                meta.insert(K_NEXT_QUEUE, c.next_queue.load(Ordering::SeqCst))?;
                Ok(())
            }),
            syncfs_root,
            Some(log),
            Some(Arc::clone(&overlay)),
        );
        Ok(Store {
            dir: data_dir.to_path_buf(),
            db: Db::Rw(Arc::new(db)),
            committer: Arc::new(committer),
            counters,
            deletes: Mutex::new(Deletes::default()),
            maildirs: Default::default(),
            junk_synced: Default::default(),
            bloom: Some(bloom),
            ikeys,
            overlay,
            commit_thread: Mutex::new(None),
        })
    }

    /// Opens an existing data directory read-only (for verify and inspection; no process may
    /// have it open for writing). Writes return [`StoreError::ReadOnly`].
    pub fn open_readonly(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_readonly_db(&data_dir.join(DB_FILE), data_dir)
    }

    /// [`Store::open_readonly`] with the database at `db_file` (verify's recovered copy).
    pub(crate) fn open_readonly_db(db_file: &Path, data_dir: &Path) -> Result<Store, StoreError> {
        let db = ReadOnlyDatabase::open(db_file)?;
        let rtx = db.begin_read()?;
        let (version, k0, k1) = match rtx.open_table(META) {
            Ok(t) => {
                let get = |k: &str| -> Result<Option<u64>, StoreError> {
                    Ok(t.get(k)?.map(|g| g.value()))
                };
                (
                    get(K_VERSION)?.unwrap_or(1),
                    get(K_INDEX_KEY0)?,
                    get(K_INDEX_KEY1)?,
                )
            }
            Err(redb::TableError::TableDoesNotExist(_)) => (1, None, None),
            Err(e) => return Err(e.into()),
        };
        drop(rtx);
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < SCHEMA_VERSION {
            // Its tables are not this version's (e.g. the index without facts): only a
            // read-write open migrates them.
            return Err(StoreError::Invalid(format!(
                "{}: data of schema version {version}, this rmox reads {SCHEMA_VERSION}: start rmox on it once (it migrates when opened for writing)",
                db_file.display()
            )));
        }
        let (Some(k0), Some(k1)) = (k0, k1) else {
            return Err(StoreError::Corrupt {
                table: "meta",
                detail: "the message index's hash key is missing".into(),
            });
        };
        Ok(Store {
            dir: data_dir.to_path_buf(),
            db: Db::Ro(db),
            committer: Arc::new(Committer::new(
                Box::new(|_| Err(StoreError::ReadOnly)),
                None,
                None,
                None,
            )),
            counters: Arc::new(Counters::default()),
            deletes: Mutex::new(Deletes::default()),
            maildirs: Default::default(),
            junk_synced: Default::default(),
            bloom: None,
            ikeys: IndexKeyer::new(k0, k1),
            overlay: Arc::default(),
            commit_thread: Mutex::new(None),
        })
    }

    /// The accounts whose delivered messages are also written, durably, to a maildir (for
    /// an IMAP server), replacing the earlier list (a configuration reload).
    pub fn set_maildirs(&self, maildirs: BTreeMap<String, crate::Maildir>) {
        *self.maildirs.write().unwrap_or_else(|p| p.into_inner()) = maildirs;
    }

    /// The maildir of `account`, when it has one.
    pub fn maildir(&self, account: &str) -> Option<crate::Maildir> {
        self.maildirs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .cloned()
    }

    /// Marks as junk the messages of `account` that are in its maildir's Junk folder (moved
    /// there through IMAP) and not yet junk; returns those it marked. Nothing without a maildir.
    pub fn maildir_junk_sync(&self, account: &str) -> Result<Vec<MessageId>, StoreError> {
        let Some(md) = self.maildir(account) else {
            return Ok(Vec::new());
        };
        // Only files that arrived since the last look (a second of overlap); the first
        // look after a start reads them all.
        let since = self
            .junk_synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .copied()
            .unwrap_or(0);
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut ids = Vec::new();
        for f in md.junk_since(since.saturating_sub(1))? {
            match f {
                crate::maildir::JunkFile::Id(id) => ids.push(MessageId(id)),
                crate::maildir::JunkFile::MessageId(mid) => {
                    for h in self.lookup(account, IndexKind::MessageId, &mid, UnixTime(0), 10)? {
                        ids.push(h.id);
                    }
                }
            }
        }
        self.junk_synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.to_string(), started);
        let mut marked = Vec::new();
        for id in ids {
            let Some(rec) = self.message(id)? else {
                continue;
            };
            if rec.account != account || rec.expunged || rec.flags.junk {
                continue;
            }
            let mut f = rec.flags;
            f.junk = true;
            f.notjunk = false;
            self.set_flags(rec.id, f)?;
            marked.push(rec.id);
        }
        Ok(marked)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(match &self.db {
            Db::Rw(d) => d.begin_read()?,
            Db::Ro(d) => d.begin_read()?,
        })
    }

    /// Runs `f` in a group commit, fsyncing `dirs` first. On failure (unless the commit itself
    /// failed, when they may be referenced) removes `new_files`.
    pub(crate) fn write<R, F>(
        &self,
        new_files: Vec<PathBuf>,
        dirs: Vec<PathBuf>,
        f: F,
    ) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        self.write_logged(new_files, dirs, None, f)
    }

    /// [`Store::write`] with the write's redo record for the acceptance log
    /// ([`crate::alog`]): the write is then durable once the record is.
    pub(crate) fn write_logged<R, F>(
        &self,
        new_files: Vec<PathBuf>,
        dirs: Vec<PathBuf>,
        log: Option<Vec<u8>>,
        f: F,
    ) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&WriteTransaction) -> Result<R, StoreError> + Send + 'static,
    {
        let Db::Rw(db) = &self.db else {
            return Err(StoreError::ReadOnly);
        };
        match self.committer.run(db, dirs, log, f) {
            Ok(r) => Ok(r),
            Err((e, commit_failed)) => {
                if !commit_failed {
                    for p in &new_files {
                        files::remove(p);
                    }
                }
                Err(e)
            }
        }
    }

    /// Removes files no longer referenced by committed data (deferred while a backup runs).
    pub(crate) fn remove_files(&self, paths: Vec<PathBuf>) {
        let mut d = self.deletes.lock().unwrap_or_else(|e| e.into_inner());
        if d.backups > 0 {
            d.deferred.extend(paths);
        } else {
            for p in paths {
                files::remove(&p);
            }
        }
    }

    // ---- accounts ----

    /// Adds an account. Errors with [`StoreError::AccountExists`] if the name is taken.
    pub fn account_add(&self, name: &str, domain: &str) -> Result<(), StoreError> {
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
        self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(ACCOUNTS)?;
            if t.get(acc.name.as_str())?.is_some() {
                return Err(StoreError::AccountExists(acc.name));
            }
            t.insert(acc.name.as_str(), enc(&acc)?.as_slice())?;
            txn.open_table(USAGE)?.insert(acc.name.as_str(), 0)?;
            Ok(())
        })
    }

    /// Removes an account with its credentials, messages (records and files), indexes,
    /// suppression list and outgoing log. Queue entries it submitted stay queued.
    pub fn account_remove(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_string();
        let root = self.dir.clone();
        let ikeys = self.ikeys;
        let paths = self.write(vec![], vec![], move |txn| {
            let n = name.as_str();
            if txn.open_table(ACCOUNTS)?.get(n)?.is_none() {
                return Err(StoreError::NoAccount(name.clone()));
            }
            txn.open_table(ACCOUNTS)?.remove(n)?;
            txn.open_table(USAGE)?.remove(n)?;
            remove_prefix2(&mut txn.open_table(CREDENTIALS)?, n)?;
            remove_prefix2u(&mut txn.open_table(MAILBOXES)?, n)?;
            remove_prefix2(&mut txn.open_table(SUPPRESSIONS)?, n)?;
            {
                let mut t = txn.open_table(FAILURE_STREAKS)?;
                let mut keys: Vec<String> = Vec::new();
                for r in t.range((n, "")..)? {
                    let (k, _) = r?;
                    if k.value().0 != n {
                        break;
                    }
                    keys.push(k.value().1.to_string());
                }
                for k in keys {
                    t.remove((n, k.as_str()))?;
                }
            }
            {
                let mut t = txn.open_table(SENT_TO)?;
                let mut keys: Vec<String> = Vec::new();
                for r in t.range((n, "")..)? {
                    let (k, _) = r?;
                    let k = k.value();
                    if k.0 != n {
                        break;
                    }
                    keys.push(k.1.to_string());
                }
                for k in keys {
                    t.remove((n, k.as_str()))?;
                }
            }
            {
                let mut t = txn.open_table(OUTGOING)?;
                t.retain_in((n, i64::MIN, 0u64)..=(n, i64::MAX, u64::MAX), |_, _| false)?;
            }
            let ids: Vec<u64> = {
                let t = txn.open_table(ACCOUNT_MESSAGES)?;
                let v = t
                    .range((n, 0u64)..=(n, u64::MAX))?
                    .map(|r| r.map(|(k, _)| k.value().1))
                    .collect::<Result<_, _>>()?;
                v
            };
            txn.open_table(ACCOUNT_MESSAGES)?
                .retain_in((n, 0u64)..=(n, u64::MAX), |_, _| false)?;
            let mut msgs = txn.open_table(MESSAGES)?;
            let mut facts = txn.open_table(MSG_FACTS)?;
            let mut idx = txn.open_table(MSG_INDEX)?;
            let mut bodies = txn.open_table(MSG_BODIES)?;
            let mut paths = Vec::new();
            for id in ids {
                facts.remove(id)?;
                let had_file = bodies.remove(id)?.is_none();
                if let Some(g) = msgs.remove(id)? {
                    let r: MessageRecord = dec("messages", g.value())?;
                    // Its index entries are those its record makes.
                    for (kind, v) in index_entries(&r) {
                        let slot = ikeys.slot(&r.account, kind, &v);
                        idx.remove(crate::ikey::key(slot.hash, r.received.0, r.id.0))?;
                    }
                    if !r.expunged && had_file {
                        paths.push(files::path(&root, Area::Msg, id));
                    }
                }
            }
            Ok(paths)
        })?;
        self.remove_files(paths);
        Ok(())
    }

    /// All accounts, by name.
    pub fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(ACCOUNTS)?;
        let mut v = Vec::new();
        for r in t.iter()? {
            let (_, val) = r?;
            v.push(dec("accounts", val.value())?);
        }
        Ok(v)
    }

    /// One account.
    pub fn account(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(ACCOUNTS)?;
        let r = t.get(name)?;
        r.map(|g| dec("accounts", g.value())).transpose()
    }

    fn account_update(
        &self,
        name: &str,
        f: impl FnOnce(&mut Account) + Send + 'static,
    ) -> Result<(), StoreError> {
        let name = name.to_string();
        self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(ACCOUNTS)?;
            let mut acc: Account = match t.get(name.as_str())? {
                Some(g) => dec("accounts", g.value())?,
                None => return Err(StoreError::NoAccount(name)),
            };
            f(&mut acc);
            t.insert(name.as_str(), enc(&acc)?.as_slice())?;
            Ok(())
        })
    }

    /// Sets (`Some(message)`) or clears (`None`) the login-disabled message.
    pub fn account_set_login_disabled(
        &self,
        name: &str,
        message: Option<String>,
    ) -> Result<(), StoreError> {
        self.account_update(name, move |a| a.login_disabled = message)
    }

    /// Sets the quota in bytes (`None`: unlimited).
    pub fn account_set_quota(
        &self,
        name: &str,
        quota_bytes: Option<u64>,
    ) -> Result<(), StoreError> {
        self.account_update(name, move |a| a.quota_bytes = quota_bytes)
    }

    /// When `key` (a first-time sender) was first seen by `account`: the stored time, or
    /// `now`, stored durably for the next attempt.
    pub fn first_seen(
        &self,
        account: &str,
        key: &str,
        now: UnixTime,
    ) -> Result<UnixTime, StoreError> {
        {
            let rtx = self.read()?;
            let t = rtx.open_table(FIRST_SEEN)?;
            if let Some(g) = t.get((account, key))? {
                return Ok(UnixTime(g.value()));
            }
        }
        let (a, k) = (account.to_string(), key.to_string());
        self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(FIRST_SEEN)?;
            let first = t.get((a.as_str(), k.as_str()))?.map(|g| g.value());
            match first {
                Some(f) => Ok(UnixTime(f)),
                None => {
                    t.insert((a.as_str(), k.as_str()), now.0)?;
                    Ok(now)
                }
            }
        })
    }

    /// The account's subjectpass key: the stored one, or `fresh` (random bytes from the
    /// caller), stored now for the next time.
    pub fn account_subjectpass_key(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, StoreError> {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let unhex = |s: &str| -> Option<Vec<u8>> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
                .collect()
        };
        let a = self
            .account(name)?
            .ok_or_else(|| StoreError::NoAccount(name.to_string()))?;
        if let Some(k) = a.subjectpass_key.as_deref().and_then(unhex) {
            return Ok(k);
        }
        let k = hex(fresh);
        self.account_update(name, move |a| {
            if a.subjectpass_key.is_none() {
                a.subjectpass_key = Some(k.clone());
            }
        })?;
        // What was stored (another caller may have been first).
        self.account(name)?
            .and_then(|a| a.subjectpass_key.as_deref().and_then(unhex))
            .ok_or_else(|| StoreError::NoAccount(name.to_string()))
    }

    /// Bytes of (non-expunged) messages stored for the account, from a counter kept in the
    /// same transactions as the messages.
    pub fn account_usage(&self, name: &str) -> Result<u64, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(USAGE)?;
        let v = t.get(name)?.map(|g| g.value());
        v.ok_or_else(|| StoreError::NoAccount(name.to_string()))
    }

    /// Replaces all credentials of the account with `creds`: (kind, opaque bytes) pairs, e.g.
    /// ("scram-sha-256", salted password + salt + iterations) as serialized by core's SASL
    /// module. Never pass a plain password.
    pub fn set_credentials(
        &self,
        account: &str,
        creds: Vec<(String, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let name = account.to_string();
        self.write(vec![], vec![], move |txn| {
            if txn.open_table(ACCOUNTS)?.get(name.as_str())?.is_none() {
                return Err(StoreError::NoAccount(name));
            }
            let mut t = txn.open_table(CREDENTIALS)?;
            remove_prefix2(&mut t, &name)?;
            for (kind, bytes) in &creds {
                t.insert((name.as_str(), kind.as_str()), bytes.as_slice())?;
            }
            Ok(())
        })
    }

    /// The credential of `kind` for the account, if set.
    pub fn credentials(&self, account: &str, kind: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(CREDENTIALS)?;
        let v = t.get((account, kind))?.map(|g| g.value().to_vec());
        Ok(v)
    }

    // ---- delivery ----

    /// Stores one message in one account's mailbox. Returns once the bytes and the record
    /// are durable. Fails with [`StoreError::NoAccount`] or [`StoreError::QuotaExceeded`]
    /// without storing anything, or with a storage failure.
    pub fn deliver(&self, req: Delivery<'_>) -> Result<MessageId, StoreError> {
        self.deliver_many(vec![req])?
            .into_iter()
            .next()
            .ok_or(StoreError::Panicked)
    }

    /// Stores several deliveries (typically one message for several local recipients) in
    /// one commit: all are stored or none. Deliveries that share the same `message` slice
    /// share one file through hard links. Ids are returned in order.
    pub fn deliver_many(&self, reqs: Vec<Delivery<'_>>) -> Result<Vec<MessageId>, StoreError> {
        self.deliver_and_queue(reqs, None)
    }

    /// [`Store::deliver_many`], and in the same commit (all or nothing) queues `queued`, a
    /// message and its recipients, as [`Store::queue_add`] would: a DSN about the recipients
    /// that failed is durable exactly when the deliveries are.
    pub fn deliver_and_queue(
        &self,
        reqs: Vec<Delivery<'_>>,
        queued: Option<(&[u8], Vec<QueueRecipient>)>,
    ) -> Result<Vec<MessageId>, StoreError> {
        self.deliver_and_queue_ids(reqs, queued).map(|(m, _)| m)
    }

    /// [`Store::deliver_and_queue`], returning the queue entry ids too (in the order of the
    /// queued recipients).
    pub fn deliver_and_queue_ids(
        &self,
        reqs: Vec<Delivery<'_>>,
        queued: Option<(&[u8], Vec<QueueRecipient>)>,
    ) -> Result<(Vec<MessageId>, Vec<QueueId>), StoreError> {
        let w = self.prepare_delivery(reqs, queued)?;
        self.write_logged(w.new_files, w.dirs, w.log, w.work)
    }

    /// [`Store::deliver`] for a caller that must not block (an async runtime's thread),
    /// where that is possible: an account without a maildir, and either a message small
    /// enough to be kept in the database ([`INLINE_BODY_MAX`]) or one of at most
    /// [`SOON_FILE_MAX`] bytes whose file needs no sync of its own (the store syncs the file
    /// system once per batch: its file is written here, into the page cache, and made
    /// durable by the batch's `syncfs`). Its records are made here and its commit is
    /// queued; the returned future is ready once the delivery is durable, with what
    /// [`Store::deliver`] would return (a file written for a delivery that then failed is
    /// removed first). `None`: call [`Store::deliver`] where blocking is allowed.
    pub fn deliver_soon(
        &self,
        req: Delivery<'_>,
    ) -> Option<impl std::future::Future<Output = Result<MessageId, StoreError>> + Send + 'static>
    {
        let Db::Rw(db) = &self.db else {
            return None;
        };
        let size = req.head.len() + req.message.len();
        let file_ok = size <= SOON_FILE_MAX && self.committer.batch_syncs_files();
        if (size > INLINE_BODY_MAX && !file_ok) || self.maildir(&req.account).is_some() {
            return None;
        }
        let committer = Arc::downgrade(&self.committer);
        let wanted = self.committer.helper_flag();
        let database = Arc::downgrade(db);
        let started = self.committer.helper_started(|| {
            let t = commit_thread(committer, wanted, database)?;
            let thread = t.handle.thread().clone();
            *self.commit_thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
            Some(thread)
        });
        if !started {
            return None;
        }
        let committed = self
            .prepare_delivery(vec![req], None)
            .map(|w| (w.new_files, self.committer.submit(w.dirs, w.log, w.work)));
        Some(async move {
            let (new_files, committed) = committed?;
            match committed.await {
                Ok((ids, _)) => ids.into_iter().next().ok_or(StoreError::Panicked),
                Err((e, commit_failed)) => {
                    // As in `write_logged`: after a failed commit they may be referenced.
                    if !commit_failed {
                        for p in &new_files {
                            files::remove(p);
                        }
                    }
                    Err(e)
                }
            }
        })
    }

    /// The files, redo record and database work of a delivery (see
    /// [`Store::deliver_and_queue_ids`]): files are written (and synced, per the store's
    /// mode) here; the work runs in a batch of the committer.
    fn prepare_delivery(
        &self,
        reqs: Vec<Delivery<'_>>,
        queued: Option<(&[u8], Vec<QueueRecipient>)>,
    ) -> Result<PreparedWrite<Delivered>, StoreError> {
        if reqs.is_empty() && queued.is_none() {
            return Ok(PreparedWrite {
                new_files: Vec::new(),
                dirs: Vec::new(),
                log: None,
                work: Box::new(|_| Ok((Vec::new(), Vec::new()))),
            });
        }
        if queued.as_ref().is_some_and(|(_, r)| r.is_empty()) {
            return Err(StoreError::Invalid("queue_add without recipients".into()));
        }
        let n = reqs.len() as u64;
        let sync = !self.committer.batch_syncs_files();
        let first = self.counters.next_msg.fetch_add(n, Ordering::SeqCst);
        let mut new_files = Vec::new();
        let mut dirs = Vec::new();
        let mut recs = Vec::with_capacity(reqs.len());
        // Deliveries of the same bytes (one message for several recipients) share a file.
        type Key = (*const u8, usize, *const u8, usize);
        let key = |d: &Delivery<'_>| -> Key {
            (
                d.head.as_ptr(),
                d.head.len(),
                d.message.as_ptr(),
                d.message.len(),
            )
        };
        let mut written: Vec<(Key, u64)> = Vec::new();
        // Small messages go into the database with their records.
        let mut inline: Vec<(u64, Vec<u8>)> = Vec::new();
        // The redo record for the acceptance log: the same records and bytes.
        let bytes: usize = reqs
            .iter()
            .map(|d| d.head.len() + d.message.len())
            .sum::<usize>()
            + queued.as_ref().map_or(0, |(m, _)| m.len());
        let mut redo = (self.committer.logs() && bytes <= crate::alog::LOG_WRITE_MAX)
            .then(crate::alog::Redo::default);
        let result = (|| {
            for (i, d) in reqs.iter().enumerate() {
                let id = first + i as u64;
                let parts = [d.head, d.message];
                if d.head.len() + d.message.len() <= INLINE_BODY_MAX {
                    let bytes = [d.head, d.message].concat();
                    if let Some(r) = &mut redo {
                        r.inline(id, &bytes);
                    }
                    inline.push((id, bytes));
                } else {
                    let same = written.iter().find(|(k, _)| *k == key(d)).map(|w| w.1);
                    if let Some(r) = &mut redo {
                        match same {
                            Some(from) => r.link(Area::Msg, id, from),
                            None => r.file(Area::Msg, id, &parts),
                        }
                    }
                    let dir = match same {
                        Some(from) => files::link(&self.dir, Area::Msg, from, id, &parts, sync),
                        None => files::write(&self.dir, Area::Msg, id, &parts, sync),
                    };
                    new_files.push(files::path(&self.dir, Area::Msg, id));
                    let dir = dir?;
                    written.push((key(d), id));
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                }
                if let Some(md) = self.maildir(&d.account) {
                    let p = md.deliver(&d.mailbox, id, d.received.0, &parts, d.flags.seen)?;
                    // Written and synced, file and directory, by the maildir itself.
                    new_files.push(p);
                }
                let networks = d.info.remote_ip.map(ip_networks).unwrap_or_default();
                recs.push(MessageRecord {
                    id: MessageId(id),
                    account: d.account.clone(),
                    mailbox: d.mailbox.clone(),
                    received: d.received,
                    flags: d.flags,
                    size: (d.head.len() + d.message.len()) as u64,
                    info: d.info.clone(),
                    networks,
                    expunged: false,
                });
            }
            Ok(())
        })();
        let queue = match (result, queued) {
            (Err(e), _) => Err(e),
            (Ok(()), None) => Ok(None),
            (Ok(()), Some((msg, rcpts))) => {
                let (msg_id, qfirst) = self.queue_reserve(rcpts.len());
                let path = files::path(&self.dir, Area::Queue, msg_id);
                new_files.push(path);
                if let Some(r) = &mut redo {
                    r.file(Area::Queue, msg_id, &[msg]);
                }
                files::write(&self.dir, Area::Queue, msg_id, &[msg], sync).map(|dir| {
                    if !dirs.contains(&dir) {
                        dirs.push(dir);
                    }
                    Some((msg_id, msg.len() as u64, qfirst, rcpts))
                })
            }
        };
        let queue = match queue {
            Ok(q) => q,
            Err(e) => {
                for p in &new_files {
                    files::remove(p);
                }
                return Err(e);
            }
        };
        let log = match redo {
            None => None,
            Some(r) => {
                let q = queue
                    .as_ref()
                    .map(|(msg_id, size, first, rcpts)| (*msg_id, *size, *first, rcpts.as_slice()));
                match r.finish(&recs, q) {
                    Ok(b) => Some(b),
                    Err(e) => {
                        for p in &new_files {
                            files::remove(p);
                        }
                        return Err(e);
                    }
                }
            }
        };
        let bloom = self.bloom.clone();
        let ikeys = self.ikeys;
        let overlay = Arc::clone(&self.overlay);
        Ok(PreparedWrite {
            new_files,
            dirs,
            log,
            work: Box::new(move |txn| {
                let ids = deliver_txn(txn, &recs, ikeys, bloom.as_deref(), Some(&overlay))?;
                if !inline.is_empty() {
                    let mut bodies = txn.open_table(MSG_BODIES)?;
                    for (id, bytes) in &inline {
                        bodies.insert(*id, bytes.as_slice())?;
                    }
                }
                let queued = match queue {
                    Some((msg_id, size, first, rcpts)) => {
                        crate::queue::queue_add_txn(txn, msg_id, size, first, rcpts)?
                    }
                    None => Vec::new(),
                };
                Ok((ids, queued))
            }),
        })
    }

    // ---- messages ----

    /// Records of the account's messages (including expunged ones), by id.
    pub fn messages(&self, account: &str) -> Result<Vec<MessageRecord>, StoreError> {
        let rtx = self.read()?;
        let am = rtx.open_table(ACCOUNT_MESSAGES)?;
        let msgs = rtx.open_table(MESSAGES)?;
        let mut v = Vec::new();
        for r in am.range((account, 0u64)..=(account, u64::MAX))? {
            let (k, _) = r?;
            if let Some(g) = msgs.get(k.value().1)? {
                v.push(dec("messages", g.value())?);
            }
        }
        Ok(v)
    }

    /// One message's record.
    pub fn message(&self, id: MessageId) -> Result<Option<MessageRecord>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(MESSAGES)?;
        let r = t.get(id.0)?;
        r.map(|g| dec("messages", g.value())).transpose()
    }

    /// The bytes of a stored, non-expunged message.
    pub fn message_bytes(&self, id: MessageId) -> Result<Vec<u8>, StoreError> {
        match self.message(id)? {
            Some(r) if !r.expunged => self.body(id),
            _ => Err(StoreError::NoMessage(id)),
        }
    }

    /// A message's bytes, from the database ([`INLINE_BODY_MAX`]) or its file; no check of
    /// its record.
    pub(crate) fn body(&self, id: MessageId) -> Result<Vec<u8>, StoreError> {
        let inline = {
            let rtx = self.read()?;
            let t = rtx.open_table(MSG_BODIES)?;
            let v = t.get(id.0)?.map(|g| g.value().to_vec());
            v
        };
        match inline {
            Some(b) => Ok(b),
            None => files::read(&self.dir, Area::Msg, id.0),
        }
    }

    /// Mailbox names of the account (created on delivery).
    pub fn mailboxes(&self, account: &str) -> Result<Vec<String>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(MAILBOXES)?;
        let mut v = Vec::new();
        for r in t.range((account, "")..)? {
            let (k, _) = r?;
            let (a, m) = k.value();
            if a != account {
                break;
            }
            v.push(m.to_string());
        }
        Ok(v)
    }

    /// Sets a message's flags (e.g. the user marks it junk or not junk).
    pub fn set_flags(&self, id: MessageId, flags: Flags) -> Result<(), StoreError> {
        let ikeys = self.ikeys;
        self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(MESSAGES)?;
            let mut r = record_of(&t, id)?;
            r.flags = flags;
            t.insert(id.0, enc(&r)?.as_slice())?;
            put_facts(&mut txn.open_table(MSG_FACTS)?, &r)?;
            put_index(&mut txn.open_table(MSG_INDEX)?, ikeys, None, &r)?;
            Ok(())
        })
    }

    /// Moves a message (not expunged) to `mailbox` of its account, created on demand; the
    /// account's maildir copy moves too (written to the new folder, then removed from the
    /// old). Returns the mailbox it was in; moving to where it is changes nothing.
    pub fn message_move(&self, id: MessageId, mailbox: &str) -> Result<String, StoreError> {
        if mailbox.is_empty() || mailbox.len() > 200 || mailbox.contains(['\0', '\r', '\n']) {
            return Err(StoreError::Invalid(format!("mailbox name {mailbox:?}")));
        }
        let to = mailbox.to_string();
        let ikeys = self.ikeys;
        let bloom = self.bloom.clone();
        let moved = self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(MESSAGES)?;
            let mut r = record_of(&t, id)?;
            if r.expunged {
                return Err(StoreError::NoMessage(id));
            }
            let from = std::mem::replace(&mut r.mailbox, to.clone());
            if from == to {
                return Ok((from, None));
            }
            t.insert(id.0, enc(&r)?.as_slice())?;
            put_facts(&mut txn.open_table(MSG_FACTS)?, &r)?;
            let mut ix = txn.open_table(MSG_INDEX)?;
            let code = IndexKind::Mailbox.code();
            let old = ikeys.slot(&r.account, code, &normalize(IndexKind::Mailbox, &from));
            ix.remove(crate::ikey::key(old.hash, r.received.0, id.0))?;
            put_index(&mut ix, ikeys, bloom.as_deref(), &r)?;
            txn.open_table(MAILBOXES)?
                .insert((r.account.as_str(), to.as_str()), ())?;
            Ok((from, Some(r)))
        })?;
        let (from, rec) = moved;
        if let Some(r) = rec {
            if let Some(md) = self.maildir(&r.account) {
                let bytes = self.message_bytes(id)?;
                md.deliver(&r.mailbox, id.0, r.received.0, &[&bytes], r.flags.seen)?;
                md.remove(&from, id.0)?;
            }
        }
        Ok(from)
    }

    /// Expunges a message: its bytes are removed and no longer count for the quota; the
    /// record and its index entries stay for reputation.
    pub fn expunge(&self, id: MessageId) -> Result<(), StoreError> {
        // Its junk filter training goes with its bytes (untrained from them, first).
        if self.junk_trained(id)?.is_some() {
            self.junk_set_class(id, None, &rmox_core::junk::Params::default())?;
        }
        let ikeys = self.ikeys;
        let removed = self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(MESSAGES)?;
            let mut r = record_of(&t, id)?;
            if r.expunged {
                return Ok(None);
            }
            r.expunged = true;
            t.insert(id.0, enc(&r)?.as_slice())?;
            let had_file = txn.open_table(MSG_BODIES)?.remove(id.0)?.is_none();
            let mb = normalize(IndexKind::Mailbox, &r.mailbox);
            let slot = ikeys.slot(&r.account, IndexKind::Mailbox.code(), &mb);
            txn.open_table(MSG_INDEX)?
                .remove(crate::ikey::key(slot.hash, r.received.0, id.0))?;
            let mut u = txn.open_table(USAGE)?;
            let used = u.get(r.account.as_str())?.map(|g| g.value()).unwrap_or(0);
            u.insert(r.account.as_str(), used.saturating_sub(r.size))?;
            Ok(Some((r.account, r.mailbox, had_file)))
        })?;
        if let Some((account, mailbox, had_file)) = removed {
            if had_file {
                self.remove_files(vec![files::path(&self.dir, Area::Msg, id.0)]);
            }
            if let Some(md) = self.maildir(&account) {
                md.remove(&mailbox, id.0)?;
            }
        }
        Ok(())
    }

    /// Expunges the messages of `account`'s `mailbox` received before `before`, oldest
    /// first, at most `max`; returns how many. Through the mailbox index: the cost is that
    /// of the messages removed.
    pub fn mailbox_expunge_before(
        &self,
        account: &str,
        mailbox: &str,
        before: UnixTime,
        max: usize,
    ) -> Result<usize, StoreError> {
        let mb = normalize(IndexKind::Mailbox, mailbox);
        let slot = self.ikeys.slot(account, IndexKind::Mailbox.code(), &mb);
        let ids: Vec<MessageId> = {
            let range = crate::ikey::range(slot.hash, i64::MIN, Some(before.0));
            let mut ids = Vec::new();
            self.index_scan(range, false, |k, e| {
                if ids.len() >= max {
                    return false;
                }
                if e.check == slot.check {
                    ids.push(MessageId(k.2));
                }
                true
            })?;
            ids
        };
        for id in &ids {
            self.expunge(*id)?;
        }
        Ok(ids.len())
    }

    // ---- indexes ----

    /// Messages of `account` indexed under (`kind`, `value`) received at or after `since`,
    /// newest first, at most `limit`. A range scan: cost grows with the answer, not with the
    /// account. `value` is normalised like the index (lowercase; Message-ID without `<>`).
    pub fn lookup(
        &self,
        account: &str,
        kind: IndexKind,
        value: &str,
        since: UnixTime,
        limit: usize,
    ) -> Result<Vec<IndexHit>, StoreError> {
        let Some(slot) = self.index_slot(account, kind, value) else {
            return Ok(Vec::new());
        };
        let mut ids = Vec::new();
        self.index_scan(
            crate::ikey::range(slot.hash, since.0, None),
            true,
            |k, e| {
                if ids.len() >= limit {
                    return false;
                }
                if e.check == slot.check {
                    ids.push(k.2);
                }
                true
            },
        )?;
        let rtx = self.read()?;
        let msgs = rtx.open_table(MESSAGES)?;
        let mut hits = Vec::new();
        for id in ids {
            if let Some(g) = msgs.get(id)? {
                let rec: MessageRecord = dec("messages", g.value())?;
                hits.push(IndexHit {
                    id: rec.id,
                    received: rec.received,
                    flags: rec.flags,
                    mailbox: rec.mailbox,
                    expunged: rec.expunged,
                    size: rec.size,
                });
            }
        }
        Ok(hits)
    }

    /// Reputation's view of `account`'s history: the newest messages (at most `limit`)
    /// indexed under (`kind`, `value`) since `since`, newest first, leaving out those in
    /// mailbox `skip_mailbox` (the rejects mailbox: what was refused is not evidence) and,
    /// with `from_validated`, those whose From was (not) validated by DMARC. An index range
    /// read backwards: at most [`HISTORY_SCAN_FACTOR`] × `limit` entries are looked at, so
    /// the cost does not grow with the account's history.
    #[allow(clippy::too_many_arguments)]
    pub fn history(
        &self,
        account: &str,
        kind: IndexKind,
        value: &str,
        since: UnixTime,
        limit: usize,
        from_validated: Option<bool>,
        skip_mailbox: Option<&str>,
    ) -> Result<Vec<HistoryHit>, StoreError> {
        let Some(slot) = self.index_slot(account, kind, value) else {
            return Ok(Vec::new());
        };
        let mut hits = Vec::new();
        let mut scan = limit.saturating_mul(HISTORY_SCAN_FACTOR);
        self.index_scan(
            crate::ikey::range(slot.hash, since.0, None),
            true,
            |_, e| {
                if hits.len() >= limit || scan == 0 {
                    return false;
                }
                scan -= 1;
                if e.check != slot.check {
                    return true;
                }
                if skip_mailbox.is_some_and(|m| m == e.mailbox) {
                    return true;
                }
                let validated = e.bits & 2 != 0;
                if from_validated.is_some_and(|want| want != validated) {
                    return true;
                }
                hits.push(HistoryHit {
                    junk: e.bits & 1 != 0,
                    from_localpart: (!e.localpart.is_empty()).then(|| e.localpart.to_string()),
                });
                true
            },
        )?;
        Ok(hits)
    }

    /// How many messages of `account` are indexed under (`kind`, `value`) since `since`
    /// (e.g. deliveries from this /26 in the last minute).
    pub fn count_since(
        &self,
        account: &str,
        kind: IndexKind,
        value: &str,
        since: UnixTime,
    ) -> Result<u64, StoreError> {
        let Some(slot) = self.index_slot(account, kind, value) else {
            return Ok(0);
        };
        let mut n = 0;
        self.index_scan(
            crate::ikey::range(slot.hash, since.0, None),
            false,
            |_, e| {
                if e.check == slot.check {
                    n += 1;
                }
                true
            },
        )?;
        Ok(n)
    }

    /// Calls `f` with the index entries whose keys are in `range`, from the table and from
    /// the entries still in memory ([`crate::overlay`]), in key order (`descending`: newest
    /// first), each once, until `f` returns false.
    fn index_scan(
        &self,
        range: std::ops::Range<crate::overlay::Key>,
        descending: bool,
        mut f: impl FnMut(crate::overlay::Key, IndexEntryRef<'_>) -> bool,
    ) -> Result<(), StoreError> {
        // Both under one hold: they show the same commits.
        let (extra, rtx) = {
            let _view = self.overlay.view();
            (self.overlay.range(range.clone()), self.read()?)
        };
        let idx = rtx.open_table(MSG_INDEX)?;
        let rows = idx.range(range)?;
        let rows: Box<dyn Iterator<Item = _>> = if descending {
            Box::new(rows.rev())
        } else {
            Box::new(rows)
        };
        let mut extra = if descending {
            Box::new(extra.into_iter().rev()) as Box<dyn Iterator<Item = _>>
        } else {
            Box::new(extra.into_iter())
        }
        .peekable();
        let before = |a: &crate::overlay::Key, b: &crate::overlay::Key| {
            if descending {
                a > b
            } else {
                a < b
            }
        };
        for row in rows {
            let (k, v) = row?;
            let key = k.value();
            // Entries only in memory that come before this row.
            while let Some((ek, e)) = extra.next_if(|(ek, _)| before(ek, &key)) {
                if !f(ek, IndexEntryRef::of(&e)) {
                    return Ok(());
                }
            }
            if extra.peek().is_some_and(|(ek, _)| *ek == key) {
                // Flushed but not yet forgotten: the table's copy.
                extra.next();
            }
            let (bits, check, mailbox, localpart) = v.value();
            let e = IndexEntryRef {
                bits,
                check,
                mailbox,
                localpart,
            };
            if !f(key, e) {
                return Ok(());
            }
        }
        for (ek, e) in extra {
            if !f(ek, IndexEntryRef::of(&e)) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The index slot of (`account`, `kind`, `value`), or `None` when no message was ever
    /// indexed under it (the Bloom filter says so; a read-only store always reads).
    fn index_slot(&self, account: &str, kind: IndexKind, value: &str) -> Option<crate::ikey::Slot> {
        let slot = self
            .ikeys
            .slot(account, kind.code(), &normalize(kind, value));
        self.bloom
            .as_ref()
            .is_none_or(|b| b.may_contain(slot))
            .then_some(slot)
    }
}

/// An index entry's value as [`Store::index_scan`] shows it.
#[derive(Clone, Copy)]
struct IndexEntryRef<'a> {
    bits: u8,
    check: u64,
    mailbox: &'a str,
    localpart: &'a str,
}

impl<'a> IndexEntryRef<'a> {
    fn of(e: &'a crate::overlay::Entry) -> IndexEntryRef<'a> {
        IndexEntryRef {
            bits: e.bits,
            check: e.check,
            mailbox: &e.names.mailbox,
            localpart: &e.names.localpart,
        }
    }
}

fn remove_prefix2(t: &mut redb::Table<(&str, &str), &[u8]>, n: &str) -> Result<(), StoreError> {
    let mut keys: Vec<String> = Vec::new();
    for r in t.range((n, "")..)? {
        let (k, _) = r?;
        let k = k.value();
        if k.0 != n {
            break;
        }
        keys.push(k.1.to_string());
    }
    for k in keys {
        t.remove((n, k.as_str()))?;
    }
    Ok(())
}

fn remove_prefix2u(t: &mut redb::Table<(&str, &str), ()>, n: &str) -> Result<(), StoreError> {
    let mut keys: Vec<String> = Vec::new();
    for r in t.range((n, "")..)? {
        let (k, _) = r?;
        let k = k.value();
        if k.0 != n {
            break;
        }
        keys.push(k.1.to_string());
    }
    for k in keys {
        t.remove((n, k.as_str()))?;
    }
    Ok(())
}

/// Normalises an index value: Message-IDs lose surrounding `<>` and space, everything else
/// is lowercased.
pub fn normalize(kind: IndexKind, value: &str) -> String {
    match kind {
        IndexKind::MessageId => value
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
        _ => value.trim().to_ascii_lowercase(),
    }
}

/// The masked networks of an address, as indexed: /32, /26, /21 for IPv4 and /64, /48, /32
/// for IPv6 (an IPv4-mapped IPv6 address counts as IPv4), e.g. `192.0.2.64/26`.
pub fn ip_networks(ip: IpAddr) -> Vec<String> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let x = u32::from(v4);
            [32u32, 26, 21]
                .iter()
                .map(|&p| {
                    let mask = u32::MAX.checked_shl(32 - p).unwrap_or(0);
                    format!("{}/{p}", std::net::Ipv4Addr::from(x & mask))
                })
                .collect()
        }
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            [64u32, 48, 32]
                .iter()
                .map(|&p| {
                    let mask = u128::MAX.checked_shl(128 - p).unwrap_or(0);
                    format!("{}/{p}", std::net::Ipv6Addr::from(x & mask))
                })
                .collect()
        }
    }
}

/// Message `id`'s record from the messages table; [`StoreError::NoMessage`] without one.
fn record_of(
    t: &impl ReadableTable<u64, &'static [u8]>,
    id: MessageId,
) -> Result<MessageRecord, StoreError> {
    match t.get(id.0)? {
        Some(g) => dec("messages", g.value()),
        None => Err(StoreError::NoMessage(id)),
    }
}

/// The reputation facts of a message record: bits (junk, DMARC-validated From), its
/// mailbox, its From local part.
pub(crate) fn facts_of(r: &MessageRecord) -> (u8, &str, String) {
    let bits =
        u8::from(r.flags.junk) | (u8::from(r.info.from_validation == Validation::Dmarc) << 1);
    (
        bits,
        r.mailbox.as_str(),
        from_localpart(r).unwrap_or_default(),
    )
}

/// Writes the reputation facts of a message record ([`MSG_FACTS`]).
fn put_facts(t: &mut redb::Table<'_, u64, Facts>, r: &MessageRecord) -> Result<(), StoreError> {
    let (bits, mailbox, lp) = facts_of(r);
    t.insert(r.id.0, (bits, mailbox, lp.as_str()))?;
    Ok(())
}

/// Writes message `r`'s index entries with its current facts (after a change of its flags
/// or mailbox); the mailbox entry of an expunged message stays removed.
/// Writes the index entries of a message record, adding their slots to `bloom` (before the
/// commit, so a reader that sees the commit finds them there too).
pub(crate) fn put_index(
    idx: &mut redb::Table<'_, (u64, u64, u64), IndexFacts>,
    keys: IndexKeyer,
    bloom: Option<&crate::bloom::IndexBloom>,
    r: &MessageRecord,
) -> Result<(), StoreError> {
    put_index_via(idx, keys, bloom, None, r)
}

/// [`put_index`], or into `overlay` while it stages a logged batch's entries.
fn put_index_via(
    idx: &mut redb::Table<'_, (u64, u64, u64), IndexFacts>,
    keys: IndexKeyer,
    bloom: Option<&crate::bloom::IndexBloom>,
    overlay: Option<&Overlay>,
    r: &MessageRecord,
) -> Result<(), StoreError> {
    let (bits, mailbox, lp) = facts_of(r);
    let overlay = overlay.filter(|o| o.staging());
    // Staged: one shared copy of the names, one hand-over for the message's entries.
    let names = overlay.map(|_| {
        Arc::new(crate::overlay::Names {
            mailbox: mailbox.to_string(),
            localpart: lp.clone(),
        })
    });
    let mut staged = Vec::new();
    for (k, v) in index_entries(r) {
        if r.expunged && k == IndexKind::Mailbox.code() {
            continue;
        }
        let slot = keys.slot(&r.account, k, &v);
        if let Some(b) = bloom {
            b.insert(slot);
        }
        let key = crate::ikey::key(slot.hash, r.received.0, r.id.0);
        match &names {
            Some(names) => staged.push((
                key,
                crate::overlay::Entry {
                    bits,
                    check: slot.check,
                    names: Arc::clone(names),
                },
            )),
            None => {
                idx.insert(key, (bits, slot.check, mailbox, lp.as_str()))?;
            }
        }
    }
    if let Some(o) = overlay {
        o.stage(staged);
    }
    Ok(())
}

/// The From local part of a message record, lowercase.
fn from_localpart(r: &MessageRecord) -> Option<String> {
    r.info
        .from_address
        .as_deref()
        .and_then(|a| a.rsplit_once('@'))
        .map(|(l, _)| l.to_ascii_lowercase())
}

/// Fills [`MSG_FACTS`] from the message records when it holds fewer entries than there are
/// messages (a database from before the table); how many were written.
pub(crate) fn fill_facts(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let msgs = txn.open_table(MESSAGES)?;
    let mut facts = txn.open_table(MSG_FACTS)?;
    if facts.len()? >= msgs.len()? {
        return Ok(0);
    }
    let mut n = 0;
    for row in msgs.iter()? {
        let (_, v) = row?;
        let r: MessageRecord = dec("messages", v.value())?;
        put_facts(&mut facts, &r)?;
        n += 1;
    }
    Ok(n)
}

/// The Bloom filter of the message index's keys, from the index.
fn index_bloom(db: &Database) -> Result<crate::bloom::IndexBloom, StoreError> {
    let rtx = db.begin_read()?;
    let idx = rtx.open_table(MSG_INDEX)?;
    let n = idx.len()? as usize;
    let b = crate::bloom::IndexBloom::with_capacity(n);
    for r in idx.iter()? {
        let (k, v) = r?;
        b.insert(crate::ikey::Slot {
            hash: k.value().0,
            check: v.value().1,
        });
    }
    Ok(b)
}

/// The (kind code, normalised value) index entries of a message record, sorted, without
/// duplicates: what every backend indexes a message under.
pub fn index_entries(r: &MessageRecord) -> Vec<(u8, String)> {
    let mut v: Vec<(u8, String)> = Vec::new();
    let mut add = |k: IndexKind, s: &str| {
        if !s.is_empty() {
            v.push((k.code(), normalize(k, s)));
        }
    };
    for n in &r.networks {
        add(IndexKind::Network, n);
    }
    add(IndexKind::Mailbox, &r.mailbox);
    if let Some(mf) = &r.info.mail_from {
        add(IndexKind::MailFrom, mf);
        if let Some((_, d)) = mf.rsplit_once('@') {
            add(IndexKind::MailFromDomain, d);
        }
    }
    if let Some(d) = &r.info.from_domain {
        add(IndexKind::FromDomain, d);
    }
    if let Some(a) = &r.info.from_address {
        add(IndexKind::FromAddress, a);
    }
    if let Some(d) = &r.info.from_org_domain {
        add(IndexKind::FromOrgDomain, d);
    }
    for d in &r.info.dkim_domains {
        add(IndexKind::DkimDomain, d);
    }
    if let Some(e) = &r.info.ehlo {
        add(IndexKind::Ehlo, e);
    }
    if let Some(m) = &r.info.message_id {
        add(IndexKind::MessageId, m);
    }
    v.sort();
    v.dedup();
    v
}

/// Inserts message records with their index entries, mailboxes and usage counters. Checks
/// accounts and quotas first, so a refusal changes nothing.
pub(crate) fn deliver_txn(
    txn: &WriteTransaction,
    recs: &[MessageRecord],
    keys: IndexKeyer,
    bloom: Option<&crate::bloom::IndexBloom>,
    overlay: Option<&Overlay>,
) -> Result<Vec<MessageId>, StoreError> {
    let mut per_account: BTreeMap<&str, u64> = BTreeMap::new();
    for r in recs {
        *per_account.entry(r.account.as_str()).or_default() += r.size;
    }
    let mut new_usage = Vec::new();
    {
        let accounts = txn.open_table(ACCOUNTS)?;
        let usage = txn.open_table(USAGE)?;
        for (acc, size) in &per_account {
            let a: Account = match accounts.get(*acc)? {
                Some(g) => dec("accounts", g.value())?,
                None => return Err(StoreError::NoAccount(acc.to_string())),
            };
            let used = usage.get(*acc)?.map(|g| g.value()).unwrap_or(0);
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
            new_usage.push((*acc, used.saturating_add(*size)));
        }
    }
    let mut msgs = txn.open_table(MESSAGES)?;
    let mut am = txn.open_table(ACCOUNT_MESSAGES)?;
    let mut mb = txn.open_table(MAILBOXES)?;
    let mut idx = txn.open_table(MSG_INDEX)?;
    let mut facts = txn.open_table(MSG_FACTS)?;
    for r in recs {
        msgs.insert(r.id.0, enc(r)?.as_slice())?;
        put_facts(&mut facts, r)?;
        am.insert((r.account.as_str(), r.id.0), ())?;
        // Most deliveries go to a mailbox that exists: a lookup, not a page rewritten.
        let mailbox = (r.account.as_str(), r.mailbox.as_str());
        if mb.get(mailbox)?.is_none() {
            mb.insert(mailbox, ())?;
        }
        put_index_via(&mut idx, keys, bloom, overlay, r)?;
    }
    let mut usage = txn.open_table(USAGE)?;
    for (acc, n) in new_usage {
        usage.insert(acc, n)?;
    }
    Ok(recs.iter().map(|r| r.id).collect())
}

/// Opens the acceptance log and applies, in `txn` (committed durably by the caller), every
/// record the database does not hold yet; files it writes are made durable here. Returns
/// the log, ready to append after them.
fn replay(
    txn: &WriteTransaction,
    dir: &Path,
    keys: IndexKeyer,
    syncfs_root: Option<&Path>,
) -> Result<crate::alog::Log, StoreError> {
    let (mut log, records) = crate::alog::Log::open(dir)?;
    let done = txn
        .open_table(META)?
        .get(K_LOG_DONE)?
        .map(|g| g.value())
        .unwrap_or(0);
    let mut last = done;
    let mut dirs = std::collections::BTreeSet::new();
    for r in crate::alog::live(records).iter().filter(|r| r.seq > done) {
        match crate::alog::apply(txn, dir, &r.payload, keys, &mut dirs) {
            Ok(()) => {}
            // Refused when it was written (no such account, over quota), and the crash
            // came before its cancel record was durable: refused again, nothing applied.
            Err(StoreError::NoAccount(_) | StoreError::QuotaExceeded { .. }) => {}
            Err(e) => return Err(e),
        }
        last = r.seq;
    }
    if last > done {
        match syncfs_root {
            Some(root) => files::sync_fs(root)?,
            None => {
                for d in &dirs {
                    files::sync_dir(d)?;
                }
            }
        }
    }
    crate::group::record_log_done(txn, last)?;
    log.restart(last + 1);
    Ok(log)
}

impl Drop for Store {
    /// Closing: a last checkpoint, so the next open has nothing to replay.
    /// The commit thread ends before the database is closed: a thread still holding it
    /// would keep it open past this drop (a reopen of the directory would then find it
    /// open, and its late close would write to a database opened anew).
    fn drop(&mut self) {
        if self.committer.log_pending() {
            let _ = self.write(Vec::new(), Vec::new(), |_| Ok(()));
        }
        let t = self
            .commit_thread
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(t) = t {
            t.stop.store(true, Ordering::SeqCst);
            t.handle.thread().unpark();
            let _ = t.handle.join();
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<Store>();
}

#[allow(unused_imports)]
use ReadableTableMetadata as _;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SentTo;
    use std::net::Ipv4Addr;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("data")).unwrap();
        (d, s)
    }

    fn delivery<'a>(account: &str, mailbox: &str, msg: &'a [u8], t: i64) -> Delivery<'a> {
        Delivery {
            account: account.into(),
            mailbox: mailbox.into(),
            head: &[],
            message: msg,
            flags: Flags::default(),
            received: UnixTime(t),
            info: MessageInfo {
                remote_ip: Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77))),
                ehlo: Some("Mail.Example.org".into()),
                mail_from: Some("Bob@Example.ORG".into()),
                mail_from_validation: Validation::Pass,
                from_domain: Some("example.org".into()),
                dkim_domains: vec!["example.org".into(), "esp.example".into()],
                message_id: Some("<abc@example.org>".into()),
                ..Default::default()
            },
        }
    }

    /// A delivery from a caller that must not block: ready once durable, readable like any
    /// other, refused alone when its account is missing; a message that needs a file of its
    /// own is left to `deliver`.
    #[test]
    fn deliver_soon_commits_and_refuses() {
        let (d, s) = store();
        s.account_add("a", "example.org").unwrap();
        let msg = b"Subject: soon\r\n\r\nbody\r\n".to_vec();
        let f = s.deliver_soon(delivery("a", "Inbox", &msg, 100)).unwrap();
        let id = futures_lite::future::block_on(f).unwrap();
        assert_eq!(s.message_bytes(id).unwrap(), msg);
        let f = s
            .deliver_soon(delivery("nobody", "Inbox", &msg, 100))
            .unwrap();
        assert!(matches!(
            futures_lite::future::block_on(f),
            Err(StoreError::NoAccount(_))
        ));
        // Over the bound for a file written on the caller's thread: not offered.
        let huge = vec![b'x'; SOON_FILE_MAX + 1];
        assert!(s.deliver_soon(delivery("a", "Inbox", &huge, 100)).is_none());
        // Durable: the message is there after a reopen.
        drop(s);
        let s = Store::open(&d.path().join("data")).unwrap();
        assert_eq!(s.message_bytes(id).unwrap(), msg);
    }

    /// Dropping a store ends its commit thread first, so the database is closed when the
    /// drop returns: reopening the directory at once never finds it still open.
    #[test]
    fn drop_ends_the_commit_thread_before_closing() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        let msg = b"Subject: soon\r\n\r\nbody\r\n".to_vec();
        Store::open(&data)
            .unwrap()
            .account_add("a", "example.org")
            .unwrap();
        for i in 0..200 {
            let s = Store::open(&data).unwrap_or_else(|e| panic!("reopen {i}: {e}"));
            let f = s.deliver_soon(delivery("a", "Inbox", &msg, 100)).unwrap();
            futures_lite::future::block_on(f).unwrap();
        }
    }

    /// A message with a file of its own, delivered by `deliver_soon` where the store syncs
    /// the file system per batch (the default here): written, committed and durable; a
    /// refused one leaves no file; with per-file fsync it is not offered (its fsync would
    /// block the caller).
    #[test]
    fn deliver_soon_writes_a_file_and_removes_a_refused_one() {
        let msg_files = |data: &Path| -> usize {
            let mut n = 0;
            let mut dirs = vec![data.join(Area::Msg.dir_name())];
            while let Some(d) = dirs.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.path().is_dir() {
                        dirs.push(e.path());
                    } else {
                        n += 1;
                    }
                }
            }
            n
        };
        let (d, s) = store();
        let data = d.path().join("data");
        assert!(s.committer.batch_syncs_files(), "this test needs syncfs");
        s.account_add("a", "example.org").unwrap();
        let big = vec![b'y'; INLINE_BODY_MAX + 1];
        let f = s.deliver_soon(delivery("a", "Inbox", &big, 100)).unwrap();
        let id = futures_lite::future::block_on(f).unwrap();
        assert_eq!(msg_files(&data), 1);
        let f = s
            .deliver_soon(delivery("nobody", "Inbox", &big, 100))
            .unwrap();
        assert!(matches!(
            futures_lite::future::block_on(f),
            Err(StoreError::NoAccount(_))
        ));
        assert_eq!(
            msg_files(&data),
            1,
            "the refused delivery's file is removed"
        );
        drop(s);
        let s = Store::open(&data).unwrap();
        assert_eq!(s.message_bytes(id).unwrap(), big);
        drop(s);
        let s = Store::open_with(&data, true, false, false, |p| {
            Ok(redb::Builder::new().create(p)?)
        })
        .unwrap();
        assert!(s.deliver_soon(delivery("a", "Inbox", &big, 100)).is_none());
    }

    #[test]
    fn networks() {
        let cases: &[(&str, &[&str])] = &[
            (
                "192.0.2.77",
                &["192.0.2.77/32", "192.0.2.64/26", "192.0.0.0/21"],
            ),
            (
                "::ffff:10.1.2.3",
                &["10.1.2.3/32", "10.1.2.0/26", "10.1.0.0/21"],
            ),
            (
                "2001:db8:1:2:3::4",
                &["2001:db8:1:2::/64", "2001:db8:1::/48", "2001:db8::/32"],
            ),
        ];
        for (ip, want) in cases {
            assert_eq!(ip_networks(ip.parse().unwrap()), *want, "{ip}");
        }
    }

    #[test]
    fn accounts_and_credentials() {
        let (_d, s) = store();
        s.account_add("mjl", "example.org").unwrap();
        assert!(matches!(
            s.account_add("mjl", "x"),
            Err(StoreError::AccountExists(_))
        ));
        assert!(matches!(
            s.account_add("", "x"),
            Err(StoreError::Invalid(_))
        ));
        s.account_add("other", "example.com").unwrap();
        let names: Vec<String> = s.accounts().unwrap().into_iter().map(|a| a.name).collect();
        assert_eq!(names, ["mjl", "other"]);
        s.account_set_login_disabled("mjl", Some("moved".into()))
            .unwrap();
        s.account_set_quota("mjl", Some(1000)).unwrap();
        let a = s.account("mjl").unwrap().unwrap();
        assert_eq!(a.login_disabled.as_deref(), Some("moved"));
        assert_eq!(a.quota_bytes, Some(1000));
        assert!(matches!(
            s.account_set_quota("nobody", None),
            Err(StoreError::NoAccount(_))
        ));
        s.set_credentials(
            "mjl",
            vec![
                ("scram-sha-256".into(), vec![1, 2]),
                ("cram-md5".into(), vec![3]),
            ],
        )
        .unwrap();
        assert_eq!(
            s.credentials("mjl", "scram-sha-256").unwrap(),
            Some(vec![1, 2])
        );
        s.set_credentials("mjl", vec![("scram-sha-1".into(), vec![9])])
            .unwrap();
        assert_eq!(s.credentials("mjl", "scram-sha-256").unwrap(), None);
        assert_eq!(s.credentials("mjl", "scram-sha-1").unwrap(), Some(vec![9]));
        assert_eq!(s.credentials("other", "scram-sha-1").unwrap(), None);
        assert!(s.set_credentials("nobody", vec![]).is_err());
    }

    fn queued_rcpt(to: &str) -> QueueRecipient {
        QueueRecipient {
            sender_account: None,
            mail_from: String::new(),
            recipient: to.into(),
            has_8bit: false,
            smtputf8: false,
            requiretls: RequireTls::Default,
            transport: None,
            next_attempt: UnixTime(5),
            queued: UnixTime(5),
            hold: false,
            dsn: DsnParams::default(),
            is_dsn: true,
            from_id: None,
        }
    }

    /// Issue 12: the DSN about failed recipients and the deliveries to the others are one
    /// commit: both are there, or (a delivery refused) neither.
    /// A spooled message comes in two parts (our header fields, then a memory map of the
    /// spool file): the file holds both in order, shared by the recipients, and the size
    /// counts both.
    #[test]
    fn delivery_head_and_message_parts() {
        let (_d, s) = store();
        s.account_add("a", "example.org").unwrap();
        s.account_add("b", "example.org").unwrap();
        let body = b"Subject: x\r\n\r\nbody\r\n".to_vec();
        let head = b"Received: by us\r\n".to_vec();
        let mut da = delivery("a", "Inbox", &body, 5);
        da.head = &head;
        let mut db = delivery("b", "Inbox", &body, 5);
        db.head = &head;
        let ids = s.deliver_many(vec![da, db]).unwrap();
        let want = [&head[..], &body[..]].concat();
        for id in ids {
            assert_eq!(s.message_bytes(id).unwrap(), want);
            assert_eq!(s.message(id).unwrap().unwrap().size, want.len() as u64);
        }
    }

    #[test]
    fn deliver_and_queue_all_or_nothing() {
        let (_d, s) = store();
        s.account_add("a", "example.org").unwrap();
        let ids = s
            .deliver_and_queue(
                vec![delivery("a", "Inbox", b"m1", 5)],
                Some((b"dsn", vec![queued_rcpt("x@example.net")])),
            )
            .unwrap();
        assert_eq!(ids.len(), 1);
        assert_eq!(s.message_bytes(ids[0]).unwrap(), b"m1");
        let q = s.queue_list(&QueueFilter::default()).unwrap();
        assert_eq!(q.len(), 1);
        assert!(q[0].rcpt.is_dsn);
        assert_eq!(s.queue_message(q[0].msg_id).unwrap(), b"dsn");

        let err = s.deliver_and_queue(
            vec![
                delivery("a", "Inbox", b"m2", 6),
                delivery("missing", "Inbox", b"m2", 6),
            ],
            Some((b"dsn2", vec![queued_rcpt("y@example.net")])),
        );
        assert!(matches!(err, Err(StoreError::NoAccount(_))), "{err:?}");
        assert_eq!(s.messages("a").unwrap().len(), 1);
        assert_eq!(s.queue_list(&QueueFilter::default()).unwrap().len(), 1);
        assert!(matches!(
            s.deliver_and_queue(vec![delivery("a", "Inbox", b"m3", 7)], Some((b"d", vec![]))),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn deliver_read_usage_quota() {
        let (_d, s) = store();
        s.account_add("a", "example.org").unwrap();
        s.account_add("b", "example.org").unwrap();
        let m1 = b"Subject: one\r\n\r\nhello\r\n".to_vec();
        let id = s.deliver(delivery("a", "Inbox", &m1, 100)).unwrap();
        assert_eq!(s.message_bytes(id).unwrap(), m1);
        assert_eq!(s.account_usage("a").unwrap(), m1.len() as u64);
        let rec = s.message(id).unwrap().unwrap();
        assert_eq!(rec.mailbox, "Inbox");
        assert_eq!(rec.size, m1.len() as u64);
        assert_eq!(rec.networks.len(), 3);
        // One message to two accounts in one commit, shared file.
        let m2 = vec![b'x'; 5000];
        let ids = s
            .deliver_many(vec![
                delivery("a", "Junk", &m2, 200),
                delivery("b", "Inbox", &m2, 200),
            ])
            .unwrap();
        assert_eq!(ids.len(), 2);
        for id in &ids {
            assert_eq!(s.message_bytes(*id).unwrap(), m2);
        }
        assert_eq!(s.mailboxes("a").unwrap(), ["Inbox", "Junk"]);
        assert_eq!(s.messages("a").unwrap().len(), 2);
        assert_eq!(s.account_usage("b").unwrap(), 5000);
        // All-or-nothing: an unknown account fails the whole call.
        assert!(matches!(
            s.deliver_many(vec![
                delivery("a", "Inbox", &m1, 300),
                delivery("zz", "Inbox", &m1, 300)
            ]),
            Err(StoreError::NoAccount(_))
        ));
        assert_eq!(s.messages("a").unwrap().len(), 2);
        // Quota.
        s.account_set_quota("b", Some(6000)).unwrap();
        assert!(matches!(
            s.deliver(delivery("b", "Inbox", &m2, 400)),
            Err(StoreError::QuotaExceeded { used: 5000, .. })
        ));
        s.expunge(ids[1]).unwrap();
        assert_eq!(s.account_usage("b").unwrap(), 0);
        assert!(matches!(
            s.message_bytes(ids[1]),
            Err(StoreError::NoMessage(_))
        ));
        // The hard-linked sibling survives the expunge.
        assert_eq!(s.message_bytes(ids[0]).unwrap(), m2);
        s.deliver(delivery("b", "Inbox", &m2, 400)).unwrap();
        // Flags.
        s.set_flags(
            id,
            Flags {
                seen: true,
                junk: false,
                notjunk: true,
            },
        )
        .unwrap();
        assert!(s.message(id).unwrap().unwrap().flags.notjunk);
        assert!(matches!(
            s.set_flags(MessageId(9999), Flags::default()),
            Err(StoreError::NoMessage(_))
        ));
    }

    #[test]
    fn index_lookups() {
        let (_d, s) = store();
        s.account_add("a", "example.org").unwrap();
        s.account_add("b", "example.org").unwrap();
        let m = b"x".to_vec();
        for t in [10, 20, 30, 40] {
            s.deliver(delivery("a", "Inbox", &m, t)).unwrap();
        }
        let mut other = delivery("b", "Inbox", &m, 35);
        other.info.remote_ip = Some("198.51.100.1".parse().unwrap());
        s.deliver(other).unwrap();
        let cases: &[(IndexKind, &str, i64, u64)] = &[
            (IndexKind::Network, "192.0.2.77/32", 0, 4),
            (IndexKind::Network, "192.0.2.64/26", 25, 2),
            (IndexKind::Network, "192.0.0.0/21", 41, 0),
            (IndexKind::MailFrom, "bob@example.org", 0, 4),
            (IndexKind::MailFromDomain, "EXAMPLE.org", 15, 3),
            (IndexKind::FromDomain, "example.org", 0, 4),
            (IndexKind::DkimDomain, "esp.example", 0, 4),
            (IndexKind::Ehlo, "mail.example.org", 0, 4),
            (IndexKind::MessageId, "abc@example.org", 0, 4),
            (IndexKind::MessageId, "<abc@example.org>", 0, 4),
            (IndexKind::Network, "198.51.100.1/32", 0, 0),
        ];
        for (k, v, since, want) in cases {
            assert_eq!(
                s.count_since("a", *k, v, UnixTime(*since)).unwrap(),
                *want,
                "{k:?} {v}"
            );
        }
        assert_eq!(
            s.count_since("b", IndexKind::Network, "198.51.100.1/32", UnixTime(0))
                .unwrap(),
            1
        );
        let hits = s
            .lookup("a", IndexKind::MailFrom, "bob@example.org", UnixTime(0), 3)
            .unwrap();
        let times: Vec<i64> = hits.iter().map(|h| h.received.0).collect();
        assert_eq!(times, [40, 30, 20]);
    }

    /// Index entries of deliveries committed through the acceptance log wait in memory
    /// (crate::overlay): every read sees them merged with the table's in order, a
    /// checkpoint moves them into the table, and an expunge of a message whose entries are
    /// still in memory removes its mailbox entry all the same.
    #[test]
    fn index_entries_in_memory_are_read_flushed_and_expunged() {
        let (_d, s) = store();
        s.account_add("a", "example.org").unwrap();
        let m = b"x".to_vec();
        let table = |s: &Store| -> u64 {
            s.read()
                .unwrap()
                .open_table(MSG_INDEX)
                .unwrap()
                .len()
                .unwrap()
        };
        let count =
            |s: &Store, kind: IndexKind, v: &str| s.count_since("a", kind, v, UnixTime(0)).unwrap();
        let times = |s: &Store| -> Vec<i64> {
            s.lookup("a", IndexKind::MailFrom, "bob@example.org", UnixTime(0), 10)
                .unwrap()
                .iter()
                .map(|h| h.received.0)
                .collect()
        };
        for t in [10, 20, 30] {
            s.deliver(delivery("a", "Inbox", &m, t)).unwrap();
        }
        assert!(
            s.overlay.waiting() > 0,
            "logged deliveries keep their entries in memory"
        );
        assert_eq!(table(&s), 0, "not in the table yet");
        assert_eq!(count(&s, IndexKind::MailFrom, "bob@example.org"), 3);
        assert_eq!(times(&s), [30, 20, 10]);

        // A write that is not logged is a checkpoint: the entries go into the table.
        s.account_add("b", "example.org").unwrap();
        assert_eq!(s.overlay.waiting(), 0);
        let in_table = table(&s);
        assert!(in_table > 0);
        assert_eq!(count(&s, IndexKind::MailFrom, "bob@example.org"), 3);

        // Some in the table, some in memory: merged, newest first, each once.
        for t in [25, 40] {
            s.deliver(delivery("a", "Inbox", &m, t)).unwrap();
        }
        assert_eq!(table(&s), in_table);
        assert_eq!(times(&s), [40, 30, 25, 20, 10]);
        let recent = s
            .lookup("a", IndexKind::MailFrom, "bob@example.org", UnixTime(0), 2)
            .unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(
            s.history(
                "a",
                IndexKind::MailFrom,
                "bob@example.org",
                UnixTime(0),
                3,
                None,
                None
            )
            .unwrap()
            .len(),
            3
        );
        assert_eq!(count(&s, IndexKind::MailFrom, "bob@example.org"), 5);
        // The same entry in memory and in the table (a flush committed, not yet forgotten)
        // is read once.
        let dup = s.overlay.all();
        assert!(!dup.is_empty());
        {
            let w = match &s.db {
                Db::Rw(db) => db.begin_write().unwrap(),
                Db::Ro(_) => unreachable!(),
            };
            crate::overlay::insert(&w, &dup).unwrap();
            w.commit().unwrap();
        }
        assert_eq!(count(&s, IndexKind::MailFrom, "bob@example.org"), 5);
        assert_eq!(times(&s), [40, 30, 25, 20, 10]);

        // Expunging messages whose mailbox entries are partly in memory.
        assert_eq!(count(&s, IndexKind::Mailbox, "Inbox"), 5);
        assert_eq!(
            s.mailbox_expunge_before("a", "Inbox", UnixTime(35), 10)
                .unwrap(),
            4
        );
        assert_eq!(count(&s, IndexKind::Mailbox, "Inbox"), 1);
        assert_eq!(s.overlay.waiting(), 0);
        assert_eq!(count(&s, IndexKind::MailFrom, "bob@example.org"), 5);
    }

    /// However many logged deliveries come between checkpoints, the entries waiting in
    /// memory stay bounded (a logged batch writes them once more than INDEX_FLUSH_AT wait),
    /// and reads stay exact throughout.
    #[test]
    fn index_entries_in_memory_are_bounded() {
        let (_d, s) = store();
        s.account_add("a", "example.org").unwrap();
        let m = b"x".to_vec();
        let per = index_entries(&MessageRecord {
            id: MessageId(1),
            account: "a".into(),
            mailbox: "Inbox".into(),
            received: UnixTime(1),
            flags: Flags::default(),
            size: 1,
            info: delivery("a", "Inbox", &m, 1).info,
            networks: ip_networks("192.0.2.77".parse().unwrap()),
            expunged: false,
        })
        .len();
        let n = crate::INDEX_FLUSH_AT / per + 20;
        let mut most = 0;
        for t in 0..n {
            s.deliver(delivery("a", "Inbox", &m, t as i64)).unwrap();
            most = most.max(s.overlay.waiting());
        }
        assert!(most <= crate::INDEX_FLUSH_AT + per, "{most} waiting");
        assert_eq!(
            s.count_since("a", IndexKind::MailFrom, "bob@example.org", UnixTime(0))
                .unwrap(),
            n as u64
        );
    }

    /// Reputation's history: newest first, limited, the rejects mailbox left out, From
    /// validation filtered, junk flags and From local parts as stored.
    #[test]
    fn history_for_reputation() {
        let (_d, s) = store();
        s.account_add("a", "example.org").unwrap();
        let m = b"x".to_vec();
        let mut ids = Vec::new();
        for (t, lp, validated, mailbox) in [
            (10, "ann", true, "Inbox"),
            (20, "bob", false, "Inbox"),
            (30, "cat", true, "Rejects"),
            (40, "dan", true, "Archive"),
        ] {
            let mut d = delivery("a", mailbox, &m, t);
            d.info.from_address = Some(format!("{lp}@Example.org"));
            d.info.from_org_domain = Some("example.org".into());
            if validated {
                d.info.from_validation = Validation::Dmarc;
            }
            ids.push(s.deliver(d).unwrap());
        }
        s.set_flags(
            ids[3],
            Flags {
                junk: true,
                ..Flags::default()
            },
        )
        .unwrap();
        let h = |kind, v: &str, limit, fv| {
            s.history("a", kind, v, UnixTime(0), limit, fv, Some("Rejects"))
                .unwrap()
                .into_iter()
                .map(|h| (h.from_localpart.unwrap_or_default(), h.junk))
                .collect::<Vec<_>>()
        };
        let all = h(IndexKind::FromOrgDomain, "EXAMPLE.ORG", 10, None);
        assert_eq!(
            all,
            [
                ("dan".into(), true),
                ("bob".into(), false),
                ("ann".into(), false)
            ]
        );
        assert_eq!(h(IndexKind::FromOrgDomain, "example.org", 2, None).len(), 2);
        assert_eq!(
            h(IndexKind::FromOrgDomain, "example.org", 10, Some(false)),
            [("bob".into(), false)]
        );
        assert_eq!(
            h(IndexKind::FromAddress, "ann@example.org", 10, Some(true)),
            [("ann".into(), false)]
        );
        assert!(h(IndexKind::FromAddress, "cat@example.org", 10, None).is_empty());
    }

    /// The mailbox index counts what a mailbox holds (expunged messages leave it) and finds
    /// its oldest messages for tidying.
    #[test]
    fn mailbox_index_and_tidy() {
        let (_d, s) = store();
        s.account_add("a", "example.org").unwrap();
        let m = b"x".to_vec();
        for t in [10, 20, 30] {
            s.deliver(delivery("a", "Rejects", &m, t)).unwrap();
        }
        s.deliver(delivery("a", "Inbox", &m, 5)).unwrap();
        let count = || {
            s.count_since("a", IndexKind::Mailbox, "rejects", UnixTime(0))
                .unwrap()
        };
        assert_eq!(count(), 3);
        assert_eq!(
            s.mailbox_expunge_before("a", "Rejects", UnixTime(25), 1)
                .unwrap(),
            1
        );
        assert_eq!(count(), 2);
        assert_eq!(
            s.mailbox_expunge_before("a", "Rejects", UnixTime(25), 10)
                .unwrap(),
            1
        );
        assert_eq!(count(), 1);
        assert_eq!(
            s.messages("a")
                .unwrap()
                .iter()
                .filter(|m| !m.expunged)
                .count(),
            2
        );
    }

    /// Sent-to keys for addresses, exact domains and domains within, with the newest time.
    #[test]
    fn sent_to_domains() {
        let (_d, s) = store();
        s.account_add("a", "example.org").unwrap();
        s.record_outgoing("a", &["Bob@Mail.Example.ORG".into()], UnixTime(100))
            .unwrap();
        let sent = |to, since| s.sent_to_since("a", to, UnixTime(since)).unwrap();
        assert!(sent(SentTo::Address("bob@mail.example.org"), 50));
        assert!(!sent(SentTo::Address("bob@mail.example.org"), 150));
        assert!(sent(SentTo::Domain("mail.example.org"), 50));
        assert!(!sent(SentTo::Domain("example.org"), 50));
        assert!(sent(SentTo::Within("example.org"), 50));
        assert!(sent(SentTo::Within("mail.example.org"), 50));
        assert!(!sent(SentTo::Within("other.org"), 50));
        // A later message updates the time; the first-time count does not change.
        assert_eq!(
            s.record_outgoing("a", &["bob@mail.example.org".into()], UnixTime(200))
                .unwrap(),
            0
        );
        assert!(sent(SentTo::Address("bob@mail.example.org"), 150));
        assert!(s.has_sent_to("a", "BOB@mail.example.org").unwrap());
    }

    #[test]
    fn account_remove_cleans_up() {
        let (_d, s) = store();
        s.account_add("a", "example.org").unwrap();
        s.account_add("b", "example.org").unwrap();
        s.set_credentials("a", vec![("k".into(), vec![1])]).unwrap();
        // Large enough for a file of its own.
        let m = vec![b'h'; INLINE_BODY_MAX + 1];
        let ida = s.deliver(delivery("a", "Inbox", &m, 1)).unwrap();
        let idb = s.deliver(delivery("b", "Inbox", &m, 1)).unwrap();
        let pa = files::path(s.data_dir(), Area::Msg, ida.0);
        assert!(pa.exists());
        s.account_remove("a").unwrap();
        assert!(!pa.exists());
        assert!(s.account("a").unwrap().is_none());
        assert!(s.message(ida).unwrap().is_none());
        assert_eq!(s.credentials("a", "k").unwrap(), None);
        assert_eq!(
            s.count_since("a", IndexKind::MailFrom, "bob@example.org", UnixTime(0))
                .unwrap(),
            0
        );
        assert_eq!(s.message_bytes(idb).unwrap(), m);
        assert!(matches!(
            s.account_remove("a"),
            Err(StoreError::NoAccount(_))
        ));
        // The name can be reused.
        s.account_add("a", "example.org").unwrap();
        assert_eq!(s.account_usage("a").unwrap(), 0);
    }

    /// Small messages live in the database: no file, no file-system sync; read, expunged,
    /// removed with their account, backed up and verified like the others.
    #[test]
    fn small_messages_are_kept_in_the_database() {
        let (d, s) = store();
        s.account_add("a", "example.org").unwrap();
        let small = vec![b's'; INLINE_BODY_MAX];
        let big = vec![b'b'; INLINE_BODY_MAX + 1];
        let ids = s
            .deliver_many(vec![
                delivery("a", "Inbox", &small, 1),
                delivery("a", "Inbox", &big, 2),
                delivery("a", "Inbox", &small, 3),
            ])
            .unwrap();
        let file = |id: MessageId| files::path(s.data_dir(), Area::Msg, id.0).exists();
        assert_eq!(
            ids.iter().map(|&id| file(id)).collect::<Vec<_>>(),
            [false, true, false]
        );
        assert_eq!(s.message_bytes(ids[0]).unwrap(), small);
        assert_eq!(s.message_bytes(ids[1]).unwrap(), big);
        assert_eq!(
            s.account_usage("a").unwrap(),
            (2 * small.len() + big.len()) as u64
        );
        let backup = d.path().join("backup");
        let rep = s.backup(&backup).unwrap();
        assert_eq!(rep.messages, 3);
        s.expunge(ids[0]).unwrap();
        assert!(matches!(
            s.message_bytes(ids[0]),
            Err(StoreError::NoMessage(_))
        ));
        assert_eq!(
            s.account_usage("a").unwrap(),
            (small.len() + big.len()) as u64
        );
        drop(s);
        let v = crate::verify(&d.path().join("data"));
        assert!(v.is_ok() && v.orphans.is_empty(), "{:?}", v.lines());
        assert_eq!(v.messages, 3);
        let b = Store::open(&backup).unwrap();
        assert_eq!(b.message_bytes(ids[0]).unwrap(), small);
        assert_eq!(b.message_bytes(ids[2]).unwrap(), small);
        b.account_remove("a").unwrap();
        assert!(matches!(
            b.message_bytes(ids[2]),
            Err(StoreError::NoMessage(_))
        ));
        drop(b);
        let v = crate::verify(&backup);
        assert!(v.is_ok() && v.orphans.is_empty(), "{:?}", v.lines());
    }

    #[test]
    fn reopen_keeps_everything_and_ids_grow() {
        let d = tempfile::tempdir().unwrap();
        let m = b"persist".to_vec();
        let id = {
            let s = Store::open(d.path()).unwrap();
            s.account_add("a", "example.org").unwrap();
            s.deliver(delivery("a", "Inbox", &m, 1)).unwrap()
        };
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.message_bytes(id).unwrap(), m);
        let id2 = s.deliver(delivery("a", "Inbox", &m, 2)).unwrap();
        assert!(id2 > id);
        drop(s);
        let ro = Store::open_readonly(d.path()).unwrap();
        assert_eq!(ro.messages("a").unwrap().len(), 2);
        assert!(matches!(
            ro.account_add("x", "y"),
            Err(StoreError::ReadOnly)
        ));
    }

    /// Version 1 had no usage counters: opening it must compute them.
    #[test]
    fn migrate_from_version_1() {
        let d = tempfile::tempdir().unwrap();
        {
            let db = Database::create(d.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert(K_VERSION, 1).unwrap();
            let acc = Account {
                name: "a".into(),
                domain: "example.org".into(),
                login_disabled: None,
                quota_bytes: None,
                subjectpass_key: None,
            };
            txn.open_table(ACCOUNTS)
                .unwrap()
                .insert("a", enc(&acc).unwrap().as_slice())
                .unwrap();
            for (id, size, expunged) in [(1u64, 10u64, false), (2, 20, false), (3, 40, true)] {
                let r = MessageRecord {
                    id: MessageId(id),
                    account: "a".into(),
                    mailbox: "Inbox".into(),
                    received: UnixTime(1),
                    flags: Flags::default(),
                    size,
                    info: MessageInfo::default(),
                    networks: vec![],
                    expunged,
                };
                txn.open_table(MESSAGES)
                    .unwrap()
                    .insert(id, enc(&r).unwrap().as_slice())
                    .unwrap();
                txn.open_table(ACCOUNT_MESSAGES)
                    .unwrap()
                    .insert(("a", id), ())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.account_usage("a").unwrap(), 30);
        let rtx = s.read().unwrap();
        let v = rtx
            .open_table(META)
            .unwrap()
            .get(K_VERSION)
            .unwrap()
            .unwrap()
            .value();
        assert_eq!(v, SCHEMA_VERSION);
        drop(rtx);
        // New ids continue after the migrated ones.
        let id = s.deliver(delivery("a", "Inbox", b"m", 5)).unwrap();
        assert!(id.0 > 3);
    }

    #[test]
    fn refuses_newer_schema() {
        let d = tempfile::tempdir().unwrap();
        {
            let db = Database::create(d.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(K_VERSION, SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let e = Store::open(d.path()).unwrap_err();
        assert!(
            matches!(e, StoreError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 1),
            "{e}"
        );
        assert!(matches!(
            Store::open_readonly(d.path()),
            Err(StoreError::SchemaTooNew { .. })
        ));
    }

    /// Many threads deliver at once; all succeed, ids are distinct, counters add up.
    #[test]
    fn concurrent_deliveries_share_commits() {
        let (_d, s) = store();
        s.account_add("a", "example.org").unwrap();
        let s = Arc::new(s);
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    (0..10)
                        .map(|i| {
                            let m = format!("message {t} {i}").into_bytes();
                            (s.deliver(delivery("a", "Inbox", &m, i)).unwrap(), m)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in threads {
            all.extend(t.join().unwrap());
        }
        let mut ids: Vec<u64> = all.iter().map(|(id, _)| id.0).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 160);
        let total: u64 = all.iter().map(|(_, m)| m.len() as u64).sum();
        assert_eq!(s.account_usage("a").unwrap(), total);
        for (id, m) in all {
            assert_eq!(s.message_bytes(id).unwrap(), m);
        }
    }

    /// Group commit under contention: 24 threads deliver 100 messages each with no pause,
    /// so batches form while others commit, callers lead in turn and followers are woken one
    /// by one. A caller that is never woken shows as a thread that does not finish within
    /// two minutes; every delivery must succeed with its own id.
    #[test]
    fn group_commit_wakes_every_caller() {
        let (_d, s) = store();
        s.account_add("a", "example.org").unwrap();
        let s = Arc::new(s);
        let (tx, rx) = std::sync::mpsc::channel();
        for t in 0..24u64 {
            let (s, tx) = (Arc::clone(&s), tx.clone());
            std::thread::spawn(move || {
                let ids: Vec<u64> = (0..100)
                    .map(|i| {
                        let m = format!("message {t} {i}").into_bytes();
                        s.deliver(delivery("a", "Inbox", &m, i)).unwrap().0
                    })
                    .collect();
                let _ = tx.send(ids);
            });
        }
        drop(tx);
        let mut ids = Vec::new();
        for n in 0..24 {
            match rx.recv_timeout(std::time::Duration::from_secs(120)) {
                Ok(got) => ids.extend(got),
                Err(e) => panic!("{n} of 24 threads finished, then: {e}"),
            }
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 2400);
    }

    /// A refused job in a batch must not disturb the others or leave files behind.
    #[test]
    fn refused_delivery_leaves_no_file() {
        let (_d, s) = store();
        let before = s.counters.next_msg.load(Ordering::SeqCst);
        assert!(s.deliver(delivery("nobody", "Inbox", b"m", 1)).is_err());
        assert!(!files::path(s.data_dir(), Area::Msg, before).exists());
    }
}

#[cfg(test)]
mod facts_tests {
    use super::*;
    use crate::model::{Delivery, Flags, MessageInfo};

    /// History reads the facts kept in the index entries; a flag change and a move reach
    /// them; a database from before (v2: the index without facts) is migrated when it opens.
    #[test]
    fn facts_filled_at_open_and_follow_flags() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        s.account_add("a", "example.org").unwrap();
        let info = MessageInfo {
            from_address: Some("Bob@example.org".into()),
            from_domain: Some("example.org".into()),
            from_validation: Validation::Dmarc,
            ..MessageInfo::default()
        };
        let id = s
            .deliver(Delivery {
                account: "a".into(),
                mailbox: "Inbox".into(),
                head: b"",
                message: b"Subject: x\r\n\r\nx\r\n",
                flags: Flags::default(),
                received: UnixTime(100),
                info,
            })
            .unwrap();
        let ask = |s: &Store| {
            s.history(
                "a",
                IndexKind::FromDomain,
                "example.org",
                UnixTime(0),
                10,
                Some(true),
                None,
            )
            .unwrap()
        };
        let h = ask(&s);
        assert_eq!(h.len(), 1);
        assert_eq!(
            (h[0].junk, h[0].from_localpart.as_deref()),
            (false, Some("bob"))
        );
        s.set_flags(
            id,
            Flags {
                junk: true,
                ..Flags::default()
            },
        )
        .unwrap();
        assert!(ask(&s)[0].junk);
        assert!(s
            .history(
                "a",
                IndexKind::FromDomain,
                "example.org",
                UnixTime(0),
                10,
                None,
                Some("Inbox")
            )
            .unwrap()
            .is_empty());
        s.message_move(id, "Archive").unwrap();
        let in_box = |s: &Store, mb: &str| {
            s.history(
                "a",
                IndexKind::FromDomain,
                "example.org",
                UnixTime(0),
                10,
                None,
                Some(mb),
            )
            .unwrap()
            .len()
        };
        assert_eq!((in_box(&s, "Inbox"), in_box(&s, "Archive")), (1, 0));
        // Older databases: version 2 (an index of strings without facts, and the facts
        // table emptied, as before that table) and version 3 (strings with facts), neither
        // with the index's hash key; each opened again is rebuilt as version 4.
        let mut s = s;
        for version in [2u64, 3] {
            s.write(vec![], vec![], move |txn| {
                let recs: Vec<MessageRecord> = txn
                    .open_table(MESSAGES)?
                    .iter()?
                    .map(|r| r.map(|(_, v)| v.value().to_vec()))
                    .collect::<Result<Vec<_>, _>>()?
                    .iter()
                    .map(|v| dec("messages", v))
                    .collect::<Result<_, _>>()?;
                txn.delete_table(MSG_INDEX)?;
                let mut v2 = txn.open_table(MSG_INDEX_V2)?;
                let mut v3 = txn.open_table(MSG_INDEX_V3)?;
                for r in &recs {
                    let (bits, mailbox, lp) = facts_of(r);
                    for (k, v) in index_entries(r) {
                        let key = (r.account.as_str(), k, v.as_str(), r.received.0, r.id.0);
                        if version == 2 {
                            v2.insert(key, ())?;
                        } else {
                            v3.insert(key, (bits, mailbox, lp.as_str()))?;
                        }
                    }
                }
                if version == 2 {
                    txn.open_table(MSG_FACTS)?.retain(|_, _| false)?;
                }
                let mut meta = txn.open_table(META)?;
                meta.remove(K_INDEX_KEY0)?;
                meta.remove(K_INDEX_KEY1)?;
                meta.insert(K_VERSION, version)?;
                Ok(())
            })
            .unwrap();
            drop(s);
            assert!(
                matches!(Store::open_readonly(d.path()), Err(StoreError::Invalid(_))),
                "version {version} is migrated only when opened for writing"
            );
            s = Store::open(d.path()).unwrap();
            let h = ask(&s);
            assert_eq!(h.len(), 1, "version {version}");
            assert!(h[0].junk);
            assert_eq!((in_box(&s, "Inbox"), in_box(&s, "Archive")), (1, 0));
            assert_eq!(
                s.lookup("a", IndexKind::Mailbox, "Archive", UnixTime(0), 10)
                    .unwrap()
                    .len(),
                1
            );
            let rtx = s.read().unwrap();
            assert!(rtx.open_table(MSG_INDEX_V2).is_err(), "old index removed");
            assert!(rtx.open_table(MSG_INDEX_V3).is_err(), "old index removed");
            let meta = rtx.open_table(META).unwrap();
            assert_eq!(
                meta.get(K_VERSION).unwrap().unwrap().value(),
                SCHEMA_VERSION
            );
            assert!(meta.get(K_INDEX_KEY0).unwrap().is_some());
        }
    }
}
