//! Message files: written and fsynced by the storing thread before its commit is queued,
//! immutable afterwards, removed only after the commit that stops referencing them.
//!
//! Layout: `DATA/msg/<id / 4096 in hex>/<id>` for delivered messages and
//! `DATA/queue/<id / 4096 in hex>/<id>` for queued ones.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// Which set of message files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Area {
    /// Delivered messages.
    Msg,
    /// Queued messages.
    Queue,
}

impl Area {
    pub(crate) fn dir_name(self) -> &'static str {
        match self {
            Area::Msg => "msg",
            Area::Queue => "queue",
        }
    }
}

/// Directory holding the file for `id`.
pub(crate) fn shard_dir(root: &Path, area: Area, id: u64) -> PathBuf {
    root.join(area.dir_name()).join(format!("{:x}", id >> 12))
}

/// Path of the file for `id`.
pub(crate) fn path(root: &Path, area: Area, id: u64) -> PathBuf {
    shard_dir(root, area, id).join(id.to_string())
}

/// Parses a file name back to its id (for verify), when it is one of ours.
pub(crate) fn parse_name(shard: &str, name: &str) -> Option<u64> {
    let id: u64 = name.parse().ok()?;
    let s = u64::from_str_radix(shard, 16).ok()?;
    (id >> 12 == s && id.to_string() == name).then_some(id)
}

/// fsyncs a directory (makes entries created in it durable).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    io(FileOp::SyncDir(dir), || {
        File::open(dir).and_then(|d| d.sync_all())
    })
    .map_err(|e| StoreError::io("sync directory", dir, e))
}

