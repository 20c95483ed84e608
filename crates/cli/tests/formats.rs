//! `sluice run wordcount --format csv|jsonl|parquet`: each output read back from the files its
//! `_SUCCESS` manifest lists, by an independent Rust parser (csv, serde_json, parquet), by
//! Sluice's own reader (what `--top` uses) and by pyarrow, equals a reference count exactly,
//! words that need CSV quoting or JSON escaping included.
//!
//! pyarrow is required, not optional: the test runs `$SLUICE_PYTHON`, else the venv
//! `~/.cache/sluice-venv` (made with pyarrow if missing, as `.ci/run` does), and fails when
//! neither can import pyarrow.
//!
//! Each output is also read back by a Sluice job: the typed `sales` job of the faulty example
//! binary (it takes `word`/`count` records) on a real cluster sums every word's count from the
//! CSV, JSON-lines and Parquet outputs, which must give the counts again.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_core::OutputFormat;
use sluice_testkit::{
    assert_counts_eq, example_binary, generate_text, part_files, path_str as s, read_manifest,
    reference_counts, sluice, sorted_part_lines, Cluster, Counts,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// Words that need quoting in CSV (a comma, a double quote) or escaping in JSON (a quote, a
/// backslash), non-ASCII ones, and ones a type-inferring reader would take for a number, a
/// boolean or a null. None holds white space, so each is one word count token.
const TRICKY: &str = "a,b say\"hi\" back\\slash ünï \" , \"\" x\"\"y {\"k\":1} [1] \
                      12 -7 1e5 true null NULL NaN \\n \\\" 語 🦀 a,b ünï a,b\n\
                      say\"hi\" plain \u{feff}bom \u{1} \u{7f}\n";

/// A generated corpus plus the tricky words, as input files.
struct Corpus {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    files: Vec<PathBuf>,
}

fn corpus(size: &str, files: u32) -> Corpus {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    let mut paths = generate_text(BIN, &dir, size, files, 11);
    let tricky = dir.join("tricky.txt");
    std::fs::write(&tricky, TRICKY).unwrap();
    paths.push(tricky);
    Corpus {
        dir: tmp.path().to_path_buf(),
        _tmp: tmp,
        files: paths,
    }
}

/// Runs word count over `inputs` into `out` in `format`, with extra flags.
fn run_wordcount(inputs: &[PathBuf], out: &Path, format: &str, extra: &[&str]) {
    let mut args: Vec<&str> = vec!["run", "wordcount"];
    for i in inputs {
        args.extend(["--input", s(i)]);
    }
    args.extend([
        "--output",
        s(out),
        "--format",
        format,
        "--executors",
        "2",
        "--split-size",
        "256KiB",
        "--top",
        "3",
    ]);
    args.extend(extra);
    let r = sluice(BIN, &args);
    r.assert_success();
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

/// The part files the manifest lists, with the rows it gives each, in its order.
fn manifest_parts(out: &Path, format: &str) -> Vec<(PathBuf, u64)> {
    let m = read_manifest(out);
    assert_eq!(m["format"], format, "{m}");
    let parts: Vec<(PathBuf, u64)> = m["files"]
        .as_array()
        .expect("files array")
        .iter()
        .map(|f| {
            let p = f["path"].as_str().expect("path");
            (out.join(p), f["rows"].as_u64().expect("rows"))
        })
        .collect();
    let mut listed: Vec<PathBuf> = parts.iter().map(|(p, _)| p.clone()).collect();
    listed.sort();
    assert_eq!(
        listed,
        part_files(out, format),
        "manifest vs part files on disk"
    );
    parts
}

/// Adds `(word, count)` to `counts`, failing on a word seen before (in any part).
fn add(counts: &mut Counts, word: String, count: i64, part: &Path) {
    let count =
        u64::try_from(count).unwrap_or_else(|_| panic!("{}: count {count}", part.display()));
    if let Some(c) = counts.insert(word.clone(), count) {
        panic!(
            "{word:?} occurs twice (count {c} before); the second in {}",
            part.display()
        );
    }
}

/// Reads one part with a parser that shares no code with the writer; returns its rows.
fn read_part_independently(path: &Path, format: OutputFormat, counts: &mut Counts) -> u64 {
    let data = std::fs::read(path).unwrap();
    let mut rows = 0;
    match format {
        OutputFormat::Csv => {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(data.as_slice());
            assert_eq!(
                r.headers().unwrap(),
                vec!["word", "count"],
                "{}: header",
                path.display()
            );
            for rec in r.records() {
                let rec = rec.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!(rec.len(), 2, "{}: {rec:?}", path.display());
                add(counts, rec[0].to_string(), rec[1].parse().unwrap(), path);
                rows += 1;
            }
        }
        OutputFormat::Jsonl => {
            let text = std::str::from_utf8(&data).unwrap();
            assert!(
                text.is_empty() || text.ends_with('\n'),
                "{}",
                path.display()
            );
            for line in text.lines() {
                // Keys in column order, then exactly those two.
                assert!(line.starts_with("{\"word\":"), "{}: {line}", path.display());
                let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: {line}: {e}", path.display()));
                assert_eq!(v.len(), 2, "{}: {line}", path.display());
                let word = v["word"].as_str().expect("string word").to_string();
                add(
                    counts,
                    word,
                    v["count"].as_i64().expect("integer count"),
                    path,
                );
                rows += 1;
            }
        }
        OutputFormat::Parquet => {
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(data))
                .and_then(|b| b.build())
                .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                assert_eq!(batch.column(0).data_type(), &DataType::Utf8);
                assert_eq!(batch.column(1).data_type(), &DataType::Int64);
                let (w, c) = (
                    batch.column(0).as_string::<i32>(),
                    batch.column(1).as_primitive::<Int64Type>(),
                );
                for i in 0..batch.num_rows() {
                    add(counts, w.value(i).to_string(), c.value(i), path);
                }
                rows += batch.num_rows() as u64;
            }
        }
        f => panic!("{f:?} is not tested here"),
    }
    rows
}

