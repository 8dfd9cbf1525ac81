//! DMARC reporting in the server: every evaluation of incoming mail is stored (as a JSON
//! [`StoredEval`] under `ReportKind::DmarcEval`, keyed by the policy domain), incoming
//! aggregate reports about our domains are parsed and stored (`ReportKind::DmarcReport`),
//! and [`send_reports`] (run by the [`Reporters`] task, hourly by default) turns the stored
//! evaluations into aggregate reports: core's `dmarc::aggregate_report` builds the XML and
//! the message (From postmaster@hostname, the gzipped XML attached) for the `rua` mailto
//! addresses, whatever its size (RFC 9989 removed the RFC 7489 `!size` limit); here it is
//! DKIM-signed when the hostname's domain has keys and queued for those addresses that are
//! not suppressed, after which the evaluations are removed.
//!
//! Which evaluations are kept follows mox: an evaluation is stored only when a DMARC record
//! was found; it is *optional* when the message is itself a DMARC report, when the record
//! has no `rua`, or when the sender is unknown to us (no recipient account has sent to the
//! From or MAIL FROM address). A domain with only optional evaluations gets no report, so
//! we do not send reports to domains that merely sent us mail we reject (backscatter).
//!
//! TLS reporting (RFC 8460) out: delivery stores each connection's TLS result
//! (`ReportKind::TlsResult`, a JSON `tlspolicy::SessionResult` keyed by the policy domain);
//! [`tls_pending`], the `_smtp._tls` lookups and [`tls_finish`] turn those of finished UTC
//! days into reports (core's `tlspolicy::outgoing` decides who gets one and composes it),
//! signed and queued like the DMARC ones. [`Reporters`] runs both senders as one task on
//! the server's runtime.

use std::net::IpAddr;
use std::sync::Arc;

use rmox_core::dmarc::{
    aggregate_report, AuthResults, DkimAuth, Evaluation, Identifiers, Policy, PolicyPublished,
    Reason, SpfAuth, StoredEvaluation,
};
use rmox_core::server::{Transaction, Verdicts};
use rmox_core::smtp::{ForwardPath, ReversePath};
use rmox_core::UnixTime;
use rmox_storage::{DsnParams, MailStore, QueueRecipient, ReportKind, RequireTls, StoreError};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The format version written in [`StoredEval::version`]. Version 1 had `pct` (ignored
/// when read) and no `testing` (read as `false`). Version 2 and earlier recorded the RFC
/// 7489 size limit of each `rua` URI, ignored when read (RFC 9989 removed it); version 3
/// writes `None` there.
const EVAL_VERSION: u8 = 3;

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
    /// SPF results: (domain, scope, result). The scope is the identity checked: `mfrom`
    /// for the MAIL FROM domain, `helo` for the HELO name (checked when the reverse path is
    /// null, RFC 7208 2.4, or has no domain name). Reports never show `helo`: core's
    /// `dmarc::build_report` writes the null reverse path's result with scope `mfrom` and
    /// leaves other HELO results out (RFC 9990 allows only `mfrom`).
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
    /// Published `t=y` (test mode).
    #[serde(default)]
    pub testing: bool,
    /// Published `fo`.
    pub fo: String,
    /// `rua` URIs as published (without an RFC 7489 `!size` suffix) and, from version 2
    /// and earlier, that suffix's size limit in bytes. The limit is never applied: RFC 9989
    /// 4.8 made the suffix obsolete syntax ("reporters should ignore the
    /// obs-dmarc-report-size"); version 3 writes `None`. Kept as a pair so that stored
    /// evaluations of every version read.
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
        if d.testing {
            reasons.push(("policy_test_mode".to_string(), None));
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
        // The identity as checked; core's report builder turns `helo` into what RFC 9990
        // allows (see `spf` above).
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
            testing: record.testing,
            fo: record.failure_options.clone(),
            // An RFC 7489 size suffix is not recorded: it limits nothing (RFC 9989 4.8).
            rua: record
                .aggregate
                .iter()
                .map(|u| (u.uri.clone(), None))
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
            pct: None,
            testing: Some(self.testing),
            discovery_method: Some(rmox_core::dmarc::DiscoveryMethod::TreeWalk),
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

    /// The `mailto:` addresses of `rua` (core reads the URIs). A size limit stored by
    /// version 2 or earlier is ignored: the report goes to the address whatever its size.
    pub fn mailto(&self) -> Vec<String> {
        self.rua
            .iter()
            .filter_map(|(u, _)| rmox_core::dmarc::mailto_address(u).map(str::to_string))
            .collect()
    }
}

/// Whether `msg` is a DMARC aggregate report (by content); the parsed report if so.
pub fn parse_incoming_report(msg: &[u8]) -> Option<rmox_core::dmarc::Feedback> {
    rmox_core::dmarc::parse_report_message(msg).ok()
}

/// Stores the DMARC evaluation of an incoming message (see the module doc for which are
/// optional). `accounts` are the recipient accounts. Errors are logged, never fatal.
pub fn store_evaluation(store: &dyn MailStore, t: &Transaction, accounts: &[String]) {
    let Some(v) = &t.auth else { return };
    // A DMARC or TLS report: its evaluation is optional. A spooled message (larger than
    // the spool threshold) is not read as one.
    let is_report = t.message.as_slice().is_some_and(|m| {
        parse_incoming_report(m).is_some() || rmox_core::tlspolicy::parse_report_message(m).is_ok()
    });
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
    let optional = rmox_core::dmarc::evaluation_is_optional(is_report, has_rua, known);
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
///
/// Only a report that (1) was sent to the domain's configured `dmarc_reports` address,
/// (2) is about that domain, and (3) comes from a sender that passed DMARC is stored, so a
/// forged report (or one sent to any other address) cannot inject data; the message itself
/// is delivered as mail either way.
pub fn store_incoming_report(store: &dyn MailStore, config: &Config, t: &Transaction) -> bool {
    let dmarc_pass = t
        .auth
        .as_ref()
        .and_then(|v| v.dmarc.as_ref())
        .is_some_and(|d| d.status == rmox_core::dmarc::DmarcStatus::Pass);
    if !dmarc_pass {
        return false;
    }
    let destinations: Vec<&str> = t
        .recipients
        .iter()
        .filter_map(|(p, _)| match p {
            ForwardPath::Mailbox(a) => match &a.host {
                rmox_core::smtp::Host::Domain(d) => {
                    config.dmarc_reports_domain(&a.localpart.0, &d.ascii)
                }
                _ => None,
            },
            ForwardPath::Postmaster => None,
        })
        .collect();
    if destinations.is_empty() {
        return false;
    }
    // A report is small: a spooled message is none.
    let Some(f) = t.message.as_slice().and_then(parse_incoming_report) else {
        return false;
    };
    // Core decides whether and under which domain it is kept.
    let Some(domain) = rmox_core::dmarc::incoming_report_domain(dmarc_pass, &destinations, &f)
    else {
        return false;
    };
    match store.report_add(
        ReportKind::DmarcReport,
        &domain,
        t.received,
        t.message.to_vec(),
    ) {
        Ok(()) => true,
        Err(err) => {
            tracing::error!(error = %err, "storing incoming dmarc report");
            false
        }
    }
}

/// The format version written in [`StoredTlsReport::version`].
const TLS_REPORT_VERSION: u8 = 1;

/// One incoming TLS report (RFC 8460) as stored (JSON, `ReportKind::TlsReport`, keyed by
/// the policy domain of ours it is about; a report about several of our domains is stored
/// once for each).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTlsReport {
    /// Format version ([`TLS_REPORT_VERSION`]).
    pub version: u8,
    /// Our policy domain (a configured domain or the host name) it is stored for.
    pub policy_domain: String,
    /// The policy domain is our host name (a report about our MX host, for DANE).
    pub host_report: bool,
    /// The From domain whose DKIM signature vouched for it.
    pub from_domain: String,
    /// MAIL FROM.
    pub mail_from: String,
    /// When it arrived, Unix seconds.
    pub received: i64,
    /// The report as parsed.
    pub report: rmox_core::tlspolicy::Report,
}

/// Stores an incoming TLS report sent to one of our domains' `tls_reports` addresses
/// (`ReportKind::TlsReport`). Core's `tlspolicy::incoming` decides: a passing DKIM
/// signature of the From domain, and only the report's policy domains that are ours.
/// Returns how many records were stored; a message that is not a report, or not
/// acceptable, is logged and stays mail only (it is delivered either way).
pub fn store_incoming_tls_report(store: &dyn MailStore, config: &Config, t: &Transaction) -> usize {
    let to_reporting = t.recipients.iter().any(|(p, _)| match p {
        ForwardPath::Mailbox(a) => match &a.host {
            rmox_core::smtp::Host::Domain(d) => config
                .tls_reports_domain(&a.localpart.0, &d.ascii)
                .is_some(),
            _ => false,
        },
        ForwardPath::Postmaster => false,
    });
    if !to_reporting {
        return 0;
    }
    let max = config.limits.max_tls_report_size;
    // A report larger than the limit is refused by the parser; a message far larger (base64
    // adds a third) is not even read back from its spool file.
    if t.message.len() > max.saturating_mul(2).saturating_add(64 << 10) {
        tracing::info!(cid = t.cid, size = t.message.len(), "message to a tls reporting address is too large for a tls report; delivered as mail only");
        return 0;
    }
    let message = t.message.to_vec();
    let report = match rmox_core::tlspolicy::parse_report_message_max(&message, max) {
        Ok(r) => r,
        Err(err) => {
            tracing::info!(cid = t.cid, error = %err, "message to a tls reporting address is not a tls report; delivered as mail only");
            return 0;
        }
    };
    let v = t.auth.as_deref();
    let from_domain = v.and_then(|v| v.from_domain.clone()).or_else(|| {
        let end = rmox_core::message::body_offset(&message).unwrap_or(message.len());
        rmox_core::message::from_addresses(&message[..end])
            .first()
            .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()))
    });
    let dkim = v.and_then(|v| v.dkim.as_deref()).unwrap_or(&[]);
    let domains = match rmox_core::tlspolicy::incoming::incoming_report_domains(
        &report,
        from_domain.as_deref(),
        dkim,
        |d| config.is_tls_report_domain(d),
    ) {
        Ok(d) => d,
        Err(why) => {
            tracing::info!(cid = t.cid, report_id = %report.report_id, reason = why.as_str(), "tls report not stored; delivered as mail only");
            return 0;
        }
    };
    let mut stored = 0;
    for d in domains {
        let rec = StoredTlsReport {
            version: TLS_REPORT_VERSION,
            host_report: d.eq_ignore_ascii_case(&config.hostname),
            policy_domain: d,
            from_domain: from_domain.clone().unwrap_or_default(),
            mail_from: match &t.mail_from {
                ReversePath::Mailbox(a) => a.to_string(),
                ReversePath::Null => String::new(),
            },
            received: t.received.0,
            report: report.clone(),
        };
        let bytes = match serde_json::to_vec(&rec) {
            Ok(b) => b,
            Err(err) => {
                tracing::error!(error = %err, "serializing tls report");
                continue;
            }
        };
        match store.report_add(ReportKind::TlsReport, &rec.policy_domain, t.received, bytes) {
            Ok(()) => {
                stored += 1;
                tracing::info!(cid = t.cid, domain = %rec.policy_domain, organization = %rec.report.organization_name, report_id = %rec.report.report_id, "tls report stored");
            }
            Err(err) => tracing::error!(error = %err, "storing incoming tls report"),
        }
    }
    stored
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
    /// The `rua` mailto recipients that are not suppressed (whatever the report's size).
    pub recipients: Vec<String>,
}

