//! Incoming batches turned into exactly a collection's layout, or refused with an error that
//! names the column and row at fault: vector coercion (float lists of any width and type),
//! id and column casts, null and duplicate checks, and the schema a collection created from
//! its first batch gets. Nothing here touches disk.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Float64Type};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float16Array, Float32Array, GenericListArray,
    OffsetSizeTrait, RecordBatch,
};
use arrow_buffer::ScalarBuffer;
use arrow_schema::{DataType, Field, FieldRef, Schema};
use half::f16;

use crate::distance::Metric;
use crate::ids::first_duplicate;
use crate::schema::{
    column_names, is_vector_like, storage_type, vector_item_field, vector_type, Layout, VectorType,
};
use crate::vector::Floats;
use crate::{Error, Result};

/// Converts a vector column (FixedSizeList, List or LargeList of float16/32/64) into
/// `FixedSizeList<Float32, dim>`, refusing null vectors, null elements, ragged rows,
/// wrong lengths and non-finite values. `dim = None` takes the first row's length.
pub fn coerce_vectors(
    column: &str,
    array: &ArrayRef,
    dim: Option<usize>,
) -> Result<FixedSizeListArray> {
    coerce_vectors_to(column, array, dim, VectorType::Float32)
}

/// [`coerce_vectors`] into the precision `to`: float16 values stay as they are, others are
/// rounded to the nearest float16, and a value beyond float16's range (±65504) is refused
/// rather than stored as infinity.
pub(crate) fn coerce_vectors_to(
    column: &str,
    array: &ArrayRef,
    dim: Option<usize>,
    to: VectorType,
) -> Result<FixedSizeListArray> {
    let n = array.len();
    if let Some(row) = first_null(array.as_ref()) {
        return Err(Error::invalid(format!(
            "vector column '{column}': row {row} is null (vectors may not be null)"
        )));
    }
    // (values, per-row start offsets into values, row length)
    let (values, starts, len): (ArrayRef, Vec<usize>, usize) = match array.data_type() {
        DataType::FixedSizeList(_, size) => {
            let fsl = array.as_fixed_size_list();
            let size = *size as usize;
            let values = fsl.values().slice(fsl.offset() * size, n * size);
            (values, (0..n).map(|i| i * size).collect(), size)
        }
        DataType::List(_) => list_rows(column, array.as_list::<i32>(), dim)?,
        DataType::LargeList(_) => list_rows(column, array.as_list::<i64>(), dim)?,
        other => {
            return Err(Error::invalid(format!(
                "vector column '{column}' has type {other}; expected FixedSizeList<Float32, d> \
                 (or a List of floats with the same length in every row)"
            )))
        }
    };
    if let Some(d) = dim {
        if len != d {
            return Err(Error::invalid(format!(
                "vector column '{column}': wrong dimension {len}, the collection's vectors have dimension {d}"
            )));
        }
    }
    if len == 0 {
        return Err(Error::invalid(format!(
            "vector column '{column}': vectors must have at least one element"
        )));
    }
    if let Some(i) = first_null(values.as_ref()) {
        let row = starts.partition_point(|&s| s <= i).saturating_sub(1);
        return Err(Error::invalid(format!(
            "vector column '{column}': row {row} has a null element"
        )));
    }
    let non_finite = |i: usize, v: f32, what: &str| {
        Error::invalid(format!(
            "vector column '{column}': row {} has {what} ({v}) at position {}",
            i / len,
            i % len
        ))
    };
    let values: ArrayRef = match (to, values.data_type()) {
        (VectorType::Float16, DataType::Float16) => {
            let halves = values.as_primitive::<Float16Type>().values();
            if let Some(i) = halves.iter().position(|v| !v.is_finite()) {
                return Err(non_finite(i, halves[i].to_f32(), "a non-finite value"));
            }
            Arc::new(Float16Array::new(halves.clone(), None))
        }
        (VectorType::Float16, _) => {
            let floats = f32_values(column, &values)?;
            if let Some(i) = floats.iter().position(|v| !v.is_finite()) {
                return Err(non_finite(i, floats[i], "a non-finite value"));
            }
            let halves: ScalarBuffer<f16> = floats.iter().map(|&v| f16::from_f32(v)).collect();
            if let Some(i) = halves.iter().position(|v| !v.is_finite()) {
                return Err(non_finite(
                    i,
                    floats[i],
                    "a value beyond float16's range of ±65504 (the collection stores float16)",
                ));
            }
            Arc::new(Float16Array::new(halves, None))
        }
        (VectorType::Float32, _) => {
            let floats = f32_values(column, &values)?;
            if let Some(i) = floats.iter().position(|v| !v.is_finite()) {
                return Err(non_finite(i, floats[i], "a non-finite value"));
            }
            Arc::new(Float32Array::new(floats, None))
        }
    };
    Ok(FixedSizeListArray::try_new(
        vector_item_field(to),
        len as i32,
        values,
        None,
    )?)
}

