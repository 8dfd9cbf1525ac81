//! Two session machines over an in-memory link, for tests of both ends at once: a client
//! machine and a server machine exchange bytes through a [`Pair`], in virtual time that
//! jumps to the next deadline of either side when nothing else can happen, with the bytes
//! delivered in seeded random chunks and an optional tamper hook that sees (and may
//! change) every write before it goes on the wire.
//!
//! Each machine is wrapped in an [`Endpoint`]: the adapters below cover the SMTP client
//! and server sessions and the HTTPS fetch and HTTP server sessions; the adapter answers
//! the machine's effects itself.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::TestClock;
use crate::rng::Rng;
use crate::time::Now;

/// One end of a [`Pair`]: a machine with whatever answers its effects.
pub trait Endpoint {
    /// Offers the received bytes not consumed so far; returns how many were consumed.
    fn receive(&mut self, now: Now, data: &[u8]) -> usize;
    /// The other side closed its side of the connection.
    fn peer_closed(&mut self, now: Now);
    /// A deadline this end reported may have passed.
    fn timeout(&mut self, now: Now);
    /// Runs the machine until it waits: bytes to write go to `tx`, effects are answered.
    fn drive(&mut self, now: Now, tx: &mut Vec<u8>) -> Ran;
}

/// Where an [`Endpoint::drive`] left the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// Waiting for input or the deadline.
    Idle(Option<Instant>),
    /// The machine closed the connection (or is done with it).
    Closed,
}

/// The direction of bytes on the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Written by the client, read by the server.
    ToServer,
    /// Written by the server, read by the client.
    ToClient,
}

/// A hook that sees every write before it is put on the link and may change it: drop it
/// (clear), corrupt bytes or inject more.
pub type Tamper = Box<dyn FnMut(Dir, &mut Vec<u8>)>;

/// One direction of the link and the state of the end that writes into it.
#[derive(Default)]
struct Link {
    /// Written, not delivered yet.
    wire: VecDeque<u8>,
    /// Delivered to the reader, not consumed by it yet.
    unread: Vec<u8>,
    /// The writer closed.
    writer_closed: bool,
    /// The reader was told about the close.
    eof_delivered: bool,
    /// The writer's next deadline.
    writer_deadline: Option<Instant>,
}

/// A client and a server machine connected by an in-memory link.
pub struct Pair<C, S> {
    /// The client end.
    pub client: C,
    /// The server end.
    pub server: S,
    /// The virtual clock both ends share.
    pub clock: TestClock,
    rng: Rng,
    /// Most bytes delivered at once; 0 delivers everything written so far.
    max_chunk: usize,
    tamper: Option<Tamper>,
    to_server: Link,
    to_client: Link,
    /// Every byte put on the link, per direction (after tampering).
    pub wire_log: [Vec<u8>; 2],
}

impl<C: Endpoint, S: Endpoint> Pair<C, S> {
    /// Connects `client` and `server`, both created at `clock`'s time. Bytes are delivered
    /// in chunks of 1 to `max_chunk` bytes chosen with `seed` (0: whole writes).
    pub fn new(client: C, server: S, clock: TestClock, seed: u64, max_chunk: usize) -> Self {
        Pair {
            client,
            server,
            clock,
            rng: Rng::new(seed),
            max_chunk,
            tamper: None,
            to_server: Link::default(),
            to_client: Link::default(),
            wire_log: [Vec::new(), Vec::new()],
        }
    }

    /// Sets the tamper hook (see [`Tamper`]).
    pub fn tamper(mut self, hook: impl FnMut(Dir, &mut Vec<u8>) + 'static) -> Self {
        self.tamper = Some(Box::new(hook));
        self
    }

    /// Whether both ends have closed.
    pub fn closed(&self) -> bool {
        self.to_server.writer_closed && self.to_client.writer_closed
    }

    /// Whether the client has closed.
    pub fn client_closed(&self) -> bool {
        self.to_server.writer_closed
    }

    /// Whether the server has closed.
    pub fn server_closed(&self) -> bool {
        self.to_client.writer_closed
    }

