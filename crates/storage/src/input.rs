//! Listing input files from paths, directories and globs.

use std::path::{Path, PathBuf};

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
        let input = input.strip_prefix("file://").unwrap_or(input);
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
