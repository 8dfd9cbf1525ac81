use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize};
use std::time::Duration;

use rmox_core::queue::QueueConfigBuilder;
use rmox_core::smtp::Reply;

use rmox_storage::{QueueFilter, Store};

use super::cli::{execute, Op};
use super::*;

thread_local! {
    /// The runtime the runners of this test use (set by `on_every_runtime!`).
    static RT: std::cell::Cell<Option<Runtime>> = const { std::cell::Cell::new(None) };
}

/// Runs test `f` with its runners on runtime `rt`.
pub(crate) fn with_rt(rt: Runtime, f: fn()) {
    RT.with(|c| c.set(Some(rt)));
    f();
}

/// Whether glommio runs here; says why not.
#[cfg(all(feature = "glommio", target_os = "linux"))]
pub(crate) fn glommio_works() -> bool {
    match rmox_runtime_glommio::io_uring_available() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipping: glommio/io_uring unavailable here: {e}");
            false
        }
    }
}

/// Instantiates each named test (a plain `fn()`) once per runtime compiled in: the runner
/// loop and SMTP delivery run on tokio, smol and glommio alike.
macro_rules! on_every_runtime {
    ($($name:ident),* $(,)?) => {
        #[cfg(feature = "tokio")]
        mod on_tokio {
            $(
                #[test]
                fn $name() {
                    crate::queue::tests::with_rt(crate::rt::Runtime::Tokio, super::$name)
                }
            )*
        }
        #[cfg(feature = "smol")]
        mod on_smol {
            $(
                #[test]
                fn $name() {
                    crate::queue::tests::with_rt(crate::rt::Runtime::Smol, super::$name)
                }
            )*
        }
        #[cfg(all(feature = "glommio", target_os = "linux"))]
        mod on_glommio {
            $(
                #[test]
                fn $name() {
                    if crate::queue::tests::glommio_works() {
                        crate::queue::tests::with_rt(crate::rt::Runtime::Glommio, super::$name)
                    }
                }
            )*
        }
    };
}

on_every_runtime!(
    wakeup_and_stop,
    workers_key_sets_parallel_deliveries,
    smtp_source_address,
    smtp_end_to_end_delivery_tempfail_kick_permfail,
    smtp_connection_refused_and_null_mx,
    harness_postfix_and_peers,
    shutdown_waits_for_deliveries_in_flight,
    backlog_spares_a_read_per_delivery,
    smtp_reuses_connections,
);

const T0: i64 = 1_700_000_000;

fn config(dir: &Path, localserve: bool, extra: &str) -> Arc<Config> {
    let text = format!(
        r#"
hostname = "mail.mox.example"
data_dir = "data"
localserve = {localserve}
[domain."mox.example"]
[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}
[postmaster]
account = "mjl"
mailbox = "Inbox"
{extra}
"#
    );
    Arc::new(Config::parse(&text, &dir.join("rmox.toml")).unwrap())
}

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    config: Arc<Config>,
    clock: Arc<AtomicI64>,
}

fn env(localserve: bool, extra: &str) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), localserve, extra);
    let store = Arc::new(Store::open(&config.data_dir()).unwrap());
    store.account_add("mjl", "mox.example").unwrap();
    Env {
        _dir: dir,
        store,
        config,
        clock: Arc::new(AtomicI64::new(T0)),
    }
}

impl Env {
    fn clock(&self) -> Clock {
        let c = Arc::clone(&self.clock);
        Arc::new(move || UnixTime(c.load(Ordering::SeqCst)))
    }

    fn now(&self) -> UnixTime {
        UnixTime(self.clock.load(Ordering::SeqCst))
    }

    fn advance(&self, secs: i64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }

    /// A runner over the queue's own SMTP connector resolving with `dns`.
    fn dns_runner(&self, dns: crate::resolve::Dns) -> Arc<Runner> {
        let store = self.store.clone() as Arc<dyn MailStore>;
        let connector = Runner::connector_for(&self.config, &store, Some(dns), 3).unwrap();
        self.runner(connector)
    }

    fn runner(&self, connector: impl Into<Deliverer>) -> Arc<Runner> {
        let qc = QueueConfigBuilder {
            jitter: 0.0,
            backoff: vec![Duration::from_secs(60)],
            max_attempts: 3,
            delayed_dsn_after_attempt: 2,
            ..QueueConfigBuilder::default()
        }
        .build()
        .unwrap();
        let r = Runner::new(
            self.store.clone(),
            Arc::clone(&self.config),
            connector,
            7,
            self.clock(),
        )
        .with_queue_config(qc)
        .with_runtime(RT.with(|c| c.get()).unwrap_or_else(Runtime::one_off));
        Arc::new(r)
    }

    fn queue(&self, from: &str, to: &[&str]) -> Vec<QueueId> {
        let rcpts = to
            .iter()
            .map(|r| QueueRecipient {
                sender_account: Some("mjl".into()),
                mail_from: from.into(),
                recipient: (*r).into(),
                has_8bit: false,
                smtputf8: false,
                requiretls: RequireTls::Default,
                transport: None,
                next_attempt: self.now(),
                queued: self.now(),
                hold: false,
                dsn: rmox_storage::DsnParams::default(),
                is_dsn: false,
                from_id: None,
            })
            .collect();
        self.store
            .queue_add(
                b"Subject: test\r\nFrom: <mjl@mox.example>\r\n\r\nhello\r\n",
                rcpts,
            )
            .unwrap()
    }

    fn inbox(&self) -> Vec<String> {
        self.store
            .messages("mjl")
            .unwrap()
            .into_iter()
            .map(|m| String::from_utf8(self.store.message_bytes(m.id).unwrap()).unwrap())
            .collect()
    }

    fn retired(&self, id: QueueId) -> Option<Outcome> {
        self.store
            .queue_retired(1000)
            .unwrap()
            .into_iter()
            .find(|r| r.entry.id == id)
            .map(|r| r.outcome)
    }
}

