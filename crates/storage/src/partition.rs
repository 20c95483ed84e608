//! Hive-style partition directories: `…/day=2026-12-01/region=eu/part-0.parquet`. Every
//! `key=value` directory in a file's path becomes a column of the rows read from it (a value that
//! is an integer becomes Int64, any other Utf8, `__HIVE_DEFAULT_PARTITION__` null), unless the
//! file has a column of that name itself. A `sluice.where` term on a partition column is decided
//! from the path alone, so a file it rules out is never opened (partition pruning).

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::StorageError;
pub use sluice_core::partition::{partition_values, PartitionValue};

/// `batch` with a constant column for each partition value it does not already have.
pub fn with_partition_columns(
    batch: RecordBatch,
    parts: &[PartitionValue],
) -> Result<RecordBatch, StorageError> {
    if parts.is_empty() {
        return Ok(batch);
    }
    let n = batch.num_rows();
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for p in parts {
        if fields.iter().any(|f| f.name() == &p.key) {
            continue;
        }
        let (field, col): (Field, ArrayRef) = match (p.as_int(), &p.value) {
            (Some(i), _) => (
                Field::new(&p.key, DataType::Int64, false),
                Arc::new(Int64Array::from(vec![i; n])),
            ),
            (None, Some(v)) => (
                Field::new(&p.key, DataType::Utf8, false),
                Arc::new(StringArray::from(vec![v.as_str(); n])),
            ),
            (None, None) => (
                Field::new(&p.key, DataType::Utf8, true),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
            ),
        };
        fields.push(Arc::new(field));
        columns.push(col);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| StorageError::Filter {
        reason: format!("adding partition columns: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_added_unless_the_file_has_them() {
        let b = RecordBatch::try_from_iter([(
            "day",
            Arc::new(StringArray::from(vec!["own", "own"])) as ArrayRef,
        )])
        .unwrap();
        let parts = partition_values("/t/day=1/hour=3/region=eu/f.arrow");
        let out = with_partition_columns(b, &parts).unwrap();
        let schema = out.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["day", "hour", "region"]);
        assert_eq!(out.column(1).data_type(), &DataType::Int64);
        assert_eq!(out.column(2).data_type(), &DataType::Utf8);
        assert_eq!(out.num_rows(), 2);
    }
}
