//! A shared end-to-end suite for the runtime crates (feature `testing`): a counting
//! answerer, a blocking SMTP test client, a server started through any runtime's `run`, and
//! the scenarios every runtime must pass. Real sockets on loopback, every wait bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a failure is a test failure

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rmox_core::server::{
    Completion, CredentialsAnswer, Effect, PasswordCheck, ServerConfig, Verdict,
};

use rmox_core::client::Needs;
use rmox_core::delivery::{
    builtin_host_tls, Completion as DCompletion, DeliveryConfig, DeliverySession,
    Effect as DEffect, HostTls, Job,
};
use rmox_core::dns::{LookupResult, Record, RecordType};
use rmox_core::queue::AttemptResult;
use rmox_core::smtp::{ForwardPath, Host, MailParams, RcptParams, ReversePath};

use crate::outbound::DeliveryAnswerer;
use crate::{Answerer, Shutdown};

/// Accepts everything and counts stored transactions.
#[derive(Default)]
pub struct Counting {
    /// Transactions stored.
    pub stored: AtomicUsize,
    /// Spooled message data, in memory.
    pub spools: rmox_core::server::MemorySpool,
}

impl Answerer for Counting {
    fn answer(&self, effect: Effect) -> Completion {
        match effect {
            Effect::CheckConnection { .. }
            | Effect::CheckSender { .. }
            | Effect::CheckRecipient { .. } => Completion::Verdict(Verdict::Accept),
            Effect::Dns(lookups) => {
                Completion::Dns(lookups.iter().map(|_| LookupResult::NxDomain).collect())
            }
            Effect::Spool { spool, chunk, last } => {
                Completion::Spool(self.spools.append(spool, &chunk, last))
            }
            Effect::Store(_) => {
                self.stored.fetch_add(1, Ordering::SeqCst);
                Completion::Stored(rmox_core::server::StoreOutcome::Delivered)
            }
            Effect::CheckPassword { .. } => Completion::Password(PasswordCheck::Invalid),
            Effect::LookupCredentials { .. } => Completion::Credentials(CredentialsAnswer::Unknown),
        }
    }

    fn event(&self, _cid: u64, event: &rmox_core::server::Event) {
        if let rmox_core::server::Event::SpoolEnded(id) = event {
            self.spools.end(*id);
        }
    }
}

/// A runtime's `run`, given one listener and the session config for it.
pub type RunFn = Box<
    dyn FnOnce(
            TcpListener,
            Arc<ServerConfig>,
            Arc<dyn Answerer>,
            Arc<Shutdown>,
        ) -> std::io::Result<()>
        + Send,
>;

/// A server running on a background thread.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its answers.
    pub answerer: Arc<Counting>,
    /// Its shutdown signal.
    pub shutdown: Arc<Shutdown>,
    /// `run`'s result once it returns.
    pub done: mpsc::Receiver<std::io::Result<()>>,
}

impl Server {
    /// Starts `run` on `listener` (non-blocking, bound by the caller).
    pub fn start(listener: TcpListener, run: RunFn) -> Server {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let answerer = Arc::new(Counting::default());
        let shutdown = Shutdown::new();
        let (tx, done) = mpsc::channel();
        let config = Arc::new(ServerConfig::new("mx.test.example"));
        let a: Arc<dyn Answerer> = answerer.clone();
        let s = Arc::clone(&shutdown);
        std::thread::spawn(move || {
            let _ = tx.send(run(listener, config, a, s));
        });
        Server {
            addr,
            answerer,
            shutdown,
            done,
        }
    }

    /// Triggers shutdown and fails unless `run` returns Ok within 10 s.
    pub fn stop(self) {
        self.shutdown.trigger();
        match self.done.recv_timeout(Duration::from_secs(10)) {
            Ok(r) => r.unwrap(),
            Err(e) => panic!("run did not stop within 10 s: {e}"),
        }
    }
}

/// A blocking SMTP client for tests.
pub struct Client {
    r: BufReader<TcpStream>,
    /// The write side (for sending partial data).
    pub w: TcpStream,
}

impl Client {
    /// Connects with 10 s timeouts.
    pub fn connect(addr: SocketAddr) -> Client {
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        w.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        }
    }

    /// Reads one (possibly multi-line) reply; returns its lines.
    pub fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).unwrap();
            assert!(n > 0, "connection closed; reply so far: {lines:?}");
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    /// Sends `cmd` and asserts the reply's last line starts with `want`.
    pub fn expect(&mut self, cmd: &str, want: &str) -> Vec<String> {
        self.w.write_all(cmd.as_bytes()).unwrap();
        let lines = self.reply();
        let last = lines.last().unwrap();
        assert!(
            last.starts_with(want),
            "{cmd:?}: want {want}, got {lines:?}"
        );
        lines
    }

    /// Asserts the peer closes the connection.
    pub fn expect_eof(&mut self) {
        let mut rest = String::new();
        let n = self.r.read_line(&mut rest).unwrap();
        assert_eq!(n, 0, "expected close, got {rest:?}");
    }
}