/// Reads every file `_SUCCESS` lists with pyarrow; prints the counts, rows per part and (for
/// Parquet) the rows of each row group. pyarrow cannot read a 0-byte JSON file, which is a
/// valid empty JSON-lines part: such a part counts as no rows.
const PYARROW_READER: &str = r#"
import json, os, sys
import pyarrow as pa, pyarrow.csv as pc, pyarrow.json as pj, pyarrow.parquet as pq
out, fmt = sys.argv[1], sys.argv[2]
manifest = json.load(open(os.path.join(out, "_SUCCESS"), encoding="utf-8"))
schema = pa.schema([("word", pa.string()), ("count", pa.int64())])
counts, rows, groups = {}, {}, {}
for f in manifest["files"]:
    path = os.path.join(out, f["path"])
    if fmt == "csv":
        t = pc.read_csv(path, convert_options=pc.ConvertOptions(column_types=schema))
    elif fmt == "jsonl":
        if os.path.getsize(path) == 0:
            t = schema.empty_table()
        else:
            t = pj.read_json(path, parse_options=pj.ParseOptions(explicit_schema=schema))
    elif fmt == "parquet":
        pf = pq.ParquetFile(path)
        groups[f["path"]] = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
        t = pf.read()
    else:
        sys.exit("unknown format " + fmt)
    assert t.column_names == ["word", "count"], (path, t.column_names)
    assert t.schema.field("word").type == pa.string(), (path, t.schema)
    assert t.schema.field("count").type == pa.int64(), (path, t.schema)
    assert t.column("word").null_count == 0 and t.column("count").null_count == 0, path
    rows[f["path"]] = t.num_rows
    for w, c in zip(t.column("word").to_pylist(), t.column("count").to_pylist()):
        if w in counts:
            sys.exit("%r occurs twice; the second in %s" % (w, path))
        counts[w] = c
print(json.dumps({"counts": counts, "rows": rows, "groups": groups}))
"#;

/// What pyarrow read: counts, rows per part path, row-group sizes per Parquet part.
struct PyRead {
    counts: Counts,
    rows: BTreeMap<String, u64>,
    groups: BTreeMap<String, Vec<u64>>,
}

