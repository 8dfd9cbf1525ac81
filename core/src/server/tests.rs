//! Transcript tests of the server session machine, driven only through its public contract
//! by the in-memory harness in [`crate::testkit`].

use super::*;
use crate::rng::Rng;
use crate::smtp::ReplyParser;
use crate::testkit::{self, TestClock};
use base64::Engine;
use proptest::prelude::*;
use std::collections::VecDeque;

/// What the fake outside world answers.
#[derive(Clone)]
struct World {
    /// username -> (password, account, disabled message)
    users: Vec<(
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
    )>,
    store_result: StoreOutcome,
    stored: Vec<Transaction>,
    connection: Verdict,
    zone: crate::dns::StaticZone,
    /// Spool files: what each holds; removed at `Event::SpoolEnded` (see `H::drain`).
    spools: std::collections::HashMap<SpoolId, Vec<u8>>,
    /// Every spool effect seen: the spool, the chunk's size, whether it was the last.
    spool_log: Vec<(SpoolId, usize, bool)>,
    /// Spool effects fail with this reason.
    spool_fail: Option<&'static str>,
}

impl World {
    fn new() -> World {
        World {
            users: vec![
                ("mjl@mox.example", "testtest", "mjl", None),
                (
                    "off@mox.example",
                    "testtest",
                    "off",
                    Some("account closed, ask the admin"),
                ),
            ],
            store_result: StoreOutcome::Delivered,
            stored: Vec::new(),
            connection: Verdict::Accept,
            zone: crate::dns::StaticZone::new(),
            spools: Default::default(),
            spool_log: Vec::new(),
            spool_fail: None,
        }
    }

    fn answer(&mut self, e: &Effect) -> Option<Completion> {
        Some(match e {
            Effect::CheckConnection { .. } => Completion::Verdict(self.connection.clone()),
            Effect::CheckPassword {
                username, password, ..
            } => match self.users.iter().find(|u| u.0 == username) {
                Some((_, _, _, Some(msg))) => {
                    Completion::Password(PasswordCheck::Disabled(msg.to_string()))
                }
                Some((_, pw, acc, None)) if pw == password => {
                    Completion::Password(PasswordCheck::Valid {
                        account: acc.to_string(),
                    })
                }
                _ => Completion::Password(PasswordCheck::Invalid),
            },
            Effect::LookupCredentials { username, kind, .. } => {
                match self.users.iter().find(|u| u.0 == username) {
                    Some((_, _, _, Some(msg))) => {
                        Completion::Credentials(CredentialsAnswer::Disabled(msg.to_string()))
                    }
                    Some((_, pw, acc, None)) => {
                        let credentials = match kind {
                            CredentialKind::CramMd5 => {
                                StoredCredentials::CramMd5(crate::sasl::derive_cram_md5(pw))
                            }
                            CredentialKind::ScramSha1 => {
                                StoredCredentials::Scram(crate::sasl::derive_scram(
                                    crate::sasl::ScramHash::Sha1,
                                    pw,
                                    b"saltsaltsalt",
                                    4096,
                                ))
                            }
                            CredentialKind::ScramSha256 => {
                                StoredCredentials::Scram(crate::sasl::derive_scram(
                                    crate::sasl::ScramHash::Sha256,
                                    pw,
                                    b"saltsaltsalt",
                                    4096,
                                ))
                            }
                        };
                        Completion::Credentials(CredentialsAnswer::Found {
                            account: acc.to_string(),
                            credentials,
                        })
                    }
                    None => Completion::Credentials(CredentialsAnswer::Unknown),
                }
            }
            Effect::CheckSender {
                account, address, ..
            } => {
                // Submission: the address must be the account's own.
                match (account, address) {
                    (Some(acc), ReversePath::Mailbox(a))
                        if a.to_string() != format!("{acc}@mox.example") =>
                    {
                        Completion::Verdict(Verdict::Reject(Reply::new(
                            550,
                            Some(Enhanced::new(5, 7, 1)),
                            "must match authenticated user",
                        )))
                    }
                    _ => Completion::Verdict(Verdict::Accept),
                }
            }
            Effect::CheckRecipient { recipient, .. } => match recipient {
                ForwardPath::Mailbox(a) if a.localpart.0 == "unknown" => {
                    Completion::Verdict(Verdict::Reject(Reply::new(
                        550,
                        Some(Enhanced::new(5, 1, 1)),
                        "no such user",
                    )))
                }
                _ => Completion::Verdict(Verdict::Accept),
            },
            Effect::Dns(lookups) => {
                Completion::Dns(lookups.iter().map(|l| self.zone.lookup(l)).collect())
            }
            Effect::Spool { spool, chunk, last } => {
                self.spool_log.push((*spool, chunk.len(), *last));
                if let Some(why) = self.spool_fail {
                    return Some(Completion::Spool(SpoolAnswer::Failed(why.into())));
                }
                Completion::Spool(testkit::pair::spool_in_memory(
                    &mut self.spools,
                    *spool,
                    chunk,
                    *last,
                ))
            }
            Effect::Store(t) => {
                if matches!(
                    self.store_result,
                    StoreOutcome::Delivered | StoreOutcome::Partial { .. }
                ) {
                    self.stored.push((**t).clone());
                }
                Completion::Stored(self.store_result.clone())
            }
        })
    }
}

/// A session, its fake world and a virtual clock. Effects are answered at once unless
/// `hold_effects` is set.
struct H {
    s: ServerSession,
    clock: TestClock,
    world: World,
    inbuf: Vec<u8>,
    tx: Vec<u8>,
    /// Plaintext received from the server (decrypted when the client side uses TLS).
    received: Vec<u8>,
    closed: bool,
    events: Vec<Event>,
    held: VecDeque<(Token, Effect)>,
    hold_effects: bool,
    client_tls: Option<crate::tls::TlsLayer>,
    parser: ReplyParser,
}

fn config() -> ServerConfig {
    let mut c = ServerConfig::new("mox.example");
    c.auth_failure_delay = Duration::ZERO;
    c.require_tls_for_auth = false;
    c
}

fn submission_config() -> ServerConfig {
    let mut c = config();
    c.submission = true;
    c
}

impl H {
    fn new(c: ServerConfig) -> H {
        Self::with_world(c, World::new())
    }

    fn with_world(c: ServerConfig, world: World) -> H {
        Self::build(c, world, false)
    }

    /// A session whose effects are all held, the connection check included.
    fn holding(c: ServerConfig) -> H {
        Self::build(c, World::new(), true)
    }

    fn build(c: ServerConfig, world: World, hold_effects: bool) -> H {
        let clock = TestClock::new();
        let peer = Peer {
            ip: "192.0.2.10".parse().unwrap(),
            cid: 7,
        };
        let s = ServerSession::new(Arc::new(c), peer, clock.now()).unwrap();
        let mut h = H {
            s,
            clock,
            world,
            inbuf: Vec::new(),
            tx: Vec::new(),
            received: Vec::new(),
            closed: false,
            events: Vec::new(),
            held: VecDeque::new(),
            hold_effects,
            client_tls: None,
            parser: ReplyParser::new(),
        };
        h.drain();
        h
    }

    /// Drains outputs, answering effects, until the session is idle.
    fn drain(&mut self) {
        for _ in 0..10_000 {
            let now = self.clock.now();
            match self.s.poll(now, &mut self.tx) {
                Output::Transmit => {
                    let bytes = std::mem::take(&mut self.tx);
                    match &mut self.client_tls {
                        Some(t) => {
                            t.feed(&bytes, &mut self.received).unwrap();
                        }
                        None => self.received.extend_from_slice(&bytes),
                    }
                }
                Output::Effect(t, e) => {
                    if self.hold_effects {
                        self.held.push_back((t, e));
                    } else {
                        let c = self.world.answer(&e).unwrap();
                        self.s.handle(now, Input::Completed(t, c)).unwrap();
                        self.feed_pending();
                    }
                }
                Output::Event(e) => {
                    if let Event::SpoolEnded(id) = &e {
                        self.world.spools.remove(id);
                    }
                    self.events.push(e)
                }
                Output::Idle { .. } => return,
                Output::Close => {
                    self.closed = true;
                    return;
                }
            }
        }
        panic!("session did not become idle");
    }

    /// Offers buffered input again (after a completion unblocked the session).
    fn feed_pending(&mut self) {
        if self.inbuf.is_empty() {
            return;
        }
        let now = self.clock.now();
        let buf = std::mem::take(&mut self.inbuf);
        let n = self.s.handle(now, Input::Received(&buf)).unwrap();
        self.inbuf = buf[n..].to_vec();
    }

    /// Sends bytes as the client (through TLS when the client side has it).
    fn send(&mut self, bytes: &[u8]) {
        let wire = match &mut self.client_tls {
            Some(t) => {
                t.write_plain(bytes);
                let mut out = Vec::new();
                t.take_ciphertext(&mut out);
                out
            }
            None => bytes.to_vec(),
        };
        self.inbuf.extend_from_slice(&wire);
        let now = self.clock.now();
        let buf = std::mem::take(&mut self.inbuf);
        let n = self.s.handle(now, Input::Received(&buf)).unwrap();
        self.inbuf = buf[n..].to_vec();
        self.drain();
        // Completions may have unblocked the session with input left over.
        for _ in 0..100 {
            if self.inbuf.is_empty() || self.closed {
                break;
            }
            let before = self.inbuf.len();
            self.feed_pending();
            self.drain();
            if self.inbuf.len() == before {
                break;
            }
        }
    }

    fn send_str(&mut self, s: &str) {
        self.send(s.as_bytes());
    }

