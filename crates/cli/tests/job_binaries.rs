//! Job binaries: user code built in its own crate, uploaded by SHA-256, fetched by generic
//! executors (the `sluice` binary, which does not link it) and run in worker processes.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sluice_testkit::{
    assert_counts_eq, example_binary, generate_text, path_str as s, read_tsv_counts,
    reference_counts, sorted_part_lines, workers_under, Cluster,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// The paths of the (wordcount-typed, faulty) example binaries.
fn example_binaries() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        (
            example_binary(BIN, "wordcount-typed", "sluice-example-wordcount"),
            example_binary(BIN, "faulty", "sluice-example-faulty"),
        )
    })
}

/// The distinct binaries of live worker processes under `dir`.
fn worker_binaries(dir: &Path) -> std::collections::BTreeSet<String> {
    workers_under(dir)
        .into_iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .filter_map(|c| {
            c.split(|&b| b == 0)
                .next()
                .map(|a| String::from_utf8_lossy(a).into_owned())
        })
        .collect()
}

#[test]
fn typed_wordcount_binary_runs_on_generic_executors() {
    let (wc, _) = example_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let out = tmp.path().join("out");
    let files = generate_text(BIN, &corpus, "8MiB", 4, 21);
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let r = cluster.submit_binary(
        "wordcount-typed",
        wc,
        &corpus,
        &out,
        &[
            "--split-size",
            "1MiB",
            "--reducers",
            "3",
            "--format",
            "tsv",
            "--wait",
            "--json",
        ],
    );
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    assert_counts_eq(
        &read_tsv_counts(&out),
        &reference_counts(&files),
        "job binary word count",
    );
    let st = r.stdout_json();
    let executors: std::collections::BTreeSet<&str> = st["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["executor_id"].as_str())
        .collect();
    assert_eq!(
        executors.len(),
        2,
        "both executors ran the binary's tasks: {st}"
    );
    // Workers of a finished job are stopped: none is left once executors hear of the end.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !workers_under(cluster.dir()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "workers still running after the job: {:?}",
            workers_under(cluster.dir())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn crashing_workers_fail_their_attempts_not_the_executor() {
    let (_, faulty) = example_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("small.txt");
    std::fs::write(&input, "one line\nand another\n").unwrap();
    let mut cluster = Cluster::start(BIN, 0, 1).expect("coordinator starts");
    cluster
        .add_executor(1, &["--worker-memory", "1GiB"])
        .unwrap();
    let pids = cluster.pids();
    for (job, expect) in [
        ("panic", vec!["deliberate panic", "m-00000", "small.txt"]),
        ("abort", vec!["SIGABRT", "m-00000", "small.txt"]),
        ("oom", vec!["m-00000", "small.txt"]),
    ] {
        let out = tmp.path().join(format!("out-{job}"));
        let r = cluster.submit_binary(job, faulty, &input, &out, &["--wait"]);
        assert!(!r.success(), "{job}: the job should fail");
        let last = r.last_stderr_line();
        for want in expect {
            assert!(
                last.contains(want),
                "{job}: error line lacks {want:?}: {last}"
            );
        }
        if job == "oom" {
            // A memory cgroup (where the machine allows one) kills the worker; the rlimit
            // fallback makes its allocation fail, which aborts it.
            let cgroup = last.contains("SIGKILL")
                && last.contains("exceeded its memory limit of 1 GiB (cgroup ");
            let rlimit = last.contains("SIGABRT") && last.contains("memory allocation");
            assert!(cgroup || rlimit, "oom: names neither limit: {last}");
        }
        assert!(!out.exists(), "{job}: a failed job leaves no output");
        assert!(
            cluster.all_running(),
            "{job}: a daemon died\n{}",
            cluster.logs()
        );
        assert_eq!(cluster.pids(), pids, "{job}: the executor was replaced");
    }
    // The same executor process still runs jobs, from the binary and built in.
    let out = tmp.path().join("out-lines");
    let r = cluster.submit_binary(
        "lines",
        faulty,
        &input,
        &out,
        &["--format", "tsv", "--wait"],
    );
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    assert_eq!(sorted_part_lines(&out), vec!["11\t1", "8\t1"]);
    let out = tmp.path().join("out-wc");
    let r = cluster.submit(
        "wordcount",
        &[
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--format",
            "tsv",
            "--wait",
        ],
    );
    assert!(r.success(), "{}", r.stderr);
    assert_eq!(read_tsv_counts(&out).values().sum::<u64>(), 4);
    assert_eq!(cluster.pids(), pids);
}

#[test]
fn binary_whose_hash_does_not_match_is_refused() {
    let (_, faulty) = example_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("small.txt");
    std::fs::write(&input, "x\n").unwrap();
    let out = tmp.path().join("out");
    // No executor yet: the job waits while we tamper with the stored binary.
    let mut cluster = Cluster::start(BIN, 0, 1).expect("coordinator starts");
    let r = cluster.submit_binary("lines", faulty, &input, &out, &[]);
    r.assert_success();
    let job_id = r.stdout.trim().to_string();
    let store = cluster.dir().join("coordinator-state/binaries");
    let stored: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let mut bytes = std::fs::read(&stored[0]).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&stored[0], bytes).unwrap();

    cluster.add_executor(1, &[]).unwrap();
    let st = cluster.wait_for_job(&job_id, Duration::from_secs(60));
    assert_eq!(st["state"], "failed", "{st}");
    let err = st["error"].as_str().unwrap();
    assert!(err.contains("refused") && err.contains("sha256"), "{err}");
    assert!(cluster.all_running(), "{}", cluster.logs());
    assert!(
        workers_under(cluster.dir()).is_empty(),
        "a refused binary must not run"
    );
}

#[test]
fn two_job_binaries_run_at_once_on_the_same_executors() {
    let (wc, faulty) = example_binaries();
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let files = generate_text(BIN, &corpus, "24MiB", 4, 5);
    // Both jobs are queued before any executor exists, so the second job's maps run while the
    // first waits for its reduces: the two binaries' workers must be alive at the same time.
    let mut cluster = Cluster::start(BIN, 0, 2).expect("coordinator starts");
    let submit = |cluster: &Cluster, job: &str, binary: &Path, out: &Path| {
        let r = cluster.submit_binary(
            job,
            binary,
            &corpus,
            out,
            &["--split-size", "256KiB", "--format", "tsv"],
        );
        r.assert_success();
        r.stdout.trim().to_string()
    };
    let (out_wc, out_lines) = (tmp.path().join("wc"), tmp.path().join("lines"));
    let a = submit(&cluster, "wordcount-typed", wc, &out_wc);
    let b = submit(&cluster, "lines", faulty, &out_lines);
    cluster.add_executor(2, &[]).unwrap();
    cluster.add_executor(2, &[]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while worker_binaries(cluster.dir()).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the two binaries never had workers at once"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    for id in [&a, &b] {
        let st = cluster.wait_for_job(id, Duration::from_secs(120));
        assert_eq!(st["state"], "succeeded", "{st}");
        let full = cluster.status(id);
        let on: std::collections::BTreeSet<&str> = full["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["executor_id"].as_str())
            .collect();
        assert_eq!(on.len(), 2, "job {id} ran on both executors: {full}");
    }
    assert_counts_eq(
        &read_tsv_counts(&out_wc),
        &reference_counts(&files),
        "wordcount-typed",
    );
    // Line-length histogram: recompute from the files.
    let mut want: std::collections::BTreeMap<u64, i64> = Default::default();
    for f in &files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            *want.entry(line.len() as u64).or_default() += 1;
        }
    }
    let mut got: std::collections::BTreeMap<u64, i64> = Default::default();
    for row in sorted_part_lines(&out_lines) {
        let (len, n) = row.split_once('\t').unwrap();
        assert!(got
            .insert(len.parse().unwrap(), n.parse().unwrap())
            .is_none());
    }
    assert_eq!(got, want);
}

