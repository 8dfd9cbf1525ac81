//! Config that does what it says: every `[incoming]` switch, the listener TLS keys and the
//! Received limit, each shown on and off by a real [`ServerSession`] built from the parsed
//! config (`serve::port_config`), answered by a real [`World`] over a store in a temporary
//! directory, with DNS from a static zone.

use std::sync::Arc;

use rmox_core::dns::StaticZone;
use rmox_core::server::{Peer, ServerSession};
use rmox_storage::{MailStore, Store};

use crate::config::Config;
use crate::testutil::{run, Tmp};
use crate::world::World;

const IP: &str = "192.0.2.10";

/// `[incoming]` and `[[listener]]` settings are appended by each test.
const BASE: &str = r#"
hostname = "mail.mox.example"
data_dir = "data"

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = { "mjl@mox.example" = {}, "other@mox.example" = {} }

[postmaster]
account = "mjl"
"#;

/// remote.example resolves and has a PTR/A pair for IP; example.org publishes SPF for IP
/// (when `spf_pass`) and DMARC (`p`); nomail.example has a null MX; the DNSBL lists IP.
fn zone(spf_pass: bool, dmarc_p: &str, ptr: bool) -> StaticZone {
    let spf = if spf_pass {
        format!("v=spf1 ip4:{IP} -all")
    } else {
        "v=spf1 -all".to_string()
    };
    let mut z = format!(
        "remote.example. IN A {IP}\n\
         example.org. IN A 192.0.2.99\n\
         example.org. IN TXT \"{spf}\"\n\
         _dmarc.example.org. IN TXT \"v=DMARC1;p={dmarc_p}\"\n\
         nomail.example. IN MX 0 .\n\
         10.2.0.192.bl.example. IN A 127.0.0.2\n\
         10.2.0.192.bl.example. IN TXT \"listed for testing\"\n"
    );
    if ptr {
        z.push_str("10.2.0.192.in-addr.arpa. IN PTR remote.example.\n");
    }
    StaticZone::parse(&z).unwrap()
}

struct Env {
    _tmp: Tmp,
    config: Arc<Config>,
    store: Arc<Store>,
    world: World,
}

impl Env {
    fn new(tag: &str, extra: &str, zone: StaticZone) -> Env {
        let text = format!(
            "{BASE}\n[[listener]]\nname = \"t\"\nip = \"127.0.0.1\"\nsmtp = {{ port = 25 }}\n{extra}"
        );
        Self::with_text(tag, &text, zone)
    }

    /// An environment for a whole config text; every account's password is "testtest".
    fn with_text(tag: &str, text: &str, zone: StaticZone) -> Env {
        let tmp = Tmp::new(tag);
        let c = Config::parse(text, &tmp.0.join("rmox.toml")).unwrap();
        let store = Arc::new(Store::open(&c.data_dir()).unwrap());
        store.set_maildirs(c.maildirs().unwrap());
        for (name, a) in &c.account {
            store.account_add(name, &a.domain).unwrap();
            crate::admin::set_password(store.as_ref(), name, "testtest").unwrap();
        }
        let config = Arc::new(c);
        let world = World::new(
            Arc::clone(&config),
            Arc::clone(&store) as Arc<dyn MailStore>,
            Some(crate::resolve::Dns::Zone(zone)),
        )
        .unwrap();
        Env {
            _tmp: tmp,
            config,
            store,
            world,
        }
    }

    /// A session on the listener's port 25 (or submission), as `serve` configures it.
    fn session(&self, submission: bool) -> ServerSession {
        let l = &self.config.listener[0];
        let mut sc = crate::serve::port_config(&self.config, l, submission, false, None, 1);
        sc.auth_failure_delay = std::time::Duration::ZERO;
        let peer = Peer {
            ip: IP.parse().unwrap(),
            cid: 1,
        };
        ServerSession::new(Arc::new(sc), peer, rmox_driver::now()).unwrap()
    }

    /// Runs `script` (one element per write) on a new port 25 session; the replies to the
    /// last write.
    fn script(&self, submission: bool, script: &[String]) -> String {
        let mut s = self.session(submission);
        let mut out = run(&mut s, &self.world, b"");
        for input in script {
            out = run(&mut s, &self.world, input.as_bytes());
        }
        out
    }

    /// EHLO `ehlo`, MAIL FROM `from`, RCPT mjl@mox.example, DATA with a message from
    /// remote@example.org; the first reply that is not a success, or the final one.
    fn deliver(&self, ehlo: &str, from: &str, msg: &str) -> String {
        let mut s = self.session(false);
        run(&mut s, &self.world, b"");
        for (input, want) in [
            (format!("EHLO {ehlo}\r\n"), "250"),
            (format!("MAIL FROM:<{from}>\r\n"), "250"),
            ("RCPT TO:<mjl@mox.example>\r\n".to_string(), "250"),
            ("DATA\r\n".to_string(), "354"),
            (format!("{msg}.\r\n"), "250"),
        ] {
            let r = run(&mut s, &self.world, input.as_bytes());
            if !r.starts_with(want) {
                return r;
            }
        }
        "250 stored".into()
    }