/// One full transaction is stored, then shutdown returns Ok.
pub fn one_transaction_then_shutdown(server: Server) {
    let mut c = Client::connect(server.addr);
    let greeting = c.reply();
    assert!(greeting[0].starts_with("220 "), "{greeting:?}");
    let ehlo = c.expect("EHLO client.test.example\r\n", "250 ");
    assert!(ehlo[0].starts_with("250-mx.test.example"), "{ehlo:?}");
    c.expect("MAIL FROM:<alice@example.org>\r\n", "250 ");
    c.expect("RCPT TO:<bob@test.example>\r\n", "250 ");
    c.expect("DATA\r\n", "354 ");
    c.expect(
        "From: <alice@example.org>\r\nTo: <bob@test.example>\r\nSubject: hi\r\n\r\nhello\r\n.\r\n",
        "250 ",
    );
    c.expect("QUIT\r\n", "221 ");
    c.expect_eof();
    assert_eq!(server.answerer.stored.load(Ordering::SeqCst), 1);
    server.stop();
}

/// Shutdown answers an idle session 421 and closes it; the listener is gone after `run`
/// returns (within 1 s: an io_uring accept may hold it a moment).
pub fn shutdown_closes_idle_sessions_with_421(server: Server) {
    let addr = server.addr;
    let mut c = Client::connect(addr);
    c.reply();
    c.expect("EHLO client.test.example\r\n", "250 ");
    server.shutdown.trigger();
    let lines = c.reply();
    assert!(lines[0].starts_with("421 "), "{lines:?}");
    c.expect_eof();
    assert_eq!(server.answerer.stored.load(Ordering::SeqCst), 0);
    server.stop();
    let mut tries = 0;
    while TcpStream::connect(addr).is_ok() {
        tries += 1;
        assert!(tries < 100, "still accepting after run returned");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Shutdown waits for a message being received, which is then acknowledged and stored.
pub fn shutdown_waits_for_message_in_progress(server: Server) {
    let mut c = Client::connect(server.addr);
    c.reply();
    c.expect("EHLO client.test.example\r\n", "250 ");
    c.expect("MAIL FROM:<alice@example.org>\r\n", "250 ");
    c.expect("RCPT TO:<bob@test.example>\r\n", "250 ");
    c.expect("DATA\r\n", "354 ");
    c.w.write_all(b"Subject: hi\r\n\r\nfirst half\r\n").unwrap();
    server.shutdown.trigger();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        matches!(server.done.try_recv(), Err(mpsc::TryRecvError::Empty)),
        "run returned while a message was being received"
    );
    c.expect("second half\r\n.\r\n", "250 ");
    assert_eq!(server.answerer.stored.load(Ordering::SeqCst), 1);
    // New commands are refused from now on; QUIT still works.
    c.expect("QUIT\r\n", "221 ");
    c.expect_eof();
    match server.done.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => r.unwrap(),
        Err(e) => panic!("run did not stop within 10 s: {e}"),
    }
}

// ---- the outbound loop ----

/// Runs the outbound loop on one runtime: `block_on(|rt| deliver(rt, session, answerer))`.
pub type DeliverFn<'a> =
    &'a dyn Fn(DeliverySession, Arc<dyn DeliveryAnswerer>) -> rmox_core::delivery::Report;

/// DNS from a table (everything else: no data) and today's TLS requirement.
#[derive(Default)]
pub struct StaticDns {
    /// Answers by (name, type).
    pub records: std::collections::HashMap<(String, RecordType), Vec<Record>>,
}

impl StaticDns {
    /// Adds an MX record.
    pub fn mx(mut self, domain: &str, preference: u16, host: &str) -> StaticDns {
        self.records
            .entry((domain.into(), RecordType::Mx))
            .or_default()
            .push(Record::Mx {
                preference,
                host: host.into(),
            });
        self
    }

    /// Adds an A record.
    pub fn a(mut self, host: &str, ip: std::net::Ipv4Addr) -> StaticDns {
        self.records
            .entry((host.into(), RecordType::A))
            .or_default()
            .push(Record::A(ip));
        self
    }
}

