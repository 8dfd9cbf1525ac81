//! Scenarios for the DNS loop ([`crate::dns`]) that every runtime runs (feature `testing`):
//! an in-process DNS responder on loopback (UDP, and TCP on the same port) that answers,
//! truncates, stays silent or sets the AD bit, and checks against a real resolver (the
//! harness's Unbound). Every wait is bounded: the machine's timeouts end every question, and
//! the responders stop after [`RESPONDER_LIFE`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a failure is a test failure

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmox_core::dns::{Lookup, LookupResult, Record, RecordType, ResolverConfig};

use crate::dns::{run_resolver, DnsClient, LocalBoxFuture, UdpRuntime};

/// Runs a future to completion on a runtime (each runtime's test supplies its own).
pub type BlockOn = fn(LocalBoxFuture<'static, ()>);

/// Longest a responder thread lives.
pub const RESPONDER_LIFE: Duration = Duration::from_secs(30);

/// The address every answering responder gives for any A question.
pub const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// How a responder answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// A full answer over UDP; `ad` sets the AD bit.
    Answer {
        /// Set the AD (authentic data) bit.
        ad: bool,
    },
    /// Over UDP an empty answer with TC set; over TCP the full answer.
    Truncate,
    /// Never answers.
    Silent,
    /// Holds the questions until this many have arrived, then answers them all: only
    /// questions sent together (not one after the other's answer) get answers.
    Gather(usize),
}

/// A DNS server on loopback, answering every question as its [`Behaviour`] says.
pub struct Responder {
    /// Its UDP (and TCP) address.
    pub addr: SocketAddr,
    /// Questions received over UDP.
    pub udp_queries: Arc<AtomicUsize>,
    /// Questions received over TCP.
    pub tcp_queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The question section's end (offset after QTYPE and QCLASS) in a query, if well formed.
fn question_end(q: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            return Some(i + 1 + 4).filter(|&e| e <= q.len());
        }
        i += 1 + len;
    }
}

/// The response to `query`: no answer record when `truncated`, else one A record.
pub fn response(query: &[u8], truncated: bool, ad: bool) -> Option<Vec<u8>> {
    let end = question_end(query)?;
    let mut r = Vec::with_capacity(end + 16);
    r.extend_from_slice(&query[..2]);
    // QR, opcode QUERY, TC as asked, RD copied; RA, AD as asked, NOERROR.
    r.push(0x80 | if truncated { 0x02 } else { 0 } | (query[2] & 0x01));
    r.push(0x80 | if ad { 0x20 } else { 0 });
    r.extend_from_slice(&[0, 1, 0, if truncated { 0 } else { 1 }, 0, 0, 0, 0]);
    r.extend_from_slice(&query[12..end]);
    if !truncated {
        // Name (pointer to the question), A, IN, TTL 60, 4 bytes of address.
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&ANSWER.octets());
    }
    Some(r)
}

/// Starts a responder on a free loopback port (UDP, and TCP on the same port).
pub fn responder(behaviour: Behaviour) -> Responder {
    // The UDP port must also be free for TCP: try a few.
    let (udp, tcp) = (0..50)
        .find_map(|_| {
            let u = UdpSocket::bind("127.0.0.1:0").ok()?;
            let t = TcpListener::bind(u.local_addr().ok()?).ok()?;
            Some((u, t))
        })
        .expect("a loopback port free for UDP and TCP");
    let addr = udp.local_addr().unwrap();
    let udp_queries = Arc::new(AtomicUsize::new(0));
    let tcp_queries = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    {
        let (count, stop) = (Arc::clone(&udp_queries), Arc::clone(&stop));
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut held: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
            while !stop.load(Ordering::SeqCst) && started.elapsed() < RESPONDER_LIFE {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let reply = match behaviour {
                    Behaviour::Answer { ad } => response(&buf[..n], false, ad),
                    Behaviour::Truncate => response(&buf[..n], true, false),
                    Behaviour::Silent => None,
                    Behaviour::Gather(want) => {
                        held.push((buf[..n].to_vec(), from));
                        if held.len() >= want {
                            for (q, from) in held.drain(..) {
                                if let Some(r) = response(&q, false, false) {
                                    let _ = udp.send_to(&r, from);
                                }
                            }
                        }
                        None
                    }
                };
                if let Some(r) = reply {
                    let _ = udp.send_to(&r, from);
                }
            }
        });
    }
    {
        let (count, stop) = (Arc::clone(&tcp_queries), Arc::clone(&stop));
        tcp.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) && started.elapsed() < RESPONDER_LIFE {
                let Ok((mut s, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if s.read_exact(&mut q).is_err() {
                    continue;
                }
                count.fetch_add(1, Ordering::SeqCst);
                if matches!(behaviour, Behaviour::Silent | Behaviour::Gather(_)) {
                    continue;
                }
                if let Some(r) = response(&q, false, false) {
                    let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&r);
                    let _ = s.write_all(&framed);
                }
            }
        });
    }
    Responder {
        addr,
        udp_queries,
        tcp_queries,
        stop,
    }
}

