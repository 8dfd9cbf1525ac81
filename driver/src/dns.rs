//! The DNS transport, written once for every runtime: core's sans-IO stub resolver
//! ([`rmox_core::dns::Resolver`]) as a [`Machine`] on the one driver loop ([`drive`]), over
//! the runtime's UDP sockets (binds, receives and sends are effects), with a TCP connection
//! of the loop per truncated answer and the machine's own deadlines as timers.
//!
//! Callers hold a [`DnsClient`] (cheap to clone, `Send`): tasks await
//! [`DnsClient::lookup_many`], blocking callers use [`DnsClient::lookup_many_blocking`]. All
//! of them share one machine, hence one cache. The loop ([`run_resolver`]) runs as one task
//! on whatever runtime hosts it and ends when every client is gone and no question is open.
//!
//! A runtime offers the sockets through [`UdpRuntime`], a separate method group next to
//! [`Runtime`]'s (bind, send_to, recv_from; and `connect_tcp` for the TCP fallback).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};
use rmox_core::delivery::ConnId;
use rmox_core::dns::{
    Lookup, LookupResult, QueryId, Resolver, ResolverConfig, ResolverInput, ResolverOutput,
};
use rmox_core::{Now, Rng, Token};

use crate::machine::{
    drive, Answer, Answers, Connecting, End, Eof, In, IoOp, Machine, Overflow, Step,
};
use crate::Runtime;

/// A boxed, not necessarily `Send` future (glommio's are not).
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A runtime's UDP socket.
pub trait UdpSocket: 'static {
    /// Sends one datagram to `to`.
    fn send_to<'a>(
        &'a self,
        buf: &'a [u8],
        to: SocketAddr,
    ) -> LocalBoxFuture<'a, io::Result<usize>>;
    /// Receives one datagram into `buf`: its length and sender.
    fn recv_from<'a>(
        &'a self,
        buf: &'a mut [u8],
    ) -> LocalBoxFuture<'a, io::Result<(usize, SocketAddr)>>;
}

/// The UDP method group of a runtime (and the TCP connect the DNS fallback needs).
pub trait UdpRuntime: Runtime {
    /// The runtime's UDP socket.
    type Udp: UdpSocket;
    /// The runtime's TCP stream, as `futures-io` traits.
    type TcpStream: AsyncRead + AsyncWrite + Unpin + 'static;
    /// Binds a UDP socket to `addr` (port 0: any free port). Called inside a task.
    fn bind_udp(&self, addr: SocketAddr) -> LocalBoxFuture<'static, io::Result<Self::Udp>>;
    /// Opens a TCP connection to `addr`. Called inside a task.
    fn connect_tcp(&self, addr: SocketAddr)
        -> LocalBoxFuture<'static, io::Result<Self::TcpStream>>;
}

/// One batch of questions and where its answers go (in the order asked).
struct Request {
    lookups: Vec<Lookup>,
    reply: async_channel::Sender<Vec<LookupResult>>,
}

/// The resolver loop's end of the request channel (see [`DnsClient::channel`]).
pub struct DnsRequests(async_channel::Receiver<Request>);

/// A handle on a running resolver loop.
#[derive(Clone)]
pub struct DnsClient(async_channel::Sender<Request>);

impl DnsClient {
    /// A client and the request end to give to [`run_resolver`].
    pub fn channel() -> (DnsClient, DnsRequests) {
        let (tx, rx) = async_channel::unbounded();
        (DnsClient(tx), DnsRequests(rx))
    }

    /// Answers every lookup, in order. The machine bounds the wait (its timeout and
    /// attempts); when the loop is gone every answer is a `TempFail`.
    pub async fn lookup_many(&self, lookups: &[Lookup]) -> Vec<LookupResult> {
        if lookups.is_empty() {
            return Vec::new();
        }
        let (tx, rx) = async_channel::bounded(1);
        let sent = self
            .0
            .send(Request {
                lookups: lookups.to_vec(),
                reply: tx,
            })
            .await;
        let answers = match sent {
            Ok(()) => rx.recv().await.ok(),
            Err(_) => None,
        };
        match answers {
            Some(a) if a.len() == lookups.len() => a,
            _ => lookups
                .iter()
                .map(|_| LookupResult::TempFail("resolver did not answer".into()))
                .collect(),
        }
    }

