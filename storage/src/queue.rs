//! The outgoing queue, hold rules, suppression list, outgoing log, reports and policy caches.

use std::sync::atomic::Ordering;

use redb::{ReadableTable, WriteTransaction};
use rmox_core::UnixTime;

use crate::error::StoreError;
use crate::files::{self, Area};
use crate::model::*;
use crate::store::{ip_networks, Store};
use crate::tables::*;

/// One entry's delivery attempt for [`Store::queue_record`].
pub struct QueueRecord {
    /// The entry.
    pub id: QueueId,
    /// Records the attempt (may change anything but `id`, `msg_id` and `size`).
    pub change: crate::QueueChange,
    /// When the entry leaves the queue: its outcome.
    pub retire: Option<Outcome>,
    /// The sender's failures in a row to the recipient, as [`Store::failure_streak_record`]
    /// records them: (account, address, failed).
    pub streak: Option<(String, String, bool)>,
    /// The webhook this attempt causes, stored in the same commit (not when the entry is
    /// gone).
    pub webhook: Option<crate::Webhook>,
}

/// What [`Store::queue_record`] did.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The entries that were gone (dropped or retired meanwhile): nothing was recorded for
    /// them.
    pub gone: Vec<QueueId>,
    /// For each record in order, the failures in a row after it (0 without a streak, or
    /// when the entry was gone).
    pub streaks: Vec<u32>,
    /// What became of each notice given to [`Store::queue_record_with`], in order.
    pub notices: Vec<NoticeOutcome>,
}

/// A message that queue results call for (a DSN), written in their commit by
/// [`Store::queue_record_with`].
pub struct Notice<'a> {
    /// The entries it reports on: it is not written when one of them is gone.
    pub about: Vec<QueueId>,
    /// Where it goes.
    pub message: NoticeMessage<'a>,
}

