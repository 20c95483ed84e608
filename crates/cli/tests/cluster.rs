//! A coordinator and two executors as separate processes; jobs submitted with `sluice submit`.

use std::collections::BTreeSet;
use std::path::Path;

use sluice_testkit::{
    assert_counts_eq, generate_text, path_str as s, read_tsv_counts, reference_counts, Cluster,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// Paths under `dir`, best effort (it may be vanishing while we look).
fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap_or(&p).display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

#[test]
fn submit_wait_json_counts_exactly_on_two_executors() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let out = tmp.path().join("out");
    let files = generate_text(BIN, &corpus, "16MiB", 4, 11);

    let mut cluster = Cluster::start(BIN, 2, 2).expect("cluster starts");
    let ids: BTreeSet<&str> = cluster.executor_ids().iter().map(String::as_str).collect();
    assert_eq!(ids.len(), 2, "executor ids {:?}", cluster.executor_ids());

    let r = cluster.submit(
        "wordcount",
        &[
            "--input",
            s(&corpus),
            "--output",
            s(&out),
            "--reducers",
            "4",
            "--split-size",
            "1MiB",
            "--format",
            "tsv",
            "--wait",
            "--json",
        ],
    );
    assert!(
        r.success(),
        "submit failed: {}\n{}",
        r.stderr,
        cluster.logs()
    );
    let st = r.stdout_json();
    assert_eq!(st["state"], "succeeded", "{st}");
    assert_eq!(st["error"], "", "{st}");
    let job_id = st["job_id"].as_str().expect("job_id").to_string();

    // Exact counts.
    let want = reference_counts(&files);
    let got = read_tsv_counts(&out);
    assert_counts_eq(&got, &want, "cluster word count");

    // Tasks: >= 16 maps, exactly 4 reduces, all succeeded, maps spread over both executors.
    let tasks = st["tasks"].as_array().expect("tasks array");
    let maps: Vec<&serde_json::Value> = tasks
        .iter()
        .filter(|t| t["task_id"].as_str().unwrap().starts_with("m-"))
        .collect();
    let reduces: Vec<&serde_json::Value> = tasks
        .iter()
        .filter(|t| t["task_id"].as_str().unwrap().starts_with("r-"))
        .collect();
    assert_eq!(maps.len() + reduces.len(), tasks.len(), "{st}");
    assert!(maps.len() >= 16, "only {} map tasks", maps.len());
    assert_eq!(st["maps_total"].as_u64(), Some(maps.len() as u64));
    assert_eq!(reduces.len(), 4, "{st}");
    assert_eq!(st["reduces_total"].as_u64(), Some(4));
    for t in tasks {
        assert_eq!(t["state"], "succeeded", "{t}");
        let e = t["executor_id"].as_str().unwrap();
        assert!(ids.contains(e), "task ran on unknown executor: {t}");
    }
    let map_execs: BTreeSet<&str> = maps
        .iter()
        .map(|t| t["executor_id"].as_str().unwrap())
        .collect();
    assert_eq!(map_execs.len(), 2, "map tasks ran on {map_execs:?} only");
    let manifest = sluice_testkit::read_manifest(&out);
    assert_eq!(manifest["job_id"].as_str(), Some(job_id.as_str()));
    assert_eq!(manifest["rows"].as_u64(), Some(want.len() as u64));
    assert_eq!(manifest["files"].as_array().unwrap().len(), 4);

    // `jobs --json` lists the job as succeeded; `status --json` agrees.
    let r = cluster.sluice(&["jobs", "--coordinator", cluster.url(), "--json"]);
    r.assert_success();
    let jobs = r.stdout_json();
    let listed: Vec<&serde_json::Value> = jobs
        .as_array()
        .expect("jobs array")
        .iter()
        .filter(|j| j["job_id"] == job_id.as_str())
        .collect();
    assert_eq!(listed.len(), 1, "{jobs}");
    assert_eq!(listed[0]["state"], "succeeded", "{jobs}");
    assert_eq!(listed[0]["job"], "wordcount", "{jobs}");

    let status = cluster.status(&job_id);
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["reduces_done"].as_u64(), Some(4));

    // An unknown job id is one error line naming the id.
    let r = cluster.sluice(&[
        "status",
        "job-does-not-exist",
        "--coordinator",
        cluster.url(),
    ]);
    assert!(!r.success());
    let lines = r.stderr_lines();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(
        lines[0].starts_with("error: ") && lines[0].contains("job-does-not-exist"),
        "{}",
        r.stderr
    );

    assert!(cluster.all_running(), "a daemon died:\n{}", cluster.logs());
}

