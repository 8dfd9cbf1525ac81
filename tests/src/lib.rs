//! Integration test helpers shared by the tests in `tests/tests/`: finding the `rmox`
//! binary, running it as a server on a private loopback address, talking to it with real
//! clients (python's smtplib, swaks, raw sockets) and reading back what it stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod client_driver;
pub mod dmarc_report;
pub mod harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// localserve's fixed ports.
pub const SMTP_PORT: u16 = 1025;
/// localserve's submission (STARTTLS) port.
pub const SUBMISSION_PORT: u16 = 1587;
/// localserve's submissions (implicit TLS) port.
pub const SUBMISSIONS_PORT: u16 = 1465;

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `rmox` binary built by cargo next to this test executable.
pub fn rmox_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/debug/deps/<test>-<hash>: the binary is target/debug/rmox.
    let mut dir = exe
        .parent()
        .expect("test executable has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("rmox");
    assert!(
        bin.is_file(),
        "rmox binary not found at {}: build it first (`cargo build --bin rmox`; `cargo test --workspace` builds it)",
        bin.display()
    );
    bin
}

/// The directory of python client scripts (tests/py).
pub fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("py")
}

/// A loopback address unique to this process and call: 127.A.B.C from the pid and a
/// per-process counter, never 127.0.0.x (other tools use it).
pub fn unique_ip() -> Ipv4Addr {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = u64::from(COUNTER.fetch_add(1, Ordering::Relaxed) % 4096);
    let x = u64::from(std::process::id()) * 4096 + n;
    let a = 1 + (x / (254 * 254)) % 254;
    let b = 1 + (x / 254) % 254;
    let c = 1 + x % 254;
    Ipv4Addr::new(127, a as u8, b as u8, c as u8)
}

