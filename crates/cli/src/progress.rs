//! Live progress while a job runs, and its summary.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sluice_rpc::pb::{self, WatchJobRequest};
use sluice_rpc::JobsClient;
use tonic::transport::Channel;

use crate::error::CliError;

/// Interval of plain progress lines when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn line(s: &pb::JobStatus) -> String {
    let st = s.stats.clone().unwrap_or_default();
    let rate = if s.elapsed_s > 0.0 {
        mib(st.bytes_read) / s.elapsed_s
    } else {
        0.0
    };
    format!(
        "maps {}/{}  reduces {}/{}  read {:.1} MiB ({:.1} MiB/s)  {:.1}s  [{}]",
        s.maps_done,
        s.maps_total,
        s.reduces_done,
        s.reduces_total,
        mib(st.bytes_read),
        rate,
        s.elapsed_s,
        s.state
    )
}

/// How long `--wait` keeps reconnecting to a coordinator that went away (it may be restarting
/// on its state directory).
const RECONNECT_FOR: Duration = Duration::from_secs(120);

fn is_final(s: &pb::JobStatus) -> bool {
    matches!(s.state.as_str(), "succeeded" | "failed" | "cancelled")
}

/// Follows a job until it is final, drawing a bar on a terminal or printing plain lines,
/// reconnecting if the coordinator restarts meanwhile.
pub async fn watch(
    client: &mut JobsClient<Channel>,
    job_id: &str,
) -> Result<pb::JobStatus, CliError> {
    let mut stream: Option<tonic::Streaming<pb::JobStatus>> = None;
    let tty = std::io::stderr().is_terminal();
    let bar = tty.then(|| {
        let b = ProgressBar::new(1);
        b.set_style(
            ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} tasks  {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    });
    let mut last_plain: Option<Instant> = None;
    let mut last = None;
    // The stream breaks if the coordinator restarts: open it again until the job is final,
    // for as long as the coordinator may take to come back.
    let mut lost_since: Option<Instant> = None;
    loop {
        let next = match stream.as_mut() {
            Some(st) => st.message().await,
            None => match client
                .watch_job(WatchJobRequest {
                    job_id: job_id.to_string(),
                })
                .await
            {
                Ok(r) => {
                    lost_since = None;
                    stream = Some(r.into_inner());
                    continue;
                }
                Err(e) => Err(e),
            },
        };
        let s = match next {
            Ok(Some(s)) => s,
            Ok(None) if last.as_ref().is_some_and(is_final) => break,
            Err(e) if e.code() == tonic::Code::NotFound => return Err(e.into()),
            Ok(None) | Err(_) => {
                stream = None;
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RECONNECT_FOR {
                    return Err(CliError::Refused(format!(
                        "lost the coordinator while following {job_id}, and it did not come back in {} s; `sluice status {job_id}` shows the job once it does",
                        RECONNECT_FOR.as_secs()
                    )));
                }
                if since.elapsed() < Duration::from_millis(50) {
                    eprintln!("{job_id}: lost the coordinator; reconnecting");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let msg = line(&s);
        match &bar {
            Some(b) => {
                b.set_length((s.maps_total + s.reduces_total).max(1) as u64);
                b.set_position((s.maps_done + s.reduces_done) as u64);
                b.set_message(msg);
            }
            None => {
                if last_plain.is_none_or(|t| t.elapsed() >= PLAIN_EVERY) {
                    eprintln!("{job_id}: {msg}");
                    last_plain = Some(Instant::now());
                }
            }
        }
        let done = is_final(&s);
        last = Some(s);
        if done {
            break;
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    last.ok_or_else(|| {
        CliError::Refused(format!(
            "the coordinator closed the progress stream of {job_id} without a status"
        ))
    })
}

/// Prints the final counters of a job, and its error when `show_error`.
pub fn print_summary(s: &pb::JobStatus, show_error: bool) {
    let st = s.stats.clone().unwrap_or_default();
    let spec = s.spec.clone().unwrap_or_default();
    eprintln!(
        "job {} ({}) {} in {:.2}s: {} maps, {} reduces; {} records in, {} records out; read {:.1} MiB, shuffled {:.1} MiB, wrote {:.1} MiB to {}",
        s.job_id, spec.job, s.state, s.elapsed_s, s.maps_total, s.reduces_total,
        st.records_in, st.records_out, mib(st.bytes_read), mib(st.shuffle_bytes), mib(st.bytes_out), spec.output
    );
    if !st.counters.is_empty() {
        let mut c: Vec<_> = st.counters.iter().collect();
        c.sort();
        let c: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!("  counters: {}", c.join(" "));
    }
    if show_error && !s.error.is_empty() {
        eprintln!("  error: {}", s.error);
    }
}

/// The status as JSON, for `--json`.
pub fn status_json(s: &pb::JobStatus) -> serde_json::Value {
    let st = s.stats.clone().unwrap_or_default();
    let spec = s.spec.clone().unwrap_or_default();
    serde_json::json!({
        "job_id": s.job_id,
        "job": spec.job,
        "inputs": spec.inputs,
        "output": spec.output,
        "format": spec.format,
        "state": s.state,
        "error": s.error,
        "maps_total": s.maps_total,
        "maps_done": s.maps_done,
        "reduces_total": s.reduces_total,
        "reduces_done": s.reduces_done,
        "elapsed_s": s.elapsed_s,
        "counters": st.counters.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "submitted_unix_ms": s.submitted_unix_ms,
        "stats": {
            "bytes_read": st.bytes_read,
            "records_in": st.records_in,
            "records_out": st.records_out,
            "shuffle_bytes": st.shuffle_bytes,
            "bytes_out": st.bytes_out,
        },
        "disk_bytes": s.disk_bytes.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "files": s.files.iter().map(|f| serde_json::json!({"path": f.path, "rows": f.rows, "bytes": f.bytes})).collect::<Vec<_>>(),
        "tasks": s.tasks.iter().map(|t| serde_json::json!({
            "task_id": t.task_id, "state": t.state, "executor_id": t.executor_id,
            "attempts": t.attempts, "error": t.error,
            "history": t.history.iter().map(|a| serde_json::json!({
                "attempt": a.attempt, "executor_id": a.executor_id, "outcome": a.outcome,
                "error": a.error, "speculative": a.speculative,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "train": train_json(&spec, &st),
    })
}

/// A training round's place and metrics, with the metrics of its run's finished epochs (the
/// driver passes them to each round, so the coordinator keeps them); null for other jobs.
fn train_json(spec: &pb::JobSpec, st: &pb::Stats) -> serde_json::Value {
    use sluice_udf::train_step as ts;
    if spec.job != "train-step" {
        return serde_json::Value::Null;
    }
    let p = |k: &str| spec.params.get(k).cloned().unwrap_or_default();
    let num = |k: &str| p(k).parse::<u64>().unwrap_or(0);
    let counters: std::collections::HashMap<String, i64> =
        st.counters.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let (loss, accuracy, samples) = ts::round_metrics(&counters);
    serde_json::json!({
        "run": p(ts::RUN_PARAM),
        "epoch": num(ts::EPOCH_PARAM),
        "step": num(ts::STEP_PARAM),
        "steps": num(ts::STEPS_PARAM).max(1),
        "round": {"loss": loss, "accuracy": accuracy, "samples": samples},
        "epochs": serde_json::from_str::<serde_json::Value>(&p(ts::HISTORY_PARAM))
            .unwrap_or_else(|_| serde_json::json!([])),
    })
}
