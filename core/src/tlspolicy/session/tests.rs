//! Transcript and table tests of the TLS policy machine, driven by canned worlds: DNS
//! answers (with and without the AD bit), a policy cache, policy fetch results, virtual time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::testkit::{self, TestClock};
use crate::tlspolicy::{ReportScope, ResultType};
use std::collections::HashMap;

fn lk(name: &str, rtype: RecordType) -> Lookup {
    Lookup {
        name: name.into(),
        rtype,
    }
}

fn rtype_name(t: RecordType) -> &'static str {
    match t {
        RecordType::A => "A",
        RecordType::Aaaa => "AAAA",
        RecordType::Mx => "MX",
        RecordType::Txt => "TXT",
        RecordType::Ptr => "PTR",
        RecordType::Cname => "CNAME",
        RecordType::Tlsa => "TLSA",
    }
}

/// A canned outside world.
#[derive(Clone)]
struct World {
    dns: HashMap<Lookup, LookupResult>,
    cache: BTreeMap<String, StsCacheEntry>,
    /// Fetch results by URL; a URL not here is never answered.
    fetch: HashMap<String, Result<FetchResponse, FetchError>>,
    config: PolicyConfig,
    /// DNS questions batched with one of these are never answered.
    silent: Vec<Lookup>,
}

/// What one run produced.
struct Run {
    transcript: Vec<String>,
    verdicts: Vec<HostVerdict>,
    session: PolicySession,
    elapsed: Duration,
}

impl Run {
    fn verdict(&self, host: &str) -> String {
        self.verdicts
            .iter()
            .rev()
            .find(|v| v.host == host)
            .map(|v| v.requirement.to_string())
            .unwrap_or_else(|| format!("no verdict for {host}"))
    }
}

fn records(authentic: bool, records: Vec<Record>) -> LookupResult {
    LookupResult::Records { records, authentic }
}

fn txt(s: &str) -> Record {
    Record::Txt(vec![s.as_bytes().to_vec()])
}

fn tlsa(usage: u8) -> Record {
    Record::Tlsa {
        usage,
        selector: 1,
        matching: 1,
        data: vec![7; 32],
    }
}

/// How the harness serves a policy (`up.sh`: CRLF, max_age 86400).
fn policy_body(mode: &str, mx: &[&str]) -> Vec<u8> {
    let mut s = format!("version: STSv1\r\nmode: {mode}\r\n");
    for m in mx {
        s.push_str(&format!("mx: {m}\r\n"));
    }
    s.push_str("max_age: 86400\r\n");
    s.into_bytes()
}

fn served(body: Vec<u8>) -> Result<FetchResponse, FetchError> {
    Ok(FetchResponse {
        status: 200,
        content_type: Some("text/plain; charset=utf-8".into()),
        body,
    })
}

const STS_ID: &str = "20240101T000000";

