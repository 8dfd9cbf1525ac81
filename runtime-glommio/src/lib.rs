//! Drives rmox's sans-IO server sessions on glommio (io_uring, Linux): one `LocalExecutor`
//! per worker thread, sessions never leave the executor that accepted them. Blocking work
//! (storage) runs on glommio's blocking thread pool. The session loop itself is
//! [`rmox_driver::serve`], shared with the other runtimes.
//!
//! # Listening sockets
//!
//! glommio accepts through its own `glommio::net::TcpListener`, which can only be made
//! safely by binding, and binds with `SO_REUSEPORT`. So each worker binds its own socket
//! on the address of every [`ListenerSpec`] (the kernel spreads connections over them),
//! and `run` retires the std listener handed in: connections already queued on it are
//! accepted and served by the workers, then it is closed.
//!
//! * With `SO_REUSEPORT` set on the std listener (recommended), it is retired after the
//!   workers listen: the port is never unbound. Only a connection completing in the
//!   instant between the last drain and the close is reset.
//! * Without it, it is closed just before the workers bind (the port could not be bound
//!   again while it or connections accepted from it are open): connections queued on it
//!   are reset, and for that instant the port is unbound and attempts are refused.
//!
//! glommio binds without `IPV6_V6ONLY`, so an IPv6 wildcard address is dual-stack (with
//! the default `net.ipv6.bindv6only = 0`) whatever the std listener had.

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::{mpsc, Arc};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement, PoolPlacement};
use rmox_core::server::ServerConfig;
use rmox_driver::{Answerer, Runtime, Shutdown};

/// One listening address and the session config for its connections.
pub struct ListenerSpec {
    /// Bound, non-blocking listener (preferably with `SO_REUSEPORT`; see the crate docs).
    pub listener: StdListener,
    /// Session settings.
    pub config: Arc<ServerConfig>,
}

/// Memory glommio registers with io_uring for file I/O per executor; we do no file I/O
/// through glommio, and a small value keeps clear of low `RLIMIT_MEMLOCK` limits.
const IO_MEMORY: usize = 256 << 10;

/// Blocking-pool threads per executor (glommio's default is one): storage calls wait on
/// fsync there, and sessions of one executor should not queue behind each other's.
const BLOCKING_THREADS: usize = 16;

/// How long [`io_uring_available`] waits for its probe executor.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct GlommioRt;

impl Runtime for GlommioRt {
    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(glommio::timer::sleep(
            at.saturating_duration_since(Instant::now()),
        ))
    }

    fn unblock<T: Send + 'static>(
        &self,
        f: Box<dyn FnOnce() -> T + Send + 'static>,
    ) -> Pin<Box<dyn Future<Output = T>>> {
        Box::pin(glommio::executor().spawn_blocking(f))
    }
}

fn builder(name: &str, blocking_threads: usize) -> LocalExecutorBuilder {
    LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .io_memory(IO_MEMORY)
        .blocking_thread_pool_placement(PoolPlacement::Unbound(blocking_threads))
}

fn make_executor(name: &str) -> std::io::Result<LocalExecutor> {
    builder(name, BLOCKING_THREADS)
        .make()
        .map_err(std::io::Error::from)
}

/// Whether glommio can run here: starts a small executor on its own thread and makes one
/// loopback TCP connection through io_uring. `Err` says why not (no io_uring in the
/// kernel or sandbox, `RLIMIT_MEMLOCK` too low, ...). Never panics; gives up after a few
/// seconds (the probe thread is then left behind).
pub fn io_uring_available() -> Result<(), String> {
    let (tx, rx) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("rmox-glommio-probe".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(probe).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Err(format!("glommio panicked: {msg}"))
            });
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start probe thread: {e}"));
    }
    match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => Err("glommio probe timed out".into()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("glommio probe thread died".into()),
    }
}

fn probe() -> Result<(), String> {
    let ex = builder("rmox-probe", 1)
        .make()
        .map_err(|e| format!("cannot start glommio executor: {e}"))?;
    ex.run(async {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
        let addr = l.local_addr().map_err(|e| format!("local_addr: {e}"))?;
        let connect = async { TcpStream::connect(addr).await.map(|_| ()) };
        let accept = async { l.accept().await.map(|_| ()) };
        let (c, a) = futures_lite::future::zip(connect, accept).await;
        c.map_err(|e| format!("connect: {e}"))?;
        a.map_err(|e| format!("accept: {e}"))?;
        glommio::timer::sleep(Duration::from_millis(1)).await;
        Ok(())
    })
}

