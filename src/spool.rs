//! Spool files: message data past the spool threshold, written as it arrives (the
//! session's [`Effect::Spool`](rmox_core::server::Effect::Spool); the design is in
//! `rmox_core::server::spool`).
//!
//! One file per transaction, `DATA_DIR/tmp/spool/CID-TXN`, private (0600 in a 0700
//! directory). Chunks are appended with plain writes: the spool needs no fsync, since the
//! message becomes durable only when storage writes (and fsyncs) its message file before the
//! 250; a spool file that survives a crash is a leftover, removed at the next start. The
//! last chunk's answer is a read-only memory map of the whole file, which the session's
//! checks and storage read. A file is removed when the session says its transaction ended
//! ([`Event::SpoolEnded`](rmox_core::server::Event::SpoolEnded)) and, as a backstop, when
//! its connection ends.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rmox_core::server::{SpoolAnswer, SpoolId, SpooledBytes};

/// Where one transaction's spool stands.
enum Entry {
    /// Open for appending, no write under way.
    Idle(File),
    /// A chunk is being written (the file is out of the table meanwhile).
    Busy,
    /// The transaction ended while a chunk was being written: remove the file after it.
    EndWhenDone,
    /// The transaction ended before its first chunk was written: create nothing.
    Ended,
}

/// The spool directory and the open spool files.
pub struct Spools {
    dir: PathBuf,
    open: Mutex<HashMap<SpoolId, Entry>>,
}

impl Spools {
    /// The spool directory under `data_dir`, created if missing; files left by an earlier
    /// run (a crash, a kill) are removed.
    pub fn open(data_dir: &Path) -> Result<Spools, crate::Fail> {
        let dir = data_dir.join("tmp").join("spool");
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&dir)
            .map_err(|e| crate::Fail(format!("creating spool directory {}: {e}", dir.display())))?;
        let entries = fs::read_dir(&dir)
            .map_err(|e| crate::Fail(format!("reading spool directory {}: {e}", dir.display())))?;
        let mut removed = 0;
        for e in entries.flatten() {
            if fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, dir = %dir.display(), "removed spool files left from an earlier run");
        }
        Ok(Spools {
            dir,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn table(&self) -> MutexGuard<'_, HashMap<SpoolId, Entry>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, id: SpoolId) -> PathBuf {
        self.dir.join(format!("{}-{}", id.cid, id.txn))
    }

    /// Answers [`Effect::Spool`](rmox_core::server::Effect::Spool): appends `chunk`; after
    /// the last one, maps the whole file.
    pub fn append(&self, id: SpoolId, chunk: &[u8], last: bool) -> SpoolAnswer {
        let path = self.path(id);
        let file = {
            let mut t = self.table();
            match t.insert(id, Entry::Busy) {
                Some(Entry::Idle(f)) => Some(f),
                None => None,
                Some(Entry::Ended) => {
                    t.remove(&id);
                    return SpoolAnswer::Failed("transaction ended".into());
                }
                Some(other) => {
                    // Effects of one session come one at a time; keep what was there.
                    t.insert(id, other);
                    return SpoolAnswer::Failed("spool busy".into());
                }
            }
        };
        let result = (|| -> std::io::Result<File> {
            let mut f = match file {
                Some(f) => f,
                None => private_file().open(&path)?,
            };
            f.write_all(chunk)?;
            Ok(f)
        })();
        let mut t = self.table();
        let ended = matches!(t.remove(&id), Some(Entry::EndWhenDone));
        let f = match result {
            Ok(f) if !ended => f,
            Ok(_) => {
                remove(&path);
                return SpoolAnswer::Failed("transaction ended".into());
            }
            Err(e) => {
                drop(t);
                tracing::error!(error = %e, path = %path.display(), "writing spool file");
                remove(&path);
                return SpoolAnswer::Failed(e.kind().to_string());
            }
        };
        if !last {
            t.insert(id, Entry::Idle(f));
            return SpoolAnswer::Appended;
        }
        drop(t);
        match map(&f) {
            Ok(m) => SpoolAnswer::Complete(SpooledBytes::new(Arc::new(m))),
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "mapping spool file");
                remove(&path);
                SpoolAnswer::Failed(e.kind().to_string())
            }
        }
    }

    /// The transaction of `id` ended: its file goes (a map of it stays readable until
    /// dropped).
    pub fn end(&self, id: SpoolId) {
        let mut t = self.table();
        match t.remove(&id) {
            Some(Entry::Busy) => {
                t.insert(id, Entry::EndWhenDone);
                return;
            }
            // The first chunk's write has not started yet: it must not create the file.
            None if !self.path(id).exists() => {
                t.insert(id, Entry::Ended);
                return;
            }
            _ => {}
        }
        drop(t);
        remove(&self.path(id));
    }

    /// The connection `cid` ended: whatever of its spools is left goes.
    pub fn end_connection(&self, cid: u64) {
        let ids: Vec<SpoolId> = self
            .table()
            .iter()
            .filter(|(id, e)| id.cid == cid && !matches!(e, Entry::Ended))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.end(id);
        }
    }

    /// How many spool files exist now (for tests and logs).
    #[cfg(test)]
    pub fn count(&self) -> usize {
        fs::read_dir(&self.dir).map(|d| d.count()).unwrap_or(0)
    }
}

