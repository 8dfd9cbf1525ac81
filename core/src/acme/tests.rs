//! Transcript tests of [`AcmeOrder`] against a fake CA with canned answers: every step,
//! `badNonce` retries, invalid challenges, rate limits and `Retry-After`.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::*;
use crate::http::Method;
use crate::testkit::TestClock;

const DIR: &str = "https://ca.test/dir";

/// What the fake CA does.
struct FakeCa {
    /// Transcript: `GET url`, `POST url [jwk|kid] payload`, `PUBLISH ...`, `UNPUBLISH ...`.
    log: Vec<String>,
    nonce: u32,
    /// Reject this many signed requests with badNonce before accepting.
    reject_nonces: u32,
    /// Send no Replay-Nonce with badNonce errors (the client must fetch one).
    bad_nonce_without_new: bool,
    /// Authorization polls that still say `pending` before the final status.
    pending_polls: u32,
    /// The final authorization status after the challenge.
    authz_final: &'static str,
    /// Challenge types offered.
    offered: Vec<&'static str>,
    /// Order polls that say `processing` after finalize.
    processing_polls: u32,
    /// Answer newOrder with this error (status, type, Retry-After).
    new_order_error: Option<(u16, &'static str, Option<&'static str>)>,
    /// Retry-After on authorization polls.
    poll_retry_after: Option<&'static str>,
    /// Whether the authorization is already valid (reused).
    authz_valid: bool,
    /// The published challenges right now.
    published: Vec<String>,
}

impl FakeCa {
    fn new() -> FakeCa {
        FakeCa {
            log: Vec::new(),
            nonce: 0,
            reject_nonces: 0,
            bad_nonce_without_new: false,
            pending_polls: 1,
            authz_final: "valid",
            offered: vec!["http-01", "dns-01", "tls-alpn-01"],
            processing_polls: 1,
            new_order_error: None,
            poll_retry_after: None,
            authz_valid: false,
            published: Vec::new(),
        }
    }

    fn nonce(&mut self) -> Header {
        self.nonce += 1;
        Header::new("Replay-Nonce", &format!("n{}", self.nonce))
    }

    fn json(&mut self, status: u16, v: Value, extra: &[(&str, &str)]) -> Response {
        let mut r = Response::new(status, "application/json", v.to_string());
        r.headers.push(self.nonce());
        for (k, v) in extra {
            r.headers.push(Header::new(k, v));
        }
        r
    }

    fn authz(&self, status: &str) -> Value {
        let challenges: Vec<Value> = self
            .offered
            .iter()
            .map(|t| {
                let mut c = json!({"type": t, "url": format!("https://ca.test/chall/{t}"), "token": "tok-1_A", "status": "pending"});
                if status == "invalid" && *t == "tls-alpn-01" {
                    c["status"] = json!("invalid");
                    c["error"] = json!({"type": "urn:ietf:params:acme:error:unauthorized", "detail": "wrong acmeIdentifier"});
                }
                c
            })
            .collect();
        json!({"status": status, "identifier": {"type": "dns", "value": "mail.example.org"}, "challenges": challenges})
    }

