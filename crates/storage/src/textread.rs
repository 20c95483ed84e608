//! Reading back CSV and JSON-lines output parts of a `(utf8 key, int64 count)` job, with the
//! same arrow crates that wrote them (for `read_key_counts`: summaries and tests).

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema};

use crate::StorageError;

fn bad(path: &Path, reason: impl std::fmt::Display) -> StorageError {
    StorageError::Format {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Appends the `(key, count)` rows of batches whose first two columns are utf8 and int64.
pub(crate) fn batch_key_counts(
    path: &Path,
    batch: &RecordBatch,
    rows: &mut Vec<(String, i64)>,
) -> Result<(), StorageError> {
    if batch.num_columns() < 2
        || batch.column(0).data_type() != &DataType::Utf8
        || batch.column(1).data_type() != &DataType::Int64
    {
        return Err(bad(path, "not a (utf8, int64) output"));
    }
    let k = batch.column(0).as_string::<i32>();
    let c = batch.column(1).as_primitive::<Int64Type>();
    for i in 0..batch.num_rows() {
        if c.is_null(i) {
            return Err(bad(path, format!("row {} has no count", i + 1)));
        }
        // CSV writes a null and an empty string alike, and arrow-csv reads both back as null:
        // an empty key.
        let key = if k.is_null(i) { "" } else { k.value(i) };
        rows.push((key.to_string(), c.value(i)));
    }
    Ok(())
}

fn collect(
    path: &Path,
    batches: impl Iterator<Item = Result<RecordBatch, ArrowError>>,
) -> Result<Vec<(String, i64)>, StorageError> {
    let mut rows = Vec::new();
    for batch in batches {
        batch_key_counts(path, &batch.map_err(|e| bad(path, e))?, &mut rows)?;
    }
    Ok(rows)
}

/// The rows of a CSV part with a header line: the first column read as utf8, the second as
/// int64 (nothing is inferred, so a word like `12` stays a word). An empty file has no rows.
pub(crate) fn csv_key_counts(path: &Path, data: &[u8]) -> Result<Vec<(String, i64)>, StorageError> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let format = arrow_csv::reader::Format::default().with_header(true);
    let (header, _) = format
        .infer_schema(Cursor::new(data), Some(0))
        .map_err(|e| bad(path, format!("reading the CSV header: {e}")))?;
    let fields: Vec<Field> = header
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let ty = if i == 1 {
                DataType::Int64
            } else {
                DataType::Utf8
            };
            Field::new(f.name(), ty, true)
        })
        .collect();
    let reader = arrow_csv::ReaderBuilder::new(Arc::new(Schema::new(fields)))
        .with_format(format)
        .build(Cursor::new(data))
        .map_err(|e| bad(path, e))?;
    collect(path, reader)
}

