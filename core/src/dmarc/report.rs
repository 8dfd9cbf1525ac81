//! DMARC aggregate reports (RFC 9990, the DMARCbis reporting document, and the RFC 7489
//! format it replaces): parsing incoming reports (XML, possibly in a gzip or zip attachment
//! of a message) into a typed [`Feedback`], and building outgoing reports from stored
//! [`Evaluation`]s.
//!
//! Both formats are read, with or without the `urn:ietf:params:xml:ns:dmarc-2.0`
//! namespace. A record with an unexpected value (an address that is none, a disposition
//! outside the schema, a missing element) is left out and counted in
//! [`Feedback::skipped`]; the other records are kept. An unexpected value in an optional
//! element of `policy_published` reads as absent. Only the report's frame (metadata,
//! the policy domain and `p`) must be right for the report to be read at all.
//!
//! Outgoing reports are in the RFC 9990 format ([`DMARC_NS`], `version` 1.0,
//! `discovery_method`, `testing`, `generator`); elements that RFC 7489 readers know keep
//! their meaning, and a pass is written as disposition `none`, as RFC 7489 has it. Their
//! SPF results are those of the MAIL FROM identity only, with scope `mfrom` (see
//! [`build_report`]), and they go to every `rua` address whatever their size (RFC 9989
//! removed the `!size` limit, see [`crate::dmarc::ReportUri`]).
//!
//! Decompression goes through [`crate::codec`] (miniz_oxide's deflate; the gzip and zip
//! containers are small enough to read by hand). Output is capped at [`MAX_REPORT_SIZE`]
//! against decompression bombs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use quick_xml::events::Event;

use super::record::{Align, Policy};
use crate::time::UnixTime;

/// Largest decompressed report accepted, in bytes.
pub const MAX_REPORT_SIZE: usize = 20 << 20;
/// The XML namespace of RFC 9990 reports.
pub const DMARC_NS: &str = "urn:ietf:params:xml:ns:dmarc-2.0";
/// The `generator` of outgoing reports.
pub const GENERATOR: &str = concat!("rmox ", env!("CARGO_PKG_VERSION"));
/// Unexpected values kept in [`Feedback::problems`]; more are only counted.
pub const MAX_PROBLEMS: usize = 10;
/// Deepest XML nesting accepted.
const MAX_DEPTH: usize = 32;
/// Most XML elements accepted.
const MAX_ELEMENTS: usize = 1_000_000;

/// Why a report could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The XML is malformed.
    #[error("bad XML: {0}")]
    Xml(String),
    /// The XML is too deep or has too many elements.
    #[error("XML exceeds limits")]
    TooLarge,
    /// The root element is not `feedback`.
    #[error("root element is not feedback")]
    NotFeedback,
    /// A required element is missing.
    #[error("missing element {0}")]
    Missing(&'static str),
    /// An element has an invalid value.
    #[error("invalid value in {0}: {1:?}")]
    Value(&'static str, String),
    /// The gzip or zip container is broken, or decompresses to more than the limit.
    #[error("bad compressed data: {0}")]
    Compression(String),
    /// The message has no part that holds a report.
    #[error("no report found in message")]
    NoReport,
}

/// Result of an alignment check in a report row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlignResult {
    /// `pass`.
    Pass,
    /// `fail`.
    Fail,
}

impl AlignResult {
    fn as_str(self) -> &'static str {
        match self {
            AlignResult::Pass => "pass",
            AlignResult::Fail => "fail",
        }
    }
}

/// `policy_evaluated/disposition`: what was done with the messages of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Disposition {
    /// `none`: no action.
    None,
    /// `pass` (RFC 9990): no action, the messages passed DMARC under an enforcing policy.
    Pass,
    /// `quarantine`.
    Quarantine,
    /// `reject`.
    Reject,
}

impl Disposition {
    /// The report name.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::None => "none",
            Disposition::Pass => "pass",
            Disposition::Quarantine => "quarantine",
            Disposition::Reject => "reject",
        }
    }

    /// Parses a name, case-insensitively.
    pub fn parse(s: &str) -> Option<Disposition> {
        let s = s.trim();
        [
            Disposition::None,
            Disposition::Pass,
            Disposition::Quarantine,
            Disposition::Reject,
        ]
        .into_iter()
        .find(|d| d.as_str().eq_ignore_ascii_case(s))
    }
}

impl From<Policy> for Disposition {
    fn from(p: Policy) -> Disposition {
        match p {
            Policy::None => Disposition::None,
            Policy::Quarantine => Disposition::Quarantine,
            Policy::Reject => Disposition::Reject,
        }
    }
}

/// `policy_published/discovery_method` (RFC 9990): how the policy was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DiscoveryMethod {
    /// `psl`: RFC 7489's public suffix list.
    Psl,
    /// `treewalk`: RFC 9989's DNS tree walk.
    TreeWalk,
}

impl DiscoveryMethod {
    /// The report name.
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryMethod::Psl => "psl",
            DiscoveryMethod::TreeWalk => "treewalk",
        }
    }

    /// Parses a name, case-insensitively.
    pub fn parse(s: &str) -> Option<DiscoveryMethod> {
        match s.trim().to_ascii_lowercase().as_str() {
            "psl" => Some(DiscoveryMethod::Psl),
            "treewalk" => Some(DiscoveryMethod::TreeWalk),
            _ => None,
        }
    }
}

/// `report_metadata`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportMetadata {
    /// `org_name`.
    pub org_name: String,
    /// `email`.
    pub email: String,
    /// `extra_contact_info`.
    pub extra_contact_info: Option<String>,
    /// `report_id`.
    pub report_id: String,
    /// `date_range/begin`, Unix seconds.
    pub begin: i64,
    /// `date_range/end`, Unix seconds.
    pub end: i64,
    /// `error` elements.
    pub errors: Vec<String>,
    /// `generator` (RFC 9990): the reporting software.
    pub generator: Option<String>,
}

/// `policy_published`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyPublished {
    /// `domain`.
    pub domain: String,
    /// `adkim`.
    pub adkim: Option<Align>,
    /// `aspf`.
    pub aspf: Option<Align>,
    /// `p`.
    pub p: Policy,
    /// `sp`.
    pub sp: Option<Policy>,
    /// `np` (RFC 9091).
    pub np: Option<Policy>,
    /// `pct` (RFC 7489 reports only; RFC 9989 made the tag historic).
    pub pct: Option<u8>,
    /// `fo`.
    pub fo: Option<String>,
    /// `testing` (RFC 9990): the record's `t=`.
    pub testing: Option<bool>,
    /// `discovery_method` (RFC 9990).
    pub discovery_method: Option<DiscoveryMethod>,
}

impl PolicyPublished {
    /// The published policy of `record` found at `domain`.
    #[cfg(test)]
    pub fn from_record(domain: &str, record: &super::record::DmarcRecord) -> PolicyPublished {
        PolicyPublished {
            domain: domain.to_string(),
            adkim: Some(record.adkim),
            aspf: Some(record.aspf),
            p: record.policy,
            sp: record.subdomain_policy,
            np: record.nonexistent_policy,
            pct: None,
            fo: Some(record.failure_options.clone()),
            testing: Some(record.testing),
            discovery_method: Some(DiscoveryMethod::TreeWalk),
        }
    }
}

/// A `reason` in `policy_evaluated`: why the disposition differs from the policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reason {
    /// `type`: local_policy, mailing_list, other, policy_test_mode, trusted_forwarder
    /// (RFC 9990); forwarded, sampled_out (RFC 7489).
    pub kind: String,
    /// `comment`.
    pub comment: Option<String>,
}

/// `identifiers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identifiers {
    /// `envelope_to`.
    pub envelope_to: Option<String>,
    /// `envelope_from`.
    pub envelope_from: Option<String>,
    /// `header_from`.
    pub header_from: String,
}

