//! ReplyParser fed arbitrary bytes in arbitrary chunks: no panic, progress or error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::smtp::ReplyParser;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size.
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut p = ReplyParser::new();
    let mut buf: Vec<u8> = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match p.feed(&buf) {
                Ok((reply, n)) => {
                    assert!(n <= buf.len());
                    buf.drain(..n);
                    if let Some(r) = reply {
                        let mut out = Vec::new();
                        r.render(&mut out);
                    } else {
                        break;
                    }
                }
                Err(_) => return,
            }
        }
    }
});
