//! Model-based checking of the storage interface: a sequence of operations, decoded from
//! arbitrary bytes, is applied to a real store (any [`MailStore`] backend, opened through
//! [`CheckBackend`]; the redb [`Store`] by [`check_ops`]) and to [`Model`], a plain in-memory
//! model of what the store promises; after every step the store's observable state
//! ([`Observed`]: messages with their bytes, mailboxes, usage, index counts, queue entries
//! and their messages, the due list, retired entries, suppressions, failure streaks,
//! delivery counts) must equal the model's, and every answer (ids, errors, booleans,
//! counts) must be the one the model predicts. `Reopen` closes the store, checks what the
//! backend can check of a closed store (redb: [`crate::verify`], no problems, no orphans)
//! and opens it again.
//!
//! Ids are the store's to choose: the model learns them from the answers and checks that
//! they are fresh (never the id of a live record).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rmox_core::UnixTime;

use super::crash::{Crash, Image};
use crate::{
    ip_networks, Delivery, DsnParams, Flags, IndexKind, MailStore, MessageId, MessageInfo, Notice,
    NoticeMessage, NoticeOutcome, Outcome as QueueOutcome, QueueEntry, QueueFilter, QueueId,
    QueueRecipient, QueueRecord, RequireTls, RetiredEntry, Store, StoreError, Suppression,
};

/// Account names the operations use; `a` and `b` are created first, `c` only by an
/// operation.
pub const ACCOUNTS: [&str; 3] = ["a", "b", "c"];
const MAILBOXES: [&str; 3] = ["Inbox", "Junk", "Archive"];
/// Addresses (queue recipients, suppressions, failure streaks); two differ only in case.
const ADDRS: [&str; 4] = [
    "x@example.com",
    "X@Example.COM",
    "z@example.net",
    "w@example.org",
];
const IPS: [&str; 4] = ["192.0.2.1", "192.0.2.77", "198.51.100.5", "2001:db8::1"];
const FROMS: [Option<&str>; 3] = [Some("bob@example.org"), Some("Alice@Example.NET"), None];
const NETS: [&str; 3] = ["192.0.2.1/32", "198.51.100.0/26", "2001:db8::/32"];
/// Most operations decoded from one input.
pub const MAX_OPS: usize = 48;

/// Reads decisions from arbitrary bytes; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn below(&mut self, n: u8) -> u8 {
        self.u8() % n
    }
    fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
}

/// A message: its bytes follow from a seed and a length class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg {
    pub seed: u8,
    pub len: u8,
}

impl Msg {
    fn read(b: &mut Bytes<'_>) -> Msg {
        Msg {
            seed: b.u8(),
            len: b.below(5),
        }
    }

    /// The bytes: empty, short, a few KB (all kept in the database), or just over
    /// [`crate::INLINE_BODY_MAX`] (a message file of its own).
    pub fn bytes(self) -> Vec<u8> {
        let len = [0usize, 1, 40, 5000, crate::INLINE_BODY_MAX + 100][usize::from(self.len)];
        let mut v = format!("Subject: {}\r\n\r\n", self.seed).into_bytes();
        let mut x = u32::from(self.seed) | 0x100;
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            v.push(b'a' + (x % 26) as u8);
        }
        v.truncate(len);
        v
    }
}

/// A queue recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rcpt {
    pub to: u8,
    pub sender: Option<u8>,
    pub next: u8,
    pub hold: bool,
    pub is_dsn: bool,
}

impl Rcpt {
    fn read(b: &mut Bytes<'_>) -> Rcpt {
        Rcpt {
            to: b.below(ADDRS.len() as u8),
            sender: b.bool().then(|| b.below(ACCOUNTS.len() as u8)),
            next: b.below(20),
            hold: b.below(4) == 0,
            is_dsn: b.bool(),
        }
    }

    fn recipient(self) -> QueueRecipient {
        QueueRecipient {
            sender_account: self.sender.map(|a| ACCOUNTS[usize::from(a)].to_string()),
            mail_from: if self.is_dsn {
                String::new()
            } else {
                "sender@example.org".into()
            },
            recipient: ADDRS[usize::from(self.to)].into(),
            has_8bit: false,
            smtputf8: false,
            requiretls: RequireTls::Default,
            transport: None,
            next_attempt: UnixTime(i64::from(self.next)),
            queued: UnixTime(0),
            hold: self.hold,
            dsn: DsnParams::default(),
            is_dsn: self.is_dsn,
            from_id: None,
        }
    }
}

/// One delivery: account, mailbox, remote IP, MAIL FROM, received time (indexes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct To {
    pub account: u8,
    pub mailbox: u8,
    pub ip: u8,
    pub from: u8,
    pub time: u8,
}

impl To {
    fn read(b: &mut Bytes<'_>) -> To {
        To {
            account: b.below(ACCOUNTS.len() as u8),
            mailbox: b.below(MAILBOXES.len() as u8),
            ip: b.below(IPS.len() as u8),
            from: b.below(FROMS.len() as u8),
            time: b.below(10),
        }
    }

    fn delivery(self, message: &[u8]) -> Delivery<'_> {
        Delivery {
            account: ACCOUNTS[usize::from(self.account)].into(),
            mailbox: MAILBOXES[usize::from(self.mailbox)].into(),
            head: &[],
            message,
            flags: Flags::default(),
            received: UnixTime(i64::from(self.time)),
            info: MessageInfo {
                remote_ip: IPS[usize::from(self.ip)].parse().ok(),
                mail_from: FROMS[usize::from(self.from)].map(str::to_string),
                ..Default::default()
            },
        }
    }
}

