//! The simulation's short run: a fixed list of seeds plus a few new ones, and proof that
//! the invariants catch deliberate bugs.
//!
//! `RMOX_SIM_SEED=N cargo test -p rmox-sim --test seeds` runs only seed N (a replay).

use rmox_sim::{run, Bug, RunResult, SimConfig};

/// Seeds run on every test run.
const FIXED: std::ops::Range<u64> = 1..41;
/// New seeds per run (printed, so that a failure can be replayed).
const NEW: u64 = 4;

fn report(results: &[RunResult]) {
    let failed: Vec<&RunResult> = results.iter().filter(|r| !r.ok()).collect();
    for r in &failed {
        eprint!("{}", r.failure_report());
    }
    assert!(
        failed.is_empty(),
        "seeds failed: {:?}",
        failed.iter().map(|r| r.seed).collect::<Vec<_>>()
    );
}

#[test]
fn fixed_and_new_seeds_hold_every_invariant() {
    if let Some(seed) = std::env::var("RMOX_SIM_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
    {
        let r = run(&SimConfig::new(seed));
        eprintln!("seed={seed} {:?}", r.stats);
        report(&[r]);
        return;
    }
    let mut seeds: Vec<u64> = FIXED.collect();
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(7);
    let mut rng = rmox_core::Rng::new(clock);
    let new: Vec<u64> = (0..NEW).map(|_| rng.next_u64() >> 16).collect();
    eprintln!("new seeds this run: {new:?} (replay one: RMOX_SIM_SEED=N cargo test -p rmox-sim --test seeds)");
    seeds.extend(new);
    let results: Vec<RunResult> = seeds.iter().map(|&s| run(&SimConfig::new(s))).collect();
    let delivered: u64 = results.iter().map(|r| r.stats.deliveries).sum();
    let crashes: u64 = results.iter().map(|r| r.stats.crashes).sum();
    let windows: u64 = results
        .iter()
        .map(|r| r.stats.window_out + r.stats.window_in)
        .sum();
    eprintln!(
        "{} runs, {delivered} deliveries, {crashes} crashes, {windows} duplicate-window events",
        results.len()
    );
    // The faults happened: a run without them proves little.
    assert!(crashes > 0 && windows > 0, "no faults injected");
    report(&results);
}

/// A run is a function of its seed.
#[test]
fn a_seed_replays_exactly() {
    let a = run(&SimConfig::new(12345));
    let b = run(&SimConfig::new(12345));
    assert_eq!(a.stats, b.stats);
    assert_eq!(a.violations, b.violations);
}

/// The first fixed seed that catches `bug`, with its report (which must name the seed and
/// the replay command).
fn caught(bug: Bug) -> Option<u64> {
    FIXED.into_iter().find(|&s| {
        let mut c = SimConfig::new(s);
        c.bug = bug;
        let r = run(&c);
        if r.ok() {
            return false;
        }
        let report = r.failure_report();
        assert!(report.contains(&format!("seed={s}")), "{report}");
        assert!(
            report.contains(&format!("cargo run -p rmox-sim -- --seed {s}")),
            "{report}"
        );
        eprintln!("{bug:?} caught by seed {s}:\n{report}");
        true
    })
}

/// The checker can fail: acknowledging before the store is synced loses acknowledged mail
/// in a crash, and some fixed seed shows it.
#[test]
fn ack_before_durable_is_caught() {
    assert!(
        caught(Bug::AckBeforeDurable).is_some(),
        "no fixed seed caught AckBeforeDurable"
    );
}

/// Dropping a failure DSN is caught.
#[test]
fn dropped_failure_dsn_is_caught() {
    assert!(
        caught(Bug::DropFailureDsn).is_some(),
        "no fixed seed caught DropFailureDsn"
    );
}

/// Delivering a recipient again after it was delivered is caught as a duplicate.
#[test]
fn redelivery_is_caught() {
    assert!(
        caught(Bug::ForgetDelivered).is_some(),
        "no fixed seed caught ForgetDelivered"
    );
}