    /// The answer to a request.
    fn answer(&mut self, req: &FetchRequest) -> Response {
        if req.method == Method::Get {
            self.log.push(format!("GET {}", req.url));
            return match req.url.as_str() {
                DIR => Response::new(
                    200,
                    "application/json",
                    json!({"newNonce": "https://ca.test/nonce", "newAccount": "https://ca.test/acct", "newOrder": "https://ca.test/order"}).to_string(),
                ),
                "https://ca.test/nonce" => {
                    let mut r = Response::new(204, "text/plain", "");
                    r.headers.push(self.nonce());
                    r
                }
                _ => Response::new(404, "text/plain", "no"),
            };
        }
        // A signed POST: check the JWS.
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let dec = |k: &str| URL_SAFE_NO_PAD.decode(body[k].as_str().unwrap()).unwrap();
        let protected: Value = serde_json::from_slice(&dec("protected")).unwrap();
        let payload = String::from_utf8(dec("payload")).unwrap();
        assert_eq!(dec("signature"), vec![7u8; 64]);
        assert_eq!(protected["alg"], "ES256");
        assert_eq!(protected["url"], req.url.as_str());
        assert_eq!(
            crate::http::codec::header(&req.headers, "content-type"),
            Some("application/jose+json")
        );
        let who = if protected.get("jwk").is_some() {
            assert_eq!(protected["jwk"]["kty"], "EC");
            assert!(protected.get("kid").is_none());
            "jwk".to_string()
        } else {
            assert_eq!(protected["kid"], "https://ca.test/acct/1");
            "kid".to_string()
        };
        let nonce = protected["nonce"].as_str().unwrap().to_string();
        assert_eq!(
            nonce,
            format!("n{}", self.nonce),
            "the latest nonce is used"
        );
        self.log.push(format!(
            "POST {} {who} {payload}",
            req.url.trim_start_matches("https://ca.test")
        ));
        if self.reject_nonces > 0 {
            self.reject_nonces -= 1;
            let mut r = Response::new(
                400,
                "application/problem+json",
                json!({"type": "urn:ietf:params:acme:error:badNonce", "detail": "JWS has an invalid anti-replay nonce"}).to_string(),
            );
            if !self.bad_nonce_without_new {
                r.headers.push(self.nonce());
            }
            return r;
        }
        match req.url.as_str() {
            "https://ca.test/acct" => self.json(
                201,
                json!({"status": "valid"}),
                &[("Location", "https://ca.test/acct/1")],
            ),
            "https://ca.test/order" => {
                if let Some((status, kind, ra)) = self.new_order_error {
                    let mut r = self.json(
                        status,
                        json!({"type": kind, "detail": "too many certificates"}),
                        &[],
                    );
                    if let Some(ra) = ra {
                        r.headers.push(Header::new("Retry-After", ra));
                    }
                    return r;
                }
                let st = if self.authz_valid { "ready" } else { "pending" };
                self.json(
                    201,
                    json!({"status": st, "authorizations": ["https://ca.test/authz/1"], "finalize": "https://ca.test/finalize/1"}),
                    &[("Location", "https://ca.test/order/1")],
                )
            }
            "https://ca.test/authz/1" => {
                let responded = self.log.iter().any(|l| l.starts_with("POST /chall/"));
                let status = if self.authz_valid {
                    "valid"
                } else if !responded {
                    "pending"
                } else if self.pending_polls > 0 {
                    self.pending_polls -= 1;
                    "pending"
                } else {
                    self.authz_final
                };
                let v = self.authz(status);
                let extra: Vec<(&str, &str)> = match (responded, self.poll_retry_after) {
                    (true, Some(ra)) => vec![("Retry-After", ra)],
                    _ => vec![],
                };
                self.json(200, v, &extra)
            }
            u if u.starts_with("https://ca.test/chall/") => {
                assert_eq!(payload, "{}");
                assert!(
                    !self.published.is_empty(),
                    "the challenge is published before the response"
                );
                self.json(200, json!({"status": "processing"}), &[])
            }
            "https://ca.test/finalize/1" => {
                let v: Value = serde_json::from_str(&payload).unwrap();
                assert_eq!(
                    URL_SAFE_NO_PAD.decode(v["csr"].as_str().unwrap()).unwrap(),
                    b"CSR-DER"
                );
                self.json(200, json!({"status": "processing"}), &[])
            }
            "https://ca.test/order/1" => {
                if self.processing_polls > 0 {
                    self.processing_polls -= 1;
                    return self.json(
                        200,
                        json!({"status": "processing"}),
                        &[("Retry-After", "3")],
                    );
                }
                self.json(
                    200,
                    json!({"status": "valid", "certificate": "https://ca.test/cert/1"}),
                    &[],
                )
            }
            "https://ca.test/cert/1" => {
                assert_eq!(
                    crate::http::codec::header(&req.headers, "accept"),
                    Some("application/pem-certificate-chain")
                );
                let mut r = Response::new(
                    200,
                    "application/pem-certificate-chain",
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                );
                r.headers.push(self.nonce());
                r
            }
            u => panic!("unexpected POST {u}"),
        }
    }
}