    /// [`DnsClient::lookup_many`] for blocking callers (never inside a runtime task).
    pub fn lookup_many_blocking(&self, lookups: &[Lookup]) -> Vec<LookupResult> {
        futures_lite::future::block_on(self.lookup_many(lookups))
    }
}

/// Size of the receive buffer: the largest UDP payload.
const RECV_BUF: usize = 65_536;

/// Pause after a failed receive, so a socket error does not spin the loop.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Unconsumed TCP input kept (the resolver takes every byte it is given; this only bounds a
/// peer that sends faster than the loop reads).
const MAX_TCP_UNCONSUMED: usize = 2 * 65_537;

/// Longest a TCP write may block.
const TCP_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// An IPv4-mapped IPv6 source as the IPv4 address the machine knows the server by.
fn canonical(from: SocketAddr) -> SocketAddr {
    match from {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => from,
        },
        v4 => v4,
    }
}

/// Answers still being collected for one request.
struct Batch {
    answers: Vec<Option<LookupResult>>,
    missing: usize,
    reply: async_channel::Sender<Vec<LookupResult>>,
}

/// A UDP socket of one address family.
enum Sock<U> {
    /// No server of this family.
    Unwanted,
    /// Being bound.
    Binding,
    /// Bound.
    Bound(Rc<U>),
    /// Binding failed (logged): questions to its servers time out to the next server.
    Failed,
}

/// A TCP connection of the resolver (one per truncated answer).
struct TcpConn {
    token: Token,
    connected: bool,
    /// Bytes to write once connected.
    pending: Vec<u8>,
}

/// Names an effect of [`DnsMachine`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DnsTok {
    /// The next request from the channel.
    Request,
    /// Binding the socket of a family (`true`: IPv6).
    Bind(bool),
    /// A receive on the socket of a family.
    Recv(bool),
    /// A datagram sent.
    Send,
    /// Answers handed to a caller.
    Reply,
}

/// The resolver's requests of the world: the request channel, UDP sockets, callers.
enum DnsEffect<U> {
    /// Wait for the next request (or the channel's end).
    NextRequest,
    /// Bind a UDP socket to this (unspecified) address.
    Bind(SocketAddr),
    /// Receive one datagram into the buffer; after a failed receive, `pause` first.
    Recv(Rc<U>, Vec<u8>, bool),
    /// Send one datagram.
    Send(Rc<U>, SocketAddr, Vec<u8>),
    /// Give these answers to a caller.
    Reply(async_channel::Sender<Vec<LookupResult>>, Vec<LookupResult>),
}

/// Answers to [`DnsEffect`]s.
enum DnsDone<U> {
    Request(Option<Request>),
    Bound(io::Result<U>),
    Received(io::Result<(usize, SocketAddr)>, Vec<u8>),
    Sent(io::Result<usize>),
    Replied,
}

/// Core's stub resolver ([`Resolver`]) as a [`Machine`] for the one driver loop
/// ([`drive`]): the request channel is an effect that is always pending (re-armed after each
/// request), so are the receives on the UDP sockets (one per address family the servers
/// use, bound as effects at the start); datagrams go out as effects; answers go back to
/// callers as effects answered at once; a truncated answer's TCP exchange is a connection
/// of the loop (the resolver takes its bytes in any chunking). It is done when the channel
/// has ended (every [`DnsClient`] dropped) and every request is answered.
struct DnsMachine<U: UdpSocket> {
    resolver: Resolver,
    v4: Sock<U>,
    v6: Sock<U>,
    /// Datagrams waiting for their family's socket to be bound.
    unsent: Vec<(SocketAddr, Vec<u8>)>,
    /// Steps to give the loop before polling the resolver.
    out: VecDeque<Step<DnsMachine<U>>>,
    /// Bytes to transmit on a connection that became ready.
    transmit: VecDeque<(ConnId, Vec<u8>)>,
    tcp: HashMap<ConnId, TcpConn>,
    batches: HashMap<u64, Batch>,
    next_batch: u64,
    next_query: u64,
    waiting: HashMap<QueryId, (u64, usize)>,
    /// The request channel is still open.
    open: bool,
}

