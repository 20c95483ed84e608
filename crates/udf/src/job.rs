//! Type-erased jobs: what the executor calls, whatever the user's key, value and output types.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::BinaryBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, FieldRef, Schema, SchemaRef};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_arrow::schema::{SchemaLike, TracingOptions};
use sluice_core::{InputFormat, OutputFormat};

use crate::{
    encode_sortable, Combiner, Counters, Emitter, Input, KeyOrder, MapInput, Mapper, Output,
    Partitioner, Reducer, TaskContext, UdfError,
};

/// Rows per output batch handed to the output writer.
const OUTPUT_BATCH_ROWS: usize = 64 * 1024;

/// The shuffle's row schema: memcomparable-encoded key and value, sorted by key bytes.
pub fn shuffle_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("value", DataType::Binary, false),
    ]))
}

/// What a map task produced: one key-sorted batch per reduce partition.
#[derive(Debug)]
pub struct MapOutput {
    /// `partitions[p]` holds the rows for reducer `p`, sorted by key bytes.
    pub partitions: Vec<RecordBatch>,
    /// Pairs the mapper emitted (before combining).
    pub records_emitted: u64,
    /// Rows written to the shuffle (after combining).
    pub records_out: u64,
    /// Time spent in the mapper, and in encoding, partitioning and sorting.
    pub timing: (std::time::Duration, std::time::Duration),
    /// User counters of this attempt.
    pub counters: Counters,
}

/// What a reduce task produced.
#[derive(Debug, Default, Clone)]
pub struct ReduceCounts {
    /// Shuffle rows read.
    pub records_in: u64,
    /// Distinct keys seen.
    pub groups: u64,
    /// Output rows.
    pub records_out: u64,
    /// User counters of this attempt.
    pub counters: Counters,
}

/// What a job's author set in code: where it reads and writes by default, how, and with
/// which parameters. Command-line flags override each of them.
///
/// ```
/// use sluice_core::InputFormat;
/// use sluice_udf::{Job, JobDef};
/// use sluice_udf::wordcount::{WordCountMapper, WordCountReducer};
///
/// let job = JobDef::new("wc", WordCountMapper, WordCountReducer)
///     .input("logs/*.txt")
///     .input_format(InputFormat::Text)
///     .output("out/");
/// let d = job.defaults();
/// assert_eq!(d.inputs, ["logs/*.txt"]);
/// assert_eq!(d.output.as_deref(), Some("out/"));
/// assert_eq!(d.reducers, None); // the engine picks
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobDefaults {
    /// Input files, directories or globs.
    pub inputs: Vec<String>,
    /// How the input is read.
    pub input_format: Option<InputFormat>,
    /// Output directory.
    pub output: Option<String>,
    /// Output file format.
    pub output_format: Option<OutputFormat>,
    /// Number of reduce tasks (partitions).
    pub reducers: Option<u32>,
    /// Job parameters.
    pub params: BTreeMap<String, String>,
}

/// Builder methods every job type shares, so each reads `JobDef::new(..).input(..)`.
macro_rules! job_builder_methods {
    () => {
        /// Adds an input file, directory or glob (repeatable).
        pub fn input(mut self, path: impl Into<String>) -> Self {
            self.defaults.inputs.push(path.into());
            self
        }

        /// Sets how the input is read (text lines by default).
        pub fn input_format(mut self, format: sluice_core::InputFormat) -> Self {
            self.defaults.input_format = Some(format);
            self
        }

        /// Sets the output directory.
        pub fn output(mut self, path: impl Into<String>) -> Self {
            self.defaults.output = Some(path.into());
            self
        }

        /// Sets the output file format (Parquet by default).
        pub fn output_format(mut self, format: sluice_core::OutputFormat) -> Self {
            self.defaults.output_format = Some(format);
            self
        }

        /// Sets the number of reduce tasks, which is the number of output files.
        pub fn reducers(mut self, n: u32) -> Self {
            self.defaults.reducers = Some(n);
            self
        }

        /// Skips input records that do not parse, counting them in the `skipped_bad_records`
        /// counter, instead of failing the task (Spark's DROPMALFORMED).
        pub fn skip_bad_records(self) -> Self {
            self.param(crate::input::BAD_RECORDS_PARAM, "skip")
        }

        /// Sets a job parameter, which tasks read with `context().param(name)`.
        pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.defaults.params.insert(name.into(), value.into());
            self
        }
    };
}
pub(crate) use job_builder_methods;

