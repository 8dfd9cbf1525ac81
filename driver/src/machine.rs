//! The one driver loop: [`drive`] runs any [`Machine`] over the runtime, whatever it
//! speaks (SMTP server session, HTTP server session, HTTPS fetch, outbound delivery).
//!
//! A machine is a core state machine seen through a thin adapter (in this crate): it is
//! polled for [`Step`]s until [`Step::Idle`] (bytes to transmit on one of its connections,
//! effects to answer, events to log, connections to open or close), and it is handed
//! [`In`]puts (bytes read, the peer's end of stream, I/O errors, effect answers, its
//! deadline, shutdown). Effects go to an [`Answers`] value that gives the completion at once
//! (on the runtime's thread), or a future: work on the blocking pool, or an asynchronous
//! answer such as a DNS lookup. Connections are either given at the start (an accepted
//! stream) or opened by the loop as the machine asks ([`Answers::connect`]), many at once
//! by [`ConnId`].
//!
//! What differs between machines and must stay as it was is said by the machine's
//! constants: the first read size, the unconsumed input limit and what passing it means
//! ([`Overflow`]), what the peer's end of stream means ([`Eof`]) and a write timeout.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt, FutureExt};
use rmox_core::Now;

pub use rmox_core::delivery::ConnId;

use crate::{now, Runtime, Shutdown};

/// Size of one socket read (the read buffer grows to it from [`Machine::FIRST_READ`]).
pub const READ_CHUNK: usize = 16 * 1024;

/// What a machine asks of the loop, one [`Machine::poll`] at a time.
pub enum Step<M: Machine + ?Sized> {
    /// Write the bytes put in the transmit buffer to this connection.
    Transmit(ConnId),
    /// Answer this effect ([`Answers::answer`]); the answer comes back as
    /// [`In::Completed`] with the token.
    Effect(M::Token, M::Effect),
    /// Something to log ([`Answers::event`]).
    Event(M::Event),
    /// Open this connection ([`Answers::connect`]); [`In::Connected`] follows.
    Connect(ConnId, M::Dial),
    /// Flush and close this connection (and forget a connection attempt in progress).
    Close(ConnId),
    /// Nothing to do until an input or the deadline.
    Idle(Option<Instant>),
    /// The machine is finished: the loop closes what is open and returns
    /// [`Machine::end`] with [`End::Done`].
    Done,
}

/// What the loop hands a machine.
pub enum In<'a, M: Machine + ?Sized> {
    /// Bytes read on a connection and not consumed yet: the machine returns how many it
    /// took; the rest is offered again with more bytes, or after an effect's answer or a
    /// timeout.
    Received(ConnId, &'a [u8]),
    /// The peer closed its side of the connection (see [`Eof`]).
    Closed(ConnId),
    /// An I/O error on a connection. After a read or write error the loop has dropped the
    /// connection; after a flush error it is kept.
    Failed(ConnId, IoOp, io::Error),
    /// The unconsumed input of a connection passed [`Machine::MAX_UNCONSUMED`] (see
    /// [`Overflow`]).
    Overflow(ConnId),
    /// The connection asked for by [`Step::Connect`] is open (`Ok`) or could not be opened.
    Connected(ConnId, M::Dial, io::Result<()>),
    /// An effect's answer.
    Completed(M::Token, M::Completion),
    /// The deadline of the last [`Step::Idle`] passed.
    Timeout,
    /// Shutdown was triggered (given once).
    Shutdown,
}

/// The operation that failed ([`In::Failed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoOp {
    /// A read.
    Read,
    /// A write (or its timeout, or a write to a connection that is not open).
    Write,
    /// A flush.
    Flush,
}

/// What the peer's end of stream means to a machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eof {
    /// The connection is dropped and the machine told at once.
    Drop,
    /// The connection stays open for writing; the machine is told after the outputs of the
    /// last input were written.
    HalfOpen,
    /// As [`Eof::HalfOpen`], but while buffered input waits for an answer the machine is
    /// told only once that input was taken or the answers came (pipelined requests are
    /// answered before the machine learns that no more input comes).
    HalfOpenAfterInput,
}

