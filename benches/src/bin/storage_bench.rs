//! Storage benchmark: durable stores/s against the disk's own fdatasync/s, measured in the
//! same run and directory, for 1 KiB and 64 KiB messages from 1, 8 and 64 writer threads,
//! on an empty store and again after a prefill (default 100,000 messages).
//!
//! ```text
//! cargo run --release -p rmox-benches --bin storage_bench -- [--n N] [--prefill N] [--no-prefill] [--dir DIR]
//! ```
//!
//! `--n`: messages stored per configuration (default 2000). A ratio above 1 means several
//! messages share one sync: group commit working. No assertions: the figures are printed.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmox_core::UnixTime;
use rmox_storage::{Delivery, Flags, MessageInfo, Store};

struct Args {
    n: usize,
    prefill: usize,
    dir: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        n: 2000,
        prefill: 100_000,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match x.as_str() {
            "--n" => a.n = num("--n")?,
            "--prefill" => a.prefill = num("--prefill")?,
            "--no-prefill" => a.prefill = 0,
            "--dir" => a.dir = Some(it.next().ok_or("--dir needs a directory")?),
            _ => {
                return Err(format!(
                    "unknown argument {x:?}; use --n N, --prefill N, --no-prefill, --dir DIR"
                ))
            }
        }
    }
    Ok(a)
}

/// write(4 KiB) + fdatasync in a loop on one file in `dir`, for about a second.
fn fdatasync_rate(dir: &Path) -> std::io::Result<f64> {
    let p = dir.join("fdatasync-probe");
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&p)?;
    let buf = [0x55u8; 4096];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(1) || n < 20 {
        f.write_all(&buf)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    std::fs::remove_file(&p)?;
    Ok(rate)
}

fn message(size: usize, seq: usize) -> Vec<u8> {
    let mut m = format!("From: bench@example.org\r\nSubject: {seq}\r\n\r\n").into_bytes();
    m.resize(size.max(m.len()), b'x');
    m
}

fn delivery(m: &[u8], t: i64) -> Delivery<'_> {
    Delivery {
        account: "bench".into(),
        mailbox: "Inbox".into(),
        head: &[],
        message: m,
        flags: Flags::default(),
        received: UnixTime(t),
        info: MessageInfo {
            remote_ip: Some(
                "192.0.2.1"
                    .parse()
                    .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1])),
            ),
            mail_from: Some("bench@example.org".into()),
            from_domain: Some("example.org".into()),
            ..Default::default()
        },
    }
}

/// Stores `n` messages of `size` bytes from `writers` threads; returns stores/s.
fn run(store: &Arc<Store>, n: usize, size: usize, writers: usize) -> Result<f64, String> {
    let per = n.div_ceil(writers);
    let start = Instant::now();
    let handles: Vec<_> = (0..writers)
        .map(|w| {
            let s = Arc::clone(store);
            std::thread::spawn(move || -> Result<usize, String> {
                let mut done = 0;
                for i in 0..per {
                    let m = message(size, w * per + i);
                    s.deliver(delivery(&m, i as i64))
                        .map_err(|e| e.to_string())?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.join().map_err(|_| "writer panicked".to_string())??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Fills the store with `n` 1 KiB messages in large batches from many threads.
fn prefill(store: &Arc<Store>, n: usize) -> Result<(), String> {
    let threads = 64;
    let batch = 100;
    let per = n.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let s = Arc::clone(store);
            std::thread::spawn(move || -> Result<(), String> {
                let mut i = 0;
                while i < per {
                    let k = batch.min(per - i);
                    let msgs: Vec<Vec<u8>> =
                        (0..k).map(|j| message(1024, t * per + i + j)).collect();
                    let reqs = msgs
                        .iter()
                        .map(|m| delivery(m, (i % 86_400) as i64))
                        .collect();
                    s.deliver_many(reqs).map_err(|e| e.to_string())?;
                    i += k;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| "prefill panicked".to_string())??;
    }
    Ok(())
}

fn table(store: &Arc<Store>, n: usize, sync_rate: f64) -> Result<(), String> {
    println!(
        "{:>8} {:>8} {:>10} {:>12} {:>8}",
        "size", "writers", "stores/s", "fdatasync/s", "ratio"
    );
    for size in [1024usize, 64 * 1024] {
        for writers in [1usize, 8, 64] {
            // One writer at ~3 syncs per store is slow: store fewer so the run stays short.
            let count = if writers == 1 { n.min(300) } else { n };
            let rate = run(store, count, size, writers)?;
            println!(
                "{:>8} {:>8} {:>10.0} {:>12.0} {:>8.2}",
                if size == 1024 { "1KiB" } else { "64KiB" },
                writers,
                rate,
                sync_rate,
                rate / sync_rate
            );
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("storage_bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), String> {
    let a = args()?;
    let tmp = match &a.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir_in("."),
    }
    .map_err(|e| format!("temp dir: {e}"))?;
    let sync_rate = fdatasync_rate(tmp.path()).map_err(|e| format!("fdatasync probe: {e}"))?;
    println!("disk: {sync_rate:.0} fdatasync/s (write 4 KiB + fdatasync, same directory)");
    println!("\nempty store, {} messages per row (300 for 1 writer)", a.n);
    let open = |name: &str| -> Result<Arc<Store>, String> {
        let s = Store::open(&tmp.path().join(name)).map_err(|e| e.to_string())?;
        s.account_add("bench", "example.org")
            .map_err(|e| e.to_string())?;
        Ok(Arc::new(s))
    };
    let empty = open("empty")?;
    table(&empty, a.n, sync_rate)?;
    drop(empty);
    if a.prefill > 0 {
        let s = open("full")?;
        let t = Instant::now();
        prefill(&s, a.prefill)?;
        println!(
            "\nafter prefilling {} messages ({:.1} s, {:.0} stores/s in batches of 100)",
            a.prefill,
            t.elapsed().as_secs_f64(),
            a.prefill as f64 / t.elapsed().as_secs_f64()
        );
        let sync_rate = fdatasync_rate(tmp.path()).map_err(|e| format!("fdatasync probe: {e}"))?;
        table(&s, a.n, sync_rate)?;
    }
    Ok(())
}