/// A job as the executor sees it: bytes and batches in, batches out.
///
/// [`JobDef`] and [`crate::BatchJob`] implement it; the engine calls `run_map` per split and
/// `run_reduce` per partition. Tests can call [`Job::map_text`]:
///
/// ```
/// use sluice_udf::{Job, Registry};
///
/// let wc = Registry::builtin().get("wordcount").unwrap();
/// let out = wc.map_text("to be or not to be", 2).unwrap();
/// assert_eq!(out.records_emitted, 6);
/// assert_eq!(out.records_out, 4); // combined map-side
/// assert_eq!(wc.output_schema().unwrap().field(0).name(), "word");
/// ```
pub trait Job: Send + Sync {
    /// The registered name.
    fn name(&self) -> &str;

    /// What the job's author set in code (input, output, formats, reducers, parameters).
    fn defaults(&self) -> &JobDefaults;

    /// The Arrow schema of the output rows.
    fn output_schema(&self) -> Result<SchemaRef, UdfError>;

    /// The input columns the mapper reads (Parquet is read only for those); `None` for all.
    fn input_columns(&self) -> Option<Vec<String>> {
        None
    }

    /// Maps one split's records into `partitions` key-sorted shuffle batches.
    fn run_map(
        &self,
        input: MapInput<'_>,
        partitions: u32,
        ctx: &TaskContext,
    ) -> Result<MapOutput, UdfError>;

    /// Reduces key-sorted shuffle rows (`(key, value)` encoded), giving output batches to `sink`.
    fn run_reduce(
        &self,
        input: &mut dyn ReduceInput,
        sink: &mut dyn FnMut(RecordBatch) -> Result<(), UdfError>,
        ctx: &TaskContext,
    ) -> Result<ReduceCounts, UdfError>;

    /// Folds the encoded values of one key with the job's combiner into `out` (encoded), for
    /// the map-side merge of spilled runs; false when the job has no combiner.
    fn combine_encoded(
        &self,
        _values: &mut dyn Iterator<Item = &[u8]>,
        _out: &mut Vec<u8>,
    ) -> Result<bool, UdfError> {
        Ok(false)
    }

    /// Maps `text` (a whole file, in the job's input format) outside any task: for tests.
    fn map_text(&self, text: &str, partitions: u32) -> Result<MapOutput, UdfError> {
        let format = self.defaults().input_format.unwrap_or_default();
        self.run_map(
            MapInput::text(text, format, 0),
            partitions,
            &TaskContext::default(),
        )
    }
}

/// A job built from a mapper, an optional combiner and a reducer with matching types, plus
/// what it reads and writes by default.
///
/// ```
/// use sluice_udf::{Job, JobDef, SumCombiner};
/// use sluice_udf::wordcount::{WordCountMapper, WordCountReducer};
///
/// let job = JobDef::new("wc", WordCountMapper, WordCountReducer)
///     .with_combiner(SumCombiner)
///     .input("corpus/")
///     .output("counts/")
///     .reducers(4)
///     .param("min_count", "2");
/// assert_eq!(job.defaults().reducers, Some(4));
/// assert_eq!(job.defaults().params["min_count"], "2");
/// ```
pub struct JobDef<M: Mapper, R> {
    name: String,
    mapper: M,
    combiner: Option<Box<dyn Combiner<M::Key, M::Value>>>,
    partitioner: Option<Box<dyn Partitioner<M::Key>>>,
    order: Option<Box<dyn KeyOrder<M::Key>>>,
    reducer: R,
    defaults: JobDefaults,
}

