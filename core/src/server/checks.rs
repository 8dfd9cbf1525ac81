//! The DNS-based checks of incoming delivery (port 25), run by the session as one batch of
//! lookups per step: the EHLO name must exist, the MAIL FROM domain must accept mail, SPF at
//! MAIL FROM; DKIM, iprev and DNSBL after DATA, then DMARC.

use std::net::IpAddr;

use crate::dkim::{DkimResult, DkimVerify, VerifyLimits};
use crate::dmarc::{DmarcInput, DmarcResult, DmarcVerify};
use crate::dns::{Check, CheckStep, Lookup, LookupResult, Record, RecordType, Round};
use crate::dnsbl::{DnsblCheck, DnsblStatus};
use crate::iprev::{IprevCheck, IprevResult};
use crate::spf::{SpfArgs, SpfCheck, SpfResult};

/// Which checks incoming delivery runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingChecks {
    /// The EHLO name must resolve to an address (550 when it does not exist).
    pub ehlo_must_resolve: bool,
    /// The MAIL FROM domain must accept mail: not null MX, exists (550 5.7.27).
    pub mail_from_domain: bool,
    /// SPF for MAIL FROM (and HELO for the null sender).
    pub spf: bool,
    /// More than one recipient only after an SPF pass (452 otherwise).
    pub multiple_recipients_need_spf_pass: bool,
    /// Forward-confirmed reverse DNS of the client.
    pub iprev: bool,
    /// DKIM verification.
    pub dkim: bool,
    /// DMARC evaluation (needs SPF and DKIM).
    pub dmarc: bool,
    /// DNSBL zones to query for the client's IP.
    pub dnsbl: Vec<String>,
}

impl Default for IncomingChecks {
    fn default() -> Self {
        IncomingChecks {
            ehlo_must_resolve: true,
            mail_from_domain: true,
            spf: true,
            multiple_recipients_need_spf_pass: true,
            iprev: true,
            dkim: true,
            dmarc: true,
            dnsbl: Vec::new(),
        }
    }
}

/// Whether a host name has an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostStatus {
    /// It has an A or AAAA record.
    Exists,
    /// Neither (NXDOMAIN or no address records).
    NotFound,
    /// The answer could not be had now.
    TempFail,
}

/// Whether a domain accepts mail (RFC 5321 5.1, RFC 7505).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailDomainStatus {
    /// MX records, or an address for implicit MX.
    Accepts,
    /// A null MX: the domain accepts no mail.
    NullMx,
    /// No MX and no address.
    NotFound,
    /// The answer could not be had now.
    TempFail,
}

/// A or AAAA for a name.
#[derive(Debug)]
pub struct HostCheck {
    name: String,
    asked: bool,
    pending_a: bool,
    answers: Vec<LookupResult>,
}

impl HostCheck {
    /// Checks `name` (lower-case ASCII).
    pub fn new(name: &str) -> HostCheck {
        HostCheck {
            name: name.to_string(),
            asked: false,
            pending_a: false,
            answers: Vec::new(),
        }
    }
}

fn host_status(answers: &[LookupResult]) -> HostStatus {
    if answers
        .iter()
        .any(|a| matches!(a, LookupResult::Records { .. }))
    {
        HostStatus::Exists
    } else if answers
        .iter()
        .any(|a| matches!(a, LookupResult::TempFail(_)))
    {
        HostStatus::TempFail
    } else {
        HostStatus::NotFound
    }
}

impl Check for HostCheck {
    type Verdict = HostStatus;

    fn poll(&mut self) -> CheckStep<HostStatus> {
        if !self.asked {
            self.asked = true;
            self.pending_a = true;
            return CheckStep::Lookup(Lookup {
                name: self.name.clone(),
                rtype: RecordType::A,
            });
        }
        if self.pending_a {
            self.pending_a = false;
            return CheckStep::Lookup(Lookup {
                name: self.name.clone(),
                rtype: RecordType::Aaaa,
            });
        }
        if self.answers.len() < 2 {
            return CheckStep::Wait;
        }
        CheckStep::Done(host_status(&self.answers))
    }

