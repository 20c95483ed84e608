//! Line-aligned byte-range splits, as Hadoop's TextInputFormat: a split owns every line that
//! starts inside its range, skipping a partial first line and reading past its end to finish
//! its last one. CSV is read a whole file per split (see [`whole_file_splits`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use sluice_core::Split;

use crate::datastore::{block_on, Datastores, Location};
use crate::error::io;
use crate::{InputFile, StorageError};
use object_store::ObjectStoreExt;

/// Bytes read at a time when a split's last line runs past its end.
const EXTEND_CHUNK: usize = 64 * 1024;

/// A file's last split may be this much larger than the split size rather than leave a tiny
/// tail split (Hadoop's SPLIT_SLOP).
const SPLIT_SLOP: f64 = 1.1;

/// Cuts every file into `[start, end)` ranges of about `split_size` bytes; empty files get none.
///
/// With `combine_small`, files under half the split size are not split but gathered, in
/// order, into splits of up to `split_size` bytes (Hadoop's CombineFileInputFormat), so that
/// ten thousand 1 KiB files make a few tasks rather than ten thousand.
pub fn plan_splits(files: &[InputFile], split_size: u64, combine_small: bool) -> Vec<Split> {
    let size = split_size.max(1);
    let mut splits = Vec::new();
    let mut group: Vec<Split> = Vec::new();
    let mut group_len = 0u64;
    let flush = |group: &mut Vec<Split>, splits: &mut Vec<Split>| {
        if !group.is_empty() {
            let mut first = group.remove(0);
            first.rest = std::mem::take(group);
            splits.push(first);
        }
    };
    for f in files {
        if Compression::of(&f.path).is_some() {
            // A compressed file cannot be entered in the middle: one split, read whole.
            if f.len > 0 {
                splits.push(Split {
                    path: f.path.clone(),
                    start: 0,
                    end: f.len,
                    file_len: f.len,
                    rest: Vec::new(),
                });
            }
            continue;
        }
        if combine_small && f.len > 0 && f.len < size / 2 {
            if group_len + f.len > size {
                flush(&mut group, &mut splits);
                group_len = 0;
            }
            group.push(Split {
                path: f.path.clone(),
                start: 0,
                end: f.len,
                file_len: f.len,
                rest: Vec::new(),
            });
            group_len += f.len;
            continue;
        }
        let mut start = 0;
        while start < f.len {
            let rest = f.len - start;
            let end = if rest as f64 <= size as f64 * SPLIT_SLOP {
                f.len
            } else {
                start + size
            };
            splits.push(Split {
                path: f.path.clone(),
                start,
                end,
                file_len: f.len,
                rest: Vec::new(),
            });
            start = end;
        }
    }
    flush(&mut group, &mut splits);
    splits
}

/// One split per file, for formats that are not split at byte ranges: Parquet, and CSV.
///
/// CSV rule: a quoted CSV field may hold a newline, a line-aligned cut can fall inside it, and
/// no reader can tell from the middle of a file whether it is inside quotes. So the
/// coordinator plans CSV input (with or without a header) as one split per file, read whole
/// by one map task whose CSV parser sees every record exactly once, quoted newlines included
/// (Spark's `multiLine`); CSV files are neither cut nor combined, so a malformed file (an
/// unclosed quote) cannot swallow another file's records, and each file's header is the start
/// of a split at offset 0 and is skipped exactly once. Only a job that promises that no record
/// holds a newline (`--param sluice.csv.multiline=false`) gets CSV cut at lines like text
/// ([`plan_splits`]; small files combined only without a header).
pub fn whole_file_splits(files: &[InputFile]) -> Vec<Split> {
    files
        .iter()
        .filter(|f| f.len > 0)
        .map(|f| Split {
            path: f.path.clone(),
            start: 0,
            end: f.len,
            file_len: f.len,
            rest: Vec::new(),
        })
        .collect()
}