/// Serves the listeners on `threads` worker threads until `shutdown` triggers and the open
/// sessions have ended.
pub fn run(
    listeners: Vec<ListenerSpec>,
    answerer: Arc<dyn Answerer>,
    threads: usize,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<()> {
    let threads = threads.max(1);
    let mut addrs: Vec<(SocketAddr, Arc<ServerConfig>)> = Vec::new();
    let mut old: Vec<(StdListener, bool)> = Vec::new();
    for spec in listeners {
        addrs.push((spec.listener.local_addr()?, spec.config));
        spec.listener.set_nonblocking(true)?;
        let reuse = socket2::SockRef::from(&spec.listener)
            .reuse_port()
            .unwrap_or(false);
        old.push((spec.listener, reuse));
    }

    let startup = Arc::new(Startup::default());
    let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
    let mut handles = Vec::new();
    let mut first_err = None;
    for i in 0..threads {
        let addrs = addrs.clone();
        let answerer = Arc::clone(&answerer);
        let shutdown = Arc::clone(&shutdown);
        let startup = Arc::clone(&startup);
        let ready = ready_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("rmox-glommio-{i}"))
            .spawn(move || worker(i, addrs, answerer, shutdown, startup, ready));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                first_err = Some(e);
                break;
            }
        }
    }
    drop(ready_tx);

    // Waits for one report from every worker; false when one failed. Workers only exit
    // before `start` when they fail, so one that exited without reporting (a panic in
    // glommio) ends the wait too; its join below tells why.
    let gather = |first_err: &mut Option<std::io::Error>| {
        let mut got = 0;
        while got < handles.len() && first_err.is_none() {
            match ready_rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(())) => got += 1,
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if handles.iter().any(|h| h.is_finished()) {
                        first_err.get_or_insert(std::io::Error::other(
                            "glommio worker exited during start-up",
                        ));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    first_err.get_or_insert(std::io::Error::other("glommio workers exited"));
                }
            }
        }
        first_err.is_none()
    };

    // Phase 1: executors are up. Listeners without SO_REUSEPORT must be closed before
    // the workers can bind their address (connections queued on them are reset: serving
    // them would keep the port in use).
    let mut drained: Vec<(usize, std::net::TcpStream)> = Vec::new();
    if gather(&mut first_err) {
        let mut keep = Vec::new();
        for (li, (l, reuse)) in old.into_iter().enumerate() {
            if reuse {
                keep.push((li, l));
            } else {
                // rmox binds without SO_REUSEPORT so that a second server on the address
                // fails; the workers then bind their own sockets (SO_REUSEPORT among
                // themselves only).
                tracing::debug!(
                    addr = %addrs[li].0,
                    "listener without SO_REUSEPORT: closing and rebinding it for glommio"
                );
                drop(l);
            }
        }
        startup.bind.trigger();
        // Phase 2: workers listen; the old sockets can go once what the kernel queued on
        // them is accepted, and those connections are served by the workers.
        if gather(&mut first_err) {
            for (li, l) in keep {
                drain(li, &l, &mut drained);
            }
            for (n, (li, stream)) in drained.into_iter().enumerate() {
                startup.give(n % threads, li, stream);
            }
        }
    }
    if first_err.is_some() {
        startup.abort.trigger();
    }
    startup.bind.trigger();
    startup.start.trigger();
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Accepts what the kernel queued on an old listener before it is closed.
fn drain(li: usize, l: &StdListener, out: &mut Vec<(usize, std::net::TcpStream)>) {
    loop {
        match l.accept() {
            Ok((s, _)) => out.push((li, s)),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Start-up handshake between `run` and its workers (see `run`).
#[derive(Default)]
struct Startup {
    /// Workers may bind their listeners.
    bind: Shutdown,
    /// Workers may serve.
    start: Shutdown,
    /// Start-up failed: workers return at once.
    abort: Shutdown,
    /// Connections accepted from the old listeners, per worker: (listener index, stream).
    handed: std::sync::Mutex<Vec<(usize, usize, std::net::TcpStream)>>,
}

impl Startup {
    fn give(&self, worker: usize, li: usize, stream: std::net::TcpStream) {
        self.handed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((worker, li, stream));
    }

    fn take(&self, worker: usize) -> Vec<(usize, std::net::TcpStream)> {
        let mut all = self.handed.lock().unwrap_or_else(|e| e.into_inner());
        let (mine, rest) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|(w, _, _)| *w == worker);
        *all = rest;
        mine.into_iter().map(|(_, li, s)| (li, s)).collect()
    }
}

fn worker(
    i: usize,
    addrs: Vec<(SocketAddr, Arc<ServerConfig>)>,
    answerer: Arc<dyn Answerer>,
    shutdown: Arc<Shutdown>,
    startup: Arc<Startup>,
    ready: mpsc::Sender<std::io::Result<()>>,
) -> std::io::Result<()> {
    let ex = match make_executor(&format!("rmox-glommio-{i}")) {
        Ok(ex) => ex,
        Err(e) => {
            let _ = ready.send(Err(std::io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
    };
    let _ = ready.send(Ok(()));
    ex.run(async move {
        startup.bind.wait().await;
        if startup.abort.is_triggered() {
            return Ok(());
        }
        let bound: std::io::Result<Vec<(TcpListener, Arc<ServerConfig>)>> = addrs
            .into_iter()
            .map(|(addr, config)| Ok((TcpListener::bind(addr)?, config)))
            .collect();
        let listeners = match bound {
            Ok(l) => {
                let _ = ready.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = ready.send(Err(std::io::Error::new(e.kind(), e.to_string())));
                return Err(e);
            }
        };
        startup.start.wait().await;
        if startup.abort.is_triggered() {
            return Ok(());
        }
        let mut handed = startup.take(i);
        let mut tasks = Vec::new();
        for (li, (l, config)) in listeners.into_iter().enumerate() {
            let (first, rest) = handed.into_iter().partition(|(x, _)| *x == li);
            handed = rest;
            let first = first.into_iter().map(|(_, s)| s).collect();
            tasks.push(glommio::spawn_local(accept_loop(
                l,
                first,
                config,
                Arc::clone(&answerer),
                Arc::clone(&shutdown),
            )));
        }
        for t in tasks {
            t.await;
        }
        Ok(())
    })
}

async fn accept_loop(
    l: TcpListener,
    first: Vec<std::net::TcpStream>,
    config: Arc<ServerConfig>,
    answerer: Arc<dyn Answerer>,
    shutdown: Arc<Shutdown>,
) {
    let mut open: Vec<glommio::Task<()>> = Vec::new();
    for s in first {
        let Ok(addr) = s.peer_addr() else { continue };
        let _ = s.set_nodelay(true);
        let stream = TcpStream::from(socket2_04::Socket::from(s));
        open.push(glommio::spawn_local(rmox_driver::connection(
            GlommioRt,
            stream,
            addr,
            Arc::clone(&config),
            Arc::clone(&answerer),
            Arc::clone(&shutdown),
        )));
    }
    loop {
        let accepted = async { Some(l.accept().await) }
            .or(async {
                shutdown.wait().await;
                None
            })
            .await;
        let stream = match accepted {
            None => break,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let addr = match stream.peer_addr() {
            Ok(a) => a,
            // Reset before we looked: nothing to serve.
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        open.retain_mut(|t| !finished(t));
        open.push(glommio::spawn_local(rmox_driver::connection(
            GlommioRt,
            stream,
            addr,
            Arc::clone(&config),
            Arc::clone(&answerer),
            Arc::clone(&shutdown),
        )));
    }
    // Stop accepting at once (the pending io_uring accept holds the socket open until
    // its cancellation is submitted: a short sleep lets the reactor do that), then let
    // open sessions finish their transactions.
    drop(l);
    glommio::timer::sleep(Duration::from_millis(1)).await;
    for h in open {
        h.await;
    }
}

/// Whether a session task has ended (glommio's `Task` has no `is_finished`): one poll
/// with a no-op waker, which does not disturb a later `await`.
fn finished(t: &mut glommio::Task<()>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(t).poll(&mut cx).is_ready()
}
