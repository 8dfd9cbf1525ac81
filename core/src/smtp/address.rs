//! Addresses and paths (RFC 5321 4.1.2, RFC 6531 for SMTPUTF8).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// A domain name, kept in both forms: the lower-case A-label (ASCII, punycode) form used on
/// the wire and in DNS, and the U-label (Unicode) form for display and SMTPUTF8.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain {
    /// Lower-case ASCII form (`xn--...` for IDNs), no trailing dot.
    pub ascii: String,
    /// Unicode form; equal to `ascii` for plain ASCII names.
    pub unicode: String,
}

/// The host part of an address or an EHLO argument.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A domain name.
    Domain(Domain),
    /// An IPv4 address literal, `[192.0.2.1]`.
    Ipv4(Ipv4Addr),
    /// An IPv6 address literal, `[IPv6:2001:db8::1]`.
    Ipv6(Ipv6Addr),
}

/// A local part, as its value (quotes and escapes removed). It may be empty (`""@domain`)
/// and may hold UTF-8 (SMTPUTF8).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Localpart(pub String);

/// A mailbox: `localpart@host`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    /// The local part.
    pub localpart: Localpart,
    /// The domain or address literal.
    pub host: Host,
}

/// The MAIL FROM path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ReversePath {
    /// `<>`, the null sender (bounces, DSNs).
    Null,
    /// A sender mailbox.
    Mailbox(Address),
}

/// The RCPT TO path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<postmaster>` without a domain (RFC 5321 4.5.1), any case.
    Postmaster,
    /// A recipient mailbox.
    Mailbox(Address),
}

/// Why an address or path did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The path is not enclosed in `<` and `>`.
    #[error("path must be enclosed in < and >")]
    MissingBrackets,
    /// The local part is malformed (bad character, unbalanced quote, too long).
    #[error("bad localpart: {0}")]
    Localpart(String),
    /// The domain is malformed or fails IDNA conversion.
    #[error("bad domain: {0}")]
    Domain(String),
    /// An address literal is malformed.
    #[error("bad address literal: {0}")]
    AddressLiteral(String),
    /// There is no `@` separating local part and domain.
    #[error("missing @ in address")]
    MissingAt,
}

/// Longest local part accepted, in octets. RFC 5321 4.5.3.1.1 says 64, but generated
/// (bounce, VERP) addresses in the wild are longer; like mox we allow up to 128.
pub const MAX_LOCALPART: usize = 128;

/// `atext` of RFC 5322 (ASCII part); UTF-8 non-ASCII characters are also atext (RFC 6531).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

/// `qtextSMTP` (RFC 5321) extended with UTF-8 (RFC 6531): printable except `"` and `\`.
fn is_qtext(c: char) -> bool {
    matches!(c, ' '..='~') && c != '"' && c != '\\' || (!c.is_ascii() && !c.is_control())
}

fn is_ldh(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// Checks the LDH rules on an ASCII domain: labels 1-63 octets of letters, digits and
/// hyphens, no hyphen at either end of a label, total at most 253.
fn check_ldh(ascii: &str) -> Result<(), AddressError> {
    let err = |m: &str| Err(AddressError::Domain(format!("{m}: {ascii:?}")));
    if ascii.is_empty() {
        return err("empty domain");
    }
    if ascii.len() > 253 {
        return err("domain longer than 253 octets");
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return err("empty label");
        }
        if label.len() > 63 {
            return err("label longer than 63 octets");
        }
        if !label.bytes().all(is_ldh) {
            return err("invalid character");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return err("label starts or ends with hyphen");
        }
    }
    Ok(())
}

