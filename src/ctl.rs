//! The control socket: a running `rmox serve` owns the database (redb allows one process),
//! so commands that need it while the server runs (`rmox backup`) are sent over a Unix
//! socket in the data directory. One line in (`backup DIR`), one line out (`ok ...` or
//! `error ...`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rmox_storage::Store;

use crate::Fail;

/// The socket's path for a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("ctl.sock")
}

/// The running control thread; [`Control::stop`] ends it and removes the socket.
pub struct Control {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Control {
    /// Stops answering, waits for the thread (it drops its handle on the store) and removes
    /// the socket.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts answering control commands for `store` on a thread.
pub fn start(store: Arc<Store>) -> Result<Control, Fail> {
    let path = socket_path(store.data_dir());
    // A socket left by a crashed server: nothing listens on it any more.
    if path.exists() && UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)
        .map_err(|e| Fail(format!("control socket {}: {e}", path.display())))?;
    // Whoever can connect can administer the server: the owner only.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| Fail(format!("control socket {}: {e}", path.display())))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let stopping = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("rmox-ctl".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut line = String::new();
                let mut r = BufReader::new(&conn);
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let answer = handle(&store, line.trim_end());
                let mut w = &conn;
                let _ = w.write_all(format!("{answer}\n").as_bytes());
            }
        })
        .map_err(|e| Fail(format!("starting control thread: {e}")))?;
    Ok(Control {
        path,
        stop,
        thread: Some(thread),
    })
}

fn handle(store: &Store, line: &str) -> String {
    match line.split_once(' ') {
        Some(("backup", dir)) => match store.backup(Path::new(dir)) {
            Ok(r) => format!(
                "ok backup written to {}: {} messages, {} queued messages, {} bytes",
                dir, r.messages, r.queue_messages, r.bytes
            ),
            Err(e) => format!("error {e}"),
        },
        _ => format!("error unknown command {line:?}"),
    }
}

/// Sends `command` to a running server, if one listens for `data_dir`; `None` when no
/// server runs.
pub fn send(data_dir: &Path, command: &str) -> Option<Result<String, Fail>> {
    let mut s = UnixStream::connect(socket_path(data_dir)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(600)));
    if let Err(e) = s.write_all(format!("{command}\n").as_bytes()) {
        return Some(Err(Fail(format!("control socket: {e}"))));
    }
    let mut line = String::new();
    if let Err(e) = BufReader::new(&s).read_line(&mut line) {
        return Some(Err(Fail(format!("control socket: {e}"))));
    }
    let line = line.trim_end();
    Some(match line.strip_prefix("ok ") {
        Some(rest) => Ok(rest.to_string()),
        None => Err(Fail(
            line.strip_prefix("error ").unwrap_or(line).to_string(),
        )),
    })
}
