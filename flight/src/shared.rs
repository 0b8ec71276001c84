//! External tables an admin declares once for every session. A `CREATE EXTERNAL TABLE` of
//! files (not `STORED AS OMENDB`, which makes a collection) is kept in the database's catalog
//! document, registered in every live session and every later one, and declared again when
//! the server starts; `DROP TABLE` of it removes it everywhere. Views and memory tables stay
//! private to their session.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use datafusion::catalog::TableProvider;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use omendb::Database;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::error::Error;

/// The catalog document's shape.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Catalog {
    #[serde(default)]
    external_tables: Vec<Declared>,
}

/// One declared table: its name and the statement that declares it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Declared {
    name: String,
    sql: String,
}

/// Each shared table by name: the statement that declares it and the table.
type Tables = BTreeMap<String, (String, Arc<dyn TableProvider>)>;

/// The tables every session gets.
pub(crate) struct SharedTables {
    db: Arc<Database>,
    tables: Mutex<Tables>,
}

impl std::fmt::Debug for SharedTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTables")
            .field("tables", &self.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The name a shared table is kept under, if `plan` declares one.
fn declared(plan: &LogicalPlan) -> Option<String> {
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateExternalTable(t))
            if !t.file_type.eq_ignore_ascii_case("omendb") =>
        {
            Some(t.name.table().to_string())
        }
        _ => None,
    }
}

impl SharedTables {
    /// The tables of `db`'s catalog, each declared again in a session `fresh` makes; a table
    /// whose files are gone is reported on standard error and left out until it is declared
    /// again (it stays in the catalog).
    pub(crate) async fn load(
        db: Arc<Database>,
        fresh: impl Fn() -> datafusion::error::Result<SessionContext>,
    ) -> Result<SharedTables, String> {
        let shared = SharedTables {
            tables: Mutex::new(BTreeMap::new()),
            db,
        };
        let catalog = shared
            .read()
            .map_err(|e| Status::from(e).message().to_string())?;
        for t in catalog.external_tables {
            let ctx = fresh().map_err(|e| e.to_string())?;
            let provider = async {
                let plan = omendb_datafusion::sql::logical_plan(&ctx.state(), &t.sql).await?;
                ctx.execute_logical_plan(plan).await?.collect().await?;
                ctx.table_provider(t.name.as_str()).await
            };
            match provider.await {
                Ok(p) => {
                    shared.lock().insert(t.name, (t.sql, p));
                }
                Err(e) => eprintln!(
                    "omendb: the shared table '{}' could not be declared again: {e}",
                    t.name
                ),
            }
        }
        Ok(shared)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> Result<Catalog, Error> {
        match self.db.catalog()? {
            None => Ok(Catalog::default()),
            Some(text) => serde_json::from_str(&text).map_err(|e| {
                Status::internal(format!("the database's catalog.json does not parse: {e}")).into()
            }),
        }
    }

    /// Writes the catalog with `name` declared by `sql`, or without it (`None`).
    fn write(&self, name: &str, sql: Option<&str>) -> Result<(), Error> {
        let mut catalog = self.read()?;
        catalog.external_tables.retain(|t| t.name != name);
        if let Some(sql) = sql {
            catalog.external_tables.push(Declared {
                name: name.to_string(),
                sql: sql.to_string(),
            });
        }
        let text = serde_json::to_string_pretty(&catalog)
            .map_err(|e| Status::internal(format!("catalog: {e}")))?;
        Ok(self.db.set_catalog(&text)?)
    }

    /// Registers every shared table in a new session.
    pub(crate) fn register_in(&self, ctx: &SessionContext) {
        for (name, (_, provider)) in self.lock().iter() {
            let _ = ctx.register_table(name.as_str(), provider.clone());
        }
    }

    /// After `plan` (the statement `sql`) ran in `ctx`: a declared external table is kept for
    /// every session (registered in `others`), and a dropped shared table is dropped from them.
    pub(crate) async fn after(
        &self,
        plan: &LogicalPlan,
        sql: &str,
        ctx: &SessionContext,
        others: Vec<Arc<SessionContext>>,
    ) -> Result<(), Error> {
        if let Some(name) = declared(plan) {
            let provider = ctx.table_provider(name.as_str()).await?;
            // The catalog is read, changed and written under the lock: declarations in two
            // sessions at once both stay.
            let mut tables = self.lock();
            self.write(&name, Some(sql))?;
            for other in &others {
                let _ = other.deregister_table(name.as_str());
                let _ = other.register_table(name.as_str(), provider.clone());
            }
            tables.insert(name, (sql.to_string(), provider));
        } else if let LogicalPlan::Ddl(DdlStatement::DropTable(d)) = plan {
            let name = d.name.table().to_string();
            let mut tables = self.lock();
            if tables.remove(&name).is_some() {
                self.write(&name, None)?;
                for other in &others {
                    let _ = other.deregister_table(name.as_str());
                }
            }
        }
        Ok(())
    }
}
