//! DMARC reporting in the server: every evaluation of incoming mail is stored (as a JSON
//! [`StoredEval`] under `ReportKind::DmarcEval`, keyed by the policy domain), incoming
//! aggregate reports about our domains are parsed and stored (`ReportKind::DmarcReport`),
//! and [`send_reports`] (run by the reporter thread, hourly by default) turns the stored
//! evaluations into aggregate reports: XML built by `dmarc::build_report`, gzipped, attached
//! to a message From postmaster@hostname, DKIM-signed when the hostname's domain has keys,
//! queued for each `rua` mailto address whose size limit the message fits and that is not
//! suppressed, after which the evaluations are removed.
//!
//! Which evaluations are kept follows mox: an evaluation is stored only when a DMARC record
//! was found; it is *optional* when the message is itself a DMARC report, when the record
//! has no `rua`, or when the sender is unknown to us (no recipient account has sent to the
//! From or MAIL FROM address). A domain with only optional evaluations gets no report, so
//! we do not send reports to domains that merely sent us mail we reject (backscatter).

use std::net::IpAddr;
use std::sync::Arc;

use rmox_core::dmarc::{
    AuthResults, DkimAuth, Evaluation, Identifiers, Policy, PolicyPublished, Reason,
    ReportMetadata, SpfAuth,
};
use rmox_core::server::{Transaction, Verdicts};
use rmox_core::smtp::{ForwardPath, ReversePath};
use rmox_core::UnixTime;
use rmox_storage::{DsnParams, QueueRecipient, ReportKind, RequireTls, Store, StoreError};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The format version written in [`StoredEval::version`].
const EVAL_VERSION: u8 = 1;

/// One stored DMARC evaluation: [`Evaluation`] in a serde-friendly shape, plus what the
/// reporter needs later (the `rua` addresses as published, whether it is optional).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEval {
    /// Format version ([`EVAL_VERSION`]).
    pub version: u8,
    /// Where the DMARC record was found.
    pub policy_domain: String,
    /// When, Unix seconds.
    pub evaluated: i64,
    /// The connecting IP.
    pub source_ip: IpAddr,
    /// Disposition applied: none, quarantine, reject.
    pub disposition: String,
    /// A DKIM pass was aligned.
    pub dkim_aligned: bool,
    /// The SPF pass was aligned.
    pub spf_aligned: bool,
    /// Reasons (type, comment).
    pub reasons: Vec<(String, Option<String>)>,
    /// RCPT TO domain.
    pub envelope_to: Option<String>,
    /// MAIL FROM domain.
    pub envelope_from: Option<String>,
    /// From header domain.
    pub header_from: String,
    /// DKIM results: (domain, selector, result).
    pub dkim: Vec<(String, String, String)>,
    /// SPF results: (domain, scope, result).
    pub spf: Vec<(String, String, String)>,
    /// Published `p`.
    pub p: String,
    /// Published `sp`.
    pub sp: Option<String>,
    /// Published `np`.
    pub np: Option<String>,
    /// Published `adkim` (`r`/`s`).
    pub adkim: String,
    /// Published `aspf` (`r`/`s`).
    pub aspf: String,
    /// Published `pct`.
    pub pct: u8,
    /// Published `fo`.
    pub fo: String,
    /// `rua` URIs as published, with their size limit in bytes.
    pub rua: Vec<(String, Option<u64>)>,
    /// Only reported together with non-optional evaluations of the same domain.
    pub optional: bool,
}

fn policy(s: &str) -> Policy {
    Policy::parse(s).unwrap_or(Policy::None)
}

fn align(s: &str) -> rmox_core::dmarc::Align {
    if s == "s" {
        rmox_core::dmarc::Align::Strict
    } else {
        rmox_core::dmarc::Align::Relaxed
    }
}

