//! The focused parts of the storage interface beside [`MailStore`](rmox_storage::MailStore):
//! queue administration (hold rules, drops), report records and webhooks, on PostgreSQL.

use rmox_core::UnixTime;
use rmox_storage::{
    HoldRule, QueueAdminStore, QueueId, ReportEntry, ReportKind, ReportStore, RetiredWebhook,
    StoreError, TaskLeases, Webhook, WebhookResult, WebhookStore,
};

use crate::{
    big, col, enc, entry_locked, rec, records, remove_entry, report_code, unbig, webhook_add_tx,
    PgStore, Tx, Q,
};

impl QueueAdminStore for PgStore {
    fn hold_rule_add(&self, rule: HoldRule) -> Result<u64, StoreError> {
        self.tx(|t| {
            let row = t
                .opt("SELECT nextval('rmox_hold_rule_ids')", &[])?
                .ok_or_else(|| StoreError::Invalid("no id from the sequence".into()))?;
            let id: i64 = col(&row, 0)?;
            let r = HoldRule {
                id: unbig("hold_rules", id)?,
                ..rule
            };
            t.x(
                "INSERT INTO rmox_hold_rules (id, rec) VALUES ($1, $2)",
                &[&id, &enc(&r)?],
            )?;
            Ok(r.id)
        })
    }

    fn hold_rule_remove(&self, id: u64) -> Result<bool, StoreError> {
        let id = big(id)?;
        self.tx(|t| Ok(t.x("DELETE FROM rmox_hold_rules WHERE id = $1", &[&id])? > 0))
    }

    fn queue_drop_with(&self, id: QueueId, hook: Option<Webhook>) -> Result<(), StoreError> {
        self.tx(|t| {
            let e = entry_locked(t, id)?;
            if let Some(h) = &hook {
                webhook_add_tx(t, h)?;
            }
            remove_entry(t, &e)
        })
    }

    /// Message bytes live in the row the entries reference, written and removed in the
    /// same transactions: nothing can be left over.
    fn queue_remove_orphans(&self) -> Result<Vec<u64>, StoreError> {
        Ok(Vec::new())
    }
}

impl ReportStore for PgStore {
    fn reports(
        &self,
        kind: ReportKind,
        domain: &str,
    ) -> Result<Vec<(UnixTime, Vec<u8>)>, StoreError> {
        let k = report_code(kind)?;
        let d = domain.to_ascii_lowercase();
        self.read(|c| {
            c.q(
                "SELECT time, record FROM rmox_reports WHERE kind = $1 AND domain = $2
                 ORDER BY time, seq",
                &[&k, &d],
            )?
            .iter()
            .map(|r| Ok((UnixTime(col(r, 0)?), col::<Vec<u8>>(r, 1)?)))
            .collect()
        })
    }

    fn report_domains(&self, kind: ReportKind) -> Result<Vec<String>, StoreError> {
        let k = report_code(kind)?;
        self.read(|c| {
            c.q(
                "SELECT DISTINCT domain FROM rmox_reports WHERE kind = $1
                 ORDER BY domain COLLATE \"C\"",
                &[&k],
            )?
            .iter()
            .map(|r| col(r, 0))
            .collect()
        })
    }

    fn report_entries(&self, kind: ReportKind) -> Result<Vec<ReportEntry>, StoreError> {
        let k = report_code(kind)?;
        self.read(|c| {
            c.q(
                "SELECT domain, time, seq, record FROM rmox_reports WHERE kind = $1
                 ORDER BY domain COLLATE \"C\", time, seq",
                &[&k],
            )?
            .iter()
            .map(|r| {
                Ok(ReportEntry {
                    domain: col(r, 0)?,
                    time: UnixTime(col(r, 1)?),
                    seq: unbig("reports", col(r, 2)?)?,
                    record: col(r, 3)?,
                })
            })
            .collect()
        })
    }

    fn report_get(
        &self,
        kind: ReportKind,
        domain: &str,
        time: UnixTime,
        seq: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let k = report_code(kind)?;
        let d = domain.to_ascii_lowercase();
        let seq = big(seq)?;
        self.read(|c| {
            c.opt(
                "SELECT record FROM rmox_reports
                 WHERE kind = $1 AND domain = $2 AND time = $3 AND seq = $4",
                &[&k, &d, &time.0, &seq],
            )?
            .map(|r| col(&r, 0))
            .transpose()
        })
    }