    fn answer(&mut self, _lookup: &Lookup, result: LookupResult) {
        self.answers.push(result);
    }
}

/// MX of a domain, with implicit MX.
#[derive(Debug)]
pub struct MailDomainCheck {
    domain: String,
    stage: u8,
    mx: Option<LookupResult>,
    host: Option<HostCheck>,
}

impl MailDomainCheck {
    /// Checks `domain` (lower-case ASCII).
    pub fn new(domain: &str) -> MailDomainCheck {
        MailDomainCheck {
            domain: domain.to_string(),
            stage: 0,
            mx: None,
            host: None,
        }
    }
}

impl Check for MailDomainCheck {
    type Verdict = MailDomainStatus;

    fn poll(&mut self) -> CheckStep<MailDomainStatus> {
        if self.stage == 0 {
            self.stage = 1;
            return CheckStep::Lookup(Lookup {
                name: self.domain.clone(),
                rtype: RecordType::Mx,
            });
        }
        match &self.mx {
            None => CheckStep::Wait,
            Some(LookupResult::Records { records, .. }) => {
                let hosts: Vec<&str> = records
                    .iter()
                    .filter_map(|r| match r {
                        Record::Mx { host, .. } => Some(host.as_str()),
                        _ => None,
                    })
                    .collect();
                if hosts.len() == 1 && hosts[0].is_empty() {
                    CheckStep::Done(MailDomainStatus::NullMx)
                } else {
                    CheckStep::Done(MailDomainStatus::Accepts)
                }
            }
            Some(LookupResult::NxDomain) => CheckStep::Done(MailDomainStatus::NotFound),
            Some(LookupResult::TempFail(_)) => CheckStep::Done(MailDomainStatus::TempFail),
            Some(LookupResult::NoData) => {
                let host = self
                    .host
                    .get_or_insert_with(|| HostCheck::new(&self.domain));
                match host.poll() {
                    CheckStep::Lookup(l) => CheckStep::Lookup(l),
                    CheckStep::Wait => CheckStep::Wait,
                    CheckStep::Done(HostStatus::Exists) => {
                        CheckStep::Done(MailDomainStatus::Accepts)
                    }
                    CheckStep::Done(HostStatus::NotFound) => {
                        CheckStep::Done(MailDomainStatus::NotFound)
                    }
                    CheckStep::Done(HostStatus::TempFail) => {
                        CheckStep::Done(MailDomainStatus::TempFail)
                    }
                }
            }
        }
    }

    fn answer(&mut self, lookup: &Lookup, result: LookupResult) {
        if lookup.rtype == RecordType::Mx && self.mx.is_none() {
            self.mx = Some(result);
        } else if let Some(h) = self.host.as_mut() {
            h.answer(lookup, result);
        }
    }
}

/// One running check of any kind.
pub(crate) enum AnyCheck {
    Host(HostCheck),
    MailDomain(MailDomainCheck),
    Spf(Box<SpfCheck>),
    Iprev(IprevCheck),
    Dnsbl(DnsblCheck),
    Dkim(Box<DkimVerify>),
    Dmarc(Box<DmarcVerify>),
}

/// The verdicts of finished checks.
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    /// EHLO name status.
    pub ehlo: Option<HostStatus>,
    /// MAIL FROM domain status.
    pub mail_domain: Option<MailDomainStatus>,
    /// SPF.
    pub spf: Option<SpfResult>,
    /// The arguments SPF was evaluated with (for Received-SPF).
    pub spf_args: Option<SpfArgs>,
    /// iprev.
    pub iprev: Option<IprevResult>,
    /// DNSBL per zone.
    pub dnsbl: Option<Vec<(String, DnsblStatus)>>,
    /// DKIM per signature.
    pub dkim: Option<Vec<DkimResult>>,
    /// DMARC.
    pub dmarc: Option<DmarcResult>,
    /// The From domain DMARC was evaluated for.
    pub from_domain: Option<String>,
}