    /// One round: both ends run, a chunk moves each way, closes are delivered; when
    /// nothing moved, time jumps to the earliest deadline and its end times out. Returns
    /// false when nothing can happen any more (both closed, or no bytes and no deadline).
    pub fn step(&mut self) -> bool {
        let now = self.clock.now();
        let mut moved = false;
        // Run both ends and put their writes on the link.
        for dir in [Dir::ToServer, Dir::ToClient] {
            let mut tx = Vec::new();
            let (ran, link) = match dir {
                Dir::ToServer if !self.to_server.writer_closed => {
                    (self.client.drive(now, &mut tx), &mut self.to_server)
                }
                Dir::ToClient if !self.to_client.writer_closed => {
                    (self.server.drive(now, &mut tx), &mut self.to_client)
                }
                _ => continue,
            };
            if let Some(hook) = &mut self.tamper {
                if !tx.is_empty() {
                    hook(dir, &mut tx);
                }
            }
            if !tx.is_empty() {
                moved = true;
                self.wire_log[dir as usize].extend_from_slice(&tx);
                link.wire.extend(tx);
            }
            match ran {
                Ran::Idle(d) => link.writer_deadline = d,
                Ran::Closed => {
                    link.writer_closed = true;
                    link.writer_deadline = None;
                }
            }
        }
        // Deliver a chunk each way (to an end still open), or the close once the wire is
        // empty.
        for dir in [Dir::ToServer, Dir::ToClient] {
            let (link, reader_closed) = match dir {
                Dir::ToServer => (&mut self.to_server, self.to_client.writer_closed),
                Dir::ToClient => (&mut self.to_client, self.to_server.writer_closed),
            };
            if reader_closed {
                link.wire.clear();
                continue;
            }
            let reader: &mut dyn Endpoint = match dir {
                Dir::ToServer => &mut self.server,
                Dir::ToClient => &mut self.client,
            };
            if !link.wire.is_empty() {
                let n = match self.max_chunk {
                    0 => link.wire.len(),
                    m => (1 + self.rng.below(m as u64) as usize).min(link.wire.len()),
                };
                link.unread.extend(link.wire.drain(..n));
                moved = true;
            }
            let mut stalled = false;
            if !link.unread.is_empty() {
                let n = reader.receive(now, &link.unread);
                if n > 0 {
                    link.unread.drain(..n.min(link.unread.len()));
                    moved = true;
                } else {
                    stalled = true;
                }
            }
            // The close follows the last byte, or comes while the reader holds bytes back.
            if (link.unread.is_empty() || stalled)
                && link.wire.is_empty()
                && link.writer_closed
                && !link.eof_delivered
            {
                link.eof_delivered = true;
                reader.peer_closed(now);
                moved = true;
            }
        }
        if moved {
            return true;
        }
        // Nothing moved: jump to the earliest deadline.
        let next = [&self.to_server, &self.to_client]
            .iter()
            .filter(|l| !l.writer_closed)
            .filter_map(|l| l.writer_deadline)
            .min();
        let Some(at) = next else {
            return false;
        };
        self.clock.set_mono(at);
        let now = self.clock.now();
        if !self.to_server.writer_closed && self.to_server.writer_deadline.is_some_and(|d| d <= at)
        {
            self.client.timeout(now);
        }
        if !self.to_client.writer_closed && self.to_client.writer_deadline.is_some_and(|d| d <= at)
        {
            self.server.timeout(now);
        }
        true
    }

    /// Steps until nothing can happen any more; panics after a bounded number of steps.
    pub fn run(&mut self) {
        self.run_until(|_| false);
    }

    /// Steps until `done` holds or nothing can happen any more; returns whether `done`
    /// held. Panics after a bounded number of steps.
    pub fn run_until(&mut self, mut done: impl FnMut(&Self) -> bool) -> bool {
        for _ in 0..100_000 {
            if done(self) {
                return true;
            }
            if !self.step() {
                return done(self);
            }
        }
        panic!("pair did not settle");
    }
}

