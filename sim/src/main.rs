//! `rmox-sim`: runs the whole-MTA simulation.
//!
//! * `rmox-sim --seed N` runs (replays) one seed and prints its statistics or violations.
//! * `rmox-sim --seeds A..B` runs seeds A to B-1.
//! * `rmox-sim --secs S [--start N]` runs consecutive seeds from N (default: from the clock)
//!   until S seconds of CPU time are spent, then prints the seeds covered, the simulated
//!   deliveries and deliveries per CPU-second.
//!
//! Exit status 1 when a run broke an invariant.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rmox_sim::{run, SimConfig};

/// CPU time of this (single-threaded) process: the main thread's on-CPU time from
/// `/proc/thread-self/schedstat` on Linux, wall time elsewhere.
fn cpu_secs(wall: Instant) -> (f64, &'static str) {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        });
    match ns {
        Some(ns) => (ns as f64 / 1e9, "CPU"),
        None => (wall.elapsed().as_secs_f64(), "wall"),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: rmox-sim --seed N | --seeds A..B | --secs S [--start N]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seeds: Option<(u64, u64)> = None;
    let mut secs: Option<u64> = None;
    let mut start: Option<u64> = None;
    let mut i = 0;
    while i < args.len() {
        let val = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--seed" => match val.parse::<u64>() {
                Ok(n) => seeds = Some((n, n + 1)),
                Err(_) => return usage(),
            },
            "--seeds" => {
                let Some((a, b)) = val.split_once("..") else {
                    return usage();
                };
                match (a.parse(), b.parse()) {
                    (Ok(a), Ok(b)) => seeds = Some((a, b)),
                    _ => return usage(),
                }
            }
            "--secs" => match val.parse() {
                Ok(n) => secs = Some(n),
                Err(_) => return usage(),
            },
            "--start" => match val.parse() {
                Ok(n) => start = Some(n),
                Err(_) => return usage(),
            },
            _ => return usage(),
        }
        i += 2;
    }
    let started = Instant::now();
    let cpu0 = cpu_secs(started).0;
    let budget = secs.map(Duration::from_secs);
    let (first, end) = match (seeds, budget) {
        (Some(r), _) => r,
        (None, Some(_)) => {
            let s = start.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() << 16)
                    .unwrap_or(1)
            });
            (s, u64::MAX)
        }
        (None, None) => return usage(),
    };
    let single = end == first + 1;
    let mut failed = Vec::new();
    let mut runs = 0u64;
    let mut deliveries = 0u64;
    let mut messages = 0u64;
    let mut crashes = 0u64;
    let mut reused = 0u64;
    let mut seed = first;
    while seed < end {
        if let Some(b) = budget {
            if cpu_secs(started).0 - cpu0 >= b.as_secs_f64() {
                break;
            }
        }
        let r = run(&SimConfig::new(seed));
        runs += 1;
        deliveries += r.stats.deliveries;
        messages += r.stats.messages;
        crashes += r.stats.crashes;
        reused += r.stats.reused;
        if single {
            println!("seed={seed} {:?}", r.stats);
        }
        if !r.ok() {
            print!("{}", r.failure_report());
            failed.push(seed);
        }
        seed += 1;
    }
    let (now_cpu, kind) = cpu_secs(started);
    let cpu = now_cpu - cpu0;
    println!(
        "seeds {first}..{seed} ({runs} runs), failed: {failed:?}; client messages {messages}, \
         simulated deliveries {deliveries} ({reused} transactions over a reused connection), \
         crashes {crashes}; {cpu:.1} {kind} seconds \
         ({:.1} wall), {:.0} deliveries per {kind}-second",
        started.elapsed().as_secs_f64(),
        deliveries as f64 / cpu.max(1e-9)
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
