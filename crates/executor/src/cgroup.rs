//! Memory cgroups for worker processes: with `--worker-memory`, each worker gets a child cgroup
//! of the executor's own memory cgroup whose limit bounds what it really uses (its RSS), and a
//! worker the kernel kills there can be told apart from one killed for another reason.
//! Where no such cgroup can be made, the caller falls back to RLIMIT_AS in the worker.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::ExecutorError;

/// Names of worker cgroups start with this, then the executor's PID.
pub(crate) const PREFIX: &str = "sluice-worker-";

/// Numbers worker cgroups within this process (embedded mode runs several executors in one).
static SEQ: AtomicU64 = AtomicU64::new(1);

/// Which cgroup interface the memory controller is under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

impl Version {
    /// The file that holds a cgroup's memory limit.
    fn limit_file(self) -> &'static str {
        match self {
            Version::V1 => "memory.limit_in_bytes",
            Version::V2 => "memory.max",
        }
    }
}

fn unavailable(reason: String) -> ExecutorError {
    ExecutorError::CgroupUnavailable(reason)
}

/// The executor's own memory cgroup, under which worker cgroups are made.
#[derive(Debug)]
pub(crate) struct CgroupParent {
    dir: PathBuf,
    version: Version,
}

/// One worker's memory cgroup; removed by [`WorkerCgroup::remove`] (or, best effort, on drop).
#[derive(Debug)]
pub(crate) struct WorkerCgroup {
    dir: PathBuf,
    version: Version,
    limit: u64,
    removed: bool,
}

/// The memory cgroup path of this process from `/proc/self/cgroup` text: v1's `memory`
/// controller line if there is one (a hybrid host keeps memory on v1), else v2's `0::` line.
fn own_cgroup(proc_cgroup: &str) -> Option<(Version, String)> {
    let mut v2 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            return Some((Version::V1, path.to_string()));
        }
        if id == "0" && controllers.is_empty() {
            v2 = Some((Version::V2, path.to_string()));
        }
    }
    v2
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |n, d| n * 8 + u32::from(d - b'0'));
            if let Ok(byte) = u8::try_from(n) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the hierarchy of `version`'s memory controller is mounted, from
/// `/proc/self/mountinfo` text: (root of the mount within the hierarchy, mount point).
fn mount_of(mountinfo: &str, version: Version) -> Option<(String, PathBuf)> {
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = before.split(' ').collect();
        let tail: Vec<&str> = after.split(' ').collect();
        if fields.len() < 5 || tail.is_empty() {
            continue;
        }
        let matches = match version {
            Version::V1 => {
                tail[0] == "cgroup"
                    && tail
                        .get(2)
                        .is_some_and(|o| o.split(',').any(|o| o == "memory"))
            }
            Version::V2 => tail[0] == "cgroup2",
        };
        if matches {
            return Some((unescape(fields[3]), PathBuf::from(unescape(fields[4]))));
        }
    }
    None
}

/// The directory of cgroup `path` under a mount of the hierarchy's `root` at `mount_point`.
fn cgroup_dir(mount_root: &str, mount_point: &Path, path: &str) -> Option<PathBuf> {
    let rel = if mount_root == "/" {
        path
    } else {
        let rest = path.strip_prefix(mount_root)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest
    };
    Some(mount_point.join(rel.trim_start_matches('/')))
}

