//! Arrow IPC input (the file format, `.arrow`/`.feather` v2): split by record batches.
//!
//! The planner reads each file's footer, which lists every record batch's byte range, and cuts
//! the file between batches, consecutive batches together up to the split size; whole small
//! files are combined. A reader takes the batches whose midpoint lies in its byte range and
//! reads only those (and the file's dictionaries), so from an object store it fetches just
//! its own bytes. A row filter (`sluice.where`) applies to the rows read.

use std::path::Path;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::{read_footer_length, FileDecoder};
use arrow_ipc::{root_as_footer, MetadataVersion};
use arrow_schema::SchemaRef;
use sluice_core::Split;

use crate::parquet_in::{add_pieces, Filter, Source};
use crate::partition::{partition_values, with_partition_columns};
use crate::{InputFile, StorageError};

fn bad(path: &str, reason: impl Into<String>) -> StorageError {
    StorageError::Format {
        path: Path::new(path).to_path_buf(),
        reason: reason.into(),
    }
}

/// What a file's footer says: its schema, metadata version, and dictionary and record-batch
/// blocks as (offset, length).
struct Footer {
    schema: SchemaRef,
    version: MetadataVersion,
    dictionaries: Vec<(u64, u64, usize)>,
    batches: Vec<(u64, u64, usize)>,
}

fn read_footer(source: &Source, uri: &str, len: u64) -> Result<Footer, StorageError> {
    let not_ipc = |why: String| {
        bad(
            uri,
            format!(
                "not an Arrow IPC file ({why}); Sluice reads the IPC file format (with a \
                 footer), not the stream format"
            ),
        )
    };
    if len < 10 {
        return Err(not_ipc(format!("{len} bytes")));
    }
    let tail = source.read_range(uri, len - 10..len)?;
    let tail: [u8; 10] = tail[..]
        .try_into()
        .map_err(|_| not_ipc("short read".into()))?;
    let footer_len = read_footer_length(tail).map_err(|e| not_ipc(e.to_string()))? as u64;
    if footer_len + 10 > len {
        return Err(not_ipc(format!("a footer of {footer_len} bytes")));
    }
    let raw = source.read_range(uri, len - 10 - footer_len..len - 10)?;
    let footer = root_as_footer(&raw).map_err(|e| not_ipc(format!("footer: {e}")))?;
    let schema = footer
        .schema()
        .ok_or_else(|| not_ipc("no schema".into()))
        .and_then(|s| {
            arrow_ipc::convert::try_fb_to_schema(s).map_err(|e| not_ipc(e.to_string()))
        })?;
    let blocks = |v: Vec<arrow_ipc::Block>| -> Result<Vec<_>, StorageError> {
        v.into_iter()
            .map(|b| {
                let n = b.metaDataLength() as i64 + b.bodyLength();
                if b.offset() < 0
                    || b.metaDataLength() < 0
                    || n < 0
                    || (b.offset() + n) as u64 > len
                {
                    return Err(not_ipc(format!("a block at {} of {n} bytes", b.offset())));
                }
                Ok((b.offset() as u64, n as u64, b.metaDataLength() as usize))
            })
            .collect()
    };
    Ok(Footer {
        schema: Arc::new(schema),
        version: footer.version(),
        dictionaries: blocks(
            footer
                .dictionaries()
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default(),
        )?,
        batches: blocks(
            footer
                .recordBatches()
                .map(|v| v.iter().copied().collect())
                .unwrap_or_default(),
        )?,
    })
}

/// Plans Arrow IPC files into splits of whole record batches of about `split_size` bytes,
/// small files combined, reading every footer.
pub fn plan_arrow_splits(
    files: &[InputFile],
    split_size: u64,
    filter: Option<&Filter>,
) -> Result<Vec<Split>, StorageError> {
    let split_size = split_size.max(1);
    let mut splits = Vec::new();
    let mut small: Option<Split> = None;
    for f in files.iter().filter(|f| f.len > 0) {
        if filter.is_some_and(|flt| flt.rules_out_partitions(&partition_values(&f.path))) {
            continue;
        }
        let footer = read_footer(&Source::open(&f.path, f.len)?, &f.path, f.len)?;
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        for (off, n, _) in footer.batches {
            match pieces.last_mut() {
                Some(p) if p.1 - p.0 < split_size && p.1 <= off => p.1 = off + n,
                _ => pieces.push((off, off + n)),
            }
        }
        add_pieces(f, &pieces, split_size, &mut splits, &mut small);
    }
    splits.extend(small);
    Ok(splits)
}

