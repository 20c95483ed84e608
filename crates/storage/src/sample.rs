//! Samples the keys of line-based input for range partitioning, as TeraSort's client does:
//! a few windows spread over each split, every whole line in them, its first N bytes the key.

use sluice_core::Split;

use crate::split::read_split;
use crate::StorageError;

/// Splits sampled at most (spread evenly over the job's splits).
const MAX_SPLITS: usize = 64;
/// Windows read in each sampled split.
const WINDOWS: u64 = 4;
/// Bytes per window.
const WINDOW_BYTES: u64 = 64 * 1024;

/// The sorted first-`key_bytes`-byte keys of the lines in windows spread over `splits`.
pub fn sample_line_keys(splits: &[Split], key_bytes: usize) -> Result<Vec<Vec<u8>>, StorageError> {
    let pieces: Vec<&Split> = splits
        .iter()
        .flat_map(|s| std::iter::once(s).chain(s.rest.iter()))
        .collect();
    let step = pieces.len().div_ceil(MAX_SPLITS).max(1);
    let mut keys = Vec::new();
    let mut buf = Vec::new();
    for piece in pieces.iter().step_by(step) {
        let len = piece.end - piece.start;
        for w in 0..WINDOWS {
            let start = piece.start + w * len / WINDOWS;
            let window = Split {
                path: piece.path.clone(),
                start,
                end: (start + WINDOW_BYTES).min(piece.end),
                file_len: piece.file_len,
                rest: Vec::new(),
            };
            if window.start >= window.end {
                continue;
            }
            let lines = read_split(&window, &mut buf)?;
            keys.extend(
                lines
                    .text
                    .lines()
                    .map(|l| l.as_bytes()[..l.len().min(key_bytes)].to_vec()),
            );
            // A compressed file is read whole whatever the window: once is enough.
            if crate::split::Compression::of(&piece.path).is_some() {
                break;
            }
        }
    }
    keys.sort_unstable();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::split::plan_splits;
    use crate::InputFile;

    #[test]
    fn samples_spread_over_every_split() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("in.txt");
        // Keys rise through the file: a sample from its start alone would be all "a".
        let text: String = (0..40_000)
            .map(|i| {
                format!(
                    "{}{:06} payload\n",
                    (b'a' + (i * 26 / 40_000) as u8) as char,
                    i
                )
            })
            .collect();
        std::fs::write(&path, &text).unwrap();
        let files = [InputFile {
            path: path.to_string_lossy().into_owned(),
            len: text.len() as u64,
        }];
        let splits = plan_splits(&files, 128 * 1024, false);
        let keys = sample_line_keys(&splits, 1).unwrap();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "sorted");
        let first: std::collections::BTreeSet<u8> = keys.iter().map(|k| k[0]).collect();
        assert!(first.len() >= 20, "keys from all over the file: {first:?}");
        assert!(keys.iter().all(|k| k.len() == 1));
    }
}
