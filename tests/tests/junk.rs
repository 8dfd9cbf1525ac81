//! The junk filter through the real binary (issue 17): a corpus generated here (not real
//! mail) trains an account's filter with `rmox junk train` (a maildir of spam, an mbox of
//! ham) while the server runs, `rmox junk check` prints the probability on its first line,
//! and on every runtime a spammy message from a sender without history is refused (451,
//! nothing leaked, kept in the rejects mailbox) while one in the words of the ham is
//! accepted with its score in `X-Rmox-Reason`. With the server stopped, the command trains
//! the data directory itself and shows its progress.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::Ipv4Addr;
use std::path::Path;

use rmox_tests::*;

const SMTP: u16 = 2525;

const ZONE: &str = "remote.example. IN A 127.0.0.1
example.org. IN A 127.0.0.1
example.org. IN TXT \"v=spf1 ip4:127.0.0.1 -all\"
_dmarc.example.org. IN TXT \"v=DMARC1;p=reject\"
1.0.0.127.in-addr.arpa. IN PTR remote.example.
";

fn config_text(ip: Ipv4Addr) -> String {
    format!(
        r#"hostname = "mail.mox.example"
data_dir = "data"
resolver = ["zonefile:zone.txt"]

[[listener]]
name = "test"
ip = "{ip}"
smtp = {{ port = {SMTP} }}

[domain."mox.example"]

[account.mjl]
domain = "mox.example"
destinations = {{ "mjl@mox.example" = {{}} }}
rejects_mailbox = "Rejects"
junk_filter = {{}}
"#
    )
}

const SPAM: &[&str] = &[
    "viagra",
    "pills",
    "cheap",
    "lottery",
    "winner",
    "prize",
    "claim",
    "casino",
    "bitcoin",
    "investment",
    "guaranteed",
    "profit",
    "discount",
    "offer",
    "exclusive",
    "urgent",
];
const HAM: &[&str] = &[
    "meeting", "project", "review", "schedule", "agenda", "notes", "draft", "budget", "team",
    "lunch", "family", "weekend", "release", "deploy", "feedback", "slides",
];
const COMMON: &[&str] = &[
    "the", "and", "for", "with", "this", "please", "thanks", "today",
];

/// Message `i` of a class: 30 words, mostly of its own vocabulary (deterministic).
fn message(i: usize, spam: bool) -> String {
    let own = if spam { SPAM } else { HAM };
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut pick = |from: &[&'static str]| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        from[(x % from.len() as u64) as usize]
    };
    let words: Vec<&str> = (0..30)
        .map(|k| if k % 3 == 0 { pick(COMMON) } else { pick(own) })
        .collect();
    format!(
        "From: <sender{i}@corpus.example>\r\nTo: <mjl@mox.example>\r\nSubject: {} {}\r\n\r\n{}\r\n",
        pick(own),
        pick(own),
        words.join(" ")
    )
}

