//! The built-in `train-step` job: one synchronous step-round of data-parallel training as a
//! MapReduce. Each map computes the summed gradient of its split under the parameters of the
//! round's checkpoint (read once per process and round) and emits one gradient slice per
//! parameter shard; reducer `r` is the parameter server of shard `r`: it sums the slices (in
//! map order, so the result does not depend on fetch order), averages over the rows, applies
//! the optimizer to its slice of the parameters and optimizer state, and writes the slice.
//! The driver (`sluice train`) assembles the slices into the next checkpoint.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow_array::{
    Array, ArrayRef, BinaryArray, Float32Array, Float64Array, RecordBatch, UInt32Array, UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::train::{read_checkpoint, Batch, Model, OptState, Optimizer, Params, Tensor};
use crate::{
    BatchEmitter, BatchJob, BatchMapper, BatchReducer, InputFormat, TaskContext, UdfError,
};

/// Job parameter: the checkpoint (safetensors) of this round's parameters and optimizer state.
pub const CHECKPOINT_PARAM: &str = "sluice.train.checkpoint";
/// Job parameter: the model (`logistic-regression`, or `mlp:HIDDEN`).
pub const MODEL_PARAM: &str = "sluice.train.model";
/// Job parameter: the optimizer (`sgd:LR:MOMENTUM` or `adam:LR`).
pub const OPTIMIZER_PARAM: &str = "sluice.train.optimizer";
/// Job parameter: the label column (default `label`); every other column is a feature.
pub const LABEL_PARAM: &str = "sluice.train.label";
/// Job parameter: the number of features (every column but the label).
pub const FEATURES_PARAM: &str = "sluice.train.features";
/// Job parameter: the number of parameter shards (reducers).
pub const SHARDS_PARAM: &str = "sluice.train.shards";
/// Job parameter: the round's step within the epoch (0-based).
pub const STEP_PARAM: &str = "sluice.train.step";
/// Job parameter: steps per epoch (each takes its share of every split's rows).
pub const STEPS_PARAM: &str = "sluice.train.steps";
/// Job parameter: the epoch's shuffle seed; without it each step takes its rows in file order.
pub const SHUFFLE_PARAM: &str = "sluice.train.shuffle_seed";
/// Job parameter: a column of sample ids, not a feature.
pub const ID_PARAM: &str = "sluice.train.id";
/// Job parameter: a directory where maps record the ids of the rows they used (tests).
pub const LEDGER_PARAM: &str = "sluice.train.ledger";
/// Job parameter: the learning-rate factor of this round (the schedule's value; default 1).
pub const LR_SCALE_PARAM: &str = "sluice.train.lr_scale";
/// Job parameter: the training run a round belongs to (for status).
pub const RUN_PARAM: &str = "sluice.train.run";
/// Job parameter: the round's epoch (1-based, for status).
pub const EPOCH_PARAM: &str = "sluice.train.epoch";
/// Job parameter: the metrics of the run's finished epochs as a JSON array, kept in the round's
/// job status so that `sluice status --json` shows them.
pub const HISTORY_PARAM: &str = "sluice.train.history";
/// Counter: the summed loss of the round, in millionths.
pub const LOSS_COUNTER: &str = "train_loss_micro";
/// Counter: rows predicted right in the round.
pub const CORRECT_COUNTER: &str = "train_correct";
/// Counter: rows seen in the round.
pub const ROWS_COUNTER: &str = "train_rows";

/// Makes a model from the arguments of its spec (what follows `NAME:` in [`MODEL_PARAM`]; empty
/// when none).
pub type ModelFactory = Arc<dyn Fn(&str) -> Result<Box<dyn Model>, UdfError> + Send + Sync>;

/// The models a `train-step` job knows: the built-in ones and those a job binary registers
/// ([`crate::Registry::register_model`]).
#[derive(Clone, Default)]
pub struct Models {
    custom: std::collections::BTreeMap<String, ModelFactory>,
}