/// A fresh temporary directory, removed on drop (kept when the env var RMOX_KEEP is set).
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a new empty directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("rmox-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("RMOX_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// How a server was started, to restart it the same way.
#[derive(Clone, Debug)]
enum Mode {
    Localserve,
    Serve { config: PathBuf },
}

/// A running `rmox` server: SIGTERM on drop (SIGKILL when it does not stop in time).
pub struct Server {
    child: Option<Child>,
    mode: Mode,
    /// The runtime name given to `--runtime`.
    pub runtime: String,
    /// The address it listens on.
    pub ip: Ipv4Addr,
    /// The port waited for at start.
    pub probe_port: u16,
    /// Its directory (localserve: config, certificate, data).
    pub dir: TempDir,
    starts: u32,
    /// SIGTERM was sent to the current process (a second one makes rmox exit at once).
    term_sent: bool,
}

impl Server {
    /// `rmox localserve --dir <fresh temp dir> --ip <unique ip> --runtime RUNTIME`, waiting
    /// until the SMTP port accepts.
    pub fn localserve(runtime: &str) -> Server {
        let dir = TempDir::new(&format!("ls-{runtime}"));
        let mut s = Server {
            child: None,
            mode: Mode::Localserve,
            runtime: runtime.to_string(),
            ip: unique_ip(),
            probe_port: SMTP_PORT,
            dir,
            starts: 0,
            term_sent: false,
        };
        s.start();
        s
    }

    /// `rmox serve --config DIR/rmox.toml` with a config the caller already wrote into
    /// `dir` (listening on `ip`, port `probe_port` waited for).
    pub fn serve(runtime: &str, dir: TempDir, ip: Ipv4Addr, probe_port: u16) -> Server {
        let config = dir.path().join("rmox.toml");
        let mut s = Server {
            child: None,
            mode: Mode::Serve { config },
            runtime: runtime.to_string(),
            ip,
            probe_port,
            dir,
            starts: 0,
            term_sent: false,
        };
        s.start();
        s
    }

    /// The config file.
    pub fn config_path(&self) -> PathBuf {
        match &self.mode {
            Mode::Localserve => self.dir.path().join("rmox.toml"),
            Mode::Serve { config } => config.clone(),
        }
    }

    fn stderr_path(&self) -> PathBuf {
        self.dir.path().join(format!("stderr-{}.log", self.starts))
    }

    /// The server's stderr so far (all runs), for failure messages.
    pub fn stderr(&self) -> String {
        let mut out = String::new();
        for i in 1..=self.starts {
            let p = self.dir.path().join(format!("stderr-{i}.log"));
            out.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        }
        out
    }

    /// Starts the process and waits until `probe_port` accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "server already running");
        self.starts += 1;
        self.term_sent = false;
        let stderr = std::fs::File::create(self.stderr_path()).unwrap();
        let mut cmd = Command::new(rmox_bin());
        match &self.mode {
            Mode::Localserve => {
                cmd.arg("localserve")
                    .arg("--dir")
                    .arg(self.dir.path())
                    .arg("--ip")
                    .arg(self.ip.to_string());
            }
            Mode::Serve { config } => {
                cmd.arg("serve").arg("--config").arg(config);
            }
        }
        cmd.arg("--runtime").arg(&self.runtime);
        cmd.env("RMOX_LOG", "info,rmox=debug").env("NO_COLOR", "1");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", cmd));
        self.child = Some(child);
        let addr = SocketAddr::from((self.ip, self.probe_port));
        let deadline = Instant::now() + START_TIMEOUT;
        for _ in 0..10_000 {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "rmox ({}) exited during startup with {st}; stderr:\n{}",
                    self.runtime,
                    self.stderr()
                );
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let stderr = self.stderr();
        self.kill();
        panic!(
            "rmox ({}) did not listen on {addr} within {START_TIMEOUT:?}; stderr:\n{stderr}",
            self.runtime
        );
    }

    /// SIGTERM, then waits (bounded; SIGKILL after the timeout). Returns the exit status
    /// and whether it stopped by itself.
    pub fn stop(&mut self) -> (ExitStatus, bool) {
        self.signal_term();
        let mut child = self.child.take().expect("server not running");
        let deadline = Instant::now() + STOP_TIMEOUT;
        for _ in 0..10_000 {
            if let Some(st) = child.try_wait().unwrap() {
                return (st, true);
            }
            if Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        (child.wait().unwrap(), false)
    }

    /// Sends SIGTERM (once per process: a second one makes rmox exit at once) without
    /// waiting.
    pub fn signal_term(&mut self) {
        let c = self.child.as_ref().expect("server not running");
        if !self.term_sent {
            self.term_sent = true;
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Stops and checks it exited cleanly and by itself.
    pub fn stop_clean(&mut self) {
        let (st, graceful) = self.stop();
        assert!(
            graceful,
            "rmox ({}) did not stop within {STOP_TIMEOUT:?} of SIGTERM; stderr:\n{}",
            self.runtime,
            self.stderr()
        );
        assert!(
            st.success(),
            "rmox ({}) exited with {st}; stderr:\n{}",
            self.runtime,
            self.stderr()
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGKILL (no chance to clean up), waiting for the process to be gone and its port to
    /// be released: after a SIGKILL the kernel tears down an io_uring instance (glommio)
    /// asynchronously, and until then the listening socket it references still accepts.
    pub fn kill_hard(&mut self) {
        self.kill();
        let addr = SocketAddr::from((self.ip, self.probe_port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id of the running server.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server not running").id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// `rmox export mbox ACCOUNT` (the server must be stopped): the mbox text.
    pub fn export_mbox(&self, account: &str) -> String {
        assert!(self.child.is_none(), "stop the server before exporting");
        let dest = self
            .dir
            .path()
            .join(format!("export-{account}-{}.mbox", self.starts));
        let out = rmox(
            &[
                "export",
                "mbox",
                account,
                dest.to_str().unwrap(),
                "--config",
                self.config_path().to_str().unwrap(),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "rmox export failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(&dest).unwrap_or_else(|e| panic!("reading {}: {e}", dest.display()))
    }

    /// A connection to `port` after its greeting, EHLO and AUTH PLAIN as `user` (a 30 s
    /// read timeout).
    pub fn authenticated(&self, port: u16, user: &str, password: &str) -> Conn {
        let mut c = self.connect(port);
        c.set_read_timeout(Duration::from_secs(30));
        c.expect(220);
        c.expect_cmd("EHLO client.example", 250);
        let raw = format!("\0{user}\0{password}");
        c.expect_cmd(
            &format!("AUTH PLAIN {}", rmox_core::codec::base64(raw.as_bytes())),
            235,
        );
        c
    }

    /// A raw connection to `port`, with a read timeout.
    pub fn connect(&self, port: u16) -> Conn {
        Conn::new(SocketAddr::from((self.ip, port)))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        if std::thread::panicking() {
            eprintln!("--- rmox ({}) stderr ---\n{}", self.runtime, self.stderr());
        }
    }
}

/// `rmox account setpassword ACCOUNT --config CONFIG` with `password`; panics when it fails.
pub fn set_password(config: &Path, account: &str, password: &str) {
    let out = rmox(
        &[
            "account",
            "setpassword",
            account,
            "--config",
            &config.display().to_string(),
        ],
        Some(&format!("{password}\n")),
    );
    assert!(
        out.status.success(),
        "setpassword {account}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `rmox ARGS` to completion with optional stdin.
pub fn rmox(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(rmox_bin());
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        let mut si = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            si.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

/// The messages of an mbox as written by `rmox export mbox` (split on `From ` lines).
pub fn mbox_messages(mbox: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in mbox.split_inclusive('\n') {
        if line.starts_with("From ") || out.is_empty() {
            out.push(String::new());
            if line.starts_with("From ") {
                continue;
            }
        }
        out.last_mut().unwrap().push_str(line);
    }
    out.retain(|m| !m.trim().is_empty());
    out
}

/// How many messages of `mbox` have exactly this Subject header.
pub fn count_subject(mbox: &str, subject: &str) -> usize {
    let want = format!("Subject: {subject}");
    mbox_messages(mbox)
        .iter()
        .filter(|m| {
            m.lines()
                .take_while(|l| !l.is_empty())
                .any(|l| l.trim_end() == want)
        })
        .count()
}

/// A unique Subject for one message of one test.
pub fn subject(test: &str, runtime: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "rmox-e2e {test} {runtime} {}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A raw SMTP connection for speaking bad protocol on purpose.
pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

/// Result of reading a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyOrClose {
    /// A complete (possibly multi-line) reply: code and the full text.
    Reply(u16, String),
    /// The server closed the connection.
    Closed,
}

impl Conn {
    /// Connects with a 15 s read timeout.
    pub fn new(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
        let w = s.try_clone().unwrap();
        Conn {
            r: BufReader::new(s),
            w,
        }
    }

    /// Connects from the local address `source` (any 127.0.0.0/8 address works on
    /// loopback), for tests of per-IP limits.
    pub fn from_source(addr: SocketAddr, source: Ipv4Addr) -> Conn {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::from((source, 0)).into())
            .unwrap_or_else(|e| panic!("bind {source}: {e}"));
        sock.connect_timeout(&addr.into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr} from {source}: {e}"));
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(15))).unwrap();
        let w = s.try_clone().unwrap();
        Conn {
            r: BufReader::new(s),
            w,
        }
    }

    /// Sets the read timeout.
    pub fn set_read_timeout(&self, d: Duration) {
        self.w.set_read_timeout(Some(d)).unwrap();
    }

    /// Writes raw bytes (errors ignored: the server may have closed already).
    pub fn send(&mut self, b: &[u8]) {
        let _ = self.w.write_all(b);
        let _ = self.w.flush();
    }

    /// Reads one reply (up to 100 lines), or Closed on EOF/reset. Panics on timeout.
    pub fn reply(&mut self) -> ReplyOrClose {
        let mut text = String::new();
        for _ in 0..100 {
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) => return ReplyOrClose::Closed,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    panic!("timed out waiting for a reply (so far {text:?}{line:?})")
                }
                Err(_) => return ReplyOrClose::Closed,
            }
            text.push_str(&line);
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let last = line.as_bytes().get(3) != Some(&b'-');
            if let (Some(code), true) = (code, last) {
                return ReplyOrClose::Reply(code, text);
            }
            if code.is_none() {
                panic!("not an SMTP reply line: {line:?}");
            }
        }
        panic!("reply with more than 100 lines: {text:?}");
    }

    /// Reads one reply and asserts its code.
    pub fn expect(&mut self, code: u16) -> String {
        match self.reply() {
            ReplyOrClose::Reply(c, t) if c == code => t,
            other => panic!("expected {code}, got {other:?}"),
        }
    }

    /// Sends a command line (CRLF added) and reads the reply.
    pub fn cmd(&mut self, line: &str) -> ReplyOrClose {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends a command line and asserts the reply code; returns the reply text.
    pub fn expect_cmd(&mut self, line: &str, code: u16) -> String {
        match self.cmd(line) {
            ReplyOrClose::Reply(c, t) if c == code => t,
            other => panic!("{line}: expected {code}, got {other:?}"),
        }
    }

    /// One transaction on a greeted, EHLO'd connection: MAIL, RCPT for each recipient, DATA.
    /// Returns the first refusal as (stage, code, text), stage being "mail", "rcpt" or
    /// "data"; a refused RCPT is followed by RSET.
    pub fn transaction(
        &mut self,
        from: &str,
        to: &[&str],
        message: &str,
    ) -> Result<(), (&'static str, u16, String)> {
        let code = |r: ReplyOrClose| match r {
            ReplyOrClose::Reply(c, t) => (c, t),
            ReplyOrClose::Closed => (0, "connection closed".to_string()),
        };
        let (c, t) = code(self.cmd(&format!("MAIL FROM:<{from}>")));
        if c != 250 {
            return Err(("mail", c, t));
        }
        for rcpt in to {
            let (c, t) = code(self.cmd(&format!("RCPT TO:<{rcpt}>")));
            if c != 250 {
                let _ = self.cmd("RSET");
                return Err(("rcpt", c, t));
            }
        }
        let (c, t) = code(self.cmd("DATA"));
        if c != 354 {
            return Err(("data", c, t));
        }
        // CRLF line ends and dot-stuffing.
        let mut body = message
            .replace("\r\n", "\n")
            .replace('\n', "\r\n")
            .replace("\r\n.", "\r\n..");
        if body.starts_with('.') {
            body.insert(0, '.');
        }
        if !body.ends_with("\r\n") {
            body.push_str("\r\n");
        }
        body.push_str(".\r\n");
        self.send(body.as_bytes());
        let (c, t) = code(self.reply());
        if c != 250 {
            return Err(("data", c, t));
        }
        Ok(())
    }

    /// Asserts the server closes the connection (EOF or reset) within the read timeout.
    pub fn expect_closed(&mut self) {
        let mut buf = [0u8; 4096];
        match self.r.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected close, got data {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("connection not closed within the read timeout")
            }
            Err(_) => {}
        }
    }

    /// Closes the write side and the socket.
    pub fn shutdown(self) {
        let _ = self.w.shutdown(std::net::Shutdown::Both);
    }
}

/// Runs `python3 tests/py/smtp_send.py ARGS`; returns (exit code, stdout+stderr).
pub fn py_send(args: &[String]) -> (i32, String) {
    let script = py_dir().join("smtp_send.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running python3 (install python3)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Whether swaks is installed. Outside CI a missing swaks skips (returns false with a
/// printed reason); in CI (env CI set) it must be there.
pub fn have_swaks() -> bool {
    let ok = Command::new("swaks")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "swaks is not installed but CI is set: install it (apt-get install swaks)"
        );
        eprintln!("SKIP: swaks not installed (apt-get install swaks); CI is not set");
    }
    ok
}

/// Runs swaks with ARGS (a 60 s timeout via swaks' own --timeout); returns (exit code, output).
pub fn swaks(args: &[String]) -> (i32, String) {
    let out = Command::new("swaks")
        .args(["--timeout", "30"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running swaks");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

pub mod dkimpy;

/// One test module per runtime compiled into the binary under test (this crate's features
/// follow the root package's): `on_every_runtime!(a, b)` defines `tokio::a`, `smol::a`,
/// `glommio::a`, ..., each calling the file's `fn a(rt: &str)` with the runtime's name.
#[macro_export]
macro_rules! on_every_runtime {
    ($($test:ident),+ $(,)?) => {
        #[cfg(feature = "tokio")]
        mod tokio {
            $(#[test]
            fn $test() {
                super::$test("tokio")
            })+
        }
        #[cfg(feature = "smol")]
        mod smol {
            $(#[test]
            fn $test() {
                super::$test("smol")
            })+
        }
        #[cfg(feature = "glommio")]
        mod glommio {
            $(#[test]
            fn $test() {
                super::$test("glommio")
            })+
        }
    };
}
