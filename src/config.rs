//! The configuration file: one TOML document, parsed strictly (unknown keys are errors),
//! validated once, with errors that name the file, the key and the problem on one line.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// A user's mistake in the configuration: printed as one line, `FILE: KEY: problem`, the
/// key the dotted path of the key at fault (`transport.relay.auth.mechanisms`,
/// `queue.backoff_secs[1]`; `line N` for a TOML syntax or type error) and the problem
/// quoting the value.
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

/// Where DNS answers come from (`resolver`), parsed when the config is loaded.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(try_from = "Vec<String>")]
pub enum Resolver {
    /// The servers of the system's /etc/resolv.conf (`resolver = []`, the default).
    #[default]
    System,
    /// These servers (`resolver = ["ip:port", ...]`), not empty.
    Servers(Vec<SocketAddr>),
    /// Static zone data for offline testing (`resolver = ["zonefile:PATH"]`), the path
    /// relative to the config file's directory.
    Zonefile(PathBuf),
}

impl Resolver {
    /// From the list as written (in the config or on the command line): `ip:port`
    /// entries, or one `zonefile:PATH` alone, or nothing. The error quotes the value.
    pub fn parse(list: &[String]) -> Result<Resolver, String> {
        let mut servers = Vec::new();
        let mut zone: Option<PathBuf> = None;
        for r in list {
            if let Some(p) = r.strip_prefix("zonefile:") {
                if p.is_empty() {
                    return Err(format!("{r:?}: zonefile: needs a path"));
                }
                if zone.is_some() {
                    return Err(format!("{r:?}: only one zonefile:PATH"));
                }
                zone = Some(PathBuf::from(p));
            } else {
                servers.push(
                    r.parse()
                        .map_err(|_| format!("{r:?} is not ip:port (or zonefile:PATH)"))?,
                );
            }
        }
        match zone {
            Some(_) if !servers.is_empty() => Err(format!(
                "{:?}: zonefile:PATH answers every question, it cannot be combined with servers",
                list.join(", ")
            )),
            Some(z) => Ok(Resolver::Zonefile(z)),
            None if servers.is_empty() => Ok(Resolver::System),
            None => Ok(Resolver::Servers(servers)),
        }
    }
}

/// The zone data of a `zonefile:PATH` resolver; the error starts with the path. (Here
/// rather than in resolve.rs: the `config_parse` fuzz target compiles this file alone.)
pub fn read_zone(p: &Path) -> Result<rmox_core::dns::StaticZone, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    rmox_core::dns::StaticZone::parse(&text).map_err(|e| format!("{}: {e}", p.display()))
}

impl TryFrom<Vec<String>> for Resolver {
    type Error = String;

    fn try_from(list: Vec<String>) -> Result<Self, Self::Error> {
        Resolver::parse(&list)
    }
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
    /// Port 25 (`smtp`): MAIL only after STARTTLS (`530 5.7.0`), as mox's RequireSTARTTLS.
    /// Default false: other servers may deliver in plain text.
    #[serde(default)]
    pub require_starttls: bool,
    /// Submission (`submission`): allow AUTH and MAIL without STARTTLS, as mox's
    /// NoRequireSTARTTLS. Default false: TLS first.
    #[serde(default)]
    pub no_require_starttls: bool,
    /// Replaced by `no_require_starttls`; refused with a message saying so.
    #[serde(default)]
    pub require_tls_for_auth: Option<bool>,
    /// HTTPS (implicit TLS with the listener's `tls`) serving the domains' MTA-STS
    /// policies at `https://mta-sts.DOMAIN/.well-known/mta-sts.txt` (port 443).
    pub mta_sts: Option<PortConfig>,
    /// Plain HTTP serving Prometheus metrics at `/metrics`.
    #[serde(default)]
    pub metrics: Option<PortConfig>,
    /// The certificate from an ACME CA (RFC 8555) instead of `tls` files: obtained at
    /// start, renewed, swapped without a restart.
    pub acme: Option<AcmeListener>,
    /// Plain HTTP answering ACME `http-01` challenges at
    /// `/.well-known/acme-challenge/TOKEN` (port 80); everything else is 404.
    pub http: Option<PortConfig>,
    /// The webapi (mox's `/webapi/v0/` methods) for applications, with HTTP basic
    /// authentication by account credentials.
    #[serde(default)]
    pub webapi: Option<WebapiPort>,
}

/// `webapi = { port = 1080 }` of a listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WebapiPort {
    /// TCP port.
    pub port: u16,
    /// Whether to listen on it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Implicit TLS with the listener's certificate (default). `false` (plain HTTP, where
    /// passwords travel readable) only on a loopback address.
    #[serde(default = "yes")]
    pub tls: bool,
}

impl Listener {
    /// Whether the listener has a certificate: `tls` files or `acme`.
    pub fn has_tls(&self) -> bool {
        self.tls.is_some() || self.acme.is_some()
    }

    /// Whether the listener serves implicit TLS (`submissions` or `mta_sts`), where
    /// `tls-alpn-01` validations can reach it.
    pub fn has_implicit_tls(&self) -> bool {
        [&self.submissions, &self.mta_sts]
            .iter()
            .any(|p| p.as_ref().is_some_and(|p| p.enabled))
    }
}

/// The ACME challenge a listener answers.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// `tls-alpn-01` (RFC 8737) on the listener's implicit TLS port (`mta_sts`, or
    /// `submissions`): the CA connects to port 443 of each name.
    #[default]
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// `http-01` on the listener's `http` port: the CA connects to port 80 of each name.
    #[serde(rename = "http-01")]
    Http01,
}

/// `acme = { ... }` of a listener.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AcmeListener {
    /// The CA's directory URL (`https://`).
    pub directory_url: String,
    /// Contact URLs for the account, e.g. `mailto:postmaster@example.org`.
    #[serde(default)]
    pub contact: Vec<String>,
    /// The challenge answered (default `tls-alpn-01`).
    #[serde(default)]
    pub challenge: AcmeChallenge,
    /// The names of the certificate (default: `hostname`).
    pub hostnames: Option<Vec<String>>,
    /// PEM file of CA certificates trusted for the CA's own HTTPS (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// Renew when fewer days than this remain (default 30).
    #[serde(default = "thirty")]
    pub renew_before_days: u32,
}

fn thirty() -> u32 {
    30
}

/// Whose DNSSEC verdict (the AD bit of an answer) is believed: DANE needs it.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrustAd {
    /// Only when every resolver is on loopback (a validating resolver on this machine:
    /// answers from farther away could be altered on the way).
    #[default]
    Loopback,
    /// Whatever resolvers are configured (the path to them is trusted).
    Always,
    /// Never: no answer counts as DNSSEC-secure, so DANE is never used.
    Never,
}

/// MTA-STS mode of a policy we publish (RFC 8461 5).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StsModeConfig {
    /// Senders refuse to deliver to an MX that does not match or does not verify.
    Enforce,
    /// Senders deliver anyway and report failures.
    Testing,
    /// The policy is withdrawn.
    None,
}

/// `[domain.X.mta_sts]`: the MTA-STS policy we serve for a domain.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MtaStsConfig {
    /// enforce, testing or none.
    pub mode: StsModeConfig,
    /// Seconds senders may cache the policy (default 86400, at most 31557600).
    #[serde(default = "default_sts_max_age")]
    pub max_age: u64,
    /// MX host patterns (`mx.example.org`, `*.example.org`); default: our host name.
    #[serde(default)]
    pub mx: Vec<String>,
}

fn default_sts_max_age() -> u64 {
    86400
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
    /// Routes for mail from this domain, tried after the account's, before the global ones.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The address (at this domain, delivered to an account) that receives DMARC aggregate
    /// reports about this domain, as mox's DMARC reports destination. Only reports sent to
    /// it, about this domain, by a sender that passed DMARC, are stored as reports.
    pub dmarc_reports: Option<String>,
    /// The address (at this domain, delivered to an account) that receives TLS reports
    /// (RFC 8460), as mox's TLSRPT destination. A report sent to it, DKIM-signed by the
    /// sender's domain, is stored for those of its policy domains that are ours (a
    /// configured domain or the host name); `rmox tlsrpt list` shows them.
    pub tls_reports: Option<String>,
    /// The MTA-STS policy served for this domain on listeners with `mta_sts`.
    pub mta_sts: Option<MtaStsConfig>,
}

/// Settings of one destination address of an account.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    /// Mailbox to deliver to (default Inbox).
    pub mailbox: Option<String>,
    /// Rulesets, the first that matches applies (see [`RulesetConfig`]).
    #[serde(default)]
    pub rulesets: Vec<RulesetConfig>,
    /// `rulesets` compiled once when the config is loaded (not per message).
    #[serde(skip)]
    pub compiled: CompiledRulesets,
}

/// A destination's rulesets in core's form, made from `rulesets` at load; compares equal
/// always (it follows `rulesets`, which is compared).
#[derive(Clone, Debug, Default)]
pub struct CompiledRulesets(Arc<Vec<rmox_core::ruleset::Ruleset>>);

impl PartialEq for CompiledRulesets {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CompiledRulesets {}

/// One ruleset of a destination (core's `ruleset::Ruleset`): every condition given must
/// hold; then the message goes to `mailbox`, is treated as forwarded (`is_forward`), or is
/// accepted into `accept_rejects_to_mailbox` instead of being refused.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct RulesetConfig {
    /// MAIL FROM must match this regular expression (case-insensitive).
    pub smtp_mail_from_regexp: Option<String>,
    /// This domain must be verified (SPF pass of the MAIL FROM domain, or a passing DKIM
    /// signature).
    pub verified_domain: Option<String>,
    /// Header field name -> regular expression its value must match.
    #[serde(default)]
    pub header_regexps: BTreeMap<String, String>,
    /// Mail through a forwarder: not judged by the forwarder's IP, EHLO, MAIL FROM or its
    /// DMARC result.
    #[serde(default)]
    pub is_forward: bool,
    /// Accept refused messages into this mailbox instead of refusing them.
    pub accept_rejects_to_mailbox: Option<String>,
    /// Where matching messages go (default: the destination's mailbox).
    pub mailbox: Option<String>,
}

impl RulesetConfig {
    /// Core's form, or (key, problem) for a bad regular expression.
    pub fn compile(
        &self,
        default_mailbox: &str,
    ) -> Result<rmox_core::ruleset::Ruleset, (String, String)> {
        let re = |key: &str, p: &str| {
            rmox_core::ruleset::regex(p).map_err(|e| (key.to_string(), format!("{p:?}: {e}")))
        };
        let smtp_mail_from = match &self.smtp_mail_from_regexp {
            Some(p) => Some(re("smtp_mail_from_regexp", p)?),
            None => None,
        };
        let mut headers = Vec::new();
        for (name, p) in &self.header_regexps {
            headers.push((
                name.to_ascii_lowercase(),
                re(&format!("header_regexps.{name}"), p)?,
            ));
        }
        Ok(rmox_core::ruleset::Ruleset {
            smtp_mail_from,
            verified_domain: self
                .verified_domain
                .as_ref()
                .map(|d| d.to_ascii_lowercase()),
            headers,
            is_forward: self.is_forward,
            accept_rejects_to_mailbox: self.accept_rejects_to_mailbox.clone(),
            mailbox: self
                .mailbox
                .clone()
                .unwrap_or_else(|| default_mailbox.to_string()),
        })
    }
}

impl Destination {
    /// The rulesets in core's form (compiled when the config was loaded).
    pub fn compiled_rulesets(&self) -> &[rmox_core::ruleset::Ruleset] {
        &self.compiled.0
    }
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
    /// Where messages refused by the incoming analysis are kept (the sender still gets the
    /// refusal), so that the user can rescue one; tidied after `incoming.rejects_keep_days`,
    /// at most `incoming.rejects_max_messages`; a copy is removed when the same message
    /// (Message-ID) is later accepted. `None`: refused messages are not kept.
    pub rejects_mailbox: Option<String>,
    /// Routes for mail from this account, tried first.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Seconds a subjectpass is valid; set, a DNSBL-listed sender without history whose
    /// message passes DMARC is refused with a pass to put in the Subject (mox's
    /// subjectpass). Unset or 0: off.
    #[serde(default)]
    pub subjectpass_period_secs: u64,
    /// A Maildir++ directory (relative to the config file) that every message delivered to
    /// the account is also written to, durably before the 250, for an IMAP server such as
    /// Dovecot to serve; messages the user moves to its Junk folder count as junk.
    pub maildir: Option<PathBuf>,
    /// The account's junk filter (a Bayesian classifier trained from its own mail); absent:
    /// no content filtering.
    pub junk_filter: Option<JunkFilterConfig>,
    /// Webhooks for the account's mail (`[account.X.webhooks]`); absent: none.
    pub webhooks: Option<AccountWebhooks>,
    /// Login addresses (of this account, in a domain with a `localpart_catchall_separator`)
    /// whose webapi sends and SMTP submissions get a unique MAIL FROM per recipient (mox's
    /// fromid, `LOCAL+ID@DOMAIN`; a submission may bring its own id in MAIL FROM): a DSN
    /// that comes back to it is attributed to the message and reported as an outgoing
    /// webhook event instead of an incoming message.
    #[serde(default)]
    pub from_id_login_addresses: Vec<String>,
}

/// `[account.X.webhooks]`: where the account's delivery events and incoming messages are
/// POSTed as JSON (mox's webhook shapes), signed with `secret`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccountWebhooks {
    /// Outgoing delivery events (delivered, delayed, failed, suppressed, canceled) of the
    /// account's submissions: an `http://` or `https://` URL.
    pub outgoing_url: Option<String>,
    /// Each message delivered to the account: an `http://` or `https://` URL.
    pub incoming_url: Option<String>,
    /// The HMAC-SHA256 key of the `X-Rmox-Signature` header (at least 16 characters).
    pub secret: String,
    /// An `Authorization` header value sent along, e.g. `Basic ...`.
    pub authorization: Option<String>,
}

/// `[webhooks]`: how webhooks are POSTed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Seconds to wait before each retry after a failed POST (not a 2xx, no answer, or
    /// no answer within `timeout_secs`); after the last, the hook is retired as failed.
    pub retry_intervals_secs: Vec<u64>,
    /// How long one POST may take.
    pub timeout_secs: u64,
}

impl Default for WebhookSettings {
    fn default() -> WebhookSettings {
        WebhookSettings {
            retry_intervals_secs: rmox_core::webhook::RETRY_INTERVALS.to_vec(),
            timeout_secs: 60,
        }
    }
}

/// `[account.X.junk_filter]`: how the account's junk filter tokenizes, classifies and
/// learns. Defaults are mox's recommended settings, with word pairs on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct JunkFilterConfig {
    /// Junk probability above which a message is refused (a little random jitter is added
    /// per message).
    pub threshold: f64,
    /// Single words are tokens.
    pub onegrams: bool,
    /// Pairs of consecutive words are tokens.
    pub twograms: bool,
    /// A token's spamminess is kept in `[max_power, 1 - max_power]`.
    pub max_power: f64,
    /// How many of the hammiest and of the spammiest tokens decide.
    pub top_words: usize,
    /// Tokens this close to 0.5 are ignored.
    pub ignore_words: f64,
    /// Tokens seen in at most this many messages count less.
    pub rare_words: u32,
    /// Messages received more than this many days ago are untrained (the filter follows
    /// the account's recent mail); 0: kept trained.
    pub train_max_age_days: u32,
}

impl Default for JunkFilterConfig {
    fn default() -> JunkFilterConfig {
        let p = rmox_core::junk::Params::default();
        JunkFilterConfig {
            threshold: p.threshold,
            onegrams: p.onegrams,
            twograms: p.twograms,
            max_power: p.max_power,
            top_words: p.top_words,
            ignore_words: p.ignore_words,
            rare_words: p.rare_words,
            train_max_age_days: 365,
        }
    }
}

// The floats are checked finite when the config is loaded (NaN is refused), so equality is
// an equivalence, as the config's own `Eq` needs.
impl Eq for JunkFilterConfig {}

impl JunkFilterConfig {
    /// The classifier's parameters.
    pub fn params(&self) -> rmox_core::junk::Params {
        rmox_core::junk::Params {
            onegrams: self.onegrams,
            twograms: self.twograms,
            max_power: self.max_power,
            top_words: self.top_words,
            ignore_words: self.ignore_words,
            rare_words: self.rare_words,
            threshold: self.threshold,
        }
    }

    /// What is wrong with the settings, if anything.
    fn check(&self) -> Result<(), String> {
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(format!("threshold {} is not in (0, 1]", self.threshold));
        }
        if !self.onegrams && !self.twograms {
            return Err("onegrams and twograms are both off: no tokens".into());
        }
        if !(0.0..0.5).contains(&self.max_power) {
            return Err(format!("max_power {} is not in [0, 0.5)", self.max_power));
        }
        if !(0.0..0.5).contains(&self.ignore_words) {
            return Err(format!(
                "ignore_words {} is not in [0, 0.5)",
                self.ignore_words
            ));
        }
        if self.top_words == 0 || self.top_words > 1000 {
            return Err(format!("top_words {} is not in 1..=1000", self.top_words));
        }
        if self.rare_words > 100 {
            return Err(format!("rare_words {} is over 100", self.rare_words));
        }
        Ok(())
    }
}

/// `[sendmail]`: local programs (cron, PHP's mail(), git send-email) submit through `rmox
/// sendmail` as this account, without a password: whoever can reach the admin socket
/// (the server's user) sends as it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SendmailConfig {
    /// The account.
    pub account: String,
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

/// The host's TLS reporting address (mox's HostTLSRPT): `localpart@hostname`, for reports
/// about our MX host (DANE policies have the MX host name as policy domain), delivered to an
/// account even when the host name is not a configured domain.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostTlsReports {
    /// The local part; the address is `localpart@hostname`.
    pub localpart: String,
    /// Account.
    pub account: String,
    /// Mailbox (default Inbox).
    #[serde(default = "inbox")]
    pub mailbox: String,
}

fn inbox() -> String {
    "Inbox".to_string()
}

