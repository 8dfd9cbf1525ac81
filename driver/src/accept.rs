//! The accept loop, written once for every runtime: a runtime supplies its listening
//! socket as a [`Listener`] and its [`Net`] value (for timers and local tasks). What a
//! listener serves (SMTP or HTTP) is its [`Service`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, FutureExt};
use rmox_core::server::ServerConfig;

use crate::http::HttpAnswerer;
use crate::outbound::Net;
use crate::{Answerer, Shutdown};

/// What a listening socket serves.
#[derive(Clone)]
pub enum Service {
    /// SMTP sessions with these settings, answered by the runtime's [`Answerer`].
    Smtp(Arc<ServerConfig>),
    /// HTTP (or HTTPS, with the config's TLS) connections; requests go to `answerer`.
    Http {
        /// Session settings.
        config: Arc<rmox_core::http::ServerConfig>,
        /// Answers the requests.
        answerer: Arc<dyn HttpAnswerer>,
    },
}

impl From<Arc<ServerConfig>> for Service {
    fn from(c: Arc<ServerConfig>) -> Service {
        Service::Smtp(c)
    }
}

/// One listening address and what it serves; a runtime's `run` takes a list of them.
pub struct ListenerSpec {
    /// Bound, non-blocking listener.
    pub listener: std::net::TcpListener,
    /// What it serves.
    pub service: Service,
}

impl ListenerSpec {
    /// An SMTP listener.
    pub fn smtp(listener: std::net::TcpListener, config: Arc<ServerConfig>) -> ListenerSpec {
        ListenerSpec {
            listener,
            service: Service::Smtp(config),
        }
    }
}

/// A runtime's listening TCP socket.
pub trait Listener: 'static {
    /// An accepted connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;
    /// The next connection (with Nagle's algorithm off) and its peer's address.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;
}

/// Pause after a failed accept (out of file descriptors, ...), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Accepts connections on `l` and serves each as a local task ([`crate::connection`] for
/// SMTP, [`crate::http::http_connection`] for HTTP)
/// until `shutdown` triggers; then stops accepting at once and waits for the open sessions
/// to finish their transactions.
pub async fn accept_loop<R: Net, L: Listener>(
    rt: R,
    l: L,
    service: Service,
    answerer: Arc<dyn Answerer>,
    shutdown: Arc<Shutdown>,
) {
    let mut open: Vec<Pin<Box<dyn Future<Output = ()>>>> = Vec::new();
    loop {
        let accepted = async { Some(l.accept().await) }
            .or(async {
                shutdown.wait().await;
                None
            })
            .await;
        let (stream, addr) = match accepted {
            None => break,
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                rt.sleep_until(Instant::now() + ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        open.retain_mut(|t| !finished(t));
        let task = match &service {
            Service::Smtp(config) => rt.spawn(crate::connection(
                rt.clone(),
                stream,
                addr,
                Arc::clone(config),
                Arc::clone(&answerer),
                Arc::clone(&shutdown),
            )),
            Service::Http { config, answerer } => rt.spawn(crate::http::http_connection(
                rt.clone(),
                stream,
                addr,
                Arc::clone(config),
                Arc::clone(answerer),
                Arc::clone(&shutdown),
            )),
        };
        open.push(task);
    }
    // Stop accepting at once (a pending io_uring accept holds the socket open until its
    // cancellation is submitted: a short sleep lets the reactor do that), then let open
    // sessions finish their transactions.
    drop(l);
    rt.sleep_until(Instant::now() + Duration::from_millis(1))
        .await;
    for h in open {
        h.await;
    }
}

/// Whether a session task has ended: one poll with a no-op waker, which does not disturb
/// a later `await`.
fn finished(t: &mut Pin<Box<dyn Future<Output = ()>>>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    t.as_mut().poll(&mut cx).is_ready()
}