impl World {
    fn new() -> World {
        let mut config = PolicyConfig::new(true);
        config.pkix = Some(testkit::client_tls());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(
                testkit::server_cert_der(),
            ))
            .unwrap();
        config.pkix_roots = Some(Arc::new(roots));
        World {
            dns: HashMap::new(),
            cache: BTreeMap::new(),
            fetch: HashMap::new(),
            config,
            silent: Vec::new(),
        }
    }

    fn set(&mut self, name: &str, rtype: RecordType, r: LookupResult) -> &mut World {
        self.dns.insert(lk(name, rtype), r);
        self
    }

    /// A domain with one MX host and its A record, signed or not.
    fn mx(&mut self, domain: &str, host: &str, signed: bool) -> &mut World {
        self.set(
            domain,
            RecordType::Mx,
            records(
                signed,
                vec![Record::Mx {
                    preference: 10,
                    host: host.into(),
                }],
            ),
        );
        self.set(
            host,
            RecordType::A,
            records(signed, vec![Record::A([127, 10, 0, 1].into())]),
        )
    }

    /// An `_mta-sts` record and the policy served for it.
    fn sts(&mut self, domain: &str, id: &str, fetch: Result<FetchResponse, FetchError>) {
        self.set(
            &record_name(domain),
            RecordType::Txt,
            records(false, vec![txt(&format!("v=STSv1; id={id};"))]),
        );
        self.fetch.insert(policy_url(domain), fetch);
    }

    fn lookup(&self, l: &Lookup) -> LookupResult {
        self.dns.get(l).cloned().unwrap_or(LookupResult::NxDomain)
    }

    /// Runs the machine for `domain`, asking for each host in turn and driving it until
    /// the host's verdict (or until nothing is left to wait for).
    fn run(&mut self, domain: &str, hosts: &[&str], msg: MessageTls) -> Run {
        self.run_at(domain, hosts, msg, &mut TestClock::new())
    }

    fn run_at(
        &mut self,
        domain: &str,
        hosts: &[&str],
        msg: MessageTls,
        clock: &mut TestClock,
    ) -> Run {
        let start = clock.now().mono;
        let mut s = PolicySession::new(Arc::new(self.config.clone()), domain, msg, clock.now());
        let mut transcript = Vec::new();
        let mut verdicts = Vec::new();
        let mut completions: VecDeque<(Token, Completion)> = VecDeque::new();
        for host in hosts {
            s.handle(clock.now(), Input::Ask(host.to_string())).unwrap();
            let mut got = false;
            for _ in 0..1000 {
                let now = clock.now();
                let deadline = loop {
                    match s.poll(now) {
                        Output::Effect(t, Effect::Dns(ls)) => {
                            transcript.push(format!(
                                "dns {}",
                                ls.iter()
                                    .map(|l| format!("{} {}", rtype_name(l.rtype), l.name))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ));
                            let r = ls.iter().map(|l| self.lookup(l)).collect();
                            if !ls.iter().any(|l| self.silent.contains(l)) {
                                completions.push_back((t, Completion::Dns(r)));
                            }
                        }
                        Output::Effect(t, Effect::CacheGet { domain }) => {
                            transcript.push(format!("cache get {domain}"));
                            let e = self.cache.get(&domain).cloned();
                            completions.push_back((t, Completion::Cached(e)));
                        }
                        Output::Effect(t, Effect::Fetch(req)) => {
                            transcript.push(format!("fetch {}", req.url));
                            assert_eq!(req.max_body, MAX_POLICY_SIZE);
                            assert_eq!(req.host, format!("mta-sts.{domain}"));
                            if let Some(r) = self.fetch.get(&req.url) {
                                completions.push_back((t, Completion::Fetched(r.clone())));
                            }
                        }
                        Output::Cache(u) => match u {
                            CacheUpdate::Put(e) => {
                                transcript.push(format!("cache put {} id={}", e.domain, e.id));
                                self.cache.insert(e.domain.clone(), e);
                            }
                            CacheUpdate::Drop { domain } => {
                                transcript.push(format!("cache drop {domain}"));
                                self.cache.remove(&domain);
                            }
                            CacheUpdate::Used { domain, .. } => {
                                transcript.push(format!("cache used {domain}"))
                            }
                        },
                        Output::Verdict(v) => {
                            transcript.push(format!("verdict {} {}", v.host, v.requirement));
                            if v.host == *host {
                                got = true;
                            }
                            verdicts.push(*v);
                        }
                        Output::Idle { deadline } => break deadline,
                    }
                };
                if got {
                    break;
                }
                if let Some((t, c)) = completions.pop_front() {
                    s.handle(clock.now(), Input::Completed(t, c)).unwrap();
                    continue;
                }
                match deadline {
                    Some(at) => {
                        clock.set_mono(at);
                        s.handle(clock.now(), Input::Timeout).unwrap();
                    }
                    None => break,
                }
            }
        }
        Run {
            transcript,
            verdicts,
            session: s,
            elapsed: clock.now().mono.duration_since(start),
        }
    }
}

/// The harness world (../shared/harness/README.md section 3, lib/gen-dns.sh, up.sh):
/// example.org unsigned with MTA-STS policies, dane.example signed, bogus.example bogus.
fn harness() -> World {
    let mut w = World::new();
    let served_policy = |mode, mx: &[&str]| served(policy_body(mode, mx));
    w.mx("example.org", "mx1.example.org", false);
    w.set(
        "example.org",
        RecordType::Mx,
        records(
            false,
            vec![
                Record::Mx {
                    preference: 10,
                    host: "mx1.example.org".into(),
                },
                Record::Mx {
                    preference: 20,
                    host: "mx2.example.org".into(),
                },
            ],
        ),
    );
    w.sts(
        "example.org",
        STS_ID,
        served_policy("enforce", &["mx1.example.org", "mx2.example.org"]),
    );
    w.mx("pf.example.org", "mx2.example.org", false);
    w.mx("notls.example.org", "mx-notls.example.org", false);
    w.mx("multi.example.org", "dead.example.org", false);
    w.mx("blackhole.example.org", "mx-blackhole.example.org", false);
    w.mx("sts-mismatch.example.org", "mx1.example.org", false);
    w.sts(
        "sts-mismatch.example.org",
        STS_ID,
        served_policy("enforce", &["other.example.org"]),
    );
    w.mx("sts-notls.example.org", "mx-notls.example.org", false);
    w.sts(
        "sts-notls.example.org",
        STS_ID,
        served_policy("enforce", &["mx-notls.example.org"]),
    );
    w.mx(
        "sts-testing.example.org",
        "mx-selfsigned.example.org",
        false,
    );
    w.sts(
        "sts-testing.example.org",
        STS_ID,
        served_policy("testing", &["mx-selfsigned.example.org"]),
    );
    w.mx("sts-badcert.example.org", "mx1.example.org", false);
    w.sts(
        "sts-badcert.example.org",
        STS_ID,
        Err(FetchError::WebPki(
            "invalid peer certificate: UnknownIssuer".into(),
        )),
    );
    for (domain, host, usage) in [
        ("dane.example", "mx.dane.example", 3),
        ("ta.dane.example", "mx.ta.dane.example", 2),
        ("bad.dane.example", "mx.bad.dane.example", 3),
    ] {
        w.mx(domain, host, true);
        w.set(
            &format!("_25._tcp.{host}"),
            RecordType::Tlsa,
            records(true, vec![tlsa(usage)]),
        );
        w.set(host, RecordType::Cname, LookupResult::NoData);
        w.set(host, RecordType::Aaaa, LookupResult::NoData);
    }
    let bogus = || LookupResult::TempFail("server failure (SERVFAIL)".into());
    w.set("bogus.example", RecordType::Mx, bogus());
    w.set("_mta-sts.bogus.example", RecordType::Txt, bogus());
    w
}

