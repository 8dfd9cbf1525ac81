//! The DKIM-Signature header field (RFC 6376 3.5) and the key record (RFC 6376 3.6.1,
//! RFC 8463).

use base64::Engine as _;

use super::canon::Canon;
use super::tags::{parse_tags, strip_fws, TagError};

/// Signing algorithm of a signature (`a=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `rsa-sha256`.
    RsaSha256,
    /// `rsa-sha1`: verification only, and refused by default (RFC 8301).
    RsaSha1,
    /// `ed25519-sha256` (RFC 8463).
    Ed25519Sha256,
}

impl Algorithm {
    /// The `a=` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::RsaSha1 => "rsa-sha1",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }

    /// The key type it needs.
    pub fn key_type(self) -> KeyType {
        match self {
            Algorithm::RsaSha256 | Algorithm::RsaSha1 => KeyType::Rsa,
            Algorithm::Ed25519Sha256 => KeyType::Ed25519,
        }
    }

    /// The hash name as in a key record's `h=`.
    pub fn hash_name(self) -> &'static str {
        match self {
            Algorithm::RsaSha1 => "sha1",
            _ => "sha256",
        }
    }

    fn parse(s: &str) -> Option<Algorithm> {
        [
            Algorithm::RsaSha256,
            Algorithm::RsaSha1,
            Algorithm::Ed25519Sha256,
        ]
        .into_iter()
        .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }
}

/// Header and body canonicalisation (`c=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Canonicalization {
    /// For the header fields.
    pub header: Canon,
    /// For the body.
    pub body: Canon,
}

impl Canonicalization {
    /// `relaxed/relaxed`, the usual choice for signing.
    pub const RELAXED: Canonicalization = Canonicalization {
        header: Canon::Relaxed,
        body: Canon::Relaxed,
    };
}

/// A parsed DKIM-Signature header field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// `a=`.
    pub algorithm: Algorithm,
    /// `b=`, decoded.
    pub signature: Vec<u8>,
    /// `b=` as written, whitespace removed (for `header.b=` in Authentication-Results).
    pub signature_b64: String,
    /// `bh=`, decoded.
    pub body_hash: Vec<u8>,
    /// `c=` (default simple/simple).
    pub canonicalization: Canonicalization,
    /// `d=`, lower-cased.
    pub domain: String,
    /// `h=`, in order, case kept.
    pub signed_headers: Vec<String>,
    /// `i=` (default `@d`), as written.
    pub identity: Option<String>,
    /// `l=`, body length limit.
    pub length: Option<u64>,
    /// `q=` methods (default `dns/txt`).
    pub query_methods: Vec<String>,
    /// `s=`, lower-cased.
    pub selector: String,
    /// `t=`, signing time.
    pub timestamp: Option<i64>,
    /// `x=`, expiry time.
    pub expiration: Option<i64>,
    /// `z=`, copied header fields, as written.
    pub copied_headers: Option<String>,
}

/// Why a DKIM-Signature field is invalid (each is a permerror).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The field is not valid UTF-8.
    #[error("signature is not valid UTF-8")]
    Utf8,
    /// The tag list is malformed.
    #[error("malformed tag list: {0}")]
    Tags(#[from] TagError),
    /// A required tag (v, a, b, bh, d, h, s) is missing.
    #[error("missing required tag {0}=")]
    Missing(&'static str),
    /// `v=` is not 1.
    #[error("unsupported version {0:?}")]
    Version(String),
    /// `a=` names an unknown algorithm.
    #[error("unknown algorithm {0:?}")]
    Algorithm(String),
    /// `c=` names an unknown canonicalisation.
    #[error("unknown canonicalization {0:?}")]
    Canonicalization(String),
    /// A base64 value (b=, bh=) does not decode.
    #[error("bad base64 in {0}=")]
    Base64(&'static str),
    /// A number (l=, t=, x=) is malformed.
    #[error("bad number in {0}=")]
    Number(&'static str),
    /// `d=` or `s=` is not a valid domain name or selector.
    #[error("bad domain or selector {0:?}")]
    Domain(String),
    /// `h=` does not include From.
    #[error("From header field not signed")]
    FromNotSigned,
    /// The domain of `i=` is not `d=` or a subdomain of it.
    #[error("i= domain is not d= or a subdomain of it")]
    IdentityDomain,
    /// `x=` is before `t=`.
    #[error("x= is before t=")]
    ExpiryBeforeTimestamp,
    /// `q=` has no `dns/txt`.
    #[error("no supported query method")]
    QueryMethod,
}

/// Checks a domain name or selector: dot-separated labels of letters, digits, `-` and
/// `_` (selectors and some signers use underscores), each 1 to 63 bytes. Non-ASCII
/// (U-labels) is accepted and converted to A-labels by the caller.
pub(crate) fn valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == '_')
        })
}

