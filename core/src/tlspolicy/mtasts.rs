//! MTA-STS (RFC 8461): the `_mta-sts` TXT record, the policy file, MX host patterns, and
//! the decision which policy a delivery uses given the cache, the record and a fetch.
//!
//! Nothing here fetches: [`decide`] says when a fetch of [`policy_url`] is needed and
//! what to do with its outcome. The fetch itself (HTTPS with WebPKI verification of
//! `mta-sts.DOMAIN`, no redirects, at most [`MAX_POLICY_SIZE`] bytes) is the caller's effect.

use std::fmt;

use crate::time::UnixTime;

/// Largest policy body accepted, in bytes (64 KiB, RFC 8461 3.3: senders may limit the
/// size; a fetch that returns more is a fetch error, not a truncated policy).
pub const MAX_POLICY_SIZE: usize = 64 * 1024;

/// Largest `max_age` honoured, in seconds (31557600, about a year; RFC 8461 3.2). A larger
/// value is clamped to this.
pub const MAX_MAX_AGE: u64 = 31_557_600;

/// Largest number of `mx` lines kept from one policy; more make the policy invalid.
pub const MAX_MX_PATTERNS: usize = 1000;

/// The `_mta-sts` TXT record name for a domain.
pub fn record_name(domain: &str) -> String {
    format!("_mta-sts.{}", domain.trim_end_matches('.'))
}

/// The well-known HTTPS URL of a domain's policy (RFC 8461 3.3).
pub fn policy_url(domain: &str) -> String {
    format!(
        "https://mta-sts.{}/.well-known/mta-sts.txt",
        domain.trim_end_matches('.')
    )
}

/// Why an `_mta-sts` TXT record was not accepted. A domain whose record does not parse has
/// no MTA-STS policy (RFC 8461 3.1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StsRecordError {
    /// The record does not start with `v=STSv1`.
    #[error("mta-sts record: not v=STSv1")]
    Version,
    /// There is no `id` field.
    #[error("mta-sts record: missing id")]
    MissingId,
    /// The `id` is not 1 to 32 letters and digits.
    #[error("mta-sts record: bad id {0:?}")]
    BadId(String),
    /// A field appears twice.
    #[error("mta-sts record: duplicate field {0:?}")]
    Duplicate(String),
    /// A field is not `name=value` with a valid name and value.
    #[error("mta-sts record: bad field {0:?}")]
    BadField(String),
    /// More than one TXT record starts with `v=STSv1`.
    #[error("mta-sts record: {0} records")]
    Multiple(usize),
    /// No TXT record starts with `v=STSv1`.
    #[error("mta-sts record: none")]
    None,
}

/// A parsed `_mta-sts` TXT record: `v=STSv1; id=20160831085700Z;`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsRecord {
    /// The policy id; a change tells senders to fetch the policy again.
    pub id: String,
    /// Extension fields (`name=value`), in order, kept for rendering.
    pub extensions: Vec<(String, String)>,
}

pub(crate) fn is_ext_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

pub(crate) fn is_ext_value(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|c| (0x21..=0x7e).contains(&c) && c != b';' && c != b'=')
}

/// Of the TXT records (each one's strings concatenated), the one whose first field is
/// `version`; `Err(n)` when there are `n` != 1 such records (RFC 8461 3.1, RFC 8460 3:
/// others are ignored, exactly one must remain). Shared with the TLSRPT record.
pub(crate) fn pick_record<'a, S: AsRef<str>>(
    txts: &'a [S],
    version: &str,
) -> Result<&'a str, usize> {
    let ours: Vec<&str> = txts
        .iter()
        .map(AsRef::as_ref)
        .filter(|t| {
            t.split(';')
                .next()
                .is_some_and(|v| v.trim_matches([' ', '\t']) == version)
        })
        .collect();
    match ours.as_slice() {
        [one] => Ok(one),
        many => Err(many.len()),
    }
}

/// Splits `v=X; a=b; c=d;` into fields, checking the version and the field syntax. Shared
/// with the TLSRPT record, which has the same shape.
pub(crate) fn split_fields<'a>(
    s: &'a str,
    version: &str,
) -> Result<Vec<(&'a str, &'a str)>, FieldError> {
    let is_wsp = |c: char| c == ' ' || c == '\t';
    let mut parts = s.split(';').map(|p| p.trim_matches(is_wsp));
    let first = parts.next().unwrap_or_default();
    if first != version {
        return Err(FieldError::Version);
    }
    let rest: Vec<&str> = parts.collect();
    let mut fields = Vec::new();
    for (i, p) in rest.iter().enumerate() {
        if p.is_empty() {
            // Only a trailing separator may be empty.
            if i + 1 == rest.len() {
                continue;
            }
            return Err(FieldError::Bad(String::new()));
        }
        let Some((k, v)) = p.split_once('=') else {
            return Err(FieldError::Bad(p.to_string()));
        };
        fields.push((k, v));
    }
    if fields.is_empty() {
        return Err(FieldError::Bad(String::new()));
    }
    Ok(fields)
}

/// A field-level problem of a `v=...;` record.
#[derive(Debug)]
pub(crate) enum FieldError {
    Version,
    Bad(String),
}

impl StsRecord {
    /// Parses one TXT record's text (its strings concatenated).
    pub fn parse(s: &str) -> Result<StsRecord, StsRecordError> {
        let fields = split_fields(s, "v=STSv1").map_err(|e| match e {
            FieldError::Version => StsRecordError::Version,
            FieldError::Bad(f) => StsRecordError::BadField(f),
        })?;
        let mut id = None;
        let mut extensions: Vec<(String, String)> = Vec::new();
        for (k, v) in fields {
            if k == "id" {
                if id.is_some() {
                    return Err(StsRecordError::Duplicate(k.into()));
                }
                if v.is_empty() || v.len() > 32 || !v.bytes().all(|c| c.is_ascii_alphanumeric()) {
                    return Err(StsRecordError::BadId(v.into()));
                }
                id = Some(v.to_string());
            } else {
                if !is_ext_name(k) || !is_ext_value(v) {
                    return Err(StsRecordError::BadField(format!("{k}={v}")));
                }
                if extensions.iter().any(|(n, _)| n == k) {
                    return Err(StsRecordError::Duplicate(k.into()));
                }
                extensions.push((k.into(), v.into()));
            }
        }
        let id = id.ok_or(StsRecordError::MissingId)?;
        Ok(StsRecord { id, extensions })
    }