fn key() -> AccountKey {
    let mut p = vec![4u8];
    p.extend((0..64).map(|i| i as u8));
    AccountKey::from_uncompressed(&p).unwrap()
}

fn config(kind: ChallengeKind) -> Arc<AcmeConfig> {
    let mut c = AcmeConfig::new(DIR, kind);
    c.contact = vec!["mailto:admin@example.org".into()];
    Arc::new(c)
}

/// Runs an order against `ca` on virtual time; the result and the time it took.
fn run(ca: &mut FakeCa, config: Arc<AcmeConfig>) -> (Result<Issued, AcmeError>, Duration) {
    let mut clock = TestClock::new();
    let start = clock.now();
    let mut o = AcmeOrder::new(
        config,
        key(),
        vec!["mail.example.org".into()],
        b"CSR-DER".to_vec(),
        clock.now(),
    );
    for _ in 0..1000 {
        match o.poll(clock.now()) {
            Output::Effect(t, Effect::Fetch(req)) => {
                let r = ca.answer(&req);
                o.handle(clock.now(), Input::Completed(t, Completion::Fetched(Ok(r))));
            }
            Output::Effect(t, Effect::Sign(input)) => {
                assert!(input.contains(&b'.'));
                o.handle(
                    clock.now(),
                    Input::Completed(t, Completion::Signed(vec![7; 64])),
                );
            }
            Output::Effect(t, Effect::Publish(c)) => {
                assert_eq!(c.identifier, "mail.example.org");
                assert_eq!(
                    c.key_authorization,
                    format!("tok-1_A.{}", key().thumbprint())
                );
                ca.log
                    .push(format!("PUBLISH {} {}", c.kind.name(), c.token));
                ca.published.push(c.token.clone());
                o.handle(clock.now(), Input::Completed(t, Completion::Published));
            }
            Output::Effect(_, Effect::Unpublish(c)) => {
                ca.log
                    .push(format!("UNPUBLISH {} {}", c.kind.name(), c.token));
                ca.published.retain(|t| *t != c.token);
            }
            Output::Event(e) => ca.log.push(format!("EVENT {e:?}")),
            Output::Idle { deadline, .. } => {
                let d = deadline.expect("an order always has a deadline");
                clock.set_mono(d);
                o.handle(clock.now(), Input::Timeout);
            }
            Output::Done => {
                let took = clock.now().mono - start.mono;
                return (o.take_result().unwrap(), took);
            }
        }
    }
    panic!("order did not finish");
}

fn lines(ca: &FakeCa) -> Vec<&str> {
    ca.log.iter().map(String::as_str).collect()
}

