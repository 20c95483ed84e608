//! The ETL example job binaries (`csv-join`, `parquet-normalise`) on a real cluster: a
//! coordinator and two executors, plain `sluice` processes that do not link the examples.
//!
//! Inputs are generated here from a seeded generator that also keeps what it wrote in memory;
//! the expected output and counters are computed from that, in plain Rust, and compared with
//! every row of the committed Parquet output.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use sluice_testkit::{example_binary, path_str as s, read_manifest, sluice, Cluster, CmdOutput};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// The seeded generator, with the picks the generated inputs need.
struct Rng(sluice_core::rng::SplitMix);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.below(n)
    }

    /// True with probability `p` percent.
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A CSV field, quoted (quotes doubled) when it holds a comma or a quote.
fn csv_field(f: &str) -> String {
    if f.contains([',', '"']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

/// The status JSON a `--wait --json` submission to `cluster` printed, asserting that the
/// submission and the job succeeded.
#[track_caller]
fn succeeded_status(r: &CmdOutput, cluster: &Cluster) -> serde_json::Value {
    assert!(r.success(), "{}\n{}", r.stderr, cluster.logs());
    let st = r.stdout_json();
    assert_eq!(st["state"], "succeeded", "{st}");
    st
}

/// Asserts the counters of a job status: each named counter with its exact value.
#[track_caller]
fn assert_counters(st: &serde_json::Value, want: &[(&str, i64)]) {
    for (name, n) in want {
        assert_eq!(
            st["counters"][name].as_i64(),
            Some(*n),
            "counter {name}: {}",
            st["counters"]
        );
    }
}

/// The committed output files of `out`, as listed by its `_SUCCESS` manifest, read whole; also
/// checks that the manifest's row count is what the files hold.
fn read_output(out: &Path) -> Vec<(String, Vec<RecordBatch>)> {
    let manifest = read_manifest(out);
    assert_eq!(manifest["format"], "parquet", "{manifest}");
    let mut files = Vec::new();
    let mut rows = 0;
    for f in manifest["files"].as_array().expect("manifest files") {
        let name = f["path"].as_str().expect("file path").to_string();
        let file = File::open(out.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(f["rows"].as_u64(), Some(n as u64), "{name} in {manifest}");
        rows += n as u64;
        files.push((name, batches));
    }
    assert_eq!(manifest["rows"].as_u64(), Some(rows), "{manifest}");
    files
}

fn strings<'a>(b: &'a RecordBatch, name: &str) -> &'a StringArray {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", b.schema()))
        .as_string::<i32>()
}

fn int64s<'a>(b: &'a RecordBatch, name: &str) -> &'a Int64Array {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", b.schema()))
        .as_primitive::<Int64Type>()
}

fn float64s<'a>(b: &'a RecordBatch, name: &str) -> &'a Float64Array {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name} in {:?}", b.schema()))
        .as_primitive::<Float64Type>()
}

// ---------------------------------------------------------------------------------------------
// csv-join

/// A joined row: order_id, customer_id, name, country, amount_cents.
type Joined = (String, String, String, String, i64);

/// What the CSV generator wrote, as data: the well-formed records and the bad-record counts.
struct CsvData {
    /// Well-formed customers: (customer_id, name, country); an id may occur twice.
    customers: Vec<(String, String, String)>,
    /// Well-formed orders: (order_id, customer_id, amount_cents).
    orders: Vec<(String, String, i64)>,
    /// Malformed records in customers and orders files.
    bad: i64,
    /// Records of the file that is neither customers nor orders.
    unknown: i64,
}

impl CsvData {
    /// The inner join, and the number of well-formed orders without a customer.
    fn expected(&self) -> (Vec<Joined>, i64) {
        let mut by_id: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        for (id, name, country) in &self.customers {
            by_id.entry(id).or_default().push((name, country));
        }
        let mut rows = Vec::new();
        let mut orphans = 0;
        for (oid, cid, cents) in &self.orders {
            match by_id.get(cid.as_str()) {
                None => orphans += 1,
                Some(cs) => {
                    for (name, country) in cs {
                        rows.push((
                            oid.clone(),
                            cid.clone(),
                            name.to_string(),
                            country.to_string(),
                            *cents,
                        ));
                    }
                }
            }
        }
        rows.sort();
        (rows, orphans)
    }
}

