//! Running one task attempt: map or reduce, with user-code panics caught and reported.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use sluice_core::{OutputFormat, Split, TaskId, TaskKind};
use sluice_rpc::pb::{self, CanCommitRequest, MapOutputLocation, TaskAssignment, TaskReport};
use sluice_rpc::{ControlClient, ShuffleClient};
use sluice_shuffle::{decode_segment, fetch_partition, KWayMerge, ShuffleStore};
use sluice_storage::{read_split, OutputCommitter, OutputWriter, StorageError};
use sluice_udf::{Job, Registry, UdfError};
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

/// Concurrent partition fetches per reduce task.
const FETCH_CONCURRENCY: usize = 8;
/// Tries per partition fetch before the reduce attempt fails.
const FETCH_TRIES: u32 = 3;

/// What every task of this executor shares.
pub(crate) struct TaskEnv {
    pub id: Arc<RwLock<String>>,
    store: ShuffleStore,
    registry: Registry,
    control: ControlClient<Channel>,
    shuffle_clients: Mutex<HashMap<String, ShuffleClient<Channel>>>,
    /// Split read buffers kept between map tasks: a fresh 64 MiB buffer per task cost more
    /// in page faults and zeroing than the tokenizing did.
    buffers: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl TaskEnv {
    pub fn new(
        id: Arc<RwLock<String>>,
        store: ShuffleStore,
        registry: Registry,
        control: ControlClient<Channel>,
    ) -> Self {
        TaskEnv {
            id,
            store,
            registry,
            control,
            shuffle_clients: Mutex::new(HashMap::new()),
            buffers: std::sync::Mutex::new(Vec::new()),
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
struct TaskError {
    msg: String,
    retryable: bool,
    /// Map outputs that could not be fetched (a reduce's fetch failure).
    lost_maps: Vec<u32>,
}

impl TaskError {
    fn fatal(msg: impl Into<String>) -> Self {
        TaskError {
            msg: msg.into(),
            retryable: false,
            lost_maps: Vec::new(),
        }
    }
    fn retry(msg: impl Into<String>) -> Self {
        TaskError {
            msg: msg.into(),
            retryable: true,
            lost_maps: Vec::new(),
        }
    }
}

impl From<StorageError> for TaskError {
    fn from(e: StorageError) -> Self {
        let retryable = matches!(e, StorageError::Io { .. });
        TaskError {
            msg: e.to_string(),
            retryable,
            lost_maps: Vec::new(),
        }
    }
}

impl From<UdfError> for TaskError {
    fn from(e: UdfError) -> Self {
        TaskError::fatal(e.to_string())
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs user code, turning a panic into a failed attempt instead of a dead executor.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, TaskError>) -> Result<T, TaskError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(TaskError::fatal(format!(
            "user code panicked in {what}: {}",
            panic_message(p)
        )))
    })
}

fn lookup(registry: &Registry, name: &str) -> Result<Arc<dyn Job>, TaskError> {
    registry.get(name).ok_or_else(|| {
        TaskError::fatal(format!(
            "unknown job '{name}'; this executor runs: {}",
            registry.names().join(", ")
        ))
    })
}

/// Runs one assignment and reports its outcome to the coordinator.
pub(crate) async fn run_task(env: Arc<TaskEnv>, a: TaskAssignment) {
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
    let result = match kind {
        TaskKind::Map => run_map(&env, &a).await,
        TaskKind::Reduce => run_reduce(&env, &a, task).await,
    };
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
            report.retryable = e.retryable;
            report.lost_map_outputs = e.lost_maps;
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

async fn run_map(env: &Arc<TaskEnv>, a: &TaskAssignment) -> Outcome {
    let spec = a.spec.clone().unwrap_or_default();
    let split: Split = a
        .split
        .as_ref()
        .map(Into::into)
        .ok_or_else(|| TaskError::fatal("map assignment without a split"))?;
    let job = lookup(&env.registry, &spec.job)?;
    let (env2, a2) = (env.clone(), a.clone());
    tokio::task::spawn_blocking(move || {
        let mut buf = env2.take_buffer();
        let result = map_split(&env2, &a2, &job, &split, &mut buf);
        env2.give_buffer(buf);
        result
    })
    .await
    .map_err(|e| TaskError::fatal(format!("map task aborted: {e}")))?
}

fn map_split(
    env: &TaskEnv,
    a: &TaskAssignment,
    job: &Arc<dyn Job>,
    split: &Split,
    buf: &mut Vec<u8>,
) -> Outcome {
    {
        let t0 = std::time::Instant::now();
        let text = read_split(split, buf)?;
        let t1 = std::time::Instant::now();
        let out = guarded("map", || Ok(job.run_map(text.text, a.num_reducers)?)).map_err(|e| {
            TaskError {
                msg: format!("{} (split {split})", e.msg),
                ..e
            }
        })?;
        let info = env
            .store
            .write(&a.job_id, a.index, a.attempt, &out.partitions)
            .map_err(|e| TaskError::retry(e.to_string()))?;
        let t3 = std::time::Instant::now();
        debug!(
            job_id = %a.job_id, map = a.index,
            read_s = (t1 - t0).as_secs_f32(),
            map_s = (out.timing.0).as_secs_f32(),
            sort_s = (out.timing.1).as_secs_f32(),
            write_s = (t3 - t1 - out.timing.0 - out.timing.1).as_secs_f32(),
            "map phases"
        );
        Ok((
            pb::Stats {
                bytes_read: split.end - split.start,
                records_in: text.lines,
                records_out: 0,
                shuffle_bytes: info.bytes,
                bytes_out: 0,
            },
            Vec::new(),
        ))
    }
}

async fn fetch_one(
    env: &TaskEnv,
    job_id: &str,
    loc: &MapOutputLocation,
    partition: u32,
) -> Result<Vec<u8>, TaskError> {
    if loc.executor_id == env.executor_id() {
        let store = env.store.clone();
        let (job_id, m, att) = (job_id.to_string(), loc.map_index, loc.attempt);
        return tokio::task::spawn_blocking(move || {
            store.read_partition(&job_id, m, att, partition)
        })
        .await
        .map_err(|e| TaskError::retry(e.to_string()))?
        .map_err(|e| TaskError::retry(e.to_string()));
    }
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
        )
        .await
        {
            Ok(b) => return Ok(b),
            Err(e) => last = e.to_string(),
        }
    }
    Err(TaskError::retry(last))
}

async fn run_reduce(env: &Arc<TaskEnv>, a: &TaskAssignment, task: TaskId) -> Outcome {
    let spec = a.spec.clone().unwrap_or_default();
    let job = lookup(&env.registry, &spec.job)?;
    let format = OutputFormat::parse(&spec.format).map_err(|e| TaskError::fatal(e.to_string()))?;
    let partition = a.index;
    let fetches = a.map_outputs.iter().cloned().map(|loc| {
        let (env, job_id) = (env.clone(), a.job_id.clone());
        async move {
            (
                loc.map_index,
                fetch_one(&env, &job_id, &loc, partition).await,
            )
        }
    });
    let fetched: Vec<(u32, Result<Vec<u8>, TaskError>)> = futures::stream::iter(fetches)
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
        lost.sort_unstable();
        return Err(TaskError {
            msg: format!("cannot fetch map outputs {lost:?}: {msg}"),
            retryable: true,
            lost_maps: lost,
        });
    }

