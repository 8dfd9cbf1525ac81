//! Transcript tests of the delivery machine against in-memory peers: real server session
//! machines with a fake answerer, scripted SMTP peers (with TLS), a SOCKS5 proxy in bytes,
//! fake DNS, virtual time that jumps to the next deadline, and random chunking of every
//! byte stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::client::DaneCheck;
use crate::queue::route::{SmtpAuth, TransportSmtp, TransportSocks5, TransportSubmission};
use crate::server::{
    self, Completion as SCompletion, CredentialsAnswer, Effect as SEffect, PasswordCheck,
    ServerConfig, StoreOutcome, Verdict,
};
use crate::smtp::Reply;
use crate::testkit::pair::{Endpoint, Ran, SmtpServer};
use crate::testkit::{self, TestClock};
use crate::tls::TlsLayer;
use crate::tlspolicy::mtasts::{policy_url, FetchError};
use crate::tlspolicy::session::{message_tls, FetchResponse, PolicyConfig, PolicySession};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

// ---- peers ----

/// One end of an in-memory connection, as the delivery machine's peer.
trait Peer {
    /// Bytes from the delivery machine.
    fn input(&mut self, now: Now, bytes: &[u8]);
    /// Bytes for the delivery machine are appended to `out`.
    fn output(&mut self, now: Now, out: &mut Vec<u8>);
    /// The peer closed its side.
    fn closed(&self) -> bool;
    /// The peer's next deadline.
    fn deadline(&self) -> Option<Instant>;
    /// Time passed.
    fn timeout(&mut self, now: Now);
}

/// The server session machine with a fake outside world ([`answer`]): the Pair's server
/// end, behind the delivery's in-memory network.
struct ServerPeer {
    s: SmtpServer,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    ran: Ran,
}

fn answer(e: &SEffect) -> SCompletion {
    match e {
        // The messages here stay under the spool threshold.
        SEffect::Spool { .. } => {
            SCompletion::Spool(server::SpoolAnswer::Failed("not in this test".into()))
        }
        SEffect::CheckConnection { .. } | SEffect::CheckSender { .. } => {
            SCompletion::Verdict(Verdict::Accept)
        }
        SEffect::CheckPassword { password, .. } => SCompletion::Password(if password == "secret" {
            PasswordCheck::Valid {
                account: "mjl".into(),
            }
        } else {
            PasswordCheck::Invalid
        }),
        SEffect::LookupCredentials { kind, .. } => {
            use crate::sasl::StoredCredentials as Sc;
            use crate::sasl::{derive_cram_md5, derive_scram, CredentialKind, ScramHash};
            let credentials = match kind {
                CredentialKind::CramMd5 => Sc::CramMd5(derive_cram_md5("secret")),
                CredentialKind::ScramSha1 => {
                    Sc::Scram(derive_scram(ScramHash::Sha1, "secret", b"saltsalt", 4096))
                }
                CredentialKind::ScramSha256 => {
                    Sc::Scram(derive_scram(ScramHash::Sha256, "secret", b"saltsalt", 4096))
                }
            };
            SCompletion::Credentials(CredentialsAnswer::Found {
                account: "mjl".into(),
                credentials,
            })
        }
        SEffect::CheckRecipient { recipient, .. } => {
            let local = match recipient {
                ForwardPath::Mailbox(a) => a.localpart.0.clone(),
                _ => String::new(),
            };
            SCompletion::Verdict(if local.starts_with("bad") {
                Verdict::Reject(Reply::new(
                    550,
                    Some(Enhanced::new(5, 1, 1)),
                    "no such user",
                ))
            } else if local.starts_with("busy") {
                Verdict::Reject(Reply::new(
                    450,
                    Some(Enhanced::new(4, 2, 1)),
                    "mailbox busy, try later",
                ))
            } else {
                Verdict::Accept
            })
        }
        SEffect::Store(_) => SCompletion::Stored(StoreOutcome::Delivered),
        SEffect::Dns(l) => SCompletion::Dns(vec![LookupResult::NoData; l.len()]),
    }
}

impl ServerPeer {
    fn new(
        config: Arc<ServerConfig>,
        now: Now,
        stored: Arc<std::sync::Mutex<Vec<server::Transaction>>>,
    ) -> ServerPeer {
        let world = move |e: &SEffect| {
            if let SEffect::Store(t) = e {
                stored.lock().unwrap().push((**t).clone());
            }
            answer(e)
        };
        let mut p = ServerPeer {
            s: SmtpServer::new((*config).clone(), now, Some(Box::new(world))),
            inbuf: Vec::new(),
            out: Vec::new(),
            ran: Ran::Idle(None),
        };
        p.ran = p.s.drive(now, &mut p.out);
        p
    }
}

impl Peer for ServerPeer {
    fn input(&mut self, now: Now, bytes: &[u8]) {
        self.inbuf.extend_from_slice(bytes);
        while self.ran != Ran::Closed && !self.inbuf.is_empty() {
            let n = self.s.receive(now, &self.inbuf).min(self.inbuf.len());
            self.inbuf.drain(..n);
            self.ran = self.s.drive(now, &mut self.out);
            if n == 0 {
                return;
            }
        }
    }
    fn output(&mut self, _now: Now, out: &mut Vec<u8>) {
        out.append(&mut self.out);
    }
    fn closed(&self) -> bool {
        self.ran == Ran::Closed && self.out.is_empty()
    }
    fn deadline(&self) -> Option<Instant> {
        match self.ran {
            Ran::Idle(d) => d,
            Ran::Closed => None,
        }
    }
    fn timeout(&mut self, now: Now) {
        self.s.timeout(now);
        self.ran = self.s.drive(now, &mut self.out);
    }
}

/// How a scripted peer answers STARTTLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StartTlsScript {
    /// Not announced.
    None,
    /// Announced, answered 220, then a TLS handshake.
    Ok,
    /// Announced, refused with 454.
    Refuse,
    /// Announced, 220, then garbage in answer to the client's handshake.
    Garbage,
}

/// A small line-based SMTP server with a script: the greeting, the EHLO keywords,
/// STARTTLS behaviour, a command that is never answered.
#[derive(Clone, Debug)]
struct Script {
    greeting: &'static str,
    ehlo: Vec<&'static str>,
    starttls: StartTlsScript,
    /// Commands starting with this are never answered.
    silent: Option<&'static str>,
}

impl Script {
    fn plain() -> Script {
        Script {
            greeting: "220 scripted.example ESMTP",
            ehlo: vec!["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"],
            starttls: StartTlsScript::None,
            silent: None,
        }
    }
}

struct ScriptPeer {
    script: Script,
    tls: Option<TlsLayer>,
    plain_in: Vec<u8>,
    out: Vec<u8>,
    out_plain: Vec<u8>,
    in_data: bool,
    closed: bool,
    /// The next bytes (the TLS client hello) are answered with garbage.
    garbage: bool,
    /// A silent command was seen: nothing is answered any more.
    mute: bool,
}

impl ScriptPeer {
    fn new(script: Script) -> ScriptPeer {
        let mut p = ScriptPeer {
            tls: None,
            plain_in: Vec::new(),
            out: Vec::new(),
            out_plain: Vec::new(),
            in_data: false,
            closed: false,
            garbage: false,
            mute: false,
            script,
        };
        let g = p.script.greeting;
        p.reply(g);
        if g.starts_with("421") {
            p.closed = true;
        }
        p
    }

    fn reply(&mut self, s: &str) {
        self.out_plain.extend_from_slice(s.as_bytes());
        self.out_plain.extend_from_slice(b"\r\n");
    }

    fn flush(&mut self) {
        match &mut self.tls {
            Some(t) => {
                if !self.out_plain.is_empty() {
                    t.write_plain(&self.out_plain);
                    self.out_plain.clear();
                }
                t.take_ciphertext(&mut self.out);
            }
            None => self.out.append(&mut self.out_plain),
        }
    }

    fn line(&mut self, line: &str) {
        if let Some(s) = self.script.silent {
            if line.to_ascii_uppercase().starts_with(s) {
                self.mute = true;
            }
        }
        if self.mute {
            return;
        }
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                let mut kws = self.script.ehlo.clone();
                if self.script.starttls != StartTlsScript::None && self.tls.is_none() {
                    kws.push("STARTTLS");
                }
                let mut lines = vec!["scripted.example".to_string()];
                lines.extend(kws.iter().map(|k| k.to_string()));
                let n = lines.len();
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i + 1 == n { ' ' } else { '-' };
                    let l = format!("250{sep}{l}");
                    self.reply(&l);
                }
            }
            "STARTTLS" => match self.script.starttls {
                StartTlsScript::Refuse => self.reply("454 4.7.0 TLS not available"),
                StartTlsScript::Garbage => {
                    self.reply("220 go ahead");
                    self.garbage = true;
                }
                _ => {
                    self.reply("220 go ahead");
                    self.flush();
                    self.tls = Some(TlsLayer::server(testkit::server_tls()).unwrap());
                }
            },
            "MAIL" | "RCPT" | "RSET" => self.reply("250 2.0.0 ok"),
            "DATA" => {
                self.reply("354 go ahead");
                self.in_data = true;
            }
            "QUIT" => {
                self.reply("221 2.0.0 bye");
                self.closed = true;
            }
            _ => self.reply("500 5.5.2 unknown command"),
        }
    }
}

