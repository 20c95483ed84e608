//! `sluice train`: data-parallel training as one MapReduce round (`train-step`) per epoch, in
//! sync mode (the gradient of every row of the epoch averaged, one optimizer step). Before each
//! round the driver writes the round's checkpoint (parameters and optimizer state, safetensors
//! with a JSON manifest beside it) under `OUTPUT/checkpoints/`; every task reads it once per
//! process; reducer `r` returns shard `r` of the next parameters and optimizer state, which the
//! driver assembles into the next checkpoint. `--resume` continues after the last checkpoint.
//! The final model is `OUTPUT/model.safetensors`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use sluice_storage::{blob_join, list_blobs, read_blob, remove_blob, write_blob};
use std::time::{Duration, Instant};

use sluice_core::{InputFormat, JobSpec, OutputFormat, CACHE_PARAM};
use sluice_udf::train::{checkpoint_bytes, read_checkpoint, OptState, Params};
use sluice_udf::train_step::{
    assemble, optimizer_named, round_metrics, CHECKPOINT_PARAM, EPOCH_PARAM, FEATURES_PARAM,
    HISTORY_PARAM, ID_PARAM, LABEL_PARAM, LEDGER_PARAM, LOCAL_STEPS_PARAM, LR_SCALE_PARAM,
    MODEL_PARAM, OPTIMIZER_PARAM, RUN_PARAM, SHARDS_PARAM, SHUFFLE_PARAM, STEPS_PARAM, STEP_PARAM,
};

use crate::error::CliError;
use crate::progress;

/// `sluice train` (or a job binary's `train`): the run's flags and where it runs.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainCmd {
    #[command(flatten)]
    args: TrainArgs,
    /// Submit to this coordinator; without it, run embedded.
    #[arg(long)]
    coordinator: Option<String>,
    /// Embedded executors.
    #[arg(long, default_value_t = 2)]
    executors: u32,
    /// Print the per-epoch metrics as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `cmd` with the models of `registry`: embedded on executors of that registry, or on the
/// cluster at `--coordinator`, whose executors run the rounds in `binary` (a job binary's own
/// path, uploaded once) or as the built-in job.
pub async fn run(
    cmd: TrainCmd,
    registry: sluice_udf::Registry,
    binary: Option<String>,
) -> Result<(), CliError> {
    sluice_core::parse_byte_size(&cmd.args.cache_memory)
        .map_err(|e| CliError::Usage(format!("--cache-memory: {e}")))?;
    if cmd.args.cache_disk.trim() != "0" {
        sluice_core::parse_byte_size(&cmd.args.cache_disk)
            .map_err(|e| CliError::Usage(format!("--cache-disk: {e}")))?;
    }
    let models = registry.models().clone();
    let result = match cmd.coordinator {
        Some(url) => {
            let sha = match &binary {
                Some(path) => {
                    let mut client = sluice_rpc::jobs_client(&url).await?;
                    Some(crate::commands::upload_binary(&mut client, path).await?)
                }
                None => None,
            };
            train(&cmd.args, &url, &models, sha).await
        }
        None => {
            let cluster = crate::embedded::Embedded::start(cmd.executors, 1, registry).await?;
            let r = train(&cmd.args, &cluster.url, &models, None).await;
            cluster.shutdown().await;
            r
        }
    }?;
    if cmd.json {
        println!("{result}");
    }
    Ok(())
}

