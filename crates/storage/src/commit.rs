//! The output committer. On a POSIX filesystem (local disk, or a mounted datastore) task
//! attempts write under `OUTPUT/_temporary/`, one attempt per task is renamed into place, and
//! the job commit hard-links `_SUCCESS` (with the manifest) into place. On an object store
//! attempts write to a local staging directory, upload it as a multipart upload straight to
//! the final key, and complete the upload only when the coordinator lets that attempt commit;
//! the job commit is a conditional put of `_SUCCESS`. Both job commits fail when `_SUCCESS`
//! exists, so of two jobs racing to one output exactly one commits, with no lock service.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::datastore::{block_on, Datastores, Location};
use crate::error::io;
use crate::StorageError;

/// Marker of a committed output, holding the JSON manifest.
pub const SUCCESS_FILE: &str = "_SUCCESS";
/// Where attempts write before they commit (POSIX outputs).
pub const TEMP_DIR: &str = "_temporary";
/// Where an object-store output records its attempts' open multipart uploads, so that the job
/// commit or abort can abort those of attempts that died (small JSON records, never data).
pub const PENDING_DIR: &str = "_pending";
/// Parts of a multipart upload; S3 wants at least 5 MiB for every part but the last.
const PART_SIZE: usize = 8 << 20;

/// One committed file in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// File name relative to the output directory.
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
}

/// Contents of `_SUCCESS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The job that committed.
    pub job_id: String,
    /// The job's name.
    pub job: String,
    /// Output format.
    pub format: String,
    /// Every output file.
    pub files: Vec<ManifestFile>,
    /// Total rows.
    pub rows: u64,
    /// Total bytes.
    pub bytes: u64,
    /// Files of input records skipped as bad (`_bad_records/…`, JSON lines), not output rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bad_records: Vec<ManifestFile>,
}

/// Where skipped bad input records are committed, under the output.
pub const BAD_RECORDS_DIR: &str = "_bad_records";

/// Commit protocol for one output: a directory on a POSIX filesystem or a prefix in an object
/// store.
#[derive(Clone)]
pub struct OutputCommitter {
    target: Target,
    /// The output as the job names it, for messages and output URIs.
    uri: String,
    /// Local directory under which object-store attempts stage their files.
    staging: PathBuf,
}

#[derive(Clone)]
enum Target {
    Local(PathBuf),
    Object(ObjectOut),
}

#[derive(Clone)]
struct ObjectOut {
    store: Arc<dyn ObjectStore>,
    multipart: Arc<dyn MultipartStore>,
    /// The output's key prefix, without a trailing `/` (empty: the bucket's root).
    prefix: String,
    /// The datastore's name, for messages.
    name: String,
}

/// What an upload record under `_pending/` holds.
#[derive(Serialize, Deserialize)]
struct PendingUpload {
    key: String,
    upload_id: String,
}

/// A task attempt's output, written and (on an object store) uploaded, that is not yet
/// visible: `commit` makes it so, `abort` removes it.
pub struct StagedTask {
    committer: OutputCommitter,
    attempt_dir: PathBuf,
    uploads: Vec<StagedUpload>,
}

struct StagedUpload {
    name: String,
    key: ObjectPath,
    id: String,
    parts: Vec<PartId>,
    record: ObjectPath,
}

impl OutputCommitter {
    /// A committer for `output`: a path, a `file://` URI, `s3://bucket/prefix`, or
    /// `ds://NAME/path` of any datastore kind.
    pub fn open(output: &str) -> Result<Self, StorageError> {
        Self::open_with(Datastores::global()?, output)
    }

