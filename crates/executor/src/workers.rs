//! Job binaries and their worker processes: one per job on this executor, spawned from the
//! binary the coordinator holds (fetched once, checked against its SHA-256, cached), talking
//! over a Unix socket. A worker that dies fails the task it was running, not the executor.
//! With a worker memory limit, each worker runs in its own memory cgroup where the machine
//! allows it (see `cgroup`), else under RLIMIT_AS.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sluice_core::digest::{is_sha256_hex, to_hex};
use sluice_core::FailureKind;
use sluice_rpc::pb::FetchBinaryRequest;
use sluice_rpc::ControlClient;
use sluice_worker::protocol::{read_msg, write_msg, Request, Response};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::Mutex;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::cgroup::{human_bytes, CgroupParent, WorkerCgroup};

/// The key prefix of workers shared by a session's jobs (see `sluice_core::WORKER_SESSION_PARAM`).
pub(crate) const SESSION_PREFIX: &str = "session-";
/// How long a session's worker waits unused before it is stopped.
const SESSION_IDLE: Duration = Duration::from_secs(60);

/// Lines of a worker's stderr kept for error reports.
const STDERR_TAIL: usize = 12;
/// How long a new worker may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a worker call failed.
pub(crate) struct WorkerError {
    pub msg: String,
    pub kind: FailureKind,
}

struct Proc {
    child: Child,
    socket: PathBuf,
    stderr: Arc<std::sync::Mutex<VecDeque<String>>>,
    cgroup: Option<WorkerCgroup>,
    /// When a task last asked for it.
    last_used: std::time::Instant,
    // Held open: when the executor dies, the worker sees EOF on stdin and exits.
    _stdin: ChildStdin,
}

/// The worker processes of one executor.
pub(crate) struct Workers {
    bin_dir: PathBuf,
    sock_dir: PathBuf,
    control: ControlClient<Channel>,
    memory_limit: Option<u64>,
    /// The executor's memory cgroup, when worker cgroups can be made under it.
    cgroups: Option<CgroupParent>,
    /// Cleared when a worker could not be moved into its cgroup: later workers use the rlimit.
    cgroups_usable: AtomicBool,
    procs: Mutex<HashMap<String, Proc>>,
    fetch_lock: Mutex<()>,
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => "signal",
    }
}

impl Workers {
    pub fn new(
        work_dir: &Path,
        control: ControlClient<Channel>,
        memory_limit: Option<u64>,
    ) -> Self {
        let cgroups = memory_limit.and_then(|limit| match CgroupParent::detect(limit) {
            Ok(parent) => {
                info!(
                    cgroup = %parent.dir().display(),
                    limit = %human_bytes(limit),
                    "worker memory limit: one memory cgroup per worker"
                );
                Some(parent)
            }
            Err(e) => {
                info!(
                    limit = %human_bytes(limit),
                    "worker memory limit: RLIMIT_AS (address space), because {e}"
                );
                None
            }
        });
        Workers {
            bin_dir: work_dir.join("binaries"),
            sock_dir: work_dir.join("workers"),
            control,
            memory_limit,
            cgroups_usable: AtomicBool::new(cgroups.is_some()),
            cgroups,
            procs: Mutex::new(HashMap::new()),
            fetch_lock: Mutex::new(()),
        }
    }