/// The whole lines a split owns, owned (see [`read_split`] for the buffer-reusing form).
#[derive(Debug)]
pub struct SplitText {
    /// The lines, terminators included.
    pub text: String,
    /// Byte offset of `text` in the file.
    pub offset: u64,
    /// Number of lines.
    pub lines: u64,
    /// Bytes read from storage (the range plus the look-behind and look-ahead).
    pub bytes_read: u64,
    /// For combined small files: where each file's text starts in `text`, and its path (so
    /// that a record is named by its own file and offset); empty for one file.
    pub files: Vec<(usize, String)>,
}

/// The whole lines a split owns, borrowed from the caller's buffer.
#[derive(Debug)]
pub struct SplitLines<'a> {
    /// The lines, terminators included.
    pub text: &'a str,
    /// Byte offset of `text` in the file.
    pub offset: u64,
    /// Number of lines.
    pub lines: u64,
    /// Bytes read from storage (the range plus the look-behind and look-ahead).
    pub bytes_read: u64,
    /// For combined small files: where each file's text starts in `text`, and its path (so
    /// that a record is named by its own file and offset); empty for one file.
    pub files: Vec<(usize, String)>,
}

/// Where a split's bytes come from: a local file, or ranged GETs from an object store.
enum Source {
    File(File),
    Object {
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        key: object_store::path::Path,
        name: String,
        len: u64,
    },
}

impl Source {
    fn open(path: &str, file_len: u64) -> Result<Source, StorageError> {
        match Datastores::global()?.resolve(path)? {
            Location::Local(p) => Ok(Source::File(
                File::open(&p).map_err(io("opening input", &p))?,
            )),
            Location::Object {
                store, path, name, ..
            } => Ok(Source::Object {
                store,
                key: path,
                name,
                len: file_len,
            }),
        }
    }

    /// Appends up to `len` bytes at `pos` to `buf`; returns how many came.
    fn read_append(
        &mut self,
        path: &str,
        buf: &mut Vec<u8>,
        pos: u64,
        len: u64,
    ) -> Result<usize, StorageError> {
        match self {
            Source::File(file) => {
                file.seek(SeekFrom::Start(pos))
                    .map_err(io("seeking input", path))?;
                Read::by_ref(file)
                    .take(len)
                    .read_to_end(buf)
                    .map_err(io("reading input", path))
            }
            Source::Object {
                store,
                key,
                name,
                len: size,
            } => {
                let end = (pos + len).min(*size);
                if pos >= end {
                    return Ok(0);
                }
                let bytes =
                    block_on(store.get_range(key, pos..end)).map_err(|e| StorageError::Object {
                        op: "reading bytes",
                        uri: format!("{pos}..{end} of {path}"),
                        name: name.clone(),
                        reason: e.to_string(),
                    })?;
                buf.extend_from_slice(&bytes);
                Ok(bytes.len())
            }
        }
    }
}

/// Reads the lines owned by `split` (those whose first byte lies in `[start, end)`) into
/// `buf`, which is cleared first and may be reused across splits to spare page faults.
pub fn read_split<'a>(split: &Split, buf: &'a mut Vec<u8>) -> Result<SplitLines<'a>, StorageError> {
    if !split.rest.is_empty() {
        return read_combined(split, buf);
    }
    if let Some(how) = Compression::of(&split.path) {
        return read_compressed(split, how, buf);
    }
    let path = split.path.as_str();
    let mut file = Source::open(path, split.file_len)?;
    // One byte of look-behind tells whether `start` begins a line.
    let begin = split.start.saturating_sub(1);
    buf.clear();
    // One allocation: growing a 64 MiB buffer by doubling copies it and faults every page twice.
    buf.reserve((split.end - begin) as usize + EXTEND_CHUNK);
    let got = file.read_append(path, buf, begin, split.end - begin)?;
    let mut bytes_read = got as u64;

    let first = if split.start == 0 {
        0
    } else {
        memchr::memchr(b'\n', buf).map_or(buf.len(), |i| i + 1)
    };
    let owned_end_in_buf = (split.end - begin) as usize;
    if first >= owned_end_in_buf || first >= buf.len() {
        return Ok(SplitLines {
            text: "",
            offset: split.end,
            lines: 0,
            bytes_read,
            files: Vec::new(),
        });
    }
    // Finish the last line: read on until a newline or the end of the file.
    if buf.last() != Some(&b'\n') {
        loop {
            let before = buf.len();
            let pos = begin + before as u64;
            let n = file.read_append(path, buf, pos, EXTEND_CHUNK as u64)?;
            if n == 0 {
                break;
            }
            bytes_read += n as u64;
            if let Some(i) = memchr::memchr(b'\n', &buf[before..]) {
                buf.truncate(before + i + 1);
                break;
            }
        }
    }
    let owned = &buf[first..];
    let offset = begin + first as u64;
    let mut lines = memchr::memchr_iter(b'\n', owned).count() as u64;
    if owned.last().is_some_and(|&b| b != b'\n') {
        lines += 1;
    }
    let text = std::str::from_utf8(owned).map_err(|e| StorageError::InvalidUtf8 {
        path: path.to_string(),
        offset: offset + e.valid_up_to() as u64,
    })?;
    Ok(SplitLines {
        text,
        offset,
        lines,
        bytes_read,
        files: Vec::new(),
    })
}

