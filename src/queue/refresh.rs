//! MTA-STS policies refreshed in the background (RFC 8461 5.1 and 10.2, as mox does): a
//! task of the server's runtime, beside the report senders, that every
//! `queue.mtasts_refresh_interval_secs` looks at the cached policies that deliveries used
//! recently and that are due ([`rmox_core::tlspolicy::refresh_due`]), looks up their
//! `_mta-sts` record through the server's DNS loop and, when core's
//! [`rmox_core::tlspolicy::refresh`] says so (the id changed, or the policy is about to
//! expire), fetches the policy through the driver's HTTPS loop and updates the cache, so
//! that a delivery finds a current policy without waiting for a fetch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;
use rmox_core::dns::{Lookup, RecordType};
use rmox_core::tlspolicy::{
    refresh, refresh_due, CacheAction, RecordAnswer, StsCacheEntry, StsDecision,
};
use rmox_core::UnixTime;
use rmox_driver::outbound::Net;
use rmox_storage::MailStore;
use rmox_storage::{MtaStsRecord, StoreError};

use crate::resolve::Dns;

/// The refresher: the policy cache in `store`, DNS through `dns`.
pub struct StsRefresher {
    store: Arc<dyn MailStore>,
    dns: Arc<Dns>,
    every: Duration,
}

impl StsRefresher {
    /// Looks every `every` (`None` when zero: no refresher).
    pub fn new(store: Arc<dyn MailStore>, dns: Dns, every_secs: u64) -> Option<StsRefresher> {
        (every_secs > 0).then(|| StsRefresher {
            store,
            dns: Arc::new(dns),
            every: Duration::from_secs(every_secs),
        })
    }

