//! Serving our own MTA-STS policy (RFC 8461 3.3) on a listener's `mta_sts` HTTPS port,
//! through the `rmox serve` binary on each runtime: curl and Python's urllib fetch
//! `https://mta-sts.example.org/.well-known/mta-sts.txt` verifying the certificate against
//! the test CA; other hosts and paths get 404, other methods 405; two requests share one
//! connection (keep-alive); more header fields than `limits.http_max_headers` get 431; a
//! client that speaks no TLS to the HTTPS port does not disturb SMTP on the same server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rmox_tests::*;

const SMTP: u16 = 2025;
const HTTPS: u16 = 2443;

const POLICY: &str = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmx: *.mx.example.org\r\nmax_age: 604800\r\n";

fn config(ip: Ipv4Addr) -> String {
    format!(
        r#"hostname = "mail.example.org"
data_dir = "data"

[[listener]]
name = "test"
ip = "{ip}"
smtp = {{ port = {SMTP} }}
mta_sts = {{ port = {HTTPS} }}
tls = {{ cert_file = "chain.pem", key_file = "leaf.key" }}

[domain."example.org".mta_sts]
mode = "enforce"
max_age = 604800
mx = ["mail.example.org", "*.mx.example.org"]

[domain."other.example"]

[limits]
http_max_headers = 16
"#
    )
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

/// A test CA and a certificate for the policy hosts (and our host name), chained.
fn make_certs(d: &Path) {
    sh(
        d,
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
           -out ca.pem -days 2 -subj /CN=rmox-test-ca 2>/dev/null
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key \
           -out leaf.csr -subj /CN=mta-sts.example.org 2>/dev/null
         printf 'subjectAltName=DNS:mta-sts.example.org,DNS:mta-sts.other.example,DNS:mail.example.org\\n' > ext.cnf
         openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
           -extfile ext.cnf -out leaf.pem 2>/dev/null
         cat leaf.pem ca.pem > chain.pem
         chmod 600 leaf.key",
    );
}

/// `curl` with the test CA, `host` resolved to the server: (exit code, stdout, stderr).
fn curl(srv: &Server, host: &str, extra: &[&str], path: &str) -> (i32, String, String) {
    let ca = srv.dir.path().join("ca.pem");
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--resolve"])
        .arg(format!("{host}:{HTTPS}:{}", srv.ip))
        .arg("--cacert")
        .arg(&ca)
        .args(extra)
        .arg(format!("https://{host}:{HTTPS}{path}"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn status(srv: &Server, host: &str, method: &str, path: &str) -> String {
    let (code, out, err) = curl(
        srv,
        host,
        &["-o", "/dev/null", "-w", "%{http_code}", "-X", method],
        path,
    );
    assert_eq!(code, 0, "curl {method} {host}{path}: {err}");
    out
}

/// Python: urllib fetches the policy (ssl context with the test CA, SNI and Host
/// mta-sts.example.org, connection to the server's address); then http.client sends two
/// requests on one connection and prints whether the socket stayed the same.
const PY: &str = r#"
import http.client, socket, ssl, sys, urllib.request
ip, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
host = "mta-sts.example.org"
ctx = ssl.create_default_context(cafile=ca)

class Conn(http.client.HTTPSConnection):
    def __init__(self, h, **kw):
        kw.pop("context", None)
        kw["timeout"] = 20
        super().__init__(h, context=ctx, **kw)
    def connect(self):
        sock = socket.create_connection((ip, port), timeout=20)
        self.sock = ctx.wrap_socket(sock, server_hostname=host)

class Handler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(Conn, req)

opener = urllib.request.build_opener(Handler())
r = opener.open(f"https://{host}:{port}/.well-known/mta-sts.txt")
sys.stdout.write("URLLIB %d %s\n" % (r.status, r.headers.get("Content-Type")))
sys.stdout.write(r.read().decode())

c = Conn(f"{host}:{port}")
c.request("GET", "/.well-known/mta-sts.txt")
r1 = c.getresponse()
b1 = r1.read()
s1 = c.sock
c.request("GET", "/.well-known/mta-sts.txt")
r2 = c.getresponse()
b2 = r2.read()
sys.stdout.write("KEEPALIVE %d %d same=%s equal=%s\n" % (r1.status, r2.status, s1 is c.sock and s1 is not None, b1 == b2))
"#;

fn mta_sts_policy_served(rt: &str) {
    let dir = TempDir::new(&format!("mtasts-{rt}"));
    make_certs(dir.path());
    let ip = unique_ip();
    std::fs::write(dir.path().join("rmox.toml"), config(ip)).unwrap();
    let srv = Server::serve(rt, dir, ip, SMTP);

    // curl: the policy, verified against the test CA, as text/plain.
    let (code, body, err) = curl(&srv, "mta-sts.example.org", &[], "/.well-known/mta-sts.txt");
    assert_eq!(code, 0, "{err}\n{}", srv.stderr());
    assert_eq!(body, POLICY);
    let (code, head, err) = curl(
        &srv,
        "mta-sts.example.org",
        &["-o", "/dev/null", "-D", "-"],
        "/.well-known/mta-sts.txt",
    );
    assert_eq!(code, 0, "{err}");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; charset=utf-8"),
        "{head}"
    );

    // 404 for a domain without a policy and for other paths, 405 for other methods.
    let cases = [
        (
            "mta-sts.other.example",
            "GET",
            "/.well-known/mta-sts.txt",
            "404",
        ),
        ("mta-sts.example.org", "GET", "/", "404"),
        (
            "mta-sts.example.org",
            "GET",
            "/.well-known/other.txt",
            "404",
        ),
        (
            "mta-sts.example.org",
            "POST",
            "/.well-known/mta-sts.txt",
            "405",
        ),
        (
            "mta-sts.example.org",
            "DELETE",
            "/.well-known/mta-sts.txt",
            "405",
        ),
        (
            "mta-sts.example.org",
            "HEAD",
            "/.well-known/mta-sts.txt",
            "200",
        ),
    ];
    for (host, method, path, want) in cases {
        if method == "HEAD" {
            let (code, out, err) = curl(
                &srv,
                host,
                &["-I", "-o", "/dev/null", "-w", "%{http_code}"],
                path,
            );
            assert_eq!(code, 0, "{err}");
            assert_eq!(out, want, "{method} {host}{path}");
            continue;
        }
        assert_eq!(
            status(&srv, host, method, path),
            want,
            "{method} {host}{path}"
        );
    }

    // limits.http_max_headers: a request with more header fields gets 431.
    let mut many: Vec<String> = Vec::new();
    for i in 0..20 {
        many.push("-H".into());
        many.push(format!("X-Test-{i}: {i}"));
    }
    let mut args: Vec<&str> = vec!["-o", "/dev/null", "-w", "%{http_code}"];
    args.extend(many.iter().map(|s| s.as_str()));
    let (code, out, err) = curl(
        &srv,
        "mta-sts.example.org",
        &args,
        "/.well-known/mta-sts.txt",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "431");

    // Python's urllib, and keep-alive: two requests on one connection.
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY)
        .arg(srv.ip.to_string())
        .arg(HTTPS.to_string())
        .arg(srv.dir.path().join("ca.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        format!(
            "URLLIB 200 text/plain; charset=utf-8\n{POLICY}KEEPALIVE 200 200 same=True equal=True\n"
        )
    );

    // A client that speaks plain HTTP to the HTTPS port, and one that connects and says
    // nothing, while SMTP on the same server answers as usual.
    let https = SocketAddr::from((srv.ip, HTTPS));
    let mut bad = TcpStream::connect(https).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    bad.write_all(b"GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.org\r\n\r\n")
        .unwrap();
    let mut junk = Vec::new();
    let _ = bad.read_to_end(&mut junk);
    assert!(
        !String::from_utf8_lossy(&junk).contains("STSv1"),
        "no policy in plain text"
    );
    let _silent = TcpStream::connect(https).unwrap();
    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.expect_cmd("EHLO client.example", 250);
    c.expect_cmd("QUIT", 221);
    let (code, body, err) = curl(&srv, "mta-sts.example.org", &[], "/.well-known/mta-sts.txt");
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, POLICY);

    // The record to publish is logged, with the id derived from the policy; one log line
    // per request.
    let log = srv.stderr();
    assert!(
        log.contains("_mta-sts.example.org. TXT \\\"v=STSv1; id=")
            || log.contains("_mta-sts.example.org. TXT \"v=STSv1; id="),
        "{log}"
    );
    assert!(log.contains("http request"), "{log}");
    assert!(log.contains("status=405"), "{log}");

    // An HTTPS connection still open (no handshake yet; its deadline is 30 s away) does not
    // hold up a graceful stop.
    let mut srv = srv;
    srv.stop_clean();
    drop(_silent);
}

rmox_tests::on_every_runtime!(mta_sts_policy_served,);
