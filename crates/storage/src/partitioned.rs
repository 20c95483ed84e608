//! Partitioned output (`--partition-by COL`, Spark's `partitionBy`, Hive's layout): a reduce
//! task writes its rows into `COL=VALUE/PART` files, one per value of the column it sees, and the
//! column itself is left out of the files (the directory names it), so that reading the output
//! back with partition discovery gives the same rows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{RecordBatch, UInt32Array};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{Schema, SchemaRef};
use serde::{Deserialize, Serialize};
use sluice_core::OutputFormat;

use crate::{OutputOptions, OutputWriter, StorageError};

/// The job parameter naming the output column to partition by (`--partition-by`).
pub const PARTITION_BY_PARAM: &str = "sluice.partition_by";

/// The directory name Hive uses for a null value.
const NULL_DIR: &str = "__HIVE_DEFAULT_PARTITION__";

/// One file a task wrote: its path relative to the attempt directory, rows and bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenFile {
    /// Path relative to the attempt directory (`part-…` or `COL=VALUE/part-…`).
    pub path: String,
    /// Rows written.
    pub rows: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// `value` escaped for a directory name as Hive does (`/`, `=`, `%`, control characters and a
/// few others as `%XX`).
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c.is_control() || "\"#%'*/:=?\\{[]^".contains(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A reduce task's output: one file, or one file per value of the partition column.
pub enum TaskWriter {
    /// Unpartitioned: `PART`.
    One {
        /// The writer.
        writer: OutputWriter,
        /// Its file name.
        name: String,
    },
    /// `COL=VALUE/PART` files, opened as values turn up.
    Partitioned(Partitioned),
}

/// The state of a partitioned task output.
pub struct Partitioned {
    dir: PathBuf,
    name: String,
    format: OutputFormat,
    options: OutputOptions,
    column: String,
    index: usize,
    file_schema: SchemaRef,
    writers: BTreeMap<String, OutputWriter>,
}

impl TaskWriter {
    /// A writer of `path` (a part file in the attempt directory) with `schema`, partitioned by
    /// `partition_by` when given; an unknown column is an error naming the columns there are.
    pub fn create(
        path: &Path,
        format: OutputFormat,
        schema: SchemaRef,
        options: OutputOptions,
        partition_by: Option<&str>,
    ) -> Result<TaskWriter, StorageError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(column) = partition_by else {
            return Ok(TaskWriter::One {
                writer: OutputWriter::create_with(path, format, schema, options)?,
                name,
            });
        };
        let index = schema.index_of(column).map_err(|_| StorageError::Filter {
            reason: format!(
                "--partition-by {column}: the job's output has no such column; it has {}",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?;
        if schema.fields().len() < 2 {
            return Err(StorageError::Filter {
                reason: format!(
                    "--partition-by {column}: it is the output's only column, so the files would \
                     hold nothing"
                ),
            });
        }
        let mut fields: Vec<_> = schema.fields().iter().cloned().collect();
        fields.remove(index);
        Ok(TaskWriter::Partitioned(Partitioned {
            dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
            name,
            format,
            options,
            column: column.to_string(),
            index,
            file_schema: Arc::new(Schema::new(fields)),
            writers: BTreeMap::new(),
        }))
    }

    /// Writes `batch`.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StorageError> {
        match self {
            TaskWriter::One { writer, .. } => writer.write(batch),
            TaskWriter::Partitioned(p) => p.write(batch),
        }
    }

    /// Finishes every file; returns them, relative to the attempt directory.
    pub fn finish(self) -> Result<Vec<WrittenFile>, StorageError> {
        match self {
            TaskWriter::One { writer, name } => {
                let (rows, bytes) = writer.finish()?;
                Ok(vec![WrittenFile {
                    path: name,
                    rows,
                    bytes,
                }])
            }
            TaskWriter::Partitioned(p) => {
                let mut out = Vec::new();
                for (dir, w) in p.writers {
                    let (rows, bytes) = w.finish()?;
                    out.push(WrittenFile {
                        path: format!("{dir}/{}", p.name),
                        rows,
                        bytes,
                    });
                }
                Ok(out)
            }
        }
    }
}

impl Partitioned {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), StorageError> {
        let col = batch.column(self.index);
        let fmt =
            ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default()).map_err(|e| {
                StorageError::Filter {
                    reason: format!("--partition-by {}: {e}", self.column),
                }
            })?;
        // Rows by directory, in row order within each.
        let mut groups: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for i in 0..batch.num_rows() {
            let dir = if col.is_null(i) {
                format!("{}={NULL_DIR}", escape(&self.column))
            } else {
                format!(
                    "{}={}",
                    escape(&self.column),
                    escape(&fmt.value(i).to_string())
                )
            };
            groups.entry(dir).or_default().push(i as u32);
        }
        let mut cols = batch.columns().to_vec();
        cols.remove(self.index);
        let rest = RecordBatch::try_new(self.file_schema.clone(), cols).map_err(|e| {
            StorageError::Filter {
                reason: format!("--partition-by {}: {e}", self.column),
            }
        })?;
        for (dir, rows) in groups {
            let take = UInt32Array::from(rows);
            let part = arrow_select::take::take_record_batch(&rest, &take).map_err(|e| {
                StorageError::Filter {
                    reason: format!("--partition-by {}: {e}", self.column),
                }
            })?;
            let w = match self.writers.entry(dir) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => {
                    let path = self.dir.join(e.key()).join(&self.name);
                    e.insert(OutputWriter::create_with(
                        &path,
                        self.format,
                        self.file_schema.clone(),
                        self.options,
                    )?)
                }
            };
            w.write(&part)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Int64Array, StringArray};

    #[test]
    fn rows_go_to_one_file_per_value_without_the_column() {
        let dir = tempfile::tempdir().unwrap();
        let batch = RecordBatch::try_from_iter([
            (
                "day",
                Arc::new(StringArray::from(vec![
                    Some("a/b"),
                    Some("x"),
                    None,
                    Some("x"),
                ])) as ArrayRef,
            ),
            (
                "n",
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])) as ArrayRef,
            ),
        ])
        .unwrap();
        let mut w = TaskWriter::create(
            &dir.path().join("part-r-00000-j.tsv"),
            OutputFormat::Tsv,
            batch.schema(),
            OutputOptions::default(),
            Some("day"),
        )
        .unwrap();
        w.write(&batch).unwrap();
        let files = w.finish().unwrap();
        let got: Vec<(String, u64)> = files.iter().map(|f| (f.path.clone(), f.rows)).collect();
        assert_eq!(
            got,
            [
                (
                    "day=__HIVE_DEFAULT_PARTITION__/part-r-00000-j.tsv".to_string(),
                    1
                ),
                ("day=a%2Fb/part-r-00000-j.tsv".to_string(), 1),
                ("day=x/part-r-00000-j.tsv".to_string(), 2),
            ]
        );
        let x = std::fs::read_to_string(dir.path().join("day=x/part-r-00000-j.tsv")).unwrap();
        assert_eq!(x, "2\n4\n");
        let e = TaskWriter::create(
            &dir.path().join("p"),
            OutputFormat::Tsv,
            batch.schema(),
            OutputOptions::default(),
            Some("nope"),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("no such column") && e.contains("day, n"), "{e}");
    }
}
