//! Inputs on an S3-compatible object store: a real s3s-fs server on loopback (checking SigV4
//! credentials), named in a datastores file or addressed as `s3://`. Word count must read
//! thousands of small objects and some large ones exactly, skip `_` and `.` names, and fail
//! clearly on an unknown datastore, wrong credentials or a missing bucket.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sluice_testkit::path_str as s;
use sluice_testkit::{
    assert_counts_eq, count_text, generate_text, read_tsv_counts, CmdOutput, Counts,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");
const KEY: &str = "sluice-test-key";
const SECRET: &str = "sluice-test-secret";

/// The s3s-fs binary: on PATH or in ~/.cargo/bin, else installed there once (as `.ci/run`
/// does) so that `cargo test --workspace` needs nothing set up by hand.
fn s3s_fs() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cargo_bin = Path::new(&home).join(".cargo/bin/s3s-fs");
    let on_path = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join("s3s-fs"))
        .find(|p| p.exists());
    if let Some(p) = on_path.or_else(|| cargo_bin.exists().then(|| cargo_bin.clone())) {
        return p;
    }
    let ok = Command::new(env!("CARGO"))
        .args([
            "install",
            "s3s-fs",
            "--version",
            "0.14.1",
            "--features",
            "binary",
            "--locked",
        ])
        .status()
        .expect("run cargo install s3s-fs");
    assert!(ok.success(), "installing s3s-fs failed");
    cargo_bin
}

/// A running s3s-fs server, stopped on drop.
struct S3Server {
    child: Child,
    url: String,
    root: tempfile::TempDir,
}

impl S3Server {
    fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY, "--secret-key", SECRET])
            .arg(root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
            root,
        }
    }

    /// A bucket (s3s-fs keeps one per directory) and a client for it.
    fn bucket(&self, name: &str) -> Arc<dyn ObjectStore> {
        std::fs::create_dir_all(self.root.path().join(name)).unwrap();
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(&self.url)
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .with_region("us-east-1")
                .with_bucket_name(name)
                .with_access_key_id(KEY)
                .with_secret_access_key(SECRET)
                .build()
                .unwrap(),
        )
    }

    /// A datastores file naming this server's bucket `bucket` as `lake`, keys from env vars.
    fn datastores(&self, dir: &Path, bucket: &str) -> PathBuf {
        let p = dir.join("datastores.toml");
        std::fs::write(
            &p,
            format!(
                "[datastore.lake]\nkind = \"s3\"\nroot = \"s3://{bucket}/data\"\n\
                 endpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\n\
                 access_key_env = \"LAKE_KEY\"\nsecret_key_env = \"LAKE_SECRET\"\n",
                self.url
            ),
        )
        .unwrap();
        p
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Objects to upload: key and bytes.
type Objects = Vec<(String, Vec<u8>)>;

/// Uploads `objects` with up to 32 requests in flight.
fn put_all(store: &Arc<dyn ObjectStore>, objects: Objects) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(32));
        let mut handles = Vec::new();
        for (k, v) in objects {
            let (store, sem) = (store.clone(), sem.clone());
            handles.push(tokio::spawn(async move {
                let _permit = sem.acquire().await.unwrap();
                store
                    .put(&ObjectPath::from(k.as_str()), PutPayload::from(v))
                    .await
                    .unwrap_or_else(|e| panic!("uploading {k}: {e}"));
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
    });
}

/// `sluice ARGS` with the datastore environment.
fn sluice_env(args: &[&str], env: &[(&str, &str)]) -> CmdOutput {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run sluice");
    CmdOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        cmdline: format!("sluice {}", args.join(" ")),
    }
}

/// A generated corpus (`files` large texts, keys from `large_key`) plus the `small` texts,
/// as objects to upload, with their reference counts and the local large files.
fn corpus(
    tmp: &Path,
    size: &str,
    seed: u64,
    large_key: impl Fn(usize) -> String,
    small: Vec<(String, String)>,
) -> (Counts, Vec<PathBuf>, Objects) {
    let files = generate_text(BIN, tmp.join("local"), size, 3, seed);
    let mut want = Counts::new();
    let mut objects = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let data = std::fs::read(f).unwrap();
        count_text(std::str::from_utf8(&data).unwrap(), &mut want);
        objects.push((large_key(i), data));
    }
    for (key, text) in small {
        count_text(&text, &mut want);
        objects.push((key, text.into_bytes()));
    }
    (want, files, objects)
}