    /// The stored messages of mjl, as text.
    fn stored(&self) -> Vec<String> {
        self.store
            .messages("mjl")
            .unwrap()
            .iter()
            .filter(|m| !m.expunged)
            .map(|m| String::from_utf8_lossy(&self.store.message_bytes(m.id).unwrap()).into())
            .collect()
    }

    /// The Authentication-Results field of the last stored message ("" when none).
    fn auth_results(&self) -> String {
        let last = self.stored().pop().expect("a stored message");
        let Some(at) = last.find("Authentication-Results:") else {
            return String::new();
        };
        let rest = &last[at..];
        // Up to the next field (a line not starting with white space).
        let mut end = rest.len();
        for (i, _) in rest.match_indices("\r\n") {
            if !rest[i + 2..].starts_with([' ', '\t']) {
                end = i;
                break;
            }
        }
        rest[..end].to_string()
    }
}

const MSG: &str = "From: <remote@example.org>\r\nTo: <mjl@mox.example>\r\nSubject: test\r\nMessage-Id: <t@example.org>\r\n\r\ntest email\r\n";

/// No iprev refusal and no DMARC refusal unless a test asks for them.
const QUIET: &str = "require_iprev_for_unknown_senders = false\ndmarc_reject = false\n";

fn incoming(keys: &str) -> String {
    format!("[incoming]\n{QUIET}{keys}\n")
}

#[test]
fn ehlo_check_switch() {
    for (on, want) in [(true, "550 5.5.0"), (false, "250")] {
        let env = Env::new(
            "ehlo",
            &incoming(&format!("ehlo_check = {on}")),
            zone(true, "none", true),
        );
        let r = env.deliver("nxdomain.example", "remote@example.org", MSG);
        assert!(r.starts_with(want), "ehlo_check = {on}: {r}");
    }
}

#[test]
fn mail_from_check_switch() {
    for (on, want) in [(true, "550 5.7.27"), (false, "250")] {
        let env = Env::new(
            "mailfrom",
            &incoming(&format!("mail_from_check = {on}")),
            zone(true, "none", true),
        );
        let r = env.deliver("remote.example", "x@nomail.example", MSG);
        assert!(r.starts_with(want), "mail_from_check = {on}: {r}");
    }
}

#[test]
fn spf_switch() {
    for on in [true, false] {
        let env = Env::new(
            "spf",
            // Reputation off: an unknown sender's SPF fail would be refused (see
            // `reputation_spf_fail_of_unknown_sender`).
            &incoming(&format!("spf = {on}\nreputation = false")),
            zone(false, "none", true),
        );
        let r = env.deliver("remote.example", "remote@example.org", MSG);
        assert!(r.starts_with("250"), "{r}");
        let m = env.stored().pop().unwrap();
        assert_eq!(m.contains("Received-SPF: fail"), on, "spf = {on}:\n{m}");
        assert_eq!(env.auth_results().contains("spf=fail"), on);
        // Without an SPF pass, only one recipient per transaction (when SPF runs).
        let r = env.script(
            false,
            &[
                "EHLO remote.example\r\n".into(),
                "MAIL FROM:<remote@example.org>\r\n".into(),
                "RCPT TO:<mjl@mox.example>\r\n".into(),
                "RCPT TO:<other@mox.example>\r\n".into(),
            ],
        );
        let want = if on { "452 4.5.3" } else { "250" };
        assert!(r.starts_with(want), "spf = {on}: {r}");
    }
}

#[test]
fn dkim_switch() {
    // dmarc off too: DMARC verifies DKIM for itself.
    for on in [true, false] {
        let env = Env::new(
            "dkim",
            &incoming(&format!("dkim = {on}\ndmarc = false")),
            zone(true, "none", true),
        );
        let r = env.deliver("remote.example", "remote@example.org", MSG);
        assert!(r.starts_with("250"), "{r}");
        let ar = env.auth_results();
        assert_eq!(ar.contains("dkim=none"), on, "dkim = {on}: {ar}");
        assert!(!ar.contains("dmarc="), "{ar}");
    }
}

#[test]
fn dmarc_switch() {
    for on in [true, false] {
        let env = Env::new(
            "dmarc",
            &incoming(&format!("dmarc = {on}")),
            zone(true, "none", true),
        );
        let r = env.deliver("remote.example", "remote@example.org", MSG);
        assert!(r.starts_with("250"), "{r}");
        let ar = env.auth_results();
        assert_eq!(ar.contains("dmarc=pass"), on, "dmarc = {on}: {ar}");
    }
}

#[test]
fn dmarc_reject_switch() {
    // SPF fails, no DKIM: DMARC fails for example.org, which says p=reject.
    for (on, want) in [(true, "550 5.7.1"), (false, "250")] {
        let env = Env::new(
            "dmarcreject",
            &format!(
                "[incoming]\nrequire_iprev_for_unknown_senders = false\nreputation = false\ndmarc_reject = {on}\n"
            ),
            zone(false, "reject", true),
        );
        let r = env.deliver("remote.example", "remote@example.org", MSG);
        assert!(r.starts_with(want), "dmarc_reject = {on}: {r}");
    }
}

