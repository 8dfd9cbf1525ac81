//! The driver's HTTPS fetch loop (rmox_driver::fetch, core's HttpsFetch) on every runtime:
//! against an in-process TLS HTTP server (a name resolved through the DNS callback, the
//! body, the status, a body over the limit, an untrusted certificate), and against the
//! harness's MTA-STS HTTPS server (nginx with the test CA, names through the driver's DNS
//! loop on the harness resolver: a policy, a self-signed policy host, a refused address).
//! The harness part skips with a printed reason when the harness is not up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use rmox_core::dns::{LookupResult, Record, ResolverConfig};
use rmox_core::http::{FetchConfig, FetchError, FetchRequest};
use rmox_driver::dns::{run_resolver, DnsClient, UdpRuntime};
use rmox_driver::fetch::{fetch, Resolve};
use rmox_driver::outbound::Net;
use rmox_tests::harness::{Harness, RESOLVER};

/// A TLS HTTP server for `name` on 127.0.0.1 answering each connection with `body` (as
/// text/plain, status 200); its port and the PEM of its (self-signed) certificate.
fn tls_server(name: &str, body: Vec<u8>, conns: usize) -> (u16, String) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let tls = rmox_core::tls::server_config_from_pem(
        ck.cert.pem().as_bytes(),
        ck.key_pair.serialize_pem().as_bytes(),
    )
    .unwrap();
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for _ in 0..conns {
            let Ok((s, _)) = l.accept() else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let conn = rustls::ServerConnection::new(Arc::clone(&tls)).unwrap();
            let mut t = rustls::StreamOwned::new(conn, s);
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match t.read(&mut buf) {
                    Ok(n) if n > 0 => req.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = t.write_all(head.as_bytes());
            let _ = t.write_all(&body);
            let _ = t.flush();
            t.conn.send_close_notify();
            let _ = t.flush();
        }
    });
    (port, ck.cert.pem())
}

/// DNS answering every A question with 127.0.0.1 (and AAAA with nothing).
fn loopback_dns() -> Resolve {
    Arc::new(|lookups: Vec<rmox_core::dns::Lookup>| {
        Box::pin(async move {
            lookups
                .iter()
                .map(|l| match l.rtype {
                    rmox_core::dns::RecordType::A => LookupResult::Records {
                        records: vec![Record::A(Ipv4Addr::LOCALHOST)],
                        authentic: false,
                    },
                    _ => LookupResult::NoData,
                })
                .collect()
        })
    })
}

const POLICY: &str = "version: STSv1\nmode: enforce\nmx: mx1.example.org\nmax_age: 86400\n";

async fn in_process<R: Net>(rt: R) {
    let (port, pem) = tls_server("policy.test", POLICY.as_bytes().to_vec(), 2);
    let roots = rmox_core::tls::pkix_config_from_pem(pem.as_bytes()).unwrap();
    let url = format!("https://policy.test:{port}/.well-known/mta-sts.txt");
    let config = Arc::new(FetchConfig::mta_sts(Arc::clone(&roots)));
    let r = fetch(rt.clone(), config, &FetchRequest::get(&url), loopback_dns())
        .await
        .expect("fetch");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_type(), Some("text/plain"));
    assert_eq!(r.body, POLICY.as_bytes());
    // The same server with a body limit below the policy's size.
    let mut small = FetchConfig::mta_sts(roots);
    small.limits.max_body = 10;
    let r = fetch(
        rt.clone(),
        Arc::new(small),
        &FetchRequest::get(&url),
        loopback_dns(),
    )
    .await;
    assert_eq!(r, Err(FetchError::TooLarge(10)));

    // A certificate from a CA the client does not trust.
    let (port, _) = tls_server("policy.test", POLICY.as_bytes().to_vec(), 1);
    let (_, other) = tls_server("policy.test", Vec::new(), 0);
    let roots = rmox_core::tls::pkix_config_from_pem(other.as_bytes()).unwrap();
    let url = format!("https://policy.test:{port}/.well-known/mta-sts.txt");
    let r = fetch(
        rt,
        Arc::new(FetchConfig::mta_sts(roots)),
        &FetchRequest::get(&url),
        loopback_dns(),
    )
    .await;
    assert!(matches!(r, Err(FetchError::Certificate(_))), "{r:?}");
}