/// Compression of an input file, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `.gz`
    Gzip,
    /// `.zst`
    Zstd,
}

impl Compression {
    /// The compression a file name says, if any.
    pub fn of(path: &str) -> Option<Compression> {
        if path.ends_with(".gz") {
            Some(Compression::Gzip)
        } else if path.ends_with(".zst") || path.ends_with(".zstd") {
            Some(Compression::Zstd)
        } else {
            None
        }
    }
}

/// Reads a whole compressed file and decompresses it into `buf`.
fn read_compressed<'a>(
    split: &Split,
    how: Compression,
    buf: &'a mut Vec<u8>,
) -> Result<SplitLines<'a>, StorageError> {
    use std::io::Read as _;
    let path = split.path.as_str();
    let mut raw = Vec::with_capacity(split.file_len as usize);
    Source::open(path, split.file_len)?.read_append(path, &mut raw, 0, split.file_len)?;
    buf.clear();
    let res = match how {
        Compression::Gzip => flate2::read::MultiGzDecoder::new(raw.as_slice()).read_to_end(buf),
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(raw.as_slice()).and_then(|mut d| d.read_to_end(buf))
        }
    };
    res.map_err(|e| StorageError::Format {
        path: path.into(),
        reason: format!(
            "cannot decompress ({how:?}) after {} bytes of output: {e}; the file is truncated \
             or corrupt",
            buf.len()
        ),
    })?;
    let lines = memchr::memchr_iter(b'\n', buf).count() as u64
        + u64::from(buf.last().is_some_and(|&b| b != b'\n'));
    let text = std::str::from_utf8(buf).map_err(|e| StorageError::InvalidUtf8 {
        path: format!("{path} (decompressed)"),
        offset: e.valid_up_to() as u64,
    })?;
    Ok(SplitLines {
        text,
        offset: 0,
        lines,
        bytes_read: split.file_len,
        files: Vec::new(),
    })
}

/// Files fetched at once from an object store for a combined split.
const COMBINED_FETCHES: usize = 16;

