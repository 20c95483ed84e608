//! Property tests of splitting: for every splittable format (text lines, JSON lines, CSV), random
//! files cut at random split sizes are planned with the real `plan_splits` /
//! `whole_file_splits`, read with the real `read_split`, and decoded with the udf crate's
//! `MapInput` as a worker's map task does (`crates/worker/src/tasks.rs::run_map`). Every record
//! of every file must come out exactly once: nothing lost, nothing read twice, a CSV header
//! skipped exactly once per file, and a quoted CSV field holding a newline never cut in two.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use proptest::prelude::*;
use sluice_core::{InputFormat, Split};
use sluice_storage::{
    list_inputs, plan_splits, read_split, whole_file_splits, Compression, InputFile,
};
use sluice_udf::{Input, MapInput, TaskContext, CSV_FLEXIBLE_PARAM};

/// Cases per property: enough to meet the edge cases often, few enough for 2 cores.
const CASES: u32 = 64;

/// The coordinator's planning of line-based input at submit (`Coordinator::submit`): CSV is
/// read a whole file per split unless the job promises that no record holds a newline
/// (`sluice.csv.multiline=false`); text and JSON lines are cut at lines. `combine` lets a test
/// also plan without small-file combining (the coordinator always combines where allowed).
fn plan(
    files: &[InputFile],
    format: InputFormat,
    split_size: u64,
    combine: bool,
    csv_multiline: bool,
) -> Vec<Split> {
    match format {
        InputFormat::Csv { .. } if csv_multiline => whole_file_splits(files),
        InputFormat::Csv { header } => plan_splits(files, split_size, combine && !header),
        InputFormat::Text | InputFormat::Jsonl => plan_splits(files, split_size, combine),
        InputFormat::Parquet | InputFormat::Arrow => unreachable!("not a line-based format"),
    }
}

/// One generated input file: its (uncompressed) text, and whether it is stored gzipped.
#[derive(Debug, Clone)]
struct GenFile {
    text: String,
    gzip: bool,
}

/// Writes the files under `dir` (gzip-compressed where asked) and lists them as the coordinator
/// does; returns the listing and each file's text by path.
fn write_files(
    dir: &Path,
    files: &[GenFile],
    ext: &str,
) -> (Vec<InputFile>, BTreeMap<String, String>) {
    let mut texts = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        let name = if f.gzip {
            format!("f{i:02}.{ext}.gz")
        } else {
            format!("f{i:02}.{ext}")
        };
        let path = dir.join(name);
        let bytes = if f.gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(f.text.as_bytes()).unwrap();
            e.finish().unwrap()
        } else {
            f.text.clone().into_bytes()
        };
        std::fs::write(&path, &bytes).unwrap();
        texts.insert(path.to_string_lossy().into_owned(), f.text.clone());
    }
    let listed = list_inputs(&[dir.to_string_lossy().into_owned()]).unwrap();
    assert_eq!(listed.len(), files.len());
    (listed, texts)
}

