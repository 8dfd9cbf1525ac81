//! Answers the server sessions' effects from the configuration and the store: who may
//! connect, whose password is right, which recipients exist, where a message goes. This is
//! policy, not protocol: the reply codes for protocol errors live in the core machine.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmox_core::sasl::CredentialKind;
use rmox_core::server::{
    Completion, CredentialsAnswer, Effect, Event, PasswordCheck, SenderSource, Transaction, Verdict,
};
use rmox_core::smtp::{Address, Enhanced, ForwardPath, Host, Reply, ReversePath};
use rmox_core::UnixTime;
use rmox_storage::{Delivery, Flags, MessageInfo, QueueRecipient, RequireTls, Store, StoreError};

use crate::config::{Config, Resolution};
use crate::creds;
use crate::resolve::Dns;

/// Counters for rate limits, per IP, in fixed one-minute windows.
#[derive(Default)]
struct Counters {
    window: i64,
    connections: HashMap<IpAddr, u32>,
    auth_failures: HashMap<IpAddr, u32>,
    open: HashMap<IpAddr, u32>,
    /// Connection id -> IP, to release open-connection counts.
    cids: HashMap<u64, IpAddr>,
}

/// The real server's answers.
pub struct World {
    config: Arc<Config>,
    store: Arc<Store>,
    dns: Option<Dns>,
    counters: Mutex<Counters>,
    /// DKIM signing configs per domain (lower-case ASCII).
    dkim: HashMap<String, Vec<rmox_core::dkim::SignConfig>>,
}

/// Loads the DKIM keys of every domain that signs.
pub fn load_dkim(
    c: &Config,
) -> Result<HashMap<String, Vec<rmox_core::dkim::SignConfig>>, crate::Fail> {
    let mut out = HashMap::new();
    for (domain, dc) in &c.domain {
        let mut configs = Vec::new();
        for sel in &dc.dkim.sign {
            let Some(path) = dc.dkim.selectors.get(sel) else {
                return Err(crate::Fail(format!(
                    "{}: domain.{domain:?}.dkim.sign: selector {sel:?} is not in dkim.selectors",
                    c.path.display()
                )));
            };
            let p = c.resolve_path(path);
            let pem = std::fs::read_to_string(&p).map_err(|e| {
                crate::Fail(format!(
                    "{}: domain.{domain:?}.dkim.selectors.{sel}: {}: {e}",
                    c.path.display(),
                    p.display()
                ))
            })?;
            let key = rmox_core::dkim::SigningKey::from_pem(&pem).map_err(|e| {
                crate::Fail(format!(
                    "{}: domain.{domain:?}.dkim.selectors.{sel}: {}: {e}",
                    c.path.display(),
                    p.display()
                ))
            })?;
            configs.push(rmox_core::dkim::SignConfig::new(domain, sel, key));
        }
        if !configs.is_empty() {
            out.insert(domain.clone(), configs);
        }
    }
    Ok(out)
}

fn reply(code: u16, e: (u8, u16, u16), text: impl Into<String>) -> Reply {
    Reply::new(code, Some(Enhanced::new(e.0, e.1, e.2)), text)
}

fn store_error(e: &StoreError) -> Reply {
    tracing::error!(error = %e, "storage");
    if e.is_disk_full() {
        reply(452, (4, 3, 1), "insufficient system storage")
    } else {
        reply(451, (4, 3, 0), "error processing, try again later")
    }
}

fn wall_now() -> UnixTime {
    rmox_driver::now().wall
}

/// A special local part of localserve: what it simulates.
enum Special {
    Temp,
    Perm,
    Timeout,
    Code(u16),
}

fn special(localpart: &str, prefix: &str) -> Option<Special> {
    let lp = localpart.to_ascii_lowercase();
    let lp = lp
        .strip_prefix(prefix)
        .unwrap_or(if prefix.is_empty() { &lp } else { return None });
    if lp.ends_with("temperror") {
        return Some(Special::Temp);
    }
    if lp.ends_with("permerror") {
        return Some(Special::Perm);
    }
    if lp.ends_with("timeout") {
        return Some(Special::Timeout);
    }
    if lp.len() >= 3 {
        let tail = &lp[lp.len() - 3..];
        if tail.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(code) = tail.parse::<u16>() {
                if (400..600).contains(&code) {
                    return Some(Special::Code(code));
                }
            }
        }
    }
    None
}

