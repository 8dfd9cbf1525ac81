//! DMARC policy discovery and evaluation as a [`Check`] (RFC 9989).
//!
//! Policy discovery and Organizational Domains come from the DNS tree walk (RFC 9989
//! 4.10): `_dmarc.<domain>`, then, with no record there, its parent names one label at a
//! time up to the top-level domain; a domain of eight or more labels is shortened to its
//! last seven after the first query, so one walk asks at most [`MAX_WALK_QUERIES`]
//! questions. A walk stops at a record with `psd=y` or `psd=n`. The public suffix list is
//! not used: RFC 9989 replaced it by the walk.
//!
//! One evaluation asks, one question at a time and each name once: the walk for the
//! policy (which stops at the author domain when it has a record); for relaxed alignment of
//! an SPF or DKIM identifier that is not the author domain itself, the walks that give the
//! Organizational Domains of the author domain and of the identifier (only when the
//! identifier is at or below the author's Organizational Domain, as only then can they
//! match); and, when a failing message falls under an `np=` that differs from `sp=`/`p=`,
//! an A query for the author domain (NXDOMAIN means it does not exist, RFC 9989 4.2 and
//! 11.3). More than [`MAX_LOOKUPS`] questions end the evaluation with a permerror
//! ([`DmarcError::TooManyLookups`]).

use std::collections::HashMap;
use std::fmt;

use super::record::{Align, DmarcRecord, Policy, Psd, RecordError};
use crate::dkim::{DkimResult, Status as DkimStatus};
use crate::dns::{Check, CheckStep, Lookup, LookupResult, Record, RecordType};

/// Most questions one DNS tree walk asks (RFC 9989 4.10).
pub const MAX_WALK_QUERIES: usize = 8;

/// Most DNS questions one evaluation asks: policy discovery, the walks for relaxed
/// alignment and the existence check for `np=` together (four full walks).
pub const MAX_LOOKUPS: usize = 4 * MAX_WALK_QUERIES;

fn normalize(d: &str) -> String {
    d.trim_end_matches('.').to_ascii_lowercase()
}

/// What DMARC evaluation needs about a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcInput {
    /// The RFC5322.From domain (the Author Domain), lower-case A-labels.
    pub from_domain: String,
    /// The domain SPF passed for (MAIL FROM domain, or HELO for the null sender), if SPF
    /// passed.
    pub spf_pass_domain: Option<String>,
    /// The `d=` of every DKIM signature that passed.
    pub dkim_pass_domains: Vec<String>,
}

impl DmarcInput {
    /// Input from the SPF outcome and the DKIM results; domains are lower-cased and lose a
    /// trailing dot.
    pub fn new(
        from_domain: &str,
        spf_pass_domain: Option<&str>,
        dkim: &[DkimResult],
    ) -> DmarcInput {
        DmarcInput {
            from_domain: normalize(from_domain),
            spf_pass_domain: spf_pass_domain.map(normalize),
            dkim_pass_domains: dkim
                .iter()
                .filter(|r| r.status == DkimStatus::Pass)
                .map(|r| normalize(&r.domain))
                .collect(),
        }
    }
}

/// The DMARC outcome (RFC 8601 values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DmarcStatus {
    /// An aligned SPF or DKIM pass.
    Pass,
    /// A policy exists and nothing aligned passed.
    Fail,
    /// No policy published.
    None,
    /// The policy could not be looked up now.
    Temperror,
    /// The published policy is broken.
    Permerror,
}

impl DmarcStatus {
    /// The Authentication-Results name.
    pub fn as_str(self) -> &'static str {
        match self {
            DmarcStatus::Pass => "pass",
            DmarcStatus::Fail => "fail",
            DmarcStatus::None => "none",
            DmarcStatus::Temperror => "temperror",
            DmarcStatus::Permerror => "permerror",
        }
    }
}

impl fmt::Display for DmarcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why evaluation did not come to pass or fail.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DmarcError {
    /// The record that applies has an invalid policy (and no `rua=`): no DMARC processing.
    #[error("bad DMARC record: {0}")]
    Record(RecordError),
    /// More than one DMARC record at a name (they are all discarded, RFC 9989 4.10) and no
    /// other record applies.
    #[error("multiple DMARC records")]
    MultipleRecords,
    /// A lookup failed temporarily.
    #[error("DMARC lookup failed: {0}")]
    Dns(String),
    /// No From domain to evaluate.
    #[error("no From domain")]
    NoFromDomain,
    /// The evaluation needed more than [`MAX_LOOKUPS`] DNS questions.
    #[error("more than {MAX_LOOKUPS} DNS lookups")]
    TooManyLookups,
}

/// The verdict of [`DmarcVerify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcResult {
    /// pass, fail, none, temperror or permerror.
    pub status: DmarcStatus,
    /// What to do with the message, after `t=y`: always `None` unless `Fail`.
    pub disposition: Policy,
    /// The policy the record asks for this message (`p`, or `sp`/`np` for a subdomain),
    /// before `t=y`; `None` without a record. For a pass, `np=` is not looked into.
    pub requested: Policy,
    /// Where the record was found (the From domain, its Organizational Domain or its
    /// Public Suffix Domain); empty if none.
    pub policy_domain: String,
    /// The record used.
    pub record: Option<DmarcRecord>,
    /// A DKIM pass aligned with From.
    pub dkim_aligned: bool,
    /// The SPF pass aligned with From.
    pub spf_aligned: bool,
    /// `t=y` (test mode) made the disposition one level milder than requested.
    pub testing: bool,
    /// Why the status is temperror, permerror or none, if known.
    pub error: Option<DmarcError>,
}

impl DmarcResult {
    /// Whether the message should be rejected (before local overrides).
    pub fn is_reject(&self) -> bool {
        self.disposition == Policy::Reject
    }

    /// The Authentication-Results fragment: `dmarc=pass header.from=example.org`.
    pub fn auth_results(&self, from_domain: &str) -> String {
        let mut s = format!("dmarc={}", self.status);
        if let Some(e) = &self.error {
            let reason: String = e
                .to_string()
                .chars()
                .filter(|c| !matches!(c, '(' | ')' | '\\') && !c.is_control())
                .collect();
            s.push_str(&format!(" ({reason})"));
        }
        s.push_str(&format!(" header.from={from_domain}"));
        s
    }

