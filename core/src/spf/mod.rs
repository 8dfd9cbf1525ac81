//! SPF (RFC 7208): is this IP address allowed to send mail for this domain?
//!
//! [`SpfCheck`] is a [`Check`]: it asks for DNS records and concludes with an [`SpfResult`].
//! Evaluation is a pure function of the answers received so far: each time the check is
//! polled without a pending question it evaluates the policy from the start against the
//! answers it has, and either concludes or asks for the records it is missing (several at
//! once where the RFC allows, e.g. the addresses of all MX hosts). This keeps `check_host()`
//! recursive and readable while the machine stays sans-IO.
//!
//! Limits (RFC 7208 section 4.6.4): 10 mechanisms or modifiers that cause DNS lookups
//! (`include`, `a`, `mx`, `ptr`, `exists`, `redirect`), 2 void lookups (NXDOMAIN or no
//! records), more than 10 MX names is a permerror, only the first 10 PTR names are used.
//! On top of that, a check never asks more than [`MAX_QUESTIONS`] distinct questions.

pub mod record;

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use record::{
    Directive, DomainSpec, MacroPart, MacroString, Mechanism, Qualifier, RecordError, SpfRecord,
};

use crate::dns::{reverse_name, Check, CheckStep, Lookup, LookupResult, Record, RecordType};
use crate::UnixTime;

/// DNS-querying mechanisms and modifiers allowed per evaluation.
pub const MAX_DNS_MECHANISMS: u32 = 10;
/// Void lookups (NXDOMAIN or empty answer) allowed per evaluation.
pub const MAX_VOID_LOOKUPS: u32 = 2;
/// MX names an `mx` mechanism may look up; more is a permerror.
pub const MAX_MX_NAMES: usize = 10;
/// PTR names a `ptr` mechanism or the `p` macro validates; the rest are ignored.
pub const MAX_PTR_NAMES: usize = 10;
/// Distinct DNS questions one check may ask in all (a safety net above the RFC limits).
pub const MAX_QUESTIONS: usize = 256;

/// The result of an SPF evaluation (RFC 7208 section 2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpfStatus {
    /// No SPF record, or no valid domain to check.
    None,
    /// The domain makes no assertion (`?`, or no directive matched).
    Neutral,
    /// The IP is authorised.
    Pass,
    /// The IP is not authorised.
    Fail,
    /// The IP is probably not authorised.
    Softfail,
    /// A transient DNS error; try again later.
    Temperror,
    /// The domain's records are broken.
    Permerror,
}

impl SpfStatus {
    /// The lower-case name used in headers (`pass`, `softfail`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            SpfStatus::None => "none",
            SpfStatus::Neutral => "neutral",
            SpfStatus::Pass => "pass",
            SpfStatus::Fail => "fail",
            SpfStatus::Softfail => "softfail",
            SpfStatus::Temperror => "temperror",
            SpfStatus::Permerror => "permerror",
        }
    }
}

impl fmt::Display for SpfStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which identity is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The MAIL FROM domain.
    MailFrom,
    /// The HELO/EHLO name (also used for MAIL FROM with a null reverse path).
    Helo,
}

/// The inputs of an evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpfArgs {
    /// The connecting client's address (IPv4-mapped IPv6 is treated as IPv4).
    pub ip: IpAddr,
    /// The sender's local part (`postmaster` when checking the HELO identity).
    pub local: String,
    /// The domain checked: the MAIL FROM domain or the HELO name.
    pub domain: String,
    /// The HELO/EHLO name given by the client.
    pub helo: String,
    /// This server's host name (the `%{r}` macro and the Received-SPF comment).
    pub receiver: String,
    /// Wall time (the `%{t}` macro).
    pub now: UnixTime,
    /// Which identity `local@domain` is.
    pub identity: Identity,
}

impl SpfArgs {
    /// Arguments for the MAIL FROM identity. `mail_from` is the reverse path without angle
    /// brackets; when it is empty the HELO identity is checked instead (RFC 7208 2.4).
    pub fn mail_from(
        ip: IpAddr,
        mail_from: &str,
        helo: &str,
        receiver: &str,
        now: UnixTime,
    ) -> SpfArgs {
        if mail_from.is_empty() {
            return SpfArgs::helo(ip, helo, receiver, now);
        }
        let (local, domain) = match mail_from.rsplit_once('@') {
            Some((l, d)) => (if l.is_empty() { "postmaster" } else { l }, d),
            None => ("postmaster", mail_from),
        };
        SpfArgs {
            ip,
            local: local.to_string(),
            domain: domain.to_string(),
            helo: helo.to_string(),
            receiver: receiver.to_string(),
            now,
            identity: Identity::MailFrom,
        }
    }

