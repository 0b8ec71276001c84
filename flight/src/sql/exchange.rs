//! DoExchange: a search, or a statement with its parameters, in one call, for clients that
//! speak plain Flight (the Python package's remote mode, any language's Flight client). The
//! descriptor's command is JSON naming what to run; the client's stream carries the Arrow
//! input (the query vectors, or one row of parameters); the answer streams back on the same
//! call. Flight SQL's prepared statements take three calls for the same search.
//!
//! - `{"search": "docs", "k": 10, "ef": 64, "nprobe": 8, "where": "lang = 'en'", "fast":
//!   false}` (all but `search` and `k` optional), with one row per query vector (the first
//!   column: a fixed-size or variable list of floats). The answer: `_query` (the input row
//!   each result answers, Int32), the collection's columns and `_distance`, each query's rows
//!   nearest first. A search with `where` runs the statement
//!   `SELECT * FROM knn(...) WHERE (...)` planned once per session and text, then only bound.
//! - `{"search": "docs", "k": 10, "stream": true}`: many searches on one open call, each
//!   answered before the next is read (a search then costs one message each way, not a call).
//!   Each batch the client sends is one search; its `app_metadata`, when set, is that search's
//!   own `{"k": .., "ef": .., "nprobe": .., "where": .., "fast": ..}`. Its answer: its rows (no
//!   message when there are none), then a message with no data whose `app_metadata` is
//!   `{"rows": n}`. A failing search ends the call with its error.
//! - `{"sql": "SELECT ... $1 ..."}`, with no input or one row whose columns are `$1, $2, ...`
//!   (or named parameters by column name): planned once per session and text, bound per call.
//!
//! Roles, the file policy, sessions and the limits (`--max-k`, `--max-ef`,
//! `--max-result-rows`, `--query-timeout`) hold as for every other call.

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::FlightData;
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Float32Type, SchemaRef};
use datafusion::common::ParamValues;
use futures::stream::{self, StreamExt, TryStreamExt};
use omendb::{SearchRequest, SearchResults};
use omendb_datafusion::FilteredSearch;
use serde::Deserialize;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Role;
use crate::error::flight_status;
use crate::error::Error;
use crate::runtime::{blocking, caught_stream, Stream};
use crate::session::{Session, SESSION_HEADER};
use crate::wire::{encode, put_batches, put_batches_with_metadata};
use crate::{metrics, OmenFlight};

/// A search: the collection, k and the knobs of `knn()`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Search {
    search: String,
    k: usize,
    #[serde(default)]
    ef: Option<usize>,
    #[serde(default)]
    nprobe: Option<usize>,
    #[serde(default, rename = "where")]
    filter: Option<String>,
    #[serde(default)]
    fast: bool,
    /// Many searches on one call: each input batch is one search, answered in turn.
    #[serde(default)]
    stream: bool,
}

impl Search {
    /// The search one streamed batch asks for: the command's, or, when the batch's
    /// `app_metadata` is set, the search it describes (`{"k": .., "ef": .., "nprobe": ..,
    /// "where": .., "fast": ..}`, a knob it leaves out being the collection's) of the
    /// command's collection.
    fn streamed(&self, metadata: &[u8]) -> Result<Search, Status> {
        if metadata.is_empty() {
            return Ok(self.clone());
        }
        let bad = |e: String| {
            Status::invalid_argument(format!(
                "a streamed search's app_metadata is JSON: {{\"k\": k, \"ef\": ..., \"nprobe\": \
                 ..., \"where\": ..., \"fast\": ...}} ({e})"
            ))
        };
        let mut value: serde_json::Value =
            serde_json::from_slice(metadata).map_err(|e| bad(e.to_string()))?;
        let fields = value
            .as_object_mut()
            .ok_or_else(|| bad("not an object".into()))?;
        if fields.contains_key("search") {
            return Err(bad("the collection is the command's".into()));
        }
        fields.insert("search".into(), self.search.clone().into());
        let one: Search = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        Ok(Search {
            stream: true,
            ..one
        })
    }
}

/// A statement and (in the stream) its parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sql {
    sql: String,
}

/// What an exchange's command asks for.
enum Command {
    Search(Search),
    Sql(Sql),
}