fn to_ascii_domain(s: &str) -> Option<String> {
    if s.is_ascii() {
        let l = s.to_ascii_lowercase();
        return valid_dns_name(&l).then_some(l);
    }
    let a = idna::domain_to_ascii(s).ok()?;
    valid_dns_name(&a).then_some(a)
}

fn b64(tag: &'static str, v: &str) -> Result<Vec<u8>, SignatureError> {
    base64::engine::general_purpose::STANDARD
        .decode(strip_fws(v))
        .map_err(|_| SignatureError::Base64(tag))
}

fn num(tag: &'static str, v: &str) -> Result<u64, SignatureError> {
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|c| c.is_ascii_digit()) {
        return Err(SignatureError::Number(tag));
    }
    v.parse().map_err(|_| SignatureError::Number(tag))
}

fn time(tag: &'static str, v: &str) -> Result<i64, SignatureError> {
    // RFC 6376 allows 12 digits; be lenient up to what fits.
    i64::try_from(num(tag, v)?).map_err(|_| SignatureError::Number(tag))
}

impl Signature {
    /// Parses the value of a DKIM-Signature header field (after the colon).
    pub fn parse(value: &[u8]) -> Result<Signature, SignatureError> {
        let s = std::str::from_utf8(value).map_err(|_| SignatureError::Utf8)?;
        let tags = parse_tags(s)?;
        let get = |n: &str| tags.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        let req = |n: &'static str| get(n).ok_or(SignatureError::Missing(n));
        let v = req("v")?;
        if v != "1" {
            return Err(SignatureError::Version(v.to_string()));
        }
        let a = req("a")?;
        let algorithm = Algorithm::parse(a).ok_or_else(|| SignatureError::Algorithm(a.into()))?;
        let b_raw = req("b")?;
        let signature = b64("b", b_raw)?;
        let body_hash = b64("bh", req("bh")?)?;
        let d = req("d")?;
        let domain = to_ascii_domain(d).ok_or_else(|| SignatureError::Domain(d.into()))?;
        let sel = req("s")?;
        let selector = to_ascii_domain(sel).ok_or_else(|| SignatureError::Domain(sel.into()))?;
        let h = strip_fws(req("h")?);
        let signed_headers: Vec<String> = h.split(':').map(str::to_string).collect();
        if signed_headers.iter().any(|n| n.is_empty()) {
            return Err(SignatureError::Missing("h"));
        }
        if !signed_headers
            .iter()
            .any(|n| n.eq_ignore_ascii_case("from"))
        {
            return Err(SignatureError::FromNotSigned);
        }
        let canonicalization = match get("c") {
            None => Canonicalization {
                header: Canon::Simple,
                body: Canon::Simple,
            },
            Some(c) => {
                let parse = |x: &str| match x.to_ascii_lowercase().as_str() {
                    "simple" => Some(Canon::Simple),
                    "relaxed" => Some(Canon::Relaxed),
                    _ => None,
                };
                let bad = || SignatureError::Canonicalization(c.to_string());
                let (hc, bc) = match c.split_once('/') {
                    Some((hc, bc)) => (parse(hc).ok_or_else(bad)?, parse(bc).ok_or_else(bad)?),
                    None => (parse(c).ok_or_else(bad)?, Canon::Simple),
                };
                Canonicalization {
                    header: hc,
                    body: bc,
                }
            }
        };
        let identity = get("i").map(str::to_string);
        if let Some(i) = &identity {
            let idom = i.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            let idom = to_ascii_domain(idom).ok_or(SignatureError::IdentityDomain)?;
            if idom != domain && !idom.ends_with(&format!(".{domain}")) {
                return Err(SignatureError::IdentityDomain);
            }
        }
        let length = get("l").map(|v| num("l", v)).transpose()?;
        let query_methods: Vec<String> = match get("q") {
            None => vec!["dns/txt".to_string()],
            Some(q) => strip_fws(q).split(':').map(str::to_string).collect(),
        };
        if !query_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case("dns/txt"))
        {
            return Err(SignatureError::QueryMethod);
        }
        let timestamp = get("t").map(|v| time("t", v)).transpose()?;
        let expiration = get("x").map(|v| time("x", v)).transpose()?;
        if let (Some(t), Some(x)) = (timestamp, expiration) {
            if x < t {
                return Err(SignatureError::ExpiryBeforeTimestamp);
            }
        }
        Ok(Signature {
            algorithm,
            signature,
            signature_b64: strip_fws(b_raw),
            body_hash,
            canonicalization,
            domain,
            signed_headers,
            identity,
            length,
            query_methods,
            selector,
            timestamp,
            expiration,
            copied_headers: get("z").map(str::to_string),
        })
    }
}