/// Reads a split of whole small files: each file in full, one after another, a newline added
/// where a file does not end with one. Objects are fetched several at a time.
fn read_combined<'a>(split: &Split, buf: &'a mut Vec<u8>) -> Result<SplitLines<'a>, StorageError> {
    use futures::StreamExt;
    let parts: Vec<&Split> = std::iter::once(split).chain(split.rest.iter()).collect();
    buf.clear();
    buf.reserve(split.len() as usize + parts.len());
    let ds = Datastores::global()?;
    let mut bounds = Vec::with_capacity(parts.len()); // (start in buf, path)
                                                      // Resolve everything first; objects are fetched concurrently, local files read in order.
    let mut fetched: Vec<Option<bytes::Bytes>> = vec![None; parts.len()];
    let mut remote = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if let Location::Object {
            store, path, name, ..
        } = ds.resolve(&p.path)?
        {
            remote.push((i, store, path, name, p.path.clone()));
        }
    }
    if !remote.is_empty() {
        let got: Vec<Result<(usize, bytes::Bytes), StorageError>> = block_on(
            futures::stream::iter(remote.into_iter().map(
                |(i, store, key, name, uri)| async move {
                    let r = async { store.get(&key).await?.bytes().await }.await;
                    r.map(|b| (i, b)).map_err(|e| StorageError::Object {
                        op: "reading",
                        uri,
                        name,
                        reason: e.to_string(),
                    })
                },
            ))
            .buffer_unordered(COMBINED_FETCHES)
            .collect(),
        );
        for r in got {
            let (i, b) = r?;
            fetched[i] = Some(b);
        }
    }
    for (i, p) in parts.iter().enumerate() {
        let at = buf.len();
        match fetched[i].take() {
            Some(b) => buf.extend_from_slice(&b),
            None => {
                let mut src = Source::open(&p.path, p.file_len)?;
                src.read_append(&p.path, buf, 0, p.file_len)?;
            }
        }
        if buf.len() > at && buf.last() != Some(&b'\n') {
            buf.push(b'\n');
        }
        bounds.push((at, p.path.as_str()));
    }
    let bytes_read = buf.len() as u64;
    let lines = memchr::memchr_iter(b'\n', buf).count() as u64;
    let text = std::str::from_utf8(buf).map_err(|e| {
        let at = e.valid_up_to();
        let (start, path) = bounds
            .iter()
            .rev()
            .find(|(s, _)| *s <= at)
            .copied()
            .unwrap_or((0, split.path.as_str()));
        StorageError::InvalidUtf8 {
            path: path.to_string(),
            offset: (at - start) as u64,
        }
    })?;
    let files = bounds
        .into_iter()
        .map(|(at, path)| (at, path.to_string()))
        .collect();
    Ok(SplitLines {
        text,
        offset: 0,
        lines,
        bytes_read,
        files,
    })
}

