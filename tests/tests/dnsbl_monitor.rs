//! DNSBL monitoring of our own sending addresses (issue 17), through `rmox serve` on every
//! runtime against the harness DNS: the host name mx-notls.example.org resolves to
//! 127.10.0.15, which bl.example.org lists; the server logs a warning and `/metrics` shows
//! the listing (`rmox_dnsbl_own_listed 1`), and an unlisted address shows 0.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rmox_tests::harness::{Harness, RESOLVER};
use rmox_tests::*;

const SMTP: u16 = 2525;
const METRICS: u16 = 9109;

fn scrape(ip: Ipv4Addr) -> String {
    let mut s = std::net::TcpStream::connect((ip, METRICS)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A server named `hostname` on `ip` with metrics, checking bl.example.org; `extra` more
/// `[incoming]` keys.
fn config(ip: Ipv4Addr, hostname: &str, extra: &str) -> String {
    format!(
        r#"hostname = "{hostname}"
data_dir = "data"
resolver = ["{RESOLVER}"]

[[listener]]
name = "t"
ip = "{ip}"
smtp = {{ port = {SMTP} }}
metrics = {{ port = {METRICS} }}

[domain."mox.example"]

[incoming]
dnsbl = ["bl.example.org"]
{extra}
"#
    )
}

fn own_addresses_checked(rt: &str) {
    let Some(_h) = Harness::get(&format!("own_addresses_checked({rt})")) else {
        return;
    };
    let dir = TempDir::new(&format!("dnsblmon-{rt}"));
    let ip = unique_ip();
    std::fs::write(
        dir.path().join("rmox.toml"),
        config(
            ip,
            "mx-notls.example.org",
            "dnsbl_monitor_interval_secs = 3600",
        ),
    )
    .unwrap();
    let srv = Server::serve(rt, dir, ip, SMTP);
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = "rmox_dnsbl_own_listed{ip=\"127.10.0.15\",zone=\"bl.example.org\"} 1";
    let mut metrics = scrape(ip);
    while !metrics.contains(want) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        metrics = scrape(ip);
    }
    assert!(metrics.contains(want), "{metrics}\n{}", srv.stderr());
    let log = srv.stderr();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("our sending address is listed in a dnsbl")
            && l.contains("127.10.0.15")
            && l.contains("bl.example.org")),
        "{log}"
    );
}

/// Fixed addresses instead of the host name's: a listed and an unlisted one.
fn fixed_addresses(rt: &str) {
    let Some(_h) = Harness::get(&format!("fixed_addresses({rt})")) else {
        return;
    };
    let dir = TempDir::new(&format!("dnsblmon2-{rt}"));
    let ip = unique_ip();
    std::fs::write(
        dir.path().join("rmox.toml"),
        config(
            ip,
            "mail.mox.example",
            "dnsbl_monitor_ips = [\"127.10.0.15\", \"127.10.0.11\"]",
        ),
    )
    .unwrap();
    let srv = Server::serve(rt, dir, ip, SMTP);
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = "rmox_dnsbl_own_listed{ip=\"127.10.0.15\",zone=\"bl.example.org\"} 1";
    let clean = "rmox_dnsbl_own_listed{ip=\"127.10.0.11\",zone=\"bl.example.org\"} 0";
    let mut metrics = scrape(ip);
    while !(metrics.contains(listed) && metrics.contains(clean)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        metrics = scrape(ip);
    }
    assert!(
        metrics.contains(listed) && metrics.contains(clean),
        "{metrics}\n{}",
        srv.stderr()
    );
}

rmox_tests::on_every_runtime!(own_addresses_checked, fixed_addresses);
