//! Datastores: where inputs live, named by URI (`file:///p`, `s3://bucket/prefix`) or by a
//! name from `datastores.toml` (`ds://NAME/path`).
//!
//! ```toml
//! [datastore.lake]
//! kind = "s3"
//! root = "s3://bucket/prefix"
//! endpoint = "http://127.0.0.1:9000"
//! region = "us-east-1"
//! path_style = true
//! access_key_env = "LAKE_KEY"       # names of environment variables, never the secrets
//! secret_key_env = "LAKE_SECRET"
//!
//! [datastore.shared]
//! kind = "glusterfs"                # or "posix", "nfs-mount": a mounted filesystem
//! root = "/mnt/gv0/data"
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

use object_store::aws::AmazonS3Builder;
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};
use serde::Deserialize;

use crate::nfs::{NfsServer, NfsStore};
use crate::StorageError;

/// Environment variable naming the datastores file (default: `./datastores.toml` if present).
pub const DATASTORES_ENV: &str = "SLUICE_DATASTORES";

/// What a datastore is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// An S3-compatible object store.
    S3,
    /// A mounted filesystem of any type.
    Posix,
    /// A GlusterFS FUSE mount (`fuse.glusterfs` in mountinfo).
    Glusterfs,
    /// A kernel NFS mount (`nfs` or `nfs4`).
    NfsMount,
    /// An NFSv3 export reached without a mount, by a userspace client (`root =
    /// "nfs://server/export/path"`).
    Nfs,
}

/// One datastore as configured; secrets are named by environment variable, never stored.
#[derive(Debug, Clone, Deserialize)]
pub struct DatastoreConfig {
    /// Kind of store.
    pub kind: Kind,
    /// `s3://bucket/prefix` for S3, an absolute path for mounted kinds.
    pub root: String,
    /// S3 endpoint URL (default: AWS).
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// Path-style S3 requests (`endpoint/bucket/key`), as most self-hosted stores want.
    #[serde(default)]
    pub path_style: bool,
    /// Environment variable holding the access key id.
    pub access_key_env: Option<String>,
    /// Environment variable holding the secret access key.
    pub secret_key_env: Option<String>,
    /// NFS port of an `nfs` server (with `mount_port`, the portmapper is not asked).
    pub port: Option<u16>,
    /// MOUNT port of an `nfs` server.
    pub mount_port: Option<u16>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    datastore: BTreeMap<String, DatastoreConfig>,
}

/// Where a URI points: a local path, or a key in an object store.
#[derive(Clone)]
pub enum Location {
    /// A path on a local or mounted filesystem.
    Local(PathBuf),
    /// A key (or prefix) in an object store.
    Object {
        /// The store.
        store: Arc<dyn ObjectStore>,
        /// The same store's multipart API, where it has one (S3): output commits need upload
        /// ids that outlive the process that started the upload.
        multipart: Option<Arc<dyn MultipartStore>>,
        /// The key or prefix within it.
        path: ObjectPath,
        /// The key as written (with any glob characters, which `path` would escape).
        key: String,
        /// The URI that names the store's root (`s3://bucket`, `ds://name`): an object's URI
        /// is this, `/`, and its key without `root_prefix`.
        base: String,
        /// The key prefix of the store's root (a datastore's `root` after the bucket).
        root_prefix: String,
        /// The datastore's name, for messages.
        name: String,
    },
}

impl Location {
    /// The URI of object `key` of this location's store.
    pub fn uri_of(&self, key: &ObjectPath) -> String {
        match self {
            Location::Local(_) => key.to_string(),
            Location::Object {
                base, root_prefix, ..
            } => {
                let k = key.as_ref();
                let rel = k
                    .strip_prefix(root_prefix.as_str())
                    .map(|r| r.trim_start_matches('/'))
                    .unwrap_or(k);
                format!("{base}/{rel}")
            }
        }
    }
}

/// The datastores this process knows, by name.
#[derive(Default)]
pub struct Datastores {
    entries: BTreeMap<String, DatastoreConfig>,
    source: String,
    stores: Mutex<HashMap<String, Store>>,
    /// NFS exports mounted so far: a path under one's export reuses it.
    nfs: Mutex<Vec<(NfsServer, NfsStore)>>,
}

/// One store, through both of its interfaces.
#[derive(Clone)]
struct Store {
    objects: Arc<dyn ObjectStore>,
    multipart: Option<Arc<dyn MultipartStore>>,
}

impl Store {
    fn nfs(s: NfsStore) -> Store {
        let s = Arc::new(s);
        Store {
            objects: s.clone(),
            multipart: Some(s),
        }
    }

    fn s3(s: object_store::aws::AmazonS3) -> Store {
        let s = Arc::new(s);
        Store {
            objects: s.clone(),
            multipart: Some(s),
        }
    }
}

