//! Columnar input end to end. Parquet: files cut into splits of whole row groups (small files
//! combined), every row read exactly once, from local disk and from a real S3 server (s3s-fs,
//! ranged reads of only the chunks a split needs); `--param sluice.where` prunes row groups by
//! their statistics (fewer map tasks) and filters rows; a typed job reads only its columns.
//! Arrow IPC files: cut between record batches, every row read once, on disk and on S3.

mod support;

use std::path::Path;
use std::sync::Arc;

use arrow_array::{BinaryArray, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use sluice_testkit::{example_binary, path_str as s, sorted_part_lines, Cluster, CmdOutput};
use support::s3::{put_all, S3Server};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// `rows` sales rows (`id`, `store`, `cents`, and a wide `blob` no job reads) in row groups of
/// `per_group` rows; returns the file's bytes.
fn sales_parquet(first_id: i64, rows: i64, per_group: usize) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("store", DataType::Utf8, false),
        Field::new("cents", DataType::Int64, false),
        Field::new("blob", DataType::Binary, false),
    ]));
    let ids: Vec<i64> = (first_id..first_id + rows).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("store-{}", i % 7)),
            )),
            Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i % 1000))),
            Arc::new(BinaryArray::from_iter_values(
                ids.iter().map(|i| vec![(i % 251) as u8; 64]),
            )),
        ],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(per_group))
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    out
}

/// The dataset: one big file of 20 row groups and 30 small one-group files.
fn dataset() -> Vec<(String, Vec<u8>)> {
    let mut files = vec![("big.parquet".to_string(), sales_parquet(0, 20_000, 1000))];
    for i in 0..30 {
        files.push((
            format!("small-{i:02}.parquet"),
            sales_parquet(100_000 + i * 10, 10, 1000),
        ));
    }
    files
}

fn ids() -> Vec<i64> {
    let mut v: Vec<i64> = (0..20_000).collect();
    v.extend((0..30).flat_map(|i| 100_000 + i * 10..100_000 + i * 10 + 10));
    v
}

/// `sluice run count ...` on Parquet (with `env`), asserted to succeed.
fn count(args: &[&str], env: &[(&str, String)]) -> (i64, u64) {
    count_format("parquet", args, env)
}

/// `sluice run count --input-format FORMAT ...` (with `env`), asserted to succeed; returns
/// (records, map tasks).
fn count_format(format: &str, args: &[&str], env: &[(&str, String)]) -> (i64, u64) {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["run", "count", "--input-format", format, "--format", "tsv"])
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let r = CmdOutput {
        cmdline: format!("sluice run count {}", args.join(" ")),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    r.assert_success();
    let output = args[args.iter().position(|a| *a == "--output").unwrap() + 1];
    let lines = sorted_part_lines(Path::new(output));
    let records = match lines.as_slice() {
        [] => 0,
        [l] => l.strip_prefix("records\t").unwrap().parse().unwrap(),
        _ => panic!("{lines:?}"),
    };
    // The summary line: "job ID (count) succeeded in S: N maps, R reduces; ...".
    let maps = r
        .stderr
        .lines()
        .find(|l| l.contains(") succeeded in "))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|rest| rest.split(" maps").next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no map count in: {}", r.stderr));
    (records, maps)
}

#[test]
fn parquet_splits_by_row_groups_and_filters_on_disk_and_on_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let files = dataset();
    for (name, bytes) in &files {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let server = S3Server::start();
    let bucket = server.bucket("pqlake");
    put_all(
        &bucket,
        files
            .iter()
            .map(|(n, b)| (format!("in/{n}"), b.clone()))
            .collect(),
    );
    let s3_env = server.client_env();
    let all = ids().len() as i64;
    let filter = "sluice.where=id >= 2500 and id < 4100";

    for (what, input, env) in [
        ("disk", s(&dir).to_string(), &[][..]),
        ("s3", "s3://pqlake/in".to_string(), &s3_env[..]),
    ] {
        let out = |n: &str| tmp.path().join(format!("{what}-{n}")).display().to_string();
        // Split size 1: a split per row group of the big file, the small files combined.
        let (n, maps) = count(
            &[
                "--input",
                &input,
                "--output",
                &out("a"),
                "--split-size",
                "1",
            ],
            env,
        );
        assert_eq!(n, all, "{what}: every row read exactly once");
        assert!(
            maps >= 20,
            "{what}: the big file is cut by row groups ({maps} maps)"
        );
        let (n, maps_big) = count(&["--input", &input, "--output", &out("b")], env);
        assert_eq!(n, all, "{what}");
        assert!(
            maps_big < maps,
            "{what}: large splits combine row groups ({maps_big} maps)"
        );
        // The filter keeps ids 2500..4100 (row groups 2, 3, 4) and nothing else; every small
        // file's statistics rule it out, so they are not read at all.
        let (n, maps) = count(
            &[
                "--input",
                &input,
                "--output",
                &out("c"),
                "--split-size",
                "1",
                "--param",
                filter,
            ],
            env,
        );
        assert_eq!(n, 1600, "{what}: filtered rows");
        assert_eq!(maps, 3, "{what}: pruned row groups get no task");
    }
    let ops = server.operations();
    assert!(
        ops.iter().filter(|o| o.as_str() == "GetObject").count() > 30,
        "ranged reads: {ops:?}"
    );
}

