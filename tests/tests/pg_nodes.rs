//! Issue 20: two `rmox serve` nodes on one PostgreSQL database, on different loopback
//! addresses, with one set of accounts and one queue. Both accept mail for the same
//! account (submission, and incoming SMTP whose messages land in the shared account) and
//! both deliver the shared queue to the harness peer mx1.example.org. Node A is SIGKILLed
//! in the middle of the burst; node B takes over A's leased entries once their leases run
//! out (`[storage] lease_secs`) and the queue drains.
//!
//! Checked: every acknowledged message arrives at the peer at least once; duplicates are
//! at most A's deliveries in flight at the kill (`queue.workers`: one per connection, the
//! SMTP window between the final dot and the recording of its reply, which no mail server
//! can close); B delivers nothing twice; the queue is empty; both incoming messages are in
//! the account. PostgreSQL comes from `RMOX_TEST_PG_URL` (`.ci/run` starts one); the
//! harness from `../shared/harness`. Without either the test fails under CI and skips
//! (saying so) outside it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rmox_tests::harness::{Harness, RESOLVER};
use rmox_tests::*;

/// `queue.workers` of each node: A's deliveries in flight at the kill, at most.
const WORKERS: usize = 4;
/// Messages submitted through each node.
const PER_NODE: usize = 150;
/// `[storage] lease_secs`: how long B waits for A's entries.
const LEASE_SECS: u64 = 5;

/// The PostgreSQL server's connection string, or `None` (skipped) outside CI.
fn pg_server(test: &str) -> Option<String> {
    match std::env::var("RMOX_TEST_PG_URL") {
        Ok(u) => Some(u),
        Err(_) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: CI is set but RMOX_TEST_PG_URL is not: .ci/run starts PostgreSQL"
            );
            eprintln!("SKIP {test}: RMOX_TEST_PG_URL not set (storage-pg/pg-up.sh starts one)");
            None
        }
    }
}

/// A database of its own for the test, dropped at the end.
struct Db {
    server: String,
    name: String,
}

impl Db {
    fn new(server: &str) -> Db {
        let name = format!("rmox_nodes_{}", std::process::id());
        let mut c = postgres::Client::connect(server, postgres::NoTls).expect("connect");
        c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        Db {
            server: server.to_string(),
            name,
        }
    }

    /// The recipients of the queue entries `node` leases.
    fn leased_by(&self, node: &str) -> Vec<String> {
        let mut c = postgres::Client::connect(&self.url(), postgres::NoTls).expect("connect");
        c.query("SELECT rec FROM rmox_queue WHERE lease_node = $1", &[&node])
            .unwrap()
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(r.get::<_, &[u8]>(0)).unwrap();
                v["rcpt"]["recipient"].as_str().unwrap().to_string()
            })
            .collect()
    }

    /// The connection string of the test's database (a later `dbname` wins).
    fn url(&self) -> String {
        format!("{} dbname={}", self.server, self.name)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.server, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

fn config(h: &Harness, ip: Ipv4Addr, url: &str, node: &str) -> String {
    format!(
        r#"hostname = "{host}"
data_dir = "data"
resolver = ["{RESOLVER}"]

[storage]
kind = "postgres"
url = "{url}"
node = "{node}"
lease_secs = {LEASE_SECS}

[[listener]]
name = "q"
ip = "{ip}"
smtp = {{ port = 25 }}
submission = {{ port = 587 }}
tls = {{ cert_file = "{cert}", key_file = "{key}" }}
no_require_starttls = true

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}
max_outgoing_messages_per_day = 100000
max_first_time_recipients_per_day = 100000

[postmaster]
account = "mjl"
mailbox = "Inbox"

[limits]
auth_failure_delay_secs = 0
unknown_recipient_delay_secs = 0

[incoming]
checks = false

[queue]
connect_timeout_secs = 2
workers = {WORKERS}
backoff_secs = [1]
max_attempts = 1000
delayed_dsn_after_attempt = 0
jitter_percent = 0
"#,
        host = h.var("HARNESS_MTA_HOSTNAME"),
        cert = h.var("HARNESS_MTA_CERT"),
        key = h.var("HARNESS_MTA_KEY"),
    )
}

/// Submits `rcpts` (one message each) through `srv`'s submission port as mjl, adding
/// each to `acked` once the server answered 250 to its final dot. Panics (the thread)
/// when the server goes away.
fn submit(srv: &Server, rcpts: &[String], acked: &std::sync::Mutex<Vec<String>>) {
    let mut c = srv.authenticated(587, "mjl", "testtest");
    for r in rcpts {
        let body = format!("From: <mjl@mox.example>\r\nTo: <{r}>\r\nSubject: {r}\r\n\r\nbody\r\n");
        c.transaction("mjl@mox.example", &[r.as_str()], &body)
            .unwrap_or_else(|e| panic!("submitting to {r}: {e:?}"));
        acked.lock().unwrap().push(r.clone());
    }
    let _ = c.cmd("QUIT");
}