/// What `sluice train` was asked.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Input: files, directories or globs (repeatable), on any datastore.
    #[arg(long = "input", required = true)]
    pub inputs: Vec<String>,
    /// Input format: parquet, csv (with a header line), csv-noheader (columns column_1, ...)
    /// or jsonl; every column a number, the label 0 or 1.
    #[arg(long, default_value = "parquet")]
    pub input_format: String,
    /// Output directory: checkpoints/, rounds/ and model.safetensors.
    #[arg(long)]
    pub output: String,
    /// `logistic-regression` or `mlp:HIDDEN`.
    #[arg(long, default_value = "logistic-regression")]
    pub model: String,
    /// `sgd:LR:MOMENTUM` or `adam:LR`.
    #[arg(long, default_value = "sgd:0.5:0.9")]
    pub optimizer: String,
    /// Epochs in all (a resumed run trains the ones left).
    #[arg(long, default_value_t = 5)]
    pub epochs: u32,
    /// Parameter shards: reduce tasks, each the parameter server of one slice.
    #[arg(long, default_value_t = 2)]
    pub shards: u32,
    /// Seed of the initial parameters.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The label column (0 or 1).
    #[arg(long, default_value = "label")]
    pub label: String,
    /// Input split size.
    #[arg(long, default_value = "64MiB")]
    pub split_size: String,
    /// Continue after the last checkpoint in OUTPUT.
    #[arg(long)]
    pub resume: bool,
    /// Memory each executor may keep decoded input in across epochs (beyond it, splits
    /// are read again).
    #[arg(long, default_value = "4GiB")]
    pub cache_memory: String,
    /// Local disk each executor may keep decoded input in once it is pushed out of memory
    /// (0: none; beyond it, splits are read from the datastore again).
    #[arg(long, default_value = "16GiB")]
    pub cache_disk: String,
    /// Rows per step (a global mini-batch: an equal share of every split); 0 takes one
    /// step over all rows per epoch.
    #[arg(long, default_value_t = 0)]
    pub batch_size: u64,
    /// Learning-rate schedule: `constant`, or `step:EPOCHS:GAMMA`.
    #[arg(long, default_value = "constant")]
    pub lr_schedule: String,
    /// A column of sample ids (not a feature).
    #[arg(long)]
    pub id_column: Option<String>,
    /// Record the sample ids each map uses per round under this directory (for checking
    /// that every sample is used once per epoch).
    #[arg(long)]
    pub ledger: Option<String>,
    /// `sync` (every round one step over the averaged gradient) or `local:K` (each map
    /// takes K steps over its rows, then the parameters are averaged).
    #[arg(long, default_value = "sync")]
    pub mode: String,
    /// Seed of the epochs' shuffles: each epoch takes every split's rows in its own order.
    #[arg(long, default_value_t = 0)]
    pub shuffle_seed: u64,
    /// Take every split's rows in file order in every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Write a versioned checkpoint every N epochs (the last epoch always has one).
    #[arg(long, default_value_t = 1)]
    pub checkpoint_every: u32,
    /// Also checkpoint every K steps within an epoch (0: only at epoch ends); a run resumed
    /// from a step checkpoint uses each of the epoch's samples exactly once.
    #[arg(long, default_value_t = 0)]
    pub checkpoint_steps: u32,
    /// GPUs each map task holds (on executors that have them): the model's gradient runs
    /// there when it has a GPU path (the MLP does), else on the CPU.
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
}

/// The shuffle seed of `epoch` drawn from the run's seed: the data cursor of a checkpoint.
fn epoch_seed(seed: u64, epoch: u32) -> u64 {
    sluice_core::rng::SplitMix(seed ^ u64::from(epoch).wrapping_mul(0xd1b5_4a32_d192_ed03))
        .next_u64()
}