impl<M, R> JobDef<M, R>
where
    M: Mapper,
    R: Reducer<Key = M::Key, Value = M::Value>,
{
    /// A job named `name`.
    pub fn new(name: impl Into<String>, mapper: M, reducer: R) -> Self {
        JobDef {
            name: name.into(),
            mapper,
            combiner: None,
            partitioner: None,
            order: None,
            reducer,
            defaults: JobDefaults::default(),
        }
    }

    job_builder_methods!();

    /// Replaces the natural key order reducers see keys in (see [`KeyOrder`]).
    ///
    /// ```
    /// use sluice_udf::{Descending, Job, JobDef, KeyOrder, SmallString, SumCombiner};
    /// use sluice_udf::wordcount::{WordCountMapper, WordCountReducer};
    ///
    /// let job = JobDef::new("wc-desc", WordCountMapper, WordCountReducer)
    ///     .with_combiner(SumCombiner)
    ///     .with_key_order(Descending);
    /// let map = job.map_text("apple kiwi fig", 1).unwrap();
    /// let keys = map.partitions[0].column(0).as_any().downcast_ref::<arrow_array::BinaryArray>().unwrap();
    /// let first: SmallString = Descending.decode(keys.value(0)).unwrap();
    /// assert_eq!(first.as_str(), "kiwi"); // largest first
    /// ```
    pub fn with_key_order(mut self, order: impl KeyOrder<M::Key> + 'static) -> Self {
        self.order = Some(Box::new(order));
        self
    }

    /// Replaces the default partitioning (a hash of the encoded key) with `p`.
    pub fn with_partitioner(mut self, p: impl Partitioner<M::Key> + 'static) -> Self {
        self.partitioner = Some(Box::new(p));
        self
    }

    /// Adds a map-side combiner.
    pub fn with_combiner(mut self, c: impl Combiner<M::Key, M::Value> + 'static) -> Self {
        self.combiner = Some(Box::new(c));
        self
    }
}

fn output_fields<T: Serialize + DeserializeOwned>() -> Result<Vec<FieldRef>, UdfError> {
    Vec::<FieldRef>::from_type::<T>(TracingOptions::default().strings_as_large_utf8(false))
        .map_err(|e| UdfError::Output(e.to_string()))
}

use crate::api::decode_sortable as decode;

/// One encoded pair: its partition, the first key bytes as a number, and arena offsets.
#[derive(Clone, Copy)]
pub(crate) struct Rec {
    partition: u32,
    prefix: u64,
    key: (u32, u32),
    value_end: u32,
}

/// Encodes pairs, hashes keys to partitions and sorts each partition by key bytes.
///
/// One exactly sized record vector and one sort (by partition, then key) keep the number of
/// allocations per task constant: growing per-partition vectors cost more in page faults than
/// the sort itself.
pub(crate) fn partition_sorted<K: Serialize, V: Serialize>(
    pairs: impl Iterator<Item = (K, V)>,
    partitions: u32,
    size_hint: usize,
    partitioner: Option<&dyn Partitioner<K>>,
    order: Option<&dyn KeyOrder<K>>,
) -> Result<Vec<RecordBatch>, UdfError> {
    let n = partitions.max(1);
    let mut arena: Vec<u8> = Vec::with_capacity(size_hint * 32);
    let mut recs: Vec<Rec> = Vec::with_capacity(size_hint);
    for (k, v) in pairs {
        let ks = arena.len();
        match order {
            None => encode_sortable(&k, &mut arena)?,
            Some(o) => o.encode(&k, &mut arena)?,
        }
        let ke = arena.len();
        encode_sortable(&v, &mut arena)?;
        let key = &arena[ks..ke];
        let partition = match partitioner {
            None => (xxhash_rust::xxh3::xxh3_64(key) % n as u64) as u32,
            Some(p) => match p.partition(&k, n) {
                q if q < n => q,
                q => {
                    return Err(UdfError::Partition(format!(
                        "the job's partitioner returned partition {q} for {n} partitions"
                    )))
                }
            },
        };
        recs.push(Rec {
            partition,
            prefix: prefix(key),
            key: (offset(ks)?, offset(ke)?),
            value_end: offset(arena.len())?,
        });
    }
    sorted_batches(&arena, recs, n)
}

/// Pushes one already encoded pair (key bytes, then value bytes, at the end of `arena`).
pub(crate) fn push_raw(
    arena: &mut Vec<u8>,
    recs: &mut Vec<Rec>,
    key: &[u8],
    value: &[u8],
    partition: u32,
) -> Result<(), UdfError> {
    let ks = arena.len();
    arena.extend_from_slice(key);
    let ke = arena.len();
    arena.extend_from_slice(value);
    recs.push(Rec {
        partition,
        prefix: prefix(key),
        key: (offset(ks)?, offset(ke)?),
        value_end: offset(arena.len())?,
    });
    Ok(())
}