impl Models {
    /// Adds (or replaces) model `name`, made by `factory` from its spec's arguments.
    pub fn add(
        &mut self,
        name: &str,
        factory: impl Fn(&str) -> Result<Box<dyn Model>, UdfError> + Send + Sync + 'static,
    ) {
        self.custom.insert(name.to_string(), Arc::new(factory));
    }

    /// The model `spec` names: `NAME` or `NAME:ARGS`, a registered model first, then the
    /// built-in `logistic-regression` and `mlp:HIDDEN`.
    pub fn get(&self, spec: &str) -> Result<Box<dyn Model>, UdfError> {
        let (name, args) = spec.split_once(':').unwrap_or((spec, ""));
        match self.custom.get(name) {
            Some(f) => f(args),
            None => model_named(spec).map_err(|e| {
                if self.custom.is_empty() {
                    e
                } else {
                    let names: Vec<&str> = self.custom.keys().map(String::as_str).collect();
                    UdfError::Param(format!("{e}; this binary also has: {}", names.join(", ")))
                }
            }),
        }
    }
}

/// A built-in model by its name in [`MODEL_PARAM`].
pub fn model_named(name: &str) -> Result<Box<dyn Model>, UdfError> {
    match name.split_once(':') {
        None if name == "logistic-regression" => Ok(Box::new(crate::train::LogisticRegression)),
        Some(("mlp", h)) => h
            .parse()
            .map(|hidden| Box::new(crate::train::Mlp { hidden }) as Box<dyn Model>)
            .map_err(|_| {
                UdfError::Param(format!("{MODEL_PARAM}={name}: `mlp:HIDDEN` wants a number"))
            }),
        _ => Err(UdfError::Param(format!(
            "{MODEL_PARAM}={name}: models are logistic-regression and mlp:HIDDEN"
        ))),
    }
}

/// An optimizer by its spec in [`OPTIMIZER_PARAM`].
pub fn optimizer_named(spec: &str) -> Result<Optimizer, UdfError> {
    let bad = || {
        UdfError::Param(format!(
            "{OPTIMIZER_PARAM}={spec}: give sgd:LR:MOMENTUM or adam:LR"
        ))
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let num = |s: &str| s.parse::<f32>().map_err(|_| bad());
    match parts.as_slice() {
        ["sgd", lr, m] => Ok(Optimizer::Sgd {
            lr: num(lr)?,
            momentum: num(m)?,
        }),
        ["sgd", lr] => Ok(Optimizer::Sgd {
            lr: num(lr)?,
            momentum: 0.0,
        }),
        ["adam", lr] => Ok(Optimizer::Adam {
            lr: num(lr)?,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }),
        _ => Err(bad()),
    }
}

/// The flat index range of shard `r` of `shards` over `len` parameters.
pub fn shard_range(len: usize, shards: usize, r: usize) -> Range<usize> {
    let shards = shards.max(1);
    (r * len / shards)..((r + 1) * len / shards)
}

/// A round's broadcast: the model, its parameters and optimizer state, read once per process.
struct Round {
    model: Box<dyn Model>,
    params: Params,
    state: OptState,
    /// Parameters and optimizer moments flattened once, for the shards' slices.
    flat: Vec<f32>,
    flat_m: Vec<f32>,
    flat_v: Vec<f32>,
}

fn flatten(p: &Params) -> Vec<f32> {
    p.0.iter().flat_map(|t| t.data.iter().copied()).collect()
}

/// The last round read in this process, by checkpoint path.
static ROUND: Mutex<Option<(String, Arc<Round>)>> = Mutex::new(None);

fn round(ctx: &TaskContext, models: &Models) -> Result<Arc<Round>, UdfError> {
    let dim: usize = ctx
        .param_as(FEATURES_PARAM)?
        .ok_or_else(|| UdfError::Param(format!("train-step needs {FEATURES_PARAM}")))?;
    let path = ctx
        .param(CHECKPOINT_PARAM)
        .ok_or_else(|| UdfError::Param(format!("train-step needs {CHECKPOINT_PARAM}")))?
        .to_string();
    let mut cache = ROUND.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((p, r)) = cache.as_ref() {
        if *p == path {
            return Ok(r.clone());
        }
    }
    let model = models.get(ctx.param(MODEL_PARAM).unwrap_or("logistic-regression"))?;
    let bytes = ctx.read_blob(&path)?;
    let (params, state, _) = read_checkpoint(&bytes, &model.init(dim, 0))
        .map_err(|e| UdfError::Input(format!("{path}: {e}")))?;
    let r = Arc::new(Round {
        model,
        flat: flatten(&params),
        flat_m: flatten(&state.m),
        flat_v: flatten(&state.v),
        params,
        state,
    });
    *cache = Some((path, r.clone()));
    Ok(r)
}

fn shards(ctx: &TaskContext) -> usize {
    ctx.param(SHARDS_PARAM)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn f32_column(batch: &RecordBatch, i: usize) -> Result<Vec<f32>, UdfError> {
    let c = batch.column(i);
    let nulls = c.logical_nulls();
    if let Some(row) = (0..c.len()).find(|&r| nulls.as_ref().is_some_and(|n| n.is_null(r))) {
        return Err(UdfError::Input(format!(
            "column '{}' has no value in row {row} of a batch; training needs every feature and the label",
            batch.schema().field(i).name()
        )));
    }
    if let Some(a) = c.as_any().downcast_ref::<Float32Array>() {
        return Ok(a.values().to_vec());
    }
    if let Some(a) = c.as_any().downcast_ref::<Float64Array>() {
        return Ok(a.values().iter().map(|v| *v as f32).collect());
    }
    // CSV and JSON numbers without a fraction are read as integers (labels 0 and 1).
    if let Some(a) = c.as_any().downcast_ref::<arrow_array::Int64Array>() {
        return Ok(a.values().iter().map(|v| *v as f32).collect());
    }
    Err(UdfError::Input(format!(
        "column '{}' is {}; training reads float32, float64 or int64 columns",
        batch.schema().field(i).name(),
        c.data_type()
    )))
}

/// Computes one batch's gradient and emits its slice per shard.
struct GradientMapper {
    models: Models,
}

fn map_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("shard", DataType::UInt32, false),
        Field::new("map", DataType::UInt32, false),
        Field::new("seq", DataType::UInt32, false),
        Field::new("grad", DataType::Binary, false),
        Field::new("loss", DataType::Float64, false),
        Field::new("correct", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
    ]))
}

