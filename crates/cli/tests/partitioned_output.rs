//! Partitioned output (`--partition-by COL`): word count partitioned by its `count` column
//! writes `count=N/part-…` files without the column, committed exactly once on disk and on a
//! real S3 server; the manifest lists every file with its own rows; reading the output back
//! with Sluice (partition discovery, and a filter on the partition column that skips whole
//! directories) and with pyarrow's Hive partitioning gives exactly the word counts.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use sluice_testkit::{generate_text, path_str as s, read_manifest, reference_counts, CmdOutput};
use support::s3::{keys_under, S3Server};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn sluice(args: &[&str], env: &[(&str, String)]) -> CmdOutput {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    CmdOutput {
        cmdline: format!("sluice {}", args.join(" ")),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The one `records` row of a `count` job's TSV output.
fn records(out: &Path) -> i64 {
    let lines = sluice_testkit::sorted_part_lines(out);
    match lines.as_slice() {
        [] => 0,
        [l] => l.strip_prefix("records\t").unwrap().parse().unwrap(),
        _ => panic!("{lines:?}"),
    }
}

/// Reads a partitioned Parquet output with pyarrow (Hive partitioning) into word → count.
fn pyarrow_counts(out: &Path) -> BTreeMap<String, i64> {
    let python = support::python::python_with_pyarrow();
    let script = r#"
import json, sys
import pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], format="parquet", partitioning="hive",
               exclude_invalid_files=False, ignore_prefixes=["_", "."]).to_table()
print(json.dumps(dict(zip(t.column("word").to_pylist(), t.column("count").to_pylist()))))
"#;
    let o = Command::new(&python)
        .args(["-c", script, s(out)])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pyarrow: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn wordcount_partitioned_by_count_round_trips_on_disk_and_on_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let files = generate_text(BIN, tmp.path().join("in"), "2MiB", 2, 3);
    let want: BTreeMap<String, i64> = reference_counts(&files)
        .into_iter()
        .map(|(w, c)| (w, c as i64))
        .collect();
    let once = want.values().filter(|c| **c == 1).count() as i64;
    let input = s(&tmp.path().join("in")).to_string();

    // On disk.
    let out = tmp.path().join("wc");
    let r = sluice(
        &[
            "run",
            "wordcount",
            "--input",
            &input,
            "--output",
            s(&out),
            "--partition-by",
            "count",
        ],
        &[],
    );
    r.assert_success();
    assert!(!r.stderr.contains("note:"), "{}", r.stderr);
    let m = read_manifest(&out);
    let mut rows = 0;
    for f in m["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        let (dir, name) = path.split_once('/').expect("COL=VALUE/part");
        assert!(
            dir.starts_with("count=") && name.starts_with("part-r-"),
            "{path}"
        );
        assert!(out.join(path).exists(), "{path}");
        rows += f["rows"].as_i64().unwrap();
    }
    assert_eq!(rows, want.len() as i64, "manifest rows, file by file");
    assert_eq!(pyarrow_counts(&out), want, "pyarrow with Hive partitioning");

    // Read back by Sluice: every row, then only count=1 (other directories never opened).
    let n_out = tmp.path().join("n");
    sluice(
        &[
            "run",
            "count",
            "--input",
            s(&out),
            "--input-format",
            "parquet",
            "--output",
            s(&n_out),
            "--format",
            "tsv",
        ],
        &[],
    )
    .assert_success();
    assert_eq!(records(&n_out), want.len() as i64);
    let once_out = tmp.path().join("once");
    let r = sluice(
        &[
            "run",
            "count",
            "--input",
            s(&out),
            "--input-format",
            "parquet",
            "--output",
            s(&once_out),
            "--format",
            "tsv",
            "--split-size",
            "1",
            "--param",
            "sluice.where=count = 1",
        ],
        &[],
    );
    r.assert_success();
    assert_eq!(records(&once_out), once);

    // A column the output lacks: the job fails naming the columns, and commits nothing.
    let bad = tmp.path().join("bad");
    let r = sluice(
        &[
            "run",
            "wordcount",
            "--input",
            &input,
            "--output",
            s(&bad),
            "--partition-by",
            "nope",
        ],
        &[],
    );
    assert!(!r.success());
    let last = r.last_stderr_line();
    assert!(
        last.contains("--partition-by nope") && last.contains("word, count"),
        "{last}"
    );
    assert!(!bad.join("_SUCCESS").exists());
    assert!(
        std::fs::read_dir(&bad).map(|d| d.count()).unwrap_or(0) == 0,
        "a failed partitioned job leaves nothing"
    );

    // On S3: the same layout as keys, committed by multipart uploads.
    let server = S3Server::start();
    let bucket = server.bucket("wclake");
    let env = server.client_env();
    let r = sluice(
        &[
            "run",
            "wordcount",
            "--input",
            &input,
            "--output",
            "s3://wclake/wc",
            "--format",
            "tsv",
            "--partition-by",
            "count",
        ],
        &env,
    );
    r.assert_success();
    let keys = keys_under(&bucket, "wc");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(server.root.path().join("data/wclake/wc/_SUCCESS")).unwrap(),
    )
    .unwrap();
    let mut listed: Vec<String> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    listed.push("_SUCCESS".into());
    listed.sort();
    assert_eq!(keys, listed, "exactly the manifest's objects");
    let mut got = BTreeMap::new();
    for k in keys.iter().filter(|k| k.starts_with("count=")) {
        let n: i64 = k["count=".len()..k.find('/').unwrap()].parse().unwrap();
        let text =
            std::fs::read_to_string(server.root.path().join("data/wclake/wc").join(k)).unwrap();
        for w in text.lines() {
            assert!(got.insert(w.to_string(), n).is_none(), "{w} twice");
        }
    }
    assert_eq!(got, want, "S3 partitioned output");
}
