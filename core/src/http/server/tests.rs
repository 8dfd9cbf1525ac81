//! Transcript tests for the HTTP server session (C: what the client sends, S: what the
//! session answers, E: the requests it hands to the caller), and pair tests with the HTTPS
//! fetch machine over TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::http::fetch::{self, FetchConfig, FetchRequest, HttpsFetch};
use crate::testkit::{self, TestClock};

/// A session in virtual time with everything it said.
struct Conn {
    s: HttpServerSession,
    clock: TestClock,
    /// Bytes transmitted, as text.
    sent: String,
    /// Requests handed out, not answered yet.
    requests: Vec<(Token, RequestHead, Vec<u8>)>,
    closed: bool,
    events: Vec<Event>,
    deadline: Option<Instant>,
    /// Input not consumed yet (backpressure).
    unread: Vec<u8>,
}

impl Conn {
    fn new(cfg: ServerConfig) -> Conn {
        let clock = TestClock::new();
        let s = HttpServerSession::new(Arc::new(cfg), clock.now()).unwrap();
        let mut c = Conn {
            s,
            clock,
            sent: String::new(),
            requests: Vec::new(),
            closed: false,
            events: Vec::new(),
            deadline: None,
            unread: Vec::new(),
        };
        c.drain();
        c
    }

    fn drain(&mut self) {
        let mut tx = Vec::new();
        for _ in 0..1000 {
            match self.s.poll(self.clock.now(), &mut tx) {
                Output::Transmit => {
                    self.sent.push_str(&String::from_utf8_lossy(&tx));
                    tx.clear();
                }
                Output::Effect(t, Effect::Request { head, body }) => {
                    self.requests.push((t, head, body))
                }
                Output::Event(e) => self.events.push(e),
                Output::Idle { deadline, .. } => {
                    self.deadline = deadline;
                    return;
                }
                Output::Close => {
                    self.closed = true;
                    return;
                }
            }
        }
        panic!("session did not go idle");
    }

    /// Sends `data` in pieces of `step` bytes; returns what the session sent meanwhile.
    fn send_in(&mut self, data: &[u8], step: usize) -> String {
        self.sent.clear();
        for piece in data.chunks(step.max(1)) {
            self.unread.extend_from_slice(piece);
            let n = self
                .s
                .handle(self.clock.now(), Input::Received(&self.unread));
            self.unread.drain(..n);
            self.drain();
        }
        std::mem::take(&mut self.sent)
    }

    fn send(&mut self, data: &str) -> String {
        self.send_in(data.as_bytes(), usize::MAX)
    }

    /// Offers the bytes held back again.
    fn retry(&mut self) -> String {
        self.sent.clear();
        let n = self
            .s
            .handle(self.clock.now(), Input::Received(&self.unread));
        self.unread.drain(..n);
        self.drain();
        std::mem::take(&mut self.sent)
    }

    /// Answers the request at `index` of the outstanding ones.
    fn answer(&mut self, index: usize, r: Response) -> String {
        let (t, _, _) = self.requests.remove(index);
        self.sent.clear();
        self.s.handle(
            self.clock.now(),
            Input::Completed(t, Completion::Response(r)),
        );
        self.drain();
        let mut out = std::mem::take(&mut self.sent);
        if !self.unread.is_empty() {
            out.push_str(&self.retry());
        }
        out
    }

    /// Moves time to the next deadline and fires it.
    fn wait(&mut self) -> String {
        let d = self.deadline.expect("a deadline");
        self.clock.set_mono(d);
        self.sent.clear();
        self.s.handle(self.clock.now(), Input::Timeout);
        self.drain();
        std::mem::take(&mut self.sent)
    }

    fn paths(&self) -> Vec<String> {
        self.requests
            .iter()
            .map(|(_, h, _)| format!("{} {}", h.method, h.target))
            .collect()
    }
}

