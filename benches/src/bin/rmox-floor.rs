//! rmox-floor: the runtime floor's server for `benches/compare.sh`.
//!
//! Serves [`Service::Floor`] on one runtime: a greeting, then a fixed `250` reply to every
//! line, under the same accept loop, executors, blocking pool and worker threads that
//! `rmox serve` and `rmox localserve` use (the runtime crates' `run`, with rmox's default
//! thread count for the runtime unless `--threads` says). No SMTP machine, no answerer, no
//! timers: set against rmox on the same runtime, the difference is what rmox's own code
//! costs per round trip; set against the other runtimes, what the runtime itself does.
//!
//! ```text
//! rmox-floor --runtime glommio --listen 127.0.0.21:1025 [--threads N] [--max-seconds 600]
//! ```
//!
//! It prints `listening on ADDR` once the socket is bound, and exits after `--max-seconds`,
//! or on SIGTERM or SIGINT: then its accept loops stop first, so that the address is free
//! when it has exited (glommio releases a socket with an accept pending in its ring only
//! some time after the process ends). Only loopback addresses are accepted.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rmox::rt::Runtime;
use rmox_driver::accept::{ListenerSpec, Service};
use rmox_driver::{Answerer, Shutdown};

/// From shutdown to exit: time for the accept loops to drop their listeners (the shared
/// accept loop waits 1 ms for glommio to cancel its pending accept).
const STOP_GRACE: Duration = Duration::from_millis(100);

/// The runtime to serve on.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Rt {
    Tokio,
    Smol,
    Glommio,
}

/// The runtime floor's server (loopback only).
#[derive(Parser, Debug)]
#[command(name = "rmox-floor")]
struct Args {
    /// The runtime.
    #[arg(long, value_enum)]
    runtime: Rt,
    /// Address to listen on (loopback; port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Worker threads (default: what rmox starts for this runtime on this machine).
    #[arg(long)]
    threads: Option<usize>,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("rmox-floor: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> std::io::Result<()> {
    if !args.listen.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "{} is not a loopback address",
            args.listen
        )));
    }
    let rt = match args.runtime {
        Rt::Tokio => Runtime::Tokio,
        Rt::Smol => Runtime::Smol,
        #[cfg(target_os = "linux")]
        Rt::Glommio => Runtime::Glommio,
        #[cfg(not(target_os = "linux"))]
        Rt::Glommio => return Err(std::io::Error::other("glommio runs on Linux only")),
    };
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads = args.threads.unwrap_or_else(|| rt.default_threads(cpus));
    let listener = TcpListener::bind(args.listen)?;
    listener.set_nonblocking(true)?;
    println!(
        "listening on {} ({}, {threads} threads)",
        listener.local_addr()?,
        rt.name()
    );
    let shutdown = Arc::new(Shutdown::default());
    // Floor connections do not watch for shutdown: the process ends by itself, once the
    // accept loops have dropped their listeners.
    let stop = {
        let shutdown = Arc::clone(&shutdown);
        move || {
            shutdown.trigger();
            std::thread::sleep(STOP_GRACE);
            std::process::exit(0);
        }
    };
    let secs = args.max_seconds;
    let timed = stop.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        timed();
    });
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            stop();
        }
    });
    let specs = vec![ListenerSpec {
        listener,
        service: Service::Floor,
    }];
    let answerer: Arc<dyn Answerer> = Arc::new(rmox_driver::testing::Counting::default());
    match rt {
        Runtime::Tokio => rmox_runtime_tokio::run(specs, answerer, threads, shutdown),
        Runtime::Smol => rmox_runtime_smol::run(specs, answerer, threads, shutdown),
        #[cfg(target_os = "linux")]
        Runtime::Glommio => rmox_runtime_glommio::run(specs, answerer, threads, shutdown),
    }
}