/// What happens when a connection's unconsumed input passes [`Machine::MAX_UNCONSUMED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// No more reads on it until the machine consumed input.
    Hold,
    /// At the next read the buffer is dropped and the machine told ([`In::Overflow`]).
    Tell,
    /// The connection is dropped and the machine told ([`In::Overflow`]).
    Drop,
}

/// How a drive ended ([`Machine::end`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The machine said [`Step::Done`].
    Done,
    /// Nothing can move the machine any more: no open connection to read, no answer
    /// pending, no deadline.
    Stalled,
}

/// A sans-IO machine as the driver loop sees it (an adapter over a core machine).
pub trait Machine {
    /// Names an effect for its answer.
    type Token: Copy;
    /// A question for the [`Answers`].
    type Effect;
    /// The answer to an effect.
    type Completion;
    /// A log event.
    type Event;
    /// How to open a connection the machine asks for.
    type Dial;
    /// What [`drive`] returns when the machine is done.
    type Outcome;
    /// Why the drive ended abnormally (an error [`Machine::handle`] returns ends it).
    type Error;

    /// First size of the read buffer; it grows to [`READ_CHUNK`] on a full read.
    const FIRST_READ: usize = READ_CHUNK;
    /// Unconsumed input kept per connection (see [`Machine::OVERFLOW`]).
    const MAX_UNCONSUMED: usize;
    /// What passing [`Machine::MAX_UNCONSUMED`] does.
    const OVERFLOW: Overflow;
    /// What the peer's end of stream does.
    const EOF: Eof;
    /// Longest a write may block (the peer not reading); `None`: no limit.
    const WRITE_TIMEOUT: Option<Duration> = None;

