//! Bounded-memory merging: sorted runs read from disk a batch at a time and merged k ways, so
//! that neither a map's final merge of its spilled runs nor a reducer ever holds a whole
//! partition. A run is one Arrow IPC stream (Binary key, Binary value, sorted by key bytes)
//! at a byte range of a file: a partition of a map output, of a spilled run, or a fetched
//! segment.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Take};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::BinaryBuilder;
use arrow_array::cast::AsArray;
use arrow_array::{Array, BinaryArray, RecordBatch};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use crate::error::io;
use crate::ShuffleError;

/// Rows per batch when Sluice writes a run: small enough that one batch of every run being
/// merged fits the memory budget.
pub const RUN_BATCH_ROWS: usize = 8192;

/// Where one sorted run lies: bytes `[start, end)` of `path`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentRef {
    /// The file.
    pub path: PathBuf,
    /// First byte of the run's IPC stream.
    pub start: u64,
    /// One past its last byte.
    pub end: u64,
}

impl SegmentRef {
    /// A whole file.
    pub fn whole(path: PathBuf) -> Result<SegmentRef, ShuffleError> {
        let end = std::fs::metadata(&path)
            .map_err(io("reading metadata of", &path))?
            .len();
        Ok(SegmentRef {
            path,
            start: 0,
            end,
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True when the run is empty.
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }
}

/// One run being read: its reader and the batch under the cursor.
struct Cursor {
    what: SegmentRef,
    reader: Option<StreamReader<BufReader<Take<File>>>>,
    keys: BinaryArray,
    values: BinaryArray,
    row: usize,
}

impl Cursor {
    fn open(seg: &SegmentRef) -> Result<Option<Cursor>, ShuffleError> {
        if seg.is_empty() {
            return Ok(None);
        }
        let mut f = File::open(&seg.path).map_err(io("opening", &seg.path))?;
        f.seek(SeekFrom::Start(seg.start))
            .map_err(io("reading", &seg.path))?;
        let reader =
            StreamReader::try_new(BufReader::with_capacity(64 << 10, f.take(seg.len())), None)
                .map_err(|e| corrupt(seg, e))?;
        let mut c = Cursor {
            what: seg.clone(),
            reader: Some(reader),
            keys: BinaryArray::from_iter_values(std::iter::empty::<&[u8]>()),
            values: BinaryArray::from_iter_values(std::iter::empty::<&[u8]>()),
            row: 0,
        };
        Ok(c.next_batch()?.then_some(c))
    }

    /// Loads the next non-empty batch; false at the end of the run.
    fn next_batch(&mut self) -> Result<bool, ShuffleError> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(false);
        };
        for b in reader.by_ref() {
            let b = b.map_err(|e| corrupt(&self.what, e))?;
            if b.num_rows() == 0 {
                continue;
            }
            let (k, v) = key_value(&b).map_err(|why| corrupt(&self.what, why))?;
            self.keys = k;
            self.values = v;
            self.row = 0;
            return Ok(true);
        }
        self.reader = None;
        Ok(false)
    }

    fn key(&self) -> &[u8] {
        self.keys.value(self.row)
    }

    /// Moves to the next row; false at the end of the run.
    fn advance(&mut self) -> Result<bool, ShuffleError> {
        self.row += 1;
        if self.row < self.keys.len() {
            return Ok(true);
        }
        self.next_batch()
    }
}

fn corrupt(seg: &SegmentRef, why: impl ToString) -> ShuffleError {
    ShuffleError::Corrupt {
        path: seg.path.clone(),
        reason: format!(
            "the sorted run at bytes {}..{} cannot be read: {}",
            seg.start,
            seg.end,
            why.to_string()
        ),
    }
}

/// The key and value columns of a run's batch.
fn key_value(b: &RecordBatch) -> Result<(BinaryArray, BinaryArray), String> {
    if b.num_columns() < 2 {
        return Err(format!("{} columns where a run has 2", b.num_columns()));
    }
    match (
        b.column(0).as_binary_opt::<i32>(),
        b.column(1).as_binary_opt::<i32>(),
    ) {
        (Some(k), Some(v)) => Ok((k.clone(), v.clone())),
        _ => Err(format!(
            "a run holds Binary key and value, not {}",
            b.schema()
        )),
    }
}

/// A k-way merge of runs read a batch at a time: a cursor over rows in key order (ties in run
/// order). It holds one batch per run, whatever the runs' sizes.
pub struct StreamMerge {
    cursors: Vec<Cursor>,
    /// Indexes into `cursors`, a min-heap by (key, run).
    heap: Vec<usize>,
}

impl StreamMerge {
    /// Opens `runs` (empty ones are skipped).
    pub fn open(runs: &[SegmentRef]) -> Result<StreamMerge, ShuffleError> {
        let mut cursors = Vec::with_capacity(runs.len());
        for r in runs {
            if let Some(c) = Cursor::open(r)? {
                cursors.push(c);
            }
        }
        let mut m = StreamMerge {
            heap: (0..cursors.len()).collect(),
            cursors,
        };
        for i in (0..m.heap.len() / 2).rev() {
            m.sift_down(i);
        }
        Ok(m)
    }

