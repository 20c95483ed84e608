//! Test helpers for Sluice: process clusters on loopback, corpora and reference results.
//!
//! Nothing here links the engine: results are computed independently of it (word counts with
//! `str::split_whitespace`) and the engine is driven only through its `sluice` binary, whose
//! path the caller passes in (from `env!("CARGO_BIN_EXE_sluice")`).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a single `sluice` command may run before [`sluice`] kills it and panics.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// How long a daemon may take to print its first line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the helpers that start processes.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// An I/O error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A daemon did not come up as expected; the message holds its log.
    #[error("{0}")]
    Startup(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestkitError {
    let what = what.into();
    move |source| TestkitError::Io { what, source }
}

/// `p` as a `&str`, for command lines; panics unless it is UTF-8 (temp paths are).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// The example job binary `name` beside the `sluice` binary at `sluice_bin` (where
/// `cargo test --workspace` builds it, through the example's own test); built here with
/// `cargo build -p PACKAGE` (`--release` in a release target directory) when it is missing.
pub fn example_binary(sluice_bin: impl AsRef<Path>, name: &str, package: &str) -> PathBuf {
    let dir = sluice_bin.as_ref().parent().expect("target directory");
    let path = dir.join(name);
    if !path.exists() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", package]).current_dir(&root);
        if dir.file_name().is_some_and(|d| d == "release") {
            cmd.arg("--release");
        }
        let ok = cmd.status().expect("run cargo build");
        assert!(ok.success(), "building {package} failed");
    }
    assert!(
        path.exists(),
        "no {} after building {package}",
        path.display()
    );
    path
}

/// Live worker processes (command line holding `--sluice-worker`) on this machine, from
/// `/proc`: pid, command line (NUL-separated, lossy UTF-8) and the `/proc/PID` directory.
fn worker_processes() -> impl Iterator<Item = (u32, String, PathBuf)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).into_owned();
            cmd.contains("--sluice-worker")
                .then(|| (pid, cmd, e.path()))
        })
}

/// PIDs of live worker processes whose command line names `dir` (started from a binary under
/// it, e.g. a [`Cluster::dir`]).
pub fn workers_under(dir: impl AsRef<Path>) -> Vec<u32> {
    let dir = path_str(dir.as_ref());
    worker_processes()
        .filter(|(_, cmd, _)| cmd.contains(dir))
        .map(|(pid, _, _)| pid)
        .collect()
}

/// PIDs of live worker processes whose parent is process `parent` (an executor).
pub fn workers_of(parent: u32) -> Vec<u32> {
    worker_processes()
        .filter_map(|(pid, _, proc_dir)| {
            let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
            // `PID (COMM) STATE PPID ...`; COMM may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            (ppid.parse::<u32>().ok()? == parent).then_some(pid)
        })
        .collect()
}

/// Word counts: word to number of occurrences.
pub type Counts = HashMap<String, u64>;

/// Adds every `str::split_whitespace` token of `text` to `counts`.
pub fn count_text(text: &str, counts: &mut Counts) {
    for tok in text.split_whitespace() {
        match counts.get_mut(tok) {
            Some(c) => *c += 1,
            None => {
                counts.insert(tok.to_string(), 1);
            }
        }
    }
}

/// An independent word count: `str::split_whitespace` over each whole file read as UTF-8.
pub fn reference_counts<P: AsRef<Path>>(paths: &[P]) -> Counts {
    let mut counts = Counts::new();
    for p in paths {
        let p = p.as_ref();
        let text = std::fs::read_to_string(p)
            .unwrap_or_else(|e| panic!("reading reference input {}: {e}", p.display()));
        count_text(&text, &mut counts);
    }
    counts
}

/// The sum of all counts, i.e. the number of tokens.
pub fn total(counts: &Counts) -> u64 {
    counts.values().sum()
}