/// The learning-rate factor of `epoch` (1-based) under `schedule`.
fn lr_scale(schedule: &str, epoch: u32) -> Result<f32, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "--lr-schedule {schedule}: give constant or step:EPOCHS:GAMMA"
        ))
    };
    match schedule.split(':').collect::<Vec<_>>().as_slice() {
        ["constant"] => Ok(1.0),
        ["step", every, gamma] => {
            let every: u32 = every.parse().map_err(|_| bad())?;
            let gamma: f32 = gamma.parse().map_err(|_| bad())?;
            Ok(gamma.powi(((epoch - 1) / every.max(1)) as i32))
        }
        _ => Err(bad()),
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CliError + 'a {
    move |source| CliError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// The number of feature columns (all but the label and the id) of the first Parquet file of
/// `inputs`, a hash of the input files, and the rows of all of them (from their footers).
fn features_of(
    inputs: &[String],
    format: InputFormat,
    label: &str,
    id: Option<&str>,
    need_rows: bool,
) -> Result<(usize, String, u64, Vec<String>), CliError> {
    let files = sluice_storage::list_inputs(inputs)?;
    let first = files
        .first()
        .ok_or_else(|| CliError::Usage(format!("no input files under {inputs:?}")))?;
    if matches!(format, InputFormat::Text | InputFormat::Arrow) {
        return Err(CliError::Usage(format!(
            "--input-format {}: training reads parquet, csv, csv-noheader or jsonl",
            format.as_str()
        )));
    }
    let mut rows = 0u64;
    let columns: Vec<String> = if format == InputFormat::Parquet {
        // One footer read per file (on any datastore): the rows of all, the schema of the first.
        let mut schema = None;
        for f in &files {
            let (n, sch) = sluice_storage::parquet_footer(f).map_err(|e| {
                CliError::Usage(format!("{}: not Parquet training data: {e}", f.path))
            })?;
            rows += n;
            schema.get_or_insert(sch);
        }
        schema
            .map(|s| s.fields().iter().map(|f| f.name().clone()).collect())
            .unwrap_or_default()
    } else {
        // Text formats: the columns from the first record; the rows (for --batch-size) by
        // reading every file's lines.
        let first_bytes = read_blob(&first.path)?;
        let text = String::from_utf8_lossy(&first_bytes);
        let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let columns = match format {
            InputFormat::Csv { header: true } => line
                .split(',')
                .map(|c| c.trim().trim_matches('"').to_string())
                .collect(),
            InputFormat::Csv { header: false } => (1..=line.split(',').count())
                .map(|i| format!("column_{i}"))
                .collect(),
            _ => match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
                _ => {
                    return Err(CliError::Usage(format!(
                        "{}: the first line is not a JSON object of numbers",
                        first.path
                    )))
                }
            },
        };
        if need_rows {
            let header = u64::from(matches!(format, InputFormat::Csv { header: true }));
            for (i, f) in files.iter().enumerate() {
                // The first file was read above.
                let read;
                let bytes: &[u8] = if i == 0 {
                    &first_bytes
                } else {
                    read = read_blob(&f.path)?;
                    &read
                };
                let n = bytes
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                    .count() as u64;
                rows += n.saturating_sub(header);
            }
        }
        columns
    };
    let path = first.path.trim_start_matches("file://");
    let schema = arrow_schema::Schema::new(
        columns
            .iter()
            .map(|c| arrow_schema::Field::new(c, arrow_schema::DataType::Float32, true))
            .collect::<Vec<_>>(),
    );
    if schema.index_of(label).is_err() {
        return Err(CliError::Usage(format!(
            "{path}: no label column '{label}' (pass --label)"
        )));
    }
    let not_features = 1 + usize::from(id.is_some_and(|c| schema.index_of(c).is_ok()));
    // The data hash of the manifest: the input files with their sizes.
    let h = sluice_core::digest::fnv1a(
        files
            .iter()
            .flat_map(|f| f.path.bytes().chain(f.len.to_le_bytes())),
    );
    Ok((
        schema.fields().len() - not_features,
        format!("{h:016x}"),
        rows,
        columns,
    ))
}

/// Where the checkpoint after `step` steps of `epoch` goes: `epoch-E.safetensors` once the
/// epoch is done (`step` None), `epoch-E-step-K.safetensors` within it.
fn checkpoint_path(out: &str, epoch: u32, step: Option<u32>) -> String {
    let name = match step {
        None => format!("epoch-{epoch:05}.safetensors"),
        Some(k) => format!("epoch-{epoch:05}-step-{k:05}.safetensors"),
    };
    blob_join(&blob_join(out, "checkpoints"), &name)
}

