//! Input records: how a map task's split becomes the values its mapper sees.

use arrow_array::RecordBatch;
use serde::de::DeserializeOwned;
use sluice_core::partition::{partition_values, PartitionValue};
use sluice_core::InputFormat;

use crate::{TaskContext, UdfError};

/// The data of one map task, as read from its split.
///
/// ```
/// use sluice_core::InputFormat;
/// use sluice_udf::MapInput;
///
/// // A CSV split at the start of its file: the header line is not a record.
/// match MapInput::text("id,name\n1,ann\n", InputFormat::Csv { header: true }, 0) {
///     MapInput::Text { text, offset, columns, .. } => {
///         assert_eq!((text, offset, columns), ("1,ann\n", 8, Some(2)))
///     }
///     MapInput::Batches(_) => unreachable!(),
/// }
/// ```
#[derive(Debug, Clone, Copy)]
pub enum MapInput<'a> {
    /// Whole lines of a text-based file (text, CSV or JSON lines), header already skipped.
    Text {
        /// The lines.
        text: &'a str,
        /// How each line is read.
        format: InputFormat,
        /// Byte offset of `text` in its file, to name the offset of a bad record.
        offset: u64,
        /// CSV: the number of fields of the file's first record (the header, if it has one),
        /// known when `text` starts the file; a record with another number is bad (unless the
        /// job sets [`CSV_FLEXIBLE_PARAM`]).
        columns: Option<usize>,
        /// Combined small files: where each file starts in `text` and its path (`offset` is
        /// then 0); empty when `text` is one file's, the split's.
        files: &'a [(usize, String)],
    },
    /// Arrow record batches (Parquet or Arrow IPC input).
    Batches(&'a [RecordBatch]),
}

impl<'a> MapInput<'a> {
    /// Text lines in `format` starting at byte `offset` of their file, with a CSV header record
    /// dropped when the text starts the file.
    ///
    /// The header is the file's first CSV record as the csv crate parses it (leading blank
    /// lines skipped, a quoted name may hold a newline), with its line terminator.
    pub fn text(text: &'a str, format: InputFormat, offset: u64) -> Self {
        let InputFormat::Csv { header } = format else {
            return MapInput::Text {
                text,
                format,
                offset,
                columns: None,
                files: &[],
            };
        };
        if offset != 0 {
            return MapInput::Text {
                text,
                format,
                offset,
                columns: None,
                files: &[],
            };
        }
        let (end, columns) = first_csv_record(text);
        let skip = if header { end } else { 0 };
        MapInput::Text {
            text: &text[skip..],
            format,
            offset: skip as u64,
            columns,
            files: &[],
        }
    }

    /// The same text when it is several small files one after the other: `files` says where
    /// each starts in the text and its path, so that a record is named by its own file and
    /// offset and gets its own file's partition columns.
    pub fn with_files(self, files: &'a [(usize, String)]) -> Self {
        match self {
            MapInput::Text {
                text,
                format,
                offset,
                columns,
                ..
            } => MapInput::Text {
                text,
                format,
                offset,
                columns,
                files,
            },
            batches => batches,
        }
    }
}

/// Where the records of a text input come from: the file and offset of a position in the
/// text, and that file's Hive partition values.
struct Origin<'a> {
    /// Byte offset of the text in its file (one file only).
    base: u64,
    /// `(start in text, path)` of each combined file; empty for one file.
    files: &'a [(usize, String)],
    /// The one file's path (or the task, outside a split).
    single: String,
    /// Partition values of each file (of the one file when `files` is empty).
    parts: Vec<Vec<PartitionValue>>,
}

impl<'a> Origin<'a> {
    fn new(ctx: &TaskContext, base: u64, files: &'a [(usize, String)]) -> Self {
        let parts = if files.is_empty() {
            vec![ctx
                .split()
                .map(|s| partition_values(&s.path))
                .unwrap_or_default()]
        } else {
            files.iter().map(|(_, p)| partition_values(p)).collect()
        };
        Origin {
            base,
            files,
            single: where_(ctx),
            parts,
        }
    }

