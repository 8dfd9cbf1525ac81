//! Rulesets of a destination address: which incoming messages go to another mailbox, which
//! come through a forwarder (and are not judged by the forwarder's reputation), which go to
//! a mailbox instead of being refused. The first ruleset whose every given condition holds
//! applies (mox's rulesets, in rmox's words).

use regex::Regex;

/// One ruleset; conditions that are `None`/empty do not restrict.
#[derive(Clone, Debug)]
pub struct Ruleset {
    /// MAIL FROM (the address, `localpart@domain`; empty for the null sender) must match.
    pub smtp_mail_from: Option<Regex>,
    /// A domain that must be verified for the message: SPF passed for the MAIL FROM
    /// domain, or a DKIM signature of it passed.
    pub verified_domain: Option<String>,
    /// Header fields (lowercase name) whose value must match (any of the field's
    /// occurrences); every entry must hold.
    pub headers: Vec<(String, Regex)>,
    /// The message came through a forwarder: its IP, EHLO and MAIL FROM (the forwarder's)
    /// are not reputation evidence, and its DMARC result is not used.
    pub is_forward: bool,
    /// A refused message goes to this mailbox and is accepted (250) instead.
    pub accept_rejects_to_mailbox: Option<String>,
    /// The mailbox the message goes to.
    pub mailbox: String,
}

/// What a ruleset is matched against.
#[derive(Clone, Debug, Default)]
pub struct RuleFacts<'a> {
    /// MAIL FROM, `localpart@domain` (empty for `<>`).
    pub mail_from: &'a str,
    /// Domains verified for the message (SPF-passed MAIL FROM domain, passing DKIM
    /// domains), lowercase.
    pub verified_domains: &'a [String],
    /// The message's header section.
    pub header: &'a [u8],
}

impl Ruleset {
    /// Whether every condition of this ruleset holds.
    pub fn matches(&self, f: &RuleFacts<'_>) -> bool {
        if let Some(re) = &self.smtp_mail_from {
            if !re.is_match(f.mail_from) {
                return false;
            }
        }
        if let Some(d) = &self.verified_domain {
            if !f.verified_domains.iter().any(|v| v.eq_ignore_ascii_case(d)) {
                return false;
            }
        }
        self.headers.iter().all(|(name, re)| {
            crate::message::values(f.header, name).any(|v| {
                let v = String::from_utf8_lossy(v);
                re.is_match(v.trim())
            })
        })
    }
}

/// The first ruleset that matches.
pub fn first_match<'a>(rules: &'a [Ruleset], f: &RuleFacts<'_>) -> Option<&'a Ruleset> {
    rules.iter().find(|r| r.matches(f))
}

/// A regular expression of a ruleset, with a clear error for a bad one. Matching is case
/// insensitive, as mox's is, and linear in the input (the regex crate does not backtrack).
pub fn regex(pattern: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs() -> Ruleset {
        Ruleset {
            smtp_mail_from: None,
            verified_domain: None,
            headers: Vec::new(),
            is_forward: false,
            accept_rejects_to_mailbox: None,
            mailbox: "Inbox".into(),
        }
    }

    #[test]
    fn conditions() {
        let header = b"From: <a@list.example>\r\nList-Id: <dev.list.example>\r\nSubject: Hi\r\n";
        let verified = vec!["list.example".to_string()];
        let f = RuleFacts {
            mail_from: "bounce@list.example",
            verified_domains: &verified,
            header,
        };
        assert!(rs().matches(&f), "no conditions: matches");
        let mut r = rs();
        r.smtp_mail_from = Some(regex("^bounce@list\\.example$").unwrap());
        assert!(r.matches(&f));
        r.smtp_mail_from = Some(regex("@other\\.example$").unwrap());
        assert!(!r.matches(&f));
        let mut r = rs();
        r.verified_domain = Some("LIST.example".into());
        assert!(r.matches(&f));
        r.verified_domain = Some("other.example".into());
        assert!(!r.matches(&f));
        let mut r = rs();
        r.headers = vec![("list-id".into(), regex("dev\\.list").unwrap())];
        assert!(r.matches(&f));
        r.headers.push(("subject".into(), regex("^bye").unwrap()));
        assert!(!r.matches(&f));
        r.headers = vec![("x-missing".into(), regex(".*").unwrap())];
        assert!(!r.matches(&f), "a missing field does not match");
        // First match wins.
        let mut a = rs();
        a.mailbox = "A".into();
        a.verified_domain = Some("other.example".into());
        let mut b = rs();
        b.mailbox = "B".into();
        let rules = [a, b];
        assert_eq!(
            first_match(&rules, &f).map(|r| r.mailbox.as_str()),
            Some("B")
        );
        assert!(regex("(").is_err());
    }
}
