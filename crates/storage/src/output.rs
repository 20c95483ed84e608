//! Writers for committed output parts.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_json::writer::LineDelimited;
use arrow_schema::{DataType, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sluice_core::OutputFormat;

use crate::error::io;
use crate::StorageError;

/// Output writing choices beyond the format, read from job parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputOptions {
    /// Rows per Parquet row group; `None` keeps the Parquet writer's default (1 Mi rows).
    pub parquet_row_group_rows: Option<usize>,
}

impl OutputOptions {
    /// The job parameter that sets [`OutputOptions::parquet_row_group_rows`].
    pub const ROW_GROUP_ROWS_PARAM: &'static str = "sluice.parquet.row_group_rows";

    /// Reads the options from a job's parameters; a value that does not parse is an error
    /// naming the parameter.
    pub fn from_params(params: &BTreeMap<String, String>) -> Result<Self, StorageError> {
        let name = Self::ROW_GROUP_ROWS_PARAM;
        let parquet_row_group_rows = match params.get(name) {
            None => None,
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                Ok(_) => return Err(bad_param(name, v, "is no row count")),
                Err(e) => return Err(bad_param(name, v, &format!("is not a whole number ({e})"))),
            },
        };
        Ok(OutputOptions {
            parquet_row_group_rows,
        })
    }
}

