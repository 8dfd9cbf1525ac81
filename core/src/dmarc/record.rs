//! The DMARC record (RFC 7489 6.3; `np` from RFC 9091).

use std::fmt;

use crate::dkim::tags::{parse_tags, TagError};

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

    /// The next milder policy (pct sampling, RFC 7489 6.6.4).
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

/// A reporting URI with an optional size limit (`mailto:a@example.org!10m`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportUri {
    /// The URI, e.g. `mailto:dmarc@example.org`.
    pub uri: String,
    /// The size limit number, if any.
    pub max_size: Option<u64>,
    /// The unit of the limit: `k`, `m`, `g`, `t`, or none for bytes.
    pub unit: Option<char>,
}

impl ReportUri {
    /// The size limit in bytes, if any.
    pub fn max_bytes(&self) -> Option<u64> {
        let shift = match self.unit {
            None => 0,
            Some('k') => 10,
            Some('m') => 20,
            Some('g') => 30,
            Some(_) => 40,
        };
        self.max_size.map(|n| n.saturating_mul(1u64 << shift))
    }

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

/// A parsed DMARC record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmarcRecord {
    /// `p=`.
    pub policy: Policy,
    /// `sp=`: for subdomains of the organizational domain (default `p`).
    pub subdomain_policy: Option<Policy>,
    /// `np=`: for non-existent subdomains (RFC 9091; default `sp`).
    pub nonexistent_policy: Option<Policy>,
    /// `pct=`: 0 to 100 (default 100).
    pub percentage: u8,
    /// `adkim=` (default relaxed).
    pub adkim: Align,
    /// `aspf=` (default relaxed).
    pub aspf: Align,
    /// `rua=`: aggregate report addresses.
    pub aggregate: Vec<ReportUri>,
    /// `ruf=`: failure report addresses.
    pub failure: Vec<ReportUri>,
    /// `fo=`: failure reporting options, colon-separated (default `0`).
    pub failure_options: String,
    /// `rf=`: failure report format (default `afrf`).
    pub report_format: String,
    /// `ri=`: aggregate report interval in seconds (default 86400).
    pub report_interval: u32,
}

impl Default for DmarcRecord {
    fn default() -> Self {
        DmarcRecord {
            policy: Policy::None,
            subdomain_policy: None,
            nonexistent_policy: None,
            percentage: 100,
            adkim: Align::Relaxed,
            aspf: Align::Relaxed,
            aggregate: Vec::new(),
            failure: Vec::new(),
            failure_options: "0".into(),
            report_format: "afrf".into(),
            report_interval: 86_400,
        }
    }
}

