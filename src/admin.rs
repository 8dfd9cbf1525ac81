//! Administration commands: accounts, domains, export, backup, verify.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use clap::ValueEnum;
use rmox_storage::MailStore;

use crate::config::Config;
use crate::Fail;

/// Export formats.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    /// One mbox file (mboxrd quoting).
    Mbox,
    /// A maildir (cur/new/tmp).
    Maildir,
}

fn open_store(c: &Config) -> Result<std::sync::Arc<dyn MailStore>, Fail> {
    crate::storage::open(c, crate::storage::Opener::Offline)
}

/// Edits the config file as TOML, keeping comments, and writes it back atomically after
/// checking the result still validates.
fn edit_config(
    path: &Path,
    f: impl FnOnce(&mut toml_edit::DocumentMut) -> Result<(), Fail>,
) -> Result<Config, Fail> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Fail(format!("{}: cannot read: {e}", path.display())))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| Fail(format!("{}: {e}", path.display())))?;
    f(&mut doc)?;
    let new = doc.to_string();
    let c = Config::parse(&new, path)?;
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, &new).map_err(|e| Fail(format!("{}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| Fail(format!("{}: {e}", path.display())))?;
    Ok(c)
}

/// `rmox account add NAME ADDRESS`.
pub fn account_add(config: &Path, name: &str, address: &str) -> Result<(), Fail> {
    let current = Config::load(config)?;
    if current.account.contains_key(name) {
        return Err(Fail(format!(
            "{}: account.{name}: already exists",
            config.display()
        )));
    }
    let a = rmox_core::smtp::Address::parse(address)
        .map_err(|e| Fail(format!("address {address:?}: {e}")))?;
    let rmox_core::smtp::Host::Domain(d) = &a.host else {
        return Err(Fail(format!("address {address:?}: needs a domain")));
    };
    let domain = d.ascii.clone();
    let c = edit_config(config, |doc| {
        let accounts = doc
            .entry("account")
            .or_insert(toml_edit::table())
            .as_table_mut()
            .ok_or_else(|| Fail(format!("{}: account: not a table", config.display())))?;
        accounts.set_implicit(true);
        let mut t = toml_edit::Table::new();
        t["domain"] = toml_edit::value(domain.clone());
        let mut dests = toml_edit::InlineTable::new();
        dests.insert(
            a.to_string(),
            toml_edit::Value::InlineTable(toml_edit::InlineTable::new()),
        );
        t["destinations"] = toml_edit::Item::Value(toml_edit::Value::InlineTable(dests));
        accounts.insert(name, toml_edit::Item::Table(t));
        Ok(())
    })?;
    // A running server adds it to storage with the reload; else it is added here.
    if !crate::ctl::reload_if_running(&c)? {
        let store = open_store(&c)?;
        crate::storage::ensure_account(store.as_ref(), name, &domain)?;
    }
    println!("account {name} added with address {a}; set a password with: rmox account setpassword {name}");
    Ok(())
}

/// Derives and stores the credentials for `password`.
pub fn set_password(store: &dyn MailStore, account: &str, password: &str) -> Result<(), Fail> {
    use ring::rand::SecureRandom;
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| Fail("no random source for the salt".into()))?;
    store.set_credentials(account, crate::creds::derive_all(password, &salt))?;
    Ok(())
}

/// `rmox account setpassword NAME`: the password comes from stdin.
pub fn account_setpassword(config: &Path, name: &str) -> Result<(), Fail> {
    let c = Config::load(config)?;
    if !c.account.contains_key(name) {
        return Err(Fail(format!(
            "{}: account.{name}: no such account",
            config.display()
        )));
    }
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("new password for {name} (shown as typed): ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Fail(format!("reading password: {e}")))?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.len() < 8 {
        return Err(Fail("password too short: at least 8 characters".into()));
    }
    crate::ctl::run(
        config,
        crate::ctl::Request::AccountPassword {
            name: name.to_string(),
            password: password.to_string(),
        },
        false,
    )
}

/// `rmox account disable|enable NAME`.
pub fn account_disable(config: &Path, name: &str, message: Option<String>) -> Result<(), Fail> {
    let c = Config::load(config)?;
    if !c.account.contains_key(name) {
        return Err(Fail(format!(
            "{}: account.{name}: no such account",
            config.display()
        )));
    }
    crate::ctl::run(
        config,
        crate::ctl::Request::AccountLogins {
            name: name.to_string(),
            disabled: message,
        },
        false,
    )
}

/// `rmox account quota NAME BYTES`: `quota_message_size` in the configuration file, then
/// the running server reloads it.
pub fn account_quota(config: &Path, name: &str, bytes: u64) -> Result<(), Fail> {
    let current = Config::load(config)?;
    if !current.account.contains_key(name) {
        return Err(Fail(format!(
            "{}: account.{name}: no such account",
            config.display()
        )));
    }
    let c = edit_config(config, |doc| {
        let t = doc["account"][name]
            .as_table_like_mut()
            .ok_or_else(|| Fail(format!("{}: account.{name}: not a table", config.display())))?;
        t.insert(
            "quota_message_size",
            toml_edit::value(i64::try_from(bytes).unwrap_or(i64::MAX)),
        );
        Ok(())
    })?;
    if bytes == 0 {
        println!("no quota for {name}");
    } else {
        println!("quota of {name}: {bytes} octets");
    }
    crate::ctl::reload_if_running(&c).map(|_| ())
}

/// `rmox domain add DOMAIN`.
pub fn domain_add(config: &Path, domain: &str) -> Result<(), Fail> {
    let d = rmox_core::smtp::Domain::parse(domain)
        .map_err(|e| Fail(format!("domain {domain:?}: {e}")))?;
    let current = Config::load(config)?;
    if current.domain.contains_key(&d.ascii) {
        return Err(Fail(format!(
            "{}: domain.{:?}: already exists",
            config.display(),
            d.ascii
        )));
    }
    edit_config(config, |doc| {
        let domains = doc
            .entry("domain")
            .or_insert(toml_edit::table())
            .as_table_mut()
            .ok_or_else(|| Fail(format!("{}: domain: not a table", config.display())))?;
        domains.set_implicit(true);
        domains.insert(&d.ascii, toml_edit::Item::Table(toml_edit::Table::new()));
        Ok(())
    })?;
    println!("domain {} added", d.ascii);
    crate::ctl::reload_if_running(&current).map(|_| ())
}

/// `rmox domain disable|enable DOMAIN`.
pub fn domain_set_disabled(config: &Path, domain: &str, disabled: bool) -> Result<(), Fail> {
    let current = Config::load(config)?;
    if !current.domain.contains_key(domain) {
        return Err(Fail(format!(
            "{}: domain.{domain:?}: no such domain",
            config.display()
        )));
    }
    edit_config(config, |doc| {
        let t = doc["domain"][domain].as_table_mut().ok_or_else(|| {
            Fail(format!(
                "{}: domain.{domain:?}: not a table",
                config.display()
            ))
        })?;
        t["disabled"] = toml_edit::value(disabled);
        Ok(())
    })?;
    println!(
        "domain {domain} {}",
        if disabled { "disabled" } else { "enabled" }
    );
    crate::ctl::reload_if_running(&current).map(|_| ())
}

/// `rmox export mbox|maildir ACCOUNT DEST` (through the running server when there is one).
pub fn export(config: &Path, format: ExportFormat, account: &str, dest: &Path) -> Result<(), Fail> {
    let dest = std::path::absolute(dest).map_err(|e| Fail(format!("{}: {e}", dest.display())))?;
    crate::ctl::run(
        config,
        crate::ctl::Request::Export {
            format,
            account: account.to_string(),
            dest,
        },
        false,
    )
}

/// Writes `account`'s messages to `dest`; the line to print.
pub fn export_store(
    store: &dyn MailStore,
    format: ExportFormat,
    account: &str,
    dest: &Path,
) -> Result<String, Fail> {
    let msgs = store.messages(account)?;
    let mut n = 0;
    match format {
        ExportFormat::Mbox => {
            let mut out = Vec::new();
            for m in msgs.iter().filter(|m| !m.expunged) {
                let bytes = store.message_bytes(m.id)?;
                let (y, mo, d, hh, mm, ss, wd) = m.received.civil();
                const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
                const MONTHS: [&str; 12] = [
                    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
                    "Dec",
                ];
                let sender = m
                    .info
                    .mail_from
                    .clone()
                    .unwrap_or_else(|| "MAILER-DAEMON".into());
                out.extend_from_slice(
                    format!(
                        "From {sender} {} {} {d:2} {hh:02}:{mm:02}:{ss:02} {y}\n",
                        DAYS[wd as usize],
                        MONTHS[(mo - 1) as usize]
                    )
                    .as_bytes(),
                );
                mboxrd_append(&mut out, &bytes);
                n += 1;
            }
            std::fs::write(dest, out).map_err(|e| Fail(format!("{}: {e}", dest.display())))?;
        }
        ExportFormat::Maildir => {
            for sub in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(dest.join(sub))
                    .map_err(|e| Fail(format!("{}: {e}", dest.display())))?;
            }
            for m in msgs.iter().filter(|m| !m.expunged) {
                let bytes = store.message_bytes(m.id)?;
                let flags = if m.flags.seen { "S" } else { "" };
                let name = format!("{}.{}.rmox:2,{flags}", m.received.0, m.id);
                std::fs::write(dest.join("cur").join(name), bytes)
                    .map_err(|e| Fail(format!("{}: {e}", dest.display())))?;
                n += 1;
            }
        }
    }
    Ok(format!(
        "exported {n} messages of {account} to {}",
        dest.display()
    ))
}