static GLOBAL: OnceLock<Result<Datastores, String>> = OnceLock::new();

impl Datastores {
    /// Parses a datastores file's text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Self, StorageError> {
        let f: File = toml::from_str(text).map_err(|e| StorageError::Datastore {
            name: source.to_string(),
            reason: format!("not a valid datastores file: {e}"),
        })?;
        Ok(Datastores {
            entries: f.datastore,
            source: source.to_string(),
            stores: Mutex::new(HashMap::new()),
            nfs: Mutex::new(Vec::new()),
        })
    }

    /// Reads a datastores file.
    pub fn load(path: &Path) -> Result<Self, StorageError> {
        let text = std::fs::read_to_string(path).map_err(crate::error::io("reading", path))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The process-wide datastores: the file `$SLUICE_DATASTORES` names, else
    /// `./datastores.toml` if it exists, else none (plain paths and `s3://` URIs still work).
    pub fn global() -> Result<&'static Datastores, StorageError> {
        let r = GLOBAL.get_or_init(|| {
            let path = match std::env::var_os(DATASTORES_ENV) {
                Some(p) => Some(PathBuf::from(p)),
                None => Some(PathBuf::from("datastores.toml")).filter(|p| p.exists()),
            };
            match path {
                Some(p) => Datastores::load(&p).map_err(|e| e.to_string()),
                None => Ok(Datastores::default()),
            }
        });
        r.as_ref().map_err(|e| StorageError::Datastore {
            name: DATASTORES_ENV.into(),
            reason: e.clone(),
        })
    }

    /// Checks every mounted-filesystem datastore: its root must be mounted, with the declared
    /// type. Returns the first problem.
    pub fn check_mounts(&self) -> Result<(), StorageError> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for (name, c) in &self.entries {
            check_mount(name, c, &info)?;
        }
        Ok(())
    }

    /// Resolves a URI or path.
    pub fn resolve(&self, uri: &str) -> Result<Location, StorageError> {
        if let Some(rest) = uri.strip_prefix("file://") {
            return Ok(Location::Local(PathBuf::from(rest)));
        }
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            let store = self.store(&format!("s3://{bucket}"), || {
                s3_from_env(bucket).map_err(|e| StorageError::Datastore {
                    name: format!("s3://{bucket}"),
                    reason: e.to_string(),
                })
            })?;
            return Ok(Location::Object {
                store: store.objects,
                multipart: store.multipart,
                path: ObjectPath::from(key),
                key: key.to_string(),
                base: format!("s3://{bucket}"),
                root_prefix: String::new(),
                name: format!("s3://{bucket}"),
            });
        }
        if uri.starts_with("nfs://") {
            let (store, server, rest, export) = self.nfs(uri, uri, None)?;
            let base = format!("nfs://{}{}", server.authority(), export);
            return Ok(Location::Object {
                store: store.objects,
                multipart: store.multipart,
                path: ObjectPath::from(rest.as_str()),
                key: rest,
                name: base.clone(),
                base,
                root_prefix: String::new(),
            });
        }
        if let Some(rest) = uri.strip_prefix("ds://") {
            let (name, path) = rest.split_once('/').unwrap_or((rest, ""));
            let c = self.entries.get(name).ok_or_else(|| {
                let known: Vec<&str> = self.entries.keys().map(String::as_str).collect();
                StorageError::Datastore {
                    name: name.to_string(),
                    reason: format!(
                        "no datastore of that name in {}; known: {}",
                        if self.source.is_empty() {
                            format!("(no datastores file; set {DATASTORES_ENV})")
                        } else {
                            self.source.clone()
                        },
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                }
            })?;
            return match c.kind {
                Kind::Posix | Kind::Glusterfs | Kind::NfsMount => {
                    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                    check_mount(name, c, &info)?;
                    Ok(Location::Local(Path::new(&c.root).join(path)))
                }
                Kind::Nfs => {
                    let (store, _, prefix, _) = self.nfs(name, &c.root, Some(c))?;
                    let key = join_key(&prefix, path);
                    Ok(Location::Object {
                        store: store.objects,
                        multipart: store.multipart,
                        path: ObjectPath::from(key.as_str()),
                        key,
                        base: format!("ds://{name}"),
                        root_prefix: prefix,
                        name: name.to_string(),
                    })
                }
                Kind::S3 => {
                    let (bucket, prefix) = c
                        .root
                        .strip_prefix("s3://")
                        .map(|r| r.split_once('/').unwrap_or((r, "")))
                        .ok_or_else(|| StorageError::Datastore {
                            name: name.to_string(),
                            reason: format!("root '{}' is not s3://bucket/prefix", c.root),
                        })?;
                    let store = self.store(name, || s3_from_config(name, bucket, c))?;
                    let key = join_key(prefix, path);
                    Ok(Location::Object {
                        store: store.objects,
                        multipart: store.multipart,
                        path: ObjectPath::from(key.as_str()),
                        key,
                        base: format!("ds://{name}"),
                        root_prefix: prefix.trim_matches('/').to_string(),
                        name: name.to_string(),
                    })
                }
            };
        }
        Ok(Location::Local(PathBuf::from(uri)))
    }

    /// The NFS store for `nfs://HOST[:PORT]/EXPORT/PATH` and PATH, mounting the export the first
    /// time; `name` names the datastore in errors.
    fn nfs(
        &self,
        name: &str,
        uri: &str,
        config: Option<&DatastoreConfig>,
    ) -> Result<(Store, NfsServer, String, String), StorageError> {
        let bad = |reason: String| StorageError::Datastore {
            name: name.to_string(),
            reason,
        };
        let rest = uri
            .strip_prefix("nfs://")
            .ok_or_else(|| bad(format!("root '{uri}' is not nfs://server/export/path")))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| bad(format!("'{p}' in {uri} is not a port number")))?,
                ),
            ),
            None => (authority, None),
        };
        use std::net::ToSocketAddrs;
        let ip = (host, 0)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| bad(format!("cannot resolve the NFS server name '{host}'")))?
            .ip();
        let server = NfsServer {
            host: ip.to_string(),
            port: port.or(config.and_then(|c| c.port)),
            mount_port: config.and_then(|c| c.mount_port),
        };
        let path = format!("/{}", path.trim_matches('/'));
        let mut known = self.nfs.lock().unwrap_or_else(|p| p.into_inner());
        for (s, store) in known.iter() {
            let export = store.export();
            if *s == server && (path == export || path.starts_with(&format!("{export}/"))) {
                let rest = path[export.len()..].trim_matches('/').to_string();
                let export = export.to_string();
                return Ok((Store::nfs(store.clone()), server, rest, export));
            }
        }
        let (store, rest) = block_on(NfsStore::connect(server.clone(), &path))
            .map_err(|e| bad(format!("{uri}: {}", crate::error::explain(&e))))?;
        known.push((server.clone(), store.clone()));
        let export = store.export().to_string();
        Ok((Store::nfs(store), server, rest, export))
    }

    fn store(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<Store, StorageError>,
    ) -> Result<Store, StorageError> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(key) {
            return Ok(s.clone());
        }
        let s = make()?;
        stores.insert(key.to_string(), s.clone());
        Ok(s)
    }
}