/// Canned outcomes by recipient local part: `temp*` temporary, `perm*` permanent 550
/// 5.1.1, `later*` temporary and `flaky*` permanent 554 5.7.0 (not a suppressing reply)
/// until `accept_later` is set, else delivered.
#[derive(Default)]
struct Fake {
    calls: AtomicUsize,
    accept_later: AtomicBool,
    batch_sizes: Mutex<Vec<usize>>,
}

impl Connector for Fake {
    fn deliver(&self, job: &Job<'_>) -> Vec<AttemptResult> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.batch_sizes.lock().unwrap().push(job.items.len());
        assert_eq!(job.items.len(), job.entries.len());
        job.items
            .iter()
            .map(|i| {
                let lp = i.recipient.split('@').next().unwrap();
                let later = lp.starts_with("later") && !self.accept_later.load(Ordering::SeqCst);
                if lp.starts_with("temp") || later {
                    AttemptResult::Temporary(Failure::from_reply(
                        "mx.example.net",
                        Reply::new(451, Enhanced::parse("4.3.0"), "try later"),
                    ))
                } else if lp.starts_with("flaky") && !self.accept_later.load(Ordering::SeqCst) {
                    AttemptResult::Permanent(Failure::from_reply(
                        "mx.example.net",
                        Reply::new(554, Enhanced::parse("5.7.0"), "rejected"),
                    ))
                } else if lp.starts_with("perm") {
                    AttemptResult::Permanent(Failure::from_reply(
                        "mx.example.net",
                        Reply::new(550, Enhanced::parse("5.1.1"), "no such user"),
                    ))
                } else {
                    AttemptResult::from_reply(
                        "mx.example.net",
                        Reply::new(250, Enhanced::parse("2.0.0"), "ok"),
                        false,
                    )
                }
            })
            .collect()
    }
}

#[test]
fn mapping_from_storage() {
    let e = env(false, "");
    let id = e.queue("mjl@mox.example", &["a@Example.NET"])[0];
    e.store
        .queue_update(id, |q| {
            q.rcpt.requiretls = RequireTls::NotRequired;
            q.rcpt.dsn = rmox_storage::DsnParams {
                envid: Some("env1".into()),
                ret_full: Some(true),
                notify: vec!["SUCCESS".into(), "FAILURE".into()],
                orcpt: Some("rfc822;a@example.net".into()),
            };
        })
        .unwrap();
    let entry = e.store.queue_get(id).unwrap().unwrap();
    let it = to_item(&entry);
    assert_eq!(it.id, id.0);
    assert_eq!(it.recipient_domain, "example.net");
    assert_eq!(it.requiretls, Some(false));
    assert_eq!(it.dsn.envid.as_deref(), Some("env1"));
    assert_eq!(it.dsn.ret, Some(Ret::Full));
    let n = it.dsn.notify.unwrap();
    assert!(n.success && n.failure && !n.delay && !n.never);
    assert_eq!(
        it.dsn.orcpt,
        Some(("rfc822".to_string(), "a@example.net".to_string()))
    );
    assert_eq!(it.sender_account.as_deref(), Some("mjl"));
    assert_eq!(it.next_attempt, UnixTime(T0));
    let cases: &[(&[&str], Option<Notify>)] = &[
        (&[], None),
        (
            &["never"],
            Some(Notify {
                never: true,
                ..Notify::default()
            }),
        ),
        (
            &["DELAY"],
            Some(Notify {
                delay: true,
                ..Notify::default()
            }),
        ),
    ];
    for (words, want) in cases {
        let w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        assert_eq!(notify_of(&w), *want, "{words:?}");
    }
}

#[test]
fn delivered_and_combined() {
    let e = env(false, "");
    let fake = Arc::new(Fake::default());
    let r = e.runner(fake.clone());
    let ids = e.queue(
        "mjl@mox.example",
        &["a@example.net", "b@example.net", "c@other.net"],
    );
    assert_eq!(r.run_once(e.now()).unwrap(), 2);
    let mut sizes = fake.batch_sizes.lock().unwrap().clone();
    sizes.sort();
    assert_eq!(sizes, vec![1, 2], "same domain in one transaction");
    for id in ids {
        assert!(e.store.queue_get(id).unwrap().is_none());
        assert!(matches!(e.retired(id), Some(Outcome::Delivered(_))));
    }
    assert!(e.inbox().is_empty(), "no DSN without NOTIFY=SUCCESS");
    assert_eq!(r.run_once(e.now()).unwrap(), 0);
}

#[test]
fn retries_delay_dsn_then_failure_dsn() {
    let e = env(false, "");
    let fake = Arc::new(Fake::default());
    let r = e.runner(fake.clone());
    let id = e.queue("mjl@mox.example", &["temp@example.net"])[0];
    r.run_once(e.now()).unwrap();
    let q = e.store.queue_get(id).unwrap().unwrap();
    assert_eq!(q.attempts, 1);
    assert_eq!(q.history.len(), 1);
    assert_eq!(q.history[0].host, "mx.example.net");
    assert!(q.history[0].result.contains("451 4.3.0 try later"));
    assert_eq!(q.rcpt.next_attempt, UnixTime(T0 + 60));
    // Not due before its time.
    e.advance(59);
    assert_eq!(r.run_once(e.now()).unwrap(), 0);
    assert!(e.inbox().is_empty());
    e.advance(1);
    assert_eq!(r.run_once(e.now()).unwrap(), 1);
    let inbox = e.inbox();
    assert_eq!(inbox.len(), 1, "delay DSN after attempt 2");
    assert!(inbox[0].contains("Action: delayed"), "{}", inbox[0]);
    assert!(inbox[0].contains("To: <mjl@mox.example>"));
    e.advance(60);
    r.run_once(e.now()).unwrap();
    assert!(e.store.queue_get(id).unwrap().is_none());
    assert!(matches!(e.retired(id), Some(Outcome::Failed(_))));
    let inbox = e.inbox();
    assert_eq!(inbox.len(), 2);
    assert!(inbox[1].contains("Action: failed"), "{}", inbox[1]);
    assert!(inbox[1].contains("451 4.3.0 try later"));
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    // Temporary failures do not suppress.
    assert!(e.store.suppressions("mjl").unwrap().is_empty());
}

