//! Bad input: each mistake is one `error: ...` line on stderr naming the offending thing, a
//! non-zero exit, no panic, and nothing written to the output directory.

use std::path::{Path, PathBuf};

use sluice_testkit::{
    assert_counts_eq, path_str as s, read_tsv_counts, reference_counts, sluice, snapshot_dir,
    CmdOutput,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A temp dir with a small input file `in/words.txt`, and where the output would go.
struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    input: PathBuf,
    out: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let input = root.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("words.txt"), "a b c\nb c\nc\n").unwrap();
    Setup {
        out: root.join("out"),
        _tmp: tmp,
        root,
        input,
    }
}

/// Asserts the one-line error contract and returns the line.
#[track_caller]
fn one_line_error(r: &CmdOutput) -> String {
    assert!(!r.success(), "`{}` succeeded:\n{}", r.cmdline, r.stderr);
    assert!(
        r.status.code().is_some(),
        "`{}` was killed by a signal",
        r.cmdline
    );
    for text in [&r.stderr, &r.stdout] {
        assert!(
            !text.contains("panicked") && !text.contains("RUST_BACKTRACE"),
            "`{}` panicked:\n{text}",
            r.cmdline
        );
    }
    let lines = r.stderr_lines();
    assert_eq!(
        lines.len(),
        1,
        "`{}` must print exactly one error line, got:\n{}",
        r.cmdline,
        r.stderr
    );
    assert!(
        lines[0].starts_with("error: "),
        "`{}`: {:?}",
        r.cmdline,
        lines[0]
    );
    lines[0].to_string()
}

