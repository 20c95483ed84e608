//! Running one task attempt: map or reduce, with user-code panics caught and reported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use sluice_core::{
    FailureKind, InputFormat, OutputFormat, Split, TaskId, TaskKind, TASK_MEMORY_PARAM,
};
use sluice_rpc::pb::{self, CanCommitRequest, MapOutputLocation, TaskAssignment, TaskReport};
use sluice_rpc::{ControlClient, ShuffleClient};
use sluice_shuffle::{fetch_partition, SegmentRef, ShuffleStore};
use sluice_storage::{OutputCommitter, OutputWriter, StorageError, WrittenFile, BAD_RECORDS_DIR};
use sluice_udf::BadRecord;
use sluice_udf::{Counters, Job, Registry};
use sluice_worker::protocol::{Request, Response};
use sluice_worker::{TaskFailure, TaskInfo};

use crate::gpus::{GpuLease, GpuPool};
use crate::workers::SESSION_PREFIX;

use crate::workers::{WorkerError, Workers};
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tracing::{info, warn};

/// Concurrent partition fetches per reduce task.
const FETCH_CONCURRENCY: usize = 8;
/// Tries per partition fetch before the reduce attempt fails.
const FETCH_TRIES: u32 = 3;

/// What every task of this executor shares.
pub(crate) struct TaskEnv {
    pub id: Arc<RwLock<String>>,
    store: ShuffleStore,
    /// Parent of the per-attempt scratch directories.
    scratch_root: PathBuf,
    registry: Registry,
    control: ControlClient<Channel>,
    shuffle_clients: Mutex<HashMap<String, ShuffleClient<Channel>>>,
    /// Worker processes of job binaries.
    pub workers: Arc<Workers>,
    /// Split read buffers kept between map tasks: a fresh 64 MiB buffer per task cost more
    /// in page faults and zeroing than the tokenizing did.
    buffers: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Each task's memory budget when its job sets none: the executor's memory over its slots.
    pub task_memory: u64,
    /// GPUs for tasks that ask for them.
    pub gpus: Arc<GpuPool>,
}

impl TaskEnv {
    pub fn new(
        id: Arc<RwLock<String>>,
        store: ShuffleStore,
        scratch_root: PathBuf,
        registry: Registry,
        control: ControlClient<Channel>,
        workers: Arc<Workers>,
    ) -> Self {
        TaskEnv {
            workers,
            id,
            store,
            scratch_root,
            registry,
            control,
            shuffle_clients: Mutex::new(HashMap::new()),
            buffers: std::sync::Mutex::new(Vec::new()),
            task_memory: u64::MAX,
            gpus: GpuPool::new(0),
        }
    }

    fn take_buffer(&self) -> Vec<u8> {
        self.buffers
            .lock()
            .ok()
            .and_then(|mut b| b.pop())
            .unwrap_or_default()
    }

    fn give_buffer(&self, buf: Vec<u8>) {
        if let Ok(mut b) = self.buffers.lock() {
            b.push(buf);
        }
    }