impl BatchMapper for GradientMapper {
    fn schema(&self) -> SchemaRef {
        map_schema()
    }

    fn whole_split(&self) -> bool {
        true
    }

    fn map_batch(&self, batch: &RecordBatch, out: &mut BatchEmitter<'_>) -> Result<(), UdfError> {
        self.map_split(std::slice::from_ref(batch), out)
    }

    fn map_split(
        &self,
        batches: &[RecordBatch],
        out: &mut BatchEmitter<'_>,
    ) -> Result<(), UdfError> {
        let ctx = out.context();
        let Some(first) = batches.first() else {
            return Ok(());
        };
        let label = ctx.param(LABEL_PARAM).unwrap_or("label");
        let id_col = ctx.param(ID_PARAM);
        let schema = first.schema();
        let li = schema.index_of(label).map_err(|_| {
            UdfError::Input(format!(
                "no label column '{label}' (set {LABEL_PARAM}); columns: {:?}",
                schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
            ))
        })?;
        let ii = match id_col {
            Some(c) => Some(
                schema
                    .index_of(c)
                    .map_err(|_| UdfError::Input(format!("no id column '{c}' ({ID_PARAM})")))?,
            ),
            None => None,
        };
        let feature_cols: Vec<usize> = (0..first.num_columns())
            .filter(|&i| i != li && Some(i) != ii)
            .collect();
        let dim = feature_cols.len();
        // The split's rows, row-major, decoded once per process (kept across rounds).
        let with_ids = ii.is_some() && ctx.param(LEDGER_PARAM).is_some();
        let data = split_rows(ctx, batches, li, ii.filter(|_| with_ids), &feature_cols)?;
        // This round's step takes positions [k n / S, (k + 1) n / S) of the epoch's order of
        // the split's rows: over the S steps of an epoch every row is used once.
        let n = data.labels.len();
        let steps: usize = ctx.param_as(STEPS_PARAM)?.unwrap_or(1).max(1);
        let step: usize = ctx.param_as(STEP_PARAM)?.unwrap_or(0);
        let (from, to) = (step * n / steps, (step + 1) * n / steps);
        let (features, labels, ids): (
            std::borrow::Cow<'_, [f32]>,
            std::borrow::Cow<'_, [f32]>,
            Vec<String>,
        ) = match ctx.param_as::<u64>(SHUFFLE_PARAM)? {
            None => (
                data.features[from * dim..to * dim].into(),
                data.labels[from..to].into(),
                data.ids
                    .get(from..to)
                    .map(<[String]>::to_vec)
                    .unwrap_or_default(),
            ),
            Some(seed) => {
                let order = data.order(seed, ctx.task().index);
                let picked = &order[from..to];
                let mut f = Vec::with_capacity(picked.len() * dim);
                for &r in picked {
                    f.extend_from_slice(&data.features[r * dim..(r + 1) * dim]);
                }
                let l: Vec<f32> = picked.iter().map(|&r| data.labels[r]).collect();
                let ids = if data.ids.is_empty() {
                    Vec::new()
                } else {
                    picked.iter().map(|&r| data.ids[r].clone()).collect()
                };
                (f.into(), l.into(), ids)
            }
        };
        let round = round(ctx, &self.models)?;
        if round
            .params
            .0
            .first()
            .is_some_and(|t| t.name == "w" && t.data.len() != dim)
        {
            return Err(UdfError::Input(format!(
                "the input has {dim} feature columns, the model {}",
                round.params.0[0].data.len()
            )));
        }
        let batch = Batch {
            features: &features,
            labels: &labels,
            dim,
        };
        let (grad, m) = if local_steps(ctx)? > 0 {
            local_round(ctx, &round, &batch)?
        } else {
            gradient(ctx, round.model.as_ref(), &batch, &round.params)?
        };
        if let Some(dir) = ctx.param(LEDGER_PARAM) {
            write_ledger(Path::new(dir), ctx, &ids)?;
        }
        let flat = flatten(&grad);
        let n = shards(ctx);
        let map = ctx.task().index;
        let slices: Vec<Vec<u8>> = (0..n)
            .map(|r| {
                flat[shard_range(flat.len(), n, r)]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect()
            })
            .collect();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt32Array::from_iter_values(0..n as u32)),
            Arc::new(UInt32Array::from_iter_values(std::iter::repeat_n(map, n))),
            Arc::new(UInt32Array::from_iter_values(std::iter::repeat_n(0, n))),
            Arc::new(BinaryArray::from_iter_values(slices.iter())),
            Arc::new(Float64Array::from_iter_values(std::iter::repeat_n(
                m.loss, n,
            ))),
            Arc::new(UInt64Array::from_iter_values(std::iter::repeat_n(
                m.correct, n,
            ))),
            Arc::new(UInt64Array::from_iter_values(std::iter::repeat_n(
                m.rows, n,
            ))),
        ];
        out.emit(RecordBatch::try_new(map_schema(), columns)?);
        Ok(())
    }
}

