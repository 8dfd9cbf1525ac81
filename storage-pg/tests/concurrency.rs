//! Several nodes and threads on one database: queue claims and leases between nodes,
//! shared counters, and the group commit of deliveries (one transaction and one commit for
//! many callers, a refused job failing alone, a lost connection failing its batch).
//!
//! PostgreSQL as in `conformance.rs` (`RMOX_TEST_PG_URL`; each test has its own database).
//! Commits per delivery are printed (`--nocapture`), never asserted as timing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{delivery, inconsistency, rcpt, server, TestDb};
use rmox_core::UnixTime;
use rmox_storage::{
    Attempt, MailStore, MessageId, QueueEntry, QueueId, QueueRecord, StoreError, TaskLeases,
};
use rmox_storage_pg::PgOptions;

fn ids(v: &[QueueEntry]) -> BTreeSet<QueueId> {
    v.iter().map(|e| e.id).collect()
}

/// Options refuse an empty node name and a lease that is not positive.
#[test]
fn options_validated() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    assert!(matches!(db.open_node("", 60), Err(StoreError::Invalid(_))));
    assert!(matches!(db.open_node("a", 0), Err(StoreError::Invalid(_))));
    assert!(matches!(db.open_node("a", -5), Err(StoreError::Invalid(_))));
    let s = db.open_node("a", 1).unwrap();
    assert_eq!(s.node(), "a");
    assert_eq!(PgOptions::default().node, "rmox");
    assert_eq!(PgOptions::default().lease_secs, 600);
}

