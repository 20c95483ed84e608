//! A job binary whose jobs fail on purpose, to show that a user's crash fails a task attempt
//! and never the executor: `panic` panics, `abort` calls `std::process::abort()`, `oom`
//! allocates until the worker's memory limit stops it, `segv` writes to an unmapped address
//! (a real segmentation fault). `lines` works: it counts line lengths. `flaky` works too but
//! crashes the first attempt of map task 0 after three lines, and uses the task context: it counts lines
//! in a user counter, keys by line length modulo the job parameter `modulo`, and writes a probe
//! file into its scratch directory. `sales` reads typed records (`store`, `cents`) from CSV with
//! a header or from Parquet, and sums cents by store: the engine's handling of bad input records
//! (wrong field count, a field that does not parse, a corrupt file) shows through it.
//! `poison` counts line lengths as `lines` does but panics on every line holding `POISON`, on
//! every attempt: the record that kills the function must be named, or skipped.
//! `quarantine` is a batch job over Parquet rows `(id, value)` that passes rows through but
//! fails a whole batch when one of its rows has a negative `value`, as vectorised code does:
//! skipping must find those rows by bisecting the batch.
//! `gpu-probe` records, per map task, the `CUDA_VISIBLE_DEVICES` of its worker, the GPUs its
//! context gives it and when it ran (it holds each task 300 ms), for the GPU scheduling test.

// The `segv` job needs one deliberate invalid write; nothing else here is unsafe.
#![allow(unsafe_code)]

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use sluice_udf::{
    BatchEmitter, BatchJob, BatchMapper, BatchReducer, Emitter, InputFormat, JobDef, Mapper,
    Output, Reducer, Registry, SumCombiner, UdfError,
};

/// What the mapper does with its first line.
#[derive(Clone, Copy)]
enum Fault {
    Panic,
    Abort,
    Oom,
    Segv,
    Flaky,
    Poison,
    None,
}

struct Faulty(Fault);

impl Mapper for Faulty {
    type In = str;
    type Key = u64;
    type Value = i64;

    fn map(&self, line: &str, out: &mut Emitter<'_, u64, i64>) {
        match self.0 {
            Fault::Panic => panic!("faulty job: deliberate panic on line {line:?}"),
            Fault::Abort => std::process::abort(),
            Fault::Oom => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page so the memory is really used.
                    hog.push(vec![1u8; 64 << 20]);
                }
            }
            Fault::Segv => {
                // Address 8, not null: the standard library's debug checks would turn a null
                // write into a panic (then an abort), and the point is a real SIGSEGV. The
                // first page is never mapped, and a volatile write is always emitted.
                let bad: *mut u64 = std::ptr::without_provenance_mut(8);
                // SAFETY: none; this write faults on purpose.
                unsafe { bad.write_volatile(line.len() as u64) };
                out.emit(line.len() as u64, 1);
            }
            Fault::Flaky => {
                out.count("lines", 1);
                let ctx = out.context();
                let first_line = out.counters().get("lines") == 1;
                if first_line {
                    let probe = ctx.scratch_dir().join("probe");
                    let own = ctx.scratch_dir().to_string_lossy().contains(ctx.job_id());
                    if own && std::fs::write(&probe, ctx.task().to_string()).is_ok() {
                        out.count("scratch_writes", 1);
                    }
                }
                if ctx.attempt() == 1 && ctx.task().index == 0 && out.counters().get("lines") == 3 {
                    // Counted three lines already: a crash now must not count them twice.
                    std::process::abort();
                }
                let modulo = match ctx.param_as::<u64>("modulo") {
                    Ok(m) => m.unwrap_or(u64::MAX).max(1),
                    Err(e) => panic!("{e}"),
                };
                out.emit(line.len() as u64 % modulo, 1);
            }
            Fault::Poison => {
                if line.contains("POISON") {
                    panic!("faulty job: poisoned record {line:?}");
                }
                out.emit(line.len() as u64, 1)
            }
            Fault::None => out.emit(line.len() as u64, 1),
        }
    }
}

/// Records where and when each map task ran and which GPUs it was given.
struct GpuProbe;

impl Mapper for GpuProbe {
    type In = str;
    type Key = String;
    type Value = i64;

    fn map(&self, _line: &str, out: &mut Emitter<'_, String, i64>) {
        out.count("lines", 1);
        if out.counters().get("lines") != 1 {
            return;
        }
        let now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        };
        let start = now();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let ctx = out.context();
        let probe = format!(
            "{} {} {:?} {start} {}",
            ctx.task(),
            std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into()),
            ctx.gpus(),
            now()
        );
        out.emit(probe, 1);
    }
}

/// A probe and how many tasks recorded it.
#[derive(Serialize, Deserialize)]
struct ProbeRow {
    probe: String,
    n: i64,
}

struct Probes;

impl Reducer for Probes {
    type Key = String;
    type Value = i64;
    type Out = ProbeRow;

