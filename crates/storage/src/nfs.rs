//! Kind `nfs`: an NFSv3 export reached with a userspace client (`nfs3_client`), with no mount and
//! no privileges, so that executors in unprivileged containers can read and write NFS. It is an
//! [`ObjectStore`] and a [`MultipartStore`], so listing, ranged reads and the output commit
//! protocol above it are the ones S3 uses.
//!
//! Keys are paths below the export's root. Writes go to a hidden file under `.sluice-uploads/`
//! at the export's root and are renamed into place (NFS RENAME is atomic on the server), so a
//! reader never sees half an object. A create-only put is a LINK of that file, which the server
//! refuses when the name exists: the exclusive job commit needs no lock service here either.
//! A multipart upload keeps each part in its own file and renames the first part into place
//! after appending the others (one server-side copy of parts 2..n; Sluice's own uploads of up to
//! 8 MiB are a single part and are renamed without any copy).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use nfs3_client::nfs3_types::nfs3::{
    self, diropargs3, fattr3, filename3, ftype3, nfs_fh3, nfsstat3, sattr3, stable_how, Nfs3Option,
    Nfs3Result,
};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3Client, Nfs3ConnectionBuilder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, Error, GetOptions, GetRange, GetResult, GetResultPayload,
    ListResult, MultipartId, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, RenameTargetMode,
    Result, UploadPart,
};
use tokio::net::TcpStream;

/// Hidden directory at the export's root holding writes in progress; never listed.
const UPLOADS: &str = ".sluice-uploads";
/// Bytes per READ or WRITE call (servers accept at least this; ganesha's default max is 1 MiB).
const IO_CHUNK: usize = 1 << 20;
const STORE: &str = "NFS";

type Client = Nfs3Client<TokioIo<TcpStream>>;

/// Where an NFSv3 server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NfsServer {
    /// Server address (an IP address).
    pub host: String,
    /// NFS port; with `mount_port`, the portmapper is not asked.
    pub port: Option<u16>,
    /// MOUNT protocol port.
    pub mount_port: Option<u16>,
}

impl NfsServer {
    /// `host` or `host:port`, as in a URI.
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

/// An NFSv3 export as an object store.
#[derive(Clone)]
pub struct NfsStore {
    inner: Arc<Inner>,
}

struct Inner {
    server: NfsServer,
    export: String,
    root: nfs_fh3,
    credential: opaque_auth<'static>,
    pool: Mutex<Vec<Client>>,
    /// Directory handles by path: a directory's handle is stable while it exists.
    dirs: Mutex<HashMap<String, nfs_fh3>>,
}

impl fmt::Debug for NfsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NfsStore({self})")
    }
}

impl fmt::Display for NfsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nfs://{}{}", self.inner.server.host, self.inner.export)
    }
}

fn generic(msg: impl Into<String>) -> Error {
    Error::Generic {
        store: STORE,
        source: msg.into().into(),
    }
}

/// The caller's uid and gid (the owner of /proc/self), sent as AUTH_UNIX credentials.
fn own_ids() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| (m.uid(), m.gid()))
        .unwrap_or((65534, 65534))
}

fn credential() -> opaque_auth<'static> {
    let (uid, gid) = own_ids();
    opaque_auth::auth_unix(&auth_unix {
        stamp: std::process::id(),
        machinename: Opaque::owned(b"sluice".to_vec()),
        uid,
        gid,
        gids: vec![gid],
    })
}

async fn mount(
    server: &NfsServer,
    export: &str,
    credential: &opaque_auth<'static>,
) -> std::result::Result<(Client, nfs_fh3), String> {
    let mut b = Nfs3ConnectionBuilder::new(TokioConnector, &server.host, export)
        .connect_from_privileged_port(false)
        .credential(credential.clone());
    if let Some(p) = server.port {
        b = b.nfs3_port(p);
    }
    if let Some(p) = server.mount_port {
        b = b.mount_port(p);
    }
    let conn = b.mount().await.map_err(|e| e.to_string())?;
    let root = conn.root_nfs_fh3();
    Ok((conn.into_nfs3_client(), root))
}

impl NfsStore {
    /// Mounts the export of `server` holding `path` (`/export/dir/...`): the shortest leading
    /// part of `path` that the server exports. Returns the store and the rest of `path`, which
    /// is a key prefix in it.
    pub async fn connect(server: NfsServer, path: &str) -> Result<(NfsStore, String)> {
        let server2 = server.clone();
        let path = path.to_string();
        crate::datastore::io_runtime()
            .spawn(async move { Self::connect_here(server2, &path).await })
            .await?
    }

