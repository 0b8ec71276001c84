//! Flight SQL metadata: what the server is (`GetSqlInfo`), what a session can see
//! (`GetCatalogs`, `GetDbSchemas`, `GetTables` with their schemas, `GetTableTypes`) and the
//! SQL types it speaks (`GetXdbcTypeInfo`). Clients such as ADBC's `get_info`,
//! `get_objects` and `get_table_schema` read these.

use std::sync::{Arc, LazyLock};

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Command, CommandGetTables, Nullable, Searchable, SqlInfo, SqlSupportedTransaction, XdbcDataType,
};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;
use prost::Message;
use tonic::Status;

static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "OmenDB");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.build().expect("static SQL info")
});

static XDBC_TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let types = [
        ("BOOLEAN", XdbcDataType::XdbcBit, None),
        ("INT", XdbcDataType::XdbcInteger, Some(32)),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(64)),
        ("FLOAT", XdbcDataType::XdbcFloat, Some(24)),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(53)),
        ("VARCHAR", XdbcDataType::XdbcVarchar, None),
        ("TIMESTAMP", XdbcDataType::XdbcTimestamp, None),
    ];
    for (name, ty, size) in types {
        b.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type: ty,
            column_size: size,
            nullable: Nullable::NullabilityNullable,
            searchable: Searchable::Full,
            local_type_name: Some(name.into()),
            sql_data_type: ty,
            num_prec_radix: size.map(|_| 2),
            literal_prefix: (ty == XdbcDataType::XdbcVarchar).then(|| "'".into()),
            literal_suffix: (ty == XdbcDataType::XdbcVarchar).then(|| "'".into()),
            ..Default::default()
        });
    }
    b.build().expect("static type info")
});

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// The FlightInfo of a metadata command: its schema, and the command itself as the ticket.
pub(super) fn flight_info(
    command: Command,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo, Status> {
    let schema: SchemaRef = match &command {
        Command::CommandGetSqlInfo(c) => c.clone().into_builder(&SQL_INFO).schema(),
        Command::CommandGetCatalogs(c) => (*c).into_builder().schema(),
        Command::CommandGetDbSchemas(c) => c.clone().into_builder().schema(),
        Command::CommandGetTables(c) => c.clone().into_builder().schema(),
        Command::CommandGetTableTypes(c) => (*c).into_builder().schema(),
        Command::CommandGetXdbcTypeInfo(c) => (*c).into_builder(&XDBC_TYPES).schema(),
        other => return Err(unsupported(other)),
    };
    let ticket = Ticket::new(command.into_any().encode_to_vec());
    FlightInfo::new()
        .try_with_schema(&schema)
        .map_err(internal)
        .map(|info| {
            info.with_descriptor(descriptor)
                .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        })
}

fn unsupported(command: &Command) -> Status {
    Status::unimplemented(format!(
        "{} is not supported by this server",
        command.type_url()
    ))
}

/// The name a table type has in Flight SQL.
fn type_name(t: TableType) -> &'static str {
    match t {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// The rows answering a metadata command in the session `ctx`.
pub(super) async fn rows(
    command: Command,
    ctx: &SessionContext,
) -> Result<(SchemaRef, RecordBatch), Status> {
    let (schema, batch) = match command {
        Command::CommandGetSqlInfo(c) => {
            let b = c.into_builder(&SQL_INFO);
            (b.schema(), b.build())
        }
        Command::CommandGetXdbcTypeInfo(c) => {
            let b = c.into_builder(&XDBC_TYPES);
            (b.schema(), b.build())
        }
        Command::CommandGetCatalogs(c) => {
            let mut b = c.into_builder();
            for catalog in ctx.catalog_names() {
                b.append(catalog);
            }
            (b.schema(), b.build())
        }
        Command::CommandGetDbSchemas(c) => {
            let mut b = c.into_builder();
            for catalog in ctx.catalog_names() {
                let Some(cat) = ctx.catalog(&catalog) else {
                    continue;
                };
                for schema in cat.schema_names() {
                    b.append(&catalog, schema);
                }
            }
            (b.schema(), b.build())
        }
        Command::CommandGetTables(c) => return tables(c, ctx).await,
        Command::CommandGetTableTypes(c) => {
            let mut b = c.into_builder();
            for t in [TableType::Base, TableType::View, TableType::Temporary] {
                b.append(type_name(t));
            }
            (b.schema(), b.build())
        }
        other => return Err(unsupported(&other)),
    };
    Ok((schema, batch.map_err(internal)?))
}

/// `GetTables`: every table of the session the command's filters select (the builder
/// applies the catalog, schema-pattern, name-pattern and type filters), with its schema
/// when asked.
async fn tables(
    c: CommandGetTables,
    ctx: &SessionContext,
) -> Result<(SchemaRef, RecordBatch), Status> {
    let mut b = c.into_builder();
    for catalog in ctx.catalog_names() {
        let Some(cat) = ctx.catalog(&catalog) else {
            continue;
        };
        for schema_name in cat.schema_names() {
            let Some(schema) = cat.schema(&schema_name) else {
                continue;
            };
            for table in schema.table_names() {
                // A damaged collection is listed with no columns rather than hiding the rest.
                let (kind, columns) = match schema.table(&table).await {
                    Ok(Some(t)) => (type_name(t.table_type()), t.schema()),
                    _ => ("TABLE", Arc::new(Schema::empty())),
                };
                b.append(&catalog, &schema_name, &table, kind, &columns)
                    .map_err(internal)?;
            }
        }
    }
    let schema = b.schema();
    Ok((schema, b.build().map_err(internal)?))
}
