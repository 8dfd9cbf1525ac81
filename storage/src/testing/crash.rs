//! Exact crash points: one counter over every write and sync the store makes, to redb's
//! file (through a custom [`redb::StorageBackend`]) and to message files and directories
//! (through a [`FileHook`]). Armed with a crash point N, the N-th operation and every one
//! after it fail without happening, as if the machine stopped there. Two images of what
//! survives can then be built:
//!
//! * **power loss** ([`Image::Durable`]): only what was synced: redb's bytes as of its last
//!   `sync_data`; a file's data only once it was fsynced (or `syncfs`ed), otherwise it is
//!   empty; a directory entry (creation, link or removal) only once its directory was
//!   fsynced (or `syncfs`ed); nothing below a directory whose own entry is not durable.
//! * **process crash** ([`Image::Written`]): every write that happened, synced or not
//!   (the kernel keeps it), as a SIGKILL leaves it.
//!
//! Real fsyncs are skipped while the hook is in place (durability is modelled here), so
//! the tests stay fast.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{FileHook, FileOp};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(usize),
}

#[derive(Debug, Default)]
struct Inode {
    written: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    /// Operations done (or attempted: the crashing one counts).
    ops: u64,
    crash_at: Option<u64>,
    crashed: bool,
    db_written: Vec<u8>,
    db_durable: Vec<u8>,
    /// Directory entries under the root as written, and as durable.
    written: BTreeMap<PathBuf, Node>,
    durable: BTreeMap<PathBuf, Node>,
    inodes: Vec<Inode>,
}

/// Which survivors of a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    /// Power loss: only synced data.
    Durable,
    /// Process crash: everything written.
    Written,
}

/// The crash simulator of one store; see the module docs. Cheap to clone (shared state).
#[derive(Clone, Debug, Default)]
pub struct Crash {
    state: Arc<Mutex<State>>,
    /// Operations on files and directories outside it are not modelled.
    root: Arc<Mutex<PathBuf>>,
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash")
}

impl Crash {
    /// A simulator for the files under `root` (an empty directory; the store's data
    /// directory is created below it), crashing at operation `crash_at` (1-based; `None`:
    /// never).
    pub fn new(root: &Path, crash_at: Option<u64>) -> Crash {
        let c = Crash::default();
        c.lock().crash_at = crash_at;
        *c.root.lock().unwrap() = root.to_path_buf();
        c
    }

    /// A simulator that never crashes whose database starts as `db` (to open a crash
    /// image without real fsyncs).
    pub fn with_db(root: &Path, db: Vec<u8>) -> Crash {
        let c = Crash::new(root, None);
        {
            let mut st = c.lock();
            st.db_durable = db.clone();
            st.db_written = db;
        }
        c
    }

    /// A simulator whose starting state is the tree under `root` as it is on disk, all of
    /// it durable, and whose database starts as `data_dir/index.db` (to crash the recovery
    /// of a crash image), crashing at operation `crash_at`.
    pub fn from_tree(root: &Path, data_dir: &Path, crash_at: Option<u64>) -> Crash {
        let db = std::fs::read(data_dir.join(crate::DB_FILE)).unwrap_or_default();
        let c = Crash::new(root, crash_at);
        {
            let mut st = c.lock();
            st.db_durable = db.clone();
            st.db_written = db;
            let mut tree = BTreeMap::new();
            walk(root, &mut tree);
            for (p, bytes) in tree {
                let node = match bytes {
                    None => Node::Dir,
                    Some(b) => {
                        st.inodes.push(Inode {
                            written: b.clone(),
                            durable: b,
                        });
                        Node::File(st.inodes.len() - 1)
                    }
                };
                st.written.insert(p.clone(), node);
                st.durable.insert(p, node);
            }
        }
        c
    }