#[test]
fn iprev_switch() {
    for on in [true, false] {
        let env = Env::new(
            "iprev",
            &incoming(&format!("iprev = {on}")),
            zone(true, "none", true),
        );
        let r = env.deliver("remote.example", "remote@example.org", MSG);
        assert!(r.starts_with("250"), "{r}");
        let ar = env.auth_results();
        assert_eq!(ar.contains("iprev=pass"), on, "iprev = {on}: {ar}");
    }
}

#[test]
fn require_iprev_for_unknown_senders_switch() {
    // No PTR for the client: iprev fails; a first-time sender is refused only when asked.
    for (on, want) in [(true, "451 4.7.0"), (false, "250")] {
        let env = Env::new(
            "reqiprev",
            &format!(
                "[incoming]\ndmarc_reject = false\nrequire_iprev_for_unknown_senders = {on}\n"
            ),
            zone(true, "none", false),
        );
        let r = env.deliver("remote.example", "remote@example.org", MSG);
        assert!(r.starts_with(want), "require_iprev = {on}: {r}");
    }
}

#[test]
fn dnsbl_zones() {
    for (zones, want) in [("[\"bl.example\"]", "451 4.7.1"), ("[]", "250")] {
        let env = Env::new(
            "dnsbl",
            &incoming(&format!("dnsbl = {zones}")),
            zone(true, "none", true),
        );
        let r = env.deliver("remote.example", "remote@example.org", MSG);
        assert!(r.starts_with(want), "dnsbl = {zones}: {r}");
    }
}

/// `checks = false` turns everything off, the DNSBL included: no Authentication-Results,
/// and a listed IP from a domain without mail is accepted.
#[test]
fn checks_false_turns_all_off() {
    let env = Env::new(
        "checksoff",
        &incoming("checks = false\ndnsbl = [\"bl.example\"]"),
        zone(false, "reject", false),
    );
    let r = env.deliver("nxdomain.example", "x@nomail.example", MSG);
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(env.auth_results(), "");
    // Every switch off (checks = true) is the same.
    let env = Env::new(
        "alloff",
        &incoming(
            "ehlo_check = false\nmail_from_check = false\nspf = false\ndkim = false\ndmarc = false\niprev = false",
        ),
        zone(false, "reject", false),
    );
    assert!(env.config.incoming_checks().is_none());
    let r = env.deliver("nxdomain.example", "x@nomail.example", MSG);
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(env.auth_results(), "");
}

#[test]
fn max_received_headers_limit() {
    let mut msg = String::new();
    for _ in 0..4 {
        msg.push_str("Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n");
    }
    msg.push_str(MSG);
    for (limit, want) in [(3, "550 5.4.6"), (4, "250")] {
        let env = Env::new(
            "received",
            &format!("[limits]\nmax_received_headers = {limit}\n[incoming]\nchecks = false\n"),
            zone(true, "none", true),
        );
        let r = env.deliver("remote.example", "remote@example.org", &msg);
        assert!(r.starts_with(want), "max_received_headers = {limit}: {r}");
    }
}

/// `require_starttls` on the listener: MAIL on port 25 needs STARTTLS first.
#[test]
fn require_starttls_key() {
    for (on, want) in [(true, "530 5.7.0"), (false, "250")] {
        let env = Env::new(
            "reqtls",
            &format!(
                "tls = {{ cert_file = \"c.pem\", key_file = \"k.pem\" }}\nrequire_starttls = {on}\n[incoming]\nchecks = false\n"
            ),
            zone(true, "none", true),
        );
        let r = env.deliver("remote.example", "remote@example.org", MSG);
        assert!(r.starts_with(want), "require_starttls = {on}: {r}");
    }
}

/// Submission needs TLS before AUTH and MAIL unless `no_require_starttls`.
#[test]
fn no_require_starttls_key() {
    let plain = "AUTH PLAIN AG1qbEBtb3guZXhhbXBsZQB0ZXN0dGVzdA==\r\n".to_string();
    for (relaxed, auth_want, mail_want) in [
        (false, "538 5.7.11", "530 5.7.0 STARTTLS required"),
        (true, "235", "250"),
    ] {
        let env = Env::new(
            "norequire",
            &format!(
                "submission = {{ port = 587 }}\ntls = {{ cert_file = \"c.pem\", key_file = \"k.pem\" }}\nno_require_starttls = {relaxed}\n"
            ),
            zone(true, "none", true),
        );
        let ehlo = "EHLO client.example\r\n".to_string();
        let r = env.script(true, &[ehlo.clone(), plain.clone()]);
        assert!(
            r.starts_with(auth_want),
            "no_require_starttls = {relaxed}: {r}"
        );
        let r = env.script(
            true,
            &[
                ehlo,
                plain.clone(),
                "MAIL FROM:<mjl@mox.example>\r\n".into(),
            ],
        );
        assert!(
            r.starts_with(mail_want),
            "no_require_starttls = {relaxed}: {r}"
        );
    }
}