#[test]
fn permanent_failure_dsn_and_suppression() {
    let e = env(false, "");
    let fake = Arc::new(Fake::default());
    let r = e.runner(fake.clone());
    let id = e.queue("mjl@mox.example", &["perm@example.net"])[0];
    r.run_once(e.now()).unwrap();
    assert!(matches!(e.retired(id), Some(Outcome::Failed(t)) if t.contains("550 5.1.1")));
    let inbox = e.inbox();
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].contains("Final-Recipient: rfc822; perm@example.net"));
    assert!(inbox[0].contains("From: <postmaster@mox.example>"));
    assert!(e.store.is_suppressed("mjl", "PERM@example.net").unwrap());
    // The next message to it fails at once, without an attempt.
    let id2 = e.queue("mjl@mox.example", &["perm@example.net"])[0];
    r.run_once(e.now()).unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert!(matches!(e.retired(id2), Some(Outcome::Failed(t)) if t.contains("suppression")));
    assert_eq!(e.inbox().len(), 2);
}

/// An account with an outgoing webhook gets one hook per event, stored with the attempt:
/// delivered, delayed, failed (suppressing), suppressed, canceled; DSNs and accounts
/// without webhooks get none.
#[test]
fn webhooks_for_every_outgoing_event() {
    let e = env(
        false,
        "[account.mjl.webhooks]\noutgoing_url = \"http://127.0.0.1:9/out\"\nsecret = \"0123456789abcdef\"\n",
    );
    let fake = Arc::new(Fake::default());
    let r = e.runner(fake.clone());
    let ids = e.queue(
        "mjl@mox.example",
        &["ok@example.net", "temp@example.net", "perm@example.net"],
    );
    r.run_once(e.now()).unwrap();
    let again = e.queue("mjl@mox.example", &["perm@example.net"])[0];
    r.run_once(e.now()).unwrap();
    let dropped = e.queue("mjl@mox.example", &["held@example.net"])[0];
    e.store.queue_hold(dropped).unwrap();
    execute(
        &e.config,
        &(e.store.clone() as Arc<dyn MailStore>),
        Op::Drop(dropped.0),
        None,
    )
    .unwrap();
    let hooks = e.store.webhooks().unwrap();
    let got: Vec<(String, u64, bool, u64)> = hooks
        .iter()
        .map(|h| {
            let p: serde_json::Value = serde_json::from_str(&h.payload).unwrap();
            assert_eq!(h.url, "http://127.0.0.1:9/out");
            assert_eq!(p["Subject"], "test");
            assert_eq!(p["Event"], h.event.as_str());
            (
                h.event.clone(),
                p["QueueMsgID"].as_u64().unwrap(),
                p["Suppressing"].as_bool().unwrap(),
                p["SMTPCode"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut want = vec![
        ("delivered".to_string(), ids[0].0, false, 0),
        ("delayed".to_string(), ids[1].0, false, 451),
        ("failed".to_string(), ids[2].0, true, 550),
        ("suppressed".to_string(), again.0, false, 0),
        ("canceled".to_string(), dropped.0, false, 0),
    ];
    let mut got_sorted = got.clone();
    got_sorted.sort_by_key(|g| g.1);
    want.sort_by_key(|w| w.1);
    assert_eq!(got_sorted, want, "{hooks:?}");
    // The DSNs about the failures were delivered locally, not hooked as outgoing mail.
    assert_eq!(hooks.len(), 5);
}

#[test]
fn three_failed_deliveries_in_a_row_suppress() {
    let e = env(false, "");
    let fake = Arc::new(Fake::default());
    let r = e.runner(fake.clone());
    let send = |n: usize| {
        let id = e.queue("mjl@mox.example", &["flaky@example.net"])[0];
        r.run_once(e.now()).unwrap();
        assert_eq!(fake.calls.load(Ordering::SeqCst), n, "attempted");
        e.retired(id)
    };
    // Two failures, then a delivery ends the streak.
    for n in 1..=2 {
        assert!(matches!(send(n), Some(Outcome::Failed(t)) if t.contains("554 5.7.0")));
        assert!(!e.store.is_suppressed("mjl", "flaky@example.net").unwrap());
    }
    assert_eq!(
        e.store.failure_streak("mjl", "flaky@example.net").unwrap(),
        2
    );
    fake.accept_later.store(true, Ordering::SeqCst);
    assert!(matches!(send(3), Some(Outcome::Delivered(_))));
    assert_eq!(
        e.store.failure_streak("mjl", "flaky@example.net").unwrap(),
        0
    );
    fake.accept_later.store(false, Ordering::SeqCst);
    // Three failures in a row: suppressed after the third.
    for n in 4..=5 {
        assert!(matches!(send(n), Some(Outcome::Failed(_))));
        assert!(!e.store.is_suppressed("mjl", "flaky@example.net").unwrap());
    }
    assert!(matches!(send(6), Some(Outcome::Failed(_))));
    let sup = e.store.suppressions("mjl").unwrap();
    assert_eq!(sup.len(), 1);
    assert!(
        sup[0].reason.contains("3 failed deliveries in a row"),
        "{sup:?}"
    );
    assert!(sup[0].reason.contains("554 5.7.0"), "{sup:?}");
    // The next message fails at once without an attempt; other senders' streaks differ.
    let id = e.queue("mjl@mox.example", &["flaky@example.net"])[0];
    r.run_once(e.now()).unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 6);
    assert!(matches!(e.retired(id), Some(Outcome::Failed(t)) if t.contains("suppression")));
    // Temporary failures that end in a retry do not count.
    let t = e.queue("mjl@mox.example", &["temp@example.net"])[0];
    r.run_once(e.now()).unwrap();
    assert!(e.store.queue_get(t).unwrap().is_some());
    assert_eq!(
        e.store.failure_streak("mjl", "temp@example.net").unwrap(),
        0
    );
}

#[test]
fn remote_sender_gets_queued_dsn_and_no_dsn_for_dsn() {
    let e = env(false, "");
    let fake = Arc::new(Fake::default());
    let r = e.runner(fake.clone());
    let id = e.queue("someone@remote.example", &["perm@example.net"])[0];
    r.run_once(e.now()).unwrap();
    assert!(e.retired(id).is_some());
    let q = e.store.queue_list(&QueueFilter::default()).unwrap();
    assert_eq!(q.len(), 1, "DSN queued");
    let dsn = &q[0];
    assert!(dsn.rcpt.is_dsn);
    assert_eq!(dsn.rcpt.mail_from, "");
    assert_eq!(dsn.rcpt.recipient, "someone@remote.example");
    let body = String::from_utf8(e.store.queue_message(dsn.msg_id).unwrap()).unwrap();
    assert!(body.contains("multipart/report"));
    // The DSN bounces too (a perm recipient): no DSN about a DSN.
    e.store
        .queue_update(dsn.id, |q| q.rcpt.recipient = "perm@remote.example".into())
        .unwrap();
    r.run_once(e.now()).unwrap();
    assert!(e
        .store
        .queue_list(&QueueFilter::default())
        .unwrap()
        .is_empty());
    assert!(matches!(e.retired(dsn.id), Some(Outcome::Failed(_))));
    assert!(e.inbox().is_empty());
}

#[test]
fn holds_and_hold_rules() {
    let e = env(false, "");
    let fake = Arc::new(Fake::default());
    let r = e.runner(fake.clone());
    let rule = e
        .store
        .hold_rule_add(rmox_storage::HoldRule {
            recipient_domain: Some("held.example".into()),
            ..Default::default()
        })
        .unwrap();
    let ids = e.queue("mjl@mox.example", &["a@held.example", "b@example.net"]);
    assert!(e.store.queue_get(ids[0]).unwrap().unwrap().rcpt.hold);
    r.run_once(e.now()).unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert!(e.store.queue_get(ids[0]).unwrap().is_some());
    assert!(e.store.queue_get(ids[1]).unwrap().is_none());
    assert!(e.store.hold_rule_remove(rule).unwrap());
    e.store.queue_release(ids[0]).unwrap();
    r.run_once(e.now()).unwrap();
    assert!(matches!(e.retired(ids[0]), Some(Outcome::Delivered(_))));
}

#[test]
fn restart_picks_up_due_entries() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), false, "");
    let id = {
        let store = Arc::new(Store::open(&cfg.data_dir()).unwrap());
        store.account_add("mjl", "mox.example").unwrap();
        let e = Env {
            _dir: tempfile::tempdir().unwrap(),
            store,
            config: Arc::clone(&cfg),
            clock: Arc::new(AtomicI64::new(T0)),
        };
        let fake = Arc::new(Fake::default());
        let id = e.queue("mjl@mox.example", &["later@example.net"])[0];
        e.runner(fake).run_once(e.now()).unwrap();
        assert_eq!(e.store.queue_get(id).unwrap().unwrap().attempts, 1);
        id
    };
    // Reopen: the entry and its history are still there and delivered when due.
    let store = Arc::new(Store::open(&cfg.data_dir()).unwrap());
    let e = Env {
        _dir: dir,
        store,
        config: cfg,
        clock: Arc::new(AtomicI64::new(T0 + 60)),
    };
    let fake = Arc::new(Fake::default());
    fake.accept_later.store(true, Ordering::SeqCst);
    e.runner(fake.clone()).run_once(e.now()).unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    assert!(matches!(e.retired(id), Some(Outcome::Delivered(_))));
}

