//! One function per subcommand.

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha2::Digest;
use sluice_core::config::{CoordinatorConfig, ExecutorConfig};
use sluice_core::{parse_byte_size, InputFormat, JobSpec, OutputFormat};
use sluice_rpc::pb::{self, CancelJobRequest, GetJobRequest, ListJobsRequest, SubmitJobRequest};
use sluice_udf::{JobDefaults, Registry};
use tokio::net::TcpListener;

use crate::error::CliError;
use crate::{embedded, gen, progress, top, JobArgs};

/// Size of the sample corpus `run` generates when no input is given.
const SAMPLE_BYTES: u64 = 32 << 20;

fn cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(2)
}

/// The jobs a registry or a job binary holds, with their defaults set in code.
type Known = BTreeMap<String, JobDefaults>;

fn known_jobs(registry: &Registry) -> Known {
    registry
        .names()
        .into_iter()
        .filter_map(|n| Some((n.clone(), registry.get(&n)?.defaults().clone())))
        .collect()
}

/// The job the flags name; a program with one job needs no name.
fn pick_job(a: &JobArgs, known: &Known) -> Result<(String, JobDefaults), CliError> {
    let names = || known.keys().cloned().collect::<Vec<_>>().join(", ");
    let name = match (&a.job, known.len()) {
        (Some(j), _) => j.clone(),
        (None, 1) => known.keys().next().cloned().unwrap_or_default(),
        (None, _) => {
            return Err(CliError::Usage(format!(
                "name the job to run; known jobs: {}",
                names()
            )))
        }
    };
    match known.get(&name) {
        Some(d) => Ok((name, d.clone())),
        None => Err(CliError::Usage(format!(
            "unknown job '{name}'; known jobs: {}",
            names()
        ))),
    }
}

/// Checks the flags and builds a spec, taking what the flags leave out from the job's
/// defaults set in code; nothing is written here. `output` overrides both.
fn job_spec(a: &JobArgs, known: &Known, output: Option<String>) -> Result<JobSpec, CliError> {
    let (job, d) = pick_job(a, known)?;
    let split_size = match &a.split_size {
        Some(s) => parse_byte_size(s).map_err(|e| CliError::Usage(format!("--split-size: {e}")))?,
        None => sluice_core::DEFAULT_SPLIT_SIZE,
    };
    let format = match &a.format {
        Some(f) => OutputFormat::parse(f).map_err(|e| CliError::Usage(format!("--format: {e}")))?,
        None => d.output_format.unwrap_or_default(),
    };
    let input_format = match &a.input_format {
        Some(f) => {
            InputFormat::parse(f).map_err(|e| CliError::Usage(format!("--input-format: {e}")))?
        }
        None => d.input_format.unwrap_or_default(),
    };
    let reducers = a.reducers.or(d.reducers);
    if reducers == Some(0) {
        return Err(CliError::Usage("--reducers must be at least 1".into()));
    }
    let mut params = d.params.clone();
    for p in &a.params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| CliError::Usage(format!("--param '{p}' is not KEY=VALUE")))?;
        params.insert(k.to_string(), v.to_string());
    }
    if let Some(col) = &a.partition_by {
        if col.is_empty() || col.contains(['/', '=']) {
            return Err(CliError::Usage(format!(
                "--partition-by '{col}' is not a column name"
            )));
        }
        params.insert(sluice_storage::PARTITION_BY_PARAM.to_string(), col.clone());
    }
    if let Some(m) = &a.task_memory {
        parse_byte_size(m).map_err(|e| CliError::Usage(format!("--task-memory: {e}")))?;
        params.insert(sluice_core::TASK_MEMORY_PARAM.to_string(), m.clone());
    }
    if let Some(n) = a.max_attempts {
        params.insert(sluice_core::MAX_ATTEMPTS_PARAM.to_string(), n.to_string());
    }
    // Refused here rather than by every reduce task after the map stage.
    sluice_storage::OutputOptions::from_params(&params)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let output = output
        .or_else(|| a.output.clone())
        .or(d.output.clone())
        .ok_or_else(|| CliError::Usage("no output given; pass --output DIR".into()))?;
    Ok(JobSpec {
        inputs: if a.inputs.is_empty() {
            d.inputs.clone()
        } else {
            a.inputs.clone()
        },
        job,
        output,
        format,
        input_format,
        split_size,
        reducers,
        overwrite: a.overwrite,
        params,
        binary: None,
    })
}

