//! Whole small objects (training checkpoints and manifests) at a path or URI on any datastore:
//! a local or mounted path, or an object store (`s3://`, `ds://`, `nfs://`). A write lands
//! whole or not at all: by rename on a filesystem, by a single PUT on an object store.

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::datastore::{block_on, Datastores, Location};
use crate::error::io;
use crate::StorageError;

fn object_err(op: &'static str, uri: &str, name: &str, e: impl std::fmt::Display) -> StorageError {
    StorageError::Object {
        op,
        uri: uri.to_string(),
        name: name.to_string(),
        reason: e.to_string(),
    }
}

/// `name` inside directory or prefix `dir` (a path or URI).
pub fn blob_join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// The bytes of the object at `uri`.
pub fn read_blob(uri: &str) -> Result<Vec<u8>, StorageError> {
    match Datastores::global()?.resolve(uri)? {
        Location::Local(p) => std::fs::read(&p).map_err(io("reading", &p)),
        Location::Object {
            store, path, name, ..
        } => block_on(async {
            let got = store.get(&path).await?;
            got.bytes().await
        })
        .map(|b| b.to_vec())
        .map_err(|e| object_err("reading", uri, &name, e)),
    }
}

/// Writes `bytes` as the object at `uri`, whole (creating local parent directories).
pub fn write_blob(uri: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
    match Datastores::global()?.resolve(uri)? {
        Location::Local(p) => {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
            }
            let tmp = p.with_extension("partial");
            std::fs::write(&tmp, bytes).map_err(io("writing", &tmp))?;
            std::fs::rename(&tmp, &p).map_err(io("renaming", &tmp))
        }
        Location::Object {
            store, path, name, ..
        } => block_on(store.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| object_err("writing", uri, &name, e)),
    }
}

/// The names of the objects directly inside `dir` (empty when there is none).
pub fn list_blobs(dir: &str) -> Result<Vec<String>, StorageError> {
    match Datastores::global()?.resolve(dir)? {
        Location::Local(p) => Ok(match std::fs::read_dir(&p) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }),
        Location::Object {
            store, path, name, ..
        } => {
            // object_store lists whole path segments under `path`; names are what follows it.
            let prefix = format!("{}/", path.as_ref());
            let listed: Vec<object_store::ObjectMeta> =
                block_on(store.list(Some(&path)).try_collect())
                    .map_err(|e| object_err("listing", dir, &name, e))?;
            Ok(listed
                .into_iter()
                .filter_map(|m| {
                    let rest = m.location.as_ref().strip_prefix(prefix.as_str())?;
                    (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
                })
                .collect())
        }
    }
}

/// Removes the object at `uri` if it exists.
pub fn remove_blob(uri: &str) -> Result<(), StorageError> {
    match Datastores::global()?.resolve(uri)? {
        Location::Local(p) => match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io("removing", &p)(e)),
            _ => Ok(()),
        },
        Location::Object {
            store, path, name, ..
        } => match block_on(store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(object_err("removing", uri, &name, e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_on_a_local_path_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("ck").display().to_string();
        assert!(list_blobs(&d).unwrap().is_empty());
        write_blob(&blob_join(&d, "a.bin"), b"one".to_vec()).unwrap();
        write_blob(&blob_join(&d, "b.bin"), b"two".to_vec()).unwrap();
        assert_eq!(read_blob(&blob_join(&d, "a.bin")).unwrap(), b"one");
        let mut names = list_blobs(&d).unwrap();
        names.sort();
        assert_eq!(names, ["a.bin", "b.bin"]);
        remove_blob(&blob_join(&d, "a.bin")).unwrap();
        remove_blob(&blob_join(&d, "a.bin")).unwrap();
        assert_eq!(list_blobs(&d).unwrap(), ["b.bin"]);
        let err = read_blob(&blob_join(&d, "a.bin")).unwrap_err().to_string();
        assert!(err.contains("a.bin"), "{err}");
    }
}