    /// The replies received since the last call, as "code text" strings (first line only
    /// for multi-line replies, which are joined with '|').
    fn replies(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = std::mem::take(&mut self.received);
        loop {
            match self.parser.feed(&buf) {
                Ok((Some(r), n)) => {
                    buf.drain(..n);
                    let enh = r.enhanced.map(|e| format!(" {e}")).unwrap_or_default();
                    out.push(format!("{}{} {}", r.code, enh, r.lines.join("|")));
                }
                Ok((None, n)) => {
                    buf.drain(..n);
                    break;
                }
                Err(e) => panic!(
                    "bad reply from server: {e}: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            }
        }
        self.received = buf;
        out
    }

    /// Sends `input` and asserts the reply codes (prefix match on "code enhanced text").
    fn expect(&mut self, input: &str, want: &[&str]) {
        self.send_str(input);
        let got = self.replies();
        assert_eq!(
            got.len(),
            want.len(),
            "for {input:?}: got {got:?}, want {want:?}"
        );
        for (g, w) in got.iter().zip(want) {
            assert!(
                g.starts_with(w),
                "for {input:?}: got {g:?}, want prefix {w:?}"
            );
        }
    }

    fn timeout(&mut self) {
        let now = self.clock.now();
        let Output::Idle {
            deadline: Some(d), ..
        } = self.s.poll(now, &mut self.tx)
        else {
            panic!("no deadline");
        };
        self.clock.set_mono(d);
        let now = self.clock.now();
        self.s.handle(now, Input::Timeout).unwrap();
        self.drain();
    }

    /// What the session waits for: its next deadline and timer.
    fn idle(&mut self) -> (Option<std::time::Instant>, Option<Timer>) {
        let now = self.clock.now();
        match self.s.poll(now, &mut self.tx) {
            Output::Idle { deadline, timer } => (deadline, timer),
            o => panic!("not idle: {o:?}"),
        }
    }

    /// Answers the oldest held effect now (as the world would).
    fn answer_held(&mut self) -> Result<usize, SessionError> {
        let (t, e) = self.held.pop_front().expect("a held effect");
        let c = self.world.answer(&e).unwrap();
        let now = self.clock.now();
        let r = self.s.handle(now, Input::Completed(t, c));
        self.drain();
        r
    }

    fn stored(&self) -> &[Transaction] {
        &self.world.stored
    }
}

const MSG: &str =
    "From: <remote@example.org>\r\nTo: <mjl@mox.example>\r\nSubject: test\r\n\r\ntest email\r\n";

fn greeted(c: ServerConfig) -> H {
    let mut h = H::new(c);
    assert_eq!(h.replies(), vec!["220 mox.example ESMTP rmox".to_string()]);
    h
}

fn ehloed(c: ServerConfig) -> H {
    let mut h = greeted(c);
    h.send_str("EHLO client.example\r\n");
    let r = h.replies();
    assert!(r[0].starts_with("250 mox.example|PIPELINING"), "{r:?}");
    h
}

#[test]
fn greeting_ehlo_extensions_and_quit() {
    let mut h = greeted(config());
    h.send_str("EHLO client.example\r\n");
    let r = h.replies();
    let caps: Vec<&str> = r[0].split('|').collect();
    for want in [
        "PIPELINING",
        "SIZE 104857600",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
        "DSN",
        "LIMITS RCPTMAX=1000",
    ] {
        assert!(caps.contains(&want), "missing {want} in {caps:?}");
    }
    for absent in ["STARTTLS", "REQUIRETLS", "FUTURERELEASE"] {
        assert!(
            !caps.iter().any(|c| c.starts_with(absent)),
            "unexpected {absent} in {caps:?}"
        );
    }
    assert!(
        !caps.iter().any(|c| c.starts_with("AUTH")),
        "no AUTH on port 25: {caps:?}"
    );
    h.expect("HELO client.example\r\n", &["250 mox.example"]);
    h.expect("QUIT\r\n", &["221 2.0.0"]);
    assert!(h.closed);
}

#[test]
fn connection_refused_by_policy() {
    let mut w = World::new();
    w.connection = Verdict::Reject(Reply::new(
        421,
        Some(Enhanced::new(4, 7, 0)),
        "too many connections",
    ));
    let mut h = H::with_world(config(), w);
    assert_eq!(
        h.replies(),
        vec!["421 4.7.0 too many connections".to_string()]
    );
    assert!(h.closed);
}

#[test]
fn non_smtp_first_command_closes() {
    let mut h = greeted(config());
    h.expect(
        "GET / HTTP/1.1\r\n",
        &["500 5.5.2 please try again speaking smtp"],
    );
    assert!(h.closed);
}

#[test]
fn unknown_command_later_is_500_5_5_1() {
    let mut h = ehloed(config());
    h.expect("BOGUS\r\n", &["500 5.5.1"]);
    assert!(!h.closed);
    h.expect("NOOP\r\n", &["250 2.0.0"]);
}

#[test]
fn simple_commands() {
    let mut h = ehloed(config());
    h.expect("VRFY mjl\r\n", &["252 2.7.0"]);
    h.expect("EXPN list\r\n", &["252 2.7.0"]);
    h.expect("HELP\r\n", &["214 2.0.0"]);
    h.expect("NOOP\r\n", &["250 2.0.0"]);
    h.expect("RSET\r\n", &["250 2.0.0"]);
}

#[test]
fn sequencing_errors() {
    let mut h = greeted(config());
    h.expect("MAIL FROM:<a@example.org>\r\n", &["503 5.5.1"]);
    h.expect("EHLO c.example\r\n", &["250"]);
    h.expect("RCPT TO:<mjl@mox.example>\r\n", &["503 5.5.1"]);
    h.expect("DATA\r\n", &["503 5.5.1"]);
    h.expect("MAIL FROM:<a@example.org>\r\n", &["250 2.1.0"]);
    h.expect("MAIL FROM:<a@example.org>\r\n", &["503 5.5.1"]);
    h.expect("DATA\r\n", &["503 5.5.1"]);
}

#[test]
fn delivery_is_acknowledged_only_after_store_completes() {
    let mut h = ehloed(config());
    h.expect("MAIL FROM:<remote@example.org>\r\n", &["250 2.1.0"]);
    h.expect("RCPT TO:<mjl@mox.example>\r\n", &["250 2.1.5"]);
    h.expect("DATA\r\n", &["354"]);
    h.hold_effects = true;
    h.send_str(&format!("{MSG}.\r\n"));
    assert_eq!(
        h.replies(),
        Vec::<String>::new(),
        "no reply before the store completes"
    );
    let (t, e) = h.held.pop_front().expect("store effect");
    let Effect::Store(txn) = &e else {
        panic!("expected store, got {e:?}")
    };
    let text = String::from_utf8(txn.message.to_vec()).unwrap();
    assert!(
        text.starts_with(
            "Received: from client.example ([192.0.2.10])\r\n\tby mox.example with ESMTP id 7"
        ),
        "{text}"
    );
    assert!(text.contains("\tfor <mjl@mox.example>;"), "{text}");
    assert!(text.ends_with(MSG), "{text}");
    assert_eq!(txn.recipients.len(), 1);
    let now = h.clock.now();
    h.s.handle(
        now,
        Input::Completed(t, Completion::Stored(StoreOutcome::Delivered)),
    )
    .unwrap();
    h.drain();
    assert_eq!(h.replies(), vec!["250 2.0.0 it is done".to_string()]);
}

#[test]
fn failed_store_is_not_acknowledged() {
    let mut w = World::new();
    w.store_result =
        StoreOutcome::Refused(Reply::new(451, Some(Enhanced::new(4, 3, 0)), "disk full"));
    let mut h = H::with_world(config(), w);
    h.replies();
    h.expect("EHLO c.example\r\n", &["250"]);
    h.expect(
        &format!(
            "MAIL FROM:<remote@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\n{MSG}.\r\n"
        ),
        &["250", "250", "354", "451 4.3.0 disk full"],
    );
    assert!(h.stored().is_empty());
}

/// Three recipients accepted at RCPT, then the store's per-recipient outcome.
fn three_recipient_transaction(outcome: StoreOutcome, delay: Duration) -> H {
    let mut w = World::new();
    w.store_result = outcome;
    let mut c = config();
    c.unknown_recipient_delay = delay;
    let mut h = H::with_world(c, w);
    h.replies();
    h.expect("EHLO c.example\r\n", &["250"]);
    h.expect(
        "MAIL FROM:<remote@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nRCPT TO:<nobody@mox.example>\r\nRCPT TO:<full@mox.example>\r\nDATA\r\n",
        &["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.1.5", "354"],
    );
    h.send_str(&format!("{MSG}.\r\n"));
    h
}

fn failed_events(h: &H) -> Vec<String> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::RecipientFailed {
                recipient,
                code,
                enhanced,
                reason,
            } => Some(format!("{recipient} {code} {enhanced} {reason}")),
            _ => None,
        })
        .collect()
}

/// Issue 12: a transaction whose recipients were all unknown users is answered 550 5.1.1
/// only after the unknown-recipient delay (virtual time), and not before; the session then
/// goes on.
#[test]
fn all_unknown_recipients_answered_after_delay() {
    let failed = vec![
        RecipientFailure::unknown_user("mjl@mox.example"),
        RecipientFailure::unknown_user("nobody@mox.example"),
        RecipientFailure::unknown_user("full@mox.example"),
    ];
    let mut h =
        three_recipient_transaction(StoreOutcome::Failed(failed.clone()), Duration::from_secs(5));
    let start = h.clock.now().mono;
    assert_eq!(
        h.replies(),
        Vec::<String>::new(),
        "answered before the delay"
    );
    // A command sent meanwhile waits too.
    h.send_str("NOOP\r\n");
    assert_eq!(h.replies(), Vec::<String>::new());
    h.timeout();
    assert!(h.clock.now().mono >= start + Duration::from_secs(5));
    h.feed_pending();
    h.drain();
    assert_eq!(
        h.replies(),
        vec![
            "550 5.1.1 no such user".to_string(),
            "250 2.0.0 alrighty".to_string()
        ]
    );
    assert_eq!(failed_events(&h).len(), 3);
    assert!(!h.closed);
    h.expect("NOOP\r\n", &["250 2.0.0"]);
    // Without a delay configured the reply comes at once.
    let mut h = three_recipient_transaction(StoreOutcome::Failed(failed), Duration::ZERO);
    assert_eq!(h.replies(), vec!["550 5.1.1 no such user".to_string()]);
}

/// Issue 12: mixed failures of every recipient give one multi-line reply naming each
/// recipient: 554 when all are the sender's doing, 451 when one is a fault of ours; no delay
/// unless all were unknown users.
#[test]
fn all_recipients_failed_with_different_errors() {
    let unknown = RecipientFailure::unknown_user("nobody@mox.example");
    let full = RecipientFailure::mailbox_full("full@mox.example");
    let storage = RecipientFailure::storage(
        "mjl@mox.example",
        &Reply::new(451, Some(Enhanced::new(4, 3, 0)), "error processing"),
    );
    let mut h = three_recipient_transaction(
        StoreOutcome::Failed(vec![unknown.clone(), full.clone()]),
        Duration::from_secs(5),
    );
    assert_eq!(
        h.replies(),
        vec!["554 5.3.0 550 5.1.1 <nobody@mox.example>: no such user|452 4.2.2 <full@mox.example>: account storage full|multiple errors".to_string()]
    );
    let mut h = three_recipient_transaction(
        StoreOutcome::Failed(vec![storage, unknown, full]),
        Duration::from_secs(5),
    );
    let r = h.replies();
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(
        r[0].starts_with("451 4.3.0 451 4.3.0 <mjl@mox.example>: error processing|"),
        "{r:?}"
    );
    assert!(r[0].ends_with("|multiple errors"), "{r:?}");
    assert_eq!(failed_events(&h).len(), 3);
    assert!(h.stored().is_empty());
}

/// Issue 12: when some recipients got the message, the answer is 250 (the outcome is the
/// Spooled proof) and each failed recipient is reported as an event for the log.
#[test]
fn partial_delivery_is_250_with_failures_reported() {
    let mut h = three_recipient_transaction(
        StoreOutcome::Partial {
            failed: vec![
                RecipientFailure::unknown_user("nobody@mox.example"),
                RecipientFailure::mailbox_full("full@mox.example"),
            ],
        },
        Duration::from_secs(5),
    );
    assert_eq!(h.replies(), vec!["250 2.0.0 it is done".to_string()]);
    assert_eq!(
        failed_events(&h),
        vec![
            "nobody@mox.example 550 5.1.1 no such user".to_string(),
            "full@mox.example 452 4.2.2 account storage full".to_string(),
        ]
    );
    assert!(h.events.contains(&Event::Accepted {
        size: h.stored()[0].message.len(),
        recipients: 1
    }));
}