impl StoredEval {
    /// The evaluation of a transaction's checks, if DMARC found a record. `optional` as
    /// decided by the caller.
    pub fn from_transaction(t: &Transaction, v: &Verdicts, optional: bool) -> Option<StoredEval> {
        let d = v.dmarc.as_ref()?;
        let record = d.record.as_ref()?;
        if d.policy_domain.is_empty() {
            return None;
        }
        let mut reasons = Vec::new();
        if d.sampled_out {
            reasons.push(("sampled_out".to_string(), None));
        }
        let envelope_to = t.recipients.first().and_then(|(p, _)| match p {
            ForwardPath::Postmaster => None,
            ForwardPath::Mailbox(a) => a
                .to_string()
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase()),
        });
        let envelope_from = match &t.mail_from {
            ReversePath::Null => None,
            ReversePath::Mailbox(a) => a
                .to_string()
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase()),
        };
        let dkim = v
            .dkim
            .iter()
            .flatten()
            .map(|r| (r.domain.clone(), r.selector.clone(), r.status.to_string()))
            .collect();
        let spf = match (&v.spf, &v.spf_args) {
            (Some(r), Some(a)) => vec![(
                a.domain.clone(),
                match a.identity {
                    rmox_core::spf::Identity::Helo => "helo",
                    _ => "mfrom",
                }
                .to_string(),
                r.result.to_string(),
            )],
            _ => Vec::new(),
        };
        Some(StoredEval {
            version: EVAL_VERSION,
            policy_domain: d.policy_domain.to_ascii_lowercase(),
            evaluated: t.received.0,
            source_ip: t.remote_ip,
            disposition: d.disposition.as_str().to_string(),
            dkim_aligned: d.dkim_aligned,
            spf_aligned: d.spf_aligned,
            reasons,
            envelope_to,
            envelope_from,
            header_from: v.from_domain.clone().unwrap_or_default(),
            dkim,
            spf,
            p: record.policy.as_str().to_string(),
            sp: record.subdomain_policy.map(|p| p.as_str().to_string()),
            np: record.nonexistent_policy.map(|p| p.as_str().to_string()),
            adkim: record.adkim.as_str().to_string(),
            aspf: record.aspf.as_str().to_string(),
            pct: record.percentage,
            fo: record.failure_options.clone(),
            rua: record
                .aggregate
                .iter()
                .map(|u| (u.uri.clone(), u.max_bytes()))
                .collect(),
            optional,
        })
    }

    /// The published policy part.
    pub fn published(&self) -> PolicyPublished {
        PolicyPublished {
            domain: self.policy_domain.clone(),
            adkim: Some(align(&self.adkim)),
            aspf: Some(align(&self.aspf)),
            p: policy(&self.p),
            sp: self.sp.as_deref().map(policy),
            np: self.np.as_deref().map(policy),
            pct: Some(self.pct),
            fo: Some(self.fo.clone()),
        }
    }

    /// As core's [`Evaluation`], for `dmarc::build_report`.
    pub fn evaluation(&self) -> Evaluation {
        Evaluation {
            policy_domain: self.policy_domain.clone(),
            evaluated: UnixTime(self.evaluated),
            source_ip: self.source_ip,
            disposition: policy(&self.disposition),
            dkim_aligned: self.dkim_aligned,
            spf_aligned: self.spf_aligned,
            reasons: self
                .reasons
                .iter()
                .map(|(k, c)| Reason {
                    kind: k.clone(),
                    comment: c.clone(),
                })
                .collect(),
            identifiers: Identifiers {
                envelope_to: self.envelope_to.clone(),
                envelope_from: self.envelope_from.clone(),
                header_from: self.header_from.clone(),
            },
            auth_results: AuthResults {
                dkim: self
                    .dkim
                    .iter()
                    .map(|(d, s, r)| DkimAuth {
                        domain: d.clone(),
                        selector: Some(s.clone()),
                        result: r.clone(),
                        human_result: None,
                    })
                    .collect(),
                spf: self
                    .spf
                    .iter()
                    .map(|(d, s, r)| SpfAuth {
                        domain: d.clone(),
                        scope: Some(s.clone()),
                        result: r.clone(),
                    })
                    .collect(),
            },
            published: self.published(),
        }
    }

    /// The `mailto:` addresses of `rua` with their size limits.
    pub fn mailto(&self) -> Vec<(String, Option<u64>)> {
        self.rua
            .iter()
            .filter_map(|(u, max)| {
                let rest = u.get(..7).filter(|p| p.eq_ignore_ascii_case("mailto:"))?;
                let _ = rest;
                let addr = u.get(7..)?.split('?').next()?.trim();
                (!addr.is_empty() && addr.contains('@')).then(|| (addr.to_string(), *max))
            })
            .collect()
    }
}

