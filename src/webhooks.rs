//! Webhooks: hooks made from the queue's delivery results and from incoming messages
//! (stored with the event, see [`rmox_storage::Webhook`]), and the task that POSTs them on
//! the server's runtime with retries ([`Sender::run`]). Payloads and signatures are core's
//! ([`rmox_core::webhook`]).

use std::sync::Arc;
use std::time::Duration;

use rmox_core::http::{FetchConfig, FetchRequest, Header};
use rmox_core::queue::{Decision, QueueItem};
use rmox_core::webhook::{self as hook, Event, Outgoing};
use rmox_core::UnixTime;
use rmox_storage::MailStore;
use rmox_storage::{Webhook, WebhookResult};

use crate::config::Config;

/// Hooks POSTed concurrently at most (one round of due hooks).
const BATCH: usize = 16;

/// Message-ID (with `<>`) and Subject of a message.
pub fn id_and_subject(message: &[u8]) -> (String, String) {
    let end = rmox_core::message::body_offset(message).unwrap_or(message.len());
    let head = message.get(..end).unwrap_or_default();
    let m = mail_parser::MessageParser::default().parse_headers(head);
    match m {
        Some(m) => (
            m.message_id().map(|i| format!("<{i}>")).unwrap_or_default(),
            m.subject().unwrap_or("").to_string(),
        ),
        None => (String::new(), String::new()),
    }
}

/// The outgoing hook for a delivery attempt of `item` (of `message`) that core decided
/// `d`, when its sender account has an `outgoing_url`: delivered, failed or delayed.
/// `suppressing`: this failure puts the recipient on the suppression list.
/// `suppressed`: not attempted, the recipient being on the suppression list. `from_id`:
/// the entry's unique return-address id, if it has one.
#[allow(clippy::too_many_arguments)]
pub fn outgoing_for_attempt(
    c: &Config,
    item: &QueueItem,
    d: &Decision,
    error: &str,
    suppressing: bool,
    suppressed: bool,
    from_id: &str,
    message: &[u8],
    now: UnixTime,
) -> Option<Webhook> {
    if item.is_dsn {
        return None;
    }
    let event = match d {
        Decision::Failed { .. } if suppressed => Event::Suppressed,
        Decision::Delivered { .. } => Event::Delivered,
        Decision::Failed { .. } => Event::Failed,
        Decision::Retry { .. } => Event::Delayed,
    };
    let error = if event == Event::Delivered { "" } else { error };
    outgoing(
        c,
        item.sender_account.as_deref()?,
        item.id,
        event,
        error,
        suppressing,
        from_id,
        message,
        now,
    )
}

/// The outgoing hook of `event` about queue entry `queue_id` of `account`, when the
/// account has an `outgoing_url`.
#[allow(clippy::too_many_arguments)]
pub fn outgoing(
    c: &Config,
    account: &str,
    queue_id: u64,
    event: Event,
    error: &str,
    suppressing: bool,
    from_id: &str,
    message: &[u8],
    now: UnixTime,
) -> Option<Webhook> {
    let w = c.account.get(account)?.webhooks.as_ref()?;
    let url = w.outgoing_url.clone()?;
    let (message_id, subject) = id_and_subject(message);
    let end = rmox_core::message::body_offset(message).unwrap_or(message.len());
    let extra = rmox_core::webapi::extra_from_header(message.get(..end).unwrap_or_default());
    let (smtp_code, smtp_enhanced_code) = hook::smtp_codes(error);
    let payload = Outgoing {
        version: 0,
        event: event.as_str().into(),
        dsn: false,
        suppressing,
        queue_msg_id: queue_id,
        from_id: from_id.to_string(),
        message_id,
        subject,
        webhook_queued: now.rfc3339(),
        smtp_code,
        smtp_enhanced_code,
        error: error.to_string(),
        extra,
    };
    Some(new_hook(
        account,
        url,
        "outgoing",
        event.as_str(),
        &payload,
        now,
    ))
}

