//! `rmox queue ...`: administration of the queue, through the running server's admin API
//! ([`crate::ctl`]) or, with the server stopped, on the data directory itself: the same
//! [`execute_answer`] either way.

use std::path::Path;
use std::sync::Arc;

use rmox_core::UnixTime;
use rmox_storage::MailStore;
use rmox_storage::{HoldRule, QueueEntry, QueueFilter, QueueId, StoreError, Suppression};

use super::{wall_clock, Runner};
use crate::config::Config;
use crate::Fail;

/// What to do.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// List entries.
    List {
        /// Sender account.
        account: Option<String>,
        /// Recipient domain.
        domain: Option<String>,
        /// Only held entries.
        held: bool,
    },
    /// Hold an entry.
    Hold(u64),
    /// Release an entry.
    Release(u64),
    /// Fail an entry with a DSN to the sender.
    Fail(u64),
    /// Remove an entry without a trace.
    Drop(u64),
    /// Attempt an entry now.
    Kick(u64),
    /// Print an entry's queued message.
    Show(u64),
    /// Add a hold rule.
    HoldruleAdd {
        /// Sender account.
        account: Option<String>,
        /// Sender domain.
        sender_domain: Option<String>,
        /// Recipient domain.
        recipient_domain: Option<String>,
    },
    /// List hold rules.
    HoldruleList,
    /// Remove a hold rule.
    HoldruleRemove(u64),
    /// List retired entries.
    RetiredList,
    /// An account's suppression list.
    SuppressionList(String),
    /// Add to an account's suppression list.
    SuppressionAdd(String, String),
    /// Remove from an account's suppression list.
    SuppressionRemove(String, String),
}

/// Removes entry `e` from the queue; the sender's application learns of it (a `canceled`
/// webhook, stored in the same commit).
pub fn drop_entry(c: &Config, store: &dyn MailStore, e: &QueueEntry) -> Result<(), StoreError> {
    let hook = match e.rcpt.sender_account.as_deref() {
        Some(a) if !e.rcpt.is_dsn => crate::webhooks::outgoing(
            c,
            a,
            e.id.0,
            rmox_core::webhook::Event::Canceled,
            "",
            false,
            e.rcpt.from_id.as_ref().map_or("", |f| f.id.as_str()),
            &store.queue_message(e.msg_id).unwrap_or_default(),
            rmox_driver::now().wall,
        ),
        _ => None,
    };
    store.queue_drop_with(e.id, hook)
}

fn time(t: UnixTime) -> String {
    t.0.to_string()
}

/// One line per entry.
pub fn entry_line(e: &QueueEntry) -> String {
    let err = e
        .last_error
        .as_deref()
        .and_then(|s| s.lines().next())
        .unwrap_or("");
    format!(
        "{}{}{} from <{}> to <{}> account {} attempts {} next {} size {}{}{}",
        e.id.0,
        if e.rcpt.hold { " held" } else { "" },
        if e.rcpt.is_dsn { " dsn" } else { "" },
        e.rcpt.mail_from,
        e.rcpt.recipient,
        e.rcpt.sender_account.as_deref().unwrap_or("-"),
        e.attempts,
        time(e.rcpt.next_attempt),
        e.size,
        if err.is_empty() { "" } else { " last error: " },
        err
    )
}

/// Runs `op` for the config at `config` (through the running server when there is one),
/// printing lines, or JSON with `json`.
pub fn run(config: &Path, op: Op, json: bool) -> Result<(), Fail> {
    crate::ctl::run(config, crate::ctl::Request::Queue { op }, json)
}

/// Executes `op` with the server stopped and returns the lines to print. `dns` overrides
/// the configured resolver for `kick` (tests).
pub fn execute(
    c: &Arc<Config>,
    store: &Arc<dyn MailStore>,
    op: Op,
    dns: Option<crate::resolve::Dns>,
) -> Result<Vec<String>, Fail> {
    execute_answer(c, store, op, dns, None).map(|a| a.lines)
}

