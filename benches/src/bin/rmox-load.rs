//! rmox-load: an SMTP load generator for loopback benchmarks.
//!
//! A plain blocking writer on std threads, independent of rmox's own SMTP client machine:
//! N sessions (one thread each) share a budget of M messages and a deadline. Each message is
//! MAIL, R x RCPT, DATA, body, final dot; with `--pipelining` the MAIL/RCPT/DATA group goes
//! out in one write (RFC 2920). Latency is measured from the write of the final dot to the
//! reply to it.
//!
//! ```text
//! rmox-load --target 127.0.0.2:1025 --sessions 10 --messages 2000 --size 1024 [--pipelining]
//!           [--starttls] [--rcpts R] [--max-seconds 60] [--pid PID]... [--json FILE]
//! rmox-load --mode idle   --target ... --sessions 5000 --pid PID   (memory per idle session)
//! rmox-load --mode accept --target ... --sessions 10               (connections per second)
//! ```
//!
//! `--size` takes one size in bytes or a distribution `1024:70,65536:30` (size:weight).
//! `--pid` (repeatable) counts the CPU time of that process and all its descendants
//! (utime+stime+cutime+cstime from /proc, so children reaped during the run are included)
//! and the peak RSS (sum of VmHWM over the tree's live processes at the end).
//! Only loopback targets are accepted.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

/// What to measure.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Send messages.
    Send,
    /// Open `--sessions` connections, EHLO on each, hold them, report server RSS per session.
    Idle,
    /// Connect, read the greeting, QUIT, close; as fast as possible from `--sessions` threads.
    Accept,
    /// Open `--sessions` sessions (EHLO, and STARTTLS or AUTH when asked), then send NOOP and
    /// wait for its reply, `--messages` times in all: one round trip, and one wake-up of the
    /// server, per command, with nothing stored. The JSON's `messages_*` fields count these
    /// round trips.
    Noop,
}

/// SMTP load generator (loopback only).
#[derive(Parser, Debug)]
#[command(name = "rmox-load")]
struct Args {
    /// Server address, e.g. 127.0.0.2:1025 (loopback only).
    #[arg(long)]
    target: String,
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Send)]
    mode: Mode,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 1)]
    sessions: usize,
    /// Messages in total (send mode) or connections in total (accept mode).
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Message size in bytes, or a distribution "size:weight,size:weight".
    #[arg(long, default_value = "1024")]
    size: String,
    /// Recipients per message.
    #[arg(long, default_value_t = 1)]
    rcpts: usize,
    /// Send MAIL, RCPT and DATA in one write.
    #[arg(long)]
    pipelining: bool,
    /// Upgrade each session with STARTTLS (any certificate is accepted).
    #[arg(long)]
    starttls: bool,
    /// Authenticate each session with AUTH PLAIN as "USER:PASSWORD" (after STARTTLS when
    /// given), e.g. for a submission port.
    #[arg(long)]
    auth: Option<String>,
    /// Messages per connection before QUIT and reconnect (0: no limit).
    #[arg(long, default_value_t = 0)]
    per_connection: u64,
    /// Stop after this many seconds even if messages remain.
    #[arg(long, default_value_t = 60)]
    max_seconds: u64,
    /// Server process whose CPU time and peak RSS to report (with its descendants); repeatable.
    #[arg(long)]
    pid: Vec<u32>,
    /// Envelope sender.
    #[arg(long, default_value = "load@load.example")]
    from: String,
    /// Recipient domain; recipients are rcpt1-load@DOMAIN .. rcptR-load@DOMAIN.
    #[arg(long, default_value = "localhost")]
    rcpt_domain: String,
    /// Name in EHLO.
    #[arg(long, default_value = "load.example")]
    ehlo: String,
    /// Label for the summary line and JSON.
    #[arg(long, default_value = "")]
    label: String,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Idle mode: seconds to wait after opening before measuring RSS.
    #[arg(long, default_value_t = 1)]
    settle_seconds: u64,
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("rmox-load: {e}");
            std::process::exit(2);
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let addr = loopback_addr(&args.target)?;
    if args.sessions == 0 {
        return Err("--sessions must be at least 1".into());
    }
    let sizes = parse_sizes(&args.size)?;
    let before: Vec<ProcSample> = args
        .pid
        .iter()
        .map(|&p| proc_tree_sample(p))
        .collect::<Result<_, _>>()?;
    let out = match args.mode {
        Mode::Send => send(args, addr, &sizes),
        Mode::Accept => accept(args, addr),
        Mode::Noop => noop(args, addr),
        Mode::Idle => idle(args, addr, &before)?,
    };
    let after: Vec<ProcSample> = args
        .pid
        .iter()
        .map(|&p| proc_tree_sample(p))
        .collect::<Result<_, _>>()?;
    let cpu: f64 = before
        .iter()
        .zip(&after)
        .map(|(b, a)| a.cpu_seconds - b.cpu_seconds)
        .sum();
    let peak_rss_kib: u64 = after.iter().map(|a| a.hwm_kib).sum();
    report(
        args,
        &out,
        (!args.pid.is_empty()).then_some((cpu, peak_rss_kib)),
    )
}