    fn reports_remove(
        &self,
        kind: ReportKind,
        domain: &str,
        before: UnixTime,
    ) -> Result<(), StoreError> {
        let k = report_code(kind)?;
        let d = domain.to_ascii_lowercase();
        self.tx(|t| {
            t.x(
                "DELETE FROM rmox_reports WHERE kind = $1 AND domain = $2 AND time < $3",
                &[&k, &d, &before.0],
            )?;
            Ok(())
        })
    }
}

/// The waiting webhook `id`, locked; `None` when it is gone.
fn hook_locked(t: &mut Tx<'_>, id: i64) -> Result<Option<Webhook>, StoreError> {
    t.opt(
        "SELECT rec FROM rmox_webhooks WHERE id = $1 FOR UPDATE",
        &[&id],
    )?
    .map(|r| rec("webhooks", &r, 0))
    .transpose()
}

/// Moves `hook` from the waiting to the retired webhooks.
fn retire_hook(
    t: &mut Tx<'_>,
    hook: Webhook,
    success: bool,
    now: UnixTime,
) -> Result<(), StoreError> {
    let id = big(hook.id)?;
    t.x("DELETE FROM rmox_webhooks WHERE id = $1", &[&id])?;
    let r = RetiredWebhook {
        hook,
        success,
        retired: now,
    };
    t.x(
        "INSERT INTO rmox_webhooks_retired (id, rec) VALUES ($1, $2)",
        &[&id, &enc(&r)?],
    )?;
    Ok(())
}

impl WebhookStore for PgStore {
    fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        self.read(|c| {
            let rows = c.q("SELECT rec FROM rmox_webhooks ORDER BY id", &[])?;
            records("webhooks", &rows)
        })
    }

    fn webhooks_due(&self, now: UnixTime, limit: usize) -> Result<Vec<Webhook>, StoreError> {
        let limit = big(limit.min(i64::MAX as usize) as u64)?;
        self.read(|c| {
            let rows = c.q(
                "SELECT rec FROM rmox_webhooks WHERE next_attempt <= $1
                 ORDER BY next_attempt, id LIMIT $2",
                &[&now.0, &limit],
            )?;
            records("webhooks", &rows)
        })
    }

    fn webhook_result(
        &self,
        id: u64,
        result: WebhookResult,
        next: Option<UnixTime>,
        success: bool,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        let id = big(id)?;
        self.tx(|t| {
            let Some(mut h) = hook_locked(t, id)? else {
                return Ok(false);
            };
            h.attempts += 1;
            h.results.push(result);
            match next {
                Some(at) => {
                    h.next_attempt = at;
                    t.x(
                        "UPDATE rmox_webhooks SET next_attempt = $2, rec = $3 WHERE id = $1",
                        &[&id, &at.0, &enc(&h)?],
                    )?;
                }
                None => retire_hook(t, h, success, now)?,
            }
            Ok(true)
        })
    }

    fn webhook_drop(&self, id: u64, now: UnixTime) -> Result<bool, StoreError> {
        let id = big(id)?;
        self.tx(|t| {
            let Some(h) = hook_locked(t, id)? else {
                return Ok(false);
            };
            retire_hook(t, h, false, now)?;
            Ok(true)
        })
    }

    fn webhooks_retired(&self) -> Result<Vec<RetiredWebhook>, StoreError> {
        self.read(|c| {
            let rows = c.q("SELECT rec FROM rmox_webhooks_retired ORDER BY id", &[])?;
            records("webhooks_retired", &rows)
        })
    }
}

impl TaskLeases for PgStore {
    /// One row per task: taken when absent, run out, or this node's already.
    fn task_lease(&self, task: &str, now: UnixTime, secs: i64) -> Result<bool, StoreError> {
        if secs <= 0 {
            return Err(StoreError::Invalid(format!("task lease of {secs} seconds")));
        }
        let until = now.0.saturating_add(secs);
        self.tx(|t| {
            Ok(t.opt(
                "INSERT INTO rmox_task_leases (task, node, until) VALUES ($1, $2, $3)
                 ON CONFLICT (task) DO UPDATE SET node = EXCLUDED.node, until = EXCLUDED.until
                 WHERE rmox_task_leases.node = EXCLUDED.node OR rmox_task_leases.until <= $4
                 RETURNING node",
                &[&task, &self.node, &until, &now.0],
            )?
            .is_some())
        })
    }
}