/// A limit at the three network levels of an address: `[ip, small network, large
/// network]` (IPv4 /32, /26, /21; IPv6 /64, /48, /32), or one number `N` meaning
/// `[N, 3N, 9N]` (the ratio of mox's defaults).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum NetLimits {
    /// `N`: `[N, 3N, 9N]`.
    One(u64),
    /// One limit per level.
    Levels([u64; 3]),
}

impl NetLimits {
    /// The limits per level.
    pub fn levels(self) -> rmox_core::ratelimit::Levels {
        match self {
            NetLimits::One(n) => {
                rmox_core::ratelimit::Levels::new(n, n.saturating_mul(3), n.saturating_mul(9))
            }
            NetLimits::Levels([a, b, c]) => rmox_core::ratelimit::Levels::new(a, b, c),
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Limits against abuse; defaults follow mox's built-in numbers.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message in octets.
    pub max_message_size: u64,
    /// Recipients per transaction.
    pub max_recipients: usize,
    /// Open connections per IP / network (`connections_per_ip` is the old name).
    #[serde(alias = "connections_per_ip")]
    pub connections_open: NetLimits,
    /// New connections per minute per IP / network.
    pub connections_per_minute: NetLimits,
    /// Failed logins per minute from one IP; at the limit logins and new submission
    /// connections from it are refused.
    pub auth_failures_per_minute: u32,
    /// Messages delivered (port 25) per minute per IP / network.
    pub deliveries_per_minute: NetLimits,
    /// Messages delivered (port 25) per UTC day per IP / network.
    pub deliveries_per_day: NetLimits,
    /// Bytes delivered (port 25) per minute per IP / network.
    pub delivery_bytes_per_minute: NetLimits,
    /// Bytes delivered (port 25) per UTC day per IP / network.
    pub delivery_bytes_per_day: NetLimits,
    /// Loopback addresses are exempt from the connection, login and delivery limits.
    pub exempt_loopback: bool,
    /// Networks tracked per level and window by each rate limit (bounded memory).
    pub tracked_networks: usize,
    /// Seconds to wait for a command (RFC 5321 4.5.3.2: at least 300).
    pub command_timeout_secs: u64,
    /// Seconds to wait for more message data.
    pub data_timeout_secs: u64,
    /// Delay in seconds before a failed login is answered (times the failures so far).
    pub auth_failure_delay_secs: u64,
    /// Delay in seconds before answering a transaction whose recipients were all unknown.
    pub unknown_recipient_delay_secs: u64,
    /// Port 25: more `Received` fields than this is a mail loop (`550 5.4.6`).
    pub max_received_headers: usize,
    /// Failed commands tolerated on a connection without a delivered message; the next
    /// failure closes it with `550 5.1.0`.
    pub max_errors: u32,
    /// Failed AUTH attempts per connection before it is closed with `421`.
    pub max_auth_failures_per_connection: u32,
    /// Seconds a TLS handshake (STARTTLS or implicit TLS) may take.
    pub tls_handshake_timeout_secs: u64,
    /// Seconds the server waits for the answer to one internal request (a password check,
    /// storing a message, ...) before replying `451 4.3.0` (or `421` and closing).
    pub effect_timeout_secs: u64,
    /// Seconds all DNS checks of one command (SPF, DKIM, DMARC, iprev, DNSBL) may take
    /// together before the command is answered `451 4.3.0`.
    pub checks_timeout_secs: u64,
    /// Largest incoming TLS report read (bytes, compressed and decompressed); a larger one
    /// is delivered as mail only.
    pub max_tls_report_size: usize,
    /// HTTP server: largest request head (start line and header fields), in bytes.
    pub http_max_head_size: usize,
    /// HTTP server: most header fields in a request.
    pub http_max_headers: usize,
    /// HTTP server: largest request body, in bytes.
    pub http_max_body_size: usize,
    /// HTTP server: seconds from a request's first byte to the end of its body (then 408).
    pub http_request_timeout_secs: u64,
    /// HTTP server: seconds an idle keep-alive connection stays open.
    pub http_idle_timeout_secs: u64,
    /// HTTP server: seconds the server may take to answer a request (then 503).
    pub http_handler_timeout_secs: u64,
    /// HTTP server: requests read ahead of their answers (pipelining) before reading stops.
    pub http_max_pipelined: usize,
    /// Message data a connection holds in memory; past it the message goes to a spool file
    /// in the data directory as it arrives. A spooled message's header must fit in it.
    pub spool_threshold_bytes: usize,
    /// ACME: the least time between two issues of one certificate, whatever
    /// `renew_before_days` says (a value longer than the CA's lifetimes renews this often).
    pub acme_min_renew_interval_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: 100 << 20,
            max_recipients: 1000,
            connections_open: NetLimits::Levels([30, 90, 270]),
            connections_per_minute: NetLimits::Levels([300, 900, 2700]),
            auth_failures_per_minute: 10,
            deliveries_per_minute: NetLimits::Levels([500, 1500, 4500]),
            deliveries_per_day: NetLimits::Levels([10_000, 30_000, 90_000]),
            delivery_bytes_per_minute: NetLimits::Levels([1000 * MIB, 3000 * MIB, 9000 * MIB]),
            delivery_bytes_per_day: NetLimits::Levels([3000 * MIB, 9000 * MIB, 27_000 * MIB]),
            exempt_loopback: true,
            tracked_networks: rmox_core::ratelimit::DEFAULT_MAX_KEYS,
            command_timeout_secs: 300,
            data_timeout_secs: 300,
            auth_failure_delay_secs: 1,
            unknown_recipient_delay_secs: 5,
            max_received_headers: 100,
            max_errors: 10,
            max_auth_failures_per_connection: 3,
            tls_handshake_timeout_secs: 30,
            effect_timeout_secs: 120,
            checks_timeout_secs: 180,
            max_tls_report_size: rmox_core::tlspolicy::tlsrpt::MAX_REPORT_SIZE,
            http_max_head_size: 16 * 1024,
            http_max_headers: 64,
            http_max_body_size: 1024 * 1024,
            http_request_timeout_secs: 30,
            http_idle_timeout_secs: 60,
            http_handler_timeout_secs: 60,
            http_max_pipelined: 8,
            spool_threshold_bytes: 256 << 10,
            acme_min_renew_interval_secs: 3600,
        }
    }
}

impl Limits {
    /// The connection-time limits for the core limiter.
    pub fn connection_settings(&self) -> rmox_core::ratelimit::ConnectionSettings {
        rmox_core::ratelimit::ConnectionSettings {
            open: self.connections_open.levels(),
            per_minute: self.connections_per_minute.levels(),
            auth_failures_per_minute: u64::from(self.auth_failures_per_minute),
            exempt_loopback: self.exempt_loopback,
            max_keys: self.tracked_networks,
        }
    }

    /// The delivery limits for the core limiter.
    pub fn delivery_settings(&self) -> rmox_core::ratelimit::DeliverySettings {
        rmox_core::ratelimit::DeliverySettings {
            messages_per_minute: self.deliveries_per_minute.levels(),
            messages_per_day: self.deliveries_per_day.levels(),
            bytes_per_minute: self.delivery_bytes_per_minute.levels(),
            bytes_per_day: self.delivery_bytes_per_day.levels(),
            exempt_loopback: self.exempt_loopback,
            max_keys: self.tracked_networks,
        }
    }
}

/// Checks of incoming delivery (port 25).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Incoming {
    /// false turns every check below off (DNSBL included); true runs those switched on.
    pub checks: bool,
    /// The EHLO name must resolve to an address (`550 5.5.0` at MAIL when it does not
    /// exist).
    pub ehlo_check: bool,
    /// The MAIL FROM domain must accept mail: exists, no null MX (`550 5.7.27`).
    pub mail_from_check: bool,
    /// SPF for MAIL FROM (Received-SPF and `spf=` in Authentication-Results); without an SPF
    /// pass only one recipient per transaction is accepted.
    pub spf: bool,
    /// DKIM verification (`dkim=` in Authentication-Results).
    pub dkim: bool,
    /// DMARC evaluation (`dmarc=`; needs DKIM, which runs for it even when `dkim` is false,
    /// and uses SPF when on); `dmarc_reject` acts on it.
    pub dmarc: bool,
    /// Forward-confirmed reverse DNS of the client (`iprev=`);
    /// `require_iprev_for_unknown_senders` acts on it.
    pub iprev: bool,
    /// DNSBL zones to check the client's IP against.
    pub dnsbl: Vec<String>,
    /// Refuse messages whose From domain's DMARC policy says reject.
    pub dmarc_reject: bool,
    /// Refuse (temporarily) first-time senders without valid reverse DNS.
    pub require_iprev_for_unknown_senders: bool,
    /// Judge each message by the receiving account's history (core's `reputation`):
    /// accept known-good senders, refuse (451) known junk, weigh SPF and iprev for unknown
    /// senders. Needs `checks`.
    pub reputation: bool,
    /// Seconds between looks at our own sending addresses in the `dnsbl` zones (a listing
    /// is logged as a warning and shown in metrics); 0: off. Default 3600.
    pub dnsbl_monitor_interval_secs: u64,
    /// The addresses the DNSBL monitor checks; empty (the default): the host name's A and
    /// AAAA records.
    pub dnsbl_monitor_ips: Vec<IpAddr>,
    /// Seconds a first-time sender (no history at all, nothing else against it) is refused
    /// with 451 before a retry gets through; 0 (the default): no delay.
    pub delay_first_time_senders_secs: u64,
    /// Days a refused message stays in an account's `rejects_mailbox`.
    pub rejects_keep_days: u32,
    /// Messages an account's `rejects_mailbox` holds at most; more refused messages are
    /// not kept.
    pub rejects_max_messages: u32,
    /// Megabytes an account's `rejects_mailbox` holds at most; a refused message that
    /// would take it over is not kept.
    pub rejects_max_size_mb: u64,
}

impl Default for Incoming {
    fn default() -> Self {
        Incoming {
            checks: true,
            ehlo_check: true,
            mail_from_check: true,
            spf: true,
            dkim: true,
            dmarc: true,
            iprev: true,
            dnsbl: Vec::new(),
            dmarc_reject: true,
            require_iprev_for_unknown_senders: true,
            reputation: true,
            delay_first_time_senders_secs: 0,
            dnsbl_monitor_interval_secs: 3600,
            dnsbl_monitor_ips: Vec::new(),
            rejects_keep_days: 14,
            rejects_max_messages: 1000,
            rejects_max_size_mb: 100,
        }
    }
}

/// Outgoing reports (`[reports]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSettings {
    /// Seconds between DMARC aggregate report runs (default 3600); 0 turns them off.
    pub dmarc_interval_secs: u64,
    /// Send TLS reports (RFC 8460) about our deliveries to the domains that ask for them
    /// (default true).
    pub send_tls_reports: bool,
    /// TLS reports are sent at every multiple of this many seconds in Unix time (default
    /// 86400: at UTC midnight), for the finished UTC days; 0 turns them off.
    pub tls_interval_secs: u64,
}

impl Default for ReportSettings {
    fn default() -> Self {
        ReportSettings {
            dmarc_interval_secs: 3600,
            send_tls_reports: true,
            tls_interval_secs: 86_400,
        }
    }
}

/// The outgoing queue (`[queue]`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// TCP port of MX hosts (25; another value only makes sense for tests).
    pub smtp_port: u16,
    /// Deliveries (SMTP transactions) in flight at most, in total.
    pub workers: usize,
    /// Transactions in flight at most to one recipient domain.
    pub connections_per_domain: usize,
    /// Recipients in one outgoing transaction at most.
    pub recipients_per_transaction: usize,
    /// Transactions (messages) delivered one after the other over one connection at most
    /// (connection reuse); 1 opens a connection per transaction.
    pub transactions_per_connection: usize,
    /// Seconds to wait for a TCP connection to a host.
    pub connect_timeout_secs: u64,
    /// Seconds to wait after each failed attempt (the last value repeats); the message
    /// fails after `max_attempts`. Non-decreasing.
    pub backoff_secs: Vec<u64>,
    /// Failed attempts after which the message fails with a DSN.
    pub max_attempts: u32,
    /// A "delayed" DSN is sent after this failed attempt (once); 0 for never.
    pub delayed_dsn_after_attempt: u32,
    /// Spread of each wait, in percent either way (0 to 50).
    pub jitter_percent: u8,
    /// Local IPv4 address outgoing connections are made from (default: the system's choice).
    pub source_ipv4: Option<std::net::Ipv4Addr>,
    /// Local IPv6 address outgoing connections are made from.
    pub source_ipv6: Option<std::net::Ipv6Addr>,
    /// Seconds between looks at the MTA-STS policy cache for recently used policies to
    /// refresh before they expire or after their id changed; 0: no background refresh.
    pub mtasts_refresh_interval_secs: u64,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            smtp_port: 25,
            workers: 8,
            connections_per_domain: 4,
            recipients_per_transaction: 100,
            transactions_per_connection: 20,
            connect_timeout_secs: 30,
            // Close to mox: 7.5 minutes, doubling to 8 hours.
            backoff_secs: vec![450, 900, 1800, 3600, 7200, 14_400, 28_800, 28_800],
            max_attempts: 8,
            delayed_dsn_after_attempt: 5,
            jitter_percent: 10,
            source_ipv4: None,
            source_ipv6: None,
            mtasts_refresh_interval_secs: 3600,
        }
    }
}

impl QueueSettings {
    /// The scheduler's settings; errors name the key.
    pub fn queue_config(&self, file: &Path) -> Result<rmox_core::queue::QueueConfig, ConfigError> {
        let b = rmox_core::queue::QueueConfigBuilder {
            backoff: self
                .backoff_secs
                .iter()
                .map(|s| std::time::Duration::from_secs(*s))
                .collect(),
            jitter: f64::from(self.jitter_percent) / 100.0,
            delayed_dsn_after_attempt: self.delayed_dsn_after_attempt,
            max_attempts: self.max_attempts,
            max_per_domain: self.connections_per_domain,
            max_total: self.workers,
            max_recipients_per_batch: self.recipients_per_transaction,
            max_transactions_per_connection: self.transactions_per_connection,
        };
        use rmox_core::queue::QueueConfigError as E;
        b.build().map_err(|e| {
            let (key, problem) = match &e {
                E::EmptyBackoff => (
                    "queue.backoff_secs".to_string(),
                    "[]: at least one interval is needed".to_string(),
                ),
                E::BackoffNotMonotone(i) => {
                    let at = |i: usize| self.backoff_secs.get(i).copied().unwrap_or_default();
                    (
                        format!("queue.backoff_secs[{i}]"),
                        format!(
                            "{} is shorter than the interval before it ({}): the list must not decrease",
                            at(*i),
                            at(i.saturating_sub(1))
                        ),
                    )
                }
                E::Jitter(_) => (
                    "queue.jitter_percent".to_string(),
                    format!("{} is not between 0 and 50", self.jitter_percent),
                ),
                E::ZeroAttempts => (
                    "queue.max_attempts".to_string(),
                    "0: must be at least 1".to_string(),
                ),
                E::ZeroLimit(name) => {
                    let key = match *name {
                        "max_per_domain" => "connections_per_domain",
                        "max_total" => "workers",
                        "max_transactions_per_connection" => "transactions_per_connection",
                        _ => "recipients_per_transaction",
                    };
                    (format!("queue.{key}"), "0: must be at least 1".to_string())
                }
                _ => ("queue".to_string(), e.to_string()),
            };
            ConfigError {
                file: file.display().to_string(),
                key,
                problem,
            }
        })
    }
}

/// One route: the conditions that are set must all hold; the first matching route of the
/// account, then the sender's domain, then the global list, names the transport.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Sender domains (`.example.org` matches its subdomains); empty matches any.
    #[serde(default)]
    pub from_domains: Vec<String>,
    /// Recipient domains, same form.
    #[serde(default)]
    pub to_domains: Vec<String>,
    /// Matches from this attempt on (1 is the first).
    #[serde(default)]
    pub min_attempts: u32,
    /// The name of a `[transport.NAME]`; `""` or `"direct"` without such a transport means
    /// direct delivery to the MX hosts.
    pub transport: String,
}

/// TLS towards a smarthost.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TransportTls {
    /// STARTTLS when offered.
    #[default]
    Opportunistic,
    /// STARTTLS required.
    Starttls,
    /// TLS from the first byte.
    Implicit,
    /// Plain text.
    None,
}

/// TLS towards a submission service: always TLS, the only choice is when it starts.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SubmissionTls {
    /// STARTTLS required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
}

/// AUTH credentials of a transport (`auth = { username, password | password_file,
/// mechanisms }`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawTransportAuth")]
pub struct TransportAuth {
    /// User name, not empty.
    pub username: String,
    /// The password: exactly one of `password` and `password_file`.
    pub secret: TransportSecret,
    /// Mechanisms to use, in order (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256 and
    /// -PLUS, any case); empty: the strongest the server offers.
    pub mechanisms: Vec<rmox_core::sasl::Mechanism>,
}

/// Where a transport's password comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TransportSecret {
    /// `password`: the password itself.
    Password(String),
    /// `password_file`: a file whose first line is the password, relative to the config
    /// file (read when the transports are set up).
    File(PathBuf),
}

impl std::fmt::Debug for TransportSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransportSecret::Password(_) => f.write_str("Password(<redacted>)"),
            TransportSecret::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// `auth` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransportAuth {
    #[serde(deserialize_with = "non_empty")]
    username: String,
    password: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default, deserialize_with = "mechanisms")]
    mechanisms: Vec<rmox_core::sasl::Mechanism>,
}

impl TryFrom<RawTransportAuth> for TransportAuth {
    /// `KEY: problem`, KEY relative to the transport (see `transport_problem`).
    type Error = String;

    fn try_from(a: RawTransportAuth) -> Result<Self, String> {
        let secret = match (a.password, a.password_file) {
            (Some(p), None) => TransportSecret::Password(p),
            (None, Some(f)) => TransportSecret::File(f),
            _ => return Err("auth: set exactly one of password and password_file".into()),
        };
        Ok(TransportAuth {
            username: a.username,
            secret,
            mechanisms: a.mechanisms,
        })
    }
}