    async fn connect_here(server: NfsServer, path: &str) -> Result<(NfsStore, String)> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let credential = credential();
        let mut last = String::from("the export list is empty");
        for n in 1..=parts.len().max(1) {
            let export = format!("/{}", parts[..n.min(parts.len())].join("/"));
            match mount(&server, &export, &credential).await {
                Ok((client, root)) => {
                    let store = NfsStore {
                        inner: Arc::new(Inner {
                            server,
                            export,
                            root,
                            credential,
                            pool: Mutex::new(vec![client]),
                            dirs: Mutex::new(HashMap::new()),
                        }),
                    };
                    return Ok((store, parts[n.min(parts.len())..].join("/")));
                }
                Err(e) if e.contains("Connection refused") || e.contains("onnection reset") => {
                    return Err(generic(format!(
                        "cannot reach the NFS server at {} ({e}): is it running, and is the \
                         portmapper (rpcbind) answering?",
                        server.host
                    )));
                }
                Err(e) => last = format!("mounting {export}: {e}"),
            }
        }
        Err(generic(format!(
            "{} exports no leading part of {path} ({last}): check the export path",
            server.host
        )))
    }

    /// The export's path on the server.
    pub fn export(&self) -> &str {
        &self.inner.export
    }

    /// Runs `f` on the storage I/O runtime, which owns every connection of this store: a
    /// connection made on one runtime does not work on another.
    async fn io<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        crate::datastore::io_runtime()
            .spawn(f(self.inner.clone()))
            .await?
    }
}

/// A pooled connection; dropped (not returned) after a transport error.
struct Conn<'a> {
    inner: &'a Inner,
    client: Option<Client>,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            self.inner
                .pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(c);
        }
    }
}

/// Turns an RPC reply into its value, an NFS status into an error naming `what`.
macro_rules! call {
    ($conn:expr, $what:expr, $method:ident($args:expr)) => {{
        match $conn.client.as_mut() {
            None => Err(generic(format!(
                "{}: the connection to the NFS server broke earlier in this operation",
                $what
            ))),
            Some(c) => match c.$method($args).await {
                Ok(Nfs3Result::Ok(ok)) => Ok(ok),
                Ok(Nfs3Result::Err((status, _))) => Err(status_error(status, $what)),
                Err(e) => {
                    $conn.client = None;
                    Err(generic(format!("{}: {e}", $what)))
                }
            },
        }
    }};
}

fn status_error(status: nfsstat3, what: &str) -> Error {
    let source = format!("{what}: {status}").into();
    match status {
        nfsstat3::NFS3ERR_NOENT | nfsstat3::NFS3ERR_STALE => Error::NotFound {
            path: what.to_string(),
            source,
        },
        nfsstat3::NFS3ERR_EXIST => Error::AlreadyExists {
            path: what.to_string(),
            source,
        },
        nfsstat3::NFS3ERR_ACCES | nfsstat3::NFS3ERR_PERM | nfsstat3::NFS3ERR_ROFS => {
            Error::PermissionDenied {
                path: what.to_string(),
                source,
            }
        }
        _ => Error::Generic {
            store: STORE,
            source,
        },
    }
}

fn name(s: &str) -> filename3<'static> {
    filename3(Opaque::owned(s.as_bytes().to_vec()))
}

fn meta(location: Path, a: &fattr3) -> ObjectMeta {
    let mtime: std::time::SystemTime = a.mtime.into();
    ObjectMeta {
        location,
        last_modified: mtime.into(),
        size: a.size,
        e_tag: Some(format!(
            "{:x}-{:x}-{:x}",
            a.fileid, a.mtime.seconds, a.mtime.nseconds
        )),
        version: None,
    }
}

fn unique() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn file_attrs() -> sattr3 {
    sattr3 {
        mode: Nfs3Option::Some(0o644),
        ..Default::default()
    }
}