/// Executes `op`: with `live`, the running server's queue runner (woken after a change;
/// `kick` schedules the entry for it), else on a stopped server's data directory (`kick`
/// delivers from the command, through `dns` when given). Lines for people, JSON for
/// scripts (the entries, rules or suppressions for the listings).
pub fn execute_answer(
    c: &Arc<Config>,
    store: &Arc<dyn MailStore>,
    op: Op,
    dns: Option<crate::resolve::Dns>,
    live: Option<&Arc<super::Wakeup>>,
) -> Result<crate::ctl::Answer, Fail> {
    let now = rmox_driver::now().wall;
    let mut out = Vec::new();
    let to_json =
        |v: Result<serde_json::Value, serde_json::Error>| -> Result<serde_json::Value, Fail> {
            v.map_err(|e| Fail(e.to_string()))
        };
    let mut json: Option<serde_json::Value> = None;
    let exists = |id: u64| -> Result<QueueId, Fail> {
        match store.queue_get(QueueId(id))? {
            Some(_) => Ok(QueueId(id)),
            None => Err(Fail(format!("queue entry {id} not found"))),
        }
    };
    match op {
        Op::List {
            account,
            domain,
            held,
        } => {
            let f = QueueFilter {
                account,
                to_domain: domain,
                hold: held.then_some(true),
                ..QueueFilter::default()
            };
            let list = store.queue_list(&f)?;
            for e in &list {
                out.push(entry_line(e));
            }
            json = Some(to_json(serde_json::to_value(&list))?);
        }
        Op::Show(id) => {
            let Some(e) = store.queue_get(QueueId(id))? else {
                return Err(Fail(format!("queue entry {id} not found")));
            };
            let msg = store.queue_message(e.msg_id)?;
            let text = String::from_utf8_lossy(&msg).into_owned();
            json = Some(
                serde_json::json!({ "entry": to_json(serde_json::to_value(&e))?, "message": text }),
            );
            out.push(text);
        }
        Op::Hold(id) => {
            store.queue_hold(exists(id)?)?;
            out.push(format!("{id} held"));
        }
        Op::Release(id) => {
            store.queue_release(exists(id)?)?;
            if let Some(w) = live {
                w.notify();
            }
            out.push(format!("{id} released"));
        }
        Op::Drop(id) => {
            let id = exists(id)?;
            if let Some(e) = store.queue_get(id)? {
                drop_entry(c, store.as_ref(), &e)?;
            }
            out.push(format!("{id} dropped"));
        }
        Op::Fail(id) => {
            let id = exists(id)?;
            let connector = Arc::new(NoConnector);
            let r = Runner::new(
                Arc::clone(store),
                Arc::clone(c),
                connector,
                seed(),
                wall_clock(),
            );
            r.fail_entry(id)?;
            if let Some(w) = live {
                // The DSN may have been queued.
                w.notify();
            }
            out.push(format!("{} failed, DSN sent to the sender", id.0));
        }
        Op::Kick(id) => {
            let qid = exists(id)?;
            let e = store.queue_update_with(qid, Box::new(move |e| e.rcpt.next_attempt = now))?;
            if e.rcpt.hold {
                out.push(format!("{id} is held: release it first"));
                return Ok(crate::ctl::Answer::lines(out));
            }
            if let Some(w) = live {
                // The running server's runner delivers it: a second runner here could
                // deliver it twice.
                w.notify();
                out.push(format!(
                    "{id} scheduled now: the running server attempts it (see `rmox queue list`)"
                ));
                return Ok(crate::ctl::Answer::lines(out));
            }
            let connector = Runner::connector_for(c, store, dns, seed())?;
            let r = Arc::new(Runner::new(
                Arc::clone(store),
                Arc::clone(c),
                connector,
                seed(),
                wall_clock(),
            ));
            r.run_selected(now, Some(qid))?;
            match store.queue_get(qid)? {
                Some(e) => out.push(format!("attempted, still queued: {}", entry_line(&e))),
                None => {
                    let how = store
                        .queue_retired(1000)?
                        .into_iter()
                        .find(|r| r.entry.id == qid)
                        .map(|r| format!("{:?}", r.outcome))
                        .unwrap_or_else(|| "retired".into());
                    out.push(format!("{id}: {how}"));
                }
            }
        }
        Op::HoldruleAdd {
            account,
            sender_domain,
            recipient_domain,
        } => {
            let id = store.hold_rule_add(HoldRule {
                id: 0,
                account,
                sender_domain,
                recipient_domain,
            })?;
            out.push(format!("hold rule {id} added"));
        }
        Op::HoldruleList => {
            let rules = store.hold_rules()?;
            json = Some(to_json(serde_json::to_value(&rules))?);
            for r in rules {
                out.push(format!(
                    "{} account {} sender-domain {} recipient-domain {}",
                    r.id,
                    r.account.as_deref().unwrap_or("*"),
                    r.sender_domain.as_deref().unwrap_or("*"),
                    r.recipient_domain.as_deref().unwrap_or("*")
                ));
            }
        }
        Op::HoldruleRemove(id) => {
            if !store.hold_rule_remove(id)? {
                return Err(Fail(format!("hold rule {id} not found")));
            }
            out.push(format!("hold rule {id} removed"));
        }
        Op::RetiredList => {
            let retired = store.queue_retired(1000)?;
            json = Some(to_json(serde_json::to_value(&retired))?);
            for r in retired {
                out.push(format!(
                    "{} retired {} {:?}: {}",
                    r.entry.id.0,
                    time(r.retired),
                    r.outcome,
                    entry_line(&r.entry)
                ));
            }
        }
        Op::SuppressionList(a) => {
            let list = store.suppressions(&a)?;
            json = Some(to_json(serde_json::to_value(&list))?);
            for s in list {
                out.push(format!(
                    "{} {} {}{}",
                    s.address,
                    time(s.created),
                    if s.manual { "manual " } else { "" },
                    s.reason.lines().next().unwrap_or("")
                ));
            }
        }
        Op::SuppressionAdd(a, addr) => {
            if store.account(&a)?.is_none() {
                return Err(Fail(format!("account {a:?} not found")));
            }
            store.suppression_add(
                &a,
                Suppression {
                    address: addr.clone(),
                    reason: "added by the administrator".into(),
                    manual: true,
                    created: now,
                },
            )?;
            out.push(format!("{addr} suppressed for {a}"));
        }
        Op::SuppressionRemove(a, addr) => {
            if !store.suppression_remove(&a, &addr)? {
                return Err(Fail(format!(
                    "{addr} is not on the suppression list of {a}"
                )));
            }
            out.push(format!("{addr} removed from the suppression list of {a}"));
        }
    }
    Ok(match json {
        Some(json) => crate::ctl::Answer { lines: out, json },
        None => crate::ctl::Answer::lines(out),
    })
}

fn seed() -> u64 {
    crate::serve::os_seed()
}

/// For operations that never deliver.
struct NoConnector;

impl super::Connector for NoConnector {
    fn deliver(&self, job: &super::Job<'_>) -> Vec<rmox_core::queue::AttemptResult> {
        job.items
            .iter()
            .map(|_| {
                rmox_core::queue::AttemptResult::Temporary(rmox_core::queue::Failure::local(
                    "not delivering from this command",
                    rmox_core::smtp::Enhanced::new(4, 0, 0),
                ))
            })
            .collect()
    }
}