/// Resolves `target` and refuses anything but loopback.
fn loopback_addr(target: &str) -> Result<SocketAddr, String> {
    let addr = target
        .to_socket_addrs()
        .map_err(|e| format!("--target {target}: {e}"))?
        .next()
        .ok_or_else(|| format!("--target {target}: no address"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "--target {target}: only loopback addresses (127.0.0.0/8, ::1) are allowed"
        ));
    }
    Ok(addr)
}

/// Parses "1024" or "1024:70,65536:30" into (size, weight) pairs.
fn parse_sizes(s: &str) -> Result<Vec<(usize, u32)>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (size, weight) = match part.split_once(':') {
            Some((a, b)) => (
                a,
                b.parse::<u32>()
                    .map_err(|_| format!("--size: bad weight in {part:?}"))?,
            ),
            None => (part, 1),
        };
        let size = size
            .trim()
            .parse::<usize>()
            .map_err(|_| format!("--size: bad size in {part:?}"))?;
        if weight > 0 {
            out.push((size, weight));
        }
    }
    if out.is_empty() {
        return Err("--size: no sizes".into());
    }
    Ok(out)
}

/// A message of about `size` bytes (headers included; never less than the ~170 header
/// bytes), CRLF lines, no line starting with a
/// dot, ending in CRLF; the final dot is not included.
fn make_message(size: usize, from: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <rcpt1@localhost>\r\nSubject: rmox-load\r\nMessage-ID: <load-{size}@load.example>\r\nDate: Thu, 1 Jan 2026 00:00:00 +0000\r\n\r\n"
    )
    .into_bytes();
    let line =
        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnop\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    let rest = size.saturating_sub(m.len());
    if rest >= 3 {
        m.extend(std::iter::repeat_n(b'x', rest - 2));
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// Picks a size index for message number `n` deterministically by weight.
fn pick(sizes: &[(usize, u32)], n: u64) -> usize {
    let total: u64 = sizes.iter().map(|s| u64::from(s.1)).sum();
    // A multiplicative hash spreads consecutive numbers over the weights.
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    x %= total.max(1);
    for (i, s) in sizes.iter().enumerate() {
        if x < u64::from(s.1) {
            return i;
        }
        x -= u64::from(s.1);
    }
    0
}

/// One SMTP reply: the code and the text of its last line.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    code: u16,
    text: String,
}

/// Finds one complete reply at the start of `buf`: returns it and the bytes it used, or
/// None when more input is needed. A malformed line gives code 0.
fn parse_reply(buf: &[u8]) -> Option<(Reply, usize)> {
    let mut pos = 0;
    loop {
        let nl = buf.get(pos..)?.iter().position(|&b| b == b'\n')?;
        let line = &buf[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        let code = line
            .get(..3)
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|c| (200..600).contains(c))
            .unwrap_or(0);
        let sep = line.get(3).copied();
        if code == 0 || sep != Some(b'-') {
            let text = String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned();
            return Some((Reply { code, text }, pos));
        }
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// A client connection with a reply buffer.
struct Conn {
    s: Box<dyn Stream>,
    buf: Vec<u8>,
    start: usize,
}

impl Conn {
    fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn {
            s: Box::new(s),
            buf: Vec::with_capacity(4096),
            start: 0,
        })
    }

    fn reply(&mut self) -> io::Result<Reply> {
        loop {
            if let Some((r, n)) = parse_reply(&self.buf[self.start..]) {
                self.start += n;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                return Ok(r);
            }
            let len = self.buf.len();
            self.buf.resize(len + 4096, 0);
            let n = self.s.read(&mut self.buf[len..])?;
            self.buf.truncate(len + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed",
                ));
            }
        }
    }

    fn send(&mut self, b: &[u8]) -> io::Result<()> {
        self.s.write_all(b)?;
        self.s.flush()
    }

    fn cmd(&mut self, b: &[u8]) -> io::Result<Reply> {
        self.send(b)?;
        self.reply()
    }
}

