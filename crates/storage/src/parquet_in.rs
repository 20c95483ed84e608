//! Parquet input: splits by row groups, column projection, and row-group pruning by statistics
//! when the job filters (`--param sluice.where="COL OP VALUE and ..."`).
//!
//! The planner reads each file's footer (so a corrupt one fails the job at submit, naming the
//! file) and cuts the file between row groups: consecutive row groups go into one split until
//! their compressed size reaches the split size, so small row groups are combined; whole small
//! files are combined into one split as text files are. A split is a byte range, and a reader
//! takes exactly the row groups whose midpoint lies in its range (parquet-mr's rule), so every
//! row group is read once whatever the cut. From an object store a reader fetches only the
//! footer and the column chunks of its row groups and projected columns.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::DataType;
use bytes::{Buf, Bytes};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader, RowGroupMetaData,
};
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::statistics::Statistics;
use sluice_core::Split;

use crate::datastore::{block_on, Datastores, Location};
use crate::error::io;
use crate::partition::{partition_values, with_partition_columns, PartitionValue};
use crate::{InputFile, StorageError};

/// The job parameter holding a row filter for Parquet input: `COL OP VALUE` terms joined by
/// `and`; OP is one of `= != < <= > >=`, VALUE a number or a 'quoted string'. Row groups whose
/// statistics rule a term out are not read at all; the other rows are filtered one by one.
pub const WHERE_PARAM: &str = "sluice.where";

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A literal of a filter term.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Num(f64),
    Str(String),
}

/// One `COL OP VALUE` term.
#[derive(Debug, Clone, PartialEq)]
struct Term {
    col: String,
    op: Op,
    lit: Lit,
}

/// A parsed [`WHERE_PARAM`]: every term must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    terms: Vec<Term>,
}

