//! Listing input files from paths, directories and globs.

use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStoreExt;

use crate::datastore::{block_on, Datastores, Location};
use crate::error::io;
use crate::StorageError;

/// One input file and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Path as a string.
    pub path: String,
    /// Length in bytes.
    pub len: u64,
}

fn hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('_') || n.starts_with('.'))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), StorageError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io("listing input directory", dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io("listing input directory", dir))?;
    entries.sort();
    for p in entries {
        if hidden(&p) {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Expands inputs (files, directories walked recursively, globs) into files in a stable order.
///
/// As in Hadoop, names starting with `_` or `.` are skipped inside directories.
pub fn list_inputs(inputs: &[String]) -> Result<Vec<InputFile>, StorageError> {
    let mut files = Vec::new();
    for input in inputs {
        let local = match Datastores::global()?.resolve(input)? {
            Location::Local(p) => p.to_string_lossy().into_owned(),
            loc => {
                list_objects(&loc, input, &mut files)?;
                continue;
            }
        };
        let input = local.as_str();
        let mut found = Vec::new();
        if input.contains(['*', '?', '[']) {
            let paths = glob::glob(input).map_err(|e| StorageError::BadPattern {
                pattern: input.to_string(),
                reason: e.to_string(),
            })?;
            let mut any = false;
            for p in paths {
                let p = p.map_err(|e| StorageError::Io {
                    op: "expanding glob",
                    path: e.path().to_path_buf(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                any = true;
                if p.is_dir() {
                    walk(&p, &mut found)?;
                } else {
                    found.push(p);
                }
            }
            if !any {
                return Err(StorageError::InputMissing(input.to_string()));
            }
        } else {
            let p = Path::new(input);
            if !p.exists() {
                return Err(StorageError::InputMissing(input.to_string()));
            }
            if p.is_dir() {
                walk(p, &mut found)?;
            } else {
                found.push(p.to_path_buf());
            }
        }
        if found.is_empty() {
            return Err(StorageError::InputEmpty(input.to_string()));
        }
        for p in found {
            let len = std::fs::metadata(&p)
                .map_err(io("reading metadata of", &p))?
                .len();
            files.push(InputFile {
                path: p.to_string_lossy().into_owned(),
                len,
            });
        }
    }
    Ok(files)
}

/// Lists the objects an object-store input names: one object, every object under a prefix
/// (skipping names starting with `_` or `.`), or those matching a glob.
fn list_objects(
    loc: &Location,
    input: &str,
    files: &mut Vec<InputFile>,
) -> Result<(), StorageError> {
    let Location::Object {
        store,
        path,
        key,
        name,
        ..
    } = loc
    else {
        return Ok(());
    };
    let failed = |op: &'static str, e: object_store::Error| StorageError::Object {
        op,
        uri: input.to_string(),
        name: name.clone(),
        reason: crate::error::explain(&e),
    };
    let key = key.as_str();
    let wild = key.find(['*', '?', '[']);
    let pattern = match wild {
        Some(_) => Some(
            glob::Pattern::new(key).map_err(|e| StorageError::BadPattern {
                pattern: input.to_string(),
                reason: e.to_string(),
            })?,
        ),
        None => None,
    };
    let prefix = match wild {
        Some(i) => key[..i].rsplit_once('/').map_or("", |(p, _)| p),
        None => key,
    };
    let list_prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
    let mut objects: Vec<object_store::ObjectMeta> =
        block_on(store.list(list_prefix.as_ref()).try_collect())
            .map_err(|e| failed("listing", e))?;
    // Nothing under it as a prefix: it may name one object. (Listing first, because some
    // stores answer a HEAD of a "directory" with an error rather than 404.)
    if objects.is_empty() && pattern.is_none() && !key.is_empty() {
        match block_on(store.head(path)) {
            Ok(meta) => objects.push(meta),
            Err(object_store::Error::NotFound { .. }) => {
                return Err(StorageError::InputMissing(input.to_string()))
            }
            Err(e) => return Err(failed("reading", e)),
        }
        let o = &objects[0];
        files.push(InputFile {
            path: loc.uri_of(&o.location),
            len: o.size,
        });
        return Ok(());
    }
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    let mut any = false;
    let before = files.len();
    for o in objects {
        any = true;
        let k = o.location.as_ref();
        let rel = k.strip_prefix(prefix).unwrap_or(k).trim_start_matches('/');
        if rel
            .split('/')
            .any(|seg| seg.starts_with('_') || seg.starts_with('.'))
        {
            continue;
        }
        if pattern.as_ref().is_some_and(|p| !p.matches(k)) {
            continue;
        }
        files.push(InputFile {
            path: loc.uri_of(&o.location),
            len: o.size,
        });
    }
    if !any || (pattern.is_some() && files.len() == before) {
        return Err(StorageError::InputMissing(input.to_string()));
    }
    if files.len() == before {
        return Err(StorageError::InputEmpty(input.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_dirs_globs_and_refuses_missing_or_empty() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), "a").unwrap();
        std::fs::write(root.join("sub/b.txt"), "bb").unwrap();
        std::fs::write(root.join("_SUCCESS"), "").unwrap();
        std::fs::write(root.join(".hidden"), "x").unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let s = |p: &Path| p.to_string_lossy().into_owned();

        let all = list_inputs(&[s(root)]).unwrap();
        assert_eq!(all.len(), 2, "{all:?}"); // a.txt and sub/b.txt
        let g = list_inputs(&[format!("{}/*.txt", s(root))]).unwrap();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].len, 1);

        let missing = list_inputs(&[s(&root.join("nope"))]).unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        let empty = list_inputs(&[s(&root.join("empty"))]).unwrap_err();
        assert!(empty.to_string().contains("contains no files"), "{empty}");
        let noglob = list_inputs(&[format!("{}/*.csv", s(root))]).unwrap_err();
        assert!(noglob.to_string().contains("does not exist"), "{noglob}");
    }
}