/// localserve applies the submission rules of serve (as mox localserve): MAIL FROM and the
/// From header must be addresses of the authenticated account (any @localhost address,
/// through the catchall). Regression: localserve accepted any sender.
#[test]
fn localserve_submission_sender_rules() {
    let text = r#"
hostname = "localhost"
data_dir = "data"
localserve = true
[[listener]]
name = "local"
ip = "127.0.0.1"
submission = { port = 1587 }
no_require_starttls = true
[domain."localhost"]
[account.rmox]
domain = "localhost"
destinations = { "rmox@localhost" = {}, "@localhost" = {} }
"#;
    let env = Env::with_text("localserve", text, zone(true, "none", true));
    // base64 of "\0rmox@localhost\0testtest".
    let auth = "AUTH PLAIN AHJtb3hAbG9jYWxob3N0AHRlc3R0ZXN0\r\n".to_string();
    let start = |from: &str| {
        vec![
            "EHLO client.example\r\n".to_string(),
            auth.clone(),
            format!("MAIL FROM:<{from}>\r\n"),
        ]
    };
    let r = env.script(true, &start("someone@example.com"));
    assert!(
        r.starts_with("550 5.7.1 mail from address must match authenticated user"),
        "{r}"
    );
    let r = env.script(true, &start("anything@localhost"));
    assert!(r.starts_with("250"), "{r}");
    // The From header too.
    let mut s = start("rmox@localhost");
    s.push("RCPT TO:<friend@example.com>\r\n".into());
    s.push("DATA\r\n".into());
    s.push("From: <someone@example.com>\r\nSubject: x\r\n\r\nx\r\n.\r\n".into());
    let r = env.script(true, &s);
    assert!(
        r.starts_with("550 5.7.1 message from address must match authenticated user"),
        "{r}"
    );
    // Special local parts still work after the ownership check.
    let r = env.script(true, &start("mailfrom550@localhost"));
    assert!(r.starts_with("550"), "{r}");
    assert!(!r.contains("authenticated user"), "{r}");
}

/// The `[limits]` keys of the session reach it (`serve::port_config`), and act.
#[test]
fn limits_keys_reach_the_session() {
    let env = Env::new(
        "limits",
        "[limits]\nmax_message_size = 200\nmax_recipients = 1\ncommand_timeout_secs = 400\ndata_timeout_secs = 500\nauth_failure_delay_secs = 2\nmax_received_headers = 7\nmax_errors = 2\nmax_auth_failures_per_connection = 5\ntls_handshake_timeout_secs = 9\neffect_timeout_secs = 11\nchecks_timeout_secs = 12\nspool_threshold_bytes = 4096\n[incoming]\nchecks = false\n",
        zone(true, "none", true),
    );
    let sc = crate::serve::port_config(&env.config, &env.config.listener[0], false, false, None, 1);
    assert_eq!(sc.max_message_size, 200);
    assert_eq!(sc.max_recipients, 1);
    assert_eq!(sc.command_timeout, std::time::Duration::from_secs(400));
    assert_eq!(sc.data_timeout, std::time::Duration::from_secs(500));
    assert_eq!(sc.auth_failure_delay, std::time::Duration::from_secs(2));
    assert_eq!(sc.max_received_headers, 7);
    assert_eq!(sc.max_errors, 2);
    assert_eq!(sc.max_auth_failures, 5);
    assert_eq!(sc.tls_handshake_timeout, std::time::Duration::from_secs(9));
    assert_eq!(sc.effect_timeout, std::time::Duration::from_secs(11));
    assert_eq!(sc.checks_timeout, std::time::Duration::from_secs(12));
    assert_eq!(sc.spool_threshold, 4096);
    assert!(sc.checks.is_none());
    // hostname names us in the greeting.
    let r = env.script(false, &[]);
    assert!(r.starts_with("220 mail.mox.example "), "{r}");
    let r = env.script(
        false,
        &[
            "EHLO remote.example\r\n".into(),
            "MAIL FROM:<remote@example.org> SIZE=201\r\n".into(),
        ],
    );
    assert!(r.starts_with("552 5.3.4"), "{r}");
    let r = env.script(
        false,
        &[
            "EHLO remote.example\r\n".into(),
            "MAIL FROM:<remote@example.org>\r\n".into(),
            "RCPT TO:<mjl@mox.example>\r\n".into(),
            "RCPT TO:<other@mox.example>\r\n".into(),
        ],
    );
    assert!(r.starts_with("452 4.5.3"), "{r}");
    // max_errors = 2: the third failed command ends the connection with 550 5.1.0.
    let r = env.script(
        false,
        &[
            "EHLO remote.example\r\n".into(),
            "RCPT TO:<mjl@mox.example>\r\n".into(),
            "RCPT TO:<mjl@mox.example>\r\n".into(),
            "RCPT TO:<mjl@mox.example>\r\n".into(),
        ],
    );
    assert!(r.contains("550 5.1.0"), "{r}");
}