/// A resolver config for tests: short timeout, one round over the servers.
pub fn config(servers: Vec<SocketAddr>, trust_ad: bool) -> ResolverConfig {
    ResolverConfig {
        servers,
        trust_ad,
        timeout: Duration::from_millis(500),
        attempts: 1,
        ..ResolverConfig::default()
    }
}

/// An A question.
pub fn a(name: &str) -> Lookup {
    Lookup {
        name: name.into(),
        rtype: RecordType::A,
    }
}

/// Runs the loop on `rt` while `ask` uses a client; returns what `ask` returned once the
/// loop has ended too (it ends when the client is dropped).
pub fn with_loop<R, F, T>(
    rt: R,
    block_on: BlockOn,
    config: ResolverConfig,
    ask: impl FnOnce(DnsClient) -> F + 'static,
) -> T
where
    R: UdpRuntime,
    F: std::future::Future<Output = T> + 'static,
    T: 'static,
{
    let out: std::rc::Rc<std::cell::RefCell<Option<T>>> = Default::default();
    let slot = std::rc::Rc::clone(&out);
    block_on(Box::pin(async move {
        let (client, requests) = DnsClient::channel();
        let run = run_resolver(rt, config, 7, requests);
        let asked = ask(client);
        let ((), t) = futures_lite::future::zip(run, asked).await;
        *slot.borrow_mut() = Some(t);
    }));
    let t = out.borrow_mut().take();
    t.expect("the loop ended and the asker answered")
}

fn is_answer(r: &LookupResult, authentic: bool) -> bool {
    matches!(r, LookupResult::Records { records, authentic: a }
        if records == &[Record::A(ANSWER)] && *a == authentic)
}

/// An answer over UDP; a second batch asking the same name is answered from the machine's
/// cache (no second datagram); a batch of two distinct names gets both answers in order.
pub fn answers_and_caches<R: UdpRuntime>(rt: R, block_on: BlockOn) {
    let server = responder(Behaviour::Answer { ad: false });
    let (first, second, both) = with_loop(
        rt,
        block_on,
        config(vec![server.addr], false),
        |c| async move {
            let first = c.lookup_many(&[a("one.test")]).await;
            let second = c.lookup_many(&[a("one.test")]).await;
            let both = c.lookup_many(&[a("two.test"), a("three.test")]).await;
            (first, second, both)
        },
    );
    assert!(is_answer(&first[0], false), "{first:?}");
    assert!(is_answer(&second[0], false), "{second:?}");
    assert_eq!(both.len(), 2);
    assert!(both.iter().all(|r| is_answer(r, false)), "{both:?}");
    assert_eq!(
        server.udp_queries.load(Ordering::SeqCst),
        3,
        "the repeat came from the cache"
    );
}

/// A caller that gives up on its request (drops the future after sending it) does not stop
/// the loop: its answer has nowhere to go and is dropped, the next caller is answered, and
/// the loop still ends when the last client is dropped (`with_loop` returns).
pub fn abandoned_request_does_not_stop_the_loop<R: UdpRuntime>(rt: R, block_on: BlockOn) {
    let server = responder(Behaviour::Answer { ad: false });
    let got = with_loop(
        rt,
        block_on,
        config(vec![server.addr], false),
        |c| async move {
            // Sent, then dropped before any answer can come.
            let first = futures_lite::future::poll_once(c.lookup_many(&[a("gone.test")])).await;
            assert!(
                first.is_none(),
                "answered without the loop running: {first:?}"
            );
            c.lookup_many(&[a("kept.test")]).await
        },
    );
    assert!(is_answer(&got[0], false), "{got:?}");
    assert_eq!(
        server.udp_queries.load(Ordering::SeqCst),
        2,
        "both were asked"
    );
}

