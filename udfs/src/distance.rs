//! Scalar distance functions over vector columns and array literals:
//! `cosine_distance(a, b)`, `l2_distance(a, b)` (euclidean), `inner_product(a, b)` and
//! `negative_inner_product(a, b)`, with DuckDB's names (`array_cosine_distance`,
//! `array_distance`, `array_inner_product`, `array_negative_inner_product`) as aliases. pgvector's
//! operators `<=>`, `<->` and `<#>` plan to the same functions (see [`crate::sql`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, ListArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use omendb::internals::kernels;

use crate::knn::float32_list;

/// Which distance a [`VectorDistance`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Cosine,
    L2,
    InnerProduct,
    NegativeInnerProduct,
}

/// A distance function over two vectors (columns or constants).
#[derive(Debug, PartialEq, Eq, Hash)]
struct VectorDistance {
    kind: Kind,
    name: &'static str,
    aliases: Vec<String>,
    signature: Signature,
}

/// The distance functions, ready to register.
pub fn distance_udfs() -> Vec<ScalarUDF> {
    [
        (Kind::Cosine, "cosine_distance", "array_cosine_distance"),
        (Kind::L2, "l2_distance", "array_distance"),
        (Kind::InnerProduct, "inner_product", "array_inner_product"),
        (
            Kind::NegativeInnerProduct,
            "negative_inner_product",
            "array_negative_inner_product",
        ),
    ]
    .into_iter()
    .map(|(kind, name, alias)| {
        ScalarUDF::new_from_impl(VectorDistance {
            kind,
            name,
            aliases: vec![alias.to_string()],
            signature: Signature::any(2, Volatility::Immutable),
        })
    })
    .collect()
}

/// Rows of vectors, read in place where the input is already `FixedSizeList<Float32>`.
struct Vectors {
    values: Float32Array,
    /// Row i spans `offsets[i]..offsets[i + 1]`.
    offsets: Vec<usize>,
    nulls: Option<NullBuffer>,
}

impl Vectors {
    fn new(array: &ArrayRef, fname: &str) -> Result<Vectors> {
        let bad = || {
            DataFusionError::Plan(format!(
                "{fname}: arguments must be vectors (lists of numbers), got {}",
                array.data_type()
            ))
        };
        if let DataType::FixedSizeList(f, size) = array.data_type() {
            if f.data_type() == &DataType::Float32 {
                let fsl = array
                    .as_any()
                    .downcast_ref::<FixedSizeListArray>()
                    .ok_or_else(bad)?;
                let size = *size as usize;
                let values = fsl
                    .values()
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .ok_or_else(bad)?;
                let start = fsl.offset() * size;
                return Ok(Vectors {
                    values: values.slice(start, fsl.len() * size),
                    offsets: (0..=fsl.len()).map(|i| i * size).collect(),
                    nulls: fsl.logical_nulls(),
                });
            }
        }
        let cast = float32_list(array).ok_or_else(bad)?.map_err(|_| bad())?;
        let list = cast.as_any().downcast_ref::<ListArray>().ok_or_else(bad)?;
        let values = list
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(bad)?;
        if values.null_count() > 0 {
            return Err(DataFusionError::Execution(format!(
                "{fname}: vectors contain null elements"
            )));
        }
        Ok(Vectors {
            values: values.clone(),
            offsets: list.value_offsets().iter().map(|&o| o as usize).collect(),
            nulls: list.logical_nulls(),
        })
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    fn get(&self, i: usize) -> Option<&[f32]> {
        if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return None;
        }
        Some(&self.values.values()[self.offsets[i]..self.offsets[i + 1]])
    }
}

impl VectorDistance {
    fn compute(&self, a: &[f32], b: &[f32]) -> f32 {
        let k = kernels();
        match self.kind {
            Kind::InnerProduct => (k.dot)(a, b),
            Kind::NegativeInnerProduct => -(k.dot)(a, b),
            Kind::L2 => (k.l2sq)(a, b).sqrt(),
            Kind::Cosine => omendb::Metric::Cosine.distance(a, b),
        }
    }
}

impl ScalarUDFImpl for VectorDistance {
    fn name(&self) -> &str {
        self.name
    }

    fn aliases(&self) -> &[String] {
        &self.aliases
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let all_scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let rows = if all_scalar { 1 } else { args.number_rows };
        let [a, b] = &args.args[..] else {
            return Err(DataFusionError::Plan(format!(
                "{} takes 2 arguments",
                self.name
            )));
        };
        let (a_scalar, b_scalar) = (
            matches!(a, ColumnarValue::Scalar(_)),
            matches!(b, ColumnarValue::Scalar(_)),
        );
        let va = Vectors::new(&a.to_array(if a_scalar { 1 } else { rows })?, self.name)?;
        let vb = Vectors::new(&b.to_array(if b_scalar { 1 } else { rows })?, self.name)?;
        let mut out = Vec::with_capacity(rows);
        for i in 0..rows {
            let x = va.get(if va.len() == 1 { 0 } else { i });
            let y = vb.get(if vb.len() == 1 { 0 } else { i });
            out.push(match (x, y) {
                (Some(x), Some(y)) => {
                    if x.len() != y.len() {
                        return Err(DataFusionError::Execution(format!(
                            "{}: vectors have different dimensions ({} and {}) at row {i}",
                            self.name,
                            x.len(),
                            y.len()
                        )));
                    }
                    Some(self.compute(x, y))
                }
                _ => None,
            });
        }
        let result = Arc::new(Float32Array::from(out)) as ArrayRef;
        Ok(if all_scalar {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&result, 0)?)
        } else {
            ColumnarValue::Array(result)
        })
    }
}