/// Why a message or session failed: a reply code or an I/O error kind.
fn fail_key(r: &Reply) -> String {
    if r.code == 0 {
        "malformed".into()
    } else {
        r.code.to_string()
    }
}

fn io_key(e: &io::Error) -> String {
    format!("io:{:?}", e.kind())
}

#[derive(Default)]
struct Tally {
    ok: u64,
    bytes: u64,
    latencies_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    connections: u64,
}

impl Tally {
    fn err(&mut self, k: String) {
        *self.errors.entry(k).or_default() += 1;
    }
    fn merge(&mut self, o: Tally) {
        self.ok += o.ok;
        self.bytes += o.bytes;
        self.latencies_us.extend(o.latencies_us);
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.connections += o.connections;
    }
}

/// Results of a run.
struct Outcome {
    tally: Tally,
    elapsed: Duration,
    /// Idle mode: (sessions open, server RSS delta in KiB).
    idle: Option<(u64, i64)>,
}

/// Opens a session: greeting, EHLO, optional STARTTLS and second EHLO.
fn open_session(
    args: &Args,
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<Conn, String> {
    let mut c = Conn::connect(addr).map_err(|e| io_key(&e))?;
    let r = c.reply().map_err(|e| io_key(&e))?;
    if r.code != 220 {
        return Err(fail_key(&r));
    }
    let ehlo = format!("EHLO {}\r\n", args.ehlo);
    let r = c.cmd(ehlo.as_bytes()).map_err(|e| io_key(&e))?;
    if r.code != 250 {
        return Err(fail_key(&r));
    }
    if let Some(cfg) = tls {
        let r = c.cmd(b"STARTTLS\r\n").map_err(|e| io_key(&e))?;
        if r.code != 220 {
            return Err(fail_key(&r));
        }
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let conn =
            rustls::ClientConnection::new(Arc::clone(cfg), name).map_err(|e| format!("tls:{e}"))?;
        let plain = std::mem::replace(&mut c.s, Box::new(EmptyStream));
        c.s = Box::new(rustls::StreamOwned::new(conn, plain));
        c.buf.clear();
        c.start = 0;
        let r = c.cmd(ehlo.as_bytes()).map_err(|e| io_key(&e))?;
        if r.code != 250 {
            return Err(fail_key(&r));
        }
    }
    if let Some(auth) = &args.auth {
        let (user, pass) = auth.split_once(':').unwrap_or((auth.as_str(), ""));
        let cmd = format!("AUTH PLAIN {}\r\n", auth_plain(user, pass));
        let r = c.cmd(cmd.as_bytes()).map_err(|e| io_key(&e))?;
        if r.code != 235 {
            return Err(fail_key(&r));
        }
    }
    Ok(c)
}

/// The AUTH PLAIN initial response (RFC 4616): base64 of "\0user\0password".
fn auth_plain(user: &str, pass: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let raw = format!("\0{user}\0{pass}");
    let mut out = String::new();
    for chunk in raw.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A stream that reads nothing and accepts nothing: the placeholder while a connection is
/// swapped for its TLS form.
struct EmptyStream;

impl Read for EmptyStream {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        Ok(0)
    }
}

impl Write for EmptyStream {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::ErrorKind::NotConnected.into())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sends one message on `c`; Ok(latency) or Err(failure key). After Err the session must
/// be closed.
fn send_one(
    c: &mut Conn,
    args: &Args,
    envelope: &[Vec<u8>],
    body: &[u8],
) -> Result<Duration, String> {
    let ek = |e: io::Error| io_key(&e);
    if args.pipelining {
        let group: Vec<u8> = envelope.concat();
        c.send(&group).map_err(ek)?;
        let mut first_err = None;
        for i in 0..envelope.len() {
            let r = c.reply().map_err(ek)?;
            let want = if i + 1 == envelope.len() { 354 } else { 250 };
            if r.code != want && first_err.is_none() {
                first_err = Some(fail_key(&r));
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
    } else {
        for (i, cmd) in envelope.iter().enumerate() {
            let r = c.cmd(cmd).map_err(ek)?;
            let want = if i + 1 == envelope.len() { 354 } else { 250 };
            if r.code != want {
                return Err(fail_key(&r));
            }
        }
    }
    c.send(body).map_err(ek)?;
    let t = Instant::now();
    let r = c.reply().map_err(ek)?;
    let lat = t.elapsed();
    if r.code != 250 {
        return Err(fail_key(&r));
    }
    Ok(lat)
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
                .with_no_client_auth()
        });
    match cfg {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("rmox-load: TLS setup: {e}");
            std::process::exit(2);
        }
    }
}

