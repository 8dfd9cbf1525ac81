//! MTA-STS policy parsing must never panic, a parsed policy must survive rendering, and
//! matching any host against its patterns must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::tlspolicy::StsPolicy;

fuzz_target!(|data: &[u8]| {
    // The last line (after the last NUL) doubles as a host name to match.
    let (body, host) = match data.iter().rposition(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"mx.example.org"[..]),
    };
    if let Ok(p) = StsPolicy::parse(body) {
        let again = StsPolicy::parse(p.to_text().as_bytes()).expect("rendered policy parses");
        assert_eq!(again, p);
        if let Ok(h) = std::str::from_utf8(host) {
            let _ = p.matches_mx(h);
        }
    }
});
