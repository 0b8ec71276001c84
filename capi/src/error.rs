//! Failures: their C status, the calling thread's last error, and `call`, which every exported
//! function runs its body through.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::omendb_status;
use crate::omendb_status::*;

/// A failure: its status and message.
pub(crate) struct Failure(pub(crate) omendb_status, pub(crate) String);

/// The C status of each kind of failure (no catch-all arm: a new kind fails to compile here
/// until it gets a code).
pub(crate) fn kind_status(kind: omendb::ErrorKind) -> omendb_status {
    use omendb::ErrorKind as K;
    match kind {
        K::InvalidInput => OMENDB_ERR_INVALID_INPUT,
        K::NotFound => OMENDB_ERR_NOT_FOUND,
        K::AlreadyExists => OMENDB_ERR_ALREADY_EXISTS,
        K::Corrupt => OMENDB_ERR_CORRUPT,
        K::Locked => OMENDB_ERR_LOCKED,
        K::Io => OMENDB_ERR_IO,
        K::Arrow => OMENDB_ERR_ARROW,
        K::Unsettled => OMENDB_ERR_UNSETTLED,
        K::ResourceExhausted => OMENDB_ERR_RESOURCE_EXHAUSTED,
        K::Conflict => OMENDB_ERR_CONFLICT,
        K::Unavailable => OMENDB_ERR_UNAVAILABLE,
        K::Internal => OMENDB_ERR_INTERNAL,
    }
}

#[cfg(test)]
#[test]
fn every_kind_gets_the_documented_c_status() {
    let doc = include_str!("../../docs/errors.md");
    for kind in omendb::ErrorKind::ALL {
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| {kind:?} |")))
            .unwrap_or_else(|| panic!("docs/errors.md has no row for {kind:?}"));
        let status = format!("`{:?}`", kind_status(kind));
        assert!(
            row.trim_end().ends_with(&format!("{status} |")),
            "{kind:?}: {row}"
        );
    }
}

impl From<omendb::Error> for Failure {
    fn from(e: omendb::Error) -> Self {
        Failure(kind_status(e.kind()), e.to_string())
    }
}

impl From<arrow_schema::ArrowError> for Failure {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Failure(OMENDB_ERR_ARROW, format!("arrow error: {e}"))
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> Failure {
    Failure(
        OMENDB_ERR_INVALID_INPUT,
        format!("invalid input: {}", msg.into()),
    )
}

pub(crate) type Outcome<T = ()> = Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Runs `f`, turning a failure or panic into a status and the thread's last error.
pub(crate) fn call(f: impl FnOnce() -> Outcome) -> omendb_status {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        Err(Failure(
            OMENDB_ERR_INTERNAL,
            format!("internal error: panic: {msg}"),
        ))
    });
    let (status, msg) = match outcome {
        Ok(()) => (OMENDB_OK, String::new()),
        Err(Failure(status, msg)) => (status, msg),
    };
    LAST_ERROR.with(|e| {
        *e.borrow_mut() = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    });
    status
}

/// Returns the message of the calling thread's last failed call ("" after a success). The
/// text stays valid until the thread's next call.
#[no_mangle]
pub extern "C" fn omendb_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}