fn run(args: &[&str]) -> CmdOutput {
    let mut all = vec!["run", "wordcount"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--executors", "2", "--top", "0"]);
    sluice(BIN, &all)
}

#[test]
fn missing_input_path() {
    let t = setup();
    let missing = t.root.join("no-such-input.txt");
    let r = run(&["--input", s(&missing), "--output", s(&t.out)]);
    let line = one_line_error(&r);
    assert!(line.contains(s(&missing)), "{line}");
    assert!(line.contains("does not exist"), "{line}");
    assert!(!t.out.exists(), "output created for a failed job");
}

#[test]
fn missing_input_among_good_ones() {
    let t = setup();
    let missing = t.root.join("nope").join("*.txt");
    let r = run(&[
        "--input",
        s(&t.input),
        "--input",
        s(&missing),
        "--output",
        s(&t.out),
    ]);
    let line = one_line_error(&r);
    assert!(line.contains(s(&missing)), "{line}");
    assert!(!t.out.exists(), "output created for a failed job");
}

#[test]
fn input_directory_without_files() {
    let t = setup();
    let empty = t.root.join("empty-dir");
    std::fs::create_dir_all(empty.join("sub")).unwrap();
    // Only hidden files: the engine skips them, so the directory holds no input.
    std::fs::write(empty.join("_SUCCESS"), "").unwrap();
    std::fs::write(empty.join(".hidden"), "x y").unwrap();
    let r = run(&["--input", s(&empty), "--output", s(&t.out)]);
    let line = one_line_error(&r);
    assert!(line.contains(s(&empty)), "{line}");
    assert!(line.contains("no files"), "{line}");
    assert!(!t.out.exists(), "output created for a failed job");
}

#[test]
fn output_already_committed_needs_overwrite() {
    let t = setup();
    let args = [
        "--input",
        s(&t.input),
        "--output",
        s(&t.out),
        "--format",
        "tsv",
    ];
    run(&args).assert_success();
    let before = snapshot_dir(&t.out);
    assert!(before.contains_key(Path::new("_SUCCESS")));

    let r = run(&args);
    let line = one_line_error(&r);
    assert!(line.contains("--overwrite"), "{line}");
    assert!(line.contains(s(&t.out)), "{line}");
    assert_eq!(snapshot_dir(&t.out), before, "committed output changed");

    // A different input with --overwrite replaces the output entirely.
    let other = t.root.join("other.txt");
    std::fs::write(&other, "x y x\n").unwrap();
    let mut over = vec![
        "--input",
        s(&other),
        "--output",
        s(&t.out),
        "--format",
        "tsv",
    ];
    over.push("--overwrite");
    run(&over).assert_success();
    assert_counts_eq(
        &read_tsv_counts(&t.out),
        &reference_counts(&[&other]),
        "after --overwrite",
    );
    assert_ne!(snapshot_dir(&t.out), before);
}

#[test]
fn coordinator_unreachable() {
    let t = setup();
    let r = sluice(
        BIN,
        &[
            "submit",
            "wordcount",
            "--coordinator",
            "http://127.0.0.1:1",
            "--input",
            s(&t.input),
            "--output",
            s(&t.out),
            "--reducers",
            "4",
            "--format",
            "tsv",
            "--wait",
            "--json",
        ],
    );
    let line = one_line_error(&r);
    assert!(line.contains("127.0.0.1:1"), "{line}");
    assert!(r.stdout.trim().is_empty(), "stdout: {}", r.stdout);
    assert!(!t.out.exists(), "output created for a failed job");
}

#[test]
fn unknown_job_name() {
    let t = setup();
    let r = sluice(
        BIN,
        &[
            "run",
            "nosuchjob",
            "--input",
            s(&t.input),
            "--output",
            s(&t.out),
            "--executors",
            "2",
        ],
    );
    let line = one_line_error(&r);
    assert!(line.contains("nosuchjob"), "{line}");
    assert!(line.contains("wordcount"), "should list known jobs: {line}");
    assert!(!t.out.exists(), "output created for a failed job");
}

#[test]
fn malformed_split_size() {
    let t = setup();
    for bad in ["abc", "0", "12XB", "-5MiB"] {
        let r = run(&[
            "--input",
            s(&t.input),
            "--output",
            s(&t.out),
            &format!("--split-size={bad}"),
        ]);
        let line = one_line_error(&r);
        assert!(line.contains(&format!("'{bad}'")), "{line}");
        assert!(line.contains("--split-size"), "{line}");
        assert_eq!(r.status.code(), Some(2), "usage errors exit 2: {line}");
        assert!(!t.out.exists(), "output created for a failed job");
    }
}

#[test]
fn other_bad_flags() {
    let t = setup();
    let cases: [(&[&str], &str); 3] = [
        (&["--format", "xml"], "xml"),
        (&["--reducers", "0"], "--reducers"),
        (&["--slots", "0"], "--slots"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["--input", s(&t.input), "--output", s(&t.out)];
        args.extend_from_slice(extra);
        let r = run(&args);
        let line = one_line_error(&r);
        assert!(line.contains(needle), "{extra:?}: {line}");
        assert!(
            !t.out.exists(),
            "{extra:?}: output created for a failed job"
        );
    }
}

/// Input that is not UTF-8 fails the job at run time; the error names the file and the offset.
///
/// Run-time failures also print the job summary (and the embedded daemons' warnings) on stderr,
/// so only the `error:` line itself is checked to be unique and last.
#[test]
fn invalid_utf8_input() {
    let t = setup();
    let bad = t.input.join("bad.txt");
    std::fs::write(&bad, b"fine words\nbad \xff byte\nmore\n").unwrap();
    let r = run(&[
        "--input",
        s(&bad),
        "--output",
        s(&t.out),
        "--split-size",
        "8",
    ]);
    assert!(!r.success(), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", r.stderr);
    assert_eq!(
        Some(errors[0]),
        r.stderr_lines().last().copied(),
        "{}",
        r.stderr
    );
    assert!(errors[0].contains(s(&bad)), "{}", errors[0]);
    assert!(errors[0].contains("byte offset 15"), "{}", errors[0]);
    assert!(!t.out.exists(), "output left behind by a failed job");
}
