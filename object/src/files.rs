//! One collection's files under an object-store prefix (`Store`), with the files it maps
//! cached on local disk: downloaded once (committed files never change), checked against the
//! manifest's size and checksum, mapped from the cache. A cached copy that fails its check is
//! removed and fetched again.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow_buffer::Buffer;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use omendb::backend::{
    manifest_name, manifest_version, unique, LocalStore, Stamp, Store, Written, STAGED_PREFIX,
};
use omendb::{Error, Result};

use crate::cache::Lru;
use crate::object_error;
use crate::runtime::wait;

/// The files of one collection: objects under `prefix`, mapped through `cache`.
#[derive(Debug)]
pub(crate) struct ObjectFiles {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The prefix as a URL, for messages.
    url: String,
    /// Where mapped files are cached (created when first needed).
    cache: LocalStore,
    cache_dir: PathBuf,
    /// The cache's size and order of use, shared by the database's collections.
    lru: Arc<Lru>,
    /// Cached files checked against their checksum by this process.
    checked: Mutex<HashSet<String>>,
    /// Whether listings come in key order: object stores (S3, GCS, Azure, memory) list keys
    /// sorted; `file://` lists a directory in no order.
    sorted: bool,
}

impl ObjectFiles {
    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        url: String,
        cache_dir: PathBuf,
        lru: Arc<Lru>,
    ) -> Self {
        ObjectFiles {
            store,
            prefix,
            cache: LocalStore::new(&cache_dir),
            cache_dir,
            lru,
            checked: Mutex::new(HashSet::new()),
            sorted: !url.starts_with("file:"),
            url,
        }
    }

    /// Where `name` is cached.
    fn cached(&self, name: &str) -> PathBuf {
        self.cache_dir.join(name)
    }

    fn location(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }

    fn what(&self, name: &str) -> String {
        format!("{}/{name}", self.url)
    }

    /// The cached files checked against their checksum by this process.
    fn checked(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.checked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A file the manifest names that the store does not hold.
    fn missing(&self, name: &str) -> Error {
        Error::Corrupt {
            path: PathBuf::from(self.what(name)),
            reason: "missing (the manifest names it)".into(),
        }
    }

    fn make_cache_dir(&self) -> Result<()> {
        std::fs::create_dir_all(&self.cache_dir).map_err(|e| Error::Io {
            path: self.cache_dir.clone(),
            source: e,
        })
    }

    fn upload(&self, name: &str, bytes: Vec<u8>, mode: PutMode) -> Result<bool> {
        let (store, at) = (self.store.clone(), self.location(name));
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match wait(async move { store.put_opts(&at, PutPayload::from(bytes), opts).await }) {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(object_error(&self.what(name), e)),
        }
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        let (store, at) = (self.store.clone(), self.location(name));
        wait(async move { store.get(&at).await?.bytes().await })
            .map(|b| b.to_vec())
            .map_err(|e| object_error(&self.what(name), e))
    }

    /// The objects directly under the prefix, with their size and modification time.
    fn objects(&self) -> Result<Vec<(String, Stamp)>> {
        let (store, prefix) = (self.store.clone(), self.prefix.clone());
        let listed = wait(async move { store.list_with_delimiter(Some(&prefix)).await })
            .map_err(|e| object_error(&self.url, e))?;
        Ok(listed
            .objects
            .into_iter()
            .filter_map(|o| {
                let stamp = Stamp {
                    bytes: o.size,
                    mtime_ns: o.last_modified.timestamp_nanos_opt().unwrap_or(0).max(0) as u64,
                };
                Some((o.location.filename()?.to_string(), stamp))
            })
            .collect())
    }

    /// Downloads `name` into the cache, checked against `bytes` and `crc32`.
    fn fetch(&self, name: &str, bytes: u64, crc32: Option<u32>) -> Result<()> {
        let data = self.get(name).map_err(|e| match e {
            Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                self.missing(name)
            }
            e => e,
        })?;
        let damaged = |reason: String| Error::Corrupt {
            path: PathBuf::from(self.what(name)),
            reason,
        };
        if data.len() as u64 != bytes {
            return Err(damaged(format!(
                "size is {} bytes, the manifest says {bytes} (truncated or overwritten)",
                data.len()
            )));
        }
        if let Some(expected) = crc32 {
            let crc = crc32fast::hash(&data);
            if crc != expected {
                return Err(damaged(format!(
                    "checksum mismatch (crc32 {crc:08x}, manifest says {expected:08x})"
                )));
            }
        }
        self.make_cache_dir()?;
        let staged = format!("{STAGED_PREFIX}{}", unique());
        self.cache.put(&staged, &data)?;
        self.cache.rename(&staged, name)?;
        self.lru.used(&self.cached(name), bytes);
        Ok(())
    }
}