    /// Arguments for the HELO identity.
    pub fn helo(ip: IpAddr, helo: &str, receiver: &str, now: UnixTime) -> SpfArgs {
        SpfArgs {
            ip,
            local: "postmaster".to_string(),
            domain: helo.to_string(),
            helo: helo.to_string(),
            receiver: receiver.to_string(),
            now,
            identity: Identity::Helo,
        }
    }

    fn client_ip(&self) -> IpAddr {
        match self.ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        }
    }
}

/// The verdict of an SPF check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpfResult {
    /// The result.
    pub result: SpfStatus,
    /// The directive that matched (`-all`, `include:_spf.example.com`), if one did.
    pub mechanism: Option<String>,
    /// The domain's explanation (`exp=`) for a fail, expanded.
    pub explanation: Option<String>,
    /// DNS-querying mechanisms and modifiers evaluated.
    pub lookups: u32,
    /// Void lookups seen.
    pub void_lookups: u32,
    /// Why the result is temperror or permerror.
    pub problem: Option<String>,
}

/// Why evaluation stopped early.
enum Abort {
    /// Answers are missing; they were added to the missing list.
    Missing,
    /// temperror.
    Temp(String),
    /// permerror.
    Perm(String),
}

struct Outcome {
    status: SpfStatus,
    mechanism: Option<String>,
    explanation: Option<String>,
}

/// One evaluation pass over the answers received so far.
struct Eval<'a> {
    args: &'a SpfArgs,
    ip: IpAddr,
    answers: &'a HashMap<Lookup, LookupResult>,
    missing: Vec<Lookup>,
    lookups: u32,
    voids: u32,
}

/// A name we may ask about: labels of 1 to 63 bytes, at most 253 bytes, two labels or more.
fn valid_domain(name: &str) -> bool {
    let n = name.strip_suffix('.').unwrap_or(name);
    if n.is_empty() || n.len() > 253 || !n.contains('.') {
        return false;
    }
    n.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    })
}

/// A name we may put in a DNS question (printable ASCII and spaces in labels: macro results).
fn valid_query_name(name: &str) -> bool {
    let n = name.strip_suffix('.').unwrap_or(name);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|c| (0x20..0x7f).contains(&c)))
}

fn q(name: &str, rtype: RecordType) -> Lookup {
    Lookup {
        name: crate::dns::zone::normalize_name(name),
        rtype,
    }
}

fn nibbles(v6: Ipv6Addr) -> String {
    let mut parts = Vec::with_capacity(32);
    for b in v6.octets() {
        parts.push(format!("{:x}", b >> 4));
        parts.push(format!("{:x}", b & 0xf));
    }
    parts.join(".")
}

fn in_net4(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    if len == 0 {
        return true;
    }
    let mask = u32::MAX << (32 - u32::from(len.min(32)));
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_net6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    if len == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(len.min(128)));
    u128::from(ip) & mask == u128::from(net) & mask
}

fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Truncates a name from the left, label by label, to at most 253 bytes (RFC 7208 7.3).
fn truncate_domain(mut s: String) -> String {
    while s.strip_suffix('.').unwrap_or(&s).len() > 253 {
        match s.find('.') {
            Some(i) => s = s[i + 1..].to_string(),
            None => break,
        }
    }
    s
}

