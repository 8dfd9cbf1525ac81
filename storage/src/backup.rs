//! Backup (a consistent copy while in use) and verify (check a data directory).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, ReadableTableMetadata};

use crate::error::StoreError;
use crate::files::{self, Area};
use crate::model::*;
use crate::store::{Store, DB_FILE};
use crate::tables::*;

/// What a backup copied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupReport {
    /// Destination data directory (open it with [`Store::open`]).
    pub dest: PathBuf,
    /// Delivered-message files in the backup.
    pub messages: u64,
    /// Queued-message files in the backup.
    pub queue_messages: u64,
    /// Bytes of message files.
    pub bytes: u64,
    /// Files hard-linked instead of copied (same file system; message files never change).
    pub linked: u64,
}

/// What [`verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Problems, one line each: the data directory is damaged.
    pub problems: Vec<String>,
    /// Unreferenced message files: leftovers of a crash between writing a file and
    /// committing, or between a commit and removing a file. Harmless, safe to delete.
    pub orphans: Vec<PathBuf>,
    /// Message records checked.
    pub messages: u64,
    /// Queue entries checked.
    pub queue_entries: u64,
    /// The database was not closed cleanly (crash, kill -9) and needed redb's ordinary
    /// recovery, which was done on a copy; the server does it itself at its next start.
    /// Not a problem.
    pub recovered: bool,
    /// Acceptance-log records the database does not hold yet (acknowledged writes since the
    /// last checkpoint of a store that was not closed): the next start applies them. Files
    /// they stored are not orphans. Not a problem.
    pub log_pending: u64,
}

impl VerifyReport {
    /// True when there are no problems (orphans are not problems).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report as lines: problems first, then one line per orphan.
    pub fn lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.recovered {
            v.push(
                "database not closed cleanly: checked a copy after redb's ordinary recovery (the server recovers it at its next start)"
                    .to_string(),
            );
        }
        if self.log_pending > 0 {
            v.push(format!(
                "{} acknowledged write(s) in the acceptance log not yet in the database (the server applies them at its next start)",
                self.log_pending
            ));
        }
        v.extend(self.problems.iter().cloned());
        for o in &self.orphans {
            v.push(format!("{}: orphan, safe to delete", o.display()));
        }
        v
    }
}

/// Keeps file removals deferred while a backup runs.
struct BackupGuard<'a>(&'a Store);

impl Drop for BackupGuard<'_> {
    fn drop(&mut self) {
        let deferred = {
            let mut d = self.0.deletes.lock().unwrap_or_else(|e| e.into_inner());
            d.backups = d.backups.saturating_sub(1);
            if d.backups == 0 {
                std::mem::take(&mut d.deferred)
            } else {
                Vec::new()
            }
        };
        for p in deferred {
            files::remove(&p);
        }
    }
}

macro_rules! copy_tables {
    ($r:expr, $w:expr, $($t:ident),* $(,)?) => {$(
        {
            let src = $r.open_table($t)?;
            let mut dst = $w.open_table($t)?;
            for row in src.iter()? {
                let (k, v) = row?;
                dst.insert(k.value(), v.value())?;
            }
        }
    )*};
}

fn copy_file(src: &Path, dst: &Path, report: &mut BackupReport) -> Result<(), StoreError> {
    if fs::hard_link(src, dst).is_ok() {
        report.linked += 1;
    } else {
        fs::copy(src, dst).map_err(|e| StoreError::io("copy", src, e))?;
        fs::File::open(dst)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::io("sync", dst, e))?;
    }
    let len = fs::metadata(dst)
        .map_err(|e| StoreError::io("stat", dst, e))?
        .len();
    report.bytes += len;
    Ok(())
}