#[test]
fn pipelined_transaction_in_one_write() {
    let mut h = greeted(config());
    h.expect(
        &format!("EHLO c.example\r\nMAIL FROM:<remote@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nRCPT TO:<unknown@mox.example>\r\nRCPT TO:<other@mox.example>\r\nDATA\r\n{MSG}.\r\nQUIT\r\n"),
        &["250 mox.example", "250 2.1.0", "250 2.1.5", "550 5.1.1", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"],
    );
    assert_eq!(h.stored().len(), 1);
    assert_eq!(h.stored()[0].recipients.len(), 2);
}

/// Every fake end-of-data sequence from the shared vectors: never taken as the end of the
/// message. Those with a bare CR or LF next to the dot are refused with 500 5.5.2 naming
/// smuggling, only after the real end of data, and the session stays usable; those with a
/// NUL are plain content of one message.
#[test]
fn smuggling_sequences_are_refused() {
    for (name, seq) in testkit::smuggling_vectors() {
        let mut h = ehloed(config());
        h.expect(
            "MAIL FROM:<remote@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\n",
            &["250", "250", "354"],
        );
        let mut data = b"From: <remote@example.org>\r\n\r\nbody".to_vec();
        data.extend_from_slice(&seq);
        data.extend_from_slice(
            b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\nsmuggled\r\n",
        );
        h.send(&data);
        assert_eq!(
            h.replies(),
            Vec::<String>::new(),
            "{name}: replied before the real end of data"
        );
        h.send_str("\r\n.\r\n");
        let r = h.replies();
        assert_eq!(r.len(), 1, "{name}: {r:?}");
        let bare = seq
            .windows(2)
            .any(|w| (w[0] == b'\r') != (w[1] == b'\n') && (w[0] == b'\r' || w[1] == b'\n'))
            || seq.first() == Some(&b'\n')
            || seq.last() == Some(&b'\r');
        if bare {
            assert!(
                r[0].starts_with("500 5.5.2") && r[0].contains("smuggling"),
                "{name}: {r:?}"
            );
            assert!(h.stored().is_empty(), "{name}");
        } else {
            assert!(r[0].starts_with("250"), "{name}: {r:?}");
            assert_eq!(h.stored().len(), 1, "{name}");
            assert!(
                String::from_utf8_lossy(&h.stored()[0].message.to_vec()).contains("smuggled"),
                "{name}"
            );
        }
        h.expect("NOOP\r\n", &["250"]);
    }
}

#[test]
fn line_too_long_closes() {
    let mut h = ehloed(config());
    let long = format!("NOOP {}\r\n", "x".repeat(5000));
    h.send_str(&long);
    let r = h.replies();
    assert!(r[0].starts_with("500 5.5.2 line too long"), "{r:?}");
    assert!(h.closed);
}

#[test]
fn recipient_limit_and_null_sender() {
    let mut c = config();
    c.max_recipients = 3;
    let mut h = ehloed(c);
    h.expect("MAIL FROM:<remote@example.org>\r\n", &["250"]);
    for i in 0..3 {
        h.expect(&format!("RCPT TO:<r{i}@mox.example>\r\n"), &["250 2.1.5"]);
    }
    h.expect("RCPT TO:<r4@mox.example>\r\n", &["452 4.5.3"]);
    h.expect(
        "RSET\r\nMAIL FROM:<>\r\nRCPT TO:<a@mox.example>\r\nRCPT TO:<b@mox.example>\r\n",
        &["250", "250", "250", "452 4.5.3"],
    );
}

#[test]
fn at_least_100_recipients_by_default() {
    let mut h = ehloed(config());
    h.expect("MAIL FROM:<remote@example.org>\r\n", &["250"]);
    let mut cmds = String::new();
    for i in 0..100 {
        cmds.push_str(&format!("RCPT TO:<r{i}@mox.example>\r\n"));
    }
    h.send_str(&cmds);
    let r = h.replies();
    assert_eq!(r.len(), 100);
    assert!(r.iter().all(|l| l.starts_with("250 2.1.5")));
}

#[test]
fn mail_parameter_rules() {
    let mut c = config();
    c.max_message_size = 1000;
    let mut h = ehloed(c);
    h.expect("MAIL FROM:<a@example.org> SIZE=1001\r\n", &["552 5.3.4"]);
    h.expect("MAIL FROM:<a@example.org> FOO=BAR\r\n", &["555"]);
    h.expect("MAIL FROM:<a@example.org> REQUIRETLS\r\n", &["530 5.7.10"]);
    h.expect("MAIL FROM:<δοκιμή@example.org>\r\n", &["553 5.6.7"]);
    h.expect("MAIL FROM:<a@example.org> HOLDFOR=10\r\n", &["555"]);
    h.expect("MAIL FROM:<δοκιμή@example.org> SMTPUTF8\r\n", &["250"]);
    h.expect("RCPT TO:<mjl@[127.0.0.1]>\r\n", &["550 5.1.1"]);
    h.expect("RCPT TO:<дмитрий@mox.example>\r\n", &["250"]);
}

#[test]
fn message_too_large_after_data() {
    let mut c = config();
    c.max_message_size = 100;
    let mut h = ehloed(c);
    h.expect(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\n",
        &["250", "250", "354"],
    );
    let body = format!("Subject: x\r\n\r\n{}\r\n.\r\n", "y".repeat(200));
    h.expect(&body, &["552 5.3.4"]);
    assert!(h.stored().is_empty());
}

#[test]
fn header_and_body_required() {
    let mut h = ehloed(config());
    h.expect(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\nno header separation\r\n.\r\n",
        &["250", "250", "354", "554 5.6.0"],
    );
}

/// mox refuses a message with more than 100 Received fields as a mail loop.
#[test]
fn received_loop_is_refused_on_port_25() {
    let with = |n: usize| {
        let mut m = String::new();
        for i in 0..n {
            m.push_str(&format!(
                "Received: from h{i}.example by x.example; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
            ));
        }
        m.push_str(MSG);
        m
    };
    let mut h = ehloed(config());
    let txn = "MAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\n";
    h.expect(
        &format!("{txn}{}.\r\n", with(101)),
        &[
            "250",
            "250",
            "354",
            "550 5.4.6 loop detected, more than 100 Received headers",
        ],
    );
    assert!(h.stored().is_empty());
    h.expect(
        &format!("{txn}{}.\r\n", with(100)),
        &["250", "250", "354", "250"],
    );
    assert_eq!(h.stored().len(), 1);
    // The limit is configurable.
    let mut c = config();
    c.max_received_headers = 3;
    let mut h = ehloed(c);
    h.expect(
        &format!("{txn}{}.\r\n", with(4)),
        &[
            "250",
            "250",
            "354",
            "550 5.4.6 loop detected, more than 3 Received headers",
        ],
    );
    // Submission does not count them (as mox).
    let mut h = authed();
    let sub = "MAIL FROM:<mjl@mox.example>\r\nRCPT TO:<r@example.org>\r\nDATA\r\n";
    let mut m = String::new();
    for _ in 0..101 {
        m.push_str("Received: from a by b; Thu, 1 Jan 2026 00:00:00 +0000\r\n");
    }
    h.expect(
        &format!("{sub}{m}{SUBMIT}.\r\n"),
        &["250", "250", "354", "250"],
    );
}

/// A message that cannot be parsed (rules in `crate::message`) is refused with the reason,
/// on port 25 and on submission.
#[test]
fn malformed_messages_are_refused() {
    let bad = [
        (
            "Subject: x\r\nnot a header line\r\n\r\nbody\r\n",
            "554 5.6.0 malformed message: header line ",
        ),
        (
            "Subject: x\r\nContent-Type: multipart/mixed\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
            "554 5.6.0 malformed message: multipart part without boundary parameter",
        ),
        (
            "Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\nplain text\r\n",
            "554 5.6.0 malformed message: multipart part without any part delimiter",
        ),
    ];
    for (msg, want) in bad {
        let mut h = ehloed(config());
        h.expect(
            &format!(
                "MAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\n{msg}.\r\n"
            ),
            &["250", "250", "354", want],
        );
        assert!(h.stored().is_empty());
        let mut h = authed();
        h.expect(
            &format!("MAIL FROM:<mjl@mox.example>\r\nRCPT TO:<r@example.org>\r\nDATA\r\nFrom: <mjl@mox.example>\r\n{msg}.\r\n"),
            &["250", "250", "354", want],
        );
        assert!(h.stored().is_empty());
    }
}

/// Port 25 needs a domain in MAIL FROM (mox: "domain name required"); submission leaves
/// the address to the sender policy.
#[test]
fn ip_literal_mail_from() {
    let mut h = ehloed(config());
    h.expect(
        "MAIL FROM:<x@[1.2.3.4]>\r\n",
        &["550 5.7.0 domain name required"],
    );
    h.expect(
        "MAIL FROM:<x@[IPv6:2001:db8::1]>\r\n",
        &["550 5.7.0 domain name required"],
    );
    h.expect("MAIL FROM:<x@example.org>\r\n", &["250"]);
    let mut h = authed();
    h.expect(
        "MAIL FROM:<mjl@[1.2.3.4]>\r\n",
        &["550 5.7.1 must match authenticated user"],
    );
}

#[test]
fn too_many_errors_close() {
    let mut h = ehloed(config());
    for _ in 0..10 {
        h.send_str("RCPT TO:<x@mox.example>\r\n");
    }
    assert_eq!(h.replies().len(), 10);
    h.expect(
        "RCPT TO:<x@mox.example>\r\n",
        &["503", "550 5.1.0 too many failures"],
    );
    assert!(h.closed);
}

/// Issue 12: BDAT ends in the same per-recipient outcomes as DATA: a partial delivery is
/// 250, all recipients failing is one reply.
#[test]
fn bdat_store_outcomes() {
    let cases = [
        (
            StoreOutcome::Partial {
                failed: vec![RecipientFailure::unknown_user("x@mox.example")],
            },
            "250 2.0.0 it is done",
        ),
        (
            StoreOutcome::Failed(vec![
                RecipientFailure::unknown_user("x@mox.example"),
                RecipientFailure::mailbox_full("mjl@mox.example"),
            ]),
            "554 5.3.0 550 5.1.1 <x@mox.example>: no such user|",
        ),
    ];
    for (outcome, want) in cases {
        let mut w = World::new();
        w.store_result = outcome;
        let mut c = config();
        c.unknown_recipient_delay = Duration::ZERO;
        let mut h = H::with_world(c, w);
        h.replies();
        h.expect(
            "EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nRCPT TO:<x@mox.example>\r\n",
            &["250", "250", "250", "250"],
        );
        let msg = "From: <a@example.org>\r\n\r\nbody\r\n";
        h.expect(&format!("BDAT {} LAST\r\n{msg}", msg.len()), &[want]);
        h.expect("NOOP\r\n", &["250 2.0.0"]);
    }
}

#[test]
fn bdat_chunks() {
    let mut h = ehloed(config());
    h.expect(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\n",
        &["250", "250"],
    );
    let part1 = "From: <a@example.org>\r\n";
    let part2 = "\r\nbody\r\n";
    h.expect(&format!("BDAT {}\r\n{part1}", part1.len()), &["250 2.0.0"]);
    h.expect(
        &format!("BDAT {} LAST\r\n{part2}", part2.len()),
        &["250 2.0.0 it is done"],
    );
    let stored = &h.stored()[0];
    assert!(stored
        .message
        .to_vec()
        .ends_with(format!("{part1}{part2}").as_bytes()));
    // BDAT without a transaction: the chunk is read and discarded, then 503.
    h.expect("BDAT 5 LAST\r\nhello", &["503 5.5.1"]);
    h.expect("NOOP\r\n", &["250"]);
    // BDAT 0 LAST completes at once.
    h.expect(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\n",
        &["250", "250"],
    );
    h.expect(
        &format!(
            "BDAT {}\r\n{part1}{part2}BDAT 0 LAST\r\n",
            part1.len() + part2.len()
        ),
        &["250", "250 2.0.0 it is done"],
    );
}

/// Issue 15: a pipelined recipient over the limit counted as a failed command; ten of them
/// ended the session with 550 and the accepted recipients were lost. Over-limit recipients
/// get 452 and do not count: the transaction goes on and is delivered.
#[test]
fn recipients_over_the_limit_are_not_errors() {
    let mut c = config();
    c.max_recipients = 2;
    c.max_errors = 3;
    let mut h = ehloed(c);
    let mut cmds = String::from("MAIL FROM:<remote@example.org>\r\n");
    for i in 0..12 {
        cmds.push_str(&format!("RCPT TO:<r{i}@mox.example>\r\n"));
    }
    h.send_str(&cmds);
    let r = h.replies();
    assert_eq!(r.len(), 13, "{r:?}");
    assert!(r[1..3].iter().all(|l| l.starts_with("250 2.1.5")), "{r:?}");
    assert!(r[3..].iter().all(|l| l.starts_with("452 4.5.3")), "{r:?}");
    assert!(!h.closed);
    h.expect("DATA\r\n", &["354"]);
    h.expect(&format!("{MSG}.\r\n"), &["250"]);
}

/// Issue 15: the DATA timeout was a total deadline, so a client sending steadily but
/// slowly was cut off. It is per read (RFC 5321 4.5.3.2.6, as Postfix): data arriving
/// within `data_timeout` of the last data keeps the transaction going, however long.
#[test]
fn data_timeout_is_per_read() {
    let mut c = config();
    c.data_timeout = Duration::from_secs(10);
    let mut h = ehloed(c);
    h.expect("MAIL FROM:<remote@example.org>\r\n", &["250"]);
    h.expect("RCPT TO:<mjl@mox.example>\r\n", &["250"]);
    h.expect("DATA\r\n", &["354"]);
    h.send_str("Subject: slow\r\n\r\n");
    for i in 0..20 {
        // 8 s of silence, then a line: 160 s in all, never 10 s idle.
        h.clock.advance(Duration::from_secs(8));
        let now = h.clock.now();
        h.s.handle(now, Input::Timeout).unwrap();
        h.send_str(&format!("line {i}\r\n"));
        assert!(!h.closed, "cut off after {} s", (i + 1) * 8);
    }
    h.expect(".\r\n", &["250"]);
    // Idle for longer than the timeout: 421.
    h.expect("MAIL FROM:<remote@example.org>\r\n", &["250"]);
    h.expect("RCPT TO:<mjl@mox.example>\r\n", &["250"]);
    h.expect("DATA\r\n", &["354"]);
    h.send_str("Subject: stalled\r\n");
    h.clock.advance(Duration::from_secs(11));
    h.timeout();
    assert_eq!(h.replies(), vec!["421 4.4.2 timeout, closing".to_string()]);
}

#[test]
fn command_timeout_closes_with_421() {
    let mut h = ehloed(config());
    h.timeout();
    assert_eq!(h.replies(), vec!["421 4.4.2 timeout, closing".to_string()]);
    assert!(h.closed);
}

#[test]
fn early_timeout_is_a_no_op() {
    let mut h = ehloed(config());
    let now = h.clock.now();
    h.s.handle(now, Input::Timeout).unwrap();
    h.drain();
    assert!(!h.closed);
    h.expect("NOOP\r\n", &["250"]);
}

#[test]
fn peer_closing_mid_data_stores_nothing() {
    let mut h = ehloed(config());
    h.expect(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\n",
        &["250", "250", "354"],
    );
    h.send_str("Subject: half\r\n\r\nhalf a message");
    let now = h.clock.now();
    h.s.handle(now, Input::PeerClosed).unwrap();
    h.drain();
    assert!(h.closed);
    assert!(h.stored().is_empty());
}

#[test]
fn shutdown_answers_421() {
    let mut h = ehloed(config());
    let now = h.clock.now();
    h.s.handle(now, Input::Shutdown).unwrap();
    h.drain();
    assert_eq!(h.replies(), vec!["421 4.3.2 shutting down".to_string()]);
    assert!(h.closed);
}

// ---- Submission ----

fn authed() -> H {
    let mut h = ehloed(submission_config());
    let plain = base64::engine::general_purpose::STANDARD.encode(b"\0mjl@mox.example\0testtest");
    h.expect(&format!("AUTH PLAIN {plain}\r\n"), &["235 2.7.0"]);
    h
}

const SUBMIT: &str = "From: <mjl@mox.example>\r\nTo: <remote@example.org>\r\nSubject: test\r\nMessage-Id: <test@mox.example>\r\n\r\ntest email\r\n";

#[test]
fn submission_requires_auth() {
    let mut h = ehloed(submission_config());
    h.expect("MAIL FROM:<mjl@mox.example>\r\n", &["530 5.7.0"]);
}

#[test]
fn auth_on_port_25_is_refused() {
    let mut h = ehloed(config());
    h.expect(
        "AUTH PLAIN AG1qbEBtb3guZXhhbXBsZQB0ZXN0dGVzdA==\r\n",
        &["503 5.5.1"],
    );
}

#[test]
fn auth_requires_tls_when_configured() {
    let mut c = submission_config();
    c.require_tls_for_auth = true;
    let mut h = greeted(c);
    h.send_str("EHLO c.example\r\n");
    let r = h.replies();
    assert!(!r[0].contains("AUTH"), "AUTH announced without TLS: {r:?}");
    h.expect(
        "AUTH PLAIN AG1qbEBtb3guZXhhbXBsZQB0ZXN0dGVzdA==\r\n",
        &["538 5.7.11"],
    );
}

#[test]
fn auth_plain_and_login() {
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut h = ehloed(submission_config());
    h.expect(
        &format!("AUTH PLAIN {}\r\n", b64(b"\0mjl@mox.example\0wrong")),
        &["535 5.7.8"],
    );
    h.expect(
        &format!("AUTH PLAIN {}\r\n", b64(b"\0off@mox.example\0testtest")),
        &["535 5.7.8 login disabled: account closed, ask the admin"],
    );
    h.expect("AUTH PLAIN\r\n", &["334"]);
    h.expect(
        &format!("{}\r\n", b64(b"\0mjl@mox.example\0testtest")),
        &["235 2.7.0"],
    );
    h.expect("AUTH PLAIN\r\n", &["503 5.5.1"]);

    let mut h = ehloed(submission_config());
    h.expect("AUTH LOGIN\r\n", &["334"]);
    h.expect(&format!("{}\r\n", b64(b"mjl@mox.example")), &["334"]);
    h.expect(&format!("{}\r\n", b64(b"testtest")), &["235 2.7.0"]);

    let mut h = ehloed(submission_config());
    h.expect("AUTH LOGIN\r\n", &["334"]);
    h.expect("*\r\n", &["501 5.0.0"]);
    h.expect("AUTH PLAIN !!!\r\n", &["501 5.5.2"]);
    h.expect("AUTH BOGUS\r\n", &["504 5.5.4"]);
}

#[test]
fn auth_failures_close_after_limit_and_are_delayed() {
    let mut c = submission_config();
    c.auth_failure_delay = Duration::from_secs(1);
    let mut h = ehloed(c);
    let bad = base64::engine::general_purpose::STANDARD.encode(b"\0mjl@mox.example\0bad");
    for i in 1..=3u32 {
        h.send_str(&format!("AUTH PLAIN {bad}\r\n"));
        assert_eq!(
            h.replies(),
            Vec::<String>::new(),
            "failure {i} answered without delay"
        );
        h.timeout();
        let r = h.replies();
        assert!(r[0].starts_with("535 5.7.8"), "{r:?}");
    }
    assert!(h.closed);
    assert!(
        h.events
            .iter()
            .filter(|e| matches!(e, Event::AuthFailed { .. }))
            .count()
            == 3
    );
}

#[test]
fn auth_cram_md5_and_scram_without_tls() {
    use crate::sasl::{ClientAuth, Mechanism};
    for mech in [
        Mechanism::CramMd5,
        Mechanism::ScramSha1,
        Mechanism::ScramSha256,
    ] {
        for (pass, ok) in [("testtest", true), ("wrong", false)] {
            let mut h = ehloed(submission_config());
            let mut rng = Rng::new(1);
            let mut client = ClientAuth::new(mech, "mjl@mox.example", pass, &mut rng, None);
            let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
            match client.initial_response() {
                Some(ir) => h.send_str(&format!("AUTH {} {}\r\n", mech.name(), b64(&ir))),
                None => h.send_str(&format!("AUTH {}\r\n", mech.name())),
            }
            let mut last = String::new();
            for _ in 0..5 {
                let r = h.replies();
                last = r.last().cloned().unwrap_or_default();
                let Some(challenge) = last.strip_prefix("334 ") else {
                    break;
                };
                let challenge = base64::engine::general_purpose::STANDARD
                    .decode(challenge)
                    .unwrap();
                let resp = client.respond(&challenge).unwrap_or_default();
                h.send_str(&format!("{}\r\n", b64(&resp)));
            }
            if ok {
                assert!(last.starts_with("235 2.7.0"), "{mech:?}: {last}");
                assert_eq!(h.s.account(), Some("mjl"));
            } else {
                assert!(last.starts_with("535 5.7.8"), "{mech:?}: {last}");
                assert_eq!(h.s.account(), None);
            }
        }
    }
}

#[test]
fn submission_message_rules() {
    let mut h = authed();
    // Sender must be the account's own.
    h.expect("MAIL FROM:<other@mox.example>\r\n", &["550 5.7.1"]);
    // From header must be the account's own.
    h.expect(
        "MAIL FROM:<mjl@mox.example>\r\nRCPT TO:<remote@example.org>\r\nDATA\r\nFrom: <other@mox.example>\r\n\r\nx\r\n.\r\n",
        &["250", "250", "354", "550 5.7.1"],
    );
    // No Return-Path.
    h.expect(
        "MAIL FROM:<mjl@mox.example>\r\nRCPT TO:<remote@example.org>\r\nDATA\r\nReturn-Path: <x@y>\r\nFrom: <mjl@mox.example>\r\n\r\nx\r\n.\r\n",
        &["250", "250", "354", "550 5.6.0"],
    );
    // Message-Id and Date added when missing.
    h.expect(
        "MAIL FROM:<mjl@mox.example>\r\nRCPT TO:<remote@example.org>\r\nDATA\r\nFrom: <mjl@mox.example>\r\n\r\nx\r\n.\r\n",
        &["250", "250", "354", "250 2.0.0"],
    );
    let text = String::from_utf8(h.stored()[0].message.to_vec()).unwrap();
    assert!(text.contains("\r\nMessage-Id: <"), "{text}");
    assert!(text.contains("\r\nDate: "), "{text}");
    assert!(text.contains("with ESMTPA"), "{text}");
    assert_eq!(h.stored()[0].account.as_deref(), Some("mjl"));
    // Kept as is when present.
    h.expect(
        &format!(
            "MAIL FROM:<mjl@mox.example>\r\nRCPT TO:<remote@example.org>\r\nDATA\r\n{SUBMIT}.\r\n"
        ),
        &["250", "250", "354", "250"],
    );
    let text = String::from_utf8(h.stored()[1].message.to_vec()).unwrap();
    assert_eq!(text.matches("Message-Id:").count(), 1);
}

#[test]
fn tls_required_header_and_requiretls() {
    // Without TLS REQUIRETLS is refused, so only the header part can be checked here; the
    // REQUIRETLS parameter is covered in the STARTTLS tests.
    let mut h = authed();
    let with_header = "From: <mjl@mox.example>\r\nTLS-Required: No\r\n\r\nx\r\n";
    let bogus = "From: <mjl@mox.example>\r\nTLS-Required: No\r\nTLS-Required: bogus\r\n\r\nx\r\n";
    for m in [with_header, bogus, SUBMIT] {
        h.expect(
            &format!("MAIL FROM:<mjl@mox.example>\r\nRCPT TO:<r@example.org>\r\nDATA\r\n{m}.\r\n"),
            &["250", "250", "354", "250"],
        );
    }
    let got: Vec<Option<bool>> = h.stored().iter().map(|t| t.requiretls).collect();
    assert_eq!(got, vec![Some(false), None, None]);
}

#[test]
fn future_release() {
    let now = TestClock::new().now();
    let day = 86_400i64;
    let cases: Vec<(String, &str)> = vec![
        (" HOLDFOR=1".into(), "250"),
        (
            format!(" HOLDUNTIL={}", UnixTime(now.wall.0 + 60).rfc3339()),
            "250",
        ),
        (" HOLDFOR=0".into(), "501"),
        (format!(" HOLDFOR={}", 60 * day + 60), "554"),
        (
            format!(" HOLDUNTIL={}", UnixTime(now.wall.0 - 60).rfc3339()),
            "554",
        ),
        (
            format!(
                " HOLDUNTIL={}",
                UnixTime(now.wall.0 + 60 * day + 60).rfc3339()
            ),
            "554",
        ),
        (" HOLDUNTIL=2024-02-10T17:28:00+00:00".into(), "501"),
        (" HOLDUNTIL=24-02-10T17:28:00Z".into(), "501"),
        (" HOLDFOR=1 HOLDFOR=1".into(), "501"),
        (
            format!(
                " HOLDFOR=1 HOLDUNTIL={}",
                UnixTime(now.wall.0 + 3600).rfc3339()
            ),
            "501",
        ),
    ];
    for (params, want) in cases {
        let mut h = authed();
        h.expect(&format!("MAIL FROM:<mjl@mox.example>{params}\r\n"), &[want]);
    }
    let mut h = authed();
    h.expect(
        &format!("MAIL FROM:<mjl@mox.example> HOLDFOR=3600\r\nRCPT TO:<r@example.org>\r\nDATA\r\n{SUBMIT}.\r\n"),
        &["250", "250", "354", "250"],
    );
    assert_eq!(
        h.stored()[0].hold_until,
        Some(UnixTime(h.clock.now().wall.0 + 3600))
    );
}

#[test]
fn futurerelease_announced_on_submission() {
    let mut h = greeted(submission_config());
    h.send_str("EHLO c.example\r\n");
    let r = h.replies();
    assert!(r[0].contains("|FUTURERELEASE 5184000 "), "{r:?}");
    assert!(
        r[0].contains("|AUTH SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5 PLAIN LOGIN|"),
        "{r:?}"
    );
}

// ---- TLS ----

fn tls_config() -> ServerConfig {
    let mut c = submission_config();
    c.require_tls_for_auth = true;
    c.tls = Some(testkit::server_tls());
    c
}

/// Runs STARTTLS from the client side and completes the handshake.
fn starttls(h: &mut H) {
    h.expect("STARTTLS\r\n", &["220 2.0.0"]);
    h.client_tls =
        Some(crate::tls::TlsLayer::client(testkit::client_tls(), "mox.example").unwrap());
    // Handshake: move bytes until both sides are done.
    for _ in 0..10 {
        h.send(b"");
        let mut out = Vec::new();
        if let Some(t) = h.client_tls.as_mut() {
            t.take_ciphertext(&mut out);
        }
        if out.is_empty() && !h.client_tls.as_ref().unwrap().is_handshaking() {
            break;
        }
        let now = h.clock.now();
        let n = h.s.handle(now, Input::Received(&out)).unwrap();
        assert_eq!(n, out.len());
        h.drain();
    }
    assert!(
        !h.client_tls.as_ref().unwrap().is_handshaking(),
        "handshake did not complete"
    );
    assert!(h.s.is_tls());
}

#[test]
fn starttls_then_auth_with_channel_binding() {
    use crate::sasl::{ClientAuth, Mechanism};
    let mut h = greeted(tls_config());
    h.send_str("EHLO c.example\r\n");
    let caps = h.replies();
    assert!(caps[0].contains("|STARTTLS|"), "{caps:?}");
    starttls(&mut h);
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::TlsEstablished(_))));
    // State was reset: EHLO is needed again.
    h.expect("MAIL FROM:<mjl@mox.example>\r\n", &["503 5.5.1"]);
    h.send_str("EHLO c.example\r\n");
    let caps = h.replies();
    assert!(caps[0].contains("|REQUIRETLS|"), "{caps:?}");
    assert!(
        caps[0].contains("AUTH SCRAM-SHA-256-PLUS SCRAM-SHA-1-PLUS SCRAM-SHA-256"),
        "{caps:?}"
    );
    assert!(!caps[0].contains("STARTTLS"), "{caps:?}");
    h.expect("STARTTLS\r\n", &["503 5.5.1"]);

    let cb = h.client_tls.as_ref().unwrap().channel_binding();
    assert!(cb.is_some());
    let mut rng = Rng::new(3);
    let mut client = ClientAuth::new(
        Mechanism::ScramSha256Plus,
        "mjl@mox.example",
        "testtest",
        &mut rng,
        cb,
    );
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let ir = client.initial_response().unwrap();
    h.send_str(&format!("AUTH SCRAM-SHA-256-PLUS {}\r\n", b64(&ir)));
    let mut last = String::new();
    for _ in 0..4 {
        last = h.replies().pop().unwrap();
        let Some(c) = last.strip_prefix("334 ") else {
            break;
        };
        let c = base64::engine::general_purpose::STANDARD.decode(c).unwrap();
        let resp = client.respond(&c).unwrap_or_default();
        h.send_str(&format!("{}\r\n", b64(&resp)));
    }
    assert!(last.starts_with("235 2.7.0"), "{last}");
    client.finish().unwrap();
    // REQUIRETLS is accepted inside TLS and recorded.
    h.expect(
        &format!("MAIL FROM:<mjl@mox.example> REQUIRETLS\r\nRCPT TO:<r@example.org>\r\nDATA\r\n{SUBMIT}.\r\n"),
        &["250", "250", "354", "250"],
    );
    let t = &h.stored()[0];
    assert_eq!(t.requiretls, Some(true));
    assert!(t.tls.is_some());
    assert!(String::from_utf8_lossy(&t.message.to_vec()).contains("with ESMTPSA"));
}

