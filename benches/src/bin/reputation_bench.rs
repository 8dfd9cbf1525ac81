//! Reputation cost against the size of an account's history: the time of one incoming
//! analysis (core's machine answered from storage, `rmox::analysis::reputation`) on an
//! empty account and on one holding `--prefill` messages (default 100,000), in one run.
//!
//! ```text
//! cargo run --release -p rmox-benches --bin reputation_bench -- [--prefill N] [--n N] [--case new|known]
//! ```
//!
//! Two cases each: a first-time sender (every question is asked: the worst case) and a
//! sender with history (the first question decides). The small account holds only the
//! known sender's own messages, so both accounts answer its question from the same ones. The two accounts are measured in 11 alternating rounds; prints the median microseconds per analysis of each and
//! the median of the per-round ratios full/empty, with the issue's target (within 10%) as pass/fail. Figures only,
//! no assertions; run on a quiet machine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failures abort

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use rmox_core::reputation::{Facts, FromFacts};
use rmox_core::UnixTime;
use rmox_storage::{Delivery, Flags, MessageInfo, Store, Validation};

const NOW: UnixTime = UnixTime(2_000_000_000);

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Message `i` of the prefill: 2,000 sender domains, 20 addresses each, 5,000 client IPs,
/// one in ten junk, spread over the last 90 days.
fn prefill_delivery(i: usize, body: &[u8]) -> Delivery<'_> {
    let dom = format!("d{}.example", i % 2000);
    let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + (i % 5000) as u32 * 7));
    Delivery {
        account: "a".into(),
        mailbox: "Inbox".into(),
        head: b"",
        message: body,
        flags: Flags {
            junk: i % 10 == 0,
            ..Flags::default()
        },
        received: UnixTime(NOW.0 - (i as i64 % 90) * 86400 - 60),
        info: MessageInfo {
            remote_ip: Some(ip),
            ehlo: Some(format!("mx.{dom}")),
            mail_from: Some(format!("bounce@{dom}")),
            mail_from_validation: Validation::Pass,
            from_address: Some(format!("u{}@{dom}", i % 20)),
            from_domain: Some(dom.clone()),
            from_org_domain: Some(dom.clone()),
            from_validation: Validation::Dmarc,
            dkim_domains: vec![dom],
            ..MessageInfo::default()
        },
    }
}

fn facts(new_sender: bool) -> Facts {
    let dom = if new_sender {
        "new.example".to_string()
    } else {
        "d7.example".to_string()
    };
    let ip = if new_sender {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    } else {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + 7 * 7))
    };
    Facts {
        from: Some(FromFacts {
            localpart: "u7".into(),
            domain: dom.clone(),
            org_domain: dom.clone(),
            validated: true,
        }),
        mail_from: Some(format!("bounce@{dom}")),
        mail_from_domain: Some(dom.clone()),
        mail_from_validated: true,
        ehlo: Some(format!("mx.{dom}")),
        ehlo_validated: false,
        dkim_domains: vec![dom],
        networks: rmox_storage::ip_networks(ip),
        ipv6: false,
    }
}

/// Microseconds per analysis of `store`, over `n` analyses.
fn round(store: &Store, f: &Facts, n: usize) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        let o = rmox::analysis::reputation(store, "a", Some("Rejects"), f.clone(), NOW)
            .expect("analysis");
        std::hint::black_box(o);
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// The two accounts measured in alternating rounds (so that load from elsewhere on the
/// machine falls on both alike): the medians of each and of the per-round ratios.
fn measure_pair(empty: &Store, full: &Store, new_sender: bool, n: usize) -> (f64, f64, f64) {
    let f = facts(new_sender);
    let (mut e, mut g, mut r) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let a = round(empty, &f, n);
        let b = round(full, &f, n);
        e.push(a);
        g.push(b);
        r.push(b / a);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(e), median(g), median(r))
}

/// Alternating rounds per case.
const ROUNDS: usize = 11;

fn main() {
    let prefill = arg("--prefill", 100_000);
    let n = arg("--n", 2000);
    let dir = tempfile::tempdir().expect("temp dir");
    let empty = Store::open(&dir.path().join("empty")).expect("store");
    empty.account_add("a", "example.org").expect("account");
    let full = Store::open(&dir.path().join("full")).expect("store");
    full.account_add("a", "example.org").expect("account");
    let body = b"From: x@example.org\r\nSubject: s\r\n\r\nbody\r\n".to_vec();
    let t = Instant::now();
    let mut i = 0;
    while i < prefill {
        let batch: Vec<Delivery<'_>> = (i..(i + 1000).min(prefill))
            .map(|j| prefill_delivery(j, &body))
            .collect();
        full.deliver_many(batch).expect("prefill");
        i += 1000;
    }
    eprintln!(
        "prefilled {prefill} messages in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // The small account holds exactly the known sender's history from the prefill (its 50
    // messages), so that both answer the known-sender question from the same messages and
    // differ only in everything else the account holds.
    let own: Vec<Delivery<'_>> = (0..prefill)
        .filter(|j| j % 2000 == 7)
        .map(|j| prefill_delivery(j, &body))
        .collect();
    let own_n = own.len();
    if !own.is_empty() {
        empty
            .deliver_many(own)
            .expect("the known sender's messages");
    }
    println!(
        "| case | account with {own_n} messages (the sender's own) (µs) | {prefill} messages (µs) | ratio | target ≤ 1.10 |"
    );
    println!("| --- | --- | --- | --- | --- |");
    // `--case new` or `--case known` measures one case (e.g. under a profiler).
    let only: Option<String> = {
        let args: Vec<String> = std::env::args().collect();
        args.iter()
            .position(|a| a == "--case")
            .and_then(|i| args.get(i + 1).cloned())
    };
    for (name, new_sender) in [
        ("first-time sender (all questions)", true),
        ("known sender (first question)", false),
    ] {
        if only.as_deref().is_some_and(|o| (o == "new") != new_sender) {
            continue;
        }
        let (e, f, ratio) = measure_pair(&empty, &full, new_sender, n);
        println!(
            "| {name} | {e:.1} | {f:.1} | {ratio:.2} | {} |",
            if ratio <= 1.10 { "pass" } else { "FAIL" }
        );
    }
}