    /// The database bytes as written.
    pub fn db_written(&self) -> Vec<u8> {
        self.lock().db_written.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one operation; fails it (and all later ones) at and after the crash point.
    fn tick(st: &mut State) -> io::Result<()> {
        if st.crashed {
            return Err(crashed());
        }
        st.ops += 1;
        if st.crash_at == Some(st.ops) {
            st.crashed = true;
            return Err(crashed());
        }
        Ok(())
    }

    /// Operations counted so far.
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Whether the crash point was reached.
    pub fn crashed(&self) -> bool {
        self.lock().crashed
    }

    /// The redb storage backend (share one `Crash` between the backend and the file hook).
    pub fn backend(&self) -> CrashBackend {
        CrashBackend(self.clone())
    }

    /// Writes the image that survives into `dest` (mirroring the tree under the root):
    /// files and directories, and the database bytes as `data_dir/index.db`.
    pub fn write_image(&self, image: Image, data_dir: &Path, dest: &Path) {
        let root = self.root.lock().unwrap().clone();
        let st = self.lock();
        let entries = match image {
            Image::Durable => &st.durable,
            Image::Written => &st.written,
        };
        std::fs::create_dir_all(dest).unwrap();
        for (p, n) in entries {
            let rel = p.strip_prefix(&root).unwrap();
            let to = dest.join(rel);
            if !to.parent().is_some_and(|d| d.is_dir()) {
                continue; // its directory's entry did not survive
            }
            match n {
                Node::Dir => std::fs::create_dir(&to).unwrap(),
                Node::File(i) => {
                    let ino = &st.inodes[*i];
                    let mut bytes = match image {
                        Image::Durable => &ino.durable,
                        Image::Written => &ino.written,
                    };
                    // The database's file (an empty stand-in under its current name)
                    // holds the backend's bytes.
                    if p.parent() == Some(data_dir) && is_db_name(p) {
                        bytes = match image {
                            Image::Durable => &st.db_durable,
                            Image::Written => &st.db_written,
                        };
                    }
                    write_sparse(&to, bytes);
                }
            }
        }
    }

    /// Checks that the modelled tree as written matches the real one under the root (the
    /// model of the file operations is right). Returns a difference, if any.
    pub fn check_model(&self) -> Result<(), String> {
        let root = self.root.lock().unwrap().clone();
        let st = self.lock();
        let mut real = BTreeMap::new();
        walk(&root, &mut real);
        let mut model = BTreeMap::new();
        for (p, n) in &st.written {
            model.insert(
                p.clone(),
                match n {
                    Node::Dir => None,
                    Node::File(i) => Some(st.inodes[*i].written.clone()),
                },
            );
        }
        if real != model {
            let r: Vec<_> = real.keys().collect();
            let m: Vec<_> = model.keys().collect();
            return Err(format!("file model differs: real {r:?}, model {m:?}"));
        }
        Ok(())
    }

    fn file_op(&self, op: &FileOp<'_>, real: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
        let mut st = self.lock();
        Crash::tick(&mut st)?;
        let is_sync = matches!(
            op,
            FileOp::SyncDir(_) | FileOp::SyncFs(_) | FileOp::SyncData(_)
        );
        if !is_sync {
            real()?;
        }
        let st = &mut *st;
        match *op {
            FileOp::CreateDir(d) => {
                st.written.entry(d.to_path_buf()).or_insert(Node::Dir);
            }
            FileOp::SyncDir(d) => {
                let keys: Vec<PathBuf> = st
                    .written
                    .keys()
                    .chain(st.durable.keys())
                    .filter(|p| p.parent() == Some(d))
                    .cloned()
                    .collect();
                for k in keys {
                    match st.written.get(&k) {
                        Some(n) => st.durable.insert(k, *n),
                        None => st.durable.remove(&k),
                    };
                }
            }
            FileOp::SyncFs(_) => {
                st.durable = st.written.clone();
                for i in &mut st.inodes {
                    i.durable = i.written.clone();
                }
            }
            FileOp::Create(p, bytes) => {
                st.inodes.push(Inode {
                    written: bytes.concat(),
                    durable: Vec::new(),
                });
                st.written
                    .insert(p.to_path_buf(), Node::File(st.inodes.len() - 1));
            }
            FileOp::SyncData(p) => {
                if let Some(Node::File(i)) = st.written.get(p) {
                    let ino = &mut st.inodes[*i];
                    ino.durable = ino.written.clone();
                }
            }
            FileOp::WriteAt(p, off, bytes) => {
                if let Some(Node::File(i)) = st.written.get(p) {
                    let w = &mut st.inodes[*i].written;
                    let start = off as usize;
                    if w.len() < start + bytes.len() {
                        w.resize(start + bytes.len(), 0);
                    }
                    w[start..start + bytes.len()].copy_from_slice(bytes);
                }
            }
            FileOp::Link(from, to) => {
                if let Some(n) = st.written.get(from).copied() {
                    st.written.insert(to.to_path_buf(), n);
                }
            }
            FileOp::Remove(p) => {
                st.written.remove(p);
            }
            FileOp::Rename(from, to) => {
                if let Some(n) = st.written.remove(from) {
                    st.written.insert(to.to_path_buf(), n);
                }
            }
        }
        Ok(())
    }
}

/// Writes `bytes` leaving runs of zeros as holes (database images are mostly zeros).
pub fn write_sparse(p: &Path, bytes: &[u8]) {
    let f = std::fs::File::create(p).unwrap();
    f.set_len(bytes.len() as u64).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileExt;
        for (i, chunk) in bytes.chunks(4096).enumerate() {
            if chunk.iter().any(|b| *b != 0) {
                f.write_all_at(chunk, (i * 4096) as u64).unwrap();
            }
        }
    }
    #[cfg(not(unix))]
    {
        use std::io::Write;
        let mut f = f;
        f.write_all(bytes).unwrap();
    }
}

fn is_db_name(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n == crate::DB_FILE || n == crate::store::DB_NEW)
}

fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.insert(p.clone(), None);
            walk(&p, out);
        } else {
            out.insert(p.clone(), Some(std::fs::read(&p).unwrap()));
        }
    }
}

impl FileHook for Crash {
    fn run(&self, op: &FileOp<'_>, real: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
        self.file_op(op, real)
    }
}

/// redb's file, in memory, with the crash point of its [`Crash`].
#[derive(Clone, Debug)]
pub struct CrashBackend(Crash);

impl redb::StorageBackend for CrashBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().db_written.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let st = self.0.lock();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start.saturating_add(out.len());
        match st.db_written.get(start..end) {
            Some(b) => {
                out.copy_from_slice(b);
                Ok(())
            }
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.0.lock();
        Crash::tick(&mut st)?;
        let len = usize::try_from(len).map_err(io::Error::other)?;
        st.db_written.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.0.lock();
        Crash::tick(&mut st)?;
        st.db_durable = st.db_written.clone();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.0.lock();
        Crash::tick(&mut st)?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start + data.len();
        if st.db_written.len() < end {
            st.db_written.resize(end, 0);
        }
        st.db_written[start..end].copy_from_slice(data);
        Ok(())
    }
}