impl<U: UdpSocket> DnsMachine<U> {
    fn new(config: ResolverConfig, seed: u64) -> DnsMachine<U> {
        let mut out = VecDeque::new();
        out.push_back(Step::Effect(DnsTok::Request, DnsEffect::NextRequest));
        let mut family = |wanted: bool, v6: bool| {
            if !wanted {
                return Sock::Unwanted;
            }
            let bind = if v6 {
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))
            } else {
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))
            };
            out.push_back(Step::Effect(DnsTok::Bind(v6), DnsEffect::Bind(bind)));
            Sock::Binding
        };
        let v4 = family(config.servers.iter().any(|s| s.is_ipv4()), false);
        let v6 = family(config.servers.iter().any(|s| s.is_ipv6()), true);
        DnsMachine {
            resolver: Resolver::new(config, Rng::new(seed)),
            v4,
            v6,
            unsent: Vec::new(),
            out,
            transmit: VecDeque::new(),
            tcp: HashMap::new(),
            batches: HashMap::new(),
            next_batch: 0,
            next_query: 0,
            waiting: HashMap::new(),
            open: true,
        }
    }

    fn sock(&mut self, v6: bool) -> &mut Sock<U> {
        if v6 {
            &mut self.v6
        } else {
            &mut self.v4
        }
    }

    /// The step that sends `bytes` to `server`, or `None` (queued until the socket is
    /// bound, or dropped without a socket: the question times out).
    fn send(&mut self, server: SocketAddr, bytes: Vec<u8>) -> Option<Step<DnsMachine<U>>> {
        match self.sock(server.is_ipv6()) {
            Sock::Bound(s) => Some(Step::Effect(
                DnsTok::Send,
                DnsEffect::Send(Rc::clone(s), server, bytes),
            )),
            Sock::Binding => {
                self.unsent.push((server, bytes));
                None
            }
            Sock::Unwanted | Sock::Failed => {
                tracing::debug!(%server, "dns: no socket for this family");
                None
            }
        }
    }

    /// Records an answer; the step that hands a completed request's answers back.
    fn answered(&mut self, id: QueryId, result: LookupResult) -> Option<Step<DnsMachine<U>>> {
        let (b, i) = self.waiting.remove(&id)?;
        let batch = self.batches.get_mut(&b)?;
        if let Some(slot) = batch.answers.get_mut(i) {
            if slot.is_none() {
                batch.missing = batch.missing.saturating_sub(1);
            }
            *slot = Some(result);
        }
        if batch.missing > 0 {
            return None;
        }
        let batch = self.batches.remove(&b)?;
        let answers = batch
            .answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|| LookupResult::TempFail("no answer".into())))
            .collect();
        Some(Step::Effect(
            DnsTok::Reply,
            DnsEffect::Reply(batch.reply, answers),
        ))
    }

    /// A new request: its questions go to the resolver, and the channel is waited on again.
    fn request(&mut self, now: Now, req: Request) {
        let b = self.next_batch;
        self.next_batch += 1;
        let n = req.lookups.len();
        if n == 0 {
            self.out.push_back(Step::Effect(
                DnsTok::Reply,
                DnsEffect::Reply(req.reply, Vec::new()),
            ));
        } else {
            self.batches.insert(
                b,
                Batch {
                    answers: vec![None; n],
                    missing: n,
                    reply: req.reply,
                },
            );
            for (i, l) in req.lookups.into_iter().enumerate() {
                // The id is the token the answer comes back with.
                let id = QueryId(self.next_query);
                self.next_query += 1;
                self.waiting.insert(id, (b, i));
                self.resolver.handle(now, ResolverInput::Query(id, l));
            }
        }
        self.out
            .push_back(Step::Effect(DnsTok::Request, DnsEffect::NextRequest));
    }

    /// A TCP connection ended before its answer: the resolver is told.
    fn tcp_failed(&mut self, now: Now, id: ConnId) {
        if let Some(c) = self.tcp.remove(&id) {
            self.resolver.handle(now, ResolverInput::TcpFailed(c.token));
        }
    }
}

impl<U: UdpSocket> Machine for DnsMachine<U> {
    type Token = DnsTok;
    type Effect = DnsEffect<U>;
    type Completion = DnsDone<U>;
    type Event = std::convert::Infallible;
    type Dial = SocketAddr;
    type Outcome = ();
    type Error = std::convert::Infallible;

    const FIRST_READ: usize = 2048;
    const MAX_UNCONSUMED: usize = MAX_TCP_UNCONSUMED;
    const OVERFLOW: Overflow = Overflow::Drop;
    const EOF: Eof = Eof::Drop;
    const WRITE_TIMEOUT: Option<Duration> = Some(TCP_WRITE_TIMEOUT);