/// One operation on the store. Selectors (`entry`, `msg`) pick among the model's live
/// records, or an id that does not exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `deliver`.
    Deliver(To, Msg),
    /// `deliver_soon` (as an async runtime's thread delivers), awaited; `deliver` where
    /// the store does not offer it for this message.
    DeliverSoon(To, Msg),
    /// `deliver_many`; `shared`: one message slice for all (hard links).
    DeliverMany(Vec<To>, Msg, bool),
    /// `deliver_and_queue` with a DSN for these recipients.
    DeliverAndQueue(Vec<To>, Msg, Msg, Vec<Rcpt>),
    /// `queue_add`.
    QueueAdd(Msg, Vec<Rcpt>),
    /// `queue_update_with`: an attempt (`next` attempt time; tries to change the fixed
    /// fields too).
    QueueUpdate { entry: u8, next: u8 },
    /// `queue_hold`.
    QueueHold(u8),
    /// `queue_release`.
    QueueRelease(u8),
    /// `queue_retire`, delivered or failed, at a time.
    QueueRetire {
        entry: u8,
        delivered: bool,
        time: u8,
    },
    /// `queue_drop`.
    QueueDrop(u8),
    /// `queue_record_with`: the entry failed for good, retired at `time`, with its DSN
    /// delivered locally (`to`) or queued (`back`) in the same commit.
    QueueFailWithDsn {
        entry: u8,
        time: u8,
        dsn: Msg,
        to: Option<To>,
        back: Rcpt,
    },
    /// `expunge`.
    Expunge(u8),
    /// `set_flags`.
    SetFlags(u8, u8),
    /// `account_add`.
    AccountAdd(u8),
    /// `account_remove`.
    AccountRemove(u8),
    /// `account_set_quota`: `None`, or current usage plus 0, 40 or 1000 bytes.
    SetQuota(u8, Option<u8>),
    /// `suppression_add`.
    SuppressionAdd {
        account: u8,
        addr: u8,
        manual: bool,
        time: u8,
    },
    /// `suppression_remove`.
    SuppressionRemove(u8, u8),
    /// `failure_streak_record`.
    FailureStreak { account: u8, addr: u8, failed: bool },
    /// `delivery_counts_add` of (net, messages, bytes).
    CountsAdd { day: u8, adds: Vec<(u8, u8, u16)> },
    /// `delivery_counts_cleanup`.
    CountsCleanup(u8),
    /// Close, verify, open again.
    Reopen,
}

fn read_tos(b: &mut Bytes<'_>, min: u8) -> Vec<To> {
    let n = min + b.below(4 - min);
    (0..n).map(|_| To::read(b)).collect()
}

fn read_rcpts(b: &mut Bytes<'_>) -> Vec<Rcpt> {
    // Now and then none (refused as invalid).
    let n = b.below(4);
    (0..n).map(|_| Rcpt::read(b)).collect()
}

/// Decodes operations from arbitrary bytes (at most [`MAX_OPS`]); the accounts `a` and `b`
/// are always created first.
pub fn ops_from_bytes(data: &[u8]) -> Vec<Op> {
    let mut b = Bytes(data);
    let mut ops = vec![Op::AccountAdd(0), Op::AccountAdd(1)];
    while !b.0.is_empty() && ops.len() < MAX_OPS {
        let acc = |b: &mut Bytes<'_>| b.below(ACCOUNTS.len() as u8);
        let addr = |b: &mut Bytes<'_>| b.below(ADDRS.len() as u8);
        let op = match b.below(22) {
            0 | 1 => Op::Deliver(To::read(&mut b), Msg::read(&mut b)),
            2 => Op::DeliverSoon(To::read(&mut b), Msg::read(&mut b)),
            3 => Op::DeliverMany(read_tos(&mut b, 0), Msg::read(&mut b), b.bool()),
            4 => Op::DeliverAndQueue(
                read_tos(&mut b, 0),
                Msg::read(&mut b),
                Msg::read(&mut b),
                read_rcpts(&mut b),
            ),
            5 | 6 => Op::QueueAdd(Msg::read(&mut b), read_rcpts(&mut b)),
            7 => Op::QueueUpdate {
                entry: b.u8(),
                next: b.below(20),
            },
            8 => Op::QueueHold(b.u8()),
            9 => Op::QueueRelease(b.u8()),
            10 => Op::QueueRetire {
                entry: b.u8(),
                delivered: b.bool(),
                time: b.below(30),
            },
            11 => Op::QueueDrop(b.u8()),
            12 => Op::Expunge(b.u8()),
            13 => Op::SetFlags(b.u8(), b.below(8)),
            14 => match b.below(3) {
                0 => Op::AccountAdd(acc(&mut b)),
                1 => Op::AccountRemove(acc(&mut b)),
                _ => Op::SetQuota(acc(&mut b), b.bool().then(|| b.below(3))),
            },
            15 => Op::SuppressionAdd {
                account: acc(&mut b),
                addr: addr(&mut b),
                manual: b.bool(),
                time: b.below(10),
            },
            16 => Op::SuppressionRemove(acc(&mut b), addr(&mut b)),
            17 => Op::FailureStreak {
                account: acc(&mut b),
                addr: addr(&mut b),
                failed: b.below(3) != 0,
            },
            18 => {
                let day = b.below(4);
                let n = b.below(3);
                let adds = (0..n)
                    .map(|_| {
                        let net = b.below(NETS.len() as u8);
                        let m = b.below(3);
                        (net, m, u16::from(b.u8()) * 7)
                    })
                    .collect();
                Op::CountsAdd { day, adds }
            }
            19 => Op::CountsCleanup(b.below(5)),
            20 => Op::QueueFailWithDsn {
                entry: b.u8(),
                time: b.below(30),
                dsn: Msg::read(&mut b),
                to: b.bool().then(|| To::read(&mut b)),
                back: Rcpt::read(&mut b),
            },
            _ => Op::Reopen,
        };
        ops.push(op);
    }
    ops
}

/// What the store answered to one operation, in a comparable form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// An error, by kind.
    Err(&'static str),
    /// Ok without a value.
    Unit,
    /// A boolean.
    Bool(bool),
    /// A number.
    Num(u64),
    /// Message ids, and the queue entries created with (entry id, message id).
    Stored(Vec<u64>, Vec<(u64, u64)>),
    /// A queue entry as stored.
    Entry(Box<QueueEntry>),
}