impl Domain {
    /// Parses a domain name, ASCII or Unicode (IDNA via UTS 46). The result holds the
    /// lower-case A-label form and the Unicode form. A trailing dot is not allowed.
    pub fn parse(s: &str) -> Result<Domain, AddressError> {
        if s.ends_with('.') {
            return Err(AddressError::Domain(format!("trailing dot: {s:?}")));
        }
        if s.is_ascii() {
            let ascii = s.to_ascii_lowercase();
            check_ldh(&ascii)?;
            let has_alabel = ascii.split('.').any(|l| l.starts_with("xn--"));
            if !has_alabel {
                return Ok(Domain {
                    unicode: ascii.clone(),
                    ascii,
                });
            }
            let (unicode, res) = idna::domain_to_unicode(&ascii);
            if res.is_err() {
                return Err(AddressError::Domain(format!("invalid A-label: {s:?}")));
            }
            // The A-labels must be in canonical form: converting back gives the same.
            match idna::domain_to_ascii_strict(&unicode) {
                Ok(back) if back == ascii => Ok(Domain { ascii, unicode }),
                _ => Err(AddressError::Domain(format!("invalid A-label: {s:?}"))),
            }
        } else {
            let ascii = idna::domain_to_ascii_strict(s)
                .map_err(|_| AddressError::Domain(format!("IDNA conversion failed: {s:?}")))?;
            check_ldh(&ascii)?;
            let (unicode, res) = idna::domain_to_unicode(&ascii);
            if res.is_err() {
                return Err(AddressError::Domain(format!(
                    "IDNA conversion failed: {s:?}"
                )));
            }
            Ok(Domain { ascii, unicode })
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.ascii)
    }
}

impl Host {
    /// Parses a domain or an address literal: `[192.0.2.1]` or `[IPv6:2001:db8::1]`.
    pub fn parse(s: &str) -> Result<Host, AddressError> {
        let Some(inner) = s.strip_prefix('[') else {
            return Domain::parse(s).map(Host::Domain);
        };
        let bad = || AddressError::AddressLiteral(s.to_owned());
        let inner = inner.strip_suffix(']').ok_or_else(bad)?;
        let tag = inner.get(..5).unwrap_or_default();
        if tag.eq_ignore_ascii_case("IPv6:") {
            let v6 = inner.get(5..).unwrap_or_default();
            return v6.parse::<Ipv6Addr>().map(Host::Ipv6).map_err(|_| bad());
        }
        inner.parse::<Ipv4Addr>().map(Host::Ipv4).map_err(|_| bad())
    }

    /// The domain, if this is not an address literal.
    pub fn domain(&self) -> Option<&Domain> {
        match self {
            Host::Domain(d) => Some(d),
            _ => None,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(&d.ascii),
            Host::Ipv4(ip) => write!(f, "[{ip}]"),
            Host::Ipv6(ip) => write!(f, "[IPv6:{ip}]"),
        }
    }
}

impl Localpart {
    /// Whether the local part is plain ASCII (no SMTPUTF8 needed for it).
    pub fn is_ascii(&self) -> bool {
        self.0.is_ascii()
    }

    /// Whether the value can be written as a dot-string (no quoting needed).
    fn is_dot_string(&self) -> bool {
        !self.0.is_empty()
            && self
                .0
                .split('.')
                .all(|a| !a.is_empty() && a.chars().all(is_atext))
    }
}

impl fmt::Display for Localpart {
    /// SMTP form: a dot-string when possible, otherwise a quoted string with `"` and `\`
    /// escaped; `""` for the empty local part.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_dot_string() {
            return f.write_str(&self.0);
        }
        f.write_str("\"")?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

/// Parses a local part at the start of `s`; returns it and the rest (starting at `@` when
/// well-formed).
fn parse_localpart(s: &str) -> Result<(Localpart, &str), AddressError> {
    let bad = |m: &str| AddressError::Localpart(format!("{m}: {s:?}"));
    let mut value = String::new();
    let rest;
    if let Some(q) = s.strip_prefix('"') {
        let mut chars = q.char_indices();
        loop {
            match chars.next() {
                None => return Err(bad("unterminated quoted string")),
                Some((i, '"')) => {
                    rest = q.get(i + 1..).unwrap_or_default();
                    break;
                }
                Some((_, '\\')) => match chars.next() {
                    Some((_, c)) if matches!(c, ' '..='~') => value.push(c),
                    _ => return Err(bad("bad quoted pair")),
                },
                Some((_, c)) if is_qtext(c) => value.push(c),
                Some(_) => return Err(bad("bad character in quoted string")),
            }
        }
    } else {
        let end = s
            .find(|c: char| !(is_atext(c) || c == '.'))
            .unwrap_or(s.len());
        let dots = s.get(..end).unwrap_or_default();
        if dots.is_empty() {
            return Err(if s.is_empty() {
                AddressError::MissingAt
            } else {
                bad("empty local part")
            });
        }
        if dots.split('.').any(str::is_empty) {
            return Err(bad("empty atom"));
        }
        value.push_str(dots);
        rest = s.get(end..).unwrap_or_default();
    }
    if value.len() > MAX_LOCALPART {
        return Err(bad("local part too long"));
    }
    Ok((Localpart(value), rest))
}

