//! Transcript tests (a scripted fake server, as in the seed's mox client tests) and pair
//! tests (the client against the rmox server machine in memory).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::sasl::{CredentialKind, ServerAuth, ServerStep, StoredCredentials};
use crate::testkit::{self, TestClock};
use crate::tls::TlsFailureReason;
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Transcript harness
// ---------------------------------------------------------------------------------------

/// One step of the fake server's script.
#[derive(Clone, Debug)]
enum Step {
    /// The server writes this line (CRLF added).
    S(&'static str),
    /// The server writes this line (owned).
    So(String),
    /// The client must have sent a line starting with this (ASCII case-insensitive).
    C(&'static str),
    /// The client must have sent a line not containing this (after a `C` prefix check).
    CNot(&'static str, &'static str),
    /// The client must have sent a dot-terminated message.
    Msg,
    /// The server answers STARTTLS with `220 go` and does the TLS handshake with this
    /// config.
    StartTls(Arc<rustls::ServerConfig>),
    /// The server runs a real SASL exchange (user `test`, password `test`).
    Sasl,
    /// The server closes the connection.
    Close,
    /// The server stays silent: the client's deadline must be this far away; time jumps
    /// there.
    Silence(u64),
}
use Step::*;

fn msg() -> Arc<[u8]> {
    Arc::from(
        &b"From: <postmaster@mox.example>\r\nTo: <mjl@mox.example>\r\nSubject: test\r\n\r\ntest\r\n"[..],
    )
}

fn delivery(rcpts: &[&str]) -> Delivery {
    Delivery {
        mail_from: ReversePath::parse("<postmaster@mox.example>").unwrap(),
        recipients: rcpts
            .iter()
            .map(|r| {
                (
                    ForwardPath::parse(&format!("<{r}>")).unwrap(),
                    RcptParams::default(),
                )
            })
            .collect(),
        params: MailParams::default(),
        message: msg(),
        needs: Needs::default(),
    }
}

fn config() -> ClientConfig {
    let mut c = ClientConfig::new(Host::parse("localhost").unwrap(), "mox.example");
    c.seed = 1;
    c
}

/// What a session produced.
#[derive(Debug, Default)]
struct Result_ {
    outcomes: Vec<Outcome>,
    failed: Option<ClientError>,
    events: Vec<Event>,
    closed: bool,
    /// Plaintext the client sent that no step consumed.
    leftover: Vec<u8>,
}

struct Harness {
    c: ClientSession,
    clock: TestClock,
    chunks: Vec<usize>,
    chunk_i: usize,
    to_client: Vec<u8>,
    from_client: Vec<u8>,
    srv_tls: Option<TlsLayer>,
    deliveries: VecDeque<Delivery>,
    reset_between: bool,
    pending_deliver: bool,
    res: Result_,
    rng: crate::Rng,
}

impl Harness {
    fn new(config: ClientConfig, deliveries: Vec<Delivery>, chunks: Vec<usize>) -> Harness {
        let clock = TestClock::new();
        let c = ClientSession::new(Arc::new(config), clock.now());
        let mut h = Harness {
            c,
            clock,
            chunks,
            chunk_i: 0,
            to_client: Vec::new(),
            from_client: Vec::new(),
            srv_tls: None,
            deliveries: deliveries.into(),
            reset_between: false,
            pending_deliver: false,
            res: Result_::default(),
            rng: crate::Rng::new(9),
        };
        h.next_delivery();
        h.drain();
        h
    }

    /// Hands in the next delivery, or QUIT when there is none.
    fn next_delivery(&mut self) {
        let now = self.clock.now();
        if self.res.closed {
            return;
        }
        match self.deliveries.pop_front() {
            Some(d) => {
                let _ = self.c.handle(now, Input::Deliver(Box::new(d)));
            }
            None => {
                let _ = self.c.handle(now, Input::Quit);
            }
        }
    }

    fn drain(&mut self) {
        for _ in 0..10_000 {
            let now = self.clock.now();
            let mut tx = Vec::new();
            match self.c.poll(now, &mut tx) {
                Output::Transmit => self.deliver_to_server(&tx),
                Output::Event(e) => {
                    match &e {
                        Event::Done(o) => {
                            self.res.outcomes.push(o.clone());
                            self.pending_deliver = true;
                        }
                        Event::Failed(err) => self.res.failed = Some(err.clone()),
                        _ => {}
                    }
                    self.res.events.push(e);
                }
                Output::Idle { .. } => {
                    if self.pending_deliver {
                        self.pending_deliver = false;
                        if self.reset_between && !self.deliveries.is_empty() {
                            let _ = self.c.handle(now, Input::Reset);
                        }
                        self.next_delivery();
                        continue;
                    }
                    return;
                }
                Output::Close => {
                    self.res.closed = true;
                    return;
                }
            }
        }
        panic!("client did not become idle");
    }

    fn deliver_to_server(&mut self, bytes: &[u8]) {
        match &mut self.srv_tls {
            Some(t) => {
                if t.feed(bytes, &mut self.from_client).is_err() {
                    // The handshake failed on the server side too.
                    self.srv_tls = None;
                    return;
                }
                t.take_ciphertext(&mut self.to_client);
            }
            None => self.from_client.extend_from_slice(bytes),
        }
    }

    /// Moves bytes until nothing moves.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            if self.to_client.is_empty() || self.res.closed {
                return;
            }
            let size = if self.chunks.is_empty() {
                self.to_client.len()
            } else {
                let s = self.chunks[self.chunk_i % self.chunks.len()];
                self.chunk_i += 1;
                s.max(1)
            };
            let k = size.min(self.to_client.len());
            let now = self.clock.now();
            let chunk = self.to_client[..k].to_vec();
            match self.c.handle(now, Input::Received(&chunk)) {
                Ok(n) => {
                    self.to_client.drain(..n);
                }
                Err(_) => self.to_client.clear(),
            }
            self.drain();
        }
        panic!("pump did not settle");
    }

    fn write(&mut self, line: &str) {
        let mut b = line.as_bytes().to_vec();
        b.extend_from_slice(b"\r\n");
        match &mut self.srv_tls {
            Some(t) => {
                t.write_plain(&b);
                t.take_ciphertext(&mut self.to_client);
            }
            None => self.to_client.extend_from_slice(&b),
        }
        self.pump();
    }

    fn line(&mut self) -> String {
        self.pump();
        let Some(i) = self.from_client.iter().position(|&b| b == b'\n') else {
            panic!(
                "client sent no line; have {:?}; events {:?}",
                String::from_utf8_lossy(&self.from_client),
                self.res.events
            );
        };
        let l: Vec<u8> = self.from_client.drain(..=i).collect();
        String::from_utf8(l).unwrap().trim_end().to_string()
    }

    fn run(&mut self, script: &[Step]) {
        for step in script {
            match step {
                S(l) => self.write(l),
                So(l) => self.write(l),
                C(prefix) => {
                    let l = self.line();
                    assert!(
                        l.to_ascii_lowercase()
                            .starts_with(&prefix.to_ascii_lowercase()),
                        "expected {prefix:?}, got {l:?}"
                    );
                }
                CNot(prefix, not) => {
                    let l = self.line();
                    assert!(
                        l.to_ascii_lowercase()
                            .starts_with(&prefix.to_ascii_lowercase()),
                        "expected {prefix:?}, got {l:?}"
                    );
                    assert!(!l.contains(not), "{l:?} must not contain {not:?}");
                }
                Msg => loop {
                    if self.line() == "." {
                        break;
                    }
                },
                StartTls(cfg) => {
                    self.to_client.extend_from_slice(b"220 go\r\n");
                    self.srv_tls = Some(TlsLayer::server(Arc::clone(cfg)).unwrap());
                    self.pump();
                    if let Some(t) = &mut self.srv_tls {
                        t.take_ciphertext(&mut self.to_client);
                    }
                    for _ in 0..20 {
                        self.pump();
                        self.drain();
                    }
                }
                Sasl => self.sasl(),
                Silence(secs) => {
                    self.pump();
                    let now = self.clock.now();
                    let mut tx = Vec::new();
                    let Output::Idle { deadline: Some(d) } = self.c.poll(now, &mut tx) else {
                        panic!("no deadline");
                    };
                    assert_eq!(d - now.mono, Duration::from_secs(*secs));
                    // Early is a no-op.
                    self.c.handle(now, Input::Timeout).unwrap();
                    assert!(self.res.failed.is_none());
                    self.clock.set_mono(d);
                    let now = self.clock.now();
                    let _ = self.c.handle(now, Input::Timeout);
                    self.drain();
                }
                Close => {
                    let now = self.clock.now();
                    let _ = self.c.handle(now, Input::PeerClosed);
                    self.drain();
                }
            }
        }
        self.pump();
        self.drain();
        self.res.leftover = std::mem::take(&mut self.from_client);
    }

    fn sasl(&mut self) {
        use base64::engine::general_purpose::STANDARD;
        let l = self.line();
        let mut words = l.split(' ');
        assert_eq!(words.next(), Some("AUTH"));
        let mech = Mechanism::from_name(words.next().unwrap()).unwrap();
        let ir = words.next().map(|w| {
            if w == "=" {
                Vec::new()
            } else {
                STANDARD.decode(w).unwrap()
            }
        });
        let mut sa = ServerAuth::new(mech, &mut self.rng, "mox.example", None);
        let mut step = sa.start(ir.as_deref());
        loop {
            step = match step {
                ServerStep::Challenge(c) => {
                    self.write(&format!("334 {}", STANDARD.encode(c)));
                    let resp = self.line();
                    sa.respond(&STANDARD.decode(resp).unwrap())
                }
                ServerStep::CheckPassword { password, .. } => {
                    sa.password_checked(password == "test")
                }
                ServerStep::NeedCredentials { kind, .. } => {
                    let creds = match kind {
                        CredentialKind::CramMd5 => {
                            StoredCredentials::CramMd5(crate::sasl::derive_cram_md5("test"))
                        }
                        CredentialKind::ScramSha1 => {
                            StoredCredentials::Scram(crate::sasl::derive_scram(
                                crate::sasl::ScramHash::Sha1,
                                "test",
                                b"salt",
                                2 * 4096,
                            ))
                        }
                        CredentialKind::ScramSha256 => {
                            StoredCredentials::Scram(crate::sasl::derive_scram(
                                crate::sasl::ScramHash::Sha256,
                                "test",
                                b"salt",
                                4096,
                            ))
                        }
                    };
                    sa.credentials(Some(creds))
                }
                ServerStep::Success { final_data, .. } => {
                    if let Some(d) = final_data {
                        self.write(&format!("334 {}", STANDARD.encode(d)));
                        assert_eq!(self.line(), "");
                    }
                    self.write("235 2.7.0 auth ok");
                    return;
                }
                ServerStep::Failure(_) => {
                    self.write("535 5.7.8 bad");
                    return;
                }
            }
        }
    }
}