/// The kind of an error (what the model predicts).
pub fn kind(e: &StoreError) -> &'static str {
    match e {
        StoreError::NoAccount(_) => "NoAccount",
        StoreError::AccountExists(_) => "AccountExists",
        StoreError::QuotaExceeded { .. } => "QuotaExceeded",
        StoreError::NoMessage(_) => "NoMessage",
        StoreError::NoQueueEntry(_) => "NoQueueEntry",
        StoreError::Invalid(_) => "Invalid",
        StoreError::ReadOnly => "ReadOnly",
        StoreError::Corrupt { .. } => "Corrupt",
        StoreError::SchemaTooNew { .. } => "SchemaTooNew",
        StoreError::Io { .. } => "Io",
        StoreError::Database { .. } => "Database",
        StoreError::Backend { .. } => "Backend",
        StoreError::Unsupported { .. } => "Unsupported",
        _ => "other",
    }
}

/// A delivered message as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenMsg {
    pub id: u64,
    pub mailbox: String,
    pub flags: Flags,
    pub received: i64,
    pub size: u64,
    pub expunged: bool,
    /// `None` when expunged (reading fails).
    pub bytes: Option<Vec<u8>>,
}

/// Everything the checks compare.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Per existing account: (name, quota, usage, mailboxes).
    pub accounts: Vec<(String, Option<u64>, u64, Vec<String>)>,
    /// Per account name of [`ACCOUNTS`]: its messages.
    pub messages: Vec<(String, Vec<SeenMsg>)>,
    /// Index counts: (account, kind, value, count).
    pub index: Vec<(String, &'static str, String, u64)>,
    /// The queue, by id.
    pub queue: Vec<QueueEntry>,
    /// Bytes of each message the queue references.
    pub queue_msgs: Vec<(u64, Option<Vec<u8>>)>,
    /// `queue_due(10, 5)` ids and `queue_next_due`.
    pub due: (Vec<u64>, Option<i64>),
    /// Retired entries, newest first.
    pub retired: Vec<RetiredEntry>,
    /// Per account: the suppression list and `is_suppressed` of every address.
    pub suppressions: Vec<(String, Vec<Suppression>, Vec<bool>)>,
    /// Failure streaks: (account, address, count) for every pair.
    pub streaks: Vec<u32>,
    /// Delivery counts of days 0..5 for every network.
    pub counts: Vec<(u64, u64)>,
}

/// Reads the observable state of a store.
pub fn observe(s: &dyn MailStore) -> Result<Observed, StoreError> {
    let mut o = Observed::default();
    for a in s.accounts()? {
        let usage = s.account_usage(&a.name)?;
        let mailboxes = s.mailboxes(&a.name)?;
        o.accounts.push((a.name, a.quota_bytes, usage, mailboxes));
    }
    for acc in ACCOUNTS {
        let mut v = Vec::new();
        for r in s.messages(acc)? {
            let bytes = match s.message_bytes(r.id) {
                Ok(b) => Some(b),
                Err(StoreError::NoMessage(_)) => None,
                Err(e) => return Err(e),
            };
            v.push(SeenMsg {
                id: r.id.0,
                mailbox: r.mailbox,
                flags: r.flags,
                received: r.received.0,
                size: r.size,
                expunged: r.expunged,
                bytes,
            });
        }
        o.messages.push((acc.to_string(), v));
        for (kind, value, since) in index_queries() {
            let n = s.count_since(acc, kind, &value, UnixTime(since))?;
            o.index.push((acc.to_string(), kind_name(kind), value, n));
        }
        let list = s.suppressions(acc)?;
        let mut sup = Vec::new();
        for addr in ADDRS {
            sup.push(s.is_suppressed(acc, addr)?);
        }
        o.suppressions.push((acc.to_string(), list, sup));
        for addr in ADDRS {
            o.streaks.push(s.failure_streak(acc, addr)?);
        }
    }
    o.queue = s.queue_list(&QueueFilter::default())?;
    let ids: BTreeSet<u64> = o.queue.iter().map(|e| e.msg_id).collect();
    for id in ids {
        o.queue_msgs.push((id, s.queue_message(id).ok()));
    }
    o.due = (
        s.queue_due(UnixTime(10), 5)?
            .into_iter()
            .map(|e| e.id.0)
            .collect(),
        s.queue_next_due()?.map(|t| t.0),
    );
    o.retired = s.queue_retired(usize::MAX)?;
    for day in 0..5 {
        for net in NETS {
            o.counts.push(s.delivery_counts(day, net)?);
        }
    }
    Ok(o)
}

fn kind_name(k: IndexKind) -> &'static str {
    match k {
        IndexKind::Network => "network",
        _ => "mailfrom",
    }
}

/// (kind, value as queried, since).
fn index_queries() -> Vec<(IndexKind, String, i64)> {
    let mut v = Vec::new();
    for ip in IPS {
        if let Ok(ip) = ip.parse() {
            for n in ip_networks(ip) {
                v.push((IndexKind::Network, n, 4));
            }
        }
    }
    for f in FROMS.iter().flatten() {
        v.push((IndexKind::MailFrom, f.to_ascii_uppercase(), 0));
    }
    v
}

#[derive(Clone, Debug)]
struct MMsg {
    account: String,
    mailbox: String,
    flags: Flags,
    received: i64,
    ip: usize,
    from: usize,
    bytes: Vec<u8>,
    expunged: bool,
}

/// What the store should hold.
#[derive(Clone, Debug, Default)]
pub struct Model {
    /// Account name -> quota.
    accounts: BTreeMap<String, Option<u64>>,
    messages: BTreeMap<u64, MMsg>,
    queue: BTreeMap<u64, QueueEntry>,
    queue_msgs: BTreeMap<u64, Vec<u8>>,
    retired: BTreeMap<u64, RetiredEntry>,
    /// (account, lowercased address) -> suppression.
    suppressions: BTreeMap<(String, String), Suppression>,
    streaks: BTreeMap<(String, String), u32>,
    counts: BTreeMap<(i64, String), (u64, u64)>,
}

/// An id no store hands out in these tests.
const MISSING: u64 = 999_999;

fn pick(keys: impl Iterator<Item = u64>, sel: u8) -> u64 {
    let keys: Vec<u64> = keys.collect();
    // One choice in len+1 is an id that does not exist.
    match keys.get(usize::from(sel) % (keys.len() + 1)) {
        Some(k) => *k,
        None => MISSING,
    }
}