/// Where a [`Notice`] goes.
pub enum NoticeMessage<'a> {
    /// Into a local mailbox.
    Deliver(Delivery<'a>),
    /// Into the queue, with its one recipient.
    Queue(&'a [u8], QueueRecipient),
}

/// What became of a [`Notice`], in order, in [`Recorded::notices`].
#[derive(Debug)]
pub enum NoticeOutcome {
    /// Delivered into the local mailbox.
    Delivered(MessageId),
    /// Queued as this entry.
    Queued(QueueId),
    /// Not written: an entry it is about was gone.
    Gone,
    /// Not written: the local delivery was refused (the error says why).
    Refused(StoreError),
}

/// A notice's write inside the commit.
enum PlannedWrite {
    Deliver(MessageRecord),
    Queue {
        msg_id: u64,
        size: u64,
        first: u64,
        rcpt: QueueRecipient,
    },
}

fn get_entry(txn: &WriteTransaction, id: QueueId) -> Result<QueueEntry, StoreError> {
    let t = txn.open_table(QUEUE)?;
    let g = t.get(id.0)?;
    match g {
        Some(g) => dec("queue", g.value()),
        None => Err(StoreError::NoQueueEntry(id)),
    }
}

/// The records of a queued message (its file already written as `msg_id`) and its entries
/// `first..`, with the hold rules applied.
pub(crate) fn queue_add_txn(
    txn: &WriteTransaction,
    msg_id: u64,
    size: u64,
    first: u64,
    recipients: Vec<QueueRecipient>,
) -> Result<Vec<QueueId>, StoreError> {
    let n = recipients.len() as u64;
    let rules: Vec<HoldRule> = {
        let t = txn.open_table(HOLD_RULES)?;
        let mut v = Vec::new();
        for r in t.iter()? {
            v.push(dec("hold_rules", r?.1.value())?);
        }
        v
    };
    txn.open_table(QUEUE_MSGS)?.insert(msg_id, (size, n))?;
    let mut from_ids = txn.open_table(FROM_IDS)?;
    let mut ids = Vec::with_capacity(recipients.len());
    for (i, mut rcpt) in recipients.into_iter().enumerate() {
        if rules.iter().any(|r| r.matches(&rcpt)) {
            rcpt.hold = true;
        }
        if let Some(f) = &rcpt.from_id {
            // Ids are random (mox's 16 bytes): a repeat is a caller's bug, and would
            // attribute DSNs to the wrong message.
            if f.id.is_empty() || from_ids.get(f.id.as_str())?.is_some() {
                return Err(StoreError::Invalid(format!(
                    "queue_add: from id {:?} empty or not unique",
                    f.id
                )));
            }
            from_ids.insert(f.id.as_str(), first + i as u64)?;
        }
        let e = QueueEntry {
            id: QueueId(first + i as u64),
            msg_id,
            size,
            rcpt,
            attempts: 0,
            last_error: None,
            last_attempt: None,
            history: Vec::new(),
        };
        put_entry(txn, None, &e)?;
        ids.push(e.id);
    }
    Ok(ids)
}

/// Writes `new` over `old` (same id), keeping the due index in step.
fn put_entry(
    txn: &WriteTransaction,
    old: Option<&QueueEntry>,
    new: &QueueEntry,
) -> Result<(), StoreError> {
    let mut due = txn.open_table(QUEUE_DUE)?;
    if let Some(o) = old {
        if !o.rcpt.hold {
            due.remove((o.rcpt.next_attempt.0, o.id.0))?;
        }
    }
    if !new.rcpt.hold {
        due.insert((new.rcpt.next_attempt.0, new.id.0), ())?;
    }
    txn.open_table(QUEUE)?
        .insert(new.id.0, enc(new)?.as_slice())?;
    Ok(())
}

/// Removes an entry and its due index; drops its reference to the message. Returns the
/// message id when that was the last reference (the file can go).
fn remove_entry(txn: &WriteTransaction, e: &QueueEntry) -> Result<Option<u64>, StoreError> {
    if !e.rcpt.hold {
        txn.open_table(QUEUE_DUE)?
            .remove((e.rcpt.next_attempt.0, e.id.0))?;
    }
    txn.open_table(QUEUE)?.remove(e.id.0)?;
    let mut m = txn.open_table(QUEUE_MSGS)?;
    let cur = m.get(e.msg_id)?.map(|g| g.value());
    match cur {
        Some((size, refs)) if refs > 1 => {
            m.insert(e.msg_id, (size, refs - 1))?;
            Ok(None)
        }
        Some(_) => {
            m.remove(e.msg_id)?;
            Ok(Some(e.msg_id))
        }
        None => Ok(None),
    }
}

/// The failure streak change of [`Store::failure_streak_record`] inside `txn` (`address`
/// already lower case).
fn streak_txn(
    txn: &WriteTransaction,
    account: &str,
    address: &str,
    failed: bool,
) -> Result<u32, StoreError> {
    let mut t = txn.open_table(FAILURE_STREAKS)?;
    let key = (account, address);
    if !failed {
        t.remove(key)?;
        return Ok(0);
    }
    let n = t.get(key)?.map_or(0, |v| v.value()).saturating_add(1);
    t.insert(key, n)?;
    Ok(n)
}

fn filter_match(f: &QueueFilter, e: &QueueEntry) -> bool {
    // Account and domains select as a hold rule's conditions do (core's matcher).
    let by_sender_and_domains = rmox_core::queue::HoldRule {
        account: f.account.as_deref(),
        sender_domain: f.from_domain.as_deref(),
        recipient_domain: f.to_domain.as_deref(),
    };
    f.ids.as_ref().is_none_or(|ids| ids.contains(&e.id))
        && by_sender_and_domains.matches(
            e.rcpt.sender_account.as_deref(),
            &e.rcpt.mail_from,
            &e.rcpt.recipient,
        )
        && f.hold.is_none_or(|h| e.rcpt.hold == h)
        && f.due_by.is_none_or(|t| e.rcpt.next_attempt <= t)
        && f.transport.as_ref().is_none_or(|t| *t == e.rcpt.transport)
}

impl Store {
    /// Queues `msg` for `recipients`: the message is stored once, with one entry per
    /// recipient. Entries matching a hold rule are held. Durable before return; ids in the
    /// order of `recipients`.
    pub fn queue_add(
        &self,
        msg: &[u8],
        recipients: Vec<QueueRecipient>,
    ) -> Result<Vec<QueueId>, StoreError> {
        self.queue_add_parts(&[msg], recipients)
    }

    /// [`Store::queue_add`] for a message given in consecutive parts (header fields in
    /// memory, then a memory map of a spooled message): written in order, never joined in
    /// memory.
    pub fn queue_add_parts(
        &self,
        parts: &[&[u8]],
        recipients: Vec<QueueRecipient>,
    ) -> Result<Vec<QueueId>, StoreError> {
        if recipients.is_empty() {
            return Err(StoreError::Invalid("queue_add without recipients".into()));
        }
        let (msg_id, first) = self.queue_reserve(recipients.len());
        let path = files::path(&self.dir, Area::Queue, msg_id);
        let dir = match files::write(
            &self.dir,
            Area::Queue,
            msg_id,
            parts,
            !self.committer.batch_syncs_files(),
        ) {
            Ok(d) => d,
            Err(e) => {
                files::remove(&path);
                return Err(e);
            }
        };
        let size = parts.iter().map(|p| p.len() as u64).sum();
        let log = if self.committer.logs() && size as usize <= crate::alog::LOG_WRITE_MAX {
            let mut r = crate::alog::Redo::default();
            r.file(Area::Queue, msg_id, parts);
            match r.finish(&[], Some((msg_id, size, first, &recipients))) {
                Ok(b) => Some(b),
                Err(e) => {
                    files::remove(&path);
                    return Err(e);
                }
            }
        } else {
            None
        };
        self.write_logged(vec![path], vec![dir], log, move |txn| {
            queue_add_txn(txn, msg_id, size, first, recipients)
        })
    }

    /// Reserves a queue message id and `n` entry ids.
    pub(crate) fn queue_reserve(&self, n: usize) -> (u64, u64) {
        let msg_id = self.counters.next_qmsg.fetch_add(1, Ordering::SeqCst);
        let first = self
            .counters
            .next_queue
            .fetch_add(n as u64, Ordering::SeqCst);
        (msg_id, first)
    }

    /// Entries matching `filter`, by id. Scans the queue (an administrative operation).
    pub fn queue_list(&self, filter: &QueueFilter) -> Result<Vec<QueueEntry>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(QUEUE)?;
        let mut v = Vec::new();
        for r in t.iter()? {
            let e: QueueEntry = dec("queue", r?.1.value())?;
            if filter_match(filter, &e) {
                v.push(e);
            }
        }
        Ok(v)
    }

    /// One entry.
    pub fn queue_get(&self, id: QueueId) -> Result<Option<QueueEntry>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(QUEUE)?;
        let r = t.get(id.0)?;
        r.map(|g| dec("queue", g.value())).transpose()
    }

    /// Entries due at `now` (not held, `next_attempt <= now`) ordered by next attempt then
    /// id, at most `limit`; a range scan of the due index.
    pub fn queue_due(&self, now: UnixTime, limit: usize) -> Result<Vec<QueueEntry>, StoreError> {
        let rtx = self.read()?;
        let due = rtx.open_table(QUEUE_DUE)?;
        let q = rtx.open_table(QUEUE)?;
        let mut v = Vec::new();
        for r in due.range((i64::MIN, 0u64)..=(now.0, u64::MAX))? {
            if v.len() >= limit {
                break;
            }
            let (k, _) = r?;
            if let Some(g) = q.get(k.value().1)? {
                v.push(dec("queue", g.value())?);
            }
        }
        Ok(v)
    }

    /// The earliest `next_attempt` of any entry not held (to sleep until then).
    pub fn queue_next_due(&self) -> Result<Option<UnixTime>, StoreError> {
        let rtx = self.read()?;
        let due = rtx.open_table(QUEUE_DUE)?;
        let v = due.first()?.map(|(k, _)| UnixTime(k.value().0));
        Ok(v)
    }

    /// The bytes of a queued message (by [`QueueEntry::msg_id`]).
    pub fn queue_message(&self, msg_id: u64) -> Result<Vec<u8>, StoreError> {
        files::read(&self.dir, Area::Queue, msg_id)
    }

    /// Changes an entry: `f` gets the current entry (inside the commit) and may change
    /// anything but `id`, `msg_id` and `size` (restored if changed): record an attempt
    /// (`attempts`, `last_error`, `last_attempt`, `history.push`), set `rcpt.next_attempt`,
    /// hold or release. Returns the entry as stored.
    pub fn queue_update<F>(&self, id: QueueId, f: F) -> Result<QueueEntry, StoreError>
    where
        F: FnOnce(&mut QueueEntry) + Send + 'static,
    {
        self.write(vec![], vec![], move |txn| {
            let old = get_entry(txn, id)?;
            let mut new = old.clone();
            f(&mut new);
            new.id = old.id;
            new.msg_id = old.msg_id;
            new.size = old.size;
            put_entry(txn, Some(&old), &new)?;
            Ok(new)
        })
    }

    /// Holds an entry (not returned by `queue_due` until released).
    pub fn queue_hold(&self, id: QueueId) -> Result<(), StoreError> {
        self.queue_update(id, |e| e.rcpt.hold = true).map(|_| ())
    }

    /// Releases a held entry.
    pub fn queue_release(&self, id: QueueId) -> Result<(), StoreError> {
        self.queue_update(id, |e| e.rcpt.hold = false).map(|_| ())
    }

    /// Moves an entry out of the queue into the retired list with its history and outcome;
    /// the message file goes when no entry references it anymore.
    pub fn queue_retire(
        &self,
        id: QueueId,
        outcome: Outcome,
        now: UnixTime,
    ) -> Result<(), StoreError> {
        let freed = self.write(vec![], vec![], move |txn| {
            let e = get_entry(txn, id)?;
            let freed = remove_entry(txn, &e)?;
            let r = RetiredEntry {
                entry: e,
                outcome,
                retired: now,
            };
            txn.open_table(RETIRED)?.insert(id.0, enc(&r)?.as_slice())?;
            Ok(freed)
        })?;
        if let Some(m) = freed {
            self.remove_files(vec![files::path(&self.dir, Area::Queue, m)]);
        }
        Ok(())
    }

    /// Records delivery attempts of several entries in one durable commit (issue 15: a crash
    /// between recording an attempt and retiring its entry made the next start deliver the
    /// message again). For each entry, `change` records the attempt as [`Store::queue_update`]
    /// does; then, when `retire` is given, the entry moves to the retired list as
    /// [`Store::queue_retire`] does; with `streak`, the sender's failures in a row are
    /// recorded as [`Store::failure_streak_record`] does (one fsync for all of it, where
    /// these were up to three each). Message files no entry references anymore are removed
    /// right after the commit (a crash in between leaves them for
    /// [`Store::queue_remove_orphans`]). Entries that are gone are skipped and returned.
    pub fn queue_record(
        &self,
        records: Vec<QueueRecord>,
        now: UnixTime,
    ) -> Result<Recorded, StoreError> {
        self.queue_record_with(records, Vec::new(), now)
    }

    /// [`Store::queue_record`], and in the same commit the messages the results call for
    /// (DSNs): each is delivered into a local mailbox or queued, unless an entry it is
    /// about was gone (dropped or retired meanwhile: [`NoticeOutcome::Gone`]) or the local
    /// delivery is refused (no such account, quota: [`NoticeOutcome::Refused`]; the
    /// results are recorded all the same). A crash can no longer record a failure and lose
    /// the DSN that reports it: both are durable in one commit, or neither is.
    pub fn queue_record_with(
        &self,
        records: Vec<QueueRecord>,
        notices: Vec<Notice<'_>>,
        now: UnixTime,
    ) -> Result<Recorded, StoreError> {
        if records.is_empty() && notices.is_empty() {
            return Ok(Recorded::default());
        }
        let sync = !self.committer.batch_syncs_files();
        // The notices' files are written (and synced with the commit) first, as
        // [`Store::deliver_and_queue`] writes its own.
        let mut new_files = Vec::new();
        let mut dirs = Vec::new();
        let mut planned = Vec::with_capacity(notices.len());
        let written = (|| {
            for n in notices {
                let (area, id, parts, write) = match n.message {
                    NoticeMessage::Deliver(d) => {
                        let id = self.counters.next_msg.fetch_add(1, Ordering::SeqCst);
                        let networks = d.info.remote_ip.map(ip_networks).unwrap_or_default();
                        let rec = MessageRecord {
                            id: MessageId(id),
                            account: d.account.clone(),
                            mailbox: d.mailbox.clone(),
                            received: d.received,
                            flags: d.flags,
                            size: (d.head.len() + d.message.len()) as u64,
                            info: d.info.clone(),
                            networks,
                            expunged: false,
                        };
                        (
                            Area::Msg,
                            id,
                            [d.head, d.message],
                            PlannedWrite::Deliver(rec),
                        )
                    }
                    NoticeMessage::Queue(msg, rcpt) => {
                        let (msg_id, first) = self.queue_reserve(1);
                        let w = PlannedWrite::Queue {
                            msg_id,
                            size: msg.len() as u64,
                            first,
                            rcpt,
                        };
                        (Area::Queue, msg_id, [&[][..], msg], w)
                    }
                };
                let path = files::path(&self.dir, area, id);
                new_files.push(path.clone());
                let dir = files::write(&self.dir, area, id, &parts, sync)?;
                if !dirs.contains(&dir) {
                    dirs.push(dir);
                }
                planned.push((n.about, path, write));
            }
            Ok::<(), StoreError>(())
        })();
        if let Err(e) = written {
            for p in &new_files {
                files::remove(p);
            }
            return Err(e);
        }
        let bloom = self.bloom.clone();
        let ikeys = self.ikeys;
        let (freed, done, unused) = self.write(new_files, dirs, move |txn| {
            let mut freed = Vec::new();
            let mut done = Recorded::default();
            for r in records {
                let old = match get_entry(txn, r.id) {
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
                        streak_txn(txn, account, &address.to_ascii_lowercase(), *failed)?
                    }
                    None => 0,
                });
                if let Some(h) = &r.webhook {
                    crate::webhook::webhook_add_txn(txn, h)?;
                }
                let mut new = old.clone();
                (r.change)(&mut new);
                new.id = old.id;
                new.msg_id = old.msg_id;
                new.size = old.size;
                match r.retire {
                    None => put_entry(txn, Some(&old), &new)?,
                    Some(outcome) => {
                        // The due index holds the old entry's time: remove by it.
                        freed.extend(remove_entry(txn, &old)?);
                        let retired = RetiredEntry {
                            entry: new,
                            outcome,
                            retired: now,
                        };
                        txn.open_table(RETIRED)?
                            .insert(r.id.0, enc(&retired)?.as_slice())?;
                    }
                }
            }
            let mut unused = Vec::new();
            for (about, path, write) in planned {
                if about.iter().any(|id| done.gone.contains(id)) {
                    done.notices.push(NoticeOutcome::Gone);
                    unused.push(path);
                    continue;
                }
                let outcome = match write {
                    PlannedWrite::Deliver(rec) => {
                        // deliver_txn checks the account and its quota before it writes.
                        match crate::store::deliver_txn(
                            txn,
                            std::slice::from_ref(&rec),
                            ikeys,
                            bloom.as_deref(),
                            None,
                        ) {
                            Ok(_) => NoticeOutcome::Delivered(rec.id),
                            Err(
                                e @ (StoreError::NoAccount(_) | StoreError::QuotaExceeded { .. }),
                            ) => {
                                unused.push(path);
                                NoticeOutcome::Refused(e)
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    PlannedWrite::Queue {
                        msg_id,
                        size,
                        first,
                        rcpt,
                    } => {
                        queue_add_txn(txn, msg_id, size, first, vec![rcpt])?;
                        NoticeOutcome::Queued(QueueId(first))
                    }
                };
                done.notices.push(outcome);
            }
            Ok((freed, done, unused))
        })?;
        let mut remove: Vec<_> = freed
            .into_iter()
            .map(|m| files::path(&self.dir, Area::Queue, m))
            .collect();
        remove.extend(unused);
        if !remove.is_empty() {
            self.remove_files(remove);
        }
        Ok(done)
    }

    /// Removes queue message files that no queue entry references (left by a crash between
    /// the commit that retired their last entry and the file's removal, or between writing
    /// a file and the commit that would have queued it). Call before the queue is used (at
    /// start): a file being queued concurrently would look unreferenced. Returns the
    /// removed message ids.
    pub fn queue_remove_orphans(&self) -> Result<Vec<u64>, StoreError> {
        let referenced: std::collections::BTreeSet<u64> = {
            let rtx = self.read()?;
            let t = rtx.open_table(QUEUE_MSGS)?;
            let mut v = std::collections::BTreeSet::new();
            for row in t.iter()? {
                v.insert(row?.0.value());
            }
            v
        };
        let root = self.dir.join(Area::Queue.dir_name());
        let mut removed = Vec::new();
        let shards = match std::fs::read_dir(&root) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(StoreError::io("read directory", &root, e)),
        };
        for shard in shards {
            let shard = shard.map_err(|e| StoreError::io("read directory", &root, e))?;
            let sp = shard.path();
            if !sp.is_dir() {
                continue;
            }
            let sname = shard.file_name().to_string_lossy().into_owned();
            for f in std::fs::read_dir(&sp).map_err(|e| StoreError::io("read directory", &sp, e))? {
                let f = f.map_err(|e| StoreError::io("read directory", &sp, e))?;
                let name = f.file_name().to_string_lossy().into_owned();
                if let Some(id) = files::parse_name(&sname, &name) {
                    if !referenced.contains(&id) {
                        self.remove_files(vec![f.path()]);
                        removed.push(id);
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Removes an entry without a trace (administrator's drop); the message file goes when
    /// no entry references it anymore.
    pub fn queue_drop(&self, id: QueueId) -> Result<(), StoreError> {
        self.queue_drop_with(id, None)
    }

    /// [`Store::queue_drop`], storing `hook` (the `canceled` webhook) in the same commit.
    pub fn queue_drop_with(
        &self,
        id: QueueId,
        hook: Option<crate::Webhook>,
    ) -> Result<(), StoreError> {
        let freed = self.write(vec![], vec![], move |txn| {
            let e = get_entry(txn, id)?;
            if let Some(h) = &hook {
                crate::webhook::webhook_add_txn(txn, h)?;
            }
            remove_entry(txn, &e)
        })?;
        if let Some(m) = freed {
            self.remove_files(vec![files::path(&self.dir, Area::Queue, m)]);
        }
        Ok(())
    }

    /// Retired entries, newest id first, at most `limit`.
    pub fn queue_retired(&self, limit: usize) -> Result<Vec<RetiredEntry>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(RETIRED)?;
        let mut v = Vec::new();
        for r in t.iter()?.rev().take(limit) {
            v.push(dec("retired", r?.1.value())?);
        }
        Ok(v)
    }

    /// Removes retired entries retired before `before`; returns how many.
    pub fn queue_retired_cleanup(&self, before: UnixTime) -> Result<u64, StoreError> {
        self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(RETIRED)?;
            let mut n = 0u64;
            let mut gone = Vec::new();
            // Undecodable records are kept (verify reports them).
            t.retain(|_, v| match dec::<RetiredEntry>("retired", v) {
                Ok(r) if r.retired < before => {
                    n += 1;
                    gone.extend(r.entry.rcpt.from_id.map(|f| f.id));
                    false
                }
                _ => true,
            })?;
            let mut from_ids = txn.open_table(FROM_IDS)?;
            for f in &gone {
                from_ids.remove(f.as_str())?;
            }
            Ok(n)
        })
    }

    /// The queue entry whose MAIL FROM carried `from_id`, queued or retired (`true`).
    pub fn queue_by_from_id(
        &self,
        from_id: &str,
    ) -> Result<Option<(QueueEntry, bool)>, StoreError> {
        let rtx = self.read()?;
        let Some(id) = rtx.open_table(FROM_IDS)?.get(from_id)?.map(|g| g.value()) else {
            return Ok(None);
        };
        if let Some(g) = rtx.open_table(QUEUE)?.get(id)? {
            return Ok(Some((dec("queue", g.value())?, false)));
        }
        match rtx.open_table(RETIRED)?.get(id)? {
            Some(g) => Ok(Some((
                dec::<RetiredEntry>("retired", g.value())?.entry,
                true,
            ))),
            None => Ok(None),
        }
    }

    /// Appends `attempt` to the history of entry `id`, queued or retired (a DSN that came
    /// back about it, say); `false` when the entry is gone.
    pub fn queue_note(&self, id: QueueId, attempt: Attempt) -> Result<bool, StoreError> {
        self.write(vec![], vec![], move |txn| {
            let mut q = txn.open_table(QUEUE)?;
            let queued: Option<QueueEntry> = match q.get(id.0)? {
                Some(g) => Some(dec("queue", g.value())?),
                None => None,
            };
            if let Some(mut e) = queued {
                e.history.push(attempt);
                q.insert(id.0, enc(&e)?.as_slice())?;
                return Ok(true);
            }
            let mut r = txn.open_table(RETIRED)?;
            let retired: Option<RetiredEntry> = match r.get(id.0)? {
                Some(g) => Some(dec("retired", g.value())?),
                None => None,
            };
            match retired {
                Some(mut e) => {
                    e.entry.history.push(attempt);
                    r.insert(id.0, enc(&e)?.as_slice())?;
                    Ok(true)
                }
                None => Ok(false),
            }
        })
    }

    // ---- hold rules ----

    /// Adds a hold rule (its `id` is assigned); returns the id.
    pub fn hold_rule_add(&self, rule: HoldRule) -> Result<u64, StoreError> {
        self.write(vec![], vec![], move |txn| {
            let mut meta = txn.open_table(META)?;
            let id = meta.get(K_NEXT_RULE)?.map(|g| g.value()).unwrap_or(1);
            meta.insert(K_NEXT_RULE, id + 1)?;
            let r = HoldRule { id, ..rule };
            txn.open_table(HOLD_RULES)?
                .insert(id, enc(&r)?.as_slice())?;
            Ok(id)
        })
    }

    /// All hold rules.
    pub fn hold_rules(&self) -> Result<Vec<HoldRule>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(HOLD_RULES)?;
        let mut v = Vec::new();
        for r in t.iter()? {
            v.push(dec("hold_rules", r?.1.value())?);
        }
        Ok(v)
    }

    /// Removes a hold rule; true if it existed. Entries it held stay held.
    pub fn hold_rule_remove(&self, id: u64) -> Result<bool, StoreError> {
        self.write(vec![], vec![], move |txn| {
            Ok(txn.open_table(HOLD_RULES)?.remove(id)?.is_some())
        })
    }

    // ---- suppression list ----

    /// Adds (or replaces) a suppressed address for the account.
    pub fn suppression_add(&self, account: &str, s: Suppression) -> Result<(), StoreError> {
        let account = account.to_string();
        self.write(vec![], vec![], move |txn| {
            let s = Suppression {
                address: s.address.to_ascii_lowercase(),
                ..s
            };
            txn.open_table(SUPPRESSIONS)?
                .insert((account.as_str(), s.address.as_str()), enc(&s)?.as_slice())?;
            Ok(())
        })
    }

    /// The account's suppression list, by address.
    pub fn suppressions(&self, account: &str) -> Result<Vec<Suppression>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(SUPPRESSIONS)?;
        let mut v = Vec::new();
        for r in t.range((account, "")..)? {
            let (k, val) = r?;
            if k.value().0 != account {
                break;
            }
            v.push(dec("suppressions", val.value())?);
        }
        Ok(v)
    }

    /// Removes an address from the account's suppression list; true if it was there.
    pub fn suppression_remove(&self, account: &str, address: &str) -> Result<bool, StoreError> {
        let account = account.to_string();
        let address = address.to_ascii_lowercase();
        self.write(vec![], vec![], move |txn| {
            Ok(txn
                .open_table(SUPPRESSIONS)?
                .remove((account.as_str(), address.as_str()))?
                .is_some())
        })
    }

    /// Whether the address is on the account's suppression list (case-insensitive).
    pub fn is_suppressed(&self, account: &str, address: &str) -> Result<bool, StoreError> {
        let a = address.to_ascii_lowercase();
        let rtx = self.read()?;
        let t = rtx.open_table(SUPPRESSIONS)?;
        let v = t.get((account, a.as_str()))?.is_some();
        Ok(v)
    }

    /// Records the end of a delivery to `address` for `account`: a failed message adds
    /// one to the failures in a row, a delivered one ends the streak. Returns the failures
    /// in a row now (0 after a delivery).
    pub fn failure_streak_record(
        &self,
        account: &str,
        address: &str,
        failed: bool,
    ) -> Result<u32, StoreError> {
        let account = account.to_string();
        let address = address.to_ascii_lowercase();
        self.write(vec![], vec![], move |txn| {
            streak_txn(txn, &account, &address, failed)
        })
    }

    /// The failed deliveries in a row to `address` for `account`.
    pub fn failure_streak(&self, account: &str, address: &str) -> Result<u32, StoreError> {
        let a = address.to_ascii_lowercase();
        let rtx = self.read()?;
        let t = rtx.open_table(FAILURE_STREAKS)?;
        let v = t.get((account, a.as_str()))?.map_or(0, |v| v.value());
        Ok(v)
    }

    // ---- outgoing log (send limits) ----

    /// Records one outgoing message of `account` to `recipients` at `time`, noting which
    /// recipients were never sent to before. Returns the number of first-time recipients.
    pub fn record_outgoing(
        &self,
        account: &str,
        recipients: &[String],
        time: UnixTime,
    ) -> Result<u32, StoreError> {
        let account = account.to_string();
        let rcpts: Vec<String> = recipients.iter().map(|r| r.to_ascii_lowercase()).collect();
        self.write(vec![], vec![], move |txn| {
            let a = account.as_str();
            let mut sent = txn.open_table(SENT_TO)?;
            let mut first = 0u32;
            let mut seen = std::collections::BTreeSet::new();
            for r in &rcpts {
                if !seen.insert(r.as_str()) {
                    continue;
                }
                if sent.insert((a, r.as_str()), time.0)?.is_none() {
                    first += 1;
                }
                // Reputation asks about domains too: "@domain" for the exact domain and
                // "@.d" for each domain d at or above it (sent within d).
                if let Some((_, dom)) = r.rsplit_once('@') {
                    sent.insert((a, format!("@{dom}").as_str()), time.0)?;
                    let mut d = dom;
                    loop {
                        sent.insert((a, format!("@.{d}").as_str()), time.0)?;
                        match d.split_once('.') {
                            Some((_, rest)) if !rest.is_empty() => d = rest,
                            _ => break,
                        }
                    }
                }
            }
            let mut log = txn.open_table(OUTGOING)?;
            let seq = log
                .range((a, time.0, 0u64)..=(a, time.0, u64::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, _)| k.value().2 + 1)
                .unwrap_or(0);
            let n = u32::try_from(seen.len()).unwrap_or(u32::MAX);
            log.insert((a, time.0, seq), (n, first))?;
            Ok(first)
        })
    }

    /// Outgoing messages of `account` since `since` and how many first-time recipients
    /// they had: `(messages, first_time_recipients)`. A range scan of the log.
    pub fn count_outgoing(&self, account: &str, since: UnixTime) -> Result<(u64, u64), StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(OUTGOING)?;
        let (mut msgs, mut first) = (0u64, 0u64);
        for r in t.range((account, since.0, 0u64)..=(account, i64::MAX, u64::MAX))? {
            let (_, v) = r?;
            msgs += 1;
            first += u64::from(v.value().1);
        }
        Ok((msgs, first))
    }

    /// Whether `account` sent a message since `since` to: `SentTo::Address`, an address at
    /// exactly `SentTo::Domain`, or an address at or below `SentTo::Within` (one key each,
    /// kept by [`Store::record_outgoing`]; case-insensitive).
    pub fn sent_to_since(
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
        let rtx = self.read()?;
        let t = rtx.open_table(SENT_TO)?;
        let v = t
            .get((account, key.as_str()))?
            .is_some_and(|g| g.value() >= since.0);
        Ok(v)
    }

    /// Whether `account` has sent to `address` before (case-insensitive).
    pub fn has_sent_to(&self, account: &str, address: &str) -> Result<bool, StoreError> {
        let a = address.to_ascii_lowercase();
        let rtx = self.read()?;
        let t = rtx.open_table(SENT_TO)?;
        let v = t.get((account, a.as_str()))?.is_some();
        Ok(v)
    }

    /// Removes outgoing-log entries older than `before` (the sent-to list stays).
    pub fn outgoing_cleanup(&self, before: UnixTime) -> Result<(), StoreError> {
        self.write(vec![], vec![], move |txn| {
            txn.open_table(OUTGOING)?.retain(|k, _| k.1 >= before.0)?;
            Ok(())
        })
    }

    // ---- reports and policy caches ----

    /// Stores an opaque report record (a DMARC evaluation or TLS result serialized by the
    /// caller) for `domain` at `time`.
    pub fn report_add(
        &self,
        kind: ReportKind,
        domain: &str,
        time: UnixTime,
        record: Vec<u8>,
    ) -> Result<(), StoreError> {
        let d = domain.to_ascii_lowercase();
        self.write(vec![], vec![], move |txn| {
            let k = report_code(kind);
            let mut t = txn.open_table(REPORTS)?;
            let seq = t
                .range((k, d.as_str(), time.0, 0u64)..=(k, d.as_str(), time.0, u64::MAX))?
                .next_back()
                .transpose()?
                .map(|(k, _)| k.value().3 + 1)
                .unwrap_or(0);
            t.insert((k, d.as_str(), time.0, seq), record.as_slice())?;
            Ok(())
        })
    }

    /// Report records of `kind` for `domain`, oldest first, with their times.
    pub fn reports(
        &self,
        kind: ReportKind,
        domain: &str,
    ) -> Result<Vec<(UnixTime, Vec<u8>)>, StoreError> {
        let d = domain.to_ascii_lowercase();
        let k = report_code(kind);
        let rtx = self.read()?;
        let t = rtx.open_table(REPORTS)?;
        let mut v = Vec::new();
        for r in t.range((k, d.as_str(), i64::MIN, 0u64)..=(k, d.as_str(), i64::MAX, u64::MAX))? {
            let (key, val) = r?;
            v.push((UnixTime(key.value().2), val.value().to_vec()));
        }
        Ok(v)
    }

    /// All report records of `kind`, by domain then oldest first. Domain, time and sequence
    /// number identify a record (see [`Store::report_get`]).
    pub fn report_entries(&self, kind: ReportKind) -> Result<Vec<ReportEntry>, StoreError> {
        let k = report_code(kind);
        let rtx = self.read()?;
        let t = rtx.open_table(REPORTS)?;
        let mut v = Vec::new();
        for r in t.range((k, "", i64::MIN, 0u64)..)? {
            let (key, val) = r?;
            let key = key.value();
            if key.0 != k {
                break;
            }
            v.push(ReportEntry {
                domain: key.1.to_string(),
                time: UnixTime(key.2),
                seq: key.3,
                record: val.value().to_vec(),
            });
        }
        Ok(v)
    }

    /// The report record of `kind` for `domain` stored at `time` with sequence number `seq`.
    pub fn report_get(
        &self,
        kind: ReportKind,
        domain: &str,
        time: UnixTime,
        seq: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let d = domain.to_ascii_lowercase();
        let rtx = self.read()?;
        let t = rtx.open_table(REPORTS)?;
        let r = t.get((report_code(kind), d.as_str(), time.0, seq))?;
        Ok(r.map(|g| g.value().to_vec()))
    }

    /// Domains with report records of `kind`.
    pub fn report_domains(&self, kind: ReportKind) -> Result<Vec<String>, StoreError> {
        let k = report_code(kind);
        let rtx = self.read()?;
        let t = rtx.open_table(REPORTS)?;
        let mut v: Vec<String> = Vec::new();
        for r in t.range((k, "", i64::MIN, 0u64)..)? {
            let (key, _) = r?;
            let key = key.value();
            if key.0 != k {
                break;
            }
            if v.last().map(|s| s.as_str()) != Some(key.1) {
                v.push(key.1.to_string());
            }
        }
        Ok(v)
    }

    /// Removes report records of `kind` for `domain` older than `before` (after sending).
    pub fn reports_remove(
        &self,
        kind: ReportKind,
        domain: &str,
        before: UnixTime,
    ) -> Result<(), StoreError> {
        let d = domain.to_ascii_lowercase();
        let k = report_code(kind);
        self.write(vec![], vec![], move |txn| {
            txn.open_table(REPORTS)?.retain_in(
                (k, d.as_str(), i64::MIN, 0u64)..(k, d.as_str(), before.0, 0u64),
                |_, _| false,
            )?;
            Ok(())
        })
    }

    /// Stores (replaces) a cached MTA-STS policy (its domain is stored lower-case).
    pub fn mtasts_put(&self, rec: MtaStsRecord) -> Result<(), StoreError> {
        let mut rec = rec;
        rec.domain = rec.domain.to_ascii_lowercase();
        self.write(vec![], vec![], move |txn| {
            let d = rec.domain.clone();
            txn.open_table(MTASTS)?
                .insert(d.as_str(), enc(&rec)?.as_slice())?;
            Ok(())
        })
    }

    /// The cached MTA-STS policy of `domain`, expired or not.
    pub fn mtasts_get(&self, domain: &str) -> Result<Option<MtaStsRecord>, StoreError> {
        let d = domain.to_ascii_lowercase();
        let rtx = self.read()?;
        let t = rtx.open_table(MTASTS)?;
        let r = t.get(d.as_str())?;
        r.map(|g| dec("mtasts", g.value())).transpose()
    }

    /// Removes a cached MTA-STS policy.
    pub fn mtasts_remove(&self, domain: &str) -> Result<(), StoreError> {
        let d = domain.to_ascii_lowercase();
        self.write(vec![], vec![], move |txn| {
            txn.open_table(MTASTS)?.remove(d.as_str())?;
            Ok(())
        })
    }

    /// Sets the last-use time of a cached MTA-STS policy; `false` when none is cached.
    pub fn mtasts_touch(&self, domain: &str, at: UnixTime) -> Result<bool, StoreError> {
        let d = domain.to_ascii_lowercase();
        self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(MTASTS)?;
            let rec = match t.get(d.as_str())? {
                Some(g) => Some(dec::<MtaStsRecord>("mtasts", g.value())?),
                None => None,
            };
            let Some(mut rec) = rec else {
                return Ok(false);
            };
            rec.last_use = Some(at);
            t.insert(d.as_str(), enc(&rec)?.as_slice())?;
            Ok(true)
        })
    }

    /// Every cached MTA-STS policy, by domain.
    pub fn mtasts_list(&self) -> Result<Vec<MtaStsRecord>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(MTASTS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(dec("mtasts", v.value())?);
        }
        Ok(out)
    }
}