/// A DKIM result in `auth_results`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DkimAuth {
    /// `domain`.
    pub domain: String,
    /// `selector`.
    pub selector: Option<String>,
    /// `result`: none, pass, fail, policy, neutral, temperror, permerror.
    pub result: String,
    /// `human_result`.
    pub human_result: Option<String>,
}

/// An SPF result in `auth_results`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpfAuth {
    /// `domain`.
    pub domain: String,
    /// `scope`: `mfrom`, or `helo` in RFC 7489 reports (RFC 9990 allows only `mfrom`,
    /// which is all outgoing reports write).
    pub scope: Option<String>,
    /// `result`: none, neutral, pass, fail, softfail, temperror, permerror.
    pub result: String,
}

/// `auth_results`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AuthResults {
    /// `dkim` elements.
    pub dkim: Vec<DkimAuth>,
    /// `spf` elements.
    pub spf: Vec<SpfAuth>,
}

/// One `record`: a row with its count, identifiers and authentication results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportRecord {
    /// `row/source_ip`.
    pub source_ip: IpAddr,
    /// `row/count`.
    pub count: u64,
    /// `row/policy_evaluated/disposition`.
    pub disposition: Disposition,
    /// `row/policy_evaluated/dkim`.
    pub dkim: Option<AlignResult>,
    /// `row/policy_evaluated/spf`.
    pub spf: Option<AlignResult>,
    /// `row/policy_evaluated/reason`.
    pub reasons: Vec<Reason>,
    /// `identifiers`.
    pub identifiers: Identifiers,
    /// `auth_results`.
    pub auth_results: AuthResults,
    /// The local names of extension elements after `auth_results` (RFC 9990), in order;
    /// their contents are not kept.
    pub extensions: Vec<String>,
}

/// A DMARC aggregate report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Feedback {
    /// The root element's namespace (`urn:ietf:params:xml:ns:dmarc-2.0` for RFC 9990
    /// reports), if it has one.
    pub namespace: Option<String>,
    /// `version`, if given.
    pub version: Option<String>,
    /// `report_metadata`.
    pub metadata: ReportMetadata,
    /// `policy_published`.
    pub policy: PolicyPublished,
    /// The local names of the elements in `extension` (RFC 9990), in order; their
    /// contents are not kept.
    pub extensions: Vec<String>,
    /// `record` elements, but those with an unexpected value.
    pub records: Vec<ReportRecord>,
    /// Records left out for an unexpected value.
    pub skipped: u64,
    /// The first [`MAX_PROBLEMS`] unexpected values: those of the records left out, and
    /// those of optional `policy_published` elements, which read as absent.
    pub problems: Vec<ReportError>,
}

/// A minimal element tree.
#[derive(Debug, Default)]
struct Node {
    name: String,
    /// The element's namespace, recorded for the root only.
    ns: Option<String>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn opt(&self, name: &str) -> Option<String> {
        self.child(name).map(|c| c.text.trim().to_string())
    }

    fn req(&self, name: &'static str) -> Result<String, ReportError> {
        self.opt(name).ok_or(ReportError::Missing(name))
    }

    fn node(&self, name: &'static str) -> Result<&Node, ReportError> {
        self.child(name).ok_or(ReportError::Missing(name))
    }
}

fn xml_err(e: impl std::fmt::Display) -> ReportError {
    ReportError::Xml(e.to_string())
}

/// The namespace an element's own attributes declare for it (`xmlns`, or `xmlns:p` for a
/// `p:` prefix); declarations on ancestors are not looked at (used for the root only).
fn element_ns(e: &quick_xml::events::BytesStart<'_>) -> Option<String> {
    let want: Vec<u8> = match e.name().prefix() {
        Some(p) => [b"xmlns:".as_slice(), p.as_ref()].concat(),
        None => b"xmlns".to_vec(),
    };
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == want.as_slice())
        .and_then(|a| a.unescape_value().ok().map(|v| v.trim().to_string()))
}