#[test]
fn localserve_delivers_back_and_special_localparts() {
    let e = env(true, "");
    let store = Arc::clone(&e.store);
    let connector = Arc::new(LocalserveConnector {
        store,
        config: Arc::clone(&e.config),
    });
    let r = e.runner(connector);
    let ok = e.queue("mjl@mox.example", &["anyone@elsewhere.example"])[0];
    let temp = e.queue("mjl@mox.example", &["queuetemperror@elsewhere.example"])[0];
    let perm = e.queue("mjl@mox.example", &["queuepermerror@elsewhere.example"])[0];
    let timeout = e.queue("mjl@mox.example", &["queuetimeout1@elsewhere.example"])[0];
    r.run_once(e.now()).unwrap();
    assert!(matches!(e.retired(ok), Some(Outcome::Delivered(_))));
    let q = e.store.queue_get(temp).unwrap().unwrap();
    assert!(q.last_error.unwrap().contains("451 4.3.0"));
    let q = e.store.queue_get(timeout).unwrap().unwrap();
    assert!(q.last_error.unwrap().contains("timeout"));
    assert!(matches!(e.retired(perm), Some(Outcome::Failed(_))));
    let inbox = e.inbox();
    assert_eq!(inbox.len(), 2, "the message itself and the DSN");
    assert!(inbox.iter().any(|m| m.starts_with("Subject: test")));
    assert!(inbox
        .iter()
        .any(|m| m.contains("queuepermerror@elsewhere.example") && m.contains("550 5.0.0")));
}