/// A port with `enabled = false` is not bound; the others are, with their kind.
#[test]
fn port_enabled_key() {
    let env = Env::new(
        "enabled",
        "submission = { port = 0, enabled = false }\nno_require_starttls = true\n",
        zone(true, "none", true),
    );
    // The smtp port of BASE's listener is 25; bind an ephemeral one instead.
    let mut c = (*env.config).clone();
    c.listener[0].smtp = Some(crate::config::PortConfig {
        port: 0,
        enabled: true,
    });
    let bound = crate::serve::bind_all(&c).unwrap();
    assert_eq!(bound.len(), 1);
    assert!(!bound[0].smtp_config().unwrap().submission);
    c.listener[0].submission.as_mut().unwrap().enabled = true;
    let bound = crate::serve::bind_all(&c).unwrap();
    assert_eq!(bound.len(), 2);
    assert!(bound[1].smtp_config().unwrap().submission);
}

/// A message from remote@example.org as an earlier delivery to mjl, DMARC-validated, junk
/// or not.
fn earlier(env: &Env, junk: bool, age_secs: i64) {
    let info = rmox_storage::MessageInfo {
        from_address: Some("remote@example.org".into()),
        from_domain: Some("example.org".into()),
        from_org_domain: Some("example.org".into()),
        from_validation: rmox_storage::Validation::Dmarc,
        ..Default::default()
    };
    env.store
        .deliver(rmox_storage::Delivery {
            account: "mjl".into(),
            mailbox: "Inbox".into(),
            head: b"",
            message: b"From: <remote@example.org>\r\nSubject: earlier\r\n\r\nx\r\n",
            flags: rmox_storage::Flags {
                junk,
                ..Default::default()
            },
            received: rmox_core::UnixTime(rmox_driver::now().wall.0 - age_secs),
            info,
        })
        .unwrap();
}

fn mailbox_count(env: &Env, mailbox: &str) -> usize {
    env.store
        .messages("mjl")
        .unwrap()
        .iter()
        .filter(|m| m.mailbox == mailbox && !m.expunged)
        .count()
}

/// mox's TestSpam: a sender whose earlier messages the user marked junk is refused (451,
/// nothing leaked) and the refused message kept in the rejects mailbox, once however often
/// the sender retries; once the user marks them not junk, the message is accepted, says
/// why in X-Rmox-Reason, and leaves the rejects mailbox.
#[test]
fn reputation_refuses_known_junk_and_keeps_it_in_rejects() {
    let base = BASE.replace(
        "destinations = { \"mjl@mox.example\" = {}, \"other@mox.example\" = {} }",
        "destinations = { \"mjl@mox.example\" = {}, \"other@mox.example\" = {} }\nrejects_mailbox = \"Rejects\"",
    );
    let env = Env::with_text(
        "repjunk",
        &format!(
            "{base}\n[[listener]]\nname = \"t\"\nip = \"127.0.0.1\"\nsmtp = {{ port = 25 }}\n{}",
            incoming("")
        ),
        zone(true, "reject", true),
    );
    for _ in 0..3 {
        earlier(&env, true, 3600);
    }
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("451 4.3.0 error processing"), "{r}");
    assert_eq!(mailbox_count(&env, "Rejects"), 1);
    // A retry is refused again but not kept twice.
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("451"), "{r}");
    assert_eq!(mailbox_count(&env, "Rejects"), 1);
    // The user marks the earlier messages as not junk.
    for m in env.store.messages("mjl").unwrap() {
        if m.mailbox == "Inbox" {
            env.store
                .set_flags(
                    m.id,
                    rmox_storage::Flags {
                        notjunk: true,
                        ..Default::default()
                    },
                )
                .unwrap();
        }
    }
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(mailbox_count(&env, "Rejects"), 0);
    let last = env
        .stored()
        .into_iter()
        .find(|m| m.contains("Message-Id: <t@example.org>") && m.contains("X-Rmox-Reason"))
        .expect("the accepted message");
    assert!(last.starts_with("X-Rmox-Reason: msgfromfull;"), "{last}");
}

/// mox's TestDMARCSent: a message to the sender earlier makes it known: accepted even
/// though its SPF fails (which refuses an unknown sender).
#[test]
fn reputation_spf_fail_of_unknown_sender() {
    let env = Env::new("repspf", &incoming(""), zone(false, "none", true));
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("451 4.3.0"), "{r}");
    env.store
        .record_outgoing(
            "mjl",
            &["remote@example.org".into()],
            rmox_driver::now().wall,
        )
        .unwrap();
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("250"), "{r}");
    assert!(env
        .stored()
        .pop()
        .unwrap()
        .starts_with("X-Rmox-Reason: msgtofull;"));
    // With reputation off, the SPF fail alone refuses nothing.
    let env = Env::new(
        "repoff",
        &incoming("reputation = false"),
        zone(false, "none", true),
    );
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("250"), "{r}");
    assert!(env
        .stored()
        .pop()
        .unwrap()
        .starts_with("X-Rmox-Reason: no-bad-signals;"));
}

