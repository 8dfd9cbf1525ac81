//! Issue 15: kill -9 during a burst of outgoing deliveries delivered 3 messages twice and
//! left an orphan queue file. Through the `rmox serve` binary on each runtime: a queue of
//! a few hundred submitted messages is delivered to a counting SMTP sink on loopback
//! (tests/py/counting_sink.py, python3's standard library only; its MX comes from a zone
//! file), the server is SIGKILLed in the middle of the burst, started again and left to
//! drain the queue. Then every message arrived at least once, at most `queue.workers`
//! arrived twice (the documented window: a connection in flight between the final dot and
//! the recording of the reply; at most `workers` are in flight), the queue is empty, no
//! queue file is left without an entry, and `rmox verifydata` is clean. Several rounds with
//! different kill delays; the sink answers the final dot after a short delay so that
//! connections are caught in that window.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rmox_tests::client_driver::Daemon;
use rmox_tests::*;

const SUBMISSION: u16 = 2587;
const SINK_PORT: u16 = 2526;
/// Messages queued per round.
const MESSAGES: usize = 150;
/// `queue.workers`: deliveries in flight at most, so at most this many duplicates.
const WORKERS: usize = 8;
/// How long after the start of the burst each round's kill comes.
const KILL_AFTER_MS: [u64; 3] = [150, 500, 1200];
/// The sink's delay before its 250 to the final dot.
const SINK_DELAY_MS: u64 = 20;

fn config(ip: Ipv4Addr) -> String {
    format!(
        r#"hostname = "host.mox.example"
data_dir = "data"
resolver = ["zonefile:zone"]

[[listener]]
name = "test"
ip = "{ip}"
submission = {{ port = {SUBMISSION} }}
no_require_starttls = true

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}
max_outgoing_messages_per_day = 100000
max_first_time_recipients_per_day = 100000

[queue]
smtp_port = {SINK_PORT}
workers = {WORKERS}
connect_timeout_secs = 5
backoff_secs = [1]
max_attempts = 1000
delayed_dsn_after_attempt = 0
jitter_percent = 0

[incoming]
checks = false
"#
    )
}

fn zone(sink: Ipv4Addr) -> String {
    format!("sink.example. MX 10 mx.sink.example.\nmx.sink.example. A {sink}\n")
}

fn python() -> Option<PathBuf> {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 missing but CI is set"
        );
        eprintln!("SKIP: python3 not available");
        return None;
    }
    Some(PathBuf::from("python3"))
}

/// The counting sink on `ip`, appending each accepted message's Subject to `log`.
fn sink(python: &Path, ip: Ipv4Addr, log: &Path) -> Daemon {
    sink_with(python, ip, log, 0)
}

/// [`sink`], answering QUIT after `quit_delay_ms`.
fn sink_with(python: &Path, ip: Ipv4Addr, log: &Path, quit_delay_ms: u64) -> Daemon {
    let script = py_dir().join("counting_sink.py");
    let lifetime = Duration::from_secs(150);
    let args: Vec<String> = vec![
        script.display().to_string(),
        "--host".into(),
        ip.to_string(),
        "--port".into(),
        SINK_PORT.to_string(),
        "--log".into(),
        log.display().to_string(),
        "--delay-ms".into(),
        SINK_DELAY_MS.to_string(),
        "--quit-delay-ms".into(),
        quit_delay_ms.to_string(),
        "--lifetime".into(),
        lifetime.as_secs().to_string(),
    ];
    Daemon::start(
        "counting sink",
        python,
        &args,
        SocketAddr::from((ip, SINK_PORT)),
        lifetime + Duration::from_secs(10),
        log.with_extension("stderr"),
    )
}

fn subject(rt: &str, round: usize, i: usize) -> String {
    format!("burst {rt} r{round} m{i}")
}

/// Submits the round's messages, one recipient each, on one authenticated connection.
fn submit_all(srv: &Server, rt: &str, round: usize) {
    submit_n(srv, rt, round, MESSAGES)
}

/// Submits `n` messages of the round.
fn submit_n(srv: &Server, rt: &str, round: usize, n: usize) {
    let mut c = srv.authenticated(SUBMISSION, "mjl", "testtest");
    for i in 0..n {
        let s = subject(rt, round, i);
        let body = format!(
            "From: <mjl@mox.example>\r\nTo: <r{i}@sink.example>\r\nSubject: {s}\r\n\r\nbody {i}\r\n"
        );
        c.transaction("mjl@mox.example", &[&format!("r{i}@sink.example")], &body)
            .unwrap_or_else(|e| panic!("submitting {s}: {e:?}"));
    }
    let _ = c.cmd("QUIT");
}