#[test]
fn cli_operations() {
    let e = env(false, "");
    let ids = e.queue(
        "mjl@mox.example",
        &["a@example.net", "b@example.net", "c@x.example"],
    );
    let run = |op| {
        execute(
            &e.config,
            &(e.store.clone() as Arc<dyn MailStore>),
            op,
            None,
        )
        .unwrap()
    };
    let list = run(Op::List {
        account: None,
        domain: Some("example.net".into()),
        held: false,
    });
    assert_eq!(list.len(), 2, "{list:?}");
    run(Op::Hold(ids[0].0));
    let held = run(Op::List {
        account: Some("mjl".into()),
        domain: None,
        held: true,
    });
    assert_eq!(held.len(), 1);
    assert!(held[0].starts_with(&format!("{} held", ids[0].0)));
    run(Op::Release(ids[0].0));
    assert!(!e.store.queue_get(ids[0]).unwrap().unwrap().rcpt.hold);
    run(Op::Drop(ids[1].0));
    assert!(e.store.queue_get(ids[1]).unwrap().is_none());
    assert!(e.retired(ids[1]).is_none(), "drop leaves no trace");
    run(Op::Fail(ids[2].0));
    assert!(matches!(e.retired(ids[2]), Some(Outcome::Failed(_))));
    let inbox = e.inbox();
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].contains("c@x.example") && inbox[0].contains("administrator"));
    assert_eq!(run(Op::RetiredList).len(), 1);
    assert!(execute(
        &e.config,
        &(e.store.clone() as Arc<dyn MailStore>),
        Op::Hold(9999),
        None
    )
    .is_err());
    let added = run(Op::HoldruleAdd {
        account: Some("mjl".into()),
        sender_domain: None,
        recipient_domain: None,
    });
    assert_eq!(added, vec!["hold rule 1 added".to_string()]);
    assert_eq!(run(Op::HoldruleList).len(), 1);
    run(Op::HoldruleRemove(1));
    assert!(run(Op::HoldruleList).is_empty());
    assert!(execute(
        &e.config,
        &(e.store.clone() as Arc<dyn MailStore>),
        Op::HoldruleRemove(1),
        None
    )
    .is_err());
    run(Op::SuppressionAdd("mjl".into(), "X@Example.com".into()));
    let s = run(Op::SuppressionList("mjl".into()));
    assert_eq!(s.len(), 1);
    assert!(s[0].starts_with("x@example.com"));
    run(Op::SuppressionRemove("mjl".into(), "x@example.com".into()));
    assert!(run(Op::SuppressionList("mjl".into())).is_empty());
    assert!(execute(
        &e.config,
        &(e.store.clone() as Arc<dyn MailStore>),
        Op::SuppressionAdd("nobody".into(), "a@b.c".into()),
        None
    )
    .is_err());
}

