//! A small blocking driver for the core SMTP client machine
//! ([`rmox_core::client::ClientSession`]) and guards for the real servers it is tested
//! against (Postfix's `smtp-sink`, Python's `aiosmtpd`), for `tests/tests/client_interop.rs`.
//!
//! The driver moves bytes between a `std::net::TcpStream` and the session, hands in the
//! deliveries one after the other (the next after each `Done`), says QUIT after the last and
//! records every event. Every run is bounded by a wall-clock limit; every server runs under
//! coreutils `timeout` and is stopped when its guard is dropped.

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rmox_core::client::{
    ClientConfig, ClientError, ClientSession, Delivery, ErrorKind, Event, Extensions, Input, Needs,
    Outcome, Output, Stage, Transport,
};
use rmox_core::smtp::{ForwardPath, MailParams, RcptParams, ReversePath};
use rmox_core::{Now, UnixTime};

/// The current time for the machine (the driver reads the clocks; core never does).
pub fn now() -> Now {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    Now {
        mono: Instant::now(),
        wall: UnixTime(wall),
    }
}

/// A delivery of `message` (CRLF line ends, not dot-stuffed) from `from` to `to`
/// (addresses without brackets). 8-bit content is detected; nothing else is needed.
pub fn delivery(from: &str, to: &[&str], message: &[u8]) -> Delivery {
    Delivery {
        mail_from: ReversePath::parse(&format!("<{from}>"))
            .unwrap_or_else(|e| panic!("bad MAIL FROM {from:?}: {e}")),
        recipients: to
            .iter()
            .map(|t| {
                let p = ForwardPath::parse(&format!("<{t}>"))
                    .unwrap_or_else(|e| panic!("bad RCPT TO {t:?}: {e}"));
                (p, RcptParams::default())
            })
            .collect(),
        params: MailParams::default(),
        message: Arc::from(message),
        needs: Needs {
            eightbit: !message.is_ascii(),
            ..Needs::default()
        },
    }
}

/// What happened in one client connection.
#[derive(Debug, Default)]
pub struct Run {
    /// Every event, in order (commands, replies, TLS, AUTH, Ready, Done, Failed).
    pub events: Vec<Event>,
    /// The outcome of each delivery that got one, in order.
    pub outcomes: Vec<Outcome>,
    /// The extensions of the last `Ready`.
    pub ready: Option<Extensions>,
    /// The error that ended the session, if it failed.
    pub failed: Option<ClientError>,
    /// The server closed the connection after QUIT (or the session closed it).
    pub closed_cleanly: bool,
}

