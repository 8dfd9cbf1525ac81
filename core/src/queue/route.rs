//! Routes and transports: how a message leaves. Routes are configured on the sender's
//! account, the sender's domain and globally, evaluated in that order for every attempt; the
//! first route that matches names the transport. No match, or an empty transport name, means
//! direct delivery to the recipient domain's MX hosts.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use super::{domain_of, QueueItem};

/// One route: every condition that is set must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Sender domains; empty matches any. An entry starting with `.` matches any subdomain
    /// of the rest (`.example.org` matches `mail.example.org`, not `example.org`).
    pub from_domains: Vec<String>,
    /// Recipient domains, same form.
    pub to_domains: Vec<String>,
    /// Matches only from this attempt number on (1 is the first attempt; 0 and 1 match
    /// always).
    pub min_attempts: u32,
    /// The transport's name; empty for direct delivery.
    pub transport: String,
}

fn domain_matches(patterns: &[String], domain: &str) -> bool {
    patterns.is_empty()
        || patterns.iter().any(|p| {
            if p.starts_with('.') {
                domain.len() > p.len()
                    && domain
                        .get(domain.len() - p.len()..)
                        .is_some_and(|s| s.eq_ignore_ascii_case(p))
            } else {
                p.eq_ignore_ascii_case(domain)
            }
        })
}

impl Route {
    /// Whether the route applies to attempt number `attempt` (1-based) of a message from
    /// `sender_domain` to `recipient_domain`.
    pub fn matches(&self, sender_domain: &str, recipient_domain: &str, attempt: u32) -> bool {
        domain_matches(&self.from_domains, sender_domain)
            && domain_matches(&self.to_domains, recipient_domain)
            && attempt >= self.min_attempts
    }
}

/// Picks the transport for the next attempt on `item` from route lists in order (account,
/// sender domain, global): the first matching route's transport, `None` for direct delivery.
pub fn select_transport<'a>(lists: &[&'a [Route]], item: &QueueItem) -> Option<&'a str> {
    let from = item.sender_domain();
    let to = item.recipient_domain.to_ascii_lowercase();
    let attempt = item.attempts.saturating_add(1);
    lists
        .iter()
        .flat_map(|l| l.iter())
        .find(|r| r.matches(&from, &to, attempt))
        .map(|r| r.transport.as_str())
        .filter(|t| !t.is_empty())
}

/// All configured routes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    /// Per account name.
    pub accounts: BTreeMap<String, Vec<Route>>,
    /// Per sender domain (lower-case).
    pub domains: BTreeMap<String, Vec<Route>>,
    /// For everything.
    pub global: Vec<Route>,
}

impl Routes {
    /// The transport for the next attempt on `item` (see [`select_transport`]).
    pub fn select(&self, item: &QueueItem) -> Option<&str> {
        let empty: &[Route] = &[];
        let account = item
            .sender_account
            .as_ref()
            .and_then(|a| self.accounts.get(a))
            .map_or(empty, Vec::as_slice);
        let domain = self
            .domains
            .get(&domain_of(&item.mail_from))
            .map_or(empty, Vec::as_slice);
        select_transport(&[account, domain, &self.global], item)
    }
}

/// Credentials for a transport that authenticates.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpAuth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Mechanisms allowed, in the order to try them; empty: the strongest the server
    /// offers among SCRAM-SHA-256(-PLUS), SCRAM-SHA-1(-PLUS), CRAM-MD5, PLAIN.
    pub mechanisms: Vec<crate::sasl::Mechanism>,
}

impl std::fmt::Debug for SmtpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("mechanisms", &self.mechanisms)
            .finish()
    }
}

/// TLS on a connection to a smarthost or submission server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS when offered, plain otherwise.
    Opportunistic,
    /// STARTTLS is required.
    StartTls {
        /// Check the certificate (name and chain).
        verify: bool,
    },
    /// TLS from the first byte (submissions, port 465).
    Implicit {
        /// Check the certificate (name and chain).
        verify: bool,
    },
    /// No TLS at all.
    None,
}

/// Direct delivery to the MX hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransportDirect {
    /// Connect over IPv4.
    pub ipv4: bool,
    /// Connect over IPv6.
    pub ipv6: bool,
}

impl Default for TransportDirect {
    fn default() -> Self {
        TransportDirect {
            ipv4: true,
            ipv6: true,
        }
    }
}