#[test]
fn wordcount_reads_many_small_and_some_large_objects_from_s3() {
    let server = S3Server::start();
    let store = server.bucket("corpus");
    let tmp = tempfile::tempdir().unwrap();

    // Large objects: a generated corpus. Small ones: thousands of short texts.
    let small = (0..10_000)
        .map(|i| {
            let text = format!(
                "small{} object number {i} ünïcode\nsecond line {}\n",
                i % 97,
                i % 13
            );
            (format!("data/in/small/{i:05}.txt"), text)
        })
        .collect();
    let (want, files, mut objects) = corpus(
        tmp.path(),
        "6MiB",
        17,
        |i| format!("data/in/large/part-{i}.txt"),
        small,
    );
    // Names Hadoop skips, and an object outside the input prefix.
    objects.push(("data/in/_SUCCESS".into(), b"not input".to_vec()));
    objects.push(("data/in/small/.tmp-upload".into(), b"not input".to_vec()));
    objects.push(("data/other/x.txt".into(), b"not input".to_vec()));
    put_all(&store, objects);

    let ds = server.datastores(tmp.path(), "corpus");
    let env = [
        ("SLUICE_DATASTORES", s(&ds)),
        ("LAKE_KEY", KEY),
        ("LAKE_SECRET", SECRET),
    ];
    let out = tmp.path().join("out");
    let r = sluice_env(
        &[
            "run",
            "wordcount",
            "--input",
            "ds://lake/in",
            "--output",
            s(&out),
            "--format",
            "tsv",
            "--split-size",
            "1MiB",
            "--executors",
            "2",
            "--top",
            "0",
        ],
        &env,
    );
    assert!(r.success(), "{}", r.stderr);
    assert_counts_eq(&read_tsv_counts(&out), &want, "word count over S3 objects");
    // Small objects are combined: a handful of map tasks, not ten thousand.
    let maps: u64 = r
        .stderr
        .split(" maps,")
        .next()
        .and_then(|h| h.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no map count in: {}", r.stderr));
    assert!(
        (4..=40).contains(&maps),
        "{maps} map tasks for 6 MiB + 10,000 small objects"
    );

    // The same objects as an s3:// glob, credentials from the standard AWS variables.
    let out2 = tmp.path().join("out2");
    let r = sluice_env(
        &[
            "run",
            "wordcount",
            "--input",
            "s3://corpus/data/in/large/*.txt",
            "--output",
            s(&out2),
            "--format",
            "tsv",
            "--top",
            "0",
        ],
        &[
            ("AWS_ENDPOINT_URL", server.url.as_str()),
            ("AWS_ACCESS_KEY_ID", KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    assert!(r.success(), "{}", r.stderr);
    let mut large = Counts::new();
    for f in &files {
        count_text(&std::fs::read_to_string(f).unwrap(), &mut large);
    }
    assert_counts_eq(&read_tsv_counts(&out2), &large, "s3:// glob");
}

#[test]
fn bad_datastores_fail_clearly_and_write_nothing() {
    let server = S3Server::start();
    let store = server.bucket("corpus");
    put_all(&store, vec![("data/in/a.txt".into(), b"a b\n".to_vec())]);
    let tmp = tempfile::tempdir().unwrap();
    let ds = server.datastores(tmp.path(), "corpus");
    let out = tmp.path().join("out");
    let run = |input: &str, secret: &str| {
        sluice_env(
            &["run", "wordcount", "--input", input, "--output", s(&out)],
            &[
                ("SLUICE_DATASTORES", s(&ds)),
                ("LAKE_KEY", KEY),
                ("LAKE_SECRET", secret),
            ],
        )
    };
    let cases = [
        (
            "ds://nowhere/in",
            SECRET,
            vec!["datastore 'nowhere'", "known: lake"],
        ),
        (
            "ds://lake/in",
            "wrong-secret",
            vec!["datastore 'lake'", "credentials"],
        ),
        (
            "s3://no-such-bucket/in",
            SECRET,
            vec!["s3://no-such-bucket"],
        ),
        ("ds://lake/missing", SECRET, vec!["does not exist"]),
    ];
    for (input, secret, want) in cases {
        let r = run(input, secret);
        assert!(!r.success(), "{input}: should fail");
        let line = r.last_stderr_line().to_string();
        assert!(line.starts_with("error: "), "{input}: {line}");
        for w in want {
            assert!(line.contains(w), "{input}: error line lacks {w:?}: {line}");
        }
        assert!(
            !line.contains("wrong-secret"),
            "a secret was printed: {line}"
        );
        assert!(!out.exists(), "{input}: nothing may be written");
        assert_eq!(r.stderr.matches("panicked").count(), 0, "{}", r.stderr);
    }
}

#[test]
fn executors_and_job_binary_workers_resolve_the_same_datastores() {
    let server = S3Server::start();
    let store = server.bucket("lake");
    let tmp = tempfile::tempdir().unwrap();
    let small = (0..300)
        .map(|i| {
            let text = format!("tiny {i} of three hundred\n");
            (format!("data/in/tiny/{i:03}.txt"), text)
        })
        .collect();
    let (want, _, objects) = corpus(
        tmp.path(),
        "2MiB",
        23,
        |i| format!("data/in/big-{i}.txt"),
        small,
    );
    put_all(&store, objects);
    let ds = server.datastores(tmp.path(), "lake");
    let cluster = sluice_testkit::Cluster::start_with_env(
        BIN,
        2,
        1,
        &[
            ("SLUICE_DATASTORES", s(&ds)),
            ("LAKE_KEY", KEY),
            ("LAKE_SECRET", SECRET),
        ],
    )
    .expect("cluster starts");
    // Built in (in the executors) and as a job binary (in worker processes).
    let wc = sluice_testkit::example_binary(BIN, "wordcount-typed", "sluice-example-wordcount");
    for (job, binary) in [("wordcount", None), ("wordcount-typed", Some(wc.as_path()))] {
        let out = tmp.path().join(format!("out-{job}"));
        let mut args = vec![
            "--input",
            "ds://lake/in",
            "--output",
            s(&out),
            "--format",
            "tsv",
            "--split-size",
            "256KiB",
            "--wait",
            "--json",
        ];
        if let Some(b) = binary {
            args.extend(["--binary", s(b)]);
        }
        let r = cluster.submit(job, &args);
        assert!(r.success(), "{job}: {}\n{}", r.stderr, cluster.logs());
        assert_counts_eq(&read_tsv_counts(&out), &want, job);
        let st = r.stdout_json();
        let executors: std::collections::BTreeSet<&str> = st["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["task_id"].as_str().is_some_and(|t| t.starts_with("m-")))
            .filter_map(|t| t["executor_id"].as_str())
            .collect();
        assert_eq!(
            executors.len(),
            2,
            "{job}: maps ran on both executors: {st}"
        );
    }
}
