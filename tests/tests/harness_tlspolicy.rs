//! The TLS policy machine (`rmox_core::tlspolicy::PolicySession`) against the real harness:
//! DNS from the validating resolver (the AD bit, SERVFAIL for the bogus zone), MTA-STS
//! policies fetched over HTTPS from the harness nginx with its test CA. The verdict of
//! every scenario domain must agree with the reference Postfix table in
//! ../shared/harness/README.md section 4, plus the MTA-STS verdicts Postfix lacks; the
//! same rows run against canned answers in core (`tlspolicy::session::tests`).
//!
//! The DNS and HTTPS here are small blocking test drivers (the real ones are the runtimes'
//! and helper C's HTTPS client machine): the point is the machine's decisions on real
//! answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmox_core::dns::{
    Lookup, LookupResult, Record, RecordType, Resolver, ResolverConfig, ResolverInput,
    ResolverOutput,
};
use rmox_core::tlspolicy::mtasts::FetchError;
use rmox_core::tlspolicy::session::{
    Completion, Effect, FetchRequest, FetchResponse, Input, Output, PolicyConfig, PolicySession,
};
use rmox_core::tlspolicy::{MessageTls, ResultType};
use rmox_core::Rng;
use rmox_tests::client_driver::now;
use rmox_tests::harness::{Harness, RESOLVER};

/// One lookup through the core resolver over UDP (the harness answers fit in 1232 octets;
/// a truncated answer is a temporary failure here).
fn lookup(r: &mut Resolver, sock: &UdpSocket, l: &Lookup) -> LookupResult {
    let id = r.query(now(), l.clone());
    let limit = Instant::now() + Duration::from_secs(20);
    loop {
        match r.poll(now()) {
            ResolverOutput::SendUdp { server, bytes } => {
                sock.send_to(&bytes, server).unwrap();
            }
            ResolverOutput::SendTcp { .. } | ResolverOutput::CloseTcp { .. } => {
                return LookupResult::TempFail("TCP not driven in this test".into())
            }
            ResolverOutput::Answer(q, a) if q == id => return a,
            ResolverOutput::Answer(..) => {}
            ResolverOutput::Idle { deadline, .. } => {
                assert!(Instant::now() < limit, "DNS did not finish");
                let wait = deadline
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or(Duration::from_secs(1))
                    .max(Duration::from_millis(10));
                sock.set_read_timeout(Some(wait)).unwrap();
                let mut buf = [0u8; 65535];
                match sock.recv_from(&mut buf) {
                    Ok((n, from)) => r.handle(
                        now(),
                        ResolverInput::Udp {
                            from,
                            bytes: &buf[..n],
                        },
                    ),
                    Err(_) => r.handle(now(), ResolverInput::Timeout),
                }
            }
        }
    }
}

/// The A record of a host, through the resolver.
fn address(r: &mut Resolver, sock: &UdpSocket, host: &str) -> Option<std::net::IpAddr> {
    let a = lookup(
        r,
        sock,
        &Lookup {
            name: host.into(),
            rtype: RecordType::A,
        },
    );
    match a {
        LookupResult::Records { records, .. } => records.iter().find_map(|r| match r {
            Record::A(a) => Some((*a).into()),
            _ => None,
        }),
        _ => None,
    }
}

/// A blocking HTTPS GET with WebPKI verification against the harness CA, no redirects,
/// the body bounded: certificate errors are `FetchError::WebPki`, anything else `Fetch`.
fn fetch(
    req: &FetchRequest,
    ip: Option<std::net::IpAddr>,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<FetchResponse, FetchError> {
    let err = |e: String| FetchError::Fetch(e);
    let ip = ip.ok_or_else(|| err(format!("{}: no address", req.host)))?;
    let name = rustls::pki_types::ServerName::try_from(req.host.clone())
        .map_err(|e| err(e.to_string()))?;
    let mut conn =
        rustls::ClientConnection::new(Arc::clone(tls), name).map_err(|e| err(e.to_string()))?;
    let mut tcp = TcpStream::connect_timeout(&SocketAddr::new(ip, 443), req.timeout)
        .map_err(|e| err(e.to_string()))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
    let path = req
        .url
        .strip_prefix(&format!("https://{}", req.host))
        .unwrap_or("/");
    let classify = |e: std::io::Error| {
        let text = e.to_string();
        match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(_)) => FetchError::WebPki(text),
            _ => FetchError::Fetch(text),
        }
    };
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                req.host
            )
            .as_bytes(),
        )
        .map_err(classify)?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > req.max_body + 16384 {
                    return Err(err("response too large".into()));
                }
            }
            // nginx may close without close_notify.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(classify(e)),
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| err("no header end".into()))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| err("bad status line".into()))?;
    let mut content_type = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim().to_string());
            }
            if k.trim().eq_ignore_ascii_case("transfer-encoding") {
                return Err(err("chunked bodies not read by this test driver".into()));
            }
        }
    }
    Ok(FetchResponse {
        status,
        content_type,
        body,
    })
}

