//! rmox-driver: the one async loop that drives rmox's sans-IO server session over any
//! byte stream, written once for every runtime.
//!
//! A runtime crate supplies three things through [`Runtime`]: a timer, a way to run
//! blocking work (storage calls) off its reactor, and streams implementing `futures-io`
//! (tokio's through `tokio-util`'s compat layer). Everything about SMTP stays in the core
//! machine; this loop only moves bytes, deadlines and effect answers. Nothing here needs
//! `Send`: glommio tasks are `!Send`. The same is done for HTTP server connections
//! ([`http`]), outbound delivery ([`outbound`]) and DNS ([`dns`]); [`accept`] serves a
//! listener of either kind ([`accept::Service`]).

pub mod accept;
pub mod dns;
pub mod fetch;
pub mod http;
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

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, FutureExt};
use rmox_core::server::{Completion, Effect, Event, Input, Output, ServerSession};
use rmox_core::{Now, UnixTime};

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

/// Size of one socket read.
const READ_CHUNK: usize = 16 * 1024;

/// First size of the read buffer: most sessions are command lines and small messages, and
/// idle sessions should cost little memory; it grows to [`READ_CHUNK`] on a full read.
const FIRST_CHUNK: usize = 1024;

/// Drives `session` over `stream` until it closes. Bytes the session did not consume yet
/// stay buffered and are offered again after the next input (backpressure: while the
/// session waits for an effect it consumes nothing and we stop reading).
/// [`Answerer::ended`] is called when it returns, on every path.
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
    let r = serve_session(rt, stream, session, Arc::clone(&answerer), cid, shutdown).await;
    answerer.ended(cid);
    r
}

async fn serve_session<S, R>(
    rt: R,
    mut stream: S,
    mut session: ServerSession,
    answerer: Arc<dyn Answerer>,
    cid: u64,
    shutdown: Arc<Shutdown>,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: Runtime,
{
    let mut inbuf: Vec<u8> = Vec::new();
    let mut tx: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = vec![0u8; FIRST_CHUNK];
    let mut eof = false;
    let mut peer_closed_sent = false;
    let mut shutdown_sent = false;
    // The last effect sent to the pool was a spool write.
    let mut spooling = false;
    // Effects answered on the blocking pool, oldest first. The session has a deadline for
    // each (its `Timer::Effect`), so an answer that never comes does not pin the
    // connection: the wait below races the answer against input, the deadline and
    // shutdown, and an answer arriving after its deadline is ignored by the session.
    let mut pending: std::collections::VecDeque<(rmox_core::Token, Answering)> =
        std::collections::VecDeque::new();
    loop {
        if !shutdown_sent && shutdown.is_triggered() {
            shutdown_sent = true;
            session
                .handle(now(), Input::Shutdown)
                .map_err(ConnError::Session)?;
        }
        // Drain outputs until idle.
        let deadline = loop {
            match session.poll(now(), &mut tx) {
                Output::Transmit => {
                    stream.write_all(&tx).await.map_err(ConnError::Io)?;
                    tx.clear();
                }
                Output::Effect(token, effect) => match answerer.answer_now(&effect) {
                    Some(c) => {
                        session
                            .handle(now(), Input::Completed(token, c))
                            .map_err(ConnError::Session)?;
                        offer(&mut session, &mut inbuf)?;
                    }
                    None => {
                        spooling = matches!(effect, Effect::Spool { .. });
                        let a = Arc::clone(&answerer);
                        pending.push_back((token, rt.unblock(Box::new(move || a.answer(effect)))));
                    }
                },
                Output::Event(ev) => {
                    tracing::debug!(cid, event = ?ev, "smtp");
                    answerer.event(cid, &ev);
                }
                Output::Idle { deadline, .. } => break deadline,
                Output::Close => {
                    let _ = stream.flush().await;
                    let _ = stream.close().await;
                    return Ok(());
                }
            }
        };
        stream.flush().await.map_err(ConnError::Io)?;
        if eof && !peer_closed_sent {
            peer_closed_sent = true;
            session
                .handle(now(), Input::PeerClosed)
                .map_err(ConnError::Session)?;
            continue;
        }
        // Wait for input, an effect's answer, the deadline or shutdown.
        if let Some(d) = deadline {
            if Instant::now() >= d {
                session
                    .handle(now(), Input::Timeout)
                    .map_err(ConnError::Session)?;
                offer(&mut session, &mut inbuf)?;
                continue;
            }
        }
        if eof && pending.is_empty() && deadline.is_none() {
            // The peer is gone and the session waits for nothing we can give it.
            return Ok(());
        }
        // While message data is being spooled the session takes no input: reading on would
        // only move the message from the socket into this buffer (backpressure instead).
        let hold_input = spooling && !pending.is_empty();
        let read = async {
            if eof || hold_input {
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
            if shutdown_sent {
                futures_lite::future::pending::<()>().await;
            }
            shutdown.wait().await;
            Woke::Stop
        };
        match answer.or(read).or(timer).or(stop).await {
            Woke::Answer(completion) => {
                if let Some((token, _)) = pending.pop_front() {
                    session
                        .handle(now(), Input::Completed(token, completion))
                        .map_err(ConnError::Session)?;
                    offer(&mut session, &mut inbuf)?;
                }
            }
            Woke::Read(Ok(0)) => eof = true,
            Woke::Read(Ok(n)) => {
                if inbuf.len() > MAX_UNCONSUMED {
                    // Told why (421) and closed by the session.
                    inbuf.clear();
                    session
                        .handle(now(), Input::Overflow)
                        .map_err(ConnError::Session)?;
                    continue;
                }
                inbuf.extend_from_slice(&chunk[..n]);
                if n == chunk.len() && chunk.len() < READ_CHUNK {
                    chunk.resize(READ_CHUNK, 0);
                }
                offer(&mut session, &mut inbuf)?;
            }
            Woke::Read(Err(e)) => return Err(ConnError::Io(e)),
            Woke::Timer => {
                session
                    .handle(now(), Input::Timeout)
                    .map_err(ConnError::Session)?;
                offer(&mut session, &mut inbuf)?;
            }
            Woke::Stop => {}
        }
    }
}

/// An effect being answered on the blocking pool.
type Answering = Pin<Box<dyn Future<Output = Completion>>>;

/// What ended one wait of the session loop.
enum Woke {
    /// An effect's answer (the oldest pending one).
    Answer(Completion),
    /// A read finished.
    Read(std::io::Result<usize>),
    /// The session's deadline passed.
    Timer,
    /// Shutdown was triggered.
    Stop,
}

/// Offers buffered input to the session and drops what it consumed.
fn offer(session: &mut ServerSession, inbuf: &mut Vec<u8>) -> Result<(), ConnError> {
    if inbuf.is_empty() {
        return Ok(());
    }
    let n = session
        .handle(now(), Input::Received(inbuf))
        .map_err(ConnError::Session)?;
    inbuf.drain(..n.min(inbuf.len()));
    Ok(())
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
