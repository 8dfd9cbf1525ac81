//! Drives rmox's sans-IO server sessions on tokio: one current-thread runtime per worker
//! thread, each with a `LocalSet` (sessions are not `Send`), all accepting from the same
//! listening sockets. Blocking work (storage) runs on tokio's blocking pool.

mod udp;
pub use udp::*;

use std::future::Future;
use std::net::TcpListener as StdListener;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use rmox_core::server::ServerConfig;
use rmox_driver::{Answerer, Runtime, Shutdown};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// One listening address and the session config for its connections.
pub struct ListenerSpec {
    /// Bound, non-blocking listener.
    pub listener: StdListener,
    /// Session settings.
    pub config: Arc<ServerConfig>,
}

/// This runtime for the shared driver loops ([`rmox_driver::serve`], [`rmox_driver::dns`]).
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

/// Serves the listeners on `threads` worker threads until `shutdown` triggers and the open
/// sessions have ended.
pub fn run(
    listeners: Vec<ListenerSpec>,
    answerer: Arc<dyn Answerer>,
    threads: usize,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<()> {
    let shared: Vec<(StdListener, Arc<ServerConfig>)> = listeners
        .into_iter()
        .map(|l| (l.listener, l.config))
        .collect();
    rmox_driver::run_workers("rmox-tokio", &shared, threads, move |mine| {
        worker(mine, Arc::clone(&answerer), Arc::clone(&shutdown))
    })
}

fn worker(
    listeners: Vec<(StdListener, Arc<ServerConfig>)>,
    answerer: Arc<dyn Answerer>,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let mut tasks = Vec::new();
        for (l, config) in listeners {
            l.set_nonblocking(true)?;
            let l = tokio::net::TcpListener::from_std(l)?;
            let answerer = Arc::clone(&answerer);
            let shutdown = Arc::clone(&shutdown);
            tasks.push(tokio::task::spawn_local(accept_loop(
                l, config, answerer, shutdown,
            )));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    })
}

async fn accept_loop(
    l: tokio::net::TcpListener,
    config: Arc<ServerConfig>,
    answerer: Arc<dyn Answerer>,
    shutdown: Arc<Shutdown>,
) {
    let mut open = Vec::new();
    loop {
        let accepted = tokio::select! {
            a = l.accept() => a,
            _ = shutdown.wait() => break,
        };
        let (stream, addr) = match accepted {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        open.retain(|h: &tokio::task::JoinHandle<()>| !h.is_finished());
        open.push(tokio::task::spawn_local(rmox_driver::connection(
            TokioRt,
            stream.compat(),
            addr,
            Arc::clone(&config),
            Arc::clone(&answerer),
            Arc::clone(&shutdown),
        )));
    }
    // Let open sessions finish their transactions.
    for h in open {
        let _ = h.await;
    }
}
