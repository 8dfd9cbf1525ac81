//! The junk filter's outside world: which stored messages train an account's filter and as
//! what, corpus training (`rmox junk train`), checking a message (`rmox junk check`), and
//! the classification the incoming analysis asks for. The tokenizer and the arithmetic are
//! core's ([`rmox_core::junk`]); the counts live in storage.
//!
//! A stored message trains its account's filter as spam when it is marked junk or lies in
//! the Junk mailbox, as ham when it is marked not junk or lies in a mailbox other than
//! Inbox, Junk and the rejects mailbox (Archive, Sent, lists: what the user kept), and not
//! at all otherwise (Inbox is what nobody judged yet) or once it is older than
//! `train_max_age_days`. [`sync`] brings one message's training in line with that; it runs
//! when a message is classified (`rmox message junk|notjunk`, the maildir Junk folder),
//! when a message is delivered into a mailbox that trains, and for the age limit.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use rmox_core::junk::{self, Classification, Params};
use rmox_core::UnixTime;
use rmox_storage::{MailStore, MessageId, MessageRecord, StoreError};

use crate::config::{Config, JunkFilterConfig};
use crate::Fail;

/// The mailbox whose messages are spam.
pub const JUNK_MAILBOX: &str = "Junk";

/// Messages a corpus import trains per transaction.
const TRAIN_BATCH: usize = 200;

/// Messages untrained per account per age sweep.
const SWEEP_BATCH: usize = 1000;

/// How a stored message should train its account's filter: `Some(true)` spam,
/// `Some(false)` ham, `None` not at all.
pub fn class_of(
    rec: &MessageRecord,
    rejects_mailbox: Option<&str>,
    cfg: &JunkFilterConfig,
    now: UnixTime,
) -> Option<bool> {
    let mb = rec.mailbox.as_str();
    // What the analysis refused is no one's judgement: kept for rescue, never trained.
    if rec.expunged || rejects_mailbox.is_some_and(|r| r == mb) {
        return None;
    }
    if cfg.train_max_age_days > 0
        && rec.received.0 < now.0 - i64::from(cfg.train_max_age_days) * 24 * 3600
    {
        return None;
    }
    if rec.flags.junk {
        return Some(true);
    }
    if rec.flags.notjunk {
        return Some(false);
    }
    if mb.eq_ignore_ascii_case(JUNK_MAILBOX) {
        return Some(true);
    }
    if mb.eq_ignore_ascii_case("Inbox") {
        return None;
    }
    Some(false)
}

/// Brings message `id`'s training in line with [`class_of`]; whether it changed. Nothing
/// for an account without a junk filter.
pub fn sync(
    store: &dyn MailStore,
    c: &Config,
    id: MessageId,
    now: UnixTime,
) -> Result<bool, StoreError> {
    let Some(rec) = store.message(id)? else {
        return Ok(false);
    };
    let Some(a) = c.account.get(&rec.account) else {
        return Ok(false);
    };
    let Some(cfg) = &a.junk_filter else {
        return Ok(false);
    };
    let class = class_of(&rec, a.rejects_mailbox.as_deref(), cfg, now);
    store.junk_set_class(id, class, &cfg.params())
}

