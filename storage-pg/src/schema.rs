//! The schema, as versioned migrations. Each migration runs once, in order, in one
//! transaction with its row in `rmox_schema`; a database whose newest recorded version is
//! newer than this build knows is refused ([`StoreError::SchemaTooNew`]). Nodes starting at
//! once take an advisory lock, so one migrates and the others see its result.

use postgres::Client;
use rmox_storage::StoreError;

use crate::{pg, Q};

/// The advisory lock key of migrations ("rmox" in ASCII).
const MIGRATION_LOCK: i64 = 0x726d_6f78;

/// (version, SQL) in order. Never change a migration that was released: add one.
const MIGRATIONS: &[(i64, &str)] = &[(1, V1), (2, V2), (3, V3), (4, V4)];

/// The newest schema version this build knows.
pub const SCHEMA_VERSION: i64 = 4;

/// Version 4: the leased entries, for when an entry another node leases is due (the
/// queue's next wake-up reads them without scanning the queue).
const V4: &str = "
CREATE INDEX rmox_queue_leased ON rmox_queue (lease_until)
    WHERE lease_node IS NOT NULL AND NOT held;
";

/// Version 3: hold rule ids, retired webhooks and the webhooks' due index (queue
/// administration and webhooks through the backend-neutral interface), and the leases of
/// background tasks one node at a time runs (report senders, webhook POSTs).
const V3: &str = "
CREATE SEQUENCE rmox_hold_rule_ids;
CREATE TABLE rmox_webhooks_retired (
    id bigint PRIMARY KEY,
    rec bytea NOT NULL
);
CREATE INDEX rmox_webhooks_due ON rmox_webhooks (next_attempt, id);
CREATE TABLE rmox_task_leases (
    task text PRIMARY KEY,
    node text NOT NULL,
    until bigint NOT NULL
);
";

/// Version 2: queue leases. A node that takes an entry for an attempt writes its name and
/// the lease's end; other nodes skip the entry until the lease ends or the entry changes
/// (any recorded change ends the lease).
const V2: &str = "
ALTER TABLE rmox_queue ADD COLUMN lease_node text, ADD COLUMN lease_until bigint;
";

