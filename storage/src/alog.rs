//! The acceptance log: one append and one `fdatasync` make a batch of deliveries durable.
//!
//! A delivery (and a queued message) is applied to the database by the group commit as
//! before, but committed with [`redb::Durability::None`] (no fsync), and its redo record
//! (message records, queue entries, and the bytes of every message it stored) is appended
//! to `DATA/accept.log`; the writer's `Ok` (the server's 250) waits for that record's
//! `fdatasync`, shared by every record of the batch. Message files of logged deliveries are
//! written without their own fsync.
//!
//! **Overlap.** The leader appends the batch's records *before* it runs the writes: on
//! Linux the write and the `fdatasync` linked after it go to an io_uring
//! ([`crate::uring`]) in one submission, and the leader applies and commits the batch to
//! the database while the disk syncs, then reaps both completions; a batch costs the
//! longer of the two instead of their sum. Where io_uring is missing (or
//! `RMOX_STORAGE_URING=off`) the append is written and synced first, then the batch runs.
//! A write that is then refused (no such account, over quota), or every write of a batch
//! that fails, has its record cancelled: a **cancel record** naming their sequence
//! numbers is appended and synced before their callers hear. Replay skips cancelled
//! records, and a refused record whose cancel a crash lost is refused again on replay (the
//! records before it replay to the same state) and skipped.
//!
//! A **checkpoint** is a batch committed with [`redb::Durability::Immediate`] after the
//! file system holds every file written since the last one (`syncfs`, or the directories'
//! fsyncs where files are fsynced by their writers); that commit also stores the sequence
//! number of the last record (`meta.accept_log_done`), and the log is then reused from its
//! start. A batch is a checkpoint when one of its writes is not a logged one (every other
//! write of the store), when the first record since the last checkpoint is older than
//! [`CHECKPOINT_AFTER`], when the log would grow past [`LOG_MAX`], and when the store
//! closes.
//!
//! **Replay.** redb returns to its last durable commit after a crash; opening the store
//! for writing applies every record after `accept_log_done`, in order, in one transaction
//! that also advances `accept_log_done` (durable commit, files synced first): a crash during
//! replay replays again from the same point. Records are framed with their length, a
//! sequence number and a CRC-32; replay stops at the first frame that is torn, fails its
//! checksum or does not continue the sequence (the rest of the file is older records or
//! zeros).
//!
//! **Failure.** A log write or sync that fails answers every write of its batch with a
//! storage failure and stops the store's writes (every later write fails) until it is
//! opened again: the batch's changes are in the database's memory, and a later durable
//! commit must not make durable what was refused. On the next open the log decides.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::WriteTransaction;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::files::{self, Area, FileOp};
use crate::ikey::IndexKeyer;
use crate::model::{MessageRecord, QueueRecipient};

/// The log's file name in the data directory.
pub(crate) const LOG_FILE: &str = "accept.log";
/// The log is reused from its start once it would grow past this (a checkpoint first).
pub const LOG_MAX: u64 = 64 << 20;
/// A checkpoint happens at the first batch after the oldest record since the last one
/// reached this age.
pub const CHECKPOINT_AFTER: Duration = Duration::from_secs(1);
/// A write goes through the log when the message bytes it stores total at most this
/// (the same bound as a message kept in the database); a larger one is committed durably
/// with its files (a checkpoint): logging its bytes would write them twice and cost more
/// than the sync it saves (measured: 64 KiB messages at 10 and 50 sessions lost 15 to 20 %
/// through the log).
pub const LOG_WRITE_MAX: usize = crate::INLINE_BODY_MAX;
/// The file grows in steps of this many bytes, written as zeros, so that appends within
/// it change no file metadata (`fdatasync` then writes data only).
const GROW: u64 = 1 << 20;
const MAGIC: [u8; 4] = *b"rmxA";
/// First four bytes of a cancel record's payload (where a redo record has the length of
/// its head, which is never this); the cancelled sequence numbers follow (u64 each).
const CANCEL: u32 = u32::MAX;
/// Frame header: magic, payload length (u32), sequence number (u64), CRC-32 (u32).
pub(crate) const HEAD: usize = 20;

