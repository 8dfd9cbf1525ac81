//! SMTP TLS reporting (RFC 8460): the `_smtp._tls` TXT record, result collection per
//! policy domain, the JSON report (building, gzip, parsing incoming ones).
//!
//! As in mox (seed 001), results are kept apart by [`ReportScope`]: MTA-STS and
//! no-policy results go to the recipient domain's TLSRPT policy, DANE results to the MX
//! host's own TLSRPT policy (`_smtp._tls.MXHOST`), so one delivery may feed two reports.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::UnixTime;

/// Largest incoming report accepted by default, compressed or not, in bytes (decompressed
/// size is bounded the same); the `*_max` parsers take another bound.
pub const MAX_REPORT_SIZE: usize = 8 << 20;

/// Largest number of distinct failure details kept per policy in one collection; more
/// failures are still counted in the summary.
pub const MAX_FAILURE_DETAILS: usize = 1000;

/// The media type of an uncompressed report (RFC 8460 6.4).
pub const MEDIA_TYPE_JSON: &str = "application/tlsrpt+json";

/// The media type of a gzipped report (RFC 8460 6.4).
pub const MEDIA_TYPE_GZIP: &str = "application/tlsrpt+gzip";

/// The `_smtp._tls` TXT record name for a domain (RFC 8460 3).
pub fn record_name(domain: &str) -> String {
    format!("_smtp._tls.{}", domain.trim_end_matches('.'))
}

/// Why a `_smtp._tls` TXT record was not accepted; the domain then gets no reports.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsrptRecordError {
    /// The record does not start with `v=TLSRPTv1`.
    #[error("tlsrpt record: not v=TLSRPTv1")]
    Version,
    /// There is no `rua` field.
    #[error("tlsrpt record: missing rua")]
    MissingRua,
    /// A `rua` URI is not `scheme:rest` (commas must be %-encoded).
    #[error("tlsrpt record: bad rua uri {0:?}")]
    BadUri(String),
    /// A field is not `name=value` with a valid name and value.
    #[error("tlsrpt record: bad field {0:?}")]
    BadField(String),
    /// A field appears twice.
    #[error("tlsrpt record: duplicate field {0:?}")]
    Duplicate(String),
    /// More than one TXT record starts with `v=TLSRPTv1`.
    #[error("tlsrpt record: {0} records")]
    Multiple(usize),
    /// No TXT record starts with `v=TLSRPTv1`.
    #[error("tlsrpt record: none")]
    None,
}

/// One reporting URI of a `rua` field.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReportUri(pub String);

impl ReportUri {
    /// The address of a `mailto:` URI (query part dropped).
    pub fn mailto(&self) -> Option<&str> {
        let rest = strip_scheme(&self.0, "mailto")?;
        Some(rest.split('?').next().unwrap_or(rest))
    }

    /// Whether this is an `https:` URI (reports are POSTed there, RFC 8460 5.3).
    pub fn is_https(&self) -> bool {
        strip_scheme(&self.0, "https").is_some()
    }

    fn parse(s: &str) -> Option<ReportUri> {
        let (scheme, rest) = s.split_once(':')?;
        let ok_scheme = scheme
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
        let ok_rest = !rest.is_empty()
            && rest
                .bytes()
                .all(|c| (0x21..=0x7e).contains(&c) && c != b';' && c != b',');
        (ok_scheme && ok_rest).then(|| ReportUri(s.to_string()))
    }
}

fn strip_scheme<'a>(s: &'a str, scheme: &str) -> Option<&'a str> {
    let (sch, rest) = s.split_once(':')?;
    sch.eq_ignore_ascii_case(scheme).then_some(rest)
}

/// A parsed `_smtp._tls` record: `v=TLSRPTv1; rua=mailto:tlsrpt@example.org`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsrptRecord {
    /// Where reports go, in order; never empty.
    pub rua: Vec<ReportUri>,
    /// Extension fields, in order, kept for rendering.
    pub extensions: Vec<(String, String)>,
}

impl TlsrptRecord {
    /// Parses one TXT record's text (its strings concatenated), RFC 8460 3.
    pub fn parse(s: &str) -> Result<TlsrptRecord, TlsrptRecordError> {
        use super::mtasts::{is_ext_name, is_ext_value, split_fields, FieldError};
        let fields = split_fields(s, "v=TLSRPTv1").map_err(|e| match e {
            FieldError::Version => TlsrptRecordError::Version,
            FieldError::Bad(f) => TlsrptRecordError::BadField(f),
        })?;
        let mut rua: Option<Vec<ReportUri>> = None;
        let mut extensions: Vec<(String, String)> = Vec::new();
        for (k, v) in fields {
            if k == "rua" {
                if rua.is_some() {
                    return Err(TlsrptRecordError::Duplicate(k.into()));
                }
                let uris = v
                    .split(',')
                    .map(|u| {
                        let u = u.trim_matches([' ', '\t']);
                        ReportUri::parse(u).ok_or_else(|| TlsrptRecordError::BadUri(u.into()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                rua = Some(uris);
            } else {
                if !is_ext_name(k) || !is_ext_value(v) {
                    return Err(TlsrptRecordError::BadField(format!("{k}={v}")));
                }
                if extensions.iter().any(|(n, _)| n == k) {
                    return Err(TlsrptRecordError::Duplicate(k.into()));
                }
                extensions.push((k.into(), v.into()));
            }
        }
        let rua = rua.ok_or(TlsrptRecordError::MissingRua)?;
        Ok(TlsrptRecord { rua, extensions })
    }

    /// Picks the record from all TXT records at `_smtp._tls.DOMAIN`: those not starting
    /// with `v=TLSRPTv1` are ignored; exactly one must remain and parse (RFC 8460 3).
    pub fn from_txt<S: AsRef<str>>(txts: &[S]) -> Result<TlsrptRecord, TlsrptRecordError> {
        match super::mtasts::pick_record(txts, "v=TLSRPTv1") {
            Ok(one) => TlsrptRecord::parse(one),
            Err(0) => Err(TlsrptRecordError::None),
            Err(n) => Err(TlsrptRecordError::Multiple(n)),
        }
    }
}

impl TlsrptRecord {
    /// The record from a TXT lookup of [`record_name`] (each record's strings
    /// concatenated); `None` when there is none, it does not parse, or the lookup failed.
    pub fn from_lookup(r: &crate::dns::LookupResult) -> Option<TlsrptRecord> {
        use crate::dns::{LookupResult, Record};
        let LookupResult::Records { records, .. } = r else {
            return None;
        };
        let txts: Vec<String> = records
            .iter()
            .filter_map(|r| match r {
                Record::Txt(parts) => Some(String::from_utf8_lossy(&parts.concat()).into_owned()),
                _ => None,
            })
            .collect();
        TlsrptRecord::from_txt(&txts).ok()
    }
}

impl fmt::Display for TlsrptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v=TLSRPTv1; rua=")?;
        for (i, u) in self.rua.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(&u.0)?;
        }
        for (k, v) in &self.extensions {
            write!(f, "; {k}={v}")?;
        }
        Ok(())
    }
}

/// The policy a result was obtained under (RFC 8460 4.4 `policy-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyType {
    /// DANE TLSA records.
    Tlsa,
    /// An MTA-STS policy.
    Sts,
    /// Neither.
    NoPolicyFound,
}