/// The change [`Op::QueueUpdate`] makes (to the store's entry and the model's alike).
fn attempt(e: &mut QueueEntry, next: u8) {
    e.attempts += 1;
    e.last_error = Some(format!("451 try later ({})", e.attempts));
    e.last_attempt = Some(UnixTime(i64::from(next)));
    e.rcpt.next_attempt = UnixTime(i64::from(next) + 1);
    // Not changeable: the store restores these.
    e.id = QueueId(e.id.0 + 1000);
    e.msg_id += 1000;
    e.size += 1;
}

fn flags(f: u8) -> Flags {
    Flags {
        seen: f & 1 != 0,
        junk: f & 2 != 0,
        notjunk: f & 4 != 0,
    }
}

fn err(kind: &str, want: &str, op: &Op) -> Result<(), String> {
    if kind == want {
        Ok(())
    } else {
        Err(format!(
            "{op:?}: store answered {kind}, model expects {want}"
        ))
    }
}

impl Model {
    fn usage(&self, account: &str) -> u64 {
        self.messages
            .values()
            .filter(|m| m.account == account && !m.expunged)
            .map(|m| m.bytes.len() as u64)
            .sum()
    }

    /// The error a set of deliveries must fail with, if any (accounts in name order).
    fn deliver_error(&self, tos: &[To], size: u64) -> Option<&'static str> {
        let mut per: BTreeMap<&str, u64> = BTreeMap::new();
        for t in tos {
            *per.entry(ACCOUNTS[usize::from(t.account)]).or_default() += size;
        }
        for (acc, n) in per {
            match self.accounts.get(acc) {
                None => return Some("NoAccount"),
                Some(Some(q)) if self.usage(acc) + n > *q => return Some("QuotaExceeded"),
                Some(_) => {}
            }
        }
        None
    }

    fn is_fresh_msg(&self, id: u64) -> bool {
        !self.messages.contains_key(&id)
    }

    fn is_fresh_entry(&self, id: u64) -> bool {
        !self.queue.contains_key(&id) && !self.retired.contains_key(&id)
    }

    fn add_messages(&mut self, op: &Op, tos: &[To], msg: Msg, ids: &[u64]) -> Result<(), String> {
        if ids.len() != tos.len() {
            return Err(format!(
                "{op:?}: {} ids for {} deliveries",
                ids.len(),
                tos.len()
            ));
        }
        for (t, id) in tos.iter().zip(ids) {
            if !self.is_fresh_msg(*id) {
                return Err(format!("{op:?}: message id {id} reused"));
            }
            self.messages.insert(
                *id,
                MMsg {
                    account: ACCOUNTS[usize::from(t.account)].into(),
                    mailbox: MAILBOXES[usize::from(t.mailbox)].into(),
                    flags: Flags::default(),
                    received: i64::from(t.time),
                    ip: usize::from(t.ip),
                    from: usize::from(t.from),
                    bytes: msg.bytes(),
                    expunged: false,
                },
            );
        }
        Ok(())
    }

    fn add_queued(
        &mut self,
        op: &Op,
        msg: Msg,
        rcpts: &[Rcpt],
        queued: &[(u64, u64)],
    ) -> Result<(), String> {
        if queued.len() != rcpts.len() {
            return Err(format!(
                "{op:?}: {} entries for {} recipients",
                queued.len(),
                rcpts.len()
            ));
        }
        let Some(&(_, msg_id)) = queued.first() else {
            return Ok(());
        };
        if self.queue_msgs.contains_key(&msg_id) || queued.iter().any(|q| q.1 != msg_id) {
            return Err(format!(
                "{op:?}: queued message id {msg_id} reused or not shared"
            ));
        }
        let bytes = msg.bytes();
        for (r, (id, _)) in rcpts.iter().zip(queued) {
            if !self.is_fresh_entry(*id) {
                return Err(format!("{op:?}: queue id {id} reused"));
            }
            self.queue.insert(
                *id,
                QueueEntry {
                    id: QueueId(*id),
                    msg_id,
                    size: bytes.len() as u64,
                    rcpt: r.recipient(),
                    attempts: 0,
                    last_error: None,
                    last_attempt: None,
                    history: Vec::new(),
                },
            );
        }
        self.queue_msgs.insert(msg_id, bytes);
        Ok(())
    }

    /// Removes a queue entry; its message goes with the last reference.
    fn unqueue(&mut self, id: u64) -> Option<QueueEntry> {
        let e = self.queue.remove(&id)?;
        if !self.queue.values().any(|o| o.msg_id == e.msg_id) {
            self.queue_msgs.remove(&e.msg_id);
        }
        Some(e)
    }

    /// Checks the store's answer to `op` against the model and applies `op` to the model.
    pub fn apply(&mut self, op: &Op, got: &Answer) -> Result<(), String> {
        let want_unit = |got: &Answer, op: &Op| match got {
            Answer::Unit => Ok(()),
            g => Err(format!("{op:?}: store answered {g:?}, model expects Ok")),
        };
        let err_of = |got: &Answer| match got {
            Answer::Err(k) => *k,
            _ => "Ok",
        };
        match op {
            Op::Deliver(t, m) | Op::DeliverSoon(t, m) => {
                self.apply_deliveries(op, &[*t], *m, None, got)
            }
            Op::DeliverMany(tos, m, _) => self.apply_deliveries(op, tos, *m, None, got),
            Op::DeliverAndQueue(tos, m, dsn, rcpts) => {
                self.apply_deliveries(op, tos, *m, Some((*dsn, rcpts)), got)
            }
            Op::QueueAdd(m, rcpts) => {
                if rcpts.is_empty() {
                    return err(err_of(got), "Invalid", op);
                }
                match got {
                    Answer::Stored(ids, queued) if ids.is_empty() => {
                        self.add_queued(op, *m, rcpts, queued)
                    }
                    g => Err(format!("{op:?}: store answered {g:?}")),
                }
            }
            Op::QueueUpdate { entry, next } => {
                let id = pick(self.queue.keys().copied(), *entry);
                let Some(e) = self.queue.get_mut(&id) else {
                    return err(err_of(got), "NoQueueEntry", op);
                };
                let mut new = e.clone();
                attempt(&mut new, *next);
                new.id = e.id;
                new.msg_id = e.msg_id;
                new.size = e.size;
                *e = new.clone();
                match got {
                    Answer::Entry(g) if **g == new => Ok(()),
                    g => Err(format!(
                        "{op:?}: store answered {g:?}, model expects {new:?}"
                    )),
                }
            }
            Op::QueueHold(sel) | Op::QueueRelease(sel) => {
                let id = pick(self.queue.keys().copied(), *sel);
                let Some(e) = self.queue.get_mut(&id) else {
                    return err(err_of(got), "NoQueueEntry", op);
                };
                e.rcpt.hold = matches!(op, Op::QueueHold(_));
                want_unit(got, op)
            }
            Op::QueueRetire {
                entry,
                delivered,
                time,
            } => {
                let id = pick(self.queue.keys().copied(), *entry);
                let Some(e) = self.unqueue(id) else {
                    return err(err_of(got), "NoQueueEntry", op);
                };
                let outcome = if *delivered {
                    QueueOutcome::Delivered("250 ok".into())
                } else {
                    QueueOutcome::Failed("550 no".into())
                };
                self.retired.insert(
                    id,
                    RetiredEntry {
                        entry: e,
                        outcome,
                        retired: UnixTime(i64::from(*time)),
                    },
                );
                want_unit(got, op)
            }
            Op::QueueFailWithDsn {
                entry,
                time,
                dsn,
                to,
                back,
            } => {
                let id = pick(self.queue.keys().copied(), *entry);
                let Some(e) = self.unqueue(id) else {
                    return err(err_of(got), "NoQueueEntry", op);
                };
                self.retired.insert(
                    id,
                    RetiredEntry {
                        entry: e,
                        outcome: QueueOutcome::Failed("550 no".into()),
                        retired: UnixTime(i64::from(*time)),
                    },
                );
                match to {
                    Some(t) => {
                        // A refused local delivery leaves the retirement in place.
                        if let Some(e) = self.deliver_error(&[*t], dsn.bytes().len() as u64) {
                            return err(err_of(got), e, op);
                        }
                        let Answer::Stored(ids, q) = got else {
                            return Err(format!(
                                "{op:?}: store answered {got:?}, model expects Ok"
                            ));
                        };
                        if !q.is_empty() {
                            return Err(format!("{op:?}: queued instead of delivered"));
                        }
                        self.add_messages(op, &[*t], *dsn, ids)
                    }
                    None => match got {
                        Answer::Stored(ids, q) if ids.is_empty() => {
                            self.add_queued(op, *dsn, std::slice::from_ref(back), q)
                        }
                        g => Err(format!("{op:?}: store answered {g:?}")),
                    },
                }
            }
            Op::QueueDrop(sel) => {
                let id = pick(self.queue.keys().copied(), *sel);
                if self.unqueue(id).is_none() {
                    return err(err_of(got), "NoQueueEntry", op);
                }
                want_unit(got, op)
            }
            Op::Expunge(sel) => {
                let id = pick(self.messages.keys().copied(), *sel);
                let Some(m) = self.messages.get_mut(&id) else {
                    return err(err_of(got), "NoMessage", op);
                };
                m.expunged = true;
                want_unit(got, op)
            }
            Op::SetFlags(sel, f) => {
                let id = pick(self.messages.keys().copied(), *sel);
                let Some(m) = self.messages.get_mut(&id) else {
                    return err(err_of(got), "NoMessage", op);
                };
                m.flags = flags(*f);
                want_unit(got, op)
            }
            Op::AccountAdd(a) => {
                let name = ACCOUNTS[usize::from(*a)];
                if self.accounts.contains_key(name) {
                    return err(err_of(got), "AccountExists", op);
                }
                self.accounts.insert(name.into(), None);
                want_unit(got, op)
            }
            Op::AccountRemove(a) => {
                let name = ACCOUNTS[usize::from(*a)];
                if self.accounts.remove(name).is_none() {
                    return err(err_of(got), "NoAccount", op);
                }
                self.messages.retain(|_, m| m.account != name);
                self.suppressions.retain(|k, _| k.0 != name);
                self.streaks.retain(|k, _| k.0 != name);
                want_unit(got, op)
            }
            Op::SetQuota(a, q) => {
                let name = ACCOUNTS[usize::from(*a)];
                let usage = self.usage(name);
                let Some(quota) = self.accounts.get_mut(name) else {
                    return err(err_of(got), "NoAccount", op);
                };
                *quota = q.map(|q| usage + [0, 40, 1000][usize::from(q)]);
                want_unit(got, op)
            }
            Op::SuppressionAdd {
                account,
                addr,
                manual,
                time,
            } => {
                let address = ADDRS[usize::from(*addr)].to_ascii_lowercase();
                self.suppressions.insert(
                    (ACCOUNTS[usize::from(*account)].into(), address.clone()),
                    Suppression {
                        address,
                        reason: "bounced".into(),
                        manual: *manual,
                        created: UnixTime(i64::from(*time)),
                    },
                );
                want_unit(got, op)
            }
            Op::SuppressionRemove(account, addr) => {
                let key = (
                    ACCOUNTS[usize::from(*account)].to_string(),
                    ADDRS[usize::from(*addr)].to_ascii_lowercase(),
                );
                let had = self.suppressions.remove(&key).is_some();
                match got {
                    Answer::Bool(b) if *b == had => Ok(()),
                    g => Err(format!("{op:?}: store answered {g:?}, model expects {had}")),
                }
            }
            Op::FailureStreak {
                account,
                addr,
                failed,
            } => {
                let key = (
                    ACCOUNTS[usize::from(*account)].to_string(),
                    ADDRS[usize::from(*addr)].to_ascii_lowercase(),
                );
                let n = if *failed {
                    let n = self.streaks.entry(key).or_default();
                    *n += 1;
                    *n
                } else {
                    self.streaks.remove(&key);
                    0
                };
                match got {
                    Answer::Num(g) if *g == u64::from(n) => Ok(()),
                    g => Err(format!("{op:?}: store answered {g:?}, model expects {n}")),
                }
            }
            Op::CountsAdd { day, adds } => {
                for (net, m, b) in adds {
                    let c = self
                        .counts
                        .entry((i64::from(*day), NETS[usize::from(*net)].into()))
                        .or_default();
                    c.0 += u64::from(*m);
                    c.1 += u64::from(*b);
                }
                want_unit(got, op)
            }
            Op::CountsCleanup(day) => {
                let before = self.counts.len();
                self.counts.retain(|k, _| k.0 >= i64::from(*day));
                let n = (before - self.counts.len()) as u64;
                match got {
                    Answer::Num(g) if *g == n => Ok(()),
                    g => Err(format!("{op:?}: store answered {g:?}, model expects {n}")),
                }
            }
            Op::Reopen => want_unit(got, op),
        }
    }

    fn apply_deliveries(
        &mut self,
        op: &Op,
        tos: &[To],
        m: Msg,
        queued: Option<(Msg, &Vec<Rcpt>)>,
        got: &Answer,
    ) -> Result<(), String> {
        let got_kind = match got {
            Answer::Err(k) => *k,
            _ => "Ok",
        };
        if queued.is_some_and(|(_, r)| r.is_empty()) {
            return err(got_kind, "Invalid", op);
        }
        if let Some(e) = self.deliver_error(tos, m.bytes().len() as u64) {
            return err(got_kind, e, op);
        }
        let Answer::Stored(ids, q) = got else {
            return Err(format!("{op:?}: store answered {got:?}, model expects Ok"));
        };
        self.add_messages(op, tos, m, ids)?;
        match queued {
            Some((dsn, rcpts)) => self.add_queued(op, dsn, rcpts, q),
            None if q.is_empty() => Ok(()),
            None => Err(format!("{op:?}: entries queued without a queue request")),
        }
    }

    /// The state the store must show.
    pub fn expected(&self) -> Observed {
        let mut o = Observed::default();
        for (name, quota) in &self.accounts {
            let mailboxes: BTreeSet<String> = self
                .messages
                .values()
                .filter(|m| &m.account == name)
                .map(|m| m.mailbox.clone())
                .collect();
            o.accounts.push((
                name.clone(),
                *quota,
                self.usage(name),
                mailboxes.into_iter().collect(),
            ));
        }
        for acc in ACCOUNTS {
            let mine: Vec<(&u64, &MMsg)> = self
                .messages
                .iter()
                .filter(|(_, m)| m.account == acc)
                .collect();
            o.messages.push((
                acc.to_string(),
                mine.iter()
                    .map(|(id, m)| SeenMsg {
                        id: **id,
                        mailbox: m.mailbox.clone(),
                        flags: m.flags,
                        received: m.received,
                        size: m.bytes.len() as u64,
                        expunged: m.expunged,
                        bytes: (!m.expunged).then(|| m.bytes.clone()),
                    })
                    .collect(),
            ));
            for (kind, value, since) in index_queries() {
                let n = mine
                    .iter()
                    .filter(|(_, m)| m.received >= since)
                    .filter(|(_, m)| match kind {
                        IndexKind::Network => IPS[m.ip]
                            .parse()
                            .is_ok_and(|ip| ip_networks(ip).contains(&value)),
                        _ => FROMS[m.from].is_some_and(|f| f.eq_ignore_ascii_case(&value)),
                    })
                    .count() as u64;
                o.index.push((acc.to_string(), kind_name(kind), value, n));
            }
            let list: Vec<Suppression> = self
                .suppressions
                .iter()
                .filter(|(k, _)| k.0 == acc)
                .map(|(_, s)| s.clone())
                .collect();
            let sup = ADDRS
                .iter()
                .map(|a| {
                    self.suppressions
                        .contains_key(&(acc.to_string(), a.to_ascii_lowercase()))
                })
                .collect();
            o.suppressions.push((acc.to_string(), list, sup));
            for addr in ADDRS {
                let k = (acc.to_string(), addr.to_ascii_lowercase());
                o.streaks.push(self.streaks.get(&k).copied().unwrap_or(0));
            }
        }
        o.queue = self.queue.values().cloned().collect();
        o.queue_msgs = self
            .queue_msgs
            .iter()
            .map(|(id, b)| (*id, Some(b.clone())))
            .collect();
        let mut due: Vec<(i64, u64)> = self
            .queue
            .values()
            .filter(|e| !e.rcpt.hold)
            .map(|e| (e.rcpt.next_attempt.0, e.id.0))
            .collect();
        due.sort();
        o.due = (
            due.iter()
                .filter(|d| d.0 <= 10)
                .take(5)
                .map(|d| d.1)
                .collect(),
            due.first().map(|d| d.0),
        );
        o.retired = self.retired.values().rev().cloned().collect();
        for day in 0..5 {
            for net in NETS {
                o.counts.push(
                    self.counts
                        .get(&(day, net.to_string()))
                        .copied()
                        .unwrap_or((0, 0)),
                );
            }
        }
        o
    }
}

