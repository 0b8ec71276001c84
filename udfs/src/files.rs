//! Files as tables without registering them: `FROM '/data/clicks.parquet'` and
//! `read_parquet('/data/clicks.parquet')` (also `read_csv`, `read_json`, `read_arrow`) read a
//! file, a directory or a glob with the format its extension names. Only absolute paths and
//! `file://` URLs are taken for files (any other unknown name stays "table not found"), and a
//! guard may refuse a path before anything is read: the server confines them to its
//! `--external-dir`s.

use std::fmt;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use datafusion::catalog::{DynamicFileCatalog, TableProvider, UrlTableFactory};
use datafusion::datasource::listing::{
    ListingTable, ListingTableConfig, ListingTableConfigExt, ListingTableUrl,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::prelude::SessionContext;

/// Decides whether SQL may read a file: `Ok`, or why not.
pub type FileGuard = Arc<dyn Fn(&str) -> std::result::Result<(), String> + Send + Sync>;

/// The functions that read a file as a table, and the extensions each takes.
pub(crate) const READERS: [(&str, &[&str]); 4] = [
    ("read_parquet", &["parquet"]),
    ("read_csv", &["csv"]),
    ("read_json", &["json"]),
    ("read_arrow", &["arrow"]),
];

type StateOf = Box<dyn Fn() -> Option<SessionState> + Send + Sync>;

/// Makes a listing table of a path SQL names as a table.
struct FileTables {
    guard: Option<FileGuard>,
    /// The session's state, once the session exists.
    state: OnceLock<StateOf>,
}

impl fmt::Debug for FileTables {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileTables")
            .field("guarded", &self.guard.is_some())
            .finish()
    }
}

#[async_trait]
impl UrlTableFactory for FileTables {
    async fn try_new(&self, url: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if !(url.starts_with('/') || url.starts_with("file://")) {
            return Ok(None);
        }
        if let Some(guard) = &self.guard {
            guard(url).map_err(DataFusionError::Plan)?;
        }
        let Ok(table_url) = ListingTableUrl::parse(url) else {
            return Ok(None);
        };
        let state = self
            .state
            .get()
            .and_then(|state| state())
            .ok_or_else(|| DataFusionError::Internal("the session is gone".into()))?;
        let Ok(config) = ListingTableConfig::new(table_url)
            .infer_options(&state)
            .await
        else {
            return Ok(None); // no such file, or no format its extension names
        };
        let config = config
            .infer_partitions_from_path(&state)
            .await?
            .infer_schema(&state)
            .await?;
        Ok(Some(Arc::new(ListingTable::try_new(config)?)))
    }
}

/// `ctx` with files readable as tables, each path passed by `guard` first when there is one.
pub(crate) fn with_file_tables(ctx: SessionContext, guard: Option<FileGuard>) -> SessionContext {
    let factory = Arc::new(FileTables {
        guard,
        state: OnceLock::new(),
    });
    let catalogs = Arc::new(DynamicFileCatalog::new(
        ctx.state().catalog_list().clone(),
        factory.clone() as Arc<dyn UrlTableFactory>,
    ));
    let id = ctx.session_id();
    let ctx: SessionContext = ctx
        .into_state_builder()
        .with_session_id(id)
        .with_catalog_list(catalogs)
        .build()
        .into();
    let weak = ctx.state_weak_ref();
    let _ = factory
        .state
        .set(Box::new(move || weak.upgrade().map(|s| s.read().clone())));
    ctx
}