/// The first row of `vectors` (stored float32 or float16) whose elements are all zero.
fn first_zero_vector(vectors: &FixedSizeListArray, dim: usize) -> Option<usize> {
    let values = vectors.values();
    match values.data_type() {
        DataType::Float16 => values
            .as_primitive::<Float16Type>()
            .values()
            .chunks(dim)
            .position(|row| row.iter().all(|v| v.to_f32() == 0.0)),
        _ => values
            .as_primitive::<Float32Type>()
            .values()
            .chunks(dim)
            .position(|row| row.iter().all(|&v| v == 0.0)),
    }
}

/// Float values of any width as f32.
fn f32_values(column: &str, values: &ArrayRef) -> Result<ScalarBuffer<f32>> {
    Ok(match values.data_type() {
        DataType::Float32 => values.as_primitive::<Float32Type>().values().clone(),
        DataType::Float64 => values
            .as_primitive::<Float64Type>()
            .values()
            .iter()
            .map(|&v| v as f32)
            .collect(),
        DataType::Float16 => values
            .as_primitive::<Float16Type>()
            .values()
            .iter()
            .map(|v| v.to_f32())
            .collect(),
        other => {
            return Err(Error::invalid(format!(
                "vector column '{column}' holds {other}; expected float32 (or float16/float64)"
            )))
        }
    })
}

/// The values of a list column of vectors, each row's start in them, and the row length
/// (all rows must have it).
fn list_rows<O: OffsetSizeTrait>(
    column: &str,
    list: &GenericListArray<O>,
    dim: Option<usize>,
) -> Result<(ArrayRef, Vec<usize>, usize)> {
    let n = list.len();
    let offs: Vec<usize> = list.value_offsets().iter().map(|o| o.as_usize()).collect();
    ragged_check(column, &offs, dim)?;
    let base = offs[0];
    let len = if n == 0 {
        dim.unwrap_or(0)
    } else {
        offs[1] - offs[0]
    };
    let values = list.values().slice(base, offs[n] - base);
    Ok((values, offs[..n].iter().map(|o| o - base).collect(), len))
}

fn ragged_check(column: &str, offs: &[usize], dim: Option<usize>) -> Result<()> {
    let expected = match dim {
        Some(d) => d,
        None if offs.len() >= 2 => offs[1] - offs[0],
        None => return Ok(()),
    };
    for (row, w) in offs.windows(2).enumerate() {
        let len = w[1] - w[0];
        if len != expected {
            let what = if dim.is_some() {
                "wrong dimension"
            } else {
                "ragged vectors: length"
            };
            return Err(Error::invalid(format!(
                "vector column '{column}': row {row} has {what} {len}, expected {expected}"
            )));
        }
    }
    Ok(())
}

fn first_null(array: &dyn Array) -> Option<usize> {
    let nulls = array.logical_nulls()?;
    if nulls.null_count() == 0 {
        return None;
    }
    (0..array.len()).find(|&i| nulls.is_null(i))
}