async fn against_harness<R: Net + UdpRuntime>(rt: R, ca_file: String) {
    let pem = std::fs::read(&ca_file).unwrap();
    let roots = rmox_core::tls::pkix_config_from_pem(&pem).unwrap();
    let (client, requests) = DnsClient::channel();
    let config = ResolverConfig {
        servers: vec![RESOLVER.parse().unwrap()],
        trust_ad: true,
        ..ResolverConfig::default()
    };
    let dns_loop = rt.spawn(run_resolver(rt.clone(), config, 7, requests));
    let c = client.clone();
    let resolve: Resolve = Arc::new(move |l: Vec<rmox_core::dns::Lookup>| {
        let c = c.clone();
        Box::pin(async move { c.lookup_many(&l).await })
    });
    let get = |url: &str| {
        let mut config = FetchConfig::mta_sts(Arc::clone(&roots));
        config.timeout = Duration::from_secs(10);
        let request = FetchRequest::get(url);
        let (rt, resolve) = (rt.clone(), Arc::clone(&resolve));
        async move { fetch(rt, Arc::new(config), &request, resolve).await }
    };
    let r = get("https://mta-sts.example.org/.well-known/mta-sts.txt")
        .await
        .expect("policy of example.org");
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(
        text.contains("mode: enforce") && text.contains("mx1.example.org"),
        "{text}"
    );
    let policy = rmox_core::http::fetch::sts_policy(&Ok(r)).expect("valid policy");
    assert_eq!(policy.mode, rmox_core::tlspolicy::Mode::Enforce);
    // The policy host with a self-signed certificate: a WebPKI failure.
    let r = get("https://mta-sts.sts-badcert.example.org/.well-known/mta-sts.txt").await;
    assert!(matches!(r, Err(FetchError::Certificate(_))), "{r:?}");
    // Nothing listens there: a connect error.
    let r = get("https://127.10.0.99/.well-known/mta-sts.txt").await;
    assert!(matches!(r, Err(FetchError::Connect(_))), "{r:?}");
    drop(resolve);
    drop(client);
    dns_loop.await;
}

/// Work for a runtime's `block_on`.
type Job<R> = Box<dyn FnOnce(R) -> std::pin::Pin<Box<dyn Future<Output = ()>>>>;

/// Runs both halves on a runtime through its `block_on`.
fn both<R: Net + UdpRuntime>(name: &str, block_on: impl Fn(Job<R>)) {
    block_on(Box::new(|rt| Box::pin(in_process(rt))));
    if let Some(h) = Harness::get(name) {
        let ca = h.var("HARNESS_CA_FILE");
        block_on(Box::new(move |rt| Box::pin(against_harness(rt, ca))));
    }
}

#[cfg(feature = "tokio")]
#[test]
fn https_fetch_on_tokio() {
    both("https_fetch_on_tokio", |f| {
        rmox_runtime_tokio::block_on(f).unwrap()
    });
}

#[cfg(feature = "smol")]
#[test]
fn https_fetch_on_smol() {
    both("https_fetch_on_smol", |f| {
        rmox_runtime_smol::block_on(f).unwrap()
    });
}

#[cfg(all(feature = "glommio", target_os = "linux"))]
#[test]
fn https_fetch_on_glommio() {
    if let Err(e) = rmox_runtime_glommio::io_uring_available() {
        eprintln!("SKIP https_fetch_on_glommio: io_uring unavailable: {e}");
        return;
    }
    both("https_fetch_on_glommio", |f| {
        rmox_runtime_glommio::block_on(f).unwrap()
    });
}
