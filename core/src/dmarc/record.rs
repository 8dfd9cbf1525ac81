//! The DMARC record (RFC 9989 4.7, which obsoletes RFC 7489 and RFC 9091).

use std::fmt;

use crate::dkim::tags::TagError;

/// A requested policy, also the disposition applied to a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Monitor only.
    None,
    /// Treat as suspicious (junk folder).
    Quarantine,
    /// Reject during SMTP.
    Reject,
}

impl Policy {
    /// The record and report name.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Quarantine => "quarantine",
            Policy::Reject => "reject",
        }
    }

    /// Parses a name, case-insensitively.
    pub fn parse(s: &str) -> Option<Policy> {
        [Policy::None, Policy::Quarantine, Policy::Reject]
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// The policy one level milder (`t=y`, RFC 9989 4.7): reject gives quarantine,
    /// quarantine and none give none.
    pub fn milder(self) -> Policy {
        match self {
            Policy::Reject => Policy::Quarantine,
            _ => Policy::None,
        }
    }
}

/// Identifier alignment mode (`adkim`, `aspf`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Align {
    /// `r`: same organizational domain.
    Relaxed,
    /// `s`: exactly the same domain.
    Strict,
}

impl Align {
    /// `r` or `s`.
    pub fn as_str(self) -> &'static str {
        match self {
            Align::Relaxed => "r",
            Align::Strict => "s",
        }
    }

    /// Parses `r` or `s`, case-insensitively.
    pub fn parse(s: &str) -> Option<Align> {
        match s.trim() {
            "r" | "R" => Some(Align::Relaxed),
            "s" | "S" => Some(Align::Strict),
            _ => None,
        }
    }
}

/// The address of a `mailto:` report URI as stored (`?` parameters cut, blanks trimmed;
/// percent-escapes not decoded); `None` for other schemes and for what is no address.
pub fn mailto_address(uri: &str) -> Option<&str> {
    let scheme = uri.get(..7)?;
    if !scheme.eq_ignore_ascii_case("mailto:") {
        return None;
    }
    let addr = uri[7..].split('?').next()?.trim();
    (!addr.is_empty() && addr.contains('@')).then_some(addr)
}

/// A reporting URI, possibly with the size suffix of RFC 7489 (`mailto:a@example.org!10m`).
///
/// RFC 9989 removed the size limit: the suffix is obsolete syntax that is still read, so
/// the URI is used, but it limits nothing (4.8, `obs-dmarc-uri`: "reporters should ignore
/// the obs-dmarc-report-size if it is found in a DMARC Policy Record"; Appendix C.4: "the
/// ability to specify a maximum report size in the DMARC URI has been removed"). The
/// suffix is kept only to show the record as published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportUri {
    /// The URI, e.g. `mailto:dmarc@example.org`.
    pub uri: String,
    /// The number of the obsolete size suffix, if any; never a limit on reports.
    pub max_size: Option<u64>,
    /// The unit of the obsolete size suffix: `k`, `m`, `g`, `t`, or none for bytes.
    pub unit: Option<char>,
}

impl ReportUri {
    /// The address of a `mailto:` URI (percent-escapes and `?` parameters not decoded).
    pub fn mailto(&self) -> Option<&str> {
        mailto_address(&self.uri)
    }

    fn parse(s: &str) -> Option<ReportUri> {
        let s = s.trim();
        let (uri, size) = match s.rsplit_once('!') {
            Some((u, sz)) => (u, Some(sz)),
            None => (s, None),
        };
        let (scheme, rest) = uri.split_once(':')?;
        if scheme.is_empty()
            || rest.is_empty()
            || !scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return None;
        }
        let (max_size, unit) = match size {
            None => (None, None),
            Some(sz) => {
                let digits = sz.bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 || digits > 15 {
                    return None;
                }
                let n: u64 = sz[..digits].parse().ok()?;
                let unit = match &sz[digits..] {
                    "" => None,
                    u if u.len() == 1 && "kmgtKMGT".contains(u) => {
                        u.chars().next().map(|c| c.to_ascii_lowercase())
                    }
                    _ => return None,
                };
                (Some(n), unit)
            }
        };
        Some(ReportUri {
            uri: uri.to_string(),
            max_size,
            unit,
        })
    }
}

