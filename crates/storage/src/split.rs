//! Line-aligned byte-range splits, as Hadoop's TextInputFormat: a split owns every line that
//! starts inside its range, skipping a partial first line and reading past its end to finish
//! its last one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use sluice_core::Split;

use crate::error::io;
use crate::{InputFile, StorageError};

/// Bytes read at a time when a split's last line runs past its end.
const EXTEND_CHUNK: usize = 64 * 1024;

/// A file's last split may be this much larger than the split size rather than leave a tiny
/// tail split (Hadoop's SPLIT_SLOP).
const SPLIT_SLOP: f64 = 1.1;

/// Cuts every file into `[start, end)` ranges of about `split_size` bytes; empty files get none.
pub fn plan_splits(files: &[InputFile], split_size: u64) -> Vec<Split> {
    let size = split_size.max(1);
    let mut splits = Vec::new();
    for f in files {
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
            });
            start = end;
        }
    }
    splits
}

/// One split per file, for formats that are not split at byte ranges (Parquet).
pub fn whole_file_splits(files: &[InputFile]) -> Vec<Split> {
    files
        .iter()
        .filter(|f| f.len > 0)
        .map(|f| Split {
            path: f.path.clone(),
            start: 0,
            end: f.len,
            file_len: f.len,
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
}

/// Appends up to `len` bytes at `pos` to `buf`; returns how many came.
fn read_append(
    file: &mut File,
    path: &str,
    buf: &mut Vec<u8>,
    pos: u64,
    len: u64,
) -> Result<usize, StorageError> {
    file.seek(SeekFrom::Start(pos))
        .map_err(io("seeking input", path))?;
    Read::by_ref(file)
        .take(len)
        .read_to_end(buf)
        .map_err(io("reading input", path))
}

/// Reads the lines owned by `split` (those whose first byte lies in `[start, end)`) into
/// `buf`, which is cleared first and may be reused across splits to spare page faults.
pub fn read_split<'a>(split: &Split, buf: &'a mut Vec<u8>) -> Result<SplitLines<'a>, StorageError> {
    let path = split.path.as_str();
    let mut file = File::open(path).map_err(io("opening input", path))?;
    // One byte of look-behind tells whether `start` begins a line.
    let begin = split.start.saturating_sub(1);
    buf.clear();
    // One allocation: growing a 64 MiB buffer by doubling copies it and faults every page twice.
    buf.reserve((split.end - begin) as usize + EXTEND_CHUNK);
    let got = read_append(&mut file, path, buf, begin, split.end - begin)?;
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
        });
    }
    // Finish the last line: read on until a newline or the end of the file.
    if buf.last() != Some(&b'\n') {
        loop {
            let before = buf.len();
            let pos = begin + before as u64;
            let n = read_append(&mut file, path, buf, pos, EXTEND_CHUNK as u64)?;
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
        for s in plan_splits(&files, size) {
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
        assert_eq!(plan_splits(&f(105), 100).len(), 1);
        assert_eq!(plan_splits(&f(111), 100).len(), 2);
        assert_eq!(plan_splits(&f(300), 100).len(), 3);
    }

    #[test]
    fn empty_file_has_no_splits_and_bad_utf8_names_the_offset() {
        let d = tempfile::tempdir().unwrap();
        let f = [InputFile {
            path: "x".into(),
            len: 0,
        }];
        assert!(plan_splits(&f, 10).is_empty());
        let p = d.path().join("bad.txt");
        std::fs::write(&p, b"ok line\nbad \xff here\n").unwrap();
        let s = Split {
            path: p.to_string_lossy().into_owned(),
            start: 0,
            end: 20,
            file_len: 20,
        };
        let e = read_split_text(&s).unwrap_err().to_string();
        assert!(e.contains("byte offset 12"), "{e}");
        assert!(e.contains("bad.txt"), "{e}");
    }
}
