//! `sluice run wordcount` end to end, embedded: exact counts against an independent reference.

use sluice_testkit::{
    assert_counts_eq, generate_text, part_files, path_str as s, read_manifest, read_tsv_counts,
    reference_counts, sluice, total, Counts,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// The `(word, count)` rows `--top` printed after its `top N:` header.
fn printed_top(stdout: &str) -> Vec<(String, u64)> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("top "))
        .skip(1)
        .map(|l| {
            let (c, w) = l.trim_start().split_once("  ").expect("`COUNT  WORD` line");
            (w.to_string(), c.parse().expect("count"))
        })
        .collect()
}

/// The `n` most frequent words, ties broken by the word, as `--top` orders them.
fn expected_top(counts: &Counts, n: usize) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = counts.iter().map(|(w, c)| (w.clone(), *c)).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    all
}

/// 256 MiB over 8 files, TSV output: every word's count and the total number of tokens match.
#[test]
fn wordcount_256mib_tsv_matches_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let out = tmp.path().join("out");
    let files = generate_text(BIN, &corpus, "256MiB", 8, 42);
    assert_eq!(files.len(), 8, "{files:?}");
    let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    assert!(bytes >= 256 << 20, "corpus is only {bytes} bytes");

    let r = sluice(
        BIN,
        &[
            "run",
            "wordcount",
            "--input",
            s(&corpus),
            "--output",
            s(&out),
            "--format",
            "tsv",
            "--executors",
            "2",
            "--top",
            "5",
        ],
    );
    r.assert_success();
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);

    let want = reference_counts(&files);
    let got = read_tsv_counts(&out);
    assert_counts_eq(&got, &want, "256 MiB word count");
    assert_eq!(total(&got), total(&want), "total tokens");
    assert!(want.len() > 1000, "reference has only {} words", want.len());

    // The manifest describes exactly the part files, and their rows are the distinct words.
    let m = read_manifest(&out);
    assert_eq!(m["job"], "wordcount");
    assert_eq!(m["format"], "tsv");
    assert_eq!(m["rows"].as_u64(), Some(want.len() as u64), "{m}");
    let listed: Vec<String> = m["files"]
        .as_array()
        .expect("files array")
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    let on_disk: Vec<String> = part_files(&out, "tsv")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        listed_sorted, on_disk,
        "manifest files vs part files on disk"
    );
    for f in m["files"].as_array().unwrap() {
        let p = out.join(f["path"].as_str().unwrap());
        assert_eq!(
            f["bytes"].as_u64(),
            Some(p.metadata().unwrap().len()),
            "{f}"
        );
    }
    assert!(!out.join("_temporary").exists(), "_temporary left behind");

    // `--top 5` prints the five most frequent words with their exact counts.
    assert_eq!(
        printed_top(&r.stdout),
        expected_top(&want, 5),
        "{}",
        r.stdout
    );
}

/// Default (Parquet) output: the manifest's row count is the number of distinct words.
#[test]
fn wordcount_parquet_manifest_rows_equal_distinct_words() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("corpus");
    let out = tmp.path().join("out");
    let files = generate_text(BIN, &corpus, "8MiB", 3, 7);
    let r = sluice(
        BIN,
        &[
            "run",
            "wordcount",
            "--input",
            s(&corpus),
            "--output",
            s(&out),
            "--executors",
            "2",
            "--split-size",
            "1MiB",
            "--reducers",
            "3",
            "--top",
            "3",
        ],
    );
    r.assert_success();
    let want = reference_counts(&files);
    let m = read_manifest(&out);
    assert_eq!(m["format"], "parquet", "{m}");
    assert_eq!(m["rows"].as_u64(), Some(want.len() as u64), "{m}");
    let files_m = m["files"].as_array().expect("files array");
    assert_eq!(files_m.len(), 3, "one part per reducer: {m}");
    let row_sum: u64 = files_m.iter().map(|f| f["rows"].as_u64().unwrap()).sum();
    assert_eq!(row_sum, want.len() as u64);
    for f in files_m {
        let name = f["path"].as_str().unwrap();
        assert!(
            name.starts_with("part-r-") && name.ends_with(".parquet"),
            "{name}"
        );
        let p = out.join(name);
        let head = std::fs::read(&p).unwrap();
        assert!(
            head.starts_with(b"PAR1") && head.ends_with(b"PAR1"),
            "{name} is not Parquet"
        );
        assert_eq!(f["bytes"].as_u64(), Some(head.len() as u64), "{f}");
    }
    assert_eq!(part_files(&out, "parquet").len(), 3);
    assert!(part_files(&out, "tsv").is_empty());
    // `--top 3` reads the Parquet parts back.
    assert_eq!(
        printed_top(&r.stdout),
        expected_top(&want, 3),
        "{}",
        r.stdout
    );
}

/// `file://` URIs are accepted for input and output (the storage layer strips them); the run,
/// including its `--top` read-back, succeeds and counts exactly.
#[test]
fn file_uri_input_and_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("words.txt");
    std::fs::write(&input, "to be or not to be\nthat is the question\n").unwrap();
    let out = tmp.path().join("out");
    let r = sluice(
        BIN,
        &[
            "run".to_string(),
            "wordcount".into(),
            "--input".into(),
            format!("file://{}", s(&input)),
            "--output".into(),
            format!("file://{}", s(&out)),
            "--format".into(),
            "tsv".into(),
            "--executors".into(),
            "2".into(),
            "--top".into(),
            "2".into(),
        ],
    );
    r.assert_success();
    let want = reference_counts(&[&input]);
    assert_counts_eq(&read_tsv_counts(&out), &want, "file:// paths");
    assert_eq!(
        printed_top(&r.stdout),
        expected_top(&want, 2),
        "stdout:\n{}\nstderr:\n{}",
        r.stdout,
        r.stderr
    );
}
