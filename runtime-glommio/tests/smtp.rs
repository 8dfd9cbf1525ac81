//! End-to-end: real sockets, the glommio runtime (skipped where io_uring does not work) and
//! the shared driver: the suite every runtime runs (rmox_driver::testing), plus glommio's
//! own listener handling.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failure is a test failure

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rmox_core::server::ServerConfig;
use rmox_driver::testing::{self, Client, Counting, RunFn, Server};
use rmox_driver::Shutdown;
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
            vec![ListenerSpec { listener, config }],
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

#[test]
fn listener_without_reuse_port_is_rebound() {
    if !glommio_works() {
        return;
    }
    let server = start(2, false);
    // Connections made while `run` retires the old socket may be refused or reset; wait
    // until the workers serve.
    let mut served = false;
    for _ in 0..200 {
        if let Ok(w) = TcpStream::connect(server.addr) {
            w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut line = String::new();
            if BufReader::new(w).read_line(&mut line).is_ok() && line.starts_with("220 ") {
                served = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(served, "never served");
    for _ in 0..4 {
        let mut c = Client::connect(server.addr);
        assert!(c.reply()[0].starts_with("220 "));
        c.expect("QUIT\r\n", "221 ");
        c.expect_eof();
    }
    server.stop();
}

#[test]
fn bind_failure_is_reported() {
    if !glommio_works() {
        return;
    }
    // A listener without SO_REUSEPORT that stays open (we keep a clone): the workers
    // cannot bind its address, and `run` must say so instead of hanging.
    let listener = bind(false);
    let keep = listener.try_clone().unwrap();
    let spec = ListenerSpec {
        listener,
        config: Arc::new(ServerConfig::new("mx.test.example")),
    };
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run(
            vec![spec],
            Arc::new(Counting::default()),
            2,
            Shutdown::new(),
        ));
    });
    let r = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("run did not return within 10 s");
    let e = r.expect_err("bind should fail");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    drop(keep);
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
