//! The HTTP/1.1 codec fed arbitrary bytes in arbitrary chunks, as requests and as
//! responses: no panic, consumed counts within the input, bodies within the limit, and a
//! parsed head that re-encodes parses back to the same head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::http::codec::{
    encode_request, encode_response, parse_request, parse_response, BodyDecoder, Limits,
};

fuzz_target!(|data: &[u8]| {
    // The first byte: bit 0 picks request or response, the rest the chunk size.
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(mode >> 1).max(1);
    let limits = Limits {
        max_head: 4096,
        max_headers: 16,
        max_body: 8192,
    };
    let mut buf: Vec<u8> = Vec::new();
    let mut body = Vec::new();
    let mut decoder: Option<BodyDecoder> = None;
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            if let Some(d) = decoder.as_mut() {
                let Ok(n) = d.decode(&buf, &mut body) else {
                    return;
                };
                assert!(n <= buf.len());
                assert!(body.len() <= limits.max_body);
                buf.drain(..n);
                if !d.is_done() {
                    break;
                }
                decoder = None;
                body.clear();
                continue;
            }
            let framing = if mode & 1 == 0 {
                let Ok(Some((h, n))) = parse_request(&buf, &limits) else {
                    break;
                };
                assert!(n <= buf.len());
                buf.drain(..n);
                let mut out = Vec::new();
                if encode_request(&h, b"", &mut out).is_ok() {
                    let (again, m) = parse_request(&out, &Limits::default())
                        .expect("re-encoded request parses")
                        .expect("re-encoded request is complete");
                    assert_eq!(m, out.len());
                    assert_eq!(again.method, h.method);
                    assert_eq!(again.target, h.target);
                    assert_eq!(&again.headers[..h.headers.len()], &h.headers[..]);
                }
                h.framing()
            } else {
                let Ok(Some((h, n))) = parse_response(&buf, &limits) else {
                    break;
                };
                assert!(n <= buf.len());
                buf.drain(..n);
                let mut out = Vec::new();
                if encode_response(&h, b"", &mut out).is_ok() {
                    let (again, _) = parse_response(&out, &Limits::default())
                        .expect("re-encoded response parses")
                        .expect("re-encoded response is complete");
                    assert_eq!(again.status, h.status);
                    assert_eq!(&again.headers[..h.headers.len()], &h.headers[..]);
                }
                h.framing("GET")
            };
            let Ok(f) = framing else { return };
            let Ok(d) = BodyDecoder::new(f, &limits) else {
                return;
            };
            decoder = Some(d);
        }
    }
    if let Some(mut d) = decoder {
        let _ = d.finish();
    }
});