/// Good history overrides a DNSBL listing (the listing only counts for unknown senders).
#[test]
fn reputation_good_history_beats_dnsbl() {
    let env = Env::new(
        "repdnsbl",
        &incoming("dnsbl = [\"bl.example\"]"),
        zone(true, "none", true),
    );
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("451 4.7.1"), "{r}");
    earlier(&env, false, 3600);
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("250"), "{r}");
}

/// The 250 promise covers the maildir copy: when it cannot be written (here its path is a
/// file), the recipient gets a temporary failure, not a 250 with the copy missing.
#[test]
fn maildir_write_failure_is_not_a_250() {
    let base = BASE.replace(
        "destinations = { \"mjl@mox.example\" = {}, \"other@mox.example\" = {} }",
        "destinations = { \"mjl@mox.example\" = {}, \"other@mox.example\" = {} }\nmaildir = \"blocked/Maildir\"",
    );
    let text = format!(
        "{base}\n[[listener]]\nname = \"t\"\nip = \"127.0.0.1\"\nsmtp = {{ port = 25 }}\n[incoming]\nchecks = false\n"
    );
    let env = Env::with_text("maildirfail", &text, zone(true, "none", true));
    std::fs::write(env._tmp.0.join("blocked"), b"a file, not a directory").unwrap();
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("451 4.3.0"), "{r}");
    assert!(env.stored().is_empty());
    // Once the path works, the message is written to both.
    std::fs::remove_file(env._tmp.0.join("blocked")).unwrap();
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(env.stored().len(), 1);
    let new = std::fs::read_dir(env._tmp.0.join("blocked/Maildir/new"))
        .unwrap()
        .count();
    assert_eq!(new, 1);
}

/// A message from the forwarder's IP, junk or not.
fn earlier_from_ip(env: &Env, junk: bool) {
    let info = rmox_storage::MessageInfo {
        remote_ip: Some(IP.parse().unwrap()),
        ..Default::default()
    };
    env.store
        .deliver(rmox_storage::Delivery {
            account: "mjl".into(),
            mailbox: "Inbox".into(),
            head: b"",
            message: b"Subject: earlier\r\n\r\nx\r\n",
            flags: rmox_storage::Flags {
                junk,
                ..Default::default()
            },
            received: rmox_core::UnixTime(rmox_driver::now().wall.0 - 3600),
            info,
        })
        .unwrap();
}

/// mox's TestForward: mail a ruleset marks as forwarded (MAIL FROM and a verified domain of
/// the forwarder) is not judged by the forwarder's IP, which has a junk history; the same
/// IP without the ruleset is refused. A ruleset's `accept_rejects_to_mailbox` turns the
/// refusal into delivery to that mailbox, flagged junk and seen.
#[test]
fn rulesets_forward_and_accept_rejects() {
    let base = BASE.replace(
        "destinations = { \"mjl@mox.example\" = {}, \"other@mox.example\" = {} }",
        "destinations = { \"mjl@mox.example\" = { rulesets = [{ smtp_mail_from_regexp = \"@forward\\\\.example$\", verified_domain = \"forward.example\", is_forward = true, mailbox = \"Forwarded\" }] }, \"other@mox.example\" = { rulesets = [{ accept_rejects_to_mailbox = \"otherjunk\" }] } }",
    );
    let text = format!(
        "{base}\n[[listener]]\nname = \"t\"\nip = \"127.0.0.1\"\nsmtp = {{ port = 25 }}\n{}",
        incoming("")
    );
    let zone = StaticZone::parse(&format!(
        "remote.example. IN A {IP}\n\
         10.2.0.192.in-addr.arpa. IN PTR remote.example.\n\
         forward.example. IN A {IP}\n\
         forward.example. IN TXT \"v=spf1 ip4:{IP} -all\"\n\
         elsewhere.example. IN A 192.0.2.99\n"
    ))
    .unwrap();
    let env = Env::with_text("rulesets", &text, zone);
    for _ in 0..5 {
        earlier_from_ip(&env, true);
    }
    let msg = "From: <someone@good.example>\r\nTo: <mjl@mox.example>\r\nSubject: fwd\r\nMessage-Id: <fwd1@good.example>\r\n\r\nforwarded\r\n";
    // Not through the forwarder: the IP's junk history refuses.
    let r = env.deliver("remote.example", "x@elsewhere.example", msg);
    assert!(r.starts_with("451 4.3.0"), "{r}");
    // Through the forwarder: the ruleset applies, the IP is not evidence, accepted into
    // the ruleset's mailbox.
    let r = env.deliver("remote.example", "remote@forward.example", msg);
    assert!(r.starts_with("250"), "{r}");
    let fwd = env
        .store
        .messages("mjl")
        .unwrap()
        .into_iter()
        .find(|m| m.mailbox == "Forwarded")
        .expect("delivered to the ruleset's mailbox");
    assert!(!fwd.flags.junk);
    let stored = String::from_utf8(env.store.message_bytes(fwd.id).unwrap()).unwrap();
    assert!(
        stored.contains("forwarded message: dmarc result not used"),
        "{stored}"
    );
    // other@: refused by reputation, but its ruleset accepts into a mailbox.
    let mut s = env.session(false);
    run(&mut s, &env.world, b"");
    let mut last = String::new();
    for input in [
        "EHLO remote.example\r\n".to_string(),
        "MAIL FROM:<x@elsewhere.example>\r\n".to_string(),
        "RCPT TO:<other@mox.example>\r\n".to_string(),
        "DATA\r\n".to_string(),
        // A From without history (someone@good.example now has the forwarded message).
        format!(
            "{}.\r\n",
            msg.replace("someone@good.example", "stranger@elsewhere.example")
        ),
    ] {
        last = run(&mut s, &env.world, input.as_bytes());
    }
    assert!(last.starts_with("250"), "{last}");
    let kept = env
        .store
        .messages("mjl")
        .unwrap()
        .into_iter()
        .find(|m| m.mailbox == "otherjunk")
        .unwrap_or_else(|| {
            panic!(
                "not accepted into the ruleset's rejects mailbox: {:?}",
                env.store
                    .messages("mjl")
                    .unwrap()
                    .iter()
                    .map(|m| (m.mailbox.clone(), m.flags, m.info.remote_ip))
                    .collect::<Vec<_>>()
            )
        });
    assert!(kept.flags.junk && kept.flags.seen);
}

