//! DNS for the binary: the core's sans-IO resolver machine driven by one thread over real
//! UDP and TCP sockets, or static zone data (`zonefile:PATH`) for offline testing.
//!
//! Callers (effect answerers on the blocking pools, CLI tools) block on
//! [`Dns::lookup_many`]; the thread multiplexes all their questions over one UDP socket and
//! shares one cache.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rmox_core::dns::{
    Lookup, LookupResult, QueryId, Resolver, ResolverConfig, ResolverOutput, StaticZone,
};
use rmox_core::{Rng, Token};

use crate::Fail;

type Reply = mpsc::Sender<LookupResult>;

/// Where answers come from.
pub enum Dns {
    /// Real DNS through the resolver thread.
    Net(mpsc::Sender<(Lookup, Reply)>),
    /// Static zone data.
    Zone(StaticZone),
}

impl Dns {
    /// From the config's `resolver` list: `zonefile:PATH`, `ip:port` entries, or (empty)
    /// the system's /etc/resolv.conf.
    pub fn from_config(resolver: &[String], base: &std::path::Path) -> Result<Dns, Fail> {
        if let Some(path) = resolver.iter().find_map(|r| r.strip_prefix("zonefile:")) {
            let p = base.join(path);
            let text = std::fs::read_to_string(&p)
                .map_err(|e| Fail(format!("resolver zonefile {}: {e}", p.display())))?;
            let zone = StaticZone::parse(&text)
                .map_err(|e| Fail(format!("resolver zonefile {}: {e}", p.display())))?;
            return Ok(Dns::Zone(zone));
        }
        let mut servers: Vec<SocketAddr> = Vec::new();
        for r in resolver {
            servers.push(
                r.parse()
                    .map_err(|_| Fail(format!("resolver {r:?}: not ip:port")))?,
            );
        }
        if servers.is_empty() {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            servers = rmox_core::dns::parse_resolv_conf(&text);
        }
        if servers.is_empty() {
            return Err(Fail(
                "no DNS servers: set `resolver` in the config or fill /etc/resolv.conf".into(),
            ));
        }
        // The AD bit is believed only from loopback resolvers (a validating resolver on this
        // machine); others could be spoofed on the way.
        let trust_ad = servers.iter().all(|s| s.ip().is_loopback());
        let config = ResolverConfig {
            servers,
            trust_ad,
            timeout: Duration::from_secs(3),
            ..ResolverConfig::default()
        };
        let (tx, rx) = mpsc::channel();
        let seed = crate::serve::os_seed();
        std::thread::Builder::new()
            .name("rmox-dns".into())
            .spawn(move || run(config, seed, rx))
            .map_err(|e| Fail(format!("starting DNS thread: {e}")))?;
        Ok(Dns::Net(tx))
    }

    /// Answers every lookup (in order), waiting for all of them.
    pub fn lookup_many(&self, lookups: &[Lookup]) -> Vec<LookupResult> {
        match self {
            Dns::Zone(z) => lookups.iter().map(|l| z.lookup(l)).collect(),
            Dns::Net(tx) => {
                let waiting: Vec<mpsc::Receiver<LookupResult>> = lookups
                    .iter()
                    .map(|l| {
                        let (rtx, rrx) = mpsc::channel();
                        let _ = tx.send((l.clone(), rtx));
                        rrx
                    })
                    .collect();
                waiting
                    .into_iter()
                    .map(|r| {
                        r.recv_timeout(Duration::from_secs(30)).unwrap_or_else(|_| {
                            LookupResult::TempFail("resolver did not answer".into())
                        })
                    })
                    .collect()
            }
        }
    }

    /// One lookup.
    pub fn lookup(&self, l: &Lookup) -> LookupResult {
        self.lookup_many(std::slice::from_ref(l))
            .pop()
            .unwrap_or(LookupResult::TempFail("no answer".into()))
    }
}

fn now() -> rmox_core::Now {
    rmox_driver::now()
}

/// The resolver thread: runs until every sender is gone.
fn run(config: ResolverConfig, seed: u64, rx: mpsc::Receiver<(Lookup, Reply)>) {
    let bind: SocketAddr = match config.servers.first() {
        Some(s) if s.is_ipv6() => "[::]:0"
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0))),
        _ => SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let sock = match UdpSocket::bind(bind) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "dns: cannot bind UDP socket");
            return;
        }
    };
    let mut r = Resolver::new(config, Rng::new(seed));
    let mut waiting: HashMap<QueryId, Reply> = HashMap::new();
    let mut tcp: HashMap<Token, TcpStream> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        // New questions.
        loop {
            match rx.try_recv() {
                Ok((lookup, reply)) => {
                    let id = r.query(now(), lookup);
                    waiting.insert(id, reply);
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    if waiting.is_empty() {
                        return;
                    }
                    break;
                }
            }
        }
        // Outputs.
        let deadline = loop {
            match r.poll(now()) {
                ResolverOutput::SendUdp { server, bytes } => {
                    if let Err(e) = sock.send_to(&bytes, server) {
                        tracing::debug!(error = %e, %server, "dns: udp send failed");
                    }
                }
                ResolverOutput::SendTcp {
                    server,
                    conn,
                    bytes,
                } => {
                    let t = now();
                    match tcp_exchange(&mut tcp, server, conn, &bytes) {
                        Ok(answer) => r.handle_tcp(t, conn, &answer),
                        Err(_) => r.handle_tcp_failed(t, conn),
                    }
                }
                ResolverOutput::CloseTcp { conn } => {
                    tcp.remove(&conn);
                }
                ResolverOutput::Answer(id, result) => {
                    if let Some(reply) = waiting.remove(&id) {
                        let _ = reply.send(result);
                    }
                }
                ResolverOutput::Idle { deadline } => break deadline,
            }
        };
        // Wait for a datagram, the deadline, or (polling) new questions.
        let mut wait = Duration::from_millis(if waiting.is_empty() { 20 } else { 5 });
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                r.handle_timeout(now());
                continue;
            }
            wait = wait.min(left);
        }
        let _ = sock.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => r.handle_udp(now(), from, &buf[..n]),
            Err(_) => {
                if let Some(d) = deadline {
                    if Instant::now() >= d {
                        r.handle_timeout(now());
                    }
                }
                if waiting.is_empty() {
                    // Block for the next question instead of spinning.
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Ok((lookup, reply)) => {
                            let id = r.query(now(), lookup);
                            waiting.insert(id, reply);
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            }
        }
    }
}

/// Sends one length-prefixed message over TCP and reads one length-prefixed answer.
fn tcp_exchange(
    conns: &mut HashMap<Token, TcpStream>,
    server: SocketAddr,
    conn: Token,
    bytes: &[u8],
) -> std::io::Result<Vec<u8>> {
    if !conns.contains_key(&conn) {
        let s = TcpStream::connect_timeout(&server, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.set_write_timeout(Some(Duration::from_secs(3)))?;
        conns.insert(conn, s);
    }
    let s = conns
        .get_mut(&conn)
        .ok_or_else(|| std::io::Error::other("no connection"))?;
    s.write_all(bytes)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let n = usize::from(u16::from_be_bytes(len));
    let mut out = vec![0u8; n + 2];
    out[..2].copy_from_slice(&len);
    s.read_exact(&mut out[2..])?;
    Ok(out)
}