/// The SMTP client session with deliveries to make: the first is handed over with the new
/// session (as the delivery machine does), each next one after the previous one's result,
/// then QUIT.
pub struct SmtpClient {
    /// The session.
    pub s: crate::client::ClientSession,
    /// Deliveries not handed over yet.
    pub deliveries: VecDeque<crate::client::Delivery>,
    /// Every event.
    pub events: Vec<crate::client::Event>,
    /// The result of each delivery.
    pub outcomes: Vec<crate::client::Outcome>,
    /// Why the session failed, if it did.
    pub failed: Option<crate::client::ClientError>,
    /// Hand the recipients a delivery did not attempt (a server's recipient limit) over
    /// again as the next delivery, as the queue does.
    pub redeliver: bool,
    /// The client's writes before TLS, one entry per transmit.
    pub writes: Vec<Vec<u8>>,
    /// The delivery handed over last.
    last: Option<crate::client::Delivery>,
}

impl SmtpClient {
    /// A client session for `config` that makes `deliveries`.
    pub fn new(
        config: crate::client::ClientConfig,
        deliveries: Vec<crate::client::Delivery>,
        now: Now,
    ) -> SmtpClient {
        let mut c = SmtpClient {
            s: crate::client::ClientSession::new(Arc::new(config), now),
            deliveries: deliveries.into(),
            events: Vec::new(),
            outcomes: Vec::new(),
            failed: None,
            redeliver: false,
            writes: Vec::new(),
            last: None,
        };
        c.next(now);
        c
    }

    fn next(&mut self, now: Now) {
        use crate::client::Input;
        match self.deliveries.pop_front() {
            Some(d) => {
                self.last = Some(d.clone());
                self.s.handle(now, Input::Deliver(Box::new(d)))
            }
            None => self.s.handle(now, Input::Quit),
        }
        .ok();
    }

    /// With [`SmtpClient::redeliver`], queues the recipients `o` did not attempt.
    fn requeue(&mut self, o: &crate::client::Outcome) {
        let Some(last) = self.last.as_ref().filter(|_| self.redeliver) else {
            return;
        };
        let rest: Vec<_> = o
            .not_attempted()
            .filter_map(|i| last.recipients.get(i).cloned())
            .collect();
        if !rest.is_empty() {
            let mut d = last.clone();
            d.recipients = rest;
            self.deliveries.push_front(d);
        }
    }
}

impl Endpoint for SmtpClient {
    fn receive(&mut self, now: Now, data: &[u8]) -> usize {
        self.s
            .handle(now, crate::client::Input::Received(data))
            .unwrap_or(data.len())
    }

    fn peer_closed(&mut self, now: Now) {
        self.s.handle(now, crate::client::Input::PeerClosed).ok();
    }

    fn timeout(&mut self, now: Now) {
        self.s.handle(now, crate::client::Input::Timeout).ok();
    }

    fn drive(&mut self, now: Now, tx: &mut Vec<u8>) -> Ran {
        use crate::client::{Event, Output};
        for _ in 0..10_000 {
            let from = tx.len();
            match self.s.poll(now, tx) {
                Output::Transmit => {
                    if !self.s.is_tls() {
                        self.writes.push(tx[from..].to_vec());
                    }
                }
                Output::Event(e) => {
                    match &e {
                        Event::Done(o) => {
                            self.outcomes.push(o.clone());
                            self.requeue(o);
                            self.next(now);
                        }
                        Event::Failed(err) => self.failed = Some(err.clone()),
                        _ => {}
                    }
                    self.events.push(e);
                }
                Output::Idle { deadline } => return Ran::Idle(deadline),
                Output::Close => return Ran::Closed,
            }
        }
        panic!("client session did not go idle");
    }
}

/// Answers a server session's effects.
pub type SmtpWorld = Box<dyn FnMut(&crate::server::Effect) -> crate::server::Completion>;

/// The SMTP server session with a world that answers its effects.
pub struct SmtpServer {
    /// The session.
    pub s: crate::server::ServerSession,
    world: SmtpWorld,
    /// Every event.
    pub events: Vec<crate::server::Event>,
    /// Transactions the session asked to store.
    pub stored: Vec<crate::server::Transaction>,
    /// The session's error, if `handle` returned one.
    pub error: Option<String>,
    spools: std::collections::HashMap<crate::server::SpoolId, Vec<u8>>,
}

