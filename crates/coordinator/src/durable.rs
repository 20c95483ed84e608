//! The coordinator's durable state: one redb file under `--state-dir` holding a record of every
//! job (spec, splits, stage and task states with each attempt, map output locations, committed
//! files) and the next executor number, so that a coordinator killed and restarted on the same
//! directory resumes its jobs. Records are protobuf messages (`state.proto`); each write is one
//! redb transaction, durable (fsync) before the coordinator answers the call that changed it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prost::Message;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sluice_rpc::pb;

use crate::CoordinatorError;

/// Job id -> `JobRecord`.
const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// "coordinator" -> `CoordinatorRecord`.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const META_KEY: &str = "coordinator";

/// The store file name under the state directory.
pub(crate) const STORE_FILE: &str = "coordinator.redb";

/// The coordinator's redb store.
pub(crate) struct Store {
    db: Database,
    path: PathBuf,
    /// Serializes writers, so a record's version check and write are one step.
    write: Mutex<()>,
}

impl Store {
    /// Opens (or creates) the store in `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, CoordinatorError> {
        let path = state_dir.join(STORE_FILE);
        let db = Database::create(&path).map_err(|e| CoordinatorError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let store = Store {
            db,
            path,
            write: Mutex::new(()),
        };
        // Both tables exist from the start, so reads never meet a missing one.
        store.txn(|w| {
            w.open_table(JOBS)?;
            w.open_table(META)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> CoordinatorError {
        CoordinatorError::State {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Runs `f` in one write transaction and commits it durably.
    fn txn(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), CoordinatorError> {
        let _one = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let w = self.db.begin_write().map_err(|e| self.err(e))?;
        f(&w).map_err(|e| self.err(e))?;
        w.commit().map_err(|e| self.err(e))
    }

    /// Writes `records` in one transaction, each unless the store holds a newer version.
    pub fn save_jobs(&self, records: &[pb::JobRecord]) -> Result<(), CoordinatorError> {
        if records.is_empty() {
            return Ok(());
        }
        self.txn(|w| {
            let mut t = w.open_table(JOBS)?;
            for r in records {
                let newer = t
                    .get(r.job_id.as_str())?
                    .and_then(|v| pb::JobRecord::decode(v.value()).ok())
                    .is_some_and(|old| old.version > r.version);
                if !newer {
                    t.insert(r.job_id.as_str(), r.encode_to_vec().as_slice())?;
                }
            }
            Ok(())
        })
    }

    /// Every job record, in job id order.
    pub fn load_jobs(&self) -> Result<Vec<pb::JobRecord>, CoordinatorError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = r.open_table(JOBS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for e in t.iter().map_err(|e| self.err(e))? {
            let (k, v) = e.map_err(|e| self.err(e))?;
            let rec = pb::JobRecord::decode(v.value())
                .map_err(|e| self.err(format!("job {}: {e}", k.value())))?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Records the next executor number.
    pub fn save_meta(&self, meta: &pb::CoordinatorRecord) -> Result<(), CoordinatorError> {
        self.txn(|w| {
            w.open_table(META)?
                .insert(META_KEY, meta.encode_to_vec().as_slice())?;
            Ok(())
        })
    }

    /// The coordinator record, or its default on a new store.
    pub fn load_meta(&self) -> Result<pb::CoordinatorRecord, CoordinatorError> {
        let r = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = r.open_table(META).map_err(|e| self.err(e))?;
        let got = t.get(META_KEY).map_err(|e| self.err(e))?;
        let rec = match got {
            Some(v) => pb::CoordinatorRecord::decode(v.value()).map_err(|e| self.err(e))?,
            None => pb::CoordinatorRecord::default(),
        };
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_an_older_version_never_replaces_a_newer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let rec = |v: u64, state: &str| pb::JobRecord {
            job_id: "job-1".into(),
            state: state.into(),
            version: v,
            ..Default::default()
        };
        store.save_jobs(&[rec(2, "running")]).unwrap();
        store.save_jobs(&[rec(1, "pending")]).unwrap();
        store
            .save_meta(&pb::CoordinatorRecord { next_executor: 7 })
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let jobs = store.load_jobs().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].version, jobs[0].state.as_str()), (2, "running"));
        assert_eq!(store.load_meta().unwrap().next_executor, 7);
    }

    #[test]
    fn a_second_coordinator_on_the_same_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let Err(e) = Store::open(dir.path()) else {
            panic!("a second open should fail");
        };
        assert!(e.to_string().contains("coordinator.redb"), "{e}");
    }
}