fn special_reply(s: Special, what: &str) -> Reply {
    match s {
        Special::Temp => reply(
            451,
            (4, 3, 0),
            format!("temporary failure of {what} due to special localpart"),
        ),
        Special::Perm => reply(
            550,
            (5, 0, 0),
            format!("permanent failure of {what} due to special localpart"),
        ),
        Special::Timeout => {
            std::thread::sleep(Duration::from_secs(3));
            reply(
                451,
                (4, 4, 2),
                format!("timing out {what} due to special localpart"),
            )
        }
        Special::Code(c) => {
            let class = (c / 100) as u8;
            Reply::new(
                c,
                Some(Enhanced::new(class, 0, 0)),
                format!("failure with code {c} due to special localpart"),
            )
        }
    }
}

fn domain_of(a: &Address) -> Option<String> {
    match &a.host {
        Host::Domain(d) => Some(d.ascii.clone()),
        _ => None,
    }
}

impl World {
    /// A world over `config` and `store`.
    pub fn new(
        config: Arc<Config>,
        store: Arc<Store>,
        dns: Option<Dns>,
    ) -> Result<World, crate::Fail> {
        let dkim = load_dkim(&config)?;
        Ok(World {
            config,
            store,
            dns,
            counters: Mutex::new(Counters::default()),
            dkim,
        })
    }

    /// DKIM-signs a submitted message for its From domain, when that domain signs.
    fn dkim_sign(&self, t: &Transaction) -> Vec<u8> {
        let domain = t
            .from_header
            .as_ref()
            .and_then(|f| f.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()));
        let Some(configs) = domain.and_then(|d| self.dkim.get(&d)) else {
            return t.message.clone();
        };
        let rng = ring::rand::SystemRandom::new();
        match rmox_core::dkim::sign(&t.message, configs, t.received, &rng) {
            Ok(h) => {
                let mut m = h.into_bytes();
                m.extend_from_slice(&t.message);
                m
            }
            Err(e) => {
                tracing::error!(error = %e, "dkim signing failed, sending unsigned");
                t.message.clone()
            }
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        let mut c = match self.counters.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let window = wall_now().0 / 60;
        if c.window != window {
            c.window = window;
            c.connections.clear();
            c.auth_failures.clear();
        }
        c
    }

    fn check_connection(&self, ip: IpAddr) -> Verdict {
        let limits = &self.config.limits;
        let mut c = self.counters();
        let n = c.connections.entry(ip).or_default();
        *n += 1;
        if *n > limits.connections_per_minute && !ip.is_loopback() {
            return Verdict::Reject(reply(
                421,
                (4, 7, 0),
                "connection rate from your ip or network too high, slow down please",
            ));
        }
        let open = c.open.get(&ip).copied().unwrap_or(0);
        if open >= limits.connections_per_ip && !ip.is_loopback() {
            return Verdict::Reject(reply(
                421,
                (4, 7, 0),
                "too many open connections from your ip or network",
            ));
        }
        Verdict::Accept
    }

    fn auth_limited(&self, ip: IpAddr) -> bool {
        let c = self.counters();
        c.auth_failures.get(&ip).copied().unwrap_or(0)
            >= self.config.limits.auth_failures_per_minute
    }

    fn login_disabled(&self, account: &str) -> Option<String> {
        if let Some(m) = self
            .config
            .account
            .get(account)
            .and_then(|a| a.login_disabled.clone())
        {
            return Some(m);
        }
        self.store
            .account(account)
            .ok()
            .flatten()
            .and_then(|a| a.login_disabled)
    }

    fn check_password(&self, username: &str, password: &str, ip: IpAddr) -> PasswordCheck {
        if self.auth_limited(ip) {
            return PasswordCheck::RateLimited;
        }
        let Some(account) = self.config.login_account(username) else {
            return PasswordCheck::Invalid;
        };
        if let Some(m) = self.login_disabled(&account) {
            return PasswordCheck::Disabled(m);
        }
        match self.store.credentials(&account, "scram-sha-256") {
            Ok(Some(c)) if creds::check_password(&c, password) => PasswordCheck::Valid { account },
            Ok(_) => PasswordCheck::Invalid,
            Err(e) => {
                tracing::error!(error = %e, "reading credentials");
                PasswordCheck::Invalid
            }
        }
    }

