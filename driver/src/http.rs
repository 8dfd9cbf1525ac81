//! The HTTP server loop, written once for every runtime: drives a core
//! [`HttpServerSession`] over any byte stream, as [`crate::serve`] drives the SMTP session.
//! Requests go to an [`HttpAnswerer`]; answers that need blocking work run on the runtime's
//! blocking pool.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};
use rmox_core::http::server::{Completion, Effect, Event, Input, Output};
use rmox_core::http::{HttpServerSession, RequestHead, Response, ServerConfig};

use crate::{now, Runtime, Shutdown};

/// Answers HTTP requests (routing by host and path). `answer` runs on the blocking pool.
pub trait HttpAnswerer: Send + Sync + 'static {
    /// The response to a request from `remote`.
    fn answer(&self, remote: SocketAddr, head: RequestHead, body: Vec<u8>) -> Response;
    /// The response at once when it needs no blocking work (configuration only), saving
    /// the hand-off to the blocking pool; `None` otherwise. Called on the runtime's own
    /// thread: it must never block.
    fn answer_now(&self, remote: SocketAddr, head: &RequestHead, body: &[u8]) -> Option<Response> {
        let _ = (remote, head, body);
        None
    }
}

/// Size of one socket read.
const READ_CHUNK: usize = 16 * 1024;

/// Unconsumed input kept before the connection is dropped (the session stops consuming
/// while its pipeline is full).
const MAX_UNCONSUMED: usize = 1 << 20;

/// A response being computed on the blocking pool.
type Answering = Pin<Box<dyn std::future::Future<Output = Response>>>;

enum Woke {
    Answer(Response),
    Read(std::io::Result<usize>),
    Timer,
    Stop,
}

/// Drives `session` over `stream` until it closes, the peer goes away, or shutdown is
/// triggered while no request is waiting for its answer. Requests the session refuses
/// (400, 408, 413, 431, 501, 503) and TLS failures are logged at info; the answerer logs
/// the requests it answers.
pub async fn serve_http<S, R>(
    rt: R,
    mut stream: S,
    mut session: HttpServerSession,
    answerer: Arc<dyn HttpAnswerer>,
    remote: SocketAddr,
    cid: u64,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Runtime,
{
    let mut inbuf: Vec<u8> = Vec::new();
    let mut tx: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut eof = false;
    let mut closed_sent = false;
    let mut pending: std::collections::VecDeque<(rmox_core::Token, Answering)> =
        std::collections::VecDeque::new();
    loop {
        let deadline = loop {
            match session.poll(now(), &mut tx) {
                Output::Transmit => {
                    stream.write_all(&tx).await?;
                    tx.clear();
                }
                Output::Effect(token, Effect::Request { head, body }) => {
                    match answerer.answer_now(remote, &head, &body) {
                        Some(r) => {
                            session.handle(now(), Input::Completed(token, Completion::Response(r)));
                            offer(&mut session, &mut inbuf);
                        }
                        None => {
                            let a = Arc::clone(&answerer);
                            pending.push_back((
                                token,
                                rt.unblock(Box::new(move || a.answer(remote, head, body))),
                            ));
                        }
                    }
                }
                Output::Event(ev) => log_event(cid, remote, &ev),
                Output::Idle { deadline, .. } => break deadline,
                Output::Close => {
                    let _ = stream.flush().await;
                    let _ = stream.close().await;
                    return Ok(());
                }
            }
        };
        stream.flush().await?;
        // Requests still buffered here (a full pipeline) are offered before the session
        // learns that no more input comes, so that they are answered too.
        if eof && !closed_sent && (inbuf.is_empty() || pending.is_empty()) {
            closed_sent = true;
            session.handle(now(), Input::Closed);
            continue;
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                session.handle(now(), Input::Timeout);
                offer(&mut session, &mut inbuf);
                continue;
            }
        }
        if shutdown.is_triggered() && pending.is_empty() {
            // Requests answered: an idle keep-alive connection does not delay shutdown.
            let _ = stream.close().await;
            return Ok(());
        }
        if eof && pending.is_empty() && deadline.is_none() {
            return Ok(());
        }
        let read = async {
            if eof || inbuf.len() > MAX_UNCONSUMED {
                futures_lite::future::pending::<()>().await;
            }
            Woke::Read(stream.read(&mut chunk).await)
        };
        let answer = async {
            match pending.front_mut() {
                Some((_, f)) => Woke::Answer(f.await),
                None => futures_lite::future::pending::<Woke>().await,
            }
        };
        let timer = async {
            match deadline {
                Some(d) => rt.sleep_until(d).await,
                None => futures_lite::future::pending::<()>().await,
            }
            Woke::Timer
        };
        let stop = async {
            shutdown.wait().await;
            Woke::Stop
        };
        match answer.or(read).or(timer).or(stop).await {
            Woke::Answer(r) => {
                if let Some((token, _)) = pending.pop_front() {
                    session.handle(now(), Input::Completed(token, Completion::Response(r)));
                    offer(&mut session, &mut inbuf);
                }
            }
            Woke::Read(Ok(0)) => eof = true,
            Woke::Read(Ok(n)) => {
                inbuf.extend_from_slice(&chunk[..n]);
                offer(&mut session, &mut inbuf);
            }
            Woke::Read(Err(e)) => return Err(e),
            Woke::Timer => {
                session.handle(now(), Input::Timeout);
                offer(&mut session, &mut inbuf);
            }
            Woke::Stop => {}
        }
    }
}

/// Offers buffered input to the session and drops what it consumed.
fn offer(session: &mut HttpServerSession, inbuf: &mut Vec<u8>) {
    if inbuf.is_empty() {
        return;
    }
    let n = session.handle(now(), Input::Received(inbuf));
    inbuf.drain(..n.min(inbuf.len()));
}

fn log_event(cid: u64, remote: SocketAddr, ev: &Event) {
    match ev {
        Event::Responded {
            method,
            target,
            status,
            body_len,
        } => tracing::debug!(cid, %remote, method, target, status, body_len, "http response"),
        Event::Refused { status, reason } => {
            tracing::info!(cid, %remote, status, reason, "http request refused")
        }
        Event::TlsFailed(e) => tracing::info!(cid, %remote, error = %e, "http tls failed"),
        other => tracing::debug!(cid, %remote, event = ?other, "http"),
    }
}

/// One accepted HTTP connection, start to end. The accept loop calls this for HTTP
/// listeners.
pub async fn http_connection<S, R>(
    rt: R,
    stream: S,
    remote: SocketAddr,
    config: Arc<ServerConfig>,
    answerer: Arc<dyn HttpAnswerer>,
    shutdown: Arc<Shutdown>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Runtime,
{
    let cid = crate::next_cid();
    let session = match HttpServerSession::new(config, now()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(cid, error = %e, "cannot start http session");
            return;
        }
    };
    tracing::debug!(cid, %remote, "http connection");
    if let Err(e) = serve_http(rt, stream, session, answerer, remote, cid, shutdown).await {
        tracing::debug!(cid, error = %e, "http connection ended");
    }
}
