//! Collections as DataFusion tables.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session, TableProvider};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use omendb::{Collection, Database};

use crate::dml::CollectionSink;
use crate::{engine_error, memory_scan};

/// The default schema of an OmenDB session: every collection of the database, plus whatever
/// other tables (Parquet, CSV, memory) the session registered before (a host's own session)
/// or registers beside them.
pub(crate) struct OmenSchema {
    db: Arc<Database>,
    others: Arc<dyn SchemaProvider>,
}

impl fmt::Debug for OmenSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OmenSchema")
            .field("db", &self.db.path())
            .finish()
    }
}

impl OmenSchema {
    /// The collections of `db` beside the tables of `others` (a session's schema before).
    pub(crate) fn new(db: Arc<Database>, others: Option<Arc<dyn SchemaProvider>>) -> Self {
        OmenSchema {
            db,
            others: others.unwrap_or_else(|| Arc::new(MemorySchemaProvider::new())),
        }
    }
}

#[async_trait]
impl SchemaProvider for OmenSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.db.list_collections().unwrap_or_default();
        names.extend(self.others.table_names());
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self.others.table(name).await? {
            return Ok(Some(t));
        }
        if !self.db.exists(name) {
            return Ok(None);
        }
        // Opening a collection reads files: not on the async workers.
        let (db, name) = (self.db.clone(), name.to_string());
        let c = tokio::task::spawn_blocking(move || db.collection(&name))
            .await
            .map_err(|e| DataFusionError::Execution(format!("opening a collection: {e}")))?
            .map_err(engine_error)?;
        Ok(Some(Arc::new(CollectionTable::new(c))))
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = table.downcast_ref::<CollectionTable>() {
            if t.collection().name() == name {
                return Ok(None); // created by CREATE EXTERNAL TABLE ... STORED AS OMENDB
            }
        }
        if self.db.exists(&name) {
            return Err(DataFusionError::Plan(format!(
                "'{name}' is a collection; choose another table name"
            )));
        }
        self.others.register_table(name, table)
    }

    /// `DROP TABLE` of a collection drops it and its files.
    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.others.table_exist(name) || !self.db.exists(name) {
            return self.others.deregister_table(name);
        }
        let c = self.db.collection(name).map_err(engine_error)?;
        self.db.drop_collection(name).map_err(engine_error)?;
        Ok(Some(Arc::new(CollectionTable::new(c))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.others.table_exist(name) || self.db.exists(name)
    }
}

/// One collection as a table: a scan reads the live rows of the snapshot current at planning
/// time, straight from the mapped segments.
#[derive(Debug)]
pub(crate) struct CollectionTable {
    collection: Arc<Collection>,
}

impl CollectionTable {
    pub(crate) fn new(collection: Arc<Collection>) -> Self {
        CollectionTable { collection }
    }

    /// The collection read.
    pub(crate) fn collection(&self) -> &Arc<Collection> {
        &self.collection
    }
}

#[async_trait]
impl TableProvider for CollectionTable {
    fn schema(&self) -> SchemaRef {
        self.collection.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if op != InsertOp::Append {
            return Err(DataFusionError::Plan(format!(
                "collection '{}': only INSERT INTO (append) is supported, not {op}",
                self.collection.name()
            )));
        }
        let sink = CollectionSink::new(self.collection.clone());
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.delete_plan(state, filters)
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.update_plan(state, assignments, filters)
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batches = self.collection.snapshot().batches().map_err(engine_error)?;
        // One partition per segment, so segments are scanned in parallel.
        memory_scan(
            batches.into_iter().map(|b| vec![b]).collect(),
            self.schema(),
            projection,
        )
    }
}