/// Writes `customers.csv`, two `orders*.csv` files and a `notes.csv` under `dir`.
fn generate_csv(dir: &Path, seed: u64) -> CsvData {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(sluice_core::rng::SplitMix(seed));
    let first = [
        "Ann", "Bo", "Chen", "Dara", "Émile", "Fatima", "Gus", "Hiro", "Inês",
    ];
    let last = [
        "Smith", "O'Neil", "Nakamura", "García", "Ng", "Dubois", "Khan",
    ];
    let countries = ["NO", "SE", "DK", "FI", "JP", "BR", "CA"];
    let mut data = CsvData {
        customers: Vec::new(),
        orders: Vec::new(),
        bad: 0,
        unknown: 0,
    };

    let mut text = String::from("customer_id,name,country\n");
    let mut bad_ids = Vec::new();
    for i in 0..320u32 {
        let id = format!("C{i:05}");
        let (f, l) = (rng.pick(&first), rng.pick(&last));
        let name = match rng.below(3) {
            0 => format!("{f} {l}"),
            1 => format!("{l}, {f}"),
            _ => format!("{f} \"{}\" {l}", f.chars().next().unwrap_or('x')),
        };
        let country = rng.pick(&countries).to_string();
        if i % 29 == 7 {
            // Malformed: its id must not join, so its orders become orphans.
            let line = match i % 4 {
                0 => format!("{id},{l}, {f},{country}\n"), // unquoted comma: 4 fields
                1 => format!("{id},{}\n", csv_field(&name)),
                2 => format!("{id}\n"),
                _ => format!(",{},{country}\n", csv_field(&name)),
            };
            text.push_str(&line);
            data.bad += 1;
            bad_ids.push(id);
            continue;
        }
        text.push_str(&format!("{id},{},{country}\n", csv_field(&name)));
        data.customers.push((id, name, country));
    }
    // Two ids listed twice, with different rows: each of their orders joins both.
    for i in [3u32, 150] {
        let id = format!("C{i:05}");
        let name = format!("Second, Row {i}");
        text.push_str(&format!("{id},{},IS\n", csv_field(&name)));
        data.customers.push((id, name, "IS".into()));
    }
    std::fs::write(dir.join("customers.csv"), text).unwrap();

    let mut seq = 0u32;
    for (file, orders) in [("orders.csv", 2200u32), ("orders-2024-q2.csv", 1300)] {
        let mut text = String::from("order_id,customer_id,amount_cents\n");
        for _ in 0..orders {
            seq += 1;
            let oid = format!("O{seq:06}");
            let cid = match rng.below(100) {
                0..=2 => format!("C9{:04}", rng.below(10_000)), // no such customer
                3 => rng.pick(&bad_ids).clone(),
                _ => format!("C{:05}", rng.below(320)),
            };
            let cents = rng.below(500_000) as i64 - 5_000;
            if rng.percent(2) {
                let line = match rng.below(7) {
                    0 => format!("{oid},{cid},{}.50\n", cents / 100),
                    1 => format!("{oid},{cid},abc\n"),
                    2 => format!("{oid},{cid},\n"),
                    3 => format!("{oid},{cid},{cents},extra\n"),
                    4 => format!("{oid},{cid}\n"),
                    5 => format!(",{cid},{cents}\n"),
                    _ => format!("{oid},,{cents}\n"),
                };
                text.push_str(&line);
                data.bad += 1;
                continue;
            }
            if rng.percent(1) {
                text.push('\n'); // a blank line is no record at all
            }
            if rng.percent(3) {
                text.push_str(&format!("{oid} , {cid},  {cents} \n")); // fields are trimmed
            } else {
                text.push_str(&format!("{oid},{cid},{cents}\n"));
            }
            data.orders.push((oid, cid, cents));
        }
        std::fs::write(dir.join(file), text).unwrap();
    }

    let mut text = String::from("when,what\n");
    for i in 0..23 {
        text.push_str(&format!("2024-01-{:02},\"note {i}, unrelated\"\n", i + 1));
        data.unknown += 1;
    }
    std::fs::write(dir.join("notes.csv"), text).unwrap();
    data
}

