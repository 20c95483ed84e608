//! The task context, user counters and job parameters, seen from a job binary on a cluster;
//! and a job binary that runs itself embedded and submits itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sluice_testkit::{
    assert_counts_eq, example_binary, generate_text, path_str as s, read_tsv_counts,
    reference_counts, sluice, Cluster,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// Directories left under some executor's `scratch/JOB`.
fn scratch_left(cluster_dir: &Path, job_id: &str) -> Vec<PathBuf> {
    std::fs::read_dir(cluster_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("scratch").join(job_id))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn counters_count_kept_attempts_once_and_tasks_see_their_context() {
    let faulty = example_binary(BIN, "faulty", "sluice-example-faulty");
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let out = tmp.path().join("out");
    let files = generate_text(BIN, &corpus, "2MiB", 4, 5);
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let r = cluster.submit_binary(
        "flaky",
        &faulty,
        &corpus,
        &out,
        &[
            "--split-size",
            "128KiB",
            "--param",
            "modulo=7",
            "--format",
            "tsv",
            "--wait",
            "--json",
        ],
    );
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let st = r.stdout_json();

    // Reference: line lengths modulo the job parameter, and the number of lines.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = 0u64;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for l in text.lines() {
            *want.entry((l.len() % 7).to_string()).or_default() += 1;
            lines += 1;
        }
    }
    let got: BTreeMap<String, u64> = read_tsv_counts(&out).into_iter().collect();
    assert_eq!(got, want, "line lengths modulo the `modulo` parameter");

    // Map task 0 crashed after counting three lines on its first attempt; the job's counter
    // holds the kept attempts only.
    let maps = st["maps_total"].as_u64().unwrap();
    assert!(maps >= 8, "several map tasks: {st}");
    assert_eq!(st["counters"]["lines"].as_u64(), Some(lines), "{st}");
    let m0 = st["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task_id"] == "m-00000")
        .expect("task m-00000 in the status");
    assert_eq!(
        m0["attempts"].as_u64(),
        Some(2),
        "m-00000 was retried: {m0}"
    );
    // Each kept map attempt wrote into a scratch directory of its own.
    assert_eq!(
        st["counters"]["scratch_writes"].as_u64(),
        Some(maps),
        "{st}"
    );

    // Scratch space goes when the attempts and the job end.
    let job_id = st["job_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !scratch_left(cluster.dir(), job_id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "scratch directories left: {:?}",
            scratch_left(cluster.dir(), job_id)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_bad_job_parameter_fails_with_its_name() {
    let faulty = example_binary(BIN, "faulty", "sluice-example-faulty");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, "a\nbb\n").unwrap();
    let cluster = Cluster::start(BIN, 1, 1).expect("cluster starts");
    let r = cluster.submit_binary(
        "flaky",
        &faulty,
        &input,
        &tmp.path().join("out"),
        &["--param", "modulo=seven", "--wait"],
    );
    assert!(!r.success());
    let err = r.last_stderr_line();
    assert!(err.contains("modulo=\"seven\""), "{err}");
    assert!(err.contains("m-0000"), "names the task: {err}");
}

#[test]
fn a_job_binary_runs_itself_embedded_and_submits_itself() {
    let wc = example_binary(BIN, "wordcount-typed", "sluice-example-wordcount");
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let files = generate_text(BIN, &corpus, "4MiB", 3, 8);
    let want = reference_counts(&files);

    // describe: the job and the defaults set in code.
    let d = sluice(&wc, &["describe"]);
    d.assert_success();
    let v = d.stdout_json();
    assert_eq!(v["jobs"][0], "wordcount-typed");
    assert_eq!(v["defaults"]["wordcount-typed"]["reducers"], 3, "{v}");

    // run: embedded, no servers; the job name may be left out.
    let out1 = tmp.path().join("run-out");
    let r = sluice(
        &wc,
        &[
            "run",
            "--input",
            s(&corpus),
            "--output",
            s(&out1),
            "--format",
            "tsv",
            "--split-size",
            "1MiB",
        ],
    );
    r.assert_success();
    assert_counts_eq(&read_tsv_counts(&out1), &want, "job binary run embedded");
    let parts = sluice_testkit::part_files(&out1, "tsv");
    assert_eq!(parts.len(), 3, "reducers(3) set in code: {parts:?}");

    // submit: uploads itself to a cluster of plain `sluice` executors.
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let out2 = tmp.path().join("submit-out");
    let r = sluice(
        &wc,
        &[
            "submit",
            "--coordinator",
            cluster.url(),
            "--input",
            s(&corpus),
            "--output",
            s(&out2),
            "--format",
            "tsv",
            "--reducers",
            "2",
            "--wait",
            "--json",
        ],
    );
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    assert_counts_eq(
        &read_tsv_counts(&out2),
        &want,
        "job binary submitted itself",
    );
    let st = r.stdout_json();
    assert_eq!(
        st["reduces_total"], 2,
        "--reducers overrides the code: {st}"
    );

    // A job the binary does not have: one clear line naming the jobs it has.
    let r = sluice(
        &wc,
        &["run", "nope", "--input", s(&corpus), "--output", s(&out1)],
    );
    assert!(!r.success());
    let err = r.last_stderr_line();
    assert!(
        err.contains("unknown job 'nope'") && err.contains("wordcount-typed"),
        "{err}"
    );
}
