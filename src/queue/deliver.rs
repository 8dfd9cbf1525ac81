//! SMTP delivery of a queue batch: the batch as core's delivery [`DJob`], one
//! [`DeliveryConfig`] per transport (direct, SOCKS5, smarthost, submission), and the
//! [`DeliverySession`] driven to its report by the runtime's outbound loop
//! ([`rmox_driver::outbound::deliver`]). Connections, SOCKS5, STARTTLS and implicit TLS all
//! happen in the core machine and the driver: nothing here touches a socket or rustls.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rmox_core::client::Needs;
use rmox_core::delivery::{
    builtin_host_tls, Completion, DeliveryConfig, DeliverySession, Effect, HostTls, HostTlsSource,
    Job as DJob, Report, TlsAttempt,
};
use rmox_core::dns::{Lookup, LookupResult};
use rmox_core::queue::{AttemptResult, Failure, Transport, TransportDirect};
use rmox_core::smtp::{Enhanced, ForwardPath, Host, MailParams, RcptParams, ReversePath};
use rmox_core::tlspolicy::{CacheUpdate, PolicyConfig, SessionResult, StsCacheEntry};
use rmox_core::Rng;
use rmox_driver::outbound::{DeliveryAnswerer, Net, PolicyAnswerer};
use rmox_storage::MtaStsRecord;

use super::Job;
use crate::config::TransportSetup;
use crate::resolve::Dns;

/// Verified-TLS roots: rustls's client config with them.
type Pkix = Arc<rustls::ClientConfig>;

/// SMTP delivery through the MX hosts or a configured transport.
pub struct SmtpDelivery {
    dns: Arc<Dns>,
    /// The TLS policy (MTA-STS, DANE) of direct deliveries, answered from `dns` and the
    /// policy cache in storage.
    policy: Arc<QueuePolicy>,
    /// The direct transport with today's settings.
    direct: Arc<DeliveryConfig>,
    /// Named transports (routes refer to them by name).
    transports: BTreeMap<String, Arc<DeliveryConfig>>,
    seed: AtomicU64,
}

/// A PKIX client config trusting the CA certificates in the PEM file at `path`.
fn roots_config(path: &Path) -> Result<Pkix, String> {
    let p = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("CA bundle {p}: {e}"))?;
    rmox_core::tls::pkix_config_from_pem(&pem).map_err(|e| format!("CA bundle {p}: {e}"))
}

/// The system's CA roots for PKIX verification (REQUIRETLS): `SSL_CERT_FILE`, else
/// /etc/ssl/certs/ca-certificates.crt.
fn system_roots() -> Result<Pkix, String> {
    static CONFIG: OnceLock<Result<Pkix, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let path = std::env::var("SSL_CERT_FILE")
                .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
            roots_config(Path::new(&path))
        })
        .clone()
}

/// PKIX with `ca_file` when given, else the system's roots; `None` (logged) when they
/// cannot be loaded: deliveries needing verified TLS then fail temporarily.
pub(crate) fn pkix_for(ca_file: Option<&Path>) -> Option<Pkix> {
    let r = match ca_file {
        Some(p) => roots_config(p),
        None => system_roots(),
    };
    match r {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "no trusted roots for verified TLS");
            None
        }
    }
}

/// The system's roots as [`system_roots`] loads them, for reporting verification (MX hosts
/// under an MTA-STS `testing` policy); `None` when they cannot be loaded.
fn system_pkix_roots() -> Option<Arc<rustls::RootCertStore>> {
    static ROOTS: OnceLock<Option<Arc<rustls::RootCertStore>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let path = std::env::var("SSL_CERT_FILE")
                .unwrap_or_else(|_| "/etc/ssl/certs/ca-certificates.crt".into());
            let pem = std::fs::read(&path).ok()?;
            rmox_core::tls::pkix_roots_from_pem(&pem).ok()
        })
        .clone()
}

