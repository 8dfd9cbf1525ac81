//! Aggregate report parsing (XML, gzip, zip, whole messages) must never panic, and a
//! parsed report must read back the same after writing.
#![no_main]

#[path = "mail_parser_hook.rs"]
mod mail_parser_hook;

use libfuzzer_sys::fuzz_target;
use rmox_core::dmarc::{parse_report, parse_report_file, parse_report_message};

fuzz_target!(|data: &[u8]| {
    mail_parser_hook::install();
    if let Ok(f) = parse_report_file(data) {
        let again = parse_report(f.to_xml().as_bytes()).expect("written report parses");
        assert_eq!(again, f);
    }
    let _ = parse_report_message(data);
});