/// The subjects the sink logged so far.
fn arrived(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// `rmox queue list` (server stopped): the number of entries.
fn queue_len(srv: &Server) -> usize {
    let cfg = srv.config_path();
    let out = rmox(&["queue", "list", "--config", cfg.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "queue list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// A server delivering to the sink's address (`serve` with [`config`] and [`zone`]).
fn server(rt: &str, tag: &str) -> (Server, Ipv4Addr) {
    let dir = TempDir::new(&format!("{tag}-{rt}"));
    let ip = unique_ip();
    let sink_ip = unique_ip();
    std::fs::write(dir.path().join("rmox.toml"), config(ip)).unwrap();
    std::fs::write(dir.path().join("zone"), zone(sink_ip)).unwrap();
    let cfg = dir.path().join("rmox.toml");
    set_password(&cfg, "mjl", "testtest");
    (Server::serve(rt, dir, ip, SUBMISSION), sink_ip)
}

/// The result of a delivery waited for the remote's 221 after QUIT before it was recorded,
/// so a crash while a slow server answered QUIT sent the message again. Now the session
/// ends once QUIT is sent: killed 3 s after the sink took the message (while it still
/// holds back its 221 for 30 s), the restarted server does not send it again.
fn recorded_without_waiting_for_221(rt: &str) {
    let Some(py) = python() else { return };
    let (mut srv, sink_ip) = server(rt, "killquit");
    let log = srv.dir.path().join("sink.log");
    let _sink = sink_with(&py, sink_ip, &log, 30_000);
    submit_n(&srv, rt, 0, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrived(&log).is_empty() {
        assert!(
            Instant::now() < deadline,
            "not delivered; stderr:\n{}",
            srv.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(3));
    srv.kill_hard();
    srv.start();
    // Time for a due entry to be sent again (the queue runner starts with the server).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        arrived(&log),
        [subject(rt, 0, 0)],
        "sent again after the restart"
    );
    srv.stop_clean();
    assert_eq!(queue_len(&srv), 0);
}

fn kill_during_outgoing_burst(rt: &str) {
    let Some(py) = python() else { return };
    let (mut srv, sink_ip) = server(rt, "killout");
    let data = srv.dir.path().join("data");
    let mut summary = Vec::new();
    for (round, kill_after) in KILL_AFTER_MS.into_iter().enumerate() {
        // Queued while the sink is down: every entry fails once and is due again a second
        // later, so that the next start delivers them all at once.
        if !srv.running() {
            srv.start();
        }
        submit_all(&srv, rt, round);
        srv.stop_clean();
        assert_eq!(queue_len(&srv), MESSAGES, "round {round}: queued");
        std::thread::sleep(Duration::from_millis(1100));
        let log = srv.dir.path().join(format!("sink-{round}.log"));
        let _sink = sink(&py, sink_ip, &log);
        srv.start();
        std::thread::sleep(Duration::from_millis(kill_after));
        srv.kill_hard();
        let at_kill = arrived(&log).len();
        // Restarted: the queue drains.
        srv.start();
        let want: std::collections::BTreeSet<String> =
            (0..MESSAGES).map(|i| subject(rt, round, i)).collect();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let got: std::collections::BTreeSet<String> = arrived(&log).into_iter().collect();
            if want.is_subset(&got) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: {} of {MESSAGES} messages arrived; stderr:\n{}",
                want.intersection(&got).count(),
                srv.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Whatever was in flight at a stop is retried at the next start: a few more starts
        // at most until the queue is empty.
        let mut stops = 0;
        loop {
            srv.stop_clean();
            if queue_len(&srv) == 0 {
                break;
            }
            stops += 1;
            assert!(stops < 5, "round {round}: queue not drained");
            srv.start();
            std::thread::sleep(Duration::from_millis(1500));
        }
        let all = arrived(&log);
        let dups = all.len() - MESSAGES;
        assert!(
            all.iter().all(|s| want.contains(s)),
            "round {round}: unexpected message: {all:?}"
        );
        assert!(
            dups <= WORKERS,
            "round {round}: {dups} duplicates, more than the {WORKERS} deliveries in flight"
        );
        // No queue file without an entry, and the database is clean.
        let out = rmox(&["verifydata", data.to_str().unwrap()], None);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "round {round}: verifydata:\n{text}");
        assert!(
            !text.contains("orphan"),
            "round {round}: verifydata:\n{text}"
        );
        let queue_files = walk_files(&data.join("queue"));
        assert!(
            queue_files.is_empty(),
            "round {round}: queue files left: {queue_files:?}"
        );
        summary.push(format!(
            "round {round}: kill after {kill_after} ms, {at_kill} arrived before the kill, {dups} duplicates"
        ));
    }
    eprintln!("{rt}: {}", summary.join("; "));
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

rmox_tests::on_every_runtime!(kill_during_outgoing_burst, recorded_without_waiting_for_221);
