//! `sluice train` on a cluster of executor processes: logistic regression in sync mode matches a
//! single-process run of the same steps, survives an executor killed mid-training, and resumes
//! from its checkpoints after the whole cluster is gone.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_testkit::{path_str as s, sluice, Cluster};
use sluice_udf::train::{
    generated_rows, read_checkpoint, Batch, LogisticRegression, Model, OptState, Optimizer, Params,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const ROWS: u64 = 200_000;
const FEATURES: usize = 20;
const SEED: u64 = 3;

fn train_args<'a>(
    cluster: &'a Cluster,
    data: &'a Path,
    out: &'a Path,
    epochs: &'a str,
) -> Vec<&'a str> {
    vec![
        "train",
        "--coordinator",
        cluster.url(),
        "--input",
        s(data),
        "--output",
        s(out),
        "--model",
        "logistic-regression",
        "--optimizer",
        "sgd:0.5:0.9",
        "--epochs",
        epochs,
        "--shards",
        "2",
        "--split-size",
        "1MiB",
        "--json",
    ]
}

/// `sluice generate-classification` into `data` (4 files), with an id column when `id`.
fn generate(data: &Path, rows: u64, features: usize, seed: u64, id: bool) {
    let (rows, features, seed) = (rows.to_string(), features.to_string(), seed.to_string());
    let mut args = vec![
        "generate-classification",
        s(data),
        "--rows",
        &rows,
        "--features",
        &features,
        "--files",
        "4",
        "--seed",
        &seed,
    ];
    if id {
        args.push("--id");
    }
    sluice(BIN, &args).assert_success();
}

fn final_params(out: &Path) -> Params {
    model_params(out, FEATURES)
}

/// The logistic regression of `features` features a run committed under `out`.
fn model_params(out: &Path, features: usize) -> Params {
    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    read_checkpoint(&bytes, &LogisticRegression.init(features, 0))
        .unwrap()
        .0
}

/// The same 5 full-batch steps in this process, and the accuracy they reach.
fn reference() -> (Params, f64) {
    let (x, y) = generated_rows(FEATURES, SEED, 0..ROWS);
    let batch = Batch {
        features: &x,
        labels: &y,
        dim: FEATURES,
    };
    let model = LogisticRegression;
    let opt = Optimizer::Sgd {
        lr: 0.5,
        momentum: 0.9,
    };
    let mut p = model.init(FEATURES, 1);
    let mut st = OptState::new(&p);
    for _ in 0..5 {
        let (mut g, m) = model.gradient(&batch, &p);
        for t in &mut g.0 {
            t.data.iter_mut().for_each(|v| *v /= m.rows as f32);
        }
        opt.apply(&mut p, &g, &mut st, 1.0);
    }
    let m = model.gradient(&batch, &p).1;
    (p, m.correct as f64 / m.rows as f64)
}

fn accuracy(p: &Params) -> f64 {
    let (x, y) = generated_rows(FEATURES, SEED, 0..ROWS);
    let m = LogisticRegression
        .gradient(
            &Batch {
                features: &x,
                labels: &y,
                dim: FEATURES,
            },
            p,
        )
        .1;
    m.correct as f64 / m.rows as f64
}

