//! The executor process: registration, heartbeats and the task loop.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sluice_core::config::ExecutorConfig;
use sluice_rpc::pb::shuffle_server::ShuffleServer;
use sluice_rpc::pb::{HeartbeatRequest, HeldOutput, RegisterRequest, RequestTasksRequest};
use sluice_rpc::ControlClient;
use sluice_shuffle::{ShuffleService, ShuffleStore};
use sluice_udf::Registry;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::gpus::GpuPool;
use crate::task::{gpu_lease, run_task, TaskEnv};
use crate::workers::Workers;
use crate::ExecutorError;

/// Long-poll wait for tasks.
const POLL_WAIT_MS: u32 = 1000;

/// A running executor; stop it with [`ExecutorHandle::shutdown`].
pub struct ExecutorHandle {
    id: Arc<RwLock<String>>,
    shuffle_addr: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    workers: Arc<Workers>,
}

impl ExecutorHandle {
    /// The id the coordinator gave this executor.
    pub fn id(&self) -> String {
        read(&self.id)
    }

    /// Where this executor serves shuffle data.
    pub fn shuffle_addr(&self) -> &str {
        &self.shuffle_addr
    }

    /// Stops asking for tasks and stops serving; running tasks are abandoned.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.workers.stop_all().await;
    }

    /// Resolves when the executor is told to stop.
    pub async fn wait(&mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }
}

fn read(id: &RwLock<String>) -> String {
    id.read()
        .map(|s| s.clone())
        .unwrap_or_else(|p| p.into_inner().clone())
}

async fn register(
    client: &mut ControlClient<Channel>,
    cfg: &ExecutorConfig,
    shuffle_addr: &str,
    jobs: Vec<String>,
    gpus: u32,
    again: Option<(&str, &ShuffleStore)>,
) -> Result<String, ExecutorError> {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    // Registering again (the coordinator restarted or lost us): ask for the same id and say
    // which map outputs are still here, so they are not recomputed.
    let (previous_id, held_outputs) = match again {
        Some((id, store)) => {
            let store = store.clone();
            let held = tokio::task::spawn_blocking(move || store.held_outputs())
                .await
                .unwrap_or_default();
            let held = held
                .into_iter()
                .map(|(job_id, map_index, attempt)| HeldOutput {
                    job_id,
                    map_index,
                    attempt,
                })
                .collect();
            (id.to_string(), held)
        }
        None => (String::new(), Vec::new()),
    };
    let resp = client
        .register(RegisterRequest {
            host,
            slots: cfg.slots,
            memory_bytes: cfg.memory_bytes,
            shuffle_addr: shuffle_addr.to_string(),
            jobs,
            previous_id,
            held_outputs,
            gpus,
        })
        .await
        .map_err(|s| ExecutorError::Refused {
            call: "register",
            message: s.message().to_string(),
        })?;
    Ok(resp.into_inner().executor_id)
}

