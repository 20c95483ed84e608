//! Vectorised jobs: map and reduce whole Arrow record batches, keyed by named columns.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use sluice_core::InputFormat;

use sluice_core::range::RANGE_BOUNDS_PARAM;

use crate::job::{hash_partition, job_builder_methods, push_raw, sorted_batches, Rec};
use crate::{
    Counters, Job, JobDefaults, MapInput, MapOutput, ReduceCounts, ReduceInput, TaskContext,
    UdfError, BAD_RECORDS_PARAM,
};

/// Rows handed to a batch reducer at once (whole key groups, so it may be more).
const REDUCE_BATCH_ROWS: usize = 64 * 1024;

/// Maps Arrow record batches to record batches that carry the job's key columns.
///
/// Parquet and Arrow input arrive as its record batches; text input as one `line` column.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Float64Array, RecordBatch, StringArray};
/// use arrow_schema::{DataType, Field, Schema, SchemaRef};
/// use sluice_udf::{BatchEmitter, BatchMapper, UdfError};
///
/// /// Upper-cases the `city` column and converts `temp_f` to Celsius.
/// struct Normalise;
/// impl BatchMapper for Normalise {
///     fn schema(&self) -> SchemaRef {
///         Arc::new(Schema::new(vec![
///             Field::new("city", DataType::Utf8, false),
///             Field::new("temp_c", DataType::Float64, false),
///         ]))
///     }
///     fn map_batch(&self, batch: &RecordBatch, out: &mut BatchEmitter<'_>) -> Result<(), UdfError> {
///         let city = batch.column_by_name("city").and_then(|c| c.as_any().downcast_ref::<StringArray>())
///             .ok_or_else(|| UdfError::User("input needs a string column `city`".into()))?;
///         let temp = batch.column_by_name("temp_f").and_then(|c| c.as_any().downcast_ref::<Float64Array>())
///             .ok_or_else(|| UdfError::User("input needs a float column `temp_f`".into()))?;
///         let city: StringArray = city.iter().map(|c| c.map(|c| c.trim().to_uppercase())).collect();
///         let temp: Float64Array = temp.iter().map(|f| f.map(|f| (f - 32.0) / 1.8)).collect();
///         out.emit(RecordBatch::try_new(self.schema(), vec![Arc::new(city), Arc::new(temp)])?);
///         Ok(())
///     }
/// }
///
/// let input = RecordBatch::try_from_iter(vec![
///     ("city", Arc::new(StringArray::from(vec![" oslo"])) as _),
///     ("temp_f", Arc::new(Float64Array::from(vec![50.0])) as _),
/// ]).unwrap();
/// let mut out = BatchEmitter::default();
/// Normalise.map_batch(&input, &mut out).unwrap();
/// assert_eq!(arrow_cast::display::array_value_to_string(out.batches()[0].column(0), 0).unwrap(), "OSLO");
/// ```
pub trait BatchMapper: Send + Sync + 'static {
    /// The schema of every batch this mapper emits; it holds the job's key columns.
    fn schema(&self) -> SchemaRef;

    /// Maps one input batch.
    fn map_batch(&self, batch: &RecordBatch, out: &mut BatchEmitter<'_>) -> Result<(), UdfError>;

    /// True when the mapper needs a split's batches together ([`BatchMapper::map_split`]),
    /// as a training step that takes a slice of the split's rows does.
    fn whole_split(&self) -> bool {
        false
    }

    /// Maps a whole split, its batches in order; by default batch by batch.
    fn map_split(
        &self,
        batches: &[RecordBatch],
        out: &mut BatchEmitter<'_>,
    ) -> Result<(), UdfError> {
        batches.iter().try_for_each(|b| self.map_batch(b, out))
    }
}