impl Address {
    /// Parses `localpart@host` (no angle brackets). The local part is a dot-string or a
    /// quoted string; UTF-8 is accepted (the server decides whether SMTPUTF8 allows it).
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        let (localpart, rest) = parse_localpart(s)?;
        let host = match rest.strip_prefix('@') {
            Some(h) => h,
            None if rest.is_empty() => return Err(AddressError::MissingAt),
            None => {
                return Err(AddressError::Localpart(format!(
                    "unexpected character after local part: {s:?}"
                )))
            }
        };
        let host = Host::parse(host)?;
        Ok(Address { localpart, host })
    }

    /// Whether the address can be sent without SMTPUTF8: the local part is ASCII (the
    /// domain can always be sent as A-labels).
    pub fn is_ascii(&self) -> bool {
        self.localpart.is_ascii()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.localpart, self.host)
    }
}

/// Where the bracketed path at the start of `s` ends: the index just after the `>`
/// that closes it, skipping `>` inside quoted strings. `None` when `s` does not start with
/// `<` or the path is not closed.
pub(crate) fn path_end(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'<') {
        return None;
    }
    let mut quoted = false;
    let mut i = 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(i + 1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Strips `<` and `>` and an optional source route (`@a,@b:`), which is ignored.
fn unbracket(s: &str) -> Result<&str, AddressError> {
    let inner = s
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .ok_or(AddressError::MissingBrackets)?;
    if !inner.starts_with('@') {
        return Ok(inner);
    }
    let (route, rest) = inner
        .split_once(':')
        .ok_or_else(|| AddressError::Domain(format!("bad source route: {s:?}")))?;
    for hop in route.split(',') {
        let d = hop
            .strip_prefix('@')
            .ok_or_else(|| AddressError::Domain(format!("bad source route: {s:?}")))?;
        Domain::parse(d)?;
    }
    Ok(rest)
}

impl ReversePath {
    /// Parses the bracketed MAIL FROM path: `<>` or `<local@host>` (a source route is
    /// accepted and ignored).
    pub fn parse(s: &str) -> Result<ReversePath, AddressError> {
        let inner = unbracket(s)?;
        if inner.is_empty() {
            return Ok(ReversePath::Null);
        }
        Address::parse(inner).map(ReversePath::Mailbox)
    }

    /// The address, unless this is the null path.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ReversePath::Null => None,
            ReversePath::Mailbox(a) => Some(a),
        }
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => f.write_str("<>"),
            ReversePath::Mailbox(a) => write!(f, "<{a}>"),
        }
    }
}

impl ForwardPath {
    /// Parses the bracketed RCPT TO path: `<postmaster>` (any case) or `<local@host>` (a
    /// source route is accepted and ignored).
    pub fn parse(s: &str) -> Result<ForwardPath, AddressError> {
        let inner = unbracket(s)?;
        if inner.eq_ignore_ascii_case("postmaster") {
            return Ok(ForwardPath::Postmaster);
        }
        Address::parse(inner).map(ForwardPath::Mailbox)
    }