    /// As [`OutputCommitter::open`], resolving names in `datastores` rather than the
    /// process-wide ones.
    pub fn open_with(datastores: &Datastores, output: &str) -> Result<Self, StorageError> {
        let target = match datastores.resolve(output)? {
            Location::Local(p) => Target::Local(p),
            Location::Object {
                store,
                multipart,
                path,
                name,
                ..
            } => {
                let multipart = multipart.ok_or_else(|| StorageError::Datastore {
                    name: name.clone(),
                    reason: "this store has no multipart uploads, so Sluice cannot commit \
                             output to it; write the output elsewhere"
                        .into(),
                })?;
                Target::Object(ObjectOut {
                    store,
                    multipart,
                    prefix: path.as_ref().trim_matches('/').to_string(),
                    name,
                })
            }
        };
        Ok(OutputCommitter {
            target,
            uri: output.trim_end_matches('/').to_string(),
            staging: std::env::temp_dir().join("sluice-staging"),
        })
    }

    /// Stages object-store attempts under `dir` (an executor's work directory) rather than
    /// the system's temporary directory.
    pub fn with_staging(mut self, dir: impl Into<PathBuf>) -> Self {
        self.staging = dir.into();
        self
    }

    /// The output as its job names it.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The output directory, when the output is on a filesystem.
    pub fn local_root(&self) -> Option<&Path> {
        match &self.target {
            Target::Local(p) => Some(p),
            Target::Object(_) => None,
        }
    }

    /// Whether the output is in an object store (its I/O then needs a runtime: call from a
    /// blocking thread or outside any runtime).
    pub fn is_object_store(&self) -> bool {
        matches!(self.target, Target::Object(_))
    }

    /// Refuses an output that holds a committed job unless `overwrite`; writes nothing.
    pub fn check(&self, overwrite: bool) -> Result<(), StorageError> {
        if let Target::Object(o) = &self.target {
            // One listing request finds a missing bucket or bad credentials before any task
            // runs (a HEAD of a missing _SUCCESS would look the same in a missing bucket).
            let prefix = (!o.prefix.is_empty()).then(|| ObjectPath::from(o.prefix.as_str()));
            block_on(o.store.list_with_delimiter(prefix.as_ref()))
                .map_err(|e| self.object_error("checking", "", e))?;
        }
        if overwrite {
            return Ok(());
        }
        let committed = match &self.target {
            Target::Local(root) => root.join(SUCCESS_FILE).exists(),
            Target::Object(o) => {
                let key = o.key(SUCCESS_FILE);
                match block_on(o.store.head(&key)) {
                    Ok(_) => true,
                    Err(object_store::Error::NotFound { .. }) => false,
                    Err(e) => return Err(self.object_error("checking", SUCCESS_FILE, e)),
                }
            }
        };
        if committed {
            return Err(StorageError::OutputCommitted(self.uri.clone()));
        }
        Ok(())
    }

    /// Prepares the output for a new job: removes the old one when `overwrite`.
    pub fn setup_job(&self, overwrite: bool) -> Result<(), StorageError> {
        self.check(overwrite)?;
        match &self.target {
            Target::Local(root) => {
                if overwrite && root.exists() {
                    std::fs::remove_dir_all(root).map_err(io("removing old output", root))?;
                }
                let tmp = root.join(TEMP_DIR);
                std::fs::create_dir_all(&tmp).map_err(io("creating output directory", &tmp))
            }
            Target::Object(o) => {
                if overwrite {
                    // _SUCCESS first: from then on no reader takes the old output as whole.
                    o.delete_where(|rel| rel == SUCCESS_FILE)
                        .map_err(|e| self.object_error("removing old output", "", e))?;
                    o.delete_where(|_| true)
                        .map_err(|e| self.object_error("removing old output", "", e))?;
                }
                Ok(())
            }
        }
    }

    /// Where attempt `attempt` of `task` of `job_id` writes its files (a local directory).
    pub fn attempt_dir(&self, job_id: &str, task: &str, attempt: u32) -> PathBuf {
        let base = match &self.target {
            Target::Local(root) => root.join(TEMP_DIR),
            Target::Object(_) => self.staging.clone(),
        };
        base.join(job_id).join(format!("{task}_attempt{attempt}"))
    }

