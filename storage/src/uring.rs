//! One io_uring for the acceptance log: a write and the `fdatasync` linked after it,
//! submitted with one `io_uring_enter` and reaped later, so the group commit's leader commits
//! the index while the disk syncs (see [`crate::alog::Log::stage`]).
//!
//! The only unsafe code of the storage crate: pushing entries that point at memory the
//! kernel reads later. The ring owns the bytes in flight until both completions are reaped (also when it is
//! dropped), so the kernel never reads freed memory.

use io_uring::{opcode, squeue, types, IoUring};

/// Submission and completion entries: one write and one sync in flight at a time.
const ENTRIES: u32 = 4;
const WRITE: u64 = 1;
const SYNC: u64 = 2;

/// A ring with at most one write + sync in flight.
pub(crate) struct Ring {
    ring: IoUring,
    /// The bytes of the write in flight; `None` when nothing is.
    inflight: Option<Vec<u8>>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("inflight", &self.inflight.as_ref().map(Vec::len))
            .finish()
    }
}

impl Ring {
    /// A new ring; an error where io_uring is missing or forbidden (old kernel, seccomp,
    /// `kernel.io_uring_disabled`), and the log then writes and syncs by itself.
    pub(crate) fn new() -> std::io::Result<Ring> {
        Ok(Ring {
            ring: IoUring::new(ENTRIES)?,
            inflight: None,
        })
    }

    /// Submits `buf` written at `off` of `fd`, then `fdatasync` of `fd` (linked: it runs
    /// after the write, and is cancelled if the write fails). The ring keeps `buf` until
    /// [`Ring::wait`] gives it back. An error: nothing was submitted, `buf` comes back.
    pub(crate) fn write_and_sync(
        &mut self,
        fd: i32,
        off: u64,
        buf: Vec<u8>,
    ) -> Result<(), (std::io::Error, Vec<u8>)> {
        if self.inflight.is_some() {
            return Err((
                std::io::Error::other("a log write is already in flight"),
                buf,
            ));
        }
        let Ok(len) = u32::try_from(buf.len()) else {
            return Err((std::io::Error::other("log write over 4 GiB"), buf));
        };
        let write = opcode::Write::new(types::Fd(fd), buf.as_ptr(), len)
            .offset(off)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(WRITE);
        let sync = opcode::Fsync::new(types::Fd(fd))
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(SYNC);
        {
            let mut sq = self.ring.submission();
            if sq.capacity() - sq.len() < 2 {
                drop(sq);
                return Err((std::io::Error::other("io_uring submission queue full"), buf));
            }
            // SAFETY: the entries point into `buf`, which the ring keeps (`inflight`) until
            // both completions are reaped (`wait`, or `drop`), and a failed submission
            // below gives the ring up with them unsubmitted; the fd is the log's, and the
            // kernel holds its own reference to the file once they are submitted.
            #[allow(unsafe_code)]
            unsafe {
                // Room for both was checked above.
                let _ = sq.push(&write);
                let _ = sq.push(&sync);
            }
        }
        self.inflight = Some(buf);
        match self.ring.submit() {
            Ok(2) => Ok(()),
            Ok(n) => {
                // Not all taken: reap what was, then hand the bytes back.
                let _ = self.reap(n);
                let buf = self.inflight.take().unwrap_or_default();
                Err((
                    std::io::Error::other(format!("io_uring took {n} of 2 entries")),
                    buf,
                ))
            }
            Err(e) => {
                // Nothing was taken (the caller gives this ring up).
                let buf = self.inflight.take().unwrap_or_default();
                Err((e, buf))
            }
        }
    }

    /// Waits for the write and the sync in flight and gives their bytes back. An error
    /// when either failed, the write was short, or the sync was cancelled.
    pub(crate) fn wait(&mut self) -> (Vec<u8>, std::io::Result<()>) {
        let Some(buf) = self.inflight.take() else {
            return (
                Vec::new(),
                Err(std::io::Error::other("no log write in flight")),
            );
        };
        let expect = buf.len();
        let done = match self.reap(2) {
            Err(e) => Err(e),
            Ok((Some(w), Some(s))) if w >= 0 && w as usize == expect && s >= 0 => Ok(()),
            Ok((Some(w), _)) if w < 0 => Err(std::io::Error::from_raw_os_error(-w)),
            Ok((_, Some(s))) if s < 0 => Err(std::io::Error::from_raw_os_error(-s)),
            Ok((w, s)) => Err(std::io::Error::other(format!(
                "io_uring log write: write {w:?} of {expect} bytes, sync {s:?}"
            ))),
        };
        (buf, done)
    }

    /// Reaps `n` completions: (the write's result, the sync's result).
    fn reap(&mut self, n: usize) -> std::io::Result<(Option<i32>, Option<i32>)> {
        let (mut w, mut s) = (None, None);
        let mut got = 0;
        while got < n {
            for cqe in self.ring.completion() {
                got += 1;
                match cqe.user_data() {
                    WRITE => w = Some(cqe.result()),
                    _ => s = Some(cqe.result()),
                }
            }
            if got < n {
                match self.ring.submit_and_wait(n - got) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((w, s))
    }
}

impl Drop for Ring {
    /// The kernel may still read the bytes in flight: wait for it first.
    fn drop(&mut self) {
        if self.inflight.is_some() {
            let _ = self.reap(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// A ring; `None` where io_uring is unavailable (the log's own path is what runs there,
    /// which the other tests cover), which fails under CI, whose kernel has it.
    fn ring() -> Option<Ring> {
        let r = Ring::new().ok();
        assert!(
            r.is_some() || std::env::var_os("CI").is_none(),
            "io_uring unavailable under CI"
        );
        r
    }

    /// A write and its sync complete, the bytes are in the file at the offset, and a
    /// second write can follow.
    #[test]
    fn writes_then_syncs() {
        let Some(mut ring) = ring() else { return };
        let d = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(d.path().join("x")).unwrap();
        ring.write_and_sync(f.as_raw_fd(), 4, b"hello".to_vec())
            .unwrap();
        let (_, back) = ring
            .write_and_sync(f.as_raw_fd(), 0, b"no".to_vec())
            .unwrap_err();
        assert_eq!(back, b"no");
        let (back, done) = ring.wait();
        done.unwrap();
        assert_eq!(back, b"hello");
        ring.write_and_sync(f.as_raw_fd(), 9, b"!".to_vec())
            .unwrap();
        ring.wait().1.unwrap();
        assert_eq!(
            std::fs::read(d.path().join("x")).unwrap(),
            b"\0\0\0\0hello!"
        );
        assert!(ring.wait().1.is_err());
    }

    /// A write the kernel refuses (a read-only file) is reported, and the linked sync
    /// does not run as if it had succeeded.
    #[test]
    fn failed_write_is_reported() {
        let Some(mut ring) = ring() else { return };
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("x"), b"").unwrap();
        let f = std::fs::File::open(d.path().join("x")).unwrap();
        ring.write_and_sync(f.as_raw_fd(), 0, b"data".to_vec())
            .unwrap();
        assert!(ring.wait().1.is_err());
        // The ring works on after a failure.
        let g = std::fs::OpenOptions::new()
            .write(true)
            .open(d.path().join("x"))
            .unwrap();
        ring.write_and_sync(g.as_raw_fd(), 0, b"ok".to_vec())
            .unwrap();
        ring.wait().1.unwrap();
    }
}
