//! A deterministic text corpus: Zipf-distributed words over a vocabulary with some non-ASCII
//! words, mostly space-separated with tabs, non-breaking spaces and CRLF line ends mixed in.
//!
//! The generator is `sluice_core::rng::SplitMix`, so the corpus is identical across versions of
//! any random-number crate.

use std::io::Write;
use std::path::Path;

use crate::error::CliError;

use sluice_core::rng::SplitMix;

const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "za", "pe", "qu", "xi", "do", "fa", "gu", "hé",
    "jö", "ñu", "日", "本", "語", "ω", "ж", "ß",
];
const VOCAB: usize = 50_000;

fn vocabulary(rng: &mut SplitMix) -> Vec<String> {
    let mut words = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(VOCAB);
    while out.len() < VOCAB {
        let n = 1 + rng.below(4) as usize;
        let mut w = String::new();
        for _ in 0..n {
            w.push_str(SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize]);
        }
        if rng.below(10) == 0 {
            w.push_str(&rng.below(100).to_string());
        }
        if words.insert(w.clone()) {
            out.push(w);
        }
    }
    out
}

/// Writes about `total` bytes over `files` files named `part-NNNN.txt` in `dir`.
pub fn generate_text(dir: &Path, total: u64, files: u32, seed: u64) -> Result<u64, CliError> {
    let io = |source: std::io::Error| CliError::Io {
        op: "writing corpus to",
        path: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut rng = SplitMix(seed);
    let vocab = vocabulary(&mut rng);
    // Zipf(s = 1) cumulative weights.
    let mut cdf = Vec::with_capacity(VOCAB);
    let mut acc = 0.0f64;
    for r in 1..=VOCAB {
        acc += 1.0 / r as f64;
        cdf.push(acc);
    }
    let files = files.max(1);
    let per_file = total / files as u64;
    let mut written = 0;
    for f in 0..files {
        let path = dir.join(format!("part-{f:04}.txt"));
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path).map_err(io)?);
        let mut n = 0u64;
        while n < per_file {
            let words = 5 + rng.below(16);
            for i in 0..words {
                if i > 0 {
                    let sep: &[u8] = match rng.below(100) {
                        0 => b"\t",
                        1 => "\u{a0}".as_bytes(),
                        2 => b"  ",
                        _ => b" ",
                    };
                    w.write_all(sep).map_err(io)?;
                    n += sep.len() as u64;
                }
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * acc;
                let idx = cdf.partition_point(|&c| c < u).min(VOCAB - 1);
                let word = vocab[idx].as_bytes();
                w.write_all(word).map_err(io)?;
                n += word.len() as u64;
            }
            let end: &[u8] = if rng.below(20) == 0 { b"\r\n" } else { b"\n" };
            w.write_all(end).map_err(io)?;
            n += end.len() as u64;
        }
        w.flush().map_err(io)?;
        written += n;
    }
    Ok(written)
}

/// Writes `rows` rows of `sluice_udf::train::generated_rows(features, seed, ..)` as Parquet over
/// `files` files `part-NNNN.parquet` in `dir`: columns `f0..f{features-1}` and `label`
/// (float32), rows in order across the files; with `id`, first an `id` column (uint64, the row
/// number).
pub fn generate_classification(
    dir: &Path,
    rows: u64,
    features: usize,
    files: u32,
    seed: u64,
    id: bool,
) -> Result<(), CliError> {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Float32Array, RecordBatch, UInt64Array};
    use arrow_schema::{DataType, Field, Schema};
    let mut fields: Vec<Field> = Vec::new();
    if id {
        fields.push(Field::new("id", DataType::UInt64, false));
    }
    fields.extend((0..features).map(|i| Field::new(format!("f{i}"), DataType::Float32, false)));
    fields.push(Field::new("label", DataType::Float32, false));
    let schema = Arc::new(Schema::new(fields));
    let files = files.max(1) as u64;
    for f in 0..files {
        let (from, to) = (f * rows / files, (f + 1) * rows / files);
        let path = dir.join(format!("part-{f:04}.parquet"));
        let mut w = sluice_storage::OutputWriter::create(
            &path,
            sluice_core::OutputFormat::Parquet,
            schema.clone(),
        )?;
        let mut at = from;
        while at < to {
            let end = (at + 65_536).min(to);
            let (x, y) = sluice_udf::train::generated_rows(features, seed, at..end);
            let n = (end - at) as usize;
            let mut cols: Vec<ArrayRef> = Vec::new();
            if id {
                cols.push(Arc::new(UInt64Array::from_iter_values(at..end)));
            }
            cols.extend((0..features).map(|j| {
                Arc::new(Float32Array::from_iter_values(
                    (0..n).map(|r| x[r * features + j]),
                )) as ArrayRef
            }));
            cols.push(Arc::new(Float32Array::from(y)));
            let batch = RecordBatch::try_new(schema.clone(), cols)
                .map_err(|e| CliError::Usage(format!("building generated rows: {e}")))?;
            w.write(&batch)?;
            at = end;
        }
        w.finish()?;
    }
    Ok(())
}