fn wakeup_and_stop() {
    let e = env(false, "");
    let fake = Arc::new(Fake::default());
    let r = e.runner(fake.clone());
    let w = Arc::clone(&r.wakeup);
    let h = Arc::clone(&r).spawn(2).unwrap();
    let id = e.queue("mjl@mox.example", &["a@example.net"])[0];
    w.notify();
    let mut delivered = false;
    for _ in 0..200 {
        if e.retired(id).is_some() {
            delivered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    h.stop();
    assert!(delivered, "runner delivered after wakeup");
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
}

/// Takes 300 ms per delivery; counts the deliveries started.
#[derive(Default)]
struct Slow {
    started: AtomicUsize,
}

impl Connector for Slow {
    fn deliver(&self, job: &Job<'_>) -> Vec<AttemptResult> {
        self.started.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        job.items
            .iter()
            .map(|_| {
                AttemptResult::from_reply(
                    "mx.example.net",
                    Reply::new(250, Enhanced::parse("2.0.0"), "ok"),
                    false,
                )
            })
            .collect()
    }
}

/// The server runs the runner as a task until shutdown: a delivery in flight when
/// shutdown triggers is finished and its result applied before the runner returns.
fn shutdown_waits_for_deliveries_in_flight() {
    struct Loop(Arc<Runner>, Arc<rmox_driver::Shutdown>);
    impl OnRuntime for Loop {
        type Output = ();
        async fn run<R: Net>(self, rt: R) {
            self.0.run(rt, 2, Some(self.1)).await
        }
    }
    let e = env(false, "");
    let slow = Arc::new(Slow::default());
    let r = e.runner(slow.clone());
    let id = e.queue("mjl@mox.example", &["a@example.net"])[0];
    let shutdown = rmox_driver::Shutdown::new();
    let rt = RT.with(|c| c.get()).unwrap_or_else(Runtime::one_off);
    let s = Arc::clone(&shutdown);
    let t = std::thread::spawn(move || rt.block_on(Loop(r, s)).unwrap());
    for _ in 0..500 {
        if slow.started.load(Ordering::SeqCst) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(slow.started.load(Ordering::SeqCst), 1, "delivery started");
    shutdown.trigger();
    t.join().unwrap();
    assert!(
        matches!(e.retired(id), Some(Outcome::Delivered(_))),
        "result applied before the runner returned"
    );
}

/// Counts deliveries in flight; each holds until three are in flight or 300 ms passed.
#[derive(Default)]
struct Gate {
    active: AtomicUsize,
    max: AtomicUsize,
    done: AtomicUsize,
}

impl Connector for Gate {
    fn deliver(&self, job: &Job<'_>) -> Vec<AttemptResult> {
        let n = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        let start = Instant::now();
        while self.active.load(Ordering::SeqCst) < 3 && start.elapsed() < Duration::from_millis(300)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.active.fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
        job.items
            .iter()
            .map(|_| {
                AttemptResult::from_reply(
                    "mx.example.net",
                    Reply::new(250, Enhanced::parse("2.0.0"), "ok"),
                    false,
                )
            })
            .collect()
    }
}

/// `[queue] workers` was documented with no test of its effect: with N workers, N batches
/// (one per destination domain) are delivered at the same time; with one, one at a time.
fn workers_key_sets_parallel_deliveries() {
    for workers in [1usize, 3] {
        let e = env(false, &format!("[queue]\nworkers = {workers}\n"));
        assert_eq!(e.config.queue.workers, workers);
        let gate = Arc::new(Gate::default());
        let r = e.runner(gate.clone());
        for d in ["a.example", "b.example", "c.example"] {
            e.queue("mjl@mox.example", &[&format!("x@{d}")]);
        }
        let w = Arc::clone(&r.wakeup);
        let h = Arc::clone(&r).spawn(e.config.queue.workers).unwrap();
        w.notify();
        for _ in 0..500 {
            if gate.done.load(Ordering::SeqCst) == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        h.stop();
        assert_eq!(gate.done.load(Ordering::SeqCst), 3, "workers = {workers}");
        assert_eq!(
            gate.max.load(Ordering::SeqCst),
            workers,
            "workers = {workers}"
        );
    }
}

/// The runner read and decoded up to 1000 due entries from storage after every delivery
/// while entries waited for a slot (4 per recipient domain): the main CPU cost per message
/// when many went to one destination. Now the entries it read and could not start yet (its
/// backlog) feed the next slots: 40 messages to one domain take far fewer reads.
fn backlog_spares_a_read_per_delivery() {
    let e = env(false, "");
    let fake = Arc::new(Fake::default());
    let r = e.runner(fake.clone());
    let ids: Vec<QueueId> = (0..40)
        .map(|i| e.queue("mjl@mox.example", &[&format!("x{i}@one.example")])[0])
        .collect();
    let w = Arc::clone(&r.wakeup);
    let h = Arc::clone(&r).spawn(4).unwrap();
    w.notify();
    for _ in 0..1000 {
        if ids.iter().all(|id| e.retired(*id).is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    h.stop();
    for id in &ids {
        assert!(
            matches!(e.retired(*id), Some(Outcome::Delivered(_))),
            "{id:?}: {:?}",
            e.retired(*id)
        );
    }
    assert_eq!(fake.calls.load(Ordering::SeqCst), 40);
    let reads = r.due_reads.load(Ordering::SeqCst);
    assert!(
        reads < 20,
        "{reads} reads of the due entries for 40 deliveries"
    );
}

/// Entries wait in the runner's backlog after they were read; one held, dropped or
/// rescheduled meanwhile (by the administrator) must not be delivered from the old copy.
#[test]
fn backlog_entries_changed_meanwhile_are_not_delivered() {
    let e = env(false, "");
    let r = e.runner(Arc::new(Fake::default()));
    let ids = e.queue(
        "mjl@mox.example",
        &["a@x.example", "b@x.example", "c@x.example", "d@x.example"],
    );
    let read = e.store.queue_due(e.now(), 100).unwrap();
    assert_eq!(read.len(), 4);
    e.store.queue_hold(ids[0]).unwrap();
    e.store
        .queue_retire(ids[1], Outcome::Dropped, e.now())
        .unwrap();
    let later = UnixTime(e.now().0 + 600);
    e.store
        .queue_update(ids[2], move |q| q.rcpt.next_attempt = later)
        .unwrap();
    let p = r.prepare(read).unwrap().unwrap();
    let left: Vec<u64> = p.items.iter().map(|i| i.id).collect();
    assert_eq!(left, [ids[3].0]);
    // Nothing left to deliver: no delivery at all.
    let read = vec![e.store.queue_get(ids[0]).unwrap().unwrap()];
    assert!(r.prepare(read).unwrap().is_none());
}

// ---- end to end over loopback SMTP ----

/// A small SMTP sink: `tempfail*` recipients get 451 until `accept` is set, `permfail*`
/// get 550 5.1.1, the rest 250; accepted messages are recorded.
/// (MAIL FROM, RCPT TOs, data) of each accepted message.
type Received = Arc<Mutex<Vec<(String, Vec<String>, String)>>>;

struct Sink {
    port: u16,
    accept: Arc<AtomicBool>,
    received: Received,
    /// The client address of every connection.
    peers: Arc<Mutex<Vec<std::net::IpAddr>>>,
}

fn sink() -> Sink {
    sink_on(TcpListener::bind("127.0.0.1:0").unwrap())
}

/// Binds the same port on ::1 and 127.0.0.1 (retrying when the port is taken on one);
/// `None` when the machine has no IPv6 loopback.
fn dual_listeners() -> Option<(TcpListener, TcpListener, u16)> {
    for _ in 0..20 {
        let Ok(l6) = TcpListener::bind("[::1]:0") else {
            return None;
        };
        let port = l6.local_addr().unwrap().port();
        if let Ok(l4) = TcpListener::bind(std::net::SocketAddr::from(([127, 0, 0, 1], port))) {
            return Some((l6, l4, port));
        }
    }
    None
}

/// A sink serving on `l`.
fn sink_on(l: TcpListener) -> Sink {
    let port = l.local_addr().unwrap().port();
    let accept = Arc::new(AtomicBool::new(false));
    let received: Received = Arc::new(Mutex::new(Vec::new()));
    let peers: Arc<Mutex<Vec<std::net::IpAddr>>> = Arc::new(Mutex::new(Vec::new()));
    let (a, rcv, pr) = (
        Arc::clone(&accept),
        Arc::clone(&received),
        Arc::clone(&peers),
    );
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(c) = conn else { return };
            if let Ok(p) = c.peer_addr() {
                pr.lock().unwrap().push(p.ip());
            }
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let mut w = c.try_clone().unwrap();
            let mut r = BufReader::new(c);
            let _ = w.write_all(b"220 sink ESMTP\r\n");
            let (mut from, mut rcpts) = (String::new(), Vec::new());
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let up = line.to_ascii_uppercase();
                let reply: String = if up.starts_with("EHLO") {
                    "250-sink\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n".into()
                } else if up.starts_with("MAIL FROM:") {
                    from = line[10..].trim().to_string();
                    rcpts.clear();
                    "250 2.1.0 ok\r\n".into()
                } else if up.starts_with("RCPT TO:") {
                    let to = line[8..].trim().to_string();
                    if to.starts_with("<tempfail") && !a.load(Ordering::SeqCst) {
                        "451 4.2.0 mailbox busy\r\n".into()
                    } else if to.starts_with("<permfail") {
                        "550 5.1.1 no such user\r\n".into()
                    } else {
                        rcpts.push(to);
                        "250 2.1.5 ok\r\n".into()
                    }
                } else if up.starts_with("DATA") {
                    let _ = w.write_all(b"354 go ahead\r\n");
                    let mut data = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                            break;
                        }
                        data.push_str(&line);
                    }
                    rcv.lock()
                        .unwrap()
                        .push((from.clone(), rcpts.clone(), data));
                    "250 2.0.0 queued\r\n".into()
                } else if up.starts_with("QUIT") {
                    let _ = w.write_all(b"221 2.0.0 bye\r\n");
                    break;
                } else if up.starts_with("RSET") {
                    "250 2.0.0 ok\r\n".into()
                } else {
                    "500 5.5.1 unknown\r\n".into()
                };
                let _ = w.write_all(reply.as_bytes());
            }
        }
    });
    Sink {
        port,
        accept,
        received,
        peers,
    }
}

