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
//! Two more phases (Linux) write the acceptance log's pattern, one record appended per
//! `fdatasync` in a preallocated file, through the two io_uring paths rmox could take:
//!
//! * `ring`: the write and the `fdatasync` linked on one io_uring in one submission, as
//!   storage's log does (`storage/src/uring.rs`), buffered through the page cache.
//! * `dma`: glommio's direct-I/O file (`DmaFile`, `O_DIRECT`) on a glommio executor: the
//!   aligned block(s) holding the record are written (the tail block rewritten with the
//!   records before it, as a log must), then glommio's `fdatasync`.
//!
//! Where a path cannot run (no io_uring, no `O_DIRECT` on the file system) its phase holds
//! `{"error": "..."}` instead of figures.
//!
//! Each phase starts on a new file. Prints one JSON object on stdout; the files are removed.
//! The I/O of `single`, `batch` and `overwrite` is std's (`write_all`, `File::sync_data`),
//! so their figures are the file system's and not a library's.

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
    let (ring, dma) = uring_phases(&path, a);
    Ok(serde_json::json!({
        "dir": a.dir.display().to_string(),
        "record_bytes": a.record,
        "records_per_fdatasync": a.batch,
        "seconds_per_phase": a.seconds,
        "single": single.json(),
        "batch": batch.json(),
        "overwrite": overwrite.json(),
        "ring": ring,
        "dma": dma,
    })
    .to_string())
}

/// The `ring` and `dma` phases as JSON: figures, or `{"error": ...}` where the path
/// cannot run here (the file is removed either way).
fn uring_phases(path: &Path, a: &Args) -> (serde_json::Value, serde_json::Value) {
    let json = |r: Result<Phase, String>| {
        let _ = std::fs::remove_file(path);
        match r {
            Ok(p) => p.json(),
            Err(e) => serde_json::json!({ "error": e }),
        }
    };
    #[cfg(target_os = "linux")]
    {
        let ring = json(uring::ring_phase(path, a));
        let dma = json(uring::dma_phase(path, a));
        (ring, dma)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = a;
        let none = || json(Err("io_uring exists only on Linux".into()));
        (none(), none())
    }
}

/// The log's room for one phase: enough for 20,000 fdatasyncs per second, more than any
/// disk here does (a faster one wraps to the start).
fn log_room(a: &Args) -> u64 {
    ((20_000.0 * a.seconds) as u64).max(1) * a.record as u64
}

#[cfg(target_os = "linux")]
mod uring {
    use std::os::unix::io::AsRawFd;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use io_uring::{opcode, squeue, types, IoUring};

    use super::{create, log_room, preallocate, Args, Phase};

    fn phase_start() -> Phase {
        Phase {
            syncs: 0,
            records: 0,
            elapsed: Duration::ZERO,
            latencies_us: Vec::new(),
        }
    }

    /// One record per write, linked with an `fdatasync`, one `io_uring_enter` per record
    /// that submits both and waits for both.
    pub(super) fn ring_phase(path: &Path, a: &Args) -> Result<Phase, String> {
        let ioerr = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut f = create(path)?;
        let room = log_room(a);
        preallocate(&mut f, room).map_err(ioerr)?;
        let mut ring = IoUring::new(4).map_err(|e| format!("io_uring: {e}"))?;
        let record = vec![b'r'; a.record];
        let len = u32::try_from(record.len()).map_err(|_| "record over 4 GiB".to_string())?;
        let fd = types::Fd(f.as_raw_fd());
        let mut out = phase_start();
        let mut pos: u64 = 0;
        let start = Instant::now();
        let until = start + Duration::from_secs_f64(a.seconds);
        while Instant::now() < until {
            if pos + u64::from(len) > room {
                pos = 0;
            }
            let t = Instant::now();
            let write = opcode::Write::new(fd, record.as_ptr(), len)
                .offset(pos)
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(1);
            let sync = opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build()
                .user_data(2);
            // SAFETY: both entries point at `record` and the open `f`, which live until
            // both completions are reaped below; if waiting fails, `record` and `f` are
            // leaked (never freed while the kernel may still use them).
            #[allow(unsafe_code)]
            let pushed = unsafe {
                let mut sq = ring.submission();
                sq.push(&write).is_ok() && sq.push(&sync).is_ok()
            };
            if !pushed {
                return Err("io_uring submission queue full".into());
            }
            let mut reaped = 0;
            while reaped < 2 {
                if let Err(e) = ring.submit_and_wait(2 - reaped) {
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    std::mem::forget(record);
                    std::mem::forget(f);
                    return Err(format!("io_uring_enter: {e}"));
                }
                for c in ring.completion() {
                    reaped += 1;
                    let want = if c.user_data() == 1 { len as i32 } else { 0 };
                    if c.result() != want {
                        let e = if c.result() < 0 {
                            std::io::Error::from_raw_os_error(-c.result()).to_string()
                        } else {
                            format!("short write of {} bytes", c.result())
                        };
                        // The other entry may still be in flight.
                        std::mem::forget(record);
                        std::mem::forget(f);
                        return Err(format!("{}: {e}", path.display()));
                    }
                }
            }
            out.latencies_us.push(t.elapsed().as_micros() as u64);
            pos += u64::from(len);
            out.syncs += 1;
            out.records += 1;
        }
        out.elapsed = start.elapsed();
        out.latencies_us.sort_unstable();
        Ok(out)
    }