/// Reads every `part-*.tsv` file of an output directory; panics on a malformed line or on a
/// word that occurs twice (in one file or across files).
pub fn read_tsv_counts(output_dir: impl AsRef<Path>) -> Counts {
    let dir = output_dir.as_ref();
    let mut counts = Counts::new();
    let mut seen_in: HashMap<String, PathBuf> = HashMap::new();
    for path in part_files(dir, "tsv") {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if !text.is_empty() {
            assert!(
                text.ends_with('\n'),
                "{} does not end with a newline",
                path.display()
            );
        }
        for (i, line) in text.split_terminator('\n').enumerate() {
            let (word, count) = line
                .rsplit_once('\t')
                .unwrap_or_else(|| panic!("{} line {}: no tab in {line:?}", path.display(), i + 1));
            let count: u64 = count.parse().unwrap_or_else(|e| {
                panic!(
                    "{} line {}: count {count:?} is not a number: {e}",
                    path.display(),
                    i + 1
                )
            });
            if let Some(first) = seen_in.insert(word.to_string(), path.clone()) {
                panic!(
                    "word {word:?} appears twice: in {} and in {} (line {})",
                    first.display(),
                    path.display(),
                    i + 1
                );
            }
            counts.insert(word.to_string(), count);
        }
    }
    counts
}

/// The files named `part-*.EXT` in `dir`, sorted.
pub fn part_files(dir: impl AsRef<Path>, ext: &str) -> Vec<PathBuf> {
    let dir = dir.as_ref();
    let suffix = format!(".{ext}");
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing output {}: {e}", dir.display()))
        .map(|e| e.expect("reading output directory entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("part-") && n.ends_with(&suffix))
        })
        .collect();
    out.sort();
    out
}

/// Every line of the files named `part-*` in `dir` (any extension), sorted.
pub fn sorted_part_lines(dir: impl AsRef<Path>) -> Vec<String> {
    let dir = dir.as_ref();
    let mut lines: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing output {}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("part-"))
        .flat_map(|e| {
            let p = e.path();
            std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    lines
}

/// Parses the JSON manifest held by `OUTPUT/_SUCCESS`.
pub fn read_manifest(output_dir: impl AsRef<Path>) -> serde_json::Value {
    let p = output_dir.as_ref().join("_SUCCESS");
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", p.display()))
}

/// The part files under `out` (not `_SUCCESS`, `_bad_records/` or hidden files), relative.
pub fn files_on_disk(out: &Path) -> std::collections::BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, acc: &mut std::collections::BTreeSet<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('_') || name.starts_with('.') {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, acc);
            } else {
                acc.insert(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut acc = std::collections::BTreeSet::new();
    walk(out, out, &mut acc);
    acc
}

/// `_SUCCESS` lists every part file once, and nothing else is there.
pub fn assert_manifest_exact(out: &Path, context: &str) {
    let m = read_manifest(out);
    let listed: Vec<String> = m["files"]
        .as_array()
        .unwrap_or_else(|| panic!("{context}: manifest without files: {m}"))
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    let unique: std::collections::BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "{context}: duplicates in {listed:?}"
    );
    assert_eq!(
        unique,
        files_on_disk(out),
        "{context}: manifest vs files on disk"
    );
}

/// The rows of a Parquet file as JSON objects (a `_bad_records/` file, say).
pub fn read_parquet_rows(path: impl AsRef<Path>) -> Vec<serde_json::Value> {
    let p = path.as_ref();
    let f = File::open(p).unwrap_or_else(|e| panic!("opening {}: {e}", p.display()));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.build())
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    let mut w = arrow_json::ArrayWriter::new(Vec::new());
    for b in reader {
        let b = b.unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
        w.write(&b)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
    w.finish()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let bytes = w.into_inner();
    if bytes.is_empty() {
        return Vec::new();
    }
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every row of the `_bad_records/` files under `output_dir` (file, offset, error, record).
pub fn read_bad_records(output_dir: impl AsRef<Path>) -> Vec<serde_json::Value> {
    let dir = output_dir.as_ref().join("_bad_records");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files.iter().flat_map(read_parquet_rows).collect()
}

/// Up to `max` human-readable differences between two count maps (empty when equal).
pub fn count_diff(got: &Counts, want: &Counts, max: usize) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut words: Vec<&String> = want.keys().chain(got.keys()).collect();
    words.sort();
    words.dedup();
    for w in words {
        let (g, e) = (got.get(w), want.get(w));
        if g != e {
            diffs.push(format!("{w:?}: got {g:?}, want {e:?}"));
            if diffs.len() >= max {
                break;
            }
        }
    }
    diffs
}