/// Every harness scenario domain through the machine, against the reference Postfix table
/// (harness README section 4) plus the MTA-STS verdicts Postfix lacks:
/// * example.org: Postfix "Trusted TLS" (opportunistic, verified by chance); here MTA-STS
///   enforce makes WebPKI verification mandatory.
/// * sts-mismatch, sts-notls: Postfix would deliver (it has no MTA-STS); here the host is
///   skipped (mismatch) or STARTTLS with WebPKI is required (the client then fails on the
///   host without STARTTLS).
/// * sts-testing: Postfix "Untrusted TLS"; here delivered too, under the `sts` policy, with
///   the failure to report.
/// * sts-badcert: no policy (the fetch failed), delivered as without MTA-STS, and the
///   fetch failure (`sts-webpki-invalid`) is reported.
/// * dane.example, ta.dane.example: Postfix "Verified": DANE required here.
/// * bad.dane.example: Postfix defers 4.7.5 in the handshake: DANE required here, the
///   handshake check refuses the certificate (delivery tests: dane_verdict_per_host).
/// * bogus.example: Postfix defers 4.4.3 at the MX lookup (so does the MX plan here); the
///   policy machine on its own defers the host too.
#[test]
fn harness_verdicts() {
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
            "blackhole.example.org",
            &["mx-blackhole.example.org"],
            "opportunistic/none/deliver/no-policy-found",
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
    for (domain, hosts, want, fetch_failure) in rows {
        let mut w = harness();
        let r = w.run(domain, hosts, MessageTls::Default);
        let got: Vec<String> = hosts.iter().map(|h| r.verdict(h)).collect();
        assert_eq!(got.join("|"), *want, "{domain}: {:#?}", r.transcript);
        let failure = r
            .session
            .fetch_failure()
            .and_then(|f| f.failure.map(|d| d.result_type));
        assert_eq!(failure, *fetch_failure, "{domain}");
    }
}

/// REQUIRETLS and `TLS-Required: No` over the same scenarios: only the MTA-STS and DANE
/// domains can carry a REQUIRETLS message; the header relaxes every policy.
#[test]
fn harness_verdicts_requiretls() {
    let rows: &[(&str, &str, &str, &str)] = &[
        (
            "example.org",
            "mx1.example.org",
            "required/webpki=mx1.example.org/abort/sts/requiretls",
            "opportunistic/webpki=mx1.example.org/deliver/sts",
        ),
        (
            "pf.example.org",
            "mx2.example.org",
            "fail:5.7.10",
            "opportunistic/none/deliver/no-policy-found",
        ),
        (
            "sts-mismatch.example.org",
            "mx1.example.org",
            "skip:mismatch",
            "opportunistic/webpki=mx1.example.org/deliver/sts",
        ),
        (
            "sts-testing.example.org",
            "mx-selfsigned.example.org",
            "required/webpki=mx-selfsigned.example.org/abort/sts/requiretls",
            "opportunistic/webpki=mx-selfsigned.example.org/deliver/sts",
        ),
        (
            "sts-badcert.example.org",
            "mx1.example.org",
            "fail:5.7.10",
            "opportunistic/none/deliver/no-policy-found",
        ),
        (
            "dane.example",
            "mx.dane.example",
            "required/dane=mx.dane.example/abort/tlsa/requiretls",
            "opportunistic/dane=mx.dane.example/deliver/tlsa",
        ),
        (
            "bogus.example",
            "mx.bogus.example",
            "skip:dane-tempfail",
            "opportunistic/none/deliver/no-policy-found",
        ),
    ];
    for (domain, host, want_req, want_no) in rows {
        let r = harness().run(domain, &[host], MessageTls::RequireTls);
        assert_eq!(r.verdict(host), *want_req, "REQUIRETLS {domain}");
        let r = harness().run(domain, &[host], MessageTls::TlsRequiredNo);
        assert_eq!(r.verdict(host), *want_no, "TLS-Required: No {domain}");
        // DANE under `TLS-Required: No` still verifies, reporting a failure.
        if want_no.contains("dane=") {
            let HostTls::Connect(c) = &r.verdicts[0].host_tls else {
                panic!("{domain}")
            };
            assert!(
                matches!(&c.verify, Verify::DaneReport(d) if !d.records.is_empty()),
                "{domain}"
            );
        }
    }
}