/// The default partition of an encoded key: a hash of its bytes.
pub(crate) fn hash_partition(key: &[u8], partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % partitions.max(1) as u64) as u32
}

/// Sorts encoded pairs by partition and key, and builds one shuffle batch per partition.
pub(crate) fn sorted_batches(
    arena: &[u8],
    mut recs: Vec<Rec>,
    n: u32,
) -> Result<Vec<RecordBatch>, UdfError> {
    let bytes = |r: &Rec| &arena[r.key.0 as usize..r.key.1 as usize];
    // Radix-sort on the first 8 key bytes, then a stable pass by partition keeps that order
    // within each partition; the rare runs of equal prefixes are then ordered by whole keys.
    radsort::sort_by_key(&mut recs, |r| r.prefix);
    radsort::sort_by_key(&mut recs, |r| r.partition);
    let mut i = 0;
    while i < recs.len() {
        let (p, x) = (recs[i].partition, recs[i].prefix);
        let j = i + recs[i..]
            .iter()
            .take_while(|r| r.partition == p && r.prefix == x)
            .count();
        if j - i > 1 {
            recs[i..j].sort_unstable_by(|a, b| bytes(a).cmp(bytes(b)));
        }
        i = j;
    }
    let schema = shuffle_schema();
    let mut batches = Vec::with_capacity(n as usize);
    let mut rest = recs.as_slice();
    for p in 0..n {
        let len = rest.iter().take_while(|r| r.partition == p).count();
        let (part, tail) = rest.split_at(len);
        rest = tail;
        let key_bytes: usize = part.iter().map(|r| (r.key.1 - r.key.0) as usize).sum();
        let val_bytes: usize = part.iter().map(|r| (r.value_end - r.key.1) as usize).sum();
        let mut keys = BinaryBuilder::with_capacity(part.len(), key_bytes);
        let mut vals = BinaryBuilder::with_capacity(part.len(), val_bytes);
        for r in part {
            keys.append_value(bytes(r));
            vals.append_value(&arena[r.key.1 as usize..r.value_end as usize]);
        }
        let cols: Vec<ArrayRef> = vec![Arc::new(keys.finish()), Arc::new(vals.finish())];
        batches.push(RecordBatch::try_new(schema.clone(), cols)?);
    }
    Ok(batches)
}

/// An arena offset as u32: a map task's encoded output stays far below 4 GiB.
fn offset(n: usize) -> Result<u32, UdfError> {
    u32::try_from(n).map_err(|_| {
        UdfError::Encode(
            "a map task produced more than 4 GiB of encoded pairs; use smaller splits".into(),
        )
    })
}

/// The first 8 bytes as a big-endian number, zero-padded: orders like the bytes themselves.
fn prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