impl Peer for ScriptPeer {
    fn input(&mut self, _now: Now, bytes: &[u8]) {
        if self.closed {
            return;
        }
        if self.garbage {
            self.out.extend_from_slice(b"this is not TLS\r\n\r\n\r\n");
            self.closed = true;
            return;
        }
        match &mut self.tls {
            Some(t) => {
                let mut rest = bytes;
                while !rest.is_empty() {
                    match t.feed(rest, &mut self.plain_in) {
                        Ok(0) => break,
                        Ok(n) => rest = &rest[n..],
                        Err(_) => {
                            self.closed = true;
                            return;
                        }
                    }
                }
            }
            None => self.plain_in.extend_from_slice(bytes),
        }
        loop {
            if self.in_data {
                let Some(i) = self.plain_in.windows(5).position(|w| w == b"\r\n.\r\n") else {
                    break;
                };
                self.plain_in.drain(..i + 5);
                self.in_data = false;
                self.reply("250 2.0.0 queued as 1");
                continue;
            }
            let Some(i) = self.plain_in.windows(2).position(|w| w == b"\r\n") else {
                break;
            };
            let line = String::from_utf8_lossy(&self.plain_in[..i]).to_string();
            self.plain_in.drain(..i + 2);
            self.line(&line);
            if self.tls.as_ref().is_some_and(|t| t.is_handshaking()) && !self.plain_in.is_empty() {
                self.plain_in.clear();
            }
        }
        self.flush();
    }
    fn output(&mut self, _now: Now, out: &mut Vec<u8>) {
        self.flush();
        out.append(&mut self.out);
    }
    fn closed(&self) -> bool {
        self.closed && self.out.is_empty() && self.out_plain.is_empty()
    }
    fn deadline(&self) -> Option<Instant> {
        None
    }
    fn timeout(&mut self, _now: Now) {}
}

/// A SOCKS5 proxy (no authentication, or user "u" with password "p") in front of the
/// network's other peers.
struct ProxyPeer {
    want_auth: bool,
    stage: u8,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    inner: Option<Box<dyn Peer>>,
    closed: bool,
    net: Arc<Net>,
    stored: Arc<std::sync::Mutex<Vec<server::Transaction>>>,
}

impl Peer for ProxyPeer {
    fn input(&mut self, now: Now, bytes: &[u8]) {
        if let Some(p) = &mut self.inner {
            return p.input(now, bytes);
        }
        self.inbuf.extend_from_slice(bytes);
        loop {
            let b = &self.inbuf;
            match self.stage {
                0 => {
                    let Some(&n) = b.get(1) else { return };
                    let n = usize::from(n);
                    if b.len() < 2 + n {
                        return;
                    }
                    let methods = &b[2..2 + n];
                    let m = if self.want_auth {
                        if methods.contains(&2) {
                            2
                        } else {
                            0xff
                        }
                    } else {
                        0
                    };
                    self.inbuf.drain(..2 + n);
                    self.out.extend_from_slice(&[5, m]);
                    self.stage = match m {
                        2 => 1,
                        0 => 2,
                        _ => {
                            self.closed = true;
                            return;
                        }
                    };
                }
                1 => {
                    let Some(&ul) = b.get(1) else { return };
                    let ul = usize::from(ul);
                    let Some(&pl) = b.get(2 + ul) else { return };
                    let pl = usize::from(pl);
                    if b.len() < 3 + ul + pl {
                        return;
                    }
                    let ok = &b[2..2 + ul] == b"u" && &b[3 + ul..3 + ul + pl] == b"p";
                    self.inbuf.drain(..3 + ul + pl);
                    self.out.extend_from_slice(&[1, if ok { 0 } else { 1 }]);
                    if !ok {
                        self.closed = true;
                        return;
                    }
                    self.stage = 2;
                }
                _ => {
                    let Some(&atyp) = b.get(3) else { return };
                    let alen = if atyp == 1 { 4 } else { 16 };
                    if b.len() < 4 + alen + 2 {
                        return;
                    }
                    let ip: IpAddr = if atyp == 1 {
                        <[u8; 4]>::try_from(&b[4..8]).unwrap().into()
                    } else {
                        <[u8; 16]>::try_from(&b[4..20]).unwrap().into()
                    };
                    let port = u16::from_be_bytes([b[4 + alen], b[5 + alen]]);
                    let target = SocketAddr::new(ip, port);
                    self.inbuf.drain(..4 + alen + 2);
                    self.net.asked.lock().unwrap().push(target);
                    match self.net.open(target, now, &self.stored) {
                        Ok(Some(mut p)) => {
                            self.out
                                .extend_from_slice(&[5, 0, 0, 1, 10, 0, 0, 1, 0x12, 0x34]);
                            let rest = std::mem::take(&mut self.inbuf);
                            if !rest.is_empty() {
                                p.input(now, &rest);
                            }
                            self.inner = Some(p);
                        }
                        _ => {
                            self.out.extend_from_slice(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
                            self.closed = true;
                        }
                    }
                    return;
                }
            }
        }
    }
    fn output(&mut self, now: Now, out: &mut Vec<u8>) {
        out.append(&mut self.out);
        if let Some(p) = &mut self.inner {
            p.output(now, out);
        }
    }
    fn closed(&self) -> bool {
        match &self.inner {
            Some(p) => p.closed(),
            None => self.closed && self.out.is_empty(),
        }
    }
    fn deadline(&self) -> Option<Instant> {
        self.inner.as_ref().and_then(|p| p.deadline())
    }
    fn timeout(&mut self, now: Now) {
        if let Some(p) = &mut self.inner {
            p.timeout(now);
        }
    }
}

// ---- the network ----

/// What is listening at an address.
#[derive(Clone)]
enum Listener {
    /// Connection refused.
    Refuse,
    /// The connection never completes.
    Blackhole,
    /// A server session machine.
    Server(Arc<ServerConfig>),
    /// A scripted SMTP peer.
    Script(Script),
    /// A SOCKS5 proxy; `true`: it wants user "u", password "p".
    Socks5(bool),
}

/// Fake DNS and listeners.
#[derive(Clone, Default)]
struct Net {
    dns: HashMap<Lookup, LookupResult>,
    listeners: HashMap<SocketAddr, Listener>,
    host_tls: BTreeMap<String, HostTls>,
    /// DNS questions are never answered.
    dns_silent: bool,
    /// TLS requirement questions are never answered.
    policy_silent: bool,
    /// Targets a SOCKS5 proxy was asked to connect to.
    asked: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    /// TLS requirements from the policy machine (DNS from `dns`, fetches from here)
    /// instead of `host_tls`.
    policy: Option<PolicyWorld>,
}

/// What the TLS policy machine sees besides the DNS.
#[derive(Clone)]
struct PolicyWorld {
    config: PolicyConfig,
    /// Policy fetch results by URL; others fail with "connection refused".
    fetch: HashMap<String, Result<FetchResponse, FetchError>>,
}

/// Runs the policy machine of the delivery (made at the first question) until it gives
/// the verdict for `host`, answering its effects at once.
#[allow(clippy::too_many_arguments)]
fn policy_verdict(
    net: &Net,
    pw: &PolicyWorld,
    session: &mut Option<PolicySession>,
    now: Now,
    domain: &str,
    host: &str,
    requiretls: Option<bool>,
    transcript: &mut Vec<String>,
) -> HostTls {
    use crate::tlspolicy::session::{
        Completion as PCompletion, Effect as PEffect, Input as PInput, Output as POutput,
    };
    let s = session.get_or_insert_with(|| {
        PolicySession::new(
            Arc::new(pw.config.clone()),
            domain,
            message_tls(requiretls),
            now,
        )
    });
    s.handle(now, PInput::Ask(host.into())).unwrap();
    for _ in 0..100 {
        let mut answers = Vec::new();
        loop {
            match s.poll(now) {
                POutput::Effect(t, PEffect::Dns(ls)) => answers.push((
                    t,
                    PCompletion::Dns(ls.iter().map(|l| net.lookup(l)).collect()),
                )),
                POutput::Effect(t, PEffect::CacheGet { .. }) => {
                    answers.push((t, PCompletion::Cached(None)))
                }
                POutput::Effect(t, PEffect::Fetch(req)) => {
                    transcript.push(format!("fetch {}", req.url));
                    let r = pw
                        .fetch
                        .get(&req.url)
                        .cloned()
                        .unwrap_or(Err(FetchError::Fetch("connection refused".into())));
                    answers.push((t, PCompletion::Fetched(r)));
                }
                POutput::Cache(u) => transcript.push(format!("policy cache {u:?}")),
                POutput::Verdict(v) => {
                    transcript.push(format!("verdict {} {}", v.host, v.requirement));
                    if v.host == host {
                        return v.host_tls;
                    }
                }
                POutput::Idle { .. } => break,
            }
        }
        assert!(!answers.is_empty(), "policy machine stuck");
        for (t, c) in answers {
            s.handle(now, PInput::Completed(t, c)).unwrap();
        }
    }
    panic!("no policy verdict for {host}");
}

impl Net {
    fn a(&mut self, name: &str, ip: &str) -> &mut Net {
        let ip: IpAddr = ip.parse().unwrap();
        let (rtype, rec) = match ip {
            IpAddr::V4(a) => (RecordType::A, Record::A(a)),
            IpAddr::V6(a) => (RecordType::Aaaa, Record::Aaaa(a)),
        };
        let e = self
            .dns
            .entry(Lookup {
                name: name.into(),
                rtype,
            })
            .or_insert(LookupResult::Records {
                records: Vec::new(),
                authentic: false,
            });
        if let LookupResult::Records { records, .. } = e {
            records.push(rec);
        }
        self
    }

    fn mx(&mut self, domain: &str, hosts: &[(u16, &str)]) -> &mut Net {
        self.dns.insert(
            Lookup {
                name: domain.into(),
                rtype: RecordType::Mx,
            },
            LookupResult::Records {
                records: hosts
                    .iter()
                    .map(|(p, h)| Record::Mx {
                        preference: *p,
                        host: h.to_string(),
                    })
                    .collect(),
                authentic: false,
            },
        );
        self
    }

    fn listen(&mut self, addr: &str, l: Listener) -> &mut Net {
        self.listeners.insert(addr.parse().unwrap(), l);
        self
    }

    fn lookup(&self, l: &Lookup) -> LookupResult {
        self.dns.get(l).cloned().unwrap_or(LookupResult::NxDomain)
    }

