//! The arguments of exported functions: C strings, arrays and out-parameters.

use std::ffi::{c_char, CStr};

use crate::error::{invalid, Outcome};

/// Reads a C string argument.
///
/// # Safety
/// `s` is null or points to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn text<'a>(s: *const c_char, what: &str) -> Outcome<&'a str> {
    if s.is_null() {
        return Err(invalid(format!("{what} is null")));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string valid for the call.
    let s = unsafe { CStr::from_ptr(s) };
    s.to_str()
        .map_err(|_| invalid(format!("{what} is not UTF-8")))
}

/// Reads an optional C string argument (null: `None`).
///
/// # Safety
/// `s` is null or points to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn optional_text<'a>(s: *const c_char, what: &str) -> Outcome<Option<&'a str>> {
    if s.is_null() {
        return Ok(None);
    }
    // SAFETY: the caller's contract above.
    unsafe { text(s, what) }.map(Some)
}

/// Reads `n` values at `p`.
///
/// # Safety
/// `p` is null or points to `n` initialized values that stay valid during the call.
pub(crate) unsafe fn values<'a, T>(p: *const T, n: usize, what: &str) -> Outcome<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid(format!("{what} is null")));
    }
    // SAFETY: non-null, and the caller promises `n` values valid for the call.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// The floats of `n` packed vectors of `dim` each (`what`: the vectors, for the error when
/// the count overflows).
pub(crate) fn packed_len(n: usize, dim: usize, what: &str) -> Outcome<usize> {
    n.checked_mul(dim)
        .ok_or_else(|| invalid(format!("{n} {what} of dimension {dim} overflow")))
}

/// Writes `value` to the out-parameter `out`.
///
/// # Safety
/// `out` is null or points to writable memory for a `T`.
pub(crate) unsafe fn put<T>(out: *mut T, value: T, what: &str) -> Outcome {
    if out.is_null() {
        return Err(invalid(format!("{what} is null")));
    }
    // SAFETY: non-null, and the caller promises it is writable for a `T`.
    unsafe { out.write(value) };
    Ok(())
}

/// Writes `value` to the optional out-parameter `out`, unless it is null.
///
/// # Safety
/// `out` is null or points to writable memory for a `T`.
pub(crate) unsafe fn put_unless_null<T>(out: *mut T, value: T) -> Outcome {
    if out.is_null() {
        return Ok(());
    }
    // SAFETY: non-null, and the caller promises it is writable for a `T`.
    unsafe { out.write(value) };
    Ok(())
}