    fn poll(&mut self, now: Now, tx: &mut Vec<u8>) -> Step<Self> {
        loop {
            if let Some((id, bytes)) = self.transmit.pop_front() {
                tx.extend_from_slice(&bytes);
                return Step::Transmit(id);
            }
            if let Some(s) = self.out.pop_front() {
                return s;
            }
            match self.resolver.poll(now) {
                ResolverOutput::SendUdp { server, bytes } => {
                    if let Some(s) = self.send(server, bytes) {
                        return s;
                    }
                }
                ResolverOutput::SendTcp {
                    server,
                    conn,
                    bytes,
                } => {
                    let id = ConnId(conn.0);
                    match self.tcp.get_mut(&id) {
                        Some(c) if c.connected => {
                            tx.extend_from_slice(&bytes);
                            return Step::Transmit(id);
                        }
                        Some(c) => c.pending.extend_from_slice(&bytes),
                        None => {
                            self.tcp.insert(
                                id,
                                TcpConn {
                                    token: conn,
                                    connected: false,
                                    pending: bytes,
                                },
                            );
                            return Step::Connect(id, server);
                        }
                    }
                }
                ResolverOutput::CloseTcp { conn } => {
                    let id = ConnId(conn.0);
                    self.tcp.remove(&id);
                    return Step::Close(id);
                }
                ResolverOutput::Answer(id, result) => {
                    if let Some(s) = self.answered(id, result) {
                        return s;
                    }
                }
                ResolverOutput::Idle { deadline, .. } => {
                    if !self.open && self.batches.is_empty() {
                        return Step::Done;
                    }
                    return Step::Idle(deadline);
                }
            }
        }
    }

    fn handle(&mut self, now: Now, input: In<'_, Self>) -> Result<usize, Self::Error> {
        match input {
            In::Received(id, bytes) => {
                if let Some(c) = self.tcp.get(&id) {
                    let conn = c.token;
                    self.resolver
                        .handle(now, ResolverInput::Tcp { conn, bytes });
                }
                return Ok(bytes.len());
            }
            In::Closed(id) | In::Overflow(id) => self.tcp_failed(now, id),
            In::Failed(id, op, e) => {
                tracing::debug!(error = %e, ?op, "dns: tcp exchange failed");
                if op != IoOp::Flush {
                    self.tcp_failed(now, id);
                }
            }
            In::Connected(id, _, Ok(())) => {
                if let Some(c) = self.tcp.get_mut(&id) {
                    c.connected = true;
                    let bytes = std::mem::take(&mut c.pending);
                    if !bytes.is_empty() {
                        self.transmit.push_back((id, bytes));
                    }
                }
            }
            In::Connected(id, server, Err(e)) => {
                tracing::debug!(error = %e, %server, "dns: tcp connect failed");
                self.tcp_failed(now, id);
            }
            In::Completed(tok, done) => match (tok, done) {
                (_, DnsDone::Request(Some(req))) => self.request(now, req),
                (_, DnsDone::Request(None)) => self.open = false,
                (DnsTok::Bind(v6), DnsDone::Bound(Ok(sock))) => {
                    let sock = Rc::new(sock);
                    *self.sock(v6) = Sock::Bound(Rc::clone(&sock));
                    self.out.push_back(Step::Effect(
                        DnsTok::Recv(v6),
                        DnsEffect::Recv(sock, vec![0u8; RECV_BUF], false),
                    ));
                    let (mine, other): (Vec<_>, Vec<_>) = std::mem::take(&mut self.unsent)
                        .into_iter()
                        .partition(|(server, _)| server.is_ipv6() == v6);
                    self.unsent = other;
                    for (server, bytes) in mine {
                        if let Some(s) = self.send(server, bytes) {
                            self.out.push_back(s);
                        }
                    }
                }
                (DnsTok::Bind(v6), DnsDone::Bound(Err(e))) => {
                    tracing::error!(error = %e, ipv6 = v6, "dns: cannot bind UDP socket");
                    *self.sock(v6) = Sock::Failed;
                    self.unsent.retain(|(server, _)| server.is_ipv6() != v6);
                }
                (DnsTok::Recv(v6), DnsDone::Received(r, buf)) => {
                    let failed = match r {
                        Ok((n, from)) => {
                            if let Some(d) = buf.get(..n) {
                                self.resolver.handle(
                                    now,
                                    ResolverInput::Udp {
                                        from: canonical(from),
                                        bytes: d,
                                    },
                                );
                            }
                            false
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "dns: udp receive failed");
                            true
                        }
                    };
                    if let Sock::Bound(s) = self.sock(v6) {
                        let s = Rc::clone(s);
                        self.out.push_back(Step::Effect(
                            DnsTok::Recv(v6),
                            DnsEffect::Recv(s, buf, failed),
                        ));
                    }
                }
                (_, DnsDone::Sent(Err(e))) => {
                    tracing::debug!(error = %e, "dns: udp send failed");
                }
                _ => {}
            },
            In::Timeout => self.resolver.handle(now, ResolverInput::Timeout),
            In::Shutdown => {}
        }
        Ok(0)
    }

    fn end(self, how: End) {
        if how == End::Stalled {
            // The request channel and the receives are always pending: never expected.
            tracing::error!("dns: resolver loop stalled");
        }
    }
}

