//! `rmox import mbox|maildir ACCOUNT PATH [--mailbox NAME]`: messages from an mbox file
//! (mboxrd and mboxo quoting: one `>` is removed from `>From ` lines) or a maildir (`cur/`
//! and `new/`, the `S` flag read as seen) into an account's mailbox.
//!
//! Streaming: one message in memory at a time (an mbox is read line by line; a maildir
//! file by file), delivered in batches of [`BATCH`] messages per storage commit. Resumable:
//! after each committed batch a state file in the data directory
//! (`import-state/<account>-<hash of the path>`) records how far the import got (the mbox
//! byte offset, or the maildir file names done); running the same import again goes on
//! from there, and a finished import imports nothing twice. A crash between a batch's
//! commit and the state file's update imports that batch again on the next run (at most
//! [`BATCH`] messages). Progress: a line on standard error every [`PROGRESS_EVERY`]
//! messages.

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rmox_storage::{Delivery, Flags, MailStore, MessageInfo};

use crate::Fail;

/// Messages per storage commit.
pub const BATCH: usize = 100;

/// Messages between progress lines.
pub const PROGRESS_EVERY: u64 = 1000;

/// Largest message imported (larger ones are skipped and counted).
pub const MAX_MESSAGE: usize = 100 << 20;

/// The formats.
#[derive(
    Copy, Clone, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One mbox file.
    Mbox,
    /// A maildir (cur/, new/).
    Maildir,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Imported {
    /// Messages imported by this run.
    pub messages: u64,
    /// An earlier run of the same import had got this far: it went on from there.
    pub resumed: bool,
    /// Messages skipped (too large, unreadable).
    pub skipped: u64,
}

fn state_path(data_dir: &Path, account: &str, path: &Path) -> PathBuf {
    let key = ring::digest::digest(&ring::digest::SHA256, path.to_string_lossy().as_bytes());
    let hex: String = key.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    data_dir
        .join("import-state")
        .join(format!("{account}-{hex}"))
}

fn write_state(p: &Path, text: &str) -> Result<(), Fail> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| Fail(format!("{}: {e}", d.display())))?;
    }
    let tmp = p.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Fail(format!("{}: {e}", tmp.display())))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Fail(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, p).map_err(|e| Fail(format!("{}: {e}", p.display())))
}

/// Collects messages and commits them in batches.
struct Batcher<'a> {
    store: &'a dyn MailStore,
    account: &'a str,
    mailbox: &'a str,
    pending: Vec<(Vec<u8>, bool)>,
    done: Imported,
    progress: bool,
}

impl Batcher<'_> {
    fn add(&mut self, msg: Vec<u8>, seen: bool) {
        if msg.len() > MAX_MESSAGE || msg.is_empty() {
            self.done.skipped += 1;
            return;
        }
        self.pending.push((msg, seen));
    }

    fn full(&self) -> bool {
        self.pending.len() >= BATCH
    }

    /// Commits what is pending (durable when it returns).
    fn flush(&mut self) -> Result<(), Fail> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let now = rmox_driver::now().wall;
        let reqs = self
            .pending
            .iter()
            .map(|(m, seen)| Delivery {
                account: self.account.to_string(),
                mailbox: self.mailbox.to_string(),
                head: &[],
                message: m,
                flags: Flags {
                    seen: *seen,
                    ..Flags::default()
                },
                received: now,
                info: MessageInfo::default(),
            })
            .collect();
        self.store.deliver_many(reqs)?;
        let before = self.done.messages;
        self.done.messages += self.pending.len() as u64;
        self.pending.clear();
        if self.progress && before / PROGRESS_EVERY != self.done.messages / PROGRESS_EVERY {
            eprintln!("import: {} messages", self.done.messages);
        }
        Ok(())
    }
}

/// Ends a line with CRLF.
fn crlf(line: &[u8], out: &mut Vec<u8>) {
    let bare = line
        .strip_suffix(b"\n")
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .unwrap_or(line);
    out.extend_from_slice(bare);
    out.extend_from_slice(b"\r\n");
}

