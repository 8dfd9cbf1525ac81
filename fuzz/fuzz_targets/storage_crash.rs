//! A crash at one exact I/O operation of a workload decoded from the input (the first two
//! bytes pick the crash point, the third the fsync mode): both crash images must recover
//! to the state before or after the operation in flight and verify clean. Same code as
//! `storage/tests/crash_points.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_storage::testing::check::ops_from_bytes;
use rmox_storage::testing::points::check_crash_points;

fuzz_target!(|data: &[u8]| {
    let [a, b, mode, rest @ ..] = data else {
        return;
    };
    // A short workload: every crash point run replays it.
    let rest = &rest[..rest.len().min(60)];
    let ops = ops_from_bytes(rest);
    let point = u64::from(u16::from_le_bytes([*a, *b]));
    if let Err(e) = check_crash_points(&ops, mode & 1 == 1, Some(point), 4) {
        panic!("{e}\nops: {ops:#?}");
    }
});
