//! DataReader fed arbitrary bytes in arbitrary chunks: no panic, and the same result as
//! feeding everything at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_core::smtp::DataReader;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let max = 1000;

    let mut whole = DataReader::new(max);
    let mut whole_out = Vec::new();
    let whole_res = whole.feed(data, &mut whole_out);

    let mut r = DataReader::new(max);
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut end = None;
    for piece in data.chunks(chunk) {
        let (n, e) = r.feed(piece, &mut out);
        consumed += n;
        if e.is_some() {
            end = e;
            break;
        }
        assert_eq!(n, piece.len());
    }
    assert_eq!((consumed, end), whole_res);
    assert_eq!(out, whole_out);
    assert!(out.len() as u64 <= max);
});