/// One record read back from the log.
#[derive(Debug)]
pub(crate) struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// The open log (used by the group commit's leader only).
#[derive(Debug)]
pub(crate) struct Log {
    path: PathBuf,
    file: File,
    /// Where the next record goes.
    off: u64,
    /// Bytes in the file.
    len: u64,
    /// The next record's sequence number.
    next_seq: u64,
    /// The ring that writes and syncs staged records while the caller works (Linux, when
    /// io_uring is available); `None`: [`Log::stage`] writes and syncs before it returns.
    #[cfg(target_os = "linux")]
    ring: Option<crate::uring::Ring>,
}

/// Records [`Log::stage`] handed to the disk: durable once [`Log::wait`] says so.
#[derive(Debug)]
#[must_use = "staged records are durable only after Log::wait"]
pub(crate) struct Staged {
    /// Sequence numbers of the staged records, in order.
    pub seqs: std::ops::RangeInclusive<u64>,
    /// Where the frames in flight on the ring go (the ring holds their bytes); `None`:
    /// already written and synced.
    #[cfg(target_os = "linux")]
    inflight: Option<u64>,
}

impl Log {
    /// Opens the log in `dir` (creating it durably) and returns it with the records it
    /// holds, in order. Call [`Log::restart`] before appending.
    pub(crate) fn open(dir: &Path) -> Result<(Log, Vec<Record>), StoreError> {
        let path = dir.join(LOG_FILE);
        let (file, records) = match std::fs::read(&path) {
            Ok(bytes) => {
                let f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::io("open", &path, e))?;
                (f, parse(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut file = None;
                files::io(FileOp::Create(&path, &[]), || {
                    file = Some(
                        files::private_file_options()
                            .read(true)
                            .write(true)
                            .create_new(true)
                            .open(&path)?,
                    );
                    Ok(())
                })
                .map_err(|e| StoreError::io("create", &path, e))?;
                files::sync_dir(dir)?;
                let f = match file {
                    Some(f) => f,
                    // A test hook skipped the creation.
                    None => OpenOptions::new()
                        .read(true)
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&path)
                        .map_err(|e| StoreError::io("open", &path, e))?,
                };
                (f, Vec::new())
            }
            Err(e) => return Err(StoreError::io("read", &path, e)),
        };
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("stat", &path, e))?
            .len();
        Ok((
            Log {
                path,
                file,
                off: 0,
                len,
                next_seq: 1,
                #[cfg(target_os = "linux")]
                ring: crate::uring::Ring::new().ok(),
            },
            records,
        ))
    }

    /// Appends from the start again, the next record numbered `next_seq` (after a
    /// checkpoint that covers every record in the file).
    pub(crate) fn restart(&mut self, next_seq: u64) {
        self.off = 0;
        self.next_seq = next_seq.max(1);
    }

    /// The sequence number of the last record appended (0: none yet).
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Whether records of `bytes` (payload sizes plus frame headers) fit before
    /// [`LOG_MAX`]; an empty log takes any batch.
    pub(crate) fn fits(&self, bytes: u64) -> bool {
        self.off == 0 || self.off.saturating_add(bytes) <= LOG_MAX
    }

    /// Whether records were appended since the last [`Log::restart`].
    pub(crate) fn has_records(&self) -> bool {
        self.off > 0
    }

    /// Appends one record per payload and makes them durable (one write, one
    /// `fdatasync`). Returns the last record's sequence number.
    pub(crate) fn append(&mut self, payloads: &[&[u8]]) -> Result<u64, StoreError> {
        let staged = self.stage(payloads)?;
        let last = *staged.seqs.end();
        self.wait(staged)?;
        Ok(last)
    }

    /// Whether [`Log::stage`] returns before the records are durable (io_uring).
    pub(crate) fn overlaps(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.ring.is_some();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Stops using io_uring (tests of the synchronous path; a ring that failed).
    pub(crate) fn without_ring(&mut self) {
        #[cfg(target_os = "linux")]
        {
            self.ring = None;
        }
    }

    /// Appends one record per payload and starts making them durable: one write and one
    /// `fdatasync`, handed to io_uring, so the caller works while the disk syncs; without a
    /// ring (or under a test's file hook) they are done before this returns. The records
    /// take their place and sequence numbers at once; [`Log::wait`] says when (and
    /// whether) they are durable. One stage at a time: wait before staging again.
    pub(crate) fn stage(&mut self, payloads: &[&[u8]]) -> Result<Staged, StoreError> {
        if payloads.is_empty() {
            return Err(StoreError::Invalid("no log records to append".into()));
        }
        let total: usize = payloads.iter().map(|p| HEAD + p.len()).sum();
        #[allow(unused_mut)]
        let mut buf = Vec::with_capacity(total);
        let first = self.next_seq;
        let mut seq = first;
        for p in payloads {
            let len = u32::try_from(p.len())
                .map_err(|_| StoreError::Invalid("log record over 4 GiB".into()))?;
            buf.extend_from_slice(&MAGIC);
            buf.extend_from_slice(&len.to_le_bytes());
            buf.extend_from_slice(&seq.to_le_bytes());
            buf.extend_from_slice(&crc(seq, p).to_le_bytes());
            buf.extend_from_slice(p);
            seq += 1;
        }
        let end = self.off + total as u64;
        if end > self.len {
            self.grow(end.div_ceil(GROW) * GROW)?;
        }
        let off = self.off;
        let seqs = first..=seq - 1;
        #[cfg(target_os = "linux")]
        if !self.hooked() {
            if let Some(ring) = &mut self.ring {
                use std::os::fd::AsRawFd;
                match ring.write_and_sync(self.file.as_raw_fd(), off, buf) {
                    Ok(()) => {
                        self.off = end;
                        self.next_seq = seq;
                        return Ok(Staged {
                            seqs,
                            inflight: Some(off),
                        });
                    }
                    Err((e, back)) => {
                        // The ring took nothing: write and sync without it from now on.
                        tracing_note(&self.path, &e);
                        self.ring = None;
                        buf = back;
                    }
                }
            }
        }
        self.write_at(off, &buf)?;
        self.sync()?;
        self.off = end;
        self.next_seq = seq;
        Ok(Staged {
            seqs,
            #[cfg(target_os = "linux")]
            inflight: None,
        })
    }

    /// Waits until staged records are durable. An error: they may or may not be (the
    /// caller stops writing, see the module's "Failure").
    pub(crate) fn wait(&mut self, staged: Staged) -> Result<(), StoreError> {
        #[cfg(target_os = "linux")]
        if let Some(off) = staged.inflight {
            let Some(ring) = &mut self.ring else {
                return Err(StoreError::Invalid(
                    "log ring gone with a write in flight".into(),
                ));
            };
            let (buf, done) = ring.wait();
            if let Err(e) = done {
                // Short write, cancelled sync or an error the ring reported: once more
                // without the ring (the same bytes at the same place), so a transient
                // failure costs a sync, and a lasting one is reported as the disk's.
                tracing_note(&self.path, &e);
                self.ring = None;
                self.write_at(off, &buf)?;
                self.sync()?;
            }
            return Ok(());
        }
        let _ = staged;
        Ok(())
    }

    /// Appends a record that cancels the records `seqs` (staged, then refused: replay
    /// skips them) and makes it durable before returning.
    pub(crate) fn cancel(&mut self, seqs: &[u64]) -> Result<(), StoreError> {
        let mut p = Vec::with_capacity(4 + 8 * seqs.len());
        p.extend_from_slice(&CANCEL.to_le_bytes());
        for s in seqs {
            p.extend_from_slice(&s.to_le_bytes());
        }
        self.append(&[&p]).map(|_| ())
    }

    fn sync(&self) -> Result<(), StoreError> {
        files::io(FileOp::SyncData(&self.path), || self.file.sync_data())
            .map_err(|e| StoreError::io("fdatasync", &self.path, e))
    }

    /// Whether a test hooks this file's operations (they must then go through
    /// [`files::io`], which the ring would bypass).
    #[cfg(target_os = "linux")]
    fn hooked(&self) -> bool {
        #[cfg(feature = "testing")]
        return crate::testing::file_hook(&self.path).is_some();
        #[cfg(not(feature = "testing"))]
        false
    }

    fn grow(&mut self, to: u64) -> Result<(), StoreError> {
        let zeros = vec![0u8; 64 << 10];
        let mut at = self.len;
        while at < to {
            let n = (to - at).min(zeros.len() as u64) as usize;
            self.write_at(at, &zeros[..n])?;
            at += n as u64;
        }
        self.len = to;
        Ok(())
    }

    fn write_at(&self, off: u64, bytes: &[u8]) -> Result<(), StoreError> {
        files::io(FileOp::WriteAt(&self.path, off, bytes), || {
            #[cfg(unix)]
            {
                use std::os::unix::fs::FileExt;
                self.file.write_all_at(bytes, off)
            }
            #[cfg(not(unix))]
            {
                use std::io::{Seek, SeekFrom, Write};
                let mut f = &self.file;
                f.seek(SeekFrom::Start(off))?;
                f.write_all(bytes)
            }
        })
        .map_err(|e| StoreError::io("write", &self.path, e))
    }
}

