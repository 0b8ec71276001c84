//! Vectors typed into SQL text, lifted out as parameters: `knn('docs', [0.1, 0.2, ...], 10)`
//! costs as much to plan as its 384 numbers make expressions (several milliseconds), where
//! `knn('docs', $1, 10)` with the vector bound costs one bind into a plan kept for the
//! statement's shape. [`lift_vectors`] finds the numeric array literals of a statement with a
//! scan of its text (strings, quoted names and comments skipped) and returns the shape with
//! `$n` in their place and the vectors as values.

use std::sync::Arc;

use datafusion::arrow::array::ListArray;
use datafusion::arrow::datatypes::Float32Type;
use datafusion::common::ScalarValue;

/// Array literals with fewer numbers than this stay in the text (they cost little to plan
/// and are rarely vectors).
const MIN_NUMBERS: usize = 8;

/// The statement `sql` with each numeric array literal of at least `MIN_NUMBERS` numbers
/// (`[1, -0.5, 2e-3]` or `ARRAY[...]`) replaced by a positional parameter numbered after the
/// statement's own, and the literals as `List<Float32>` values in that order; `None` when it
/// has none, or uses `?` or named parameters.
pub fn lift_vectors(sql: &str) -> Option<(String, Vec<ScalarValue>)> {
    let bytes = sql.as_bytes();
    let mut found: Vec<(usize, usize, Vec<f32>)> = Vec::new();
    let mut highest = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' | b'"' | b'`' => i = skip_quoted(bytes, i),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = memchr(bytes, i, b'\n').map_or(bytes.len(), |e| e + 1)
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |e| i + 2 + e + 2)
            }
            b'?' => return None,
            b'$' => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits == 0 {
                    return None; // `$name`, or dollar quoting: left alone
                }
                highest = highest.max(sql[i + 1..i + 1 + digits].parse().ok()?);
                i += 1 + digits;
            }
            b'[' if !subscript(sql, i) => match numbers(sql, i) {
                Some((end, values)) if values.len() >= MIN_NUMBERS => {
                    found.push((array_keyword(sql, i), end, values));
                    i = end;
                }
                _ => i += 1,
            },
            _ => i += 1,
        }
    }
    if found.is_empty() {
        return None;
    }
    let mut shape = String::with_capacity(sql.len());
    let mut values = Vec::with_capacity(found.len());
    let mut at = 0;
    for (n, (start, end, vector)) in found.into_iter().enumerate() {
        shape.push_str(&sql[at..start]);
        shape.push_str(&format!("${}", highest + n + 1));
        at = end;
        let list = ListArray::from_iter_primitive::<Float32Type, _, _>([Some(
            vector.into_iter().map(Some),
        )]);
        values.push(ScalarValue::List(Arc::new(list)));
    }
    shape.push_str(&sql[at..]);
    Some((shape, values))
}

fn memchr(bytes: &[u8], from: usize, b: u8) -> Option<usize> {
    bytes[from..].iter().position(|&c| c == b).map(|p| from + p)
}

/// The end of the quoted string or name opening at `start` (a doubled quote is one quote;
/// a backslash escapes in `E'...'`).
fn skip_quoted(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let escapes = quote == b'\'' && start > 0 && bytes[start - 1].eq_ignore_ascii_case(&b'e');
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if escapes => i += 2,
            c if c == quote && bytes.get(i + 1) == Some(&quote) => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Whether the `[` at `open` indexes what stands before it (`tags[1]`, `f(x)[2]`) rather than
/// opening an array literal.
fn subscript(sql: &str, open: usize) -> bool {
    array_keyword(sql, open) == open
        && sql[..open]
            .trim_end()
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | ']' | ')' | '"'))
}

