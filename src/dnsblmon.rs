//! DNSBL monitoring of our own sending addresses: every `incoming.dnsbl_monitor_interval_secs`
//! the addresses of `hostname` (A and AAAA, or `incoming.dnsbl_monitor_ips` when set) are
//! looked up in the `incoming.dnsbl` zones, through core's DNSBL check on the server's DNS
//! loop; a listing is a warning in the log and the metric `rmox_dnsbl_own_listed`. A task of
//! the chosen runtime, beside the report senders.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmox_core::dns::{Lookup, LookupResult, Record, RecordType};
use rmox_core::dnsbl::{DnsblCheck, DnsblStatus};

use crate::resolve::Dns;

/// Questions one address's check may ask (one per zone, plus its TXT reason).
const MAX_QUESTIONS: usize = 64;

/// The monitor.
pub struct DnsblMonitor {
    dns: Dns,
    zones: Vec<String>,
    /// Fixed addresses; empty: the host name's.
    ips: Vec<IpAddr>,
    hostname: String,
    every: Duration,
}

impl DnsblMonitor {
    /// The monitor the configuration asks for (zones configured, interval not 0).
    pub fn new(c: &crate::config::Config, dns: Dns) -> Option<DnsblMonitor> {
        let i = &c.incoming;
        if i.dnsbl.is_empty() || i.dnsbl_monitor_interval_secs == 0 || c.localserve {
            return None;
        }
        Some(DnsblMonitor {
            dns,
            zones: i.dnsbl.clone(),
            ips: i.dnsbl_monitor_ips.clone(),
            hostname: c.hostname.clone(),
            every: Duration::from_secs(i.dnsbl_monitor_interval_secs),
        })
    }

    /// The addresses to check.
    async fn addresses(&self) -> Vec<IpAddr> {
        if !self.ips.is_empty() {
            return self.ips.clone();
        }
        let lookups = [
            Lookup {
                name: self.hostname.clone(),
                rtype: RecordType::A,
            },
            Lookup {
                name: self.hostname.clone(),
                rtype: RecordType::Aaaa,
            },
        ];
        let mut out = Vec::new();
        for r in self.dns.lookup_many_async(&lookups).await {
            if let LookupResult::Records { records, .. } = r {
                for rec in records {
                    match rec {
                        Record::A(a) => out.push(IpAddr::V4(a)),
                        Record::Aaaa(a) => out.push(IpAddr::V6(a)),
                        _ => {}
                    }
                }
            }
        }
        out
    }

    /// One round: every address against every zone; (ip, zone, status).
    pub async fn round(&self) -> Vec<(IpAddr, String, DnsblStatus)> {
        let mut out = Vec::new();
        let ips = self.addresses().await;
        if ips.is_empty() {
            tracing::warn!(host = %self.hostname, "dnsbl monitor: no addresses for the host name");
        }
        for ip in ips {
            let mut check = DnsblCheck::new(ip, &self.zones);
            match self.dns.run_check_async(&mut check, MAX_QUESTIONS).await {
                Some(v) => {
                    for (zone, status) in v {
                        out.push((ip, zone, status));
                    }
                }
                None => tracing::warn!(%ip, "dnsbl monitor: check did not finish"),
            }
        }
        out
    }

    /// Runs rounds until `shutdown`: the first at once, then every interval.
    pub async fn run<R: rmox_driver::outbound::Net>(
        self: Arc<Self>,
        rt: R,
        shutdown: Arc<rmox_driver::Shutdown>,
    ) {
        use futures_lite::FutureExt;
        loop {
            let results = self.round().await;
            let m = crate::metrics::get();
            for (ip, zone, status) in &results {
                match status {
                    DnsblStatus::Fail(reason) => {
                        tracing::warn!(%ip, zone = %zone, reason = %reason, "our sending address is listed in a dnsbl");
                        m.own_dnsbl(*ip, zone, true);
                    }
                    DnsblStatus::Pass => m.own_dnsbl(*ip, zone, false),
                    DnsblStatus::TempError(e) => {
                        tracing::info!(%ip, zone = %zone, error = %e, "dnsbl monitor: lookup failed")
                    }
                }
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
                return;
            }
        }
    }
}