/// Two nodes claiming the same 60 due entries from several threads each: every entry goes
/// to one node; the other gets none of them while the leases run and all of them once the
/// leases ran out; a recorded change ends a lease; held and rescheduled entries are not
/// claimed; each node's `queue_due` leaves out the other's live leases.
#[test]
fn claims_between_nodes() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let a = Arc::new(db.open_node("a", 60).unwrap());
    let b = Arc::new(db.open_node("b", 60).unwrap());
    const N: usize = 60;
    for i in 0..N {
        a.queue_add(
            b"Subject: x\r\n\r\nx\r\n",
            vec![rcpt(&format!("r{i}@example.com"), 10)],
        )
        .unwrap();
    }
    let listed: Vec<(QueueId, UnixTime)> = a
        .queue_due(UnixTime(100), 1000)
        .unwrap()
        .iter()
        .map(|e| (e.id, e.rcpt.next_attempt))
        .collect();
    assert_eq!(listed.len(), N);
    let all: BTreeSet<QueueId> = listed.iter().map(|(id, _)| *id).collect();

    // 4 threads per node, each claiming the whole list in chunks of 5, from its own start.
    let mut handles = Vec::new();
    for (node, s) in [("a", &a), ("b", &b)] {
        for k in 0..4 {
            let s = Arc::clone(s);
            let mut mine = listed.clone();
            mine.rotate_left(k * 13 % N);
            if k % 2 == 1 {
                mine.reverse();
            }
            handles.push(std::thread::spawn(move || {
                let mut got = BTreeSet::new();
                for chunk in mine.chunks(5) {
                    got.extend(ids(&s.queue_claim(chunk, UnixTime(100)).unwrap()));
                }
                (node, got)
            }));
        }
    }
    let (mut ga, mut gb) = (BTreeSet::new(), BTreeSet::new());
    for h in handles {
        let (node, got) = h.join().unwrap();
        if node == "a" { &mut ga } else { &mut gb }.extend(got);
    }
    eprintln!("claimed: a {} b {}", ga.len(), gb.len());
    assert!(ga.is_disjoint(&gb), "an entry claimed by both nodes");
    assert_eq!(ga.union(&gb).copied().collect::<BTreeSet<_>>(), all);
    for id in &ga {
        let (node, until) = a.queue_lease_of(*id).unwrap().unwrap();
        assert_eq!((node.as_str(), until), ("a", UnixTime(160)));
    }

    // Before the leases end, each node sees and claims its own entries only (its own
    // leases come back to it: a restarted node takes them back at once).
    assert_eq!(ids(&b.queue_claim(&listed, UnixTime(159)).unwrap()), gb);
    assert_eq!(ids(&b.queue_due(UnixTime(159), 1000).unwrap()), gb);
    assert_eq!(ids(&a.queue_due(UnixTime(159), 1000).unwrap()), ga);
    // b renewed its leases to 219; a's end at 160, and then b takes a's entries.
    assert_eq!(ids(&a.queue_claim(&listed, UnixTime(160)).unwrap()), ga);
    assert_eq!(ids(&b.queue_claim(&listed, UnixTime(219)).unwrap()), gb);
    assert_eq!(ids(&b.queue_claim(&listed, UnixTime(220)).unwrap()), all);
    assert!(a.queue_claim(&listed, UnixTime(221)).unwrap().is_empty());
    assert!(a.queue_due(UnixTime(221), 1000).unwrap().is_empty());

    // Recording a change ends the lease: queue_update_with and queue_record_with.
    let order: Vec<QueueId> = listed.iter().map(|(id, _)| *id).collect();
    let (u, r, h, late) = (order[0], order[1], order[2], order[3]);
    b.queue_update_with(u, Box::new(|e: &mut QueueEntry| e.attempts += 1))
        .unwrap();
    b.queue_record_with(
        vec![QueueRecord {
            id: r,
            change: Box::new(|e: &mut QueueEntry| e.attempts += 1),
            retire: None,
            streak: None,
            webhook: None,
        }],
        Vec::new(),
        UnixTime(230),
    )
    .unwrap();
    assert_eq!(b.queue_lease_of(u).unwrap(), None);
    assert_eq!(b.queue_lease_of(r).unwrap(), None);
    let got = a
        .queue_claim(
            &[(u, UnixTime(10)), (h, UnixTime(10)), (r, UnixTime(10))],
            UnixTime(231),
        )
        .unwrap();
    assert_eq!(
        got.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![u, r],
        "in the order given"
    );
    assert_eq!(got[0].attempts, 1);

    // Held entries are never claimed, by anyone, at any time.
    a.queue_hold(h).unwrap();
    for s in [&a, &b] {
        assert!(s
            .queue_claim(&[(h, UnixTime(10))], UnixTime(10_000))
            .unwrap()
            .is_empty());
    }
    // An entry rescheduled past the time it was listed with is not claimed at that time.
    a.queue_update_with(
        late,
        Box::new(|e: &mut QueueEntry| e.rcpt.next_attempt = UnixTime(500)),
    )
    .unwrap();
    assert!(a
        .queue_claim(&[(late, UnixTime(10))], UnixTime(10_000))
        .unwrap()
        .is_empty());
    assert_eq!(
        ids(&a
            .queue_claim(&[(late, UnixTime(500))], UnixTime(500))
            .unwrap()),
        BTreeSet::from([late])
    );
    // An entry gone is not claimed.
    a.queue_drop(late).unwrap();
    assert!(b
        .queue_claim(&[(late, UnixTime(500))], UnixTime(10_000))
        .unwrap()
        .is_empty());
    assert!(a.queue_claim(&[], UnixTime(0)).unwrap().is_empty());
}