    fn open(
        self: &Arc<Self>,
        addr: SocketAddr,
        now: Now,
        stored: &Arc<std::sync::Mutex<Vec<server::Transaction>>>,
    ) -> Result<Option<Box<dyn Peer>>, String> {
        Ok(Some(match self.listeners.get(&addr) {
            None | Some(Listener::Refuse) => return Err("connection refused".into()),
            Some(Listener::Blackhole) => return Ok(None),
            Some(Listener::Server(c)) => {
                Box::new(ServerPeer::new(Arc::clone(c), now, Arc::clone(stored)))
            }
            Some(Listener::Script(s)) => Box::new(ScriptPeer::new(s.clone())),
            Some(Listener::Socks5(auth)) => Box::new(ProxyPeer {
                want_auth: *auth,
                stage: 0,
                inbuf: Vec::new(),
                out: Vec::new(),
                inner: None,
                closed: false,
                net: Arc::clone(self),
                stored: Arc::clone(stored),
            }),
        }))
    }
}

// ---- the pair harness ----

type Stored = Arc<std::sync::Mutex<Vec<server::Transaction>>>;

/// The peer side of one connection.
struct PeerLink {
    peer: Option<Box<dyn Peer>>,
    to_peer: Vec<u8>,
    to_client: Vec<u8>,
    eof_sent: bool,
}

/// What a run produced.
struct Run {
    report: Report,
    /// Every job's report (connection reuse), the first is `report`.
    reports: Vec<Report>,
    transcript: Vec<String>,
    stored: Vec<server::Transaction>,
    elapsed: Duration,
}

impl Run {
    fn has(&self, line: &str) -> bool {
        self.transcript.iter().any(|l| l.contains(line))
    }