/// A bad regular expression in a ruleset is refused when the config is loaded, naming it.
#[test]
fn ruleset_regexp_errors_name_the_key() {
    let base = BASE.replace(
        "\"other@mox.example\" = {}",
        "\"other@mox.example\" = { rulesets = [{ smtp_mail_from_regexp = \"(\" }] }",
    );
    let tmp = Tmp::new("rulesetbad");
    let e = Config::parse(&base, &tmp.0.join("rmox.toml")).unwrap_err();
    assert_eq!(
        e.key,
        "account.mjl.destinations.\"other@mox.example\".rulesets[0].smtp_mail_from_regexp"
    );
    assert!(e.problem.starts_with("\"(\": "), "{e}");
}

/// mox's TestBlocklistedSubjectpass: a DNSBL-listed sender without history whose message
/// passes DMARC is refused permanently with a pass; the message sent again with the pass in
/// its Subject is accepted. Without subjectpass the listing is a temporary refusal.
#[test]
fn subjectpass_for_a_listed_sender() {
    let env = Env::new(
        "subjectpass-off",
        &incoming("dnsbl = [\"bl.example\"]"),
        zone(true, "reject", true),
    );
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("451 4.7.1"), "{r}: {:?}", env.stored());

    let base = BASE.replace(
        "destinations = { \"mjl@mox.example\" = {}, \"other@mox.example\" = {} }",
        "destinations = { \"mjl@mox.example\" = {}, \"other@mox.example\" = {} }\nsubjectpass_period_secs = 3600",
    );
    let text = format!(
        "{base}\n[[listener]]\nname = \"t\"\nip = \"127.0.0.1\"\nsmtp = {{ port = 25 }}\n{}",
        incoming("dnsbl = [\"bl.example\"]")
    );
    let env = Env::with_text("subjectpass", &text, zone(true, "reject", true));
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("550 5.7.1 "), "{r}");
    let at = r
        .find(rmox_core::subjectpass::EXPLANATION)
        .expect("the refusal explains the pass");
    let pass = r[at + rmox_core::subjectpass::EXPLANATION.len()..].trim();
    assert!(pass.starts_with("rmoxpass-"), "{pass}");
    // A pass that is not ours does not work.
    let forged = MSG.replace(
        "Subject: test",
        "Subject: test rmoxpass-AAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    let r = env.deliver("remote.example", "remote@example.org", &forged);
    assert!(r.starts_with("550 5.7.1"), "{r}");
    let with_pass = MSG.replace("Subject: test", &format!("Subject: test {pass}"));
    let r = env.deliver("remote.example", "remote@example.org", &with_pass);
    assert!(r.starts_with("250"), "{r}");
    assert!(env
        .stored()
        .pop()
        .unwrap()
        .starts_with("X-Rmox-Reason: subjectpass;"));
    // Once accepted, the sender is known: later messages need no pass.
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("250"), "{r}");
}

/// `delay_first_time_senders_secs`: a sender without any history is refused (451) until it
/// tries again after the delay; then accepted, and from then on known. Off by default.
#[test]
fn first_time_senders_are_delayed_when_asked() {
    let env = Env::new(
        "delay",
        &incoming("delay_first_time_senders_secs = 300"),
        zone(true, "none", true),
    );
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(
        r.starts_with("451 4.7.1 first-time sender: try again in 300 seconds"),
        "{r}"
    );
    let r = env.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("451 4.7.1 first-time sender"), "{r}");
    // The first attempt was long enough ago (as if the sender retried after the delay).
    let key = "192.0.2.0/26 remote@example.org";
    let env2 = Env::new(
        "delay2",
        &incoming("delay_first_time_senders_secs = 300"),
        zone(true, "none", true),
    );
    env2.store
        .first_seen(
            "mjl",
            key,
            rmox_core::UnixTime(rmox_driver::now().wall.0 - 301),
        )
        .unwrap();
    let r = env2.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("250"), "{r}");
    // Known now: the next message needs no waiting.
    let r = env2.deliver("remote.example", "remote@example.org", MSG);
    assert!(r.starts_with("250"), "{r}");
    // Off by default.
    let env3 = Env::new("delay3", &incoming(""), zone(true, "none", true));
    assert!(env3
        .deliver("remote.example", "remote@example.org", MSG)
        .starts_with("250"));
}