fn read_with_pyarrow(out: &Path, format: &str) -> PyRead {
    let python = support::python::python_with_pyarrow();
    let o = Command::new(&python)
        .args(["-c", PYARROW_READER, s(out), format])
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    assert!(
        o.status.success(),
        "pyarrow could not read the {format} output {}:\n{}",
        out.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let counts: HashMap<String, u64> = serde_json::from_value(v["counts"].clone()).unwrap();
    PyRead {
        counts,
        rows: serde_json::from_value(v["rows"].clone()).unwrap(),
        groups: serde_json::from_value(v["groups"].clone()).unwrap(),
    }
}

/// Checks one output three ways against `want`; returns what pyarrow read.
fn check_output(out: &Path, format: &str, want: &Counts) -> PyRead {
    let f = OutputFormat::parse(format).unwrap();
    let parts = manifest_parts(out, format);
    let mut independent = Counts::new();
    for (path, rows) in &parts {
        let got = read_part_independently(path, f, &mut independent);
        assert_eq!(got, *rows, "{}: rows vs manifest", path.display());
    }
    assert_counts_eq(&independent, want, &format!("{format}, read in Rust"));

    let mut by_sluice = Counts::new();
    for (w, c) in sluice_storage::read_key_counts(s(out), f).unwrap() {
        add(&mut by_sluice, w, c, out);
    }
    assert_counts_eq(
        &by_sluice,
        want,
        &format!("{format}, read by sluice-storage"),
    );

    let py = read_with_pyarrow(out, format);
    assert_counts_eq(&py.counts, want, &format!("{format}, read by pyarrow"));
    for (path, rows) in &parts {
        let name = path.file_name().unwrap().to_string_lossy();
        assert_eq!(
            py.rows.get(name.as_ref()),
            Some(rows),
            "pyarrow rows of {name}"
        );
    }
    py
}

/// CSV, JSON lines and Parquet outputs of one corpus all hold exactly the reference counts,
/// tricky words included, whichever of three readers reads them.
#[test]
fn csv_jsonl_and_parquet_round_trip_exactly() {
    let c = corpus("3MiB", 2);
    let want = reference_counts(&c.files);
    for w in [
        "a,b",
        "say\"hi\"",
        "back\\slash",
        "ünï",
        "\"",
        "{\"k\":1}",
        "null",
        "12",
    ] {
        assert!(want.contains_key(w), "the corpus lacks {w:?}");
    }
    assert_eq!(want["a,b"], 3);
    for format in ["csv", "jsonl", "parquet"] {
        let out = c.dir.join(format!("out-{format}"));
        run_wordcount(
            std::slice::from_ref(&c.dir.join("in")),
            &out,
            format,
            &["--reducers", "3"],
        );
        check_output(&out, format, &want);
    }
}

#[test]
fn csv_jsonl_and_parquet_outputs_are_read_back_by_a_sluice_job() {
    let c = corpus("1MiB", 2);
    let want = reference_counts(&c.files);
    let mut want_lines: Vec<String> = want.iter().map(|(w, n)| format!("{w}\t{n}")).collect();
    want_lines.sort();
    let faulty = example_binary(BIN, "faulty", "sluice-example-faulty");
    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    for format in ["csv", "jsonl", "parquet"] {
        let out = c.dir.join(format!("wc-{format}"));
        run_wordcount(
            std::slice::from_ref(&c.dir.join("in")),
            &out,
            format,
            &["--reducers", "3"],
        );
        let back = c.dir.join(format!("back-{format}"));
        let r = cluster.submit_binary(
            "sales",
            &faulty,
            &out,
            &back,
            &["--input-format", format, "--format", "tsv", "--wait"],
        );
        assert!(r.success(), "{format}: {}\n{}", r.stderr, cluster.logs());
        assert_eq!(
            sorted_part_lines(&back),
            want_lines,
            "{format} output read back by a Sluice job"
        );
    }
}

/// More reducers than words: the empty parts are still readable (a CSV part keeps its header
/// line; a JSON-lines part is empty).
#[test]
fn empty_parts_are_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("tricky.txt");
    std::fs::write(&input, TRICKY).unwrap();
    let want = reference_counts(&[&input]);
    for format in ["csv", "jsonl"] {
        let out = tmp.path().join(format!("out-{format}"));
        run_wordcount(
            std::slice::from_ref(&input),
            &out,
            format,
            &["--reducers", "64"],
        );
        let parts = manifest_parts(&out, format);
        assert_eq!(parts.len(), 64);
        assert!(parts.iter().any(|(_, rows)| *rows == 0), "no empty part");
        for (path, rows) in &parts {
            if *rows == 0 && format == "csv" {
                assert_eq!(std::fs::read(path).unwrap(), b"word,count\n");
            }
        }
        check_output(&out, format, &want);
    }
}

/// `--param sluice.parquet.row_group_rows=N` caps every row group at N rows (pyarrow reads the
/// file metadata); a value that is no row count is refused before anything is written.
#[test]
fn parquet_row_group_rows_is_configurable() {
    let c = corpus("1MiB", 1);
    let want = reference_counts(&c.files);
    let out = c.dir.join("out");
    let param = "sluice.parquet.row_group_rows=100";
    run_wordcount(
        &c.files,
        &out,
        "parquet",
        &["--reducers", "2", "--param", param],
    );
    let py = check_output(&out, "parquet", &want);
    assert_eq!(py.groups.len(), 2);
    for (part, groups) in &py.groups {
        let rows: u64 = groups.iter().sum();
        assert!(rows > 250, "{part}: only {rows} rows");
        assert_eq!(
            groups.len() as u64,
            rows.div_ceil(100),
            "{part}: {groups:?}"
        );
        assert!(groups.iter().all(|g| *g <= 100), "{part}: {groups:?}");
    }

    let refused = c.dir.join("refused");
    let r = sluice(
        BIN,
        &[
            "run",
            "wordcount",
            "--input",
            s(&c.files[0]),
            "--output",
            s(&refused),
            "--param",
            "sluice.parquet.row_group_rows=0",
        ],
    );
    assert!(!r.success(), "{}", r.stderr);
    assert!(
        r.stderr.contains("sluice.parquet.row_group_rows"),
        "{}",
        r.stderr
    );
    assert!(
        !refused.exists(),
        "a refused job wrote its output directory"
    );
}
