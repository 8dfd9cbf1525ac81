//! The runtimes compiled into this build, and work run on one of them: the queue runner and
//! its deliveries are written once, generic over [`Net`], and started on the runtime the
//! server picked ([`crate::serve`]) or, for one-off work (command-line tools, tests), on a
//! runtime of this thread ([`Runtime::block_on`]).

use std::future::Future;

use rmox_driver::outbound::Net;

/// A runtime compiled into this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// tokio (feature `tokio`).
    #[cfg(feature = "tokio")]
    Tokio,
    /// smol (feature `smol`).
    #[cfg(feature = "smol")]
    Smol,
    /// glommio on io_uring (feature `glommio`, Linux only).
    #[cfg(all(feature = "glommio", target_os = "linux"))]
    Glommio,
}

/// Work that runs on any runtime: given the runtime's [`Net`] value, a future.
pub trait OnRuntime {
    /// What the work returns.
    type Output;
    /// The work on runtime `rt`.
    fn run<R: Net>(self, rt: R) -> impl Future<Output = Self::Output>;
}

impl Runtime {
    /// Its name, as `--runtime` spells it.
    pub fn name(self) -> &'static str {
        match self {
            #[cfg(feature = "tokio")]
            Runtime::Tokio => "tokio",
            #[cfg(feature = "smol")]
            Runtime::Smol => "smol",
            #[cfg(all(feature = "glommio", target_os = "linux"))]
            Runtime::Glommio => "glommio",
        }
    }

    /// The runtime for one-off work on this thread when none was chosen: smol when compiled
    /// in (no io_uring set-up), else tokio, else glommio.
    pub fn one_off() -> Runtime {
        #[cfg(feature = "smol")]
        return Runtime::Smol;
        #[cfg(all(not(feature = "smol"), feature = "tokio"))]
        return Runtime::Tokio;
        #[cfg(all(
            not(feature = "smol"),
            not(feature = "tokio"),
            feature = "glommio",
            target_os = "linux"
        ))]
        return Runtime::Glommio;
    }

    /// The worker threads `serve` starts on `cpus` CPUs unless the configuration says
    /// (`threads`): one per CPU on tokio and smol; on glommio one per two CPUs, at least one.
    /// A glommio executor that runs out of work flushes its rings and issues a `membarrier`
    /// (an interrupt on every CPU running the process) before it sleeps; with half the
    /// executors each one sleeps less often per message, and the storage work on the
    /// blocking pool keeps the other CPUs (measured on 2 CPUs: README, Performance).
    pub fn default_threads(self, cpus: usize) -> usize {
        let cpus = cpus.max(1);
        match self {
            #[cfg(all(feature = "glommio", target_os = "linux"))]
            Runtime::Glommio => cpus.div_ceil(2),
            #[allow(unreachable_patterns)]
            _ => cpus,
        }
    }

    /// Runs `work` on a new executor of this runtime on this thread until it completes.
    pub fn block_on<W: OnRuntime>(self, work: W) -> std::io::Result<W::Output> {
        match self {
            #[cfg(feature = "tokio")]
            Runtime::Tokio => rmox_runtime_tokio::block_on(|rt| work.run(rt)),
            #[cfg(feature = "smol")]
            Runtime::Smol => rmox_runtime_smol::block_on(|rt| work.run(rt)),
            #[cfg(all(feature = "glommio", target_os = "linux"))]
            Runtime::Glommio => rmox_runtime_glommio::block_on(|rt| work.run(rt)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// tokio and smol get one worker per CPU, glommio one per two CPUs (at least one).
    #[test]
    fn default_threads_per_runtime() {
        #[cfg(feature = "tokio")]
        assert_eq!(
            [1, 2, 3, 8].map(|n| Runtime::Tokio.default_threads(n)),
            [1, 2, 3, 8]
        );
        #[cfg(feature = "smol")]
        assert_eq!(
            [0, 1, 2, 8].map(|n| Runtime::Smol.default_threads(n)),
            [1, 1, 2, 8]
        );
        #[cfg(all(feature = "glommio", target_os = "linux"))]
        assert_eq!(
            [0, 1, 2, 3, 4, 8].map(|n| Runtime::Glommio.default_threads(n)),
            [1, 1, 1, 2, 2, 4]
        );
    }
}
