//! The Sluice coordinator: accepts jobs, plans splits, hands tasks to executors that ask for
//! them, tracks job, stage and task state, and commits output exactly once.

mod binaries;
mod durable;
mod error;
mod scheduler;
mod service;
mod state;

pub use error::CoordinatorError;
pub use scheduler::{FifoScheduler, QueuedTask, Scheduler};
pub use service::{serve, Coordinator};