impl PolicyType {
    /// The report spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyType::Tlsa => "tlsa",
            PolicyType::Sts => "sts",
            PolicyType::NoPolicyFound => "no-policy-found",
        }
    }
}

/// A failure's result type (RFC 8460 4.3). Unknown types from other reporters are kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ResultType {
    /// The server did not offer STARTTLS (4.3.1).
    StarttlsNotSupported,
    /// The certificate does not match the host name (4.3.1).
    CertificateHostMismatch,
    /// The certificate expired (4.3.1).
    CertificateExpired,
    /// The certificate does not chain to a trusted root (4.3.1).
    CertificateNotTrusted,
    /// Another negotiation or validation failure (4.3.1).
    ValidationFailure,
    /// TLSA records are invalid (4.3.2).
    TlsaInvalid,
    /// DNSSEC validation failed (4.3.2).
    DnssecInvalid,
    /// DANE was required but not possible (4.3.2).
    DaneRequired,
    /// The MTA-STS policy could not be fetched (4.3.3).
    StsPolicyFetchError,
    /// The MTA-STS policy did not parse (4.3.3).
    StsPolicyInvalid,
    /// The MTA-STS policy server's certificate did not verify (4.3.3).
    StsWebpkiInvalid,
    /// A type this implementation does not know.
    Other(String),
}

const RESULT_TYPES: [(&str, ResultType); 11] = [
    ("starttls-not-supported", ResultType::StarttlsNotSupported),
    (
        "certificate-host-mismatch",
        ResultType::CertificateHostMismatch,
    ),
    ("certificate-expired", ResultType::CertificateExpired),
    ("certificate-not-trusted", ResultType::CertificateNotTrusted),
    ("validation-failure", ResultType::ValidationFailure),
    ("tlsa-invalid", ResultType::TlsaInvalid),
    ("dnssec-invalid", ResultType::DnssecInvalid),
    ("dane-required", ResultType::DaneRequired),
    ("sts-policy-fetch-error", ResultType::StsPolicyFetchError),
    ("sts-policy-invalid", ResultType::StsPolicyInvalid),
    ("sts-webpki-invalid", ResultType::StsWebpkiInvalid),
];

impl ResultType {
    /// The report spelling.
    pub fn as_str(&self) -> &str {
        if let ResultType::Other(s) = self {
            return s;
        }
        RESULT_TYPES
            .iter()
            .find(|(_, t)| t == self)
            .map(|(s, _)| *s)
            .unwrap_or_default()
    }
}

impl From<String> for ResultType {
    fn from(s: String) -> ResultType {
        RESULT_TYPES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, t)| t.clone())
            .unwrap_or(ResultType::Other(s))
    }
}

impl From<ResultType> for String {
    fn from(t: ResultType) -> String {
        t.as_str().to_string()
    }
}

mod rfc3339 {
    use super::UnixTime;
    use serde::{Deserialize, Deserializer, Serializer};

    /// 9999-12-31T23:59:59Z: later times do not render in four-digit years. Times before
    /// 1970 are refused too: no report covers them.
    const LAST: i64 = 253_402_300_799;

    pub(super) fn serialize<S: Serializer>(t: &UnixTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.rfc3339())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<UnixTime, D::Error> {
        let s = String::deserialize(d)?;
        UnixTime::parse_rfc3339(&s)
            .filter(|t| (0..=LAST).contains(&t.0))
            .ok_or_else(|| serde::de::Error::custom(format!("bad date-time {s:?}")))
    }
}

/// `mx-host` is a list in RFC 8460's grammar but a string in its example; accept both.
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The report's time range (RFC 8460 4.4 `date-range`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DateRange {
    /// Start, inclusive.
    #[serde(with = "rfc3339")]
    pub start_datetime: UnixTime,
    /// End.
    #[serde(with = "rfc3339")]
    pub end_datetime: UnixTime,
}