impl Store {
    /// Writes a consistent copy of the data directory to `dest` (which must not exist or be
    /// empty) while the store stays in use: one read transaction is copied into a new
    /// database and the message files it references are hard-linked or copied; file
    /// removals wait until the backup ends. Everything is fsynced before `Ok`.
    pub fn backup(&self, dest: &Path) -> Result<BackupReport, StoreError> {
        if dest.exists() {
            let mut rd =
                fs::read_dir(dest).map_err(|e| StoreError::io("read directory", dest, e))?;
            if rd.next().is_some() {
                return Err(StoreError::Invalid(format!(
                    "backup destination {} is not empty",
                    dest.display()
                )));
            }
        }
        self.deletes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .backups += 1;
        let _guard = BackupGuard(self);
        // The message index entries still in memory (crate::overlay) go into the copy's
        // index with the table's: taken with the read transaction, so both show the same
        // commits.
        let (waiting, rtx) = {
            let _view = self.overlay.view();
            (self.overlay.all(), self.read()?)
        };
        files::ensure_dir(dest)?;
        let db = Database::create(dest.join(DB_FILE))?;
        let wtx = db.begin_write()?;
        create_all(&wtx)?;
        copy_tables!(
            rtx,
            wtx,
            META,
            ACCOUNTS,
            CREDENTIALS,
            USAGE,
            MAILBOXES,
            MESSAGES,
            ACCOUNT_MESSAGES,
            MSG_BODIES,
            MSG_INDEX,
            QUEUE_MSGS,
            QUEUE,
            QUEUE_DUE,
            RETIRED,
            HOLD_RULES,
            SUPPRESSIONS,
            FAILURE_STREAKS,
            OUTGOING,
            SENT_TO,
            FIRST_SEEN,
            REPORTS,
            MTASTS,
            JUNK_WORDS,
            JUNK_TRAINED,
            MSG_FACTS,
            WEBHOOKS,
            WEBHOOKS_RETIRED,
            FROM_IDS,
            WEBHOOKS_DUE,
        );
        crate::overlay::insert(&wtx, &waiting)?;
        wtx.commit()?;
        drop(db);
        let mut report = BackupReport {
            dest: dest.to_path_buf(),
            ..Default::default()
        };
        let mut dirs = BTreeSet::new();
        {
            let msgs = rtx.open_table(MESSAGES)?;
            let bodies = rtx.open_table(MSG_BODIES)?;
            for row in msgs.iter()? {
                let (k, v) = row?;
                let r: MessageRecord = dec("messages", v.value())?;
                if r.expunged {
                    continue;
                }
                let id = k.value();
                report.messages += 1;
                if let Some(b) = bodies.get(id)? {
                    // In the database: copied with it.
                    report.bytes += b.value().len() as u64;
                    continue;
                }
                let d = files::shard_dir(dest, Area::Msg, id);
                files::ensure_dir(&d)?;
                copy_file(
                    &files::path(&self.dir, Area::Msg, id),
                    &files::path(dest, Area::Msg, id),
                    &mut report,
                )?;
                dirs.insert(d);
            }
        }
        {
            let qm = rtx.open_table(QUEUE_MSGS)?;
            for row in qm.iter()? {
                let (k, _) = row?;
                let id = k.value();
                let d = files::shard_dir(dest, Area::Queue, id);
                files::ensure_dir(&d)?;
                copy_file(
                    &files::path(&self.dir, Area::Queue, id),
                    &files::path(dest, Area::Queue, id),
                    &mut report,
                )?;
                dirs.insert(d);
                report.queue_messages += 1;
            }
        }
        files::ensure_dir(&dest.join(Area::Msg.dir_name()))?;
        files::ensure_dir(&dest.join(Area::Queue.dir_name()))?;
        for d in dirs {
            files::sync_dir(&d)?;
        }
        files::sync_dir(dest)?;
        Ok(report)
    }
}