/// Plaintext pipelined after STARTTLS must never be executed inside TLS (CVE-2011-0411
/// style command injection): the session ends instead. Regression: the session was
/// dropped without a reply (a bare `SessionError::ProtocolViolation`); now the client is
/// told why before the close.
#[test]
fn commands_pipelined_after_starttls_are_not_executed() {
    let mut h = greeted(tls_config());
    h.expect("EHLO c.example\r\n", &["250"]);
    h.expect(
        "STARTTLS\r\nMAIL FROM:<mjl@mox.example>\r\n",
        &["500 5.5.0 data pipelined after STARTTLS"],
    );
    assert!(h.closed);
    assert!(!h.s.is_tls());
    assert!(h.stored().is_empty());
}

/// Every close for a protocol violation is preceded by a reply saying why (the
/// STARTTLS case is above; too many failures in `too_many_errors_close`, auth failures in
/// `auth_failures_close_after_limit_and_are_delayed`).
#[test]
fn protocol_violation_closes_are_answered() {
    // A long line.
    let mut h = ehloed(config());
    h.expect(
        &format!("NOOP {}\r\n", "x".repeat(5000)),
        &["500 5.5.2 line too long"],
    );
    assert!(h.closed);
    // Not SMTP at all.
    let mut h = greeted(config());
    h.expect(
        "GET / HTTP/1.1\r\n",
        &["500 5.5.2 please try again speaking smtp"],
    );
    assert!(h.closed);
    // Idle too long.
    let mut h = ehloed(config());
    h.timeout();
    assert_eq!(h.replies(), vec!["421 4.4.2 timeout, closing".to_string()]);
    assert!(h.closed);
    // The driver cannot keep more input (regression: it dropped the connection silently).
    let mut h = ehloed(config());
    h.hold_effects = true;
    h.send_str("MAIL FROM:<a@example.org>\r\n");
    let now = h.clock.now();
    h.s.handle(now, Input::Overflow).unwrap();
    h.drain();
    assert_eq!(
        h.replies(),
        vec!["421 4.7.0 too much input ahead of our replies, closing".to_string()]
    );
    assert!(h.closed);
}

