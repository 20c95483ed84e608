//! Failures by kind: a record that makes user code panic on every attempt is retried up to
//! `--max-attempts` on other executors and then named; skipped, it is counted; a permanent
//! error (bad input) is not retried.

use std::collections::BTreeSet;

use sluice_testkit::{example_binary, path_str as s, read_bad_records, sorted_part_lines, Cluster};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// Writes `a.txt` (clean) and `b.txt` with a poisoned line; returns the input directory and
/// the poisoned line's byte offset in `b.txt`.
fn poisoned_input(dir: &std::path::Path) -> (std::path::PathBuf, u64) {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a.txt"), "one\ntwo\nthree\n").unwrap();
    let before = "alpha\nbeta\ngamma\n";
    std::fs::write(
        input.join("b.txt"),
        format!("{before}this line is POISON for the mapper\ndelta\n"),
    )
    .unwrap();
    (input, before.len() as u64)
}

fn task<'a>(st: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    st["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["task_id"] == id))
        .unwrap_or_else(|| panic!("no task {id} in {st}"))
}

#[test]
fn a_record_that_panics_every_attempt_is_named_after_max_attempts_or_skipped() {
    let faulty = example_binary(BIN, "faulty", "sluice-example-faulty");
    let tmp = tempfile::tempdir().unwrap();
    let (input, offset) = poisoned_input(tmp.path());
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");

    let out = tmp.path().join("out-fail");
    let r = cluster.submit_binary(
        "poison",
        &faulty,
        &input,
        &out,
        &["--max-attempts", "3", "--format", "tsv", "--wait", "--json"],
    );
    assert!(!r.success(), "the job should fail: {}", r.stderr);
    let last = r.last_stderr_line();
    for want in [
        "b.txt".to_string(),
        format!("at byte {offset}"),
        "poisoned record".to_string(),
        "after 3 attempt(s)".to_string(),
        "bad_records=skip".to_string(),
    ] {
        assert!(last.contains(&want), "the error lacks {want:?}: {last}");
    }
    let st = r.stdout_json();
    // b.txt is the second file: map m-00001 (one split per small file is not promised, so find
    // the failed task instead).
    let failed: Vec<&serde_json::Value> = st["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{st}");
    let history = failed[0]["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "three attempts: {}", failed[0]);
    assert!(
        history.iter().all(|a| a["outcome"] == "retryable"),
        "{history:?}"
    );
    // The second attempt went to the other executor.
    let on: BTreeSet<&str> = history[..2]
        .iter()
        .map(|a| a["executor_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        on.len(),
        2,
        "attempts 1 and 2 on different executors: {history:?}"
    );
    assert!(!out.exists(), "a failed job leaves no output");

    // Skipping: the job succeeds, the poisoned line counted and kept, every other line counted.
    let out = tmp.path().join("out-skip");
    let r = cluster.submit_binary(
        "poison",
        &faulty,
        &input,
        &out,
        &[
            "--param",
            "sluice.bad_records=skip",
            "--format",
            "tsv",
            "--wait",
            "--json",
        ],
    );
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let st = r.stdout_json();
    assert_eq!(
        st["counters"]["skipped_bad_records"].as_u64(),
        Some(1),
        "{st}"
    );
    // Lengths of the clean lines: one two three alpha beta gamma delta.
    assert_eq!(
        sorted_part_lines(&out),
        vec!["3\t2", "4\t1", "5\t4"],
        "line lengths of every clean line"
    );
    let bad = read_bad_records(&out);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0]["file"].as_str().unwrap().ends_with("b.txt"),
        "{bad:?}"
    );
    assert_eq!(bad[0]["offset"].as_u64(), Some(offset), "{bad:?}");
    assert!(
        bad[0]["record"].as_str().unwrap().contains("POISON"),
        "{bad:?}"
    );
    // Each map ran once: nothing was retried.
    for t in st["tasks"].as_array().unwrap() {
        assert_eq!(t["history"].as_array().unwrap().len(), 1, "{t}");
    }
    let _ = task(&st, "m-00000");
}

