//! End to end against real DNS and real mail servers: the test world of ../shared/harness
//! (NSD + validating Unbound on 127.53.0.x, aiosmtpd peers and Postfix on 127.10.0.x).
//! `.ci/run` starts it; elsewhere the tests skip with a printed reason unless
//! `$HARNESS_DIR/env.sh` exists (`../shared/harness/up.sh`, with `HARNESS_HOME` pointing
//! at the scripts when they are not at ../shared/harness beside the checkout).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rmox_tests::harness::{big_spf_record, Harness, RESOLVER};
use rmox_tests::*;

/// `rmox ARGS --resolver 127.53.0.2:53`: (success, stdout + stderr).
fn cli(args: &[&str]) -> (bool, String) {
    let mut a: Vec<&str> = args.to_vec();
    a.extend(["--resolver", RESOLVER]);
    let out = rmox(&a, None);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[track_caller]
fn cli_ok(args: &[&str]) -> String {
    let (ok, out) = cli(args);
    assert!(ok, "rmox {args:?} failed:\n{out}");
    out
}

/// The DNS tools of the binary against the real resolver: UDP answers, and a TXT record
/// too big for the 1232-octet EDNS payload that only arrives over TCP.
#[test]
fn cli_spf_and_dnsbl_real_dns() {
    let Some(_h) = Harness::get("cli_spf_and_dnsbl_real_dns") else {
        return;
    };
    // SPF over UDP: example.org allows 127.10.0.0/24.
    let out = cli_ok(&["spf", "check", "example.org", "127.10.0.11"]);
    assert!(out.contains("result: pass"), "{out}");
    assert!(out.contains("mechanism: ip4:127.10.0.0/24"), "{out}");
    let out = cli_ok(&["spf", "check", "example.org", "127.20.0.1"]);
    assert!(out.contains("result: fail"), "{out}");
    assert!(out.starts_with("result: fail") && out.contains("Received-SPF: fail"));
    // mox.example: ip4 of the MTA.
    let out = cli_ok(&["spf", "check", "mox.example", "127.10.0.2"]);
    assert!(out.contains("result: pass"), "{out}");
    let out = cli_ok(&["spf", "lookup", "example.org"]);
    assert!(
        out.contains("v=spf1 ip4:127.10.0.0/24 -all\nvalid"),
        "{out}"
    );
    // DNSSEC-bogus zone: SERVFAIL from the validating resolver, a temporary error.
    let out = cli_ok(&["spf", "check", "bogus.example", "127.10.0.17"]);
    assert!(out.contains("result: temperror"), "{out}");

    // Over TCP: the record is longer than the UDP payload, so the UDP answer is
    // truncated; only a TCP retry can return it whole.
    let big = big_spf_record();
    assert!(big.len() > 1232, "{}", big.len());
    let out = cli_ok(&["spf", "lookup", "bigspf.example.org"]);
    assert!(out.contains(&format!("{big}\nvalid")), "{out}");
    let out = cli_ok(&["spf", "check", "bigspf.example.org", "127.10.0.2"]);
    assert!(out.contains("result: pass"), "{out}");
    assert!(out.contains("mechanism: ip4:127.10.0.2"), "{out}");
    let out = cli_ok(&["spf", "check", "bigspf.example.org", "127.20.0.1"]);
    assert!(out.contains("result: fail"), "{out}");

    // DNSBL: bl.example.org lists 127.10.0.15 (and 127.0.0.2 for the health check).
    let out = cli_ok(&["dnsbl", "check", "bl.example.org", "127.10.0.15"]);
    assert!(
        out.contains("bl.example.org: Fail(\"listed by the rmox harness test\")"),
        "{out}"
    );
    assert!(out.contains("bl.example.org health: Healthy"), "{out}");
    let out = cli_ok(&["dnsbl", "check", "bl.example.org", "127.10.0.11"]);
    assert!(out.contains("bl.example.org: Pass"), "{out}");
    let out = cli_ok(&["dnsbl", "check", "bl.bogus.example", "127.10.0.15"]);
    assert!(out.contains("bl.bogus.example: TempError"), "{out}");
}