    fn lookup_credentials(
        &self,
        username: &str,
        kind: CredentialKind,
        ip: IpAddr,
    ) -> CredentialsAnswer {
        if self.auth_limited(ip) {
            return CredentialsAnswer::RateLimited;
        }
        let Some(account) = self.config.login_account(username) else {
            return CredentialsAnswer::Unknown;
        };
        if let Some(m) = self.login_disabled(&account) {
            return CredentialsAnswer::Disabled(m);
        }
        match self.store.credentials(&account, creds::kind_name(kind)) {
            Ok(Some(b)) => match creds::decode(kind, &b) {
                Some(credentials) => CredentialsAnswer::Found {
                    account,
                    credentials,
                },
                None => CredentialsAnswer::Unknown,
            },
            _ => CredentialsAnswer::Unknown,
        }
    }

    fn check_sender(
        &self,
        account: Option<&str>,
        address: &ReversePath,
        source: SenderSource,
    ) -> Verdict {
        let what = match source {
            SenderSource::MailFrom => "mail from",
            SenderSource::FromHeader => "message from",
        };
        if self.config.localserve {
            if let (ReversePath::Mailbox(a), SenderSource::MailFrom) = (address, source) {
                if let Some(s) = special(&a.localpart.0, "mailfrom") {
                    return Verdict::Reject(special_reply(s, "mail from"));
                }
            }
            return Verdict::Accept;
        }
        let Some(account) = account else {
            // Port 25: sender checks that need DNS (SPF, MX of the domain) come with the
            // DNS wiring; nothing to refuse from configuration alone.
            return Verdict::Accept;
        };
        match address {
            ReversePath::Null => Verdict::Accept,
            ReversePath::Mailbox(a) => {
                let Some(d) = domain_of(a) else {
                    return Verdict::Reject(reply(550, (5, 7, 0), "domain name required"));
                };
                if self.config.account_owns(account, &a.localpart.0, &d) {
                    Verdict::Accept
                } else {
                    Verdict::Reject(reply(
                        550,
                        (5, 7, 1),
                        format!("{what} address must match authenticated user"),
                    ))
                }
            }
        }
    }

    fn check_recipient(&self, account: Option<&str>, recipient: &ForwardPath) -> Verdict {
        let a = match recipient {
            ForwardPath::Postmaster => return Verdict::Accept,
            ForwardPath::Mailbox(a) => a,
        };
        if self.config.localserve {
            if let Some(s) = special(&a.localpart.0, "rcptto") {
                return Verdict::Reject(special_reply(s, "rcpt to"));
            }
            return Verdict::Accept;
        }
        if account.is_some() {
            // Submission: any destination; send limits are checked with the whole message.
            return Verdict::Accept;
        }
        let Some(d) = domain_of(a) else {
            return Verdict::Reject(reply(550, (5, 1, 1), "not accepting email for ip"));
        };
        match self.config.resolve(&a.localpart.0, &d) {
            Resolution::Account { account, .. } => self.quota_verdict(&account, 0),
            // Unknown users are refused after DATA, so addresses cannot be probed cheaply.
            Resolution::UnknownUser => Verdict::Accept,
            Resolution::UnknownDomain => {
                Verdict::Reject(reply(550, (5, 1, 1), "not accepting email for domain"))
            }
            Resolution::DomainDisabled => {
                Verdict::Reject(reply(450, (4, 2, 1), "domain is disabled, try again later"))
            }
        }
    }

    fn quota_verdict(&self, account: &str, extra: u64) -> Verdict {
        let quota = self
            .config
            .account
            .get(account)
            .map_or(0, |a| a.quota_message_size);
        if quota == 0 {
            return Verdict::Accept;
        }
        match self.store.account_usage(account) {
            Ok(used) if used + extra > quota => {
                Verdict::Reject(reply(452, (4, 2, 2), "account storage full"))
            }
            Ok(_) => Verdict::Accept,
            Err(e) => Verdict::Reject(store_error(&e)),
        }
    }