    /// Picks the record from all TXT records at `_mta-sts.DOMAIN` (each one's strings
    /// concatenated): records not starting with `v=STSv1` are ignored; exactly one must
    /// remain and parse (RFC 8461 3.1).
    pub fn from_txt<S: AsRef<str>>(txts: &[S]) -> Result<StsRecord, StsRecordError> {
        match pick_record(txts, "v=STSv1") {
            Ok(one) => StsRecord::parse(one),
            Err(0) => Err(StsRecordError::None),
            Err(n) => Err(StsRecordError::Multiple(n)),
        }
    }
}

impl fmt::Display for StsRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v=STSv1; id={}", self.id)?;
        for (k, v) in &self.extensions {
            write!(f, "; {k}={v}")?;
        }
        Ok(())
    }
}

/// A policy's mode (RFC 8461 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// MX hosts that do not match or do not verify are not delivered to.
    Enforce,
    /// Failures are reported (TLSRPT) but delivery goes on.
    Testing,
    /// The domain has no active policy (used to withdraw one).
    None,
}

impl Mode {
    /// The policy file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// Why a policy file was not accepted. A fetched policy that does not parse is a fetch
/// failure (RFC 8460 result type `sts-policy-invalid`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StsPolicyError {
    /// The body is larger than [`MAX_POLICY_SIZE`].
    #[error("mta-sts policy: larger than {MAX_POLICY_SIZE} bytes")]
    TooLarge,
    /// The body is not UTF-8.
    #[error("mta-sts policy: not utf-8")]
    NotUtf8,
    /// A line is not `key: value`.
    #[error("mta-sts policy: bad line {0:?}")]
    BadLine(String),
    /// A required field (`version`, `mode`, `max_age`) is missing.
    #[error("mta-sts policy: missing {0}")]
    Missing(&'static str),
    /// `version` is not `STSv1`.
    #[error("mta-sts policy: version {0:?}")]
    Version(String),
    /// `mode` is not enforce, testing or none.
    #[error("mta-sts policy: mode {0:?}")]
    Mode(String),
    /// `max_age` is not 1 to 10 digits.
    #[error("mta-sts policy: max_age {0:?}")]
    MaxAge(String),
    /// An `mx` value is not a host name or `*.` followed by one.
    #[error("mta-sts policy: mx {0:?}")]
    Mx(String),
    /// `version`, `mode` or `max_age` appears more than once.
    #[error("mta-sts policy: duplicate {0}")]
    Duplicate(&'static str),
    /// Mode enforce or testing with no `mx` line.
    #[error("mta-sts policy: no mx")]
    NoMx,
    /// More than [`MAX_MX_PATTERNS`] `mx` lines.
    #[error("mta-sts policy: more than {MAX_MX_PATTERNS} mx lines")]
    TooManyMx,
}

/// One `mx` pattern: a host name, or `*.` and a domain matching exactly one more label.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MxPattern {
    /// Whether the pattern starts with `*.`.
    pub wildcard: bool,
    /// The host name (after `*.` for a wildcard), lower-case ASCII, no trailing dot.
    pub domain: String,
}

fn normalize_host(s: &str) -> Option<String> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return None;
    }
    let ascii = if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(s).ok()?
    };
    // Checked again after IDNA: the A-label form may be longer.
    let ok = ascii.len() <= 253
        && ascii.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        });
    ok.then_some(ascii)
}

impl MxPattern {
    /// Parses an `mx` value: `mail.example.com` or `*.example.com` (RFC 8461 3.2, 4.1). A
    /// `*` anywhere else is refused.
    pub fn parse(s: &str) -> Option<MxPattern> {
        let (wildcard, rest) = match s.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let domain = normalize_host(rest)?;
        Some(MxPattern { wildcard, domain })
    }

    /// Whether `host` (an MX host name as published, before any CNAME) matches: exactly,
    /// case-insensitively and ignoring a trailing dot; a wildcard matches one label more
    /// and not the domain itself (RFC 8461 4.1).
    pub fn matches(&self, host: &str) -> bool {
        let Some(host) = normalize_host(host) else {
            return false;
        };
        if !self.wildcard {
            return host == self.domain;
        }
        match host.split_once('.') {
            Some((first, rest)) => !first.is_empty() && rest == self.domain,
            None => false,
        }
    }
}

impl fmt::Display for MxPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.domain)
    }
}

/// A parsed policy file (RFC 8461 3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StsPolicy {
    /// The mode.
    pub mode: Mode,
    /// How long the policy may be cached, in seconds (at most [`MAX_MAX_AGE`]).
    pub max_age: u64,
    /// The MX patterns; empty only for mode none.
    pub mx: Vec<MxPattern>,
    /// Unknown `key: value` lines, in order, kept for reports and rendering.
    pub extensions: Vec<(String, String)>,
}