/// The whole conversation for an MTA-STS domain: record, MX and cache at once, one fetch,
/// the cache written, WebPKI for every host with one set of domain lookups; the second
/// delivery uses the cache without a fetch.
#[test]
fn transcript_sts_fetch_then_cache() {
    let mut w = harness();
    let r = w.run(
        "example.org",
        &["mx1.example.org", "mx2.example.org"],
        MessageTls::Default,
    );
    assert_eq!(
        r.transcript,
        [
            "dns TXT _mta-sts.example.org, MX example.org",
            "cache get example.org",
            "fetch https://mta-sts.example.org/.well-known/mta-sts.txt",
            "cache put example.org id=20240101T000000",
            "verdict mx1.example.org required/webpki=mx1.example.org/abort/sts",
            "verdict mx2.example.org required/webpki=mx2.example.org/abort/sts",
        ]
    );
    let v = &r.verdicts[0];
    let HostTls::Connect(c) = &v.host_tls else {
        panic!("{:?}", v.host_tls)
    };
    assert_eq!(c.mode, TlsMode::RequiredStartTls);
    assert!(matches!(c.verify, Verify::Pkix(_)));
    assert_eq!(c.policy, TlsPolicyKind::Sts);
    let p = v.report_policy("example.org");
    assert_eq!(p.policy_type, PolicyType::Sts);
    assert_eq!(p.mx_host, ["mx1.example.org", "mx2.example.org"]);
    assert_eq!(
        r.session.sts().map(|(_, s)| s.clone()),
        Some(PolicySource::Fetched)
    );
    // The cache as stored parses back to the same policy.
    let e = w.cache.get("example.org").unwrap();
    assert_eq!(e.expires.0 - e.fetched.0, 86400);
    assert_eq!(e.to_cached().unwrap().policy, v.sts.clone().unwrap());

    let r = w.run("example.org", &["mx1.example.org"], MessageTls::Default);
    assert_eq!(
        r.transcript,
        [
            "dns TXT _mta-sts.example.org, MX example.org",
            "cache get example.org",
            "cache used example.org",
            "verdict mx1.example.org required/webpki=mx1.example.org/abort/sts",
        ]
    );
    assert_eq!(
        r.session.sts().map(|(_, s)| s.clone()),
        Some(PolicySource::Cache)
    );
}

/// Cache rules through the machine: a new record id refetches and replaces the cache; a
/// failed refetch keeps using the valid cached policy and reports the failure; a record
/// that is gone drops a cached mode none policy; an expired cache is refetched.
#[test]
fn cache_rules() {
    let mut w = harness();
    w.run("example.org", &["mx1.example.org"], MessageTls::Default);
    // New id: fetch, replace.
    w.sts(
        "example.org",
        "new",
        served(policy_body("testing", &["mx1.example.org"])),
    );
    let r = w.run("example.org", &["mx1.example.org"], MessageTls::Default);
    assert!(r
        .transcript
        .contains(&"cache put example.org id=new".into()));
    assert_eq!(
        r.verdict("mx1.example.org"),
        "opportunistic/webpki=mx1.example.org/deliver/sts"
    );
    // Another new id, the fetch fails: the cached (valid) policy applies, failure reported.
    w.sts(
        "example.org",
        "newer",
        Err(FetchError::Fetch("connection refused".into())),
    );
    let r = w.run("example.org", &["mx1.example.org"], MessageTls::Default);
    assert_eq!(
        r.verdict("mx1.example.org"),
        "opportunistic/webpki=mx1.example.org/deliver/sts"
    );
    assert!(matches!(
        r.session.sts(),
        Some((Some(_), PolicySource::CacheFetchFailed(_)))
    ));
    let f = r.session.fetch_failure().unwrap();
    assert_eq!(
        f.failure.unwrap().result_type,
        ResultType::StsPolicyFetchError
    );
    assert_eq!(w.cache.get("example.org").unwrap().id, "new");
    // A mode none policy cached, then the record removed: the cache entry is dropped.
    w.sts(
        "example.org",
        "none1",
        served(b"version: STSv1\nmode: none\nmax_age: 600\n".to_vec()),
    );
    let r = w.run("example.org", &["mx1.example.org"], MessageTls::Default);
    assert_eq!(
        r.verdict("mx1.example.org"),
        "opportunistic/none/deliver/no-policy-found"
    );
    w.dns.remove(&lk("_mta-sts.example.org", RecordType::Txt));
    let r = w.run("example.org", &["mx1.example.org"], MessageTls::Default);
    assert!(
        r.transcript.contains(&"cache drop example.org".into()),
        "{:#?}",
        r.transcript
    );
    assert!(w.cache.is_empty());
    // Expired cache with the same id: fetched again.
    w.sts(
        "example.org",
        STS_ID,
        served(policy_body("enforce", &["mx1.example.org"])),
    );
    let mut clock = TestClock::new();
    w.run_at(
        "example.org",
        &["mx1.example.org"],
        MessageTls::Default,
        &mut clock,
    );
    clock.advance(Duration::from_secs(86400));
    let r = w.run_at(
        "example.org",
        &["mx1.example.org"],
        MessageTls::Default,
        &mut clock,
    );
    assert!(
        r.transcript.iter().any(|l| l.starts_with("fetch ")),
        "{:#?}",
        r.transcript
    );
}