    let committer = OutputCommitter::new(&spec.output);
    let attempt_dir = committer.attempt_dir(&a.job_id, &task.to_string(), a.attempt);
    let part: PathBuf = attempt_dir.join(format!("part-r-{:05}.{}", partition, format.extension()));
    let (c2, dir2) = (committer.clone(), attempt_dir.clone());
    let fetched_at = std::time::Instant::now();
    let job_id = a.job_id.clone();
    let written = tokio::task::spawn_blocking(move || {
        let mut batches = Vec::new();
        for s in &segments {
            batches.extend(decode_segment(s).map_err(|e| TaskError::retry(e.to_string()))?);
        }
        drop(segments);
        let decoded_at = std::time::Instant::now();
        let schema = job.output_schema()?;
        let mut writer = OutputWriter::create(&part, format, schema)?;
        let mut merged = KWayMerge::new(&batches).map_err(|e| TaskError::fatal(e.to_string()))?;
        guarded("reduce", || {
            job.run_reduce(&mut merged, &mut |b| {
                writer.write(&b).map_err(|e| UdfError::Sink(e.to_string()))
            })?;
            Ok(())
        })?;
        let out = writer.finish()?;
        debug!(
            %job_id, reduce = partition,
            decode_s = (decoded_at - fetched_at).as_secs_f32(),
            reduce_write_s = decoded_at.elapsed().as_secs_f32(),
            "reduce phases"
        );
        Ok::<_, TaskError>(out)
    })
    .await
    .map_err(|e| TaskError::fatal(format!("reduce task aborted: {e}")))
    .and_then(|r| r);
    let (rows, bytes) = match written {
        Ok(w) => w,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(move || c2.abort_task(&dir2)).await;
            return Err(e);
        }
    };

    let allowed = env
        .control
        .clone()
        .can_commit(CanCommitRequest {
            job_id: a.job_id.clone(),
            index: a.index,
            attempt: a.attempt,
        })
        .await
        .map(|r| r.into_inner().allowed)
        .map_err(|s| TaskError::retry(format!("asking to commit: {}", s.message())))?;
    if !allowed {
        let _ = tokio::task::spawn_blocking(move || committer.abort_task(&attempt_dir)).await;
        return Err(TaskError::fatal(
            "commit denied: another attempt of this task committed, or the job ended",
        ));
    }
    let files = tokio::task::spawn_blocking(move || committer.commit_task(&attempt_dir))
        .await
        .map_err(|e| TaskError::retry(e.to_string()))??;
    let files = files
        .into_iter()
        .map(|p| pb::OutputFile {
            path: p.to_string_lossy().into_owned(),
            rows,
            bytes,
        })
        .collect();
    Ok((
        pb::Stats {
            bytes_read: 0,
            records_in: 0,
            records_out: rows,
            shuffle_bytes: 0,
            bytes_out: bytes,
        },
        files,
    ))
}