fn parse_tree(xml: &[u8]) -> Result<Node, ReportError> {
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut stack: Vec<Node> = vec![Node::default()];
    let mut elements = 0usize;
    let mut buf = Vec::new();
    loop {
        let ev = reader.read_event_into(&mut buf).map_err(xml_err)?;
        match ev {
            Event::Start(e) => {
                elements += 1;
                if stack.len() > MAX_DEPTH || elements > MAX_ELEMENTS {
                    return Err(ReportError::TooLarge);
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let ns = if stack.len() == 1 {
                    element_ns(&e)
                } else {
                    None
                };
                stack.push(Node {
                    name,
                    ns,
                    ..Node::default()
                });
            }
            Event::Empty(e) => {
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(ReportError::TooLarge);
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if let Some(top) = stack.last_mut() {
                    top.children.push(Node {
                        name,
                        ..Node::default()
                    });
                }
            }
            Event::End(_) => {
                if stack.len() < 2 {
                    return Err(ReportError::Xml("unbalanced end tag".into()));
                }
                if let Some(done) = stack.pop() {
                    if let Some(top) = stack.last_mut() {
                        top.children.push(done);
                    }
                }
            }
            Event::Text(t) => {
                let s = t.unescape().map_err(xml_err)?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::CData(c) => {
                let s = c.decode().map_err(xml_err)?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&s);
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if stack.len() != 1 {
        return Err(ReportError::Xml("unclosed element".into()));
    }
    let mut doc = stack.pop().unwrap_or_default();
    doc.children
        .pop()
        .filter(|n| n.name == "feedback")
        .ok_or(ReportError::NotFeedback)
}

fn policy_val(what: &'static str, s: &str) -> Result<Policy, ReportError> {
    Policy::parse(s).ok_or_else(|| ReportError::Value(what, s.to_string()))
}

fn opt_nonempty(s: Option<String>) -> Option<String> {
    s.filter(|x| !x.is_empty())
}

/// Unexpected values met while reading a report.
#[derive(Default)]
struct Problems {
    skipped: u64,
    kept: Vec<ReportError>,
}

impl Problems {
    fn note(&mut self, e: ReportError) {
        if self.kept.len() < MAX_PROBLEMS {
            self.kept.push(e);
        }
    }

    /// An optional element: its value, or `None` (noted) when it is unexpected.
    fn optional<T>(&mut self, r: Result<Option<T>, ReportError>) -> Option<T> {
        r.unwrap_or_else(|e| {
            self.note(e);
            None
        })
    }
}

/// The local name of an extension element, if it is a plain XML name (letters, digits,
/// `_`, `-`, `.`, starting with a letter or `_`), so it can be written back as is.
fn extension_name(n: &Node) -> Option<String> {
    let mut c = n.name.chars();
    let ok = c
        .next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '_' | '-' | '.'));
    ok.then(|| n.name.clone())
}

/// One `record`.
fn parse_record(rec: &Node) -> Result<ReportRecord, ReportError> {
    let row = rec.node("row")?;
    let pe = row.node("policy_evaluated")?;
    let ip_s = row.req("source_ip")?;
    let ar = |what: &'static str| -> Result<Option<AlignResult>, ReportError> {
        match opt_nonempty(pe.opt(what)).map(|v| v.to_ascii_lowercase()) {
            None => Ok(None),
            Some(v) if v == "pass" => Ok(Some(AlignResult::Pass)),
            Some(v) if v == "fail" => Ok(Some(AlignResult::Fail)),
            Some(v) => Err(ReportError::Value(what, v)),
        }
    };
    let ids = rec.node("identifiers")?;
    let auth = rec.child("auth_results");
    let disposition = pe.req("disposition")?;
    Ok(ReportRecord {
        source_ip: ip_s
            .parse()
            .map_err(|_| ReportError::Value("source_ip", ip_s.clone()))?,
        count: {
            let c = row.req("count")?;
            c.parse().map_err(|_| ReportError::Value("count", c))?
        },
        disposition: Disposition::parse(&disposition)
            .ok_or(ReportError::Value("disposition", disposition))?,
        dkim: ar("dkim")?,
        spf: ar("spf")?,
        reasons: pe
            .all("reason")
            .map(|r| Reason {
                kind: r.opt("type").unwrap_or_default(),
                comment: opt_nonempty(r.opt("comment")),
            })
            .collect(),
        identifiers: Identifiers {
            envelope_to: opt_nonempty(ids.opt("envelope_to")),
            envelope_from: opt_nonempty(ids.opt("envelope_from")),
            header_from: ids.opt("header_from").unwrap_or_default(),
        },
        auth_results: AuthResults {
            dkim: auth
                .into_iter()
                .flat_map(|a| a.all("dkim"))
                .map(|d| DkimAuth {
                    domain: d.opt("domain").unwrap_or_default(),
                    selector: opt_nonempty(d.opt("selector")),
                    result: d.opt("result").unwrap_or_default(),
                    human_result: opt_nonempty(d.opt("human_result")),
                })
                .collect(),
            spf: auth
                .into_iter()
                .flat_map(|a| a.all("spf"))
                .map(|s| SpfAuth {
                    domain: s.opt("domain").unwrap_or_default(),
                    scope: opt_nonempty(s.opt("scope")),
                    result: s.opt("result").unwrap_or_default(),
                })
                .collect(),
        },
        extensions: rec
            .children
            .iter()
            .filter(|c| !matches!(c.name.as_str(), "row" | "identifiers" | "auth_results"))
            .filter_map(extension_name)
            .collect(),
    })
}

/// Parses a report's XML (RFC 9990 or RFC 7489). A record with an unexpected value is left
/// out and counted; the report fails only when its metadata, policy domain or `p` is
/// missing or unexpected.
pub fn parse_report(xml: &[u8]) -> Result<Feedback, ReportError> {
    let root = parse_tree(xml)?;
    let mut problems = Problems::default();
    let md = root.node("report_metadata")?;
    let dr = md.node("date_range")?;
    let int = |what: &'static str, s: String| -> Result<i64, ReportError> {
        s.parse().map_err(|_| ReportError::Value(what, s))
    };
    let metadata = ReportMetadata {
        org_name: md.req("org_name")?,
        email: md.opt("email").unwrap_or_default(),
        extra_contact_info: opt_nonempty(md.opt("extra_contact_info")),
        report_id: md.req("report_id")?,
        begin: int("begin", dr.req("begin")?)?,
        end: int("end", dr.req("end")?)?,
        errors: md.all("error").map(|e| e.text.trim().to_string()).collect(),
        generator: opt_nonempty(md.opt("generator")),
    };
    let pp = root.node("policy_published")?;
    let align = |what: &'static str| -> Result<Option<Align>, ReportError> {
        match opt_nonempty(pp.opt(what)) {
            None => Ok(None),
            Some(v) => Align::parse(&v)
                .map(Some)
                .ok_or(ReportError::Value(what, v)),
        }
    };
    let opt_policy = |what: &'static str| -> Result<Option<Policy>, ReportError> {
        opt_nonempty(pp.opt(what))
            .map(|v| policy_val(what, &v))
            .transpose()
    };
    let testing = match opt_nonempty(pp.opt("testing")) {
        None => Ok(None),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "y" => Ok(Some(true)),
            "n" => Ok(Some(false)),
            _ => Err(ReportError::Value("testing", v)),
        },
    };
    let discovery = opt_nonempty(pp.opt("discovery_method"))
        .map(|v| DiscoveryMethod::parse(&v).ok_or(ReportError::Value("discovery_method", v)))
        .transpose();
    let pct = opt_nonempty(pp.opt("pct"))
        .map(|v| v.parse().map_err(|_| ReportError::Value("pct", v)))
        .transpose();
    let policy = PolicyPublished {
        domain: pp.req("domain")?,
        adkim: problems.optional(align("adkim")),
        aspf: problems.optional(align("aspf")),
        p: policy_val("p", &pp.req("p")?)?,
        sp: problems.optional(opt_policy("sp")),
        np: problems.optional(opt_policy("np")),
        pct: problems.optional(pct),
        fo: opt_nonempty(pp.opt("fo")),
        testing: problems.optional(testing),
        discovery_method: problems.optional(discovery),
    };
    let mut records = Vec::new();
    for rec in root.all("record") {
        match parse_record(rec) {
            Ok(r) => records.push(r),
            Err(e) => {
                problems.skipped += 1;
                problems.note(e);
            }
        }
    }
    Ok(Feedback {
        namespace: root.ns.clone().filter(|n| !n.is_empty()),
        version: opt_nonempty(root.opt("version")),
        metadata,
        policy,
        extensions: root
            .child("extension")
            .map(|x| x.children.iter().filter_map(extension_name).collect())
            .unwrap_or_default(),
        records,
        skipped: problems.skipped,
        problems: problems.kept,
    })
}

fn compression(e: crate::codec::CodecError) -> ReportError {
    ReportError::Compression(e.to_string())
}

fn inflate(raw: &[u8]) -> Result<Vec<u8>, ReportError> {
    crate::codec::inflate(raw, MAX_REPORT_SIZE).map_err(compression)
}

/// Decompresses a gzip member (RFC 1952), checking its CRC, of at most
/// [`MAX_REPORT_SIZE`] bytes.
pub fn gunzip(data: &[u8]) -> Result<Vec<u8>, ReportError> {
    crate::codec::gunzip(data, MAX_REPORT_SIZE).map_err(compression)
}

fn le16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

fn le32(b: &[u8], at: usize) -> Option<usize> {
    let v = u32::from_le_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]);
    usize::try_from(v).ok()
}

/// The first file of a zip archive, decompressed (stored or deflate). Sizes come from the
/// central directory, so archives written with data descriptors work too.
pub fn unzip_first(data: &[u8]) -> Result<Vec<u8>, ReportError> {
    let bad = |m: &str| ReportError::Compression(m.to_string());
    // End of central directory: 22 bytes plus a comment of up to 64 KiB.
    let min = data.len().saturating_sub(22 + 65_535);
    let eocd = (min..data.len().saturating_sub(21))
        .rev()
        .find(|&i| data.get(i..i + 4) == Some(b"PK\x05\x06"))
        .ok_or_else(|| bad("no end of central directory"))?;
    let cd = le32(data, eocd + 16).ok_or_else(|| bad("short"))?;
    if data.get(cd..cd + 4) != Some(b"PK\x01\x02") {
        return Err(bad("bad central directory"));
    }
    let method = le16(data, cd + 10).ok_or_else(|| bad("short"))?;
    let csize = le32(data, cd + 20).ok_or_else(|| bad("short"))?;
    let usize_ = le32(data, cd + 24).ok_or_else(|| bad("short"))?;
    let local = le32(data, cd + 42).ok_or_else(|| bad("short"))?;
    if data.get(local..local + 4) != Some(b"PK\x03\x04") {
        return Err(bad("bad local header"));
    }
    let name_len = le16(data, local + 26).ok_or_else(|| bad("short"))?;
    let extra_len = le16(data, local + 28).ok_or_else(|| bad("short"))?;
    let start = local + 30 + name_len + extra_len;
    let raw = data
        .get(start..start.saturating_add(csize))
        .ok_or_else(|| bad("truncated"))?;
    match method {
        0 if usize_ <= MAX_REPORT_SIZE => Ok(raw.to_vec()),
        0 => Err(bad("too large")),
        8 => inflate(raw),
        m => Err(bad(&format!("compression method {m}"))),
    }
}

/// Reads a report from a file's bytes: XML, gzip or zip (detected by content).
pub fn parse_report_file(data: &[u8]) -> Result<Feedback, ReportError> {
    if data.starts_with(&[0x1f, 0x8b]) {
        parse_report(&gunzip(data)?)
    } else if data.starts_with(b"PK\x03\x04") {
        parse_report(&unzip_first(data)?)
    } else {
        parse_report(data)
    }
}