/// Relaying to a smarthost over SMTP (usually port 25), optionally authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportSmtp {
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS mode.
    pub tls: SmtpTls,
    /// Credentials, if the smarthost wants them.
    pub auth: Option<SmtpAuth>,
}

/// Submission to a mail service with authentication (port 587 STARTTLS or 465 implicit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportSubmission {
    /// Host name.
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS from the first byte; STARTTLS (required, verified) otherwise.
    pub implicit_tls: bool,
    /// Credentials.
    pub auth: SmtpAuth,
}

/// Direct delivery through a SOCKS5 proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportSocks5 {
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// The IPs the proxy connects from (for SPF checks and as the connection's local
    /// address in logs).
    pub remote_ips: Vec<IpAddr>,
    /// The host name to use in EHLO, matching the proxy's IPs.
    pub ehlo_hostname: String,
}

/// A named way to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// MX delivery, with IPv4/IPv6 switches.
    Direct(TransportDirect),
    /// Relay to a smarthost.
    Smarthost(TransportSmtp),
    /// Submission with authentication.
    Submission(TransportSubmission),
    /// MX delivery through a SOCKS5 proxy.
    Socks5(TransportSocks5),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::item;

    fn r(from: &[&str], to: &[&str], min: u32, t: &str) -> Route {
        Route {
            from_domains: from.iter().map(|s| s.to_string()).collect(),
            to_domains: to.iter().map(|s| s.to_string()).collect(),
            min_attempts: min,
            transport: t.into(),
        }
    }

    #[test]
    fn route_matching() {
        let cases = [
            (r(&[], &[], 0, "t"), "example.org", "example.net", 1, true),
            (
                r(&["example.org"], &[], 0, "t"),
                "EXAMPLE.org",
                "x",
                1,
                true,
            ),
            (
                r(&["example.org"], &[], 0, "t"),
                "mail.example.org",
                "x",
                1,
                false,
            ),
            (
                r(&[".example.org"], &[], 0, "t"),
                "mail.example.org",
                "x",
                1,
                true,
            ),
            (
                r(&[".example.org"], &[], 0, "t"),
                "example.org",
                "x",
                1,
                false,
            ),
            (
                r(&[".example.org"], &[], 0, "t"),
                "badexample.org",
                "x",
                1,
                false,
            ),
            (
                r(&[], &["gmail.com", "x.example"], 0, "t"),
                "a",
                "x.example",
                1,
                true,
            ),
            (r(&[], &["gmail.com"], 0, "t"), "a", "x.example", 1, false),
            (r(&[], &[], 4, "t"), "a", "b", 3, false),
            (r(&[], &[], 4, "t"), "a", "b", 4, true),
            (r(&[], &[], 4, "t"), "a", "b", 9, true),
        ];
        for (route, from, to, attempt, want) in cases {
            assert_eq!(
                route.matches(from, to, attempt),
                want,
                "{route:?} {from} {to} {attempt}"
            );
        }
    }

    #[test]
    fn first_match_wins_account_domain_global() {
        let mut routes = Routes {
            global: vec![r(&[], &[], 0, "global")],
            ..Routes::default()
        };
        routes.domains.insert(
            "example.org".into(),
            vec![r(&[], &["example.net"], 0, "domain")],
        );
        routes.accounts.insert(
            "alice".into(),
            vec![r(&[], &[], 3, "account"), r(&[], &["nomatch"], 0, "x")],
        );
        let mut it = item(1);
        assert_eq!(routes.select(&it), Some("domain"));
        it.attempts = 2; // third attempt
        assert_eq!(routes.select(&it), Some("account"));
        it.sender_account = Some("bob".into());
        assert_eq!(routes.select(&it), Some("domain"));
        it.recipient_domain = "other.example".into();
        assert_eq!(routes.select(&it), Some("global"));
        it.mail_from = "bob@elsewhere.example".into();
        assert_eq!(routes.select(&it), Some("global"));
        routes.global = vec![r(&[], &[], 0, "")];
        assert_eq!(routes.select(&it), None, "empty transport is direct");
        assert_eq!(Routes::default().select(&it), None);
        let g = [r(&[], &[], 0, "g")];
        assert_eq!(select_transport(&[&[], &g], &it), Some("g"));
    }

    #[test]
    fn auth_debug_hides_password() {
        let a = SmtpAuth {
            username: "u".into(),
            password: "secret".into(),
            mechanisms: vec![],
        };
        assert!(!format!("{a:?}").contains("secret"));
    }
}
