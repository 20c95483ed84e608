//! The built-in `sort` job on TeraSort-like records (10 printable key bytes, a record number,
//! filler, 100 bytes a line, as `../shared/bench/gen` writes them): range-partitioned by
//! sampled keys, so the part files read in name order are globally sorted; checked here line
//! by line and by `sluice run sort-validate`, which must also catch a tampered output.

use std::path::{Path, PathBuf};

use sluice_testkit::{
    generate_sort_records, path_str as s, read_manifest, sluice, Cluster, CmdOutput,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// Writes `n` records over `files` files; with `skew`, that percentage of them share one key.
fn records(dir: &Path, n: u64, files: u64, seed: u64, skew: u64) -> Vec<String> {
    generate_sort_records(dir, n, files, seed, skew)
}

/// `sluice run sort-validate` of the sort of `input` into `out`.
fn validate(input: &Path, out: &Path) -> CmdOutput {
    sluice(
        BIN,
        &[
            "run",
            "sort-validate",
            "--input",
            s(input),
            "--output",
            s(out),
        ],
    )
}

/// `sluice submit sort` of `input` into `out` on `cluster` with `args` besides; asserts that
/// it succeeded (was accepted, without `--wait`).
fn submit_sort(cluster: &Cluster, input: &Path, out: &Path, args: &[&str]) -> CmdOutput {
    let mut all = vec!["--input", s(input), "--output", s(out)];
    all.extend_from_slice(args);
    let r = cluster.submit("sort", &all);
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    r
}

/// The committed part files, in name order.
fn parts_in_name_order(out: &Path) -> Vec<PathBuf> {
    let m = read_manifest(out);
    let mut parts: Vec<PathBuf> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| out.join(f["path"].as_str().unwrap()))
        .collect();
    parts.sort();
    parts
}

/// Checks that the parts, read in name order, are the input's lines sorted by key.
fn assert_globally_sorted(out: &Path, input: &[String]) -> Vec<usize> {
    let parts = parts_in_name_order(out);
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    for p in &parts {
        let text = std::fs::read_to_string(p).unwrap();
        sizes.push(text.lines().count());
        got.extend(text.lines().map(str::to_string));
    }
    for (i, w) in got.windows(2).enumerate() {
        assert!(
            w[0][..10] <= w[1][..10],
            "line {i} and the next are out of order: {w:?}"
        );
    }
    let mut want = input.to_vec();
    want.sort();
    let mut sorted_got = got.clone();
    sorted_got.sort();
    assert!(
        sorted_got == want,
        "the output holds exactly the input's records"
    );
    sizes
}

#[test]
fn sort_output_is_globally_sorted_and_validates() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let lines = records(&input, 40_000, 3, 7, 0);
    let out = tmp.path().join("sorted");
    let r = sluice(
        BIN,
        &[
            "run",
            "sort",
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--reducers",
            "4",
            "--split-size",
            "512KiB",
            "--executors",
            "2",
            "--top",
            "0",
        ],
    );
    r.assert_success();
    let sizes = assert_globally_sorted(&out, &lines);
    assert_eq!(sizes.len(), 4);
    // Sampled boundaries cut the keys into ranges of about equal size.
    for n in &sizes {
        assert!(
            *n > 40_000 / 4 / 2 && *n < 40_000 / 4 * 2,
            "part sizes {sizes:?}"
        );
    }
    assert!(parts_in_name_order(&out)
        .iter()
        .all(|p| p.extension().is_some_and(|e| e == "txt")));

    let v = validate(&input, &out);
    v.assert_success();
    let report = v.stdout_json();
    assert_eq!(report["input_records"], 40_000, "{report}");
    assert_eq!(report["output_records"], 40_000, "{report}");
    assert_eq!(
        report["input_checksum"], report["output_checksum"],
        "{report}"
    );

    // The validator catches a record out of order and a lost record.
    let parts = parts_in_name_order(&out);
    let first = std::fs::read_to_string(&parts[0]).unwrap();
    let mut l: Vec<&str> = first.lines().collect();
    l.swap(10, 11);
    std::fs::write(&parts[0], l.join("\n") + "\n").unwrap();
    let v = validate(&input, &out);
    assert!(!v.success());
    let err = v.last_stderr_line();
    let at = format!("{}:{}", s(&parts[0]), 11 * 100);
    assert!(err.contains("out of order") && err.contains(&at), "{err}");
    l.remove(5);
    l.swap(9, 10);
    std::fs::write(&parts[0], l.join("\n") + "\n").unwrap();
    let v = validate(&input, &out);
    assert!(!v.success());
    let err = v.last_stderr_line();
    assert!(err.contains("40000 records in, 39999 out"), "{err}");
}