/// Every row of a committed csv-join output, sorted.
fn read_joined(out: &Path) -> Vec<Joined> {
    let mut rows = Vec::new();
    for (_, batches) in read_output(out) {
        for b in &batches {
            let (oid, cid) = (strings(b, "order_id"), strings(b, "customer_id"));
            let (name, country) = (strings(b, "name"), strings(b, "country"));
            let cents = int64s(b, "amount_cents");
            for i in 0..b.num_rows() {
                rows.push((
                    oid.value(i).to_string(),
                    cid.value(i).to_string(),
                    name.value(i).to_string(),
                    country.value(i).to_string(),
                    cents.value(i),
                ));
            }
        }
    }
    rows.sort();
    rows
}

/// Panics with the first differences unless the joined rows are equal.
#[track_caller]
fn assert_joined_eq(got: &[Joined], want: &[Joined], what: &str) {
    if got == want {
        return;
    }
    let g: BTreeSet<&Joined> = got.iter().collect();
    let w: BTreeSet<&Joined> = want.iter().collect();
    let missing: Vec<_> = w.difference(&g).take(5).collect();
    let extra: Vec<_> = g.difference(&w).take(5).collect();
    panic!(
        "{what}: {} rows, want {}; missing {missing:?}; unexpected {extra:?}",
        got.len(),
        want.len()
    );
}

#[test]
fn csv_join_on_a_cluster_and_embedded() {
    let bin = example_binary(BIN, "csv-join", "sluice-example-csv-join");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("shop");
    let data = generate_csv(&input, 7);
    let (want, orphans) = data.expected();
    assert!(
        want.len() > 2500 && orphans > 50 && data.bad > 20,
        "generator"
    );
    let counters = [
        ("bad_records", data.bad),
        ("orphan_orders", orphans),
        ("unknown_file_records", data.unknown),
    ];

    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let out = tmp.path().join("joined");
    // No --input-format: the job's own default (CSV with header lines) applies.
    let r = cluster.submit_binary(
        "csv-join",
        &bin,
        &input,
        &out,
        &[
            "--split-size",
            "4KiB",
            "--reducers",
            "3",
            "--wait",
            "--json",
        ],
    );
    let st = succeeded_status(&r, &cluster);
    assert_counters(&st, &counters);
    let tasks = st["tasks"].as_array().expect("tasks");
    let maps = tasks
        .iter()
        .filter(|t| t["task_id"].as_str().is_some_and(|id| id.starts_with('m')))
        .count();
    assert!(
        maps >= 10,
        "the CSV files were cut into {maps} map tasks only: {st}"
    );
    let executors: BTreeSet<&str> = tasks
        .iter()
        .filter_map(|t| t["executor_id"].as_str())
        .collect();
    assert_eq!(executors.len(), 2, "both executors ran tasks: {st}");
    assert_joined_eq(&read_joined(&out), &want, "csv-join on the cluster");

    // The same job embedded: `csv-join run`, no cluster, other split size and reducers.
    let out = tmp.path().join("joined-embedded");
    let r = sluice(
        &bin,
        &[
            "run",
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--split-size",
            "16KiB",
            "--reducers",
            "2",
            "--executors",
            "2",
        ],
    );
    r.assert_success();
    let summary = r
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("counters:"))
        .unwrap_or_else(|| panic!("no counters in the summary:\n{}", r.stderr));
    for (name, n) in counters {
        assert!(
            summary
                .split_whitespace()
                .any(|c| c == format!("{name}={n}")),
            "{name}={n} not in {summary:?}"
        );
    }
    assert_joined_eq(&read_joined(&out), &want, "csv-join run embedded");
}

