//! Reading back committed output (for summaries and tests).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::RecordBatch;
use arrow_schema::DataType;
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

/// Reads every row of a committed `(utf8 key, int64 count)` output, as listed in its manifest.
pub fn read_key_counts(
    output: &Path,
    format: OutputFormat,
) -> Result<Vec<(String, i64)>, StorageError> {
    let committer = OutputCommitter::new(&output.to_string_lossy());
    let manifest = committer.read_manifest()?;
    let mut rows = Vec::with_capacity(manifest.rows as usize);
    for f in &manifest.files {
        let path: PathBuf = committer.root().join(&f.path);
        match format {
            OutputFormat::Tsv => {
                let text = std::fs::read_to_string(&path).map_err(io("reading", &path))?;
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
            OutputFormat::Parquet => {
                let file = File::open(&path).map_err(io("opening", &path))?;
                let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                    .and_then(|b| b.build())
                    .map_err(|e| bad(&path, e.to_string()))?;
                for batch in reader {
                    let batch = batch.map_err(|e| bad(&path, e.to_string()))?;
                    if batch.num_columns() < 2
                        || batch.column(0).data_type() != &DataType::Utf8
                        || batch.column(1).data_type() != &DataType::Int64
                    {
                        return Err(bad(&path, "not a (utf8, int64) output"));
                    }
                    let k = batch.column(0).as_string::<i32>();
                    let c = batch.column(1).as_primitive::<Int64Type>();
                    for i in 0..batch.num_rows() {
                        rows.push((k.value(i).to_string(), c.value(i)));
                    }
                }
            }
        }
    }
    Ok(rows)
}