    /// The cached binary for `sha256`, fetched from the coordinator and checked if new.
    async fn binary(&self, sha256: &str) -> Result<PathBuf, WorkerError> {
        let fatal = |msg: String| WorkerError {
            msg,
            kind: FailureKind::Permanent,
        };
        if !is_sha256_hex(sha256) {
            return Err(fatal(format!("'{sha256}' is not a SHA-256 hash")));
        }
        let path = self.bin_dir.join(sha256);
        let _guard = self.fetch_lock.lock().await;
        if path.exists() {
            return Ok(path);
        }
        let io = |e: std::io::Error| WorkerError {
            msg: format!("caching job binary {sha256}: {e}"),
            kind: FailureKind::Retryable,
        };
        tokio::fs::create_dir_all(&self.bin_dir).await.map_err(io)?;
        let tmp = path.with_extension("part");
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut stream = self
            .control
            .clone()
            .fetch_binary(FetchBinaryRequest {
                sha256: sha256.to_string(),
            })
            .await
            .map_err(|s| WorkerError {
                msg: format!("fetching job binary {sha256}: {}", s.message()),
                kind: FailureKind::Retryable,
            })?
            .into_inner();
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.message().await.map_err(|s| WorkerError {
            msg: format!("fetching job binary {sha256}: {}", s.message()),
            kind: FailureKind::Retryable,
        })? {
            hasher.update(&chunk.data);
            file.write_all(&chunk.data).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        drop(file);
        let got = to_hex(&hasher.finalize());
        if !got.eq_ignore_ascii_case(sha256) {
            let _ = tokio::fs::remove_file(&tmp).await;
            warn!(announced = %sha256, received = %got, "job binary refused: hash mismatch");
            return Err(fatal(format!(
                "job binary refused: the coordinator announced sha256 {sha256} but sent bytes whose sha256 is {got}; upload the binary again"
            )));
        }
        tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)?;
        info!(sha256, "job binary cached");
        Ok(path)
    }

    /// The socket of this job's worker, starting one if there is none (or it died). A worker
    /// for tasks holding GPUs is one per GPU set, started with `CUDA_VISIBLE_DEVICES` naming
    /// them, so its tasks see those GPUs only (as devices 0..n).
    async fn socket(
        &self,
        job_id: &str,
        sha256: &str,
        gpus: &[u32],
    ) -> Result<PathBuf, WorkerError> {
        // Every task asks: a live worker answers without touching the binary cache.
        if let Some(s) = self.live_socket(job_id).await {
            return Ok(s);
        }
        let binary = self.binary(sha256).await?;
        let mut procs = self.procs.lock().await;
        if let Some(p) = procs.get_mut(job_id) {
            if matches!(p.child.try_wait(), Ok(None)) {
                return Ok(p.socket.clone()); // another task started it meanwhile
            }
            procs.remove(job_id);
        }
        let fail = |msg: String| WorkerError {
            msg,
            kind: FailureKind::Retryable,
        };
        tokio::fs::create_dir_all(&self.sock_dir)
            .await
            .map_err(|e| fail(format!("creating {}: {e}", self.sock_dir.display())))?;
        let socket = self.sock_dir.join(format!("{job_id}.sock"));
        let _ = tokio::fs::remove_file(&socket).await;
        let (mut child, cgroup) = self.spawn(&binary, &socket, job_id, gpus).await?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| fail("worker stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| fail("worker stdout".into()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| fail("worker stderr".into()))?;
        let tail = Arc::new(std::sync::Mutex::new(VecDeque::new()));
        {
            let (tail, job) = (tail.clone(), job_id.to_string());
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    debug!(job_id = %job, "worker: {line}");
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == STDERR_TAIL {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            });
        }
        let mut out = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(START_TIMEOUT, out.next_line()).await;
        if !matches!(ready, Ok(Ok(Some(ref l))) if l == "ready") {
            let _ = child.kill().await;
            remove_cgroup(cgroup).await;
            let tail = tail
                .lock()
                .map(|t| Vec::from(t.clone()))
                .unwrap_or_default();
            return Err(WorkerError {
                msg: format!(
                    "job binary {} did not start as a Sluice worker (is it built with sluice_worker::main?); stderr: {}",
                    binary.display(),
                    tail.join(" | ")
                ),
                kind: FailureKind::Permanent,
            });
        }
        info!(
            job_id,
            pid = child.id().unwrap_or(0),
            cgroup = %cgroup.as_ref().map(|c| c.dir().display().to_string()).unwrap_or_default(),
            "worker started"
        );
        procs.insert(
            job_id.to_string(),
            Proc {
                child,
                socket: socket.clone(),
                stderr: tail,
                cgroup,
                last_used: std::time::Instant::now(),
                _stdin: stdin,
            },
        );
        Ok(socket)
    }