/// Reads the lines owned by `split` into a new string.
pub fn read_split_text(split: &Split) -> Result<SplitText, StorageError> {
    let mut buf = Vec::new();
    let l = read_split(split, &mut buf)?;
    Ok(SplitText {
        text: l.text.to_string(),
        offset: l.offset,
        lines: l.lines,
        bytes_read: l.bytes_read,
        files: l.files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(path: &str, len: u64, size: u64) -> Vec<String> {
        let files = [InputFile {
            path: path.to_string(),
            len,
        }];
        let mut all = String::new();
        for s in plan_splits(&files, size, false) {
            let t = read_split_text(&s).unwrap();
            assert!(t.offset >= s.start || t.text.is_empty());
            all.push_str(&t.text);
        }
        all.split_inclusive('\n').map(str::to_string).collect()
    }

    #[test]
    fn every_split_size_reassembles_the_file_exactly() {
        let d = tempfile::tempdir().unwrap();
        let content = "héllo wörld\r\n\nlong line ".to_string()
            + &"x".repeat(50)
            + "\n日本語\nlast-no-newline";
        let p = d.path().join("f.txt");
        std::fs::write(&p, &content).unwrap();
        let ps = p.to_str().unwrap();
        for size in 1..=content.len() as u64 + 2 {
            let got: String = lines_of(ps, content.len() as u64, size).concat();
            assert_eq!(got, content, "split size {size}");
        }
    }

    #[test]
    fn a_small_tail_joins_the_last_split() {
        let f = |len| {
            [InputFile {
                path: "f".into(),
                len,
            }]
        };
        assert_eq!(plan_splits(&f(105), 100, false).len(), 1);
        assert_eq!(plan_splits(&f(111), 100, false).len(), 2);
        assert_eq!(plan_splits(&f(300), 100, false).len(), 3);
    }

    #[test]
    fn empty_file_has_no_splits_and_bad_utf8_names_the_offset() {
        let d = tempfile::tempdir().unwrap();
        let f = [InputFile {
            path: "x".into(),
            len: 0,
        }];
        assert!(plan_splits(&f, 10, true).is_empty());
        let p = d.path().join("bad.txt");
        std::fs::write(&p, b"ok line\nbad \xff here\n").unwrap();
        let s = Split {
            path: p.to_string_lossy().into_owned(),
            start: 0,
            end: 20,
            file_len: 20,
            rest: Vec::new(),
        };
        let e = read_split_text(&s).unwrap_err().to_string();
        assert!(e.contains("byte offset 12"), "{e}");
        assert!(e.contains("bad.txt"), "{e}");
    }

    #[test]
    fn compressed_files_are_one_split_each_and_read_whole() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let text = "alpha beta\ngamma\n".repeat(2000);
        let gz = d.path().join("a.txt.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        let gz_bytes = e.finish().unwrap();
        std::fs::write(&gz, &gz_bytes).unwrap();
        let zst = d.path().join("b.txt.zst");
        std::fs::write(&zst, zstd::encode_all(text.as_bytes(), 3).unwrap()).unwrap();
        let files: Vec<InputFile> = [&gz, &zst]
            .iter()
            .map(|p| InputFile {
                path: p.to_string_lossy().into_owned(),
                len: std::fs::metadata(p).unwrap().len(),
            })
            .collect();
        let splits = plan_splits(&files, 7, true);
        assert_eq!(splits.len(), 2, "whole files, never split or combined");
        for s in &splits {
            assert_eq!(read_split_text(s).unwrap().text, text);
        }
        // A truncated gzip is an error naming the file.
        let cut = d.path().join("cut.txt.gz");
        std::fs::write(&cut, &gz_bytes[..gz_bytes.len() / 2]).unwrap();
        let s = Split {
            path: cut.to_string_lossy().into_owned(),
            start: 0,
            end: (gz_bytes.len() / 2) as u64,
            file_len: (gz_bytes.len() / 2) as u64,
            rest: Vec::new(),
        };
        let e = read_split_text(&s).unwrap_err().to_string();
        assert!(
            e.contains("cut.txt.gz") && e.contains("truncated or corrupt"),
            "{e}"
        );
    }

    #[test]
    fn small_files_are_combined_and_read_whole_in_order() {
        let d = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        let mut want = String::new();
        for i in 0..50 {
            // Every third file lacks a final newline; one is empty.
            let text = match i % 3 {
                0 => format!("file {i} line one\nfile {i} line two\n"),
                1 => format!("file {i} no newline"),
                _ if i == 5 => String::new(),
                _ => format!("file {i}\n"),
            };
            let p = d.path().join(format!("{i:02}.txt"));
            std::fs::write(&p, &text).unwrap();
            if !text.is_empty() {
                want.push_str(&text);
                if !text.ends_with('\n') {
                    want.push('\n');
                }
            }
            files.push(InputFile {
                path: p.to_string_lossy().into_owned(),
                len: text.len() as u64,
            });
        }
        // A large file among them is split as usual.
        let big = d.path().join("zz-big.txt");
        std::fs::write(&big, "x\n".repeat(300)).unwrap();
        files.push(InputFile {
            path: big.to_string_lossy().into_owned(),
            len: 600,
        });
        let splits = plan_splits(&files, 256, true);
        let combined: Vec<_> = splits.iter().filter(|s| !s.rest.is_empty()).collect();
        assert!(combined.len() >= 2 && combined.len() < 10, "{splits:#?}");
        assert!(splits.iter().all(|s| s.rest.is_empty() || s.len() <= 256));
        let mut got = String::new();
        for s in &splits {
            got.push_str(&read_split_text(s).unwrap().text);
        }
        want.push_str(&"x\n".repeat(300));
        // Every line exactly once (the last small group follows the large file).
        let sorted = |t: &str| {
            let mut l: Vec<String> = t.lines().map(String::from).collect();
            l.sort();
            l
        };
        assert_eq!(sorted(&got), sorted(&want));
        // Without combining, one split per small file.
        assert_eq!(plan_splits(&files[..50], 256, false).len(), 49);
    }
}