    /// One record per write through glommio's `DmaFile` (`O_DIRECT`): the aligned blocks
    /// that hold the record, the last partial block rewritten with the records before it,
    /// then `fdatasync`; on one glommio executor, awaited one after the other.
    pub(super) fn dma_phase(path: &Path, a: &Args) -> Result<Phase, String> {
        let ioerr = |e: std::io::Error| format!("{}: {e}", path.display());
        let mut f = create(path)?;
        let room = log_room(a);
        preallocate(&mut f, room).map_err(ioerr)?;
        drop(f);
        let path = path.to_path_buf();
        let (seconds, record_len) = (a.seconds, a.record);
        rmox_runtime_glommio::block_on(move |_| async move {
            let gerr = |e: glommio::GlommioError<()>| format!("{}: {e}", path.display());
            let f = glommio::io::OpenOptions::new()
                .read(true)
                .write(true)
                .dma_open(&path)
                .await
                .map_err(gerr)?;
            let align = f.alignment();
            let record = vec![b'r'; record_len];
            let len = record.len() as u64;
            // The bytes of the block that holds `pos`, before `pos`.
            let mut tail: Vec<u8> = Vec::new();
            let mut out = phase_start();
            let mut pos: u64 = 0;
            let start = Instant::now();
            let until = start + Duration::from_secs_f64(seconds);
            while Instant::now() < until {
                if pos + len > room {
                    pos = 0;
                    tail.clear();
                }
                let t = Instant::now();
                let from = f.align_down(pos);
                let to = f.align_up(pos + len);
                let mut buf = f.alloc_dma_buffer((to - from) as usize);
                {
                    let b = buf.as_bytes_mut();
                    b.fill(0);
                    b[..tail.len()].copy_from_slice(&tail);
                    b[tail.len()..tail.len() + record.len()].copy_from_slice(&record);
                    let end = pos + len;
                    let keep_from = (end - end % align - from) as usize;
                    tail.clear();
                    tail.extend_from_slice(&b[keep_from..(end - from) as usize]);
                }
                let wrote = f.write_at(buf, from).await.map_err(gerr)?;
                if wrote as u64 != to - from {
                    return Err(format!("{}: short write of {wrote} bytes", path.display()));
                }
                f.fdatasync().await.map_err(gerr)?;
                out.latencies_us.push(t.elapsed().as_micros() as u64);
                pos += len;
                out.syncs += 1;
                out.records += 1;
            }
            out.elapsed = start.elapsed();
            out.latencies_us.sort_unstable();
            let _ = f.close().await;
            Ok(out)
        })
        .map_err(|e| format!("glommio executor: {e}"))?
    }
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
        // The io_uring phases run wherever the tests run (Linux, a file system with
        // O_DIRECT: the temporary directory is on the checkout's disk in CI).
        #[cfg(target_os = "linux")]
        for k in ["ring", "dma"] {
            assert!(v[k]["fdatasyncs"].as_u64().unwrap_or(0) > 0, "{k}: {json}");
            assert_eq!(v[k]["records"], v[k]["fdatasyncs"], "{k}: {json}");
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

    /// Both io_uring phases leave the log's bytes: every record in order from the start,
    /// none overwritten by the rewritten tail blocks (records of 100 bytes straddle
    /// blocks), zeros after.
    #[cfg(target_os = "linux")]
    #[test]
    fn io_uring_phases_write_what_a_log_holds() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = Args {
            dir: dir.path().to_path_buf(),
            seconds: 0.05,
            record: 100,
            batch: 1,
        };
        let path = dir.path().join("log");
        for (name, run) in [
            (
                "ring",
                uring::ring_phase as fn(&Path, &Args) -> Result<Phase, String>,
            ),
            ("dma", uring::dma_phase),
        ] {
            let p = run(&path, &a).unwrap_or_else(|e| panic!("{name}: {e}"));
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
            // A disk faster than log_room assumes wraps to the start: all records then.
            let written = ((p.records * 100) as usize).min(bytes.len());
            assert!(written > 0, "{name}");
            assert!(bytes[..written].iter().all(|b| *b == b'r'), "{name}");
            assert!(bytes[written..].iter().all(|b| *b == 0), "{name}");
            std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
