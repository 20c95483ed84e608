//! The error type of the shuffle crate.

use std::path::PathBuf;

/// Errors writing, serving, fetching or merging shuffle data.
#[derive(Debug, thiserror::Error)]
pub enum ShuffleError {
    /// File I/O failed.
    #[error("shuffle {op} '{path}': {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Arrow IPC encoding or decoding failed.
    #[error("shuffle data: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A partition could not be fetched from an executor.
    #[error(
        "fetching partition {partition} of map {map_index} of job {job_id} from {addr}: {reason}"
    )]
    Fetch {
        /// Job.
        job_id: String,
        /// Map task index.
        map_index: u32,
        /// Partition.
        partition: u32,
        /// Executor shuffle address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// An index file is damaged or a partition is out of range.
    #[error("shuffle file '{path}': {reason}")]
    Corrupt {
        /// The index or data file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The disk under the shuffle directory is full.
    #[error("no space left on the device of '{dir}' for shuffle data ({source}); free space there or give the executor another --work-dir")]
    DiskFull {
        /// The directory being written.
        dir: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The job's combiner failed while spilled runs were merged.
    #[error("{0}")]
    Combine(String),
}

pub(crate) fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> ShuffleError {
    let path = path.into();
    move |source| ShuffleError::Io { op, path, source }
}

/// Names the file of an I/O error that arrow's IPC writer hit while writing `path`, and turns a
/// full disk into [`ShuffleError::DiskFull`] naming its directory.
pub(crate) fn writing(path: &std::path::Path) -> impl Fn(ShuffleError) -> ShuffleError + '_ {
    move |e| {
        let full = |source: std::io::Error| ShuffleError::DiskFull {
            dir: path.parent().unwrap_or(path).to_path_buf(),
            source,
        };
        match e {
            ShuffleError::Arrow(arrow_schema::ArrowError::IoError(_, source)) => {
                if source.kind() == std::io::ErrorKind::StorageFull {
                    return full(source);
                }
                ShuffleError::Io {
                    op: "writing",
                    path: path.to_path_buf(),
                    source,
                }
            }
            ShuffleError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                full(source)
            }
            other => other,
        }
    }
}