/// Panics with the first differences (and the totals) unless `got == want`.
#[track_caller]
pub fn assert_counts_eq(got: &Counts, want: &Counts, context: &str) {
    if got != want {
        let diffs = count_diff(got, want, 20);
        panic!(
            "{context}: counts differ: {} vs {} distinct words, {} vs {} tokens (got vs want); first differences:\n  {}",
            got.len(),
            want.len(),
            total(got),
            total(want),
            diffs.join("\n  ")
        );
    }
}

/// Input files under `dir` as the engine lists them: recursive, sorted, skipping names that
/// start with `_` or `.`.
pub fn list_input_files(dir: impl AsRef<Path>) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
            .map(|e| e.expect("reading directory entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('_') || n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir.as_ref(), &mut out);
    out
}

/// A snapshot of a directory tree: relative path to file contents (`None` for directories).
pub fn snapshot_dir(dir: impl AsRef<Path>) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        {
            let p = e.expect("reading directory entry").path();
            let rel = p
                .strip_prefix(root)
                .expect("entry under root")
                .to_path_buf();
            if p.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                let bytes =
                    std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
                out.insert(rel, Some(bytes));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir.as_ref(), dir.as_ref(), &mut out);
    out
}

/// What a finished `sluice` command printed, and how it exited.
#[derive(Debug)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl CmdOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics, showing the output, unless the command succeeded.
    #[track_caller]
    pub fn assert_success(&self) -> &Self {
        assert!(
            self.success(),
            "`{}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.cmdline,
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// The non-empty lines of standard error.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    /// The last non-empty line of standard error (`""` if none): a failed job's error.
    pub fn last_stderr_line(&self) -> &str {
        self.stderr_lines().last().copied().unwrap_or_default()
    }

    /// Standard output parsed as one JSON value (e.g. the status `--json` prints); panics,
    /// showing it, if it is not.
    #[track_caller]
    pub fn stdout_json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!("`{}` printed no JSON ({e}):\n{}", self.cmdline, self.stdout)
        })
    }
}

fn cmdline(bin: &Path, args: &[&OsStr]) -> String {
    let mut s = bin
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for a in args {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn drain<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Runs the `sluice` binary at `bin` with `args`, capturing its output; kills it and panics
/// after [`COMMAND_TIMEOUT`].
pub fn sluice<S: AsRef<OsStr>>(bin: impl AsRef<Path>, args: &[S]) -> CmdOutput {
    sluice_with_timeout(bin, args, COMMAND_TIMEOUT)
}

/// As [`sluice`], with an explicit time limit.
pub fn sluice_with_timeout<S: AsRef<OsStr>>(
    bin: impl AsRef<Path>,
    args: &[S],
    timeout: Duration,
) -> CmdOutput {
    let bin = bin.as_ref();
    let args: Vec<&OsStr> = args.iter().map(AsRef::as_ref).collect();
    let line = cmdline(bin, &args);
    let mut child = Command::new(bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting `{line}` ({}): {e}", bin.display()));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
                panic!("`{line}` did not finish within {timeout:?}; stderr:\n{stderr}");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for `{line}`: {e}"),
        }
    };
    CmdOutput {
        cmdline: line,
        status,
        stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
    }
}

/// Writes a deterministic corpus with `sluice generate-text` and returns its files, sorted.
pub fn generate_text(
    bin: impl AsRef<Path>,
    dir: impl AsRef<Path>,
    size: &str,
    files: u32,
    seed: u64,
) -> Vec<PathBuf> {
    let dir = dir.as_ref();
    let files_s = files.to_string();
    let seed_s = seed.to_string();
    let args: [&OsStr; 8] = [
        "generate-text".as_ref(),
        dir.as_os_str(),
        "--size".as_ref(),
        size.as_ref(),
        "--files".as_ref(),
        files_s.as_ref(),
        "--seed".as_ref(),
        seed_s.as_ref(),
    ];
    sluice(bin, &args).assert_success();
    list_input_files(dir)
}

/// One daemon: the child process, its log file and the first line it printed.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `bin args`, stderr to `log`, and waits for the first stdout line.
    fn start(
        bin: &Path,
        args: &[&OsStr],
        env: &[(String, String)],
        log: PathBuf,
    ) -> Result<(Daemon, String), TestkitError> {
        let line = cmdline(bin, args);
        let log_file = File::create(&log).map_err(io_err(format!("creating {}", log.display())))?;
        let mut child = Command::new(bin)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(io_err(format!("starting `{line}`")))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Sends the first line, then keeps draining so that the daemon never blocks on stdout.
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut first = String::new();
            let res = r.read_line(&mut first).map(|_| first);
            let _ = tx.send(res);
            let _ = std::io::copy(&mut r, &mut std::io::sink());
        });
        let mut d = Daemon { child, log };
        match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(first)) if !first.is_empty() => Ok((d, first.trim_end().to_string())),
            other => {
                let why = match other {
                    Ok(Ok(_)) => "it exited without printing a line".to_string(),
                    Ok(Err(e)) => format!("reading its stdout failed: {e}"),
                    Err(_) => format!("it printed nothing within {STARTUP_TIMEOUT:?}"),
                };
                d.stop();
                Err(TestkitError::Startup(format!(
                    "`{line}` did not start: {why}; log:\n{}",
                    d.log_text()
                )))
            }
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `SIGNAL` (a name such as `STOP`) to `pid` with kill(1).
fn signal(pid: u32, name: &str) {
    let ok = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{name} {pid} failed");
}

