//! `benches/compare.sh` end to end, small (20 messages per cell, one round, tokio and
//! glommio), on this build's binaries: it must finish and print every table, the runtime
//! floor with a row for each runtime's `rmox-floor` and the lines drawn from them, and the
//! targets with a pass/FAIL/n/a column for each.
//! The figures themselves are not judged here (timing claims belong to the benchmark's own
//! runs, README's Performance). It needs root, Postfix and jq, which `.ci/run` installs:
//! under CI a missing one fails the test; elsewhere the test says so and does nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// Why compare.sh cannot run here, if it cannot.
fn missing() -> Option<String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root {
        return Some("not root (Postfix must be started as root)".into());
    }
    for tool in ["postfix", "smtp-sink", "postconf", "jq"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} not installed"));
        }
    }
    None
}

/// The target rows for tokio and glommio: three rates and the latency, smtp-sink, CPU and
/// fdatasync rows for each runtime, and one for glommio against the others.
const TARGET_ROWS: usize = 3 * 2 + 2 + 2 + 2 + 1 + 2;

#[test]
fn compare_sh_prints_every_table_and_judges_every_target() {
    if let Some(why) = missing() {
        assert!(
            std::env::var_os("CI").is_none(),
            "compare.sh cannot run under CI: {why}"
        );
        eprintln!("compare_smoke: not run: {why}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path();
    let run = Command::new("timeout")
        .args(["--signal=TERM", "900", "bash", "benches/compare.sh"])
        .current_dir(root)
        .env("NO_BUILD", "1")
        .env("RUNTIMES", "tokio glommio")
        .env("MSGS", "20")
        .env("ROUNDS", "1")
        .env("SECS", "2")
        .env("IDLE", "10")
        .env("NOOPS", "100")
        .env("FSYNC_SECS", "0.5")
        .env("OUT", out)
        .env("RMOX_BIN", rmox_tests::rmox_bin())
        .env("LOAD_BIN", env!("CARGO_BIN_EXE_rmox-load"))
        .env("FLOOR_BIN", env!("CARGO_BIN_EXE_rmox-floor"))
        .env("FSYNC_BENCH_BIN", env!("CARGO_BIN_EXE_fsync_bench"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    let tail: String = {
        let lines: Vec<&str> = stderr.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    assert!(run.status.success(), "{:?}\n{stdout}\n{tail}", run.status);

    // The targets: one row each, judged pass, FAIL or n/a, and the count line agrees.
    let targets = std::fs::read_to_string(out.join("targets.md")).unwrap();
    let rows: Vec<&str> = targets
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| target"))
        .collect();
    assert_eq!(rows.len(), TARGET_ROWS, "{targets}");
    for r in &rows {
        let verdict = r.trim_end_matches('|').rsplit('|').next().unwrap().trim();
        assert!(
            ["pass", "FAIL", "n/a"].contains(&verdict),
            "{verdict:?} in {r}"
        );
    }
    let count = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("targets: "))
        .unwrap_or_else(|| panic!("no count line in\n{stdout}"));
    let n: usize = count
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse::<usize>().ok())
        .sum();
    assert_eq!(n, TARGET_ROWS, "{count}");

    // Every table, and every cell of the main one for every server.
    let table = std::fs::read_to_string(out.join("table.txt")).unwrap();
    for heading in [
        "msg/s per server",
        "rounds: each server's slowest-fastest msg/s",
        "p99 final-dot latency",
        "connections accepted per second",
        "server memory per idle session",
        "fdatasyncs per acknowledged message",
        "glommio against the faster of rmox-tokio",
        "runtime floor: NOOP round trips",
        "physical limit of",
    ] {
        assert!(table.contains(heading), "no {heading:?} in\n{table}");
    }
    let cells = table
        .lines()
        .skip_while(|l| !l.starts_with("msg/s per server"))
        .filter(|l| l.starts_with("1KiB ") || l.starts_with("64KiB "))
        .take(12)
        .filter(|l| l.split_whitespace().count() == 3 + 4 + 4)
        .count();
    assert_eq!(cells, 12, "{table}");

    // The runtime floor: a rate for every server and every runtime's floor from 1 session,
    // and the lines drawn from them.
    let servers = [
        "rmox-tokio",
        "rmox-glommio",
        "postfix",
        "smtp-sink",
        "floor-tokio",
        "floor-glommio",
    ];
    let floor: Vec<&str> = table
        .lines()
        .skip_while(|l| !l.starts_with("runtime floor:"))
        .skip(2)
        .take(servers.len())
        .collect();
    assert_eq!(floor.len(), servers.len(), "{table}");
    for (line, server) in floor.iter().zip(servers) {
        let mut w = line.split_whitespace();
        assert_eq!(w.next(), Some(server), "{table}");
        let rate: f64 = w.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        assert!(rate > 0.0, "{line}");
    }
    for line in [
        "glommio, one session: ",
        "rmox's own code per round trip, one session (rmox row minus its runtime's floor row): tokio ",
        "glommio's floor, one session: ",
    ] {
        assert!(table.contains(line), "no {line:?} in\n{table}");
    }
    for s in servers {
        let f = out.join(format!("send-{s}-noop-1-no.json"));
        let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(j["mode"], "noop", "{}", f.display());
        assert_eq!(j["messages_ok"], 100, "{s}: {j}");
    }
}