impl fmt::Display for ReportUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)?;
        if let Some(n) = self.max_size {
            write!(f, "!{n}")?;
            if let Some(u) = self.unit {
                write!(f, "{u}")?;
            }
        }
        Ok(())
    }
}

/// The `psd=` tag (RFC 9989): whether the record is published for a Public Suffix Domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Psd {
    /// `y`: a Public Suffix Domain; the Organizational Domain is the name one label below.
    Yes,
    /// `n`: not a PSD, and the Organizational Domain of itself and its subdomains.
    No,
    /// `u` (the default): not a PSD; the tree walk decides the Organizational Domain.
    #[default]
    Unknown,
}

impl Psd {
    /// `y`, `n` or `u`.
    pub fn as_str(self) -> &'static str {
        match self {
            Psd::Yes => "y",
            Psd::No => "n",
            Psd::Unknown => "u",
        }
    }

    /// Parses `y`, `n` or `u`, case-insensitively (ABNF literals).
    pub fn parse(s: &str) -> Option<Psd> {
        match s.trim() {
            "y" | "Y" => Some(Psd::Yes),
            "n" | "N" => Some(Psd::No),
            "u" | "U" => Some(Psd::Unknown),
            _ => None,
        }
    }

    /// Whether the tree walk stops at a record with this value (`psd=y` or `psd=n`).
    pub fn stops_walk(self) -> bool {
        self != Psd::Unknown
    }
}

/// A parsed DMARC record (RFC 9989 4.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcRecord {
    /// `p=` (default `none` when absent).
    pub policy: Policy,
    /// `sp=`: for existing subdomains of the Organizational Domain (default `p`).
    pub subdomain_policy: Option<Policy>,
    /// `np=`: for non-existent subdomains (default `sp`, then `p`).
    pub nonexistent_policy: Option<Policy>,
    /// `psd=` (default `u`).
    pub psd: Psd,
    /// `t=y`: test mode, the policy is applied one level milder (default `n`).
    pub testing: bool,
    /// `adkim=` (default relaxed).
    pub adkim: Align,
    /// `aspf=` (default relaxed).
    pub aspf: Align,
    /// `rua=`: aggregate report addresses (malformed URIs left out).
    pub aggregate: Vec<ReportUri>,
    /// `ruf=`: failure report addresses (malformed URIs left out).
    pub failure: Vec<ReportUri>,
    /// `fo=`: failure reporting options, colon-separated (default `0`).
    pub failure_options: String,
}

impl Default for DmarcRecord {
    fn default() -> Self {
        DmarcRecord {
            policy: Policy::None,
            subdomain_policy: None,
            nonexistent_policy: None,
            psd: Psd::Unknown,
            testing: false,
            adkim: Align::Relaxed,
            aspf: Align::Relaxed,
            aggregate: Vec::new(),
            failure: Vec::new(),
            failure_options: "0".into(),
        }
    }
}

