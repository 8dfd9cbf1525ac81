//! Drives rmox's sans-IO server sessions on glommio (io_uring, Linux): one `LocalExecutor`
//! per worker thread, sessions never leave the executor that accepted them. Blocking work
//! (storage) runs on glommio's blocking thread pool. The session loop itself is
//! [`rmox_driver::serve`], shared with the other runtimes.
//!
//! # Listening sockets
//!
//! Every worker accepts on the very socket handed in (its own duplicate of the file
//! descriptor, turned into a `glommio::net::TcpListener`), as the tokio and smol runtimes
//! do: no second bind, no `SO_REUSEPORT`, so the address is never unbound while the server
//! starts, and another process binding it fails with "address in use". The listener must
//! be non-blocking (glommio's accept toggles `O_NONBLOCK` on the shared file description
//! around a first try; with the flag already set that is a no-op for the other workers).

mod udp;
pub use udp::*;

use std::future::Future;
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement, PoolPlacement};
use rmox_driver::accept::{accept_loop, Listener, Service};
use rmox_driver::outbound::Net;
use rmox_driver::{Answerer, Background, Runtime, SharedBackground, Shutdown};

pub use rmox_driver::accept::ListenerSpec;

/// Memory glommio registers with io_uring for file I/O per executor; we do no file I/O
/// through glommio, and a small value keeps clear of low `RLIMIT_MEMLOCK` limits.
const IO_MEMORY: usize = 256 << 10;

/// Blocking-pool threads per executor (glommio's default is one): storage calls wait on
/// fsync there, and sessions of one executor should not queue behind each other's.
const BLOCKING_THREADS: usize = 16;

/// How long [`io_uring_available`] waits for its probe executor.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The glommio runtime as the driver sees it (valid inside a glommio executor).
#[derive(Clone)]
pub struct GlommioRt;

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

impl Net for GlommioRt {
    type Stream = TcpStream;

    fn connect(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Self::Stream>>>> {
        let timeout = timeout.max(Duration::from_millis(1));
        Box::pin(async move {
            match source {
                None => {
                    let s = TcpStream::connect_timeout(addr, timeout)
                        .await
                        .map_err(std::io::Error::from)?;
                    let _ = s.set_nodelay(true);
                    Ok(s)
                }
                // glommio cannot bind before connecting: a blocking connect from the source
                // address on the blocking pool, then the socket is adopted.
                Some(ip) => {
                    let s = glommio::executor()
                        .spawn_blocking(move || {
                            rmox_driver::outbound::bound_connect(addr, ip, timeout)
                        })
                        .await?;
                    Ok(glommio_stream(s))
                }
            }
        })
    }

    fn spawn<F: Future<Output = ()> + 'static>(&self, f: F) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(glommio::spawn_local(f))
    }
}

/// A connected socket as this executor's glommio stream.
#[allow(unsafe_code)]
fn glommio_stream(s: std::net::TcpStream) -> TcpStream {
    use std::os::unix::io::{FromRawFd, IntoRawFd};
    let fd = s.into_raw_fd();
    // SAFETY: `fd` is an open, connected TCP socket whose ownership `into_raw_fd` just gave
    // up (nothing else closes it); glommio's `from_raw_fd` takes that ownership and expects
    // exactly such a socket. Called inside an executor, whose reactor it is attached to.
    unsafe { TcpStream::from_raw_fd(fd) }
}

/// Runs `f` on a new glommio executor on this thread until it completes: for one-off work
/// outside `run` (tests, command-line tools).
pub fn block_on<T, Fut: Future<Output = T>>(
    f: impl FnOnce(GlommioRt) -> Fut,
) -> std::io::Result<T> {
    let ex = make_executor("rmox-glommio-once")?;
    Ok(ex.run(f(GlommioRt)))
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
    run_with_background(listeners, answerer, threads, shutdown, None)
}

