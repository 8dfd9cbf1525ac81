//! The SPF record grammar (RFC 7208 section 4.6 and 12): parsing and rendering.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Longest record accepted, in bytes (a DNS TXT answer cannot usefully be larger).
pub const MAX_RECORD_LEN: usize = 4096;

/// Why a record (or a macro string in it) is invalid; every case is a permerror.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record does not start with `v=spf1` followed by a space or its end.
    #[error("not an SPF version 1 record")]
    NotSpf1,
    /// The record is longer than [`MAX_RECORD_LEN`].
    #[error("record too long")]
    TooLong,
    /// A term is not a valid mechanism or modifier.
    #[error("invalid term {0:?}")]
    InvalidTerm(String),
    /// A mechanism name is not one of RFC 7208's.
    #[error("unknown mechanism {0:?}")]
    UnknownMechanism(String),
    /// `redirect=` or `exp=` appears more than once.
    #[error("duplicate modifier {0:?}")]
    DuplicateModifier(String),
    /// A CIDR prefix length is out of range or badly written.
    #[error("invalid CIDR length in {0:?}")]
    InvalidCidr(String),
    /// An IP address in `ip4:`/`ip6:` is invalid.
    #[error("invalid IP address in {0:?}")]
    InvalidAddress(String),
    /// A domain-spec does not end in a macro or a valid top label.
    #[error("invalid domain-spec {0:?}")]
    InvalidDomainSpec(String),
    /// A macro string is malformed (bad `%` escape, unknown letter, zero digits).
    #[error("invalid macro in {0:?}")]
    InvalidMacro(String),
}

/// What a matching directive yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Qualifier {
    /// `+` (the default).
    Pass,
    /// `-`.
    Fail,
    /// `~`.
    SoftFail,
    /// `?`.
    Neutral,
}

impl Qualifier {
    fn prefix(self) -> &'static str {
        match self {
            Qualifier::Pass => "",
            Qualifier::Fail => "-",
            Qualifier::SoftFail => "~",
            Qualifier::Neutral => "?",
        }
    }
}

/// One part of a macro string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MacroPart {
    /// Literal text (`%%`, `%_`, `%-` already decoded to `%`, space, `%20`).
    Literal(String),
    /// `%{letter digits r delimiters}`.
    Expand {
        /// The macro letter, lower-case (`s l o d i p v h c r t`).
        letter: char,
        /// Upper-case letter: URL-escape the value.
        escape: bool,
        /// Keep this many right-hand parts (nonzero).
        digits: Option<u32>,
        /// Reverse the parts first.
        reverse: bool,
        /// Delimiters to split on (`.` when empty).
        delimiters: String,
    },
}

/// A parsed macro string (domain-spec or explanation).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct MacroString(pub Vec<MacroPart>);

impl MacroString {
    /// Parses a macro string. `explain` allows spaces and the letters `c`, `r`, `t`.
    pub fn parse(s: &str, explain: bool) -> Result<MacroString, RecordError> {
        let bad = || RecordError::InvalidMacro(s.to_string());
        let mut parts: Vec<MacroPart> = Vec::new();
        let mut lit = String::new();
        let mut chars = s.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '%' {
                match chars.next() {
                    Some('%') => lit.push('%'),
                    Some('_') => lit.push(' '),
                    Some('-') => lit.push_str("%20"),
                    Some('{') => {
                        let letter = chars.next().ok_or_else(bad)?;
                        let lower = letter.to_ascii_lowercase();
                        let ok = matches!(lower, 's' | 'l' | 'o' | 'd' | 'i' | 'p' | 'v' | 'h')
                            || (explain && matches!(lower, 'c' | 'r' | 't'));
                        if !ok {
                            return Err(bad());
                        }
                        let mut digits: Option<u32> = None;
                        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                            chars.next();
                            digits = Some(digits.unwrap_or(0).saturating_mul(10).saturating_add(d));
                        }
                        if digits == Some(0) {
                            return Err(bad());
                        }
                        let mut reverse = false;
                        if matches!(chars.peek(), Some('r' | 'R')) {
                            chars.next();
                            reverse = true;
                        }
                        let mut delimiters = String::new();
                        loop {
                            match chars.next() {
                                Some('}') => break,
                                Some(d @ ('.' | '-' | '+' | ',' | '/' | '_' | '=')) => {
                                    delimiters.push(d)
                                }
                                _ => return Err(bad()),
                            }
                        }
                        if !lit.is_empty() {
                            parts.push(MacroPart::Literal(std::mem::take(&mut lit)));
                        }
                        parts.push(MacroPart::Expand {
                            letter: lower,
                            escape: letter.is_ascii_uppercase(),
                            digits,
                            reverse,
                            delimiters,
                        });
                    }
                    _ => return Err(bad()),
                }
            } else if ('\x21'..='\x7e').contains(&c) || (explain && c == ' ') {
                lit.push(c);
            } else {
                return Err(bad());
            }
        }
        if !lit.is_empty() {
            parts.push(MacroPart::Literal(lit));
        }
        Ok(MacroString(parts))
    }
}

