//! The object store client for a URL: the scheme's builder configured from the standard
//! environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as the builders' `from_env` reads
//! them), then from the caller's options, which win. An option no builder knows is refused
//! (a misspelt key must not be silently ignored). Requests time out and retry with backoff,
//! so an unreachable endpoint is an error within seconds, not a hang.

use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreScheme, RetryConfig};
use url::Url;

/// Client settings unless the environment or the options say otherwise: a request that gets
/// no answer fails, and is retried, rather than waiting for ever.
const DEFAULTS: [(&str, &str); 2] = [("timeout", "30s"), ("connect_timeout", "5s")];

/// Retries of a failed request: a few, with backoff, within 15 s in all.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: Duration::from_secs(15),
    }
}

/// Builds `$builder` for `$url`: defaults, then the environment variables starting with
/// `$env`, then `$options` (each key parsed as `$key`; an unknown one is an error).
macro_rules! configured {
    ($builder:ty, $key:ty, $env:literal, $url:expr, $options:expr) => {{
        let parse = |k: &str| k.to_ascii_lowercase().parse::<$key>();
        let mut builder = <$builder>::new();
        for (k, v) in DEFAULTS {
            if let Ok(key) = parse(k) {
                builder = builder.with_config(key, v);
            }
        }
        for (k, v) in std::env::vars() {
            if k.starts_with($env) {
                if let Ok(key) = parse(&k) {
                    builder = builder.with_config(key, v);
                }
            }
        }
        builder = builder.with_url($url.as_str());
        for (k, v) in $options {
            let key = parse(k).map_err(|_| unknown(k, $url.scheme()))?;
            builder = builder.with_config(key, v.clone());
        }
        Box::new(builder.with_retry(retry()).build()?) as Box<dyn ObjectStore>
    }};
}

/// The client for `url` and the prefix under it that the URL names.
pub(crate) fn build(
    url: &Url,
    options: &[(String, String)],
) -> Result<(Box<dyn ObjectStore>, Path), object_store::Error> {
    let (scheme, path) = ObjectStoreScheme::parse(url)?;
    let prefix = Path::parse(path)?;
    let no_options = |what: &str| match options.first() {
        Some((k, _)) => Err(generic(format!(
            "storage option '{k}' does not apply to {what} storage"
        ))),
        None => Ok(()),
    };
    let store = match scheme {
        ObjectStoreScheme::Local => {
            no_options("local file")?;
            Box::new(LocalFileSystem::new()) as Box<dyn ObjectStore>
        }
        ObjectStoreScheme::Memory => {
            no_options("in-memory")?;
            Box::new(InMemory::new())
        }
        ObjectStoreScheme::AmazonS3 => {
            configured!(AmazonS3Builder, AmazonS3ConfigKey, "AWS_", url, options)
        }
        ObjectStoreScheme::GoogleCloudStorage => configured!(
            GoogleCloudStorageBuilder,
            GoogleConfigKey,
            "GOOGLE_",
            url,
            options
        ),
        ObjectStoreScheme::MicrosoftAzure => {
            configured!(
                MicrosoftAzureBuilder,
                AzureConfigKey,
                "AZURE_",
                url,
                options
            )
        }
        other => {
            return Err(generic(format!(
                "{other:?} URLs are not supported (use s3://, gs://, az://, file:// or memory://)"
            )))
        }
    };
    Ok((store, prefix))
}

fn unknown(key: &str, scheme: &str) -> object_store::Error {
    generic(format!(
        "unknown storage option '{key}' for {scheme}:// URLs"
    ))
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "omendb",
        source: message.into(),
    }
}