fn report_code(k: ReportKind) -> u8 {
    match k {
        ReportKind::DmarcEval => 1,
        ReportKind::TlsResult => 2,
        ReportKind::DmarcReport => 3,
        ReportKind::TlsReport => 4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MailStore;
    use proptest::prelude::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        (d, s)
    }

    fn rcpt(to: &str, next: i64) -> QueueRecipient {
        QueueRecipient {
            sender_account: Some("mjl".into()),
            mail_from: "mjl@example.org".into(),
            recipient: to.into(),
            has_8bit: false,
            smtputf8: false,
            requiretls: RequireTls::Required,
            transport: None,
            next_attempt: UnixTime(next),
            queued: UnixTime(1),
            hold: false,
            dsn: DsnParams {
                envid: Some("e1".into()),
                ret_full: Some(false),
                notify: vec!["FAILURE".into()],
                orcpt: Some("rfc822;x@example.com".into()),
            },
            is_dsn: false,
            from_id: None,
        }
    }

    /// A submission in parts (signature, our header fields, a spooled message) is queued
    /// as their concatenation, sized by all of them.
    #[test]
    fn queue_add_parts_writes_them_in_order() {
        let (_d, s) = store();
        let parts: [&[u8]; 3] = [
            b"DKIM-Signature: x\r\n",
            b"Received: y\r\n",
            b"\r\nbody\r\n",
        ];
        let ids = MailStore::queue_add_parts(&s, &parts, vec![rcpt("a@x.example", 1)]).unwrap();
        let e = s.queue_get(ids[0]).unwrap().unwrap();
        assert_eq!(s.queue_message(e.msg_id).unwrap(), parts.concat());
        assert_eq!(e.size, parts.concat().len() as u64);
    }

    /// A DSN that a result called for was written in a second commit after the result's:
    /// a crash between the two recorded the failure and lost the DSN. `queue_record_with`
    /// writes both in one commit; a notice about an entry that is gone is not written, and a
    /// refused local delivery (quota) does not keep the results from being recorded.
    #[test]
    fn queue_record_with_writes_notices_in_the_same_commit() {
        let (d, s) = store();
        s.account_add("mjl", "example.org").unwrap();
        s.account_add("full", "example.org").unwrap();
        s.account_set_quota("full", Some(10)).unwrap();
        let msg = b"Subject: q\r\n\r\nbody\r\n".to_vec();
        let ids = s
            .queue_add(&msg, vec![rcpt("a@x.example", 1), rcpt("b@x.example", 1)])
            .unwrap();
        let fail = |id| QueueRecord {
            id,
            change: Box::new(|_| {}),
            retire: Some(Outcome::Failed("550 no".into())),
            streak: None,
            webhook: None,
        };
        let dsn_local = b"Subject: failed (local)\r\n\r\nx\r\n".to_vec();
        let dsn_remote = b"Subject: failed (remote)\r\n\r\ny\r\n".to_vec();
        let dsn_gone = b"Subject: about a gone entry\r\n\r\nz\r\n".to_vec();
        let dsn_full = b"Subject: to a full mailbox\r\n\r\nw\r\n".to_vec();
        let deliver = |account: &str, m: &'static [u8]| Delivery {
            account: account.into(),
            mailbox: "Inbox".into(),
            head: &[],
            message: m,
            flags: Flags::default(),
            received: UnixTime(7),
            info: MessageInfo::default(),
        };
        let leak = |v: Vec<u8>| -> &'static [u8] { Vec::leak(v) };
        let (local, gone, full) = (leak(dsn_local), leak(dsn_gone), leak(dsn_full));
        let mut back = rcpt("sender@y.example", 7);
        back.mail_from = String::new();
        let r = s
            .queue_record_with(
                vec![fail(ids[0]), fail(QueueId(9999))],
                vec![
                    Notice {
                        about: vec![ids[0]],
                        message: NoticeMessage::Deliver(deliver("mjl", local)),
                    },
                    Notice {
                        about: vec![ids[0]],
                        message: NoticeMessage::Queue(&dsn_remote, back),
                    },
                    Notice {
                        about: vec![ids[0], QueueId(9999)],
                        message: NoticeMessage::Deliver(deliver("mjl", gone)),
                    },
                    Notice {
                        about: vec![ids[0]],
                        message: NoticeMessage::Deliver(deliver("full", full)),
                    },
                ],
                UnixTime(7),
            )
            .unwrap();
        assert_eq!(r.gone, [QueueId(9999)]);
        assert_eq!(r.notices.len(), 4);
        assert!(matches!(r.notices[0], NoticeOutcome::Delivered(_)));
        let NoticeOutcome::Queued(q) = r.notices[1] else {
            panic!("{:?}", r.notices[1]);
        };
        assert!(matches!(r.notices[2], NoticeOutcome::Gone));
        assert!(matches!(
            r.notices[3],
            NoticeOutcome::Refused(StoreError::QuotaExceeded { .. })
        ));
        // The result is recorded: a retired, b still queued; the DSNs are there.
        assert!(s.queue_get(ids[0]).unwrap().is_none());
        assert!(s.queue_get(ids[1]).unwrap().is_some());
        let m = s.messages("mjl").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(s.message_bytes(m[0].id).unwrap(), local);
        assert!(s.messages("full").unwrap().is_empty());
        let e = s.queue_get(q).unwrap().unwrap();
        assert_eq!(s.queue_message(e.msg_id).unwrap(), dsn_remote);
        assert_eq!(e.rcpt.recipient, "sender@y.example");
        // The files of the notices not written are gone: nothing orphaned.
        drop(s);
        let v = crate::verify(d.path());
        assert!(v.is_ok() && v.orphans.is_empty(), "{:?}", v.lines());
    }

    /// The queue runner wrote an attempt's outcome in up to three commits (attempt, retire,
    /// failure streak), three fsyncs per delivered message; `queue_record` writes them in one,
    /// with the same result as the three calls.
    #[test]
    fn queue_record_is_update_retire_and_streak_in_one() {
        let (_d, s) = store();
        let msg = b"Subject: q\r\n\r\nbody\r\n".to_vec();
        let ids = s
            .queue_add(&msg, vec![rcpt("A@x.example", 10), rcpt("b@x.example", 10)])
            .unwrap();
        let msg_id = s.queue_get(ids[0]).unwrap().unwrap().msg_id;
        s.failure_streak_record("mjl", "b@x.example", true).unwrap();
        let attempt = |e: &mut QueueEntry| {
            e.attempts += 1;
            e.last_attempt = Some(UnixTime(20));
            e.rcpt.next_attempt = UnixTime(500);
            e.history.push(Attempt {
                time: UnixTime(20),
                host: "mx.x.example".into(),
                result: "451 later".into(),
                tls_mode: None,
                tls_result: None,
            });
        };
        // A temporary failure: the entry is rescheduled, the streak grows (case-insensitive).
        let one = |id, retire, streak| QueueRecord {
            id,
            change: Box::new(attempt),
            retire,
            streak,
            webhook: None,
        };
        let n = s
            .queue_record(
                vec![one(
                    ids[0],
                    None,
                    Some(("mjl".into(), "a@X.example".into(), true)),
                )],
                UnixTime(20),
            )
            .unwrap();
        assert_eq!(n.streaks, [1]);
        let e = s.queue_get(ids[0]).unwrap().unwrap();
        assert_eq!((e.attempts, e.history.len()), (1, 1));
        assert_eq!(s.queue_next_due().unwrap(), Some(UnixTime(10)));
        assert_eq!(s.failure_streak("mjl", "a@x.example").unwrap(), 1);
        // Delivered: retired with the attempt in its history, the streak ends; the file
        // stays for the other entry.
        let n = s
            .queue_record(
                vec![one(
                    ids[0],
                    Some(Outcome::Delivered("250 ok".into())),
                    Some(("mjl".into(), "a@x.example".into(), false)),
                )],
                UnixTime(30),
            )
            .unwrap();
        assert_eq!(n.streaks, [0]);
        assert!(s.queue_get(ids[0]).unwrap().is_none());
        assert_eq!(s.failure_streak("mjl", "a@x.example").unwrap(), 0);
        let r = s.queue_retired(10).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].entry.history.len(), 2);
        assert_eq!(r[0].retired, UnixTime(30));
        assert_eq!(s.queue_message(msg_id).unwrap(), msg);
        assert_eq!(s.queue_next_due().unwrap(), Some(UnixTime(10)));
        // Failed, no streak: the last reference goes, and so does the file.
        let n = s
            .queue_record(
                vec![QueueRecord {
                    id: ids[1],
                    change: Box::new(|_| {}),
                    retire: Some(Outcome::Failed("550 no".into())),
                    streak: None,
                    webhook: None,
                }],
                UnixTime(40),
            )
            .unwrap();
        assert_eq!(n.streaks, [0]);
        assert_eq!(s.failure_streak("mjl", "b@x.example").unwrap(), 1);
        assert!(s.queue_message(msg_id).is_err());
        assert!(s.queue_due(UnixTime(i64::MAX), 10).unwrap().is_empty());
        // An entry that is gone: reported, and no streak written either.
        let n = s
            .queue_record(
                vec![QueueRecord {
                    id: ids[1],
                    change: Box::new(|_| {}),
                    retire: None,
                    streak: Some(("mjl".into(), "c@x.example".into(), true)),
                    webhook: None,
                }],
                UnixTime(50),
            )
            .unwrap();
        assert_eq!((n.gone, n.streaks), (vec![ids[1]], vec![0]));
        assert_eq!(s.failure_streak("mjl", "c@x.example").unwrap(), 0);
    }

    #[test]
    fn add_update_due_retire() {
        let (_d, s) = store();
        let msg = b"Subject: q\r\n\r\nbody\r\n".to_vec();
        let ids = s
            .queue_add(
                &msg,
                vec![rcpt("a@example.com", 100), rcpt("b@example.net", 50)],
            )
            .unwrap();
        assert_eq!(ids.len(), 2);
        let e = s.queue_get(ids[0]).unwrap().unwrap();
        assert_eq!(e.size, msg.len() as u64);
        assert_eq!(e.rcpt.dsn.envid.as_deref(), Some("e1"));
        assert_eq!(s.queue_message(e.msg_id).unwrap(), msg);
        let due: Vec<QueueId> = s
            .queue_due(UnixTime(100), 10)
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(due, [ids[1], ids[0]]);
        assert_eq!(s.queue_due(UnixTime(49), 10).unwrap().len(), 0);
        assert_eq!(s.queue_next_due().unwrap(), Some(UnixTime(50)));
        // An attempt failed: reschedule.
        let u = s
            .queue_update(ids[1], |e| {
                e.attempts += 1;
                e.last_error = Some("451-4.7.1 try\r\n451 4.7.1 later".into());
                e.last_attempt = Some(UnixTime(50));
                e.history.push(Attempt {
                    time: UnixTime(50),
                    host: "mx.example.net".into(),
                    result: "451 later".into(),
                    tls_mode: None,
                    tls_result: None,
                });
                e.rcpt.next_attempt = UnixTime(500);
                e.msg_id = 12345; // ignored
            })
            .unwrap();
        assert_eq!(u.attempts, 1);
        assert_eq!(u.msg_id, e.msg_id);
        assert_eq!(s.queue_due(UnixTime(100), 10).unwrap().len(), 1);
        s.queue_hold(ids[0]).unwrap();
        assert_eq!(s.queue_due(UnixTime(1000), 10).unwrap().len(), 1);
        let held = s
            .queue_list(&QueueFilter {
                hold: Some(true),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(held.len(), 1);
        s.queue_release(ids[0]).unwrap();
        assert_eq!(s.queue_due(UnixTime(1000), 10).unwrap().len(), 2);
        let f = QueueFilter {
            to_domain: Some("EXAMPLE.NET".into()),
            ..Default::default()
        };
        assert_eq!(s.queue_list(&f).unwrap().len(), 1);
        // Retire one: the file stays for the other.
        s.queue_retire(ids[0], Outcome::Delivered("250 ok".into()), UnixTime(600))
            .unwrap();
        assert!(s.queue_get(ids[0]).unwrap().is_none());
        assert_eq!(s.queue_message(e.msg_id).unwrap(), msg);
        s.queue_retire(ids[1], Outcome::Failed("550 no".into()), UnixTime(700))
            .unwrap();
        assert!(s.queue_message(e.msg_id).is_err());
        let r = s.queue_retired(10).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].entry.history.len(), 1);
        assert!(s.queue_due(UnixTime(i64::MAX), 10).unwrap().is_empty());
        assert!(matches!(
            s.queue_retire(ids[0], Outcome::Dropped, UnixTime(1)),
            Err(StoreError::NoQueueEntry(_))
        ));
        assert_eq!(s.queue_retired_cleanup(UnixTime(650)).unwrap(), 1);
        assert_eq!(s.queue_retired(10).unwrap().len(), 1);
        assert!(s.queue_add(&msg, vec![]).is_err());
    }

    /// Issue 15: an attempt was recorded in one commit and the entry retired in another,
    /// so a crash between them delivered the message again. queue_record does both for
    /// every entry of a transaction in one commit, and removes the message file after it.
    #[test]
    fn record_updates_and_retires_in_one_step() {
        let (_d, s) = store();
        let ids = s
            .queue_add(
                b"m",
                vec![
                    rcpt("a@x.example", 1),
                    rcpt("b@x.example", 1),
                    rcpt("c@x.example", 1),
                ],
            )
            .unwrap();
        let msg_id = s.queue_get(ids[0]).unwrap().unwrap().msg_id;
        let attempt = |e: &mut QueueEntry| {
            e.attempts += 1;
            e.rcpt.next_attempt = UnixTime(900);
            e.history.push(Attempt {
                time: UnixTime(5),
                host: "mx.x.example".into(),
                result: "250 ok".into(),
                tls_mode: None,
                tls_result: None,
            });
        };
        let gone = s
            .queue_record(
                vec![
                    QueueRecord {
                        id: ids[0],
                        change: Box::new(attempt),
                        retire: Some(Outcome::Delivered("250 ok".into())),
                        streak: None,
                        webhook: None,
                    },
                    QueueRecord {
                        id: ids[1],
                        change: Box::new(attempt),
                        retire: None,
                        streak: None,
                        webhook: None,
                    },
                    QueueRecord {
                        id: QueueId(9999),
                        change: Box::new(attempt),
                        retire: None,
                        streak: None,
                        webhook: None,
                    },
                ],
                UnixTime(5),
            )
            .unwrap();
        assert_eq!(gone.gone, [QueueId(9999)]);
        assert!(s.queue_get(ids[0]).unwrap().is_none());
        let r = s.queue_retired(10).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].entry.history.len(), 1);
        assert_eq!(r[0].entry.attempts, 1);
        let b = s.queue_get(ids[1]).unwrap().unwrap();
        assert_eq!(b.attempts, 1);
        assert_eq!(s.queue_next_due().unwrap(), Some(UnixTime(1)));
        assert_eq!(s.queue_due(UnixTime(10), 10).unwrap().len(), 1);
        assert!(s.queue_message(msg_id).is_ok());
        // The last two references go in one step: the file goes with them.
        s.queue_record(
            vec![
                QueueRecord {
                    id: ids[1],
                    change: Box::new(|_| {}),
                    retire: Some(Outcome::Failed("550 no".into())),
                    streak: None,
                    webhook: None,
                },
                QueueRecord {
                    id: ids[2],
                    change: Box::new(attempt),
                    retire: Some(Outcome::Delivered("250 ok".into())),
                    streak: None,
                    webhook: None,
                },
            ],
            UnixTime(6),
        )
        .unwrap();
        assert!(s.queue_message(msg_id).is_err());
        assert!(s.queue_due(UnixTime(i64::MAX), 10).unwrap().is_empty());
        assert_eq!(s.queue_retired(10).unwrap().len(), 3);
        drop(s);
        let v = crate::verify(_d.path());
        assert!(v.is_ok() && v.orphans.is_empty(), "{:?}", v.lines());
    }

    /// Issue 15: kill -9 between retiring a message's last entry and removing its file left
    /// an orphan queue file. The sweep at start removes exactly the unreferenced files.
    /// A DSN coming back to an entry's unique MAIL FROM finds the entry while it is queued,
    /// after it retired (its history noted), and no more once the retired entry is cleaned
    /// up; an id cannot be used twice.
    #[test]
    fn entries_found_by_from_id() {
        let (d, s) = store();
        let with_id = |to: &str, id: &str| {
            let mut r = rcpt(to, 10);
            r.mail_from = format!("mjl+{id}@example.org");
            r.from_id = Some(FromId {
                id: id.into(),
                message_id: "<m1@example.org>".into(),
                subject: "hi".into(),
                extra: [("k".to_string(), "v".to_string())].into(),
            });
            r
        };
        let ids = s
            .queue_add(
                b"m",
                vec![
                    with_id("a@x.example", "AAA"),
                    with_id("b@x.example", "BBB"),
                    rcpt("c@x.example", 10),
                ],
            )
            .unwrap();
        let (e, retired) = s.queue_by_from_id("BBB").unwrap().unwrap();
        assert_eq!((e.id, retired), (ids[1], false));
        assert_eq!(e.rcpt.from_id.as_ref().unwrap().extra["k"], "v");
        assert!(s.queue_by_from_id("CCC").unwrap().is_none());
        // A repeated id is refused, and nothing of that add is kept.
        let err = s.queue_add(
            b"m",
            vec![rcpt("d@x.example", 10), with_id("e@x.example", "AAA")],
        );
        assert!(matches!(err, Err(StoreError::Invalid(_))), "{err:?}");
        assert_eq!(s.queue_list(&QueueFilter::default()).unwrap().len(), 3);

        let note = |what: &str| Attempt {
            time: UnixTime(50),
            host: "dsn".into(),
            result: what.into(),
            tls_mode: None,
            tls_result: None,
        };
        assert!(s.queue_note(ids[0], note("queued note")).unwrap());
        assert_eq!(s.queue_get(ids[0]).unwrap().unwrap().history.len(), 1);
        s.queue_retire(ids[0], Outcome::Delivered("250 ok".into()), UnixTime(100))
            .unwrap();
        assert!(s.queue_note(ids[0], note("retired note")).unwrap());
        let (e, retired) = s.queue_by_from_id("AAA").unwrap().unwrap();
        assert!(retired);
        let seen: Vec<&str> = e.history.iter().map(|a| a.result.as_str()).collect();
        assert_eq!(seen, ["queued note", "retired note"]);

        // Kept across a reopen, gone with the retired entry.
        drop(s);
        let s = Store::open(d.path()).unwrap();
        assert!(s.queue_by_from_id("AAA").unwrap().is_some());
        assert_eq!(s.queue_retired_cleanup(UnixTime(101)).unwrap(), 1);
        assert!(s.queue_by_from_id("AAA").unwrap().is_none());
        assert!(!s.queue_note(ids[0], note("gone")).unwrap());
        assert!(s.queue_by_from_id("BBB").unwrap().is_some());
    }

    #[test]
    fn orphan_queue_files_removed() {
        let (d, s) = store();
        let ids = s.queue_add(b"kept", vec![rcpt("a@x.example", 1)]).unwrap();
        let kept = s.queue_get(ids[0]).unwrap().unwrap().msg_id;
        let orphan = files::path(d.path(), Area::Queue, kept + 7);
        std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
        std::fs::write(&orphan, b"left behind").unwrap();
        drop(s);
        assert_eq!(crate::verify(d.path()).orphans, vec![orphan.clone()]);
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.queue_remove_orphans().unwrap(), [kept + 7]);
        assert!(!orphan.exists());
        assert_eq!(s.queue_message(kept).unwrap(), b"kept");
        assert!(s.queue_remove_orphans().unwrap().is_empty());
        drop(s);
        let v = crate::verify(d.path());
        assert!(v.is_ok() && v.orphans.is_empty(), "{:?}", v.lines());
    }

    #[test]
    fn drop_removes_file_with_last_reference() {
        let (_d, s) = store();
        let ids = s
            .queue_add(b"m", vec![rcpt("a@x.example", 1), rcpt("b@x.example", 1)])
            .unwrap();
        let msg_id = s.queue_get(ids[0]).unwrap().unwrap().msg_id;
        s.queue_drop(ids[0]).unwrap();
        assert!(s.queue_message(msg_id).is_ok());
        s.queue_drop(ids[1]).unwrap();
        assert!(s.queue_message(msg_id).is_err());
        assert!(s.queue_retired(10).unwrap().is_empty());
    }

    #[test]
    fn hold_rules_apply_on_add() {
        let (_d, s) = store();
        let cases: &[(HoldRule, &str, bool)] = &[
            (HoldRule::default(), "a@b.example", true),
            (
                HoldRule {
                    recipient_domain: Some("B.example".into()),
                    ..Default::default()
                },
                "a@b.example",
                true,
            ),
            (
                HoldRule {
                    recipient_domain: Some("c.example".into()),
                    ..Default::default()
                },
                "a@b.example",
                false,
            ),
            (
                HoldRule {
                    sender_domain: Some("example.org".into()),
                    ..Default::default()
                },
                "a@b.example",
                true,
            ),
            (
                HoldRule {
                    account: Some("other".into()),
                    ..Default::default()
                },
                "a@b.example",
                false,
            ),
        ];
        for (rule, to, held) in cases {
            let id = s.hold_rule_add(rule.clone()).unwrap();
            assert_eq!(s.hold_rules().unwrap().len(), 1);
            let q = s.queue_add(b"m", vec![rcpt(to, 1)]).unwrap();
            assert_eq!(
                s.queue_get(q[0]).unwrap().unwrap().rcpt.hold,
                *held,
                "{rule:?}"
            );
            assert!(s.hold_rule_remove(id).unwrap());
            assert!(!s.hold_rule_remove(id).unwrap());
        }
    }

    #[test]
    fn suppression_list() {
        let (_d, s) = store();
        let sup = |a: &str| Suppression {
            address: a.into(),
            reason: "550 no such user".into(),
            manual: false,
            created: UnixTime(5),
        };
        s.suppression_add("mjl", sup("Bob@Example.com")).unwrap();
        s.suppression_add("mjl", sup("carol@example.com")).unwrap();
        s.suppression_add("mjl2", sup("dave@example.com")).unwrap();
        assert!(s.is_suppressed("mjl", "bob@example.COM").unwrap());
        assert!(!s.is_suppressed("mjl2", "bob@example.com").unwrap());
        assert_eq!(s.suppressions("mjl").unwrap().len(), 2);
        assert!(s.suppression_remove("mjl", "BOB@example.com").unwrap());
        assert!(!s.is_suppressed("mjl", "bob@example.com").unwrap());
        assert_eq!(s.suppressions("mjl").unwrap().len(), 1);
    }

    #[test]
    fn failure_streaks() {
        let (_d, s) = store();
        // (account, address, failed, streak after)
        let steps: &[(&str, &str, bool, u32)] = &[
            ("mjl", "Bob@Example.com", true, 1),
            ("mjl", "bob@example.com", true, 2),
            ("mjl2", "bob@example.com", true, 1),
            ("mjl", "bob@example.com", false, 0),
            ("mjl", "bob@example.com", true, 1),
            ("mjl", "bob@example.com", true, 2),
            ("mjl", "BOB@example.com", true, 3),
        ];
        for &(a, addr, failed, want) in steps {
            assert_eq!(s.failure_streak_record(a, addr, failed).unwrap(), want);
            assert_eq!(s.failure_streak(a, addr).unwrap(), want);
        }
        assert_eq!(s.failure_streak("mjl2", "bob@example.com").unwrap(), 1);
        assert_eq!(s.failure_streak("mjl", "nobody@example.com").unwrap(), 0);
    }

    #[test]
    fn outgoing_log() {
        let (_d, s) = store();
        let r = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            s.record_outgoing("a", &r(&["x@e.example", "y@e.example"]), UnixTime(100))
                .unwrap(),
            2
        );
        assert_eq!(
            s.record_outgoing("a", &r(&["X@e.example", "z@e.example"]), UnixTime(100))
                .unwrap(),
            1
        );
        assert_eq!(
            s.record_outgoing("a", &r(&["x@e.example"]), UnixTime(200))
                .unwrap(),
            0
        );
        assert_eq!(
            s.record_outgoing("b", &r(&["x@e.example"]), UnixTime(200))
                .unwrap(),
            1
        );
        assert_eq!(s.count_outgoing("a", UnixTime(0)).unwrap(), (3, 3));
        assert_eq!(s.count_outgoing("a", UnixTime(150)).unwrap(), (1, 0));
        assert_eq!(s.count_outgoing("b", UnixTime(0)).unwrap(), (1, 1));
        assert!(s.has_sent_to("a", "z@E.example").unwrap());
        assert!(!s.has_sent_to("b", "z@e.example").unwrap());
        s.outgoing_cleanup(UnixTime(150)).unwrap();
        assert_eq!(s.count_outgoing("a", UnixTime(0)).unwrap(), (1, 0));
        assert!(s.has_sent_to("a", "y@e.example").unwrap());
    }

    #[test]
    fn reports_and_mtasts() {
        let (_d, s) = store();
        s.report_add(ReportKind::DmarcEval, "Example.org", UnixTime(10), vec![1])
            .unwrap();
        s.report_add(ReportKind::DmarcEval, "example.org", UnixTime(10), vec![2])
            .unwrap();
        s.report_add(ReportKind::DmarcEval, "example.org", UnixTime(20), vec![3])
            .unwrap();
        s.report_add(ReportKind::DmarcEval, "b.example", UnixTime(20), vec![4])
            .unwrap();
        s.report_add(ReportKind::TlsResult, "example.org", UnixTime(20), vec![5])
            .unwrap();
        let v = s.reports(ReportKind::DmarcEval, "example.org").unwrap();
        assert_eq!(
            v,
            vec![
                (UnixTime(10), vec![1]),
                (UnixTime(10), vec![2]),
                (UnixTime(20), vec![3])
            ]
        );
        assert_eq!(
            s.report_domains(ReportKind::DmarcEval).unwrap(),
            ["b.example", "example.org"]
        );
        assert_eq!(
            s.report_domains(ReportKind::TlsResult).unwrap(),
            ["example.org"]
        );
        s.reports_remove(ReportKind::DmarcEval, "example.org", UnixTime(20))
            .unwrap();
        assert_eq!(
            s.reports(ReportKind::DmarcEval, "example.org")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            s.reports(ReportKind::TlsResult, "example.org")
                .unwrap()
                .len(),
            1
        );
        // Every record of a kind with its key, and one record by its key; other kinds
        // (TlsResult before, none after) do not leak in.
        s.report_add(ReportKind::TlsReport, "B.example", UnixTime(30), vec![6])
            .unwrap();
        s.report_add(ReportKind::TlsReport, "b.example", UnixTime(30), vec![7])
            .unwrap();
        s.report_add(ReportKind::TlsReport, "a.example", UnixTime(40), vec![8])
            .unwrap();
        let e = |d: &str, t, seq, r| ReportEntry {
            domain: d.to_string(),
            time: UnixTime(t),
            seq,
            record: vec![r],
        };
        assert_eq!(
            s.report_entries(ReportKind::TlsReport).unwrap(),
            vec![
                e("a.example", 40, 0, 8),
                e("b.example", 30, 0, 6),
                e("b.example", 30, 1, 7),
            ]
        );
        assert_eq!(s.report_entries(ReportKind::TlsResult).unwrap().len(), 1);
        assert_eq!(
            s.report_get(ReportKind::TlsReport, "B.example", UnixTime(30), 1)
                .unwrap(),
            Some(vec![7])
        );
        assert_eq!(
            s.report_get(ReportKind::TlsReport, "b.example", UnixTime(30), 2)
                .unwrap(),
            None
        );
        assert_eq!(
            s.report_get(ReportKind::TlsResult, "a.example", UnixTime(40), 0)
                .unwrap(),
            None
        );
        let rec = MtaStsRecord {
            domain: "example.org".into(),
            policy: "version: STSv1\nmode: enforce\nmx: mx.example.org\nmax_age: 86400\n".into(),
            record_id: "20240101".into(),
            fetched: UnixTime(1),
            expires: UnixTime(86401),
            last_use: None,
        };
        s.mtasts_put(rec.clone()).unwrap();
        assert_eq!(s.mtasts_get("EXAMPLE.org").unwrap(), Some(rec));
        s.mtasts_remove("example.org").unwrap();
        assert_eq!(s.mtasts_get("example.org").unwrap(), None);
    }

    fn sts_record(domain: &str, id: &str, fetched: i64) -> MtaStsRecord {
        MtaStsRecord {
            domain: domain.into(),
            policy: "version: STSv1\r\nmode: enforce\r\nmx: mx.example.org\r\nmax_age: 86400\r\n"
                .into(),
            record_id: id.into(),
            fetched: UnixTime(fetched),
            expires: UnixTime(fetched + 86400),
            last_use: None,
        }
    }

    /// The MTA-STS policy cache: put replaces, touch sets the last-use time (only of an
    /// entry that exists), list returns every entry by domain, remove forgets one, and
    /// all of it survives closing and reopening the store.
    #[test]
    fn mtasts_cache_roundtrip_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = Store::open(d.path()).unwrap();
            s.mtasts_put(sts_record("b.example", "1", 100)).unwrap();
            s.mtasts_put(sts_record("A.example", "1", 100)).unwrap();
            s.mtasts_put(sts_record("a.example", "2", 200)).unwrap();
            s.mtasts_put(sts_record("c.example", "1", 100)).unwrap();
            assert!(s.mtasts_touch("B.EXAMPLE", UnixTime(150)).unwrap());
            assert!(!s.mtasts_touch("none.example", UnixTime(150)).unwrap());
            s.mtasts_remove("c.example").unwrap();
        }
        let s = Store::open(d.path()).unwrap();
        let list = s.mtasts_list().unwrap();
        let got: Vec<(&str, &str, Option<UnixTime>)> = list
            .iter()
            .map(|r| (r.domain.as_str(), r.record_id.as_str(), r.last_use))
            .collect();
        assert_eq!(
            got,
            [
                ("a.example", "2", None),
                ("b.example", "1", Some(UnixTime(150)))
            ]
        );
        assert_eq!(
            s.mtasts_get("a.example").unwrap(),
            Some(sts_record("a.example", "2", 200))
        );
        // Through the trait, as the runtimes see the store.
        let m: &dyn MailStore = &s;
        m.mtasts_put(sts_record("d.example", "9", 5)).unwrap();
        assert!(m.mtasts_touch("d.example", UnixTime(6)).unwrap());
        assert_eq!(
            m.mtasts_get("d.example").unwrap().unwrap().last_use,
            Some(UnixTime(6))
        );
        m.mtasts_remove("d.example").unwrap();
        assert_eq!(m.mtasts_list().unwrap().len(), 2);
        // The policy machine's entries map to records and back.
        let e = sts_record("e.example", "3", 7).to_entry();
        assert_eq!(e.to_cached().unwrap().policy.mx.len(), 1);
        assert_eq!(
            MtaStsRecord::from_entry(&e),
            sts_record("e.example", "3", 7)
        );
        // A record stored before `last_use` existed still reads.
        let old = br#"{"domain":"x.example","policy":"p","record_id":"1","fetched":1,"expires":2}"#;
        let r: MtaStsRecord = dec("mtasts", old).unwrap();
        assert_eq!(r.last_use, None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// queue_due returns exactly the entries not held with next_attempt <= now, ordered
        /// by (next_attempt, id), whatever sequence of adds, reschedules, holds and retires.
        #[test]
        fn due_matches_model(ops in proptest::collection::vec((0u8..4, 0i64..50, any::<bool>()), 1..40), now in 0i64..60) {
            let (_d, s) = store();
            let mut ids: Vec<QueueId> = Vec::new();
            for (op, t, flag) in ops {
                match op {
                    0 => ids.extend(s.queue_add(b"m", vec![rcpt("a@b.example", t)]).unwrap()),
                    1 if !ids.is_empty() => {
                        let id = ids[(t as usize) % ids.len()];
                        s.queue_update(id, move |e| { e.rcpt.next_attempt = UnixTime(t); e.rcpt.hold = flag; }).unwrap();
                    }
                    2 if !ids.is_empty() => {
                        let id = ids.remove((t as usize) % ids.len());
                        s.queue_retire(id, Outcome::Dropped, UnixTime(t)).unwrap();
                    }
                    _ => {}
                }
            }
            let mut want: Vec<(i64, u64)> = s
                .queue_list(&QueueFilter::default())
                .unwrap()
                .into_iter()
                .filter(|e| e.is_due(UnixTime(now)))
                .map(|e| (e.rcpt.next_attempt.0, e.id.0))
                .collect();
            want.sort();
            let got: Vec<(i64, u64)> = s
                .queue_due(UnixTime(now), 1000)
                .unwrap()
                .into_iter()
                .map(|e| (e.rcpt.next_attempt.0, e.id.0))
                .collect();
            prop_assert_eq!(&got, &want);
            let limited = s.queue_due(UnixTime(now), 2).unwrap();
            prop_assert_eq!(limited.len(), want.len().min(2));
        }
    }
}

/// What [`Store::sent_to_since`] asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentTo<'a> {
    /// Exactly this address.
    Address(&'a str),
    /// An address at exactly this domain.
    Domain(&'a str),
    /// An address at this domain or a domain below it.
    Within(&'a str),
}
