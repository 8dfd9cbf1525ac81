//! The simulated world: actors, the network, storage and the event loop.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmox_core::client::{self, ClientConfig, ClientSession, Delivery, ErrorKind, Needs, TlsMode};
use rmox_core::delivery::{self, ConnId, DeliveryConfig, DeliverySession, Job};
use rmox_core::dns::{Lookup, LookupResult, Record, RecordType};
use rmox_core::queue::{
    compose_dsn, domain_of, next_wakeup, AttemptResult, Batch, Decision, DsnInput, DsnKind,
    DsnNotice, DsnParams, InFlight, QueueConfig, QueueConfigBuilder, QueueItem, Routes, Transport,
    TransportDirect,
};
use rmox_core::server::{
    self, Completion, Effect, Event, Input, MemorySpool, Output, Peer, ServerConfig, ServerSession,
    StoreOutcome, Verdict,
};
use rmox_core::smtp::{Enhanced, ForwardPath, Host, MailParams, RcptParams, Reply, ReversePath};
use rmox_core::{Now, Rng, Token, UnixTime};

use crate::{Bug, SimConfig};

/// Wall time at virtual time 0.
const WALL0: i64 = 1_795_315_268;
/// Our server's address.
pub(crate) const OUR_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Our host name.
pub(crate) const OUR_HOST: &str = "mx.rmox.sim";
/// Our local domain: its recipients are delivered to our mailboxes.
pub(crate) const LOCAL_DOMAIN: &str = "local.sim";
/// Users of our local domain.
const LOCAL_USERS: [&str; 3] = ["alice", "bob", "carol"];
/// Largest message our server accepts.
pub(crate) const MAX_MESSAGE_SIZE: u64 = 64 << 10;
/// Recipients per transaction at our server.
pub(crate) const MAX_RECIPIENTS: usize = 5;
/// What the server may add to a message (our Received header) within the size limit.
pub(crate) const HEADER_ALLOWANCE: usize = 4096;
/// Bytes a connection may hold unconsumed at a server before it is told to overflow (the
/// real driver's bound).
pub(crate) const MAX_UNREAD: usize = 256 << 10;
/// Bytes one connection may hold in flight plus unconsumed, one direction (the memory
/// bound checked).
pub(crate) const MAX_CONN_BUFFER: usize = 2 * (MAX_MESSAGE_SIZE as usize) + MAX_UNREAD;
/// Attempts a client makes per message.
const CLIENT_MAX_ATTEMPTS: u32 = 10;

/// Counts of what happened in a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events processed.
    pub steps: u64,
    /// Virtual time at the end, in seconds.
    pub virtual_secs: u64,
    /// Messages the clients tried to send.
    pub messages: u64,
    /// Transactions committed durably by our server.
    pub commits: u64,
    /// Recipients answered 250 (acknowledged).
    pub acked_recipients: u64,
    /// Deliveries to a final mailbox (ours or a remote one), DSNs included.
    pub deliveries: u64,
    /// Failure and delay DSNs queued.
    pub dsns: u64,
    /// DSNs that could not be delivered either (dropped).
    pub double_bounces: u64,
    /// Connections opened.
    pub connections: u64,
    /// Crashes of our server.
    pub crashes: u64,
    /// Connections cut (anywhere, including after the final dot).
    pub cuts: u64,
    /// Cuts right after a final dot, before the reply.
    pub cuts_after_dot: u64,
    /// Connections lost while the receiving server (ours or a remote one) read a message or
    /// waited on its store.
    pub lost_mid_data: u64,
    /// Recipients over the limit our server answered 452.
    pub over_rcpt_limit: u64,
    /// Messages over the size limit our server refused (552).
    pub over_size_limit: u64,
    /// Writes lost in crashes (not synced).
    pub lost_writes: u64,
    /// Outgoing duplicate-window events (remote accepted, we did not record it).
    pub window_out: u64,
    /// Incoming duplicate-window events (committed, the client did not get the 250).
    pub window_in: u64,
    /// Delivery attempts (transactions) by our queue.
    pub attempts: u64,
    /// Of those, jobs that followed another on its connection (connection reuse).
    pub reused: u64,
    /// Most bytes buffered in one direction of one connection.
    pub peak_conn_buffer: u64,
    /// Most connections open at once.
    pub peak_connections: u64,
}

/// A key of one recipient of one committed message: (`X-Sim-Id` tag, recipient).
pub(crate) type Key = (String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Actor {
    Client(usize),
    Server(u64),
    Delivery(u64),
    Remote(u64),
}

enum Ev {
    ClientConnect(usize),
    Connected(u64),
    ConnectRefused(u64),
    Arrive(u64, usize),
    Eof(u64, Actor),
    Cut(u64),
    Timer(Actor),
    Sync,
    Dns(u64, Token, Vec<Lookup>),
    QueueWake,
    Crash,
    Restart,
}

const TO_ACC: usize = 0;
const TO_INIT: usize = 1;

#[derive(Default)]
struct Half {
    segs: VecDeque<(u64, Vec<u8>)>,
    unread: Vec<u8>,
    fin: bool,
    eof_done: bool,
    last_at: u64,
    sent: u64,
}

struct Conn {
    init: Actor,
    token: Option<Token>,
    acc: Option<Actor>,
    src: IpAddr,
    target: IpAddr,
    dirs: [Half; 2],
    dead: bool,
    stalled: bool,
    cut_at: Option<u64>,
    stall_at: Option<u64>,
    cut_after_dot: bool,
    faulted: bool,
}

/// One message a client sends.
#[derive(Clone, Debug)]
pub(crate) struct ClientMsg {
    pub(crate) id: u64,
    pub(crate) from: String,
    pub(crate) rcpts: Vec<String>,
    pub(crate) size: usize,
    pub(crate) attempts: u32,
    pub(crate) done: bool,
    /// The attempt whose 250 the client received.
    pub(crate) acked_attempt: Option<u32>,
}

struct ClientState {
    ip: IpAddr,
    msgs: Vec<ClientMsg>,
    sess: Option<ClientSession>,
    conn: Option<u64>,
    current: Option<usize>,
    tried: BTreeSet<usize>,
    /// A scripted client instead of the client machine.
    raw: Option<Raw>,
}

/// A scripted client: pipelines EHLO, MAIL, every RCPT (beyond the server's limit too) and
/// DATA in one write, sends the message after `354` whatever its size, then QUIT; it
/// never retries. It shows the server's limits hold against a client that ignores SIZE and
/// RCPTMAX.
#[derive(Default)]
struct Raw {
    active: bool,
    /// Final reply lines seen.
    finals: usize,
    /// Bytes of reply not yet split into lines.
    buf: Vec<u8>,
    /// The message was sent after 354.
    sent_data: bool,
    /// The client gives up on the connection at this time.
    deadline: u64,
}

struct CommitInfo {
    tag: String,
    rcpts: Vec<String>,
}

struct SrvState {
    sess: ServerSession,
    conn: u64,
    spool: MemorySpool,
    stored: Option<CommitInfo>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behavior {
    Good,
    TempFail,
    PermFail,
    Flaky,
    Hang,
    Down,
}

struct RemoteHost {
    ip: IpAddr,
    behavior: Behavior,
}

struct RemoteState {
    sess: Option<ServerSession>,
    host: usize,
    conn: u64,
    spool: MemorySpool,
}

struct DlState {
    sess: DeliverySession,
    /// The batches of the connection, one job each (connection reuse).
    batches: Vec<Batch>,
    /// Which jobs' outcomes were written.
    recorded: Vec<bool>,
    /// A write carries the batches' release from flight.
    released: bool,
    conns: BTreeMap<ConnId, u64>,
    faulted: bool,
    stored: Vec<Key>,
}

/// A message as stored: its bytes and its `X-Sim-Id` tag.
#[derive(Clone, Debug)]
pub(crate) struct Msg {
    pub(crate) bytes: Arc<[u8]>,
    pub(crate) tag: String,
}

/// A delivery to a mailbox (ours or a remote host's).
#[derive(Clone, Debug)]
pub(crate) struct Delivered {
    pub(crate) rcpt: String,
    pub(crate) mail_from: String,
    pub(crate) tag: String,
    pub(crate) bytes: Arc<[u8]>,
}

/// What storage holds.
#[derive(Clone, Debug, Default)]
pub(crate) struct Disk {
    pub(crate) queue: BTreeMap<u64, QueueItem>,
    pub(crate) msgs: BTreeMap<u64, Msg>,
    pub(crate) mailbox: Vec<Delivered>,
}

enum Op {
    PutMsg(u64, Msg),
    PutItem(QueueItem),
    DelItem(u64),
    Mailbox(Delivered),
}

impl Disk {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::PutMsg(id, m) => {
                self.msgs.insert(*id, m.clone());
            }
            Op::PutItem(it) => {
                self.queue.insert(it.id, it.clone());
            }
            Op::DelItem(id) => {
                self.queue.remove(id);
            }
            Op::Mailbox(d) => self.mailbox.push(d.clone()),
        }
    }
}

enum OnSync {
    Commit {
        info: CommitInfo,
        ack: Option<(u64, Token)>,
    },
    /// A job's outcome; with the batches of its connection (the last job's write), they
    /// stay in flight until this is synced.
    Recorded(Vec<Key>, Option<Vec<Batch>>),
}

struct Write {
    ops: Vec<Op>,
    sync_at: u64,
    on_sync: OnSync,
}