/// The latest checkpoint under `out`: (epoch, steps done in it, None when the epoch is done).
fn last_checkpoint(out: &str) -> Result<Option<(u32, Option<u32>)>, CliError> {
    Ok(list_blobs(&blob_join(out, "checkpoints"))?
        .into_iter()
        .filter_map(|n| {
            let stem = n.strip_prefix("epoch-")?.strip_suffix(".safetensors")?;
            match stem.split_once("-step-") {
                None => Some((stem.parse().ok()?, None)),
                Some((e, k)) => Some((e.parse().ok()?, Some(k.parse().ok()?))),
            }
        })
        .max_by_key(|&(e, k)| (e, k.map_or(u64::MAX, u64::from))))
}

/// Writes a checkpoint and its JSON manifest to the output's datastore, each landing whole.
fn write_checkpoint(
    out: &str,
    epoch: u32,
    step: Option<u32>,
    params: &Params,
    state: &OptState,
    manifest: &serde_json::Value,
) -> Result<String, CliError> {
    let path = checkpoint_path(out, epoch, step);
    let meta: HashMap<String, String> = manifest
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
        .unwrap_or_default();
    let bytes = checkpoint_bytes(params, state, meta)?;
    // The manifest lands first and the checkpoint last: a checkpoint that exists (what
    // --resume looks for) always has its manifest.
    let json = format!("{}.json", path.trim_end_matches(".safetensors"));
    write_blob(
        &json,
        serde_json::to_vec_pretty(manifest).unwrap_or_default(),
    )?;
    write_blob(&path, bytes)?;
    Ok(path)
}