impl SmtpServer {
    /// A server session for `config` whose effects are all accepted (DNS from an empty
    /// zone, spools in memory, every store delivered) unless `world` answers them: it is
    /// asked first and may return `None` for the default.
    pub fn new(
        config: crate::server::ServerConfig,
        now: Now,
        world: Option<SmtpWorld>,
    ) -> SmtpServer {
        let peer = crate::server::Peer {
            ip: "192.0.2.10".parse().unwrap(),
            cid: 1,
        };
        SmtpServer {
            s: crate::server::ServerSession::new(Arc::new(config), peer, now).unwrap(),
            world: world.unwrap_or_else(|| Box::new(accept_all)),
            events: Vec::new(),
            stored: Vec::new(),
            error: None,
            spools: Default::default(),
        }
    }

    fn answer(&mut self, e: &crate::server::Effect) -> crate::server::Completion {
        use crate::server::{Completion, Effect, StoreOutcome};
        match e {
            Effect::Spool { spool, chunk, last } => {
                Completion::Spool(spool_in_memory(&mut self.spools, *spool, chunk, *last))
            }
            Effect::Store(t) => {
                let c = (self.world)(e);
                if matches!(
                    c,
                    Completion::Stored(StoreOutcome::Delivered | StoreOutcome::Partial { .. })
                ) {
                    self.stored.push((**t).clone());
                }
                c
            }
            _ => (self.world)(e),
        }
    }

    fn handle(&mut self, now: Now, input: crate::server::Input<'_>) -> usize {
        match self.s.handle(now, input) {
            Ok(n) => n,
            Err(e) => {
                self.error = Some(e.to_string());
                0
            }
        }
    }
}

/// Answers a server session's spool effect with files kept in `spools`: the chunk is
/// appended, and the whole file handed back with the last one.
pub fn spool_in_memory(
    spools: &mut std::collections::HashMap<crate::server::SpoolId, Vec<u8>>,
    spool: crate::server::SpoolId,
    chunk: &[u8],
    last: bool,
) -> crate::server::SpoolAnswer {
    use crate::server::{SpoolAnswer, SpooledBytes};
    let file = spools.entry(spool).or_default();
    file.extend_from_slice(chunk);
    match last {
        false => SpoolAnswer::Appended,
        true => SpoolAnswer::Complete(SpooledBytes::new(Arc::new(file.clone()))),
    }
}

/// The default SMTP world: everything accepted, no credentials, an empty DNS zone.
pub fn accept_all(e: &crate::server::Effect) -> crate::server::Completion {
    use crate::server::{
        Completion, CredentialsAnswer, Effect, PasswordCheck, SpoolAnswer, StoreOutcome, Verdict,
    };
    match e {
        Effect::CheckConnection { .. } | Effect::CheckSender { .. } => {
            Completion::Verdict(Verdict::Accept)
        }
        Effect::CheckRecipient { .. } => Completion::Verdict(Verdict::Accept),
        Effect::CheckPassword { .. } => Completion::Password(PasswordCheck::Invalid),
        Effect::LookupCredentials { .. } => Completion::Credentials(CredentialsAnswer::Unknown),
        Effect::Dns(lookups) => {
            let zone = crate::dns::StaticZone::new();
            Completion::Dns(lookups.iter().map(|l| zone.lookup(l)).collect())
        }
        Effect::Spool { .. } => Completion::Spool(SpoolAnswer::Failed("no spool".into())),
        Effect::Store(_) => Completion::Stored(StoreOutcome::Delivered),
    }
}

impl Endpoint for SmtpServer {
    fn receive(&mut self, now: Now, data: &[u8]) -> usize {
        self.handle(now, crate::server::Input::Received(data))
    }

    fn peer_closed(&mut self, now: Now) {
        self.handle(now, crate::server::Input::PeerClosed);
    }