/// Reads every split as a map task does and hands each split's decoded input to `decode`;
/// checks on the way that the splits hold every byte of every file exactly once (a combined
/// split: each of its files whole, a newline added where one lacks it; byte-range splits of
/// one file: the file when put together in plan order) and returns, per file, how many splits
/// start it (offset 0), which is where a CSV header is skipped.
fn read_all(
    splits: &[Split],
    texts: &BTreeMap<String, String>,
    format: InputFormat,
    mut decode: impl FnMut(MapInput<'_>),
) -> BTreeMap<String, usize> {
    let mut buf = Vec::new();
    let mut pieces: BTreeMap<String, String> = BTreeMap::new();
    let mut starts: BTreeMap<String, usize> = BTreeMap::new();
    for s in splits {
        let got = read_split(s, &mut buf).unwrap();
        if s.rest.is_empty() {
            pieces.entry(s.path.clone()).or_default().push_str(got.text);
            if got.offset == 0 && !got.text.is_empty() {
                *starts.entry(s.path.clone()).or_default() += 1;
            }
        } else {
            let mut want = String::new();
            for p in std::iter::once(s).chain(&s.rest) {
                assert_eq!(
                    (p.start, p.end),
                    (0, p.file_len),
                    "a combined file is read whole"
                );
                let t = &texts[&p.path];
                want.push_str(t);
                if !t.ends_with('\n') {
                    want.push('\n');
                }
                assert!(
                    pieces.insert(p.path.clone(), t.clone()).is_none(),
                    "{} is read twice",
                    p.path
                );
                *starts.entry(p.path.clone()).or_default() += 1;
            }
            assert_eq!(got.text, want, "combined split {s:?}");
        }
        decode(MapInput::text(got.text, format, got.offset));
    }
    for (path, text) in texts {
        // An empty file has no split, unless compressed (then its one split reads nothing).
        let got = pieces.get(path).map_or("", String::as_str);
        assert_eq!(
            got, text,
            "{path}: the splits do not put the file together exactly"
        );
        if Compression::of(path).is_some() {
            assert_eq!(
                splits.iter().filter(|s| &s.path == path).count(),
                1,
                "a compressed file is one split"
            );
        }
    }
    starts
}

/// Joins lines with their terminators (`\r\n` where `crlf`), leaving the last one without
/// unless `trailing`.
fn join_lines(lines: &[(String, bool)], trailing: bool) -> String {
    let mut text = String::new();
    for (i, (line, crlf)) in lines.iter().enumerate() {
        text.push_str(line);
        if i + 1 < lines.len() || trailing {
            text.push_str(if *crlf { "\r\n" } else { "\n" });
        }
    }
    text
}

/// Random line text: short lines with multi-byte UTF-8, empty lines and long ones.
fn line_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z é日🦀,;\"\t]{0,10}",
        1 => Just(String::new()),
        1 => "[a-zé ]{40,160}",
    ]
}

/// Split sizes from one byte to several times the files.
fn split_size() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..8, 8u64..80, 80u64..600, 600u64..20_000]
}

/// Random text files: lines with LF or CRLF, with or without a final newline, some gzipped.
fn text_files() -> impl Strategy<Value = Vec<GenFile>> {
    let file = (
        prop::collection::vec((line_text(), any::<bool>()), 0..24),
        any::<bool>(),
        prop::bool::weighted(0.15),
    )
        .prop_map(|(lines, trailing, gzip)| GenFile {
            text: join_lines(&lines, trailing),
            gzip,
        });
    prop::collection::vec(file, 1..5)
}

