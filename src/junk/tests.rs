use super::*;
use crate::testutil::Tmp;
use rmox_storage::{Delivery, Flags, MessageInfo, Store};

const CONFIG: &str = r#"
hostname = "mail.mox.example"
data_dir = "data"
[domain."mox.example"]
[account.mjl]
domain = "mox.example"
destinations = { "mjl@mox.example" = {} }
rejects_mailbox = "Rejects"
[account.mjl.junk_filter]
train_max_age_days = 30
[account.other]
domain = "mox.example"
destinations = { "other@mox.example" = {} }
[postmaster]
account = "mjl"
"#;

fn setup(tag: &str) -> (Tmp, Config, Store) {
    let tmp = Tmp::new(tag);
    let c = Config::parse(CONFIG, &tmp.0.join("rmox.toml")).unwrap();
    let store = Store::open(&c.data_dir()).unwrap();
    store.account_add("mjl", "mox.example").unwrap();
    store.account_add("other", "mox.example").unwrap();
    (tmp, c, store)
}

const DAY: i64 = 24 * 3600;
const NOW: UnixTime = UnixTime(1_800_000_000);

fn put(
    s: &Store,
    account: &str,
    mailbox: &str,
    flags: Flags,
    age_days: i64,
    body: &str,
) -> MessageId {
    let m = format!("Subject: hello there\r\n\r\n{body}\r\n");
    s.deliver(Delivery {
        account: account.into(),
        mailbox: mailbox.into(),
        head: b"",
        message: m.as_bytes(),
        flags,
        received: UnixTime(NOW.0 - age_days * DAY),
        info: MessageInfo::default(),
    })
    .unwrap()
}

fn junk() -> Flags {
    Flags {
        junk: true,
        ..Flags::default()
    }
}

fn notjunk() -> Flags {
    Flags {
        notjunk: true,
        ..Flags::default()
    }
}

/// Which stored messages train as what: flags first, then the mailbox; the rejects
/// mailbox, Inbox, expunged and too old messages not at all.
#[test]
fn class_of_table() {
    let (_t, c, s) = setup("junkclass");
    let cfg = c.account["mjl"].junk_filter.clone().unwrap();
    let cases = [
        ("Inbox", Flags::default(), 1, None),
        ("Inbox", junk(), 1, Some(true)),
        ("Inbox", notjunk(), 1, Some(false)),
        ("Junk", Flags::default(), 1, Some(true)),
        ("junk", notjunk(), 1, Some(false)),
        ("Archive", Flags::default(), 1, Some(false)),
        ("Lists/dev", Flags::default(), 1, Some(false)),
        ("Rejects", junk(), 1, None),
        ("Archive", Flags::default(), 31, None),
        ("Junk", junk(), 31, None),
    ];
    for (i, (mb, flags, age, want)) in cases.into_iter().enumerate() {
        let id = put(&s, "mjl", mb, flags, age, "x");
        let rec = s.message(id).unwrap().unwrap();
        assert_eq!(
            class_of(&rec, Some("Rejects"), &cfg, NOW),
            want,
            "case {i}: {mb}"
        );
    }
}

/// sync follows reclassification; the age sweep and expunge untrain; an account without
/// a filter is left alone.
#[test]
fn sync_reclassify_sweep() {
    let (_t, c, s) = setup("junksync");
    let st: &dyn MailStore = &s;
    let totals = |a: &str| {
        let (h, sp, _) = s.junk_counts(a, &[]).unwrap();
        (h, sp)
    };
    let a = put(&s, "mjl", "Archive", Flags::default(), 1, "alpha words");
    let b = put(&s, "mjl", "Inbox", Flags::default(), 40, "old spam words");
    let o = put(&s, "other", "Archive", Flags::default(), 1, "no filter");
    assert!(sync(st, &c, a, NOW).unwrap());
    assert!(
        !sync(st, &c, o, NOW).unwrap(),
        "account without a junk filter"
    );
    assert_eq!(totals("mjl"), (1, 0));
    // b is too old to train, even marked junk.
    s.set_flags(b, junk()).unwrap();
    assert!(!sync(st, &c, b, NOW).unwrap());
    // The user marks a as junk: retrained.
    s.set_flags(a, junk()).unwrap();
    assert!(sync(st, &c, a, NOW).unwrap());
    assert_eq!(totals("mjl"), (0, 1));
    // 31 days later, the sweep untrains it.
    assert_eq!(sweep(st, &c, UnixTime(NOW.0 + 29 * DAY)).unwrap(), 0);
    assert_eq!(sweep(st, &c, UnixTime(NOW.0 + 31 * DAY)).unwrap(), 1);
    assert_eq!(totals("mjl"), (0, 0));
    // retrain brings back what the classification says now.
    assert_eq!(retrain(st, &c, "mjl", NOW).unwrap(), 1);
    assert_eq!(totals("mjl"), (0, 1));
    s.expunge(a).unwrap();
    assert_eq!(totals("mjl"), (0, 0));
    assert!(
        retrain(st, &c, "other", NOW).is_err(),
        "no filter: an error"
    );
    assert_eq!(totals("other"), (0, 0));
}