/// Where the literal opening with `[` at `open` starts: at `ARRAY` when the keyword stands
/// just before it.
fn array_keyword(sql: &str, open: usize) -> usize {
    let before = sql[..open].trim_end();
    let word_start = before.len().saturating_sub(5);
    let is_keyword = before.len() >= 5
        && before.is_char_boundary(word_start)
        && before[word_start..].eq_ignore_ascii_case("array")
        && !before[..word_start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
    if is_keyword {
        word_start
    } else {
        open
    }
}

/// The numbers of the array literal opening at `open`, and the index just past its `]`;
/// `None` when it holds anything but numbers (a nested array, an expression, a string).
fn numbers(sql: &str, open: usize) -> Option<(usize, Vec<f32>)> {
    let bytes = sql.as_bytes();
    let mut values = Vec::new();
    let mut i = open + 1;
    loop {
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if values.is_empty() && bytes.get(i) == Some(&b']') {
            return None;
        }
        let start = i;
        if matches!(bytes.get(i), Some(b'-' | b'+')) {
            i += 1;
        }
        while bytes
            .get(i)
            .is_some_and(|b| b.is_ascii_digit() || *b == b'.')
        {
            i += 1;
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(bytes.get(i), Some(b'-' | b'+')) {
                i += 1;
            }
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        let value: f64 = sql[start..i].parse().ok()?;
        values.push(value as f32);
        while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        match bytes.get(i) {
            Some(b',') => i += 1,
            Some(b']') => return Some((i + 1, values)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(v: &ScalarValue) -> Vec<f32> {
        let ScalarValue::List(list) = v else {
            panic!("{v:?}")
        };
        let values = list.value(0);
        let f = values
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Float32Array>()
            .unwrap();
        f.values().to_vec()
    }

    #[test]
    fn vectors_become_parameters_numbered_after_the_statements_own() {
        let v = "[1, -0.5, 2e-3, 4.25, +5, 6., .5, 7E+1]";
        let sql = format!("SELECT id FROM knn('docs', {v}, $2) WHERE t = $1 ORDER BY id");
        let (shape, values) = lift_vectors(&sql).unwrap();
        assert_eq!(
            shape,
            "SELECT id FROM knn('docs', $3, $2) WHERE t = $1 ORDER BY id"
        );
        assert_eq!(
            floats(&values[0]),
            [1.0, -0.5, 0.002, 4.25, 5.0, 6.0, 0.5, 70.0]
        );
        let sql = format!("SELECT cosine_distance(vector, ARRAY {v}) d, l2_distance(vector, array[0,0,0,0,0,0,0,1]) FROM docs");
        let (shape, values) = lift_vectors(&sql).unwrap();
        assert_eq!(
            shape,
            "SELECT cosine_distance(vector, $1) d, l2_distance(vector, $2) FROM docs"
        );
        assert_eq!(values.len(), 2);
    }

    #[test]
    fn strings_comments_short_arrays_and_other_parameters_are_left_alone() {
        let v = "[1,2,3,4,5,6,7,8]";
        for sql in [
            format!("SELECT '{v}' AS s, \"{v}\" FROM t"),
            format!("SELECT 'it''s {v}' -- {v}\n /* {v} */ FROM t"),
            format!("SELECT E'\\' {v}' FROM t"),
            "SELECT [1, 2, 3] FROM t".to_string(),
            format!("SELECT * FROM knn('docs', {v}, ?)"),
            format!("SELECT * FROM knn('docs', {v}, $k)"),
            "SELECT [1,2,3,4,5,6,7,x], [1,2,3,4,5,6,7,'8'], [] FROM t".into(),
            "SELECT marray[1,2,3,4,5,6,7,8], f(x) [1,2,3,4,5,6,7,8] FROM t".into(),
        ] {
            assert_eq!(lift_vectors(&sql), None, "{sql}");
        }
        // A nested literal: the inner vector is lifted (the statement is then no plain search,
        // and its caller plans the text as it was).
        let (shape, _) = lift_vectors("SELECT [[1,2,3,4,5,6,7,8]]").unwrap();
        assert_eq!(shape, "SELECT [$1]");
    }
}