impl<M, R> Job for JobDef<M, R>
where
    M: Mapper,
    R: Reducer<Key = M::Key, Value = M::Value>,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn defaults(&self) -> &JobDefaults {
        &self.defaults
    }

    fn input_columns(&self) -> Option<Vec<String>> {
        <M::In as crate::Input>::columns()
    }

    fn combine_encoded(
        &self,
        values: &mut dyn Iterator<Item = &[u8]>,
        out: &mut Vec<u8>,
    ) -> Result<bool, UdfError> {
        let Some(c) = self.combiner.as_deref() else {
            return Ok(false);
        };
        let mut acc: Option<M::Value> = None;
        for v in values {
            let v: M::Value = decode(v)?;
            match &mut acc {
                Some(a) => c.combine(a, v),
                None => acc = Some(v),
            }
        }
        if let Some(a) = acc {
            encode_sortable(&a, out)?;
        }
        Ok(true)
    }

    fn output_schema(&self) -> Result<SchemaRef, UdfError> {
        Ok(Arc::new(Schema::new(output_fields::<R::Out>()?)))
    }

    fn run_map(
        &self,
        input: MapInput<'_>,
        partitions: u32,
        ctx: &TaskContext,
    ) -> Result<MapOutput, UdfError> {
        // A guess at distinct keys that saves most rehashing for text-like input.
        let capacity = match input {
            MapInput::Text { text, .. } => (text.len() / 128).clamp(1024, 1 << 20),
            MapInput::Batches(b) => b
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>()
                .clamp(1024, 1 << 20),
        };
        let mut out = match self.combiner.as_deref() {
            Some(c) => Emitter::with_table(c, crate::emit::take_table(capacity)),
            None => Emitter::new(None, 0),
        }
        .in_task(ctx);
        let t0 = std::time::Instant::now();
        let handled = match input {
            MapInput::Text {
                text,
                format: InputFormat::Text,
                ..
            } => self.mapper.map_text(text, &mut out),
            _ => false,
        };
        if !handled {
            let skipped = M::In::for_each_record(input, ctx, |r| self.mapper.map(r, &mut out))?;
            if skipped > 0 {
                out.count(crate::input::SKIPPED_RECORDS_COUNTER, skipped as i64);
            }
        }
        let t1 = std::time::Instant::now();
        let emitted = out.emitted();
        let held = out.len();
        let counters = out.take_counters();
        let partitions = partition_sorted(
            out.drain(),
            partitions,
            held,
            self.partitioner.as_deref(),
            self.order.as_deref(),
        )?;
        crate::emit::keep_table(out.into_table());
        let t2 = std::time::Instant::now();
        Ok(MapOutput {
            partitions,
            records_emitted: emitted,
            records_out: held as u64,
            timing: (t1 - t0, t2 - t1),
            counters,
        })
    }

    fn run_reduce(
        &self,
        input: &mut dyn ReduceInput,
        sink: &mut dyn FnMut(RecordBatch) -> Result<(), UdfError>,
        ctx: &TaskContext,
    ) -> Result<ReduceCounts, UdfError> {
        let fields = output_fields::<R::Out>()?;
        let mut counts = ReduceCounts::default();
        let mut out: Output<'_, R::Out> = Output::in_task(ctx);
        let mut flush = |out: &mut Output<'_, R::Out>, counts: &mut ReduceCounts| {
            let buf = out.rows_mut();
            if buf.is_empty() {
                return Ok(());
            }
            let batch = serde_arrow::to_record_batch(&fields, buf)
                .map_err(|e| UdfError::Output(e.to_string()))?;
            counts.records_out += buf.len() as u64;
            buf.clear();
            sink(batch)
        };
        let mut kb = Vec::new();
        while let Some((k, _)) = input.current() {
            // The key is copied: the rows under it are read (and their batches dropped) as
            // the reducer iterates.
            kb.clear();
            kb.extend_from_slice(k);
            let key: M::Key = match self.order.as_deref() {
                None => decode(&kb)?,
                Some(o) => o.decode(&kb)?,
            };
            let mut group = GroupValues {
                key: &kb,
                input: &mut *input,
                err: None,
                read: 0,
                _v: std::marker::PhantomData,
            };
            self.reducer.reduce(key, &mut group, &mut out);
            for _ in group.by_ref() {}
            counts.records_in += group.read;
            counts.groups += 1;
            if let Some(e) = group.err {
                return Err(e);
            }
            if out.rows().len() >= OUTPUT_BATCH_ROWS {
                flush(&mut out, &mut counts)?;
            }
        }
        flush(&mut out, &mut counts)?;
        counts.counters = out.take_counters();
        Ok(counts)
    }
}

/// The values of one key: the rows at the cursor while their key bytes stay equal.
struct GroupValues<'i, 'k, V> {
    key: &'k [u8],
    input: &'i mut dyn ReduceInput,
    err: Option<UdfError>,
    read: u64,
    _v: std::marker::PhantomData<V>,
}

impl<V: DeserializeOwned> Iterator for GroupValues<'_, '_, V> {
    type Item = V;

    fn next(&mut self) -> Option<V> {
        if self.err.is_some() {
            return None;
        }
        let v = match self.input.current() {
            Some((k, v)) if k == self.key => decode(v),
            _ => return None,
        };
        self.read += 1;
        match v.and_then(|v| self.input.advance().map(|()| v)) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err = Some(e);
                None
            }
        }
    }
}

