//! A collection's schema as the engine sees it (`Layout`: which column is the id, which the
//! vector, and its dimension), the stored types of columns, the columns search results add,
//! and the rules for collection names.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};

use crate::{Error, Result};

/// The name of the distance column search results carry.
pub const DISTANCE_COLUMN: &str = "_distance";

/// The precision a collection stores its vectors in (`vector_type=float32|float16`).
/// Distances are computed in f32 arithmetic either way; float16 halves the disk and page
/// cache the vectors take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum VectorType {
    /// `FixedSizeList<Float32, d>`.
    #[default]
    Float32,
    /// `FixedSizeList<Float16, d>`.
    Float16,
}

impl VectorType {
    /// The name options spell it with.
    pub fn as_str(self) -> &'static str {
        match self {
            VectorType::Float32 => "float32",
            VectorType::Float16 => "float16",
        }
    }

    /// The Arrow type of one value.
    pub fn item_type(self) -> DataType {
        match self {
            VectorType::Float32 => DataType::Float32,
            VectorType::Float16 => DataType::Float16,
        }
    }

    /// The precision a list of `item` values is stored in when nothing else says: float16
    /// stays float16, every other float type becomes float32.
    pub(crate) fn of_item(item: &DataType) -> VectorType {
        match item {
            DataType::Float16 => VectorType::Float16,
            _ => VectorType::Float32,
        }
    }
}

impl std::str::FromStr for VectorType {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "float32" | "f32" => Ok(VectorType::Float32),
            "float16" | "f16" | "half" => Ok(VectorType::Float16),
            other => Err(Error::invalid(format!(
                "unknown vector_type '{other}' (expected float32 or float16)"
            ))),
        }
    }
}

/// The child field every stored vector column of `t` uses.
pub(crate) fn vector_item_field(t: VectorType) -> FieldRef {
    Arc::new(Field::new("item", t.item_type(), true))
}

/// The stored type of a vector column of dimension `dim` in precision `t`.
pub(crate) fn vector_type(dim: usize, t: VectorType) -> DataType {
    DataType::FixedSizeList(vector_item_field(t), dim as i32)
}

/// Whether `dt` can hold vectors that we accept (before coercion).
pub(crate) fn is_vector_like(dt: &DataType) -> bool {
    let float = |f: &FieldRef| {
        matches!(
            f.data_type(),
            DataType::Float16 | DataType::Float32 | DataType::Float64
        )
    };
    match dt {
        DataType::FixedSizeList(f, _) | DataType::List(f) | DataType::LargeList(f) => float(f),
        _ => false,
    }
}

/// The stored type for a non-vector column arriving as `dt`: strings of every layout are
/// stored as Utf8, binaries as Binary; everything else as it came.
pub(crate) fn storage_type(dt: &DataType) -> DataType {
    match dt {
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}

/// What a collection's batches must look like.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub name: String,
    pub schema: SchemaRef,
    pub id_index: usize,
    pub vector_index: usize,
    pub dim: usize,
    /// The precision vectors are stored in.
    pub vector_type: VectorType,
}

