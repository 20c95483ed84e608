//! Bad input through a job with typed input records (`sales` of the faulty example binary:
//! `store`, `cents` from CSV with a header or from Parquet) on a real coordinator and executor:
//! a CSV row with the wrong number of fields, or a field that does not parse, fails the job
//! naming the file and byte offset, and nothing is committed; with `sluice.bad_records=skip`
//! the job succeeds, counts exactly the planted bad rows and commits them, with file and
//! offset, to `OUTPUT/_bad_records/`. A Parquet file with a corrupt footer fails the job naming
//! the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use sluice_testkit::{
    example_binary, path_str as s, read_manifest, read_parquet_rows, sorted_part_lines, Cluster,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

fn faulty() -> PathBuf {
    example_binary(BIN, "faulty", "sluice-example-faulty")
}

/// `store\tcents` lines of the expected totals, sorted as `sorted_part_lines` sorts.
fn expected_lines(totals: &BTreeMap<String, i64>) -> Vec<String> {
    let mut v: Vec<String> = totals.iter().map(|(k, c)| format!("{k}\t{c}")).collect();
    v.sort();
    v
}

/// Where a bad row was planted: file, byte offset, the row.
type Planted = Vec<(PathBuf, usize, String)>;

/// Writes `n` good sales rows per file into `dir` (two files), planting `bad` rows among them;
/// returns the totals of the good rows and where each bad row went.
fn write_csv(dir: &Path, bad: &[&str]) -> (BTreeMap<String, i64>, Planted) {
    std::fs::create_dir_all(dir).unwrap();
    let mut totals = BTreeMap::new();
    let mut planted_at = Vec::new();
    let mut planted = bad.iter();
    for f in 0..2 {
        let path = dir.join(format!("sales-{f}.csv"));
        let mut text = String::from("store,cents\n");
        for i in 0..400u64 {
            if i % 97 == 50 {
                if let Some(b) = planted.next() {
                    planted_at.push((path.clone(), text.len(), b.to_string()));
                    text.push_str(b);
                    text.push('\n');
                }
            }
            let store = format!("store-{}", (i * 7 + f) % 13);
            let cents = (i * 31 + f * 1000) as i64 % 5000 - 100;
            *totals.entry(store.clone()).or_insert(0) += cents;
            // A quoted store name with a comma now and then: still two fields.
            if i % 11 == 0 {
                text.push_str(&format!("\"{store}\",{cents}\n"));
            } else {
                text.push_str(&format!("{store},{cents}\n"));
            }
        }
        std::fs::write(&path, text).unwrap();
    }
    assert!(planted.next().is_none(), "not every bad row was planted");
    (totals, planted_at)
}

/// Runs `sales` over `input` into `out` (TSV) with job parameters `params`, asserting that it
/// succeeds; returns its status.
fn sales_succeeds(
    cluster: &Cluster,
    faulty: &Path,
    input: &Path,
    out: &Path,
    params: &[&str],
) -> serde_json::Value {
    let mut args = vec!["--format", "tsv", "--wait", "--json"];
    for p in params {
        args.extend(["--param", p]);
    }
    let r = cluster.submit_binary("sales", faulty, input, out, &args);
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let st = r.stdout_json();
    assert_eq!(st["state"], "succeeded", "{st}");
    st
}