    fn reduce(
        &self,
        probe: String,
        values: &mut dyn Iterator<Item = i64>,
        out: &mut Output<'_, ProbeRow>,
    ) {
        out.push(ProbeRow {
            probe,
            n: values.sum(),
        });
    }
}

/// One output row: a line length and how many lines have it.
#[derive(Serialize, Deserialize)]
struct Row {
    len: u64,
    lines: i64,
}

struct Count;

impl Reducer for Count {
    type Key = u64;
    type Value = i64;
    type Out = Row;

    fn reduce(&self, len: u64, values: &mut dyn Iterator<Item = i64>, out: &mut Output<'_, Row>) {
        out.push(Row {
            len,
            lines: values.sum(),
        });
    }
}

/// A `sales` input record: CSV fields by position, JSON keys and Parquet columns by name. It
/// also reads word count output (`word`, `count`), so that tests read Sluice's output back with
/// a Sluice job.
#[derive(Deserialize)]
struct Sale {
    #[serde(alias = "word")]
    store: String,
    #[serde(alias = "count")]
    cents: i64,
}

struct ByStore;

impl Mapper for ByStore {
    type In = Sale;
    type Key = String;
    type Value = i64;

    fn map(&self, sale: &Sale, out: &mut Emitter<'_, String, i64>) {
        out.emit(sale.store.clone(), sale.cents);
    }
}

#[derive(Serialize, Deserialize)]
struct StoreTotal {
    store: String,
    cents: i64,
}

/// A `sales-by-region` input record: the region usually comes from a Hive `region=NAME/`
/// directory of the input (a partition column), the cents from the record.
#[derive(Deserialize)]
struct RegionSale {
    region: String,
    cents: i64,
}

struct ByRegion;

impl Mapper for ByRegion {
    type In = RegionSale;
    type Key = String;
    type Value = i64;

    fn map(&self, sale: &RegionSale, out: &mut Emitter<'_, String, i64>) {
        out.emit(sale.region.clone(), sale.cents);
    }
}

/// Sums cents per key (a store, or a region for `sales-by-region`, still in column `store`).
struct Total;

impl Reducer for Total {
    type Key = String;
    type Value = i64;
    type Out = StoreTotal;

    fn reduce(
        &self,
        store: String,
        cents: &mut dyn Iterator<Item = i64>,
        out: &mut Output<'_, StoreTotal>,
    ) {
        out.push(StoreTotal {
            store,
            cents: cents.sum(),
        });
    }
}

/// The rows of the `quarantine` job.
fn id_value_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("value", DataType::Int64, false),
    ]))
}

/// Passes rows through, refusing any batch with a negative value.
struct RefuseNegative;

impl BatchMapper for RefuseNegative {
    fn schema(&self) -> SchemaRef {
        id_value_schema()
    }

    fn map_batch(&self, batch: &RecordBatch, out: &mut BatchEmitter<'_>) -> Result<(), UdfError> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .cloned()
                .ok_or_else(|| UdfError::User(format!("input needs an int64 column `{name}`")))
        };
        let (id, value) = (col("id")?, col("value")?);
        if let Some(i) = (0..batch.num_rows()).find(|&i| value.value(i) < 0) {
            return Err(UdfError::User(format!(
                "negative value {} for id {}",
                value.value(i),
                id.value(i)
            )));
        }
        out.emit(RecordBatch::try_new(
            id_value_schema(),
            vec![Arc::new(id), Arc::new(value)],
        )?);
        Ok(())
    }
}

/// Writes every row it gets.
struct Rows;

impl BatchReducer for Rows {
    fn schema(&self) -> SchemaRef {
        id_value_schema()
    }

    fn reduce_batch(
        &self,
        rows: &RecordBatch,
        _groups: &[std::ops::Range<usize>],
        out: &mut BatchEmitter<'_>,
    ) -> Result<(), UdfError> {
        out.emit(rows.clone());
        Ok(())
    }

    fn splits_groups(&self) -> bool {
        true
    }
}

fn main() -> ExitCode {
    let mut jobs = Registry::new();
    for (name, fault) in [
        ("panic", Fault::Panic),
        ("abort", Fault::Abort),
        ("oom", Fault::Oom),
        ("segv", Fault::Segv),
        ("flaky", Fault::Flaky),
        ("poison", Fault::Poison),
        ("lines", Fault::None),
    ] {
        jobs.register(JobDef::new(name, Faulty(fault), Count).with_combiner(SumCombiner));
    }
    jobs.register(JobDef::new("gpu-probe", GpuProbe, Probes));
    jobs.register(
        JobDef::new("sales", ByStore, Total)
            .with_combiner(SumCombiner)
            .input_format(InputFormat::Csv { header: true }),
    );
    jobs.register(
        JobDef::new("sales-by-region", ByRegion, Total)
            .with_combiner(SumCombiner)
            .input_format(InputFormat::Jsonl),
    );
    jobs.register(
        BatchJob::new("quarantine", RefuseNegative, Rows, &["id"])
            .input_format(InputFormat::Parquet),
    );
    sluice_worker::main(jobs)
}
