//! The engine's error type: every failure names what was wrong, and its variant says whose
//! fault it is (the caller's input, the data on disk, the environment, or a bug), so callers
//! map it to a status code without reading the message.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An engine error. The message names the collection, column, row or file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input was refused (schema mismatch, wrong dimension, NaN, null vector, duplicate id,
    /// bad name, bad argument). Nothing was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A collection that does not exist was named.
    #[error("not found: {0}")]
    NotFound(String),
    /// A collection with that name exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A file on disk is damaged: bad checksum, truncated, unparseable, changed under us.
    #[error("corrupt file {}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The database directory is held by another open handle.
    #[error(
        "database {} is already open (its LOCK file is held by another handle or process)",
        .0.display()
    )]
    Locked(PathBuf),
    /// An I/O failure, with the path it happened on.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// An Arrow failure while encoding or decoding data.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A commit failed after its manifest was put in place (syncing the directory failed, and
    /// so did putting the previous manifest back): the collection may be at either version
    /// until it is opened again, and refuses writes meanwhile.
    #[error("commit outcome unknown: {0}")]
    Unsettled(String),
    /// A limit of the engine was reached (the message names the setting); nothing was
    /// written, and the call may succeed when retried later.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    /// Another writer (another process over the same storage) committed to the collection
    /// first; nothing was written by this call, which may succeed when retried.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The storage could not be reached (object storage's endpoint did not answer, after
    /// retries); nothing was written by this call, which may succeed when retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A bug in the engine: an invariant did not hold. Nothing was written.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What kind of failure an [`Error`] is: what front ends map to their own codes (gRPC
/// statuses, Python classes, C status codes). Deliberately exhaustive: a kind added here
/// fails to compile in every front end until each decides how to report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller's input was refused; nothing was written.
    InvalidInput,
    /// A collection (or table) that does not exist was named.
    NotFound,
    /// A collection of that name exists already.
    AlreadyExists,
    /// A file on disk is damaged.
    Corrupt,
    /// The database is held by another handle or process.
    Locked,
    /// The environment failed an I/O operation.
    Io,
    /// Arrow data could not be encoded or decoded.
    Arrow,
    /// A commit's outcome is unknown until the collection is opened again.
    Unsettled,
    /// A limit was reached; retry later.
    ResourceExhausted,
    /// Another writer committed first; nothing was written: retry.
    Conflict,
    /// The storage could not be reached; retry.
    Unavailable,
    /// A bug: an invariant did not hold.
    Internal,
}

impl ErrorKind {
    /// Every kind, in declaration order (for tables that list them).
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidInput,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Corrupt,
        ErrorKind::Locked,
        ErrorKind::Io,
        ErrorKind::Arrow,
        ErrorKind::Unsettled,
        ErrorKind::ResourceExhausted,
        ErrorKind::Conflict,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Locked(_) => ErrorKind::Locked,
            Error::Io { .. } => ErrorKind::Io,
            Error::Arrow(_) => ErrorKind::Arrow,
            Error::Unsettled(_) => ErrorKind::Unsettled,
            Error::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Unavailable(_) => ErrorKind::Unavailable,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// Locks `m`. The one lock-poisoning policy of the engine: every structure a lock guards is
/// left consistent between statements (a panicking thread cannot leave half an update behind:
/// updates are built aside and swapped in), so a poisoned lock is taken over, not propagated.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Read-locks `l`, under the same policy as [`lock`].
pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

/// Write-locks `l`, under the same policy as [`lock`].
pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
