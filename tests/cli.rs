//! Integration tests of the `rmox` command line (an integration test of the root package:
//! its presence also makes `cargo test --workspace` build `target/debug/rmox`, which the
//! end-to-end suite in the rmox-tests crate runs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn rmox(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rmox"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("rmox-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

#[test]
fn config_example_passes_config_check() {
    let (ok, example, err) = rmox(&["config", "example"]);
    assert!(ok, "{err}");
    let dir = tmpdir("example");
    let path = dir.join("rmox.toml");
    std::fs::write(&path, example).unwrap();
    let (ok, out, err) = rmox(&["config", "check", "--config", path.to_str().unwrap()]);
    assert!(ok, "config check of the example failed: {err}");
    assert!(out.contains(": ok"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_config_is_one_line_naming_file_key_and_problem() {
    let dir = tmpdir("bad");
    let path = dir.join("rmox.toml");
    std::fs::write(&path, "hostname = \"bad host\"\ndata_dir = \"data\"\n").unwrap();
    let (ok, _, err) = rmox(&["config", "check", "--config", path.to_str().unwrap()]);
    assert!(!ok);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(path.to_str().unwrap()) && err.contains("hostname"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