    fn bare(status: DmarcStatus, error: Option<DmarcError>) -> DmarcResult {
        DmarcResult {
            status,
            disposition: Policy::None,
            requested: Policy::None,
            policy_domain: String::new(),
            record: None,
            dkim_aligned: false,
            spf_aligned: false,
            testing: false,
            error,
        }
    }
}

/// The names a DNS tree walk from `start` queries (below `_dmarc.`), in order (RFC 9989
/// 4.10): `start`, then, if it has eight labels or more, its last seven labels, else its
/// parent; then each parent up to the top-level domain. At most [`MAX_WALK_QUERIES`].
pub fn tree_walk_names(start: &str) -> Vec<String> {
    let labels: Vec<&str> = start.split('.').collect();
    let x = labels.len();
    let mut out = vec![start.to_string()];
    let next = if x >= MAX_WALK_QUERIES {
        MAX_WALK_QUERIES - 1
    } else {
        x - 1
    };
    for keep in (1..=next).rev() {
        out.push(labels[x - keep..].join("."));
    }
    out
}

/// What one `_dmarc.` name holds.
#[derive(Clone, Debug)]
enum Found {
    /// No DMARC record: NXDOMAIN, NODATA, only other TXT records, or several DMARC
    /// records (`multiple`), which are all discarded.
    Nothing { multiple: bool },
    /// One DMARC record, with the error of an invalid policy tag if it has one.
    Record(DmarcRecord, Option<RecordError>),
    /// The lookup failed temporarily.
    TempFail(String),
}

impl Found {
    fn from_answer(result: LookupResult) -> Found {
        let records = match result {
            LookupResult::Records { records, .. } => records,
            LookupResult::NxDomain | LookupResult::NoData => {
                return Found::Nothing { multiple: false }
            }
            LookupResult::TempFail(e) => return Found::TempFail(e),
        };
        let txts: Vec<String> = records
            .into_iter()
            .filter_map(|r| match r {
                Record::Txt(s) => Some(String::from_utf8_lossy(&s.concat()).into_owned()),
                _ => None,
            })
            .filter(|t| DmarcRecord::is_dmarc(t))
            .collect();
        match txts.as_slice() {
            [] => Found::Nothing { multiple: false },
            [one] => match DmarcRecord::parse_inner(one) {
                Ok((r, e)) => Found::Record(r, e),
                // A tag list that is broken as a whole (a tag given twice): the record
                // exists but no policy can be read from it.
                Err(e) => Found::Record(DmarcRecord::default(), Some(e)),
            },
            _ => Found::Nothing { multiple: true },
        }
    }
}

/// The records one tree walk found, in walk order.
struct Walk<'a> {
    start: &'a str,
    found: Vec<(String, &'a DmarcRecord, &'a Option<RecordError>)>,
}

fn label_count(d: &str) -> usize {
    d.split('.').count()
}

impl Walk<'_> {
    /// The Organizational Domain of the start (RFC 9989 4.10.2): the name of a `psd=n`
    /// record; the name one label below a `psd=y` record that is not the start's own; else
    /// the record with the fewest labels; the start itself when nothing was found.
    fn org_domain(&self) -> String {
        let Some((last, rec, _)) = self.found.last() else {
            return self.start.to_string();
        };
        match rec.psd {
            Psd::No => last.clone(),
            Psd::Yes if *last != self.start => {
                let labels: Vec<&str> = self.start.split('.').collect();
                let keep = (label_count(last) + 1).min(labels.len());
                labels[labels.len() - keep..].join(".")
            }
            _ => self
                .found
                .iter()
                .min_by_key(|(n, _, _)| label_count(n))
                .map_or_else(|| self.start.to_string(), |(n, _, _)| n.to_string()),
        }
    }
}

/// The next question evaluation needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Question {
    /// TXT at `_dmarc.<domain>`.
    Txt(String),
    /// Whether the author domain exists (an A query; only NXDOMAIN says no).
    Exists,
}

impl Question {
    fn lookup(&self, from_domain: &str) -> Lookup {
        match self {
            Question::Txt(d) => Lookup {
                name: format!("_dmarc.{d}"),
                rtype: RecordType::Txt,
            },
            Question::Exists => Lookup {
                name: from_domain.to_string(),
                rtype: RecordType::A,
            },
        }
    }
}

/// Why evaluation stopped short of a verdict.
enum Halt {
    /// It needs this answer first.
    Ask(Question),
    /// A lookup it needs failed temporarily: the verdict is temperror.
    TempFail(String),
}

type Eval<T> = Result<T, Halt>;

/// The policy that applies: where it was found, the record, its error, whether it is the
/// author domain's own.
type Discovered<'a> = (String, &'a DmarcRecord, &'a Option<RecordError>, bool);

/// DMARC evaluation (RFC 9989): policy discovery by the DNS tree walk, identifier
/// alignment with Organizational Domains from tree walks, the policy (`p`, `sp`, `np`) and
/// test mode (`t`). See the module documentation for the questions it asks.
pub struct DmarcVerify {
    input: DmarcInput,
    /// Answers for `_dmarc.<domain>`, by domain.
    txt: HashMap<String, Found>,
    /// Whether the author domain exists, once asked: `Err` for a temporary failure.
    exists: Option<Result<bool, String>>,
    /// The question asked and not yet answered.
    pending: Option<(Question, Lookup)>,
    /// Questions asked so far.
    asked: usize,
    done: Option<DmarcResult>,
}

impl DmarcVerify {
    /// Starts evaluation.
    pub fn new(input: DmarcInput) -> DmarcVerify {
        let done = input
            .from_domain
            .is_empty()
            .then(|| DmarcResult::bare(DmarcStatus::None, Some(DmarcError::NoFromDomain)));
        DmarcVerify {
            input,
            txt: HashMap::new(),
            exists: None,
            pending: None,
            asked: 0,
            done,
        }
    }

