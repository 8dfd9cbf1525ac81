//! Exact crash points (next to the SIGKILL test in crash.rs): a small workload runs on a
//! store whose redb file is a simulated backend and whose message-file operations go
//! through a hook, both counting I/O operations; for every N, a run crashes at the N-th
//! and the power-loss and process-crash images must recover to the state before or after
//! the operation in flight, verify clean, and keep working
//! (`rmox_storage::testing::points`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

use rmox_storage::testing::check::{Msg, Op, Rcpt, To};
use rmox_storage::testing::points::check_crash_points;

/// Images opened with the real file backend (real fsyncs: slow) at every N-th crash point,
/// in memory otherwise; `RMOX_CRASH_REAL_EVERY=1` opens all for real.
fn real_every() -> u64 {
    std::env::var("RMOX_CRASH_REAL_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

fn to(account: u8, mailbox: u8) -> To {
    To {
        account,
        mailbox,
        ip: account,
        from: 0,
        time: 5,
    }
}

fn rcpt(to: u8, hold: bool) -> Rcpt {
    Rcpt {
        to,
        sender: Some(0),
        next: 3,
        hold,
        is_dsn: false,
    }
}

/// Deliveries (one, shared to three mailboxes, with a DSN queued in the same commit, two
/// refused; three more as an async runtime's thread makes them, one refused),
/// queue add / update / hold / retire, expunge, suppression, failure streak, counts, and a
/// reopen in the middle.
fn workload() -> Vec<Op> {
    let m = |seed, len| Msg { seed, len };
    vec![
        Op::AccountAdd(0),
        Op::AccountAdd(1),
        Op::Deliver(to(0, 0), m(1, 3)),
        // Refused (no such account): its log record is cancelled.
        Op::Deliver(to(2, 0), m(8, 1)),
        // As an async runtime's thread delivers: led by the commit thread; a message file
        // written by the caller (syncfs mode), one refused (its file removed), one inline.
        Op::DeliverSoon(to(0, 1), m(10, 4)),
        Op::DeliverSoon(to(2, 0), m(11, 4)),
        Op::DeliverSoon(to(1, 1), m(12, 2)),
        Op::DeliverMany(vec![to(0, 1), to(1, 0), to(1, 2)], m(2, 4), true),
        Op::QueueAdd(m(3, 3), vec![rcpt(0, false), rcpt(2, false)]),
        Op::QueueUpdate { entry: 0, next: 7 },
        Op::DeliverAndQueue(vec![to(1, 0)], m(4, 2), m(5, 2), vec![rcpt(3, true)]),
        Op::QueueRetire {
            entry: 1,
            delivered: true,
            time: 9,
        },
        Op::Reopen,
        // Refused (over quota) between deliveries that are not.
        Op::SetQuota(1, Some(0)),
        Op::Deliver(to(1, 0), m(9, 2)),
        Op::SetQuota(1, None),
        Op::Expunge(0),
        Op::SuppressionAdd {
            account: 0,
            addr: 1,
            manual: false,
            time: 3,
        },
        Op::FailureStreak {
            account: 0,
            addr: 2,
            failed: true,
        },
        Op::CountsAdd {
            day: 1,
            adds: vec![(0, 1, 100)],
        },
        Op::QueueRelease(1),
        Op::QueueFailWithDsn {
            entry: 1,
            time: 11,
            dsn: m(7, 2),
            to: Some(to(0, 1)),
            back: rcpt(1, false),
        },
        Op::QueueRetire {
            entry: 0,
            delivered: false,
            time: 12,
        },
        Op::QueueRetire {
            entry: 0,
            delivered: true,
            time: 13,
        },
        Op::Deliver(to(0, 0), m(6, 1)),
    ]
}

/// Batches make their message files durable with one `syncfs` (Linux default).
#[test]
fn every_crash_point_recovers_syncfs() {
    let rep = check_crash_points(&workload(), false, None, real_every())
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{rep:?}");
    assert!(rep.points > 50, "{rep:?}");
    assert_eq!(rep.images, 2 * rep.points);
    // Acknowledged deliveries were only in the acceptance log at many crash points, and
    // replays were crashed too.
    assert!(rep.log_pending > 10, "{rep:?}");
    assert!(rep.replay_crashed > 1 && rep.replay_points > 10, "{rep:?}");
}

/// Each message file fsynced by its writer, each touched directory by the committer
/// (`RMOX_STORAGE_FSYNC=file`, other systems).
#[test]
fn every_crash_point_recovers_per_file_fsync() {
    let rep =
        check_crash_points(&workload(), true, None, real_every()).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{rep:?}");
    assert!(rep.points > 50, "{rep:?}");
    assert!(rep.log_pending > 10 && rep.replay_crashed > 1, "{rep:?}");
}

/// Found by the crash points: a crash while a new data directory's database was being
/// created (the first start) left a partly written `index.db` that redb refuses ("not a
/// redb database: magic number mismatch"), so rmox could not start again until an
/// operator deleted it. The database is now created under a temporary name and renamed
/// into place once initialised.
#[test]
fn crash_while_creating_the_database_recovers() {
    for per_file in [false, true] {
        let rep = check_crash_points(&[], per_file, None, 1).unwrap_or_else(|e| panic!("{e}"));
        assert!(rep.points > 3, "{rep:?}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: std::env::var("RMOX_CRASH_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        ..Default::default()
    })]

    /// Random workloads (the model test's operations, reopen included) crashed at a random
    /// I/O operation, in both fsync modes (the cargo-fuzz target `storage_crash`).
    #[test]
    fn random_workload_random_crash_point(
        data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
        point in proptest::prelude::any::<u64>(),
        per_file in proptest::prelude::any::<bool>(),
    ) {
        let ops = rmox_storage::testing::check::ops_from_bytes(&data);
        if let Err(e) = check_crash_points(&ops, per_file, Some(point), 4) {
            panic!("{e}\nops: {ops:#?}");
        }
    }
}

/// Three writers sharing group commits, crashed at every third I/O operation, in both
/// fsync modes: acknowledged writes survive, deliveries are all or nothing.
#[test]
fn concurrent_writers_crash_points() {
    for per_file in [false, true] {
        let rep = rmox_storage::testing::points::check_concurrent_crash_points(per_file, 3, 6, 3)
            .unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{rep:?}");
        assert!(rep.images > 20, "{rep:?}");
    }
}

/// Found by the concurrent crash points: a writer whose message needed a new shard
/// directory (`msg/0`) found it already created by another writer that had not yet
/// fsynced the parent (`msg`), wrote its file there, fsynced only the shard directory and
/// committed. A power loss before the other writer's fsync lost the shard directory with
/// the acknowledged message in it. Here a hook holds the creating writer just before that
/// fsync while the second writer stores; the power-loss image taken once the second writer
/// has its `Ok` must hold its message.
#[test]
fn message_in_a_shard_directory_not_yet_durable() {
    use rmox_core::UnixTime;
    use rmox_storage::testing::crash::{Crash, Image};
    use rmox_storage::testing::{register_file_hook, FileHook, FileOp};
    use rmox_storage::{Delivery, Flags, MessageInfo, Store};
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    /// Holds the first fsync of `msg` (the parent of a new shard) until released.
    struct Gate {
        sim: Crash,
        state: Mutex<(bool, bool, bool)>, // (armed, at gate, released)
        cv: Condvar,
    }
    impl FileHook for Gate {
        fn run(
            &self,
            op: &FileOp<'_>,
            real: &mut dyn FnMut() -> std::io::Result<()>,
        ) -> std::io::Result<()> {
            if let FileOp::SyncDir(p) = op {
                let mut st = self.state.lock().unwrap();
                if st.0 && p.ends_with("msg") {
                    st.0 = false;
                    st.1 = true;
                    self.cv.notify_all();
                    // With the fix the other writer waits for this one: do not wait forever.
                    let (g, _) = self
                        .cv
                        .wait_timeout_while(st, Duration::from_secs(2), |s| !s.2)
                        .unwrap();
                    drop(g);
                }
            }
            self.sim.run(op, real)
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let data = root.join("data");
    let sim = Crash::new(&root, None);
    let gate = Arc::new(Gate {
        sim: sim.clone(),
        state: Mutex::new((false, false, false)),
        cv: Condvar::new(),
    });
    let hook = register_file_hook(&root, gate.clone());
    let s = Arc::new(Store::open_with_backend(&data, sim.backend(), true).unwrap());
    s.account_add("a", "example.org").unwrap();
    gate.state.lock().unwrap().0 = true;
    // Messages with files of their own (larger than INLINE_BODY_MAX).
    let big = |c: u8| -> &'static [u8] {
        Box::leak(vec![c; rmox_storage::INLINE_BODY_MAX + 1].into_boxed_slice())
    };
    let (first_msg, second_msg) = (big(b'1'), big(b'2'));
    let d = |m: &'static [u8]| Delivery {
        account: "a".into(),
        mailbox: "Inbox".into(),
        head: &[],
        message: m,
        flags: Flags::default(),
        received: UnixTime(1),
        info: MessageInfo::default(),
    };
    let first = {
        let s = Arc::clone(&s);
        std::thread::spawn(move || s.deliver(d(first_msg)).unwrap())
    };
    {
        let st = gate.state.lock().unwrap();
        drop(gate.cv.wait_while(st, |s| !s.1).unwrap());
    }
    let id = s.deliver(d(second_msg)).unwrap();
    // Power loss now: the second message was acknowledged.
    let img = tempfile::tempdir().unwrap();
    sim.write_image(Image::Durable, &data, img.path());
    gate.state.lock().unwrap().2 = true;
    gate.cv.notify_all();
    first.join().unwrap();
    drop(s);
    drop(hook);
    let r = Store::open(&img.path().join("data")).unwrap();
    assert_eq!(r.message_bytes(id).unwrap(), second_msg);
}
