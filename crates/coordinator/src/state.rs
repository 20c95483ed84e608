//! The coordinator's in-memory model: jobs with their stages and tasks, and executors.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sluice_core::{
    FailureKind, JobSpec, JobState, Split, StageState, TaskId, TaskKind, TaskState, CACHE_PARAM,
};
use sluice_rpc::pb;
use tokio::sync::watch;

use crate::scheduler::{QueuedTask, Scheduler};

/// An output path as compared between jobs: without `file://` and trailing slashes.
pub(crate) fn output_key(output: &str) -> String {
    if output.starts_with("s3://") || output.starts_with("ds://") {
        return output.trim_end_matches('/').to_string();
    }
    let p = output.strip_prefix("file://").unwrap_or(output);
    let p = p.trim_end_matches('/');
    std::path::absolute(p)
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_else(|_| p.to_string())
}

/// How an attempt ended, or that it still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Running,
    Succeeded,
    Failed(FailureKind),
    /// Another attempt of the task finished first; this one's result is ignored.
    Killed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed(k) => k.as_str(),
            Outcome::Killed => "killed",
        }
    }

    /// Parses [`Outcome::as_str`]'s names (a record of an older coordinator: running).
    pub fn parse(s: &str) -> Outcome {
        let kinds = [
            FailureKind::Retryable,
            FailureKind::Permanent,
            FailureKind::LostOutput,
            FailureKind::OutOfMemory,
            FailureKind::Cancelled,
            FailureKind::ExecutorLost,
        ];
        match s {
            "succeeded" => Outcome::Succeeded,
            "killed" => Outcome::Killed,
            other => kinds
                .into_iter()
                .find(|k| k.as_str() == other)
                .map_or(Outcome::Running, Outcome::Failed),
        }
    }
}

/// One attempt of a task: where it ran and how it ended.
#[derive(Debug, Clone)]
pub(crate) struct AttemptRecord {
    pub attempt: u32,
    pub executor: String,
    pub outcome: Outcome,
    pub error: String,
    pub speculative: bool,
    pub started: Instant,
    pub ended: Option<Instant>,
}

impl AttemptRecord {
    /// As clients and the store see it.
    pub fn info(&self) -> pb::AttemptInfo {
        pb::AttemptInfo {
            attempt: self.attempt,
            executor_id: self.executor.clone(),
            outcome: self.outcome.as_str().to_string(),
            error: self.error.clone(),
            speculative: self.speculative,
        }
    }

    /// From the store (its times are not kept: a restored attempt ended now).
    pub fn from_info(a: &pb::AttemptInfo) -> Self {
        let now = Instant::now();
        AttemptRecord {
            attempt: a.attempt,
            executor: a.executor_id.clone(),
            outcome: Outcome::parse(&a.outcome),
            error: a.error.clone(),
            speculative: a.speculative,
            started: now,
            ended: Some(now),
        }
    }
}

/// One task across its attempts.
#[derive(Debug)]
pub(crate) struct TaskEntry {
    pub state: TaskState,
    pub attempts: u32,
    pub executor: Option<String>,
    pub error: Option<String>,
    pub commit_attempt: Option<u32>,
    /// Counters of the attempt that succeeded.
    pub stats: Option<pb::Stats>,
    /// Attempts that failed because map outputs could not be fetched.
    pub fetch_failures: u32,
    /// Failed attempts that count against `max_attempts` (not executor losses, not fetch
    /// failures, not cancellations).
    pub counted_failures: u32,
    /// Executors where a counted attempt failed: the task goes elsewhere when it can.
    pub failed_on: HashSet<String>,
    /// Every attempt, oldest first.
    pub history: Vec<AttemptRecord>,
    /// Attempts running now: one, or two while a straggler has a speculative copy.
    pub live: std::collections::BTreeSet<u32>,
    /// A speculative copy was queued (once per task).
    pub speculated: bool,
}

impl TaskEntry {
    fn new() -> Self {
        TaskEntry {
            state: TaskState::Pending,
            attempts: 0,
            executor: None,
            error: None,
            commit_attempt: None,
            stats: None,
            fetch_failures: 0,
            counted_failures: 0,
            failed_on: HashSet::new(),
            history: Vec::new(),
            live: Default::default(),
            speculated: false,
        }
    }

    /// True when `attempt` is running now and may report.
    pub fn is_live(&self, attempt: u32) -> bool {
        self.state == TaskState::Running && self.live.contains(&attempt)
    }