    /// The file index, path and byte offset of position `pos` of the text.
    fn at(&self, pos: usize) -> (usize, &str, u64) {
        if self.files.is_empty() {
            return (0, &self.single, self.base + pos as u64);
        }
        let i = self.files.partition_point(|(at, _)| *at <= pos).max(1) - 1;
        let (at, path) = &self.files[i];
        (i, path, pos.saturating_sub(*at) as u64)
    }
}

/// A partition value as JSON: a number when it is an integer (as in Parquet input), else a string.
fn partition_json(p: &PartitionValue) -> serde_json::Value {
    match (p.as_int(), &p.value) {
        (Some(i), _) => i.into(),
        (None, Some(v)) => v.clone().into(),
        (None, None) => serde_json::Value::Null,
    }
}

/// The byte offset just past the first CSV record of `text` and its line terminator (`text`'s
/// length when it holds only one record), and the record's number of fields.
fn first_csv_record(text: &str) -> (usize, Option<usize>) {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut record = csv::ByteRecord::new();
    if !matches!(reader.read_byte_record(&mut record), Ok(true)) {
        // No record, or one that does not parse: drop the first line, as a line reader would.
        return (text.find('\n').map_or(text.len(), |i| i + 1), None);
    }
    let mut end = (reader.position().byte() as usize).min(text.len());
    // The reader stops after the `\r` of a `\r\n` terminator; the `\n` belongs to the header.
    if end > 0 && text.as_bytes()[end - 1] == b'\r' && text.as_bytes().get(end) == Some(&b'\n') {
        end += 1;
    }
    // Only a character boundary can start the records (the csv reader stops after ASCII).
    while !text.is_char_boundary(end) {
        end += 1;
    }
    (end, Some(record.len()))
}

/// A type a mapper can take as its input record (`Mapper::In`).
///
/// `str` takes each line of text input as it is. Any serde type takes a CSV record (fields by
/// position), a JSON line, or a Parquet or Arrow row (columns by name).
///
/// ```
/// use sluice_core::InputFormat;
/// use sluice_udf::{Input, MapInput, TaskContext};
///
/// #[derive(serde::Deserialize)]
/// struct Reading { sensor: String, celsius: f64 }
///
/// let text = "{\"sensor\":\"a\",\"celsius\":20.5}\n{\"sensor\":\"b\",\"celsius\":-3}\n";
/// let mut sum = 0.0;
/// Reading::for_each_record(MapInput::text(text, InputFormat::Jsonl, 0), &TaskContext::default(), |r: &Reading| {
///     sum += r.celsius
/// }).unwrap();
/// assert_eq!(sum, 17.5);
/// ```
pub trait Input {
    /// Calls `f` with every record of `input` and returns how many records were skipped.
    ///
    /// A record that does not parse is an error naming the file and byte offset (or batch
    /// rows), unless the job skips bad records ([`BAD_RECORDS_PARAM`] = `skip`, Spark's
    /// DROPMALFORMED): then it is skipped and counted.
    fn for_each_record<F: FnMut(&Self)>(
        input: MapInput<'_>,
        ctx: &TaskContext,
        f: F,
    ) -> Result<u64, UdfError>;

    /// The columns a record of this type reads by name (the fields of a serde struct), so
    /// that columnar input is read only for them; `None` when it takes whole records.
    fn columns() -> Option<Vec<String>> {
        None
    }
}

/// The job parameter that chooses what a record that does not parse does: `fail` (the
/// default) fails the task naming the record; `skip` skips it and counts it in the
/// [`SKIPPED_RECORDS_COUNTER`] counter.
pub const BAD_RECORDS_PARAM: &str = "sluice.bad_records";

/// The job parameter that lets CSV records have any number of fields (`true`); by default a
/// record whose number of fields differs from the file's header (or first record) is bad.
pub const CSV_FLEXIBLE_PARAM: &str = "sluice.csv.flexible";