/// Runs one operation (other than [`Op::Reopen`]) on the store; selectors are resolved
/// against the model's live records.
pub fn exec(s: &dyn MailStore, model: &Model, op: &Op) -> Answer {
    fn ans<T>(r: Result<T, StoreError>, f: impl FnOnce(T) -> Answer) -> Answer {
        match r {
            Ok(v) => f(v),
            Err(e) => Answer::Err(kind(&e)),
        }
    }
    let unit = |r: Result<(), StoreError>| ans(r, |()| Answer::Unit);
    let entry_sel = |sel: u8| QueueId(pick(model.queue.keys().copied(), sel));
    let msg_sel = |sel: u8| MessageId(pick(model.messages.keys().copied(), sel));
    let queued_now = |s: &dyn MailStore| -> BTreeMap<u64, u64> {
        s.queue_list(&QueueFilter::default())
            .map(|v| v.into_iter().map(|e| (e.id.0, e.msg_id)).collect())
            .unwrap_or_default()
    };
    match op {
        Op::Deliver(t, m) => {
            let b = m.bytes();
            ans(s.deliver(t.delivery(&b)), |id| {
                Answer::Stored(vec![id.0], vec![])
            })
        }
        Op::DeliverSoon(t, m) => {
            let b = m.bytes();
            let r = match s.deliver_soon(t.delivery(&b)) {
                Some(f) => futures_lite::future::block_on(f),
                None => s.deliver(t.delivery(&b)),
            };
            ans(r, |id| Answer::Stored(vec![id.0], vec![]))
        }
        Op::DeliverMany(tos, m, shared) => {
            let one = m.bytes();
            let copies: Vec<Vec<u8>> = tos.iter().map(|_| m.bytes()).collect();
            let reqs = tos
                .iter()
                .zip(&copies)
                .map(|(t, c)| t.delivery(if *shared { &one } else { c }))
                .collect();
            ans(s.deliver_many(reqs), |ids| {
                Answer::Stored(ids.into_iter().map(|i| i.0).collect(), vec![])
            })
        }
        Op::DeliverAndQueue(tos, m, dsn, rcpts) => {
            let one = m.bytes();
            let reqs = tos.iter().map(|t| t.delivery(&one)).collect();
            let before = queued_now(s);
            let rc = rcpts.iter().map(|r| r.recipient()).collect();
            let r = MailStore::deliver_and_queue(s, reqs, &dsn.bytes(), rc);
            ans(r, |ids| {
                let new = queued_now(s)
                    .into_iter()
                    .filter(|(id, _)| !before.contains_key(id))
                    .collect();
                Answer::Stored(ids.into_iter().map(|i| i.0).collect(), new)
            })
        }
        Op::QueueAdd(m, rcpts) => {
            let r = s.queue_add(&m.bytes(), rcpts.iter().map(|r| r.recipient()).collect());
            ans(r, |ids| {
                let q = ids
                    .iter()
                    .map(|id| {
                        let msg = s
                            .queue_get(*id)
                            .ok()
                            .flatten()
                            .map_or(MISSING, |e| e.msg_id);
                        (id.0, msg)
                    })
                    .collect();
                Answer::Stored(vec![], q)
            })
        }
        Op::QueueUpdate { entry, next } => {
            let next = *next;
            let r = s.queue_update_with(entry_sel(*entry), Box::new(move |e| attempt(e, next)));
            ans(r, |e| Answer::Entry(Box::new(e)))
        }
        Op::QueueHold(sel) => unit(s.queue_hold(entry_sel(*sel))),
        Op::QueueRelease(sel) => unit(s.queue_release(entry_sel(*sel))),
        Op::QueueRetire {
            entry,
            delivered,
            time,
        } => {
            let outcome = if *delivered {
                QueueOutcome::Delivered("250 ok".into())
            } else {
                QueueOutcome::Failed("550 no".into())
            };
            unit(s.queue_retire(entry_sel(*entry), outcome, UnixTime(i64::from(*time))))
        }
        Op::QueueFailWithDsn {
            entry,
            time,
            dsn,
            to,
            back,
        } => {
            let bytes = dsn.bytes();
            let id = entry_sel(*entry);
            let message = match to {
                Some(t) => NoticeMessage::Deliver(t.delivery(&bytes)),
                None => NoticeMessage::Queue(&bytes, back.recipient()),
            };
            let r = s.queue_record_with(
                vec![QueueRecord {
                    id,
                    change: Box::new(|_| {}),
                    retire: Some(QueueOutcome::Failed("550 no".into())),
                    streak: None,
                    webhook: None,
                }],
                vec![Notice {
                    about: vec![id],
                    message,
                }],
                UnixTime(i64::from(*time)),
            );
            match r {
                Err(e) => Answer::Err(kind(&e)),
                Ok(rec) if !rec.gone.is_empty() => match rec.notices.first() {
                    Some(NoticeOutcome::Gone) => Answer::Err("NoQueueEntry"),
                    n => Answer::Err(if n.is_none() { "NoNotice" } else { "NotGone" }),
                },
                Ok(rec) => match rec.notices.first() {
                    Some(NoticeOutcome::Delivered(m)) => Answer::Stored(vec![m.0], vec![]),
                    Some(NoticeOutcome::Queued(q)) => {
                        let msg = s.queue_get(*q).ok().flatten().map_or(MISSING, |e| e.msg_id);
                        Answer::Stored(vec![], vec![(q.0, msg)])
                    }
                    Some(NoticeOutcome::Refused(e)) => Answer::Err(kind(e)),
                    Some(NoticeOutcome::Gone) => Answer::Err("GoneWithoutEntry"),
                    None => Answer::Err("NoNotice"),
                },
            }
        }
        Op::QueueDrop(sel) => unit(s.queue_drop(entry_sel(*sel))),
        Op::Expunge(sel) => unit(s.expunge(msg_sel(*sel))),
        Op::SetFlags(sel, f) => unit(s.set_flags(msg_sel(*sel), flags(*f))),
        Op::AccountAdd(a) => unit(s.account_add(ACCOUNTS[usize::from(*a)], "example.org")),
        Op::AccountRemove(a) => unit(s.account_remove(ACCOUNTS[usize::from(*a)])),
        Op::SetQuota(a, q) => {
            let name = ACCOUNTS[usize::from(*a)];
            let quota = q.map(|q| model.usage(name) + [0, 40, 1000][usize::from(q)]);
            unit(s.account_set_quota(name, quota))
        }
        Op::SuppressionAdd {
            account,
            addr,
            manual,
            time,
        } => unit(s.suppression_add(
            ACCOUNTS[usize::from(*account)],
            Suppression {
                address: ADDRS[usize::from(*addr)].into(),
                reason: "bounced".into(),
                manual: *manual,
                created: UnixTime(i64::from(*time)),
            },
        )),
        Op::SuppressionRemove(account, addr) => ans(
            s.suppression_remove(ACCOUNTS[usize::from(*account)], ADDRS[usize::from(*addr)]),
            Answer::Bool,
        ),
        Op::FailureStreak {
            account,
            addr,
            failed,
        } => ans(
            s.failure_streak_record(
                ACCOUNTS[usize::from(*account)],
                ADDRS[usize::from(*addr)],
                *failed,
            ),
            |n| Answer::Num(u64::from(n)),
        ),
        Op::CountsAdd { day, adds } => unit(
            s.delivery_counts_add(
                i64::from(*day),
                adds.iter()
                    .map(|(n, m, b)| {
                        (
                            NETS[usize::from(*n)].to_string(),
                            u64::from(*m),
                            u64::from(*b),
                        )
                    })
                    .collect(),
            ),
        ),
        Op::CountsCleanup(day) => ans(s.delivery_counts_cleanup(i64::from(*day)), Answer::Num),
        Op::Reopen => Answer::Unit,
    }
}