#[test]
fn logistic_regression_matches_one_process_survives_a_kill_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, ROWS, FEATURES, SEED, false);
    let mut cluster =
        Cluster::start_with_flags(BIN, 2, 1, &[], &["--executor-timeout", "2s"]).unwrap();

    // Five epochs on two executor processes, against the same steps in one process.
    let out = tmp.path().join("straight");
    let r = cluster.sluice(&train_args(&cluster, &data, &out, "5"));
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let report = r.stdout_json();
    assert_eq!(report["epochs"].as_array().unwrap().len(), 5, "{report}");
    let got = final_params(&out);
    let (want, want_acc) = reference();
    let diff = got.max_abs_diff(&want);
    assert!(diff <= 1e-4, "parameters differ from one process by {diff}");
    let acc = accuracy(&got);
    assert!(acc >= 0.95, "accuracy {acc} (one process: {want_acc})");
    for e in 1..=5 {
        let ck = out.join(format!("checkpoints/epoch-{e:05}.json"));
        let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&ck).unwrap()).unwrap();
        assert_eq!(m["epoch"], e, "{m}");
        assert_eq!(m["samples"], ROWS, "every row once per epoch: {m}");
        // The first epoch reads the data; the others find every split cached where it runs.
        let read = m["datastore_bytes_read"].as_u64().unwrap();
        if e == 1 {
            assert!(read > 0, "{m}");
        } else {
            assert_eq!(read, 0, "epoch {e} read from the datastore: {m}");
            assert!(m["cache_hits"].as_u64().unwrap() > 1, "{m}");
        }
    }

    // An executor killed with SIGKILL during epoch 3 (a fresh one started): the same result.
    let out_kill = tmp.path().join("killed");
    let mut child = start_until(
        &train_args(&cluster, &data, &out_kill, "5"),
        &out_kill.join("checkpoints/epoch-00002.safetensors"),
        60,
        "epoch 2 never finished",
    );
    cluster.kill_executor(0);
    cluster.add_executor(1, &[]).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}\n{}", cluster.logs());
    let killed = final_params(&out_kill);
    assert!(
        killed.max_abs_diff(&got) <= 1e-6,
        "with a kill the parameters differ by {}",
        killed.max_abs_diff(&got)
    );

    // The whole cluster gone after epoch 2's checkpoint; a new one resumes at epoch 3.
    let out_resume = tmp.path().join("resumed");
    let r = cluster.sluice(&train_args(&cluster, &data, &out_resume, "2"));
    assert!(r.success(), "{}", r.stderr);
    drop(cluster);
    let cluster = Cluster::start(BIN, 2, 1).unwrap();
    let mut args = train_args(&cluster, &data, &out_resume, "5");
    args.push("--resume");
    let r = cluster.sluice(&args);
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    assert!(r.stderr.contains("resuming after epoch 2"), "{}", r.stderr);
    let report = r.stdout_json();
    let epochs: Vec<u64> = report["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs, [3, 4, 5], "continues at epoch 3");
    let resumed = final_params(&out_resume);
    assert!(
        resumed.max_abs_diff(&got) <= 1e-6,
        "resumed parameters differ by {}",
        resumed.max_abs_diff(&got)
    );
}

/// `sluice train` with mini-batches of `batch` rows and a ledger.
fn minibatch_args<'a>(
    cluster: &'a Cluster,
    data: &'a Path,
    out: &'a Path,
    ledger: &'a Path,
) -> Vec<&'a str> {
    vec![
        "train",
        "--coordinator",
        cluster.url(),
        "--input",
        s(data),
        "--output",
        s(out),
        "--epochs",
        "3",
        "--batch-size",
        "20000",
        "--id-column",
        "id",
        "--ledger",
        s(ledger),
        "--optimizer",
        "adam:0.05",
        "--lr-schedule",
        "step:2:0.5",
        "--split-size",
        "256KiB",
        "--checkpoint-steps",
        "1",
        "--shuffle-seed",
        "9",
    ]
}

/// Starts `sluice ARGS` (stdout and stderr piped) and returns it, still running, once `file`
/// exists; fails the test with `never` if that takes more than `secs` seconds.
fn start_until<S: AsRef<std::ffi::OsStr>>(
    args: &[S],
    file: &Path,
    secs: u64,
    never: &str,
) -> std::process::Child {
    let child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !file.exists() {
        assert!(Instant::now() < deadline, "{never}");
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

/// The sample ids the maps of `job` recorded in `ledger`, sorted.
fn ledger_ids(ledger: &Path, job: &str) -> Vec<u64> {
    let mut used = Vec::new();
    let mut files = 0;
    for e in std::fs::read_dir(ledger).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(job) && name.ends_with(".txt") {
            files += 1;
            let text = std::fs::read_to_string(e.path()).unwrap();
            used.extend(
                text.lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| l.parse::<u64>().unwrap()),
            );
        }
    }
    assert!(files > 0, "no ledger of {job}");
    used.sort_unstable();
    used
}