#[test]
fn a_permanent_error_is_not_retried() {
    let faulty = example_binary(BIN, "faulty", "sluice-example-faulty");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("sales.csv");
    std::fs::write(&input, "store,cents\nnorth,100\nsouth,not-a-number\n").unwrap();
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let out = tmp.path().join("out");
    let r = cluster.submit_binary("sales", &faulty, &input, &out, &["--wait", "--json"]);
    assert!(!r.success());
    let last = r.last_stderr_line();
    assert!(last.contains("not retried"), "{last}");
    assert!(last.contains("sales.csv"), "{last}");
    let st = r.stdout_json();
    let m0 = task(&st, "m-00000");
    let history = m0["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "one attempt only: {m0}");
    assert_eq!(history[0]["outcome"], "permanent", "{m0}");
    let _ = s(&input);
}

/// Writes `rows` rows `(id, value = id)` to one Parquet file, except `negative` ids, whose value
/// is -1.
fn id_value_parquet(path: &std::path::Path, rows: i64, negative: &[i64]) {
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch};
    let file = std::fs::File::create(path).unwrap();
    let batch = |from: i64, to: i64| {
        let id = Int64Array::from_iter_values(from..to);
        let value = Int64Array::from_iter_values((from..to).map(|i| {
            if negative.contains(&i) {
                -1
            } else {
                i
            }
        }));
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(id) as arrow_array::ArrayRef),
            ("value", Arc::new(value) as arrow_array::ArrayRef),
        ])
        .unwrap()
    };
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch(0, 1).schema(), None).unwrap();
    let mut at = 0;
    while at < rows {
        let to = (at + 100_000).min(rows);
        w.write(&batch(at, to)).unwrap();
        at = to;
    }
    w.close().unwrap();
}

#[test]
fn a_batch_udf_failing_on_planted_rows_sets_exactly_those_rows_aside() {
    let faulty = example_binary(BIN, "faulty", "sluice-example-faulty");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("rows.parquet");
    let planted = [123_457i64, 500_000, 999_998];
    id_value_parquet(&input, 1_000_000, &planted);
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");

    // Without skipping, the job fails naming the rows of the failing batch.
    let out = tmp.path().join("out-fail");
    let r = cluster.submit_binary("quarantine", &faulty, &input, &out, &["--wait"]);
    assert!(!r.success());
    let last = r.last_stderr_line();
    assert!(
        last.contains("rows.parquet") && last.contains("negative value -1"),
        "{last}"
    );

    // Skipping: every other row is in the output; the 3 rows are in `_bad_records/`.
    let out = tmp.path().join("out-skip");
    let r = cluster.submit_binary(
        "quarantine",
        &faulty,
        &input,
        &out,
        &[
            "--param",
            "sluice.bad_records=skip",
            "--format",
            "csv",
            "--reducers",
            "2",
            "--wait",
            "--json",
        ],
    );
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let st = r.stdout_json();
    assert_eq!(
        st["counters"]["skipped_bad_records"].as_u64(),
        Some(3),
        "{st}"
    );
    let mut ids = Vec::with_capacity(1_000_000);
    for part in sluice_testkit::part_files(&out, "csv") {
        let text = std::fs::read_to_string(&part).unwrap();
        for line in text.lines().skip(1) {
            let (id, value) = line.split_once(',').unwrap();
            assert_eq!(id, value, "{line}");
            ids.push(id.parse::<i64>().unwrap());
        }
    }
    ids.sort_unstable();
    let want: Vec<i64> = (0..1_000_000).filter(|i| !planted.contains(i)).collect();
    assert_eq!(ids.len(), want.len());
    assert!(ids == want, "the output is every row but the planted ones");
    let mut bad = Vec::new();
    {
        for v in read_bad_records(&out) {
            assert!(v["file"].as_str().unwrap().ends_with("rows.parquet"), "{v}");
            assert!(
                v["error"].as_str().unwrap().contains("negative value -1"),
                "{v}"
            );
            let row: serde_json::Value =
                serde_json::from_str(v["record"].as_str().unwrap()).unwrap();
            assert_eq!(row["id"].as_i64(), v["offset"].as_i64(), "{v}");
            bad.push(v["offset"].as_i64().unwrap());
        }
    }
    bad.sort_unstable();
    assert_eq!(bad, planted, "exactly the planted rows, at their positions");

    // A budget of 2 bad records: the job fails naming the third.
    let out = tmp.path().join("out-budget");
    let r = cluster.submit_binary(
        "quarantine",
        &faulty,
        &input,
        &out,
        &[
            "--param",
            "sluice.bad_records=skip",
            "--param",
            "sluice.max_bad_records=2",
            "--wait",
        ],
    );
    assert!(!r.success());
    let last = r.last_stderr_line();
    assert!(
        last.contains("more than 2 bad records") && last.contains("at 999998"),
        "{last}"
    );
    assert!(
        last.contains("not retried"),
        "a spent budget is permanent: {last}"
    );
}