impl Filter {
    /// Parses a filter; the error says what is wrong and what is expected.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut terms = Vec::new();
        for part in split_and(text) {
            let part = part.trim();
            let (at, op, len) = ["<=", ">=", "!=", "=", "<", ">"]
                .iter()
                .filter_map(|o| part.find(o).map(|i| (i, *o, o.len())))
                .min_by_key(|(i, o, _)| (*i, std::cmp::Reverse(o.len())))
                .ok_or_else(|| {
                    format!(
                        "{WHERE_PARAM}: '{part}' is not COL OP VALUE (OP one of = != < <= > >=)"
                    )
                })?;
            let col = part[..at].trim();
            let value = part[at + len..].trim();
            if col.is_empty() || value.is_empty() {
                return Err(format!("{WHERE_PARAM}: '{part}' is not COL OP VALUE"));
            }
            let op = match op {
                "=" => Op::Eq,
                "!=" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                _ => Op::Ge,
            };
            let lit = if let Some(s) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                Lit::Str(s.to_string())
            } else {
                Lit::Num(value.parse().map_err(|_| {
                    format!(
                        "{WHERE_PARAM}: value '{value}' in '{part}' is neither a number nor a \
                         'quoted string'"
                    )
                })?)
            };
            terms.push(Term {
                col: col.to_string(),
                op,
                lit,
            });
        }
        Ok(Filter { terms })
    }

    /// The filter of a job's parameters, if it has one.
    pub fn from_params<'a>(
        mut get: impl FnMut(&str) -> Option<&'a str>,
    ) -> Result<Option<Filter>, String> {
        get(WHERE_PARAM)
            .filter(|t| !t.trim().is_empty())
            .map(Filter::parse)
            .transpose()
    }

    /// Columns the filter reads.
    fn columns(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.col.as_str())
    }

    /// True when the filter reads column `name`.
    pub(crate) fn reads(&self, name: &str) -> bool {
        self.columns().any(|c| c == name)
    }

    /// The rows of `batch` (read from `path`) that pass.
    pub(crate) fn apply(
        &self,
        batch: &RecordBatch,
        path: &Path,
    ) -> Result<RecordBatch, StorageError> {
        let keep = self.mask(batch, path)?;
        arrow_select::filter::filter_record_batch(batch, &keep)
            .map_err(|e| bad(path, e.to_string()))
    }

    /// True when a file with partition values `parts` (from its path) holds no row that
    /// passes: a term on a partition column decides it for the whole file.
    pub(crate) fn rules_out_partitions(&self, parts: &[PartitionValue]) -> bool {
        self.terms.iter().any(|t| {
            let Some(p) = parts.iter().find(|p| p.key == t.col) else {
                return false;
            };
            let Some(v) = &p.value else {
                // Null passes no comparison.
                return true;
            };
            let v = match t.lit {
                Lit::Num(_) => match v.parse::<f64>() {
                    Ok(n) => Lit::Num(n),
                    Err(_) => return false,
                },
                Lit::Str(_) => Lit::Str(v.clone()),
            };
            !t.holds(&v)
        })
    }

    /// True when the statistics of `rg` prove that no row of it passes.
    fn rules_out(&self, rg: &RowGroupMetaData) -> bool {
        self.terms.iter().any(|t| {
            let Some(stats) = rg
                .columns()
                .iter()
                .find(|c| c.column_path().string() == t.col)
                .and_then(|c| c.statistics())
            else {
                return false;
            };
            let Some((min, max)) = bounds(stats) else {
                return false;
            };
            // A number against string statistics (or the reverse) proves nothing.
            if std::mem::discriminant(&min) != std::mem::discriminant(&t.lit) {
                return false;
            }
            match t.op {
                Op::Eq => t.lit.lt(&min) || max.lt(&t.lit),
                Op::Lt => !min.lt(&t.lit),
                Op::Le => t.lit.lt(&min),
                Op::Gt => !t.lit.lt(&max),
                Op::Ge => max.lt(&t.lit),
                Op::Ne => min == max && min == t.lit,
            }
        })
    }

    /// Rows of `batch` that pass; an error names a missing or uncomparable column.
    fn mask(&self, batch: &RecordBatch, path: &Path) -> Result<BooleanArray, StorageError> {
        let mut keep = vec![true; batch.num_rows()];
        for t in &self.terms {
            let col = batch.column_by_name(&t.col).ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "{WHERE_PARAM} names column '{}', which the file lacks",
                        t.col
                    ),
                )
            })?;
            let (to, what) = match t.lit {
                Lit::Num(_) => (DataType::Float64, "a number"),
                Lit::Str(_) => (DataType::Utf8, "a string"),
            };
            let cast = arrow_cast::cast(col, &to).map_err(|e| {
                bad(
                    path,
                    format!(
                        "{WHERE_PARAM}: column '{}' cannot be compared with {what}: {e}",
                        t.col
                    ),
                )
            })?;
            for (i, k) in keep.iter_mut().enumerate() {
                if !*k {
                    continue;
                }
                if cast.is_null(i) {
                    *k = false;
                    continue;
                }
                let v = match &t.lit {
                    Lit::Num(_) => Lit::Num(
                        cast.as_any()
                            .downcast_ref::<arrow_array::Float64Array>()
                            .map_or(f64::NAN, |a| a.value(i)),
                    ),
                    Lit::Str(_) => Lit::Str(
                        cast.as_any()
                            .downcast_ref::<arrow_array::StringArray>()
                            .map_or(String::new(), |a| a.value(i).to_string()),
                    ),
                };
                *k = t.holds(&v);
            }
        }
        Ok(BooleanArray::from(keep))
    }
}

impl Term {
    /// Whether value `v` passes this term.
    fn holds(&self, v: &Lit) -> bool {
        match self.op {
            Op::Eq => *v == self.lit,
            Op::Ne => *v != self.lit,
            Op::Lt => v.lt(&self.lit),
            Op::Le => v.lt(&self.lit) || *v == self.lit,
            Op::Gt => self.lit.lt(v),
            Op::Ge => self.lit.lt(v) || *v == self.lit,
        }
    }
}

impl Lit {
    /// Strictly less, for literals of one kind; false across kinds.
    fn lt(&self, other: &Lit) -> bool {
        match (self, other) {
            (Lit::Num(a), Lit::Num(b)) => a < b,
            (Lit::Str(a), Lit::Str(b)) => a < b,
            _ => false,
        }
    }
}

/// `text` cut at the word `and` outside quotes.
fn split_and(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quoted, mut start) = (false, 0);
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\'' {
            quoted = !quoted;
        } else if !quoted && text[i..].len() >= 5 && text[i..i + 5].eq_ignore_ascii_case(" and ") {
            parts.push(&text[start..i]);
            start = i + 5;
            i += 5;
            continue;
        }
        i += 1;
    }
    parts.push(&text[start..]);
    parts
}

