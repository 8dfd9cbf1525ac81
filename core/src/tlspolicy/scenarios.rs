//! The harness scenarios (../shared/harness/README.md sections 3 and 4) as pure inputs:
//! the DNS facts and MTA-STS policies the harness publishes, run through [`decide`],
//! [`DaneInput`] and [`requirement`], against the reference Postfix verdicts plus the
//! MTA-STS verdicts Postfix lacks. What happens in the handshake (a TLSA mismatch, no
//! STARTTLS) is the client machine's part and is noted per row.

use super::*;
use crate::dns::{LookupResult, Record};
use crate::time::UnixTime;

/// How the harness serves a policy (`up.sh`: CRLF, max_age 86400).
fn policy_body(mode: &str, mx: &[&str]) -> Vec<u8> {
    let mut s = format!("version: STSv1\r\nmode: {mode}\r\n");
    for m in mx {
        s.push_str(&format!("mx: {m}\r\n"));
    }
    s.push_str("max_age: 86400\r\n");
    s.into_bytes()
}

enum Fetch {
    /// No `_mta-sts` record.
    NoRecord,
    /// A record and this fetch outcome.
    Served(Result<Vec<u8>, FetchError>),
}

struct Dns {
    /// The zone is signed (MX, A and TLSA answers carry AD).
    signed: bool,
    /// The TLSA answer at `_25._tcp.MX`.
    tlsa: LookupResult,
}

fn tlsa(usage: u8) -> LookupResult {
    LookupResult::Records {
        records: vec![Record::Tlsa {
            usage,
            selector: 1,
            matching: 1,
            data: vec![7; 32],
        }],
        authentic: true,
    }
}

/// Runs the policy layer for one MX host of one domain, as the delivery machine will.
fn verdict(fetch: &Fetch, mx: &str, dns: &Dns, message: MessageTls) -> (String, PolicySource) {
    let now = UnixTime(1_700_000_000);
    let record = match fetch {
        Fetch::NoRecord => RecordAnswer::Absent,
        Fetch::Served(_) => RecordAnswer::Present(
            StsRecord::parse("v=STSv1; id=20240101T000000;").expect("harness record"),
        ),
    };
    let mut decision = decide(None, &record, None, now);
    if decision == StsDecision::Fetch {
        let Fetch::Served(outcome) = fetch else {
            panic!("fetch without a record")
        };
        let fetched = match outcome {
            Ok(body) => StsPolicy::parse(body).map_err(FetchError::from),
            Err(e) => Err(e.clone()),
        };
        decision = decide(None, &record, Some(fetched), now);
    }
    let StsDecision::Apply(applied) = decision else {
        panic!("second decision fetches again")
    };
    let input = DaneInput::new(
        mx,
        dns.signed,
        AddressFacts {
            cnames: vec![],
            secure: dns.signed,
        },
        true,
    );
    let dane = input.evaluate(|_| dns.tlsa.clone());
    let sts = applied.policy.as_ref().map(|c| &c.policy);
    (
        requirement(sts, mx, &dane, message).to_string(),
        applied.source,
    )
}