    /// Starts `binary` as a worker on `socket`, in a memory cgroup of its own when the limit
    /// can be a cgroup, else with the limit as RLIMIT_AS (set by the worker from its env).
    async fn spawn(
        &self,
        binary: &Path,
        socket: &Path,
        job_id: &str,
        gpus: &[u32],
    ) -> Result<(Child, Option<WorkerCgroup>), WorkerError> {
        let fail = |msg: String| WorkerError {
            msg,
            kind: FailureKind::Retryable,
        };
        loop {
            let cgroup = match (&self.cgroups, self.memory_limit) {
                (Some(parent), Some(limit)) if self.cgroups_usable.load(Ordering::Relaxed) => {
                    match parent.create(job_id, limit) {
                        Ok(cg) => Some(cg),
                        Err(e) => {
                            warn!(job_id, "{e}; this worker is limited by RLIMIT_AS instead");
                            None
                        }
                    }
                }
                _ => None,
            };
            let mut cmd = Command::new(binary);
            cmd.arg("--sluice-worker")
                .arg(socket)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            if !gpus.is_empty() {
                let ids: Vec<String> = gpus.iter().map(u32::to_string).collect();
                cmd.env("CUDA_VISIBLE_DEVICES", ids.join(","));
            }
            match (&cgroup, self.memory_limit) {
                // The cgroup bounds what the worker really uses; an address-space limit on
                // top would fail allocations that merely reserve (and never touch) memory.
                (Some(_), _) => {
                    cmd.env_remove(sluice_worker::MEMORY_LIMIT_ENV);
                }
                (None, Some(limit)) => {
                    cmd.env(sluice_worker::MEMORY_LIMIT_ENV, limit.to_string());
                }
                (None, None) => {}
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| fail(format!("starting job binary {}: {e}", binary.display())))?;
            let Some(cg) = cgroup else {
                return Ok((child, None));
            };
            // The PID goes into the cgroup right after spawn, not in a `pre_exec` hook: that
            // hook needs `unsafe`, which the workspace denies, and the gap is harmless because
            // a worker allocates only for tasks, and it gets none before it has said `ready`,
            // which the caller waits for after this returns.
            let added = child
                .id()
                .ok_or_else(|| "the worker exited at once".to_string())
                .and_then(|pid| cg.add(pid).map_err(|e| e.to_string()));
            match added {
                Ok(()) => return Ok((child, Some(cg))),
                Err(e) => {
                    let _ = child.kill().await;
                    remove_cgroup(Some(cg)).await;
                    self.cgroups_usable.store(false, Ordering::Relaxed);
                    info!(
                        job_id,
                        "worker memory limit: RLIMIT_AS from now on, because a worker could not be put in its cgroup: {e}"
                    );
                }
            }
        }
    }

    /// The socket of this job's worker if it is running.
    async fn live_socket(&self, job_id: &str) -> Option<PathBuf> {
        let mut procs = self.procs.lock().await;
        let p = procs.get_mut(job_id)?;
        p.last_used = std::time::Instant::now();
        matches!(p.child.try_wait(), Ok(None)).then(|| p.socket.clone())
    }

    /// Runs one task in the job's worker (the one for its GPUs, when it holds some). `what`
    /// names the task and its input for messages.
    pub async fn run(
        &self,
        job_id: &str,
        sha256: &str,
        gpus: &[u32],
        req: Request,
        what: String,
    ) -> Result<Response, WorkerError> {
        let key = worker_key(job_id, gpus);
        let job_id = key.as_str();
        let socket = self.socket(job_id, sha256, gpus).await?;
        let res = tokio::task::spawn_blocking(move || {
            let mut s = std::os::unix::net::UnixStream::connect(&socket)?;
            write_msg(&mut s, &req)?;
            read_msg::<Response>(&mut s)
        })
        .await;
        match res {
            Ok(Ok(Some(resp))) => Ok(resp),
            other => {
                let detail = match other {
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                    _ => "the connection closed".to_string(),
                };
                Err(self.crashed(job_id, &what, &detail).await)
            }
        }
    }