/// Min and max of column statistics as literals (numbers, or UTF-8 strings).
fn bounds(s: &Statistics) -> Option<(Lit, Lit)> {
    let num = |a: Option<f64>, b: Option<f64>| Some((Lit::Num(a?), Lit::Num(b?)));
    match s {
        Statistics::Int32(v) => num(
            v.min_opt().map(|x| *x as f64),
            v.max_opt().map(|x| *x as f64),
        ),
        Statistics::Int64(v) => num(
            v.min_opt().map(|x| *x as f64),
            v.max_opt().map(|x| *x as f64),
        ),
        Statistics::Float(v) => num(
            v.min_opt().map(|x| *x as f64),
            v.max_opt().map(|x| *x as f64),
        ),
        Statistics::Double(v) => num(v.min_opt().copied(), v.max_opt().copied()),
        Statistics::ByteArray(v) => {
            let min = std::str::from_utf8(v.min_bytes_opt()?).ok()?;
            let max = std::str::from_utf8(v.max_bytes_opt()?).ok()?;
            // Truncated statistics are still bounds: a prefix sorts before the value.
            if v.max_is_exact() {
                Some((Lit::Str(min.to_string()), Lit::Str(max.to_string())))
            } else {
                None
            }
        }
        _ => None,
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> StorageError {
    StorageError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn not_parquet(path: &Path) -> impl Fn(ParquetError) -> StorageError + '_ {
    move |e| bad(path, format!("not a readable Parquet file: {e}"))
}

/// The byte range of a row group: its column chunks, from the first to the end of the last.
fn row_group_range(rg: &RowGroupMetaData) -> Option<(u64, u64)> {
    let mut lo = u64::MAX;
    let mut hi = 0u64;
    for c in rg.columns() {
        let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
        let len = c.compressed_size();
        if start < 0 || len < 0 {
            return None;
        }
        lo = lo.min(start as u64);
        hi = hi.max(start as u64 + len as u64);
    }
    (lo < hi).then_some((lo, hi))
}

/// Row groups a split of bytes `start..end` owns: those whose midpoint lies in it, and that
/// `filter` does not rule out.
fn owned_row_groups(
    meta: &ParquetMetaData,
    start: u64,
    end: u64,
    filter: Option<&Filter>,
) -> Vec<usize> {
    meta.row_groups()
        .iter()
        .enumerate()
        .filter(|(_, rg)| {
            row_group_range(rg).is_some_and(|(lo, hi)| {
                let mid = lo + (hi - lo) / 2;
                start <= mid && mid < end
            })
        })
        .filter(|(_, rg)| !filter.is_some_and(|f| f.rules_out(rg)))
        .map(|(i, _)| i)
        .collect()
}

/// Bytes fetched from an object: the footer and some column chunks, served to the Parquet
/// reader by file offset.
struct Fetched {
    len: u64,
    chunks: Vec<(u64, Bytes)>,
}

impl Fetched {
    fn find(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.chunks
            .iter()
            .find(|(at, b)| *at <= start && start + length as u64 <= at + b.len() as u64)
            .map(|(at, b)| b.slice((start - at) as usize..(start - at) as usize + length))
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "bytes {start}..{} were not fetched",
                    start + length as u64
                ))
            })
    }
}

impl Length for Fetched {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for Fetched {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        let (at, b) = self
            .chunks
            .iter()
            .find(|(at, b)| *at <= start && start < at + b.len() as u64)
            .ok_or_else(|| ParquetError::General(format!("byte {start} was not fetched")))?;
        Ok(b.slice((start - at) as usize..).reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        self.find(start, length)
    }
}

/// Where an input file is, opened.
pub(crate) enum Source {
    Local(File),
    Object {
        store: Arc<dyn object_store::ObjectStore>,
        key: object_store::path::Path,
        name: String,
        len: u64,
    },
}

impl Source {
    pub(crate) fn open(path: &str, len: u64) -> Result<Source, StorageError> {
        Ok(match Datastores::global()?.resolve(path)? {
            Location::Local(p) => Source::Local(File::open(&p).map_err(io("opening input", &p))?),
            Location::Object {
                store,
                path: key,
                name,
                ..
            } => Source::Object {
                store,
                key,
                name,
                len,
            },
        })
    }

