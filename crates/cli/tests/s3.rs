//! Inputs on an S3-compatible object store: a real s3s-fs server on loopback (checking SigV4
//! credentials), named in a datastores file or addressed as `s3://`. Word count must read
//! thousands of small objects and some large ones exactly, skip `_` and `.` names, and fail
//! clearly on an unknown datastore, wrong credentials or a missing bucket.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_testkit::path_str as s;
use sluice_testkit::{
    assert_counts_eq, count_text, generate_text, read_tsv_counts, CmdOutput, Counts,
};
use support::moto::MotoServer;
use support::s3::{block, keys_under, put_all, Objects, S3Server, KEY, SECRET};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// `sluice ARGS` with the datastore environment.
fn sluice_env(args: &[&str], env: &[(&str, &str)]) -> CmdOutput {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sluice");
    CmdOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        cmdline: format!("sluice {}", args.join(" ")),
    }
}

/// A committed (word, count) Parquet output on S3, read as its manifest lists it; checks
/// that the manifest lists exactly the objects under the prefix, besides `_SUCCESS`.
fn s3_output(store: &Arc<dyn ObjectStore>, prefix: &str) -> (Counts, serde_json::Value) {
    let get = |rel: &str| {
        let key = ObjectPath::from(format!("{prefix}/{rel}"));
        block(async { store.get(&key).await?.bytes().await })
            .unwrap_or_else(|e| panic!("reading {key}: {e}"))
    };
    committed_output(prefix, keys_under(store, prefix), get)
}

/// The same for an output directory on a filesystem.
fn local_output(dir: &Path) -> (Counts, serde_json::Value) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let get = |rel: &str| bytes::Bytes::from(std::fs::read(dir.join(rel)).unwrap());
    committed_output(s(dir), names, get)
}

/// Reads a committed (word, count) Parquet output through `get`, checking that `present`
/// (everything at the output) is exactly the manifest's files and `_SUCCESS`.
fn committed_output(
    what: &str,
    present: Vec<String>,
    get: impl Fn(&str) -> bytes::Bytes,
) -> (Counts, serde_json::Value) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    let manifest: serde_json::Value = serde_json::from_slice(&get("_SUCCESS")).unwrap();
    let mut listed: Vec<String> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    listed.push("_SUCCESS".into());
    listed.sort();
    assert_eq!(
        present, listed,
        "{what} holds exactly the manifest's files and _SUCCESS"
    );
    let mut counts = Counts::new();
    for rel in listed.iter().filter(|r| r.as_str() != "_SUCCESS") {
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(get(rel))
                .unwrap()
                .build()
                .unwrap();
        for b in reader {
            let b = b.unwrap();
            let (w, c) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_primitive::<Int64Type>(),
            );
            for i in 0..b.num_rows() {
                let prev = counts.insert(w.value(i).to_string(), c.value(i) as u64);
                assert!(prev.is_none(), "{} appears twice in {what}", w.value(i));
            }
        }
    }
    (counts, manifest)
}

/// A generated corpus (`files` large texts, keys from `large_key`) plus the `small` texts,
/// as objects to upload, with their reference counts and the local large files.
fn corpus(
    tmp: &Path,
    size: &str,
    seed: u64,
    large_key: impl Fn(usize) -> String,
    small: Vec<(String, String)>,
) -> (Counts, Vec<PathBuf>, Objects) {
    let files = generate_text(BIN, tmp.join("local"), size, 3, seed);
    let mut want = Counts::new();
    let mut objects = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let data = std::fs::read(f).unwrap();
        count_text(std::str::from_utf8(&data).unwrap(), &mut want);
        objects.push((large_key(i), data));
    }
    for (key, text) in small {
        count_text(&text, &mut want);
        objects.push((key, text.into_bytes()));
    }
    (want, files, objects)
}

