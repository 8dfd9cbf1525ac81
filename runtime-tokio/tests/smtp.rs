//! End-to-end: real sockets, the tokio runtime and the shared driver, through the suite every
//! runtime runs (rmox_driver::testing).

#![allow(clippy::expect_used)] // a failure is a test failure
use std::net::TcpListener;
use std::sync::Arc;

use rmox_driver::testing::{self, RunFn, Server};
use rmox_runtime_tokio::{run, ListenerSpec};

fn start(threads: usize) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let run: RunFn = Box::new(move |listener, config, answerer, shutdown| {
        run(
            vec![ListenerSpec::smtp(listener, config)],
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

fn deliver(
    session: rmox_core::delivery::DeliverySession,
    answerer: Arc<dyn rmox_driver::outbound::DeliveryAnswerer>,
) -> rmox_core::delivery::Report {
    rmox_runtime_tokio::block_on(|rt| rmox_driver::outbound::deliver(rt, session, answerer, 1))
        .expect("runtime")
}

#[test]
fn outbound_delivers() {
    testing::outbound_delivers(start(1), &deliver);
}

#[test]
fn outbound_refused_then_fallback() {
    testing::outbound_refused_then_fallback(start(1), &deliver);
}

#[test]
fn outbound_dns_async() {
    testing::outbound_dns_async(start(1), &deliver);
}

#[test]
fn outbound_connect_timeout() {
    testing::outbound_connect_timeout(&deliver);
}

#[test]
fn http_beside_smtp() {
    testing::http_beside_smtp(Box::new(|specs, answerer, shutdown| {
        run(specs, answerer, 2, shutdown)
    }));
}
