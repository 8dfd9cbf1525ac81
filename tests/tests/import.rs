//! `rmox import mbox|maildir` (issue 16) through the real binary: into a running server
//! (every runtime) and a stopped one; an mbox grown after an import imports only its new
//! messages (resumable), `>From ` quoting is undone, a maildir's seen flags are kept, and a
//! repeated import imports nothing twice.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;

use rmox_tests::*;

const SMTP: u16 = 2525;

fn mbox(from: usize, to: usize) -> String {
    let mut s = String::new();
    for i in from..to {
        let _ = write!(
            s,
            "From sender@example.org Wed Dec  2 10:00:00 2026\nFrom: <sender@example.org>\nSubject: imported {i}\nMessage-Id: <{i}@example.org>\n\nbody {i}\n>From the quoted line\n\n"
        );
    }
    s
}

fn import(cfg: &str, args: &[&str]) -> String {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    all.extend(["--config", cfg]);
    let out = rmox(&all, None);
    assert!(
        out.status.success(),
        "rmox {all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn imports_resume_and_never_twice(rt: &str) {
    let dir = TempDir::new(&format!("import-{rt}"));
    let ip = unique_ip();
    std::fs::write(
        dir.path().join("rmox.toml"),
        format!(
            "hostname = \"mail.mox.example\"\ndata_dir = \"data\"\n\n[[listener]]\nname = \"t\"\nip = \"{ip}\"\nsmtp = {{ port = {SMTP} }}\n\n[domain.\"mox.example\"]\n\n[account.mjl]\ndomain = \"mox.example\"\ndestinations = {{ \"mjl@mox.example\" = {{}} }}\n"
        ),
    )
    .unwrap();
    let mut srv = Server::serve(rt, dir, ip, SMTP);
    let cfg_path = srv.config_path();
    let cfg = cfg_path.to_str().unwrap().to_string();
    let mbox_path = srv.dir.path().join("old.mbox");
    std::fs::write(&mbox_path, mbox(0, 250)).unwrap();
    let mp = mbox_path.to_str().unwrap();
    // Into the running server.
    let out = import(&cfg, &["mbox", "mjl", mp, "--mailbox", "Archive"]);
    assert!(
        out.contains("imported 250 messages into mjl/Archive"),
        "{out}"
    );
    // Again: nothing new.
    let out = import(&cfg, &["mbox", "mjl", mp, "--mailbox", "Archive"]);
    assert!(out.contains("imported 0 messages"), "{out}");
    // The file grew: only the new messages.
    let mut grown = mbox(0, 250);
    grown.push_str(&mbox(250, 400));
    std::fs::write(&mbox_path, grown).unwrap();
    let out = import(&cfg, &["mbox", "mjl", mp, "--mailbox", "Archive"]);
    assert!(out.contains("imported 150 messages"), "{out}");
    assert!(
        out.contains("went on from where an earlier run stopped"),
        "{out}"
    );
    // A maildir, with the server stopped.
    srv.stop_clean();
    let md = srv.dir.path().join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    for i in 0..120 {
        let (sub, flags) = if i % 2 == 0 {
            ("cur", ":2,S")
        } else {
            ("new", "")
        };
        std::fs::write(
            md.join(sub).join(format!("{i}.host{flags}")),
            format!("From: <m@example.org>\nSubject: maildir {i}\n\nbody\n"),
        )
        .unwrap();
    }
    let mdp = md.to_str().unwrap();
    let out = import(&cfg, &["maildir", "mjl", mdp]);
    assert!(
        out.contains("imported 120 messages into mjl/Inbox"),
        "{out}"
    );
    let out = import(&cfg, &["maildir", "mjl", mdp]);
    assert!(out.contains("imported 0 messages"), "{out}");
    let exported = srv.export_mbox("mjl");
    let msgs = mbox_messages(&exported);
    assert_eq!(msgs.len(), 520, "400 from the mbox, 120 from the maildir");
    for i in [0, 249, 250, 399] {
        assert_eq!(count_subject(&exported, &format!("imported {i}")), 1, "{i}");
    }
    let m = msgs
        .iter()
        .find(|m| m.contains("Subject: imported 7"))
        .unwrap();
    assert!(
        m.contains("\n>From the quoted line") || m.contains("\nFrom the quoted line"),
        "{m}"
    );
    // The export quotes From lines again (mboxrd): one level, as imported.
    assert!(!m.contains(">>From"), "{m}");
}

on_every_runtime!(imports_resume_and_never_twice);