impl StsPolicy {
    /// Parses a policy body. Lines end in CRLF or LF; keys are case-sensitive as in the
    /// RFC; whitespace around values is trimmed; unknown keys are kept in `extensions`;
    /// `version`, `mode` and `max_age` are required, appear once, and `mx` at least once
    /// unless the mode is none. `max_age` above [`MAX_MAX_AGE`] is clamped to it.
    pub fn parse(body: &[u8]) -> Result<StsPolicy, StsPolicyError> {
        if body.len() > MAX_POLICY_SIZE {
            return Err(StsPolicyError::TooLarge);
        }
        let text = std::str::from_utf8(body).map_err(|_| StsPolicyError::NotUtf8)?;
        let (mut version, mut mode, mut max_age) = (None, None, None);
        let mut mx = Vec::new();
        let mut extensions = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                return Err(StsPolicyError::BadLine(line.chars().take(100).collect()));
            };
            let (k, v) = (k.trim_matches([' ', '\t']), v.trim_matches([' ', '\t']));
            let once = |seen: bool, name| {
                if seen {
                    Err(StsPolicyError::Duplicate(name))
                } else {
                    Ok(())
                }
            };
            match k {
                "version" => {
                    once(version.is_some(), "version")?;
                    if v != "STSv1" {
                        return Err(StsPolicyError::Version(v.into()));
                    }
                    version = Some(());
                }
                "mode" => {
                    once(mode.is_some(), "mode")?;
                    mode = Some(match v {
                        "enforce" => Mode::Enforce,
                        "testing" => Mode::Testing,
                        "none" => Mode::None,
                        _ => return Err(StsPolicyError::Mode(v.into())),
                    });
                }
                "max_age" => {
                    once(max_age.is_some(), "max_age")?;
                    if v.is_empty() || v.len() > 10 || !v.bytes().all(|c| c.is_ascii_digit()) {
                        return Err(StsPolicyError::MaxAge(v.into()));
                    }
                    let n: u64 = v.parse().map_err(|_| StsPolicyError::MaxAge(v.into()))?;
                    max_age = Some(n.min(MAX_MAX_AGE));
                }
                "mx" => {
                    if mx.len() >= MAX_MX_PATTERNS {
                        return Err(StsPolicyError::TooManyMx);
                    }
                    mx.push(MxPattern::parse(v).ok_or_else(|| StsPolicyError::Mx(v.into()))?);
                }
                _ => {
                    if k.is_empty() {
                        return Err(StsPolicyError::BadLine(line.chars().take(100).collect()));
                    }
                    extensions.push((k.to_string(), v.to_string()));
                }
            }
        }
        version.ok_or(StsPolicyError::Missing("version"))?;
        let mode = mode.ok_or(StsPolicyError::Missing("mode"))?;
        let max_age = max_age.ok_or(StsPolicyError::Missing("max_age"))?;
        if mx.is_empty() && mode != Mode::None {
            return Err(StsPolicyError::NoMx);
        }
        Ok(StsPolicy {
            mode,
            max_age,
            mx,
            extensions,
        })
    }

    /// The policy file text, CRLF line endings (for serving our own policy).
    pub fn to_text(&self) -> String {
        self.lines().iter().map(|l| format!("{l}\r\n")).collect()
    }

    /// The policy as lines without line endings (the RFC 8460 `policy-string`).
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![
            "version: STSv1".to_string(),
            format!("mode: {}", self.mode.as_str()),
        ];
        out.extend(self.mx.iter().map(|m| format!("mx: {m}")));
        out.push(format!("max_age: {}", self.max_age));
        out.extend(self.extensions.iter().map(|(k, v)| format!("{k}: {v}")));
        out
    }

    /// Whether some `mx` pattern matches `host` (the MX host name as published).
    pub fn matches_mx(&self, host: &str) -> bool {
        self.mx.iter().any(|p| p.matches(host))
    }
}

/// A policy as cached: with the record id it was fetched for and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedPolicy {
    /// The `_mta-sts` record id current when the policy was fetched.
    pub id: String,
    /// The policy.
    pub policy: StsPolicy,
    /// When it was fetched.
    pub fetched: UnixTime,
}

impl CachedPolicy {
    /// When the cached policy expires (`fetched + max_age`).
    pub fn expires(&self) -> UnixTime {
        UnixTime(
            self.fetched
                .0
                .saturating_add(i64::try_from(self.policy.max_age).unwrap_or(i64::MAX)),
        )
    }

    /// Whether the policy is still valid at `now` (strictly before expiry).
    pub fn is_valid(&self, now: UnixTime) -> bool {
        now < self.expires()
    }
}

/// The answer for the `_mta-sts` TXT record of the recipient domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordAnswer {
    /// One valid record.
    Present(StsRecord),
    /// No (valid) record: NXDOMAIN, NODATA, or records that do not parse
    /// ([`StsRecord::from_txt`] failed).
    Absent,
    /// The lookup failed temporarily (SERVFAIL, timeout).
    TempError,
}

impl RecordAnswer {
    /// The answer from a TXT lookup of [`record_name`]: each record's strings
    /// concatenated, then [`StsRecord::from_txt`]; NXDOMAIN, NODATA and records that do not
    /// parse are [`RecordAnswer::Absent`], a temporary failure is
    /// [`RecordAnswer::TempError`].
    pub fn from_lookup(r: &crate::dns::LookupResult) -> RecordAnswer {
        use crate::dns::{LookupResult, Record};
        match r {
            LookupResult::TempFail(_) => RecordAnswer::TempError,
            LookupResult::NxDomain | LookupResult::NoData => RecordAnswer::Absent,
            LookupResult::Records { records, .. } => {
                let txts: Vec<String> = records
                    .iter()
                    .filter_map(|r| match r {
                        Record::Txt(parts) => {
                            Some(String::from_utf8_lossy(&parts.concat()).into_owned())
                        }
                        _ => None,
                    })
                    .collect();
                match StsRecord::from_txt(&txts) {
                    Ok(rec) => RecordAnswer::Present(rec),
                    Err(_) => RecordAnswer::Absent,
                }
            }
        }
    }
}

/// Checks a policy fetch's HTTP response (RFC 8461 3.3): status 200 (a redirect is not
/// followed: an error), a `Content-Type` of `text/plain` when present (parameters such as
/// charset ignored), a body of at most [`MAX_POLICY_SIZE`], then parses the policy.
pub fn policy_from_response(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<StsPolicy, FetchError> {
    if status != 200 {
        return Err(FetchError::Fetch(format!("http status {status}")));
    }
    if let Some(ct) = content_type {
        let media = ct.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("text/plain") {
            return Err(FetchError::Fetch(format!("content type {media:?}")));
        }
    }
    if body.len() > MAX_POLICY_SIZE {
        return Err(FetchError::Fetch(format!(
            "policy larger than {MAX_POLICY_SIZE} bytes"
        )));
    }
    Ok(StsPolicy::parse(body)?)
}

/// Why a policy fetch failed; each maps to an RFC 8460 result type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The HTTPS server's certificate did not verify (WebPKI) for `mta-sts.DOMAIN`
    /// (`sts-webpki-invalid`).
    #[error("mta-sts fetch: certificate: {0}")]
    WebPki(String),
    /// The connection, HTTP status, content type, size or a timeout failed
    /// (`sts-policy-fetch-error`).
    #[error("mta-sts fetch: {0}")]
    Fetch(String),
    /// The body did not parse (`sts-policy-invalid`).
    #[error("mta-sts fetch: {0}")]
    Invalid(#[from] StsPolicyError),
}

impl FetchError {
    /// The RFC 8460 result type for this failure.
    pub fn result_type(&self) -> super::tlsrpt::ResultType {
        use super::tlsrpt::ResultType;
        match self {
            FetchError::WebPki(_) => ResultType::StsWebpkiInvalid,
            FetchError::Fetch(_) => ResultType::StsPolicyFetchError,
            FetchError::Invalid(_) => ResultType::StsPolicyInvalid,
        }
    }
}

/// What to do with the cache after a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheAction {
    /// Leave the cache as it is.
    Keep,
    /// Store (replace) this entry.
    Store(CachedPolicy),
    /// Remove the cached entry.
    Delete,
}

