//! The multipart/form-data reader on arbitrary bodies and Content-Types: no panic; at most
//! `max_parts` parts; each part's data a slice of the body; file names without a directory;
//! and a body read under small limits reads the same under the default ones.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::http::multipart::{boundary, parse_form_data, FormLimits};

fuzz_target!(|data: &[u8]| {
    // The first byte: bit 0 picks a fixed Content-Type or the input's first line as the
    // Content-Type; the rest are the parts limit.
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (content_type, body) = if mode & 1 == 0 {
        ("multipart/form-data; boundary=XyZ".to_string(), rest)
    } else {
        let (line, body) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        (String::from_utf8_lossy(line).into_owned(), body)
    };
    let _ = boundary(&content_type);
    let limits = FormLimits {
        max_parts: usize::from(mode >> 1),
        max_part_header_bytes: 256,
    };
    let small = parse_form_data(&content_type, body, &limits);
    let large = parse_form_data(&content_type, body, &FormLimits::default());
    if let Ok(parts) = &small {
        assert!(parts.len() <= limits.max_parts);
        let range = body.as_ptr_range();
        for p in parts {
            let d = p.data.as_ptr_range();
            assert!(range.start <= d.start && d.end <= range.end);
            if let Some(f) = &p.filename {
                assert!(!f.contains(['/', '\\']));
            }
        }
        // Limits refuse bodies, never change how one reads.
        assert_eq!(Ok(parts), large.as_ref());
    }
    if let Err(e) = &large {
        let _ = e.to_string();
    }
});
