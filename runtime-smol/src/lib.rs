//! Drives rmox's sans-IO server sessions on smol's building blocks: one thread per worker,
//! each running a single-threaded `async-executor` `LocalExecutor` (sessions are not
//! `Send`) over the `async-io` reactor, all accepting from the same listening sockets.
//! Blocking work (storage) runs on the `blocking` thread pool. The session loop itself is
//! [`rmox_driver::serve`], shared with the other runtimes.

mod udp;
pub use udp::*;

use std::future::Future;
use std::net::{IpAddr, SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::LocalExecutor;
use async_net::TcpListener;
use futures_lite::FutureExt;
use rmox_driver::accept::{accept_loop, Listener, Service};
use rmox_driver::outbound::Net;
use rmox_driver::{Answerer, Background, Runtime, SharedBackground, Shutdown};

pub use rmox_driver::accept::ListenerSpec;

/// The smol runtime as the driver sees it: the thread's executor (for local tasks) over
/// the `async-io` reactor.
#[derive(Clone)]
pub struct SmolRt {
    ex: Rc<LocalExecutor<'static>>,
}

impl SmolRt {
    /// The runtime over `ex`: tasks spawned through it run while `ex` is run (by
    /// [`block_on`], a worker of [`run`], or the caller's own `async_io::block_on(ex.run(..))`).
    pub fn new(ex: Rc<LocalExecutor<'static>>) -> SmolRt {
        SmolRt { ex }
    }
}

impl Runtime for SmolRt {
    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(async move {
            async_io::Timer::at(at).await;
        })
    }

    fn unblock<T: Send + 'static>(
        &self,
        f: Box<dyn FnOnce() -> T + Send + 'static>,
    ) -> Pin<Box<dyn Future<Output = T>>> {
        // A panic in `f` propagates to the awaiting session, as the answerer's bug it is.
        Box::pin(blocking::unblock(f))
    }
}

impl Net for SmolRt {
    type Stream = async_net::TcpStream;

    fn connect(
        &self,
        addr: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Self::Stream>>>> {
        Box::pin(async move {
            let connect = async move {
                match source {
                    None => {
                        let s = async_net::TcpStream::connect(addr).await?;
                        let _ = s.set_nodelay(true);
                        Ok(s)
                    }
                    // async-io cannot bind before connecting: a blocking connect from the
                    // source address on the blocking pool, then the socket is adopted.
                    Some(ip) => {
                        let s = blocking::unblock(move || {
                            rmox_driver::outbound::bound_connect(addr, ip, timeout)
                        })
                        .await?;
                        Ok(async_net::TcpStream::from(async_io::Async::new(s)?))
                    }
                }
            };
            connect
                .or(async {
                    async_io::Timer::after(timeout).await;
                    Err(rmox_driver::outbound::connect_timed_out())
                })
                .await
        })
    }

    fn spawn<F: Future<Output = ()> + 'static>(&self, f: F) -> Pin<Box<dyn Future<Output = ()>>> {
        Box::pin(self.ex.spawn(f))
    }
}

/// Runs `f` on a new local executor on this thread until it completes: for one-off work
/// outside `run` (tests, command-line tools).
pub fn block_on<T, Fut: Future<Output = T>>(f: impl FnOnce(SmolRt) -> Fut) -> std::io::Result<T> {
    let ex = Rc::new(LocalExecutor::new());
    let rt = SmolRt { ex: Rc::clone(&ex) };
    Ok(async_io::block_on(ex.run(f(rt))))
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
    background: Option<Background<SmolRt>>,
) -> std::io::Result<()> {
    let shared: Vec<(StdListener, Service)> = listeners
        .into_iter()
        .map(|l| (l.listener, l.service))
        .collect();
    let background: SharedBackground<SmolRt> = Arc::new(std::sync::Mutex::new(background));
    rmox_driver::run_workers("rmox-smol", &shared, threads, move |mine| {
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
    background: SharedBackground<SmolRt>,
) -> std::io::Result<()> {
    let ex = Rc::new(LocalExecutor::new());
    async_io::block_on(ex.run(async {
        let mut tasks = Vec::new();
        for (l, service) in listeners {
            // `Async::new` makes the socket non-blocking and registers it with the reactor.
            let l = TcpListener::from(async_io::Async::new(l)?);
            tasks.push(ex.spawn(accept_loop(
                SmolRt { ex: Rc::clone(&ex) },
                SmolListener(l),
                service,
                Arc::clone(&answerer),
                Arc::clone(&shutdown),
            )));
        }
        if let Some(b) = rmox_driver::take_background(&background) {
            tasks.push(ex.spawn(b(SmolRt { ex: Rc::clone(&ex) })));
        }
        for t in tasks {
            t.await;
        }
        Ok(())
    }))
}

/// smol's listener for the shared accept loop.
struct SmolListener(TcpListener);

impl Listener for SmolListener {
    type Stream = async_net::TcpStream;

    async fn accept(&self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        let (s, addr) = self.0.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((s, addr))
    }
}