/// Accepts any server certificate (loopback benchmarks against self-signed servers);
/// handshake signatures are still checked.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn send(args: &Args, addr: SocketAddr, sizes: &[(usize, u32)]) -> Outcome {
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        sizes
            .iter()
            .map(|&(s, _)| {
                let mut m = make_message(s, &args.from);
                m.extend_from_slice(b".\r\n");
                m
            })
            .collect(),
    );
    let mut envelope = vec![format!("MAIL FROM:<{}>\r\n", args.from).into_bytes()];
    for i in 1..=args.rcpts {
        envelope.push(format!("RCPT TO:<rcpt{i}-load@{}>\r\n", args.rcpt_domain).into_bytes());
    }
    envelope.push(b"DATA\r\n".to_vec());
    let envelope = Arc::new(envelope);
    let tls = args.starttls.then(tls_config);
    let next = Arc::new(AtomicU64::new(0));
    let total = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.max_seconds);
    std::thread::scope(|sc| {
        for _ in 0..args.sessions {
            let (bodies, envelope, next, total, tls) = (&bodies, &envelope, &next, &total, &tls);
            sc.spawn(move || {
                let mut t = Tally::default();
                let mut conn: Option<(Conn, u64)> = None;
                loop {
                    if Instant::now() >= deadline {
                        break;
                    }
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= args.messages {
                        break;
                    }
                    if conn.is_none() {
                        match open_session(args, addr, tls.as_ref()) {
                            Ok(c) => {
                                t.connections += 1;
                                conn = Some((c, 0));
                            }
                            Err(k) => {
                                t.err(k);
                                continue;
                            }
                        }
                    }
                    let Some((c, sent)) = conn.as_mut() else {
                        continue;
                    };
                    let body = &bodies[pick(sizes, n)];
                    match send_one(c, args, envelope, body) {
                        Ok(lat) => {
                            t.ok += 1;
                            t.bytes += (body.len() - 3) as u64;
                            t.latencies_us.push(lat.as_micros() as u64);
                            *sent += 1;
                            if args.per_connection > 0 && *sent >= args.per_connection {
                                if let Some((mut c, _)) = conn.take() {
                                    let _ = c.cmd(b"QUIT\r\n");
                                }
                            }
                        }
                        Err(k) => {
                            t.err(k);
                            conn = None;
                        }
                    }
                }
                if let Some((mut c, _)) = conn {
                    let _ = c.cmd(b"QUIT\r\n");
                }
                if let Ok(mut g) = total.lock() {
                    g.merge(t);
                }
            });
        }
    });
    let elapsed = start.elapsed();
    let tally = Arc::try_unwrap(total)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default();
    Outcome {
        tally,
        elapsed,
        idle: None,
    }
}

