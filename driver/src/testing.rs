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
            Effect::Dns(lookups) => Completion::Dns(
                lookups
                    .iter()
                    .map(|_| rmox_core::dns::LookupResult::NxDomain)
                    .collect(),
            ),
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
