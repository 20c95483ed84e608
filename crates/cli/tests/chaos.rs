//! Faults injected from outside, through the testkit: executors killed with SIGKILL at random
//! moments (and replaced), shuffle files deleted under a running job. Every job must still
//! finish with exactly the reference output and a `_SUCCESS` manifest that lists each part file
//! once. `CHAOS_ITERATIONS` (default 3) and `CHAOS_SEED` (default: the clock, printed) drive the
//! loop; `benches/chaos.sh` runs it 20 times.

use std::path::Path;
use std::time::{Duration, Instant};

use sluice_testkit::{
    assert_counts_eq, assert_manifest_exact, generate_sort_records, generate_text, path_str as s,
    read_tsv_counts, reference_counts, sluice, Cluster, SplitMix,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// The tests of this file run one at a time: each starts its own cluster, and the straggler
/// test compares times, which two clusters sharing the cores would distort.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn task<'a>(st: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    st["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["task_id"] == id))
        .unwrap_or_else(|| panic!("no task {id} in {st}"))
}

/// Waits until `done(status)` holds, failing after `secs` or if the job ends first.
fn wait_until(
    cluster: &Cluster,
    job_id: &str,
    secs: u64,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let st = cluster.status(job_id);
        if done(&st) {
            return st;
        }
        assert_eq!(st["state"], "running", "job ended before {what}: {st}");
        assert!(Instant::now() < deadline, "no {what} in {secs} s: {st}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_deleted_map_output_reruns_exactly_that_map() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let out = tmp.path().join("out");
    let files = generate_text(BIN, &corpus, "16MiB", 2, 17);
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let r = cluster.submit(
        "wordcount",
        &[
            "--input",
            s(&corpus),
            "--output",
            s(&out),
            "--split-size",
            "256KiB",
            "--reducers",
            "2",
            "--format",
            "tsv",
        ],
    );
    r.assert_success();
    let job_id = r.stdout.trim().to_string();
    let st = wait_until(&cluster, &job_id, 60, "m-00000 done", |st| {
        task(st, "m-00000")["state"] == "succeeded"
    });
    let maps = st["maps_total"].as_u64().unwrap();
    assert!(maps >= 64, "{st}");
    assert!(
        st["maps_done"].as_u64().unwrap() < maps,
        "the reduces must start after the deletion: {st}"
    );
    let dropped = cluster.drop_map_output(&job_id, 0);
    assert_eq!(dropped, 2, "the data file and the index of m-00000");
    let st = cluster.wait_for_job(&job_id, Duration::from_secs(120));
    assert_eq!(
        st["state"],
        "succeeded",
        "{}\n{}",
        st["error"],
        cluster.logs()
    );
    assert_counts_eq(
        &read_tsv_counts(&out),
        &reference_counts(&files),
        "after a lost output",
    );
    assert_manifest_exact(&out, "after a lost output");
    // m-00000 ran again; no other map did; a reduce reported the lost output.
    for t in st["tasks"].as_array().unwrap() {
        let id = t["task_id"].as_str().unwrap();
        let history = t["history"].as_array().unwrap();
        if id == "m-00000" {
            assert_eq!(history.len(), 2, "m-00000 recomputed once: {t}");
        } else if id.starts_with("m-") {
            assert_eq!(history.len(), 1, "{id} ran once: {t}");
        }
    }
    let lost: Vec<&serde_json::Value> = st["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["task_id"].as_str().unwrap().starts_with("r-"))
        .flat_map(|t| t["history"].as_array().unwrap())
        .filter(|a| a["outcome"] == "lost_output")
        .collect();
    assert!(
        !lost.is_empty(),
        "a reduce attempt reported the lost output: {st}"
    );
    assert!(
        lost.iter().all(|a| {
            let e = a["error"].as_str().unwrap();
            e.contains("[0]") && e.contains("m-00000 attempt 1 on exec-")
        }),
        "{lost:?}"
    );
}

/// One job submitted, one executor killed with SIGKILL after `delay` and a fresh one started;
/// returns the final status.
fn run_with_a_kill(
    cluster: &mut Cluster,
    rng: &mut SplitMix,
    job: &str,
    args: &[&str],
    max_delay_ms: u64,
    context: &str,
) -> serde_json::Value {
    let r = cluster.submit(job, args);
    assert!(r.success(), "{context}: {}", r.stderr);
    let job_id = r.stdout.trim().to_string();
    std::thread::sleep(Duration::from_millis(rng.below(max_delay_ms)));
    let live: Vec<usize> = (0..cluster.executor_ids().len())
        .filter(|&i| cluster.executor_running(i))
        .collect();
    let victim = live[rng.below(live.len() as u64) as usize];
    let before = cluster.status(&job_id);
    eprintln!(
        "{context}: killing executor {} with the job {} ({} of {} maps, {} of {} reduces)",
        cluster.executor_ids()[victim],
        before["state"],
        before["maps_done"],
        before["maps_total"],
        before["reduces_done"],
        before["reduces_total"]
    );
    cluster.kill_executor(victim);
    cluster
        .add_executor(1, &[])
        .expect("a fresh executor starts");
    let st = cluster.wait_for_job(&job_id, Duration::from_secs(180));
    assert_eq!(
        st["state"],
        "succeeded",
        "{context}: {}\n{}",
        st["error"],
        cluster.logs()
    );
    st
}

#[test]
fn wordcount_and_sort_are_exact_with_executors_killed_at_random_moments() {
    let _serial = one_at_a_time();
    let iterations: u64 = std::env::var("CHAOS_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("chaos: {iterations} iterations, CHAOS_SEED={seed}");
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let text_files = generate_text(BIN, &corpus, "8MiB", 4, 23);
    let want_counts = reference_counts(&text_files);
    let records = tmp.path().join("records");
    generate_sort_records(&records, 160_000, 4, 29, 0);
    let mut cluster =
        Cluster::start_with_flags(BIN, 3, 1, &[], &["--executor-timeout", "2s"]).unwrap();
    let mut rng = SplitMix(seed);
    let wc_args = |out: &Path| {
        let out = s(out).to_string();
        [
            "--input",
            s(&corpus),
            "--output",
            &out,
            "--split-size",
            "128KiB",
            "--reducers",
            "3",
            "--format",
            "tsv",
        ]
        .map(str::to_string)
    };
    let sort_args = |out: &Path| {
        let out = s(out).to_string();
        [
            "--input",
            s(&records),
            "--output",
            &out,
            "--split-size",
            "240KiB",
            "--reducers",
            "3",
            "--format",
            "text",
        ]
        .map(str::to_string)
    };
    // A clean run of each sets the window the kills fall in (the job's whole length).
    let clean_ms = |job: &str, args: &[String]| {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend(["--wait", "--json"]);
        let r = cluster.submit(job, &all);
        assert!(r.success(), "clean {job}: {}", r.stderr);
        (r.stdout_json()["elapsed_s"].as_f64().unwrap() * 1000.0) as u64
    };
    let wc_ms = clean_ms("wordcount", &wc_args(&tmp.path().join("wc-clean")));
    let sort_ms = clean_ms("sort", &sort_args(&tmp.path().join("sort-clean")));
    eprintln!("chaos: clean runs took {wc_ms} ms (wordcount) and {sort_ms} ms (sort)");
    for i in 0..iterations {
        let context = format!("iteration {i} (CHAOS_SEED={seed})");
        let out = tmp.path().join(format!("wc-{i}"));
        let args = wc_args(&out);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let st = run_with_a_kill(
            &mut cluster,
            &mut rng,
            "wordcount",
            &args,
            wc_ms * 3 / 4,
            &format!("{context}, wordcount"),
        );
        assert!(st["maps_total"].as_u64().unwrap() >= 64, "{st}");
        assert_counts_eq(&read_tsv_counts(&out), &want_counts, &context);
        assert_manifest_exact(&out, &context);

        let out = tmp.path().join(format!("sort-{i}"));
        let args = sort_args(&out);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let st = run_with_a_kill(
            &mut cluster,
            &mut rng,
            "sort",
            &args,
            sort_ms * 3 / 4,
            &format!("{context}, sort"),
        );
        assert!(st["maps_total"].as_u64().unwrap() >= 64, "{st}");
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
        assert!(v.success(), "{context}: sort output invalid: {}", v.stderr);
        assert_manifest_exact(&out, &context);
    }
}

#[test]
fn a_stopped_executor_is_outrun_by_speculation() {
    let _serial = one_at_a_time();
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let files = generate_text(BIN, &corpus, "96MiB", 12, 31);
    let want = reference_counts(&files);
    // The default executor timeout (15 s) outlasts the job: only speculation can finish it.
    let cluster = Cluster::start(BIN, 3, 1).expect("cluster starts");
    let args = |out: &Path| {
        let out = s(out).to_string();
        [
            "--input",
            s(&corpus),
            "--output",
            &out,
            "--split-size",
            "8MiB",
            "--reducers",
            "3",
        ]
        .into_iter()
        .chain(["--format", "tsv"])
        .map(str::to_string)
        .collect::<Vec<String>>()
    };
    // The clean time: the median of three runs on the same cluster.
    let mut clean: Vec<f64> = (0..3)
        .map(|i| {
            let mut a: Vec<String> = args(&tmp.path().join(format!("clean-{i}")));
            a.extend(["--wait".into(), "--json".into()]);
            let r = cluster.submit(
                "wordcount",
                &a.iter().map(String::as_str).collect::<Vec<_>>(),
            );
            assert!(r.success(), "{}", r.stderr);
            r.stdout_json()["elapsed_s"].as_f64().unwrap()
        })
        .collect();
    clean.sort_by(f64::total_cmp);
    let clean_s = clean[1];

    let out = tmp.path().join("straggler");
    let a = args(&out);
    let r = cluster.submit(
        "wordcount",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    r.assert_success();
    let job_id = r.stdout.trim().to_string();
    let victim = cluster.executor_ids()[2].clone();
    // Stop the victim while it runs its first map (before it holds any map output, which a
    // stopped process could not serve to the reducers).
    let st = wait_until(&cluster, &job_id, 30, "a map running on the victim", |st| {
        let tasks = st["tasks"].as_array().unwrap();
        let on = |state: &str| {
            tasks
                .iter()
                .any(|t| t["executor_id"] == victim.as_str() && t["state"] == state)
        };
        on("running") && !on("succeeded")
    });
    cluster.pause_executor(2);
    let stuck = st["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["executor_id"] == victim.as_str() && t["state"] == "running")
        .unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let st = cluster.wait_for_job(&job_id, Duration::from_secs(60));
    cluster.resume_executor(2);
    assert_eq!(
        st["state"],
        "succeeded",
        "{}\n{}",
        st["error"],
        cluster.logs()
    );
    assert_counts_eq(&read_tsv_counts(&out), &want, "with a straggler");
    assert_manifest_exact(&out, "with a straggler");
    let took = st["elapsed_s"].as_f64().unwrap();
    assert!(
        took < 2.0 * clean_s,
        "with a stopped executor the job took {took:.2} s, more than twice the clean {clean_s:.2} s"
    );
    // The stuck task finished through its speculative copy, elsewhere; counted once.
    let t = task(&st, &stuck);
    let history = t["history"].as_array().unwrap();
    let copy = history
        .iter()
        .find(|a| a["speculative"] == true)
        .unwrap_or_else(|| panic!("no speculative attempt of {stuck}: {t}"));
    assert_eq!(copy["outcome"], "succeeded", "{t}");
    assert_ne!(copy["executor_id"], victim.as_str(), "{t}");
    assert_eq!(history[0]["outcome"], "killed", "{t}");
    eprintln!("clean {clean:.2?} s, with a stopped executor {took:.2} s");
}