/// `[queue] source_ipv4` makes outgoing connections from that address.
fn smtp_source_address() {
    let s = sink();
    let e = env(
        false,
        &format!(
            "[queue]\nsmtp_port = {}\nsource_ipv4 = \"127.0.0.77\"\n",
            s.port
        ),
    );
    let r = e.dns_runner(zone_dns());
    e.queue("mjl@mox.example", &["a@example.net"]);
    r.run_once(e.now()).unwrap();
    assert_eq!(s.received.lock().unwrap().len(), 1);
    let peers = s.peers.lock().unwrap().clone();
    assert_eq!(
        peers,
        vec!["127.0.0.77".parse::<std::net::IpAddr>().unwrap()]
    );
}

fn zone_dns() -> crate::resolve::Dns {
    let zone = rmox_core::dns::StaticZone::parse(
        "example.net. MX 10 mx.example.net.\nmx.example.net. A 127.0.0.1\nnullmx.example. MX 0 .\n",
    )
    .unwrap();
    crate::resolve::Dns::Zone(zone)
}

fn smtp_end_to_end_delivery_tempfail_kick_permfail() {
    let s = sink();
    let e = env(false, &format!("[queue]\nsmtp_port = {}\n", s.port));
    let r = e.dns_runner(zone_dns());
    let ok = e.queue("mjl@mox.example", &["a@example.net", "b@example.net"]);
    r.run_once(e.now()).unwrap();
    {
        let got = s.received.lock().unwrap();
        assert_eq!(got.len(), 1, "one transaction for both recipients");
        assert_eq!(got[0].0, "<mjl@mox.example>");
        assert_eq!(got[0].1, vec!["<a@example.net>", "<b@example.net>"]);
        assert!(got[0].2.contains("hello"));
    }
    for id in ok {
        assert!(matches!(e.retired(id), Some(Outcome::Delivered(t)) if t.contains("250 2.0.0")));
    }
    // Temporary failure, then success after `queue kick`.
    let temp = e.queue("mjl@mox.example", &["tempfail@example.net"])[0];
    r.run_once(e.now()).unwrap();
    let q = e.store.queue_get(temp).unwrap().unwrap();
    assert_eq!(q.attempts, 1);
    assert!(q.last_error.unwrap().contains("451 4.2.0 mailbox busy"));
    assert_eq!(q.history[0].host, "mx.example.net");
    s.accept.store(true, Ordering::SeqCst);
    let out = execute(
        &e.config,
        &(e.store.clone() as Arc<dyn MailStore>),
        Op::Kick(temp.0),
        Some(zone_dns()),
    )
    .unwrap();
    assert!(out[0].contains("Delivered"), "{out:?}");
    assert_eq!(s.received.lock().unwrap().len(), 2);
    // Permanent failure: DSN in the sender's Inbox.
    let perm = e.queue("mjl@mox.example", &["permfail@example.net"])[0];
    r.run_once(e.now()).unwrap();
    assert!(matches!(e.retired(perm), Some(Outcome::Failed(_))));
    let inbox = e.inbox();
    assert_eq!(inbox.len(), 1);
    assert!(inbox[0].contains("550 5.1.1 no such user"), "{}", inbox[0]);
    assert!(
        inbox[0].contains("Remote-MTA: dns; mx.example.net"),
        "{}",
        inbox[0]
    );
}

fn smtp_connection_refused_and_null_mx() {
    // A port nobody listens on: bind, note the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = env(false, &format!("[queue]\nsmtp_port = {port}\n"));
    let r = e.dns_runner(zone_dns());
    let id = e.queue("mjl@mox.example", &["a@example.net"])[0];
    let null = e.queue("mjl@mox.example", &["a@nullmx.example"])[0];
    r.run_once(e.now()).unwrap();
    let q = e.store.queue_get(id).unwrap().unwrap();
    assert!(q
        .last_error
        .unwrap()
        .contains("connecting to mx.example.net"));
    assert!(matches!(e.retired(null), Some(Outcome::Failed(t)) if t.contains("null MX")));
    assert_eq!(e.inbox().len(), 1);
}

