//! Model-based test of the storage interface: operation sequences decoded from random
//! bytes run against a real store and an in-memory model (`rmox_storage::testing::check`,
//! the same code the cargo-fuzz target `storage_model` drives); after every step the
//! observable state must match. `RMOX_MODEL_CASES` raises the number of cases.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

use proptest::prelude::*;
use rmox_storage::testing::check::{check_ops, ops_from_bytes, Backing};

fn cases(default: u32) -> u32 {
    std::env::var("RMOX_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(96), ..ProptestConfig::default() })]

    /// In memory (database bytes in a simulated backend, file syncs skipped): many cases.
    #[test]
    fn store_matches_model(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        let tmp = tempfile::tempdir().unwrap();
        let ops = ops_from_bytes(&data);
        if let Err(e) = check_ops(tmp.path(), &ops, Backing::Memory) {
            panic!("{e}\nops: {ops:#?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(96) / 12, ..ProptestConfig::default() })]

    /// On the real `index.db` with every fsync, as in production: fewer cases.
    #[test]
    fn store_on_disk_matches_model(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let tmp = tempfile::tempdir().unwrap();
        let ops = ops_from_bytes(&data);
        if let Err(e) = check_ops(tmp.path(), &ops, Backing::File) {
            panic!("{e}\nops: {ops:#?}");
        }
    }
}
