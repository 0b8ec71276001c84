//! A database under an object-store prefix (`Root`): a prefix per collection, the database's
//! documents beside them. There is no lock: several servers may open one bucket, and their
//! commits meet in the create-only manifests.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use omendb::backend::{is_collection_file, is_manifest, unique, Root, Store};
use omendb::{Error, Result};

use crate::cache::{Cache, Lru};
use crate::files::{list_all, ObjectFiles};
use crate::object_error;
use crate::runtime::wait;

/// A collection being created lives under this prefix until it is published.
const CREATING: &str = ".creating-";

/// A database under `prefix` of an object store.
#[derive(Debug)]
pub struct ObjectRoot {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The database's URL, for messages.
    url: PathBuf,
    cache_dir: PathBuf,
    lru: Arc<Lru>,
}

impl ObjectRoot {
    /// The database at `url` (`memory://`, `file:///dir`, or a cloud URL whose scheme the
    /// client was built with), its client configured with `options`, its files cached in
    /// `cache` (default directory: under `omendb-cache` in the system temp dir).
    pub fn open(url: &str, options: &[(String, String)], cache: &Cache) -> Result<ObjectRoot> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::InvalidInput(format!("bad storage URL '{url}': {e}")))?;
        let (store, prefix) = crate::client::build(&parsed, options)
            .map_err(|e| Error::InvalidInput(format!("cannot open storage at '{url}': {e}")))?;
        ObjectRoot::new(Arc::from(store), prefix, url, cache)
    }

    /// The database under `prefix` of `store`; `url` names it in messages.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        url: &str,
        cache: &Cache,
    ) -> Result<ObjectRoot> {
        let cache_dir = cache.dir.clone().unwrap_or_else(|| default_cache(url));
        let root = ObjectRoot {
            store,
            prefix,
            url: PathBuf::from(url.trim_end_matches('/')),
            lru: Arc::new(Lru::new(&cache_dir, cache.max_bytes)),
            cache_dir,
        };
        // Reachable, and the prefix readable: a bad bucket or endpoint fails here, named.
        root.list()?;
        root.check_create_only()?;
        Ok(root)
    }

    /// Refuses storage that does not honour create-only puts (`PutMode::Create`): commits
    /// rest on them (of two writers of one manifest version, the second must fail), and some
    /// S3-compatible services ignore the condition and overwrite. A scratch object is created
    /// twice; the second put must be refused.
    fn check_create_only(&self) -> Result<()> {
        let at = self.at(&format!(".omendb-create-check-{}", unique()));
        let create = |store: Arc<dyn ObjectStore>, at: Path| async move {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            store
                .put_opts(&at, PutPayload::from_static(b"x"), opts)
                .await
        };
        let (store, check) = (self.store.clone(), at.clone());
        // The second put's outcome, once the first has succeeded.
        let outcome = wait(async move {
            create(store.clone(), check.clone()).await?;
            Ok::<_, object_store::Error>(create(store, check).await)
        });
        let store = self.store.clone();
        let _ = wait(async move { store.delete(&at).await });
        let refuse = |why: &str| {
            Err(Error::InvalidInput(format!(
                "storage at '{}' {why}; OmenDB commits by create-only puts and will not write \
                 where a commit could overwrite another writer's (use a store that supports \
                 conditional writes, e.g. S3, GCS, Azure, or a compatible server that honours \
                 If-None-Match: *)",
                self.url.display()
            )))
        };
        match outcome {
            Ok(Err(object_store::Error::AlreadyExists { .. })) => Ok(()),
            Ok(Ok(_)) => refuse(
                "does not honour create-only puts (a second create of one object overwrote it)",
            ),
            Err(object_store::Error::NotImplemented { .. })
            | Ok(Err(object_store::Error::NotImplemented { .. })) => {
                refuse("does not support create-only puts")
            }
            Err(e) | Ok(Err(e)) => Err(object_error(&self.what(".omendb-create-check"), e)),
        }
    }

    fn at(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }

    fn what(&self, name: &str) -> String {
        format!("{}/{name}", self.url.display())
    }

    fn files_of(&self, name: &str) -> Result<Vec<String>> {
        self.store(name).list()
    }

    fn delete_all(&self, name: &str) -> Result<()> {
        for object in list_all(&self.store, &self.at(name), &self.what(name))? {
            let store = self.store.clone();
            wait(async move { store.delete(&object).await })
                .map_err(|e| object_error(&self.what(name), e))?;
        }
        let _ = std::fs::remove_dir_all(self.cache_dir.join(name));
        Ok(())
    }
}