/// A peer that sends garbage instead of a TLS handshake gets a TLS alert before the close.
/// Regression: the session returned an error and the driver dropped the connection
/// without sending the alert rustls had queued.
#[test]
fn tls_garbage_is_answered_with_an_alert() {
    let mut h = greeted(tls_config());
    h.expect("EHLO c.example\r\n", &["250"]);
    h.expect("STARTTLS\r\n", &["220 2.0.0"]);
    // A handshake record whose message is nonsense.
    h.send(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00");
    assert!(h.closed);
    assert_eq!(
        h.received.first(),
        Some(&0x15),
        "no alert: {:?}",
        h.received
    );
    assert!(h
        .events
        .iter()
        .any(|e| matches!(e, Event::Closing(w) if w.starts_with("tls error"))));
}

fn starttls_port25() -> ServerConfig {
    let mut c = config();
    c.tls = Some(testkit::server_tls());
    c.require_tls_for_delivery = true;
    c
}

/// A listener with `require_starttls`: MAIL (and so RCPT/DATA) only after STARTTLS, as
/// mox's RequireSTARTTLS.
#[test]
fn port25_require_starttls() {
    let mut h = ehloed(starttls_port25());
    h.expect(
        "MAIL FROM:<remote@example.org>\r\n",
        &["530 5.7.0 STARTTLS required for mail delivery"],
    );
    starttls(&mut h);
    h.expect(
        &format!("EHLO c.example\r\nMAIL FROM:<remote@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\n{MSG}.\r\n"),
        &["250", "250", "250", "354", "250"],
    );
    assert_eq!(h.stored().len(), 1);
}

/// Submission requires TLS before MAIL (and AUTH) by default in the root wiring; with it
/// set, MAIL before STARTTLS is refused with the reason.
#[test]
fn submission_require_starttls_for_mail() {
    let mut c = tls_config();
    c.require_tls_for_delivery = true;
    let mut h = ehloed(c);
    h.expect(
        "MAIL FROM:<mjl@mox.example>\r\n",
        &["530 5.7.0 STARTTLS required for mail delivery"],
    );
    h.expect(
        "AUTH PLAIN AG1qbEBtb3guZXhhbXBsZQB0ZXN0dGVzdA==\r\n",
        &["538 5.7.11"],
    );
}

#[test]
fn implicit_tls_greets_after_handshake() {
    let mut c = tls_config();
    c.implicit_tls = true;
    // The server speaks first only after the handshake: nothing to drain before the
    // client side's TLS is set.
    let mut h = H::new(c);
    h.client_tls =
        Some(crate::tls::TlsLayer::client(testkit::client_tls(), "mox.example").unwrap());
    h.drain();
    for _ in 0..10 {
        h.send(b"");
    }
    assert_eq!(h.replies(), vec!["220 mox.example ESMTP rmox".to_string()]);
    h.send_str("EHLO c.example\r\n");
    assert!(h.replies()[0].contains("AUTH SCRAM-SHA-256-PLUS"));
}

// ---- Properties ----

fn transcript(chunks: &[usize]) -> Vec<String> {
    transcript_with(config(), chunks).0
}

/// The replies and stored messages, and how many spool effects there were.
fn transcript_with(c: ServerConfig, chunks: &[usize]) -> (Vec<String>, usize) {
    let body = "a line of the body to make the message longer\r\n".repeat(8);
    let script = format!(
        "EHLO c.example\r\nMAIL FROM:<remote@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nRCPT TO:<unknown@mox.example>\r\nDATA\r\n{MSG}{body}..dot\r\n.\r\nMAIL FROM:<remote@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nBDAT {}\r\n{MSG}BDAT {} LAST\r\n{body}BDAT 3\r\nabcRSET\r\nNOOP\r\nQUIT\r\n",
        MSG.len(),
        body.len(),
    );
    let bytes = script.as_bytes();
    let mut h = H::new(c);
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let n = chunks
            .get(i)
            .copied()
            .unwrap_or(bytes.len())
            .max(1)
            .min(bytes.len() - pos);
        h.send(&bytes[pos..pos + n]);
        pos += n;
        i += 1;
    }
    let mut r = h.replies();
    r.push(format!("stored={}", h.stored().len()));
    for t in h.stored() {
        r.push(String::from_utf8_lossy(&t.message.to_vec()[t.message.len() - 30..]).to_string());
        r.push(format!("size={}", t.message.len()));
    }
    r.push(format!("spools left={}", h.world.spools.len()));
    (r, h.world.spool_log.len())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any split of the input bytes gives the same replies and the same stored message.
    #[test]
    fn chunking_invariance(chunks in proptest::collection::vec(1usize..40, 0..200)) {
        let whole = transcript(&[]);
        prop_assert_eq!(transcript(&chunks), whole);
    }

    /// Spooling changes nothing the client or the store sees: any threshold the header
    /// fits under, with any split of the input, gives the transcript of a session that
    /// holds everything in memory.
    #[test]
    fn spooling_is_invisible(threshold in 90usize..600, chunks in proptest::collection::vec(1usize..80, 0..100)) {
        let whole = transcript(&[]);
        let mut c = config();
        c.spool_threshold = threshold;
        let (got, spooled) = transcript_with(c, &chunks);
        prop_assert_eq!(got, whole);
        prop_assert!(threshold > 400 || spooled > 0);
    }

    /// Arbitrary bytes never panic the session, in any phase.
    #[test]
    fn arbitrary_input_never_panics(prefix in 0usize..4, junk in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut h = greeted(config());
        let prefixes = ["", "EHLO x.example\r\n", "EHLO x.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n", "EHLO x.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 100\r\n"];
        h.send_str(prefixes[prefix]);
        h.send(&junk);
        let _ = h.replies();
    }
}