    /// The DNS questions asked so far.
    pub fn lookups(&self) -> usize {
        self.asked
    }

    fn found(&self, domain: &str) -> Eval<&Found> {
        match self.txt.get(domain) {
            None => Err(Halt::Ask(Question::Txt(domain.to_string()))),
            Some(Found::TempFail(e)) => Err(Halt::TempFail(e.clone())),
            Some(f) => Ok(f),
        }
    }

    /// The tree walk from `start`, as far as the answers go.
    fn walk<'a>(&'a self, start: &'a str) -> Eval<Walk<'a>> {
        let mut found = Vec::new();
        for name in tree_walk_names(start) {
            if let Found::Record(rec, err) = self.found(&name)? {
                found.push((name, rec, err));
                if rec.psd.stops_walk() {
                    break;
                }
            }
        }
        Ok(Walk { start, found })
    }

    fn org_domain(&self, domain: &str) -> Eval<String> {
        Ok(self.walk(domain)?.org_domain())
    }

    /// Policy discovery (RFC 9989 4.10.1): the author domain's record; else the record of
    /// its Organizational Domain; else that of its Public Suffix Domain (`psd=y`).
    fn discover(&self) -> Eval<Option<Discovered<'_>>> {
        let a = self.input.from_domain.as_str();
        if let Found::Record(rec, err) = self.found(a)? {
            return Ok(Some((a.to_string(), rec, err, true)));
        }
        let walk = self.walk(a)?;
        let org = walk.org_domain();
        let at_org = walk.found.iter().find(|(n, _, _)| *n == org);
        let at_psd = walk.found.last().filter(|(_, r, _)| r.psd == Psd::Yes);
        Ok(at_org
            .or(at_psd)
            .map(|(n, r, e)| (n.clone(), *r, *e, false)))
    }

    /// Whether `id` is aligned with the author domain (RFC 9989 4.10.2): the same domain,
    /// or in relaxed mode the same Organizational Domain.
    fn is_aligned(&self, mode: Align, id: &str) -> Eval<bool> {
        let a = self.input.from_domain.as_str();
        if id == a {
            return Ok(true);
        }
        if mode == Align::Strict || id.is_empty() {
            return Ok(false);
        }
        let org = self.org_domain(a)?;
        // An Organizational Domain is the domain itself or a parent of it: only an
        // identifier at or below the author's can have the same one.
        if id != org && !id.ends_with(&format!(".{org}")) {
            return Ok(false);
        }
        Ok(self.org_domain(id)? == org)
    }

    fn author_exists(&self) -> Eval<bool> {
        match &self.exists {
            None => Err(Halt::Ask(Question::Exists)),
            Some(Ok(b)) => Ok(*b),
            Some(Err(e)) => Err(Halt::TempFail(e.clone())),
        }
    }

    /// The verdict from the answers so far, or the next question.
    fn evaluate(&self) -> Eval<DmarcResult> {
        let Some((domain, record, error, at_author)) = self.discover()? else {
            let multiple = self
                .txt
                .values()
                .any(|f| matches!(f, Found::Nothing { multiple: true }));
            return Ok(DmarcResult::bare(
                DmarcStatus::None,
                multiple.then_some(DmarcError::MultipleRecords),
            ));
        };
        if let Some(e) = error {
            let mut r =
                DmarcResult::bare(DmarcStatus::Permerror, Some(DmarcError::Record(e.clone())));
            r.policy_domain = domain;
            return Ok(r);
        }
        // A walk that failed temporarily leaves its identifier unaligned; it matters only
        // when no other identifier is aligned.
        let mut temp: Option<String> = None;
        let mut aligned = |mode: Align, id: &str| -> Eval<bool> {
            match self.is_aligned(mode, id) {
                Err(Halt::TempFail(e)) => {
                    temp.get_or_insert(e);
                    Ok(false)
                }
                r => r,
            }
        };
        let spf_aligned = match &self.input.spf_pass_domain {
            Some(d) => aligned(record.aspf, d)?,
            None => false,
        };
        let mut dkim_aligned = false;
        for d in &self.input.dkim_pass_domains {
            if aligned(record.adkim, d)? {
                dkim_aligned = true;
                break;
            }
        }
        let pass = spf_aligned || dkim_aligned;
        if let (false, Some(e)) = (pass, temp) {
            return Err(Halt::TempFail(e));
        }
        let requested = if at_author {
            record.policy
        } else {
            let sp = record.subdomain_policy.unwrap_or(record.policy);
            match record.nonexistent_policy {
                Some(np) if np != sp && !pass => {
                    if self.author_exists()? {
                        sp
                    } else {
                        np
                    }
                }
                _ => sp,
            }
        };
        let (status, disposition, testing) = if pass {
            (DmarcStatus::Pass, Policy::None, false)
        } else if record.testing && requested != Policy::None {
            (DmarcStatus::Fail, requested.milder(), true)
        } else {
            (DmarcStatus::Fail, requested, false)
        };
        Ok(DmarcResult {
            status,
            disposition,
            requested,
            policy_domain: domain,
            record: Some(record.clone()),
            dkim_aligned,
            spf_aligned,
            testing,
            error: None,
        })
    }
}

impl Check for DmarcVerify {
    type Verdict = DmarcResult;

    fn poll(&mut self) -> CheckStep<DmarcResult> {
        if let Some(r) = &self.done {
            return CheckStep::Done(r.clone());
        }
        if self.pending.is_some() {
            return CheckStep::Wait;
        }
        let r = match self.evaluate() {
            Ok(r) => r,
            Err(Halt::TempFail(e)) => {
                DmarcResult::bare(DmarcStatus::Temperror, Some(DmarcError::Dns(e)))
            }
            Err(Halt::Ask(q)) if self.asked < MAX_LOOKUPS => {
                self.asked += 1;
                let l = q.lookup(&self.input.from_domain);
                self.pending = Some((q, l.clone()));
                return CheckStep::Lookup(l);
            }
            Err(Halt::Ask(_)) => {
                DmarcResult::bare(DmarcStatus::Permerror, Some(DmarcError::TooManyLookups))
            }
        };
        self.done = Some(r.clone());
        CheckStep::Done(r)
    }

