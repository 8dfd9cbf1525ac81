//! Test support, behind the `testing` feature (never in production builds): hooks on the
//! store's message-file operations, a crash simulator for those and for redb's storage
//! backend ([`crash`]), and a model-based checker of the storage interface ([`check`])
//! shared by `storage/tests/model.rs` (proptest) and `fuzz/fuzz_targets/storage_model.rs`
//! (cargo-fuzz).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: failing loudly is the point

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use crate::files::FileOp;

pub mod check;
pub mod crash;
pub mod points;
pub mod shared;

/// Sees (and may fail or skip) every message-file operation of stores whose data directory
/// lies under the root it was registered for.
pub trait FileHook: Send + Sync {
    /// Runs the operation: call `real` to perform it (or not: a crash fails it, and a hook
    /// may skip syncs whose durability it models itself), record what happened, and return
    /// the result the store sees.
    fn run(
        &self,
        op: &FileOp<'_>,
        real: &mut dyn FnMut() -> std::io::Result<()>,
    ) -> std::io::Result<()>;
}

type Hooks = Vec<(u64, PathBuf, Arc<dyn FileHook>)>;

static HOOKS: Mutex<(u64, Hooks)> = Mutex::new((0, Vec::new()));

/// Removes its hook when dropped.
#[must_use = "the hook is removed when the guard is dropped"]
pub struct FileHookGuard(u64);

impl Drop for FileHookGuard {
    fn drop(&mut self) {
        let mut h = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
        h.1.retain(|(id, _, _)| *id != self.0);
    }
}

/// Sends every file operation on a path under `root` through `hook` until the guard drops.
/// Roots of concurrently registered hooks must not overlap (tests use their own temporary
/// directories).
pub fn register_file_hook(root: &Path, hook: Arc<dyn FileHook>) -> FileHookGuard {
    let mut h = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
    h.0 += 1;
    let id = h.0;
    h.1.push((id, root.to_path_buf(), hook));
    FileHookGuard(id)
}

/// The hook for `path`, if one is registered for a root above it.
pub(crate) fn file_hook(path: &Path) -> Option<Arc<dyn FileHook>> {
    let h = HOOKS.lock().unwrap_or_else(|e| e.into_inner());
    h.1.iter()
        .find(|(_, root, _)| path.starts_with(root))
        .map(|(_, _, hook)| Arc::clone(hook))
}
