//! End-to-end: real sockets, the smol runtime and the shared driver, through the suite every
//! runtime runs (rmox_driver::testing).

#![allow(clippy::expect_used)] // a failure is a test failure
use std::net::TcpListener;
use std::sync::Arc;

use rmox_driver::testing::{self, RunFn, Server};
use rmox_runtime_smol::{run, ListenerSpec};

fn start(threads: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let run: RunFn = Box::new(move |listener, config, answerer, shutdown| {
        run(
            vec![ListenerSpec { listener, config }],
            answerer,
            threads,
            Arc::clone(&shutdown),
        )
    });
    Server::start(listener, run)
}

#[test]
fn one_transaction_then_shutdown() {
    testing::one_transaction_then_shutdown(start(2));
}

#[test]
fn shutdown_closes_idle_sessions_with_421() {
    testing::shutdown_closes_idle_sessions_with_421(start(1));
}

#[test]
fn shutdown_waits_for_message_in_progress() {
    testing::shutdown_waits_for_message_in_progress(start(2));
}