fn bad_param(name: &'static str, value: &str, reason: &str) -> StorageError {
    StorageError::BadParam {
        name,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Output files are written through a buffer of this size.
const BUFFER: usize = 1 << 20;

enum Inner {
    Parquet(Box<ArrowWriter<File>>),
    Tsv(BufWriter<File>),
    Csv(Box<arrow_csv::Writer<BufWriter<File>>>),
    Jsonl(arrow_json::Writer<BufWriter<File>, LineDelimited>),
}

/// Writes one output part file in the job's format.
pub struct OutputWriter {
    path: PathBuf,
    schema: SchemaRef,
    inner: Inner,
    rows: u64,
}

impl OutputWriter {
    /// Creates `path` (and its directory) for rows of `schema`, with default options.
    pub fn create(
        path: &Path,
        format: OutputFormat,
        schema: SchemaRef,
    ) -> Result<Self, StorageError> {
        Self::create_with(path, format, schema, OutputOptions::default())
    }

    /// Creates `path` (and its directory) for rows of `schema`.
    ///
    /// CSV cannot hold nested columns (lists, structs, maps): such a schema is refused here,
    /// before the file exists.
    pub fn create_with(
        path: &Path,
        format: OutputFormat,
        schema: SchemaRef,
        options: OutputOptions,
    ) -> Result<Self, StorageError> {
        if format == OutputFormat::Csv {
            if let Some(f) = schema.fields().iter().find(|f| f.data_type().is_nested()) {
                return Err(StorageError::Format {
                    path: path.to_path_buf(),
                    reason: format!(
                        "column '{}' is {}, which CSV cannot hold; use --format jsonl or parquet",
                        f.name(),
                        f.data_type()
                    ),
                });
            }
        }
        if format == OutputFormat::Text {
            let one_string = matches!(schema.fields().as_ref(), [f] if matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View));
            if !one_string {
                return Err(StorageError::Format {
                    path: path.to_path_buf(),
                    reason: format!(
                        "--format text writes one string column as lines, but the job's rows are ({}); use --format tsv",
                        schema
                            .fields()
                            .iter()
                            .map(|f| format!("{}: {}", f.name(), f.data_type()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating output directory", dir))?;
        }
        let file = File::create(path).map_err(io("creating output file", path))?;
        let inner = match format {
            OutputFormat::Parquet => {
                let mut props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()));
                if let Some(rows) = options.parquet_row_group_rows {
                    props = props.set_max_row_group_row_count(Some(rows));
                }
                let w = ArrowWriter::try_new(file, schema.clone(), Some(props.build())).map_err(
                    |e| StorageError::Parquet {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    },
                )?;
                Inner::Parquet(Box::new(w))
            }
            // A text row is a TSV row of one column: the value as it is.
            OutputFormat::Tsv | OutputFormat::Text => {
                Inner::Tsv(BufWriter::with_capacity(BUFFER, file))
            }
            // RFC 4180: a header line, fields quoted only when they hold a comma, a quote or
            // a line break, quotes doubled; lines end in `\n` (arrow-csv's default).
            OutputFormat::Csv => Inner::Csv(Box::new(
                arrow_csv::WriterBuilder::new()
                    .with_header(true)
                    .build(BufWriter::with_capacity(BUFFER, file)),
            )),
            // Every key on every line, nulls included, in column order.
            OutputFormat::Jsonl => Inner::Jsonl(
                arrow_json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build(BufWriter::with_capacity(BUFFER, file)),
            ),
        };
        Ok(OutputWriter {
            path: path.to_path_buf(),
            schema,
            inner,
            rows: 0,
        })
    }

    fn format_error(&self, e: impl ToString) -> StorageError {
        StorageError::Format {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Appends a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StorageError> {
        self.rows += batch.num_rows() as u64;
        let result = match &mut self.inner {
            Inner::Parquet(w) => {
                return w.write(batch).map_err(|e| StorageError::Parquet {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })
            }
            Inner::Tsv(w) => return write_tsv(w, batch, &self.path),
            Inner::Csv(w) => w.write(batch),
            Inner::Jsonl(w) => w.write(batch),
        };
        result.map_err(|e| self.text_error(e))
    }

    /// An arrow-csv/arrow-json error: I/O errors keep their kind (so they stay retryable).
    fn text_error(&self, e: arrow_schema::ArrowError) -> StorageError {
        match e {
            arrow_schema::ArrowError::IoError(_, source) => StorageError::Io {
                op: "writing",
                path: self.path.clone(),
                source,
            },
            e => self.format_error(e),
        }
    }

    /// Closes and syncs the file; returns its rows and bytes.
    pub fn finish(mut self) -> Result<(u64, u64), StorageError> {
        // A CSV part always has its header line, even with no rows.
        if self.rows == 0 {
            if let Inner::Csv(w) = &mut self.inner {
                let empty = RecordBatch::new_empty(self.schema.clone());
                if let Err(e) = w.write(&empty) {
                    return Err(self.text_error(e));
                }
            }
        }
        let file = match self.inner {
            Inner::Parquet(w) => w.into_inner().map_err(|e| StorageError::Parquet {
                path: self.path.clone(),
                reason: e.to_string(),
            })?,
            Inner::Tsv(w) => unbuffer(w, &self.path)?,
            Inner::Csv(w) => unbuffer(w.into_inner(), &self.path)?,
            Inner::Jsonl(mut w) => {
                w.finish().map_err(|e| StorageError::Format {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
                unbuffer(w.into_inner(), &self.path)?
            }
        };
        file.sync_all().map_err(io("syncing", &self.path))?;
        let bytes = file
            .metadata()
            .map_err(io("reading metadata of", &self.path))?
            .len();
        Ok((self.rows, bytes))
    }
}

/// Writes `batch` as tab-separated lines, values as arrow-cast displays them.
fn write_tsv(
    w: &mut BufWriter<File>,
    batch: &RecordBatch,
    path: &Path,
) -> Result<(), StorageError> {
    let opts = FormatOptions::default();
    let fmts = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StorageError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    for row in 0..batch.num_rows() {
        for (i, f) in fmts.iter().enumerate() {
            if i > 0 {
                w.write_all(b"\t").map_err(io("writing", path))?;
            }
            write!(w, "{}", f.value(row)).map_err(io("writing", path))?;
        }
        w.write_all(b"\n").map_err(io("writing", path))?;
    }
    Ok(())
}

/// Flushes the buffer and returns the file.
fn unbuffer(w: BufWriter<File>, path: &Path) -> Result<File, StorageError> {
    w.into_inner().map_err(|e| StorageError::Io {
        op: "closing",
        path: path.to_path_buf(),
        source: e.into_error(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use sluice_core::OutputFormat;

    use super::{OutputOptions, OutputWriter};

    fn params(v: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(
            OutputOptions::ROW_GROUP_ROWS_PARAM.to_string(),
            v.to_string(),
        )])
    }

    #[test]
    fn row_group_rows_comes_from_a_job_parameter() {
        assert_eq!(
            OutputOptions::from_params(&BTreeMap::new()).unwrap(),
            OutputOptions::default()
        );
        let o = OutputOptions::from_params(&params("1000")).unwrap();
        assert_eq!(o.parquet_row_group_rows, Some(1000));
        for bad in ["0", "-1", "lots", ""] {
            let e = OutputOptions::from_params(&params(bad))
                .unwrap_err()
                .to_string();
            assert!(e.contains(OutputOptions::ROW_GROUP_ROWS_PARAM), "{e}");
        }
    }

    #[test]
    fn parquet_row_groups_hold_at_most_the_configured_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let col: ArrayRef = Arc::new(Int64Array::from_iter_values(0..2500));
        let batch = RecordBatch::try_new(schema.clone(), vec![col]).unwrap();
        let options = OutputOptions {
            parquet_row_group_rows: Some(1000),
        };
        let mut w =
            OutputWriter::create_with(&path, OutputFormat::Parquet, schema, options).unwrap();
        w.write(&batch).unwrap();
        let (rows, bytes) = w.finish().unwrap();
        assert_eq!(rows, 2500);
        assert_eq!(bytes, path.metadata().unwrap().len());
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let groups: Vec<i64> = reader
            .metadata()
            .row_groups()
            .iter()
            .map(|g| g.num_rows())
            .collect();
        assert_eq!(groups, vec![1000, 1000, 500]);
    }
}