impl SmtpDelivery {
    /// Delivery saying EHLO `hostname`, to `port` of MX hosts, with these named transports
    /// and source addresses; DNS through `dns` (its AD bit believed only when `trust_ad`), the
    /// MTA-STS policy cache in `store`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn rmox_storage::MailStore>,
        dns: Dns,
        hostname: &str,
        port: u16,
        connect_timeout: Duration,
        transports: BTreeMap<String, TransportSetup>,
        source_ips: Vec<std::net::IpAddr>,
        trust_ad: bool,
        seed: u64,
    ) -> Result<SmtpDelivery, crate::Fail> {
        let our_hostname = Host::parse(hostname)
            .map_err(|e| crate::Fail(format!("hostname {hostname:?}: {e}")))?;
        let make =
            |transport: Transport, proxy_auth: Option<(String, String)>, pkix: Option<Pkix>| {
                let mut c = DeliveryConfig::new(our_hostname.clone());
                c.smtp_port = port;
                c.transport = transport;
                c.proxy_auth = proxy_auth;
                c.pkix = pkix;
                c.source_ips = source_ips.clone();
                c.connect_timeout = connect_timeout;
                // The TLS requirement of each MX host is asked of the answerer: the hook where
                // the TLS policy (MTA-STS, DANE) plugs in; today's answer is builtin_host_tls.
                c.host_tls = HostTlsSource::Ask;
                Arc::new(c)
            };
        let direct = make(
            Transport::Direct(TransportDirect::default()),
            None,
            pkix_for(None),
        );
        let transports = transports
            .into_iter()
            .map(|(name, s)| {
                let pkix = pkix_for(s.ca_file.as_deref());
                (name, make(s.transport, s.proxy_auth, pkix))
            })
            .collect();
        let dns = Arc::new(dns);
        // The AD bit is trusted as far as the resolver is: the resolver itself clears it on
        // answers from servers it does not trust (resolve::source, `resolver_trust_ad`), and
        // a zone file is local configuration, unless `trust_ad` is false
        // (`resolver_trust_ad = "never"`). MX hosts under an MTA-STS policy and policy
        // fetches are verified with the direct transport's roots (the system's, or
        // SSL_CERT_FILE).
        let mut pc = PolicyConfig::new(trust_ad);
        pc.pkix = direct.pkix.clone();
        pc.pkix_roots = system_pkix_roots();
        let policy = Arc::new(QueuePolicy {
            dns: Arc::clone(&dns),
            store,
            config: Arc::new(pc),
        });
        Ok(SmtpDelivery {
            dns,
            policy,
            direct,
            transports,
            seed: AtomicU64::new(seed),
        })
    }

    fn next_seed(&self) -> u64 {
        let s = self
            .seed
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        Rng::new(s).next_u64()
    }

    /// The delivery machine for `job` with its answerer, or the results when it cannot
    /// start (an unknown transport, a bad address).
    pub fn session(
        &self,
        job: &Job<'_>,
    ) -> Result<(DeliverySession, Arc<dyn DeliveryAnswerer>), Vec<AttemptResult>> {
        let n = job.items.len();
        let all = |r: AttemptResult| vec![r; n];
        let config = self.config_for(job).map_err(all)?;
        let djob = core_job(job, self.next_seed()).map_err(all)?;
        let answerer = self.answerer(&config, None);
        let session = DeliverySession::new(config, djob, rmox_driver::now());
        Ok((session, answerer))
    }

    /// The delivery settings of `job`'s transport.
    fn config_for(&self, job: &Job<'_>) -> Result<Arc<DeliveryConfig>, AttemptResult> {
        match job.batch.key.transport.as_deref().filter(|t| !t.is_empty()) {
            None => Ok(Arc::clone(&self.direct)),
            Some(t) => self.transports.get(t).map(Arc::clone).ok_or_else(|| {
                temp(
                    format!("transport {t:?} is not configured"),
                    Enhanced::new(4, 3, 5),
                )
            }),
        }
    }

    /// The answerer of a delivery with `config`, recording each job's report with
    /// `recorder` when given.
    fn answerer(
        &self,
        config: &DeliveryConfig,
        recorder: Option<Recorder2>,
    ) -> Arc<dyn DeliveryAnswerer> {
        // MTA-STS and DANE apply to delivery to MX hosts, not to relays.
        let policy = matches!(config.transport, Transport::Direct(_))
            .then(|| Arc::clone(&self.policy) as Arc<dyn PolicyAnswerer>);
        Arc::new(QueueAnswerer {
            dns: Arc::clone(&self.dns),
            pkix: config.pkix.clone(),
            policy,
            recorder,
        })
    }

    /// Delivers `jobs` (for one destination: domain, transport, REQUIRETLS state) over one
    /// connection while it stays healthy (connection reuse), on runtime `rt`. Each job's
    /// results go to `recorder` with its index as soon as they are final, on the blocking
    /// pool, while the jobs after it are delivered; a job that cannot start (a bad address)
    /// goes to it at once. Returns the TLS report results (RFC 8460) of the connections.
    pub async fn deliver_many<R: Net>(
        &self,
        rt: R,
        jobs: &[Job<'_>],
        recorder: Recorder,
    ) -> Vec<SessionResult> {
        let Some(first) = jobs.first() else {
            return Vec::new();
        };
        let config = match self.config_for(first) {
            Ok(c) => c,
            Err(r) => {
                for (i, j) in jobs.iter().enumerate() {
                    recorder(i, vec![r.clone(); j.items.len()], Vec::new());
                }
                return Vec::new();
            }
        };
        let mut djobs = Vec::with_capacity(jobs.len());
        let mut index = Vec::with_capacity(jobs.len());
        for (i, j) in jobs.iter().enumerate() {
            match core_job(j, self.next_seed()) {
                Ok(d) => {
                    djobs.push(d);
                    index.push(i);
                }
                Err(r) => recorder(i, vec![r; j.items.len()], Vec::new()),
            }
        }
        if djobs.is_empty() {
            return Vec::new();
        }
        let lead = djobs.remove(0);
        let index = Arc::new(index);
        let by_job = {
            let index = Arc::clone(&index);
            let recorder = Arc::clone(&recorder);
            Arc::new(move |job: usize, report: Report| {
                if let Some(&i) = index.get(job) {
                    recorder(i, report.results, report.tls);
                }
            }) as Recorder2
        };
        let answerer = self.answerer(&config, Some(by_job));
        let session = DeliverySession::new_many(config, lead, djobs, rmox_driver::now());
        let cid = rmox_driver::next_cid();
        let d = rmox_driver::outbound::deliver_reporting(rt, session, answerer, cid).await;
        // Jobs without a recorded report (never expected: the machine reports every job).
        for &i in index.iter().skip(d.reports.len()) {
            let n = jobs.get(i).map_or(0, |j| j.items.len());
            recorder(
                i,
                vec![
                    temp(
                        "delivery ended without a result".into(),
                        Enhanced::new(4, 0, 0)
                    );
                    n
                ],
                Vec::new(),
            );
        }
        d.tls_results
    }

    /// Delivers `job` on runtime `rt`: one result per item, the TLS of each connection
    /// (for the attempt history) and the TLS report results (RFC 8460) to record.
    pub async fn deliver<R: Net>(
        &self,
        rt: R,
        job: &Job<'_>,
    ) -> (Vec<AttemptResult>, Vec<TlsAttempt>, Vec<SessionResult>) {
        let (session, answerer) = match self.session(job) {
            Ok(s) => s,
            Err(results) => return (results, Vec::new(), Vec::new()),
        };
        let cid = rmox_driver::next_cid();
        let d = rmox_driver::outbound::deliver_reporting(rt, session, answerer, cid).await;
        let Report { results, tls, .. } = d.report;
        (results, tls, d.tls_results)
    }
}

