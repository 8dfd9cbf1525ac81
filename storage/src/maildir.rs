//! Maildir++ copies of an account's messages, for an IMAP server (Dovecot) to serve.
//!
//! An account with a maildir gets every delivered message written there too, durably and
//! before the delivery returns (so before any 250): the file is written in `tmp/`, synced,
//! renamed into `new/` (or `cur/` with the `S` flag when already seen) and the directory
//! synced. Layout (Maildir++, Dovecot's default): the inbox is the root's `cur`/`new`/`tmp`;
//! mailbox `A/B` is the folder `.A.B` with a `maildirfolder` file. A file's name carries
//! the message id (`TIME.MID.rmox,S=SIZE`), so the store can tell which of its messages the
//! user moved to Junk through IMAP ([`Maildir::junk_ids`]).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::StoreError;

/// Where an account's maildir is and who else may use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Maildir {
    /// The root (the inbox's `cur`/`new`/`tmp` live here).
    pub root: PathBuf,
    /// A group that gets read and write access (files 0660, directories 2770), for an IMAP
    /// server running as another user; `None`: private to rmox's user (0600/0700).
    pub group: Option<u32>,
}

/// The mailbox the IMAP server shows as Junk.
pub(crate) const JUNK: &str = "Junk";

fn io(what: &'static str, p: &Path, e: std::io::Error) -> StoreError {
    StoreError::io(what, p, e)
}

impl Maildir {
    /// The folder of `mailbox`: the root for the inbox (any case), else `.A.B` for `A/B`.
    /// Names that would leave the root (`..`, a leading dot, empty parts) are refused.
    pub fn folder(&self, mailbox: &str) -> Result<PathBuf, StoreError> {
        if mailbox.eq_ignore_ascii_case("inbox") {
            return Ok(self.root.clone());
        }
        let parts: Vec<&str> = mailbox.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || p.starts_with('.') || p.contains(['\0', '\\']))
        {
            return Err(StoreError::Invalid(format!(
                "mailbox name {mailbox:?} cannot be a maildir folder"
            )));
        }
        Ok(self.root.join(format!(".{}", parts.join("."))))
    }

    fn mkdir(&self, p: &Path) -> Result<(), StoreError> {
        if p.is_dir() {
            return Ok(());
        }
        let mode = if self.group.is_some() { 0o2770 } else { 0o700 };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(p)
            .map_err(|e| io("create maildir directory", p, e))?;
        self.own(p, mode)
    }

    /// Gives `p` to the group (when one is configured) with `mode`.
    fn own(&self, p: &Path, mode: u32) -> Result<(), StoreError> {
        if let Some(gid) = self.group {
            std::os::unix::fs::chown(p, None, Some(gid))
                .map_err(|e| io("set maildir group", p, e))?;
            fs::set_permissions(p, fs::Permissions::from_mode(mode))
                .map_err(|e| io("set maildir permissions", p, e))?;
        }
        Ok(())
    }

    /// Makes sure `folder` is a maildir (and, when not the root, a Maildir++ folder).
    fn ensure(&self, folder: &Path) -> Result<(), StoreError> {
        // The root and the folder get the group too (directories above the root are the
        // operator's: they must let the IMAP server through).
        self.mkdir(&self.root)?;
        self.mkdir(folder)?;
        for sub in ["cur", "new", "tmp"] {
            self.mkdir(&folder.join(sub))?;
        }
        if folder != self.root {
            let marker = folder.join("maildirfolder");
            if !marker.exists() {
                fs::write(&marker, b"").map_err(|e| io("create maildirfolder", &marker, e))?;
                self.own(&marker, 0o660)?;
            }
        }
        Ok(())
    }

    /// Writes message `id` into `mailbox`, durably; returns the file's path.
    pub fn deliver(
        &self,
        mailbox: &str,
        id: u64,
        received: i64,
        parts: &[&[u8]],
        seen: bool,
    ) -> Result<PathBuf, StoreError> {
        let folder = self.folder(mailbox)?;
        self.ensure(&folder)?;
        let size: usize = parts.iter().map(|p| p.len()).sum();
        let base = format!("{received}.M{id}.rmox,S={size}");
        let tmp = folder.join("tmp").join(&base);
        let mode = if self.group.is_some() { 0o660 } else { 0o600 };
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&tmp)
                .map_err(|e| io("create maildir file", &tmp, e))?;
            for p in parts {
                f.write_all(p)
                    .map_err(|e| io("write maildir file", &tmp, e))?;
            }
            f.sync_all().map_err(|e| io("sync maildir file", &tmp, e))?;
        }
        self.own(&tmp, mode)?;
        let (dir, name) = if seen {
            ("cur", format!("{base}:2,S"))
        } else {
            ("new", base)
        };
        let dest = folder.join(dir).join(name);
        fs::rename(&tmp, &dest).map_err(|e| io("move maildir file into place", &dest, e))?;
        let d = folder.join(dir);
        fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("sync maildir directory", &d, e))?;
        Ok(dest)
    }

    /// Removes message `id`'s file from `mailbox` (where the IMAP server may have renamed
    /// it within `cur`/`new`); not finding it is not an error.
    pub fn remove(&self, mailbox: &str, id: u64) -> Result<(), StoreError> {
        let folder = self.folder(mailbox)?;
        for p in files_of(&folder)? {
            if id_of(&p) == Some(id) {
                fs::remove_file(&p).map_err(|e| io("remove maildir file", &p, e))?;
            }
        }
        Ok(())
    }

    /// The ids of rmox's messages in the Junk folder (moved there by the user through
    /// IMAP, or delivered there): a listing of its `cur` and `new`.
    pub fn junk_ids(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .junk_since(0)?
            .into_iter()
            .filter_map(|e| match e {
                JunkFile::Id(id) => Some(id),
                JunkFile::MessageId(_) => None,
            })
            .collect())
    }

    /// The files in the Junk folder changed (arrived) at or after `since` (seconds, ctime:
    /// a rename or link sets it), each by rmox's id when its name has one (rmox delivered
    /// it there), else by its Message-ID (an IMAP server copying a message gives it a new
    /// name). Files without either are left out.
    pub fn junk_since(&self, since: i64) -> Result<Vec<JunkFile>, StoreError> {
        use std::os::unix::fs::MetadataExt;
        let folder = self.folder(JUNK)?;
        let mut out = Vec::new();
        for p in files_of(&folder)? {
            let Ok(meta) = fs::metadata(&p) else {
                continue;
            };
            if meta.ctime() < since {
                continue;
            }
            if let Some(id) = id_of(&p) {
                out.push(JunkFile::Id(id));
                continue;
            }
            if let Some(mid) = message_id_of(&p) {
                out.push(JunkFile::MessageId(mid));
            }
        }
        Ok(out)
    }
}