/// Several checks progressing together; their questions go out as one batch per step.
pub(crate) struct CheckSet {
    checks: Vec<(AnyCheck, bool)>,
    asked: Vec<(usize, Lookup)>,
    /// Bound on rounds, so a broken check cannot loop forever.
    rounds: u32,
}

macro_rules! each {
    ($c:expr, $x:ident => $e:expr) => {
        match $c {
            AnyCheck::Host($x) => $e,
            AnyCheck::MailDomain($x) => $e,
            AnyCheck::Spf($x) => $e,
            AnyCheck::Iprev($x) => $e,
            AnyCheck::Dnsbl($x) => $e,
            AnyCheck::Dkim($x) => $e,
            AnyCheck::Dmarc($x) => $e,
        }
    };
}

impl CheckSet {
    pub(crate) fn new(checks: Vec<AnyCheck>) -> CheckSet {
        CheckSet {
            checks: checks.into_iter().map(|c| (c, false)).collect(),
            asked: Vec::new(),
            rounds: 0,
        }
    }

    /// The next batch of questions, or `None` when every check is done.
    pub(crate) fn step(&mut self) -> Option<Vec<Lookup>> {
        self.rounds += 1;
        let mut out = Vec::new();
        for (i, (c, done)) in self.checks.iter_mut().enumerate() {
            if *done {
                continue;
            }
            match each!(c, x => match crate::dns::round(x, 64) {
                Round::Ask(qs) => Some(qs),
                Round::Done(_) => None,
            }) {
                Some(qs) => {
                    self.asked.extend(qs.iter().map(|l| (i, l.clone())));
                    out.extend(qs);
                }
                None => *done = true,
            }
        }
        if out.is_empty() || self.rounds > 50 {
            // Everything done, or stuck: checks still waiting get no more answers.
            return None;
        }
        Some(out)
    }

    /// Answers to the last batch, in order.
    pub(crate) fn answer(&mut self, results: Vec<LookupResult>) {
        let asked = std::mem::take(&mut self.asked);
        let mut results = results.into_iter();
        for (i, l) in asked {
            let r = results
                .next()
                .unwrap_or_else(|| LookupResult::TempFail("no answer".into()));
            if let Some((c, _)) = self.checks.get_mut(i) {
                each!(c, x => x.answer(&l, r));
            }
        }
    }

    /// Moves the verdicts of finished checks into `v`.
    pub(crate) fn collect(self, v: &mut Verdicts) {
        for (mut c, _) in self.checks {
            match &mut c {
                AnyCheck::Host(x) => {
                    if let CheckStep::Done(s) = x.poll() {
                        v.ehlo = Some(s);
                    } else {
                        v.ehlo = Some(HostStatus::TempFail);
                    }
                }
                AnyCheck::MailDomain(x) => {
                    v.mail_domain = Some(match x.poll() {
                        CheckStep::Done(s) => s,
                        _ => MailDomainStatus::TempFail,
                    })
                }
                AnyCheck::Spf(x) => {
                    v.spf_args = Some(x.args().clone());
                    if let CheckStep::Done(r) = x.poll() {
                        v.spf = Some(r);
                    }
                }
                AnyCheck::Iprev(x) => {
                    v.iprev = Some(match x.poll() {
                        CheckStep::Done(r) => r,
                        _ => IprevResult::TempError("no answer".into()),
                    })
                }
                AnyCheck::Dnsbl(x) => {
                    if let CheckStep::Done(r) = x.poll() {
                        v.dnsbl = Some(r);
                    }
                }
                AnyCheck::Dkim(x) => {
                    if let CheckStep::Done(r) = x.poll() {
                        v.dkim = Some(r);
                    }
                }
                AnyCheck::Dmarc(x) => {
                    if let CheckStep::Done(r) = x.poll() {
                        v.dmarc = Some(r);
                    }
                }
            }
        }
    }
}

