//! Per-network delivery counts per UTC day, for the per-day delivery rate limits. The
//! store only keeps the numbers; whether a network is over its limit is decided in
//! `rmox_core::ratelimit`. Each count is one row keyed by (day, network): reading it is a
//! point lookup whose cost does not grow with the number of messages counted.

use redb::ReadableTable;

use crate::error::StoreError;
use crate::store::Store;
use crate::tables::DELIVERY_COUNTS;

impl Store {
    /// (messages, bytes) counted for `network` on `day` (UTC days since the epoch); zeros
    /// when nothing was counted.
    pub fn delivery_counts(&self, day: i64, network: &str) -> Result<(u64, u64), StoreError> {
        let rtx = self.read()?;
        let t = rtx.open_table(DELIVERY_COUNTS)?;
        let v = t.get((day, network))?.map(|g| g.value());
        Ok(v.unwrap_or((0, 0)))
    }

    /// Adds (messages, bytes) to the counts of each network on `day`, in one durable commit.
    pub fn delivery_counts_add(
        &self,
        day: i64,
        adds: Vec<(String, u64, u64)>,
    ) -> Result<(), StoreError> {
        if adds.is_empty() {
            return Ok(());
        }
        self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(DELIVERY_COUNTS)?;
            for (net, m, b) in &adds {
                let old = t.get((day, net.as_str()))?.map(|g| g.value());
                let (om, ob) = old.unwrap_or((0, 0));
                t.insert(
                    (day, net.as_str()),
                    (om.saturating_add(*m), ob.saturating_add(*b)),
                )?;
            }
            Ok(())
        })
    }

    /// Removes the counts of days before `before_day`; returns how many rows went.
    pub fn delivery_counts_cleanup(&self, before_day: i64) -> Result<u64, StoreError> {
        self.write(vec![], vec![], move |txn| {
            let mut t = txn.open_table(DELIVERY_COUNTS)?;
            let mut n = 0u64;
            t.retain_in((i64::MIN, "")..(before_day, ""), |_, _| {
                n += 1;
                false
            })?;
            Ok(n)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_read_cleanup_and_reopen() {
        let d = tempfile::tempdir().unwrap();
        {
            let s = Store::open(d.path()).unwrap();
            assert_eq!(s.delivery_counts(10, "192.0.2.1/32").unwrap(), (0, 0));
            s.delivery_counts_add(
                10,
                vec![
                    ("192.0.2.1/32".into(), 1, 100),
                    ("192.0.2.0/26".into(), 1, 100),
                ],
            )
            .unwrap();
            s.delivery_counts_add(10, vec![("192.0.2.1/32".into(), 2, 50)])
                .unwrap();
            s.delivery_counts_add(11, vec![("192.0.2.1/32".into(), 1, 1)])
                .unwrap();
            assert_eq!(s.delivery_counts(10, "192.0.2.1/32").unwrap(), (3, 150));
            assert_eq!(s.delivery_counts(10, "192.0.2.0/26").unwrap(), (1, 100));
        }
        // Durable: a reopened store has them.
        let s = Store::open(d.path()).unwrap();
        assert_eq!(s.delivery_counts(10, "192.0.2.1/32").unwrap(), (3, 150));
        assert_eq!(s.delivery_counts_cleanup(11).unwrap(), 2);
        assert_eq!(s.delivery_counts(10, "192.0.2.1/32").unwrap(), (0, 0));
        assert_eq!(s.delivery_counts(11, "192.0.2.1/32").unwrap(), (1, 1));
    }
}