/// `prefix/path` without empty parts or stray slashes.
fn join_key(prefix: &str, path: &str) -> String {
    [prefix.trim_matches('/'), path.trim_matches('/')]
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/")
}

/// Transient errors (503, timeouts, resets) are retried with backoff by object_store itself.
fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 6,
        retry_timeout: std::time::Duration::from_secs(60),
        ..Default::default()
    }
}

fn s3_from_env(bucket: &str) -> Result<Store, object_store::Error> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(retry());
    if let Some(e) = endpoint {
        b = b
            .with_allow_http(e.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    Ok(Store::s3(b.build()?))
}

fn s3_from_config(name: &str, bucket: &str, c: &DatastoreConfig) -> Result<Store, StorageError> {
    let env = |var: &Option<String>, what: &str| -> Result<Option<String>, StorageError> {
        match var {
            None => Ok(None),
            Some(v) => std::env::var(v)
                .map(Some)
                .map_err(|_| StorageError::Datastore {
                    name: name.to_string(),
                    reason: format!("its {what} comes from ${v}, which is not set"),
                }),
        }
    };
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(c.region.clone().unwrap_or_else(|| "us-east-1".into()))
        .with_virtual_hosted_style_request(!c.path_style)
        .with_retry(retry())
        .with_client_options(ClientOptions::new().with_allow_http(true));
    if let Some(e) = &c.endpoint {
        b = b.with_endpoint(e);
    }
    if let Some(k) = env(&c.access_key_env, "access key")? {
        b = b.with_access_key_id(k);
    }
    if let Some(s) = env(&c.secret_key_env, "secret key")? {
        b = b.with_secret_access_key(s);
    }
    let store = b.build().map_err(|e| StorageError::Datastore {
        name: name.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Store::s3(store))
}

/// The mount point and filesystem type of the mount holding `path`, from mountinfo text.
fn mount_of<'a>(path: &str, mountinfo: &'a str) -> Option<(&'a str, &'a str)> {
    let mut best: Option<(&str, &str)> = None;
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        let (Some(point), Some(fstype)) = (f.get(4), f.get(dash + 1)) else {
            continue;
        };
        let under = path == *point
            || point.ends_with('/') && path.starts_with(point)
            || path.starts_with(&format!("{point}/"));
        if under && best.is_none_or(|(p, _)| point.len() >= p.len()) {
            best = Some((point, fstype));
        }
    }
    best
}