    fn fetch(
        &self,
        uri: &str,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>, StorageError> {
        let Source::Object {
            store, key, name, ..
        } = self
        else {
            return Ok(Vec::new());
        };
        block_on(store.get_ranges(key, ranges)).map_err(|e| StorageError::Object {
            op: "reading",
            uri: uri.to_string(),
            name: name.clone(),
            reason: crate::error::explain(&e),
        })
    }

    /// Bytes `range` of the file.
    pub(crate) fn read_range(
        &self,
        uri: &str,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StorageError> {
        Ok(self
            .read_ranges(uri, std::slice::from_ref(&range))?
            .pop()
            .unwrap_or_default())
    }

    /// Bytes `ranges` of the file, from disk or with ranged reads of the object.
    pub(crate) fn read_ranges(
        &self,
        uri: &str,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<Bytes>, StorageError> {
        match self {
            Source::Local(f) => {
                use std::os::unix::fs::FileExt;
                ranges
                    .iter()
                    .map(|r| {
                        let mut buf = vec![0u8; (r.end - r.start) as usize];
                        f.read_exact_at(&mut buf, r.start)
                            .map_err(io("reading input", Path::new(uri)))?;
                        Ok(Bytes::from(buf))
                    })
                    .collect()
            }
            Source::Object { .. } => self.fetch(uri, ranges),
        }
    }

    /// The file's footer.
    fn metadata(&self, uri: &str) -> Result<(ParquetMetaData, Option<Fetched>), StorageError> {
        let path = Path::new(uri);
        match self {
            Source::Local(f) => Ok((
                ParquetMetaDataReader::new()
                    .with_page_index_policy(PageIndexPolicy::Skip)
                    .parse_and_finish(f)
                    .map_err(not_parquet(path))?,
                None,
            )),
            Source::Object { len, .. } => {
                let len = *len;
                let mut want = len.min(64 << 10);
                loop {
                    let tail_range = len - want..len;
                    let tail = self
                        .fetch(uri, std::slice::from_ref(&tail_range))?
                        .remove(0);
                    let mut r = ParquetMetaDataReader::new();
                    match r.try_parse_sized(&tail, len) {
                        Ok(()) => {
                            let meta = r.finish().map_err(not_parquet(path))?;
                            let fetched = Fetched {
                                len,
                                chunks: vec![(len - want, tail)],
                            };
                            return Ok((meta, Some(fetched)));
                        }
                        Err(ParquetError::NeedMoreData(n))
                            if (n as u64) > want && (n as u64) <= len =>
                        {
                            want = n as u64
                        }
                        Err(e) => return Err(not_parquet(path)(e)),
                    }
                }
            }
        }
    }
}

impl Length for Source {
    fn len(&self) -> u64 {
        match self {
            Source::Local(f) => f.len(),
            Source::Object { len, .. } => *len,
        }
    }
}

/// The rows and the Arrow schema of a Parquet file on any datastore, from its footer alone.
pub fn parquet_footer(file: &InputFile) -> Result<(u64, arrow_schema::SchemaRef), StorageError> {
    let (meta, _) = Source::open(&file.path, file.len)?.metadata(&file.path)?;
    let fm = meta.file_metadata();
    let schema =
        parquet::arrow::parquet_to_arrow_schema(fm.schema_descr(), fm.key_value_metadata())
            .map_err(not_parquet(Path::new(&file.path)))?;
    Ok((fm.num_rows().max(0) as u64, std::sync::Arc::new(schema)))
}

/// Plans Parquet files into splits of whole row groups of about `split_size` compressed bytes
/// (small files combined), reading every footer; row groups that `filter` rules out by their
/// statistics are left out, and a file left with none is not read at all.
pub fn plan_parquet_splits(
    files: &[InputFile],
    split_size: u64,
    filter: Option<&Filter>,
) -> Result<Vec<Split>, StorageError> {
    let split_size = split_size.max(1);
    let mut splits: Vec<Split> = Vec::new();
    let mut small: Option<Split> = None;
    for f in files.iter().filter(|f| f.len > 0) {
        if filter.is_some_and(|flt| flt.rules_out_partitions(&partition_values(&f.path))) {
            continue;
        }
        let (meta, _) = Source::open(&f.path, f.len)?.metadata(&f.path)?;
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        for (i, rg) in meta.row_groups().iter().enumerate() {
            if rg.num_rows() == 0 || filter.is_some_and(|flt| flt.rules_out(rg)) {
                continue;
            }
            let Some((lo, hi)) = row_group_range(rg) else {
                return Err(bad(
                    Path::new(&f.path),
                    format!("not a readable Parquet file: row group {i} has negative offsets"),
                ));
            };
            match pieces.last_mut() {
                Some(p) if p.1 - p.0 < split_size => p.1 = hi,
                _ => pieces.push((lo, hi)),
            }
        }
        add_pieces(f, &pieces, split_size, &mut splits, &mut small);
    }
    splits.extend(small);
    Ok(splits)
}

/// Adds the byte ranges `pieces` of file `f` to `splits`: each its own split, except a small
/// file read as one piece, which joins the open group of small files (`small`) while that
/// stays within `split_size` (Hadoop's CombineFileInputFormat).
pub(crate) fn add_pieces(
    f: &InputFile,
    pieces: &[(u64, u64)],
    split_size: u64,
    splits: &mut Vec<Split>,
    small: &mut Option<Split>,
) {
    let whole = pieces.len() == 1 && f.len < split_size;
    for &(lo, hi) in pieces {
        let s = Split {
            path: f.path.clone(),
            start: lo,
            end: hi,
            file_len: f.len,
            rest: Vec::new(),
        };
        if !whole {
            splits.push(s);
            continue;
        }
        match small {
            Some(g) if g.len() + s.len() <= split_size => g.rest.push(s),
            _ => {
                if let Some(g) = small.replace(s) {
                    splits.push(g);
                }
            }
        }
    }
}

/// Reads the row groups that `split` (and each file combined into it) owns, only `columns`
/// (all when `None`; names the file lacks are ignored), and only the rows `filter` passes.
pub fn read_parquet_split(
    split: &Split,
    columns: Option<&[String]>,
    filter: Option<&Filter>,
) -> Result<Vec<RecordBatch>, StorageError> {
    let mut out = Vec::new();
    for piece in std::iter::once(split).chain(split.rest.iter()) {
        read_piece(piece, columns, filter, &mut out)?;
    }
    Ok(out)
}

fn read_piece(
    piece: &Split,
    columns: Option<&[String]>,
    filter: Option<&Filter>,
    out: &mut Vec<RecordBatch>,
) -> Result<(), StorageError> {
    let path = Path::new(&piece.path);
    let source = Source::open(&piece.path, piece.file_len)?;
    let (meta, fetched) = source.metadata(&piece.path)?;
    let groups = owned_row_groups(&meta, piece.start, piece.end, filter);
    if groups.is_empty() {
        return Ok(());
    }
    let meta = Arc::new(meta);
    let arrow = ArrowReaderMetadata::try_new(meta.clone(), ArrowReaderOptions::new())
        .map_err(not_parquet(path))?;
    let schema = arrow.schema().clone();
    let descr = meta.file_metadata().schema_descr();
    let roots: Option<Vec<usize>> = columns.map(|cols| {
        let mut r: Vec<usize> = cols
            .iter()
            .map(String::as_str)
            .chain(filter.into_iter().flat_map(Filter::columns))
            .filter_map(|c| schema.index_of(c).ok())
            .collect();
        r.sort_unstable();
        r.dedup();
        r
    });
    // None of the named columns here (a reader that maps names itself): read them all.
    let roots = roots.filter(|r| !r.is_empty());
    let leaves: Vec<usize> = (0..descr.num_columns())
        .filter(|l| {
            roots
                .as_ref()
                .is_none_or(|r| r.contains(&descr.get_column_root_idx(*l)))
        })
        .collect();
    let mask = match &roots {
        Some(r) => ProjectionMask::roots(descr, r.iter().copied()),
        None => ProjectionMask::all(),
    };
    let reader = match (source, fetched) {
        (Source::Local(f), _) => ParquetRecordBatchReaderBuilder::new_with_metadata(f, arrow)
            .with_row_groups(groups)
            .with_projection(mask)
            .build()
            .map_err(not_parquet(path))?,
        (source, footer) => {
            let mut ranges = Vec::new();
            for g in &groups {
                for l in &leaves {
                    let c = meta.row_group(*g).column(*l);
                    let start = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
                    if start < 0 || c.compressed_size() < 0 {
                        return Err(bad(path, "not a readable Parquet file: negative offsets"));
                    }
                    ranges.push(start as u64..start as u64 + c.compressed_size() as u64);
                }
            }
            let bytes = source.fetch(&piece.path, &ranges)?;
            let mut chunks: Vec<(u64, Bytes)> = ranges.iter().map(|r| r.start).zip(bytes).collect();
            chunks.extend(footer.map(|f| f.chunks).unwrap_or_default());
            let data = Fetched {
                len: piece.file_len,
                chunks,
            };
            ParquetRecordBatchReaderBuilder::new_with_metadata(data, arrow)
                .with_row_groups(groups)
                .with_projection(mask)
                .build()
                .map_err(not_parquet(path))?
        }
    };
    let parts = partition_values(&piece.path);
    for b in reader {
        let b = b.map_err(|e| bad(path, format!("reading rows: {e}")))?;
        let b = with_partition_columns(b, &parts)?;
        let b = match filter {
            Some(f) => f.apply(&b, path)?,
            None => b,
        };
        if b.num_rows() > 0 {
            out.push(b);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    fn write(path: &Path, rows: i64, per_group: usize) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
        ]));
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(per_group))
            .build();
        let mut w =
            ArrowWriter::try_new(File::create(path).unwrap(), schema.clone(), Some(props)).unwrap();
        let b = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|i| format!("n{i:05}")),
                )),
            ],
        )
        .unwrap();
        w.write(&b).unwrap();
        w.close().unwrap();
    }

    fn ids(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                b.column_by_name("id")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect()
    }

    #[test]
    fn row_groups_are_read_once_whatever_the_split_size() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.parquet");
        let b = dir.path().join("b.parquet");
        write(&a, 10_000, 700);
        write(&b, 300, 1000);
        let files: Vec<InputFile> = [&a, &b]
            .iter()
            .map(|p| InputFile {
                path: p.display().to_string(),
                len: std::fs::metadata(p).unwrap().len(),
            })
            .collect();
        let len_a = files[0].len;
        for size in [1, 3000, 10_000, len_a / 3, len_a, 1 << 30] {
            let splits = plan_parquet_splits(&files, size, None).unwrap();
            let mut got = Vec::new();
            for s in &splits {
                got.extend(ids(&read_parquet_split(s, None, None).unwrap()));
            }
            let mut want: Vec<i64> = (0..10_000).collect();
            want.extend(0..300);
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "split size {size}: {} splits", splits.len());
            if size == 1 {
                assert_eq!(splits.len(), 15 + 1, "one split per row group");
            }
            if size == 1 << 30 {
                assert_eq!(splits.len(), 1, "small files are combined");
            }
        }
    }

    #[test]
    fn a_filter_prunes_row_groups_and_rows_and_projects_columns() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.parquet");
        write(&a, 10_000, 1000);
        let files = vec![InputFile {
            path: a.display().to_string(),
            len: std::fs::metadata(&a).unwrap().len(),
        }];
        let f = Filter::parse("id >= 2500 and id < 4100").unwrap();
        let splits = plan_parquet_splits(&files, 1, Some(&f)).unwrap();
        assert_eq!(splits.len(), 3, "row groups 2, 3 and 4 only: {splits:?}");
        let cols = vec!["name".to_string()];
        let mut got = Vec::new();
        for s in &splits {
            let batches = read_parquet_split(s, Some(&cols), Some(&f)).unwrap();
            for b in &batches {
                assert_eq!(b.num_columns(), 2, "name, and id for the filter");
            }
            got.extend(ids(&batches));
        }
        assert_eq!(got, (2500..4100).collect::<Vec<_>>());
        let s = Filter::parse("name = 'n00042'").unwrap();
        let splits = plan_parquet_splits(&files, 1, Some(&s)).unwrap();
        assert_eq!(splits.len(), 1);
        assert_eq!(
            ids(&read_parquet_split(&splits[0], None, Some(&s)).unwrap()),
            [42]
        );
    }

    #[test]
    fn filters_parse_or_say_what_is_wrong() {
        let f = Filter::parse("a >= 3 and b = 'x and y' AND c != -1.5").unwrap();
        assert_eq!(f.terms.len(), 3);
        assert_eq!(f.terms[1].lit, Lit::Str("x and y".into()));
        assert_eq!(f.terms[2].op, Op::Ne);
        for bad in ["a", "a >= ", "a = x", "= 3"] {
            let e = Filter::parse(bad).unwrap_err();
            assert!(e.contains(WHERE_PARAM), "{e}");
        }
    }

    #[test]
    fn a_corrupt_footer_is_named_at_planning() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.parquet");
        write(&a, 100, 10);
        let mut bytes = std::fs::read(&a).unwrap();
        let n = bytes.len();
        bytes[n - 8..n - 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
        std::fs::write(&a, &bytes).unwrap();
        let files = vec![InputFile {
            path: a.display().to_string(),
            len: n as u64,
        }];
        let e = plan_parquet_splits(&files, 1 << 20, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.parquet") && e.contains("not a readable Parquet file"),
            "{e}"
        );
    }
}