fn run(config: ClientConfig, deliveries: Vec<Delivery>, script: &[Step]) -> Result_ {
    run_chunked(config, deliveries, script, Vec::new())
}

fn run_chunked(
    config: ClientConfig,
    deliveries: Vec<Delivery>,
    script: &[Step],
    chunks: Vec<usize>,
) -> Result_ {
    let mut h = Harness::new(config, deliveries, chunks);
    h.run(script);
    h.res
}

fn kind_of(r: &Result<Reply, ClientError>) -> Option<&ErrorKind> {
    r.as_ref().err().map(|e| &e.kind)
}

// ---------------------------------------------------------------------------------------
// Seed 001, TestClient: a server script built from options, as in the mox test.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Opts {
    pipelining: bool,
    ecodes: bool,
    max_size: usize,
    starttls: bool,
    eightbitmime: bool,
    smtputf8: bool,
    requiretls: bool,
    ehlo: bool,
    tls_mode: Option<TlsMode>,
    verify: Option<Verify>,
    tls_hostname: Option<&'static str>,
    needs: Needs,
    auths: Vec<&'static str>,
    /// The client refuses before MAIL (SIZE, SMTPUTF8, REQUIRETLS).
    nodeliver: bool,
    server_tls: Option<Arc<rustls::ServerConfig>>,
}

/// What the seed test expects: a connection error or a delivery error.
enum Expected {
    Ok,
    /// The connection failed with a kind the function accepts, and whether permanent.
    Conn(fn(&ErrorKind) -> bool, bool),
    Deliver(ErrorKind, bool),
}

fn hello(script: &mut Vec<Step>, o: &Opts, have_tls: bool) {
    if !o.ehlo {
        script.push(C("EHLO "));
        script.push(S("500 bad syntax"));
        script.push(C("HELO "));
        script.push(S("250 mox.example"));
        return;
    }
    script.push(C("EHLO "));
    script.push(S("250-mox.example"));
    if o.pipelining {
        script.push(S("250-PIPELINING"));
    }
    if o.max_size > 0 {
        script.push(So(format!("250-SIZE {}", o.max_size)));
    }
    if o.ecodes {
        script.push(S("250-ENHANCEDSTATUSCODES"));
    }
    if o.starttls && !have_tls {
        script.push(S("250-STARTTLS"));
    }
    if o.eightbitmime {
        script.push(S("250-8BITMIME"));
    }
    if o.smtputf8 {
        script.push(S("250-SMTPUTF8"));
    }
    if o.requiretls && have_tls {
        script.push(S("250-REQUIRETLS"));
    }
    if !o.auths.is_empty() {
        script.push(So(format!("250-AUTH {}", o.auths.join(" "))));
    }
    script.push(S("250 UNKNOWN"));
}

fn seed_client_test(o: Opts, want: Expected) {
    let mut cfg = config();
    cfg.tls_mode = o.tls_mode.unwrap_or(TlsMode::Opportunistic);
    cfg.verification = o.verify.clone().unwrap_or(Verify::None);
    cfg.remote_hostname = o.tls_hostname.unwrap_or("mox.example").to_string();
    if !o.auths.is_empty() {
        cfg.auth = Some(Credentials {
            mechanism: None,
            username: "test".into(),
            password: "test".into(),
        });
    }
    let mut script = vec![S("220 mox.example ESMTP test")];
    hello(&mut script, &o, false);
    if o.starttls {
        script.push(C("STARTTLS"));
        let tls = o.server_tls.clone().unwrap_or_else(testkit::server_tls);
        script.push(StartTls(tls));
        if matches!(want, Expected::Conn(..)) {
            // The handshake fails.
            let mut d = delivery(&["mjl@mox.example"]);
            d.needs = o.needs;
            let r = run(cfg, vec![d], &script);
            check(&r, &want);
            return;
        }
        hello(&mut script, &o, true);
    }
    if !o.auths.is_empty() {
        script.push(Sasl);
    }
    if !o.nodeliver {
        for i in 0..2 {
            if i == 1 {
                script.push(C("RSET"));
                script.push(S("250 ok"));
            }
            if o.needs.eightbit && !o.eightbitmime {
                // Seed 003: 8-bit content goes out without BODY=8BITMIME.
                script.push(CNot("MAIL FROM:", "BODY="));
            } else {
                script.push(C("MAIL FROM:"));
            }
            script.push(S("250 ok"));
            script.push(C("RCPT TO:"));
            script.push(S("250 ok"));
            script.push(C("DATA"));
            script.push(S("354 continue"));
            script.push(Msg);
            script.push(S("250 ok"));
        }
    }
    script.push(C("QUIT"));
    script.push(S("221 ok"));
    let deliveries = (0..2)
        .map(|_| {
            let mut d = delivery(&["mjl@mox.example"]);
            d.needs = o.needs;
            d
        })
        .collect();
    let mut h = Harness::new(cfg, deliveries, Vec::new());
    h.reset_between = true;
    h.run(&script);
    check(&h.res, &want);
    assert!(h.res.closed, "session closed after QUIT");
    assert!(
        h.res.leftover.is_empty(),
        "unconsumed: {:?}",
        h.res.leftover
    );
}

fn check(r: &Result_, want: &Expected) {
    match want {
        Expected::Ok => {
            assert_eq!(r.failed, None);
            assert_eq!(r.outcomes.len(), 2, "{:?}", r.outcomes);
            for o in &r.outcomes {
                assert!(o.data.is_ok(), "{o:?}");
                assert!(o.recipients.iter().all(Result::is_ok));
            }
        }
        Expected::Conn(kind, permanent) => {
            let e = r.failed.as_ref().expect("connection error");
            assert!(kind(&e.kind), "{e:?}");
            assert_eq!(e.permanent, *permanent, "{e:?}");
        }
        Expected::Deliver(kind, permanent) => {
            assert_eq!(r.failed, None);
            assert_eq!(r.outcomes.len(), 2);
            for o in &r.outcomes {
                let e = o.data.as_ref().unwrap_err();
                assert_eq!(&e.kind, kind, "{e:?}");
                assert_eq!(e.permanent, *permanent);
                assert_eq!(kind_of(&o.recipients[0]), Some(kind));
            }
        }
    }
}

fn ehlo() -> Opts {
    Opts {
        ehlo: true,
        ..Opts::default()
    }
}

#[test]
fn seed_client_defaults_helo_fallback() {
    seed_client_test(Opts::default(), Expected::Ok);
}

#[test]
fn seed_client_all_options() {
    let o = Opts {
        pipelining: true,
        ecodes: true,
        max_size: 512,
        eightbitmime: true,
        smtputf8: true,
        starttls: true,
        ehlo: true,
        requiretls: true,
        tls_mode: Some(TlsMode::RequiredStartTls),
        verify: Some(Verify::Pkix(testkit::client_tls())),
        tls_hostname: Some("mox.example"),
        needs: Needs {
            smtputf8: true,
            requiretls: true,
            eightbit: true,
        },
        ..Opts::default()
    };
    seed_client_test(o, Expected::Ok);
}

#[test]
fn seed_client_ehlo_8bitmime() {
    seed_client_test(
        Opts {
            eightbitmime: true,
            ..ehlo()
        },
        Expected::Ok,
    );
}

/// Seed 003 superseded the seed-001 expectation (Err8bitmimeUnsupported): 8-bit content is
/// sent even when 8BITMIME is not announced.
#[test]
fn seed_client_8bit_without_8bitmime_is_sent() {
    seed_client_test(
        Opts {
            needs: Needs {
                eightbit: true,
                ..Needs::default()
            },
            ..ehlo()
        },
        Expected::Ok,
    );
}