    /// Runs until `shutdown`: a round at start, then every interval.
    pub async fn run<R: Net>(self: Arc<Self>, rt: R, shutdown: Arc<rmox_driver::Shutdown>) {
        loop {
            match self.round(&rt, rmox_driver::now().wall).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(policies = n, "MTA-STS policies refreshed"),
                Err(e) => tracing::error!(error = %e, "MTA-STS policy refresh"),
            }
            let stop = async {
                shutdown.wait().await;
                true
            };
            let tick = async {
                rt.sleep_until(Instant::now() + self.every).await;
                false
            };
            if stop.or(tick).await {
                break;
            }
        }
        tracing::info!("MTA-STS refresher stopped");
    }

    /// One round at `now`: the number of cache entries replaced or removed.
    pub async fn round<R: Net>(&self, rt: &R, now: UnixTime) -> Result<usize, StoreError> {
        let store = Arc::clone(&self.store);
        let list = rt.unblock(Box::new(move || store.mtasts_list())).await?;
        let mut changed = 0;
        for rec in list {
            let domain = rec.domain.clone();
            let Some(cached) = rec.to_entry().to_cached() else {
                continue;
            };
            if !refresh_due(&cached, rec.last_use, now) {
                continue;
            }
            let lookup = Lookup {
                name: rmox_core::tlspolicy::mtasts::record_name(&domain),
                rtype: RecordType::Txt,
            };
            let answers = self.dns.lookup_many_async(&[lookup]).await;
            let record = match answers.first() {
                Some(a) => RecordAnswer::from_lookup(a),
                None => RecordAnswer::TempError,
            };
            let mut decision = refresh(&cached, &record, None, now);
            if decision == StsDecision::Fetch {
                tracing::info!(%domain, url = %rmox_core::tlspolicy::policy_url(&domain), "refreshing MTA-STS policy: fetch");
                let fetched = self.fetch(rt, &domain).await;
                decision = refresh(&cached, &record, Some(fetched), now);
            }
            let StsDecision::Apply(applied) = decision else {
                continue;
            };
            let store = Arc::clone(&self.store);
            let last_use = rec.last_use;
            let r = match applied.cache {
                CacheAction::Keep => continue,
                CacheAction::Store(c) => {
                    tracing::info!(%domain, id = %c.id, "MTA-STS policy refreshed");
                    let mut new =
                        MtaStsRecord::from_entry(&StsCacheEntry::from_cached(&domain, &c));
                    new.last_use = last_use;
                    rt.unblock(Box::new(move || store.mtasts_put(new))).await
                }
                CacheAction::Delete => {
                    tracing::info!(%domain, source = ?applied.source, "MTA-STS policy dropped");
                    rt.unblock(Box::new(move || store.mtasts_remove(&domain)))
                        .await
                }
            };
            r?;
            changed += 1;
        }
        Ok(changed)
    }

    /// GETs the policy of `domain` with the direct transport's roots.
    async fn fetch<R: Net>(
        &self,
        rt: &R,
        domain: &str,
    ) -> Result<rmox_core::tlspolicy::StsPolicy, rmox_core::tlspolicy::FetchError> {
        let Some(roots) = super::pkix_for(None) else {
            return Err(rmox_core::tlspolicy::FetchError::Fetch(
                "no trusted roots for the policy fetch".into(),
            ));
        };
        let config = Arc::new(rmox_core::http::FetchConfig::mta_sts(roots));
        let dns = Arc::clone(&self.dns);
        let resolve: rmox_driver::fetch::Resolve = Arc::new(move |lookups| {
            let dns = Arc::clone(&dns);
            Box::pin(async move { dns.lookup_many_async(&lookups).await })
        });
        let req = rmox_core::http::FetchRequest::get(&rmox_core::tlspolicy::policy_url(domain));
        let r = rmox_driver::fetch::fetch(rt.clone(), config, &req, resolve).await;
        rmox_core::http::fetch::sts_policy(&r)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use rmox_core::dns::StaticZone;

    use rmox_storage::Store;

    use super::*;
    use crate::testutil::Tmp;

    fn put(store: &dyn MailStore, domain: &str, mode: &str, fetched: i64, last_use: Option<i64>) {
        store
            .mtasts_put(MtaStsRecord {
                domain: domain.into(),
                policy: format!(
                    "version: STSv1\r\nmode: {mode}\r\nmx: mx.{domain}\r\nmax_age: 2592000\r\n"
                ),
                record_id: "1".into(),
                fetched: UnixTime(fetched),
                expires: UnixTime(fetched + 2_592_000),
                last_use: None,
            })
            .unwrap();
        if let Some(t) = last_use {
            store.mtasts_touch(domain, UnixTime(t)).unwrap();
        }
    }

    /// `queue.mtasts_refresh_interval_secs = 0` makes no refresher. A round drops the
    /// cached mode-none policy whose record is gone (seed 001's note), keeps a policy
    /// whose record id is unchanged, and leaves alone one unused for over 30 days (its
    /// record gone too), all without a fetch (no HTTPS server exists here).
    #[test]
    fn round_without_fetch() {
        let tmp = Tmp::new("stsrefresh");
        let store = Arc::new(Store::open(&tmp.0.join("data")).unwrap());
        let zone = StaticZone::parse("_mta-sts.same.example. TXT \"v=STSv1; id=1\"\n").unwrap();
        assert!(StsRefresher::new(store.clone(), Dns::Zone(zone.clone()), 0).is_none());
        let r = StsRefresher::new(store.clone(), Dns::Zone(zone), 60).unwrap();
        let now = 100 * 86_400;
        let fetched = now - 13 * 3600;
        put(&*store, "none.example", "none", fetched, Some(now - 60));
        put(&*store, "same.example", "enforce", fetched, Some(now - 60));
        put(
            &*store,
            "unused.example",
            "none",
            fetched,
            Some(now - 31 * 86_400),
        );
        let changed =
            rmox_runtime_smol::block_on(|rt| async move { r.round(&rt, UnixTime(now)).await })
                .unwrap()
                .unwrap();
        assert_eq!(changed, 1);
        assert!(store.mtasts_get("none.example").unwrap().is_none());
        let same = store.mtasts_get("same.example").unwrap().unwrap();
        assert_eq!(same.fetched, UnixTime(fetched));
        assert!(store.mtasts_get("unused.example").unwrap().is_some());
    }
}