    fn answer(&mut self, lookup: &Lookup, result: LookupResult) {
        let Some((q, l)) = self.pending.take() else {
            return;
        };
        if l != *lookup {
            self.pending = Some((q, l));
            return;
        }
        match q {
            Question::Txt(d) => {
                self.txt.insert(d, Found::from_answer(result));
            }
            Question::Exists => {
                self.exists = Some(match result {
                    LookupResult::NxDomain => Ok(false),
                    LookupResult::TempFail(e) => Err(e),
                    LookupResult::Records { .. } | LookupResult::NoData => Ok(true),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::run_sync;

    /// Runs an evaluation against a zone (name → answer; a missing name is NXDOMAIN) and
    /// returns the verdict and the transcript of questions, `TXT name` or `A name`.
    fn run(input: DmarcInput, z: &[(&str, LookupResult)]) -> (DmarcResult, Vec<String>) {
        let z: HashMap<&str, LookupResult> = z.iter().cloned().collect();
        let mut asked = Vec::new();
        let mut v = DmarcVerify::new(input);
        let r = run_sync(
            &mut v,
            |q| {
                let t = if q.rtype == RecordType::Txt {
                    "TXT"
                } else {
                    "A"
                };
                asked.push(format!("{t} {}", q.name));
                z.get(q.name.as_str())
                    .cloned()
                    .unwrap_or(LookupResult::NxDomain)
            },
            100,
        )
        .unwrap();
        assert_eq!(v.lookups(), asked.len());
        (r, asked)
    }

    fn txt(s: &str) -> LookupResult {
        LookupResult::Records {
            records: vec![Record::Txt(vec![s.as_bytes().to_vec()])],
            authentic: false,
        }
    }

    fn a_record() -> LookupResult {
        LookupResult::Records {
            records: vec![Record::A(std::net::Ipv4Addr::new(192, 0, 2, 1))],
            authentic: false,
        }
    }

    fn input(from: &str, spf: Option<&str>, dkim: &[&str]) -> DmarcInput {
        DmarcInput {
            from_domain: from.into(),
            spf_pass_domain: spf.map(Into::into),
            dkim_pass_domains: dkim.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `TXT _dmarc.<d>` for each domain.
    fn q(domains: &[&str]) -> Vec<String> {
        domains.iter().map(|d| format!("TXT _dmarc.{d}")).collect()
    }

    /// The Organizational Domain of `domain` by the tree walk over zone `z`.
    fn org_of(z: &[(&str, LookupResult)], domain: &str) -> String {
        let z: HashMap<&str, LookupResult> = z.iter().cloned().collect();
        let mut v = DmarcVerify::new(input("unused.example", None, &[]));
        for _ in 0..MAX_WALK_QUERIES + 1 {
            match v.org_domain(domain) {
                Ok(o) => return o,
                Err(Halt::Ask(Question::Txt(d))) => {
                    let a = z
                        .get(format!("_dmarc.{d}").as_str())
                        .cloned()
                        .unwrap_or(LookupResult::NxDomain);
                    v.txt.insert(d, Found::from_answer(a));
                }
                Err(_) => panic!("unexpected halt"),
            }
        }
        panic!("walk longer than {MAX_WALK_QUERIES}");
    }

    /// RFC 9989 4.10: the names a walk queries; eight or more labels are shortened to seven
    /// after the first query, so never more than eight queries.
    #[test]
    fn tree_walk_names_table() {
        let table: &[(&str, &[&str])] = &[
            ("com", &["com"]),
            ("example.com", &["example.com", "com"]),
            (
                "a.mail.example.com",
                &[
                    "a.mail.example.com",
                    "mail.example.com",
                    "example.com",
                    "com",
                ],
            ),
            // The RFC's example.
            (
                "a.b.c.d.e.f.g.h.i.j.mail.example.com",
                &[
                    "a.b.c.d.e.f.g.h.i.j.mail.example.com",
                    "g.h.i.j.mail.example.com",
                    "h.i.j.mail.example.com",
                    "i.j.mail.example.com",
                    "j.mail.example.com",
                    "mail.example.com",
                    "example.com",
                    "com",
                ],
            ),
            // Seven labels: one label at a time.
            (
                "a.b.c.d.e.f.g",
                &[
                    "a.b.c.d.e.f.g",
                    "b.c.d.e.f.g",
                    "c.d.e.f.g",
                    "d.e.f.g",
                    "e.f.g",
                    "f.g",
                    "g",
                ],
            ),
            // Eight labels: the shortening gives the parent.
            (
                "a.b.c.d.e.f.g.h",
                &[
                    "a.b.c.d.e.f.g.h",
                    "b.c.d.e.f.g.h",
                    "c.d.e.f.g.h",
                    "d.e.f.g.h",
                    "e.f.g.h",
                    "f.g.h",
                    "g.h",
                    "h",
                ],
            ),
        ];
        for (start, want) in table {
            assert_eq!(tree_walk_names(start), *want, "{start}");
        }
        for n in 1..40 {
            let d = vec!["x"; n].join(".");
            assert!(tree_walk_names(&d).len() <= MAX_WALK_QUERIES, "{n} labels");
        }
    }

    /// The Organizational Domain selection of RFC 9989 4.10.2, with the RFC's examples.
    #[test]
    fn org_domain_table() {
        let r = || txt("v=DMARC1; p=none");
        type Zone = Vec<(&'static str, LookupResult)>;
        let table: Vec<(Zone, &str, &str)> = vec![
            // Records at mail.example.com and example.com: the one with fewest labels.
            (
                vec![
                    ("_dmarc.mail.example.com", r()),
                    ("_dmarc.example.com", r()),
                ],
                "a.mail.example.com",
                "example.com",
            ),
            // psd=n: that domain, and the walk stops there.
            (
                vec![
                    ("_dmarc.mail.example.com", txt("v=DMARC1; p=none; psd=n")),
                    ("_dmarc.example.com", r()),
                ],
                "a.mail.example.com",
                "mail.example.com",
            ),
            // Only a psd=y record at the TLD: the name one label below it.
            (
                vec![("_dmarc.com", txt("v=DMARC1; p=none; psd=y"))],
                "a.mail.example.com",
                "example.com",
            ),
            // The RFC's PSD example.
            (
                vec![
                    ("_dmarc.giant.bank.example", r()),
                    ("_dmarc.bank.example", txt("v=DMARC1; p=reject; psd=y")),
                ],
                "mail.giant.bank.example",
                "giant.bank.example",
            ),
            (
                vec![
                    ("_dmarc.giant.bank.example", r()),
                    ("_dmarc.bank.example", txt("v=DMARC1; p=reject; psd=y")),
                ],
                "mail.mega.bank.example",
                "mega.bank.example",
            ),
            // psd=y at the start itself: it is its own Organizational Domain.
            (
                vec![("_dmarc.bank.example", txt("v=DMARC1; p=reject; psd=y"))],
                "bank.example",
                "bank.example",
            ),
            // No record anywhere: the start.
            (vec![], "a.b.example.com", "a.b.example.com"),
            // A record at the start only.
            (
                vec![("_dmarc.a.b.example.com", r())],
                "a.b.example.com",
                "a.b.example.com",
            ),
            // Several records at one name are discarded; the walk goes on.
            (
                vec![
                    (
                        "_dmarc.example.com",
                        LookupResult::Records {
                            records: vec![
                                Record::Txt(vec![b"v=DMARC1; p=none".to_vec()]),
                                Record::Txt(vec![b"v=DMARC1; p=reject".to_vec()]),
                            ],
                            authentic: false,
                        },
                    ),
                    ("_dmarc.b.example.com", r()),
                ],
                "a.b.example.com",
                "b.example.com",
            ),
            // A record whose v= is not exactly DMARC1 is no record.
            (
                vec![
                    ("_dmarc.example.com", txt("v=dmarc1; p=none")),
                    ("_dmarc.b.example.com", r()),
                ],
                "a.b.example.com",
                "b.example.com",
            ),
        ];
        for (zone, start, want) in table {
            assert_eq!(org_of(&zone, start), want, "{start} in {zone:?}");
        }
    }

    struct Case {
        name: &'static str,
        input: DmarcInput,
        zone: Vec<(&'static str, LookupResult)>,
        status: DmarcStatus,
        disposition: Policy,
        asked: Vec<String>,
    }

    fn check(cases: Vec<Case>) {
        for c in cases {
            let (r, asked) = run(c.input, &c.zone);
            assert_eq!(
                (r.status, r.disposition),
                (c.status, c.disposition),
                "{}: {r:?}",
                c.name
            );
            assert_eq!(asked, c.asked, "{}", c.name);
        }
    }

    /// Transcripts: the questions asked, in order, and the verdict.
    #[test]
    fn evaluation_table() {
        let reject = txt("v=DMARC1; p=reject; sp=quarantine; pct=50");
        let strict = txt("v=DMARC1; p=reject; adkim=s; aspf=s");
        let cases = vec![
            Case {
                name: "DKIM aligned (relaxed): the author's walk goes on to the TLD, then the identifier's",
                input: input("example.org", None, &["mail.example.org"]),
                zone: vec![("_dmarc.example.org", reject.clone())],
                status: DmarcStatus::Pass,
                disposition: Policy::None,
                asked: q(&["example.org", "org", "mail.example.org"]),
            },
            Case {
                name: "SPF aligned",
                input: input("example.org", Some("bounce.example.org"), &[]),
                zone: vec![("_dmarc.example.org", reject.clone())],
                status: DmarcStatus::Pass,
                disposition: Policy::None,
                asked: q(&["example.org", "org", "bounce.example.org"]),
            },
            Case {
                name: "identifiers equal to the author domain need no walk",
                input: input("example.org", Some("example.org"), &["example.org"]),
                zone: vec![("_dmarc.example.org", reject.clone())],
                status: DmarcStatus::Pass,
                disposition: Policy::None,
                asked: q(&["example.org"]),
            },
            Case {
                name: "unrelated identifiers are not walked; pct is ignored",
                input: input("example.org", Some("other.example"), &["other.example"]),
                zone: vec![("_dmarc.example.org", reject.clone())],
                status: DmarcStatus::Fail,
                disposition: Policy::Reject,
                asked: q(&["example.org", "org"]),
            },
            Case {
                name: "subdomain without a record: the walk finds the organizational record, sp applies",
                input: input("a.b.example.org", None, &[]),
                zone: vec![("_dmarc.example.org", reject.clone())],
                status: DmarcStatus::Fail,
                disposition: Policy::Quarantine,
                asked: q(&["a.b.example.org", "b.example.org", "example.org", "org"]),
            },
            Case {
                name: "strict alignment: no walk, subdomains do not align",
                input: input("example.org", Some("mail.example.org"), &["mail.example.org"]),
                zone: vec![("_dmarc.example.org", strict.clone())],
                status: DmarcStatus::Fail,
                disposition: Policy::Reject,
                asked: q(&["example.org"]),
            },
            Case {
                name: "strict alignment, same domain",
                input: input("example.org", None, &["example.org"]),
                zone: vec![("_dmarc.example.org", strict.clone())],
                status: DmarcStatus::Pass,
                disposition: Policy::None,
                asked: q(&["example.org"]),
            },
            Case {
                name: "no record anywhere",
                input: input("a.example.org", None, &[]),
                zone: vec![],
                status: DmarcStatus::None,
                disposition: Policy::None,
                asked: q(&["a.example.org", "example.org", "org"]),
            },
            Case {
                name: "non-DMARC TXT records are ignored",
                input: input("example.org", None, &[]),
                zone: vec![("_dmarc.example.org", txt("v=spf1 -all"))],
                status: DmarcStatus::None,
                disposition: Policy::None,
                asked: q(&["example.org", "org"]),
            },
            Case {
                name: "v=dmarc1 (not exact) is no DMARC record",
                input: input("example.org", None, &[]),
                zone: vec![("_dmarc.example.org", txt("v=dmarc1; p=reject"))],
                status: DmarcStatus::None,
                disposition: Policy::None,
                asked: q(&["example.org", "org"]),
            },
            Case {
                name: "tag names in any case",
                input: input("example.org", None, &[]),
                zone: vec![("_dmarc.example.org", txt("V=DMARC1; P=Reject; Foo=bar"))],
                status: DmarcStatus::Fail,
                disposition: Policy::Reject,
                asked: q(&["example.org"]),
            },
            Case {
                name: "invalid p without rua: permerror",
                input: input("example.org", None, &[]),
                zone: vec![("_dmarc.example.org", txt("v=DMARC1; p=bogus"))],
                status: DmarcStatus::Permerror,
                disposition: Policy::None,
                asked: q(&["example.org"]),
            },
            Case {
                name: "invalid p with rua: p=none",
                input: input("example.org", None, &[]),
                zone: vec![(
                    "_dmarc.example.org",
                    txt("v=DMARC1; p=bogus; rua=mailto:d@example.org"),
                )],
                status: DmarcStatus::Fail,
                disposition: Policy::None,
                asked: q(&["example.org"]),
            },
            Case {
                name: "temporary failure",
                input: input("example.org", None, &[]),
                zone: vec![("_dmarc.example.org", LookupResult::TempFail("servfail".into()))],
                status: DmarcStatus::Temperror,
                disposition: Policy::None,
                asked: q(&["example.org"]),
            },
            Case {
                name: "temporary failure higher up in the walk",
                input: input("a.example.org", None, &[]),
                zone: vec![("_dmarc.org", LookupResult::TempFail("servfail".into()))],
                status: DmarcStatus::Temperror,
                disposition: Policy::None,
                asked: q(&["a.example.org", "example.org", "org"]),
            },
            Case {
                name: "a walk for one identifier fails temporarily, another is aligned: pass",
                input: input("example.org", Some("bounce.example.org"), &["example.org"]),
                zone: vec![
                    ("_dmarc.example.org", reject.clone()),
                    ("_dmarc.org", LookupResult::TempFail("servfail".into())),
                ],
                status: DmarcStatus::Pass,
                disposition: Policy::None,
                asked: q(&["example.org", "org"]),
            },
            Case {
                name: "a walk for the only identifier fails temporarily: temperror",
                input: input("example.org", Some("bounce.example.org"), &[]),
                zone: vec![
                    ("_dmarc.example.org", reject.clone()),
                    ("_dmarc.org", LookupResult::TempFail("servfail".into())),
                ],
                status: DmarcStatus::Temperror,
                disposition: Policy::None,
                asked: q(&["example.org", "org"]),
            },
            Case {
                name: "multiple records are discarded; the walk goes on",
                input: input("example.org", None, &[]),
                zone: vec![(
                    "_dmarc.example.org",
                    LookupResult::Records {
                        records: vec![
                            Record::Txt(vec![b"v=DMARC1; p=none".to_vec()]),
                            Record::Txt(vec![b"v=DMARC1; p=reject".to_vec()]),
                        ],
                        authentic: false,
                    },
                )],
                status: DmarcStatus::None,
                disposition: Policy::None,
                asked: q(&["example.org", "org"]),
            },
        ];
        check(cases);
        // The error says why there is no policy.
        let z = [(
            "_dmarc.example.org",
            LookupResult::Records {
                records: vec![
                    Record::Txt(vec![b"v=DMARC1; p=none".to_vec()]),
                    Record::Txt(vec![b"v=DMARC1; p=reject".to_vec()]),
                ],
                authentic: false,
            },
        )];
        let (r, _) = run(input("example.org", None, &[]), &z);
        assert_eq!(r.error, Some(DmarcError::MultipleRecords));
    }

    /// The RFC's tree walk examples (RFC 9989 Appendix, "Organizational and Policy Domain
    /// Tree Walk Examples"), as transcripts.
    #[test]
    fn rfc_tree_walk_examples() {
        let rec = || txt("v=DMARC1; p=reject");
        // Simple: author example.com, MAIL FROM example.com, DKIM signing.example.com.
        let zone = vec![
            ("_dmarc.example.com", rec()),
            ("_dmarc.signing.example.com", rec()),
        ];
        let (r, asked) = run(
            input("example.com", Some("example.com"), &["signing.example.com"]),
            &zone,
        );
        assert_eq!(asked, q(&["example.com", "com", "signing.example.com"]));
        assert_eq!(r.status, DmarcStatus::Pass);
        assert!(r.spf_aligned && r.dkim_aligned);
        assert_eq!(r.policy_domain, "example.com");
        // Deep: eleven labels above example.com; eight queries find the policy.
        let (r, asked) = run(
            input(
                "a.b.c.d.e.f.g.h.i.j.k.example.com",
                Some("example.com"),
                &["signing.example.com"],
            ),
            &zone,
        );
        assert_eq!(
            asked,
            q(&[
                "a.b.c.d.e.f.g.h.i.j.k.example.com",
                "g.h.i.j.k.example.com",
                "h.i.j.k.example.com",
                "i.j.k.example.com",
                "j.k.example.com",
                "k.example.com",
                "example.com",
                "com",
                "signing.example.com",
            ])
        );
        assert_eq!(r.status, DmarcStatus::Pass);
        assert!(r.spf_aligned && r.dkim_aligned);
        assert_eq!(r.policy_domain, "example.com");
        // With a PSD record: SPF aligned, DKIM not.
        let zone = vec![
            ("_dmarc.giant.bank.example", txt("v=DMARC1; p=reject")),
            ("_dmarc.bank.example", txt("v=DMARC1; p=none; psd=y")),
        ];
        let (r, asked) = run(
            input(
                "giant.bank.example",
                Some("mail.giant.bank.example"),
                &["mail.mega.bank.example"],
            ),
            &zone,
        );
        assert_eq!(
            asked,
            q(&[
                "giant.bank.example",
                "bank.example",
                "mail.giant.bank.example"
            ])
        );
        assert_eq!(r.status, DmarcStatus::Pass);
        assert!(r.spf_aligned && !r.dkim_aligned);
        assert_eq!(r.policy_domain, "giant.bank.example");
        // Without the SPF pass: DKIM alone is not aligned, the author's p=reject applies.
        let (r, _) = run(
            input("giant.bank.example", None, &["mail.mega.bank.example"]),
            &zone,
        );
        assert_eq!(
            (r.status, r.disposition),
            (DmarcStatus::Fail, Policy::Reject)
        );
    }

    /// psd=y and psd=n in policy discovery and alignment.
    #[test]
    fn psd_table() {
        let cases = vec![
            Case {
                name: "psd=n: its own Organizational Domain; a parent's identifier is not aligned",
                input: input("a.mail.example.com", None, &["example.com"]),
                zone: vec![
                    (
                        "_dmarc.mail.example.com",
                        txt("v=DMARC1; p=reject; sp=quarantine; psd=n"),
                    ),
                    ("_dmarc.example.com", txt("v=DMARC1; p=none")),
                ],
                status: DmarcStatus::Fail,
                disposition: Policy::Quarantine,
                asked: q(&["a.mail.example.com", "mail.example.com"]),
            },
            Case {
                name: "psd=n: identifiers below it are aligned",
                input: input("a.mail.example.com", None, &["b.mail.example.com"]),
                zone: vec![("_dmarc.mail.example.com", txt("v=DMARC1; p=reject; psd=n"))],
                status: DmarcStatus::Pass,
                disposition: Policy::None,
                asked: q(&[
                    "a.mail.example.com",
                    "mail.example.com",
                    "b.mail.example.com",
                ]),
            },
            Case {
                name: "psd=y at the author domain: its own policy, subdomains not aligned",
                input: input("bank.example", None, &["x.bank.example"]),
                zone: vec![("_dmarc.bank.example", txt("v=DMARC1; p=reject; psd=y"))],
                status: DmarcStatus::Fail,
                disposition: Policy::Reject,
                asked: q(&["bank.example", "x.bank.example"]),
            },
            Case {
                name: "no record below a PSD: the PSD's policy (sp) applies",
                input: input("shop.bank.example", None, &[]),
                zone: vec![(
                    "_dmarc.bank.example",
                    txt("v=DMARC1; p=none; sp=reject; psd=y"),
                )],
                status: DmarcStatus::Fail,
                disposition: Policy::Reject,
                asked: q(&["shop.bank.example", "bank.example"]),
            },
            Case {
                name: "PSD policy: the Organizational Domain one below the PSD",
                input: input("www.shop.bank.example", None, &["mail.shop.bank.example"]),
                zone: vec![(
                    "_dmarc.bank.example",
                    txt("v=DMARC1; p=none; sp=reject; psd=y"),
                )],
                status: DmarcStatus::Pass,
                disposition: Policy::None,
                asked: q(&[
                    "www.shop.bank.example",
                    "shop.bank.example",
                    "bank.example",
                    "mail.shop.bank.example",
                ]),
            },
            Case {
                name: "an Organizational Domain record wins over the PSD's",
                input: input("www.shop.bank.example", None, &[]),
                zone: vec![
                    (
                        "_dmarc.shop.bank.example",
                        txt("v=DMARC1; p=none; sp=quarantine"),
                    ),
                    (
                        "_dmarc.bank.example",
                        txt("v=DMARC1; p=none; sp=reject; psd=y"),
                    ),
                ],
                status: DmarcStatus::Fail,
                disposition: Policy::Quarantine,
                asked: q(&["www.shop.bank.example", "shop.bank.example", "bank.example"]),
            },
        ];
        check(cases);
    }

    /// np applies to a non-existent author domain (NXDOMAIN for it), asked only when it
    /// matters: a fail under a record found above the author domain, np differing from sp.
    #[test]
    fn nonexistent_policy() {
        let z = |np: &'static str| {
            vec![
                ("_dmarc.example.org", txt(np)),
                ("exists.example.org", a_record()),
                ("empty.example.org", LookupResult::NoData),
                (
                    "flaky.example.org",
                    LookupResult::TempFail("timeout".into()),
                ),
            ]
        };
        let walk = |d: &str| -> Vec<String> {
            let mut v = q(&[d, "example.org", "org"]);
            v.push(format!("A {d}"));
            v
        };
        let cases = vec![
            Case {
                name: "NXDOMAIN: np",
                input: input("gone.example.org", None, &[]),
                zone: z("v=DMARC1; p=none; np=reject"),
                status: DmarcStatus::Fail,
                disposition: Policy::Reject,
                asked: walk("gone.example.org"),
            },
            Case {
                name: "exists (A record): sp, else p",
                input: input("exists.example.org", None, &[]),
                zone: z("v=DMARC1; p=none; np=reject"),
                status: DmarcStatus::Fail,
                disposition: Policy::None,
                asked: walk("exists.example.org"),
            },
            Case {
                name: "exists (NODATA)",
                input: input("empty.example.org", None, &[]),
                zone: z("v=DMARC1; p=none; sp=quarantine; np=reject"),
                status: DmarcStatus::Fail,
                disposition: Policy::Quarantine,
                asked: walk("empty.example.org"),
            },
            Case {
                name: "existence unknown: temperror",
                input: input("flaky.example.org", None, &[]),
                zone: z("v=DMARC1; p=none; np=reject"),
                status: DmarcStatus::Temperror,
                disposition: Policy::None,
                asked: walk("flaky.example.org"),
            },
            Case {
                name: "np equal to sp: no existence query",
                input: input("gone.example.org", None, &[]),
                zone: z("v=DMARC1; p=none; sp=reject; np=reject"),
                status: DmarcStatus::Fail,
                disposition: Policy::Reject,
                asked: q(&["gone.example.org", "example.org", "org"]),
            },
            Case {
                name: "no np: sp for non-existent subdomains too",
                input: input("gone.example.org", None, &[]),
                zone: z("v=DMARC1; p=reject; sp=quarantine"),
                status: DmarcStatus::Fail,
                disposition: Policy::Quarantine,
                asked: q(&["gone.example.org", "example.org", "org"]),
            },
            Case {
                name: "np does not apply to the domain itself",
                input: input("example.org", None, &[]),
                zone: z("v=DMARC1; p=none; np=reject"),
                status: DmarcStatus::Fail,
                disposition: Policy::None,
                asked: q(&["example.org"]),
            },
            Case {
                name: "pass: no existence query",
                input: input("gone.example.org", Some("example.org"), &[]),
                zone: z("v=DMARC1; p=none; np=reject"),
                status: DmarcStatus::Pass,
                disposition: Policy::None,
                asked: q(&["gone.example.org", "example.org", "org"]),
            },
        ];
        check(cases);
    }

    /// t=y: the policy one level milder, and the result says so.
    #[test]
    fn testing_mode() {
        let table = [
            (
                "v=DMARC1; p=reject; t=y",
                Policy::Reject,
                Policy::Quarantine,
                true,
            ),
            (
                "v=DMARC1; p=quarantine; t=y",
                Policy::Quarantine,
                Policy::None,
                true,
            ),
            ("v=DMARC1; p=none; t=y", Policy::None, Policy::None, false),
            (
                "v=DMARC1; p=reject; t=n",
                Policy::Reject,
                Policy::Reject,
                false,
            ),
            (
                "v=DMARC1; p=reject; T=Y",
                Policy::Reject,
                Policy::Quarantine,
                true,
            ),
            // pct=0 is not t=y: pct is historic and ignored.
            (
                "v=DMARC1; p=reject; pct=0",
                Policy::Reject,
                Policy::Reject,
                false,
            ),
        ];
        for (rec, requested, disposition, testing) in table {
            let (r, _) = run(
                input("example.org", None, &[]),
                &[("_dmarc.example.org", txt(rec))],
            );
            assert_eq!(r.status, DmarcStatus::Fail, "{rec}");
            assert_eq!(
                (r.requested, r.disposition, r.testing),
                (requested, disposition, testing),
                "{rec}"
            );
        }
        // t=y for a subdomain's sp; and a pass stays a pass.
        let z = [(
            "_dmarc.example.org",
            txt("v=DMARC1; p=reject; sp=reject; t=y"),
        )];
        let (r, _) = run(input("a.example.org", None, &[]), &z);
        assert_eq!((r.disposition, r.testing), (Policy::Quarantine, true));
        let (r, _) = run(input("example.org", Some("example.org"), &[]), &z);
        assert_eq!(
            (r.status, r.disposition, r.testing),
            (DmarcStatus::Pass, Policy::None, false)
        );
    }

    /// A walk never asks more than eight questions; an evaluation never more than
    /// MAX_LOOKUPS, and says so when it would need more.
    #[test]
    fn query_limits() {
        // Forty labels: eight questions find the policy at the TLD's child.
        let deep = format!("{}.example.org", vec!["x"; 38].join("."));
        let (r, asked) = run(
            input(&deep, None, &[]),
            &[("_dmarc.example.org", txt("v=DMARC1; p=reject"))],
        );
        assert_eq!(asked.len(), MAX_WALK_QUERIES);
        assert_eq!(r.policy_domain, "example.org");
        assert_eq!(r.disposition, Policy::Reject);
        // Many DKIM identifiers below the Organizational Domain that are their own
        // Organizational Domains (psd=n): one question each, none aligned.
        let names: Vec<String> = (0..31).map(|i| format!("s{i}.example.org")).collect();
        let records: Vec<(String, LookupResult)> = names
            .iter()
            .map(|n| (format!("_dmarc.{n}"), txt("v=DMARC1; p=none; psd=n")))
            .collect();
        let mut zone: Vec<(&str, LookupResult)> = records
            .iter()
            .map(|(n, r)| (n.as_str(), r.clone()))
            .collect();
        zone.push(("_dmarc.example.org", txt("v=DMARC1; p=reject")));
        // 2 questions for the author, 30 identifiers: exactly the limit.
        let ids: Vec<&str> = names.iter().map(String::as_str).collect();
        let (r, asked) = run(input("example.org", None, &ids[..30]), &zone);
        assert_eq!(asked.len(), MAX_LOOKUPS);
        assert_eq!(
            (r.status, r.disposition),
            (DmarcStatus::Fail, Policy::Reject)
        );
        // One more is one question too many.
        let (r, asked) = run(input("example.org", None, &ids), &zone);
        assert_eq!(asked.len(), MAX_LOOKUPS);
        assert_eq!(r.status, DmarcStatus::Permerror);
        assert_eq!(r.error, Some(DmarcError::TooManyLookups));
        assert_eq!(
            r.auth_results("example.org"),
            "dmarc=permerror (more than 32 DNS lookups) header.from=example.org"
        );
    }

    #[test]
    fn answers_and_results() {
        // An answer to a question not asked is ignored.
        let mut v = DmarcVerify::new(input("example.org", None, &[]));
        let CheckStep::Lookup(l) = v.poll() else {
            panic!("no question")
        };
        assert_eq!(l.name, "_dmarc.example.org");
        let other = Lookup {
            name: "_dmarc.other.example".into(),
            rtype: RecordType::Txt,
        };
        v.answer(&other, txt("v=DMARC1; p=reject"));
        assert_eq!(v.poll(), CheckStep::Wait);
        v.answer(&l, txt("v=DMARC1; p=reject"));
        let CheckStep::Done(r) = v.poll() else {
            panic!("not done")
        };
        assert!(r.is_reject());
        assert_eq!(
            r.auth_results("example.org"),
            "dmarc=fail header.from=example.org"
        );
        let (r, asked) = run(input("", None, &[]), &[]);
        assert_eq!(r.error, Some(DmarcError::NoFromDomain));
        assert!(asked.is_empty());
        let dk = DkimResult {
            status: DkimStatus::Pass,
            domain: "Mail.Example.org.".into(),
            selector: "s".into(),
            identity: None,
            algorithm: None,
            b: String::new(),
            key_bits: None,
            testing: false,
            error: None,
        };
        let i = DmarcInput::new("Example.ORG.", Some("X.example"), &[dk]);
        assert_eq!(i.from_domain, "example.org");
        assert_eq!(i.spf_pass_domain.as_deref(), Some("x.example"));
        assert_eq!(i.dkim_pass_domains, vec!["mail.example.org"]);
    }
}