    fn timeout(&mut self, now: Now) {
        self.handle(now, crate::server::Input::Timeout);
    }

    fn drive(&mut self, now: Now, tx: &mut Vec<u8>) -> Ran {
        use crate::server::{Input, Output};
        if self.error.is_some() {
            return Ran::Closed;
        }
        for _ in 0..10_000 {
            match self.s.poll(now, tx) {
                Output::Transmit => {}
                Output::Effect(t, e) => {
                    let c = self.answer(&e);
                    self.handle(now, Input::Completed(t, c));
                }
                Output::Event(e) => self.events.push(e),
                Output::Idle { deadline, .. } => return Ran::Idle(deadline),
                Output::Close => return Ran::Closed,
            }
        }
        panic!("server session did not go idle");
    }
}

/// The HTTPS fetch machine; its connect effect succeeds at once.
pub struct HttpFetch {
    /// The machine.
    pub f: crate::http::fetch::HttpsFetch,
}

impl Endpoint for HttpFetch {
    fn receive(&mut self, now: Now, data: &[u8]) -> usize {
        self.f
            .handle(now, crate::http::fetch::Input::Received(data))
    }

    fn peer_closed(&mut self, now: Now) {
        self.f.handle(now, crate::http::fetch::Input::Closed);
    }

    fn timeout(&mut self, now: Now) {
        self.f.handle(now, crate::http::fetch::Input::Timeout);
    }

    fn drive(&mut self, now: Now, tx: &mut Vec<u8>) -> Ran {
        use crate::http::fetch::{Completion, Input, Output};
        for _ in 0..10_000 {
            match self.f.poll(now, tx) {
                Output::Transmit => {}
                Output::Effect(t, _) => {
                    self.f
                        .handle(now, Input::Completed(t, Completion::Connected));
                }
                Output::Idle { deadline, .. } => return Ran::Idle(deadline),
                Output::Close | Output::Done => return Ran::Closed,
            }
        }
        panic!("fetch did not go idle");
    }
}

/// Answers an HTTP server session's requests.
pub type Route = Box<dyn FnMut(&crate::http::RequestHead, &[u8]) -> crate::http::Response>;

/// The HTTP server session with a route that answers its requests.
pub struct HttpServer {
    /// The session.
    pub s: crate::http::server::HttpServerSession,
    route: Route,
    /// The requests seen, in order.
    pub seen: Vec<crate::http::RequestHead>,
    /// Every event.
    pub events: Vec<crate::http::server::Event>,
}

impl HttpServer {
    /// A session for `config` answering with `route`.
    pub fn new(
        config: crate::http::server::ServerConfig,
        now: Now,
        route: impl FnMut(&crate::http::RequestHead, &[u8]) -> crate::http::Response + 'static,
    ) -> HttpServer {
        HttpServer {
            s: crate::http::server::HttpServerSession::new(Arc::new(config), now).unwrap(),
            route: Box::new(route),
            seen: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl Endpoint for HttpServer {
    fn receive(&mut self, now: Now, data: &[u8]) -> usize {
        self.s
            .handle(now, crate::http::server::Input::Received(data))
    }

    fn peer_closed(&mut self, now: Now) {
        self.s.handle(now, crate::http::server::Input::Closed);
    }

    fn timeout(&mut self, now: Now) {
        self.s.handle(now, crate::http::server::Input::Timeout);
    }

    fn drive(&mut self, now: Now, tx: &mut Vec<u8>) -> Ran {
        use crate::http::server::{Completion, Effect, Input, Output};
        for _ in 0..10_000 {
            match self.s.poll(now, tx) {
                Output::Transmit => {}
                Output::Effect(t, Effect::Request { head, body }) => {
                    let r = (self.route)(&head, &body);
                    self.seen.push(head);
                    self.s
                        .handle(now, Input::Completed(t, Completion::Response(r)));
                }
                Output::Event(e) => self.events.push(e),
                Output::Idle { deadline, .. } => return Ran::Idle(deadline),
                Output::Close => return Ran::Closed,
            }
        }
        panic!("http server session did not go idle");
    }
}
