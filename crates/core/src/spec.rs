//! What a job is: its spec, its output format and its input splits.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Default target split size: 64 MiB, as HDFS's block size.
pub const DEFAULT_SPLIT_SIZE: u64 = 64 << 20;

/// The format committed output files are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum OutputFormat {
    /// Apache Parquet, one file per reduce task.
    #[default]
    Parquet,
    /// Tab-separated text without a header.
    Tsv,
    /// Comma-separated values (RFC 4180 quoting, `\n` line ends) with a header line.
    Csv,
    /// JSON lines: one object a line, keyed by column name.
    Jsonl,
    /// Plain lines: the rows of a single string column, each written as it is.
    Text,
}

impl OutputFormat {
    /// Wire and CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Tsv => "tsv",
            OutputFormat::Csv => "csv",
            OutputFormat::Jsonl => "jsonl",
            OutputFormat::Text => "text",
        }
    }

    /// File extension of output parts.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Text => "txt",
            other => other.as_str(),
        }
    }

    /// Parses `parquet`, `tsv`, `csv`, `jsonl` (also `json`) or `text`; empty means the default.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "" | "parquet" => Ok(OutputFormat::Parquet),
            "tsv" => Ok(OutputFormat::Tsv),
            "csv" => Ok(OutputFormat::Csv),
            "jsonl" | "json" => Ok(OutputFormat::Jsonl),
            "text" | "txt" => Ok(OutputFormat::Text),
            other => Err(CoreError::UnknownFormat(other.to_string())),
        }
    }
}

/// How input files are read into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum InputFormat {
    /// Lines of UTF-8 text.
    #[default]
    Text,
    /// Comma-separated values, one record a line; `header` skips each file's first line.
    Csv {
        /// The first line of each file names the columns and is not a record.
        header: bool,
    },
    /// One JSON object a line.
    Jsonl,
    /// Apache Parquet files, read as Arrow record batches (split by row groups).
    Parquet,
    /// Arrow IPC files (the file format), read as their record batches (split by batches).
    Arrow,
}

impl InputFormat {
    /// Wire and CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Text => "text",
            InputFormat::Csv { header: true } => "csv",
            InputFormat::Csv { header: false } => "csv-noheader",
            InputFormat::Jsonl => "jsonl",
            InputFormat::Parquet => "parquet",
            InputFormat::Arrow => "arrow",
        }
    }

    /// True for formats read as lines of text, split at byte ranges.
    pub fn is_line_based(self) -> bool {
        !matches!(self, InputFormat::Parquet | InputFormat::Arrow)
    }

    /// Parses `text`, `csv`, `csv-noheader`, `jsonl`, `parquet` or `arrow` (also `ipc`);
    /// empty means text.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "" | "text" => Ok(InputFormat::Text),
            "csv" => Ok(InputFormat::Csv { header: true }),
            "csv-noheader" => Ok(InputFormat::Csv { header: false }),
            "jsonl" | "json" => Ok(InputFormat::Jsonl),
            "parquet" => Ok(InputFormat::Parquet),
            "arrow" | "ipc" => Ok(InputFormat::Arrow),
            other => Err(CoreError::UnknownInputFormat(other.to_string())),
        }
    }
}

/// Everything needed to plan and run one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Registered job name.
    pub job: String,
    /// Input files, directories or globs.
    pub inputs: Vec<String>,
    /// Output directory.
    pub output: String,
    /// Output format.
    pub format: OutputFormat,
    /// How the input files are read.
    #[serde(default)]
    pub input_format: InputFormat,
    /// Target split size in bytes.
    pub split_size: u64,
    /// Reduce tasks; `None` means 2 x total executor slots.
    pub reducers: Option<u32>,
    /// Replace an already committed output.
    pub overwrite: bool,
    /// Parameters passed to user code.
    pub params: BTreeMap<String, String>,
    /// SHA-256 (hex) of the job binary to run; `None` for built-in jobs.
    pub binary: Option<String>,
}