/// The round's gradient: on the task's GPU when it holds one and the model has a GPU path,
/// else on all cores.
fn gradient(
    ctx: &TaskContext,
    model: &dyn Model,
    batch: &Batch<'_>,
    params: &Params,
) -> Result<(Params, crate::train::Metrics), UdfError> {
    let Some(&device) = ctx.gpus().first() else {
        return Ok(model.gradient(batch, params));
    };
    match model.gradient_gpu(batch, params, device) {
        Some(Ok(g)) => Ok(g),
        Some(Err(e)) => Err(UdfError::Gpu(format!(
            "task {} of job {}: {} on GPU {device}: {e}",
            ctx.task(),
            ctx.job_id(),
            model.name()
        ))),
        None => {
            tracing::warn!(
                model = model.name(),
                "the model has no GPU path; its gradient runs on the CPU"
            );
            Ok(model.gradient(batch, params))
        }
    }
}

/// A split's rows decoded for training: features row-major, labels, and sample ids when a
/// ledger wants them.
struct SplitRows {
    features: Vec<f32>,
    labels: Vec<f32>,
    ids: Vec<String>,
    /// The epoch order last drawn, by (seed, map): each of an epoch's steps uses it.
    order: Mutex<Option<EpochOrder>>,
}

/// An epoch's order of a split's rows, with the (seed, map) it was drawn for.
type EpochOrder = (u64, u32, Arc<Vec<usize>>);

