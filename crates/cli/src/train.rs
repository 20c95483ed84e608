//! `sluice train`: data-parallel training as one MapReduce round (`train-step`) per epoch, in
//! sync mode (the gradient of every row of the epoch averaged, one optimizer step). Before each
//! round the driver writes the round's checkpoint (parameters and optimizer state, safetensors
//! with a JSON manifest beside it) under `OUTPUT/checkpoints/`; every task reads it once per
//! process; reducer `r` returns shard `r` of the next parameters and optimizer state, which the
//! driver assembles into the next checkpoint. `--resume` continues after the last checkpoint.
//! The final model is `OUTPUT/model.safetensors`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sluice_core::{InputFormat, JobSpec, OutputFormat, CACHE_PARAM};
use sluice_udf::train::{checkpoint_bytes, read_checkpoint, OptState, Params};
use sluice_udf::train_step::{
    assemble, model_named, optimizer_named, round_metrics, CHECKPOINT_PARAM, FEATURES_PARAM,
    LABEL_PARAM, MODEL_PARAM, OPTIMIZER_PARAM, SHARDS_PARAM,
};

use crate::commands::submit_spec;
use crate::error::CliError;
use crate::progress;

/// What `sluice train` was asked.
#[derive(Debug, Clone)]
pub struct TrainArgs {
    /// Parquet input (files or directories).
    pub inputs: Vec<String>,
    /// Output directory (checkpoints, rounds, the final model).
    pub output: String,
    /// `logistic-regression` or `mlp:HIDDEN`.
    pub model: String,
    /// `sgd:LR:MOMENTUM` or `adam:LR`.
    pub optimizer: String,
    /// Epochs to train (in all, counting those of a resumed run).
    pub epochs: u32,
    /// Parameter shards (reduce tasks).
    pub shards: u32,
    /// Seed of the initial parameters.
    pub seed: u64,
    /// Label column.
    pub label: String,
    /// Split size of the input.
    pub split_size: u64,
    /// Continue after the last checkpoint.
    pub resume: bool,
    /// Memory each executor process may give cached splits.
    pub cache_memory: String,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CliError + 'a {
    move |source| CliError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// The Parquet files of `inputs`, and the number of feature columns (all but `label`) of the
/// first.
fn features_of(inputs: &[String], label: &str) -> Result<(usize, String), CliError> {
    let files = sluice_storage::list_inputs(inputs)?;
    let first = files
        .first()
        .ok_or_else(|| CliError::Usage(format!("no input files under {inputs:?}")))?;
    let path = first.path.trim_start_matches("file://").to_string();
    let f = std::fs::File::open(&path).map_err(io("opening", Path::new(&path)))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .map_err(|e| CliError::Usage(format!("{path}: not Parquet training data: {e}")))?;
    let schema = reader.schema();
    if schema.index_of(label).is_err() {
        return Err(CliError::Usage(format!(
            "{path}: no label column '{label}' (pass --label)"
        )));
    }
    // The data hash of the manifest: the input files with their sizes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        for b in f.path.bytes().chain(f.len.to_le_bytes()) {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    Ok((schema.fields().len() - 1, format!("{h:016x}")))
}

fn checkpoint_path(out: &Path, epoch: u32) -> PathBuf {
    out.join("checkpoints")
        .join(format!("epoch-{epoch:05}.safetensors"))
}

/// The last epoch with a checkpoint under `out`, if any.
fn last_checkpoint(out: &Path) -> Option<u32> {
    std::fs::read_dir(out.join("checkpoints"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("epoch-")?
                .strip_suffix(".safetensors")?
                .parse()
                .ok()
        })
        .max()
}

/// Writes a checkpoint and its JSON manifest, each landing whole (write, then rename).
fn write_checkpoint(
    out: &Path,
    epoch: u32,
    params: &Params,
    state: &OptState,
    manifest: &serde_json::Value,
) -> Result<PathBuf, CliError> {
    let path = checkpoint_path(out, epoch);
    let dir = path.parent().unwrap_or(out);
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let meta: HashMap<String, String> = manifest
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
        .unwrap_or_default();
    let bytes = checkpoint_bytes(params, state, meta)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
    let json = path.with_extension("json");
    std::fs::write(
        &json,
        serde_json::to_vec_pretty(manifest).unwrap_or_default(),
    )
    .map_err(io("writing", &json))?;
    Ok(path)
}

/// Reads the committed Parquet parts of a round.
fn read_round(
    status: &sluice_rpc::pb::JobStatus,
    out: &Path,
) -> Result<Vec<arrow_array::RecordBatch>, CliError> {
    let mut batches = Vec::new();
    for f in &status.files {
        let p = Path::new(&f.path);
        let p = if p.is_absolute() || p.exists() {
            p.to_path_buf()
        } else {
            out.join(p)
        };
        if p.to_string_lossy().contains("_bad_records") {
            continue;
        }
        let file = std::fs::File::open(&p).map_err(io("opening", &p))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .map_err(|e| CliError::Refused(format!("{}: {e}", p.display())))?;
        for b in reader {
            batches.push(b.map_err(|e| CliError::Refused(format!("{}: {e}", p.display())))?);
        }
    }
    Ok(batches)
}

/// Trains on the cluster at `url`; returns the final metrics as JSON.
pub async fn train(args: &TrainArgs, url: &str) -> Result<serde_json::Value, CliError> {
    // Absolute, so that the committed files the status lists are found from here.
    let out =
        std::path::absolute(&args.output).map_err(io("resolving", Path::new(&args.output)))?;
    let model = model_named(&args.model)?;
    optimizer_named(&args.optimizer)?;
    let (dim, data_hash) = features_of(&args.inputs, &args.label)?;
    let start_epoch = match (args.resume, last_checkpoint(&out)) {
        (true, Some(e)) => e,
        (true, None) => {
            return Err(CliError::Usage(format!(
                "--resume: no checkpoint under {}/checkpoints",
                out.display()
            )))
        }
        (false, Some(_)) => {
            return Err(CliError::Usage(format!(
            "{} already holds checkpoints; pass --resume to continue or choose another --output",
            out.display()
        )))
        }
        (false, None) => 0,
    };
    let (mut params, mut state) = if start_epoch == 0 {
        let p = model.init(dim, args.seed);
        let s = OptState::new(&p);
        let manifest = serde_json::json!({"epoch": 0, "model": args.model, "data_hash": data_hash});
        write_checkpoint(&out, 0, &p, &s, &manifest)?;
        (p, s)
    } else {
        let path = checkpoint_path(&out, start_epoch);
        let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
        let (p, s, _) = read_checkpoint(&bytes, &model.init(dim, 0))?;
        eprintln!("resuming after epoch {start_epoch} ({})", path.display());
        (p, s)
    };
    let mut client = sluice_rpc::jobs_client(url).await?;
    let mut history = Vec::new();
    for epoch in start_epoch + 1..=args.epochs {
        let t0 = Instant::now();
        let round_out = out.join("rounds").join(format!("epoch-{epoch:05}"));
        let params_map: BTreeMap<String, String> = [
            (
                CHECKPOINT_PARAM,
                checkpoint_path(&out, epoch - 1).display().to_string(),
            ),
            (MODEL_PARAM, args.model.clone()),
            (OPTIMIZER_PARAM, args.optimizer.clone()),
            (FEATURES_PARAM, dim.to_string()),
            (SHARDS_PARAM, args.shards.to_string()),
            (LABEL_PARAM, args.label.clone()),
            // Executors keep the decoded splits; each goes back where it is cached, so
            // epochs after the first read nothing from the datastore.
            (CACHE_PARAM, "true".to_string()),
            (sluice_worker::CACHE_BYTES_PARAM, args.cache_memory.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let spec = JobSpec {
            job: "train-step".into(),
            inputs: args.inputs.clone(),
            output: round_out.display().to_string(),
            format: OutputFormat::Parquet,
            input_format: InputFormat::Parquet,
            split_size: args.split_size,
            reducers: Some(args.shards.max(1)),
            overwrite: true,
            params: params_map,
            binary: None,
        };
        let id = submit_spec(&mut client, &spec).await?;
        let status = progress::watch(&mut client, &id).await?;
        if status.state != "succeeded" {
            return Err(CliError::JobFailed {
                job_id: id,
                state: status.state.clone(),
                error: format!("training epoch {epoch}: {}", status.error),
            });
        }
        let counters: HashMap<String, i64> = status
            .stats
            .as_ref()
            .map(|s| s.counters.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        let (loss, accuracy, rows) = round_metrics(&counters);
        let (p, m, v) = assemble(&params, &read_round(&status, &round_out)?)?;
        params = p;
        state = OptState {
            step: state.step + 1,
            m,
            v,
        };
        let secs = t0.elapsed().as_secs_f64();
        let counter = |name: &str| counters.get(name).copied().unwrap_or(0);
        let metrics = serde_json::json!({
            "epoch": epoch, "loss": loss, "accuracy": accuracy, "samples": rows,
            "datastore_bytes_read": counter(sluice_worker::DATASTORE_BYTES_COUNTER),
            "cache_hits": counter(sluice_worker::CACHE_HITS_COUNTER),
            "samples_per_s": rows as f64 / secs.max(1e-9), "seconds": secs,
            "model": args.model, "data_hash": data_hash, "job_id": id,
        });
        write_checkpoint(&out, epoch, &params, &state, &metrics)?;
        eprintln!(
            "epoch {epoch}/{}: loss {loss:.5} (before the step), accuracy {accuracy:.4}, {rows} samples, {:.0} samples/s, {secs:.2} s",
            args.epochs,
            rows as f64 / secs.max(1e-9)
        );
        history.push(metrics);
    }
    let final_path = out.join("model.safetensors");
    let last = checkpoint_path(&out, args.epochs.max(start_epoch));
    std::fs::copy(&last, &final_path).map_err(io("writing", &final_path))?;
    Ok(serde_json::json!({
        "model": final_path.display().to_string(),
        "epochs": history,
    }))
}
