//! Flight actions. One table, `SERVER_ACTIONS`, names each action the server takes beside
//! Flight SQL's, with the role it needs and what it does: `list_actions` is generated from it
//! (then Flight SQL's, `sql`), the role check and the command line's help read it,
//! and dispatch matches the same names through the constants below. `drop_collection` and
//! `build_index` run here; the rest are [`maintenance`]'s.

pub mod maintenance;

use arrow_flight::{Action, ActionType};
use futures::stream;
use tonic::{Request, Response, Status};

use crate::auth::Role;
use crate::error::Error;
use crate::runtime::{blocking, Stream};
use crate::{sql, OmenFlight};

/// Drops the collection named in the body.
pub(crate) const DROP_COLLECTION: &str = "drop_collection";
/// Builds the vector index of the collection named in the body.
pub(crate) const BUILD_INDEX: &str = "build_index";
/// Merges a collection's segments (see [`maintenance`]).
pub const COMPACT: &str = "compact";
/// Changes a collection's settings (see [`maintenance`]).
pub const ALTER: &str = "alter";
/// Checks a collection's files against their checksums (see [`maintenance`]).
pub const VERIFY: &str = "verify";
/// A collection's statistics (see [`maintenance`]).
pub const STATS: &str = "stats";
/// Waits for a collection's background work, then answers its stats (see [`maintenance`]).
pub const WAIT: &str = "wait";
/// Copies the database, or one collection (see [`maintenance`]).
pub const BACKUP: &str = "backup";
/// Removes what no version of the last `retain` seconds names (see [`maintenance`]).
pub const GC: &str = "gc";

/// A Flight action: its name, the role it needs, and what it does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActionSpec {
    /// The action's type, as a client sends it.
    pub(crate) name: &'static str,
    /// The least role that may run it.
    pub(crate) role: Role,
    /// What it does, as `list_actions` says.
    pub(crate) description: &'static str,
}

const fn spec(name: &'static str, role: Role, description: &'static str) -> ActionSpec {
    ActionSpec {
        name,
        role,
        description,
    }
}

/// Every Flight action the server takes beside Flight SQL's. `list_actions`, the role check
/// and the command line's help read it.
pub(crate) const SERVER_ACTIONS: [ActionSpec; 9] = [
    spec(DROP_COLLECTION, Role::Admin, "Drop the collection named in the body"),
    spec(BUILD_INDEX, Role::Admin, "Build the collection's vector index (HNSW or IVF, by size and settings) for every unindexed segment of the collection named in the body"),
    spec(COMPACT, Role::Admin, "Merge the segments of the collection named in the body (every collection if none), dropping deleted rows"),
    spec(ALTER, Role::Admin, "Change settings: the body is the collection's name, then key=value pairs"),
    spec(VERIFY, Role::Admin, "Check every file of the collection named in the body (every collection if none) against its checksum"),
    spec(STATS, Role::Read, "Rows, segments, bytes on disk, index kinds and the running index build's progress of the collection named in the body, or of every collection (JSON)"),
    spec(WAIT, Role::Read, "Wait until the background index builds and merges of the collection named in the body (every collection if none) have finished, then answer its stats (JSON)"),
    spec(GC, Role::Admin, "Remove the files no reader can still need from the collection named in the body (every collection if none): manifests of versions replaced more than retain=SECONDS ago (default 3600) and files no kept version names that are older than that"),
    spec(BACKUP, Role::Admin, "Copy one consistent version of the database (or of the collection named on the body's second line) into the new directory (on the server's machine) or object storage URL on the body's first line"),
];

/// The role action `kind` needs (admin for any action the table does not name).
pub fn role_of(kind: &str) -> Role {
    SERVER_ACTIONS
        .iter()
        .find(|a| a.name == kind)
        .map_or(Role::Admin, |a| a.role)
}

impl OmenFlight {
    /// `list_actions`: the table above, then the Flight SQL actions.
    pub(crate) fn list_actions_inner(&self) -> Stream<ActionType> {
        let actions = SERVER_ACTIONS.map(|a| {
            Ok(ActionType {
                r#type: a.name.into(),
                description: format!("{} ({} role)", a.description, a.role.as_str()),
            })
        });
        let flight_sql = sql::ACTIONS.iter().map(|t| {
            Ok(ActionType {
                r#type: t.to_string(),
                description: "Flight SQL (see the Flight SQL protocol)".into(),
            })
        });
        Box::pin(stream::iter(
            actions.into_iter().chain(flight_sql).collect::<Vec<_>>(),
        ))
    }

    /// `do_action`: a Flight SQL action goes to `sql`; any other is checked against
    /// the role the table names and run here or by [`maintenance`].
    pub(crate) async fn do_action_inner(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Stream<arrow_flight::Result>>, Status> {
        if let Some(results) = self.sql_action(&request).await {
            return Ok(Response::new(Box::pin(stream::iter(
                results?.into_iter().map(Ok),
            ))));
        }
        let need = role_of(&request.get_ref().r#type);
        let what = format!("the action '{}'", request.get_ref().r#type);
        self.role(request.metadata(), need, &what)?;
        let action = request.into_inner();
        let body = std::str::from_utf8(&action.body)
            .map_err(|_| Status::invalid_argument("action body must be a UTF-8 collection name"))?;
        // The collection's name, then (for `alter`) key=value settings.
        let name = body
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let db = self.db.clone();
        let body = match action.r#type.as_str() {
            DROP_COLLECTION => {
                let n = name.clone();
                blocking(DROP_COLLECTION, move || {
                    db.drop_collection(&n).map_err(Error::from)
                })
                .await?;
                serde_json::json!({ "dropped": name })
            }
            BUILD_INDEX => {
                let c = self.open(&name).await?;
                // After the name, optionally `min_rows=N`: segments smaller stay unindexed.
                let min_rows = match body.split_whitespace().nth(1) {
                    None => 1,
                    Some(w) => w
                        .strip_prefix("min_rows=")
                        .and_then(|n| n.parse::<usize>().ok())
                        .ok_or_else(|| {
                            Status::invalid_argument(format!(
                                "build_index: after the collection's name only min_rows=N, \
                                 not '{w}'"
                            ))
                        })?,
                };
                let built = blocking(BUILD_INDEX, move || {
                    c.build_index(min_rows).map_err(Error::from)
                })
                .await?;
                serde_json::json!({ "collection": name, "indexes_built": built })
            }
            kind if maintenance::ACTIONS.contains(&kind) => {
                let (kind, body) = (kind.to_string(), body.to_string());
                blocking("maintenance", move || {
                    maintenance::run(&db, &kind, &body, &mut |_, _, _| {}).map_err(Error::from)
                })
                .await?
            }
            other => {
                let known: Vec<&str> = SERVER_ACTIONS.iter().map(|a| a.name).collect();
                return Err(Status::invalid_argument(format!(
                    "unknown action '{other}' (expected one of {})",
                    known.join(", ")
                )));
            }
        };
        let result = arrow_flight::Result {
            body: body.to_string().into(),
        };
        Ok(Response::new(Box::pin(stream::iter([Ok(result)]))))
    }
}