/// The valid records at the start of `bytes`, in order.
fn parse(bytes: &[u8]) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    let mut off = 0usize;
    while let Some(h) = bytes.get(off..off + HEAD) {
        if h[..4] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let mut s = [0u8; 8];
        s.copy_from_slice(&h[8..16]);
        let seq = u64::from_le_bytes(s);
        let sum = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
        let Some(payload) = bytes.get(off + HEAD..off + HEAD + len) else {
            break;
        };
        if crc(seq, payload) != sum || out.last().is_some_and(|r| r.seq + 1 != seq) {
            break;
        }
        out.push(Record {
            seq,
            payload: payload.to_vec(),
        });
        off += HEAD + len;
    }
    out
}

/// The records to replay: redo records that no cancel record in `records` names (cancel
/// records themselves are left out).
pub(crate) fn live(records: Vec<Record>) -> Vec<Record> {
    let mut cancelled = std::collections::BTreeSet::new();
    for r in &records {
        if let Some(seqs) = cancelled_by(&r.payload) {
            cancelled.extend(seqs);
        }
    }
    records
        .into_iter()
        .filter(|r| cancelled_by(&r.payload).is_none() && !cancelled.contains(&r.seq))
        .collect()
}

/// The sequence numbers a cancel record names; `None` for any other record.
fn cancelled_by(payload: &[u8]) -> Option<Vec<u64>> {
    let rest = payload.strip_prefix(&CANCEL.to_le_bytes())?;
    Some(
        rest.chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
    )
}

