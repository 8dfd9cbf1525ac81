//! Static zone data: answers [`Lookup`]s from master-file text, for tests and for the CLI
//! (checking a DNS setup offline).
//!
//! Supported: `$ORIGIN`, `$TTL`, relative names, `@`, an empty owner (the previous one),
//! optional TTL and class `IN`, parentheses spanning lines, `;` comments, and the types A,
//! AAAA, MX, TXT (several quoted strings, `\X` and `\DDD` escapes), PTR, CNAME and TLSA.
//! SOA, NS and other types are accepted and make their owner exist, nothing more.
//!
//! A name whose lookups should fail temporarily (SERVFAIL, timeout) is marked with
//! [`StaticZone::fail`] or, in the text, with the comment directive `;@tempfail NAME`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;

use super::{Lookup, LookupResult, Record, RecordType};

/// Longest CNAME chain followed.
pub const MAX_CNAME_CHAIN: usize = 8;

/// Why zone text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// A line could not be parsed; the line number (1-based) and what is wrong.
    #[error("line {line}: {msg}")]
    Syntax {
        /// The 1-based line number where the entry starts.
        line: usize,
        /// What is wrong.
        msg: String,
    },
}

/// Zone data in memory: records by (name, type), names that fail temporarily.
#[derive(Debug, Clone, Default)]
pub struct StaticZone {
    records: BTreeMap<String, Vec<Record>>,
    failing: BTreeSet<String>,
}

/// Lower-cases a name and removes one trailing dot.
pub(crate) fn normalize_name(name: &str) -> String {
    let n = name.strip_suffix('.').unwrap_or(name);
    n.to_ascii_lowercase()
}

fn record_type(r: &Record) -> RecordType {
    match r {
        Record::A(_) => RecordType::A,
        Record::Aaaa(_) => RecordType::Aaaa,
        Record::Mx { .. } => RecordType::Mx,
        Record::Txt(_) => RecordType::Txt,
        Record::Ptr(_) => RecordType::Ptr,
        Record::Cname(_) => RecordType::Cname,
        Record::Tlsa { .. } => RecordType::Tlsa,
    }
}

impl StaticZone {
    /// An empty zone.
    pub fn new() -> StaticZone {
        StaticZone::default()
    }

    /// Parses master-file text.
    pub fn parse(text: &str) -> Result<StaticZone, ZoneError> {
        let mut z = StaticZone::new();
        z.load(text)?;
        Ok(z)
    }

    /// Adds a record at `name` (absolute; case and a trailing dot do not matter).
    pub fn add(&mut self, name: &str, record: Record) {
        self.records
            .entry(normalize_name(name))
            .or_default()
            .push(record);
    }

    /// Makes `name` exist without records (as an owner of SOA/NS or unsupported types does).
    pub fn touch(&mut self, name: &str) {
        self.records.entry(normalize_name(name)).or_default();
    }

    /// Marks `name` so that every lookup of it fails temporarily (SERVFAIL or timeout).
    pub fn fail(&mut self, name: &str) {
        self.failing.insert(normalize_name(name));
    }

    /// Answers one question: CNAMEs followed (at most [`MAX_CNAME_CHAIN`]), NXDOMAIN when
    /// the name and every name below it are absent, NODATA when the name exists (or is an
    /// empty non-terminal) without records of the type.
    pub fn lookup(&self, q: &Lookup) -> LookupResult {
        let mut name = normalize_name(&q.name);
        for _ in 0..=MAX_CNAME_CHAIN {
            if self.failing.contains(&name) {
                return LookupResult::TempFail(format!("{name}: server failure"));
            }
            let Some(recs) = self.records.get(&name) else {
                if self.has_descendant(&name) {
                    return LookupResult::NoData;
                }
                return LookupResult::NxDomain;
            };
            if q.rtype != RecordType::Cname {
                if let Some(Record::Cname(target)) =
                    recs.iter().find(|r| matches!(r, Record::Cname(_)))
                {
                    name = target.clone();
                    continue;
                }
            }
            let found: Vec<Record> = recs
                .iter()
                .filter(|r| record_type(r) == q.rtype)
                .cloned()
                .collect();
            if found.is_empty() {
                return LookupResult::NoData;
            }
            return LookupResult::Records {
                records: found,
                authentic: false,
            };
        }
        LookupResult::TempFail(format!("{}: CNAME chain too long", q.name))
    }

