//! Reading delivery status notifications: any message, and any status part on its own, is
//! read or refused, never a panic; what is read stays within the documented limits.
#![no_main]

#[path = "mail_parser_hook.rs"]
mod mail_parser_hook;

use libfuzzer_sys::fuzz_target;
use rmox_core::queue::dsnread::{
    read_delivery_status, read_dsn, DsnReport, MAX_FIELD_LEN, MAX_RECIPIENTS,
};

fn check(r: &DsnReport) {
    assert!(!r.recipients.is_empty());
    assert!(r.recipients.len() <= MAX_RECIPIENTS);
    for rcpt in &r.recipients {
        assert!(!rcpt.final_recipient.is_empty());
        // Lossy UTF-8 turns one invalid octet into three (U+FFFD).
        assert!(rcpt.final_recipient.len() <= 3 * MAX_FIELD_LEN);
        assert!(rcpt
            .diagnostic_code
            .as_ref()
            .is_none_or(|d| d.len() <= 3 * MAX_FIELD_LEN));
        // Status is checked, so there are always codes.
        let (code, enhanced) = rcpt.codes();
        assert!((200..600).contains(&code), "{code}");
        assert!(enhanced.is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    mail_parser_hook::install();
    // The first byte picks: a whole message, or a status part (global or not).
    match data.split_first() {
        Some((0, rest)) => {
            if let Ok(r) = read_delivery_status(rest, false) {
                check(&r);
            }
        }
        Some((1, rest)) => {
            if let Ok(r) = read_delivery_status(rest, true) {
                check(&r);
            }
        }
        _ => {
            if let Ok(r) = read_dsn(data) {
                check(&r);
            }
        }
    }
});
