//! The answers of rmox's HTTP listeners: requests routed by host and path. Two routes:
//! each hosted domain's MTA-STS policy (RFC 8461 3.3) at
//! `https://mta-sts.DOMAIN/.well-known/mta-sts.txt`, and the key authorizations of ACME
//! `http-01` challenges (RFC 8555 8.3) at `/.well-known/acme-challenge/TOKEN` on any host
//! while their order runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use rmox_core::http::{Header, RequestHead, Response};
use rmox_core::tlspolicy::mtasts::StsPolicy;

use crate::config::{Config, ConfigError};

/// The well-known path of an MTA-STS policy.
pub const POLICY_PATH: &str = "/.well-known/mta-sts.txt";

/// A policy as served: its text and the id for the `_mta-sts` TXT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServedPolicy {
    /// The policy file text (CRLF line endings).
    pub text: String,
    /// The record's `id`: derived from the text, so it changes when the policy does.
    pub id: String,
}

impl ServedPolicy {
    /// The policy as served, from its parsed form.
    pub fn new(p: &StsPolicy) -> ServedPolicy {
        let text = p.to_text();
        let id = policy_id(&text);
        ServedPolicy { text, id }
    }

    /// The TXT record to publish at `_mta-sts.DOMAIN` (RFC 8461 3.1).
    pub fn record(&self) -> String {
        format!("v=STSv1; id={}", self.id)
    }
}

