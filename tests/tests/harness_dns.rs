//! The DNS loop of the driver (rmox_driver::dns) on every runtime against the harness's
//! validating resolver (../shared/harness): UDP answers, the AD bit of validated answers,
//! SERVFAIL of a bogus zone, NXDOMAIN, and a TXT record too big for UDP that only the TCP
//! retry returns. Skips with a printed reason when the harness is not up (an error in CI).

#![allow(clippy::expect_used)] // a failure is a test failure

use rmox_driver::dns::LocalBoxFuture;
use rmox_driver::testing_dns;
use rmox_tests::harness::{Harness, RESOLVER};

fn resolver() -> std::net::SocketAddr {
    RESOLVER.parse().expect("harness resolver address")
}

#[cfg(feature = "tokio")]
#[test]
fn dns_loop_on_tokio_against_harness() {
    let Some(_h) = Harness::get("dns_loop_on_tokio_against_harness") else {
        return;
    };
    fn block_on(f: LocalBoxFuture<'static, ()>) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        tokio::task::LocalSet::new().block_on(&rt, f);
    }
    testing_dns::harness_lookups(rmox_runtime_tokio::TokioRt, block_on, resolver());
}

#[cfg(feature = "smol")]
#[test]
fn dns_loop_on_smol_against_harness() {
    let Some(_h) = Harness::get("dns_loop_on_smol_against_harness") else {
        return;
    };
    thread_local! {
        static EX: std::rc::Rc<async_executor::LocalExecutor<'static>> =
            std::rc::Rc::new(async_executor::LocalExecutor::new());
    }
    fn block_on(f: LocalBoxFuture<'static, ()>) {
        EX.with(|ex| async_io::block_on(ex.run(f)));
    }
    let rt = rmox_runtime_smol::SmolRt::new(EX.with(std::rc::Rc::clone));
    testing_dns::harness_lookups(rt, block_on, resolver());
}

#[cfg(all(feature = "glommio", target_os = "linux"))]
#[test]
fn dns_loop_on_glommio_against_harness() {
    let Some(_h) = Harness::get("dns_loop_on_glommio_against_harness") else {
        return;
    };
    if let Err(e) = rmox_runtime_glommio::io_uring_available() {
        eprintln!("SKIP dns_loop_on_glommio_against_harness: io_uring unavailable: {e}");
        return;
    }
    fn block_on(f: LocalBoxFuture<'static, ()>) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(256 << 10)
            .make()
            .expect("glommio executor")
            .run(f);
    }
    testing_dns::harness_lookups(rmox_runtime_glommio::GlommioRt, block_on, resolver());
}