#[test]
fn a_run_killed_mid_epoch_resumes_from_its_step_checkpoint_using_each_sample_once() {
    const N: u64 = 100_000;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, N, 10, 5, true);
    let cluster = Cluster::start(BIN, 2, 1).unwrap();
    // The uninterrupted run: 3 epochs of 5 steps.
    let straight = tmp.path().join("straight");
    let r = cluster.sluice(&minibatch_args(
        &cluster,
        &data,
        &straight,
        &tmp.path().join("ledger-straight"),
    ));
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(straight.join("checkpoints/epoch-00001.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (m["steps"].as_u64(), m["samples"].as_u64()),
        (Some(5), Some(N)),
        "{m}"
    );
    // Each epoch shuffles: the first steps of epochs 1 and 2 take different samples.
    let first_job = |epoch: u32| -> String {
        let m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(straight.join(format!("checkpoints/epoch-{epoch:05}.json"))).unwrap(),
        )
        .unwrap();
        m["job_ids"][0].as_str().unwrap().to_string()
    };
    let ledger_straight = tmp.path().join("ledger-straight");
    let (e1, e2) = (
        ledger_ids(&ledger_straight, &first_job(1)),
        ledger_ids(&ledger_straight, &first_job(2)),
    );
    assert_eq!((e1.len(), e2.len()), (20_000, 20_000));
    assert_ne!(e1, e2, "epochs 1 and 2 began with the same samples");

    // Killed (the driver and the whole cluster) at 40% of epoch 2, then resumed.
    let out = tmp.path().join("killed");
    let ledger = tmp.path().join("ledger");
    let mut child = start_until(
        &minibatch_args(&cluster, &data, &out, &ledger),
        &out.join("checkpoints/epoch-00002-step-00002.safetensors"),
        120,
        "epoch 2 never reached step 2",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    drop(cluster);
    let cluster = Cluster::start(BIN, 2, 1).unwrap();
    let mut args = minibatch_args(&cluster, &data, &out, &ledger);
    args.push("--resume");
    let r = cluster.sluice(&args);
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    assert!(r.stderr.contains("resuming after step"), "{}", r.stderr);

    // The ledger of epoch 2: the jobs whose results the checkpoints hold, one per step.
    let manifest = |name: String| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join("checkpoints").join(name)).unwrap()).unwrap()
    };
    let mut jobs: Vec<String> = (1..5)
        .map(|k| {
            manifest(format!("epoch-00002-step-{k:05}.json"))["job_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let end = manifest("epoch-00002.json".into());
    jobs.push(
        end["job_ids"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_str()
            .unwrap()
            .into(),
    );
    let mut used: Vec<u64> = Vec::new();
    for job in &jobs {
        used.extend(ledger_ids(&ledger, job));
    }
    used.sort_unstable();
    let want: Vec<u64> = (0..N).collect();
    assert_eq!(used.len() as u64, N, "samples used in epoch 2");
    assert!(used == want, "every sample of epoch 2 used exactly once");
    // And the same parameters as the run that was never killed.
    let diff = model_params(&out, 10).max_abs_diff(&model_params(&straight, 10));
    assert!(
        diff <= 1e-6,
        "resumed mid-epoch, the parameters differ by {diff}"
    );
}

#[test]
fn local_mode_averages_parameters_and_learns() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, 100_000, FEATURES, SEED, false);
    let cluster = Cluster::start(BIN, 2, 1).unwrap();
    let run = |name: &str| {
        let out = tmp.path().join(name);
        let r = cluster.sluice(&[
            "train",
            "--coordinator",
            cluster.url(),
            "--input",
            s(&data),
            "--output",
            s(&out),
            "--mode",
            "local:4",
            "--optimizer",
            "sgd:0.5:0",
            "--epochs",
            "2",
            "--split-size",
            "512KiB",
        ]);
        assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
        final_params(&out)
    };
    let a = run("local-a");
    assert!(accuracy(&a) >= 0.95, "local mode reached {}", accuracy(&a));
    // Deterministic: the same run gives the same parameters.
    assert_eq!(a.max_abs_diff(&run("local-b")), 0.0);
}

#[test]
fn a_model_from_a_job_binary_trains_in_one_worker_per_executor_across_rounds() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, 100_000, FEATURES, SEED, false);
    let svm = sluice_testkit::example_binary(BIN, "train-svm", "sluice-example-train-svm");
    let cluster = Cluster::start(BIN, 2, 1).unwrap();
    let out = tmp.path().join("svm");
    let r = sluice_testkit::sluice(
        &svm,
        &[
            "train",
            "--coordinator",
            cluster.url(),
            "--input",
            s(&data),
            "--output",
            s(&out),
            "--model",
            "linear-svm",
            "--optimizer",
            "sgd:0.2:0.9",
            "--epochs",
            "4",
            "--split-size",
            "512KiB",
            "--json",
        ],
    );
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let epochs = r.stdout_json()["epochs"].as_array().unwrap().clone();
    assert_eq!(epochs.len(), 4);
    let last = &epochs[3];
    assert!(last["accuracy"].as_f64().unwrap() >= 0.9, "{last}");
    // The rounds ran in one long-lived worker per executor: its cache served epochs 2..4.
    assert!(epochs[0]["datastore_bytes_read"].as_i64().unwrap() > 0);
    for e in &epochs[1..] {
        assert_eq!(e["datastore_bytes_read"], 0, "{e}");
    }
    let started = cluster.logs().matches("worker started").count();
    assert_eq!(
        started,
        2,
        "one worker per executor for all rounds:\n{}",
        cluster.logs()
    );

    // The built-in sluice does not know the binary's model, and says which it knows.
    let r = cluster.sluice(&[
        "train",
        "--coordinator",
        cluster.url(),
        "--input",
        s(&data),
        "--output",
        s(&tmp.path().join("unknown")),
        "--model",
        "linear-svm",
    ]);
    assert!(!r.success());
    assert!(
        r.stderr.contains("logistic-regression and mlp:HIDDEN"),
        "{}",
        r.stderr
    );
}