const DATE: &str = "Date: Sun, 22 Nov 2026 02:41:08 GMT";

fn text(status: u16, body: &str) -> Response {
    Response::new(status, "text/plain", body)
}

/// The expected response bytes for `text(status, body)`.
fn want(status: u16, body: &str, close: bool) -> String {
    format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\n{DATE}\r\n{}Content-Length: {}\r\n\r\n{body}",
        crate::http::codec::reason(status),
        if close { "Connection: close\r\n" } else { "" },
        body.len()
    )
}

#[test]
fn date_format() {
    assert_eq!(
        http_date(UnixTime(1_795_315_268)),
        "Sun, 22 Nov 2026 02:41:08 GMT"
    );
    assert_eq!(http_date(UnixTime(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(
        http_date(UnixTime(951_782_400)),
        "Tue, 29 Feb 2000 00:00:00 GMT"
    );
}

/// One GET on a keep-alive connection: the request goes to the caller, the answer gets
/// Date and Content-Length, and the connection stays open for the next request.
#[test]
fn get_keep_alive() {
    let mut c = Conn::new(ServerConfig::new());
    // C: GET /.well-known/mta-sts.txt, E: one request, S: nothing yet.
    assert_eq!(
        c.send("GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: mta-sts.mox.example\r\n\r\n"),
        ""
    );
    assert_eq!(c.paths(), ["GET /.well-known/mta-sts.txt"]);
    assert_eq!(c.requests[0].1.header("host"), Some("mta-sts.mox.example"));
    // S: 200 with the policy.
    assert_eq!(
        c.answer(0, text(200, "version: STSv1\n")),
        want(200, "version: STSv1\n", false)
    );
    assert!(!c.closed);
    // C: a second request on the same connection.
    c.send("GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(c.paths(), ["GET /metrics"]);
    assert_eq!(c.answer(0, text(404, "no")), want(404, "no", false));
    assert!(!c.closed);
    // The access log: one event per response.
    let responded = |m: &str, t: &str, status, body_len| Event::Responded {
        method: m.into(),
        target: t.into(),
        status,
        body_len,
    };
    assert_eq!(
        c.events,
        [
            responded("GET", "/.well-known/mta-sts.txt", 200, 15),
            responded("GET", "/metrics", 404, 2)
        ]
    );
}

/// Pipelined requests in one write, answered by the caller in reverse order, are
/// answered on the wire in request order; the same with the input fed byte by byte.
#[test]
fn pipelined_in_order() {
    let input = "GET /a HTTP/1.1\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyzGET /c HTTP/1.1\r\n\r\n";
    for step in [usize::MAX, 1, 5] {
        let mut c = Conn::new(ServerConfig::new());
        c.send_in(input.as_bytes(), step);
        assert_eq!(c.paths(), ["GET /a", "POST /b", "GET /c"], "step {step}");
        assert_eq!(c.requests[1].2, b"xyz");
        assert_eq!(c.answer(2, text(200, "c")), "");
        assert_eq!(c.answer(1, text(201, "b")), "");
        let got = c.answer(0, text(200, "a"));
        assert_eq!(
            got,
            format!(
                "{}{}{}",
                want(200, "a", false),
                want(201, "b", false),
                want(200, "c", false)
            ),
            "step {step}"
        );
    }
}

/// `Connection: close` and HTTP/1.0 without keep-alive: the response says
/// `Connection: close`, the session closes, and bytes after that request are not read.
#[test]
fn connection_close() {
    for req in [
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\nGET /ignored HTTP/1.1\r\n\r\n",
    ] {
        let mut c = Conn::new(ServerConfig::new());
        c.send(req);
        assert_eq!(c.paths(), ["GET /"], "{req}");
        assert_eq!(c.answer(0, text(200, "ok")), want(200, "ok", true));
        assert!(c.closed);
    }
    // HTTP/1.0 with keep-alive stays open; a caller's Connection: close is honoured.
    let mut c = Conn::new(ServerConfig::new());
    c.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.answer(0, text(200, "ok")), want(200, "ok", false));
    c.send("GET / HTTP/1.1\r\n\r\n");
    let mut r = text(200, "bye");
    r.headers.push(Header::new("Connection", "close"));
    assert_eq!(c.answer(0, r), want(200, "bye", true));
    assert!(c.closed);
}

/// Bodies: Content-Length and chunked (with a trailer), and HEAD answered without a body.
#[test]
fn bodies_and_head() {
    let mut c = Conn::new(ServerConfig::new());
    c.send_in(
        b"POST /webapi/v0/Send HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n3;x=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
        3,
    );
    assert_eq!(c.requests[0].2, b"{}abc");
    c.answer(0, text(200, ""));
    c.send("HEAD /x HTTP/1.1\r\n\r\n");
    assert_eq!(
        c.answer(0, text(200, "12345")),
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{DATE}\r\nContent-Length: 5\r\n\r\n"
        )
    );
    c.send("GET /x HTTP/1.1\r\n\r\n");
    assert_eq!(
        c.answer(0, text(204, "dropped")),
        format!("HTTP/1.1 204 No Content\r\nContent-Type: text/plain\r\n{DATE}\r\n\r\n")
    );
    assert!(!c.closed);
}

/// Bad input is answered by the session with the right status and the connection closes:
/// 400 malformed, 400 both framings, 431 too many or too large headers, 413 body too large
/// (declared or chunked), 501 unknown transfer coding.
#[test]
fn bad_requests() {
    let cfg = ServerConfig {
        limits: Limits {
            max_head: 256,
            max_headers: 4,
            max_body: 10,
        },
        ..ServerConfig::new()
    };
    let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
    let cases: &[(&str, u16)] = &[
        ("GARBAGE\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        ("GET / HTTP/3.0\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        ("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            "GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n",
            431,
        ),
        (&long, 431),
        ("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 413),
        (
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n",
            413,
        ),
        ("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    ];
    for (input, status) in cases {
        let mut c = Conn::new(cfg.clone());
        let got = c.send(input);
        let reason = crate::http::codec::reason(*status);
        let body = format!("{status} {reason}\n");
        assert_eq!(
            got,
            format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n{DATE}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
            "{input:?}"
        );
        assert!(c.closed, "{input:?}");
        assert!(c.requests.is_empty(), "{input:?}");
        assert!(
            matches!(&c.events[..], [Event::Refused { status: s, .. }, Event::Responded { status: r, .. }] if s == status && r == status),
            "{input:?}: {:?}",
            c.events
        );
    }
}

/// A bad request after good pipelined ones is answered after them, in order.
#[test]
fn bad_request_after_pipelined() {
    let mut c = Conn::new(ServerConfig::new());
    c.send("GET /a HTTP/1.1\r\n\r\nJUNK\r\n\r\n");
    assert_eq!(c.paths(), ["GET /a"]);
    let got = c.answer(0, text(200, "a"));
    assert!(got.starts_with(&want(200, "a", false)), "{got}");
    assert!(
        got[want(200, "a", false).len()..].starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{got}"
    );
    assert!(c.closed);
}

/// Deadlines: a request that does not arrive in time gets 408; an idle keep-alive
/// connection is closed without a word; a caller that does not answer in time gets 503
/// for that request, and a late answer is ignored.
#[test]
fn deadlines() {
    let mut c = Conn::new(ServerConfig::new());
    c.send("GET / HTTP/1.1\r\nHost: a");
    assert_eq!(
        c.deadline,
        Some(c.clock.now().mono + Duration::from_secs(30))
    );
    let got = c.wait();
    assert!(got.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{got}");
    assert!(c.closed);

    let mut c = Conn::new(ServerConfig::new());
    c.send("GET / HTTP/1.1\r\n\r\n");
    c.answer(0, text(200, ""));
    assert_eq!(
        c.deadline,
        Some(c.clock.now().mono + Duration::from_secs(60))
    );
    assert_eq!(c.wait(), "");
    assert!(c.closed);

    let mut c = Conn::new(ServerConfig::new());
    c.send("GET /slow HTTP/1.1\r\n\r\n");
    let late = c.requests[0].0;
    let got = c.wait();
    assert!(
        got.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{got}"
    );
    assert!(got.contains("\r\nConnection: close\r\n"), "{got}");
    assert_eq!(
        c.events[0],
        Event::Refused {
            status: 503,
            reason: "no answer in time for GET /slow".into()
        }
    );
    assert!(c.closed);
    c.s.handle(
        c.clock.now(),
        Input::Completed(late, Completion::Response(text(200, "late"))),
    );
    c.drain();
    assert_eq!(c.sent, "");

    // A timeout before the deadline changes nothing.
    let mut c = Conn::new(ServerConfig::new());
    c.send("GET / HTTP/1.1\r\n");
    c.s.handle(c.clock.now(), Input::Timeout);
    c.drain();
    assert!(!c.closed && c.sent.is_empty());
}

/// `Expect: 100-continue` gets an interim 100 before the body is sent.
#[test]
fn expect_continue() {
    let mut c = Conn::new(ServerConfig::new());
    let got = c.send("POST /up HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(got, "HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(c.send("ok"), "");
    assert_eq!(c.requests[0].2, b"ok");
}

/// With the pipeline full the session stops consuming input, and reads the held-back
/// request once an answer was sent; the request deadline does not run meanwhile.
#[test]
fn backpressure() {
    let mut c = Conn::new(ServerConfig {
        max_pipelined: 1,
        ..ServerConfig::new()
    });
    c.send("GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
    assert_eq!(c.paths(), ["GET /1"]);
    assert_eq!(
        c.deadline,
        Some(c.clock.now().mono + Duration::from_secs(60)),
        "handler only"
    );
    c.send("GET /3 HTTP/1.1\r\n\r\n");
    assert!(!c.unread.is_empty());
    assert_eq!(c.answer(0, text(200, "1")), want(200, "1", false));
    assert_eq!(c.paths(), ["GET /2"]);
    c.answer(0, text(200, "2"));
    assert_eq!(c.paths(), ["GET /3"]);
}

/// The client closes its sending half after pipelined requests: the answers are still
/// sent, the last with `Connection: close`, then the session closes.
#[test]
fn client_half_close() {
    let mut c = Conn::new(ServerConfig::new());
    c.send("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /partial");
    c.s.handle(c.clock.now(), Input::Closed);
    c.drain();
    assert!(!c.closed);
    assert_eq!(c.answer(0, text(200, "a")), want(200, "a", false));
    assert_eq!(c.answer(0, text(200, "b")), want(200, "b", true));
    assert!(c.closed);
}

/// Regression: with a full pipeline, requests received but held back were dropped when the
/// client closed its sending half; they are handed out and answered (the last with
/// `Connection: close`), then the session closes.
#[test]
fn client_half_close_with_held_back_requests() {
    let mut c = Conn::new(ServerConfig {
        max_pipelined: 1,
        ..ServerConfig::new()
    });
    c.send("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\nGET /partial");
    c.s.handle(c.clock.now(), Input::Closed);
    c.drain();
    assert_eq!(c.paths(), ["GET /a", "GET /b", "GET /c"]);
    assert_eq!(c.answer(1, text(200, "b")), "");
    assert_eq!(
        c.answer(0, text(200, "a")),
        format!("{}{}", want(200, "a", false), want(200, "b", false))
    );
    assert!(!c.closed);
    assert_eq!(c.answer(0, text(200, "c")), want(200, "c", true));
    assert!(c.closed);
}

/// A caller's response that cannot be encoded becomes a 500.
#[test]
fn bad_caller_response() {
    let mut c = Conn::new(ServerConfig::new());
    c.send("GET / HTTP/1.1\r\n\r\n");
    let mut r = text(200, "x");
    r.headers.push(Header::new("X-Bad", "a\r\nInjected: 1"));
    let got = c.answer(0, r);
    assert!(
        got.starts_with("HTTP/1.1 500 Internal Server Error\r\n"),
        "{got}"
    );
    assert!(!got.contains("Injected"), "{got}");
}

/// Runs a fetch against a server session through the testkit's [`testkit::Pair`] until
/// the fetch is done, answering the server's requests with `route`; bytes move in chunks
/// of up to `max_chunk` (0: whole writes).
fn pair_chunked(
    fetch_cfg: FetchConfig,
    req: &FetchRequest,
    server_cfg: ServerConfig,
    route: impl Fn(&RequestHead, &[u8]) -> Response + 'static,
    seed: u64,
    max_chunk: usize,
) -> (Result<Response, fetch::FetchError>, Vec<RequestHead>) {
    let clock = TestClock::new();
    let client = testkit::pair::HttpFetch {
        f: HttpsFetch::new(Arc::new(fetch_cfg), req, clock.now()),
    };
    let server = testkit::pair::HttpServer::new(server_cfg, clock.now(), route);
    let mut p = testkit::Pair::new(client, server, clock, seed, max_chunk);
    assert!(
        p.run_until(|p| p.client.f.result().is_some()),
        "fetch did not finish"
    );
    (p.client.f.take_result().unwrap(), p.server.seen)
}

/// [`pair_chunked`] with whole writes.
fn pair(
    fetch_cfg: FetchConfig,
    req: &FetchRequest,
    server_cfg: ServerConfig,
    route: impl Fn(&RequestHead, &[u8]) -> Response + 'static,
) -> (Result<Response, fetch::FetchError>, Vec<RequestHead>) {
    pair_chunked(fetch_cfg, req, server_cfg, route, 1, 0)
}

/// The fetch machine against the server session over implicit TLS (the MTA-STS policy
/// being served and fetched, as both ends of rmox will do): the policy arrives and parses.
#[test]
fn fetch_from_server_over_tls() {
    let policy = "version: STSv1\r\nmode: testing\r\nmx: mx.mox.example\r\nmax_age: 3600\r\n";
    let server_cfg = ServerConfig {
        tls: Some(testkit::server_tls()),
        ..ServerConfig::new()
    };
    let (r, seen) = pair(
        FetchConfig::mta_sts(testkit::client_tls()),
        &FetchRequest::get("https://mox.example/.well-known/mta-sts.txt"),
        server_cfg.clone(),
        move |h, _| {
            if h.target == "/.well-known/mta-sts.txt" {
                Response::new(200, "text/plain", policy)
            } else {
                Response::new(404, "text/plain", "not found")
            }
        },
    );
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("host"), Some("mox.example"));
    let p = fetch::sts_policy(&r).unwrap();
    assert_eq!(p.max_age, 3600);

    // A POST with a body over the same pair, and a 413 from the server for a body over
    // its limit.
    let (r, seen) = pair(
        FetchConfig::mta_sts(testkit::client_tls()),
        &FetchRequest::post(
            "https://mox.example/report",
            "application/json",
            b"{\"a\":1}".to_vec(),
        ),
        server_cfg.clone(),
        |_, body| Response::new(200, "text/plain", format!("got {}", body.len())),
    );
    assert_eq!(r.unwrap().body, b"got 7");
    assert_eq!(seen[0].method, "POST");
    let small = ServerConfig {
        limits: Limits {
            max_body: 4,
            ..Limits::default()
        },
        ..server_cfg
    };
    let (r, seen) = pair(
        FetchConfig::mta_sts(testkit::client_tls()),
        &FetchRequest::post(
            "https://mox.example/report",
            "application/json",
            b"{\"a\":1}".to_vec(),
        ),
        small.clone(),
        |_, _| Response::new(200, "text/plain", ""),
    );
    assert_eq!(r.unwrap().status, 413);
    assert!(seen.is_empty());
    // On a webapi listener the refusal is JSON, as its own errors are.
    let json = ServerConfig {
        json_errors: true,
        ..small
    };
    let (r, _) = pair(
        FetchConfig::mta_sts(testkit::client_tls()),
        &FetchRequest::post(
            "https://mox.example/webapi/v0/Send",
            "application/json",
            b"{\"a\":1}".to_vec(),
        ),
        json,
        |_, _| Response::new(200, "text/plain", ""),
    );
    let r = r.unwrap();
    assert_eq!(r.status, 413);
    let e: crate::webapi::ApiError = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("protocol", "413 Content Too Large")
    );
}

/// The policy fetch over TLS with the bytes in random chunks (down to one byte): the
/// same request and the same policy whatever the split.
#[test]
fn fetch_from_server_any_chunking() {
    let policy = "version: STSv1\r\nmode: enforce\r\nmx: mx.mox.example\r\nmax_age: 86400\r\n";
    let server_cfg = ServerConfig {
        tls: Some(testkit::server_tls()),
        ..ServerConfig::new()
    };
    for (seed, max_chunk) in [(1, 1), (2, 3), (3, 17), (4, 500)] {
        let (r, seen) = pair_chunked(
            FetchConfig::mta_sts(testkit::client_tls()),
            &FetchRequest::get("https://mox.example/.well-known/mta-sts.txt"),
            server_cfg.clone(),
            move |_, _| Response::new(200, "text/plain", policy),
            seed,
            max_chunk,
        );
        assert_eq!(seen.len(), 1, "seed {seed}");
        let p = fetch::sts_policy(&r).unwrap();
        assert_eq!(p.max_age, 86400, "seed {seed}");
    }
}

/// A flipped bit in a record the server sends (its handshake flight, or the flight with
/// the response): the fetch fails with an error, it never yields a response. A damaged
/// record after the response (the close_notify) does not undo the fetch.
#[test]
fn fetch_corrupted_response_fails() {
    let server_cfg = ServerConfig {
        tls: Some(testkit::server_tls()),
        ..ServerConfig::new()
    };
    for target in 0..4 {
        let clock = TestClock::new();
        let client = testkit::pair::HttpFetch {
            f: HttpsFetch::new(
                Arc::new(FetchConfig::mta_sts(testkit::client_tls())),
                &FetchRequest::get("https://mox.example/.well-known/mta-sts.txt"),
                clock.now(),
            ),
        };
        let server = testkit::pair::HttpServer::new(server_cfg.clone(), clock.now(), |_, _| {
            Response::new(200, "text/plain", "version: STSv1\r\n")
        });
        let mut n = 0;
        let mut p = testkit::Pair::new(client, server, clock, 1, 0).tamper(move |dir, bytes| {
            if dir == testkit::Dir::ToClient {
                if n == target {
                    let at = bytes.len() - 1;
                    bytes[at] ^= 0x01;
                }
                n += 1;
            }
        });
        assert!(
            p.run_until(|p| p.client.f.result().is_some()),
            "write {target}"
        );
        let r = p.client.f.take_result().unwrap();
        match target {
            // The handshake flight and the flight with the response.
            0 | 1 => assert!(r.is_err(), "write {target}: {r:?}"),
            // After the response (the close_notify): the fetch is already done.
            _ => assert_eq!(r.unwrap().body, b"version: STSv1\r\n", "write {target}"),
        }
    }
}

/// With TLS: a client that speaks plain HTTP gets no HTTP answer and the session closes;
/// a client that never finishes the handshake is closed after the handshake timeout.
#[test]
fn tls_failures_close() {
    let cfg = ServerConfig {
        tls: Some(testkit::server_tls()),
        ..ServerConfig::new()
    };
    let mut c = Conn::new(cfg.clone());
    let got = c.send("GET / HTTP/1.1\r\nHost: mox.example\r\n\r\n");
    assert!(!got.contains("HTTP/1.1"), "{got}");
    assert!(c.closed);
    assert!(c.requests.is_empty());
    assert!(
        matches!(&c.events[..], [Event::TlsFailed(_)]),
        "{:?}",
        c.events
    );

    let mut c = Conn::new(cfg);
    assert_eq!(
        c.deadline,
        Some(c.clock.now().mono + Duration::from_secs(10))
    );
    // At most a TLS alert (close_notify), record type 21.
    let got = c.wait();
    assert!(got.is_empty() || got.as_bytes()[0] == 21, "{got:?}");
    assert!(c.closed);
    assert!(!c.s.is_secure());
}

/// Proptest-style chunking invariance over a fixed set of inputs: every split point of a
/// two-request pipeline gives the same requests and the same answers.
#[test]
fn any_split_same_transcript() {
    let input = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    for cut in 0..=input.len() {
        let mut c = Conn::new(ServerConfig::new());
        c.send_in(&input[..cut], usize::MAX);
        c.send_in(&input[cut..], usize::MAX);
        assert_eq!(c.paths(), ["POST /a", "GET /b"], "cut {cut}");
        assert_eq!(c.requests[0].2, b"abc");
        let a = c.answer(0, text(200, "a"));
        assert_eq!(a, want(200, "a", false));
    }
}

mod props {
    use super::*;
    use proptest::prelude::*;

    /// A request as sent, and what the caller should see: method, target, body.
    fn arb_request() -> impl Strategy<Value = (Vec<u8>, (String, String, Vec<u8>))> {
        (
            prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")],
            "/[a-z0-9/._-]{0,20}",
            proptest::collection::vec(any::<u8>(), 0..60),
            any::<bool>(),
        )
            .prop_map(|(method, target, body, chunked)| {
                let mut wire =
                    format!("{method} {target} HTTP/1.1\r\nHost: mox.example\r\n").into_bytes();
                if chunked {
                    wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                    crate::http::codec::encode_chunked(&body, 7, &mut wire);
                } else {
                    wire.extend_from_slice(
                        format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    wire.extend_from_slice(&body);
                }
                (wire, (method.to_string(), target, body))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any pipeline of requests, split anywhere and answered in any order, gives the
        /// caller the same requests and the client the answers in request order.
        #[test]
        fn pipeline_any_split_any_order(
            reqs in proptest::collection::vec(arb_request(), 1..5),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..6),
            reverse: bool,
        ) {
            let wire: Vec<u8> = reqs.iter().flat_map(|(w, _)| w.clone()).collect();
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            let mut c = Conn::new(ServerConfig { max_pipelined: 16, ..ServerConfig::new() });
            for w in points.windows(2) {
                c.send_in(&wire[w[0]..w[1]], usize::MAX);
            }
            let got: Vec<(String, String, Vec<u8>)> = c
                .requests
                .iter()
                .map(|(_, h, b)| (h.method.clone(), h.target.clone(), b.clone()))
                .collect();
            let want: Vec<_> = reqs.iter().map(|(_, r)| r.clone()).collect();
            prop_assert_eq!(got, want);
            let n = c.requests.len();
            let mut out = String::new();
            for i in 0..n {
                // Answer each with its own index, last first when `reverse`.
                let pos = if reverse { c.requests.len() - 1 } else { 0 };
                let idx = if reverse { n - 1 - i } else { i };
                out.push_str(&c.answer(pos, text(200, &idx.to_string())));
            }
            let expected: String = (0..n).map(want_response).collect();
            prop_assert_eq!(out, expected);
            prop_assert!(!c.closed);
        }
    }

    fn want_response(i: usize) -> String {
        want(200, &i.to_string(), false)
    }
}