/// NOOP round trips (see [`Mode::Noop`]): each thread holds one session and sends the
/// next NOOP when the last one's reply is in; a failed session is opened again.
fn noop(args: &Args, addr: SocketAddr) -> Outcome {
    let tls = args.starttls.then(tls_config);
    let next = AtomicU64::new(0);
    on_threads(args, |t, deadline| {
        let mut conn: Option<Conn> = None;
        while Instant::now() < deadline && next.fetch_add(1, Ordering::Relaxed) < args.messages {
            if conn.is_none() {
                match open_session(args, addr, tls.as_ref()) {
                    Ok(c) => {
                        t.connections += 1;
                        conn = Some(c);
                    }
                    Err(k) => {
                        t.err(k);
                        continue;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { continue };
            let sent = Instant::now();
            match c.cmd(b"NOOP\r\n") {
                Ok(r) if r.code == 250 => {
                    t.ok += 1;
                    t.latencies_us.push(sent.elapsed().as_micros() as u64);
                }
                Ok(r) => {
                    t.err(fail_key(&r));
                    conn = None;
                }
                Err(e) => {
                    t.err(io_key(&e));
                    conn = None;
                }
            }
        }
        if let Some(mut c) = conn {
            let _ = c.cmd(b"QUIT\r\n");
        }
    })
}

/// Runs `work` on `--sessions` threads, each with a tally of its own (and the run's
/// deadline), and merges their tallies.
fn on_threads(args: &Args, work: impl Fn(&mut Tally, Instant) + Sync) -> Outcome {
    let total = Mutex::new(Tally::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.max_seconds);
    std::thread::scope(|sc| {
        for _ in 0..args.sessions {
            sc.spawn(|| {
                let mut t = Tally::default();
                work(&mut t, deadline);
                if let Ok(mut g) = total.lock() {
                    g.merge(t);
                }
            });
        }
    });
    Outcome {
        tally: total.into_inner().unwrap_or_default(),
        elapsed: start.elapsed(),
        idle: None,
    }
}

fn accept(args: &Args, addr: SocketAddr) -> Outcome {
    let next = AtomicU64::new(0);
    on_threads(args, |t, deadline| {
        while Instant::now() < deadline && next.fetch_add(1, Ordering::Relaxed) < args.messages {
            let r = Conn::connect(addr).and_then(|mut c| {
                let r = c.reply()?;
                if r.code == 220 {
                    let _ = c.cmd(b"QUIT\r\n")?;
                }
                Ok(r)
            });
            match r {
                Ok(r) if r.code == 220 => t.connections += 1,
                Ok(r) => t.err(fail_key(&r)),
                Err(e) => t.err(io_key(&e)),
            }
        }
    })
}

fn idle(args: &Args, addr: SocketAddr, before: &[ProcSample]) -> Result<Outcome, String> {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.max_seconds);
    let mut t = Tally::default();
    let mut open = Vec::with_capacity(args.sessions);
    let ehlo = format!("EHLO {}\r\n", args.ehlo);
    while open.len() < args.sessions && Instant::now() < deadline {
        let r = Conn::connect(addr).and_then(|mut c| {
            let r = c.reply()?;
            let r = if r.code == 220 {
                c.cmd(ehlo.as_bytes())?
            } else {
                r
            };
            Ok((c, r))
        });
        match r {
            Ok((c, r)) if r.code == 250 => {
                t.connections += 1;
                open.push(c);
            }
            Ok((_, r)) => t.err(fail_key(&r)),
            Err(e) => t.err(io_key(&e)),
        }
        if t.errors.values().sum::<u64>() > 100 {
            break;
        }
    }
    let elapsed = start.elapsed();
    std::thread::sleep(Duration::from_secs(args.settle_seconds));
    let now: Vec<ProcSample> = args
        .pid
        .iter()
        .map(|&p| proc_tree_sample(p))
        .collect::<Result<_, _>>()?;
    let delta: i64 = before
        .iter()
        .zip(&now)
        .map(|(b, a)| a.rss_kib as i64 - b.rss_kib as i64)
        .sum();
    let n = open.len() as u64;
    drop(open);
    Ok(Outcome {
        tally: t,
        elapsed,
        idle: Some((n, delta)),
    })
}

/// CPU seconds (self and reaped children) and memory of a process tree.
#[derive(Debug, Default, Clone)]
struct ProcSample {
    cpu_seconds: f64,
    rss_kib: u64,
    hwm_kib: u64,
}

/// Clock ticks per second for /proc/PID/stat; Linux reports USER_HZ, which is 100 on every
/// mainstream architecture.
const USER_HZ: f64 = 100.0;

/// Parses /proc/PID/stat: (ppid, utime+stime+cutime+cstime in ticks).
fn parse_stat(s: &str) -> Option<(u32, u64)> {
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let rest = s.get(s.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); ppid is field 4, utime..cstime are fields 14..17.
    let ppid = f.get(1)?.parse().ok()?;
    let mut ticks = 0u64;
    for i in 11..15 {
        ticks += f.get(i)?.parse::<u64>().ok()?;
    }
    Some((ppid, ticks))
}

fn status_kib(s: &str, key: &str) -> u64 {
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Sums CPU time and memory over `pid` and all its descendants.
fn proc_tree_sample(pid: u32) -> Result<ProcSample, String> {
    let mut all: Vec<(u32, u32, u64)> = Vec::new();
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("/proc: {e}"))?;
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((ppid, ticks)) = std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            all.push((p, ppid, ticks));
        }
    }
    if !all.iter().any(|x| x.0 == pid) {
        return Err(format!("--pid {pid}: no such process"));
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while let Some(&p) = tree.get(i) {
        tree.extend(all.iter().filter(|x| x.1 == p).map(|x| x.0));
        i += 1;
    }
    let mut out = ProcSample::default();
    for p in tree {
        if let Some(x) = all.iter().find(|x| x.0 == p) {
            out.cpu_seconds += x.2 as f64 / USER_HZ;
        }
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            out.rss_kib += status_kib(&s, "VmRSS:");
            out.hwm_kib += status_kib(&s, "VmHWM:");
        }
    }
    Ok(out)
}