/// Builds, queues and forgets the aggregate reports of all stored evaluations up to `now`.
/// Returns the reports queued. `dkim`: the signing configs per domain (the hostname's
/// domain, or its parent, signs when it has keys).
pub fn send_reports(
    store: &dyn MailStore,
    config: &Config,
    dkim: &std::collections::HashMap<String, Vec<rmox_core::dkim::SignConfig>>,
    now: UnixTime,
) -> Result<Vec<OutgoingReport>, StoreError> {
    let mut sent = Vec::new();
    for domain in store.report_domains(ReportKind::DmarcEval)? {
        let rows = store.reports(ReportKind::DmarcEval, &domain)?;
        let evals: Vec<StoredEvaluation> = rows
            .iter()
            .filter(|(t, _)| t.0 <= now.0)
            .filter_map(|(_, b)| serde_json::from_slice::<StoredEval>(b).ok())
            .map(|e| StoredEvaluation {
                evaluation: e.evaluation(),
                optional: e.optional,
                mailto: e.mailto(),
            })
            .collect();
        let done = || store.reports_remove(ReportKind::DmarcEval, &domain, UnixTime(now.0 + 1));
        // Core builds the report (none for optional-only domains: mox does not report
        // them). It goes to every rua address, whatever its size: RFC 9989 4.8 made the
        // RFC 7489 `!size` suffix obsolete syntax that reporters ignore.
        let Some(report) = aggregate_report(&config.hostname, &domain, &evals, now) else {
            done()?;
            continue;
        };
        let mut recipients: Vec<String> = Vec::new();
        for addr in report.mailto.iter().cloned() {
            let suppressed = config
                .postmaster
                .as_ref()
                .is_some_and(|p| store.is_suppressed(&p.account, &addr).unwrap_or(false));
            if suppressed {
                tracing::info!(%domain, %addr, "rua address suppressed, skipped");
                continue;
            }
            recipients.push(addr);
        }
        if recipients.is_empty() {
            done()?;
            continue;
        }
        let mut message = report.message(&recipients);
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
                from_id: None,
            })
            .collect();
        store.queue_add(&message, q)?;
        done()?;
        sent.push(OutgoingReport {
            domain,
            xml: report.xml,
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

/// One outgoing TLS report, composed and queued.
#[derive(Clone, Debug)]
pub struct OutgoingTlsReport {
    /// The policy domain (recipient domain or MX host).
    pub domain: String,
    /// Which of the two.
    pub scope: rmox_core::tlspolicy::ReportScope,
    /// The report.
    pub report: rmox_core::tlspolicy::Report,
    /// The whole message (DKIM-signed when the host name's domain has keys); empty when
    /// no `mailto:` address got it.
    pub message: Vec<u8>,
    /// The `mailto:` addresses it was queued for (not suppressed).
    pub recipients: Vec<String>,
    /// The `https:` rua to POST it to ([`post_tls_report`]; not done by [`tls_finish`]).
    pub https: Vec<String>,
}

/// The stored TLS results of one policy domain for finished days: the reports core made
/// of them (possibly none, e.g. when no stored record parsed).
#[derive(Clone, Debug)]
pub struct TlsPending {
    /// The policy domain (as stored).
    pub domain: String,
    /// Its reports, one per day and scope.
    pub reports: Vec<rmox_core::tlspolicy::outgoing::PendingReport>,
}

/// Reads the stored TLS results (`ReportKind::TlsResult`, each a JSON
/// [`rmox_core::tlspolicy::SessionResult`]) of finished UTC days and groups them into
/// reports. Blocking (storage).
pub fn tls_pending(
    store: &dyn MailStore,
    config: &Config,
    now: UnixTime,
) -> Result<Vec<TlsPending>, StoreError> {
    use rmox_core::tlspolicy::outgoing::{finished_before, pending_reports};
    use rmox_core::tlspolicy::SessionResult;
    let cutoff = finished_before(now);
    let mut out = Vec::new();
    for domain in store.report_domains(ReportKind::TlsResult)? {
        let rows = store.reports(ReportKind::TlsResult, &domain)?;
        if !rows.iter().any(|(t, _)| t.0 < cutoff.0) {
            continue;
        }
        let results: Vec<(UnixTime, SessionResult)> = rows
            .iter()
            .filter_map(|(t, b)| match serde_json::from_slice::<SessionResult>(b) {
                Ok(r) => Some((*t, r)),
                Err(e) => {
                    tracing::info!(%domain, error = %e, "stored tls result does not parse, dropped");
                    None
                }
            })
            .collect();
        out.push(TlsPending {
            reports: pending_reports(&config.hostname, &results, now),
            domain,
        });
    }
    Ok(out)
}

/// The DNS questions for [`tls_pending`]'s domains: their `_smtp._tls` TXT records, in
/// order.
pub fn tls_lookups(pending: &[TlsPending]) -> Vec<rmox_core::dns::Lookup> {
    pending
        .iter()
        .map(|p| rmox_core::dns::Lookup {
            name: rmox_core::tlspolicy::tlsrpt::record_name(&p.domain),
            rtype: rmox_core::dns::RecordType::Txt,
        })
        .collect()
}

/// Sends the reports of [`tls_pending`] given the answers to [`tls_lookups`] (same order):
/// core decides who receives each; it is DKIM-signed (also over the `TLS-Report-*`
/// headers) and queued from postmaster@hostname for the `mailto:` addresses that are not
/// suppressed, with `TLS-Required: No` semantics (RFC 8460 3: TLS problems must not keep
/// the report from arriving). The results of finished days are then removed, sent or not.
/// Blocking (storage).
pub fn tls_finish(
    store: &dyn MailStore,
    config: &Config,
    dkim: &std::collections::HashMap<String, Vec<rmox_core::dkim::SignConfig>>,
    pending: Vec<TlsPending>,
    answers: &[rmox_core::dns::LookupResult],
    now: UnixTime,
) -> Result<Vec<OutgoingTlsReport>, StoreError> {
    use rmox_core::tlspolicy::outgoing::{
        finished_before, report_message, report_recipients, SIGNED_HEADERS,
    };
    let mut sent = Vec::new();
    for (i, p) in pending.into_iter().enumerate() {
        let record = answers
            .get(i)
            .and_then(rmox_core::tlspolicy::TlsrptRecord::from_lookup);
        let ours = config.is_tls_report_domain(&p.domain);
        for r in p.reports {
            let to = match report_recipients(&r, record.as_ref(), ours) {
                Ok(to) => to,
                Err(why) => {
                    tracing::info!(domain = %r.domain, report_id = %r.report.report_id, reason = why.as_str(), "no tls report sent");
                    continue;
                }
            };
            let mut recipients: Vec<String> = Vec::new();
            for addr in to.mailto {
                let suppressed = config
                    .postmaster
                    .as_ref()
                    .is_some_and(|pm| store.is_suppressed(&pm.account, &addr).unwrap_or(false));
                if suppressed {
                    tracing::info!(domain = %r.domain, %addr, "tls rua address suppressed, skipped");
                } else {
                    recipients.push(addr);
                }
            }
            if recipients.is_empty() {
                if !to.https.is_empty() {
                    sent.push(OutgoingTlsReport {
                        domain: r.domain,
                        scope: r.scope,
                        report: r.report,
                        message: Vec::new(),
                        recipients,
                        https: to.https,
                    });
                }
                continue;
            }
            let mut message = report_message(&config.hostname, &r, &recipients, now);
            if let Some(configs) = signing_configs(dkim, &config.hostname) {
                let configs: Vec<rmox_core::dkim::SignConfig> = configs
                    .iter()
                    .cloned()
                    .map(|mut c| {
                        for h in SIGNED_HEADERS {
                            if !c.headers.iter().any(|x| x.eq_ignore_ascii_case(h)) {
                                c.headers.push(h.to_string());
                            }
                        }
                        c
                    })
                    .collect();
                let rng = ring::rand::SystemRandom::new();
                match rmox_core::dkim::sign(&message, &configs, now, &rng) {
                    Ok(h) => {
                        let mut m = h.into_bytes();
                        m.extend_from_slice(&message);
                        message = m;
                    }
                    Err(e) => tracing::error!(error = %e, "dkim signing tls report"),
                }
            }
            let from = format!("postmaster@{}", config.hostname);
            let q: Vec<QueueRecipient> = recipients
                .iter()
                .map(|rcpt| QueueRecipient {
                    sender_account: None,
                    mail_from: from.clone(),
                    recipient: rcpt.clone(),
                    has_8bit: false,
                    smtputf8: false,
                    requiretls: RequireTls::NotRequired,
                    transport: None,
                    next_attempt: now,
                    queued: now,
                    hold: false,
                    dsn: DsnParams::default(),
                    is_dsn: false,
                    from_id: None,
                })
                .collect();
            store.queue_add(&message, q)?;
            sent.push(OutgoingTlsReport {
                domain: r.domain,
                scope: r.scope,
                report: r.report,
                message,
                recipients,
                https: to.https,
            });
        }
        store.reports_remove(ReportKind::TlsResult, &p.domain, finished_before(now))?;
    }
    Ok(sent)
}

/// POSTs `r` to each of its `https:` rua (RFC 8460 5.3.2: the gzipped JSON as
/// `application/tlsrpt+gzip`) through the driver's HTTPS fetch loop on `rt`, host names
/// resolved through `dns`, the server's certificate verified against `roots` (WebPKI):
/// per URI, the status when a 2xx took it, else why not. Logged either way; not retried.
pub async fn post_tls_report<R: rmox_driver::outbound::Net>(
    rt: &R,
    dns: &Arc<crate::resolve::Dns>,
    roots: Option<Arc<rustls::ClientConfig>>,
    r: &OutgoingTlsReport,
) -> Vec<(String, Result<u16, String>)> {
    use rmox_core::tlspolicy::outgoing::{post_accepted, report_post};
    let mut out = Vec::new();
    if r.https.is_empty() {
        return out;
    }
    let config = roots.map(|t| Arc::new(rmox_core::http::FetchConfig::mta_sts(t)));
    let d = Arc::clone(dns);
    let resolve: rmox_driver::fetch::Resolve = Arc::new(move |lookups| {
        let d = Arc::clone(&d);
        Box::pin(async move { d.lookup_many_async(&lookups).await })
    });
    for uri in &r.https {
        let result = match &config {
            None => Err("no trusted roots for https".to_string()),
            Some(config) => {
                let req = report_post(&r.report, uri);
                match rmox_driver::fetch::fetch(
                    rt.clone(),
                    Arc::clone(config),
                    &req,
                    Arc::clone(&resolve),
                )
                .await
                {
                    Ok(resp) if post_accepted(resp.status) => Ok(resp.status),
                    Ok(resp) => Err(format!("status {}", resp.status)),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match &result {
            Ok(status) => {
                tracing::info!(domain = %r.domain, scope = ?r.scope, report_id = %r.report.report_id, %uri, status, "tls report posted")
            }
            Err(e) => {
                tracing::warn!(domain = %r.domain, scope = ?r.scope, report_id = %r.report.report_id, %uri, error = %e, "tls report post failed")
            }
        }
        out.push((uri.clone(), result));
    }
    out
}

/// Sends the TLS reports of all finished days ([`tls_pending`], the `_smtp._tls` lookups,
/// [`tls_finish`]; mailto only, `https:` rua are left to the caller), blocking: for tests
/// and commands, never inside a runtime task.
#[cfg_attr(not(test), allow(dead_code))]
pub fn send_tls_reports(
    store: &dyn MailStore,
    config: &Config,
    dkim: &std::collections::HashMap<String, Vec<rmox_core::dkim::SignConfig>>,
    dns: &crate::resolve::Dns,
    now: UnixTime,
) -> Result<Vec<OutgoingTlsReport>, StoreError> {
    let pending = tls_pending(store, config, now)?;
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let answers = dns.lookup_many(&tls_lookups(&pending));
    tls_finish(store, config, dkim, pending, &answers, now)
}

/// The report senders, run as one task on the server's runtime ([`Reporters::run`]):
/// DMARC aggregate reports every `reports.dmarc_interval_secs`, TLS reports at every
/// multiple of `reports.tls_interval_secs` (UTC midnight at the default of a day) unless
/// `reports.send_tls_reports` is false. Storage work runs on the blocking pool, DNS
/// through the async resolver; the queue runner is woken when reports were queued.
pub struct Reporters {
    store: Arc<dyn MailStore>,
    config: Arc<Config>,
    dkim: Arc<std::collections::HashMap<String, Vec<rmox_core::dkim::SignConfig>>>,
    dns: Option<Arc<crate::resolve::Dns>>,
    queue_wakeup: Option<Arc<crate::queue::Wakeup>>,
}

impl Reporters {
    /// The senders the config asks for; `dns` is needed for TLS reports (without it they
    /// are not sent).
    pub fn new(
        store: Arc<dyn MailStore>,
        config: Arc<Config>,
        dns: Option<crate::resolve::Dns>,
        queue_wakeup: Option<Arc<crate::queue::Wakeup>>,
    ) -> Result<Reporters, crate::Fail> {
        let dkim = Arc::new(crate::world::load_dkim(&config)?);
        Ok(Reporters {
            store,
            config,
            dkim,
            dns: dns.map(Arc::new),
            queue_wakeup,
        })
    }

    fn dmarc_interval(&self) -> Option<std::time::Duration> {
        let s = self.config.reports.dmarc_interval_secs;
        (s > 0).then(|| std::time::Duration::from_secs(s))
    }

    fn tls_interval(&self) -> Option<u64> {
        let r = &self.config.reports;
        (r.send_tls_reports && r.tls_interval_secs > 0 && self.dns.is_some())
            .then_some(r.tls_interval_secs)
    }

    /// Whether any sender is configured.
    pub fn any(&self) -> bool {
        self.dmarc_interval().is_some() || self.tls_interval().is_some()
    }

    fn wake_queue(&self) {
        if let Some(w) = &self.queue_wakeup {
            w.notify();
        }
    }

    /// How long a round holds its task lease ([`MailStore::task_lease`]).
    fn lease_secs(&self) -> i64 {
        i64::try_from(self.config.storage.lease_secs).unwrap_or(i64::MAX)
    }

    /// Runs the senders until `shutdown`.
    pub async fn run<R: rmox_driver::outbound::Net>(
        self: Arc<Self>,
        rt: R,
        shutdown: Arc<rmox_driver::Shutdown>,
    ) {
        use futures_lite::FutureExt;
        let dmarc = {
            let (me, rt, shutdown) = (Arc::clone(&self), rt.clone(), Arc::clone(&shutdown));
            async move {
                let Some(every) = me.dmarc_interval() else {
                    return;
                };
                loop {
                    let stop = async {
                        shutdown.wait().await;
                        true
                    };
                    let tick = async {
                        rt.sleep_until(std::time::Instant::now() + every).await;
                        false
                    };
                    if stop.or(tick).await {
                        return;
                    }
                    let m = Arc::clone(&me);
                    let r = rt
                        .unblock(Box::new(move || {
                            let now = rmox_driver::now().wall;
                            // One node at a time (a store shared by several nodes).
                            if !m.store.task_lease("dmarc-reports", now, m.lease_secs())? {
                                return Ok(Vec::new());
                            }
                            send_reports(m.store.as_ref(), &m.config, &m.dkim, now)
                        }))
                        .await;
                    match r {
                        Ok(v) if !v.is_empty() => {
                            for r in &v {
                                tracing::info!(domain = %r.domain, to = ?r.recipients, xml_bytes = r.xml.len(), message_bytes = r.message.len(), "dmarc aggregate report queued");
                            }
                            me.wake_queue();
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "dmarc reporter"),
                    }
                }
            }
        };
        let tls = {
            let (me, rt, shutdown) = (Arc::clone(&self), rt.clone(), Arc::clone(&shutdown));
            async move {
                let Some(every) = me.tls_interval() else {
                    return;
                };
                loop {
                    // The next multiple of the interval in Unix time (UTC midnight for a
                    // day), so restarts do not postpone the reports.
                    let now = rmox_driver::now().wall.0;
                    let every_i = i64::try_from(every).unwrap_or(i64::MAX);
                    let next = (now.div_euclid(every_i) + 1).saturating_mul(every_i);
                    let wait = u64::try_from(next.saturating_sub(now)).unwrap_or(every);
                    let stop = async {
                        shutdown.wait().await;
                        true
                    };
                    let tick = async {
                        rt.sleep_until(
                            std::time::Instant::now() + std::time::Duration::from_secs(wait),
                        )
                        .await;
                        false
                    };
                    if stop.or(tick).await {
                        return;
                    }
                    match me.tls_round(&rt).await {
                        Ok(v) => {
                            let queued: Vec<&OutgoingTlsReport> =
                                v.iter().filter(|r| !r.recipients.is_empty()).collect();
                            for r in &queued {
                                tracing::info!(domain = %r.domain, scope = ?r.scope, report_id = %r.report.report_id, to = ?r.recipients, message_bytes = r.message.len(), "tls report queued");
                            }
                            if !queued.is_empty() {
                                me.wake_queue();
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "tls reporter"),
                    }
                }
            }
        };
        futures_lite::future::zip(dmarc, tls).await;
        tracing::info!("report senders stopped");
    }

    /// One round of TLS reports: storage on the blocking pool, DNS and the `https:` rua
    /// POSTs on the task.
    async fn tls_round<R: rmox_driver::outbound::Net>(
        &self,
        rt: &R,
    ) -> Result<Vec<OutgoingTlsReport>, StoreError> {
        let Some(dns) = &self.dns else {
            return Ok(Vec::new());
        };
        let now = rmox_driver::now().wall;
        let (store, config) = (Arc::clone(&self.store), Arc::clone(&self.config));
        let lease = self.lease_secs();
        let pending = rt
            .unblock(Box::new(move || {
                // One node at a time (a store shared by several nodes).
                if !store.task_lease("tls-reports", now, lease)? {
                    return Ok(Vec::new());
                }
                tls_pending(store.as_ref(), &config, now)
            }))
            .await?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let answers = dns.lookup_many_async(&tls_lookups(&pending)).await;
        let (store, config, dkim) = (
            Arc::clone(&self.store),
            Arc::clone(&self.config),
            Arc::clone(&self.dkim),
        );
        let sent = rt
            .unblock(Box::new(move || {
                tls_finish(store.as_ref(), &config, &dkim, pending, &answers, now)
            }))
            .await?;
        if sent.iter().any(|r| !r.https.is_empty()) {
            let roots = crate::queue::pkix_for(None);
            for r in &sent {
                post_tls_report(rt, dns, roots.clone(), r).await;
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    //! mox's seeds TestDMARCSent and TestDMARCReport in memory: a real [`ServerSession`]
    //! whose effects a real [`crate::world::World`] answers over a real store, DNS from a
    //! `StaticZone`; then the reporter over the evaluations they stored.
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use rmox_core::dns::StaticZone;
    use rmox_core::server::{IncomingChecks, Peer, ServerConfig, ServerSession};

    use rmox_storage::Store;

    use super::*;
    use crate::testutil::{run, Tmp};
    use crate::world::World;

    const CONFIG: &str = r#"
hostname = "mail.mox.example"
data_dir = "data"

[domain."mox.example"]
dmarc_reports = "dmarc-reports@mox.example"
tls_reports = "tls-reports@mox.example"

[account.mjl]
domain = "mox.example"
destinations = { "mjl@mox.example" = {}, "dmarc-reports@mox.example" = { mailbox = "DMARC" }, "tls-reports@mox.example" = { mailbox = "TLSRPT" } }

[host_tls_reports]
localpart = "tls-reports"
account = "mjl"
mailbox = "TLSRPT"

[postmaster]
account = "mjl"

[incoming]
require_iprev_for_unknown_senders = false
"#;

    const IP: &str = "192.0.2.10";

    /// The `rua` of example.org's DMARC record in [`zone`], unless a test sets its own.
    const RUA: &str = "mailto:dmarcrpt@example.org!10m";

    fn zone(spf_pass: bool, rua: &str) -> StaticZone {
        let spf = if spf_pass {
            format!("v=spf1 ip4:{IP} -all")
        } else {
            "v=spf1 -all".to_string()
        };
        StaticZone::parse(&format!(
            "example.org. IN A 192.0.2.99\n\
             example.org. IN TXT \"{spf}\"\n\
             _dmarc.example.org. IN TXT \"v=DMARC1;p=reject;rua={rua}\"\n\
             _dmarc.example.net. IN TXT \"v=DMARC1;p=none\"\n\
             testsel._domainkey.example.org. IN TXT \"{}\"\n",
            dkim_key().dns_record()
        ))
        .unwrap()
    }

    /// The seed's fake DKIM key of example.org (ed25519, all-zero seed; selector testsel).
    fn dkim_key() -> rmox_core::dkim::SigningKey {
        rmox_core::dkim::SigningKey::ed25519_from_seed(&[0; 32]).unwrap()
    }

    /// `msg` with a DKIM-Signature of example.org (selector testsel) prepended.
    fn dkim_signed(msg: &str) -> String {
        let cfg = rmox_core::dkim::SignConfig::new("example.org", "testsel", dkim_key());
        let rng = ring::rand::SystemRandom::new();
        let h =
            rmox_core::dkim::sign(msg.as_bytes(), &[cfg], UnixTime(1_700_000_000), &rng).unwrap();
        format!("{h}{msg}")
    }

    struct Env {
        _tmp: Tmp,
        config: Arc<Config>,
        store: Arc<Store>,
        /// The `rua` example.org publishes ([`RUA`] by default).
        rua: String,
    }

    impl Env {
        fn new(tag: &str) -> Env {
            Env::with_config(tag, CONFIG)
        }

        fn with_config(tag: &str, config: &str) -> Env {
            let tmp = Tmp::new(tag);
            let c = Config::parse(config, &tmp.0.join("rmox.toml")).unwrap();
            let store = Arc::new(Store::open(&c.data_dir()).unwrap());
            for (name, a) in &c.account {
                store.account_add(name, &a.domain).unwrap();
            }
            Env {
                _tmp: tmp,
                config: Arc::new(c),
                store,
                rua: RUA.to_string(),
            }
        }

        /// Delivers `msg` from remote@example.org to mjl@mox.example; the final reply.
        fn deliver(&self, spf_pass: bool, msg: &str) -> String {
            self.deliver_to(spf_pass, "mjl@mox.example", msg)
        }

        /// Delivers `msg` from remote@example.org to `rcpt`; the final reply.
        fn deliver_to(&self, spf_pass: bool, rcpt: &str, msg: &str) -> String {
            let world = World::new(
                Arc::clone(&self.config),
                Arc::clone(&self.store) as Arc<dyn MailStore>,
                Some(crate::resolve::Dns::Zone(zone(spf_pass, &self.rua))),
            )
            .unwrap();
            let mut sc = ServerConfig::new("mail.mox.example");
            sc.checks = Some(IncomingChecks {
                ehlo_must_resolve: false,
                iprev: false,
                ..IncomingChecks::default()
            });
            let peer = Peer {
                ip: IP.parse().unwrap(),
                cid: 1,
            };
            let mut s = ServerSession::new(Arc::new(sc), peer, rmox_driver::now()).unwrap();
            let mut out = String::new();
            for input in [
                String::new(),
                "EHLO remote.example\r\n".into(),
                "MAIL FROM:<remote@example.org>\r\n".into(),
                format!("RCPT TO:<{rcpt}>\r\n"),
                "DATA\r\n".into(),
                format!("{msg}.\r\n"),
            ] {
                out = run(&mut s, &world, input.as_bytes());
            }
            out
        }

        fn count_mailbox(&self, mailbox: &str) -> usize {
            self.store
                .messages("mjl")
                .unwrap()
                .iter()
                .filter(|m| m.mailbox == mailbox)
                .count()
        }

        fn evals(&self) -> Vec<StoredEval> {
            self.store
                .reports(ReportKind::DmarcEval, "example.org")
                .unwrap()
                .iter()
                .map(|(_, b)| serde_json::from_slice(b).unwrap())
                .collect()
        }
    }

    const MSG: &str = "From: <remote@example.org>\r\nTo: <mjl@mox.example>\r\nSubject: test\r\nMessage-Id: <t@example.org>\r\n\r\ntest email\r\n";

    #[test]
    fn dmarc_sent_scenario_and_report() {
        let env = Env::new("sent");
        // DMARC reject from a domain we never sent to: refused, evaluation optional.
        let r = env.deliver(false, MSG);
        assert!(r.starts_with("550"), "{r}");
        let l = env.evals();
        assert_eq!(l.len(), 1);
        assert!(l[0].optional);
        assert_eq!(l[0].disposition, "reject");
        // We sent to the address: the next evaluation is not optional.
        env.store
            .record_outgoing("mjl", &["remote@example.org".to_string()], UnixTime(1))
            .unwrap();
        let r = env.deliver(false, MSG);
        assert!(r.starts_with("550"), "{r}");
        let l = env.evals();
        assert_eq!(l.len(), 2);
        assert!(!l[1].optional);
        // SPF pass, DMARC pass: accepted, evaluated, not optional.
        let r = env.deliver(true, MSG);
        assert!(r.starts_with("250"), "{r}");
        let l = env.evals();
        assert_eq!(l.len(), 3);
        assert!(!l[2].optional);
        assert!(l[2].spf_aligned);
        assert_eq!(l[2].disposition, "none");

        // The reporter: one report to the rua address, queued, evaluations removed.
        let now = UnixTime(l[2].evaluated + 10);
        let sent = send_reports(&*env.store, &env.config, &Default::default(), now).unwrap();
        assert_eq!(sent.len(), 1);
        let rep = &sent[0];
        assert_eq!(rep.recipients, vec!["dmarcrpt@example.org".to_string()]);
        assert!(env.evals().is_empty());
        assert_eq!(env.store.queue_list(&Default::default()).unwrap().len(), 1);
        // Our parser reads the queued message (gzip attachment) back.
        let f = rmox_core::dmarc::parse_report_message(&rep.message).unwrap();
        assert_eq!(f.policy.domain, "example.org");
        assert_eq!(f.policy.p, Policy::Reject);
        let total: u64 = f.records.iter().map(|r| r.count).sum();
        assert_eq!(total, 3);
        assert!(f
            .records
            .iter()
            .any(|r| r.disposition == rmox_core::dmarc::Disposition::Reject && r.count == 2));
        assert_eq!(f.metadata.org_name, "mail.mox.example");
        // A second run has nothing to send.
        let again = send_reports(&*env.store, &env.config, &Default::default(), now).unwrap();
        assert!(again.is_empty());
        check_with_python(&rep.xml, 3);
        check_with_dmarc_cat(&rep.message, "example.org", &[(IP, 2), (IP, 1)]);
    }

    /// Decodes base64 (whitespace ignored); `None` on a bad character.
    fn unbase64(s: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0u32);
        for c in s.bytes() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                b'=' | b'\r' | b'\n' | b' ' | b'\t' => continue,
                _ => return None,
            };
            acc = (acc << 6) | u32::from(v);
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        Some(out)
    }

    /// The `.xml.gz` attachment of a report message composed by [`compose`]: its file name
    /// and bytes.
    fn xml_gz_attachment(msg: &[u8]) -> (String, Vec<u8>) {
        let text = String::from_utf8_lossy(msg);
        let (_, rest) = text
            .split_once("Content-Disposition: attachment; filename=\"")
            .expect("no attachment");
        let (name, rest) = rest.split_once('"').unwrap();
        let (_, body) = rest.split_once("\r\n\r\n").unwrap();
        let body = body.split("\r\n--").next().unwrap();
        (name.to_string(), unbase64(body).expect("bad base64"))
    }

    /// Debian's `dmarc-cat` (a report parser we did not write) reads the queued report's
    /// `.xml.gz` attachment: exit 0, and its output names the policy domain and every
    /// source IP with its count. Skipped when dmarc-cat is missing, unless CI is set.
    fn check_with_dmarc_cat(msg: &[u8], domain: &str, rows: &[(&str, u64)]) {
        let (name, gz) = xml_gz_attachment(msg);
        assert!(name.ends_with(".xml.gz"), "{name}");
        assert!(gz.starts_with(&[0x1f, 0x8b]), "attachment is not gzip");
        let tmp = Tmp::new("dmarc-cat");
        let file = tmp.0.join(&name);
        std::fs::write(&file, &gz).unwrap();
        // -N: no reverse DNS for the source IPs (no network in tests).
        let out = match std::process::Command::new("dmarc-cat")
            .arg("-N")
            .arg(&file)
            .output()
        {
            Ok(o) => o,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "dmarc-cat missing in CI (.ci/run installs it): {e}"
                );
                eprintln!(
                    "SKIP dmarc-cat check: dmarc-cat not runnable ({e}); apt install dmarc-cat"
                );
                return;
            }
        };
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "dmarc-cat failed: {text}");
        assert!(text.contains(domain), "domain {domain} missing:\n{text}");
        // One table row per (source IP, evaluation) with its count.
        for (ip, count) in rows {
            let found = text.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first() == Some(ip) && w.get(1) == Some(&count.to_string().as_str())
            });
            assert!(found, "no row for {ip} with count {count}:\n{text}");
        }
    }

    /// Python's xml.etree (a parser we did not write) reads the report's DMARC schema
    /// fields, in the RFC 9990 namespace. Skipped without python3 unless CI is set.
    fn check_with_python(xml: &str, want_total: u64) {
        let script = r#"
import sys, xml.etree.ElementTree as ET
r = ET.fromstring(sys.stdin.buffer.read())
# RFC 9990: the root is in the DMARC namespace; element names below it are the same.
NS = "{urn:ietf:params:xml:ns:dmarc-2.0}"
assert r.tag == NS + "feedback", r.tag
for e in r.iter():
    assert e.tag.startswith(NS), e.tag
    e.tag = e.tag[len(NS):]
md = r.find("report_metadata")
for f in ("org_name", "email", "report_id", "date_range/begin", "date_range/end"):
    assert md.find(f) is not None and md.find(f).text, f
pp = r.find("policy_published")
for f in ("domain", "p"):
    assert pp.find(f) is not None and pp.find(f).text, f
total = 0
for rec in r.findall("record"):
    row = rec.find("row")
    assert row.find("source_ip").text
    total += int(row.find("count").text)
    pe = row.find("policy_evaluated")
    assert pe.find("disposition").text in ("none", "quarantine", "reject")
    assert pe.find("dkim").text in ("pass", "fail")
    assert pe.find("spf").text in ("pass", "fail")
    assert rec.find("identifiers/header_from").text
    assert rec.find("auth_results") is not None
print(total)
"#;
        let child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            assert!(std::env::var_os("CI").is_none(), "python3 missing in CI");
            return;
        };
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(xml.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "python rejects the report: {}\n{xml}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want_total.to_string()
        );
    }

    /// Incoming aggregate reports: only one sent to the domain's `dmarc_reports` address,
    /// about that domain, from a sender that passed DMARC is stored. Regression: any
    /// message that parsed as a report, to any address, forged or not, was stored.
    #[test]
    fn dmarc_report_scenario() {
        let env = Env::new("report");
        let report_from = |from: &str, domain: &str| {
            format!(
                "From: <{from}>\r\nTo: <dmarc-reports@mox.example>\r\nSubject: dmarc report\r\nMIME-Version: 1.0\r\nContent-Type: text/xml\r\n\r\n\
<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\r\n<feedback><report_metadata><org_name>example.org</org_name><email>postmaster@example.org</email><report_id>1</report_id><date_range><begin>1596412800</begin><end>1596499199</end></date_range></report_metadata>\r\n\
<policy_published><domain>{domain}</domain><adkim>r</adkim><aspf>r</aspf><p>reject</p><sp>reject</sp><pct>100</pct></policy_published>\r\n\
<record><row><source_ip>192.0.2.5</source_ip><count>1</count><policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row><identifiers><header_from>{domain}</header_from></identifiers><auth_results><dkim><domain>{domain}</domain><result>pass</result><selector>s</selector></dkim><spf><domain>{domain}</domain><result>pass</result></spf></auth_results></record></feedback>\r\n"
            )
        };
        let report = |domain: &str| report_from("remote@example.org", domain);
        let stored = |env: &Env| {
            env.store
                .reports(ReportKind::DmarcReport, "mox.example")
                .unwrap()
                .len()
        };
        let to = "dmarc-reports@mox.example";
        // A report about someone else's domain is delivered but not stored as a report.
        let r = env.deliver_to(true, to, &report("xmox.nl"));
        assert!(r.starts_with("250"), "{r}");
        assert_eq!(stored(&env), 0);
        // A valid report sent to another address than dmarc_reports: mail only.
        let r = env.deliver(true, &report("mox.example"));
        assert!(r.starts_with("250"), "{r}");
        assert_eq!(stored(&env), 0);
        // A forged report: From example.net (p=none), which fails DMARC (SPF passes for
        // example.org, not aligned; no DKIM): delivered, not stored.
        let r = env.deliver_to(true, to, &report_from("remote@example.net", "mox.example"));
        assert!(r.starts_with("250"), "{r}");
        assert_eq!(stored(&env), 0);
        let r = env.deliver_to(true, to, &report("mox.example"));
        assert!(r.starts_with("250"), "{r}");
        assert_eq!(stored(&env), 1);
        assert_eq!(env.count_mailbox("DMARC"), 3);
        // The example.org ones were evaluated, as optional (they are reports).
        let l = env.evals();
        assert_eq!(l.len(), 3);
        assert!(l.iter().all(|e| e.optional));
        // Optional-only domains get no report; the evaluations are dropped.
        let now = UnixTime(l[1].evaluated + 10);
        let sent = send_reports(&*env.store, &env.config, &Default::default(), now).unwrap();
        assert!(sent.is_empty());
        assert!(env.evals().is_empty());
    }

    /// The report of mox's TestTLSReport (policy domain xmox.nl).
    const TLSRPT: &str = r#"{"organization-name":"Example.org","date-range":{"start-datetime":"2022-01-07T00:00:00Z","end-datetime":"2022-01-07T23:59:59Z"},"contact-info":"tlsrpt@example.org","report-id":"1","policies":[{"policy":{"policy-type":"no-policy-found","policy-domain":"xmox.nl"},"summary":{"total-successful-session-count":1,"total-failure-session-count":0}}]}"#;

    fn tls_report_msg(rcpt: &str, json: &str) -> String {
        format!("From: remote@example.org\r\nTo: {rcpt}\r\nSubject: tlsrpt report\r\nMIME-Version: 1.0\r\nContent-Type: application/tlsrpt+json\r\n\r\n{json}\r\n")
    }

    /// Seed TestTLSReport in memory: reports sent to the `tls_reports` address (and to the
    /// `host_tls_reports` one), DKIM-signed by example.org, are stored for our policy
    /// domains only (xmox.nl: 0, mox.example: 1, the host name: 2); an unsigned one, a broken one and one sent to another address are
    /// delivered but not stored; a gzip attachment is read. Regression: incoming TLS
    /// reports were delivered as mail only, never stored or listed.
    #[test]
    fn tls_report_scenario() {
        let env = Env::new("tlsrpt");
        let to = "tls-reports@mox.example";
        let stored = |env: &Env| {
            env.store
                .report_entries(ReportKind::TlsReport)
                .unwrap()
                .len()
        };
        let deliver = |rcpt: &str, msg: String| {
            let r = env.deliver_to(true, rcpt, &msg);
            assert!(r.starts_with("250"), "{r}");
        };
        deliver(to, dkim_signed(&tls_report_msg(to, TLSRPT)));
        assert_eq!(stored(&env), 0);
        let ours = TLSRPT.replace("xmox.nl", "mox.example");
        deliver(to, dkim_signed(&tls_report_msg(to, &ours)));
        assert_eq!(stored(&env), 1);
        // About our host name, to the host's reporting address (the host name is not a
        // configured domain).
        let host = TLSRPT.replace("xmox.nl", "mail.mox.example");
        let host_to = "tls-reports@mail.mox.example";
        deliver(host_to, dkim_signed(&tls_report_msg(host_to, &host)));
        assert_eq!(stored(&env), 2);
        // Not signed (SPF and so DMARC pass, but no DKIM), broken, or to an address that is
        // not tls_reports: mail only.
        deliver(to, tls_report_msg(to, &ours));
        deliver(
            to,
            dkim_signed(&tls_report_msg(to, &ours.replace("\"policies\"", "\"x\""))),
        );
        deliver(
            "mjl@mox.example",
            dkim_signed(&tls_report_msg("mjl@mox.example", &ours)),
        );
        assert_eq!(stored(&env), 2);
        // A gzipped report as an attachment of a multipart/report.
        let gz = rmox_core::codec::gzip(ours.replace("\"1\"", "\"2\"").as_bytes());
        let b64 = rmox_core::codec::base64_lines(&gz);
        let msg = format!("From: remote@example.org\r\nTo: {to}\r\nSubject: Report Domain: mox.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nA report.\r\n--b\r\nContent-Type: application/tlsrpt+gzip\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n");
        deliver(to, dkim_signed(&msg));
        assert_eq!(stored(&env), 3);
        assert_eq!(env.count_mailbox("TLSRPT"), 6);
        let recs: Vec<StoredTlsReport> = env
            .store
            .report_entries(ReportKind::TlsReport)
            .unwrap()
            .iter()
            .map(|e| serde_json::from_slice(&e.record).unwrap())
            .collect();
        let summary: Vec<_> = recs
            .iter()
            .map(|r| {
                (
                    r.policy_domain.as_str(),
                    r.host_report,
                    r.report.report_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("mail.mox.example", true, "1"),
                ("mox.example", false, "1"),
                ("mox.example", false, "2")
            ]
        );
        assert!(recs
            .iter()
            .all(|r| r.from_domain == "example.org" && r.mail_from == "remote@example.org"));
        // Reports' DMARC evaluations are optional (as mox's seed checks).
        let l = env.evals();
        assert_eq!(l.len(), 7);
        assert!(l.iter().all(|e| e.optional), "{l:?}");
        // What `rmox tlsrpt list` and `show` print.
        let lines = crate::tlsrpt::list_lines(&*env.store, false).unwrap();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[1].contains(" domain mox.example from example.org organization \"Example.org\" report-id \"1\" start 1641513600 end 1641599999 success 1 failure 0"),
            "{lines:?}"
        );
        assert!(
            lines[0].contains("domain mail.mox.example (host)"),
            "{lines:?}"
        );
        let id = lines[2].split(' ').next().unwrap();
        let shown: serde_json::Value =
            serde_json::from_str(&crate::tlsrpt::show_text(&*env.store, id).unwrap()).unwrap();
        assert_eq!(shown["id"], id);
        assert_eq!(shown["report"]["report-id"], "2");
        assert_eq!(
            shown["report"]["policies"][0]["policy"]["policy-domain"],
            "mox.example"
        );
        let json = crate::tlsrpt::list_lines(&*env.store, true).unwrap();
        let all: serde_json::Value = serde_json::from_str(&json.join("\n")).unwrap();
        assert_eq!(all.as_array().unwrap().len(), 3);
        assert!(crate::tlsrpt::show_text(&*env.store, "1-0-mox.example")
            .unwrap_err()
            .0
            .contains("not found"));
    }

    /// `limits.max_tls_report_size`: a report larger than it (here the seed's report,
    /// about 330 bytes, against 300) is delivered but not stored; at the default it is.
    #[test]
    fn tls_report_size_limit() {
        let report = TLSRPT.replace("xmox.nl", "mox.example");
        assert!(report.len() > 300 && report.len() < 400);
        let to = "tls-reports@mox.example";
        for (limit, want) in [(300, 0), (400, 1)] {
            let env = Env::with_config(
                &format!("tlsrpt-limit-{limit}"),
                &format!("{CONFIG}\n[limits]\nmax_tls_report_size = {limit}\n"),
            );
            let r = env.deliver_to(true, to, &dkim_signed(&tls_report_msg(to, &report)));
            assert!(r.starts_with("250"), "{r}");
            let n = env
                .store
                .report_entries(ReportKind::TlsReport)
                .unwrap()
                .len();
            assert_eq!(n, want, "limit {limit}");
            assert_eq!(env.count_mailbox("TLSRPT"), 1);
        }
    }

    /// Reports larger than a `rua` URI's RFC 7489 size limit (`!100`) were not sent to it.
    /// RFC 9989 made the suffix obsolete syntax that reporters ignore: the URI is used and
    /// gets the report whatever its size, from a fresh evaluation and from one stored by
    /// version 2 with the limit. A suppressed address is still skipped.
    #[test]
    fn rua_size_limit_ignored_and_suppression() {
        let mut env = Env::new("limits");
        env.rua = "mailto:dmarcrpt@example.org!100".into();
        env.store
            .record_outgoing("mjl", &["remote@example.org".to_string()], UnixTime(1))
            .unwrap();
        assert!(env.deliver(true, MSG).starts_with("250"));
        let e = env.evals().pop().unwrap();
        assert_eq!(e.version, EVAL_VERSION);
        assert_eq!(
            e.rua,
            vec![("mailto:dmarcrpt@example.org".to_string(), None)]
        );
        let now = UnixTime(e.evaluated + 10);
        let sent = send_reports(&*env.store, &env.config, &Default::default(), now).unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].recipients, ["dmarcrpt@example.org"]);
        assert!(sent[0].message.len() > 100, "{}", sent[0].message.len());
        assert!(env.evals().is_empty());

        // As version 2 stored it: the limit recorded, and ignored all the same.
        let mut old = e.clone();
        old.version = 2;
        old.rua = vec![("mailto:small@example.org".into(), Some(100))];
        old.evaluated = now.0 + 1;
        env.store
            .report_add(
                ReportKind::DmarcEval,
                "example.org",
                UnixTime(old.evaluated),
                serde_json::to_vec(&old).unwrap(),
            )
            .unwrap();
        let now = UnixTime(old.evaluated + 10);
        let sent = send_reports(&*env.store, &env.config, &Default::default(), now).unwrap();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].recipients, ["small@example.org"]);
        assert!(sent[0].message.len() > 100, "{}", sent[0].message.len());
        let queued = env.store.queue_list(&Default::default()).unwrap();
        assert_eq!(queued.len(), 2);
        assert!(queued
            .iter()
            .any(|q| q.rcpt.recipient == "small@example.org"));
        assert!(env.evals().is_empty());

        // A suppressed address is skipped.
        assert!(env.deliver(true, MSG).starts_with("250"));
        env.store
            .suppression_add(
                "mjl",
                rmox_storage::Suppression {
                    address: "dmarcrpt@example.org".into(),
                    reason: "test".into(),
                    manual: true,
                    created: UnixTime(1),
                },
            )
            .unwrap();
        let sent = send_reports(
            &*env.store,
            &env.config,
            &Default::default(),
            UnixTime(i64::MAX / 2),
        )
        .unwrap();
        assert!(sent.is_empty());
    }

    /// Outgoing reports wrote `<scope>helo</scope>` for an SPF result of the HELO name, a
    /// scope RFC 9990 no longer has (DMARC uses only the MAIL FROM identity). Stored
    /// evaluations (version 2 ones too) with such a result now give: for a null reverse
    /// path, the result with scope `mfrom` (RFC 7208 2.4: the MAIL FROM identity is then
    /// postmaster@ the HELO name); for a reverse path with an address, no SPF result. A
    /// MAIL FROM result keeps `mfrom`.
    #[test]
    fn report_spf_scope_mfrom_only() {
        let env = Env::new("spfscope");
        env.store
            .record_outgoing("mjl", &["remote@example.org".to_string()], UnixTime(1))
            .unwrap();
        assert!(env.deliver(true, MSG).starts_with("250"));
        let e = env.evals().pop().unwrap();
        assert_eq!(
            e.spf,
            vec![("example.org".into(), "mfrom".into(), "pass".into())]
        );
        let add = |ip: &str, version: u8, envelope_from: Option<&str>| {
            let mut h = e.clone();
            h.version = version;
            h.source_ip = ip.parse().unwrap();
            h.envelope_from = envelope_from.map(Into::into);
            h.spf = vec![("mx.example.org".into(), "helo".into(), "pass".into())];
            env.store
                .report_add(
                    ReportKind::DmarcEval,
                    "example.org",
                    UnixTime(h.evaluated),
                    serde_json::to_vec(&h).unwrap(),
                )
                .unwrap();
        };
        add("192.0.2.21", EVAL_VERSION, None);
        add("192.0.2.22", 2, None);
        add("192.0.2.23", EVAL_VERSION, Some("example.org"));
        add("192.0.2.24", 2, Some("example.org"));
        let now = UnixTime(e.evaluated + 10);
        let sent = send_reports(&*env.store, &env.config, &Default::default(), now).unwrap();
        assert_eq!(sent.len(), 1);
        let xml = &sent[0].xml;
        assert!(!xml.contains("helo"), "{xml}");
        let f = rmox_core::dmarc::parse_report_message(&sent[0].message).unwrap();
        let by_ip = |ip: &str| -> Vec<(String, Option<String>, String)> {
            let r = f
                .records
                .iter()
                .find(|r| r.source_ip.to_string() == ip)
                .unwrap_or_else(|| panic!("no record of {ip}:\n{xml}"));
            r.auth_results
                .spf
                .iter()
                .map(|s| (s.domain.clone(), s.scope.clone(), s.result.clone()))
                .collect()
        };
        let mfrom = |d: &str| vec![(d.to_string(), Some("mfrom".to_string()), "pass".into())];
        assert_eq!(by_ip(IP), mfrom("example.org"));
        assert_eq!(by_ip("192.0.2.21"), mfrom("mx.example.org"));
        assert_eq!(by_ip("192.0.2.22"), mfrom("mx.example.org"));
        assert_eq!(by_ip("192.0.2.23"), vec![]);
        assert_eq!(by_ip("192.0.2.24"), vec![]);
        // The rest of such a record is kept: its DKIM results and identifiers.
        let r = f
            .records
            .iter()
            .find(|r| r.source_ip.to_string() == "192.0.2.23")
            .unwrap();
        assert_eq!(r.identifiers.envelope_from.as_deref(), Some("example.org"));
        assert_eq!(r.auth_results.dkim.len(), e.dkim.len());
    }

    /// A stored TLS result of `domain` at `t`: an MTA-STS session, failed or not.
    fn add_tls_result(env: &Env, domain: &str, t: i64, failed: bool) {
        use rmox_core::tlspolicy::{FailureDetails, Policy, PolicyType, ReportScope, ResultType};
        let r = rmox_core::tlspolicy::SessionResult {
            scope: ReportScope::RecipientDomain,
            policy: Policy {
                policy_type: PolicyType::Sts,
                policy_string: vec!["version: STSv1".into(), "mode: testing".into()],
                policy_domain: domain.into(),
                mx_host: vec!["mx1.example.org".into()],
            },
            failure: failed.then(|| FailureDetails {
                result_type: ResultType::CertificateNotTrusted,
                sending_mta_ip: None,
                receiving_mx_hostname: Some("mx1.example.org".into()),
                receiving_mx_helo: None,
                receiving_ip: Some("10.0.0.25".into()),
                failed_session_count: 1,
                additional_information: None,
                failure_reason_code: Some("unknown issuer".into()),
            }),
        };
        env.store
            .report_add(
                ReportKind::TlsResult,
                domain,
                UnixTime(t),
                serde_json::to_vec(&r).unwrap(),
            )
            .unwrap();
    }

    fn tls_zone() -> crate::resolve::Dns {
        crate::resolve::Dns::Zone(
            StaticZone::parse(
                "_smtp._tls.sts-testing.example.org. IN TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@example.org,https://r.example.org/x\"\n\
                 _smtp._tls.ok.example.org. IN TXT \"v=TLSRPTv1; rua=mailto:tlsrpt@example.org\"\n\
                 _smtp._tls.mox.example. IN TXT \"v=TLSRPTv1; rua=mailto:tls-reports@mox.example\"\n",
            )
            .unwrap(),
        )
    }

    fn tls_rows(env: &Env, domain: &str) -> Vec<i64> {
        env.store
            .reports(ReportKind::TlsResult, domain)
            .unwrap()
            .iter()
            .map(|(t, _)| t.0)
            .collect()
    }

    const DAY: i64 = 1_700_006_400; // 2023-11-15 00:00:00 UTC.

    /// The TLS report sender: results of finished days are aggregated per policy domain
    /// into one report, DKIM-signed (also over the TLS-Report-* headers), queued for the
    /// mailto rua with REQUIRETLS off, and removed; today's results stay; domains with only
    /// successes, without a record, or of our own get none, their results removed all the
    /// same.
    #[test]
    fn tls_reports_sent_and_removed() {
        let env = Env::new("tlssend");
        for (i, failed) in [false, true, true].into_iter().enumerate() {
            add_tls_result(&env, "sts-testing.example.org", DAY + i as i64, failed);
        }
        let now = DAY + 86_400 + 60;
        add_tls_result(&env, "sts-testing.example.org", now - 10, true);
        add_tls_result(&env, "ok.example.org", DAY, false);
        add_tls_result(&env, "norecord.example.org", DAY, true);
        add_tls_result(&env, "mox.example", DAY, true);
        let key = rmox_core::dkim::SigningKey::ed25519_from_seed(&[7; 32]).unwrap();
        let dkim = std::collections::HashMap::from([(
            "mox.example".to_string(),
            vec![rmox_core::dkim::SignConfig::new("mox.example", "s1", key)],
        )]);
        let sent =
            send_tls_reports(&*env.store, &env.config, &dkim, &tls_zone(), UnixTime(now)).unwrap();
        assert_eq!(sent.len(), 1, "{sent:?}");
        // Its https rua is handed back to be POSTed (the report task does).
        assert_eq!(sent[0].https, ["https://r.example.org/x"]);
        let r = &sent[0];
        assert_eq!(r.domain, "sts-testing.example.org");
        assert_eq!(r.recipients, ["tlsrpt@example.org"]);
        let p = &r.report.policies[0];
        assert_eq!(p.summary.total_successful_session_count, 1);
        assert_eq!(p.summary.total_failure_session_count, 2);
        assert_eq!(p.failure_details[0].failed_session_count, 2);
        assert_eq!(r.report.date_range.start_datetime, UnixTime(DAY));
        let text = String::from_utf8(r.message.clone()).unwrap();
        assert!(text.starts_with("DKIM-Signature:"), "{text}");
        let sig = &text[..text.find("\r\nFrom:").unwrap()].to_ascii_lowercase();
        assert!(
            sig.contains("tls-report-domain") && sig.contains("tls-report-submitter"),
            "{sig}"
        );
        assert_eq!(
            rmox_core::tlspolicy::parse_report_message(&r.message).unwrap(),
            r.report
        );
        let q = env.store.queue_list(&Default::default()).unwrap();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].rcpt.recipient, "tlsrpt@example.org");
        assert_eq!(q[0].rcpt.mail_from, "postmaster@mail.mox.example");
        assert_eq!(q[0].rcpt.requiretls, RequireTls::NotRequired);
        // Handled results are gone; today's stays for tomorrow.
        assert_eq!(tls_rows(&env, "sts-testing.example.org"), [now - 10]);
        for d in ["ok.example.org", "norecord.example.org", "mox.example"] {
            assert!(tls_rows(&env, d).is_empty(), "{d}");
        }
        // Nothing more to send.
        let again =
            send_tls_reports(&*env.store, &env.config, &dkim, &tls_zone(), UnixTime(now)).unwrap();
        assert!(again.is_empty());
    }

    /// A suppressed rua address gets no TLS report (the https rua is left to post); the
    /// results are removed.
    #[test]
    fn tls_report_suppressed() {
        let env = Env::new("tlssuppress");
        add_tls_result(&env, "sts-testing.example.org", DAY, true);
        env.store
            .suppression_add(
                "mjl",
                rmox_storage::Suppression {
                    address: "tlsrpt@example.org".into(),
                    reason: "test".into(),
                    manual: true,
                    created: UnixTime(1),
                },
            )
            .unwrap();
        let sent = send_tls_reports(
            &*env.store,
            &env.config,
            &Default::default(),
            &tls_zone(),
            UnixTime(DAY + 86_400),
        )
        .unwrap();
        // Only the record's https rua remains, for the caller to POST.
        assert_eq!(sent.len(), 1);
        assert!(sent[0].recipients.is_empty() && sent[0].message.is_empty());
        assert_eq!(sent[0].https, ["https://r.example.org/x"]);
        assert!(env
            .store
            .queue_list(&Default::default())
            .unwrap()
            .is_empty());
        assert!(tls_rows(&env, "sts-testing.example.org").is_empty());
    }

    /// The report senders run as a task on a runtime (here smol): with 1-second intervals
    /// both DMARC and TLS reports get queued, and the task ends at shutdown;
    /// `send_tls_reports = false` sends the DMARC report only and keeps the TLS results;
    /// `dmarc_interval_secs = 0` sends no DMARC report. Regression: the reporter was a
    /// std thread polling a condition variable, outside the chosen runtime.
    #[test]
    fn reporters_follow_config() {
        for (extra, want_queued, want_tls_left) in [
            ("dmarc_interval_secs = 1\ntls_interval_secs = 1\n", 2, false),
            (
                "dmarc_interval_secs = 1\ntls_interval_secs = 1\nsend_tls_reports = false\n",
                1,
                true,
            ),
            ("dmarc_interval_secs = 0\ntls_interval_secs = 1\n", 1, false),
        ] {
            let env = Env::with_config(
                &format!("reporters-{}", extra.len()),
                &format!("{CONFIG}\n[reports]\n{extra}"),
            );
            env.store
                .record_outgoing("mjl", &["remote@example.org".to_string()], UnixTime(1))
                .unwrap();
            assert!(env.deliver(true, MSG).starts_with("250"));
            add_tls_result(&env, "sts-testing.example.org", DAY, true);
            let wakeup = Arc::new(crate::queue::Wakeup::default());
            let reporters = Arc::new(
                Reporters::new(
                    env.store.clone(),
                    Arc::clone(&env.config),
                    Some(tls_zone()),
                    Some(Arc::clone(&wakeup)),
                )
                .unwrap(),
            );
            let shutdown = rmox_driver::Shutdown::new();
            let (store, stop) = (Arc::clone(&env.store), Arc::clone(&shutdown));
            let waiter = std::thread::spawn(move || {
                let mut n = 0;
                for _ in 0..100 {
                    n = store.queue_list(&Default::default()).unwrap().len();
                    if n >= want_queued {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                // Another interval, to see nothing more is queued.
                std::thread::sleep(Duration::from_millis(1200));
                stop.trigger();
                n
            });
            rmox_runtime_smol::block_on(|rt| reporters.run(rt, shutdown)).unwrap();
            let n = waiter.join().unwrap();
            assert_eq!(n, want_queued, "{extra}");
            assert_eq!(
                env.store.queue_list(&Default::default()).unwrap().len(),
                want_queued,
                "{extra}"
            );
            assert_eq!(
                !tls_rows(&env, "sts-testing.example.org").is_empty(),
                want_tls_left,
                "{extra}"
            );
        }
    }
}
