//! Sluice shuffle: a map task writes one data file of per-partition Arrow IPC streams (LZ4) plus
//! an index of partition offsets; executors serve partitions over gRPC; reducers merge the
//! key-sorted runs.
//!
//! A run is a `RecordBatch` whose column 0 is a Binary key sorted ascending by bytes and whose
//! column 1 is a Binary value.

mod error;
#[cfg(feature = "grpc")]
mod fetch;
#[cfg(feature = "grpc")]
mod service;
mod store;
mod stream;

pub use error::ShuffleError;
#[cfg(feature = "grpc")]
pub use fetch::fetch_partition;
#[cfg(feature = "grpc")]
pub use service::ShuffleService;
pub use store::{Combine, MapOutputInfo, ShuffleStore};
pub use stream::{merge_runs_to, reduce_fan_in, SegmentRef, StreamMerge, RUN_BATCH_ROWS};
