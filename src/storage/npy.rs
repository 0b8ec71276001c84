//! A small reader for NumPy `.npy` files (little-endian float16, float32 or int32, C order):
//! vectors a user has as files, read by `omendb import` and the benchmarks. Local files only
//! (it sits in `storage/`, the one place the engine touches a file system).

use std::fs::File;
use std::io::{BufReader, Error, ErrorKind, Read, Result, Seek, SeekFrom};
use std::path::Path;

use half::f16;

/// An error naming the file and what is wrong with it.
fn corrupt(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidData, format!("{}: {why}", path.display()))
}

/// A 2-d array read from a `.npy` file.
#[derive(Debug, Clone)]
pub struct Npy<T> {
    /// Rows (the first dimension).
    pub rows: usize,
    /// Values per row (1 for a 1-d array).
    pub cols: usize,
    /// The values, row after row.
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

/// Opens a `.npy` file: its dtype, shape, and a reader at the first byte of its data.
fn open(path: &Path) -> Result<(String, usize, usize, BufReader<File>)> {
    let with_path = |e: Error| Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(with_path)?);
    let mut head = vec![0u8; 12];
    file.read_exact(&mut head).map_err(with_path)?;
    let hlen = match head[6] {
        1 => u16::from_le_bytes([head[8], head[9]]) as usize + 10,
        _ => u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as usize + 12,
    };
    if hlen > 1 << 20 {
        return Err(corrupt(path, "not a .npy file: header too long"));
    }
    head.resize(hlen.max(12), 0);
    file.read_exact(&mut head[12..]).map_err(with_path)?;
    let (descr, shape, offset) = header(path, &head)?;
    file.seek(SeekFrom::Start(offset as u64))
        .map_err(with_path)?;
    let (rows, cols) = match shape.as_slice() {
        [r] => (*r, 1),
        [r, c] => (*r, *c),
        _ => return Err(corrupt(path, "expected a 1-d or 2-d array")),
    };
    Ok((descr, rows, cols, file))
}

/// The `n` values of `width` bytes each that follow in `body`, decoded a chunk at a time (so
/// a large array is held once, not also as bytes).
fn decode<T>(
    path: &Path,
    mut body: impl Read,
    n: usize,
    width: usize,
    value: impl Fn(&[u8]) -> T,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(n);
    let mut chunk = vec![0u8; (1 << 20) / width * width];
    while out.len() < n {
        let want = ((n - out.len()) * width).min(chunk.len());
        body.read_exact(&mut chunk[..want]).map_err(|e| {
            if e.kind() == ErrorKind::UnexpectedEof {
                corrupt(path, "truncated .npy data")
            } else {
                Error::new(e.kind(), format!("{}: {e}", path.display()))
            }
        })?;
        out.extend(chunk[..want].chunks_exact(width).map(&value));
    }
    Ok(out)
}

fn wrong_dtype(path: &Path, dtype: &str, expected: &str) -> Error {
    Error::new(
        ErrorKind::InvalidData,
        format!("{}: dtype {dtype} is not {expected}", path.display()),
    )
}

/// Opens the `.npy` file at `path` and decodes its data with `values(path, dtype, count,
/// body)`, which refuses a dtype it does not read.
fn read_with<T>(
    path: &Path,
    values: impl FnOnce(&Path, &str, usize, BufReader<File>) -> Result<Vec<T>>,
) -> Result<Npy<T>> {
    let (descr, rows, cols, body) = open(path)?;
    let data = values(path, &descr, rows * cols, body)?;
    Ok(Npy { rows, cols, data })
}

/// Reads a float16 or float32 array as float32.
pub fn read_f32(path: impl AsRef<Path>) -> Result<Npy<f32>> {
    read_with(path.as_ref(), |path, descr, n, body| match descr {
        "<f4" => decode(path, body, n, 4, |c| {
            f32::from_le_bytes(c.try_into().expect("4"))
        }),
        "<f2" => decode(path, body, n, 2, |c| {
            f16::from_le_bytes(c.try_into().expect("2")).to_f32()
        }),
        other => Err(wrong_dtype(path, other, "float16/float32")),
    })
}