/// Writes `n` TeraSort-like records (10 printable key bytes, a record number, filler; 99 bytes
/// and a newline) over `files` files `part-F.txt` in `dir`, from `seed`; with `skew`, that
/// percentage of them share one key. Returns the records.
pub fn generate_sort_records(dir: &Path, n: u64, files: u64, seed: u64, skew: u64) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let mut rng = SplitMix(seed);
    let mut all = Vec::new();
    for f in 0..files {
        let mut text = String::new();
        for i in (f * n / files)..((f + 1) * n / files) {
            let key: String = if rng.next_u64() % 100 < skew {
                "HOT~KEY~~~".to_string()
            } else {
                (0..10)
                    .map(|_| (b'!' + (rng.next_u64() % 94) as u8) as char)
                    .collect()
            };
            let fill = (b'A' + (i % 26) as u8) as char;
            let line = format!("{key} {i:010} {}", fill.to_string().repeat(77));
            text.push_str(&line);
            text.push('\n');
            all.push(line);
        }
        let p = dir.join(format!("part-{f}.txt"));
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
    }
    all
}

/// The seeded generator of tests that pick moments and victims at random but must replay
/// from their seed.
pub use sluice_core::rng::SplitMix;

/// A coordinator and executors, each a separate `sluice` process on 127.0.0.1; dropping it
/// kills and reaps every process and removes their directories.
pub struct Cluster {
    bin: PathBuf,
    url: String,
    executor_ids: Vec<String>,
    // Executors first: they are stopped before the coordinator.
    executors: Vec<Daemon>,
    coordinator: Option<Daemon>,
    /// The coordinator's flags besides `--listen` and `--state-dir`, for restarts.
    coordinator_flags: Vec<String>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// As [`Cluster::start`], with extra environment variables for every daemon (a
    /// datastores file and its keys, say).
    pub fn start_with_env(
        bin: impl AsRef<Path>,
        executors: usize,
        slots: u32,
        env: &[(&str, &str)],
    ) -> Result<Cluster, TestkitError> {
        Self::start_with_flags(bin, executors, slots, env, &[])
    }