/// Where the policy of a decision comes from (for logs and reports).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicySource {
    /// The cache, current for the record's id.
    Cache,
    /// A fresh fetch.
    Fetched,
    /// The cache, because the record lookup failed temporarily.
    CacheRecordTempError,
    /// The cache, because the record is gone but the policy has not expired (RFC 8461
    /// 8.3: a domain withdraws a policy by publishing mode none first).
    CacheRecordGone,
    /// The cache, because the refresh fetch failed (RFC 8461 5.1).
    CacheFetchFailed(FetchError),
    /// No policy: no record and nothing valid cached.
    NoRecord,
    /// No policy: the record lookup failed and nothing valid cached.
    RecordTempError,
    /// No policy: the fetch failed and nothing valid cached; delivery goes on as if the
    /// domain had no MTA-STS (RFC 8461 5.1); the failure is reported.
    FetchFailed(FetchError),
}

/// A policy decision: the policy to use and the cache update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The policy to apply (`None`: no MTA-STS for this delivery; a mode none policy is
    /// also given as `None`).
    pub policy: Option<CachedPolicy>,
    /// The cache update.
    pub cache: CacheAction,
    /// Why.
    pub source: PolicySource,
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StsDecision {
    /// Fetch [`policy_url`] now, then call [`decide`] again with the result.
    Fetch,
    /// Use this policy and update the cache so.
    Apply(Box<Applied>),
}

/// Decides which MTA-STS policy applies to a delivery (RFC 8461 5.1, 10.2).
///
/// * `cached`: the cached entry, valid or expired.
/// * `record`: the `_mta-sts` record answer.
/// * `fetched`: `None` before a fetch; the fetch's outcome after [`StsDecision::Fetch`].
///
/// Rules: a valid cached policy whose id equals the record's is used without a fetch. A
/// different id, an expired or missing cache with a record present: fetch; a fetched
/// policy replaces the cache; a failed fetch keeps a valid cached policy (and uses it),
/// otherwise no policy. Record gone: a valid cached policy is still used, except one of
/// mode none, which is deleted (mox behaviour); an expired one is deleted. Record lookup
/// failed temporarily: a valid cached policy is used, else no policy.
pub fn decide(
    cached: Option<&CachedPolicy>,
    record: &RecordAnswer,
    fetched: Option<Result<StsPolicy, FetchError>>,
    now: UnixTime,
) -> StsDecision {
    let valid = cached.filter(|c| c.is_valid(now));
    let apply = |c: Option<&CachedPolicy>, cache, source| {
        StsDecision::Apply(Box::new(Applied {
            policy: c.filter(|c| c.policy.mode != Mode::None).cloned(),
            cache,
            source,
        }))
    };
    match record {
        RecordAnswer::TempError => match valid {
            Some(c) => apply(
                Some(c),
                CacheAction::Keep,
                PolicySource::CacheRecordTempError,
            ),
            None => apply(None, CacheAction::Keep, PolicySource::RecordTempError),
        },
        RecordAnswer::Absent => match (cached, valid) {
            (_, Some(c)) if c.policy.mode != Mode::None => {
                apply(Some(c), CacheAction::Keep, PolicySource::CacheRecordGone)
            }
            (Some(_), _) => apply(None, CacheAction::Delete, PolicySource::NoRecord),
            (None, _) => apply(None, CacheAction::Keep, PolicySource::NoRecord),
        },
        RecordAnswer::Present(rec) => {
            if let Some(c) = valid {
                if c.id == rec.id && fetched.is_none() {
                    return apply(Some(c), CacheAction::Keep, PolicySource::Cache);
                }
            }
            match fetched {
                None => StsDecision::Fetch,
                Some(Ok(policy)) => {
                    let entry = CachedPolicy {
                        id: rec.id.clone(),
                        policy,
                        fetched: now,
                    };
                    apply(
                        Some(&entry),
                        CacheAction::Store(entry.clone()),
                        PolicySource::Fetched,
                    )
                }
                Some(Err(e)) => match valid {
                    Some(c) => apply(
                        Some(c),
                        CacheAction::Keep,
                        PolicySource::CacheFetchFailed(e),
                    ),
                    None => apply(
                        None,
                        if cached.is_some() {
                            CacheAction::Delete
                        } else {
                            CacheAction::Keep
                        },
                        PolicySource::FetchFailed(e),
                    ),
                },
            }
        }
    }
}

/// Whether a cached policy should be refreshed in the background at `now`: the record
/// should be looked up again (and the policy fetched when its id changed) once
/// `refresh_after` seconds passed since the fetch, or when less than a day of validity is
/// left (RFC 8461 10.2 suggests refreshing well before expiry).
pub fn needs_refresh(cached: &CachedPolicy, refresh_after: u64, now: UnixTime) -> bool {
    let since = now.0.saturating_sub(cached.fetched.0);
    let left = cached.expires().0.saturating_sub(now.0);
    since >= i64::try_from(refresh_after).unwrap_or(i64::MAX) || left < 86_400
}

/// A cached policy is refreshed in the background once this long passed since its fetch
/// ([`needs_refresh`]'s `refresh_after`; 12 hours).
pub const REFRESH_AFTER_SECS: u64 = 12 * 3600;

