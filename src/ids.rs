//! The primary key: ids are Int64 or Utf8 (never null), and this is the one place that tells
//! the two apart: sets of ids seen by a write (`IdSet`) and the text an error message shows for
//! an id. Lookups within a segment are the primary-key index's (`pk`).

use std::collections::HashSet;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::Array;
use arrow_schema::DataType;

/// An id value, borrowed from a lookup or an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IdRef<'a> {
    Int(i64),
    Str(&'a str),
}

impl std::fmt::Display for IdRef<'_> {
    /// As error messages show it: integers bare, strings quoted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdRef::Int(v) => write!(f, "{v}"),
            IdRef::Str(s) => write!(f, "'{s}'"),
        }
    }
}

/// Iterates the ids of an id column (Int64 or Utf8, no nulls).
pub(crate) fn ids_of(array: &dyn Array) -> Box<dyn Iterator<Item = IdRef<'_>> + '_> {
    match array.data_type() {
        DataType::Int64 => Box::new(
            array
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .map(|&v| IdRef::Int(v)),
        ),
        _ => Box::new(
            array
                .as_string::<i32>()
                .iter()
                .map(|v| IdRef::Str(v.unwrap_or_default())),
        ),
    }
}

/// The ids of one write, to refuse duplicates within it and against stored rows.
#[derive(Debug)]
pub(crate) enum IdSet {
    Int(HashSet<i64>),
    Str(HashSet<String>),
}

impl IdSet {
    /// An empty set for ids of type `dt`.
    pub(crate) fn for_type(dt: &DataType) -> IdSet {
        match dt {
            DataType::Int64 => IdSet::Int(HashSet::new()),
            _ => IdSet::Str(HashSet::new()),
        }
    }

    /// Adds the ids of `ids`; the first one seen before (its row in `ids` and its text), if any.
    pub(crate) fn insert_all(&mut self, ids: &dyn Array) -> Option<(usize, String)> {
        ids_of(ids).enumerate().find_map(|(row, id)| {
            let fresh = match (&mut *self, id) {
                (IdSet::Int(set), IdRef::Int(v)) => set.insert(v),
                (IdSet::Str(set), IdRef::Str(v)) => set.insert(v.to_string()),
                _ => true,
            };
            (!fresh).then(|| (row, id.to_string()))
        })
    }

    /// The ids in the set.
    pub(crate) fn iter(&self) -> Box<dyn Iterator<Item = IdRef<'_>> + '_> {
        match self {
            IdSet::Int(set) => Box::new(set.iter().map(|&v| IdRef::Int(v))),
            IdSet::Str(set) => Box::new(set.iter().map(|v| IdRef::Str(v))),
        }
    }
}

/// The first id of `ids` that appears earlier in it: its row and its text.
pub(crate) fn first_duplicate(ids: &dyn Array) -> Option<(usize, String)> {
    IdSet::for_type(ids.data_type()).insert_all(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};

    #[test]
    fn duplicates_and_lookups() {
        let ints = Int64Array::from(vec![3, 1, 3]);
        assert_eq!(first_duplicate(&ints), Some((2, "3".into())));
        let strs = StringArray::from(vec!["a", "b"]);
        assert_eq!(first_duplicate(&strs), None);
        let mut set = IdSet::for_type(strs.data_type());
        assert_eq!(set.insert_all(&strs), None);
        assert_eq!(
            set.insert_all(&StringArray::from(vec!["a"])),
            Some((0, "'a'".into()))
        );
    }
}