    /// Makes an attempt's files ready to commit without making them visible: on an object
    /// store, uploads each as a multipart upload to its final key (recorded under
    /// `_pending/JOB/`) and leaves it uncompleted.
    pub fn stage_task(&self, job_id: &str, attempt_dir: &Path) -> Result<StagedTask, StorageError> {
        let mut staged = StagedTask {
            committer: self.clone(),
            attempt_dir: attempt_dir.to_path_buf(),
            uploads: Vec::new(),
        };
        let Target::Object(o) = &self.target else {
            return Ok(staged);
        };
        let attempt = attempt_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for name in files_under(attempt_dir)? {
            let res = self.upload(o, job_id, &attempt, attempt_dir, &name);
            match res {
                Ok(u) => staged.uploads.push(u),
                Err(e) => {
                    staged.abort();
                    return Err(e);
                }
            }
        }
        Ok(staged)
    }

    fn upload(
        &self,
        o: &ObjectOut,
        job_id: &str,
        attempt: &str,
        dir: &Path,
        name: &str,
    ) -> Result<StagedUpload, StorageError> {
        let key = o.key(name);
        let failed = |e| self.object_error("uploading", name, e);
        let id = block_on(o.multipart.create_multipart(&key)).map_err(failed)?;
        // Recorded before any data goes up, so that a job commit or abort can abort the
        // upload of an attempt that dies from here on.
        let record = o.key(&format!("{PENDING_DIR}/{job_id}/{attempt}/{name}.json"));
        let json = serde_json::to_vec(&PendingUpload {
            key: key.to_string(),
            upload_id: id.clone(),
        })
        .unwrap_or_default();
        let mut up = StagedUpload {
            name: name.to_string(),
            key: key.clone(),
            id,
            parts: Vec::new(),
            record: record.clone(),
        };
        let written = (|| {
            block_on(o.store.put(&record, PutPayload::from(json))).map_err(failed)?;
            let path = dir.join(name);
            let mut f = std::fs::File::open(&path).map_err(io("reading", &path))?;
            let mut idx = 0;
            loop {
                let mut buf = Vec::with_capacity(PART_SIZE);
                let n = std::io::Read::by_ref(&mut f)
                    .take(PART_SIZE as u64)
                    .read_to_end(&mut buf)
                    .map_err(io("reading", &path))?;
                // An empty file still needs its one (empty) part.
                if n == 0 && idx > 0 {
                    break;
                }
                let part = block_on(
                    o.multipart
                        .put_part(&key, &up.id, idx, PutPayload::from(buf)),
                )
                .map_err(failed)?;
                up.parts.push(part);
                idx += 1;
                if n < PART_SIZE {
                    break;
                }
            }
            Ok(())
        })();
        match written {
            Ok(()) => Ok(up),
            Err(e) => {
                let _ = block_on(o.multipart.abort_multipart(&up.key, &up.id));
                let _ = block_on(o.store.delete(&up.record));
                Err(e)
            }
        }
    }

    /// Stages and commits an attempt's files at once; returns their final locations.
    pub fn commit_task(
        &self,
        job_id: &str,
        attempt_dir: &Path,
    ) -> Result<Vec<String>, StorageError> {
        self.stage_task(job_id, attempt_dir)?.commit()
    }