// ---------------------------------------------------------------------------------------------
// parquet-normalise

/// One generated reading: sensor name as written, timestamp, temperature in Fahrenheit.
type Reading = (Option<String>, i64, Option<f64>);

/// Writes `files` Parquet files of readings under `dir` (several row groups each) and returns
/// every reading written.
fn generate_parquet(dir: &Path, files: usize, seed: u64) -> Vec<Reading> {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(sluice_core::rng::SplitMix(seed));
    let messy = |rng: &mut Rng, base: &str| -> String {
        let name: String = base
            .chars()
            .map(|c| {
                if rng.percent(40) {
                    c.to_uppercase().next().unwrap_or(c)
                } else {
                    c
                }
            })
            .collect();
        let pad = ["", " ", "  ", "\t"];
        format!("{}{name}{}", rng.pick(&pad), rng.pick(&pad))
    };
    let bases = [
        "boiler", "attic", "garage", "pump-3", "cellar", "ünit-7", "roof",
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("sensor", DataType::Utf8, true),
        Field::new("ts", DataType::Int64, false),
        Field::new("temp_f", DataType::Float64, true),
        Field::new("note", DataType::Utf8, true), // ignored by the job
    ]));
    let per_file = 1500usize;
    let total = per_file * files;
    let mut all = Vec::new();
    for f in 0..files {
        let mut rows: Vec<Reading> = Vec::new();
        for i in 0..per_file {
            let global = (f * per_file + i) as i64;
            // Unique timestamps, in no file order: a permutation of the row numbers.
            let ts = 1_700_000_000_000 + ((global * 7919) % total as i64) * 1000;
            let (sensor, temp) = match (f, i) {
                (0, 0) => (Some(" Lonely ".to_string()), Some(70.5)), // one reading: z is 0
                (_, i) if i % 50 == 1 => (Some(messy(&mut rng, "flat")), Some(68.0)),
                (_, i) if i % 97 == 5 => (None, Some(60.0)), // no sensor: dropped
                _ => {
                    let base = rng.pick(&bases).to_string();
                    let temp = if rng.percent(6) {
                        None
                    } else {
                        Some(rng.below(8000) as f64 / 100.0 + 20.0)
                    };
                    (Some(messy(&mut rng, &base)), temp)
                }
            };
            rows.push((sensor, ts, temp));
        }
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
                )) as ArrayRef,
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(vec![Some("x"); rows.len()])),
            ],
        )
        .unwrap();
        let file = File::create(dir.join(format!("readings-{f}.parquet"))).unwrap();
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(400))
            .build();
        let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props)).unwrap();
        // Written in slices, so the job sees several batches per file.
        for start in (0..batch.num_rows()).step_by(600) {
            let len = 600.min(batch.num_rows() - start);
            w.write(&batch.slice(start, len)).unwrap();
        }
        w.close().unwrap();
        all.extend(rows);
    }
    all
}

/// A normalised output row: ts, temp_c, temp_z.
type Scored = (i64, f64, f64);

/// The expected output per normalised sensor (rows by ts), and the rows dropped for a null
/// temperature and for a null sensor.
fn expected_scores(readings: &[Reading]) -> (BTreeMap<String, Vec<Scored>>, i64, i64) {
    let (mut null_temp, mut null_sensor) = (0, 0);
    let mut by_sensor: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for (sensor, ts, temp_f) in readings {
        match (sensor, temp_f) {
            (_, None) => null_temp += 1,
            (None, Some(_)) => null_sensor += 1,
            (Some(name), Some(f)) => by_sensor
                .entry(name.trim().to_lowercase())
                .or_default()
                .push((*ts, (f - 32.0) * 5.0 / 9.0)),
        }
    }
    let mut out = BTreeMap::new();
    for (sensor, mut rows) in by_sensor {
        rows.sort_by_key(|r| r.0);
        let n = rows.len() as f64;
        let mean = rows.iter().map(|r| r.1).sum::<f64>() / n;
        let var = rows.iter().map(|r| (r.1 - mean).powi(2)).sum::<f64>() / n;
        let all_equal = rows.iter().all(|r| r.1 == rows[0].1);
        let scored = rows
            .iter()
            .map(|&(ts, c)| {
                let z = if all_equal {
                    0.0
                } else {
                    (c - mean) / var.sqrt()
                };
                (ts, c, z)
            })
            .collect();
        out.insert(sensor, scored);
    }
    (out, null_temp, null_sensor)
}