pub async fn run(
    mut a: JobArgs,
    executors: Option<u32>,
    slots: u32,
    top_n: usize,
    registry: Registry,
) -> Result<(), CliError> {
    if a.job.as_deref() == Some("sort-validate") {
        return sort_validate(&a);
    }
    let known = known_jobs(&registry);
    let (_, defaults) = pick_job(&a, &known)?;
    let no_input = a.inputs.is_empty() && defaults.inputs.is_empty();
    let output = match (&a.output, &defaults.output, no_input) {
        (None, None, true) => {
            // No input and no output: try the job on a generated sample, replacing its last output.
            a.overwrite = true;
            Some("sample-data/out".to_string())
        }
        _ => None,
    };
    let mut spec = job_spec(&a, &known, output)?;
    if spec.inputs.is_empty() {
        let dir = PathBuf::from("sample-data/corpus");
        if !dir.join("_DONE").exists() {
            eprintln!(
                "no --input given: generating a {} MiB sample corpus in {}",
                SAMPLE_BYTES >> 20,
                dir.display()
            );
            gen::generate_text(&dir, SAMPLE_BYTES, 8, 1)?;
            std::fs::write(dir.join("_DONE"), b"").map_err(|source| CliError::Io {
                op: "writing",
                path: dir.display().to_string(),
                source,
            })?;
        }
        spec.inputs = vec![dir.display().to_string()];
    }
    if slots == 0 {
        return Err(CliError::Usage("--slots must be at least 1".into()));
    }
    let n = executors.unwrap_or_else(cores).max(1);
    let status = embedded::run_embedded(spec.clone(), n, slots, registry).await?;
    finish(&status, &spec, top_n)
}

/// `sluice run sort-validate --input INPUT --output SORTED`: prints the report as JSON; fails
/// unless the output is sorted and holds exactly the input's records.
fn sort_validate(a: &JobArgs) -> Result<(), CliError> {
    let output = a.output.as_deref().ok_or_else(|| {
        CliError::Usage(
            "sort-validate needs --input (what was sorted) and --output (the sort's output)".into(),
        )
    })?;
    if a.inputs.is_empty() {
        return Err(CliError::Usage(
            "sort-validate needs --input (what was sorted) and --output (the sort's output)".into(),
        ));
    }
    let report =
        crate::validate::validate_sort(&a.inputs, output, crate::validate::key_bytes(&a.params)?)?;
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    if report.ok() {
        return Ok(());
    }
    Err(CliError::Refused(format!(
        "sort-validate: {output} is not a sort of the input: {} records in, {} out; checksums {} and {}{}",
        report.input_records,
        report.output_records,
        report.input_checksum,
        report.output_checksum,
        report
            .first_unsorted
            .as_deref()
            .map(|at| format!("; first record out of order at {at}"))
            .unwrap_or_default()
    )))
}

/// Prints the summary (and the top rows) of a finished job; errors if it did not succeed.
fn finish(status: &pb::JobStatus, spec: &JobSpec, top_n: usize) -> Result<(), CliError> {
    // The error, if any, is the command's final line.
    progress::print_summary(status, false);
    if status.state != "succeeded" {
        return Err(CliError::JobFailed {
            job_id: status.job_id.clone(),
            state: status.state.clone(),
            error: status.error.clone(),
        });
    }
    // A partitioned output's files lack the partition column, so they are not (key, count) rows.
    let partitioned = spec.params.contains_key(sluice_storage::PARTITION_BY_PARAM);
    if top_n > 0 && !partitioned {
        // The job succeeded; an output that is not (key, count)-shaped just has no top list.
        if let Err(e) = top::print_top(&spec.output, spec.format, top_n) {
            eprintln!("note: no top rows to show: {e}");
        }
    }
    Ok(())
}

/// Submits a spec; returns the job id.
pub(crate) async fn submit_spec(
    client: &mut sluice_rpc::JobsClient<tonic::transport::Channel>,
    spec: &JobSpec,
) -> Result<String, CliError> {
    Ok(client
        .submit(SubmitJobRequest {
            spec: Some(spec.into()),
        })
        .await?
        .into_inner()
        .job_id)
}

/// Binds a listener; returns it with the address it got (port 0 picks one).
pub(crate) async fn bind(listen: &str) -> Result<(TcpListener, std::net::SocketAddr), CliError> {
    let io = |op, source| CliError::Io {
        op,
        path: listen.to_string(),
        source,
    };
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| io("cannot listen on", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| io("cannot read address of", e))?;
    Ok((listener, addr))
}