#[test]
fn training_rides_out_a_coordinator_restart_and_status_keeps_its_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, 100_000, 10, 7, false);
    let mut cluster =
        Cluster::start_with_flags(BIN, 2, 1, &[], &["--executor-timeout", "5s"]).unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--coordinator",
            cluster.url(),
            "--input",
            s(&data),
            "--output",
            s(out),
            "--epochs",
            "4",
            "--batch-size",
            "25000",
            "--optimizer",
            "adam:0.05",
            "--split-size",
            "512KiB",
            "--json",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let straight = tmp.path().join("straight");
    let r = cluster.sluice(&args(&straight));
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());

    // The coordinator is killed -9 once epoch 2's checkpoint lands (during epoch 3's rounds)
    // and restarted on its state directory; the driver waits for it and carries on.
    let out = tmp.path().join("restarted");
    let child = start_until(
        &args(&out),
        &out.join("checkpoints/epoch-00002.safetensors"),
        120,
        "epoch 2 never finished",
    );
    cluster.kill_coordinator();
    std::thread::sleep(Duration::from_millis(700));
    cluster.restart_coordinator().unwrap();
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{stderr}\n{}", cluster.logs());
    assert!(stderr.contains("lost the coordinator"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&done.stdout).unwrap();
    let diff = model_params(&out, 10).max_abs_diff(&model_params(&straight, 10));
    assert!(
        diff <= 1e-6,
        "after the restart the parameters differ by {diff}"
    );

    // The last round's job status holds the run's finished epochs.
    let last_job = report["epochs"][3]["job_ids"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let st = cluster.sluice(&[
        "status",
        &last_job,
        "--coordinator",
        cluster.url(),
        "--json",
    ]);
    assert!(st.success(), "{}", st.stderr);
    let train = &st.stdout_json()["train"];
    assert_eq!(
        (train["epoch"].as_u64(), train["step"].as_u64()),
        (Some(4), Some(3)),
        "{train}"
    );
    let epochs = train["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3, "{train}");
    for (i, e) in epochs.iter().enumerate() {
        assert_eq!(e["epoch"].as_u64(), Some(i as u64 + 1), "{e}");
        assert_eq!(e["samples"].as_u64(), Some(100_000), "{e}");
        assert!(e["accuracy"].as_f64().unwrap() > 0.5, "{e}");
        assert!(e["samples_per_s"].as_f64().unwrap() > 0.0, "{e}");
    }
    assert!(
        train["round"]["accuracy"].as_f64().unwrap() > 0.8,
        "{train}"
    );
}

#[test]
fn splits_pushed_out_of_the_memory_cache_are_served_from_local_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&data, 50_000, 10, 11, false);
    let run = |name: &str, disk: &str| -> Vec<serde_json::Value> {
        let r = sluice(
            BIN,
            &[
                "train",
                "--input",
                s(&data),
                "--output",
                s(&tmp.path().join(name)),
                "--epochs",
                "3",
                "--split-size",
                "256KiB",
                "--executors",
                "1",
                "--cache-memory",
                "64KiB",
                "--cache-disk",
                disk,
                "--json",
            ],
        );
        assert!(r.success(), "{}", r.stderr);
        r.stdout_json()["epochs"].as_array().unwrap().clone()
    };
    // Every split is larger than the memory budget: all go to disk, and come back from it.
    let epochs = run("disk", "1GiB");
    assert!(epochs[0]["datastore_bytes_read"].as_i64().unwrap() > 0);
    for e in &epochs[1..] {
        assert_eq!(e["datastore_bytes_read"], 0, "{e}");
        assert!(e["cache_disk_hits"].as_i64().unwrap() > 0, "{e}");
    }
    // Without disk, every epoch reads the datastore again.
    let epochs = run("no-disk", "0");
    for e in &epochs {
        assert!(e["datastore_bytes_read"].as_i64().unwrap() > 0, "{e}");
        assert_eq!(e["cache_disk_hits"], 0, "{e}");
    }
}

