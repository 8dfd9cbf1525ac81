//! An admin command that finds the database held by another process whose admin socket
//! does not answer (a server starting or stopping) waits for it instead of failing with
//! redb's "Database already open" (seen once as a flaky `rmox import` right after a
//! server's port opened).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use rmox_tests::*;

#[test]
fn command_waits_for_a_held_database() {
    let dir = TempDir::new("ctl-wait");
    std::fs::write(
        dir.path().join("rmox.toml"),
        "hostname = \"mail.mox.example\"\ndata_dir = \"data\"\n\n[domain.\"mox.example\"]\n\n[account.mjl]\ndomain = \"mox.example\"\ndestinations = { \"mjl@mox.example\" = {} }\n",
    )
    .unwrap();
    let cfg = dir.path().join("rmox.toml");
    let cfg = cfg.to_str().unwrap().to_string();
    let data = dir.path().join("data");
    let store = rmox_storage::Store::open(&data).unwrap();
    store.account_add("mjl", "mox.example").unwrap();
    // Held for 1.5 s, as by a server between opening the database and its admin socket.
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(1500));
        drop(store);
    });
    let t = std::time::Instant::now();
    let out = rmox(&["message", "list", "mjl", "--config", &cfg], None);
    holder.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(1000),
        "it waited"
    );
}
