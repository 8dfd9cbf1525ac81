//! A deterministic simulation of the whole rmox MTA (issue 15).
//!
//! One process, one thread, one seeded [`Rng`](rmox_core::Rng) and a virtual clock that
//! jumps to the next event: sending clients (core's SMTP client machine), our server (core's
//! [`ServerSession`](rmox_core::server::ServerSession) with an answerer that decides the way
//! `src/world.rs` does for the parts that matter), our queue (core's scheduler, backoff and
//! DSNs) and delivery machine ([`DeliverySession`](rmox_core::delivery::DeliverySession)),
//! remote servers (rmox itself, and peers that refuse, fail temporarily, hang or are down),
//! DNS from a static table with injected temporary failures, storage with injected crashes
//! (only what was synced survives), and a network that delays, chunks, cuts connections
//! (mid-DATA and right after the final dot), stalls them and partitions hosts.
//!
//! After every run the invariants of [`check`] are checked. A failing run names its seed;
//! `cargo run -p rmox-sim -- --seed N` replays it exactly.
//!
//! Storage is modelled in memory with the durability contract of rmox-storage (a commit is
//! atomic; it survives a crash only once synced; the `250` after DATA only after the sync),
//! not with the redb backend itself.

mod check;
mod world;

use std::time::Duration;

pub use world::Stats;

/// A deliberately wrong behaviour, to show that the invariants catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Correct behaviour.
    None,
    /// The server answers `250` to the message before the store is synced (a crash in
    /// between loses an acknowledged message).
    AckBeforeDurable,
    /// The queue drops the failure DSN of a recipient that failed for good.
    DropFailureDsn,
    /// The queue keeps a recipient after a successful delivery and delivers it again.
    ForgetDelivered,
}

/// What one run simulates.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed: the run is a function of it (and of the other fields).
    pub seed: u64,
    /// Sending clients.
    pub clients: usize,
    /// Messages each client sends (over one or more connections).
    pub messages_per_client: usize,
    /// Virtual time during which faults are injected (crashes, cuts, partitions, DNS
    /// failures); afterwards the world heals and the run drains.
    pub chaos: Duration,
    /// Virtual time after which a run that has not drained fails.
    pub max_time: Duration,
    /// Events after which a run that has not drained fails.
    pub max_steps: u64,
    /// Inject faults at all.
    pub faults: bool,
    /// A deliberate bug (tests of the checker).
    pub bug: Bug,
}

impl SimConfig {
    /// The default run for `seed`: 10 clients of 4 messages, 2 hours of chaos.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            clients: 10,
            messages_per_client: 4,
            chaos: Duration::from_secs(2 * 3600),
            max_time: Duration::from_secs(4 * 24 * 3600),
            max_steps: 3_000_000,
            faults: true,
            bug: Bug::None,
        }
    }
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// The seed that was run.
    pub seed: u64,
    /// What happened.
    pub stats: Stats,
    /// Broken invariants (empty: the run passed). A panic is one.
    pub violations: Vec<String>,
}

impl RunResult {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// A report naming the seed and how to replay it.
    pub fn failure_report(&self) -> String {
        let mut s = format!(
            "seed={} failed ({} violations); replay: cargo run -p rmox-sim -- --seed {}\n",
            self.seed,
            self.violations.len(),
            self.seed
        );
        for v in self.violations.iter().take(20) {
            s.push_str("  ");
            s.push_str(v);
            s.push('\n');
        }
        s.push_str(&format!("  stats: {:?}\n", self.stats));
        s
    }
}

/// Runs one simulation and checks the invariants; a panic anywhere is caught and reported
/// as a violation with the seed.
pub fn run(cfg: &SimConfig) -> RunResult {
    let c = cfg.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut w = world::World::new(c);
        w.run();
        w.finish();
        let violations = check::check(&w);
        (w.stats(), violations)
    }));
    match r {
        Ok((stats, violations)) => RunResult {
            seed: cfg.seed,
            stats,
            violations,
        },
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into());
            RunResult {
                seed: cfg.seed,
                stats: Stats::default(),
                violations: vec![format!("panic: {msg}")],
            }
        }
    }
}
