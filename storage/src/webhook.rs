//! Webhooks waiting to be POSTed and those done (retired), with every attempt's result.
//! Outgoing delivery hooks are written in the commit that records the delivery attempt
//! ([`crate::QueueRecord::webhook`]), so a hook is never lost and never made twice.

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};
use rmox_core::UnixTime;
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::model::unix;
use crate::store::Store;
use crate::tables::*;

/// One webhook call to make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Assigned when stored.
    pub id: u64,
    /// The account whose mail it is about.
    pub account: String,
    /// Where it is POSTed.
    pub url: String,
    /// `outgoing` or `incoming`.
    pub kind: String,
    /// For outgoing hooks: delivered, delayed, failed, suppressed, canceled; `incoming`.
    pub event: String,
    /// The JSON body.
    pub payload: String,
    /// When it was made.
    #[serde(with = "unix")]
    pub queued: UnixTime,
    /// POSTs made.
    pub attempts: u32,
    /// When the next POST is due.
    #[serde(with = "unix")]
    pub next_attempt: UnixTime,
    /// Every POST's result, oldest first.
    pub results: Vec<WebhookResult>,
}

/// The result of one POST.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookResult {
    /// When it started.
    #[serde(with = "unix")]
    pub time: UnixTime,
    /// The HTTP status (0 when there was no answer).
    pub status: u16,
    /// Why it failed (empty on success).
    pub error: String,
    /// How long it took.
    pub duration_ms: u64,
}

/// A webhook that is done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredWebhook {
    /// The hook, with its results.
    pub hook: Webhook,
    /// A POST was accepted (else the retries were used up, or it was dropped).
    pub success: bool,
    /// When it was retired.
    #[serde(with = "unix")]
    pub retired: UnixTime,
}

/// Stores `hook` (its id assigned) inside `txn`; returns the id.
pub(crate) fn webhook_add_txn(txn: &WriteTransaction, hook: &Webhook) -> Result<u64, StoreError> {
    let mut meta = txn.open_table(META)?;
    let id = meta.get(K_NEXT_HOOK)?.map(|g| g.value()).unwrap_or(1);
    meta.insert(K_NEXT_HOOK, id + 1)?;
    let h = Webhook { id, ..hook.clone() };
    txn.open_table(WEBHOOKS)?.insert(id, enc(&h)?.as_slice())?;
    txn.open_table(WEBHOOKS_DUE)?
        .insert((h.next_attempt.0, id), ())?;
    Ok(id)
}

/// Fills [`WEBHOOKS_DUE`] when it holds fewer entries than there are waiting hooks (a
/// database from before the index); how many were written.
pub(crate) fn fill_due(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let hooks = txn.open_table(WEBHOOKS)?;
    let mut due = txn.open_table(WEBHOOKS_DUE)?;
    if due.len()? >= hooks.len()? {
        return Ok(0);
    }
    let mut n = 0;
    for r in hooks.iter()? {
        let (k, v) = r?;
        let h: Webhook = dec("webhooks", v.value())?;
        due.insert((h.next_attempt.0, k.value()), ())?;
        n += 1;
    }
    Ok(n)
}

impl Store {
    /// Stores a webhook to be POSTed; returns its id.
    pub fn webhook_add(&self, hook: Webhook) -> Result<u64, StoreError> {
        self.write(vec![], vec![], move |txn| webhook_add_txn(txn, &hook))
    }

