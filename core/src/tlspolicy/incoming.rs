//! Incoming TLS reports (RFC 8460): whether a report that arrived at one of our reporting
//! addresses is kept, and under which of our policy domains.
//!
//! Following RFC 8460 section 5.3 as mox applies it: the message must carry a passing DKIM
//! signature of the sender's domain (the From domain, or a parent of it under the same
//! organizational domain); a signature that covers only part of the body (`l=`) does not
//! pass here (the verifier gives it the policy status). Then only the report's policies for
//! one of our domains (a configured domain or our host name) are kept, one record each; a
//! report without any is not kept. The message itself is mail either way: this decides only
//! what is stored as a report.

use super::tlsrpt::Report;
use crate::dkim::verify::{DkimResult, Status};

/// Why a report that parsed is not kept.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ignored {
    /// No passing DKIM signature of the sender's (From) domain.
    NoAcceptableDkim,
    /// None of its policy domains is ours.
    UnknownDomain,
}

impl Ignored {
    /// A short text for logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Ignored::NoAcceptableDkim => "no passing DKIM signature of the From domain",
            Ignored::UnknownDomain => "no policy domain in the report is ours",
        }
    }
}

/// Whether a DKIM signature of `sig_domain` vouches for mail From `from_domain`: the same
/// domain, or `from_domain` is a subdomain of it with the same organizational domain.
pub fn dkim_domain_matches(sig_domain: &str, from_domain: &str) -> bool {
    let s = sig_domain.trim_end_matches('.').to_ascii_lowercase();
    let f = from_domain.trim_end_matches('.').to_ascii_lowercase();
    if s.is_empty() {
        return false;
    }
    s == f
        || f.ends_with(&format!(".{s}"))
            && crate::publicsuffix::organizational_domain(&f)
                == crate::publicsuffix::organizational_domain(&s)
}

/// The policy domains (lower case, without a trailing dot, each once, in report order)
/// under which an incoming `report` is kept, or why it is not. `from_domain` is the
/// message's From domain, `dkim` the verifier's results, `is_ours` says whether a domain
/// is one of ours (configured, or the host name).
pub fn incoming_report_domains(
    report: &Report,
    from_domain: Option<&str>,
    dkim: &[DkimResult],
    is_ours: impl Fn(&str) -> bool,
) -> Result<Vec<String>, Ignored> {
    let Some(from) = from_domain else {
        return Err(Ignored::NoAcceptableDkim);
    };
    let signed = dkim
        .iter()
        .any(|r| r.status == Status::Pass && dkim_domain_matches(&r.domain, from));
    if !signed {
        return Err(Ignored::NoAcceptableDkim);
    }
    let mut ours: Vec<String> = Vec::new();
    for p in &report.policies {
        let d = p
            .policy
            .policy_domain
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if !d.is_empty() && is_ours(&d) && !ours.contains(&d) {
            ours.push(d);
        }
    }
    if ours.is_empty() {
        return Err(Ignored::UnknownDomain);
    }
    Ok(ours)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::super::tlsrpt::parse_report;
    use super::*;

    /// The report of mox's TestTLSReport, with `xmox.nl` as its only policy domain.
    const SEED: &str = r#"{"organization-name":"Example.org","date-range":{"start-datetime":"2022-01-07T00:00:00Z","end-datetime":"2022-01-07T23:59:59Z"},"contact-info":"tlsrpt@example.org","report-id":"1","policies":[{"policy":{"policy-type":"no-policy-found","policy-domain":"xmox.nl"},"summary":{"total-successful-session-count":1,"total-failure-session-count":0}}]}"#;

    fn dkim(status: Status, domain: &str) -> DkimResult {
        DkimResult {
            status,
            domain: domain.to_string(),
            selector: "sel".into(),
            identity: None,
            algorithm: None,
            b: String::new(),
            key_bits: None,
            testing: false,
            error: None,
        }
    }

    fn ours(d: &str) -> bool {
        d == "mox.example" || d == "mailhost.mox.example"
    }

    fn report(domains: &[&str]) -> Report {
        let mut r = parse_report(SEED.as_bytes()).unwrap();
        let p = r.policies[0].clone();
        r.policies = domains
            .iter()
            .map(|d| {
                let mut p = p.clone();
                p.policy.policy_domain = d.to_string();
                p
            })
            .collect();
        r
    }

    /// The seed's three reports (xmox.nl, mox.example, the host name) and the DKIM cases.
    #[test]
    fn decisions() {
        let pass = [dkim(Status::Pass, "example.org")];
        type Case<'a> = (
            &'a [&'a str],
            Option<&'a str>,
            &'a [DkimResult],
            Result<Vec<&'a str>, Ignored>,
        );
        let fail = [dkim(Status::Fail, "example.org")];
        let policy = [dkim(Status::Policy, "example.org")];
        let other = [dkim(Status::Pass, "example.net")];
        let parent = [dkim(Status::Pass, "example.org")];
        let child = [dkim(Status::Pass, "mail.example.org")];
        let cases: Vec<Case> = vec![
            (
                &["xmox.nl"],
                Some("example.org"),
                &pass,
                Err(Ignored::UnknownDomain),
            ),
            (
                &["mox.example"],
                Some("example.org"),
                &pass,
                Ok(vec!["mox.example"]),
            ),
            (
                &["mailhost.mox.example."],
                Some("example.org"),
                &pass,
                Ok(vec!["mailhost.mox.example"]),
            ),
            // Only our domains, each once.
            (
                &[
                    "xmox.nl",
                    "MOX.example",
                    "mox.example",
                    "mailhost.mox.example",
                ],
                Some("example.org"),
                &pass,
                Ok(vec!["mox.example", "mailhost.mox.example"]),
            ),
            // DKIM: must pass, for the From domain or a parent in the same organization.
            (
                &["mox.example"],
                Some("example.org"),
                &fail,
                Err(Ignored::NoAcceptableDkim),
            ),
            (
                &["mox.example"],
                Some("example.org"),
                &policy,
                Err(Ignored::NoAcceptableDkim),
            ),
            (
                &["mox.example"],
                Some("example.org"),
                &other,
                Err(Ignored::NoAcceptableDkim),
            ),
            (
                &["mox.example"],
                Some("example.org"),
                &[],
                Err(Ignored::NoAcceptableDkim),
            ),
            (
                &["mox.example"],
                None,
                &pass,
                Err(Ignored::NoAcceptableDkim),
            ),
            (
                &["mox.example"],
                Some("mail.example.org"),
                &parent,
                Ok(vec!["mox.example"]),
            ),
            // A signature of a subdomain does not vouch for its parent.
            (
                &["mox.example"],
                Some("example.org"),
                &child,
                Err(Ignored::NoAcceptableDkim),
            ),
        ];
        for (i, (domains, from, dk, want)) in cases.into_iter().enumerate() {
            let got = incoming_report_domains(&report(domains), from, dk, ours);
            let want = want.map(|v| v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "case {i}: {domains:?} from {from:?}");
        }
    }

    #[test]
    fn dkim_domains() {
        assert!(dkim_domain_matches("Example.org.", "example.org"));
        assert!(dkim_domain_matches("example.org", "a.b.example.org"));
        assert!(!dkim_domain_matches("a.example.org", "example.org"));
        assert!(!dkim_domain_matches("", "example.org"));
        assert!(!dkim_domain_matches("ample.org", "example.org"));
        // A public suffix signs for nobody below it.
        assert!(!dkim_domain_matches("co.uk", "example.co.uk"));
    }
}