impl fmt::Display for MacroString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            match p {
                MacroPart::Literal(s) => {
                    let mut rest = s.as_str();
                    while let Some(c) = rest.chars().next() {
                        if let Some(r) = rest.strip_prefix("%20") {
                            f.write_str("%-")?;
                            rest = r;
                            continue;
                        }
                        match c {
                            '%' => f.write_str("%%")?,
                            ' ' => f.write_str("%_")?,
                            c => write!(f, "{c}")?,
                        }
                        rest = &rest[c.len_utf8()..];
                    }
                }
                MacroPart::Expand {
                    letter,
                    escape,
                    digits,
                    reverse,
                    delimiters,
                } => {
                    let l = if *escape {
                        letter.to_ascii_uppercase()
                    } else {
                        *letter
                    };
                    write!(f, "%{{{l}")?;
                    if let Some(d) = digits {
                        write!(f, "{d}")?;
                    }
                    if *reverse {
                        f.write_str("r")?;
                    }
                    write!(f, "{delimiters}}}")?;
                }
            }
        }
        Ok(())
    }
}

/// A domain-spec: a macro string that ends in a macro or a valid top label.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DomainSpec(pub MacroString);

impl DomainSpec {
    /// Parses and validates a domain-spec.
    pub fn parse(s: &str) -> Result<DomainSpec, RecordError> {
        let m = MacroString::parse(s, false)?;
        let ends_in_macro =
            s.ends_with('}') || s.ends_with("%%") || s.ends_with("%_") || s.ends_with("%-");
        if !ends_in_macro {
            let t = s.strip_suffix('.').unwrap_or(s);
            let (_, top) = t
                .rsplit_once('.')
                .ok_or_else(|| RecordError::InvalidDomainSpec(s.to_string()))?;
            if !valid_toplabel(top) {
                return Err(RecordError::InvalidDomainSpec(s.to_string()));
            }
        }
        Ok(DomainSpec(m))
    }
}

impl fmt::Display for DomainSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// RFC 7208 toplabel: alphanumerics and inner hyphens, not all digits.
fn valid_toplabel(l: &str) -> bool {
    !l.is_empty()
        && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
        && !l.bytes().all(|c| c.is_ascii_digit())
}

/// A mechanism (RFC 7208 section 5).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `all`.
    All,
    /// `include:domain`.
    Include(DomainSpec),
    /// `a[:domain][/v4][//v6]`.
    A {
        /// Target, the current domain when absent.
        domain: Option<DomainSpec>,
        /// IPv4 prefix length.
        v4: Option<u8>,
        /// IPv6 prefix length.
        v6: Option<u8>,
    },
    /// `mx[:domain][/v4][//v6]`.
    Mx {
        /// Target, the current domain when absent.
        domain: Option<DomainSpec>,
        /// IPv4 prefix length.
        v4: Option<u8>,
        /// IPv6 prefix length.
        v6: Option<u8>,
    },
    /// `ptr[:domain]`.
    Ptr(Option<DomainSpec>),
    /// `ip4:addr[/len]`.
    Ip4 {
        /// Network address.
        addr: Ipv4Addr,
        /// Prefix length.
        len: Option<u8>,
    },
    /// `ip6:addr[/len]`.
    Ip6 {
        /// Network address.
        addr: Ipv6Addr,
        /// Prefix length.
        len: Option<u8>,
    },
    /// `exists:domain`.
    Exists(DomainSpec),
}

impl Mechanism {
    /// Whether evaluating it costs a DNS lookup (counted against the limit of 10).
    pub fn is_dns(&self) -> bool {
        matches!(
            self,
            Mechanism::Include(_)
                | Mechanism::A { .. }
                | Mechanism::Mx { .. }
                | Mechanism::Ptr(_)
                | Mechanism::Exists(_)
        )
    }
}

