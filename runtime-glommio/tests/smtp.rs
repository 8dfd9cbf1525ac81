//! End-to-end: real sockets, the glommio runtime (skipped where io_uring does not work) and
//! the shared driver: the suite every runtime runs (rmox_driver::testing), plus glommio's
//! own listener handling.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is a test failure

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use rmox_driver::testing::{self, Client, RunFn, Server};
use rmox_runtime_glommio::{io_uring_available, run, ListenerSpec};

/// A std listener on a free loopback port, as the caller of `run` makes it.
fn bind(reuse_port: bool) -> TcpListener {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_reuse_port(reuse_port).unwrap();
    sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    sock.listen(128).unwrap();
    sock.set_nonblocking(true).unwrap();
    sock.into()
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

fn start(threads: usize, reuse_port: bool) -> Server {
    let run: RunFn = Box::new(move |listener, config, answerer, shutdown| {
        run(
            vec![ListenerSpec::smtp(listener, config)],
            answerer,
            threads,
            Arc::clone(&shutdown),
        )
    });
    Server::start(bind(reuse_port), run)
}

#[test]
fn one_transaction_then_shutdown() {
    if glommio_works() {
        testing::one_transaction_then_shutdown(start(2, true));
    }
}

#[test]
fn shutdown_closes_idle_sessions_with_421() {
    if glommio_works() {
        testing::shutdown_closes_idle_sessions_with_421(start(1, true));
    }
}

#[test]
fn connections_queued_during_startup_are_served() {
    if !glommio_works() {
        return;
    }
    // Connected before the workers listen: they wait on the std listener, which `run`
    // drains before closing it.
    let server = start(2, true);
    let mut clients: Vec<Client> = (0..5).map(|_| Client::connect(server.addr)).collect();
    for c in &mut clients {
        assert!(c.reply()[0].starts_with("220 "));
        c.expect("QUIT\r\n", "221 ");
        c.expect_eof();
    }
    server.stop();
}

/// The workers accept on the socket handed in: it serves from the first connection (no
/// rebinding window), and while it does, nobody else can bind the address (before, each
/// worker bound its own SO_REUSEPORT socket and a second server could join them).
#[test]
fn shared_listener_serves_and_keeps_the_address() {
    if !glommio_works() {
        return;
    }
    let server = start(2, false);
    for _ in 0..4 {
        let mut c = Client::connect(server.addr);
        assert!(c.reply()[0].starts_with("220 "));
        c.expect("QUIT\r\n", "221 ");
        c.expect_eof();
    }
    for reuse_port in [false, true] {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_reuse_address(true).unwrap();
        sock.set_reuse_port(reuse_port).unwrap();
        let e = sock
            .bind(&server.addr.into())
            .expect_err("a second socket bound the served address");
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    }
    server.stop();
}

#[test]
fn probe_does_not_hang_or_panic() {
    // Either answer is fine here; it must come back, twice (no global state left behind).
    let a = io_uring_available();
    let b = io_uring_available();
    assert_eq!(a.is_ok(), b.is_ok(), "{a:?} {b:?}");
}

#[test]
fn shutdown_waits_for_message_in_progress() {
    if glommio_works() {
        testing::shutdown_waits_for_message_in_progress(start(2, true));
    }
}

fn deliver(
    session: rmox_core::delivery::DeliverySession,
    answerer: Arc<dyn rmox_driver::outbound::DeliveryAnswerer>,
) -> rmox_core::delivery::Report {
    rmox_runtime_glommio::block_on(|rt| rmox_driver::outbound::deliver(rt, session, answerer, 1))
        .expect("runtime")
}

#[test]
fn outbound_delivers() {
    if glommio_works() {
        testing::outbound_delivers(start(1, false), &deliver);
    }
}

#[test]
fn outbound_refused_then_fallback() {
    if glommio_works() {
        testing::outbound_refused_then_fallback(start(1, false), &deliver);
    }
}

#[test]
fn outbound_dns_async() {
    if glommio_works() {
        testing::outbound_dns_async(start(1, false), &deliver);
    }
}

#[test]
fn outbound_connect_timeout() {
    if glommio_works() {
        testing::outbound_connect_timeout(&deliver);
    }
}

#[test]
fn http_beside_smtp() {
    if glommio_works() {
        testing::http_beside_smtp(Box::new(|specs, answerer, shutdown| {
            run(specs, answerer, 2, shutdown)
        }));
    }
}
