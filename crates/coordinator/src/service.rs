//! The coordinator's gRPC services (jobs API for clients, control API for executors).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sluice_core::config::CoordinatorConfig;
use sluice_core::range::RANGE_KEY_BYTES_PARAM;
use sluice_core::{
    FailureKind, InputFormat, JobId, JobSpec, JobState, TaskId, TaskKind, TaskState,
    MAX_ATTEMPTS_PARAM,
};
use sluice_rpc::pb::control_server::{Control, ControlServer};
use sluice_rpc::pb::jobs_server::{Jobs, JobsServer};
use sluice_rpc::pb::{self, *};
use sluice_storage::{
    list_inputs, plan_arrow_splits, plan_parquet_splits, plan_splits, sample_line_keys,
    whole_file_splits, Filter, Manifest, ManifestFile, OutputCommitter, BAD_RECORDS_DIR,
    WHERE_PARAM,
};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::binaries::BinaryStore;
use crate::durable::Store;
use crate::scheduler::{FifoScheduler, QueuedTask, Scheduler};
use crate::state::{may_run, output_key, restore, task_gpus, ExecutorEntry, Job, Outcome, State};
use crate::CoordinatorError;

/// Final jobs reported to executors so they can delete shuffle files.
const FINISHED_JOBS_REPORTED: usize = 64;

struct Inner {
    cfg: CoordinatorConfig,
    binaries: BinaryStore,
    state: Mutex<State>,
    tasks_ready: Notify,
    /// Job records and the next executor number, durable across restarts.
    store: Store,
    /// Jobs restored in the middle of their commit: committed again once serving.
    resume_commits: Mutex<Vec<String>>,
}

/// The coordinator: cheap to clone, shared by both gRPC services.
#[derive(Clone)]
pub struct Coordinator {
    inner: Arc<Inner>,
}

impl Coordinator {
    /// A coordinator with the FIFO scheduler.
    pub fn new(cfg: CoordinatorConfig) -> Result<Self, CoordinatorError> {
        Self::with_scheduler(cfg, Box::<FifoScheduler>::default())
    }

    /// A coordinator with the given scheduling policy.
    pub fn with_scheduler(
        cfg: CoordinatorConfig,
        scheduler: Box<dyn Scheduler>,
    ) -> Result<Self, CoordinatorError> {
        let jobs_dir = cfg.state_dir.join("jobs");
        std::fs::create_dir_all(&jobs_dir).map_err(|source| CoordinatorError::Io {
            op: "creating state directory",
            path: jobs_dir,
            source,
        })?;
        let store = Store::open(&cfg.state_dir)?;
        let mut state = State {
            jobs: BTreeMap::new(),
            executors: HashMap::new(),
            scheduler,
            next_executor: store.load_meta()?.next_executor.max(1),
            planning_outputs: HashSet::new(),
            affinity: HashMap::new(),
        };
        let resume_commits = restore(&mut state, store.load_jobs()?);
        Ok(Coordinator {
            inner: Arc::new(Inner {
                binaries: BinaryStore::new(&cfg.state_dir),
                cfg,
                state: Mutex::new(state),
                tasks_ready: Notify::new(),
                store,
                resume_commits: Mutex::new(resume_commits),
            }),
        })
    }