    /// The address, unless this is the bare `<postmaster>`.
    pub fn address(&self) -> Option<&Address> {
        match self {
            ForwardPath::Postmaster => None,
            ForwardPath::Mailbox(a) => Some(a),
        }
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("<postmaster>"),
            ForwardPath::Mailbox(a) => write!(f, "<{a}>"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dom(s: &str) -> Domain {
        Domain::parse(s).unwrap()
    }

    #[test]
    fn domain_table() {
        let ok: &[(&str, &str, &str)] = &[
            ("example.org", "example.org", "example.org"),
            ("EXAMPLE.Org", "example.org", "example.org"),
            ("localhost", "localhost", "localhost"),
            ("a-b.c0", "a-b.c0", "a-b.c0"),
            ("ab--cd.example", "ab--cd.example", "ab--cd.example"),
            ("bücher.example", "xn--bcher-kva.example", "bücher.example"),
            ("BÜCHER.example", "xn--bcher-kva.example", "bücher.example"),
            (
                "xn--bcher-kva.example",
                "xn--bcher-kva.example",
                "bücher.example",
            ),
            (
                "XN--BCHER-KVA.example",
                "xn--bcher-kva.example",
                "bücher.example",
            ),
            ("1.2.3.4", "1.2.3.4", "1.2.3.4"),
        ];
        for (input, ascii, unicode) in ok {
            let d = Domain::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(d.ascii, *ascii, "{input}");
            assert_eq!(d.unicode, *unicode, "{input}");
            assert_eq!(d.to_string(), *ascii);
        }
        let long_label = "a".repeat(64);
        let label63 = "a".repeat(63);
        let long_total = [label63.as_str(); 4].join(".");
        let max_total = format!("{}.{}", [label63.as_str(); 3].join("."), "a".repeat(61));
        assert_eq!(max_total.len(), 253);
        assert!(Domain::parse(&max_total).is_ok());
        assert!(Domain::parse(&label63).is_ok());
        let bad: &[&str] = &[
            "",
            ".",
            "example.org.",
            ".example.org",
            "a..b",
            "-a.example",
            "a-.example",
            "a_b.example",
            "a b.example",
            "a@b",
            "[1.2.3.4]",
            "xn--zz.example",
            "xn--.example",
            &long_label,
            &long_total,
            "bü cher.example",
            "\u{200b}.example",
        ];
        for input in bad {
            assert!(
                matches!(Domain::parse(input), Err(AddressError::Domain(_))),
                "{input:?} should fail: {:?}",
                Domain::parse(input)
            );
        }
    }

    #[test]
    fn host_table() {
        let ok: &[(&str, Host, &str)] = &[
            ("mx.example", Host::Domain(dom("mx.example")), "mx.example"),
            (
                "[192.0.2.1]",
                Host::Ipv4("192.0.2.1".parse().unwrap()),
                "[192.0.2.1]",
            ),
            (
                "[IPv6:2001:db8::1]",
                Host::Ipv6("2001:db8::1".parse().unwrap()),
                "[IPv6:2001:db8::1]",
            ),
            (
                "[ipv6:::1]",
                Host::Ipv6("::1".parse().unwrap()),
                "[IPv6:::1]",
            ),
        ];
        for (input, want, display) in ok {
            let h = Host::parse(input).unwrap();
            assert_eq!(&h, want, "{input}");
            assert_eq!(h.to_string(), *display);
        }
        for bad in [
            "[1.2.3.4",
            "[1.2.3]",
            "[1.2.3.256]",
            "[01.2.3.4]",
            "[IPv6:1.2.3.4]",
            "[2001:db8::1]",
            "[IPv6:zz::1]",
            "[x:1]",
            "[]",
        ] {
            assert!(
                matches!(Host::parse(bad), Err(AddressError::AddressLiteral(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn address_table() {
        let lp = |s: &str| Localpart(s.into());
        let ok: &[(&str, &str, &str, &str)] = &[
            // input, localpart value, host display, display
            (
                "user@example.org",
                "user",
                "example.org",
                "user@example.org",
            ),
            (
                "User.Name+tag@Example.ORG",
                "User.Name+tag",
                "example.org",
                "User.Name+tag@example.org",
            ),
            (
                "!#$%&'*+-/=?^_`{|}~@x",
                "!#$%&'*+-/=?^_`{|}~",
                "x",
                "!#$%&'*+-/=?^_`{|}~@x",
            ),
            ("\"a b\"@x", "a b", "x", "\"a b\"@x"),
            ("\"\"@x", "", "x", "\"\"@x"),
            ("\"a\\\"b\\\\c\"@x", "a\"b\\c", "x", "\"a\\\"b\\\\c\"@x"),
            ("\"\\a\"@x", "a", "x", "a@x"),
            ("\"abc\"@x", "abc", "x", "abc@x"),
            ("\"a..b\"@x", "a..b", "x", "\"a..b\"@x"),
            ("\".a\"@x", ".a", "x", "\".a\"@x"),
            ("\"a@b\"@x", "a@b", "x", "\"a@b\"@x"),
            (
                "jöran@bücher.example",
                "jöran",
                "xn--bcher-kva.example",
                "jöran@xn--bcher-kva.example",
            ),
            ("\"jö ran\"@x", "jö ran", "x", "\"jö ran\"@x"),
            ("a@[192.0.2.1]", "a", "[192.0.2.1]", "a@[192.0.2.1]"),
            ("a@[IPv6:::1]", "a", "[IPv6:::1]", "a@[IPv6:::1]"),
        ];
        for (input, local, host, display) in ok {
            let a = Address::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(a.localpart, lp(local), "{input}");
            assert_eq!(a.host.to_string(), *host, "{input}");
            assert_eq!(a.to_string(), *display, "{input}");
            assert_eq!(Address::parse(display).unwrap(), a, "{input}");
        }
        let long = format!("{}@x", "a".repeat(MAX_LOCALPART + 1));
        assert!(Address::parse(&format!("{}@x", "a".repeat(MAX_LOCALPART))).is_ok());
        type Check = fn(&AddressError) -> bool;
        let bad: &[(&str, Check)] = &[
            ("user", |e| *e == AddressError::MissingAt),
            ("", |e| *e == AddressError::MissingAt),
            ("\"user\"", |e| *e == AddressError::MissingAt),
            ("@x", |e| matches!(e, AddressError::Localpart(_))),
            ("a b@x", |e| matches!(e, AddressError::Localpart(_))),
            (".a@x", |e| matches!(e, AddressError::Localpart(_))),
            ("a.@x", |e| matches!(e, AddressError::Localpart(_))),
            ("a..b@x", |e| matches!(e, AddressError::Localpart(_))),
            ("\"a@x", |e| matches!(e, AddressError::Localpart(_))),
            ("\"a\"b@x", |e| matches!(e, AddressError::Localpart(_))),
            ("\"a\tb\"@x", |e| matches!(e, AddressError::Localpart(_))),
            ("a\"b\"@x", |e| matches!(e, AddressError::Localpart(_))),
            ("a(b)@x", |e| matches!(e, AddressError::Localpart(_))),
            ("a@", |e| matches!(e, AddressError::Domain(_))),
            ("a@b@c", |e| matches!(e, AddressError::Domain(_))),
            ("a@x.", |e| matches!(e, AddressError::Domain(_))),
            ("a@[1.2.3]", |e| {
                matches!(e, AddressError::AddressLiteral(_))
            }),
            (&long, |e| matches!(e, AddressError::Localpart(_))),
        ];
        for (input, check) in bad {
            let e = Address::parse(input).expect_err(input);
            assert!(check(&e), "{input}: {e:?}");
        }
        assert!(Address::parse("a@x").unwrap().is_ascii());
        assert!(!Address::parse("jö@x").unwrap().is_ascii());
        assert!(Address::parse("a@bücher.example").unwrap().is_ascii());
    }

    #[test]
    fn paths_table() {
        let a = |s: &str| Address::parse(s).unwrap();
        let rev: &[(&str, Result<ReversePath, AddressError>, &str)] = &[
            ("<>", Ok(ReversePath::Null), "<>"),
            ("<a@x>", Ok(ReversePath::Mailbox(a("a@x"))), "<a@x>"),
            (
                "<@r1.example,@r2.example:a@x>",
                Ok(ReversePath::Mailbox(a("a@x"))),
                "<a@x>",
            ),
            (
                "<\"a>b\"@x>",
                Ok(ReversePath::Mailbox(a("\"a>b\"@x"))),
                "<\"a>b\"@x>",
            ),
            ("a@x", Err(AddressError::MissingBrackets), ""),
            ("<a@x", Err(AddressError::MissingBrackets), ""),
            ("", Err(AddressError::MissingBrackets), ""),
            ("<postmaster>", Err(AddressError::MissingAt), ""),
        ];
        for (input, want, display) in rev {
            let got = ReversePath::parse(input);
            assert_eq!(&got, want, "{input}");
            if let Ok(p) = got {
                assert_eq!(p.to_string(), *display);
            }
        }
        let fwd: &[(&str, Result<ForwardPath, AddressError>, &str)] = &[
            ("<postmaster>", Ok(ForwardPath::Postmaster), "<postmaster>"),
            ("<PostMaster>", Ok(ForwardPath::Postmaster), "<postmaster>"),
            (
                "<postmaster@x>",
                Ok(ForwardPath::Mailbox(a("postmaster@x"))),
                "<postmaster@x>",
            ),
            ("<a@x>", Ok(ForwardPath::Mailbox(a("a@x"))), "<a@x>"),
            ("<@r:a@x>", Ok(ForwardPath::Mailbox(a("a@x"))), "<a@x>"),
            ("<>", Err(AddressError::MissingAt), ""),
            ("a@x", Err(AddressError::MissingBrackets), ""),
        ];
        for (input, want, display) in fwd {
            let got = ForwardPath::parse(input);
            assert_eq!(&got, want, "{input}");
            if let Ok(p) = got {
                assert_eq!(p.to_string(), *display);
            }
        }
        for bad in ["<@:a@x>", "<@r a@x>", "<r:a@x>x"] {
            assert!(ForwardPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_end_table() {
        let cases: &[(&str, Option<usize>)] = &[
            ("<a@x>", Some(5)),
            ("<a@x> SIZE=1", Some(5)),
            ("<\"a>b\"@x> X", Some(9)),
            ("<\"a\\\">b\"@x>", Some(11)),
            ("<a@x", None),
            ("a@x>", None),
            ("", None),
        ];
        for (s, want) in cases {
            assert_eq!(path_end(s), *want, "{s}");
        }
    }

    pub(crate) fn arb_localpart() -> impl Strategy<Value = Localpart> {
        prop_oneof![
            "[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]{1,10}(\\.[a-zA-Z0-9_-]{1,10}){0,3}",
            "[ -~]{0,20}",
            "[a-zé ö\"\\\\.]{0,12}",
        ]
        .prop_map(Localpart)
    }

    pub(crate) fn arb_host() -> impl Strategy<Value = Host> {
        prop_oneof![
            "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]{1,8}){0,3}"
                .prop_map(|s| Host::Domain(dom(&s))),
            Just(Host::Domain(dom("bücher.example"))),
            any::<[u8; 4]>().prop_map(|b| Host::Ipv4(Ipv4Addr::from(b))),
            any::<[u8; 16]>().prop_map(|b| Host::Ipv6(Ipv6Addr::from(b))),
        ]
    }

    pub(crate) fn arb_address() -> impl Strategy<Value = Address> {
        (arb_localpart(), arb_host()).prop_map(|(localpart, host)| Address { localpart, host })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn address_roundtrip(a in arb_address()) {
            let s = a.to_string();
            prop_assert_eq!(Address::parse(&s), Ok(a.clone()));
            let fp = ForwardPath::Mailbox(a.clone());
            prop_assert_eq!(ForwardPath::parse(&fp.to_string()), Ok(fp.clone()));
            prop_assert_eq!(path_end(&fp.to_string()), Some(fp.to_string().len()));
            let rp = ReversePath::Mailbox(a);
            prop_assert_eq!(ReversePath::parse(&rp.to_string()), Ok(rp));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = Address::parse(&s);
            let _ = ForwardPath::parse(&s);
            let _ = Host::parse(&s);
            let _ = path_end(&s);
        }
    }
}