/// The 1-minute load average from /proc/loadavg (0 when unreadable).
fn loadavg_1min() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Nearest-rank percentile of sorted values (p in 0..=100); 0 for no values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(args: &Args, o: &Outcome, server: Option<(f64, u64)>) -> Result<(), String> {
    let t = &o.tally;
    let secs = o.elapsed.as_secs_f64().max(1e-9);
    let mut lat = t.latencies_us.clone();
    lat.sort_unstable();
    let (p50, p90, p99) = (
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
    );
    let errors: u64 = t.errors.values().sum();
    let mode = match args.mode {
        Mode::Send => "send",
        Mode::Idle => "idle",
        Mode::Accept => "accept",
        Mode::Noop => "noop",
    };
    let mut j = serde_json::json!({
        "label": args.label,
        "mode": mode,
        "target": args.target,
        "sessions": args.sessions,
        "size": args.size,
        "rcpts": args.rcpts,
        "pipelining": args.pipelining,
        "starttls": args.starttls,
        "seconds": secs,
        "messages_ok": t.ok,
        "messages_per_second": t.ok as f64 / secs,
        "mb_per_second": t.bytes as f64 / secs / 1e6,
        "latency_us": {"p50": p50, "p90": p90, "p99": p99},
        "errors": t.errors,
        "connections": t.connections,
        "connections_per_second": t.connections as f64 / secs,
        // Other work on the machine skews every figure; keep the 1-minute load with them.
        "loadavg_1min_at_end": loadavg_1min(),
    });
    let mut line = String::new();
    if !args.label.is_empty() {
        line.push_str(&format!("{}: ", args.label));
    }
    match args.mode {
        Mode::Send => line.push_str(&format!(
            "{} msgs in {:.2}s: {:.0} msg/s, {:.2} MB/s, final-dot latency p50/p90/p99 {:.2}/{:.2}/{:.2} ms",
            t.ok,
            secs,
            t.ok as f64 / secs,
            t.bytes as f64 / secs / 1e6,
            p50 as f64 / 1e3,
            p90 as f64 / 1e3,
            p99 as f64 / 1e3
        )),
        Mode::Noop => line.push_str(&format!(
            "{} NOOPs in {:.2}s: {:.0} round trips/s, latency p50/p90/p99 {:.3}/{:.3}/{:.3} ms",
            t.ok,
            secs,
            t.ok as f64 / secs,
            p50 as f64 / 1e3,
            p90 as f64 / 1e3,
            p99 as f64 / 1e3
        )),
        Mode::Accept => line.push_str(&format!(
            "{} connections in {:.2}s: {:.0} conn/s",
            t.connections,
            secs,
            t.connections as f64 / secs
        )),
        Mode::Idle => {}
    }
    if let Some((n, delta)) = o.idle {
        let per = if n > 0 {
            delta as f64 * 1024.0 / n as f64
        } else {
            0.0
        };
        j["idle_sessions"] = n.into();
        j["idle_rss_delta_kib"] = delta.into();
        j["idle_bytes_per_session"] = per.into();
        line.push_str(&format!(
            "{n} idle sessions: server RSS +{delta} KiB, {per:.0} bytes/session"
        ));
    }
    if let Some((cpu, hwm)) = server {
        let per_k = if t.ok > 0 {
            cpu * 1000.0 / t.ok as f64
        } else {
            0.0
        };
        j["server_cpu_seconds"] = cpu.into();
        j["server_cpu_seconds_per_1000_msgs"] = per_k.into();
        j["server_peak_rss_kib"] = hwm.into();
        match args.mode {
            Mode::Send => line.push_str(&format!(", server CPU {per_k:.3} s/1000 msgs")),
            // s per 1000 round trips is ms per round trip; in us:
            Mode::Noop => {
                line.push_str(&format!(", server CPU {:.1} us/round trip", per_k * 1000.0))
            }
            Mode::Accept | Mode::Idle => {}
        }
        line.push_str(&format!(", server peak RSS {:.1} MiB", hwm as f64 / 1024.0));
    }
    if errors > 0 {
        line.push_str(&format!(", errors {:?}", t.errors));
    }
    println!("{line}");
    if let Some(path) = &args.json {
        let s = serde_json::to_string_pretty(&j).map_err(|e| e.to_string())?;
        std::fs::write(path, s + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AUTH PLAIN responses, checked against Python's base64 module (all three padding cases).
    #[test]
    fn auth_plain_base64() {
        let cases = [
            (
                "mjl@mox.example",
                "testtest",
                "AG1qbEBtb3guZXhhbXBsZQB0ZXN0dGVzdA==",
            ),
            ("a", "", "AGEA"),
            ("ab", "c", "AGFiAGM="),
            ("tim", "tanstaaftanstaaf", "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"),
        ];
        for (user, pass, want) in cases {
            assert_eq!(auth_plain(user, pass), want, "{user}:{pass}");
        }
    }

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        let cases: &[(&[u64], f64, u64)] = &[
            (&[], 50.0, 0),
            (&[7], 50.0, 7),
            (&[7], 99.0, 7),
            (&v, 50.0, 50),
            (&v, 90.0, 90),
            (&v, 99.0, 99),
            (&v, 100.0, 100),
            (&v, 0.0, 1),
            (&[1, 2, 3, 4], 50.0, 2),
            (&[1, 2, 3, 4], 51.0, 3),
        ];
        for &(vals, p, want) in cases {
            assert_eq!(percentile(vals, p), want, "p{p} of {vals:?}");
        }
    }

    #[test]
    fn replies() {
        type Case<'a> = (&'a [u8], Option<(u16, &'a str, usize)>);
        let cases: &[Case] = &[
            (b"250 ok\r\n", Some((250, "ok", 8))),
            (b"250-a\r\n250-b\r\n250 c\r\nrest", Some((250, "c", 21))),
            (b"250-a\r\n250", None),
            (b"354 go\n", Some((354, "go", 7))),
            (b"xx\r\n", Some((0, "", 4))),
            (b"451 4.3.0 later\r\n", Some((451, "4.3.0 later", 17))),
            (b"", None),
        ];
        for &(input, want) in cases {
            let got = parse_reply(input).map(|(r, n)| (r.code, r.text, n));
            assert_eq!(
                got,
                want.map(|(c, t, n)| (c, t.to_string(), n)),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn messages_have_the_size_and_no_dot_lines() {
        for size in [300, 1024, 65536, 1_000_000] {
            let m = make_message(size, "a@b");
            assert!(
                m.len() <= size && m.len() + 3 > size,
                "size {size}: {}",
                m.len()
            );
            assert!(m.ends_with(b"\r\n"));
            assert!(
                !m.windows(3).any(|w| w == b"\n.\r" || w == b"\n.."),
                "dot line in {size}"
            );
        }
    }

    #[test]
    fn sizes_and_weights() {
        assert_eq!(parse_sizes("1024"), Ok(vec![(1024, 1)]));
        assert_eq!(
            parse_sizes("1024:70,65536:30"),
            Ok(vec![(1024, 70), (65536, 30)])
        );
        assert!(parse_sizes("x").is_err());
        assert!(parse_sizes("10:0").is_err());
        let s = parse_sizes("1:3,2:1").unwrap_or_default();
        let big = (0..10_000).filter(|&n| pick(&s, n) == 1).count();
        assert!(
            (2000..3000).contains(&big),
            "{big} of 10000 picked the 1/4 weight"
        );
    }

    #[test]
    fn stat_fields() {
        let s = "1234 (my (odd) prog) S 1 1234 1234 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 1 0 100 1000 10";
        assert_eq!(parse_stat(s), Some((1, 13)));
        assert_eq!(
            status_kib("Name:\tx\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n", "VmHWM:"),
            2048
        );
        assert!(loopback_addr("127.0.0.5:25").is_ok());
        assert!(loopback_addr("[::1]:25").is_ok());
        assert!(loopback_addr("10.0.0.1:25").is_err());
    }
}
