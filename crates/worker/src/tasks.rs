//! One map or one reduce, as both the executor (built-in jobs) and worker processes run them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use sluice_core::{InputFormat, OutputFormat};
use sluice_shuffle::{decode_segment, KWayMerge, ShuffleStore};
use sluice_storage::{
    read_arrow_split, read_parquet_split, read_split, Filter, OutputOptions, StorageError,
    TaskWriter, WrittenFile, PARTITION_BY_PARAM,
};
use sluice_udf::{Counters, Job, MapInput, TaskContext, UdfError};

/// Why a task attempt failed, and whether another attempt could succeed.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    /// What went wrong, naming the input.
    pub message: String,
    /// False for bad input or user-code errors; true for I/O that may pass on retry.
    pub retryable: bool,
}

impl TaskFailure {
    /// A failure another attempt cannot fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        TaskFailure {
            message: message.into(),
            retryable: false,
        }
    }

    /// A failure another attempt may not meet.
    pub fn retry(message: impl Into<String>) -> Self {
        TaskFailure {
            message: message.into(),
            retryable: true,
        }
    }
}

impl From<StorageError> for TaskFailure {
    fn from(e: StorageError) -> Self {
        let retryable = matches!(e, StorageError::Io { .. });
        TaskFailure {
            message: e.to_string(),
            retryable,
        }
    }
}

impl From<UdfError> for TaskFailure {
    fn from(e: UdfError) -> Self {
        TaskFailure::fatal(e.to_string())
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

/// Runs user code, turning a panic into a failed attempt.
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, TaskFailure>) -> Result<T, TaskFailure> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(TaskFailure::fatal(format!(
            "user code panicked in {what}: {}",
            panic_message(p)
        )))
    })
}

/// What a map task produced.
#[derive(Debug, Clone)]
pub struct MapDone {
    /// Input records read (lines, or Parquet rows).
    pub lines: u64,
    /// Shuffle bytes written.
    pub shuffle_bytes: u64,
    /// User counters of this attempt.
    pub counters: Counters,
    /// Input records skipped as bad (the first [`sluice_udf::MAX_KEPT_BAD_RECORDS`]).
    pub bad_records: Vec<sluice_udf::BadRecord>,
}

/// What a reduce task produced.
#[derive(Debug, Clone)]
pub struct ReduceDone {
    /// Output rows.
    pub rows: u64,
    /// Output bytes.
    pub bytes: u64,
    /// User counters of this attempt.
    pub counters: Counters,
    /// The files written, relative to the attempt directory.
    pub files: Vec<WrittenFile>,
}

/// Reads the split of `ctx` into `buf` (kept by the caller between tasks), maps it, and writes
/// the partitioned, sorted output into `store`.
pub fn run_map(
    job: &dyn Job,
    store: &ShuffleStore,
    ctx: &TaskContext,
    format: InputFormat,
    reducers: u32,
    buf: &mut Vec<u8>,
) -> Result<MapDone, TaskFailure> {
    let split = ctx
        .split()
        .ok_or_else(|| TaskFailure::fatal("a map task came without its split"))?;
    // The coordinator names the task and its split in the job's error.
    let (out, lines) = if format.is_line_based() {
        let text = read_split(split, buf)?;
        let input = MapInput::text(text.text, format, text.offset).with_files(&text.files);
        let out = guarded("map", || Ok(job.run_map(input, reducers, ctx)?))?;
        (out, text.lines)
    } else {
        let filter = Filter::from_params(|k| ctx.param(k)).map_err(TaskFailure::fatal)?;
        let columns = job.input_columns();
        let batches = if format == InputFormat::Arrow {
            read_arrow_split(split, columns.as_deref(), filter.as_ref())?
        } else {
            read_parquet_split(split, columns.as_deref(), filter.as_ref())?
        };
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let input = MapInput::Batches(&batches);
        (
            guarded("map", || Ok(job.run_map(input, reducers, ctx)?))?,
            rows,
        )
    };
    let task = ctx.task();
    let info = store
        .write(ctx.job_id(), task.index, ctx.attempt(), &out.partitions)
        .map_err(|e| TaskFailure::retry(e.to_string()))?;
    Ok(MapDone {
        lines,
        shuffle_bytes: info.bytes,
        counters: out.counters,
        bad_records: ctx.take_bad_records(),
    })
}

/// Merges the partition segments, reduces them and writes `output`.
pub fn run_reduce<S: AsRef<[u8]>>(
    job: &dyn Job,
    segments: &[S],
    output: &Path,
    format: OutputFormat,
    ctx: &TaskContext,
) -> Result<ReduceDone, TaskFailure> {
    let mut batches = Vec::new();
    for s in segments {
        batches.extend(decode_segment(s.as_ref()).map_err(|e| TaskFailure::retry(e.to_string()))?);
    }
    let schema = job.output_schema()?;
    let options = OutputOptions::from_params(ctx.params())?;
    let partition_by = ctx.param(PARTITION_BY_PARAM).filter(|c| !c.is_empty());
    let mut writer = TaskWriter::create(output, format, schema, options, partition_by)
        .map_err(|e| TaskFailure::fatal(e.to_string()))?;
    let mut merged = KWayMerge::new(&batches).map_err(|e| TaskFailure::fatal(e.to_string()))?;
    let counts = guarded("reduce", || {
        Ok(job.run_reduce(
            &mut merged,
            &mut |b| writer.write(&b).map_err(|e| UdfError::Sink(e.to_string())),
            ctx,
        )?)
    })?;
    let files = writer.finish()?;
    Ok(ReduceDone {
        rows: files.iter().map(|f| f.rows).sum(),
        bytes: files.iter().map(|f| f.bytes).sum(),
        counters: counts.counters,
        files,
    })
}
