//! The storage interface against its model: operations decoded from the input run on a
//! real store (database in a simulated backend, message files on disk) and on the
//! in-memory model; every answer and the whole observable state must agree after every
//! step, and verify must be clean at every reopen. Same code as the proptest
//! `storage/tests/model.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rmox_storage::testing::check::{check_ops, ops_from_bytes, temp_root, Backing};

fuzz_target!(|data: &[u8]| {
    let (_dir, root) = temp_root();
    let ops = ops_from_bytes(data);
    if let Err(e) = check_ops(&root, &ops, Backing::Memory) {
        panic!("{e}\nops: {ops:#?}");
    }
});
