//! A search with a SQL condition as one statement, planned once and bound per query vector:
//! what the Python package's `search(where=...)` and the server's one-call search run.

use std::sync::Arc;

use datafusion::arrow::array::{Float32Array, ListArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;

/// `SELECT * FROM knn(collection, $1, $2, ...) WHERE (condition)` and the values it binds
/// after the query vector.
#[derive(Debug, Clone)]
pub struct FilteredSearch {
    /// The statement's text: `$1` the query vector, `$2` k, then ef and nprobe when given.
    pub sql: String,
    values: Vec<ScalarValue>,
}

impl FilteredSearch {
    /// The search of `collection` for `k` rows matching `condition`, with the beam `ef`, the
    /// IVF lists `nprobe` and `fast` (indexed rows only) when given.
    pub fn new(
        collection: &str,
        condition: &str,
        k: i64,
        ef: Option<usize>,
        nprobe: Option<usize>,
        fast: bool,
    ) -> FilteredSearch {
        let mut values = vec![ScalarValue::Int64(Some(k))];
        let mut knobs = String::new();
        for (name, v) in [("ef", ef), ("nprobe", nprobe)] {
            if let Some(v) = v {
                values.push(ScalarValue::Int64(Some(v as i64)));
                knobs.push_str(&format!(", {name} => ${}", values.len() + 1));
            }
        }
        if fast {
            knobs.push_str(", fast => true");
        }
        let name = collection.replace('\'', "''");
        FilteredSearch {
            sql: format!("SELECT * FROM knn('{name}', $1, $2{knobs}) WHERE ({condition})"),
            values,
        }
    }

    /// The values of one run: `query`, then k and the knobs.
    pub fn values(&self, query: &[f32]) -> Vec<ScalarValue> {
        let mut out = Vec::with_capacity(1 + self.values.len());
        out.push(vector_value(query));
        out.extend(self.values.iter().cloned());
        out
    }
}

/// A query vector as `knn()` binds it: a `List<Float32>` value.
pub fn vector_value(v: &[f32]) -> ScalarValue {
    let values = Float32Array::from(v.to_vec());
    let field = Arc::new(Field::new_list_field(DataType::Float32, true));
    let offsets = OffsetBuffer::from_lengths([values.len()]);
    ScalarValue::List(Arc::new(ListArray::new(
        field,
        offsets,
        Arc::new(values),
        None,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_take_the_parameters_after_k_in_order() {
        let s = FilteredSearch::new("it's", "a > 1", 5, None, Some(8), true);
        assert_eq!(
            s.sql,
            "SELECT * FROM knn('it''s', $1, $2, nprobe => $3, fast => true) WHERE (a > 1)"
        );
        let v = s.values(&[1.0, 2.0]);
        assert_eq!(v.len(), 3);
        assert_eq!(v[2], ScalarValue::Int64(Some(8)));
    }
}
