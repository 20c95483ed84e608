//! The built-in `sort` job: sorts lines of text by their first N bytes (10 by default, the key
//! of TeraSort's records) into part files that, read in name order, are globally sorted. The
//! coordinator samples the input's keys and range-partitions the shuffle by them
//! ([`sluice_core::range`]); each reducer gets one key range, sorted.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use sluice_core::range::RANGE_KEY_BYTES_PARAM;
use sluice_core::OutputFormat;

use crate::{BatchEmitter, BatchJob, BatchMapper, BatchReducer, UdfError};

pub use sluice_core::range::DEFAULT_KEY_BYTES;

fn shuffle_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("rest", DataType::Binary, false),
    ]))
}

fn line_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, false)]))
}

/// The key length a task uses: the job's [`RANGE_KEY_BYTES_PARAM`], else 10.
fn key_bytes(out: &BatchEmitter<'_>) -> Result<usize, UdfError> {
    sluice_core::range::key_bytes(out.context().param(RANGE_KEY_BYTES_PARAM))
        .map_err(|e| UdfError::User(e.to_string()))
}

/// Cuts each line into its key (first N bytes) and the rest.
#[derive(Debug, Clone, Copy, Default)]
pub struct SortMapper;

impl BatchMapper for SortMapper {
    fn schema(&self) -> SchemaRef {
        shuffle_schema()
    }

    fn map_batch(&self, batch: &RecordBatch, out: &mut BatchEmitter<'_>) -> Result<(), UdfError> {
        let n = key_bytes(out)?;
        let lines = batch.column(0).as_string::<i32>();
        let bytes = lines.value_data().len();
        let mut keys = BinaryBuilder::with_capacity(lines.len(), lines.len() * n);
        let mut rest = BinaryBuilder::with_capacity(lines.len(), bytes);
        for line in lines.iter().flatten() {
            let (k, r) = line.as_bytes().split_at(line.len().min(n));
            keys.append_value(k);
            rest.append_value(r);
        }
        out.emit(RecordBatch::try_new(
            shuffle_schema(),
            vec![Arc::new(keys.finish()), Arc::new(rest.finish())],
        )?);
        Ok(())
    }
}

/// Writes the sorted records back as lines.
#[derive(Debug, Clone, Copy, Default)]
pub struct SortReducer;

impl BatchReducer for SortReducer {
    fn schema(&self) -> SchemaRef {
        line_schema()
    }

    fn reduce_batch(
        &self,
        rows: &RecordBatch,
        _groups: &[Range<usize>],
        out: &mut BatchEmitter<'_>,
    ) -> Result<(), UdfError> {
        let keys = rows.column(0).as_binary::<i32>();
        let rest = rows.column(1).as_binary::<i32>();
        let mut lines = StringBuilder::with_capacity(
            rows.num_rows(),
            keys.value_data().len() + rest.value_data().len(),
        );
        let mut line = Vec::new();
        for i in 0..rows.num_rows() {
            line.clear();
            line.extend_from_slice(keys.value(i));
            line.extend_from_slice(rest.value(i));
            // The two halves of one UTF-8 line.
            let s = std::str::from_utf8(&line)
                .map_err(|e| UdfError::Decode(format!("a sorted record is not UTF-8: {e}")))?;
            lines.append_value(s);
        }
        out.emit(RecordBatch::try_new(
            line_schema(),
            vec![Arc::new(lines.finish())],
        )?);
        Ok(())
    }

    fn splits_groups(&self) -> bool {
        // Equal keys are just lines: a key held by half the input never sits in memory whole.
        true
    }
}

/// The `sort` job: range-partitioned by the first 10 bytes, written as text lines.
pub fn job() -> BatchJob<SortMapper, SortReducer> {
    BatchJob::new("sort", SortMapper, SortReducer, &["key"])
        .output_format(OutputFormat::Text)
        .param(RANGE_KEY_BYTES_PARAM, DEFAULT_KEY_BYTES.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Job, MapInput, TaskContext};
    use sluice_core::range::{encode_bounds, RANGE_BOUNDS_PARAM};
    use sluice_core::InputFormat;

    #[test]
    fn lines_go_to_their_key_range_sorted() {
        let text = "m-record 1\nb-record 2\nz-record 3\nm-recorc 4\na\n";
        let ctx = TaskContext::default()
            .with_param(RANGE_KEY_BYTES_PARAM, "8")
            .with_param(
                RANGE_BOUNDS_PARAM,
                encode_bounds(&[b"c".to_vec(), b"n".to_vec()]),
            );
        let out = job()
            .run_map(MapInput::text(text, InputFormat::Text, 0), 3, &ctx)
            .unwrap();
        let rows: Vec<usize> = out.partitions.iter().map(|b| b.num_rows()).collect();
        assert_eq!(rows, [2, 2, 1], "a, b | m-recorc, m-record | z");
        // Each partition's rows reduce back to its lines, in key order.
        let p = &out.partitions[1];
        let keys = p.column(0).as_binary::<i32>();
        let vals = p.column(1).as_binary::<i32>();
        let mut input =
            crate::IterInput::new((0..p.num_rows()).map(|i| (keys.value(i), vals.value(i))));
        let mut lines = Vec::new();
        job()
            .run_reduce(
                &mut input,
                &mut |b| {
                    let l = b.column(0).as_string::<i32>();
                    lines.extend(l.iter().flatten().map(str::to_string));
                    Ok(())
                },
                &ctx,
            )
            .unwrap();
        assert_eq!(lines, ["m-recorc 4", "m-record 1"]);
    }

    #[test]
    fn a_hot_key_reaches_the_reducer_a_batch_at_a_time() {
        // 150,000 rows of one key, encoded as the shuffle holds them.
        let text: String = (0..150_000).map(|i| format!("HOTKEY {i:07}\n")).collect();
        let ctx = TaskContext::default().with_param(RANGE_KEY_BYTES_PARAM, "6");
        let out = job()
            .run_map(MapInput::text(&text, InputFormat::Text, 0), 1, &ctx)
            .unwrap();
        let p = &out.partitions[0];
        let keys = p.column(0).as_binary::<i32>();
        let vals = p.column(1).as_binary::<i32>();
        let mut input =
            crate::IterInput::new((0..p.num_rows()).map(|i| (keys.value(i), vals.value(i))));
        let mut sizes = Vec::new();
        job()
            .run_reduce(
                &mut input,
                &mut |b| {
                    sizes.push(b.num_rows());
                    Ok(())
                },
                &ctx,
            )
            .unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 150_000);
        assert!(
            sizes.len() >= 3 && sizes.iter().all(|n| *n <= 64 * 1024),
            "{sizes:?}"
        );
    }
}