impl DeliveryAnswerer for StaticDns {
    fn answer(&self, effect: DEffect) -> DCompletion {
        match effect {
            DEffect::Dns(lookups) => DCompletion::Dns(
                lookups
                    .iter()
                    .map(|l| match self.records.get(&(l.name.clone(), l.rtype)) {
                        Some(r) => LookupResult::Records {
                            records: r.clone(),
                            authentic: false,
                        },
                        None => LookupResult::NoData,
                    })
                    .collect(),
            ),
            DEffect::HostTls { requiretls, .. } => {
                DCompletion::HostTls(builtin_host_tls(requiretls, None))
            }
            DEffect::Connect { .. } => DCompletion::ConnectFailed("not the answerer's".into()),
        }
    }

    fn host_tls(&self, _domain: &str, _host: &str, requiretls: Option<bool>) -> HostTls {
        builtin_host_tls(requiretls, None)
    }
}

/// A delivery of one message from alice@example.org to bob@test.example, MX hosts on
/// `port`, giving up on a connection after `connect_timeout`.
pub fn delivery(port: u16, connect_timeout: Duration) -> DeliverySession {
    let mut config = DeliveryConfig::new(Host::parse("client.example.org").unwrap());
    config.smtp_port = port;
    config.connect_timeout = connect_timeout;
    let job = Job {
        domain: "test.example".into(),
        mail_from: ReversePath::parse("<alice@example.org>").unwrap(),
        recipients: vec![(
            ForwardPath::parse("<bob@test.example>").unwrap(),
            RcptParams::default(),
        )],
        params: MailParams::default(),
        message: Arc::from(
            &b"From: <alice@example.org>\r\nTo: <bob@test.example>\r\nSubject: hi\r\n\r\nhello\r\n"
                [..],
        ),
        needs: Needs::default(),
        requiretls: None,
        seed: 7,
    };
    DeliverySession::new(Arc::new(config), job, crate::now())
}

/// The outbound loop delivers to an in-process SMTP server (the same runtime's `run`): one
/// transaction stored, the recipient delivered by the MX host, TLS recorded as plaintext
/// (the server offers no STARTTLS).
pub fn outbound_delivers(server: Server, deliver: DeliverFn<'_>) {
    let dns = StaticDns::default()
        .mx("test.example", 10, "mx.test.example")
        .a("mx.test.example", ip4(server.addr));
    let report = deliver(
        delivery(server.addr.port(), Duration::from_secs(5)),
        Arc::new(dns),
    );
    assert_eq!(report.results.len(), 1, "{report:?}");
    match &report.results[0] {
        AttemptResult::Delivered { host, .. } => {
            assert_eq!(host.as_deref(), Some("mx.test.example"))
        }
        r => panic!("not delivered: {r:?}"),
    }
    assert_eq!(report.remote_mta.as_deref(), Some("mx.test.example"));
    assert_eq!(report.tls.len(), 1, "{report:?}");
    assert_eq!(
        report.tls[0].result,
        rmox_core::delivery::TlsResult::Plaintext
    );
    assert_eq!(server.answerer.stored.load(Ordering::SeqCst), 1);
    server.stop();
}

/// [`StaticDns`] answering DNS only asynchronously ([`DeliveryAnswerer::lookup`]): a DNS
/// question on the blocking pool ([`DeliveryAnswerer::answer`]) gets a temporary failure.
pub struct AsyncOnlyDns {
    dns: StaticDns,
    /// DNS questions answered through [`DeliveryAnswerer::lookup`].
    pub asked: AtomicUsize,
    /// DNS questions that reached [`DeliveryAnswerer::answer`].
    pub blocking: AtomicUsize,
}

impl DeliveryAnswerer for AsyncOnlyDns {
    fn answer(&self, effect: DEffect) -> DCompletion {
        match effect {
            DEffect::Dns(lookups) => {
                self.blocking.fetch_add(1, Ordering::SeqCst);
                DCompletion::Dns(
                    lookups
                        .iter()
                        .map(|_| LookupResult::TempFail("blocking pool".into()))
                        .collect(),
                )
            }
            other => self.dns.answer(other),
        }
    }

    fn lookup(
        &self,
        lookups: Vec<rmox_core::dns::Lookup>,
    ) -> Result<crate::outbound::AsyncAnswers, Vec<rmox_core::dns::Lookup>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        let answers = match self.dns.answer(DEffect::Dns(lookups)) {
            DCompletion::Dns(a) => a,
            _ => Vec::new(),
        };
        Ok(Box::pin(async move {
            // Answered later, as a resolver would.
            futures_lite::future::yield_now().await;
            answers
        }))
    }

    fn host_tls(&self, domain: &str, host: &str, requiretls: Option<bool>) -> HostTls {
        self.dns.host_tls(domain, host, requiretls)
    }
}

