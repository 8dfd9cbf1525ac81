//! The records the store keeps, as callers see them.

use std::fmt;
use std::net::IpAddr;

use rmox_core::UnixTime;
use serde::{Deserialize, Serialize};

/// Id of a stored (delivered) message; unique in a data directory, never reused while the
/// process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId(pub u64);

/// Id of one queue entry (one recipient of one queued message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct QueueId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// (De)serializes [`UnixTime`] as seconds.
pub(crate) mod unix {
    use rmox_core::UnixTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &UnixTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.0)
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UnixTime, D::Error> {
        Ok(UnixTime(i64::deserialize(d)?))
    }

    pub(crate) mod opt {
        use rmox_core::UnixTime;
        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<UnixTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&t.0),
                None => s.serialize_none(),
            }
        }
        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<UnixTime>, D::Error> {
            Ok(Option::<i64>::deserialize(d)?.map(UnixTime))
        }
    }
}

/// An account: the unit that owns mailboxes, credentials and a quota.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Account name (exact, case-sensitive).
    pub name: String,
    /// The account's domain (used for the default address and reports).
    pub domain: String,
    /// When set, logins are refused and this message is shown.
    #[serde(default)]
    pub login_disabled: Option<String>,
    /// Maximum bytes of stored messages; `None` for no limit.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// The secret key of its subjectpass tokens (hex), made on first use.
    #[serde(default)]
    pub subjectpass_key: Option<String>,
}

/// Message flags the store indexes on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flags {
    /// Read by the user.
    #[serde(default)]
    pub seen: bool,
    /// Classified or marked as junk.
    #[serde(default)]
    pub junk: bool,
    /// Marked as not junk by the user.
    #[serde(default)]
    pub notjunk: bool,
}

/// Result of a validation step (SPF, DKIM, DMARC alignment, EHLO) as mox records it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Validation {
    /// Not evaluated.
    #[default]
    Unknown,
    /// Strict (exact) match, e.g. DKIM for exactly this domain.
    Strict,
    /// Validated by DMARC alignment.
    Dmarc,
    /// Relaxed (organisational domain) match.
    Relaxed,
    /// Pass.
    Pass,
    /// Neutral.
    Neutral,
    /// Temporary error during evaluation.
    TempError,
    /// Permanent error (bad record).
    PermError,
    /// Fail.
    Fail,
    /// Soft fail.
    Softfail,
    /// No policy published.
    None,
}

/// The index fields stored with each delivered message: what reputation and rate questions
/// are asked about later. All optional; the store lowercases addresses and domains for its
/// indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageInfo {
    /// IP address of the SMTP client (`None` for local submissions and imports).
    #[serde(default)]
    pub remote_ip: Option<IpAddr>,
    /// EHLO/HELO name.
    #[serde(default)]
    pub ehlo: Option<String>,
    /// EHLO validation (SPF for the EHLO name).
    #[serde(default)]
    pub ehlo_validation: Validation,
    /// MAIL FROM address (`None` for the null sender `<>`).
    #[serde(default)]
    pub mail_from: Option<String>,
    /// MAIL FROM validation (SPF).
    #[serde(default)]
    pub mail_from_validation: Validation,
    /// The RCPT TO address this copy was delivered for.
    #[serde(default)]
    pub rcpt_to: Option<String>,
    /// Domain of the message's From header.
    #[serde(default)]
    pub from_domain: Option<String>,
    /// The message's From header address (`localpart@domain`), when it has exactly one.
    #[serde(default)]
    pub from_address: Option<String>,
    /// The organisational domain of `from_domain`.
    #[serde(default)]
    pub from_org_domain: Option<String>,
    /// From-domain validation (DMARC/DKIM alignment).
    #[serde(default)]
    pub from_validation: Validation,
    /// Domains with a passing DKIM signature.
    #[serde(default)]
    pub dkim_domains: Vec<String>,
    /// The Message-ID header, without angle brackets.
    #[serde(default)]
    pub message_id: Option<String>,
    /// Reverse DNS (iprev) of the client: Pass, Fail, TempError, PermError.
    #[serde(default)]
    pub iprev_validation: Validation,
    /// The iprev names that confirmed the client's address.
    #[serde(default)]
    pub iprev_names: Vec<String>,
    /// DNSBL zones that listed the client.
    #[serde(default)]
    pub dnsbl_listed: Vec<String>,
}