/// Appends one message to an mboxrd file body, after its `From ` line: the message's bytes
/// exactly as stored (8-bit data and CRLF line endings untouched), with one `>` added before
/// every line that matches `>*From `, then the blank line that ends the entry. A reader that
/// removes one `>` from such lines gets the stored bytes back (plus a final line ending when
/// the message had none).
fn mboxrd_append(out: &mut Vec<u8>, message: &[u8]) {
    for line in message.split_inclusive(|b| *b == b'\n') {
        let unquoted = line
            .iter()
            .position(|b| *b != b'>')
            .map_or(&[][..], |i| &line[i..]);
        if unquoted.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !message.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// `rmox backup DIR`.
pub fn backup(config: &Path, dir: &Path) -> Result<(), Fail> {
    let c = Config::load(config)?;
    // A running server owns the database: ask it to make the copy.
    let abs = std::path::absolute(dir).map_err(|e| Fail(format!("{}: {e}", dir.display())))?;
    if let Some(r) = crate::ctl::request(&c.data_dir(), &crate::ctl::Request::Backup { dir: abs }) {
        r?.print(false);
        return Ok(());
    }
    let store = open_store(&c)?;
    let r = store.backup(dir)?;
    println!(
        "backup written to {}: {} messages, {} queued messages, {} bytes",
        dir.display(),
        r.messages,
        r.queue_messages,
        r.bytes
    );
    Ok(())
}

/// `rmox verifydata DATADIR`: one problem per line; non-zero exit when damaged.
pub fn verifydata(datadir: &Path) -> Result<(), Fail> {
    let r = rmox_storage::verify(datadir);
    for l in r.lines() {
        println!("{l}");
    }
    if r.is_ok() {
        println!("{}: ok", datadir.display());
        Ok(())
    } else {
        Err(Fail(format!(
            "{}: damaged, see the problems above",
            datadir.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::mboxrd_append;

    /// Reads back one entry written by `mboxrd_append` (the inverse an mboxrd reader applies).
    fn unquote(entry: &[u8]) -> Vec<u8> {
        let body = &entry[..entry.len() - 1]; // the separating blank line
        let mut out = Vec::new();
        for line in body.split_inclusive(|b| *b == b'\n') {
            let unquoted = line
                .iter()
                .position(|b| *b != b'>')
                .map_or(&[][..], |i| &line[i..]);
            if line.first() == Some(&b'>') && unquoted.starts_with(b"From ") {
                out.extend_from_slice(&line[1..]);
            } else {
                out.extend_from_slice(line);
            }
        }
        out
    }

    /// `rmox export mbox` used a lossy UTF-8 conversion: Latin-1 bytes became U+FFFD and CRLF
    /// became LF, so an exported 8-bit message was not the message received.
    #[test]
    fn mbox_export_is_byte_exact() {
        let msgs: [&[u8]; 4] = [
            b"Subject: caf\xe9\r\n\r\nna\xefve \xff\xfe bytes\r\nFrom the start\r\n>From quoted\r\n",
            b"Subject: x\n\nFrom \n>>From x\nFromage\n",
            b"Subject: y\r\n\r\n\x00\x80\r\n",
            b"Subject: z\r\n\r\nno final newline\xe9",
        ];
        for m in msgs {
            let mut out = Vec::new();
            mboxrd_append(&mut out, m);
            assert!(
                !out.windows(6).any(|w| w == b"\nFrom "),
                "unquoted From_ line in {out:?}"
            );
            let back = unquote(&out);
            if m.ends_with(b"\n") {
                assert_eq!(back, m);
            } else {
                assert_eq!(&back[..m.len()], m);
                assert_eq!(&back[m.len()..], b"\n");
            }
        }
    }
}