    fn less(&self, a: usize, b: usize) -> bool {
        let (x, y) = (self.heap[a], self.heap[b]);
        (self.cursors[x].key(), x) < (self.cursors[y].key(), y)
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < self.heap.len() && self.less(l, m) {
                m = l;
            }
            if r < self.heap.len() && self.less(r, m) {
                m = r;
            }
            if m == i {
                return;
            }
            self.heap.swap(i, m);
            i = m;
        }
    }

    /// The row under the cursor: the smallest key left, with its value.
    pub fn current(&self) -> Option<(&[u8], &[u8])> {
        let c = &self.cursors[*self.heap.first()?];
        Some((c.key(), c.values.value(c.row)))
    }

    /// Moves past the current row.
    pub fn advance(&mut self) -> Result<(), ShuffleError> {
        let Some(&top) = self.heap.first() else {
            return Ok(());
        };
        let more = self.cursors[top].advance();
        // A run that ended, or failed, leaves the merge: its cursor is past its rows.
        if !matches!(more, Ok(true)) {
            let last = self.heap.len() - 1;
            self.heap.swap(0, last);
            self.heap.pop();
        }
        if !self.heap.is_empty() {
            self.sift_down(0);
        }
        more.map(|_| ())
    }
}

/// Merges `runs` into one run written to `dest` (an LZ4 IPC stream in batches of
/// [`RUN_BATCH_ROWS`]): a pass of a multi-pass merge, when more runs arrive than fit in memory
/// at once.
pub fn merge_runs_to(runs: &[SegmentRef], dest: &Path) -> Result<SegmentRef, ShuffleError> {
    merge_runs_to_inner(runs, dest).map_err(crate::error::writing(dest))
}

fn merge_runs_to_inner(runs: &[SegmentRef], dest: &Path) -> Result<SegmentRef, ShuffleError> {
    use arrow_ipc::writer::IpcWriteOptions;
    let opts = IpcWriteOptions::default()
        .try_with_compression(Some(arrow_ipc::CompressionType::LZ4_FRAME))?;
    let file = File::create(dest).map_err(io("creating", dest))?;
    let mut w = StreamWriter::try_new_with_options(
        std::io::BufWriter::with_capacity(1 << 20, file),
        &run_schema(),
        opts,
    )?;
    let mut m = StreamMerge::open(runs)?;
    let mut out = RunBuilder::default();
    while let Some((k, v)) = m.current() {
        out.push(k, v, &mut w)?;
        m.advance()?;
    }
    out.finish(&mut w)?;
    w.finish()?;
    let mut inner = w.into_inner()?;
    std::io::Write::flush(&mut inner).map_err(io("writing", dest))?;
    drop(inner);
    SegmentRef::whole(dest.to_path_buf())
}

/// The schema of a run: encoded key and value.
pub(crate) fn run_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("key", DataType::Binary, false),
        Field::new("value", DataType::Binary, false),
    ]))
}

/// Rows of a run being written, in batches of [`RUN_BATCH_ROWS`].
#[derive(Default)]
pub(crate) struct RunBuilder {
    keys: BinaryBuilder,
    values: BinaryBuilder,
    rows: usize,
}

impl RunBuilder {
    /// Adds a row, writing a batch when one is full.
    pub(crate) fn push<W: std::io::Write>(
        &mut self,
        k: &[u8],
        v: &[u8],
        w: &mut StreamWriter<W>,
    ) -> Result<(), ShuffleError> {
        self.keys.append_value(k);
        self.values.append_value(v);
        self.rows += 1;
        if self.rows == RUN_BATCH_ROWS {
            self.flush(w)?;
        }
        Ok(())
    }

    fn flush<W: std::io::Write>(&mut self, w: &mut StreamWriter<W>) -> Result<(), ShuffleError> {
        if self.rows > 0 {
            let b = RecordBatch::try_new(
                run_schema(),
                vec![Arc::new(self.keys.finish()), Arc::new(self.values.finish())],
            )?;
            w.write(&b)?;
            self.rows = 0;
        }
        Ok(())
    }

    /// Writes the last, partial batch.
    pub(crate) fn finish<W: std::io::Write>(
        mut self,
        w: &mut StreamWriter<W>,
    ) -> Result<(), ShuffleError> {
        self.flush(w)
    }
}

