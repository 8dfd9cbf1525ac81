//! TLS reports to `https:` rua (RFC 8460 5.3.2) through `rmox serve` on every runtime, DNS
//! from a zone file: yesterday's stored results for example.net (two failed sessions) are
//! turned by the report sender (`[reports] tls_interval_secs = 1`) into one report that is
//! POSTed, as `application/tlsrpt+gzip`, to both rua of the domain's `_smtp._tls` record:
//! in-process HTTPS servers for r.example.org (certificate trusted through
//! `SSL_CERT_FILE`), one answering 200 (logged as posted, the body gunzips with python to
//! the report) and one answering 500 (logged as failed). Issue 13: https rua used to be
//! logged as "not supported yet" and skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use rmox_core::tlspolicy::{
    FailureDetails, Policy, PolicyType, ReportScope, ResultType, SessionResult,
};
use rmox_core::UnixTime;
use rmox_tests::*;

const SMTP: u16 = 2025;

/// The certificate of r.example.org (one for the whole test binary: `SSL_CERT_FILE` is
/// process-wide): the PEM file's path, the certificate and key PEM.
fn cert() -> &'static (String, String, String) {
    static CERT: OnceLock<(String, String, String)> = OnceLock::new();
    CERT.get_or_init(|| {
        let ck = rcgen::generate_simple_self_signed(vec!["r.example.org".to_string()]).unwrap();
        let dir = std::env::temp_dir().join(format!("rmox-tlsrpt-https-{}", std::process::id()));
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

/// An HTTPS server on 127.0.0.1 answering one request with `status`; the request (head and
/// body) arrives on the channel.
fn https_server(status: u16) -> (u16, mpsc::Receiver<(String, Vec<u8>)>) {
    let (_, cert, key) = cert();
    let tls = rmox_core::tls::server_config_from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let Ok((s, _)) = l.accept() else { return };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn = rustls::ServerConnection::new(Arc::clone(&tls)).unwrap();
        let mut t = rustls::StreamOwned::new(conn, s);
        let mut req = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match t.read(&mut buf) {
                Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&req[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while req.len() < head_end + len {
            match t.read(&mut buf) {
                Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let body = req[head_end..].to_vec();
        let answer = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        );
        let _ = t.write_all(answer.as_bytes());
        let _ = t.flush();
        t.conn.send_close_notify();
        let _ = t.flush();
        let _ = tx.send((head, body));
    });
    (port, rx)
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
tls_interval_secs = 1
"#
    )
}

/// One stored result: a session to mx.example.net, failed on the certificate or not.
fn result(failed: bool) -> SessionResult {
    SessionResult {
        scope: ReportScope::RecipientDomain,
        policy: Policy {
            policy_type: PolicyType::Sts,
            policy_string: vec![
                "version: STSv1".into(),
                "mode: testing".into(),
                "mx: mx.example.net".into(),
                "max_age: 86400".into(),
            ],
            policy_domain: "example.net".into(),
            mx_host: vec!["mx.example.net".into()],
        },
        failure: failed.then(|| FailureDetails {
            result_type: ResultType::CertificateNotTrusted,
            sending_mta_ip: Some("127.0.0.1".into()),
            receiving_mx_hostname: Some("mx.example.net".into()),
            receiving_mx_helo: None,
            receiving_ip: Some("127.0.0.9".into()),
            failed_session_count: 1,
            additional_information: None,
            failure_reason_code: Some("unknown issuer".into()),
        }),
    }
}

/// Gunzips and parses the JSON with python: (policy domain, failed session count).
fn python_report(body: &[u8]) -> String {
    let mut c = Command::new("python3")
        .args([
            "-c",
            "import gzip, json, sys\nr = json.loads(gzip.decompress(sys.stdin.buffer.read()))\np = r['policies'][0]\nprint(p['policy']['policy-domain'], p['summary']['total-failure-session-count'])",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    c.stdin.take().unwrap().write_all(body).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "python could not read the body");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn https_rua(rt: &str) {
    let (ca, _, _) = cert();
    // The server process inherits it: its WebPKI roots for https rua.
    std::env::set_var("SSL_CERT_FILE", ca);
    let (ok_port, ok_rx) = https_server(200);
    let (bad_port, bad_rx) = https_server(500);
    let ip = unique_ip();
    let dir = TempDir::new(&format!("tlsrpt-https-{rt}"));
    std::fs::write(dir.path().join("rmox.toml"), config(ip)).unwrap();
    std::fs::write(
        dir.path().join("zone"),
        format!(
            "_smtp._tls.example.net. TXT \"v=TLSRPTv1; rua=https://r.example.org:{ok_port}/tlsrpt,https://r.example.org:{bad_port}/x\"\n\
             r.example.org. A 127.0.0.1\n"
        ),
    )
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let yesterday = now - 86_400;
    {
        let store = rmox_storage::Store::open(&dir.path().join("data")).unwrap();
        for (i, failed) in [false, true, true].into_iter().enumerate() {
            store
                .report_add(
                    rmox_storage::ReportKind::TlsResult,
                    "example.net",
                    UnixTime(yesterday + i as i64),
                    serde_json::to_vec(&result(failed)).unwrap(),
                )
                .unwrap();
        }
    }
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let got = ok_rx.recv_timeout(Duration::from_secs(30));
    let got_bad = bad_rx.recv_timeout(Duration::from_secs(30));
    let logged = |what: &str| srv.stderr().lines().any(|l| l.contains(what));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(logged("tls report posted") && logged("tls report post failed"))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    srv.stop_clean();
    let log = srv.stderr();
    let (head, body) = got.unwrap_or_else(|_| panic!("no POST arrived:\n{log}"));
    assert!(head.starts_with("POST /tlsrpt HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("\r\ncontent-type: application/tlsrpt+gzip\r\n"),
        "{head}"
    );
    assert_eq!(python_report(&body), "example.net 2");
    let (bad_head, _) = got_bad.unwrap_or_else(|_| panic!("no second POST:\n{log}"));
    assert!(bad_head.starts_with("POST /x HTTP/1.1\r\n"), "{bad_head}");
    let line = |what: &str| log.lines().find(|l| l.contains(what)).map(str::to_string);
    let posted = line("tls report posted").unwrap_or_else(|| panic!("{log}"));
    assert!(posted.contains(&format!(":{ok_port}/tlsrpt")), "{posted}");
    assert!(posted.contains("200"), "{posted}");
    let failed = line("tls report post failed").unwrap_or_else(|| panic!("{log}"));
    assert!(failed.contains(&format!(":{bad_port}/x")), "{failed}");
    assert!(failed.contains("500"), "{failed}");
    // No mailto rua: nothing queued.
    assert!(!log.contains("tls report queued"), "{log}");
}

rmox_tests::on_every_runtime!(https_rua,);
