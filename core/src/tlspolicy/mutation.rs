//! The fuzz targets' properties (fuzz/fuzz_targets/mtasts_*.rs, tlsrpt_record.rs,
//! tls_report.rs) run on seeded random mutations of valid inputs, so they are checked on
//! every `cargo test` and not only where cargo-fuzz is installed: parsing never panics and
//! whatever parses renders back to the same value.

use super::*;
use crate::rng::Rng;

/// Bytes mutations draw from: the grammars' punctuation, whitespace, line ends, digits,
/// UTF-8 lead bytes.
const ALPHABET: &[u8] = b" \t\r\n:;=,.*-_\"\\{}[]0123456789azAZ\x00\x7f\xc3\xa9\xff";

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let pos = rng.below(v.len() as u64 + 1) as usize;
        let byte = ALPHABET[rng.below(ALPHABET.len() as u64) as usize];
        match rng.below(4) {
            0 => v.insert(pos, byte),
            1 if pos < v.len() => {
                v.remove(pos);
            }
            2 if pos < v.len() => v[pos] = byte,
            _ => {
                // Duplicate a slice (repeated fields and lines).
                let end = (pos + rng.below(40) as usize).min(v.len());
                let dup = v[pos..end].to_vec();
                let at = rng.below(v.len() as u64 + 1) as usize;
                v.splice(at..at, dup);
            }
        }
    }
    v
}

const ROUNDS: usize = 3000;

#[test]
fn mtasts_record_and_policy_mutations() {
    let mut rng = Rng::new(8461);
    let records: [&[u8]; 2] = [b"v=STSv1; id=20240101T000000;", b"v=STSv1;id=a1; ext=val"];
    let policies: [&[u8]; 2] = [
        b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmx: *.example.net\r\nmax_age: 86400\r\n",
        b"version: STSv1\nmode: none\nmax_age: 0\nfoo: bar\n",
    ];
    for _ in 0..ROUNDS {
        for seed in records {
            let m = mutate(&mut rng, seed);
            if let Ok(s) = std::str::from_utf8(&m) {
                if let Ok(r) = StsRecord::parse(s) {
                    assert_eq!(StsRecord::parse(&r.to_string()).as_ref(), Ok(&r), "{s:?}");
                }
            }
        }
        for seed in policies {
            let m = mutate(&mut rng, seed);
            if let Ok(p) = StsPolicy::parse(&m) {
                assert_eq!(
                    StsPolicy::parse(p.to_text().as_bytes()).as_ref(),
                    Ok(&p),
                    "{:?}",
                    String::from_utf8_lossy(&m)
                );
                let _ = p.matches_mx("mx1.example.org");
            }
        }
    }
}

#[test]
fn tlsrpt_record_and_report_mutations() {
    let mut rng = Rng::new(8460);
    let record: &[u8] = b"v=TLSRPTv1; rua=mailto:tlsrpt@example.org,https://r.example/x";
    let report: &[u8] = br#"{"organization-name":"Example.org","date-range":{"start-datetime":"2022-01-07T00:00:00Z","end-datetime":"2022-01-07T23:59:59+01:00"},"contact-info":"tlsrpt@example.org","report-id":"1","policies":[{"policy":{"policy-type":"sts","policy-string":["version: STSv1"],"policy-domain":"xmox.nl","mx-host":"*.xmox.nl"},"summary":{"total-successful-session-count":1,"total-failure-session-count":2},"failure-details":[{"result-type":"certificate-expired","receiving-ip":"203.0.113.56","failed-session-count":2}]}]}"#;
    for _ in 0..ROUNDS {
        let m = mutate(&mut rng, record);
        if let Ok(s) = std::str::from_utf8(&m) {
            if let Ok(r) = TlsrptRecord::parse(s) {
                assert_eq!(
                    TlsrptRecord::parse(&r.to_string()).as_ref(),
                    Ok(&r),
                    "{s:?}"
                );
            }
        }
        let m = mutate(&mut rng, report);
        if let Ok(r) = parse_report_file(&m) {
            let again = parse_report(r.to_json().as_bytes());
            assert_eq!(
                again.ok().as_ref(),
                Some(&r),
                "{:?}",
                String::from_utf8_lossy(&m)
            );
        }
        // Mutated gzip: must fail cleanly or parse.
        let gz = mutate(&mut rng, &crate::codec::gzip(report));
        let _ = parse_report_file(&gz);
    }
}
