//! The Sluice executor: registers with the coordinator, asks for tasks when it has free slots,
//! runs them on blocking threads (never on the async reactor), serves its map outputs to
//! reducers, and reports every attempt's outcome.

mod cgroup;
mod error;
mod executor;
mod gpus;
mod task;
mod workers;

pub use error::ExecutorError;
pub use executor::{start, ExecutorHandle};
