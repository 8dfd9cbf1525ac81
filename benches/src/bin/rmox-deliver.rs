//! rmox-deliver: outbound delivery throughput per runtime (a skeleton of issue 13's delivery
//! benchmark).
//!
//! Runs N deliveries of one message each through core's delivery machine and the driver's
//! outbound loop ([`rmox_driver::outbound::deliver`]) on each runtime, C in flight at a time
//! as local tasks on one thread, to an SMTP sink: Postfix's `smtp-sink` given with `--sink`,
//! or a small blocking sink started in this process (then its CPU time is counted too). DNS
//! is a static table (MX `bench.example` -> the sink), so the numbers are the client path:
//! connect, EHLO, MAIL, RCPT, DATA, QUIT, one connection per delivery as the queue makes.
//!
//! ```text
//! rmox-deliver --messages 2000 --concurrency 10 --size 1024 [--sink 127.0.0.5:2525]
//!              [--runtime tokio --runtime smol --runtime glommio] [--json FILE]
//! ```
//!
//! Output: one line per runtime (messages/s, CPU ms per message from /proc/self/stat), and
//! the same as JSON with `--json`. Not measured yet: the queue and storage around it, and
//! Postfix's own outbound delivery of the same messages (see README, Performance).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failures abort

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use rmox_core::client::Needs;
use rmox_core::delivery::{DeliveryConfig, DeliverySession, Job};
use rmox_core::queue::AttemptResult;
use rmox_core::smtp::{ForwardPath, Host, MailParams, RcptParams, ReversePath};
use rmox_driver::outbound::{DeliveryAnswerer, Net};
use rmox_driver::testing::StaticDns;

/// A runtime to measure.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Rt {
    Tokio,
    Smol,
    #[cfg(target_os = "linux")]
    Glommio,
}

/// Outbound delivery benchmark (loopback only).
#[derive(Parser, Debug)]
#[command(name = "rmox-deliver")]
struct Args {
    /// Deliveries per runtime.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Deliveries in flight at once.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// An SMTP sink on loopback (e.g. Postfix's smtp-sink); default: one in this process.
    #[arg(long)]
    sink: Option<SocketAddr>,
    /// Runtimes to measure (repeatable); default: all.
    #[arg(long, value_enum)]
    runtime: Vec<Rt>,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn main() {
    let args = Args::parse();
    let sink = match args.sink {
        Some(a) => {
            assert!(a.ip().is_loopback(), "--sink must be a loopback address");
            a
        }
        None => start_sink(),
    };
    let runtimes = if args.runtime.is_empty() {
        vec![
            Rt::Tokio,
            Rt::Smol,
            #[cfg(target_os = "linux")]
            Rt::Glommio,
        ]
    } else {
        args.runtime.clone()
    };
    let message: Arc<[u8]> = message(args.size).into();
    let mut results = Vec::new();
    for rt in runtimes {
        let cpu0 = cpu_ms();
        let start = Instant::now();
        let work = Work {
            sink,
            message: Arc::clone(&message),
            messages: args.messages,
            concurrency: args.concurrency.max(1),
        };
        let delivered = match rt {
            Rt::Tokio => rmox_runtime_tokio::block_on(|r| work.run(r)),
            Rt::Smol => rmox_runtime_smol::block_on(|r| work.run(r)),
            #[cfg(target_os = "linux")]
            Rt::Glommio => rmox_runtime_glommio::block_on(|r| work.run(r)),
        }
        .expect("runtime");
        let secs = start.elapsed().as_secs_f64();
        let cpu = cpu_ms() - cpu0;
        let name = format!("{rt:?}").to_lowercase();
        println!(
            "{name:8} {delivered}/{} delivered in {secs:.2} s: {:.0} msg/s, {:.3} CPU ms/msg",
            args.messages,
            delivered as f64 / secs,
            cpu / delivered.max(1) as f64
        );
        results.push(serde_json::json!({
            "runtime": name,
            "messages": args.messages,
            "delivered": delivered,
            "concurrency": args.concurrency,
            "size": args.size,
            "seconds": secs,
            "msgs_per_sec": delivered as f64 / secs,
            "cpu_ms_per_msg": cpu / delivered.max(1) as f64,
            "in_process_sink": args.sink.is_none(),
        }));
    }
    if let Some(p) = args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&results).unwrap()).unwrap();
    }
}