/// An entry another node leases is due when the lease ends, not at its next attempt (or
/// a runner would wake in a busy loop for entries it cannot take); a note in the history
/// keeps the lease, a recorded change ends it.
#[test]
fn next_due_counts_other_nodes_leases() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let a = db.open_node("a", 60).unwrap();
    let b = db.open_node("b", 60).unwrap();
    let id = a.queue_add(b"m", vec![rcpt("x@example.com", 10)]).unwrap()[0];
    assert_eq!(b.queue_next_due().unwrap(), Some(UnixTime(10)));
    assert_eq!(
        ids(&a.queue_claim(&[(id, UnixTime(10))], UnixTime(100)).unwrap()),
        BTreeSet::from([id])
    );
    assert_eq!(b.queue_next_due().unwrap(), Some(UnixTime(160)));
    assert_eq!(a.queue_next_due().unwrap(), Some(UnixTime(10)));
    assert!(b.queue_due(UnixTime(159), 10).unwrap().is_empty());
    assert_eq!(
        ids(&b.queue_due(UnixTime(160), 10).unwrap()),
        BTreeSet::from([id])
    );
    let later = a.queue_add(b"m", vec![rcpt("y@example.com", 300)]).unwrap()[0];
    assert_eq!(b.queue_next_due().unwrap(), Some(UnixTime(160)));
    assert!(a
        .queue_note(
            id,
            Attempt {
                time: UnixTime(101),
                host: "returned".into(),
                result: "a note".into(),
                tls_mode: None,
                tls_result: None,
            },
        )
        .unwrap());
    assert_eq!(
        a.queue_lease_of(id).unwrap(),
        Some(("a".into(), UnixTime(160)))
    );
    a.queue_update_with(
        id,
        Box::new(|e: &mut QueueEntry| e.rcpt.next_attempt = UnixTime(400)),
    )
    .unwrap();
    assert_eq!(b.queue_next_due().unwrap(), Some(UnixTime(300)));
    // A lease later than the next attempt, on an entry due earlier than the others.
    assert_eq!(
        ids(&b
            .queue_claim(&[(later, UnixTime(300))], UnixTime(350))
            .unwrap()),
        BTreeSet::from([later])
    );
    assert_eq!(a.queue_next_due().unwrap(), Some(UnixTime(400)));
    assert_eq!(b.queue_next_due().unwrap(), Some(UnixTime(300)));
    a.queue_hold(id).unwrap();
    assert_eq!(a.queue_next_due().unwrap(), Some(UnixTime(410)));
}

/// Counters shared by two nodes and many threads stay exact: outgoing records and their
/// first-time recipients, delivery counts, and an account's usage near its quota (never
/// over, and equal to the sizes of what was accepted).
#[test]
fn shared_counters_exact() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let stores: [Arc<dyn MailStore>; 2] = [
        Arc::new(db.open_node("a", 60).unwrap()),
        Arc::new(db.open_node("b", 60).unwrap()),
    ];
    rmox_storage::testing::shared::counters_under_concurrency(&stores);
    assert_eq!(inconsistency(&mut db.connect()), None);
}

/// 16 threads delivering at once: every delivery gets its own id and its bytes back; the
/// commits are shared (printed: commits per delivery).
#[test]
fn group_commit_many_threads() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let s = Arc::new(db.open().unwrap());
    s.account_add("g", "example.org").unwrap();
    const THREADS: usize = 16;
    const EACH: usize = 40;
    let before = s.group_stats();
    let started = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                let mut got: Vec<(MessageId, Vec<u8>)> = Vec::new();
                let mut queued: Vec<(QueueId, Vec<u8>)> = Vec::new();
                for n in 0..EACH {
                    let msg = format!("Subject: t{t} n{n}\r\n\r\n{}\r\n", "b".repeat(t * 37 + n));
                    let m = msg.as_bytes();
                    match n % 4 {
                        0 => {
                            let (mi, qi) = s
                                .deliver_and_queue_ids(
                                    vec![delivery("g", m, 5)],
                                    m,
                                    vec![rcpt(&format!("t{t}n{n}@example.com"), 9)],
                                )
                                .unwrap();
                            got.push((mi[0], m.to_vec()));
                            queued.push((qi[0], m.to_vec()));
                        }
                        1 => {
                            let v = s
                                .deliver_many(vec![delivery("g", m, 5), delivery("g", m, 6)])
                                .unwrap();
                            got.extend(v.into_iter().map(|id| (id, m.to_vec())));
                        }
                        _ => got.push((s.deliver(delivery("g", m, 5)).unwrap(), m.to_vec())),
                    }
                }
                (got, queued)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut queued = Vec::new();
    for h in handles {
        let (g, q) = h.join().unwrap();
        all.extend(g);
        queued.extend(q);
    }
    let took = started.elapsed();
    let after = s.group_stats();
    let calls = (THREADS * EACH) as u64;
    let commits = after.commits - before.commits;
    eprintln!(
        "group commit: {THREADS} threads x {EACH} writes = {calls} calls ({} messages, {} queued) \
         in {commits} commits: {:.3} commits per call, {:.1} calls per commit ({took:?})",
        all.len(),
        queued.len(),
        commits as f64 / calls as f64,
        calls as f64 / commits.max(1) as f64,
    );
    assert_eq!(after.jobs - before.jobs, calls);
    assert_eq!(after.pending, 0);
    let distinct: BTreeSet<MessageId> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(distinct.len(), all.len(), "ids distinct");
    for (id, m) in &all {
        let mut want = b"Received: x\r\n".to_vec();
        want.extend_from_slice(m);
        assert_eq!(&s.message_bytes(*id).unwrap(), &want, "message {id:?}");
    }
    for (id, m) in &queued {
        let e = s.queue_get(*id).unwrap().expect("queued entry");
        assert_eq!(&s.queue_message(e.msg_id).unwrap(), m);
    }
    assert_eq!(s.messages("g").unwrap().len(), all.len());
    assert_eq!(inconsistency(&mut db.connect()), None);
}

