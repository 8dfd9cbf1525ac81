//! End-to-end: real sockets, the smol runtime and the shared driver, one SMTP transaction.

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
use rmox_runtime_smol::{run, ListenerSpec};

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

struct Server {
    addr: SocketAddr,
    answerer: Arc<Counting>,
    shutdown: Arc<Shutdown>,
    done: mpsc::Receiver<std::io::Result<()>>,
}

impl Server {
    fn start(threads: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
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
    let server = Server::start(2);
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
    let server = Server::start(1);
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
    // The listener is closed once `run` has returned.
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn shutdown_waits_for_message_in_progress() {
    let server = Server::start(2);
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