/// Against ../shared/harness (NSD/Unbound, aiosmtpd peers, real Postfix): run
/// `/work/shared/harness/up.sh`, then `HARNESS_DIR=/tmp/harness/run cargo test --bin rmox
/// queue::tests::harness`. Skips with a printed reason when the harness is not up.
fn harness_postfix_and_peers() {
    // In CI (.ci/run starts the harness) the test must run; elsewhere it skips.
    let in_ci = std::env::var_os("CI").is_some();
    let Ok(hdir) = std::env::var("HARNESS_DIR") else {
        assert!(
            !in_ci,
            "CI is set but HARNESS_DIR is not: .ci/run must start the harness"
        );
        eprintln!("skipping harness test: HARNESS_DIR not set");
        return;
    };
    if !Path::new(&hdir).join("env.sh").exists() {
        assert!(!in_ci, "CI is set but {hdir}/env.sh is missing");
        eprintln!("skipping harness test: {hdir}/env.sh missing (run harness/up.sh)");
        return;
    }
    // The resolver is given to the connector directly (a `resolver` line in `extra` would
    // land in the last table of the config, [postmaster]).
    let e = env(false, "");
    let dns = crate::resolve::Dns::from_config(
        &crate::config::Resolver::Servers(vec!["127.53.0.2:53".parse().unwrap()]),
        crate::config::TrustAd::default(),
        Path::new("."),
    )
    .unwrap();
    let connector = Runner::connector_for(
        &e.config,
        &(e.store.clone() as Arc<dyn MailStore>),
        Some(dns),
        11,
    )
    .unwrap();
    let r = e.runner(connector);
    let pf = e.queue("mjl@mox.example", &["rcpt@pf.example.org"])[0];
    let temp = e.queue("mjl@mox.example", &["tempfail@example.org"])[0];
    let perm = e.queue("mjl@mox.example", &["permfail@example.org"])[0];
    let multi = e.queue("mjl@mox.example", &["rcpt@multi.example.org"])[0];
    r.run_once(e.now()).unwrap();
    let hist = |id| {
        e.store
            .queue_get(id)
            .unwrap()
            .map(|q| format!("{:?}", q.history))
    };
    assert!(
        matches!(e.retired(pf), Some(Outcome::Delivered(_))),
        "postfix: {:?} {:?}",
        e.retired(pf),
        hist(pf)
    );
    assert!(
        matches!(e.retired(multi), Some(Outcome::Delivered(_))),
        "MX fallback: {:?}",
        hist(multi)
    );
    assert!(
        e.store.queue_get(temp).unwrap().is_some(),
        "tempfail retried"
    );
    assert!(matches!(e.retired(perm), Some(Outcome::Failed(_))));
    assert!(e.inbox().iter().any(|m| m.contains("permfail@example.org")));
}

mod tls;
mod transport;

/// Fails every recipient for good, after dropping the first entry of the batch from the
/// queue (an administrator's `queue drop` during the delivery).
struct DropFirstThenFail(Arc<Store>);

impl Connector for DropFirstThenFail {
    fn deliver(&self, job: &Job<'_>) -> Vec<AttemptResult> {
        self.0.queue_drop(job.entries[0].id).unwrap();
        job.items
            .iter()
            .map(|_| {
                AttemptResult::Permanent(Failure::from_reply(
                    "mx.example.net",
                    Reply::new(550, Enhanced::parse("5.1.1"), "no such user"),
                ))
            })
            .collect()
    }
}

/// The failure DSN is now written in the commit that records the failures, unless an entry
/// it reports on is gone by then: an entry dropped during its delivery must not be named in
/// the DSN, and the other recipients' failure must still be reported (in a DSN of its own).
#[test]
fn failure_dsn_leaves_out_an_entry_dropped_during_delivery() {
    let e = env(false, "");
    let r = e.runner(Arc::new(DropFirstThenFail(Arc::clone(&e.store))));
    let ids = e.queue("mjl@mox.example", &["gone@example.net", "kept@example.net"]);
    assert_eq!(r.run_once(e.now()).unwrap(), 1);
    assert!(e.store.queue_get(ids[0]).unwrap().is_none());
    assert!(e.retired(ids[0]).is_none(), "dropped, not retired");
    assert!(matches!(e.retired(ids[1]), Some(Outcome::Failed(_))));
    let inbox = e.inbox();
    assert_eq!(inbox.len(), 1, "{inbox:?}");
    assert!(inbox[0].contains("Action: failed"), "{}", inbox[0]);
    assert!(inbox[0].contains("kept@example.net"), "{}", inbox[0]);
    assert!(!inbox[0].contains("gone@example.net"), "{}", inbox[0]);
}

/// rmox opened a connection per message (Postfix delivers dozens over one): messages to
/// one destination now share connections, up to `connections_per_domain` of them, each
/// message in its own transaction with its own results (a refused recipient, a temporary
/// failure) recorded and its DSN sent, as without reuse.
fn smtp_reuses_connections() {
    let s = sink();
    let e = env(false, &format!("[queue]\nsmtp_port = {}\n", s.port));
    let connector = Runner::connector_for(
        &e.config,
        &(e.store.clone() as Arc<dyn MailStore>),
        Some(zone_dns()),
        3,
    )
    .unwrap();
    let qc = QueueConfigBuilder {
        jitter: 0.0,
        backoff: vec![Duration::from_secs(60)],
        max_per_domain: 2,
        max_transactions_per_connection: 20,
        ..QueueConfigBuilder::default()
    }
    .build()
    .unwrap();
    let r = Runner::new(
        e.store.clone(),
        Arc::clone(&e.config),
        connector,
        7,
        e.clock(),
    )
    .with_queue_config(qc)
    .with_runtime(RT.with(|c| c.get()).unwrap_or_else(Runtime::one_off));
    let r = Arc::new(r);
    let mut ok = Vec::new();
    for i in 0..10 {
        ok.extend(e.queue("mjl@mox.example", &[&format!("r{i}@example.net")]));
    }
    let perm = e.queue("mjl@mox.example", &["permfail@example.net"])[0];
    let temp = e.queue("mjl@mox.example", &["tempfail@example.net"])[0];
    assert_eq!(r.run_once(e.now()).unwrap(), 12, "batches");
    assert_eq!(
        s.peers.lock().unwrap().len(),
        2,
        "two connections for 12 messages"
    );
    assert_eq!(s.received.lock().unwrap().len(), 10);
    for id in ok {
        assert!(
            matches!(e.retired(id), Some(Outcome::Delivered(_))),
            "{id:?}"
        );
    }
    assert!(matches!(e.retired(perm), Some(Outcome::Failed(_))));
    let inbox = e.inbox();
    assert_eq!(inbox.len(), 1, "the DSN for the refused recipient");
    assert!(inbox[0].contains("550 5.1.1 no such user"), "{}", inbox[0]);
    let q = e.store.queue_get(temp).unwrap().unwrap();
    assert_eq!(q.attempts, 1);
    assert!(q.last_error.unwrap().contains("451 4.2.0 mailbox busy"));
    // Every entry's attempt names the host.
    for r in e.store.queue_retired(100).unwrap() {
        assert_eq!(r.entry.history.last().unwrap().host, "mx.example.net");
    }
}
