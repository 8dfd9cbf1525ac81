//! End-to-end: real sockets, the glommio runtime (skipped where io_uring does not work) and the shared driver, one SMTP transaction.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is a test failure

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rmox_core::server::{
    Completion, CredentialsAnswer, Effect, PasswordCheck, ServerConfig, Verdict,
};
use rmox_driver::{Answerer, Shutdown};
use rmox_runtime_glommio::{io_uring_available, run, ListenerSpec};

/// Accepts everything and counts stored transactions.
#[derive(Default)]
struct Counting {
    stored: AtomicUsize,
}

impl Answerer for Counting {
    fn answer(&self, effect: Effect) -> Completion {
        match effect {
            Effect::CheckConnection { .. }
            | Effect::CheckSender { .. }
            | Effect::CheckRecipient { .. } => Completion::Verdict(Verdict::Accept),
            Effect::Store(_) => {
                self.stored.fetch_add(1, Ordering::SeqCst);
                Completion::Stored(Ok(()))
            }
            Effect::CheckPassword { .. } => Completion::Password(PasswordCheck::Invalid),
            Effect::LookupCredentials { .. } => Completion::Credentials(CredentialsAnswer::Unknown),
        }
    }
}

/// A std listener on a free loopback port, as the caller of `run` makes it.
fn bind(reuse_port: bool) -> TcpListener {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_reuse_port(reuse_port).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    sock.listen(128).unwrap();
    sock.set_nonblocking(true).unwrap();
    sock.into()
}

/// Whether glommio runs here; prints why not.
fn glommio_works() -> bool {
    match io_uring_available() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipping: glommio/io_uring unavailable here: {e}");
            false
        }
    }
}

struct Server {
    addr: SocketAddr,
    answerer: Arc<Counting>,
    shutdown: Arc<Shutdown>,
    done: mpsc::Receiver<std::io::Result<()>>,
}

impl Server {
    fn start(threads: usize, reuse_port: bool) -> Server {
        let listener = bind(reuse_port);
        let addr = listener.local_addr().unwrap();
        let answerer = Arc::new(Counting::default());
        let shutdown = Shutdown::new();
        let (tx, done) = mpsc::channel();
        let spec = ListenerSpec {
            listener,
            config: Arc::new(ServerConfig::new("mx.test.example")),
        };
        let a: Arc<dyn Answerer> = answerer.clone();
        let s = Arc::clone(&shutdown);
        std::thread::spawn(move || {
            let _ = tx.send(run(vec![spec], a, threads, s));
        });
        Server {
            addr,
            answerer,
            shutdown,
            done,
        }
    }

    /// Triggers shutdown and fails unless `run` returns Ok within 10 s.
    fn stop(self) {
        self.shutdown.trigger();
        match self.done.recv_timeout(Duration::from_secs(10)) {
            Ok(r) => r.unwrap(),
            Err(e) => panic!("run did not stop within 10 s: {e}"),
        }
    }
}

struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        w.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        Client {
            r: BufReader::new(w.try_clone().unwrap()),
            w,
        }
    }

    /// Reads one (possibly multi-line) reply; returns its lines.
    fn reply(&mut self) -> Vec<String> {
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
    fn expect(&mut self, cmd: &str, want: &str) -> Vec<String> {
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
    fn expect_eof(&mut self) {
        let mut rest = String::new();
        let n = self.r.read_line(&mut rest).unwrap();
        assert_eq!(n, 0, "expected close, got {rest:?}");
    }
}

#[test]
fn one_transaction_then_shutdown() {
    if !glommio_works() {
        return;
    }
    let server = Server::start(2, true);
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

#[test]
fn shutdown_closes_idle_sessions_with_421() {
    if !glommio_works() {
        return;
    }
    let server = Server::start(1, true);
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
    // The listener is closed once `run` has returned (the kernel may take a moment to
    // cancel the last io_uring accept that holds it).
    let mut tries = 0;
    while TcpStream::connect(addr).is_ok() {
        tries += 1;
        assert!(tries < 100, "still accepting after run returned");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn connections_queued_during_startup_are_served() {
    if !glommio_works() {
        return;
    }
    // Connected before the workers listen: they wait on the std listener, which `run`
    // drains before closing it.
    let server = Server::start(2, true);
    let mut clients: Vec<Client> = (0..5).map(|_| Client::connect(server.addr)).collect();
    for c in &mut clients {
        assert!(c.reply()[0].starts_with("220 "));
        c.expect("QUIT\r\n", "221 ");
        c.expect_eof();
    }
    server.stop();
}

#[test]
fn listener_without_reuse_port_is_rebound() {
    if !glommio_works() {
        return;
    }
    let server = Server::start(2, false);
    // Connections made while `run` retires the old socket may be refused or reset; wait
    // until the workers serve.
    let mut served = false;
    for _ in 0..200 {
        if let Ok(w) = TcpStream::connect(server.addr) {
            w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut line = String::new();
            if BufReader::new(w).read_line(&mut line).is_ok() && line.starts_with("220 ") {
                served = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(served, "never served");
    for _ in 0..4 {
        let mut c = Client::connect(server.addr);
        assert!(c.reply()[0].starts_with("220 "));
        c.expect("QUIT\r\n", "221 ");
        c.expect_eof();
    }
    server.stop();
}

#[test]
fn bind_failure_is_reported() {
    if !glommio_works() {
        return;
    }
    // A listener without SO_REUSEPORT that stays open (we keep a clone): the workers
    // cannot bind its address, and `run` must say so instead of hanging.
    let listener = bind(false);
    let keep = listener.try_clone().unwrap();
    let spec = ListenerSpec {
        listener,
        config: Arc::new(ServerConfig::new("mx.test.example")),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(
            vec![spec],
            Arc::new(Counting::default()),
            2,
            Shutdown::new(),
        ));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("run did not return within 10 s");
    let e = r.expect_err("bind should fail");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    drop(keep);
}

#[test]
fn probe_does_not_hang_or_panic() {
    // Either answer is fine here; it must come back, twice (no global state left behind).
    let a = io_uring_available();
    let b = io_uring_available();
    assert_eq!(a.is_ok(), b.is_ok(), "{a:?} {b:?}");
}

#[test]
fn shutdown_waits_for_message_in_progress() {
    if !glommio_works() {
        return;
    }
    let server = Server::start(2, true);
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
