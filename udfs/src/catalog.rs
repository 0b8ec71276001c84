//! Collections as DataFusion tables.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, Session, TableProvider};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;
use omendb::{Collection, Database};

use crate::{engine_error, memory_scan};

/// The default schema of an OmenDB session: every collection of the database, plus whatever
/// other tables (Parquet, CSV, memory) the session registers beside them.
pub struct OmenSchema {
    db: Arc<Database>,
    others: MemorySchemaProvider,
}

impl fmt::Debug for OmenSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OmenSchema")
            .field("db", &self.db.path())
            .finish()
    }
}

impl OmenSchema {
    pub fn new(db: Arc<Database>) -> Self {
        OmenSchema {
            db,
            others: MemorySchemaProvider::new(),
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
        if self.db.exists(&name) {
            return Err(DataFusionError::Plan(format!(
                "'{name}' is a collection; choose another table name"
            )));
        }
        self.others.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.others.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.others.table_exist(name) || self.db.exists(name)
    }
}

/// One collection as a table: a scan reads the live rows of the snapshot current at planning
/// time, straight from the mapped segments.
#[derive(Debug)]
pub struct CollectionTable {
    collection: Arc<Collection>,
}

impl CollectionTable {
    pub fn new(collection: Arc<Collection>) -> Self {
        CollectionTable { collection }
    }

    /// The collection read.
    pub fn collection(&self) -> &Arc<Collection> {
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