    fn connects(&self) -> Vec<String> {
        self.transcript
            .iter()
            .filter_map(|l| l.strip_prefix("connect ").map(str::to_string))
            .collect()
    }
}

/// How many bytes to move next: everything with chunk seed 0, else random pieces.
fn chunk(rng: &mut Option<crate::rng::Rng>, len: usize) -> usize {
    match rng {
        None => len,
        Some(r) => {
            if r.below(4) == 0 {
                len
            } else {
                1 + r.below(len.min(64) as u64) as usize
            }
        }
    }
}

/// Runs a delivery to the end against the network, with virtual time. `chunk_seed` 0
/// moves bytes whole; any other seed splits every transfer at random points.
fn run(config: DeliveryConfig, job: Job, net: Net, chunk_seed: u64) -> Run {
    run_jobs(config, job, Vec::new(), net, chunk_seed)
}

/// [`run`] for `job` and the jobs that `follow` it on its connection.
fn run_jobs(config: DeliveryConfig, job: Job, follow: Vec<Job>, net: Net, chunk_seed: u64) -> Run {
    let net = Arc::new(net);
    let mut clock = TestClock::new();
    let start = clock.now().mono;
    let stored: Stored = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut rng = (chunk_seed != 0).then(|| crate::rng::Rng::new(chunk_seed));
    let mut s = DeliverySession::new_many(Arc::new(config), job, follow, clock.now());
    let mut conns: BTreeMap<ConnId, PeerLink> = BTreeMap::new();
    let mut policy: Option<PolicySession> = None;
    let mut completions: VecDeque<(Token, Completion)> = VecDeque::new();
    let mut transcript = Vec::new();
    let mut jobs_done = Vec::new();
    let mut tx = Vec::new();
    for _ in 0..1_000_000 {
        let now = clock.now();
        let deadline = loop {
            match s.poll(now, &mut tx) {
                Output::Transmit(id) => {
                    if let Some(c) = conns.get_mut(&id) {
                        c.to_peer.append(&mut tx);
                    }
                    tx.clear();
                }
                Output::Effect(t, e) => match e {
                    Effect::Dns(ls) => {
                        if !net.dns_silent {
                            let r = ls.iter().map(|l| net.lookup(l)).collect();
                            completions.push_back((t, Completion::Dns(r)));
                        }
                    }
                    Effect::Connect {
                        conn,
                        addr,
                        source_ip,
                        ..
                    } => {
                        if let Some(ip) = source_ip {
                            transcript.push(format!("bind {ip}"));
                        }
                        match net.open(addr, now, &stored) {
                            Err(why) => completions.push_back((t, Completion::ConnectFailed(why))),
                            Ok(None) => {}
                            Ok(Some(p)) => {
                                conns.insert(
                                    conn,
                                    PeerLink {
                                        peer: Some(p),
                                        to_peer: Vec::new(),
                                        to_client: Vec::new(),
                                        eof_sent: false,
                                    },
                                );
                                completions.push_back((t, Completion::Connected));
                            }
                        }
                    }
                    Effect::HostTls {
                        domain,
                        host,
                        requiretls,
                    } => {
                        transcript.push(format!("policy {host}"));
                        let v = match &net.policy {
                            Some(pw) => policy_verdict(
                                &net,
                                pw,
                                &mut policy,
                                now,
                                &domain,
                                &host,
                                requiretls,
                                &mut transcript,
                            ),
                            None => net
                                .host_tls
                                .get(&host)
                                .cloned()
                                .unwrap_or_else(|| builtin_host_tls(requiretls, None)),
                        };
                        if !net.policy_silent {
                            completions.push_back((t, Completion::HostTls(v)));
                        }
                    }
                },
                Output::Event(ev) => match ev {
                    Event::Connecting { host, addr } => {
                        transcript.push(format!("connect {host} {addr}"))
                    }
                    Event::AttemptFailed { host, error, .. } => {
                        transcript.push(format!("failed {host}: {error}"))
                    }
                    Event::Tls(t) => transcript.push(format!(
                        "tls {} {} {}",
                        t.mx_host,
                        t.mode,
                        match &t.result {
                            TlsResult::Established(_) => "established".to_string(),
                            TlsResult::Plaintext => "plaintext".to_string(),
                            TlsResult::Failed { result_type, .. } => result_type.to_string(),
                        }
                    )),
                    Event::Client(_, client::Event::Command(v)) => {
                        transcript.push(format!("C: {v}"))
                    }
                    Event::Client(_, client::Event::Reply(c)) => transcript.push(format!("S: {c}")),
                    Event::Client(_, client::Event::TlsEstablished(_)) => {
                        transcript.push("S: <tls>".into())
                    }
                    Event::Client(_, _) => {}
                    Event::JobDone { job } => {
                        assert!(s.job_report(job).is_some());
                        jobs_done.push(job);
                    }
                },
                Output::Close(id) => {
                    conns.remove(&id);
                }
                Output::Idle { deadline, .. } => break Some(deadline),
                Output::Done => break None,
            }
        };
        let Some(deadline) = deadline else {
            assert!(
                conns.is_empty(),
                "connections left open: {:?}",
                conns.keys()
            );
            assert_eq!(
                jobs_done,
                (0..s.reports().len()).collect::<Vec<_>>(),
                "every job said done once, in order"
            );
            return Run {
                report: s.report().unwrap().clone(),
                reports: s.reports().to_vec(),
                transcript,
                stored: stored.lock().unwrap().clone(),
                elapsed: clock.now().mono.duration_since(start),
            };
        };
        if let Some((t, c)) = completions.pop_front() {
            s.handle(now, Input::Completed(t, c)).unwrap();
            continue;
        }
        let mut acted = false;
        for (id, l) in conns.iter_mut() {
            let Some(peer) = l.peer.as_mut() else {
                continue;
            };
            if !l.to_peer.is_empty() {
                let n = chunk(&mut rng, l.to_peer.len());
                let bytes: Vec<u8> = l.to_peer.drain(..n).collect();
                peer.input(now, &bytes);
            }
            peer.output(now, &mut l.to_client);
            if !l.to_client.is_empty() {
                let n = chunk(&mut rng, l.to_client.len());
                let used = s
                    .handle(now, Input::Received(*id, &l.to_client[..n]))
                    .unwrap();
                l.to_client.drain(..used);
                acted = true;
                break;
            }
            if peer.closed() && !l.eof_sent {
                l.eof_sent = true;
                s.handle(now, Input::Closed(*id)).unwrap();
                acted = true;
                break;
            }
            if !l.to_peer.is_empty() {
                acted = true;
            }
        }
        if acted {
            continue;
        }
        let next = conns
            .values()
            .filter_map(|l| l.peer.as_ref().and_then(|p| p.deadline()))
            .chain(deadline)
            .min()
            .expect("nothing to wait for: the machine is stuck");
        clock.set_mono(next);
        let now = clock.now();
        for l in conns.values_mut() {
            if let Some(p) = l.peer.as_mut() {
                p.timeout(now);
            }
        }
        s.handle(now, Input::Timeout).unwrap();
    }
    panic!("delivery did not finish");
}

// ---- fixtures ----

fn server_config() -> Arc<ServerConfig> {
    let mut c = ServerConfig::new("mx.example");
    c.tls = Some(testkit::server_tls());
    Arc::new(c)
}

fn config() -> DeliveryConfig {
    DeliveryConfig::new(Host::parse("sender.example").unwrap())
}

const MESSAGE: &[u8] =
    b"From: <mjl@mox.example>\r\nTo: <x@example.org>\r\nSubject: test\r\n\r\nhello\r\n";

fn job(rcpts: &[&str]) -> Job {
    Job {
        domain: "example.org".into(),
        mail_from: ReversePath::parse("<mjl@mox.example>").unwrap(),
        recipients: rcpts
            .iter()
            .map(|r| {
                (
                    ForwardPath::parse(&format!("<{r}>")).unwrap(),
                    RcptParams::default(),
                )
            })
            .collect(),
        params: MailParams::default(),
        message: Arc::from(MESSAGE),
        needs: Needs::default(),
        requiretls: None,
        seed: 1,
    }
}

/// example.org with MX mx1 (10) and mx2 (20), each with one IPv4 address.
fn two_mx(mx1: Listener, mx2: Listener) -> Net {
    let mut n = Net::default();
    n.mx(
        "example.org",
        &[(10, "mx1.example.org"), (20, "mx2.example.org")],
    )
    .a("mx1.example.org", "192.0.2.1")
    .a("mx2.example.org", "192.0.2.2")
    .listen("192.0.2.1:25", mx1)
    .listen("192.0.2.2:25", mx2);
    n
}

fn delivered_by(r: &AttemptResult) -> Option<&str> {
    match r {
        AttemptResult::Delivered { host, .. } => host.as_deref(),
        _ => None,
    }
}

fn failure(r: &AttemptResult) -> (bool, &Failure) {
    match r {
        AttemptResult::Permanent(f) => (true, f),
        AttemptResult::Temporary(f) => (false, f),
        AttemptResult::Delivered { .. } => panic!("delivered: {r:?}"),
    }
}

fn enhanced(f: &Failure) -> Option<Enhanced> {
    f.reply.as_ref().and_then(|r| r.enhanced).or(f.enhanced)
}

// ---- transcripts ----

/// Success with STARTTLS: EHLO, STARTTLS, EHLO again inside TLS, the transaction, QUIT.
/// The session ends once QUIT is sent, without waiting for the 221 (the results are known
/// at the reply to the data; issue 15).
#[test]
fn delivers_with_starttls() {
    let net = two_mx(Listener::Server(server_config()), Listener::Refuse);
    let r = run(config(), job(&["a@example.org"]), net, 7);
    assert_eq!(delivered_by(&r.report.results[0]), Some("mx1.example.org"));
    let want = [
        "connect mx1.example.org 192.0.2.1:25",
        "S: 220",
        "C: EHLO",
        "S: 250",
        "C: STARTTLS",
        "S: 220",
        "S: <tls>",
        "C: EHLO",
        "S: 250",
        "C: MAIL",
        "C: RCPT",
        "S: 250",
        "S: 250",
        "C: BDAT",
        "S: 250",
        "C: QUIT",
        "tls mx1.example.org opportunistic established",
    ];
    assert_eq!(r.transcript, want);
    assert_eq!(r.stored.len(), 1);
    assert!(r.stored[0].tls.is_some());
    assert_eq!(r.report.remote_mta.as_deref(), Some("mx1.example.org"));
    assert_eq!(r.report.tls.len(), 1);
}

/// Fallback to the next MX host after a connection-level failure on the first, as mox
/// does: refused connection, 421 greeting, STARTTLS refused, a broken TLS handshake.
#[test]
fn mx_fallbacks() {
    let mut garbage = Script::plain();
    garbage.starttls = StartTlsScript::Garbage;
    let mut refuse_tls = Script::plain();
    refuse_tls.starttls = StartTlsScript::Refuse;
    let mut busy = Script::plain();
    busy.greeting = "421 4.3.2 too busy";
    let cases = [
        (
            "refused",
            Listener::Refuse,
            "failed mx1.example.org: connection refused",
        ),
        (
            "421 greeting",
            Listener::Script(busy),
            "failed mx1.example.org: greeting",
        ),
        (
            "starttls refused",
            Listener::Script(refuse_tls),
            "tls mx1.example.org opportunistic starttls-not-supported",
        ),
        (
            "starttls garbage",
            Listener::Script(garbage),
            "tls mx1.example.org opportunistic validation-failure",
        ),
    ];
    for (name, mx1, line) in cases {
        let net = two_mx(mx1, Listener::Server(server_config()));
        let r = run(config(), job(&["a@example.org"]), net, 3);
        assert_eq!(
            delivered_by(&r.report.results[0]),
            Some("mx2.example.org"),
            "{name}: {:?}",
            r.transcript
        );
        assert!(r.has(line), "{name}: {line:?} not in {:#?}", r.transcript);
        assert_eq!(r.connects().len(), 2, "{name}");
        assert_eq!(r.stored.len(), 1, "{name}");
    }
}

/// Per-recipient results: a 550 RCPT is permanent, a 452 RCPT temporary, the accepted
/// recipient delivered, all in one transaction.
#[test]
fn per_recipient_results() {
    let net = two_mx(Listener::Server(server_config()), Listener::Refuse);
    let r = run(
        config(),
        job(&["bad@example.org", "ok@example.org", "busy@example.org"]),
        net,
        11,
    );
    let res = &r.report.results;
    let (perm, f) = failure(&res[0]);
    assert!(perm);
    assert_eq!(f.reply.as_ref().map(|r| r.code), Some(550));
    assert_eq!(f.host.as_deref(), Some("mx1.example.org"));
    assert_eq!(delivered_by(&res[1]), Some("mx1.example.org"));
    let (perm, f) = failure(&res[2]);
    assert!(!perm);
    assert_eq!(enhanced(f), Some(Enhanced::new(4, 2, 1)));
    assert_eq!(r.stored[0].recipients.len(), 1);
    assert_eq!(r.connects().len(), 1);
}

/// Every MX failing is a temporary failure naming the last host tried.
#[test]
fn all_mx_failing_is_temporary() {
    let mut busy = Script::plain();
    busy.greeting = "421 4.3.2 too busy";
    let net = two_mx(Listener::Refuse, Listener::Script(busy));
    let r = run(config(), job(&["a@example.org", "b@example.org"]), net, 5);
    for res in &r.report.results {
        let (perm, f) = failure(res);
        assert!(!perm);
        assert_eq!(f.host.as_deref(), Some("mx2.example.org"));
        assert_eq!(f.reply.as_ref().map(|r| r.code), Some(421));
    }
    assert_eq!(r.connects().len(), 2);
}

/// DNS verdicts without a host: null MX and a missing domain are permanent (no connection
/// attempted), a DNS failure temporary.
#[test]
fn dns_verdicts() {
    let mut null = Net::default();
    null.mx("example.org", &[(0, "")]);
    let mut servfail = Net::default();
    servfail.dns.insert(
        Lookup {
            name: "example.org".into(),
            rtype: RecordType::Mx,
        },
        LookupResult::TempFail("SERVFAIL".into()),
    );
    let cases = [
        ("null mx", null, true, Enhanced::new(5, 1, 10)),
        ("nxdomain", Net::default(), true, Enhanced::new(5, 1, 2)),
        ("servfail", servfail, false, Enhanced::new(4, 4, 3)),
    ];
    for (name, net, want_perm, want) in cases {
        let r = run(config(), job(&["a@example.org"]), net, 0);
        let (perm, f) = failure(&r.report.results[0]);
        assert_eq!(perm, want_perm, "{name}");
        assert_eq!(enhanced(f), Some(want), "{name}");
        assert!(r.connects().is_empty(), "{name}");
    }
}

/// REQUIRETLS to a next hop that does not announce it: permanent, 5.7.30 (RFC 8689 5), and
/// no other host is tried. The same message to a server that announces it is delivered
/// with REQUIRETLS on MAIL FROM.
#[test]
fn requiretls() {
    let mut cfg = config();
    cfg.pkix = Some(testkit::client_tls());
    let mut j = job(&["a@example.org"]);
    j.requiretls = Some(true);
    let mut no_rtls = Script::plain();
    no_rtls.starttls = StartTlsScript::Ok;
    let mut net = Net::default();
    net.mx(
        "example.org",
        &[(10, "mox.example"), (20, "mx2.example.org")],
    )
    .a("mox.example", "192.0.2.5")
    .a("mx2.example.org", "192.0.2.2")
    .listen("192.0.2.5:25", Listener::Script(no_rtls))
    .listen("192.0.2.2:25", Listener::Server(server_config()));
    let r = run(cfg.clone(), j.clone(), net, 13);
    let (perm, f) = failure(&r.report.results[0]);
    assert!(perm, "{f:?}");
    assert_eq!(enhanced(f), Some(Enhanced::new(5, 7, 30)));
    assert!(f.detail.contains("REQUIRETLS"), "{}", f.detail);
    assert_eq!(r.connects().len(), 1);
    assert!(r.has("tls mox.example required established"));
    assert!(!r.has("C: MAIL"));

    let mut net = Net::default();
    net.mx("example.org", &[(10, "mox.example")])
        .a("mox.example", "192.0.2.5")
        .listen("192.0.2.5:25", Listener::Server(server_config()));
    let r = run(cfg, j, net, 13);
    assert_eq!(delivered_by(&r.report.results[0]), Some("mox.example"));
    assert_eq!(r.stored[0].requiretls, Some(true));
}

/// A submission transport with implicit TLS (port 465) and AUTH: TLS from the first byte
/// inside the machine, no STARTTLS, SCRAM with channel binding, PKIX-verified.
#[test]
fn submission_implicit_tls_with_auth() {
    let mut cfg = config();
    cfg.pkix = Some(testkit::client_tls());
    cfg.transport = Transport::Submission(TransportSubmission {
        host: "mox.example".into(),
        port: 465,
        implicit_tls: true,
        auth: SmtpAuth {
            username: "mjl@mox.example".into(),
            password: "secret".into(),
            mechanisms: Vec::new(),
        },
    });
    let mut sc = ServerConfig::new("mox.example");
    sc.tls = Some(testkit::server_tls());
    sc.implicit_tls = true;
    sc.submission = true;
    let mut net = Net::default();
    net.a("mox.example", "192.0.2.7")
        .listen("192.0.2.7:465", Listener::Server(Arc::new(sc)));
    let r = run(cfg, job(&["a@example.org"]), net, 17);
    assert_eq!(
        delivered_by(&r.report.results[0]),
        Some("mox.example"),
        "{:#?}",
        r.transcript
    );
    assert_eq!(r.transcript[1], "S: <tls>", "{:#?}", r.transcript);
    assert!(r.has("C: AUTH"));
    assert!(!r.has("C: STARTTLS"));
    assert!(r.has("tls mox.example implicit established"));
    assert_eq!(r.stored[0].account.as_deref(), Some("mjl"));
    assert_eq!(r.report.tls[0].policy_domain, "mox.example");
}

/// A smarthost with AUTH mechanisms configured: a mechanism the server refuses with 504
/// makes the next one be tried on a new connection.
#[test]
fn smarthost_mechanism_fallback() {
    let mut cfg = config();
    cfg.transport = Transport::Smarthost(TransportSmtp {
        host: "192.0.2.8".into(),
        port: 587,
        tls: SmtpTls::Opportunistic,
        auth: Some(SmtpAuth {
            username: "mjl@mox.example".into(),
            password: "secret".into(),
            mechanisms: vec![Mechanism::CramMd5, Mechanism::Plain],
        }),
    });
    let mut sc = ServerConfig::new("mox.example");
    sc.tls = Some(testkit::server_tls());
    sc.submission = true;
    sc.auth_mechanisms = vec![Mechanism::Plain];
    let mut net = Net::default();
    net.listen("192.0.2.8:587", Listener::Server(Arc::new(sc)));
    let r = run(cfg, job(&["a@example.org"]), net, 19);
    assert_eq!(
        delivered_by(&r.report.results[0]),
        Some("192.0.2.8"),
        "{:#?}",
        r.transcript
    );
    assert_eq!(r.connects().len(), 2, "{:#?}", r.transcript);
}

/// SOCKS5 in front of the MX host, as bytes inside the machine: the driver only connects
/// to the proxy; EHLO uses the transport's host name.
#[test]
fn socks5_proxy() {
    for auth in [false, true] {
        let mut cfg = config();
        cfg.transport = Transport::Socks5(TransportSocks5 {
            proxy: "192.0.2.50:1080".parse().unwrap(),
            remote_ips: vec!["198.51.100.1".parse().unwrap()],
            ehlo_hostname: "proxy.example".into(),
        });
        cfg.proxy_auth = auth.then(|| ("u".to_string(), "p".to_string()));
        let mut net = two_mx(Listener::Server(server_config()), Listener::Refuse);
        net.listen("192.0.2.50:1080", Listener::Socks5(auth));
        let asked = Arc::clone(&net.asked);
        let r = run(cfg, job(&["a@example.org"]), net, 23);
        assert_eq!(
            delivered_by(&r.report.results[0]),
            Some("mx1.example.org"),
            "{auth}"
        );
        assert_eq!(*asked.lock().unwrap(), ["192.0.2.1:25".parse().unwrap()]);
        assert_eq!(r.stored[0].ehlo, "proxy.example");
    }

    // A proxy that cannot reach the host: the next host is asked for.
    let mut cfg = config();
    cfg.transport = Transport::Socks5(TransportSocks5 {
        proxy: "192.0.2.50:1080".parse().unwrap(),
        remote_ips: Vec::new(),
        ehlo_hostname: "proxy.example".into(),
    });
    let mut net = two_mx(Listener::Refuse, Listener::Server(server_config()));
    net.listen("192.0.2.50:1080", Listener::Socks5(false));
    let r = run(cfg, job(&["a@example.org"]), net, 29);
    assert_eq!(delivered_by(&r.report.results[0]), Some("mx2.example.org"));
    assert!(
        r.has(
            "failed mx1.example.org: through SOCKS5 proxy 192.0.2.50:1080: \
             proxy could not connect: connection refused"
        ),
        "{:#?}",
        r.transcript
    );

    // A transport whose EHLO name is not a host name: temporary, nothing tried.
    let mut cfg = config();
    cfg.transport = Transport::Socks5(TransportSocks5 {
        proxy: "192.0.2.50:1080".parse().unwrap(),
        remote_ips: Vec::new(),
        ehlo_hostname: "not a host".into(),
    });
    let r = run(cfg, job(&["a@example.org"]), Net::default(), 0);
    let (perm, f) = failure(&r.report.results[0]);
    assert!(!perm);
    assert_eq!(f.enhanced, Some(Enhanced::new(4, 3, 5)));
    assert!(r.transcript.is_empty());
}

/// A connection that never completes times out after the connect timeout and the next
/// host is tried.
#[test]
fn connect_timeout() {
    let net = two_mx(Listener::Blackhole, Listener::Server(server_config()));
    let r = run(config(), job(&["a@example.org"]), net, 31);
    assert_eq!(delivered_by(&r.report.results[0]), Some("mx2.example.org"));
    assert!(r.has("failed mx1.example.org: connection timed out"));
    assert!(r.elapsed >= Duration::from_secs(30));
}

/// A reply that never comes times out (the MAIL reply, 5 minutes): the connection broke
/// before the data, so the next host gets the message; with no other host, a temporary
/// failure.
#[test]
fn reply_timeout() {
    let mut silent = Script::plain();
    silent.silent = Some("MAIL");
    let net = two_mx(
        Listener::Script(silent.clone()),
        Listener::Server(server_config()),
    );
    let r = run(config(), job(&["a@example.org"]), net, 37);
    assert_eq!(
        delivered_by(&r.report.results[0]),
        Some("mx2.example.org"),
        "{:#?} {:?}",
        r.transcript,
        r.report
    );
    assert!(r.elapsed >= Duration::from_secs(300));

    let mut net = Net::default();
    net.mx("example.org", &[(10, "mx1.example.org")])
        .a("mx1.example.org", "192.0.2.1")
        .listen("192.0.2.1:25", Listener::Script(silent));
    let r = run(config(), job(&["a@example.org"]), net, 37);
    let (perm, f) = failure(&r.report.results[0]);
    assert!(!perm);
    assert!(f.detail.contains("timeout"), "{}", f.detail);
}

/// The delivery waits for an effect's answer, until `now + wait`.
fn assert_effect_wait(s: &mut DeliverySession, now: Now, wait: Duration) {
    match s.poll(now, &mut Vec::new()) {
        Output::Idle { deadline, timer } => {
            assert_eq!(timer, Some(Timer::Effect));
            assert_eq!(deadline, Some(now.mono + wait));
        }
        o => panic!("{o:?}"),
    }
}

/// A DNS answer that never comes ends the delivery with a temporary failure at the
/// effect deadline.
#[test]
fn dns_timeout() {
    let net = Net {
        dns_silent: true,
        ..Net::default()
    };
    let mut clock = TestClock::new();
    let mut s = DeliverySession::new(Arc::new(config()), job(&["a@example.org"]), clock.now());
    let mut tx = Vec::new();
    assert!(matches!(
        s.poll(clock.now(), &mut tx),
        Output::Effect(_, Effect::Dns(_))
    ));
    assert_effect_wait(&mut s, clock.now(), Duration::from_secs(60));
    clock.advance(Duration::from_secs(59));
    s.handle(clock.now(), Input::Timeout).unwrap();
    assert!(
        matches!(s.poll(clock.now(), &mut tx), Output::Idle { .. }),
        "early timeout is a no-op"
    );

    let r = run(config(), job(&["a@example.org"]), net, 0);
    let (perm, f) = failure(&r.report.results[0]);
    assert!(!perm);
    assert!(f.detail.contains("DNS timed out"), "{}", f.detail);
    assert_eq!(r.elapsed, Duration::from_secs(60));
}

/// The MX plan runs as a check session inside the delivery: its effects go out with the
/// delivery's tokens, its answer deadline is the delivery's `Effect` timer, and when the
/// address lookups after the MX answer never come, the plan itself concludes (a temporary
/// failure naming the host) at that deadline; the late answer is ignored.
#[test]
fn mx_plan_deadline_is_forwarded() {
    let mut net = Net::default();
    net.mx("example.org", &[(10, "mx1.example.org")]);
    let mut clock = TestClock::new();
    let mut s = DeliverySession::new(Arc::new(config()), job(&["a@example.org"]), clock.now());
    let mut tx = Vec::new();
    let Output::Effect(t0, Effect::Dns(ls)) = s.poll(clock.now(), &mut tx) else {
        panic!("expected the MX question");
    };
    let answers = ls.iter().map(|l| net.lookup(l)).collect();
    clock.advance(Duration::from_secs(10));
    s.handle(clock.now(), Input::Completed(t0, Completion::Dns(answers)))
        .unwrap();
    let Output::Effect(t1, Effect::Dns(addrs)) = s.poll(clock.now(), &mut tx) else {
        panic!("expected the address questions");
    };
    assert_ne!(t1, t0);
    assert!(
        addrs.iter().all(|l| l.name == "mx1.example.org"),
        "{addrs:?}"
    );
    assert_effect_wait(&mut s, clock.now(), Duration::from_secs(60));
    clock.advance(Duration::from_secs(60));
    s.handle(clock.now(), Input::Timeout).unwrap();
    let late = addrs.iter().map(|_| LookupResult::NxDomain).collect();
    s.handle(clock.now(), Input::Completed(t1, Completion::Dns(late)))
        .unwrap();
    let done = (0..100).any(|_| matches!(s.poll(clock.now(), &mut tx), Output::Done));
    assert!(done, "the delivery ends at the deadline");
    let report = s.report().expect("a report once done");
    let (perm, f) = failure(&report.results[0]);
    assert!(!perm);
    assert!(
        f.detail
            .contains("looking up mail servers for example.org: mx1.example.org: DNS timed out"),
        "{}",
        f.detail
    );
}

/// IPv6 is tried before IPv4 for a host with both; the transport's family switches are
/// obeyed.
#[test]
fn address_families() {
    let mk = || {
        let mut n = Net::default();
        n.mx("example.org", &[(10, "mx1.example.org")])
            .a("mx1.example.org", "2001:db8::1")
            .a("mx1.example.org", "192.0.2.1")
            .listen("[2001:db8::1]:25", Listener::Refuse)
            .listen("192.0.2.1:25", Listener::Server(server_config()));
        n
    };
    let cases: [(bool, bool, &[&str], bool); 3] = [
        (
            true,
            true,
            &[
                "mx1.example.org [2001:db8::1]:25",
                "mx1.example.org 192.0.2.1:25",
            ],
            true,
        ),
        (true, false, &["mx1.example.org 192.0.2.1:25"], true),
        (false, true, &["mx1.example.org [2001:db8::1]:25"], false),
    ];
    for (ipv4, ipv6, want, delivered) in cases {
        let mut cfg = config();
        cfg.transport = Transport::Direct(TransportDirect { ipv4, ipv6 });
        let r = run(cfg, job(&["a@example.org"]), mk(), 41);
        assert_eq!(r.connects(), want, "{ipv4} {ipv6}");
        assert_eq!(delivered_by(&r.report.results[0]).is_some(), delivered);
    }

    // Configured source addresses: the one of the destination's family is bound.
    let mut cfg = config();
    cfg.source_ips = vec![
        "192.0.2.200".parse().unwrap(),
        "2001:db8::200".parse().unwrap(),
    ];
    let r = run(cfg, job(&["a@example.org"]), mk(), 41);
    let binds: Vec<&String> = r
        .transcript
        .iter()
        .filter(|l| l.starts_with("bind "))
        .collect();
    assert_eq!(binds, ["bind 2001:db8::200", "bind 192.0.2.200"]);
}

/// Implicit TLS to a relay whose certificate does not match its name: the handshake
/// fails inside the machine, a temporary failure with a TLS result for the report; no
/// SMTP command is sent in plaintext.
#[test]
fn implicit_tls_verification_failure() {
    let mut cfg = config();
    cfg.pkix = Some(testkit::client_tls());
    cfg.transport = Transport::Smarthost(TransportSmtp {
        host: "relay.example".into(),
        port: 465,
        tls: SmtpTls::Implicit { verify: true },
        auth: None,
    });
    let mut sc = ServerConfig::new("mox.example");
    sc.tls = Some(testkit::server_tls());
    sc.implicit_tls = true;
    let mut net = Net::default();
    net.a("relay.example", "192.0.2.9")
        .listen("192.0.2.9:465", Listener::Server(Arc::new(sc)));
    let r = run(cfg, job(&["a@example.org"]), net, 47);
    let (perm, f) = failure(&r.report.results[0]);
    assert!(!perm, "{f:?}");
    assert!(!r.has("C: "), "{:#?}", r.transcript);
    assert!(
        r.has("tls relay.example implicit certificate-host-mismatch"),
        "{:#?}",
        r.transcript
    );
    assert!(r.stored.is_empty());
}

/// The TLS requirement per host from a policy layer: a skipped host is passed over, a
/// failed one fails the recipients permanently without connecting.
#[test]
fn host_tls_from_policy() {
    let mut cfg = config();
    cfg.host_tls = HostTlsSource::Ask;
    let mut net = two_mx(
        Listener::Server(server_config()),
        Listener::Server(server_config()),
    );
    net.host_tls.insert(
        "mx1.example.org".into(),
        HostTls::Skip("MX host does not match the MTA-STS policy".into()),
    );
    let r = run(cfg.clone(), job(&["a@example.org"]), net, 43);
    assert_eq!(delivered_by(&r.report.results[0]), Some("mx2.example.org"));
    assert_eq!(r.connects(), ["mx2.example.org 192.0.2.2:25"]);
    assert!(r.has("policy mx1.example.org"));

    let mut net = two_mx(
        Listener::Server(server_config()),
        Listener::Server(server_config()),
    );
    net.host_tls.insert(
        "mx1.example.org".into(),
        HostTls::Fail {
            enhanced: Enhanced::new(5, 7, 10),
            detail: "REQUIRETLS: no verified TLS possible".into(),
        },
    );
    let r = run(cfg, job(&["a@example.org"]), net, 43);
    let (perm, f) = failure(&r.report.results[0]);
    assert!(perm);
    assert_eq!(enhanced(f), Some(Enhanced::new(5, 7, 10)));
    assert!(r.connects().is_empty());
}

/// A TLS requirement that is not answered in time: the host is skipped (temporarily) at
/// the effect deadline, and the next host's requirement is asked for.
#[test]
fn host_tls_timeout() {
    let mut cfg = config();
    cfg.host_tls = HostTlsSource::Ask;
    let mut net = two_mx(
        Listener::Server(server_config()),
        Listener::Server(server_config()),
    );
    net.policy_silent = true;
    let r = run(cfg, job(&["a@example.org"]), net, 59);
    let (perm, f) = failure(&r.report.results[0]);
    assert!(!perm);
    assert!(
        f.detail.contains("TLS policy not known in time"),
        "{}",
        f.detail
    );
    assert_eq!(f.host.as_deref(), Some("mx2.example.org"));
    assert!(r.connects().is_empty());
    assert_eq!(r.elapsed, Duration::from_secs(120));
}

/// DANE as a policy verdict fed in per host: TLSA records that do not match the first MX
/// host's certificate fail its handshake (reported under the `tlsa` policy) and the second
/// host, whose records match, gets the message.
#[test]
fn dane_verdict_per_host() {
    let sha256 = |b: &[u8]| {
        ring::digest::digest(&ring::digest::SHA256, b)
            .as_ref()
            .to_vec()
    };
    let dane = |data: Vec<u8>| {
        HostTls::Connect(HostTlsConnect {
            mode: TlsMode::RequiredStartTls,
            verify: Verify::Dane(DaneCheck::new(vec![crate::tls::Tlsa {
                usage: 3,
                selector: 0,
                matching: 1,
                data,
            }])),
            policy: TlsPolicyKind::Tlsa,
        })
    };
    let mut cfg = config();
    cfg.host_tls = HostTlsSource::Ask;
    let mut net = two_mx(
        Listener::Server(server_config()),
        Listener::Server(server_config()),
    );
    net.host_tls.insert(
        "mx1.example.org".into(),
        dane(sha256(b"another certificate")),
    );
    net.host_tls.insert(
        "mx2.example.org".into(),
        dane(sha256(&testkit::server_cert_der())),
    );
    let r = run(cfg, job(&["a@example.org"]), net, 53);
    assert_eq!(
        delivered_by(&r.report.results[0]),
        Some("mx2.example.org"),
        "{:#?}",
        r.transcript
    );
    let tls: Vec<(&str, TlsPolicyKind, bool)> = r
        .report
        .tls
        .iter()
        .map(|t| {
            (
                t.mx_host.as_str(),
                t.policy,
                matches!(t.result, TlsResult::Established(_)),
            )
        })
        .collect();
    assert_eq!(
        tls,
        [
            ("mx1.example.org", TlsPolicyKind::Tlsa, false),
            ("mx2.example.org", TlsPolicyKind::Tlsa, true)
        ]
    );
}

/// A reporting verification (MTA-STS `testing`, `TLS-Required: No`) whose certificate
/// check fails: the message is still delivered by the first MX host, over TLS, and the
/// connection's TLS record is a failure with its RFC 8460 result type (it used to be
/// recorded as a success, so the TLS report never showed the problem); a check that
/// passes is recorded as established.
#[test]
fn reporting_verdict_delivers_and_records_failure() {
    let ee = crate::tls::Tlsa::for_certificate(3, 1, 1, &testkit::server_cert_der()).unwrap();
    let cases = [
        (
            Verify::DaneReport(DaneCheck::new(vec![crate::tls::Tlsa {
                data: vec![0; 32],
                ..ee.clone()
            }])),
            TlsPolicyKind::Tlsa,
            Some("validation-failure"),
        ),
        (
            Verify::DaneReport(DaneCheck::new(vec![ee])),
            TlsPolicyKind::Tlsa,
            None,
        ),
        (
            Verify::PkixReport({
                let mut roots = rustls::RootCertStore::empty();
                roots
                    .add(rustls::pki_types::CertificateDer::from(
                        testkit::server_cert_der(),
                    ))
                    .unwrap();
                Arc::new(roots)
            }),
            TlsPolicyKind::Sts,
            // The test certificate is for mox.example, not the MX host.
            Some("certificate-host-mismatch"),
        ),
    ];
    for (verify, policy, want) in cases {
        let name = format!("{verify:?}");
        let mut cfg = config();
        cfg.host_tls = HostTlsSource::Ask;
        let mut net = two_mx(
            Listener::Server(server_config()),
            Listener::Server(server_config()),
        );
        net.host_tls.insert(
            "mx1.example.org".into(),
            HostTls::Connect(HostTlsConnect {
                mode: TlsMode::Opportunistic,
                verify,
                policy,
            }),
        );
        let r = run(cfg, job(&["a@example.org"]), net, 53);
        assert_eq!(
            delivered_by(&r.report.results[0]),
            Some("mx1.example.org"),
            "{name}: {:#?}",
            r.transcript
        );
        assert_eq!(r.report.tls.len(), 1, "{name}: {:?}", r.report.tls);
        let t = &r.report.tls[0];
        assert_eq!(t.policy, policy, "{name}");
        match (&t.result, want) {
            (TlsResult::Failed { result_type, .. }, Some(w)) => assert_eq!(*result_type, w),
            (TlsResult::Established(_), None) => {}
            (other, _) => panic!("{name}: {other:?}, want {want:?}"),
        }
    }
}

/// The MX results of a mixed scenario for a chunking seed.
fn mixed(seed: u64) -> (Vec<AttemptResult>, Vec<String>) {
    let rcpts = ["bad@example.org", "ok@example.org", "busy@example.org"];
    let mut results = Vec::new();
    let mut transcript = Vec::new();
    let mut add = |r: Run| {
        results.extend(r.report.results);
        transcript.extend(r.transcript);
    };

    // A broken STARTTLS on the first MX, per-recipient answers from the second.
    let mut garbage = Script::plain();
    garbage.starttls = StartTlsScript::Garbage;
    let net = two_mx(Listener::Script(garbage), Listener::Server(server_config()));
    add(run(config(), job(&rcpts), net, seed));

    // Through a SOCKS5 proxy with authentication.
    let mut cfg = config();
    cfg.transport = Transport::Socks5(TransportSocks5 {
        proxy: "192.0.2.50:1080".parse().unwrap(),
        remote_ips: Vec::new(),
        ehlo_hostname: "proxy.example".into(),
    });
    cfg.proxy_auth = Some(("u".into(), "p".into()));
    let mut net = two_mx(Listener::Refuse, Listener::Server(server_config()));
    net.listen("192.0.2.50:1080", Listener::Socks5(true));
    add(run(cfg, job(&rcpts), net, seed));

    // Implicit TLS submission with AUTH.
    let mut cfg = config();
    cfg.pkix = Some(testkit::client_tls());
    cfg.transport = Transport::Submission(TransportSubmission {
        host: "mox.example".into(),
        port: 465,
        implicit_tls: true,
        auth: SmtpAuth {
            username: "mjl@mox.example".into(),
            password: "secret".into(),
            mechanisms: Vec::new(),
        },
    });
    let mut sc = ServerConfig::new("mox.example");
    sc.tls = Some(testkit::server_tls());
    sc.implicit_tls = true;
    sc.submission = true;
    let mut net = Net::default();
    net.a("mox.example", "192.0.2.7")
        .listen("192.0.2.7:465", Listener::Server(Arc::new(sc)));
    add(run(cfg, job(&rcpts), net, seed));
    (results, transcript)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any split of the byte streams gives the same per-recipient results and the same
    /// conversation.
    #[test]
    fn chunking_invariance(seed in 1u64..u64::MAX) {
        let (want, want_t) = mixed(0);
        let (got, got_t) = mixed(seed);
        prop_assert_eq!(got, want);
        prop_assert_eq!(got_t, want_t);
    }
}

/// The RFC 8460 result types of TLS failures. rustls's Display text was not recognized at
/// first: a name mismatch was reported as `validation-failure`.
#[test]
fn tls_result_types() {
    let cases = [
        ("STARTTLS refused", "starttls-not-supported"),
        (
            "invalid peer certificate: certificate not valid for name \"x\"",
            "certificate-host-mismatch",
        ),
        (
            "InvalidCertificate(NotValidForName)",
            "certificate-host-mismatch",
        ),
        (
            "invalid peer certificate: certificate expired",
            "certificate-expired",
        ),
        (
            "invalid peer certificate: UnknownIssuer",
            "certificate-not-trusted",
        ),
        (
            "invalid peer certificate: unknown issuer",
            "certificate-not-trusted",
        ),
        ("received corrupt message", "validation-failure"),
    ];
    for (detail, want) in cases {
        assert_eq!(result_type(detail), want, "{detail}");
    }
}

// ---- the delivery machine with the TLS policy machine ----

/// example.org with MX mx1.example.org (10) and mox.example (20, whose certificate the
/// test roots trust), both real server sessions, and the policy machine answering
/// `HostTls`; `sts` is the MTA-STS policy served (with its record), if any.
fn policy_net(sts: Option<&str>) -> (DeliveryConfig, Net) {
    let mut cfg = config();
    cfg.host_tls = HostTlsSource::Ask;
    let mut net = Net::default();
    net.mx(
        "example.org",
        &[(10, "mx1.example.org"), (20, "mox.example")],
    )
    .a("mx1.example.org", "192.0.2.1")
    .a("mox.example", "192.0.2.2")
    .listen("192.0.2.1:25", Listener::Server(server_config()))
    .listen("192.0.2.2:25", Listener::Server(server_config()));
    let mut pc = PolicyConfig::new(true);
    pc.pkix = Some(testkit::client_tls());
    let mut fetch = HashMap::new();
    if let Some(body) = sts {
        net.dns.insert(
            Lookup {
                name: "_mta-sts.example.org".into(),
                rtype: RecordType::Txt,
            },
            LookupResult::Records {
                records: vec![Record::Txt(vec![b"v=STSv1; id=1;".to_vec()])],
                authentic: false,
            },
        );
        fetch.insert(
            policy_url("example.org"),
            Ok(FetchResponse {
                status: 200,
                content_type: Some("text/plain".into()),
                body: body.as_bytes().to_vec(),
            }),
        );
    }
    net.policy = Some(PolicyWorld { config: pc, fetch });
    (cfg, net)
}

fn tls_summary(r: &Run) -> Vec<(String, TlsPolicyKind, String)> {
    r.report
        .tls
        .iter()
        .map(|t| {
            (
                t.mx_host.clone(),
                t.policy,
                match &t.result {
                    TlsResult::Established(_) => "established".to_string(),
                    TlsResult::Plaintext => "plaintext".to_string(),
                    TlsResult::Failed { result_type, .. } => result_type.to_string(),
                },
            )
        })
        .collect()
}

/// The delivery machine paired with the policy machine, MTA-STS enforce listing only
/// mox.example: mx1.example.org is never connected to (MX mismatch), mox.example gets
/// the message over PKIX-verified TLS, reported under the `sts` policy.
#[test]
fn pair_sts_enforce_mismatch() {
    let (cfg, net) = policy_net(Some(
        "version: STSv1\nmode: enforce\nmx: mox.example\nmax_age: 86400\n",
    ));
    let r = run(cfg, job(&["a@example.org"]), net, 61);
    assert_eq!(
        delivered_by(&r.report.results[0]),
        Some("mox.example"),
        "{:#?}",
        r.transcript
    );
    assert_eq!(r.connects(), ["mox.example 192.0.2.2:25"]);
    assert!(r.has("verdict mx1.example.org skip:mismatch"));
    assert!(r.has("fetch https://mta-sts.example.org/.well-known/mta-sts.txt"));
    assert_eq!(
        tls_summary(&r),
        [(
            "mox.example".to_string(),
            TlsPolicyKind::Sts,
            "established".to_string()
        )]
    );
}

/// MTA-STS enforce listing both hosts: mx1.example.org's certificate is not valid for its
/// name, so its verified STARTTLS fails (no plaintext fallback) and mox.example, whose
/// certificate verifies, gets the message. Without a policy the same hosts take the
/// message over unverified TLS at the first host.
#[test]
fn pair_sts_enforce_verification() {
    let (cfg, net) = policy_net(Some(
        "version: STSv1\nmode: enforce\nmx: mx1.example.org\nmx: mox.example\nmax_age: 86400\n",
    ));
    let r = run(cfg, job(&["a@example.org"]), net, 67);
    assert_eq!(
        delivered_by(&r.report.results[0]),
        Some("mox.example"),
        "{:#?}",
        r.transcript
    );
    assert_eq!(
        tls_summary(&r),
        [
            (
                "mx1.example.org".to_string(),
                TlsPolicyKind::Sts,
                "certificate-host-mismatch".to_string()
            ),
            (
                "mox.example".to_string(),
                TlsPolicyKind::Sts,
                "established".to_string()
            )
        ]
    );

    let (cfg, net) = policy_net(None);
    let r = run(cfg, job(&["a@example.org"]), net, 67);
    assert_eq!(delivered_by(&r.report.results[0]), Some("mx1.example.org"));
    assert_eq!(
        tls_summary(&r),
        [(
            "mx1.example.org".to_string(),
            TlsPolicyKind::NoPolicy,
            "established".to_string()
        )]
    );
}

/// REQUIRETLS with no MTA-STS or DANE: the policy machine fails the first host and the
/// delivery fails permanently with 5.7.10 without connecting anywhere.
#[test]
fn pair_requiretls_without_policy() {
    let (cfg, net) = policy_net(None);
    let mut j = job(&["a@example.org"]);
    j.requiretls = Some(true);
    let r = run(cfg, j, net, 71);
    let (perm, f) = failure(&r.report.results[0]);
    assert!(perm);
    assert_eq!(enhanced(f), Some(Enhanced::new(5, 7, 10)));
    assert!(r.connects().is_empty());
}

/// DANE through both machines: a signed zone whose TLSA record (3 0 1) matches the server
/// certificate: STARTTLS required and verified by DANE, reported under `tlsa`.
#[test]
fn pair_dane() {
    let (cfg, mut net) = policy_net(None);
    let sha = ring::digest::digest(&ring::digest::SHA256, &testkit::server_cert_der())
        .as_ref()
        .to_vec();
    for (name, rtype, records) in [
        (
            "example.org",
            RecordType::Mx,
            vec![Record::Mx {
                preference: 10,
                host: "mx1.example.org".into(),
            }],
        ),
        (
            "mx1.example.org",
            RecordType::A,
            vec![Record::A("192.0.2.1".parse().unwrap())],
        ),
        (
            "_25._tcp.mx1.example.org",
            RecordType::Tlsa,
            vec![Record::Tlsa {
                usage: 3,
                selector: 0,
                matching: 1,
                data: sha,
            }],
        ),
    ] {
        net.dns.insert(
            Lookup {
                name: name.into(),
                rtype,
            },
            LookupResult::Records {
                records,
                authentic: true,
            },
        );
    }
    let r = run(cfg, job(&["a@example.org"]), net, 73);
    assert_eq!(
        delivered_by(&r.report.results[0]),
        Some("mx1.example.org"),
        "{:#?}",
        r.transcript
    );
    assert!(r.has("verdict mx1.example.org required/dane=mx1.example.org/abort/tlsa"));
    assert_eq!(
        tls_summary(&r),
        [(
            "mx1.example.org".to_string(),
            TlsPolicyKind::Tlsa,
            "established".to_string()
        )]
    );
}

/// A DANE mismatch (TLSA 3 0 1 that does not match the certificate) defers the message
/// (RFC 7672 2.2; Postfix: deferred 4.7.5). It used to fail permanently, as the TLS client
/// marks verification failures permanent for REQUIRETLS.
#[test]
fn pair_dane_mismatch_is_temporary() {
    let (cfg, mut net) = policy_net(None);
    for (name, rtype, records) in [
        (
            "example.org",
            RecordType::Mx,
            vec![Record::Mx {
                preference: 10,
                host: "mx1.example.org".into(),
            }],
        ),
        (
            "mx1.example.org",
            RecordType::A,
            vec![Record::A("192.0.2.1".parse().unwrap())],
        ),
        (
            "_25._tcp.mx1.example.org",
            RecordType::Tlsa,
            vec![Record::Tlsa {
                usage: 3,
                selector: 0,
                matching: 1,
                data: vec![7; 32],
            }],
        ),
    ] {
        net.dns.insert(
            Lookup {
                name: name.into(),
                rtype,
            },
            LookupResult::Records {
                records,
                authentic: true,
            },
        );
    }
    let r = run(cfg, job(&["a@example.org"]), net, 74);
    let (perm, f) = failure(&r.report.results[0]);
    assert!(!perm, "{f:?}\n{:#?}", r.transcript);
    assert_eq!(enhanced(f), Some(Enhanced::new(4, 7, 5)));
    assert!(r.stored.is_empty());
}

/// The TLS result and the connection level come from the client error's kind, not its text:
/// a refused STARTTLS and a failed handshake used to be one `Tls(String)` kind, told apart
/// (and the certificate problem found) only by matching the text.
#[test]
fn tls_results_and_levels_from_kinds() {
    use crate::client::{PeerIncompatible, PeerMisbehaved, Transport as Tr};
    use crate::tls::{TlsFailure, TlsFailureReason as R};
    let err = |stage, kind| ClientError {
        stage,
        permanent: false,
        kind,
        reply: None,
    };
    let tls = |reason| {
        err(
            Stage::StartTls,
            ErrorKind::Transport(Tr::Tls(TlsFailure {
                reason,
                detail: "handshake failed".into(),
            })),
        )
    };
    let cases = [
        (tls(R::CertificateExpired), "certificate-expired"),
        (tls(R::CertificateHostMismatch), "certificate-host-mismatch"),
        (tls(R::CertificateNotTrusted), "certificate-not-trusted"),
        (tls(R::Other), "validation-failure"),
        (
            err(
                Stage::StartTls,
                ErrorKind::PeerIncompatible(PeerIncompatible::StartTls),
            ),
            "starttls-not-supported",
        ),
    ];
    for (e, want) in cases {
        assert!(e.is_tls() && is_connection_level(&e), "{e:?}");
        match classify(None, Some(&e)) {
            Some(TlsResult::Failed { result_type, .. }) => assert_eq!(result_type, want),
            other => panic!("{e:?}: {other:?}"),
        }
    }
    // Not TLS: an I/O error or a protocol error after EHLO is a plaintext session, and
    // only at the greeting is it a connection-level failure.
    for kind in [
        ErrorKind::Transport(Tr::Io("reset".into())),
        ErrorKind::PeerMisbehaved(PeerMisbehaved::UnexpectedReply),
    ] {
        let late = err(Stage::Mail, kind.clone());
        assert!(!late.is_tls() && !is_connection_level(&late), "{late:?}");
        assert_eq!(classify(None, Some(&late)), Some(TlsResult::Plaintext));
        let early = err(Stage::Greeting, kind);
        assert!(is_connection_level(&early));
        assert_eq!(classify(None, Some(&early)), None);
    }
}

/// The stored TLS result record and history text (moved from the binary's second copy of
/// these types).
#[test]
fn tls_attempt_record() {
    let a = TlsAttempt {
        policy_domain: "example.net".into(),
        mx_host: "mx.example.net".into(),
        receiving_ip: "127.0.0.1".parse().unwrap(),
        policy: TlsPolicyKind::NoPolicy,
        mode: "required",
        result: TlsResult::Failed {
            result_type: "certificate-not-trusted",
            detail: "UnknownIssuer".into(),
        },
    };
    let v: serde_json::Value = serde_json::from_slice(&a.to_json()).unwrap();
    assert_eq!(v["policy-type"], "no-policy-found");
    assert_eq!(v["receiving-ip"], "127.0.0.1");
    assert_eq!(v["failure-count"], 1);
    assert_eq!(v["success-count"], 0);
    assert_eq!(v["result-type"], "certificate-not-trusted");
    assert!(a.is_reportable());
    assert_eq!(
        a.result_text(),
        "failed: certificate-not-trusted: UnknownIssuer"
    );
    let ok = TlsAttempt {
        result: TlsResult::Established(TlsInfo {
            version: "TLSv1_3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            sni: None,
        }),
        ..a.clone()
    };
    assert_eq!(ok.result_text(), "TLSv1_3 TLS13_AES_128_GCM_SHA256");
    let plain = TlsAttempt {
        result: TlsResult::Plaintext,
        ..a
    };
    assert!(!plain.is_reportable());
    assert_eq!(plain.result_text(), "plaintext");
}

#[test]
fn tls_classify_cases() {
    let info = TlsInfo {
        version: "TLSv1_3".into(),
        cipher: "TLS13_AES_128_GCM_SHA256".into(),
        sni: None,
    };
    let err = |stage, kind| ClientError {
        stage,
        permanent: false,
        kind,
        reply: None,
    };
    let tls_err = err(
        Stage::StartTls,
        ErrorKind::PeerIncompatible(PeerIncompatible::StartTls),
    );
    let greeting = err(
        Stage::Greeting,
        ErrorKind::Transport(client::Transport::Closed),
    );
    let rcpt = err(Stage::Rcpt, ErrorKind::TemporaryReply);
    assert!(matches!(
        classify(Some(&info), Some(&rcpt)),
        Some(TlsResult::Established(_))
    ));
    assert!(matches!(
        classify(None, Some(&tls_err)),
        Some(TlsResult::Failed {
            result_type: "starttls-not-supported",
            ..
        })
    ));
    assert_eq!(classify(None, Some(&greeting)), None);
    assert_eq!(classify(None, Some(&rcpt)), Some(TlsResult::Plaintext));
    assert_eq!(classify(None, None), Some(TlsResult::Plaintext));
}

// ---- connection reuse ----

/// A job for `rcpts` whose message says `n`.
fn job_n(rcpts: &[&str], n: usize) -> Job {
    let mut j = job(rcpts);
    j.message = Arc::from(format!("Subject: message {n}\r\n\r\nbody {n}\r\n").as_bytes());
    j
}

/// rmox opened one connection per message where Postfix delivers dozens over one: the
/// jobs that follow the first go over its connection, one transaction each, without a new
/// connection, greeting, EHLO or TLS handshake; each job has its own report.
#[test]
fn following_jobs_reuse_the_connection() {
    for seed in [0, 5, 11] {
        let net = two_mx(Listener::Server(server_config()), Listener::Refuse);
        let follow = vec![
            job_n(&["b@example.org"], 2),
            job_n(&["c@example.org", "d@example.org"], 3),
        ];
        let r = run_jobs(config(), job_n(&["a@example.org"], 1), follow, net, seed);
        assert_eq!(
            r.connects(),
            ["mx1.example.org 192.0.2.1:25"],
            "seed {seed}"
        );
        let count = |l: &str| r.transcript.iter().filter(|t| *t == l).count();
        assert_eq!(
            (count("C: EHLO"), count("C: STARTTLS")),
            (2, 1),
            "{:#?}",
            r.transcript
        );
        assert_eq!(
            (count("C: MAIL"), count("C: QUIT")),
            (3, 1),
            "{:#?}",
            r.transcript
        );
        assert_eq!(r.reports.len(), 3);
        for (i, (rep, n)) in r.reports.iter().zip([1, 1, 2]).enumerate() {
            assert_eq!(rep.results.len(), n, "job {i}");
            for res in &rep.results {
                assert_eq!(
                    delivered_by(res),
                    Some("mx1.example.org"),
                    "job {i}: {res:?}"
                );
            }
            assert_eq!(rep.remote_mta.as_deref(), Some("mx1.example.org"));
            assert_eq!(rep.tls.len(), 1, "job {i}: the connection it used");
        }
        assert_eq!(r.stored.len(), 3);
        for (i, t) in r.stored.iter().enumerate() {
            let want = format!("body {}", i + 1);
            assert!(
                String::from_utf8_lossy(&t.message.to_vec()).contains(&want),
                "transaction {i} carries message {}",
                i + 1
            );
        }
        // The TLS report sees the connection once.
        assert_eq!(count("tls mx1.example.org opportunistic established"), 1);
    }
}

/// A job whose recipients are all refused leaves the connection healthy: the next job
/// goes over it too.
#[test]
fn refused_recipients_do_not_end_reuse() {
    let net = two_mx(Listener::Server(server_config()), Listener::Refuse);
    let follow = vec![job_n(&["b@example.org"], 2)];
    let r = run_jobs(config(), job_n(&["bad@example.org"], 1), follow, net, 3);
    assert_eq!(r.connects().len(), 1, "{:#?}", r.transcript);
    let (permanent, f) = failure(&r.reports[0].results[0]);
    assert!(permanent, "{f:?}");
    assert_eq!(
        delivered_by(&r.reports[1].results[0]),
        Some("mx1.example.org")
    );
    assert_eq!(r.stored.len(), 1);
}

/// When no host can be reached, the jobs waiting behind the first end with its result
/// (each with one result per recipient), instead of trying every host again.
#[test]
fn unreachable_destination_ends_every_job() {
    let net = two_mx(Listener::Refuse, Listener::Refuse);
    let follow = vec![job_n(&["b@example.org", "c@example.org"], 2)];
    let r = run_jobs(config(), job_n(&["a@example.org"], 1), follow, net, 0);
    assert_eq!(r.connects().len(), 2, "one try per address, not per job");
    assert_eq!(r.reports.len(), 2);
    assert_eq!(r.reports[1].results.len(), 2);
    for rep in &r.reports {
        for res in &rep.results {
            let (permanent, f) = failure(res);
            assert!(
                !permanent && f.detail.contains("connection refused"),
                "{f:?}"
            );
        }
    }
}