/// Corpora as a maildir, a plain directory and an mbox (with an mboxrd-quoted From line
/// and an unreadable file), counted exactly.
#[test]
fn train_from_corpus_formats() {
    let (t, c, s) = setup("junkcorpus");
    let spam = corpus::messages(1, 5, true, 0.1);
    let ham = corpus::messages(1, 7, false, 0.1);
    let md = t.0.join("spam-maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    for (i, m) in spam.iter().enumerate() {
        let sub = if i % 2 == 0 { "cur" } else { "new" };
        std::fs::write(md.join(sub).join(format!("{i}.host:2,S")), m).unwrap();
    }
    let mbox = t.0.join("ham.mbox");
    let mut text = Vec::new();
    for m in &ham {
        text.extend_from_slice(b"From sender@example Thu Jan  1 00:00:00 2026\n");
        text.extend_from_slice(m);
        text.extend_from_slice(b">From quoted line\n\n");
    }
    std::fs::write(&mbox, text).unwrap();
    let r = train(&s, &c, "mjl", Some(&md), Some(&mbox), false).unwrap();
    assert_eq!(
        r,
        Trained {
            spam: 5,
            ham: 7,
            skipped: 0
        }
    );
    let (h, sp, counts) = s.junk_counts("mjl", &["from quoted".to_string()]).unwrap();
    assert_eq!((h, sp), (7, 5));
    assert_eq!(
        counts[0].ham, 7,
        "the quoted From line is the message's text"
    );
    // A plain directory, with a subdirectory (ignored) and an unreadable file.
    let dir = t.0.join("plain");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("a.eml"), &spam[0]).unwrap();
    std::os::unix::fs::symlink(dir.join("missing"), dir.join("broken")).unwrap();
    let r = train(&s, &c, "mjl", Some(&dir), None, false).unwrap();
    assert_eq!(r.spam, 1);
    // Errors name the problem.
    let e = train(&s, &c, "mjl", Some(&t.0.join("nope")), None, false).unwrap_err();
    assert!(e.0.contains("nope"), "{}", e.0);
    let e = train(&s, &c, "other", Some(&dir), None, false).unwrap_err();
    assert!(e.0.contains("has no junk_filter"), "{}", e.0);
}

/// On a generated corpus (trained on one part, checked on another), the filter finds the
/// spam and leaves the ham: precision and recall well above chance. The benchmark
/// (`junk_bench`) reports the numbers over larger corpora.
#[test]
fn generated_corpus_precision_recall() {
    let (_t, c, s) = setup("junkpr");
    let p = c.account["mjl"].junk_filter.as_ref().unwrap().params();
    let tok = |m: &Vec<u8>| junk::tokenize(&p, m);
    let mut train_set = Vec::new();
    for m in corpus::messages(7, 300, true, 0.15) {
        train_set.push((true, tok(&m)));
    }
    for m in corpus::messages(7, 300, false, 0.15) {
        train_set.push((false, tok(&m)));
    }
    s.junk_train_tokens("mjl", train_set).unwrap();
    let (mut tp, mut fp, mut fneg) = (0, 0, 0);
    for (spam, msgs) in [
        (true, corpus::messages(8, 200, true, 0.15)),
        (false, corpus::messages(8, 200, false, 0.15)),
    ] {
        for m in msgs {
            let r = classify(&s, "mjl", &p, &m).unwrap();
            assert!(r.significant);
            let said = r.probability > p.threshold;
            match (said, spam) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fneg += 1,
                _ => {}
            }
        }
    }
    let precision = f64::from(tp) / f64::from((tp + fp).max(1));
    let recall = f64::from(tp) / f64::from((tp + fneg).max(1));
    assert!(
        precision >= 0.98,
        "precision {precision} (tp {tp}, fp {fp})"
    );
    assert!(recall >= 0.9, "recall {recall} (tp {tp}, fn {fneg})");
}