#[test]
fn a_typed_job_reads_parquet_columns_by_name_and_a_bad_filter_fails_at_submit() {
    let faulty = example_binary(BIN, "faulty", "sluice-example-faulty");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in dataset() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let out = tmp.path().join("sales");
    let r = cluster.submit_binary(
        "sales",
        &faulty,
        &dir,
        &out,
        &[
            "--input-format",
            "parquet",
            "--format",
            "tsv",
            "--split-size",
            "32KiB",
            "--param",
            "sluice.where=cents < 10",
            "--wait",
        ],
    );
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let mut want = std::collections::BTreeMap::new();
    for i in ids().into_iter().filter(|i| i % 1000 < 10) {
        *want.entry(format!("store-{}", i % 7)).or_insert(0i64) += i % 1000;
    }
    let mut want: Vec<String> = want.iter().map(|(k, v)| format!("{k}\t{v}")).collect();
    want.sort();
    assert_eq!(sorted_part_lines(&out), want);

    for (param, says) in [
        ("sluice.where=cents <> 3", "is neither a number"),
        ("sluice.where=cents", "is not COL OP VALUE"),
    ] {
        let out = tmp.path().join("bad");
        let r = cluster.submit_binary(
            "sales",
            &faulty,
            &dir,
            &out,
            &["--input-format", "parquet", "--param", param, "--wait"],
        );
        assert!(!r.success(), "{param} should be refused");
        let last = r.last_stderr_line();
        assert!(
            last.contains("sluice.where") && last.contains(says),
            "{param}: {last}"
        );
        assert!(!out.exists(), "a refused job writes nothing");
    }
}

/// An Arrow IPC file of `batches` record batches of `rows` ids each.
fn arrow_file(batches: i64, rows: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let mut w = arrow_ipc::writer::FileWriter::try_new(&mut out, &schema).unwrap();
    for b in 0..batches {
        let ids = Int64Array::from_iter_values(b * rows..(b + 1) * rows);
        w.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).unwrap())
            .unwrap();
    }
    w.finish().unwrap();
    drop(w);
    out
}

#[test]
fn arrow_ipc_files_split_by_record_batches_on_disk_and_on_s3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(&dir).unwrap();
    let files = vec![
        ("a.arrow".to_string(), arrow_file(16, 1000)),
        ("b.arrow".to_string(), arrow_file(1, 5)),
    ];
    for (n, b) in &files {
        std::fs::write(dir.join(n), b).unwrap();
    }
    let server = S3Server::start();
    let bucket = server.bucket("arrowlake");
    put_all(
        &bucket,
        files
            .iter()
            .map(|(n, b)| (format!("in/{n}"), b.clone()))
            .collect(),
    );
    let s3_env = server.client_env();
    for (what, input, env) in [
        ("disk", s(&dir).to_string(), &[][..]),
        ("s3", "s3://arrowlake/in".to_string(), &s3_env[..]),
    ] {
        let out = |n: &str| tmp.path().join(format!("{what}-{n}")).display().to_string();
        let (n, maps) = count_format(
            "arrow",
            &[
                "--input",
                &input,
                "--output",
                &out("a"),
                "--split-size",
                "1",
            ],
            env,
        );
        assert_eq!((n, maps), (16_005, 17), "{what}: a split per batch");
        let (n, maps) = count_format("arrow", &["--input", &input, "--output", &out("b")], env);
        assert_eq!((n, maps), (16_005, 1), "{what}: one split for all");
        let (n, _) = count_format(
            "ipc",
            &[
                "--input",
                &input,
                "--output",
                &out("c"),
                "--param",
                "sluice.where=id >= 15990",
            ],
            env,
        );
        assert_eq!(n, 10, "{what}: filtered rows");
    }
}

#[test]
fn hive_partition_directories_become_columns_and_prune_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("events");
    // day=1: 3 files of 1,000 rows; day=2: 2 files; day=__HIVE_DEFAULT_PARTITION__: 1 file.
    for (day, files) in [("1", 3), ("2", 2), ("__HIVE_DEFAULT_PARTITION__", 1)] {
        let d = dir.join(format!("day={day}")).join("region=eu");
        std::fs::create_dir_all(&d).unwrap();
        for f in 0..files {
            std::fs::write(
                d.join(format!("part-{f}.parquet")),
                sales_parquet(0, 1000, 500),
            )
            .unwrap();
        }
    }
    let input = s(&dir).to_string();
    let out = |n: &str| tmp.path().join(n).display().to_string();
    let (n, _) = count(&["--input", &input, "--output", &out("all")], &[]);
    assert_eq!(n, 6000);
    // A term on a partition column is decided from the path: other files are not even opened.
    let (n, maps) = count(
        &[
            "--input",
            &input,
            "--output",
            &out("day2"),
            "--split-size",
            "1",
            "--param",
            "sluice.where=day = 2",
        ],
        &[],
    );
    assert_eq!((n, maps), (2000, 4), "day=2 only: 2 files x 2 row groups");
    let (n, _) = count(
        &[
            "--input",
            &input,
            "--output",
            &out("eu"),
            "--param",
            "sluice.where=region = 'eu' and day >= 1 and id < 10",
        ],
        &[],
    );
    assert_eq!(n, 50, "ids 0..10 of the 5 files with a day");
    // Pruning by path must not hide a file whose name has no partition: it is read.
    std::fs::write(dir.join("loose.parquet"), sales_parquet(0, 7, 500)).unwrap();
    let (n, _) = count(
        &[
            "--input",
            &input,
            "--output",
            &out("loose"),
            "--param",
            "sluice.where=id < 3",
        ],
        &[],
    );
    assert_eq!(
        n,
        5 * 3 + 3 + 3,
        "ids 0..3 of every file, the null-day one included"
    );
}
