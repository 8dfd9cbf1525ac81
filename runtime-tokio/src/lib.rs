//! Drives rmox's sans-IO server sessions on tokio: one current-thread runtime per worker
//! thread, each with a `LocalSet` (sessions are not `Send`), all accepting from the same
//! listening sockets. Blocking work (storage) runs on tokio's blocking pool.

use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use rmox_core::server::{Peer, ServerConfig, ServerSession};
use rmox_driver::{Answerer, Runtime, Shutdown};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// One listening address and the session config for its connections.
pub struct ListenerSpec {
    /// Bound, non-blocking listener.
    pub listener: StdListener,
    /// Session settings.
    pub config: Arc<ServerConfig>,
}

#[derive(Clone)]
struct TokioRt;

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
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let mine: Vec<(StdListener, Arc<ServerConfig>)> = listeners
            .iter()
            .map(|l| Ok((l.listener.try_clone()?, Arc::clone(&l.config))))
            .collect::<std::io::Result<_>>()?;
        let answerer = Arc::clone(&answerer);
        let shutdown = Arc::clone(&shutdown);
        let h = std::thread::Builder::new()
            .name(format!("rmox-tokio-{i}"))
            .spawn(move || worker(mine, answerer, shutdown))?;
        handles.push(h);
    }
    for h in handles {
        match h.join() {
            Ok(r) => r?,
            Err(e) => std::panic::resume_unwind(e),
        }
    }
    Ok(())
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
        open.push(tokio::task::spawn_local(connection(
            stream,
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

async fn connection(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    config: Arc<ServerConfig>,
    answerer: Arc<dyn Answerer>,
    shutdown: Arc<Shutdown>,
) {
    let cid = rmox_driver::next_cid();
    let peer = Peer { ip: addr.ip(), cid };
    let session = match ServerSession::new(config, peer, rmox_driver::now()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(cid, error = %e, "cannot start session");
            return;
        }
    };
    tracing::info!(cid, remote = %addr, "connection");
    match rmox_driver::serve(TokioRt, stream.compat(), session, answerer, cid, shutdown).await {
        Ok(()) => tracing::info!(cid, "connection closed"),
        Err(e) => tracing::info!(cid, error = %e, "connection ended"),
    }
}
