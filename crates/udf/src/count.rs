//! The built-in `count` job: how many records the input holds (text lines, Parquet rows), read
//! the way every job's input is read, like Spark's `df.count()`. It reads everything and
//! computes almost nothing, so it also measures how fast Sluice reads a dataset.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::{BatchEmitter, BatchJob, BatchMapper, BatchReducer, UdfError};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("what", DataType::Utf8, false),
        Field::new("records", DataType::Int64, false),
    ]))
}

fn row(records: i64) -> Result<RecordBatch, UdfError> {
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec!["records"])),
            Arc::new(Int64Array::from(vec![records])),
        ],
    )?)
}

/// Emits one row per input batch: its number of rows.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountMapper;

impl BatchMapper for CountMapper {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn map_batch(&self, batch: &RecordBatch, out: &mut BatchEmitter<'_>) -> Result<(), UdfError> {
        out.emit(row(batch.num_rows() as i64)?);
        Ok(())
    }
}

/// Sums the counts.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountReducer;

impl BatchReducer for CountReducer {
    fn schema(&self) -> SchemaRef {
        schema()
    }

    fn reduce_batch(
        &self,
        rows: &RecordBatch,
        groups: &[Range<usize>],
        out: &mut BatchEmitter<'_>,
    ) -> Result<(), UdfError> {
        let counts = rows.column(1).as_primitive::<Int64Type>();
        for g in groups {
            out.emit(row(g.clone().map(|i| counts.value(i)).sum())?);
        }
        Ok(())
    }
}

/// The `count` job.
pub fn job() -> BatchJob<CountMapper, CountReducer> {
    BatchJob::new("count", CountMapper, CountReducer, &["what"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_summed() {
        let mut out = BatchEmitter::default();
        let rows = [row(3), row(4), row(5)].map(Result::unwrap);
        let b = arrow_select::concat::concat_batches(&schema(), &rows).unwrap();
        CountReducer
            .reduce_batch(&b, &[0..2, 2..3], &mut out)
            .unwrap();
        let sums: Vec<i64> = out
            .batches()
            .iter()
            .map(|b| b.column(1).as_primitive::<Int64Type>().value(0))
            .collect();
        assert_eq!(sums, [7, 5]);
    }
}