/// Where the store's database lives during a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// `index.db` in the data directory, with every fsync (slow).
    File,
    /// In memory (a [`Crash`] that never crashes; message-file syncs skipped): fast, for
    /// fuzzing. The bytes are written to `index.db` for [`crate::verify`] at `Reopen`.
    Memory,
}

/// A backend under check: opens its store (again, at [`Op::Reopen`], on the same data).
pub trait CheckBackend {
    /// Opens the store on the backend's data (empty the first time).
    fn open(&mut self) -> Result<Box<dyn MailStore>, String>;
    /// Checks what can be checked of the data while no store has it open (redb: verify).
    fn check_closed(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// The redb [`Store`] under `root` for [`check_backend`].
struct Redb<'a> {
    root: &'a Path,
    backing: Backing,
    sim: Crash,
}

impl CheckBackend for Redb<'_> {
    fn open(&mut self) -> Result<Box<dyn MailStore>, String> {
        let data = self.root.join("data");
        match self.backing {
            Backing::File => Store::open(&data),
            Backing::Memory => Store::open_with_backend(&data, self.sim.backend(), false),
        }
        .map(|s| Box::new(s) as Box<dyn MailStore>)
        .map_err(|e| format!("open: {e}"))
    }

    fn check_closed(&mut self) -> Result<(), String> {
        let data = self.root.join("data");
        if self.backing == Backing::Memory {
            self.sim
                .write_image(Image::Written, &data, &self.root.join("image"));
        }
        let vdir = match self.backing {
            Backing::File => data.clone(),
            Backing::Memory => self.root.join("image/data"),
        };
        let v = crate::verify(&vdir);
        if !v.is_ok() || !v.orphans.is_empty() {
            return Err(format!("verify: {:?}", v.lines()));
        }
        if self.backing == Backing::Memory {
            let _ = std::fs::remove_dir_all(self.root.join("image"));
        }
        Ok(())
    }
}