/// Why a DMARC record is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The tag list is malformed.
    #[error("malformed tag list: {0}")]
    Tags(#[from] TagError),
    /// The record does not start with `v=DMARC1`.
    #[error("record does not start with v=DMARC1")]
    Version,
    /// `p=` is missing or invalid and there is no valid `rua=` to fall back on.
    #[error("missing or invalid p=")]
    Policy,
    /// A tag has an invalid value.
    #[error("invalid value for {0}=")]
    Value(&'static str),
}

impl DmarcRecord {
    /// Whether a TXT record looks like a DMARC record (to pick records at `_dmarc.`).
    pub fn is_dmarc(txt: &str) -> bool {
        let first = txt.split(';').next().unwrap_or("");
        match first.split_once('=') {
            Some((k, v)) => k.trim() == "v" && v.trim().eq_ignore_ascii_case("DMARC1"),
            None => false,
        }
    }

    /// Parses a record (the TXT strings concatenated). Unknown tags are ignored. A missing
    /// or invalid `p=` with a valid `rua=` reads as `p=none` (RFC 7489 6.6.3).
    pub fn parse(txt: &str) -> Result<DmarcRecord, RecordError> {
        let tags = parse_tags(txt)?;
        match tags.first() {
            Some((k, v)) if k.eq_ignore_ascii_case("v") && v.eq_ignore_ascii_case("DMARC1") => {}
            _ => return Err(RecordError::Version),
        }
        let mut r = DmarcRecord::default();
        let mut policy = None;
        let mut bad_sp = false;
        for (k, v) in tags.iter().skip(1) {
            let k = k.to_ascii_lowercase();
            match k.as_str() {
                "p" => policy = Policy::parse(v),
                "sp" => {
                    r.subdomain_policy = Policy::parse(v);
                    bad_sp = r.subdomain_policy.is_none();
                }
                "np" => {
                    r.nonexistent_policy = Some(Policy::parse(v).ok_or(RecordError::Value("np"))?)
                }
                "pct" => {
                    r.percentage = v
                        .parse::<u8>()
                        .ok()
                        .filter(|p| *p <= 100)
                        .ok_or(RecordError::Value("pct"))?
                }
                "adkim" => r.adkim = Align::parse(v).ok_or(RecordError::Value("adkim"))?,
                "aspf" => r.aspf = Align::parse(v).ok_or(RecordError::Value("aspf"))?,
                "rua" | "ruf" => {
                    let list = v
                        .split(',')
                        .map(ReportUri::parse)
                        .collect::<Option<Vec<_>>>()
                        .ok_or(if k == "rua" {
                            RecordError::Value("rua")
                        } else {
                            RecordError::Value("ruf")
                        })?;
                    if k == "rua" {
                        r.aggregate = list;
                    } else {
                        r.failure = list;
                    }
                }
                "fo" => {
                    let ok = v
                        .split(':')
                        .all(|o| matches!(o.trim(), "0" | "1" | "d" | "s"));
                    if !ok {
                        return Err(RecordError::Value("fo"));
                    }
                    r.failure_options = v.split(':').map(str::trim).collect::<Vec<_>>().join(":");
                }
                "rf" => r.report_format = v.to_string(),
                "ri" => r.report_interval = v.parse().map_err(|_| RecordError::Value("ri"))?,
                _ => {}
            }
        }
        match policy {
            Some(p) if !bad_sp => r.policy = p,
            _ if !r.aggregate.is_empty() => {
                r.policy = Policy::None;
                r.subdomain_policy = None;
            }
            _ if policy.is_some() => return Err(RecordError::Value("sp")),
            _ => return Err(RecordError::Policy),
        }
        Ok(r)
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
        if self.percentage != 100 {
            write!(f, "; pct={}", self.percentage)?;
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
        if self.report_format != "afrf" {
            write!(f, "; rf={}", self.report_format)?;
        }
        if self.report_interval != 86_400 {
            write!(f, "; ri={}", self.report_interval)?;
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
        let r = DmarcRecord::parse("v=DMARC1; p=reject; sp=quarantine; np=reject; pct=50; adkim=s; aspf=s; rua=mailto:a@example.org!10m,mailto:b@example.org; ruf=mailto:f@example.org!500; fo=1:d; rf=afrf; ri=3600; x=ignored").unwrap();
        assert_eq!(r.policy, Policy::Reject);
        assert_eq!(r.subdomain_policy, Some(Policy::Quarantine));
        assert_eq!(r.nonexistent_policy, Some(Policy::Reject));
        assert_eq!(r.percentage, 50);
        assert_eq!((r.adkim, r.aspf), (Align::Strict, Align::Strict));
        assert_eq!(r.aggregate.len(), 2);
        assert_eq!(r.aggregate[0].max_bytes(), Some(10 << 20));
        assert_eq!(r.aggregate[0].mailto(), Some("a@example.org"));
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
        assert_eq!(r.failure[0].max_bytes(), Some(500));
        assert_eq!(r.failure_options, "1:d");
        assert_eq!(r.report_interval, 3600);
        let min = DmarcRecord::parse("v=DMARC1;p=none").unwrap();
        assert_eq!(min, DmarcRecord::default());
        assert_eq!(min.to_string(), "v=DMARC1; p=none");
        // RFC 7489 6.6.3: no valid p= but a valid rua= reads as p=none.
        let r = DmarcRecord::parse("v=DMARC1; rua=mailto:a@example.org").unwrap();
        assert_eq!(r.policy, Policy::None);
        let r = DmarcRecord::parse("v=DMARC1; p=bogus; rua=mailto:a@example.org").unwrap();
        assert_eq!(r.policy, Policy::None);
        assert!(DmarcRecord::is_dmarc("v=DMARC1; p=none"));
        assert!(DmarcRecord::is_dmarc("v = dmarc1"));
        assert!(!DmarcRecord::is_dmarc("v=spf1 -all"));
    }

    #[test]
    fn parse_errors() {
        let table: &[(&str, RecordError)] = &[
            ("p=none; v=DMARC1", RecordError::Version),
            ("v=DMARC2; p=none", RecordError::Version),
            ("", RecordError::Version),
            ("v=DMARC1", RecordError::Policy),
            ("v=DMARC1; p=bogus", RecordError::Policy),
            ("v=DMARC1; p=none; sp=bogus", RecordError::Value("sp")),
            ("v=DMARC1; p=none; np=x", RecordError::Value("np")),
            ("v=DMARC1; p=none; pct=101", RecordError::Value("pct")),
            ("v=DMARC1; p=none; pct=-1", RecordError::Value("pct")),
            ("v=DMARC1; p=none; adkim=x", RecordError::Value("adkim")),
            ("v=DMARC1; p=none; aspf=", RecordError::Value("aspf")),
            ("v=DMARC1; p=none; rua=nourl", RecordError::Value("rua")),
            (
                "v=DMARC1; p=none; rua=mailto:a@b!10x",
                RecordError::Value("rua"),
            ),
            (
                "v=DMARC1; p=none; ruf=mailto:a@b!",
                RecordError::Value("ruf"),
            ),
            ("v=DMARC1; p=none; fo=2", RecordError::Value("fo")),
            ("v=DMARC1; p=none; ri=soon", RecordError::Value("ri")),
            (
                "v=DMARC1; p=none; p=reject",
                RecordError::Tags(TagError::Duplicate("p".into())),
            ),
        ];
        for (input, want) in table {
            assert_eq!(DmarcRecord::parse(input).unwrap_err(), *want, "{input}");
        }
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn render_parse_round_trip(
            p in arb_policy(),
            sp in proptest::option::of(arb_policy()),
            np in proptest::option::of(arb_policy()),
            pct in 0u8..=100,
            adkim in arb_align(),
            aspf in arb_align(),
            rua in proptest::collection::vec(arb_uri(), 0..3),
            ruf in proptest::collection::vec(arb_uri(), 0..2),
            fo in prop_oneof![Just("0"), Just("1"), Just("d:s"), Just("0:1:d:s")],
            ri in any::<u32>(),
        ) {
            let r = DmarcRecord {
                policy: p, subdomain_policy: sp, nonexistent_policy: np, percentage: pct,
                adkim, aspf, aggregate: rua, failure: ruf, failure_options: fo.to_string(),
                report_format: "afrf".into(), report_interval: ri,
            };
            prop_assert_eq!(DmarcRecord::parse(&r.to_string()).unwrap(), r);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = DmarcRecord::parse(&s);
            let _ = DmarcRecord::parse(&format!("v=DMARC1; {s}"));
        }
    }
}
