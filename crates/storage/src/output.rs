//! Writers for committed output parts.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use sluice_core::OutputFormat;

use crate::error::io;
use crate::StorageError;

enum Inner {
    Parquet(Box<ArrowWriter<File>>),
    Tsv(BufWriter<File>),
}

/// Writes one output part file in the job's format.
pub struct OutputWriter {
    path: PathBuf,
    inner: Inner,
    rows: u64,
}

impl OutputWriter {
    /// Creates `path` (and its directory) for rows of `schema`.
    pub fn create(
        path: &Path,
        format: OutputFormat,
        schema: SchemaRef,
    ) -> Result<Self, StorageError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating output directory", dir))?;
        }
        let file = File::create(path).map_err(io("creating output file", path))?;
        let inner = match format {
            OutputFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                let w = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| {
                    StorageError::Parquet {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    }
                })?;
                Inner::Parquet(Box::new(w))
            }
            OutputFormat::Tsv => Inner::Tsv(BufWriter::with_capacity(1 << 20, file)),
        };
        Ok(OutputWriter {
            path: path.to_path_buf(),
            inner,
            rows: 0,
        })
    }

    /// Appends a batch.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), StorageError> {
        self.rows += batch.num_rows() as u64;
        match &mut self.inner {
            Inner::Parquet(w) => w.write(batch).map_err(|e| StorageError::Parquet {
                path: self.path.clone(),
                reason: e.to_string(),
            }),
            Inner::Tsv(w) => {
                let opts = FormatOptions::default();
                let fmts = batch
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| StorageError::Format {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })?;
                for row in 0..batch.num_rows() {
                    for (i, f) in fmts.iter().enumerate() {
                        if i > 0 {
                            w.write_all(b"\t").map_err(io("writing", &self.path))?;
                        }
                        write!(w, "{}", f.value(row)).map_err(io("writing", &self.path))?;
                    }
                    w.write_all(b"\n").map_err(io("writing", &self.path))?;
                }
                Ok(())
            }
        }
    }

    /// Closes the file; returns its rows and bytes.
    pub fn finish(self) -> Result<(u64, u64), StorageError> {
        match self.inner {
            Inner::Parquet(w) => {
                w.close().map_err(|e| StorageError::Parquet {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
            }
            Inner::Tsv(mut w) => {
                w.flush().map_err(io("writing", &self.path))?;
                w.into_inner()
                    .map_err(|e| StorageError::Io {
                        op: "closing",
                        path: self.path.clone(),
                        source: e.into_error(),
                    })?
                    .sync_all()
                    .map_err(io("syncing", &self.path))?;
            }
        }
        let bytes = std::fs::metadata(&self.path)
            .map_err(io("reading metadata of", &self.path))?
            .len();
        Ok((self.rows, bytes))
    }
}