/// The whole flow, line by line: directory, nonce, account by jwk, order by kid, the
/// authorization, publish before the challenge response, polls, finalize with the CSR,
/// the order poll, the download; the challenge is taken away once validated.
#[test]
fn full_flow_tls_alpn() {
    let mut ca = FakeCa::new();
    let (r, took) = run(&mut ca, config(ChallengeKind::TlsAlpn01));
    let issued = r.unwrap();
    assert!(issued.chain_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(issued.account_url, "https://ca.test/acct/1");
    assert_eq!(
        lines(&ca),
        vec![
            "GET https://ca.test/dir",
            "GET https://ca.test/nonce",
            r#"POST /acct jwk {"contact":["mailto:admin@example.org"],"termsOfServiceAgreed":true}"#,
            r#"EVENT Account { url: "https://ca.test/acct/1", created: true }"#,
            r#"POST /order kid {"identifiers":[{"type":"dns","value":"mail.example.org"}]}"#,
            r#"EVENT Order { url: "https://ca.test/order/1" }"#,
            "POST /authz/1 kid ",
            "PUBLISH tls-alpn-01 tok-1_A",
            "POST /chall/tls-alpn-01 kid {}",
            "POST /authz/1 kid ",
            "POST /authz/1 kid ",
            "UNPUBLISH tls-alpn-01 tok-1_A",
            r#"EVENT Validated { identifier: "mail.example.org" }"#,
            r#"POST /finalize/1 kid {"csr":"Q1NSLURFUg"}"#,
            "POST /order/1 kid ",
            "POST /order/1 kid ",
            "POST /cert/1 kid ",
            r#"EVENT Issued { url: "https://ca.test/cert/1" }"#,
        ]
    );
    // Polls: 1 s after the response, 1 s after the pending poll, 1 s after finalize
    // (processing), 3 s after the processing poll (Retry-After).
    assert_eq!(took, Duration::from_secs(6));
}

/// http-01 picks the http-01 challenge; a reused (valid) authorization needs no
/// challenge at all.
#[test]
fn http01_and_reused_authorization() {
    let mut ca = FakeCa::new();
    let (r, _) = run(&mut ca, config(ChallengeKind::Http01));
    r.unwrap();
    assert!(lines(&ca).contains(&"PUBLISH http-01 tok-1_A"));
    assert!(lines(&ca).contains(&"POST /chall/http-01 kid {}"));

    let mut ca = FakeCa::new();
    ca.authz_valid = true;
    let (r, _) = run(&mut ca, config(ChallengeKind::Http01));
    r.unwrap();
    assert!(!ca
        .log
        .iter()
        .any(|l| l.contains("PUBLISH") || l.contains("/authz/")));
    assert!(lines(&ca).contains(&r#"POST /finalize/1 kid {"csr":"Q1NSLURFUg"}"#));
}

/// badNonce: the same request is signed again with the nonce of the error response (or
/// a fetched one when the error carries none), up to the limit; past it the error ends
/// the order.
#[test]
fn bad_nonce_retried() {
    let mut ca = FakeCa::new();
    ca.reject_nonces = 3;
    let (r, _) = run(&mut ca, config(ChallengeKind::TlsAlpn01));
    r.unwrap();
    let acct = ca
        .log
        .iter()
        .filter(|l| l.starts_with("POST /acct"))
        .count();
    assert_eq!(acct, 4, "{:?}", ca.log);
    assert_eq!(
        ca.log
            .iter()
            .filter(|l| l.contains("BadNonceRetry"))
            .count(),
        3
    );

    let mut ca = FakeCa::new();
    ca.reject_nonces = 2;
    ca.bad_nonce_without_new = true;
    let (r, _) = run(&mut ca, config(ChallengeKind::TlsAlpn01));
    r.unwrap();
    assert_eq!(
        ca.log
            .iter()
            .filter(|l| *l == "GET https://ca.test/nonce")
            .count(),
        3,
        "{:?}",
        ca.log
    );

    let mut ca = FakeCa::new();
    ca.reject_nonces = 100;
    let mut c = AcmeConfig::new(DIR, ChallengeKind::TlsAlpn01);
    c.max_bad_nonce_retries = 4;
    let (r, _) = run(&mut ca, Arc::new(c));
    let e = r.unwrap_err();
    assert!(e.to_string().contains("badNonce"), "{e}");
    assert_eq!(
        ca.log
            .iter()
            .filter(|l| l.starts_with("POST /acct"))
            .count(),
        5
    );
}

/// An invalid challenge ends the order with the CA's error detail, and the published
/// challenge is taken away.
#[test]
fn invalid_challenge_is_a_clear_error() {
    let mut ca = FakeCa::new();
    ca.authz_final = "invalid";
    let (r, _) = run(&mut ca, config(ChallengeKind::TlsAlpn01));
    let e = r.unwrap_err();
    assert!(
        matches!(&e, AcmeError::Authorization { identifier, status, .. } if identifier == "mail.example.org" && status == "invalid"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "acme: mail.example.org: authorization invalid: tls-alpn-01: unauthorized: wrong acmeIdentifier"
    );
    assert_eq!(ca.log.last().unwrap(), "UNPUBLISH tls-alpn-01 tok-1_A");
    assert!(ca.published.is_empty());
    assert!(!ca.log.iter().any(|l| l.contains("finalize")));
}

/// A CA that offers no challenge of the configured kind: the error names what it offers.
#[test]
fn no_challenge_of_kind() {
    let mut ca = FakeCa::new();
    ca.offered = vec!["dns-01"];
    let (r, _) = run(&mut ca, config(ChallengeKind::Http01));
    assert_eq!(
        r.unwrap_err().to_string(),
        "acme: mail.example.org: no http-01 challenge offered (offered: dns-01)"
    );
}

/// A rate limit ends the order with the server's problem and its Retry-After (seconds
/// or an HTTP date), which the schedule honours; Retry-After on polls sets the wait
/// (capped).
#[test]
fn rate_limit_and_retry_after() {
    let mut ca = FakeCa::new();
    ca.new_order_error = Some((429, "urn:ietf:params:acme:error:rateLimited", Some("7200")));
    let (r, _) = run(&mut ca, config(ChallengeKind::TlsAlpn01));
    let e = r.unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(7200)));
    assert_eq!(
        e.to_string(),
        "acme: https://ca.test/order: 429 rateLimited: too many certificates"
    );
    assert_eq!(retry_delay(1, e.retry_after()), Duration::from_secs(7200));

    // The test clock's wall time starts at a fixed point: a date 90 s later.
    let wall = TestClock::new().now().wall;
    let date = crate::http::server::http_date(wall.add(Duration::from_secs(90)));
    let date: &'static str = Box::leak(date.into_boxed_str());
    let mut ca = FakeCa::new();
    ca.new_order_error = Some((503, "urn:ietf:params:acme:error:serverInternal", Some(date)));
    let (r, _) = run(&mut ca, config(ChallengeKind::TlsAlpn01));
    assert_eq!(r.unwrap_err().retry_after(), Some(Duration::from_secs(90)));

    let mut ca = FakeCa::new();
    ca.poll_retry_after = Some("5");
    ca.processing_polls = 0;
    let (r, took) = run(&mut ca, config(ChallengeKind::TlsAlpn01));
    r.unwrap();
    // 1 s after the response, 5 s after the pending poll, 1 s after finalize.
    assert_eq!(took, Duration::from_secs(7));

    let mut ca = FakeCa::new();
    ca.poll_retry_after = Some("100000");
    ca.processing_polls = 0;
    let (r, took) = run(&mut ca, config(ChallengeKind::TlsAlpn01));
    r.unwrap();
    assert_eq!(took, Duration::from_secs(62), "capped at max_poll_interval");
}

/// An authorization that stays pending ends with the order's timeout; nothing is left
/// published.
#[test]
fn timeout_ends_the_order() {
    let mut ca = FakeCa::new();
    ca.pending_polls = u32::MAX;
    let mut c = AcmeConfig::new(DIR, ChallengeKind::TlsAlpn01);
    c.timeout = Duration::from_secs(30);
    let (r, took) = run(&mut ca, Arc::new(c));
    assert_eq!(r.unwrap_err(), AcmeError::Timeout(Duration::from_secs(30)));
    assert_eq!(took, Duration::from_secs(30));
    assert!(ca.published.is_empty());
}

/// Fetch failures and refused signatures end the order with the URL and reason; answers
/// with the wrong token are ignored.
#[test]
fn failures_and_stray_answers() {
    let clock = TestClock::new();
    let mut o = AcmeOrder::new(
        config(ChallengeKind::TlsAlpn01),
        key(),
        vec!["mail.example.org".into()],
        vec![],
        clock.now(),
    );
    let Output::Effect(t, Effect::Fetch(_)) = o.poll(clock.now()) else {
        panic!()
    };
    o.handle(
        clock.now(),
        Input::Completed(Token(99), Completion::Fetched(Err(FetchError::Timeout))),
    );
    assert!(matches!(o.poll(clock.now()), Output::Idle { .. }));
    o.handle(
        clock.now(),
        Input::Completed(
            t,
            Completion::Fetched(Err(FetchError::Connect("refused".into()))),
        ),
    );
    assert_eq!(o.poll(clock.now()), Output::Done);
    assert_eq!(
        o.take_result().unwrap().unwrap_err().to_string(),
        "acme: https://ca.test/dir: https fetch: connect: refused"
    );

    let mut o = AcmeOrder::new(
        config(ChallengeKind::TlsAlpn01),
        key(),
        vec![],
        vec![],
        clock.now(),
    );
    assert_eq!(o.poll(clock.now()), Output::Done);
    assert!(matches!(o.take_result(), Some(Err(AcmeError::Setup(_)))));

    // A directory that is not JSON.
    let mut o = AcmeOrder::new(
        config(ChallengeKind::TlsAlpn01),
        key(),
        vec!["a.example".into()],
        vec![],
        clock.now(),
    );
    let Output::Effect(t, _) = o.poll(clock.now()) else {
        panic!()
    };
    o.handle(
        clock.now(),
        Input::Completed(
            t,
            Completion::Fetched(Ok(Response::new(200, "text/html", "<html>"))),
        ),
    );
    assert_eq!(o.poll(clock.now()), Output::Done);
    let e = o.take_result().unwrap().unwrap_err();
    assert!(e.to_string().contains("invalid response: not JSON"), "{e}");
}

/// The JWS pieces: JWK member order, the RFC 7638 thumbprint of a known key, the
/// protected header with jwk or kid.
#[test]
fn jws_pieces() {
    // RFC 7638 has an RSA example only; this checks the form and that the thumbprint
    // is base64url SHA-256 of exactly that text.
    let k = key();
    let jwk = k.jwk();
    assert!(
        jwk.starts_with(r#"{"crv":"P-256","kty":"EC","x":""#),
        "{jwk}"
    );
    let want = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, jwk.as_bytes()));
    assert_eq!(k.thumbprint(), want);
    assert_eq!(k.key_authorization("abc"), format!("abc.{want}"));
    let u = Unsigned::new(Signer::Kid("https://x/acct/1"), "N1", "https://x/o", "");
    let h: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&u.protected).unwrap()).unwrap();
    assert_eq!(
        h,
        json!({"alg": "ES256", "kid": "https://x/acct/1", "nonce": "N1", "url": "https://x/o"})
    );
    assert_eq!(u.payload, "");
    assert_eq!(u.signing_input(), format!("{}.", u.protected).into_bytes());
    assert!(AccountKey::from_uncompressed(&[4; 64]).is_none());
    assert!(AccountKey::from_uncompressed(&[2; 65]).is_none());
}