/// Best-effort `d=` and `s=` of a signature that did not parse, for reporting.
pub(crate) fn loose_domain_selector(value: &[u8]) -> (String, String) {
    let s = String::from_utf8_lossy(value);
    let mut d = String::new();
    let mut sel = String::new();
    for part in s.split(';') {
        if let Some((k, v)) = part.split_once('=') {
            let v = strip_fws(v).to_ascii_lowercase();
            match strip_fws(k).as_str() {
                "d" => d = v,
                "s" => sel = v,
                _ => {}
            }
        }
    }
    (d, sel)
}

/// The DKIM-Signature field (name to end, no final CRLF) with the value of its `b=` tag
/// removed, as hashed by signer and verifier. Everything after `b=` up to the next `;` or
/// the end is dropped, whitespace included.
pub(crate) fn strip_b_value(field: &[u8]) -> Vec<u8> {
    let colon = field.iter().position(|&c| c == b':').map_or(0, |i| i + 1);
    let mut out = Vec::with_capacity(field.len());
    out.extend_from_slice(&field[..colon]);
    let mut first = true;
    for part in field[colon..].split(|&c| c == b';') {
        if !first {
            out.push(b';');
        }
        first = false;
        let name_start = part
            .iter()
            .position(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
            .unwrap_or(part.len());
        let rest = &part[name_start..];
        let is_b = rest.first() == Some(&b'b')
            && rest[1..]
                .iter()
                .find(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
                == Some(&b'=');
        if is_b {
            let eq = part.iter().position(|&c| c == b'=').unwrap_or(part.len());
            out.extend_from_slice(&part[..(eq + 1).min(part.len())]);
        } else {
            out.extend_from_slice(part);
        }
    }
    out
}

/// Key type of a key record (`k=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// `rsa` (the default).
    Rsa,
    /// `ed25519` (RFC 8463).
    Ed25519,
}

/// A DKIM public key record (`<selector>._domainkey.<domain>` TXT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// `h=`: acceptable hash algorithms, empty means all.
    pub hashes: Vec<String>,
    /// `k=`.
    pub key_type: KeyType,
    /// `n=`: notes.
    pub notes: Option<String>,
    /// `p=`, decoded; empty means the key was revoked.
    pub public_key: Vec<u8>,
    /// `s=`: service types (default `*`).
    pub services: Vec<String>,
    /// `t=`: flags (`y` testing, `s` strict identity).
    pub flags: Vec<String>,
}