/// Reduces record batches whose rows are grouped by key.
///
/// `rows` holds whole key groups in key order, with the mapper's schema; `groups` gives the row
/// range of each key. One call sees many groups, so the work stays vectorised.
///
/// ```
/// use std::ops::Range;
/// use std::sync::Arc;
/// use arrow_array::{Array, Int64Array, RecordBatch, StringArray};
/// use arrow_schema::{DataType, Field, Schema, SchemaRef};
/// use sluice_udf::{BatchEmitter, BatchReducer, UdfError};
///
/// /// Rows per key: the first key column and a count.
/// struct CountRows;
/// impl BatchReducer for CountRows {
///     fn schema(&self) -> SchemaRef {
///         Arc::new(Schema::new(vec![
///             Field::new("key", DataType::Utf8, true),
///             Field::new("rows", DataType::Int64, false),
///         ]))
///     }
///     fn reduce_batch(&self, rows: &RecordBatch, groups: &[Range<usize>], out: &mut BatchEmitter<'_>) -> Result<(), UdfError> {
///         let keys = arrow_select::take::take(rows.column(0), &arrow_array::UInt32Array::from_iter_values(groups.iter().map(|g| g.start as u32)), None)?;
///         let counts = Int64Array::from_iter_values(groups.iter().map(|g| g.len() as i64));
///         out.emit(RecordBatch::try_new(self.schema(), vec![keys, Arc::new(counts)])?);
///         Ok(())
///     }
/// }
///
/// let rows = RecordBatch::try_from_iter(vec![("k", Arc::new(StringArray::from(vec!["a", "a", "b"])) as _)]).unwrap();
/// let mut out = BatchEmitter::default();
/// CountRows.reduce_batch(&rows, &[0..2, 2..3], &mut out).unwrap();
/// assert_eq!(out.batches()[0].num_rows(), 2);
/// ```
pub trait BatchReducer: Send + Sync + 'static {
    /// The schema of every batch this reducer emits (the output's columns).
    fn schema(&self) -> SchemaRef;

    /// Reduces the groups of `rows`.
    fn reduce_batch(
        &self,
        rows: &RecordBatch,
        groups: &[Range<usize>],
        out: &mut BatchEmitter<'_>,
    ) -> Result<(), UdfError>;

    /// True when the reducer handles rows one by one, so that one key's rows may reach it over
    /// several batches: then no key, however many rows it has, is held whole. By default a
    /// batch holds whole key groups (a reducer that aggregates needs them).
    fn splits_groups(&self) -> bool {
        false
    }
}

/// Collects the batches a batch mapper or reducer emits, with its task context and counters.
pub struct BatchEmitter<'c> {
    batches: Vec<RecordBatch>,
    ctx: &'c TaskContext,
    counters: Counters,
}

impl Default for BatchEmitter<'_> {
    fn default() -> Self {
        BatchEmitter {
            batches: Vec::new(),
            ctx: crate::emit::no_task(),
            counters: Counters::default(),
        }
    }
}

impl<'c> BatchEmitter<'c> {
    fn in_task(ctx: &'c TaskContext) -> Self {
        BatchEmitter {
            ctx,
            ..BatchEmitter::default()
        }
    }

    /// Emits a batch.
    pub fn emit(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.batches.push(batch);
        }
    }

    /// The batches emitted so far.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// The task this code runs in.
    pub fn context(&self) -> &'c TaskContext {
        self.ctx
    }

    /// Adds `n` to the user counter `name`.
    pub fn count(&mut self, name: &str, n: i64) {
        self.counters.add(name, n);
    }

    /// The user counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// A vectorised job: a [`BatchMapper`], key columns, and a [`BatchReducer`].