/// The whole simulated world.
pub(crate) struct World {
    pub(crate) cfg: SimConfig,
    /// `RMOX_SIM_TRACE=<session id>`: print that server session's outputs.
    trace: Option<u64>,
    rng: Rng,
    base: Instant,
    now_ms: u64,
    seq: u64,
    events: BTreeMap<(u64, u64), Ev>,
    timers: BTreeMap<Actor, u64>,
    conns: BTreeMap<u64, Conn>,
    next_id: u64,
    clients: Vec<ClientState>,
    client_cfg: Arc<ClientConfig>,
    servers: BTreeMap<u64, SrvState>,
    server_cfg: Arc<ServerConfig>,
    remote_cfg: Arc<ServerConfig>,
    remote_hosts: Vec<RemoteHost>,
    remotes: BTreeMap<u64, RemoteState>,
    deliveries: BTreeMap<u64, DlState>,
    delivery_cfg: Arc<DeliveryConfig>,
    qcfg: QueueConfig,
    in_flight: InFlight,
    wake_at: Option<u64>,
    our_up: bool,
    partitions: Vec<(IpAddr, u64, u64)>,
    pub(crate) durable: Disk,
    pending: VecDeque<Write>,
    /// Durable commits per (tag, recipient).
    pub(crate) committed: BTreeMap<Key, u32>,
    /// Commits per tag.
    pub(crate) commits_per_tag: BTreeMap<String, u32>,
    /// Recipients our server answered 250 for.
    pub(crate) acked: BTreeSet<Key>,
    /// Deliveries by remote hosts.
    pub(crate) remote_mail: Vec<Delivered>,
    /// Outgoing duplicate windows per key.
    pub(crate) window_out: BTreeMap<Key, u32>,
    /// DSN tags queued, with their kind.
    pub(crate) dsn_tags: BTreeMap<String, DsnKind>,
    /// DSNs that failed for good themselves (the sender's server unreachable for the whole
    /// retry period): dropped, as RFC 3461 wants, and counted.
    pub(crate) double_bounced: Vec<Delivered>,
    /// Violations seen while running (limits, memory, unexplained outcomes).
    pub(crate) runtime_violations: Vec<String>,
    pub(crate) stats: Stats,
    /// The run ended on its time or step bound instead of draining.
    pub(crate) unfinished: Option<String>,
}

fn ip4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// The recipients clients pick from, with weights.
const RCPT_POOL: [(&str, u32); 14] = [
    ("alice@local.sim", 10),
    ("bob@local.sim", 8),
    ("carol@local.sim", 4),
    ("nobody@local.sim", 2),
    ("u1@good.sim", 10),
    ("u2@good.sim", 8),
    ("x@backup.sim", 4),
    ("y@flaky.sim", 4),
    ("z@temp.sim", 2),
    ("p@perm.sim", 2),
    ("h@hang.sim", 2),
    ("n@nx.sim", 1),
    ("d@dnsfail.sim", 2),
    ("w@senders.sim", 2),
];

/// The message a client sends for (`id`, `attempt`): deterministic, with lines that need
/// dot-stuffing, padded to `size`.
pub(crate) fn client_message(m: &ClientMsg, attempt: u32) -> Vec<u8> {
    let mut s = format!(
        "X-Sim-Id: m{}.{}\r\nFrom: <{}>\r\nTo: {}\r\nSubject: sim message {}\r\nMessage-ID: <m{}.{}@senders.sim>\r\n\r\n",
        m.id,
        attempt,
        m.from,
        m.rcpts.join(", "),
        m.id,
        m.id,
        attempt
    )
    .into_bytes();
    let mut n = 0u64;
    while s.len() < m.size {
        let line = if n % 7 == 3 {
            format!(".dot line {n} of message {}\r\n", m.id)
        } else if n % 11 == 5 {
            ".\r\n".to_string()
        } else {
            format!(
                "line {n} of message {} abcdefghijklmnopqrstuvwxyz 0123456789\r\n",
                m.id
            )
        };
        s.extend_from_slice(line.as_bytes());
        n += 1;
    }
    s
}

/// The tag in a message's `X-Sim-Id` header (the first one: ours come first in a DSN's
/// returned header too, after the DSN's own).
pub(crate) fn tag_of(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64 << 10)]);
    for line in text.split("\r\n") {
        if let Some(v) = line.strip_prefix("X-Sim-Id: ") {
            return v.trim().to_string();
        }
        if line.is_empty() {
            break;
        }
    }
    String::new()
}

fn addr_of(p: &ForwardPath) -> String {
    match p.address() {
        Some(a) => a.to_string(),
        None => "postmaster".into(),
    }
}

fn rev_of(p: &ReversePath) -> String {
    match p.address() {
        Some(a) => a.to_string(),
        None => String::new(),
    }
}

impl World {
    pub(crate) fn new(cfg: SimConfig) -> World {
        let mut rng = Rng::new(cfg.seed);
        let mut sc = ServerConfig::new(OUR_HOST);
        sc.max_message_size = MAX_MESSAGE_SIZE;
        sc.max_recipients = MAX_RECIPIENTS;
        sc.spool_threshold = 8 << 10;
        sc.seed = rng.next_u64();
        let mut rc = ServerConfig::new("mx.remote.sim");
        rc.seed = rng.next_u64();
        rc.spool_threshold = 16 << 10;
        let host = Host::parse(OUR_HOST).unwrap_or_else(|_| unreachable!("valid host name"));
        let mut dc = DeliveryConfig::new(host.clone());
        dc.transport = Transport::Direct(TransportDirect {
            ipv4: true,
            ipv6: false,
        });
        let mut cc = ClientConfig::new(
            Host::parse("client.senders.sim").unwrap_or_else(|_| unreachable!("valid host")),
            OUR_HOST,
        );
        cc.tls_mode = TlsMode::Skip;
        let qcfg = QueueConfigBuilder {
            backoff: [60, 120, 300, 600, 1200]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            jitter: 0.1,
            delayed_dsn_after_attempt: 2,
            max_attempts: 5,
            // One or two connections per domain, one to four transactions each (connection
            // reuse), by seed.
            max_per_domain: 1 + (cfg.seed % 2) as usize,
            max_total: 6,
            max_recipients_per_batch: 3,
            max_transactions_per_connection: 1 + (cfg.seed / 2 % 4) as usize,
        }
        .build()
        .unwrap_or_else(|e| unreachable!("valid queue config: {e}"));
        use Behavior::*;
        let remote_hosts = [
            (ip4(10, 2, 0, 1), Good),
            (ip4(10, 2, 0, 2), Good),
            (ip4(10, 2, 1, 1), Down),
            (ip4(10, 2, 1, 2), Good),
            (ip4(10, 2, 2, 1), Flaky),
            (ip4(10, 2, 3, 1), TempFail),
            (ip4(10, 2, 4, 1), PermFail),
            (ip4(10, 2, 5, 1), Hang),
            (ip4(10, 2, 5, 2), Good),
            (ip4(10, 2, 6, 1), Good),
            (ip4(10, 2, 7, 1), Good),
        ]
        .into_iter()
        .map(|(ip, behavior)| RemoteHost { ip, behavior })
        .collect();
        let chaos_ms = cfg.chaos.as_millis() as u64;
        let mut w = World {
            trace: std::env::var("RMOX_SIM_TRACE")
                .ok()
                .and_then(|v| v.parse().ok()),
            rng,
            base: Instant::now(),
            now_ms: 0,
            seq: 0,
            events: BTreeMap::new(),
            timers: BTreeMap::new(),
            conns: BTreeMap::new(),
            next_id: 1,
            clients: Vec::new(),
            client_cfg: Arc::new(cc),
            servers: BTreeMap::new(),
            server_cfg: Arc::new(sc),
            remote_cfg: Arc::new(rc),
            remote_hosts,
            remotes: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            delivery_cfg: Arc::new(dc),
            qcfg,
            in_flight: InFlight::default(),
            wake_at: None,
            our_up: true,
            partitions: Vec::new(),
            durable: Disk::default(),
            pending: VecDeque::new(),
            committed: BTreeMap::new(),
            commits_per_tag: BTreeMap::new(),
            acked: BTreeSet::new(),
            remote_mail: Vec::new(),
            window_out: BTreeMap::new(),
            dsn_tags: BTreeMap::new(),
            double_bounced: Vec::new(),
            runtime_violations: Vec::new(),
            stats: Stats::default(),
            unfinished: None,
            cfg,
        };
        // Clients and their messages.
        let total_w: u32 = RCPT_POOL.iter().map(|(_, w)| w).sum();
        let mut msg_id = 1;
        for i in 0..w.cfg.clients {
            let from = format!("c{i}@senders.sim");
            let mut msgs = Vec::new();
            for _ in 0..w.cfg.messages_per_client {
                let n = 1 + w.rng.below(7) as usize;
                let mut rcpts: Vec<String> = Vec::new();
                for _ in 0..n {
                    let mut x = w.rng.below(u64::from(total_w)) as u32;
                    for (a, wt) in RCPT_POOL {
                        if x < wt {
                            if !rcpts.iter().any(|r| r == a) {
                                rcpts.push(a.to_string());
                            }
                            break;
                        }
                        x -= wt;
                    }
                }
                let size = match w.rng.below(100) {
                    0..=79 => 300 + w.rng.below(3000) as usize,
                    80..=95 => 9000 + w.rng.below(30_000) as usize,
                    _ => 70_000,
                };
                msgs.push(ClientMsg {
                    id: msg_id,
                    from: from.clone(),
                    rcpts,
                    size,
                    attempts: 0,
                    done: false,
                    acked_attempt: None,
                });
                msg_id += 1;
            }
            w.stats.messages += msgs.len() as u64;
            w.clients.push(ClientState {
                ip: ip4(10, 1, (i / 200) as u8, (i % 200 + 1) as u8),
                msgs,
                sess: None,
                conn: None,
                current: None,
                tried: BTreeSet::new(),
                raw: (i % 4 == 3).then(Raw::default),
            });
            let at = w.rng.below(chaos_ms.max(1) * 3 / 4);
            w.push(at, Ev::ClientConnect(i));
        }
        if w.cfg.faults {
            // Crashes of our server at random times, partitions of random hosts.
            for _ in 0..w.rng.below(4) {
                let at = w.rng.below(chaos_ms.max(1));
                w.push(at, Ev::Crash);
            }
            let mut ips: Vec<IpAddr> = vec![IpAddr::V4(OUR_IP)];
            ips.extend(w.remote_hosts.iter().map(|h| h.ip));
            ips.extend(w.clients.iter().map(|c| c.ip));
            for _ in 0..w.rng.below(5) {
                let ip = ips[w.rng.below(ips.len() as u64) as usize];
                let start = w.rng.below(chaos_ms.max(1));
                let len = 10_000 + w.rng.below(20 * 60_000);
                w.partitions.push((ip, start, start + len));
            }
        }
        w
    }

    fn now(&self) -> Now {
        Now {
            mono: self.base + Duration::from_millis(self.now_ms),
            wall: UnixTime(WALL0 + (self.now_ms / 1000) as i64),
        }
    }

