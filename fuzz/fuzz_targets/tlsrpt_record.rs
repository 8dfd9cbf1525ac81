//! TLSRPT (`_smtp._tls`) record parsing must never panic, and a parsed record must survive
//! rendering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::tlspolicy::TlsrptRecord;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = TlsrptRecord::parse(s) {
        let again = TlsrptRecord::parse(&r.to_string()).expect("rendered record parses");
        assert_eq!(again, r);
        for u in &r.rua {
            let _ = (u.mailto(), u.is_https());
        }
    }
});