impl Run {
    /// The commands sent, in order (verbs only).
    pub fn commands(&self) -> Vec<&'static str> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Command(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// Whether TLS was established.
    pub fn tls(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, Event::TlsEstablished(_)))
    }

    /// The commands of the first transaction that were sent before the reply to its MAIL
    /// arrived (MAIL included): `["MAIL", "RCPT", "RCPT", "DATA"]` when pipelined,
    /// `["MAIL"]` when not.
    pub fn first_group(&self) -> Vec<&'static str> {
        let Some(start) = self
            .events
            .iter()
            .position(|e| *e == Event::Command("MAIL"))
        else {
            return Vec::new();
        };
        self.events
            .iter()
            .skip(start)
            .take_while(|e| !matches!(e, Event::Reply(_)))
            .filter_map(|e| match e {
                Event::Command(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// Panics with the whole run unless every delivery completed with every recipient and
    /// the message accepted, and the session ended with QUIT.
    pub fn assert_all_delivered(&self, deliveries: usize) {
        assert!(self.failed.is_none(), "session failed: {self:#?}");
        assert_eq!(self.outcomes.len(), deliveries, "outcomes: {self:#?}");
        for o in &self.outcomes {
            assert!(o.data.is_ok(), "message refused: {self:#?}");
            assert!(
                o.recipients.iter().all(|r| r.is_ok()),
                "a recipient refused: {self:#?}"
            );
        }
        assert!(self.closed_cleanly, "no clean QUIT: {self:#?}");
    }
}

fn io_error(stage: Stage, e: &std::io::Error) -> ClientError {
    ClientError::io(stage, e)
}

/// Connects to `addr` and drives a client session with `config`, delivering `deliveries`
/// in order on the one connection, then QUIT. Gives up (recording a timeout failure) when
/// `limit` passes; the machine's own reply timeouts apply too.
pub fn run(
    addr: SocketAddr,
    config: ClientConfig,
    deliveries: Vec<Delivery>,
    limit: Duration,
) -> Run {
    let give_up = Instant::now() + limit;
    let mut out = Run::default();
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            out.failed = Some(io_error(Stage::Connect, &e));
            return out;
        }
    };
    let _ = stream.set_write_timeout(Some(limit));
    let mut pending = deliveries.into_iter();
    let mut t = now();
    let mut s = ClientSession::new(Arc::new(config), t);
    match pending.next() {
        Some(d) => {
            if let Err(e) = s.handle(t, Input::Deliver(Box::new(d))) {
                out.failed = Some(e);
                return out;
            }
        }
        None => {
            let _ = s.handle(t, Input::Quit);
        }
    }
    let mut tx = Vec::new();
    let mut inbuf: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Drain the outputs.
        let mut deadline = None;
        let mut close = false;
        loop {
            match s.poll(t, &mut tx) {
                Output::Transmit => {
                    let written = stream.write_all(&tx);
                    tx.clear();
                    if let Err(e) = written {
                        // The session ends with a transport error; its outcomes follow.
                        let _ = s.handle(t, Input::IoError(e.to_string()));
                    }
                }
                Output::Event(ev) => {
                    match &ev {
                        Event::Ready(x) => out.ready = Some(x.clone()),
                        Event::Done(o) => {
                            out.outcomes.push(o.clone());
                            // Sticky errors make these no-ops after a failure.
                            let next = match pending.next() {
                                Some(d) => s.handle(t, Input::Deliver(Box::new(d))),
                                None => s.handle(t, Input::Quit),
                            };
                            if let Err(e) = next {
                                out.failed.get_or_insert(e);
                            }
                        }
                        Event::Failed(e) => out.failed = Some(e.clone()),
                        _ => {}
                    }
                    out.events.push(ev);
                }
                Output::Idle { deadline: d } => {
                    deadline = d;
                    break;
                }
                Output::Close => {
                    close = true;
                    break;
                }
            }
        }
        if close {
            out.closed_cleanly = out.failed.is_none();
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return out;
        }
        // Wait for bytes, the machine's deadline or our limit.
        t = now();
        if t.mono >= give_up {
            out.failed.get_or_insert(ClientError {
                stage: s.error().map_or(Stage::Connect, |e| e.stage),
                permanent: false,
                kind: ErrorKind::Transport(Transport::Timeout),
                reply: None,
            });
            return out;
        }
        let mut wait = give_up - t.mono;
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(t.mono));
        }
        let _ = stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let r = stream.read(&mut buf);
        t = now();
        let res = match r {
            Ok(0) => s.handle(t, Input::PeerClosed).map(|_| ()),
            Ok(n) => {
                inbuf.extend_from_slice(buf.get(..n).unwrap_or_default());
                s.handle(t, Input::Received(&inbuf)).map(|used| {
                    inbuf.drain(..used.min(inbuf.len()));
                })
            }
            Err(e) if matches!(e.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut) => {
                s.handle(t, Input::Timeout).map(|_| ())
            }
            Err(e) if e.kind() == IoErrorKind::Interrupted => Ok(()),
            Err(e) => s.handle(t, Input::IoError(e.to_string())).map(|_| ()),
        };
        if let Err(e) = res {
            out.failed.get_or_insert(e);
        }
    }
}

// ---- real servers ----

/// Outside CI a missing tool skips the test (false, with a printed reason); in CI (env
/// `CI` set) it fails.
fn required(ok: bool, what: &str, install: &str) -> bool {
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{what} is not available but CI is set: install it ({install})"
        );
        eprintln!("SKIP: {what} not available ({install}); CI is not set");
    }
    ok
}