/// Runs the policy machine for `domain` against the harness, asking for each host in turn:
/// the verdicts joined by `|`, and the fetch failure's result type.
fn verdicts(
    domain: &str,
    hosts: &[&str],
    msg: MessageTls,
    tls: &Arc<rustls::ClientConfig>,
) -> (String, Option<ResultType>) {
    let rc = ResolverConfig {
        servers: vec![RESOLVER.parse().unwrap()],
        trust_ad: true,
        ..ResolverConfig::default()
    };
    let mut resolver = Resolver::new(rc, Rng::new(7));
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut pc = PolicyConfig::new(true);
    pc.effect_timeout = Duration::from_secs(30);
    let mut s = PolicySession::new(Arc::new(pc), domain, msg, now());
    let mut out = Vec::new();
    for host in hosts {
        s.handle(now(), Input::Ask(host.to_string())).unwrap();
        let mut got = None;
        for _ in 0..100 {
            let mut answers = Vec::new();
            loop {
                match s.poll(now()) {
                    Output::Effect(t, Effect::Dns(ls)) => {
                        let r = ls.iter().map(|l| lookup(&mut resolver, &sock, l)).collect();
                        answers.push((t, Completion::Dns(r)));
                    }
                    Output::Effect(t, Effect::CacheGet { .. }) => {
                        answers.push((t, Completion::Cached(None)))
                    }
                    Output::Effect(t, Effect::Fetch(req)) => {
                        let ip = address(&mut resolver, &sock, &req.host);
                        answers.push((t, Completion::Fetched(fetch(&req, ip, tls))));
                    }
                    Output::Cache(_) => {}
                    Output::Verdict(v) if v.host == *host => got = Some(v.requirement.to_string()),
                    Output::Verdict(_) => {}
                    Output::Idle { .. } => break,
                }
            }
            if got.is_some() || answers.is_empty() {
                break;
            }
            for (t, c) in answers {
                s.handle(now(), Input::Completed(t, c)).unwrap();
            }
        }
        out.push(got.unwrap_or_else(|| format!("no verdict for {host}")));
    }
    let failure = s
        .fetch_failure()
        .and_then(|f| f.failure.map(|d| d.result_type));
    (out.join("|"), failure)
}

/// Every scenario domain of the harness, through real DNS and HTTPS: the same verdicts as
/// the canned rows in core, which follow the Postfix reference table (section 4) and add
/// MTA-STS: example.org enforce (WebPKI required), sts-mismatch (MX skipped), sts-notls
/// (STARTTLS required, so the host without it is not delivered to), sts-testing
/// (delivered, failure reported), sts-badcert (the policy fetch fails on the untrusted
/// certificate: no policy, `sts-webpki-invalid` reported); dane.example, ta.dane.example
/// and bad.dane.example DANE-required (Postfix: Verified, Verified, deferred 4.7.5 in the
/// handshake); bogus.example deferred (Postfix: 4.4.3 SERVFAIL).
#[test]
fn harness_scenarios_real_dns_and_https() {
    let Some(h) = Harness::get("harness_scenarios_real_dns_and_https") else {
        return;
    };
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(h.var("HARNESS_CA_FILE")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let rows: &[(&str, &[&str], &str, Option<ResultType>)] = &[
        (
            "example.org",
            &["mx1.example.org", "mx2.example.org"],
            "required/webpki=mx1.example.org/abort/sts|required/webpki=mx2.example.org/abort/sts",
            None,
        ),
        (
            "pf.example.org",
            &["mx2.example.org"],
            "opportunistic/none/deliver/no-policy-found",
            None,
        ),
        (
            "notls.example.org",
            &["mx-notls.example.org"],
            "opportunistic/none/deliver/no-policy-found",
            None,
        ),
        (
            "multi.example.org",
            &["dead.example.org", "mx1.example.org"],
            "opportunistic/none/deliver/no-policy-found|opportunistic/none/deliver/no-policy-found",
            None,
        ),
        (
            "sts-mismatch.example.org",
            &["mx1.example.org"],
            "skip:mismatch",
            None,
        ),
        (
            "sts-notls.example.org",
            &["mx-notls.example.org"],
            "required/webpki=mx-notls.example.org/abort/sts",
            None,
        ),
        (
            "sts-testing.example.org",
            &["mx-selfsigned.example.org"],
            "opportunistic/webpki=mx-selfsigned.example.org/deliver/sts",
            None,
        ),
        (
            "sts-badcert.example.org",
            &["mx1.example.org"],
            "opportunistic/none/deliver/no-policy-found",
            Some(ResultType::StsWebpkiInvalid),
        ),
        (
            "dane.example",
            &["mx.dane.example"],
            "required/dane=mx.dane.example/abort/tlsa",
            None,
        ),
        (
            "ta.dane.example",
            &["mx.ta.dane.example"],
            "required/dane=mx.ta.dane.example/abort/tlsa",
            None,
        ),
        (
            "bad.dane.example",
            &["mx.bad.dane.example"],
            "required/dane=mx.bad.dane.example/abort/tlsa",
            None,
        ),
        (
            "bogus.example",
            &["mx.bogus.example"],
            "skip:dane-tempfail",
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (domain, hosts, want, want_failure) in rows {
        let got = verdicts(domain, hosts, MessageTls::Default, &tls);
        if got != (want.to_string(), want_failure.clone()) {
            failures.push(format!(
                "{domain}: got {got:?}, want {want:?} {want_failure:?}"
            ));
        }
    }
    // REQUIRETLS: only MTA-STS and DANE domains can carry it.
    for (domain, host, want) in [
        (
            "example.org",
            "mx1.example.org",
            "required/webpki=mx1.example.org/abort/sts/requiretls",
        ),
        ("pf.example.org", "mx2.example.org", "fail:5.7.10"),
        (
            "dane.example",
            "mx.dane.example",
            "required/dane=mx.dane.example/abort/tlsa/requiretls",
        ),
    ] {
        let (got, _) = verdicts(domain, &[host], MessageTls::RequireTls, &tls);
        if got != want {
            failures.push(format!("REQUIRETLS {domain}: got {got}, want {want}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