/// One message to store into one account's mailbox.
#[derive(Clone, Debug)]
pub struct Delivery<'a> {
    /// Account that receives the message (must exist).
    pub account: String,
    /// Mailbox name ("Inbox", "Junk", "Rejects", ...); created on demand.
    pub mailbox: String,
    /// Header fields written before `message` (our Received and check results in front of
    /// a spooled message, whose bytes are a memory map); usually empty.
    pub head: &'a [u8],
    /// The whole message as received (headers and body, CRLF line ends), after `head`.
    pub message: &'a [u8],
    /// Initial flags.
    pub flags: Flags,
    /// When the message was received.
    pub received: UnixTime,
    /// Index fields.
    pub info: MessageInfo,
}

/// A stored message's record (everything except its bytes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The id.
    pub id: MessageId,
    /// Owning account.
    pub account: String,
    /// Mailbox name.
    pub mailbox: String,
    /// Received time.
    #[serde(with = "unix")]
    pub received: UnixTime,
    /// Flags.
    pub flags: Flags,
    /// Message size in bytes (the file's size).
    pub size: u64,
    /// Index fields.
    pub info: MessageInfo,
    /// The masked networks of `info.remote_ip` (see [`crate::ip_networks`]).
    #[serde(default)]
    pub networks: Vec<String>,
    /// Removed by the user: the bytes are gone, the record stays for reputation.
    #[serde(default)]
    pub expunged: bool,
}

/// What an index lookup is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IndexKind {
    /// A masked remote network as produced by [`crate::ip_networks`], e.g. `192.0.2.0/26`.
    Network,
    /// The full MAIL FROM address.
    MailFrom,
    /// The domain of the MAIL FROM address.
    MailFromDomain,
    /// The From header domain.
    FromDomain,
    /// A domain with a passing DKIM signature.
    DkimDomain,
    /// The EHLO name.
    Ehlo,
    /// The Message-ID.
    MessageId,
    /// The full From header address.
    FromAddress,
    /// The organisational domain of the From header domain.
    FromOrgDomain,
    /// The mailbox a message was delivered to (removed when the message is expunged): how
    /// many messages a mailbox holds, and its oldest, without reading the account.
    Mailbox,
}

impl IndexKind {
    /// The kind's number in stored index keys (the same in every backend; never changes).
    pub fn code(self) -> u8 {
        match self {
            IndexKind::Network => 1,
            IndexKind::MailFrom => 2,
            IndexKind::MailFromDomain => 3,
            IndexKind::FromDomain => 4,
            IndexKind::DkimDomain => 5,
            IndexKind::Ehlo => 6,
            IndexKind::MessageId => 7,
            IndexKind::FromAddress => 8,
            IndexKind::FromOrgDomain => 9,
            IndexKind::Mailbox => 10,
        }
    }
}

/// One message found through an index, newest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexHit {
    /// The message.
    pub id: MessageId,
    /// When it was received.
    pub received: UnixTime,
    /// Its current flags (junk/notjunk are what reputation looks at).
    pub flags: Flags,
    /// Its mailbox.
    pub mailbox: String,
    /// Whether it was expunged since.
    pub expunged: bool,
    /// Its size in bytes.
    pub size: u64,
}

/// One earlier message as reputation sees it ([`crate::Store::history`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryHit {
    /// It was classified junk.
    pub junk: bool,
    /// The local part of its From address, when it had one.
    pub from_localpart: Option<String>,
}

/// REQUIRETLS state of a queued message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequireTls {
    /// Neither REQUIRETLS nor `TLS-Required: No`: the configured policy applies.
    #[default]
    Default,
    /// MAIL FROM had REQUIRETLS.
    Required,
    /// The message had `TLS-Required: No`.
    NotRequired,
}

/// DSN parameters (RFC 3461) given at submission.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DsnParams {
    /// ENVID.
    #[serde(default)]
    pub envid: Option<String>,
    /// RET: `Some(true)` for FULL, `Some(false)` for HDRS.
    #[serde(default)]
    pub ret_full: Option<bool>,
    /// NOTIFY values as given (`NEVER` or some of `SUCCESS`, `FAILURE`, `DELAY`); empty when
    /// not given.
    #[serde(default)]
    pub notify: Vec<String>,
    /// ORCPT, as given (`rfc822;user@example.org`).
    #[serde(default)]
    pub orcpt: Option<String>,
}