/// The `smtp-sink` binary (PATH, then /usr/sbin where Debian puts it), or a skip.
pub fn smtp_sink_bin() -> Option<PathBuf> {
    let found = ["smtp-sink", "/usr/sbin/smtp-sink"].into_iter().find(|b| {
        // smtp-sink has no --version; without arguments it prints its usage and exits 1.
        Command::new(b)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    let ok = required(
        found.is_some(),
        "Postfix smtp-sink",
        "apt-get install postfix",
    );
    if ok {
        found.map(PathBuf::from)
    } else {
        None
    }
}

/// A python interpreter that can import aiosmtpd (`python3`, then `/usr/bin/python3` where
/// Debian's python3-aiosmtpd lives), or a skip.
pub fn aiosmtpd_python() -> Option<PathBuf> {
    let found = ["python3", "/usr/bin/python3"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import aiosmtpd.smtp"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let ok = required(
        found.is_some(),
        "python3 with aiosmtpd",
        "apt-get install python3-aiosmtpd",
    );
    if ok {
        found.map(PathBuf::from)
    } else {
        None
    }
}

/// How long a server may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(20);

/// A server process on loopback, run under `timeout` (it dies by itself after its
/// lifetime) and stopped on drop: SIGTERM, then SIGKILL when it does not exit in time.
pub struct Daemon {
    child: Option<Child>,
    name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stderr, for failure messages.
    stderr_path: PathBuf,
}

impl Daemon {
    /// Starts `program args` under `timeout LIFETIME` with stderr to `stderr_path`, and
    /// waits until `addr` accepts connections. Panics (after killing it) when it exits or
    /// does not listen in time.
    pub fn start(
        name: &str,
        program: &Path,
        args: &[String],
        addr: SocketAddr,
        lifetime: Duration,
        stderr_path: PathBuf,
    ) -> Daemon {
        assert!(addr.ip().is_loopback(), "servers listen on loopback only");
        let stderr = std::fs::File::create(&stderr_path).expect("creating stderr file");
        let mut cmd = Command::new("timeout");
        cmd.arg("--kill-after=5")
            .arg(format!("{}", lifetime.as_secs().max(1)))
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        let mut d = Daemon {
            child: Some(child),
            name: name.to_string(),
            addr,
            stderr_path,
        };
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            if let Some(c) = d.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    d.child = None;
                    panic!(
                        "{name} exited during startup with {st}; stderr:\n{}",
                        d.stderr()
                    );
                }
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
                return d;
            }
            if Instant::now() > deadline {
                let err = d.stderr();
                d.stop();
                panic!("{name} did not listen on {addr} within {LISTEN_TIMEOUT:?}; stderr:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM (coreutils `timeout` passes it on), a bounded wait, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- {} stderr ---\n{}", self.name, self.stderr());
        }
    }
}

/// Whether this process runs as root (smtp-sink then needs `-u nobody`).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Starts `smtp-sink` on `ip:port`, dumping each transaction into `dir` (made writable for
/// the unprivileged user it switches to), with extra flags `flags` (e.g. `-8`: no
/// 8BITMIME; `-f RCPT`: refuse RCPT).
pub fn smtp_sink(bin: &Path, ip: Ipv4Addr, port: u16, dir: &Path, flags: &[&str]) -> Daemon {
    use std::os::unix::fs::PermissionsExt;
    let dumps = dir.join("dumps");
    std::fs::create_dir_all(&dumps).expect("creating dump dir");
    // The dump files are written after the privilege switch.
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777));
    let _ = std::fs::set_permissions(&dumps, std::fs::Permissions::from_mode(0o777));
    let mut args: Vec<String> = Vec::new();
    if is_root() {
        args.extend(["-u".into(), "nobody".into()]);
    }
    // Command/response timeout of 30 s.
    args.extend([
        "-t".into(),
        "30".into(),
        "-h".into(),
        "sink.test.example".into(),
    ]);
    args.extend(flags.iter().map(|f| f.to_string()));
    args.push("-d".into());
    args.push(format!("{}/%Y%m%d%H%M%S.", dumps.display()));
    args.push(format!("{ip}:{port}"));
    args.push("10".into());
    Daemon::start(
        "smtp-sink",
        bin,
        &args,
        SocketAddr::from((ip, port)),
        Duration::from_secs(120),
        dir.join("smtp-sink.stderr"),
    )
}

/// One transaction as dumped by `smtp-sink -d`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkDump {
    /// `X-Helo-Args`.
    pub helo: String,
    /// `X-Mail-Args` (the MAIL FROM arguments: path and parameters).
    pub mail_args: String,
    /// `X-Rcpt-Args`, in order.
    pub rcpt_args: Vec<String>,
    /// The message after smtp-sink's headers: lines end in LF, and smtp-sink adds one
    /// empty line at the end.
    pub body: Vec<u8>,
}

/// The transactions `smtp-sink` dumped into `dir`, in file name order (time, then random).
/// smtp-sink creates the file at MAIL and writes it when the message is complete: empty
/// files (transactions that never sent a message) are skipped.
pub fn sink_dumps(dir: &Path) -> Vec<SinkDump> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("dumps"))
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|f| {
            let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if data.is_empty() {
                return None;
            }
            Some(parse_sink_dump(&data).unwrap_or_else(|| {
                panic!(
                    "{}: not an smtp-sink dump: {:?}",
                    f.display(),
                    String::from_utf8_lossy(&data)
                )
            }))
        })
        .collect()
}