/// The user counter of records skipped because they did not parse.
pub const SKIPPED_RECORDS_COUNTER: &str = "skipped_bad_records";

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Calls the map function on one record. A panic fails the task naming the record's file and
/// position (`unit` is "byte" or "row"), or, when the job skips bad records, skips the record,
/// keeps it in `_bad_records/` and counts it: a record that crashes the function is as bad as
/// one that does not parse.
#[allow(clippy::too_many_arguments)]
fn map_guarded<R: ?Sized>(
    f: &mut impl FnMut(&R),
    row: &R,
    ctx: &TaskContext,
    skipped: &std::cell::Cell<u64>,
    file: &str,
    unit: &str,
    at: u64,
    raw: &str,
) -> Result<(), UdfError> {
    let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(row))) else {
        return Ok(());
    };
    let msg = panic_message(p.as_ref());
    if ctx.param(BAD_RECORDS_PARAM) == Some("skip") {
        skipped.set(skipped.get() + 1);
        return ctx.keep_bad_record(file, at, format!("the map function panicked: {msg}"), raw);
    }
    Err(UdfError::Panicked(format!(
        "{file}: the map function panicked on the record at {unit} {at}: {msg}; fix the function \
         or pass --param {BAD_RECORDS_PARAM}=skip to skip and count such records"
    )))
}

fn where_(ctx: &TaskContext) -> String {
    match ctx.split() {
        Some(s) => s.path.clone(),
        None => format!("task {}", ctx.task()),
    }
}

impl Input for str {
    fn for_each_record<F: FnMut(&Self)>(
        input: MapInput<'_>,
        ctx: &TaskContext,
        f: F,
    ) -> Result<u64, UdfError> {
        match input {
            MapInput::Text {
                text,
                offset,
                files,
                ..
            } => {
                let mut f = f;
                let origin = Origin::new(ctx, offset, files);
                let skipped = std::cell::Cell::new(0);
                let mut pos = 0usize;
                for line in text.split_inclusive('\n') {
                    let body = line.strip_suffix('\n').unwrap_or(line);
                    let body = body.strip_suffix('\r').unwrap_or(body);
                    let (_, path, at) = origin.at(pos);
                    map_guarded(&mut f, body, ctx, &skipped, path, "byte", at, body)?;
                    pos += line.len();
                }
                Ok(skipped.get())
            }
            MapInput::Batches(_) => Err(UdfError::Input(format!(
                "{}: the job's mapper reads text lines (type In = str) but the input is columnar (Parquet or Arrow); \
                 declare `type In = YourRow` with serde, or write a BatchMapper",
                where_(ctx)
            ))),
        }
    }
}

impl<T: DeserializeOwned> Input for T {
    fn columns() -> Option<Vec<String>> {
        use serde_arrow::schema::{SchemaLike, TracingOptions};
        // A struct's fields by name; a tuple or a vector reads by position, so all columns.
        let fields =
            Vec::<arrow_schema::FieldRef>::from_type::<T>(TracingOptions::default()).ok()?;
        let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        (!names.is_empty() && names.iter().all(|n| n.parse::<usize>().is_err())).then_some(names)
    }

