//! The error type of the executor crate.

/// Errors that stop an executor (task failures are reported, not raised).
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The coordinator could not be reached.
    #[error(transparent)]
    Rpc(#[from] sluice_rpc::RpcError),
    /// The coordinator refused a call.
    #[error("coordinator refused {call}: {message}")]
    Refused {
        /// Which call.
        call: &'static str,
        /// Its message.
        message: String,
    },
    /// Local I/O failed.
    #[error("executor {op} '{addr}': {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path or address.
        addr: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// No memory cgroup can be made for worker processes (the executor then limits them with
    /// RLIMIT_AS instead).
    #[error("no memory cgroup for workers: {0}")]
    CgroupUnavailable(String),
}
