//! Embedded mode: a coordinator and N executors in this process, talking gRPC on loopback,
//! exactly the code paths of a cluster.

use sluice_core::config::ExecutorConfig;
use sluice_core::JobSpec;
use std::path::PathBuf;

use sluice_core::config::CoordinatorConfig;
use sluice_rpc::pb;
use sluice_udf::Registry;

use crate::commands::{bind, submit_spec};
use crate::error::CliError;
use crate::progress;

/// A coordinator and executors in this process, on loopback ports.
pub struct Embedded {
    /// The coordinator's URL.
    pub url: String,
    handles: Vec<sluice_executor::ExecutorHandle>,
    stop: tokio::sync::oneshot::Sender<()>,
    _scratch: tempfile::TempDir,
}

impl Embedded {
    /// Starts a coordinator and `executors` executors of `slots` slots running `registry`.
    pub async fn start(executors: u32, slots: u32, registry: Registry) -> Result<Self, CliError> {
        let scratch = tempfile::Builder::new()
            .prefix("sluice-run-")
            .tempdir()
            .map_err(|source| CliError::Io {
                op: "creating scratch directory in",
                path: std::env::temp_dir().display().to_string(),
                source,
            })?;
        let (url, stop) = start_coordinator(scratch.path().join("state")).await?;
        let mut handles = Vec::new();
        for i in 0..executors {
            let cfg = ExecutorConfig::new(
                url.clone(),
                scratch.path().join(format!("executor-{i}")),
                slots,
            );
            handles.push(sluice_executor::start(cfg, registry.clone()).await?);
        }
        Ok(Embedded {
            url,
            handles,
            stop,
            _scratch: scratch,
        })
    }

    /// Stops the executors and the coordinator.
    pub async fn shutdown(self) {
        for h in self.handles {
            h.shutdown().await;
        }
        let _ = self.stop.send(());
    }
}

/// Runs one job to its end and returns its final status.
pub async fn run_embedded(
    spec: JobSpec,
    executors: u32,
    slots: u32,
    registry: Registry,
) -> Result<pb::JobStatus, CliError> {
    let cluster = Embedded::start(executors, slots, registry).await?;
    let result = async {
        let mut client = sluice_rpc::jobs_client(&cluster.url).await?;
        let id = submit_spec(&mut client, &spec).await?;
        progress::watch(&mut client, &id).await
    }
    .await;
    cluster.shutdown().await;
    result
}

/// Starts an in-process coordinator on a loopback port; returns its URL and its stop switch.
async fn start_coordinator(
    state_dir: PathBuf,
) -> Result<(String, tokio::sync::oneshot::Sender<()>), CliError> {
    let coord = sluice_coordinator::Coordinator::new(CoordinatorConfig::new(state_dir))?;
    let (listener, addr) = bind("127.0.0.1:0").await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(sluice_coordinator::serve(coord, listener, async move {
        let _ = rx.await;
    }));
    Ok((format!("http://{addr}"), tx))
}