/// Why a DMARC record is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The tag list is malformed (a tag given twice).
    #[error("malformed tag list: {0}")]
    Tags(#[from] TagError),
    /// The record does not start with `v=DMARC1` (the record is not a DMARC record).
    #[error("record does not start with v=DMARC1")]
    Version,
    /// `p=` is invalid and there is no valid `rua=` to fall back on.
    #[error("invalid p=")]
    Policy,
    /// `sp=` or `np=` is invalid and there is no valid `rua=` to fall back on.
    #[error("invalid value for {0}=")]
    Value(&'static str),
}

/// The tags of a record, split leniently (RFC 9989 4.7: syntax errors in the remainder of
/// the record are discarded): names are `1*ALPHA`, compared case-insensitively; a part
/// without `=` or with another name is skipped. A tag given twice makes the tag list
/// invalid (the DKIM tag-list rule DMARC records follow).
fn split_tags(txt: &str) -> Result<Vec<(&str, &str)>, RecordError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for part in txt.split(';') {
        let Some((name, value)) = part.split_once('=') else {
            continue;
        };
        let name = name.trim_matches(|c: char| c.is_ascii_whitespace());
        let value = value.trim_matches(|c: char| c.is_ascii_whitespace());
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphabetic()) {
            continue;
        }
        if out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            return Err(RecordError::Tags(TagError::Duplicate(name.to_string())));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// The first tag of `txt` is `v=DMARC1`: the name case-insensitive, the value exact.
fn has_version(txt: &str) -> bool {
    let first = txt.split(';').next().unwrap_or("");
    match first.split_once('=') {
        Some((k, v)) => {
            k.trim_matches(|c: char| c.is_ascii_whitespace())
                .eq_ignore_ascii_case("v")
                && v.trim_matches(|c: char| c.is_ascii_whitespace()) == "DMARC1"
        }
        None => false,
    }
}

/// A valid `fo=` value (RFC 9989 dmarc-fo): colon-separated `0`, `1`, `d`, `s`, in any
/// order, with at most one of `0` and `1` (they exclude each other) and each of `d` and `s`
/// at most once.
fn valid_fo(v: &str) -> bool {
    let opts: Vec<&str> = v.split(':').map(str::trim).collect();
    let count = |o: &str| opts.iter().filter(|x| x.eq_ignore_ascii_case(o)).count();
    opts.iter()
        .all(|o| matches!(*o, "0" | "1" | "d" | "s" | "D" | "S"))
        && count("0") + count("1") <= 1
        && count("d") <= 1
        && count("s") <= 1
}

impl DmarcRecord {
    /// Whether a TXT record is a DMARC record: its first tag is `v=DMARC1` (value case
    /// sensitive, RFC 9989). Others at `_dmarc.` are discarded.
    pub fn is_dmarc(txt: &str) -> bool {
        has_version(txt)
    }

    /// Parses a record (the TXT strings concatenated) as RFC 9989 says: `v=DMARC1` first and
    /// exact; tag names case-insensitive; unknown tags ignored, `pct`, `rf` and `ri`
    /// (historic) among them; a missing `p=` reads as `p=none`; an invalid value of another
    /// tag gives that tag's default and a malformed report URI is left out. An invalid
    /// `p=`, `sp=` or `np=` reads as a record with only `p=none` when `rua=` has a valid
    /// URI, and is an error otherwise (no DMARC processing).
    pub fn parse(txt: &str) -> Result<DmarcRecord, RecordError> {
        let (r, err) = Self::parse_inner(txt)?;
        match err {
            Some(e) => Err(e),
            None => Ok(r),
        }
    }

    /// [`DmarcRecord::parse`], but a record with an invalid policy tag (and no `rua=`) is
    /// returned with the error beside it, so the tree walk still sees its `psd=`.
    pub(crate) fn parse_inner(
        txt: &str,
    ) -> Result<(DmarcRecord, Option<RecordError>), RecordError> {
        if !has_version(txt) {
            return Err(RecordError::Version);
        }
        let tags = split_tags(txt)?;
        let mut r = DmarcRecord::default();
        let mut bad: Option<RecordError> = None;
        let mut policy = |v: &str, what: &'static str| {
            let p = Policy::parse(v);
            if p.is_none() && bad.is_none() {
                bad = Some(if what == "p" {
                    RecordError::Policy
                } else {
                    RecordError::Value(what)
                });
            }
            p
        };
        let mut p = None;
        let mut sp = None;
        let mut np = None;
        for (k, v) in tags.iter().skip(1) {
            match k.to_ascii_lowercase().as_str() {
                "p" => p = policy(v, "p"),
                "sp" => sp = policy(v, "sp"),
                "np" => np = policy(v, "np"),
                "psd" => r.psd = Psd::parse(v).unwrap_or_default(),
                "t" => r.testing = matches!(v.trim(), "y" | "Y"),
                "adkim" => r.adkim = Align::parse(v).unwrap_or(Align::Relaxed),
                "aspf" => r.aspf = Align::parse(v).unwrap_or(Align::Relaxed),
                "rua" => r.aggregate = v.split(',').filter_map(ReportUri::parse).collect(),
                "ruf" => r.failure = v.split(',').filter_map(ReportUri::parse).collect(),
                "fo" if valid_fo(v) => {
                    r.failure_options = v
                        .split(':')
                        .map(|o| o.trim().to_ascii_lowercase())
                        .collect::<Vec<_>>()
                        .join(":")
                }
                _ => {}
            }
        }
        match bad {
            None => {
                r.policy = p.unwrap_or(Policy::None);
                r.subdomain_policy = sp;
                r.nonexistent_policy = np;
                Ok((r, None))
            }
            Some(_) if !r.aggregate.is_empty() => {
                r.policy = Policy::None;
                Ok((r, None))
            }
            Some(e) => Ok((r, Some(e))),
        }
    }
}

