//! fsync_bench: the physical limit of durable appends on one file system.
//!
//! ```text
//! fsync_bench DIR [--seconds 2] [--record 1024] [--batch 8]
//! ```
//!
//! In a fresh file in DIR (give a directory on the file system the servers write to), for
//! `--seconds` each:
//!
//! * `single`: append one record, `fdatasync` (`File::sync_data`), repeat. Operations per
//!   second and the latency of one append+fdatasync (p50/p99): what one durable 250 costs
//!   at least when every message waits for its own fdatasync.
//! * `batch`: append `--batch` records, one fdatasync, repeat. Records per second: the limit
//!   of a group commit that puts that many messages in one fdatasync.
//! * `overwrite`: like `single`, but in a preallocated (written and synced) region, so the
//!   fdatasync has no file size to commit; shows what a preallocated log would gain.
//!
//! Each phase starts on a new file. Prints one JSON object on stdout; the files are removed.
//! The I/O is std's (`write_all`, `File::sync_data`), so the figure is the file system's and
//! not a library's.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Command-line settings.
struct Args {
    dir: PathBuf,
    seconds: f64,
    record: usize,
    batch: usize,
}

fn usage() -> String {
    "usage: fsync_bench DIR [--seconds S] [--record BYTES] [--batch N]".into()
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut dir = None;
    let mut a = Args {
        dir: PathBuf::new(),
        seconds: 2.0,
        record: 1024,
        batch: 8,
    };
    while let Some(s) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name}: missing value"));
        match s.as_str() {
            "--seconds" => {
                let v = value("--seconds")?;
                a.seconds = v
                    .parse()
                    .ok()
                    .filter(|x: &f64| *x > 0.0 && x.is_finite())
                    .ok_or_else(|| format!("--seconds {v}: not a positive number"))?;
            }
            "--record" => {
                let v = value("--record")?;
                a.record = v
                    .parse()
                    .ok()
                    .filter(|x| *x > 0)
                    .ok_or_else(|| format!("--record {v}: not a positive integer"))?;
            }
            "--batch" => {
                let v = value("--batch")?;
                a.batch = v
                    .parse()
                    .ok()
                    .filter(|x| *x > 0)
                    .ok_or_else(|| format!("--batch {v}: not a positive integer"))?;
            }
            "-h" | "--help" => return Err(usage()),
            _ if s.starts_with('-') => return Err(format!("{s}: unknown option; {}", usage())),
            _ if dir.is_none() => dir = Some(PathBuf::from(s)),
            _ => return Err(format!("{s}: only one directory; {}", usage())),
        }
    }
    a.dir = dir.ok_or_else(usage)?;
    Ok(a)
}

/// Nearest-rank percentile of sorted values (p in 0..=100); 0 for no values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What one phase measured.
struct Phase {
    /// fdatasync calls made.
    syncs: u64,
    /// Records written.
    records: u64,
    elapsed: Duration,
    /// Latency of each write group plus its fdatasync, microseconds, sorted.
    latencies_us: Vec<u64>,
}

impl Phase {
    fn json(&self) -> serde_json::Value {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        serde_json::json!({
            "fdatasyncs": self.syncs,
            "records": self.records,
            "seconds": secs,
            "fdatasyncs_per_second": self.syncs as f64 / secs,
            "records_per_second": self.records as f64 / secs,
            "latency_us": {
                "p50": percentile(&self.latencies_us, 50.0),
                "p99": percentile(&self.latencies_us, 99.0),
            },
        })
    }
}

/// Creates (truncating) the phase's file.
fn create(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes groups of `per_sync` records, each group followed by one fdatasync, for
/// `seconds`. With `prealloc`, the file is first written and synced to the size the phase
/// can reach (grown if it is reached) and records overwrite it from the start.
fn phase(path: &Path, a: &Args, per_sync: usize, prealloc: bool) -> Result<Phase, String> {
    let ioerr = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = create(path)?;
    let record = vec![b'r'; a.record];
    let group = record.repeat(per_sync);
    // Preallocate for 20,000 fdatasyncs per second, more than any disk here does.
    let mut room: u64 = 0;
    if prealloc {
        room = ((20_000.0 * a.seconds) as u64).max(1) * group.len() as u64;
        preallocate(&mut f, room).map_err(ioerr)?;
    }
    let mut out = Phase {
        syncs: 0,
        records: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    let mut pos: u64 = 0;
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(a.seconds);
    while Instant::now() < until {
        if prealloc && pos + group.len() as u64 > room {
            // Out of preallocated room: the disk is faster than assumed; restart at 0.
            f.seek(SeekFrom::Start(0)).map_err(ioerr)?;
            pos = 0;
        }
        let t = Instant::now();
        f.write_all(&group).map_err(ioerr)?;
        f.sync_data().map_err(ioerr)?;
        out.latencies_us.push(t.elapsed().as_micros() as u64);
        pos += group.len() as u64;
        out.syncs += 1;
        out.records += per_sync as u64;
    }
    out.elapsed = start.elapsed();
    out.latencies_us.sort_unstable();
    drop(f);
    std::fs::remove_file(path).map_err(ioerr)?;
    Ok(out)
}

/// Writes `len` bytes of zeros and syncs them, then seeks back to the start.
fn preallocate(f: &mut File, len: u64) -> std::io::Result<()> {
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    f.seek(SeekFrom::Start(0))?;
    Ok(())
}

fn run(a: &Args) -> Result<String, String> {
    if !a.dir.is_dir() {
        return Err(format!("{}: not a directory", a.dir.display()));
    }
    let path = a
        .dir
        .join(format!("fsync_bench.{}.dat", std::process::id()));
    let single = phase(&path, a, 1, false)?;
    let batch = phase(&path, a, a.batch, false)?;
    let overwrite = phase(&path, a, 1, true)?;
    Ok(serde_json::json!({
        "dir": a.dir.display().to_string(),
        "record_bytes": a.record,
        "records_per_fdatasync": a.batch,
        "seconds_per_phase": a.seconds,
        "single": single.json(),
        "batch": batch.json(),
        "overwrite": overwrite.json(),
    })
    .to_string())
}

fn main() {
    let out = parse_args(std::env::args().skip(1)).and_then(|a| run(&a));
    match out {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("fsync_bench: {e}");
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, String> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn command_lines() {
        let a =
            args(&["/tmp", "--seconds", "0.5", "--batch", "4"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.dir, PathBuf::from("/tmp"));
        assert_eq!((a.seconds, a.record, a.batch), (0.5, 1024, 4));
        let bad: &[&[&str]] = &[
            &[],
            &["/tmp", "/var"],
            &["/tmp", "--seconds", "0"],
            &["/tmp", "--seconds"],
            &["/tmp", "--batch", "x"],
            &["/tmp", "--record", "0"],
            &["/tmp", "--frobnicate"],
        ];
        for v in bad {
            assert!(args(v).is_err(), "{v:?}");
        }
    }

    /// A short run writes JSON with every phase and leaves no file behind.
    #[test]
    fn short_run() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = Args {
            dir: dir.path().to_path_buf(),
            seconds: 0.05,
            record: 100,
            batch: 3,
        };
        let json = run(&a).unwrap_or_else(|e| panic!("{e}"));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        for k in ["single", "batch", "overwrite"] {
            assert!(v[k]["fdatasyncs"].as_u64().unwrap_or(0) > 0, "{k}: {json}");
        }
        assert_eq!(
            v["batch"]["records"].as_u64(),
            v["batch"]["fdatasyncs"].as_u64().map(|n| n * 3)
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).map(|d| d.count()).ok(),
            Some(0)
        );
    }
}