    fn for_each_record<F: FnMut(&Self)>(
        input: MapInput<'_>,
        ctx: &TaskContext,
        mut f: F,
    ) -> Result<u64, UdfError> {
        let skip = ctx.param(BAD_RECORDS_PARAM) == Some("skip");
        let skipped = std::cell::Cell::new(0u64);
        // Skipping counts the record; otherwise the task fails naming it.
        let bad = |file: &str, offset: u64, what: &str, e: &dyn std::fmt::Display, raw: &str| {
            if skip {
                skipped.set(skipped.get() + 1);
                return ctx.keep_bad_record(
                    file,
                    offset,
                    format!(
                        "cannot read the {what} record as {}: {e}",
                        std::any::type_name::<T>()
                    ),
                    raw,
                );
            }
            Err(UdfError::Input(format!(
                "{file}: cannot read the {what} record at byte {offset} as {}: {e}; \
                 check --input-format and the job's input type, or pass \
                 --param {BAD_RECORDS_PARAM}=skip to skip and count such records",
                std::any::type_name::<T>()
            )))
        };
        match input {
            MapInput::Text {
                format: InputFormat::Text,
                ..
            } => Err(UdfError::Input(format!(
                "{}: the job's mapper takes {} records but the input format is text; \
                 use --input-format csv, jsonl or parquet, or `type In = str` for lines",
                where_(ctx),
                std::any::type_name::<T>()
            ))),
            MapInput::Text {
                text,
                format: InputFormat::Csv { .. },
                offset,
                columns,
                files,
            } => {
                let origin = Origin::new(ctx, offset, files);
                // The reader is flexible: a record with a different number of fields is the
                // record's problem, checked here, not the whole split's.
                let columns = columns.filter(|_| ctx.param(CSV_FLEXIBLE_PARAM) != Some("true"));
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .flexible(true)
                    .from_reader(text.as_bytes());
                let mut record = csv::StringRecord::new();
                loop {
                    let start = reader.position().byte() as usize;
                    let read = reader.read_record(&mut record);
                    let end = (reader.position().byte() as usize).min(text.len());
                    let raw = text
                        .get(start..end)
                        .unwrap_or_default()
                        .trim_end_matches(['\n', '\r']);
                    let (file, path, at) = origin.at(start);
                    match read {
                        Ok(false) => return Ok(skipped.get()),
                        Ok(true) => match columns {
                            Some(n) if record.len() != n => bad(
                                path,
                                at,
                                "CSV",
                                &format!(
                                    "it has {} fields where the file's first record has {n} \
                                     (--param {CSV_FLEXIBLE_PARAM}=true allows any number)",
                                    record.len()
                                ),
                                raw,
                            )?,
                            _ => {
                                // Partition columns follow the file's own, as in Spark.
                                for p in &origin.parts[file] {
                                    record.push_field(p.value.as_deref().unwrap_or(""));
                                }
                                match record.deserialize::<T>(None) {
                                    Ok(row) => map_guarded(
                                        &mut f, &row, ctx, &skipped, path, "byte", at, raw,
                                    )?,
                                    Err(e) => bad(path, at, "CSV", &e, raw)?,
                                }
                            }
                        },
                        Err(e) => bad(path, at, "CSV", &e, raw)?,
                    }
                }
            }
            MapInput::Text {
                text,
                offset,
                files,
                ..
            } => {
                let origin = Origin::new(ctx, offset, files);
                let mut pos = 0usize;
                for line in text.split_inclusive('\n') {
                    let body = line.trim_end_matches(['\n', '\r']);
                    if !body.trim().is_empty() {
                        let (file, path, at) = origin.at(pos);
                        let parts = &origin.parts[file];
                        let row = if parts.is_empty() {
                            serde_json::from_str::<T>(body)
                        } else {
                            // A key the record has itself wins over its directory's.
                            serde_json::from_str::<serde_json::Value>(body).and_then(|mut v| {
                                if let serde_json::Value::Object(m) = &mut v {
                                    for p in parts {
                                        m.entry(p.key.clone()).or_insert_with(|| partition_json(p));
                                    }
                                }
                                serde_json::from_value::<T>(v)
                            })
                        };
                        match row {
                            Ok(row) => {
                                map_guarded(&mut f, &row, ctx, &skipped, path, "byte", at, body)?
                            }
                            Err(e) => bad(path, at, "JSON", &e, body)?,
                        }
                    }
                    pos += line.len();
                }
                Ok(skipped.get())
            }
            MapInput::Batches(batches) => {
                let mut row0 = 0u64;
                for b in batches {
                    let rows: Vec<T> = serde_arrow::from_record_batch(b).map_err(|e| {
                        UdfError::Input(format!(
                            "{}: cannot read the rows {row0}..{} as {}: {e}; the job's input \
                             type must name the file's columns",
                            where_(ctx),
                            row0 + b.num_rows() as u64,
                            std::any::type_name::<T>()
                        ))
                    })?;
                    let file = where_(ctx);
                    for (i, row) in rows.iter().enumerate() {
                        let at = row0 + i as u64;
                        map_guarded(&mut f, row, ctx, &skipped, &file, "row", at, "")?;
                    }
                    row0 += b.num_rows() as u64;
                }
                Ok(skipped.get())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq, Clone)]
    struct Sale {
        store: String,
        amount: f64,
    }

    fn collect<T: DeserializeOwned + Clone>(input: MapInput<'_>) -> Result<Vec<T>, UdfError> {
        let mut out = Vec::new();
        T::for_each_record(input, &TaskContext::default(), |r: &T| out.push(r.clone()))?;
        Ok(out)
    }

    #[test]
    fn csv_skips_the_header_only_at_the_start_of_a_file() {
        let text = "store,amount\na,1.5\n\"b, inc\",2\n";
        let rows: Vec<(String, f64)> =
            collect(MapInput::text(text, InputFormat::Csv { header: true }, 0)).unwrap();
        assert_eq!(rows, vec![("a".into(), 1.5), ("b, inc".into(), 2.0)]);
        let rows: Vec<(String, f64)> = collect(MapInput::text(
            "c,3\n",
            InputFormat::Csv { header: true },
            40,
        ))
        .unwrap();
        assert_eq!(rows, vec![("c".into(), 3.0)]);
    }

    #[test]
    fn csv_header_and_records_may_hold_quoted_newlines() {
        let header = InputFormat::Csv { header: true };
        let text = "id,\"long\nname\"\r\n1,\"a\nb, \"\"c\"\"\"\r\n2,\"\r\n\"\n3,x";
        let rows: Vec<(u32, String)> = collect(MapInput::text(text, header, 0)).unwrap();
        let want = [(1, "a\nb, \"c\""), (2, "\r\n"), (3, "x")];
        assert_eq!(rows, want.map(|(i, s)| (i, s.to_string())));
        // The records start just past the header's terminator, CRLF or LF.
        for (text, rest) in [
            ("h\r\n1,a\n", "1,a\n"),
            ("h\n\n1,a\n", "\n1,a\n"),
            ("\"h\n1\",\"é\"\n1,a", "1,a"),
            ("only-a-header", ""),
            ("", ""),
        ] {
            match MapInput::text(text, header, 0) {
                MapInput::Text {
                    text: t, offset, ..
                } => {
                    assert_eq!(t, rest, "{text:?}");
                    assert_eq!(offset as usize, text.len() - rest.len(), "{text:?}");
                }
                MapInput::Batches(_) => unreachable!(),
            }
        }
    }

    #[test]
    fn a_csv_record_of_the_wrong_width_fails_naming_its_offset() {
        let text = "store,amount\na,1\nb,2,3\n";
        let e =
            collect::<(String, f64)>(MapInput::text(text, InputFormat::Csv { header: true }, 0))
                .unwrap_err()
                .to_string();
        assert!(
            e.contains("byte 17") && e.contains("3 fields") && e.contains("has 2"),
            "{e}"
        );
        // Mid-file (no header seen), only the type decides.
        let rows: Vec<(String, f64)> = collect(MapInput::text(
            "b,2,3\n",
            InputFormat::Csv { header: true },
            40,
        ))
        .unwrap();
        assert_eq!(rows, vec![("b".to_string(), 2.0)]);
    }

    #[test]
    fn bad_records_name_their_byte_offset() {
        let text = "a,1\nb,xyz\n";
        let e = collect::<(String, f64)>(MapInput::text(
            text,
            InputFormat::Csv { header: false },
            100,
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("byte 104"), "{e}");
        let text = "{\"store\":\"a\",\"amount\":1}\n{\"store\":\"b\"}\n";
        let e = collect::<Sale>(MapInput::text(text, InputFormat::Jsonl, 0)).unwrap_err();
        assert!(e.to_string().contains("byte 25"), "{e}");
    }

    #[test]
    fn a_record_the_function_panics_on_is_named_or_skipped() {
        #[derive(serde::Deserialize)]
        struct Row {
            n: i64,
        }
        let text = "{\"n\":1}\n{\"n\":-7}\n{\"n\":3}\n";
        let mut sum = 0;
        let mut f = |r: &Row| {
            assert!(r.n >= 0, "negative n");
            sum += r.n;
        };
        let err = Row::for_each_record(
            MapInput::text(text, InputFormat::Jsonl, 100),
            &TaskContext::default(),
            &mut f,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, UdfError::Panicked(_)), "{msg}");
        assert!(
            msg.contains("at byte 108") && msg.contains("negative n"),
            "{msg}"
        );
        let ctx = TaskContext::default().with_param(BAD_RECORDS_PARAM, "skip");
        sum = 0;
        let skipped = Row::for_each_record(
            MapInput::text(text, InputFormat::Jsonl, 100),
            &ctx,
            |r: &Row| {
                assert!(r.n >= 0, "negative n");
                sum += r.n;
            },
        )
        .unwrap();
        assert_eq!((skipped, sum), (1, 4));
        let kept = ctx.take_bad_records();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            (kept[0].offset, kept[0].record.as_str()),
            (108, "{\"n\":-7}")
        );
        assert!(
            kept[0].error.contains("panicked: negative n"),
            "{:?}",
            kept[0]
        );
    }