impl Inner {
    async fn conn(&self) -> Result<Conn<'_>> {
        let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let client = match pooled {
            Some(c) => c,
            None => {
                mount(&self.server, &self.export, &self.credential)
                    .await
                    .map_err(|e| generic(format!("connecting to {}: {e}", self.server.host)))?
                    .0
            }
        };
        Ok(Conn {
            inner: self,
            client: Some(client),
        })
    }

    fn cached_dir(&self, path: &str) -> Option<nfs_fh3> {
        if path.is_empty() {
            return Some(self.root.clone());
        }
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned()
    }

    fn forget_dir(&self, path: &str) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k, _| k != path && !k.starts_with(&format!("{path}/")));
    }

    /// The handle and attributes of `path` (a file or a directory).
    async fn lookup(&self, c: &mut Conn<'_>, path: &str) -> Result<(nfs_fh3, fattr3)> {
        let (dir, base) = match path.rsplit_once('/') {
            Some((d, b)) => (self.dir(c, d, false).await?, b),
            None if path.is_empty() => {
                let a = call!(
                    c,
                    "/",
                    getattr(&nfs3::GETATTR3args {
                        object: self.root.clone()
                    })
                )?;
                return Ok((self.root.clone(), a.obj_attributes));
            }
            None => (self.root.clone(), path),
        };
        let r = call!(
            c,
            path,
            lookup(&nfs3::LOOKUP3args {
                what: diropargs3 {
                    dir,
                    name: name(base),
                },
            })
        )?;
        let attrs = match r.obj_attributes {
            Nfs3Option::Some(a) => a,
            Nfs3Option::None => {
                call!(
                    c,
                    path,
                    getattr(&nfs3::GETATTR3args {
                        object: r.object.clone()
                    })
                )?
                .obj_attributes
            }
        };
        Ok((r.object, attrs))
    }

    /// The handle of `base` in directory `dir` (`path` names it in errors).
    async fn lookup_in(
        &self,
        c: &mut Conn<'_>,
        dir: &nfs_fh3,
        base: &str,
        path: &str,
    ) -> Result<nfs_fh3> {
        let r = call!(
            c,
            path,
            lookup(&nfs3::LOOKUP3args {
                what: diropargs3 {
                    dir: dir.clone(),
                    name: name(base),
                },
            })
        )?;
        Ok(r.object)
    }

    /// The handle of directory `path`, made (with its parents) when `create`.
    async fn dir(&self, c: &mut Conn<'_>, path: &str, create: bool) -> Result<nfs_fh3> {
        if let Some(fh) = self.cached_dir(path) {
            return Ok(fh);
        }
        let mut fh = self.root.clone();
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if let Some(h) = self.cached_dir(&at) {
                fh = h;
                continue;
            }
            let found = call!(
                c,
                &at,
                lookup(&nfs3::LOOKUP3args {
                    what: diropargs3 {
                        dir: fh.clone(),
                        name: name(part),
                    },
                })
            );
            fh = match found {
                Ok(r) => {
                    if let Nfs3Option::Some(a) = &r.obj_attributes {
                        if !matches!(a.type_, ftype3::NF3DIR) {
                            return Err(generic(format!("{at} is a file, not a directory")));
                        }
                    }
                    r.object
                }
                Err(Error::NotFound { .. }) if create => {
                    let made = call!(
                        c,
                        &at,
                        mkdir(&nfs3::MKDIR3args {
                            where_: diropargs3 {
                                dir: fh.clone(),
                                name: name(part),
                            },
                            attributes: sattr3 {
                                mode: Nfs3Option::Some(0o755),
                                ..Default::default()
                            },
                        })
                    );
                    match made {
                        Ok(m) => match m.obj {
                            Nfs3Option::Some(h) => h,
                            Nfs3Option::None => self.lookup_in(c, &fh, part, &at).await?,
                        },
                        // Made at the same moment by another writer.
                        Err(Error::AlreadyExists { .. }) => {
                            self.lookup_in(c, &fh, part, &at).await?
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            };
            self.dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(at.clone(), fh.clone());
        }
        Ok(fh)
    }

    /// Writes `data` to a new hidden file under `.sluice-uploads/DIR/`, committed to stable
    /// storage; returns its path.
    async fn write_temp(
        &self,
        c: &mut Conn<'_>,
        dir: &str,
        file: &str,
        data: &PutPayload,
    ) -> Result<String> {
        let dir_path = format!("{UPLOADS}/{dir}");
        let dir_fh = self.dir(c, &dir_path, true).await?;
        let path = format!("{dir_path}/{file}");
        let made = call!(
            c,
            &path,
            create(&nfs3::CREATE3args {
                where_: diropargs3 {
                    dir: dir_fh,
                    name: name(file),
                },
                how: nfs3::createhow3::UNCHECKED(file_attrs()),
            })
        )?;
        let fh = match made.obj {
            Nfs3Option::Some(h) => h,
            Nfs3Option::None => self.lookup(c, &path).await?.0,
        };
        let mut offset = 0u64;
        for chunk in data.iter() {
            offset = self.write_at(c, &path, &fh, offset, chunk).await?;
        }
        self.commit(c, &path, &fh).await?;
        Ok(path)
    }

    /// Writes `bytes` at `offset` (unstable, committed later); returns the offset after them.
    async fn write_at(
        &self,
        c: &mut Conn<'_>,
        path: &str,
        fh: &nfs_fh3,
        mut offset: u64,
        bytes: &[u8],
    ) -> Result<u64> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = rest.len().min(IO_CHUNK);
            let w = call!(
                c,
                path,
                write(&nfs3::WRITE3args {
                    file: fh.clone(),
                    offset,
                    count: n as u32,
                    stable: stable_how::UNSTABLE,
                    data: Opaque::borrowed(&rest[..n]),
                })
            )?;
            if w.count == 0 {
                return Err(generic(format!(
                    "{path}: the server wrote nothing at {offset}"
                )));
            }
            offset += u64::from(w.count);
            rest = &rest[w.count as usize..];
        }
        Ok(offset)
    }

    async fn commit(&self, c: &mut Conn<'_>, path: &str, fh: &nfs_fh3) -> Result<()> {
        call!(
            c,
            path,
            commit(&nfs3::COMMIT3args {
                file: fh.clone(),
                offset: 0,
                count: 0,
            })
        )?;
        Ok(())
    }

    /// Moves `from` to `to` (making `to`'s directory); with `create`, fails if `to` exists.
    async fn place(&self, c: &mut Conn<'_>, from: &str, to: &str, create: bool) -> Result<()> {
        let (from_dir, from_name) = split(from);
        let (to_dir, to_name) = split(to);
        let from_fh = self.dir(c, from_dir, false).await?;
        let to_fh = self.dir(c, to_dir, true).await?;
        if create {
            let (file, _) = self.lookup(c, from).await?;
            let linked = call!(
                c,
                to,
                link(&nfs3::LINK3args {
                    file,
                    link: diropargs3 {
                        dir: to_fh,
                        name: name(to_name),
                    },
                })
            );
            let removed = self.remove(c, from).await;
            linked.map_err(|e| match e {
                Error::AlreadyExists { source, .. } => Error::AlreadyExists {
                    path: to.to_string(),
                    source,
                },
                e => e,
            })?;
            return removed;
        }
        call!(
            c,
            to,
            rename(&nfs3::RENAME3args {
                from: diropargs3 {
                    dir: from_fh,
                    name: name(from_name),
                },
                to: diropargs3 {
                    dir: to_fh,
                    name: name(to_name),
                },
            })
        )?;
        Ok(())
    }

    async fn remove(&self, c: &mut Conn<'_>, path: &str) -> Result<()> {
        let (dir, base) = split(path);
        let dir_fh = self.dir(c, dir, false).await?;
        call!(
            c,
            path,
            remove(&nfs3::REMOVE3args {
                object: diropargs3 {
                    dir: dir_fh,
                    name: name(base),
                },
            })
        )?;
        Ok(())
    }

    async fn rmdir(&self, c: &mut Conn<'_>, path: &str) -> Result<()> {
        let (dir, base) = split(path);
        let dir_fh = self.dir(c, dir, false).await?;
        self.forget_dir(path);
        call!(
            c,
            path,
            rmdir(&nfs3::RMDIR3args {
                object: diropargs3 {
                    dir: dir_fh,
                    name: name(base),
                },
            })
        )?;
        Ok(())
    }

    /// Entries of directory `path`: (name, handle, attributes), without `.`, `..` and the
    /// hidden uploads directory.
    async fn read_dir(
        &self,
        c: &mut Conn<'_>,
        path: &str,
    ) -> Result<Vec<(String, nfs_fh3, fattr3)>> {
        let fh = self.dir(c, path, false).await?;
        let mut out = Vec::new();
        let mut cookie = 0;
        let mut cookieverf = nfs3::cookieverf3::default();
        loop {
            let r = call!(
                c,
                path,
                readdirplus(&nfs3::READDIRPLUS3args {
                    dir: fh.clone(),
                    cookie,
                    cookieverf,
                    dircount: 64 * 1024,
                    maxcount: 256 * 1024,
                })
            )?;
            cookieverf = r.cookieverf;
            let eof = r.reply.eof;
            let entries = r.reply.entries.into_inner();
            let Some(last) = entries.last() else {
                break;
            };
            cookie = last.cookie;
            for e in entries {
                let n = String::from_utf8_lossy(&e.name.0 .0).into_owned();
                if n == "." || n == ".." || (path.is_empty() && n == UPLOADS) {
                    continue;
                }
                let child = join(path, &n);
                let (h, a) = match (e.name_handle, e.name_attributes) {
                    (Nfs3Option::Some(h), Nfs3Option::Some(a)) => (h, a),
                    _ => match self.lookup(c, &child).await {
                        Ok(x) => x,
                        // Removed while we listed.
                        Err(Error::NotFound { .. }) => continue,
                        Err(e) => return Err(e),
                    },
                };
                out.push((n, h, a));
            }
            if eof {
                break;
            }
        }
        Ok(out)
    }

    /// Every file below directory `prefix` (none when it does not exist or is a file).
    async fn walk(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut c = self.conn().await?;
        let mut out = Vec::new();
        let mut todo = vec![prefix.to_string()];
        while let Some(dir) = todo.pop() {
            let entries = match self.read_dir(&mut c, &dir).await {
                Ok(e) => e,
                Err(Error::NotFound { .. }) if dir == prefix => return Ok(out),
                Err(Error::NotFound { .. }) => continue,
                Err(e) if dir == prefix && e.to_string().contains("not a directory") => {
                    return Ok(out);
                }
                Err(e) => return Err(e),
            };
            for (n, h, a) in entries {
                let child = join(&dir, &n);
                match a.type_ {
                    ftype3::NF3DIR => {
                        self.dirs
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(child.clone(), h);
                        todo.push(child);
                    }
                    ftype3::NF3REG => out.push(meta(Path::from(child.as_str()), &a)),
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Reads `range` of file `fh` in chunks, sending each to `tx`.
    async fn read_into(
        &self,
        path: &str,
        fh: nfs_fh3,
        range: Range<u64>,
        tx: tokio::sync::mpsc::Sender<Result<Bytes>>,
    ) {
        let mut c = match self.conn().await {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let mut offset = range.start;
        while offset < range.end {
            let count = (range.end - offset).min(IO_CHUNK as u64) as u32;
            let r = call!(
                c,
                path,
                read(&nfs3::READ3args {
                    file: fh.clone(),
                    offset,
                    count,
                })
            );
            let item = match r {
                Ok(r) if r.data.0.is_empty() => Err(generic(format!(
                    "{path}: the file ended at byte {offset}, before {} (it changed while read)",
                    range.end
                ))),
                Ok(r) => {
                    offset += r.data.0.len() as u64;
                    Ok(Bytes::from(r.data.0.into_owned()))
                }
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    }

    /// Data of file `path`, whole.
    async fn read_all(&self, c: &mut Conn<'_>, path: &str) -> Result<(nfs_fh3, Vec<u8>)> {
        let (fh, a) = self.lookup(c, path).await?;
        let mut out = Vec::with_capacity(a.size as usize);
        loop {
            let r = call!(
                c,
                path,
                read(&nfs3::READ3args {
                    file: fh.clone(),
                    offset: out.len() as u64,
                    count: IO_CHUNK as u32,
                })
            )?;
            out.extend_from_slice(&r.data.0);
            if r.eof || r.data.0.is_empty() {
                break;
            }
        }
        Ok((fh, out))
    }
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn byte_range(r: Option<&GetRange>, size: u64, path: &str) -> Result<Range<u64>> {
    let range = match r {
        None => 0..size,
        Some(GetRange::Bounded(r)) => r.start..r.end.min(size),
        Some(GetRange::Offset(o)) => *o..size,
        Some(GetRange::Suffix(n)) => size.saturating_sub(*n)..size,
    };
    if range.start > range.end || (range.start >= size && size > 0) {
        return Err(generic(format!(
            "{path}: range {}..{} is outside the file's {size} bytes",
            range.start, range.end
        )));
    }
    Ok(range)
}

#[async_trait]
impl ObjectStore for NfsStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let create = match opts.mode {
            PutMode::Overwrite => false,
            PutMode::Create => true,
            PutMode::Update(_) => {
                return Err(Error::NotImplemented {
                    operation: "put with PutMode::Update".into(),
                    implementer: STORE.into(),
                })
            }
        };
        let to = location.to_string();
        self.io(move |inner| async move {
            let mut c = inner.conn().await?;
            let tmp = inner.write_temp(&mut c, "put", &unique(), &payload).await?;
            let placed = inner.place(&mut c, &tmp, &to, create).await;
            if placed.is_err() {
                let _ = inner.remove(&mut c, &tmp).await;
            }
            placed?;
            let (_, a) = inner.lookup(&mut c, &to).await?;
            Ok(PutResult {
                e_tag: meta(Path::from(to.as_str()), &a).e_tag,
                version: None,
                extensions: Default::default(),
            })
        })
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let id = self.create_multipart(location).await?;
        Ok(Box::new(Upload {
            store: self.clone(),
            path: location.clone(),
            id,
            next: 0,
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let path = location.to_string();
        let (fh, a) = {
            let path = path.clone();
            self.io(move |inner| async move {
                let mut c = inner.conn().await?;
                inner.lookup(&mut c, &path).await
            })
            .await?
        };
        if !matches!(a.type_, ftype3::NF3REG) {
            return Err(Error::NotFound {
                path: path.clone(),
                source: format!("{path} is not a file").into(),
            });
        }
        let object = meta(location.clone(), &a);
        let range = byte_range(options.range.as_ref(), a.size, &path)?;
        let payload = if options.head || range.is_empty() {
            stream::empty().boxed()
        } else {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let inner = self.inner.clone();
            let r = range.clone();
            crate::datastore::io_runtime()
                .spawn(async move { inner.read_into(&path, fh, r, tx).await });
            stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }).boxed()
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta: object,
            range,
            attributes: Attributes::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let store = self.clone();
        locations
            .and_then(move |p| {
                let store = store.clone();
                async move {
                    let path = p.to_string();
                    store
                        .io(move |inner| async move {
                            let mut c = inner.conn().await?;
                            match inner.remove(&mut c, &path).await {
                                Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
                                Err(e) => Err(e),
                            }
                        })
                        .await?;
                    Ok(p)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let store = self.clone();
        let prefix = prefix.map(|p| p.to_string()).unwrap_or_default();
        stream::once(async move {
            store
                .io(move |inner| async move { inner.walk(&prefix).await })
                .await
        })
        .map_ok(|v| stream::iter(v.into_iter().map(Ok)))
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let prefix = prefix.map(|p| p.to_string()).unwrap_or_default();
        self.io(move |inner| async move {
            let mut c = inner.conn().await?;
            let entries = match inner.read_dir(&mut c, &prefix).await {
                Ok(e) => e,
                Err(Error::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
            let mut out = ListResult {
                common_prefixes: Vec::new(),
                objects: Vec::new(),
                extensions: Default::default(),
            };
            for (n, _, a) in entries {
                let child = Path::from(join(&prefix, &n).as_str());
                match a.type_ {
                    ftype3::NF3DIR => out.common_prefixes.push(child),
                    ftype3::NF3REG => out.objects.push(meta(child, &a)),
                    _ => {}
                }
            }
            Ok(out)
        })
        .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let create = matches!(options.mode, CopyMode::Create);
        let (from, to) = (from.to_string(), to.to_string());
        self.io(move |inner| async move {
            let mut c = inner.conn().await?;
            let (_, data) = inner.read_all(&mut c, &from).await?;
            let payload = PutPayload::from(data);
            let tmp = inner.write_temp(&mut c, "put", &unique(), &payload).await?;
            let placed = inner.place(&mut c, &tmp, &to, create).await;
            if placed.is_err() {
                let _ = inner.remove(&mut c, &tmp).await;
            }
            placed
        })
        .await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let create = matches!(options.target_mode, RenameTargetMode::Create);
        let (from, to) = (from.to_string(), to.to_string());
        self.io(move |inner| async move {
            let mut c = inner.conn().await?;
            inner.place(&mut c, &from, &to, create).await
        })
        .await
    }
}

/// Files of upload `id`: `.sluice-uploads/mp/ID/PART`.
fn upload_dir(id: &str) -> String {
    format!("mp/{id}")
}

#[async_trait]
impl MultipartStore for NfsStore {
    async fn create_multipart(&self, _path: &Path) -> Result<MultipartId> {
        let id = unique();
        let dir = format!("{UPLOADS}/{}", upload_dir(&id));
        self.io(move |inner| async move {
            let mut c = inner.conn().await?;
            inner.dir(&mut c, &dir, true).await?;
            Ok(())
        })
        .await?;
        Ok(id)
    }

    async fn put_part(
        &self,
        _path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> Result<PartId> {
        let dir = upload_dir(id);
        let file = format!("{part_idx:06}");
        self.io(move |inner| async move {
            let mut c = inner.conn().await?;
            // The upload's directory is gone once it is aborted: a late part must not make it
            // again.
            inner
                .dir(&mut c, &format!("{UPLOADS}/{dir}"), false)
                .await?;
            inner.write_temp(&mut c, &dir, &file, &data).await?;
            Ok(PartId { content_id: file })
        })
        .await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> Result<PutResult> {
        let rel = upload_dir(id);
        let dir = format!("{UPLOADS}/{rel}");
        let to = path.to_string();
        self.io(move |inner| async move {
            let mut c = inner.conn().await?;
            let Some((first, rest)) = parts.split_first() else {
                // An upload of no parts is an empty object.
                let tmp = inner
                    .write_temp(&mut c, &rel, "empty", &PutPayload::default())
                    .await?;
                inner.place(&mut c, &tmp, &to, false).await?;
                let _ = inner.rmdir(&mut c, &dir).await;
                return Ok(put_result());
            };
            let head = format!("{dir}/{}", first.content_id);
            if !rest.is_empty() {
                let (fh, a) = inner.lookup(&mut c, &head).await?;
                let mut offset = a.size;
                for p in rest {
                    let (_, data) = inner
                        .read_all(&mut c, &format!("{dir}/{}", p.content_id))
                        .await?;
                    offset = inner.write_at(&mut c, &head, &fh, offset, &data).await?;
                }
                inner.commit(&mut c, &head, &fh).await?;
            }
            inner.place(&mut c, &head, &to, false).await?;
            for p in rest {
                let _ = inner
                    .remove(&mut c, &format!("{dir}/{}", p.content_id))
                    .await;
            }
            let _ = inner.rmdir(&mut c, &dir).await;
            Ok(put_result())
        })
        .await
    }

    async fn abort_multipart(&self, _path: &Path, id: &MultipartId) -> Result<()> {
        let dir = format!("{UPLOADS}/{}", upload_dir(id));
        self.io(move |inner| async move {
            let mut c = inner.conn().await?;
            let entries = match inner.read_dir(&mut c, &dir).await {
                Ok(e) => e,
                Err(Error::NotFound { .. }) => return Ok(()),
                Err(e) => return Err(e),
            };
            for (n, _, _) in entries {
                match inner.remove(&mut c, &format!("{dir}/{n}")).await {
                    Ok(()) | Err(Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            match inner.rmdir(&mut c, &dir).await {
                Ok(()) | Err(Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

fn put_result() -> PutResult {
    PutResult {
        e_tag: None,
        version: None,
        extensions: Default::default(),
    }
}

/// `put_multipart` through the multipart API: parts may be written at once, each to its file.
#[derive(Debug)]
struct Upload {
    store: NfsStore,
    path: Path,
    id: MultipartId,
    next: usize,
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (store, path, id, idx) = (
            self.store.clone(),
            self.path.clone(),
            self.id.clone(),
            self.next,
        );
        self.next += 1;
        Box::pin(async move {
            store.put_part(&path, &id, idx, data).await?;
            Ok(())
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let parts = (0..self.next)
            .map(|i| PartId {
                content_id: format!("{i:06}"),
            })
            .collect();
        self.store
            .complete_multipart(&self.path, &self.id, parts)
            .await
    }

    async fn abort(&mut self) -> Result<()> {
        self.store.abort_multipart(&self.path, &self.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_clamped_and_checked() {
        let r = |g: GetRange| byte_range(Some(&g), 100, "f");
        assert_eq!(r(GetRange::Bounded(10..20)).unwrap(), 10..20);
        assert_eq!(r(GetRange::Bounded(90..200)).unwrap(), 90..100);
        assert_eq!(r(GetRange::Offset(40)).unwrap(), 40..100);
        assert_eq!(r(GetRange::Suffix(30)).unwrap(), 70..100);
        assert!(r(GetRange::Bounded(100..120)).is_err());
        assert_eq!(byte_range(None, 0, "f").unwrap(), 0..0);
    }
}