fn check_mount(name: &str, c: &DatastoreConfig, mountinfo: &str) -> Result<(), StorageError> {
    let want: &[&str] = match c.kind {
        Kind::Glusterfs => &["fuse.glusterfs"],
        Kind::NfsMount => &["nfs", "nfs4"],
        _ => return Ok(()),
    };
    let bad = |reason: String| StorageError::Datastore {
        name: name.to_string(),
        reason,
    };
    match mount_of(&c.root, mountinfo) {
        Some((point, fstype)) if want.contains(&fstype) => {
            tracing::debug!(datastore = name, point, fstype, "mount checked");
            Ok(())
        }
        Some((point, fstype)) => Err(bad(format!(
            "root {} is on {point}, a {fstype} filesystem, not {}: mount the volume there \
             first (e.g. mount -t {} ...)",
            c.root,
            want.join(" or "),
            want[0].trim_start_matches("fuse.")
        ))),
        None => Err(bad(format!("root {} is not under any mount", c.root))),
    }
}

/// A runtime for processes that have none (task workers, tests).
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("sluice-storage-io")
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start the storage I/O runtime: {e}"))
});

/// The runtime that owns connections which must outlive any one caller's runtime (NFS).
pub(crate) fn io_runtime() -> &'static tokio::runtime::Runtime {
    &RUNTIME
}

/// Runs object-store I/O from synchronous code: on the caller's runtime when there is one
/// (from a worker thread of a multi-threaded runtime it first tells the runtime that this
/// thread blocks), else on a small runtime of the storage crate's own.
pub(crate) fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| h.block_on(f))
        }
        // A current-thread runtime cannot block its only thread: run it on another.
        Ok(_) => std::thread::scope(|s| {
            s.spawn(|| RUNTIME.block_on(f))
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        }),
        Err(_) => RUNTIME.block_on(f),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
40 22 0:50 / /mnt/gv0 rw - fuse.glusterfs gluster-local:/gv0 rw
41 22 0:51 / /mnt/nfs rw - nfs4 srv:/export rw
";

    fn config(kind: &str, root: &str) -> Datastores {
        Datastores::parse(
            &format!("[datastore.d]\nkind = \"{kind}\"\nroot = \"{root}\"\n"),
            "test.toml",
        )
        .unwrap()
    }

    #[test]
    fn mounts_are_checked_for_their_type() {
        let ok = config("glusterfs", "/mnt/gv0/data");
        assert!(check_mount("d", &ok.entries["d"], MOUNTINFO).is_ok());
        let nfs = config("nfs-mount", "/mnt/nfs");
        assert!(check_mount("d", &nfs.entries["d"], MOUNTINFO).is_ok());
        let wrong = config("glusterfs", "/data/x");
        let e = check_mount("d", &wrong.entries["d"], MOUNTINFO).unwrap_err();
        assert!(
            e.to_string()
                .contains("a ext4 filesystem, not fuse.glusterfs"),
            "{e}"
        );
    }

    #[test]
    fn names_resolve_and_unknown_ones_are_clear() {
        let ds = config("posix", "/srv/data");
        match ds.resolve("ds://d/in/x.txt").unwrap() {
            Location::Local(p) => assert_eq!(p, Path::new("/srv/data/in/x.txt")),
            Location::Object { .. } => panic!("posix is local"),
        }
        let e = ds.resolve("ds://nope/x").err().unwrap().to_string();
        assert!(e.contains("nope") && e.contains("known: d"), "{e}");
        let s3 = Datastores::parse(
            "[datastore.lake]\nkind = \"s3\"\nroot = \"s3://b/pre/fix\"\nendpoint = \"http://127.0.0.1:1\"\npath_style = true\n",
            "t",
        )
        .unwrap();
        match s3.resolve("ds://lake/a/b.txt").unwrap() {
            Location::Object {
                path,
                base,
                root_prefix,
                ..
            } => {
                assert_eq!(path.as_ref(), "pre/fix/a/b.txt");
                assert_eq!(
                    (base.as_str(), root_prefix.as_str()),
                    ("ds://lake", "pre/fix")
                );
            }
            Location::Local(_) => panic!("s3 is an object store"),
        }
        let bad = Datastores::parse("[datastore.x]\nkind = \"tape\"\nroot = \"/\"\n", "f.toml");
        assert!(bad.err().unwrap().to_string().contains("f.toml"));
    }
}