/// Whether `msg` is a DMARC aggregate report (by content); the parsed report if so.
pub fn parse_incoming_report(msg: &[u8]) -> Option<rmox_core::dmarc::Feedback> {
    rmox_core::dmarc::parse_report_message(msg).ok()
}

/// Stores the DMARC evaluation of an incoming message (see the module doc for which are
/// optional). `accounts` are the recipient accounts. Errors are logged, never fatal.
pub fn store_evaluation(store: &Store, t: &Transaction, accounts: &[String]) {
    let Some(v) = &t.auth else { return };
    let is_report = parse_incoming_report(&t.message).is_some();
    let has_rua = v
        .dmarc
        .as_ref()
        .and_then(|d| d.record.as_ref())
        .is_some_and(|r| !r.aggregate.is_empty());
    let mut senders: Vec<String> = Vec::new();
    if let Some(f) = &t.from_header {
        senders.push(f.clone());
    }
    if let ReversePath::Mailbox(a) = &t.mail_from {
        senders.push(a.to_string());
    }
    let known = accounts.iter().any(|acc| {
        senders
            .iter()
            .any(|s| store.has_sent_to(acc, s).unwrap_or(false))
    });
    let optional = is_report || !has_rua || !known;
    let Some(e) = StoredEval::from_transaction(t, v, optional) else {
        return;
    };
    let bytes = match serde_json::to_vec(&e) {
        Ok(b) => b,
        Err(err) => {
            tracing::error!(error = %err, "serializing dmarc evaluation");
            return;
        }
    };
    if let Err(err) = store.report_add(
        ReportKind::DmarcEval,
        &e.policy_domain,
        UnixTime(e.evaluated),
        bytes,
    ) {
        tracing::error!(error = %err, "storing dmarc evaluation");
    }
}

/// Stores an incoming aggregate report about one of our domains (`ReportKind::DmarcReport`,
/// keyed by that domain, the parsed report's Debug text is not kept: the raw message is,
/// so it can be parsed again). Returns whether it was stored.
pub fn store_incoming_report(store: &Store, config: &Config, t: &Transaction) -> bool {
    let Some(f) = parse_incoming_report(&t.message) else {
        return false;
    };
    let domain = f.policy.domain.trim_end_matches('.').to_ascii_lowercase();
    if !config
        .domain
        .keys()
        .any(|d| d.eq_ignore_ascii_case(&domain))
    {
        return false;
    }
    match store.report_add(
        ReportKind::DmarcReport,
        &domain,
        t.received,
        t.message.clone(),
    ) {
        Ok(()) => true,
        Err(err) => {
            tracing::error!(error = %err, "storing incoming dmarc report");
            false
        }
    }
}

