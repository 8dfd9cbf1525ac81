//! The Public Suffix List: which part of a domain is a public suffix, and so which
//! domain is the registrable ("organizational") domain. DKIM uses it to refuse signatures
//! for a TLD, and the TLS and DSN heuristics to group a domain's hosts. DMARC does not:
//! RFC 9989 finds Organizational Domains by the DNS tree walk (`crate::dmarc`).
//!
//! The list is embedded at build time (`core/data/public_suffix_list.dat`, MPL-2.0; see
//! `core/data/SOURCE-public_suffix_list.txt`) and parsed once per process on first use.
//! A newer list can be loaded with [`PublicSuffixList::parse`] and used through its
//! methods.

use std::collections::HashSet;
use std::sync::OnceLock;

const BUILTIN: &str = include_str!("../data/public_suffix_list.dat");

/// A parsed public suffix list. Rules are kept in A-label (ASCII) form.
#[derive(Clone, Debug, Default)]
pub struct PublicSuffixList {
    rules: HashSet<String>,
    /// `*.X` rules, stored as `X`.
    wildcards: HashSet<String>,
    /// `!X` rules, stored as `X`.
    exceptions: HashSet<String>,
}

fn to_ascii(s: &str) -> Option<String> {
    if s.is_ascii() {
        Some(s.to_ascii_lowercase())
    } else {
        idna::domain_to_ascii(s).ok()
    }
}

impl PublicSuffixList {
    /// Parses the list format: one rule per line, `//` comments, `*.` wildcards, `!`
    /// exceptions. Rules that fail IDNA conversion are skipped.
    pub fn parse(text: &str) -> PublicSuffixList {
        let mut l = PublicSuffixList::default();
        for line in text.lines() {
            let Some(rule) = line.split_whitespace().next() else {
                continue;
            };
            if rule.starts_with("//") {
                continue;
            }
            if let Some(x) = rule.strip_prefix('!') {
                if let Some(a) = to_ascii(x) {
                    l.exceptions.insert(a);
                }
            } else if let Some(x) = rule.strip_prefix("*.") {
                if let Some(a) = to_ascii(x) {
                    l.wildcards.insert(a);
                }
            } else if let Some(a) = to_ascii(rule) {
                l.rules.insert(a);
            }
        }
        l
    }

    /// The public suffix of an A-label, lower-case domain without trailing dot.
    fn suffix_of<'a>(&self, domain: &'a str) -> &'a str {
        let mut starts: Vec<usize> = vec![0];
        starts.extend(domain.match_indices('.').map(|(i, _)| i + 1));
        for (n, &i) in starts.iter().enumerate() {
            let cand = &domain[i..];
            let parent = starts.get(n + 1).map(|&j| &domain[j..]);
            if self.exceptions.contains(cand) {
                return parent.unwrap_or(cand);
            }
            if self.rules.contains(cand) || parent.is_some_and(|p| self.wildcards.contains(p)) {
                return cand;
            }
        }
        // The implicit rule `*`: the last label.
        starts.last().map_or(domain, |&i| &domain[i..])
    }

    /// The registrable domain (public suffix plus one label), `None` when the domain is
    /// itself a public suffix or malformed (empty, leading dot, empty label). The answer
    /// is in the form of the input: Unicode in, Unicode out.
    pub fn registrable_domain(&self, domain: &str) -> Option<String> {
        let d = domain.strip_suffix('.').unwrap_or(domain);
        if d.is_empty() || d.split('.').any(str::is_empty) {
            return None;
        }
        let ascii = to_ascii(d)?;
        let suffix = self.suffix_of(&ascii);
        if suffix.len() == ascii.len() {
            return None;
        }
        let head = &ascii[..ascii.len() - suffix.len() - 1];
        let label = head.rsplit('.').next().unwrap_or(head);
        let r = format!("{label}.{suffix}");
        if d.is_ascii() {
            Some(r)
        } else {
            Some(idna::domain_to_unicode(&r).0)
        }
    }

    /// The organizational domain: the registrable domain, or the domain itself
    /// (lower-cased) when it is a public suffix.
    pub fn organizational_domain(&self, domain: &str) -> String {
        self.registrable_domain(domain)
            .unwrap_or_else(|| domain.trim_end_matches('.').to_ascii_lowercase())
    }

    /// Whether `domain` is exactly a public suffix (including unlisted TLDs).
    pub fn is_public_suffix(&self, domain: &str) -> bool {
        let d = domain.strip_suffix('.').unwrap_or(domain);
        match to_ascii(d) {
            Some(a) if !a.is_empty() => self.suffix_of(&a).len() == a.len(),
            _ => false,
        }
    }
}

/// The list embedded at build time, parsed on first use.
pub fn builtin() -> &'static PublicSuffixList {
    static LIST: OnceLock<PublicSuffixList> = OnceLock::new();
    LIST.get_or_init(|| PublicSuffixList::parse(BUILTIN))
}

/// [`PublicSuffixList::organizational_domain`] with the built-in list.
pub fn organizational_domain(domain: &str) -> String {
    builtin().organizational_domain(domain)
}

/// [`PublicSuffixList::registrable_domain`] with the built-in list.
pub fn registrable_domain(domain: &str) -> Option<String> {
    builtin().registrable_domain(domain)
}

/// [`PublicSuffixList::is_public_suffix`] with the built-in list.
pub fn is_public_suffix(domain: &str) -> bool {
    builtin().is_public_suffix(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(s: &str) -> Option<String> {
        let s = s.trim();
        if s == "null" {
            None
        } else {
            Some(s.trim_matches('\'').to_string())
        }
    }

    /// The list's own test file, pinned to the embedded copy.
    #[test]
    fn test_psl_vectors() {
        let mut n = 0;
        for line in include_str!("../data/test_psl.txt").lines() {
            let Some(call) = line.strip_prefix("checkPublicSuffix(") else {
                continue;
            };
            let call = call.trim_end_matches(");");
            let (input, want) = call.split_once(',').unwrap();
            let got = arg(input).and_then(|d| registrable_domain(&d));
            assert_eq!(got, arg(want), "{line}");
            n += 1;
        }
        assert!(n >= 70, "only {n} cases");
    }

    #[test]
    fn organizational() {
        let table = [
            ("mail.example.org", "example.org"),
            ("Example.ORG", "example.org"),
            ("a.b.example.co.uk", "example.co.uk"),
            ("co.uk", "co.uk"),
            ("com", "com"),
            ("localhost", "localhost"),
        ];
        for (d, want) in table {
            assert_eq!(organizational_domain(d), want, "{d}");
        }
        assert!(is_public_suffix("com"));
        assert!(is_public_suffix("co.uk"));
        assert!(!is_public_suffix("example.com"));
        assert!(!is_public_suffix(""));
        let custom = PublicSuffixList::parse("// c\ntest\n*.wild.test\n!ok.wild.test\n");
        assert_eq!(
            custom.registrable_domain("a.b.test").as_deref(),
            Some("b.test")
        );
        assert_eq!(
            custom.registrable_domain("a.x.wild.test").as_deref(),
            Some("a.x.wild.test")
        );
        assert_eq!(
            custom.registrable_domain("a.ok.wild.test").as_deref(),
            Some("ok.wild.test")
        );
    }
}
