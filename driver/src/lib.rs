//! rmox-driver: the one async loop that drives rmox's sans-IO machines over byte streams,
//! written once for every runtime.
//!
//! A runtime crate supplies three things through [`Runtime`]: a timer, a way to run
//! blocking work (storage calls) off its reactor, and streams implementing `futures-io`
//! (tokio's through `tokio-util`'s compat layer). Everything about the protocols stays in
//! the core machines; the loop ([`machine::drive`]) only moves bytes, deadlines and effect
//! answers. Nothing here needs `Send`: glommio tasks are `!Send`. Every stream machine runs
//! on that loop through a thin adapter: the SMTP server session (here, [`serve`]), HTTP
//! server connections ([`http`]), outbound delivery ([`outbound`]) and HTTPS fetches
//! ([`fetch`]); DNS over UDP has its own loop ([`dns`]); [`accept`] serves a listener of
//! either kind ([`accept::Service`]).

pub mod accept;
pub mod dns;
pub mod fetch;
pub mod http;
pub mod machine;
pub mod outbound;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "testing")]
pub mod testing_dns;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_lite::{AsyncRead, AsyncWrite};
use machine::{Answer, Answers, ConnId, End, Eof, In, Machine, Overflow, Step};
use rmox_core::server::{Completion, Effect, Event, Input, Output, ServerSession};
use rmox_core::{Now, Token, UnixTime};

/// What the driver needs from a runtime.
pub trait Runtime: Clone + 'static {
    /// Completes at `at` (or at once when `at` has passed).
    fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Future<Output = ()>>>;
    /// Runs a blocking function on the runtime's blocking pool.
    fn unblock<T: Send + 'static>(
        &self,
        f: Box<dyn FnOnce() -> T + Send + 'static>,
    ) -> Pin<Box<dyn Future<Output = T>>>;
}

/// Answers the session's effects from storage and configuration. Called on the blocking
/// pool; implementations may block (disk, fsync).
pub trait Answerer: Send + Sync + 'static {
    /// Performs `effect` and returns its answer.
    fn answer(&self, effect: Effect) -> Completion;
    /// Answers `effect` at once when that needs no blocking work (configuration and
    /// in-memory counters only), saving the hand-off to the blocking pool;
    /// `None` otherwise. Called on the runtime's own thread: it must never block.
    fn answer_now(&self, effect: &Effect) -> Option<Completion> {
        let _ = effect;
        None
    }
    /// Answers `effect` from the runtime's own thread where the only wait is for storage
    /// to make it durable (a delivery whose records need no disk read or file): the work is
    /// done now and the future is ready with the answer once it is durable, without a
    /// blocking-pool thread waiting for it. `None`: [`Answerer::answer`] on the blocking
    /// pool. Like `answer_now`, it must never block.
    fn answer_soon(
        &self,
        effect: &Effect,
    ) -> Option<Pin<Box<dyn Future<Output = Completion> + Send>>> {
        let _ = effect;
        None
    }
    /// A session event, for logging and policy counters (auth failures).
    fn event(&self, cid: u64, event: &Event) {
        let _ = (cid, event);
    }
    /// The connection `cid` is gone, however it ended (also after an I/O error, when the
    /// session never said [`Event::Closing`]): per-connection counts are released here.
    fn ended(&self, cid: u64) {
        let _ = cid;
    }
}

/// Background work a runtime's `run` starts on one worker with that runtime's value (the
/// queue runner): a local task, awaited before the worker ends (it should end on shutdown).
pub type Background<R> = Box<dyn FnOnce(R) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A [`Background`] shared by the workers of one `run`: the first worker to start takes it.
pub type SharedBackground<R> = Arc<std::sync::Mutex<Option<Background<R>>>>;