    fn info(t: &Transaction, rcpt: Option<String>) -> MessageInfo {
        let mut info = MessageInfo::default();
        info.remote_ip = Some(t.remote_ip);
        info.ehlo = Some(t.ehlo.clone());
        info.mail_from = match &t.mail_from {
            ReversePath::Null => None,
            ReversePath::Mailbox(a) => Some(a.to_string()),
        };
        info.rcpt_to = rcpt;
        if let Some(v) = &t.auth {
            use rmox_storage::Validation;
            if let Some(spf) = &v.spf {
                info.mail_from_validation = match spf.result {
                    rmox_core::spf::SpfStatus::Pass => Validation::Pass,
                    rmox_core::spf::SpfStatus::Fail => Validation::Fail,
                    rmox_core::spf::SpfStatus::Softfail => Validation::Softfail,
                    rmox_core::spf::SpfStatus::Neutral => Validation::Neutral,
                    rmox_core::spf::SpfStatus::Temperror => Validation::TempError,
                    rmox_core::spf::SpfStatus::Permerror => Validation::PermError,
                    rmox_core::spf::SpfStatus::None => Validation::None,
                };
            }
            if let Some(d) = &v.dkim {
                info.dkim_domains = d
                    .iter()
                    .filter(|r| r.status == rmox_core::dkim::Status::Pass)
                    .map(|r| r.domain.clone())
                    .collect();
            }
            if let Some(d) = &v.dmarc {
                info.from_validation = if d.status == rmox_core::dmarc::DmarcStatus::Pass {
                    Validation::Dmarc
                } else {
                    Validation::Fail
                };
            }
        }
        let header_end = rmox_core::message::body_offset(&t.message).unwrap_or(t.message.len());
        let header = &t.message[..header_end];
        info.from_domain = rmox_core::message::from_addresses(header)
            .first()
            .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()));
        info.message_id = rmox_core::message::values(header, "Message-Id")
            .next()
            .map(|v| {
                String::from_utf8_lossy(v)
                    .trim_matches(|c| c == '<' || c == '>')
                    .to_string()
            });
        info
    }

    fn store_message(&self, t: &Transaction) -> Result<(), Reply> {
        if self.config.localserve {
            return self.store_localserve(t);
        }
        match &t.account {
            None => self.deliver_incoming(t),
            Some(account) => self.submit(account, t),
        }
    }

    /// Port 25 policy on the checks' results: DMARC reject, DNSBL, iprev for unknown
    /// senders.
    fn incoming_policy(&self, t: &Transaction, accounts: &[String]) -> Result<(), Reply> {
        let Some(v) = &t.auth else { return Ok(()) };
        let inc = &self.config.incoming;
        if let Some(d) = &v.dmarc {
            if d.is_reject() && inc.dmarc_reject {
                return Err(reply(
                    550,
                    (5, 7, 1),
                    format!(
                        "rejecting per DMARC policy of {}",
                        v.from_domain.as_deref().unwrap_or("the From domain")
                    ),
                ));
            }
        }
        if let Some(list) = &v.dnsbl {
            for (zone, status) in list {
                if let rmox_core::dnsbl::DnsblStatus::Fail(reason) = status {
                    return Err(reply(
                        451,
                        (4, 7, 1),
                        format!("your ip is listed in {zone}: {reason}"),
                    ));
                }
            }
        }
        let iprev_pass = matches!(v.iprev, Some(rmox_core::iprev::IprevResult::Pass(_)) | None);
        if !iprev_pass && inc.require_iprev_for_unknown_senders {
            // A sender is known when an account here got mail from its domain before.
            let domain = match &t.mail_from {
                ReversePath::Mailbox(a) => domain_of(a),
                ReversePath::Null => None,
            };
            let known = domain.is_some_and(|d| {
                accounts.iter().any(|acc| {
                    self.store
                        .count_since(
                            acc,
                            rmox_storage::IndexKind::MailFromDomain,
                            &d,
                            UnixTime(0),
                        )
                        .map(|n| n > 0)
                        .unwrap_or(false)
                })
            });
            if !known {
                return Err(reply(451, (4, 7, 0), "your ip has no valid reverse dns, required for first-time senders, try again later"));
            }
        }
        Ok(())
    }

    /// Port 25: deliver into the local accounts; unknown users are refused here, after DATA.
    fn deliver_incoming(&self, t: &Transaction) -> Result<(), Reply> {
        let mut deliveries = Vec::new();
        let mut failure: Option<Reply> = None;
        for (path, _) in &t.recipients {
            let (lp, dom) = match path {
                ForwardPath::Postmaster => ("postmaster".to_string(), self.config.hostname.clone()),
                ForwardPath::Mailbox(a) => {
                    (a.localpart.0.clone(), domain_of(a).unwrap_or_default())
                }
            };
            match self.config.resolve(&lp, &dom) {
                Resolution::Account { account, mailbox } => {
                    if let Verdict::Reject(r) = self.quota_verdict(&account, t.message.len() as u64)
                    {
                        failure.get_or_insert(r);
                        continue;
                    }
                    deliveries.push(Delivery {
                        account,
                        mailbox,
                        message: &t.message,
                        flags: Flags::default(),
                        received: t.received,
                        info: Self::info(t, Some(format!("{lp}@{dom}"))),
                    });
                }
                _ => {
                    failure.get_or_insert(reply(550, (5, 1, 1), "no such user(s)"));
                }
            }
        }
        if deliveries.is_empty() {
            return Err(failure.unwrap_or_else(|| reply(550, (5, 1, 1), "no such user(s)")));
        }
        let accounts: Vec<String> = deliveries.iter().map(|d| d.account.clone()).collect();
        self.incoming_policy(t, &accounts)?;
        self.store
            .deliver_many(deliveries)
            .map(|_| ())
            .map_err(|e| store_error(&e))
    }

    /// Submission: check send limits, then queue per recipient.
    fn submit(&self, account: &str, t: &Transaction) -> Result<(), Reply> {
        let acc = self.config.account.get(account);
        let max_msgs = acc
            .and_then(|a| a.max_outgoing_messages_per_day)
            .unwrap_or(1000);
        let max_first = acc
            .and_then(|a| a.max_first_time_recipients_per_day)
            .unwrap_or(200);
        let now = wall_now();
        let since = UnixTime(now.0 - 24 * 3600);
        let rcpts: Vec<String> = t
            .recipients
            .iter()
            .map(|(p, _)| path_string(p, &self.config.hostname))
            .collect();
        let (msgs, first) = self
            .store
            .count_outgoing(account, since)
            .map_err(|e| store_error(&e))?;
        if msgs + 1 > u64::from(max_msgs) {
            return Err(reply(451, (4, 7, 1), format!("max number of messages ({max_msgs}) over past 24h reached, try increasing per-account setting max_outgoing_messages_per_day")));
        }
        let mut new_first = 0u64;
        for r in &rcpts {
            if !self
                .store
                .has_sent_to(account, r)
                .map_err(|e| store_error(&e))?
            {
                new_first += 1;
            }
        }
        if first + new_first > u64::from(max_first) {
            return Err(reply(451, (4, 7, 1), format!("max number of new/first-time recipients ({max_first}) over past 24h reached, try increasing per-account setting max_first_time_recipients_per_day")));
        }
        let has_8bit = t.message.iter().any(|b| *b >= 0x80);
        let queue: Vec<QueueRecipient> = t
            .recipients
            .iter()
            .zip(&rcpts)
            .map(|((_, params), r)| QueueRecipient {
                sender_account: Some(account.to_string()),
                mail_from: match &t.mail_from {
                    ReversePath::Null => String::new(),
                    ReversePath::Mailbox(a) => a.to_string(),
                },
                recipient: r.clone(),
                has_8bit,
                smtputf8: t.params.smtputf8,
                requiretls: match t.requiretls {
                    Some(true) => RequireTls::Required,
                    Some(false) => RequireTls::NotRequired,
                    None => RequireTls::Default,
                },
                transport: None,
                next_attempt: t.hold_until.unwrap_or(t.received),
                queued: t.received,
                hold: false,
                dsn: rmox_storage::DsnParams {
                    envid: t.params.envid.clone(),
                    ret_full: t.params.ret.map(|r| r == rmox_core::smtp::Ret::Full),
                    notify: params
                        .notify
                        .map(|n| {
                            let mut v = Vec::new();
                            if n.never {
                                v.push("NEVER".to_string());
                            }
                            if n.success {
                                v.push("SUCCESS".to_string());
                            }
                            if n.failure {
                                v.push("FAILURE".to_string());
                            }
                            if n.delay {
                                v.push("DELAY".to_string());
                            }
                            v
                        })
                        .unwrap_or_default(),
                    orcpt: params.orcpt.as_ref().map(|(k, v)| format!("{k};{v}")),
                },
                is_dsn: false,
            })
            .collect();
        let signed = self.dkim_sign(t);
        self.store
            .queue_add(&signed, queue)
            .map_err(|e| store_error(&e))?;
        self.store
            .record_outgoing(account, &rcpts, now)
            .map_err(|e| store_error(&e))?;
        Ok(())
    }

    /// localserve: everything lands in the one account, except special local parts.
    fn store_localserve(&self, t: &Transaction) -> Result<(), Reply> {
        for (p, _) in &t.recipients {
            if let ForwardPath::Mailbox(a) = p {
                if let Some(s) = special(&a.localpart.0, "") {
                    return Err(special_reply(s, "delivery"));
                }
            }
        }
        let account = match (&t.account, &self.config.postmaster) {
            (Some(a), _) => a.clone(),
            (None, Some(p)) => p.account.clone(),
            (None, None) => return Err(reply(550, (5, 1, 1), "no account to deliver to")),
        };
        let mailbox = if t.account.is_some() {
            "Inbox"
        } else {
            "Inbox"
        }
        .to_string();
        let rcpt = t
            .recipients
            .first()
            .map(|(p, _)| path_string(p, &self.config.hostname));
        let d = Delivery {
            account,
            mailbox,
            message: &t.message,
            flags: Flags::default(),
            received: t.received,
            info: Self::info(t, rcpt),
        };
        self.store
            .deliver(d)
            .map(|_| ())
            .map_err(|e| store_error(&e))
    }
}