/// Dropping a cluster kills and reaps every process it started.
#[test]
fn cluster_drop_leaves_no_processes() {
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let dir = cluster.dir().to_path_buf();
    let url = cluster.url().to_string();
    let pids = cluster.pids();
    assert_eq!(pids.len(), 3);
    let r = cluster.sluice(&["jobs", "--coordinator", &url, "--json"]);
    r.assert_success();
    assert_eq!(r.stdout_json(), serde_json::json!([]));
    drop(cluster);
    for pid in pids {
        // Killed and reaped: no process, not even a zombie, is left under that id.
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still exists"
        );
    }
    assert!(!dir.exists(), "cluster directory left behind");
    // Nothing listens on the coordinator's port any more.
    let r = sluice_testkit::sluice(BIN, &["jobs", "--coordinator", &url]);
    assert!(!r.success(), "coordinator still answers after drop");
    assert!(
        r.stderr.contains(url.trim_start_matches("http://")),
        "{}",
        r.stderr
    );
}

/// A map task that fails (input not UTF-8 in one split) fails the job: one `error:` line
/// naming the file and offset, no output left, and the cluster keeps serving.
#[test]
fn failed_job_leaves_no_output_and_cluster_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("mixed.txt");
    let mut bytes = b"good words here\n".repeat(5000);
    bytes.extend_from_slice(b"bad \xff\n");
    bytes.extend_from_slice(&b"more words\n".repeat(100));
    std::fs::write(&input, &bytes).unwrap();
    let out = tmp.path().join("out");
    let cluster = Cluster::start(BIN, 2, 2).expect("cluster starts");
    let submit = |input: &Path| {
        cluster.submit(
            "wordcount",
            &[
                "--input",
                s(input),
                "--output",
                s(&out),
                "--split-size",
                "8KiB",
                "--format",
                "tsv",
                "--wait",
            ],
        )
    };
    let r = submit(&input);
    assert!(!r.success(), "job over invalid UTF-8 succeeded");
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    assert!(errors[0].contains(s(&input)), "{}", errors[0]);
    assert!(errors[0].contains("byte offset 80004"), "{}", errors[0]);
    // Checked at once: `submit --wait` has reported the failure, so the cleanup must be done.
    assert!(
        !out.exists(),
        "a failed job left its output directory behind: {:?}",
        leftovers(&out)
    );

    // The same output can take a good job right away.
    std::fs::write(&input, b"good words here\n".repeat(5000)).unwrap();
    let r = submit(&input);
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    assert_counts_eq(
        &read_tsv_counts(&out),
        &reference_counts(&[&input]),
        "after a failure",
    );
}

/// `sluice cancel` stops a running job, its output goes away, and the output is reusable.
#[test]
fn cancel_running_job() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let out = tmp.path().join("out");
    let files = generate_text(BIN, &corpus, "64MiB", 2, 5);
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let args = [
        "submit",
        "wordcount",
        "--coordinator",
        cluster.url(),
        "--input",
        s(&corpus),
        "--output",
        s(&out),
        "--split-size",
        "256KiB",
        "--format",
        "tsv",
    ];
    let r = cluster.sluice(&args);
    r.assert_success();
    let job_id = r.stdout.trim().to_string();
    assert!(
        job_id.starts_with("job-"),
        "submit without --wait prints the id: {job_id:?}"
    );

    let r = cluster.sluice(&["cancel", &job_id, "--coordinator", cluster.url()]);
    r.assert_success();
    assert_eq!(
        r.stdout.trim(),
        format!("{job_id}: cancelled"),
        "{}",
        r.stderr
    );
    let st = cluster.status(&job_id);
    assert_eq!(st["state"], "cancelled", "{st}");
    assert!(
        st["maps_done"].as_u64().unwrap() < st["maps_total"].as_u64().unwrap(),
        "{st}"
    );
    for t in st["tasks"].as_array().unwrap() {
        assert!(t["state"] == "succeeded" || t["state"] == "killed", "{t}");
    }
    // Cancelling removes the partial output (asynchronously: allow a moment).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while out.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !out.exists(),
        "cancelled job left {:?}",
        sluice_testkit::snapshot_dir(&out).keys()
    );
    // Cancelling again is harmless and reports the final state.
    let r = cluster.sluice(&["cancel", &job_id, "--coordinator", cluster.url()]);
    r.assert_success();
    assert_eq!(r.stdout.trim(), format!("{job_id}: cancelled"));

    // The output takes the same job afterwards, with exact counts.
    let mut wait = args.to_vec();
    wait.push("--wait");
    let r = cluster.sluice(&wait);
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    assert_counts_eq(
        &read_tsv_counts(&out),
        &reference_counts(&files),
        "after cancel",
    );
}