impl Eval<'_> {
    fn dns(&mut self, name: &str, rtype: RecordType) -> Result<LookupResult, Abort> {
        let l = q(name, rtype);
        match self.answers.get(&l) {
            Some(r) => Ok(r.clone()),
            None => {
                self.missing.push(l);
                Err(Abort::Missing)
            }
        }
    }

    /// Like `dns` but does not stop: several questions can be collected first.
    fn want(&mut self, name: &str, rtype: RecordType) -> Option<LookupResult> {
        let l = q(name, rtype);
        match self.answers.get(&l) {
            Some(r) => Some(r.clone()),
            None => {
                self.missing.push(l);
                None
            }
        }
    }

    fn void(&mut self) -> Result<(), Abort> {
        self.voids += 1;
        if self.voids > MAX_VOID_LOOKUPS {
            return Err(Abort::Perm("too many void lookups".into()));
        }
        Ok(())
    }

    fn addr_type(&self) -> RecordType {
        match self.ip {
            IpAddr::V4(_) => RecordType::A,
            IpAddr::V6(_) => RecordType::Aaaa,
        }
    }

    fn ip_matches(&self, records: &[Record], v4: Option<u8>, v6: Option<u8>) -> bool {
        records.iter().any(|r| match (r, self.ip) {
            (Record::A(a), IpAddr::V4(ip)) => in_net4(ip, *a, v4.unwrap_or(32)),
            (Record::Aaaa(a), IpAddr::V6(ip)) => in_net6(ip, *a, v6.unwrap_or(128)),
            _ => false,
        })
    }

    /// Names from PTR records of the client IP that resolve back to it (at most 10 tried).
    fn validated_names(&mut self) -> Result<Vec<String>, Abort> {
        let rev = reverse_name(self.ip);
        let names: Vec<String> = match self.dns(&rev, RecordType::Ptr)? {
            LookupResult::Records { records, .. } => records
                .into_iter()
                .filter_map(|r| match r {
                    Record::Ptr(n) => Some(n),
                    _ => None,
                })
                .take(MAX_PTR_NAMES)
                .collect(),
            _ => return Ok(Vec::new()),
        };
        let rtype = self.addr_type();
        let mut answers = Vec::new();
        for n in &names {
            if valid_query_name(n) {
                answers.push(self.want(n, rtype));
            } else {
                answers.push(Some(LookupResult::NxDomain));
            }
        }
        if answers.iter().any(Option::is_none) {
            return Err(Abort::Missing);
        }
        let mut out = Vec::new();
        for (n, a) in names.into_iter().zip(answers) {
            if let Some(LookupResult::Records { records, .. }) = a {
                if self.ip_matches(&records, None, None) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    fn macro_value(&mut self, letter: char, domain: &str) -> Result<String, Abort> {
        let a = self.args;
        Ok(match letter {
            's' => format!("{}@{}", a.local, a.domain),
            'l' => a.local.clone(),
            'o' => a.domain.clone(),
            'd' => domain.to_string(),
            'i' => match self.ip {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => nibbles(v6),
            },
            'p' => {
                let names = self.validated_names()?;
                let d = domain.to_ascii_lowercase();
                let sub = format!(".{d}");
                names
                    .iter()
                    .find(|n| **n == d)
                    .or_else(|| names.iter().find(|n| n.ends_with(&sub)))
                    .or_else(|| names.first())
                    .cloned()
                    .unwrap_or_else(|| "unknown".to_string())
            }
            'v' => match self.ip {
                IpAddr::V4(_) => "in-addr".to_string(),
                IpAddr::V6(_) => "ip6".to_string(),
            },
            'h' => a.helo.clone(),
            'c' => self.ip.to_string(),
            'r' => {
                if a.receiver.is_empty() {
                    "unknown".to_string()
                } else {
                    a.receiver.clone()
                }
            }
            't' => a.now.secs().to_string(),
            _ => return Err(Abort::Perm(format!("unknown macro letter {letter}"))),
        })
    }

    fn expand(&mut self, m: &MacroString, domain: &str) -> Result<String, Abort> {
        let mut out = String::new();
        for p in &m.0 {
            match p {
                MacroPart::Literal(s) => out.push_str(s),
                MacroPart::Expand {
                    letter,
                    escape,
                    digits,
                    reverse,
                    delimiters,
                } => {
                    let v = self.macro_value(*letter, domain)?;
                    let delims: &[char] = &if delimiters.is_empty() {
                        vec!['.']
                    } else {
                        delimiters.chars().collect::<Vec<_>>()
                    };
                    let mut parts: Vec<&str> = v.split(delims).collect();
                    if *reverse {
                        parts.reverse();
                    }
                    if let Some(n) = digits {
                        let n = usize::try_from(*n).unwrap_or(usize::MAX);
                        if n < parts.len() {
                            parts = parts.split_off(parts.len() - n);
                        }
                    }
                    let joined = parts.join(".");
                    if *escape {
                        out.push_str(&url_escape(&joined));
                    } else {
                        out.push_str(&joined);
                    }
                }
            }
        }
        Ok(out)
    }

    fn expand_domain(&mut self, d: &DomainSpec, domain: &str) -> Result<String, Abort> {
        let s = self.expand(&d.0, domain)?;
        Ok(truncate_domain(s))
    }

    fn target(&mut self, d: &Option<DomainSpec>, domain: &str) -> Result<String, Abort> {
        match d {
            Some(d) => self.expand_domain(d, domain),
            None => Ok(domain.to_string()),
        }
    }

    /// check_host() of RFC 7208 section 4.
    fn check_host(&mut self, domain: &str, depth: u32) -> Result<Outcome, Abort> {
        let none = Outcome {
            status: SpfStatus::None,
            mechanism: None,
            explanation: None,
        };
        if depth > MAX_DNS_MECHANISMS + 1 {
            return Err(Abort::Perm("too deeply nested".into()));
        }
        if !valid_query_name(domain) {
            return Ok(none);
        }
        let records = match self.dns(domain, RecordType::Txt)? {
            LookupResult::Records { records, .. } => records,
            LookupResult::NxDomain | LookupResult::NoData => return Ok(none),
            LookupResult::TempFail(e) => return Err(Abort::Temp(e)),
        };
        let spf: Vec<Vec<u8>> = records
            .into_iter()
            .filter_map(|r| match r {
                Record::Txt(parts) => Some(parts.concat()),
                _ => None,
            })
            .filter(|t| record::is_spf1(t))
            .collect();
        let text = match spf.as_slice() {
            [] => return Ok(none),
            [one] => one,
            _ => return Err(Abort::Perm(format!("{domain}: more than one SPF record"))),
        };
        let text = std::str::from_utf8(text)
            .map_err(|_| Abort::Perm(format!("{domain}: SPF record is not ASCII")))?;
        let rec = SpfRecord::parse(text).map_err(|e| Abort::Perm(format!("{domain}: {e}")))?;
        for d in &rec.directives {
            if d.mechanism.is_dns() {
                self.count_lookup()?;
            }
            if self.matches(&d.mechanism, domain, depth)? {
                let status = match d.qualifier {
                    Qualifier::Pass => SpfStatus::Pass,
                    Qualifier::Fail => SpfStatus::Fail,
                    Qualifier::SoftFail => SpfStatus::Softfail,
                    Qualifier::Neutral => SpfStatus::Neutral,
                };
                let explanation = if status == SpfStatus::Fail {
                    self.explain(&rec.exp, domain)?
                } else {
                    None
                };
                return Ok(Outcome {
                    status,
                    mechanism: Some(d.to_string()),
                    explanation,
                });
            }
        }
        if let Some(r) = &rec.redirect {
            self.count_lookup()?;
            let target = self.expand_domain(r, domain)?;
            let out = self.check_host(&target, depth + 1)?;
            if out.status == SpfStatus::None {
                return Err(Abort::Perm(format!(
                    "redirect to {target}, which has no SPF record"
                )));
            }
            return Ok(out);
        }
        Ok(Outcome {
            status: SpfStatus::Neutral,
            mechanism: None,
            explanation: None,
        })
    }

    fn count_lookup(&mut self) -> Result<(), Abort> {
        self.lookups += 1;
        if self.lookups > MAX_DNS_MECHANISMS {
            return Err(Abort::Perm("too many DNS lookups".into()));
        }
        Ok(())
    }

    fn address_records(&mut self, name: &str) -> Result<Vec<Record>, Abort> {
        if !valid_query_name(name) {
            self.void()?;
            return Ok(Vec::new());
        }
        let rtype = self.addr_type();
        match self.dns(name, rtype)? {
            LookupResult::Records { records, .. } => Ok(records),
            LookupResult::NxDomain | LookupResult::NoData => {
                self.void()?;
                Ok(Vec::new())
            }
            LookupResult::TempFail(e) => Err(Abort::Temp(e)),
        }
    }

    fn matches(&mut self, m: &Mechanism, domain: &str, depth: u32) -> Result<bool, Abort> {
        Ok(match m {
            Mechanism::All => true,
            Mechanism::Include(d) => {
                let target = self.expand_domain(d, domain)?;
                let out = self.check_host(&target, depth + 1)?;
                match out.status {
                    SpfStatus::Pass => true,
                    SpfStatus::None => {
                        return Err(Abort::Perm(format!(
                            "include of {target}, which has no SPF record"
                        )))
                    }
                    _ => false,
                }
            }
            Mechanism::A { domain: d, v4, v6 } => {
                let target = self.target(d, domain)?;
                let recs = self.address_records(&target)?;
                self.ip_matches(&recs, *v4, *v6)
            }
            Mechanism::Mx { domain: d, v4, v6 } => {
                let target = self.target(d, domain)?;
                if !valid_query_name(&target) {
                    self.void()?;
                    return Ok(false);
                }
                let hosts: Vec<String> = match self.dns(&target, RecordType::Mx)? {
                    LookupResult::Records { records, .. } => records
                        .into_iter()
                        .filter_map(|r| match r {
                            Record::Mx { host, .. } => Some(host),
                            _ => None,
                        })
                        .collect(),
                    LookupResult::NxDomain | LookupResult::NoData => {
                        self.void()?;
                        return Ok(false);
                    }
                    LookupResult::TempFail(e) => return Err(Abort::Temp(e)),
                };
                if hosts.len() > MAX_MX_NAMES {
                    return Err(Abort::Perm(format!("{target}: more than 10 MX names")));
                }
                let rtype = self.addr_type();
                let mut results = Vec::new();
                for h in hosts.iter().filter(|h| valid_query_name(h)) {
                    results.push(self.want(h, rtype));
                }
                if results.iter().any(Option::is_none) {
                    return Err(Abort::Missing);
                }
                let mut matched = false;
                for r in results.into_iter().flatten() {
                    match r {
                        LookupResult::Records { records, .. } => {
                            matched |= self.ip_matches(&records, *v4, *v6)
                        }
                        LookupResult::TempFail(e) if !matched => return Err(Abort::Temp(e)),
                        _ => {}
                    }
                }
                matched
            }
            Mechanism::Ptr(d) => {
                let target = self.target(d, domain)?.to_ascii_lowercase();
                let target = target.strip_suffix('.').unwrap_or(&target).to_string();
                let sub = format!(".{target}");
                self.validated_names()?
                    .iter()
                    .any(|n| *n == target || n.ends_with(&sub))
            }
            Mechanism::Ip4 { addr, len } => match self.ip {
                IpAddr::V4(ip) => in_net4(ip, *addr, len.unwrap_or(32)),
                IpAddr::V6(_) => false,
            },
            Mechanism::Ip6 { addr, len } => match self.ip {
                IpAddr::V6(ip) => in_net6(ip, *addr, len.unwrap_or(128)),
                IpAddr::V4(_) => false,
            },
            Mechanism::Exists(d) => {
                let target = self.expand_domain(d, domain)?;
                if !valid_query_name(&target) {
                    self.void()?;
                    return Ok(false);
                }
                match self.dns(&target, RecordType::A)? {
                    LookupResult::Records { records, .. } => !records.is_empty(),
                    LookupResult::NxDomain | LookupResult::NoData => {
                        self.void()?;
                        false
                    }
                    LookupResult::TempFail(e) => return Err(Abort::Temp(e)),
                }
            }
        })
    }

    /// The explanation for a fail (RFC 7208 6.2); any problem means no explanation.
    fn explain(&mut self, exp: &Option<DomainSpec>, domain: &str) -> Result<Option<String>, Abort> {
        let Some(exp) = exp else {
            return Ok(None);
        };
        let name = match self.expand_domain(exp, domain) {
            Ok(n) => n,
            Err(Abort::Missing) => return Err(Abort::Missing),
            Err(_) => return Ok(None),
        };
        if !valid_query_name(&name) {
            return Ok(None);
        }
        let text = match self.dns(&name, RecordType::Txt)? {
            LookupResult::Records { records, .. } => match records.as_slice() {
                [Record::Txt(parts)] => parts.concat(),
                _ => return Ok(None),
            },
            _ => return Ok(None),
        };
        let Ok(text) = String::from_utf8(text) else {
            return Ok(None);
        };
        let Ok(m) = MacroString::parse(&text, true) else {
            return Ok(None);
        };
        match self.expand(&m, domain) {
            Ok(s) => Ok(Some(s)),
            Err(Abort::Missing) => Err(Abort::Missing),
            Err(_) => Ok(None),
        }
    }
}

/// An SPF evaluation as a [`Check`].
#[derive(Debug, Clone)]
pub struct SpfCheck {
    args: SpfArgs,
    answers: HashMap<Lookup, LookupResult>,
    pending: HashSet<Lookup>,
    queue: VecDeque<Lookup>,
    done: Option<SpfResult>,
}

impl SpfCheck {
    /// A check of `args.ip` against the policy of `args.domain`.
    pub fn new(args: SpfArgs) -> SpfCheck {
        SpfCheck {
            args,
            answers: HashMap::new(),
            pending: HashSet::new(),
            queue: VecDeque::new(),
            done: None,
        }
    }

    /// The arguments checked.
    pub fn args(&self) -> &SpfArgs {
        &self.args
    }

    fn evaluate(&mut self) {
        let args = self.args.clone();
        let domain = args.domain.strip_suffix('.').unwrap_or(&args.domain);
        if !valid_domain(domain) {
            self.done = Some(SpfResult {
                result: SpfStatus::None,
                mechanism: None,
                explanation: None,
                lookups: 0,
                void_lookups: 0,
                problem: Some(format!("{domain:?} is not a valid domain name")),
            });
            return;
        }
        let mut ev = Eval {
            args: &args,
            ip: args.client_ip(),
            answers: &self.answers,
            missing: Vec::new(),
            lookups: 0,
            voids: 0,
        };
        let r = ev.check_host(domain, 0);
        let (lookups, voids) = (ev.lookups, ev.voids);
        let missing = std::mem::take(&mut ev.missing);
        let mk = |result, problem| SpfResult {
            result,
            mechanism: None,
            explanation: None,
            lookups,
            void_lookups: voids,
            problem,
        };
        match r {
            Ok(o) => {
                self.done = Some(SpfResult {
                    mechanism: o.mechanism,
                    explanation: o.explanation,
                    ..mk(o.status, None)
                })
            }
            Err(Abort::Temp(e)) => self.done = Some(mk(SpfStatus::Temperror, Some(e))),
            Err(Abort::Perm(e)) => self.done = Some(mk(SpfStatus::Permerror, Some(e))),
            Err(Abort::Missing) => {
                for l in missing {
                    if self.answers.len() + self.pending.len() >= MAX_QUESTIONS {
                        self.done = Some(mk(
                            SpfStatus::Permerror,
                            Some("too many DNS questions".into()),
                        ));
                        self.queue.clear();
                        return;
                    }
                    if !self.answers.contains_key(&l) && self.pending.insert(l.clone()) {
                        self.queue.push_back(l);
                    }
                }
            }
        }
    }
}

impl Check for SpfCheck {
    type Verdict = SpfResult;

    fn poll(&mut self) -> CheckStep<SpfResult> {
        if let Some(d) = &self.done {
            return CheckStep::Done(d.clone());
        }
        if let Some(l) = self.queue.pop_front() {
            return CheckStep::Lookup(l);
        }
        if !self.pending.is_empty() {
            return CheckStep::Wait;
        }
        self.evaluate();
        if let Some(d) = &self.done {
            return CheckStep::Done(d.clone());
        }
        match self.queue.pop_front() {
            Some(l) => CheckStep::Lookup(l),
            // Nothing missing and no verdict cannot happen; conclude rather than spin.
            None => {
                let r = SpfResult {
                    result: SpfStatus::Temperror,
                    mechanism: None,
                    explanation: None,
                    lookups: 0,
                    void_lookups: 0,
                    problem: Some("evaluation stalled".into()),
                };
                self.done = Some(r.clone());
                CheckStep::Done(r)
            }
        }
    }

    fn answer(&mut self, lookup: &Lookup, result: LookupResult) {
        if self.pending.remove(lookup) {
            self.answers.insert(lookup.clone(), result);
        }
    }
}

/// Characters allowed in a header comment: printable ASCII without parentheses or backslash.
fn comment_safe(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| !matches!(c, '(' | ')' | '\\'))
        .collect()
}

/// A header value as a dot-atom when it is one, else a quoted string.
fn header_value(s: &str) -> String {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = !s.is_empty()
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.chars().all(|c| atext(c) || c == '.');
    if dot_atom {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars().filter(|c| c.is_ascii_graphic() || *c == ' ') {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `Received-SPF:` header (RFC 7208 section 9.1) for a result, without the trailing CRLF.
pub fn received_spf_header(result: &SpfResult, args: &SpfArgs) -> String {
    let ip = args.client_ip();
    let sender = format!("{}@{}", args.local, args.domain);
    let what = match result.result {
        SpfStatus::Pass => format!("domain of {sender} designates {ip} as permitted sender"),
        SpfStatus::Fail => {
            format!("domain of {sender} does not designate {ip} as permitted sender")
        }
        SpfStatus::Softfail => {
            format!("transitioning domain of {sender} does not designate {ip} as permitted sender")
        }
        SpfStatus::Neutral => format!("{ip} is neither permitted nor denied by domain of {sender}"),
        SpfStatus::None => format!("domain of {sender} does not designate permitted sender hosts"),
        SpfStatus::Temperror => format!("error in processing during lookup of {sender}"),
        SpfStatus::Permerror => format!("permanent error in processing domain of {sender}"),
    };
    let mut h = format!(
        "Received-SPF: {} ({}: {}) client-ip={}; envelope-from={}; helo={}",
        result.result,
        comment_safe(&args.receiver),
        comment_safe(&what),
        ip,
        header_value(&sender),
        header_value(&args.helo),
    );
    if let Some(p) = &result.problem {
        h.push_str(&format!("; problem={}", header_value(p)));
    }
    if let Some(m) = &result.mechanism {
        h.push_str(&format!("; mechanism={}", header_value(m)));
    }
    h.push_str(&format!(
        "; receiver={}; identity={}",
        header_value(&args.receiver),
        match args.identity {
            Identity::MailFrom => "mailfrom",
            Identity::Helo => "helo",
        }
    ));
    h
}

#[cfg(test)]
mod suite;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{run_sync, StaticZone};
    use proptest::prelude::*;

    fn args(ip: &str, from: &str) -> SpfArgs {
        SpfArgs::mail_from(
            ip.parse().unwrap(),
            from,
            "mx.example.org",
            "receiver.example",
            UnixTime(1_700_000_000),
        )
    }

    fn expand(a: &SpfArgs, m: &str, explain: bool) -> Result<String, Abort> {
        let answers = HashMap::new();
        let mut ev = Eval {
            args: a,
            ip: a.client_ip(),
            answers: &answers,
            missing: Vec::new(),
            lookups: 0,
            voids: 0,
        };
        let m = MacroString::parse(m, explain).map_err(|e| Abort::Perm(e.to_string()))?;
        ev.expand(&m, &a.domain)
    }

    /// RFC 7208 section 7.4's examples.
    #[test]
    fn macro_examples() {
        let a = args("192.0.2.3", "strong-bad@email.example.com");
        let cases = [
            ("%{s}", "strong-bad@email.example.com"),
            ("%{o}", "email.example.com"),
            ("%{d}", "email.example.com"),
            ("%{d4}", "email.example.com"),
            ("%{d3}", "email.example.com"),
            ("%{d2}", "example.com"),
            ("%{d1}", "com"),
            ("%{dr}", "com.example.email"),
            ("%{d2r}", "example.email"),
            ("%{l}", "strong-bad"),
            ("%{l-}", "strong.bad"),
            ("%{lr}", "strong-bad"),
            ("%{lr-}", "bad.strong"),
            ("%{l1r-}", "strong"),
            (
                "%{ir}.%{v}._spf.%{d2}",
                "3.2.0.192.in-addr._spf.example.com",
            ),
            ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
            (
                "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}",
                "3.2.0.192.in-addr.strong.lp._spf.example.com",
            ),
            (
                "%{d2}.trusted-domains.example.net",
                "example.com.trusted-domains.example.net",
            ),
            ("%%%_%-", "% %20"),
            ("%{S}", "strong-bad%40email.example.com"),
            ("%{h}", "mx.example.org"),
            ("%{c} %{r} %{t}", "192.0.2.3 receiver.example 1700000000"),
        ];
        for (m, want) in cases {
            match expand(&a, m, true) {
                Ok(got) => assert_eq!(got, want, "{m}"),
                Err(_) => panic!("{m} failed"),
            }
        }
        let a6 = args("2001:db8::cb01", "strong-bad@email.example.com");
        match expand(&a6, "%{ir}.%{v}._spf.%{d2}", false) {
            Ok(got) => assert_eq!(
                got,
                "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"
            ),
            Err(_) => panic!("ipv6 expansion failed"),
        }
        // c, r, t only in explanations.
        assert!(expand(&a, "%{c}", false).is_err());
    }

    #[test]
    fn args_forms() {
        let a = args("192.0.2.3", "");
        assert_eq!(a.identity, Identity::Helo);
        assert_eq!(
            (a.local.as_str(), a.domain.as_str()),
            ("postmaster", "mx.example.org")
        );
        let a = args("192.0.2.3", "@example.net");
        assert_eq!(
            (a.local.as_str(), a.domain.as_str()),
            ("postmaster", "example.net")
        );
        let a = args("::ffff:192.0.2.3", "a@b.example");
        assert_eq!(a.client_ip(), "192.0.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    const ZONE: &str = r#"
$ORIGIN example.org.
@       TXT "v=spf1 mx ip4:198.51.100.0/24 include:_spf.example.net -all exp=why.%{d}"
        MX 10 mx1
        MX 20 mx2
mx1     A 192.0.2.1
mx2     A 192.0.2.2
why     TXT "%{i} is not one of %{d}'s designated mail servers."
soft    TXT "v=spf1 ~all"
_spf.example.net. TXT "v=spf1 ip6:2001:db8::/32"
loop    TXT "v=spf1 include:loop.example.org"
temp    TXT "v=spf1 a:broken.example.org -all"
;@tempfail broken
voids   TXT "v=spf1 a:n1.example.org a:n2.example.org a:n3.example.org -all"
"#;

    #[test]
    fn evaluation_table() {
        let zone = StaticZone::parse(ZONE).unwrap();
        let cases = [
            ("192.0.2.2", "a@example.org", SpfStatus::Pass, Some("mx")),
            (
                "198.51.100.7",
                "a@example.org",
                SpfStatus::Pass,
                Some("ip4:198.51.100.0/24"),
            ),
            (
                "2001:db8::5",
                "a@example.org",
                SpfStatus::Pass,
                Some("include:_spf.example.net"),
            ),
            (
                "203.0.113.1",
                "a@example.org",
                SpfStatus::Fail,
                Some("-all"),
            ),
            (
                "203.0.113.1",
                "a@soft.example.org",
                SpfStatus::Softfail,
                Some("~all"),
            ),
            (
                "203.0.113.1",
                "a@nothing.example.org",
                SpfStatus::None,
                None,
            ),
            (
                "203.0.113.1",
                "a@loop.example.org",
                SpfStatus::Permerror,
                None,
            ),
            (
                "203.0.113.1",
                "a@temp.example.org",
                SpfStatus::Temperror,
                None,
            ),
            (
                "203.0.113.1",
                "a@voids.example.org",
                SpfStatus::Permerror,
                None,
            ),
        ];
        for (ip, from, want, mech) in cases {
            let mut c = SpfCheck::new(args(ip, from));
            let r = run_sync(&mut c, |q| zone.lookup(q), 500).unwrap();
            assert_eq!(r.result, want, "{ip} {from}: {r:?}");
            assert_eq!(r.mechanism.as_deref(), mech, "{ip} {from}");
        }
        let mut c = SpfCheck::new(args("203.0.113.1", "a@example.org"));
        let r = run_sync(&mut c, |q| zone.lookup(q), 500).unwrap();
        assert_eq!(
            r.explanation.as_deref(),
            Some("203.0.113.1 is not one of example.org's designated mail servers.")
        );
        assert_eq!(r.lookups, 2);
    }

    /// The MX hosts' addresses are asked together, and answers may come in any order.
    #[test]
    fn batches_and_waits() {
        let zone = StaticZone::parse(ZONE).unwrap();
        let mut c = SpfCheck::new(args("192.0.2.2", "a@example.org"));
        let mut asked = Vec::new();
        let mut rounds = 0;
        let verdict = loop {
            let mut batch = Vec::new();
            loop {
                match c.poll() {
                    CheckStep::Lookup(l) => batch.push(l),
                    CheckStep::Wait => break,
                    CheckStep::Done(_) => {
                        assert!(batch.is_empty());
                        break;
                    }
                }
            }
            if batch.is_empty() {
                match c.poll() {
                    CheckStep::Done(v) => break v,
                    other => panic!("stalled: {other:?}"),
                }
            }
            rounds += 1;
            asked.push(batch.len());
            for l in batch.iter().rev() {
                c.answer(l, zone.lookup(l));
            }
        };
        assert_eq!(verdict.result, SpfStatus::Pass);
        assert_eq!(asked, vec![1, 1, 2], "TXT, MX, then both A lookups at once");
        assert_eq!(rounds, 3);
        // Answers to questions never asked are ignored; the verdict stays.
        c.answer(&q("x.example", RecordType::A), LookupResult::NxDomain);
        assert_eq!(c.poll(), CheckStep::Done(verdict));
    }

    #[test]
    fn header() {
        let a = args("192.0.2.2", "a@example.org");
        let r = SpfResult {
            result: SpfStatus::Pass,
            mechanism: Some("mx".into()),
            explanation: None,
            lookups: 1,
            void_lookups: 0,
            problem: None,
        };
        assert_eq!(
            received_spf_header(&r, &a),
            "Received-SPF: pass (receiver.example: domain of a@example.org designates \
             192.0.2.2 as permitted sender) client-ip=192.0.2.2; envelope-from=\"a@example.org\"; \
             helo=mx.example.org; mechanism=mx; receiver=receiver.example; identity=mailfrom"
        );
        let a = SpfArgs::helo(
            "192.0.2.2".parse().unwrap(),
            "bad helo (x)",
            "receiver.example",
            UnixTime(0),
        );
        let r = SpfResult {
            result: SpfStatus::Permerror,
            problem: Some("bad \"record\"".into()),
            mechanism: None,
            ..r
        };
        let h = received_spf_header(&r, &a);
        assert!(h.contains("helo=\"bad helo (x)\""), "{h}");
        assert!(h.contains("problem=\"bad \\\"record\\\"\""), "{h}");
        assert!(
            h.contains(
                "(receiver.example: permanent error in processing domain of postmaster@bad helo x)"
            ),
            "{h}"
        );
        assert!(h.ends_with("identity=helo"), "{h}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn expander_never_panics(m in "([ -~]|%\\{[a-zA-Z][0-9]{0,12}r?[.+,/_=-]{0,3}\\}){0,12}", local in "[ -~]{0,20}") {
            let a = args("2001:db8::1", &format!("{local}@example.org"));
            let _ = expand(&a, &m, true);
            let _ = expand(&a, &m, false);
        }

        #[test]
        fn check_never_panics(rec in "v=spf1( [-+~?]?(a|mx|ptr|all|exists:%\\{[slodiphv]\\}\\.x\\.org|include:[a-c]\\.x\\.org|ip4:1\\.2\\.3\\.4/[0-9]{1,2}|redirect=[a-c]\\.x\\.org)){0,6}") {
            let mut zone = StaticZone::new();
            for n in ["x.org", "a.x.org", "b.x.org", "c.x.org"] {
                zone.add(n, Record::Txt(vec![rec.clone().into_bytes()]));
            }
            let mut c = SpfCheck::new(args("1.2.3.4", "u@x.org"));
            prop_assert!(run_sync(&mut c, |q| zone.lookup(q), 2000).is_some());
        }
    }
}