/// The cache of the database at `url` when none is given: one directory per URL.
fn default_cache(url: &str) -> PathBuf {
    let key = crc32fast::hash(url.as_bytes());
    std::env::temp_dir()
        .join("omendb-cache")
        .join(format!("{key:08x}"))
}

impl Root for ObjectRoot {
    fn path(&self) -> &FsPath {
        &self.url
    }

    fn store(&self, name: &str) -> Arc<dyn Store> {
        Arc::new(ObjectFiles::new(
            self.store.clone(),
            self.at(name),
            self.what(name),
            self.cache_dir.join(name),
            self.lru.clone(),
        ))
    }

    fn has_manifest(&self, name: &str) -> bool {
        self.store(name)
            .manifests(None)
            .is_ok_and(|names| !names.is_empty())
    }

    fn data_files(&self, name: &str) -> usize {
        self.files_of(name).map_or(0, |files| {
            files.iter().filter(|f| is_collection_file(f)).count()
        })
    }

    fn list(&self) -> Result<Vec<String>> {
        let (store, prefix) = (self.store.clone(), self.prefix.clone());
        let listed = wait(async move { store.list_with_delimiter(Some(&prefix)).await })
            .map_err(|e| object_error(&self.url.display().to_string(), e))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect())
    }

    fn stage(&self, name: &str) -> Result<(String, Arc<dyn Store>)> {
        let key = format!("{CREATING}{name}-{}", unique());
        Ok((key.clone(), self.store(&key)))
    }

    fn publish(&self, staged: &str, name: &str) -> Result<()> {
        let exists = || Error::AlreadyExists(format!("collection '{name}'"));
        if self.has_manifest(name) || self.data_files(name) > 0 {
            return Err(exists());
        }
        // Data files first, each create-only; the manifest last, create-only too: of two
        // creators of one name, the one whose manifest lands first has made the collection.
        let from = self.store(staged);
        let to = self.store(name);
        let mut files = from.list()?;
        files.sort_by_key(|f| is_manifest(f));
        for file in &files {
            let bytes = from.read(file)?;
            if to.create(file, &bytes)?.is_none() {
                return Err(exists());
            }
        }
        self.discard(staged);
        Ok(())
    }

    fn discard(&self, staged: &str) {
        let _ = self.delete_all(staged);
    }

    fn remove(&self, name: &str) -> Result<()> {
        // The manifests first: from then on no one opens the collection.
        let store = self.store(name);
        for file in store.list()?.iter().filter(|f| is_manifest(f)) {
            store.delete(file)?;
        }
        self.delete_all(name)
    }

    fn read_doc(&self, name: &str) -> Result<Option<String>> {
        let (store, at) = (self.store.clone(), self.at(name));
        match wait(async move { store.get(&at).await?.bytes().await }) {
            Ok(bytes) => String::from_utf8(bytes.to_vec())
                .map(Some)
                .map_err(|_| Error::Corrupt {
                    path: PathBuf::from(self.what(name)),
                    reason: "not UTF-8 text".into(),
                }),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(object_error(&self.what(name), e)),
        }
    }

    fn shared(&self) -> bool {
        true
    }

    fn write_doc(&self, name: &str, text: &str) -> Result<()> {
        let (store, at) = (self.store.clone(), self.at(name));
        let payload = PutPayload::from(text.as_bytes().to_vec());
        wait(async move { store.put(&at, payload).await })
            .map(|_| ())
            .map_err(|e| object_error(&self.what(name), e))
    }
}