fn temp(detail: String, e: Enhanced) -> AttemptResult {
    AttemptResult::Temporary(Failure::local(detail, e))
}

/// The batch as the delivery machine's job.
fn core_job(job: &Job<'_>, seed: u64) -> Result<DJob, AttemptResult> {
    let key = &job.batch.key;
    let mail_from = if key.mail_from.is_empty() {
        Ok(ReversePath::Null)
    } else {
        ReversePath::parse(&format!("<{}>", key.mail_from))
    };
    let Ok(mail_from) = mail_from else {
        return Err(AttemptResult::Permanent(Failure::local(
            format!("bad MAIL FROM address {:?}", key.mail_from),
            Enhanced::new(5, 1, 7),
        )));
    };
    let mut recipients = Vec::with_capacity(job.items.len());
    for it in job.items {
        let Ok(p) = ForwardPath::parse(&format!("<{}>", it.recipient)) else {
            return Err(AttemptResult::Permanent(Failure::local(
                format!("bad recipient address {:?}", it.recipient),
                Enhanced::new(5, 1, 3),
            )));
        };
        recipients.push((
            p,
            RcptParams {
                notify: it.dsn.notify,
                orcpt: it.dsn.orcpt.clone(),
            },
        ));
    }
    let first = job.items.first();
    Ok(DJob {
        domain: key.recipient_domain.clone(),
        mail_from,
        recipients,
        params: MailParams {
            ret: first.and_then(|i| i.dsn.ret),
            envid: first.and_then(|i| i.dsn.envid.clone()),
            ..MailParams::default()
        },
        message: Arc::clone(job.message),
        needs: Needs {
            smtputf8: job.entries.iter().any(|e| e.rcpt.smtputf8),
            requiretls: key.requiretls == Some(true),
            eightbit: job.entries.iter().any(|e| e.rcpt.has_8bit),
        },
        requiretls: key.requiretls,
        seed,
    })
}

