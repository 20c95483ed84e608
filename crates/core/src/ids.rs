//! Identifiers of jobs and tasks.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// A job's id, unique across processes: `job-<unix ms>-<process tag>-<sequence>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub String);

static SEQ: AtomicU64 = AtomicU64::new(1);

impl JobId {
    /// A fresh id; ordered by submission time within one coordinator.
    pub fn generate() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        // A per-process tag: two processes (two embedded runs, two coordinators) that start
        // jobs in the same millisecond must still get different ids, since output part names
        // and commit cleanup go by the job id.
        static TAG: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
        let tag = *TAG.get_or_init(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            (std::process::id().rotate_left(16) ^ nanos).wrapping_mul(0x9E37_79B1)
        });
        JobId(format!(
            "job-{ms}-{tag:08x}-{:04}",
            SEQ.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Map or reduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskKind {
    /// Reads a split, runs the mapper, writes partitioned shuffle output.
    Map,
    /// Fetches one partition from every map output, runs the reducer, writes output.
    Reduce,
}

impl TaskKind {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Map => "map",
            TaskKind::Reduce => "reduce",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "map" => Ok(TaskKind::Map),
            "reduce" => Ok(TaskKind::Reduce),
            other => Err(CoreError::UnknownTaskKind(other.to_string())),
        }
    }
}

/// A task within a job: kind and index (`m-00003`, `r-00001`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskId {
    /// Map or reduce.
    pub kind: TaskKind,
    /// Index within its stage.
    pub index: u32,
}

impl TaskId {
    /// Map task `index`.
    pub fn map(index: u32) -> Self {
        TaskId {
            kind: TaskKind::Map,
            index,
        }
    }

    /// Reduce task `index` (its partition).
    pub fn reduce(index: u32) -> Self {
        TaskId {
            kind: TaskKind::Reduce,
            index,
        }
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = match self.kind {
            TaskKind::Map => 'm',
            TaskKind::Reduce => 'r',
        };
        write!(f, "{k}-{:05}", self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_readable() {
        let a = JobId::generate();
        let b = JobId::generate();
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("job-"));
        let t = TaskId {
            kind: TaskKind::Reduce,
            index: 3,
        };
        assert_eq!(t.to_string(), "r-00003");
        assert_eq!(TaskKind::parse("map").unwrap(), TaskKind::Map);
        assert!(TaskKind::parse("x").is_err());
    }
}