    /// The next output; transmitted bytes go to `tx`.
    fn poll(&mut self, now: Now, tx: &mut Vec<u8>) -> Step<Self>;
    /// Takes an input; for [`In::Received`], the number of bytes consumed.
    fn handle(&mut self, now: Now, input: In<'_, Self>) -> Result<usize, Self::Error>;
    /// The result of the drive.
    fn end(self, how: End) -> Self::Outcome;
}

/// An effect's answer as [`Answers::answer`] gives it.
pub enum Answer<C> {
    /// Answered at once.
    Now(C),
    /// On its way (the blocking pool, a resolver task).
    Later {
        /// The answer.
        answer: Pin<Box<dyn Future<Output = C>>>,
        /// No reads while this is the latest effect sent off and answers are pending (a
        /// spool write: the message is not moved from the socket into memory meanwhile).
        hold_input: bool,
    },
}

/// A connection being opened.
pub type Connecting<S> = Pin<Box<dyn Future<Output = io::Result<S>>>>;

/// Answers a machine's effects and opens its connections; `S` is the stream type.
pub trait Answers<M: Machine, S> {
    /// Answers `effect`, at once or later. Called on the runtime's thread: anything that
    /// blocks goes to the blocking pool inside the returned future.
    fn answer(&self, effect: M::Effect) -> Answer<M::Completion>;
    /// Opens a connection the machine asked for.
    fn connect(&self, dial: &M::Dial) -> Connecting<S>;
    /// Logs (or counts) an event.
    fn event(&self, event: M::Event);
}

/// One connection of the loop.
struct Conn<S> {
    id: ConnId,
    stream: S,
    /// Input not consumed yet.
    inbuf: Vec<u8>,
    /// The peer closed its side.
    eof: bool,
    /// The machine was told of `eof`.
    told: bool,
}

impl<S> Conn<S> {
    fn new(id: ConnId, stream: S) -> Conn<S> {
        Conn {
            id,
            stream,
            inbuf: Vec::new(),
            eof: false,
            told: false,
        }
    }
}

/// A runtime's timer future.
type Sleep = Pin<Box<dyn Future<Output = ()>>>;

/// What ended one wait.
enum Woke<C, S> {
    /// Pending answer `i` came.
    Answer(usize, C),
    /// Connection attempt `i` ended.
    Connected(usize, io::Result<S>),
    /// A read on connection `i` finished.
    Read(usize, io::Result<usize>),
    /// The deadline passed.
    Timer,
    /// Shutdown was triggered.
    Stop,
}

/// Drives `m` until it is done (or nothing can move it), over the connection `first` (an
/// accepted stream) if given and the connections it asks for. Effects go to `answers`;
/// with `shutdown`, its trigger is given to the machine once ([`In::Shutdown`]).
pub async fn drive<M, A, R, S>(
    rt: &R,
    mut m: M,
    answers: &A,
    first: Option<(ConnId, S)>,
    shutdown: Option<&Shutdown>,
) -> Result<M::Outcome, M::Error>
where
    M: Machine,
    A: Answers<M, S>,
    R: Runtime,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conns: Vec<Conn<S>> = first.into_iter().map(|(id, s)| Conn::new(id, s)).collect();
    let mut connecting: Vec<(ConnId, M::Dial, Connecting<S>)> = Vec::new();
    type Answering<T, C> = (T, Pin<Box<dyn Future<Output = C>>>);
    let mut pending: Vec<Answering<M::Token, M::Completion>> = Vec::new();
    // The latest effect sent off holds input while answers are pending.
    let mut hold = false;
    let mut tx: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = vec![0u8; M::FIRST_READ];
    let mut shutdown_sent = shutdown.is_none();
    // The timer and when it fires. Kept while the machine's deadline moves later (each
    // command moves a session's): it then fires early, is checked against the deadline of
    // that moment and set anew, so a timer is made once per timeout period, not per wait.
    let mut timer: Option<(Instant, Sleep)> = None;
    loop {
        if !shutdown_sent && shutdown.is_some_and(Shutdown::is_triggered) {
            shutdown_sent = true;
            m.handle(now(), In::Shutdown)?;
        }
        // Drain outputs until idle.
        let deadline = loop {
            match m.poll(now(), &mut tx) {
                Step::Transmit(id) => {
                    let r = match conns.iter_mut().find(|c| c.id == id) {
                        Some(c) => write(rt, &mut c.stream, &tx, M::WRITE_TIMEOUT).await,
                        None => Err(io::Error::from(io::ErrorKind::NotConnected)),
                    };
                    tx.clear();
                    if let Err(e) = r {
                        conns.retain(|c| c.id != id);
                        m.handle(now(), In::Failed(id, IoOp::Write, e))?;
                    }
                }
                Step::Effect(token, effect) => match answers.answer(effect) {
                    Answer::Now(c) => {
                        m.handle(now(), In::Completed(token, c))?;
                        offer_all(&mut m, &mut conns)?;
                    }
                    Answer::Later { answer, hold_input } => {
                        hold = hold_input;
                        pending.push((token, answer));
                    }
                },
                Step::Event(ev) => answers.event(ev),
                Step::Connect(id, dial) => {
                    let f = answers.connect(&dial);
                    connecting.push((id, dial, f));
                }
                Step::Close(id) => {
                    connecting.retain(|(c, _, _)| *c != id);
                    if let Some(i) = conns.iter().position(|c| c.id == id) {
                        let mut c = conns.remove(i);
                        let _ = c.stream.flush().await;
                        let _ = c.stream.close().await;
                    }
                }
                Step::Idle(deadline) => break deadline,
                Step::Done => {
                    for mut c in conns {
                        let _ = c.stream.close().await;
                    }
                    return Ok(m.end(End::Done));
                }
            }
        };
        for i in 0..conns.len() {
            let Some(c) = conns.get_mut(i) else { break };
            if let Err(e) = c.stream.flush().await {
                let id = c.id;
                m.handle(now(), In::Failed(id, IoOp::Flush, e))?;
            }
        }
        // The peer's end of stream, once the outputs of its last input are written.
        let answered = pending.is_empty();
        if let Some(c) = conns.iter_mut().find(|c| {
            c.eof
                && !c.told
                && (M::EOF != Eof::HalfOpenAfterInput || c.inbuf.is_empty() || answered)
        }) {
            c.told = true;
            let id = c.id;
            m.handle(now(), In::Closed(id))?;
            continue;
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                m.handle(now(), In::Timeout)?;
                offer_all(&mut m, &mut conns)?;
                continue;
            }
        }
        if deadline.is_none()
            && pending.is_empty()
            && connecting.is_empty()
            && conns.iter().all(|c| c.eof)
        {
            // Waiting for nothing anyone can give.
            return Ok(m.end(End::Stalled));
        }
        // Wait for input, an answer, a connection, the deadline or shutdown.
        let hold_input = hold && !pending.is_empty();
        match deadline {
            None => timer = None,
            Some(d) if timer.as_ref().is_some_and(|(at, _)| *at <= d) => {}
            Some(d) => timer = Some((d, rt.sleep_until(d))),
        }
        let waits_shutdown = if shutdown_sent { None } else { shutdown };
        let mut stop = pin!(async move {
            match waits_shutdown {
                Some(s) => s.wait().await,
                None => futures_lite::future::pending::<()>().await,
            }
        });
        let woke = futures_lite::future::poll_fn(|cx| {
            for (i, (_, f)) in pending.iter_mut().enumerate() {
                if let Poll::Ready(c) = f.as_mut().poll(cx) {
                    return Poll::Ready(Woke::Answer(i, c));
                }
            }
            for (i, (_, _, f)) in connecting.iter_mut().enumerate() {
                if let Poll::Ready(r) = f.as_mut().poll(cx) {
                    return Poll::Ready(Woke::Connected(i, r));
                }
            }
            if !hold_input {
                for (i, c) in conns.iter_mut().enumerate() {
                    if c.eof || (M::OVERFLOW == Overflow::Hold && c.inbuf.len() > M::MAX_UNCONSUMED)
                    {
                        continue;
                    }
                    if let Poll::Ready(r) = Pin::new(&mut c.stream).poll_read(cx, &mut chunk) {
                        return Poll::Ready(Woke::Read(i, r));
                    }
                }
            }
            if let Some((_, t)) = timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Woke::Timer);
                }
            }
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Woke::Stop);
            }
            Poll::Pending
        })
        .await;
        match woke {
            Woke::Answer(i, c) => {
                let (token, _) = pending.remove(i);
                m.handle(now(), In::Completed(token, c))?;
                offer_all(&mut m, &mut conns)?;
            }
            Woke::Connected(i, r) => {
                let (id, dial, _) = connecting.remove(i);
                let r = r.map(|s| conns.push(Conn::new(id, s)));
                m.handle(now(), In::Connected(id, dial, r))?;
            }
            Woke::Read(i, Ok(0)) => match M::EOF {
                Eof::Drop => {
                    let c = conns.remove(i);
                    m.handle(now(), In::Closed(c.id))?;
                }
                Eof::HalfOpen | Eof::HalfOpenAfterInput => {
                    if let Some(c) = conns.get_mut(i) {
                        c.eof = true;
                    }
                }
            },
            Woke::Read(i, Ok(n)) => {
                let Some(c) = conns.get_mut(i) else { continue };
                if M::OVERFLOW == Overflow::Tell && c.inbuf.len() > M::MAX_UNCONSUMED {
                    // Told why and closed by the machine.
                    c.inbuf.clear();
                    let id = c.id;
                    m.handle(now(), In::Overflow(id))?;
                    continue;
                }
                c.inbuf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default());
                if n == chunk.len() && chunk.len() < READ_CHUNK {
                    chunk.resize(READ_CHUNK, 0);
                }
                offer(&mut m, c)?;
                if M::OVERFLOW == Overflow::Drop && c.inbuf.len() > M::MAX_UNCONSUMED {
                    let id = c.id;
                    conns.remove(i);
                    m.handle(now(), In::Overflow(id))?;
                }
            }
            Woke::Read(i, Err(e)) => {
                let c = conns.remove(i);
                m.handle(now(), In::Failed(c.id, IoOp::Read, e))?;
            }
            Woke::Timer => {
                timer = None;
                // Early (set for an earlier deadline): the next wait sets it anew.
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    m.handle(now(), In::Timeout)?;
                    offer_all(&mut m, &mut conns)?;
                }
            }
            Woke::Stop => {}
        }
    }
}