impl SplitRows {
    /// The order of these rows in the epoch of `seed`, drawn once per epoch, not per step.
    fn order(&self, seed: u64, map: u32) -> Arc<Vec<usize>> {
        let mut last = self.order.lock().unwrap_or_else(|p| p.into_inner());
        match last.as_ref() {
            Some((s, m, o)) if (*s, *m) == (seed, map) => o.clone(),
            _ => {
                let o = Arc::new(epoch_order(self.labels.len(), seed, map));
                *last = Some((seed, map, o.clone()));
                o
            }
        }
    }
}

/// Decoded splits of caching jobs (`sluice.cache=true`), kept in this process within the
/// cache budget (`sluice.cache.bytes`, as the task runtime's split cache): the Arrow batches are cached by the task runtime, but
/// turning their columns into rows cost each round more than the gradient of a linear model.
static SPLIT_ROWS: Mutex<std::collections::VecDeque<(String, Arc<SplitRows>, u64)>> =
    Mutex::new(std::collections::VecDeque::new());

fn split_rows(
    ctx: &TaskContext,
    batches: &[RecordBatch],
    label: usize,
    id: Option<usize>,
    feature_cols: &[usize],
) -> Result<Arc<SplitRows>, UdfError> {
    let key = match ctx.split() {
        Some(sp) if ctx.param(sluice_core::CACHE_PARAM) == Some("true") => {
            Some(format!("{sp:?}|{label}|{id:?}|{feature_cols:?}"))
        }
        _ => None,
    };
    if let Some(k) = &key {
        let cache = SPLIT_ROWS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = cache.iter().find(|e| &e.0 == k) {
            return Ok(e.1.clone());
        }
    }
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut features = Vec::with_capacity(n * feature_cols.len());
    let mut labels = Vec::with_capacity(n);
    let mut ids = Vec::new();
    for b in batches {
        let cols = feature_cols
            .iter()
            .map(|&i| f32_column(b, i))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..b.num_rows() {
            features.extend(cols.iter().map(|c| c[r]));
        }
        labels.extend(f32_column(b, label)?);
        if let Some(i) = id {
            let col = b.column(i);
            ids.extend(
                (0..b.num_rows()).map(|r| {
                    arrow_cast::display::array_value_to_string(col, r).unwrap_or_default()
                }),
            );
        }
    }
    let rows = Arc::new(SplitRows {
        features,
        labels,
        ids,
        order: Mutex::new(None),
    });
    if let Some(k) = key {
        let size = (rows.features.len() + rows.labels.len()) as u64 * 4
            + rows.ids.iter().map(|s| s.len() as u64 + 24).sum::<u64>();
        let budget = ctx
            .param(sluice_core::CACHE_BYTES_PARAM)
            .and_then(|v| sluice_core::parse_byte_size(v).ok())
            .unwrap_or(sluice_core::DEFAULT_CACHE_BYTES);
        if size <= budget {
            let mut cache = SPLIT_ROWS.lock().unwrap_or_else(|p| p.into_inner());
            let mut held: u64 = cache.iter().map(|e| e.2).sum();
            while held + size > budget {
                match cache.pop_front() {
                    Some(old) => held -= old.2,
                    None => break,
                }
            }
            cache.push_back((k, rows.clone(), size));
        }
    }
    Ok(rows)
}