/// Responses that are not a policy: a redirect, a wrong content type, a body that does not
/// parse: each is a fetch failure with its result type and no policy applies.
#[test]
fn bad_responses() {
    let rows: Vec<(FetchResponse, ResultType)> = vec![
        (
            FetchResponse {
                status: 301,
                content_type: None,
                body: vec![],
            },
            ResultType::StsPolicyFetchError,
        ),
        (
            FetchResponse {
                status: 200,
                content_type: Some("text/html".into()),
                body: policy_body("enforce", &["mx1.example.org"]),
            },
            ResultType::StsPolicyFetchError,
        ),
        (
            FetchResponse {
                status: 200,
                content_type: None,
                body: b"version: STSv1\nmode: strict\nmax_age: 1\n".to_vec(),
            },
            ResultType::StsPolicyInvalid,
        ),
        (
            FetchResponse {
                status: 200,
                content_type: None,
                body: vec![b'x'; MAX_POLICY_SIZE + 1],
            },
            ResultType::StsPolicyFetchError,
        ),
    ];
    for (resp, want) in rows {
        let mut w = harness();
        w.sts("example.org", STS_ID, Ok(resp.clone()));
        let r = w.run("example.org", &["mx1.example.org"], MessageTls::Default);
        assert_eq!(
            r.verdict("mx1.example.org"),
            "opportunistic/none/deliver/no-policy-found",
            "{resp:?}"
        );
        let f = r.session.fetch_failure().unwrap();
        assert_eq!(f.failure.unwrap().result_type, want, "{resp:?}");
        assert!(w.cache.is_empty());
    }
}

/// Every effect has a deadline: a fetch never answered is a fetch error at the effect
/// timeout (no policy, reported), and DNS never answered is a temporary failure: no
/// MTA-STS, and for a signed domain no downgrade (the host is deferred).
#[test]
fn deadlines() {
    let mut w = harness();
    w.fetch.clear();
    let r = w.run("example.org", &["mx1.example.org"], MessageTls::Default);
    assert_eq!(
        r.verdict("mx1.example.org"),
        "opportunistic/none/deliver/no-policy-found"
    );
    assert_eq!(r.elapsed, Duration::from_secs(60));
    let f = r.session.fetch_failure().unwrap();
    assert_eq!(
        f.failure.unwrap().result_type,
        ResultType::StsPolicyFetchError
    );

    // The TLSA answer never comes: deferred after the effect timeout.
    let w = harness();
    let mut s = PolicySession::new(
        Arc::new(w.config.clone()),
        "dane.example",
        MessageTls::Default,
        TestClock::new().now(),
    );
    let mut clock = TestClock::new();
    s.handle(clock.now(), Input::Ask("mx.dane.example".into()))
        .unwrap();
    let mut verdict = None;
    for _ in 0..100 {
        match s.poll(clock.now()) {
            Output::Effect(t, Effect::Dns(ls)) => {
                if ls[0].rtype == RecordType::Tlsa {
                    continue; // lost
                }
                let r = ls.iter().map(|l| w.lookup(l)).collect();
                s.handle(clock.now(), Input::Completed(t, Completion::Dns(r)))
                    .unwrap();
            }
            Output::Effect(t, Effect::CacheGet { .. }) => {
                s.handle(clock.now(), Input::Completed(t, Completion::Cached(None)))
                    .unwrap();
            }
            Output::Verdict(v) => {
                verdict = Some(v);
                break;
            }
            Output::Idle { deadline: Some(at) } => {
                clock.set_mono(at);
                s.handle(clock.now(), Input::Timeout).unwrap();
            }
            o => panic!("{o:?}"),
        }
    }
    let v = verdict.unwrap();
    assert_eq!(v.requirement.to_string(), "skip:dane-tempfail");
    let HostTls::Skip(why) = &v.host_tls else {
        panic!()
    };
    assert!(why.contains("_25._tcp.mx.dane.example"), "{why}");
}