    /// Writes the records of the jobs changed since the last write, in one durable
    /// transaction; called before answering the request that changed them.
    fn persist(&self) {
        let records = self.lock().dirty_records();
        if let Err(e) = self.inner.store.save_jobs(&records) {
            warn!(error = %e, "cannot write job state; a restart would resume from older state");
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Plans and queues a job; input and output problems are refused before anything is written.
    pub async fn submit_job(&self, spec: JobSpec) -> Result<String, CoordinatorError> {
        let invalid = |reason: String| CoordinatorError::InvalidJob {
            job: spec.job.clone(),
            reason,
        };
        if spec.inputs.is_empty() {
            return Err(invalid("no input given; pass --input PATH".into()));
        }
        if spec.output.is_empty() {
            return Err(invalid("no output given; pass --output DIR".into()));
        }
        if let Some(sha) = &spec.binary {
            let present = self.inner.binaries.path(sha).is_some_and(|p| p.exists());
            if !present {
                return Err(invalid(format!(
                    "job binary {sha} was not uploaded to this coordinator; submit with --binary PATH"
                )));
            }
        }
        let gpus = sluice_core::map_gpus(&spec.params).map_err(invalid)?;
        let key = output_key(&spec.output);
        {
            let mut st = self.lock();
            // A GPU job no executor can run would wait for ever: say so now instead.
            if gpus > 0 && !st.executors.values().any(|e| e.slots > 0 && e.gpus >= gpus) {
                let have = st
                    .executors
                    .values()
                    .filter(|e| e.slots > 0)
                    .map(|e| e.gpus)
                    .max();
                return Err(invalid(format!(
                    "its map tasks ask for {gpus} GPU(s) each ({}), but {}; start executors on GPU machines (or give --gpus N to executors that have them)",
                    sluice_core::GPUS_PARAM,
                    match have {
                        None => "no executor is registered".to_string(),
                        Some(n) => format!("the registered executors have at most {n}"),
                    }
                )));
            }
            if let Some(user) = st.output_in_use(&key) {
                return Err(invalid(format!(
                    "output '{}' is being written by {user}; wait for it to finish or choose another --output",
                    spec.output
                )));
            }
            st.planning_outputs.insert(key.clone());
        }
        let s = spec.clone();
        let planned = tokio::task::spawn_blocking(move || {
            let files = list_inputs(&s.inputs)?;
            let committer = OutputCommitter::open(&s.output)?;
            committer.check(s.overwrite)?;
            // CSV is read a whole file per split, since a quoted field may hold a newline,
            // unless the job promises `sluice.csv.multiline=false` (see `whole_file_splits`);
            // files with a header line per file are never combined.
            let csv_lines = s
                .params
                .get(sluice_core::CSV_MULTILINE_PARAM)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
            let filter = Filter::from_params(|k| s.params.get(k).map(String::as_str))
                .map_err(|reason| sluice_storage::StorageError::Filter { reason })?;
            if filter.is_some() && s.input_format.is_line_based() {
                return Err(sluice_storage::StorageError::Filter {
                    reason: format!(
                        "--param {WHERE_PARAM} filters Parquet and Arrow input only; this job reads {}",
                        s.input_format.as_str()
                    ),
                });
            }
            // Parquet footers are read here: a corrupt file fails the submit, naming it.
            let splits = match s.input_format {
                InputFormat::Csv { header } if csv_lines => {
                    plan_splits(&files, s.split_size, !header)
                }
                InputFormat::Csv { .. } => whole_file_splits(&files),
                InputFormat::Parquet => plan_parquet_splits(&files, s.split_size, filter.as_ref())?,
                InputFormat::Arrow => plan_arrow_splits(&files, s.split_size, filter.as_ref())?,
                InputFormat::Text | InputFormat::Jsonl => plan_splits(&files, s.split_size, true),
            };
            // A sorting job's keys are sampled now; the boundaries follow once the number of
            // reducers is known (when the job starts).
            let sample = match s.params.get(RANGE_KEY_BYTES_PARAM) {
                None => None,
                Some(n) => {
                    let bad = |reason: String| sluice_storage::StorageError::Param { reason };
                    let n = sluice_core::range::key_bytes(Some(n)).map_err(|e| bad(e.to_string()))?;
                    if !s.input_format.is_line_based() {
                        return Err(bad(format!(
                            "{RANGE_KEY_BYTES_PARAM} range-partitions lines of text input; this job reads {}",
                            s.input_format.as_str()
                        )));
                    }
                    Some(sample_line_keys(&splits, n)?)
                }
            };
            committer.setup_job(s.overwrite)?;
            Ok::<_, sluice_storage::StorageError>((splits, sample))
        })
        .await
        .map_err(|e| invalid(format!("planning failed: {e}")))
        .and_then(|r| r.map_err(|e| invalid(e.to_string())));
        let (splits, sample) = match planned {
            Ok(s) => s,
            Err(e) => {
                self.lock().planning_outputs.remove(&key);
                return Err(e);
            }
        };
        let id = JobId::generate().0;
        info!(job_id = %id, job = %spec.job, splits = splits.len(), "job submitted");
        let mut st = self.lock();
        st.planning_outputs.remove(&key);
        st.jobs.insert(
            id.clone(),
            Job::new(id.clone(), spec, splits).with_range_sample(sample),
        );
        st.start_pending();
        drop(st);
        self.persist();
        self.inner.tasks_ready.notify_waiters();
        Ok(id)
    }

    fn status_of(&self, job_id: &str, tasks: bool) -> Result<pb::JobStatus, Status> {
        self.lock()
            .jobs
            .get(job_id)
            .map(|j| j.status(tasks))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no job '{job_id}' on this coordinator; `sluice jobs` lists them"
                ))
            })
    }

    /// Runs the job commit off the lock, then records the outcome.
    fn commit_job(&self, job_id: String) {
        let this = self.clone();
        tokio::spawn(async move {
            let (committer, manifest) = {
                let st = this.lock();
                let Some(job) = st.jobs.get(&job_id) else {
                    return;
                };
                let committer = OutputCommitter::open(&job.spec.output);
                // Paths relative to the output (`COL=VALUE/part-…` when partitioned).
                let relative = |p: &str| match &committer {
                    Ok(c) => c.relative(p),
                    Err(_) => std::path::Path::new(p)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| p.to_string()),
                };
                let (bad_records, files): (Vec<ManifestFile>, Vec<ManifestFile>) = job
                    .files
                    .iter()
                    .map(|f| ManifestFile {
                        path: relative(&f.path),
                        rows: f.rows,
                        bytes: f.bytes,
                    })
                    .partition(|f| f.path.starts_with(&format!("{BAD_RECORDS_DIR}/")));
                let manifest = Manifest {
                    job_id: job.id.clone(),
                    job: job.spec.job.clone(),
                    format: job.spec.format.as_str().to_string(),
                    rows: files.iter().map(|f| f.rows).sum(),
                    bytes: files.iter().map(|f| f.bytes).sum(),
                    files,
                    bad_records,
                };
                (committer, manifest)
            };
            let res = tokio::task::spawn_blocking(move || committer?.commit_job(&manifest)).await;
            let outcome = match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("job commit failed: {e}")),
                Err(e) => Err(format!("job commit failed: {e}")),
            };
            let record = {
                let mut st = this.lock();
                let Some(job) = st.jobs.get_mut(&job_id) else {
                    return;
                };
                match outcome {
                    Ok(()) => job.finish(JobState::Succeeded, None),
                    Err(e) => job.finish(JobState::Failed, Some(e)),
                }
                info!(job_id = %job_id, state = %job.state, "job finished");
                job.status(true)
            };
            this.persist();
            this.write_record(record).await;
        });
    }

    /// Fails a job: drops its queued tasks and removes its temporary output.
    fn fail_job(&self, st: &mut State, job_id: &str, state: JobState, error: Option<String>) {
        st.scheduler.remove_job(job_id);
        let Some(job) = st.jobs.get_mut(job_id) else {
            return;
        };
        if job.state.is_final() {
            return;
        }
        // Clean up before the job reads as final, so nobody sees a failed job's leftovers.
        // Only this job's files go (its `_temporary/JOB`, its uploads, parts named with its
        // id), so it cannot touch a later job's. Object-store requests cannot run under the
        // state lock on the reactor: those go to a blocking thread and finish a moment later.
        match OutputCommitter::open(&job.spec.output) {
            Ok(c) if c.is_object_store() => {
                let id = job_id.to_string();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = c.abort_job(&id) {
                        warn!(job_id = %id, error = %e, "cannot remove temporary output");
                    }
                });
            }
            Ok(c) => {
                if let Err(e) = c.abort_job(job_id) {
                    warn!(job_id, error = %e, "cannot remove temporary output");
                }
            }
            Err(e) => warn!(job_id, error = %e, "cannot remove temporary output"),
        }
        job.finish(state, error.clone());
        warn!(job_id, state = %job.state, error = error.as_deref().unwrap_or(""), "job ended");
        let record = job.status(true);
        let this = self.clone();
        tokio::spawn(async move { this.write_record(record).await });
    }

    /// Keeps a JSON record of every finished job in the state directory.
    async fn write_record(&self, status: pb::JobStatus) {
        let path = self
            .inner
            .cfg
            .state_dir
            .join("jobs")
            .join(format!("{}.json", status.job_id));
        let spec = status.spec.clone().unwrap_or_default();
        let stats = status.stats.unwrap_or_default();
        let rec = serde_json::json!({
            "job_id": status.job_id, "job": spec.job, "inputs": spec.inputs, "output": spec.output,
            "state": status.state, "error": status.error, "maps": status.maps_total,
            "reduces": status.reduces_total, "elapsed_s": status.elapsed_s,
            "bytes_read": stats.bytes_read, "records_in": stats.records_in,
            "records_out": stats.records_out, "bytes_out": stats.bytes_out,
        });
        if let Err(e) = tokio::fs::write(&path, rec.to_string()).await {
            warn!(path = %path.display(), error = %e, "cannot write job record");
        }
    }

    /// Declares executors silent past the timeout lost and requeues their running tasks.
    pub fn reap_lost_executors(&self) {
        let timeout = self.inner.cfg.executor_timeout;
        let mut st = self.lock();
        let lost: Vec<String> = st
            .executors
            .iter()
            .filter(|(_, e)| e.last_seen.elapsed() > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in lost {
            let Some(e) = st.executors.remove(&id) else {
                continue;
            };
            warn!(executor_id = %id, running = e.running.len(), "executor lost");
            let state = &mut *st;
            for job in state.jobs.values_mut() {
                if job.state != JobState::Running
                    || job.reduce_stage == sluice_core::StageState::Done
                {
                    continue;
                }
                let lost: Vec<usize> = job
                    .map_outputs
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.as_ref().is_some_and(|o| o.executor_id == id))
                    .map(|(m, _)| m)
                    .collect();
                for m in lost {
                    job.lose_map_output(m, state.scheduler.as_mut());
                }
            }
            for (job_id, task, attempt) in e.running {
                self.requeue_or_fail(
                    &mut st,
                    &job_id,
                    task,
                    attempt,
                    format!("executor {id} was lost"),
                    FailureKind::ExecutorLost,
                );
            }
        }
        drop(st);
        self.inner.tasks_ready.notify_waiters();
    }

    /// An executor registering again says which map outputs it still holds: recorded outputs
    /// there that it does not hold are recomputed; those it holds are found at its (possibly
    /// new) shuffle address.
    fn check_held_outputs(&self, st: &mut State, id: &str, r: &RegisterRequest) {
        let held: HashSet<(&str, u32, u32)> = r
            .held_outputs
            .iter()
            .map(|h| (h.job_id.as_str(), h.map_index, h.attempt))
            .collect();
        let state = &mut *st;
        for job in state.jobs.values_mut() {
            if job.state != JobState::Running {
                continue;
            }
            let mut lost = Vec::new();
            let mut moved = false;
            for (m, o) in job.map_outputs.iter_mut().enumerate() {
                let Some(o) = o.as_mut().filter(|o| o.executor_id == id) else {
                    continue;
                };
                if !held.contains(&(job.id.as_str(), m as u32, o.attempt)) {
                    lost.push(m);
                } else if o.shuffle_addr != r.shuffle_addr {
                    o.shuffle_addr = r.shuffle_addr.clone();
                    moved = true;
                }
            }
            if !lost.is_empty() {
                warn!(job_id = %job.id, executor_id = id, maps = ?lost, "map outputs gone from a re-registered executor; recomputing them");
            }
            // lose_map_output marks the job changed; a moved address is durable state too.
            for m in lost {
                job.lose_map_output(m, state.scheduler.as_mut());
            }
            if moved {
                job.bump();
            }
        }
    }

    /// Queues speculative copies of stragglers, waking executors that wait for tasks.
    pub fn speculate(&self) {
        let queued = self.lock().speculate(Instant::now());
        if queued > 0 {
            info!(queued, "speculative copies of straggling tasks queued");
            self.inner.tasks_ready.notify_waiters();
        }
    }

    /// A reduce could not fetch some map outputs: recompute them (Spark's FetchFailed) and
    /// send the reduce back to pending; it runs again once every output exists. This does not
    /// count against the reduce's attempts, up to a bound that stops a job looping forever.
    fn fetch_failed(&self, st: &mut State, r: &TaskReport, task: TaskId) {
        let max = self.inner.cfg.max_task_attempts;
        let Some(job) = st.jobs.get_mut(&r.job_id) else {
            return;
        };
        if job.state != JobState::Running {
            return;
        }
        let Some(t) = job.task_mut(task) else { return };
        if !t.is_live(r.attempt) {
            return;
        }
        t.live.remove(&r.attempt);
        t.fetch_failures += 1;
        t.error = Some(r.error.clone());
        t.record(
            r.attempt,
            Outcome::Failed(FailureKind::LostOutput),
            &r.error,
        );
        if t.fetch_failures > 2 * max {
            let _ = t.state.transition(TaskState::Failed);
            let msg = format!(
                "task {task} could not fetch map outputs {} times: {}",
                t.fetch_failures, r.error
            );
            self.fail_job(st, &r.job_id, JobState::Failed, Some(msg));
            return;
        }
        // With a speculative copy still running, the task stays with it; the outputs are
        // recomputed either way.
        if t.live.is_empty() {
            let _ = t.state.transition(TaskState::Pending);
        }
        let maps: Vec<u32> = r.lost_outputs.iter().map(|l| l.map_index).collect();
        warn!(job_id = %r.job_id, %task, ?maps, "map outputs lost; recomputing them");
        for l in &r.lost_outputs {
            // Several reduces report one loss: only the output they were given is lost, not
            // one recomputed since.
            let m = l.map_index as usize;
            let current = job.map_outputs.get(m).and_then(|o| o.as_ref());
            if current.is_some_and(|o| o.attempt == l.attempt) {
                job.lose_map_output(m, st.scheduler.as_mut());
            }
        }
        if job.maps_complete() {
            // Every lost output was recomputed already: run the reduce again now (a reduce
            // still running is not queued twice: only pending ones are).
            State::start_reduces(job, st.scheduler.as_mut());
        }
        job.bump();
    }

    /// Decides on a failed attempt by its kind: a permanent failure fails the job at once;
    /// retryable and out-of-memory ones run again (elsewhere where possible) until the task has
    /// used its attempts; an executor loss or cancellation runs again without counting.
    fn requeue_or_fail(
        &self,
        st: &mut State,
        job_id: &str,
        task: TaskId,
        attempt: u32,
        error: String,
        kind: FailureKind,
    ) {
        let default_max = self.inner.cfg.max_task_attempts;
        let exclude_for = self.inner.cfg.exclude_for;
        let Some(job) = st.jobs.get_mut(job_id) else {
            return;
        };
        if job.state.is_final() {
            return;
        }
        let max = job
            .spec
            .params
            .get(MAX_ATTEMPTS_PARAM)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(default_max);
        let split = match task.kind {
            TaskKind::Map => job
                .splits
                .get(task.index as usize)
                .map(|s| format!(" (split {s})")),
            TaskKind::Reduce => None,
        }
        .unwrap_or_default();
        let Some(t) = job.task_mut(task) else { return };
        if !t.is_live(attempt) {
            return;
        }
        t.live.remove(&attempt);
        t.error = Some(error.clone());
        t.record(attempt, Outcome::Failed(kind), &error);
        let executor = t
            .history
            .iter()
            .rev()
            .find(|a| a.attempt == attempt)
            .map(|a| a.executor.clone())
            .unwrap_or_default();
        if kind.counts_as_attempt() {
            t.counted_failures += 1;
            t.failed_on.insert(executor.clone());
        }
        let again = match kind {
            FailureKind::Permanent => false,
            FailureKind::Retryable | FailureKind::OutOfMemory => t.counted_failures < max,
            FailureKind::LostOutput | FailureKind::Cancelled | FailureKind::ExecutorLost => true,
        };
        if again && !t.live.is_empty() {
            // Another attempt (the straggler or its copy) still runs: it carries the task.
            job.bump();
        } else if again {
            let _ = t.state.transition(TaskState::Pending);
            t.commit_attempt = None;
            job.bump();
            st.scheduler.enqueue(QueuedTask {
                job_id: job_id.to_string(),
                speculative: false,
                task,
            });
        } else {
            let _ = t.state.transition(TaskState::Failed);
            let n = t.counted_failures;
            let how = if kind == FailureKind::Permanent {
                format!("failed with a permanent error (not retried) after {n} attempt(s)")
            } else {
                format!("failed after {n} attempt(s) (max_attempts {max})")
            };
            let msg = format!("task {task}{split} {how}: {}", t.attempts_summary());
            self.fail_job(st, job_id, JobState::Failed, Some(msg));
        }
        // An executor that keeps failing tasks gets none for a while; the input's own
        // problems (permanent failures) do not count against it.
        if matches!(kind, FailureKind::Retryable | FailureKind::OutOfMemory) {
            if let Some(e) = st.executors.get_mut(&executor) {
                if e.note_failure(Instant::now(), exclude_for) {
                    warn!(executor_id = %executor, for_s = exclude_for.as_secs(), "executor excluded after repeated task failures");
                }
            }
        }
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<pb::JobStatus, Status>> + Send>>;

#[tonic::async_trait]
impl Jobs for Coordinator {
    async fn submit(
        &self,
        req: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobResponse>, Status> {
        let spec = req
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("missing job spec"))?;
        let spec = JobSpec::try_from(&spec).map_err(|e| Status::invalid_argument(e.to_string()))?;
        match self.submit_job(spec).await {
            Ok(job_id) => Ok(Response::new(SubmitJobResponse { job_id })),
            Err(e) => Err(Status::invalid_argument(e.to_string())),
        }
    }

    async fn get_job(
        &self,
        req: Request<GetJobRequest>,
    ) -> Result<Response<pb::JobStatus>, Status> {
        let r = req.into_inner();
        Ok(Response::new(self.status_of(&r.job_id, r.include_tasks)?))
    }

    async fn list_jobs(
        &self,
        _req: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        let jobs = self.lock().jobs.values().map(|j| j.status(false)).collect();
        Ok(Response::new(ListJobsResponse { jobs }))
    }

    async fn cancel_job(
        &self,
        req: Request<CancelJobRequest>,
    ) -> Result<Response<CancelJobResponse>, Status> {
        let id = req.into_inner().job_id;
        let mut st = self.lock();
        let state = st
            .jobs
            .get(&id)
            .map(|j| j.state)
            .ok_or_else(|| Status::not_found(format!("no job '{id}' on this coordinator")))?;
        if !state.is_final() && state != JobState::Committing {
            self.fail_job(
                &mut st,
                &id,
                JobState::Cancelled,
                Some("cancelled by user".into()),
            );
        }
        let state = st
            .jobs
            .get(&id)
            .map(|j| j.state.as_str())
            .unwrap_or("unknown");
        drop(st);
        self.persist();
        Ok(Response::new(CancelJobResponse {
            state: state.to_string(),
        }))
    }

    async fn upload_binary(
        &self,
        req: Request<tonic::Streaming<BinaryChunk>>,
    ) -> Result<Response<UploadBinaryResponse>, Status> {
        let stream = req
            .into_inner()
            .map(|r| r.map(|c| c.data).map_err(|s| s.message().to_string()));
        let (sha256, bytes) = self
            .inner
            .binaries
            .put(stream)
            .await
            .map_err(Status::internal)?;
        info!(%sha256, bytes, "job binary stored");
        Ok(Response::new(UploadBinaryResponse { sha256, bytes }))
    }

    async fn has_binary(
        &self,
        req: Request<HasBinaryRequest>,
    ) -> Result<Response<HasBinaryResponse>, Status> {
        let sha = req.into_inner().sha256;
        let present = self.inner.binaries.path(&sha).is_some_and(|p| p.exists());
        Ok(Response::new(HasBinaryResponse { present }))
    }

    type WatchJobStream = StatusStream;

    async fn watch_job(
        &self,
        req: Request<WatchJobRequest>,
    ) -> Result<Response<StatusStream>, Status> {
        let id = req.into_inner().job_id;
        let mut rx = {
            let st = self.lock();
            let job = st
                .jobs
                .get(&id)
                .ok_or_else(|| Status::not_found(format!("no job '{id}' on this coordinator")))?;
            job.version.subscribe()
        };
        let (tx, out) = tokio::sync::mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok(status) = this.status_of(&id, false) else {
                    return;
                };
                let fin = JobState::parse(&status.state)
                    .map(|s| s.is_final())
                    .unwrap_or(true);
                if tx.send(Ok(status)).await.is_err() || fin {
                    return;
                }
                // Wake on change, or every half second so elapsed time moves.
                let _ = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

#[tonic::async_trait]
impl Control for Coordinator {
    async fn register(
        &self,
        req: Request<RegisterRequest>,
    ) -> Result<Response<RegisterResponse>, Status> {
        let r = req.into_inner();
        if r.slots == 0 {
            return Err(Status::invalid_argument(
                "an executor needs at least one slot",
            ));
        }
        let mut st = self.lock();
        // An executor registering again (this coordinator restarted, or declared it lost)
        // keeps its id unless another holds it, so the map outputs recorded there stay its.
        let again = !r.previous_id.is_empty()
            && st
                .executors
                .get(&r.previous_id)
                .is_none_or(|e| e.slots == 0);
        let id = if again {
            r.previous_id.clone()
        } else {
            let id = format!("exec-{}", st.next_executor);
            st.next_executor += 1;
            id
        };
        info!(executor_id = %id, again, host = %r.host, slots = r.slots, gpus = r.gpus, shuffle = %r.shuffle_addr, "executor registered");
        if again {
            self.check_held_outputs(&mut st, &id, &r);
        }
        let mut entry = ExecutorEntry::new(r.slots, r.shuffle_addr);
        entry.gpus = r.gpus;
        st.executors.insert(id.clone(), entry);
        st.start_pending();
        let meta = pb::CoordinatorRecord {
            next_executor: st.next_executor,
        };
        drop(st);
        if let Err(e) = self.inner.store.save_meta(&meta) {
            warn!(error = %e, "cannot record the next executor number");
        }
        self.persist();
        self.inner.tasks_ready.notify_waiters();
        Ok(Response::new(RegisterResponse { executor_id: id }))
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.lock();
        let Some(e) = st.executors.get_mut(&r.executor_id) else {
            return Ok(Response::new(HeartbeatResponse {
                reregister: true,
                finished_jobs: vec![],
            }));
        };
        e.last_seen = Instant::now();
        // Each job's disk on this executor: what it reports, nothing once it stops reporting.
        let reported: HashSet<String> = r.shuffle_disk_bytes.keys().cloned().collect();
        let gone: Vec<String> = e.disk_jobs.difference(&reported).cloned().collect();
        e.disk_jobs = reported;
        for id in gone {
            if let Some(j) = st.jobs.get_mut(&id) {
                j.disk_bytes.remove(&r.executor_id);
            }
        }
        for (id, bytes) in &r.shuffle_disk_bytes {
            if let Some(j) = st.jobs.get_mut(id) {
                j.disk_bytes.insert(r.executor_id.clone(), *bytes);
            }
        }
        let finished_jobs = st
            .jobs
            .values()
            .rev()
            .filter(|j| j.state.is_final())
            .take(FINISHED_JOBS_REPORTED)
            .map(|j| j.id.clone())
            .collect();
        Ok(Response::new(HeartbeatResponse {
            reregister: false,
            finished_jobs,
        }))
    }

    async fn request_tasks(
        &self,
        req: Request<RequestTasksRequest>,
    ) -> Result<Response<RequestTasksResponse>, Status> {
        let r = req.into_inner();
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(r.wait_ms.min(30_000) as u64);
        loop {
            let notified = self.inner.tasks_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                let Some(e) = st.executors.get_mut(&r.executor_id) else {
                    return Ok(Response::new(RequestTasksResponse {
                        tasks: vec![],
                        reregister: true,
                    }));
                };
                e.last_seen = Instant::now();
                st.start_pending();
                let State {
                    scheduler,
                    jobs,
                    executors,
                    affinity,
                    ..
                } = &mut *st;
                // GPUs are handed out within what the executor says is free, so two tasks
                // given in one poll never count on the same GPU.
                let mut gpus_left = r.free_gpus;
                let queued = scheduler.next(&r.executor_id, r.free_slots as usize, &mut |q| {
                    let need = task_gpus(jobs, q);
                    let ok =
                        need <= gpus_left && may_run(jobs, executors, affinity, q, &r.executor_id);
                    if ok {
                        gpus_left -= need;
                    }
                    ok
                });
                let tasks: Vec<_> = queued
                    .iter()
                    .filter_map(|q| st.assign(q, &r.executor_id))
                    .collect();
                if !tasks.is_empty() {
                    drop(st);
                    // Attempt numbers are durable before any attempt runs, so a restarted
                    // coordinator never hands out one an old executor still uses.
                    self.persist();
                    return Ok(Response::new(RequestTasksResponse {
                        tasks,
                        reregister: false,
                    }));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Response::new(RequestTasksResponse::default()));
            }
        }
    }

    async fn report_task(
        &self,
        req: Request<TaskReport>,
    ) -> Result<Response<ReportTaskResponse>, Status> {
        let res = self.report_task_inner(req.into_inner());
        // The outcome is durable before the executor hears it was taken.
        self.persist();
        res
    }

    type FetchBinaryStream = Pin<Box<dyn Stream<Item = Result<BinaryChunk, Status>> + Send>>;

    async fn fetch_binary(
        &self,
        req: Request<FetchBinaryRequest>,
    ) -> Result<Response<Self::FetchBinaryStream>, Status> {
        let sha = req.into_inner().sha256;
        let path = self
            .inner
            .binaries
            .path(&sha)
            .ok_or_else(|| Status::invalid_argument(format!("'{sha}' is not a SHA-256")))?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| Status::not_found(format!("job binary {sha}: {e}")))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            loop {
                let mut data = vec![0u8; 1 << 20];
                match file.read(&mut data).await {
                    Ok(0) => return,
                    Ok(n) => {
                        data.truncate(n);
                        if tx.send(Ok(BinaryChunk { data })).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn can_commit(
        &self,
        req: Request<CanCommitRequest>,
    ) -> Result<Response<CanCommitResponse>, Status> {
        let r = req.into_inner();
        let mut st = self.lock();
        let allowed = st
            .jobs
            .get_mut(&r.job_id)
            .filter(|j| j.state == JobState::Running)
            .and_then(|j| {
                let tasks = if r.kind == "map" {
                    &mut j.maps
                } else {
                    &mut j.reduces
                };
                tasks.get_mut(r.index as usize)
            })
            .is_some_and(|t| {
                let ok = t.is_live(r.attempt) && t.commit_attempt.is_none_or(|a| a == r.attempt);
                if ok {
                    t.commit_attempt = Some(r.attempt);
                }
                ok
            });
        Ok(Response::new(CanCommitResponse { allowed }))
    }
}

impl Coordinator {
    /// Takes a task report; the caller persists what it changed.
    fn report_task_inner(&self, r: TaskReport) -> Result<Response<ReportTaskResponse>, Status> {
        let kind = TaskKind::parse(&r.kind).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let task = TaskId {
            kind,
            index: r.index,
        };
        let mut st = self.lock();
        let shuffle_addr = st.executors.get_mut(&r.executor_id).map(|e| {
            e.running.remove(&(r.job_id.clone(), task, r.attempt));
            e.last_seen = Instant::now();
            e.shuffle_addr.clone()
        });
        if !r.succeeded && kind == TaskKind::Reduce && !r.lost_outputs.is_empty() {
            self.fetch_failed(&mut st, &r, task);
            drop(st);
            self.inner.tasks_ready.notify_waiters();
            return Ok(Response::new(ReportTaskResponse {}));
        }
        if !r.succeeded {
            warn!(job_id = %r.job_id, %task, attempt = r.attempt, error = %r.error, "task attempt failed");
            let kind = FailureKind::from(r.failure());
            self.requeue_or_fail(&mut st, &r.job_id, task, r.attempt, r.error, kind);
            drop(st);
            self.inner.tasks_ready.notify_waiters();
            return Ok(Response::new(ReportTaskResponse {}));
        }
        let st = &mut *st;
        let Some(job) = st.jobs.get_mut(&r.job_id) else {
            return Ok(Response::new(ReportTaskResponse {}));
        };
        if job.state != JobState::Running {
            return Ok(Response::new(ReportTaskResponse {}));
        }
        let Some(t) = job.task_mut(task) else {
            return Err(Status::invalid_argument(format!(
                "job {} has no task {task}",
                r.job_id
            )));
        };
        if !t.is_live(r.attempt) || t.state.transition(TaskState::Succeeded).is_err() {
            return Ok(Response::new(ReportTaskResponse {})); // a stale attempt
        }
        t.error = None;
        t.live.remove(&r.attempt);
        t.record(r.attempt, Outcome::Succeeded, "");
        // A straggler's other attempt lost the race: its result, if it comes, is ignored.
        for other in std::mem::take(&mut t.live) {
            t.record(other, Outcome::Killed, "another attempt finished first");
        }
        t.stats = r.stats;
        let mut commit = false;
        match kind {
            TaskKind::Map => {
                if job
                    .spec
                    .params
                    .get(sluice_core::CACHE_PARAM)
                    .is_some_and(|v| v == "true")
                {
                    if let Some(sp) = job.splits.get(r.index as usize) {
                        st.affinity
                            .insert(crate::state::split_key(sp), r.executor_id.clone());
                    }
                }
                // The bad records the attempt committed (`_bad_records/`), if any.
                job.files.extend(r.files);
                job.map_outputs[r.index as usize] = Some(MapOutputLocation {
                    map_index: r.index,
                    attempt: r.attempt,
                    executor_id: r.executor_id.clone(),
                    shuffle_addr: shuffle_addr.unwrap_or_default(),
                });
                if job.maps_complete() {
                    State::start_reduces(job, st.scheduler.as_mut());
                }
            }
            TaskKind::Reduce => {
                job.files.extend(r.files);
                if job.reduces.iter().all(|t| t.state == TaskState::Succeeded) {
                    let _ = job.reduce_stage.transition(sluice_core::StageState::Done);
                    let _ = job.state.transition(JobState::Committing);
                    commit = true;
                }
            }
        }
        job.bump();
        let id = job.id.clone();
        if commit {
            self.commit_job(id);
        }
        self.inner.tasks_ready.notify_waiters();
        Ok(Response::new(ReportTaskResponse {}))
    }
}

/// Serves both APIs on `listener` until `shutdown` resolves; reaps lost executors meanwhile.
pub async fn serve(
    coordinator: Coordinator,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    let reaper = {
        let c = coordinator.clone();
        tokio::spawn(async move {
            // Stragglers are looked for 5 times a second (Spark: every 100 ms), lost executors
            // once a second.
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            for n in 0u64.. {
                tick.tick().await;
                if n % 5 == 0 {
                    c.reap_lost_executors();
                }
                c.speculate();
                c.persist();
            }
        })
    };
    let commits = std::mem::take(
        &mut *coordinator
            .inner
            .resume_commits
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    for id in commits {
        info!(job_id = %id, "committing a job restored mid-commit");
        coordinator.commit_job(id);
    }
    let res = tonic::transport::Server::builder()
        .add_service(JobsServer::new(coordinator.clone()))
        .add_service(ControlServer::new(coordinator))
        .serve_with_incoming_shutdown(
            // No Nagle: a response's trailers sent right after its data would otherwise wait
            // for the peer's delayed ACK (40 ms per task, measured in BENCHMARKS.md).
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    reaper.abort();
    Ok(res?)
}