#[test]
fn seed_client_smtputf8_unsupported() {
    seed_client_test(
        Opts {
            needs: Needs {
                smtputf8: true,
                ..Needs::default()
            },
            nodeliver: true,
            ..ehlo()
        },
        Expected::Deliver(
            ErrorKind::PeerIncompatible(PeerIncompatible::SmtpUtf8),
            true,
        ),
    );
}

#[test]
fn seed_client_tls_name_mismatch_is_permanent() {
    seed_client_test(
        Opts {
            starttls: true,
            tls_mode: Some(TlsMode::RequiredStartTls),
            verify: Some(Verify::Pkix(testkit::client_tls())),
            tls_hostname: Some("mismatch.example"),
            nodeliver: true,
            ..ehlo()
        },
        Expected::Conn(
            |k| {
                matches!(
                    k,
                    ErrorKind::Transport(Transport::Tls(TlsFailure {
                        reason: TlsFailureReason::CertificateHostMismatch,
                        ..
                    }))
                )
            },
            true,
        ),
    );
}

#[test]
fn seed_client_size_exceeded() {
    seed_client_test(
        Opts {
            max_size: msg().len() - 1,
            nodeliver: true,
            ..ehlo()
        },
        Expected::Deliver(
            ErrorKind::PeerIncompatible(PeerIncompatible::MessageTooLarge {
                size: msg().len() as u64,
                max: msg().len() as u64 - 1,
            }),
            true,
        ),
    );
}

#[test]
fn seed_client_auth_each_mechanism() {
    for m in ["PLAIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"] {
        seed_client_test(
            Opts {
                auths: vec![m],
                ..ehlo()
            },
            Expected::Ok,
        );
    }
}

#[test]
fn seed_client_requiretls_unsupported() {
    seed_client_test(
        Opts {
            needs: Needs {
                requiretls: true,
                ..Needs::default()
            },
            nodeliver: true,
            ..ehlo()
        },
        Expected::Deliver(
            ErrorKind::PeerIncompatible(PeerIncompatible::RequireTls),
            true,
        ),
    );
}

/// A server config with an expired, self-signed certificate.
fn expired_server_tls() -> Arc<rustls::ServerConfig> {
    let mut params = rcgen::CertificateParams::new(vec!["mox.example".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    crate::tls::server_config_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
        .unwrap()
}

#[test]
fn seed_client_expired_untrusted_cert_accepted_opportunistically() {
    seed_client_test(
        Opts {
            starttls: true,
            server_tls: Some(expired_server_tls()),
            ..ehlo()
        },
        Expected::Ok,
    );
}

// ---------------------------------------------------------------------------------------
// Seed 001, TestErrors
// ---------------------------------------------------------------------------------------

fn conn_err(r: &Result_) -> &ClientError {
    r.failed.as_ref().expect("connection error")
}

#[test]
fn seed_errors_invalid_greeting_is_protocol_error() {
    for script in [
        &[S("bogus")][..],
        &[S("2200 mox.example")][..],
        &[S("220-mox.example"), S("500 different code")][..],
    ] {
        let r = run(config(), vec![], script);
        let e = conn_err(&r);
        assert!(
            matches!(
                e.kind,
                ErrorKind::PeerMisbehaved(PeerMisbehaved::UnparsableReply(_))
            ),
            "{e:?}"
        );
        assert!(!e.permanent);
        assert_eq!(e.stage, Stage::Greeting);
        assert!(r.closed);
    }
}

#[test]
fn seed_errors_server_just_closes_is_temporary_eof() {
    let r = run(config(), vec![delivery(&["mjl@mox.example"])], &[Close]);
    let e = conn_err(&r);
    assert_eq!(e.kind, ErrorKind::Transport(Transport::Closed));
    assert!(!e.permanent);
    // The queued delivery is reported too.
    assert_eq!(
        kind_of(&r.outcomes[0].data),
        Some(&ErrorKind::Transport(Transport::Closed))
    );
}

#[test]
fn seed_errors_521_greeting_is_permanent() {
    let r = run(config(), vec![], &[S("521 not accepting connections")]);
    let e = conn_err(&r);
    assert_eq!(e.kind, ErrorKind::PermanentReply);
    assert!(e.permanent);
    assert_eq!(e.reply.as_ref().unwrap().code, 521);
}

fn one_txn(replies: &[Step]) -> Result_ {
    let mut script = vec![S("220 mox.example"), C("EHLO"), S("250 mox.example")];
    script.extend_from_slice(replies);
    run(config(), vec![delivery(&["mjl@mox.example"])], &script)
}

#[test]
fn seed_errors_mail_refused_permanently() {
    let r = run(
        config(),
        vec![delivery(&["mjl@mox.example"])],
        &[
            S("220 mox.example"),
            C("EHLO"),
            S("250 ENHANCEDSTATUSCODES"),
            C("MAIL FROM:"),
            S("550 5.7.0 not allowed"),
        ],
    );
    let o = &r.outcomes[0];
    let e = o.data.as_ref().unwrap_err();
    assert_eq!(e.kind, ErrorKind::PermanentReply);
    assert!(e.permanent);
    assert_eq!(e.stage, Stage::Mail);
    assert_eq!(e.enhanced(), Some(Enhanced::new(5, 7, 0)));
    assert_eq!(e.reply.as_ref().unwrap().lines, vec!["not allowed"]);
}

#[test]
fn seed_errors_mail_refused_temporarily() {
    let r = one_txn(&[C("MAIL FROM:"), S("451 bad sender")]);
    let e = r.outcomes[0].data.as_ref().unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.permanent, e.stage),
        (ErrorKind::TemporaryReply, false, Stage::Mail)
    );
}

#[test]
fn seed_errors_rcpt_refused_temporarily() {
    let r = one_txn(&[
        C("MAIL FROM:"),
        S("250 ok"),
        C("RCPT TO:"),
        S("451 not now"),
    ]);
    let o = &r.outcomes[0];
    let e = o.data.as_ref().unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.permanent, e.stage),
        (ErrorKind::TemporaryReply, false, Stage::Rcpt)
    );
    assert_eq!(o.recipients[0].as_ref().unwrap_err(), e);
}

#[test]
fn seed_errors_data_refused_permanently() {
    let r = one_txn(&[
        C("MAIL FROM:"),
        S("250 ok"),
        C("RCPT TO:"),
        S("250 ok"),
        C("DATA"),
        S("550 no!"),
    ]);
    let o = &r.outcomes[0];
    assert!(o.recipients[0].is_ok());
    let e = o.data.as_ref().unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.permanent, e.stage),
        (ErrorKind::PermanentReply, true, Stage::Data)
    );
}

#[test]
fn seed_errors_required_tls_attempted_when_not_announced() {
    let mut cfg = config();
    cfg.tls_mode = TlsMode::RequiredStartTls;
    cfg.verification = Verify::Pkix(testkit::client_tls());
    let r = run(
        cfg,
        vec![],
        &[
            S("220 mox.example"),
            C("EHLO"),
            S("250 mox.example"),
            C("STARTTLS"),
            S("502 command not implemented"),
        ],
    );
    let e = conn_err(&r);
    assert!(
        matches!(
            e.kind,
            ErrorKind::PeerIncompatible(PeerIncompatible::StartTls)
        ),
        "{e:?}"
    );
    assert!(e.permanent);
    assert_eq!(e.stage, Stage::StartTls);
    assert_eq!(e.reply.as_ref().unwrap().code, 502);
}

#[test]
fn seed_errors_tls_skip_ignores_offered_starttls() {
    let mut cfg = config();
    cfg.tls_mode = TlsMode::Skip;
    let r = run(
        cfg,
        vec![delivery(&["mjl@mox.example"])],
        &[
            S("220 mox.example"),
            C("EHLO"),
            S("250 STARTTLS"),
            C("MAIL FROM:"),
            S("451 enough"),
        ],
    );
    let e = r.outcomes[0].data.as_ref().unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.permanent),
        (ErrorKind::TemporaryReply, false)
    );
}

#[test]
fn seed_errors_rset_after_aborted_transaction() {
    let r = run(
        config(),
        vec![
            delivery(&["mjl@mox.example"]),
            delivery(&["mjl@mox.example"]),
        ],
        &[
            S("220 mox.example"),
            C("EHLO"),
            S("250 mox.example"),
            C("MAIL FROM:"),
            S("250 ok"),
            C("RCPT TO:"),
            S("451 not now"),
            C("RSET"),
            S("250 ok"),
            C("MAIL FROM:"),
            S("250 ok"),
            C("RCPT TO:"),
            S("250 ok"),
            C("DATA"),
            S("550 not now"),
        ],
    );
    assert_eq!(r.outcomes.len(), 2);
    let e = r.outcomes[0].data.as_ref().unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.permanent),
        (ErrorKind::TemporaryReply, false)
    );
    let e = r.outcomes[1].data.as_ref().unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.permanent),
        (ErrorKind::PermanentReply, true)
    );
}

#[test]
fn seed_errors_close_after_550_to_pipelined_mail_is_permanent() {
    let r = run(
        config(),
        vec![delivery(&["mjl@mox.example"])],
        &[
            S("220 mox.example"),
            C("EHLO"),
            S("250 PIPELINING"),
            C("MAIL FROM:"),
            C("RCPT TO:"),
            C("DATA"),
            S("550 ok"),
            Close,
        ],
    );
    let o = &r.outcomes[0];
    let e = o.data.as_ref().unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.permanent, e.stage),
        (ErrorKind::PermanentReply, true, Stage::Mail)
    );
    assert_eq!(e.reply.as_ref().unwrap().code, 550);
    assert_eq!(o.recipients[0].as_ref().unwrap_err(), e);
}

