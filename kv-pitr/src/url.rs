//! Backup locations as text (`s3://bucket/prefix`, `file:///folder`, a folder path), for
//! command-line tools: [`open_store_url`] turns one into an object store and a prefix, and
//! [`fetch_concurrency`] says how many of its objects a reader should download at once.
//!
//! Contract: an `s3://` location never touches the network while it is opened (the store is
//! only configured); a folder location creates the folder if it is missing and opens it with
//! fsync on, so uploaded objects survive a power failure. Every failure is a
//! [`StoreUrlError`] that names the location and keeps the underlying error as its source.

use std::sync::Arc;

use object_store::path::Path;
use object_store::ObjectStore;

/// A backup location that cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    /// The text is not a supported location.
    #[error("invalid backup location {location:?}: {reason}")]
    Invalid {
        /// The location as given.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The prefix of an `s3://` location is not a valid object path.
    #[error("invalid backup location {location:?}: bad prefix: {source}")]
    BadPrefix {
        /// The location as given.
        location: String,
        /// Why the prefix was rejected.
        #[source]
        source: object_store::path::Error,
    },
    /// The local folder could not be created.
    #[error("invalid backup location {location:?}: cannot create the folder: {source}")]
    CreateFolder {
        /// The location as given.
        location: String,
        /// The file system's error.
        #[source]
        source: std::io::Error,
    },
    /// The object store could not be set up.
    #[error("cannot open the object store for {location:?}: {source}")]
    Store {
        /// The location as given.
        location: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
}

/// Opens the object store and prefix named by a backup location, for command-line tools:
///
/// - `s3://<bucket>/<prefix>`: S3 or an S3-compatible store. Credentials, region and other
///   settings come from the `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`,
///   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT`, ...);
///   `s3_endpoint` (e.g. `http://127.0.0.1:9000`) selects an S3-compatible server with
///   path-style requests (plain HTTP allowed for `http://` endpoints; unsigned requests if
///   `AWS_ACCESS_KEY_ID` is not set). Without an endpoint and without credentials in the
///   environment, the AWS SDK chain falls back to the instance metadata service.
/// - `file:///<folder>` or a plain folder path: a local folder (created if missing; objects
///   are fsynced).
pub fn open_store_url(
    location: &str,
    s3_endpoint: Option<&str>,
) -> Result<(Arc<dyn ObjectStore>, Path), StoreUrlError> {
    let invalid = |reason: &str| StoreUrlError::Invalid {
        location: location.to_string(),
        reason: reason.to_string(),
    };
    let store_err = |source| StoreUrlError::Store {
        location: location.to_string(),
        source,
    };
    if let Some(rest) = location.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid(
                "the bucket name is missing (s3://<bucket>/<prefix>)",
            ));
        }
        let prefix = Path::parse(prefix.trim_end_matches('/')).map_err(|source| {
            StoreUrlError::BadPrefix {
                location: location.to_string(),
                source,
            }
        })?;
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(endpoint) = s3_endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(endpoint.starts_with("http://"));
            // An S3-compatible server has no AWS instance metadata service: without
            // credentials in the environment, send unsigned requests instead of asking it.
            if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
                builder = builder.with_skip_signature(true);
            }
        }
        let store = builder.build().map_err(store_err)?;
        return Ok((Arc::new(store), prefix));
    }
    let folder = match location.strip_prefix("file://") {
        Some(p) => p,
        None if location.contains("://") => return Err(invalid(
            "unsupported scheme (use s3://<bucket>/<prefix>, file:///<folder> or a folder path)",
        )),
        None => location,
    };
    if folder.is_empty() {
        return Err(invalid("the folder is missing"));
    }
    std::fs::create_dir_all(folder).map_err(|source| StoreUrlError::CreateFolder {
        location: location.to_string(),
        source,
    })?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(folder)
        .map_err(store_err)?
        .with_fsync(true);
    Ok((Arc::new(store), Path::default()))
}

/// Objects a reader of a folder location downloads at the same time. A local disk gains
/// nothing from reading further ahead, and each concurrent read runs in a blocking thread
/// whose allocator arena then keeps its segment buffers: 4 instead of
/// [`DEFAULT_FETCH_CONCURRENCY`](crate::consumer::DEFAULT_FETCH_CONCURRENCY) restores as fast
/// with about 30 MiB less peak RSS (`benches/results/restore-scale-20261206.md`).
pub const LOCAL_FETCH_CONCURRENCY: usize = 4;

/// The download concurrency for a reader of `location` (as [`open_store_url`] takes it):
/// [`LOCAL_FETCH_CONCURRENCY`] for folders, the reader's default for `s3://` stores, where
/// requests wait on the network.
pub fn fetch_concurrency(location: &str) -> usize {
    if location.starts_with("s3://") {
        crate::consumer::DEFAULT_FETCH_CONCURRENCY
    } else {
        LOCAL_FETCH_CONCURRENCY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_locations() {
        let (_, prefix) = open_store_url("s3://bucket/team/db1/", None).unwrap();
        assert_eq!(prefix.as_ref(), "team/db1");
        let (_, prefix) = open_store_url("s3://bucket", Some("http://127.0.0.1:9")).unwrap();
        assert_eq!(prefix.as_ref(), "");
        assert!(matches!(
            open_store_url("s3:///x", None),
            Err(StoreUrlError::Invalid { .. })
        ));
        assert!(matches!(
            open_store_url("gs://b/x", None),
            Err(StoreUrlError::Invalid { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a/b");
        let (store, prefix) = open_store_url(folder.to_str().unwrap(), None).unwrap();
        assert_eq!(prefix, Path::default());
        assert!(folder.is_dir());
        assert!(store.to_string().contains("LocalFileSystem"));
        let url = format!("file://{}", folder.display());
        assert!(open_store_url(&url, None).is_ok());
        assert_eq!(fetch_concurrency(&url), LOCAL_FETCH_CONCURRENCY);
        assert_eq!(fetch_concurrency("/var/backups"), LOCAL_FETCH_CONCURRENCY);
        assert_eq!(
            fetch_concurrency("s3://bucket/x"),
            crate::consumer::DEFAULT_FETCH_CONCURRENCY
        );
    }
}
