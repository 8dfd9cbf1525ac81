//! Table definitions, record encoding, schema version and migrations.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;

/// Schema version written by this build.
pub const SCHEMA_VERSION: u64 = 4;

/// `meta`: schema version and id counters.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `accounts`: name -> JSON [`crate::Account`].
pub(crate) const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// `credentials`: (account, kind) -> opaque bytes.
pub(crate) const CREDENTIALS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("credentials");
/// `usage` (since v2): account -> bytes of non-expunged messages.
pub(crate) const USAGE: TableDefinition<&str, u64> = TableDefinition::new("usage");
/// `mailboxes`: (account, mailbox) -> ().
pub(crate) const MAILBOXES: TableDefinition<(&str, &str), ()> = TableDefinition::new("mailboxes");
/// `messages`: id -> JSON [`crate::MessageRecord`].
pub(crate) const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// `msg_bodies` (v4): id -> the bytes of a message small enough to live in the database
/// ([`crate::INLINE_BODY_MAX`]); a message without a row here has a file.
pub(crate) const MSG_BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("msg_bodies");
/// `account_messages`: (account, id) -> ().
pub(crate) const ACCOUNT_MESSAGES: TableDefinition<(&str, u64), ()> =
    TableDefinition::new("account_messages");
/// `msg_index_v4` (since v4): (hash, received, id) -> the entry's check and the message's
/// reputation facts. The hash and check are the halves of a keyed hash of (account, kind,
/// normalised value) ([`crate::ikey`]); received is stored as [`crate::ikey::key`] does.
/// Reputation reads a sender's history from one index range, without a lookup per message.
pub(crate) const MSG_INDEX: TableDefinition<(u64, u64, u64), IndexFacts> =
    TableDefinition::new("msg_index_v4");
/// An index entry's value: bits as in [`Facts`], the check, mailbox, From local part.
pub(crate) type IndexFacts = (u8, u64, &'static str, &'static str);
/// `msg_index_v3` (v3): (account, kind, value, received, id) -> facts; rebuilt as
/// [`MSG_INDEX`].
pub(crate) const MSG_INDEX_V3: TableDefinition<(&str, u8, &str, i64, u64), Facts> =
    TableDefinition::new("msg_index_v3");
/// `msg_index` (v1, v2): the index without facts; rebuilt as [`MSG_INDEX`].
pub(crate) const MSG_INDEX_V2: TableDefinition<(&str, u8, &str, i64, u64), ()> =
    TableDefinition::new("msg_index");
/// A message's reputation facts: bit 0 junk, bit 1 From validated by DMARC; mailbox; From
/// local part (lower case, empty when none).
pub(crate) type Facts = (u8, &'static str, &'static str);
/// `queue_msgs`: queued message id -> (size, entries referencing it).
pub(crate) const QUEUE_MSGS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("queue_msgs");
/// `queue`: entry id -> JSON [`crate::QueueEntry`].
pub(crate) const QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("queue");
/// `queue_due`: (next_attempt, entry id) -> () for entries not held.
pub(crate) const QUEUE_DUE: TableDefinition<(i64, u64), ()> = TableDefinition::new("queue_due");
/// `retired`: entry id -> JSON [`crate::RetiredEntry`].
pub(crate) const RETIRED: TableDefinition<u64, &[u8]> = TableDefinition::new("retired");
/// `hold_rules`: id -> JSON [`crate::HoldRule`].
pub(crate) const HOLD_RULES: TableDefinition<u64, &[u8]> = TableDefinition::new("hold_rules");
/// `suppressions`: (account, address) -> JSON [`crate::Suppression`].
pub(crate) const SUPPRESSIONS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("suppressions");
/// `failure_streaks`: (account, lowercased address) -> failed deliveries in a row to it.
pub(crate) const FAILURE_STREAKS: TableDefinition<(&str, &str), u32> =
    TableDefinition::new("failure_streaks");
/// `outgoing`: (account, time, seq) -> (recipients, first-time recipients).
pub(crate) const OUTGOING: TableDefinition<(&str, i64, u64), (u32, u32)> =
    TableDefinition::new("outgoing");
/// `sent_to`: (account, recipient) -> first time sent.
pub(crate) const SENT_TO: TableDefinition<(&str, &str), i64> = TableDefinition::new("sent_to");
/// `reports`: (kind, domain, time, seq) -> opaque bytes.
pub(crate) const REPORTS: TableDefinition<(u8, &str, i64, u64), &[u8]> =
    TableDefinition::new("reports");