// ---------------------------------------------------------------------------------------
// Pair tests: the client against the rmox server machine, in memory.
// ---------------------------------------------------------------------------------------

mod pair {
    use super::*;
    use crate::server::{
        Completion, CredentialsAnswer, Effect, PasswordCheck, ServerConfig, Verdict,
    };
    use crate::testkit::pair::{SmtpClient, SmtpServer};

    /// Answers the server's effects: users `mjl@mox.example` / `testtest`; recipient
    /// localpart `unknown` does not exist.
    fn answer(e: &Effect) -> Completion {
        match e {
            // The messages here stay under the spool threshold.
            Effect::Spool { .. } => Completion::Spool(crate::server::SpoolAnswer::Failed(
                "not in this test".into(),
            )),
            Effect::CheckConnection { .. } | Effect::CheckSender { .. } => {
                Completion::Verdict(Verdict::Accept)
            }
            Effect::Dns(lookups) => Completion::Dns(
                lookups
                    .iter()
                    .map(|_| crate::dns::LookupResult::NxDomain)
                    .collect(),
            ),
            Effect::CheckPassword {
                username, password, ..
            } => Completion::Password(if username == "mjl@mox.example" && password == "testtest" {
                PasswordCheck::Valid {
                    account: "mjl".into(),
                }
            } else {
                PasswordCheck::Invalid
            }),
            Effect::LookupCredentials { username, kind, .. } => {
                if username != "mjl@mox.example" {
                    return Completion::Credentials(CredentialsAnswer::Unknown);
                }
                let credentials = match kind {
                    CredentialKind::CramMd5 => {
                        StoredCredentials::CramMd5(crate::sasl::derive_cram_md5("testtest"))
                    }
                    CredentialKind::ScramSha1 => {
                        StoredCredentials::Scram(crate::sasl::derive_scram(
                            crate::sasl::ScramHash::Sha1,
                            "testtest",
                            b"saltsalt",
                            4096,
                        ))
                    }
                    CredentialKind::ScramSha256 => {
                        StoredCredentials::Scram(crate::sasl::derive_scram(
                            crate::sasl::ScramHash::Sha256,
                            "testtest",
                            b"saltsalt",
                            4096,
                        ))
                    }
                };
                Completion::Credentials(CredentialsAnswer::Found {
                    account: "mjl".into(),
                    credentials,
                })
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
            // The server end keeps what it stores.
            Effect::Store(_) => Completion::Stored(crate::server::StoreOutcome::Delivered),
        }
    }

    /// The client and the server machine over the shared [`testkit::Pair`].
    type Pair = testkit::Pair<SmtpClient, SmtpServer>;

    fn new_pair(
        cc: ClientConfig,
        sc: ServerConfig,
        deliveries: Vec<Delivery>,
        seed: u64,
        max_chunk: usize,
    ) -> Pair {
        let clock = TestClock::new();
        let client = SmtpClient::new(cc, deliveries, clock.now());
        let server = SmtpServer::new(sc, clock.now(), Some(Box::new(answer)));
        testkit::Pair::new(client, server, clock, seed, max_chunk)
    }

    fn cconfig() -> ClientConfig {
        let mut c = config();
        c.tls_mode = TlsMode::Skip;
        c
    }

    fn sconfig() -> ServerConfig {
        let mut c = ServerConfig::new("mox.example");
        c.auth_failure_delay = Duration::ZERO;
        c
    }

    fn tls_pair_configs() -> (ClientConfig, ServerConfig) {
        let mut cc = config();
        cc.tls_mode = TlsMode::RequiredStartTls;
        cc.verification = Verify::Pkix(testkit::client_tls());
        let mut sc = sconfig();
        sc.tls = Some(testkit::server_tls());
        (cc, sc)
    }

    fn run_pair(
        cc: ClientConfig,
        sc: ServerConfig,
        d: Vec<Delivery>,
        seed: u64,
        chunk: usize,
    ) -> Pair {
        let mut p = new_pair(cc, sc, d, seed, chunk);
        p.run();
        p
    }

    #[test]
    fn plain_delivery() {
        let p = run_pair(
            cconfig(),
            sconfig(),
            vec![delivery(&["mjl@mox.example"])],
            1,
            0,
        );
        assert_eq!(p.client.failed, None);
        assert_eq!(p.client.outcomes.len(), 1);
        assert!(p.client.outcomes[0].data.is_ok(), "{:?}", p.client.outcomes);
        assert_eq!(p.server.stored.len(), 1);
        assert!(p.server.stored[0].message.to_vec().ends_with(&msg()[..]));
        assert_eq!(p.server.stored[0].recipients.len(), 1);
        assert!(!p.client.s.is_tls());
    }

    #[test]
    fn starttls_delivery_with_pkix_and_requiretls() {
        let (cc, sc) = tls_pair_configs();
        let mut d = delivery(&["mjl@mox.example"]);
        d.needs.requiretls = true;
        let p = run_pair(cc, sc, vec![d], 1, 0);
        assert_eq!(p.client.failed, None, "{:?}", p.client.events);
        assert!(p.client.outcomes[0].data.is_ok());
        assert!(p
            .client
            .events
            .iter()
            .any(|e| matches!(e, Event::TlsEstablished(_))));
        assert_eq!(p.server.stored.len(), 1);
        assert_eq!(p.server.stored[0].requiretls, Some(true));
        assert!(p.server.stored[0].tls.is_some());
    }

    #[test]
    fn auth_with_each_mechanism() {
        for m in Mechanism::ALL {
            let (mut cc, mut sc) = tls_pair_configs();
            sc.submission = true;
            cc.auth = Some(Credentials {
                mechanism: Some(m),
                username: "mjl@mox.example".into(),
                password: "testtest".into(),
            });
            let mut d = delivery(&["other@remote.example"]);
            d.mail_from = ReversePath::parse("<mjl@mox.example>").unwrap();
            let p = run_pair(cc, sc, vec![d], 2, 0);
            assert_eq!(p.client.failed, None, "{m:?}: {:?}", p.client.events);
            assert!(p.client.events.contains(&Event::Authenticated(m)), "{m:?}");
            assert!(p.client.outcomes[0].data.is_ok(), "{m:?}");
            assert_eq!(p.server.stored[0].account.as_deref(), Some("mjl"));
        }
    }

    #[test]
    fn auth_strongest_mechanism_chosen_and_wrong_password_is_permanent() {
        let (mut cc, mut sc) = tls_pair_configs();
        sc.submission = true;
        cc.auth = Some(Credentials {
            mechanism: None,
            username: "mjl@mox.example".into(),
            password: "testtest".into(),
        });
        let p = run_pair(cc.clone(), sc.clone(), vec![], 2, 0);
        assert!(p
            .client
            .events
            .contains(&Event::Authenticated(Mechanism::ScramSha256Plus)));

        cc.auth = Some(Credentials {
            mechanism: Some(Mechanism::Plain),
            username: "mjl@mox.example".into(),
            password: "wrong".into(),
        });
        let p = run_pair(cc, sc, vec![delivery(&["x@remote.example"])], 2, 0);
        let e = p.client.failed.unwrap();
        assert_eq!(
            (e.stage, e.permanent, e.kind),
            (Stage::Auth, true, ErrorKind::PermanentReply)
        );
        assert!(p.client.outcomes[0].data.is_err());
        assert!(p.server.stored.is_empty());
    }

    #[test]
    fn pipelined_in_one_write_with_many_recipients() {
        let rcpts: Vec<String> = (0..60)
            .map(|i| {
                if i == 7 {
                    "unknown@mox.example".to_string()
                } else {
                    format!("r{i}@mox.example")
                }
            })
            .collect();
        let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let p = run_pair(cconfig(), sconfig(), vec![delivery(&refs)], 3, 0);
        let o = &p.client.outcomes[0];
        assert!(o.data.is_ok());
        assert_eq!(o.recipients.len(), 60);
        for (i, r) in o.recipients.iter().enumerate() {
            if i == 7 {
                let e = r.as_ref().unwrap_err();
                assert!(e.permanent);
                assert_eq!(e.reply.as_ref().unwrap().code, 550);
            } else {
                assert!(r.is_ok(), "{i}");
            }
        }
        assert_eq!(o.delivered().count(), 59);
        assert_eq!(p.server.stored[0].recipients.len(), 59);
        // MAIL and every RCPT in one write.
        let w = p
            .client
            .writes
            .iter()
            .find(|w| w.starts_with(b"MAIL FROM"))
            .expect("mail write");
        let text = String::from_utf8_lossy(w);
        assert_eq!(text.matches("RCPT TO:").count(), 60, "{text}");
    }

    #[test]
    fn rcptmax_splits_into_transactions() {
        let mut sc = sconfig();
        sc.max_recipients = 2;
        let rcpts = [
            "a@mox.example",
            "b@mox.example",
            "c@mox.example",
            "d@mox.example",
            "e@mox.example",
        ];
        let mut p = new_pair(cconfig(), sc, vec![delivery(&rcpts)], 4, 0);
        p.client.redeliver = true;
        p.run();
        assert_eq!(p.client.failed, None);
        assert_eq!(p.client.outcomes.len(), 3);
        let first = &p.client.outcomes[0];
        assert_eq!(first.delivered().count(), 2);
        assert_eq!(first.not_attempted().collect::<Vec<_>>(), vec![2, 3, 4]);
        let got: Vec<String> = p
            .server
            .stored
            .iter()
            .flat_map(|t| t.recipients.iter().map(|r| r.0.to_string()))
            .collect();
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(p.server.stored.len(), 3);
        assert!(p.server.stored.iter().all(|t| t.recipients.len() <= 2));
    }

    /// The outcome with the server's variable text removed.
    pub(super) fn summary(p: &Pair) -> Vec<(bool, Vec<Option<u16>>)> {
        p.client
            .outcomes
            .iter()
            .map(|o| {
                (
                    o.data.is_ok(),
                    o.recipients
                        .iter()
                        .map(|r| match r {
                            Ok(r) => Some(r.code),
                            Err(e) => e.reply.as_ref().map(|r| r.code),
                        })
                        .collect(),
                )
            })
            .collect()
    }

    #[test]
    fn random_chunking_pairs() {
        let (cc, sc) = tls_pair_configs();
        let want = summary(&run_pair(
            cc.clone(),
            sc.clone(),
            vec![delivery(&["a@mox.example", "unknown@mox.example"])],
            1,
            0,
        ));
        for seed in 0..8 {
            let p = run_pair(
                cc.clone(),
                sc.clone(),
                vec![delivery(&["a@mox.example", "unknown@mox.example"])],
                seed,
                7,
            );
            assert_eq!(summary(&p), want, "seed {seed}");
            assert_eq!(p.server.stored.len(), 1);
        }
        let want = summary(&run_pair(
            cconfig(),
            sconfig(),
            vec![delivery(&["a@mox.example"])],
            1,
            0,
        ));
        for seed in 0..16 {
            let p = run_pair(
                cconfig(),
                sconfig(),
                vec![delivery(&["a@mox.example"])],
                seed,
                3,
            );
            assert_eq!(summary(&p), want, "seed {seed}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn any_chunking_same_outcome_against_server(seed in any::<u64>(), max in 1usize..64) {
            let rcpts = ["a@mox.example", "unknown@mox.example", "b@mox.example"];
            let p = run_pair(cconfig(), sconfig(), vec![delivery(&rcpts), delivery(&rcpts)], seed, max);
            prop_assert_eq!(summary(&p), vec![(true, vec![Some(250), Some(550), Some(250)]); 2]);
            prop_assert_eq!(p.server.stored.len(), 2);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The rules of issue 3, as transcripts.
// ---------------------------------------------------------------------------------------

fn ehlo_lines(lines: &'static [&'static str]) -> Vec<Step> {
    let mut v = vec![S("220 mox.example"), C("EHLO localhost")];
    v.extend(lines.iter().map(|l| S(l)));
    v
}

#[test]
fn rcptmax_from_limits_only_sends_that_many() {
    let mut script = ehlo_lines(&["250-mox.example", "250 LIMITS RCPTMAX=2"]);
    script.extend([
        C("MAIL FROM:<postmaster@mox.example>"),
        S("250 ok"),
        C("RCPT TO:<a@mox.example>"),
        S("250 ok"),
        C("RCPT TO:<b@mox.example>"),
        S("250 ok"),
        C("DATA"),
        S("354 go"),
        Msg,
        S("250 2.0.0 queued"),
        C("QUIT"),
        S("221 bye"),
    ]);
    let r = run(
        config(),
        vec![delivery(&[
            "a@mox.example",
            "b@mox.example",
            "c@mox.example",
        ])],
        &script,
    );
    let o = &r.outcomes[0];
    assert!(o.data.is_ok());
    assert_eq!(o.delivered().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(o.not_attempted().collect::<Vec<_>>(), vec![2]);
    assert!(!o.recipients[2].as_ref().unwrap_err().permanent);
    assert!(r.leftover.is_empty());
}

#[test]
fn too_many_recipients_452_and_552_mean_another_transaction() {
    for (code, text) in [
        ("452", "452 4.5.3 too many recipients"),
        ("552", "552 5.5.3 too many recipients"),
    ] {
        let mut script = ehlo_lines(&["250 mox.example"]);
        script.extend([
            C("MAIL FROM:"),
            S("250 ok"),
            C("RCPT TO:<a@"),
            S("250 ok"),
            C("RCPT TO:<b@"),
            S(text),
            // No more RCPTs after "too many".
            C("DATA"),
            S("354 go"),
            Msg,
            S("250 ok"),
        ]);
        let r = run(
            config(),
            vec![delivery(&[
                "a@mox.example",
                "b@mox.example",
                "c@mox.example",
            ])],
            &script,
        );
        let o = &r.outcomes[0];
        assert!(o.data.is_ok(), "{code}");
        assert_eq!(o.not_attempted().collect::<Vec<_>>(), vec![1, 2], "{code}");
        assert_eq!(
            o.recipients[1]
                .as_ref()
                .unwrap_err()
                .reply
                .as_ref()
                .unwrap()
                .code
                .to_string(),
            code
        );
    }
    // A 452 on the first recipient is an ordinary temporary failure.
    let mut script = ehlo_lines(&["250 mox.example"]);
    script.extend([
        C("MAIL FROM:"),
        S("250 ok"),
        C("RCPT TO:"),
        S("452 4.3.1 full"),
    ]);
    let r = run(config(), vec![delivery(&["a@mox.example"])], &script);
    let e = r.outcomes[0].recipients[0].as_ref().unwrap_err();
    assert_eq!(
        (e.kind.clone(), e.permanent),
        (ErrorKind::TemporaryReply, false)
    );
}

#[test]
fn pipelined_with_failed_recipients_and_354_sends_lone_dot() {
    let mut script = ehlo_lines(&["250-mox.example", "250 PIPELINING"]);
    script.extend([
        C("MAIL FROM:"),
        C("RCPT TO:<a@"),
        C("RCPT TO:<b@"),
        C("DATA"),
        S("250 ok"),
        S("550 5.1.1 no a"),
        S("450 4.2.1 b busy"),
        S("354 go"),
        C("."),
        S("554 no valid recipients"),
    ]);
    let r = run(
        config(),
        vec![delivery(&["a@mox.example", "b@mox.example"])],
        &script,
    );
    let o = &r.outcomes[0];
    let e = o.data.as_ref().unwrap_err();
    // Mixed permanent and temporary: not permanent; the first error is reported.
    assert!(!e.permanent);
    assert_eq!(e.stage, Stage::Rcpt);
    assert_eq!(e.reply.as_ref().unwrap().code, 550);
    assert!(o.recipients[0].as_ref().unwrap_err().permanent);
    assert!(!o.recipients[1].as_ref().unwrap_err().permanent);
    assert_eq!(r.leftover, b"QUIT\r\n");
}

#[test]
fn bdat_when_chunking_offered_and_multiline_enhanced_reply_kept() {
    let mut script = ehlo_lines(&["250-mox.example", "250-CHUNKING", "250 ENHANCEDSTATUSCODES"]);
    script.extend([C("MAIL FROM:"), S("250 ok"), C("RCPT TO:"), S("250 ok")]);
    script.push(C("BDAT 78 LAST"));
    // The chunk itself: the message lines, undotted.
    for _ in 0..5 {
        script.push(C(""));
    }
    script.extend([S("554-5.7.1 rejected"), S("554 5.7.1 second line")]);
    let r = run(config(), vec![delivery(&["a@mox.example"])], &script);
    let e = r.outcomes[0].data.as_ref().unwrap_err();
    assert!(e.permanent);
    assert_eq!(e.stage, Stage::Data);
    let reply = e.reply.as_ref().unwrap();
    assert_eq!(reply.lines, vec!["rejected", "second line"]);
    assert_eq!(reply.enhanced, Some(Enhanced::new(5, 7, 1)));
}

#[test]
fn dsn_parameters_only_when_offered_and_8bitmime_body() {
    let mut d = delivery(&["a@mox.example"]);
    d.params.envid = Some("id1".into());
    d.params.ret = Some(crate::smtp::Ret::Hdrs);
    d.recipients[0].1.notify = Some(crate::smtp::Notify {
        failure: true,
        ..Default::default()
    });
    d.needs.eightbit = true;
    let mut script = ehlo_lines(&["250 8BITMIME"]);
    script.extend([
        CNot("MAIL FROM:<postmaster@mox.example> BODY=8BITMIME", "ENVID"),
        S("250 ok"),
        CNot("RCPT TO:<a@mox.example>", "NOTIFY"),
        S("250 ok"),
        C("DATA"),
        S("354 go"),
        Msg,
        S("250 ok"),
    ]);
    let r = run(config(), vec![d.clone()], &script);
    assert!(r.outcomes[0].data.is_ok());

    let mut script = ehlo_lines(&["250-DSN", "250 SIZE 1000"]);
    script.extend([
        C("MAIL FROM:<postmaster@mox.example> SIZE=78 RET=HDRS ENVID=id1"),
        S("250 ok"),
        C("RCPT TO:<a@mox.example> NOTIFY=FAILURE"),
        S("250 ok"),
        C("DATA"),
        S("354 go"),
        Msg,
        S("250 ok"),
    ]);
    assert_eq!(msg().len(), 78);
    let r = run(config(), vec![d], &script);
    assert!(r.outcomes[0].data.is_ok());
}

#[test]
fn ehlo_temporary_error_and_helo_refused() {
    let r = run(
        config(),
        vec![],
        &[S("220 x"), C("EHLO"), S("421 4.3.2 busy")],
    );
    let e = conn_err(&r);
    assert_eq!(
        (e.stage, e.permanent, e.kind.clone()),
        (Stage::Ehlo, false, ErrorKind::TemporaryReply)
    );
    let r = run(
        config(),
        vec![],
        &[
            S("220 x"),
            C("EHLO"),
            S("502 no"),
            C("HELO localhost"),
            S("550 go away"),
        ],
    );
    let e = conn_err(&r);
    assert_eq!((e.stage, e.permanent), (Stage::Ehlo, true));
}

#[test]
fn timeouts_per_rfc5321() {
    let r = run(config(), vec![], &[Silence(300)]);
    let e = conn_err(&r);
    assert_eq!(
        (e.stage, e.kind.clone(), e.permanent),
        (
            Stage::Greeting,
            ErrorKind::Transport(Transport::Timeout),
            false
        )
    );
    assert!(r.closed);

    let mut script = ehlo_lines(&["250 mox.example"]);
    script.extend([C("MAIL"), Silence(300)]);
    let r = run(config(), vec![delivery(&["a@mox.example"])], &script);
    let e = r.outcomes[0].data.as_ref().unwrap_err();
    assert_eq!(
        (e.stage, e.kind.clone()),
        (Stage::Mail, ErrorKind::Transport(Transport::Timeout))
    );

    let mut script = ehlo_lines(&["250 mox.example"]);
    script.extend([C("MAIL"), S("250 ok"), C("RCPT"), Silence(300)]);
    let r = run(config(), vec![delivery(&["a@mox.example"])], &script);
    let e = r.outcomes[0].recipients[0].as_ref().unwrap_err();
    assert_eq!(
        (e.stage, e.kind.clone()),
        (Stage::Rcpt, ErrorKind::Transport(Transport::Timeout))
    );

    let mut script = ehlo_lines(&["250 mox.example"]);
    script.extend([
        C("MAIL"),
        S("250 ok"),
        C("RCPT"),
        S("250 ok"),
        C("DATA"),
        Silence(120),
    ]);
    let r = run(config(), vec![delivery(&["a@mox.example"])], &script);
    let o = &r.outcomes[0];
    assert!(o.recipients[0].is_ok());
    let e = o.data.as_ref().unwrap_err();
    assert_eq!(
        (e.stage, e.kind.clone()),
        (Stage::Data, ErrorKind::Transport(Transport::Timeout))
    );

    let mut script = ehlo_lines(&["250 mox.example"]);
    script.extend([
        C("MAIL"),
        S("250 ok"),
        C("RCPT"),
        S("250 ok"),
        C("DATA"),
        S("354 go"),
        Msg,
        Silence(600),
    ]);
    let r = run(config(), vec![delivery(&["a@mox.example"])], &script);
    let e = r.outcomes[0].data.as_ref().unwrap_err();
    assert_eq!(
        (e.stage, e.kind.clone()),
        (Stage::Data, ErrorKind::Transport(Transport::Timeout))
    );
}

/// STARTTLS response injection: bytes after the 220 must not be taken as replies.
#[test]
fn data_after_starttls_220_is_refused() {
    let mut cfg = config();
    cfg.tls_mode = TlsMode::RequiredStartTls;
    let r = run(
        cfg,
        vec![],
        &[
            S("220 x"),
            C("EHLO"),
            S("250 STARTTLS"),
            C("STARTTLS"),
            S("220 go\r\n250 injected"),
        ],
    );
    let e = conn_err(&r);
    assert!(
        matches!(
            e.kind,
            ErrorKind::PeerMisbehaved(PeerMisbehaved::DataAfterStartTls)
        ),
        "{e:?}"
    );
    assert!(e.permanent);
    assert_eq!(e.stage, Stage::StartTls);
}

#[test]
fn auth_without_usable_mechanism_and_sasl_failure() {
    let mut cfg = config();
    cfg.auth = Some(Credentials {
        mechanism: None,
        username: "test".into(),
        password: "test".into(),
    });
    let r = run(
        cfg.clone(),
        vec![],
        &[S("220 x"), C("EHLO"), S("250 AUTH GSSAPI")],
    );
    assert_eq!(
        conn_err(&r).kind,
        ErrorKind::PeerIncompatible(PeerIncompatible::NoAuthMechanism)
    );
    // -PLUS is never chosen without TLS.
    let r = run(
        cfg.clone(),
        vec![],
        &[S("220 x"), C("EHLO"), S("250 AUTH SCRAM-SHA-256-PLUS")],
    );
    assert_eq!(
        conn_err(&r).kind,
        ErrorKind::PeerIncompatible(PeerIncompatible::NoAuthMechanism)
    );
    let r = run(
        cfg,
        vec![],
        &[
            S("220 x"),
            C("EHLO"),
            S("250 AUTH PLAIN"),
            C("AUTH PLAIN"),
            S("535 5.7.8 bad credentials"),
        ],
    );
    let e = conn_err(&r);
    assert_eq!((e.stage, e.permanent), (Stage::Auth, true));
    assert_eq!(e.enhanced(), Some(Enhanced::new(5, 7, 8)));
}

/// A self-signed certificate: its server config and its SPKI.
fn dane_server() -> (Arc<rustls::ServerConfig>, Vec<u8>, Vec<u8>) {
    let params = rcgen::CertificateParams::new(vec!["other.example".to_string()]).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let cfg =
        crate::tls::server_config_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .unwrap();
    (cfg, cert.der().to_vec(), key.public_key_der())
}

#[test]
fn dane_ee_records_checked_in_handshake() {
    let (srv, der, spki) = dane_server();
    let sha256 = |b: &[u8]| {
        ring::digest::digest(&ring::digest::SHA256, b)
            .as_ref()
            .to_vec()
    };
    let sha512 = |b: &[u8]| {
        ring::digest::digest(&ring::digest::SHA512, b)
            .as_ref()
            .to_vec()
    };
    let good = [
        Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: sha256(&spki),
        },
        Tlsa {
            usage: 3,
            selector: 0,
            matching: 1,
            data: sha256(&der),
        },
        Tlsa {
            usage: 3,
            selector: 1,
            matching: 2,
            data: sha512(&spki),
        },
        Tlsa {
            usage: 3,
            selector: 0,
            matching: 0,
            data: der.clone(),
        },
    ];
    let bad = [
        Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: sha256(b"other"),
        },
        // Usage 1 (PKIX-EE) is not used for SMTP.
        Tlsa {
            usage: 1,
            selector: 1,
            matching: 1,
            data: sha256(&spki),
        },
        // Usage 2 must name an anchor of a chain that also verifies.
        Tlsa {
            usage: 2,
            selector: 1,
            matching: 1,
            data: sha256(b"nothing"),
        },
    ];
    for (records, ok) in good
        .iter()
        .map(|r| (r, true))
        .chain(bad.iter().map(|r| (r, false)))
    {
        let mut cfg = config();
        cfg.tls_mode = TlsMode::RequiredStartTls;
        cfg.remote_hostname = "mx.mox.example".into(); // DANE-EE: name not checked.
        cfg.verification = Verify::Dane(DaneCheck::new(vec![records.clone()]));
        let mut script = ehlo_lines(&["250 STARTTLS"]);
        script.extend([C("STARTTLS"), StartTls(Arc::clone(&srv))]);
        if ok {
            script.extend([C("EHLO"), S("250 mox.example"), C("QUIT"), S("221 bye")]);
        }
        let r = run(cfg, vec![], &script);
        if ok {
            assert_eq!(r.failed, None, "{records:?}");
            assert!(r
                .events
                .iter()
                .any(|e| matches!(e, Event::TlsEstablished(_))));
        } else {
            let e = conn_err(&r);
            assert!(
                matches!(e.kind, ErrorKind::Transport(Transport::Tls(_))),
                "{records:?}: {e:?}"
            );
            assert!(e.permanent);
        }
    }
}

#[test]
fn opportunistic_tls_failure_is_temporary() {
    // The server's certificate is fine, but PKIX with the wrong name fails; without
    // RequiredStartTls the error is temporary (the queue may retry without TLS).
    let mut cfg = config();
    cfg.verification = Verify::Pkix(testkit::client_tls());
    cfg.remote_hostname = "wrong.example".into();
    let mut script = ehlo_lines(&["250 STARTTLS"]);
    script.extend([C("STARTTLS"), StartTls(testkit::server_tls())]);
    let r = run(cfg, vec![], &script);
    let e = conn_err(&r);
    assert!(matches!(e.kind, ErrorKind::Transport(Transport::Tls(_))));
    assert!(!e.permanent);
}

/// Reporting verification (MTA-STS `testing`, `TLS-Required: No`): `IgnoreErrors` used to
/// accept any certificate without looking, so the TLS report counted an untrusted or
/// misnamed certificate as a success. The certificate is now verified (PKIX or DANE), a
/// failure reported with its RFC 8460 reason before TLS is announced, and the session
/// goes on over TLS; a good certificate reports nothing.
#[test]
fn reporting_verification_goes_on_and_reports() {
    use crate::tls::Tlsa;
    let der = testkit::server_cert_der();
    let roots = |der: Vec<u8>| {
        let mut r = rustls::RootCertStore::empty();
        r.add(rustls::pki_types::CertificateDer::from(der)).unwrap();
        Arc::new(r)
    };
    let other_key = rcgen::KeyPair::generate().unwrap();
    let other = rcgen::CertificateParams::new(vec!["mox.example".to_string()])
        .unwrap()
        .self_signed(&other_key)
        .unwrap();
    let ee = Tlsa::for_certificate(3, 1, 1, &der).unwrap();
    let wrong = Tlsa {
        data: vec![0; 32],
        ..ee.clone()
    };
    // A self-signed CA certificate as the server's own (the harness's mx-selfsigned):
    // webpki says "CA used as end entity", the report says not trusted.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(vec!["mox.example".to_string()]).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let ca_server =
        crate::tls::server_config_from_pem(ca.pem().as_bytes(), ca_key.serialize_pem().as_bytes())
            .unwrap();
    let cases: Vec<(Verify, &str, Option<TlsFailureReason>)> = vec![
        (Verify::PkixReport(roots(der.clone())), "mox.example", None),
        (
            Verify::PkixReport(roots(der.clone())),
            "wrong.example",
            Some(TlsFailureReason::CertificateHostMismatch),
        ),
        (
            Verify::PkixReport(roots(other.der().to_vec())),
            "mox.example",
            Some(TlsFailureReason::CertificateNotTrusted),
        ),
        (
            Verify::DaneReport(DaneCheck::new(vec![ee])),
            "other.example",
            None,
        ),
        (
            Verify::DaneReport(DaneCheck::new(vec![wrong])),
            "mox.example",
            Some(TlsFailureReason::Other),
        ),
    ];
    let cases = cases
        .into_iter()
        .map(|(v, h, w)| (v, h, w, testkit::server_tls()))
        .chain([(
            Verify::PkixReport(roots(der.clone())),
            "mox.example",
            Some(TlsFailureReason::CertificateNotTrusted),
            ca_server,
        )]);
    for (verify, host, want, server) in cases {
        let name = format!("{verify:?} {host}");
        let mut cfg = config();
        cfg.verification = verify;
        cfg.remote_hostname = host.into();
        let mut script = ehlo_lines(&["250 STARTTLS"]);
        script.extend([
            C("STARTTLS"),
            StartTls(server),
            C("EHLO"),
            S("250 mox.example"),
            C("QUIT"),
            S("221 bye"),
        ]);
        let r = run(cfg, vec![], &script);
        assert_eq!(r.failed, None, "{name}: {:?}", r.events);
        let failed: Vec<TlsFailureReason> = r
            .events
            .iter()
            .filter_map(|e| match e {
                Event::VerifyFailed(f) => Some(f.reason),
                _ => None,
            })
            .collect();
        assert_eq!(failed, want.into_iter().collect::<Vec<_>>(), "{name}");
        let at = |f: fn(&Event) -> bool| r.events.iter().position(f);
        let established = at(|e| matches!(e, Event::TlsEstablished(_)));
        assert!(established.is_some(), "{name}: {:?}", r.events);
        if want.is_some() {
            assert!(at(|e| matches!(e, Event::VerifyFailed(_))) < established);
        }
    }
}

/// DANE names (RFC 7672 3.2.2, 8.1): `ClientVerify::DaneNames` existed but DANE used only
/// the MX host name, so a CNAME-expanded host sent the wrong SNI and a DANE-TA chain for the
/// MX name as published failed. The SNI is now the TLSA base domain; DANE-TA accepts a
/// chain for it or for the MX host name before expansion, nothing else; DANE-EE checks no
/// name.
#[test]
fn dane_sni_and_reference_names() {
    use crate::tls::Tlsa;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["mx.original.example".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let chain = format!("{}{}", leaf.pem(), ca.pem());
    let srv =
        crate::tls::server_config_from_pem(chain.as_bytes(), leaf_key.serialize_pem().as_bytes())
            .unwrap();
    let ta = Tlsa::for_certificate(2, 1, 1, ca.der()).unwrap();
    let ee = Tlsa::for_certificate(3, 1, 1, leaf.der()).unwrap();
    let check = |r: &Tlsa, names: &[&str]| DaneCheck {
        records: vec![r.clone()],
        sni: Some("b.host.example".into()),
        names: names.iter().map(|n| n.to_string()).collect(),
    };
    let cases = [
        (check(&ta, &["b.host.example", "mx.original.example"]), true),
        (check(&ta, &["b.host.example"]), false),
        (check(&ee, &["b.host.example"]), true),
        (check(&ee, &[]), true),
    ];
    for (dane, ok) in cases {
        let name = format!("{dane:?}");
        let mut cfg = config();
        cfg.tls_mode = TlsMode::RequiredStartTls;
        cfg.remote_hostname = "mx.original.example".into();
        cfg.verification = Verify::Dane(dane);
        let mut script = ehlo_lines(&["250 STARTTLS"]);
        script.extend([C("STARTTLS"), StartTls(Arc::clone(&srv))]);
        if ok {
            script.extend([C("EHLO"), S("250 mox.example"), C("QUIT"), S("221 bye")]);
        }
        let mut h = Harness::new(cfg, vec![], Vec::new());
        h.run(&script);
        if ok {
            assert_eq!(h.res.failed, None, "{name}");
        } else {
            let e = h.res.failed.as_ref().expect("handshake failure");
            assert!(
                matches!(e.kind, ErrorKind::Transport(Transport::Tls(_))),
                "{name}: {e:?}"
            );
        }
        let sni = h
            .srv_tls
            .as_ref()
            .and_then(|t| t.info())
            .and_then(|i| i.sni);
        if ok {
            assert_eq!(sni.as_deref(), Some("b.host.example"), "{name}");
        }
    }
}

#[test]
fn deliver_while_busy_is_misuse() {
    let clock = TestClock::new();
    let mut c = ClientSession::new(Arc::new(config()), clock.now());
    c.handle(
        clock.now(),
        Input::Deliver(Box::new(delivery(&["a@mox.example"]))),
    )
    .unwrap();
    let e = c
        .handle(
            clock.now(),
            Input::Deliver(Box::new(delivery(&["a@mox.example"]))),
        )
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Misuse(_)));
}

/// The seed scenarios, every reply delivered in random pieces: same outcomes.
fn chunked_scenarios(chunks: Vec<usize>) -> Vec<String> {
    let scripts: Vec<(Vec<Delivery>, Vec<Step>)> = vec![
        (vec![], vec![S("220-mox.example"), S("500 different code")]),
        (
            vec![delivery(&["a@mox.example", "b@mox.example"])],
            vec![
                S("220 mox.example"),
                C("EHLO"),
                S("250-mox.example\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES"),
                C("MAIL"),
                C("RCPT"),
                C("RCPT"),
                C("DATA"),
                S("250 ok\r\n250 ok\r\n550-5.1.1 no\r\n550 5.1.1 really\r\n354 go"),
                Msg,
                S("250 2.0.0 ok"),
                C("QUIT"),
                S("221 bye"),
            ],
        ),
        (
            vec![delivery(&["a@mox.example"])],
            vec![
                S("220 mox.example"),
                C("EHLO"),
                S("250 PIPELINING"),
                C("MAIL"),
                C("RCPT"),
                C("DATA"),
                S("550 ok"),
                Close,
            ],
        ),
    ];
    scripts
        .into_iter()
        .map(|(d, s)| {
            let r = run_chunked(config(), d, &s, chunks.clone());
            format!("{:?} {:?}", r.outcomes, r.failed)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn any_chunking_of_server_bytes_same_outcome(chunks in proptest::collection::vec(1usize..20, 1..30)) {
        prop_assert_eq!(chunked_scenarios(chunks), chunked_scenarios(Vec::new()));
    }

    #[test]
    fn arbitrary_server_bytes_never_panic(
        prefix in 0usize..3,
        junk in proptest::collection::vec(any::<u8>(), 0..400),
        tls in any::<bool>(),
    ) {
        let clock = TestClock::new();
        let mut cfg = config();
        cfg.tls_mode = if tls { TlsMode::RequiredStartTls } else { TlsMode::Opportunistic };
        cfg.auth = Some(Credentials { mechanism: None, username: "u".into(), password: "p".into() });
        let mut c = ClientSession::new(Arc::new(cfg), clock.now());
        c.handle(clock.now(), Input::Deliver(Box::new(delivery(&["a@mox.example"])))).unwrap();
        let prefixes: [&[u8]; 3] = [
            b"",
            b"220 x\r\n",
            b"220 x\r\n250-x\r\n250-PIPELINING\r\n250-AUTH CRAM-MD5 PLAIN\r\n250 STARTTLS\r\n",
        ];
        let mut input = prefixes[prefix].to_vec();
        input.extend_from_slice(&junk);
        for piece in input.chunks(17) {
            let _ = c.handle(clock.now(), Input::Received(piece));
            let mut tx = Vec::new();
            for _ in 0..1000 {
                if matches!(c.poll(clock.now(), &mut tx), Output::Idle { .. } | Output::Close) {
                    break;
                }
            }
        }
        let _ = c.handle(clock.now(), Input::PeerClosed);
        let mut tx = Vec::new();
        for _ in 0..1000 {
            if matches!(c.poll(clock.now(), &mut tx), Output::Idle { .. } | Output::Close) {
                break;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors by fault
// ---------------------------------------------------------------------------------------

/// The fault an error kind names, for the table below.
fn fault(k: &ErrorKind) -> &'static str {
    match k {
        ErrorKind::TemporaryReply => "temporary-reply",
        ErrorKind::PermanentReply => "permanent-reply",
        ErrorKind::PeerMisbehaved(_) => "peer-misbehaved",
        ErrorKind::PeerIncompatible(_) => "peer-incompatible",
        ErrorKind::Transport(_) => "transport",
        ErrorKind::Misuse(_) => "misuse",
        ErrorKind::NotAttempted => "not-attempted",
    }
}

/// Each fault has its own kind. Before, error replies were one `Status` kind, a refused
/// STARTTLS and a failed handshake were one `Tls(String)` kind told apart by text, and a
/// missing mechanism or extension sat beside protocol errors without saying whose fault.
#[test]
fn error_kinds_by_fault() {
    let required = || {
        let mut c = config();
        c.tls_mode = TlsMode::RequiredStartTls;
        c
    };
    let wrong_name = || {
        let mut c = required();
        c.verification = Verify::Pkix(testkit::client_tls());
        c.remote_hostname = "wrong.example".into();
        c
    };
    let mut handshake = ehlo_lines(&["250 STARTTLS"]);
    handshake.extend([C("STARTTLS"), StartTls(testkit::server_tls())]);
    let auth = || {
        let mut c = config();
        c.auth = Some(Credentials {
            mechanism: None,
            username: "test".into(),
            password: "test".into(),
        });
        c
    };
    type Case = (
        &'static str,
        ClientConfig,
        Vec<Step>,
        &'static str,
        fn(&ErrorKind) -> bool,
    );
    let cases: Vec<Case> = vec![
        (
            "421 greeting",
            config(),
            vec![S("421 4.3.2 busy")],
            "temporary-reply",
            |k| *k == ErrorKind::TemporaryReply,
        ),
        (
            "554 greeting",
            config(),
            vec![S("554 5.7.1 go away")],
            "permanent-reply",
            |k| *k == ErrorKind::PermanentReply,
        ),
        (
            "garbage greeting",
            config(),
            vec![S("bogus")],
            "peer-misbehaved",
            |k| {
                matches!(
                    k,
                    ErrorKind::PeerMisbehaved(PeerMisbehaved::UnparsableReply(_))
                )
            },
        ),
        (
            "354 greeting",
            config(),
            vec![S("354 what")],
            "peer-misbehaved",
            |k| *k == ErrorKind::PeerMisbehaved(PeerMisbehaved::UnexpectedCode),
        ),
        (
            "bad base64 in 334",
            auth(),
            vec![
                S("220 x"),
                C("EHLO"),
                S("250 AUTH LOGIN"),
                C("AUTH LOGIN"),
                S("334 !!!"),
            ],
            "peer-misbehaved",
            |k| *k == ErrorKind::PeerMisbehaved(PeerMisbehaved::BadChallengeEncoding),
        ),
        (
            "STARTTLS refused",
            required(),
            vec![
                S("220 x"),
                C("EHLO"),
                S("250 x"),
                C("STARTTLS"),
                S("454 4.7.0 no tls today"),
            ],
            "peer-incompatible",
            |k| *k == ErrorKind::PeerIncompatible(PeerIncompatible::StartTls),
        ),
        (
            "no AUTH mechanism",
            auth(),
            vec![S("220 x"), C("EHLO"), S("250 AUTH GSSAPI")],
            "peer-incompatible",
            |k| *k == ErrorKind::PeerIncompatible(PeerIncompatible::NoAuthMechanism),
        ),
        (
            "EOF",
            config(),
            vec![S("220 x"), C("EHLO"), Close],
            "transport",
            |k| *k == ErrorKind::Transport(Transport::Closed),
        ),
        ("silence", config(), vec![Silence(300)], "transport", |k| {
            *k == ErrorKind::Transport(Transport::Timeout)
        }),
        (
            "TLS handshake: wrong name",
            wrong_name(),
            handshake,
            "transport",
            |k| {
                matches!(k, ErrorKind::Transport(Transport::Tls(f))
                    if f.reason == TlsFailureReason::CertificateHostMismatch)
            },
        ),
    ];
    for (name, cfg, script, want_fault, want_kind) in cases {
        let r = run(cfg, vec![], &script);
        let e = conn_err(&r);
        assert_eq!(fault(&e.kind), want_fault, "{name}: {e:?}");
        assert!(want_kind(&e.kind), "{name}: {e:?}");
        // Error replies always carry the reply; transport failures never have one.
        if e.is_reply() {
            assert!(e.reply.is_some(), "{name}: {e:?}");
        }
        if e.is_transport() {
            assert_eq!(e.reply, None, "{name}: {e:?}");
        }
        assert!(r.closed, "{name}");
    }
}

/// The message-level kinds: what the server lacks for this delivery is incompatibility, not
/// an error reply, and API misuse is the caller's.
#[test]
fn delivery_kinds_by_fault() {
    let mut d = delivery(&["a@mox.example"]);
    d.needs.smtputf8 = true;
    let mut script = ehlo_lines(&["250 mox.example"]);
    script.extend([C("QUIT"), S("221 bye")]);
    let r = run(config(), vec![d], &script);
    let e = r.outcomes[0].data.as_ref().unwrap_err();
    assert_eq!(
        (fault(&e.kind), &e.kind, e.permanent),
        (
            "peer-incompatible",
            &ErrorKind::PeerIncompatible(PeerIncompatible::SmtpUtf8),
            true
        )
    );

    let r = run(config(), vec![delivery(&[])], &script);
    let e = r.outcomes[0].data.as_ref().unwrap_err();
    assert_eq!(fault(&e.kind), "misuse", "{e:?}");

    // A second delivery while one is in flight is refused without ending the session.
    let mut h = Harness::new(config(), vec![delivery(&["a@mox.example"])], vec![]);
    let mut script = ehlo_lines(&["250 mox.example"]);
    script.push(C("MAIL"));
    h.run(&script);
    let now = h.clock.now();
    let e =
        h.c.handle(now, Input::Deliver(Box::new(delivery(&["b@mox.example"]))))
            .unwrap_err();
    assert_eq!(fault(&e.kind), "misuse", "{e:?}");
    assert_eq!(h.c.error(), None);
}

/// An I/O failure the driver reports is a transport error on the transaction in flight and
/// on the session, never a protocol error (drivers used to make one up: `Protocol("i/o:
/// ...")`), and the session's error keeps that kind whatever comes after it.
#[test]
fn io_error_is_transport_and_sticky() {
    let mut h = Harness::new(config(), vec![delivery(&["a@mox.example"])], vec![]);
    let mut script = ehlo_lines(&["250 mox.example"]);
    script.push(C("MAIL"));
    h.run(&script);
    let now = h.clock.now();
    h.c.handle(now, Input::IoError("connection reset by peer".into()))
        .unwrap();
    h.drain();
    let want = ErrorKind::Transport(Transport::Io("connection reset by peer".into()));
    let e = h.res.failed.clone().expect("session failed");
    assert_eq!((e.stage, &e.kind), (Stage::Mail, &want));
    assert_eq!(kind_of(&h.res.outcomes[0].data), Some(&want));
    assert!(h.res.closed);
    // Garbage, EOF, a timeout and a delivery afterwards all get the same error back.
    for input in [
        Input::Received(b"bogus\r\n"),
        Input::PeerClosed,
        Input::Timeout,
        Input::IoError("broken pipe".into()),
        Input::Deliver(Box::new(delivery(&["b@mox.example"]))),
    ] {
        h.clock.advance(Duration::from_secs(600));
        let now = h.clock.now();
        assert_eq!(h.c.handle(now, input).unwrap_err(), e);
    }
    assert_eq!(h.c.error(), Some(&e));

    // The same for a protocol error: EOF after it does not turn it into a transport error.
    let mut h = Harness::new(config(), vec![], vec![]);
    h.run(&[S("bogus")]);
    let e = h.res.failed.clone().expect("session failed");
    assert_eq!(fault(&e.kind), "peer-misbehaved");
    let now = h.clock.now();
    assert_eq!(h.c.handle(now, Input::PeerClosed).unwrap_err(), e);
    assert_eq!(h.c.error(), Some(&e));
}

/// Issue 15: a crash between the remote's reply to the data and the queue's record of it
/// sends the message again, and waiting for the 221 after QUIT widened that window. With
/// `skip_quit_response` the session closes as soon as QUIT is out, with the same outcome;
/// without it, it still waits for the 221.
#[test]
fn skip_quit_response_closes_after_quit() {
    let mut script = ehlo_lines(&["250 mox.example"]);
    script.extend([
        C("MAIL FROM:"),
        S("250 ok"),
        C("RCPT TO:"),
        S("250 ok"),
        C("DATA"),
        S("354 go"),
        Msg,
        S("250 2.0.0 queued"),
        C("QUIT"),
    ]);
    let mut cfg = config();
    cfg.skip_quit_response = true;
    let r = run(cfg, vec![delivery(&["a@mox.example"])], &script);
    assert!(r.closed, "closed after QUIT");
    assert_eq!(r.failed, None);
    assert!(r.outcomes[0].data.is_ok());
    assert!(r.leftover.is_empty(), "{:?}", r.leftover);
    let r = run(config(), vec![delivery(&["a@mox.example"])], &script);
    assert!(!r.closed, "waits for the 221 by default");
}