/// DANE facts through the machine: an untrusted resolver does no host lookups; an
/// unsigned MX does none either; a secure CNAME chain is followed and the TLSA records of
/// the target win; an insecure step in the chain means no DANE; unusable records make TLS
/// mandatory without authentication.
#[test]
fn dane_facts() {
    let mut w = harness();
    w.config.trust_ad = false;
    let r = w.run("dane.example", &["mx.dane.example"], MessageTls::Default);
    assert_eq!(
        r.transcript,
        [
            "dns TXT _mta-sts.dane.example, MX dane.example",
            "cache get dane.example",
            "verdict mx.dane.example opportunistic/none/deliver/no-policy-found",
        ]
    );

    // A secure CNAME chain of two steps.
    let mut w = harness();
    w.set(
        "mx.dane.example",
        RecordType::Cname,
        records(true, vec![Record::Cname("a.hosting.example".into())]),
    );
    w.set(
        "a.hosting.example",
        RecordType::Cname,
        records(true, vec![Record::Cname("b.hosting.example.".into())]),
    );
    w.set(
        "_25._tcp.b.hosting.example",
        RecordType::Tlsa,
        records(true, vec![tlsa(3)]),
    );
    let r = w.run("dane.example", &["mx.dane.example"], MessageTls::Default);
    assert_eq!(
        r.transcript,
        [
            "dns TXT _mta-sts.dane.example, MX dane.example",
            "cache get dane.example",
            "dns CNAME mx.dane.example, A mx.dane.example, AAAA mx.dane.example",
            "dns CNAME a.hosting.example",
            "dns CNAME b.hosting.example",
            "dns TLSA _25._tcp.b.hosting.example",
            "verdict mx.dane.example required/dane=b.hosting.example/abort/tlsa",
        ]
    );
    let v = &r.verdicts[0];
    let p = v.report_policy("dane.example");
    assert_eq!(
        (p.policy_type, p.policy_domain.as_str()),
        (PolicyType::Tlsa, "b.hosting.example")
    );
    let HostTls::Connect(c) = &v.host_tls else {
        panic!()
    };
    let Verify::Dane(d) = &c.verify else {
        panic!("{:?}", c.verify)
    };
    assert_eq!(d.records.len(), 1);
    // RFC 7672 8.1 and 3.2.2: SNI the TLSA base domain; DANE-TA names the base domain and
    // the MX host name as published.
    assert_eq!(d.sni.as_deref(), Some("b.hosting.example"));
    assert_eq!(d.names, ["b.hosting.example", "mx.dane.example"]);
    assert_eq!(c.policy, TlsPolicyKind::Tlsa);

    // An unsigned step in the chain: no TLSA lookups, no DANE.
    w.set(
        "a.hosting.example",
        RecordType::Cname,
        records(false, vec![Record::Cname("b.hosting.example".into())]),
    );
    let r = w.run("dane.example", &["mx.dane.example"], MessageTls::Default);
    assert_eq!(
        r.verdict("mx.dane.example"),
        "opportunistic/none/deliver/no-policy-found"
    );
    assert!(!r.transcript.iter().any(|l| l.contains("TLSA")));

    // A CNAME loop: deferred, not followed forever.
    w.set(
        "a.hosting.example",
        RecordType::Cname,
        records(true, vec![Record::Cname("mx.dane.example".into())]),
    );
    w.set(
        "mx.dane.example",
        RecordType::Cname,
        records(true, vec![Record::Cname("a.hosting.example".into())]),
    );
    let r = w.run("dane.example", &["mx.dane.example"], MessageTls::Default);
    assert_eq!(r.verdict("mx.dane.example"), "skip:dane-tempfail");

    // Only PKIX usages: unusable, TLS mandatory without verification.
    let mut w = harness();
    w.set(
        "_25._tcp.mx.dane.example",
        RecordType::Tlsa,
        records(true, vec![tlsa(1)]),
    );
    let r = w.run("dane.example", &["mx.dane.example"], MessageTls::Default);
    assert_eq!(r.verdict("mx.dane.example"), "required/none/abort/tlsa");

    // The host's addresses unsigned under a signed MX: no DANE.
    let mut w = harness();
    w.set(
        "mx.dane.example",
        RecordType::A,
        records(false, vec![Record::A([127, 10, 0, 13].into())]),
    );
    let r = w.run("dane.example", &["mx.dane.example"], MessageTls::Default);
    assert_eq!(
        r.verdict("mx.dane.example"),
        "opportunistic/none/deliver/no-policy-found"
    );
    // TLSA answer without AD: ignored.
    let mut w = harness();
    w.set(
        "_25._tcp.mx.dane.example",
        RecordType::Tlsa,
        records(false, vec![tlsa(3)]),
    );
    let r = w.run("dane.example", &["mx.dane.example"], MessageTls::Default);
    assert_eq!(
        r.verdict("mx.dane.example"),
        "opportunistic/none/deliver/no-policy-found"
    );
}

/// Without WebPKI roots, a host MTA-STS requires verified is skipped (temporary), not
/// connected to unverified; asking again for a host answers again; the report policy of
/// an unverified connection is no-policy-found.
#[test]
fn host_tls_forms() {
    let mut w = harness();
    w.config.pkix = None;
    let r = w.run(
        "example.org",
        &["mx1.example.org", "mx1.example.org"],
        MessageTls::Default,
    );
    assert_eq!(r.verdicts.len(), 2);
    let HostTls::Skip(why) = &r.verdicts[0].host_tls else {
        panic!()
    };
    assert!(why.contains("no trusted roots"), "{why}");
    // The transcript asked the domain once.
    assert_eq!(
        r.transcript
            .iter()
            .filter(|l| l.starts_with("dns TXT"))
            .count(),
        1
    );

    let r = harness().run("pf.example.org", &["mx2.example.org"], MessageTls::Default);
    let v = &r.verdicts[0];
    let HostTls::Connect(c) = &v.host_tls else {
        panic!()
    };
    assert_eq!(
        (c.mode, c.policy),
        (TlsMode::Opportunistic, TlsPolicyKind::NoPolicy)
    );
    assert!(matches!(c.verify, Verify::None));
    assert_eq!(
        v.report_policy("pf.example.org").policy_type,
        PolicyType::NoPolicyFound
    );

    let r = harness().run(
        "sts-testing.example.org",
        &["mx-selfsigned.example.org"],
        MessageTls::Default,
    );
    let HostTls::Connect(c) = &r.verdicts[0].host_tls else {
        panic!()
    };
    // Verified all the same, a failure reported (IgnoreErrors used to record success).
    assert!(matches!(c.verify, Verify::PkixReport(_)), "{:?}", c.verify);
    assert_eq!(c.policy, TlsPolicyKind::Sts);
    // Without roots to verify with: not verified.
    let mut w = harness();
    w.config.pkix_roots = None;
    let r = w.run(
        "sts-testing.example.org",
        &["mx-selfsigned.example.org"],
        MessageTls::Default,
    );
    let HostTls::Connect(c) = &r.verdicts[0].host_tls else {
        panic!()
    };
    assert!(matches!(c.verify, Verify::IgnoreErrors));

    let r = harness().run(
        "pf.example.org",
        &["mx2.example.org"],
        MessageTls::RequireTls,
    );
    let HostTls::Fail { enhanced, .. } = &r.verdicts[0].host_tls else {
        panic!()
    };
    assert_eq!(*enhanced, Enhanced::new(5, 7, 10));
    assert_eq!(message_tls(Some(true)), MessageTls::RequireTls);
    assert_eq!(message_tls(Some(false)), MessageTls::TlsRequiredNo);
    assert_eq!(message_tls(None), MessageTls::Default);
}