///
/// Rows cross the shuffle in Arrow's row format: the key columns sort and group them, and the
/// whole row travels as the value.
///
/// ```
/// # use std::sync::Arc;
/// # use arrow_array::RecordBatch;
/// # use arrow_schema::SchemaRef;
/// # use sluice_udf::{BatchEmitter, BatchJob, BatchMapper, BatchReducer, Job, UdfError};
/// # struct M; struct R;
/// # impl BatchMapper for M {
/// #     fn schema(&self) -> SchemaRef { Arc::new(arrow_schema::Schema::new(vec![arrow_schema::Field::new("line", arrow_schema::DataType::Utf8, false)])) }
/// #     fn map_batch(&self, b: &RecordBatch, out: &mut BatchEmitter<'_>) -> Result<(), UdfError> { out.emit(b.clone()); Ok(()) }
/// # }
/// # impl BatchReducer for R {
/// #     fn schema(&self) -> SchemaRef { M.schema() }
/// #     fn reduce_batch(&self, b: &RecordBatch, _: &[std::ops::Range<usize>], out: &mut BatchEmitter<'_>) -> Result<(), UdfError> { out.emit(b.clone()); Ok(()) }
/// # }
/// let job = BatchJob::new("dedupe-lines", M, R, &["line"]).reducers(2);
/// let out = job.map_text("b\na\nb\n", 2).unwrap();
/// assert_eq!(out.records_out, 3);
/// ```
pub struct BatchJob<M, R> {
    name: String,
    mapper: M,
    reducer: R,
    keys: Vec<String>,
    defaults: JobDefaults,
}

impl<M: BatchMapper, R: BatchReducer> BatchJob<M, R> {
    /// A job named `name` whose rows are grouped by the columns `keys` of the mapper's schema.
    pub fn new(name: impl Into<String>, mapper: M, reducer: R, keys: &[&str]) -> Self {
        BatchJob {
            name: name.into(),
            mapper,
            reducer,
            keys: keys.iter().map(|k| k.to_string()).collect(),
            defaults: JobDefaults::default(),
        }
    }

    job_builder_methods!();

    /// The range boundaries the coordinator set ([`RANGE_BOUNDS_PARAM`]), encoded as the keys
    /// are, so that encoded keys compare with them; `None` for hash partitioning.
    fn range_bounds(
        &self,
        ctx: &TaskContext,
        idx: &[usize],
        keys: &RowConverter,
    ) -> Result<Option<Vec<Vec<u8>>>, UdfError> {
        let Some(raw) = ctx.param(RANGE_BOUNDS_PARAM) else {
            return Ok(None);
        };
        let bounds = sluice_core::range::decode_bounds(raw)
            .map_err(|e| UdfError::User(format!("job {}: {e}", self.name)))?;
        let schema = self.mapper.schema();
        let col: ArrayRef = match idx {
            [i] if schema.field(*i).data_type() == &DataType::Binary => {
                Arc::new(BinaryArray::from_iter_values(bounds.iter()))
            }
            [i] if schema.field(*i).data_type() == &DataType::Utf8 => Arc::new(
                StringArray::from_iter_values(bounds.iter().map(|b| String::from_utf8_lossy(b))),
            ),
            _ => {
                return Err(UdfError::User(format!(
                    "job {}: range partitioning needs one Binary or Utf8 key column, not {:?}",
                    self.name, self.keys
                )))
            }
        };
        let rows = keys.convert_columns(&[col])?;
        Ok(Some(rows.iter().map(|r| r.as_ref().to_vec()).collect()))
    }

