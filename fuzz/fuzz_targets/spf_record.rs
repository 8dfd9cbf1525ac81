//! SPF record parser and macro expander: arbitrary text never panics, and whatever parses
//! renders to text that parses to the same record.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::spf::{MacroString, SpfRecord};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rec) = SpfRecord::parse(text) {
        let again = SpfRecord::parse(&rec.to_string()).expect("rendered record parses");
        assert_eq!(again, rec);
    }
    let _ = MacroString::parse(text, true);
});