/// Issue 13: delivery's DNS (MX plan, addresses) was answered by blocking calls on the
/// blocking pool; with an answerer that answers asynchronously, every question goes
/// through [`DeliveryAnswerer::lookup`] and none to the blocking pool, and the MX
/// fallback still works.
pub fn outbound_dns_async(server: Server, deliver: DeliverFn<'_>) {
    let refused = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let dns = Arc::new(AsyncOnlyDns {
        dns: StaticDns::default()
            .mx("test.example", 10, "mx1.test.example")
            .mx("test.example", 20, "mx2.test.example")
            .a("mx1.test.example", refused)
            .a("mx2.test.example", ip4(server.addr)),
        asked: AtomicUsize::new(0),
        blocking: AtomicUsize::new(0),
    });
    let report = deliver(
        delivery(server.addr.port(), Duration::from_secs(5)),
        Arc::clone(&dns) as Arc<dyn DeliveryAnswerer>,
    );
    match &report.results[0] {
        AttemptResult::Delivered { host, .. } => {
            assert_eq!(host.as_deref(), Some("mx2.test.example"))
        }
        r => panic!("not delivered by the second host: {r:?}"),
    }
    assert!(
        dns.asked.load(Ordering::SeqCst) >= 2,
        "MX and address questions"
    );
    assert_eq!(dns.blocking.load(Ordering::SeqCst), 0);
    assert_eq!(server.answerer.stored.load(Ordering::SeqCst), 1);
    server.stop();
}

/// A refused port on the first MX host, then the second host delivers.
pub fn outbound_refused_then_fallback(server: Server, deliver: DeliverFn<'_>) {
    // Nothing listens on the server's port at 127.0.0.2 (the server is bound to its own
    // address only).
    let refused = std::net::Ipv4Addr::new(127, 0, 0, 2);
    assert_ne!(ip4(server.addr), refused);
    let dns = StaticDns::default()
        .mx("test.example", 10, "mx1.test.example")
        .mx("test.example", 20, "mx2.test.example")
        .a("mx1.test.example", refused)
        .a("mx2.test.example", ip4(server.addr));
    let report = deliver(
        delivery(server.addr.port(), Duration::from_secs(5)),
        Arc::new(dns),
    );
    match &report.results[0] {
        AttemptResult::Delivered { host, .. } => {
            assert_eq!(host.as_deref(), Some("mx2.test.example"))
        }
        r => panic!("not delivered by the second host: {r:?}"),
    }
    assert_eq!(server.answerer.stored.load(Ordering::SeqCst), 1);
    server.stop();
}

/// A host that never answers the TCP handshake (a listener whose accept queue is full)
/// fails temporarily once the connect timeout passed; the loop does not hang.
pub fn outbound_connect_timeout(deliver: DeliverFn<'_>) {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    l.bind(&addr.into()).unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue: further handshakes are dropped, so connects hang.
    let mut fill = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            fill.push(s);
        }
    }
    let dns = StaticDns::default()
        .mx("test.example", 10, "blackhole.test.example")
        .a("blackhole.test.example", ip4(addr));
    let started = std::time::Instant::now();
    let report = deliver(delivery(addr.port(), Duration::from_secs(1)), Arc::new(dns));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "connect timeout not applied"
    );
    match &report.results[0] {
        AttemptResult::Temporary(f) => {
            assert!(f.detail.contains("timed out"), "{f:?}");
            assert_eq!(f.host.as_deref(), Some("blackhole.test.example"));
        }
        r => panic!("want a temporary failure: {r:?}"),
    }
    drop(fill);
}

fn ip4(a: SocketAddr) -> std::net::Ipv4Addr {
    match a.ip() {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => panic!("IPv4 test addresses only"),
    }
}

/// Answers `/slow` on the blocking pool after 200 ms and every other path at once, with
/// the path as the body.
pub struct PathEcho;

impl crate::http::HttpAnswerer for PathEcho {
    fn answer(
        &self,
        _remote: SocketAddr,
        head: rmox_core::http::RequestHead,
        _body: Vec<u8>,
    ) -> rmox_core::http::Response {
        std::thread::sleep(Duration::from_millis(200));
        rmox_core::http::Response::new(200, "text/plain", head.target)
    }