/// Gzip (RFC 1952) of `data`, deflated with miniz_oxide.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend(crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn base64_lines(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            s.push_str("\r\n");
        }
        let b1 = c.get(1).copied().unwrap_or(0);
        let b2 = c.get(2).copied().unwrap_or(0);
        let n = (u32::from(c[0]) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        for k in 0..4 {
            if k <= c.len() {
                s.push(char::from(T[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s.push_str("\r\n");
    s
}

/// One composed report, ready to queue.
#[derive(Clone, Debug)]
pub struct OutgoingReport {
    /// The policy domain reported on.
    pub domain: String,
    /// The report XML.
    pub xml: String,
    /// The whole message (possibly DKIM-signed).
    pub message: Vec<u8>,
    /// Recipients it fits (size limits) and that are not suppressed.
    pub recipients: Vec<String>,
}

/// Composes the message for a report: multipart/mixed with a text part and the
/// `.xml.gz` attachment, named as RFC 7489 7.2.1.1 asks.
pub fn compose(
    config: &Config,
    meta: &ReportMetadata,
    domain: &str,
    xml: &str,
    to: &[String],
    now: UnixTime,
    boundary: &str,
) -> Vec<u8> {
    let from = format!("postmaster@{}", config.hostname);
    let filename = format!(
        "{}!{}!{}!{}.xml.gz",
        config.hostname, domain, meta.begin, meta.end
    );
    let gz = gzip(xml.as_bytes());
    let date = now.rfc5322();
    let mut m = String::new();
    m.push_str(&format!("From: <{from}>\r\n"));
    m.push_str(&format!(
        "To: {}\r\n",
        to.iter()
            .map(|a| format!("<{a}>"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    m.push_str(&format!(
        "Subject: Report Domain: {domain} Submitter: {} Report-ID: <{}>\r\n",
        config.hostname, meta.report_id
    ));
    m.push_str(&format!("Date: {date}\r\n"));
    m.push_str(&format!(
        "Message-ID: <{}@{}>\r\n",
        meta.report_id, config.hostname
    ));
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    m.push_str(&format!(
        "DMARC aggregate report for {domain}, {} to {} (Unix time).\r\n\r\n",
        meta.begin, meta.end
    ));
    m.push_str(&format!(
        "--{boundary}\r\nContent-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"{filename}\"\r\n\r\n"
    ));
    m.push_str(&base64_lines(&gz));
    m.push_str(&format!("--{boundary}--\r\n"));
    m.into_bytes()
}

/// Builds, queues and forgets the aggregate reports of all stored evaluations up to `now`.
/// Returns the reports queued. `dkim`: the signing configs per domain (the hostname's
/// domain, or its parent, signs when it has keys).
pub fn send_reports(
    store: &Store,
    config: &Config,
    dkim: &std::collections::HashMap<String, Vec<rmox_core::dkim::SignConfig>>,
    now: UnixTime,
) -> Result<Vec<OutgoingReport>, StoreError> {
    let mut sent = Vec::new();
    for domain in store.report_domains(ReportKind::DmarcEval)? {
        let rows = store.reports(ReportKind::DmarcEval, &domain)?;
        let evals: Vec<StoredEval> = rows
            .iter()
            .filter(|(t, _)| t.0 <= now.0)
            .filter_map(|(_, b)| serde_json::from_slice::<StoredEval>(b).ok())
            .collect();
        let done = || store.reports_remove(ReportKind::DmarcEval, &domain, UnixTime(now.0 + 1));
        if evals.iter().all(|e| e.optional) {
            // Nothing we must report: drop them (mox does not report optional-only domains).
            done()?;
            continue;
        }
        // The latest evaluation's policy and rua are the ones in force.
        let Some(latest) = evals.iter().max_by_key(|e| e.evaluated) else {
            continue;
        };
        let begin = evals.iter().map(|e| e.evaluated).min().unwrap_or(now.0);
        let meta = ReportMetadata {
            org_name: config.hostname.clone(),
            email: format!("postmaster@{}", config.hostname),
            extra_contact_info: None,
            report_id: format!("{}.{}", domain, now.0),
            begin,
            end: now.0,
            errors: Vec::new(),
        };
        let all: Vec<Evaluation> = evals.iter().map(StoredEval::evaluation).collect();
        let xml = rmox_core::dmarc::build_report(&meta, &latest.published(), &all);
        let mut recipients: Vec<String> = Vec::new();
        let targets = latest.mailto();
        let boundary = format!("rmox-dmarc-{}", now.0);
        let draft = compose(config, &meta, &domain, &xml, &[], now, &boundary);
        for (addr, max) in &targets {
            if max.is_some_and(|m| (draft.len() as u64) > m) {
                tracing::info!(%domain, %addr, size = draft.len(), "dmarc report over rua size limit, skipped");
                continue;
            }
            let suppressed = config
                .postmaster
                .as_ref()
                .is_some_and(|p| store.is_suppressed(&p.account, addr).unwrap_or(false));
            if suppressed {
                tracing::info!(%domain, %addr, "rua address suppressed, skipped");
                continue;
            }
            recipients.push(addr.clone());
        }
        if recipients.is_empty() {
            done()?;
            continue;
        }
        let mut message = compose(config, &meta, &domain, &xml, &recipients, now, &boundary);
        if let Some(configs) = signing_configs(dkim, &config.hostname) {
            let rng = ring::rand::SystemRandom::new();
            match rmox_core::dkim::sign(&message, configs, now, &rng) {
                Ok(h) => {
                    let mut m = h.into_bytes();
                    m.extend_from_slice(&message);
                    message = m;
                }
                Err(e) => tracing::error!(error = %e, "dkim signing dmarc report"),
            }
        }
        let from = format!("postmaster@{}", config.hostname);
        let q: Vec<QueueRecipient> = recipients
            .iter()
            .map(|r| QueueRecipient {
                sender_account: None,
                mail_from: from.clone(),
                recipient: r.clone(),
                has_8bit: false,
                smtputf8: false,
                requiretls: RequireTls::Default,
                transport: None,
                next_attempt: now,
                queued: now,
                hold: false,
                dsn: DsnParams::default(),
                is_dsn: false,
            })
            .collect();
        store.queue_add(&message, q)?;
        done()?;
        sent.push(OutgoingReport {
            domain,
            xml,
            message,
            recipients,
        });
    }
    Ok(sent)
}

fn signing_configs<'a>(
    dkim: &'a std::collections::HashMap<String, Vec<rmox_core::dkim::SignConfig>>,
    hostname: &str,
) -> Option<&'a Vec<rmox_core::dkim::SignConfig>> {
    let mut d = hostname.to_ascii_lowercase();
    loop {
        if let Some(c) = dkim.get(&d) {
            return Some(c);
        }
        let (_, rest) = d.split_once('.')?;
        if !rest.contains('.') {
            return None;
        }
        d = rest.to_string();
    }
}

/// The reporter thread: runs [`send_reports`] every `interval`, and whenever `trigger` is
/// notified; wakes the queue runner after queueing.
pub fn spawn_reporter(
    store: Arc<Store>,
    config: Arc<Config>,
    interval: std::time::Duration,
    trigger: Arc<Trigger>,
    queue_wakeup: Option<Arc<crate::queue::Wakeup>>,
) -> Result<std::thread::JoinHandle<()>, crate::Fail> {
    let dkim = crate::world::load_dkim(&config)?;
    std::thread::Builder::new()
        .name("dmarc-reporter".into())
        .spawn(move || loop {
            if !trigger.wait(interval) {
                return;
            }
            let now = rmox_driver::now().wall;
            match send_reports(&store, &config, &dkim, now) {
                Ok(v) if !v.is_empty() => {
                    tracing::info!(reports = v.len(), "dmarc aggregate reports queued");
                    if let Some(w) = &queue_wakeup {
                        w.notify();
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "dmarc reporter"),
            }
        })
        .map_err(|e| crate::Fail(format!("spawning dmarc reporter: {e}")))
}

/// Runs the reporter now (`notify`) or stops it (`stop`).
#[derive(Debug, Default)]
pub struct Trigger {
    state: std::sync::Mutex<(bool, bool)>,
    cv: std::sync::Condvar,
}

impl Trigger {
    /// Run the reporter now.
    pub fn notify(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = true;
        self.cv.notify_all();
    }

    /// Stop the reporter thread.
    pub fn stop(&self) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 = true;
        self.cv.notify_all();
    }

    /// Waits for a notification or `d`; false when stopped.
    fn wait(&self, d: std::time::Duration) -> bool {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut s, _) = self
            .cv
            .wait_timeout_while(s, d, |s| !s.0 && !s.1)
            .unwrap_or_else(|e| e.into_inner());
        s.0 = false;
        !s.1
    }
}