fn fmt_cidr(f: &mut fmt::Formatter<'_>, v4: &Option<u8>, v6: &Option<u8>) -> fmt::Result {
    if let Some(l) = v4 {
        write!(f, "/{l}")?;
    }
    if let Some(l) = v6 {
        write!(f, "//{l}")?;
    }
    Ok(())
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mechanism::All => f.write_str("all"),
            Mechanism::Include(d) => write!(f, "include:{d}"),
            Mechanism::A { domain, v4, v6 } | Mechanism::Mx { domain, v4, v6 } => {
                f.write_str(if matches!(self, Mechanism::A { .. }) {
                    "a"
                } else {
                    "mx"
                })?;
                if let Some(d) = domain {
                    write!(f, ":{d}")?;
                }
                fmt_cidr(f, v4, v6)
            }
            Mechanism::Ptr(d) => match d {
                Some(d) => write!(f, "ptr:{d}"),
                None => f.write_str("ptr"),
            },
            Mechanism::Ip4 { addr, len } => {
                write!(f, "ip4:{addr}")?;
                fmt_cidr(f, len, &None)
            }
            Mechanism::Ip6 { addr, len } => {
                write!(f, "ip6:{addr}")?;
                fmt_cidr(f, len, &None)
            }
            Mechanism::Exists(d) => write!(f, "exists:{d}"),
        }
    }
}

/// A qualifier and a mechanism.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Directive {
    /// What a match yields.
    pub qualifier: Qualifier,
    /// What is matched.
    pub mechanism: Mechanism,
}

impl fmt::Display for Directive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.qualifier.prefix(), self.mechanism)
    }
}

/// A parsed SPF record.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct SpfRecord {
    /// The directives, in order.
    pub directives: Vec<Directive>,
    /// `redirect=`.
    pub redirect: Option<DomainSpec>,
    /// `exp=`.
    pub exp: Option<DomainSpec>,
    /// Other modifiers (name lower-cased), ignored in evaluation.
    pub other: Vec<(String, MacroString)>,
}

/// Whether a TXT string is an SPF version 1 record (`v=spf1` then a space or the end).
pub fn is_spf1(txt: &[u8]) -> bool {
    match txt.get(..6) {
        Some(p) if p.eq_ignore_ascii_case(b"v=spf1") => matches!(txt.get(6), None | Some(b' ')),
        _ => false,
    }
}

fn parse_cidr(s: &str, max: u8, term: &str) -> Result<u8, RecordError> {
    let bad = || RecordError::InvalidCidr(term.to_string());
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(bad());
    }
    let v: u8 = s.parse().map_err(|_| bad())?;
    if v > max {
        return Err(bad());
    }
    Ok(v)
}

/// The target and prefix lengths of an `a`/`mx` term.
type DualCidr = (Option<DomainSpec>, Option<u8>, Option<u8>);

/// Splits `[:domain][/v4][//v6]` of an `a`/`mx` term.
fn dual_cidr(rest: &str, term: &str) -> Result<DualCidr, RecordError> {
    let mut body = rest;
    let mut v6 = None;
    let mut v4 = None;
    if let Some(i) = body.rfind("//") {
        let tail = &body[i + 2..];
        if tail.bytes().all(|c| c.is_ascii_digit()) {
            v6 = Some(parse_cidr(tail, 128, term)?);
            body = &body[..i];
        }
    }
    if let Some(i) = body.rfind('/') {
        let tail = &body[i + 1..];
        if tail.bytes().all(|c| c.is_ascii_digit()) {
            v4 = Some(parse_cidr(tail, 32, term)?);
            body = &body[..i];
        }
    }
    let domain = if body.is_empty() {
        None
    } else if let Some(d) = body.strip_prefix(':') {
        Some(DomainSpec::parse(d)?)
    } else {
        return Err(RecordError::InvalidTerm(term.to_string()));
    };
    Ok((domain, v4, v6))
}

