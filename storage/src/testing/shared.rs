//! A backend's counters under concurrency, one check for every backend: the send-limit
//! counts (outgoing messages, first-time recipients), the per-network delivery counts and
//! an account's usage near its quota, written from several threads on each of several
//! handles of one store (the embedded store: the same store twice; a shared one: one
//! handle per node). Every count must come out exact, usage never over the quota and equal
//! to what was accepted.

use std::sync::Arc;

use rmox_core::UnixTime;

use crate::{Delivery, Flags, MailStore, MessageInfo, StoreError};

/// The quota of the account the check fills.
pub const QUOTA: u64 = 10_000;
/// Threads per handle.
pub const THREADS: usize = 4;
/// Rounds per thread.
pub const ROUNDS: usize = 25;

/// Runs the check over `stores` (handles of one store, at least one); panics with what
/// differs.
pub fn counters_under_concurrency(stores: &[Arc<dyn MailStore>]) {
    assert!(!stores.is_empty(), "no store to check");
    stores[0].account_add("q", "example.org").unwrap();
    stores[0].account_set_quota("q", Some(QUOTA)).unwrap();
    let mut handles = Vec::new();
    for s in stores {
        for t in 0..THREADS {
            let s = Arc::clone(s);
            handles.push(std::thread::spawn(move || {
                let mut accepted = 0u64;
                for i in 0..ROUNDS {
                    s.record_outgoing(
                        "out",
                        &[
                            format!("R{}@Example.com", i % 10),
                            format!("s{}@example.net", (i + t) % 5),
                        ],
                        UnixTime(1000 + i as i64),
                    )
                    .unwrap();
                    s.delivery_counts_add(
                        7,
                        vec![
                            ("192.0.2.0/24".into(), 1, 100),
                            (format!("net{}", i % 3), 2, 10),
                        ],
                    )
                    .unwrap();
                    // 13 bytes of head and 87 of message: 100 bytes.
                    let msg = format!("Subject: {t:02} {i:02}\r\n\r\n{}\r\n", "x".repeat(67));
                    assert_eq!(msg.len(), 87);
                    let d = Delivery {
                        account: "q".into(),
                        mailbox: "Inbox".into(),
                        head: b"Received: x\r\n",
                        message: msg.as_bytes(),
                        flags: Flags::default(),
                        received: UnixTime(1),
                        info: MessageInfo {
                            remote_ip: "192.0.2.77".parse().ok(),
                            mail_from: Some("Bob@Example.ORG".into()),
                            ..Default::default()
                        },
                    };
                    match s.deliver(d) {
                        Ok(_) => accepted += 100,
                        Err(StoreError::QuotaExceeded { .. }) => {}
                        Err(e) => panic!("deliver: {e}"),
                    }
                }
                accepted
            }));
        }
    }
    let accepted: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let s = &stores[stores.len() - 1];
    let writers = (stores.len() * THREADS) as u64;
    let calls = writers * ROUNDS as u64;
    assert_eq!(s.count_outgoing("out", UnixTime(0)).unwrap(), (calls, 15));
    assert_eq!(
        s.count_outgoing("out", UnixTime(1000 + ROUNDS as i64 - 1))
            .unwrap()
            .0,
        writers
    );
    assert!(s.has_sent_to("out", "r3@example.com").unwrap());
    assert_eq!(
        s.delivery_counts(7, "192.0.2.0/24").unwrap(),
        (calls, calls * 100)
    );
    for (n, times) in [(0u64, 9u64), (1, 8), (2, 8)] {
        let k = times * writers;
        assert_eq!(
            s.delivery_counts(7, &format!("net{n}")).unwrap(),
            (2 * k, 10 * k)
        );
    }
    assert_eq!(
        accepted, QUOTA,
        "every 100 bytes that fit were accepted, no more"
    );
    assert_eq!(s.account_usage("q").unwrap(), accepted);
    assert_eq!(s.messages("q").unwrap().len() as u64, accepted / 100);
}