/// Checks at MAIL FROM.
pub(crate) fn mail_checks(
    c: &IncomingChecks,
    ip: IpAddr,
    ehlo: Option<&str>,
    mail_from: Option<(&str, &str)>,
    receiver: &str,
    now: crate::UnixTime,
) -> Vec<AnyCheck> {
    let mut out = Vec::new();
    if c.ehlo_must_resolve {
        if let Some(e) = ehlo {
            out.push(AnyCheck::Host(HostCheck::new(e)));
        }
    }
    if c.mail_from_domain {
        if let Some((_, d)) = mail_from {
            out.push(AnyCheck::MailDomain(MailDomainCheck::new(d)));
        }
    }
    if c.spf {
        let helo = ehlo.unwrap_or("");
        let args = match mail_from {
            Some((addr, _)) => SpfArgs::mail_from(ip, addr, helo, receiver, now),
            None => SpfArgs::helo(ip, helo, receiver, now),
        };
        out.push(AnyCheck::Spf(Box::new(SpfCheck::new(args))));
    }
    out
}

/// Checks after DATA (DMARC comes after these, with their results).
pub(crate) fn data_checks(
    c: &IncomingChecks,
    ip: IpAddr,
    msg: &[u8],
    now: crate::UnixTime,
) -> Vec<AnyCheck> {
    let mut out = Vec::new();
    if c.dkim || c.dmarc {
        out.push(AnyCheck::Dkim(Box::new(DkimVerify::new(
            msg,
            now,
            &VerifyLimits::default(),
        ))));
    }
    if c.iprev {
        out.push(AnyCheck::Iprev(IprevCheck::new(ip)));
    }
    if !c.dnsbl.is_empty() {
        out.push(AnyCheck::Dnsbl(DnsblCheck::new(ip, &c.dnsbl)));
    }
    out
}

/// The DMARC check for a From domain, given SPF and DKIM results.
pub(crate) fn dmarc_check(from_domain: &str, v: &Verdicts, sample: u8) -> AnyCheck {
    let spf_pass = v
        .spf
        .as_ref()
        .filter(|r| r.result == crate::spf::SpfStatus::Pass)
        .and_then(|_| v.spf_args.as_ref().map(|a| a.domain.clone()));
    let dkim = v.dkim.clone().unwrap_or_default();
    AnyCheck::Dmarc(Box::new(DmarcVerify::new(DmarcInput::new(
        from_domain,
        spf_pass.as_deref(),
        &dkim,
        sample,
    ))))
}

/// The Authentication-Results header (RFC 8601) and Received-SPF, CRLF-terminated.
pub(crate) fn auth_headers(hostname: &str, ip: IpAddr, v: &Verdicts) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(i) = &v.iprev {
        let s = match i {
            IprevResult::Pass(_) => "pass",
            IprevResult::Fail => "fail",
            IprevResult::TempError(_) => "temperror",
            IprevResult::PermError(_) => "permerror",
        };
        parts.push(format!("iprev={s} policy.iprev={ip}"));
    }
    if let Some(d) = &v.dkim {
        if d.is_empty() {
            parts.push("dkim=none".into());
        }
        for r in d {
            parts.push(r.auth_results());
        }
    }
    if let (Some(s), Some(a)) = (&v.spf, &v.spf_args) {
        let what = if a.local.is_empty() && a.domain == a.helo {
            format!("smtp.helo={}", a.helo)
        } else {
            format!("smtp.mailfrom={}", a.domain)
        };
        parts.push(format!("spf={} {what}", s.result));
    }
    if let (Some(d), Some(f)) = (&v.dmarc, &v.from_domain) {
        parts.push(d.auth_results(f));
    }
    let mut h = format!("Authentication-Results: {hostname}");
    if parts.is_empty() {
        h.push_str("; none");
    }
    for p in parts {
        h.push_str(";\r\n\t");
        h.push_str(&p);
    }
    h.push_str("\r\n");
    if let (Some(s), Some(a)) = (&v.spf, &v.spf_args) {
        h.push_str(&crate::spf::received_spf_header(s, a));
        h.push_str("\r\n");
    }
    h
}