/// Untrains what the age limit of each account's filter leaves out; how many messages.
pub fn sweep(store: &dyn MailStore, c: &Config, now: UnixTime) -> Result<usize, StoreError> {
    let mut n = 0;
    for (name, a) in &c.account {
        let Some(cfg) = a.junk_filter.as_ref().filter(|f| f.train_max_age_days > 0) else {
            continue;
        };
        let before = UnixTime(now.0 - i64::from(cfg.train_max_age_days) * 24 * 3600);
        for id in store.junk_trained_before(name, before, SWEEP_BATCH)? {
            if store.junk_set_class(id, None, &cfg.params())? {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Retrains every stored message of `account` from its classification ([`sync`] on each);
/// how many changed.
pub fn retrain(
    store: &dyn MailStore,
    c: &Config,
    account: &str,
    now: UnixTime,
) -> Result<usize, Fail> {
    junk_config(c, account)?;
    let mut n = 0;
    for m in store.messages(account)? {
        if sync(store, c, m.id, now)? {
            n += 1;
        }
    }
    Ok(n)
}

/// The classification of `message` by `account`'s filter.
pub fn classify(
    store: &dyn MailStore,
    account: &str,
    params: &Params,
    message: &[u8],
) -> Result<Classification, StoreError> {
    let tokens: Vec<String> = junk::tokenize(params, message).into_iter().collect();
    classify_tokens(store, account, params, tokens)
}

/// [`classify`] of a message already tokenized.
pub fn classify_tokens(
    store: &dyn MailStore,
    account: &str,
    params: &Params,
    tokens: Vec<String>,
) -> Result<Classification, StoreError> {
    let (hams, spams, counts) = store.junk_counts(account, &tokens)?;
    let pairs: Vec<(String, junk::Counts)> = tokens.into_iter().zip(counts).collect();
    Ok(junk::classify(params, hams, spams, &pairs))
}

/// The junk filter of `account` in the configuration, or why there is none.
pub fn junk_config<'a>(c: &'a Config, account: &str) -> Result<&'a JunkFilterConfig, Fail> {
    let a = c.account.get(account).ok_or_else(|| {
        Fail(format!(
            "{}: account.{account}: no such account",
            c.path.display()
        ))
    })?;
    a.junk_filter.as_ref().ok_or_else(|| {
        Fail(format!(
            "{}: account.{account} has no junk_filter: add [account.{account}.junk_filter] (see `rmox config example`)",
            c.path.display()
        ))
    })
}

/// What `rmox junk train` did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Trained {
    /// Spam messages trained.
    pub spam: u64,
    /// Ham messages trained.
    pub ham: u64,
    /// Files that could not be read.
    pub skipped: u64,
}

/// Trains `account`'s filter from a corpus: every message of `spam` as spam, of `ham` as
/// ham. Each is an mbox file, a maildir (`cur/` and `new/`) or a directory with one message
/// per file. `progress`: a progress line on standard error as it goes.
pub fn train(
    store: &dyn MailStore,
    c: &Config,
    account: &str,
    spam: Option<&Path>,
    ham: Option<&Path>,
    progress: bool,
) -> Result<Trained, Fail> {
    let cfg = junk_config(c, account)?;
    if store.account(account)?.is_none() {
        return Err(Fail(format!(
            "account {account:?} not found in the data directory"
        )));
    }
    let params = cfg.params();
    let mut done = Trained::default();
    for (path, is_spam) in [(spam, true), (ham, false)] {
        let Some(path) = path else { continue };
        let corpus = Corpus::open(path)?;
        let total = corpus.len();
        let label = if is_spam { "spam" } else { "ham" };
        let mut bar = Progress::new(progress, label, total);
        let mut batch: Vec<(bool, BTreeSet<String>)> = Vec::new();
        let flush = |batch: &mut Vec<(bool, BTreeSet<String>)>| -> Result<(), Fail> {
            if !batch.is_empty() {
                store.junk_train_tokens(account, std::mem::take(batch))?;
            }
            Ok(())
        };
        let mut err = None;
        corpus.each(&mut |m, at| match m {
            Some(bytes) => {
                batch.push((is_spam, junk::tokenize(&params, &bytes)));
                if is_spam {
                    done.spam += 1;
                } else {
                    done.ham += 1;
                }
                if batch.len() >= TRAIN_BATCH {
                    if let Err(e) = flush(&mut batch) {
                        err = Some(e);
                        return false;
                    }
                }
                bar.at(at);
                true
            }
            None => {
                done.skipped += 1;
                bar.at(at);
                true
            }
        })?;
        if let Some(e) = err {
            return Err(e);
        }
        flush(&mut batch)?;
        bar.done();
    }
    Ok(done)
}

/// A progress line on standard error: `rmox junk train: spam 1200/5000 (24%)`, redrawn
/// at most every 1%.
struct Progress {
    on: bool,
    label: &'static str,
    total: u64,
    shown: u64,
}

impl Progress {
    fn new(on: bool, label: &'static str, total: u64) -> Progress {
        Progress {
            on,
            label,
            total,
            shown: u64::MAX,
        }
    }

    fn at(&mut self, n: u64) {
        if !self.on || self.total == 0 {
            return;
        }
        let pct = n.saturating_mul(100) / self.total;
        if pct != self.shown {
            self.shown = pct;
            let mut e = std::io::stderr();
            let _ = write!(e, "\rrmox junk train: {} {pct}%", self.label);
            let _ = e.flush();
        }
    }

    fn done(&mut self) {
        if self.on {
            eprintln!("\rrmox junk train: {} done ", self.label);
        }
    }
}

/// Where corpus messages come from.
enum Corpus {
    /// Files, one message each (a maildir's `cur/` and `new/`, or a plain directory).
    Files(Vec<PathBuf>),
    /// An mbox file and its size.
    Mbox(PathBuf, u64),
}

impl Corpus {
    fn open(path: &Path) -> Result<Corpus, Fail> {
        let meta = std::fs::metadata(path).map_err(|e| Fail(format!("{}: {e}", path.display())))?;
        if meta.is_file() {
            return Ok(Corpus::Mbox(path.to_path_buf(), meta.len()));
        }
        let dirs: Vec<PathBuf> = if path.join("cur").is_dir() || path.join("new").is_dir() {
            vec![path.join("cur"), path.join("new")]
        } else {
            vec![path.to_path_buf()]
        };
        let mut files = Vec::new();
        for d in dirs {
            let rd = match std::fs::read_dir(&d) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Fail(format!("{}: {e}", d.display()))),
            };
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    files.push(e.path());
                }
            }
        }
        files.sort();
        Ok(Corpus::Files(files))
    }

    /// Units of progress: files, or mbox bytes.
    fn len(&self) -> u64 {
        match self {
            Corpus::Files(f) => f.len() as u64,
            Corpus::Mbox(_, size) => *size,
        }
    }

    /// Calls `f` with each message (`None`: unreadable) and the progress so far, until it
    /// says stop.
    fn each(&self, f: &mut dyn FnMut(Option<Vec<u8>>, u64) -> bool) -> Result<(), Fail> {
        match self {
            Corpus::Files(files) => {
                for (i, p) in files.iter().enumerate() {
                    let m = std::fs::read(p).ok();
                    if !f(m, i as u64 + 1) {
                        break;
                    }
                }
            }
            Corpus::Mbox(path, _) => {
                let file = std::fs::File::open(path)
                    .map_err(|e| Fail(format!("{}: {e}", path.display())))?;
                let mut r = BufReader::new(file);
                let (mut line, mut offset) = (Vec::new(), 0u64);
                let mut msg: Option<Vec<u8>> = None;
                loop {
                    line.clear();
                    let n = r
                        .read_until(b'\n', &mut line)
                        .map_err(|e| Fail(format!("{}: {e}", path.display())))?;
                    if n == 0 {
                        break;
                    }
                    offset += n as u64;
                    if line.starts_with(b"From ") {
                        if let Some(m) = msg.take() {
                            if !f(Some(m), offset) {
                                return Ok(());
                            }
                        }
                        msg = Some(Vec::new());
                    } else if let Some(m) = msg.as_mut() {
                        // mboxrd: one '>' less on quoted From lines.
                        let unquoted = match line.iter().position(|c| *c != b'>') {
                            Some(i) if i > 0 && line[i..].starts_with(b"From ") => &line[1..],
                            _ => &line[..],
                        };
                        m.extend_from_slice(unquoted);
                    }
                }
                if let Some(m) = msg.take() {
                    f(Some(m), offset);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

/// A synthetic corpus for the tests and the precision/recall benchmark: generated, not
/// real mail. Ham talks about work and family, spam sells; both share common words and
/// some of each other's vocabulary (`overlap` of the words of a message, 0 to 1), so the
/// classes are separable but not trivially.
pub mod corpus {
    const HAM: &[&str] = &[
        "meeting",
        "project",
        "review",
        "schedule",
        "tomorrow",
        "agenda",
        "notes",
        "draft",
        "quarterly",
        "budget",
        "team",
        "lunch",
        "family",
        "weekend",
        "kids",
        "dinner",
        "birthday",
        "travel",
        "itinerary",
        "flight",
        "hotel",
        "conference",
        "slides",
        "feedback",
        "release",
        "branch",
        "merge",
        "deploy",
        "incident",
        "postmortem",
        "invoice",
        "contract",
        "lawyer",
        "doctor",
        "appointment",
        "garden",
        "recipe",
        "soccer",
        "practice",
        "school",
        "teacher",
        "homework",
        "library",
        "museum",
    ];
    const SPAM: &[&str] = &[
        "viagra",
        "pills",
        "cheap",
        "lottery",
        "winner",
        "prize",
        "claim",
        "casino",
        "bitcoin",
        "crypto",
        "investment",
        "guaranteed",
        "profit",
        "discount",
        "offer",
        "limited",
        "exclusive",
        "unsubscribe",
        "click",
        "urgent",
        "account",
        "verify",
        "password",
        "suspended",
        "inheritance",
        "beneficiary",
        "million",
        "dollars",
        "replica",
        "watches",
        "pharmacy",
        "prescription",
        "weight",
        "loss",
        "dating",
        "singles",
        "loan",
        "credit",
        "refinance",
        "mortgage",
        "bonus",
        "free",
    ];
    const COMMON: &[&str] = &[
        "the", "and", "for", "you", "with", "this", "that", "have", "from", "your", "will",
        "please", "thanks", "regards", "today", "time", "best", "more", "about", "here",
    ];

    /// A small deterministic generator (xorshift64*), so a seed gives the same corpus.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[(self.next() % from.len() as u64) as usize]
        }
        fn chance(&mut self, p: f64) -> bool {
            (self.next() % 10_000) as f64 / 10_000.0 < p
        }
    }

    /// `n` messages of one class (`spam`), as CRLF message bytes.
    pub fn messages(seed: u64, n: usize, spam: bool, overlap: f64) -> Vec<Vec<u8>> {
        let mut g = Gen(seed.wrapping_mul(2).wrapping_add(if spam { 1 } else { 3 }) | 1);
        let (own, other) = if spam { (SPAM, HAM) } else { (HAM, SPAM) };
        (0..n)
            .map(|i| {
                let mut words = Vec::new();
                let len = 20 + (g.next() % 60) as usize;
                for _ in 0..len {
                    let w = if g.chance(0.4) {
                        g.pick(COMMON)
                    } else if g.chance(overlap) {
                        g.pick(other)
                    } else {
                        g.pick(own)
                    };
                    words.push(w);
                }
                let subject: Vec<&str> = (0..3).map(|_| g.pick(own)).collect();
                let from = if spam {
                    format!("{}@{}{}.example", g.pick(own), g.pick(own), i % 97)
                } else {
                    format!("{}@work{}.example", g.pick(COMMON), i % 13)
                };
                let body = words.join(" ");
                let html = spam && g.chance(0.5);
                let content = if html {
                    format!(
                        "Content-Type: text/html\r\n\r\n<html><body><p>{body}</p>\
                         <a href=\"https://{}.example/x\">{}</a></body></html>\r\n",
                        g.pick(own),
                        g.pick(own)
                    )
                } else {
                    format!("Content-Type: text/plain\r\n\r\n{body}\r\n")
                };
                format!(
                    "From: <{from}>\r\nTo: <mjl@mox.example>\r\nSubject: {}\r\n\
                     Message-Id: <{seed}.{i}.{spam}@gen.example>\r\nMIME-Version: 1.0\r\n{content}",
                    subject.join(" ")
                )
                .into_bytes()
            })
            .collect()
    }
}