/// Applies `ops` to a new redb store under `root` (an empty directory) and to the model,
/// comparing after every step. Returns the first difference.
pub fn check_ops(root: &Path, ops: &[Op], backing: Backing) -> Result<(), String> {
    let sim = Crash::new(root, None);
    let _hook = (backing == Backing::Memory)
        .then(|| super::register_file_hook(root, std::sync::Arc::new(sim.clone())));
    check_backend(&mut Redb { root, backing, sim }, ops)
}

/// Applies `ops` to a new store of `backend` (whose data starts empty) and to the model,
/// comparing answers and the whole observable state after every step. Returns the first
/// difference.
pub fn check_backend(backend: &mut dyn CheckBackend, ops: &[Op]) -> Result<(), String> {
    let mut store = Some(backend.open()?);
    let mut model = Model::default();
    for (i, op) in ops.iter().enumerate() {
        let got = if *op == Op::Reopen {
            drop(store.take());
            backend
                .check_closed()
                .map_err(|e| format!("step {i}: {e}"))?;
            store = Some(backend.open()?);
            Answer::Unit
        } else {
            exec(store.as_deref().ok_or("no store")?, &model, op)
        };
        model
            .apply(op, &got)
            .map_err(|e| format!("step {i}: {e}"))?;
        let s = store.as_deref().ok_or("no store")?;
        let seen = observe(s).map_err(|e| format!("step {i} ({op:?}): observe: {e}"))?;
        let want = model.expected();
        if seen != want {
            return Err(format!(
                "step {i} ({op:?}): state differs\n{}",
                diff(&seen, &want)
            ));
        }
    }
    Ok(())
}

