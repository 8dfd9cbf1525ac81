//! Crash test: a child process (this test binary, re-executed) stores messages and queue
//! entries in a loop from several threads and prints each id after `Ok`; the parent
//! SIGKILLs it at seeded random points, reopens the data directory, and checks that every
//! acknowledged store is intact and that verify finds nothing but harmless orphans. One
//! thread delivers as an async runtime's task does (`deliver_soon`, led by the commit
//! thread).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rmox_core::UnixTime;
use rmox_storage::*;

const CHILD_ENV: &str = "RMOX_CRASH_CHILD_DIR";
const ROUNDS: u64 = 20;

fn hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The deterministic message for `key`: 60 bytes to ~40 KB.
fn gen(key: &str) -> Vec<u8> {
    let mut x = hash(key) | 1;
    let len = 60 + (x % 40_000) as usize;
    let mut v = format!("Key: {key}\r\n\r\n").into_bytes();
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

fn rcpt(to: &str) -> QueueRecipient {
    QueueRecipient {
        sender_account: Some("a".into()),
        mail_from: "a@example.org".into(),
        recipient: to.into(),
        has_8bit: false,
        smtputf8: false,
        requiretls: RequireTls::Default,
        transport: None,
        next_attempt: UnixTime(100),
        queued: UnixTime(100),
        hold: false,
        dsn: DsnParams::default(),
        is_dsn: false,
        from_id: None,
    }
}

fn child(dir: &Path, round: &str) {
    let s = Arc::new(Store::open(dir).unwrap());
    match s.account_add("a", "example.org") {
        Ok(()) | Err(StoreError::AccountExists(_)) => {}
        Err(e) => panic!("{e}"),
    }
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let say = move |out: &Mutex<std::io::Stdout>, line: String| {
        let mut o = out.lock().unwrap();
        o.write_all(line.as_bytes()).unwrap();
        o.flush().unwrap();
    };
    let mut threads = Vec::new();
    for t in 0..4 {
        let (s, out, round) = (Arc::clone(&s), Arc::clone(&out), round.to_string());
        threads.push(std::thread::spawn(move || {
            for k in 0u64.. {
                let key = format!("{round}-{t}-{k}");
                let m = gen(&key);
                if t == 3 {
                    // Queue: add two recipients, record an attempt on one, retire the other.
                    let ids = s
                        .queue_add(&m, vec![rcpt("x@example.com"), rcpt("y@example.com")])
                        .unwrap();
                    say(
                        &out,
                        format!("Q {} {key}\nQ {} {key}\n", ids[0].0, ids[1].0),
                    );
                    let e = s
                        .queue_update(ids[0], |e| {
                            e.attempts += 1;
                            e.last_error = Some("451 try later".into());
                            e.rcpt.next_attempt = UnixTime(200);
                        })
                        .unwrap();
                    say(&out, format!("U {} {}\n", ids[0].0, e.attempts));
                    s.queue_retire(ids[1], Outcome::Delivered("250 ok".into()), UnixTime(150))
                        .unwrap();
                    say(&out, format!("R {}\n", ids[1].0));
                } else if t == 2 && k % 2 == 1 {
                    // One message for two mailboxes in one commit.
                    let ids = s
                        .deliver_many(vec![delivery(&m, "Inbox"), delivery(&m, "Archive")])
                        .unwrap();
                    say(
                        &out,
                        format!("D {} {key}\nD {} {key}\n", ids[0].0, ids[1].0),
                    );
                } else if t == 1 {
                    // The path of a caller that must not block: the commit thread leads
                    // its batches, beside the other threads' leaders.
                    let id = match s.deliver_soon(delivery(&m, "Inbox")) {
                        Some(f) => futures_lite::future::block_on(f).unwrap(),
                        None => s.deliver(delivery(&m, "Inbox")).unwrap(),
                    };
                    say(&out, format!("D {} {key}\n", id.0));
                } else {
                    let id = s.deliver(delivery(&m, "Inbox")).unwrap();
                    say(&out, format!("D {} {key}\n", id.0));
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
}

fn delivery<'a>(m: &'a [u8], mailbox: &str) -> Delivery<'a> {
    Delivery {
        account: "a".into(),
        mailbox: mailbox.into(),
        head: &[],
        message: m,
        flags: Flags::default(),
        received: UnixTime(100),
        info: MessageInfo {
            remote_ip: Some("192.0.2.9".parse().unwrap()),
            mail_from: Some("sender@example.net".into()),
            ..Default::default()
        },
    }
}

#[derive(Default)]
struct Acked {
    messages: BTreeMap<u64, String>,
    queued: BTreeMap<u64, String>,
    attempts: BTreeMap<u64, u32>,
    retired: Vec<u64>,
}

impl Acked {
    fn take_line(&mut self, line: &str) {
        let p: Vec<&str> = line.split(' ').collect();
        match p.as_slice() {
            ["D", id, key] => {
                self.messages.insert(id.parse().unwrap(), key.to_string());
            }
            ["Q", id, key] => {
                self.queued.insert(id.parse().unwrap(), key.to_string());
            }
            ["U", id, n] => {
                self.attempts
                    .insert(id.parse().unwrap(), n.parse().unwrap());
            }
            ["R", id] => self.retired.push(id.parse().unwrap()),
            _ => {} // test harness output
        }
    }

    fn check(&self, dir: &Path) {
        let s = Store::open(dir).unwrap();
        for (id, key) in &self.messages {
            let got = s
                .message_bytes(MessageId(*id))
                .unwrap_or_else(|e| panic!("message {id} ({key}): {e}"));
            assert!(got == gen(key), "message {id} ({key}) differs");
        }
        let retired: std::collections::BTreeSet<u64> = s
            .queue_retired(usize::MAX)
            .unwrap()
            .into_iter()
            .map(|r| r.entry.id.0)
            .collect();
        for (id, key) in &self.queued {
            if self.retired.contains(id) {
                assert!(retired.contains(id), "retired entry {id} lost");
                assert!(
                    s.queue_get(QueueId(*id)).unwrap().is_none(),
                    "retired entry {id} still queued"
                );
                continue;
            }
            let Some(e) = s.queue_get(QueueId(*id)).unwrap() else {
                // The child retires the second recipient right after adding it; a kill
                // between that retire's commit and its "R" line leaves it retired but not
                // acknowledged as such.
                assert!(retired.contains(id), "queue entry {id} ({key}) lost");
                continue;
            };
            assert!(
                s.queue_message(e.msg_id).unwrap() == gen(key),
                "queued message {id} differs"
            );
            if let Some(n) = self.attempts.get(id) {
                assert!(e.attempts >= *n, "update of {id} lost");
            }
        }
        drop(s);
        let v = verify(dir);
        assert!(v.is_ok(), "verify: {:#?}", v.problems);
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn crash_consistency() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let round = std::env::var("RMOX_CRASH_ROUND").unwrap_or_default();
        child(Path::new(&dir), &round);
        return;
    }
    let seed: u64 = std::env::var("RMOX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_1234_abcd);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut rng = Rng(seed | 1);
    let mut acked = Acked::default();
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let mut orphans_seen = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_consistency",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &dir)
            .env("RMOX_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = 3 + rng.next(120);
        let mut seen = 0;
        while seen < kill_after {
            match lines.next() {
                Some(Ok(l)) => {
                    if l.starts_with(['D', 'Q', 'U', 'R']) {
                        seen += 1;
                    }
                    acked.take_line(&l);
                }
                _ => break,
            }
        }
        std::thread::sleep(Duration::from_micros(rng.next(3000)));
        child.kill().unwrap();
        child.wait().unwrap();
        // Everything printed before the kill was acknowledged.
        for l in lines.map_while(Result::ok) {
            acked.take_line(&l);
        }
        acked.check(&dir);
        orphans_seen += verify(&dir).orphans.len();
        eprintln!(
            "round {round}: {} messages, {} queue entries acknowledged so far, {orphans_seen} orphans seen",
            acked.messages.len(),
            acked.queued.len()
        );
    }
    assert!(
        acked.messages.len() as u64 > ROUNDS,
        "the child stored too little to test anything"
    );
    assert!(!acked.queued.is_empty());
    eprintln!("crash test took {:?}", start.elapsed());
}