impl SpfRecord {
    /// Parses a whole record (`v=spf1 ...`).
    pub fn parse(text: &str) -> Result<SpfRecord, RecordError> {
        if text.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong);
        }
        if !is_spf1(text.as_bytes()) {
            return Err(RecordError::NotSpf1);
        }
        let mut rec = SpfRecord::default();
        for term in text[6..].split(' ').filter(|t| !t.is_empty()) {
            rec.parse_term(term)?;
        }
        Ok(rec)
    }

    fn parse_term(&mut self, term: &str) -> Result<(), RecordError> {
        let invalid = || RecordError::InvalidTerm(term.to_string());
        let (qualifier, body) = match term.as_bytes().first() {
            Some(b'+') => (Some(Qualifier::Pass), &term[1..]),
            Some(b'-') => (Some(Qualifier::Fail), &term[1..]),
            Some(b'~') => (Some(Qualifier::SoftFail), &term[1..]),
            Some(b'?') => (Some(Qualifier::Neutral), &term[1..]),
            _ => (None, term),
        };
        let name_len = body
            .bytes()
            .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')))
            .unwrap_or(body.len());
        let name = &body[..name_len];
        let rest = &body[name_len..];
        if !name.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) {
            return Err(invalid());
        }
        if qualifier.is_none() {
            if let Some(value) = rest.strip_prefix('=') {
                let lname = name.to_ascii_lowercase();
                match lname.as_str() {
                    "redirect" | "exp" => {
                        let slot = if lname == "redirect" {
                            &mut self.redirect
                        } else {
                            &mut self.exp
                        };
                        if slot.is_some() {
                            return Err(RecordError::DuplicateModifier(lname));
                        }
                        *slot = Some(DomainSpec::parse(value)?);
                    }
                    _ => {
                        let m = MacroString::parse(value, false)?;
                        self.other.push((lname, m));
                    }
                }
                return Ok(());
            }
        }
        let lname = name.to_ascii_lowercase();
        let mechanism = match lname.as_str() {
            "all" => {
                if !rest.is_empty() {
                    return Err(invalid());
                }
                Mechanism::All
            }
            "include" | "exists" => {
                let d = rest.strip_prefix(':').ok_or_else(invalid)?;
                let d = DomainSpec::parse(d)?;
                if lname == "include" {
                    Mechanism::Include(d)
                } else {
                    Mechanism::Exists(d)
                }
            }
            "a" | "mx" => {
                let (domain, v4, v6) = dual_cidr(rest, term)?;
                if lname == "a" {
                    Mechanism::A { domain, v4, v6 }
                } else {
                    Mechanism::Mx { domain, v4, v6 }
                }
            }
            "ptr" => {
                if rest.is_empty() {
                    Mechanism::Ptr(None)
                } else {
                    let d = rest.strip_prefix(':').ok_or_else(invalid)?;
                    Mechanism::Ptr(Some(DomainSpec::parse(d)?))
                }
            }
            "ip4" | "ip6" => {
                let v = rest.strip_prefix(':').ok_or_else(invalid)?;
                let (addr, len) = match v.split_once('/') {
                    Some((a, l)) => (a, Some(l)),
                    None => (v, None),
                };
                let bad_addr = || RecordError::InvalidAddress(term.to_string());
                if lname == "ip4" {
                    let addr: Ipv4Addr = addr.parse().map_err(|_| bad_addr())?;
                    let len = len.map(|l| parse_cidr(l, 32, term)).transpose()?;
                    Mechanism::Ip4 { addr, len }
                } else {
                    let addr: Ipv6Addr = addr.parse().map_err(|_| bad_addr())?;
                    let len = len.map(|l| parse_cidr(l, 128, term)).transpose()?;
                    Mechanism::Ip6 { addr, len }
                }
            }
            _ => return Err(RecordError::UnknownMechanism(name.to_string())),
        };
        self.directives.push(Directive {
            qualifier: qualifier.unwrap_or(Qualifier::Pass),
            mechanism,
        });
        Ok(())
    }
}