// ---- Incoming checks with DNS (static zone) ----

const ZONE: &str = "$ORIGIN example.\n\
$TTL 300\n\
client IN A 192.0.2.10\n\
good IN MX 10 mx.good.example.\n\
good IN TXT \"v=spf1 ip4:192.0.2.10 -all\"\n\
mx.good IN A 192.0.2.20\n\
nospf IN MX 10 mx.good.example.\n\
nullmx IN MX 0 .\n\
implicit IN A 192.0.2.30\n\
_dmarc.good IN TXT \"v=DMARC1; p=reject\"\n\
_dmarc.trial IN TXT \"v=DMARC1; p=reject; t=y\"\n\
_dmarc.psd IN TXT \"v=DMARC1; p=none; sp=reject; np=quarantine; psd=y\"\n\
shop.psd IN A 192.0.2.40\n\
10.2.0.192.in-addr.arpa. IN PTR client.example.\n\
;@tempfail broken\n";

fn checked() -> H {
    let mut c = config();
    c.checks = Some(IncomingChecks::default());
    let mut w = World::new();
    w.zone = crate::dns::StaticZone::parse(ZONE).unwrap();
    let mut h = H::with_world(c, w);
    h.replies();
    h
}

#[test]
fn ehlo_must_resolve() {
    let mut h = checked();
    h.expect("EHLO nonexistent.example\r\n", &["250"]);
    h.expect("MAIL FROM:<a@good.example>\r\n", &["550 5.5.0"]);
    h.expect("EHLO client.example\r\n", &["250"]);
    h.expect("MAIL FROM:<a@good.example>\r\n", &["250"]);
}

#[test]
fn mail_from_domain_must_accept_mail() {
    let mut h = checked();
    h.expect("EHLO client.example\r\n", &["250"]);
    h.expect("MAIL FROM:<a@nullmx.example>\r\n", &["550 5.7.27"]);
    h.expect("MAIL FROM:<a@nxdomain.example>\r\n", &["550 5.7.27"]);
    h.expect("MAIL FROM:<a@broken.example>\r\n", &["451 4.4.0"]);
    h.expect("MAIL FROM:<a@implicit.example>\r\n", &["250"]);
}

#[test]
fn multiple_recipients_need_spf_pass() {
    let mut h = checked();
    h.expect("EHLO client.example\r\n", &["250"]);
    h.expect(
        "MAIL FROM:<a@nospf.example>\r\nRCPT TO:<x@mox.example>\r\nRCPT TO:<y@mox.example>\r\n",
        &["250", "250", "452 4.5.3"],
    );
    h.expect("RSET\r\nMAIL FROM:<a@good.example>\r\nRCPT TO:<x@mox.example>\r\nRCPT TO:<y@mox.example>\r\n", &["250", "250", "250", "250"]);
}

#[test]
fn authentication_results_after_data() {
    let mut h = checked();
    h.expect(
        "EHLO client.example\r\nMAIL FROM:<a@good.example>\r\nRCPT TO:<x@mox.example>\r\nDATA\r\nFrom: <a@good.example>\r\nSubject: hi\r\n\r\nbody\r\n.\r\n",
        &["250", "250", "250", "354", "250"],
    );
    let t = &h.stored()[0];
    let text = t.message.to_vec();
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("Authentication-Results: mox.example;\r\n\tiprev=pass policy.iprev=192.0.2.10;\r\n\tdkim=none;\r\n\tspf=pass smtp.mailfrom=good.example;\r\n\tdmarc=pass"), "{text}");
    assert!(text.contains("\r\nReceived-SPF: pass"), "{text}");
    let auth = t.auth.as_ref().unwrap();
    assert!(!auth.dmarc.as_ref().unwrap().dkim_aligned);
    assert!(!auth.dmarc.as_ref().unwrap().is_reject());
}

#[test]
fn dmarc_reject_policy_is_reported_for_unaligned_mail() {
    let mut h = checked();
    // SPF for nospf.example is none, From is good.example with p=reject: DMARC fails.
    h.expect(
        "EHLO client.example\r\nMAIL FROM:<a@nospf.example>\r\nRCPT TO:<x@mox.example>\r\nDATA\r\nFrom: <a@good.example>\r\n\r\nbody\r\n.\r\n",
        &["250", "250", "250", "354", "250"],
    );
    let auth = h.stored()[0].auth.as_ref().unwrap();
    assert!(auth.dmarc.as_ref().unwrap().is_reject(), "{:?}", auth.dmarc);
}

/// RFC 9989 through the session: the policy found by the tree walk above the From domain
/// (a PSD record), np for a From domain that does not exist, sp for one that does, and t=y
/// making p=reject a quarantine.
#[test]
fn dmarc_tree_walk_np_and_testing_in_the_session() {
    use crate::dmarc::{DmarcStatus, Policy};
    let cases = [
        (
            "a@gone.shop.psd.example",
            DmarcStatus::Fail,
            Policy::Quarantine,
            "psd.example",
            false,
        ),
        (
            "a@shop.psd.example",
            DmarcStatus::Fail,
            Policy::Reject,
            "psd.example",
            false,
        ),
        (
            "a@trial.example",
            DmarcStatus::Fail,
            Policy::Quarantine,
            "trial.example",
            true,
        ),
        (
            "a@sub.trial.example",
            DmarcStatus::Fail,
            Policy::Quarantine,
            "trial.example",
            true,
        ),
    ];
    for (from, status, disposition, policy_domain, testing) in cases {
        let mut h = checked();
        h.expect(
            &format!("EHLO client.example\r\nMAIL FROM:<a@nospf.example>\r\nRCPT TO:<x@mox.example>\r\nDATA\r\nFrom: <{from}>\r\n\r\nbody\r\n.\r\n"),
            &["250", "250", "250", "354", "250"],
        );
        let d = h.stored()[0].auth.as_ref().unwrap().dmarc.clone().unwrap();
        assert_eq!(
            (d.status, d.disposition, d.policy_domain.as_str(), d.testing),
            (status, disposition, policy_domain, testing),
            "{from}: {d:?}"
        );
    }
}

// ---- Effect deadlines and the machine contract ----

/// Regression: a pending effect had no deadline, so an answerer that never answered (a
/// stuck policy or store) pinned the session forever. Inside a transaction the waiting
/// command now gets `451 4.3.0` after `effect_timeout`, the session goes on, and the late
/// answer is ignored (not a misuse).
#[test]
fn unanswered_sender_check_is_451_and_the_late_answer_is_ignored() {
    let mut h = ehloed(config());
    h.hold_effects = true;
    h.send_str("MAIL FROM:<a@example.org>\r\n");
    assert!(h.replies().is_empty());
    let start = h.clock.now().mono;
    let (deadline, timer) = h.idle();
    assert_eq!(timer, Some(Timer::Effect));
    assert_eq!(deadline, Some(start + Duration::from_secs(120)));
    h.timeout();
    assert_eq!(
        h.replies(),
        vec!["451 4.3.0 internal timeout, try again later".to_string()]
    );
    assert!(!h.closed);
    assert_eq!(h.idle().1, Some(Timer::Command));
    h.expect(
        "RCPT TO:<mjl@mox.example>\r\n",
        &["503 5.5.1 missing MAIL FROM"],
    );
    // The client tries again; the first answer comes after all, while the second check
    // is pending: ignored, no reply; the second answer is the one that counts.
    h.send_str("MAIL FROM:<b@example.org>\r\n");
    assert_eq!(h.held.len(), 2);
    h.answer_held().expect("a late answer is not a misuse");
    assert!(h.replies().is_empty());
    assert_eq!(h.idle().1, Some(Timer::Effect));
    h.answer_held().unwrap();
    assert_eq!(h.replies(), vec!["250 2.1.0 looking good"]);
    h.hold_effects = false;
    h.expect("RCPT TO:<mjl@mox.example>\r\n", &["250 2.1.5"]);
}

/// An unanswered RCPT check fails that recipient only; the transaction goes on.
#[test]
fn unanswered_recipient_check_keeps_the_transaction() {
    let mut h = ehloed(config());
    h.expect("MAIL FROM:<a@example.org>\r\n", &["250"]);
    h.expect("RCPT TO:<mjl@mox.example>\r\n", &["250"]);
    h.hold_effects = true;
    h.send_str("RCPT TO:<other@mox.example>\r\n");
    h.timeout();
    assert_eq!(
        h.replies(),
        vec!["451 4.3.0 internal timeout, try again later"]
    );
    h.hold_effects = false;
    h.held.clear();
    h.expect("DATA\r\n", &["354"]);
    h.expect(&format!("{MSG}.\r\n"), &["250 2.0.0"]);
    assert_eq!(h.stored()[0].recipients.len(), 1);
}

/// A store that never answers: `451` instead of the `250`, and a late `Delivered` does not
/// make a `250` (or an `Accepted` event) appear afterwards.
#[test]
fn unanswered_store_is_451_never_250() {
    let mut h = ehloed(config());
    h.expect("MAIL FROM:<a@example.org>\r\n", &["250"]);
    h.expect("RCPT TO:<mjl@mox.example>\r\n", &["250"]);
    h.expect("DATA\r\n", &["354"]);
    h.hold_effects = true;
    h.send_str(&format!("{MSG}.\r\n"));
    assert_eq!(h.idle().1, Some(Timer::Effect));
    h.clock.advance(Duration::from_secs(119));
    let now = h.clock.now();
    h.s.handle(now, Input::Timeout).unwrap();
    h.drain();
    assert!(h.replies().is_empty(), "not before effect_timeout");
    h.timeout();
    assert_eq!(
        h.replies(),
        vec!["451 4.3.0 internal timeout, try again later"]
    );
    h.answer_held().unwrap();
    assert!(h.replies().is_empty());
    assert!(!h.events.iter().any(|e| matches!(e, Event::Accepted { .. })));
    h.hold_effects = false;
    h.expect("RCPT TO:<mjl@mox.example>\r\n", &["503 5.5.1"]);
}

/// Outside a transaction there is no command to fail: an unanswered connection check or
/// AUTH password check ends the session with `421 4.3.0`.
#[test]
fn unanswered_effect_outside_a_transaction_is_421_and_close() {
    let mut h = H::holding(config());
    assert_eq!(h.idle().1, Some(Timer::Effect));
    h.timeout();
    assert_eq!(
        h.replies(),
        vec!["421 4.3.0 internal timeout, try again later"]
    );
    assert!(h.closed);
    h.answer_held().expect("a late answer is not a misuse");
    assert!(h.replies().is_empty());

    let mut h = ehloed(submission_config());
    h.hold_effects = true;
    let ir = base64::engine::general_purpose::STANDARD.encode("\0mjl@mox.example\0testtest");
    h.send_str(&format!("AUTH PLAIN {ir}\r\n"));
    assert!(matches!(
        h.held.front(),
        Some((_, Effect::CheckPassword { .. }))
    ));
    h.timeout();
    assert_eq!(
        h.replies(),
        vec!["421 4.3.0 internal timeout, try again later"]
    );
    assert!(h.closed);
    assert_eq!(h.s.account(), None);
}