/// The input of a reduce task: key-sorted encoded `(key, value)` rows under a cursor, read
/// from disk a batch at a time by the engine (so a row borrows the input until it advances).
pub trait ReduceInput {
    /// The row under the cursor; `None` past the last.
    fn current(&self) -> Option<(&[u8], &[u8])>;
    /// Moves to the next row.
    fn advance(&mut self) -> Result<(), UdfError>;
}

/// Rows from an iterator over borrowed pairs, as a [`ReduceInput`] (for tests and in-memory
/// runs).
pub struct IterInput<'a, I: Iterator<Item = (&'a [u8], &'a [u8])>> {
    iter: I,
    cur: Option<(&'a [u8], &'a [u8])>,
}

impl<'a, I: Iterator<Item = (&'a [u8], &'a [u8])>> IterInput<'a, I> {
    /// The rows of `iter`, in its order (which must be key order).
    pub fn new(mut iter: I) -> Self {
        let cur = iter.next();
        IterInput { iter, cur }
    }
}

impl<'a, I: Iterator<Item = (&'a [u8], &'a [u8])>> ReduceInput for IterInput<'a, I> {
    fn current(&self) -> Option<(&[u8], &[u8])> {
        self.cur
    }

    fn advance(&mut self) -> Result<(), UdfError> {
        self.cur = self.iter.next();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use arrow_array::{Array, BinaryArray};

    use crate::wordcount::{WordCountMapper, WordCountReducer};
    use crate::{Job, JobDef, Partitioner, SmallString, SumCombiner};

    struct ByLength;
    impl Partitioner<SmallString> for ByLength {
        fn partition(&self, key: &SmallString, partitions: u32) -> u32 {
            key.as_str().len() as u32 % partitions
        }
    }

    struct Broken;
    impl Partitioner<SmallString> for Broken {
        fn partition(&self, _: &SmallString, partitions: u32) -> u32 {
            partitions + 3
        }
    }

    #[test]
    fn custom_partitioner_places_every_key() {
        let job = JobDef::new("by-length", WordCountMapper, WordCountReducer)
            .with_combiner(SumCombiner)
            .with_partitioner(ByLength);
        let out = job.map_text("a bb ccc dddd a bb eeeee", 3).unwrap();
        for (p, batch) in out.partitions.iter().enumerate() {
            let keys = batch
                .column(0)
                .as_any()
                .downcast_ref::<BinaryArray>()
                .unwrap();
            for i in 0..keys.len() {
                let word: SmallString = memcomparable::from_slice(keys.value(i)).unwrap();
                assert_eq!(word.as_str().len() % 3, p, "{word} in partition {p}");
            }
        }
        let total: usize = out.partitions.iter().map(|b| b.num_rows()).sum();
        assert_eq!(total, 5);
    }

    #[test]
    fn descending_key_order_reaches_the_reducer() {
        use crate::{Descending, TaskContext};
        use arrow_array::StringArray;
        let job = JobDef::new("desc", WordCountMapper, WordCountReducer)
            .with_combiner(SumCombiner)
            .with_key_order(Descending);
        let out = job.map_text("b a c a b a", 1).unwrap();
        let b = &out.partitions[0];
        let k = b.column(0).as_any().downcast_ref::<BinaryArray>().unwrap();
        let v = b.column(1).as_any().downcast_ref::<BinaryArray>().unwrap();
        let mut pairs = crate::IterInput::new((0..k.len()).map(|i| (k.value(i), v.value(i))));
        let mut words = Vec::new();
        job.run_reduce(
            &mut pairs,
            &mut |batch| {
                let w = batch
                    .column(0)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                words.extend(w.iter().flatten().map(String::from));
                Ok(())
            },
            &TaskContext::default(),
        )
        .unwrap();
        assert_eq!(words, ["c", "b", "a"]);
    }

    #[test]
    fn out_of_range_partition_is_an_error() {
        let job = JobDef::new("broken", WordCountMapper, WordCountReducer).with_partitioner(Broken);
        let e = job.map_text("x y", 2).unwrap_err().to_string();
        assert!(e.contains("partition 5 for 2 partitions"), "{e}");
    }
}