    fn answer_now(
        &self,
        _remote: SocketAddr,
        head: &rmox_core::http::RequestHead,
        _body: &[u8],
    ) -> Option<rmox_core::http::Response> {
        (head.target != "/slow")
            .then(|| rmox_core::http::Response::new(200, "text/plain", head.target.clone()))
    }
}

/// A runtime's `run` over a list of listeners.
pub type RunSpecsFn = Box<
    dyn FnOnce(
            Vec<crate::accept::ListenerSpec>,
            Arc<dyn Answerer>,
            Arc<Shutdown>,
        ) -> std::io::Result<()>
        + Send,
>;

/// An SMTP and a plain HTTP listener served by one `run`: two pipelined requests (the first
/// answered on the blocking pool, the second at once) get their responses in order on one
/// connection, a third follows on it (keep-alive), SMTP answers meanwhile, requests beyond
/// a full pipeline are answered after the client closed its sending half (they were
/// dropped once: the driver told the session about the close before offering them), and
/// shutdown closes the idle keep-alive connection and returns.
pub fn http_beside_smtp(run: RunSpecsFn) {
    use std::io::Read;
    let smtp = TcpListener::bind("127.0.0.1:0").unwrap();
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    smtp.set_nonblocking(true).unwrap();
    http.set_nonblocking(true).unwrap();
    let (smtp_addr, http_addr) = (smtp.local_addr().unwrap(), http.local_addr().unwrap());
    let specs = vec![
        crate::accept::ListenerSpec::smtp(smtp, Arc::new(ServerConfig::new("mx.test.example"))),
        crate::accept::ListenerSpec {
            listener: http,
            service: crate::accept::Service::Http {
                config: Arc::new(rmox_core::http::ServerConfig::new()),
                answerer: Arc::new(PathEcho),
            },
        },
    ];
    let shutdown = Shutdown::new();
    let (tx, done) = mpsc::channel();
    let s = Arc::clone(&shutdown);
    let answerer: Arc<dyn Answerer> = Arc::new(Counting::default());
    std::thread::spawn(move || {
        let _ = tx.send(run(specs, answerer, s));
    });

    let mut h = TcpStream::connect(http_addr).unwrap();
    h.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    h.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /fast HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut c = Client::connect(smtp_addr);
    assert!(c.reply()[0].starts_with("220 "));
    // Reads until the response whose body is `last` has arrived.
    let read_responses = |h: &mut TcpStream, last: &str| {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&got).ends_with(&format!("\r\n\r\n{last}")) {
            let k = h.read(&mut buf).unwrap();
            assert!(k > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..k]);
        }
        String::from_utf8(got).unwrap()
    };
    let two = read_responses(&mut h, "/fast");
    assert_eq!(two.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{two}");
    let (slow, fast) = (
        two.find("\r\n\r\n/slow").unwrap(),
        two.find("\r\n\r\n/fast").unwrap(),
    );
    assert!(slow < fast, "responses out of order: {two}");
    h.write_all(b"GET /third HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let third = read_responses(&mut h, "/third");
    assert!(third.ends_with("/third"), "{third}");
    c.expect("QUIT\r\n", "221 ");
    // Regression: requests that arrived while the pipeline was full were dropped when the
    // client then closed its sending half.
    // More requests than the pipeline holds (8), the first slow, then the client closes its
    // sending half: every request is still answered, in order.
    let mut p = TcpStream::connect(http_addr).unwrap();
    p.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reqs = String::from("GET /slow HTTP/1.1\r\nHost: a\r\n\r\n");
    for i in 1..8 {
        reqs.push_str(&format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n"));
    }
    p.write_all(reqs.as_bytes()).unwrap();
    // The rest arrives while the pipeline is full (the slow answer takes 200 ms).
    std::thread::sleep(Duration::from_millis(50));
    let rest: String = (8..12)
        .map(|i| format!("GET /{i} HTTP/1.1\r\nHost: a\r\n\r\n"))
        .collect();
    p.write_all(rest.as_bytes()).unwrap();
    p.shutdown(std::net::Shutdown::Write).unwrap();
    let mut all = Vec::new();
    p.read_to_end(&mut all).unwrap();
    let all = String::from_utf8(all).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK\r\n").count(), 12, "{all}");
    assert!(all.ends_with("\r\n\r\n/11"), "{all}");
    shutdown.trigger();
    let mut rest = Vec::new();
    h.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    match done.recv_timeout(Duration::from_secs(10)) {
        Ok(r) => r.unwrap(),
        Err(e) => panic!("run did not stop within 10 s: {e}"),
    }
}
