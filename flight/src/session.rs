//! One SQL session per client over the shared catalog of collections, and the checks every
//! statement passes before it runs: the role it needs and the files it may touch.
//!
//! A client is known by the session id the server hands out in the `x-omendb-session` response
//! header (sent back, it selects the session), or else by its connection: a gRPC client that
//! keeps its connection keeps its session. Views and memory tables a session registers are
//! visible to it alone; the collections, and the external tables an admin declares (see
//! `shared`), are everyone's. Sessions unused for the configured idle time are forgotten.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement, WriteOp};
use datafusion::prelude::SessionContext;
use omendb::Database;
use tonic::Status;

use crate::auth::{require, Role};
use crate::error::Error;
use crate::shared::SharedTables;

/// The response header naming the caller's session.
pub(crate) const SESSION_HEADER: &str = "x-omendb-session";

struct Entry {
    session: Arc<Session>,
    used: Instant,
}

/// The most statements a session keeps planned; past it the oldest plans are forgotten (a
/// handle naming one is planned again from its SQL text).
const MAX_STATEMENTS: usize = 256;

/// One client's SQL session: its context and the statements it has planned.
pub(crate) struct Session {
    /// The id the client is told in the session header.
    pub id: String,
    /// Its SQL context: the collections, and the tables it registered.
    pub ctx: Arc<SessionContext>,
    statements: Mutex<HashMap<String, Arc<omendb_datafusion::Prepared>>>,
}

impl Session {
    /// The statement `sql` planned in this session, planned now if it has not been.
    pub(crate) async fn statement(
        &self,
        sql: &str,
    ) -> Result<Arc<omendb_datafusion::Prepared>, Error> {
        if let Some(p) = self.lock_statements().get(sql) {
            return Ok(p.clone());
        }
        let prepared = Arc::new(omendb_datafusion::Prepared::new(&self.ctx, sql).await?);
        if !prepared.keeps_for_its_text() {
            return Ok(prepared);
        }
        let mut statements = self.lock_statements();
        if statements.len() >= MAX_STATEMENTS {
            statements.clear();
        }
        statements.insert(sql.to_string(), prepared.clone());
        Ok(prepared)
    }

    /// Forgets the plan of `sql` (the client closed its prepared statement).
    pub(crate) fn forget(&self, sql: &str) {
        self.lock_statements().remove(sql);
    }