/// Finds and parses the report in a report message: the first part that holds XML,
/// gzip or zip and parses as a report.
pub fn parse_report_message(msg: &[u8]) -> Result<Feedback, ReportError> {
    crate::message::first_part(msg, |c| {
        let t = c.trim_ascii_start();
        let candidate = c.starts_with(&[0x1f, 0x8b])
            || c.starts_with(b"PK\x03\x04")
            || t.starts_with(b"<?xml")
            || t.starts_with(b"<feedback");
        candidate.then(|| parse_report_file(t))
    })
    .unwrap_or(Err(ReportError::NoReport))
}

fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

fn elem(out: &mut String, indent: usize, name: &str, value: &str) {
    out.push_str(&" ".repeat(indent));
    out.push_str(&format!("<{name}>{}</{name}>\n", esc(value)));
}

fn opt_elem(out: &mut String, indent: usize, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        elem(out, indent, name, v);
    }
}

impl Feedback {
    /// The report as XML (RFC 9990 with a namespace, else RFC 7489 Appendix C).
    /// Extension elements are written empty (their contents were not kept).
    pub fn to_xml(&self) -> String {
        let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feedback");
        if let Some(ns) = &self.namespace {
            o.push_str(&format!(" xmlns=\"{}\"", esc(ns)));
        }
        o.push_str(">\n");
        opt_elem(&mut o, 2, "version", self.version.as_deref());
        let m = &self.metadata;
        o.push_str("  <report_metadata>\n");
        elem(&mut o, 4, "org_name", &m.org_name);
        elem(&mut o, 4, "email", &m.email);
        opt_elem(
            &mut o,
            4,
            "extra_contact_info",
            m.extra_contact_info.as_deref(),
        );
        elem(&mut o, 4, "report_id", &m.report_id);
        o.push_str("    <date_range>\n");
        elem(&mut o, 6, "begin", &m.begin.to_string());
        elem(&mut o, 6, "end", &m.end.to_string());
        o.push_str("    </date_range>\n");
        for e in &m.errors {
            elem(&mut o, 4, "error", e);
        }
        opt_elem(&mut o, 4, "generator", m.generator.as_deref());
        o.push_str("  </report_metadata>\n  <policy_published>\n");
        let p = &self.policy;
        elem(&mut o, 4, "domain", &p.domain);
        opt_elem(&mut o, 4, "adkim", p.adkim.map(Align::as_str));
        opt_elem(&mut o, 4, "aspf", p.aspf.map(Align::as_str));
        elem(&mut o, 4, "p", p.p.as_str());
        opt_elem(&mut o, 4, "sp", p.sp.map(Policy::as_str));
        opt_elem(&mut o, 4, "np", p.np.map(Policy::as_str));
        opt_elem(&mut o, 4, "pct", p.pct.map(|x| x.to_string()).as_deref());
        opt_elem(&mut o, 4, "fo", p.fo.as_deref());
        opt_elem(
            &mut o,
            4,
            "testing",
            p.testing.map(|t| if t { "y" } else { "n" }),
        );
        opt_elem(
            &mut o,
            4,
            "discovery_method",
            p.discovery_method.map(DiscoveryMethod::as_str),
        );
        o.push_str("  </policy_published>\n");
        if !self.extensions.is_empty() {
            o.push_str("  <extension>\n");
            for x in &self.extensions {
                o.push_str(&format!("    <{x}/>\n"));
            }
            o.push_str("  </extension>\n");
        }
        for r in &self.records {
            o.push_str("  <record>\n    <row>\n");
            elem(&mut o, 6, "source_ip", &r.source_ip.to_string());
            elem(&mut o, 6, "count", &r.count.to_string());
            o.push_str("      <policy_evaluated>\n");
            elem(&mut o, 8, "disposition", r.disposition.as_str());
            opt_elem(&mut o, 8, "dkim", r.dkim.map(AlignResult::as_str));
            opt_elem(&mut o, 8, "spf", r.spf.map(AlignResult::as_str));
            for reason in &r.reasons {
                o.push_str("        <reason>\n");
                elem(&mut o, 10, "type", &reason.kind);
                opt_elem(&mut o, 10, "comment", reason.comment.as_deref());
                o.push_str("        </reason>\n");
            }
            o.push_str("      </policy_evaluated>\n    </row>\n    <identifiers>\n");
            let i = &r.identifiers;
            opt_elem(&mut o, 6, "envelope_to", i.envelope_to.as_deref());
            opt_elem(&mut o, 6, "envelope_from", i.envelope_from.as_deref());
            elem(&mut o, 6, "header_from", &i.header_from);
            o.push_str("    </identifiers>\n    <auth_results>\n");
            for d in &r.auth_results.dkim {
                o.push_str("      <dkim>\n");
                elem(&mut o, 8, "domain", &d.domain);
                opt_elem(&mut o, 8, "selector", d.selector.as_deref());
                elem(&mut o, 8, "result", &d.result);
                opt_elem(&mut o, 8, "human_result", d.human_result.as_deref());
                o.push_str("      </dkim>\n");
            }
            for s in &r.auth_results.spf {
                o.push_str("      <spf>\n");
                elem(&mut o, 8, "domain", &s.domain);
                opt_elem(&mut o, 8, "scope", s.scope.as_deref());
                elem(&mut o, 8, "result", &s.result);
                o.push_str("      </spf>\n");
            }
            o.push_str("    </auth_results>\n");
            for x in &r.extensions {
                o.push_str(&format!("    <{x}/>\n"));
            }
            o.push_str("  </record>\n");
        }
        o.push_str("</feedback>\n");
        o
    }
}

/// One stored DMARC evaluation of an incoming message, the unit outgoing reports are made
/// of. Plain data, no serde: storage decides the encoding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation {
    /// The domain whose policy was evaluated (where the record was found).
    pub policy_domain: String,
    /// When.
    pub evaluated: UnixTime,
    /// The connecting IP.
    pub source_ip: IpAddr,
    /// The disposition applied.
    pub disposition: Policy,
    /// A DKIM pass was aligned.
    pub dkim_aligned: bool,
    /// The SPF pass was aligned.
    pub spf_aligned: bool,
    /// Why the disposition differs from the policy (sampled_out, local_policy, ...).
    pub reasons: Vec<Reason>,
    /// Envelope and header identifiers.
    pub identifiers: Identifiers,
    /// Every DKIM and SPF result, aligned or not.
    pub auth_results: AuthResults,
    /// The policy as published when evaluated.
    pub published: PolicyPublished,
}

/// Builds an aggregate report for `published.domain` from evaluations: rows with equal
/// contents are counted together; evaluations for other domains are skipped. SPF results
/// are written as [`outgoing_spf`] says (only the MAIL FROM identity, scope `mfrom`).
/// Returns the XML, which [`parse_report`] reads back.
pub fn build_report(
    metadata: &ReportMetadata,
    published: &PolicyPublished,
    evaluations: &[Evaluation],
) -> String {
    type RowKey = (
        String,
        &'static str,
        bool,
        bool,
        Vec<Reason>,
        Identifiers,
        AuthResults,
    );
    let mut rows: BTreeMap<RowKey, (IpAddr, Policy, u64)> = BTreeMap::new();
    for e in evaluations
        .iter()
        .filter(|e| e.policy_domain.eq_ignore_ascii_case(&published.domain))
    {
        let auth_results = AuthResults {
            dkim: e.auth_results.dkim.clone(),
            spf: outgoing_spf(e),
        };
        let key = (
            e.source_ip.to_string(),
            e.disposition.as_str(),
            e.dkim_aligned,
            e.spf_aligned,
            e.reasons.clone(),
            e.identifiers.clone(),
            auth_results,
        );
        rows.entry(key).or_insert((e.source_ip, e.disposition, 0)).2 += 1;
    }
    let pass_fail = |b: bool| {
        Some(if b {
            AlignResult::Pass
        } else {
            AlignResult::Fail
        })
    };
    let records = rows
        .into_iter()
        .map(
            |((_, _, dkim, spf, reasons, identifiers, auth_results), (ip, disp, count))| {
                ReportRecord {
                    source_ip: ip,
                    count,
                    disposition: disp.into(),
                    dkim: pass_fail(dkim),
                    spf: pass_fail(spf),
                    reasons,
                    identifiers,
                    auth_results,
                    extensions: Vec::new(),
                }
            },
        )
        .collect();
    Feedback {
        namespace: Some(DMARC_NS.into()),
        version: Some("1.0".into()),
        metadata: metadata.clone(),
        policy: published.clone(),
        extensions: Vec::new(),
        records,
        skipped: 0,
        problems: Vec::new(),
    }
    .to_xml()
}

