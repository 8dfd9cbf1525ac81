//! A sans-IO DNS stub resolver on `hickory-proto`: questions in, datagrams out, answers back.
//!
//! It has the session shape every machine here has: one `handle(now, input)`, then `poll`
//! until `Idle`; effects and answers carry tokens.
//!
//! ```text
//! let mut r = Resolver::new(config, rng);
//! r.handle(now, ResolverInput::Query(id, lookup));        // a question; the answer comes later
//! r.handle(now, ResolverInput::Udp { from, bytes });      // a datagram from a server
//! r.handle(now, ResolverInput::Tcp { conn, bytes });      // bytes read from a TCP connection
//! r.handle(now, ResolverInput::TcpFailed(conn));          // connect/read/write failed or closed
//! r.handle(now, ResolverInput::Timeout);                  // a deadline passed; early calls are no-ops
//! loop {                                                  // after every handle: drain until Idle
//!     match r.poll(now) {
//!         ResolverOutput::SendUdp { server, bytes } => { /* send one datagram */ }
//!         ResolverOutput::SendTcp { server, conn, bytes } => { /* connect (once per conn), write */ }
//!         ResolverOutput::CloseTcp { conn } => { /* close that connection */ }
//!         ResolverOutput::Answer(id, result) => { /* hand result to whoever asked */ }
//!         ResolverOutput::Idle { deadline, timer } => break, // wake at deadline: Timeout
//!     }
//! }
//! ```
//!
//! * A `now` earlier than one given before is ignored: the resolver goes on at the latest
//!   time it knows, so a clock stepping back cannot move a retry earlier or fire it twice.
//! * [`Resolver::query`] is `Query` with the next free id, for callers that do not keep
//!   their own ids.
//!
//! * Each question is sent over UDP with EDNS0 (payload 1232, DO bit set) and recursion
//!   desired, with a random 16-bit ID from the [`Rng`]. A truncated answer (TC bit) is asked
//!   again over TCP to the same server: `SendTcp` names a new connection token and carries
//!   the message with its 2-byte length prefix. TCP bytes may arrive in any chunks.
//! * Answers are accepted only when ID, question and source (server address, or the TCP
//!   connection) match an outstanding query; anything else is dropped (anti-spoofing).
//! * A query that gets no answer within `timeout` is sent to the next server; after
//!   `attempts` rounds over all servers it is answered with `TempFail`. REFUSED, NOTIMP and
//!   FORMERR also move on to the next server; SERVFAIL is a `TempFail` at once.
//! * CNAME chains are followed, inside one answer and, when the server returned only the
//!   CNAME, by asking for the target; at most [`MAX_CNAME_CHAIN`] links.
//! * The AD bit is reported (`authentic`) only when the config says the servers are trusted.
//! * A question asked again while the same lookup is in flight shares that query: one
//!   query on the wire, the same answer for both ids.
//! * Answers are cached for their TTL (at most `max_ttl`), NXDOMAIN and NODATA for the SOA
//!   minimum (at most `max_negative_ttl`); temporary failures are not cached. When the cache
//!   is full, expired entries go first, then the entry closest to expiry.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType as HRecordType};

use super::zone::{normalize_name, MAX_CNAME_CHAIN};
use super::{Lookup, LookupResult, Record, RecordType};
use crate::{Now, Rng, TimerTable, Token};

/// EDNS0 UDP payload size advertised (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Resolver settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Upstream recursive resolvers, tried in order.
    pub servers: Vec<SocketAddr>,
    /// How long to wait for one answer before trying the next server.
    pub timeout: Duration,
    /// Rounds over all servers before giving up (at least 1).
    pub attempts: u32,
    /// Whether the servers' AD bit is believed (loopback or explicitly trusted resolvers).
    pub trust_ad: bool,
    /// Cache entries kept at most (0 disables the cache).
    pub cache_size: usize,
    /// Longest time a positive answer is cached.
    pub max_ttl: Duration,
    /// Longest time NXDOMAIN or NODATA is cached.
    pub max_negative_ttl: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            servers: Vec::new(),
            timeout: Duration::from_secs(5),
            attempts: 2,
            trust_ad: false,
            cache_size: 10_000,
            max_ttl: Duration::from_secs(86_400),
            max_negative_ttl: Duration::from_secs(300),
        }
    }
}

/// Names one question given to [`Resolver::query`]; its answer carries the same id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub u64);

/// What the resolver is told: [`Resolver::handle`]'s input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolverInput<'a> {
    /// Ask `Lookup`; the answer comes out of [`Resolver::poll`] as `Answer` with this id. The
    /// caller picks the id (a token it can match); ids of questions still open must differ
    /// (a repeated open id is answered at once with a `TempFail`, and the open question
    /// keeps its own answer).
    Query(QueryId, Lookup),
    /// A datagram from `from`. Anything that is not the answer to an outstanding UDP
    /// question from that server (a stale or spoofed answer) is ignored.
    Udp {
        /// The sender.
        from: SocketAddr,
        /// The datagram.
        bytes: &'a [u8],
    },
    /// Bytes read from TCP connection `conn` (any chunking; the 2-byte length prefix first).
    Tcp {
        /// The connection, as named in `SendTcp`.
        conn: Token,
        /// The bytes.
        bytes: &'a [u8],
    },
    /// TCP connection `conn` failed (connect, read or write) or was closed early.
    TcpFailed(Token),
    /// A deadline may have passed: queries whose deadline is at or before `now` move to the
    /// next server (or fail). Early calls do nothing.
    Timeout,
}

/// The deadlines the resolver keeps; [`ResolverOutput::Idle`] names the next one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResolverTimer {
    /// The wait for the answer to this query from its current server
    /// ([`ResolverConfig::timeout`]); when it passes the next server is asked.
    Retry(QueryId),
}

/// What the resolver wants done, or has concluded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResolverOutput {
    /// Send this datagram to `server`.
    SendUdp {
        /// The DNS server.
        server: SocketAddr,
        /// The DNS message.
        bytes: Vec<u8>,
    },
    /// Open connection `conn` to `server` (if not open yet) and write `bytes`.
    SendTcp {
        /// The DNS server.
        server: SocketAddr,
        /// Names the connection in [`ResolverInput::Tcp`] and [`ResolverInput::TcpFailed`].
        conn: Token,
        /// The DNS message with its 2-byte length prefix.
        bytes: Vec<u8>,
    },
    /// The resolver is done with connection `conn`; close it.
    CloseTcp {
        /// The connection.
        conn: Token,
    },
    /// The answer to a question.
    Answer(QueryId, LookupResult),
    /// Nothing to do until input arrives or `deadline` passes.
    Idle {
        /// When to give [`ResolverInput::Timeout`].
        deadline: Option<Instant>,
        /// The timer that deadline belongs to.
        timer: Option<ResolverTimer>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp(Token),
}