fn path_string(p: &ForwardPath, hostname: &str) -> String {
    match p {
        ForwardPath::Postmaster => format!("postmaster@{hostname}"),
        ForwardPath::Mailbox(a) => a.to_string(),
    }
}

impl rmox_driver::Answerer for World {
    fn answer(&self, effect: Effect) -> Completion {
        match effect {
            Effect::CheckConnection { ip, cid } => {
                let v = self.check_connection(ip);
                if v == Verdict::Accept {
                    let mut c = self.counters();
                    c.cids.insert(cid, ip);
                    *c.open.entry(ip).or_default() += 1;
                }
                Completion::Verdict(v)
            }
            Effect::CheckPassword {
                username,
                password,
                ip,
            } => Completion::Password(self.check_password(&username, &password, ip)),
            Effect::LookupCredentials { username, kind, ip } => {
                Completion::Credentials(self.lookup_credentials(&username, kind, ip))
            }
            Effect::CheckSender {
                account,
                address,
                source,
                ..
            } => Completion::Verdict(self.check_sender(account.as_deref(), &address, source)),
            Effect::CheckRecipient {
                account, recipient, ..
            } => Completion::Verdict(self.check_recipient(account.as_deref(), &recipient)),
            Effect::Store(t) => Completion::Stored(self.store_message(&t)),
            Effect::Dns(lookups) => Completion::Dns(match &self.dns {
                Some(d) => d.lookup_many(&lookups),
                None => lookups
                    .iter()
                    .map(|_| {
                        rmox_core::dns::LookupResult::TempFail("no resolver configured".into())
                    })
                    .collect(),
            }),
        }
    }

    fn event(&self, cid: u64, event: &Event) {
        match event {
            Event::AuthFailed { username } => {
                tracing::info!(
                    cid,
                    username = username.as_deref().unwrap_or(""),
                    "authentication failed"
                );
                // The IP is not in the event; the failure counts against the connection's IP.
                let mut c = self.counters();
                if let Some(ip) = c.cids.get(&cid).copied() {
                    *c.auth_failures.entry(ip).or_default() += 1;
                }
            }
            Event::Closing(why) => {
                tracing::debug!(cid, why = %why, "closing");
                let mut c = self.counters();
                if let Some(ip) = c.cids.remove(&cid) {
                    if let Some(n) = c.open.get_mut(&ip) {
                        *n = n.saturating_sub(1);
                    }
                }
            }
            Event::Accepted { size, recipients } => {
                tracing::info!(cid, size, recipients, "message accepted");
            }
            Event::Authenticated { account, mechanism } => {
                tracing::info!(cid, account = %account, mechanism, "authenticated");
            }
            _ => {}
        }
    }
}