#[test]
fn wordcount_reads_many_small_and_some_large_objects_from_s3() {
    let server = S3Server::start();
    let store = server.bucket("corpus");
    let tmp = tempfile::tempdir().unwrap();

    // Large objects: a generated corpus. Small ones: thousands of short texts.
    let small = (0..10_000)
        .map(|i| {
            let text = format!(
                "small{} object number {i} ünïcode\nsecond line {}\n",
                i % 97,
                i % 13
            );
            (format!("data/in/small/{i:05}.txt"), text)
        })
        .collect();
    let (want, files, mut objects) = corpus(
        tmp.path(),
        "6MiB",
        17,
        |i| format!("data/in/large/part-{i}.txt"),
        small,
    );
    // Names Hadoop skips, and an object outside the input prefix.
    objects.push(("data/in/_SUCCESS".into(), b"not input".to_vec()));
    objects.push(("data/in/small/.tmp-upload".into(), b"not input".to_vec()));
    objects.push(("data/other/x.txt".into(), b"not input".to_vec()));
    put_all(&store, objects);

    let ds = server.datastores(tmp.path(), "corpus");
    let env = [
        ("SLUICE_DATASTORES", s(&ds)),
        ("LAKE_KEY", KEY),
        ("LAKE_SECRET", SECRET),
    ];
    // Parquet back to the same store: multipart uploads to the final keys, then _SUCCESS.
    let r = sluice_env(
        &[
            "run",
            "wordcount",
            "--input",
            "ds://lake/in",
            "--output",
            "ds://lake/out",
            "--format",
            "parquet",
            "--split-size",
            "1MiB",
            "--executors",
            "2",
            "--reducers",
            "5",
        ],
        &env,
    );
    assert!(r.success(), "{}", r.stderr);
    let (got, manifest) = s3_output(&store, "data/out");
    assert_counts_eq(&got, &want, "word count over S3 objects, written to S3");
    assert_eq!(manifest["files"].as_array().unwrap().len(), 5);
    assert_eq!(manifest["rows"].as_u64(), Some(want.len() as u64));
    // `run` read the committed output back from the store for its top list.
    assert!(r.stdout.contains("top 10:"), "{}", r.stdout);
    let ops = server.operations();
    let count = |op: &str| ops.iter().filter(|o| o.as_str() == op).count();
    assert_eq!(count("CompleteMultipartUpload"), 5, "{ops:?}");
    assert_eq!(
        count("CopyObject") + count("UploadPartCopy"),
        0,
        "no data object is copied"
    );
    // Small objects are combined: a handful of map tasks, not ten thousand.
    let maps: u64 = r
        .stderr
        .split(" maps,")
        .next()
        .and_then(|h| h.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no map count in: {}", r.stderr));
    assert!(
        (4..=40).contains(&maps),
        "{maps} map tasks for 6 MiB + 10,000 small objects"
    );

    // The same objects as an s3:// glob, credentials from the standard AWS variables.
    let out2 = tmp.path().join("out2");
    let r = sluice_env(
        &[
            "run",
            "wordcount",
            "--input",
            "s3://corpus/data/in/large/*.txt",
            "--output",
            s(&out2),
            "--format",
            "tsv",
            "--top",
            "0",
        ],
        &[
            ("AWS_ENDPOINT_URL", server.url.as_str()),
            ("AWS_ACCESS_KEY_ID", KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert!(r.success(), "{}", r.stderr);
    let mut large = Counts::new();
    for f in &files {
        count_text(&std::fs::read_to_string(f).unwrap(), &mut large);
    }
    assert_counts_eq(&read_tsv_counts(&out2), &large, "s3:// glob");
}

#[test]
fn bad_datastores_fail_clearly_and_write_nothing() {
    let server = S3Server::start();
    let store = server.bucket("corpus");
    put_all(&store, vec![("data/in/a.txt".into(), b"a b\n".to_vec())]);
    let tmp = tempfile::tempdir().unwrap();
    let ds = server.datastores(tmp.path(), "corpus");
    let out = tmp.path().join("out");
    let run = |input: &str, secret: &str| {
        sluice_env(
            &["run", "wordcount", "--input", input, "--output", s(&out)],
            &[
                ("SLUICE_DATASTORES", s(&ds)),
                ("LAKE_KEY", KEY),
                ("LAKE_SECRET", secret),
            ],
        )
    };
    let cases = [
        (
            "ds://nowhere/in",
            SECRET,
            vec!["datastore 'nowhere'", "known: lake"],
        ),
        (
            "ds://lake/in",
            "wrong-secret",
            vec!["datastore 'lake'", "credentials"],
        ),
        (
            "s3://no-such-bucket/in",
            SECRET,
            vec!["s3://no-such-bucket"],
        ),
        ("ds://lake/missing", SECRET, vec!["does not exist"]),
    ];
    for (input, secret, want) in cases {
        let r = run(input, secret);
        assert!(!r.success(), "{input}: should fail");
        let line = r.last_stderr_line().to_string();
        assert!(line.starts_with("error: "), "{input}: {line}");
        for w in want {
            assert!(line.contains(w), "{input}: error line lacks {w:?}: {line}");
        }
        assert!(
            !line.contains("wrong-secret"),
            "a secret was printed: {line}"
        );
        assert!(!out.exists(), "{input}: nothing may be written");
        assert_eq!(r.stderr.matches("panicked").count(), 0, "{}", r.stderr);
    }

    // The same on the output side: the job does not start, and nothing is written.
    let input = tmp.path().join("in.txt");
    std::fs::write(&input, "a b\n").unwrap();
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let no_bucket = server.datastores(&other, "no-such-bucket");
    let cases = [
        (&ds, "wrong-secret", vec!["datastore 'lake'", "credentials"]),
        (&no_bucket, SECRET, vec!["datastore 'lake'", "bucket"]),
    ];
    for (file, secret, want) in cases {
        let r = sluice_env(
            &[
                "run",
                "wordcount",
                "--input",
                s(&input),
                "--output",
                "ds://lake/out",
            ],
            &[
                ("SLUICE_DATASTORES", s(file)),
                ("LAKE_KEY", KEY),
                ("LAKE_SECRET", secret),
            ],
        );
        assert!(!r.success(), "output with {}: should fail", s(file));
        let line = r.last_stderr_line().to_string();
        assert!(line.starts_with("error: "), "{line}");
        for w in want {
            assert!(line.contains(w), "output: error line lacks {w:?}: {line}");
        }
        assert!(!line.contains("wrong-secret"), "a secret was printed");
    }
    assert!(
        keys_under(&store, "data/out").is_empty(),
        "nothing written to the bucket"
    );
    assert!(!server.operations().iter().any(|o| o.contains("Multipart")));
}

#[test]
fn executors_and_job_binary_workers_resolve_the_same_datastores() {
    let server = S3Server::start();
    let store = server.bucket("lake");
    let tmp = tempfile::tempdir().unwrap();
    let small = (0..300)
        .map(|i| {
            let text = format!("tiny {i} of three hundred\n");
            (format!("data/in/tiny/{i:03}.txt"), text)
        })
        .collect();
    let (want, _, objects) = corpus(
        tmp.path(),
        "2MiB",
        23,
        |i| format!("data/in/big-{i}.txt"),
        small,
    );
    put_all(&store, objects);
    let ds = server.datastores(tmp.path(), "lake");
    let cluster = sluice_testkit::Cluster::start_with_env(
        BIN,
        2,
        1,
        &[
            ("SLUICE_DATASTORES", s(&ds)),
            ("LAKE_KEY", KEY),
            ("LAKE_SECRET", SECRET),
        ],
    )
    .expect("cluster starts");
    // Built in (in the executors) and as a job binary (in worker processes).
    let wc = sluice_testkit::example_binary(BIN, "wordcount-typed", "sluice-example-wordcount");
    for (job, binary) in [("wordcount", None), ("wordcount-typed", Some(wc.as_path()))] {
        let out = tmp.path().join(format!("out-{job}"));
        let mut args = vec![
            "--input",
            "ds://lake/in",
            "--output",
            s(&out),
            "--format",
            "tsv",
            "--split-size",
            "256KiB",
            "--wait",
            "--json",
        ];
        if let Some(b) = binary {
            args.extend(["--binary", s(b)]);
        }
        let r = cluster.submit(job, &args);
        assert!(r.success(), "{job}: {}\n{}", r.stderr, cluster.logs());
        assert_counts_eq(&read_tsv_counts(&out), &want, job);
        let st = r.stdout_json();
        let executors: std::collections::BTreeSet<&str> = st["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["task_id"].as_str().is_some_and(|t| t.starts_with("m-")))
            .filter_map(|t| t["executor_id"].as_str())
            .collect();
        assert_eq!(
            executors.len(),
            2,
            "{job}: maps ran on both executors: {st}"
        );
    }
}

/// Starts two identical word count jobs from `input` to `output` at once, three times: each
/// time exactly one commits and the other fails saying why; `check(round)` then verifies the
/// output and removes it for the next round.
fn race_two_jobs(input: &str, output: &str, env: &[(&str, String)], mut check: impl FnMut(usize)) {
    for round in 0..3 {
        let start = || {
            Command::new(BIN)
                .args(["run", "wordcount", "--input", input, "--output", output])
                .args(["--split-size", "256KiB", "--executors", "1", "--top", "0"])
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (start(), start());
        let results: Vec<_> = [a, b]
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let won = results.iter().filter(|o| o.status.success()).count();
        let errors: Vec<String> = results
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect();
        assert_eq!(won, 1, "{output} round {round}: {errors:#?}");
        let loser = results.iter().find(|o| !o.status.success()).unwrap();
        let line = String::from_utf8_lossy(&loser.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains("another job committed it first")
                || line.contains("already holds a committed job")
                || line.contains("is being written by"),
            "{output} round {round}: {line}"
        );
        check(round);
    }
}

#[test]
fn of_two_jobs_racing_to_one_posix_output_exactly_one_commits() {
    let server = S3Server::start();
    let store = server.bucket("lake");
    let tmp = tempfile::tempdir().unwrap();
    let small = (0..200)
        .map(|i| {
            (
                format!("data/in/s/{i:03}.txt"),
                format!("race {i} w{}\n", i % 7),
            )
        })
        .collect();
    let (want, _, objects) = corpus(
        tmp.path(),
        "1MiB",
        31,
        |i| format!("data/in/big-{i}.txt"),
        small,
    );
    put_all(&store, objects);
    let ds = server.datastores(tmp.path(), "lake");
    let local = tmp.path().join("race-local");
    // Two processes at once on a POSIX output (input from S3); the S3 output race runs
    // against moto (below), whose conditional put is atomic as S3's is.
    let env = [
        ("SLUICE_DATASTORES", s(&ds).to_string()),
        ("LAKE_KEY", KEY.to_string()),
        ("LAKE_SECRET", SECRET.to_string()),
    ];
    race_two_jobs("ds://lake/in", s(&local), &env, |round| {
        let (got, _) = local_output(&local);
        assert_counts_eq(&got, &want, &format!("{} round {round}", s(&local)));
        std::fs::remove_dir_all(&local).unwrap();
    });
}

#[test]
fn of_two_jobs_racing_to_one_s3_output_exactly_one_commits() {
    // moto, not s3s-fs: s3s-fs checks If-None-Match and then writes, with the body read in
    // between, so two conditional puts that meet there can both succeed (seen), where AWS S3
    // lets exactly one through; moto serving one request at a time is atomic like S3. The
    // request log and the fixed-order commit are checked on s3s-fs by
    // `a_job_that_commits_second_to_an_s3_output_loses_cleanly`.
    let server = MotoServer::start();
    let store = server.bucket("racing");
    let tmp = tempfile::tempdir().unwrap();
    let (want, files, _) = corpus(tmp.path(), "1MiB", 37, |i| format!("big-{i}"), Vec::new());
    let input = files[0].parent().unwrap();
    let ds = server.datastores(tmp.path(), "racing");
    let env = [
        ("SLUICE_DATASTORES", s(&ds).to_string()),
        ("RACE_KEY", "moto".to_string()),
        ("RACE_SECRET", "moto".to_string()),
    ];
    race_two_jobs(s(input), "ds://race/out", &env, |round| {
        // Exactly the winner's parts and its manifest: nothing of the loser's is left.
        let (got, _) = s3_output(&store, "data/out");
        assert_counts_eq(&got, &want, &format!("s3 output round {round}"));
        for key in keys_under(&store, "data/out") {
            block(store.delete(&ObjectPath::from(format!("data/out/{key}")))).unwrap();
        }
    });
}

#[test]
fn a_job_that_commits_second_to_an_s3_output_loses_cleanly() {
    use sluice_storage::datastore::Datastores;
    use sluice_storage::{Manifest, ManifestFile, OutputCommitter};
    let server = S3Server::start();
    let store = server.bucket("lake");
    let tmp = tempfile::tempdir().unwrap();
    let ds = server.datastores(tmp.path(), "lake");
    // The datastore names the variables that hold its keys; this process reads them.
    std::env::set_var("LAKE_KEY", KEY);
    std::env::set_var("LAKE_SECRET", SECRET);
    let stores = Datastores::load(&ds).unwrap();
    let open = |job: &str| {
        OutputCommitter::open_with(&stores, "ds://lake/out")
            .unwrap()
            .with_staging(tmp.path().join(job))
    };
    let (a, b) = (open("ja"), open("jb"));
    // Both jobs start before either commits: neither sees a _SUCCESS.
    a.setup_job(false).unwrap();
    b.setup_job(false).unwrap();
    let mut manifests = Vec::new();
    for (c, job) in [(&a, "ja"), (&b, "jb")] {
        let dir = c.attempt_dir(job, "r-00000", 1);
        std::fs::create_dir_all(&dir).unwrap();
        let part = format!("part-r-00000-{job}.tsv");
        std::fs::write(dir.join(&part), format!("{job}\t1\n")).unwrap();
        let staged = c.stage_task(job, &dir).unwrap();
        // Uploaded, not yet visible.
        assert!(!keys_under(&store, "data/out").contains(&part));
        assert_eq!(
            staged.commit().unwrap(),
            vec![format!("ds://lake/out/{part}")]
        );
        manifests.push(Manifest {
            bad_records: Vec::new(),
            job_id: job.into(),
            job: "wordcount".into(),
            format: "tsv".into(),
            files: vec![ManifestFile {
                path: part,
                rows: 1,
                bytes: 5,
            }],
            rows: 1,
            bytes: 5,
        });
    }
    a.commit_job(&manifests[0]).unwrap();
    let lost = b.commit_job(&manifests[1]).unwrap_err().to_string();
    assert!(lost.contains("another job committed it first"), "{lost}");
    assert_eq!(
        keys_under(&store, "data/out"),
        vec!["_SUCCESS".to_string(), "part-r-00000-ja.tsv".to_string()],
        "the winner's part and manifest, nothing of the loser's, no upload records"
    );
    assert_eq!(a.read_manifest().unwrap(), manifests[0]);
    // An attempt that may not commit leaves nothing: its upload is aborted.
    let dir = a.attempt_dir("ja", "r-00001", 1);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("part-r-00001-ja.tsv"), "x\t1\n").unwrap();
    a.stage_task("ja", &dir).unwrap().abort();
    assert_eq!(keys_under(&store, "data/out").len(), 2);
    assert!(!dir.exists());
    let ops = server.operations();
    assert!(ops.iter().any(|o| o == "AbortMultipartUpload"), "{ops:?}");
    assert!(
        !ops.iter()
            .any(|o| o == "CopyObject" || o == "UploadPartCopy"),
        "no data object is copied: {ops:?}"
    );
}

#[test]
fn a_reduce_killed_between_upload_and_commit_leaves_no_partial_or_extra_file() {
    let server = S3Server::start();
    let store = server.bucket("lake");
    let tmp = tempfile::tempdir().unwrap();
    let small = (0..50)
        .map(|i| {
            (
                format!("data/in/s/{i:03}.txt"),
                format!("kill {i} v{}\n", i % 5),
            )
        })
        .collect();
    let (want, _, objects) = corpus(
        tmp.path(),
        "6MiB",
        41,
        |i| format!("data/in/big-{i}.txt"),
        small,
    );
    put_all(&store, objects);
    let ds = server.datastores(tmp.path(), "lake");
    let env = [
        ("SLUICE_DATASTORES", s(&ds)),
        ("LAKE_KEY", KEY),
        ("LAKE_SECRET", SECRET),
    ];
    let data_dir = server.root.path().join("data");
    for kind in ["s3", "posix"] {
        let mut landed = 0;
        for round in 0..6 {
            if landed > 0 {
                break;
            }
            // One executor, killed with -9 as soon as a reduce attempt has staged output
            // (S3: its upload is recorded and under way; POSIX: its part is being written
            // under _temporary); a fresh executor then takes the rerun.
            let mut cluster = sluice_testkit::Cluster::start_with_flags(
                BIN,
                1,
                1,
                &env,
                &["--executor-timeout", "2s"],
            )
            .expect("cluster starts");
            let (output, out_dir, marker_dir) = if kind == "s3" {
                let dir = data_dir.join(format!("lake/data/kill-{round}"));
                (
                    format!("ds://lake/kill-{round}"),
                    dir.clone(),
                    dir.join("_pending"),
                )
            } else {
                let dir = tmp.path().join(format!("kill-{round}"));
                (s(&dir).to_string(), dir.clone(), dir.join("_temporary"))
            };
            let r = cluster.submit(
                "wordcount",
                &[
                    "--input",
                    "ds://lake/in",
                    "--output",
                    &output,
                    "--reducers",
                    "3",
                    "--split-size",
                    "1MiB",
                ],
            );
            r.assert_success();
            let job_id = r.stdout.trim().to_string();
            let deadline = Instant::now() + Duration::from_secs(60);
            let staged = loop {
                let found = support::conformance::walk(&marker_dir)
                    .into_iter()
                    .map(PathBuf::from)
                    .find(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("part-r-"))
                    });
                if let Some(f) = found {
                    break f;
                }
                assert!(
                    Instant::now() < deadline,
                    "{kind}: no reduce output staged\n{}",
                    cluster.logs()
                );
                std::thread::sleep(Duration::from_millis(1));
            };
            cluster.kill_executor(0);
            std::thread::sleep(Duration::from_millis(300));
            let name = staged.file_name().unwrap().to_string_lossy().into_owned();
            let part = name.strip_suffix(".json").unwrap_or(&name).to_string();
            let before_commit = !out_dir.join(&part).exists();
            eprintln!("{kind} round {round}: killed at {name}; before its commit: {before_commit}");
            landed += usize::from(before_commit);
            cluster
                .add_executor(1, &[])
                .expect("a fresh executor starts");
            let st = cluster.wait_for_job(&job_id, Duration::from_secs(120));
            assert_eq!(st["state"], "succeeded", "{kind}: {}", st["error"]);
            let (got, manifest) = if kind == "s3" {
                s3_output(&store, &format!("data/kill-{round}"))
            } else {
                local_output(&out_dir)
            };
            assert_counts_eq(&got, &want, &format!("{kind} round {round}"));
            assert_eq!(manifest["files"].as_array().unwrap().len(), 3);
        }
        assert!(
            landed > 0,
            "{kind}: in 6 rounds no kill landed between upload and commit"
        );
    }
    // The killed attempts' multipart uploads were aborted: the server holds none open.
    let open: Vec<_> = std::fs::read_dir(&data_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload"))
        .collect();
    assert!(open.is_empty(), "uploads left open: {open:?}");
    let ops = server.operations();
    assert!(ops.iter().any(|o| o == "AbortMultipartUpload"), "{ops:?}");
    assert!(!ops
        .iter()
        .any(|o| o == "CopyObject" || o == "UploadPartCopy"));
}

/// Training with its input and its output on S3: the checkpoints, their manifests, the
/// rounds' parameters and the final model live in the bucket; a resumed run finds its last
/// checkpoint there, and the result equals the same training on local files.
#[test]
fn training_reads_and_checkpoints_on_s3_and_resumes_from_there() {
    use sluice_udf::train::{read_checkpoint, LogisticRegression, Model};
    let server = S3Server::start();
    let store = server.bucket("models");
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("data");
    let r = sluice_env(
        &[
            "generate-classification",
            s(&local),
            "--rows",
            "30000",
            "--features",
            "8",
            "--files",
            "3",
        ],
        &[],
    );
    assert!(r.success(), "{}", r.stderr);
    let objects: Objects = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                format!("data/{}", e.file_name().to_string_lossy()),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    put_all(&store, objects);
    let env = server.client_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let train = |input: &str, output: &str, epochs: &str, resume: bool| {
        let mut args = vec![
            "train",
            "--input",
            input,
            "--output",
            output,
            "--epochs",
            epochs,
            "--batch-size",
            "10000",
            "--executors",
            "1",
            "--json",
        ];
        if resume {
            args.push("--resume");
        }
        let r = sluice_env(&args, &env);
        assert!(r.success(), "{}", r.stderr);
        r
    };
    train("s3://models/data", "s3://models/run", "2", false);
    let keys = keys_under(&store, "run");
    for want in [
        "checkpoints/epoch-00002.safetensors",
        "checkpoints/epoch-00002.json",
        "model.safetensors",
        "_SUCCESS",
    ] {
        assert!(keys.iter().any(|k| k == want), "{want} not in {keys:?}");
    }
    assert!(
        !keys.iter().any(|k| k.contains("rounds/params-")),
        "round parameters left behind: {keys:?}"
    );
    let r = train("s3://models/data", "s3://models/run", "3", true);
    assert!(r.stderr.contains("resuming after epoch 2"), "{}", r.stderr);

    // The same three epochs on local files end with the same parameters.
    let out = tmp.path().join("local");
    train(s(&local), s(&out), "3", false);
    let like = LogisticRegression.init(8, 0);
    let from_s3 = block(async {
        store
            .get(&ObjectPath::from("run/model.safetensors"))
            .await?
            .bytes()
            .await
    })
    .unwrap();
    let a = read_checkpoint(&from_s3, &like).unwrap().0;
    let b = read_checkpoint(
        &std::fs::read(out.join("model.safetensors")).unwrap(),
        &like,
    )
    .unwrap()
    .0;
    assert!(a.max_abs_diff(&b) <= 1e-6, "{}", a.max_abs_diff(&b));
}