/// The split's rows in the epoch's order: a permutation of its `n` rows drawn from the epoch's
/// seed and the map's index (the same on every attempt and after a resume), of which a step
/// takes a range of positions. Over the epoch's steps every row is used once.
pub fn epoch_order(n: usize, seed: u64, map: u32) -> Vec<usize> {
    let mut rng =
        crate::train::Rng(seed ^ (u64::from(map) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order
}

/// Job parameter: `local` mode's steps per round (0, the default, is sync mode). In local mode
/// each map takes that many optimizer steps over equal slices of its rows, starting from the
/// round's parameters with fresh optimizer state, and the round's new parameters are the
/// average of the maps' results weighted by their rows (parameter averaging).
pub const LOCAL_STEPS_PARAM: &str = "sluice.train.local_steps";

fn local_steps(ctx: &TaskContext) -> Result<usize, UdfError> {
    Ok(ctx.param_as(LOCAL_STEPS_PARAM)?.unwrap_or(0))
}

/// Local mode's map: `k` steps over slices of `batch`; returns the resulting parameters times
/// the rows (summed by the reducer, then divided by all rows) and the metrics of the steps.
fn local_round(
    ctx: &TaskContext,
    round: &Round,
    batch: &Batch<'_>,
) -> Result<(Params, crate::train::Metrics), UdfError> {
    let k = local_steps(ctx)?;
    let opt = optimizer_named(ctx.param(OPTIMIZER_PARAM).unwrap_or("sgd:0.1:0"))?;
    let scale = ctx
        .param(LR_SCALE_PARAM)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let mut params = round.params.clone();
    let mut state = OptState::new(&params);
    let mut metrics = crate::train::Metrics::default();
    let n = batch.rows();
    for i in 0..k {
        let (from, to) = (i * n / k, (i + 1) * n / k);
        if from == to {
            continue;
        }
        let part = Batch {
            features: &batch.features[from * batch.dim..to * batch.dim],
            labels: &batch.labels[from..to],
            dim: batch.dim,
        };
        let (mut g, m) = round.model.gradient(&part, &params);
        for t in &mut g.0 {
            t.data.iter_mut().for_each(|v| *v /= m.rows as f32);
        }
        opt.apply(&mut params, &g, &mut state, scale);
        metrics.loss += m.loss;
        metrics.correct += m.correct;
        metrics.rows += m.rows;
    }
    for t in &mut params.0 {
        t.data.iter_mut().for_each(|v| *v *= metrics.rows as f32);
    }
    Ok((params, metrics))
}

/// Writes the ids of the rows this map used in its round to `DIR/JOB-m-NNNNN.txt` (whole or
/// not at all: written aside, then renamed), for tests that check each sample is used once.
fn write_ledger(dir: &Path, ctx: &TaskContext, ids: &[String]) -> Result<(), UdfError> {
    let io = |e: std::io::Error| UdfError::Sink(format!("ledger {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let name = format!("{}-{}.txt", ctx.job_id(), ctx.task());
    let tmp = dir.join(format!("{name}.{}.tmp", ctx.attempt()));
    let mut text = ids.join("\n");
    text.push('\n');
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, dir.join(name)).map_err(io)
}

/// The parameter server of one shard.
struct ShardReducer {
    models: Models,
}

fn reduce_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("index", DataType::UInt64, false),
        Field::new("value", DataType::Float32, false),
        Field::new("m", DataType::Float32, false),
        Field::new("v", DataType::Float32, false),
    ]))
}

impl BatchReducer for ShardReducer {
    fn schema(&self) -> SchemaRef {
        reduce_schema()
    }

