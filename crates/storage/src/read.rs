//! Reading back committed output (for summaries and tests).

use std::path::{Path, PathBuf};

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sluice_core::OutputFormat;

use crate::{OutputCommitter, StorageError};

fn bad(path: &Path, reason: impl Into<String>) -> StorageError {
    StorageError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
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
            OutputFormat::Text => {
                return Err(bad(&path, "text output holds lines, not (key, count) rows"))
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