impl Layout {
    /// Converts `batch` to the stored schema of a collection ranked by `metric`, or says why
    /// it cannot be (a zero vector has no direction, so no cosine distance).
    pub(crate) fn prepare(&self, batch: &RecordBatch, metric: Metric) -> Result<RecordBatch> {
        let name = &self.name;
        let incoming = batch.schema();
        for f in incoming.fields() {
            if self.schema.index_of(f.name()).is_err() {
                return Err(Error::invalid(format!(
                    "collection '{name}': batch column '{}' is not in the collection (columns: {})",
                    f.name(),
                    column_names(&self.schema)
                )));
            }
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (i, field) in self.schema.fields().iter().enumerate() {
            let col = batch.column_by_name(field.name()).ok_or_else(|| {
                Error::invalid(format!(
                    "collection '{name}': batch is missing column '{}'",
                    field.name()
                ))
            })?;
            let col = if i == self.vector_index {
                let vectors =
                    coerce_vectors_to(field.name(), col, Some(self.dim), self.vector_type)?;
                if metric == Metric::Cosine {
                    if let Some(row) = first_zero_vector(&vectors, self.dim) {
                        return Err(Error::invalid(format!(
                            "collection '{name}': vector column '{}' row {row} is all zeros, \
                             which has no cosine distance (the collection's metric is cosine)",
                            field.name()
                        )));
                    }
                }
                Arc::new(vectors) as ArrayRef
            } else {
                let col = self.cast_column(field, col)?;
                if !field.is_nullable() {
                    if let Some(row) = first_null(col.as_ref()) {
                        return Err(Error::invalid(format!(
                            "collection '{name}': column '{}' row {row} is null",
                            field.name()
                        )));
                    }
                }
                col
            };
            columns.push(col);
        }
        let out = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.check_unique_ids_of(&out)?;
        Ok(out)
    }

    fn cast_column(&self, field: &Field, col: &ArrayRef) -> Result<ArrayRef> {
        let (from, to) = (col.data_type(), field.data_type());
        if from == to {
            return Ok(col.clone());
        }
        let compatible = storage_type(from) == *to
            || (to == &DataType::Int64 && from.is_integer())
            || (to.is_floating() && from.is_floating())
            || (from.is_integer() && to.is_integer());
        if !compatible {
            return Err(Error::invalid(format!(
                "collection '{}': column '{}' has type {from}, the collection stores {to}",
                self.name,
                field.name()
            )));
        }
        let opts = arrow_cast::CastOptions {
            safe: false,
            ..Default::default()
        };
        arrow_cast::cast_with_options(col, to, &opts).map_err(|e| {
            Error::invalid(format!(
                "collection '{}': column '{}' cannot be stored as {to}: {e}",
                self.name,
                field.name()
            ))
        })
    }

    /// Refuses a batch (in this layout) that holds an id twice.
    pub(crate) fn check_unique_ids_of(&self, batch: &RecordBatch) -> Result<()> {
        match first_duplicate(batch.column(self.id_index).as_ref()) {
            Some((row, id)) => Err(Error::invalid(format!(
                "collection '{}': duplicate id {id} in batch (row {row})",
                self.name
            ))),
            None => Ok(()),
        }
    }

    /// Casts an array of ids to the collection's id type (Int64 or Utf8), refusing nulls.
    pub(crate) fn cast_ids(&self, ids: &dyn Array) -> Result<ArrayRef> {
        let field = self.schema.field(self.id_index);
        if let Some(row) = first_null(ids) {
            return Err(Error::invalid(format!(
                "collection '{}': id {row} is null",
                self.name
            )));
        }
        self.cast_column(field, &arrow_array::make_array(ids.to_data()))
    }
}

/// The schema a collection created from `batch` gets: the vector column (named, or the one
/// vector-like column) becomes `FixedSizeList<Float32, d>` (`Float16` if it holds float16)
/// with `d` taken from the first row.
pub(crate) fn schema_for_batch(
    batch: &RecordBatch,
    id_column: &str,
    vector_column: Option<&str>,
) -> Result<Schema> {
    let schema = batch.schema();
    let index = match vector_column {
        Some(v) => schema.index_of(v).map_err(|_| {
            Error::invalid(format!(
                "no vector column '{v}' in batch (columns: {})",
                column_names(&schema)
            ))
        })?,
        None => {
            let found: Vec<usize> = (0..schema.fields().len())
                .filter(|&i| {
                    schema.field(i).name() != id_column
                        && is_vector_like(schema.field(i).data_type())
                })
                .collect();
            match found.as_slice() {
                [one] => *one,
                [] => {
                    return Err(Error::invalid(format!(
                        "batch has no vector column (a list of floats; in CSV, a vector is \
                         text in brackets, \"[0.1, 0.2, ...]\"; columns: {})",
                        column_names(&schema)
                    )))
                }
                _ => {
                    return Err(Error::invalid(
                        "batch has several vector-like columns; name the vector column",
                    ))
                }
            }
        }
    };
    let field = schema.field(index);
    let vectors = coerce_vectors(field.name(), batch.column(index), None)?;
    let item = match field.data_type() {
        DataType::FixedSizeList(f, _) | DataType::List(f) | DataType::LargeList(f) => {
            f.data_type().clone()
        }
        _ => DataType::Float32,
    };
    let mut fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
    fields[index] = Arc::new(Field::new(
        field.name(),
        vector_type(vectors.value_length() as usize, VectorType::of_item(&item)),
        false,
    ));
    Ok(Schema::new(fields))
}

/// The values of a stored vector column (`FixedSizeList<Float32 | Float16, dim>`),
/// row-major, in place.
pub(crate) fn vector_values(column: &dyn Array, dim: usize) -> Floats<'_> {
    let fsl = column.as_fixed_size_list();
    let (start, end) = (fsl.offset() * dim, (fsl.offset() + fsl.len()) * dim);
    match fsl.value_type() {
        DataType::Float16 => {
            Floats::F16(&fsl.values().as_primitive::<Float16Type>().values()[start..end])
        }
        _ => Floats::F32(&fsl.values().as_primitive::<Float32Type>().values()[start..end]),
    }
}