fn command(bytes: &[u8]) -> Result<Command, Status> {
    let bad = |e: serde_json::Error| {
        Status::invalid_argument(format!(
            "a do_exchange command is JSON: {{\"search\": collection, \"k\": k, ...}} or \
             {{\"sql\": text}} ({e})"
        ))
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(bad)?;
    if value.get("search").is_some() {
        Ok(Command::Search(serde_json::from_value(value).map_err(bad)?))
    } else if value.get("sql").is_some() {
        Ok(Command::Sql(serde_json::from_value(value).map_err(bad)?))
    } else {
        Err(Status::invalid_argument(
            "a do_exchange command names \"search\" (a collection) or \"sql\" (a statement)",
        ))
    }
}

/// `response` telling the client its session.
fn with_session_header<T>(mut response: Response<T>, session: &Session) -> Response<T> {
    if let Ok(v) = MetadataValue::try_from(&session.id) {
        response.metadata_mut().insert(SESSION_HEADER, v);
    }
    response
}

/// Whether two result schemas have the same columns (names and types) in the same order.
fn same_columns(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields().iter())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// The query vectors of a search's input, flattened: the first column of every batch, a row
/// per query (any list of numbers of the collection's dimension).
fn query_vectors(batches: &[RecordBatch], dim: usize) -> Result<Vec<f32>, Status> {
    let mut out = Vec::new();
    for b in batches.iter().filter(|b| b.num_rows() > 0) {
        let vectors =
            omendb::coerce_vectors("query vector", b.column(0), Some(dim)).map_err(Error::from)?;
        out.extend_from_slice(vectors.values().as_primitive::<Float32Type>().values());
    }
    Ok(out)
}

impl OmenFlight {
    pub(crate) async fn do_exchange_inner(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Stream<FlightData>>, Status> {
        let role = self.role(request.metadata(), Role::Read, "an exchange")?;
        let session = self.session(&request)?;
        let mut input = request.into_inner();
        let first = input
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty do_exchange stream"))?;
        let cmd = first
            .flight_descriptor
            .as_ref()
            .map(|d| d.cmd.clone())
            .ok_or_else(|| {
                Status::invalid_argument(
                    "the first message of do_exchange must carry a descriptor with the command",
                )
            })?;
        let command = command(&cmd)?;
        if let Command::Search(search) = &command {
            if search.stream {
                let out = self.search_stream(session.clone(), role, search.clone(), first, input);
                let mut response = Response::new(out);
                response.extensions_mut().insert(metrics::OpenCall);
                return Ok(with_session_header(response, &session));
            }
        }
        let mut batches = Vec::new();
        let mut rows = 0usize;
        let mut stream = put_batches(first, input);
        while let Some(b) = stream.next().await {
            let b = b?;
            rows += b.num_rows();
            if rows > self.config.max_put_rows {
                return Err(Status::resource_exhausted(format!(
                    "an exchange's input holds at most {} rows (--max-put-rows)",
                    self.config.max_put_rows
                )));
            }
            batches.push(b);
        }
        let (text, schema, out) = match command {
            Command::Search(s) => self.exchange_search(&session, role, s, batches).await?,
            Command::Sql(s) => self.exchange_sql(&session, role, s, batches).await?,
        };
        let stream = stream::iter(out.into_iter().map(Ok));
        let mut response = Response::new(encode(schema, stream, "an exchange"));
        response.extensions_mut().insert(metrics::QueryText(text));
        Ok(with_session_header(response, &session))
    }

    /// A stream of searches (`"stream": true`): each batch of `input` is one search (its
    /// `app_metadata`, when set, its own options), answered in turn by that search's rows (no
    /// message when there are none) and then a message carrying no data whose `app_metadata`
    /// is `{"rows": n}`. The first failing search ends the call with its error.
    fn search_stream(
        &self,
        session: std::sync::Arc<Session>,
        role: Role,
        search: Search,
        first: FlightData,
        input: Streaming<FlightData>,
    ) -> Stream<FlightData> {
        let me = self.clone();
        // The schema the call's first answer sent, every later answer's.
        let sent: std::sync::Arc<std::sync::Mutex<Option<SchemaRef>>> = Default::default();
        // The searches end when the client ends its side, or when the server shuts down.
        let answers = put_batches_with_metadata(first, input)
            .take_until(self.stopping())
            .then(move |item| {
                let (me, session, search, sent) =
                    (me.clone(), session.clone(), search.clone(), sent.clone());
                async move {
                    me.streamed_answer(&session, role, &search, item, &sent)
                        .await
                }
            })
            .flat_map(|answer| {
                stream::iter(match answer {
                    Ok(messages) => messages.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(status) => vec![Err(status)],
                })
            })
            .scan(false, |failed, item| {
                // The first error ends the call.
                let out = (!*failed).then_some(item);
                *failed |= out.as_ref().is_some_and(|i| i.is_err());
                futures::future::ready(out)
            });
        caught_stream("a stream of searches", answers)
    }

    /// The messages answering one streamed search: its rows (the schema first, once per call:
    /// `sent` keeps it) and the closing message.
    async fn streamed_answer(
        &self,
        session: &Session,
        role: Role,
        search: &Search,
        item: Result<(RecordBatch, prost::bytes::Bytes), Status>,
        sent: &std::sync::Mutex<Option<SchemaRef>>,
    ) -> Result<Vec<FlightData>, Status> {
        let (batch, metadata) = item?;
        let max_rows = self.config.max_put_rows;
        if batch.num_rows() > max_rows {
            return Err(Status::resource_exhausted(format!(
                "a streamed search holds at most {max_rows} query rows (--max-put-rows)"
            )));
        }
        let one = search.streamed(&metadata)?;
        let (_, schema, out) = self
            .exchange_search(session, role, one, vec![batch])
            .await?;
        let (schema, send_schema) = {
            let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
            match sent.as_ref() {
                None => {
                    *sent = Some(schema.clone());
                    (schema, true)
                }
                Some(first) if same_columns(first, &schema) => (first.clone(), false),
                Some(_) => {
                    return Err(Status::failed_precondition(format!(
                        "collection '{}' changed its columns since this stream of searches \
                         began: start another",
                        search.search
                    )))
                }
            }
        };
        let out = out
            .into_iter()
            .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::internal(format!("a search's rows do not fit its schema: {e}")))?;
        let rows: usize = out.iter().map(RecordBatch::num_rows).sum();
        let encoded: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(stream::iter(out.into_iter().map(Ok)))
            .try_collect()
            .await
            .map_err(flight_status)?;
        let mut messages: Vec<FlightData> = encoded
            .into_iter()
            .enumerate()
            .filter(|(i, _)| send_schema || *i > 0)
            .map(|(_, m)| m)
            .collect();
        messages.push(FlightData {
            app_metadata: format!("{{\"rows\":{rows}}}").into(),
            ..Default::default()
        });
        Ok(messages)
    }

    /// Runs a search command: the query text for the log, the schema and the rows.
    async fn exchange_search(
        &self,
        session: &Session,
        role: Role,
        s: Search,
        input: Vec<RecordBatch>,
    ) -> Result<(String, SchemaRef, Vec<RecordBatch>), Status> {
        let limits = &self.config;
        if s.k > limits.max_k {
            return Err(Status::invalid_argument(format!(
                "k {} is over the limit of {} (--max-k)",
                s.k, limits.max_k
            )));
        }
        if let Some(ef) = s.ef.filter(|&ef| ef > limits.max_ef) {
            return Err(Status::invalid_argument(format!(
                "ef {ef} is over the limit of {} (--max-ef)",
                limits.max_ef
            )));
        }
        if s.nprobe == Some(0) {
            return Err(Status::invalid_argument(
                "nprobe must be a positive integer, got 0",
            ));
        }
        // As a knn() binds: the collection is looked up where the call runs.
        let collection = self.db.collection(&s.search).map_err(Error::from)?;
        let dim = collection.dim();
        let queries = query_vectors(&input, dim)?;
        let nq = queries.len() / dim.max(1);
        if nq.saturating_mul(s.k) > limits.max_result_rows {
            return Err(Status::resource_exhausted(format!(
                "{nq} queries of k {} could return more than {} rows (--max-result-rows)",
                s.k, limits.max_result_rows
            )));
        }
        let text = format!(
            "search {} k={} ef={:?} nprobe={:?} where={:?} fast={} ({nq} queries)",
            s.search, s.k, s.ef, s.nprobe, s.filter, s.fast
        );
        let Some(cond) = &s.filter else {
            let (ef, nprobe, k, fast) = (s.ef, s.nprobe, s.k, s.fast);
            let snapshot = collection.snapshot();
            // A short search runs here, as a knn() does (a blocking thread costs two wake-ups
            // more than it); a longer one on a blocking thread, within the query timeout.
            let work = snapshot.search_work(
                &SearchRequest::new(&queries, k)
                    .ef(ef)
                    .nprobe(nprobe)
                    .fast(fast),
            );
            let short = work <= omendb_datafusion::INLINE_WORK;
            let search = move || -> Result<RecordBatch, Error> {
                let req = SearchRequest::new(&queries, k)
                    .ef(ef)
                    .nprobe(nprobe)
                    .fast(fast);
                Ok(snapshot.search_rows(&req)?.numbered()?)
            };
            let batch = if short {
                search()?
            } else {
                let timeout = limits.query_timeout;
                tokio::time::timeout(timeout, blocking("a search", search))
                    .await
                    .map_err(|_| crate::wire::timed_out(timeout))??
            };
            return Ok((text, batch.schema(), vec![batch]));
        };
        let k = s.k as i64;
        let search = FilteredSearch::new(&s.search, cond, k, s.ef, s.nprobe, s.fast);
        let prepared = self.statement(session, &search.sql, role).await?;
        let (mut rows, mut per_query) = (Vec::new(), Vec::new());
        for query in queries.chunks(dim) {
            let values = search.values(query).into_iter().map(Into::into).collect();
            let got = self
                .run_to_end(&prepared, ParamValues::List(values))
                .await?;
            per_query.push(got.iter().map(RecordBatch::num_rows).sum());
            rows.extend(got);
        }
        let rows = concat_batches(&prepared.schema(), &rows)
            .map_err(|e| Status::internal(format!("gathering search results: {e}")))?;
        let numbered = SearchResults::new(rows, per_query)
            .and_then(|r| r.numbered())
            .map_err(Error::from)?;
        Ok((text, numbered.schema(), vec![numbered]))
    }

    /// Runs a statement with the one row of parameters of `input` (or none).
    async fn exchange_sql(
        &self,
        session: &Session,
        role: Role,
        s: Sql,
        input: Vec<RecordBatch>,
    ) -> Result<(String, SchemaRef, Vec<RecordBatch>), Status> {
        let rows: usize = input.iter().map(RecordBatch::num_rows).sum();
        if rows > 1 {
            return Err(Status::invalid_argument(format!(
                "a statement runs with one row of parameters, {rows} were sent"
            )));
        }
        let prepared = self.statement(session, &s.sql, role).await?;
        let values = match input.iter().find(|b| b.num_rows() > 0) {
            None => ParamValues::List(vec![]),
            Some(b) => {
                let values = super::prepared::param_values(&prepared, b, 0)?;
                super::prepared::check_bound_types(&prepared, &values)?;
                values
            }
        };
        let schema = Self::bound_schema(&prepared, &values)?;
        let out = self.run_to_end(&prepared, values).await?;
        let schema = out.first().map_or(schema, RecordBatch::schema);
        Ok((s.sql, schema, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_named_and_unknown_keys_refused() {
        assert!(matches!(
            command(br#"{"search": "docs", "k": 3, "where": "a > 1"}"#),
            Ok(Command::Search(Search {
                k: 3,
                filter: Some(_),
                ..
            }))
        ));
        assert!(matches!(
            command(br#"{"sql": "SELECT 1"}"#),
            Ok(Command::Sql(_))
        ));
        for bad in [
            &br#"{"search": "docs", "k": 3, "eff": 9}"#[..],
            br#"{"search": "docs"}"#,
            br#"{"query": "x"}"#,
            b"SELECT 1",
        ] {
            let e = command(bad).err().expect("refused");
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{}", e.message());
        }
    }
}