    /// Makes the job's output visible: writes `_SUCCESS` with the manifest, unless another
    /// job's `_SUCCESS` is there already, and removes the job's temporary files.
    pub fn commit_job(&self, manifest: &Manifest) -> Result<(), StorageError> {
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| StorageError::Manifest {
            path: PathBuf::from(format!("{}/{SUCCESS_FILE}", self.uri)),
            reason: e.to_string(),
        })?;
        let lost = || StorageError::CommitLost {
            output: self.uri.clone(),
            job_id: manifest.job_id.clone(),
        };
        match &self.target {
            Target::Local(root) => {
                let tmp = root.join(TEMP_DIR).join(&manifest.job_id);
                std::fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
                let staged = tmp.join(SUCCESS_FILE);
                {
                    use std::io::Write;
                    let mut f = std::fs::File::create(&staged).map_err(io("writing", &staged))?;
                    f.write_all(&json).map_err(io("writing", &staged))?;
                    // Durable before it becomes visible: a reader that sees _SUCCESS sees all.
                    f.sync_all().map_err(io("syncing", &staged))?;
                }
                let fin = root.join(SUCCESS_FILE);
                // A hard link, unlike a rename, fails when _SUCCESS exists.
                match std::fs::hard_link(&staged, &fin) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        self.remove_parts(manifest);
                        let _ = self.abort_job(&manifest.job_id);
                        return Err(lost());
                    }
                    Err(e) => return Err(io("writing", &fin)(e)),
                }
                if let Ok(d) = std::fs::File::open(root) {
                    let _ = d.sync_all();
                }
                std::fs::remove_dir_all(&tmp).map_err(io("removing", &tmp))?;
                self.prune(root, &root.join(TEMP_DIR));
                Ok(())
            }
            Target::Object(o) => {
                let opts = PutOptions {
                    mode: PutMode::Create,
                    ..Default::default()
                };
                let key = o.key(SUCCESS_FILE);
                match block_on(o.store.put_opts(&key, PutPayload::from(json), opts)) {
                    Ok(_) => {}
                    Err(
                        object_store::Error::AlreadyExists { .. }
                        | object_store::Error::Precondition { .. },
                    ) => {
                        self.remove_parts(manifest);
                        let _ = self.abort_job(&manifest.job_id);
                        return Err(lost());
                    }
                    Err(e) => return Err(self.object_error("writing", SUCCESS_FILE, e)),
                }
                self.abort_uploads(o, &manifest.job_id)
            }
        }
    }

    /// Removes the files a losing job committed (their names carry its job id).
    fn remove_parts(&self, manifest: &Manifest) {
        for f in manifest.files.iter().chain(&manifest.bad_records) {
            match &self.target {
                Target::Local(root) => {
                    let _ = std::fs::remove_file(root.join(&f.path));
                }
                Target::Object(o) => {
                    let _ = block_on(o.store.delete(&o.key(&f.path)));
                }
            }
        }
    }

    /// Removes what a failed or cancelled job left: its temporary files, its open uploads,
    /// and parts its tasks committed; a POSIX output directory left empty goes too.
    pub fn abort_job(&self, job_id: &str) -> Result<(), StorageError> {
        match &self.target {
            Target::Local(root) => {
                let tmp = root.join(TEMP_DIR).join(job_id);
                if tmp.exists() {
                    std::fs::remove_dir_all(&tmp).map_err(io("removing", &tmp))?;
                }
                for rel in files_under(root).unwrap_or_default() {
                    if !rel.starts_with(TEMP_DIR) && is_part_of(last_part(&rel), job_id) {
                        let p = root.join(&rel);
                        let _ = std::fs::remove_file(&p);
                        // A partition directory that held only this job's parts.
                        if let Some(dir) = p.parent().filter(|d| *d != root.as_path()) {
                            let _ = std::fs::remove_dir(dir);
                        }
                    }
                }
                self.prune(root, &root.join(TEMP_DIR));
                Ok(())
            }
            Target::Object(o) => {
                self.abort_uploads(o, job_id)?;
                o.delete_where(|rel| {
                    !rel.starts_with(PENDING_DIR) && is_part_of(last_part(rel), job_id)
                })
                .map_err(|e| self.object_error("removing parts of", job_id, e))?;
                let staged = self.staging.join(job_id);
                if staged.exists() {
                    let _ = std::fs::remove_dir_all(&staged);
                }
                Ok(())
            }
        }
    }

    /// Aborts every upload recorded under `_pending/JOB/` (attempts that died between upload
    /// and commit) and removes the records.
    fn abort_uploads(&self, o: &ObjectOut, job_id: &str) -> Result<(), StorageError> {
        let dir = format!("{PENDING_DIR}/{job_id}/");
        let records = o
            .list_rel()
            .map_err(|e| self.object_error("listing", &dir, e))?;
        for rel in records.into_iter().filter(|r| r.starts_with(&dir)) {
            let key = o.key(&rel);
            if let Ok(got) = block_on(async { o.store.get(&key).await?.bytes().await }) {
                if let Ok(p) = serde_json::from_slice::<PendingUpload>(&got) {
                    // A record can outlive a completed upload (killed between the two): S3
                    // then answers NoSuchUpload, which is fine.
                    let _ = block_on(
                        o.multipart
                            .abort_multipart(&ObjectPath::from(p.key), &p.upload_id),
                    );
                }
            }
            block_on(o.store.delete(&key)).map_err(|e| self.object_error("removing", &rel, e))?;
        }
        Ok(())
    }

    /// Removes an attempt that may not commit, and the directories it leaves empty.
    pub fn abort_task(&self, attempt_dir: &Path) -> Result<(), StorageError> {
        if attempt_dir.exists() {
            std::fs::remove_dir_all(attempt_dir).map_err(io("removing", attempt_dir))?;
        }
        if let Some(job_dir) = attempt_dir.parent() {
            let root = match &self.target {
                Target::Local(root) => root.clone(),
                Target::Object(_) => self.staging.clone(),
            };
            self.prune(&root, job_dir);
        }
        Ok(())
    }

    /// Removes `dir` and then its parents up to `root` while they are empty; a non-empty
    /// directory (another attempt's, a committed output) stops it.
    fn prune(&self, root: &Path, dir: &Path) {
        let mut d = Some(dir);
        while let Some(p) = d {
            if !p.starts_with(root) || std::fs::remove_dir(p).is_err() {
                return;
            }
            if p == root {
                return;
            }
            d = p.parent();
        }
    }

    /// The path of a committed file (as `StagedTask::commit` returns it) relative to the
    /// output, as the manifest names it.
    pub fn relative(&self, committed: &str) -> String {
        let prefix = match &self.target {
            Target::Local(root) => format!("{}/", root.display()),
            Target::Object(_) => format!("{}/", self.uri),
        };
        committed
            .strip_prefix(&prefix)
            .map(str::to_string)
            .unwrap_or_else(|| last_part(committed).to_string())
    }

    /// Reads the manifest of a committed output.
    pub fn read_manifest(&self) -> Result<Manifest, StorageError> {
        let bytes = self.read_file(SUCCESS_FILE)?;
        serde_json::from_slice(&bytes).map_err(|e| StorageError::Manifest {
            path: PathBuf::from(format!("{}/{SUCCESS_FILE}", self.uri)),
            reason: e.to_string(),
        })
    }

    /// Reads a file of the output by its path relative to the output (as the manifest names
    /// it).
    pub fn read_file(&self, rel: &str) -> Result<Vec<u8>, StorageError> {
        match &self.target {
            Target::Local(root) => {
                let p = root.join(rel);
                std::fs::read(&p).map_err(io("reading", &p))
            }
            Target::Object(o) => {
                let key = o.key(rel);
                block_on(async { o.store.get(&key).await?.bytes().await })
                    .map(|b| b.to_vec())
                    .map_err(|e| self.object_error("reading", rel, e))
            }
        }
    }

    /// Every object under the output (paths relative to it), for readers and tests; `None` on
    /// a POSIX output.
    pub fn list_objects(&self) -> Result<Option<Vec<String>>, StorageError> {
        match &self.target {
            Target::Local(_) => Ok(None),
            Target::Object(o) => o
                .list_rel()
                .map(Some)
                .map_err(|e| self.object_error("listing", "", e)),
        }
    }

    fn object_error(&self, op: &'static str, rel: &str, e: object_store::Error) -> StorageError {
        let name = match &self.target {
            Target::Object(o) => o.name.clone(),
            Target::Local(_) => String::new(),
        };
        StorageError::Object {
            op,
            uri: if rel.is_empty() {
                self.uri.clone()
            } else {
                format!("{}/{rel}", self.uri)
            },
            name,
            reason: crate::error::explain(&e),
        }
    }
}