#[derive(Debug)]
struct Pending {
    id: QueryId,
    /// Later questions for the same lookup asked while this one was in flight: they get
    /// the same answer (one query on the wire).
    also: Vec<QueryId>,
    original: Lookup,
    /// The name asked now (the original, or a CNAME target).
    name: String,
    cnames: usize,
    /// Smallest TTL of the CNAMEs followed so far.
    min_ttl: u32,
    tries: u32,
    server: usize,
    txid: u16,
    transport: Transport,
}

#[derive(Debug)]
struct CacheEntry {
    result: LookupResult,
    expires: Instant,
}

/// The stub resolver machine. See the module documentation for the driving contract.
#[derive(Debug)]
pub struct Resolver {
    config: ResolverConfig,
    rng: Rng,
    next_id: u64,
    next_conn: u64,
    pending: BTreeMap<u64, Pending>,
    tcp: HashMap<Token, (u64, Vec<u8>)>,
    timers: TimerTable<u64>,
    out: VecDeque<ResolverOutput>,
    cache: HashMap<Lookup, CacheEntry>,
    /// The latest `now` given; an earlier one is ignored.
    last_now: Option<Now>,
}

/// Reads `nameserver` lines of resolv.conf (port 53); everything else is ignored.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else {
            continue;
        };
        // A zone index (fe80::1%eth0) cannot be kept in a SocketAddr's IpAddr; drop it.
        let addr = addr.split('%').next().unwrap_or(addr);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, 53));
        }
    }
    out
}

fn to_name(name: &str) -> Option<Name> {
    let n = name.strip_suffix('.').unwrap_or(name);
    let labels: Vec<&[u8]> = if n.is_empty() {
        Vec::new()
    } else {
        n.split('.').map(str::as_bytes).collect()
    };
    if labels.iter().any(|l| l.is_empty() || l.len() > 63) || n.len() > 253 {
        return None;
    }
    let mut name = Name::from_labels(labels).ok()?;
    name.set_fqdn(true);
    Some(name)
}

fn from_name(n: &Name) -> String {
    normalize_name(&n.to_ascii())
}

fn h_type(t: RecordType) -> HRecordType {
    match t {
        RecordType::A => HRecordType::A,
        RecordType::Aaaa => HRecordType::AAAA,
        RecordType::Mx => HRecordType::MX,
        RecordType::Txt => HRecordType::TXT,
        RecordType::Ptr => HRecordType::PTR,
        RecordType::Cname => HRecordType::CNAME,
        RecordType::Tlsa => HRecordType::TLSA,
    }
}

/// Converts a hickory record to the checks' form (`None` for types the checks do not use).
pub fn record_from_rdata(d: &RData) -> Option<Record> {
    Some(match d {
        RData::A(a) => Record::A(a.0),
        RData::AAAA(a) => Record::Aaaa(a.0),
        RData::MX(mx) => Record::Mx {
            preference: mx.preference,
            host: from_name(&mx.exchange),
        },
        RData::TXT(t) => Record::Txt(t.txt_data.iter().map(|s| s.to_vec()).collect()),
        RData::PTR(p) => Record::Ptr(from_name(&p.0)),
        RData::CNAME(c) => Record::Cname(from_name(&c.0)),
        RData::TLSA(t) => Record::Tlsa {
            usage: t.cert_usage.into(),
            selector: t.selector.into(),
            matching: t.matching.into(),
            data: t.cert_data.clone(),
        },
        _ => return None,
    })
}

/// Converts a record of the checks' form to hickory's (for tests and fake servers).
#[cfg(test)]
pub fn record_to_rdata(r: &Record) -> Option<RData> {
    use hickory_proto::rr::rdata::{self, tlsa};
    Some(match r {
        Record::A(a) => RData::A(rdata::A(*a)),
        Record::Aaaa(a) => RData::AAAA(rdata::AAAA(*a)),
        Record::Mx { preference, host } => RData::MX(rdata::MX::new(*preference, to_name(host)?)),
        Record::Txt(parts) => RData::TXT(rdata::TXT::from_bytes(
            parts.iter().map(Vec::as_slice).collect(),
        )),
        Record::Ptr(n) => RData::PTR(rdata::PTR(to_name(n)?)),
        Record::Cname(n) => RData::CNAME(rdata::CNAME(to_name(n)?)),
        Record::Tlsa {
            usage,
            selector,
            matching,
            data,
        } => RData::TLSA(rdata::TLSA::new(
            tlsa::CertUsage::from(*usage),
            tlsa::Selector::from(*selector),
            tlsa::Matching::from(*matching),
            data.clone(),
        )),
    })
}