/// Checks a data directory that no process has open for writing (a stopped server's, or a
/// backup): the database opens and every record decodes; every stored message and queued
/// message has its file with the recorded size; queue references, the due index and usage
/// counters agree; files nobody references are listed as orphans (harmless). A database
/// not closed cleanly (a crash) is checked on a recovered copy in the temporary directory
/// and [`VerifyReport::recovered`] is set: the next start recovers it, it is not damage.
pub fn verify(data_dir: &Path) -> VerifyReport {
    let mut rep = VerifyReport::default();
    let result = match Store::open_readonly(data_dir) {
        Ok(store) => verify_into(&store, data_dir, &mut rep),
        // Not closed cleanly (a crash, kill -9): redb recovers such a file when it is next
        // opened for writing, which a read-only open may not do. Recover a copy and check
        // that; the data directory itself is left untouched.
        Err(StoreError::Database {
            failure: crate::DbFailure::NeedsRecovery,
            ..
        }) => {
            rep.recovered = true;
            match recovered_copy(data_dir) {
                Ok((copy, store)) => {
                    let r = verify_into(&store, data_dir, &mut rep);
                    drop(store);
                    let _ = fs::remove_dir_all(&copy);
                    r
                }
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        rep.problems.push(format!("verify stopped: {e}"));
    }
    rep
}

/// Copies the database of `data_dir` to a fresh temporary directory, lets redb recover it
/// there (its ordinary repair on a read-write open), and opens the copy read-only.
fn recovered_copy(data_dir: &Path) -> Result<(PathBuf, Store), StoreError> {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let copy = std::env::temp_dir().join(format!(
        "rmox-verify-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&copy);
    fs::create_dir_all(&copy).map_err(|e| StoreError::io("create directory", &copy, e))?;
    let result = (|| {
        let src = data_dir.join(DB_FILE);
        let dst = copy.join(DB_FILE);
        fs::copy(&src, &dst).map_err(|e| StoreError::io("copy", &src, e))?;
        drop(Database::create(&dst)?);
        Store::open_readonly(&copy)
    })();
    match result {
        Ok(store) => Ok((copy, store)),
        Err(e) => {
            let _ = fs::remove_dir_all(&copy);
            Err(e)
        }
    }
}

fn check_file(data_dir: &Path, area: Area, id: u64, size: u64, what: &str, rep: &mut VerifyReport) {
    let p = files::path(data_dir, area, id);
    match fs::metadata(&p) {
        Ok(m) if m.len() == size => {}
        Ok(m) => rep.problems.push(format!(
            "{what}: file {} has {} bytes, record says {size}",
            p.display(),
            m.len()
        )),
        Err(e) => rep
            .problems
            .push(format!("{what}: file {} missing: {e}", p.display())),
    }
}

fn verify_into(store: &Store, data_dir: &Path, rep: &mut VerifyReport) -> Result<(), StoreError> {
    let rtx = store.read()?;
    let mut accounts = BTreeSet::new();
    for row in rtx.open_table(ACCOUNTS)?.iter()? {
        let (k, v) = row?;
        match dec::<Account>("accounts", v.value()) {
            Ok(_) => {}
            Err(e) => rep.problems.push(format!("account {}: {e}", k.value())),
        }
        accounts.insert(k.value().to_string());
    }
    let mut msg_files = BTreeSet::new();
    let mut usage: BTreeMap<String, u64> = BTreeMap::new();
    let account_messages = rtx.open_table(ACCOUNT_MESSAGES)?;
    let bodies = rtx.open_table(MSG_BODIES)?;
    for row in rtx.open_table(MESSAGES)?.iter()? {
        let (k, v) = row?;
        let id = k.value();
        rep.messages += 1;
        let r: MessageRecord = match dec("messages", v.value()) {
            Ok(r) => r,
            Err(e) => {
                rep.problems.push(format!("message {id}: {e}"));
                continue;
            }
        };
        if !accounts.contains(&r.account) {
            rep.problems.push(format!(
                "message {id}: account {:?} does not exist",
                r.account
            ));
        }
        if account_messages.get((r.account.as_str(), id))?.is_none() {
            rep.problems.push(format!(
                "message {id}: missing from the account's message list"
            ));
        }
        if !r.expunged {
            *usage.entry(r.account.clone()).or_default() += r.size;
            match bodies.get(id)? {
                Some(b) if b.value().len() as u64 == r.size => {}
                Some(b) => rep.problems.push(format!(
                    "message {id}: {} bytes in the database, record says {}",
                    b.value().len(),
                    r.size
                )),
                None => {
                    check_file(
                        data_dir,
                        Area::Msg,
                        id,
                        r.size,
                        &format!("message {id}"),
                        rep,
                    );
                    msg_files.insert(id);
                }
            }
        } else if bodies.get(id)?.is_some() {
            rep.problems.push(format!(
                "message {id}: expunged, but its bytes are still kept"
            ));
        }
    }
    for row in rtx.open_table(USAGE)?.iter()? {
        let (k, v) = row?;
        let want = usage.remove(k.value()).unwrap_or(0);
        if v.value() != want {
            rep.problems.push(format!(
                "account {}: usage counter {} but messages total {want}",
                k.value(),
                v.value()
            ));
        }
    }
    for (acc, n) in usage {
        rep.problems.push(format!(
            "account {acc}: no usage counter (messages total {n})"
        ));
    }
    let mut refs: BTreeMap<u64, u64> = BTreeMap::new();
    let due = rtx.open_table(QUEUE_DUE)?;
    let mut due_expected = 0u64;
    for row in rtx.open_table(QUEUE)?.iter()? {
        let (k, v) = row?;
        let id = k.value();
        rep.queue_entries += 1;
        let e: QueueEntry = match dec("queue", v.value()) {
            Ok(e) => e,
            Err(err) => {
                rep.problems.push(format!("queue entry {id}: {err}"));
                continue;
            }
        };
        *refs.entry(e.msg_id).or_default() += 1;
        if !e.rcpt.hold {
            due_expected += 1;
            if due.get((e.rcpt.next_attempt.0, id))?.is_none() {
                rep.problems
                    .push(format!("queue entry {id}: missing from the due index"));
            }
        }
    }
    if due.len()? != due_expected {
        rep.problems.push(format!(
            "queue due index has {} entries, expected {due_expected}",
            due.len()?
        ));
    }
    let mut queue_files = BTreeSet::new();
    for row in rtx.open_table(QUEUE_MSGS)?.iter()? {
        let (k, v) = row?;
        let id = k.value();
        let (size, n) = v.value();
        let have = refs.remove(&id).unwrap_or(0);
        if have != n {
            rep.problems.push(format!(
                "queued message {id}: reference count {n} but {have} entries"
            ));
        }
        check_file(
            data_dir,
            Area::Queue,
            id,
            size,
            &format!("queued message {id}"),
            rep,
        );
        queue_files.insert(id);
    }
    for (id, n) in refs {
        rep.problems.push(format!(
            "queued message {id}: {n} entries but no message record"
        ));
    }
    for row in rtx.open_table(RETIRED)?.iter()? {
        let (k, v) = row?;
        if let Err(e) = dec::<RetiredEntry>("retired", v.value()) {
            rep.problems
                .push(format!("retired entry {}: {e}", k.value()));
        }
    }
    for row in rtx.open_table(HOLD_RULES)?.iter()? {
        let (k, v) = row?;
        if let Err(e) = dec::<HoldRule>("hold_rules", v.value()) {
            rep.problems.push(format!("hold rule {}: {e}", k.value()));
        }
    }
    for row in rtx.open_table(SUPPRESSIONS)?.iter()? {
        let (k, v) = row?;
        if let Err(e) = dec::<Suppression>("suppressions", v.value()) {
            let (a, b) = k.value();
            rep.problems.push(format!("suppression {a} {b}: {e}"));
        }
    }
    for row in rtx.open_table(MTASTS)?.iter()? {
        let (k, v) = row?;
        if let Err(e) = dec::<MtaStsRecord>("mtasts", v.value()) {
            rep.problems
                .push(format!("mta-sts policy {}: {e}", k.value()));
        }
    }
    // Index tables: reading them through is the check (redb verifies page checksums).
    for row in rtx.open_table(MSG_INDEX)?.iter()? {
        row?;
    }
    for row in rtx.open_table(OUTGOING)?.iter()? {
        row?;
    }
    for row in rtx.open_table(REPORTS)?.iter()? {
        row?;
    }
    // Writes still only in the acceptance log: their files are theirs, not orphans.
    let done = rtx
        .open_table(META)?
        .get(K_LOG_DONE)?
        .map(|g| g.value())
        .unwrap_or(0);
    match crate::alog::pending(data_dir, done) {
        Ok(p) => {
            rep.log_pending = p.records;
            msg_files.extend(p.msg_files);
            queue_files.extend(p.queue_files);
        }
        Err(e) => rep.problems.push(format!("acceptance log: {e}")),
    }
    scan_files(data_dir, Area::Msg, &msg_files, rep)?;
    scan_files(data_dir, Area::Queue, &queue_files, rep)?;
    Ok(())
}

fn scan_files(
    data_dir: &Path,
    area: Area,
    referenced: &BTreeSet<u64>,
    rep: &mut VerifyReport,
) -> Result<(), StoreError> {
    let root = data_dir.join(area.dir_name());
    let shards = match fs::read_dir(&root) {
        Ok(r) => r,
        Err(e) => {
            rep.problems
                .push(format!("directory {}: {e}", root.display()));
            return Ok(());
        }
    };
    for shard in shards {
        let shard = shard.map_err(|e| StoreError::io("read directory", &root, e))?;
        let sp = shard.path();
        if !sp.is_dir() {
            rep.problems
                .push(format!("{}: unexpected file", sp.display()));
            continue;
        }
        let sname = shard.file_name().to_string_lossy().into_owned();
        for f in fs::read_dir(&sp).map_err(|e| StoreError::io("read directory", &sp, e))? {
            let f = f.map_err(|e| StoreError::io("read directory", &sp, e))?;
            let name = f.file_name().to_string_lossy().into_owned();
            match files::parse_name(&sname, &name) {
                Some(id) if referenced.contains(&id) => {}
                Some(_) => rep.orphans.push(f.path()),
                None => rep
                    .problems
                    .push(format!("{}: unexpected file", f.path().display())),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alog::LOG_FILE;
    use rmox_core::UnixTime;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// A DSN recipient to queue (no sender account, null reverse path).
    fn dsn_rcpt() -> QueueRecipient {
        QueueRecipient {
            sender_account: None,
            mail_from: String::new(),
            recipient: "x@example.com".into(),
            has_8bit: false,
            smtputf8: false,
            requiretls: RequireTls::Default,
            transport: None,
            next_attempt: UnixTime(1),
            queued: UnixTime(1),
            hold: false,
            dsn: DsnParams::default(),
            is_dsn: true,
            from_id: None,
        }
    }

    fn delivery(msg: &[u8], t: i64) -> Delivery<'_> {
        Delivery {
            account: "a".into(),
            mailbox: "Inbox".into(),
            head: &[],
            message: msg,
            flags: Flags::default(),
            received: UnixTime(t),
            info: MessageInfo {
                remote_ip: Some("192.0.2.1".parse().unwrap()),
                ..Default::default()
            },
        }
    }

    /// Index entries of recent deliveries that are still in memory (crate::overlay), not
    /// in the table, are in the backup's index.
    #[test]
    fn backup_copies_index_entries_still_in_memory() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("data")).unwrap();
        s.account_add("a", "example.org").unwrap();
        for t in 1..=5 {
            s.deliver(delivery(b"recent", t)).unwrap();
        }
        assert!(s.overlay.waiting() > 0);
        let dest = d.path().join("backup");
        s.backup(&dest).unwrap();
        let b = Store::open(&dest).unwrap();
        let count = |st: &Store, kind, v| st.count_since("a", kind, v, UnixTime(0)).unwrap();
        for st in [&s, &b] {
            assert_eq!(count(st, IndexKind::Mailbox, "Inbox"), 5);
            assert_eq!(count(st, IndexKind::Network, "192.0.2.1/32"), 5);
        }
    }

    #[test]
    fn verify_finds_damage_and_orphans() {
        let d = tempfile::tempdir().unwrap();
        // Two messages with files (larger than INLINE_BODY_MAX), one in the database.
        let big = vec![b'x'; crate::INLINE_BODY_MAX + 1];
        let (id1, id2, qmsg) = {
            let s = Store::open(d.path()).unwrap();
            s.account_add("a", "example.org").unwrap();
            let id1 = s.deliver(delivery(&big, 1)).unwrap();
            let id2 = s.deliver(delivery(&big, 2)).unwrap();
            let small = s.deliver(delivery(b"small", 3)).unwrap();
            assert!(!files::path(d.path(), Area::Msg, small.0).exists());
            let q = s.queue_add(b"queued", vec![dsn_rcpt()]).unwrap();
            let qmsg = s.queue_get(q[0]).unwrap().unwrap().msg_id;
            (id1, id2, qmsg)
        };
        let clean = verify(d.path());
        assert!(clean.is_ok(), "{:?}", clean.lines());
        assert!(clean.orphans.is_empty());
        assert_eq!((clean.messages, clean.queue_entries), (3, 1));
        // An orphan (crash between file write and commit) is harmless.
        let orphan = files::path(d.path(), Area::Msg, id2.0 + 100);
        fs::write(&orphan, b"half").unwrap();
        let r = verify(d.path());
        assert!(r.is_ok());
        assert_eq!(r.orphans, vec![orphan.clone()]);
        assert!(r.lines()[0].ends_with("orphan, safe to delete"));
        // Damage: a truncated message, a missing one, a missing queued message.
        fs::write(files::path(d.path(), Area::Msg, id1.0), b"on").unwrap();
        fs::remove_file(files::path(d.path(), Area::Msg, id2.0)).unwrap();
        fs::remove_file(files::path(d.path(), Area::Queue, qmsg)).unwrap();
        let r = verify(d.path());
        assert_eq!(r.problems.len(), 3, "{:?}", r.problems);
        assert!(
            r.problems[0].contains(&format!("has 2 bytes, record says {}", big.len())),
            "{:?}",
            r.problems
        );
        assert!(r.problems[1].contains("missing"));
        assert!(r.problems[2].starts_with("queued message"));
        // Not a data directory at all.
        let empty = tempfile::tempdir().unwrap();
        assert!(!verify(empty.path()).is_ok());
    }

    /// Found by the crash points: after a crash (the database not closed cleanly), verify
    /// answered "verify stopped: database: Database repair aborted." and `rmox verifydata`
    /// called the data directory damaged, though the next start recovers it. Verify now
    /// checks a recovered copy and says recovery is due, without calling it damage.
    #[test]
    fn verify_after_a_crash_reports_recovery_not_damage() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("data");
        let copy = d.path().join("crashed");
        let s = Store::open(&src).unwrap();
        s.account_add("a", "example.org").unwrap();
        let big = vec![b'x'; crate::INLINE_BODY_MAX + 1];
        // A large message is committed durably with its file; a small one and a small
        // queued message are acknowledged by the acceptance log.
        let id = s.deliver(delivery(&big, 1)).unwrap();
        let small = s.deliver(delivery(b"small", 2)).unwrap();
        let q = s.queue_add(b"queued", vec![dsn_rcpt()]).unwrap();
        let qmsg = s.queue_get(q[0]).unwrap().unwrap().msg_id;
        // What a crash leaves: the files as they are while the store is open.
        fs::create_dir_all(copy.join("msg")).unwrap();
        fs::create_dir_all(copy.join("queue")).unwrap();
        fs::copy(src.join(DB_FILE), copy.join(DB_FILE)).unwrap();
        fs::copy(src.join(LOG_FILE), copy.join(LOG_FILE)).unwrap();
        let f = files::path(&src, Area::Msg, id.0);
        let to = files::path(&copy, Area::Msg, id.0);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(&f, &to).unwrap();
        let qf = files::path(&copy, Area::Queue, qmsg);
        fs::create_dir_all(qf.parent().unwrap()).unwrap();
        fs::copy(files::path(&src, Area::Queue, qmsg), &qf).unwrap();
        drop(s);
        let db_before = fs::read(copy.join(DB_FILE)).unwrap();
        let r = verify(&copy);
        assert!(r.is_ok(), "{:?}", r.lines());
        assert!(r.recovered);
        // Two writes are only in the acceptance log; the queued message's file is not an
        // orphan.
        assert_eq!((r.messages, r.queue_entries, r.log_pending), (1, 0, 2));
        assert!(r.orphans.is_empty(), "{:?}", r.orphans);
        assert!(
            r.lines()[0].contains("not closed cleanly"),
            "{:?}",
            r.lines()
        );
        // Verify changed nothing; a start recovers, and then all is clean.
        assert_eq!(fs::read(copy.join(DB_FILE)).unwrap(), db_before);
        let s = Store::open(&copy).unwrap();
        assert_eq!(s.message_bytes(id).unwrap(), big);
        assert_eq!(s.message_bytes(small).unwrap(), b"small");
        assert_eq!(s.queue_message(qmsg).unwrap(), b"queued");
        drop(s);
        let r = verify(&copy);
        assert!(r.is_ok() && !r.recovered, "{:?}", r.lines());
        // A damaged copy is still damage, recovered or not.
        let s = Store::open(&src).unwrap();
        fs::copy(src.join(DB_FILE), copy.join(DB_FILE)).unwrap();
        fs::remove_file(&to).unwrap();
        let r = verify(&copy);
        drop(s);
        assert!(r.recovered && !r.is_ok(), "{:?}", r.lines());
    }

    /// Backup while another thread keeps storing: the copy verifies clean, opens, and holds
    /// a prefix-consistent snapshot whose messages match the source byte for byte.
    #[test]
    fn backup_while_storing() {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(Store::open(&d.path().join("data")).unwrap());
        s.account_add("a", "example.org").unwrap();
        for i in 0..50 {
            s.deliver(delivery(format!("message {i}").as_bytes(), i))
                .unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut i = 1000;
                while !stop.load(Ordering::SeqCst) {
                    let m = format!("message {i}");
                    let id = s.deliver(delivery(m.as_bytes(), i)).unwrap();
                    if i % 3 == 0 {
                        s.expunge(id).unwrap();
                    }
                    i += 1;
                }
                i
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(20));
        let dest = d.path().join("backup");
        let rep = s.backup(&dest).unwrap();
        stop.store(true, Ordering::SeqCst);
        let n = writer.join().unwrap();
        assert!(n > 1000, "writer made progress");
        assert!(rep.messages >= 50);
        assert!(matches!(s.backup(&dest), Err(StoreError::Invalid(_))));
        let v = verify(&dest);
        assert!(v.is_ok() && v.orphans.is_empty(), "{:?}", v.lines());
        let b = Store::open(&dest).unwrap();
        let msgs = b.messages("a").unwrap();
        assert_eq!(
            msgs.iter().filter(|m| !m.expunged).count() as u64,
            rep.messages
        );
        let mut total = 0;
        for m in &msgs {
            assert_eq!(s.message(m.id).unwrap().map(|r| r.size), Some(m.size));
            if !m.expunged {
                let bytes = b.message_bytes(m.id).unwrap();
                assert_eq!(bytes, format!("message {}", m.received.0).into_bytes());
                total += m.size;
            }
        }
        assert_eq!(b.account_usage("a").unwrap(), total);
        // The index holds every message's entries (those still in memory at the backup
        // included) and none of a message the copy does not have.
        let since = UnixTime(i64::MIN);
        assert_eq!(
            b.count_since("a", IndexKind::Mailbox, "Inbox", since)
                .unwrap(),
            rep.messages
        );
        assert_eq!(
            b.count_since("a", IndexKind::Network, "192.0.2.1/32", since)
                .unwrap(),
            msgs.len() as u64
        );
        // The backup is a working store.
        b.deliver(delivery(b"after", 1)).unwrap();
        drop(b);
        drop(s);
        let src = verify(&d.path().join("data"));
        assert!(src.is_ok(), "{:?}", src.lines());
    }
}
