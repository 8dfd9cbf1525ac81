//! MTA-STS TXT record parsing must never panic, and a parsed record must survive rendering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::tlspolicy::StsRecord;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = StsRecord::parse(s) {
        let again = StsRecord::parse(&r.to_string()).expect("rendered record parses");
        assert_eq!(again, r);
    }
    // The same text split into several TXT records at newlines.
    let txts: Vec<&str> = s.split('\n').collect();
    let _ = StsRecord::from_txt(&txts);
});
