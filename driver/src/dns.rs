//! The DNS transport, written once for every runtime: an async loop that drives core's
//! sans-IO stub resolver ([`rmox_core::dns::Resolver`]) over the runtime's UDP sockets, with
//! a TCP connection per truncated answer and the machine's own deadlines as timers.
//!
//! Callers hold a [`DnsClient`] (cheap to clone, `Send`): tasks await
//! [`DnsClient::lookup_many`], blocking callers use [`DnsClient::lookup_many_blocking`]. All
//! of them share one machine, hence one cache. The loop ([`run_resolver`]) runs as one task
//! on whatever runtime hosts it and ends when every client is gone and no question is open.
//!
//! A runtime offers the sockets through [`UdpRuntime`], a separate method group next to
//! [`Runtime`]'s (bind, send_to, recv_from; and `connect_tcp` for the TCP fallback).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rmox_core::dns::{
    Lookup, LookupResult, QueryId, Resolver, ResolverConfig, ResolverInput, ResolverOutput,
};
use rmox_core::{Rng, Token};

use crate::{now, Runtime};

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

/// Largest TCP answer read (the 2-byte length prefix allows 65,535 bytes).
const MAX_TCP_ANSWER: usize = 65_535;

type Received = (io::Result<(usize, SocketAddr)>, Vec<u8>);

/// One receive on `sock`, owning its buffer, so it can wait across loop turns (a receive is
/// never cancelled while a datagram may be in flight to it).
fn receive<R: UdpRuntime>(
    rt: &R,
    sock: Rc<R::Udp>,
    mut buf: Vec<u8>,
    pause: bool,
) -> LocalBoxFuture<'static, Received> {
    let rt = rt.clone();
    Box::pin(async move {
        if pause {
            rt.sleep_until(Instant::now() + RECV_ERROR_PAUSE).await;
        }
        let r = sock.recv_from(&mut buf).await;
        (r, buf)
    })
}

/// Connects to `server`, writes the length-prefixed question and reads one length-prefixed
/// answer (returned with its prefix, as the machine takes it).
async fn tcp_exchange<R: UdpRuntime>(
    rt: R,
    server: SocketAddr,
    bytes: Vec<u8>,
) -> io::Result<Vec<u8>> {
    let mut s = rt.connect_tcp(server).await?;
    s.write_all(&bytes).await?;
    s.flush().await?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await?;
    let n = usize::from(u16::from_be_bytes(len)).min(MAX_TCP_ANSWER);
    let mut out = vec![0u8; n + 2];
    out[..2].copy_from_slice(&len);
    s.read_exact(&mut out[2..]).await?;
    Ok(out)
}

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

/// What ended one wait of the loop.
enum Woke {
    Udp(usize, Received),
    Tcp(usize, io::Result<Vec<u8>>),
    Request(Option<Request>),
    Timer,
}

