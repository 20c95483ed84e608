//! Worker isolation: a job binary that segfaults, or outgrows its memory limit, fails its task
//! attempts with a message saying so, and the executor that spawned it lives on and serves the
//! next job. The memory limit is a cgroup per worker where the machine allows one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_testkit::{example_binary, path_str as s, sorted_part_lines, workers_of, Cluster};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
/// Two lines of 8 and 11 bytes; `lines` on it gives one row per length.
const INPUT: &str = "one line\nand another\n";

/// The faulty example binary, built beside `sluice` by `cargo test --workspace`, else built here.
fn faulty() -> PathBuf {
    example_binary(BIN, "faulty", "sluice-example-faulty")
}

/// Runs the working `lines` job from the faulty binary and checks its rows.
fn lines_job_works(cluster: &Cluster, faulty: &Path, input: &Path, out: &Path) {
    let r = cluster.submit_binary("lines", faulty, input, out, &["--format", "tsv", "--wait"]);
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    assert_eq!(sorted_part_lines(out), vec!["11\t1", "8\t1"]);
}

#[test]
fn segfaulting_worker_fails_its_attempt_and_the_executor_serves_on() {
    let faulty = faulty();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("small.txt");
    std::fs::write(&input, INPUT).unwrap();
    let mut cluster = Cluster::start(BIN, 0, 1).expect("coordinator starts");
    cluster.add_executor(1, &[]).unwrap();
    let pids = cluster.pids();

    let out = tmp.path().join("out-segv");
    let r = cluster.submit_binary("segv", &faulty, &input, &out, &["--wait"]);
    assert!(!r.success(), "the segv job should fail: {}", r.stdout);
    let last = r.last_stderr_line();
    let split = format!("task m-00000 (split {}:0+{})", s(&input), INPUT.len());
    for want in ["killed by signal 11 (SIGSEGV)", split.as_str()] {
        assert!(last.contains(want), "error line lacks {want:?}: {last}");
    }
    assert!(
        !last.contains("memory limit"),
        "a segfault is not a memory limit: {last}"
    );
    assert!(!out.exists(), "a failed job leaves no output");
    assert!(cluster.all_running(), "a daemon died\n{}", cluster.logs());
    assert_eq!(cluster.pids(), pids, "the executor was replaced");

    // The same executor process runs the next job, in a new worker, correctly.
    lines_job_works(&cluster, &faulty, &input, &tmp.path().join("out-lines"));
    assert!(cluster.all_running(), "{}", cluster.logs());
    assert_eq!(cluster.pids(), pids);
}

/// The memory cgroup directory of process `pid` (v1 `memory` line, else v2 `0::` line), found
/// from `/proc/PID/cgroup` and this process's mount table.
fn memory_cgroup_dir(pid: u32) -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let v1 = cgroups.lines().find_map(|l| {
        let mut p = l.splitn(3, ':');
        let (_, ctl, path) = (p.next()?, p.next()?, p.next()?);
        ctl.split(',')
            .any(|c| c == "memory")
            .then(|| path.to_string())
    });
    let (v2, path) = match v1 {
        Some(p) => (false, p),
        None => (
            true,
            cgroups
                .lines()
                .find_map(|l| l.strip_prefix("0::"))?
                .to_string(),
        ),
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|l| {
        let (before, after) = l.split_once(" - ")?;
        let f: Vec<&str> = before.split(' ').collect();
        let t: Vec<&str> = after.split(' ').collect();
        let ok = if v2 {
            t.first() == Some(&"cgroup2")
        } else {
            t.first() == Some(&"cgroup")
                && t.get(2)
                    .is_some_and(|o| o.split(',').any(|o| o == "memory"))
        };
        if !ok || f.len() < 5 {
            return None;
        }
        let rel = if f[3] == "/" {
            path.as_str()
        } else {
            path.strip_prefix(f[3])?
        };
        Some(Path::new(f[4]).join(rel.trim_start_matches('/')))
    })
}

