//! The error type of the CLI.

/// Everything the `sluice` command can fail with; printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Wrong flags or values.
    #[error("{0}")]
    Usage(String),
    /// A size or format that does not parse.
    #[error(transparent)]
    Core(#[from] sluice_core::CoreError),
    /// The coordinator could not be reached.
    #[error(transparent)]
    Rpc(#[from] sluice_rpc::RpcError),
    /// The coordinator refused a request.
    #[error("{0}")]
    Refused(String),
    /// Model, checkpoint or training data problems.
    #[error(transparent)]
    Udf(#[from] sluice_udf::UdfError),
    /// The job ended without succeeding.
    #[error("job {job_id} {state}: {error}")]
    JobFailed {
        /// Job id.
        job_id: String,
        /// Final state.
        state: String,
        /// Why.
        error: String,
    },
    /// Starting the embedded coordinator failed.
    #[error(transparent)]
    Coordinator(#[from] sluice_coordinator::CoordinatorError),
    /// Starting an executor failed.
    #[error(transparent)]
    Executor(#[from] sluice_executor::ExecutorError),
    /// Reading output failed.
    #[error(transparent)]
    Storage(#[from] sluice_storage::StorageError),
    /// Local I/O failed.
    #[error("{op} '{path}': {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path or address.
        path: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// Process exit code: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Core(_) => 2,
            _ => 1,
        }
    }
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        CliError::Refused(s.message().to_string())
    }
}