/// One file-system operation of the store, as the `testing` feature's hooks see it (crash
/// simulation: counting, failing from a crash point on, recording durability).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "testing"), allow(dead_code, unreachable_pub))]
pub enum FileOp<'a> {
    /// A directory is created (if missing).
    CreateDir(&'a Path),
    /// A directory is fsynced: its entries become durable.
    SyncDir(&'a Path),
    /// The file system holding this directory is synced (`syncfs`): everything is durable.
    SyncFs(&'a Path),
    /// A new file (a new inode) is created with these bytes (in consecutive parts), not
    /// yet durable.
    Create(&'a Path, &'a [&'a [u8]]),
    /// A file's data is fsynced.
    SyncData(&'a Path),
    /// A hard link `to` of `from` is created.
    Link(&'a Path, &'a Path),
    /// A directory entry is removed (if present).
    Remove(&'a Path),
    /// An entry is renamed (`from` to `to`, replacing `to`).
    Rename(&'a Path, &'a Path),
    /// Bytes are written into an existing file at an offset (the acceptance log), not yet
    /// durable.
    WriteAt(&'a Path, u64, &'a [u8]),
}

impl FileOp<'_> {
    /// The path the operation is about (for links, the new one).
    #[cfg_attr(not(feature = "testing"), allow(dead_code, unreachable_pub))]
    pub fn path(&self) -> &Path {
        match self {
            FileOp::CreateDir(p)
            | FileOp::SyncDir(p)
            | FileOp::SyncFs(p)
            | FileOp::Create(p, _)
            | FileOp::SyncData(p)
            | FileOp::WriteAt(p, _, _)
            | FileOp::Link(_, p)
            | FileOp::Rename(_, p)
            | FileOp::Remove(p) => p,
        }
    }
}

/// Runs `f`, the real operation `op`; with the `testing` feature, through the hook
/// registered for the path, if any (which may fail it, skip it, or record it).
pub(crate) fn io(op: FileOp<'_>, f: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
    #[cfg(feature = "testing")]
    if let Some(h) = crate::testing::file_hook(op.path()) {
        let mut f = Some(f);
        return h.run(&op, &mut || f.take().map_or(Ok(()), |f| f()));
    }
    #[cfg(not(feature = "testing"))]
    let _ = op;
    f()
}

/// Makes everything written to `dir`'s file system durable: file data and directory
/// entries (Linux `syncfs`, which reports writeback errors since 5.8).
#[cfg(target_os = "linux")]
pub(crate) fn sync_fs(dir: &Path) -> Result<(), StoreError> {
    io(FileOp::SyncFs(dir), || sync_fs_now(dir)).map_err(|e| StoreError::io("syncfs", dir, e))
}

#[cfg(target_os = "linux")]
fn sync_fs_now(dir: &Path) -> std::io::Result<()> {
    let d = File::open(dir)?;
    rustix::fs::syncfs(&d).map_err(std::io::Error::from)
}

/// Other systems have no `syncfs`: never called, since [`syncfs_works`] says no and the
/// store then fsyncs each file and directory (the path `RMOX_STORAGE_FSYNC=file` selects
/// on Linux, which the portable CI run uses).
#[cfg(not(target_os = "linux"))]
pub(crate) fn sync_fs(dir: &Path) -> Result<(), StoreError> {
    Err(StoreError::io(
        "syncfs",
        dir,
        std::io::Error::new(std::io::ErrorKind::Unsupported, "syncfs is Linux-only"),
    ))
}

/// Whether `syncfs` works for `dir` (probed once when a store opens); false where the
/// platform has none.
pub(crate) fn syncfs_works(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    return sync_fs_now(dir).is_ok();
    #[cfg(not(target_os = "linux"))]
    return sync_fs(dir).is_ok();
}

/// Directories known to exist durably (their entries fsynced in their parents by this
/// process). Existing is not enough: another thread may have created a directory and not
/// yet fsynced its parent, and a file committed there would be lost with the directory on
/// power loss (found by the crash-point tests).
static DURABLE_DIRS: std::sync::Mutex<BTreeSet<PathBuf>> = std::sync::Mutex::new(BTreeSet::new());

/// Creates `dir` (and its parent) if needed, durably: returns once its entry (and its
/// parents') is durable, even when another thread created it.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    let lock = || DURABLE_DIRS.lock().unwrap_or_else(|e| e.into_inner());
    // A relative path's last parent is "": the current directory, which exists.
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    // (Checked again: a directory removed since, e.g. a backup destination, is made anew.)
    if lock().contains(dir) && dir.is_dir() {
        return Ok(());
    }
    ensure_dir_locked(dir, &mut lock())
}

fn ensure_dir_locked(dir: &Path, known: &mut BTreeSet<PathBuf>) -> Result<(), StoreError> {
    if dir.as_os_str().is_empty() || (known.contains(dir) && dir.is_dir()) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            ensure_dir_locked(parent, known)?;
        }
    }
    io(FileOp::CreateDir(dir), || {
        match private_dir_builder().create(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            r => r,
        }
    })
    .map_err(|e| StoreError::io("create directory", dir, e))?;
    // Also when it existed: a crashed process may have created it without the fsync.
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
        _ => sync_dir(Path::new("."))?,
    }
    known.insert(dir.to_path_buf());
    Ok(())
}

/// Directories the store creates are private to the server's user (0700 on Unix): they
/// hold people's mail.
fn private_dir_builder() -> fs::DirBuilder {
    #[allow(unused_mut)]
    let mut b = fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b
}

/// Files the store creates are private to the server's user (0600 on Unix).
pub(crate) fn private_file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// Writes `bytes` to the file for `id` and, when `sync`, fsyncs its data (otherwise the
/// committer's `syncfs` does). The directory entry is made durable by the committer (one
/// directory fsync or one `syncfs` per batch). Returns the shard directory.
pub(crate) fn write(
    root: &Path,
    area: Area,
    id: u64,
    parts: &[&[u8]],
    sync: bool,
) -> Result<PathBuf, StoreError> {
    let dir = shard_dir(root, area, id);
    ensure_dir(&dir)?;
    let p = dir.join(id.to_string());
    let mut file = None;
    let mut create = || {
        io(FileOp::Create(&p, parts), || {
            let mut f = private_file_options()
                .write(true)
                .create_new(true)
                .open(&p)?;
            // A spooled message's second part is a memory map of its spool file: written
            // from the page cache, not copied into the heap.
            for b in parts {
                f.write_all(b)?;
            }
            file = Some(f);
            Ok(())
        })
    };
    // An id allocated but never committed before a crash is handed out again after the
    // restart, and its orphan file may be a hard link shared with another orphan whose id
    // is reused too: never write into an existing inode, always make a new one. Only then
    // is there a name to remove first (an unconditional unlink would cost every write a
    // system call that locks the directory).
    let made = match create() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            io(FileOp::Remove(&p), || match fs::remove_file(&p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            })
            .map_err(|e| StoreError::io("remove stale", &p, e))?;
            create()
        }
        r => r,
    };
    made.map_err(|e| StoreError::io("create", &p, e))?;
    if sync {
        io(FileOp::SyncData(&p), || match &file {
            Some(f) => f.sync_data(),
            // A hook that skipped the creation (tests only): reopen to sync.
            None => File::open(&p).and_then(|f| f.sync_data()),
        })
        .map_err(|e| StoreError::io("sync", &p, e))?;
    }
    Ok(dir)
}