/// The policy a set of results was obtained under (RFC 8460 4.4 `policy`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Policy {
    /// The policy type.
    pub policy_type: PolicyType,
    /// The policy: MTA-STS policy lines, or TLSA records in presentation form.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_string: Vec<String>,
    /// The domain the policy belongs to (recipient domain, or MX host for DANE).
    pub policy_domain: String,
    /// MTA-STS `mx` patterns.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "string_or_list"
    )]
    pub mx_host: Vec<String>,
}

impl Policy {
    /// The policy entry for an MTA-STS policy of `domain` (its lines and `mx` patterns).
    pub fn sts(domain: &str, policy: &super::mtasts::StsPolicy) -> Policy {
        Policy {
            policy_type: PolicyType::Sts,
            policy_string: policy.lines(),
            policy_domain: domain.to_ascii_lowercase(),
            mx_host: policy.mx.iter().map(ToString::to_string).collect(),
        }
    }

    /// The policy entry for DANE at an MX host: its TLSA records in presentation form
    /// (`3 1 1 HEX`), as reported to the host's own TLSRPT policy.
    pub fn tlsa(host: &str, records: &[crate::tls::Tlsa]) -> Policy {
        Policy {
            policy_type: PolicyType::Tlsa,
            policy_string: records.iter().map(ToString::to_string).collect(),
            policy_domain: host.to_ascii_lowercase(),
            mx_host: Vec::new(),
        }
    }

    /// The policy entry when no policy applied (`no-policy-found`).
    pub fn none(domain: &str) -> Policy {
        Policy {
            policy_type: PolicyType::NoPolicyFound,
            policy_string: Vec::new(),
            policy_domain: domain.to_ascii_lowercase(),
            mx_host: Vec::new(),
        }
    }
}

/// Session counts of one policy (RFC 8460 4.4 `summary`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Summary {
    /// Sessions with successful TLS under the policy.
    pub total_successful_session_count: u64,
    /// Sessions that failed.
    pub total_failure_session_count: u64,
}

/// One kind of failure and how often (RFC 8460 4.4 `failure-details`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FailureDetails {
    /// What failed.
    pub result_type: ResultType,
    /// Our sending IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_mta_ip: Option<String>,
    /// The MX host name connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_hostname: Option<String>,
    /// The host name the MX announced in its greeting/EHLO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_mx_helo: Option<String>,
    /// The MX's IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiving_ip: Option<String>,
    /// Sessions that failed so.
    pub failed_session_count: u64,
    /// A URI or text with more information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_information: Option<String>,
    /// An implementation-specific reason code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason_code: Option<String>,
}

/// The results for one policy (RFC 8460 4.4, one element of `policies`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PolicyResult {
    /// The policy.
    pub policy: Policy,
    /// The counts.
    pub summary: Summary,
    /// The failures, by kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_details: Vec<FailureDetails>,
}

/// A TLS report (RFC 8460 4.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Report {
    /// The reporting organization.
    pub organization_name: String,
    /// The period covered.
    pub date_range: DateRange,
    /// A contact (address or URI); some reporters leave it out.
    #[serde(default)]
    pub contact_info: String,
    /// A unique id.
    pub report_id: String,
    /// The results per policy.
    pub policies: Vec<PolicyResult>,
}

/// Why an incoming report was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsReportError {
    /// Larger than the bound (compressed or after decompression), which it carries.
    #[error("tls report: larger than {0} bytes")]
    TooLarge(usize),
    /// The gzip container or deflate stream is broken.
    #[error("tls report: gzip: {0}")]
    Compression(String),
    /// The JSON does not follow RFC 8460 4.4.
    #[error("tls report: json: {0}")]
    Json(String),
    /// A message holds no part that parses as a report.
    #[error("tls report: no report in message")]
    NoReport,
}

impl Report {
    /// The JSON text (compact).
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: all map keys are strings and every custom
        // serializer writes a string.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The gzipped JSON, as sent (RFC 8460 5.1).
    pub fn to_gzip(&self) -> Vec<u8> {
        crate::codec::gzip(self.to_json().as_bytes())
    }

    /// The attachment file name (RFC 8460 5.3):
    /// `submitter!policy-domain!begin!end!id.json.gz`, times in Unix seconds.
    pub fn filename(&self, submitter: &str, policy_domain: &str) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                .collect()
        };
        format!(
            "{}!{}!{}!{}!{}.json.gz",
            clean(submitter),
            clean(policy_domain),
            self.date_range.start_datetime.secs(),
            self.date_range.end_datetime.secs(),
            clean(&self.report_id),
        )
    }

    /// The report message's Subject (RFC 8460 5.3).
    pub fn subject(&self, submitter: &str, policy_domain: &str) -> String {
        format!(
            "Report Domain: {policy_domain} Submitter: {submitter} Report-ID: <{}>",
            self.report_id
        )
    }
}

/// Parses a report's JSON (`application/tlsrpt+json`). Unknown fields are ignored;
/// `date-range`, `report-id`, `organization-name` and `policies` are required.
pub fn parse_report(json: &[u8]) -> Result<Report, TlsReportError> {
    parse_report_max(json, MAX_REPORT_SIZE)
}

/// [`parse_report`] with `max` bytes instead of [`MAX_REPORT_SIZE`].
pub fn parse_report_max(json: &[u8], max: usize) -> Result<Report, TlsReportError> {
    if json.len() > max {
        return Err(TlsReportError::TooLarge(max));
    }
    serde_json::from_slice(json).map_err(|e| TlsReportError::Json(e.to_string()))
}

/// Parses a report file, gzipped (`application/tlsrpt+gzip`) or not.
pub fn parse_report_file(data: &[u8]) -> Result<Report, TlsReportError> {
    parse_report_file_max(data, MAX_REPORT_SIZE)
}

