//! Pair tests: the fetch machine against a rustls server from the core TLS layer over an
//! in-memory link, with a test CA made with rcgen, in virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::http::codec::{encode_chunked, parse_request, Framing};
use crate::testkit::TestClock;
use std::sync::OnceLock;

struct Ca {
    key: rcgen::KeyPair,
    cert: rcgen::Certificate,
}

fn make_ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Ca { key, cert }
}

/// The trusted test CA and an untrusted one.
fn cas() -> &'static (Ca, Ca) {
    static CAS: OnceLock<(Ca, Ca)> = OnceLock::new();
    CAS.get_or_init(|| (make_ca("rmox test root"), make_ca("someone else")))
}

/// A server config for `name` with a leaf signed by `ca`.
fn server_for(ca: &Ca, name: &str) -> Arc<rustls::ServerConfig> {
    server_with(
        ca,
        rcgen::CertificateParams::new(vec![name.to_string()]).unwrap(),
    )
}

/// A server config with a leaf made from `params`, signed by `ca`.
fn server_with(ca: &Ca, params: rcgen::CertificateParams) -> Arc<rustls::ServerConfig> {
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let chain = format!("{}{}", leaf.pem(), ca.cert.pem());
    crate::tls::server_config_from_pem(chain.as_bytes(), key.serialize_pem().as_bytes()).unwrap()
}

/// WebPKI client config trusting only the first test CA.
fn client_tls() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cas().0.cert.der().clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn config(max_body: usize) -> Arc<FetchConfig> {
    let mut c = FetchConfig::mta_sts(client_tls());
    c.limits.max_body = max_body;
    Arc::new(c)
}

/// What the test server does.
#[derive(Clone)]
struct Script {
    /// The server's TLS config.
    tls: Arc<rustls::ServerConfig>,
    /// The response bytes, sent once the request is complete; `None`: never answer.
    response: Option<Vec<u8>>,
    /// Close the connection after the response.
    close_after: bool,
    /// The ciphertext to the client is delivered in pieces of this size.
    split: usize,
    /// Answer the connect effect with this failure.
    connect_fails: Option<String>,
}

fn script(response: &[u8]) -> Script {
    Script {
        tls: server_for(&cas().0, "mta-sts.example.com"),
        response: Some(response.to_vec()),
        close_after: false,
        split: usize::MAX,
        connect_fails: None,
    }
}

/// What happened in a run.
#[derive(Debug)]
struct Run {
    result: Result<Response, FetchError>,
    /// The request as the server received it.
    request: Vec<u8>,
    connects: Vec<Effect>,
    /// Whether the client asked to close.
    closed: bool,
    /// Virtual time the run took.
    elapsed: Duration,
}

fn request_complete(got: &[u8]) -> bool {
    match parse_request(got, &Limits::default()) {
        Ok(Some((h, n))) => match h.framing() {
            Ok(Framing::Length(l)) => got.len() >= n + l as usize,
            _ => true,
        },
        _ => false,
    }
}