    /// Reaps a worker that stopped answering and describes how it ended.
    async fn crashed(&self, job_id: &str, what: &str, detail: &str) -> WorkerError {
        let proc = self.procs.lock().await.remove(job_id);
        let Some(mut p) = proc else {
            return WorkerError {
                msg: format!("worker of job {job_id} went away during {what}: {detail}"),
                kind: FailureKind::Retryable,
            };
        };
        let mut kind = FailureKind::Retryable;
        let status = match tokio::time::timeout(Duration::from_secs(5), p.child.wait()).await {
            Ok(Ok(s)) => match (s.signal(), s.code(), p.cgroup.as_ref()) {
                (Some(9), _, Some(cg)) if cg.oom_killed() => {
                    kind = FailureKind::OutOfMemory;
                    format!(
                    "was killed by signal 9 (SIGKILL): it exceeded its memory limit of {} (cgroup {})",
                        human_bytes(cg.limit()),
                        cg.dir().display()
                    )
                }
                (Some(sig), _, _) => {
                    format!("was killed by signal {sig} ({})", signal_name(sig))
                }
                (None, Some(c), _) => format!("exited with status {c}"),
                _ => "ended".to_string(),
            },
            _ => {
                let _ = p.child.kill().await;
                format!("stopped answering ({detail}) and was killed")
            }
        };
        // Let the stderr reader catch the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let tail = p
            .stderr
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "))
            .unwrap_or_default();
        remove_cgroup(p.cgroup.take()).await;
        warn!(job_id, %status, "worker died");
        WorkerError {
            msg: format!(
                "worker process of job {job_id} {status} during {what}; last stderr lines: {tail}"
            ),
            kind,
        }
    }

    /// Stops the workers of a job that ended (one, or one per GPU set).
    pub async fn stop(&self, job_id: &str) {
        let gpu_prefix = format!("{job_id}.gpu");
        let procs: Vec<(String, Proc)> = {
            let mut all = self.procs.lock().await;
            let keys: Vec<String> = all
                .keys()
                .filter(|k| *k == job_id || k.starts_with(&gpu_prefix))
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| all.remove(&k).map(|p| (k, p)))
                .collect()
        };
        for (key, mut p) in procs {
            let _ = p.child.kill().await;
            remove_cgroup(p.cgroup.take()).await;
            let _ = tokio::fs::remove_file(&p.socket).await;
            info!(worker = %key, "worker stopped");
        }
    }

    /// Stops the session workers no task has asked for in a minute.
    pub async fn stop_idle_sessions(&self) {
        let idle: Vec<String> = self
            .procs
            .lock()
            .await
            .iter()
            .filter(|(k, p)| k.starts_with(SESSION_PREFIX) && p.last_used.elapsed() > SESSION_IDLE)
            .map(|(k, _)| k.clone())
            .collect();
        for k in idle {
            self.stop(&k).await;
        }
    }

    /// Stops every worker.
    pub async fn stop_all(&self) {
        let jobs: Vec<String> = self.procs.lock().await.keys().cloned().collect();
        for j in jobs {
            self.stop(&j).await;
        }
    }
}

/// The key (and socket name) of the worker for `job_id`'s tasks holding `gpus`.
fn worker_key(job_id: &str, gpus: &[u32]) -> String {
    if gpus.is_empty() {
        return job_id.to_string();
    }
    let ids: Vec<String> = gpus.iter().map(u32::to_string).collect();
    format!("{job_id}.gpu{}", ids.join("-"))
}

/// Removes a reaped worker's cgroup, off the reactor (removal may wait briefly for the kernel).
async fn remove_cgroup(cgroup: Option<WorkerCgroup>) {
    let Some(cg) = cgroup else {
        return;
    };
    let dir = cg.dir().to_path_buf();
    match tokio::task::spawn_blocking(move || cg.remove()).await {
        Ok(Ok(())) => debug!(cgroup = %dir.display(), "worker cgroup removed"),
        Ok(Err(e)) => warn!(cgroup = %dir.display(), error = %e, "removing worker cgroup"),
        Err(e) => warn!(cgroup = %dir.display(), error = %e, "removing worker cgroup"),
    }
}