    fn lock_statements(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Arc<omendb_datafusion::Prepared>>> {
        self.statements.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The live sessions of a server.
pub(crate) struct Sessions {
    shared: Arc<SharedTables>,
    files: omendb_datafusion::FileGuard,
    db: Arc<Database>,
    runtime: Arc<RuntimeEnv>,
    limits: omendb_datafusion::KnnLimits,
    idle: Duration,
    map: Mutex<HashMap<String, Entry>>,
    ids: std::collections::hash_map::RandomState,
    counter: std::sync::atomic::AtomicU64,
}

impl Sessions {
    pub(crate) fn new(
        db: Arc<Database>,
        runtime: Arc<RuntimeEnv>,
        limits: omendb_datafusion::KnnLimits,
        idle: Duration,
        shared: Arc<SharedTables>,
        files: omendb_datafusion::FileGuard,
    ) -> Sessions {
        Sessions {
            shared,
            files,
            db,
            runtime,
            limits,
            idle,
            map: Mutex::new(HashMap::new()),
            ids: Default::default(),
            counter: Default::default(),
        }
    }

    /// The session named by `asked` (a session id the client sent back) or, failing that, the
    /// one of connection `peer`; a new one when neither is known. Returns its id too.
    pub(crate) fn get(
        &self,
        asked: Option<&str>,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<Arc<Session>, Error> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, e| now.duration_since(e.used) < self.idle);
        let by_peer = peer.map(|p| format!("conn-{p}"));
        for key in asked.into_iter().chain(by_peer.as_deref()) {
            if let Some(e) = map.get_mut(key) {
                e.used = now;
                return Ok(e.session.clone());
            }
        }
        let id = match by_peer {
            Some(key) if asked.is_none() => key,
            _ => self.fresh_id(),
        };
        let ctx = omendb_datafusion::session_in(
            self.db.clone(),
            self.runtime.clone(),
            self.limits,
            self.files.clone(),
        )?;
        self.shared.register_in(&ctx);
        let session = Arc::new(Session {
            id: id.clone(),
            ctx: Arc::new(ctx),
            statements: Mutex::new(HashMap::new()),
        });
        map.insert(
            id,
            Entry {
                session: session.clone(),
                used: now,
            },
        );
        Ok(session)
    }

    /// After `plan` (the statement `sql`) ran in `ctx`: shares a declared external table with
    /// every session, or drops a shared one from every session.
    pub(crate) async fn ran(
        &self,
        plan: &LogicalPlan,
        sql: &str,
        ctx: &SessionContext,
    ) -> Result<(), Status> {
        if !matches!(plan, LogicalPlan::Ddl(_)) {
            return Ok(());
        }
        let others: Vec<Arc<SessionContext>> = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| e.session.ctx.clone())
            .collect();
        Ok(self.shared.after(plan, sql, ctx, others).await?)
    }

    fn fresh_id(&self) -> String {
        let n = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!(
            "s{:016x}{:016x}",
            self.ids.hash_one((n, 1u8)),
            self.ids.hash_one((n, 2u8))
        )
    }
}

/// Which files SQL may read or write: only under the operator's directories, never inside the
/// database itself.
#[derive(Debug, Clone)]
pub(crate) struct FilePolicy {
    allowed: Vec<PathBuf>,
    /// The database's local directory (`None`: it is on remote object storage).
    database: Option<PathBuf>,
}

/// The local directory of a database at `location` (a path, or a `file://` URL), resolved;
/// `None` for remote object storage.
fn local_dir(location: &Path) -> std::io::Result<Option<PathBuf>> {
    let text = location.to_string_lossy();
    match text.split_once("://") {
        None => location.canonicalize().map(Some),
        Some(("file", path)) => Path::new(path).canonicalize().map(Some),
        Some(_) => Ok(None),
    }
}

impl FilePolicy {
    pub(crate) fn new(allowed: &[PathBuf], database: &Path) -> std::io::Result<FilePolicy> {
        let allowed = allowed
            .iter()
            .map(|d| {
                d.canonicalize().map_err(|e| {
                    std::io::Error::new(e.kind(), format!("--external-dir {}: {e}", d.display()))
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(FilePolicy {
            allowed,
            database: local_dir(database)?,
        })
    }

    /// Refuses `location` (a path or `file://` URL, perhaps with a glob) unless it lies under
    /// an allowed directory and outside the database.
    pub(crate) fn check(&self, what: &str, location: &str) -> Result<(), Status> {
        let refuse = |why: String| {
            Err(Status::permission_denied(format!(
                "{what} '{location}' is refused: {why}"
            )))
        };
        let path = location.strip_prefix("file://").unwrap_or(location);
        if path.contains("://") {
            return refuse(
                "only files on the server's disk, under --external-dir, are allowed".into(),
            );
        }
        // The directory part before any glob character.
        let plain = path.find(['*', '?', '[']).map_or(path, |i| &path[..i]);
        let path = Path::new(plain);
        if !path.is_absolute() {
            return refuse("give an absolute path".into());
        }
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return refuse("'..' is not allowed in paths".into());
        }
        // Resolve symbolic links through the part of the path that exists.
        let mut existing = path;
        let mut rest = Vec::new();
        let resolved = loop {
            if let Ok(p) = existing.canonicalize() {
                break rest.iter().rev().fold(p, |p: PathBuf, c| p.join(c));
            }
            match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    existing = parent;
                }
                _ => return refuse("the path cannot be resolved".into()),
            }
        };
        if self
            .database
            .as_ref()
            .is_some_and(|d| resolved.starts_with(d))
        {
            return refuse("it lies inside the database directory".into());
        }
        if self.allowed.iter().any(|d| resolved.starts_with(d)) {
            return Ok(());
        }
        if self.allowed.is_empty() {
            refuse(
                "this server allows no file access from SQL (start it with --external-dir DIR)"
                    .into(),
            )
        } else {
            refuse(format!(
                "it is outside the directories this server allows (--external-dir: {})",
                self.allowed
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    /// Checks a planned statement before it runs: the role each part needs, and every file
    /// it names.
    pub(crate) fn check_plan(&self, plan: &LogicalPlan, role: Role) -> Result<(), Status> {
        let mut outcome = Ok(());
        let _ = plan.apply_with_subqueries(|node| {
            outcome = self.check_node(node, role);
            Ok(if outcome.is_ok() {
                TreeNodeRecursion::Continue
            } else {
                TreeNodeRecursion::Stop
            })
        });
        outcome
    }

    fn check_node(&self, node: &LogicalPlan, role: Role) -> Result<(), Status> {
        match node {
            LogicalPlan::Ddl(ddl) => {
                require(role, Role::Admin, &format!("{} (DDL)", ddl.name()))?;
                if let DdlStatement::CreateExternalTable(t) = ddl {
                    // STORED AS OMENDB: the location is a collection's name, not a file.
                    let collection = t.file_type.eq_ignore_ascii_case("omendb");
                    for location in t.locations.iter().filter(|_| !collection) {
                        self.check("CREATE EXTERNAL TABLE location", location)?;
                    }
                }
                Ok(())
            }
            LogicalPlan::Copy(copy) => {
                require(role, Role::Admin, "COPY")?;
                self.check("COPY target", &copy.output_url)
            }
            LogicalPlan::Dml(dml) => match dml.op {
                WriteOp::Ctas => require(role, Role::Admin, "CREATE TABLE AS"),
                _ => require(role, Role::Write, &format!("{}", dml.op)),
            },
            LogicalPlan::Statement(Statement::SetVariable(v))
                if v.variable
                    .to_ascii_lowercase()
                    .starts_with("datafusion.runtime") =>
            {
                require(role, Role::Admin, "SET datafusion.runtime.*")
            }
            LogicalPlan::Statement(Statement::ResetVariable(_)) => {
                require(role, Role::Admin, "RESET")
            }
            _ => Ok(()),
        }
    }
}