/// Merges `runs` in passes of at most `fan_in` runs at a time, writing the intermediate runs
/// under `scratch`, until at most `fan_in` are left; returns those.
pub fn reduce_fan_in(
    runs: Vec<SegmentRef>,
    fan_in: usize,
    scratch: &Path,
) -> Result<Vec<SegmentRef>, ShuffleError> {
    let fan_in = fan_in.max(2);
    let mut runs: Vec<SegmentRef> = runs.into_iter().filter(|r| !r.is_empty()).collect();
    let mut pass = 0;
    while runs.len() > fan_in {
        std::fs::create_dir_all(scratch).map_err(io("creating directory", scratch))?;
        let mut next = Vec::with_capacity(runs.len().div_ceil(fan_in));
        for (i, group) in runs.chunks(fan_in).enumerate() {
            if group.len() == 1 {
                next.push(group[0].clone());
                continue;
            }
            next.push(merge_runs_to(
                group,
                &scratch.join(format!("merge-{pass}-{i}.run")),
            )?);
        }
        runs = next;
        pass += 1;
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use arrow_array::ArrayRef;
    use arrow_ipc::writer::StreamWriter;

    use super::*;

    fn run_bytes(keys: &[u32], tag: u8, batch_rows: usize) -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Binary, false),
            Field::new("value", DataType::Binary, false),
        ]));
        let mut out = Vec::new();
        let mut w = StreamWriter::try_new(&mut out, &schema).unwrap();
        for chunk in keys.chunks(batch_rows.max(1)) {
            let k: ArrayRef = Arc::new(BinaryArray::from_iter_values(
                chunk.iter().map(|k| k.to_be_bytes()),
            ));
            let v: ArrayRef = Arc::new(BinaryArray::from_iter_values(chunk.iter().map(|_| [tag])));
            w.write(&RecordBatch::try_new(schema.clone(), vec![k, v]).unwrap())
                .unwrap();
        }
        w.finish().unwrap();
        drop(w);
        out
    }

    /// The seeded generator, as a closure.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut r = sluice_core::rng::SplitMix(seed);
        move || r.next_u64()
    }

    #[test]
    fn random_runs_merge_into_one_sorted_run_with_ties_in_run_order() {
        let d = tempfile::tempdir().unwrap();
        for seed in 0..40u64 {
            let mut next = rng(seed);
            let nruns = (next() % 9) as usize;
            // Runs of random sizes (some empty), few distinct keys so that keys repeat within
            // and across runs, packed into one file at random offsets as map outputs are.
            let mut file = vec![0u8; (next() % 100) as usize];
            let mut segs = Vec::new();
            let mut want: Vec<(u32, u8)> = Vec::new();
            for r in 0..nruns {
                let n = match next() % 4 {
                    0 => 0,
                    _ => (next() % 3000) as usize,
                };
                let mut keys: Vec<u32> = (0..n).map(|_| (next() % 500) as u32).collect();
                keys.sort_unstable();
                want.extend(keys.iter().map(|k| (*k, r as u8)));
                let bytes = if n == 0 && next() % 2 == 0 {
                    Vec::new()
                } else {
                    run_bytes(&keys, r as u8, 1 + (next() % 700) as usize)
                };
                let start = file.len() as u64;
                file.extend_from_slice(&bytes);
                segs.push((start, file.len() as u64));
                file.extend(std::iter::repeat_n(7u8, (next() % 50) as usize));
            }
            let path = d.path().join(format!("runs-{seed}"));
            std::fs::write(&path, &file).unwrap();
            let segs: Vec<SegmentRef> = segs
                .into_iter()
                .map(|(start, end)| SegmentRef {
                    path: path.clone(),
                    start,
                    end,
                })
                .collect();
            // Merged in passes of two first, as a reducer with more runs than fit does.
            let segs = if seed % 2 == 0 {
                reduce_fan_in(segs, 2, &d.path().join(format!("passes-{seed}"))).unwrap()
            } else {
                segs
            };
            assert!(seed % 2 == 1 || segs.len() <= 2);
            let mut m = StreamMerge::open(&segs).unwrap();
            let mut got = Vec::new();
            while let Some((k, v)) = m.current() {
                got.push((u32::from_be_bytes(k.try_into().unwrap()), v[0]));
                m.advance().unwrap();
            }
            // Stable by run: the expected order sorts by key, then run.
            want.sort();
            assert_eq!(got, want, "seed {seed}");
        }
    }

    #[test]
    fn a_damaged_run_is_an_error_naming_the_file_and_range() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("run");
        let mut bytes = run_bytes(&[1, 2, 3], 0, 2);
        let n = bytes.len();
        bytes.truncate(n - 20);
        std::fs::write(&path, &bytes).unwrap();
        let seg = SegmentRef::whole(path.clone()).unwrap();
        let err = match StreamMerge::open(&[seg]) {
            Err(e) => e,
            Ok(mut m) => {
                let mut r = Ok(());
                while m.current().is_some() && r.is_ok() {
                    r = m.advance();
                }
                r.expect_err("a truncated run must fail")
            }
        }
        .to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("0.."),
            "{err}"
        );
        let garbage = d.path().join("garbage");
        std::fs::write(&garbage, b"not an arrow stream at all").unwrap();
        let err = StreamMerge::open(&[SegmentRef::whole(garbage).unwrap()])
            .err()
            .expect("garbage must fail")
            .to_string();
        assert!(err.contains("cannot be read"), "{err}");
    }
}