#[test]
fn training_reads_csv_and_json_lines_too() {
    const N: u64 = 20_000;
    let tmp = tempfile::tempdir().unwrap();
    let (csv, jsonl) = (tmp.path().join("csv"), tmp.path().join("jsonl"));
    std::fs::create_dir_all(&csv).unwrap();
    std::fs::create_dir_all(&jsonl).unwrap();
    for part in 0..2u64 {
        let (x, y) = generated_rows(6, 4, part * N / 2..(part + 1) * N / 2);
        let mut c = String::from("f0,f1,f2,f3,f4,f5,label\n");
        let mut j = String::new();
        for (row, label) in x.chunks(6).zip(&y) {
            let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            c.push_str(&format!("{},{}\n", cells.join(","), *label as u8));
            let fields: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(i, v)| format!("\"f{i}\":{v}"))
                .collect();
            j.push_str(&format!(
                "{{{},\"label\":{}}}\n",
                fields.join(","),
                *label as u8
            ));
        }
        std::fs::write(csv.join(format!("part-{part}.csv")), c).unwrap();
        std::fs::write(jsonl.join(format!("part-{part}.jsonl")), j).unwrap();
    }
    for (dir, format) in [(&csv, "csv"), (&jsonl, "jsonl")] {
        let r = sluice(
            BIN,
            &[
                "train",
                "--input",
                s(dir),
                "--input-format",
                format,
                "--output",
                s(&tmp.path().join(format!("out-{format}"))),
                "--epochs",
                "3",
                "--batch-size",
                "5000",
                "--executors",
                "1",
                "--json",
            ],
        );
        assert!(r.success(), "{format}: {}", r.stderr);
        let epochs = r.stdout_json()["epochs"].as_array().unwrap().clone();
        for e in &epochs {
            assert_eq!(e["samples"].as_u64(), Some(N), "{format}: {e}");
            assert_eq!(e["steps"].as_u64(), Some(4), "{format}: {e}");
        }
        assert!(
            epochs[2]["accuracy"].as_f64().unwrap() >= 0.9,
            "{format}: {}",
            epochs[2]
        );
    }
    // A missing value is refused, naming the column.
    std::fs::write(
        csv.join("part-2.csv"),
        "f0,f1,f2,f3,f4,f5,label\n1,2,,4,5,6,1\n",
    )
    .unwrap();
    let r = sluice(
        BIN,
        &[
            "train",
            "--input",
            s(&csv),
            "--input-format",
            "csv",
            "--output",
            s(&tmp.path().join("out-bad")),
            "--executors",
            "1",
        ],
    );
    assert!(!r.success());
    assert!(
        r.stderr.contains("'f2' has no value") && r.stderr.contains("part-2.csv"),
        "{}",
        r.stderr
    );
}
