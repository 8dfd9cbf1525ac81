//! The shared DNS loop (rmox_driver::dns) on tokio, against in-process responders
//! (rmox_driver::testing_dns).

#![allow(clippy::expect_used)] // a failure is a test failure

use rmox_driver::dns::LocalBoxFuture;
use rmox_driver::testing_dns;
use rmox_runtime_tokio::TokioRt;

fn block_on(f: LocalBoxFuture<'static, ()>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio::task::LocalSet::new().block_on(&rt, f);
}

#[test]
fn answers_and_caches() {
    testing_dns::answers_and_caches(TokioRt, block_on);
}

#[test]
fn truncated_answer_retried_over_tcp() {
    testing_dns::truncated_answer_retried_over_tcp(TokioRt, block_on);
}

#[test]
fn timeout_moves_to_next_server() {
    testing_dns::timeout_moves_to_next_server(TokioRt, block_on);
}

#[test]
fn ad_bit_only_from_trusted() {
    testing_dns::ad_bit_only_from_trusted(TokioRt, block_on);
}

#[test]
fn abandoned_request_does_not_stop_the_loop() {
    testing_dns::abandoned_request_does_not_stop_the_loop(TokioRt, block_on);
}