/// The `id` of a policy text: 20 hex digits of its SHA-256 (RFC 8461 3.1 allows 1 to 32
/// letters and digits).
pub fn policy_id(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    d.as_ref()[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Answers requests on HTTP listeners from the configuration.
#[derive(Debug, Default)]
pub struct Web {
    /// Host name (`mta-sts.DOMAIN`, lower case) -> policy.
    policies: BTreeMap<String, ServedPolicy>,
    /// The `http-01` challenges being answered.
    http01: Option<Arc<crate::acme::Http01>>,
}

impl Web {
    /// The routes of `c`: the policy of every domain with `[domain.X.mta_sts]`.
    pub fn new(c: &Config) -> Result<Web, ConfigError> {
        let mut policies = BTreeMap::new();
        for d in c.domain.keys() {
            if let Some(p) = c.mta_sts_policy(d)? {
                policies.insert(
                    format!("mta-sts.{}", d.to_ascii_lowercase()),
                    ServedPolicy::new(&p),
                );
            }
        }
        Ok(Web {
            policies,
            http01: None,
        })
    }

    /// Answers the `http-01` challenges in `h` too.
    pub fn with_http01(mut self, h: Arc<crate::acme::Http01>) -> Web {
        self.http01 = Some(h);
        self
    }

    /// The domains with a policy and the policy as served.
    pub fn policies(&self) -> impl Iterator<Item = (&str, &ServedPolicy)> {
        self.policies
            .iter()
            .map(|(h, p)| (h.strip_prefix("mta-sts.").unwrap_or(h), p))
    }

    /// The response to a request: the policy for `GET`/`HEAD` of its path on its host, 404
    /// for another host or path, 405 for another method.
    pub fn route(&self, head: &RequestHead) -> Response {
        let host = head.header("host").map(host_name).unwrap_or_default();
        let is_get =
            head.method.eq_ignore_ascii_case("GET") || head.method.eq_ignore_ascii_case("HEAD");
        let path = head.target.split(['?', '#']).next().unwrap_or_default();
        if let Some(token) = path.strip_prefix(rmox_core::acme::HTTP01_PREFIX) {
            let answer = self.http01.as_ref().and_then(|h| h.answer(token));
            return match answer {
                Some(_) if !is_get => method_not_allowed(),
                Some(k) => Response::new(200, "application/octet-stream", k),
                None => text(404, "not found\n"),
            };
        }
        let Some(p) = self.policies.get(&host).filter(|_| path == POLICY_PATH) else {
            return text(404, "not found\n");
        };
        if !is_get {
            return method_not_allowed();
        }
        text(200, &p.text)
    }
}

/// A `Host` header value as a lower-case host name: without port and trailing dot.
fn host_name(v: &str) -> String {
    let v = v.trim();
    let h = match v.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|c| c.is_ascii_digit()) => h,
        _ => v,
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

fn method_not_allowed() -> Response {
    let mut r = text(405, "method not allowed\n");
    r.headers.push(Header::new("Allow", "GET, HEAD"));
    r
}

fn text(status: u16, body: &str) -> Response {
    Response::new(status, "text/plain; charset=utf-8", body)
}

impl rmox_driver::http::HttpAnswerer for Web {
    fn answer(&self, remote: SocketAddr, head: RequestHead, body: Vec<u8>) -> Response {
        // Never called: every answer is from configuration (`answer_now`).
        self.answer_now(remote, &head, &body)
            .unwrap_or_else(|| text(500, "internal error\n"))
    }

    fn answer_now(&self, remote: SocketAddr, head: &RequestHead, _body: &[u8]) -> Option<Response> {
        let r = self.route(head);
        tracing::info!(
            %remote,
            host = head.header("host").unwrap_or(""),
            method = %head.method,
            target = %head.target,
            status = r.status,
            "http request"
        );
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!(
            "hostname = \"mail.example.org\"\ndata_dir = \"data\"\n\
             [[listener]]\nname = \"l\"\nip = \"127.0.0.1\"\n\
             tls = {{ cert_file = \"c.pem\", key_file = \"k.pem\" }}\n\
             mta_sts = {{ port = 443 }}\n\
             [domain.\"example.org\"]\n[domain.\"other.example\"]\n{extra}"
        );
        Config::parse(&text, Path::new("rmox.toml")).unwrap()
    }

    fn req(method: &str, target: &str, host: Option<&str>) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            minor: 1,
            headers: host.map(|h| Header::new("Host", h)).into_iter().collect(),
        }
    }

    /// Routing table: (method, target, host) -> status.
    #[test]
    fn routes() {
        let web = Web::new(&config(
            "[domain.\"example.org\".mta_sts]\nmode = \"enforce\"\nmx = [\"mx.example.org\", \"*.mx.example.org\"]\n",
        ))
        .unwrap();
        let cases: &[(&str, &str, Option<&str>, u16)] = &[
            ("GET", POLICY_PATH, Some("mta-sts.example.org"), 200),
            ("GET", POLICY_PATH, Some("MTA-STS.Example.ORG:443"), 200),
            ("GET", POLICY_PATH, Some("mta-sts.example.org."), 200),
            ("HEAD", POLICY_PATH, Some("mta-sts.example.org"), 200),
            (
                "GET",
                "/.well-known/mta-sts.txt?x=1",
                Some("mta-sts.example.org"),
                200,
            ),
            ("POST", POLICY_PATH, Some("mta-sts.example.org"), 405),
            ("PUT", POLICY_PATH, Some("mta-sts.example.org"), 405),
            // A domain without a policy, another host, no host.
            ("GET", POLICY_PATH, Some("mta-sts.other.example"), 404),
            ("GET", POLICY_PATH, Some("example.org"), 404),
            ("GET", POLICY_PATH, None, 404),
            ("GET", "/", Some("mta-sts.example.org"), 404),
            (
                "GET",
                "/.well-known/mta-sts.txt/x",
                Some("mta-sts.example.org"),
                404,
            ),
            ("POST", "/other", Some("mta-sts.example.org"), 404),
        ];
        for (m, t, h, want) in cases {
            let r = web.route(&req(m, t, *h));
            assert_eq!(r.status, *want, "{m} {t} {h:?}");
            assert_eq!(r.content_type(), Some("text/plain; charset=utf-8"));
        }
        let r = web.route(&req("POST", POLICY_PATH, Some("mta-sts.example.org")));
        assert_eq!(
            rmox_core::http::codec::header(&r.headers, "allow"),
            Some("GET, HEAD")
        );
    }

    /// `http-01`: a published token's key authorization on any host (GET/HEAD), as
    /// application/octet-stream; 404 once taken away or for another token; 405 for
    /// other methods; the policy routes are unchanged.
    #[test]
    fn acme_http01_route() {
        let h = Arc::new(crate::acme::Http01::default());
        let web = Web::new(&config(
            "[domain.\"example.org\".mta_sts]\nmode = \"enforce\"\n",
        ))
        .unwrap()
        .with_http01(Arc::clone(&h));
        let path = "/.well-known/acme-challenge/tok_1";
        assert_eq!(
            web.route(&req("GET", path, Some("mail.example.org")))
                .status,
            404
        );
        h.set("tok_1", Some("tok_1.thumb".into()));
        for host in [Some("mail.example.org"), Some("other.example:80"), None] {
            let r = web.route(&req("GET", path, host));
            assert_eq!(
                (r.status, r.body.as_slice()),
                (200, &b"tok_1.thumb"[..]),
                "{host:?}"
            );
            assert_eq!(r.content_type(), Some("application/octet-stream"));
        }
        assert_eq!(web.route(&req("HEAD", path, None)).status, 200);
        assert_eq!(web.route(&req("POST", path, None)).status, 405);
        assert_eq!(
            web.route(&req("GET", "/.well-known/acme-challenge/other", None))
                .status,
            404
        );
        assert_eq!(
            web.route(&req("GET", POLICY_PATH, Some("mta-sts.example.org")))
                .status,
            200
        );
        h.set("tok_1", None);
        assert_eq!(web.route(&req("GET", path, None)).status, 404);
        // Without http-01 answers (the mta_sts port of a server with no ACME) the same.
        let plain = Web::new(&config("")).unwrap();
        assert_eq!(plain.route(&req("GET", path, None)).status, 404);
    }

    /// The served text is an RFC 8461 policy that core's parser reads back as configured;
    /// mx defaults to the host name and max_age to a day.
    #[test]
    fn policy_text_parses() {
        let web = Web::new(&config(
            "[domain.\"example.org\".mta_sts]\nmode = \"testing\"\nmax_age = 604800\nmx = [\"*.Example.org\"]\n\
             [domain.\"other.example\".mta_sts]\nmode = \"enforce\"\n",
        ))
        .unwrap();
        let r = web.route(&req("GET", POLICY_PATH, Some("mta-sts.example.org")));
        let p = StsPolicy::parse(&r.body).unwrap();
        assert_eq!(p.mode, rmox_core::tlspolicy::mtasts::Mode::Testing);
        assert_eq!(p.max_age, 604800);
        assert!(p.matches_mx("mx1.example.org"));
        assert!(!p.matches_mx("example.org"));
        let r = web.route(&req("GET", POLICY_PATH, Some("mta-sts.other.example")));
        let p = StsPolicy::parse(&r.body).unwrap();
        assert_eq!(p.mode, rmox_core::tlspolicy::mtasts::Mode::Enforce);
        assert_eq!(p.max_age, 86400);
        assert!(p.matches_mx("mail.example.org"));
        assert_eq!(p.mx.len(), 1);
    }

    /// The id changes whenever the policy text does, stays the same otherwise, and is a
    /// valid record id (1 to 32 letters and digits).
    #[test]
    fn id_follows_policy() {
        let id = |extra: &str| {
            let web = Web::new(&config(extra)).unwrap();
            let (d, p) = web.policies().next().unwrap();
            assert_eq!(d, "example.org");
            let rec = rmox_core::tlspolicy::mtasts::StsRecord::parse(&p.record()).unwrap();
            assert_eq!(rec.id, p.id);
            p.id.clone()
        };
        let a = id("[domain.\"example.org\".mta_sts]\nmode = \"enforce\"\n");
        assert_eq!(
            a,
            id("[domain.\"example.org\".mta_sts]\nmode = \"enforce\"\n")
        );
        assert!(a.len() <= 32 && a.bytes().all(|c| c.is_ascii_alphanumeric()));
        let b = id("[domain.\"example.org\".mta_sts]\nmode = \"testing\"\n");
        let c = id("[domain.\"example.org\".mta_sts]\nmode = \"enforce\"\nmax_age = 3600\n");
        let d = id(
            "[domain.\"example.org\".mta_sts]\nmode = \"enforce\"\nmx = [\"mx2.example.org\"]\n",
        );
        assert!(a != b && a != c && a != d && b != c && c != d);
    }

    /// Invalid policies and listeners are refused with the key and value named.
    #[test]
    fn config_errors() {
        let err = |text: &str| {
            Config::parse(text, Path::new("rmox.toml"))
                .unwrap_err()
                .to_string()
        };
        let base = "hostname = \"mail.example.org\"\ndata_dir = \"data\"\n";
        let tls = "tls = { cert_file = \"c.pem\", key_file = \"k.pem\" }\n";
        let e = err(&format!(
            "{base}[[listener]]\nname = \"l\"\nip = \"127.0.0.1\"\nmta_sts = {{ port = 443 }}\n"
        ));
        assert!(
            e.contains("listener[0].mta_sts") && e.contains("tls"),
            "{e}"
        );
        let e = err(&format!(
            "{base}[[listener]]\nname = \"l\"\nip = \"127.0.0.1\"\n{tls}smtp = {{ port = 25 }}\nmta_sts = {{ port = 25 }}\n"
        ));
        assert!(
            e.contains("listener[0].mta_sts.port") && e.contains("also"),
            "{e}"
        );
        let l = format!(
            "[[listener]]\nname = \"l\"\nip = \"127.0.0.1\"\n{tls}mta_sts = {{ port = 443 }}\n"
        );
        let e = err(&format!(
            "{base}{l}[domain.\"example.org\".mta_sts]\nmode = \"enforce\"\nmx = [\"bad host\"]\n"
        ));
        assert!(
            e.contains("domain.\"example.org\".mta_sts.mx") && e.contains("bad host"),
            "{e}"
        );
        let e = err(&format!(
            "{base}{l}[domain.\"example.org\".mta_sts]\nmode = \"enforce\"\nmax_age = 99999999999\n"
        ));
        assert!(
            e.contains("mta_sts.max_age") && e.contains("99999999999"),
            "{e}"
        );
        let e = err(&format!(
            "{base}{l}[domain.\"example.org\".mta_sts]\nmode = \"strict\"\n"
        ));
        assert!(e.contains("strict"), "{e}");
        let e = err(&format!(
            "{base}[domain.\"example.org\".mta_sts]\nmode = \"enforce\"\n"
        ));
        assert!(
            e.contains("domain.\"example.org\".mta_sts") && e.contains("no listener"),
            "{e}"
        );
        let e = err(&format!("{base}[limits]\nhttp_max_headers = 0\n"));
        assert!(e.contains("limits.http_max_headers"), "{e}");
    }
}