/// One incoming message for mjl through `srv`'s SMTP port.
fn incoming(srv: &Server, subject: &str) {
    let mut c = srv.connect(25);
    c.set_read_timeout(Duration::from_secs(30));
    c.expect(220);
    c.expect_cmd("EHLO sender.example", 250);
    let body = format!(
        "From: <x@sender.example>\r\nTo: <mjl@mox.example>\r\nSubject: {subject}\r\n\r\nhi\r\n"
    );
    c.transaction("x@sender.example", &["mjl@mox.example"], &body)
        .unwrap_or_else(|e| panic!("incoming {subject}: {e:?}"));
    let _ = c.cmd("QUIT");
}

/// How often mx1 accepted each of `rcpts` (harness events with result 250).
fn arrivals(h: &Harness, rcpts: &[String]) -> BTreeMap<String, usize> {
    let mut n: BTreeMap<String, usize> = rcpts.iter().map(|r| (r.clone(), 0)).collect();
    for l in h.events() {
        if !l.contains("\"result\": \"250\"") {
            continue;
        }
        for (r, c) in n.iter_mut() {
            if l.contains(&format!("\"{r}\"")) {
                *c += 1;
            }
        }
    }
    n
}

fn node(h: &Harness, rt: &str, url: &str, name: &str) -> Server {
    let ip = unique_ip();
    let dir = TempDir::new(&format!("pgnode-{name}-{rt}"));
    std::fs::write(dir.path().join("rmox.toml"), config(h, ip, url, name)).unwrap();
    Server::serve(rt, dir, ip, 587)
}

/// Nodes a and b on the database at `url`, with mjl's password set (through A's config:
/// one set of accounts, so it is B's too).
fn two_nodes(h: &Harness, rt: &str, url: &str) -> (Server, Server) {
    let a = node(h, rt, url, "a");
    let b = node(h, rt, url, "b");
    let cfg = a.config_path();
    set_password(&cfg, "mjl", "testtest");
    (a, b)
}