#[test]
fn distinct_count_with_a_custom_partitioner() {
    let bin = example_binary(BIN, "distinct-count", "sluice-example-distinct");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("pairs");
    std::fs::create_dir_all(&input).unwrap();
    let names = ["ann", "bob", "cat", "dan", "eve", "fay", "gus"];
    let mut want: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for f in 0..3 {
        let mut text = String::new();
        for i in 0..4000u64 {
            let x = (i * 7919 + f * 104_729) % 10_007;
            let key = format!("{}{}", names[(x % 7) as usize], x % 5);
            let value = format!("item{}", (x * 31) % 97);
            text.push_str(&format!("{key},{value}\n"));
            want.entry(key).or_default().insert(value);
        }
        std::fs::write(input.join(format!("part{f}.csv")), text).unwrap();
    }
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let out = tmp.path().join("out");
    let r = cluster.submit_binary(
        "distinct-count",
        &bin,
        &input,
        &out,
        &[
            "--split-size",
            "16KiB",
            "--reducers",
            "3",
            "--format",
            "tsv",
            "--wait",
        ],
    );
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let mut got = std::collections::BTreeMap::new();
    for p in 0..3u32 {
        let prefix = format!("part-r-{p:05}-");
        let part = sluice_testkit::part_files(&out, "tsv")
            .into_iter()
            .find(|f| {
                f.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .unwrap_or_else(|| panic!("no {prefix}* in {}", out.display()));
        for row in std::fs::read_to_string(&part).unwrap().lines() {
            let (key, n) = row.split_once('\t').unwrap();
            assert_eq!(
                u32::from(key.as_bytes()[0]) % 3,
                p,
                "{key} is in the part its initial does not select"
            );
            assert!(got
                .insert(key.to_string(), n.parse::<usize>().unwrap())
                .is_none());
        }
    }
    let want: std::collections::BTreeMap<String, usize> =
        want.into_iter().map(|(k, v)| (k, v.len())).collect();
    assert_eq!(got, want);
}

#[test]
fn inverted_index_lists_sorted_documents_per_word() {
    let bin = example_binary(BIN, "inverted-index", "sluice-example-inverted-index");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("docs.tsv");
    let vocab = [
        "river", "stone", "bridge", "lamp", "ночь", "光", "field", "crow",
    ];
    let mut want: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    let mut text = String::new();
    for d in 0..600u64 {
        let doc = format!("doc{:04}", (d * 389) % 600);
        let words: Vec<&str> = (0..1 + d % 6)
            .map(|k| vocab[((d * 7 + k * 13) % vocab.len() as u64) as usize])
            .collect();
        for w in &words {
            want.entry(w.to_string()).or_default().insert(doc.clone());
        }
        text.push_str(&format!("{doc}\t{}\n", words.join(" ")));
    }
    std::fs::write(&input, text).unwrap();
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let out = tmp.path().join("out");
    let r = cluster.submit_binary(
        "inverted-index",
        &bin,
        &input,
        &out,
        &[
            "--split-size",
            "2KiB",
            "--reducers",
            "2",
            "--format",
            "tsv",
            "--wait",
        ],
    );
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let mut got: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for row in sorted_part_lines(&out) {
        let (word, list) = row.split_once('\t').unwrap();
        let docs = list
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(", ")
            .map(String::from)
            .collect();
        assert!(got.insert(word.to_string(), docs).is_none(), "{word} twice");
    }
    let want: std::collections::BTreeMap<String, Vec<String>> = want
        .into_iter()
        .map(|(w, d)| (w, d.into_iter().collect()))
        .collect();
    assert_eq!(got, want);
}