/// A truncated UDP answer is asked again over TCP, whose full answer is returned.
pub fn truncated_answer_retried_over_tcp<R: UdpRuntime>(rt: R, block_on: BlockOn) {
    let server = responder(Behaviour::Truncate);
    let got = with_loop(
        rt,
        block_on,
        config(vec![server.addr], false),
        |c| async move { c.lookup_many(&[a("big.test")]).await },
    );
    assert!(is_answer(&got[0], false), "{got:?}");
    assert_eq!(server.udp_queries.load(Ordering::SeqCst), 1);
    assert_eq!(server.tcp_queries.load(Ordering::SeqCst), 1);
}

/// A server that never answers: after the timeout the question goes to the next server.
/// With only silent servers the answer is a temporary failure.
pub fn timeout_moves_to_next_server<R: UdpRuntime>(rt: R, block_on: BlockOn) {
    let silent = responder(Behaviour::Silent);
    let good = responder(Behaviour::Answer { ad: false });
    let rt2 = rt.clone();
    let got = with_loop(
        rt,
        block_on,
        config(vec![silent.addr, good.addr], false),
        |c| async move { c.lookup_many(&[a("slow.test")]).await },
    );
    assert!(is_answer(&got[0], false), "{got:?}");
    assert_eq!(silent.udp_queries.load(Ordering::SeqCst), 1);
    assert_eq!(good.udp_queries.load(Ordering::SeqCst), 1);

    let got = with_loop(
        rt2,
        block_on,
        config(vec![silent.addr], false),
        |c| async move { c.lookup_many(&[a("nobody.test")]).await },
    );
    assert!(matches!(got[0], LookupResult::TempFail(_)), "{got:?}");
}

/// The AD bit counts only from a server the config trusts.
pub fn ad_bit_only_from_trusted<R: UdpRuntime>(rt: R, block_on: BlockOn) {
    let server = responder(Behaviour::Answer { ad: true });
    let rt2 = rt.clone();
    let trusted = with_loop(
        rt,
        block_on,
        config(vec![server.addr], true),
        |c| async move { c.lookup_many(&[a("signed.test")]).await },
    );
    assert!(is_answer(&trusted[0], true), "{trusted:?}");
    let untrusted = with_loop(
        rt2,
        block_on,
        config(vec![server.addr], false),
        |c| async move { c.lookup_many(&[a("signed.test")]).await },
    );
    assert!(is_answer(&untrusted[0], false), "{untrusted:?}");
}

/// Against the harness's validating resolver at `resolver` (trusted: loopback): an address
/// in a signed zone (authentic), an MX in an unsigned one (not), a DNSSEC-validated TLSA
/// (authentic), a bogus zone (temporary failure), a missing
/// name, and `bigspf.example.org`'s TXT record, too big for UDP, that only TCP returns.
pub fn harness_lookups<R: UdpRuntime>(rt: R, block_on: BlockOn, resolver: SocketAddr) {
    let l = |name: &str, rtype| Lookup {
        name: name.into(),
        rtype,
    };
    let questions = vec![
        l("mail.mox.example", RecordType::A),
        l("example.org", RecordType::Mx),
        l("_25._tcp.mx.dane.example", RecordType::Tlsa),
        l("mx.bogus.example", RecordType::A),
        l("nothing-here.example.org", RecordType::A),
        l("bigspf.example.org", RecordType::Txt),
    ];
    let mut cfg = config(vec![resolver], true);
    cfg.timeout = Duration::from_secs(3);
    cfg.attempts = 2;
    let got = with_loop(rt, block_on, cfg, move |c| async move {
        c.lookup_many(&questions).await
    });
    assert_eq!(
        got[0],
        LookupResult::Records {
            records: vec![Record::A(Ipv4Addr::new(127, 10, 0, 2))],
            authentic: true
        },
        "{got:?}"
    );
    assert!(
        matches!(&got[1], LookupResult::Records { records, authentic: false }
            if records.iter().any(|r| matches!(r, Record::Mx { host, .. } if host == "mx1.example.org"))),
        "{got:?}"
    );
    assert!(
        matches!(&got[2], LookupResult::Records { records, authentic: true }
            if records.iter().any(|r| matches!(r, Record::Tlsa { usage: 3, .. }))),
        "{got:?}"
    );
    assert!(matches!(got[3], LookupResult::TempFail(_)), "{got:?}");
    assert_eq!(got[4], LookupResult::NxDomain, "{got:?}");
    match &got[5] {
        LookupResult::Records { records, .. } => {
            let len: usize = records
                .iter()
                .map(|r| match r {
                    Record::Txt(parts) => parts.iter().map(Vec::len).sum(),
                    _ => 0,
                })
                .sum();
            assert!(len > 1232, "only TCP carries this record whole: {len}");
        }
        other => panic!("bigspf: {other:?}"),
    }
}