/// Takes the background work if no other worker took it.
pub fn take_background<R>(b: &SharedBackground<R>) -> Option<Background<R>> {
    b.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Connection ids, unique in this process.
pub fn next_cid() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A process-wide shutdown signal: sessions answer new commands with 421, finish open
/// transactions, and listeners stop accepting.
#[derive(Default)]
pub struct Shutdown {
    flag: AtomicBool,
    event: event_listener::Event,
}

impl Shutdown {
    /// A new, untriggered signal.
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown::default())
    }

    /// Triggers shutdown (idempotent).
    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.event.notify(usize::MAX);
    }

    /// Whether shutdown was triggered.
    pub fn is_triggered(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Completes when shutdown is triggered.
    pub async fn wait(&self) {
        loop {
            if self.is_triggered() {
                return;
            }
            let listener = self.event.listen();
            if self.is_triggered() {
                return;
            }
            listener.await;
        }
    }
}

/// The current time from the operating system's clocks: only drivers read clocks.
pub fn now() -> Now {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Now {
        mono: Instant::now(),
        wall: UnixTime(wall),
    }
}

/// Why a connection ended abnormally (logged, never shown to the peer).
#[derive(Debug)]
pub enum ConnError {
    /// Reading or writing the socket failed.
    Io(std::io::Error),
    /// The session ended with an error (TLS failure, protocol violation).
    Session(rmox_core::server::SessionError),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "i/o: {e}"),
            ConnError::Session(e) => write!(f, "session: {e}"),
        }
    }
}

/// Unconsumed input kept before the connection is dropped.
const MAX_UNCONSUMED: usize = 8 << 20;

/// First size of the read buffer: most sessions are command lines and small messages, and
/// idle sessions should cost little memory; it grows to [`machine::READ_CHUNK`] on a full
/// read.
const FIRST_CHUNK: usize = 1024;

/// The connection of a server session (its only one).
const CONN: ConnId = ConnId(0);