/// A completion of the wrong kind is refused; one for an unknown token is ignored.
#[test]
fn misuse() {
    let clock = TestClock::new();
    let mut s = PolicySession::new(
        Arc::new(PolicyConfig::new(true)),
        "example.org",
        MessageTls::Default,
        clock.now(),
    );
    let Output::Effect(t, Effect::Dns(_)) = s.poll(clock.now()) else {
        panic!()
    };
    assert!(s
        .handle(
            clock.now(),
            Input::Completed(Token(99), Completion::Cached(None))
        )
        .is_ok());
    assert!(s
        .handle(clock.now(), Input::Completed(t, Completion::Cached(None)))
        .is_err());
}

/// The TLS report results of the delivery's connections under each verdict: MTA-STS
/// testing with a failed handshake is an `sts` failure of the recipient domain; DANE adds
/// the MX host's own `tlsa` result; a plaintext session under no policy is
/// `starttls-not-supported`; a skipped host has none.
#[test]
fn report_results_per_attempt() {
    let attempt = |host: &str, policy, result| TlsAttempt {
        policy_domain: String::new(),
        mx_host: host.into(),
        receiving_ip: "127.10.0.18".parse().unwrap(),
        policy,
        mode: "opportunistic",
        result,
    };
    let summary = |r: Vec<SessionResult>| -> Vec<String> {
        r.iter()
            .map(|s| {
                format!(
                    "{}/{}/{}/{}",
                    match s.scope {
                        ReportScope::RecipientDomain => "domain",
                        ReportScope::MxHost => "host",
                    },
                    s.policy.policy_type.as_str(),
                    s.policy.policy_domain,
                    s.failure
                        .as_ref()
                        .map(|f| f.result_type.as_str().to_string())
                        .unwrap_or("ok".into())
                )
            })
            .collect()
    };
    let r = harness().run(
        "sts-testing.example.org",
        &["mx-selfsigned.example.org"],
        MessageTls::Default,
    );
    let got = r.verdicts[0].session_results(
        "sts-testing.example.org",
        &attempt(
            "mx-selfsigned.example.org",
            TlsPolicyKind::Sts,
            TlsResult::Failed {
                result_type: "certificate-not-trusted",
                detail: "invalid peer certificate: UnknownIssuer".into(),
            },
        ),
    );
    assert_eq!(got[0].policy.mx_host, ["mx-selfsigned.example.org"]);
    assert_eq!(
        summary(got),
        ["domain/sts/sts-testing.example.org/certificate-not-trusted"]
    );

    let r = harness().run("dane.example", &["mx.dane.example"], MessageTls::Default);
    let got = r.verdicts[0].session_results(
        "dane.example",
        &attempt(
            "mx.dane.example",
            TlsPolicyKind::Tlsa,
            TlsResult::Failed {
                result_type: "validation-failure",
                detail: "no TLSA record matches".into(),
            },
        ),
    );
    assert_eq!(
        summary(got),
        [
            "domain/no-policy-found/dane.example/validation-failure",
            "host/tlsa/mx.dane.example/validation-failure"
        ]
    );

    let r = harness().run(
        "notls.example.org",
        &["mx-notls.example.org"],
        MessageTls::Default,
    );
    let got = r.verdicts[0].session_results(
        "notls.example.org",
        &attempt(
            "mx-notls.example.org",
            TlsPolicyKind::NoPolicy,
            TlsResult::Plaintext,
        ),
    );
    assert_eq!(
        summary(got),
        ["domain/no-policy-found/notls.example.org/starttls-not-supported"]
    );

    let r = harness().run(
        "sts-mismatch.example.org",
        &["mx1.example.org"],
        MessageTls::Default,
    );
    let got = r.verdicts[0].session_results(
        "sts-mismatch.example.org",
        &attempt("mx1.example.org", TlsPolicyKind::Sts, TlsResult::Plaintext),
    );
    assert!(got.is_empty());
}