impl Store for ObjectFiles {
    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(self.what(name))
    }

    fn write(
        &self,
        name: &str,
        fill: &mut dyn FnMut(&mut dyn Write) -> Result<()>,
    ) -> Result<Written> {
        // Written into the cache (where it is mapped from later), then uploaded whole.
        self.make_cache_dir()?;
        let written = self.cache.write(name, fill)?;
        let data = self.cache.read(name)?;
        self.upload(name, data, PutMode::Overwrite)?;
        self.checked().insert(name.to_string());
        self.lru.used(&self.cached(name), written.bytes);
        Ok(written)
    }

    fn map(&self, name: &str, bytes: u64, crc32: Option<u32>) -> Result<Buffer> {
        let cached = self.cache.stamp(name).is_ok_and(|s| s.bytes == bytes);
        let checked = self.checked().contains(name);
        if cached {
            match self.cache.map(name, bytes, crc32.filter(|_| !checked)) {
                Ok(buffer) => {
                    self.checked().insert(name.to_string());
                    self.lru.used(&self.cached(name), bytes);
                    return Ok(buffer);
                }
                // A damaged copy in the cache: fetched again below.
                Err(Error::Corrupt { .. }) => {
                    let _ = self.cache.delete(name);
                    self.lru.removed(&self.cached(name));
                }
                Err(e) => return Err(e),
            }
        }
        // A cache smaller than the files opened at once may evict this one between its
        // download and its mapping (another thread's download made room): fetched again.
        let mut tries = 0;
        loop {
            self.fetch(name, bytes, crc32)?;
            match self.cache.map(name, bytes, None) {
                Ok(buffer) => {
                    self.checked().insert(name.to_string());
                    return Ok(buffer);
                }
                Err(Error::Corrupt { .. }) if tries < 3 => tries += 1,
                Err(e) => return Err(e),
            }
        }
    }

    fn read(&self, name: &str) -> Result<Vec<u8>> {
        self.get(name)
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (store, a, b) = (self.store.clone(), self.location(from), self.location(to));
        wait(async move { store.rename(&a, &b).await })
            .map_err(|e| object_error(&self.what(to), e))?;
        if let Ok(stamp) = self.cache.stamp(from) {
            self.cache.rename(from, to)?;
            self.lru.removed(&self.cached(from));
            self.lru.used(&self.cached(to), stamp.bytes);
        }
        Ok(())
    }

    fn adopt(&self, from: &dyn Store, name: &str) -> Result<()> {
        let data = from.read(name)?;
        self.upload(name, data, PutMode::Overwrite)?;
        from.delete(name)
    }

    fn list(&self) -> Result<Vec<String>> {
        Ok(self.objects()?.into_iter().map(|(name, _)| name).collect())
    }

    fn list_stamped(&self) -> Result<Vec<(String, Stamp)>> {
        self.objects()
    }

    fn manifests(&self, after: Option<u64>) -> Result<Vec<String>> {
        // Listed from just after the last known version (names sort by version): the listing
        // holds the newer manifests, not every file the collection ever had.
        let start = match after {
            Some(v) => manifest_name(v),
            None => "manifest-".to_string(),
        };
        let (store, prefix, sorted) = (self.store.clone(), self.prefix.clone(), self.sorted);
        let offset = prefix.clone().join(start.as_str());
        let names = wait(async move {
            store
                .list_with_offset(Some(&prefix), &offset)
                .map_ok(|o| o.location.filename().unwrap_or_default().to_string())
                // In key order the manifests come first: stop at the first other name.
                .try_take_while(|n| {
                    futures::future::ready(Ok(!sorted || n.starts_with("manifest-")))
                })
                .try_collect::<Vec<String>>()
                .await
        })
        .map_err(|e| object_error(&self.url, e))?;
        Ok(names
            .into_iter()
            .filter(|n| manifest_version(n).is_some_and(|v| after.is_none_or(|a| v > a)))
            .collect())
    }

    fn delete(&self, name: &str) -> Result<()> {
        let _ = self.cache.delete(name);
        self.lru.removed(&self.cached(name));
        let (store, at) = (self.store.clone(), self.location(name));
        wait(async move { store.delete(&at).await }).map_err(|e| object_error(&self.what(name), e))
    }

    fn sync(&self) -> Result<()> {
        Ok(()) // a put is durable once acknowledged
    }

    fn shared(&self) -> bool {
        true
    }

    fn create(&self, name: &str, bytes: &[u8]) -> Result<Option<Written>> {
        let written = Written {
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(bytes),
        };
        Ok(self
            .upload(name, bytes.to_vec(), PutMode::Create)?
            .then_some(written))
    }

    fn stamp(&self, name: &str) -> Result<Stamp> {
        let (store, at) = (self.store.clone(), self.location(name));
        let meta = wait(async move { store.head(&at).await }).map_err(|e| match e {
            object_store::Error::NotFound { .. } => self.missing(name),
            e => object_error(&self.what(name), e),
        })?;
        // No modification time is recorded: mapping checks the checksum on download.
        Ok(Stamp {
            bytes: meta.size,
            mtime_ns: 0,
        })
    }

    fn export(&self, name: &str, to: &dyn Store) -> Result<bool> {
        let data = self.get(name)?;
        to.put(name, &data)?;
        Ok(false)
    }
}

/// Every object under `prefix` (any depth).
pub(crate) fn list_all(
    store: &Arc<dyn ObjectStore>,
    prefix: &Path,
    what: &str,
) -> Result<Vec<Path>> {
    let (store, prefix) = (store.clone(), prefix.clone());
    wait(async move {
        store
            .list(Some(&prefix))
            .map_ok(|o| o.location)
            .try_collect::<Vec<Path>>()
            .await
    })
    .map_err(|e| object_error(what, e))
}