fn run(config: Arc<FetchConfig>, req: &FetchRequest, s: Script) -> Run {
    let mut clock = TestClock::new();
    let start = clock.now().mono;
    let mut f = HttpsFetch::new(config, req, clock.now());
    let mut server = TlsLayer::server(Arc::clone(&s.tls)).unwrap();
    let (mut connected, mut responded, mut server_closed, mut server_dead) =
        (false, false, false, false);
    let mut got = Vec::new();
    let mut connects = Vec::new();
    let mut closed = false;
    let mut to_client: Vec<u8> = Vec::new();
    for _ in 0..100_000 {
        // Drain the client.
        let mut c2s = Vec::new();
        let deadline = loop {
            match f.poll(clock.now(), &mut c2s) {
                Output::Transmit => {}
                Output::Effect(t, e) => {
                    connects.push(e);
                    let c = match &s.connect_fails {
                        Some(why) => Completion::ConnectFailed(why.clone()),
                        None => {
                            connected = true;
                            Completion::Connected
                        }
                    };
                    f.handle(clock.now(), Input::Completed(t, c));
                }
                Output::Close => closed = true,
                Output::Idle { deadline, .. } => break deadline,
                Output::Done => {
                    return Run {
                        result: f.take_result().unwrap(),
                        request: got,
                        connects,
                        closed,
                        elapsed: clock.now().mono - start,
                    }
                }
            }
        };
        let mut progressed = false;
        if connected && !server_dead && !c2s.is_empty() {
            progressed = true;
            if server.feed(&c2s, &mut got).is_err() {
                server_dead = true;
            }
            if !responded && request_complete(&got) {
                if let Some(r) = &s.response {
                    server.write_plain(r);
                    responded = true;
                    if s.close_after {
                        server.close();
                    }
                }
            }
        }
        if !server_dead {
            server.take_ciphertext(&mut to_client);
        }
        if !to_client.is_empty() {
            progressed = true;
            let n = to_client.len().min(s.split);
            let piece: Vec<u8> = to_client.drain(..n).collect();
            let mut off = 0;
            while off < piece.len() {
                let used = f.handle(clock.now(), Input::Received(&piece[off..]));
                if used == 0 {
                    break;
                }
                off += used;
            }
        } else if (server_dead || (responded && s.close_after)) && !server_closed {
            progressed = true;
            server_closed = true;
            f.handle(clock.now(), Input::Closed);
        }
        if !progressed {
            let d = deadline.expect("stuck without a deadline");
            clock.set_mono(d);
            f.handle(clock.now(), Input::Timeout);
        }
    }
    panic!("fetch did not finish");
}

const POLICY: &[u8] =
    b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmax_age: 86400\r\n";

fn ok_response(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

const URL: &str = "https://mta-sts.example.com/.well-known/mta-sts.txt";

/// A policy fetch: the request line, Host and Connection headers, the connect effect with
/// the URL host and port 443, and the policy parsed from the response.
#[test]
fn fetch_policy() {
    let r = run(
        config(65536),
        &FetchRequest::get(URL),
        script(&ok_response(POLICY)),
    );
    let resp = r.result.clone().unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.content_type(), Some("text/plain"));
    assert_eq!(resp.body, POLICY);
    assert_eq!(
        r.connects,
        vec![Effect::Connect {
            host: "mta-sts.example.com".into(),
            port: 443,
            timeout: Duration::from_secs(60)
        }]
    );
    let req = String::from_utf8(r.request.clone()).unwrap();
    assert!(
        req.starts_with("GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.example.com\r\n"),
        "{req}"
    );
    assert!(req.contains("\r\nConnection: close\r\n"), "{req}");
    assert!(req.ends_with("\r\n\r\n"), "{req}");
    assert!(r.closed);
    let policy = sts_policy(&r.result).unwrap();
    assert_eq!(policy.max_age, 86400);
}

/// The response arrives one byte of ciphertext at a time, in chunked coding with a trailer.
#[test]
fn chunked_response_in_pieces() {
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    encode_chunked(POLICY, 10, &mut resp);
    let mut s = script(&resp);
    s.split = 1;
    let r = run(config(65536), &FetchRequest::get(URL), s);
    assert_eq!(r.result.as_ref().unwrap().body, POLICY);
    assert!(sts_policy(&r.result).is_ok());
}

/// A body without framing ends at the close of the connection; 100 Continue is skipped.
#[test]
fn until_close_and_interim() {
    let mut resp =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
            .to_vec();
    resp.extend_from_slice(POLICY);
    let mut s = script(&resp);
    s.close_after = true;
    let r = run(config(65536), &FetchRequest::get(URL), s);
    assert_eq!(r.result.unwrap().body, POLICY);
}

/// A certificate for another name: a certificate error, `sts-webpki-invalid`, and as a TLS
/// result `certificate-host-mismatch`.
#[test]
fn bad_cert_name() {
    let mut s = script(&ok_response(POLICY));
    s.tls = server_for(&cas().0, "other.example.com");
    let r = run(config(65536), &FetchRequest::get(URL), s);
    let e = r.result.unwrap_err();
    assert!(e.is_certificate(), "{e:?}");
    assert_eq!(e.sts_result_type(), ResultType::StsWebpkiInvalid);
    let FetchError::Certificate(detail) = &e else {
        unreachable!()
    };
    assert_eq!(
        crate::delivery::result_type(detail),
        "certificate-host-mismatch"
    );
    assert!(r.request.is_empty(), "no request over a bad certificate");
}