    fn wall(&self) -> UnixTime {
        self.now().wall
    }

    fn chaos(&self) -> bool {
        self.cfg.faults && self.now_ms < self.cfg.chaos.as_millis() as u64
    }

    fn chance(&mut self, permille: u64) -> bool {
        self.rng.below(1000) < permille
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.insert((at.max(self.now_ms), self.seq), ev);
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn ms_of(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.base);
        d.as_nanos().div_ceil(1_000_000) as u64
    }

    fn set_timer(&mut self, a: Actor, deadline: Option<Instant>) {
        match deadline {
            Some(d) => {
                let ms = self.ms_of(d).max(self.now_ms);
                if self.timers.get(&a) != Some(&ms) {
                    self.timers.insert(a, ms);
                    self.push(ms, Ev::Timer(a));
                }
            }
            None => {
                self.timers.remove(&a);
            }
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.virtual_secs = self.now_ms / 1000;
        s
    }

    /// Runs until nothing is left to do, or a bound is hit.
    pub(crate) fn run(&mut self) {
        let max_ms = self.cfg.max_time.as_millis() as u64;
        while let Some(((at, _), ev)) = self.events.pop_first() {
            self.now_ms = at;
            self.stats.steps += 1;
            if at > max_ms {
                self.unfinished = Some(format!("virtual time bound {max_ms} ms reached"));
                break;
            }
            if self.stats.steps > self.cfg.max_steps {
                self.unfinished = Some(format!("step bound {} reached", self.cfg.max_steps));
                break;
            }
            self.event(ev);
        }
    }

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::ClientConnect(i) => self.client_connect(i),
            Ev::Connected(c) => self.connected(c),
            Ev::ConnectRefused(c) => self.connect_refused(c),
            Ev::Arrive(c, dir) => {
                self.arrive(c, dir);
                self.gc(c);
            }
            Ev::Cut(c) => {
                self.cut(c);
                self.gc(c);
            }
            Ev::Eof(c, a) => {
                self.eof(c, a);
                self.gc(c);
            }
            Ev::Timer(a) => {
                if self.timers.get(&a).is_some_and(|&t| t <= self.now_ms) {
                    self.timers.remove(&a);
                }
                self.timeout(a);
            }
            Ev::Sync => self.sync(),
            Ev::Dns(did, token, lookups) => self.dns_answer(did, token, lookups),
            Ev::QueueWake => {
                self.wake_at = None;
                self.queue_run();
            }
            Ev::Crash => self.crash(),
            Ev::Restart => {
                self.our_up = true;
                self.in_flight = InFlight::default();
                self.queue_run();
            }
        }
    }

    // ---------------------------------------------------------------- network

    fn partitioned(&self, ip: IpAddr) -> Option<u64> {
        self.partitions
            .iter()
            .filter(|(p, s, e)| *p == ip && *s <= self.now_ms && self.now_ms < *e)
            .map(|(_, _, e)| *e)
            .max()
    }

    fn latency(&mut self) -> u64 {
        1 + self.rng.below(40)
    }

    /// Opens a connection; the initiator hears back with [`Ev::Connected`] or
    /// [`Ev::ConnectRefused`].
    fn connect(&mut self, init: Actor, token: Option<Token>, src: IpAddr, target: IpAddr) -> u64 {
        let c = self.id();
        let chaos = self.chaos();
        let cut_at = (chaos && self.chance(120)).then(|| self.rng.below(12_000));
        let stall_at = (chaos && self.chance(20)).then(|| self.rng.below(12_000));
        let cut_after_dot = chaos && self.chance(80);
        self.conns.insert(
            c,
            Conn {
                init,
                token,
                acc: None,
                src,
                target,
                dirs: [Half::default(), Half::default()],
                dead: false,
                stalled: false,
                cut_at,
                stall_at,
                cut_after_dot,
                faulted: false,
            },
        );
        self.stats.connections += 1;
        self.stats.peak_connections = self.stats.peak_connections.max(self.conns.len() as u64);
        let lat = self.latency();
        if self.partitioned(src).is_some() || self.partitioned(target).is_some() {
            // No answer at all: the connect times out.
            if let Some(conn) = self.conns.get_mut(&c) {
                conn.faulted = true;
            }
            self.push(self.now_ms + 30_000, Ev::ConnectRefused(c));
        } else {
            self.push(self.now_ms + lat, Ev::Connected(c));
        }
        c
    }

    fn reachable(&self, target: IpAddr) -> Option<Option<usize>> {
        if target == IpAddr::V4(OUR_IP) {
            return self.our_up.then_some(None);
        }
        let h = self.remote_hosts.iter().position(|h| h.ip == target)?;
        (self.remote_hosts[h].behavior != Behavior::Down).then_some(Some(h))
    }

    fn connected(&mut self, c: u64) {
        let Some(conn) = self.conns.get(&c) else {
            return;
        };
        if conn.dead {
            self.conns.remove(&c);
            return;
        }
        let (init, target, src) = (conn.init, conn.target, conn.src);
        let Some(host) = self.reachable(target) else {
            self.connect_refused(c);
            return;
        };
        let now = self.now();
        let cid = self.id();
        let peer = Peer { ip: src, cid };
        let acc = match host {
            None => {
                let sess = match ServerSession::new(Arc::clone(&self.server_cfg), peer, now) {
                    Ok(s) => s,
                    Err(e) => {
                        self.runtime_violations.push(format!("server session: {e}"));
                        return;
                    }
                };
                self.servers.insert(
                    cid,
                    SrvState {
                        sess,
                        conn: c,
                        spool: MemorySpool::default(),
                        stored: None,
                    },
                );
                Actor::Server(cid)
            }
            Some(h) => {
                let sess = if self.remote_hosts[h].behavior == Behavior::Hang {
                    None
                } else {
                    ServerSession::new(Arc::clone(&self.remote_cfg), peer, now).ok()
                };
                self.remotes.insert(
                    cid,
                    RemoteState {
                        sess,
                        host: h,
                        conn: c,
                        spool: MemorySpool::default(),
                    },
                );
                Actor::Remote(cid)
            }
        };
        if let Some(conn) = self.conns.get_mut(&c) {
            conn.acc = Some(acc);
        }
        self.drive(acc);
        match init {
            Actor::Client(i) if self.clients[i].raw.is_some() => self.raw_start(i, c),
            Actor::Client(i) => {
                let mut cc = (*self.client_cfg).clone();
                cc.seed = self.rng.next_u64();
                let sess = ClientSession::new(Arc::new(cc), now);
                self.clients[i].sess = Some(sess);
                self.client_next(i);
            }
            Actor::Delivery(did) => {
                let token = self.conns.get(&c).and_then(|x| x.token);
                if let (Some(d), Some(t)) = (self.deliveries.get_mut(&did), token) {
                    let _ = d.sess.handle(
                        now,
                        delivery::Input::Completed(t, delivery::Completion::Connected),
                    );
                }
                self.drive(init);
            }
            _ => {}
        }
    }

    fn connect_refused(&mut self, c: u64) {
        let Some(conn) = self.conns.remove(&c) else {
            return;
        };
        let now = self.now();
        match conn.init {
            Actor::Client(i) => {
                self.clients[i].conn = None;
                self.client_retry(i);
            }
            Actor::Delivery(did) => {
                if let (Some(d), Some(t)) = (self.deliveries.get_mut(&did), conn.token) {
                    let _ = d.sess.handle(
                        now,
                        delivery::Input::Completed(
                            t,
                            delivery::Completion::ConnectFailed("connection refused".into()),
                        ),
                    );
                }
                self.drive(conn.init);
            }
            _ => {}
        }
    }

    /// Puts bytes on the wire in direction `dir`, in random chunks with delays.
    fn send(&mut self, c: u64, dir: usize, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        let now = self.now_ms;
        let (src, target) = match self.conns.get(&c) {
            Some(conn) if !conn.dead => (conn.src, conn.target),
            _ => return,
        };
        let part = self.partitioned(src).or(self.partitioned(target));
        let mut cut: Option<usize> = None;
        {
            let Some(conn) = self.conns.get_mut(&c) else {
                return;
            };
            if conn.stalled {
                return;
            }
            let before = conn.dirs[dir].sent;
            conn.dirs[dir].sent += bytes.len() as u64;
            if dir == TO_ACC {
                if let Some(at) = conn.cut_at {
                    if before <= at && at < conn.dirs[dir].sent {
                        cut = Some((at - before) as usize);
                    }
                }
                if let Some(at) = conn.stall_at {
                    if before <= at && at < conn.dirs[dir].sent {
                        conn.stalled = true;
                        conn.faulted = true;
                        return;
                    }
                }
            }
        }
        // A cut delivers the bytes before the cut point, then breaks the connection.
        let bytes = match cut {
            Some(n) => &bytes[..n.min(bytes.len())],
            None => &bytes[..],
        };
        let mut rest = bytes;
        let mut arrivals = Vec::new();
        while !rest.is_empty() {
            let n = if self.rng.below(4) == 0 {
                1 + self.rng.below(rest.len() as u64) as usize
            } else {
                rest.len()
            };
            let lat = self.latency();
            let Some(conn) = self.conns.get_mut(&c) else {
                return;
            };
            let mut at = (now + lat).max(conn.dirs[dir].last_at);
            if let Some(end) = part {
                at = at.max(end + lat);
                conn.faulted = true;
            }
            conn.dirs[dir].last_at = at;
            conn.dirs[dir].segs.push_back((at, rest[..n].to_vec()));
            let buffered: usize = conn.dirs[dir]
                .segs
                .iter()
                .map(|(_, b)| b.len())
                .sum::<usize>()
                + conn.dirs[dir].unread.len();
            self.stats.peak_conn_buffer = self.stats.peak_conn_buffer.max(buffered as u64);
            if buffered > MAX_CONN_BUFFER {
                self.runtime_violations.push(format!(
                    "memory: connection {c} holds {buffered} bytes in one direction (bound {MAX_CONN_BUFFER})"
                ));
            }
            arrivals.push(at);
            rest = &rest[n..];
        }
        let last = arrivals.last().copied().unwrap_or(now);
        for at in arrivals {
            self.push(at, Ev::Arrive(c, dir));
        }
        if cut.is_some() {
            self.push(last + 1, Ev::Cut(c));
        }
    }

    /// The writer of direction `dir` closed its side.
    fn fin(&mut self, c: u64, dir: usize) {
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        if conn.dead || conn.dirs[dir].fin {
            return;
        }
        conn.dirs[dir].fin = true;
        let at = conn.dirs[dir].last_at.max(self.now_ms) + 1;
        self.push(at, Ev::Arrive(c, dir));
    }

    /// Breaks a connection: both ends see it closed, bytes in flight are lost.
    fn cut(&mut self, c: u64) {
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        if conn.dead {
            return;
        }
        conn.dead = true;
        conn.faulted = true;
        let ends = [Some(conn.init), conn.acc];
        self.stats.cuts += 1;
        if let Some(Actor::Delivery(did)) = ends[0] {
            if let Some(d) = self.deliveries.get_mut(&did) {
                d.faulted = true;
            }
        }
        for a in ends.into_iter().flatten() {
            self.push(self.now_ms, Ev::Eof(c, a));
        }
    }

    fn receiver(conn: &Conn, dir: usize) -> Option<Actor> {
        if dir == TO_ACC {
            conn.acc
        } else {
            Some(conn.init)
        }
    }

    fn arrive(&mut self, c: u64, dir: usize) {
        let now = self.now_ms;
        let Some(conn) = self.conns.get_mut(&c) else {
            return;
        };
        if conn.dead || conn.stalled {
            return;
        }
        let h = &mut conn.dirs[dir];
        while h.segs.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((_, b)) = h.segs.pop_front() {
                h.unread.extend_from_slice(&b);
            }
        }
        let eof = h.fin && h.segs.is_empty() && !h.eof_done;
        let Some(r) = Self::receiver(conn, dir) else {
            return;
        };
        self.drive(r);
        if eof {
            if let Some(conn) = self.conns.get_mut(&c) {
                conn.dirs[dir].eof_done = true;
            }
            self.eof(c, r);
        }
        self.gc(c);
    }

    fn gc(&mut self, c: u64) {
        let Some(conn) = self.conns.get(&c) else {
            return;
        };
        let alive = |a: Option<Actor>, w: &World| match a {
            Some(Actor::Client(i)) => w.clients[i].conn == Some(c),
            Some(Actor::Server(s)) => w.servers.contains_key(&s),
            Some(Actor::Remote(r)) => w.remotes.contains_key(&r),
            Some(Actor::Delivery(d)) => w.deliveries.contains_key(&d),
            None => false,
        };
        let closed = conn.dirs.iter().all(|h| h.fin);
        let done = conn.dead || (closed && (conn.stalled || conn.dirs.iter().all(|h| h.eof_done)));
        if done || (!alive(Some(conn.init), self) && !alive(conn.acc, self)) {
            self.conns.remove(&c);
        }
    }

    /// The unconsumed bytes for `a` on its connection.
    fn unread_of(&mut self, a: Actor, c: u64) -> Option<&mut Vec<u8>> {
        let conn = self.conns.get_mut(&c)?;
        if conn.dead {
            return None;
        }
        let dir = if Some(a) == conn.acc { TO_ACC } else { TO_INIT };
        Some(&mut conn.dirs[dir].unread)
    }

    fn eof(&mut self, c: u64, a: Actor) {
        let now = self.now();
        match a {
            Actor::Client(i) => {
                if self.clients[i].conn != Some(c) {
                    return;
                }
                if self.clients[i].raw.is_some() {
                    self.raw_end(i, c);
                    return;
                }
                if let Some(s) = self.clients[i].sess.as_mut() {
                    let _ = s.handle(now, client::Input::PeerClosed);
                }
            }
            Actor::Server(sid) => {
                let Some(s) = self.servers.get_mut(&sid) else {
                    return;
                };
                if s.conn != c {
                    return;
                }
                let state = format!("{:?}", s.sess);
                if mid_data(&state) {
                    self.stats.lost_mid_data += 1;
                }
                let _ = s.sess.handle(now, Input::PeerClosed);
            }
            Actor::Remote(rid) => {
                let Some(s) = self.remotes.get_mut(&rid) else {
                    return;
                };
                match s.sess.as_mut() {
                    Some(sess) => {
                        let state = format!("{sess:?}");
                        if mid_data(&state) {
                            self.stats.lost_mid_data += 1;
                        }
                        let _ = sess.handle(now, Input::PeerClosed);
                    }
                    None => {
                        self.remotes.remove(&rid);
                        self.fin(c, TO_INIT);
                        return;
                    }
                }
            }
            Actor::Delivery(did) => {
                let Some(d) = self.deliveries.get_mut(&did) else {
                    return;
                };
                let Some(cid) = d.conns.iter().find(|(_, &v)| v == c).map(|(k, _)| *k) else {
                    return;
                };
                let _ = d.sess.handle(now, delivery::Input::Closed(cid));
            }
        }
        self.drive(a);
        self.gc(c);
    }

    fn timeout(&mut self, a: Actor) {
        let now = self.now();
        match a {
            Actor::Client(i) => {
                let cl = &self.clients[i];
                if let (Some(r), Some(c)) = (cl.raw.as_ref(), cl.conn) {
                    if r.active && r.deadline <= self.now_ms {
                        self.raw_end(i, c);
                    }
                    return;
                }
                if let Some(s) = self.clients[i].sess.as_mut() {
                    let _ = s.handle(now, client::Input::Timeout);
                }
            }
            Actor::Server(sid) => {
                if let Some(s) = self.servers.get_mut(&sid) {
                    let _ = s.sess.handle(now, Input::Timeout);
                }
            }
            Actor::Remote(rid) => {
                if let Some(s) = self.remotes.get_mut(&rid).and_then(|r| r.sess.as_mut()) {
                    let _ = s.handle(now, Input::Timeout);
                }
            }
            Actor::Delivery(did) => {
                if let Some(d) = self.deliveries.get_mut(&did) {
                    let _ = d.sess.handle(now, delivery::Input::Timeout);
                }
            }
        }
        self.drive(a);
    }

    fn drive(&mut self, a: Actor) {
        match a {
            Actor::Client(i) => self.drive_client(i),
            Actor::Server(s) => self.drive_server(s, false),
            Actor::Remote(r) => self.drive_server(r, true),
            Actor::Delivery(d) => self.drive_delivery(d),
        }
    }

    // ---------------------------------------------------------------- clients

    fn client_connect(&mut self, i: usize) {
        if self.clients[i].conn.is_some() {
            return;
        }
        if !self.clients[i].msgs.iter().any(|m| !m.done) {
            return;
        }
        let ip = self.clients[i].ip;
        self.clients[i].tried.clear();
        self.clients[i].current = None;
        let c = self.connect(Actor::Client(i), None, ip, IpAddr::V4(OUR_IP));
        self.clients[i].conn = Some(c);
    }

    fn client_retry(&mut self, i: usize) {
        self.clients[i].sess = None;
        self.clients[i].conn = None;
        self.clients[i].current = None;
        if self.clients[i].msgs.iter().any(|m| !m.done) {
            let d = 30_000 + self.rng.below(300_000);
            self.push(self.now_ms + d, Ev::ClientConnect(i));
        }
    }

    /// Hands the client session its next message, or QUIT.
    fn client_next(&mut self, i: usize) {
        let now = self.now();
        let cl = &mut self.clients[i];
        let next = cl
            .msgs
            .iter()
            .position(|m| !m.done)
            .filter(|&k| !cl.tried.contains(&k));
        let next = match next {
            Some(k) => Some(k),
            None => (0..cl.msgs.len()).find(|k| !cl.msgs[*k].done && !cl.tried.contains(k)),
        };
        let Some(sess) = cl.sess.as_mut() else { return };
        match next {
            Some(k) => {
                cl.tried.insert(k);
                cl.current = Some(k);
                let m = &mut cl.msgs[k];
                m.attempts += 1;
                let bytes = client_message(m, m.attempts);
                let recipients = m
                    .rcpts
                    .iter()
                    .filter_map(|r| ForwardPath::parse(&format!("<{r}>")).ok())
                    .map(|f| (f, RcptParams::default()))
                    .collect();
                let d = Delivery {
                    mail_from: ReversePath::parse(&format!("<{}>", m.from))
                        .unwrap_or(ReversePath::Null),
                    recipients,
                    params: MailParams::default(),
                    message: bytes.into(),
                    needs: Needs::default(),
                };
                let _ = sess.handle(now, client::Input::Deliver(Box::new(d)));
            }
            None => {
                cl.current = None;
                let _ = sess.handle(now, client::Input::Quit);
            }
        }
    }

    /// The scripted client's first write: everything up to DATA.
    fn raw_start(&mut self, i: usize, c: u64) {
        let cl = &mut self.clients[i];
        let Some(k) = cl.msgs.iter().position(|m| !m.done) else {
            self.fin(c, TO_ACC);
            return;
        };
        cl.current = Some(k);
        let m = &mut cl.msgs[k];
        m.attempts += 1;
        let mut out = format!("EHLO raw.senders.sim\r\nMAIL FROM:<{}>\r\n", m.from);
        for r in &m.rcpts {
            out.push_str(&format!("RCPT TO:<{r}>\r\n"));
        }
        out.push_str("DATA\r\n");
        if let Some(r) = cl.raw.as_mut() {
            *r = Raw {
                active: true,
                deadline: self.now_ms + 20 * 60_000,
                ..Raw::default()
            };
        }
        self.push(self.now_ms + 20 * 60_000, Ev::Timer(Actor::Client(i)));
        self.send(c, TO_ACC, out.into_bytes());
    }

    /// The scripted client's connection ended: its message is finished (sent or not).
    fn raw_end(&mut self, i: usize, c: u64) {
        let cl = &mut self.clients[i];
        if let Some(k) = cl.current.take() {
            cl.msgs[k].done = true;
        }
        if let Some(r) = cl.raw.as_mut() {
            r.active = false;
        }
        self.fin(c, TO_ACC);
        self.client_retry(i);
    }

    fn drive_raw(&mut self, i: usize) {
        let Some(c) = self.clients[i].conn else {
            return;
        };
        let data = self
            .unread_of(Actor::Client(i), c)
            .map(std::mem::take)
            .unwrap_or_default();
        let cl = &mut self.clients[i];
        let Some(r) = cl.raw.as_mut().filter(|r| r.active) else {
            return;
        };
        let Some(k) = cl.current else { return };
        r.buf.extend_from_slice(&data);
        let n_rcpt = cl.msgs[k].rcpts.len();
        let mut send = Vec::new();
        let mut quit = false;
        while let Some(pos) = r.buf.windows(2).position(|w| w == b"\r\n") {
            let line: Vec<u8> = r.buf.drain(..pos + 2).collect();
            if line.get(3) != Some(&b' ') {
                continue; // not the last line of a reply
            }
            r.finals += 1;
            // greeting, EHLO, MAIL, the RCPTs, then DATA's reply.
            if r.finals == 3 + n_rcpt + 1 {
                if line.starts_with(b"354") {
                    let m = &cl.msgs[k];
                    let body = client_message(m, m.attempts);
                    let mut stuffed = Vec::with_capacity(body.len() + 64);
                    for l in body.split_inclusive(|&b| b == b'\n') {
                        if l.first() == Some(&b'.') {
                            stuffed.push(b'.');
                        }
                        stuffed.extend_from_slice(l);
                    }
                    stuffed.extend_from_slice(b".\r\n");
                    send = stuffed;
                    r.sent_data = true;
                } else {
                    quit = true;
                }
            } else if r.finals > 3 + n_rcpt + 1 && r.sent_data && !quit {
                quit = true;
                r.sent_data = false;
            }
        }
        if !send.is_empty() {
            self.send(c, TO_ACC, send);
        }
        if quit {
            self.send(c, TO_ACC, b"QUIT\r\n".to_vec());
        }
    }

    fn drive_client(&mut self, i: usize) {
        if self.clients[i].raw.is_some() {
            self.drive_raw(i);
            return;
        }
        for _ in 0..64 {
            let now = self.now();
            let Some(c) = self.clients[i].conn else {
                return;
            };
            // Offer what arrived.
            if let Some(mut data) = self.unread_of(Actor::Client(i), c).map(std::mem::take) {
                if !data.is_empty() {
                    let used = match self.clients[i].sess.as_mut() {
                        Some(s) => s
                            .handle(now, client::Input::Received(&data))
                            .unwrap_or(data.len()),
                        None => data.len(),
                    };
                    data.drain(..used.min(data.len()));
                }
                if let Some(u) = self.unread_of(Actor::Client(i), c) {
                    data.append(u);
                    *u = data;
                }
            }
            let Some(sess) = self.clients[i].sess.as_mut() else {
                return;
            };
            let mut tx = Vec::new();
            let mut events = Vec::new();
            let mut close = false;
            let mut deadline = None;
            loop {
                match sess.poll(now, &mut tx) {
                    client::Output::Transmit => {}
                    client::Output::Event(e) => events.push(e),
                    client::Output::Idle { deadline: d } => {
                        deadline = d;
                        break;
                    }
                    client::Output::Close => {
                        close = true;
                        break;
                    }
                }
            }
            self.send(c, TO_ACC, tx);
            let mut again = false;
            for e in events {
                if let client::Event::Done(outcome) = e {
                    let cl = &mut self.clients[i];
                    if let Some(k) = cl.current.take() {
                        let m = &mut cl.msgs[k];
                        match &outcome.data {
                            Ok(_) => {
                                m.done = true;
                                m.acked_attempt = Some(m.attempts);
                            }
                            Err(e)
                                if matches!(
                                    e.kind,
                                    ErrorKind::PermanentReply | ErrorKind::PeerIncompatible(_)
                                ) =>
                            {
                                m.done = true;
                            }
                            Err(_) => {
                                if m.attempts >= CLIENT_MAX_ATTEMPTS {
                                    m.done = true;
                                }
                            }
                        }
                    }
                    if !close {
                        self.client_next(i);
                        again = true;
                    }
                }
            }
            if close {
                self.fin(c, TO_ACC);
                self.set_timer(Actor::Client(i), None);
                self.client_retry(i);
                return;
            }
            self.set_timer(Actor::Client(i), deadline);
            if !again {
                return;
            }
        }
    }

    // ---------------------------------------------------------------- servers

    /// Drives our server session `id` (or a remote host's session when `remote`).
    fn drive_server(&mut self, id: u64, remote: bool) {
        let actor = if remote {
            Actor::Remote(id)
        } else {
            Actor::Server(id)
        };
        for _ in 0..64 {
            let now = self.now();
            let c = match remote {
                false => match self.servers.get(&id) {
                    Some(s) => s.conn,
                    None => return,
                },
                true => match self.remotes.get(&id) {
                    Some(s) => s.conn,
                    None => return,
                },
            };
            let overflow = {
                let data = self.unread_of(actor, c).map(std::mem::take);
                let mut over = false;
                if let Some(mut data) = data {
                    if !data.is_empty() {
                        let sess = match remote {
                            false => self.servers.get_mut(&id).map(|s| &mut s.sess),
                            true => self.remotes.get_mut(&id).and_then(|s| s.sess.as_mut()),
                        };
                        // A hanging host reads and never answers.
                        let used = match sess {
                            Some(s) => s.handle(now, Input::Received(&data)).unwrap_or(data.len()),
                            None => data.len(),
                        };
                        data.drain(..used.min(data.len()));
                        over = data.len() > MAX_UNREAD;
                    }
                    if let Some(u) = self.unread_of(actor, c) {
                        data.append(u);
                        *u = data;
                    }
                }
                over
            };
            let sess = match remote {
                false => self.servers.get_mut(&id).map(|s| &mut s.sess),
                true => self.remotes.get_mut(&id).and_then(|s| s.sess.as_mut()),
            };
            let Some(sess) = sess else { return };
            if overflow {
                let _ = sess.handle(now, Input::Overflow);
            }
            let mut tx = Vec::new();
            let mut effects = Vec::new();
            let mut events = Vec::new();
            let mut close = false;
            let mut deadline = None;
            loop {
                match sess.poll(now, &mut tx) {
                    Output::Transmit => {}
                    Output::Effect(t, e) => effects.push((t, e)),
                    Output::Event(e) => events.push(e),
                    Output::Idle { deadline: d, .. } => {
                        deadline = d;
                        break;
                    }
                    Output::Close => {
                        close = true;
                        break;
                    }
                }
            }
            if self.trace == Some(id) {
                eprintln!("t={} {actor:?} effects {effects:?} events {events:?} close {close} deadline {:?} tx {:?} unread {:?}", self.now_ms, deadline.map(|d| self.ms_of(d)), String::from_utf8_lossy(&tx), self.conns.get(&c).map(|x| (x.dead, x.stalled, x.dirs[0].unread.len(), x.dirs[0].segs.len())));
            }
            let mut accepted = false;
            for e in events {
                match e {
                    Event::Accepted { .. } => accepted = true,
                    Event::Refused { code: 452, .. } if !remote => self.stats.over_rcpt_limit += 1,
                    Event::Refused { code: 552, .. } if !remote => self.stats.over_size_limit += 1,
                    Event::SpoolEnded(sp) => {
                        if let Some(s) = self.servers.get(&id).filter(|_| !remote) {
                            s.spool.end(sp);
                        } else if let Some(s) = self.remotes.get(&id).filter(|_| remote) {
                            s.spool.end(sp);
                        }
                    }
                    _ => {}
                }
            }
            if accepted && !remote {
                if let Some(info) = self.servers.get_mut(&id).and_then(|s| s.stored.take()) {
                    for r in &info.rcpts {
                        if self.acked.insert((info.tag.clone(), r.clone())) {
                            self.stats.acked_recipients += 1;
                        }
                    }
                }
            }
            if accepted && self.conns.get(&c).is_some_and(|x| x.cut_after_dot) && self.chaos() {
                // The connection is lost after the final dot, before the reply.
                self.stats.cuts_after_dot += 1;
                self.cut(c);
                continue;
            }
            self.send(c, TO_INIT, tx);
            if close {
                self.fin(c, TO_INIT);
                self.set_timer(actor, None);
                if remote {
                    self.remotes.remove(&id);
                } else {
                    self.servers.remove(&id);
                }
                return;
            }
            self.set_timer(actor, deadline);
            let mut answers = Vec::new();
            for (t, e) in effects {
                if let Some(a) = self.answer(id, remote, t, e) {
                    answers.push((t, a));
                }
            }
            if answers.is_empty() {
                return;
            }
            let now = self.now();
            let sess = match remote {
                false => self.servers.get_mut(&id).map(|s| &mut s.sess),
                true => self.remotes.get_mut(&id).and_then(|s| s.sess.as_mut()),
            };
            let Some(sess) = sess else { return };
            for (t, a) in answers {
                let _ = sess.handle(now, Input::Completed(t, a));
            }
        }
    }

    /// The answer to a server effect now, or `None` when it comes later.
    fn answer(&mut self, id: u64, remote: bool, token: Token, e: Effect) -> Option<Completion> {
        let behavior = match remote {
            true => self
                .remotes
                .get(&id)
                .map(|r| self.remote_hosts[r.host].behavior)
                .unwrap_or(Behavior::Good),
            false => Behavior::Good,
        };
        match e {
            Effect::CheckConnection { .. } | Effect::CheckSender { .. } => {
                Some(Completion::Verdict(Verdict::Accept))
            }
            Effect::CheckRecipient { recipient, .. } => {
                let addr = addr_of(&recipient);
                let v = if remote {
                    match behavior {
                        Behavior::TempFail => Verdict::Reject(Reply::new(
                            451,
                            Some(Enhanced::new(4, 3, 0)),
                            "try again later",
                        )),
                        Behavior::PermFail => Verdict::Reject(Reply::new(
                            550,
                            Some(Enhanced::new(5, 1, 1)),
                            "no such user",
                        )),
                        _ => Verdict::Accept,
                    }
                } else if domain_of(&addr) == LOCAL_DOMAIN
                    && !LOCAL_USERS
                        .iter()
                        .any(|u| addr == format!("{u}@{LOCAL_DOMAIN}"))
                {
                    Verdict::Reject(Reply::new(
                        550,
                        Some(Enhanced::new(5, 1, 1)),
                        "no such user",
                    ))
                } else {
                    Verdict::Accept
                };
                Some(Completion::Verdict(v))
            }
            Effect::Spool { spool, chunk, last } => {
                let s = match remote {
                    false => self.servers.get(&id).map(|s| &s.spool),
                    true => self.remotes.get(&id).map(|s| &s.spool),
                }?;
                Some(Completion::Spool(s.append(spool, &chunk, last)))
            }
            Effect::Store(tx) => {
                if remote {
                    if behavior == Behavior::Flaky && self.chance(300) {
                        return Some(Completion::Stored(StoreOutcome::Refused(Reply::new(
                            451,
                            Some(Enhanced::new(4, 3, 0)),
                            "flaky storage",
                        ))));
                    }
                    self.remote_store(id, &tx);
                    Some(Completion::Stored(StoreOutcome::Delivered))
                } else {
                    self.store(id, token, &tx)
                }
            }
            _ => None,
        }
    }

    fn remote_store(&mut self, rid: u64, tx: &server::Transaction) {
        let bytes: Arc<[u8]> = tx.message.to_vec().into();
        let tag = tag_of(&bytes);
        let mail_from = rev_of(&tx.mail_from);
        let did = self
            .remotes
            .get(&rid)
            .and_then(|r| self.conns.get(&r.conn))
            .and_then(|c| match c.init {
                Actor::Delivery(d) => Some(d),
                _ => None,
            });
        for (r, _) in &tx.recipients {
            let rcpt = addr_of(r);
            self.stats.deliveries += 1;
            self.remote_mail.push(Delivered {
                rcpt: rcpt.clone(),
                mail_from: mail_from.clone(),
                tag: tag.clone(),
                bytes: Arc::clone(&bytes),
            });
            if let Some(d) = did.and_then(|d| self.deliveries.get_mut(&d)) {
                d.stored.push((tag.clone(), rcpt));
            }
        }
    }

    // ---------------------------------------------------------------- storage

    /// Our server's Store: one atomic commit (local mailboxes and queue entries), answered
    /// once synced.
    fn store(&mut self, sid: u64, token: Token, tx: &server::Transaction) -> Option<Completion> {
        let bytes: Arc<[u8]> = tx.message.to_vec().into();
        let tag = tag_of(&bytes);
        let rcpts: Vec<String> = tx.recipients.iter().map(|(r, _)| addr_of(r)).collect();
        if rcpts.len() > MAX_RECIPIENTS {
            self.runtime_violations.push(format!(
                "limit: transaction {tag} stored with {} recipients (max {MAX_RECIPIENTS})",
                rcpts.len()
            ));
        }
        if bytes.len() > MAX_MESSAGE_SIZE as usize + HEADER_ALLOWANCE {
            self.runtime_violations.push(format!(
                "limit: message {tag} of {} bytes stored (max {MAX_MESSAGE_SIZE})",
                bytes.len()
            ));
        }
        let mail_from = rev_of(&tx.mail_from);
        let wall = self.wall();
        let mut ops = Vec::new();
        let msg_id = self.id();
        let mut queued = false;
        for r in &rcpts {
            if domain_of(r) == LOCAL_DOMAIN {
                ops.push(Op::Mailbox(Delivered {
                    rcpt: r.clone(),
                    mail_from: mail_from.clone(),
                    tag: tag.clone(),
                    bytes: Arc::clone(&bytes),
                }));
            } else {
                queued = true;
                let id = self.id();
                ops.push(Op::PutItem(QueueItem {
                    id,
                    msg_id,
                    sender_account: None,
                    mail_from: mail_from.clone(),
                    recipient: r.clone(),
                    recipient_domain: domain_of(r),
                    next_attempt: wall,
                    attempts: 0,
                    hold: false,
                    requiretls: None,
                    size: bytes.len() as u64,
                    transport: None,
                    last_error: None,
                    dsn: DsnParams::default(),
                    is_dsn: false,
                    queued: wall,
                }));
            }
        }
        if queued {
            ops.insert(
                0,
                Op::PutMsg(
                    msg_id,
                    Msg {
                        bytes: Arc::clone(&bytes),
                        tag: tag.clone(),
                    },
                ),
            );
        }
        if let Some(s) = self.servers.get_mut(&sid) {
            s.stored = Some(CommitInfo {
                tag: tag.clone(),
                rcpts: rcpts.clone(),
            });
        }
        let early = self.cfg.bug == Bug::AckBeforeDurable;
        self.write(
            ops,
            OnSync::Commit {
                info: CommitInfo { tag, rcpts },
                ack: (!early).then_some((sid, token)),
            },
        );
        early.then_some(Completion::Stored(StoreOutcome::Delivered))
    }

    /// Applies a write to the live state now and to durable storage when synced.
    fn write(&mut self, ops: Vec<Op>, on_sync: OnSync) {
        let last = self.pending.back().map(|w| w.sync_at).unwrap_or(0);
        let sync_at = (self.now_ms + 1 + self.rng.below(20)).max(last);
        self.pending.push_back(Write {
            ops,
            sync_at,
            on_sync,
        });
        self.push(sync_at, Ev::Sync);
        if self.chaos() && self.chance(15) {
            // A crash at this write: before or after its sync.
            let at = self.now_ms + self.rng.below(sync_at - self.now_ms + 10);
            self.push(at, Ev::Crash);
        }
    }

    fn sync(&mut self) {
        while self
            .pending
            .front()
            .is_some_and(|w| w.sync_at <= self.now_ms)
        {
            let Some(w) = self.pending.pop_front() else {
                break;
            };
            for op in &w.ops {
                self.durable.apply(op);
            }
            match w.on_sync {
                OnSync::Recorded(_, batches) => {
                    // A message goes with its last queue entry, in the same commit.
                    let used: BTreeSet<u64> =
                        self.durable.queue.values().map(|i| i.msg_id).collect();
                    self.durable.msgs.retain(|id, _| used.contains(id));
                    if let Some(bs) = batches {
                        self.in_flight.finish_connection(&bs);
                        self.push(self.now_ms, Ev::QueueWake);
                    }
                }
                OnSync::Commit { info, ack } => {
                    self.stats.commits += 1;
                    *self.commits_per_tag.entry(info.tag.clone()).or_default() += 1;
                    for r in &info.rcpts {
                        *self
                            .committed
                            .entry((info.tag.clone(), r.clone()))
                            .or_default() += 1;
                        if domain_of(r) == LOCAL_DOMAIN {
                            self.stats.deliveries += 1;
                        }
                    }
                    // The queue runner is woken for the new entries.
                    self.push(self.now_ms, Ev::QueueWake);
                    if let Some((sid, token)) = ack {
                        let now = self.now();
                        if let Some(s) = self.servers.get_mut(&sid) {
                            let _ = s.sess.handle(
                                now,
                                Input::Completed(
                                    token,
                                    Completion::Stored(StoreOutcome::Delivered),
                                ),
                            );
                            self.drive_server(sid, false);
                        }
                    }
                }
            }
        }
    }

    fn crash(&mut self) {
        if !self.our_up || !self.chaos() {
            return;
        }
        self.stats.crashes += 1;
        self.our_up = false;
        for w in std::mem::take(&mut self.pending) {
            self.stats.lost_writes += 1;
            if let OnSync::Recorded(keys, _) = w.on_sync {
                for k in keys {
                    self.stats.window_out += 1;
                    *self.window_out.entry(k).or_default() += 1;
                }
            }
        }
        let ours: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                matches!(c.init, Actor::Delivery(_)) || matches!(c.acc, Some(Actor::Server(_)))
            })
            .map(|(k, _)| *k)
            .collect();
        for c in ours {
            self.cut(c);
        }
        for (_, d) in std::mem::take(&mut self.deliveries) {
            for k in d.stored {
                self.stats.window_out += 1;
                *self.window_out.entry(k).or_default() += 1;
            }
        }
        self.servers.clear();
        self.timers
            .retain(|a, _| !matches!(a, Actor::Server(_) | Actor::Delivery(_)));
        self.in_flight = InFlight::default();
        let d = 2_000 + self.rng.below(60_000);
        self.push(self.now_ms + d, Ev::Restart);
    }

    // ---------------------------------------------------------------- queue

    fn queue_run(&mut self) {
        if !self.our_up {
            return;
        }
        let wall = self.wall();
        let items: Vec<QueueItem> = self.durable.queue.values().cloned().collect();
        let conns = self
            .qcfg
            .due_connections(&items, wall, &Routes::default(), &self.in_flight);
        for bs in conns {
            self.in_flight.start_connection(&bs);
            let v = self.qcfg.values();
            let domain = bs
                .first()
                .map(|b| b.key.recipient_domain.clone())
                .unwrap_or_default();
            if self.in_flight.total() > v.max_total
                || self.in_flight.to_domain(&domain) > v.max_per_domain
                || bs
                    .iter()
                    .any(|b| b.items.len() > v.max_recipients_per_batch)
                || bs.len() > v.max_transactions_per_connection
                || bs.iter().any(|b| b.key.recipient_domain != domain)
            {
                self.runtime_violations.push(format!(
                    "limit: queue concurrency exceeded (total {}, domain {} {}, batches {:?})",
                    self.in_flight.total(),
                    domain,
                    self.in_flight.to_domain(&domain),
                    bs.iter().map(|b| b.items.len()).collect::<Vec<_>>()
                ));
            }
            self.start_delivery(bs);
        }
        // Wake for the next item not in flight that is due later.
        let later: Vec<QueueItem> = self
            .durable
            .queue
            .values()
            .filter(|i| !self.in_flight.contains(i.id) && i.next_attempt > wall)
            .cloned()
            .collect();
        if let Some(t) = next_wakeup(&later) {
            let ms = ((t.0 - WALL0).max(0) as u64) * 1000;
            if self.wake_at.is_none_or(|w| ms < w) {
                self.wake_at = Some(ms);
                self.push(ms, Ev::QueueWake);
            }
        }
    }

    /// The delivery job of batch `b`, or `None` (its items or message are gone).
    fn job_of(&mut self, b: &Batch) -> Option<Job> {
        let first = b.items.first().and_then(|i| self.durable.queue.get(i))?;
        let Some(msg) = self.durable.msgs.get(&first.msg_id) else {
            self.runtime_violations
                .push(format!("queue item {} without its message", first.id));
            return None;
        };
        let recipients = b
            .items
            .iter()
            .filter_map(|i| self.durable.queue.get(i))
            .filter_map(|it| ForwardPath::parse(&format!("<{}>", it.recipient)).ok())
            .map(|f| (f, RcptParams::default()))
            .collect();
        Some(Job {
            domain: b.key.recipient_domain.clone(),
            mail_from: ReversePath::parse(&format!("<{}>", first.mail_from))
                .unwrap_or(ReversePath::Null),
            recipients,
            params: MailParams::default(),
            message: Arc::clone(&msg.bytes),
            needs: Needs::default(),
            requiretls: None,
            seed: 0,
        })
    }

    /// Delivers the batches of one connection, one job each, over one connection while it
    /// stays healthy (connection reuse).
    fn start_delivery(&mut self, bs: Vec<Batch>) {
        let taken = bs.clone();
        let mut batches = Vec::new();
        let mut jobs = Vec::new();
        for b in bs {
            if let Some(mut j) = self.job_of(&b) {
                j.seed = self.rng.next_u64();
                jobs.push(j);
                batches.push(b);
            }
        }
        if batches.len() < taken.len() {
            // Some are gone (their items or message): the connection is taken again for
            // the rest only.
            self.in_flight.finish_connection(&taken);
            if !batches.is_empty() {
                self.in_flight.start_connection(&batches);
            }
        }
        if jobs.is_empty() {
            return;
        }
        self.stats.attempts += jobs.len() as u64;
        self.stats.reused += jobs.len().saturating_sub(1) as u64;
        let did = self.id();
        let lead = jobs.remove(0);
        let sess =
            DeliverySession::new_many(Arc::clone(&self.delivery_cfg), lead, jobs, self.now());
        let n = batches.len();
        self.deliveries.insert(
            did,
            DlState {
                sess,
                batches,
                recorded: vec![false; n],
                released: false,
                conns: BTreeMap::new(),
                faulted: false,
                stored: Vec::new(),
            },
        );
        self.drive_delivery(did);
    }

    fn dns_answer(&mut self, did: u64, token: Token, lookups: Vec<Lookup>) {
        let chaos = self.chaos();
        let answers = lookups
            .iter()
            .map(|l| {
                let tempfail =
                    (chaos && self.chance(50)) || (l.name == "dnsfail.sim" && self.chance(500));
                if tempfail {
                    return LookupResult::TempFail("SERVFAIL".into());
                }
                dns_table(l)
            })
            .collect();
        let now = self.now();
        if let Some(d) = self.deliveries.get_mut(&did) {
            let _ = d.sess.handle(
                now,
                delivery::Input::Completed(token, delivery::Completion::Dns(answers)),
            );
            self.drive_delivery(did);
        }
    }

    fn drive_delivery(&mut self, did: u64) {
        for _ in 0..64 {
            let now = self.now();
            // Offer what arrived on each connection.
            let conns: Vec<(ConnId, u64)> = match self.deliveries.get(&did) {
                Some(d) => d.conns.iter().map(|(k, v)| (*k, *v)).collect(),
                None => return,
            };
            for (cid, c) in conns {
                let Some(mut data) = self.unread_of(Actor::Delivery(did), c).map(std::mem::take)
                else {
                    continue;
                };
                if !data.is_empty() {
                    if let Some(d) = self.deliveries.get_mut(&did) {
                        let used = d
                            .sess
                            .handle(now, delivery::Input::Received(cid, &data))
                            .unwrap_or(data.len());
                        data.drain(..used.min(data.len()));
                    }
                }
                if let Some(u) = self.unread_of(Actor::Delivery(did), c) {
                    data.append(u);
                    *u = data;
                }
            }
            let Some(d) = self.deliveries.get_mut(&did) else {
                return;
            };
            let mut outs = Vec::new();
            let mut done = false;
            let mut deadline = None;
            loop {
                let mut tx = Vec::new();
                match d.sess.poll(now, &mut tx) {
                    delivery::Output::Transmit(cid) => outs.push(DOut::Tx(cid, tx)),
                    delivery::Output::Effect(t, e) => outs.push(DOut::Effect(t, e)),
                    delivery::Output::Event(delivery::Event::JobDone { job }) => {
                        outs.push(DOut::JobDone(job))
                    }
                    delivery::Output::Event(_) => {}
                    delivery::Output::Close(cid) => outs.push(DOut::Close(cid)),
                    delivery::Output::Idle { deadline: dl, .. } => {
                        deadline = dl;
                        break;
                    }
                    delivery::Output::Done => {
                        done = true;
                        break;
                    }
                }
            }
            let mut immediate = Vec::new();
            for o in outs {
                match o {
                    DOut::JobDone(job) => self.record_job(did, job),
                    DOut::Tx(cid, tx) => {
                        if let Some(c) = self
                            .deliveries
                            .get(&did)
                            .and_then(|d| d.conns.get(&cid))
                            .copied()
                        {
                            self.send(c, TO_ACC, tx);
                        }
                    }
                    DOut::Close(cid) => {
                        if let Some(c) = self
                            .deliveries
                            .get_mut(&did)
                            .and_then(|d| d.conns.remove(&cid))
                        {
                            let connecting = self.conns.get(&c).is_some_and(|x| x.acc.is_none());
                            if connecting {
                                if let Some(x) = self.conns.get_mut(&c) {
                                    x.dead = true;
                                }
                            } else {
                                self.fin(c, TO_ACC);
                            }
                        }
                    }
                    DOut::Effect(t, delivery::Effect::Dns(lookups)) => {
                        let at = self.now_ms + 1 + self.rng.below(50);
                        self.push(at, Ev::Dns(did, t, lookups));
                    }
                    DOut::Effect(t, delivery::Effect::Connect { conn, addr, .. }) => {
                        let c = self.connect(
                            Actor::Delivery(did),
                            Some(t),
                            IpAddr::V4(OUR_IP),
                            addr.ip(),
                        );
                        if let Some(d) = self.deliveries.get_mut(&did) {
                            d.conns.insert(conn, c);
                        }
                    }
                    DOut::Effect(t, delivery::Effect::HostTls { requiretls, .. }) => {
                        immediate.push((
                            t,
                            delivery::Completion::HostTls(delivery::builtin_host_tls(
                                requiretls, None,
                            )),
                        ));
                    }
                }
            }
            if done {
                self.set_timer(Actor::Delivery(did), None);
                self.finish_delivery(did);
                return;
            }
            self.set_timer(Actor::Delivery(did), deadline);
            if immediate.is_empty() {
                return;
            }
            let now = self.now();
            if let Some(d) = self.deliveries.get_mut(&did) {
                for (t, c) in immediate {
                    let _ = d.sess.handle(now, delivery::Input::Completed(t, c));
                }
            }
        }
    }

    fn finish_delivery(&mut self, did: u64) {
        let Some(n) = self.deliveries.get(&did).map(|d| d.recorded.len()) else {
            return;
        };
        // Every job said done before the delivery did; a job without its outcome would be
        // a machine bug: recorded with a temporary failure.
        for job in 0..n {
            if self
                .deliveries
                .get(&did)
                .is_some_and(|d| !d.recorded.get(job).copied().unwrap_or(true))
            {
                self.runtime_violations
                    .push(format!("delivery {did}: job {job} ended without JobDone"));
                self.record_job(did, job);
            }
        }
        let Some(d) = self.deliveries.remove(&did) else {
            return;
        };
        for c in d.conns.values() {
            self.fin(*c, TO_ACC);
        }
        if !d.released {
            self.write(Vec::new(), OnSync::Recorded(Vec::new(), Some(d.batches)));
        }
    }

    /// Writes the outcome of job `job` of delivery `did` (its batch's results, the DSNs
    /// they call for), as soon as it is final; the last job's write releases the
    /// connection's batches from flight once synced.
    fn record_job(&mut self, did: u64, job: usize) {
        let Some(d) = self.deliveries.get_mut(&did) else {
            return;
        };
        if d.recorded.get(job).copied().unwrap_or(true) {
            return;
        }
        if let Some(r) = d.recorded.get_mut(job) {
            *r = true;
        }
        let last = d.recorded.iter().all(|r| *r) && d.sess.is_done();
        let Some(batch) = d.batches.get(job).cloned() else {
            return;
        };
        let release = if last {
            d.released = true;
            Some(d.batches.clone())
        } else {
            None
        };
        let results = d
            .sess
            .job_report(job)
            .map(|r| r.results.clone())
            .unwrap_or_default();
        let stored_keys = d.stored.clone();
        let d_faulted = d.faulted;
        let conn_faulted = d_faulted
            || self
                .conns
                .values()
                .any(|c| c.init == Actor::Delivery(did) && c.faulted);
        let wall = self.wall();
        let mut ops = Vec::new();
        let mut recorded = Vec::new();
        let mut dsns: Vec<(QueueItem, DsnNotice)> = Vec::new();
        for (i, item_id) in batch.items.iter().enumerate() {
            let Some(mut item) = self.durable.queue.get(item_id).cloned() else {
                continue;
            };
            let tag = self
                .durable
                .msgs
                .get(&item.msg_id)
                .map(|m| m.tag.clone())
                .unwrap_or_default();
            let key = (tag, item.recipient.clone());
            let result = results.get(i).cloned().unwrap_or_else(|| {
                AttemptResult::Temporary(rmox_core::queue::Failure::local(
                    "no result",
                    Enhanced::new(4, 0, 0),
                ))
            });
            let stored = stored_keys.contains(&key);
            let delivered = matches!(result, AttemptResult::Delivered { .. });
            if stored && !delivered {
                if conn_faulted {
                    self.stats.window_out += 1;
                    *self.window_out.entry(key.clone()).or_default() += 1;
                } else {
                    self.runtime_violations.push(format!(
                        "delivery: {key:?} was accepted by the remote host but reported {result:?} without a network fault"
                    ));
                }
            }
            if delivered && !stored {
                self.runtime_violations.push(format!(
                    "delivery: {key:?} reported delivered but no remote host stored it"
                ));
            }
            let decision = self
                .qcfg
                .after_attempt(&mut item, &result, wall, &mut self.rng);
            match decision {
                Decision::Delivered { .. } => {
                    recorded.push(key);
                    if self.cfg.bug == Bug::ForgetDelivered && item.attempts == 1 {
                        // The bug: the entry stays and is delivered again an hour later.
                        item.next_attempt = wall.add(Duration::from_secs(3600));
                        ops.push(Op::PutItem(item));
                    } else {
                        ops.push(Op::DelItem(item.id));
                    }
                }
                Decision::Retry { dsn, .. } => {
                    if let Some(n) = dsn {
                        dsns.push((item.clone(), n));
                    }
                    ops.push(Op::PutItem(item));
                }
                Decision::Failed { dsn, .. } => {
                    if item.is_dsn {
                        // A DSN that cannot be delivered is dropped (no DSN about a DSN).
                        if let Some(m) = self.durable.msgs.get(&item.msg_id) {
                            self.stats.double_bounces += 1;
                            self.double_bounced.push(Delivered {
                                rcpt: item.recipient.clone(),
                                mail_from: String::new(),
                                tag: m.tag.clone(),
                                bytes: Arc::clone(&m.bytes),
                            });
                        }
                    }
                    if let Some(n) = dsn {
                        if self.cfg.bug != Bug::DropFailureDsn {
                            dsns.push((item.clone(), n));
                        }
                    }
                    ops.push(Op::DelItem(item.id));
                }
            }
        }
        for (item, notice) in dsns {
            let original = self
                .durable
                .msgs
                .get(&item.msg_id)
                .map(|m| Arc::clone(&m.bytes))
                .unwrap_or_else(|| Arc::from(&b""[..]));
            let n = self.id();
            let dtag = format!("d{n}");
            let input = DsnInput::for_item(
                &item,
                notice.kind,
                vec![notice.recipient],
                OUR_HOST,
                &original,
                format!("{n}.sim"),
            );
            let mut bytes = format!("X-Sim-Id: {dtag}\r\n").into_bytes();
            bytes.extend_from_slice(&compose_dsn(&input, wall));
            let bytes: Arc<[u8]> = bytes.into();
            self.stats.dsns += 1;
            self.dsn_tags.insert(dtag.clone(), notice.kind);
            let dmsg = self.id();
            let did_item = self.id();
            ops.push(Op::PutMsg(
                dmsg,
                Msg {
                    bytes: Arc::clone(&bytes),
                    tag: dtag,
                },
            ));
            ops.push(Op::PutItem(QueueItem {
                id: did_item,
                msg_id: dmsg,
                sender_account: None,
                mail_from: String::new(),
                recipient: item.mail_from.clone(),
                recipient_domain: domain_of(&item.mail_from),
                next_attempt: wall,
                attempts: 0,
                hold: false,
                requiretls: None,
                size: bytes.len() as u64,
                transport: None,
                last_error: None,
                dsn: DsnParams::default(),
                is_dsn: true,
                queued: wall,
            }));
        }
        // The connection's batches stay in flight until the last outcome is synced.
        self.write(ops, OnSync::Recorded(recorded, release));
    }
}

