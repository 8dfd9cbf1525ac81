//! Drives rmox's sans-IO server sessions on tokio: one current-thread runtime per worker
//! thread, each with a `LocalSet` (sessions are not `Send`), all accepting from the same
//! listening sockets. Blocking work (storage) runs on tokio's blocking pool.

mod udp;
pub use udp::*;

use std::future::Future;
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmox_driver::accept::{accept_loop, Listener, Service};
use rmox_driver::outbound::Net;
use rmox_driver::{Answerer, Background, Runtime, SharedBackground, Shutdown};
use tokio_util::compat::{Compat, TokioAsyncReadCompatExt};

pub use rmox_driver::accept::ListenerSpec;

/// The tokio runtime as the driver sees it (valid inside a `LocalSet` of a tokio runtime).
#[derive(Clone)]
pub struct TokioRt;

impl Runtime for TokioRt {
    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(tokio::time::sleep_until(at.into()))
    }

    fn unblock<T: Send + 'static>(
        &self,
        f: Box<dyn FnOnce() -> T + Send + 'static>,
    ) -> Pin<Box<dyn Future<Output = T>>> {
        Box::pin(async move {
            match tokio::task::spawn_blocking(f).await {
                Ok(v) => v,
                // The blocking task panicked: propagate, as the answerer's bug it is.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        })
    }
}

impl Net for TokioRt {
    type Stream = Compat<tokio::net::TcpStream>;

    fn connect(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Self::Stream>>>> {
        Box::pin(async move {
            let socket = match addr {
                SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            if let Some(ip) = source {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            let stream = tokio::time::timeout(timeout, socket.connect(addr))
                .await
                .map_err(|_| rmox_driver::outbound::connect_timed_out())??;
            let _ = stream.set_nodelay(true);
            Ok(stream.compat())
        })
    }

    fn spawn<F: Future<Output = ()> + 'static>(&self, f: F) -> Pin<Box<dyn Future<Output = ()>>> {
        let h = tokio::task::spawn_local(f);
        Box::pin(async move {
            if let Err(e) = h.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        })
    }
}

/// Runs `f` on a new current-thread tokio runtime (with a `LocalSet`) on this thread until
/// it completes: for one-off work outside `run` (tests, command-line tools).
pub fn block_on<T, Fut: Future<Output = T>>(f: impl FnOnce(TokioRt) -> Fut) -> std::io::Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&rt, f(TokioRt)))
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

/// As [`run`], with `background` started as a local task on one worker (the queue runner);
/// that worker ends once it has ended too.
pub fn run_with_background(
    listeners: Vec<ListenerSpec>,
    answerer: Arc<dyn Answerer>,
    threads: usize,
    shutdown: Arc<Shutdown>,
    background: Option<Background<TokioRt>>,
) -> std::io::Result<()> {
    let shared: Vec<(StdListener, Service)> = listeners
        .into_iter()
        .map(|l| (l.listener, l.service))
        .collect();
    let background: SharedBackground<TokioRt> = Arc::new(std::sync::Mutex::new(background));
    rmox_driver::run_workers("rmox-tokio", &shared, threads, move |mine| {
        worker(
            mine,
            Arc::clone(&answerer),
            Arc::clone(&shutdown),
            Arc::clone(&background),
        )
    })
}

fn worker(
    listeners: Vec<(StdListener, Service)>,
    answerer: Arc<dyn Answerer>,
    shutdown: Arc<Shutdown>,
    background: SharedBackground<TokioRt>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let mut tasks = Vec::new();
        for (l, service) in listeners {
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            let answerer = Arc::clone(&answerer);
            let shutdown = Arc::clone(&shutdown);
            tasks.push(tokio::task::spawn_local(accept_loop(
                TokioRt,
                TokioListener(l),
                service,
                answerer,
                shutdown,
            )));
        }
        if let Some(b) = rmox_driver::take_background(&background) {
            tasks.push(tokio::task::spawn_local(b(TokioRt)));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    })
}

/// tokio's listener for the shared accept loop.
struct TokioListener(tokio::net::TcpListener);

impl Listener for TokioListener {
    type Stream = Compat<tokio::net::TcpStream>;

    async fn accept(&self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        let (s, addr) = self.0.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((s.compat(), addr))
    }
}