fn two_nodes_share_queue_and_accounts(rt: &str) {
    let test = format!("two_nodes_share_queue_and_accounts({rt})");
    let Some(h) = Harness::get(&test) else { return };
    let Some(server) = pg_server(&test) else {
        return;
    };
    let _guard = Harness::lock();
    let db = Db::new(&server);
    let url = db.url();
    let (mut a, b) = two_nodes(&h, rt, &url);

    // Accepted through either node: the same account.
    let tag = format!("{rt}{}", std::process::id());
    incoming(&a, &format!("in-a-{tag}"));
    incoming(&b, &format!("in-b-{tag}"));

    let rcpts_a: Vec<String> = (0..PER_NODE)
        .map(|i| format!("pgn-a{i}-{tag}@example.org"))
        .collect();
    let rcpts_b: Vec<String> = (0..PER_NODE)
        .map(|i| format!("pgn-b{i}-{tag}@example.org"))
        .collect();
    let all: Vec<String> = rcpts_a.iter().chain(&rcpts_b).cloned().collect();
    let start = Instant::now();
    let acked_a = std::sync::Mutex::new(Vec::new());
    let acked_b = std::sync::Mutex::new(Vec::new());
    let (at_kill, orphaned, a_ended) = std::thread::scope(|s| {
        let ta = s.spawn(|| submit(&a, &rcpts_a, &acked_a));
        let tb = s.spawn(|| submit(&b, &rcpts_b, &acked_b));
        // Kill A while both accept and deliver: once a tenth arrived.
        let deadline = Instant::now() + Duration::from_secs(60);
        while arrivals(&h, &all).values().filter(|&&n| n > 0).count() < all.len() / 10 {
            assert!(Instant::now() < deadline, "deliveries did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        // SIGKILL: A's submission thread sees its connection reset and stops (what A
        // acknowledged before is recorded).
        let pid = a.pid();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        let at_kill = arrivals(&h, &all).values().filter(|&&n| n > 0).count();
        // The entries A held when it died: B may take them only once their leases ran out.
        let orphaned = db.leased_by("a");
        let a_ended = ta.join().is_ok();
        tb.join().expect("submitting through B");
        (at_kill, orphaned, a_ended)
    });
    a.kill_hard();
    let acked: Vec<String> = acked_a
        .lock()
        .unwrap()
        .iter()
        .chain(acked_b.lock().unwrap().iter())
        .cloned()
        .collect();
    assert_eq!(
        acked_b.lock().unwrap().len(),
        PER_NODE,
        "B acknowledged all it was given"
    );
    let drained = wait_until(90, || arrivals(&h, &acked).values().all(|&n| n > 0));
    let got = arrivals(&h, &all);
    assert!(
        drained,
        "not delivered after A's kill: {:?}\nB:\n{}",
        acked.iter().filter(|r| got[*r] == 0).collect::<Vec<_>>(),
        b.stderr()
    );
    // Everything queued is done: B's queue (the shared one) is empty.
    let bcfg = b.config_path();
    let ok = wait_until(30, || {
        let (_, list) = rmox_out(&["queue", "list", "--config", bcfg.to_str().unwrap()]);
        list.trim().is_empty()
    });
    let (_, list) = rmox_out(&["queue", "list", "--config", bcfg.to_str().unwrap()]);
    assert!(ok, "queue not empty:\n{list}");
    // A's leased entries include messages A queued but died before acknowledging: B
    // delivers them once their leases ran out, which may be after the acknowledged ones
    // arrived (and the harness files what it received a moment after it answered).
    wait_until(30, || arrivals(&h, &orphaned).values().all(|&n| n > 0));
    let got = arrivals(&h, &all);
    let dups: Vec<(&String, &usize)> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.iter().map(|(_, n)| **n - 1).sum::<usize>() <= WORKERS,
        "more duplicates than A's {WORKERS} deliveries in flight: {dups:?}"
    );
    // B took over A's leased entries (A is dead: every arrival after the kill is B's).
    for r in &orphaned {
        assert!(
            got.get(r).is_some_and(|&n| n > 0),
            "{r}, leased by A, not delivered"
        );
    }
    drop(b);
    // Both incoming messages are in the one account.
    let mbox = a.export_mbox("mjl");
    assert_eq!(count_subject(&mbox, &format!("in-a-{tag}")), 1, "{mbox}");
    assert_eq!(count_subject(&mbox, &format!("in-b-{tag}")), 1, "{mbox}");
    eprintln!(
        "{rt}: {} messages, {} acknowledged (A's submission ended by itself: {a_ended}), {at_kill} delivered at A's kill, {} leased by A then and taken over by B, {} duplicates ({dups:?}), {:.1} s",
        all.len(),
        acked.len(),
        orphaned.len(),
        dups.iter().map(|(_, n)| **n - 1).sum::<usize>(),
        start.elapsed().as_secs_f64()
    );
    drop(db);
}

fn wait_until(secs: u64, f: impl FnMut() -> bool) -> bool {
    harness::wait_for(secs, f)
}

/// `rmox ARGS`: (success, stdout).
fn rmox_out(args: &[&str]) -> (bool, String) {
    let out = rmox(args, None);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// An attempt that takes longer than a lease keeps its entry: the node renews the leases
/// of the attempts it runs (every third of `lease_secs`), so the other node does not send
/// the message a second time meanwhile. The remote (a counting sink on the harness's
/// `later.example.org` MX address) answers the final dot after 2 leases.
fn long_attempt_keeps_its_lease(rt: &str) {
    let test = format!("long_attempt_keeps_its_lease({rt})");
    let Some(h) = Harness::get(&test) else { return };
    let Some(server) = pg_server(&test) else {
        return;
    };
    let _guard = Harness::lock();
    let db = Db::new(&server);
    let url = db.url();
    let (a, b) = two_nodes(&h, rt, &url);
    let log = a.dir.path().join("sink.log");
    let delay = Duration::from_secs(2 * LEASE_SECS);
    let lifetime = Duration::from_secs(60);
    let _sink = client_driver::Daemon::start(
        "counting sink",
        std::path::Path::new("python3"),
        &[
            py_dir().join("counting_sink.py").display().to_string(),
            "--host".into(),
            harness::LATER_MX.into(),
            "--port".into(),
            "25".into(),
            "--log".into(),
            log.display().to_string(),
            "--delay-ms".into(),
            delay.as_millis().to_string(),
            "--lifetime".into(),
            lifetime.as_secs().to_string(),
        ],
        std::net::SocketAddr::from((harness::LATER_MX.parse::<Ipv4Addr>().unwrap(), 25)),
        lifetime + Duration::from_secs(10),
        a.dir.path().join("sink.stderr"),
    );
    let rcpt = format!("slow-{rt}{}@later.example.org", std::process::id());
    let acked = std::sync::Mutex::new(Vec::new());
    submit(&a, std::slice::from_ref(&rcpt), &acked);
    // The sink logs a message when its data ends, then holds the 250 back.
    let got = wait_until(30, || {
        !std::fs::read_to_string(&log).unwrap_or_default().is_empty()
    });
    assert!(got, "not attempted; A:\n{}\nB:\n{}", a.stderr(), b.stderr());
    // The attempt's reply comes after 2 leases; then a little longer for a second copy.
    std::thread::sleep(delay + Duration::from_secs(LEASE_SECS));
    let bcfg = b.config_path();
    let empty = wait_until(30, || {
        let (_, list) = rmox_out(&["queue", "list", "--config", bcfg.to_str().unwrap()]);
        list.trim().is_empty()
    });
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        empty,
        "queue not empty; A:\n{}\nB:\n{}",
        a.stderr(),
        b.stderr()
    );
    assert_eq!(
        lines.lines().count(),
        1,
        "sent more than once during one long attempt:\n{lines}\nA:\n{}\nB:\n{}",
        a.stderr(),
        b.stderr()
    );
    drop((a, b));
    drop(db);
}

rmox_tests::on_every_runtime!(
    two_nodes_share_queue_and_accounts,
    long_attempt_keeps_its_lease
);
