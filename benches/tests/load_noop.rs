//! `rmox-load --mode noop` against a small SMTP responder on loopback: every NOOP it sends
//! is one the server saw, a reply other than 250 is counted as an error and the session is
//! opened again, and the JSON counts round trips.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The responder ends its session with 421 at this NOOP of a connection.
const CLOSE_AT: u64 = 7;

/// Serves one connection: greeting, EHLO, NOOPs (counted; the `CLOSE_AT`th gets 421 and the
/// connection is closed), QUIT.
fn session(s: TcpStream, noops: &AtomicU64) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    w.write_all(b"220 test ready\r\n")?;
    let mut here = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.trim_end().to_ascii_uppercase();
        if verb.starts_with("EHLO") {
            w.write_all(b"250-test\r\n250 PIPELINING\r\n")?;
        } else if verb == "NOOP" {
            noops.fetch_add(1, Ordering::SeqCst);
            here += 1;
            if here == CLOSE_AT {
                w.write_all(b"421 4.3.2 going away\r\n")?;
                return Ok(());
            }
            w.write_all(b"250 2.0.0 ok\r\n")?;
        } else if verb == "QUIT" {
            w.write_all(b"221 2.0.0 bye\r\n")?;
            return Ok(());
        } else {
            w.write_all(b"500 5.5.2 what\r\n")?;
        }
    }
}

#[test]
fn noop_mode_counts_round_trips_and_reopens_failed_sessions() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let noops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let (noops, stop) = (Arc::clone(&noops), Arc::clone(&stop));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut sessions = Vec::new();
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        let noops = Arc::clone(&noops);
                        sessions.push(std::thread::spawn(move || {
                            let _ = session(s, &noops);
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            for s in sessions {
                let _ = s.join();
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let out = Command::new(env!("CARGO_BIN_EXE_rmox-load"))
        .args(["--mode", "noop", "--sessions", "2", "--messages", "40"])
        .args(["--max-seconds", "20", "--target"])
        .arg(addr.to_string())
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(j["mode"], "noop");
    let ok = j["messages_ok"].as_u64().unwrap();
    let refused = j["errors"]["421"].as_u64().unwrap_or(0);
    // Every NOOP sent is one the server saw, answered 250 or 421.
    assert_eq!(ok + refused, 40, "{j}");
    assert_eq!(noops.load(Ordering::SeqCst), 40);
    // Each session got CLOSE_AT - 1 round trips before its 421: the failed sessions were
    // opened again (2 threads: at least 40 / CLOSE_AT connections in all).
    assert!(refused >= 4, "{j}");
    assert!(j["connections"].as_u64().unwrap() >= refused, "{j}");
    assert!(ok >= refused * (CLOSE_AT - 1), "{j}");
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains(&format!("{ok} NOOPs in")), "{line}");
}