/// `delivery_counts`: (UTC day, network such as `192.0.2.0/26`) -> (messages, bytes)
/// delivered into the server from that network that day (per-day rate limits).
pub(crate) const DELIVERY_COUNTS: TableDefinition<(i64, &str), (u64, u64)> =
    TableDefinition::new("delivery_counts");
/// `first_seen`: (account, sender key) -> when a first-time sender was first seen (the
/// delay of first-time senders).
pub(crate) const FIRST_SEEN: TableDefinition<(&str, &str), i64> =
    TableDefinition::new("first_seen");
/// `msg_facts`: message id -> what reputation reads of it (bits: 1 junk, 2 From validated
/// by DMARC; its mailbox; its From local part, lowercase, "" when none): a small record,
/// so that a sender's history is read without decoding whole message records.
pub(crate) const MSG_FACTS: TableDefinition<u64, Facts> = TableDefinition::new("msg_facts");
/// `junk_words`: (account, token) -> (ham, spam) message counts of the account's junk
/// filter; the empty token holds the numbers of trained ham and spam messages.
pub(crate) const JUNK_WORDS: TableDefinition<(&str, &str), (u32, u32)> =
    TableDefinition::new("junk_words");
/// `junk_trained`: (account, received, message id) -> how the message is trained
/// ([`crate::junk::TRAINED_SPAM`] and the gram bits it was tokenized with).
pub(crate) const JUNK_TRAINED: TableDefinition<(&str, i64, u64), u8> =
    TableDefinition::new("junk_trained");
/// `mtasts`: domain -> JSON [`crate::MtaStsRecord`].
pub(crate) const MTASTS: TableDefinition<&str, &[u8]> = TableDefinition::new("mtasts");
/// Webhooks waiting: id -> [`crate::Webhook`].
pub(crate) const WEBHOOKS: TableDefinition<u64, &[u8]> = TableDefinition::new("webhooks");
/// Webhooks done: id -> [`crate::RetiredWebhook`].
pub(crate) const WEBHOOKS_RETIRED: TableDefinition<u64, &[u8]> =
    TableDefinition::new("webhooks_retired");
/// Webhooks waiting, by when they are due: (next attempt, id) -> ().
pub(crate) const WEBHOOKS_DUE: TableDefinition<(i64, u64), ()> =
    TableDefinition::new("webhooks_due");
/// Queue entries by the unique id in their MAIL FROM: from id -> entry id (queued or
/// retired; removed with the retired entry).
pub(crate) const FROM_IDS: TableDefinition<&str, u64> = TableDefinition::new("from_ids");

pub(crate) const K_VERSION: &str = "schema_version";
pub(crate) const K_NEXT_MSG: &str = "next_message_id";
pub(crate) const K_NEXT_QMSG: &str = "next_queue_msg_id";
pub(crate) const K_NEXT_QUEUE: &str = "next_queue_id";
pub(crate) const K_NEXT_RULE: &str = "next_hold_rule_id";
pub(crate) const K_NEXT_HOOK: &str = "next_webhook_id";
/// The two halves of the message index's hash key ([`crate::ikey`]), since v4.
pub(crate) const K_INDEX_KEY0: &str = "index_key_0";
pub(crate) const K_INDEX_KEY1: &str = "index_key_1";
/// The sequence number of the last acceptance-log record the database holds durably.
pub(crate) const K_LOG_DONE: &str = "accept_log_done";

/// The message index's hash key recorded in `meta` (made and recorded when missing).
pub(crate) fn index_keyer(txn: &WriteTransaction) -> Result<crate::ikey::IndexKeyer, StoreError> {
    let mut meta = txn.open_table(META)?;
    let k0 = meta.get(K_INDEX_KEY0)?.map(|g| g.value());
    let k1 = meta.get(K_INDEX_KEY1)?.map(|g| g.value());
    if let (Some(k0), Some(k1)) = (k0, k1) {
        return Ok(crate::ikey::IndexKeyer::new(k0, k1));
    }
    let k = crate::ikey::IndexKeyer::random();
    let (k0, k1) = k.parts();
    meta.insert(K_INDEX_KEY0, k0)?;
    meta.insert(K_INDEX_KEY1, k1)?;
    Ok(k)
}

/// Encodes a record.
pub(crate) fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Invalid(format!("encoding record: {e}")))
}