/// Waits (bounded) until `f` holds.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A batch made deterministic: the first caller's batch waits on an account row the test
/// locks, while 7 more callers queue up; they then share one transaction and one commit,
/// in which the delivery over quota and the one to no account fail alone and the others
/// are stored.
#[test]
fn group_commit_batch_refusals_alone() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let s = Arc::new(db.open().unwrap());
    s.account_add("a", "example.org").unwrap();
    s.account_add("q", "example.org").unwrap();
    s.account_set_quota("q", Some(150)).unwrap();
    let mut blocker = db.connect();
    let mut tx = blocker.transaction().unwrap();
    tx.query(
        "SELECT 1 FROM rmox_accounts WHERE name = 'a' FOR UPDATE",
        &[],
    )
    .unwrap();
    let before = s.group_stats();
    let spawn = |account: &'static str, n: usize| {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            let msg = format!("Subject: {n:02}\r\n\r\n{}\r\n", "y".repeat(70));
            assert_eq!(msg.len() + 13, 100);
            let r = s.deliver(delivery(account, msg.as_bytes(), 1));
            (account, n, msg, r)
        })
    };
    let first = spawn("a", 0);
    let mut watch = db.connect();
    wait_until("the first batch waits for the row lock", || {
        let r = watch
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap();
        r.get::<_, i64>(0) == 1
    });
    let mut rest = Vec::new();
    for (i, account) in ["a", "a", "q", "a", "q", "nobody", "a"]
        .into_iter()
        .enumerate()
    {
        rest.push(spawn(account, i + 1));
    }
    wait_until("7 jobs wait behind the first batch", || {
        s.group_stats().pending == 7
    });
    tx.commit().unwrap();
    let mut results = vec![first.join().unwrap()];
    results.extend(rest.into_iter().map(|h| h.join().unwrap()));
    let after = s.group_stats();
    eprintln!(
        "deterministic batch: {} jobs in {} commits",
        after.jobs - before.jobs,
        after.commits - before.commits
    );
    assert_eq!(
        after.commits - before.commits,
        2,
        "one commit for the first job, one for the 7"
    );
    assert_eq!(after.jobs - before.jobs, 8);
    let (mut ok_q, mut over_q) = (0, 0);
    for (account, n, msg, r) in results {
        match (account, r) {
            ("a", Ok(id)) => {
                let mut want = b"Received: x\r\n".to_vec();
                want.extend_from_slice(msg.as_bytes());
                assert_eq!(s.message_bytes(id).unwrap(), want);
            }
            ("q", Ok(_)) => ok_q += 1,
            (
                "q",
                Err(StoreError::QuotaExceeded {
                    used: 100,
                    size: 100,
                    quota: 150,
                    ..
                }),
            ) => over_q += 1,
            ("nobody", Err(StoreError::NoAccount(a))) => assert_eq!(a, "nobody"),
            (account, r) => panic!("job {n} to {account}: {r:?}"),
        }
    }
    assert_eq!((ok_q, over_q), (1, 1));
    assert_eq!(s.messages("a").unwrap().len(), 5);
    assert_eq!(s.account_usage("a").unwrap(), 500);
    assert_eq!(s.account_usage("q").unwrap(), 100);
    assert_eq!(inconsistency(&mut db.connect()), None);
}