/// [`parse_report_file`] with `max` bytes (compressed, and decompressed) instead of
/// [`MAX_REPORT_SIZE`].
pub fn parse_report_file_max(data: &[u8], max: usize) -> Result<Report, TlsReportError> {
    if data.len() > max {
        return Err(TlsReportError::TooLarge(max));
    }
    if data.starts_with(&[0x1f, 0x8b]) {
        parse_report_max(&gunzip(data, max)?, max)
    } else {
        parse_report_max(data, max)
    }
}

/// Finds and parses the report in a report message: the first non-multipart part that is
/// gzip or a JSON object and parses as a report.
pub fn parse_report_message(msg: &[u8]) -> Result<Report, TlsReportError> {
    parse_report_message_max(msg, MAX_REPORT_SIZE)
}

/// [`parse_report_message`] with `max` bytes per report (compressed, and decompressed)
/// instead of [`MAX_REPORT_SIZE`].
pub fn parse_report_message_max(msg: &[u8], max: usize) -> Result<Report, TlsReportError> {
    crate::message::first_part(msg, |c| {
        let t = c.trim_ascii();
        if t.starts_with(b"{") {
            Some(parse_report_file_max(t, max))
        } else if t.starts_with(&[0x1f, 0x8b]) {
            Some(parse_report_file_max(c, max))
        } else {
            None
        }
    })
    .unwrap_or(Err(TlsReportError::NoReport))
}

/// Decompresses one gzip member (checking its CRC), bounding the output by `max`.
fn gunzip(data: &[u8], max: usize) -> Result<Vec<u8>, TlsReportError> {
    crate::codec::gunzip(data, max).map_err(|e| match e {
        crate::codec::CodecError::TooLarge(_) => TlsReportError::TooLarge(max),
        crate::codec::CodecError::Malformed(m) => TlsReportError::Compression(m),
    })
}

/// Which TLSRPT policy a result is reported to (seed 001: DANE results go to the MX host's
/// own record, MTA-STS and no-policy results to the recipient domain's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ReportScope {
    /// The recipient domain (`_smtp._tls.DOMAIN`).
    RecipientDomain,
    /// The MX host (`_smtp._tls.MXHOST`), for DANE.
    MxHost,
}

/// The result of one TLS session (or of a policy fetch) to record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionResult {
    /// Where the result is reported.
    pub scope: ReportScope,
    /// The policy it was obtained under (`policy_domain` is the domain reported to).
    pub policy: Policy,
    /// `None` for success, else the failure (its `failed_session_count` is ignored: one
    /// session).
    pub failure: Option<FailureDetails>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Tally {
    summary: Summary,
    failures: BTreeMap<FailureDetails, u64>,
}

/// Results collected over a reporting period, by policy domain, scope and policy. Pure
/// data: the caller stores it (or the session results) and builds reports once a day.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsResults {
    by_policy: BTreeMap<(String, ReportScope, Policy), Tally>,
}

impl TlsResults {
    /// An empty collection.
    pub fn new() -> TlsResults {
        TlsResults::default()
    }

    /// Records one session. Counts saturate; beyond [`MAX_FAILURE_DETAILS`] distinct
    /// failures per policy a new kind is only counted in the summary.
    pub fn record(&mut self, r: &SessionResult) {
        let key = (
            r.policy.policy_domain.to_ascii_lowercase(),
            r.scope,
            r.policy.clone(),
        );
        let t = self.by_policy.entry(key).or_default();
        match &r.failure {
            None => {
                t.summary.total_successful_session_count =
                    t.summary.total_successful_session_count.saturating_add(1);
            }
            Some(f) => {
                t.summary.total_failure_session_count =
                    t.summary.total_failure_session_count.saturating_add(1);
                let f = FailureDetails {
                    failed_session_count: 0,
                    ..f.clone()
                };
                if let Some(n) = t.failures.get_mut(&f) {
                    *n = n.saturating_add(1);
                } else if t.failures.len() < MAX_FAILURE_DETAILS {
                    t.failures.insert(f, 1);
                }
            }
        }
    }