    fn reduce_batch(
        &self,
        rows: &RecordBatch,
        groups: &[Range<usize>],
        out: &mut BatchEmitter<'_>,
    ) -> Result<(), UdfError> {
        let col = |name: &str| rows.column_by_name(name).cloned();
        let get = |name: &str| {
            col(name).ok_or_else(|| UdfError::Decode(format!("train-step row without {name}")))
        };
        let (shard, map, seq, grad, loss, correct, count) = (
            get("shard")?,
            get("map")?,
            get("seq")?,
            get("grad")?,
            get("loss")?,
            get("correct")?,
            get("rows")?,
        );
        let as_u32 = |a: &ArrayRef| a.as_any().downcast_ref::<UInt32Array>().cloned();
        let as_u64 = |a: &ArrayRef| a.as_any().downcast_ref::<UInt64Array>().cloned();
        let bad = || UdfError::Decode("train-step rows of the wrong types".into());
        let (shard, map, seq) = (
            as_u32(&shard).ok_or_else(bad)?,
            as_u32(&map).ok_or_else(bad)?,
            as_u32(&seq).ok_or_else(bad)?,
        );
        let grad = grad
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(bad)?;
        let loss = loss
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(bad)?;
        let (correct, count) = (
            as_u64(&correct).ok_or_else(bad)?,
            as_u64(&count).ok_or_else(bad)?,
        );
        let ctx = out.context();
        let n = shards(ctx);
        for g in groups {
            // Sum in (map, batch) order: the same bits however the runs were fetched.
            let mut order: Vec<usize> = g.clone().collect();
            order.sort_by_key(|&i| (map.value(i), seq.value(i)));
            let r = shard.value(g.start) as usize;
            let mut sum: Vec<f32> = Vec::new();
            let (mut total_rows, mut total_loss, mut total_correct) = (0u64, 0f64, 0u64);
            for &i in &order {
                let bytes = grad.value(i);
                if sum.is_empty() {
                    sum = vec![0.0; bytes.len() / 4];
                }
                for (s, c) in sum.iter_mut().zip(bytes.chunks_exact(4)) {
                    *s += f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
                total_rows += count.value(i);
                total_loss += loss.value(i);
                total_correct += correct.value(i);
            }
            if r == 0 {
                out.count(LOSS_COUNTER, (total_loss * 1e6) as i64);
                out.count(CORRECT_COUNTER, total_correct as i64);
                out.count(ROWS_COUNTER, total_rows as i64);
            }
            let round = round(ctx, &self.models)?;
            let range = shard_range(round.flat.len(), n, r);
            if sum.len() != range.len() {
                return Err(UdfError::Decode(format!(
                    "shard {r}: gradient of {} values for {} parameters",
                    sum.len(),
                    range.len()
                )));
            }
            let mean: Vec<f32> = sum.iter().map(|v| v / total_rows.max(1) as f32).collect();
            if local_steps(ctx)? > 0 {
                // Local mode: the maps' parameters, averaged by their rows; no optimizer here.
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(UInt64Array::from_iter_values(
                        range.clone().map(|i| i as u64),
                    )),
                    Arc::new(Float32Array::from(mean)),
                    Arc::new(Float32Array::from(vec![0f32; range.len()])),
                    Arc::new(Float32Array::from(vec![0f32; range.len()])),
                ];
                out.emit(RecordBatch::try_new(reduce_schema(), columns)?);
                continue;
            }
            let one = |data: Vec<f32>| {
                Params(vec![Tensor {
                    name: "shard".into(),
                    shape: vec![data.len()],
                    data,
                }])
            };
            let mut params = one(round.flat[range.clone()].to_vec());
            let mut state = OptState {
                step: round.state.step,
                m: one(round.flat_m[range.clone()].to_vec()),
                v: one(round.flat_v[range.clone()].to_vec()),
            };
            let opt = optimizer_named(ctx.param(OPTIMIZER_PARAM).unwrap_or("sgd:0.1:0"))?;
            let scale = ctx
                .param(LR_SCALE_PARAM)
                .and_then(|s| s.parse().ok())
                .unwrap_or(1.0);
            opt.apply(&mut params, &one(mean), &mut state, scale);
            let columns: Vec<ArrayRef> = vec![
                Arc::new(UInt64Array::from_iter_values(
                    range.clone().map(|i| i as u64),
                )),
                Arc::new(Float32Array::from(params.0[0].data.clone())),
                Arc::new(Float32Array::from(state.m.0[0].data.clone())),
                Arc::new(Float32Array::from(state.v.0[0].data.clone())),
            ];
            out.emit(RecordBatch::try_new(reduce_schema(), columns)?);
        }
        Ok(())
    }
}

/// The `train-step` job, with the built-in models.
pub fn job() -> BatchJob<impl BatchMapper, impl BatchReducer> {
    job_with(Models::default())
}