/// A message in the Junk folder ([`Maildir::junk_since`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JunkFile {
    /// One of rmox's messages, by id.
    Id(u64),
    /// A message known by its Message-ID only.
    MessageId(String),
}

/// The header of a message file is read up to this size for its Message-ID.
const MAX_HEADER_READ: usize = 64 * 1024;

fn message_id_of(p: &Path) -> Option<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    fs::File::open(p)
        .ok()?
        .take(MAX_HEADER_READ as u64)
        .read_to_end(&mut buf)
        .ok()?;
    let end = rmox_core::message::body_offset(&buf).unwrap_or(buf.len());
    rmox_core::message::message_id(&buf[..end])
}

/// The files in a folder's `cur` and `new` (none when it does not exist).
fn files_of(folder: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    for sub in ["cur", "new"] {
        let d = folder.join(sub);
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("list maildir", &d, e)),
        };
        for e in rd {
            out.push(e.map_err(|e| io("list maildir", &d, e))?.path());
        }
    }
    Ok(out)
}

/// The message id in a file name written by [`Maildir::deliver`] (`TIME.MID.rmox,...`).
fn id_of(p: &Path) -> Option<u64> {
    let name = p.file_name()?.to_str()?;
    let mut parts = name.split('.');
    parts.next()?;
    let m = parts.next()?;
    let rest = parts.next()?;
    if !rest.starts_with("rmox") {
        return None;
    }
    m.strip_prefix('M')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(dir: &Path) -> Maildir {
        Maildir {
            root: dir.join("Maildir"),
            group: None,
        }
    }

    #[test]
    fn folders() {
        let m = md(Path::new("/x"));
        assert_eq!(m.folder("INBOX").unwrap(), Path::new("/x/Maildir"));
        assert_eq!(m.folder("Inbox").unwrap(), Path::new("/x/Maildir"));
        assert_eq!(m.folder("Junk").unwrap(), Path::new("/x/Maildir/.Junk"));
        assert_eq!(m.folder("A/B").unwrap(), Path::new("/x/Maildir/.A.B"));
        for bad in ["", "../x", "A//B", ".hidden", "A/../B", "a\\b"] {
            assert!(m.folder(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deliver_junk_and_remove() {
        let d = tempfile::tempdir().unwrap();
        let m = md(d.path());
        let p = m
            .deliver("Inbox", 7, 100, &[b"A: b\r\n", b"\r\nbody\r\n"], false)
            .unwrap();
        assert_eq!(p, d.path().join("Maildir/new/100.M7.rmox,S=14"));
        assert_eq!(fs::read(&p).unwrap(), b"A: b\r\n\r\nbody\r\n");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(fs::read_dir(d.path().join("Maildir/tmp"))
            .unwrap()
            .next()
            .is_none());
        let s = m.deliver("Archive/2026", 8, 100, &[b"x"], true).unwrap();
        assert_eq!(
            s,
            d.path()
                .join("Maildir/.Archive.2026/cur/100.M8.rmox,S=1:2,S")
        );
        assert!(d
            .path()
            .join("Maildir/.Archive.2026/maildirfolder")
            .exists());
        // The user moves message 7 to Junk (an IMAP server renames, adding flags).
        m.deliver("Junk", 9, 100, &[b"y"], false).unwrap();
        fs::rename(&p, d.path().join("Maildir/.Junk/cur/100.M7.rmox,S=14:2,S")).unwrap();
        fs::write(d.path().join("Maildir/.Junk/cur/1.other.host:2,"), b"z").unwrap();
        let mut junk = m.junk_ids().unwrap();
        junk.sort_unstable();
        assert_eq!(junk, [7, 9]);
        m.remove("Junk", 7).unwrap();
        assert_eq!(m.junk_ids().unwrap(), [9]);
        m.remove("Nowhere", 1).unwrap();
    }
}
