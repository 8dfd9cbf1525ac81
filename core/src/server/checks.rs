//! The DNS-based checks of incoming delivery (port 25), run by the session as one batch of
//! lookups per step: the EHLO name must exist, the MAIL FROM domain must accept mail, SPF at
//! MAIL FROM; DKIM, iprev and DNSBL after DATA, then DMARC.

use std::net::IpAddr;
use std::time::Duration;

use crate::dkim::{DkimResult, DkimVerify, VerifyLimits};
use crate::dmarc::{DmarcInput, DmarcResult, DmarcVerify};
use crate::dns::{
    Check, CheckInput, CheckLimits, CheckOutput, CheckSession, CheckStep, Lookup, LookupResult,
    Record, RecordType,
};
use crate::dnsbl::{DnsblCheck, DnsblStatus};
use crate::iprev::{IprevCheck, IprevResult};
use crate::spf::{SpfArgs, SpfCheck, SpfResult};
use crate::{Now, Token};

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

/// The verdict of an [`AnyCheck`].
#[derive(Debug, Clone)]
pub(crate) enum AnyVerdict {
    Host(HostStatus),
    MailDomain(MailDomainStatus),
    Spf(SpfResult),
    Iprev(IprevResult),
    Dnsbl(Vec<(String, DnsblStatus)>),
    Dkim(Vec<DkimResult>),
    Dmarc(DmarcResult),
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

/// `step` of a check, its verdict wrapped in `wrap`.
fn step_of<C: Check>(c: &mut C, wrap: fn(C::Verdict) -> AnyVerdict) -> CheckStep<AnyVerdict> {
    match c.poll() {
        CheckStep::Lookup(l) => CheckStep::Lookup(l),
        CheckStep::Wait => CheckStep::Wait,
        CheckStep::Done(v) => CheckStep::Done(wrap(v)),
    }
}

impl Check for AnyCheck {
    type Verdict = AnyVerdict;

    fn poll(&mut self) -> CheckStep<AnyVerdict> {
        match self {
            AnyCheck::Host(x) => step_of(x, AnyVerdict::Host),
            AnyCheck::MailDomain(x) => step_of(x, AnyVerdict::MailDomain),
            AnyCheck::Spf(x) => step_of(x, AnyVerdict::Spf),
            AnyCheck::Iprev(x) => step_of(x, AnyVerdict::Iprev),
            AnyCheck::Dnsbl(x) => step_of(x, AnyVerdict::Dnsbl),
            AnyCheck::Dkim(x) => step_of(x, AnyVerdict::Dkim),
            AnyCheck::Dmarc(x) => step_of(x, AnyVerdict::Dmarc),
        }
    }

    fn answer(&mut self, lookup: &Lookup, result: LookupResult) {
        each!(self, x => x.answer(lookup, result))
    }
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

/// Questions one check may ask in one step; more come in the next step.
const MAX_BATCH: usize = 64;

/// Steps at most, so a broken check cannot loop forever.
const MAX_STEPS: u32 = 50;

/// Several checks progressing together, each a [`CheckSession`]: their effects of one step
/// go out as one batch (the session's own effect and deadline, `checks_timeout`), and the
/// answers go back to each check with its effect's token.
pub(crate) struct CheckSet {
    sessions: Vec<CheckSession<AnyCheck>>,
    /// The effects of the last step: which session, its token, how many lookups.
    asked: Vec<(usize, Token, usize)>,
    /// Steps taken.
    steps: u32,
}

impl CheckSet {
    /// The checks, each with `answer_timeout` as its effects' deadline (the session's
    /// checks deadline, which ends the wait first, bounds the whole set).
    pub(crate) fn new(checks: Vec<AnyCheck>, answer_timeout: Duration) -> CheckSet {
        let limits = CheckLimits {
            answer_timeout,
            max_questions: MAX_BATCH * MAX_STEPS as usize,
            max_batch: MAX_BATCH,
        };
        CheckSet {
            sessions: checks
                .into_iter()
                .map(|c| CheckSession::new(c, limits))
                .collect(),
            asked: Vec::new(),
            steps: 0,
        }
    }

    /// The next batch of questions, or `None` when every check is done (or stuck).
    pub(crate) fn step(&mut self, now: Now) -> Option<Vec<Lookup>> {
        self.steps += 1;
        let mut out = Vec::new();
        for (i, s) in self.sessions.iter_mut().enumerate() {
            if let CheckOutput::Effect(token, qs) = s.poll(now) {
                self.asked.push((i, token, qs.len()));
                out.extend(qs);
            }
        }
        if out.is_empty() || self.steps > MAX_STEPS {
            // Everything done, or stuck: checks still waiting get no more answers.
            self.asked.clear();
            return None;
        }
        Some(out)
    }

    /// Answers to the last batch, in order.
    pub(crate) fn answer(&mut self, now: Now, results: Vec<LookupResult>) {
        let mut results = results.into_iter();
        for (i, token, n) in std::mem::take(&mut self.asked) {
            let mine: Vec<LookupResult> = results.by_ref().take(n).collect();
            if let Some(s) = self.sessions.get_mut(i) {
                s.handle(now, CheckInput::Answered(token, mine));
            }
        }
    }

    /// Moves the verdicts of finished checks into `v`; a check without one counts as a
    /// temporary failure where the verdict has one.
    pub(crate) fn collect(self, v: &mut Verdicts) {
        for s in self.sessions {
            if let AnyCheck::Spf(x) = s.check() {
                v.spf_args = Some(x.args().clone());
            }
            match (s.check(), s.verdict().cloned()) {
                (_, Some(AnyVerdict::Host(r))) => v.ehlo = Some(r),
                (AnyCheck::Host(_), _) => v.ehlo = Some(HostStatus::TempFail),
                (_, Some(AnyVerdict::MailDomain(r))) => v.mail_domain = Some(r),
                (AnyCheck::MailDomain(_), _) => v.mail_domain = Some(MailDomainStatus::TempFail),
                (_, Some(AnyVerdict::Spf(r))) => v.spf = Some(r),
                (_, Some(AnyVerdict::Iprev(r))) => v.iprev = Some(r),
                (AnyCheck::Iprev(_), _) => {
                    v.iprev = Some(IprevResult::TempError("no answer".into()))
                }
                (_, Some(AnyVerdict::Dnsbl(r))) => v.dnsbl = Some(r),
                (_, Some(AnyVerdict::Dkim(r))) => v.dkim = Some(r),
                (_, Some(AnyVerdict::Dmarc(r))) => v.dmarc = Some(r),
                _ => {}
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
pub(crate) fn dmarc_check(from_domain: &str, v: &Verdicts) -> AnyCheck {
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
    ))))
}

/// The results in one short line for logs: `iprev=pass dkim=pass spf=pass dmarc=pass`.
pub(crate) fn auth_summary(ip: IpAddr, v: &Verdicts) -> String {
    let parts = auth_parts(ip, v);
    if parts.is_empty() {
        return "none".to_string();
    }
    let words: Vec<&str> = parts
        .iter()
        .map(|p| p.split_whitespace().next().unwrap_or(p))
        .collect();
    words.join(" ")
}

/// The Authentication-Results header (RFC 8601) and Received-SPF, CRLF-terminated.
pub(crate) fn auth_headers(hostname: &str, ip: IpAddr, v: &Verdicts) -> String {
    let parts = auth_parts(ip, v);
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

/// The method results of Authentication-Results, one string each.
fn auth_parts(ip: IpAddr, v: &Verdicts) -> Vec<String> {
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
    parts
}