/// The DNS checks of one command share one deadline (`checks_timeout`, longer than
/// `effect_timeout`) over all their rounds.
#[test]
fn unanswered_dns_checks_are_451_after_checks_timeout() {
    let mut h = checked();
    h.expect("EHLO client.example\r\n", &["250"]);
    h.hold_effects = true;
    let start = h.clock.now().mono;
    h.send_str("MAIL FROM:<a@good.example>\r\n");
    assert!(matches!(h.held.front(), Some((_, Effect::Dns(_)))));
    assert_eq!(
        h.idle(),
        (Some(start + Duration::from_secs(180)), Some(Timer::Effect))
    );
    h.timeout();
    assert_eq!(
        h.replies(),
        vec!["451 4.3.0 internal timeout, try again later"]
    );
    assert!(!h.closed);

    // After the message, rounds of lookups (the DMARC round follows the others) keep the
    // deadline of the first.
    h.hold_effects = false;
    h.held.clear();
    h.expect("MAIL FROM:<a@good.example>\r\n", &["250"]);
    h.expect("RCPT TO:<mjl@mox.example>\r\n", &["250"]);
    h.expect("DATA\r\n", &["354"]);
    h.hold_effects = true;
    let start = h.clock.now().mono;
    h.send_str("From: <a@good.example>\r\nSubject: t\r\n\r\nbody\r\n.\r\n");
    assert!(matches!(h.held.front(), Some((_, Effect::Dns(_)))));
    h.clock.advance(Duration::from_secs(150));
    h.answer_held().unwrap();
    assert!(
        matches!(h.held.front(), Some((_, Effect::Dns(_)))),
        "{:?}",
        h.held
    );
    assert_eq!(
        h.idle(),
        (Some(start + Duration::from_secs(180)), Some(Timer::Effect))
    );
    h.timeout();
    assert_eq!(
        h.replies(),
        vec!["451 4.3.0 internal timeout, try again later"]
    );
    assert!(h.stored().is_empty());
}

/// A completion for a token never handed out is still a misuse.
#[test]
fn completion_with_a_token_never_given_is_misuse() {
    let mut h = ehloed(config());
    let now = h.clock.now();
    let r = h.s.handle(
        now,
        Input::Completed(Token(999), Completion::Verdict(Verdict::Accept)),
    );
    assert!(matches!(r, Err(SessionError::Misuse(_))), "{r:?}");
}

/// str0m's guard: a `now` earlier than one given before is ignored, so a clock stepping
/// back cannot pull the command deadline earlier.
#[test]
fn earlier_now_is_ignored() {
    let mut h = ehloed(config());
    let early = h.clock.now();
    h.clock.advance(Duration::from_secs(100));
    h.expect("NOOP\r\n", &["250"]);
    let late = h.clock.now();
    assert_eq!(
        h.idle(),
        (
            Some(late.mono + Duration::from_secs(300)),
            Some(Timer::Command)
        )
    );
    h.s.handle(early, Input::Received(b"NOOP\r\n")).unwrap();
    h.drain();
    assert_eq!(h.replies(), vec!["250 2.0.0 alrighty"]);
    assert_eq!(h.idle().0, Some(late.mono + Duration::from_secs(300)));
    // A timeout at the early time does nothing either.
    h.s.handle(early, Input::Timeout).unwrap();
    h.drain();
    assert!(!h.closed);
}

/// STARTTLS resets by construction: a transaction open before it and the EHLO facts are
/// gone inside TLS (RFC 3207 4.2), whatever state the session was in.
#[test]
fn starttls_forgets_the_transaction_and_hello() {
    let mut c = starttls_port25();
    c.require_tls_for_delivery = false;
    let mut h = greeted(c);
    h.expect("EHLO c.example\r\n", &["250"]);
    h.expect("MAIL FROM:<a@example.org>\r\n", &["250 2.1.0"]);
    starttls(&mut h);
    h.expect(
        "RCPT TO:<mjl@mox.example>\r\n",
        &["503 5.5.1 missing MAIL FROM"],
    );
    h.expect(
        "MAIL FROM:<a@example.org>\r\n",
        &["503 5.5.1 no ehlo/helo yet"],
    );
    h.expect("EHLO c.example\r\n", &["250"]);
    h.expect("MAIL FROM:<a@example.org>\r\n", &["250 2.1.0"]);
}

/// `Idle` names the timer its deadline belongs to, in every kind of wait.
#[test]
fn idle_names_the_next_timer() {
    // The connection check is out: its answer is awaited.
    let mut h = H::holding(config());
    assert_eq!(h.idle().1, Some(Timer::Effect));
    // Implicit TLS: the handshake (30 s) comes before the effect deadline (120 s).
    let mut c = tls_config();
    c.implicit_tls = true;
    let mut h = H::holding(c);
    let start = h.clock.now().mono;
    assert_eq!(
        h.idle(),
        (
            Some(start + Duration::from_secs(30)),
            Some(Timer::Handshake)
        )
    );
    // Between commands, then inside DATA. Regression: after the 354 the session still ran
    // the command timer (until more bytes came), so `data_timeout` did not apply yet.
    let mut c = config();
    c.data_timeout = Duration::from_secs(10);
    let mut h = ehloed(c);
    assert_eq!(h.idle().1, Some(Timer::Command));
    h.expect(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\n",
        &["250", "250", "354"],
    );
    let now = h.clock.now().mono;
    assert_eq!(
        h.idle(),
        (Some(now + Duration::from_secs(10)), Some(Timer::Data))
    );
    h.timeout();
    assert_eq!(h.replies(), vec!["421 4.4.2 timeout, closing"]);
    // A failed AUTH answered after a delay.
    let mut c = submission_config();
    c.auth_failure_delay = Duration::from_secs(1);
    let mut h = ehloed(c);
    let ir = base64::engine::general_purpose::STANDARD.encode("\0mjl@mox.example\0wrong");
    h.send_str(&format!("AUTH PLAIN {ir}\r\n"));
    assert!(h.replies().is_empty());
    assert_eq!(h.idle().1, Some(Timer::Delay));
    h.timeout();
    assert_eq!(h.replies(), vec!["535 5.7.8 bad user/pass"]);
}

// ---- Spooling: message data past the threshold goes out as it arrives ----

/// A session whose spool threshold is 1 KiB.
fn spooling(hold: bool) -> H {
    let mut c = config();
    c.spool_threshold = 1024;
    let mut h = H::new(c);
    h.replies();
    h.expect(
        "EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\n",
        &["250", "250", "250", "354"],
    );
    h.hold_effects = hold;
    h
}

/// A message of about `size` octets with distinct lines.
fn big_message(size: usize) -> String {
    let mut m = String::from("From: <a@example.org>\r\nSubject: big\r\n\r\n");
    let mut i = 0;
    while m.len() < size {
        m.push_str(&format!(
            "line {i} of a large message, padded out a bit\r\n"
        ));
        i += 1;
    }
    m
}

fn spool_ended(h: &H) -> usize {
    h.events
        .iter()
        .filter(|e| matches!(e, Event::SpoolEnded(_)))
        .count()
}

/// Messages under the threshold (the common case) never leave memory.
#[test]
fn small_message_is_not_spooled() {
    let mut h = spooling(false);
    h.expect(&format!("{}.\r\n", big_message(900)), &["250"]);
    assert!(h.world.spool_log.is_empty());
    assert!(!h.stored()[0].message.is_spooled());
    assert_eq!(spool_ended(&h), 0);
}

/// Issue 15: a message was held in memory while it arrived (ten connections at 95 MiB
/// took the server to 1 GB). Past the threshold the data goes out in chunks of at most
/// the threshold, the last after the final dot, and the stored message is byte-exact.
#[test]
fn large_message_is_spooled_in_chunks_and_stored_byte_exact() {
    let mut h = spooling(false);
    let msg = big_message(10_000);
    h.expect(&format!("{msg}.\r\n"), &["250"]);
    let log = &h.world.spool_log;
    assert!(log.len() >= 9, "{log:?}");
    assert!(log.iter().all(|(id, n, _)| *n <= 1024 && id.cid == 7));
    assert!(log[..log.len() - 1]
        .iter()
        .all(|(_, n, last)| *n == 1024 && !last));
    assert!(log[log.len() - 1].2);
    let t = &h.stored()[0];
    assert!(t.message.is_spooled());
    let stored = t.message.to_vec();
    assert!(stored.starts_with(b"Received: from client.example"));
    assert!(stored.ends_with(msg.as_bytes()));
    assert_eq!(t.message.parts()[1], msg.as_bytes());
    // The spool is given up with the transaction's reply; a next transaction gets its own.
    assert_eq!(spool_ended(&h), 1);
    assert!(h.world.spools.is_empty());
    h.expect(
        &format!("MAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\n{msg}.\r\n"),
        &["250", "250", "354", "250"],
    );
    assert_eq!(h.world.spool_log.last().unwrap().0.txn, 2);
    assert!(h.world.spools.is_empty());
}

/// Backpressure: while a chunk is being spooled the session consumes no more input; the
/// rest stays with the driver until the answer comes.
#[test]
fn spooling_blocks_input_until_answered() {
    let mut h = spooling(true);
    let msg = big_message(5000);
    h.send_str(&format!("{msg}.\r\n"));
    assert_eq!(h.held.len(), 1);
    assert!(matches!(h.held[0].1, Effect::Spool { last: false, .. }));
    assert!(h.inbuf.len() >= 5000 - 1100, "{}", h.inbuf.len());
    // The session waits for the effect, not for data.
    assert_eq!(h.idle().1, Some(Timer::Effect));
    let mut rounds = 0;
    while !h.held.is_empty() {
        assert!(h.held.len() == 1, "one chunk at a time");
        h.answer_held().unwrap();
        h.feed_pending();
        h.drain();
        rounds += 1;
        if matches!(h.held.front(), Some((_, Effect::Store(_)))) {
            h.answer_held().unwrap();
        }
    }
    assert!(rounds >= 5);
    assert_eq!(h.replies(), vec!["250 2.0.0 it is done".to_string()]);
    assert!(h.inbuf.is_empty());
}

/// The spool ends however the transaction does: a refused message, a failed store, the
/// peer leaving mid-DATA, a data timeout.
#[test]
fn spool_ends_with_the_transaction() {
    let msg = big_message(5000);
    // Refused at the end (smuggling).
    let mut h = spooling(false);
    h.expect(&format!("{msg}bad\n.\r\n.\r\n"), &["500 5.5.2"]);
    assert_eq!(spool_ended(&h), 1);
    assert!(h.world.spools.is_empty());
    // The store fails.
    let mut h = spooling(false);
    h.world.store_result =
        StoreOutcome::Refused(Reply::new(554, Some(Enhanced::new(5, 0, 0)), "no"));
    h.expect(&format!("{msg}.\r\n"), &["554"]);
    assert_eq!(spool_ended(&h), 1);
    assert!(h.world.spools.is_empty());
    // The peer goes away mid-DATA.
    let mut h = spooling(false);
    h.send_str(&msg);
    assert_eq!(h.world.spools.len(), 1);
    h.s.handle(h.clock.now(), Input::PeerClosed).unwrap();
    h.drain();
    assert_eq!(spool_ended(&h), 1);
    assert!(h.world.spools.is_empty());
    assert!(h.stored().is_empty());
    // A data timeout.
    let mut h = spooling(false);
    h.send_str(&msg);
    h.timeout();
    assert_eq!(h.replies(), vec!["421 4.4.2 timeout, closing".to_string()]);
    assert_eq!(spool_ended(&h), 1);
    assert!(h.world.spools.is_empty());
}

