//! A coordinator killed with SIGKILL and restarted on the same `--state-dir` resumes its jobs
//! from its redb store: executors register again with the map outputs they hold, completed maps
//! are not re-run, and a client waiting with `submit --wait` keeps waiting across the restart.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_testkit::{
    assert_manifest_exact, generate_sort_records, path_str as s, sluice, Cluster,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

#[test]
fn a_coordinator_killed_mid_reduce_resumes_without_rerunning_maps() {
    let tmp = tempfile::tempdir().unwrap();
    let records = tmp.path().join("records");
    generate_sort_records(&records, 300_000, 6, 41, 0);
    let out = tmp.path().join("out");
    let mut cluster =
        Cluster::start_with_flags(BIN, 2, 1, &[], &["--executor-timeout", "5s"]).unwrap();
    // A client that waits for the job across the restart.
    let mut waiter = Command::new(BIN)
        .args([
            "submit",
            "sort",
            "--coordinator",
            cluster.url(),
            "--input",
            s(&records),
            "--output",
            s(&out),
            "--split-size",
            "1MiB",
            "--reducers",
            "8",
            "--format",
            "text",
            "--wait",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Its job, once listed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let job_id = loop {
        let r = cluster.sluice(&["jobs", "--coordinator", cluster.url(), "--json"]);
        if let Some(id) = r.success().then(|| r.stdout_json()).and_then(|v| {
            v.as_array()
                .and_then(|a| a.first())
                .and_then(|j| j["job_id"].as_str().map(str::to_string))
        }) {
            break id;
        }
        assert!(Instant::now() < deadline, "the job was not submitted");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Kill the coordinator once every map is done and the reduces are under way.
    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let st = cluster.status(&job_id);
        let maps = st["maps_total"].as_u64().unwrap();
        let reducing = st["maps_done"].as_u64() == Some(maps)
            && st["tasks"].as_array().unwrap().iter().any(|t| {
                t["task_id"].as_str().unwrap().starts_with("r-") && t["state"] == "running"
            });
        if reducing {
            assert!(st["reduces_done"].as_u64().unwrap() < 8, "{st}");
            break st;
        }
        assert_eq!(
            st["state"], "running",
            "the job ended before the reduce phase: {st}"
        );
        assert!(Instant::now() < deadline, "no reduce phase: {st}");
        std::thread::sleep(Duration::from_millis(5));
    };
    cluster.kill_coordinator();
    std::thread::sleep(Duration::from_millis(500));
    cluster
        .restart_coordinator()
        .expect("the coordinator restarts");
    // `sluice status` answers from the restored state at once.
    let st = cluster.status(&job_id);
    assert_eq!(st["job_id"], job_id.as_str(), "{st}");
    assert_eq!(st["maps_done"], before["maps_done"], "{st}");

    let status = waiter.wait().unwrap();
    let mut stdout = String::new();
    waiter
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut stderr = String::new();
    waiter
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success(),
        "the waiting client failed: {stderr}\n{}",
        cluster.logs()
    );
    assert!(stderr.contains("reconnecting"), "{stderr}");
    let st: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(st["state"], "succeeded", "{st}");

    let v = sluice(
        BIN,
        &[
            "run",
            "sort-validate",
            "--input",
            s(&records),
            "--output",
            s(&out),
        ],
    );
    assert!(v.success(), "sort output invalid: {}", v.stderr);
    assert_manifest_exact(&out, "after the restart");
    // The job's task history: every map ran once, before the restart.
    let st = cluster.status(&job_id);
    for t in st["tasks"].as_array().unwrap() {
        let id = t["task_id"].as_str().unwrap();
        let history = t["history"].as_array().unwrap();
        if id.starts_with("m-") {
            assert_eq!(history.len(), 1, "map {id} was re-run: {t}");
            assert_eq!(history[0]["outcome"], "succeeded", "{t}");
        }
    }
    // At least one reduce was running when the coordinator died, and ran again after.
    let rerun = st["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["task_id"].as_str().unwrap().starts_with("r-"))
        .filter(|t| {
            t["history"].as_array().unwrap().iter().any(|a| {
                a["error"]
                    .as_str()
                    .unwrap()
                    .contains("coordinator restarted")
            })
        })
        .count();
    assert!(rerun >= 1, "{st}");
}