    /// Row converters for the key columns and for whole rows of the mapper's schema.
    /// Maps one batch, a panic made an error.
    fn map_guarded(&self, b: &RecordBatch, out: &mut BatchEmitter<'_>) -> Result<(), UdfError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.mapper.map_batch(b, out)
        }))
        .unwrap_or_else(|p| {
            Err(UdfError::User(format!(
                "panicked: {}",
                crate::panic_message(p.as_ref())
            )))
        })
    }

    /// Maps `b` (rows `base..` of the split); where the mapper fails, bisects the batch to find
    /// the rows it fails on, sets each aside as a bad record (file, row, error and the row as
    /// JSON) and maps the rest: quarantine of single records for batch code. What a failed try
    /// emitted or counted is dropped.
    fn map_isolating(
        &self,
        b: &RecordBatch,
        base: u64,
        file: &str,
        out: &mut BatchEmitter<'_>,
    ) -> Result<(), UdfError> {
        let (emitted, counters) = (out.batches.len(), out.counters.clone());
        let Err(e) = self.map_guarded(b, out) else {
            return Ok(());
        };
        out.batches.truncate(emitted);
        out.counters = counters;
        let n = b.num_rows();
        if n <= 1 {
            let row = row_json(b);
            out.count(crate::input::SKIPPED_RECORDS_COUNTER, n as i64);
            return out.context().keep_bad_record(
                file,
                base,
                format!("the batch mapper failed on row {base} of the split: {e}"),
                &row,
            );
        }
        let half = n / 2;
        self.map_isolating(&b.slice(0, half), base, file, out)?;
        self.map_isolating(&b.slice(half, n - half), base + half as u64, file, out)
    }

    fn converters(&self) -> Result<(Vec<usize>, RowConverter, RowConverter), UdfError> {
        let schema = self.mapper.schema();
        let mut idx = Vec::with_capacity(self.keys.len());
        for k in &self.keys {
            idx.push(schema.index_of(k).map_err(|_| {
                UdfError::User(format!(
                    "job {}: key column '{k}' is not in the batch mapper's schema ({})",
                    self.name,
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?);
        }
        let field = |i: &usize| SortField::new(schema.field(*i).data_type().clone());
        let keys = RowConverter::new(idx.iter().map(field).collect())?;
        let all: Vec<usize> = (0..schema.fields().len()).collect();
        let rows = RowConverter::new(all.iter().map(field).collect())?;
        Ok((idx, keys, rows))
    }
}

/// Checks that user code emitted batches of the schema it declared.
/// A one-row batch as a JSON object, for the bad-records file.
fn row_json(b: &RecordBatch) -> String {
    let mut w = arrow_json::LineDelimitedWriter::new(Vec::new());
    if w.write(b).and_then(|_| w.finish()).is_err() {
        return String::new();
    }
    String::from_utf8(w.into_inner())
        .map(|s| s.trim_end().to_string())
        .unwrap_or_default()
}

fn check_schema(job: &str, who: &str, got: &Schema, want: &Schema) -> Result<(), UdfError> {
    if got.fields() == want.fields() {
        return Ok(());
    }
    Err(UdfError::User(format!(
        "job {job}: the {who} emitted a batch with columns {got:?} but its schema() says {want:?}"
    )))
}

impl<M: BatchMapper, R: BatchReducer> Job for BatchJob<M, R> {
    fn name(&self) -> &str {
        &self.name
    }

    fn defaults(&self) -> &JobDefaults {
        &self.defaults
    }

    fn output_schema(&self) -> Result<SchemaRef, UdfError> {
        Ok(self.reducer.schema())
    }

    fn run_map(
        &self,
        input: MapInput<'_>,
        partitions: u32,
        ctx: &TaskContext,
    ) -> Result<MapOutput, UdfError> {
        let t0 = std::time::Instant::now();
        let lines: Vec<RecordBatch>;
        let batches: &[RecordBatch] = match input {
            MapInput::Batches(b) => b,
            MapInput::Text {
                text,
                format: InputFormat::Text,
                ..
            } => {
                let schema = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, false)]));
                let col = Arc::new(StringArray::from_iter_values(text.lines()));
                lines = vec![RecordBatch::try_new(schema, vec![col])?];
                &lines
            }
            MapInput::Text { text, format, .. } => {
                lines = decode_text(text, format, ctx.param(CSV_COLUMNS_PARAM)).map_err(|e| {
                    UdfError::Input(format!(
                        "job {}: reading {} input as Arrow rows: {e}",
                        self.name,
                        format.as_str()
                    ))
                })?;
                &lines
            }
        };
        let mut out = BatchEmitter::in_task(ctx);
        let skip = ctx.param(BAD_RECORDS_PARAM) == Some("skip");
        let file = match ctx.split() {
            Some(s) => s.path.clone(),
            None => format!("task {}", ctx.task()),
        };
        let mut row0 = 0u64;
        if self.mapper.whole_split() {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.mapper.map_split(batches, &mut out)
            }))
            .unwrap_or_else(|p| {
                Err(UdfError::User(format!(
                    "panicked: {}",
                    crate::panic_message(p.as_ref())
                )))
            })
            .map_err(|e| UdfError::User(format!("{file}: the mapper failed on the split: {e}")))?;
        }
        for b in batches.iter().filter(|_| !self.mapper.whole_split()) {
            if skip {
                self.map_isolating(b, row0, &file, &mut out)?;
            } else {
                self.map_guarded(b, &mut out).map_err(|e| {
                    UdfError::User(format!(
                        "{file}: the batch mapper failed on rows {row0}..{} of the split: {e}; \
                         pass --param {BAD_RECORDS_PARAM}=skip to set the failing rows aside",
                        row0 + b.num_rows() as u64
                    ))
                })?;
            }
            row0 += b.num_rows() as u64;
        }
        let t1 = std::time::Instant::now();
        let schema = self.mapper.schema();
        let (idx, keys, rows) = self.converters()?;
        let bounds = self.range_bounds(ctx, &idx, &keys)?;
        let n: usize = out.batches.iter().map(|b| b.num_rows()).sum();
        let mut arena = Vec::with_capacity(n * 32);
        let mut recs: Vec<Rec> = Vec::with_capacity(n);
        for b in &out.batches {
            check_schema(&self.name, "batch mapper", &b.schema(), &schema)?;
            let key_cols: Vec<_> = idx.iter().map(|i| b.column(*i).clone()).collect();
            let k = keys.convert_columns(&key_cols)?;
            let v = rows.convert_columns(b.columns())?;
            for i in 0..b.num_rows() {
                let key = k.row(i);
                let partition = match &bounds {
                    Some(b) => sluice_core::range::partition_of(b, key.as_ref()),
                    None => hash_partition(key.as_ref(), partitions),
                };
                push_raw(
                    &mut arena,
                    &mut recs,
                    key.as_ref(),
                    v.row(i).as_ref(),
                    partition,
                )?;
            }
        }
        let parts = sorted_batches(&arena, recs, partitions.max(1))?;
        Ok(MapOutput {
            partitions: parts,
            records_emitted: n as u64,
            records_out: n as u64,
            timing: (t1 - t0, t1.elapsed()),
            counters: std::mem::take(&mut out.counters),
        })
    }

    fn run_reduce(
        &self,
        input: &mut dyn ReduceInput,
        sink: &mut dyn FnMut(RecordBatch) -> Result<(), UdfError>,
        ctx: &TaskContext,
    ) -> Result<ReduceCounts, UdfError> {
        let schema = self.mapper.schema();
        let out_schema = self.reducer.schema();
        let (_, _, rows) = self.converters()?;
        let parser = rows.parser();
        let mut counts = ReduceCounts::default();
        let mut out = BatchEmitter::in_task(ctx);
        // The encoded rows of whole key groups, copied out of the input (which reads on).
        let mut values = Vec::new();
        let mut ends: Vec<usize> = Vec::new();
        let mut groups: Vec<Range<usize>> = Vec::new();
        let mut last_key: Vec<u8> = Vec::new();
        let mut flush = |values: &mut Vec<u8>,
                         ends: &mut Vec<usize>,
                         groups: &mut Vec<Range<usize>>,
                         out: &mut BatchEmitter<'_>,
                         counts: &mut ReduceCounts|
         -> Result<(), UdfError> {
            if ends.is_empty() {
                return Ok(());
            }
            let starts = std::iter::once(0).chain(ends.iter().copied());
            let cols = rows.convert_rows(
                starts
                    .zip(ends.iter())
                    .map(|(a, b)| parser.parse(&values[a..*b])),
            )?;
            let batch = RecordBatch::try_new(schema.clone(), cols)?;
            self.reducer.reduce_batch(&batch, groups, out)?;
            counts.records_in += ends.len() as u64;
            counts.groups += groups.len() as u64;
            values.clear();
            ends.clear();
            groups.clear();
            for b in out.batches.drain(..) {
                check_schema(&self.name, "batch reducer", &b.schema(), &out_schema)?;
                counts.records_out += b.num_rows() as u64;
                sink(b)?;
            }
            Ok(())
        };
        let mut first = true;
        let split = self.reducer.splits_groups();
        while let Some((k, v)) = input.current() {
            // A reducer that takes rows one by one gets a hot key's rows a batch at a time.
            if split && ends.len() >= REDUCE_BATCH_ROWS {
                flush(&mut values, &mut ends, &mut groups, &mut out, &mut counts)?;
                first = true;
            }
            if first || last_key != k {
                if ends.len() >= REDUCE_BATCH_ROWS {
                    flush(&mut values, &mut ends, &mut groups, &mut out, &mut counts)?;
                }
                groups.push(ends.len()..ends.len());
                last_key.clear();
                last_key.extend_from_slice(k);
                first = false;
            }
            values.extend_from_slice(v);
            ends.push(values.len());
            if let Some(g) = groups.last_mut() {
                g.end = ends.len();
            }
            input.advance()?;
        }
        flush(&mut values, &mut ends, &mut groups, &mut out, &mut counts)?;
        counts.counters = std::mem::take(&mut out.counters);
        Ok(counts)
    }
}