    fn executor_id(&self) -> String {
        self.id.read().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Why an attempt failed, and whether another attempt could succeed.
#[derive(Debug)]
pub(crate) struct TaskError {
    msg: String,
    kind: FailureKind,
    /// Map outputs that could not be fetched (a reduce's fetch failure).
    lost_maps: Vec<MapOutputLocation>,
}

impl TaskError {
    fn fatal(msg: impl Into<String>) -> Self {
        TaskError {
            msg: msg.into(),
            kind: FailureKind::Permanent,
            lost_maps: Vec::new(),
        }
    }
    fn retry(msg: impl Into<String>) -> Self {
        TaskError {
            msg: msg.into(),
            kind: FailureKind::Retryable,
            lost_maps: Vec::new(),
        }
    }
}

impl From<StorageError> for TaskError {
    fn from(e: StorageError) -> Self {
        TaskFailure::from(e).into()
    }
}

impl From<TaskFailure> for TaskError {
    fn from(f: TaskFailure) -> Self {
        TaskError {
            msg: f.message,
            kind: f.kind,
            lost_maps: Vec::new(),
        }
    }
}

impl From<WorkerError> for TaskError {
    fn from(e: WorkerError) -> Self {
        TaskError {
            msg: e.msg,
            kind: e.kind,
            lost_maps: Vec::new(),
        }
    }
}

impl From<Response> for TaskError {
    fn from(r: Response) -> Self {
        match r {
            Response::Failed { message, kind } => TaskError {
                msg: message,
                kind,
                lost_maps: Vec::new(),
            },
            other => TaskError::fatal(format!("worker answered {other:?} to a different task")),
        }
    }
}

fn lookup(registry: &Registry, name: &str) -> Result<Arc<dyn Job>, TaskError> {
    registry.get(name).ok_or_else(|| {
        TaskError::fatal(format!(
            "unknown job '{name}'; this executor runs: {} (or submit a job binary with --binary)",
            registry.names().join(", ")
        ))
    })
}

/// The worker an assignment's job-binary task runs in: its job's, or its session's.
fn worker_of(a: &TaskAssignment) -> String {
    let session = a
        .spec
        .as_ref()
        .and_then(|s| s.params.get(sluice_core::WORKER_SESSION_PARAM));
    match session {
        Some(s) => format!("{SESSION_PREFIX}{}", sanitize(s)),
        None => a.job_id.clone(),
    }
}

/// Keeps a session name usable as a socket and cgroup name.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// The GPUs an assignment holds until it ends: a map whose job asks for GPUs takes them when it
/// is assigned, before the executor says how many are free in its next poll.
pub(crate) fn gpu_lease(env: &TaskEnv, a: &TaskAssignment) -> Result<Option<GpuLease>, TaskError> {
    if a.kind != "map" {
        return Ok(None);
    }
    let params: std::collections::BTreeMap<String, String> = a
        .spec
        .as_ref()
        .map(|s| s.params.clone().into_iter().collect())
        .unwrap_or_default();
    match sluice_core::map_gpus(&params) {
        Ok(0) => Ok(None),
        Ok(n) => env.gpus.take(n).map(Some).ok_or_else(|| {
            TaskError::retry(format!(
                "task m-{:05} asks for {n} GPU(s) but {} of this executor's are free",
                a.index,
                env.gpus.free()
            ))
        }),
        Err(e) => Err(TaskError::fatal(e)),
    }
}

/// Runs one assignment holding `lease` (its GPUs, or why it could not have them) and reports
/// its outcome to the coordinator.
pub(crate) async fn run_task(
    env: Arc<TaskEnv>,
    a: TaskAssignment,
    lease: Result<Option<GpuLease>, TaskError>,
) {
    let kind = match TaskKind::parse(&a.kind) {
        Ok(k) => k,
        Err(e) => {
            warn!(error = %e, "ignoring malformed assignment");
            return;
        }
    };
    let task = TaskId {
        kind,
        index: a.index,
    };
    let started = std::time::Instant::now();
    let spec = a.spec.clone().unwrap_or_default();
    let (lease, refused) = match lease {
        Ok(l) => (l, None),
        Err(e) => (None, Some(e)),
    };
    let info = TaskInfo {
        job_id: a.job_id.clone(),
        task,
        attempt: a.attempt,
        params: {
            let mut p: std::collections::BTreeMap<String, String> =
                spec.params.clone().into_iter().collect();
            p.entry(TASK_MEMORY_PARAM.to_string())
                .or_insert_with(|| env.task_memory.to_string());
            p
        },
        scratch_dir: env
            .scratch_root
            .join(&a.job_id)
            .join(format!("{task}-{}", a.attempt)),
        gpus: lease.as_ref().map(|l| l.ids().to_vec()).unwrap_or_default(),
    };
    let result = match refused {
        Some(e) => Err(e),
        None => match tokio::fs::create_dir_all(&info.scratch_dir).await {
            Err(e) => Err(TaskError::retry(format!(
                "creating scratch directory {}: {e}",
                info.scratch_dir.display()
            ))),
            Ok(()) => match kind {
                TaskKind::Map => run_map(&env, &a, &info).await,
                TaskKind::Reduce => run_reduce(&env, &a, &info).await,
            },
        },
    };
    // The attempt's scratch space goes with it, whatever user code left there.
    let _ = tokio::fs::remove_dir_all(&info.scratch_dir).await;
    drop(lease);
    let mut report = TaskReport {
        executor_id: env.executor_id(),
        job_id: a.job_id.clone(),
        kind: a.kind.clone(),
        index: a.index,
        attempt: a.attempt,
        ..Default::default()
    };
    match result {
        Ok((stats, files)) => {
            info!(job_id = %a.job_id, %task, attempt = a.attempt, secs = started.elapsed().as_secs_f32(), "task succeeded");
            report.succeeded = true;
            report.stats = Some(stats);
            report.files = files;
        }
        Err(e) => {
            warn!(job_id = %a.job_id, %task, attempt = a.attempt, error = %e.msg, "task failed");
            report.error = e.msg;
            let kind = if e.lost_maps.is_empty() {
                e.kind
            } else {
                FailureKind::LostOutput
            };
            report.failure = pb::FailureKind::from(kind) as i32;
            report.lost_outputs = e.lost_maps;
        }
    }
    let mut control = env.control.clone();
    for i in 0..5u64 {
        match control.report_task(report.clone()).await {
            Ok(_) => return,
            Err(s) => {
                warn!(error = %s.message(), "report_task failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * (i + 1))).await;
            }
        }
    }
}

type Outcome = Result<(pb::Stats, Vec<pb::OutputFile>), TaskError>;

async fn run_map(env: &Arc<TaskEnv>, a: &TaskAssignment, info: &TaskInfo) -> Outcome {
    let spec = a.spec.clone().unwrap_or_default();
    let split: Split = a
        .split
        .as_ref()
        .map(Into::into)
        .ok_or_else(|| TaskError::fatal("map assignment without a split"))?;
    let input_format =
        InputFormat::parse(&spec.input_format).map_err(|e| TaskError::fatal(e.to_string()))?;
    let stats = |lines, shuffle_bytes, counters: Counters| pb::Stats {
        bytes_read: split.len(),
        records_in: lines,
        shuffle_bytes,
        counters: counters.into_map().into_iter().collect(),
        ..Default::default()
    };
    if !spec.binary_sha256.is_empty() {
        let what = format!("task m-{:05} (split {split})", a.index);
        // The worker for these GPUs sees them alone, as devices 0..n.
        let mut worker_info = info.clone();
        worker_info.gpus = (0..info.gpus.len() as u32).collect();
        let req = Request::Map {
            job: spec.job.clone(),
            info: worker_info,
            split: split.clone(),
            input_format,
            reducers: a.num_reducers,
            shuffle_root: env.store.root().to_path_buf(),
        };
        return match env
            .workers
            .run(&worker_of(a), &spec.binary_sha256, &info.gpus, req, what)
            .await?
        {
            Response::Map {
                lines,
                shuffle_bytes,
                counters,
                bad_records,
            } => Ok((
                stats(lines, shuffle_bytes, counters.into_iter().collect()),
                commit_bad_records(env, a, &spec.output, bad_records).await?,
            )),
            other => Err(other.into()),
        };
    }
    let job = lookup(&env.registry, &spec.job)?;
    let (env2, ctx, reducers) = (env.clone(), info.context(Some(&split)), a.num_reducers);
    let done = tokio::task::spawn_blocking(move || {
        let mut buf = env2.take_buffer();
        let r = sluice_worker::run_map(
            job.as_ref(),
            &env2.store,
            &ctx,
            input_format,
            reducers,
            &mut buf,
        );
        env2.give_buffer(buf);
        r
    })
    .await
    .map_err(|e| TaskError::fatal(format!("map task aborted: {e}")))??;
    let files = commit_bad_records(env, a, &spec.output, done.bad_records).await?;
    Ok((stats(done.lines, done.shuffle_bytes, done.counters), files))
}

/// Asks the coordinator whether this attempt of task `a` (a `kind` task) may commit its output.
async fn may_commit(env: &Arc<TaskEnv>, a: &TaskAssignment, kind: &str) -> Result<bool, TaskError> {
    env.control
        .clone()
        .can_commit(CanCommitRequest {
            job_id: a.job_id.clone(),
            index: a.index,
            attempt: a.attempt,
            kind: kind.to_string(),
        })
        .await
        .map(|r| r.into_inner().allowed)
        .map_err(|s| TaskError::retry(format!("asking to commit: {}", s.message())))
}

/// The schema of `_bad_records/` files: where each record was, why it was set aside, and the
/// record itself (its text, or a row as JSON).
fn bad_records_schema() -> arrow_schema::SchemaRef {
    use arrow_schema::{DataType, Field, Schema};
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::Utf8, false),
        Field::new("offset", DataType::UInt64, false),
        Field::new("error", DataType::Utf8, false),
        Field::new("record", DataType::Utf8, false),
    ]))
}

