//! Sluice shuffle: a map task writes one data file of per-partition Arrow IPC streams (LZ4) plus
//! an index of partition offsets; executors serve partitions over gRPC; reducers merge the
//! key-sorted runs.
//!
//! A run is a `RecordBatch` whose column 0 is a Binary key sorted ascending by bytes and whose
//! column 1 is a Binary value.

mod error;
mod fetch;
mod merge;
mod service;
mod store;

pub use error::ShuffleError;
pub use fetch::{decode_segment, fetch_partition};
pub use merge::KWayMerge;
pub use service::ShuffleService;
pub use store::{MapOutputInfo, ShuffleStore};