/// Two jobs writing one output at once: afterwards the output must hold exactly the files of
/// the job its `_SUCCESS` names (or the second job must have been refused). The jobs use
/// different formats so that neither can overwrite the other's part files.
#[test]
fn concurrent_jobs_on_one_output_stay_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let small = tmp.path().join("small.txt");
    std::fs::write(&small, "only in the small job\n").unwrap();
    let out = tmp.path().join("out");
    let files = generate_text(BIN, &corpus, "32MiB", 2, 3);
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");

    let r = cluster.submit(
        "wordcount",
        &[
            "--input",
            s(&corpus),
            "--output",
            s(&out),
            "--split-size",
            "1MiB",
            "--reducers",
            "2",
            "--format",
            "tsv",
        ],
    );
    r.assert_success();
    let big_id = r.stdout.trim().to_string();
    let r = cluster.submit(
        "wordcount",
        &[
            "--input",
            s(&small),
            "--output",
            s(&out),
            "--reducers",
            "3",
            "--format",
            "parquet",
            "--wait",
            "--json",
        ],
    );
    let small_state = if r.success() {
        r.stdout_json()["state"].as_str().unwrap().to_string()
    } else {
        // Refusing the second job is fine, with one error line naming the output.
        let last = r.last_stderr_line();
        assert!(
            last.starts_with("error: ") && last.contains(s(&out)),
            "{}",
            r.stderr
        );
        "refused".to_string()
    };
    let big = cluster.wait_for_job(&big_id, std::time::Duration::from_secs(60));

    let m = sluice_testkit::read_manifest(&out);
    let mut listed: Vec<String> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut on_disk: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "_SUCCESS")
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk, listed,
        "output holds files that its _SUCCESS (job {}) does not list; big job {}, small job {}",
        m["job_id"], big["state"], small_state
    );
    if m["job_id"] == big_id.as_str() {
        assert_counts_eq(&read_tsv_counts(&out), &reference_counts(&files), "big job");
    }
}

/// An executor that crashes after running map tasks: its map outputs are gone, so they must
/// be computed again elsewhere and the job must still succeed with exact counts.
#[test]
fn lost_executor_map_outputs_are_recomputed() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let out = tmp.path().join("out");
    let files = generate_text(BIN, &corpus, "48MiB", 2, 13);
    let mut cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let victim = cluster.executor_ids()[1].clone();
    let r = cluster.submit(
        "wordcount",
        &[
            "--input",
            s(&corpus),
            "--output",
            s(&out),
            "--split-size",
            "512KiB",
            "--reducers",
            "2",
            "--format",
            "tsv",
        ],
    );
    r.assert_success();
    let job_id = r.stdout.trim().to_string();
    // Kill the victim as soon as one of its map tasks has succeeded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let st = cluster.status(&job_id);
        assert_eq!(st["state"], "running", "job ended before the crash: {st}");
        let done_there = st["tasks"].as_array().unwrap().iter().any(|t| {
            t["task_id"].as_str().unwrap().starts_with("m-")
                && t["state"] == "succeeded"
                && t["executor_id"] == victim.as_str()
        });
        if done_there {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no map succeeded on {victim}: {st}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    cluster.kill_executor(1);
    let st = cluster.wait_for_job(&job_id, std::time::Duration::from_secs(90));
    assert_eq!(st["state"], "succeeded", "{}", st["error"]);
    assert_counts_eq(
        &read_tsv_counts(&out),
        &reference_counts(&files),
        "after a crash",
    );
}