/// Writes `bad` as one Parquet file at `path`; returns its size.
fn write_bad_records(path: &Path, bad: &[BadRecord]) -> Result<u64, StorageError> {
    use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
    let strings = |f: fn(&BadRecord) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(bad.iter().map(f)))
    };
    let columns = vec![
        strings(|b| &b.file),
        Arc::new(UInt64Array::from_iter_values(bad.iter().map(|b| b.offset))) as ArrayRef,
        strings(|b| &b.error),
        strings(|b| &b.record),
    ];
    let batch =
        RecordBatch::try_new(bad_records_schema(), columns).map_err(|e| StorageError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut w = OutputWriter::create(path, OutputFormat::Parquet, bad_records_schema())?;
    w.write(&batch)?;
    Ok(w.finish()?.1)
}

/// Commits the input records a map attempt skipped as bad to
/// `OUTPUT/_bad_records/part-m-NNNNN-JOB.parquet` (file, offset, error, record a row), through
/// the output's commit protocol: only the attempt the coordinator lets commit does, so a task
/// run twice writes its bad records once. A later attempt that may not commit keeps its map
/// output and leaves the committed records as they are.
async fn commit_bad_records(
    env: &Arc<TaskEnv>,
    a: &TaskAssignment,
    output: &str,
    bad: Vec<BadRecord>,
) -> Result<Vec<pb::OutputFile>, TaskError> {
    if bad.is_empty() {
        return Ok(Vec::new());
    }
    let committer = OutputCommitter::open(output)
        .map_err(|e| TaskError::fatal(e.to_string()))?
        .with_staging(env.store.root().join("staging"));
    let task = format!("m-{:05}", a.index);
    let attempt_dir = committer.attempt_dir(&a.job_id, &task, a.attempt);
    let file = attempt_dir
        .join(BAD_RECORDS_DIR)
        .join(format!("part-{task}-{}.parquet", a.job_id));
    let rows = bad.len() as u64;
    let (c2, dir2, job2) = (committer.clone(), attempt_dir.clone(), a.job_id.clone());
    let staged = tokio::task::spawn_blocking(move || {
        let bytes = write_bad_records(&file, &bad)
            .map_err(|e| TaskError::retry(format!("writing {}: {e}", file.display())))?;
        let staged = c2.stage_task(&job2, &dir2).map_err(|e| {
            let _ = c2.abort_task(&dir2);
            TaskError::retry(e.to_string())
        })?;
        Ok::<_, TaskError>((staged, bytes))
    })
    .await
    .map_err(|e| TaskError::retry(e.to_string()))??;
    let (staged, bytes) = staged;
    let allowed = may_commit(env, a, "map").await;
    if !matches!(allowed, Ok(true)) {
        let _ = tokio::task::spawn_blocking(move || staged.abort()).await;
        allowed?;
        return Ok(Vec::new());
    }
    let files = tokio::task::spawn_blocking(move || staged.commit())
        .await
        .map_err(|e| TaskError::retry(e.to_string()))??;
    Ok(files
        .into_iter()
        .map(|path| pb::OutputFile { path, rows, bytes })
        .collect())
}