/// Drives `session` over `stream` until it closes ([`machine::drive`] over [`Smtp`]).
/// Bytes the session did not consume yet stay buffered and are offered again after the
/// next input (backpressure: while the session waits for an effect it consumes nothing
/// and we stop reading). [`Answerer::ended`] is called when it returns, on every path.
pub async fn serve<S, R>(
    rt: R,
    stream: S,
    session: ServerSession,
    answerer: Arc<dyn Answerer>,
    cid: u64,
    shutdown: Arc<Shutdown>,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Runtime,
{
    let answers = SmtpAnswers {
        rt: rt.clone(),
        answerer: Arc::clone(&answerer),
        cid,
    };
    let machine = Smtp {
        session,
        closed: false,
    };
    let r = machine::drive(
        &rt,
        machine,
        &answers,
        Some((CONN, stream)),
        Some(&shutdown),
    )
    .await;
    answerer.ended(cid);
    r
}

/// The SMTP server session as a [`Machine`]: one connection, kept open for writing after
/// the peer's end of stream; 8 MiB of unconsumed input ends the session with a 421.
struct Smtp {
    session: ServerSession,
    /// The session said [`Output::Close`].
    closed: bool,
}

impl Machine for Smtp {
    type Token = Token;
    type Effect = Effect;
    type Completion = Completion;
    type Event = Event;
    type Dial = std::convert::Infallible;
    type Outcome = ();
    type Error = ConnError;

    const FIRST_READ: usize = FIRST_CHUNK;
    const MAX_UNCONSUMED: usize = MAX_UNCONSUMED;
    const OVERFLOW: Overflow = Overflow::Tell;
    const EOF: Eof = Eof::HalfOpen;

    fn poll(&mut self, now: Now, tx: &mut Vec<u8>) -> Step<Self> {
        if self.closed {
            return Step::Done;
        }
        match self.session.poll(now, tx) {
            Output::Transmit => Step::Transmit(CONN),
            Output::Effect(token, effect) => Step::Effect(token, effect),
            Output::Event(ev) => Step::Event(ev),
            Output::Idle { deadline, .. } => Step::Idle(deadline),
            Output::Close => {
                self.closed = true;
                Step::Close(CONN)
            }
        }
    }

    fn handle(&mut self, now: Now, input: In<'_, Self>) -> Result<usize, ConnError> {
        let input = match input {
            In::Received(_, bytes) => Input::Received(bytes),
            In::Closed(_) => Input::PeerClosed,
            In::Failed(_, _, e) => return Err(ConnError::Io(e)),
            In::Overflow(_) => Input::Overflow,
            In::Connected(_, dial, _) => match dial {},
            In::Completed(token, c) => Input::Completed(token, c),
            In::Timeout => Input::Timeout,
            In::Shutdown => Input::Shutdown,
        };
        self.session.handle(now, input).map_err(ConnError::Session)
    }

    fn end(self, _: End) {}
}

/// The SMTP session's effects go to the [`Answerer`]: at once when it can, else on the
/// blocking pool; a spool write holds input until it is answered.
struct SmtpAnswers<R> {
    rt: R,
    answerer: Arc<dyn Answerer>,
    cid: u64,
}

impl<R: Runtime, S> Answers<Smtp, S> for SmtpAnswers<R> {
    fn answer(&self, effect: Effect) -> Answer<Completion> {
        if let Some(c) = self.answerer.answer_now(&effect) {
            return Answer::Now(c);
        }
        match self.answerer.answer_soon(&effect) {
            Some(answer) => Answer::Later {
                answer,
                hold_input: false,
            },
            None => {
                let hold_input = matches!(effect, Effect::Spool { .. });
                let a = Arc::clone(&self.answerer);
                Answer::Later {
                    answer: self.rt.unblock(Box::new(move || a.answer(effect))),
                    hold_input,
                }
            }
        }
    }

    fn connect(&self, dial: &std::convert::Infallible) -> machine::Connecting<S> {
        match *dial {}
    }

    fn event(&self, ev: Event) {
        tracing::debug!(cid = self.cid, event = ?ev, "smtp");
        self.answerer.event(self.cid, &ev);
    }
}

/// One accepted connection, start to end: a session for the peer, served until it closes,
/// logged with its connection id. Every runtime's accept loop calls this.
pub async fn connection<S, R>(
    rt: R,
    stream: S,
    remote: std::net::SocketAddr,
    config: Arc<rmox_core::server::ServerConfig>,
    answerer: Arc<dyn Answerer>,
    shutdown: Arc<Shutdown>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Runtime,
{
    let cid = next_cid();
    let peer = rmox_core::server::Peer {
        ip: remote.ip(),
        cid,
    };
    let session = match ServerSession::new(config, peer, now()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(cid, error = %e, "cannot start session");
            return;
        }
    };
    tracing::info!(cid, %remote, "connection");
    match serve(rt, stream, session, answerer, cid, shutdown).await {
        Ok(()) => tracing::info!(cid, "connection closed"),
        Err(e) => tracing::info!(cid, error = %e, "connection ended"),
    }
}

/// The listeners one worker thread serves: its own handles on the shared sockets.
pub type WorkerListeners = Vec<(std::net::TcpListener, accept::Service)>;

/// Starts `threads` worker threads named `{name}-{i}`, each given clones of the listening
/// sockets, and waits for all of them; the first error or panic of a worker is returned.
pub fn run_workers<F>(
    name: &str,
    listeners: &[(std::net::TcpListener, accept::Service)],
    threads: usize,
    worker: F,
) -> std::io::Result<()>
where
    F: Fn(WorkerListeners) -> std::io::Result<()> + Send + Clone + 'static,
{
    let mut handles = Vec::new();
    for i in 0..threads.max(1) {
        let mine: WorkerListeners = listeners
            .iter()
            .map(|(l, c)| Ok((l.try_clone()?, c.clone())))
            .collect::<std::io::Result<_>>()?;
        let w = worker.clone();
        let h = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || w(mine))?;
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
