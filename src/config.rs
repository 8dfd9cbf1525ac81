//! The configuration file: one TOML document, parsed strictly (unknown keys are errors),
//! validated once, with errors that name the file, the key and the problem on one line.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A user's mistake in the configuration: printed as one line.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {problem}")]
pub struct ConfigError {
    /// The file.
    pub file: String,
    /// The key (dotted path), or `-` when the file as a whole is at fault.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

/// One port of a listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// TCP port.
    pub port: u16,
    /// Whether to listen on it.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// Certificate and key files (PEM).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, PEM.
    pub cert_file: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// An address and the ports served on it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Name, for logs.
    pub name: String,
    /// IP address to listen on.
    pub ip: IpAddr,
    /// Incoming delivery (port 25).
    pub smtp: Option<PortConfig>,
    /// Submission with STARTTLS (port 587).
    pub submission: Option<PortConfig>,
    /// Submission with implicit TLS (port 465).
    pub submissions: Option<PortConfig>,
    /// TLS certificate; without it STARTTLS is not offered and submissions cannot run.
    pub tls: Option<TlsFiles>,
    /// Require TLS before AUTH (default true).
    #[serde(default = "yes")]
    pub require_tls_for_auth: bool,
}

/// DKIM signing settings of a domain.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct DkimConfig {
    /// Selector name -> private key file (PKCS#8 PEM).
    #[serde(default)]
    pub selectors: BTreeMap<String, PathBuf>,
    /// Selectors used for signing.
    #[serde(default)]
    pub sign: Vec<String>,
}

/// A domain we accept mail for.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// `+` makes `user+tag@domain` deliver to `user@domain`.
    pub localpart_catchall_separator: Option<String>,
    /// Whether local parts are case-sensitive (default false).
    #[serde(default)]
    pub localpart_case_sensitive: bool,
    /// Disabled: mail for it is refused temporarily, and it cannot send.
    #[serde(default)]
    pub disabled: bool,
    /// DKIM signing.
    #[serde(default)]
    pub dkim: DkimConfig,
}

/// Settings of one destination address of an account.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Mailbox to deliver to (default Inbox).
    pub mailbox: Option<String>,
}

/// An account.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// Its domain: the default for addresses and for outgoing mail.
    pub domain: String,
    /// Addresses delivered to this account; `"@domain"` is a catchall.
    #[serde(default)]
    pub destinations: BTreeMap<String, Destination>,
    /// Messages per day it may submit (default 1000).
    pub max_outgoing_messages_per_day: Option<u32>,
    /// New recipients per day it may send to (default 200).
    pub max_first_time_recipients_per_day: Option<u32>,
    /// Total size of its messages in octets; 0 means no quota.
    #[serde(default)]
    pub quota_message_size: u64,
    /// When set, logins are refused with this message.
    pub login_disabled: Option<String>,
    /// Mailbox for rejected messages, when set.
    pub rejects_mailbox: Option<String>,
}

/// Where mail to postmaster goes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PostmasterConfig {
    /// Account.
    pub account: String,
    /// Mailbox (default Inbox).
    #[serde(default = "inbox")]
    pub mailbox: String,
}

fn inbox() -> String {
    "Inbox".to_string()
}

/// Limits against abuse; defaults follow mox's built-in numbers.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message in octets.
    pub max_message_size: u64,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Concurrent connections from one IP.
    pub connections_per_ip: u32,
    /// New connections per minute from one IP network.
    pub connections_per_minute: u32,
    /// Failed logins per minute from one IP network.
    pub auth_failures_per_minute: u32,
    /// Messages per minute from one IP network into one account.
    pub deliveries_per_minute: u32,
    /// Messages per day from one IP network into one account.
    pub deliveries_per_day: u32,
    /// Seconds to wait for a command (RFC 5321 4.5.3.2: at least 300).
    pub command_timeout_secs: u64,
    /// Seconds to wait for more message data.
    pub data_timeout_secs: u64,
    /// Delay in seconds before a failed login is answered (times the failures so far).
    pub auth_failure_delay_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 100 << 20,
            max_recipients: 1000,
            connections_per_ip: 100,
            connections_per_minute: 300,
            auth_failures_per_minute: 10,
            deliveries_per_minute: 500,
            deliveries_per_day: 20_000,
            command_timeout_secs: 300,
            data_timeout_secs: 300,
            auth_failure_delay_secs: 1,
        }
    }
}