async fn fetch_one(
    env: &TaskEnv,
    job_id: &str,
    loc: &MapOutputLocation,
    partition: u32,
    dir: &Path,
) -> Result<SegmentRef, TaskError> {
    // An output on this executor is read where it lies, not copied.
    if loc.executor_id == env.executor_id() {
        let store = env.store.clone();
        let (job_id, m, att) = (job_id.to_string(), loc.map_index, loc.attempt);
        return tokio::task::spawn_blocking(move || store.segment(&job_id, m, att, partition))
            .await
            .map_err(|e| TaskError::retry(e.to_string()))?
            .map_err(|e| TaskError::retry(e.to_string()));
    }
    let dest = dir.join(format!("m{:05}-{}.seg", loc.map_index, loc.attempt));
    let mut last = String::new();
    for attempt in 0..FETCH_TRIES {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        let client = {
            let mut cache = env.shuffle_clients.lock().await;
            match cache.get(&loc.shuffle_addr) {
                Some(c) => c.clone(),
                None => match sluice_rpc::shuffle_client(&loc.shuffle_addr).await {
                    Ok(c) => {
                        cache.insert(loc.shuffle_addr.clone(), c.clone());
                        c
                    }
                    Err(e) => {
                        last = e.to_string();
                        continue;
                    }
                },
            }
        };
        let mut client = client;
        match fetch_partition(
            &mut client,
            &loc.shuffle_addr,
            job_id,
            loc.map_index,
            loc.attempt,
            partition,
            &dest,
        )
        .await
        {
            Ok(b) => return Ok(b),
            Err(e) => last = e.to_string(),
        }
    }
    Err(TaskError::retry(last))
}

