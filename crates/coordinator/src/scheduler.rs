//! Which queued task runs next; a trait so that fair-share or gang policies can replace FIFO.

use std::collections::VecDeque;

use sluice_core::TaskId;

/// A task waiting for a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTask {
    /// Its job.
    pub job_id: String,
    /// Which task.
    pub task: TaskId,
    /// A second attempt of a straggler, run beside the first (speculation).
    pub speculative: bool,
}

/// A queueing policy.
pub trait Scheduler: Send {
    /// Adds a runnable task.
    fn enqueue(&mut self, task: QueuedTask);
    /// Takes up to `max` tasks for executor `executor_id`, of those `accept` allows there (a
    /// task that failed on it, or an excluded executor, is refused); the rest stay queued.
    fn next(
        &mut self,
        executor_id: &str,
        max: usize,
        accept: &mut dyn FnMut(&QueuedTask) -> bool,
    ) -> Vec<QueuedTask>;
    /// Drops every queued task of a job.
    fn remove_job(&mut self, job_id: &str);
    /// Tasks waiting.
    fn len(&self) -> usize;
    /// True when nothing waits.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// First in, first out over all jobs.
#[derive(Debug, Default)]
pub struct FifoScheduler {
    queue: VecDeque<QueuedTask>,
}

impl Scheduler for FifoScheduler {
    fn enqueue(&mut self, task: QueuedTask) {
        self.queue.push_back(task);
    }

    fn next(
        &mut self,
        _executor_id: &str,
        max: usize,
        accept: &mut dyn FnMut(&QueuedTask) -> bool,
    ) -> Vec<QueuedTask> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        while let Some(t) = self.queue.pop_front() {
            if taken.len() < max && accept(&t) {
                taken.push(t);
            } else {
                kept.push_back(t);
            }
            if taken.len() == max {
                break;
            }
        }
        kept.append(&mut self.queue);
        self.queue = kept;
        taken
    }

    fn remove_job(&mut self, job_id: &str) {
        self.queue.retain(|t| t.job_id != job_id);
    }

    fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use sluice_core::TaskKind;

    use super::*;

    #[test]
    fn fifo_order_and_removal() {
        let mut s = FifoScheduler::default();
        for (j, i) in [("a", 0), ("b", 0), ("a", 1)] {
            s.enqueue(QueuedTask {
                job_id: j.into(),
                speculative: false,
                task: TaskId {
                    kind: TaskKind::Map,
                    index: i,
                },
            });
        }
        s.remove_job("b");
        let got = s.next("e1", 5, &mut |_| true);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].job_id.as_str(), got[1].task.index), ("a", 1));
        assert!(s.is_empty());
    }

    #[test]
    fn refused_tasks_stay_queued_in_order() {
        let mut s = FifoScheduler::default();
        for i in 0..5 {
            s.enqueue(QueuedTask {
                job_id: "a".into(),
                speculative: false,
                task: TaskId {
                    kind: TaskKind::Map,
                    index: i,
                },
            });
        }
        let got = s.next("e1", 2, &mut |q| q.task.index % 2 == 1);
        let idx: Vec<u32> = got.iter().map(|q| q.task.index).collect();
        assert_eq!(idx, [1, 3]);
        let rest: Vec<u32> = s
            .next("e2", 9, &mut |_| true)
            .iter()
            .map(|q| q.task.index)
            .collect();
        assert_eq!(rest, [0, 2, 4]);
    }
}