/// Answers a delivery's DNS questions through the binary's resolver (blocking: called on
/// the runtime's blocking pool) and its TLS requirements with today's rules.
struct QueueAnswerer {
    dns: Arc<Dns>,
    pkix: Option<Pkix>,
    /// The TLS policy machine's answers (direct delivery only).
    policy: Option<Arc<dyn PolicyAnswerer>>,
    /// Records each job's report as it is final (connection reuse).
    recorder: Option<Recorder2>,
}

/// Records the results of job `i` (its index in [`SmtpDelivery::deliver_many`]'s jobs):
/// one result per item, and the TLS of the connections it used (blocking: storage).
pub type Recorder = Arc<dyn Fn(usize, Vec<AttemptResult>, Vec<TlsAttempt>) + Send + Sync>;

/// A [`Recorder`] by the delivery machine's job index.
type Recorder2 = Arc<dyn Fn(usize, Report) + Send + Sync>;

/// The TLS policy machine's effects for the queue: DNS through the binary's resolver
/// (asynchronously), the MTA-STS policy cache in storage.
struct QueuePolicy {
    dns: Arc<Dns>,
    store: Arc<dyn rmox_storage::MailStore>,
    config: Arc<PolicyConfig>,
}

impl PolicyAnswerer for QueuePolicy {
    fn config(&self) -> Arc<PolicyConfig> {
        Arc::clone(&self.config)
    }

    fn lookup(
        &self,
        lookups: Vec<Lookup>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<LookupResult>>>> {
        let dns = Arc::clone(&self.dns);
        Box::pin(async move { dns.lookup_many_async(&lookups).await })
    }

    fn cache_get(&self, domain: &str) -> Option<StsCacheEntry> {
        match self.store.mtasts_get(domain) {
            Ok(r) => r.map(|r| r.to_entry()),
            Err(e) => {
                tracing::warn!(%domain, error = %e, "reading the MTA-STS policy cache");
                None
            }
        }
    }

    fn cache_update(&self, update: CacheUpdate) {
        let r = match &update {
            CacheUpdate::Put(e) => self.store.mtasts_put(MtaStsRecord::from_entry(e)),
            CacheUpdate::Drop { domain } => self.store.mtasts_remove(domain),
            CacheUpdate::Used { domain, at } => self.store.mtasts_touch(domain, *at).map(|_| ()),
        };
        if let Err(e) = r {
            tracing::warn!(?update, error = %e, "writing the MTA-STS policy cache");
        }
    }

    fn fetch_roots(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.config.pkix.clone()
    }
}

impl DeliveryAnswerer for QueueAnswerer {
    fn answer(&self, effect: Effect) -> Completion {
        match effect {
            Effect::Dns(lookups) => Completion::Dns(self.dns.lookup_many(&lookups)),
            Effect::HostTls {
                domain,
                host,
                requiretls,
            } => Completion::HostTls(self.host_tls(&domain, &host, requiretls)),
            // The driver connects; never asked here.
            Effect::Connect { .. } => Completion::ConnectFailed("not answered here".into()),
        }
    }

    fn lookup(
        &self,
        lookups: Vec<Lookup>,
    ) -> Result<rmox_driver::outbound::AsyncAnswers, Vec<Lookup>> {
        let dns = Arc::clone(&self.dns);
        Ok(Box::pin(
            async move { dns.lookup_many_async(&lookups).await },
        ))
    }

    fn host_tls(&self, _domain: &str, _host: &str, requiretls: Option<bool>) -> HostTls {
        builtin_host_tls(requiretls, self.pkix.as_ref())
    }

    fn policy(&self) -> Option<Arc<dyn PolicyAnswerer>> {
        self.policy.clone()
    }

    fn records_jobs(&self) -> bool {
        self.recorder.is_some()
    }

    fn job_done(&self, job: usize, report: Report) {
        if let Some(r) = &self.recorder {
            r(job, report);
        }
    }
}