/// Logs why the ring was given up (once per log: the log goes on without it).
#[cfg(target_os = "linux")]
fn tracing_note(path: &Path, e: &std::io::Error) {
    tracing::warn!(
        path = %path.display(),
        error = %e,
        "acceptance log: io_uring write+fdatasync failed; writing and syncing without io_uring from now on"
    );
}

/// CRC-32 (IEEE) of the sequence number and the payload.
fn crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

// ---- redo records ----

/// A stored file of a redo record.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RedoFile {
    /// 0: a delivered message, 1: a queued one.
    area: u8,
    id: u64,
    /// A hard link of this earlier file of the record (no bytes of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    link: Option<u64>,
    /// Length of its bytes in the record's blob area (0 for a link).
    len: u64,
}

#[derive(Serialize)]
struct QueueRef<'a> {
    msg_id: u64,
    size: u64,
    first: u64,
    rcpts: &'a [QueueRecipient],
}

#[derive(Deserialize)]
struct QueueOwned {
    msg_id: u64,
    size: u64,
    first: u64,
    rcpts: Vec<QueueRecipient>,
}

#[derive(Serialize)]
struct HeadRef<'a> {
    recs: &'a [MessageRecord],
    inline: &'a [(u64, u64)],
    files: &'a [RedoFile],
    queue: Option<QueueRef<'a>>,
}

#[derive(Deserialize)]
struct HeadOwned {
    #[serde(default)]
    recs: Vec<MessageRecord>,
    #[serde(default)]
    inline: Vec<(u64, u64)>,
    #[serde(default)]
    files: Vec<RedoFile>,
    #[serde(default)]
    queue: Option<QueueOwned>,
}

/// Builds one write's redo record: `[head length u32][head JSON][blobs]`, the blobs being
/// the inline bodies then the files' bytes, in the head's order.
#[derive(Default)]
pub(crate) struct Redo {
    inline: Vec<(u64, u64)>,
    files: Vec<RedoFile>,
    blobs: Vec<u8>,
}

fn area_code(a: Area) -> u8 {
    match a {
        Area::Msg => 0,
        Area::Queue => 1,
    }
}

impl Redo {
    /// A message body kept in the database.
    pub(crate) fn inline(&mut self, id: u64, bytes: &[u8]) {
        self.inline.push((id, bytes.len() as u64));
        self.blobs.extend_from_slice(bytes);
    }

