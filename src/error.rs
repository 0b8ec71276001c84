//! The engine's error type: every failure names what was wrong.

use std::fmt;
use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An engine error. The variant says which kind of failure it is (callers map it to a status
/// code); the message names the collection, column, row or file involved.
#[derive(Debug)]
pub enum Error {
    /// The input was refused (schema mismatch, wrong dimension, NaN, null vector, duplicate id,
    /// bad name, bad argument). Nothing was written.
    InvalidInput(String),
    /// A collection that does not exist was named.
    NotFound(String),
    /// A collection with that name exists already.
    AlreadyExists(String),
    /// A file on disk is damaged: bad checksum, truncated, unparseable.
    Corrupt { path: PathBuf, reason: String },
    /// The database directory is held by another open handle.
    Locked(PathBuf),
    /// An I/O failure, with the path it happened on.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An Arrow failure while encoding or decoding data.
    Arrow(arrow_schema::ArrowError),
}

impl Error {
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::AlreadyExists(m) => write!(f, "already exists: {m}"),
            Error::Corrupt { path, reason } => {
                write!(f, "corrupt file {}: {reason}", path.display())
            }
            Error::Locked(p) => write!(
                f,
                "database {} is already open (its LOCK file is held by another handle or process)",
                p.display()
            ),
            Error::Io { path, source } => write!(f, "I/O error on {}: {source}", path.display()),
            Error::Arrow(e) => write!(f, "arrow error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Arrow(e) => Some(e),
            _ => None,
        }
    }
}

impl From<arrow_schema::ArrowError> for Error {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Error::Arrow(e)
    }
}
