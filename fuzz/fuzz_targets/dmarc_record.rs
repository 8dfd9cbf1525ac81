//! DMARC record parsing must never panic, and a parsed record must survive rendering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::dmarc::DmarcRecord;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = DmarcRecord::parse(s) {
        let again = DmarcRecord::parse(&r.to_string()).expect("rendered record parses");
        assert_eq!(again, r);
    }
});
