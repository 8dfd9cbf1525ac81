//! The webapi's request reading and message composition on arbitrary bodies: a request is
//! read or refused with a JSON error, never a panic; a composed message keeps every line
//! under 998 octets and within the size limit; the inbox's search query parses and matches.
#![no_main]

#[path = "mail_parser_hook.rs"]
mod mail_parser_hook;

use libfuzzer_sys::fuzz_target;
use rmox_core::inbox::{Facts, Query};
use rmox_core::webapi::{compose, parse, request_json, ComposeContext, NameAddress, SendRequest};

fuzz_target!(|data: &[u8]| {
    mail_parser_hook::install();
    let (ct, body) = match data.first() {
        Some(0) => ("application/x-www-form-urlencoded", &data[1..]),
        Some(_) => ("application/json", &data[1..]),
        None => ("application/json", data),
    };
    let q = Query::parse(&String::from_utf8_lossy(body));
    let _ = q.matches(&Facts {
        from: "a@example.org",
        subject: "s",
        ..Default::default()
    });
    let Ok(text) = request_json(Some(ct), body) else {
        return;
    };
    let Ok(req) = parse::<SendRequest>(&text) else {
        return;
    };
    let cx = ComposeContext {
        default_from: NameAddress {
            name: "F".into(),
            address: "f@example.org".into(),
        },
        hostname: "mail.example.org".into(),
        now: rmox_core::UnixTime(1_800_000_000),
        random: 7,
        max_size: 1 << 20,
    };
    if let Ok(c) = compose(&req, &cx) {
        assert!(c.message.split(|&b| b == b'\n').all(|l| l.len() <= 998));
        assert!(c.message.len() <= 1 << 20);

    }
});