    fn has_descendant(&self, name: &str) -> bool {
        let suffix = format!(".{name}");
        self.records.keys().any(|k| k.ends_with(&suffix))
    }

    fn load(&mut self, text: &str) -> Result<(), ZoneError> {
        let mut origin = String::new();
        let mut last_owner: Option<String> = None;
        let mut lines = text.lines().enumerate();
        while let Some((i, line)) = lines.next() {
            let lineno = i + 1;
            let err = |msg: &str| ZoneError::Syntax {
                line: lineno,
                msg: msg.to_string(),
            };
            if let Some(rest) = line.trim_start().strip_prefix(";@tempfail") {
                let name = rest.trim();
                if name.is_empty() {
                    return Err(err(";@tempfail needs a name"));
                }
                let n = absolute(name, &origin);
                self.fail(&n);
                continue;
            }
            let starts_blank = line.starts_with([' ', '\t']);
            let mut toks = tokenize(line).map_err(|m| err(&m))?;
            // Parentheses: keep reading lines until balanced.
            while toks.open > 0 {
                let Some((_, more)) = lines.next() else {
                    return Err(err("unbalanced parenthesis"));
                };
                let more_toks = tokenize(more).map_err(|m| err(&m))?;
                toks.open += more_toks.open;
                toks.items.extend(more_toks.items);
            }
            if toks.open < 0 {
                return Err(err("unbalanced parenthesis"));
            }
            let items = toks.items;
            let Some(first) = items.first() else {
                continue;
            };
            if !first.quoted && first.text.starts_with('$') {
                let arg = items.get(1).map(|t| t.text.as_str());
                match first.text.to_ascii_uppercase().as_str() {
                    "$ORIGIN" => {
                        let a = arg.ok_or_else(|| err("$ORIGIN needs a name"))?;
                        origin = absolute(a, &origin);
                    }
                    "$TTL" => {
                        let a = arg.ok_or_else(|| err("$TTL needs a value"))?;
                        a.parse::<u32>().map_err(|_| err("bad $TTL"))?;
                    }
                    _ => return Err(err("unknown directive")),
                }
                continue;
            }
            let mut idx = 0;
            let owner = if starts_blank {
                last_owner.clone().ok_or_else(|| err("no previous owner"))?
            } else {
                idx = 1;
                absolute(&first.text, &origin)
            };
            last_owner = Some(owner.clone());
            // Optional TTL and class, in either order.
            for _ in 0..2 {
                if let Some(t) = items.get(idx) {
                    if !t.quoted
                        && (t.text.bytes().all(|c| c.is_ascii_digit())
                            || t.text.eq_ignore_ascii_case("IN"))
                    {
                        idx += 1;
                    }
                }
            }
            let rtype = items
                .get(idx)
                .ok_or_else(|| err("missing record type"))?
                .text
                .to_ascii_uppercase();
            let rdata = items.get(idx + 1..).unwrap_or(&[]);
            let word = |n: usize| -> Result<&str, ZoneError> {
                rdata
                    .get(n)
                    .map(|t| t.text.as_str())
                    .ok_or_else(|| err("missing record data"))
            };
            let rec = match rtype.as_str() {
                "A" => Record::A(word(0)?.parse().map_err(|_| err("bad IPv4 address"))?),
                "AAAA" => Record::Aaaa(
                    word(0)?
                        .parse::<Ipv6Addr>()
                        .map_err(|_| err("bad IPv6 address"))?,
                ),
                "MX" => {
                    let preference = word(0)?.parse().map_err(|_| err("bad MX preference"))?;
                    let host = word(1)?;
                    let host = if host == "." {
                        String::new()
                    } else {
                        absolute(host, &origin)
                    };
                    Record::Mx { preference, host }
                }
                "TXT" | "SPF" => {
                    if rdata.is_empty() {
                        return Err(err("TXT without strings"));
                    }
                    Record::Txt(rdata.iter().map(|t| t.bytes.clone()).collect())
                }
                "PTR" => Record::Ptr(absolute(word(0)?, &origin)),
                "CNAME" => Record::Cname(absolute(word(0)?, &origin)),
                "TLSA" => {
                    let num = |n: usize| -> Result<u8, ZoneError> {
                        word(n)?.parse().map_err(|_| err("bad TLSA field"))
                    };
                    let hex: String = rdata
                        .get(3..)
                        .unwrap_or(&[])
                        .iter()
                        .map(|t| t.text.as_str())
                        .collect();
                    Record::Tlsa {
                        usage: num(0)?,
                        selector: num(1)?,
                        matching: num(2)?,
                        data: decode_hex(&hex).ok_or_else(|| err("bad TLSA data"))?,
                    }
                }
                t if !t.is_empty() && t.bytes().all(|c| c.is_ascii_alphanumeric()) => {
                    self.touch(&owner);
                    continue;
                }
                _ => return Err(err("bad record type")),
            };
            if rtype == "SPF" {
                // Type SPF (99) is obsolete; it only makes the owner exist.
                self.touch(&owner);
                continue;
            }
            self.add(&owner, rec);
        }
        Ok(())
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    let b = s.as_bytes();
    b.chunks(2)
        .map(|c| {
            let h = (c.first()?.to_ascii_lowercase() as char).to_digit(16)?;
            let l = (c.get(1)?.to_ascii_lowercase() as char).to_digit(16)?;
            u8::try_from(h * 16 + l).ok()
        })
        .collect()
}

/// `name` made absolute against `origin` (normalized).
fn absolute(name: &str, origin: &str) -> String {
    if name == "@" {
        return origin.to_string();
    }
    if name.ends_with('.') {
        return normalize_name(name);
    }
    let n = name.to_ascii_lowercase();
    if origin.is_empty() {
        n
    } else {
        format!("{n}.{origin}")
    }
}

struct Token {
    text: String,
    bytes: Vec<u8>,
    quoted: bool,
}

struct Tokens {
    items: Vec<Token>,
    open: i32,
}

/// Splits one line into words and quoted strings (escapes decoded), counting parentheses.
fn tokenize(line: &str) -> Result<Tokens, String> {
    let mut out = Tokens {
        items: Vec::new(),
        open: 0,
    };
    let b = line.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b' ' | b'\t' | b'\r' => i += 1,
            b';' => break,
            b'(' => {
                out.open += 1;
                i += 1;
            }
            b')' => {
                out.open -= 1;
                i += 1;
            }
            _ => {
                let quoted = c == b'"';
                if quoted {
                    i += 1;
                }
                let mut bytes = Vec::new();
                let mut raw = String::new();
                let mut closed = !quoted;
                while let Some(&c) = b.get(i) {
                    if quoted && c == b'"' {
                        closed = true;
                        i += 1;
                        break;
                    }
                    if !quoted && matches!(c, b' ' | b'\t' | b'\r' | b';' | b'(' | b')') {
                        break;
                    }
                    if c == b'\\' {
                        let d: Vec<u8> = b.get(i + 1..i + 4).unwrap_or(&[]).to_vec();
                        if d.len() == 3 && d.iter().all(u8::is_ascii_digit) {
                            let v = d.iter().fold(0u32, |a, x| a * 10 + u32::from(x - b'0'));
                            let v = u8::try_from(v).map_err(|_| "bad \\DDD escape".to_string())?;
                            bytes.push(v);
                            raw.push(char::from(v));
                            i += 4;
                        } else if let Some(&x) = b.get(i + 1) {
                            bytes.push(x);
                            raw.push(char::from(x));
                            i += 2;
                        } else {
                            return Err("dangling backslash".into());
                        }
                        continue;
                    }
                    bytes.push(c);
                    i += 1;
                }
                if !closed {
                    return Err("unterminated quoted string".into());
                }
                if !quoted {
                    raw = String::from_utf8_lossy(&bytes).into_owned();
                }
                out.items.push(Token {
                    text: raw,
                    bytes,
                    quoted,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = r#"
$ORIGIN example.org.
$TTL 300
@       IN SOA ns.example.org. admin.example.org. ( 1 3600 600
                86400 300 )
        IN MX 10 mail
        IN TXT "v=spf1 " "mx -all" ; comment
mail    300 IN A 192.0.2.1
        AAAA 2001:db8::1
www     CNAME mail.example.org.
loop1   CNAME loop2
loop2   CNAME loop1
dangling CNAME nowhere.example.net.
a.b.deep A 192.0.2.9
esc     TXT "a\"b\;c\065"
nullmx.example.net. MX 0 .
1.2.0.192.in-addr.arpa. PTR mail
_25._tcp.mail TLSA 3 1 1 ( 0123456789abcdef
   0123 )
;@tempfail broken
"#;

    fn q(name: &str, rtype: RecordType) -> Lookup {
        Lookup {
            name: name.into(),
            rtype,
        }
    }

    fn recs(v: Vec<Record>) -> LookupResult {
        LookupResult::Records {
            records: v,
            authentic: false,
        }
    }

    #[test]
    fn lookups() {
        let z = StaticZone::parse(ZONE).unwrap();
        use RecordType::*;
        let cases: Vec<(&str, RecordType, LookupResult)> = vec![
            (
                "example.org",
                Mx,
                recs(vec![Record::Mx {
                    preference: 10,
                    host: "mail.example.org".into(),
                }]),
            ),
            (
                "EXAMPLE.org.",
                Txt,
                recs(vec![Record::Txt(vec![
                    b"v=spf1 ".to_vec(),
                    b"mx -all".to_vec(),
                ])]),
            ),
            (
                "mail.example.org",
                A,
                recs(vec![Record::A([192, 0, 2, 1].into())]),
            ),
            (
                "mail.example.org",
                Aaaa,
                recs(vec![Record::Aaaa("2001:db8::1".parse().unwrap())]),
            ),
            ("mail.example.org", Txt, LookupResult::NoData),
            (
                "www.example.org",
                A,
                recs(vec![Record::A([192, 0, 2, 1].into())]),
            ),
            (
                "www.example.org",
                Cname,
                recs(vec![Record::Cname("mail.example.org".into())]),
            ),
            ("dangling.example.org", A, LookupResult::NxDomain),
            ("nope.example.org", A, LookupResult::NxDomain),
            ("b.deep.example.org", A, LookupResult::NoData),
            ("deep.example.org", A, LookupResult::NoData),
            (
                "a.b.deep.example.org",
                A,
                recs(vec![Record::A([192, 0, 2, 9].into())]),
            ),
            (
                "esc.example.org",
                Txt,
                recs(vec![Record::Txt(vec![b"a\"b;cA".to_vec()])]),
            ),
            (
                "nullmx.example.net",
                Mx,
                recs(vec![Record::Mx {
                    preference: 0,
                    host: String::new(),
                }]),
            ),
            (
                "1.2.0.192.in-addr.arpa",
                Ptr,
                recs(vec![Record::Ptr("mail.example.org".into())]),
            ),
            (
                "_25._tcp.mail.example.org",
                Tlsa,
                recs(vec![Record::Tlsa {
                    usage: 3,
                    selector: 1,
                    matching: 1,
                    data: vec![1, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 1, 0x23],
                }]),
            ),
        ];
        for (name, t, want) in cases {
            assert_eq!(z.lookup(&q(name, t)), want, "{name} {t:?}");
        }
        assert!(matches!(
            z.lookup(&q("loop1.example.org", A)),
            LookupResult::TempFail(_)
        ));
        assert!(matches!(
            z.lookup(&q("broken.example.org", A)),
            LookupResult::TempFail(_)
        ));
        let mut z2 = z.clone();
        z2.fail("mail.example.org");
        assert!(matches!(
            z2.lookup(&q("www.example.org", A)),
            LookupResult::TempFail(_)
        ));
    }

    #[test]
    fn errors() {
        for (text, line) in [
            ("a A 1.2.3.4.5", 1),
            ("\n\nx AAAA nope", 3),
            ("x TXT \"open", 1),
            ("x MX ten y", 1),
            ("x TXT (\n\"a\"", 1),
            ("$BOGUS x", 1),
            ("  A 1.2.3.4", 1),
            ("x TLSA 3 1 1 abc", 1),
        ] {
            match StaticZone::parse(text) {
                Err(ZoneError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text}"),
                Ok(_) => panic!("accepted {text:?}"),
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn parse_never_panics(s in "\\PC{0,200}") {
            let _ = StaticZone::parse(&s);
        }
    }
}