/// The SPF results an outgoing report shows for `e`. RFC 9990, "Contents of the "spf"
/// element": "Only the "MAIL FROM" identity (see [RFC7208, section 2.4]) is used in DMARC",
/// and "The only valid value for the "scope" element is "mfrom"" (its schema's
/// `SPFDomainScope` has no `helo`); RFC 9989 3.2.4: "DMARC relies solely on SPF validation
/// of the MAIL FROM identity".
///
/// So a result with scope `mfrom` (or none) is shown as it is. A `helo` one is shown with
/// scope `mfrom` when the reverse path was null (`envelope_from` absent or empty): RFC 7208
/// 2.4 defines the MAIL FROM identity of a null reverse path as `postmaster@` the HELO
/// name, and RFC 9989 3.2.4 points there, so that check was of the MAIL FROM identity.
/// Any other `helo` result (a check of the HELO name for a non-null reverse path) and any
/// other scope is left out: it is no DMARC input and the format has no place for it.
fn outgoing_spf(e: &Evaluation) -> Vec<SpfAuth> {
    let null_path = e
        .identifiers
        .envelope_from
        .as_deref()
        .is_none_or(|d| d.trim().is_empty());
    e.auth_results
        .spf
        .iter()
        .filter_map(|s| {
            let mail_from = match s.scope.as_deref().map(str::trim) {
                None => return Some(s.clone()),
                Some(x) if x.eq_ignore_ascii_case("mfrom") => true,
                Some(x) if x.eq_ignore_ascii_case("helo") => null_path,
                Some(_) => false,
            };
            mail_from.then(|| SpfAuth {
                scope: Some("mfrom".into()),
                ..s.clone()
            })
        })
        .collect()
}

/// Whether an evaluation is stored as optional: only reported together with others of its
/// domain (mox's rule, against backscatter to domains that merely sent us mail). It is
/// when the message is itself an aggregate report, when the record has no `rua`, or when
/// the sender is unknown (no recipient account has sent to its From or MAIL FROM address).
pub fn evaluation_is_optional(is_report: bool, has_rua: bool, sender_known: bool) -> bool {
    is_report || !has_rua || !sender_known
}

/// The domain under which an incoming aggregate report is kept, or `None`: the sender
/// passed DMARC, the message went to the reporting address of one of our domains
/// (`destinations`: those domains), and the report is about that domain. So a forged
/// report, or one sent to any other address, cannot inject data.
pub fn incoming_report_domain(
    dmarc_pass: bool,
    destinations: &[&str],
    report: &Feedback,
) -> Option<String> {
    if !dmarc_pass {
        return None;
    }
    let domain = report
        .policy
        .domain
        .trim_end_matches('.')
        .to_ascii_lowercase();
    destinations
        .iter()
        .any(|d| d.eq_ignore_ascii_case(&domain))
        .then_some(domain)
}

/// One stored evaluation as the reporter reads it back: the evaluation, whether it is only
/// reported together with others, and the `rua` mailto addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvaluation {
    /// The evaluation (its `published` is the policy in force then).
    pub evaluation: Evaluation,
    /// Only reported together with non-optional evaluations of the same domain.
    pub optional: bool,
    /// `rua` mailto addresses as published then (an RFC 7489 `!size` suffix limits
    /// nothing: RFC 9989 made it obsolete syntax that reporters ignore).
    pub mailto: Vec<String>,
}

/// An outgoing aggregate report (RFC 7489 7.2.1.1) about one policy domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateReport {
    /// Our host name: org_name, the From (`postmaster@`) and the file name's submitter.
    pub submitter: String,
    /// The policy domain reported on.
    pub domain: String,
    /// The report's metadata.
    pub meta: ReportMetadata,
    /// The report XML.
    pub xml: String,
    /// The `rua` mailto addresses in force (the latest evaluation's): the report goes to
    /// each, whatever its size (RFC 9989 removed the `!size` limit).
    pub mailto: Vec<String>,
    /// When it was built.
    pub now: UnixTime,
}

/// The report `submitter` sends at `now` about `domain` for its stored evaluations, or
/// `None` when there is none that must be reported (only optional ones: mox sends no
/// report then; the caller forgets them). The latest evaluation's policy and `rua` are
/// the ones in force; the period starts at the earliest evaluation.
pub fn aggregate_report(
    submitter: &str,
    domain: &str,
    evals: &[StoredEvaluation],
    now: UnixTime,
) -> Option<AggregateReport> {
    if evals.iter().all(|e| e.optional) {
        return None;
    }
    let latest = evals.iter().max_by_key(|e| e.evaluation.evaluated.0)?;
    let begin = evals
        .iter()
        .map(|e| e.evaluation.evaluated.0)
        .min()
        .unwrap_or(now.0);
    let meta = ReportMetadata {
        org_name: submitter.to_string(),
        email: format!("postmaster@{submitter}"),
        extra_contact_info: None,
        report_id: format!("{domain}.{}", now.0),
        begin,
        end: now.0,
        errors: Vec::new(),
        generator: Some(GENERATOR.to_string()),
    };
    let all: Vec<Evaluation> = evals.iter().map(|e| e.evaluation.clone()).collect();
    let xml = build_report(&meta, &latest.evaluation.published, &all);
    Some(AggregateReport {
        submitter: submitter.to_string(),
        domain: domain.to_string(),
        meta,
        xml,
        mailto: latest.mailto.clone(),
        now,
    })
}

