//! The output committer: task attempts write under `OUTPUT/_temporary/`, one attempt per task
//! is renamed into place, and the job commit writes `_SUCCESS` with a manifest.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::io;
use crate::StorageError;

/// Marker of a committed output, holding the JSON manifest.
pub const SUCCESS_FILE: &str = "_SUCCESS";
/// Where attempts write before they commit.
pub const TEMP_DIR: &str = "_temporary";

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
}

/// Commit protocol for one output directory on a POSIX filesystem.
#[derive(Debug, Clone)]
pub struct OutputCommitter {
    root: PathBuf,
}

impl OutputCommitter {
    /// A committer for `output` (a path or `file://` URI).
    pub fn new(output: &str) -> Self {
        // A mounted datastore (`ds://NAME/...` of kind posix, glusterfs, nfs-mount) is a local
        // path; an object store is refused by `check`, before anything is written.
        let root = match crate::datastore::Datastores::global().map(|d| d.resolve(output)) {
            Ok(Ok(crate::datastore::Location::Local(p))) => p,
            _ => PathBuf::from(output.strip_prefix("file://").unwrap_or(output)),
        };
        OutputCommitter { root }
    }

    /// The output directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Refuses an output that holds a committed job unless `overwrite`; writes nothing.
    pub fn check(&self, overwrite: bool) -> Result<(), StorageError> {
        let out = self.root.to_string_lossy();
        if out.starts_with("s3://") || out.starts_with("ds://") {
            // An unknown or misconfigured datastore is the clearer error, so it comes first.
            crate::datastore::Datastores::global().and_then(|d| d.resolve(&out))?;
            return Err(StorageError::Datastore {
                name: out.into_owned(),
                reason: "committing output to an object store is not built yet; write the \
                         output to a local or mounted path"
                    .into(),
            });
        }
        if !overwrite && self.root.join(SUCCESS_FILE).exists() {
            return Err(StorageError::OutputCommitted(
                self.root.display().to_string(),
            ));
        }
        Ok(())
    }

    /// Prepares the output for a new job: removes the old one when `overwrite`.
    pub fn setup_job(&self, overwrite: bool) -> Result<(), StorageError> {
        self.check(overwrite)?;
        if overwrite && self.root.exists() {
            std::fs::remove_dir_all(&self.root).map_err(io("removing old output", &self.root))?;
        }
        let tmp = self.root.join(TEMP_DIR);
        std::fs::create_dir_all(&tmp).map_err(io("creating output directory", &tmp))
    }

    /// Where attempt `attempt` of `task` of `job_id` writes its files.
    pub fn attempt_dir(&self, job_id: &str, task: &str, attempt: u32) -> PathBuf {
        self.root
            .join(TEMP_DIR)
            .join(job_id)
            .join(format!("{task}_attempt{attempt}"))
    }

    /// Moves an attempt's files into the output; returns their final paths.
    pub fn commit_task(&self, attempt_dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
        let mut done = Vec::new();
        for e in std::fs::read_dir(attempt_dir).map_err(io("listing attempt", attempt_dir))? {
            let src = e.map_err(io("listing attempt", attempt_dir))?.path();
            let Some(name) = src.file_name() else {
                continue;
            };
            let dst = self.root.join(name);
            std::fs::rename(&src, &dst).map_err(io("committing", &src))?;
            done.push(dst);
        }
        std::fs::remove_dir(attempt_dir).map_err(io("removing attempt", attempt_dir))?;
        Ok(done)
    }

