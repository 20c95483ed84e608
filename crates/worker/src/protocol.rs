//! Messages between an executor and its worker processes: length-prefixed JSON on a Unix
//! socket, one request and one response per task.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sluice_core::{InputFormat, OutputFormat, Split, TaskId};
use sluice_udf::TaskContext;

/// Largest message accepted, as a guard against a confused peer.
const MAX_MESSAGE: u32 = 64 << 20;

/// What every task tells user code about itself (see `sluice_udf::TaskContext`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Job id.
    pub job_id: String,
    /// Map or reduce, and index.
    pub task: TaskId,
    /// Attempt number.
    pub attempt: u32,
    /// Job parameters.
    pub params: BTreeMap<String, String>,
    /// The attempt's scratch directory (the executor creates and removes it).
    pub scratch_dir: PathBuf,
    /// GPUs the task holds, as CUDA device ordinals of the process that runs it.
    #[serde(default)]
    pub gpus: Vec<u32>,
}

impl TaskInfo {
    /// The context user code sees, with the map's split if any.
    pub fn context(&self, split: Option<&Split>) -> TaskContext {
        let ctx = TaskContext::new(self.job_id.clone(), self.task, self.attempt)
            .with_params(self.params.clone())
            .with_scratch_dir(self.scratch_dir.clone())
            .with_gpus(self.gpus.clone())
            .with_reader(std::sync::Arc::new(|uri: &str| {
                sluice_storage::read_blob(uri).map_err(|e| e.to_string())
            }));
        match split {
            Some(s) => ctx.with_split(s.clone()),
            None => ctx,
        }
    }
}

/// A task for a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Read `split`, map it, write the shuffle output under `shuffle_root`.
    Map {
        /// Registered job name.
        job: String,
        /// The task.
        info: TaskInfo,
        /// Input byte range.
        split: Split,
        /// How the input is read.
        input_format: InputFormat,
        /// Number of reduce partitions.
        reducers: u32,
        /// The executor's shuffle directory.
        shuffle_root: PathBuf,
    },
    /// Merge the fetched segments of one partition, reduce, write `output`.
    Reduce {
        /// Registered job name.
        job: String,
        /// The task (its index is the partition).
        info: TaskInfo,
        /// Where the partition's sorted run of each map output lies on local disk.
        segments: Vec<sluice_shuffle::SegmentRef>,
        /// Part file to write (inside the attempt directory).
        output: PathBuf,
        /// Output format.
        format: OutputFormat,
    },
}

/// The outcome of a task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// A map finished.
    Map {
        /// Input records read.
        lines: u64,
        /// Shuffle bytes written.
        shuffle_bytes: u64,
        /// User counters.
        counters: BTreeMap<String, i64>,
        /// Input records skipped as bad, for `OUTPUT/_bad_records/`.
        #[serde(default)]
        bad_records: Vec<sluice_udf::BadRecord>,
    },
    /// A reduce finished.
    Reduce {
        /// Output rows.
        rows: u64,
        /// Output bytes.
        bytes: u64,
        /// User counters.
        counters: BTreeMap<String, i64>,
        /// The files written (several when the output is partitioned).
        #[serde(default)]
        files: Vec<sluice_storage::WrittenFile>,
    },
    /// The task failed; the worker goes on.
    Failed {
        /// What went wrong, naming the task's input.
        message: String,
        /// What kind of failure (whether another attempt runs).
        kind: sluice_core::FailureKind,
    },
}

/// Writes one message.
pub fn write_msg<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&body)?;
    w.flush()
}

/// Reads one message; `None` when the peer closed the connection.
pub fn read_msg<T: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_MESSAGE {
        return Err(io::Error::other(format!(
            "message of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let mut buf = Vec::new();
        let counters = BTreeMap::from([("bad".to_string(), 2)]);
        write_msg(
            &mut buf,
            &Response::Reduce {
                rows: 3,
                bytes: 10,
                counters: counters.clone(),
                files: Vec::new(),
            },
        )
        .unwrap();
        let mut r = buf.as_slice();
        match read_msg::<Response>(&mut r).unwrap() {
            Some(Response::Reduce {
                rows,
                bytes,
                counters: c,
                ..
            }) => {
                assert_eq!((rows, bytes, c), (3, 10, counters))
            }
            other => panic!("{other:?}"),
        }
        assert!(read_msg::<Response>(&mut r).unwrap().is_none());
    }
}