/// A world where every answer is drawn from `seed`: any kind of answer to any question,
/// with or without the AD bit, CNAME chains that may loop, TLSA records of any usage,
/// policies of any mode, fetch failures, questions never answered.
fn random_world(seed: u64, trust_ad: bool) -> World {
    let mut w = World::new();
    w.config.trust_ad = trust_ad;
    let mut rng = crate::rng::Rng::new(seed);
    let names = [
        "example.org",
        "_mta-sts.example.org",
        "mx1.example.org",
        "mx2.example.org",
        "a.example.net",
        "b.example.net",
        "_25._tcp.mx1.example.org",
        "_25._tcp.mx2.example.org",
        "_25._tcp.a.example.net",
        "_25._tcp.b.example.net",
    ];
    let types = [
        RecordType::Mx,
        RecordType::Txt,
        RecordType::Cname,
        RecordType::A,
        RecordType::Aaaa,
        RecordType::Tlsa,
    ];
    for name in names {
        for t in types {
            let l = lk(name, t);
            let auth = rng.below(3) != 0;
            let answer = match rng.below(6) {
                0 => LookupResult::NxDomain,
                1 => LookupResult::NoData,
                2 => LookupResult::TempFail("SERVFAIL".into()),
                _ => {
                    let rec = match t {
                        RecordType::Mx => Record::Mx {
                            preference: 10,
                            host: "mx1.example.org".into(),
                        },
                        RecordType::Txt => txt(if rng.below(2) == 0 {
                            "v=STSv1; id=1;"
                        } else {
                            "v=STSv1; id=2;"
                        }),
                        RecordType::Cname => Record::Cname(
                            ["a.example.net", "b.example.net", "mx1.example.org"]
                                [rng.below(3) as usize]
                                .into(),
                        ),
                        RecordType::Tlsa => tlsa(rng.below(4) as u8),
                        RecordType::Aaaa => Record::Aaaa("::1".parse().unwrap()),
                        _ => Record::A([127, 0, 0, 1].into()),
                    };
                    records(auth, vec![rec])
                }
            };
            if rng.below(20) == 0 {
                w.silent.push(l.clone());
            }
            w.dns.insert(l, answer);
        }
    }
    let mode = ["enforce", "testing", "none"][rng.below(3) as usize];
    match rng.below(5) {
        0 => {}
        1 => {
            w.fetch.insert(
                policy_url("example.org"),
                Err(FetchError::WebPki("bad".into())),
            );
        }
        2 => {
            w.fetch
                .insert(policy_url("example.org"), served(b"not a policy".to_vec()));
        }
        _ => {
            w.fetch.insert(
                policy_url("example.org"),
                served(policy_body(mode, &["mx1.example.org", "*.example.net"])),
            );
        }
    }
    if rng.below(3) == 0 {
        let c = CachedPolicy {
            id: "1".into(),
            policy: StsPolicy::parse(&policy_body(mode, &["mx2.example.org"])).unwrap(),
            fetched: TestClock::new().now().wall.add(Duration::from_secs(3600)),
        };
        // Fetched "in the future" or long ago: valid or expired.
        let mut e = StsCacheEntry::from_cached("example.org", &c);
        if rng.below(2) == 0 {
            e.fetched = UnixTime(e.fetched.0 - 200_000);
            e.expires = UnixTime(e.expires.0 - 200_000);
        }
        w.cache.insert("example.org".into(), e);
    }
    w
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    /// Whatever the answers (or their absence): every host asked gets exactly one verdict,
    /// within the effect deadlines; the lookups are bounded; nothing past the MX RRset is
    /// looked up without a trusted AD bit; a REQUIRETLS message is never sent without
    /// verified, required STARTTLS; DANE or WebPKI verification failures abort unless the
    /// policy is only testing or the message says `TLS-Required: No`.
    #[test]
    fn any_world(seed in proptest::prelude::any::<u64>(), trust in proptest::prelude::any::<bool>(), m in 0u8..3) {
        let msg = [MessageTls::Default, MessageTls::RequireTls, MessageTls::TlsRequiredNo][m as usize];
        let mut w = random_world(seed, trust);
        let hosts = ["mx1.example.org", "mx2.example.org"];
        let r = w.run("example.org", &hosts, msg);
        for h in hosts {
            proptest::prop_assert_eq!(r.verdicts.iter().filter(|v| v.host == h).count(), 1, "{:#?}", r.transcript);
        }
        // Domain lookups, cache, fetch, and per host at most CNAME/A/AAAA, the chain and
        // two TLSA lookups.
        proptest::prop_assert!(r.transcript.len() <= 5 + 2 * (1 + MAX_CNAME_STEPS + 2) + 2, "{:#?}", r.transcript);
        // Two rounds of effect deadlines at most (domain, then fetch or host lookups).
        proptest::prop_assert!(r.elapsed <= Duration::from_secs(60 * (3 + MAX_CNAME_STEPS as u64)));
        if !trust {
            proptest::prop_assert!(!r.transcript.iter().any(|l| l.contains("TLSA") || l.contains("CNAME")));
        }
        for v in &r.verdicts {
            if let TlsRequirement::Connect(c) = &v.requirement {
                if msg == MessageTls::RequireTls {
                    proptest::prop_assert!(c.requiretls && c.starttls == crate::tlspolicy::StartTls::Required);
                    proptest::prop_assert!(c.verify != Verification::None);
                    proptest::prop_assert!(!matches!(&v.host_tls, HostTls::Connect(h) if matches!(h.verify, Verify::None | Verify::IgnoreErrors)));
                }
                if matches!(c.verify, Verification::Dane(_)) && msg != MessageTls::TlsRequiredNo {
                    proptest::prop_assert!(matches!(&v.host_tls, HostTls::Connect(h) if matches!(h.verify, Verify::Dane(_))));
                }
                if let Verification::Dane(_) = c.verify {
                    proptest::prop_assert!(trust);
                }
            }
        }
    }
}