    #[test]
    fn bad_records_can_be_skipped_and_counted() {
        let ctx = TaskContext::default().with_param(BAD_RECORDS_PARAM, "skip");
        // A non-number, a record with too few fields and one with too many (the file's first
        // record has two).
        let text = "a,1\nb,xyz\nc\nd,4,extra\ne,5\n";
        let mut got = Vec::new();
        let skipped = <(String, f64)>::for_each_record(
            MapInput::text(text, InputFormat::Csv { header: false }, 0),
            &ctx,
            |r: &(String, f64)| got.push(r.0.clone()),
        )
        .unwrap();
        assert_eq!((got, skipped), (vec!["a".to_string(), "e".to_string()], 3));
        let kept: Vec<(u64, String)> = ctx
            .take_bad_records()
            .into_iter()
            .map(|b| (b.offset, b.record))
            .collect();
        assert_eq!(
            kept,
            [
                (4, "b,xyz".to_string()),
                (10, "c".to_string()),
                (12, "d,4,extra".to_string())
            ]
        );
        // Records of varying width read into a vector of fields when the job allows it.
        let flexible = TaskContext::default().with_param(CSV_FLEXIBLE_PARAM, "true");
        let mut rows: Vec<Vec<String>> = Vec::new();
        <Vec<String>>::for_each_record(
            MapInput::text(text, InputFormat::Csv { header: false }, 0),
            &flexible,
            |r: &Vec<String>| rows.push(r.clone()),
        )
        .unwrap();
        assert_eq!(rows[3], ["d", "4", "extra"]);
    }