/// Only policies a delivery used (or, never used, that were fetched) within this long are
/// refreshed in the background (30 days); others are left to expire.
pub const REFRESH_RECENT_USE_SECS: u64 = 30 * 86_400;

/// Whether the background refresher should look at a cached policy at `now`: used
/// recently ([`REFRESH_RECENT_USE_SECS`]; `last_use` `None`: never used, its fetch time
/// counts) and [`needs_refresh`] with [`REFRESH_AFTER_SECS`].
pub fn refresh_due(cached: &CachedPolicy, last_use: Option<UnixTime>, now: UnixTime) -> bool {
    let used = last_use.unwrap_or(cached.fetched);
    let recent =
        now.0.saturating_sub(used.0) <= i64::try_from(REFRESH_RECENT_USE_SECS).unwrap_or(i64::MAX);
    recent && needs_refresh(cached, REFRESH_AFTER_SECS, now)
}

/// A background refresh of a cached policy (RFC 8461 5.1, 10.2), outside any delivery:
/// [`decide`] with the cached policy, except that a policy whose record id did not change
/// but that has less than a day of validity left is fetched again (to extend it). Call
/// with `fetched` `None` after the record lookup; on [`StsDecision::Fetch`], fetch and call
/// again; apply the [`Applied::cache`] update (the policy itself is not used).
pub fn refresh(
    cached: &CachedPolicy,
    record: &RecordAnswer,
    fetched: Option<Result<StsPolicy, FetchError>>,
    now: UnixTime,
) -> StsDecision {
    if fetched.is_none() {
        if let RecordAnswer::Present(rec) = record {
            let left = cached.expires().0.saturating_sub(now.0);
            if rec.id == cached.id && cached.is_valid(now) && left < 86_400 {
                return StsDecision::Fetch;
            }
        }
    }
    decide(Some(cached), record, fetched, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn record_forms() {
        let ok: &[(&str, &str, usize)] = &[
            ("v=STSv1; id=20160831085700Z;", "20160831085700Z", 0),
            ("v=STSv1;id=1", "1", 0),
            ("v=STSv1 ;\tid=abc ; ", "abc", 0),
            ("v=STSv1; id=a1; ext=val;", "a1", 1),
            (
                "v=STSv1; id=abcdefghijklmnopqrstuvwxyz012345",
                "abcdefghijklmnopqrstuvwxyz012345",
                0,
            ),
        ];
        for (s, id, n) in ok {
            let r = StsRecord::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(r.id, *id, "{s}");
            assert_eq!(r.extensions.len(), *n, "{s}");
        }
        let bad: &[(&str, StsRecordError)] = &[
            ("v=STSv2; id=1", StsRecordError::Version),
            ("v=stsv1; id=1", StsRecordError::Version),
            ("id=1; v=STSv1", StsRecordError::Version),
            ("v=STSv1", StsRecordError::BadField(String::new())),
            ("v=STSv1;", StsRecordError::BadField(String::new())),
            ("v=STSv1; x=1", StsRecordError::MissingId),
            ("v=STSv1; id=", StsRecordError::BadId(String::new())),
            ("v=STSv1; id=a-b", StsRecordError::BadId("a-b".into())),
            (
                "v=STSv1; id=abcdefghijklmnopqrstuvwxyz0123456",
                StsRecordError::BadId("abcdefghijklmnopqrstuvwxyz0123456".into()),
            ),
            (
                "v=STSv1; id=1; id=2",
                StsRecordError::Duplicate("id".into()),
            ),
            (
                "v=STSv1; id=1;; x=2",
                StsRecordError::BadField(String::new()),
            ),
            (
                "v=STSv1; id=1; junk",
                StsRecordError::BadField("junk".into()),
            ),
            (
                "v=STSv1; id=1; -x=1",
                StsRecordError::BadField("-x=1".into()),
            ),
        ];
        for (s, e) in bad {
            assert_eq!(StsRecord::parse(s).as_ref(), Err(e), "{s}");
        }
    }

    #[test]
    fn record_from_several_txt() {
        assert_eq!(
            StsRecord::from_txt(&["v=spf1 -all", "v=STSv1; id=x"]).map(|r| r.id),
            Ok("x".to_string())
        );
        assert_eq!(
            StsRecord::from_txt(&["v=STSv1; id=x", "v=STSv1; id=y"]),
            Err(StsRecordError::Multiple(2))
        );
        assert_eq!(StsRecord::from_txt(&["hello"]), Err(StsRecordError::None));
        assert_eq!(StsRecord::from_txt::<&str>(&[]), Err(StsRecordError::None));
        assert_eq!(record_name("example.org."), "_mta-sts.example.org");
        assert_eq!(
            policy_url("example.org"),
            "https://mta-sts.example.org/.well-known/mta-sts.txt"
        );
    }

    #[test]
    fn policy_forms() {
        let p = StsPolicy::parse(
            b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(p.max_age, 604800);
        assert_eq!(p.mx.len(), 3);
        assert!(p.mx[1].wildcard);
        // LF only, unknown key, whitespace, no final newline.
        let p = StsPolicy::parse(
            b"version:STSv1\nmode:  testing\nfoo: bar\nmx: MX.Example.ORG.\nmax_age: 99999999999",
        )
        .unwrap_err();
        assert_eq!(p, StsPolicyError::MaxAge("99999999999".into()));
        let p = StsPolicy::parse(
            b"version:STSv1\nmode:  testing\nfoo: bar\nmx: MX.Example.ORG.\nmax_age: 9999999999",
        )
        .unwrap();
        assert_eq!(p.mode, Mode::Testing);
        assert_eq!(p.max_age, MAX_MAX_AGE);
        assert_eq!(p.mx[0].domain, "mx.example.org");
        assert_eq!(p.extensions, vec![("foo".to_string(), "bar".to_string())]);
        // Mode none needs no mx.
        let p = StsPolicy::parse(b"version: STSv1\nmode: none\nmax_age: 0\n").unwrap();
        assert_eq!((p.mode, p.max_age, p.mx.len()), (Mode::None, 0, 0));

        let bad: &[(&[u8], StsPolicyError)] = &[
            (
                b"mode: enforce\nmx: a.b\nmax_age: 1",
                StsPolicyError::Missing("version"),
            ),
            (
                b"version: STSv1\nmx: a.b\nmax_age: 1",
                StsPolicyError::Missing("mode"),
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.b",
                StsPolicyError::Missing("max_age"),
            ),
            (
                b"version: STSv1\nmode: enforce\nmax_age: 1",
                StsPolicyError::NoMx,
            ),
            (
                b"version: STSv1\nmode: testing\nmax_age: 1",
                StsPolicyError::NoMx,
            ),
            (
                b"version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1",
                StsPolicyError::Version("STSv2".into()),
            ),
            (
                b"version: STSv1\nmode: Enforce\nmx: a.b\nmax_age: 1",
                StsPolicyError::Mode("Enforce".into()),
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1",
                StsPolicyError::MaxAge("-1".into()),
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: ",
                StsPolicyError::MaxAge(String::new()),
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1",
                StsPolicyError::Mx("a.*.b".into()),
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: *\nmax_age: 1",
                StsPolicyError::Mx("*".into()),
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: \nmax_age: 1",
                StsPolicyError::Mx(String::new()),
            ),
            (
                b"version: STSv1\nmode: enforce\nmode: enforce\nmx: a.b\nmax_age: 1",
                StsPolicyError::Duplicate("mode"),
            ),
            (
                b"version: STSv1\nversion: STSv1\nmode: enforce\nmx: a.b\nmax_age: 1",
                StsPolicyError::Duplicate("version"),
            ),
            (
                b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 1\nmax_age: 2",
                StsPolicyError::Duplicate("max_age"),
            ),
            (
                b"version: STSv1\nmode enforce\nmx: a.b\nmax_age: 1",
                StsPolicyError::BadLine("mode enforce".into()),
            ),
            (
                b"version: STSv1\n: x\nmode: enforce\nmx: a.b\nmax_age: 1",
                StsPolicyError::BadLine(": x".into()),
            ),
            (b"\xff", StsPolicyError::NotUtf8),
        ];
        for (body, e) in bad {
            assert_eq!(
                StsPolicy::parse(body).as_ref(),
                Err(e),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let big = vec![b'a'; MAX_POLICY_SIZE + 1];
        assert_eq!(StsPolicy::parse(&big), Err(StsPolicyError::TooLarge));
    }

    #[test]
    fn mx_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            ("mail.example.com", "mail.example.com", true),
            ("mail.example.com", "MAIL.example.com.", true),
            ("mail.example.com", "mail2.example.com", false),
            ("mail.example.com", "x.mail.example.com", false),
            ("*.example.com", "mx1.example.com", true),
            ("*.example.com", "MX1.Example.Com.", true),
            ("*.example.com", "example.com", false),
            ("*.example.com", "a.b.example.com", false),
            ("*.example.com", "mx1.example.net", false),
            ("*.example.com", ".example.com", false),
            ("*.mail.example.com", "mx.mail.example.com", true),
            ("mail.example.com", "", false),
        ];
        for (pat, host, want) in cases {
            let p = MxPattern::parse(pat).unwrap();
            assert_eq!(p.matches(host), *want, "{pat} vs {host}");
        }
        for bad in ["", "*", "*.", "a..b", "a.*.b", "**.b", "a b.c"] {
            assert_eq!(MxPattern::parse(bad), None, "{bad:?}");
        }
    }

    fn policy(mode: Mode, max_age: u64) -> StsPolicy {
        StsPolicy {
            mode,
            max_age,
            mx: vec![MxPattern::parse("*.example.org").unwrap()],
            extensions: vec![],
        }
    }

    fn cached(id: &str, mode: Mode, fetched: i64, max_age: u64) -> CachedPolicy {
        CachedPolicy {
            id: id.into(),
            policy: policy(mode, max_age),
            fetched: UnixTime(fetched),
        }
    }

    fn present(id: &str) -> RecordAnswer {
        RecordAnswer::Present(StsRecord {
            id: id.into(),
            extensions: vec![],
        })
    }

    /// One row per rule of [`decide`]: (name, cached, record, fetched, now, expected
    /// policy id or none, cache action kind, source kind).
    #[test]
    fn decisions() {
        let fetch_err = || FetchError::Fetch("connection refused".into());
        let new_policy = || policy(Mode::Enforce, 86400);
        let c1 = cached("1", Mode::Enforce, 1000, 3600);
        let c1_none = cached("1", Mode::None, 1000, 3600);
        type Row<'a> = (
            &'a str,
            Option<&'a CachedPolicy>,
            RecordAnswer,
            Option<Result<StsPolicy, FetchError>>,
            i64,
            Option<&'a str>,
            &'a str,
        );
        let rows: Vec<Row> = vec![
            (
                "no cache, record, not fetched",
                None,
                present("1"),
                None,
                2000,
                None,
                "fetch",
            ),
            (
                "no cache, record, fetched",
                None,
                present("2"),
                Some(Ok(new_policy())),
                2000,
                Some("2"),
                "store",
            ),
            (
                "no cache, record, fetch failed",
                None,
                present("2"),
                Some(Err(fetch_err())),
                2000,
                None,
                "keep",
            ),
            (
                "valid cache, same id",
                Some(&c1),
                present("1"),
                None,
                2000,
                Some("1"),
                "keep",
            ),
            (
                "valid cache, new id",
                Some(&c1),
                present("2"),
                None,
                2000,
                None,
                "fetch",
            ),
            (
                "valid cache, new id, fetched",
                Some(&c1),
                present("2"),
                Some(Ok(new_policy())),
                2000,
                Some("2"),
                "store",
            ),
            (
                "valid cache, new id, fetch failed: keep cached",
                Some(&c1),
                present("2"),
                Some(Err(fetch_err())),
                2000,
                Some("1"),
                "keep",
            ),
            (
                "expired cache, same id: refetch",
                Some(&c1),
                present("1"),
                None,
                4600,
                None,
                "fetch",
            ),
            (
                "expired cache, fetch failed: drop",
                Some(&c1),
                present("1"),
                Some(Err(fetch_err())),
                4600,
                None,
                "delete",
            ),
            (
                "record gone, valid cache still used",
                Some(&c1),
                RecordAnswer::Absent,
                None,
                2000,
                Some("1"),
                "keep",
            ),
            (
                "record gone, none policy dropped",
                Some(&c1_none),
                RecordAnswer::Absent,
                None,
                2000,
                None,
                "delete",
            ),
            (
                "record gone, expired cache dropped",
                Some(&c1),
                RecordAnswer::Absent,
                None,
                5000,
                None,
                "delete",
            ),
            (
                "record gone, nothing cached",
                None,
                RecordAnswer::Absent,
                None,
                5000,
                None,
                "keep",
            ),
            (
                "record temp error, valid cache",
                Some(&c1),
                RecordAnswer::TempError,
                None,
                2000,
                Some("1"),
                "keep",
            ),
            (
                "record temp error, expired cache",
                Some(&c1),
                RecordAnswer::TempError,
                None,
                5000,
                None,
                "keep",
            ),
            (
                "record temp error, no cache",
                None,
                RecordAnswer::TempError,
                None,
                5000,
                None,
                "keep",
            ),
            (
                "none policy cached, same id: applies as no policy",
                Some(&c1_none),
                present("1"),
                None,
                2000,
                None,
                "keep",
            ),
        ];
        for (name, cached, record, fetched, now, want_id, want_action) in rows {
            let d = decide(cached, &record, fetched, UnixTime(now));
            match (d, want_action) {
                (StsDecision::Fetch, "fetch") => {}
                (StsDecision::Apply(a), action) => {
                    let Applied { policy, cache, .. } = *a;
                    assert_eq!(policy.as_ref().map(|p| p.id.as_str()), want_id, "{name}");
                    let got = match cache {
                        CacheAction::Keep => "keep",
                        CacheAction::Store(ref c) => {
                            assert_eq!(c.fetched, UnixTime(now), "{name}");
                            "store"
                        }
                        CacheAction::Delete => "delete",
                    };
                    assert_eq!(got, action, "{name}");
                }
                (d, _) => panic!("{name}: {d:?}"),
            }
        }
    }

    #[test]
    fn fetch_failure_source_names_the_result_type() {
        let d = decide(
            None,
            &present("1"),
            Some(Err(FetchError::WebPki("expired".into()))),
            UnixTime(0),
        );
        let StsDecision::Apply(a) = d else {
            panic!("{d:?}")
        };
        let PolicySource::FetchFailed(e) = a.source else {
            panic!("{a:?}")
        };
        assert_eq!(e.result_type().as_str(), "sts-webpki-invalid");
    }

    #[test]
    fn record_answers_from_lookups() {
        use crate::dns::{LookupResult, Record};
        let txt =
            |parts: &[&str]| Record::Txt(parts.iter().map(|p| p.as_bytes().to_vec()).collect());
        let recs = |r: Vec<Record>| LookupResult::Records {
            records: r,
            authentic: false,
        };
        let rows: Vec<(&str, LookupResult, RecordAnswer)> = vec![
            ("nxdomain", LookupResult::NxDomain, RecordAnswer::Absent),
            ("nodata", LookupResult::NoData, RecordAnswer::Absent),
            (
                "servfail",
                LookupResult::TempFail("x".into()),
                RecordAnswer::TempError,
            ),
            (
                "split strings joined",
                recs(vec![txt(&["v=STSv1; ", "id=abc"])]),
                present("abc"),
            ),
            (
                "other TXT ignored",
                recs(vec![txt(&["hello"]), txt(&["v=STSv1; id=1"])]),
                present("1"),
            ),
            (
                "two records: none",
                recs(vec![txt(&["v=STSv1; id=1"]), txt(&["v=STSv1; id=2"])]),
                RecordAnswer::Absent,
            ),
            (
                "bad record: none",
                recs(vec![txt(&["v=STSv1; id=-"])]),
                RecordAnswer::Absent,
            ),
        ];
        for (name, lookup, want) in rows {
            assert_eq!(RecordAnswer::from_lookup(&lookup), want, "{name}");
        }
    }

    #[test]
    fn fetch_responses() {
        let body = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmax_age: 86400\r\n";
        type Row<'a> = (u16, Option<&'a str>, &'a [u8], Result<(), &'a str>);
        let rows: Vec<Row> = vec![
            (200, Some("text/plain"), body, Ok(())),
            (200, Some("Text/Plain; charset=utf-8"), body, Ok(())),
            (200, None, body, Ok(())),
            (301, Some("text/plain"), body, Err("sts-policy-fetch-error")),
            (404, Some("text/plain"), body, Err("sts-policy-fetch-error")),
            (200, Some("text/html"), body, Err("sts-policy-fetch-error")),
            (
                200,
                Some("text/plain"),
                b"version: STSv1\n",
                Err("sts-policy-invalid"),
            ),
        ];
        for (status, ct, body, want) in rows {
            let got = policy_from_response(status, ct, body);
            let got = got
                .map(|_| ())
                .map_err(|e| e.result_type().as_str().to_string());
            assert_eq!(got, want.map_err(str::to_string), "{status} {ct:?}");
        }
        let big = vec![b'a'; MAX_POLICY_SIZE + 1];
        assert!(matches!(
            policy_from_response(200, None, &big),
            Err(FetchError::Fetch(_))
        ));
    }

    /// The background refresher's choices: which cached policies it looks at, and what a
    /// changed id, an unchanged one, a near expiry, a failed fetch and a gone record do.
    #[test]
    fn background_refresh() {
        let day = 86_400;
        let c = cached("1", Mode::Enforce, 0, 30 * day as u64);
        // Fresh: not yet; after 12 hours: yes; not used for over 30 days: no.
        assert!(!refresh_due(&c, None, UnixTime(3600)));
        assert!(refresh_due(&c, None, UnixTime(13 * 3600)));
        assert!(refresh_due(&c, Some(UnixTime(day)), UnixTime(2 * day)));
        let old = cached("1", Mode::Enforce, 0, 400 * day as u64);
        assert!(!refresh_due(&old, Some(UnixTime(day)), UnixTime(40 * day)));
        assert!(refresh_due(
            &old,
            Some(UnixTime(35 * day)),
            UnixTime(40 * day)
        ));
        let now = UnixTime(2 * day);
        // Same id, long valid: kept, no fetch.
        match super::refresh(&c, &present("1"), None, now) {
            StsDecision::Apply(a) => assert_eq!(a.cache, CacheAction::Keep),
            d => panic!("{d:?}"),
        }
        // Changed id: fetch; the new policy is stored under the new id.
        assert_eq!(
            super::refresh(&c, &present("2"), None, now),
            StsDecision::Fetch
        );
        let newp = policy(Mode::Testing, 86_400 * 7);
        match super::refresh(&c, &present("2"), Some(Ok(newp.clone())), now) {
            StsDecision::Apply(a) => assert_eq!(
                a.cache,
                CacheAction::Store(CachedPolicy {
                    id: "2".into(),
                    policy: newp,
                    fetched: now,
                })
            ),
            d => panic!("{d:?}"),
        }
        // The fetch failed: the valid cached policy stays.
        match super::refresh(
            &c,
            &present("2"),
            Some(Err(FetchError::Fetch("x".into()))),
            now,
        ) {
            StsDecision::Apply(a) => assert_eq!(a.cache, CacheAction::Keep),
            d => panic!("{d:?}"),
        }
        // Same id, under a day left: fetched again.
        let near = UnixTime(30 * day - 3600);
        assert_eq!(
            super::refresh(&c, &present("1"), None, near),
            StsDecision::Fetch
        );
        // Record gone: a mode none policy is dropped; others kept while valid.
        let none = cached("1", Mode::None, 0, 30 * day as u64);
        match super::refresh(&none, &RecordAnswer::Absent, None, now) {
            StsDecision::Apply(a) => assert_eq!(a.cache, CacheAction::Delete),
            d => panic!("{d:?}"),
        }
        match super::refresh(&c, &RecordAnswer::TempError, None, now) {
            StsDecision::Apply(a) => assert_eq!(a.cache, CacheAction::Keep),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn refresh() {
        let c = cached("1", Mode::Enforce, 0, 30 * 86400);
        assert!(!needs_refresh(&c, 86400, UnixTime(3600)));
        assert!(needs_refresh(&c, 86400, UnixTime(86400)));
        let short = cached("1", Mode::Enforce, 0, 3600);
        assert!(needs_refresh(&short, 86400, UnixTime(1)));
        assert_eq!(short.expires(), UnixTime(3600));
        assert!(short.is_valid(UnixTime(3599)));
        assert!(!short.is_valid(UnixTime(3600)));
    }

    fn arb_label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?"
    }

    fn arb_pattern() -> impl Strategy<Value = MxPattern> {
        (any::<bool>(), proptest::collection::vec(arb_label(), 1..4)).prop_map(|(w, l)| MxPattern {
            wildcard: w,
            domain: l.join("."),
        })
    }

    fn arb_policy() -> impl Strategy<Value = StsPolicy> {
        (
            prop_oneof![Just(Mode::Enforce), Just(Mode::Testing), Just(Mode::None)],
            0..=MAX_MAX_AGE,
            proptest::collection::vec(arb_pattern(), 1..5),
            proptest::collection::vec(("x[a-z_]{0,6}", "[!-~]([ -~]{0,10}[!-~])?"), 0..3),
        )
            .prop_map(|(mode, max_age, mx, extensions)| StsPolicy {
                mode,
                max_age,
                mx,
                extensions,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn policy_round_trip(p in arb_policy(), lf in any::<bool>()) {
            let text = p.to_text();
            let text = if lf { text.replace("\r\n", "\n") } else { text };
            prop_assert_eq!(StsPolicy::parse(text.as_bytes()), Ok(p));
        }

        #[test]
        fn record_round_trip(id in "[a-zA-Z0-9]{1,32}", ext in proptest::collection::vec(("e[a-z0-9_.-]{0,8}", "[!-:<>-~]{1,10}"), 0..3)) {
            let mut seen = std::collections::HashSet::new();
            let extensions: Vec<_> = ext.into_iter().filter(|(k, _)| seen.insert(k.clone())).collect();
            let r = StsRecord { id, extensions };
            prop_assert_eq!(StsRecord::parse(&r.to_string()), Ok(r));
        }

        /// Whatever parses renders back to the same policy or record (the fuzz targets'
        /// property, on inputs built from plausible fragments).
        #[test]
        fn anything_parsed_round_trips(
            lines in proptest::collection::vec(prop_oneof![
                Just("version: STSv1".to_string()),
                Just("mode: enforce".to_string()),
                Just("mode: none".to_string()),
                "max_age:[ \t]{0,2}0{0,3}[0-9]{1,10}",
                "mx:[ \t]{0,2}(\\*\\.)?[a-zA-Z0-9_\u{e9}-]{1,5}(\\.[a-zA-Z0-9-]{1,5}){0,2}\\.?",
                "[ -~\r\u{b}\u{a0}]{0,12}",
            ], 0..8),
            crlf in any::<bool>(),
            rec in "v=STSv1[ \t;]{0,3}(id=[a-z0-9]{0,3}|[a-z]{1,3}=[!-~]{0,3})?([ \t]*;[ \t]*[a-z]{1,3}=[!-~]{0,3}){0,3}[; ]{0,2}",
        ) {
            let body = lines.join(if crlf { "\r\n" } else { "\n" });
            if let Ok(p) = StsPolicy::parse(body.as_bytes()) {
                prop_assert_eq!(StsPolicy::parse(p.to_text().as_bytes()), Ok(p));
            }
            if let Ok(r) = StsRecord::parse(&rec) {
                prop_assert_eq!(StsRecord::parse(&r.to_string()), Ok(r));
            }
        }

        #[test]
        fn parsers_never_panic(s in "\\PC{0,200}") {
            let _ = StsRecord::parse(&s);
            let _ = StsPolicy::parse(s.as_bytes());
        }

        #[test]
        fn wildcard_matches_exactly_one_label(p in arb_pattern(), l in arb_label()) {
            let host = format!("{l}.{}", p.domain);
            prop_assert_eq!(p.matches(&host), p.wildcard);
            prop_assert_eq!(p.matches(&p.domain), !p.wildcard);
        }
    }
}
