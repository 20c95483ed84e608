//! The error type of the coordinator crate.

/// Errors of the coordinator process.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// A submitted job is invalid; the message says what to change.
    #[error("job {job}: {reason}")]
    InvalidJob {
        /// Job name.
        job: String,
        /// What is wrong.
        reason: String,
    },
    /// Output or state I/O failed.
    #[error(transparent)]
    Storage(#[from] sluice_storage::StorageError),
    /// The gRPC server failed.
    #[error("coordinator server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Local I/O failed.
    #[error("coordinator {op} '{path}': {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path.
        path: std::path::PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The durable state store (redb) failed.
    #[error("coordinator state store '{path}': {reason}; check --state-dir (another coordinator may be using it)")]
    State {
        /// The store file.
        path: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
}