/// The `train-step` job knowing `models` too.
pub fn job_with(models: Models) -> BatchJob<impl BatchMapper, impl BatchReducer> {
    BatchJob::new(
        "train-step",
        GradientMapper {
            models: models.clone(),
        },
        ShardReducer { models },
        &["shard"],
    )
    .input_format(InputFormat::Parquet)
}

/// Parameters and optimizer state assembled from the reducers' rows (index, value, m, v).
pub fn assemble(like: &Params, rows: &[RecordBatch]) -> Result<(Params, Params, Params), UdfError> {
    let len: usize = like.0.iter().map(|t| t.data.len()).sum();
    let mut flat = [vec![f32::NAN; len], vec![0.0; len], vec![0.0; len]];
    let mut seen = 0usize;
    for b in rows {
        let idx = b
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| UdfError::Decode("train-step output: index is not uint64".into()))?;
        for (k, out) in flat.iter_mut().enumerate() {
            let vals = b
                .column(k + 1)
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| UdfError::Decode("train-step output: values not float32".into()))?;
            for i in 0..b.num_rows() {
                let at = idx.value(i) as usize;
                if at >= len {
                    return Err(UdfError::Decode(format!(
                        "train-step output index {at} past {len}"
                    )));
                }
                out[at] = vals.value(i);
            }
        }
        seen += b.num_rows();
    }
    if seen != len || flat[0].iter().any(|v| v.is_nan()) {
        return Err(UdfError::Decode(format!(
            "train-step output holds {seen} parameters of {len}"
        )));
    }
    let split = |data: &[f32]| {
        let mut at = 0;
        Params(
            like.0
                .iter()
                .map(|t| {
                    let n = t.data.len();
                    let out = Tensor {
                        name: t.name.clone(),
                        shape: t.shape.clone(),
                        data: data[at..at + n].to_vec(),
                    };
                    at += n;
                    out
                })
                .collect(),
        )
    };
    Ok((split(&flat[0]), split(&flat[1]), split(&flat[2])))
}

/// Metrics of a round from the job's counters: (mean loss, accuracy, rows).
pub fn round_metrics(counters: &HashMap<String, i64>) -> (f64, f64, u64) {
    let rows = counters.get(ROWS_COUNTER).copied().unwrap_or(0).max(0) as u64;
    let loss = counters.get(LOSS_COUNTER).copied().unwrap_or(0) as f64 / 1e6;
    let correct = counters.get(CORRECT_COUNTER).copied().unwrap_or(0) as f64;
    let n = rows.max(1) as f64;
    (loss / n, correct / n, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_order_is_a_permutation_that_depends_on_the_seed_and_the_map() {
        let a = epoch_order(1000, 7, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        assert_eq!(
            a,
            epoch_order(1000, 7, 0),
            "the same seed gives the same order"
        );
        assert_ne!(a, epoch_order(1000, 8, 0), "another epoch, another order");
        assert_ne!(a, epoch_order(1000, 7, 1), "another map, another order");
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn split_rows_are_row_major_across_batches() {
        let batches: Vec<RecordBatch> = [0u32..3, 3..3, 3..5]
            .into_iter()
            .map(|r| {
                let a: ArrayRef =
                    Arc::new(Float32Array::from_iter_values(r.clone().map(|v| v as f32)));
                let b: ArrayRef = Arc::new(Float64Array::from_iter_values(
                    r.clone().map(|v| 10.0 * v as f64),
                ));
                let y: ArrayRef =
                    Arc::new(Float32Array::from_iter_values(r.map(|v| (v % 2) as f32)));
                RecordBatch::try_from_iter([("a", a), ("b", b), ("label", y)]).unwrap()
            })
            .collect();
        let rows = split_rows(&TaskContext::default(), &batches, 2, None, &[0, 1]).unwrap();
        assert_eq!(
            rows.features,
            [0.0, 0.0, 1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0]
        );
        assert_eq!(rows.labels, [0.0, 1.0, 0.0, 1.0, 0.0]);
    }
}