    /// A message file of `parts`.
    pub(crate) fn file(&mut self, area: Area, id: u64, parts: &[&[u8]]) {
        let mut len = 0;
        for p in parts {
            self.blobs.extend_from_slice(p);
            len += p.len() as u64;
        }
        self.files.push(RedoFile {
            area: area_code(area),
            id,
            link: None,
            len,
        });
    }

    /// A hard link of the file of `from` (added to this record before).
    pub(crate) fn link(&mut self, area: Area, id: u64, from: u64) {
        self.files.push(RedoFile {
            area: area_code(area),
            id,
            link: Some(from),
            len: 0,
        });
    }

    /// The encoded record, with the message records and the queued message.
    pub(crate) fn finish(
        self,
        recs: &[MessageRecord],
        queue: Option<(u64, u64, u64, &[QueueRecipient])>,
    ) -> Result<Vec<u8>, StoreError> {
        let head = HeadRef {
            recs,
            inline: &self.inline,
            files: &self.files,
            queue: queue.map(|(msg_id, size, first, rcpts)| QueueRef {
                msg_id,
                size,
                first,
                rcpts,
            }),
        };
        let json = serde_json::to_vec(&head)
            .map_err(|e| StoreError::Invalid(format!("encoding log record: {e}")))?;
        let hl = u32::try_from(json.len())
            .map_err(|_| StoreError::Invalid("log record head over 4 GiB".into()))?;
        let mut out = Vec::with_capacity(4 + json.len() + self.blobs.len());
        out.extend_from_slice(&hl.to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&self.blobs);
        Ok(out)
    }
}

fn corrupt(detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        table: "accept log",
        detail: detail.into(),
    }
}

/// A record's head and its blob area.
fn split(payload: &[u8]) -> Result<(HeadOwned, &[u8]), StoreError> {
    let hl = payload
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| corrupt("short record"))?;
    let json = payload
        .get(4..4 + hl)
        .ok_or_else(|| corrupt("short record head"))?;
    let head: HeadOwned =
        serde_json::from_slice(json).map_err(|e| corrupt(format!("record head: {e}")))?;
    Ok((head, payload.get(4 + hl..).unwrap_or_default()))
}

/// Applies one redo record to `txn` (replay): writes its files under `root` (fsynced;
/// a file left by the crashed process is replaced), then its records, inline bodies and
/// queue entries. Adds the files' directories to `dirs`.
pub(crate) fn apply(
    txn: &WriteTransaction,
    root: &Path,
    payload: &[u8],
    keys: IndexKeyer,
    dirs: &mut std::collections::BTreeSet<PathBuf>,
) -> Result<(), StoreError> {
    let (head, mut blobs) = split(payload)?;
    let mut take = |n: u64| -> Result<&[u8], StoreError> {
        let n = usize::try_from(n).map_err(|_| corrupt("blob length"))?;
        if n > blobs.len() {
            return Err(corrupt("record blobs shorter than said"));
        }
        let (a, b) = blobs.split_at(n);
        blobs = b;
        Ok(a)
    };
    let mut inline = Vec::with_capacity(head.inline.len());
    for (id, len) in &head.inline {
        inline.push((*id, take(*len)?));
    }
    let mut parts: Vec<(&RedoFile, &[u8])> = Vec::with_capacity(head.files.len());
    for f in &head.files {
        let bytes = match f.link {
            None => take(f.len)?,
            Some(from) => parts
                .iter()
                .find(|(w, _)| w.area == f.area && w.id == from)
                .map(|(_, b)| *b)
                .ok_or_else(|| corrupt("link to a file not in the record"))?,
        };
        parts.push((f, bytes));
    }
    // First the records, which check the accounts and quotas (a refusal changes nothing,
    // and then no file is written either).
    crate::store::deliver_txn(txn, &head.recs, keys, None, None)?;
    for (f, bytes) in parts {
        let area = if f.area == 0 { Area::Msg } else { Area::Queue };
        let dir = match f.link {
            None => files::write(root, area, f.id, &[bytes], true)?,
            Some(from) => files::link(root, area, from, f.id, &[bytes], true)?,
        };
        dirs.insert(dir);
    }
    if !inline.is_empty() {
        let mut t = txn.open_table(crate::tables::MSG_BODIES)?;
        for (id, bytes) in inline {
            t.insert(id, bytes)?;
        }
    }
    if let Some(q) = head.queue {
        crate::queue::queue_add_txn(txn, q.msg_id, q.size, q.first, q.rcpts)?;
    }
    Ok(())
}

