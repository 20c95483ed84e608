//! Reading back committed output (for summaries and tests).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_core::{OutputFormat, Split};

use crate::error::io;
use crate::{OutputCommitter, StorageError};

fn bad(path: &Path, reason: impl Into<String>) -> StorageError {
    StorageError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Reads every record batch of the Parquet file `split` names (a whole-file split).
pub fn read_parquet(split: &Split) -> Result<Vec<RecordBatch>, StorageError> {
    use crate::datastore::{block_on, Datastores, Location};
    use object_store::ObjectStoreExt;
    let path = Path::new(&split.path);
    let not_parquet =
        |e: parquet::errors::ParquetError| bad(path, format!("not a readable Parquet file: {e}"));
    let reader = match Datastores::global()?.resolve(&split.path)? {
        Location::Local(p) => {
            let file = File::open(&p).map_err(io("opening input", &p))?;
            ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.build())
                .map_err(not_parquet)?
        }
        Location::Object {
            store,
            path: key,
            name,
            ..
        } => {
            let failed = |e: object_store::Error| StorageError::Object {
                op: "reading",
                uri: split.path.clone(),
                name: name.clone(),
                reason: e.to_string(),
            };
            let bytes = block_on(async { store.get(&key).await?.bytes().await }).map_err(failed)?;
            ParquetRecordBatchReaderBuilder::try_new(bytes)
                .and_then(|b| b.build())
                .map_err(not_parquet)?
        }
    };
    reader
        .map(|b| b.map_err(|e| bad(path, e.to_string())))
        .collect()
}

/// Reads every row of a committed `(utf8 key, int64 count)` output (a path or any datastore
/// URI), as listed in its manifest.
pub fn read_key_counts(
    output: &str,
    format: OutputFormat,
) -> Result<Vec<(String, i64)>, StorageError> {
    let committer = OutputCommitter::open(output)?;
    let manifest = committer.read_manifest()?;
    let mut rows = Vec::with_capacity(manifest.rows as usize);
    for f in &manifest.files {
        let path = PathBuf::from(format!("{}/{}", committer.uri(), f.path));
        let data = committer.read_file(&f.path)?;
        match format {
            OutputFormat::Tsv => {
                let text =
                    String::from_utf8(data).map_err(|e| bad(&path, format!("not UTF-8: {e}")))?;
                for (i, line) in text.lines().enumerate() {
                    let (k, c) = line
                        .rsplit_once('\t')
                        .ok_or_else(|| bad(&path, format!("line {} has no tab", i + 1)))?;
                    let c = c
                        .parse()
                        .map_err(|e| bad(&path, format!("line {}: count '{c}': {e}", i + 1)))?;
                    rows.push((k.to_string(), c));
                }
            }
            OutputFormat::Csv => rows.extend(crate::textread::csv_key_counts(&path, &data)?),
            OutputFormat::Jsonl => rows.extend(crate::textread::jsonl_key_counts(&path, &data)?),
            OutputFormat::Parquet => {
                let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(data))
                    .and_then(|b| b.build())
                    .map_err(|e| bad(&path, e.to_string()))?;
                for batch in reader {
                    let batch = batch.map_err(|e| bad(&path, e.to_string()))?;
                    crate::textread::batch_key_counts(&path, &batch, &mut rows)?;
                }
            }
        }
    }
    Ok(rows)
}