impl World {
    /// Every client message.
    pub(crate) fn client_msgs(&self) -> impl Iterator<Item = &ClientMsg> {
        self.clients.iter().flat_map(|c| c.msgs.iter())
    }

    /// What a drained run must not have left behind.
    pub(crate) fn leftovers(&self) -> Vec<String> {
        let mut v = Vec::new();
        if std::env::var_os("RMOX_SIM_DEBUG").is_some() {
            v.push(format!(
                "debug: queue {:?} servers {} remotes {} events {}",
                self.durable
                    .queue
                    .values()
                    .map(|i| (i.id, &i.recipient, i.next_attempt.0 - WALL0, i.attempts))
                    .collect::<Vec<_>>(),
                self.servers.len(),
                self.remotes.len(),
                self.events.len()
            ));
            v.push(format!(
                "debug: timers {:?} remotes {:?} clients {:?}",
                self.timers,
                self.remotes
                    .iter()
                    .map(|(k, r)| (
                        k,
                        r.host,
                        r.conn,
                        self.conns.contains_key(&r.conn),
                        r.sess.as_ref().map(|s| format!("{s:?}"))
                    ))
                    .collect::<Vec<_>>(),
                self.clients
                    .iter()
                    .map(|c| (c.conn, c.sess.is_some()))
                    .collect::<Vec<_>>()
            ));
        }
        if self.unfinished.is_some() {
            return v;
        }
        if !self.durable.queue.is_empty() {
            v.push(format!(
                "liveness: {} queue entries left",
                self.durable.queue.len()
            ));
        }
        if !self.durable.msgs.is_empty() {
            v.push(format!(
                "leak: {} queued messages left",
                self.durable.msgs.len()
            ));
        }
        if !self.pending.is_empty() {
            v.push(format!("{} unsynced writes left", self.pending.len()));
        }
        if !self.servers.is_empty() || !self.remotes.is_empty() || !self.deliveries.is_empty() {
            v.push(format!(
                "leak: sessions left: {} ours, {} remote, {} deliveries",
                self.servers.len(),
                self.remotes.len(),
                self.deliveries.len()
            ));
        }
        if !self.conns.is_empty() {
            v.push(format!("leak: {} connections left", self.conns.len()));
        }
        if std::env::var_os("RMOX_SIM_DEBUG").is_some() {
            for (id, d) in &self.deliveries {
                v.push(format!(
                    "debug: delivery {id} {:?} conns {:?} timer {:?} done {}",
                    d.batches.first().map(|b| b.key.recipient_domain.clone()),
                    d.conns,
                    self.timers.get(&Actor::Delivery(*id)),
                    d.sess.is_done()
                ));
            }
            for (id, c) in &self.conns {
                v.push(format!(
                    "debug: conn {id} init {:?} acc {:?} dead {} stalled {} fin {} {} eof {} {}",
                    c.init,
                    c.acc,
                    c.dead,
                    c.stalled,
                    c.dirs[0].fin,
                    c.dirs[1].fin,
                    c.dirs[0].eof_done,
                    c.dirs[1].eof_done
                ));
            }
            v.push(format!(
                "debug: in flight {:?} up {}",
                self.in_flight, self.our_up
            ));
        }
        if let Some(m) = self.client_msgs().find(|m| !m.done) {
            v.push(format!("liveness: client message m{} never finished", m.id));
        }
        v
    }