/// The last `/`-separated component of `rel`.
fn last_part(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// Every file under `dir`, as paths relative to it with `/` separators, sorted.
fn files_under(dir: &Path) -> Result<Vec<String>, StorageError> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let abs = dir.join(&rel);
        for e in std::fs::read_dir(&abs).map_err(io("listing", &abs))? {
            let e = e.map_err(io("listing", &abs))?;
            let child = rel.join(e.file_name());
            if e.file_type().map_err(io("listing", &abs))?.is_dir() {
                todo.push(child);
            } else {
                out.push(child.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `name` is an output part written by job `job_id` (`part-...-JOBID.EXT`).
fn is_part_of(name: &str, job_id: &str) -> bool {
    name.starts_with("part-") && name.contains(&format!("-{job_id}."))
}

impl ObjectOut {
    fn key(&self, rel: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(rel)
        } else {
            ObjectPath::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// Every object under the prefix, relative to it.
    fn list_rel(&self) -> Result<Vec<String>, object_store::Error> {
        let prefix = (!self.prefix.is_empty()).then(|| ObjectPath::from(self.prefix.as_str()));
        let metas: Vec<_> = block_on(self.store.list(prefix.as_ref()).try_collect())?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                m.location
                    .as_ref()
                    .strip_prefix(strip.as_str())
                    .map(str::to_string)
            })
            .collect())
    }

    fn delete_where(&self, keep: impl Fn(&str) -> bool) -> Result<(), object_store::Error> {
        for rel in self.list_rel()? {
            if keep(&rel) {
                block_on(self.store.delete(&self.key(&rel)))?;
            }
        }
        Ok(())
    }
}

impl StagedTask {
    /// Makes the attempt's files visible; returns their final locations (paths on a
    /// filesystem, URIs in an object store).
    pub fn commit(self) -> Result<Vec<String>, StorageError> {
        let c = &self.committer;
        let mut done = Vec::new();
        match &c.target {
            Target::Local(root) => {
                let dir = &self.attempt_dir;
                for rel in files_under(dir)? {
                    let (src, dst) = (dir.join(&rel), root.join(&rel));
                    // A partitioned output's `COL=VALUE/` directory.
                    if let Some(parent) = dst.parent() {
                        std::fs::create_dir_all(parent).map_err(io("committing", parent))?;
                    }
                    std::fs::rename(&src, &dst).map_err(io("committing", &src))?;
                    done.push(dst.to_string_lossy().into_owned());
                }
                // Only directories are left.
                std::fs::remove_dir_all(dir).map_err(io("removing attempt", dir))?;
            }
            Target::Object(o) => {
                for u in &self.uploads {
                    block_on(
                        o.multipart
                            .complete_multipart(&u.key, &u.id, u.parts.clone()),
                    )
                    .map_err(|e| c.object_error("completing the upload of", &u.name, e))?;
                    let _ = block_on(o.store.delete(&u.record));
                    done.push(format!("{}/{}", c.uri, u.name));
                }
                let _ = c.abort_task(&self.attempt_dir);
            }
        }
        Ok(done)
    }

    /// Throws the attempt's output away: aborts its uploads and removes its local files.
    pub fn abort(&self) {
        let c = &self.committer;
        if let Target::Object(o) = &c.target {
            for u in &self.uploads {
                let _ = block_on(o.multipart.abort_multipart(&u.key, &u.id));
                let _ = block_on(o.store.delete(&u.record));
            }
        }
        let _ = c.abort_task(&self.attempt_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_two_jobs_committing_one_output_at_once_exactly_one_wins() {
        for round in 0..20 {
            let d = tempfile::tempdir().unwrap();
            let out = d.path().join("out");
            let out_s = out.to_string_lossy().into_owned();
            OutputCommitter::open(&out_s)
                .unwrap()
                .setup_job(false)
                .unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let handles: Vec<_> = ["ja", "jb"]
                .into_iter()
                .map(|job| {
                    let (out_s, barrier) = (out_s.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        // Each job's task commits its part first, as the executors do.
                        let c = OutputCommitter::open(&out_s).unwrap();
                        let a = c.attempt_dir(job, "r-00000", 1);
                        std::fs::create_dir_all(&a).unwrap();
                        let part = format!("part-r-00000-{job}.tsv");
                        std::fs::write(a.join(&part), job).unwrap();
                        c.commit_task(job, &a).unwrap();
                        let m = Manifest {
                            bad_records: Vec::new(),
                            job_id: job.into(),
                            job: "wordcount".into(),
                            format: "tsv".into(),
                            files: vec![ManifestFile {
                                path: part,
                                rows: 1,
                                bytes: 2,
                            }],
                            rows: 1,
                            bytes: 2,
                        };
                        barrier.wait();
                        OutputCommitter::open(&out_s)
                            .unwrap()
                            .commit_job(&m)
                            .map(|()| job)
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let winners: Vec<&str> = results
                .iter()
                .filter_map(|r| r.as_ref().ok().copied())
                .collect();
            assert_eq!(winners.len(), 1, "round {round}: {results:?}");
            let loser = results
                .iter()
                .find_map(|r| r.as_ref().err())
                .unwrap()
                .to_string();
            assert!(loser.contains("another job committed it first"), "{loser}");
            // The manifest is the winner's, whole.
            let m = OutputCommitter::open(&out_s)
                .unwrap()
                .read_manifest()
                .unwrap();
            assert_eq!(m.job_id, winners[0]);
            assert!(
                !out.join(TEMP_DIR).exists(),
                "round {round}: staging left behind"
            );
        }
    }

    #[test]
    fn commit_protocol_end_to_end() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let c = OutputCommitter::open(out.to_str().unwrap()).unwrap();
        c.setup_job(false).unwrap();
        let a = c.attempt_dir("j1", "r-00000", 1);
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("part-r-00000.tsv"), "x\t1\n").unwrap();
        let files = c.commit_task("j1", &a).unwrap();
        assert_eq!(files, vec![out.join("part-r-00000.tsv").to_string_lossy()]);
        let m = Manifest {
            bad_records: Vec::new(),
            job_id: "j1".into(),
            job: "wordcount".into(),
            format: "tsv".into(),
            files: vec![ManifestFile {
                path: "part-r-00000.tsv".into(),
                rows: 1,
                bytes: 4,
            }],
            rows: 1,
            bytes: 4,
        };
        c.commit_job(&m).unwrap();
        assert!(!out.join(TEMP_DIR).exists());
        assert_eq!(c.read_manifest().unwrap(), m);
        let e = c.setup_job(false).unwrap_err().to_string();
        assert!(e.contains("--overwrite"), "{e}");
        c.setup_job(true).unwrap();
        assert!(!out.join(SUCCESS_FILE).exists());
        let a2 = c.attempt_dir("j2", "r-00000", 1);
        let b2 = c.attempt_dir("j2", "r-00001", 1);
        std::fs::create_dir_all(&a2).unwrap();
        std::fs::create_dir_all(&b2).unwrap();
        c.abort_task(&a2).unwrap();
        assert!(b2.exists(), "a sibling attempt must survive");
        c.abort_job("j2").unwrap();
        assert!(!out.exists(), "an output left empty is removed");
    }
}