/// Submits a round, riding out a coordinator restart: while it cannot be reached (for as long
/// as `--wait` waits), the round is submitted again, unless the coordinator already holds it
/// (submitted before it went away), which is then followed instead of a second copy.
async fn submit_round(
    client: &mut sluice_rpc::JobsClient<tonic::transport::Channel>,
    spec: &JobSpec,
) -> Result<String, CliError> {
    let since = Instant::now();
    let mut said = false;
    loop {
        let req = sluice_rpc::pb::SubmitJobRequest {
            spec: Some(spec.into()),
        };
        let err = match client.submit(req).await {
            Ok(r) => return Ok(r.into_inner().job_id),
            Err(s) if unreachable(&s) => s,
            Err(s) => return Err(s.into()),
        };
        if since.elapsed() > Duration::from_secs(120) {
            return Err(CliError::Refused(format!(
                "the coordinator could not be reached for 120 s submitting a round: {}; `sluice train --resume` continues after the last checkpoint",
                err.message()
            )));
        }
        if !said {
            eprintln!("lost the coordinator submitting a round; retrying for up to 120 s");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Ok(list) = client
            .list_jobs(sluice_rpc::pb::ListJobsRequest::default())
            .await
        {
            let held = list.into_inner().jobs.into_iter().find(|j| {
                let s = j.spec.clone().unwrap_or_default();
                s.output == spec.output
                    && s.params.get(CHECKPOINT_PARAM) == spec.params.get(CHECKPOINT_PARAM)
                    && !matches!(j.state.as_str(), "failed" | "cancelled")
            });
            if let Some(j) = held {
                return Ok(j.job_id);
            }
        }
    }
}

/// Whether a call failed because the coordinator could not be reached.
fn unreachable(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// The per-epoch metrics of `history` that rounds carry for status (no job ids: those grow).
fn epochs_json(history: &[serde_json::Value]) -> String {
    let keep = [
        "epoch",
        "loss",
        "accuracy",
        "samples",
        "samples_per_s",
        "seconds",
        "datastore_bytes_read",
    ];
    let slim: Vec<serde_json::Value> = history
        .iter()
        .map(|m| {
            keep.iter()
                .filter_map(|k| m.get(*k).map(|v| (k.to_string(), v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        })
        .collect();
    serde_json::Value::Array(slim).to_string()
}

/// Writes the parameters the next round broadcasts when no checkpoint is due: a file of its
/// own per round, because executors cache a round's parameters by path.
fn write_broadcast(
    out: &str,
    epoch: u32,
    step: u32,
    params: &Params,
    state: &OptState,
) -> Result<String, CliError> {
    let path = blob_join(
        &blob_join(out, "rounds"),
        &format!("params-{epoch:05}-{step:05}.safetensors"),
    );
    write_blob(&path, checkpoint_bytes(params, state, HashMap::new())?)?;
    Ok(path)
}

/// Removes a round's broadcast file once the next one exists (checkpoints stay).
fn drop_broadcast(out: &str, path: &str) {
    if path.starts_with(&blob_join(out, "rounds")) {
        let _ = remove_blob(path);
    }
}

/// Reads the committed Parquet parts of a round.
fn read_round(
    status: &sluice_rpc::pb::JobStatus,
    out: &str,
) -> Result<Vec<arrow_array::RecordBatch>, CliError> {
    let mut batches = Vec::new();
    for f in &status.files {
        let p = if f.path.contains("://") || Path::new(&f.path).is_absolute() {
            f.path.clone()
        } else {
            blob_join(out, &f.path)
        };
        if p.contains("_bad_records") {
            continue;
        }
        let bytes = bytes::Bytes::from(read_blob(&p)?);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(|e| CliError::Refused(format!("{p}: {e}")))?;
        for b in reader {
            batches.push(b.map_err(|e| CliError::Refused(format!("{p}: {e}")))?);
        }
    }
    Ok(batches)
}

/// Trains on the cluster at `url`; returns the final metrics as JSON.
pub async fn train(
    args: &TrainArgs,
    url: &str,
    models: &sluice_udf::train_step::Models,
    binary: Option<String>,
) -> Result<serde_json::Value, CliError> {
    // Absolute, so that the committed files the status lists are found from here.
    // A datastore URI as given; a path made absolute, so that the files the status lists
    // are found from here.
    let out = if args.output.contains("://") {
        args.output.trim_end_matches('/').to_string()
    } else {
        std::path::absolute(&args.output)
            .map_err(io("resolving", Path::new(&args.output)))?
            .display()
            .to_string()
    };
    let model = models.get(&args.model)?;
    optimizer_named(&args.optimizer)?;
    let input_format = InputFormat::parse(&args.input_format)?;
    let (dim, data_hash, total_rows, columns) = features_of(
        &args.inputs,
        input_format,
        &args.label,
        args.id_column.as_deref(),
        args.batch_size > 0,
    )?;
    let local_steps = match args.mode.split_once(':') {
        None if args.mode == "sync" => None,
        Some(("local", k)) => Some(k.parse::<u32>().ok().filter(|k| *k > 0).ok_or_else(|| {
            CliError::Usage(format!("--mode {}: local:K wants K > 0", args.mode))
        })?),
        _ => {
            return Err(CliError::Usage(format!(
                "--mode {}: give sync or local:K",
                args.mode
            )))
        }
    };
    let steps = match args.batch_size {
        0 => 1,
        b => total_rows.div_ceil(b).max(1) as u32,
    };
    // Where to start: (epoch, first step), after the last checkpoint when resuming.
    let split_size = sluice_core::parse_byte_size(&args.split_size)?;
    let last = last_checkpoint(&out)?;
    let (start_epoch, start_step) = match (args.resume, last) {
        (true, Some((e, None))) => (e + 1, 0),
        (true, Some((e, Some(k)))) => (e, k),
        (true, None) => {
            return Err(CliError::Usage(format!(
                "--resume: no checkpoint under {}/checkpoints",
                out
            )))
        }
        (false, Some(_)) => {
            return Err(CliError::Usage(format!(
            "{} already holds checkpoints; pass --resume to continue or choose another --output",
            out
        )))
        }
        (false, None) => (1, 0),
    };
    let mut current = match (args.resume, last) {
        (true, Some((e, k))) => checkpoint_path(&out, e, k),
        _ => checkpoint_path(&out, 0, None),
    };
    let (mut params, mut state) = if !args.resume {
        let p = model.init(dim, args.seed);
        let s = OptState::new(&p);
        let manifest = serde_json::json!({"epoch": 0, "model": args.model, "data_hash": data_hash});
        write_checkpoint(&out, 0, None, &p, &s, &manifest)?;
        (p, s)
    } else {
        let bytes = read_blob(&current)?;
        let (p, s, meta) = read_checkpoint(&bytes, &model.init(dim, 0))?;
        // A resumed epoch must take its rows in the order it began with, or samples would
        // be used twice or not at all.
        if start_step > 0 {
            let want = (!args.no_shuffle).then(|| epoch_seed(args.shuffle_seed, start_epoch));
            let had = meta
                .get("shuffle_seed")
                .and_then(|v| v.trim_matches('"').parse::<u64>().ok());
            if had != want {
                return Err(CliError::Usage(format!(
                    "--resume: {} was taken with shuffle seed {had:?}, these flags give {want:?}; resume with the --shuffle-seed / --no-shuffle of the interrupted run",
                    current
                )));
            }
        }
        let at = if start_step == 0 {
            format!("epoch {}", start_epoch - 1)
        } else {
            format!("step {start_step} of epoch {start_epoch}")
        };
        eprintln!("resuming after {at} ({current})");
        (p, s)
    };
    let mut client = sluice_rpc::jobs_client(url).await?;
    let mut history = Vec::new();
    let mut previous = current.clone();
    // The run's worker session: its output directory, hashed (FNV-1a).
    let session = format!("train-{:016x}", sluice_core::digest::fnv1a(out.bytes()));
    for epoch in start_epoch..=args.epochs {
        let t0 = Instant::now();
        let first = if epoch == start_epoch { start_step } else { 0 };
        let shuffle = (!args.no_shuffle).then(|| epoch_seed(args.shuffle_seed, epoch));
        let (mut loss_sum, mut correct, mut rows, mut read, mut hits, mut disk_hits) =
            (0.0, 0.0, 0u64, 0i64, 0i64, 0i64);
        let mut jobs = Vec::new();
        for step in first..steps {
            let round_out = blob_join(
                &blob_join(&out, "rounds"),
                &format!("epoch-{epoch:05}-step-{step:05}"),
            );
            let mut params_map: BTreeMap<String, String> = [
                (CHECKPOINT_PARAM, current.clone()),
                (MODEL_PARAM, args.model.clone()),
                (OPTIMIZER_PARAM, args.optimizer.clone()),
                (FEATURES_PARAM, dim.to_string()),
                (SHARDS_PARAM, args.shards.to_string()),
                (LABEL_PARAM, args.label.clone()),
                (STEP_PARAM, step.to_string()),
                (STEPS_PARAM, steps.to_string()),
                (
                    LR_SCALE_PARAM,
                    lr_scale(&args.lr_schedule, epoch)?.to_string(),
                ),
                // Executors keep the decoded splits; each goes back where it is cached, so
                // rounds after the first read nothing from the datastore.
                (CACHE_PARAM, "true".to_string()),
                (sluice_core::CACHE_BYTES_PARAM, args.cache_memory.clone()),
                (sluice_worker::CACHE_DISK_PARAM, args.cache_disk.clone()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            if let Some(id) = &args.id_column {
                params_map.insert(ID_PARAM.into(), id.clone());
            }
            if let Some(l) = &args.ledger {
                params_map.insert(LEDGER_PARAM.into(), l.clone());
            }
            if let Some(k) = local_steps {
                params_map.insert(LOCAL_STEPS_PARAM.into(), k.to_string());
            }
            params_map.insert(RUN_PARAM.into(), session.clone());
            params_map.insert(EPOCH_PARAM.into(), epoch.to_string());
            params_map.insert(HISTORY_PARAM.into(), epochs_json(&history));
            if binary.is_some() {
                // One worker per executor serves every round, keeping the decoded splits.
                params_map.insert(sluice_core::WORKER_SESSION_PARAM.into(), session.clone());
            }
            if args.gpus > 0 {
                params_map.insert(sluice_core::GPUS_PARAM.into(), args.gpus.to_string());
            }
            if input_format == (InputFormat::Csv { header: true }) {
                // The header reaches the maps already skipped: they name the columns by it.
                params_map.insert(sluice_udf::CSV_COLUMNS_PARAM.into(), columns.join(","));
            }
            if let Some(seed) = shuffle {
                params_map.insert(SHUFFLE_PARAM.into(), seed.to_string());
            }
            let spec = JobSpec {
                job: "train-step".into(),
                inputs: args.inputs.clone(),
                output: round_out.clone(),
                format: OutputFormat::Parquet,
                input_format,
                split_size,
                reducers: Some(args.shards.max(1)),
                overwrite: true,
                params: params_map,
                binary: binary.clone(),
            };
            let id = submit_round(&mut client, &spec).await?;
            let status = progress::watch(&mut client, &id).await?;
            if status.state != "succeeded" {
                return Err(CliError::JobFailed {
                    job_id: id,
                    state: status.state.clone(),
                    error: format!("training epoch {epoch} step {step}: {}", status.error),
                });
            }
            let counters: HashMap<String, i64> = status
                .stats
                .as_ref()
                .map(|s| s.counters.iter().map(|(k, v)| (k.clone(), *v)).collect())
                .unwrap_or_default();
            let (l, a, r) = round_metrics(&counters);
            loss_sum += l * r as f64;
            correct += a * r as f64;
            rows += r;
            read += counters
                .get(sluice_worker::DATASTORE_BYTES_COUNTER)
                .copied()
                .unwrap_or(0);
            hits += counters
                .get(sluice_worker::CACHE_HITS_COUNTER)
                .copied()
                .unwrap_or(0);
            disk_hits += counters
                .get(sluice_worker::CACHE_DISK_HITS_COUNTER)
                .copied()
                .unwrap_or(0);
            let (p, m, v) = assemble(&params, &read_round(&status, &round_out)?)?;
            params = p;
            state = OptState {
                step: state.step + 1,
                m,
                v,
            };
            jobs.push(id.clone());
            let done = step + 1;
            let at = (done < steps).then_some(done);
            let manifest = serde_json::json!({
                "epoch": epoch, "step": done, "steps": steps, "job_id": id,
                "model": args.model, "data_hash": data_hash, "shuffle_seed": shuffle,
            });
            if let Some(k) = at {
                let versioned = args.checkpoint_steps > 0 && k % args.checkpoint_steps == 0;
                current = if versioned {
                    write_checkpoint(&out, epoch, at, &params, &state, &manifest)?
                } else {
                    write_broadcast(&out, epoch, k, &params, &state)?
                };
                drop_broadcast(&out, &previous);
                previous = current.clone();
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let n = rows.max(1) as f64;
        let metrics = serde_json::json!({
            "epoch": epoch, "loss": loss_sum / n, "accuracy": correct / n, "samples": rows,
            "steps": steps, "samples_per_s": rows as f64 / secs.max(1e-9), "seconds": secs,
            "datastore_bytes_read": read, "cache_hits": hits, "cache_disk_hits": disk_hits,
            "model": args.model, "data_hash": data_hash, "job_ids": jobs,
        });
        current = if epoch % args.checkpoint_every.max(1) == 0 || epoch == args.epochs {
            write_checkpoint(&out, epoch, None, &params, &state, &metrics)?
        } else {
            write_broadcast(&out, epoch, steps, &params, &state)?
        };
        drop_broadcast(&out, &previous);
        previous = current.clone();
        eprintln!(
            "epoch {epoch}/{}: loss {:.5}, accuracy {:.4} (each step's, before it), {rows} samples in {} step(s), {:.0} samples/s, {secs:.2} s",
            args.epochs,
            loss_sum / n,
            correct / n,
            steps - first,
            rows as f64 / secs.max(1e-9)
        );
        history.push(metrics);
    }
    // The final model is committed like a job's output: the model, then `_SUCCESS` (with
    // the run's epochs) once it is whole.
    let final_path = blob_join(&out, "model.safetensors");
    write_blob(&final_path, read_blob(&current)?)?;
    let report = serde_json::json!({
        "model": final_path,
        "epochs": history,
    });
    write_blob(
        &blob_join(&out, "_SUCCESS"),
        serde_json::to_vec_pretty(&report).unwrap_or_default(),
    )?;
    Ok(report)
}