/// One recipient to queue, with everything the delivery attempts need.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecipient {
    /// Account that submitted the message; `None` for DSNs and forwards.
    pub sender_account: Option<String>,
    /// MAIL FROM address; empty for the null sender.
    pub mail_from: String,
    /// The recipient address.
    pub recipient: String,
    /// Message has 8-bit content (8BITMIME needed).
    pub has_8bit: bool,
    /// Message needs SMTPUTF8.
    pub smtputf8: bool,
    /// REQUIRETLS / TLS-Required: No.
    pub requiretls: RequireTls,
    /// Named transport to use; `None` for direct delivery.
    pub transport: Option<String>,
    /// First attempt not before this time (FUTURERELEASE or now).
    #[serde(with = "unix")]
    pub next_attempt: UnixTime,
    /// When the message was queued.
    #[serde(with = "unix")]
    pub queued: UnixTime,
    /// Held: not returned by `queue_due` until released. Hold rules may also set this.
    pub hold: bool,
    /// DSN parameters.
    pub dsn: DsnParams,
    /// This message is itself a DSN (never generate a DSN about it).
    pub is_dsn: bool,
    /// The unique id in this entry's MAIL FROM (mox's fromid): a DSN that comes back to
    /// that address is attributed to this entry ([`crate::Store::queue_by_from_id`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_id: Option<FromId>,
}

/// A queue entry's unique return-address id and what a later DSN's webhook reports about
/// the message (kept with the entry: the message file is gone once it is retired).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FromId {
    /// The id, after the local part's catchall separator in MAIL FROM.
    pub id: String,
    /// The message's Message-ID (with `<>`).
    pub message_id: String,
    /// The message's Subject.
    pub subject: String,
    /// The webapi's per-message `Extra` values.
    #[serde(default)]
    pub extra: std::collections::BTreeMap<String, String>,
}

/// One delivery attempt in an entry's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When the attempt ended.
    #[serde(with = "unix")]
    pub time: UnixTime,
    /// Host (MX or transport) tried.
    pub host: String,
    /// Full reply text or local error.
    pub result: String,
    /// TLS mode of the attempt (`opportunistic`, `required`, `skip`, `implicit`), when a
    /// connection was made. Absent in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_mode: Option<String>,
    /// TLS result of the attempt: the protocol and cipher, `plaintext`, or the TLSRPT
    /// result type and detail of a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_result: Option<String>,
}

/// One queued recipient of a queued message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// Entry id.
    pub id: QueueId,
    /// Id of the queued message bytes (shared by the entries of one `queue_add`).
    pub msg_id: u64,
    /// Size of the message in bytes.
    pub size: u64,
    /// The recipient and its parameters.
    pub rcpt: QueueRecipient,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// Full text of the last error (reply lines or local error), if any.
    pub last_error: Option<String>,
    /// When the last attempt ended.
    #[serde(with = "unix::opt")]
    pub last_attempt: Option<UnixTime>,
    /// Attempt history, oldest first.
    pub history: Vec<Attempt>,
}

impl QueueEntry {
    /// Whether `queue_due(now, ..)` returns this entry.
    pub fn is_due(&self, now: UnixTime) -> bool {
        rmox_core::queue::is_due(self.rcpt.hold, self.rcpt.next_attempt, now)
    }
}

/// How an entry left the queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Outcome {
    /// Delivered; the final reply.
    Delivered(String),
    /// Failed permanently (DSN sent or not); the final error.
    Failed(String),
    /// Removed by an administrator.
    Dropped,
}

/// A queue entry that left the queue, with its history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredEntry {
    /// The entry as it was last.
    pub entry: QueueEntry,
    /// How it ended.
    pub outcome: Outcome,
    /// When.
    #[serde(with = "unix")]
    pub retired: UnixTime,
}