async fn run_reduce(env: &Arc<TaskEnv>, a: &TaskAssignment, info: &TaskInfo) -> Outcome {
    let task = info.task;
    let spec = a.spec.clone().unwrap_or_default();
    let format = OutputFormat::parse(&spec.format).map_err(|e| TaskError::fatal(e.to_string()))?;
    let partition = a.index;
    // Fetched runs land on local disk; the job's shuffle directory goes when the job ends.
    let fetch_dir = env
        .store
        .root()
        .join(&a.job_id)
        .join(format!("fetched-r{:05}-{}", a.index, a.attempt));
    tokio::fs::create_dir_all(&fetch_dir)
        .await
        .map_err(|e| TaskError::retry(format!("creating {}: {e}", fetch_dir.display())))?;
    let fetches = a.map_outputs.iter().cloned().map(|loc| {
        let (env, job_id, dir) = (env.clone(), a.job_id.clone(), fetch_dir.clone());
        async move {
            let r = fetch_one(&env, &job_id, &loc, partition, &dir).await;
            (loc, r)
        }
    });
    let fetched: Vec<(MapOutputLocation, Result<SegmentRef, TaskError>)> =
        futures::stream::iter(fetches)
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
    let mut segments = Vec::with_capacity(fetched.len());
    let mut lost = Vec::new();
    let mut first_err = None;
    for (m, r) in fetched {
        match r {
            Ok(b) => segments.push(b),
            Err(e) => {
                lost.push(m);
                first_err.get_or_insert(e.msg);
            }
        }
    }
    if let Some(msg) = first_err {
        lost.sort_unstable_by_key(|l| l.map_index);
        let maps: Vec<u32> = lost.iter().map(|l| l.map_index).collect();
        let named: Vec<String> = lost
            .iter()
            .map(|l| {
                format!(
                    "{} attempt {} on {} ({})",
                    TaskId::map(l.map_index),
                    l.attempt,
                    l.executor_id,
                    l.shuffle_addr
                )
            })
            .collect();
        return Err(TaskError {
            msg: format!(
                "cannot fetch map outputs {maps:?} ({}): {msg}",
                named.join(", ")
            ),
            kind: FailureKind::Retryable,
            lost_maps: lost,
        });
    }

    let committer = OutputCommitter::open(&spec.output)
        .map_err(|e| TaskError::fatal(e.to_string()))?
        .with_staging(env.store.root().join("staging"));
    let attempt_dir = committer.attempt_dir(&a.job_id, &task.to_string(), a.attempt);
    // The job id in the name: parts of two jobs racing to one output never overwrite each
    // other, and the job commit keeps exactly one job's (see OutputCommitter::commit_job).
    let part: PathBuf = attempt_dir.join(format!(
        "part-r-{:05}-{}.{}",
        partition,
        a.job_id,
        format.extension()
    ));
    let (c2, dir2) = (committer.clone(), attempt_dir.clone());
    let written = if spec.binary_sha256.is_empty() {
        let job = lookup(&env.registry, &spec.job)?;
        let ctx = info.context(None);
        tokio::task::spawn_blocking(move || {
            sluice_worker::run_reduce(job.as_ref(), &segments, &part, format, &ctx)
                .map(|d| (d.rows, d.bytes, d.counters, d.files))
                .map_err(TaskError::from)
        })
        .await
        .map_err(|e| TaskError::fatal(format!("reduce task aborted: {e}")))
        .and_then(|r| r)
    } else {
        reduce_in_worker(env, a, info, &spec, segments, part, format).await
    };
    // The fetched runs are read; the map outputs stay for other reducers and retries.
    let _ = tokio::fs::remove_dir_all(&fetch_dir).await;
    let (rows, bytes, counters, written_files) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || c2.abort_task(&dir2)).await;
            return Err(e);
        }
    };

    // Uploaded (on an object store) but not visible until the coordinator picks this attempt.
    let (c3, dir3, job3) = (committer.clone(), attempt_dir.clone(), a.job_id.clone());
    let staged = tokio::task::spawn_blocking(move || c3.stage_task(&job3, &dir3))
        .await
        .map_err(|e| TaskError::retry(e.to_string()))?
        .inspect_err(|_| {
            let _ = committer.abort_task(&attempt_dir);
        })?;
    let allowed = may_commit(env, a, "reduce").await;
    if !matches!(allowed, Ok(true)) {
        let _ = tokio::task::spawn_blocking(move || staged.abort()).await;
        allowed?;
        // Not a failure of this attempt's work: a speculative twin won, or the job ended.
        return Err(TaskError {
            msg: "commit denied: another attempt of this task committed, or the job ended".into(),
            kind: FailureKind::Cancelled,
            lost_maps: Vec::new(),
        });
    }
    let files = tokio::task::spawn_blocking(move || staged.commit())
        .await
        .map_err(|e| TaskError::retry(e.to_string()))??;
    // Each committed file with its own rows and bytes (a partitioned task writes several).
    let files = files
        .into_iter()
        .map(|path| {
            let own = written_files
                .iter()
                .find(|w| path.ends_with(&format!("/{}", w.path)) || path == w.path);
            match own {
                Some(w) => pb::OutputFile {
                    path,
                    rows: w.rows,
                    bytes: w.bytes,
                },
                None => pb::OutputFile { path, rows, bytes },
            }
        })
        .collect();
    Ok((
        pb::Stats {
            records_out: rows,
            bytes_out: bytes,
            counters: counters.into_map().into_iter().collect(),
            ..Default::default()
        },
        files,
    ))
}

/// Hands the fetched segments to the job's worker as files and lets it reduce them.
async fn reduce_in_worker(
    env: &Arc<TaskEnv>,
    a: &TaskAssignment,
    info: &TaskInfo,
    spec: &pb::JobSpec,
    segments: Vec<SegmentRef>,
    part: PathBuf,
    format: OutputFormat,
) -> Result<(u64, u64, Counters, Vec<WrittenFile>), TaskError> {
    let paths = segments;
    let req = Request::Reduce {
        job: spec.job.clone(),
        info: info.clone(),
        segments: paths,
        output: part,
        format,
    };
    let what = format!("task r-{:05}", a.index);
    let res = env
        .workers
        .run(&worker_of(a), &spec.binary_sha256, &[], req, what)
        .await;
    match res? {
        Response::Reduce {
            rows,
            bytes,
            counters,
            files,
        } => Ok((rows, bytes, counters.into_iter().collect(), files)),
        other => Err(other.into()),
    }
}
