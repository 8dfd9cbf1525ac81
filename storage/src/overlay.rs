//! The message index's entries of recent deliveries, held in memory until a batch writes
//! them to [`MSG_INDEX`] in bulk.
//!
//! A delivery makes about a dozen index entries (sender, domains, networks, mailbox, ...)
//! whose keys are spread over the whole index, so inserting them in the delivery's own
//! transaction rewrites a dozen B-tree pages per message; at one session that was a quarter
//! of the write transaction the acknowledgement waits for (measured: without index writes,
//! 1 KiB at one session went from about 2,200 to 2,800 messages per second). A delivery
//! committed through the acceptance log ([`crate::alog`]) therefore puts its entries here,
//! and they reach the table:
//!
//! * at every checkpoint, before the checkpoint's own writes (which may remove index
//!   entries: a message expunged or moved), in the checkpoint's transaction; so the table
//!   holds every entry of every record up to the log position the checkpoint records, and
//!   replay after a crash makes the entries of the records after it again;
//! * in a logged batch, once more than [`INDEX_FLUSH_AT`] entries wait: the
//!   [`INDEX_FLUSH_CHUNK`] with the lowest keys (memory stays bounded, the entries written
//!   together are close in the table and share its pages, and no batch writes them all).
//!
//! Readers merge these entries with the table's (`Store::index_scan`): they copy the
//! entries in their range and open their read transaction under [`Overlay::view`], and the
//! committer holds [`Overlay::commit_guard`] from each commit until the entries it
//! published or flushed are updated here, so a reader sees every entry exactly once (the
//! merge also counts a key in both once). The entries of a batch become visible with its
//! commit, before its writers hear; a batch that fails leaves nothing here. A backup
//! copies them with the table ([`Overlay::range`] of everything, under the same hold).
//!
//! [`MSG_INDEX`]: crate::tables::MSG_INDEX

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::WriteTransaction;

use crate::error::StoreError;
use crate::tables::MSG_INDEX;

/// A logged batch writes waiting entries to the table once more than this many wait ...
pub const INDEX_FLUSH_AT: usize = 4096;
/// ... at most this many, those with the lowest keys (a bounded pause for the batch).
pub const INDEX_FLUSH_CHUNK: usize = 1024;

/// An index key: (slot hash, received time as [`crate::ikey::key`] stores it, message id).
pub(crate) type Key = (u64, u64, u64);

/// An index entry's value, owned: facts bits, the slot's check, and the message's mailbox
/// and From local part (shared by all entries of one message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub bits: u8,
    pub check: u64,
    pub names: std::sync::Arc<Names>,
}

/// A message's mailbox and From local part (lowercase, empty when none).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Names {
    pub mailbox: String,
    pub localpart: String,
}