/// Selects queue entries for `queue_list`; every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueFilter {
    /// Only these ids.
    pub ids: Option<Vec<QueueId>>,
    /// Sender account equals.
    pub account: Option<String>,
    /// MAIL FROM domain equals (case-insensitive).
    pub from_domain: Option<String>,
    /// Recipient domain equals (case-insensitive).
    pub to_domain: Option<String>,
    /// Hold state equals.
    pub hold: Option<bool>,
    /// next_attempt <= this.
    pub due_by: Option<UnixTime>,
    /// Transport equals (`Some(None)` = direct).
    pub transport: Option<Option<String>>,
}

/// A rule that holds newly queued messages: every set field must match; no field set
/// matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRule {
    /// Rule id (assigned by `hold_rule_add`; ignored on input).
    pub id: u64,
    /// Sender account equals.
    pub account: Option<String>,
    /// MAIL FROM domain equals (case-insensitive).
    pub sender_domain: Option<String>,
    /// Recipient domain equals (case-insensitive).
    pub recipient_domain: Option<String>,
}

impl HoldRule {
    /// The rule's conditions, for core's matching ([`rmox_core::queue::HoldRule`]).
    pub fn conditions(&self) -> rmox_core::queue::HoldRule<'_> {
        rmox_core::queue::HoldRule {
            account: self.account.as_deref(),
            sender_domain: self.sender_domain.as_deref(),
            recipient_domain: self.recipient_domain.as_deref(),
        }
    }

    /// Whether a new recipient matches (core decides: [`rmox_core::queue::HoldRule::matches`]).
    pub fn matches(&self, r: &QueueRecipient) -> bool {
        self.conditions()
            .matches(r.sender_account.as_deref(), &r.mail_from, &r.recipient)
    }
}

/// An address an account must not send to (bounced, complained).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    /// The address (stored lowercased).
    pub address: String,
    /// Why.
    pub reason: String,
    /// Added manually (not by a bounce).
    pub manual: bool,
    /// When added.
    #[serde(with = "unix")]
    pub created: UnixTime,
}

/// A cached MTA-STS policy (the record; what it means is decided in core's
/// `tlspolicy::session`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MtaStsRecord {
    /// The policy domain.
    pub domain: String,
    /// The policy text as fetched.
    pub policy: String,
    /// The id from the `_mta-sts` TXT record.
    pub record_id: String,
    /// When fetched.
    #[serde(with = "unix")]
    pub fetched: UnixTime,
    /// When it expires (fetched + max_age).
    #[serde(with = "unix")]
    pub expires: UnixTime,
    /// When a delivery last used it (`None`: not since it was stored). Records written
    /// before this field existed read as `None`.
    #[serde(default, with = "unix::opt")]
    pub last_use: Option<UnixTime>,
}

impl MtaStsRecord {
    /// The record for a cache entry of the policy machine (`last_use` not set).
    pub fn from_entry(e: &rmox_core::tlspolicy::StsCacheEntry) -> MtaStsRecord {
        MtaStsRecord {
            domain: e.domain.to_ascii_lowercase(),
            policy: e.policy.clone(),
            record_id: e.id.clone(),
            fetched: e.fetched,
            expires: e.expires,
            last_use: None,
        }
    }

    /// The policy machine's cache entry (the answer to its cache read).
    pub fn to_entry(&self) -> rmox_core::tlspolicy::StsCacheEntry {
        rmox_core::tlspolicy::StsCacheEntry {
            domain: self.domain.clone(),
            id: self.record_id.clone(),
            policy: self.policy.clone(),
            fetched: self.fetched,
            expires: self.expires,
        }
    }
}

/// Which kind of report record (opaque bytes, serialized by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReportKind {
    /// A DMARC evaluation, keyed by the policy domain, for aggregate reports.
    DmarcEval,
    /// A TLS result, keyed by the policy domain, for TLSRPT.
    TlsResult,
    /// An incoming DMARC aggregate report (the raw message), keyed by our domain it is about.
    DmarcReport,
    /// An incoming TLS report (RFC 8460), keyed by our policy domain it is about.
    TlsReport,
}

/// One report record with its key, as [`crate::Store::report_entries`] lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportEntry {
    /// The domain it is stored under (lower case).
    pub domain: String,
    /// The time it was stored under.
    pub time: UnixTime,
    /// Its sequence number among records of the same domain and time.
    pub seq: u64,
    /// The record as given to `report_add`.
    pub record: Vec<u8>,
}
