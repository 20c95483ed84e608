//! GPU scheduling on a cluster of executor processes: a job whose map tasks ask for a GPU runs
//! them only on the executor that offers GPUs, never two at once on one GPU, each in a worker
//! whose `CUDA_VISIBLE_DEVICES` names its GPU; a job asking for more GPUs than any executor
//! has is refused at submit. This machine has no GPU: the GPU executor offers two with
//! `--gpus 2` (the scheduling does not touch them; the probe job only reports what it got).

use std::collections::BTreeMap;

use sluice_testkit::{example_binary, Cluster};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// One map task's probe: task, CUDA_VISIBLE_DEVICES, context GPUs, start and end (ms).
#[derive(Debug)]
struct Probe {
    task: String,
    visible: String,
    gpus: String,
    start: u128,
    end: u128,
}

fn probes(out: &std::path::Path) -> Vec<Probe> {
    let mut all = Vec::new();
    for line in sluice_testkit::sorted_part_lines(out) {
        let probe = line.split('\t').next().unwrap();
        let f: Vec<&str> = probe.split(' ').collect();
        assert_eq!(f.len(), 5, "{line}");
        all.push(Probe {
            task: f[0].into(),
            visible: f[1].into(),
            gpus: f[2].into(),
            start: f[3].parse().unwrap(),
            end: f[4].parse().unwrap(),
        });
    }
    all
}

#[test]
fn gpu_tasks_run_one_per_gpu_on_the_executor_that_has_them() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for i in 0..8 {
        std::fs::write(input.join(format!("f{i}.txt")), "line\n".repeat(4000)).unwrap();
    }
    let faulty = example_binary(BIN, "faulty", "sluice-example-faulty");
    let mut cluster = Cluster::start(BIN, 0, 1).unwrap();
    cluster.add_executor(3, &["--gpus", "0"]).unwrap();
    cluster.add_executor(3, &["--gpus", "2"]).unwrap();
    let gpu_executor = cluster.executor_ids()[1].clone();

    let out = tmp.path().join("out");
    let r = cluster.submit_binary(
        "gpu-probe",
        &faulty,
        &input,
        &out,
        &[
            "--param",
            "sluice.task.gpus=1",
            "--split-size",
            "20000",
            "--format",
            "tsv",
            "--wait",
            "--json",
        ],
    );
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let st = r.stdout_json();
    let maps: Vec<&serde_json::Value> = st["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["task_id"].as_str().unwrap().starts_with("m-"))
        .collect();
    assert_eq!(maps.len(), 8, "{st}");
    for t in &maps {
        for a in t["history"].as_array().unwrap() {
            assert_eq!(a["executor_id"], gpu_executor.as_str(), "{t}");
        }
    }
    let got = probes(&out);
    assert_eq!(got.len(), 8, "{got:?}");
    let tasks: std::collections::BTreeSet<&str> = got.iter().map(|p| p.task.as_str()).collect();
    assert_eq!(tasks.len(), 8, "one probe per map task: {got:?}");
    let mut by_gpu: BTreeMap<&str, Vec<(u128, u128)>> = BTreeMap::new();
    for p in &got {
        assert!(p.visible == "0" || p.visible == "1", "{p:?}");
        assert_eq!(
            p.gpus, "[0]",
            "the worker sees its one GPU as device 0: {p:?}"
        );
        by_gpu.entry(&p.visible).or_default().push((p.start, p.end));
    }
    for (gpu, mut runs) in by_gpu {
        runs.sort_unstable();
        for w in runs.windows(2) {
            assert!(w[0].1 <= w[1].0, "two tasks on GPU {gpu} at once: {w:?}");
        }
    }
    // With 3 slots but 2 GPUs, never more than 2 ran at once.
    for p in &got {
        let at_once = got
            .iter()
            .filter(|q| q.start <= p.start && p.start < q.end)
            .count();
        assert!(
            at_once <= 2,
            "{at_once} tasks at once at {}: {got:?}",
            p.start
        );
    }

    // Without the parameter the tasks hold no GPU and their workers see none named.
    let plain = tmp.path().join("plain");
    let r = cluster.submit_binary(
        "gpu-probe",
        &faulty,
        &input,
        &plain,
        &["--split-size", "20000", "--format", "tsv", "--wait"],
    );
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    for p in probes(&plain) {
        assert_eq!(
            (p.visible.as_str(), p.gpus.as_str()),
            ("unset", "[]"),
            "{p:?}"
        );
    }

    // Asking more GPUs per task than any executor has is refused, saying what to do.
    let r = cluster.submit_binary(
        "gpu-probe",
        &faulty,
        &input,
        &tmp.path().join("too-many"),
        &["--param", "sluice.task.gpus=3", "--wait"],
    );
    assert!(!r.success());
    let err = r.last_stderr_line();
    assert!(
        err.contains("3 GPU(s)") && err.contains("at most 2") && err.contains("--gpus"),
        "{err}"
    );
}
