//! The PostgreSQL backend against the storage model: the model-based check the redb store
//! passes (`rmox_storage::testing::check`, operation sequences decoded from random bytes,
//! every answer and the whole observable state compared after every step; `Reopen` opens
//! the store again on the same database), plus scenario tests.
//!
//! PostgreSQL comes from `RMOX_TEST_PG_URL` (e.g. `host=127.0.0.1 port=54329 user=postgres
//! dbname=postgres`; `storage-pg/pg-up.sh` starts one). Unset, the tests fail when `CI` is
//! set and are skipped (saying so) otherwise. Each test (each proptest case) works in a
//! database of its own, created here and dropped at the end. `RMOX_PG_CASES` sets the
//! number of model cases (default 32).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

mod common;

use common::{delivery, rcpt, server, TestDb};
use proptest::prelude::*;
use rmox_core::UnixTime;
use rmox_storage::testing::check::{check_backend, ops_from_bytes, CheckBackend};
use rmox_storage::{MailStore, Outcome, StoreError, Suppression};
use rmox_storage_pg::PgStore;

impl CheckBackend for TestDb {
    fn open(&mut self) -> Result<Box<dyn MailStore>, String> {
        TestDb::open(self)
            .map(|s| Box::new(s) as Box<dyn MailStore>)
            .map_err(|e| format!("open: {e}"))
    }
}

fn cases() -> u32 {
    std::env::var("RMOX_PG_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// The same model check as storage/tests/model.rs, on PostgreSQL.
    #[test]
    fn postgres_matches_model(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let Some(server) = server() else { return Ok(()) };
        let mut db = TestDb::new(&server);
        let ops = ops_from_bytes(&data);
        if let Err(e) = check_backend(&mut db, &ops) {
            panic!("{e}\nops: {ops:#?}");
        }
    }
}

/// Delivery stores head and body, counts usage, indexes; the quota refuses what would go
/// over and stores nothing; an unknown account is refused.
#[test]
fn deliver_and_quota() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let s = db.open().unwrap();
    s.account_add("a", "example.org").unwrap();
    assert!(matches!(
        s.account_add("a", "example.org"),
        Err(StoreError::AccountExists(_))
    ));
    let id = s
        .deliver(delivery("a", b"Subject: hi\r\n\r\nbody\r\n", 100))
        .unwrap();
    assert_eq!(
        s.message_bytes(id).unwrap(),
        b"Received: x\r\nSubject: hi\r\n\r\nbody\r\n"
    );
    let used = s.account_usage("a").unwrap();
    assert_eq!(used, 13 + 21);
    assert_eq!(
        s.count_since(
            "a",
            rmox_storage::IndexKind::MailFrom,
            "bob@example.org",
            UnixTime(0)
        )
        .unwrap(),
        1
    );
    assert_eq!(
        s.count_since(
            "a",
            rmox_storage::IndexKind::Network,
            "192.0.2.64/26",
            UnixTime(101)
        )
        .unwrap(),
        0
    );
    s.account_set_quota("a", Some(used + 20)).unwrap();
    match s.deliver(delivery("a", b"12345678", 101)) {
        Err(StoreError::QuotaExceeded { used: u, size, .. }) => {
            assert_eq!((u, size), (used, 21));
        }
        r => panic!("expected QuotaExceeded, got {r:?}"),
    }
    assert_eq!(s.messages("a").unwrap().len(), 1);
    assert!(matches!(
        s.deliver(delivery("nobody", b"x", 1)),
        Err(StoreError::NoAccount(_))
    ));
    s.expunge(id).unwrap();
    assert_eq!(s.account_usage("a").unwrap(), 0);
    assert!(matches!(s.message_bytes(id), Err(StoreError::NoMessage(_))));
}

/// deliver_and_queue is all or nothing: a refused delivery queues nothing.
#[test]
fn deliver_and_queue_all_or_nothing() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let s = db.open().unwrap();
    s.account_add("a", "example.org").unwrap();
    let r = s.deliver_and_queue(
        vec![delivery("a", b"one", 1), delivery("missing", b"two", 1)],
        b"dsn",
        vec![rcpt("x@example.com", 0)],
    );
    assert!(matches!(r, Err(StoreError::NoAccount(_))), "{r:?}");
    assert!(s.messages("a").unwrap().is_empty());
    assert!(s.queue_due(UnixTime(100), 10).unwrap().is_empty());
    let (m, q) = s
        .deliver_and_queue_ids(
            vec![delivery("a", b"one", 1)],
            b"dsn",
            vec![rcpt("x@example.com", 0)],
        )
        .unwrap();
    assert_eq!((m.len(), q.len()), (1, 1));
}

/// Queue: add, due in order, update, retire (the message goes with its last entry).
#[test]
fn queue_add_due_retire() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let s = db.open().unwrap();
    let ids = s
        .queue_add(
            b"msg",
            vec![rcpt("x@example.com", 5), rcpt("y@example.com", 3)],
        )
        .unwrap();
    assert_eq!(ids.len(), 2);
    let due: Vec<_> = s
        .queue_due(UnixTime(10), 10)
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(due, vec![ids[1], ids[0]]);
    assert_eq!(s.queue_due(UnixTime(4), 10).unwrap().len(), 1);
    assert_eq!(s.queue_next_due().unwrap(), Some(UnixTime(3)));
    let e = s
        .queue_update_with(ids[1], Box::new(|e| e.rcpt.next_attempt = UnixTime(50)))
        .unwrap();
    assert_eq!(e.rcpt.next_attempt, UnixTime(50));
    assert_eq!(s.queue_next_due().unwrap(), Some(UnixTime(5)));
    let msg_id = e.msg_id;
    s.queue_retire(ids[0], Outcome::Delivered("250 ok".into()), UnixTime(7))
        .unwrap();
    assert_eq!(s.queue_message(msg_id).unwrap(), b"msg");
    s.queue_retire(ids[1], Outcome::Failed("550 no".into()), UnixTime(8))
        .unwrap();
    assert!(s.queue_message(msg_id).is_err());
    assert!(matches!(
        s.queue_retire(ids[1], Outcome::Failed("550 no".into()), UnixTime(9)),
        Err(StoreError::NoQueueEntry(_))
    ));
    let retired = s.queue_retired(10).unwrap();
    assert_eq!(retired.len(), 2);
    assert_eq!(retired[0].entry.id, ids[1]);
    assert_eq!(s.queue_next_due().unwrap(), None);
    assert!(matches!(
        s.queue_add(b"msg", vec![]),
        Err(StoreError::Invalid(_))
    ));
}