/// The incoming hook of message `msg_id` (`bytes`, stored for `account`), when the account
/// has an `incoming_url`: mox's webhook.Incoming (the parsed message, its MIME structure
/// and what rmox knows of its delivery).
pub fn incoming(
    c: &Config,
    rec: &rmox_storage::MessageRecord,
    bytes: &[u8],
    now: UnixTime,
) -> Option<Webhook> {
    let w = c.account.get(&rec.account)?.webhooks.as_ref()?;
    let url = w.incoming_url.clone()?;
    let got = crate::webapi::message_get(rec, bytes);
    let mut out = serde_json::Map::new();
    out.insert("Version".into(), 0.into());
    if let serde_json::Value::Object(m) = &got["Message"] {
        for (k, v) in m {
            out.insert(k.clone(), v.clone());
        }
    }
    out.insert("Structure".into(), got["Structure"].clone());
    let meta = &got["Meta"];
    out.insert(
        "Meta".into(),
        serde_json::json!({
            "MsgID": rec.id.0,
            "MailFrom": meta["MailFrom"],
            "MailFromValidated": meta["MailFromValidated"],
            "MsgFromValidated": meta["MsgFromValidated"],
            "RcptTo": meta["RcptTo"],
            "DKIMVerifiedDomains": meta["DKIMVerifiedDomains"],
            "RemoteIP": meta["RemoteIP"],
            "Received": rec.received.rfc3339(),
            "MailboxName": rec.mailbox,
            "Automated": false,
        }),
    );
    Some(new_hook(
        &rec.account,
        url,
        "incoming",
        "incoming",
        &serde_json::Value::Object(out),
        now,
    ))
}

/// The outgoing hook of a message that came back (`r`, read by core) to the unique return
/// address of queue entry `entry` (`from_id`) of `account`, when it has an `outgoing_url`.
pub fn returned_hook(
    c: &Config,
    account: &str,
    entry: &rmox_storage::QueueEntry,
    from_id: &rmox_storage::FromId,
    r: &hook::Returned,
    now: UnixTime,
) -> Option<Webhook> {
    let w = c.account.get(account)?.webhooks.as_ref()?;
    let url = w.outgoing_url.clone()?;
    let payload = Outgoing {
        version: 0,
        event: r.event.as_str().into(),
        dsn: r.dsn,
        suppressing: r.suppressing,
        queue_msg_id: entry.id.0,
        from_id: from_id.id.clone(),
        message_id: from_id.message_id.clone(),
        subject: from_id.subject.clone(),
        webhook_queued: now.rfc3339(),
        smtp_code: r.smtp_code,
        smtp_enhanced_code: r.smtp_enhanced_code.clone(),
        error: if r.event == Event::Delivered {
            String::new()
        } else {
            r.note.clone()
        },
        extra: from_id.extra.clone(),
    };
    Some(new_hook(
        account,
        url,
        "outgoing",
        r.event.as_str(),
        &payload,
        now,
    ))
}

/// The id in a recipient address's local part after its domain's catchall separator.
fn from_id_of<'a>(c: &Config, rcpt_to: &'a str) -> Option<&'a str> {
    let (lp, domain) = rcpt_to.rsplit_once('@')?;
    let sep = c.catchall_separator(domain)?;
    lp.split_once(sep)
        .map(|(_, id)| id)
        .filter(|id| !id.is_empty())
}

