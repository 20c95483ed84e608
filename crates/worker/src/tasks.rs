//! One map or one reduce, as both the executor (built-in jobs) and worker processes run them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use sluice_core::{
    FailureKind, InputFormat, OutputFormat, Split, CACHE_BYTES_PARAM, CACHE_PARAM,
    CSV_MULTILINE_PARAM, DEFAULT_CACHE_BYTES, TASK_MEMORY_PARAM,
};
use sluice_shuffle::{reduce_fan_in, Combine, SegmentRef, ShuffleStore, StreamMerge};
use sluice_storage::{
    read_arrow_split, read_parquet_split, read_split, Compression, Filter, OutputOptions,
    StorageError, TaskWriter, WrittenFile, PARTITION_BY_PARAM, WHERE_PARAM,
};
use sluice_udf::{panic_message, Counters, Job, MapInput, ReduceInput, TaskContext, UdfError};

/// Why a task attempt failed, and what kind of failure it is (which decides whether another
/// attempt runs).
#[derive(Debug, Clone)]
pub struct TaskFailure {
    /// What went wrong, naming the input.
    pub message: String,
    /// The kind the coordinator acts on.
    pub kind: FailureKind,
}

impl TaskFailure {
    /// A failure another attempt cannot fix (bad input, a user error).
    pub fn fatal(message: impl Into<String>) -> Self {
        TaskFailure {
            message: message.into(),
            kind: FailureKind::Permanent,
        }
    }

    /// A failure another attempt may not meet.
    pub fn retry(message: impl Into<String>) -> Self {
        TaskFailure {
            message: message.into(),
            kind: FailureKind::Retryable,
        }
    }
}

impl From<StorageError> for TaskFailure {
    fn from(e: StorageError) -> Self {
        let kind = if matches!(e, StorageError::Io { .. }) {
            FailureKind::Retryable
        } else {
            FailureKind::Permanent
        };
        TaskFailure {
            message: e.to_string(),
            kind,
        }
    }
}

impl From<UdfError> for TaskFailure {
    fn from(e: UdfError) -> Self {
        match e {
            // A panic may not recur (Spark retries them too); one that does is named by record.
            UdfError::Panicked(_) | UdfError::Gpu(_) => TaskFailure::retry(e.to_string()),
            _ => TaskFailure::fatal(e.to_string()),
        }
    }
}