/// Builds a query message: recursion desired, EDNS0 with the DO bit, AD requested when
/// `ad` (RFC 6840 5.7). `None` when the name cannot be encoded.
pub fn encode_query(txid: u16, name: &str, rtype: RecordType, ad: bool) -> Option<Vec<u8>> {
    let mut m = Message::new(txid, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.authentic_data = ad;
    m.add_query(Query::query(to_name(name)?, h_type(rtype)));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    edns.set_dnssec_ok(true);
    edns.set_version(0);
    m.set_edns(edns);
    m.to_vec().ok()
}

/// Whether `msg` asks exactly one question, `name` of type `rtype` (case-insensitive).
fn same_question(msg: &Message, name: &str, rtype: RecordType) -> bool {
    let Some(qname) = to_name(name) else {
        return false;
    };
    match msg.queries.as_slice() {
        [q] => q.name() == &qname && q.query_type() == h_type(rtype),
        _ => false,
    }
}

/// What one response says about the name asked.
enum Parsed {
    /// Final result, with the TTL to cache it for.
    Done(LookupResult, u32),
    /// Only CNAMEs: ask again for this target.
    Follow {
        target: String,
        links: usize,
        ttl: u32,
    },
    /// Try the next server.
    NextServer(String),
    /// Truncated: ask again over TCP.
    Truncated,
}

fn interpret(msg: &Message, qname: &Name, rtype: RecordType, trust_ad: bool) -> Parsed {
    if msg.metadata.truncation {
        return Parsed::Truncated;
    }
    let authentic = trust_ad && msg.metadata.authentic_data;
    let neg_ttl = msg
        .authorities
        .iter()
        .find_map(|r| match &r.data {
            RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
            _ => None,
        })
        .unwrap_or(60);
    // Walk the CNAME chain in the answer section.
    let mut current = qname.clone();
    let mut links = 0usize;
    let mut min_ttl = u32::MAX;
    let want = h_type(rtype);
    loop {
        let here: Vec<_> = msg
            .answers
            .iter()
            .filter(|r| r.name == current && r.record_type() == want)
            .collect();
        if !here.is_empty() {
            let records: Vec<Record> = here
                .iter()
                .filter_map(|r| record_from_rdata(&r.data))
                .collect();
            let ttl = here.iter().map(|r| r.ttl).min().unwrap_or(0).min(min_ttl);
            if records.is_empty() {
                return Parsed::Done(LookupResult::NoData, neg_ttl);
            }
            return Parsed::Done(LookupResult::Records { records, authentic }, ttl);
        }
        let cname = msg.answers.iter().find_map(|r| match &r.data {
            RData::CNAME(c) if r.name == current => Some((c.0.clone(), r.ttl)),
            _ => None,
        });
        match cname {
            Some((target, ttl)) if rtype != RecordType::Cname => {
                links += 1;
                if links > MAX_CNAME_CHAIN {
                    return Parsed::Done(LookupResult::TempFail("CNAME chain too long".into()), 0);
                }
                min_ttl = min_ttl.min(ttl);
                current = target;
            }
            _ => break,
        }
    }
    match msg.metadata.response_code {
        ResponseCode::NoError if links > 0 => Parsed::Follow {
            target: from_name(&current),
            links,
            ttl: min_ttl,
        },
        ResponseCode::NoError => Parsed::Done(LookupResult::NoData, neg_ttl),
        ResponseCode::NXDomain => Parsed::Done(LookupResult::NxDomain, neg_ttl),
        ResponseCode::ServFail => Parsed::Done(
            LookupResult::TempFail("server failure (SERVFAIL)".into()),
            0,
        ),
        other => Parsed::NextServer(format!("server answered {other}")),
    }
}

impl Resolver {
    /// A resolver with `config`; IDs come from `rng`.
    pub fn new(config: ResolverConfig, rng: Rng) -> Resolver {
        Resolver {
            config,
            rng,
            next_id: 0,
            next_conn: 0,
            pending: BTreeMap::new(),
            tcp: HashMap::new(),
            timers: TimerTable::default(),
            out: VecDeque::new(),
            cache: HashMap::new(),
            last_now: None,
        }
    }

    /// Takes one input; drain [`Resolver::poll`] until `Idle` afterwards.
    ///
    /// A `now` earlier than one given before is ignored: the resolver acts at the latest
    /// time it knows.
    pub fn handle(&mut self, now: Now, input: ResolverInput<'_>) {
        let now = self.clock(now);
        match input {
            ResolverInput::Query(id, lookup) => self.handle_query(now, id, lookup),
            ResolverInput::Udp { from, bytes } => self.handle_udp(now, from, bytes),
            ResolverInput::Tcp { conn, bytes } => self.handle_tcp(now, conn, bytes),
            ResolverInput::TcpFailed(conn) => self.handle_tcp_failed(now, conn),
            ResolverInput::Timeout => self.handle_timeout(now),
        }
    }

    /// The time to act at: `now`, unless it is earlier than a time given before.
    fn clock(&mut self, now: Now) -> Now {
        match self.last_now {
            Some(last) if now.mono < last.mono => last,
            _ => {
                self.last_now = Some(now);
                now
            }
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// Questions waiting for an answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Asks a question with the next id no question has used: [`ResolverInput::Query`] for
    /// callers that keep no ids of their own. The answer comes out of [`Resolver::poll`] as
    /// `Answer(id, ..)`, at once when it is cached.
    pub fn query(&mut self, now: Now, lookup: Lookup) -> QueryId {
        let id = QueryId(self.next_id);
        self.handle(now, ResolverInput::Query(id, lookup));
        id
    }

    fn handle_query(&mut self, now: Now, id: QueryId, lookup: Lookup) {
        self.next_id = self.next_id.max(id.0.saturating_add(1));
        // An id still open would make two questions share a key: the new one is refused.
        if self.pending.contains_key(&id.0) || self.pending.values().any(|p| p.also.contains(&id)) {
            self.out.push_back(ResolverOutput::Answer(
                id,
                LookupResult::TempFail("query id already in use".into()),
            ));
            return;
        }
        let lookup = Lookup {
            name: normalize_name(&lookup.name),
            rtype: lookup.rtype,
        };
        if let Some(e) = self.cache.get(&lookup) {
            if e.expires > now.mono {
                self.out
                    .push_back(ResolverOutput::Answer(id, e.result.clone()));
                return;
            }
        }
        if self.config.servers.is_empty() {
            self.out.push_back(ResolverOutput::Answer(
                id,
                LookupResult::TempFail("no DNS servers configured".into()),
            ));
            return;
        }
        if let Some(p) = self.pending.values_mut().find(|p| p.original == lookup) {
            p.also.push(id);
            return;
        }
        let key = id.0;
        let p = Pending {
            id,
            also: Vec::new(),
            name: lookup.name.clone(),
            original: lookup,
            cnames: 0,
            min_ttl: u32::MAX,
            tries: 0,
            server: 0,
            txid: 0,
            transport: Transport::Udp,
        };
        self.pending.insert(key, p);
        self.send(now, key, Transport::Udp);
    }

    /// Sends (or resends) the current question of query `key`.
    fn send(&mut self, now: Now, key: u64, transport: Transport) {
        let txid = self.rng.next_u64() as u16;
        let ad = self.config.trust_ad;
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        let Some(server) = self.config.servers.get(p.server).copied() else {
            return;
        };
        let Some(bytes) = encode_query(txid, &p.name, p.original.rtype, ad) else {
            // A name that cannot be encoded cannot exist.
            self.finish(now, key, LookupResult::NxDomain, 0);
            return;
        };
        p.txid = txid;
        p.tries += 1;
        p.transport = transport;
        match transport {
            Transport::Udp => self
                .out
                .push_back(ResolverOutput::SendUdp { server, bytes }),
            Transport::Tcp(conn) => {
                let mut framed = Vec::with_capacity(bytes.len() + 2);
                framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
                framed.extend_from_slice(&bytes);
                self.tcp.insert(conn, (key, Vec::new()));
                self.out.push_back(ResolverOutput::SendTcp {
                    server,
                    conn,
                    bytes: framed,
                });
            }
        }
        self.timers.set(key, now.mono + self.config.timeout);
    }

    fn close_tcp_of(&mut self, key: u64) {
        if let Some(Transport::Tcp(conn)) = self.pending.get(&key).map(|p| p.transport) {
            if self.tcp.remove(&conn).is_some() {
                self.out.push_back(ResolverOutput::CloseTcp { conn });
            }
        }
    }

    /// The next server, or `TempFail` when every attempt is used.
    fn next_server(&mut self, now: Now, key: u64, why: &str) {
        self.close_tcp_of(key);
        let n = self.config.servers.len() as u32;
        let max = self.config.attempts.max(1).saturating_mul(n);
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        if p.tries >= max {
            let why = format!("{}: {why}", p.name);
            self.finish(now, key, LookupResult::TempFail(why), 0);
            return;
        }
        p.server = (p.server + 1) % self.config.servers.len().max(1);
        self.send(now, key, Transport::Udp);
    }

    fn finish(&mut self, now: Now, key: u64, result: LookupResult, ttl: u32) {
        self.close_tcp_of(key);
        self.timers.stop(key);
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        let ttl = ttl.min(p.min_ttl);
        self.store(now, p.original, &result, ttl);
        for id in p.also {
            self.out
                .push_back(ResolverOutput::Answer(id, result.clone()));
        }
        self.out.push_back(ResolverOutput::Answer(p.id, result));
    }

    fn store(&mut self, now: Now, lookup: Lookup, result: &LookupResult, ttl: u32) {
        if self.config.cache_size == 0 || ttl == 0 {
            return;
        }
        let max = match result {
            LookupResult::Records { .. } => self.config.max_ttl,
            LookupResult::NxDomain | LookupResult::NoData => self.config.max_negative_ttl,
            LookupResult::TempFail(_) => return,
        };
        let life = Duration::from_secs(u64::from(ttl)).min(max);
        if self.cache.len() >= self.config.cache_size && !self.cache.contains_key(&lookup) {
            self.cache.retain(|_, e| e.expires > now.mono);
            if self.cache.len() >= self.config.cache_size {
                let victim = self
                    .cache
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone());
                if let Some(v) = victim {
                    self.cache.remove(&v);
                }
            }
        }
        self.cache.insert(
            lookup,
            CacheEntry {
                result: result.clone(),
                expires: now.mono + life,
            },
        );
    }

    /// A datagram from `from`. Anything that is not the answer to an outstanding UDP
    /// question from that server is ignored.
    fn handle_udp(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) {
        let Ok(msg) = Message::from_vec(bytes) else {
            return;
        };
        // IDs are 16 bits: two outstanding queries may share one, so the question decides.
        let key = self.pending.iter().find_map(|(k, p)| {
            (p.transport == Transport::Udp
                && p.txid == msg.metadata.id
                && self.config.servers.get(p.server) == Some(&from)
                && same_question(&msg, &p.name, p.original.rtype))
            .then_some(*k)
        });
        if let Some(key) = key {
            self.handle_response(now, key, &msg);
        }
    }

    /// Bytes read from TCP connection `conn` (any chunking; the 2-byte length prefix is
    /// expected first).
    fn handle_tcp(&mut self, now: Now, conn: Token, bytes: &[u8]) {
        let Some((key, buf)) = self.tcp.get_mut(&conn) else {
            return;
        };
        buf.extend_from_slice(bytes);
        let key = *key;
        let Some(len) = buf
            .get(..2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return;
        };
        let Some(body) = buf.get(2..2 + len) else {
            return;
        };
        let parsed = Message::from_vec(body);
        let ok = match &parsed {
            Ok(msg) => self
                .pending
                .get(&key)
                .is_some_and(|p| p.txid == msg.metadata.id && p.transport == Transport::Tcp(conn)),
            Err(_) => false,
        };
        match parsed {
            Ok(msg) if ok => self.handle_response(now, key, &msg),
            _ => self.next_server(now, key, "bad answer over TCP"),
        }
    }

    /// TCP connection `conn` failed (connect, read or write) or was closed early.
    fn handle_tcp_failed(&mut self, now: Now, conn: Token) {
        if let Some((key, _)) = self.tcp.remove(&conn) {
            if let Some(p) = self.pending.get_mut(&key) {
                // Already closed: no CloseTcp for it.
                p.transport = Transport::Udp;
            }
            self.next_server(now, key, "TCP connection failed");
        }
    }

    fn handle_response(&mut self, now: Now, key: u64, msg: &Message) {
        let Some(p) = self.pending.get(&key) else {
            return;
        };
        if msg.metadata.message_type != MessageType::Response {
            return;
        }
        let Some(qname) = to_name(&p.name) else {
            return;
        };
        let rtype = p.original.rtype;
        if !same_question(msg, &p.name, rtype) {
            return;
        }
        match interpret(msg, &qname, rtype, self.config.trust_ad) {
            Parsed::Done(result, ttl) => self.finish(now, key, result, ttl),
            Parsed::Truncated => {
                if matches!(p.transport, Transport::Tcp(_)) {
                    self.next_server(now, key, "truncated answer over TCP");
                    return;
                }
                let conn = Token(self.next_conn);
                self.next_conn += 1;
                if let Some(p) = self.pending.get_mut(&key) {
                    // The TCP retry is part of the same attempt.
                    p.tries = p.tries.saturating_sub(1);
                }
                self.send(now, key, Transport::Tcp(conn));
            }
            Parsed::NextServer(why) => self.next_server(now, key, &why),
            Parsed::Follow { target, links, ttl } => {
                self.close_tcp_of(key);
                let Some(p) = self.pending.get_mut(&key) else {
                    return;
                };
                p.cnames += links;
                p.min_ttl = p.min_ttl.min(ttl);
                if p.cnames > MAX_CNAME_CHAIN {
                    self.finish(
                        now,
                        key,
                        LookupResult::TempFail("CNAME chain too long".into()),
                        0,
                    );
                    return;
                }
                p.name = target;
                p.tries = 0;
                self.send(now, key, Transport::Udp);
            }
        }
    }

    /// Deadlines that passed move their queries to the next server (or fail them). Early
    /// calls do nothing.
    fn handle_timeout(&mut self, now: Now) {
        while let Some(key) = self.timers.expired(now.mono) {
            self.next_server(now, key, "timeout");
        }
    }

    /// The next output; `Idle` when there is none.
    pub fn poll(&mut self, _now: Now) -> ResolverOutput {
        match self.out.pop_front() {
            Some(o) => o,
            None => {
                let next = self.timers.next();
                ResolverOutput::Idle {
                    deadline: next.map(|(_, at)| at),
                    timer: next.map(|(key, _)| ResolverTimer::Retry(QueryId(key))),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record as HRecord;
    use proptest::prelude::*;

    const S1: &str = "192.0.2.53:53";
    const S2: &str = "198.51.100.53:53";

    fn now0() -> Now {
        #[allow(clippy::disallowed_methods)]
        let mono = Instant::now();
        Now {
            mono,
            wall: crate::UnixTime(1_700_000_000),
        }
    }

    fn resolver(trust_ad: bool) -> Resolver {
        Resolver::new(
            ResolverConfig {
                servers: vec![S1.parse().unwrap(), S2.parse().unwrap()],
                timeout: Duration::from_secs(2),
                attempts: 1,
                trust_ad,
                cache_size: 4,
                ..ResolverConfig::default()
            },
            crate::Rng::new(42),
        )
    }

    fn lk(name: &str, rtype: RecordType) -> Lookup {
        Lookup {
            name: name.into(),
            rtype,
        }
    }

    fn drain(r: &mut Resolver, now: Now) -> Vec<ResolverOutput> {
        let mut v = Vec::new();
        loop {
            match r.poll(now) {
                ResolverOutput::Idle { .. } => return v,
                o => v.push(o),
            }
        }
    }

    fn rec(name: &str, ttl: u32, r: Record) -> HRecord {
        HRecord::from_rdata(to_name(name).unwrap(), ttl, record_to_rdata(&r).unwrap())
    }

    /// A server's response to `query`: same ID and question, then `f` fills it in.
    fn respond(query: &[u8], f: impl FnOnce(&mut Message)) -> Vec<u8> {
        let q = Message::from_vec(query).unwrap();
        let mut m = Message::response(q.metadata.id, OpCode::Query);
        m.metadata.recursion_available = true;
        m.add_queries(q.queries.iter().cloned());
        f(&mut m);
        m.to_vec().unwrap()
    }

    fn one_udp(out: &[ResolverOutput]) -> (SocketAddr, Vec<u8>) {
        match out {
            [ResolverOutput::SendUdp { server, bytes }] => (*server, bytes.clone()),
            other => panic!("expected one SendUdp, got {other:?}"),
        }
    }

    fn a(ip: [u8; 4]) -> Record {
        Record::A(ip.into())
    }

    #[test]
    fn udp_answer_and_query_shape() {
        let now = now0();
        let mut r = resolver(false);
        let id = r.query(now, lk("Mail.Example.org.", RecordType::A));
        let (server, q) = one_udp(&drain(&mut r, now));
        assert_eq!(server, S1.parse::<SocketAddr>().unwrap());
        let qm = Message::from_vec(&q).unwrap();
        assert!(qm.metadata.recursion_desired);
        let edns = qm.edns.as_ref().expect("EDNS0");
        assert!(edns.flags().dnssec_ok, "DO bit");
        assert_eq!(edns.max_payload(), EDNS_PAYLOAD);
        assert_eq!(qm.queries[0].name().to_ascii(), "mail.example.org.");
        let resp = respond(&q, |m| {
            m.add_answer(rec("mail.example.org", 300, a([192, 0, 2, 1])));
            m.metadata.authentic_data = true;
        });
        r.handle_udp(now, server, &resp);
        assert_eq!(
            drain(&mut r, now),
            vec![ResolverOutput::Answer(
                id,
                LookupResult::Records {
                    records: vec![a([192, 0, 2, 1])],
                    authentic: false
                }
            )]
        );
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn ad_bit_only_when_trusted() {
        for (trust, want) in [(false, false), (true, true)] {
            let now = now0();
            let mut r = resolver(trust);
            let id = r.query(now, lk("example.org", RecordType::Tlsa));
            let (server, q) = one_udp(&drain(&mut r, now));
            let data = Record::Tlsa {
                usage: 3,
                selector: 1,
                matching: 1,
                data: vec![1, 2, 3],
            };
            let resp = respond(&q, |m| {
                m.add_answer(rec("example.org", 300, data.clone()));
                m.metadata.authentic_data = true;
            });
            r.handle_udp(now, server, &resp);
            assert_eq!(
                drain(&mut r, now),
                vec![ResolverOutput::Answer(
                    id,
                    LookupResult::Records {
                        records: vec![data],
                        authentic: want
                    }
                )]
            );
        }
    }

    #[test]
    fn truncation_goes_to_tcp_in_chunks() {
        let now = now0();
        let mut r = resolver(false);
        let id = r.query(now, lk("big.example.org", RecordType::Txt));
        let (server, q) = one_udp(&drain(&mut r, now));
        let tc = respond(&q, |m| m.metadata.truncation = true);
        r.handle_udp(now, server, &tc);
        let out = drain(&mut r, now);
        let (conn, framed) = match out.as_slice() {
            [ResolverOutput::SendTcp {
                server: s,
                conn,
                bytes,
            }] => {
                assert_eq!(*s, server, "same server over TCP");
                (*conn, bytes.clone())
            }
            other => panic!("{other:?}"),
        };
        let len = usize::from(u16::from_be_bytes([framed[0], framed[1]]));
        assert_eq!(len, framed.len() - 2);
        let txt = Record::Txt(vec![vec![b'x'; 200], vec![b'y'; 200]]);
        let resp = respond(&framed[2..], |m| {
            m.add_answer(rec("big.example.org", 60, txt.clone()));
        });
        let mut stream = (resp.len() as u16).to_be_bytes().to_vec();
        stream.extend_from_slice(&resp);
        // A UDP datagram with the TCP query's ID is not accepted.
        r.handle_udp(now, server, &resp);
        assert!(drain(&mut r, now).is_empty());
        for chunk in stream.chunks(7) {
            r.handle_tcp(now, conn, chunk);
        }
        assert_eq!(
            drain(&mut r, now),
            vec![
                ResolverOutput::CloseTcp { conn },
                ResolverOutput::Answer(
                    id,
                    LookupResult::Records {
                        records: vec![txt],
                        authentic: false
                    }
                )
            ]
        );
    }

    #[test]
    fn timeout_moves_to_next_server_then_fails() {
        let now = now0();
        let mut r = resolver(false);
        let id = r.query(now, lk("slow.example.org", RecordType::A));
        let (s1, _) = one_udp(&drain(&mut r, now));
        assert_eq!(s1, S1.parse::<SocketAddr>().unwrap());
        let deadline = match r.poll(now) {
            ResolverOutput::Idle {
                deadline: Some(d),
                timer: Some(ResolverTimer::Retry(t)),
            } => {
                assert_eq!(t, id);
                d
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(deadline, now.mono + Duration::from_secs(2));
        // Early timeout: nothing happens.
        r.handle_timeout(now.advance(Duration::from_secs(1)));
        assert!(drain(&mut r, now).is_empty());
        let t1 = now.advance(Duration::from_secs(2));
        r.handle_timeout(t1);
        let (s2, q2) = one_udp(&drain(&mut r, t1));
        assert_eq!(s2, S2.parse::<SocketAddr>().unwrap());
        // A late answer from the first server is no longer accepted.
        let late = respond(&q2, |m| {
            m.add_answer(rec("slow.example.org", 60, a([1, 1, 1, 1])));
        });
        r.handle_udp(t1, s1, &late);
        assert!(drain(&mut r, t1).is_empty());
        let t2 = t1.advance(Duration::from_secs(2));
        r.handle_timeout(t2);
        match drain(&mut r, t2).as_slice() {
            [ResolverOutput::Answer(i, LookupResult::TempFail(_))] => assert_eq!(*i, id),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.poll(t2),
            ResolverOutput::Idle {
                deadline: None,
                timer: None
            }
        );
    }

    #[test]
    fn rcodes() {
        let cases: Vec<(ResponseCode, Option<LookupResult>)> = vec![
            (ResponseCode::NXDomain, Some(LookupResult::NxDomain)),
            (ResponseCode::NoError, Some(LookupResult::NoData)),
            (
                ResponseCode::ServFail,
                Some(LookupResult::TempFail("server failure (SERVFAIL)".into())),
            ),
            (ResponseCode::Refused, None), // next server
        ];
        for (rcode, want) in cases {
            let now = now0();
            let mut r = resolver(false);
            let id = r.query(now, lk("x.example.org", RecordType::Mx));
            let (server, q) = one_udp(&drain(&mut r, now));
            r.handle_udp(
                now,
                server,
                &respond(&q, |m| m.metadata.response_code = rcode),
            );
            let out = drain(&mut r, now);
            match want {
                Some(w) => assert_eq!(out, vec![ResolverOutput::Answer(id, w)], "{rcode:?}"),
                None => assert_eq!(one_udp(&out).0, S2.parse::<SocketAddr>().unwrap()),
            }
        }
    }

    #[test]
    fn spoofed_answers_are_ignored() {
        let now = now0();
        let mut r = resolver(false);
        let id = r.query(now, lk("bank.example.org", RecordType::A));
        let (server, q) = one_udp(&drain(&mut r, now));
        let good = respond(&q, |m| {
            m.add_answer(rec("bank.example.org", 60, a([192, 0, 2, 7])));
        });
        let evil = |f: &dyn Fn(&mut Message)| {
            let mut m = Message::from_vec(&good).unwrap();
            f(&mut m);
            m.to_vec().unwrap()
        };
        let wrong_id = evil(&|m| m.metadata.id = m.metadata.id.wrapping_add(1));
        let wrong_q = evil(&|m| {
            m.queries[0].set_name(to_name("other.example.org").unwrap());
        });
        let wrong_type = evil(&|m| {
            m.queries[0].set_query_type(HRecordType::AAAA);
        });
        let not_resp = evil(&|m| m.metadata.message_type = MessageType::Query);
        for bad in [&wrong_id, &wrong_q, &wrong_type, &not_resp] {
            r.handle_udp(now, server, bad);
            assert!(drain(&mut r, now).is_empty());
        }
        r.handle_udp(now, S2.parse().unwrap(), &good);
        assert!(drain(&mut r, now).is_empty(), "wrong source");
        r.handle_udp(now, server, b"\x00\x01garbage");
        assert!(drain(&mut r, now).is_empty());
        r.handle_udp(now, server, &good);
        assert_eq!(drain(&mut r, now).len(), 1);
        let _ = id;
    }

    #[test]
    fn cname_chains() {
        let now = now0();
        let mut r = resolver(false);
        // The whole chain in one answer.
        let id = r.query(now, lk("www.example.org", RecordType::A));
        let (server, q) = one_udp(&drain(&mut r, now));
        let resp = respond(&q, |m| {
            m.add_answer(rec(
                "www.example.org",
                60,
                Record::Cname("web.example.org".into()),
            ));
            m.add_answer(rec(
                "web.example.org",
                60,
                Record::Cname("host.example.net".into()),
            ));
            m.add_answer(rec("host.example.net", 60, a([192, 0, 2, 80])));
        });
        r.handle_udp(now, server, &resp);
        assert_eq!(
            drain(&mut r, now),
            vec![ResolverOutput::Answer(
                id,
                LookupResult::Records {
                    records: vec![a([192, 0, 2, 80])],
                    authentic: false
                }
            )]
        );
        // Only the CNAME: the target is asked for.
        let id = r.query(now, lk("alias.example.org", RecordType::A));
        let (server, q) = one_udp(&drain(&mut r, now));
        let resp = respond(&q, |m| {
            m.add_answer(rec(
                "alias.example.org",
                60,
                Record::Cname("target.example.net".into()),
            ));
        });
        r.handle_udp(now, server, &resp);
        let (server, q2) = one_udp(&drain(&mut r, now));
        let qm = Message::from_vec(&q2).unwrap();
        assert_eq!(qm.queries[0].name().to_ascii(), "target.example.net.");
        let resp = respond(&q2, |m| m.metadata.response_code = ResponseCode::NXDomain);
        r.handle_udp(now, server, &resp);
        assert_eq!(
            drain(&mut r, now),
            vec![ResolverOutput::Answer(id, LookupResult::NxDomain)]
        );
        // An endless chain stops.
        let id = r.query(now, lk("c0.example.org", RecordType::A));
        let mut i = 0;
        let verdict = loop {
            let out = drain(&mut r, now);
            if let [ResolverOutput::Answer(got, res)] = out.as_slice() {
                assert_eq!(*got, id);
                break res.clone();
            }
            let (server, q) = one_udp(&out);
            let resp = respond(&q, |m| {
                m.add_answer(rec(
                    &format!("c{i}.example.org"),
                    60,
                    Record::Cname(format!("c{}.example.org", i + 1)),
                ));
            });
            i += 1;
            assert!(i < 20);
            r.handle_udp(now, server, &resp);
        };
        assert!(matches!(verdict, LookupResult::TempFail(_)), "{verdict:?}");
    }

    #[test]
    fn cache_hits_and_expiry() {
        let now = now0();
        let mut r = resolver(false);
        let ask =
            |r: &mut Resolver, now: Now| r.query(now, lk("cached.example.org", RecordType::A));
        let id = ask(&mut r, now);
        let (server, q) = one_udp(&drain(&mut r, now));
        r.handle_udp(
            now,
            server,
            &respond(&q, |m| {
                m.add_answer(rec("cached.example.org", 30, a([192, 0, 2, 30])));
            }),
        );
        assert_eq!(drain(&mut r, now).len(), 1);
        let _ = id;
        // Within the TTL: answered from the cache, nothing sent.
        let t = now.advance(Duration::from_secs(29));
        let id2 = ask(&mut r, t);
        assert_eq!(
            drain(&mut r, t),
            vec![ResolverOutput::Answer(
                id2,
                LookupResult::Records {
                    records: vec![a([192, 0, 2, 30])],
                    authentic: false
                }
            )]
        );
        // After it: asked again.
        let t = now.advance(Duration::from_secs(30));
        ask(&mut r, t);
        one_udp(&drain(&mut r, t));
    }

    /// Concurrent askers of one name each sent their own query (several sessions checking
    /// the same SPF record at once multiplied the traffic); now they share the one in flight.
    #[test]
    fn same_lookup_in_flight_is_asked_once() {
        let now = now0();
        let mut r = resolver(false);
        let first = r.query(now, lk("shared.example.org", RecordType::A));
        let (server, q) = one_udp(&drain(&mut r, now));
        let second = r.query(now, lk("Shared.Example.org.", RecordType::A));
        let other = r.query(now, lk("shared.example.org", RecordType::Aaaa));
        // Only the other type goes out.
        assert_eq!(drain(&mut r, now).len(), 1);
        r.handle_udp(
            now,
            server,
            &respond(&q, |m| {
                m.add_answer(rec("shared.example.org", 30, a([192, 0, 2, 7])));
            }),
        );
        let want = LookupResult::Records {
            records: vec![a([192, 0, 2, 7])],
            authentic: false,
        };
        let mut got = drain(&mut r, now);
        got.sort_by_key(|o| match o {
            ResolverOutput::Answer(id, _) => id.0,
            _ => u64::MAX,
        });
        assert_eq!(
            got,
            vec![
                ResolverOutput::Answer(first, want.clone()),
                ResolverOutput::Answer(second, want)
            ]
        );
        assert_eq!(r.pending(), 1, "{other:?} still open");
    }

    #[test]
    fn negative_cache_is_bounded_and_cache_size_limited() {
        let now = now0();
        let mut r = resolver(false);
        let id = r.query(now, lk("gone.example.org", RecordType::A));
        let (server, q) = one_udp(&drain(&mut r, now));
        let soa = hickory_proto::rr::rdata::SOA::new(
            to_name("example.org").unwrap(),
            to_name("admin.example.org").unwrap(),
            1,
            3600,
            600,
            86400,
            86400,
        );
        let resp = respond(&q, |m| {
            m.metadata.response_code = ResponseCode::NXDomain;
            m.add_authority(HRecord::from_rdata(
                to_name("example.org").unwrap(),
                86400,
                RData::SOA(soa),
            ));
        });
        r.handle_udp(now, server, &resp);
        assert_eq!(
            drain(&mut r, now),
            vec![ResolverOutput::Answer(id, LookupResult::NxDomain)]
        );
        let t = now.advance(Duration::from_secs(299));
        let id = r.query(t, lk("gone.example.org", RecordType::A));
        assert_eq!(
            drain(&mut r, t),
            vec![ResolverOutput::Answer(id, LookupResult::NxDomain)]
        );
        let t = now.advance(Duration::from_secs(300));
        r.query(t, lk("gone.example.org", RecordType::A));
        one_udp(&drain(&mut r, t));
        // Size limit: never more than cache_size entries.
        let mut r = resolver(false);
        for i in 0..10u8 {
            let name = format!("n{i}.example.org");
            r.query(now, lk(&name, RecordType::A));
            let (server, q) = one_udp(&drain(&mut r, now));
            r.handle_udp(
                now,
                server,
                &respond(&q, |m| {
                    m.add_answer(rec(&name, 100 + u32::from(i), a([192, 0, 2, i])));
                }),
            );
            drain(&mut r, now);
            assert!(r.cache.len() <= 4);
        }
        // The newest entries survive (the ones closest to expiry were evicted).
        r.query(now, lk("n9.example.org", RecordType::A));
        assert!(matches!(
            drain(&mut r, now).as_slice(),
            [ResolverOutput::Answer(..)]
        ));
    }

    #[test]
    fn tcp_failure_moves_on() {
        let now = now0();
        let mut r = resolver(false);
        r.query(now, lk("big.example.org", RecordType::Txt));
        let (server, q) = one_udp(&drain(&mut r, now));
        r.handle_udp(now, server, &respond(&q, |m| m.metadata.truncation = true));
        let conn = match drain(&mut r, now).as_slice() {
            [ResolverOutput::SendTcp { conn, .. }] => *conn,
            other => panic!("{other:?}"),
        };
        r.handle_tcp_failed(now, conn);
        assert_eq!(
            one_udp(&drain(&mut r, now)).0,
            S2.parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn no_servers() {
        let now = now0();
        let mut r = Resolver::new(ResolverConfig::default(), crate::Rng::new(1));
        let id = r.query(now, lk("example.org", RecordType::A));
        assert!(matches!(
            drain(&mut r, now).as_slice(),
            [ResolverOutput::Answer(i, LookupResult::TempFail(_))] if *i == id
        ));
    }

    #[test]
    fn resolv_conf() {
        let text = "# comment\nsearch example.org\nnameserver 127.0.0.53\noptions edns0 trust-ad\nnameserver ::1\nnameserver fe80::1%eth0\nnameserver bogus\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "[::1]:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        let host = "[a-z0-9]{1,10}(\\.[a-z0-9]{1,10}){0,3}";
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| Record::A(b.into())),
            any::<[u8; 16]>().prop_map(|b| Record::Aaaa(b.into())),
            (any::<u16>(), host).prop_map(|(preference, host)| Record::Mx { preference, host }),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..255), 1..4)
                .prop_map(Record::Txt),
            host.prop_map(Record::Ptr),
            host.prop_map(Record::Cname),
            (
                0u8..4,
                0u8..2,
                0u8..3,
                proptest::collection::vec(any::<u8>(), 1..64)
            )
                .prop_map(|(usage, selector, matching, data)| Record::Tlsa {
                    usage,
                    selector,
                    matching,
                    data
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn record_round_trip(r in arb_record()) {
            let mut m = Message::response(7, OpCode::Query);
            m.add_answer(rec("x.example.org", 60, r.clone()));
            let back = Message::from_vec(&m.to_vec().unwrap()).unwrap();
            prop_assert_eq!(record_from_rdata(&back.answers[0].data), Some(r));
        }

        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), chunk in 1usize..50) {
            let now = now0();
            let mut r = resolver(false);
            r.query(now, lk("x.example.org", RecordType::A));
            let (server, q) = one_udp(&drain(&mut r, now));
            r.handle_udp(now, server, &bytes);
            // Same ID as the query, then random bytes.
            let mut b2 = q.get(..2).unwrap().to_vec();
            b2.extend_from_slice(&bytes);
            r.handle_udp(now, server, &b2);
            drain(&mut r, now);
            r.handle_udp(now, server, &respond(&q, |m| m.metadata.truncation = true));
            for o in drain(&mut r, now) {
                if let ResolverOutput::SendTcp { conn, .. } = o {
                    for c in bytes.chunks(chunk) {
                        r.handle_tcp(now, conn, c);
                    }
                }
            }
            drain(&mut r, now);
        }
    }

    /// The resolver in the session shape: the caller's ids are the tokens answers come back
    /// with (in the order the servers answer, not the order asked); a stale answer (to a
    /// query already moved on) is ignored; `Idle` names the next timer.
    #[test]
    fn session_shape_transcript() {
        let now = now0();
        let mut r = resolver(false);
        let (x, y) = (QueryId(70), QueryId(71));
        r.handle(
            now,
            ResolverInput::Query(x, lk("x.example.org", RecordType::A)),
        );
        let (_, qx) = one_udp(&drain(&mut r, now));
        let later = now.advance(Duration::from_millis(500));
        r.handle(
            later,
            ResolverInput::Query(y, lk("y.example.org", RecordType::A)),
        );
        let (_, qy) = one_udp(&drain(&mut r, later));
        // Idle names x's retry: its deadline is the earlier one.
        assert_eq!(
            r.poll(later),
            ResolverOutput::Idle {
                deadline: Some(now.mono + Duration::from_secs(2)),
                timer: Some(ResolverTimer::Retry(x)),
            }
        );
        // y is answered first: its answer carries y's token.
        let s1: SocketAddr = S1.parse().unwrap();
        let ans_y = respond(&qy, |m| {
            m.add_answer(rec("y.example.org", 60, a([192, 0, 2, 2])));
        });
        r.handle(
            later,
            ResolverInput::Udp {
                from: s1,
                bytes: &ans_y,
            },
        );
        match drain(&mut r, later).as_slice() {
            [ResolverOutput::Answer(id, LookupResult::Records { records, .. })] => {
                assert_eq!(*id, y);
                assert_eq!(records, &[a([192, 0, 2, 2])]);
            }
            other => panic!("{other:?}"),
        }
        // y's answer again (a duplicate): stale, ignored.
        r.handle(
            later,
            ResolverInput::Udp {
                from: s1,
                bytes: &ans_y,
            },
        );
        assert!(drain(&mut r, later).is_empty());
        // x times out at S1 and moves to S2; S1's answer to the old question is stale.
        let t1 = now.advance(Duration::from_secs(2));
        r.handle(t1, ResolverInput::Timeout);
        let (s2, qx2) = one_udp(&drain(&mut r, t1));
        assert_eq!(s2, S2.parse::<SocketAddr>().unwrap());
        let stale = respond(&qx, |m| {
            m.add_answer(rec("x.example.org", 60, a([192, 0, 2, 9])));
        });
        r.handle(
            t1,
            ResolverInput::Udp {
                from: s1,
                bytes: &stale,
            },
        );
        assert!(drain(&mut r, t1).is_empty());
        let fresh = respond(&qx2, |m| {
            m.add_answer(rec("x.example.org", 60, a([192, 0, 2, 1])));
        });
        r.handle(
            t1,
            ResolverInput::Udp {
                from: s2,
                bytes: &fresh,
            },
        );
        match drain(&mut r, t1).as_slice() {
            [ResolverOutput::Answer(id, LookupResult::Records { records, .. })] => {
                assert_eq!(*id, x);
                assert_eq!(records, &[a([192, 0, 2, 1])]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            r.poll(t1),
            ResolverOutput::Idle {
                deadline: None,
                timer: None
            }
        );
    }

    /// A `now` earlier than one given before is ignored: a clock stepping back neither sets a
    /// deadline earlier than the latest time known nor makes the cache serve an expired entry.
    #[test]
    fn earlier_now_is_ignored() {
        let now = now0();
        let late = now.advance(Duration::from_secs(10));
        let mut r = resolver(false);
        // The machine has seen `late`; a question at `now` is asked at `late`.
        r.handle(late, ResolverInput::Timeout);
        let id = QueryId(1);
        r.handle(
            now,
            ResolverInput::Query(id, lk("z.example.org", RecordType::A)),
        );
        let (server, q) = one_udp(&drain(&mut r, now));
        assert_eq!(
            r.poll(now),
            ResolverOutput::Idle {
                deadline: Some(late.mono + Duration::from_secs(2)),
                timer: Some(ResolverTimer::Retry(id)),
            }
        );
        // A timeout at the earlier `now + 2s` is early for the real deadline: nothing moves.
        r.handle(now.advance(Duration::from_secs(2)), ResolverInput::Timeout);
        assert!(drain(&mut r, now).is_empty());
        // Cached for 5 seconds from `late`: an earlier `now` does not stretch the entry.
        let resp = respond(&q, |m| {
            m.add_answer(rec("z.example.org", 5, a([192, 0, 2, 3])));
        });
        r.handle(
            late,
            ResolverInput::Udp {
                from: server,
                bytes: &resp,
            },
        );
        assert_eq!(drain(&mut r, late).len(), 1);
        let after = late.advance(Duration::from_secs(6));
        r.handle(after, ResolverInput::Timeout);
        r.handle(
            now,
            ResolverInput::Query(QueryId(2), lk("z.example.org", RecordType::A)),
        );
        // Expired at `after`: asked on the wire again, not served from the cache.
        assert!(matches!(
            drain(&mut r, now).as_slice(),
            [ResolverOutput::SendUdp { .. }]
        ));
    }

    /// A caller's id that is still open is refused with a temporary failure, not merged
    /// into the other question.
    #[test]
    fn open_query_id_is_refused() {
        let now = now0();
        let mut r = resolver(false);
        r.handle(
            now,
            ResolverInput::Query(QueryId(5), lk("a.example.org", RecordType::A)),
        );
        assert_eq!(drain(&mut r, now).len(), 1);
        r.handle(
            now,
            ResolverInput::Query(QueryId(5), lk("b.example.org", RecordType::A)),
        );
        match drain(&mut r, now).as_slice() {
            [ResolverOutput::Answer(QueryId(5), LookupResult::TempFail(_))] => {}
            other => panic!("{other:?}"),
        }
        // `query` picks an id past the caller's.
        assert_eq!(r.query(now, lk("c.example.org", RecordType::A)), QueryId(6));
    }
}