#[test]
fn bad_csv_rows_fail_the_job_or_are_skipped_and_counted_exactly() {
    let faulty = faulty();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    // Too many fields first (the one that fails the job), then too few, a non-integer, and
    // another wide one.
    let bad = [
        "store-1,5,extra",
        "store-2",
        "store-3,12.5",
        "store-4,1,2,3",
    ];
    let (mut totals, planted) = write_csv(&input, &bad);
    let (bad_file, bad_offset) = (planted[0].0.clone(), planted[0].1);
    let cluster = Cluster::start(BIN, 1, 1).expect("cluster starts");

    let out = tmp.path().join("out-fail");
    let r = cluster.submit_binary(
        "sales",
        &faulty,
        &input,
        &out,
        &["--format", "tsv", "--wait"],
    );
    assert!(
        !r.success(),
        "bad rows must fail the job by default: {}",
        r.stdout
    );
    let last = r.last_stderr_line();
    let at = format!("byte {bad_offset}");
    for want in [
        s(&bad_file),
        at.as_str(),
        "3 fields",
        "sluice.bad_records=skip",
    ] {
        assert!(last.contains(want), "error line lacks {want:?}: {last}");
    }
    assert!(
        !out.join("_SUCCESS").exists(),
        "a failed job commits nothing"
    );
    let left: Vec<_> = std::fs::read_dir(&out)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a failed job leaves no files: {left:?}");

    let out = tmp.path().join("out-skip");
    let st = sales_succeeds(
        &cluster,
        &faulty,
        &input,
        &out,
        &["sluice.bad_records=skip"],
    );
    assert_eq!(
        st["counters"]["skipped_bad_records"].as_i64(),
        Some(bad.len() as i64),
        "{}",
        st["counters"]
    );
    assert_eq!(sorted_part_lines(&out), expected_lines(&totals));
    // Each skipped record is committed once to `_bad_records/` with where it was and why.
    let m = read_manifest(&out);
    let listed: Vec<&str> = m["bad_records"]
        .as_array()
        .expect("the manifest lists the bad-record files")
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(
        m["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| !f["path"].as_str().unwrap().starts_with("_bad_records")),
        "bad records are not output rows: {m}"
    );
    let mut got = Vec::new();
    for rel in &listed {
        assert!(rel.starts_with("_bad_records/part-m-"), "{rel}");
        assert!(rel.ends_with(".parquet"), "{rel}");
        for v in read_parquet_rows(out.join(rel)) {
            assert!(!v["error"].as_str().unwrap().is_empty(), "{v}");
            got.push((
                PathBuf::from(v["file"].as_str().unwrap()),
                v["offset"].as_u64().unwrap() as usize,
                v["record"].as_str().unwrap().to_string(),
            ));
        }
    }
    got.sort();
    let mut want = planted.clone();
    want.sort();
    assert_eq!(got, want, "the bad records and their positions");

    // A job that allows any width reads the wide rows' first two fields.
    let out = tmp.path().join("out-flexible");
    let st = sales_succeeds(
        &cluster,
        &faulty,
        &input,
        &out,
        &["sluice.bad_records=skip", "sluice.csv.flexible=true"],
    );
    assert_eq!(st["counters"]["skipped_bad_records"].as_i64(), Some(2));
    *totals.get_mut("store-1").unwrap() += 5;
    *totals.get_mut("store-4").unwrap() += 1;
    assert_eq!(sorted_part_lines(&out), expected_lines(&totals));
}

/// A Parquet file of sales rows.
#[test]
fn small_json_files_in_hive_directories_get_their_region_and_name_their_own_bad_records() {
    let faulty = faulty();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let mut totals = BTreeMap::new();
    let mut planted = Vec::new();
    let mut files = 0;
    for region in ["eu", "us", "__HIVE_DEFAULT_PARTITION__"] {
        let dir = input.join(format!("region={region}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..12 {
            let path = dir.join(format!("part-{f:02}.jsonl"));
            let mut text = String::new();
            for i in 0..(5 + f) {
                if f == 7 && i == 3 {
                    planted.push((path.clone(), text.len(), format!("{{bad {region}")));
                    text.push_str(&format!("{{bad {region}\n"));
                }
                let cents = (i * 13 + f * 7) as i64 % 300;
                // A record's own key wins over its directory's.
                let own = region == "eu" && f == 5 && i == 0;
                let region = if own { "own" } else { region };
                let key = if own {
                    format!(",\"region\":\"{region}\"")
                } else {
                    String::new()
                };
                *totals.entry(region.to_string()).or_insert(0) += cents;
                text.push_str(&format!("{{\"store\":\"s{i}\",\"cents\":{cents}{key}}}\n"));
            }
            std::fs::write(&path, text).unwrap();
            files += 1;
        }
    }
    // Hive's null partition value has no region: those records are bad for this type.
    let null_records: usize = (0..12).map(|f| 5 + f).sum();
    totals.remove("__HIVE_DEFAULT_PARTITION__");
    let cluster = Cluster::start(BIN, 1, 1).expect("cluster starts");
    let out = tmp.path().join("out");
    let mut args = vec!["--format", "tsv", "--wait", "--json"];
    args.extend(["--param", "sluice.bad_records=skip"]);
    let r = cluster.submit_binary("sales-by-region", &faulty, &input, &out, &args);
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let st = r.stdout_json();
    assert!(
        st["maps_total"].as_u64().unwrap() < files as u64,
        "the small files are combined: {st}"
    );
    assert_eq!(
        st["counters"]["skipped_bad_records"].as_u64(),
        Some((planted.len() + null_records) as u64),
        "{st}"
    );
    assert_eq!(sorted_part_lines(&out), expected_lines(&totals));
    // Each planted record is named by its own file and its offset in that file, though it
    // was read from a split of many files.
    let m = read_manifest(&out);
    let mut got = Vec::new();
    for f in m["bad_records"].as_array().unwrap() {
        for v in read_parquet_rows(out.join(f["path"].as_str().unwrap())) {
            let record = v["record"].as_str().unwrap().to_string();
            if record.starts_with("{bad") {
                got.push((
                    PathBuf::from(v["file"].as_str().unwrap()),
                    v["offset"].as_u64().unwrap() as usize,
                    record,
                ));
            }
        }
    }
    got.sort();
    planted.sort();
    assert_eq!(got, planted);
}

fn write_parquet(path: &Path, rows: &[(&str, i64)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("store", DataType::Utf8, false),
        Field::new("cents", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
        ],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn a_parquet_file_with_a_corrupt_footer_fails_the_job_naming_it() {
    let faulty = faulty();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    write_parquet(&input.join("a.parquet"), &[("x", 5), ("y", 7), ("x", 1)]);
    let cluster = Cluster::start(BIN, 1, 1).expect("cluster starts");
    let args = ["--input-format", "parquet", "--format", "tsv", "--wait"];

    // Sound files first: the job reads them.
    let out = tmp.path().join("out-good");
    let r = cluster.submit_binary("sales", &faulty, &input, &out, &args);
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    assert_eq!(sorted_part_lines(&out), vec!["x\t6", "y\t7"]);

    // The footer's metadata length overwritten with garbage.
    let bad = input.join("b.parquet");
    write_parquet(&bad, &[("z", 1)]);
    let mut bytes = std::fs::read(&bad).unwrap();
    let n = bytes.len();
    bytes[n - 8..n - 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
    std::fs::write(&bad, bytes).unwrap();
    let out = tmp.path().join("out-bad");
    let r = cluster.submit_binary("sales", &faulty, &input, &out, &args);
    assert!(
        !r.success(),
        "a corrupt footer must fail the job: {}",
        r.stdout
    );
    let last = r.last_stderr_line();
    for want in [s(&bad), "Parquet"] {
        assert!(last.contains(want), "error line lacks {want:?}: {last}");
    }
    assert!(!last.contains("panicked"), "{last}");
    assert!(
        !out.join("_SUCCESS").exists(),
        "a failed job commits nothing"
    );
}
