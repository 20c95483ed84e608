//! What a task knows about itself, and the counters user code keeps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sluice_core::{Split, TaskId, TaskKind};

use crate::UdfError;

/// The task an attempt of user code runs in: its job, task, attempt, split, the job's
/// parameters and a scratch directory of its own.
///
/// Mappers and reducers reach it through their emitter (`out.context()`), as Hadoop's
/// `Context`. Tests build one with [`TaskContext::new`].
///
/// ```
/// use sluice_udf::TaskContext;
///
/// let ctx = TaskContext::new("job-1", sluice_core::TaskId::map(3), 1)
///     .with_param("threshold", "0.5");
/// assert_eq!(ctx.task().to_string(), "m-00003");
/// assert_eq!(ctx.attempt(), 1);
/// assert_eq!(ctx.param_as::<f64>("threshold").unwrap(), Some(0.5));
/// assert!(ctx.param_as::<u32>("threshold").unwrap_err().to_string().contains("threshold"));
/// ```
#[derive(Debug, Clone)]
pub struct TaskContext {
    job_id: String,
    task: TaskId,
    attempt: u32,
    split: Option<Split>,
    params: BTreeMap<String, String>,
    scratch_dir: PathBuf,
    /// GPUs this task holds, as CUDA device ordinals of this process.
    gpus: Vec<u32>,
    /// Reads whole objects at paths or datastore URIs (set by the task runtime).
    reader: Option<Reader>,
    /// Records skipped as bad in this attempt, kept to be written to `OUTPUT/_bad_records/`.
    bad_records: std::sync::Arc<std::sync::Mutex<Vec<BadRecord>>>,
    /// Bad records skipped in this attempt, kept or not.
    bad_seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// Reads a whole object at a path or URI, or says why it cannot.
pub type BlobReader = std::sync::Arc<dyn Fn(&str) -> Result<Vec<u8>, String> + Send + Sync>;

/// A [`BlobReader`] in a context (shown by name only).
#[derive(Clone)]
struct Reader(BlobReader);

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobReader")
    }
}

/// The job parameter that bounds the bad records one map task may skip
/// (`sluice.bad_records=skip`); past it the task fails naming the record that went over.
pub const MAX_BAD_RECORDS_PARAM: &str = "sluice.max_bad_records";

/// An input record skipped because it did not parse (`sluice.bad_records=skip`), with where it
/// was, so that it can be found and fixed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BadRecord {
    /// The input file.
    pub file: String,
    /// Byte offset of the record in the file.
    pub offset: u64,
    /// Why it was skipped.
    pub error: String,
    /// The record as it was in the file.
    pub record: String,
}

/// Bad records kept per task attempt (all are counted; a file of millions helps nobody).
pub const MAX_KEPT_BAD_RECORDS: usize = 10_000;

impl Default for TaskContext {
    fn default() -> Self {
        TaskContext::new("local", TaskId::map(0), 1)
    }
}

impl TaskContext {
    /// A context for attempt `attempt` of `task` in job `job_id`, with no split, no parameters
    /// and the system temporary directory as scratch.
    pub fn new(job_id: impl Into<String>, task: TaskId, attempt: u32) -> Self {
        TaskContext {
            job_id: job_id.into(),
            task,
            attempt,
            split: None,
            params: BTreeMap::new(),
            scratch_dir: std::env::temp_dir(),
            gpus: Vec::new(),
            reader: None,
            bad_records: Default::default(),
            bad_seen: Default::default(),
        }
    }

    /// Keeps a skipped bad record of `file` (up to [`MAX_KEPT_BAD_RECORDS`]), failing once
    /// the task has skipped more than the job allows ([`MAX_BAD_RECORDS_PARAM`]): the error
    /// names the record that went past the budget.
    pub fn keep_bad_record(
        &self,
        file: &str,
        offset: u64,
        error: String,
        record: &str,
    ) -> Result<(), UdfError> {
        let mut kept = self.bad_records.lock().unwrap_or_else(|p| p.into_inner());
        let seen = self
            .bad_seen
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if let Some(max) = self.param_as::<u64>(MAX_BAD_RECORDS_PARAM)? {
            if seen > max {
                return Err(UdfError::Input(format!(
                    "{file}: more than {max} bad records ({MAX_BAD_RECORDS_PARAM}); the one past \
                     the budget is at {offset}: {error}; fix the input or raise the budget"
                )));
            }
        }
        if kept.len() < MAX_KEPT_BAD_RECORDS {
            kept.push(BadRecord {
                file: file.to_string(),
                offset,
                error,
                record: record.to_string(),
            });
        }
        Ok(())
    }