/// What the records after `done` in the log of `dir` hold (for verify).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub records: u64,
    pub msg_files: Vec<u64>,
    pub queue_files: Vec<u64>,
}

/// The records of the log in `dir` after `done` (none when there is no log).
pub(crate) fn pending(dir: &Path, done: u64) -> Result<Pending, StoreError> {
    let path = dir.join(LOG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pending::default()),
        Err(e) => return Err(StoreError::io("read", &path, e)),
    };
    let mut p = Pending::default();
    for r in live(parse(&bytes)).into_iter().filter(|r| r.seq > done) {
        p.records += 1;
        let (head, _) = split(&r.payload)?;
        for f in head.files {
            match f.area {
                0 => p.msg_files.push(f.id),
                _ => p.queue_files.push(f.id),
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        // The CRC-32 (IEEE) check value of "123456789".
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_ne!(crc(1, b"x"), crc(2, b"x"));
    }

    /// Staged records are numbered at once and durable after `wait`, with the ring and
    /// without it; a cancel record takes its own number and hides the records it names
    /// from replay (`live`), and from what `pending` reports.
    #[test]
    fn staged_records_and_cancels() {
        for ring in [true, false] {
            let d = tempfile::tempdir().unwrap();
            let (mut log, _) = Log::open(d.path()).unwrap();
            if !ring {
                log.without_ring();
            } else {
                assert!(
                    log.overlaps() || std::env::var_os("CI").is_none(),
                    "io_uring unavailable under CI"
                );
            }
            log.restart(1);
            let a = redo_for(1);
            let b = redo_for(2);
            let c = redo_for(3);
            let s = log.stage(&[&a, &b]).unwrap();
            assert_eq!(s.seqs, 1..=2);
            log.wait(s).unwrap();
            let s = log.stage(&[&c]).unwrap();
            assert_eq!(s.seqs, 3..=3);
            log.wait(s).unwrap();
            log.cancel(&[2]).unwrap();
            drop(log);
            let (_, recs) = Log::open(d.path()).unwrap();
            assert_eq!(recs.len(), 4, "ring {ring}");
            let live: Vec<u64> = live(recs).iter().map(|r| r.seq).collect();
            assert_eq!(live, vec![1, 3], "ring {ring}");
            let p = pending(d.path(), 0).unwrap();
            assert_eq!(p.records, 2);
            assert_eq!(p.queue_files, vec![1, 3]);
            assert!(log_empty_stage_is_refused(d.path()));
        }
    }

    /// A redo record with one queued file of id `id`.
    fn redo_for(id: u64) -> Vec<u8> {
        let mut r = Redo::default();
        r.file(Area::Queue, id, &[b"msg"]);
        r.finish(&[], None).unwrap()
    }

    fn log_empty_stage_is_refused(dir: &Path) -> bool {
        let (mut log, _) = Log::open(dir).unwrap();
        log.stage(&[]).is_err()
    }

    #[test]
    fn frames_round_trip_and_stop_at_damage() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, recs) = Log::open(d.path()).unwrap();
        assert!(recs.is_empty());
        log.restart(7);
        assert_eq!(log.append(&[b"one", b"two"]).unwrap(), 8);
        assert_eq!(log.append(&[b"three"]).unwrap(), 9);
        drop(log);
        let (_, recs) = Log::open(d.path()).unwrap();
        let got: Vec<(u64, &[u8])> = recs.iter().map(|r| (r.seq, &r.payload[..])).collect();
        assert_eq!(got, vec![(7, &b"one"[..]), (8, b"two"), (9, b"three")]);
        // The file grew in whole steps, zero-filled after the records.
        let bytes = std::fs::read(d.path().join(LOG_FILE)).unwrap();
        assert_eq!(bytes.len() as u64, GROW);
        // Reused from the start: the new records end where an older, lower one follows.
        let (mut log, _) = Log::open(d.path()).unwrap();
        log.restart(10);
        log.append(&[b"ten"]).unwrap();
        let (_, recs) = Log::open(d.path()).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].seq, 10);
        // A flipped byte in a payload ends the log before that record.
        let mut bytes = std::fs::read(d.path().join(LOG_FILE)).unwrap();
        bytes[HEAD] ^= 1;
        assert!(parse(&bytes).is_empty());
    }
}