/// Index entries not yet in the table, and those of the batch being written.
#[derive(Default)]
pub(crate) struct Overlay {
    /// Committed entries, visible to readers.
    entries: Mutex<BTreeMap<Key, Entry>>,
    /// Entries of the batch the committer is running (only its leader thread adds).
    staged: Mutex<Vec<(Key, Entry)>>,
    /// Whether deliveries stage their entries here (a logged batch is running) rather than
    /// insert them into the table.
    staging: AtomicBool,
    /// Held (shared) by a reader while it copies entries from here and opens its read
    /// transaction, and (exclusive) by the committer from a commit until the entries it
    /// published or flushed are updated here: a reader's copy and its transaction show
    /// the same commits (a backup copies both).
    view: RwLock<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Overlay {
    /// A reader's hold: take it, copy entries ([`Overlay::range`]), open the read
    /// transaction, drop it.
    pub(crate) fn view(&self) -> RwLockReadGuard<'_, ()> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The committer's hold, from before a commit until this overlay matches it.
    pub(crate) fn commit_guard(&self) -> RwLockWriteGuard<'_, ()> {
        self.view.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a delivery's entries go here (`true`) or into its transaction.
    pub(crate) fn staging(&self) -> bool {
        self.staging.load(Ordering::Acquire)
    }

    /// Adds entries of the running batch.
    pub(crate) fn stage(&self, entries: Vec<(Key, Entry)>) {
        lock(&self.staged).extend(entries);
    }

    /// A logged batch starts: its deliveries stage their entries.
    pub(crate) fn begin_batch(&self) {
        lock(&self.staged).clear();
        self.staging.store(true, Ordering::Release);
    }

    /// The logged batch's writes have run; `committed`: its transaction was committed,
    /// so its staged entries become visible; otherwise they are dropped.
    pub(crate) fn end_batch(&self, committed: bool) {
        self.staging.store(false, Ordering::Release);
        let staged = std::mem::take(&mut *lock(&self.staged));
        if committed {
            lock(&self.entries).extend(staged);
        }
    }

    /// How many entries wait (committed ones and the running batch's).
    pub(crate) fn waiting(&self) -> usize {
        lock(&self.entries).len() + lock(&self.staged).len()
    }

    /// Inserts every committed entry into `txn`'s index table and returns their keys, to
    /// [`Overlay::forget`] once `txn` is committed (until then readers still find them
    /// here).
    pub(crate) fn flush_into(&self, txn: &WriteTransaction) -> Result<Vec<Key>, StoreError> {
        self.flush_some_into(txn, usize::MAX)
    }

    /// [`Overlay::flush_into`] for the `n` committed entries with the lowest keys: close
    /// together in the table, so they share its pages.
    pub(crate) fn flush_some_into(
        &self,
        txn: &WriteTransaction,
        n: usize,
    ) -> Result<Vec<Key>, StoreError> {
        let entries: Vec<(Key, Entry)> = lock(&self.entries)
            .iter()
            .take(n)
            .map(|(k, e)| (*k, e.clone()))
            .collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        insert(txn, &entries)?;
        Ok(entries.into_iter().map(|(k, _)| k).collect())
    }

    /// Drops entries the table now holds (their flush was committed).
    pub(crate) fn forget(&self, keys: &[Key]) {
        if keys.is_empty() {
            return;
        }
        let mut m = lock(&self.entries);
        for k in keys {
            m.remove(k);
        }
    }

    /// Every committed entry, ascending.
    pub(crate) fn all(&self) -> Vec<(Key, Entry)> {
        lock(&self.entries)
            .iter()
            .map(|(k, e)| (*k, e.clone()))
            .collect()
    }

    /// The committed entries with keys in `range`, ascending. Call it before opening the
    /// read transaction whose table entries it is merged with.
    pub(crate) fn range(&self, range: std::ops::Range<Key>) -> Vec<(Key, Entry)> {
        lock(&self.entries)
            .range(range)
            .map(|(k, e)| (*k, e.clone()))
            .collect()
    }
}

/// Inserts `entries` into `txn`'s index table.
pub(crate) fn insert(txn: &WriteTransaction, entries: &[(Key, Entry)]) -> Result<(), StoreError> {
    let mut idx = txn.open_table(MSG_INDEX)?;
    for (k, e) in entries {
        let n = &e.names;
        idx.insert(
            *k,
            (e.bits, e.check, n.mailbox.as_str(), n.localpart.as_str()),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(n: u8) -> Entry {
        Entry {
            bits: n,
            check: u64::from(n),
            names: std::sync::Arc::new(Names {
                mailbox: "Inbox".into(),
                localpart: String::new(),
            }),
        }
    }

    #[test]
    fn a_batch_is_visible_only_once_committed() {
        let o = Overlay::default();
        o.begin_batch();
        assert!(o.staging());
        o.stage(vec![((1, 1, 1), e(1))]);
        assert!(
            o.range((0, 0, 0)..(9, 0, 0)).is_empty(),
            "not before its commit"
        );
        o.end_batch(false);
        assert!(!o.staging());
        assert_eq!(o.waiting(), 0, "a failed batch leaves nothing");
        o.begin_batch();
        o.stage(vec![((1, 1, 1), e(1))]);
        o.end_batch(true);
        assert_eq!(o.range((0, 0, 0)..(9, 0, 0)).len(), 1);
        o.forget(&[(1, 1, 1)]);
        assert_eq!(o.waiting(), 0);
    }
}