    /// Writes `_SUCCESS` with the manifest (atomically) and removes the job's temporary files.
    pub fn commit_job(&self, manifest: &Manifest) -> Result<(), StorageError> {
        let tmp = self.root.join(TEMP_DIR).join(&manifest.job_id);
        std::fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
        let staged = tmp.join(SUCCESS_FILE);
        let json = serde_json::to_vec_pretty(manifest).map_err(|e| StorageError::Manifest {
            path: staged.clone(),
            reason: e.to_string(),
        })?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&staged).map_err(io("writing", &staged))?;
            f.write_all(&json).map_err(io("writing", &staged))?;
            // Durable before it becomes visible: a reader that sees _SUCCESS sees all of it.
            f.sync_all().map_err(io("syncing", &staged))?;
        }
        let fin = self.root.join(SUCCESS_FILE);
        // A hard link, unlike a rename, fails when _SUCCESS exists: of two jobs racing to
        // commit one output, exactly one wins, with no lock service.
        match std::fs::hard_link(&staged, &fin) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_dir_all(&tmp);
                self.prune(&self.root.join(TEMP_DIR));
                return Err(StorageError::CommitLost {
                    output: self.root.display().to_string(),
                    job_id: manifest.job_id.clone(),
                });
            }
            Err(e) => return Err(io("writing", &fin)(e)),
        }
        if let Ok(d) = std::fs::File::open(&self.root) {
            let _ = d.sync_all();
        }
        std::fs::remove_dir_all(&tmp).map_err(io("removing", &tmp))?;
        self.prune(&self.root.join(TEMP_DIR));
        Ok(())
    }

    /// Removes what a failed or cancelled job left; an output directory left empty goes too.
    pub fn abort_job(&self, job_id: &str) -> Result<(), StorageError> {
        let tmp = self.root.join(TEMP_DIR).join(job_id);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io("removing", &tmp))?;
        }
        self.prune(&self.root.join(TEMP_DIR));
        Ok(())
    }

    /// Removes an attempt that may not commit, and the directories it leaves empty.
    pub fn abort_task(&self, attempt_dir: &Path) -> Result<(), StorageError> {
        if attempt_dir.exists() {
            std::fs::remove_dir_all(attempt_dir).map_err(io("removing", attempt_dir))?;
        }
        if let Some(job_dir) = attempt_dir.parent() {
            self.prune(job_dir);
        }
        Ok(())
    }

    /// Removes `dir` and then its parents up to the output root while they are empty; a
    /// non-empty directory (another attempt's, a committed output) stops it.
    fn prune(&self, dir: &Path) {
        let mut d = Some(dir);
        while let Some(p) = d {
            if !p.starts_with(&self.root) || std::fs::remove_dir(p).is_err() {
                return;
            }
            if p == self.root {
                return;
            }
            d = p.parent();
        }
    }

    /// Reads the manifest of a committed output.
    pub fn read_manifest(&self) -> Result<Manifest, StorageError> {
        let p = self.root.join(SUCCESS_FILE);
        let bytes = std::fs::read(&p).map_err(io("reading", &p))?;
        serde_json::from_slice(&bytes).map_err(|e| StorageError::Manifest {
            path: p,
            reason: e.to_string(),
        })
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
            OutputCommitter::new(&out_s).setup_job(false).unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
            let handles: Vec<_> = ["ja", "jb"]
                .into_iter()
                .map(|job| {
                    let (out_s, barrier) = (out_s.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let m = Manifest {
                            job_id: job.into(),
                            job: "wordcount".into(),
                            format: "tsv".into(),
                            files: Vec::new(),
                            rows: 0,
                            bytes: 0,
                        };
                        barrier.wait();
                        OutputCommitter::new(&out_s).commit_job(&m).map(|()| job)
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
            let m = OutputCommitter::new(&out_s).read_manifest().unwrap();
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
        let c = OutputCommitter::new(out.to_str().unwrap());
        c.setup_job(false).unwrap();
        let a = c.attempt_dir("j1", "r-00000", 1);
        std::fs::create_dir_all(&a).unwrap();
        std::fs::write(a.join("part-r-00000.tsv"), "x\t1\n").unwrap();
        let files = c.commit_task(&a).unwrap();
        assert_eq!(files, vec![out.join("part-r-00000.tsv")]);
        let m = Manifest {
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
