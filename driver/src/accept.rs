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
    /// No protocol and no machine: a greeting, then a fixed `250` reply to every line
    /// until `QUIT` or the peer closes ([`floor_connection`]). It measures what the
    /// runtime's own accept, reads, writes and wake-ups cost under the same accept loop,
    /// executors and threads as [`Service::Smtp`]: the runtime floor of `benches/compare.sh`
    /// (`rmox-floor`). Not for serving mail.
    Floor,
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
            Service::Floor => rt.spawn(floor_connection(stream)),
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

/// The longest line [`floor_connection`] takes; a longer one ends the connection.
pub const FLOOR_LINE_MAX: usize = crate::machine::READ_CHUNK;

/// [`Service::Floor`]'s connection: `220` on connecting, then for each line read a `250`
/// (`221` and the end for `QUIT`), the replies to one read written together, as a
/// pipelining SMTP server does. Reads go into one buffer of [`FLOOR_LINE_MAX`] bytes.
/// Ends when the peer closes, on an I/O error, on `QUIT` or on a line longer than the
/// buffer; it has no timers, so an idle peer keeps it open (it is for benchmarks only).
pub async fn floor_connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    if stream.write_all(b"220 floor\r\n").await.is_err() {
        return;
    }
    let mut buf = vec![0u8; FLOOR_LINE_MAX];
    let mut have = 0;
    let mut replies = Vec::new();
    loop {
        let n = match stream.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        have += n;
        let (used, quit) = floor_replies(&buf[..have], &mut replies);
        buf.copy_within(used..have, 0);
        have -= used;
        if !replies.is_empty() {
            if stream.write_all(&replies).await.is_err() {
                return;
            }
            replies.clear();
        }
        if quit || have == buf.len() {
            let _ = stream.close().await;
            return;
        }
    }
}

/// The replies to the complete lines at the start of `input`, appended to `out`: how many
/// bytes those lines took, and whether the last was `QUIT` (no line after it is answered).
fn floor_replies(input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
    let mut used = 0;
    while let Some(i) = input[used..].iter().position(|&b| b == b'\n') {
        let line = &input[used..used + i];
        used += i + 1;
        if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"QUIT") {
            out.extend_from_slice(b"221 floor\r\n");
            return (used, true);
        }
        out.extend_from_slice(b"250 floor\r\n");
    }
    (used, false)
}

/// Whether a session task has ended: one poll with a no-op waker, which does not disturb
/// a later `await`.
fn finished(t: &mut Pin<Box<dyn Future<Output = ()>>>) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    t.as_mut().poll(&mut cx).is_ready()
}

#[cfg(test)]
mod tests {
    use super::floor_replies;

    #[test]
    fn floor_answers_each_complete_line_and_keeps_a_partial_one() {
        let mut out = Vec::new();
        assert_eq!(
            floor_replies(b"EHLO x\r\nNOOP\r\nNO", &mut out),
            (14, false)
        );
        assert_eq!(out, b"250 floor\r\n250 floor\r\n");
        out.clear();
        assert_eq!(floor_replies(b"NO", &mut out), (0, false));
        assert!(out.is_empty());
    }

    #[test]
    fn floor_ends_at_quit_in_any_case_and_answers_nothing_after_it() {
        let mut out = Vec::new();
        assert_eq!(
            floor_replies(b"NOOP\r\nquit\r\nNOOP\r\n", &mut out),
            (12, true)
        );
        assert_eq!(out, b"250 floor\r\n221 floor\r\n");
    }
}
