//! MTA-STS policies refreshed in the background (issue 13; RFC 8461 10.2) through
//! `rmox serve` on every runtime, DNS from a zone file: a cached policy of example.net,
//! fetched 13 hours ago under record id "old1" and used an hour ago, while the domain's
//! `_mta-sts` record now says id "new2": without any delivery, the refresher (a task beside
//! the report senders) looks the record up, fetches the policy from an in-process HTTPS
//! server for mta-sts.example.net (port 443 on a test address, certificate trusted through
//! `SSL_CERT_FILE`) and replaces the cached entry (new id, new policy, last use kept).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

use rmox_core::UnixTime;
use rmox_storage::{MtaStsRecord, Store};
use rmox_tests::*;

const SMTP: u16 = 2025;

const NEW_POLICY: &str =
    "version: STSv1\r\nmode: enforce\r\nmx: mx.example.net\r\nmax_age: 86400\r\n";

/// The certificate of mta-sts.example.net, one for the test binary (`SSL_CERT_FILE` is
/// process-wide): the PEM file's path, certificate and key PEM.
fn cert() -> &'static (String, String, String) {
    static CERT: OnceLock<(String, String, String)> = OnceLock::new();
    CERT.get_or_init(|| {
        let ck =
            rcgen::generate_simple_self_signed(vec!["mta-sts.example.net".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("rmox-mtasts-refresh-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, ck.cert.pem()).unwrap();
        (
            path.display().to_string(),
            ck.cert.pem(),
            ck.key_pair.serialize_pem(),
        )
    })
}

/// An HTTPS server on `ip`:443 answering one request with the new policy; the request
/// head arrives on the channel.
fn policy_server(ip: Ipv4Addr) -> mpsc::Receiver<String> {
    let (_, cert, key) = cert();
    let tls = rmox_core::tls::server_config_from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let l = TcpListener::bind((ip, 443)).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ServerConnection::new(Arc::clone(&tls)).unwrap();
        let mut t = rustls::StreamOwned::new(conn, s);
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            match t.read(&mut buf) {
                Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{NEW_POLICY}",
            NEW_POLICY.len()
        );
        let _ = t.write_all(answer.as_bytes());
        let _ = t.flush();
        t.conn.send_close_notify();
        let _ = t.flush();
        let _ = tx.send(String::from_utf8_lossy(&req).to_string());
    });
    rx
}

fn config(ip: Ipv4Addr) -> String {
    format!(
        r#"hostname = "mail.mox.example"
data_dir = "data"
resolver = ["zonefile:zone"]

[[listener]]
name = "test"
ip = "{ip}"
smtp = {{ port = {SMTP} }}

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}

[postmaster]
account = "mjl"

[reports]
dmarc_interval_secs = 0
send_tls_reports = false

[queue]
mtasts_refresh_interval_secs = 1
"#
    )
}

fn policy_refreshed(rt: &str) {
    let (ca, _, _) = cert();
    // The server process inherits it: the WebPKI roots of policy fetches.
    std::env::set_var("SSL_CERT_FILE", ca);
    let ip = unique_ip();
    let web = unique_ip();
    let got = policy_server(web);
    let dir = TempDir::new(&format!("mtasts-refresh-{rt}"));
    std::fs::write(dir.path().join("rmox.toml"), config(ip)).unwrap();
    std::fs::write(
        dir.path().join("zone"),
        format!(
            "_mta-sts.example.net. TXT \"v=STSv1; id=new2\"\n\
             mta-sts.example.net. A {web}\n"
        ),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let fetched = now - 13 * 3600;
    let used = UnixTime(now - 3600);
    let data = dir.path().join("data");
    {
        let store = Store::open(&data).unwrap();
        store
            .mtasts_put(MtaStsRecord {
                domain: "example.net".into(),
                policy:
                    "version: STSv1\r\nmode: testing\r\nmx: old.example.net\r\nmax_age: 2592000\r\n"
                        .into(),
                record_id: "old1".into(),
                fetched: UnixTime(fetched),
                expires: UnixTime(fetched + 2_592_000),
                last_use: None,
            })
            .unwrap();
        assert!(store.mtasts_touch("example.net", used).unwrap());
    }
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let head = got.recv_timeout(Duration::from_secs(30));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !srv.stderr().contains("MTA-STS policy refreshed") && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    srv.stop_clean();
    let log = srv.stderr();
    let head = head.unwrap_or_else(|_| panic!("the policy was not fetched:\n{log}"));
    assert!(
        head.starts_with("GET /.well-known/mta-sts.txt HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\nhost: mta-sts.example.net"),
        "{head}"
    );
    let store = Store::open(&data).unwrap();
    let r = store.mtasts_get("example.net").unwrap().expect("cached");
    assert_eq!(r.record_id, "new2", "{r:?}\n{log}");
    assert!(r.policy.contains("mx: mx.example.net"), "{r:?}");
    assert!(r.fetched.0 >= now, "{r:?}");
    assert_eq!(r.last_use, Some(used), "{r:?}");
    // No delivery was involved.
    assert!(!log.contains("delivery attempt"), "{log}");
}

rmox_tests::on_every_runtime!(policy_refreshed,);