/// A batch whose connection is lost fails every one of its jobs (none was committed), and
/// the store goes on with a new connection.
#[test]
fn group_commit_lost_connection_fails_the_batch() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let s = Arc::new(db.open().unwrap());
    s.account_add("a", "example.org").unwrap();
    let mut blocker = db.connect();
    let mut tx = blocker.transaction().unwrap();
    tx.query(
        "SELECT 1 FROM rmox_accounts WHERE name = 'a' FOR UPDATE",
        &[],
    )
    .unwrap();
    let mut watch = db.connect();
    let mut waiting = move |kill: bool| {
        let sql = if kill {
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'"
        } else {
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'"
        };
        watch.query_one(sql, &[]).unwrap().get::<_, i64>(0)
    };
    let spawn = |n: usize| {
        let s = Arc::clone(&s);
        std::thread::spawn(move || {
            let msg = format!("Subject: {n}\r\n\r\nx\r\n");
            s.deliver(delivery("a", msg.as_bytes(), 1))
        })
    };
    let first = spawn(0);
    wait_until("the batch waits for the row lock", || waiting(false) == 1);
    assert_eq!(waiting(true), 1);
    let r = first.join().unwrap();
    assert!(matches!(r, Err(StoreError::Backend { .. })), "{r:?}");
    // Three jobs in the next batch, which loses its connection too.
    let first = spawn(1);
    wait_until("the batch waits for the row lock", || waiting(false) == 1);
    let rest: Vec<_> = (2..5).map(spawn).collect();
    wait_until("3 jobs wait", || s.group_stats().pending == 3);
    assert_eq!(waiting(true), 1);
    assert!(matches!(
        first.join().unwrap(),
        Err(StoreError::Backend { .. })
    ));
    wait_until("the batch of 3 waits for the row lock", || {
        waiting(false) == 1
    });
    assert_eq!(s.group_stats().pending, 0);
    assert_eq!(waiting(true), 1);
    for h in rest {
        let r = h.join().unwrap();
        assert!(matches!(r, Err(StoreError::Backend { .. })), "{r:?}");
    }
    tx.commit().unwrap();
    assert_eq!(s.group_stats().commits, 0);
    assert!(s.messages("a").unwrap().is_empty());
    assert_eq!(s.account_usage("a").unwrap(), 0);
    let id = s.deliver(delivery("a", b"after", 2)).unwrap();
    assert_eq!(s.message_bytes(id).unwrap(), b"Received: x\r\nafter");
    assert_eq!(inconsistency(&mut db.connect()), None);
}

/// Background tasks (report senders, webhook POSTs) run on one node at a time: the first
/// node to ask holds the task until its lease runs out, renewing extends it, the other
/// node gets it only after the end; tasks are independent; from 8 threads of two nodes
/// racing for a fresh task, exactly one node wins.
#[test]
fn task_leases_one_node_at_a_time() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let a = Arc::new(db.open_node("a", 600).unwrap());
    let b = Arc::new(db.open_node("b", 600).unwrap());
    let t = |s: i64| UnixTime(1_000_000 + s);
    assert!(a.task_lease("reports", t(0), 60).unwrap());
    assert!(!b.task_lease("reports", t(1), 60).unwrap());
    assert!(
        a.task_lease("reports", t(30), 60).unwrap(),
        "renewed by its holder"
    );
    assert!(
        !b.task_lease("reports", t(89), 60).unwrap(),
        "renewal moved the end to 90"
    );
    assert!(
        b.task_lease("webhooks", t(89), 60).unwrap(),
        "another task is free"
    );
    assert!(
        b.task_lease("reports", t(90), 60).unwrap(),
        "run out: b takes it"
    );
    assert!(!a.task_lease("reports", t(91), 60).unwrap());
    assert!(a.task_lease("reports", t(91), 0).is_err());

    let winners: Vec<bool> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let st = if i % 2 == 0 { &a } else { &b };
                s.spawn(move || st.task_lease("race", t(0), 60).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let a_won = winners.iter().step_by(2).any(|w| *w);
    let b_won = winners.iter().skip(1).step_by(2).any(|w| *w);
    assert!(
        a_won != b_won,
        "exactly one node holds the task: {winners:?}"
    );
}