/// A spool write that fails does not cut the DATA short (the rest would be read as
/// commands): the rest is read and dropped, and the message refused with 451 at its end.
#[test]
fn spool_failure_refuses_after_the_final_dot() {
    let mut h = spooling(false);
    h.world.spool_fail = Some("disk full");
    let msg = big_message(5000);
    h.expect(
        &format!("{msg}.\r\nNOOP\r\n"),
        &["451 4.3.0 error writing message to spool", "250"],
    );
    assert_eq!(h.world.spool_log.len(), 1);
    assert_eq!(spool_ended(&h), 1);
    assert!(h.stored().is_empty());
}

/// The header of a spooled message is read into memory: it must fit under the threshold.
#[test]
fn spooled_header_over_the_threshold_is_refused() {
    let mut h = spooling(false);
    let mut msg = String::from("From: <a@example.org>\r\n");
    for i in 0..100 {
        msg.push_str(&format!(
            "X-Filler-{i}: some header value to make it long\r\n"
        ));
    }
    msg.push_str("\r\nbody\r\n");
    h.expect(
        &format!("{msg}.\r\n"),
        &["552 5.3.4 message header too large"],
    );
    assert_eq!(spool_ended(&h), 1);
}

/// DKIM and the other checks after DATA read a spooled message as well as one in memory.
#[test]
fn spooled_message_is_dkim_verified() {
    let key = crate::dkim::SigningKey::ed25519_from_seed(&[7u8; 32]).unwrap();
    let mut c = config();
    c.checks = Some(IncomingChecks::default());
    c.spool_threshold = 4096;
    let mut w = World::new();
    w.zone = crate::dns::StaticZone::parse(ZONE).unwrap();
    let record = key.dns_record();
    w.zone.add(
        "sel._domainkey.good.example",
        crate::dns::Record::Txt(record.as_bytes().chunks(255).map(<[u8]>::to_vec).collect()),
    );
    let mut h = H::with_world(c, w);
    h.replies();
    let msg = big_message(40_000).replace("From: <a@example.org>", "From: <a@good.example>");
    let cfg = crate::dkim::SignConfig::new("good.example", "sel", key);
    let rng = ring::rand::SystemRandom::new();
    let sig = crate::dkim::sign(msg.as_bytes(), &[cfg], h.clock.now().wall, &rng).unwrap();
    let signed = format!("{sig}{msg}");
    h.expect(
        &format!("EHLO client.example\r\nMAIL FROM:<a@good.example>\r\nRCPT TO:<x@mox.example>\r\nDATA\r\n{signed}.\r\n"),
        &["250", "250", "250", "354", "250"],
    );
    assert!(h.world.spool_log.len() >= 9);
    let t = &h.stored()[0];
    assert!(t.message.is_spooled());
    assert_eq!(t.message.parts()[1], signed.as_bytes());
    let dkim = t.auth.as_ref().unwrap().dkim.clone().unwrap();
    assert_eq!(dkim.len(), 1);
    assert_eq!(dkim[0].status, crate::dkim::Status::Pass, "{dkim:?}");
    let text = t.message.to_vec();
    assert!(String::from_utf8_lossy(&text).contains("dkim=pass"));
}

/// A session past MAIL and RCPT with a 1 KiB spool threshold, for BDAT.
fn spooling_bdat() -> H {
    let mut c = config();
    c.spool_threshold = 1024;
    let mut h = H::new(c);
    h.replies();
    h.expect(
        "EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\n",
        &["250", "250", "250"],
    );
    h
}

/// Issue 15, BDAT: chunk data past the threshold goes to the spool as it arrives, across
/// chunks; the sizes reported count what was spooled, and the message is stored byte-exact.
#[test]
fn bdat_chunks_are_spooled_and_stored_byte_exact() {
    let mut h = spooling_bdat();
    let msg = big_message(5000);
    let (a, b) = msg.as_bytes().split_at(3000);
    h.expect(
        &format!("BDAT {}\r\n{}", a.len(), String::from_utf8_lossy(a)),
        &["250 2.0.0 chunk received, 3000 octets so far"],
    );
    assert_eq!(
        h.world.spools.len(),
        1,
        "the open transaction keeps its spool"
    );
    assert_eq!(spool_ended(&h), 0);
    h.expect(
        &format!("BDAT {} LAST\r\n{}", b.len(), String::from_utf8_lossy(b)),
        &["250 2.0.0 it is done"],
    );
    let log = &h.world.spool_log;
    assert!(log.iter().all(|(_, n, _)| *n <= 1024), "{log:?}");
    assert!(log.last().unwrap().2);
    let t = &h.stored()[0];
    assert!(t.message.is_spooled());
    assert_eq!(t.message.parts()[1], msg.as_bytes());
    assert_eq!(spool_ended(&h), 1);
    assert!(h.world.spools.is_empty());
}

/// The spool of a BDAT transaction ends with RSET between chunks; a failed spool write
/// refuses the chunk (its rest read and dropped) and ends the transaction.
#[test]
fn bdat_spool_ends_with_rset_and_failure() {
    let mut h = spooling_bdat();
    let msg = big_message(3000);
    h.expect(
        &format!("BDAT {}\r\n{msg}", msg.len()),
        &["250 2.0.0 chunk received"],
    );
    assert_eq!(h.world.spools.len(), 1);
    h.expect("RSET\r\n", &["250"]);
    assert_eq!(spool_ended(&h), 1);
    assert!(h.world.spools.is_empty());

    h.expect(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\n",
        &["250", "250"],
    );
    h.world.spool_fail = Some("disk full");
    h.expect(
        &format!("BDAT {} LAST\r\n{msg}NOOP\r\n", msg.len()),
        &["451 4.3.0 error writing message to spool", "250"],
    );
    assert_eq!(spool_ended(&h), 2);
    assert!(h.stored().is_empty());
    // The transaction is gone.
    h.expect("BDAT 3 LAST\r\nabc", &["503 5.5.1"]);
}

/// Inside TLS the decrypted data is spooled the same way (the session's own plaintext
/// buffer is what waits while a chunk is written).
#[test]
fn spooling_inside_tls() {
    let mut c = tls_config();
    c.submission = false;
    c.spool_threshold = 1024;
    let mut h = greeted(c);
    h.expect("EHLO client.example\r\n", &["250"]);
    starttls(&mut h);
    let msg = big_message(20_000);
    h.expect(
        &format!("EHLO client.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\n{msg}.\r\n"),
        &["250", "250", "250", "354", "250"],
    );
    assert!(h.world.spool_log.len() >= 19);
    let t = &h.stored()[0];
    assert_eq!(t.message.parts()[1], msg.as_bytes());
    assert!(h.world.spools.is_empty());
}

/// Found by the whole-MTA simulation (sim/): a `Timeout` before any deadline restarted the
/// command timer (`handle` touched the idle timer after every timeout), so a peer that went
/// silent in a transaction was never timed out while early timeouts kept coming. An early
/// `Timeout` must change nothing.
#[test]
fn early_timeout_does_not_push_back_the_idle_deadline() {
    let mut h = ehloed(config());
    h.expect("MAIL FROM:<a@example.org>\r\n", &["250 2.1.0"]);
    let (deadline, timer) = h.idle();
    assert_eq!(timer, Some(Timer::Command));
    let deadline = deadline.expect("a command deadline");
    h.clock.advance(Duration::from_secs(200));
    let now = h.clock.now();
    h.s.handle(now, Input::Timeout).unwrap();
    h.drain();
    assert_eq!(h.idle().0, Some(deadline));
    h.timeout();
    assert!(h.closed);
    assert_eq!(h.replies(), vec!["421 4.4.2 timeout, closing"]);
}

/// The transactions' log records, in order.
fn txn_logs(h: &H) -> Vec<TransactionLog> {
    h.events
        .iter()
        .filter_map(|e| match e {
            Event::Transaction(t) => Some((**t).clone()),
            _ => None,
        })
        .collect()
}

/// Issue 16: each transaction ends with exactly one [`Event::Transaction`] that names its
/// verdict and reason; a refused recipient is in the same record, not a line of its own.
#[test]
fn one_log_record_per_accepted_transaction() {
    let mut h = greeted(config());
    h.expect(
        &format!("EHLO c.example\r\nMAIL FROM:<remote@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nRCPT TO:<unknown@mox.example>\r\nRCPT TO:<other@mox.example>\r\nDATA\r\n{MSG}.\r\n"),
        &["250 mox.example", "250 2.1.0", "250 2.1.5", "550 5.1.1", "250 2.1.5", "354", "250 2.0.0"],
    );
    let logs = txn_logs(&h);
    assert_eq!(logs.len(), 1, "{logs:?}");
    let t = &logs[0];
    assert_eq!(t.verdict, TxnVerdict::Accepted);
    assert_eq!(t.verdict.as_str(), "accepted");
    assert_eq!(t.reason, "stored");
    assert_eq!(t.mail_from, "<remote@example.org>");
    assert_eq!(t.recipients, 2);
    assert_eq!(
        t.recipient_names,
        vec![
            "<mjl@mox.example>".to_string(),
            "<other@mox.example>".to_string()
        ]
    );
    assert_eq!(t.refused, vec![("<unknown@mox.example>".to_string(), 550)]);
    assert_eq!(t.size, Some(h.stored()[0].message.len()));
    // QUIT after the transaction ended adds no record.
    h.expect("QUIT\r\n", &["221"]);
    assert_eq!(txn_logs(&h).len(), 1);
}

#[test]
fn abandoned_transactions_are_logged_with_what_ended_them() {
    let mut h = ehloed(config());
    h.expect(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nRSET\r\n",
        &["250", "250", "250"],
    );
    h.expect(
        "MAIL FROM:<b@example.org>\r\nEHLO again.example\r\n",
        &["250", "250"],
    );
    h.expect("MAIL FROM:<c@example.org>\r\nQUIT\r\n", &["250", "221"]);
    let logs = txn_logs(&h);
    let got: Vec<(&str, &str, &str)> = logs
        .iter()
        .map(|t| (t.mail_from.as_str(), t.verdict.as_str(), t.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("<a@example.org>", "abandoned", "RSET"),
            ("<b@example.org>", "abandoned", "new EHLO/HELO"),
            ("<c@example.org>", "abandoned", "quit"),
        ]
    );
    assert_eq!(logs[0].recipients, 1);
    assert_eq!(logs[0].size, None);
}

#[test]
fn refused_message_is_logged_with_the_reply() {
    let mut c = config();
    c.max_message_size = 100;
    let mut h = ehloed(c);
    // A refused MAIL FROM opens no transaction: no record.
    h.expect("MAIL FROM:<a@example.org> SIZE=1001\r\n", &["552 5.3.4"]);
    assert!(txn_logs(&h).is_empty());
    h.expect(
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<mjl@mox.example>\r\nDATA\r\n",
        &["250", "250", "354"],
    );
    let body = format!("Subject: x\r\n\r\n{}\r\n.\r\n", "y".repeat(200));
    h.expect(&body, &["552 5.3.4"]);
    let logs = txn_logs(&h);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].verdict, TxnVerdict::Refused(552));
    assert_eq!(logs[0].verdict.as_str(), "rejected");
    assert_eq!(logs[0].reason, "message too large");
}

#[test]
fn partial_and_failed_stores_are_logged() {
    let h = three_recipient_transaction(
        StoreOutcome::Partial {
            failed: vec![RecipientFailure::unknown_user("nobody@mox.example")],
        },
        Duration::from_secs(0),
    );
    let logs = txn_logs(&h);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].verdict, TxnVerdict::Partial);
    assert!(
        logs[0]
            .reason
            .starts_with("stored for 2 of 3 recipients; 1 failed, first 550 nobody@mox.example"),
        "{}",
        logs[0].reason
    );
    let h = three_recipient_transaction(
        StoreOutcome::Failed(vec![
            RecipientFailure::mailbox_full("mjl@mox.example"),
            RecipientFailure::mailbox_full("nobody@mox.example"),
            RecipientFailure::mailbox_full("full@mox.example"),
        ]),
        Duration::from_secs(0),
    );
    let logs = txn_logs(&h);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].verdict.as_str(), "deferred");
}