    /// Adds another collection's counts (e.g. results stored by several processes).
    pub fn merge(&mut self, other: &TlsResults) {
        for (k, o) in &other.by_policy {
            let t = self.by_policy.entry(k.clone()).or_default();
            t.summary.total_successful_session_count = t
                .summary
                .total_successful_session_count
                .saturating_add(o.summary.total_successful_session_count);
            t.summary.total_failure_session_count = t
                .summary
                .total_failure_session_count
                .saturating_add(o.summary.total_failure_session_count);
            for (f, n) in &o.failures {
                if let Some(m) = t.failures.get_mut(f) {
                    *m = m.saturating_add(*n);
                } else if t.failures.len() < MAX_FAILURE_DETAILS {
                    t.failures.insert(f.clone(), *n);
                }
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.by_policy.is_empty()
    }

    /// The (policy domain, scope) pairs that have results: one report each.
    pub fn domains(&self) -> Vec<(String, ReportScope)> {
        let mut out: Vec<(String, ReportScope)> = self
            .by_policy
            .keys()
            .map(|(d, s, _)| (d.clone(), *s))
            .collect();
        out.dedup();
        out
    }

    /// The report for one policy domain and scope (`None` when nothing was recorded
    /// for it). `report_id` should be unique per report.
    pub fn report(
        &self,
        domain: &str,
        scope: ReportScope,
        organization_name: &str,
        contact_info: &str,
        report_id: &str,
        date_range: DateRange,
    ) -> Option<Report> {
        let domain = domain.to_ascii_lowercase();
        let policies: Vec<PolicyResult> = self
            .by_policy
            .iter()
            .filter(|((d, s, _), _)| *d == domain && *s == scope)
            .map(|((_, _, p), t)| PolicyResult {
                policy: p.clone(),
                summary: t.summary,
                failure_details: t
                    .failures
                    .iter()
                    .map(|(f, n)| FailureDetails {
                        failed_session_count: *n,
                        ..f.clone()
                    })
                    .collect(),
            })
            .collect();
        if policies.is_empty() {
            return None;
        }
        Some(Report {
            organization_name: organization_name.to_string(),
            date_range,
            contact_info: contact_info.to_string(),
            report_id: report_id.to_string(),
            policies,
        })
    }
}

/// The UTC day containing `t`, 00:00:00 to 23:59:59 (the usual report period).
pub fn day_range(t: UnixTime) -> DateRange {
    let start = t.0 - t.0.rem_euclid(86_400);
    DateRange {
        start_datetime: UnixTime(start),
        end_datetime: UnixTime(start + 86_399),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A report written after the example in RFC 8460 (section 4.4's example report,
    /// including its `mx-host` given as a string and the failure detail fields).
    const RFC_EXAMPLE: &str = r#"{
     "organization-name": "Company-X",
     "date-range": {
       "start-datetime": "2016-04-01T00:00:00Z",
       "end-datetime": "2016-04-01T23:59:59Z"
     },
     "contact-info": "sts-reporting@company-x.example",
     "report-id": "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
     "policies": [{
       "policy": {
         "policy-type": "sts",
         "policy-string": ["version: STSv1","mode: testing",
               "mx: *.mail.company-y.example","max_age: 86400"],
         "policy-domain": "company-y.example",
         "mx-host": "*.mail.company-y.example"
       },
       "summary": {
         "total-successful-session-count": 5326,
         "total-failure-session-count": 303
       },
       "failure-details": [{
         "result-type": "certificate-expired",
         "sending-mta-ip": "2001:db8:abcd:0012::1",
         "receiving-mx-hostname": "mx1.mail.company-y.example",
         "failed-session-count": 100
       }, {
         "result-type": "starttls-not-supported",
         "sending-mta-ip": "2001:db8:abcd:0013::1",
         "receiving-mx-hostname": "mx2.mail.company-y.example",
         "receiving-ip": "203.0.113.56",
         "failed-session-count": 200,
         "additional-information": "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported"
       }, {
         "result-type": "validation-failure",
         "sending-mta-ip": "198.51.100.62",
         "receiving-ip": "203.0.113.58",
         "receiving-mx-hostname": "mx-backup.mail.company-y.example",
         "failed-session-count": 3,
         "failure-reason-code": "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED"
       }]
     }]
   }"#;

    #[test]
    fn rfc_example_parses() {
        let r = parse_report(RFC_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(r.organization_name, "Company-X");
        assert_eq!(
            r.date_range.start_datetime,
            UnixTime::from_civil(2016, 4, 1, 0, 0, 0).unwrap()
        );
        let p = &r.policies[0];
        assert_eq!(p.policy.policy_type, PolicyType::Sts);
        assert_eq!(p.policy.mx_host, vec!["*.mail.company-y.example"]);
        assert_eq!(p.policy.policy_string.len(), 4);
        assert_eq!(p.summary.total_failure_session_count, 303);
        let types: Vec<&str> = p
            .failure_details
            .iter()
            .map(|f| f.result_type.as_str())
            .collect();
        assert_eq!(
            types,
            [
                "certificate-expired",
                "starttls-not-supported",
                "validation-failure"
            ]
        );
        assert_eq!(
            p.failure_details[1].receiving_ip.as_deref(),
            Some("203.0.113.56")
        );
        assert_eq!(
            p.failure_details[2].failure_reason_code.as_deref(),
            Some("X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED")
        );
        // Round trip through our rendering and through gzip.
        assert_eq!(parse_report(r.to_json().as_bytes()).unwrap(), r);
        assert_eq!(parse_report_file(&r.to_gzip()).unwrap(), r);
        // A smaller bound (`limits.max_tls_report_size`): the JSON, and a gzip that is
        // small but inflates past it, are refused naming the bound.
        let json = r.to_json();
        let n = json.len();
        assert_eq!(parse_report_max(json.as_bytes(), n).unwrap(), r);
        assert!(matches!(
            parse_report_max(json.as_bytes(), n - 1),
            Err(TlsReportError::TooLarge(m)) if m == n - 1
        ));
        let gz = r.to_gzip();
        assert!(gz.len() < n - 1);
        assert!(matches!(
            parse_report_file_max(&gz, n - 1),
            Err(TlsReportError::TooLarge(_))
        ));
        assert_eq!(parse_report_file_max(&gz, n).unwrap(), r);
    }

    /// The report of seed 000's TestTLSReport.
    #[test]
    fn mox_test_report_parses() {
        let s = r#"{"organization-name":"Example.org","date-range":{"start-datetime":"2022-01-07T00:00:00Z","end-datetime":"2022-01-07T23:59:59Z"},"contact-info":"tlsrpt@example.org","report-id":"1","policies":[{"policy":{"policy-type":"no-policy-found","policy-domain":"xmox.nl"},"summary":{"total-successful-session-count":1,"total-failure-session-count":0}}]}"#;
        let r = parse_report(s.as_bytes()).unwrap();
        assert_eq!(r.policies[0].policy.policy_type, PolicyType::NoPolicyFound);
        assert_eq!(r.policies[0].summary.total_successful_session_count, 1);
    }

    #[test]
    fn bad_reports() {
        let cases: &[&str] = &[
            "",
            "[]",
            r#"{"organization-name":"x"}"#,
            // Bad date.
            r#"{"organization-name":"x","date-range":{"start-datetime":"yesterday","end-datetime":"2022-01-07T23:59:59Z"},"report-id":"1","policies":[]}"#,
            // Before 1970 (year 0 with an offset would not render back).
            r#"{"organization-name":"x","date-range":{"start-datetime":"0000-01-01T00:30:00+01:00","end-datetime":"2022-01-07T23:59:59Z"},"report-id":"1","policies":[]}"#,
            // Unknown policy type.
            r#"{"organization-name":"x","date-range":{"start-datetime":"2022-01-07T00:00:00Z","end-datetime":"2022-01-07T23:59:59Z"},"report-id":"1","policies":[{"policy":{"policy-type":"foo","policy-domain":"a"},"summary":{"total-successful-session-count":1,"total-failure-session-count":0}}]}"#,
            // Negative count.
            r#"{"organization-name":"x","date-range":{"start-datetime":"2022-01-07T00:00:00Z","end-datetime":"2022-01-07T23:59:59Z"},"report-id":"1","policies":[{"policy":{"policy-type":"sts","policy-domain":"a"},"summary":{"total-successful-session-count":-1,"total-failure-session-count":0}}]}"#,
        ];
        for c in cases {
            assert!(
                matches!(parse_report(c.as_bytes()), Err(TlsReportError::Json(_))),
                "{c}"
            );
        }
        let mut gz = crate::codec::gzip(RFC_EXAMPLE.as_bytes());
        let n = gz.len();
        gz[n - 6] ^= 1; // CRC.
        assert!(matches!(
            parse_report_file(&gz),
            Err(TlsReportError::Compression(_))
        ));
        assert!(matches!(
            parse_report_file(&[0x1f, 0x8b, 8]),
            Err(TlsReportError::Compression(_))
        ));
    }

    #[test]
    fn unknown_result_type_is_kept() {
        let s = RFC_EXAMPLE.replace("certificate-expired", "new-kind");
        let r = parse_report(s.as_bytes()).unwrap();
        assert_eq!(
            r.policies[0].failure_details[0].result_type,
            ResultType::Other("new-kind".into())
        );
        assert!(r.to_json().contains("\"new-kind\""));
        for (name, t) in RESULT_TYPES.iter() {
            assert_eq!(ResultType::from(name.to_string()), *t);
            assert_eq!(t.as_str(), *name);
        }
    }

    #[test]
    fn report_in_message() {
        let r = parse_report(RFC_EXAMPLE.as_bytes()).unwrap();
        let gz = r.to_gzip();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&gz);
        let msg = format!(
            "From: a@company-x.example\r\nTo: tlsrpt@company-y.example\r\nSubject: {}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=\"tlsrpt\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nA report.\r\n--b\r\nContent-Type: {MEDIA_TYPE_GZIP}\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"{}\"\r\n\r\n{b64}\r\n--b--\r\n",
            r.subject("company-x.example", "company-y.example"),
            r.filename("company-x.example", "company-y.example"),
        );
        assert_eq!(parse_report_message(msg.as_bytes()).unwrap(), r);
        // Plain JSON body, as in seed 000's test.
        let msg = format!("From: a@b\r\nContent-Type: {MEDIA_TYPE_JSON}\r\n\r\n{RFC_EXAMPLE}\r\n");
        assert_eq!(parse_report_message(msg.as_bytes()).unwrap(), r);
        assert!(matches!(
            parse_report_message(b"From: a@b\r\n\r\nhello\r\n"),
            Err(TlsReportError::NoReport)
        ));
        assert_eq!(
            r.filename("company-x.example", "company-y.example"),
            "company-x.example!company-y.example!1459468800!1459555199!5065427c-23d3-47ca-b6e0-946ea0e8c4be.json.gz"
        );
    }

    #[test]
    fn record_forms() {
        let ok: &[(&str, &[&str])] = &[
            (
                "v=TLSRPTv1; rua=mailto:tlsrpt@example.org",
                &["mailto:tlsrpt@example.org"],
            ),
            (
                "v=TLSRPTv1;rua=mailto:a@example.org,https://r.example.org/tlsrpt;",
                &["mailto:a@example.org", "https://r.example.org/tlsrpt"],
            ),
            (
                "v=TLSRPTv1; rua=mailto:a@example.org , mailto:b@example.org; x=1",
                &["mailto:a@example.org", "mailto:b@example.org"],
            ),
        ];
        for (s, want) in ok {
            let r = TlsrptRecord::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let got: Vec<&str> = r.rua.iter().map(|u| u.0.as_str()).collect();
            assert_eq!(got, *want, "{s}");
        }
        let r = TlsrptRecord::parse(ok[1].0).unwrap();
        assert_eq!(r.rua[0].mailto(), Some("a@example.org"));
        assert!(!r.rua[0].is_https());
        assert!(r.rua[1].is_https());
        assert_eq!(r.rua[1].mailto(), None);
        let bad: &[(&str, TlsrptRecordError)] = &[
            ("v=TLSRPTv2; rua=mailto:a@b", TlsrptRecordError::Version),
            ("rua=mailto:a@b; v=TLSRPTv1", TlsrptRecordError::Version),
            ("v=TLSRPTv1; x=1", TlsrptRecordError::MissingRua),
            ("v=TLSRPTv1; rua=", TlsrptRecordError::BadUri(String::new())),
            (
                "v=TLSRPTv1; rua=a@b",
                TlsrptRecordError::BadUri("a@b".into()),
            ),
            (
                "v=TLSRPTv1; rua=mailto:a@b,",
                TlsrptRecordError::BadUri(String::new()),
            ),
            (
                "v=TLSRPTv1; rua=mailto:a@b; rua=mailto:c@d",
                TlsrptRecordError::Duplicate("rua".into()),
            ),
            (
                "v=TLSRPTv1; rua=mailto:a b",
                TlsrptRecordError::BadUri("mailto:a b".into()),
            ),
            ("v=TLSRPTv1", TlsrptRecordError::BadField(String::new())),
        ];
        for (s, e) in bad {
            assert_eq!(TlsrptRecord::parse(s).as_ref(), Err(e), "{s}");
        }
        assert_eq!(
            TlsrptRecord::from_txt(&["v=TLSRPTv1; rua=mailto:a@b", "v=TLSRPTv1; rua=mailto:c@d"]),
            Err(TlsrptRecordError::Multiple(2))
        );
        assert!(TlsrptRecord::from_txt(&["v=spf1", "v=TLSRPTv1; rua=mailto:c@d"]).is_ok());
        assert_eq!(record_name("mx.example."), "_smtp._tls.mx.example");
        let lookup = crate::dns::LookupResult::Records {
            records: vec![crate::dns::Record::Txt(vec![
                b"v=TLSRPTv1; rua=mailto:".to_vec(),
                b"tlsrpt@example.org".to_vec(),
            ])],
            authentic: false,
        };
        let r = TlsrptRecord::from_lookup(&lookup).unwrap();
        assert_eq!(r.rua[0].mailto(), Some("tlsrpt@example.org"));
        assert_eq!(
            TlsrptRecord::from_lookup(&crate::dns::LookupResult::NxDomain),
            None
        );
    }

    #[test]
    fn policy_entries() {
        let p = crate::tlspolicy::StsPolicy::parse(
            b"version: STSv1\nmode: testing\nmx: mx1.example.org\nmx: *.example.net\nmax_age: 86400\n",
        )
        .unwrap();
        let e = Policy::sts("Sts-Testing.example.org", &p);
        assert_eq!(e.policy_domain, "sts-testing.example.org");
        assert_eq!(
            e.policy_string,
            [
                "version: STSv1",
                "mode: testing",
                "mx: mx1.example.org",
                "mx: *.example.net",
                "max_age: 86400"
            ]
        );
        assert_eq!(e.mx_host, ["mx1.example.org", "*.example.net"]);
        let t = Policy::tlsa(
            "mx.dane.example",
            &[crate::tls::Tlsa {
                usage: 3,
                selector: 1,
                matching: 1,
                data: vec![0xab, 0x01],
            }],
        );
        assert_eq!(
            (t.policy_type, t.policy_string.as_slice()),
            (PolicyType::Tlsa, &["3 1 1 ab01".to_string()][..])
        );
        assert_eq!(
            Policy::none("a.example").policy_type.as_str(),
            "no-policy-found"
        );
    }

    fn sts_policy(domain: &str) -> Policy {
        Policy {
            policy_type: PolicyType::Sts,
            policy_string: vec!["version: STSv1".into(), "mode: testing".into()],
            policy_domain: domain.into(),
            mx_host: vec!["mx1.example.org".into()],
        }
    }

    #[test]
    fn collection_and_report() {
        let mut c = TlsResults::new();
        let fail = |t: ResultType| FailureDetails {
            result_type: t,
            sending_mta_ip: Some("127.0.0.1".into()),
            receiving_mx_hostname: Some("mx1.example.org".into()),
            receiving_mx_helo: None,
            receiving_ip: Some("127.10.0.1".into()),
            failed_session_count: 99,
            additional_information: None,
            failure_reason_code: None,
        };
        let sts = sts_policy("sts-testing.example.org");
        let dane = Policy {
            policy_type: PolicyType::Tlsa,
            policy_string: vec!["3 1 1 abcd".into()],
            policy_domain: "mx.dane.example".into(),
            mx_host: vec![],
        };
        for r in [
            SessionResult {
                scope: ReportScope::RecipientDomain,
                policy: sts.clone(),
                failure: None,
            },
            SessionResult {
                scope: ReportScope::RecipientDomain,
                policy: sts.clone(),
                failure: Some(fail(ResultType::CertificateNotTrusted)),
            },
            SessionResult {
                scope: ReportScope::RecipientDomain,
                policy: sts.clone(),
                failure: Some(fail(ResultType::CertificateNotTrusted)),
            },
            SessionResult {
                scope: ReportScope::RecipientDomain,
                policy: sts.clone(),
                failure: Some(fail(ResultType::StarttlsNotSupported)),
            },
            SessionResult {
                scope: ReportScope::MxHost,
                policy: dane.clone(),
                failure: None,
            },
        ] {
            c.record(&r);
        }
        assert_eq!(
            c.domains(),
            vec![
                ("mx.dane.example".to_string(), ReportScope::MxHost),
                (
                    "sts-testing.example.org".to_string(),
                    ReportScope::RecipientDomain
                ),
            ]
        );
        let range = day_range(UnixTime(86_400 * 3 + 500));
        assert_eq!(range.start_datetime, UnixTime(86_400 * 3));
        assert_eq!(range.end_datetime, UnixTime(86_400 * 4 - 1));
        let r = c
            .report(
                "sts-testing.example.org",
                ReportScope::RecipientDomain,
                "rmox.example",
                "postmaster@rmox.example",
                "id1",
                range,
            )
            .unwrap();
        assert_eq!(r.policies.len(), 1);
        let p = &r.policies[0];
        assert_eq!(p.summary.total_successful_session_count, 1);
        assert_eq!(p.summary.total_failure_session_count, 3);
        let counts: Vec<(&str, u64)> = p
            .failure_details
            .iter()
            .map(|f| (f.result_type.as_str(), f.failed_session_count))
            .collect();
        assert!(
            counts.contains(&("certificate-not-trusted", 2)),
            "{counts:?}"
        );
        assert!(
            counts.contains(&("starttls-not-supported", 1)),
            "{counts:?}"
        );
        assert!(c
            .report(
                "sts-testing.example.org",
                ReportScope::MxHost,
                "o",
                "c",
                "i",
                range
            )
            .is_none());
        let h = c
            .report("mx.dane.example", ReportScope::MxHost, "o", "c", "i", range)
            .unwrap();
        assert_eq!(h.policies[0].policy.policy_type, PolicyType::Tlsa);
        // The built report parses back.
        assert_eq!(parse_report(r.to_json().as_bytes()).unwrap(), r);

        // Merging doubles every count.
        let mut m = c.clone();
        m.merge(&c);
        let r2 = m
            .report(
                "sts-testing.example.org",
                ReportScope::RecipientDomain,
                "o",
                "c",
                "i",
                range,
            )
            .unwrap();
        assert_eq!(r2.policies[0].summary.total_failure_session_count, 6);
        assert_eq!(
            r2.policies[0]
                .failure_details
                .iter()
                .map(|f| f.failed_session_count)
                .sum::<u64>(),
            6
        );
    }

    #[test]
    fn failure_details_are_bounded() {
        let mut c = TlsResults::new();
        let pol = sts_policy("a.example");
        for i in 0..MAX_FAILURE_DETAILS + 10 {
            c.record(&SessionResult {
                scope: ReportScope::RecipientDomain,
                policy: pol.clone(),
                failure: Some(FailureDetails {
                    result_type: ResultType::ValidationFailure,
                    sending_mta_ip: None,
                    receiving_mx_hostname: None,
                    receiving_mx_helo: None,
                    receiving_ip: Some(format!("10.0.{}.{}", i / 256, i % 256)),
                    failed_session_count: 1,
                    additional_information: None,
                    failure_reason_code: None,
                }),
            });
        }
        let r = c
            .report(
                "a.example",
                ReportScope::RecipientDomain,
                "o",
                "c",
                "i",
                day_range(UnixTime(0)),
            )
            .unwrap();
        assert_eq!(r.policies[0].failure_details.len(), MAX_FAILURE_DETAILS);
        assert_eq!(
            r.policies[0].summary.total_failure_session_count,
            (MAX_FAILURE_DETAILS + 10) as u64
        );
    }

    fn arb_text() -> impl Strategy<Value = String> {
        "[ -~\u{e9}\u{4e2d}\"\\\\]{0,12}"
    }

    fn arb_failure() -> impl Strategy<Value = FailureDetails> {
        (
            prop_oneof![
                proptest::sample::select(
                    RESULT_TYPES
                        .iter()
                        .map(|(_, t)| t.clone())
                        .collect::<Vec<_>>()
                ),
                "x-[a-z]{1,8}".prop_map(ResultType::Other),
            ],
            proptest::option::of(arb_text()),
            proptest::option::of(arb_text()),
            proptest::option::of(arb_text()),
            0u64..u64::MAX,
            proptest::option::of(arb_text()),
        )
            .prop_map(|(result_type, a, b, c, n, d)| FailureDetails {
                result_type,
                sending_mta_ip: a,
                receiving_mx_hostname: b,
                receiving_mx_helo: None,
                receiving_ip: c,
                failed_session_count: n,
                additional_information: d,
                failure_reason_code: None,
            })
    }

    fn arb_report() -> impl Strategy<Value = Report> {
        let policy = (
            prop_oneof![
                Just(PolicyType::Sts),
                Just(PolicyType::Tlsa),
                Just(PolicyType::NoPolicyFound)
            ],
            proptest::collection::vec(arb_text(), 0..3),
            arb_text(),
            proptest::collection::vec(arb_text(), 0..3),
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(arb_failure(), 0..3),
        )
            .prop_map(|(t, ps, d, mx, s, f, fd)| PolicyResult {
                policy: Policy {
                    policy_type: t,
                    policy_string: ps,
                    policy_domain: d,
                    mx_host: mx,
                },
                summary: Summary {
                    total_successful_session_count: s,
                    total_failure_session_count: f,
                },
                failure_details: fd,
            });
        (
            arb_text(),
            0i64..4_000_000_000,
            0i64..1_000_000,
            arb_text(),
            arb_text(),
            proptest::collection::vec(policy, 0..3),
        )
            .prop_map(|(org, start, len, contact, id, policies)| Report {
                organization_name: org,
                date_range: DateRange {
                    start_datetime: UnixTime(start),
                    end_datetime: UnixTime(start + len),
                },
                contact_info: contact,
                report_id: id,
                policies,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn report_round_trip(r in arb_report()) {
            prop_assert_eq!(parse_report(r.to_json().as_bytes()).unwrap(), r.clone());
            prop_assert_eq!(parse_report_file(&r.to_gzip()).unwrap(), r);
        }

        #[test]
        fn record_round_trip(
            uris in proptest::collection::vec(prop_oneof![
                "mailto:[a-z0-9.]{1,8}@[a-z0-9.]{1,8}",
                "https://[a-z0-9.]{1,8}/[a-z0-9/%?=&]{0,8}",
            ], 1..4),
            ext in proptest::collection::vec(("e[a-z0-9_.-]{0,8}", "[!-:<>-~]{1,10}"), 0..3),
        ) {
            let mut seen = std::collections::HashSet::new();
            let extensions: Vec<_> = ext.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect();
            let r = TlsrptRecord { rua: uris.into_iter().map(ReportUri).collect(), extensions };
            prop_assert_eq!(TlsrptRecord::parse(&r.to_string()), Ok(r));
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,200}", b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = TlsrptRecord::parse(&s);
            let _ = parse_report(s.as_bytes());
            let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
            gz.extend(&b);
            let _ = parse_report_file(&gz);
        }
    }
}