impl fmt::Display for DmarcRecord {
    /// The record in canonical form; defaults are left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v=DMARC1; p={}", self.policy.as_str())?;
        if let Some(sp) = self.subdomain_policy {
            write!(f, "; sp={}", sp.as_str())?;
        }
        if let Some(np) = self.nonexistent_policy {
            write!(f, "; np={}", np.as_str())?;
        }
        if self.psd != Psd::Unknown {
            write!(f, "; psd={}", self.psd.as_str())?;
        }
        if self.testing {
            write!(f, "; t=y")?;
        }
        if self.adkim != Align::Relaxed {
            write!(f, "; adkim={}", self.adkim.as_str())?;
        }
        if self.aspf != Align::Relaxed {
            write!(f, "; aspf={}", self.aspf.as_str())?;
        }
        for (name, list) in [("rua", &self.aggregate), ("ruf", &self.failure)] {
            if !list.is_empty() {
                let l: Vec<String> = list.iter().map(ToString::to_string).collect();
                write!(f, "; {name}={}", l.join(","))?;
            }
        }
        if self.failure_options != "0" {
            write!(f, "; fo={}", self.failure_options)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_ok() {
        let r = DmarcRecord::parse("v=DMARC1; p=reject; sp=quarantine; np=reject; psd=n; t=y; adkim=s; aspf=s; rua=mailto:a@example.org!10m,mailto:b@example.org; ruf=mailto:f@example.org!500; fo=1:d; x=ignored").unwrap();
        assert_eq!(r.policy, Policy::Reject);
        assert_eq!(r.subdomain_policy, Some(Policy::Quarantine));
        assert_eq!(r.nonexistent_policy, Some(Policy::Reject));
        assert_eq!(r.psd, Psd::No);
        assert!(r.testing);
        assert_eq!((r.adkim, r.aspf), (Align::Strict, Align::Strict));
        assert_eq!(r.aggregate.len(), 2);
        // The obsolete size suffix is read (the URI is used) and kept as published.
        assert_eq!(r.aggregate[0].mailto(), Some("a@example.org"));
        assert_eq!(
            (r.aggregate[0].max_size, r.aggregate[0].unit),
            (Some(10), Some('m'))
        );
        assert_eq!(r.aggregate[0].to_string(), "mailto:a@example.org!10m");
        let cases = [
            ("mailto:a@example.org", Some("a@example.org")),
            ("MAILTO:a@example.org?subject=x", Some("a@example.org")),
            ("mailto: a@example.org ", Some("a@example.org")),
            ("mailto:", None),
            ("mailto:nobody", None),
            ("https://example.org/r", None),
            ("mail", None),
        ];
        for (uri, want) in cases {
            assert_eq!(mailto_address(uri), want, "{uri}");
        }
        assert_eq!(
            (
                r.failure[0].mailto(),
                r.failure[0].max_size,
                r.failure[0].unit
            ),
            (Some("f@example.org"), Some(500), None)
        );
        assert_eq!(r.failure_options, "1:d");
        let min = DmarcRecord::parse("v=DMARC1;p=none").unwrap();
        assert_eq!(min, DmarcRecord::default());
        assert_eq!(min.to_string(), "v=DMARC1; p=none");
        // No valid p= but a valid rua= reads as p=none.
        let r = DmarcRecord::parse("v=DMARC1; rua=mailto:a@example.org").unwrap();
        assert_eq!(r.policy, Policy::None);
        let r = DmarcRecord::parse("v=DMARC1; p=bogus; rua=mailto:a@example.org").unwrap();
        assert_eq!(r.policy, Policy::None);
        assert!(DmarcRecord::is_dmarc("v=DMARC1; p=none"));
        assert!(DmarcRecord::is_dmarc("V = DMARC1"));
        assert!(!DmarcRecord::is_dmarc("v = dmarc1"));
        assert!(!DmarcRecord::is_dmarc("v=spf1 -all"));
        assert!(!DmarcRecord::is_dmarc("p=none; v=DMARC1"));
    }

    /// RFC 9989 4.7, rule by rule: (record, the record it reads as). Tag names are
    /// case-insensitive, `v=DMARC1` exact and first, unknown and historic tags (`pct`,
    /// `rf`, `ri`) ignored, syntax errors in other tags give their defaults, a missing
    /// `p=` is `p=none`.
    #[test]
    fn rfc9989_table() {
        let d = DmarcRecord::default;
        let reject = || DmarcRecord {
            policy: Policy::Reject,
            ..d()
        };
        let table: Vec<(&str, DmarcRecord)> = vec![
            // A missing p= is p=none.
            ("v=DMARC1", d()),
            ("v=DMARC1;", d()),
            (
                "v=DMARC1; adkim=s",
                DmarcRecord {
                    adkim: Align::Strict,
                    ..d()
                },
            ),
            // Tag names are case-insensitive ABNF literals, and so are the values.
            ("V=DMARC1; P=reject", reject()),
            ("v=DMARC1; p=REJECT", reject()),
            (
                "v=DMARC1;P=Reject;ADKIM=S",
                DmarcRecord {
                    policy: Policy::Reject,
                    adkim: Align::Strict,
                    ..d()
                },
            ),
            (
                "v=DMARC1; p=reject; PSD=Y",
                DmarcRecord {
                    psd: Psd::Yes,
                    ..reject()
                },
            ),
            (
                "v=DMARC1; p=reject; T=Y",
                DmarcRecord {
                    testing: true,
                    ..reject()
                },
            ),
            // Unknown tags ignored; pct, rf and ri are historic: accepted and ignored,
            // whatever their value.
            ("v=DMARC1; p=reject; foo=bar; x=1", reject()),
            ("v=DMARC1; p=reject; pct=50", reject()),
            ("v=DMARC1; p=reject; pct=0", reject()),
            ("v=DMARC1; p=reject; pct=200", reject()),
            ("v=DMARC1; p=reject; rf=iodef; ri=3600", reject()),
            ("v=DMARC1; p=reject; ri=soon", reject()),
            // psd and t and their defaults.
            (
                "v=DMARC1; p=reject; psd=n",
                DmarcRecord {
                    psd: Psd::No,
                    ..reject()
                },
            ),
            ("v=DMARC1; p=reject; psd=u", reject()),
            ("v=DMARC1; p=reject; psd=maybe", reject()),
            ("v=DMARC1; p=reject; t=n", reject()),
            ("v=DMARC1; p=reject; t=yes", reject()),
            // Syntax errors in the other tags give their defaults.
            ("v=DMARC1; p=reject; adkim=x", reject()),
            ("v=DMARC1; p=reject; aspf=", reject()),
            ("v=DMARC1; p=reject; fo=2", reject()),
            ("v=DMARC1; p=reject; fo=0:1", reject()),
            ("v=DMARC1; p=reject; fo=d:d", reject()),
            (
                "v=DMARC1; p=reject; fo=D:s",
                DmarcRecord {
                    failure_options: "d:s".into(),
                    ..reject()
                },
            ),
            // A malformed report URI is left out, the others kept.
            ("v=DMARC1; p=reject; rua=nourl", reject()),
            ("v=DMARC1; p=reject; rua=mailto:a@b!10x", reject()),
            (
                "v=DMARC1; p=reject; rua=nourl, mailto:a@b.example",
                DmarcRecord {
                    aggregate: vec![ReportUri {
                        uri: "mailto:a@b.example".into(),
                        max_size: None,
                        unit: None,
                    }],
                    ..reject()
                },
            ),
            // The RFC 7489 size suffix is obsolete syntax (4.8, obs-dmarc-uri): the URI is
            // read and used, the suffix kept only as published (it limits nothing).
            (
                "v=DMARC1; p=reject; rua=mailto:a@b.example!10m, mailto:c@b.example!100",
                DmarcRecord {
                    aggregate: vec![
                        ReportUri {
                            uri: "mailto:a@b.example".into(),
                            max_size: Some(10),
                            unit: Some('m'),
                        },
                        ReportUri {
                            uri: "mailto:c@b.example".into(),
                            max_size: Some(100),
                            unit: None,
                        },
                    ],
                    ..reject()
                },
            ),
            (
                "v=DMARC1; p=reject; rua=mailto:a@b.example!1K",
                DmarcRecord {
                    aggregate: vec![ReportUri {
                        uri: "mailto:a@b.example".into(),
                        max_size: Some(1),
                        unit: Some('k'),
                    }],
                    ..reject()
                },
            ),
            // Parts that are no tag are discarded.
            ("v=DMARC1; p=reject; junk", reject()),
            ("v=DMARC1;; p=reject;;", reject()),
            ("v=DMARC1; p=reject; 1x=y; _=z", reject()),
            // An invalid policy tag with a valid rua reads as p=none with that rua.
            (
                "v=DMARC1; p=reject; sp=bogus; rua=mailto:a@b.example",
                DmarcRecord {
                    aggregate: vec![ReportUri {
                        uri: "mailto:a@b.example".into(),
                        max_size: None,
                        unit: None,
                    }],
                    ..d()
                },
            ),
        ];
        for (input, want) in table {
            assert_eq!(DmarcRecord::parse(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn parse_errors() {
        let table: &[(&str, RecordError)] = &[
            // v=DMARC1 first and exact, or the record is ignored.
            ("p=none; v=DMARC1", RecordError::Version),
            ("v=DMARC2; p=none", RecordError::Version),
            ("v=dmarc1; p=none", RecordError::Version),
            ("v=DMARC1 p=none", RecordError::Version),
            ("", RecordError::Version),
            // An invalid policy tag without a valid rua: no DMARC processing.
            ("v=DMARC1; p=bogus", RecordError::Policy),
            ("v=DMARC1; p=", RecordError::Policy),
            ("v=DMARC1; p=none; sp=bogus", RecordError::Value("sp")),
            ("v=DMARC1; p=none; np=x", RecordError::Value("np")),
            (
                "v=DMARC1; p=none; np=x; rua=nourl",
                RecordError::Value("np"),
            ),
            (
                "v=DMARC1; p=none; p=reject",
                RecordError::Tags(TagError::Duplicate("p".into())),
            ),
            (
                "v=DMARC1; p=none; P=reject",
                RecordError::Tags(TagError::Duplicate("P".into())),
            ),
        ];
        for (input, want) in table {
            assert_eq!(DmarcRecord::parse(input).unwrap_err(), *want, "{input}");
        }
        // The tree walk still sees psd= of a record with an invalid policy.
        let (r, e) = DmarcRecord::parse_inner("v=DMARC1; p=bogus; psd=y").unwrap();
        assert_eq!((r.psd, e), (Psd::Yes, Some(RecordError::Policy)));
    }

    fn arb_policy() -> impl Strategy<Value = Policy> {
        prop_oneof![
            Just(Policy::None),
            Just(Policy::Quarantine),
            Just(Policy::Reject)
        ]
    }

    fn arb_align() -> impl Strategy<Value = Align> {
        prop_oneof![Just(Align::Relaxed), Just(Align::Strict)]
    }

    fn arb_psd() -> impl Strategy<Value = Psd> {
        prop_oneof![Just(Psd::Yes), Just(Psd::No), Just(Psd::Unknown)]
    }

    fn arb_uri() -> impl Strategy<Value = ReportUri> {
        (
            "[a-z]{1,8}@[a-z]{1,8}\\.example",
            proptest::option::of(1u64..100_000),
            proptest::option::of(prop_oneof![Just('k'), Just('m'), Just('g'), Just('t')]),
        )
            .prop_map(|(a, n, u)| ReportUri {
                uri: format!("mailto:{a}"),
                max_size: n,
                unit: n.and(u),
            })
    }

    /// Randomly changes the case of ASCII letters in tag names (not in `DMARC1`).
    fn recase(s: &str, flips: &[bool]) -> String {
        let mut out = String::new();
        for (i, part) in s.split("; ").enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            let (name, value) = part.split_once('=').unwrap();
            for (j, c) in name.chars().enumerate() {
                if flips
                    .get((i * 7 + j) % flips.len().max(1))
                    .copied()
                    .unwrap_or(false)
                {
                    out.push(c.to_ascii_uppercase());
                } else {
                    out.push(c);
                }
            }
            out.push('=');
            out.push_str(value);
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn render_parse_round_trip(
            p in arb_policy(),
            sp in proptest::option::of(arb_policy()),
            np in proptest::option::of(arb_policy()),
            psd in arb_psd(),
            testing in any::<bool>(),
            adkim in arb_align(),
            aspf in arb_align(),
            rua in proptest::collection::vec(arb_uri(), 0..3),
            ruf in proptest::collection::vec(arb_uri(), 0..2),
            fo in prop_oneof![Just("0"), Just("1"), Just("d:s"), Just("1:d:s"), Just("s")],
            flips in proptest::collection::vec(any::<bool>(), 1..16),
            extra in proptest::option::of("[a-z]{3,6}=[a-z0-9]{0,5}"),
        ) {
            let r = DmarcRecord {
                policy: p, subdomain_policy: sp, nonexistent_policy: np, psd, testing,
                adkim, aspf, aggregate: rua, failure: ruf, failure_options: fo.to_string(),
            };
            let text = r.to_string();
            prop_assert_eq!(DmarcRecord::parse(&text).unwrap(), r.clone());
            // Tag names in any case, and an unknown tag, read the same.
            let mut other = recase(&text, &flips);
            if let Some(x) = extra {
                let name = x.split('=').next().unwrap_or("");
                if !["psd", "adkim", "aspf", "rua", "ruf"].contains(&name) {
                    other.push_str("; ");
                    other.push_str(&x);
                }
            }
            prop_assert_eq!(DmarcRecord::parse(&other).unwrap(), r);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = DmarcRecord::parse(&s);
            let _ = DmarcRecord::parse(&format!("v=DMARC1; {s}"));
        }
    }
}
