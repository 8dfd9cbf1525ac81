//! `rmox-floor` on every runtime: a greeting, a 250 for every line (several lines in one
//! write get one reply each, in order), 221 and the end of the connection for QUIT, the end
//! of the connection for a line longer than its buffer, and `rmox-load --mode noop` counts
//! every round trip against it. On SIGTERM it exits with status 0 and its address can be
//! bound again at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `rmox-floor` and its address; killed when dropped.
struct Floor {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(runtime: &str) -> Floor {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmox-floor"))
        .args([
            "--runtime",
            runtime,
            "--listen",
            "127.0.0.1:0",
            "--max-seconds",
            "60",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // "listening on ADDR (RUNTIME, N threads)"
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{first:?}"))
        .parse()
        .unwrap();
    Floor { child, addr }
}

fn connect(addr: SocketAddr) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

fn check(runtime: &str) {
    let floor = start(runtime);
    let (mut w, mut r) = connect(floor.addr);
    assert_eq!(line(&mut r), "220 floor\r\n", "{runtime}");
    // Two lines and the start of a third in one write, the third's end in another.
    w.write_all(b"EHLO x\r\nNOOP\r\nNO").unwrap();
    assert_eq!(line(&mut r), "250 floor\r\n", "{runtime}");
    assert_eq!(line(&mut r), "250 floor\r\n", "{runtime}");
    w.write_all(b"OP\r\nquit\r\nNOOP\r\n").unwrap();
    assert_eq!(line(&mut r), "250 floor\r\n", "{runtime}");
    assert_eq!(line(&mut r), "221 floor\r\n", "{runtime}");
    // Nothing after QUIT: the connection ends.
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{runtime}: {rest:?}");

    // A line longer than the buffer ends the connection without a reply.
    let (mut w, mut r) = connect(floor.addr);
    assert_eq!(line(&mut r), "220 floor\r\n", "{runtime}");
    let long = vec![b'x'; rmox_driver::accept::FLOOR_LINE_MAX + 10];
    let _ = w.write_all(&long);
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{runtime}: {rest:?}");

    // The load generator's round trips, from two sessions.
    let json = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rmox-load"))
        .args(["--mode", "noop", "--sessions", "2", "--messages", "300"])
        .args(["--max-seconds", "20", "--target", &floor.addr.to_string()])
        .arg("--json")
        .arg(json.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{runtime}: {out:?}");
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(json.path()).unwrap()).unwrap();
    assert_eq!(j["messages_ok"], 300, "{runtime}: {j}");
    assert_eq!(j["connections"], 2, "{runtime}: {j}");

    // SIGTERM: a clean exit, and the address is free (a glommio accept still pending in
    // the ring would hold the socket past the process's end).
    let mut floor = floor;
    let pid = floor.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = floor.child.try_wait().unwrap() {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "{runtime}: no exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{runtime}: {status:?}");
    std::net::TcpListener::bind(floor.addr).unwrap_or_else(|e| panic!("{runtime}: {e}"));
}

#[test]
fn floor_answers_every_line_on_tokio() {
    check("tokio");
}

#[test]
fn floor_answers_every_line_on_smol() {
    check("smol");
}

#[cfg(target_os = "linux")]
#[test]
fn floor_answers_every_line_on_glommio() {
    check("glommio");
}
