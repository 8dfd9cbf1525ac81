//! Queue leases between the nodes sharing one database.
//!
//! A node that takes an entry for an attempt writes its name and the lease's end into the
//! entry's row (`lease_node`, `lease_until`), in a transaction that locks the rows it takes
//! and skips rows another transaction holds (`FOR UPDATE SKIP LOCKED`). While the lease
//! runs, other nodes neither take the entry nor see it due; a node that dies loses its
//! leases when they end, and another node takes the entries then. Any recorded change of
//! the entry (the attempt's result, a hold, a reschedule) ends its lease; a note in its
//! history does not.

use std::collections::BTreeMap;

use postgres::types::ToSql;
use rmox_core::UnixTime;
use rmox_storage::{QueueEntry, QueueId, StoreError};

use crate::{big, col, rec, Tx, Q};

/// Which entries [`lease_tx`] takes.
pub(crate) enum Pick<'a> {
    /// Due at `now`, oldest first, at most this many, whose lease is absent or over.
    Due { limit: i64 },
    /// These entries (read earlier with their next attempt then), when not rescheduled
    /// past it, whose lease is absent, over or this node's; in the order given.
    Listed(&'a [(QueueId, UnixTime)]),
}

/// SQL: the entry's lease (columns prefixed with `q`) is absent or ran out at `now`, or,
/// with `node`, is that node's. `now` and `node` are parameter placeholders.
pub(crate) fn lease_free(q: &str, now: &str, node: Option<&str>) -> String {
    let own = node.map_or(String::new(), |n| format!(" OR {q}lease_node = {n}"));
    format!("({q}lease_until IS NULL OR {q}lease_until <= {now}{own})")
}

/// SQL: when an entry not held is due for `node`: its next attempt, or, when another node
/// leases it, the later of that and the lease's end.
pub(crate) const NEXT_DUE: &str = "
SELECT LEAST(
    (SELECT min(next_attempt) FROM rmox_queue
     WHERE NOT held AND (lease_node IS NULL OR lease_until IS NULL OR lease_node = $1)),
    (SELECT min(GREATEST(next_attempt, lease_until)) FROM rmox_queue
     WHERE NOT held AND lease_node IS NOT NULL AND lease_node <> $1
       AND lease_until IS NOT NULL))";

/// Leases the entries `pick` selects to `node` until `now + lease_secs`; they come back as
/// stored.
pub(crate) fn lease_tx(
    t: &mut Tx<'_>,
    node: &str,
    now: UnixTime,
    lease_secs: i64,
    pick: Pick<'_>,
) -> Result<Vec<QueueEntry>, StoreError> {
    let until = now.0.saturating_add(lease_secs);
    // $1 node, $2 lease end, $3 now; then the pick's.
    let (from, due, free, order) = match pick {
        Pick::Due { .. } => (
            "",
            "q.next_attempt <= $3",
            lease_free("q.", "$3", None),
            "ORDER BY q.next_attempt, q.id LIMIT $4",
        ),
        Pick::Listed(_) => (
            "JOIN unnest($4::bigint[], $5::bigint[]) AS c(id, due) ON c.id = q.id",
            "q.next_attempt <= c.due",
            lease_free("q.", "$3", Some("$1")),
            "",
        ),
    };
    let sql = format!(
        "UPDATE rmox_queue SET lease_node = $1, lease_until = $2
         WHERE id IN (
             SELECT q.id FROM rmox_queue q {from}
             WHERE NOT q.held AND {due} AND {free}
             {order}
             FOR UPDATE OF q SKIP LOCKED)
         RETURNING id, next_attempt, rec"
    );
    let (ids, dues, limit) = match pick {
        Pick::Due { limit } => (Vec::new(), Vec::new(), limit),
        Pick::Listed(l) => (
            l.iter()
                .map(|(id, _)| big(id.0))
                .collect::<Result<Vec<i64>, _>>()?,
            l.iter().map(|(_, due)| due.0).collect::<Vec<i64>>(),
            0,
        ),
    };
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&node, &until, &now.0];
    match pick {
        Pick::Due { .. } => params.push(&limit),
        Pick::Listed(_) => params.extend([&ids as &(dyn ToSql + Sync), &dues]),
    }
    let rows = t.q(&sql, &params)?;
    let mut got: Vec<(i64, i64, QueueEntry)> = Vec::with_capacity(rows.len());
    for r in &rows {
        got.push((col(r, 0)?, col(r, 1)?, rec("queue", r, 2)?));
    }
    match pick {
        Pick::Due { .. } => {
            got.sort_by_key(|(id, next, _)| (*next, *id));
            Ok(got.into_iter().map(|(_, _, e)| e).collect())
        }
        Pick::Listed(_) => {
            // In the order given, each once.
            let mut by_id: BTreeMap<i64, QueueEntry> =
                got.into_iter().map(|(id, _, e)| (id, e)).collect();
            let out = ids.iter().filter_map(|id| by_id.remove(id)).collect();
            Ok(out)
        }
    }
}