/// Why a key record is invalid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRecordError {
    /// The record is not valid UTF-8.
    #[error("key record is not valid UTF-8")]
    Utf8,
    /// The tag list is malformed.
    #[error("malformed tag list: {0}")]
    Tags(#[from] TagError),
    /// `v=` is present but not first or not `DKIM1`.
    #[error("bad version")]
    Version,
    /// `p=` is missing.
    #[error("missing p=")]
    MissingKey,
    /// `p=` is not base64.
    #[error("bad base64 in p=")]
    Base64,
    /// `k=` names an unknown key type.
    #[error("unknown key type {0:?}")]
    KeyType(String),
}

impl KeyRecord {
    /// Parses a key record (the TXT strings concatenated).
    pub fn parse(txt: &[u8]) -> Result<KeyRecord, KeyRecordError> {
        let s = std::str::from_utf8(txt).map_err(|_| KeyRecordError::Utf8)?;
        let tags = parse_tags(s)?;
        if let Some(pos) = tags.iter().position(|(k, _)| *k == "v") {
            if pos != 0 || tags[pos].1 != "DKIM1" {
                return Err(KeyRecordError::Version);
            }
        }
        let get = |n: &str| tags.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        let list = |v: &str| -> Vec<String> {
            strip_fws(v)
                .split(':')
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        };
        let key_type = match get("k") {
            None => KeyType::Rsa,
            Some(k) if k.eq_ignore_ascii_case("rsa") => KeyType::Rsa,
            Some(k) if k.eq_ignore_ascii_case("ed25519") => KeyType::Ed25519,
            Some(k) => return Err(KeyRecordError::KeyType(k.to_string())),
        };
        let p = get("p").ok_or(KeyRecordError::MissingKey)?;
        let public_key = base64::engine::general_purpose::STANDARD
            .decode(strip_fws(p))
            .map_err(|_| KeyRecordError::Base64)?;
        Ok(KeyRecord {
            hashes: get("h").map(list).unwrap_or_default(),
            key_type,
            notes: get("n").map(str::to_string),
            public_key,
            services: get("s").map(list).unwrap_or_else(|| vec!["*".to_string()]),
            flags: get("t").map(list).unwrap_or_default(),
        })
    }