/// Decodes a record of `table`.
pub(crate) fn dec<T: DeserializeOwned>(table: &'static str, b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Corrupt {
        table,
        detail: e.to_string(),
    })
}

/// Creates every table (so readers never meet a missing one).
pub(crate) fn create_all(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?;
    txn.open_table(ACCOUNTS)?;
    txn.open_table(CREDENTIALS)?;
    txn.open_table(USAGE)?;
    txn.open_table(MAILBOXES)?;
    txn.open_table(MESSAGES)?;
    txn.open_table(ACCOUNT_MESSAGES)?;
    txn.open_table(MSG_BODIES)?;
    txn.open_table(MSG_INDEX)?;
    txn.open_table(QUEUE_MSGS)?;
    txn.open_table(QUEUE)?;
    txn.open_table(QUEUE_DUE)?;
    txn.open_table(RETIRED)?;
    txn.open_table(HOLD_RULES)?;
    txn.open_table(SUPPRESSIONS)?;
    txn.open_table(FAILURE_STREAKS)?;
    txn.open_table(OUTGOING)?;
    txn.open_table(SENT_TO)?;
    txn.open_table(FIRST_SEEN)?;
    txn.open_table(REPORTS)?;
    txn.open_table(MTASTS)?;
    txn.open_table(DELIVERY_COUNTS)?;
    txn.open_table(JUNK_WORDS)?;
    txn.open_table(JUNK_TRAINED)?;
    txn.open_table(MSG_FACTS)?;
    txn.open_table(WEBHOOKS)?;
    txn.open_table(WEBHOOKS_RETIRED)?;
    txn.open_table(FROM_IDS)?;
    txn.open_table(WEBHOOKS_DUE)?;
    Ok(())
}

/// Brings a database to [`SCHEMA_VERSION`] inside `txn`. A fresh database (no version) is
/// stamped; version 1 (no `usage` counters) gets its counters computed from the messages;
/// a newer version is refused. Returns the version found.
pub(crate) fn migrate(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let found = {
        let meta = txn.open_table(META)?;
        let v = meta.get(K_VERSION)?.map(|g| g.value());
        v
    };
    let fresh = {
        let m = txn.open_table(MESSAGES)?;
        let a = txn.open_table(ACCOUNTS)?;
        m.is_empty()? && a.is_empty()?
    };
    let found = match found {
        Some(v) => v,
        None if fresh => SCHEMA_VERSION,
        // Data without a version record predates versioning: treat as version 1.
        None => 1,
    };
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    create_all(txn)?;
    let keyer = index_keyer(txn)?;
    if found < 2 {
        migrate_1_to_2(txn)?;
    }
    if found < 4 {
        migrate_to_4(txn, keyer)?;
    }
    txn.open_table(META)?.insert(K_VERSION, SCHEMA_VERSION)?;
    Ok(found)
}

/// Version 4 keys the message index by a keyed hash (and version 3 put each message's
/// reputation facts in its entries): the index of an older version is removed and rebuilt
/// from the message records, which hold everything it is made of.
fn migrate_to_4(txn: &WriteTransaction, keyer: crate::ikey::IndexKeyer) -> Result<(), StoreError> {
    txn.delete_table(MSG_INDEX_V2)?;
    txn.delete_table(MSG_INDEX_V3)?;
    let mut idx = txn.open_table(MSG_INDEX)?;
    idx.retain(|_, _| false)?;
    let msgs = txn.open_table(MESSAGES)?;
    for row in msgs.iter()? {
        let (_, v) = row?;
        let r: crate::MessageRecord = dec("messages", v.value())?;
        crate::store::put_index(&mut idx, keyer, None, &r)?;
    }
    Ok(())
}

/// Version 2 added the per-account `usage` counter: sum the sizes of non-expunged messages.
fn migrate_1_to_2(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut totals: std::collections::BTreeMap<String, u64> = Default::default();
    {
        let msgs = txn.open_table(MESSAGES)?;
        for row in msgs.iter()? {
            let (_, v) = row?;
            let r: crate::MessageRecord = dec("messages", v.value())?;
            if !r.expunged {
                *totals.entry(r.account).or_default() += r.size;
            }
        }
    }
    let mut usage = txn.open_table(USAGE)?;
    for (acc, n) in totals {
        usage.insert(acc.as_str(), n)?;
    }
    Ok(())
}
