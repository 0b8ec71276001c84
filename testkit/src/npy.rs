//! A small reader for NumPy `.npy` files (little-endian float16, float32 or int32, C order),
//! used by the benchmarks and the import tools.

use std::path::Path;

use std::io::{Error, ErrorKind, Result};

/// An error naming the file and what is wrong with it.
fn corrupt(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidData, format!("{}: {why}", path.display()))
}

/// A 2-d array read from a `.npy` file.
#[derive(Debug, Clone)]
pub struct Npy<T> {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<T>,
}

fn header(path: &Path, bytes: &[u8]) -> Result<(String, Vec<usize>, usize)> {
    let bad = |why: &str| corrupt(path, format!("not a .npy file: {why}"));
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("bad magic"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
            12,
        ),
        _ => return Err(bad("unknown version")),
    };
    let text = std::str::from_utf8(
        bytes
            .get(start..start + hlen)
            .ok_or_else(|| bad("short header"))?,
    )
    .map_err(|_| bad("header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let i = text.find(&format!("'{key}':"))? + key.len() + 3;
        Some(text[i..].trim_start())
    };
    let descr = field("descr")
        .and_then(|s| s.strip_prefix('\''))
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| bad("no descr"))?;
    if field("fortran_order").is_some_and(|s| s.starts_with("True")) {
        return Err(bad("fortran order is not supported"));
    }
    let shape = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let shape: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    Ok((descr.to_string(), shape, start + hlen))
}

fn read(path: &Path) -> Result<(String, usize, usize, Vec<u8>)> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let (descr, shape, offset) = header(path, &bytes)?;
    let (rows, cols) = match shape.as_slice() {
        [r] => (*r, 1),
        [r, c] => (*r, *c),
        _ => return Err(corrupt(path, "expected a 1-d or 2-d array")),
    };
    let mut body = bytes;
    body.drain(..offset);
    Ok((descr, rows, cols, body))
}

fn check_len(path: &Path, body: &[u8], n: usize, width: usize) -> Result<()> {
    if body.len() < n * width {
        return Err(corrupt(path, "truncated .npy data"));
    }
    Ok(())
}

/// Reads a float16 or float32 array as float32.
pub fn read_f32(path: impl AsRef<Path>) -> Result<Npy<f32>> {
    let path = path.as_ref();
    let (descr, rows, cols, body) = read(path)?;
    let n = rows * cols;
    let data = match descr.as_str() {
        "<f4" => {
            check_len(path, &body, n, 4)?;
            body.chunks_exact(4)
                .take(n)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
                .collect()
        }
        "<f2" => {
            check_len(path, &body, n, 2)?;
            body.chunks_exact(2)
                .take(n)
                .map(|c| half::f16::from_le_bytes(c.try_into().expect("2")).to_f32())
                .collect()
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("{}: dtype {other} is not float16/float32", path.display()),
            ))
        }
    };
    Ok(Npy { rows, cols, data })
}

/// Reads an int32 or int64 array as i64.
pub fn read_i64(path: impl AsRef<Path>) -> Result<Npy<i64>> {
    let path = path.as_ref();
    let (descr, rows, cols, body) = read(path)?;
    let n = rows * cols;
    let data = match descr.as_str() {
        "<i4" => {
            check_len(path, &body, n, 4)?;
            body.chunks_exact(4)
                .take(n)
                .map(|c| i32::from_le_bytes(c.try_into().expect("4")) as i64)
                .collect()
        }
        "<i8" => {
            check_len(path, &body, n, 8)?;
            body.chunks_exact(8)
                .take(n)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8")))
                .collect()
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("{}: dtype {other} is not int32/int64", path.display()),
            ))
        }
    };
    Ok(Npy { rows, cols, data })
}
