//! `rmox queue ...`: administration of the queue with the server stopped (the store allows
//! one process).

use std::path::Path;
use std::sync::Arc;

use rmox_core::UnixTime;
use rmox_storage::{HoldRule, QueueEntry, QueueFilter, QueueId, Store, Suppression};

use super::{wall_clock, Runner};
use crate::config::Config;
use crate::Fail;

/// What to do.
#[derive(Debug, Clone)]
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

fn open(c: &Config) -> Result<Store, Fail> {
    let data = c.data_dir();
    Store::open(&data).map_err(|e| {
        Fail(format!(
            "opening data directory {}: {e} (is `rmox serve` running? the queue commands need the server stopped)",
            data.display()
        ))
    })
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

/// Runs `op` against the config's store, printing to stdout.
pub fn run(config: &Path, op: Op) -> Result<(), Fail> {
    let c = Arc::new(Config::load(config)?);
    let store = Arc::new(open(&c)?);
    let out = execute(&c, &store, op, None)?;
    for l in out {
        println!("{l}");
    }
    Ok(())
}

/// Executes `op` and returns the lines to print. `dns` overrides the configured resolver
/// for `kick` (tests).
pub fn execute(
    c: &Arc<Config>,
    store: &Arc<Store>,
    op: Op,
    dns: Option<crate::resolve::Dns>,
) -> Result<Vec<String>, Fail> {
    let now = rmox_driver::now().wall;
    let mut out = Vec::new();
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
            for e in store.queue_list(&f)? {
                out.push(entry_line(&e));
            }
        }
        Op::Show(id) => {
            let Some(e) = store.queue_get(QueueId(id))? else {
                return Err(Fail(format!("queue entry {id} not found")));
            };
            let msg = store.queue_message(e.msg_id)?;
            out.push(String::from_utf8_lossy(&msg).into_owned());
        }
        Op::Hold(id) => {
            store.queue_hold(exists(id)?)?;
            out.push(format!("{id} held"));
        }
        Op::Release(id) => {
            store.queue_release(exists(id)?)?;
            out.push(format!("{id} released"));
        }
        Op::Drop(id) => {
            store.queue_drop(exists(id)?)?;
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
            out.push(format!("{} failed, DSN sent to the sender", id.0));
        }
        Op::Kick(id) => {
            let qid = exists(id)?;
            let e = store.queue_update(qid, move |e| e.rcpt.next_attempt = now)?;
            if e.rcpt.hold {
                out.push(format!("{id} is held: release it first"));
                return Ok(out);
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
            for r in store.hold_rules()? {
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
            for r in store.queue_retired(1000)? {
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
            for s in store.suppressions(&a)? {
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
    Ok(out)
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