    /// Counts the incoming duplicate windows (commits whose 250 the client never saw).
    pub(crate) fn finish(&mut self) {
        let mut n = 0;
        for tag in self.commits_per_tag.keys() {
            let Some(rest) = tag.strip_prefix('m') else {
                continue;
            };
            let Some((id, att)) = rest.split_once('.') else {
                continue;
            };
            let (Ok(id), Ok(att)) = (id.parse::<u64>(), att.parse::<u32>()) else {
                continue;
            };
            if self
                .client_msgs()
                .find(|m| m.id == id)
                .is_some_and(|m| m.acked_attempt != Some(att))
            {
                n += 1;
            }
        }
        self.stats.window_in = n;
        self.stats.virtual_secs = self.now_ms / 1000;
    }
}

/// Whether a server session (its Debug form) is reading a message or waiting on its store.
fn mid_data(state: &str) -> bool {
    ["data", "bdat", "waiting"]
        .iter()
        .any(|s| state.contains(&format!("state: \"{s}\"")))
}

/// Whether `addr` is in `domain`.
pub(crate) fn domain_is(addr: &str, domain: &str) -> bool {
    domain_of(addr) == domain
}

enum DOut {
    JobDone(usize),
    Tx(ConnId, Vec<u8>),
    Effect(Token, delivery::Effect),
    Close(ConnId),
}