/// Reads the record batches that `split` (and each file combined into it) owns, only `columns`
/// (all when `None`; names the file lacks are ignored), and only the rows `filter` passes.
pub fn read_arrow_split(
    split: &Split,
    columns: Option<&[String]>,
    filter: Option<&Filter>,
) -> Result<Vec<RecordBatch>, StorageError> {
    let mut out = Vec::new();
    for piece in std::iter::once(split).chain(split.rest.iter()) {
        let uri = piece.path.as_str();
        let source = Source::open(uri, piece.file_len)?;
        let footer = read_footer(&source, uri, piece.file_len)?;
        let owned: Vec<(u64, u64, usize)> = footer
            .batches
            .iter()
            .copied()
            .filter(|(off, n, _)| {
                let mid = off + n / 2;
                piece.start <= mid && mid < piece.end
            })
            .collect();
        if owned.is_empty() {
            continue;
        }
        let mut decoder = FileDecoder::new(footer.schema.clone(), footer.version);
        if let Some(cols) = columns {
            let wanted = |name: &str| {
                cols.iter().any(|c| c == name) || filter.is_some_and(|f| f.reads(name))
            };
            let keep: Vec<usize> = (0..footer.schema.fields().len())
                .filter(|i| wanted(footer.schema.field(*i).name()))
                .collect();
            decoder = decoder.with_projection(keep);
        }
        let ranges: Vec<std::ops::Range<u64>> = footer
            .dictionaries
            .iter()
            .chain(owned.iter())
            .map(|(off, n, _)| *off..off + n)
            .collect();
        let data = source.read_ranges(uri, &ranges)?;
        let ndict = footer.dictionaries.len();
        let decode_err =
            |e: arrow_schema::ArrowError| bad(uri, format!("reading record batches: {e}"));
        for ((off, n, meta), bytes) in footer.dictionaries.iter().zip(&data[..ndict]) {
            let block =
                arrow_ipc::Block::new(*off as i64, *meta as i32, (*n as i64) - *meta as i64);
            decoder
                .read_dictionary(&block, &Buffer::from(bytes.clone()))
                .map_err(decode_err)?;
        }
        for ((off, n, meta), bytes) in owned.iter().zip(&data[ndict..]) {
            let block =
                arrow_ipc::Block::new(*off as i64, *meta as i32, (*n as i64) - *meta as i64);
            let Some(b) = decoder
                .read_record_batch(&block, &Buffer::from(bytes.clone()))
                .map_err(decode_err)?
            else {
                continue;
            };
            let b = with_partition_columns(b, &partition_values(uri))?;
            let b = match filter {
                Some(f) => f.apply(&b, Path::new(uri))?,
                None => b,
            };
            if b.num_rows() > 0 {
                out.push(b);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::types::Int32Type;
    use arrow_array::{Array, DictionaryArray, Int64Array};
    use arrow_ipc::writer::FileWriter;

    fn write(path: &Path, batches: usize, rows: i64) {
        let mut w: Option<FileWriter<std::fs::File>> = None;
        for b in 0..batches as i64 {
            let ids: Vec<i64> = (b * rows..(b + 1) * rows).collect();
            let tags: DictionaryArray<Int32Type> = ids
                .iter()
                .map(|i| if i % 2 == 0 { "even" } else { "odd" })
                .collect();
            let batch = RecordBatch::try_from_iter([
                ("id", Arc::new(Int64Array::from(ids)) as _),
                ("tag", Arc::new(tags) as _),
            ])
            .unwrap();
            let w = w.get_or_insert_with(|| {
                FileWriter::try_new(
                    std::fs::File::create(path).unwrap(),
                    batch.schema().as_ref(),
                )
                .unwrap()
            });
            w.write(&batch).unwrap();
        }
        w.unwrap().finish().unwrap();
    }

    fn ids(batches: &[RecordBatch]) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| {
                let c = b.column_by_name("id").unwrap();
                let a = c.as_any().downcast_ref::<Int64Array>().unwrap();
                (0..a.len()).map(|i| a.value(i)).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn record_batches_are_read_once_whatever_the_split_size() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.arrow");
        let b = dir.path().join("b.arrow");
        write(&a, 12, 500);
        write(&b, 1, 7);
        let files: Vec<InputFile> = [&a, &b]
            .iter()
            .map(|p| InputFile {
                path: p.display().to_string(),
                len: std::fs::metadata(p).unwrap().len(),
            })
            .collect();
        let mut want: Vec<i64> = (0..6000).collect();
        want.extend(0..7);
        want.sort_unstable();
        for size in [1, 5000, 20_000, files[0].len, 1 << 30] {
            let splits = plan_arrow_splits(&files, size, None).unwrap();
            let mut got = Vec::new();
            for s in &splits {
                got.extend(ids(&read_arrow_split(s, None, None).unwrap()));
            }
            got.sort_unstable();
            assert_eq!(got, want, "split size {size}: {splits:?}");
            if size == 1 {
                assert_eq!(splits.len(), 13);
            }
        }
        // Projection and a filter on a dictionary column.
        let f = Filter::parse("tag = 'odd' and id < 10").unwrap();
        let splits = plan_arrow_splits(&files[..1], 1, None).unwrap();
        let cols = vec!["id".to_string()];
        let got: Vec<i64> = splits
            .iter()
            .flat_map(|s| ids(&read_arrow_split(s, Some(&cols), Some(&f)).unwrap()))
            .collect();
        assert_eq!(got, [1, 3, 5, 7, 9]);
    }

    #[test]
    fn a_file_that_is_not_arrow_ipc_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.arrow");
        std::fs::write(&a, b"this is not an arrow file at all").unwrap();
        let files = vec![InputFile {
            path: a.display().to_string(),
            len: 32,
        }];
        let e = plan_arrow_splits(&files, 1 << 20, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.arrow") && e.contains("not an Arrow IPC file"),
            "{e}"
        );
    }
}
