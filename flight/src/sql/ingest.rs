//! Flight SQL bulk ingest (`CommandStatementIngest`), streamed through the plain put's
//! all-or-nothing ingest.

use arrow_flight::sql::{CommandStatementIngest, TableExistsOption, TableNotExistOption};
use arrow_flight::FlightData;
use omendb::{CollectionOptions, WriteMode};
use tonic::{Status, Streaming};

use crate::error::engine_status;
use crate::OmenFlight;

use super::refuse_transaction;

impl OmenFlight {
    /// `CommandStatementIngest`: the stream into a collection, created, appended to or
    /// replaced as the command's table options say; options name the collection's settings
    /// (`metric`, `id`, `vector`, `m`, `ef_construction`, `ef_search`, `index_threshold`).
    pub(super) async fn sql_ingest(
        &self,
        cmd: CommandStatementIngest,
        first: FlightData,
        input: Streaming<FlightData>,
        deadline: Option<std::time::Instant>,
    ) -> Result<usize, Status> {
        refuse_transaction(cmd.transaction_id.as_ref())?;
        if cmd.temporary {
            return Err(Status::invalid_argument(
                "ingest into a temporary table is not supported: collections are stored",
            ));
        }
        if let Some(c) = cmd.catalog.as_deref().filter(|c| *c != "datafusion") {
            return Err(Status::not_found(format!(
                "catalog '{c}' does not exist (collections are in catalog 'datafusion')"
            )));
        }
        if let Some(s) = cmd.schema.as_deref().filter(|s| *s != "public") {
            return Err(Status::not_found(format!(
                "schema '{s}' does not exist (collections are in schema 'public')"
            )));
        }
        let settings: Vec<String> = cmd
            .options
            .iter()
            .filter(|(k, _)| !k.starts_with("adbc."))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let opts = CollectionOptions::parse(settings.iter().map(String::as_str)).map_err(|e| {
            Status::invalid_argument(format!(
                "bad ingest option: {}",
                engine_status(&e).message()
            ))
        })?;
        let table_options = cmd.table_definition_options.unwrap_or_default();
        let if_missing = table_options.if_not_exist();
        let if_exists = table_options.if_exists();
        let name = cmd.table;
        let exists = self.db.exists(&name);
        match (exists, if_exists, if_missing) {
            (true, TableExistsOption::Fail, _) => Err(Status::already_exists(format!(
                "collection '{name}' already exists (ingest mode create: use append or replace)"
            ))),
            (false, _, TableNotExistOption::Fail) => Err(Status::not_found(format!(
                "collection '{name}' does not exist (ingest mode append: use create or \
                 create_append)"
            ))),
            (_, TableExistsOption::Unspecified, _) | (_, _, TableNotExistOption::Unspecified) => {
                Err(Status::invalid_argument(
                    "the ingest command must say what to do when the table exists and when it \
                     does not",
                ))
            }
            (_, TableExistsOption::Replace, _) => Ok(self
                .ingest_stream(first, input, name, WriteMode::Replace, opts, deadline)
                .await?
                .1),
            (_, TableExistsOption::Fail, _) => Ok(self
                .ingest_stream(first, input, name, WriteMode::Create, opts, deadline)
                .await?
                .1),
            (_, _, TableNotExistOption::Fail) => Ok(self
                .ingest_stream(first, input, name, WriteMode::Append, opts, deadline)
                .await?
                .1),
            _ => Ok(self
                .ingest_stream(
                    first,
                    input,
                    name,
                    WriteMode::CreateOrAppend,
                    opts,
                    deadline,
                )
                .await?
                .1),
        }
    }
}
