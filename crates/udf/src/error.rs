//! The error type of the udf crate.

/// Errors from running user code's plumbing (encoding, decoding, building batches).
#[derive(Debug, thiserror::Error)]
pub enum UdfError {
    /// A key or value could not be encoded for the shuffle.
    #[error("cannot encode a shuffle record: {0}")]
    Encode(String),
    /// A shuffle record could not be decoded into the reducer's key or value type.
    #[error("cannot decode a shuffle record ({0}); the map and reduce types of the job disagree or the shuffle file is corrupt")]
    Decode(String),
    /// Output records could not be turned into Arrow columns.
    #[error("cannot convert output records to Arrow: {0}")]
    Output(String),
    /// An Arrow error.
    #[error(transparent)]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A custom partitioner returned a partition out of range.
    #[error("{0}")]
    Partition(String),
    /// An input record could not be read as the mapper's input type.
    #[error("{0}")]
    Input(String),
    /// A job parameter is missing or malformed.
    #[error("{0}")]
    Param(String),
    /// User code reported an error (a batch mapper or reducer).
    #[error("{0}")]
    User(String),
    /// The map function panicked on a record, named by its file and position.
    #[error("{0}")]
    Panicked(String),
    /// Output from the sink failed.
    #[error("{0}")]
    Sink(String),
    /// A GPU call failed (out of device memory, a driver error): another attempt, maybe on
    /// another GPU, may succeed.
    #[error("{0}")]
    Gpu(String),
}
