//! The Sluice task runtime. The executor calls [`run_map`] and [`run_reduce`] in-process for
//! built-in jobs; a job binary calls [`main`], which turns it into a worker process that runs
//! the same functions for tasks the executor sends over a Unix socket.
//!
//! This crate links no async runtime and no gRPC: a job crate builds on `sluice-udf` and this.
//!
//! ```no_run
//! use sluice_udf::Registry;
//!
//! fn main() -> std::process::ExitCode {
//!     let mut jobs = Registry::new();
//!     jobs.register(sluice_udf::wordcount::job());
//!     sluice_worker::main(jobs)
//! }
//! ```

pub mod protocol;
mod serve;
mod tasks;

pub use protocol::TaskInfo;
pub use serve::{describe, main, serve, MEMORY_LIMIT_ENV};
pub use tasks::{
    run_map, run_reduce, MapDone, ReduceDone, TaskFailure, CACHE_DISK_HITS_COUNTER,
    CACHE_DISK_PARAM, CACHE_HITS_COUNTER, DATASTORE_BYTES_COUNTER, DEFAULT_CACHE_DISK_BYTES,
};