impl fmt::Display for SpfRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v=spf1")?;
        for d in &self.directives {
            write!(f, " {d}")?;
        }
        if let Some(r) = &self.redirect {
            write!(f, " redirect={r}")?;
        }
        if let Some(e) = &self.exp {
            write!(f, " exp={e}")?;
        }
        for (n, v) in &self.other {
            write!(f, " {n}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses() {
        let ok = [
            ("v=spf1", "v=spf1"),
            ("V=SPF1 -ALL", "v=spf1 -all"),
            ("v=spf1 +a mx/24 ~mx:%{d}//64 ?ptr", "v=spf1 a mx/24 ~mx:%{d}//64 ?ptr"),
            (
                "v=spf1 a:example.com/24//64 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all",
                "v=spf1 a:example.com/24//64 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all",
            ),
            (
                "v=spf1 include:_spf.example.com exists:%{ir}.%{l1r+-}._spf.%{d} redirect=x.example exp=e.%{d}",
                "v=spf1 include:_spf.example.com exists:%{ir}.%{l1r+-}._spf.%{d} redirect=x.example exp=e.%{d}",
            ),
            ("v=spf1 foo=bar%%%_%- -all", "v=spf1 -all foo=bar%%%_%-"),
            ("v=spf1 ptr:example.org. -all", "v=spf1 ptr:example.org. -all"),
        ];
        for (input, rendered) in ok {
            let r = SpfRecord::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), rendered, "{input}");
        }
    }

    #[test]
    fn rejects() {
        let bad = [
            "v=spf10",
            "spf1",
            "v=spf1 -all.",
            "v=spf1 -all:foo",
            "v=spf1 -all/8",
            "v=spf1 moo",
            "v=spf1 a:1.2.3.4",
            "v=spf1 a:",
            "v=spf1 a/33",
            "v=spf1 a//129",
            "v=spf1 a/01",
            "v=spf1 ip4:1.2.3",
            "v=spf1 ip6:1.2.3.4",
            "v=spf1 ip4:1.2.3.4/33",
            "v=spf1 include",
            "v=spf1 exists:%{x}.example.com",
            "v=spf1 exists:%{c}.example.com",
            "v=spf1 exists:%{l0}.example.com",
            "v=spf1 exists:%{l}.example.com%",
            "v=spf1 redirect=a.example redirect=b.example",
            "v=spf1 exp=a.example exp=b.example",
            "v=spf1 1x=y",
            "v=spf1 -foo=bar",
            "v=spf1 a:ex\u{e9}.com",
        ];
        for input in bad {
            assert!(SpfRecord::parse(input).is_err(), "accepted {input}");
        }
    }

    fn arb_domain() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9]{1,10}\\.[a-z]{2,5}",
            "%\\{[slodipvhSLODIPVH][1-9]?r?[.+,/_=-]{0,2}\\}\\.[a-z]{2,4}",
            Just("%{d}".to_string()),
        ]
    }

    fn arb_term() -> impl Strategy<Value = String> {
        let q = prop_oneof![Just(""), Just("-"), Just("~"), Just("?")];
        let m = prop_oneof![
            Just("all".to_string()),
            arb_domain().prop_map(|d| format!("include:{d}")),
            (arb_domain(), 0u8..=32).prop_map(|(d, l)| format!("a:{d}/{l}")),
            (0u8..=128).prop_map(|l| format!("mx//{l}")),
            Just("ptr".to_string()),
            (any::<u32>(), 0u8..=32).prop_map(|(a, l)| format!("ip4:{}/{l}", Ipv4Addr::from(a))),
            (any::<u128>(), 0u8..=128).prop_map(|(a, l)| format!("ip6:{}/{l}", Ipv6Addr::from(a))),
            arb_domain().prop_map(|d| format!("exists:{d}")),
        ];
        (q, m).prop_map(|(q, m)| format!("{q}{m}"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn never_panics(s in "v=spf1[ -~]{0,80}") {
            let _ = SpfRecord::parse(&s);
        }

        #[test]
        fn round_trip(terms in proptest::collection::vec(arb_term(), 0..8), redirect in proptest::option::of(arb_domain())) {
            let mut text = String::from("v=spf1");
            for t in &terms {
                text.push(' ');
                text.push_str(t);
            }
            if let Some(r) = redirect {
                text.push_str(" redirect=");
                text.push_str(&r);
            }
            let rec = SpfRecord::parse(&text).unwrap();
            prop_assert_eq!(rec.directives.len(), terms.len());
            let again = SpfRecord::parse(&rec.to_string()).unwrap();
            prop_assert_eq!(again, rec);
        }

        #[test]
        fn macro_round_trip(s in "([a-z.]|%\\{[slodipvh][1-9]?r?[.-]{0,2}\\}|%%|%_|%-){0,10}") {
            let m = MacroString::parse(&s, false).unwrap();
            prop_assert_eq!(MacroString::parse(&m.to_string(), false).unwrap(), m);
        }
    }
}