    /// The bad records kept so far, leaving none.
    pub fn take_bad_records(&self) -> Vec<BadRecord> {
        std::mem::take(&mut *self.bad_records.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Sets how [`TaskContext::read_blob`] reads paths and URIs (the task runtime gives one
    /// that knows every datastore).
    pub fn with_reader(mut self, reader: BlobReader) -> Self {
        self.reader = Some(Reader(reader));
        self
    }

    /// The bytes of a whole object at a path or datastore URI (`s3://`, `ds://`, ...): how a
    /// job reads what its driver wrote for it (a training round's parameters). Without a
    /// reader set, only local paths.
    pub fn read_blob(&self, uri: &str) -> Result<Vec<u8>, UdfError> {
        match &self.reader {
            Some(r) => (r.0)(uri).map_err(UdfError::Input),
            None => std::fs::read(uri).map_err(|e| UdfError::Input(format!("reading {uri}: {e}"))),
        }
    }

    /// Sets the GPUs the task holds (CUDA device ordinals as this process sees them).
    pub fn with_gpus(mut self, gpus: Vec<u32>) -> Self {
        self.gpus = gpus;
        self
    }

    /// The GPUs this task holds to itself, as CUDA device ordinals of this process: empty
    /// unless its job asks for them (`sluice.task.gpus`). In a job binary's worker they are
    /// `0..n` (the worker's `CUDA_VISIBLE_DEVICES` names the executor's GPUs it was given).
    pub fn gpus(&self) -> &[u32] {
        &self.gpus
    }

    /// Sets the input split (map tasks).
    pub fn with_split(mut self, split: Split) -> Self {
        self.split = Some(split);
        self
    }

    /// Sets all job parameters.
    pub fn with_params(mut self, params: BTreeMap<String, String>) -> Self {
        self.params = params;
        self
    }

    /// Sets one job parameter.
    pub fn with_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.insert(name.into(), value.into());
        self
    }

    /// Sets the scratch directory.
    pub fn with_scratch_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.scratch_dir = dir.into();
        self
    }

    /// The job's id.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The task: map or reduce, and its index (the partition, for a reduce).
    pub fn task(&self) -> TaskId {
        self.task
    }

    /// True in a map task.
    pub fn is_map(&self) -> bool {
        self.task.kind == TaskKind::Map
    }

    /// The attempt number: 1 for a task's first attempt; a retried or recomputed task gets a
    /// higher one.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The input byte range of a map task; `None` in a reduce.
    pub fn split(&self) -> Option<&Split> {
        self.split.as_ref()
    }

    /// The input file of a map task (handy for joins that tag records by dataset).
    pub fn input_path(&self) -> Option<&str> {
        self.split.as_ref().map(|s| s.path.as_str())
    }

    /// A job parameter (`--param NAME=VALUE`, or the job builder's `param`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// A job parameter parsed as `T`; an error names the parameter and its value.
    pub fn param_as<T: FromStr>(&self, name: &str) -> Result<Option<T>, UdfError>
    where
        T::Err: std::fmt::Display,
    {
        self.param(name)
            .map(|v| {
                v.parse::<T>().map_err(|e| {
                    UdfError::Param(format!(
                        "job parameter {name}={v:?} is not a valid {}: {e}; pass --param {name}=...",
                        std::any::type_name::<T>()
                    ))
                })
            })
            .transpose()
    }

    /// Every job parameter.
    pub fn params(&self) -> &BTreeMap<String, String> {
        &self.params
    }

    /// A directory that belongs to this attempt alone; it is removed when the attempt ends.
    pub fn scratch_dir(&self) -> &Path {
        &self.scratch_dir
    }
}

/// User-defined counters of one task attempt, by name.
///
/// The engine sums them over the attempts whose output the job keeps: a failed or
/// superseded attempt's counts are dropped, as Hadoop's counters of committed tasks.
///
/// ```
/// use sluice_udf::Counters;
///
/// let mut a = Counters::default();
/// a.add("bad_rows", 2);
/// let mut b = Counters::default();
/// b.add("bad_rows", 1);
/// b.add("empty", 4);
/// a.merge(&b);
/// assert_eq!(a.get("bad_rows"), 3);
/// assert_eq!(a.iter().collect::<Vec<_>>(), [("bad_rows", 3), ("empty", 4)]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(BTreeMap<String, i64>);

impl Counters {
    /// Adds `n` to counter `name`.
    pub fn add(&mut self, name: &str, n: i64) {
        match self.0.get_mut(name) {
            Some(c) => *c += n,
            None => {
                self.0.insert(name.to_string(), n);
            }
        }
    }

    /// The value of counter `name` (0 when never counted).
    pub fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &Counters) {
        for (k, v) in &other.0 {
            self.add(k, *v);
        }
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The counters, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// The counters as a map.
    pub fn into_map(self) -> BTreeMap<String, i64> {
        self.0
    }
}

impl FromIterator<(String, i64)> for Counters {
    fn from_iter<I: IntoIterator<Item = (String, i64)>>(iter: I) -> Self {
        let mut c = Counters::default();
        for (k, v) in iter {
            c.add(&k, v);
        }
        c
    }
}
