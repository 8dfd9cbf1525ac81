//! ACME (RFC 8555) end to end against Pebble, the ACME test CA, on every runtime: `rmox
//! serve` with a listener whose certificate comes from Pebble obtains it through
//! `tls-alpn-01` (on the listener's HTTPS port) or `http-01` (on its `http` port), serves it
//! (a rustls client trusting only Pebble's root, fetched from Pebble's management port,
//! completes a handshake for the name), stores it under DATA/acme/ and serves the stored
//! one again after a restart; with `renew_before_days` longer than Pebble's certificate
//! lifetime a second certificate replaces the first without a restart.
//!
//! Pebble runs on its own loopback address with an HTTPS certificate from a test CA made
//! here (rmox trusts it through `acme.ca_file`); `pebble-challtestsrv` is its DNS server,
//! answering every A query with rmox's address. Pebble rejects 5% of nonces on purpose:
//! the badNonce retries are exercised too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmox_tests::*;

const SMTP: u16 = 2025;
const HTTPS: u16 = 2443;
const HTTP: u16 = 2080;
const ACME_PORT: u16 = 14000;
const MGMT_PORT: u16 = 15000;
const DNS_PORT: u16 = 8053;
const NAME: &str = "mail.example.org";

/// Whether `prog` runs; a failure under CI=true (`.ci/run` installs pebble).
fn have(prog: &str) -> bool {
    let ok = Command::new(prog)
        .arg("-h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{prog} is not installed but CI is set: apt-get install pebble"
        );
        eprintln!("SKIP: {prog} not installed (apt-get install pebble); CI is not set");
    }
    ok
}

/// Killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn wait_port(addr: SocketAddr, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {addr}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pebble (and its DNS) on `pebble_ip`, validating on rmox's ports at `rmox_ip`.
struct Pebble {
    _dns: Daemon,
    _ca: Daemon,
    ip: Ipv4Addr,
}

