//! Delivery rate limit benchmark: the per-message cost of the delivery-limit check (what
//! the server does at MAIL FROM and before storing: load today's stored counts of the IP's
//! networks when not in memory, then the core decision) with no earlier messages from the
//! IP, and after 100,000 earlier messages from it were counted and written to storage.
//!
//! ```text
//! cargo run --release -p rmox-benches --bin ratelimit_bench -- [--n N] [--history N] [--dir DIR]
//! ```
//!
//! The sequence per message mirrors `src/world.rs`: `missing_day` + `delivery_counts` for
//! networks not in memory, `check_start`, `check_message`, then `record`; counted messages
//! are written with `delivery_counts_add` every 1,000 messages (the server does it every
//! second). No assertions: the figures are printed.

// A measurement tool, not the server: any failure ends the run with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rmox_core::ratelimit::{day_of, DeliveryLimiter, DeliverySettings, Levels, Network};
use rmox_core::UnixTime;
use rmox_storage::Store;

const SIZE: u64 = 1024;

fn settings() -> DeliverySettings {
    // Limits high enough never to refuse: the cost of the check is measured, not a refusal.
    let big = Levels::new(u64::MAX / 4, u64::MAX / 4, u64::MAX / 4);
    DeliverySettings {
        messages_per_minute: big,
        messages_per_day: big,
        bytes_per_minute: big,
        bytes_per_day: big,
        exempt_loopback: false,
        max_keys: 100_000,
    }
}

/// The server's check for one message; returns its duration.
fn check(l: &mut DeliveryLimiter, store: &Store, now: UnixTime, ip: IpAddr) -> Duration {
    let t = Instant::now();
    let day = day_of(now);
    for (level, net) in l.missing_day(now, ip) {
        let (m, b) = store
            .delivery_counts(day, &net.to_string())
            .expect("read counts");
        l.load_day(now, level, net, m, b);
    }
    l.check_start(now, ip).expect("under the limits");
    l.check_message(now, ip, SIZE).expect("under the limits");
    t.elapsed()
}

/// Counts an accepted message (in memory, pending a write).
fn record(
    l: &mut DeliveryLimiter,
    pending: &mut BTreeMap<Network, (u64, u64)>,
    now: UnixTime,
    ip: IpAddr,
) {
    let (_, nets) = l.record(now, ip, SIZE);
    for n in nets {
        let e = pending.entry(n).or_default();
        e.0 += 1;
        e.1 += SIZE;
    }
}

/// Writes the pending counts (one durable commit).
fn flush(store: &Store, pending: &mut BTreeMap<Network, (u64, u64)>, now: UnixTime) {
    let adds = std::mem::take(pending)
        .into_iter()
        .map(|(n, (m, b))| (n.to_string(), m, b))
        .collect();
    store
        .delivery_counts_add(day_of(now), adds)
        .expect("write counts");
}

/// Mean check cost over `n` messages from `ip` on a limiter that starts empty (as after a
/// restart: its first check reads the stored counts).
fn measure(store: &Store, now: UnixTime, ip: IpAddr, n: usize) -> f64 {
    let mut l = DeliveryLimiter::new(settings());
    let mut pending = BTreeMap::new();
    let mut total = Duration::ZERO;
    for _ in 0..n {
        total += check(&mut l, store, now, ip);
        // Counted in memory only: the measured runs do not add to the stored history.
        record(&mut l, &mut pending, now, ip);
    }
    total.as_nanos() as f64 / n as f64
}

/// Mean cost of the first check of a fresh limiter (reads three stored rows), over `n`.
fn first_checks(store: &Store, now: UnixTime, ip: IpAddr, n: usize) -> f64 {
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let mut l = DeliveryLimiter::new(settings());
        total += check(&mut l, store, now, ip);
    }
    total.as_nanos() as f64 / n as f64
}

fn main() {
    let mut n = 100_000usize;
    let mut history = 100_000usize;
    let mut dir: Option<String> = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--n" => n = it.next().and_then(|v| v.parse().ok()).unwrap_or(n),
            "--history" => history = it.next().and_then(|v| v.parse().ok()).unwrap_or(history),
            "--dir" => dir = it.next(),
            _ => {
                eprintln!("usage: ratelimit_bench [--n N] [--history N] [--dir DIR]");
                std::process::exit(2);
            }
        }
    }
    let tmp = |tag: &str| {
        match &dir {
            Some(d) => tempfile::Builder::new().prefix(tag).tempdir_in(d),
            None => tempfile::Builder::new().prefix(tag).tempdir(),
        }
        .expect("temp dir")
    };
    let (dir_none, dir_hist) = (tmp("rl-none"), tmp("rl-hist"));
    let empty = Store::open(Path::new(dir_none.path())).expect("open store");
    let full = Store::open(Path::new(dir_hist.path())).expect("open store");
    let now = UnixTime(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    );
    let ip: IpAddr = "192.0.2.1".parse().expect("ip");

    // History: `history` messages from the IP counted and written (one commit per 1,000).
    let t = Instant::now();
    let mut l = DeliveryLimiter::new(settings());
    let mut pending = BTreeMap::new();
    for i in 0..history {
        check(&mut l, &full, now, ip);
        record(&mut l, &mut pending, now, ip);
        if (i + 1) % 1000 == 0 {
            flush(&full, &mut pending, now);
        }
    }
    flush(&full, &mut pending, now);
    let fill = t.elapsed();
    let stored = full
        .delivery_counts(day_of(now), "192.0.2.1/32")
        .expect("read");
    assert_eq!(stored.0, history as u64, "history stored");

    // Alternating rounds, medians: the machine may be shared.
    const ROUNDS: usize = 5;
    let (mut none_mean, mut hist_mean, mut none_first, mut hist_first) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        none_mean.push(measure(&empty, now, ip, n));
        hist_mean.push(measure(&full, now, ip, n));
        none_first.push(first_checks(&empty, now, ip, 1000));
        hist_first.push(first_checks(&full, now, ip, 1000));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (nm, hm, nf, hf) = (
        median(none_mean),
        median(hist_mean),
        median(none_first),
        median(hist_first),
    );
    println!(
        "delivery-limit check per message, one IP (median of {ROUNDS} rounds of {n} messages):"
    );
    println!("  no earlier messages:              {nm:8.0} ns");
    println!(
        "  after {history} counted messages: {hm:8.0} ns  (ratio {:.2})",
        hm / nm
    );
    println!(
        "first check after a restart, reads 3 stored rows (median of {ROUNDS} means of 1000):"
    );
    println!("  no earlier messages:              {nf:8.0} ns");
    println!(
        "  after {history} counted messages: {hf:8.0} ns  (ratio {:.2})",
        hf / nf
    );
    println!(
        "counting {history} messages with a durable write every 1,000: {:.2} s ({:.0} ns per message)",
        fill.as_secs_f64(),
        fill.as_nanos() as f64 / history.max(1) as f64
    );
    println!(
        "stored counts of 192.0.2.1/32 today: {} messages, {} bytes",
        stored.0, stored.1
    );
}