/// Reads a float16 array as it is stored.
pub fn read_f16(path: impl AsRef<Path>) -> Result<Npy<f16>> {
    read_with(path.as_ref(), |path, descr, n, body| match descr {
        "<f2" => decode(path, body, n, 2, |c| {
            f16::from_le_bytes(c.try_into().expect("2"))
        }),
        other => Err(wrong_dtype(path, other, "float16")),
    })
}

/// The rows and columns of the `.npy` file at `path` (its data is not read).
pub fn shape(path: impl AsRef<Path>) -> Result<(usize, usize)> {
    let (_, rows, cols, _) = open(path.as_ref())?;
    Ok((rows, cols))
}

/// Whether the `.npy` file at `path` holds float16.
pub fn is_f16(path: impl AsRef<Path>) -> Result<bool> {
    Ok(open(path.as_ref())?.0 == "<f2")
}

/// Reads an int32 or int64 array as i64.
pub fn read_i64(path: impl AsRef<Path>) -> Result<Npy<i64>> {
    read_with(path.as_ref(), |path, descr, n, body| match descr {
        "<i4" => decode(path, body, n, 4, |c| {
            i32::from_le_bytes(c.try_into().expect("4")) as i64
        }),
        "<i8" => decode(path, body, n, 8, |c| {
            i64::from_le_bytes(c.try_into().expect("8"))
        }),
        other => Err(wrong_dtype(path, other, "int32/int64")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 `.npy` file of `shape` holding `body`.
    fn npy(dir: &Path, name: &str, descr: &str, shape: &str, body: &[u8]) -> std::path::PathBuf {
        let mut text =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + text.len() + 1) % 64 != 0 {
            text.push(' ');
        }
        text.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((text.len() as u16).to_le_bytes());
        bytes.extend(text.as_bytes());
        bytes.extend(body);
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn reads_each_dtype_and_refuses_short_or_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<f32> = (0..3_000_000).map(|i| (i % 977) as f32 * 0.25).collect();
        let halves: Vec<u8> = values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        let p16 = npy(dir.path(), "h.npy", "<f2", "(1000000, 3)", &halves);
        let h = read_f16(&p16).unwrap();
        assert_eq!((h.rows, h.cols), (1_000_000, 3));
        assert!(h.data.iter().zip(&values).all(|(a, b)| a.to_f32() == *b));
        assert_eq!(read_f32(&p16).unwrap().data, values);
        assert!(is_f16(&p16).unwrap());
        assert_eq!(shape(&p16).unwrap(), (1_000_000, 3));
        let floats: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let p32 = npy(dir.path(), "f.npy", "<f4", "(3000000,)", &floats);
        let f = read_f32(&p32).unwrap();
        assert_eq!((f.rows, f.cols, f.data), (3_000_000, 1, values.clone()));
        let err = read_f16(&p32).unwrap_err().to_string();
        assert!(err.contains("dtype <f4 is not float16"), "{err}");
        let ints: Vec<u8> = (0..6i32).flat_map(|v| v.to_le_bytes()).collect();
        let pi = npy(dir.path(), "i.npy", "<i4", "(2, 3)", &ints);
        assert_eq!(read_i64(&pi).unwrap().data, [0, 1, 2, 3, 4, 5]);
        let short = npy(dir.path(), "s.npy", "<f4", "(2, 3)", &floats[..20]);
        let err = read_f32(&short).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        let junk = dir.path().join("junk.npy");
        std::fs::write(&junk, b"not an array at all").unwrap();
        let err = read_f32(&junk).unwrap_err().to_string();
        assert!(err.contains("not a .npy file"), "{err}");
    }
}