/// A certificate from a CA that is not among the roots: `certificate-not-trusted`.
#[test]
fn untrusted_root() {
    let mut s = script(&ok_response(POLICY));
    s.tls = server_for(&cas().1, "mta-sts.example.com");
    let r = run(config(65536), &FetchRequest::get(URL), s);
    let e = r.result.unwrap_err();
    assert!(e.is_certificate(), "{e:?}");
    assert_eq!(e.sts_result_type(), ResultType::StsWebpkiInvalid);
    let FetchError::Certificate(detail) = &e else {
        unreachable!()
    };
    assert_eq!(
        crate::delivery::result_type(detail),
        "certificate-not-trusted"
    );
}

/// A certificate that expired (in 2001): `certificate-expired` as a TLS result,
/// `sts-webpki-invalid` for MTA-STS.
#[test]
fn expired_cert() {
    let mut params =
        rcgen::CertificateParams::new(vec!["mta-sts.example.com".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let mut s = script(&ok_response(POLICY));
    s.tls = server_with(&cas().0, params);
    let r = run(config(65536), &FetchRequest::get(URL), s);
    let e = r.result.unwrap_err();
    assert_eq!(e.sts_result_type(), ResultType::StsWebpkiInvalid);
    let FetchError::Certificate(detail) = &e else {
        unreachable!()
    };
    assert_eq!(
        crate::delivery::result_type(detail),
        "certificate-expired",
        "{detail}"
    );
}

/// A 404 is a response; as an MTA-STS fetch it is `sts-policy-fetch-error`.
#[test]
fn not_found() {
    let r = run(
        config(65536),
        &FetchRequest::get(URL),
        script(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found"),
    );
    assert_eq!(r.result.as_ref().unwrap().status, 404);
    let e = sts_policy(&r.result).unwrap_err();
    assert_eq!(e.result_type(), ResultType::StsPolicyFetchError);
}

/// A redirect is not followed (RFC 8461 3.3): one connection only, the 301 is the result,
/// and the MTA-STS fetch fails.
#[test]
fn redirect_not_followed() {
    let r = run(
        config(65536),
        &FetchRequest::get(URL),
        script(b"HTTP/1.1 301 Moved Permanently\r\nLocation: https://elsewhere.example/policy\r\nContent-Length: 0\r\n\r\n"),
    );
    assert_eq!(r.connects.len(), 1);
    assert_eq!(r.result.as_ref().unwrap().status, 301);
    assert_eq!(
        sts_policy(&r.result).unwrap_err().result_type(),
        ResultType::StsPolicyFetchError
    );
}

/// A body over the limit: declared (Content-Length), chunked, and until close.
#[test]
fn oversized_body() {
    let big = vec![b'a'; 64 * 1024 + 1];
    let r = run(
        config(64 * 1024),
        &FetchRequest::get(URL),
        script(&ok_response(&big)),
    );
    assert_eq!(r.result, Err(FetchError::TooLarge(64 * 1024)));
    assert!(r.closed);

    let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    encode_chunked(&big, 4096, &mut chunked);
    let r = run(config(64 * 1024), &FetchRequest::get(URL), script(&chunked));
    assert_eq!(r.result, Err(FetchError::TooLarge(64 * 1024)));

    let mut close = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    close.extend_from_slice(&big);
    let mut s = script(&close);
    s.close_after = true;
    let r = run(config(64 * 1024), &FetchRequest::get(URL), s);
    assert_eq!(r.result, Err(FetchError::TooLarge(64 * 1024)));
    assert_eq!(
        r.result.unwrap_err().sts_result_type(),
        ResultType::StsPolicyFetchError
    );
    // Exactly at the limit is fine.
    let r = run(
        config(64 * 1024),
        &FetchRequest::get(URL),
        script(&ok_response(&big[1..])),
    );
    assert_eq!(r.result.unwrap().body.len(), 64 * 1024);
}

/// A server that never answers: the total deadline ends the fetch and closes the
/// connection; so does one that sends half a response.
#[test]
fn slow_server_deadline() {
    let mut s = script(b"");
    s.response = None;
    let r = run(config(65536), &FetchRequest::get(URL), s);
    assert_eq!(r.result, Err(FetchError::Timeout));
    assert!(r.closed);
    assert_eq!(r.elapsed, Duration::from_secs(60));

    let r = run(
        config(65536),
        &FetchRequest::get(URL),
        script(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nversion"),
    );
    assert_eq!(r.result, Err(FetchError::Timeout));
    assert_eq!(
        r.result.unwrap_err().sts_result_type(),
        ResultType::StsPolicyFetchError
    );
}

/// The connection closes inside the body, or before any response: protocol errors.
#[test]
fn closed_early() {
    let mut s = script(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nversion");
    s.close_after = true;
    let r = run(config(65536), &FetchRequest::get(URL), s);
    assert_eq!(
        r.result,
        Err(FetchError::Protocol(HttpError::UnexpectedEof))
    );
    let mut s = script(b"");
    s.close_after = true;
    let r = run(config(65536), &FetchRequest::get(URL), s);
    assert_eq!(
        r.result,
        Err(FetchError::Protocol(HttpError::UnexpectedEof))
    );
}

/// A failed connection, a response that is not HTTP, and bad URLs.
#[test]
fn connect_and_protocol_errors() {
    let mut s = script(b"");
    s.connect_fails = Some("connection refused".into());
    let r = run(config(65536), &FetchRequest::get(URL), s);
    assert_eq!(
        r.result,
        Err(FetchError::Connect("connection refused".into()))
    );
    assert_eq!(
        r.result.unwrap_err().sts_result_type(),
        ResultType::StsPolicyFetchError
    );

    let r = run(
        config(65536),
        &FetchRequest::get(URL),
        script(b"220 mx ESMTP\r\n\r\n"),
    );
    assert!(
        matches!(r.result, Err(FetchError::Protocol(HttpError::Malformed(_)))),
        "{r:?}"
    );

    for url in [
        "http://mta-sts.example.com/",
        "https://user@mta-sts.example.com/",
        "https://mta-sts.example.com:99999/",
        "https://exa mple.com/",
        "https:///x",
        "ftp://x/",
    ] {
        let r = run(config(65536), &FetchRequest::get(url), script(b""));
        assert!(
            matches!(r.result, Err(FetchError::InvalidUrl(_))),
            "{url}: {r:?}"
        );
        assert!(r.connects.is_empty(), "{url}");
    }
}

/// URL forms: port, query without path, IPv6 literal, fragment dropped.
#[test]
fn url_forms() {
    let cases = [
        ("https://Example.COM", ("example.com", 443, "/")),
        (
            "https://example.com:8443/a/b?c=d#frag",
            ("example.com", 8443, "/a/b?c=d"),
        ),
        ("https://example.com?q", ("example.com", 443, "/?q")),
        ("https://[::1]:444/x", ("::1", 444, "/x")),
        ("HTTPS://example.com./", ("example.com", 443, "/")),
    ];
    for (url, (h, p, path)) in cases {
        assert_eq!(
            parse_url(url),
            Ok((h.to_string(), p, path.to_string())),
            "{url}"
        );
    }
    // The Host header of an IPv6 literal keeps its brackets.
    for (url, host) in [
        ("https://[::1]/", "[::1]"),
        ("https://[::1]:444/", "[::1]:444"),
    ] {
        let f = HttpsFetch::new(config(100), &FetchRequest::get(url), TestClock::new().now());
        let (head, _) = parse_request(&f.request, &Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(head.header("host"), Some(host), "{url}");
    }
}

/// A POST (a TLS report to an https rua): Content-Type and Content-Length, the body, and
/// a port other than 443 in the Host header.
#[test]
fn post_report() {
    let body = vec![0x1f, 0x8b, 1, 2, 3];
    let url = "https://reports.example.com:8443/tlsrpt";
    let mut s = script(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    s.tls = server_for(&cas().0, "reports.example.com");
    let r = run(
        config(65536),
        &FetchRequest::post(url, "application/tlsrpt+gzip", body.clone()),
        s,
    );
    assert_eq!(r.result.unwrap().status, 201);
    let (head, n) = parse_request(&r.request, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(head.method, "POST");
    assert_eq!(head.target, "/tlsrpt");
    assert_eq!(head.header("host"), Some("reports.example.com:8443"));
    assert_eq!(head.header("content-type"), Some("application/tlsrpt+gzip"));
    assert_eq!(head.header("content-length"), Some("5"));
    assert_eq!(&r.request[n..], &body[..]);
    assert_eq!(
        r.connects,
        vec![Effect::Connect {
            host: "reports.example.com".into(),
            port: 8443,
            timeout: Duration::from_secs(60)
        }]
    );
}

/// Completions with a wrong token and timeouts before the deadline change nothing.
#[test]
fn stray_inputs_ignored() {
    let clock = TestClock::new();
    let mut f = HttpsFetch::new(config(100), &FetchRequest::get(URL), clock.now());
    let mut tx = Vec::new();
    let Output::Effect(t, _) = f.poll(clock.now(), &mut tx) else {
        panic!()
    };
    f.handle(
        clock.now(),
        Input::Completed(Token(t.0 + 1), Completion::Connected),
    );
    f.handle(clock.now(), Input::Timeout);
    assert_eq!(f.handle(clock.now(), Input::Received(b"junk")), 4);
    assert!(matches!(
        f.poll(clock.now(), &mut tx),
        Output::Idle {
            timer: Some(Timer::Total),
            ..
        }
    ));
    assert!(tx.is_empty());
    assert!(f.result().is_none());
}

/// `allow_http`: an `http://` URL is fetched in plain text (port 80 by default, Host
/// without it); without the flag it is an invalid URL, as before.
#[test]
fn plain_http_when_allowed() {
    let now = TestClock::new().now();
    let f = HttpsFetch::new(
        config(100),
        &FetchRequest::get("http://hooks.example/x"),
        now,
    );
    assert!(matches!(f.result(), Some(Err(FetchError::InvalidUrl(_)))));
    let mut c = FetchConfig::mta_sts(client_tls());
    c.allow_http = true;
    let c = Arc::new(c);
    for (url, port, host) in [
        ("http://hooks.example/x", 80, "hooks.example"),
        ("HTTP://hooks.example:8080/x", 8080, "hooks.example:8080"),
    ] {
        let mut f = HttpsFetch::new(
            Arc::clone(&c),
            &FetchRequest::post(url, "application/json", b"{}".to_vec()),
            now,
        );
        let mut tx = Vec::new();
        let Output::Effect(
            token,
            Effect::Connect {
                host: h, port: p, ..
            },
        ) = f.poll(now, &mut tx)
        else {
            panic!("no connect for {url}");
        };
        assert_eq!((h.as_str(), p), ("hooks.example", port));
        f.handle(now, Input::Completed(token, Completion::Connected));
        assert!(matches!(f.poll(now, &mut tx), Output::Transmit));
        let (head, n) = parse_request(&tx, &Limits::default()).unwrap().unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!(head.target, "/x");
        assert_eq!(head.header("host"), Some(host));
        assert_eq!(&tx[n..], b"{}");
        let reply = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(f.handle(now, Input::Received(reply)), reply.len());
        loop {
            match f.poll(now, &mut tx) {
                Output::Done => break,
                Output::Idle { .. } => panic!("not done"),
                _ => {}
            }
        }
        assert_eq!(f.result().unwrap().as_ref().unwrap().status, 204);
    }
    // https still goes through TLS with the flag set.
    let f = HttpsFetch::new(c, &FetchRequest::get("https://hooks.example/x"), now);
    assert_eq!(f.target(), ("hooks.example", 443));
}
