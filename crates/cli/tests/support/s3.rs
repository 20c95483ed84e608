//! An S3-compatible server for tests: s3s-fs on loopback, checking SigV4 credentials, with a
//! request log that names each S3 operation.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// The access key the server accepts.
pub const KEY: &str = "sluice-test-key";
/// The secret key the server accepts.
pub const SECRET: &str = "sluice-test-secret";

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
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Holds the server's data (`data/BUCKET/KEY`) and its request log.
    pub root: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server on a free port; returns once it accepts connections.
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = root.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        // The request log (one "resolved route" line per request, naming the S3 operation)
        // shows what the engine asked of the store.
        let log = std::fs::File::create(root.path().join("requests.log")).unwrap();
        let child = Command::new(s3s_fs())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", KEY, "--secret-key", SECRET])
            .arg(&data)
            .env("RUST_LOG", "s3s::ops=debug")
            .env("NO_COLOR", "1")
            // s3s-fs logs to stdout.
            .stdout(log)
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

    /// The S3 operations the server has served so far, in order (`PutObject`, ...).
    pub fn operations(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.root.path().join("requests.log")).unwrap();
        log.lines()
            .filter(|l| l.contains("resolved route"))
            .filter_map(|l| l.split(" op: ").nth(1))
            .filter_map(|rest| rest.split(',').next())
            .map(|op| op.trim().to_string())
            .collect()
    }

    /// A bucket (s3s-fs keeps one per directory) and a client for it.
    pub fn bucket(&self, name: &str) -> Arc<dyn ObjectStore> {
        std::fs::create_dir_all(self.root.path().join("data").join(name)).unwrap();
        client(&self.url, name, KEY, SECRET)
    }

    /// The environment that points plain `s3://` URIs of a `sluice` process at this server.
    pub fn client_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url.clone()),
            ("AWS_ACCESS_KEY_ID", KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
        ]
    }

    /// A datastores file naming this server's bucket `bucket` as `lake`, keys from env vars.
    pub fn datastores(&self, dir: &Path, bucket: &str) -> PathBuf {
        datastores_file(&dir.join("datastores.toml"), "lake", &self.url, bucket)
    }
}

/// A path-style S3 client of `bucket` at `url`.
pub fn client(url: &str, bucket: &str, key: &str, secret: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(url)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .build()
            .unwrap(),
    )
}

/// Writes a datastores file at `path` naming `s3://bucket/data` at `url` as datastore `name`,
/// its keys in the variables `NAME_KEY` and `NAME_SECRET` (upper case).
pub fn datastores_file(path: &Path, name: &str, url: &str, bucket: &str) -> PathBuf {
    let upper = name.to_uppercase();
    std::fs::write(
        path,
        format!(
            "[datastore.{name}]\nkind = \"s3\"\nroot = \"s3://{bucket}/data\"\n\
             endpoint = \"{url}\"\nregion = \"us-east-1\"\npath_style = true\n\
             access_key_env = \"{upper}_KEY\"\nsecret_key_env = \"{upper}_SECRET\"\n"
        ),
    )
    .unwrap();
    path.to_path_buf()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Objects to upload: key and bytes.
pub type Objects = Vec<(String, Vec<u8>)>;

/// Uploads `objects` with up to 32 requests in flight.
pub fn put_all(store: &Arc<dyn ObjectStore>, objects: Objects) {
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

/// Runs object-store calls from a test.
pub fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Every key under `prefix/`, relative to it, sorted.
pub fn keys_under(store: &Arc<dyn ObjectStore>, prefix: &str) -> Vec<String> {
    use futures::TryStreamExt;
    let p = ObjectPath::from(prefix);
    let metas: Vec<_> = block(store.list(Some(&p)).try_collect()).unwrap();
    let mut keys: Vec<String> = metas
        .into_iter()
        .map(|m| m.location.as_ref()[prefix.len() + 1..].to_string())
        .collect();
    keys.sort();
    keys
}