/// Why worker cgroups with a memory limit cannot be made under `dir`, if they cannot.
fn cgroup_unwritable(dir: &Path) -> Option<String> {
    let probe = dir.join(format!("sluice-isolation-probe-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&probe) {
        return Some(format!("cannot create {}: {e}", probe.display()));
    }
    let limit = ["memory.limit_in_bytes", "memory.max"]
        .iter()
        .map(|f| probe.join(f))
        .find(|f| f.exists());
    let why = match limit {
        None => Some(format!("{} has no memory limit file", probe.display())),
        Some(f) => std::fs::write(&f, (512u64 << 20).to_string())
            .err()
            .map(|e| format!("cannot write {}: {e}", f.display())),
    };
    let _ = std::fs::remove_dir(&probe);
    why
}

/// Worker cgroups of executor `pid` under `dir`.
fn worker_cgroups(dir: &Path, pid: u32) -> Vec<PathBuf> {
    let prefix = format!("sluice-worker-{pid}-");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Waits up to 10 s for executor `pid` to have removed every worker cgroup under `dir`.
fn assert_no_worker_cgroups(dir: &Path, pid: u32, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = worker_cgroups(dir, pid);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: worker cgroups remain: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn worker_over_its_memory_limit_is_killed_in_its_own_cgroup() {
    let faulty = faulty();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("small.txt");
    std::fs::write(&input, INPUT).unwrap();
    let mut cluster = Cluster::start(BIN, 0, 1).expect("coordinator starts");
    cluster
        .add_executor(1, &["--worker-memory", "256MiB"])
        .unwrap();
    let pids = cluster.pids();
    let executor = pids[1];
    let Some(parent) = memory_cgroup_dir(executor) else {
        println!("SKIPPED worker_over_its_memory_limit_is_killed_in_its_own_cgroup: the executor has no memory cgroup (no memory controller mounted)");
        return;
    };
    if let Some(why) = cgroup_unwritable(&parent) {
        println!("SKIPPED worker_over_its_memory_limit_is_killed_in_its_own_cgroup: no writable memory cgroup: {why}");
        return;
    }

    // A working job first: its worker runs inside a child cgroup of the executor's, without
    // the rlimit variable (the cgroup is the limit).
    let job = cluster.submit_binary(
        "lines",
        &faulty,
        &input,
        &tmp.path().join("out-first"),
        &["--format", "tsv"],
    );
    job.assert_success();
    let job_id = job.stdout.trim().to_string();
    // Right after spawn the worker may not be in its cgroup yet: wait until it is.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (worker_cg, environ) = 'found: loop {
        for pid in workers_of(executor) {
            let (Some(dir), Ok(env)) = (
                memory_cgroup_dir(pid),
                std::fs::read(format!("/proc/{pid}/environ")),
            ) else {
                continue;
            };
            if dir != parent {
                break 'found (dir, String::from_utf8_lossy(&env).into_owned());
            }
        }
        assert!(
            Instant::now() < deadline,
            "no worker of the lines job was seen in a cgroup of its own\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(
        worker_cg.parent(),
        Some(parent.as_path()),
        "the worker's cgroup is not a child of the executor's"
    );
    let name = worker_cg
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with(&format!("sluice-worker-{executor}-")),
        "{name}"
    );
    assert!(
        !environ.contains("SLUICE_WORKER_MEMORY_BYTES="),
        "a worker in a cgroup also got the rlimit variable"
    );
    let st = cluster.wait_for_job(&job_id, Duration::from_secs(60));
    assert_eq!(st["state"], "succeeded", "{st}");
    assert_no_worker_cgroups(&parent, executor, "after the first job");

    // Now one that allocates without bound.
    let out = tmp.path().join("out-oom");
    let r = cluster.submit_binary("oom", &faulty, &input, &out, &["--wait"]);
    assert!(!r.success(), "the oom job should fail: {}", r.stdout);
    let last = r.last_stderr_line();
    let cgroup_named = format!("(cgroup {}/sluice-worker-{executor}-", s(&parent));
    for want in [
        "killed by signal 9 (SIGKILL)",
        "exceeded its memory limit of 256 MiB",
        cgroup_named.as_str(),
        "task m-00000 (split ",
    ] {
        assert!(last.contains(want), "error line lacks {want:?}: {last}");
    }
    assert!(!out.exists(), "a failed job leaves no output");
    assert_no_worker_cgroups(&parent, executor, "after the oom job");
    assert!(cluster.all_running(), "a daemon died\n{}", cluster.logs());
    assert_eq!(cluster.pids(), pids, "the executor was replaced");

    // The executor serves on, still with cgroups, and still removes them.
    lines_job_works(&cluster, &faulty, &input, &tmp.path().join("out-last"));
    assert_no_worker_cgroups(&parent, executor, "after the last job");
    assert_eq!(cluster.pids(), pids);
}