/// The job parameter naming a batch job's CSV columns, comma-separated (the header line
/// reaches the job already skipped); without it they are `column_1`, `column_2`, ...
pub const CSV_COLUMNS_PARAM: &str = "sluice.csv.columns";

/// CSV (header already skipped; columns named by `names`) or JSON lines as Arrow batches,
/// the column types inferred from the split's records (numbers become Int64 or Float64).
fn decode_text(
    text: &str,
    format: InputFormat,
    names: Option<&str>,
) -> Result<Vec<RecordBatch>, arrow_schema::ArrowError> {
    use std::io::Cursor;
    let infer_rows = Some(10_000);
    match format {
        InputFormat::Csv { .. } => {
            let fmt = arrow_csv::reader::Format::default().with_header(false);
            let (inferred, _) = fmt.infer_schema(Cursor::new(text.as_bytes()), infer_rows)?;
            let schema = match names {
                None => inferred,
                Some(n) => {
                    let names: Vec<&str> = n.split(',').map(str::trim).collect();
                    if names.len() != inferred.fields().len() {
                        return Err(arrow_schema::ArrowError::InvalidArgumentError(format!(
                            "{CSV_COLUMNS_PARAM} names {} columns, the records have {}",
                            names.len(),
                            inferred.fields().len()
                        )));
                    }
                    Schema::new(
                        inferred
                            .fields()
                            .iter()
                            .zip(names)
                            .map(|(f, n)| f.as_ref().clone().with_name(n))
                            .collect::<Vec<_>>(),
                    )
                }
            };
            arrow_csv::ReaderBuilder::new(Arc::new(schema))
                .with_format(fmt)
                .build(Cursor::new(text.as_bytes()))?
                .collect()
        }
        InputFormat::Jsonl => {
            let (schema, _) =
                arrow_json::reader::infer_json_schema(Cursor::new(text.as_bytes()), infer_rows)?;
            arrow_json::ReaderBuilder::new(Arc::new(schema))
                .build(Cursor::new(text.as_bytes()))?
                .collect()
        }
        other => Err(arrow_schema::ArrowError::InvalidArgumentError(format!(
            "a batch job reads parquet, arrow, text, csv or jsonl input, not {}",
            other.as_str()
        ))),
    }
}