/// The static DNS of the simulated internet.
fn dns_table(l: &Lookup) -> LookupResult {
    let mx = |list: &[(u16, &str)]| LookupResult::Records {
        records: list
            .iter()
            .map(|(p, h)| Record::Mx {
                preference: *p,
                host: h.to_string(),
            })
            .collect(),
        authentic: false,
    };
    let a = |ip: [u8; 4]| LookupResult::Records {
        records: vec![Record::A(Ipv4Addr::from(ip))],
        authentic: false,
    };
    match (l.rtype, l.name.as_str()) {
        (RecordType::Mx, "good.sim") => mx(&[(10, "mx1.good.sim"), (10, "mx2.good.sim")]),
        (RecordType::Mx, "backup.sim") => mx(&[(10, "mx1.backup.sim"), (20, "mx2.backup.sim")]),
        (RecordType::Mx, "flaky.sim") => mx(&[(10, "mx.flaky.sim")]),
        (RecordType::Mx, "temp.sim") => mx(&[(10, "mx.temp.sim")]),
        (RecordType::Mx, "perm.sim") => mx(&[(10, "mx.perm.sim")]),
        (RecordType::Mx, "hang.sim") => mx(&[(10, "mx.hang.sim"), (20, "mx2.hang.sim")]),
        (RecordType::Mx, "dnsfail.sim") => mx(&[(10, "mx.dnsfail.sim")]),
        (RecordType::Mx, "senders.sim") => mx(&[(10, "mx.senders.sim")]),
        (RecordType::A, "mx1.good.sim") => a([10, 2, 0, 1]),
        (RecordType::A, "mx2.good.sim") => a([10, 2, 0, 2]),
        (RecordType::A, "mx1.backup.sim") => a([10, 2, 1, 1]),
        (RecordType::A, "mx2.backup.sim") => a([10, 2, 1, 2]),
        (RecordType::A, "mx.flaky.sim") => a([10, 2, 2, 1]),
        (RecordType::A, "mx.temp.sim") => a([10, 2, 3, 1]),
        (RecordType::A, "mx.perm.sim") => a([10, 2, 4, 1]),
        (RecordType::A, "mx.hang.sim") => a([10, 2, 5, 1]),
        (RecordType::A, "mx2.hang.sim") => a([10, 2, 5, 2]),
        (RecordType::A, "mx.dnsfail.sim") => a([10, 2, 6, 1]),
        (RecordType::A, "mx.senders.sim") => a([10, 2, 7, 1]),
        (_, n) if n.ends_with(".sim") && !n.ends_with("nx.sim") => LookupResult::NoData,
        _ => LookupResult::NxDomain,
    }
}