/// Runs user code, turning a panic into a failed attempt (retried, as the panic may not recur).
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, TaskFailure>) -> Result<T, TaskFailure> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(TaskFailure::retry(format!(
            "user code panicked in {what}: {}",
            panic_message(p.as_ref())
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
    let budget = task_memory(ctx)?;
    // Text and JSON lines are cut into chunks that fit the task's memory budget; each chunk's
    // sorted output is spilled as a run and the runs are merged into the map output. CSV is
    // cut only when the job promises no record holds a newline (`sluice.csv.multiline=false`,
    // as its splits are then cut too); otherwise a quoted field may, and the file is mapped
    // whole. Compressed files are read whole.
    let csv_lines = ctx
        .param(CSV_MULTILINE_PARAM)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));
    let chunkable = match format {
        InputFormat::Text | InputFormat::Jsonl => true,
        InputFormat::Csv { .. } => csv_lines,
        _ => false,
    };
    if let Some(b) = budget.filter(|_| chunkable) {
        let first = first_chunk(b);
        if split.len() > first {
            return run_map_chunked(job, store, ctx, format, reducers, buf, split, b);
        }
    }
    // The coordinator names the task and its split in the job's error.
    let (out, lines) = if format.is_line_based() {
        let text = read_split(split, buf)?;
        let input = MapInput::text(text.text, format, text.offset).with_files(&text.files);
        let out = guarded("map", || Ok(job.run_map(input, reducers, ctx)?))?;
        (out, text.lines)
    } else {
        let filter = Filter::from_params(|k| ctx.param(k)).map_err(TaskFailure::fatal)?;
        let columns = job.input_columns();
        let read = || {
            if format == InputFormat::Arrow {
                read_arrow_split(split, columns.as_deref(), filter.as_ref())
            } else {
                read_parquet_split(split, columns.as_deref(), filter.as_ref())
            }
        };
        let mut read_counters = Counters::default();
        let batches = if ctx.param(CACHE_PARAM) == Some("true") {
            let key = format!(
                "{format:?}|{split:?}|{columns:?}|{:?}",
                ctx.param(WHERE_PARAM)
            );
            let budget = ctx
                .param(CACHE_BYTES_PARAM)
                .map(sluice_core::parse_byte_size)
                .transpose()
                .map_err(|e| TaskFailure::fatal(format!("{CACHE_BYTES_PARAM}: {e}")))?
                .unwrap_or(DEFAULT_CACHE_BYTES);
            let disk_budget = ctx
                .param(CACHE_DISK_PARAM)
                .map(|v| match v.trim() {
                    "0" => Ok(0),
                    v => sluice_core::parse_byte_size(v),
                })
                .transpose()
                .map_err(|e| TaskFailure::fatal(format!("{CACHE_DISK_PARAM}: {e}")))?
                .unwrap_or(DEFAULT_CACHE_DISK_BYTES);
            // Beside the shuffle directory: the executor's local disk.
            let dir = store.root().with_file_name("cache");
            let disk = (disk_budget > 0).then_some((dir.as_path(), disk_budget));
            match cache::get(&key) {
                Some(cache::Hit::Memory(b)) => {
                    read_counters.add(CACHE_HITS_COUNTER, 1);
                    b
                }
                Some(cache::Hit::Disk(b)) => {
                    read_counters.add(CACHE_HITS_COUNTER, 1);
                    read_counters.add(CACHE_DISK_HITS_COUNTER, 1);
                    // Back into memory if it fits, pushing older splits to disk.
                    cache::put(key, b.clone(), budget, disk);
                    b
                }
                None => {
                    let b = std::sync::Arc::new(read()?);
                    read_counters.add(DATASTORE_BYTES_COUNTER, split.len() as i64);
                    cache::put(key, b.clone(), budget, disk);
                    b
                }
            }
        } else {
            read_counters.add(DATASTORE_BYTES_COUNTER, split.len() as i64);
            std::sync::Arc::new(read()?)
        };
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let input = MapInput::Batches(&batches);
        let mut out = guarded("map", || Ok(job.run_map(input, reducers, ctx)?))?;
        out.counters.merge(&read_counters);
        (out, rows)
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

/// The counter of input bytes map tasks read from the datastore (a split served from the
/// executor's cache reads none).
pub const DATASTORE_BYTES_COUNTER: &str = "datastore_bytes_read";

/// The counter of columnar splits served from an executor's cache (`sluice.cache=true`).
pub const CACHE_HITS_COUNTER: &str = "cache_hits";

/// The job parameter bounding the local disk cached splits may take once pushed out of memory
/// (`sluice train --cache-disk`; 0 keeps none on disk).
pub const CACHE_DISK_PARAM: &str = "sluice.cache.disk_bytes";

/// The disk cache's default budget.
pub const DEFAULT_CACHE_DISK_BYTES: u64 = 16 << 30;

/// The counter of map tasks whose split came back from the local disk cache.
pub const CACHE_DISK_HITS_COUNTER: &str = "cache_disk_hits";

/// Decoded columnar splits kept in this process across jobs (training epochs read the same
/// data every round): in memory up to the memory budget; splits pushed out of memory (or too
/// large for it) go to local disk as Arrow IPC files up to the disk budget, and are read back
/// from there instead of the datastore.
mod cache {
    use std::collections::VecDeque;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex, Once};

    use arrow_array::RecordBatch;

    type Entry = (String, Arc<Vec<RecordBatch>>, u64);
    type OnDisk = (String, PathBuf, u64);

    static MEMORY: Mutex<(VecDeque<Entry>, u64)> = Mutex::new((VecDeque::new(), 0));
    static DISK: Mutex<(VecDeque<OnDisk>, u64)> = Mutex::new((VecDeque::new(), 0));
    static CLEARED: Once = Once::new();

    /// Where a cached split lives now.
    pub enum Hit {
        /// In memory.
        Memory(Arc<Vec<RecordBatch>>),
        /// Read back from local disk.
        Disk(Arc<Vec<RecordBatch>>),
    }

    /// The cached batches of `key`, from memory or else from disk.
    pub fn get(key: &str) -> Option<Hit> {
        {
            let c = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = c.0.iter().find(|e| e.0 == key) {
                return Some(Hit::Memory(e.1.clone()));
            }
        }
        let path = {
            let d = DISK.lock().unwrap_or_else(|p| p.into_inner());
            d.0.iter().find(|e| e.0 == key).map(|e| e.1.clone())?
        };
        // A spill file that cannot be read back is a miss: the split is read again.
        read(&path).ok().map(|b| Hit::Disk(Arc::new(b)))
    }

    /// Keeps `batches` under `key`: in memory within `budget` bytes in all, pushing the oldest
    /// splits out to `disk` (a directory and its budget) when given, else dropping them.
    pub fn put(
        key: String,
        batches: Arc<Vec<RecordBatch>>,
        budget: u64,
        disk: Option<(&Path, u64)>,
    ) {
        let size: u64 = batches
            .iter()
            .map(|b| b.get_array_memory_size() as u64)
            .sum();
        let mut out = Vec::new();
        if size > budget {
            out.push((key, batches, size));
        } else {
            let mut c = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
            while c.1 + size > budget {
                match c.0.pop_front() {
                    Some(old) => {
                        c.1 -= old.2;
                        out.push(old);
                    }
                    None => break,
                }
            }
            c.1 += size;
            c.0.push_back((key, batches, size));
        }
        if let Some((dir, disk_budget)) = disk {
            for (k, b, _) in out {
                spill(dir, disk_budget, k, &b);
            }
        }
    }

    /// Writes a split to the disk cache (Arrow IPC), dropping the oldest files past the budget.
    fn spill(dir: &Path, budget: u64, key: String, batches: &[RecordBatch]) {
        CLEARED.call_once(|| {
            // Files a previous process left are of no use to this one.
            let _ = std::fs::remove_dir_all(dir);
        });
        let Some(first) = batches.first() else {
            return;
        };
        let h = sluice_core::digest::fnv1a(key.bytes());
        let path = dir.join(format!("{h:016x}.arrow"));
        let written = std::fs::create_dir_all(dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
                let mut w = arrow_ipc::writer::FileWriter::try_new(
                    std::io::BufWriter::new(file),
                    &first.schema(),
                )
                .map_err(|e| e.to_string())?;
                for b in batches {
                    w.write(b).map_err(|e| e.to_string())?;
                }
                w.finish().map_err(|e| e.to_string())?;
                std::fs::metadata(&path)
                    .map(|m| m.len())
                    .map_err(|e| e.to_string())
            });
        let size = match written {
            Ok(n) if n <= budget => n,
            Ok(_) | Err(_) => {
                let _ = std::fs::remove_file(&path);
                return;
            }
        };
        let mut d = DISK.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = d.0.iter().position(|e| e.0 == key) {
            if let Some(old) = d.0.remove(at) {
                d.1 -= old.2;
            }
        }
        while d.1 + size > budget {
            match d.0.pop_front() {
                Some(old) => {
                    d.1 -= old.2;
                    if old.1 != path {
                        let _ = std::fs::remove_file(&old.1);
                    }
                }
                None => break,
            }
        }
        d.1 += size;
        d.0.push_back((key, path, size));
    }

    fn read(path: &Path) -> Result<Vec<RecordBatch>, String> {
        let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
        let r = arrow_ipc::reader::FileReader::try_new(std::io::BufReader::new(file), None)
            .map_err(|e| e.to_string())?;
        r.collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use arrow_array::{ArrayRef, Int64Array};

        fn split(v: i64, rows: usize) -> Arc<Vec<RecordBatch>> {
            let col: ArrayRef = Arc::new(Int64Array::from(vec![v; rows]));
            Arc::new(vec![RecordBatch::try_from_iter([("x", col)]).unwrap()])
        }

        fn value(h: Option<Hit>) -> Option<(bool, i64)> {
            let (disk, b) = match h? {
                Hit::Memory(b) => (false, b),
                Hit::Disk(b) => (true, b),
            };
            let col = b[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            Some((disk, col.value(0)))
        }

        #[test]
        fn splits_pushed_out_of_memory_come_back_from_disk() {
            let dir = tempfile::tempdir().unwrap();
            let one = split(1, 1000)
                .iter()
                .map(|b| b.get_array_memory_size() as u64)
                .sum::<u64>();
            let disk = Some((dir.path(), 1 << 30));
            // Room in memory for two splits: the third pushes the first to disk.
            for v in 0..3 {
                put(format!("t-split-{v}"), split(v, 1000), 2 * one, disk);
            }
            assert_eq!(value(get("t-split-0")), Some((true, 0)));
            assert_eq!(value(get("t-split-1")), Some((false, 1)));
            assert_eq!(value(get("t-split-2")), Some((false, 2)));
            // Without a disk budget a pushed-out split is gone.
            put("t-split-3".into(), split(3, 1000), 2 * one, None);
            assert!(get("t-split-1").is_none());
            // One too large for memory goes straight to disk.
            put("t-big".into(), split(9, 100_000), 2 * one, disk);
            assert_eq!(value(get("t-big")), Some((true, 9)));
        }
    }
}

/// The counter of sorted runs map tasks spilled to disk to stay within `--task-memory`.
pub const SPILLED_RUNS_COUNTER: &str = "spilled_runs";

/// The counter of bytes map tasks spilled to local disk (deleted once merged).
pub const SPILLED_BYTES_COUNTER: &str = "spilled_bytes";

/// The first chunk of a map is this share of the budget: the chunk's text, its records, their
/// encoded pairs and the sorted run are all held at once, and how much output a byte of input
/// makes is not known until a chunk was mapped.
const FIRST_CHUNK_SHARE: u64 = 4;

/// What one run being merged holds at once: a decoded batch of [`sluice_shuffle::RUN_BATCH_ROWS`]
/// rows and the reader's buffers (a generous guess, so the budget is kept).
const RUN_MEMORY: u64 = 4 << 20;

/// Chunks are never smaller than this (a budget this small is mostly fixed costs).
const MIN_CHUNK: u64 = 1 << 20;

/// The task's memory budget, if the job sets one.
fn task_memory(ctx: &TaskContext) -> Result<Option<u64>, TaskFailure> {
    ctx.param(TASK_MEMORY_PARAM)
        .map(|v| {
            sluice_core::parse_byte_size(v)
                .map_err(|e| TaskFailure::fatal(format!("--task-memory: {e}")))
        })
        .transpose()
}

/// The size of a map's first chunk under `budget`.
fn first_chunk(budget: u64) -> u64 {
    (budget / FIRST_CHUNK_SHARE).max(MIN_CHUNK)
}

/// The size of the next chunk, from what the last one cost: `input` bytes of text made `held`
/// bytes of sorted output (Arrow buffers), and the combining table or pair list behind it is
/// counted as much again. The text, the table and the output are all held at the peak, so a
/// chunk of `c` bytes costs about `c * (1 + 2 * held / input)`; the next chunk is sized so that
/// cost stays within 3/4 of the budget (the rest is the reader's and allocator's slack), and
/// never above half of it, so one mis-estimate cannot take the whole budget.
fn next_chunk(budget: u64, input: u64, held: u64) -> u64 {
    let input = input.max(1) as f64;
    let per_byte = 1.0 + 2.0 * held as f64 / input;
    let fits = (budget as f64 * 0.75 / per_byte) as u64;
    fits.clamp(MIN_CHUNK, (budget / 2).max(MIN_CHUNK))
}

/// Cuts a split into chunks of the sizes asked one at a time: large files in byte ranges (each
/// owns the lines that start in it, as splits do), small or compressed whole files grouped up
/// to the size (at least one).
struct Chunker {
    pieces: std::collections::VecDeque<Split>,
}

impl Chunker {
    fn new(split: &Split) -> Self {
        let pieces = std::iter::once(split)
            .chain(split.rest.iter())
            .map(|p| Split {
                path: p.path.clone(),
                start: p.start,
                end: p.end,
                file_len: p.file_len,
                rest: Vec::new(),
            })
            .collect();
        Chunker { pieces }
    }

    /// The next chunk of about `size` bytes, or `None` when the split is used up.
    fn next(&mut self, size: u64) -> Option<Split> {
        let first = self.pieces.pop_front()?;
        let whole = |p: &Split| Compression::of(&p.path).is_some() || p.len() <= size;
        if !whole(&first) {
            let end = first.start + size;
            self.pieces.push_front(Split {
                start: end,
                ..first.clone()
            });
            return Some(Split { end, ..first });
        }
        // Only whole files are grouped: a combined split reads each of its files whole.
        let entire = |p: &Split| p.start == 0 && p.end == p.file_len;
        if !entire(&first) {
            return Some(first);
        }
        let mut chunk = first;
        while let Some(p) = self.pieces.front() {
            if !whole(p) || !entire(p) || chunk.len() + p.len() > size {
                break;
            }
            chunk.rest.push(self.pieces.pop_front()?);
        }
        Some(chunk)
    }
}

/// Maps `split` a chunk at a time, spilling each chunk's sorted output as a run, then writes the
/// map output as the merge of the runs. Each chunk is sized from what the previous one held
/// (see [`next_chunk`]), so a mapper that emits many pairs per line gets smaller chunks and one
/// that combines them into few gets larger ones.
#[allow(clippy::too_many_arguments)]
fn run_map_chunked(
    job: &dyn Job,
    store: &ShuffleStore,
    ctx: &TaskContext,
    format: InputFormat,
    reducers: u32,
    buf: &mut Vec<u8>,
    split: &Split,
    budget: u64,
) -> Result<MapDone, TaskFailure> {
    let task = ctx.task();
    let mut runs = Vec::new();
    let mut counters = Counters::default();
    let mut lines = 0;
    let mut chunks = Chunker::new(split);
    let mut size = first_chunk(budget);
    let mut n = 0;
    while let Some(chunk) = chunks.next(size) {
        let text = read_split(&chunk, buf)?;
        let input = MapInput::text(text.text, format, text.offset).with_files(&text.files);
        // The chunk is the split its records come from (bad records name its file); the clone
        // shares the attempt's kept bad records.
        let chunk_ctx = ctx.clone().with_split(chunk.clone());
        let out = guarded("map", || Ok(job.run_map(input, reducers, &chunk_ctx)?))?;
        lines += text.lines;
        counters.merge(&out.counters);
        let held: u64 = out
            .partitions
            .iter()
            .map(|b| b.get_array_memory_size() as u64)
            .sum();
        size = next_chunk(budget, chunk.len(), held);
        tracing::debug!(
            chunk = n,
            input = chunk.len(),
            held,
            next = size,
            "map chunk spilled"
        );
        runs.push(
            store
                .write_spill(ctx.job_id(), task.index, ctx.attempt(), n, &out.partitions)
                .map_err(|e| TaskFailure::retry(e.to_string()))?,
        );
        n += 1;
    }
    // The job's combiner folds the values a key has in several runs (Hadoop's combine on merge).
    let combine = |vals: &[&[u8]], out: &mut Vec<u8>| -> Result<bool, String> {
        job.combine_encoded(&mut vals.iter().copied(), out)
            .map_err(|e| format!("combining map output values: {e}"))
    };
    let info = store
        .write_merged(
            ctx.job_id(),
            task.index,
            ctx.attempt(),
            &runs,
            reducers.max(1) as usize,
            Some(&combine as &Combine<'_>),
        )
        .map_err(|e| TaskFailure::retry(e.to_string()))?;
    store.remove_spills(ctx.job_id(), task.index, ctx.attempt(), runs.len());
    // Hadoop's "spilled records", per run and in bytes of local disk: shown with the job's
    // counters.
    let spilled: u64 = runs.iter().flatten().map(SegmentRef::len).sum();
    counters.add(SPILLED_RUNS_COUNTER, runs.len() as i64);
    counters.add(SPILLED_BYTES_COUNTER, spilled as i64);
    Ok(MapDone {
        lines,
        shuffle_bytes: info.bytes,
        counters,
        bad_records: ctx.take_bad_records(),
    })
}

/// The reducer's input: the k-way merge of the fetched runs, read from disk a batch at a time.
struct MergedInput(StreamMerge);

impl ReduceInput for MergedInput {
    fn current(&self) -> Option<(&[u8], &[u8])> {
        self.0.current()
    }

    fn advance(&mut self) -> Result<(), UdfError> {
        self.0.advance().map_err(|e| UdfError::Input(e.to_string()))
    }
}

/// Merges the partition segments (one sorted run of each map output, on local disk), reduces
/// them and writes `output`. Holds one batch of each run at a time, never the partition.
pub fn run_reduce(
    job: &dyn Job,
    segments: &[SegmentRef],
    output: &Path,
    format: OutputFormat,
    ctx: &TaskContext,
) -> Result<ReduceDone, TaskFailure> {
    let schema = job.output_schema()?;
    let options = OutputOptions::from_params(ctx.params())?;
    let partition_by = ctx.param(PARTITION_BY_PARAM).filter(|c| !c.is_empty());
    let mut writer = TaskWriter::create(output, format, schema, options, partition_by)
        .map_err(|e| TaskFailure::fatal(e.to_string()))?;
    // One batch of each run is held at once: more runs than the budget holds are merged in
    // passes on local disk first.
    let fan_in = match task_memory(ctx)? {
        Some(b) => (b / RUN_MEMORY).max(2) as usize,
        None => usize::MAX,
    };
    let runs = reduce_fan_in(segments.to_vec(), fan_in, &ctx.scratch_dir().join("merge"))
        .map_err(|e| TaskFailure::retry(e.to_string()))?;
    let mut merged =
        MergedInput(StreamMerge::open(&runs).map_err(|e| TaskFailure::retry(e.to_string()))?);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, start: u64, end: u64, file_len: u64) -> Split {
        Split {
            path: path.into(),
            start,
            end,
            file_len,
            rest: Vec::new(),
        }
    }

    /// Every byte of the split lands in exactly one chunk, in order.
    fn covered(chunks: &[Split]) -> Vec<(String, u64, u64)> {
        chunks
            .iter()
            .flat_map(|c| std::iter::once(c).chain(c.rest.iter()))
            .map(|p| (p.path.clone(), p.start, p.end))
            .collect()
    }

    #[test]
    fn chunks_of_changing_sizes_cover_the_split_once() {
        let mut split = file("big", 100, 100 + 10_000, 20_000);
        split.rest = vec![file("s1", 0, 300, 300), file("s2", 0, 300, 300)];
        split.rest.push(file("c.gz", 0, 5_000, 5_000));
        split.rest.push(file("s3", 0, 100, 100));
        let mut chunker = Chunker::new(&split);
        let sizes = [4_000, 1_000, 7_000, 700, 700, 700];
        let mut chunks = Vec::new();
        for size in sizes.iter().cycle() {
            match chunker.next(*size) {
                Some(c) => {
                    assert!(
                        c.len() <= *size || Compression::of(&c.path).is_some(),
                        "{c:?} past {size}"
                    );
                    chunks.push(c);
                }
                None => break,
            }
        }
        let got = covered(&chunks);
        let want = vec![
            ("big".to_string(), 100, 4_100),
            ("big".to_string(), 4_100, 5_100),
            ("big".to_string(), 5_100, 10_100),
            ("s1".to_string(), 0, 300),
            ("s2".to_string(), 0, 300),
            ("c.gz".to_string(), 0, 5_000),
            ("s3".to_string(), 0, 100),
        ];
        assert_eq!(got, want);
        // The tail of the large file is not grouped with the small files after it (a combined
        // split reads its files whole); s1 and s2 fit one chunk of 700 together; the compressed
        // file is read whole, alone.
        assert!(chunks[2].rest.is_empty());
        assert_eq!(chunks[3].path, "s1");
        assert_eq!(chunks[3].rest.len(), 1);
        assert_eq!(chunks[4].path, "c.gz");
        assert!(chunks[4].rest.is_empty());
    }

    #[test]
    fn the_next_chunk_shrinks_when_output_outgrows_input_and_grows_when_it_combines() {
        let budget = 64 << 20;
        let first = first_chunk(budget);
        // A mapper that emits ten times its input: the next chunk is far smaller.
        let exploding = next_chunk(budget, first, 10 * first);
        assert!(exploding < first / 4, "{exploding}");
        assert!(exploding >= MIN_CHUNK);
        // Its cost as estimated stays within the budget.
        let cost = exploding as f64 * (1.0 + 2.0 * 10.0);
        assert!(cost <= budget as f64 * 0.75 + MIN_CHUNK as f64 * 21.0);
        // A combining mapper (word count) whose output is a small share: larger chunks, capped at
        // half the budget.
        let combining = next_chunk(budget, first, first / 50);
        assert!(combining > first, "{combining}");
        assert!(combining <= budget / 2);
        // Nothing held: still at most half.
        assert_eq!(next_chunk(budget, first, 0), budget / 2);
        // A tiny budget: never below the floor.
        assert_eq!(next_chunk(1 << 20, 1 << 20, 100 << 20), MIN_CHUNK);
    }
}