/// The rows of a JSON-lines part whose objects hold one string and one integer (found by
/// type: inference does not keep the order of keys). An empty file has no rows.
pub(crate) fn jsonl_key_counts(
    path: &Path,
    data: &[u8],
) -> Result<Vec<(String, i64)>, StorageError> {
    let (inferred, _) = arrow_json::reader::infer_json_schema(Cursor::new(data), None)
        .map_err(|e| bad(path, format!("reading JSON lines: {e}")))?;
    if inferred.fields().is_empty() {
        return Ok(Vec::new());
    }
    let only = |ty: DataType| {
        let mut of_type = inferred.fields().iter().filter(|f| f.data_type() == &ty);
        match (of_type.next(), of_type.next()) {
            (Some(f), None) => Ok(f.clone()),
            _ => Err(bad(path, "not a (utf8, int64) output")),
        }
    };
    // Reading only these two keys, in this order; others are ignored.
    let schema = Schema::new(vec![only(DataType::Utf8)?, only(DataType::Int64)?]);
    let reader = arrow_json::ReaderBuilder::new(Arc::new(schema))
        .build(Cursor::new(data))
        .map_err(|e| bad(path, e))?;
    collect(path, reader)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use sluice_core::OutputFormat;

    use super::{csv_key_counts, jsonl_key_counts};
    use crate::OutputWriter;

    /// Words that need CSV quoting or JSON escaping, and ones a type inference would misread.
    const WORDS: [&str; 10] = [
        "plain",
        "a,b",
        "say\"hi\"",
        "back\\slash",
        "ünï",
        "12",
        "true",
        "",
        "tab\there",
        "\"",
    ];

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("word", DataType::Utf8, false),
            Field::new("count", DataType::Int64, false),
        ]));
        let words: ArrayRef = Arc::new(StringArray::from(WORDS.to_vec()));
        let counts: ArrayRef = Arc::new(Int64Array::from_iter_values(
            (0..WORDS.len() as i64).map(|i| i * 1_000_000_007 - 3),
        ));
        RecordBatch::try_new(schema, vec![words, counts]).unwrap()
    }

    fn round_trip(format: OutputFormat) -> (String, Vec<(String, i64)>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("part.{}", format.extension()));
        let b = batch();
        let mut w = OutputWriter::create(&path, format, b.schema()).unwrap();
        w.write(&b.slice(0, 4)).unwrap();
        w.write(&b.slice(4, WORDS.len() - 4)).unwrap();
        let (rows, bytes) = w.finish().unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(rows, WORDS.len() as u64);
        assert_eq!(bytes, data.len() as u64);
        let got = match format {
            OutputFormat::Csv => csv_key_counts(&path, &data).unwrap(),
            OutputFormat::Jsonl => jsonl_key_counts(&path, &data).unwrap(),
            f => panic!("{f:?} is not a text format"),
        };
        (String::from_utf8(data).unwrap(), got)
    }

    fn want() -> Vec<(String, i64)> {
        WORDS
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i as i64 * 1_000_000_007 - 3))
            .collect()
    }

    #[test]
    fn csv_round_trips_with_one_header_and_rfc4180_quoting() {
        let (text, got) = round_trip(OutputFormat::Csv);
        assert_eq!(got, want());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "word,count", "{text}");
        assert_eq!(lines.iter().filter(|l| **l == "word,count").count(), 1);
        assert!(text.contains("\"a,b\",1000000004\n"), "{text}");
        assert!(text.contains("\"say\"\"hi\"\"\",2000000011\n"), "{text}");
        assert!(text.contains("back\\slash,3000000018\n"), "{text}");
        assert!(text.contains("ünï,4000000025\n"), "{text}");
    }

    #[test]
    fn jsonl_round_trips_one_object_a_line() {
        let (text, got) = round_trip(OutputFormat::Jsonl);
        assert_eq!(got, want());
        assert_eq!(text.lines().count(), WORDS.len());
        assert!(text.ends_with('\n'));
        assert!(
            text.starts_with("{\"word\":\"plain\",\"count\":-3}\n"),
            "{text}"
        );
        assert!(
            text.contains("{\"word\":\"say\\\"hi\\\"\",\"count\":2000000011}\n"),
            "{text}"
        );
        assert!(
            text.contains("{\"word\":\"back\\\\slash\",\"count\":3000000018}\n"),
            "{text}"
        );
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v.as_object().unwrap().len(), 2, "{line}");
        }
    }

    #[test]
    fn an_empty_csv_part_still_has_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.csv");
        let w = OutputWriter::create(&path, OutputFormat::Csv, batch().schema()).unwrap();
        assert_eq!(w.finish().unwrap(), (0, 11));
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data, b"word,count\n");
        assert!(csv_key_counts(&path, &data).unwrap().is_empty());
        assert!(jsonl_key_counts(Path::new("x.jsonl"), b"")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn csv_refuses_nested_columns_before_creating_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part.csv");
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        let schema = Arc::new(Schema::new(vec![Field::new(
            "docs",
            DataType::List(item),
            false,
        )]));
        let e = OutputWriter::create(&path, OutputFormat::Csv, schema)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("'docs'") && e.contains("--format jsonl"), "{e}");
        assert!(!path.exists());
    }

    #[test]
    fn jsonl_keys_are_found_by_type_in_any_order() {
        let data = b"{\"n\":2,\"w\":\"b\"}\n{\"w\":\"a\",\"n\":1}\n";
        let got = jsonl_key_counts(Path::new("p.jsonl"), data).unwrap();
        assert_eq!(got, vec![("b".to_string(), 2), ("a".to_string(), 1)]);
    }

    #[test]
    fn a_wrong_shape_is_an_error_naming_the_file() {
        let two_counts = b"{\"a\":1,\"b\":\"x\",\"c\":2}\n";
        let e = jsonl_key_counts(Path::new("p.jsonl"), two_counts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.jsonl") && e.contains("(utf8, int64)"), "{e}");
    }
}