/// Checks of incoming delivery (port 25).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Incoming {
    /// Run the DNS-based checks (EHLO, MAIL FROM domain, SPF, DKIM, DMARC, iprev).
    pub checks: bool,
    /// DNSBL zones to check the client's IP against.
    pub dnsbl: Vec<String>,
    /// Refuse messages whose From domain's DMARC policy says reject.
    pub dmarc_reject: bool,
    /// Refuse (temporarily) first-time senders without valid reverse DNS.
    pub require_iprev_for_unknown_senders: bool,
}

impl Default for Incoming {
    fn default() -> Self {
        Incoming {
            checks: true,
            dnsbl: Vec::new(),
            dmarc_reject: true,
            require_iprev_for_unknown_senders: true,
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Our host name (EHLO, greeting, Received).
    pub hostname: String,
    /// Where data lives; relative to the config file's directory.
    pub data_dir: PathBuf,
    /// DNS servers (`ip:port`); default: the system's resolv.conf.
    #[serde(default)]
    pub resolver: Vec<String>,
    /// Listeners.
    #[serde(default)]
    pub listener: Vec<Listener>,
    /// Domains.
    #[serde(default)]
    pub domain: BTreeMap<String, DomainConfig>,
    /// Accounts.
    #[serde(default)]
    pub account: BTreeMap<String, AccountConfig>,
    /// Postmaster destination.
    pub postmaster: Option<PostmasterConfig>,
    /// Abuse limits.
    #[serde(default)]
    pub limits: Limits,
    /// Checks of incoming delivery.
    #[serde(default)]
    pub incoming: Incoming,
    /// Development mode (localserve): every recipient is accepted into the postmaster
    /// account, and special local parts simulate failures.
    #[serde(default)]
    pub localserve: bool,
    /// The file this was read from (set after parsing).
    #[serde(skip)]
    pub path: PathBuf,
}

/// Where a recipient address leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Deliver to this account's mailbox.
    Account {
        /// Account name.
        account: String,
        /// Mailbox.
        mailbox: String,
    },
    /// The domain is ours but nobody has this address.
    UnknownUser,
    /// We do not accept mail for this domain.
    UnknownDomain,
    /// The domain is disabled: refuse temporarily.
    DomainDisabled,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.display().to_string(),
            key: "-".into(),
            problem: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` names the file in errors and anchors
    /// relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let mut c: Config = toml::from_str(text).map_err(|e| {
            let msg = e.message().replace('\n', " ");
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError {
                file: file.clone(),
                key: match line {
                    Some(l) => format!("line {l}"),
                    None => "-".into(),
                },
                problem: msg,
            }
        })?;
        c.path = path.to_path_buf();
        c.validate()?;
        Ok(c)
    }

    fn err(&self, key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.display().to_string(),
            key: key.into(),
            problem: problem.into(),
        }
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        if rmox_core::smtp::Domain::parse(&self.hostname).is_err() {
            return Err(self.err(
                "hostname",
                format!("{:?} is not a valid host name", self.hostname),
            ));
        }
        for r in &self.resolver {
            if r.parse::<SocketAddr>().is_err() && !r.starts_with("zonefile:") {
                return Err(self.err(
                    "resolver",
                    format!("{r:?} is not ip:port (or zonefile:PATH)"),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, l) in self.listener.iter().enumerate() {
            if !names.insert(l.name.clone()) {
                return Err(self.err(
                    format!("listener[{i}].name"),
                    format!("duplicate listener name {:?}", l.name),
                ));
            }
            if l.submissions.as_ref().is_some_and(|p| p.enabled) && l.tls.is_none() {
                return Err(self.err(
                    format!("listener[{i}].submissions"),
                    "implicit TLS needs listener.tls",
                ));
            }
        }
        let domains: Vec<String> = self.domain.keys().cloned().collect();
        for d in &domains {
            let parsed = rmox_core::smtp::Domain::parse(d).map_err(|e| {
                self.err(format!("domain.{d:?}"), format!("not a valid domain: {e}"))
            })?;
            if parsed.ascii != *d {
                return Err(self.err(
                    format!("domain.{d:?}"),
                    format!("write the domain as {:?}", parsed.ascii),
                ));
            }
        }
        for (name, a) in &self.account {
            if !self.domain.contains_key(&a.domain) {
                return Err(self.err(
                    format!("account.{name}.domain"),
                    format!("domain {:?} is not configured", a.domain),
                ));
            }
            for addr in a.destinations.keys() {
                let dom = match addr.rsplit_once('@') {
                    Some((_, d)) => d,
                    None => {
                        return Err(self.err(
                            format!("account.{name}.destinations.{addr:?}"),
                            "must be an address (user@domain) or a catchall (@domain)",
                        ))
                    }
                };
                if !self.domain.contains_key(dom) {
                    return Err(self.err(
                        format!("account.{name}.destinations.{addr:?}"),
                        format!("domain {dom:?} is not configured"),
                    ));
                }
            }
        }
        if let Some(p) = &self.postmaster {
            if !self.account.contains_key(&p.account) {
                return Err(self.err(
                    "postmaster.account",
                    format!("account {:?} does not exist", p.account),
                ));
            }
        }
        Ok(())
    }

    /// The data directory, resolved against the config file's directory.
    pub fn data_dir(&self) -> PathBuf {
        if self.data_dir.is_absolute() {
            return self.data_dir.clone();
        }
        self.path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&self.data_dir)
    }

    /// A path from the config, resolved against the config file's directory.
    pub fn resolve_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    /// Where mail to `localpart@domain` goes. `domain` is the lower-case ASCII form.
    pub fn resolve(&self, localpart: &str, domain: &str) -> Resolution {
        let postmaster = || match &self.postmaster {
            Some(p) => Resolution::Account {
                account: p.account.clone(),
                mailbox: p.mailbox.clone(),
            },
            None => Resolution::UnknownUser,
        };
        let ours = self.domain.get(domain);
        if ours.is_none() && !domain.eq_ignore_ascii_case(&self.hostname) {
            return Resolution::UnknownDomain;
        }
        if localpart.eq_ignore_ascii_case("postmaster") {
            return postmaster();
        }
        let Some(dc) = ours else {
            return Resolution::UnknownUser;
        };
        if dc.disabled {
            return Resolution::DomainDisabled;
        }
        let mut lp = localpart.to_string();
        if let Some(sep) = dc
            .localpart_catchall_separator
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            if let Some((base, _)) = lp.split_once(sep) {
                lp = base.to_string();
            }
        }
        let matches = |dest: &str| -> bool {
            let Some((dl, dd)) = dest.rsplit_once('@') else {
                return false;
            };
            if !dd.eq_ignore_ascii_case(domain) || dl.is_empty() && !lp.is_empty() {
                return false;
            }
            if dc.localpart_case_sensitive {
                dl == lp
            } else {
                dl.to_lowercase() == lp.to_lowercase()
            }
        };
        // Exact addresses first, then catchalls.
        for (name, a) in &self.account {
            for (dest, d) in &a.destinations {
                if !dest.starts_with('@') && matches(dest) {
                    return Resolution::Account {
                        account: name.clone(),
                        mailbox: d.mailbox.clone().unwrap_or_else(inbox),
                    };
                }
            }
        }
        if lp.is_empty() {
            // `""@domain` only matches a configured empty local part.
            for (name, a) in &self.account {
                for (dest, d) in &a.destinations {
                    if dest.starts_with("\"\"@") && dest[3..].eq_ignore_ascii_case(domain) {
                        return Resolution::Account {
                            account: name.clone(),
                            mailbox: d.mailbox.clone().unwrap_or_else(inbox),
                        };
                    }
                }
            }
        }
        for (name, a) in &self.account {
            for (dest, d) in &a.destinations {
                if let Some(cd) = dest.strip_prefix('@') {
                    if cd.eq_ignore_ascii_case(domain) {
                        return Resolution::Account {
                            account: name.clone(),
                            mailbox: d.mailbox.clone().unwrap_or_else(inbox),
                        };
                    }
                }
            }
        }
        Resolution::UnknownUser
    }

    /// Whether `address` (as written in MAIL FROM or From) may be used by `account` to send.
    pub fn account_owns(&self, account: &str, localpart: &str, domain: &str) -> bool {
        match self.resolve(localpart, domain) {
            Resolution::Account { account: a, .. } => a == account,
            _ => false,
        }
    }

    /// The account a login name refers to: an account name, or one of its addresses.
    pub fn login_account(&self, username: &str) -> Option<String> {
        if self.account.contains_key(username) {
            return Some(username.to_string());
        }
        let (lp, dom) = username.rsplit_once('@')?;
        match self.resolve(lp, &dom.to_ascii_lowercase()) {
            Resolution::Account { account, .. } => Some(account),
            _ => None,
        }
    }
}

/// A fully commented example that `config check` accepts.
pub const EXAMPLE: &str = r#"# rmox configuration. Every key is documented; paths are relative to this file.

# Our host name: greeting, EHLO, Received headers. Must resolve to this machine.
hostname = "mail.example.org"

# Where the database and message files live.
data_dir = "data"

# DNS servers as ip:port. Empty: use /etc/resolv.conf.
resolver = ["127.0.0.53:53"]

# One [[listener]] per address.
[[listener]]
name = "public"
ip = "0.0.0.0"
# Incoming mail from other servers.
smtp = { port = 25, enabled = true }
# Submission for your mail clients, STARTTLS then AUTH.
submission = { port = 587, enabled = true }
# Submission with TLS from the first byte.
submissions = { port = 465, enabled = true }
# Certificate for STARTTLS and port 465.
tls = { cert_file = "tls/cert.pem", key_file = "tls/key.pem" }
# Refuse AUTH before TLS.
require_tls_for_auth = true

# Each domain we accept mail for.
[domain."example.org"]
# user+anything@example.org goes to user@example.org.
localpart_catchall_separator = "+"
# "User" and "user" are the same address.
localpart_case_sensitive = false
# A disabled domain refuses mail temporarily and cannot send.
disabled = false
# DKIM: selector -> key file, and the selectors to sign with.
dkim = { selectors = { "2026a" = "dkim/2026a.ed25519.pem" }, sign = ["2026a"] }

# Accounts and the addresses that deliver to them.
[account.mjl]
domain = "example.org"
# Per address settings; "@example.org" would be a catchall.
destinations = { "mjl@example.org" = {}, "info@example.org" = { mailbox = "Info" } }
# Sending limits per 24 hours.
max_outgoing_messages_per_day = 1000
max_first_time_recipients_per_day = 200
# Total size of stored messages in octets; 0 means unlimited.
quota_message_size = 0
# Uncomment to refuse logins with this message.
# login_disabled = "account suspended, contact the administrator"
# Deliver rejected messages here instead of dropping them.
rejects_mailbox = "Rejects"

# Mail to postmaster (without domain, or at any of our domains).
[postmaster]
account = "mjl"
mailbox = "Postmaster"

# Checks of incoming mail on port 25 (defaults shown).
[incoming]
# EHLO name, MAIL FROM domain, SPF, DKIM, DMARC and reverse DNS.
checks = true
# DNS blocklists to consult, e.g. ["sbl.example.org"].
dnsbl = []
# Refuse mail whose From domain publishes p=reject and fails DMARC.
dmarc_reject = true
# Refuse (temporarily) first-time senders without valid reverse DNS.
require_iprev_for_unknown_senders = true

# Abuse limits (defaults shown).
[limits]
max_message_size = 104857600
max_recipients = 1000
connections_per_ip = 100
connections_per_minute = 300
auth_failures_per_minute = 10
deliveries_per_minute = 500
deliveries_per_day = 20000
command_timeout_secs = 300
data_timeout_secs = 300
auth_failure_delay_secs = 1
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Result<Config, ConfigError> {
        let text = format!(
            r#"
hostname = "mox.example"
data_dir = "data"
[domain."mox.example"]
localpart_catchall_separator = "+"
[domain."other.example"]
[domain."off.example"]
disabled = true
[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}}, "\"\"@mox.example" = {{ mailbox = "Empty" }} }}
[account.catch]
domain = "other.example"
destinations = {{ "@other.example" = {{ mailbox = "Catchall" }}, "Exact@other.example" = {{}} }}
[postmaster]
account = "mjl"
mailbox = "Postmaster"
{extra}
"#
        );
        Config::parse(&text, Path::new("/etc/rmox/rmox.toml"))
    }

    #[test]
    fn example_is_valid() {
        let c = Config::parse(EXAMPLE, Path::new("rmox.toml")).unwrap();
        assert_eq!(c.hostname, "mail.example.org");
        assert_eq!(c.listener[0].smtp.as_ref().unwrap().port, 25);
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let e = cfg("bogus = 1").unwrap_err().to_string();
        assert!(e.starts_with("/etc/rmox/rmox.toml: line "), "{e}");
        assert!(e.contains("bogus"), "{e}");
        let e = Config::parse(
            "hostname = \"bad host\"\ndata_dir = \"d\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "x.toml: hostname: \"bad host\" is not a valid host name");
        let e = cfg("[account.x]\ndomain = \"nope.example\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/etc/rmox/rmox.toml: account.x.domain: domain \"nope.example\" is not configured"
        );
        let e = cfg("[[listener]]\nname = \"a\"\nip = \"1.2.3.4\"\nsubmissions = { port = 465 }\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("listener[0].submissions: implicit TLS needs listener.tls"),
            "{e}"
        );
    }

    #[test]
    fn recipient_resolution() {
        let c = cfg("").unwrap();
        let acc = |a: &str, m: &str| Resolution::Account {
            account: a.into(),
            mailbox: m.into(),
        };
        assert_eq!(c.resolve("mjl", "mox.example"), acc("mjl", "Inbox"));
        assert_eq!(c.resolve("MJL", "mox.example"), acc("mjl", "Inbox"));
        assert_eq!(c.resolve("mjl+tag", "mox.example"), acc("mjl", "Inbox"));
        assert_eq!(c.resolve("", "mox.example"), acc("mjl", "Empty"));
        assert_eq!(c.resolve("unknown", "mox.example"), Resolution::UnknownUser);
        assert_eq!(c.resolve("mjl", "test.example"), Resolution::UnknownDomain);
        assert_eq!(
            c.resolve("anything", "other.example"),
            acc("catch", "Catchall")
        );
        assert_eq!(c.resolve("exact", "other.example"), acc("catch", "Inbox"));
        assert_eq!(
            c.resolve("postmaster", "other.example"),
            acc("mjl", "Postmaster")
        );
        assert_eq!(
            c.resolve("POSTMASTER", "mox.example"),
            acc("mjl", "Postmaster")
        );
        assert_eq!(
            c.resolve("postmaster", "mox.example"),
            acc("mjl", "Postmaster")
        );
        assert_eq!(c.resolve("x", "off.example"), Resolution::DomainDisabled);
        assert!(c.account_owns("mjl", "mjl+x", "mox.example"));
        assert!(!c.account_owns("mjl", "other", "other.example"));
        assert_eq!(c.login_account("mjl@mox.example").as_deref(), Some("mjl"));
        assert_eq!(c.login_account("mjl").as_deref(), Some("mjl"));
        assert_eq!(c.login_account("nobody@mox.example"), None);
    }
}