impl Pebble {
    fn start(dir: &Path, pebble_ip: Ipv4Addr, rmox_ip: Ipv4Addr) -> Pebble {
        // Pebble's own HTTPS certificate, for its IP address, from a test CA.
        sh(
            dir,
            &format!(
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
                   -out ca.pem -days 2 -subj /CN=pebble-test-ca 2>/dev/null
                 openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout pebble.key \
                   -out pebble.csr -subj /CN=pebble 2>/dev/null
                 printf 'subjectAltName=IP:{pebble_ip}\\n' > ext.cnf
                 openssl x509 -req -in pebble.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
                   -extfile ext.cnf -out pebble.pem 2>/dev/null"
            ),
        );
        let config = format!(
            r#"{{"pebble": {{"listenAddress": "{pebble_ip}:{ACME_PORT}", "managementListenAddress": "{pebble_ip}:{MGMT_PORT}",
  "certificate": "{d}/pebble.pem", "privateKey": "{d}/pebble.key", "httpPort": {HTTP}, "tlsPort": {HTTPS},
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}}}"#,
            d = dir.display()
        );
        std::fs::write(dir.join("pebble.json"), config).unwrap();
        let dns_log = dir.join("challtestsrv.log");
        let dns = Daemon(
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", &rmox_ip.to_string(), "-defaultIPv6", ""])
                .args(["-dns01", &format!("{pebble_ip}:{DNS_PORT}")])
                .args(["-management", &format!("{pebble_ip}:8055")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .stdout(std::fs::File::create(&dns_log).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_port((pebble_ip, 8055).into(), "pebble-challtestsrv", &dns_log);
        let log = dir.join("pebble.log");
        let ca = Daemon(
            Command::new("pebble")
                .arg("-config")
                .arg(dir.join("pebble.json"))
                .args(["-dnsserver", &format!("{pebble_ip}:{DNS_PORT}")])
                .args(["-strict", "false"])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_port((pebble_ip, ACME_PORT).into(), "pebble", &log);
        wait_port((pebble_ip, MGMT_PORT).into(), "pebble management", &log);
        Pebble {
            _dns: dns,
            _ca: ca,
            ip: pebble_ip,
        }
    }

    /// Pebble's root certificate (PEM), from its management port.
    fn root(&self, dir: &Path) -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "20", "--cacert"])
            .arg(dir.join("ca.pem"))
            .arg(format!("https://{}:{MGMT_PORT}/roots/0", self.ip))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

fn config(ip: Ipv4Addr, pebble: Ipv4Addr, challenge: &str, renew_days: u32) -> String {
    let http = if challenge == "http-01" {
        format!("http = {{ port = {HTTP} }}\n")
    } else {
        String::new()
    };
    format!(
        r#"hostname = "{NAME}"
data_dir = "data"

[[listener]]
name = "public"
ip = "{ip}"
smtp = {{ port = {SMTP} }}
mta_sts = {{ port = {HTTPS} }}
{http}acme = {{ directory_url = "https://{pebble}:{ACME_PORT}/dir", contact = ["mailto:postmaster@example.org"], challenge = "{challenge}", ca_file = "ca.pem", renew_before_days = {renew_days} }}

[domain."example.org"]

[limits]
acme_min_renew_interval_secs = 2
"#
    )
}

/// The leaf certificate (DER) rmox serves on its HTTPS port for `NAME`, when a client
/// trusting only `root_pem` accepts it.
fn served_leaf(ip: Ipv4Addr, root_pem: &[u8]) -> Result<Vec<u8>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(root_pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), NAME.try_into().unwrap()).unwrap();
    let mut sock = TcpStream::connect_timeout(&(ip, HTTPS).into(), Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::Stream::new(&mut conn, &mut sock);
    tls.write_all(b"GET /x HTTP/1.1\r\nHost: mail.example.org\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    let _ = tls.read_to_end(&mut resp);
    let leaf = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no certificate")?;
    Ok(leaf.to_vec())
}

/// Waits (60 s at most) until rmox serves a certificate from Pebble other than `not`.
fn wait_issued(srv: &Server, root: &[u8], not: Option<&[u8]>) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = match served_leaf(srv.ip, root) {
            Ok(leaf) if Some(leaf.as_slice()) != not => return leaf,
            Ok(_) => "still the previous certificate".to_string(),
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "no certificate from Pebble served within 60 s ({last}); rmox log:\n{}",
            srv.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The DER of the first certificate in a PEM file.
fn first_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let pem = std::fs::read(path).unwrap();
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

fn start(rt: &str, challenge: &str, renew_days: u32) -> Option<(Server, Pebble, Vec<u8>)> {
    if !have("pebble") || !have("pebble-challtestsrv") {
        return None;
    }
    let dir = TempDir::new(&format!("acme-{rt}"));
    let (ip, pebble_ip) = (unique_ip(), unique_ip());
    let pebble = Pebble::start(dir.path(), pebble_ip, ip);
    let root = pebble.root(dir.path());
    std::fs::write(
        dir.path().join("rmox.toml"),
        config(ip, pebble_ip, challenge, renew_days),
    )
    .unwrap();
    let srv = Server::serve(rt, dir, ip, SMTP);
    Some((srv, pebble, root))
}

/// tls-alpn-01: before the CA's certificate arrives the listener serves a self-signed
/// one (the Pebble-trusting client refuses it, or it is already replaced); then Pebble's,
/// stored under DATA/acme/; SMTP works on the same server meanwhile.
fn tls_alpn_01(rt: &str) {
    let Some((srv, _pebble, root)) = start(rt, "tls-alpn-01", 30) else {
        return;
    };
    let leaf = wait_issued(&srv, &root, None);
    let stored = srv.dir.path().join(format!("data/acme/{NAME}.crt"));
    assert_eq!(
        first_der(&stored),
        leaf,
        "the served certificate is the stored one"
    );
    let log = srv.stderr();
    assert!(log.contains("challenge published"), "{log}");
    assert!(log.contains("tls-alpn-01"), "{log}");
    assert!(log.contains("certificate obtained and in use"), "{log}");
    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.expect_cmd("EHLO client.example", 250);
    c.expect_cmd("QUIT", 221);
}

/// http-01 on the listener's `http` port; after a restart the stored certificate is
/// served at once and no new order is made (renewal is 30 days before expiry).
fn http_01(rt: &str) {
    let Some((mut srv, _pebble, root)) = start(rt, "http-01", 30) else {
        return;
    };
    let leaf = wait_issued(&srv, &root, None);
    let log = srv.stderr();
    assert!(log.contains("http-01"), "{log}");
    assert!(log.contains("certificate obtained and in use"), "{log}");
    srv.stop_clean();
    srv.start();
    assert_eq!(
        served_leaf(srv.ip, &root).unwrap(),
        leaf,
        "the stored certificate after a restart"
    );
    std::thread::sleep(Duration::from_millis(500));
    let log = srv.stderr();
    assert_eq!(
        log.matches("certificate obtained and in use").count(),
        1,
        "{log}"
    );
    assert!(log.contains("acme: stored certificate"), "{log}");
}

/// renew_before_days longer than Pebble's certificate lifetime: once the minimum
/// interval (2 s here) has passed a second certificate is ordered and served by the same
/// process.
fn renewal(rt: &str) {
    let Some((mut srv, _pebble, root)) = start(rt, "tls-alpn-01", 100_000) else {
        return;
    };
    let pid = srv.pid();
    let first = wait_issued(&srv, &root, None);
    let second = wait_issued(&srv, &root, Some(&first));
    assert_ne!(first, second);
    assert_eq!(srv.pid(), pid, "no restart");
    assert!(srv.running());
    let log = srv.stderr();
    assert!(
        log.contains("renew_before_days is not less than the certificate's lifetime"),
        "{log}"
    );
}

rmox_tests::on_every_runtime!(tls_alpn_01, http_01, renewal);
