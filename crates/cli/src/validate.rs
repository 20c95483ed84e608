//! `sluice run sort-validate`: checks a sort's output against its input, as Hadoop's
//! TeraValidate does: the part files read in name order are sorted by their first N bytes,
//! and the records are the input's, each once (count and an order-free checksum equal).
//! It streams both sides through the datastore layer, 64 MiB at a time, in this process.

use serde::Serialize;
use sluice_core::range::RANGE_KEY_BYTES_PARAM;
use sluice_storage::{list_inputs, plan_splits, read_split, InputFile, OutputCommitter};

use crate::CliError;

/// Bytes read at once from either side.
const CHUNK: u64 = 64 << 20;

/// What the validator found.
#[derive(Debug, Serialize, PartialEq)]
pub struct SortReport {
    /// Records of the input.
    pub input_records: u64,
    /// Records of the output.
    pub output_records: u64,
    /// Order-free checksum of the input's records (wrapping sum of xxh3 of each).
    pub input_checksum: String,
    /// The same of the output's.
    pub output_checksum: String,
    /// Part files read, in name order.
    pub parts: usize,
    /// The first record out of order (`file:byte offset`), if any.
    pub first_unsorted: Option<String>,
}

impl SortReport {
    /// True when the output is sorted and holds exactly the input's records.
    pub fn ok(&self) -> bool {
        self.first_unsorted.is_none()
            && self.input_records == self.output_records
            && self.input_checksum == self.output_checksum
    }
}

/// Streams the lines of `files` in order: `f(path, offset, line)`.
fn for_each_line(files: &[InputFile], mut f: impl FnMut(&str, u64, &str)) -> Result<(), CliError> {
    let mut buf = Vec::new();
    for split in plan_splits(files, CHUNK, false) {
        let lines = read_split(&split, &mut buf)?;
        let mut at = lines.offset;
        for line in lines.text.split_inclusive('\n') {
            f(&split.path, at, line.trim_end_matches('\n'));
            at += line.len() as u64;
        }
    }
    Ok(())
}

/// Validates the committed sort output `output` against `inputs`, keys of `key_bytes` bytes.
pub fn validate_sort(
    inputs: &[String],
    output: &str,
    key_bytes: usize,
) -> Result<SortReport, CliError> {
    let checksum = |line: &str| xxhash_rust::xxh3::xxh3_64(line.as_bytes());
    let (mut input_records, mut input_sum) = (0u64, 0u64);
    for_each_line(&list_inputs(inputs)?, |_, _, line| {
        input_records += 1;
        input_sum = input_sum.wrapping_add(checksum(line));
    })?;
    let committer = OutputCommitter::open(output)?;
    let mut parts: Vec<InputFile> = committer
        .read_manifest()?
        .files
        .into_iter()
        .map(|f| InputFile {
            path: format!("{}/{}", committer.uri().trim_end_matches('/'), f.path),
            len: f.bytes,
        })
        .collect();
    parts.sort_by(|a, b| a.path.cmp(&b.path));
    let (mut output_records, mut output_sum) = (0u64, 0u64);
    let mut last: Vec<u8> = Vec::new();
    let mut first_unsorted = None;
    for_each_line(&parts, |path, at, line| {
        let key = &line.as_bytes()[..line.len().min(key_bytes)];
        if output_records > 0 && key < last.as_slice() && first_unsorted.is_none() {
            first_unsorted = Some(format!("{path}:{at}"));
        }
        last.clear();
        last.extend_from_slice(key);
        output_records += 1;
        output_sum = output_sum.wrapping_add(checksum(line));
    })?;
    Ok(SortReport {
        input_records,
        output_records,
        input_checksum: format!("{input_sum:016x}"),
        output_checksum: format!("{output_sum:016x}"),
        parts: parts.len(),
        first_unsorted,
    })
}

/// The key length of `--param sluice.range.key_bytes=N` (10 by default).
pub fn key_bytes(params: &[String]) -> Result<usize, CliError> {
    let prefix = format!("{RANGE_KEY_BYTES_PARAM}=");
    let given = params.iter().rev().find_map(|p| p.strip_prefix(&prefix));
    sluice_core::range::key_bytes(given).map_err(|e| CliError::Usage(e.to_string()))
}
