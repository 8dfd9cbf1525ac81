//! Opening the configured storage backend (`[storage]`): the embedded redb store in
//! `data_dir`, or PostgreSQL shared by several nodes. Everything else takes the result as
//! `Arc<dyn MailStore>` and does not know which it is.

use std::sync::Arc;
use std::time::Duration;

use rmox_storage::{MailStore, Store, StoreError};

use crate::config::{Config, StorageKind};
use crate::Fail;

/// How a caller wants a locked embedded database answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opener {
    /// The server: one process holds the data directory.
    Server,
    /// A command run beside no server (`rmox account ...`, `rmox export`): the message
    /// says to stop the server.
    Offline,
}

/// The configured backend, opened (PostgreSQL: connected, schema migrated), with the
/// accounts' maildir copies set.
pub fn open(c: &Config, who: Opener) -> Result<Arc<dyn MailStore>, Fail> {
    Ok(match open_raw(c) {
        Ok(s) => s,
        Err(e) => return Err(Fail(describe(c, &e, who))),
    })
}

/// [`open`] keeping the store's error (a caller that waits while the database is locked).
pub fn open_raw(c: &Config) -> Result<Arc<dyn MailStore>, StoreError> {
    let store: Arc<dyn MailStore> = match c.storage.kind {
        StorageKind::Redb => Arc::new(Store::open_with_cache(
            &c.data_dir(),
            c.storage_cache_bytes(),
        )?),
        StorageKind::Postgres => Arc::new(rmox_storage_pg::PgStore::open_with(
            c.storage.url.as_deref().unwrap_or_default(),
            rmox_storage_pg::PgOptions {
                max_idle: c.storage.pool_idle,
                connect_timeout: Duration::from_secs(10),
                node: c.storage_node(),
                lease_secs: i64::try_from(c.storage.lease_secs).unwrap_or(i64::MAX),
            },
        )?),
    };
    let maildirs = c
        .maildirs()
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
    store.set_maildirs(maildirs);
    Ok(store)
}

/// Adds account `name` (of `domain`) unless it exists: nodes sharing a store may add the
/// same configured account at the same moment, and the second finds it there.
pub fn ensure_account(store: &dyn MailStore, name: &str, domain: &str) -> Result<(), StoreError> {
    if store.account(name)?.is_some() {
        return Ok(());
    }
    match store.account_add(name, domain) {
        Ok(()) | Err(StoreError::AccountExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What failed, for the operator.
pub fn describe(c: &Config, e: &StoreError, who: Opener) -> String {
    match c.storage.kind {
        StorageKind::Redb => {
            let data = c.data_dir();
            if who == Opener::Offline && e.is_locked() {
                format!(
                    "opening data directory {}: {e} (is `rmox serve` running? stop it first)",
                    data.display()
                )
            } else {
                format!("opening data directory {}: {e}", data.display())
            }
        }
        StorageKind::Postgres => format!("opening the PostgreSQL storage ([storage] url): {e}"),
    }
}

/// The backend's name for logs and `rmox status`.
pub fn kind_name(c: &Config) -> &'static str {
    match c.storage.kind {
        StorageKind::Redb => "redb",
        StorageKind::Postgres => "postgres",
    }
}