/// Answers a [`DnsMachine`]'s effects on runtime `R` and opens its TCP connections.
struct DnsAnswers<R: UdpRuntime> {
    rt: R,
    requests: async_channel::Receiver<Request>,
}

impl<R: UdpRuntime> Answers<DnsMachine<R::Udp>, R::TcpStream> for DnsAnswers<R> {
    fn answer(&self, effect: DnsEffect<R::Udp>) -> Answer<DnsDone<R::Udp>> {
        let later = |answer: LocalBoxFuture<'static, DnsDone<R::Udp>>| Answer::Later {
            answer,
            hold_input: false,
        };
        match effect {
            DnsEffect::NextRequest => {
                let rx = self.requests.clone();
                later(Box::pin(
                    async move { DnsDone::Request(rx.recv().await.ok()) },
                ))
            }
            DnsEffect::Bind(addr) => {
                let f = self.rt.bind_udp(addr);
                later(Box::pin(async move { DnsDone::Bound(f.await) }))
            }
            DnsEffect::Recv(sock, mut buf, pause) => {
                let rt = self.rt.clone();
                later(Box::pin(async move {
                    if pause {
                        rt.sleep_until(Instant::now() + RECV_ERROR_PAUSE).await;
                    }
                    let r = sock.recv_from(&mut buf).await;
                    DnsDone::Received(r, buf)
                }))
            }
            DnsEffect::Send(sock, to, bytes) => later(Box::pin(async move {
                DnsDone::Sent(sock.send_to(&bytes, to).await)
            })),
            DnsEffect::Reply(tx, answers) => {
                // The asker may have given up: nothing to do then.
                let _ = tx.try_send(answers);
                Answer::Now(DnsDone::Replied)
            }
        }
    }

    fn connect(&self, server: &SocketAddr) -> Connecting<R::TcpStream> {
        self.rt.connect_tcp(*server)
    }

    fn event(&self, event: std::convert::Infallible) {
        match event {}
    }
}

/// The resolver loop: runs `config`'s machine over `rt`'s sockets, on the one driver loop
/// ([`drive`]), until every [`DnsClient`] is dropped and every open question is answered.
/// One UDP socket per address family the servers use; a socket that cannot be bound is
/// logged, and questions to its servers time out to the next server (or a `TempFail`).
pub async fn run_resolver<R: UdpRuntime>(
    rt: R,
    config: ResolverConfig,
    seed: u64,
    requests: DnsRequests,
) {
    let machine = DnsMachine::<R::Udp>::new(config, seed);
    let answers = DnsAnswers {
        rt: rt.clone(),
        requests: requests.0,
    };
    let r = drive(&rt, machine, &answers, None::<(ConnId, R::TcpStream)>, None).await;
    match r {
        Ok(()) => {}
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply seen through an IPv6 socket as `[::ffff:a.b.c.d]` must still match the IPv4
    /// server the machine asked (the old transport bound one `[::]` socket when the first
    /// server was IPv6 and then dropped every answer from its IPv4 servers).
    #[test]
    fn mapped_sources_are_ipv4() {
        let v4: SocketAddr = "127.53.0.2:53".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.53.0.2]:53".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::53]:53".parse().unwrap();
        assert_eq!(canonical(mapped), v4);
        assert_eq!(canonical(v4), v4);
        assert_eq!(canonical(v6), v6);
    }
}