/// Every harness scenario domain: the verdict per MX host, and what Postfix did.
#[test]
fn harness_scenarios() {
    let unsigned = || Dns {
        signed: false,
        tlsa: LookupResult::NxDomain,
    };
    let served = |mode, mx: &[&str]| Fetch::Served(Ok(policy_body(mode, mx)));
    let rows: Vec<(&str, Fetch, &str, Dns, &str)> = vec![
        // Postfix: sent, Trusted TLS. MTA-STS enforce: WebPKI required.
        (
            "example.org",
            served("enforce", &["mx1.example.org", "mx2.example.org"]),
            "mx1.example.org",
            unsigned(),
            "required/webpki=mx1.example.org/abort/sts",
        ),
        // Postfix: sent (Trusted TLS); no MTA-STS record for pf.example.org.
        (
            "pf.example.org",
            Fetch::NoRecord,
            "mx2.example.org",
            unsigned(),
            "opportunistic/none/deliver/no-policy-found",
        ),
        // Postfix: sent, plaintext. Opportunistic allows plaintext.
        (
            "notls.example.org",
            Fetch::NoRecord,
            "mx-notls.example.org",
            unsigned(),
            "opportunistic/none/deliver/no-policy-found",
        ),
        // Postfix: MX10 refused, sent via MX20: both hosts allowed; the fallback is the
        // MX plan's.
        (
            "multi.example.org",
            Fetch::NoRecord,
            "dead.example.org",
            unsigned(),
            "opportunistic/none/deliver/no-policy-found",
        ),
        (
            "blackhole.example.org",
            Fetch::NoRecord,
            "mx-blackhole.example.org",
            unsigned(),
            "opportunistic/none/deliver/no-policy-found",
        ),
        // MTA-STS only (Postfix lacks it): the one MX is not in the policy: not delivered.
        (
            "sts-mismatch.example.org",
            served("enforce", &["other.example.org"]),
            "mx1.example.org",
            unsigned(),
            "skip:mismatch",
        ),
        // MTA-STS only: STARTTLS required; the host offers none, so the client fails.
        (
            "sts-notls.example.org",
            served("enforce", &["mx-notls.example.org"]),
            "mx-notls.example.org",
            unsigned(),
            "required/webpki=mx-notls.example.org/abort/sts",
        ),
        // Postfix: sent, Untrusted TLS. MTA-STS testing: deliver, report the failure.
        (
            "sts-testing.example.org",
            served("testing", &["mx-selfsigned.example.org"]),
            "mx-selfsigned.example.org",
            unsigned(),
            "opportunistic/webpki=mx-selfsigned.example.org/deliver/sts",
        ),
        // MTA-STS only: the policy host's certificate is untrusted: no policy applies
        // (RFC 8461 5.1), delivery as without MTA-STS, sts-webpki-invalid reported.
        (
            "sts-badcert.example.org",
            Fetch::Served(Err(FetchError::WebPki("unknown issuer".into()))),
            "mx1.example.org",
            unsigned(),
            "opportunistic/none/deliver/no-policy-found",
        ),
        // Postfix: Verified (DANE-EE).
        (
            "dane.example",
            Fetch::NoRecord,
            "mx.dane.example",
            Dns {
                signed: true,
                tlsa: tlsa(3),
            },
            "required/dane=mx.dane.example/abort/tlsa",
        ),
        // Postfix: Verified (DANE-TA).
        (
            "ta.dane.example",
            Fetch::NoRecord,
            "mx.ta.dane.example",
            Dns {
                signed: true,
                tlsa: tlsa(2),
            },
            "required/dane=mx.ta.dane.example/abort/tlsa",
        ),
        // Postfix: deferred 4.7.5 (no matching TLSA): DANE is required here and the
        // handshake check (tls.rs DaneVerifier) refuses the certificate.
        (
            "bad.dane.example",
            Fetch::NoRecord,
            "mx.bad.dane.example",
            Dns {
                signed: true,
                tlsa: tlsa(3),
            },
            "required/dane=mx.bad.dane.example/abort/tlsa",
        ),
        // Postfix: deferred 4.4.3 (SERVFAIL). The MX lookup already fails there (MX plan);
        // at this layer a bogus TLSA answer defers the host.
        (
            "bogus.example",
            Fetch::NoRecord,
            "mx.bogus.example",
            Dns {
                signed: true,
                tlsa: LookupResult::TempFail("SERVFAIL (EDE 6 DNSSEC Bogus)".into()),
            },
            "skip:dane-tempfail",
        ),
    ];
    for (domain, fetch, mx, dns, want) in &rows {
        let (got, _) = verdict(fetch, mx, dns, MessageTls::Default);
        assert_eq!(got, *want, "{domain}");
    }
    // The badcert fetch failure is reported with its RFC 8460 result type.
    let (_, source) = verdict(
        &rows[8].1,
        "mx1.example.org",
        &rows[8].3,
        MessageTls::Default,
    );
    let PolicySource::FetchFailed(e) = source else {
        panic!("{source:?}")
    };
    assert_eq!(e.result_type(), ResultType::StsWebpkiInvalid);
    // REQUIRETLS to the harness: only the verified scenarios can carry it.
    for (domain, fetch, mx, dns, _) in &rows {
        let (got, _) = verdict(fetch, mx, dns, MessageTls::RequireTls);
        let want = match *domain {
            "example.org" => "required/webpki=mx1.example.org/abort/sts/requiretls",
            "sts-notls.example.org" => "required/webpki=mx-notls.example.org/abort/sts/requiretls",
            "sts-testing.example.org" => {
                "required/webpki=mx-selfsigned.example.org/abort/sts/requiretls"
            }
            "dane.example" | "ta.dane.example" | "bad.dane.example" => {
                &format!("required/dane={mx}/abort/tlsa/requiretls")
            }
            "sts-mismatch.example.org" => "skip:mismatch",
            "bogus.example" => "skip:dane-tempfail",
            _ => "fail:5.7.10",
        };
        assert_eq!(got, want, "REQUIRETLS {domain}");
    }
}