/// Records are the storage crate's serde types as JSON (bytea); the columns beside them
/// are what queries select and order by. Ids come from sequences: never reused.
const V1: &str = "
CREATE SEQUENCE rmox_message_ids;
CREATE SEQUENCE rmox_queue_ids;
CREATE SEQUENCE rmox_queue_msg_ids;
CREATE SEQUENCE rmox_webhook_ids;
CREATE TABLE rmox_accounts (
    name text PRIMARY KEY,
    rec bytea NOT NULL,
    usage bigint NOT NULL DEFAULT 0
);
CREATE TABLE rmox_credentials (
    account text NOT NULL,
    kind text NOT NULL,
    bytes bytea NOT NULL,
    PRIMARY KEY (account, kind)
);
CREATE TABLE rmox_messages (
    id bigint PRIMARY KEY,
    account text NOT NULL,
    rec bytea NOT NULL,
    body bytea
);
CREATE INDEX rmox_messages_account ON rmox_messages (account, id);
CREATE TABLE rmox_mailboxes (
    account text NOT NULL,
    name text NOT NULL,
    PRIMARY KEY (account, name)
);
CREATE TABLE rmox_msg_index (
    account text NOT NULL,
    kind smallint NOT NULL,
    value text NOT NULL,
    received bigint NOT NULL,
    msg_id bigint NOT NULL,
    PRIMARY KEY (account, kind, value, received, msg_id)
);
CREATE INDEX rmox_msg_index_msg ON rmox_msg_index (msg_id);
CREATE TABLE rmox_queue_msgs (
    id bigint PRIMARY KEY,
    refs bigint NOT NULL,
    body bytea NOT NULL
);
CREATE TABLE rmox_queue (
    id bigint PRIMARY KEY,
    msg_id bigint NOT NULL REFERENCES rmox_queue_msgs (id),
    held boolean NOT NULL,
    next_attempt bigint NOT NULL,
    rec bytea NOT NULL
);
CREATE INDEX rmox_queue_due ON rmox_queue (next_attempt, id) WHERE NOT held;
CREATE TABLE rmox_retired (
    id bigint PRIMARY KEY,
    retired bigint NOT NULL,
    rec bytea NOT NULL
);
CREATE TABLE rmox_from_ids (
    from_id text PRIMARY KEY,
    queue_id bigint NOT NULL
);
CREATE TABLE rmox_hold_rules (
    id bigint PRIMARY KEY,
    rec bytea NOT NULL
);
CREATE TABLE rmox_suppressions (
    account text NOT NULL,
    address text NOT NULL,
    rec bytea NOT NULL,
    PRIMARY KEY (account, address)
);
CREATE TABLE rmox_failure_streaks (
    account text NOT NULL,
    address text NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (account, address)
);
CREATE TABLE rmox_sent_to (
    account text NOT NULL,
    key text NOT NULL,
    time bigint NOT NULL,
    PRIMARY KEY (account, key)
);
CREATE TABLE rmox_outgoing (
    seq bigserial PRIMARY KEY,
    account text NOT NULL,
    time bigint NOT NULL,
    recipients bigint NOT NULL,
    first_time bigint NOT NULL
);
CREATE INDEX rmox_outgoing_account ON rmox_outgoing (account, time);
CREATE TABLE rmox_first_seen (
    account text NOT NULL,
    key text NOT NULL,
    time bigint NOT NULL,
    PRIMARY KEY (account, key)
);
CREATE TABLE rmox_reports (
    kind smallint NOT NULL,
    domain text NOT NULL,
    time bigint NOT NULL,
    seq bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (kind, domain, time, seq)
);
CREATE TABLE rmox_delivery_counts (
    day bigint NOT NULL,
    network text NOT NULL,
    messages bigint NOT NULL,
    bytes bigint NOT NULL,
    PRIMARY KEY (day, network)
);
CREATE TABLE rmox_mtasts (
    domain text PRIMARY KEY,
    rec bytea NOT NULL
);
CREATE TABLE rmox_junk_words (
    account text NOT NULL,
    word text NOT NULL,
    ham bigint NOT NULL,
    spam bigint NOT NULL,
    PRIMARY KEY (account, word)
);
CREATE TABLE rmox_junk_trained (
    account text NOT NULL,
    received bigint NOT NULL,
    msg_id bigint NOT NULL,
    bits smallint NOT NULL,
    PRIMARY KEY (account, received, msg_id)
);
CREATE INDEX rmox_junk_trained_msg ON rmox_junk_trained (msg_id);
CREATE TABLE rmox_webhooks (
    id bigint PRIMARY KEY,
    next_attempt bigint NOT NULL,
    rec bytea NOT NULL
);
";

/// Creates or migrates the schema; the versions applied now.
pub(crate) fn migrate(client: &mut Client) -> Result<Vec<i64>, StoreError> {
    let mut t = client.transaction().map_err(pg)?;
    t.x("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    t.batch_execute(
        "CREATE TABLE IF NOT EXISTS rmox_schema (
            version bigint PRIMARY KEY,
            applied timestamptz NOT NULL DEFAULT now()
        )",
    )
    .map_err(pg)?;
    let mut have = Vec::new();
    for r in t.q("SELECT version FROM rmox_schema ORDER BY version", &[])? {
        have.push(crate::col::<i64>(&r, 0)?);
    }
    if let Some(&newest) = have.last() {
        if newest > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: u64::try_from(newest).unwrap_or(0),
                supported: SCHEMA_VERSION as u64,
            });
        }
    }
    let mut applied = Vec::new();
    for (v, sql) in MIGRATIONS {
        if have.contains(v) {
            continue;
        }
        t.batch_execute(sql).map_err(pg)?;
        t.x("INSERT INTO rmox_schema (version) VALUES ($1)", &[v])?;
        applied.push(*v);
    }
    t.commit().map_err(pg)?;
    Ok(applied)
}