/// Writes `buf` to `stream`, within `timeout` when given.
async fn write<R: Runtime, S: AsyncWrite + Unpin>(
    rt: &R,
    stream: &mut S,
    buf: &[u8],
    timeout: Option<Duration>,
) -> io::Result<()> {
    match timeout {
        None => stream.write_all(buf).await,
        Some(t) => {
            // Most writes finish at once (the socket buffer has room): they need no timer.
            let mut w = pin!(stream.write_all(buf));
            if let Some(r) = futures_lite::future::poll_once(w.as_mut()).await {
                return r;
            }
            let limit = rt.sleep_until(Instant::now() + t);
            w.or(async {
                limit.await;
                Err(io::Error::from(io::ErrorKind::TimedOut))
            })
            .await
        }
    }
}

/// Offers a connection's buffered input to the machine and drops what it consumed.
fn offer<M: Machine, S>(m: &mut M, c: &mut Conn<S>) -> Result<(), M::Error> {
    if c.inbuf.is_empty() {
        return Ok(());
    }
    let n = m.handle(now(), In::Received(c.id, &c.inbuf))?;
    c.inbuf.drain(..n.min(c.inbuf.len()));
    Ok(())
}

/// Offers every connection's buffered input (after an answer or a timeout the machine may
/// take what it left before).
fn offer_all<M: Machine, S>(m: &mut M, conns: &mut [Conn<S>]) -> Result<(), M::Error> {
    for c in conns {
        offer(m, c)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::task::Context;

    use super::*;

    /// A runtime without timers whose blocking pool answers at once.
    #[derive(Clone)]
    struct NoTimers;

    impl Runtime for NoTimers {
        fn sleep_until(&self, _: Instant) -> Pin<Box<dyn Future<Output = ()>>> {
            Box::pin(futures_lite::future::pending())
        }
        fn unblock<T: Send + 'static>(
            &self,
            f: Box<dyn FnOnce() -> T + Send + 'static>,
        ) -> Pin<Box<dyn Future<Output = T>>> {
            let v = f();
            Box::pin(async move { v })
        }
    }

    /// A stream that reads `input` (then end of stream) and keeps what is written.
    struct Pipe {
        input: Vec<u8>,
        pos: usize,
        output: Vec<u8>,
    }

    impl AsyncRead for Pipe {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let rest = this.input.get(this.pos..).unwrap_or_default();
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
            this.pos += n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Pipe {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().output.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    const C: ConnId = ConnId(0);

    /// Answers each complete line by its upper case (an effect); takes no input while an
    /// answer is pending; closes when the peer closed and nothing is pending.
    #[derive(Default)]
    struct Upper {
        waiting: bool,
        effect: Option<String>,
        out: VecDeque<String>,
        peer_closed: bool,
        closed: bool,
        answered: usize,
        /// A line that is a number N moves the deadline to `base` + N seconds.
        base: Option<Instant>,
        deadline: Option<Instant>,
    }

    impl Machine for Upper {
        type Token = ();
        type Effect = String;
        type Completion = String;
        type Event = Infallible;
        type Dial = Infallible;
        type Outcome = (End, usize);
        type Error = Infallible;
        const MAX_UNCONSUMED: usize = 1 << 20;
        const OVERFLOW: Overflow = Overflow::Hold;
        const EOF: Eof = Eof::HalfOpen;

        fn poll(&mut self, _: Now, tx: &mut Vec<u8>) -> Step<Self> {
            if let Some(line) = self.out.pop_front() {
                tx.extend_from_slice(line.as_bytes());
                return Step::Transmit(C);
            }
            if let Some(e) = self.effect.take() {
                return Step::Effect((), e);
            }
            if self.closed {
                return Step::Done;
            }
            if self.peer_closed && !self.waiting {
                self.closed = true;
                return Step::Close(C);
            }
            Step::Idle(self.deadline)
        }

        fn handle(&mut self, _: Now, input: In<'_, Self>) -> Result<usize, Infallible> {
            match input {
                In::Received(_, bytes) if !self.waiting => {
                    let Some(end) = bytes.iter().position(|b| *b == b'\n') else {
                        return Ok(0);
                    };
                    let line = String::from_utf8_lossy(&bytes[..end]).into_owned();
                    if let (Some(base), Ok(n)) = (self.base, line.parse::<u64>()) {
                        self.deadline = Some(base + Duration::from_secs(n));
                    }
                    self.effect = Some(line);
                    self.waiting = true;
                    return Ok(end + 1);
                }
                In::Completed((), answer) => {
                    self.out.push_back(answer + "\n");
                    self.waiting = false;
                    self.answered += 1;
                }
                In::Closed(_) => self.peer_closed = true,
                _ => {}
            }
            Ok(0)
        }

        fn end(self, how: End) -> (End, usize) {
            (how, self.answered)
        }
    }

    struct ToUpper;

    impl<S> Answers<Upper, S> for ToUpper {
        fn answer(&self, effect: String) -> Answer<String> {
            Answer::Later {
                answer: Box::pin(async move { effect.to_uppercase() }),
                hold_input: true,
            }
        }
        fn connect(&self, dial: &Infallible) -> Connecting<S> {
            match *dial {}
        }
        fn event(&self, event: Infallible) {
            match event {}
        }
    }

    /// Input the machine left while it waited for an answer is offered again after the
    /// answer (here all of it arrives in one read before the end of stream: without the
    /// offer after the answer the second line would never be taken); the end of stream is
    /// given after the outputs were written; an incomplete last line is never consumed.
    #[test]
    fn leftover_input_offered_after_answers_and_end_of_stream_last() {
        let mut pipe = Pipe {
            input: b"ab\ncd\nef".to_vec(),
            pos: 0,
            output: Vec::new(),
        };
        let r = futures_lite::future::block_on(drive(
            &NoTimers,
            Upper::default(),
            &ToUpper,
            Some((C, &mut pipe)),
            None,
        ));
        let Ok(r) = r;
        assert_eq!(r, (End::Done, 2));
        assert_eq!(pipe.output, b"AB\nCD\n");
    }

    /// Timers that never fire; every one asked for is recorded.
    #[derive(Clone, Default)]
    struct CountedTimers(std::rc::Rc<std::cell::RefCell<Vec<Instant>>>);

    impl Runtime for CountedTimers {
        fn sleep_until(&self, at: Instant) -> Pin<Box<dyn Future<Output = ()>>> {
            self.0.borrow_mut().push(at);
            Box::pin(futures_lite::future::pending())
        }
        fn unblock<T: Send + 'static>(
            &self,
            f: Box<dyn FnOnce() -> T + Send + 'static>,
        ) -> Pin<Box<dyn Future<Output = T>>> {
            NoTimers.unblock(f)
        }
    }

    /// A timer is kept while the deadline moves later and made anew when it moves earlier:
    /// deadlines 100, 200, 300, 50, 60 s make two timers (100 and 50).
    #[test]
    fn timer_kept_while_the_deadline_moves_later() {
        let mut pipe = Pipe {
            input: b"100\n200\n300\n50\n60\n".to_vec(),
            pos: 0,
            output: Vec::new(),
        };
        let base = Instant::now();
        let rt = CountedTimers::default();
        let m = Upper {
            base: Some(base),
            ..Upper::default()
        };
        let r = futures_lite::future::block_on(drive(&rt, m, &ToUpper, Some((C, &mut pipe)), None));
        let Ok(r) = r;
        assert_eq!(r, (End::Done, 5));
        let at: Vec<u64> =
            rt.0.borrow()
                .iter()
                .map(|t| (*t - base).as_secs())
                .collect();
        assert_eq!(at, [100, 50]);
    }

    /// With nothing to read, no answer pending and no deadline, the drive ends as stalled
    /// instead of waiting forever.
    #[test]
    fn stalls_when_nothing_can_move_the_machine() {
        let mut pipe = Pipe {
            input: b"partial".to_vec(),
            pos: 0,
            output: Vec::new(),
        };
        // Never closes on the peer's end of stream.
        let m = Upper {
            waiting: true,
            ..Upper::default()
        };
        let r = futures_lite::future::block_on(drive(
            &NoTimers,
            m,
            &ToUpper,
            Some((C, &mut pipe)),
            None,
        ));
        let Ok(r) = r;
        assert_eq!(r, (End::Stalled, 0));
    }
}
