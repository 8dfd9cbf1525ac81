//! The HTTP server loop, written once for every runtime: drives a core
//! [`HttpServerSession`] over any byte stream through [`crate::machine::drive`], as
//! [`crate::serve`] drives the SMTP session.
//! Requests go to an [`HttpAnswerer`]; answers that need blocking work run on the runtime's
//! blocking pool.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_lite::{AsyncRead, AsyncWrite};
use rmox_core::http::server::{Completion, Effect, Event, Input, Output};
use rmox_core::http::{HttpServerSession, RequestHead, Response, ServerConfig};
use rmox_core::{Now, Token};

use crate::machine::{
    drive, Answer, Answers, ConnId, Connecting, End, Eof, In, Machine, Overflow, Step,
};
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

/// Unconsumed input kept before reads stop (the session stops consuming while its
/// pipeline is full).
const MAX_UNCONSUMED: usize = 1 << 20;

/// The connection of an HTTP server session (its only one).
const CONN: ConnId = ConnId(0);

/// Drives `session` over `stream` until it closes, the peer goes away, or shutdown is
/// triggered while no request is waiting for its answer ([`crate::machine::drive`] over
/// [`Http`]). Requests the session refuses (400, 408, 413, 431, 501, 503) and TLS failures
/// are logged at info; the answerer logs the requests it answers.
pub async fn serve_http<S, R>(
    rt: R,
    stream: S,
    session: HttpServerSession,
    answerer: Arc<dyn HttpAnswerer>,
    remote: SocketAddr,
    cid: u64,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Runtime,
{
    let answers = HttpAnswers {
        rt: rt.clone(),
        answerer,
        remote,
        cid,
    };
    let machine = Http {
        session,
        closed: false,
        shutdown: false,
        outstanding: 0,
    };
    drive(
        &rt,
        machine,
        &answers,
        Some((CONN, stream)),
        Some(&shutdown),
    )
    .await
}

/// The HTTP server session as a [`Machine`]: one connection, reads held while 1 MiB waits
/// unconsumed, pipelined requests answered before the peer's end of stream is given; after
/// shutdown the connection closes once no request waits for its answer.
struct Http {
    session: HttpServerSession,
    /// The connection is closed (or being closed).
    closed: bool,
    /// Shutdown was triggered.
    shutdown: bool,
    /// Requests sent to the answerer and not answered yet.
    outstanding: usize,
}

impl Machine for Http {
    type Token = Token;
    type Effect = Effect;
    type Completion = Completion;
    type Event = Event;
    type Dial = std::convert::Infallible;
    type Outcome = ();
    type Error = std::io::Error;

    const MAX_UNCONSUMED: usize = MAX_UNCONSUMED;
    const OVERFLOW: Overflow = Overflow::Hold;
    const EOF: Eof = Eof::HalfOpenAfterInput;

    fn poll(&mut self, now: Now, tx: &mut Vec<u8>) -> Step<Self> {
        if self.closed {
            return Step::Done;
        }
        match self.session.poll(now, tx) {
            Output::Transmit => Step::Transmit(CONN),
            Output::Effect(token, effect) => {
                self.outstanding += 1;
                Step::Effect(token, effect)
            }
            Output::Event(ev) => Step::Event(ev),
            Output::Idle { .. } if self.shutdown && self.outstanding == 0 => {
                // Requests answered: an idle keep-alive connection does not delay shutdown.
                self.closed = true;
                Step::Close(CONN)
            }
            Output::Idle { deadline, .. } => Step::Idle(deadline),
            Output::Close => {
                self.closed = true;
                Step::Close(CONN)
            }
        }
    }

    fn handle(&mut self, now: Now, input: In<'_, Self>) -> std::io::Result<usize> {
        let input = match input {
            In::Received(_, bytes) => Input::Received(bytes),
            In::Closed(_) => Input::Closed,
            In::Failed(_, _, e) => return Err(e),
            // Reads stop instead (Overflow::Hold).
            In::Overflow(_) => return Ok(0),
            In::Connected(_, dial, _) => match dial {},
            In::Completed(token, c) => {
                self.outstanding = self.outstanding.saturating_sub(1);
                Input::Completed(token, c)
            }
            In::Timeout => Input::Timeout,
            In::Shutdown => {
                self.shutdown = true;
                return Ok(0);
            }
        };
        Ok(self.session.handle(now, input))
    }

    fn end(self, _: End) {}
}

/// Requests go to the [`HttpAnswerer`]: at once when it can, else on the blocking pool.
struct HttpAnswers<R> {
    rt: R,
    answerer: Arc<dyn HttpAnswerer>,
    remote: SocketAddr,
    cid: u64,
}

impl<R: Runtime, S> Answers<Http, S> for HttpAnswers<R> {
    fn answer(&self, effect: Effect) -> Answer<Completion> {
        let Effect::Request { head, body } = effect;
        match self.answerer.answer_now(self.remote, &head, &body) {
            Some(r) => Answer::Now(Completion::Response(r)),
            None => {
                let (a, remote) = (Arc::clone(&self.answerer), self.remote);
                Answer::Later {
                    answer: self.rt.unblock(Box::new(move || {
                        Completion::Response(a.answer(remote, head, body))
                    })),
                    hold_input: false,
                }
            }
        }
    }

    fn connect(&self, dial: &std::convert::Infallible) -> Connecting<S> {
        match *dial {}
    }

    fn event(&self, ev: Event) {
        log_event(self.cid, self.remote, &ev);
    }
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
