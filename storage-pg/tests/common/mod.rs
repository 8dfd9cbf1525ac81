//! What the storage-pg tests share: the server from `RMOX_TEST_PG_URL`, a database per
//! test, and sample deliveries and recipients.
//!
//! PostgreSQL comes from `RMOX_TEST_PG_URL` (e.g. `host=127.0.0.1 port=54329 user=postgres
//! dbname=postgres`; `storage-pg/pg-up.sh` starts one). Unset, the tests fail when `CI` is
//! set and are skipped (saying so) otherwise.

#![allow(dead_code)] // each test binary uses its part
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rmox_core::UnixTime;
use rmox_storage::{
    Delivery, DsnParams, Flags, MessageInfo, QueueRecipient, RequireTls, StoreError,
};
use rmox_storage_pg::{Config, PgOptions, PgStore};

/// The server's URL, or `None` (skipped) outside CI.
pub(crate) fn server() -> Option<Config> {
    match std::env::var("RMOX_TEST_PG_URL") {
        Ok(url) => Some(url.parse().expect("RMOX_TEST_PG_URL does not parse")),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("RMOX_TEST_PG_URL is not set, and CI is: .ci/run starts PostgreSQL and sets it")
        }
        Err(_) => {
            eprintln!("skipped: RMOX_TEST_PG_URL is not set (storage-pg/pg-up.sh starts a server)");
            None
        }
    }
}

/// A database of one test, dropped with it.
pub(crate) struct TestDb {
    pub(crate) admin: Config,
    pub(crate) name: String,
    pub(crate) config: Config,
}

impl TestDb {
    pub(crate) fn new(server: &Config) -> TestDb {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "rmox_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = server.clone();
        admin.connect_timeout(Duration::from_secs(10));
        let mut c = admin
            .connect(postgres::NoTls)
            .expect("connect to RMOX_TEST_PG_URL");
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        let mut config = admin.clone();
        config.dbname(&name);
        TestDb {
            admin,
            name,
            config,
        }
    }

    pub(crate) fn open(&self) -> Result<PgStore, StoreError> {
        PgStore::open_config(self.config.clone(), PgOptions::default())
    }

    /// A store as node `node` with leases of `lease_secs`.
    pub(crate) fn open_node(&self, node: &str, lease_secs: i64) -> Result<PgStore, StoreError> {
        PgStore::open_config(
            self.config.clone(),
            PgOptions {
                node: node.into(),
                lease_secs,
                ..PgOptions::default()
            },
        )
    }

    /// A plain connection to the test's database.
    pub(crate) fn connect(&self) -> postgres::Client {
        self.config.connect(postgres::NoTls).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut c) = self.admin.connect(postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

pub(crate) fn delivery<'a>(account: &str, msg: &'a [u8], t: i64) -> Delivery<'a> {
    Delivery {
        account: account.into(),
        mailbox: "Inbox".into(),
        head: b"Received: x\r\n",
        message: msg,
        flags: Flags::default(),
        received: UnixTime(t),
        info: MessageInfo {
            remote_ip: "192.0.2.77".parse().ok(),
            mail_from: Some("Bob@Example.ORG".into()),
            ..Default::default()
        },
    }
}

pub(crate) fn rcpt(to: &str, next: i64) -> QueueRecipient {
    QueueRecipient {
        sender_account: Some("a".into()),
        mail_from: "a@example.org".into(),
        recipient: to.into(),
        has_8bit: false,
        smtputf8: false,
        requiretls: RequireTls::Default,
        transport: None,
        next_attempt: UnixTime(next),
        queued: UnixTime(0),
        hold: false,
        dsn: DsnParams::default(),
        is_dsn: false,
        from_id: None,
    }
}

/// The store's invariants, read with SQL: each account's usage is the sum of the sizes of
/// its stored messages not expunged; a message has bytes of its size exactly when it is not
/// expunged; every index row names a message; every queued message is referenced by as
/// many entries as its count says. The first violation, or `None`.
pub(crate) fn inconsistency(c: &mut postgres::Client) -> Option<String> {
    let checks = [
        (
            "usage differs from the sum of the sizes",
            "SELECT a.name, a.usage, COALESCE(sum(length(m.body)) FILTER (WHERE m.body IS NOT NULL), 0)
             FROM rmox_accounts a LEFT JOIN rmox_messages m ON m.account = a.name
             GROUP BY a.name, a.usage
             HAVING a.usage <> COALESCE(sum(length(m.body)) FILTER (WHERE m.body IS NOT NULL), 0)",
        ),
        (
            "message without bytes, or bytes not of its size",
            "SELECT id FROM rmox_messages
             WHERE (convert_from(rec, 'UTF8')::jsonb->>'expunged')::boolean = (body IS NOT NULL)
                OR (body IS NOT NULL
                    AND length(body) <> (convert_from(rec, 'UTF8')::jsonb->>'size')::bigint)",
        ),
        (
            "index row of no message",
            "SELECT i.msg_id FROM rmox_msg_index i
             LEFT JOIN rmox_messages m ON m.id = i.msg_id WHERE m.id IS NULL",
        ),
        (
            "queued message references not as counted",
            "SELECT q.id FROM rmox_queue_msgs q
             WHERE q.refs <> (SELECT count(*) FROM rmox_queue e WHERE e.msg_id = q.id)",
        ),
        (
            "message of an unknown mailbox",
            "SELECT m.id FROM rmox_messages m WHERE NOT EXISTS (
                SELECT 1 FROM rmox_mailboxes b WHERE b.account = m.account
                AND b.name = convert_from(m.rec, 'UTF8')::jsonb->>'mailbox')",
        ),
    ];
    for (what, sql) in checks {
        let rows = c.query(sql, &[]).unwrap();
        if !rows.is_empty() {
            return Some(format!("{what}: {} rows", rows.len()));
        }
    }
    None
}