/// The value of the line `key N` in a flat-keyed cgroup file (`memory.events`,
/// `memory.oom_control`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// `bytes` as people write it: `256 MiB`, `1 GiB`, `1536 KiB`, else in bytes.
pub(crate) fn human_bytes(bytes: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// Keeps letters, digits, `-` and `_` of a job id for a directory name.
fn name_part(job_id: &str) -> String {
    job_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect()
}

fn write(path: &Path, value: &str) -> Result<(), ExecutorError> {
    std::fs::write(path, value)
        .map_err(|e| unavailable(format!("writing {value:?} to {}: {e}", path.display())))
}

/// Removes an empty cgroup directory, retrying briefly: its last task may still be leaving.
fn rmdir(dir: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if tries < 20 && e.raw_os_error() == Some(16) => {
                // EBUSY: the killed process is not fully gone from the cgroup yet.
                tries += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

impl CgroupParent {
    /// Finds this process's memory cgroup and checks, with a probe child, that worker cgroups
    /// limited to `limit` bytes can be made in it; the error says why not.
    pub fn detect(limit: u64) -> Result<CgroupParent, ExecutorError> {
        let read = |p: &str| {
            std::fs::read_to_string(p).map_err(|e| unavailable(format!("reading {p}: {e}")))
        };
        let (version, path) = own_cgroup(&read("/proc/self/cgroup")?)
            .ok_or_else(|| unavailable("/proc/self/cgroup names no memory cgroup".into()))?;
        let (root, mount_point) =
            mount_of(&read("/proc/self/mountinfo")?, version).ok_or_else(|| {
                unavailable(match version {
                    Version::V1 => "the cgroup v1 memory controller is not mounted".into(),
                    Version::V2 => "no cgroup2 file system is mounted".into(),
                })
            })?;
        let dir = cgroup_dir(&root, &mount_point, &path).ok_or_else(|| {
            unavailable(format!(
                "this process's cgroup {path} is outside the mounted part ({root}) of the hierarchy at {}",
                mount_point.display()
            ))
        })?;
        if version == Version::V2 {
            let controllers =
                std::fs::read_to_string(dir.join("cgroup.controllers")).map_err(|e| {
                    unavailable(format!("reading {}/cgroup.controllers: {e}", dir.display()))
                })?;
            if !controllers.split_whitespace().any(|c| c == "memory") {
                return Err(unavailable(format!(
                    "the memory controller is not enabled for cgroup {}",
                    dir.display()
                )));
            }
        }
        let parent = CgroupParent { dir, version };
        parent.remove_stale();
        // A probe: can a child be made, and does it get a memory limit file we may write?
        let probe = parent.create("probe", limit)?;
        let probe_dir = probe.dir.clone();
        probe.remove().map_err(|e| {
            unavailable(format!(
                "removing probe cgroup {}: {e}",
                probe_dir.display()
            ))
        })?;
        Ok(parent)
    }

    /// The executor's memory cgroup directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes worker cgroups left by executors that no longer run (killed with -9: their
    /// workers exit when stdin closes, but nobody removed the directories). Non-empty ones stay.
    fn remove_stale(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix(PREFIX)
                .and_then(|r| r.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() && rmdir(&e.path()).is_ok() {
                tracing::debug!(cgroup = %e.path().display(), "removed a stale worker cgroup");
            }
        }
    }

    /// Makes a worker cgroup for `job_id` limited to `limit` bytes of memory (swap included
    /// where the kernel accounts it, so swapping does not dodge the limit).
    pub fn create(&self, job_id: &str, limit: u64) -> Result<WorkerCgroup, ExecutorError> {
        let name = format!(
            "{PREFIX}{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            name_part(job_id)
        );
        let dir = self.dir.join(name);
        if self.version == Version::V2 && !self.dir.join("cgroup.subtree_control").exists() {
            return Err(unavailable(format!(
                "{} has no cgroup.subtree_control",
                self.dir.display()
            )));
        }
        std::fs::create_dir(&dir)
            .map_err(|e| unavailable(format!("creating cgroup {}: {e}", dir.display())))?;
        let cg = WorkerCgroup {
            dir,
            version: self.version,
            limit,
            removed: false,
        };
        let limit_file = cg.dir.join(self.version.limit_file());
        if self.version == Version::V2 && !limit_file.exists() {
            // Children get memory.max only when the parent passes the controller down.
            write(&self.dir.join("cgroup.subtree_control"), "+memory")?;
            if !limit_file.exists() {
                return Err(unavailable(format!(
                    "cgroup {} has no {}",
                    cg.dir.display(),
                    self.version.limit_file()
                )));
            }
        }
        write(&limit_file, &limit.to_string())?;
        match self.version {
            Version::V1 => {
                let memsw = cg.dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    // Absent or refused when swap accounting is off: then there is no swap
                    // to dodge the limit through, or nothing we can do about it.
                    let _ = std::fs::write(memsw, limit.to_string());
                }
            }
            Version::V2 => {
                let swap = cg.dir.join("memory.swap.max");
                if swap.exists() {
                    let _ = std::fs::write(swap, "0");
                }
            }
        }
        Ok(cg)
    }
}

impl WorkerCgroup {
    /// Moves process `pid` (all its threads) into this cgroup.
    pub fn add(&self, pid: u32) -> Result<(), ExecutorError> {
        write(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    /// The cgroup's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The memory limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// True when the kernel's OOM killer acted in this cgroup, i.e. a process here was killed
    /// for exceeding the memory limit.
    pub fn oom_killed(&self) -> bool {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        match self.version {
            Version::V1 => {
                let ctl = read("memory.oom_control");
                match keyed(&ctl, "oom_kill") {
                    Some(n) => n > 0 || keyed(&ctl, "under_oom") == Some(1),
                    // Kernels before 4.13 have no oom_kill count: that the limit was hit
                    // and the process then died by SIGKILL is the best evidence there is.
                    None => {
                        keyed(&ctl, "under_oom") == Some(1)
                            || read("memory.failcnt").trim().parse::<u64>().unwrap_or(0) > 0
                    }
                }
            }
            Version::V2 => keyed(&read("memory.events"), "oom_kill").is_some_and(|n| n > 0),
        }
    }

    /// Removes the cgroup; call once its process has been reaped.
    pub fn remove(mut self) -> std::io::Result<()> {
        self.removed = true;
        rmdir(&self.dir)
    }
}

impl Drop for WorkerCgroup {
    fn drop(&mut self) {
        if !self.removed {
            // Best effort: a worker killed on drop may not be gone yet; a later executor
            // start removes what is left (see `remove_stale`).
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_memory_cgroup_v1_then_v2() {
        let hybrid = "9:name=systemd:/\n4:memory:/process_api/abc\n3:cpuset:/\n0::/\n";
        assert_eq!(
            own_cgroup(hybrid),
            Some((Version::V1, "/process_api/abc".into()))
        );
        let joined = "5:cpu,memory,cpuacct:/a/b\n";
        assert_eq!(own_cgroup(joined), Some((Version::V1, "/a/b".into())));
        let unified = "0::/user.slice/session-1.scope\n";
        assert_eq!(
            own_cgroup(unified),
            Some((Version::V2, "/user.slice/session-1.scope".into()))
        );
        assert_eq!(own_cgroup("3:cpuset:/\n"), None);
    }

    #[test]
    fn finds_the_mount_from_mountinfo() {
        let mi = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 /docker/x /sys/fs/cgroup/mem\\040ory rw,relatime shared:9 - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
        assert_eq!(
            mount_of(mi, Version::V1),
            Some(("/docker/x".into(), PathBuf::from("/sys/fs/cgroup/mem ory")))
        );
        assert_eq!(
            mount_of(mi, Version::V2),
            Some(("/".into(), PathBuf::from("/sys/fs/cgroup/unified")))
        );
        assert_eq!(
            mount_of("1 2 0:1 / / rw - ext4 /dev/sda rw\n", Version::V1),
            None
        );
    }

    #[test]
    fn cgroup_paths_are_taken_relative_to_the_mount_root() {
        let mp = Path::new("/sys/fs/cgroup/memory");
        assert_eq!(
            cgroup_dir("/", mp, "/process_api/abc"),
            Some(mp.join("process_api/abc"))
        );
        assert_eq!(
            cgroup_dir("/docker/x", mp, "/docker/x/y"),
            Some(mp.join("y"))
        );
        assert_eq!(
            cgroup_dir("/docker/x", mp, "/docker/x"),
            Some(mp.to_path_buf())
        );
        assert_eq!(cgroup_dir("/docker/x", mp, "/docker/xy"), None);
        assert_eq!(cgroup_dir("/docker/x", mp, "/other"), None);
    }

    #[test]
    fn reads_oom_counters_and_formats_sizes() {
        let ctl = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(keyed(ctl, "oom_kill"), Some(2));
        assert_eq!(keyed(ctl, "under_oom"), Some(0));
        assert_eq!(keyed(ctl, "oom"), None);
        assert_eq!(human_bytes(256 << 20), "256 MiB");
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(1536 << 10), "1536 KiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
        assert_eq!(name_part("job-1/../x"), "job-1x");
    }
}