/// A delivered message that came back to the unique return address of one of its
/// account's queue entries (mox's fromid): noted in the entry's history, its failure may
/// suppress the recipient, and the account's outgoing hook gets the DSN's event. `false`:
/// it is not such a message (an ordinary incoming one).
fn process_returned(
    store: &dyn MailStore,
    c: &Config,
    rec: &rmox_storage::MessageRecord,
    now: UnixTime,
) -> Result<bool, rmox_storage::StoreError> {
    let Some(fid) = rec.info.rcpt_to.as_deref().and_then(|r| from_id_of(c, r)) else {
        return Ok(false);
    };
    let Some((entry, _retired)) = store.queue_by_from_id(fid)? else {
        return Ok(false);
    };
    let Some(from_id) = entry.rcpt.from_id.as_ref() else {
        return Ok(false);
    };
    if entry.rcpt.sender_account.as_deref() != Some(rec.account.as_str()) {
        return Ok(false);
    }
    let bytes = store.message_bytes(rec.id)?;
    let r = hook::returned(&bytes);
    tracing::info!(
        account = %rec.account,
        message = rec.id.0,
        queue_id = entry.id.0,
        from_id = fid,
        event = r.event.as_str(),
        note = %r.note,
        "message about an earlier delivery came back to its return address"
    );
    store.queue_note(
        entry.id,
        rmox_storage::Attempt {
            time: now,
            host: "returned".into(),
            result: r.note.clone(),
            tls_mode: None,
            tls_result: None,
        },
    )?;
    if r.suppressing {
        store.suppression_add(
            &rec.account,
            rmox_storage::Suppression {
                address: entry.rcpt.recipient.clone(),
                reason: r.note.clone(),
                manual: false,
                created: now,
            },
        )?;
    }
    if let Some(h) = returned_hook(c, &rec.account, &entry, from_id, &r, now) {
        let id = store.webhook_add(h)?;
        tracing::debug!(
            message = rec.id.0,
            hook = id,
            "outgoing webhook of a returned message stored"
        );
    }
    Ok(true)
}

/// Whether any account may need a webhook (or a returned-message check) about an incoming
/// message ([`store_incoming`] does nothing otherwise).
pub fn wanted(c: &Config) -> bool {
    c.account
        .values()
        .any(|a| a.webhooks.is_some() || !a.from_id_login_addresses.is_empty())
}

/// After delivered messages `ids` were committed: a message that came back to a unique
/// return address is processed as such ([`process_returned`]); any other gets the
/// incoming webhook when its account has an `incoming_url`. A crash before this runs
/// loses the hook (never the message); a failure is logged.
pub fn store_incoming(store: &dyn MailStore, c: &Config, ids: &[rmox_storage::MessageId]) {
    if !wanted(c) {
        return;
    }
    let now = rmox_driver::now().wall;
    for id in ids {
        let made = (|| {
            let Some(rec) = store.message(*id)? else {
                return Ok(None);
            };
            if process_returned(store, c, &rec, now)? {
                return Ok(None);
            }
            let wanted = c
                .account
                .get(&rec.account)
                .and_then(|a| a.webhooks.as_ref())
                .is_some_and(|w| w.incoming_url.is_some());
            if !wanted {
                return Ok(None);
            }
            let bytes = store.message_bytes(*id)?;
            match incoming(c, &rec, &bytes, now) {
                Some(h) => store.webhook_add(h).map(Some),
                None => Ok(None),
            }
        })();
        match made {
            Ok(Some(hook)) => tracing::debug!(message = id.0, hook, "incoming webhook stored"),
            Ok(None) => {}
            Err::<_, rmox_storage::StoreError>(e) => {
                tracing::error!(message = id.0, error = %e, "storing the incoming webhook")
            }
        }
    }
}

fn new_hook<T: serde::Serialize>(
    account: &str,
    url: String,
    kind: &str,
    event: &str,
    payload: &T,
    now: UnixTime,
) -> Webhook {
    Webhook {
        id: 0,
        account: account.to_string(),
        url,
        kind: kind.into(),
        event: event.into(),
        payload: serde_json::to_string(payload).unwrap_or_default(),
        queued: now,
        attempts: 0,
        next_attempt: now,
        results: Vec::new(),
    }
}

/// The webhook sender's task lease ([`MailStore::task_lease`]).
const TASK: &str = "webhooks";