/// As [`run`], with `background` started as a local task on worker 0 (the queue runner);
/// that worker ends once it has ended too.
pub fn run_with_background(
    listeners: Vec<ListenerSpec>,
    answerer: Arc<dyn Answerer>,
    threads: usize,
    shutdown: Arc<Shutdown>,
    background: Option<Background<GlommioRt>>,
) -> std::io::Result<()> {
    let background: SharedBackground<GlommioRt> = Arc::new(std::sync::Mutex::new(background));
    let threads = threads.max(1);
    for spec in &listeners {
        spec.listener.set_nonblocking(true)?;
    }
    // Each worker's own duplicates of the listening sockets.
    let mut per_worker: Vec<Vec<(StdListener, Service)>> = Vec::new();
    for _ in 0..threads {
        per_worker.push(
            listeners
                .iter()
                .map(|l| Ok((l.listener.try_clone()?, l.service.clone())))
                .collect::<std::io::Result<_>>()?,
        );
    }
    drop(listeners);

    let abort = Arc::new(Shutdown::default());
    let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
    let mut handles = Vec::new();
    let mut first_err = None;
    for (i, mine) in per_worker.into_iter().enumerate() {
        let answerer = Arc::clone(&answerer);
        let shutdown = Arc::clone(&shutdown);
        let abort = Arc::clone(&abort);
        let ready = ready_tx.clone();
        let background = Arc::clone(&background);
        let spawned = std::thread::Builder::new()
            .name(format!("rmox-glommio-{i}"))
            .spawn(move || worker(i, mine, answerer, shutdown, abort, ready, background));
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => {
                first_err = Some(e);
                break;
            }
        }
    }
    drop(ready_tx);
    // One report from every worker (its executor runs and accepts); a worker that exited
    // without reporting (a panic in glommio) ends the wait too; its join below tells why.
    let mut got = 0;
    while got < handles.len() && first_err.is_none() {
        match ready_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(())) => got += 1,
            Ok(Err(e)) => first_err = Some(e),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if handles.iter().any(|h| h.is_finished()) {
                    first_err = Some(std::io::Error::other(
                        "glommio worker exited during start-up",
                    ));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                first_err = Some(std::io::Error::other("glommio workers exited"));
            }
        }
    }
    if first_err.is_some() {
        abort.trigger();
        shutdown.trigger();
    }
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

/// The shared listening socket as this executor's glommio listener.
#[allow(unsafe_code)]
fn glommio_listener(l: StdListener) -> TcpListener {
    use std::os::unix::io::{FromRawFd, IntoRawFd};
    let fd = l.into_raw_fd();
    // SAFETY: `fd` is an open, bound, listening TCP socket whose ownership `into_raw_fd`
    // just gave up (nothing else closes it); glommio's `from_raw_fd` takes that ownership
    // and expects exactly such a socket. Called inside the worker's executor, whose reactor
    // glommio attaches it to.
    unsafe { TcpListener::from_raw_fd(fd) }
}

fn worker(
    i: usize,
    mine: Vec<(StdListener, Service)>,
    answerer: Arc<dyn Answerer>,
    shutdown: Arc<Shutdown>,
    abort: Arc<Shutdown>,
    ready: mpsc::Sender<std::io::Result<()>>,
    background: SharedBackground<GlommioRt>,
) -> std::io::Result<()> {
    let ex = match make_executor(&format!("rmox-glommio-{i}")) {
        Ok(ex) => ex,
        Err(e) => {
            let _ = ready.send(Err(std::io::Error::new(e.kind(), e.to_string())));
            return Err(e);
        }
    };
    ex.run(async move {
        let listeners: Vec<(TcpListener, Service)> = mine
            .into_iter()
            .map(|(l, service)| (glommio_listener(l), service))
            .collect();
        let _ = ready.send(Ok(()));
        if abort.is_triggered() {
            return Ok(());
        }
        let mut tasks = Vec::new();
        for (l, service) in listeners {
            tasks.push(glommio::spawn_local(accept_loop(
                GlommioRt,
                GlommioListener(l),
                service,
                Arc::clone(&answerer),
                Arc::clone(&shutdown),
            )));
        }
        if let Some(b) = rmox_driver::take_background(&background) {
            tasks.push(glommio::spawn_local(b(GlommioRt)));
        }
        for t in tasks {
            t.await;
        }
        Ok(())
    })
}

/// glommio's listener for the shared accept loop.
struct GlommioListener(TcpListener);

impl Listener for GlommioListener {
    type Stream = TcpStream;

    async fn accept(&self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        loop {
            let s = self.0.accept().await.map_err(std::io::Error::from)?;
            match s.peer_addr() {
                Ok(addr) => {
                    let _ = s.set_nodelay(true);
                    return Ok((s, addr));
                }
                // Reset before we looked: nothing to serve.
                Err(_) => continue,
            }
        }
    }
}