    /// Whether flag `f` (`y`, `s`) is set.
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x.eq_ignore_ascii_case(f))
    }

    /// Whether the key may be used for email (`s=*` or `s=email`).
    pub fn allows_email(&self) -> bool {
        self.services
            .iter()
            .any(|s| s == "*" || s.eq_ignore_ascii_case("email"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "v=1; a=rsa-sha256; d=example.org; s=sel; h=From; bh=AAAA; b=AAAA";

    #[test]
    fn signature_ok() {
        let s = Signature::parse(MIN.as_bytes()).unwrap();
        assert_eq!(s.algorithm, Algorithm::RsaSha256);
        assert_eq!(s.domain, "example.org");
        assert_eq!(s.selector, "sel");
        assert_eq!(s.canonicalization.header, Canon::Simple);
        assert_eq!(s.canonicalization.body, Canon::Simple);
        assert_eq!(s.query_methods, vec!["dns/txt"]);
        let full = "v=1; a=ed25519-sha256; c=relaxed; d=Example.ORG; s=S1;\r\n\t h=from : to\r\n :subject; i=joe@sub.example.org; l=10; q=dns/txt; t=100; x=200; z=From:a; bh=AA AA; b=AA\r\n AA";
        let s = Signature::parse(full.as_bytes()).unwrap();
        assert_eq!(s.algorithm, Algorithm::Ed25519Sha256);
        assert_eq!(s.canonicalization.header, Canon::Relaxed);
        assert_eq!(s.canonicalization.body, Canon::Simple);
        assert_eq!(s.domain, "example.org");
        assert_eq!(s.selector, "s1");
        assert_eq!(s.signed_headers, vec!["from", "to", "subject"]);
        assert_eq!(s.length, Some(10));
        assert_eq!(s.timestamp, Some(100));
        assert_eq!(s.expiration, Some(200));
        assert_eq!(s.signature_b64, "AAAA");
        assert_eq!(s.signature, vec![0, 0, 0]);
    }

    #[test]
    fn signature_errors() {
        let m = |from: &str, to: &str| MIN.replace(from, to);
        let table: Vec<(String, SignatureError)> = vec![
            (m("v=1; ", ""), SignatureError::Missing("v")),
            (m("v=1", "v=2"), SignatureError::Version("2".into())),
            (
                m("rsa-sha256", "rsa-md5"),
                SignatureError::Algorithm("rsa-md5".into()),
            ),
            (m("; b=AAAA", ""), SignatureError::Missing("b")),
            (m("bh=AAAA", "bh=A!"), SignatureError::Base64("bh")),
            (
                m("d=example.org", "d=legitimate.com(.attacker.com"),
                SignatureError::Domain("legitimate.com(.attacker.com".into()),
            ),
            (m("h=From", "h=To"), SignatureError::FromNotSigned),
            (m("h=From", "h=From::To"), SignatureError::Missing("h")),
            (
                format!("{MIN}; c=fancy"),
                SignatureError::Canonicalization("fancy".into()),
            ),
            (
                format!("{MIN}; i=a@example.com"),
                SignatureError::IdentityDomain,
            ),
            (
                format!("{MIN}; i=a@xexample.org"),
                SignatureError::IdentityDomain,
            ),
            (format!("{MIN}; l=-1"), SignatureError::Number("l")),
            (
                format!("{MIN}; t=10; x=5"),
                SignatureError::ExpiryBeforeTimestamp,
            ),
            (format!("{MIN}; q=http"), SignatureError::QueryMethod),
            (
                format!("{MIN}; a=x"),
                SignatureError::Tags(TagError::Duplicate("a".into())),
            ),
        ];
        for (input, want) in table {
            assert_eq!(
                Signature::parse(input.as_bytes()).unwrap_err(),
                want,
                "{input}"
            );
        }
        assert_eq!(Signature::parse(b"\xff").unwrap_err(), SignatureError::Utf8);
    }

    #[test]
    fn strip_b() {
        let table: &[(&str, &str)] = &[
            (
                "DKIM-Signature: a=1; b=abc; c=2",
                "DKIM-Signature: a=1; b=; c=2",
            ),
            (
                "DKIM-Signature: a=1; b = ab\r\n c",
                "DKIM-Signature: a=1; b =",
            ),
            ("DKIM-Signature: bh=x; b=y", "DKIM-Signature: bh=x; b="),
            ("DKIM-Signature:b=y;bh=x", "DKIM-Signature:b=;bh=x"),
        ];
        for (input, want) in table {
            assert_eq!(
                String::from_utf8(strip_b_value(input.as_bytes())).unwrap(),
                *want
            );
        }
    }

    #[test]
    fn key_records() {
        let r = KeyRecord::parse(b"v=DKIM1; k=ed25519; h=sha256; t=y:s; s=email; n=hi; p=AAAA")
            .unwrap();
        assert_eq!(r.key_type, KeyType::Ed25519);
        assert!(r.has_flag("y") && r.has_flag("s"));
        assert!(r.allows_email());
        assert_eq!(r.hashes, vec!["sha256"]);
        assert_eq!(r.notes.as_deref(), Some("hi"));
        let r = KeyRecord::parse(b"p=").unwrap();
        assert!(r.public_key.is_empty());
        assert_eq!(r.key_type, KeyType::Rsa);
        assert!(!KeyRecord::parse(b"s=tlsrpt; p=AAAA")
            .unwrap()
            .allows_email());
        let bad: &[(&[u8], KeyRecordError)] = &[
            (b"v=DKIM1: g=*; k=rsa; p=AAAA", KeyRecordError::Version),
            (b"k=rsa; v=DKIM1; p=AAAA", KeyRecordError::Version),
            (
                b"k=ed25519-sha256; p=AAAA",
                KeyRecordError::KeyType("ed25519-sha256".into()),
            ),
            (b"k=rsa", KeyRecordError::MissingKey),
            (b"p=!!", KeyRecordError::Base64),
            (b"\xff", KeyRecordError::Utf8),
        ];
        for (input, want) in bad {
            assert_eq!(KeyRecord::parse(input).unwrap_err(), *want);
        }
    }
}
