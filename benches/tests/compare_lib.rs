//! compare.sh's verdict helpers (benches/compare-lib.sh) on made-up results: which round is
//! a cell's result, the spread it reports, the order servers run in, and pass/FAIL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// Runs `script` in bash with the helpers sourced, `OUT=dir` and `ROUNDS=rounds`, under
/// compare.sh's own `set -euo pipefail`; returns stdout (fails on a non-zero exit).
fn run(dir: &Path, rounds: u32, script: &str) -> String {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("compare-lib.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail; . '{}'; {script}",
            lib.display()
        ))
        .env("OUT", dir)
        .env("ROUNDS", rounds.to_string())
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{script}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Writes round `r` of server `s` (1 KiB, 10 sessions, no pipelining) with `rate` msg/s.
fn round(dir: &Path, s: &str, r: u32, rate: f64) {
    std::fs::write(
        dir.join(format!("send-{s}-1024-10-no-r{r}.json")),
        format!("{{\"messages_per_second\": {rate}, \"round\": {r}}}"),
    )
    .unwrap();
}

#[test]
fn the_median_round_is_the_result_and_the_spread_is_reported() {
    let d = tempfile::tempdir().unwrap();
    round(d.path(), "a", 1, 300.0);
    round(d.path(), "a", 2, 100.4);
    round(d.path(), "a", 3, 200.0);
    let out = run(
        d.path(),
        3,
        "keep_median a 1024 10 no; jq -r .round \"$OUT/send-a-1024-10-no.json\"; \
         spread a 1024 10 no; echo; rate a 1024 10 no",
    );
    assert_eq!(out, "3\n100 300\n200\n", "median round 3, spread 100-300");
}

#[test]
fn an_even_count_keeps_the_lower_middle_and_a_missing_round_is_skipped() {
    let d = tempfile::tempdir().unwrap();
    round(d.path(), "a", 1, 50.0);
    round(d.path(), "a", 2, 70.0);
    // Round 3 missing (the server failed in it): two rounds remain, the slower is kept.
    let out = run(
        d.path(),
        3,
        "keep_median a 1024 10 no; jq -r .round \"$OUT/send-a-1024-10-no.json\"; \
         spread a 1024 10 no",
    );
    assert_eq!(out, "1\n50 70");
    // No round at all: no result, an empty spread, and no failure.
    let out = run(
        d.path(),
        3,
        "keep_median b 1024 10 no; spread b 1024 10 no; \
         test ! -e \"$OUT/send-b-1024-10-no.json\" && echo none",
    );
    assert_eq!(out, "none\n");
}

#[test]
fn each_round_rotates_the_servers_by_one() {
    let d = tempfile::tempdir().unwrap();
    let out = run(
        d.path(),
        3,
        "for r in 1 2 3 4; do echo $(rotated $r a b c); done",
    );
    assert_eq!(out, "a b c\nb c a\nc a b\na b c\n");
}

#[test]
fn judge_and_ratio() {
    let d = tempfile::tempdir().unwrap();
    let out = run(
        d.path(),
        1,
        "judge 4.99 '>=' 5; judge 5 '>=' 5; judge 0.41 '<=' 0.4; judge 0.99 '<' 1; \
         judge 1 '<' 1; judge '' '>=' 5; ratio 10 4; echo; ratio 10 0; echo; ratio '' 4; echo",
    );
    assert_eq!(
        out, "FAIL\npass\nFAIL\npass\nFAIL\nn/a\n2.50\n\n\n",
        "a ratio by zero or of nothing is empty, and an empty measure is n/a"
    );
}