/// The fields that differ, store first, model second.
pub fn diff(seen: &Observed, want: &Observed) -> String {
    let mut out = String::new();
    let mut f = |name: &str, a: String, b: String| {
        if a != b {
            out.push_str(&format!("{name}:\n  store: {a}\n  model: {b}\n"));
        }
    };
    f(
        "accounts",
        format!("{:?}", seen.accounts),
        format!("{:?}", want.accounts),
    );
    f(
        "messages",
        format!("{:?}", seen.messages),
        format!("{:?}", want.messages),
    );
    f(
        "index",
        format!("{:?}", seen.index),
        format!("{:?}", want.index),
    );
    f(
        "queue",
        format!("{:?}", seen.queue),
        format!("{:?}", want.queue),
    );
    f(
        "queue_msgs",
        format!("{:?}", seen.queue_msgs),
        format!("{:?}", want.queue_msgs),
    );
    f("due", format!("{:?}", seen.due), format!("{:?}", want.due));
    f(
        "retired",
        format!("{:?}", seen.retired),
        format!("{:?}", want.retired),
    );
    f(
        "suppressions",
        format!("{:?}", seen.suppressions),
        format!("{:?}", want.suppressions),
    );
    f(
        "streaks",
        format!("{:?}", seen.streaks),
        format!("{:?}", want.streaks),
    );
    f(
        "counts",
        format!("{:?}", seen.counts),
        format!("{:?}", want.counts),
    );
    out
}

/// A data directory for a check (kept when `RMOX_KEEP` is set, for debugging).
pub fn temp_root() -> (tempfile_free::Dir, PathBuf) {
    let d = tempfile_free::Dir::new();
    let p = d.0.clone();
    (d, p)
}

/// A temporary directory without the tempfile crate (the fuzz target has no dev-deps).
pub mod tempfile_free {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Removed when dropped.
    pub struct Dir(pub PathBuf);

    impl Dir {
        /// A new empty directory under the system's temporary directory.
        pub fn new() -> Dir {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "rmox-check-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }

    impl Default for Dir {
        fn default() -> Self {
            Dir::new()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            if std::env::var_os("RMOX_KEEP").is_none() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