    /// The executors running an attempt of this task now.
    pub fn live_executors(&self) -> impl Iterator<Item = &str> {
        self.history
            .iter()
            .filter(|a| self.live.contains(&a.attempt))
            .map(|a| a.executor.as_str())
    }

    /// Records how attempt `attempt` ended.
    pub fn record(&mut self, attempt: u32, outcome: Outcome, error: &str) {
        if let Some(a) = self.history.iter_mut().rev().find(|a| a.attempt == attempt) {
            a.outcome = outcome;
            a.error = error.to_string();
            a.ended = Some(Instant::now());
        }
    }

    /// Each failed attempt with its executor and error, for a job's error message.
    pub fn attempts_summary(&self) -> String {
        self.history
            .iter()
            .filter(|a| matches!(a.outcome, Outcome::Failed(_)))
            .map(|a| {
                format!(
                    "attempt {} on {} ({}): {}",
                    a.attempt,
                    a.executor,
                    a.outcome.as_str(),
                    a.error
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One job.
pub(crate) struct Job {
    pub id: String,
    pub spec: JobSpec,
    pub state: JobState,
    pub error: Option<String>,
    pub submitted: Instant,
    pub submitted_ms: u64,
    pub finished: Option<Instant>,
    pub splits: Vec<Split>,
    pub reducers: u32,
    pub map_stage: StageState,
    pub reduce_stage: StageState,
    pub maps: Vec<TaskEntry>,
    pub reduces: Vec<TaskEntry>,
    pub map_outputs: Vec<Option<pb::MapOutputLocation>>,
    pub files: Vec<pb::OutputFile>,
    pub version: watch::Sender<u64>,
    /// Sorted sampled keys of a range-partitioned job, until its boundaries are set.
    pub range_sample: Option<Vec<Vec<u8>>>,
    /// Local disk the job's shuffle takes per executor, as its last heartbeat said.
    pub disk_bytes: HashMap<String, u64>,
    /// Changed since its record was last written to the store.
    pub dirty: bool,
}

impl Job {
    pub fn new(id: String, spec: JobSpec, splits: Vec<Split>) -> Self {
        let n = splits.len();
        Job {
            id,
            spec,
            state: JobState::Pending,
            error: None,
            submitted: Instant::now(),
            submitted_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            finished: None,
            maps: (0..n).map(|_| TaskEntry::new()).collect(),
            map_outputs: vec![None; n],
            splits,
            reducers: 0,
            map_stage: StageState::Waiting,
            reduce_stage: StageState::Waiting,
            reduces: Vec::new(),
            files: Vec::new(),
            version: watch::channel(0).0,
            range_sample: None,
            disk_bytes: HashMap::new(),
            dirty: true,
        }
    }

    /// Sets the sampled keys that the job's range boundaries are cut from.
    pub fn with_range_sample(mut self, sample: Option<Vec<Vec<u8>>>) -> Self {
        self.range_sample = sample;
        self
    }

    /// Tells watchers something changed, and marks the job for the store.
    pub fn bump(&mut self) {
        self.version.send_modify(|v| *v += 1);
        self.dirty = true;
    }

    /// The job as the store keeps it.
    pub fn to_record(&self) -> pb::JobRecord {
        let task = |t: &TaskEntry| pb::TaskRecord {
            state: t.state.as_str().to_string(),
            attempts: t.attempts,
            executor_id: t.executor.clone().unwrap_or_default(),
            error: t.error.clone().unwrap_or_default(),
            commit_attempt: t.commit_attempt.unwrap_or(0),
            stats: t.stats.clone(),
            fetch_failures: t.fetch_failures,
            counted_failures: t.counted_failures,
            failed_on: t.failed_on.iter().cloned().collect(),
            history: t.history.iter().map(AttemptRecord::info).collect(),
            speculated: t.speculated,
        };
        let end = self.finished.unwrap_or_else(Instant::now);
        pb::JobRecord {
            job_id: self.id.clone(),
            spec: Some((&self.spec).into()),
            state: self.state.as_str().to_string(),
            error: self.error.clone().unwrap_or_default(),
            submitted_unix_ms: self.submitted_ms,
            splits: self.splits.iter().map(Into::into).collect(),
            reducers: self.reducers,
            map_stage: self.map_stage.as_str().to_string(),
            reduce_stage: self.reduce_stage.as_str().to_string(),
            maps: self.maps.iter().map(task).collect(),
            reduces: self.reduces.iter().map(task).collect(),
            map_outputs: self.map_outputs.iter().flatten().cloned().collect(),
            files: self.files.clone(),
            version: *self.version.borrow(),
            elapsed_s: end.duration_since(self.submitted).as_secs_f64(),
            range_sample: self.range_sample.clone().unwrap_or_default(),
            has_range_sample: self.range_sample.is_some(),
        }
    }

    /// A job from its stored record, as a restarted coordinator resumes it: attempts that were
    /// running are over (their executors' reports will be stale), so those tasks are pending.
    pub fn from_record(rec: pb::JobRecord) -> Result<Job, String> {
        let spec = rec
            .spec
            .as_ref()
            .ok_or("no spec")
            .and_then(|s| JobSpec::try_from(s).map_err(|_| "bad spec"))
            .map_err(|e| format!("job {}: {e}", rec.job_id))?;
        let bad =
            |what: &str, e: sluice_core::CoreError| format!("job {}: {what}: {e}", rec.job_id);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let submitted = Instant::now()
            .checked_sub(std::time::Duration::from_millis(
                now_ms.saturating_sub(rec.submitted_unix_ms),
            ))
            .unwrap_or_else(Instant::now);
        let task = |t: &pb::TaskRecord| -> Result<TaskEntry, String> {
            let mut e = TaskEntry::new();
            e.state = TaskState::parse(&t.state).map_err(|x| bad("task state", x))?;
            e.attempts = t.attempts;
            e.executor = Some(t.executor_id.clone()).filter(|x| !x.is_empty());
            e.error = Some(t.error.clone()).filter(|x| !x.is_empty());
            e.commit_attempt = Some(t.commit_attempt).filter(|a| *a > 0);
            e.stats = t.stats.clone();
            e.fetch_failures = t.fetch_failures;
            e.counted_failures = t.counted_failures;
            e.failed_on = t.failed_on.iter().cloned().collect();
            e.speculated = t.speculated;
            e.history = t.history.iter().map(AttemptRecord::from_info).collect();
            if e.state == TaskState::Running {
                e.state = TaskState::Pending;
                e.commit_attempt = None;
            }
            for a in &mut e.history {
                if a.outcome == Outcome::Running {
                    a.outcome = Outcome::Failed(FailureKind::Cancelled);
                    a.error = "the coordinator restarted during the attempt".into();
                }
            }
            Ok(e)
        };
        let mut map_outputs = vec![None; rec.splits.len()];
        for o in &rec.map_outputs {
            if let Some(slot) = map_outputs.get_mut(o.map_index as usize) {
                *slot = Some(o.clone());
            }
        }
        let state = JobState::parse(&rec.state).map_err(|e| bad("state", e))?;
        let job = Job {
            id: rec.job_id.clone(),
            spec,
            state,
            error: Some(rec.error.clone()).filter(|e| !e.is_empty()),
            submitted,
            submitted_ms: rec.submitted_unix_ms,
            finished: state
                .is_final()
                .then(|| submitted + std::time::Duration::from_secs_f64(rec.elapsed_s.max(0.0))),
            splits: rec.splits.iter().map(Into::into).collect(),
            reducers: rec.reducers,
            map_stage: StageState::parse(&rec.map_stage).map_err(|e| bad("map stage", e))?,
            reduce_stage: StageState::parse(&rec.reduce_stage)
                .map_err(|e| bad("reduce stage", e))?,
            maps: rec.maps.iter().map(task).collect::<Result<_, _>>()?,
            reduces: rec.reduces.iter().map(task).collect::<Result<_, _>>()?,
            map_outputs,
            files: rec.files.clone(),
            version: watch::channel(rec.version).0,
            range_sample: rec.has_range_sample.then(|| rec.range_sample.clone()),
            disk_bytes: HashMap::new(),
            dirty: false,
        };
        Ok(job)
    }

    pub fn task_mut(&mut self, t: TaskId) -> Option<&mut TaskEntry> {
        match t.kind {
            TaskKind::Map => self.maps.get_mut(t.index as usize),
            TaskKind::Reduce => self.reduces.get_mut(t.index as usize),
        }
    }

    fn done(tasks: &[TaskEntry]) -> u32 {
        tasks
            .iter()
            .filter(|t| t.state == TaskState::Succeeded)
            .count() as u32
    }

    /// Job counters: the sum over the attempts that succeeded (a recomputed map counts once).
    pub fn stats(&self) -> pb::Stats {
        let mut total = pb::Stats::default();
        for t in self.maps.iter().chain(&self.reduces) {
            if let Some(s) = &t.stats {
                total.add(s);
            }
        }
        total
    }

    /// Forgets the output of map `m` (its executor is gone) and queues the map again.
    pub fn lose_map_output(&mut self, m: usize, scheduler: &mut dyn Scheduler) -> bool {
        let Some(t) = self.maps.get_mut(m) else {
            return false;
        };
        if t.state.transition(TaskState::Pending).is_err() {
            return false; // not succeeded: already being recomputed
        }
        t.stats = None;
        self.map_outputs[m] = None;
        let _ = self.map_stage.transition(StageState::Running);
        scheduler.enqueue(QueuedTask {
            job_id: self.id.clone(),
            speculative: false,
            task: TaskId {
                kind: TaskKind::Map,
                index: m as u32,
            },
        });
        self.bump();
        true
    }

    /// True when every map output is available.
    pub fn maps_complete(&self) -> bool {
        self.maps.iter().all(|t| t.state == TaskState::Succeeded)
    }

    /// Moves to the final state `to`, marking unfinished tasks killed.
    pub fn finish(&mut self, to: JobState, error: Option<String>) {
        if self.state.transition(to).is_err() {
            return;
        }
        self.error = error;
        self.finished = Some(Instant::now());
        for t in self.maps.iter_mut().chain(self.reduces.iter_mut()) {
            let _ = t.state.transition(TaskState::Killed);
        }
        for s in [&mut self.map_stage, &mut self.reduce_stage] {
            let _ = s.transition(StageState::Failed);
        }
        self.bump();
    }

    /// A snapshot for clients.
    pub fn status(&self, include_tasks: bool) -> pb::JobStatus {
        let end = self.finished.unwrap_or_else(Instant::now);
        let mut tasks = Vec::new();
        if include_tasks {
            for (kind, list) in [
                (TaskKind::Map, &self.maps),
                (TaskKind::Reduce, &self.reduces),
            ] {
                for (i, t) in list.iter().enumerate() {
                    tasks.push(pb::TaskInfo {
                        task_id: TaskId {
                            kind,
                            index: i as u32,
                        }
                        .to_string(),
                        state: t.state.as_str().to_string(),
                        executor_id: t.executor.clone().unwrap_or_default(),
                        attempts: t.attempts,
                        error: t.error.clone().unwrap_or_default(),
                        history: t.history.iter().map(AttemptRecord::info).collect(),
                    });
                }
            }
        }
        pb::JobStatus {
            job_id: self.id.clone(),
            spec: Some((&self.spec).into()),
            state: self.state.as_str().to_string(),
            error: self.error.clone().unwrap_or_default(),
            maps_total: self.maps.len() as u32,
            maps_done: Self::done(&self.maps),
            reduces_total: self.reducers,
            reduces_done: Self::done(&self.reduces),
            stats: Some(self.stats()),
            elapsed_s: end.duration_since(self.submitted).as_secs_f64(),
            submitted_unix_ms: self.submitted_ms,
            tasks,
            files: self.files.clone(),
            disk_bytes: self.disk_bytes.clone(),
        }
    }
}

/// A registered executor.
pub(crate) struct ExecutorEntry {
    pub slots: u32,
    /// GPUs it has, for tasks that ask for them.
    pub gpus: u32,
    pub shuffle_addr: String,
    pub last_seen: Instant,
    /// (job, task, attempt) running there.
    pub running: HashSet<(String, TaskId, u32)>,
    /// Jobs whose shuffle files it reported in its last heartbeat.
    pub disk_jobs: HashSet<String>,
    /// When recent counted task failures happened here (for exclusion).
    pub recent_failures: std::collections::VecDeque<Instant>,
    /// Given no tasks until then, having failed repeatedly (Spark's excludeOnFailure).
    pub excluded_until: Option<Instant>,
}

/// Share of a stage's tasks finished before stragglers get speculative copies (Spark's
/// `spark.speculation.quantile`); the stage's tail, every remaining task running, counts too.
pub(crate) const SPECULATION_QUANTILE: f64 = 0.75;
/// How many times the median a straggler has run (Spark's `spark.speculation.multiplier`).
pub(crate) const SPECULATION_MULTIPLIER: f64 = 1.5;
/// No task is a straggler before this long (short tasks vary more than they cost).
pub(crate) const SPECULATION_MIN: std::time::Duration = std::time::Duration::from_millis(500);

/// Failures within [`EXCLUDE_WINDOW`] that exclude an executor.
pub(crate) const EXCLUDE_AFTER: usize = 3;
/// The window in which [`EXCLUDE_AFTER`] failures exclude an executor.
pub(crate) const EXCLUDE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

impl ExecutorEntry {
    /// A newly registered executor.
    pub fn new(slots: u32, shuffle_addr: String) -> Self {
        ExecutorEntry {
            slots,
            gpus: 0,
            shuffle_addr,
            last_seen: Instant::now(),
            running: HashSet::new(),
            disk_jobs: HashSet::new(),
            recent_failures: Default::default(),
            excluded_until: None,
        }
    }

    /// True while excluded.
    pub fn excluded(&self, now: Instant) -> bool {
        self.excluded_until.is_some_and(|t| now < t)
    }

    /// Counts a failed attempt here; returns true when it gets the executor excluded for
    /// `exclude_for`.
    pub fn note_failure(&mut self, now: Instant, exclude_for: std::time::Duration) -> bool {
        self.recent_failures.push_back(now);
        while self
            .recent_failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > EXCLUDE_WINDOW)
        {
            self.recent_failures.pop_front();
        }
        if self.recent_failures.len() >= EXCLUDE_AFTER && !self.excluded(now) {
            self.excluded_until = Some(now + exclude_for);
            self.recent_failures.clear();
            return true;
        }
        false
    }
}

/// Puts the jobs of a restarted coordinator's store back into `st`: unfinished tasks queued
/// again, executors that hold map outputs awaited (as silent executors, declared lost if they
/// do not register again within the timeout), executor ids kept unique. Returns the jobs that
/// were committing, to commit again.
pub(crate) fn restore(st: &mut State, records: Vec<pb::JobRecord>) -> Vec<String> {
    let mut commits = Vec::new();
    let mut highest = 0u64;
    for rec in records {
        let mut job = match Job::from_record(rec) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(error = %e, "cannot restore a job record; skipping it");
                continue;
            }
        };
        let ids = job
            .maps
            .iter()
            .chain(&job.reduces)
            .flat_map(|t| &t.history)
            .map(|a| a.executor.as_str());
        for id in ids {
            if let Some(n) = id.strip_prefix("exec-").and_then(|n| n.parse::<u64>().ok()) {
                highest = highest.max(n);
            }
        }
        if !job.state.is_final() {
            for o in job.map_outputs.iter().flatten() {
                st.executors
                    .entry(o.executor_id.clone())
                    .or_insert_with(|| ExecutorEntry::new(0, o.shuffle_addr.clone()));
            }
        }
        match job.state {
            JobState::Running => {
                for (i, t) in job.maps.iter().enumerate() {
                    if t.state == TaskState::Pending {
                        st.scheduler.enqueue(QueuedTask {
                            job_id: job.id.clone(),
                            speculative: false,
                            task: TaskId::map(i as u32),
                        });
                    }
                }
                if job.maps_complete() {
                    State::start_reduces(&mut job, st.scheduler.as_mut());
                }
            }
            JobState::Committing => commits.push(job.id.clone()),
            _ => {}
        }
        tracing::info!(job_id = %job.id, state = %job.state, "job restored");
        st.jobs.insert(job.id.clone(), job);
    }
    st.next_executor = st.next_executor.max(highest + 1);
    commits
}

/// How a split is known across jobs (for cache placement).
pub(crate) fn split_key(s: &Split) -> String {
    format!("{s:?}")
}

/// The GPUs task `q` needs: its job's [`sluice_core::GPUS_PARAM`] for a map, none for a reduce.
pub(crate) fn task_gpus(jobs: &BTreeMap<String, Job>, q: &QueuedTask) -> u32 {
    if q.task.kind != TaskKind::Map {
        return 0;
    }
    jobs.get(&q.job_id)
        .and_then(|j| sluice_core::map_gpus(&j.spec.params).ok())
        .unwrap_or(0)
}

/// Whether executor `executor_id` should take task `q` now. An excluded executor takes nothing,
/// and a task does not go back to an executor where it failed, as long as another live executor
/// could take it instead (so a one-executor cluster still runs everything).
pub(crate) fn may_run(
    jobs: &BTreeMap<String, Job>,
    executors: &HashMap<String, ExecutorEntry>,
    affinity: &HashMap<String, String>,
    q: &QueuedTask,
    executor_id: &str,
) -> bool {
    let now = Instant::now();
    // The executors that could run this task instead: live, not excluded, with its GPUs.
    let gpus = task_gpus(jobs, q);
    let usable = || {
        executors
            .iter()
            .filter(move |(_, e)| e.slots > 0 && !e.excluded(now) && e.gpus >= gpus)
            .map(|(id, _)| id)
    };
    if executors.get(executor_id).is_some_and(|e| e.excluded(now))
        && usable().any(|id| id != executor_id)
    {
        return false;
    }
    let entry = jobs.get(&q.job_id).and_then(|j| match q.task.kind {
        TaskKind::Map => j.maps.get(q.task.index as usize),
        TaskKind::Reduce => j.reduces.get(q.task.index as usize),
    });
    // A cached split goes back to the executor that holds it, while that one is usable.
    let job = jobs.get(&q.job_id);
    if q.task.kind == TaskKind::Map
        && !q.speculative
        && job.is_some_and(|j| j.spec.params.get(CACHE_PARAM).is_some_and(|v| v == "true"))
    {
        let holder = job
            .and_then(|j| j.splits.get(q.task.index as usize))
            .and_then(|sp| affinity.get(&split_key(sp)));
        if let Some(h) = holder {
            if h != executor_id && usable().any(|id| id == h) {
                return false;
            }
        }
    }
    // A speculative copy never runs beside its original on the same (slow) executor.
    if q.speculative && entry.is_some_and(|t| t.live_executors().any(|e| e == executor_id)) {
        return false;
    }
    match entry.map(|t| &t.failed_on) {
        Some(f) if f.contains(executor_id) => !usable().any(|id| !f.contains(id)),
        _ => true,
    }
}

/// Everything the coordinator knows, behind one lock.
pub(crate) struct State {
    pub jobs: BTreeMap<String, Job>,
    pub executors: HashMap<String, ExecutorEntry>,
    pub scheduler: Box<dyn Scheduler>,
    pub next_executor: u64,
    /// Outputs of jobs being planned (not yet in `jobs`), so two submits cannot share one.
    pub planning_outputs: HashSet<String>,
    /// Which executor last mapped each split of a caching job (`sluice.cache=true`): it holds
    /// the decoded split, so the next job's map of it goes there.
    pub affinity: HashMap<String, String>,
}

impl State {
    /// The job (or a submit being planned) that writes `output` now, if any.
    pub fn output_in_use(&self, output: &str) -> Option<String> {
        if self.planning_outputs.contains(output) {
            return Some("another job being submitted".to_string());
        }
        self.jobs
            .values()
            .find(|j| !j.state.is_final() && output_key(&j.spec.output) == output)
            .map(|j| format!("job {}", j.id))
    }

    /// The records of jobs changed since the last call, for the store.
    pub fn dirty_records(&mut self) -> Vec<pb::JobRecord> {
        self.jobs
            .values_mut()
            .filter(|j| j.dirty)
            .map(|j| {
                j.dirty = false;
                j.to_record()
            })
            .collect()
    }

    pub fn total_slots(&self) -> u32 {
        self.executors.values().map(|e| e.slots).sum()
    }

    /// Starts pending jobs once there are slots to size their reduce stage by.
    pub fn start_pending(&mut self) {
        let slots = self.total_slots();
        if slots == 0 {
            return;
        }
        let pending: Vec<String> = self
            .jobs
            .values()
            .filter(|j| j.state == JobState::Pending)
            .map(|j| j.id.clone())
            .collect();
        for id in pending {
            let Some(job) = self.jobs.get_mut(&id) else {
                continue;
            };
            job.reducers = job.spec.reducers.unwrap_or(2 * slots).max(1);
            if let Some(sample) = job.range_sample.take() {
                let bounds = sluice_core::range::quantiles(&sample, job.reducers);
                job.spec.params.insert(
                    sluice_core::range::RANGE_BOUNDS_PARAM.to_string(),
                    sluice_core::range::encode_bounds(&bounds),
                );
            }
            job.reduces = (0..job.reducers).map(|_| TaskEntry::new()).collect();
            let _ = job.state.transition(JobState::Running);
            let _ = job.map_stage.transition(StageState::Running);
            for i in 0..job.maps.len() as u32 {
                self.scheduler.enqueue(QueuedTask {
                    job_id: id.clone(),
                    speculative: false,
                    task: TaskId {
                        kind: TaskKind::Map,
                        index: i,
                    },
                });
            }
            if job.maps.is_empty() {
                Self::start_reduces(job, self.scheduler.as_mut());
            }
            job.bump();
        }
    }

    /// Called when every map output is available: queues the reduces that wait for them
    /// (all of them the first time; after a recompute, those sent back to pending).
    pub fn start_reduces(job: &mut Job, scheduler: &mut dyn Scheduler) {
        let _ = job.map_stage.transition(StageState::Done);
        let _ = job.reduce_stage.transition(StageState::Running);
        for (i, t) in job.reduces.iter().enumerate() {
            if t.state == TaskState::Pending {
                scheduler.enqueue(QueuedTask {
                    job_id: job.id.clone(),
                    speculative: false,
                    task: TaskId {
                        kind: TaskKind::Reduce,
                        index: i as u32,
                    },
                });
            }
        }
    }

    /// Queues a second attempt of each straggler (Spark's speculation): once most of a stage
    /// has finished (`SPECULATION_QUANTILE`) or every task left in it is running (its tail), a
    /// task whose only attempt has run longer than `SPECULATION_MULTIPLIER` times the median
    /// of the stage's finished attempts (and at least `SPECULATION_MIN`) gets a copy on another
    /// executor. The first to finish counts; the other's result is ignored.
    pub fn speculate(&mut self, now: Instant) -> usize {
        let mut queued = 0;
        for job in self.jobs.values_mut() {
            if job.state != JobState::Running {
                continue;
            }
            let stages = [
                (TaskKind::Map, job.map_stage == StageState::Running),
                (TaskKind::Reduce, job.reduce_stage == StageState::Running),
            ];
            for (kind, running) in stages {
                if !running {
                    continue;
                }
                let tasks = match kind {
                    TaskKind::Map => &mut job.maps,
                    TaskKind::Reduce => &mut job.reduces,
                };
                let mut took: Vec<std::time::Duration> = tasks
                    .iter()
                    .filter(|t| t.state == TaskState::Succeeded)
                    .flat_map(|t| &t.history)
                    .filter(|a| a.outcome == Outcome::Succeeded)
                    .filter_map(|a| a.ended.map(|e| e.duration_since(a.started)))
                    .collect();
                if took.is_empty() {
                    continue;
                }
                took.sort();
                let median = took[took.len() / 2];
                let done = tasks
                    .iter()
                    .filter(|t| t.state == TaskState::Succeeded)
                    .count();
                let pending = tasks.iter().any(|t| t.state == TaskState::Pending);
                if (done as f64) < SPECULATION_QUANTILE * tasks.len() as f64 && pending {
                    continue;
                }
                let slow = median.mul_f64(SPECULATION_MULTIPLIER).max(SPECULATION_MIN);
                for (i, t) in tasks.iter_mut().enumerate() {
                    let straggling = t.state == TaskState::Running
                        && !t.speculated
                        && t.live.len() == 1
                        && t.history.last().is_some_and(|a| {
                            a.outcome == Outcome::Running && now.duration_since(a.started) > slow
                        });
                    if straggling {
                        t.speculated = true;
                        self.scheduler.enqueue(QueuedTask {
                            job_id: job.id.clone(),
                            task: TaskId {
                                kind,
                                index: i as u32,
                            },
                            speculative: true,
                        });
                        queued += 1;
                    }
                }
            }
        }
        queued
    }

    /// Builds the assignment for a dequeued task and marks it running on `executor_id`.
    pub fn assign(&mut self, q: &QueuedTask, executor_id: &str) -> Option<pb::TaskAssignment> {
        let job = self.jobs.get_mut(&q.job_id)?;
        if job.state != JobState::Running {
            return None;
        }
        let spec = (&job.spec).into();
        let reducers = job.reducers;
        let split = match q.task.kind {
            TaskKind::Map => job.splits.get(q.task.index as usize).map(Into::into),
            TaskKind::Reduce => None,
        };
        let map_outputs = match q.task.kind {
            TaskKind::Map => Vec::new(),
            // A reduce runs only over every map output; it is queued again once lost ones
            // have been recomputed.
            TaskKind::Reduce => job
                .map_outputs
                .iter()
                .cloned()
                .collect::<Option<Vec<_>>>()?,
        };
        let job_id = job.id.clone();
        let t = job.task_mut(q.task)?;
        if q.speculative {
            // The copy runs only while the original still does, alone.
            if t.state != TaskState::Running || t.live.len() != 1 {
                return None;
            }
        } else {
            t.state.transition(TaskState::Running).ok()?;
        }
        t.attempts += 1;
        t.executor = Some(executor_id.to_string());
        let attempt = t.attempts;
        t.live.insert(attempt);
        t.history.push(AttemptRecord {
            attempt,
            executor: executor_id.to_string(),
            outcome: Outcome::Running,
            error: String::new(),
            speculative: q.speculative,
            started: Instant::now(),
            ended: None,
        });
        job.bump();
        if let Some(e) = self.executors.get_mut(executor_id) {
            e.running.insert((job_id.clone(), q.task, attempt));
        }
        Some(pb::TaskAssignment {
            job_id,
            kind: q.task.kind.as_str().to_string(),
            index: q.task.index,
            attempt,
            spec: Some(spec),
            num_reducers: reducers,
            split,
            map_outputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn spec() -> JobSpec {
        JobSpec {
            job: "wordcount".into(),
            inputs: vec!["in".into()],
            output: "out".into(),
            format: Default::default(),
            input_format: Default::default(),
            split_size: 1 << 20,
            reducers: None,
            overwrite: false,
            params: BTreeMap::new(),
            binary: None,
        }
    }

    #[test]
    fn an_executor_failing_repeatedly_is_excluded_for_a_while() {
        let mut e = ExecutorEntry::new(1, String::new());
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        assert!(!e.note_failure(t0, hour));
        assert!(!e.note_failure(t0 + Duration::from_secs(1), hour));
        assert!(e.note_failure(t0 + Duration::from_secs(2), hour));
        assert!(e.excluded(t0 + Duration::from_secs(3)));
        assert!(!e.excluded(t0 + hour + Duration::from_secs(3)));
        // Failures spread wider than the window do not add up.
        let mut e = ExecutorEntry::new(1, String::new());
        for i in 0..5 {
            assert!(!e.note_failure(t0 + EXCLUDE_WINDOW * (i + 1) * 2, hour));
        }
    }

    #[test]
    fn a_task_avoids_executors_it_failed_on_unless_none_other_is_left() {
        let mut jobs = BTreeMap::new();
        let mut job = Job::new("j".into(), spec(), vec![Split::default(); 2]);
        job.maps[0].failed_on.insert("e1".into());
        jobs.insert("j".to_string(), job);
        let mut executors = HashMap::new();
        executors.insert("e1".to_string(), ExecutorEntry::new(1, String::new()));
        let q = |i| QueuedTask {
            job_id: "j".into(),
            speculative: false,
            task: TaskId::map(i),
        };
        // Alone, e1 runs it anyway.
        assert!(may_run(&jobs, &executors, &HashMap::new(), &q(0), "e1"));
        executors.insert("e2".to_string(), ExecutorEntry::new(1, String::new()));
        assert!(!may_run(&jobs, &executors, &HashMap::new(), &q(0), "e1"));
        assert!(may_run(&jobs, &executors, &HashMap::new(), &q(0), "e2"));
        assert!(may_run(&jobs, &executors, &HashMap::new(), &q(1), "e1"));
        // An excluded executor takes nothing while another can.
        executors.get_mut("e2").unwrap().excluded_until =
            Some(Instant::now() + Duration::from_secs(60));
        assert!(!may_run(&jobs, &executors, &HashMap::new(), &q(1), "e2"));
        // Once e2 is excluded, e1 is the only usable one and gets the task back.
        assert!(may_run(&jobs, &executors, &HashMap::new(), &q(0), "e1"));
    }

    #[test]
    fn a_cached_split_goes_back_to_its_holder_while_it_is_usable() {
        let mut spec = spec();
        spec.params.insert(CACHE_PARAM.into(), "true".into());
        let split = Split {
            path: "a.parquet".into(),
            ..Default::default()
        };
        let mut jobs = BTreeMap::new();
        jobs.insert(
            "j".to_string(),
            Job::new("j".into(), spec, vec![split.clone()]),
        );
        let mut executors = HashMap::new();
        for e in ["e1", "e2"] {
            executors.insert(e.to_string(), ExecutorEntry::new(1, String::new()));
        }
        let affinity = HashMap::from([(split_key(&split), "e2".to_string())]);
        let q = QueuedTask {
            job_id: "j".into(),
            speculative: false,
            task: TaskId::map(0),
        };
        assert!(!may_run(&jobs, &executors, &affinity, &q, "e1"));
        assert!(may_run(&jobs, &executors, &affinity, &q, "e2"));
        // The holder gone: anyone.
        executors.remove("e2");
        assert!(may_run(&jobs, &executors, &affinity, &q, "e1"));
    }
}