impl AggregateReport {
    /// The message to `to`: multipart/mixed with a text part and the gzipped XML as a
    /// base64 attachment named `submitter!domain!begin!end.xml.gz` (RFC 7489 7.2.1.1).
    pub fn message(&self, to: &[String]) -> Vec<u8> {
        let (host, domain, meta) = (&self.submitter, &self.domain, &self.meta);
        let boundary = format!("rmox-dmarc-{}", self.now.0);
        let filename = format!("{host}!{domain}!{}!{}.xml.gz", meta.begin, meta.end);
        let to = to
            .iter()
            .map(|a| format!("<{a}>"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut m = format!(
            "From: <postmaster@{host}>\r\n\
             To: {to}\r\n\
             Subject: Report Domain: {domain} Submitter: {host} Report-ID: <{id}>\r\n\
             Date: {date}\r\n\
             Message-ID: <{id}@{host}>\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
             --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
             DMARC aggregate report for {domain}, {begin} to {end} (Unix time).\r\n\r\n\
             --{boundary}\r\nContent-Type: application/gzip\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"{filename}\"\r\n\r\n",
            id = meta.report_id,
            date = self.now.rfc5322(),
            begin = meta.begin,
            end = meta.end,
        );
        m.push_str(&crate::codec::base64_lines(&crate::codec::gzip(
            self.xml.as_bytes(),
        )));
        m.push_str(&format!("--{boundary}--\r\n"));
        m.into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dmarc::DmarcRecord;
    use proptest::prelude::*;

    /// The real reports from mox's test data: zip and gzip attachments, several senders.
    #[test]
    fn real_reports_parse() {
        let table: &[(&str, &str, &str, usize)] = &[
            ("google.eml", "google.com", "ueber.net", 1),
            ("mailru.eml", "Mail.Ru", "ueber.net", 1),
            ("outlook.eml", "Outlook.com", "ueber.net", 1),
            ("xs4all.eml", "xs4all.nl", "ueber.net", 1),
            ("yahoo.eml", "Yahoo! Inc.", "ueber.net", 1),
        ];
        for (file, org, domain, min_records) in table {
            let msg = std::fs::read(
                crate::dkim::test_vectors_dir()
                    .join("mox-testdata/testdata/dmarc-reports")
                    .join(file),
            )
            .unwrap();
            let f = parse_report_message(&msg).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(f.metadata.org_name, *org, "{file}");
            assert_eq!(f.policy.domain, *domain, "{file}");
            assert!(f.records.len() >= *min_records, "{file}");
            assert!(f.metadata.begin < f.metadata.end, "{file}");
            // What we parse, we write and read back the same.
            assert_eq!(parse_report(f.to_xml().as_bytes()).unwrap(), f, "{file}");
        }
    }

    const MIN: &str = "<feedback><report_metadata><org_name>o</org_name><email>e@o</email><report_id>1</report_id><date_range><begin>1</begin><end>2</end></date_range></report_metadata><policy_published><domain>d.example</domain><p>none</p></policy_published>";

    #[test]
    fn errors_table() {
        let rec = |row: &str| {
            format!("{MIN}<record><row>{row}</row><identifiers><header_from>d.example</header_from></identifiers></record></feedback>")
        };
        let table: Vec<(String, ReportError)> = vec![
            ("<notfeedback/>".into(), ReportError::NotFeedback),
            (
                "<feedback>".into(),
                ReportError::Xml("unclosed element".into()),
            ),
            (
                "<feedback></feedback>".into(),
                ReportError::Missing("report_metadata"),
            ),
            (
                MIN.replace("<p>none</p>", "<p>maybe</p>") + "</feedback>",
                ReportError::Value("p", "maybe".into()),
            ),
            (
                MIN.replace("<begin>1</begin>", "<begin>x</begin>") + "</feedback>",
                ReportError::Value("begin", "x".into()),
            ),
            (
                format!("{}</feedback>", "<a>".repeat(40)),
                ReportError::TooLarge,
            ),
        ];
        for (xml, want) in table {
            assert_eq!(parse_report(xml.as_bytes()).unwrap_err(), want, "{xml}");
        }
        // A record with an unexpected value is left out, counted, and its error kept.
        let skips: Vec<(String, ReportError)> = vec![
            (rec("<source_ip>1.2.3.4</source_ip><count>1</count>"), ReportError::Missing("policy_evaluated")),
            (rec("<source_ip>nope</source_ip><count>1</count><policy_evaluated><disposition>none</disposition></policy_evaluated>"), ReportError::Value("source_ip", "nope".into())),
            (rec("<source_ip>1.2.3.4</source_ip><count>-1</count><policy_evaluated><disposition>none</disposition></policy_evaluated>"), ReportError::Value("count", "-1".into())),
            (rec("<source_ip>1.2.3.4</source_ip><count>1</count><policy_evaluated><disposition>none</disposition><dkim>maybe</dkim></policy_evaluated>"), ReportError::Value("dkim", "maybe".into())),
            (rec("<source_ip>1.2.3.4</source_ip><count>1</count><policy_evaluated><disposition>discard</disposition></policy_evaluated>"), ReportError::Value("disposition", "discard".into())),
        ];
        for (xml, want) in skips {
            let f = parse_report(xml.as_bytes()).unwrap();
            assert_eq!((f.records.len(), f.skipped), (0, 1), "{xml}");
            assert_eq!(f.problems, vec![want], "{xml}");
        }
        assert!(matches!(
            parse_report(b"<feedback><a></b></feedback>"),
            Err(ReportError::Xml(_))
        ));
        assert_eq!(
            parse_report_message(b"Subject: hi\r\n\r\nno report\r\n").unwrap_err(),
            ReportError::NoReport
        );
        assert!(matches!(
            gunzip(b"\x1f\x8b\x08\x00junkjunkjunkjunkjunk"),
            Err(ReportError::Compression(_))
        ));
        assert!(matches!(
            unzip_first(b"PK\x03\x04junk"),
            Err(ReportError::Compression(_))
        ));
        let ok = parse_report(format!("{MIN}</feedback>").as_bytes()).unwrap();
        assert_eq!(ok.records.len(), 0);
        // Namespaced reports (DMARCbis) and CDATA.
        let ns = MIN
            .replace("<feedback>", "<d:feedback xmlns:d=\"urn:x\">")
            .replace(
                "<org_name>o</org_name>",
                "<org_name><![CDATA[o&co]]></org_name>",
            )
            + "</d:feedback>";
        assert_eq!(
            parse_report(ns.as_bytes()).unwrap().metadata.org_name,
            "o&co"
        );
    }

    fn eval(ip: &str, dkim: bool, disposition: Policy, domain: &str) -> Evaluation {
        Evaluation {
            policy_domain: domain.into(),
            evaluated: UnixTime(1_700_000_000),
            source_ip: ip.parse().unwrap(),
            disposition,
            dkim_aligned: dkim,
            spf_aligned: false,
            reasons: if disposition == Policy::Quarantine {
                vec![Reason {
                    kind: "sampled_out".into(),
                    comment: None,
                }]
            } else {
                vec![]
            },
            identifiers: Identifiers {
                envelope_to: Some("rmox.example".into()),
                envelope_from: Some("sender.example".into()),
                header_from: "sender.example".into(),
            },
            auth_results: AuthResults {
                dkim: vec![DkimAuth {
                    domain: "sender.example".into(),
                    selector: Some("s1".into()),
                    result: if dkim { "pass" } else { "fail" }.into(),
                    human_result: None,
                }],
                spf: vec![SpfAuth {
                    domain: "sender.example".into(),
                    scope: Some("mfrom".into()),
                    result: "softfail".into(),
                }],
            },
            published: published(),
        }
    }

    fn published() -> PolicyPublished {
        let rec = DmarcRecord::parse("v=DMARC1; p=reject; pct=50").unwrap();
        PolicyPublished::from_record("sender.example", &rec)
    }

    fn stored(ip: &str, evaluated: i64, optional: bool, rua: &[&str]) -> StoredEvaluation {
        let mut e = eval(ip, true, Policy::None, "sender.example");
        e.evaluated = UnixTime(evaluated);
        StoredEvaluation {
            evaluation: e,
            optional,
            mailto: rua.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Which stored evaluations make a report, its period and the rua in force.
    #[test]
    fn aggregate_report_table() {
        let now = UnixTime(1_700_090_000);
        let rua = ["dmarc@sender.example"];
        let none: &[StoredEvaluation] = &[];
        assert_eq!(
            aggregate_report("mail.rmox.example", "sender.example", none, now),
            None
        );
        let only_optional = [
            stored("192.0.2.1", 10, true, &rua),
            stored("192.0.2.2", 20, true, &rua),
        ];
        assert_eq!(
            aggregate_report("mail.rmox.example", "sender.example", &only_optional, now),
            None
        );
        let mixed = [
            stored("192.0.2.1", 30, true, &["old@sender.example"]),
            stored("192.0.2.2", 20, false, &["older@sender.example"]),
            stored("192.0.2.3", 40, true, &rua),
        ];
        let r = aggregate_report("mail.rmox.example", "sender.example", &mixed, now).unwrap();
        assert_eq!((r.meta.begin, r.meta.end), (20, now.0));
        assert_eq!(r.meta.report_id, format!("sender.example.{}", now.0));
        assert_eq!(r.meta.email, "postmaster@mail.rmox.example");
        assert_eq!(r.mailto, vec!["dmarc@sender.example".to_string()]);
        let f = parse_report(r.xml.as_bytes()).unwrap();
        assert_eq!(f.records.len(), 3);
    }

    /// The message reads back as a report; the attachment is named as RFC 7489 asks.
    #[test]
    fn aggregate_report_message() {
        let now = UnixTime(1_700_090_000);
        let evals = [stored(
            "192.0.2.1",
            100,
            false,
            &["a@sender.example", "c@sender.example"],
        )];
        let r = aggregate_report("mail.rmox.example", "sender.example", &evals, now).unwrap();
        let msg = r.message(&["a@sender.example".into(), "c@sender.example".into()]);
        let text = String::from_utf8(msg.clone()).unwrap();
        assert!(text.starts_with("From: <postmaster@mail.rmox.example>\r\nTo: <a@sender.example>, <c@sender.example>\r\n"), "{text}");
        assert!(text.contains("Subject: Report Domain: sender.example Submitter: mail.rmox.example Report-ID: <sender.example.1700090000>\r\n"));
        assert!(
            text.contains("filename=\"mail.rmox.example!sender.example!100!1700090000.xml.gz\"")
        );
        assert!(text.lines().all(|l| l.len() <= 998));
        let f = parse_report_message(&msg).unwrap();
        assert_eq!(f, parse_report(r.xml.as_bytes()).unwrap());
    }

    /// Reports once went only to the `rua` addresses whose RFC 7489 `!size` limit the
    /// message fitted; RFC 9989 removed that limit (obsolete syntax, ignored), so a record
    /// with a limit far below the report's size still gets it at that address.
    #[test]
    fn rua_size_suffix_limits_nothing() {
        let now = UnixTime(1_700_090_000);
        let rec = DmarcRecord::parse(
            "v=DMARC1; p=reject; rua=mailto:small@sender.example!10,mailto:big@sender.example!1m",
        )
        .unwrap();
        let mailto: Vec<&str> = rec.aggregate.iter().filter_map(|u| u.mailto()).collect();
        let r = aggregate_report(
            "mail.rmox.example",
            "sender.example",
            &[stored("192.0.2.1", 100, false, &mailto)],
            now,
        )
        .unwrap();
        assert_eq!(r.mailto, ["small@sender.example", "big@sender.example"]);
        assert!(r.message(&r.mailto).len() > 10);
    }

    /// Outgoing reports wrote SPF results of the HELO identity with `<scope>helo</scope>`,
    /// which RFC 9990 does not allow (only `mfrom`; DMARC uses only the MAIL FROM
    /// identity). (scope, envelope_from) as evaluated -> the `spf` auth result written
    /// (domain, scope), if any.
    #[test]
    fn outgoing_spf_scope() {
        /// The `spf` auth result written: (domain, scope).
        type Written = Option<(&'static str, Option<&'static str>)>;
        let table: &[(Option<&str>, Option<&str>, Written)] = &[
            // The MAIL FROM identity: as it is.
            (
                Some("mfrom"),
                Some("sender.example"),
                Some(("sender.example", Some("mfrom"))),
            ),
            (
                Some("MFROM"),
                Some("sender.example"),
                Some(("sender.example", Some("mfrom"))),
            ),
            (None, Some("sender.example"), Some(("sender.example", None))),
            // The HELO name checked for a null reverse path is the MAIL FROM identity
            // postmaster@HELO (RFC 7208 2.4).
            (
                Some("helo"),
                None,
                Some(("mx.sender.example", Some("mfrom"))),
            ),
            (
                Some("helo"),
                Some(""),
                Some(("mx.sender.example", Some("mfrom"))),
            ),
            // The HELO identity of a message with a MAIL FROM address: left out.
            (Some("helo"), Some("sender.example"), None),
            (Some("HELO"), Some("[192.0.2.1]"), None),
            // No other scope exists in RFC 9990.
            (Some("pra"), Some("sender.example"), None),
            (Some("pra"), None, None),
        ];
        let now = UnixTime(1_700_090_000);
        for (scope, from, want) in table {
            let mut e = stored("192.0.2.1", 100, false, &["a@sender.example"]);
            let ev = &mut e.evaluation;
            ev.identifiers.envelope_from = from.map(Into::into);
            ev.auth_results.spf = vec![SpfAuth {
                domain: if scope.is_some_and(|s| s.eq_ignore_ascii_case("helo")) {
                    "mx.sender.example".into()
                } else {
                    "sender.example".into()
                },
                scope: scope.map(Into::into),
                result: "pass".into(),
            }];
            let r = aggregate_report("mail.rmox.example", "sender.example", &[e], now).unwrap();
            assert!(!r.xml.contains("helo"), "{scope:?} {from:?}:\n{}", r.xml);
            let f = parse_report(r.xml.as_bytes()).unwrap();
            let got: Vec<(&str, Option<&str>)> = f.records[0]
                .auth_results
                .spf
                .iter()
                .map(|s| (s.domain.as_str(), s.scope.as_deref()))
                .collect();
            assert_eq!(
                got,
                want.iter().copied().collect::<Vec<_>>(),
                "{scope:?} {from:?}"
            );
            // The DKIM results are untouched.
            assert_eq!(f.records[0].auth_results.dkim.len(), 1);
        }
    }

    #[test]
    fn optional_evaluations() {
        // (is_report, has_rua, sender_known) -> optional
        let cases = [
            (false, true, true, false),
            (true, true, true, true),
            (false, false, true, true),
            (false, true, false, true),
            (true, false, false, true),
        ];
        for (report, rua, known, want) in cases {
            assert_eq!(evaluation_is_optional(report, rua, known), want);
        }
    }

    /// Only a DMARC-passing report sent to the reporting address of the domain it is
    /// about is kept.
    #[test]
    fn incoming_report_domains() {
        let meta = ReportMetadata {
            org_name: "o".into(),
            email: "e@o.example".into(),
            report_id: "r".into(),
            ..ReportMetadata::default()
        };
        let mut f = parse_report(build_report(&meta, &published(), &[]).as_bytes()).unwrap();
        f.policy.domain = "Sender.Example.".into();
        let cases: [(bool, &[&str], Option<&str>); 5] = [
            (true, &["sender.example"], Some("sender.example")),
            (
                true,
                &["other.example", "SENDER.example"],
                Some("sender.example"),
            ),
            (false, &["sender.example"], None),
            (true, &[], None),
            (true, &["other.example"], None),
        ];
        for (pass, dest, want) in cases {
            assert_eq!(
                incoming_report_domain(pass, dest, &f).as_deref(),
                want,
                "{pass} {dest:?}"
            );
        }
    }

    /// An RFC 9990 report: the namespace, the new elements (generator, testing,
    /// discovery_method, np, disposition `pass`, extensions) read, and read back the same.
    #[test]
    fn rfc9990_report() {
        let xml = r#"<?xml version="1.0"?>
<feedback xmlns="urn:ietf:params:xml:ns:dmarc-2.0" xmlns:x="urn:example:ext">
  <version>1.0</version>
  <report_metadata>
    <org_name>Reporter</org_name>
    <email>dmarc@reporter.example</email>
    <report_id>1721054318-example.com@reporter.example</report_id>
    <date_range><begin>1721001600</begin><end>1721087999</end></date_range>
    <generator>Reporter 2.1</generator>
  </report_metadata>
  <policy_published>
    <domain>example.com</domain>
    <p>reject</p>
    <sp>quarantine</sp>
    <np>reject</np>
    <testing>y</testing>
    <discovery_method>treewalk</discovery_method>
  </policy_published>
  <extension><x:thing>1</x:thing></extension>
  <record>
    <row>
      <source_ip>2001:db8::25</source_ip>
      <count>7</count>
      <policy_evaluated>
        <disposition>pass</disposition><dkim>pass</dkim><spf>fail</spf>
      </policy_evaluated>
    </row>
    <identifiers><header_from>example.com</header_from></identifiers>
    <auth_results>
      <dkim><domain>example.com</domain><selector>s1</selector><result>pass</result></dkim>
      <spf><domain>bounce.example.com</domain><scope>mfrom</scope><result>fail</result></spf>
    </auth_results>
    <x:detail>extra</x:detail>
  </record>
  <record>
    <row>
      <source_ip>192.0.2.7</source_ip>
      <count>2</count>
      <policy_evaluated>
        <disposition>quarantine</disposition><dkim>fail</dkim><spf>fail</spf>
        <reason><type>policy_test_mode</type></reason>
      </policy_evaluated>
    </row>
    <identifiers><header_from>gone.example.com</header_from></identifiers>
    <auth_results></auth_results>
  </record>
</feedback>
"#;
        let f = parse_report(xml.as_bytes()).unwrap();
        assert_eq!(f.namespace.as_deref(), Some(DMARC_NS));
        assert_eq!(f.version.as_deref(), Some("1.0"));
        assert_eq!(f.metadata.generator.as_deref(), Some("Reporter 2.1"));
        assert_eq!(f.policy.np, Some(Policy::Reject));
        assert_eq!(f.policy.testing, Some(true));
        assert_eq!(f.policy.discovery_method, Some(DiscoveryMethod::TreeWalk));
        assert_eq!(f.policy.pct, None);
        assert_eq!(f.extensions, vec!["thing".to_string()]);
        assert_eq!(f.records.len(), 2);
        assert_eq!(f.records[0].disposition, Disposition::Pass);
        assert_eq!(f.records[0].extensions, vec!["detail".to_string()]);
        assert_eq!(f.records[1].reasons[0].kind, "policy_test_mode");
        assert_eq!((f.skipped, f.problems.len()), (0, 0));
        assert_eq!(parse_report(f.to_xml().as_bytes()).unwrap(), f);
    }

    /// One unexpected value leaves out its record only; the others are kept, and what was
    /// left out is counted. Unexpected optional policy values read as absent.
    #[test]
    fn report_skips_bad_records() {
        let rec = |ip: &str, disp: &str| {
            format!("<record><row><source_ip>{ip}</source_ip><count>3</count><policy_evaluated><disposition>{disp}</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row><identifiers><header_from>d.example</header_from></identifiers><auth_results/></record>")
        };
        let xml = format!(
            "{MIN}{}{}{}{}</feedback>",
            rec("192.0.2.1", "none"),
            rec("192.0.2.300", "none"),
            rec("192.0.2.3", "bounce"),
            rec("192.0.2.4", "reject"),
        );
        let f = parse_report(xml.as_bytes()).unwrap();
        let ips: Vec<String> = f.records.iter().map(|r| r.source_ip.to_string()).collect();
        assert_eq!(ips, ["192.0.2.1", "192.0.2.4"]);
        assert_eq!(f.skipped, 2);
        assert_eq!(
            f.problems,
            vec![
                ReportError::Value("source_ip", "192.0.2.300".into()),
                ReportError::Value("disposition", "bounce".into()),
            ]
        );
        // Many bad records: all counted, the first MAX_PROBLEMS kept.
        let many: String = (0..25).map(|i| rec(&format!("bad{i}"), "none")).collect();
        let f =
            parse_report(format!("{MIN}{many}{}</feedback>", rec("192.0.2.9", "none")).as_bytes())
                .unwrap();
        assert_eq!(
            (f.records.len(), f.skipped, f.problems.len()),
            (1, 25, MAX_PROBLEMS)
        );
        // Unexpected optional policy values: absent, noted, records kept.
        let odd = MIN.replace(
            "<p>none</p>",
            "<p>none</p><sp>sometimes</sp><adkim>x</adkim><testing>maybe</testing><discovery_method>guess</discovery_method><pct>all</pct>",
        );
        let f = parse_report(format!("{odd}{}</feedback>", rec("192.0.2.1", "none")).as_bytes())
            .unwrap();
        assert_eq!(f.records.len(), 1);
        assert_eq!(f.skipped, 0);
        assert_eq!(
            (
                f.policy.sp,
                f.policy.adkim,
                f.policy.testing,
                f.policy.discovery_method,
                f.policy.pct
            ),
            (None, None, None, None, None)
        );
        assert_eq!(f.problems.len(), 5);
        assert!(f
            .problems
            .contains(&ReportError::Value("testing", "maybe".into())));
        // What is left still reads back the same.
        assert_eq!(
            parse_report(f.to_xml().as_bytes()).unwrap().records,
            f.records
        );
    }

    /// Outgoing reports are RFC 9990 reports that RFC 7489 readers understand: the
    /// namespace, version 1.0, the generator, discovery_method and testing; no pct; a pass
    /// written as disposition none.
    #[test]
    fn outgoing_report_format() {
        let now = UnixTime(1_700_090_000);
        let mut e = stored("192.0.2.1", 100, false, &["a@sender.example"]);
        e.evaluation.published = PolicyPublished::from_record(
            "sender.example",
            &DmarcRecord::parse("v=DMARC1; p=reject; np=quarantine; t=y").unwrap(),
        );
        let r = aggregate_report("mail.rmox.example", "sender.example", &[e], now).unwrap();
        assert!(
            r.xml
                .contains("<feedback xmlns=\"urn:ietf:params:xml:ns:dmarc-2.0\">"),
            "{}",
            r.xml
        );
        for want in [
            "<version>1.0</version>",
            &format!("<generator>{GENERATOR}</generator>"),
            "<np>quarantine</np>",
            "<testing>y</testing>",
            "<discovery_method>treewalk</discovery_method>",
            "<disposition>none</disposition>",
        ] {
            assert!(r.xml.contains(want), "{want} missing:\n{}", r.xml);
        }
        assert!(!r.xml.contains("<pct>"), "{}", r.xml);
        let f = parse_report(r.xml.as_bytes()).unwrap();
        assert_eq!(f.namespace.as_deref(), Some(DMARC_NS));
        assert_eq!(f.policy.testing, Some(true));
        assert_eq!(f.records[0].disposition, Disposition::None);
    }

    #[test]
    fn build_and_read_back() {
        let meta = ReportMetadata {
            org_name: "rmox <test> & co".into(),
            email: "postmaster@rmox.example".into(),
            extra_contact_info: None,
            report_id: "r1".into(),
            begin: 1_700_000_000,
            end: 1_700_086_400,
            errors: vec![],
            generator: Some(GENERATOR.into()),
        };
        let evals = vec![
            eval("192.0.2.1", true, Policy::None, "sender.example"),
            eval("192.0.2.1", true, Policy::None, "sender.example"),
            eval("2001:db8::1", false, Policy::Quarantine, "sender.example"),
            eval("192.0.2.9", true, Policy::None, "other.example"),
        ];
        let xml = build_report(&meta, &published(), &evals);
        let f = parse_report(xml.as_bytes()).unwrap();
        assert_eq!(f.metadata, meta);
        assert_eq!(f.policy, published());
        assert_eq!(f.records.len(), 2);
        let counts: Vec<u64> = f.records.iter().map(|r| r.count).collect();
        assert_eq!(counts, vec![2, 1]);
        assert_eq!(f.records[1].reasons[0].kind, "sampled_out");
        assert_eq!(f.records[1].dkim, Some(AlignResult::Fail));
        assert_eq!(f.records[0].auth_results.spf[0].result, "softfail");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever metadata strings we write, we read back.
        #[test]
        fn text_round_trip(org in "\\PC{0,30}", id in "[ -~]{1,20}", err in proptest::collection::vec("[ -~]{1,10}", 0..3)) {
            let meta = ReportMetadata {
                org_name: org.trim().to_string(),
                email: "a@b".into(),
                extra_contact_info: None,
                report_id: id.trim().to_string(),
                begin: 1,
                end: 2,
                errors: err.iter().map(|e| e.trim().to_string()).collect(),
                generator: None,
            };
            prop_assume!(!meta.report_id.is_empty());
            let xml = build_report(&meta, &published(), &[]);
            let f = parse_report(xml.as_bytes()).unwrap();
            prop_assert_eq!(f.metadata, meta);
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_report_file(&data);
            let mut gz = vec![0x1f, 0x8b, 8, 0];
            gz.extend_from_slice(&data);
            let _ = parse_report_file(&gz);
            let mut zip = b"PK\x03\x04".to_vec();
            zip.extend_from_slice(&data);
            zip.extend_from_slice(b"PK\x05\x06");
            zip.extend_from_slice(&data);
            let _ = parse_report_file(&zip);
        }
    }
}
