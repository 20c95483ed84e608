//! Explicit state machines for jobs, stages and tasks.

use std::fmt;

use crate::CoreError;

macro_rules! state_enum {
    ($(#[$m:meta])* $name:ident, $machine:literal, { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// Wire name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }

            /// Parses the wire name.
            pub fn parse(s: &str) -> Result<Self, CoreError> {
                match s {
                    $($s => Ok($name::$v),)+
                    other => Err(CoreError::UnknownState { machine: $machine, value: other.to_string() }),
                }
            }

            /// Moves to `to` if the machine allows it.
            pub fn transition(&mut self, to: $name) -> Result<(), CoreError> {
                if self.can_move_to(to) {
                    *self = to;
                    Ok(())
                } else {
                    Err(CoreError::IllegalTransition { machine: $machine, from: self.as_str(), to: to.as_str() })
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Why a task attempt failed: decides what the coordinator does next, carried as this enum from
/// the worker through gRPC to the scheduler (never a message parsed back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// I/O or a crash another attempt may not meet (a user-code panic too, as Spark retries
    /// those): retried up to the job's `max_attempts`, on another executor where possible.
    Retryable,
    /// Bad input or a user error another attempt would meet again: the job fails at once.
    Permanent,
    /// A reduce could not fetch some map outputs: those maps run again, and the reduce after.
    LostOutput,
    /// The attempt ran out of memory (its worker was killed at the memory limit): retried.
    OutOfMemory,
    /// The job was cancelled or ended while the attempt ran: nothing to do.
    Cancelled,
    /// The executor running the attempt was lost: requeued, not counted against the task.
    ExecutorLost,
}

impl FailureKind {
    /// Wire and display name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Retryable => "retryable",
            FailureKind::Permanent => "permanent",
            FailureKind::LostOutput => "lost_output",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::Cancelled => "cancelled",
            FailureKind::ExecutorLost => "executor_lost",
        }
    }

    /// True when the attempt counts against the task's `max_attempts`.
    pub fn counts_as_attempt(self) -> bool {
        matches!(
            self,
            FailureKind::Retryable | FailureKind::Permanent | FailureKind::OutOfMemory
        )
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

state_enum!(
    /// Life of a job.
    JobState, "job", {
        /// Accepted, waiting for executors.
        Pending => "pending",
        /// Map or reduce stage in progress.
        Running => "running",
        /// All reduces committed; writing `_SUCCESS`.
        Committing => "committing",
        /// Output committed.
        Succeeded => "succeeded",
        /// A task failed past its retries, or the commit failed.
        Failed => "failed",
        /// Cancelled by a user.
        Cancelled => "cancelled",
    }
);

impl JobState {
    /// True once nothing more will happen to the job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }

    fn can_move_to(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Pending, Running)
                | (Running, Committing)
                | (Committing, Succeeded)
                | (Pending | Running | Committing, Failed)
                | (Pending | Running, Cancelled)
        )
    }
}

state_enum!(
    /// Life of a stage (all maps, or all reduces, of a job).
    StageState, "stage", {
        /// Waiting for the stage before it.
        Waiting => "waiting",
        /// Tasks queued or running.
        Running => "running",
        /// Every task succeeded.
        Done => "done",
        /// A task failed past its retries, or the job ended.
        Failed => "failed",
    }
);

impl StageState {
    fn can_move_to(self, to: StageState) -> bool {
        use StageState::*;
        // Done -> Running: a lost map output reopens the map stage to compute it again.
        matches!(
            (self, to),
            (Waiting, Running) | (Running, Done) | (Done, Running) | (Waiting | Running, Failed)
        )
    }
}

state_enum!(
    /// Life of a task (over all its attempts).
    TaskState, "task", {
        /// Queued, not yet given to an executor.
        Pending => "pending",
        /// An attempt runs on an executor.
        Running => "running",
        /// An attempt succeeded (and, for reduces, committed).
        Succeeded => "succeeded",
        /// The last allowed attempt failed.
        Failed => "failed",
        /// The job ended before the task did.
        Killed => "killed",
    }
);

impl TaskState {
    fn can_move_to(self, to: TaskState) -> bool {
        use TaskState::*;
        // Succeeded -> Pending: the map output it produced was lost with its executor.
        matches!(
            (self, to),
            (Pending, Running)
                | (Running, Succeeded)
                | (Running, Pending)
                | (Succeeded, Pending)
                | (Running, Failed)
                | (Pending | Running, Killed)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_machine_allows_the_happy_path_only_forward() {
        let mut s = JobState::Pending;
        s.transition(JobState::Running).unwrap();
        s.transition(JobState::Committing).unwrap();
        assert!(s.transition(JobState::Cancelled).is_err());
        s.transition(JobState::Succeeded).unwrap();
        assert!(s.is_final());
        assert!(s.transition(JobState::Running).is_err());
    }

    #[test]
    fn task_can_retry_but_not_resurrect() {
        let mut t = TaskState::Pending;
        t.transition(TaskState::Running).unwrap();
        t.transition(TaskState::Pending).unwrap();
        t.transition(TaskState::Running).unwrap();
        t.transition(TaskState::Succeeded).unwrap();
        assert!(t.transition(TaskState::Running).is_err());
        assert!(t.transition(TaskState::Killed).is_err());
        let mut f = TaskState::Running;
        f.transition(TaskState::Failed).unwrap();
        assert!(f.transition(TaskState::Pending).is_err());
        assert_eq!(TaskState::parse("killed").unwrap(), TaskState::Killed);
        let mut st = StageState::Waiting;
        assert!(st.transition(StageState::Done).is_err());
        st.transition(StageState::Running).unwrap();
        st.transition(StageState::Done).unwrap();
    }
}