    #[derive(serde::Deserialize, Debug, PartialEq, Clone)]
    struct DaySale {
        store: String,
        amount: f64,
        day: String,
        hour: Option<i64>,
    }

    /// Two small files of a combined split, in Hive partition directories.
    fn combined(a: &str, b: &str) -> (String, Vec<(usize, String)>) {
        let files = vec![
            (0, "s3://b/t/day=mon/hour=7/part-0".to_string()),
            (
                a.len(),
                "s3://b/t/day=tue/hour=__HIVE_DEFAULT_PARTITION__/part-1".to_string(),
            ),
        ];
        (format!("{a}{b}"), files)
    }

    #[test]
    fn text_records_get_their_own_files_partition_columns_and_positions() {
        let ctx = TaskContext::default().with_param(BAD_RECORDS_PARAM, "skip");
        let mut got = Vec::new();
        // JSON lines: a key the record has itself wins over its directory's.
        let (text, files) = combined(
            "{\"store\":\"a\",\"amount\":1}\n",
            "{\"store\":\"b\",\"amount\":2}\nnot json\n{\"store\":\"c\",\"amount\":3,\"day\":\"own\"}\n",
        );
        let skipped = DaySale::for_each_record(
            MapInput::text(&text, InputFormat::Jsonl, 0).with_files(&files),
            &ctx,
            |r: &DaySale| got.push((r.store.clone(), r.day.clone(), r.hour)),
        )
        .unwrap();
        assert_eq!(skipped, 1);
        assert_eq!(
            got,
            [
                ("a".to_string(), "mon".to_string(), Some(7)),
                ("b".to_string(), "tue".to_string(), None),
                ("c".to_string(), "own".to_string(), None),
            ]
        );
        let bad = ctx.take_bad_records();
        assert_eq!(bad.len(), 1);
        // Named by its own file and its offset in that file, not in the combined text.
        assert_eq!(bad[0].file, files[1].1);
        assert_eq!((bad[0].offset, bad[0].record.as_str()), (25, "not json"));

        // CSV: the partition columns follow the file's own fields.
        let (text, files) = combined("a,1\n", "b,2\nc,x\n");
        let mut got = Vec::new();
        DaySale::for_each_record(
            MapInput::text(&text, InputFormat::Csv { header: false }, 0).with_files(&files),
            &ctx,
            |r: &DaySale| got.push((r.store.clone(), r.day.clone(), r.hour)),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ("a".to_string(), "mon".to_string(), Some(7)),
                ("b".to_string(), "tue".to_string(), None),
            ]
        );
        let bad = ctx.take_bad_records();
        assert_eq!(
            (bad[0].file.as_str(), bad[0].offset),
            (files[1].1.as_str(), 4)
        );

