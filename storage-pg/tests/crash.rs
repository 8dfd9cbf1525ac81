//! A writer killed with SIGKILL at random moments loses nothing it acknowledged: this test
//! binary runs itself again as a child (`RMOX_CRASH_DB` set) that delivers and queues from
//! 4 threads through the group commit and prints each acknowledged id after its `Ok`; the
//! parent kills it at seeded random moments (8 rounds), then checks that every
//! acknowledged message and queue entry is there with its exact bytes and that the store
//! is consistent (usage is the sum of the sizes of the stored messages, and so on).
//!
//! `RMOX_CRASH_SEED` sets the seed (printed). PostgreSQL as in `conformance.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{delivery, inconsistency, rcpt, server, TestDb};
use rmox_core::UnixTime;
use rmox_storage::{MailStore, MessageId, QueueId};
use rmox_storage_pg::{PgOptions, PgStore};

const ROUNDS: u64 = 8;
const THREADS: u64 = 4;
/// A child never runs longer than this, even when nobody kills it.
const CHILD_LIMIT: Duration = Duration::from_secs(60);

/// splitmix64: the kill moments from a seed.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The message a child's thread `t` writes as its `n`th in round `round`.
fn message(round: u64, t: u64, n: u64) -> Vec<u8> {
    let fill = (round * 7919 + t * 131 + n * 17) % 3000;
    format!(
        "Subject: round {round} thread {t} n {n}\r\n\r\n{}\r\n",
        "z".repeat(fill as usize)
    )
    .into_bytes()
}

/// The child: writes until killed (or [`CHILD_LIMIT`]). Does nothing in a normal run.
#[test]
fn sigkill_child() {
    let Ok(dbname) = std::env::var("RMOX_CRASH_DB") else {
        return;
    };
    let round: u64 = std::env::var("RMOX_CRASH_ROUND").unwrap().parse().unwrap();
    let mut config: rmox_storage_pg::Config =
        std::env::var("RMOX_TEST_PG_URL").unwrap().parse().unwrap();
    config.dbname(&dbname);
    let s = std::sync::Arc::new(PgStore::open_config(config, PgOptions::default()).unwrap());
    let started = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || {
                let mut n = 0;
                while started.elapsed() < CHILD_LIMIT {
                    let m = message(round, t, n);
                    if n % 3 == 0 {
                        let (mi, qi) = s
                            .deliver_and_queue_ids(
                                vec![delivery("k", &m, 1)],
                                &m,
                                vec![rcpt("x@example.com", 5)],
                            )
                            .unwrap();
                        println!("ack m {} {round} {t} {n}", mi[0].0);
                        println!("ack q {} {round} {t} {n}", qi[0].0);
                    } else {
                        let id = s.deliver(delivery("k", &m, 1)).unwrap();
                        println!("ack m {} {round} {t} {n}", id.0);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

/// The parent: kills children at random moments and checks what they acknowledged.
#[test]
fn sigkill_loses_no_acknowledged_write() {
    if std::env::var_os("RMOX_CRASH_DB").is_some() {
        return;
    }
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    {
        let s = db.open().unwrap();
        s.account_add("k", "example.org").unwrap();
    }
    let seed: u64 = std::env::var("RMOX_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x726d_6f78);
    eprintln!("seed {seed} (RMOX_CRASH_SEED)");
    let mut rng = seed;
    let exe = std::env::current_exe().unwrap();
    let mut messages: Vec<(MessageId, Vec<u8>)> = Vec::new();
    let mut queued: Vec<(QueueId, Vec<u8>)> = Vec::new();
    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "sigkill_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("RMOX_CRASH_DB", &db.name)
            .env("RMOX_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            // Only whole lines: the kill may cut the last one.
            let mut r = BufReader::new(out);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if line.ends_with('\n') && tx.send(line.trim_end().to_string()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        // The first acknowledgement shows the child writing; the kill comes 0-400 ms later.
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lines.iter().any(|l: &String| l.starts_with("ack ")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(e) => {
                    let _ = child.kill();
                    panic!("round {round}: no acknowledgement from the child ({e})");
                }
            }
        }
        let delay = Duration::from_millis(next(&mut rng) % 400);
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        reader.join().unwrap();
        lines.extend(rx.try_iter());
        let before = messages.len() + queued.len();
        for l in lines.iter().filter(|l| l.starts_with("ack ")) {
            let f: Vec<&str> = l.split(' ').collect();
            let [_, kind, id, r, t, n] = f[..] else {
                panic!("bad line {l:?}");
            };
            let id: u64 = id.parse().unwrap();
            let m = message(r.parse().unwrap(), t.parse().unwrap(), n.parse().unwrap());
            match kind {
                "m" => messages.push((MessageId(id), m)),
                "q" => queued.push((QueueId(id), m)),
                _ => panic!("bad line {l:?}"),
            }
        }
        eprintln!(
            "round {round}: killed after {delay:?} ({status}), {} acknowledged",
            messages.len() + queued.len() - before
        );
        assert!(
            !status.success(),
            "round {round}: the child ended by itself"
        );
    }
    let s = db.open().unwrap();
    for (id, m) in &messages {
        let mut want = b"Received: x\r\n".to_vec();
        want.extend_from_slice(m);
        assert_eq!(
            s.message_bytes(*id)
                .unwrap_or_else(|e| panic!("acknowledged {id:?}: {e}")),
            want,
            "message {id:?}"
        );
    }
    for (id, m) in &queued {
        let e = s.queue_get(*id).unwrap().expect("acknowledged queue entry");
        assert_eq!(&s.queue_message(e.msg_id).unwrap(), m);
    }
    let stored = s.messages("k").unwrap().len();
    eprintln!(
        "{} messages and {} queue entries acknowledged, {stored} messages stored",
        messages.len(),
        queued.len()
    );
    assert!(stored >= messages.len());
    assert!(s.queue_due(UnixTime(10), 1_000_000).unwrap().len() >= queued.len());
    assert_eq!(inconsistency(&mut db.connect()), None);
}