/// POSTs the stored webhooks as they come due, on the server's runtime.
pub struct Sender {
    store: Arc<dyn MailStore>,
    config: Arc<dyn Fn() -> Arc<Config> + Send + Sync>,
    dns: Option<crate::resolve::Dns>,
    /// The system's roots for https URLs (`None`: they could not be loaded, https hooks
    /// fail and are retried).
    tls: Option<Arc<rustls::ClientConfig>>,
    /// What the fetch machine is given for plain http URLs when the roots are missing
    /// (never used for TLS: https URLs are refused first then).
    plain: Option<Arc<rustls::ClientConfig>>,
}

impl Sender {
    /// A sender reading the current configuration through `config`; host names resolved
    /// through `dns` (IP literals need none); HTTPS verified against the system's roots.
    pub fn new(
        store: Arc<dyn MailStore>,
        config: Arc<dyn Fn() -> Arc<Config> + Send + Sync>,
        dns: Option<crate::resolve::Dns>,
    ) -> Sender {
        Sender {
            store,
            config,
            dns,
            tls: crate::queue::pkix_for(None),
            plain: rmox_core::tls::client_config(rmox_core::tls::ClientVerify::AcceptAny).ok(),
        }
    }

    /// POSTs due hooks until `shutdown`: each round takes up to [`BATCH`] due hooks, POSTs
    /// them one after the other, and records each result (retried after the configured
    /// interval, retired on a 2xx or after the last retry); rounds are a second apart.
    pub async fn run<R: rmox_driver::outbound::Net>(
        self: Arc<Self>,
        rt: R,
        shutdown: Arc<rmox_driver::Shutdown>,
    ) {
        use futures_lite::FutureExt;
        loop {
            let stop = async {
                shutdown.wait().await;
                true
            };
            let tick = async {
                rt.sleep_until(std::time::Instant::now() + Duration::from_secs(1))
                    .await;
                false
            };
            if stop.or(tick).await {
                return;
            }
            // One node at a time POSTs (a store shared by several nodes): the pass runs
            // while this node holds the webhooks' task lease, renewed as it goes.
            let lease = i64::try_from((self.config)().storage.lease_secs).unwrap_or(i64::MAX);
            let store = Arc::clone(&self.store);
            let due = rt
                .unblock(Box::new(move || {
                    let now = rmox_driver::now().wall;
                    if !store.task_lease(TASK, now, lease)? {
                        return Ok(Vec::new());
                    }
                    store.webhooks_due(now, BATCH)
                }))
                .await;
            let mut leased = std::time::Instant::now();
            let due = match due {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "webhooks: reading the due hooks");
                    continue;
                }
            };
            for h in due {
                if shutdown.is_triggered() {
                    return;
                }
                if leased.elapsed().as_secs() >= u64::try_from(lease / 3).unwrap_or(0) {
                    let store = Arc::clone(&self.store);
                    let renewed = rt
                        .unblock(Box::new(move || {
                            store.task_lease(TASK, rmox_driver::now().wall, lease)
                        }))
                        .await;
                    match renewed {
                        Ok(true) => leased = std::time::Instant::now(),
                        Ok(false) => break,
                        Err(e) => {
                            tracing::error!(error = %e, "webhooks: renewing the task lease");
                            break;
                        }
                    }
                }
                self.post(&rt, h).await;
            }
        }
    }

    /// One POST of `h` and its result stored.
    async fn post<R: rmox_driver::outbound::Net>(&self, rt: &R, h: Webhook) {
        let c = (self.config)();
        let w = c.account.get(&h.account).and_then(|a| a.webhooks.clone());
        let start = rmox_driver::now();
        let https = h.url.to_ascii_lowercase().starts_with("https:");
        let tls = if https {
            self.tls.clone()
        } else {
            self.tls.clone().or_else(|| self.plain.clone())
        };
        let result = match (&w, tls) {
            (None, _) => Err("the account has no webhooks configured any more".to_string()),
            (Some(_), None) => Err("no trusted roots for https (see the log)".to_string()),
            (Some(w), Some(tls)) => {
                let body = h.payload.as_bytes().to_vec();
                let mut req = FetchRequest::post(&h.url, "application/json", body);
                req.headers.push(Header::new(
                    hook::SIGNATURE_HEADER,
                    &hook::signature(w.secret.as_bytes(), start.wall.0, h.payload.as_bytes()),
                ));
                req.headers
                    .push(Header::new("X-Rmox-Webhook-Id", &h.id.to_string()));
                req.headers.push(Header::new(
                    "X-Rmox-Webhook-Attempt",
                    &(h.attempts + 1).to_string(),
                ));
                if let Some(a) = &w.authorization {
                    req.headers.push(Header::new("Authorization", a));
                }
                let config = Arc::new(FetchConfig {
                    tls,
                    limits: rmox_core::http::Limits {
                        max_body: 64 * 1024,
                        ..Default::default()
                    },
                    timeout: Duration::from_secs(c.webhooks.timeout_secs.max(1)),
                    user_agent: concat!("rmox/", env!("CARGO_PKG_VERSION")).into(),
                    allow_http: true,
                });
                let dns = self.dns.clone();
                let resolve: rmox_driver::fetch::Resolve = Arc::new(move |lookups| {
                    let dns = dns.clone();
                    Box::pin(async move {
                        match dns {
                            Some(d) => d.lookup_many_async(&lookups).await,
                            None => lookups
                                .iter()
                                .map(|_| {
                                    rmox_core::dns::LookupResult::TempFail(
                                        "no resolver (use an IP address in the URL)".into(),
                                    )
                                })
                                .collect(),
                        }
                    })
                });
                match rmox_driver::fetch::fetch(rt.clone(), config, &req, resolve).await {
                    Ok(r) if hook::accepted(r.status) => Ok(r.status),
                    Ok(r) => Err((r.status, format!("status {}", r.status))),
                    Err(e) => Err((0, e.to_string())),
                }
                .map_err(|(s, e)| format!("{s}\u{0}{e}"))
            }
        };
        let end = rmox_driver::now();
        let duration_ms = u64::try_from(end.mono.saturating_duration_since(start.mono).as_millis())
            .unwrap_or(u64::MAX);
        let (status, error) = match &result {
            Ok(s) => (*s, String::new()),
            Err(e) => match e.split_once('\u{0}') {
                Some((s, e)) => (s.parse().unwrap_or(0), e.to_string()),
                None => (0, e.clone()),
            },
        };
        let attempts = h.attempts + 1;
        let next = if result.is_ok() || w.is_none() {
            None
        } else {
            hook::retry_after(attempts, &c.webhooks.retry_intervals_secs)
                .map(|s| UnixTime(end.wall.0 + i64::try_from(s).unwrap_or(i64::MAX / 2)))
        };
        match &result {
            Ok(_) => {
                tracing::info!(id = h.id, account = %h.account, event = %h.event, url = %h.url, status, attempts, "webhook delivered")
            }
            Err(_) => {
                tracing::warn!(id = h.id, account = %h.account, event = %h.event, url = %h.url, status, error = %error, attempts, retry_at = ?next.map(|t| t.rfc3339()), "webhook failed")
            }
        }
        let store = Arc::clone(&self.store);
        let r = WebhookResult {
            time: start.wall,
            status,
            error,
            duration_ms,
        };
        let ok = result.is_ok();
        let id = h.id;
        let stored = rt
            .unblock(Box::new(move || {
                store.webhook_result(id, r, next, ok, rmox_driver::now().wall)
            }))
            .await;
        if let Err(e) = stored {
            tracing::error!(id, error = %e, "webhooks: storing a result");
        }
    }
}
