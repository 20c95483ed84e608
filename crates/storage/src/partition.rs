//! Hive-style partition directories: `…/day=2026-12-01/region=eu/part-0.parquet`. Every
//! `key=value` directory in a file's path becomes a column of the rows read from it (a value that
//! is an integer becomes Int64, any other Utf8, `__HIVE_DEFAULT_PARTITION__` null), unless the
//! file has a column of that name itself. A `sluice.where` term on a partition column is decided
//! from the path alone, so a file it rules out is never opened (partition pruning).

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::StorageError;

/// The value Hive writes for a null partition value.
const NULL_VALUE: &str = "__HIVE_DEFAULT_PARTITION__";

/// One partition column of a file: its name and value.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionValue {
    /// Column name (the directory's key).
    pub key: String,
    /// The value, percent-decoded; `None` for Hive's null.
    pub value: Option<String>,
}

impl PartitionValue {
    /// An integer value, when it is one.
    pub fn as_int(&self) -> Option<i64> {
        self.value.as_deref().and_then(|v| v.parse().ok())
    }
}

/// Decodes `%XX` escapes (Hive escapes `/`, `=`, `%` and others in values).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `key=value` directories of `path` (a file path or URI), outermost first; a key given
/// twice keeps its innermost value.
pub fn partition_values(path: &str) -> Vec<PartitionValue> {
    let dirs = match path.rsplit_once('/') {
        Some((d, _)) => d,
        None => return Vec::new(),
    };
    let mut out: Vec<PartitionValue> = Vec::new();
    for part in dirs.split('/') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        if k.is_empty() || k.starts_with('.') || k.starts_with('_') {
            continue;
        }
        let value = (v != NULL_VALUE).then(|| unescape(v));
        let key = unescape(k);
        out.retain(|p| p.key != key);
        out.push(PartitionValue { key, value });
    }
    out
}

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
    fn key_value_directories_become_values() {
        let p = partition_values("s3://b/t/day=2026-12-01/hour=07/n=%2Fx/_tmp=1/part-0.parquet");
        let got: Vec<(String, Option<String>)> =
            p.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
        assert_eq!(
            got,
            [
                ("day".to_string(), Some("2026-12-01".to_string())),
                ("hour".to_string(), Some("07".to_string())),
                ("n".to_string(), Some("/x".to_string())),
            ]
        );
        assert_eq!(p[1].as_int(), Some(7));
        assert!(partition_values("a=1.parquet").is_empty());
        let null = partition_values("/t/k=__HIVE_DEFAULT_PARTITION__/f");
        assert_eq!(null[0].value, None);
    }

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
