//! Configuration of the long-running processes.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of a coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where finished-job records are kept.
    pub state_dir: PathBuf,
    /// Attempts per task before the job fails.
    pub max_task_attempts: u32,
    /// An executor silent for this long is declared lost.
    pub executor_timeout: Duration,
    /// How long an executor that failed repeatedly gets no tasks.
    pub exclude_for: Duration,
}

impl CoordinatorConfig {
    /// Defaults with the given state directory.
    pub fn new(state_dir: PathBuf) -> Self {
        CoordinatorConfig {
            state_dir,
            max_task_attempts: 4,
            executor_timeout: Duration::from_secs(15),
            exclude_for: Duration::from_secs(60),
        }
    }
}

/// Settings of an executor.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Coordinator URL, e.g. `http://127.0.0.1:7070`.
    pub coordinator: String,
    /// Scratch and shuffle files live here.
    pub work_dir: PathBuf,
    /// Tasks run at once.
    pub slots: u32,
    /// Memory offered, in bytes.
    pub memory_bytes: u64,
    /// Address the shuffle service listens on (`127.0.0.1:0` picks a port).
    pub listen: String,
    /// Interval between heartbeats.
    pub heartbeat: Duration,
    /// Address-space limit of each job-binary worker process, if any.
    pub worker_memory_bytes: Option<u64>,
    /// GPUs offered to tasks; `None` offers every GPU found at start.
    pub gpus: Option<u32>,
}

impl ExecutorConfig {
    /// Defaults for an executor of `slots` slots.
    pub fn new(coordinator: String, work_dir: PathBuf, slots: u32) -> Self {
        ExecutorConfig {
            coordinator,
            work_dir,
            slots,
            memory_bytes: 1 << 30,
            listen: "127.0.0.1:0".into(),
            heartbeat: Duration::from_secs(1),
            worker_memory_bytes: None,
            gpus: None,
        }
    }
}