        // Without skipping, the error names the file and the offset in it.
        let err = DaySale::for_each_record(
            MapInput::text(&text, InputFormat::Csv { header: false }, 0).with_files(&files),
            &TaskContext::default(),
            |_: &DaySale| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("day=tue/hour=__HIVE_DEFAULT_PARTITION__/part-1: cannot read the CSV record at byte 4"), "{err}");
    }

    #[test]
    fn one_files_partition_columns_come_from_the_split() {
        let ctx = TaskContext::default().with_split(sluice_core::Split {
            path: "/data/t/day=wed/hour=09/f.csv".into(),
            start: 100,
            end: 200,
            file_len: 200,
            rest: Vec::new(),
        });
        let mut got = Vec::new();
        DaySale::for_each_record(
            MapInput::text("d,4\n", InputFormat::Csv { header: true }, 100),
            &ctx,
            |r: &DaySale| got.push(r.clone()),
        )
        .unwrap();
        assert_eq!(
            got,
            [DaySale {
                store: "d".into(),
                amount: 4.0,
                day: "wed".into(),
                hour: Some(9)
            }]
        );
    }

    #[test]
    fn json_lines_become_records() {
        let text = "{\"store\":\"a\",\"amount\":1}\n\n{\"store\":\"b\",\"amount\":2.5}";
        let mut got = Vec::new();
        Sale::for_each_record(
            MapInput::text(text, InputFormat::Jsonl, 0),
            &TaskContext::default(),
            |s: &Sale| got.push(s.amount),
        )
        .unwrap();
        assert_eq!(got, vec![1.0, 2.5]);
    }

    #[test]
    fn serde_records_refuse_plain_text() {
        let e = collect::<(String, f64)>(MapInput::text("x", InputFormat::Text, 0)).unwrap_err();
        assert!(e.to_string().contains("--input-format"), "{e}");
    }
}
