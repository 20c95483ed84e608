//! The error type of the storage crate.

use std::path::PathBuf;

/// Errors about input, output and commit; each names the path (and offset) involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An input path or glob that matches nothing.
    #[error("input '{0}' does not exist; check --input")]
    InputMissing(String),
    /// A directory (or glob) holding no readable files.
    #[error("input '{0}' contains no files (hidden files and names starting with '_' or '.' are skipped)")]
    InputEmpty(String),
    /// A glob pattern that cannot be parsed.
    #[error("input pattern '{pattern}' is invalid: {reason}")]
    BadPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// Input text that is not UTF-8.
    #[error("input file '{path}' is not valid UTF-8 at byte offset {offset}; word count reads UTF-8 text")]
    InvalidUtf8 {
        /// File.
        path: String,
        /// Absolute byte offset of the first invalid byte.
        offset: u64,
    },
    /// A datastore that cannot be used as configured (unknown name, unmounted root, ...).
    #[error("datastore '{name}': {reason}")]
    Datastore {
        /// The datastore (or bucket) name.
        name: String,
        /// What is wrong and what to check.
        reason: String,
    },
    /// An object-store request that failed (after object_store's own retries).
    #[error("{op} {uri} on datastore '{name}': {reason}")]
    Object {
        /// What was being done.
        op: &'static str,
        /// The object or prefix.
        uri: String,
        /// The datastore (or bucket).
        name: String,
        /// The store's answer, and what to check.
        reason: String,
    },
    /// Another job committed this output first.
    #[error("job {job_id} cannot commit output '{output}': another job committed it first (its _SUCCESS exists); rerun with another --output, or --overwrite to replace it")]
    CommitLost {
        /// The output directory.
        output: String,
        /// The job that lost.
        job_id: String,
    },
    /// The output holds a committed job already.
    #[error("output '{0}' already holds a committed job (_SUCCESS exists); pass --overwrite or choose another --output")]
    OutputCommitted(String),
    /// An I/O error on a path.
    #[error("{op} '{path}': {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing Parquet failed.
    #[error("writing parquet '{path}': {reason}")]
    Parquet {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Formatting a value for text output failed.
    #[error("formatting output for '{path}': {reason}")]
    Format {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A job parameter of the output writer with a value it cannot use.
    #[error("job parameter {name}={value:?} {reason}; pass --param {name}=N with N at least 1")]
    BadParam {
        /// The parameter.
        name: &'static str,
        /// Its value.
        value: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A job parameter that planning cannot use.
    #[error("{reason}")]
    Param {
        /// What is wrong and what to pass instead.
        reason: String,
    },
    /// A job's input filter (`--param sluice.where=...`) that cannot be used.
    #[error("{reason}")]
    Filter {
        /// What is wrong and what to do.
        reason: String,
    },
    /// The manifest could not be (de)serialized.
    #[error("manifest '{path}': {reason}")]
    Manifest {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Attaches an operation and a path to an I/O error.
pub(crate) fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.into();
    move |source| StorageError::Io { op, path, source }
}

/// An object-store error with what the user should check.
pub(crate) fn explain(e: &object_store::Error) -> String {
    match e {
        // The NFS store's messages already say what to check.
        object_store::Error::Generic { store: "NFS", .. } => e.to_string(),
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            format!("{e}; check the datastore's credentials and that they allow this")
        }
        e => format!("{e}; check the endpoint, bucket and credentials"),
    }
}