/// SOCKS5 proxy credentials (RFC 1929), each 1 to 255 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyAuth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// `[transport.NAME]`, tagged by `kind`: each kind has exactly its own keys, so a key of
/// another kind (`host` for `kind = "direct"`) is refused when the file is parsed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TransportConfig {
    /// Relay everything to one SMTP server, optionally authenticated.
    Smarthost(SmarthostConfig),
    /// Submit to a mail service with AUTH (587 STARTTLS or 465 implicit TLS).
    Submission(SubmissionConfig),
    /// Deliver to the MX hosts, connecting through a SOCKS5 proxy.
    Socks5(Socks5Config),
    /// Deliver to the MX hosts directly.
    Direct(DirectConfig),
}

impl TransportConfig {
    /// The `kind` as written in the file.
    pub fn kind(&self) -> &'static str {
        match self {
            TransportConfig::Smarthost(_) => "smarthost",
            TransportConfig::Submission(_) => "submission",
            TransportConfig::Socks5(_) => "socks5",
            TransportConfig::Direct(_) => "direct",
        }
    }
}

/// `kind = "smarthost"`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SmarthostConfig {
    /// Host name or IP.
    #[serde(deserialize_with = "host_name_or_ip")]
    pub host: String,
    /// Port (default 25, 465 with implicit TLS).
    pub port: Option<u16>,
    /// opportunistic (default), starttls, implicit or none.
    #[serde(default)]
    pub tls: TransportTls,
    /// Check the certificate with starttls/implicit (default true); refused with the other
    /// modes, where no certificate is checked.
    pub verify: Option<bool>,
    /// PEM file of CA certificates to trust instead of the system's (not with tls = none;
    /// with opportunistic TLS they verify what REQUIRETLS needs verified).
    pub ca_file: Option<PathBuf>,
    /// Credentials (optional).
    pub auth: Option<TransportAuth>,
}

/// `kind = "submission"`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SubmissionConfig {
    /// Host name or IP.
    #[serde(deserialize_with = "host_name_or_ip")]
    pub host: String,
    /// Port (default 587, 465 with implicit TLS).
    pub port: Option<u16>,
    /// starttls or implicit; default: implicit on port 465, else starttls.
    pub tls: Option<SubmissionTls>,
    /// PEM file of CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// Credentials (required).
    pub auth: TransportAuth,
}

/// `kind = "socks5"`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RawSocks5")]
pub struct Socks5Config {
    /// The proxy's `ip:port`.
    pub proxy: SocketAddr,
    /// Credentials for the proxy (`proxy_username` and `proxy_password`, both or neither).
    pub proxy_auth: Option<ProxyAuth>,
    /// EHLO name matching the proxy's IPs (default: `hostname`).
    pub ehlo_hostname: Option<String>,
}

/// `kind = "socks5"` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSocks5 {
    #[serde(deserialize_with = "ip_port")]
    proxy: SocketAddr,
    proxy_username: Option<String>,
    proxy_password: Option<String>,
    #[serde(default, deserialize_with = "opt_host_name")]
    ehlo_hostname: Option<String>,
}

impl TryFrom<RawSocks5> for Socks5Config {
    /// `KEY: problem`, KEY relative to the transport (see `transport_problem`).
    type Error = String;

    fn try_from(s: RawSocks5) -> Result<Self, String> {
        let proxy_auth = match (s.proxy_username, s.proxy_password) {
            (None, None) => None,
            (Some(username), Some(password)) => {
                let ok = |v: &str| (1..=255).contains(&v.len());
                if !ok(&username) || !ok(&password) {
                    return Err(
                        "proxy_username: proxy user name and password must be 1 to 255 bytes"
                            .into(),
                    );
                }
                Some(ProxyAuth { username, password })
            }
            _ => {
                return Err(
                    "proxy_username: set both proxy_username and proxy_password, or neither".into(),
                )
            }
        };
        Ok(Socks5Config {
            proxy: s.proxy,
            proxy_auth,
            ehlo_hostname: s.ehlo_hostname,
        })
    }
}

/// `kind = "direct"`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DirectConfig {
    /// Use IPv4 (default true).
    #[serde(default = "yes")]
    pub ipv4: bool,
    /// Use IPv6 (default true).
    #[serde(default = "yes")]
    pub ipv6: bool,
}

/// A string that must not be empty; the error quotes the value, so that
/// `locate_error` finds its key.
fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Err(serde::de::Error::custom("\"\" must not be empty"));
    }
    Ok(s)
}

/// SASL mechanism names, as core's [`rmox_core::sasl::Mechanism`].
fn mechanisms<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<rmox_core::sasl::Mechanism>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|m| {
            rmox_core::sasl::Mechanism::from_name(m).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown mechanism {m:?} (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256, SCRAM-SHA-1-PLUS, SCRAM-SHA-256-PLUS)"
                ))
            })
        })
        .collect()
}

/// An optional host name.
fn opt_host_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let h = String::deserialize(d)?;
    if rmox_core::smtp::Domain::parse(&h).is_err() {
        return Err(serde::de::Error::custom(format!(
            "{h:?} is not a valid host name"
        )));
    }
    Ok(Some(h))
}

/// A host name or IP address (as text).
fn host_name_or_ip<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let h = String::deserialize(d)?;
    if h.parse::<IpAddr>().is_err() && rmox_core::smtp::Domain::parse(&h).is_err() {
        return Err(serde::de::Error::custom(format!(
            "{h:?} is not a host name or IP"
        )));
    }
    Ok(h)
}

/// An `ip:port`.
fn ip_port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|_| serde::de::Error::custom(format!("{s:?} is not ip:port")))
}

/// A transport ready to use: the core description and what only the binary needs.
#[derive(Debug, Clone)]
pub struct TransportSetup {
    /// The core's description.
    pub transport: rmox_core::queue::Transport,
    /// CA certificates to trust instead of the system's (resolved path).
    pub ca_file: Option<PathBuf>,
    /// SOCKS5 proxy credentials (user name, password).
    pub proxy_auth: Option<(String, String)>,
}

/// A group's id from its name (in /etc/group) or number.
fn group_id(g: &str) -> Option<u32> {
    if let Ok(n) = g.parse() {
        return Some(n);
    }
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == g).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// Smallest `storage_cache_mb`.
pub const MIN_STORAGE_CACHE_MB: u64 = 4;
/// Largest `storage_cache_mb` (64 GiB).
pub const MAX_STORAGE_CACHE_MB: u64 = 65536;

/// Most runtime worker threads (`threads`).
pub const MAX_THREADS: u64 = 1024;

fn default_storage_cache_mb() -> u64 {
    (rmox_storage::DEFAULT_CACHE_BYTES >> 20) as u64
}

/// Which storage backend keeps accounts, messages and the queue (`[storage] kind`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    /// The embedded database and message files in `data_dir` (one machine).
    #[default]
    Redb,
    /// A PostgreSQL database, shareable by several rmox nodes.
    Postgres,
}

/// Shortest `[storage] lease_secs`.
pub const MIN_LEASE_SECS: u64 = 5;
/// Longest `[storage] lease_secs` (a day).
pub const MAX_LEASE_SECS: u64 = 86_400;
/// Default `[storage] lease_secs`: longer than any attempt can take with the default
/// timeouts.
pub const DEFAULT_LEASE_SECS: u64 = 900;

fn default_lease_secs() -> u64 {
    DEFAULT_LEASE_SECS
}

fn default_pool_idle() -> usize {
    16
}