/// The resolver loop: runs `config`'s machine over `rt`'s sockets until every
/// [`DnsClient`] is dropped and every open question is answered. One UDP socket per
/// address family the servers use; a socket that cannot be bound is logged, and questions
/// to its servers time out to the next server (or a `TempFail`).
pub async fn run_resolver<R: UdpRuntime>(
    rt: R,
    config: ResolverConfig,
    seed: u64,
    requests: DnsRequests,
) {
    let requests = requests.0;
    let mut machine = Resolver::new(config.clone(), Rng::new(seed));
    let mut v4: Option<Rc<R::Udp>> = None;
    let mut v6: Option<Rc<R::Udp>> = None;
    let mut recvs: Vec<LocalBoxFuture<'static, Received>> = Vec::new();
    let mut socks: Vec<Rc<R::Udp>> = Vec::new();
    let families = [
        (
            config.servers.iter().any(|s| s.is_ipv4()),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        ),
        (
            config.servers.iter().any(|s| s.is_ipv6()),
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        ),
    ];
    for (wanted, bind) in families {
        if !wanted {
            continue;
        }
        match rt.bind_udp(bind).await {
            Ok(s) => {
                let s = Rc::new(s);
                let slot = Some(Rc::clone(&s));
                if bind.is_ipv4() {
                    v4 = slot;
                } else {
                    v6 = slot;
                }
                recvs.push(receive(&rt, Rc::clone(&s), vec![0u8; RECV_BUF], false));
                socks.push(s);
            }
            Err(e) => tracing::error!(error = %e, %bind, "dns: cannot bind UDP socket"),
        }
    }
    let mut batches: HashMap<u64, Batch> = HashMap::new();
    let mut next_batch = 0u64;
    let mut next_query = 0u64;
    let mut waiting: HashMap<QueryId, (u64, usize)> = HashMap::new();
    let mut tcp: Vec<(Token, LocalBoxFuture<'static, io::Result<Vec<u8>>>)> = Vec::new();
    let mut open = true;
    loop {
        // Drain the machine.
        let deadline = loop {
            match machine.poll(now()) {
                ResolverOutput::SendUdp { server, bytes } => {
                    let sock = if server.is_ipv4() { &v4 } else { &v6 };
                    match sock {
                        Some(s) => {
                            if let Err(e) = s.send_to(&bytes, server).await {
                                tracing::debug!(error = %e, %server, "dns: udp send failed");
                            }
                        }
                        None => tracing::debug!(%server, "dns: no socket for this family"),
                    }
                }
                ResolverOutput::SendTcp {
                    server,
                    conn,
                    bytes,
                } => {
                    tcp.push((conn, Box::pin(tcp_exchange(rt.clone(), server, bytes))));
                }
                ResolverOutput::CloseTcp { conn } => tcp.retain(|(c, _)| *c != conn),
                ResolverOutput::Answer(id, result) => {
                    let Some((b, i)) = waiting.remove(&id) else {
                        continue;
                    };
                    let done = match batches.get_mut(&b) {
                        Some(batch) => {
                            if let Some(slot) = batch.answers.get_mut(i) {
                                if slot.is_none() {
                                    batch.missing = batch.missing.saturating_sub(1);
                                }
                                *slot = Some(result);
                            }
                            batch.missing == 0
                        }
                        None => false,
                    };
                    if done {
                        if let Some(batch) = batches.remove(&b) {
                            let answers = batch
                                .answers
                                .into_iter()
                                .map(|a| {
                                    a.unwrap_or_else(|| LookupResult::TempFail("no answer".into()))
                                })
                                .collect();
                            // The asker may have given up: nothing to do then.
                            let _ = batch.reply.try_send(answers);
                        }
                    }
                }
                ResolverOutput::Idle { deadline, .. } => break deadline,
            }
        };
        if !open && batches.is_empty() {
            return;
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                machine.handle(now(), ResolverInput::Timeout);
                continue;
            }
        }
        let woke = {
            let mut next = pin!(async {
                if open {
                    requests.recv().await.ok()
                } else {
                    futures_lite::future::pending().await
                }
            });
            let mut timer = deadline.map(|d| rt.sleep_until(d));
            futures_lite::future::poll_fn(|cx| {
                for (i, f) in recvs.iter_mut().enumerate() {
                    if let Poll::Ready(r) = f.as_mut().poll(cx) {
                        return Poll::Ready(Woke::Udp(i, r));
                    }
                }
                for (i, (_, f)) in tcp.iter_mut().enumerate() {
                    if let Poll::Ready(r) = f.as_mut().poll(cx) {
                        return Poll::Ready(Woke::Tcp(i, r));
                    }
                }
                if let Poll::Ready(r) = next.as_mut().poll(cx) {
                    return Poll::Ready(Woke::Request(r));
                }
                if let Some(t) = timer.as_mut() {
                    if t.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Woke::Timer);
                    }
                }
                Poll::Pending
            })
            .await
        };
        match woke {
            Woke::Udp(i, (r, buf)) => {
                let failed = match r {
                    Ok((n, from)) => {
                        if let Some(d) = buf.get(..n) {
                            machine.handle(
                                now(),
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
                if let (Some(f), Some(s)) = (recvs.get_mut(i), socks.get(i)) {
                    *f = receive(&rt, Rc::clone(s), buf, failed);
                }
            }
            Woke::Tcp(i, r) => {
                let (conn, _) = tcp.swap_remove(i);
                match r {
                    Ok(answer) => machine.handle(
                        now(),
                        ResolverInput::Tcp {
                            conn,
                            bytes: &answer,
                        },
                    ),
                    Err(e) => {
                        tracing::debug!(error = %e, "dns: tcp exchange failed");
                        machine.handle(now(), ResolverInput::TcpFailed(conn));
                    }
                }
            }
            Woke::Request(None) => open = false,
            Woke::Request(Some(req)) => {
                let b = next_batch;
                next_batch += 1;
                let n = req.lookups.len();
                batches.insert(
                    b,
                    Batch {
                        answers: vec![None; n],
                        missing: n,
                        reply: req.reply,
                    },
                );
                if n == 0 {
                    if let Some(batch) = batches.remove(&b) {
                        let _ = batch.reply.try_send(Vec::new());
                    }
                }
                for (i, l) in req.lookups.into_iter().enumerate() {
                    // The id is the token the answer comes back with.
                    let id = QueryId(next_query);
                    next_query += 1;
                    waiting.insert(id, (b, i));
                    machine.handle(now(), ResolverInput::Query(id, l));
                }
            }
            Woke::Timer => machine.handle(now(), ResolverInput::Timeout),
        }
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