/// Suppressions are case-insensitive; removal says whether the address was there.
#[test]
fn suppression_case_insensitive() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let s = db.open().unwrap();
    s.suppression_add(
        "a",
        Suppression {
            address: "X@Example.COM".into(),
            reason: "bounced".into(),
            manual: false,
            created: UnixTime(1),
        },
    )
    .unwrap();
    assert!(s.is_suppressed("a", "x@example.com").unwrap());
    assert!(s.is_suppressed("a", "X@EXAMPLE.com").unwrap());
    assert!(!s.is_suppressed("b", "x@example.com").unwrap());
    assert_eq!(s.suppressions("a").unwrap()[0].address, "x@example.com");
    assert!(s.suppression_remove("a", "x@EXAMPLE.com").unwrap());
    assert!(!s.suppression_remove("a", "x@example.com").unwrap());
    assert!(!s.is_suppressed("a", "x@example.com").unwrap());
}

/// Opening again migrates nothing; a database from a newer rmox is refused.
#[test]
fn migrations_versioned() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    drop(db.open().unwrap());
    drop(db.open().unwrap());
    let mut c = db.config.connect(postgres::NoTls).unwrap();
    let versions: Vec<i64> = c
        .query("SELECT version FROM rmox_schema ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        versions,
        (1..=rmox_storage_pg::SCHEMA_VERSION).collect::<Vec<_>>()
    );
    c.execute("INSERT INTO rmox_schema (version) VALUES (9999)", &[])
        .unwrap();
    assert!(matches!(
        db.open(),
        Err(StoreError::SchemaTooNew { found: 9999, .. })
    ));
}

/// Two nodes (two stores on one database) leasing due entries at once never get the same
/// entry while its lease runs; an entry whose lease ended (its node died) goes to the other
/// node; recording a result ends the lease.
#[test]
fn queue_leases_between_nodes() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let a = std::sync::Arc::new(db.open().unwrap());
    let b = std::sync::Arc::new(db.open().unwrap());
    a.account_add("a", "example.org").unwrap();
    const N: usize = 60;
    for i in 0..N {
        a.queue_add(
            b"Subject: x\r\n\r\nx\r\n",
            vec![rcpt(&format!("r{i}@example.com"), 10)],
        )
        .unwrap();
    }
    let take = |s: std::sync::Arc<PgStore>, node: &'static str| {
        std::thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..N {
                let l = s.queue_lease(node, UnixTime(100), 60, 4).unwrap();
                if l.is_empty() {
                    break;
                }
                got.extend(l.into_iter().map(|e| e.id));
            }
            got
        })
    };
    let (ta, tb) = (take(a.clone(), "node-a"), take(b.clone(), "node-b"));
    let (ga, gb) = (ta.join().unwrap(), tb.join().unwrap());
    let mut all: Vec<_> = ga.iter().chain(gb.iter()).copied().collect();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!(
        (n, all.len()),
        (N, N),
        "each entry leased once: a {ga:?} b {gb:?}"
    );
    assert_eq!(
        a.queue_lease_of(ga[0]).unwrap().map(|(n, t)| (n, t.0)),
        Some(("node-a".to_string(), 160))
    );
    // During the leases nothing is due for anyone; after them (node-a died) node-b
    // takes node-a's entries.
    assert!(b
        .queue_lease("node-b", UnixTime(159), 60, 100)
        .unwrap()
        .is_empty());
    let again: Vec<_> = b
        .queue_lease("node-b", UnixTime(160), 60, 1000)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(again.len(), N);
    // Recording the attempt's result ends the lease.
    let id = again[0];
    b.queue_update_with(
        id,
        Box::new(|e: &mut rmox_storage::QueueEntry| e.rcpt.next_attempt = UnixTime(500)),
    )
    .unwrap();
    assert_eq!(b.queue_lease_of(id).unwrap(), None);
    // At 499 the other entries' leases (to 220) are over, this one is not due yet.
    let at499: Vec<_> = a
        .queue_lease("node-a", UnixTime(499), 60, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(at499.len(), N - 1);
    assert!(!at499.contains(&id));
    let at500: Vec<_> = a
        .queue_lease("node-a", UnixTime(500), 60, 100)
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(at500, vec![id]);
    assert!(matches!(
        a.queue_lease("node-a", UnixTime(500), 0, 1),
        Err(StoreError::Invalid(_))
    ));
}

/// What the backend cannot do says so.
#[test]
fn unsupported_is_an_error() {
    let Some(server) = server() else { return };
    let db = TestDb::new(&server);
    let s = db.open().unwrap();
    let e = s.backup(std::path::Path::new("/nonexistent")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("not supported by the postgres backend: "),
        "{e}"
    );
    assert!(matches!(
        s.maildir_junk_sync("a"),
        Err(StoreError::Unsupported { .. })
    ));
}
