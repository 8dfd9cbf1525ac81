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