pub async fn coordinator(
    listen: &str,
    state_dir: &str,
    executor_timeout: std::time::Duration,
) -> Result<(), CliError> {
    let mut cfg = CoordinatorConfig::new(state_dir.into());
    cfg.executor_timeout = executor_timeout;
    let coord = sluice_coordinator::Coordinator::new(cfg)?;
    let (listener, addr) = bind(listen).await?;
    println!("coordinator listening on {addr}");
    sluice_coordinator::serve(coord, listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

pub async fn executor(
    coordinator: &str,
    work_dir: &str,
    slots: Option<u32>,
    listen: &str,
    worker_memory: Option<&str>,
    gpus: Option<u32>,
) -> Result<(), CliError> {
    let slots = slots.unwrap_or_else(cores);
    if slots == 0 {
        return Err(CliError::Usage("--slots must be at least 1".into()));
    }
    let worker_memory = worker_memory
        .map(|m| parse_byte_size(m).map_err(|e| CliError::Usage(format!("--worker-memory: {e}"))))
        .transpose()?;
    let mut cfg = ExecutorConfig::new(coordinator.to_string(), work_dir.into(), slots);
    cfg.listen = listen.to_string();
    cfg.worker_memory_bytes = worker_memory;
    cfg.gpus = gpus;
    let handle = sluice_executor::start(cfg, Registry::builtin()).await?;
    println!(
        "executor {} registered with {coordinator}; shuffle on {}",
        handle.id(),
        handle.shuffle_addr()
    );
    let _ = tokio::signal::ctrl_c().await;
    handle.shutdown().await;
    Ok(())
}

/// Asks a job binary which jobs it holds and their defaults (`BINARY describe`).
fn describe_binary(path: &str) -> Result<Known, CliError> {
    let out = std::process::Command::new(path)
        .arg("describe")
        .output()
        .map_err(|source| CliError::Io {
            op: "cannot run job binary",
            path: path.to_string(),
            source,
        })?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|_| {
        CliError::Usage(format!(
            "'{path} describe' did not print its jobs; is it a Sluice job binary (built with sluice_worker::main)?"
        ))
    })?;
    let mut known: Known = serde_json::from_value(v["defaults"].clone()).unwrap_or_default();
    // A binary built against an older API lists names only.
    for name in v["jobs"].as_array().into_iter().flatten() {
        if let Some(n) = name.as_str() {
            known.entry(n.to_string()).or_default();
        }
    }
    Ok(known)
}

/// Uploads a job binary; returns its SHA-256.
pub(crate) async fn upload_binary(
    client: &mut sluice_rpc::JobsClient<tonic::transport::Channel>,
    path: &str,
) -> Result<String, CliError> {
    let data = tokio::fs::read(path).await.map_err(|source| CliError::Io {
        op: "cannot read job binary",
        path: path.to_string(),
        source,
    })?;
    // Content-addressed: a binary the coordinator holds already is not sent again.
    let sha = sluice_core::digest::to_hex(&sha2::Sha256::digest(&data));
    let present = client
        .has_binary(pb::HasBinaryRequest {
            sha256: sha.clone(),
        })
        .await?
        .into_inner()
        .present;
    if present {
        return Ok(sha);
    }
    let chunks: Vec<pb::BinaryChunk> = data
        .chunks(1 << 20)
        .map(|c| pb::BinaryChunk { data: c.to_vec() })
        .collect();
    let r = client
        .upload_binary(tokio_stream::iter(chunks))
        .await?
        .into_inner();
    Ok(r.sha256)
}

pub async fn submit(
    a: JobArgs,
    coordinator: &str,
    binary: Option<&str>,
    wait: bool,
    json: bool,
) -> Result<(), CliError> {
    let known = match binary {
        Some(path) => describe_binary(path)?,
        None => known_jobs(&Registry::builtin()),
    };
    let mut spec = job_spec(&a, &known, None)?;
    let mut client = sluice_rpc::jobs_client(coordinator).await?;
    if let Some(path) = binary {
        spec.binary = Some(upload_binary(&mut client, path).await?);
    }
    let id = submit_spec(&mut client, &spec).await?;
    if !wait {
        println!("{id}");
        return Ok(());
    }
    eprintln!("submitted {id}");
    let status = progress::watch(&mut client, &id).await?;
    if json {
        let full = client
            .get_job(GetJobRequest {
                job_id: id.clone(),
                include_tasks: true,
            })
            .await?
            .into_inner();
        println!("{}", progress::status_json(&full));
    }
    finish(&status, &spec, 0)
}

pub async fn jobs(coordinator: &str, json: bool) -> Result<(), CliError> {
    let mut client = sluice_rpc::jobs_client(coordinator).await?;
    let jobs = client
        .list_jobs(ListJobsRequest {})
        .await?
        .into_inner()
        .jobs;
    if json {
        let v: Vec<_> = jobs.iter().map(progress::status_json).collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(());
    }
    println!(
        "{:<26} {:<12} {:<11} {:>9} {:>9} {:>9}",
        "JOB ID", "JOB", "STATE", "MAPS", "REDUCES", "SECONDS"
    );
    for j in jobs {
        let spec = j.spec.clone().unwrap_or_default();
        println!(
            "{:<26} {:<12} {:<11} {:>9} {:>9} {:>9.1}",
            j.job_id,
            spec.job,
            j.state,
            format!("{}/{}", j.maps_done, j.maps_total),
            format!("{}/{}", j.reduces_done, j.reduces_total),
            j.elapsed_s
        );
    }
    Ok(())
}

pub async fn status(job_id: &str, coordinator: &str, json: bool) -> Result<(), CliError> {
    let mut client = sluice_rpc::jobs_client(coordinator).await?;
    let s = client
        .get_job(GetJobRequest {
            job_id: job_id.to_string(),
            include_tasks: json,
        })
        .await?
        .into_inner();
    if json {
        println!("{}", progress::status_json(&s));
    } else {
        progress::print_summary(&s, true);
    }
    Ok(())
}

pub async fn cancel(job_id: &str, coordinator: &str) -> Result<(), CliError> {
    let mut client = sluice_rpc::jobs_client(coordinator).await?;
    let r = client
        .cancel_job(CancelJobRequest {
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner();
    println!("{job_id}: {}", r.state);
    Ok(())
}