/// Starts an executor: shuffle server, registration, heartbeat and task loops.
pub async fn start(
    cfg: ExecutorConfig,
    registry: Registry,
) -> Result<ExecutorHandle, ExecutorError> {
    let store = ShuffleStore::new(cfg.work_dir.join("shuffle"));
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| ExecutorError::Io {
            op: "binding shuffle service to",
            addr: cfg.listen.clone(),
            source,
        })?;
    let shuffle_addr = listener
        .local_addr()
        .map_err(|source| ExecutorError::Io {
            op: "reading address of",
            addr: cfg.listen.clone(),
            source,
        })?
        .to_string();
    // GPUs are found through cudarc's run-time loading; none (and why) on a machine without.
    // `--gpus N` offers N instead (fewer, to keep some for other work; or GPUs this build
    // cannot see, for job binaries that drive them themselves).
    let found = sluice_udf::gpu::discover();
    let gpus = match (&found, cfg.gpus) {
        (Ok(n), None) => {
            info!(gpus = n, "GPUs found");
            *n as u32
        }
        (Err(why), None) => {
            info!(gpus = 0, reason = %why, "no GPUs");
            0
        }
        (found, Some(n)) => {
            info!(gpus = n, found = ?found, "GPUs offered as --gpus says");
            n
        }
    };
    let mut client = sluice_rpc::control_client(&cfg.coordinator).await?;
    let id = register(
        &mut client,
        &cfg,
        &shuffle_addr,
        registry.names(),
        gpus,
        None,
    )
    .await?;
    info!(executor_id = %id, shuffle = %shuffle_addr, slots = cfg.slots, gpus, "executor registered");
    let id = Arc::new(RwLock::new(id));
    let (stop, stop_rx) = watch::channel(false);

    let server = {
        let mut stop_rx = stop_rx.clone();
        let svc = ShuffleServer::new(ShuffleService::new(store.clone()))
            .max_encoding_message_size(64 << 20);
        tokio::spawn(async move {
            let res = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    // No Nagle: a response's trailers sent right after its data would otherwise wait
                    // for the peer's delayed ACK (40 ms per task, measured in BENCHMARKS.md).
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                    async move {
                        let _ = stop_rx.wait_for(|s| *s).await;
                    },
                )
                .await;
            if let Err(e) = res {
                warn!(error = %e, "shuffle server stopped");
            }
        })
    };

    let workers = Arc::new(Workers::new(
        &cfg.work_dir,
        client.clone(),
        cfg.worker_memory_bytes,
    ));

    let heartbeat = {
        let (mut client, id, cfg, store, mut stop_rx) = (
            client.clone(),
            id.clone(),
            cfg.clone(),
            store.clone(),
            stop_rx.clone(),
        );
        let shuffle_addr = shuffle_addr.clone();
        let names = registry.names();
        let workers = workers.clone();
        tokio::spawn(async move {
            let mut cleaned: HashSet<String> = HashSet::new();
            loop {
                tokio::select! {
                    _ = stop_rx.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(cfg.heartbeat) => {}
                }
                let root = store.root().to_path_buf();
                let shuffle_disk_bytes = tokio::task::spawn_blocking(move || disk_per_job(&root))
                    .await
                    .unwrap_or_default();
                let req = HeartbeatRequest {
                    executor_id: read(&id),
                    running: 0,
                    shuffle_disk_bytes,
                };
                match client.heartbeat(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        if r.reregister {
                            let old = read(&id);
                            let again = Some((old.as_str(), &store));
                            if let Ok(new_id) = register(
                                &mut client,
                                &cfg,
                                &shuffle_addr,
                                names.clone(),
                                gpus,
                                again,
                            )
                            .await
                            {
                                warn!(executor_id = %new_id, "re-registered with the coordinator");
                                if let Ok(mut g) = id.write() {
                                    *g = new_id;
                                }
                            }
                        }
                        workers.stop_idle_sessions().await;
                        for job in r.finished_jobs {
                            if cleaned.insert(job.clone()) {
                                workers.stop(&job).await;
                                let _ = tokio::fs::remove_dir_all(
                                    cfg.work_dir.join("scratch").join(&job),
                                )
                                .await;
                                let store = store.clone();
                                let _ = tokio::task::spawn_blocking(move || store.remove_job(&job))
                                    .await;
                            }
                        }
                    }
                    Err(s) => debug!(error = %s.message(), "heartbeat failed"),
                }
            }
        })
    };

    let tasks = {
        let mut env = TaskEnv::new(
            id.clone(),
            store,
            cfg.work_dir.join("scratch"),
            registry,
            client.clone(),
            workers.clone(),
        );
        env.task_memory = default_task_memory(cfg.worker_memory_bytes, cfg.slots);
        env.gpus = GpuPool::new(gpus);
        let env = Arc::new(env);
        let mut stop_rx = stop_rx.clone();
        let slots = Arc::new(Semaphore::new(cfg.slots as usize));
        tokio::spawn(async move {
            loop {
                let first = tokio::select! {
                    _ = stop_rx.wait_for(|s| *s) => return,
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                };
                let free = slots.available_permits() as u32 + 1;
                let req = RequestTasksRequest {
                    executor_id: read(&env.id),
                    free_slots: free,
                    wait_ms: POLL_WAIT_MS,
                    free_gpus: env.gpus.free(),
                };
                let resp = tokio::select! {
                    _ = stop_rx.wait_for(|s| *s) => return,
                    r = client.request_tasks(req) => r,
                };
                let assigned = match resp {
                    Ok(r) => r.into_inner().tasks,
                    Err(s) => {
                        debug!(error = %s.message(), "request_tasks failed; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let mut first = Some(first);
                for a in assigned {
                    let permit = match first.take() {
                        Some(p) => p,
                        None => match slots.clone().try_acquire_owned() {
                            Ok(p) => p,
                            Err(_) => break,
                        },
                    };
                    let env = env.clone();
                    let lease = gpu_lease(&env, &a);
                    tokio::spawn(async move {
                        run_task(env, a, lease).await;
                        drop(permit);
                    });
                }
            }
        })
    };

    Ok(ExecutorHandle {
        id,
        shuffle_addr,
        stop,
        tasks: vec![server, heartbeat, tasks],
        workers,
    })
}

/// A task's memory budget when its job sets none: the executor's memory (its worker limit, else
/// a quarter of the machine's, since executors, the page cache and the OS share it) over its
/// slots.
fn default_task_memory(worker_memory: Option<u64>, slots: u32) -> u64 {
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(4 << 30, |kib| kib * 1024 / 4);
    worker_memory.unwrap_or(machine) / u64::from(slots.max(1))
}

/// Bytes under each job's directory of the shuffle root (`ROOT/JOB/...`).
fn disk_per_job(root: &std::path::Path) -> std::collections::HashMap<String, u64> {
    fn size(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => size(&e.path()),
                _ => e.metadata().map(|m| m.len()).unwrap_or(0),
            })
            .sum()
    }
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                size(&e.path()),
            )
        })
        .collect()
}