/// `[storage]`: where rmox keeps what it stores.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The backend (default: redb in `data_dir`).
    #[serde(default)]
    pub kind: StorageKind,
    /// PostgreSQL: the connection string (`postgresql://user@host:port/db` or libpq's
    /// `key=value` form).
    #[serde(default)]
    pub url: Option<String>,
    /// PostgreSQL: this node's name in queue leases; unique among the nodes sharing the
    /// database. Default: `hostname`.
    #[serde(default)]
    pub node: Option<String>,
    /// PostgreSQL: how long a node holds a queue entry it is delivering without renewing
    /// the lease (it renews every third of this while the attempt runs). A node that dies
    /// loses its entries to the other nodes after this.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// PostgreSQL: idle connections kept open for reuse.
    #[serde(default = "default_pool_idle")]
    pub pool_idle: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Redb,
            url: None,
            node: None,
            lease_secs: DEFAULT_LEASE_SECS,
            pool_idle: default_pool_idle(),
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
    /// Where DNS answers come from: `["ip:port", ...]`, `["zonefile:PATH"]`, or (empty,
    /// the default) the system's resolv.conf.
    #[serde(default)]
    pub resolver: Resolver,
    /// Whose AD bit is believed (`resolver_trust_ad`).
    #[serde(default)]
    pub resolver_trust_ad: TrustAd,
    /// The group (name or number) that gets read/write access to the accounts' maildirs
    /// (files 0660, directories 2770), for an IMAP server running as another user.
    #[serde(default)]
    pub maildir_group: Option<String>,
    /// MiB of database page cache (redb); memory stays flat beyond it however large the
    /// data grows. Default [`rmox_storage::DEFAULT_CACHE_BYTES`].
    #[serde(default = "default_storage_cache_mb")]
    pub storage_cache_mb: u64,
    /// Runtime worker threads (`threads`, 1 to [`MAX_THREADS`]); unset: one per CPU on tokio
    /// and smol, one per two CPUs (at least one) on glommio ([`crate::rt::default_threads`]).
    #[serde(default)]
    pub threads: Option<u64>,
    /// The storage backend (`[storage]`).
    #[serde(default)]
    pub storage: StorageConfig,
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
    /// The host's TLS reporting address (`[host_tls_reports]`).
    pub host_tls_reports: Option<HostTlsReports>,
    /// `rmox sendmail`: the account it submits as (`[sendmail]`).
    pub sendmail: Option<SendmailConfig>,
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
    /// The outgoing queue.
    #[serde(default)]
    pub queue: QueueSettings,
    /// Outgoing reports (`[reports]`).
    #[serde(default)]
    pub reports: ReportSettings,
    /// How webhooks are POSTed (`[webhooks]`).
    #[serde(default)]
    pub webhooks: WebhookSettings,
    /// Named transports (`[transport.NAME]`) that routes refer to.
    #[serde(default)]
    pub transport: BTreeMap<String, TransportConfig>,
    /// Global routes (`[[route]]`), tried after account and domain routes.
    #[serde(default)]
    pub route: Vec<RouteConfig>,
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
            if let Some(located) = locate_error(text, &file) {
                return located;
            }
            let mut msg = e.message().trim().replace('\n', " ");
            if msg.is_empty() {
                // toml gives no message for some errors, e.g. a control character in a
                // comment.
                msg = "invalid TOML (a control character?)".into();
            }
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

    /// `listener[i].acme`: with no `tls` files, an `https` directory, valid names, and the
    /// port its challenge needs.
    fn validate_acme(&self, i: usize, l: &Listener) -> Result<(), ConfigError> {
        let Some(a) = &l.acme else {
            return Ok(());
        };
        let key = |k: &str| format!("listener[{i}].acme{k}");
        if l.tls.is_some() {
            return Err(self.err(
                key(""),
                "not with tls: the certificate comes from ACME (remove tls or acme)",
            ));
        }
        if !a.directory_url.starts_with("https://") || a.directory_url.len() <= 8 {
            return Err(self.err(
                key(".directory_url"),
                format!("{:?} is not an https:// URL", a.directory_url),
            ));
        }
        if let Some(names) = &a.hostnames {
            if names.is_empty() {
                return Err(self.err(
                    key(".hostnames"),
                    "[] has no name; leave it out for hostname",
                ));
            }
            for n in names {
                if rmox_core::smtp::Domain::parse(n).is_err() || n.starts_with('*') {
                    return Err(self.err(
                        key(".hostnames"),
                        format!("{n:?} is not a host name (wildcards need dns-01, which rmox does not do)"),
                    ));
                }
            }
        }
        if a.renew_before_days == 0 {
            return Err(self.err(
                key(".renew_before_days"),
                "0 would renew only after expiry; give days, e.g. 30",
            ));
        }
        for c in &a.contact {
            if !c.contains(':') {
                return Err(self.err(
                    key(".contact"),
                    format!("{c:?} is not a URL (e.g. \"mailto:postmaster@example.org\")"),
                ));
            }
        }
        match a.challenge {
            AcmeChallenge::TlsAlpn01 if !l.has_implicit_tls() => Err(self.err(
                key(".challenge"),
                "tls-alpn-01 needs an implicit TLS port on this listener (mta_sts = { port = 443 }, or submissions): the CA connects to port 443",
            )),
            AcmeChallenge::Http01 if !l.http.as_ref().is_some_and(|p| p.enabled) => Err(self.err(
                key(".challenge"),
                "http-01 needs http = { port = 80 } on this listener: the CA connects to port 80",
            )),
            _ => Ok(()),
        }
    }

    fn validate(&mut self) -> Result<(), ConfigError> {
        self.maildirs()?;
        self.validate_storage()?;
        if !(MIN_STORAGE_CACHE_MB..=MAX_STORAGE_CACHE_MB).contains(&self.storage_cache_mb) {
            return Err(self.err(
                "storage_cache_mb",
                format!(
                    "{}: must be between {MIN_STORAGE_CACHE_MB} and {MAX_STORAGE_CACHE_MB}",
                    self.storage_cache_mb
                ),
            ));
        }
        if let Some(t) = self.threads {
            if !(1..=MAX_THREADS).contains(&t) {
                return Err(self.err(
                    "threads",
                    format!("{t}: must be between 1 and {MAX_THREADS}"),
                ));
            }
        }
        if rmox_core::smtp::Domain::parse(&self.hostname).is_err() {
            return Err(self.err(
                "hostname",
                format!("{:?} is not a valid host name", self.hostname),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, l) in self.listener.iter().enumerate() {
            if !names.insert(l.name.clone()) {
                return Err(self.err(
                    format!("listener[{i}].name"),
                    format!("duplicate listener name {:?}", l.name),
                ));
            }
            if l.submissions.as_ref().is_some_and(|p| p.enabled) && !l.has_tls() {
                return Err(self.err(
                    format!("listener[{i}].submissions"),
                    "implicit TLS needs listener.tls (or acme)",
                ));
            }
            if l.require_tls_for_auth.is_some() {
                return Err(self.err(
                    format!("listener[{i}].require_tls_for_auth"),
                    "replaced by no_require_starttls: submission requires TLS before AUTH and MAIL unless no_require_starttls = true",
                ));
            }
            if l.require_starttls && !l.has_tls() {
                return Err(self.err(
                    format!("listener[{i}].require_starttls"),
                    "STARTTLS needs listener.tls (or acme)",
                ));
            }
            if l.mta_sts.as_ref().is_some_and(|p| p.enabled) && !l.has_tls() {
                return Err(self.err(
                    format!("listener[{i}].mta_sts"),
                    "HTTPS for MTA-STS policies needs listener.tls (or acme)",
                ));
            }
            if l.submission.as_ref().is_some_and(|p| p.enabled)
                && !l.has_tls()
                && !l.no_require_starttls
            {
                return Err(self.err(
                    format!("listener[{i}].submission"),
                    "submission requires STARTTLS: set listener.tls (or no_require_starttls = true)",
                ));
            }
            self.validate_acme(i, l)?;
        }
        for (name, a) in &self.account {
            for addr in &a.from_id_login_addresses {
                let key = format!("account.{name}.from_id_login_addresses");
                let Some((_, d)) = addr.rsplit_once('@') else {
                    return Err(self.err(key, format!("{addr:?} is not an address")));
                };
                if !self.account_owns_address(name, addr) {
                    return Err(
                        self.err(key, format!("{addr:?} is not an address of account {name}"))
                    );
                }
                if self.catchall_separator(d).is_none() {
                    return Err(self.err(
                        key,
                        format!("domain of {addr:?} has no localpart_catchall_separator (the unique id goes after it)"),
                    ));
                }
            }
        }
        for (name, a) in &self.account {
            let Some(w) = &a.webhooks else { continue };
            for (k, url) in [
                ("outgoing_url", &w.outgoing_url),
                ("incoming_url", &w.incoming_url),
            ] {
                let Some(u) = url else { continue };
                let lower = u.to_ascii_lowercase();
                let rest = lower
                    .strip_prefix("http://")
                    .or_else(|| lower.strip_prefix("https://"));
                if rest.is_none_or(|r| r.is_empty() || r.starts_with('/'))
                    || u.contains(char::is_whitespace)
                {
                    return Err(self.err(
                        format!("account.{name}.webhooks.{k}"),
                        format!("{u:?} is not an http:// or https:// URL"),
                    ));
                }
            }
            if w.secret.chars().count() < 16 {
                return Err(self.err(
                    format!("account.{name}.webhooks.secret"),
                    "at least 16 characters (the HMAC key receivers check signatures with)",
                ));
            }
            if w.authorization
                .as_ref()
                .is_some_and(|a| a.contains(['\r', '\n']))
            {
                return Err(self.err(
                    format!("account.{name}.webhooks.authorization"),
                    "a header value cannot contain a line break",
                ));
            }
        }
        if self.webhooks.retry_intervals_secs.contains(&0) || self.webhooks.timeout_secs == 0 {
            return Err(self.err(
                "webhooks",
                "retry_intervals_secs and timeout_secs must be above 0",
            ));
        }
        if let Some(i) = self.listener.iter().position(|l| {
            l.http.as_ref().is_some_and(|p| p.enabled)
                && !l
                    .acme
                    .as_ref()
                    .is_some_and(|a| a.challenge == AcmeChallenge::Http01)
        }) {
            return Err(self.err(
                format!("listener[{i}].http"),
                "the http port only answers ACME http-01 challenges: set acme with challenge = \"http-01\" on this listener",
            ));
        }
        for (i, l) in self.listener.iter().enumerate() {
            let Some(w) = l.webapi.as_ref().filter(|w| w.enabled) else {
                continue;
            };
            if w.tls && !l.has_tls() {
                return Err(self.err(
                    format!("listener[{i}].webapi"),
                    "the webapi takes passwords: set tls (or acme) on this listener, or tls = false on a loopback address",
                ));
            }
            // localserve is a development server: plain HTTP wherever it listens, as mox's.
            if !w.tls && !l.ip.is_loopback() && !self.localserve {
                return Err(self.err(
                    format!("listener[{i}].webapi.tls"),
                    format!("plain HTTP sends passwords readable: tls = false only on a loopback address, not {}", l.ip),
                ));
            }
        }
        // Every enabled port once per address: two services on one port would share it.
        let mut bound: BTreeMap<(IpAddr, u16), String> = Default::default();
        for (i, l) in self.listener.iter().enumerate() {
            let webapi = l.webapi.as_ref().map(|w| PortConfig {
                port: w.port,
                enabled: w.enabled,
            });
            for (kind, p) in [
                ("smtp", &l.smtp),
                ("submission", &l.submission),
                ("submissions", &l.submissions),
                ("mta_sts", &l.mta_sts),
                ("metrics", &l.metrics),
                ("http", &l.http),
                ("webapi", &webapi),
            ] {
                let Some(p) = p.as_ref().filter(|p| p.enabled) else {
                    continue;
                };
                let key = format!("listener[{i}].{kind}.port");
                if p.port == 0 {
                    return Err(self.err(key, "port 0 is not a port to listen on"));
                }
                let conflict = bound
                    .iter()
                    .find(|((ip, port), _)| {
                        *port == p.port
                            && (*ip == l.ip || ip.is_unspecified() || l.ip.is_unspecified())
                    })
                    .map(|(_, other)| other.clone());
                if let Some(other) = conflict {
                    return Err(
                        self.err(key, format!("port {} on {} is also {other}", p.port, l.ip))
                    );
                }
                bound.insert((l.ip, p.port), format!("listener[{i}].{kind}.port"));
            }
        }
        let serving = self
            .listener
            .iter()
            .any(|l| l.mta_sts.as_ref().is_some_and(|p| p.enabled));
        for d in self.domain.keys() {
            if self.domain[d].mta_sts.is_none() {
                continue;
            }
            self.mta_sts_policy(d)?;
            if !serving {
                return Err(self.err(
                    format!("domain.{d:?}.mta_sts"),
                    "no listener serves MTA-STS policies: add mta_sts = { port = 443 } to a listener with tls",
                ));
            }
        }
        for (key, v) in [
            ("limits.http_max_head_size", self.limits.http_max_head_size),
            ("limits.http_max_headers", self.limits.http_max_headers),
            ("limits.http_max_pipelined", self.limits.http_max_pipelined),
        ] {
            if v == 0 {
                return Err(self.err(key, "0 would refuse every request"));
            }
        }
        if self.limits.spool_threshold_bytes == 0 {
            return Err(self.err(
                "limits.spool_threshold_bytes",
                "0 is not a size; give the octets held in memory before spooling",
            ));
        }
        if self.limits.max_message_size == 0 {
            return Err(self.err(
                "limits.max_message_size",
                "0 would refuse every message; give a size in octets",
            ));
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
            for (dest, d) in &a.destinations {
                for (i, r) in d.rulesets.iter().enumerate() {
                    if let Err((key, problem)) = r.compile("Inbox") {
                        return Err(self.err(
                            format!("account.{name}.destinations.{dest:?}.rulesets[{i}].{key}"),
                            problem,
                        ));
                    }
                }
            }
        }
        for a in self.account.values_mut() {
            for d in a.destinations.values_mut() {
                let mailbox = d.mailbox.as_deref().unwrap_or("Inbox");
                let compiled = d
                    .rulesets
                    .iter()
                    .filter_map(|r| r.compile(mailbox).ok())
                    .collect();
                d.compiled = CompiledRulesets(Arc::new(compiled));
            }
        }
        for (name, a) in &self.account {
            if let Some(Err(e)) = a.junk_filter.as_ref().map(JunkFilterConfig::check) {
                return Err(self.err(format!("account.{name}.junk_filter"), e));
            }
            if a.rejects_mailbox
                .as_deref()
                .is_some_and(|m| m.trim().is_empty())
            {
                return Err(self.err(
                    format!("account.{name}.rejects_mailbox"),
                    "empty mailbox name: give a name such as \"Rejects\" or remove the key",
                ));
            }
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
        let reporting = self.domain.iter().flat_map(|(d, dc)| {
            [
                ("dmarc_reports", &dc.dmarc_reports),
                ("tls_reports", &dc.tls_reports),
            ]
            .into_iter()
            .filter_map(move |(k, a)| a.as_ref().map(|a| (d, k, a)))
        });
        for (d, k, addr) in reporting {
            let key = format!("domain.{d:?}.{k}");
            let Some((lp, ad)) = addr.rsplit_once('@') else {
                return Err(self.err(key, format!("{addr:?} is not an address")));
            };
            if !ad.eq_ignore_ascii_case(d) || lp.is_empty() {
                return Err(self.err(key, format!("{addr:?} must be an address at {d}")));
            }
            if !matches!(
                self.resolve(lp, &ad.to_ascii_lowercase()),
                Resolution::Account { .. }
            ) {
                return Err(self.err(
                    key,
                    format!("{addr:?} is not delivered to an account (add it to an account's destinations)"),
                ));
            }
        }
        for name in self.transport.keys() {
            self.transport_setup(name, false)?;
        }
        self.check_routes("route", &self.route)?;
        for (d, dc) in &self.domain {
            self.check_routes(&format!("domain.{d:?}.routes"), &dc.routes)?;
        }
        for (a, ac) in &self.account {
            self.check_routes(&format!("account.{a}.routes"), &ac.routes)?;
        }
        self.queue.queue_config(&self.path)?;
        if let Some(s) = &self.sendmail {
            if !self.account.contains_key(&s.account) {
                return Err(self.err(
                    "sendmail.account",
                    format!("account {:?} does not exist", s.account),
                ));
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
        if let Some(h) = &self.host_tls_reports {
            if !self.account.contains_key(&h.account) {
                return Err(self.err(
                    "host_tls_reports.account",
                    format!("account {:?} does not exist", h.account),
                ));
            }
            let lp = &h.localpart;
            if lp.is_empty()
                || lp.contains('@')
                || rmox_core::smtp::Address::parse(&format!("{lp}@{}", self.hostname)).is_err()
            {
                return Err(self.err(
                    "host_tls_reports.localpart",
                    format!("{lp:?} is not a local part"),
                ));
            }
            if self
                .domain
                .contains_key(&self.hostname.to_ascii_lowercase())
            {
                return Err(self.err(
                    "host_tls_reports",
                    format!(
                        "the host name {:?} is a configured domain: set its tls_reports instead",
                        self.hostname
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_routes(&self, key: &str, routes: &[RouteConfig]) -> Result<(), ConfigError> {
        for (i, r) in routes.iter().enumerate() {
            let t = &r.transport;
            if !t.is_empty() && t != "direct" && !self.transport.contains_key(t) {
                return Err(self.err(
                    format!("{key}[{i}].transport"),
                    format!("transport {t:?} is not configured (add [transport.{t}])"),
                ));
            }
            for (field, list) in [
                ("from_domains", &r.from_domains),
                ("to_domains", &r.to_domains),
            ] {
                for d in list {
                    let bare = d.strip_prefix('.').unwrap_or(d);
                    if rmox_core::smtp::Domain::parse(bare).is_err() {
                        return Err(self.err(
                            format!("{key}[{i}].{field}"),
                            format!("{d:?} is not a domain (or .domain for its subdomains)"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Builds the setup of `[transport.NAME]` and checks what its types cannot say (one of
    /// password and password_file, both proxy credentials or neither, ...); `read_files`
    /// reads `password_file` (validation only checks that one of the two is set).
    fn transport_setup(&self, name: &str, read_files: bool) -> Result<TransportSetup, ConfigError> {
        use rmox_core::queue::{
            SmtpTls, Transport, TransportDirect, TransportSmtp, TransportSocks5,
            TransportSubmission,
        };
        let key = |k: &str| format!("transport.{name}.{k}");
        let Some(t) = self.transport.get(name) else {
            return Err(self.err(format!("transport.{name}"), "not configured"));
        };
        let (transport, ca_file, proxy_auth) = match t {
            TransportConfig::Direct(d) => {
                if !d.ipv4 && !d.ipv6 {
                    return Err(self.err(key("ipv4"), "ipv4 and ipv6 cannot both be false"));
                }
                let d = TransportDirect {
                    ipv4: d.ipv4,
                    ipv6: d.ipv6,
                };
                (Transport::Direct(d), None, None)
            }
            TransportConfig::Smarthost(s) => {
                let checked = matches!(s.tls, TransportTls::Starttls | TransportTls::Implicit);
                if !checked && s.verify.is_some() {
                    return Err(self.err(
                        key("verify"),
                        "only with tls = \"starttls\" or \"implicit\" (no certificate is checked otherwise)",
                    ));
                }
                let verify = s.verify.unwrap_or(true);
                if s.ca_file.is_some() && s.tls == TransportTls::None {
                    return Err(self.err(key("ca_file"), "not with tls = \"none\" (no TLS)"));
                }
                let tls = match s.tls {
                    TransportTls::Opportunistic => SmtpTls::Opportunistic,
                    TransportTls::Starttls => SmtpTls::StartTls { verify },
                    TransportTls::Implicit => SmtpTls::Implicit { verify },
                    TransportTls::None => SmtpTls::None,
                };
                let default_port = if matches!(tls, SmtpTls::Implicit { .. }) {
                    465
                } else {
                    25
                };
                let auth = match &s.auth {
                    Some(a) => Some(self.smtp_auth(name, a, read_files)?),
                    None => None,
                };
                let t = Transport::Smarthost(TransportSmtp {
                    host: s.host.clone(),
                    port: s.port.unwrap_or(default_port),
                    tls,
                    auth,
                });
                (t, s.ca_file.as_ref(), None)
            }
            TransportConfig::Submission(s) => {
                let implicit_tls = match s.tls {
                    None => s.port == Some(465),
                    Some(SubmissionTls::Starttls) => false,
                    Some(SubmissionTls::Implicit) => true,
                };
                let t = Transport::Submission(TransportSubmission {
                    host: s.host.clone(),
                    port: s.port.unwrap_or(if implicit_tls { 465 } else { 587 }),
                    implicit_tls,
                    auth: self.smtp_auth(name, &s.auth, read_files)?,
                });
                (t, s.ca_file.as_ref(), None)
            }
            TransportConfig::Socks5(s) => {
                // Both checked when parsed (`hostname` at its key, `ehlo_hostname` here).
                let ehlo = s
                    .ehlo_hostname
                    .clone()
                    .unwrap_or_else(|| self.hostname.clone());
                let proxy_auth = s
                    .proxy_auth
                    .as_ref()
                    .map(|a| (a.username.clone(), a.password.clone()));
                let t = Transport::Socks5(TransportSocks5 {
                    proxy: s.proxy,
                    // Nothing reads the proxy's IPs yet; the key was removed as inert.
                    remote_ips: Vec::new(),
                    ehlo_hostname: ehlo,
                });
                (t, None, proxy_auth)
            }
        };
        Ok(TransportSetup {
            transport,
            ca_file: ca_file.map(|f| self.resolve_path(f)),
            proxy_auth,
        })
    }

    /// The credentials of `[transport.NAME].auth`; `read_files` reads `password_file`.
    fn smtp_auth(
        &self,
        name: &str,
        a: &TransportAuth,
        read_files: bool,
    ) -> Result<rmox_core::queue::SmtpAuth, ConfigError> {
        let key = |k: &str| format!("transport.{name}.{k}");
        let password = match &a.secret {
            TransportSecret::Password(p) => p.clone(),
            TransportSecret::File(f) if read_files => {
                let path = self.resolve_path(f);
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    self.err(
                        key("auth.password_file"),
                        format!("{}: {e}", path.display()),
                    )
                })?;
                let p = text.lines().next().unwrap_or_default().to_string();
                if p.is_empty() {
                    return Err(self.err(
                        key("auth.password_file"),
                        format!("{}: empty first line", path.display()),
                    ));
                }
                p
            }
            TransportSecret::File(_) => String::new(),
        };
        Ok(rmox_core::queue::SmtpAuth {
            username: a.username.clone(),
            password,
            mechanisms: a.mechanisms.clone(),
        })
    }

    /// The zone data of `resolver = ["zonefile:PATH"]`, read as serve reads it, the error
    /// naming the key; `None` for the other resolvers.
    pub fn zonefile(&self) -> Result<Option<rmox_core::dns::StaticZone>, ConfigError> {
        let Resolver::Zonefile(p) = &self.resolver else {
            return Ok(None);
        };
        read_zone(&self.resolve_path(p))
            .map(Some)
            .map_err(|e| self.err("resolver", format!("zonefile: {e}")))
    }

    /// Every configured transport by name, password files read.
    pub fn transports(&self) -> Result<BTreeMap<String, TransportSetup>, ConfigError> {
        self.transport
            .keys()
            .map(|n| Ok((n.clone(), self.transport_setup(n, true)?)))
            .collect()
    }

    /// The routes for the queue scheduler. A route to `"direct"` (when no transport has that
    /// name) is direct delivery.
    pub fn routes(&self) -> rmox_core::queue::Routes {
        let conv = |list: &[RouteConfig]| -> Vec<rmox_core::queue::Route> {
            list.iter()
                .map(|r| rmox_core::queue::Route {
                    from_domains: r
                        .from_domains
                        .iter()
                        .map(|d| d.to_ascii_lowercase())
                        .collect(),
                    to_domains: r
                        .to_domains
                        .iter()
                        .map(|d| d.to_ascii_lowercase())
                        .collect(),
                    min_attempts: r.min_attempts,
                    transport: if r.transport == "direct" && !self.transport.contains_key("direct")
                    {
                        String::new()
                    } else {
                        r.transport.clone()
                    },
                })
                .collect()
        };
        rmox_core::queue::Routes {
            accounts: self
                .account
                .iter()
                .filter(|(_, a)| !a.routes.is_empty())
                .map(|(n, a)| (n.clone(), conv(&a.routes)))
                .collect(),
            domains: self
                .domain
                .iter()
                .filter(|(_, d)| !d.routes.is_empty())
                .map(|(n, d)| (n.clone(), conv(&d.routes)))
                .collect(),
            global: conv(&self.route),
        }
    }

    /// The accounts' maildirs (`account.NAME.maildir`, `maildir_group`), for
    /// `Store::set_maildirs`.
    pub fn maildirs(&self) -> Result<BTreeMap<String, rmox_storage::Maildir>, ConfigError> {
        let group = match &self.maildir_group {
            None => None,
            Some(g) => Some(group_id(g).ok_or_else(|| {
                self.err(
                    "maildir_group",
                    format!("{g:?}: no such group (a name in /etc/group or a number)"),
                )
            })?),
        };
        let base = self.path.parent().unwrap_or(Path::new("."));
        Ok(self
            .account
            .iter()
            .filter_map(|(name, a)| {
                let root = a.maildir.as_ref()?;
                Some((
                    name.clone(),
                    rmox_storage::Maildir {
                        root: base.join(root),
                        group,
                    },
                ))
            })
            .collect())
    }

    /// `[storage]`: a PostgreSQL backend needs its URL and a lease in range; the redb one
    /// takes none of the PostgreSQL keys (a key that does nothing is refused).
    fn validate_storage(&self) -> Result<(), ConfigError> {
        let st = &self.storage;
        match st.kind {
            StorageKind::Redb => {
                for (key, set) in [
                    ("storage.url", st.url.is_some()),
                    ("storage.node", st.node.is_some()),
                    ("storage.lease_secs", st.lease_secs != DEFAULT_LEASE_SECS),
                    ("storage.pool_idle", st.pool_idle != default_pool_idle()),
                ] {
                    if set {
                        return Err(self.err(key, "only for kind = \"postgres\"".to_string()));
                    }
                }
            }
            StorageKind::Postgres => {
                let url = st.url.as_deref().unwrap_or_default();
                if url.trim().is_empty() {
                    return Err(self.err(
                        "storage.url",
                        "kind = \"postgres\" needs the database's url".to_string(),
                    ));
                }
                if let Some(n) = &st.node {
                    if n.is_empty() || n.len() > 255 || n.chars().any(|c| c.is_control()) {
                        return Err(self.err(
                            "storage.node",
                            format!("{n:?}: 1 to 255 printable characters"),
                        ));
                    }
                }
                // Maildir copies are files on one machine: not with a shared database.
                if let Some((name, _)) = self.account.iter().find(|(_, a)| a.maildir.is_some()) {
                    return Err(self.err(
                        format!("account.{name}.maildir"),
                        "maildir copies need kind = \"redb\" (files on one machine); the postgres backend does not keep them".to_string(),
                    ));
                }
                if st.pool_idle == 0 || st.pool_idle > 1024 {
                    return Err(self.err(
                        "storage.pool_idle",
                        format!("{}: must be between 1 and 1024", st.pool_idle),
                    ));
                }
            }
        }
        if !(MIN_LEASE_SECS..=MAX_LEASE_SECS).contains(&st.lease_secs) {
            return Err(self.err(
                "storage.lease_secs",
                format!(
                    "{}: must be between {MIN_LEASE_SECS} and {MAX_LEASE_SECS}",
                    st.lease_secs
                ),
            ));
        }
        Ok(())
    }

    /// This node's name in queue leases (`[storage] node`, else the host name).
    pub fn storage_node(&self) -> String {
        self.storage
            .node
            .clone()
            .unwrap_or_else(|| self.hostname.clone())
    }

    /// The database page cache in bytes (`storage_cache_mb`).
    pub fn storage_cache_bytes(&self) -> usize {
        usize::try_from(self.storage_cache_mb << 20).unwrap_or(usize::MAX)
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

    /// The MTA-STS policy we serve for `domain` (`[domain.X.mta_sts]`), `Ok(None)` when it
    /// has none; an error names the key and value that make it invalid.
    pub fn mta_sts_policy(
        &self,
        domain: &str,
    ) -> Result<Option<rmox_core::tlspolicy::mtasts::StsPolicy>, ConfigError> {
        use rmox_core::tlspolicy::mtasts::{Mode, MxPattern, StsPolicy, MAX_MAX_AGE};
        let Some(m) = self.domain.get(domain).and_then(|dc| dc.mta_sts.as_ref()) else {
            return Ok(None);
        };
        let key = |k: &str| format!("domain.{domain:?}.mta_sts.{k}");
        if m.max_age > MAX_MAX_AGE {
            return Err(self.err(
                key("max_age"),
                format!("{} is more than {MAX_MAX_AGE} seconds", m.max_age),
            ));
        }
        let names = if m.mx.is_empty() {
            vec![self.hostname.clone()]
        } else {
            m.mx.clone()
        };
        let mut mx = Vec::new();
        for n in &names {
            mx.push(MxPattern::parse(n).ok_or_else(|| {
                self.err(
                    key("mx"),
                    format!("{n:?} is not a host name or *. and a domain"),
                )
            })?);
        }
        let mode = match m.mode {
            StsModeConfig::Enforce => Mode::Enforce,
            StsModeConfig::Testing => Mode::Testing,
            StsModeConfig::None => Mode::None,
        };
        Ok(Some(StsPolicy {
            mode,
            max_age: m.max_age,
            mx,
            extensions: Vec::new(),
        }))
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
        self.resolve_destination(localpart, domain).0
    }

    /// [`Config::resolve`], and the destination that matched (its rulesets apply).
    pub fn resolve_destination(
        &self,
        localpart: &str,
        domain: &str,
    ) -> (Resolution, Option<&Destination>) {
        let postmaster = || match &self.postmaster {
            Some(p) => Resolution::Account {
                account: p.account.clone(),
                mailbox: p.mailbox.clone(),
            },
            None => Resolution::UnknownUser,
        };
        let ours = self.domain.get(domain);
        if ours.is_none() && !domain.eq_ignore_ascii_case(&self.hostname) {
            return (Resolution::UnknownDomain, None);
        }
        if localpart.eq_ignore_ascii_case("postmaster") {
            return (postmaster(), None);
        }
        let Some(dc) = ours else {
            let r = match &self.host_tls_reports {
                Some(h) if h.localpart.eq_ignore_ascii_case(localpart) => Resolution::Account {
                    account: h.account.clone(),
                    mailbox: h.mailbox.clone(),
                },
                _ => Resolution::UnknownUser,
            };
            return (r, None);
        };
        if dc.disabled {
            return (Resolution::DomainDisabled, None);
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
                    let r = Resolution::Account {
                        account: name.clone(),
                        mailbox: d.mailbox.clone().unwrap_or_else(inbox),
                    };
                    return (r, Some(d));
                }
            }
        }
        if lp.is_empty() {
            // `""@domain` only matches a configured empty local part.
            for (name, a) in &self.account {
                for (dest, d) in &a.destinations {
                    if dest.starts_with("\"\"@") && dest[3..].eq_ignore_ascii_case(domain) {
                        let r = Resolution::Account {
                            account: name.clone(),
                            mailbox: d.mailbox.clone().unwrap_or_else(inbox),
                        };
                        return (r, Some(d));
                    }
                }
            }
        }
        for (name, a) in &self.account {
            for (dest, d) in &a.destinations {
                if let Some(cd) = dest.strip_prefix('@') {
                    if cd.eq_ignore_ascii_case(domain) {
                        let r = Resolution::Account {
                            account: name.clone(),
                            mailbox: d.mailbox.clone().unwrap_or_else(inbox),
                        };
                        return (r, Some(d));
                    }
                }
            }
        }
        (Resolution::UnknownUser, None)
    }

    /// The checks port 25 runs, from `[incoming]`; `None` when none run (`checks = false`,
    /// every switch off, or localserve).
    pub fn incoming_checks(&self) -> Option<rmox_core::server::IncomingChecks> {
        let i = &self.incoming;
        if !i.checks || self.localserve {
            return None;
        }
        let c = rmox_core::server::IncomingChecks {
            ehlo_must_resolve: i.ehlo_check,
            mail_from_domain: i.mail_from_check,
            spf: i.spf,
            multiple_recipients_need_spf_pass: i.spf,
            iprev: i.iprev,
            dkim: i.dkim,
            dmarc: i.dmarc,
            dnsbl: i.dnsbl.clone(),
        };
        let any = c.ehlo_must_resolve || c.mail_from_domain || c.spf || c.iprev || c.dkim;
        (any || c.dmarc || !c.dnsbl.is_empty()).then_some(c)
    }

    /// The domain whose `dmarc_reports` address `localpart@domain` is, if any.
    pub fn dmarc_reports_domain(&self, localpart: &str, domain: &str) -> Option<&str> {
        let (name, dc) = self.domain.get_key_value(&domain.to_ascii_lowercase())?;
        let addr = dc.dmarc_reports.as_deref()?;
        let (lp, _) = addr.rsplit_once('@')?;
        let same = if dc.localpart_case_sensitive {
            lp == localpart
        } else {
            lp.eq_ignore_ascii_case(localpart)
        };
        same.then_some(name.as_str())
    }

    /// The domain whose `tls_reports` address `localpart@domain` is (or the host name, for
    /// the `host_tls_reports` address), if any.
    pub fn tls_reports_domain(&self, localpart: &str, domain: &str) -> Option<&str> {
        if let Some(h) = &self.host_tls_reports {
            if domain.eq_ignore_ascii_case(&self.hostname)
                && h.localpart.eq_ignore_ascii_case(localpart)
            {
                return Some(self.hostname.as_str());
            }
        }
        let (name, dc) = self.domain.get_key_value(&domain.to_ascii_lowercase())?;
        let addr = dc.tls_reports.as_deref()?;
        let (lp, _) = addr.rsplit_once('@')?;
        // As in delivery (and mox): `tlsrpt+x@` is the reporting address `tlsrpt@`.
        let localpart = match dc
            .localpart_catchall_separator
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(|sep| localpart.split_once(sep))
        {
            Some((base, _)) => base,
            None => localpart,
        };
        let same = if dc.localpart_case_sensitive {
            lp == localpart
        } else {
            lp.eq_ignore_ascii_case(localpart)
        };
        same.then_some(name.as_str())
    }

    /// Whether `domain` (lower case) is ours for TLS reports: a configured domain or the
    /// host name.
    pub fn is_tls_report_domain(&self, domain: &str) -> bool {
        self.domain.contains_key(domain) || domain.eq_ignore_ascii_case(&self.hostname)
    }

    /// The local part catchall separator of `domain` (any case), when it has one.
    pub fn catchall_separator(&self, domain: &str) -> Option<&str> {
        self.domain
            .get(&domain.to_ascii_lowercase())?
            .localpart_catchall_separator
            .as_deref()
            .filter(|s| !s.is_empty())
    }

    /// When a send by `account` logged in as `login` gets unique return addresses (mox's
    /// fromid): the MAIL FROM local part before the separator, and the separator.
    /// `from` is the message's sending address.
    pub fn from_id_base(&self, account: &str, login: &str, from: &str) -> Option<(String, String)> {
        let a = self.account.get(account)?;
        if !a
            .from_id_login_addresses
            .iter()
            .any(|l| l.eq_ignore_ascii_case(login))
        {
            return None;
        }
        let (lp, d) = from.rsplit_once('@')?;
        let sep = self.catchall_separator(d)?;
        let base = lp.split_once(sep).map_or(lp, |(b, _)| b);
        Some((format!("{base}{sep}"), d.to_string()))
    }

    /// Whether `address` (`localpart@domain`) is delivered to `account`.
    pub fn account_owns_address(&self, account: &str, address: &str) -> bool {
        address
            .rsplit_once('@')
            .is_some_and(|(lp, d)| self.account_owns(account, lp, &d.to_ascii_lowercase()))
    }

    /// The address an account sends from by default: `ACCOUNT@DOMAIN` when it is one of
    /// its addresses, else its first address (not a catchall).
    pub fn account_address(&self, account: &str) -> Option<String> {
        let a = self.account.get(account)?;
        let own = format!("{account}@{}", a.domain);
        if a.destinations.contains_key(&own) {
            Some(own)
        } else {
            a.destinations.keys().find(|d| !d.starts_with('@')).cloned()
        }
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

/// After the file failed to parse: the error of `resolver` or of a `[transport.NAME]` table
/// with the key it is about, or `None` when the error is elsewhere. serde reports errors inside an
/// internally tagged enum without a position, so the table is parsed again on its own and
/// the key found from serde's message: the field it names, else the value it quotes.
fn locate_error(text: &str, file: &str) -> Option<ConfigError> {
    let doc: toml::Table = toml::from_str(text).ok()?;
    let located = |key: String, problem: String| ConfigError {
        file: file.to_string(),
        key,
        problem,
    };
    let list: Option<Vec<String>> = doc.get("resolver").and_then(|r| r.clone().try_into().ok());
    if let Some(Err(problem)) = list.map(|l| Resolver::parse(&l)) {
        return Some(located("resolver".into(), problem));
    }
    let transports = doc.get("transport")?.as_table()?;
    for (name, v) in transports {
        let Some(t) = v.as_table() else {
            continue;
        };
        let Err(e) = v.clone().try_into::<TransportConfig>() else {
            continue;
        };
        let msg = e.message().trim().replace('\n', " ");
        let (key, problem) = transport_problem(t, &msg);
        let key = format!(
            "transport.{name}{}",
            key.map(|k| format!(".{k}")).unwrap_or_default()
        );
        return Some(located(key, problem));
    }
    None
}

/// The key (within the transport table `t`) and the problem for serde's message `msg`.
fn transport_problem(t: &toml::Table, msg: &str) -> (Option<String>, String) {
    const AUTH_KEYS: [&str; 4] = ["username", "password", "password_file", "mechanisms"];
    let kind = t.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
    let quoted = |prefix: &str| -> Option<(String, String)> {
        let rest = msg.strip_prefix(prefix)?.strip_prefix('`')?;
        let (field, tail) = rest.split_once('`')?;
        Some((
            field.to_string(),
            tail.trim_start_matches(',').trim().to_string(),
        ))
    };
    if let Some((field, _)) = quoted("missing field ") {
        if field == "kind" {
            return (
                Some(field),
                "required: smarthost, submission, socks5 or direct".into(),
            );
        }
        if AUTH_KEYS.contains(&field.as_str()) && t.contains_key("auth") {
            return (Some(format!("auth.{field}")), "required".into());
        }
        return (Some(field), format!("required for kind = {kind:?}"));
    }
    if let Some((field, expected)) = quoted("unknown field ") {
        if t.contains_key(&field) {
            return (
                Some(field),
                format!("not valid for kind = {kind:?} ({expected})"),
            );
        }
        return (
            Some(format!("auth.{field}")),
            format!("unknown key ({expected})"),
        );
    }
    // A nested type's own check: `KEY: problem`.
    if let Some((k, problem)) = msg.split_once(": ") {
        if !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return (Some(k.to_string()), problem.to_string());
        }
    }
    // A value error: the key whose value the message quotes.
    fn find(prefix: &str, v: &toml::Value, msg: &str) -> Option<String> {
        let hit = |s: String| msg.contains(&format!("{s:?}")) || msg.contains(&format!("`{s}`"));
        match v {
            toml::Value::Table(t) => t.iter().find_map(|(k, v)| {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                find(&path, v, msg)
            }),
            toml::Value::Array(a) => a.iter().find_map(|v| find(prefix, v, msg)),
            toml::Value::String(s) => hit(s.clone()).then(|| prefix.to_string()),
            toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_) => {
                msg.contains(&format!("`{v}`")).then(|| prefix.to_string())
            }
            toml::Value::Datetime(_) => None,
        }
    }
    (
        find("", &toml::Value::Table(t.clone()), msg),
        msg.to_string(),
    )
}

/// A fully commented example that `config check` accepts.
pub const EXAMPLE: &str = r#"# rmox configuration. Every key is documented; paths are relative to this file.

# Our host name: greeting, EHLO, Received headers. Must resolve to this machine.
hostname = "mail.example.org"

# Where the database and message files live.
data_dir = "data"

# DNS servers as ip:port. Empty: use /etc/resolv.conf.
resolver = ["127.0.0.53:53"]
# Whose DNSSEC verdict (the AD bit) is believed, which DANE needs: "loopback" (default:
# only when every resolver above is on this machine), "always", or "never" (DANE off;
# a zonefile resolver's answers count as insecure too).
resolver_trust_ad = "loopback"

# The group that gets read/write access to the accounts' maildirs (files 0660, directories
# 2770), for an IMAP server running as another user. Unset: private to rmox's user.
# maildir_group = "dovecot"

# MiB of database page cache (default 64, 4 to 65536). Memory stays flat beyond it however
# large the accounts and the queue grow; more cache means fewer reads from disk.
storage_cache_mb = 64

# Runtime worker threads, each serving its share of the connections (1 to 1024). Unset:
# one per CPU on tokio and smol; one per two CPUs (at least one) on glommio, whose
# executors sleep and wake at a higher cost and leave the other CPUs to the storage work
# on the blocking pool (README, Performance, has the measurement).
# threads = 2

# Where accounts, messages and the queue are kept. kind = "redb" (default): the embedded
# database and message files in data_dir, one machine. kind = "postgres": a PostgreSQL
# database that several rmox nodes share (accounts, queue, reputation, counters); url is
# its connection string, node this node's name in queue leases (default: hostname; unique
# per node), lease_secs how long a node holds a queue entry it is delivering without
# renewing (5 to 86400, default 900; renewed every third of it while the attempt runs; a
# node that dies loses its entries to the others after it), pool_idle the connections kept
# open (default 16).
[storage]
kind = "redb"
# kind = "postgres"
# url = "postgresql://rmox@127.0.0.1:5432/rmox"
# node = "mx1"
# lease_secs = 900
# pool_idle = 16

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
# Port 25: refuse MAIL before STARTTLS (530 5.7.0). Other servers may deliver in plain
# text, so this is off by default.
require_starttls = false
# Submission (587): AUTH and MAIL need STARTTLS first unless this is true (then a
# submission port without tls is allowed too).
no_require_starttls = false
# HTTPS (with the tls certificate above) serving the MTA-STS policy of every domain that
# has [domain."X".mta_sts], at https://mta-sts.X/.well-known/mta-sts.txt. The certificate
# must be valid for mta-sts.X.
mta_sts = { port = 443, enabled = true }
# Prometheus metrics (text format) at http://IP:PORT/metrics, plain HTTP: put it on a
# listener whose address only your monitoring reaches (the README lists the metrics).
metrics = { port = 9100, enabled = false }
# Instead of tls files, the certificate can come from an ACME CA (RFC 8555, e.g. Let's
# Encrypt): obtained at the first start, kept in DATA/acme/, renewed when fewer than
# renew_before_days (default 30) remain and swapped in without a restart. Until the first
# one arrives the listener serves a self-signed certificate for the names. challenge:
# "tls-alpn-01" (default; the CA connects to port 443, so the listener needs mta_sts or
# submissions reachable there) or "http-01" (the CA connects to port 80: set http below).
# hostnames: the certificate's names (default: hostname). ca_file: CA certificates
# trusted for the CA's own HTTPS (default: the system's). Not together with tls.
# acme = { directory_url = "https://acme-v02.api.letsencrypt.org/directory", contact = ["mailto:postmaster@example.org"], challenge = "tls-alpn-01", hostnames = ["mail.example.org", "mta-sts.example.org"], renew_before_days = 30 }
# Plain HTTP answering ACME http-01 challenges (and 404 to everything else); only with
# acme and challenge = "http-01".
# http = { port = 80, enabled = true }
# The webapi for applications (mox's /webapi/v0/ methods: Send, SuppressionList, MessageGet,
# ...), HTTP basic authentication with an account's address and password, over TLS with this
# listener's certificate; tls = false (plain HTTP) only on a loopback address (or with
# localserve). Described in
# docs/webapi.openapi.json.
# webapi = { port = 1443, enabled = true, tls = true }

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
# Address (at this domain, delivered to an account) that receives DMARC aggregate reports
# about this domain, e.g. the rua=mailto: of its DMARC record. Reports sent there, about
# this domain, from a sender that passes DMARC, are kept as reports; others stay mail.
dmarc_reports = "info@example.org"
# Address (at this domain, delivered to an account) that receives TLS reports (RFC 8460),
# e.g. the rua=mailto: of its _smtp._tls record. Reports sent there, DKIM-signed by the
# sender's domain, about this domain or our host name, are kept (see `rmox tlsrpt list`);
# the message is delivered as mail either way.
tls_reports = "tlsrpt@example.org"

# The MTA-STS policy (RFC 8461) served for this domain on listeners with mta_sts. mode:
# "enforce", "testing" or "none"; max_age: seconds senders cache it (default 86400); mx:
# the MX host patterns (default: the host name). At start the server logs the TXT record
# to publish at _mta-sts.example.org; its id is derived from the policy text, so it
# changes whenever the policy does.
[domain."example.org".mta_sts]
mode = "enforce"
max_age = 604800
mx = ["mail.example.org"]

# Accounts and the addresses that deliver to them.
[account.mjl]
domain = "example.org"
# Per address settings; "@example.org" would be a catchall. Rulesets: the first whose
# conditions (smtp_mail_from_regexp, verified_domain, header_regexps = { "list-id" = "..." })
# all hold sends the message to its mailbox; is_forward = true for mail through a
# forwarder (not judged by the forwarder's IP, EHLO, MAIL FROM or DMARC result);
# accept_rejects_to_mailbox accepts what the analysis refuses into that mailbox.
destinations = { "mjl@example.org" = { rulesets = [{ header_regexps = { "list-id" = "dev\\.lists\\.example\\.org" }, mailbox = "Lists/dev" }] }, "info@example.org" = { mailbox = "Info" }, "tlsrpt@example.org" = { mailbox = "TLSRPT" } }
# Sending limits per 24 hours.
max_outgoing_messages_per_day = 1000
max_first_time_recipients_per_day = 200
# Total size of stored messages in octets; 0 means unlimited.
quota_message_size = 0
# Uncomment to refuse logins with this message.
# login_disabled = "account suspended, contact the administrator"
# A DNSBL-listed sender without history whose message passes DMARC is refused with a pass
# to add to the Subject when sending again, valid this many seconds (0: off).
subjectpass_period_secs = 0
# Keep messages the incoming analysis refuses in this mailbox (the sender still gets the
# refusal), so that a wanted one can be rescued. Unset: refused messages are not kept.
rejects_mailbox = "Rejects"
# Also write every delivered message to this Maildir++ directory (durably, before the
# 250), for an IMAP server such as Dovecot to serve; messages the user moves to its Junk
# folder count as junk for reputation.
# maildir = "/var/mail/mjl/Maildir"
# Logged in as one of these addresses (webapi or SMTP submission), each recipient gets its
# own MAIL FROM, LOCAL+ID@DOMAIN (ID random, or the one a submission put in MAIL FROM for a
# single recipient; the domain needs a localpart_catchall_separator):
# a DSN that comes back to it becomes an outgoing webhook event of that message
# (delivered, relayed, expanded, delayed, failed or unrecognized, with DSN = true).
from_id_login_addresses = ["mjl@example.org"]
# The junk filter: a Bayesian classifier trained from this account's own mail (messages
# marked junk and what is in the Junk mailbox as spam; marked not-junk and what is in
# mailboxes other than Inbox, Junk and the rejects mailbox as ham; `rmox junk train` for a
# corpus). Asked when reputation is not conclusive: above `threshold` (0.25 for a client
# without valid reverse DNS, without TLS, or a message not addressed to the recipient in
# To/Cc) the message is refused with 451. Until 50 ham messages are trained it only
# refuses together with a bad reverse DNS. Remove the table to turn it off.
[account.mjl.junk_filter]
threshold = 0.95
onegrams = true
twograms = true
max_power = 0.01
top_words = 10
ignore_words = 0.1
rare_words = 2
# Messages received longer ago than this are untrained (0: never).
train_max_age_days = 365

# Webhooks: JSON POSTed to the account's application (mox's webhook shapes). Outgoing:
# delivered, delayed, failed, suppressed and canceled events of its submissions (webapi or
# SMTP); incoming: each message delivered to it. Every POST carries X-Rmox-Signature:
# t=UNIX,v1=HEX, HEX the HMAC-SHA256 under `secret` of "UNIX." followed by the body.
# Retried on [webhooks] retry_intervals_secs until a 2xx; `rmox webhook list|retired`.
# [account.mjl.webhooks]
# outgoing_url = "https://app.example.org/hooks/outgoing"
# incoming_url = "https://app.example.org/hooks/incoming"
# secret = "a long random string"
# authorization = "Basic dXNlcjpwYXNz"

# Address at the host name (localpart@HOSTNAME, the host name need not be a configured
# domain) for TLS reports about our MX host (DANE), e.g. the rua=mailto: of
# _smtp._tls.HOSTNAME: received as tls_reports addresses are, delivered to this account.
[host_tls_reports]
localpart = "tls-reports"
account = "mjl"
mailbox = "TLSRPT"

# `rmox sendmail` (the sendmail interface of cron, PHP's mail(), git send-email) submits
# through the running server as this account, without a password.
[sendmail]
account = "mjl"

# Mail to postmaster (without domain, or at any of our domains).
[postmaster]
account = "mjl"
mailbox = "Postmaster"

# Checks of incoming mail on port 25 (defaults shown). Their results go into an
# Authentication-Results header (and Received-SPF).
[incoming]
# false turns every check below off, DNSBL included.
checks = true
# The EHLO name must resolve to an IP address (550 at MAIL otherwise).
ehlo_check = true
# The MAIL FROM domain must accept mail: exist, no null MX (550 5.7.27 otherwise).
mail_from_check = true
# SPF of the MAIL FROM domain; without an SPF pass one recipient per transaction.
spf = true
# DKIM signatures.
dkim = true
# DMARC of the From domain (verifies DKIM for itself even with dkim = false).
dmarc = true
# Reverse DNS of the client that resolves back to its IP.
iprev = true
# DNS blocklists to consult, e.g. ["sbl.example.org"].
dnsbl = []
# Refuse mail whose From domain publishes p=reject and fails DMARC.
dmarc_reject = true
# Refuse (temporarily) first-time senders without valid reverse DNS.
require_iprev_for_unknown_senders = true
# Look up our own sending addresses in the dnsbl zones this often (seconds, 0: off); a
# listing is a warning in the log and the metric rmox_dnsbl_own_listed. The addresses are
# the host name's unless listed here.
dnsbl_monitor_interval_secs = 3600
dnsbl_monitor_ips = []
# Judge each message by the receiving account's own history: earlier messages from the
# same From address, domain, DKIM/SPF domain or IP network (junk or not), and whether the
# account wrote to the sender. Known-good senders are accepted, known junk refused (451);
# for unknown senders an SPF fail or a junk signal without reverse DNS refuses.
reputation = true
# Refuse (451) a first-time sender (no history, nothing else against it) until it tries
# again this many seconds later (0: off, the default, as in mox).
delay_first_time_senders_secs = 0
# An account's rejects_mailbox keeps refused messages this many days, at most this many
# messages and this many megabytes (a refused message that does not fit is not kept).
rejects_keep_days = 14
rejects_max_messages = 1000
rejects_max_size_mb = 100

# Outgoing queue (defaults shown).
[queue]
# Port of MX hosts; only tests use another value.
smtp_port = 25
# Deliveries (SMTP transactions) in flight at most, in total.
workers = 8
# Transactions in flight at most to one recipient domain.
connections_per_domain = 4
# Recipients in one outgoing transaction at most (more go in further transactions).
recipients_per_transaction = 100
# Messages to one destination delivered one after the other over one connection at most
# (connection reuse: no new connection, greeting and TLS handshake per message); the
# connections to a domain are opened first, up to connections_per_domain. 1: a connection
# per message.
transactions_per_connection = 20
# Seconds to wait for a TCP connection to a host.
connect_timeout_secs = 30
# Waits after each failed attempt, in seconds (the last repeats): 7.5 min doubling to 8 h.
backoff_secs = [450, 900, 1800, 3600, 7200, 14400, 28800, 28800]
# The message fails (DSN to the sender) after this many failed attempts.
max_attempts = 8
# A "delayed" DSN goes to the sender after this failed attempt; 0 for never.
delayed_dsn_after_attempt = 5
# Each wait is spread by up to this percentage either way.
jitter_percent = 10
# Local addresses for outgoing connections (default: the system's choice).
# source_ipv4 = "192.0.2.25"
# source_ipv6 = "2001:db8::25"
# Every this many seconds, recently used MTA-STS policies (used within 30 days, fetched
# over 12 hours ago or expiring within a day) are refreshed in the background: the
# _mta-sts record looked up, the policy fetched when its id changed. 0: no refresh.
mtasts_refresh_interval_secs = 3600

# Transports: other ways for outgoing mail to leave than direct delivery to the MX hosts.
# Routes (below) choose one per delivery attempt.
#
# Relay to a smarthost. tls: "opportunistic" (default), "starttls", "implicit" or "none";
# verify the certificate with starttls/implicit (default true); ca_file: trust these CA
# certificates (PEM) instead of the system's. auth is optional; mechanisms default to the
# strongest the server offers (SCRAM-SHA-256-PLUS down to PLAIN).
[transport.relay]
kind = "smarthost"
host = "smtp.example.net"
port = 25
tls = "starttls"
verify = true
# ca_file = "tls/relay-ca.pem"
auth = { username = "mjl", password = "secret", mechanisms = ["SCRAM-SHA-256", "PLAIN"] }

# Submission to a mail service: AUTH required, tls "starttls" (port 587, the default) or
# "implicit" (port 465). The password can come from a file (first line).
[transport.provider]
kind = "submission"
host = "smtp.provider.example"
port = 465
tls = "implicit"
auth = { username = "mjl@provider.example", password = "secret" }
# auth = { username = "mjl@provider.example", password_file = "provider-password.txt" }

# Direct delivery to the MX hosts, each connection made through a SOCKS5 proxy (RFC 1928).
# proxy_username/proxy_password for a proxy that wants them (RFC 1929); ehlo_hostname
# names where the proxy connects from (default EHLO: hostname).
[transport.tor]
kind = "socks5"
proxy = "127.0.0.1:1080"
# proxy_username = "rmox"
# proxy_password = "secret"
ehlo_hostname = "mail.example.org"

# Direct delivery with address family switches.
[transport.ipv4only]
kind = "direct"
ipv4 = true
ipv6 = false

# Routes: the account's, then the sender domain's ([domain."x"].routes), then these
# global ones are tried in order; the first whose conditions all hold (sender domains,
# recipient domains with ".example.com" for subdomains, from attempt number min_attempts
# on) names the transport; "direct" or no match: direct MX delivery. Per domain or account:
#   [[domain."example.org".routes]] or [[account.mjl.routes]] with the same keys.
[[route]]
to_domains = ["example.com", ".example.com"]
transport = "ipv4only"

# After 4 failed attempts, try through the smarthost.
[[route]]
min_attempts = 5
transport = "relay"

# Abuse limits (defaults shown, mox's numbers). Limits marked [ip, /26, /21] are counted
# per address and per network: IPv4 /32, /26, /21, IPv6 /64, /48, /32. Such a limit is
# three numbers, or one number N meaning [N, 3N, 9N]. Windows are fixed: a minute, or a
# UTC day.
[limits]
max_message_size = 104857600
max_recipients = 1000
# Open connections [ip, /26, /21]; more: "421 4.7.0" before the greeting.
connections_open = [30, 90, 270]
# New connections per minute [ip, /26, /21]; more: "421 4.7.0" before the greeting.
connections_per_minute = [300, 900, 2700]
# Failed logins per minute from one IP. At the limit, AUTH from it gets "421 4.7.0" and
# new connections to submission ports are refused with "421 4.7.0" before the greeting;
# a successful login from the IP resets its count.
auth_failures_per_minute = 10
# Messages delivered to port 25 per minute and per UTC day [ip, /26, /21]; more:
# "452 4.2.2" at MAIL FROM. The per-day counts are kept in the database (written within a
# second and at shutdown) and survive a restart.
deliveries_per_minute = [500, 1500, 4500]
deliveries_per_day = [10000, 30000, 90000]
# Bytes delivered to port 25 per minute and per UTC day [ip, /26, /21]: a message that
# would cross a limit gets "452 4.2.2" after its data; once a limit is reached, MAIL FROM
# gets "452 4.2.2".
delivery_bytes_per_minute = [1048576000, 3145728000, 9437184000]
delivery_bytes_per_day = [3145728000, 9437184000, 28311552000]
# Loopback addresses (127.0.0.0/8, ::1) are exempt from the connection, login and
# delivery limits above; false applies them to loopback too.
exempt_loopback = true
# Networks each of those limits tracks per level and window (bounds memory). A network
# seen when its level is full is not counted at that level; the coarser levels still are.
tracked_networks = 100000
command_timeout_secs = 300
data_timeout_secs = 300
auth_failure_delay_secs = 1
# Seconds before a message whose recipients are all unknown users is refused (550 5.1.1);
# slows down address guessing. 0 answers at once.
unknown_recipient_delay_secs = 5
# Port 25: more Received header fields than this is a mail loop (550 5.4.6).
max_received_headers = 100
# Message data one connection holds in memory (octets); past it the message is written to
# a spool file under the data directory as it arrives, so memory per connection stays
# bounded. The header of a spooled message must fit in it (else 552 5.3.4).
spool_threshold_bytes = 262144
# Failed commands (MAIL, RCPT, DATA, unknown ones) a connection may make without delivering
# a message; the next failure closes it with 550 5.1.0.
max_errors = 10
# Failed AUTH attempts per connection; then 421 and close.
max_auth_failures_per_connection = 3
# Seconds a TLS handshake may take (STARTTLS and implicit TLS); then the connection closes.
tls_handshake_timeout_secs = 30
# Seconds to wait for one internal answer (password check, storing a message, ...); then
# the command gets 451 4.3.0 (421 and close outside a transaction), never a hang.
effect_timeout_secs = 120
# Seconds all DNS checks of one command (SPF, DKIM, DMARC, iprev, DNSBL) may take together;
# then 451 4.3.0.
checks_timeout_secs = 180
# Largest incoming TLS report read, in bytes, gzipped and after decompression; a larger
# one sent to a tls_reports address is delivered as mail only, not stored as a report.
max_tls_report_size = 8388608
# HTTP server (listener mta_sts): largest request head in bytes and most header fields
# (431), largest request body in bytes (413).
http_max_head_size = 16384
http_max_headers = 64
http_max_body_size = 1048576
# Seconds from a request's first byte to its end (408), an idle keep-alive connection
# stays open, and the server may take to answer (503). The TLS handshake takes at most
# tls_handshake_timeout_secs.
http_request_timeout_secs = 30
http_idle_timeout_secs = 60
http_handler_timeout_secs = 60
# Requests read ahead of their answers (pipelining) before reading stops.
http_max_pipelined = 8
# ACME: the least seconds between two issues of one certificate, whatever
# renew_before_days says (a renew_before_days longer than the CA's certificate lifetime
# then renews this often instead of in a loop).
acme_min_renew_interval_secs = 3600

# Outgoing reports, sent from postmaster@hostname (DKIM-signed when the host name's domain
# has keys) through the queue.
[reports]
# Seconds between DMARC aggregate report runs; 0 turns them off.
dmarc_interval_secs = 3600
# TLS reports (RFC 8460) about our deliveries, for each finished UTC day, to the domains
# whose _smtp._tls record asks for them (mailto rua: DKIM-signed mail; https rua: POST), only
# when a session failed. false: never.
send_tls_reports = true
# TLS reports are sent at each multiple of this many seconds in Unix time (86400: UTC
# midnight); 0 turns them off.
tls_interval_secs = 86400

# How webhooks ([account.X.webhooks]) are POSTed: the waits before each retry after a
# failed POST (not a 2xx, or no answer within timeout_secs); after the last the hook is
# retired as failed.
[webhooks]
retry_intervals_secs = [60, 120, 240, 480, 900, 1800, 3600, 7200, 14400, 28800, 57600]
timeout_secs = 60
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

    /// A control character in a comment gave an error without a problem
    /// ("rmox.toml: line 2: " and nothing more); found by the `config_parse` fuzz target.
    #[test]
    fn control_character_error_says_something() {
        let e = Config::parse(
            "hostname = \"mox.example\"\n# a\u{4}\0b\n",
            Path::new("rmox.toml"),
        )
        .unwrap_err();
        assert_eq!(e.key, "line 2");
        assert!(!e.problem.is_empty(), "{e:?}");
    }
    /// `listener.acme` and `listener.http`: defaults, and every mistake refused with the
    /// key and value named (what ACME does is shown by tests/tests/acme.rs).
    #[test]
    fn acme_settings() {
        let parse = |listener: &str, extra: &str| {
            Config::parse(
                &format!(
                    "hostname = \"mail.example.org\"\ndata_dir = \"d\"\n[[listener]]\nname = \"l\"\nip = \"127.0.0.1\"\n{listener}\n{extra}"
                ),
                Path::new("rmox.toml"),
            )
        };
        let dir = "directory_url = \"https://ca.example/dir\"";
        let c = parse(
            &format!(
                "mta_sts = {{ port = 443 }}\nsubmissions = {{ port = 465 }}\nacme = {{ {dir} }}"
            ),
            "",
        )
        .unwrap();
        let a = c.listener[0].acme.as_ref().unwrap();
        assert_eq!(a.challenge, AcmeChallenge::TlsAlpn01);
        assert_eq!(a.renew_before_days, 30);
        assert!(a.contact.is_empty() && a.ca_file.is_none());
        assert_eq!(
            crate::acme::names(&c, a),
            vec!["mail.example.org".to_string()]
        );
        assert!(c.listener[0].has_tls());
        assert_eq!(c.limits.acme_min_renew_interval_secs, 3600);
        let c = parse(
            &format!("http = {{ port = 80 }}\nacme = {{ {dir}, challenge = \"http-01\", hostnames = [\"A.example.org\", \"b.example.org\"], contact = [\"mailto:x@example.org\"], ca_file = \"ca.pem\", renew_before_days = 10 }}"),
            "[limits]\nacme_min_renew_interval_secs = 5\n",
        )
        .unwrap();
        let a = c.listener[0].acme.as_ref().unwrap();
        assert_eq!(a.challenge, AcmeChallenge::Http01);
        assert_eq!(a.renew_before_days, 10);
        assert_eq!(
            crate::acme::names(&c, a),
            vec!["a.example.org".to_string(), "b.example.org".to_string()]
        );
        assert_eq!(c.limits.acme_min_renew_interval_secs, 5);
        let mta = "mta_sts = { port = 443 }\n";
        let cases: Vec<(String, &str, &str)> = vec![
            (
                format!("{mta}tls = {{ cert_file = \"c\", key_file = \"k\" }}\nacme = {{ {dir} }}"),
                "listener[0].acme",
                "not with tls",
            ),
            (
                format!("{mta}acme = {{ directory_url = \"http://ca.example/dir\" }}"),
                "listener[0].acme.directory_url",
                "\"http://ca.example/dir\"",
            ),
            (
                format!("{mta}acme = {{ {dir}, hostnames = [] }}"),
                "listener[0].acme.hostnames",
                "no name",
            ),
            (
                format!("{mta}acme = {{ {dir}, hostnames = [\"*.example.org\"] }}"),
                "listener[0].acme.hostnames",
                "\"*.example.org\"",
            ),
            (
                format!("{mta}acme = {{ {dir}, hostnames = [\"bad host\"] }}"),
                "listener[0].acme.hostnames",
                "\"bad host\"",
            ),
            (
                format!("{mta}acme = {{ {dir}, renew_before_days = 0 }}"),
                "listener[0].acme.renew_before_days",
                "0",
            ),
            (
                format!("{mta}acme = {{ {dir}, contact = [\"admin\"] }}"),
                "listener[0].acme.contact",
                "\"admin\"",
            ),
            (
                format!("smtp = {{ port = 25 }}\nacme = {{ {dir} }}"),
                "listener[0].acme.challenge",
                "tls-alpn-01 needs an implicit TLS port",
            ),
            (
                format!("{mta}acme = {{ {dir}, challenge = \"http-01\" }}"),
                "listener[0].acme.challenge",
                "http-01 needs http",
            ),
            (
                format!("{mta}http = {{ port = 80 }}\nacme = {{ {dir} }}"),
                "listener[0].http",
                "only answers ACME http-01",
            ),
            (
                "http = { port = 80 }".into(),
                "listener[0].http",
                "only answers ACME http-01",
            ),
            (
                format!("{mta}acme = {{ {dir}, challenge = \"dns-01\" }}"),
                "line",
                "dns-01",
            ),
            (
                format!("{mta}acme = {{ {dir}, renew = 3 }}"),
                "line",
                "renew",
            ),
            (
                format!(
                    "{mta}http = {{ port = 443 }}\nacme = {{ {dir}, challenge = \"http-01\" }}"
                ),
                "listener[0].http.port",
                "also",
            ),
        ];
        for (listener, key, problem) in cases {
            let e = parse(&listener, "").unwrap_err();
            assert!(e.key.starts_with(key), "{listener}: {e}");
            assert!(e.to_string().contains(problem), "{listener}: {e}");
        }
    }

    /// The smallest configuration (hostname and data directory) followed by `extra`.
    fn parse_minimal(extra: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!("hostname = \"mox.example\"\ndata_dir = \"d\"\n{extra}"),
            Path::new("rmox.toml"),
        )
    }

    #[test]
    fn example_is_valid() {
        let c = Config::parse(EXAMPLE, Path::new("rmox.toml")).unwrap();
        assert_eq!(c.hostname, "mail.example.org");
        assert_eq!(c.listener[0].smtp.as_ref().unwrap().port, 25);
    }

    /// `storage_cache_mb` is bounded: 0 or a typo'd huge value is refused naming the key.
    #[test]
    fn storage_cache_bounds() {
        let parse = parse_minimal;
        assert_eq!(parse("").unwrap().storage_cache_mb, 64);
        assert_eq!(
            parse("storage_cache_mb = 16\n").unwrap().storage_cache_mb,
            16
        );
        for bad in ["0", "3", "65537"] {
            let e = parse(&format!("storage_cache_mb = {bad}\n")).unwrap_err();
            assert_eq!(e.key, "storage_cache_mb", "{bad}");
            assert!(e.problem.contains("must be between 4 and 65536"), "{e}");
        }
    }

    /// `threads` is bounded (1 to 1024) and unset by default; a bad value names the key.
    #[test]
    fn threads_bounds() {
        let parse = parse_minimal;
        assert_eq!(parse("").unwrap().threads, None);
        assert_eq!(parse("threads = 3\n").unwrap().threads, Some(3));
        assert_eq!(parse("threads = 1024\n").unwrap().threads, Some(1024));
        for bad in ["0", "1025"] {
            let e = parse(&format!("threads = {bad}\n")).unwrap_err();
            assert_eq!(e.key, "threads", "{bad}: {e}");
            assert!(e.problem.contains("must be between 1 and 1024"), "{e}");
        }
        // Not a count at all: refused by the parser, naming the line.
        let e = parse("threads = -1\n").unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
    }

    /// `resolver_trust_ad` takes loopback, always or never (default loopback); its effect
    /// is shown by resolve.rs's `trust_ad_by_setting` and, on DANE, by
    /// tests/tests/harness_delivery_tls.rs's `trust_ad_never`.
    #[test]
    fn resolver_trust_ad() {
        let parse = parse_minimal;
        assert_eq!(parse("").unwrap().resolver_trust_ad, TrustAd::Loopback);
        for (v, want) in [
            ("loopback", TrustAd::Loopback),
            ("always", TrustAd::Always),
            ("never", TrustAd::Never),
        ] {
            let c = parse(&format!("resolver_trust_ad = \"{v}\"\n")).unwrap();
            assert_eq!(c.resolver_trust_ad, want, "{v}");
        }
        let c = Config::parse(EXAMPLE, Path::new("rmox.toml")).unwrap();
        assert_eq!(c.resolver_trust_ad, TrustAd::default());
        for bad in ["\"sometimes\"", "true"] {
            let e = parse(&format!("resolver_trust_ad = {bad}\n")).unwrap_err();
            assert_eq!(e.key, "line 3", "{bad}: {e}");
        }
    }

    /// `resolver` is parsed once at load into where answers come from; a value that is
    /// neither `ip:port` nor one `zonefile:PATH` alone is refused naming the key and value.
    #[test]
    fn resolver_forms() {
        let parse = parse_minimal;
        assert_eq!(parse("").unwrap().resolver, Resolver::System);
        assert_eq!(parse("resolver = []\n").unwrap().resolver, Resolver::System);
        assert_eq!(
            parse("resolver = [\"127.0.0.1:53\", \"[::1]:5353\"]\n")
                .unwrap()
                .resolver,
            Resolver::Servers(vec![
                "127.0.0.1:53".parse().unwrap(),
                "[::1]:5353".parse().unwrap()
            ])
        );
        assert_eq!(
            parse("resolver = [\"zonefile:zone\"]\n").unwrap().resolver,
            Resolver::Zonefile("zone".into())
        );
        let c = Config::parse(EXAMPLE, Path::new("rmox.toml")).unwrap();
        assert_eq!(
            c.resolver,
            Resolver::Servers(vec!["127.0.0.53:53".parse().unwrap()])
        );
        for (bad, want) in [
            (
                "[\"127.0.0.1\"]",
                "rmox.toml: resolver: \"127.0.0.1\" is not ip:port (or zonefile:PATH)",
            ),
            (
                "[\"zonefile:\"]",
                "rmox.toml: resolver: \"zonefile:\": zonefile: needs a path",
            ),
            (
                "[\"zonefile:a\", \"zonefile:b\"]",
                "rmox.toml: resolver: \"zonefile:b\": only one zonefile:PATH",
            ),
            (
                "[\"zonefile:a\", \"127.0.0.1:53\"]",
                "rmox.toml: resolver: \"zonefile:a, 127.0.0.1:53\": zonefile:PATH answers every question, it cannot be combined with servers",
            ),
        ] {
            let e = parse(&format!("resolver = {bad}\n")).unwrap_err().to_string();
            assert_eq!(e, want, "{bad}");
        }
        // The zone file is read by `config check` and at start, the error naming the key.
        let c = parse("resolver = [\"zonefile:/nonexistent/zone\"]\n").unwrap();
        let e = c.zonefile().unwrap_err().to_string();
        assert!(
            e.starts_with("rmox.toml: resolver: zonefile: /nonexistent/zone: "),
            "{e}"
        );
        assert!(parse("").unwrap().zonefile().unwrap().is_none());
        // Not a list of strings: a type error, at its line.
        let e = parse("resolver = \"127.0.0.1:53\"\n").unwrap_err();
        assert_eq!(e.key, "line 3", "{e}");
    }

    /// The example shows the defaults of every limit.
    #[test]
    fn example_limits_are_the_defaults() {
        let c = Config::parse(EXAMPLE, Path::new("rmox.toml")).unwrap();
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.reports, ReportSettings::default());
    }

    /// `[reports]` keys parse; their effects are shown by src/reports.rs's tests
    /// (`reporters_follow_config`) and tests/tests/harness_tlsrpt.rs.
    #[test]
    fn report_settings() {
        let parse = |r: &str| {
            Config::parse(
                &format!("hostname = \"mox.example\"\ndata_dir = \"data\"\n[reports]\n{r}"),
                Path::new("rmox.toml"),
            )
            .map(|c| c.reports)
        };
        let d = parse("").unwrap();
        assert_eq!(
            (
                d.dmarc_interval_secs,
                d.send_tls_reports,
                d.tls_interval_secs
            ),
            (3600, true, 86400)
        );
        let r = parse("send_tls_reports = false\ntls_interval_secs = 5\n").unwrap();
        assert!(!r.send_tls_reports);
        assert_eq!(r.tls_interval_secs, 5);
        assert!(parse("send_tls_report = false\n").is_err());
    }

    /// Issue 12: per-network limits as three levels or one number; the old key name
    /// `connections_per_ip` still works.
    #[test]
    fn limits_per_network() {
        use rmox_core::ratelimit::Levels;
        let c = cfg(
            "[limits]\nconnections_open = [1, 2, 3]\nconnections_per_minute = 5\n\
                     deliveries_per_minute = [7, 8, 9]\ndeliveries_per_day = 4\n\
                     delivery_bytes_per_minute = [100, 200, 300]\ndelivery_bytes_per_day = 1000\n\
                     exempt_loopback = false\ntracked_networks = 7\nauth_failures_per_minute = 2\n",
        )
        .unwrap();
        let cs = c.limits.connection_settings();
        assert_eq!(cs.open, Levels::new(1, 2, 3));
        assert_eq!(cs.per_minute, Levels::new(5, 15, 45));
        assert_eq!(cs.auth_failures_per_minute, 2);
        assert!(!cs.exempt_loopback);
        assert_eq!(cs.max_keys, 7);
        let ds = c.limits.delivery_settings();
        assert_eq!(ds.messages_per_minute, Levels::new(7, 8, 9));
        assert_eq!(ds.messages_per_day, Levels::new(4, 12, 36));
        assert_eq!(ds.bytes_per_minute, Levels::new(100, 200, 300));
        assert_eq!(ds.bytes_per_day, Levels::new(1000, 3000, 9000));
        assert!(!ds.exempt_loopback);
        let c = cfg("[limits]\nconnections_per_ip = 4\n").unwrap();
        assert_eq!(c.limits.connections_open, NetLimits::One(4));
        let d = Limits::default();
        assert_eq!(
            d.connection_settings(),
            rmox_core::ratelimit::ConnectionSettings::default()
        );
        assert_eq!(
            d.delivery_settings(),
            rmox_core::ratelimit::DeliverySettings::default()
        );
        for bad in [
            "connections_open = [1, 2]",
            "deliveries_per_day = \"x\"",
            "exempt_loopback = 1",
        ] {
            let e = cfg(&format!("[limits]\n{bad}\n")).unwrap_err().to_string();
            assert!(e.starts_with("/etc/rmox/rmox.toml: "), "{bad}: {e}");
        }
    }

    /// The scheduler's limits were fixed in core (4 transactions per domain, 100 in all, 100
    /// recipients each) whatever `queue.workers` said: they come from `[queue]` now
    /// (`connections_per_domain`, `workers`, `recipients_per_transaction`); core's
    /// scheduler tests show what each limit does.
    #[test]
    fn queue_limits_reach_the_scheduler() {
        let c = cfg(
            "[queue]\nworkers = 3\nconnections_per_domain = 2\nrecipients_per_transaction = 7\ntransactions_per_connection = 5\n",
        )
        .unwrap();
        let q = c.queue.queue_config(Path::new("x.toml")).unwrap();
        let v = q.values();
        assert_eq!(
            (
                v.max_total,
                v.max_per_domain,
                v.max_recipients_per_batch,
                v.max_transactions_per_connection
            ),
            (3, 2, 7, 5)
        );
        let d = cfg("")
            .unwrap()
            .queue
            .queue_config(Path::new("x.toml"))
            .unwrap();
        let v = d.values();
        assert_eq!(
            (v.max_total, v.max_per_domain, v.max_recipients_per_batch),
            (8, 4, 100)
        );
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let e = cfg("bogus = 1").unwrap_err().to_string();
        assert!(e.starts_with("/etc/rmox/rmox.toml: line "), "{e}");
        assert!(e.contains("bogus"), "{e}");
        // The queue settings are checked by core's builder; its error becomes the key and
        // value it is about.
        for (bad, want) in [
            (
                "backoff_secs = [600, 60]",
                "queue.backoff_secs[1]: 60 is shorter than the interval before it (600)",
            ),
            (
                "backoff_secs = []",
                "queue.backoff_secs: []: at least one interval is needed",
            ),
            (
                "jitter_percent = 60",
                "queue.jitter_percent: 60 is not between 0 and 50",
            ),
            (
                "max_attempts = 0",
                "queue.max_attempts: 0: must be at least 1",
            ),
            (
                "connections_per_domain = 0",
                "queue.connections_per_domain: 0: must be at least 1",
            ),
            (
                "recipients_per_transaction = 0",
                "queue.recipients_per_transaction: 0: must be at least 1",
            ),
            ("workers = 0", "queue.workers: 0: must be at least 1"),
            (
                "transactions_per_connection = 0",
                "queue.transactions_per_connection: 0: must be at least 1",
            ),
        ] {
            let e = cfg(&format!("[queue]\n{bad}\n")).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("/etc/rmox/rmox.toml: {want}")),
                "{e}"
            );
        }
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

    /// Keys that used to be accepted without effect (`rejects_mailbox`) or that were
    /// replaced (`require_tls_for_auth`) are refused with a message saying what to do;
    /// the listener TLS keys and `dmarc_reports` are checked for what they need.
    #[test]
    fn refused_and_checked_keys() {
        let err = |extra: &str| cfg(extra).unwrap_err().to_string();
        let e = err("[account.x]\ndomain = \"mox.example\"\nrejects_mailbox = \" \"\n");
        assert_eq!(
            e,
            "/etc/rmox/rmox.toml: account.x.rejects_mailbox: empty mailbox name: give a name such as \"Rejects\" or remove the key"
        );
        let listener = "[[listener]]\nname = \"a\"\nip = \"1.2.3.4\"\n";
        let tls = "tls = { cert_file = \"c\", key_file = \"k\" }\n";
        let e = err(&format!(
            "{listener}smtp = {{ port = 25 }}\nrequire_tls_for_auth = false\n"
        ));
        assert!(
            e.contains("listener[0].require_tls_for_auth: replaced by no_require_starttls"),
            "{e}"
        );
        let e = err(&format!(
            "{listener}smtp = {{ port = 25 }}\nrequire_starttls = true\n"
        ));
        assert!(
            e.contains("listener[0].require_starttls: STARTTLS needs listener.tls"),
            "{e}"
        );
        let e = err(&format!("{listener}submission = {{ port = 587 }}\n"));
        assert!(
            e.contains("listener[0].submission: submission requires STARTTLS"),
            "{e}"
        );
        cfg(&format!(
            "{listener}submission = {{ port = 587 }}\nno_require_starttls = true\n"
        ))
        .unwrap();
        cfg(&format!(
            "{listener}smtp = {{ port = 25 }}\n{tls}require_starttls = true\n"
        ))
        .unwrap();
        // dmarc_reports: an address at the domain, delivered to an account.
        let dom = |v: &str| format!("[domain.\"third.example\"]\ndmarc_reports = \"{v}\"\n");
        assert!(err(&dom("nope")).contains("is not an address"));
        assert!(err(&dom("mjl@mox.example")).contains("must be an address at third.example"));
        assert!(err(&dom("reports@third.example")).contains("is not delivered to an account"));
        let c = cfg("[domain.\"third.example\"]\ndmarc_reports = \"reports@third.example\"\n[account.r]\ndomain = \"third.example\"\ndestinations = { \"reports@third.example\" = {} }\n").unwrap();
        assert_eq!(
            c.dmarc_reports_domain("Reports", "third.example"),
            Some("third.example")
        );
        assert_eq!(c.dmarc_reports_domain("other", "third.example"), None);
        assert_eq!(c.dmarc_reports_domain("reports", "mox.example"), None);
        // tls_reports: checked the same way.
        let dom = |v: &str| format!("[domain.\"third.example\"]\ntls_reports = \"{v}\"\n");
        let e = err(&dom("nope"));
        assert!(
            e.contains("domain.\"third.example\".tls_reports: \"nope\" is not an address"),
            "{e}"
        );
        assert!(err(&dom("mjl@mox.example")).contains("must be an address at third.example"));
        assert!(err(&dom("tls@third.example")).contains("is not delivered to an account"));
        let c = cfg("[domain.\"third.example\"]\ntls_reports = \"tls@third.example\"\n[account.r]\ndomain = \"third.example\"\ndestinations = { \"tls@third.example\" = {} }\n").unwrap();
        assert_eq!(
            c.tls_reports_domain("TLS", "third.example"),
            Some("third.example")
        );
        assert_eq!(c.tls_reports_domain("tls", "mox.example"), None);
        assert_eq!(c.dmarc_reports_domain("tls", "third.example"), None);
        // No catchall separator at third.example: "tls+x" is another address.
        assert_eq!(c.tls_reports_domain("tls+x", "third.example"), None);
        let sep = cfg("[domain.\"sep.example\"]\nlocalpart_catchall_separator = \"+\"\ntls_reports = \"tls@sep.example\"\n[account.r]\ndomain = \"sep.example\"\ndestinations = { \"tls@sep.example\" = {} }\n").unwrap();
        assert_eq!(
            sep.tls_reports_domain("Tls+more", "sep.example"),
            Some("sep.example")
        );
        assert_eq!(sep.tls_reports_domain("tls-more", "sep.example"), None);
        assert_eq!(sep.tls_reports_domain("tlsx+tls", "sep.example"), None);
        assert!(c.is_tls_report_domain("third.example"));
        assert!(c.is_tls_report_domain(&c.hostname.clone()));
        assert!(!c.is_tls_report_domain("xmox.nl"));
        // host_tls_reports: an address at the host name, which need not be a domain.
        let host = |extra: &str| {
            Config::parse(
                &format!("hostname = \"mail.mox.example\"\ndata_dir = \"d\"\n[domain.\"mox.example\"]\n[account.r]\ndomain = \"mox.example\"\n[host_tls_reports]\n{extra}"),
                Path::new("x.toml"),
            )
        };
        let herr = |extra: &str| host(extra).unwrap_err().to_string();
        let c = host("localpart = \"tls\"\naccount = \"r\"\n").unwrap();
        assert_eq!(
            c.resolve("TLS", "mail.mox.example"),
            Resolution::Account {
                account: "r".into(),
                mailbox: "Inbox".into()
            }
        );
        assert_eq!(
            c.resolve("other", "mail.mox.example"),
            Resolution::UnknownUser
        );
        assert_eq!(c.resolve("tls", "mox.example"), Resolution::UnknownUser);
        assert_eq!(
            c.tls_reports_domain("tls", "mail.mox.example"),
            Some("mail.mox.example")
        );
        assert_eq!(c.tls_reports_domain("tls", "mox.example"), None);
        assert!(herr("localpart = \"tls\"\naccount = \"nobody\"\n")
            .contains("host_tls_reports.account: account \"nobody\" does not exist"));
        assert!(herr("localpart = \"a b\"\naccount = \"r\"\n")
            .contains("host_tls_reports.localpart: \"a b\" is not a local part"));
        // When the host name is a configured domain, its tls_reports is the way.
        let e = cfg("[host_tls_reports]\nlocalpart = \"tls\"\naccount = \"mjl\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is a configured domain: set its tls_reports instead"),
            "{e}"
        );
    }

    /// Every key the example prints is one `Config` reads (the example parses with unknown
    /// keys refused) and its value is not the serde default when that would hide a typo.
    #[test]
    fn example_sets_what_it_documents() {
        let c = Config::parse(EXAMPLE, Path::new("rmox.toml")).unwrap();
        let l = &c.listener[0];
        assert!(!l.require_starttls && !l.no_require_starttls);
        let i = &c.incoming;
        assert!(
            i.checks && i.ehlo_check && i.mail_from_check && i.spf && i.dkim && i.dmarc && i.iprev
        );
        assert_eq!(c.limits.max_received_headers, 100);
        assert_eq!(c.limits.max_tls_report_size, 8 << 20);
        assert_eq!(
            c.domain["example.org"].dmarc_reports.as_deref(),
            Some("info@example.org")
        );
        assert_eq!(
            c.domain["example.org"].tls_reports.as_deref(),
            Some("tlsrpt@example.org")
        );
        assert_eq!(
            c.tls_reports_domain("tls-reports", "mail.example.org"),
            Some("mail.example.org")
        );
        assert!(!EXAMPLE.contains("require_tls_for_auth"));
        assert!(!EXAMPLE.contains("remote_ips"));
    }

    /// `[storage]`: redb by default; postgres needs its url; keys that would do nothing
    /// (PostgreSQL's with redb) and values out of range are refused with their key.
    #[test]
    fn storage_settings() {
        let c = cfg("").unwrap();
        assert_eq!(c.storage.kind, StorageKind::Redb);
        assert_eq!(c.storage_node(), "mox.example");
        let ok = cfg("[storage]\nkind = \"postgres\"\nurl = \"host=127.0.0.1 dbname=rmox\"\nnode = \"mx1\"\nlease_secs = 30\npool_idle = 4\n").unwrap();
        assert_eq!(ok.storage.kind, StorageKind::Postgres);
        assert_eq!(ok.storage_node(), "mx1");
        assert_eq!((ok.storage.lease_secs, ok.storage.pool_idle), (30, 4));
        for (body, key) in [
            ("kind = \"postgres\"", "storage.url"),
            ("kind = \"postgres\"\nurl = \" \"", "storage.url"),
            ("url = \"host=x\"", "storage.url"),
            ("node = \"a\"", "storage.node"),
            ("lease_secs = 60", "storage.lease_secs"),
            ("pool_idle = 2", "storage.pool_idle"),
            (
                "kind = \"postgres\"\nurl = \"host=x\"\nlease_secs = 4",
                "storage.lease_secs",
            ),
            (
                "kind = \"postgres\"\nurl = \"host=x\"\nlease_secs = 86401",
                "storage.lease_secs",
            ),
            (
                "kind = \"postgres\"\nurl = \"host=x\"\npool_idle = 0",
                "storage.pool_idle",
            ),
            (
                "kind = \"postgres\"\nurl = \"host=x\"\nnode = \"\"",
                "storage.node",
            ),
        ] {
            let e = cfg(&format!("[storage]\n{body}\n")).unwrap_err();
            assert_eq!(e.key, key, "{body}: {e}");
        }
        assert!(cfg("[storage]\nkind = \"mysql\"\n").is_err());
        let e = cfg("[account.md]\ndomain = \"mox.example\"\nmaildir = \"md\"\n[storage]\nkind = \"postgres\"\nurl = \"host=x\"\n").unwrap_err();
        assert_eq!(e.key, "account.md.maildir", "{e}");
    }

    /// `[account.X.webhooks]` and `[webhooks]`: defaults, and each mistake refused with its
    /// key.
    #[test]
    fn webhook_settings() {
        let c = cfg("").unwrap();
        assert_eq!(c.webhooks, WebhookSettings::default());
        assert_eq!(
            c.webhooks.retry_intervals_secs,
            rmox_core::webhook::RETRY_INTERVALS
        );
        let ex = Config::parse(EXAMPLE, Path::new("rmox.toml")).unwrap();
        assert_eq!(ex.webhooks, WebhookSettings::default());
        let hooks = |body: &str| {
            cfg(&format!("[account.mjl.webhooks]\n{body}\n")).map_err(|e| e.to_string())
        };
        let ok = hooks("outgoing_url = \"http://127.0.0.1:8080/h\"\nsecret = \"0123456789abcdef\"")
            .unwrap();
        let w = ok.account["mjl"].webhooks.as_ref().unwrap();
        assert_eq!(w.outgoing_url.as_deref(), Some("http://127.0.0.1:8080/h"));
        assert_eq!(w.incoming_url, None);
        for (body, key) in [
            (
                "outgoing_url = \"ftp://x\"\nsecret = \"0123456789abcdef\"",
                "webhooks.outgoing_url",
            ),
            (
                "incoming_url = \"https:///x\"\nsecret = \"0123456789abcdef\"",
                "webhooks.incoming_url",
            ),
            (
                "incoming_url = \"https://x\"\nsecret = \"short\"",
                "webhooks.secret",
            ),
            (
                "secret = \"0123456789abcdef\"\nauthorization = \"a\\nb\"",
                "webhooks.authorization",
            ),
            ("secret = \"0123456789abcdef\"\nbogus = 1", "bogus"),
        ] {
            let e = hooks(body).unwrap_err();
            assert!(e.contains(key), "{body}: {e}");
        }
        let e = cfg("[webhooks]\nretry_intervals_secs = [1, 0]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("webhooks"), "{e}");
        let e = cfg("[webhooks]\ntimeout_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("webhooks"), "{e}");
    }

    #[test]
    fn localpart_case_sensitive_key() {
        let c = cfg("[domain.\"case.example\"]\nlocalpart_case_sensitive = true\n[account.c]\ndomain = \"case.example\"\ndestinations = { \"User@case.example\" = {} }\n").unwrap();
        assert!(matches!(
            c.resolve("User", "case.example"),
            Resolution::Account { .. }
        ));
        assert_eq!(c.resolve("user", "case.example"), Resolution::UnknownUser);
        // Default: case-insensitive.
        let c = cfg("").unwrap();
        assert!(matches!(
            c.resolve("MJL", "mox.example"),
            Resolution::Account { .. }
        ));
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

    #[test]
    fn example_transports_and_routes() {
        use rmox_core::queue::{SmtpTls, Transport};
        use rmox_core::sasl::Mechanism;
        let c = Config::parse(EXAMPLE, Path::new("rmox.toml")).unwrap();
        let t = c.transports().unwrap();
        match &t["relay"].transport {
            Transport::Smarthost(s) => {
                assert_eq!((s.host.as_str(), s.port), ("smtp.example.net", 25));
                assert_eq!(s.tls, SmtpTls::StartTls { verify: true });
                let a = s.auth.as_ref().unwrap();
                assert_eq!(a.password, "secret");
                assert_eq!(a.mechanisms, vec![Mechanism::ScramSha256, Mechanism::Plain]);
            }
            other => panic!("{other:?}"),
        }
        match &t["provider"].transport {
            Transport::Submission(s) => assert!(s.implicit_tls && s.port == 465),
            other => panic!("{other:?}"),
        }
        match &t["tor"].transport {
            Transport::Socks5(s) => {
                assert_eq!(s.proxy.to_string(), "127.0.0.1:1080");
                assert_eq!(s.ehlo_hostname, "mail.example.org");
            }
            other => panic!("{other:?}"),
        }
        match &t["ipv4only"].transport {
            Transport::Direct(d) => assert!(d.ipv4 && !d.ipv6),
            other => panic!("{other:?}"),
        }
        // Passwords stay out of logs.
        let shown = format!("{:?}", c.transport);
        assert!(
            shown.contains("relay") && !shown.contains("\"secret\""),
            "{shown}"
        );
        let r = c.routes();
        assert_eq!(r.global.len(), 2);
        assert_eq!(r.global[0].to_domains, vec!["example.com", ".example.com"]);
        assert_eq!(r.global[1].min_attempts, 5);
        assert_eq!(r.global[1].transport, "relay");
        assert!(r.accounts.is_empty() && r.domains.is_empty());
    }

    #[test]
    fn transport_defaults_and_route_levels() {
        use rmox_core::queue::{SmtpTls, Transport};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "from-file\nignored\n").unwrap();
        let text = format!(
            r#"
hostname = "mox.example"
data_dir = "data"
[domain."mox.example"]
routes = [{{ to_domains = ["x.example"], transport = "sub" }}]
[account.mjl]
domain = "mox.example"
[[account.mjl.routes]]
from_domains = ["mox.example"]
transport = "direct"
[transport.sh]
kind = "smarthost"
host = "10.0.0.1"
[transport.lower]
kind = "smarthost"
host = "10.0.0.2"
auth = {{ username = "u", password = "p", mechanisms = ["cram-md5", "Scram-Sha-1"] }}
[transport.sub]
kind = "submission"
host = "smtp.example"
auth = {{ username = "u", password_file = "{}" }}
[transport.s5]
kind = "socks5"
proxy = "[::1]:1080"
proxy_username = "u"
proxy_password = "p"
"#,
            dir.path().join("pw").display()
        );
        let c = Config::parse(&text, &dir.path().join("rmox.toml")).unwrap();
        let t = c.transports().unwrap();
        match &t["sh"].transport {
            Transport::Smarthost(s) => {
                assert_eq!((s.port, s.tls), (25, SmtpTls::Opportunistic));
                assert!(s.auth.is_none());
            }
            other => panic!("{other:?}"),
        }
        match &t["sub"].transport {
            Transport::Submission(s) => {
                assert_eq!((s.port, s.implicit_tls), (587, false));
                assert_eq!(s.auth.password, "from-file");
                assert!(s.auth.mechanisms.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // Mechanism names in any case are core's mechanisms.
        match &t["lower"].transport {
            Transport::Smarthost(s) => assert_eq!(
                s.auth.as_ref().unwrap().mechanisms,
                vec![
                    rmox_core::sasl::Mechanism::CramMd5,
                    rmox_core::sasl::Mechanism::ScramSha1
                ]
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(t["s5"].proxy_auth, Some(("u".into(), "p".into())));
        // The proxy password was printed by the derived Debug of the transport config.
        let shown = format!("{:?}", c.transport["s5"]);
        assert!(
            shown.contains("\"u\"") && !shown.contains("\"p\""),
            "{shown}"
        );
        match &t["s5"].transport {
            Transport::Socks5(s) => assert_eq!(s.ehlo_hostname, "mox.example"),
            other => panic!("{other:?}"),
        }
        let r = c.routes();
        assert_eq!(
            r.accounts["mjl"][0].transport, "",
            "direct is the empty transport"
        );
        assert_eq!(r.domains["mox.example"][0].transport, "sub");
        assert!(r.global.is_empty());
    }

    #[test]
    fn transport_and_route_errors() {
        let cases = [
            (
                "[transport.t]\nkind = \"smtp\"\n",
                "unknown variant `smtp`",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\n",
                "transport.t.host: required for kind = \"smarthost\"",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"bad host\"\n",
                "transport.t.host: \"bad host\" is not a host name or IP",
            ),
            (
                "[transport.t]\nkind = \"submission\"\nhost = \"h.example\"\n",
                "transport.t.auth: required for kind = \"submission\"",
            ),
            (
                "[transport.t]\nkind = \"submission\"\nhost = \"h.example\"\ntls = \"none\"\nauth = { username = \"u\", password = \"p\" }\n",
                "transport.t.tls: unknown variant `none`, expected `starttls` or `implicit`",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"h.example\"\nauth = { username = \"u\" }\n",
                "transport.t.auth: set exactly one of password and password_file",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"h.example\"\nauth = { username = \"u\", password = \"p\", mechanisms = [\"NTLM\"] }\n",
                "transport.t.auth.mechanisms: unknown mechanism \"NTLM\"",
            ),
            (
                "[transport.t]\nkind = \"socks5\"\n",
                "transport.t.proxy: required for kind = \"socks5\"",
            ),
            (
                "[transport.t]\nkind = \"socks5\"\nproxy = \"localhost:1080\"\n",
                "transport.t.proxy: \"localhost:1080\" is not ip:port",
            ),
            (
                "[transport.t]\nkind = \"socks5\"\nproxy = \"127.0.0.1:1080\"\nproxy_username = \"u\"\n",
                "set both proxy_username and proxy_password",
            ),
            (
                "[transport.t]\nkind = \"direct\"\nhost = \"h.example\"\n",
                "transport.t.host: not valid for kind = \"direct\"",
            ),
            (
                "[transport.t]\nkind = \"direct\"\nipv4 = false\nipv6 = false\n",
                "transport.t.ipv4: ipv4 and ipv6 cannot both be false",
            ),
            (
                "[transport.t]\nkind = \"submission\"\nhost = \"h.example\"\nverify = false\nauth = { username = \"u\", password = \"p\" }\n",
                "transport.t.verify: not valid for kind = \"submission\"",
            ),
            // verify and ca_file only where a certificate is checked (they did nothing).
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"h.example\"\nverify = false\n",
                "transport.t.verify: only with tls = \"starttls\" or \"implicit\"",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"h.example\"\ntls = \"none\"\nverify = true\n",
                "transport.t.verify: only with tls = \"starttls\" or \"implicit\"",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"h.example\"\ntls = \"none\"\nca_file = \"ca.pem\"\n",
                "transport.t.ca_file: not with tls = \"none\"",
            ),
            // Each kind takes only its own keys, named in the error with the key path.
            (
                "[transport.t]\nkind = \"socks5\"\nproxy = \"127.0.0.1:1080\"\nipv4 = true\n",
                "transport.t.ipv4: not valid for kind = \"socks5\" (expected one of `proxy`, `proxy_username`, `proxy_password`, `ehlo_hostname`)",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"h.example\"\nproxy = \"127.0.0.1:1080\"\n",
                "transport.t.proxy: not valid for kind = \"smarthost\"",
            ),
            (
                "[transport.t]\nkind = \"direct\"\nipv5 = true\n",
                "transport.t.ipv5: not valid for kind = \"direct\" (expected `ipv4` or `ipv6`)",
            ),
            (
                "[transport.t]\nhost = \"h.example\"\n",
                "transport.t.kind: required: smarthost, submission, socks5 or direct",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"h.example\"\nport = \"x\"\n",
                "transport.t.port: invalid type: string \"x\", expected u16",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"h.example\"\nport = 70000\n",
                "transport.t.port: invalid value: integer `70000`",
            ),
            (
                "[transport.t]\nkind = \"submission\"\nhost = \"h.example\"\ntls = \"opportunistic\"\nauth = { username = \"u\", password = \"p\" }\n",
                "transport.t.tls: unknown variant `opportunistic`, expected `starttls` or `implicit`",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"h.example\"\nauth = { user = \"u\", password = \"p\" }\n",
                "transport.t.auth.user: unknown key (expected one of `username`",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"h.example\"\nauth = { password = \"p\" }\n",
                "transport.t.auth.username: required",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"h.example\"\nauth = { username = \"\", password = \"p\" }\n",
                "transport.t.auth.username: \"\" must not be empty",
            ),
            (
                "[transport.t]\nkind = \"smarthost\"\nhost = \"h.example\"\nauth = { username = \"u\", password = \"p\", password_file = \"f\" }\n",
                "transport.t.auth: set exactly one of password and password_file",
            ),
            (
                "[transport.t]\nkind = \"socks5\"\nproxy = \"127.0.0.1:1080\"\nproxy_username = \"u\"\nproxy_password = \"\"\n",
                "transport.t.proxy_username: proxy user name and password must be 1 to 255 bytes",
            ),
            (
                "[transport.t]\nkind = \"socks5\"\nproxy = \"127.0.0.1:1080\"\nproxy_password = \"p\"\n",
                "transport.t.proxy_username: set both proxy_username and proxy_password, or neither",
            ),
            (
                "[transport.t]\nkind = \"socks5\"\nproxy = \"127.0.0.1:1080\"\nehlo_hostname = \"bad name\"\n",
                "transport.t.ehlo_hostname: \"bad name\" is not a valid host name",
            ),
            (
                "[[route]]\ntransport = \"nope\"\n",
                "route[0].transport: transport \"nope\" is not configured",
            ),
            (
                "[[route]]\nto_domains = [\"bad domain\"]\ntransport = \"\"\n",
                "route[0].to_domains: \"bad domain\" is not a domain",
            ),
            (
                "[[route]]\nmin_attempts = 2\n",
                "missing field `transport`",
            ),
            (
                "[[account.mjl.routes]]\ntransport = \"x\"\n",
                "account.mjl.routes[0].transport: transport \"x\" is not configured",
            ),
        ];
        for (extra, want) in cases {
            let e = cfg(extra).unwrap_err().to_string();
            assert!(e.contains(want), "{extra}: {e}");
            assert!(e.starts_with("/etc/rmox/rmox.toml: "), "{e}");
        }
        let e = cfg("[transport.t]\nkind = \"submission\"\nhost = \"h.example\"\nauth = { username = \"u\", password_file = \"/nonexistent/pw\" }\n")
            .unwrap()
            .transports()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("transport.t.auth.password_file: /nonexistent/pw: "),
            "{e}"
        );
    }
}
