//! The one error type of the store.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::model::{MessageId, QueueId};

/// Why a store operation failed. A failed write stored nothing that a later read can see
/// (message files it wrote are orphans that [`crate::verify`] reports as safe to delete).
///
/// Cloneable because one failed group commit is reported to every caller in the batch.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The embedded database failed (I/O error, full disk, corruption, a failed commit).
    /// After a failed commit it refuses further writes until the store is reopened.
    #[error("database: {message}")]
    Database {
        /// What kind of failure, for callers that answer them differently.
        failure: DbFailure,
        /// What failed, as the database said it.
        message: String,
    },
    /// Creating, writing, syncing, reading or removing a file failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "sync", "read", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: Arc<io::Error>,
    },
    /// The data directory was written by a newer rmox; refusing to touch it.
    #[error("schema version {found} is newer than the newest this rmox knows ({supported}): upgrade rmox")]
    SchemaTooNew {
        /// Version recorded in the database.
        found: u64,
        /// Newest version this build supports.
        supported: u64,
    },
    /// No account with this name.
    #[error("no account {0:?}")]
    NoAccount(String),
    /// An account with this name exists already.
    #[error("account {0:?} exists already")]
    AccountExists(String),
    /// Storing the message would take the account over its quota.
    #[error("account {account:?} over quota: {used} + {size} > {quota} bytes")]
    QuotaExceeded {
        /// The account.
        account: String,
        /// Bytes stored now.
        used: u64,
        /// Size of the new message(s).
        size: u64,
        /// The limit.
        quota: u64,
    },
    /// No message with this id.
    #[error("no message {0}")]
    NoMessage(MessageId),
    /// No queue entry with this id.
    #[error("no queue entry {0}")]
    NoQueueEntry(QueueId),
    /// The store was opened read-only (verify) and a write was attempted.
    #[error("store opened read-only")]
    ReadOnly,
    /// A record could not be decoded (written by a buggy or foreign program).
    #[error("corrupt record in table {table}: {detail}")]
    Corrupt {
        /// Table name.
        table: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The caller passed an argument the store cannot use (empty name, no recipients, ...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Code running inside a commit panicked; the batch was aborted.
    #[error("a write operation panicked; batch aborted")]
    Panicked,
    /// A backend other than the embedded redb one failed (a lost connection, a failed
    /// commit, a statement the database refused). Whether the write happened is unknown
    /// only when the commit itself failed; every other failure stored nothing.
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend ("postgres").
        backend: &'static str,
        /// What failed, as the backend said it.
        message: String,
    },
    /// The backend cannot do this operation (yet); nothing was changed.
    #[error("not supported by the {backend} backend: {what}")]
    Unsupported {
        /// Which backend ("postgres").
        backend: &'static str,
        /// The operation.
        what: &'static str,
    },
}

/// The kinds of [`StoreError::Database`] failure callers tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbFailure {
    /// Another process holds the database (a running server, or one starting or stopping).
    Locked,
    /// The database was not closed cleanly and a read-only open cannot repair it.
    NeedsRecovery,
    /// An operating system error of this kind.
    Io(io::ErrorKind),
    /// Anything else (corruption, a failed commit, ...).
    Other,
}

impl StoreError {
    /// True when the database is held by another process (a running server, or one
    /// starting or stopping).
    pub fn is_locked(&self) -> bool {
        matches!(
            self,
            StoreError::Database {
                failure: DbFailure::Locked,
                ..
            }
        )
    }

    /// True when the failure is the disk being full (the server answers 452, not 451).
    pub fn is_disk_full(&self) -> bool {
        match self {
            StoreError::Io { source, .. } => source.kind() == io::ErrorKind::StorageFull,
            StoreError::Database {
                failure: DbFailure::Io(k),
                ..
            } => *k == io::ErrorKind::StorageFull,
            _ => false,
        }
    }

    /// True for failures of the storage itself (database, files, panics) as opposed to a
    /// refusal of this one request (no such account, over quota, ...). A server answers
    /// the first with a temporary error (451/452).
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Database { .. }
                | StoreError::Io { .. }
                | StoreError::Panicked
                | StoreError::Backend { .. }
        )
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, e: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.into(),
            source: Arc::new(e),
        }
    }
}

impl StoreError {
    /// The embedded database's error in storage terms.
    fn from_redb(e: redb::Error) -> StoreError {
        let failure = match &e {
            redb::Error::DatabaseAlreadyOpen => DbFailure::Locked,
            redb::Error::RepairAborted => DbFailure::NeedsRecovery,
            redb::Error::Io(io) => DbFailure::Io(io.kind()),
            _ => DbFailure::Other,
        };
        StoreError::Database {
            failure,
            message: e.to_string(),
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::from_redb(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