#[test]
fn a_key_held_by_half_the_records_sorts_on_a_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let lines = records(&input, 30_000, 2, 11, 50);
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let out = tmp.path().join("sorted");
    submit_sort(
        &cluster,
        &input,
        &out,
        &["--reducers", "3", "--split-size", "256KiB", "--wait"],
    );
    let sizes = assert_globally_sorted(&out, &lines);
    // The hot key lands whole in one range.
    assert!(sizes.iter().any(|n| *n >= 15_000), "{sizes:?}");
    let v = validate(&input, &out);
    v.assert_success();
}

#[test]
fn a_small_task_memory_spills_and_merges_in_passes_with_the_same_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    // 60,000 records, 6 MB in 2 files; half of them share one key.
    let lines = records(&input, 60_000, 2, 23, 50);
    let out = tmp.path().join("sorted");
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    // 2 MiB: maps cut their 3 MB splits into 1 MiB chunks and spill a run each; reducers may
    // hold 2 runs at once, so they merge the maps' runs in passes first.
    let r = submit_sort(
        &cluster,
        &input,
        &out,
        &[
            "--reducers",
            "3",
            "--split-size",
            "3MiB",
            "--task-memory",
            "2MiB",
            "--wait",
            "--json",
        ],
    );
    let st = r.stdout_json();
    assert!(
        st["counters"]["spilled_runs"].as_i64().unwrap_or(0) >= 6,
        "every map spilled runs: {}",
        st["counters"]
    );
    // Disk: the spilled runs, and the map outputs kept until the job ends.
    let spilled = st["counters"]["spilled_bytes"].as_i64().unwrap_or(0);
    let shuffle = st["stats"]["shuffle_bytes"].as_i64().unwrap_or(0);
    assert!(spilled > 0 && shuffle > 0, "{st}");
    assert_globally_sorted(&out, &lines);
    let v = validate(&input, &out);
    v.assert_success();
    // Nothing of the job's shuffle is left on the executors once it is done (they clean up
    // when a heartbeat tells them the job ended).
    let job_id = st["job_id"].as_str().unwrap().to_string();
    let shuffle_left = || -> Vec<PathBuf> {
        walk(cluster.dir())
            .into_iter()
            .filter(|p| {
                let n = p.to_string_lossy();
                n.contains(&job_id)
                    && [".data", ".index", ".seg", ".run"]
                        .iter()
                        .any(|e| n.ends_with(e))
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !shuffle_left().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        shuffle_left().is_empty(),
        "shuffle files left: {:?}",
        shuffle_left()
    );
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn wordcount_within_a_small_task_memory_counts_exactly() {
    use sluice_testkit::{assert_counts_eq, generate_text, read_tsv_counts, reference_counts};
    let tmp = tempfile::tempdir().unwrap();
    let files = generate_text(BIN, tmp.path().join("in"), "8MiB", 2, 5);
    let want = reference_counts(&files);
    let out = tmp.path().join("counts");
    let r = sluice(
        BIN,
        &[
            "run",
            "wordcount",
            "--input",
            s(&tmp.path().join("in")),
            "--output",
            s(&out),
            "--format",
            "tsv",
            "--split-size",
            "4MiB",
            "--task-memory",
            "2MiB",
            "--executors",
            "2",
            "--top",
            "0",
        ],
    );
    r.assert_success();
    assert!(
        r.stderr.contains("spilled_runs"),
        "the maps spilled: {}",
        r.stderr
    );
    assert_counts_eq(
        &read_tsv_counts(&out),
        &want,
        "wordcount with --task-memory 2MiB",
    );
}

#[test]
fn a_full_shuffle_disk_fails_the_job_naming_the_file() {
    // The embedded executors work under $TMPDIR: a 1 MiB tmpfs there fills up with the shuffle
    // of 8 MB of records. Mounting needs root, as CI has.
    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs", s(&small)])
        .status()
        .is_ok_and(|st| st.success());
    assert!(
        mounted,
        "this test mounts a 1 MiB tmpfs and needs root (as CI runs)"
    );
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&small);
    let input = tmp.path().join("in");
    records(&input, 80_000, 2, 3, 0);
    let out = tmp.path().join("sorted");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "run",
        "sort",
        "--input",
        s(&input),
        "--output",
        s(&out),
        "--split-size",
        "8MiB",
        "--executors",
        "1",
        "--top",
        "0",
    ])
    .env("TMPDIR", &small);
    let o = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the job cannot fit: {stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("No space left on device") && last.contains(s(&small)),
        "the error names the cause and where: {last}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.join("_SUCCESS").exists());
}

