//! The junk filter on generated corpora (`rmox::junk::corpus`: not real mail): precision,
//! recall and F1 for training sets of several sizes and for classes that share more or
//! less of their vocabulary, and the cost of training and of one classification (tokenize
//! plus the counts read from storage), in one run.
//!
//! ```text
//! cargo run --release -p rmox-benches --bin junk_bench -- [--test N]
//! ```
//!
//! Each row trains a fresh store with `train` messages per class, then classifies `--test`
//! (default 500) unseen messages per class at mox's default threshold (0.95). The
//! baseline column is the score of a classifier that calls everything spam (recall 1,
//! precision 0.5): the filter's F1 over it is the ratio printed. Figures only, no
//! assertions; the tests (`src/junk/tests.rs`) hold the floor.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: failures abort

use std::time::Instant;

use rmox::junk::corpus;
use rmox_core::junk::{tokenize, Params};
use rmox_storage::Store;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let test = arg("--test", 500);
    let p = Params::default();
    println!(
        "junk filter on generated corpora: {test} unseen messages per class, threshold {}",
        p.threshold
    );
    println!(
        "{:>6} {:>8} {:>9} {:>7} {:>6} {:>9} {:>12} {:>12}",
        "train", "overlap", "precision", "recall", "F1", "F1/base", "train msg/s", "classify us"
    );
    for (train, overlap) in [
        (100, 0.15),
        (500, 0.15),
        (2000, 0.15),
        (500, 0.3),
        (2000, 0.3),
        (2000, 0.45),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.account_add("a", "example.org").unwrap();
        let t0 = Instant::now();
        let mut set = Vec::new();
        for (spam, seed) in [(true, 1), (false, 2)] {
            for m in corpus::messages(seed, train, spam, overlap) {
                set.push((spam, tokenize(&p, &m)));
                if set.len() >= 200 {
                    store
                        .junk_train_tokens("a", std::mem::take(&mut set))
                        .unwrap();
                }
            }
        }
        store.junk_train_tokens("a", set).unwrap();
        let train_rate = (2 * train) as f64 / t0.elapsed().as_secs_f64();
        let (mut tp, mut fp, mut fneg) = (0u32, 0u32, 0u32);
        let t1 = Instant::now();
        for (spam, seed) in [(true, 101), (false, 102)] {
            for m in corpus::messages(seed, test, spam, overlap) {
                let c = rmox::junk::classify(&store, "a", &p, &m).unwrap();
                match (c.probability > p.threshold, spam) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fneg += 1,
                    _ => {}
                }
            }
        }
        let per = t1.elapsed().as_secs_f64() * 1e6 / (2 * test) as f64;
        let precision = f64::from(tp) / f64::from((tp + fp).max(1));
        let recall = f64::from(tp) / f64::from((tp + fneg).max(1));
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        // Everything called spam: precision 0.5, recall 1.
        let base = 2.0 * 0.5 / 1.5;
        println!(
            "{train:>6} {overlap:>8.2} {precision:>9.3} {recall:>7.3} {f1:>6.3} {:>8.2}x {train_rate:>12.0} {per:>12.1}",
            f1 / base
        );
    }
}