/// 80 spam messages as a maildir and 80 ham messages as an mbox under `dir`.
fn write_corpus(dir: &Path) -> (String, String) {
    let md = dir.join("spam");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    for i in 0..80 {
        std::fs::write(
            md.join("cur").join(format!("{i}.gen:2,S")),
            message(i, true),
        )
        .unwrap();
    }
    let mut mbox = String::new();
    for i in 0..80 {
        mbox.push_str("From corpus@example Thu Jan  1 00:00:00 2026\n");
        mbox.push_str(&message(i, false).replace("\r\n", "\n"));
        mbox.push('\n');
    }
    let mb = dir.join("ham.mbox");
    std::fs::write(&mb, mbox).unwrap();
    (
        md.to_str().unwrap().to_string(),
        mb.to_str().unwrap().to_string(),
    )
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `rmox junk check`'s first line: the probability.
fn check(cfg: &str, file: &Path) -> f64 {
    let out = ok(&rmox(
        &[
            "junk",
            "check",
            "mjl",
            file.to_str().unwrap(),
            "--config",
            cfg,
        ],
        None,
    ));
    out.lines().next().unwrap().parse().unwrap()
}

/// One message from remote@example.org (SPF and DMARC pass, no history); the final
/// reply's code.
fn send(srv: &Server, subject: &str, body: &str) -> u16 {
    let mut c = srv.connect(SMTP);
    c.expect(220);
    c.expect_cmd("EHLO remote.example", 250);
    c.expect_cmd("MAIL FROM:<remote@example.org>", 250);
    c.expect_cmd("RCPT TO:<mjl@mox.example>", 250);
    c.expect_cmd("DATA", 354);
    c.send(
        format!("From: <remote@example.org>\r\nTo: <mjl@mox.example>\r\nSubject: {subject}\r\n\r\n{body}\r\n.\r\n")
            .as_bytes(),
    );
    let code = match c.reply() {
        ReplyOrClose::Reply(code, text) => {
            if code == 451 {
                assert_eq!(
                    text.trim_end(),
                    "451 4.3.0 error processing, try again later"
                );
            }
            code
        }
        ReplyOrClose::Closed => panic!("closed after DATA:\n{}", srv.stderr()),
    };
    c.shutdown();
    code
}

fn trained_then_judged(rt: &str) {
    let dir = TempDir::new(&format!("junk-{rt}"));
    let ip = unique_ip();
    std::fs::write(dir.path().join("rmox.toml"), config_text(ip)).unwrap();
    std::fs::write(dir.path().join("zone.txt"), ZONE).unwrap();
    let (spam, ham) = write_corpus(dir.path());
    let spam_sample = dir.path().join("spam.eml");
    let ham_sample = dir.path().join("ham.eml");
    std::fs::write(&spam_sample, message(1000, true)).unwrap();
    std::fs::write(&ham_sample, message(1000, false)).unwrap();
    let srv = Server::serve(rt, dir, ip, SMTP);
    let cfg = srv.config_path();
    let cfg = cfg.to_str().unwrap();

    // Untrained: no opinion.
    assert_eq!(check(cfg, &spam_sample), 0.5);
    let out = ok(&rmox(
        &[
            "junk", "train", "mjl", "--spam", &spam, "--ham", &ham, "--config", cfg,
        ],
        None,
    ));
    assert!(out.contains("trained 80 spam and 80 ham messages"), "{out}");
    let p = check(cfg, &spam_sample);
    assert!(p > 0.95, "spam sample: {p}");
    let p = check(cfg, &ham_sample);
    assert!(p < 0.05, "ham sample: {p}");

    // Spammy words from a sender without history: refused and kept in Rejects.
    let spammy = "cheap pills and bitcoin investment, guaranteed profit for the winner";
    assert_eq!(
        send(&srv, "exclusive offer", spammy),
        451,
        "{}",
        srv.stderr()
    );
    let log = srv.stderr();
    assert!(log.contains("reason=junk-content"), "{log}");
    let list = ok(&rmox(
        &["message", "list", "mjl", "--json", "--config", cfg],
        None,
    ));
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["mailbox"], "Rejects");
    // The ham's words: accepted.
    let hammy = "the project meeting agenda and the release notes, please review";
    assert_eq!(send(&srv, "team meeting", hammy), 250, "{}", srv.stderr());
    let out = ok(&rmox(
        &[
            "export",
            "mbox",
            "mjl",
            Path::new(cfg)
                .parent()
                .unwrap()
                .join("out.mbox")
                .to_str()
                .unwrap(),
            "--config",
            cfg,
        ],
        None,
    ));
    let _ = out;
    let mbox = std::fs::read_to_string(Path::new(cfg).parent().unwrap().join("out.mbox")).unwrap();
    assert!(mbox.contains("content: not junk, spamscore 0.0"), "{mbox}");
}

rmox_tests::on_every_runtime!(trained_then_judged);

/// With the server stopped, `rmox junk train` trains the data directory itself, with a
/// progress line; bad input gets a clear error.
#[test]
fn train_offline_with_progress_and_errors() {
    let dir = TempDir::new("junk-offline");
    let ip = unique_ip();
    std::fs::write(dir.path().join("rmox.toml"), config_text(ip)).unwrap();
    let (spam, ham) = write_corpus(dir.path());
    let cfg = dir.path().join("rmox.toml");
    let cfg = cfg.to_str().unwrap();
    // The account exists in storage once the server ran once; create it the same way.
    ok(&rmox(
        &["account", "setpassword", "mjl", "--config", cfg],
        Some("testtest\n"),
    ));
    let out = rmox(
        &[
            "junk", "train", "mjl", "--spam", &spam, "--ham", &ham, "--config", cfg,
        ],
        None,
    );
    let stdout = ok(&out);
    assert!(stdout.contains("trained 80 spam and 80 ham"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rmox junk train: spam 100%") && stderr.contains("ham done"),
        "{stderr}"
    );
    let sample = dir.path().join("s.eml");
    std::fs::write(&sample, message(2000, true)).unwrap();
    let out = ok(&rmox(
        &[
            "junk",
            "check",
            "mjl",
            sample.to_str().unwrap(),
            "--json",
            "--config",
            cfg,
        ],
        None,
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["junk"], true, "{v}");
    assert_eq!(v["significant"], true, "{v}");
    // Errors: no corpus given, a missing path, an account without a filter.
    let out = rmox(&["junk", "train", "mjl", "--config", cfg], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give --spam DIR and/or --ham DIR"));
    let out = rmox(
        &[
            "junk",
            "train",
            "mjl",
            "--spam",
            "/nonexistent/x",
            "--config",
            cfg,
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x"));
    let out = rmox(
        &[
            "junk",
            "check",
            "nobody",
            sample.to_str().unwrap(),
            "--config",
            cfg,
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such account"));
}