impl Layout {
    /// Builds the stored layout from a user-given schema: checks the id column (Utf8 or Int64,
    /// any string or integer layout accepted and normalized) and the vector column (a
    /// fixed-size list of floats, stored in `store_as`, or by default float16 if declared so
    /// and float32 otherwise), and marks both non-nullable.
    pub(crate) fn from_schema(
        name: &str,
        schema: &Schema,
        id_column: &str,
        vector_column: Option<&str>,
        store_as: Option<VectorType>,
    ) -> Result<Layout> {
        let id_index = schema.index_of(id_column).map_err(|_| {
            Error::invalid(format!(
                "collection '{name}': no id column '{id_column}' in schema (columns: {})",
                column_names(schema)
            ))
        })?;
        let vector_index = match vector_column {
            Some(v) => schema.index_of(v).map_err(|_| {
                Error::invalid(format!(
                    "collection '{name}': no vector column '{v}' in schema (columns: {})",
                    column_names(schema)
                ))
            })?,
            None => {
                let candidates: Vec<usize> = (0..schema.fields().len())
                    .filter(|&i| i != id_index && is_vector_like(schema.field(i).data_type()))
                    .collect();
                match candidates.as_slice() {
                    [one] => *one,
                    [] => {
                        return Err(Error::invalid(format!(
                            "collection '{name}': no vector column (a FixedSizeList<Float32, d> \
                             column) in schema (columns: {})",
                            column_names(schema)
                        )))
                    }
                    _ => {
                        return Err(Error::invalid(format!(
                        "collection '{name}': several vector-like columns; name the vector column"
                    )))
                    }
                }
            }
        };
        if vector_index == id_index {
            return Err(Error::invalid(format!(
                "collection '{name}': the id column cannot be the vector column"
            )));
        }
        let vfield = schema.field(vector_index);
        let (dim, declared) = match vfield.data_type() {
            DataType::FixedSizeList(f, size) if is_vector_like(vfield.data_type()) => {
                (*size as usize, VectorType::of_item(f.data_type()))
            }
            dt if is_vector_like(dt) => {
                return Err(Error::invalid(format!(
                    "collection '{name}': vector column '{}' has type {dt} and no dimension; \
                     declare it as FixedSizeList<Float32, d>",
                    vfield.name()
                )))
            }
            dt => {
                return Err(Error::invalid(format!(
                    "collection '{name}': vector column '{}' has type {dt}; expected \
                     FixedSizeList<Float32, d>",
                    vfield.name()
                )))
            }
        };
        if dim == 0 || dim > 65_536 {
            return Err(Error::invalid(format!(
                "collection '{name}': dimension {dim} is out of range (1..=65536)"
            )));
        }
        let stored = store_as.unwrap_or(declared);
        let id_type = match schema.field(id_index).data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32 => DataType::Int64,
            other => {
                return Err(Error::invalid(format!(
                    "collection '{name}': id column '{id_column}' has type {other}; expected Utf8 or Int64"
                )))
            }
        };
        let mut names = HashSet::new();
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if !names.insert(f.name().as_str()) {
                    return Err(Error::invalid(format!(
                        "collection '{name}': column '{}' appears twice",
                        f.name()
                    )));
                }
                if f.name() == DISTANCE_COLUMN {
                    return Err(Error::invalid(format!(
                        "collection '{name}': '_distance' is reserved for search results"
                    )));
                }
                Ok(if i == id_index {
                    Field::new(f.name(), id_type.clone(), false)
                } else if i == vector_index {
                    Field::new(f.name(), vector_type(dim, stored), false)
                } else {
                    Field::new(f.name(), storage_type(f.data_type()), f.is_nullable())
                })
            })
            .collect::<Result<_>>()?;
        Ok(Layout {
            name: name.to_string(),
            schema: Arc::new(Schema::new(fields)),
            id_index,
            vector_index,
            dim,
            vector_type: stored,
        })
    }

    /// The id column's name.
    pub(crate) fn id_column(&self) -> &str {
        self.schema.field(self.id_index).name()
    }

    /// The vector column's name.
    pub(crate) fn vector_column(&self) -> &str {
        self.schema.field(self.vector_index).name()
    }
}

/// Comma-separated column names, for error messages.
pub(crate) fn column_names(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks a collection name: 1 to 64 characters of `[A-Za-z0-9_-]`, not starting with `-`.
/// This rules out path separators, `.` and `..`.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid collection name {name:?}: use 1 to 64 characters from A-Z, a-z, 0-9, '_' and \
             '-' (no path separators or dots), not starting with '-'"
        )))
    }
}

/// The column that numbers the query each row of a many-query result answers.
pub const QUERY_COLUMN: &str = "_query";

/// The schema of search results: the collection's columns plus `_distance`.
pub fn result_schema(schema: &Schema) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(
        DISTANCE_COLUMN,
        DataType::Float32,
        false,
    )));
    Arc::new(Schema::new(fields))
}