fn private_file() -> OpenOptions {
    let mut o = OpenOptions::new();
    // Read too: the complete file is mapped.
    o.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

fn remove(p: &Path) {
    match fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::error!(error = %e, path = %p.display(), "removing spool file");
        }
        _ => {}
    }
}

/// A read-only map of a complete spool file.
#[allow(unsafe_code)]
fn map(f: &File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is valid as long as the file's bytes do not change under it. The
    // file is complete (the last chunk was written above and nothing writes to a spool
    // after its last chunk: its handle is dropped here and the session starts a new spool
    // for a new transaction), it lives in the private (0700) data directory, and removing
    // it (at the transaction's end) leaves the mapped pages readable until the map is
    // dropped.
    unsafe { memmap2::Mmap::map(f) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(cid: u64, txn: u32) -> SpoolId {
        SpoolId { cid, txn }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rmox-spool-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// Spool files left by a crash are removed at the next start.
    #[test]
    fn leftovers_are_removed_at_open() {
        let d = tmp("leftover");
        let s = Spools::open(&d).unwrap();
        assert!(matches!(
            s.append(id(1, 1), b"abc", false),
            SpoolAnswer::Appended
        ));
        assert_eq!(s.count(), 1);
        drop(s);
        let s = Spools::open(&d).unwrap();
        assert_eq!(s.count(), 0);
        let _ = fs::remove_dir_all(&d);
    }

    /// Chunks are appended; the last answer maps the whole file, which stays readable
    /// after the transaction's end removed the file.
    #[test]
    fn append_map_end() {
        let d = tmp("append");
        let s = Spools::open(&d).unwrap();
        assert!(matches!(
            s.append(id(1, 1), b"abc", false),
            SpoolAnswer::Appended
        ));
        let SpoolAnswer::Complete(b) = s.append(id(1, 1), b"def", true) else {
            panic!("not complete");
        };
        assert_eq!(b.bytes(), b"abcdef");
        s.end(id(1, 1));
        assert_eq!(s.count(), 0);
        assert_eq!(b.bytes(), b"abcdef");
        // A connection's end removes what it left.
        assert!(matches!(
            s.append(id(2, 1), b"x", false),
            SpoolAnswer::Appended
        ));
        assert!(matches!(
            s.append(id(3, 1), b"y", false),
            SpoolAnswer::Appended
        ));
        s.end_connection(2);
        assert_eq!(s.count(), 1);
        s.end_connection(3);
        assert_eq!(s.count(), 0);
        let _ = fs::remove_dir_all(&d);
    }

    /// A transaction that ended before its first chunk was written creates no file.
    #[test]
    fn ended_before_first_write_creates_nothing() {
        let d = tmp("ended");
        let s = Spools::open(&d).unwrap();
        s.end(id(1, 1));
        assert!(matches!(
            s.append(id(1, 1), b"abc", false),
            SpoolAnswer::Failed(_)
        ));
        assert_eq!(s.count(), 0);
        let _ = fs::remove_dir_all(&d);
    }
}
