//! The rmox mail server as a library: configuration, the answers to the core machines'
//! effects from configuration and storage (`world`), the queue runner and report senders
//! (tasks on the chosen runtime), DNS wiring, the HTTP router, and the command-line tools'
//! logic. The `rmox` binary (`src/main.rs`) is the command line over it; tests and
//! benchmarks use it directly.

#[cfg(not(any(
    feature = "tokio",
    feature = "smol",
    all(feature = "glommio", target_os = "linux")
)))]
compile_error!(
    "rmox needs a runtime: build with the default features (Linux), or `--no-default-features --features smol` (portable) or `--features tokio`"
);

pub mod acme;
pub mod admin;
pub mod analysis;
#[cfg(test)]
mod checks_tests;
pub mod config;
pub mod creds;
pub mod ctl;
pub mod dnsblmon;
pub mod dnscheck;
pub mod import;
pub mod inbox;
pub mod junk;
pub mod localserve;
pub mod metrics;
pub mod queue;
pub mod quickstart;
pub mod reports;
pub mod resolve;
pub mod rt;
pub mod sdnotify;
pub mod sendmail;
pub mod serve;
pub mod spool;
pub mod storage;
#[cfg(test)]
mod testutil;
pub mod tlsrpt;
pub mod tools;
pub mod web;
pub mod webapi;
pub mod webhooks;
pub mod world;

/// Which runtime drives the machines.
#[derive(Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeChoice {
    /// glommio where io_uring works, else smol.
    Auto,
    /// tokio, one current-thread runtime per CPU (`threads` in the configuration).
    Tokio,
    /// smol, one local executor per CPU (`threads` in the configuration).
    Smol,
    /// glommio (io_uring), one executor per two CPUs (`threads` in the configuration).
    Glommio,
}

/// A user-facing failure: printed as one line, exit code 1.
#[derive(Debug)]
pub struct Fail(pub String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}