#[test]
fn the_job_status_shows_the_shuffle_disk_of_each_executor_until_it_is_cleaned() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    records(&input, 300_000, 4, 29, 0);
    let out = tmp.path().join("sorted");
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let r = submit_sort(
        &cluster,
        &input,
        &out,
        &[
            "--reducers",
            "2",
            "--split-size",
            "4MiB",
            "--task-memory",
            "2MiB",
        ],
    );
    let job_id = r
        .stdout
        .split_whitespace()
        .find(|w| w.starts_with("job-"))
        .unwrap()
        .to_string();
    // Executors report every heartbeat (1 s), the last time with the job's files still there
    // (the same heartbeat tells them the job ended); the next one no longer has the job.
    let disk = |st: &serde_json::Value| -> u64 {
        st["disk_bytes"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum())
    };
    let (mut seen, mut cleaned) = (0, false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !cleaned {
        assert!(
            std::time::Instant::now() < deadline,
            "seen {seen}: {}",
            cluster.status(&job_id)
        );
        let st = cluster.status(&job_id);
        let d = disk(&st);
        seen = seen.max(d);
        cleaned = st["state"] == "succeeded" && seen > 0 && d == 0;
        assert_ne!(st["state"], "failed", "{st}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(seen > 1 << 20, "the shuffle's disk was reported: {seen}");
}

#[test]
fn csv_without_multiline_records_is_chunked_within_a_small_task_memory() {
    use sluice_testkit::{assert_counts_eq, read_tsv_counts};
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    // 6 MB of CSV with a header line; word count reads its records as lines.
    let mut text = String::from("id,name,city\n");
    for i in 0..200_000 {
        text.push_str(&format!("{i},name{},city{}\n", i % 977, i % 13));
    }
    std::fs::write(input.join("people.csv"), &text).unwrap();
    let run = |out: &Path, budget: &[&str]| {
        let mut args = vec![
            "run",
            "wordcount",
            "--input",
            s(&input),
            "--output",
            s(out),
            "--format",
            "tsv",
            "--input-format",
            "csv",
            "--param",
            "sluice.csv.multiline=false",
            "--split-size",
            "4MiB",
            "--executors",
            "2",
            "--top",
            "0",
        ];
        args.extend_from_slice(budget);
        let r = sluice(BIN, &args);
        r.assert_success();
        r
    };
    let whole = tmp.path().join("whole");
    let r = run(&whole, &[]);
    assert!(!r.stderr.contains("spilled_runs"), "{}", r.stderr);
    let chunked = tmp.path().join("chunked");
    let r = run(&chunked, &["--task-memory", "2MiB"]);
    assert!(
        r.stderr.contains("spilled_runs"),
        "the maps chunked: {}",
        r.stderr
    );
    let want = read_tsv_counts(&whole);
    // The header was read once, as the first record of the file, and not as data.
    assert!(!want.contains_key("id,name,city"), "{want:?}");
    assert_eq!(want.values().sum::<u64>(), 200_000);
    assert_counts_eq(&read_tsv_counts(&chunked), &want, "chunked CSV");
}
