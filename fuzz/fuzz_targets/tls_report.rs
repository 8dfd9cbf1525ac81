//! TLS report parsing (JSON, gzip, whole messages) must never panic, and a parsed report
//! must read back the same after writing (as JSON and gzipped).
#![no_main]

#[path = "mail_parser_hook.rs"]
mod mail_parser_hook;

use libfuzzer_sys::fuzz_target;
use rmox_core::tlspolicy::{parse_report, parse_report_file, parse_report_message};

fuzz_target!(|data: &[u8]| {
    mail_parser_hook::install();
    if let Ok(r) = parse_report_file(data) {
        let again = parse_report(r.to_json().as_bytes()).expect("written report parses");
        assert_eq!(again, r);
        let again = parse_report_file(&r.to_gzip()).expect("gzipped report parses");
        assert_eq!(again, r);
    }
    let _ = parse_report_message(data);
});