    /// The webhooks waiting, by id.
    pub fn webhooks(&self) -> Result<Vec<Webhook>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(WEBHOOKS)?;
        let mut v = Vec::new();
        for r in t.iter()? {
            v.push(dec("webhooks", r?.1.value())?);
        }
        Ok(v)
    }

    /// The webhooks due at `now`, by due time then id, at most `limit`: a range scan of the
    /// due index (the cost is that of the hooks returned).
    pub fn webhooks_due(&self, now: UnixTime, limit: usize) -> Result<Vec<Webhook>, StoreError> {
        let rtx = self.read()?;
        let due = rtx.open_table(WEBHOOKS_DUE)?;
        let t = rtx.open_table(WEBHOOKS)?;
        let mut v = Vec::new();
        for r in due.range((i64::MIN, 0u64)..=(now.0, u64::MAX))? {
            if v.len() >= limit {
                break;
            }
            let (k, _) = r?;
            if let Some(g) = t.get(k.value().1)? {
                v.push(dec("webhooks", g.value())?);
            }
        }
        Ok(v)
    }

    /// Records a POST's result: with `next` the hook waits until then, without it it is
    /// retired (`success` says how). False when the hook is gone (dropped meanwhile).
    pub fn webhook_result(
        &self,
        id: u64,
        result: WebhookResult,
        next: Option<UnixTime>,
        success: bool,
        now: UnixTime,
    ) -> Result<bool, StoreError> {
        self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(WEBHOOKS)?;
            let mut h: Webhook = match t.get(id)? {
                Some(g) => dec("webhooks", g.value())?,
                None => return Ok(false),
            };
            h.attempts += 1;
            h.results.push(result);
            let mut due = txn.open_table(WEBHOOKS_DUE)?;
            due.remove((h.next_attempt.0, id))?;
            match next {
                Some(at) => {
                    h.next_attempt = at;
                    t.insert(id, enc(&h)?.as_slice())?;
                    due.insert((at.0, id), ())?;
                }
                None => {
                    t.remove(id)?;
                    let r = RetiredWebhook {
                        hook: h,
                        success,
                        retired: now,
                    };
                    txn.open_table(WEBHOOKS_RETIRED)?
                        .insert(id, enc(&r)?.as_slice())?;
                }
            }
            Ok(true)
        })
    }

    /// Retires a waiting webhook without POSTing it again (an administrator's drop).
    pub fn webhook_drop(&self, id: u64, now: UnixTime) -> Result<bool, StoreError> {
        self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(WEBHOOKS)?;
            let hook: Webhook = match t.remove(id)? {
                Some(h) => dec("webhooks", h.value())?,
                None => return Ok(false),
            };
            drop(t);
            txn.open_table(WEBHOOKS_DUE)?
                .remove((hook.next_attempt.0, id))?;
            let r = RetiredWebhook {
                hook,
                success: false,
                retired: now,
            };
            txn.open_table(WEBHOOKS_RETIRED)?
                .insert(id, enc(&r)?.as_slice())?;
            Ok(true)
        })
    }

    /// The retired webhooks, by id.
    pub fn webhooks_retired(&self) -> Result<Vec<RetiredWebhook>, StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(WEBHOOKS_RETIRED)?;
        let mut v = Vec::new();
        for r in t.iter()? {
            v.push(dec("webhooks_retired", r?.1.value())?);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(n: i64) -> Webhook {
        Webhook {
            id: 0,
            account: "mjl".into(),
            url: "http://127.0.0.1:1/hook".into(),
            kind: "outgoing".into(),
            event: "delivered".into(),
            payload: "{}".into(),
            queued: UnixTime(n),
            attempts: 0,
            next_attempt: UnixTime(n),
            results: vec![],
        }
    }

    fn result(status: u16) -> WebhookResult {
        WebhookResult {
            time: UnixTime(5),
            status,
            error: String::new(),
            duration_ms: 1,
        }
    }

    /// Due hooks come by due time (not id), through the index; an index that is missing (a
    /// database from before it) is rebuilt when the store opens.
    #[test]
    fn due_by_time_and_index_rebuilt() {
        let d = tempfile::tempdir().unwrap();
        let due = |s: &Store, at: i64| -> Vec<u64> {
            s.webhooks_due(UnixTime(at), 10)
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect()
        };
        {
            let s = Store::open(d.path()).unwrap();
            for at in [30, 10, 20] {
                s.webhook_add(hook(at)).unwrap();
            }
            assert_eq!(due(&s, 25), [2, 3]);
            s.write(vec![], vec![], |txn| {
                txn.delete_table(WEBHOOKS_DUE)?;
                Ok(())
            })
            .unwrap();
        }
        let s = Store::open(d.path()).unwrap();
        assert_eq!(due(&s, 100), [2, 3, 1]);
    }

    /// Add, due, retry later, retire on success or after the last try, drop; all kept
    /// across a reopen.
    #[test]
    fn lifecycle() {
        let dir = std::env::temp_dir().join(format!("rmox-webhook-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = Store::open(&dir).unwrap();
            let a = s.webhook_add(hook(10)).unwrap();
            let b = s.webhook_add(hook(20)).unwrap();
            let c = s.webhook_add(hook(30)).unwrap();
            assert_eq!((a, b, c), (1, 2, 3));
            let due: Vec<u64> = s
                .webhooks_due(UnixTime(25), 10)
                .unwrap()
                .iter()
                .map(|h| h.id)
                .collect();
            assert_eq!(due, [1, 2]);
            assert_eq!(s.webhooks_due(UnixTime(25), 1).unwrap().len(), 1);
            // a fails and waits; b succeeds; c is dropped.
            assert!(s
                .webhook_result(a, result(500), Some(UnixTime(100)), false, UnixTime(25))
                .unwrap());
            assert!(s
                .webhook_result(b, result(200), None, true, UnixTime(25))
                .unwrap());
            assert!(s.webhook_drop(c, UnixTime(26)).unwrap());
            assert!(!s.webhook_drop(c, UnixTime(26)).unwrap());
            assert!(!s
                .webhook_result(c, result(200), None, true, UnixTime(27))
                .unwrap());
            assert!(s.webhooks_due(UnixTime(99), 10).unwrap().is_empty());
            let waiting = s.webhooks().unwrap();
            assert_eq!(waiting.len(), 1);
            assert_eq!((waiting[0].attempts, waiting[0].results.len()), (1, 1));
        }
        let s = Store::open(&dir).unwrap();
        let retired = s.webhooks_retired().unwrap();
        assert_eq!(
            retired
                .iter()
                .map(|r| (r.hook.id, r.success))
                .collect::<Vec<_>>(),
            [(2, true), (3, false)]
        );
        assert_eq!(s.webhooks_due(UnixTime(100), 10).unwrap()[0].id, 1);
        // The last try fails: retired as failed.
        assert!(s
            .webhook_result(1, result(0), None, false, UnixTime(101))
            .unwrap());
        assert!(s.webhooks().unwrap().is_empty());
        assert_eq!(s.webhooks_retired().unwrap()[0].hook.results.len(), 2);
        assert_eq!(s.webhook_add(hook(1)).unwrap(), 4, "ids are never reused");
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
