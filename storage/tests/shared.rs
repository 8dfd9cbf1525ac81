//! The counters-under-concurrency check every backend passes
//! (`rmox_storage::testing::shared`), on the embedded store: two handles of one store,
//! four threads each.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: failing loudly is the point

use std::sync::Arc;

use rmox_storage::testing::shared::counters_under_concurrency;
use rmox_storage::{MailStore, Store};

#[test]
fn counters_exact_under_concurrency() {
    let dir = std::env::temp_dir().join(format!("rmox-shared-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let s: Arc<dyn MailStore> = Arc::new(Store::open(&dir).unwrap());
    counters_under_concurrency(&[Arc::clone(&s), s]);
    let _ = std::fs::remove_dir_all(&dir);
}