/// The job parameter by which a job promises that no CSV record holds a newline (`false`): its
/// CSV input is then split and chunked at line boundaries instead of read a whole file a task.
pub const CSV_MULTILINE_PARAM: &str = "sluice.csv.multiline";

/// The job parameter that bounds each task's memory (`--task-memory`), as a byte size: map
/// tasks past it cut their input into chunks and spill sorted runs; when a job does not set it,
/// each executor sets its memory divided by its slots.
pub const TASK_MEMORY_PARAM: &str = "sluice.task_memory";

/// The job parameter by which a job asks executors to keep its decoded columnar splits in
/// memory (`true`) for the next job over the same data (training epochs), and the coordinator
/// to send each split back to the executor that holds it.
pub const CACHE_PARAM: &str = "sluice.cache";

/// The job parameter that bounds the memory an executor process gives cached splits.
pub const CACHE_BYTES_PARAM: &str = "sluice.cache.bytes";

/// Cached splits per process unless the job says otherwise ([`CACHE_BYTES_PARAM`]).
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

/// The job parameter that lets consecutive jobs of one job binary share its worker processes
/// (a training run's rounds): tasks of jobs with the same value run in one worker per
/// executor (and GPU set), which outlives each job so that what it keeps in memory (decoded
/// splits, the round's parameters) serves the next; it stops after a minute unused.
pub const WORKER_SESSION_PARAM: &str = "sluice.worker.session";

/// The job parameter that gives each map task that many GPUs of its own (Spark's
/// `spark.task.resource.gpu.amount`): it runs only on an executor with that many free, which
/// sets `CUDA_VISIBLE_DEVICES` in its worker. Reducers (aggregation) need none.
pub const GPUS_PARAM: &str = "sluice.task.gpus";

/// The GPUs each map task of a job with these parameters needs ([`GPUS_PARAM`]; 0 if unset).
pub fn map_gpus(params: &std::collections::BTreeMap<String, String>) -> Result<u32, String> {
    match params.get(GPUS_PARAM) {
        None => Ok(0),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| format!("{GPUS_PARAM}={v}: give a whole number of GPUs per map task")),
    }
}

/// The job parameter that sets how many attempts a task gets before the job fails
/// (`--max-attempts`; the coordinator's default, 4, when unset). Attempts lost with their
/// executor, or sent back because map outputs were lost, do not count.
pub const MAX_ATTEMPTS_PARAM: &str = "sluice.max_attempts";

/// A byte range `[start, end)` of one input file; it owns every line that starts inside it.
/// Small files are combined: `rest` holds more whole files read after this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Split {
    /// File path.
    pub path: String,
    /// First byte offset.
    pub start: u64,
    /// One past the last byte offset.
    pub end: u64,
    /// Length of the whole file.
    pub file_len: u64,
    /// Whole small files read after this one, in order (Hadoop's CombineFileInputFormat).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rest: Vec<Split>,
}

impl Split {
    /// Bytes this split covers, its combined files included.
    pub fn len(&self) -> u64 {
        self.end - self.start + self.rest.iter().map(|r| r.end - r.start).sum::<u64>()
    }

    /// True when it covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}+{}", self.path, self.start, self.end - self.start)?;
        if !self.rest.is_empty() {
            write!(f, " and {} more small files", self.rest.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::OutputFormat;

    #[test]
    fn output_formats_parse_back_from_their_names() {
        for f in [
            OutputFormat::Parquet,
            OutputFormat::Tsv,
            OutputFormat::Csv,
            OutputFormat::Jsonl,
            OutputFormat::Text,
        ] {
            assert_eq!(OutputFormat::parse(f.as_str()).unwrap(), f);
            assert_eq!(OutputFormat::parse(f.extension()).unwrap(), f);
        }
        assert_eq!(OutputFormat::parse("").unwrap(), OutputFormat::Parquet);
        assert_eq!(OutputFormat::parse("json").unwrap(), OutputFormat::Jsonl);
        let e = OutputFormat::parse("xml").unwrap_err().to_string();
        assert!(e.contains("csv") && e.contains("jsonl"), "{e}");
    }
}
