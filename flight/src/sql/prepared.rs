//! Prepared statements' parameters: their schema, the values a row of them binds, and the
//! rows a handle carries.

use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{ParamValues, ScalarValue};
use tonic::Status;

use crate::error::Error;
use crate::OmenFlight;

use super::{from_ipc, Handle};

/// The parameter schema of a prepared statement: `$1, $2, ...` in order, then named ones;
/// a parameter whose type the statement does not imply is Null (any type binds).
pub(super) fn parameter_schema(prepared: &omendb_datafusion::Prepared) -> Schema {
    let mut names: Vec<&String> = prepared.parameters().keys().collect();
    names.sort_by_key(|n| {
        let position = n.trim_start_matches('$').parse::<usize>().ok();
        (position.is_none(), position, n.to_string())
    });
    Schema::new(
        names
            .into_iter()
            .map(|n| {
                let ty = prepared.parameters()[n]
                    .as_ref()
                    .map_or(DataType::Null, |f| f.data_type().clone());
                Field::new(n.as_str(), ty, true)
            })
            .collect::<Vec<_>>(),
    )
}

/// The values row `row` of `batch` binds: by position when the statement's parameters are
/// `$1, $2, ...`, by column name otherwise.
pub(super) fn param_values(
    prepared: &omendb_datafusion::Prepared,
    batch: &RecordBatch,
    row: usize,
) -> Result<ParamValues, Status> {
    let value = |col: &dyn Array| {
        ScalarValue::try_from_array(col, row)
            .map_err(|e| Status::invalid_argument(format!("unreadable parameter value: {e}")))
    };
    let positional = prepared
        .parameters()
        .keys()
        .all(|n| n.trim_start_matches('$').parse::<usize>().is_ok());
    if positional {
        let values = batch
            .columns()
            .iter()
            .map(|c| value(c.as_ref()).map(Into::into))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(ParamValues::List(values));
    }
    let mut map = std::collections::HashMap::new();
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        let name = field.name().trim_start_matches('$').to_string();
        map.insert(name, value(col.as_ref())?.into());
    }
    Ok(ParamValues::Map(map))
}

/// Refuses a bound value that cannot be what its integer parameter is (a float or a string where
/// k goes), so the execute call fails rather than the fetch; a knn() query vector is checked by
/// `Prepared::check_values`.
pub(super) fn check_bound_types(
    prepared: &omendb_datafusion::Prepared,
    values: &ParamValues,
) -> Result<(), Status> {
    let ParamValues::List(list) = values else {
        return Ok(());
    };
    for (i, bound) in list.iter().enumerate() {
        let name = format!("${}", i + 1);
        let Some(Some(field)) = prepared.parameters().get(&name) else {
            continue;
        };
        let got = bound.value.data_type();
        if field.data_type().is_integer() && !got.is_integer() && !got.is_null() {
            return Err(Status::invalid_argument(format!(
                "parameter {name} is an integer, but a {got} value was bound"
            )));
        }
    }
    Ok(())
}

impl OmenFlight {
    /// The rows of parameters a handle carries.
    pub(super) fn bound_rows(handle: &Handle) -> Result<Vec<RecordBatch>, Status> {
        if handle.params.is_empty() {
            return Ok(Vec::new());
        }
        Ok(from_ipc(&handle.params)?.1)
    }

    /// The parameter values of a query's run: the one row its handle carries (none when it
    /// carries none).
    pub(super) fn bound(
        prepared: &omendb_datafusion::Prepared,
        handle: &Handle,
    ) -> Result<ParamValues, Status> {
        let batches = Self::bound_rows(handle)?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        match batches.iter().find(|b| b.num_rows() > 0) {
            None => Ok(ParamValues::List(vec![])),
            Some(_) if rows > 1 => Err(Status::invalid_argument(format!(
                "a prepared query runs with one row of parameters, {rows} were bound; run it \
                 once per row (or use it as an update, which runs once per row)"
            ))),
            Some(batch) => {
                let values = param_values(prepared, batch, 0)?;
                check_bound_types(prepared, &values)?;
                Ok(values)
            }
        }
    }

    /// The schema of `prepared`'s result with `values` bound: a column typed by a parameter
    /// (`SELECT $1`) has the bound value's type, not the unbound plan's Null.
    pub(super) fn bound_schema(
        prepared: &omendb_datafusion::Prepared,
        values: &ParamValues,
    ) -> Result<SchemaRef, Error> {
        let schema = prepared.schema();
        let untyped = schema.fields().iter().any(|f| f.data_type().is_null());
        if !untyped || matches!(values, ParamValues::List(v) if v.is_empty()) {
            return Ok(schema);
        }
        let plan = prepared
            .logical_plan()
            .clone()
            .with_param_values(values.clone())?;
        Ok(Arc::new(plan.schema().as_arrow().clone()))
    }
}