/// Renewal: `renew_before` ahead of expiry, never sooner than the minimum interval after
/// issue; failures back off from a minute, doubling, to six hours, or as long as the
/// server asked.
#[test]
fn schedule() {
    let day = Duration::from_secs(86_400);
    let issued = UnixTime(1_000_000);
    let not_after = issued.add(day * 90);
    let min = Duration::from_secs(3600);
    assert_eq!(
        renew_at(issued, not_after, day * 30, min),
        issued.add(day * 60)
    );
    assert_eq!(
        renew_at(issued, not_after, day * 100, min),
        issued.add(min),
        "renew_before longer than the lifetime"
    );
    assert_eq!(retry_delay(1, None), Duration::from_secs(60));
    assert_eq!(retry_delay(2, None), Duration::from_secs(120));
    assert_eq!(retry_delay(5, None), Duration::from_secs(960));
    assert_eq!(retry_delay(30, None), RETRY_MAX);
    assert_eq!(retry_delay(u32::MAX, None), RETRY_MAX);
    assert_eq!(
        retry_delay(1, Some(Duration::from_secs(30))),
        Duration::from_secs(60)
    );
    assert_eq!(
        parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
        Some(UnixTime(784111777))
    );
    assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37"), None);
    assert_eq!(parse_http_date("junk"), None);
}