/// Reads a parquet-normalise output: rows per sensor in file order, checking that each sensor
/// lies in one file, in one contiguous run.
fn read_scores(out: &Path) -> BTreeMap<String, Vec<Scored>> {
    let mut got: BTreeMap<String, Vec<Scored>> = BTreeMap::new();
    for (file, batches) in read_output(out) {
        let mut last: Option<String> = None;
        for b in &batches {
            let (sensor, ts) = (strings(b, "sensor"), int64s(b, "ts"));
            let (temp_c, temp_z) = (float64s(b, "temp_c"), float64s(b, "temp_z"));
            for i in 0..b.num_rows() {
                let name = sensor.value(i).to_string();
                if last.as_deref() != Some(name.as_str()) {
                    assert!(
                        !got.contains_key(&name),
                        "sensor {name:?} appears in two runs (the second in {file})"
                    );
                    last = Some(name.clone());
                }
                got.entry(name)
                    .or_default()
                    .push((ts.value(i), temp_c.value(i), temp_z.value(i)));
            }
        }
    }
    got
}

#[test]
fn parquet_normalise_submitted_by_its_own_binary() {
    let bin = example_binary(BIN, "parquet-normalise", "sluice-example-parquet-normalise");
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("readings");
    let readings = generate_parquet(&input, 3, 11);
    let (want, null_temp, null_sensor) = expected_scores(&readings);
    assert!(
        null_temp > 100 && null_sensor > 0 && want.len() == 9,
        "generator: {want:?}"
    );

    let cluster = Cluster::start(BIN, 2, 1).expect("cluster starts");
    let out = tmp.path().join("normalised");
    // The job binary submits itself; no --input-format: the job's default (Parquet) applies.
    let r = sluice(
        &bin,
        &[
            "submit",
            "--coordinator",
            cluster.url(),
            "--input",
            s(&input),
            "--output",
            s(&out),
            "--reducers",
            "3",
            "--wait",
            "--json",
        ],
    );
    let st = succeeded_status(&r, &cluster);
    assert_eq!(st["job"], "parquet-normalise", "{st}");
    // Three small Parquet files (well under the 64 MiB split size) are combined into one split.
    assert_eq!(
        st["maps_total"].as_u64(),
        Some(1),
        "small files combined: {st}"
    );
    assert_counters(
        &st,
        &[
            ("dropped_null_temp", null_temp),
            ("dropped_null_sensor", null_sensor),
        ],
    );

    let got = read_scores(&out);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "sensors"
    );
    for (sensor, rows) in &want {
        let g = &got[sensor];
        assert_eq!(g.len(), rows.len(), "rows of {sensor}");
        for (i, (g, w)) in g.iter().zip(rows).enumerate() {
            assert_eq!(g.0, w.0, "{sensor} row {i}: ts (rows sorted by ts)");
            assert!(
                (g.1 - w.1).abs() < 1e-9,
                "{sensor} row {i}: temp_c {g:?} vs {w:?}"
            );
            assert!(
                (g.2 - w.2).abs() < 1e-9,
                "{sensor} row {i}: temp_z {g:?} vs {w:?}"
            );
        }
    }
    // The sensors whose z-scores are all 0 (standard deviation 0), and one with real spread.
    assert!(want["lonely"].iter().all(|r| r.2 == 0.0));
    assert!(want["flat"].len() > 10 && got["flat"].iter().all(|r| r.2 == 0.0));
    assert!(got["boiler"].iter().any(|r| r.2 > 1.0));
}