/// Hard-links the file for `from` as `to` (one message stored for several recipients).
/// Falls back to a copy when links are not supported. Returns the shard directory of `to`.
pub(crate) fn link(
    root: &Path,
    area: Area,
    from: u64,
    to: u64,
    parts: &[&[u8]],
    sync: bool,
) -> Result<PathBuf, StoreError> {
    let dir = shard_dir(root, area, to);
    ensure_dir(&dir)?;
    let dst = dir.join(to.to_string());
    let src = path(root, area, from);
    let link = || io(FileOp::Link(&src, &dst), || fs::hard_link(&src, &dst));
    // A stale name (an id handed out again after a crash, see `write`) is removed first.
    let linked = match link() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            remove(&dst);
            link()
        }
        r => r,
    };
    match linked {
        Ok(()) => Ok(dir),
        Err(_) => write(root, area, to, parts, sync),
    }
}

/// Renames `from` to `to` (replacing it); the caller fsyncs the directory.
pub(crate) fn rename(from: &Path, to: &Path) -> Result<(), StoreError> {
    io(FileOp::Rename(from, to), || fs::rename(from, to))
        .map_err(|e| StoreError::io("rename", from, e))
}

/// Creates an empty file (durably: the caller fsyncs the directory).
#[cfg(feature = "testing")]
pub(crate) fn create_empty(p: &Path) -> Result<(), StoreError> {
    io(FileOp::Create(p, &[]), || File::create(p).map(|_| ()))
        .map_err(|e| StoreError::io("create", p, e))
}

/// Reads the file for `id`.
pub(crate) fn read(root: &Path, area: Area, id: u64) -> Result<Vec<u8>, StoreError> {
    let p = path(root, area, id);
    fs::read(&p).map_err(|e| StoreError::io("read", p, e))
}

/// Removes a file, ignoring "not found".
pub(crate) fn remove(p: &Path) {
    let _ = io(FileOp::Remove(p), || match fs::remove_file(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the crash test: after a crash, a reused id whose orphan file was a hard link
    /// shared with a committed message's file truncated that message. Writes must make a new
    /// inode.
    #[test]
    fn write_never_reuses_an_inode() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), Area::Msg, 1, &[&b"first"[..]], true).unwrap();
        link(d.path(), Area::Msg, 1, 2, &[&b"first"[..]], true).unwrap();
        write(d.path(), Area::Msg, 2, &[&b"second, longer"[..]], true).unwrap();
        assert_eq!(read(d.path(), Area::Msg, 1).unwrap(), b"first");
        assert_eq!(read(d.path(), Area::Msg, 2).unwrap(), b"second, longer");
    }

    /// A name left by an earlier crash is replaced by the link, and the file it named is
    /// not changed.
    #[test]
    fn link_replaces_a_stale_name() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), Area::Msg, 1, &[&b"first"[..]], true).unwrap();
        write(d.path(), Area::Msg, 2, &[&b"stale"[..]], true).unwrap();
        let stale = File::open(path(d.path(), Area::Msg, 2)).unwrap();
        link(d.path(), Area::Msg, 1, 2, &[&b"first"[..]], true).unwrap();
        assert_eq!(read(d.path(), Area::Msg, 2).unwrap(), b"first");
        let mut old = String::new();
        std::io::Read::read_to_string(&mut &stale, &mut old).unwrap();
        assert_eq!(old, "stale");
    }

    #[test]
    fn names() {
        let cases: &[(u64, &str)] = &[
            (0, "msg/0/0"),
            (4095, "msg/0/4095"),
            (4096, "msg/1/4096"),
            (1 << 20, "msg/100/1048576"),
        ];
        for (id, want) in cases {
            let p = path(Path::new(""), Area::Msg, *id);
            assert_eq!(p.to_str().unwrap(), *want);
            let shard = p.parent().unwrap().file_name().unwrap().to_str().unwrap();
            assert_eq!(parse_name(shard, &id.to_string()), Some(*id));
        }
        assert_eq!(parse_name("1", "5"), None);
        assert_eq!(parse_name("0", "007"), None);
        assert_eq!(parse_name("0", "x"), None);
    }
}