/// The deliveries of one runtime.
struct Work {
    sink: SocketAddr,
    message: Arc<[u8]>,
    messages: usize,
    concurrency: usize,
}

impl Work {
    /// Runs the deliveries, `concurrency` local tasks each taking the next one; returns how
    /// many were delivered.
    async fn run<R: Net>(self, rt: R) -> usize {
        let ip = match self.sink.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => panic!("IPv4 sink only"),
        };
        let dns: Arc<dyn DeliveryAnswerer> = Arc::new(
            StaticDns::default()
                .mx("bench.example", 10, "sink.bench.example")
                .a("sink.bench.example", ip),
        );
        let mut config = DeliveryConfig::new(Host::parse("client.bench.example").unwrap());
        config.smtp_port = self.sink.port();
        let config = Arc::new(config);
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..self.concurrency {
            let (rt2, dns, config, next, done) = (
                rt.clone(),
                Arc::clone(&dns),
                Arc::clone(&config),
                Arc::clone(&next),
                Arc::clone(&done),
            );
            let (message, n) = (Arc::clone(&self.message), self.messages);
            tasks.push(rt.spawn(async move {
                use std::sync::atomic::Ordering::Relaxed;
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= n {
                        return;
                    }
                    let session = DeliverySession::new(
                        Arc::clone(&config),
                        job(Arc::clone(&message), i as u64),
                        rmox_driver::now(),
                    );
                    let report = rmox_driver::outbound::deliver(
                        rt2.clone(),
                        session,
                        Arc::clone(&dns),
                        i as u64,
                    )
                    .await;
                    if matches!(
                        report.results.first(),
                        Some(AttemptResult::Delivered { .. })
                    ) {
                        done.fetch_add(1, Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            t.await;
        }
        done.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn job(message: Arc<[u8]>, seed: u64) -> Job {
    Job {
        domain: "bench.example".into(),
        mail_from: ReversePath::parse("<load@client.bench.example>").unwrap(),
        recipients: vec![(
            ForwardPath::parse("<rcpt@bench.example>").unwrap(),
            RcptParams::default(),
        )],
        params: MailParams::default(),
        message,
        needs: Needs::default(),
        requiretls: None,
        seed,
    }
}

/// A message of about `size` bytes, CRLF lines.
fn message(size: usize) -> Vec<u8> {
    let mut m =
        b"From: <load@client.bench.example>\r\nTo: <rcpt@bench.example>\r\nSubject: bench\r\n\r\n"
            .to_vec();
    while m.len() < size {
        m.extend_from_slice(
            b"0123456789012345678901234567890123456789012345678901234567890123456789012\r\n",
        );
    }
    m
}

/// CPU time of this process (user + system), in milliseconds, from /proc/self/stat.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces) end with ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    ticks * 10.0 // USER_HZ is 100 on Linux
}

/// A minimal blocking SMTP sink on 127.0.0.1 (one thread per connection): accepts every
/// message, stores nothing.
fn start_sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = sink_session(c);
            });
        }
    });
    addr
}

fn sink_session(c: TcpStream) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    // Replies to pipelined commands are separate writes: without this, Nagle holds the
    // second until the client's delayed ACK.
    c.set_nodelay(true)?;
    let mut w = c.try_clone()?;
    let mut r = BufReader::new(c);
    w.write_all(b"220 sink.bench.example ESMTP\r\n")?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let cmd = String::from_utf8_lossy(&line).to_ascii_uppercase();
        if cmd.starts_with("EHLO") {
            w.write_all(b"250-sink.bench.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n")?;
        } else if cmd.starts_with("DATA") {
            w.write_all(b"354 go on\r\n")?;
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line)? == 0 {
                    return Ok(());
                }
                if line == b".\r\n" {
                    break;
                }
            }
            w.write_all(b"250 2.0.0 ok\r\n")?;
        } else if cmd.starts_with("QUIT") {
            w.write_all(b"221 2.0.0 bye\r\n")?;
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
            return Ok(());
        } else {
            w.write_all(b"250 2.0.0 ok\r\n")?;
        }
    }
}
