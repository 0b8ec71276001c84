//! OmenDB on object storage: a database under a URL prefix (`s3://`, `gs://`, `az://`,
//! `file:///...`, `memory://`; see `client` for how a URL's client is configured), through the engine's storage traits
//! ([`omendb::backend`]). The engine stays synchronous and free of tokio: this crate owns a
//! small runtime for the async client and waits on it.
//!
//! Layout under the prefix: one prefix per collection holding the same files as a local
//! collection directory, committed by create-only manifests (`Store::create` is a put with
//! `PutMode::Create`), plus the database's documents. Files a collection maps (segments,
//! indexes, keys) are downloaded once into a local cache directory, checked against the
//! manifest's checksum, and mapped from there; a damaged or truncated copy is fetched again.

mod cache;
mod client;
mod files;
mod root;
mod runtime;

use std::path::PathBuf;
use std::sync::Arc;

use object_store::path::Path;
use object_store::ObjectStore;
use omendb::{Database, Error, Result};

pub use cache::{parse_size, Cache};
pub use root::ObjectRoot;

/// Whether `location` names object storage (a URL with a scheme) rather than a local path.
pub fn is_url(location: &str) -> bool {
    location.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

/// Opens the database at `location`: a local directory, or object storage when `location` is a
/// URL, with `options` for its client (the `object_store` builders' keys) and files cached in
/// `cache`.
pub fn open(location: &str, options: &[(String, String)], cache: &Cache) -> Result<Database> {
    if !is_url(location) {
        check_local(location, options)?;
        return Database::open(location);
    }
    let root = ObjectRoot::open(location, options, cache)?;
    Ok(Database::on_root(Box::new(root)))
}

/// Opens the existing database at `location`: a directory that must exist (see
/// [`Database::open_existing`]), or object storage at a URL that must be reachable.
pub fn open_existing(
    location: &str,
    options: &[(String, String)],
    cache: &Cache,
) -> Result<Database> {
    if !is_url(location) {
        check_local(location, options)?;
        return Database::open_existing(location);
    }
    open(location, options, cache)
}

/// Parses a client option given as `key=value` (as `--storage-option` and the C ABI take
/// them).
pub fn parse_option(text: &str) -> std::result::Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected key=value, got '{text}'")),
    }
}

/// Refuses client options for a local directory: they would be ignored.
fn check_local(location: &str, options: &[(String, String)]) -> Result<()> {
    if options.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidInput(format!(
        "storage options are for object storage; '{location}' is a local directory"
    )))
}

/// The database under `prefix` of `store` (already built: tests share one in-memory store
/// between handles this way); `url` names it in messages.
pub fn open_store(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
    url: &str,
    cache: &Cache,
) -> Result<Database> {
    let root = ObjectRoot::new(store, Path::from(prefix), url, cache)?;
    Ok(Database::on_root(Box::new(root)))
}

/// An object store failure on `what`, as the engine's error: an endpoint that could not be
/// reached (after the client's retries) is `Unavailable`; a missing object keeps the not-found
/// kind of an I/O error, so callers can tell.
fn object_error(what: &str, e: object_store::Error) -> Error {
    if unreachable(&e) {
        return Error::Unavailable(format!("{what}: {e}"));
    }
    let kind = match e {
        object_store::Error::NotFound { .. } => std::io::ErrorKind::NotFound,
        _ => std::io::ErrorKind::Other,
    };
    Error::Io {
        path: PathBuf::from(what),
        source: std::io::Error::new(kind, e.to_string()),
    }
}

/// Whether `e` says the endpoint did not answer: a connection, request or timeout failure of
/// the HTTP client, as opposed to an answer that refused the request.
fn unreachable(e: &object_store::Error) -> bool {
    use object_store::client::{HttpError, HttpErrorKind as K};
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(http) = s.downcast_ref::<HttpError>() {
            return matches!(
                http.kind(),
                K::Connect | K::Request | K::Timeout | K::Interrupted
            );
        }
        source = s.source();
    }
    false
}
