//! The shared DNS loop (rmox_driver::dns) on glommio, against in-process responders
//! (rmox_driver::testing_dns). Skipped where io_uring does not work.

#![allow(clippy::expect_used)] // a failure is a test failure

use rmox_driver::dns::LocalBoxFuture;
use rmox_driver::testing_dns;
use rmox_runtime_glommio::{io_uring_available, GlommioRt};

fn block_on(f: LocalBoxFuture<'static, ()>) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(256 << 10)
        .make()
        .expect("glommio executor")
        .run(f);
}

/// Whether glommio runs here; prints why not.
fn glommio_works() -> bool {
    match io_uring_available() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipping: glommio/io_uring unavailable here: {e}");
            false
        }
    }
}

#[test]
fn answers_and_caches() {
    if glommio_works() {
        testing_dns::answers_and_caches(GlommioRt, block_on);
    }
}

#[test]
fn truncated_answer_retried_over_tcp() {
    if glommio_works() {
        testing_dns::truncated_answer_retried_over_tcp(GlommioRt, block_on);
    }
}

#[test]
fn timeout_moves_to_next_server() {
    if glommio_works() {
        testing_dns::timeout_moves_to_next_server(GlommioRt, block_on);
    }
}

#[test]
fn ad_bit_only_from_trusted() {
    if glommio_works() {
        testing_dns::ad_bit_only_from_trusted(GlommioRt, block_on);
    }
}

#[test]
fn abandoned_request_does_not_stop_the_loop() {
    if glommio_works() {
        testing_dns::abandoned_request_does_not_stop_the_loop(GlommioRt, block_on);
    }
}