    /// As [`Cluster::start_with_env`], with extra coordinator flags (`--executor-timeout 2s`).
    pub fn start_with_flags(
        bin: impl AsRef<Path>,
        executors: usize,
        slots: u32,
        env: &[(&str, &str)],
        coordinator_flags: &[&str],
    ) -> Result<Cluster, TestkitError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_inner(bin.as_ref(), executors, slots, env, coordinator_flags)
    }

    /// Starts a coordinator on port 0, then `executors` executors with `slots` slots each,
    /// returning once every one has registered.
    pub fn start(
        bin: impl AsRef<Path>,
        executors: usize,
        slots: u32,
    ) -> Result<Cluster, TestkitError> {
        Self::start_inner(bin.as_ref(), executors, slots, Vec::new(), &[])
    }

    fn start_inner(
        bin: &Path,
        executors: usize,
        slots: u32,
        env: Vec<(String, String)>,
        coordinator_flags: &[&str],
    ) -> Result<Cluster, TestkitError> {
        let bin = bin.to_path_buf();
        let dir = tempfile::Builder::new()
            .prefix("sluice-cluster-")
            .tempdir()
            .map_err(io_err("creating cluster directory"))?;
        let state = dir.path().join("coordinator-state");
        let mut args: Vec<&OsStr> = vec![
            "coordinator".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--state-dir".as_ref(),
            state.as_os_str(),
        ];
        args.extend(coordinator_flags.iter().map(|a| OsStr::new(*a)));
        let (coord, first) = Daemon::start(&bin, &args, &env, dir.path().join("coordinator.log"))?;
        let mut cluster = Cluster {
            bin,
            url: String::new(),
            executor_ids: Vec::new(),
            env,
            executors: Vec::new(),
            coordinator: Some(coord),
            coordinator_flags: coordinator_flags.iter().map(|f| f.to_string()).collect(),
            dir,
        };
        let addr = first
            .strip_prefix("coordinator listening on ")
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                TestkitError::Startup(format!(
                    "unexpected first line from the coordinator: {first:?}"
                ))
            })?;
        cluster.url = format!("http://{addr}");
        for _ in 0..executors {
            cluster.add_executor(slots, &[])?;
        }
        Ok(cluster)
    }

    /// Starts one more executor with `slots` slots and `extra` flags (e.g. `--worker-memory`),
    /// returning once it has registered.
    pub fn add_executor(&mut self, slots: u32, extra: &[&str]) -> Result<(), TestkitError> {
        let i = self.executors.len();
        let work = self.dir.path().join(format!("executor-{i}"));
        let slots = slots.to_string();
        let mut args: Vec<&OsStr> = vec![
            "executor".as_ref(),
            "--coordinator".as_ref(),
            self.url.as_ref(),
            "--work-dir".as_ref(),
            work.as_os_str(),
            "--slots".as_ref(),
            slots.as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ];
        args.extend(extra.iter().map(|a| OsStr::new(*a)));
        let (d, first) = Daemon::start(
            &self.bin,
            &args,
            &self.env,
            self.dir.path().join(format!("executor-{i}.log")),
        )?;
        self.executors.push(d);
        let id = first
            .strip_prefix("executor ")
            .and_then(|r| r.split_once(" registered with "))
            .map(|(id, _)| id.to_string())
            .ok_or_else(|| {
                TestkitError::Startup(format!(
                    "unexpected first line from executor {i}: {first:?}"
                ))
            })?;
        self.executor_ids.push(id);
        Ok(())
    }

    /// The coordinator URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The ids the executors were registered under, in start order.
    pub fn executor_ids(&self) -> &[String] {
        &self.executor_ids
    }

    /// The cluster's scratch directory (state, work dirs and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The logs of the coordinator and the executors, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (name, d) in self
            .coordinator
            .iter()
            .map(|d| ("coordinator".to_string(), d))
            .chain(
                self.executors
                    .iter()
                    .enumerate()
                    .map(|(i, d)| (format!("executor-{i}"), d)),
            )
        {
            s.push_str(&format!("--- {name} ---\n{}", d.log_text()));
        }
        s
    }

    /// The OS process ids of the coordinator and the executors.
    pub fn pids(&self) -> Vec<u32> {
        self.coordinator
            .iter()
            .chain(self.executors.iter())
            .map(|d| d.child.id())
            .collect()
    }

    /// True while every daemon process is still running.
    pub fn all_running(&mut self) -> bool {
        self.coordinator
            .iter_mut()
            .chain(self.executors.iter_mut())
            .all(|d| matches!(d.child.try_wait(), Ok(None)))
    }

    /// Kills executor `i` (SIGKILL, as a crash) and reaps it.
    pub fn kill_executor(&mut self, i: usize) {
        self.executors[i].stop();
    }

    /// Kills the coordinator with SIGKILL (a crash) and reaps it; executors keep running.
    pub fn kill_coordinator(&mut self) {
        if let Some(c) = &mut self.coordinator {
            c.stop();
        }
    }

    /// Starts the coordinator again on the same address and state directory (after
    /// [`Cluster::kill_coordinator`]), returning once it listens.
    pub fn restart_coordinator(&mut self) -> Result<(), TestkitError> {
        let addr = self.url.trim_start_matches("http://").to_string();
        let state = self.dir.path().join("coordinator-state");
        let mut args: Vec<&OsStr> = vec![
            "coordinator".as_ref(),
            "--listen".as_ref(),
            addr.as_ref(),
            "--state-dir".as_ref(),
            state.as_os_str(),
        ];
        args.extend(self.coordinator_flags.iter().map(OsStr::new));
        let n = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("coordinator"))
            .count();
        let log = self.dir.path().join(format!("coordinator-{n}.log"));
        let (coord, first) = Daemon::start(&self.bin, &args, &self.env, log)?;
        self.coordinator = Some(coord);
        if !first.starts_with("coordinator listening on ") {
            return Err(TestkitError::Startup(format!(
                "unexpected first line from the restarted coordinator: {first:?}"
            )));
        }
        Ok(())
    }

    /// True while executor `i` runs (it was not killed and did not exit).
    pub fn executor_running(&mut self, i: usize) -> bool {
        matches!(self.executors[i].child.try_wait(), Ok(None))
    }

    /// Stops executor `i` with SIGSTOP (a straggler: it holds its tasks and sends nothing).
    pub fn pause_executor(&self, i: usize) {
        signal(self.executors[i].child.id(), "STOP");
    }

    /// Lets executor `i` go on after [`Cluster::pause_executor`] (SIGCONT).
    pub fn resume_executor(&self, i: usize) {
        signal(self.executors[i].child.id(), "CONT");
    }

    /// Deletes the output files of map `map` of job `job_id` from every executor's shuffle
    /// directory, as a lost disk would; returns how many files went.
    pub fn drop_map_output(&self, job_id: &str, map: u32) -> usize {
        let prefix = format!("map-{map:05}-");
        let mut n = 0;
        for e in std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let job_dir = e.path().join("shuffle").join(job_id);
            for f in std::fs::read_dir(&job_dir).into_iter().flatten().flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                let output = name.ends_with(".data") || name.ends_with(".index");
                if name.starts_with(&prefix) && output && std::fs::remove_file(f.path()).is_ok() {
                    n += 1;
                }
            }
        }
        n
    }

    /// `sluice status JOB --json`, parsed.
    pub fn status(&self, job_id: &str) -> serde_json::Value {
        let r = self.sluice(&["status", job_id, "--coordinator", &self.url, "--json"]);
        r.assert_success();
        r.stdout_json()
    }

    /// Polls the status of `job_id` until it is final (succeeded, failed or cancelled); panics,
    /// with the daemons' logs, after `timeout`.
    pub fn wait_for_job(&self, job_id: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status(job_id);
            if matches!(
                st["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return st;
            }
            if Instant::now() >= deadline {
                panic!(
                    "job {job_id} not final after {timeout:?}: {st}\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs the `sluice` binary with `args` (add `--coordinator` yourself: see [`Cluster::url`]).
    pub fn sluice<S: AsRef<OsStr>>(&self, args: &[S]) -> CmdOutput {
        sluice(&self.bin, args)
    }

    /// Runs `sluice submit JOB --coordinator URL ARGS...` against this cluster.
    pub fn submit(&self, job: &str, args: &[&str]) -> CmdOutput {
        let mut all = vec!["submit", job, "--coordinator", self.url.as_str()];
        all.extend_from_slice(args);
        self.sluice(&all)
    }

    /// Runs `sluice submit JOB --coordinator URL --binary BINARY --input INPUT --output OUTPUT
    /// ARGS...` against this cluster.
    pub fn submit_binary(
        &self,
        job: &str,
        binary: &Path,
        input: &Path,
        output: &Path,
        args: &[&str],
    ) -> CmdOutput {
        let mut all = vec![
            "--binary",
            path_str(binary),
            "--input",
            path_str(input),
            "--output",
            path_str(output),
        ];
        all.extend_from_slice(args);
        self.submit(job, &all)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for d in &mut self.executors {
            d.stop();
        }
        if let Some(c) = &mut self.coordinator {
            c.stop();
        }
    }
}