/// Imports `path` into `account`'s `mailbox`; `progress`: lines on standard error. Where
/// an interrupted import resumes from is kept under `data_dir`.
pub fn import(
    store: &dyn MailStore,
    data_dir: &Path,
    format: Format,
    account: &str,
    mailbox: &str,
    path: &Path,
    progress: bool,
) -> Result<Imported, Fail> {
    if store.account(account)?.is_none() {
        return Err(Fail(format!("account {account:?} not found")));
    }
    let state = state_path(data_dir, account, path);
    let mut b = Batcher {
        store,
        account,
        mailbox,
        pending: Vec::new(),
        done: Imported::default(),
        progress,
    };
    match format {
        Format::Mbox => {
            let start: u64 = std::fs::read_to_string(&state)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            let mut f =
                std::fs::File::open(path).map_err(|e| Fail(format!("{}: {e}", path.display())))?;
            f.seek(SeekFrom::Start(start))
                .map_err(|e| Fail(format!("{}: {e}", path.display())))?;
            b.done.resumed = start > 0;
            let mut r = BufReader::new(f);
            let mut offset = start;
            let mut msg: Option<Vec<u8>> = None;
            let mut line = Vec::new();
            loop {
                line.clear();
                let n = r
                    .read_until(b'\n', &mut line)
                    .map_err(|e| Fail(format!("{}: {e}", path.display())))?;
                if n == 0 {
                    break;
                }
                if line.starts_with(b"From ") {
                    if let Some(m) = msg.take() {
                        b.add(trim_final_blank(m), false);
                        if b.full() {
                            b.flush()?;
                            // Everything before this From line is imported.
                            write_state(&state, &offset.to_string())?;
                        }
                    }
                    msg = Some(Vec::new());
                } else if let Some(m) = msg.as_mut() {
                    // mboxrd/mboxo: one '>' less on quoted From lines.
                    let unquoted = match line.iter().position(|c| *c != b'>') {
                        Some(i) if i > 0 && line[i..].starts_with(b"From ") => &line[1..],
                        _ => &line[..],
                    };
                    crlf(unquoted, m);
                }
                offset += n as u64;
            }
            if let Some(m) = msg.take() {
                b.add(trim_final_blank(m), false);
            }
            b.flush()?;
            write_state(&state, &offset.to_string())?;
        }
        Format::Maildir => {
            let done_names: std::collections::BTreeSet<String> = std::fs::read_to_string(&state)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect();
            b.done.resumed = !done_names.is_empty();
            let mut names: Vec<(String, PathBuf)> = Vec::new();
            for sub in ["cur", "new"] {
                let dir = path.join(sub);
                let rd = match std::fs::read_dir(&dir) {
                    Ok(r) => r,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Fail(format!("{}: {e}", dir.display()))),
                };
                for e in rd.flatten() {
                    let name = format!("{sub}/{}", e.file_name().to_string_lossy());
                    if !done_names.contains(&name) {
                        names.push((name, e.path()));
                    }
                }
            }
            names.sort();
            let mut batch_names = Vec::new();
            for (name, p) in names {
                match std::fs::read(&p) {
                    Ok(bytes) => {
                        let mut m = Vec::with_capacity(bytes.len() + bytes.len() / 32);
                        for line in bytes.split_inclusive(|c| *c == b'\n') {
                            crlf(line, &mut m);
                        }
                        let seen = name
                            .rsplit_once(":2,")
                            .is_some_and(|(_, flags)| flags.contains('S'));
                        b.add(m, seen);
                    }
                    Err(_) => b.done.skipped += 1,
                }
                batch_names.push(name);
                if b.full() {
                    b.flush()?;
                    append_names(&state, &batch_names)?;
                    batch_names.clear();
                }
            }
            b.flush()?;
            append_names(&state, &batch_names)?;
        }
    }
    Ok(b.done)
}

/// Adds maildir names to the state file (fsynced).
fn append_names(state: &Path, names: &[String]) -> Result<(), Fail> {
    if let Some(d) = state.parent() {
        std::fs::create_dir_all(d).map_err(|e| Fail(format!("{}: {e}", d.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state)
        .map_err(|e| Fail(format!("{}: {e}", state.display())))?;
    let mut text = String::new();
    for n in names {
        text.push_str(n);
        text.push('\n');
    }
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| Fail(format!("{}: {e}", state.display())))
}

/// An mbox message ends with the blank line before the next `From ` line: not part of it.
fn trim_final_blank(mut m: Vec<u8>) -> Vec<u8> {
    if m.ends_with(b"\r\n\r\n") {
        m.truncate(m.len() - 2);
    }
    m
}
