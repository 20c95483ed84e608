//! Domain types shared by every Sluice crate: ids, job specs, splits, states and config.
//!
//! This crate links no async runtime so that user job crates that depend on it stay small.

pub mod config;
pub mod digest;
pub mod error;
pub mod ids;
pub mod partition;
pub mod range;
pub mod rng;
pub mod size;
pub mod spec;
pub mod state;

pub use error::CoreError;
pub use ids::{JobId, TaskId, TaskKind};
pub use size::parse_byte_size;
pub use spec::{
    map_gpus, InputFormat, JobSpec, OutputFormat, Split, CACHE_BYTES_PARAM, CACHE_PARAM,
    CSV_MULTILINE_PARAM, DEFAULT_CACHE_BYTES, DEFAULT_SPLIT_SIZE, GPUS_PARAM, MAX_ATTEMPTS_PARAM,
    TASK_MEMORY_PARAM, WORKER_SESSION_PARAM,
};
pub use state::{FailureKind, JobState, StageState, TaskState};