fn parse_sink_dump(data: &[u8]) -> Option<SinkDump> {
    let mut d = SinkDump {
        helo: String::new(),
        mail_args: String::new(),
        rcpt_args: Vec::new(),
        body: Vec::new(),
    };
    let mut rest = data;
    // smtp-sink's own headers end with a three-line Received header.
    let mut received = 0;
    while received < 3 {
        let nl = rest.iter().position(|&b| b == b'\n')?;
        let line = String::from_utf8_lossy(rest.get(..nl)?).into_owned();
        rest = rest.get(nl + 1..)?;
        if received > 0 {
            received += 1;
            continue;
        }
        if let Some(v) = line.strip_prefix("X-Helo-Args: ") {
            d.helo = v.to_string();
        } else if let Some(v) = line.strip_prefix("X-Mail-Args: ") {
            d.mail_args = v.to_string();
        } else if let Some(v) = line.strip_prefix("X-Rcpt-Args: ") {
            d.rcpt_args.push(v.to_string());
        } else if line.starts_with("Received: ") {
            received = 1;
        }
    }
    d.body = rest.to_vec();
    Some(d)
}

/// Options of the aiosmtpd test server (tests/py/aiosmtpd_server.py).
#[derive(Debug, Default, Clone)]
pub struct AioOptions {
    /// Offer STARTTLS with this certificate and key (PEM files).
    pub starttls: Option<(PathBuf, PathBuf)>,
    /// Refuse mail before STARTTLS.
    pub require_starttls: bool,
    /// Offer AUTH PLAIN/LOGIN accepting this user and password.
    pub auth: Option<(String, String)>,
    /// AUTH only after STARTTLS.
    pub auth_require_tls: bool,
    /// Answer 550 to RCPT TO these addresses.
    pub reject: Vec<String>,
    /// Announce PIPELINING.
    pub pipelining: bool,
}

/// Starts the aiosmtpd test server on `ip:port`, writing messages into `dir`.
pub fn aiosmtpd(python: &Path, ip: Ipv4Addr, port: u16, dir: &Path, o: &AioOptions) -> Daemon {
    let script = crate::py_dir().join("aiosmtpd_server.py");
    let lifetime = Duration::from_secs(120);
    let mut args: Vec<String> = vec![
        script.display().to_string(),
        "--host".into(),
        ip.to_string(),
        "--port".into(),
        port.to_string(),
        "--dir".into(),
        dir.display().to_string(),
        "--lifetime".into(),
        lifetime.as_secs().to_string(),
    ];
    if let Some((cert, key)) = &o.starttls {
        args.extend([
            "--starttls".into(),
            cert.display().to_string(),
            key.display().to_string(),
        ]);
    }
    if o.require_starttls {
        args.push("--require-starttls".into());
    }
    if let Some((u, p)) = &o.auth {
        args.extend(["--auth".into(), u.clone(), p.clone()]);
    }
    if o.auth_require_tls {
        args.push("--auth-require-tls".into());
    }
    for r in &o.reject {
        args.extend(["--reject".into(), r.clone()]);
    }
    if o.pipelining {
        args.push("--pipelining".into());
    }
    Daemon::start(
        "aiosmtpd",
        python,
        &args,
        SocketAddr::from((ip, port)),
        lifetime + Duration::from_secs(10),
        dir.join("aiosmtpd.stderr"),
    )
}

/// A message the aiosmtpd test server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AioMessage {
    /// The EHLO/HELO argument.
    pub helo: String,
    /// Whether it arrived over TLS.
    pub tls: bool,
    /// The authenticated user, empty when none.
    pub auth: String,
    /// MAIL FROM address.
    pub mail_from: String,
    /// MAIL FROM parameters, space separated.
    pub mail_options: String,
    /// Accepted recipients.
    pub rcpts: Vec<String>,
    /// The content exactly as received (dot-unstuffed, CRLF line ends).
    pub content: Vec<u8>,
}

/// The messages the aiosmtpd test server wrote into `dir`, in order of arrival.
pub fn aiosmtpd_messages(dir: &Path) -> Vec<AioMessage> {
    let mut out = Vec::new();
    for n in 1.. {
        let meta = dir.join(format!("{n}.meta"));
        let Ok(text) = std::fs::read_to_string(&meta) else {
            break;
        };
        let content = std::fs::read(dir.join(format!("{n}.eml"))).expect("reading .eml");
        let mut m = AioMessage {
            helo: String::new(),
            tls: false,
            auth: String::new(),
            mail_from: String::new(),
            mail_options: String::new(),
            rcpts: Vec::new(),
            content,
        };
        for line in text.lines() {
            let (k, v) = line.split_once(' ').unwrap_or((line, ""));
            match k {
                "helo" => m.helo = v.to_string(),
                "tls" => m.tls = v == "1",
                "auth" => m.auth = v.to_string(),
                "mail_from" => m.mail_from = v.to_string(),
                "mail_options" => m.mail_options = v.to_string(),
                "rcpt" => m.rcpts.push(v.to_string()),
                _ => panic!("{}: unknown line {line:?}", meta.display()),
            }
        }
        out.push(m);
    }
    out
}