/// mox's TestSpam, its last step (the junk filter): with no history for the sender, a
/// message whose words the account's filter learned as spam is refused (451, nothing
/// leaked) once the filter has enough ham to be significant; before that it is accepted
/// and the header says "not significant". A message in the words of the account's ham is
/// accepted, and the header shows the score.
#[test]
fn junk_filter_refuses_spammy_content() {
    let base = BASE.replace(
        "destinations = { \"mjl@mox.example\" = {}, \"other@mox.example\" = {} }",
        "destinations = { \"mjl@mox.example\" = {}, \"other@mox.example\" = {} }\njunk_filter = {}",
    );
    let text = format!(
        "{base}\n[[listener]]\nname = \"t\"\nip = \"127.0.0.1\"\nsmtp = {{ port = 25 }}\n{}",
        incoming("")
    );
    let spam_words = "Subject: cheap pills\r\n\r\ncheap pills pharmacy discount offer viagra\r\n";
    let ham_words = "Subject: project meeting\r\n\r\nproject meeting agenda review notes\r\n";
    let spammy = "From: <remote@example.org>\r\nTo: <mjl@mox.example>\r\nSubject: cheap pills\r\n\
                  Message-Id: <s@example.org>\r\n\r\ncheap pills from our pharmacy, discount offer\r\n";
    let hammy =
        "From: <remote@example.org>\r\nTo: <mjl@mox.example>\r\nSubject: project meeting\r\n\
                 Message-Id: <h@example.org>\r\n\r\nthe project meeting agenda, please review\r\n";
    let train = |env: &Env, hams: usize| {
        let c = env.world.config();
        let p = c.account["mjl"].junk_filter.as_ref().unwrap().params();
        let tokens = |m: &str| rmox_core::junk::tokenize(&p, m.as_bytes());
        env.store
            .junk_train_tokens("mjl", (0..5).map(|_| (true, tokens(spam_words))).collect())
            .unwrap();
        env.store
            .junk_train_tokens(
                "mjl",
                (0..hams).map(|_| (false, tokens(ham_words))).collect(),
            )
            .unwrap();
    };
    // Enough ham trained: the spammy message is refused, the hammy one accepted.
    let env = Env::with_text("junkcontent", &text, zone(true, "none", true));
    train(&env, 60);
    let r = env.deliver("remote.example", "remote@example.org", spammy);
    assert!(r.starts_with("451 4.3.0 error processing"), "{r}");
    assert!(env.stored().is_empty(), "nothing stored");
    let r = env.deliver("remote.example", "remote@example.org", hammy);
    assert!(r.starts_with("250"), "{r}");
    let last = env.stored().pop().unwrap();
    assert!(last.contains("content: not junk, spamscore 0.00"), "{last}");
    // Too little ham trained: the spammy message is accepted, and the header says why.
    let env = Env::with_text("junkcontent2", &text, zone(true, "none", true));
    train(&env, 10);
    let r = env.deliver("remote.example", "remote@example.org", spammy);
    assert!(r.starts_with("250"), "{r}");
    let last = env.stored().pop().unwrap();
    assert!(
        last.contains("content: junk (not significant), spamscore 1.00"),
        "{last}"
    );
}

/// The rejects mailbox is bounded: at most `incoming.rejects_max_messages` messages and
/// `incoming.rejects_max_size_mb` megabytes; what does not fit is refused all the same,
/// only not kept.
#[test]
fn rejects_mailbox_limits() {
    for (limits, kept) in [
        ("rejects_max_messages = 2", 2),
        ("rejects_max_size_mb = 0", 0),
        ("", 3),
    ] {
        let base = BASE.replace(
            "destinations = { \"mjl@mox.example\" = {}, \"other@mox.example\" = {} }",
            "destinations = { \"mjl@mox.example\" = {}, \"other@mox.example\" = {} }\nrejects_mailbox = \"Rejects\"",
        );
        let env = Env::with_text(
            "rejectslimits",
            &format!(
                "{base}\n[[listener]]\nname = \"t\"\nip = \"127.0.0.1\"\nsmtp = {{ port = 25 }}\n{}",
                incoming(limits)
            ),
            zone(true, "reject", true),
        );
        for _ in 0..3 {
            earlier(&env, true, 3600);
        }
        for n in 0..3 {
            let msg = MSG.replace("<t@example.org>", &format!("<t{n}@example.org>"));
            let r = env.deliver("remote.example", "remote@example.org", &msg);
            assert!(r.starts_with("451 4.3.0"), "{r}");
        }
        assert_eq!(mailbox_count(&env, "Rejects"), kept, "{limits}");
    }
}