/// Sorted, for multiset comparison.
fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        // A failure prints its minimal input; no regression file is left in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Text input: every line of every file is read exactly once as a `str` record, with or
    /// without small-file combining.
    #[test]
    fn text_lines_are_read_exactly_once(
        files in text_files(),
        size in split_size(),
        combine in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (listed, texts) = write_files(dir.path(), &files, "txt");
        let splits = plan(&listed, InputFormat::Text, size, combine, true);
        let mut got = Vec::new();
        read_all(&splits, &texts, InputFormat::Text, |input| {
            <str as Input>::for_each_record(input, &TaskContext::default(), |l: &str| {
                got.push(l.to_string())
            })
            .unwrap();
        });
        let want: Vec<String> = texts.values().flat_map(|t| t.lines().map(String::from)).collect();
        prop_assert_eq!(sorted(got), sorted(want));
    }

    /// JSON lines: every object of every file is decoded exactly once; blank lines (LF or
    /// CRLF) are no records.
    #[test]
    fn json_lines_are_read_exactly_once(
        files in prop::collection::vec(
            (
                prop::collection::vec(
                    (
                        prop::option::weighted(0.8, (any::<u32>(), "[a-z é日🦀\"\\\\\n\t,{}]{0,12}")),
                        any::<bool>(),
                    ),
                    0..20,
                ),
                any::<bool>(),
                prop::bool::weighted(0.15),
            ),
            1..5,
        ),
        size in split_size(),
        combine in any::<bool>(),
    ) {
        let mut want = Vec::new();
        let files: Vec<GenFile> = files
            .into_iter()
            .map(|(lines, trailing, gzip)| {
                let lines: Vec<(String, bool)> = lines
                    .into_iter()
                    .map(|(rec, crlf)| match rec {
                        Some((id, s)) => {
                            let v = serde_json::json!({ "id": id, "s": s });
                            want.push(v.to_string());
                            (v.to_string(), crlf)
                        }
                        // A blank line, empty or of spaces: no record.
                        None => (if crlf { "  ".into() } else { String::new() }, crlf),
                    })
                    .collect();
                GenFile { text: join_lines(&lines, trailing), gzip }
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let (listed, texts) = write_files(dir.path(), &files, "jsonl");
        let splits = plan(&listed, InputFormat::Jsonl, size, combine, true);
        let mut got = Vec::new();
        read_all(&splits, &texts, InputFormat::Jsonl, |input| {
            serde_json::Value::for_each_record(input, &TaskContext::default(), |v| {
                got.push(v.to_string())
            })
            .unwrap();
        });
        prop_assert_eq!(sorted(got), sorted(want));
    }

    /// CSV whose records hold no newline, split at lines (`sluice.csv.multiline=false`) and as
    /// whole files (the default): every record is read exactly once with its field values, and
    /// a header is skipped exactly once per file.
    #[test]
    fn csv_lines_are_read_exactly_once(
        files in csv_files(false),
        size in split_size(),
        header in any::<bool>(),
        combine in any::<bool>(),
        multiline in any::<bool>(),
    ) {
        check_csv(&files, size, header, combine, multiline)?;
    }

    /// CSV whose quoted fields hold newlines (LF and CRLF), commas and doubled quotes, planned
    /// by the default rule (whole files): at every split size every record is read exactly
    /// once, decoded to the field values written.
    #[test]
    fn csv_quoted_newlines_are_never_cut(
        files in csv_files(true),
        size in split_size(),
        header in any::<bool>(),
    ) {
        check_csv(&files, size, header, true, true)?;
    }
}

/// One generated CSV file: its records (the header first where there is one), how each
/// record ends, whether the file ends with a newline, and whether it is gzipped.
type CsvFile = (Vec<(Vec<String>, bool)>, bool, bool);

/// Random CSV files; `newlines` lets quoted fields hold `\n` and `\r\n`.
fn csv_files(newlines: bool) -> impl Strategy<Value = Vec<CsvFile>> {
    let field = if newlines {
        prop_oneof![
            3 => "[a-z é日🦀,\" ]{0,8}",
            1 => "[a-z,\"]{0,3}(\n|\r\n)[a-zé,\"\n]{0,4}",
            1 => Just(String::new()),
        ]
        .boxed()
    } else {
        prop_oneof![
            4 => "[a-z é日🦀,\" ]{0,8}",
            1 => Just(String::new()),
            1 => "[a-z]{30,90}",
        ]
        .boxed()
    };
    let record = (prop::collection::vec(field, 1..4), any::<bool>());
    let file = (
        prop::collection::vec(record, 1..16),
        any::<bool>(),
        prop::bool::weighted(0.15),
    );
    prop::collection::vec(file, 1..5)
}

/// One CSV record's text: fields that need it (or at random, by `quote_all`) are quoted, their
/// quotes doubled; a record of one empty field is written `""` so that it is no blank line.
fn csv_record(fields: &[String], quote_all: bool) -> String {
    fields
        .iter()
        .map(|f| {
            let needs = f.contains([',', '"', '\n', '\r']) || (fields.len() == 1 && f.is_empty());
            if needs || quote_all {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Writes the CSV files (the first record of each is a header when `header`), plans them as the
/// coordinator does and checks that the records read are exactly the data records written.
fn check_csv(
    files: &[CsvFile],
    size: u64,
    header: bool,
    combine: bool,
    multiline: bool,
) -> Result<(), TestCaseError> {
    let mut want = Vec::new();
    let gen: Vec<GenFile> = files
        .iter()
        .map(|(records, trailing, gzip)| {
            let lines: Vec<(String, bool)> = records
                .iter()
                .enumerate()
                .map(|(i, (fields, crlf))| (csv_record(fields, i % 3 == 2), *crlf))
                .collect();
            let skip = usize::from(header);
            want.extend(records.iter().skip(skip).map(|(f, _)| f.clone()));
            GenFile {
                text: join_lines(&lines, *trailing),
                gzip: *gzip,
            }
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (listed, texts) = write_files(dir.path(), &gen, "csv");
    let format = InputFormat::Csv { header };
    let splits = plan(&listed, format, size, combine, multiline);
    let mut got: Vec<Vec<String>> = Vec::new();
    let starts = read_all(&splits, &texts, format, |input| {
        // Random records have any number of fields.
        let ctx = TaskContext::default().with_param(CSV_FLEXIBLE_PARAM, "true");
        Vec::<String>::for_each_record(input, &ctx, |r| got.push(r.clone())).unwrap();
    });
    if header {
        // Every file holds its header; exactly one split reads it from offset 0, whole.
        for path in texts.keys() {
            prop_assert_eq!(starts.get(path), Some(&1), "{}", path);
        }
        prop_assert!(splits.iter().all(|s| s.rest.is_empty()));
    }
    prop_assert_eq!(sorted(got), sorted(want));
    Ok(())
}

/// Every split size from one byte to past the file, on a file of records with quoted newlines
/// (LF and CRLF), commas, doubled quotes and multi-byte text: planned by the default rule,
/// every record comes out once with its exact field values, and the header once per file. The
/// same file cut at lines (what a job that wrongly promises no newlines gets) would lose
/// records, which is why CSV is read a whole file per split.
#[test]
fn quoted_newlines_at_every_split_size() {
    let text = "id,\"multi\nline header\",note\r\n\
                1,\"two\nlines\",plain\n\
                2,\"crlf\r\ninside, and \"\"quotes\"\"\",\"日本\n語\"\r\n\
                3,,\"\"\"\n\"\"\"\n\
                \n\
                4,\"ends with newline\n\",🦀";
    let want: Vec<Vec<String>> = vec![
        vec!["1".into(), "two\nlines".into(), "plain".into()],
        vec![
            "2".into(),
            "crlf\r\ninside, and \"quotes\"".into(),
            "日本\n語".into(),
        ],
        vec!["3".into(), String::new(), "\"\n\"".into()],
        vec!["4".into(), "ends with newline\n".into(), "🦀".into()],
    ];
    let dir = tempfile::tempdir().unwrap();
    let files = [
        GenFile {
            text: text.to_string(),
            gzip: false,
        },
        GenFile {
            text: text.replace("id,", "id2,"),
            gzip: false,
        },
    ];
    let (listed, texts) = write_files(dir.path(), &files, "csv");
    let format = InputFormat::Csv { header: true };
    let mut cut_loses_records = false;
    for size in 1..=text.len() as u64 + 2 {
        for multiline in [true, false] {
            let splits = plan(&listed, format, size, true, multiline);
            let mut got: Vec<Vec<String>> = Vec::new();
            let mut failed = false;
            read_all(&splits, &texts, format, |input| {
                let r = Vec::<String>::for_each_record(input, &TaskContext::default(), |r| {
                    got.push(r.clone())
                });
                failed |= r.is_err();
            });
            let ok = !failed && sorted(got) == sorted([want.clone(), want.clone()].concat());
            if multiline {
                assert!(ok, "split size {size}: records lost, cut or read twice");
                assert_eq!(splits.len(), 2, "one split per CSV file");
            } else {
                cut_loses_records |= !ok;
            }
        }
    }
    assert!(
        cut_loses_records,
        "line-aligned splits cut a quoted newline somewhere"
    );
}
