//! Map output files on an executor's local disk.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_ipc::CompressionType;

use crate::error::io;
use crate::stream::{run_schema, RunBuilder, SegmentRef, StreamMerge, RUN_BATCH_ROWS};
use crate::ShuffleError;

/// Folds the encoded values of one key into one encoded value (the job's combiner); false
/// when the job has none, and the values stay as they are.
pub type Combine<'a> = dyn Fn(&[&[u8]], &mut Vec<u8>) -> Result<bool, String> + 'a;

/// The values of one key gathered from the runs being merged.
#[derive(Default)]
struct Group {
    key: Vec<u8>,
    values: Vec<u8>,
    ends: Vec<usize>,
    folded: Vec<u8>,
}

impl Group {
    fn holds(&self, key: &[u8]) -> bool {
        !self.ends.is_empty() && self.key == key
    }

    fn start(&mut self, key: &[u8]) {
        self.key.clear();
        self.key.extend_from_slice(key);
    }

    fn add(&mut self, value: &[u8]) {
        self.values.extend_from_slice(value);
        self.ends.push(self.values.len());
    }

    /// Writes the key's values (folded into one when the combiner does) and empties the group.
    fn write<W: Write>(
        &mut self,
        combine: Option<&Combine<'_>>,
        out: &mut RunBuilder,
        w: &mut StreamWriter<W>,
    ) -> Result<(), ShuffleError> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        let parts: Vec<&[u8]> = starts
            .zip(self.ends.iter())
            .map(|(a, b)| &self.values[a..*b])
            .collect();
        self.folded.clear();
        let folded = match combine {
            Some(f) if parts.len() > 1 => {
                f(&parts, &mut self.folded).map_err(ShuffleError::Combine)?
            }
            _ => false,
        };
        if folded {
            out.push(&self.key, &self.folded, w)?;
        } else {
            for p in parts {
                out.push(&self.key, p, w)?;
            }
        }
        self.values.clear();
        self.ends.clear();
        Ok(())
    }
}

/// A writer that counts the bytes written through it.
struct Counting<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The writer of one partition's stream.
type PartWriter<'a> = StreamWriter<&'a mut Counting<std::io::BufWriter<File>>>;

/// Writes `BASE.data` (one LZ4 IPC stream per partition, its batches given by `fill`, straight
/// to the file) and `BASE.index` (`partitions + 1` little-endian offsets), each landing by
/// rename.
fn write_runs_inner(
    base: &Path,
    partitions: usize,
    mut fill: impl FnMut(usize, &mut PartWriter<'_>) -> Result<(), ShuffleError>,
) -> Result<MapOutputInfo, ShuffleError> {
    let dir = base.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io("creating directory", &dir))?;
    let data_path = base.with_extension("data");
    let index_path = base.with_extension("index");
    let tmp_data = base.with_extension("data.tmp");
    let tmp_index = base.with_extension("index.tmp");
    let opts = IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME))?;
    let mut file = Counting {
        inner: std::io::BufWriter::with_capacity(
            1 << 20,
            File::create(&tmp_data).map_err(io("creating", &tmp_data))?,
        ),
        pos: 0,
    };
    let mut offsets = Vec::with_capacity(partitions + 1);
    offsets.push(0u64);
    for p in 0..partitions {
        let mut w = StreamWriter::try_new_with_options(&mut file, &run_schema(), opts.clone())?;
        fill(p, &mut w)?;
        w.finish()?;
        drop(w);
        offsets.push(file.pos);
    }
    let pos = file.pos;
    file.flush().map_err(io("writing", &tmp_data))?;
    drop(file);
    let idx: Vec<u8> = offsets.iter().flat_map(|o| o.to_le_bytes()).collect();
    std::fs::write(&tmp_index, idx).map_err(io("writing", &tmp_index))?;
    std::fs::rename(&tmp_data, &data_path).map_err(io("renaming", &tmp_data))?;
    std::fs::rename(&tmp_index, &index_path).map_err(io("renaming", &tmp_index))?;
    Ok(MapOutputInfo {
        data_path,
        bytes: pos,
    })
}

/// [`write_runs_inner`], its I/O errors naming the file (and a full disk its directory).
fn write_runs(
    base: &Path,
    partitions: usize,
    fill: impl FnMut(usize, &mut PartWriter<'_>) -> Result<(), ShuffleError>,
) -> Result<MapOutputInfo, ShuffleError> {
    let tmp = base.with_extension("data.tmp");
    write_runs_inner(base, partitions, fill).map_err(crate::error::writing(&tmp))
}

/// Writes partition `p` of `partitions` in slices of at most [`RUN_BATCH_ROWS`] rows.
fn sliced(
    partitions: &[RecordBatch],
) -> impl FnMut(usize, &mut PartWriter<'_>) -> Result<(), ShuffleError> + '_ {
    move |p, w| {
        let b = &partitions[p];
        let mut at = 0;
        while at < b.num_rows() {
            let n = RUN_BATCH_ROWS.min(b.num_rows() - at);
            w.write(&b.slice(at, n))?;
            at += n;
        }
        Ok(())
    }
}

/// The partitions of the output at `BASE.{data,index}`, from its index.
fn segments_of(base: &Path) -> Result<Vec<SegmentRef>, ShuffleError> {
    let index_path = base.with_extension("index");
    let idx = std::fs::read(&index_path).map_err(io("reading", &index_path))?;
    let corrupt = |reason: String| ShuffleError::Corrupt {
        path: index_path.clone(),
        reason,
    };
    if idx.len() % 8 != 0 || idx.len() < 8 {
        return Err(corrupt(format!(
            "{} bytes is not a list of 8-byte offsets; the map output is damaged, rerun the job",
            idx.len()
        )));
    }
    let offsets: Vec<u64> = idx
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let data_path = base.with_extension("data");
    let len = std::fs::metadata(&data_path)
        .map_err(io("reading metadata of", &data_path))?
        .len();
    if offsets[0] != 0 || offsets.last().copied() != Some(len) {
        return Err(corrupt(format!(
            "offsets run from {} to {:?} but the data file holds {len} bytes; rerun the job",
            offsets[0],
            offsets.last()
        )));
    }
    offsets
        .windows(2)
        .enumerate()
        .map(|(p, w)| {
            if w[1] < w[0] {
                return Err(corrupt(format!("offsets of partition {p} decrease")));
            }
            Ok(SegmentRef {
                path: data_path.clone(),
                start: w[0],
                end: w[1],
            })
        })
        .collect()
}

/// Where one map output was written.
#[derive(Debug, Clone)]
pub struct MapOutputInfo {
    /// The data file.
    pub data_path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The shuffle directory of one executor: `ROOT/<job>/map-<index>-<attempt>.{data,index}`.
#[derive(Debug, Clone)]
pub struct ShuffleStore {
    root: PathBuf,
}

impl ShuffleStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ShuffleStore { root: root.into() }
    }

    fn base(&self, job_id: &str, map_index: u32, attempt: u32) -> PathBuf {
        self.root
            .join(job_id)
            .join(format!("map-{map_index:05}-{attempt}"))
    }

    /// Writes one batch per partition as separate LZ4-compressed IPC streams (in batches of
    /// at most [`RUN_BATCH_ROWS`] rows, so that a merge reads them a little at a time), then the
    /// index of `partitions + 1` little-endian offsets; both land by rename, so readers never
    /// see half a file.
    pub fn write(
        &self,
        job_id: &str,
        map_index: u32,
        attempt: u32,
        partitions: &[RecordBatch],
    ) -> Result<MapOutputInfo, ShuffleError> {
        let base = self.base(job_id, map_index, attempt);
        write_runs(&base, partitions.len(), sliced(partitions))
    }

    /// Writes spilled run `n` of a map attempt, in the map output format.
    pub fn write_spill(
        &self,
        job_id: &str,
        map_index: u32,
        attempt: u32,
        n: usize,
        partitions: &[RecordBatch],
    ) -> Result<Vec<SegmentRef>, ShuffleError> {
        let spill = self.spill_base(job_id, map_index, attempt, n);
        write_runs(&spill, partitions.len(), sliced(partitions))?;
        segments_of(&spill)
    }

    /// Removes the spilled runs `0..n` of a map attempt (its output holds them merged).
    pub fn remove_spills(&self, job_id: &str, map_index: u32, attempt: u32, n: usize) {
        for i in 0..n {
            let spill = self.spill_base(job_id, map_index, attempt, i);
            let _ = std::fs::remove_file(spill.with_extension("data"));
            let _ = std::fs::remove_file(spill.with_extension("index"));
        }
    }

    fn spill_base(&self, job_id: &str, map_index: u32, attempt: u32, n: usize) -> PathBuf {
        self.root
            .join(job_id)
            .join(format!("map-{map_index:05}-{attempt}-spill-{n}"))
    }

    /// Writes the map output as the k-way merge of sorted runs: `runs[r][p]` is partition `p`
    /// of run `r`. Reads each run a batch at a time; with `combine`, the values of a key that
    /// several runs hold are folded into one (the job's combiner).
    pub fn write_merged(
        &self,
        job_id: &str,
        map_index: u32,
        attempt: u32,
        runs: &[Vec<SegmentRef>],
        partitions: usize,
        combine: Option<&Combine<'_>>,
    ) -> Result<MapOutputInfo, ShuffleError> {
        let base = self.base(job_id, map_index, attempt);
        write_runs(&base, partitions, |p, w| {
            let mine: Vec<SegmentRef> = runs.iter().filter_map(|r| r.get(p).cloned()).collect();
            let mut m = StreamMerge::open(&mine)?;
            let mut out = RunBuilder::default();
            // The key being gathered and its values (flat, with their ends).
            let mut group = Group::default();
            while let Some((k, v)) = m.current() {
                if !group.holds(k) {
                    group.write(combine, &mut out, w)?;
                    group.start(k);
                }
                group.add(v);
                m.advance()?;
            }
            group.write(combine, &mut out, w)?;
            out.finish(w)
        })
    }

    /// Where partition `partition` of a map output lies in its data file.
    pub fn segment(
        &self,
        job_id: &str,
        map_index: u32,
        attempt: u32,
        partition: u32,
    ) -> Result<SegmentRef, ShuffleError> {
        let base = self.base(job_id, map_index, attempt);
        let segs = segments_of(&base)?;
        let n = segs.len();
        segs.into_iter()
            .nth(partition as usize)
            .ok_or_else(|| ShuffleError::Corrupt {
                path: base.with_extension("index"),
                reason: format!("partition {partition} is out of range ({n} partitions)"),
            })
    }

    /// Reads the encoded bytes of one partition of one map output.
    pub fn read_partition(
        &self,
        job_id: &str,
        map_index: u32,
        attempt: u32,
        partition: u32,
    ) -> Result<Vec<u8>, ShuffleError> {
        let seg = self.segment(job_id, map_index, attempt, partition)?;
        let f = File::open(&seg.path).map_err(io("opening", &seg.path))?;
        let mut buf = vec![0u8; seg.len() as usize];
        f.read_exact_at(&mut buf, seg.start)
            .map_err(io("reading", &seg.path))?;
        Ok(buf)
    }

    /// Deletes every map output of a job.
    pub fn remove_job(&self, job_id: &str) -> Result<(), ShuffleError> {
        let dir = self.root.join(job_id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io("removing", &dir))?;
        }
        Ok(())
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every complete map output on disk, as (job id, map index, attempt): an index and its
    /// data file (spilled runs and fetched segments are not outputs). An executor that
    /// registers again tells the coordinator these.
    pub fn held_outputs(&self) -> Vec<(String, u32, u32)> {
        let mut out = Vec::new();
        for job in std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
        {
            let job_id = job.file_name().to_string_lossy().into_owned();
            for f in std::fs::read_dir(job.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = f.file_name().to_string_lossy().into_owned();
                let Some(base) = name
                    .strip_prefix("map-")
                    .and_then(|n| n.strip_suffix(".index"))
                else {
                    continue;
                };
                let mut parts = base.split('-');
                let (Some(m), Some(a), None) = (parts.next(), parts.next(), parts.next()) else {
                    continue;
                };
                let (Ok(m), Ok(a)) = (m.parse::<u32>(), a.parse::<u32>()) else {
                    continue;
                };
                if job.path().join(format!("map-{base}.data")).exists() {
                    out.push((job_id.clone(), m, a));
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    #[test]
    fn held_outputs_are_the_complete_map_outputs() {
        let d = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new(d.path());
        let job = d.path().join("job-1");
        std::fs::create_dir_all(&job).unwrap();
        for f in [
            "map-00003-2.index",
            "map-00003-2.data",
            "map-00004-1.index", // no data file
            "map-00005-1-spill-0.index",
            "map-00005-1-spill-0.data",
            "fetched-r00000-1",
        ] {
            std::fs::write(job.join(f), b"").unwrap();
        }
        assert_eq!(store.held_outputs(), vec![("job-1".to_string(), 3, 2)]);
    }

    use arrow_array::ArrayRef;
    use arrow_schema::{DataType, Field, Schema};

    use super::*;
    use arrow_array::BinaryArray;

    /// Every row of `segs`, merged, as (key, value).
    fn merged(segs: &[SegmentRef]) -> Vec<(String, Vec<u8>)> {
        let mut m = StreamMerge::open(segs).unwrap();
        let mut out = Vec::new();
        while let Some((k, v)) = m.current() {
            out.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
            m.advance().unwrap();
        }
        out
    }

    fn run(keys: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Binary, false),
            Field::new("value", DataType::Binary, false),
        ]));
        let k: ArrayRef = Arc::new(BinaryArray::from_iter_values(
            keys.iter().map(|s| s.as_bytes()),
        ));
        let v: ArrayRef = Arc::new(BinaryArray::from_iter_values(keys.iter().map(|_| b"1")));
        RecordBatch::try_new(schema, vec![k, v]).unwrap()
    }

    #[test]
    fn merges_in_order_through_the_store() {
        let d = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new(d.path());
        let a = [run(&["a", "c", "e"]), run(&[])];
        let b = [run(&["b", "c", "d", "f"]), run(&["z"])];
        store.write("j", 0, 1, &a).unwrap();
        store.write("j", 1, 1, &b).unwrap();
        let segs = [
            store.segment("j", 0, 1, 0).unwrap(),
            store.segment("j", 1, 1, 0).unwrap(),
        ];
        let got: Vec<String> = merged(&segs).into_iter().map(|(k, _)| k).collect();
        assert_eq!(got, ["a", "b", "c", "c", "d", "e", "f"]);
        assert_eq!(merged(&[store.segment("j", 1, 1, 1).unwrap()]).len(), 1);
        let e = store.segment("j", 1, 1, 2).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
        assert_eq!(
            store.read_partition("j", 1, 1, 1).unwrap().len() as u64,
            store.segment("j", 1, 1, 1).unwrap().len()
        );
        store.remove_job("j").unwrap();
        assert!(store.read_partition("j", 0, 1, 0).is_err());
    }

    #[test]
    fn spilled_runs_merge_into_the_map_output_combined_or_not() {
        let d = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new(d.path());
        let a = store
            .write_spill("j", 0, 1, 0, &[run(&["a", "b"]), run(&["x"])])
            .unwrap();
        let b = store
            .write_spill("j", 0, 1, 1, &[run(&["b", "c"]), run(&[])])
            .unwrap();
        let c = store
            .write_spill("j", 0, 1, 2, &[run(&["b"]), run(&["x", "y"])])
            .unwrap();
        let runs = [a, b, c];
        let rows = |store: &ShuffleStore, p| merged(&[store.segment("j", 0, 1, p).unwrap()]);
        store.write_merged("j", 0, 1, &runs, 2, None).unwrap();
        let keys: Vec<String> = rows(&store, 0).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "b", "b", "c"]);
        // A combiner that concatenates shows which values were folded together.
        let concat = |vals: &[&[u8]], out: &mut Vec<u8>| -> Result<bool, String> {
            vals.iter().for_each(|v| out.extend_from_slice(v));
            Ok(true)
        };
        store
            .write_merged("j", 0, 1, &runs, 2, Some(&concat))
            .unwrap();
        assert_eq!(
            rows(&store, 0),
            [
                ("a".to_string(), b"1".to_vec()),
                ("b".to_string(), b"111".to_vec()),
                ("c".to_string(), b"1".to_vec())
            ]
        );
        assert_eq!(
            rows(&store, 1),
            [
                ("x".to_string(), b"11".to_vec()),
                ("y".to_string(), b"1".to_vec())
            ]
        );
        store.remove_spills("j", 0, 1, 3);
        let left: Vec<_> = std::fs::read_dir(d.path().join("j"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.iter().all(|n| !n.contains("spill")), "{left:?}");
    }

    #[test]
    fn a_damaged_index_is_a_clear_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new(d.path());
        store
            .write("j", 0, 1, &[run(&["a", "b"]), run(&["c"])])
            .unwrap();
        let index = d.path().join("j").join("map-00000-1.index");
        let good = std::fs::read(&index).unwrap();
        let offsets: Vec<u64> = good
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let enc = |o: &[u64]| o.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let data_len = offsets[2];
        for (what, bytes) in [
            (
                "not a list of 8-byte offsets",
                good[..good.len() - 3].to_vec(),
            ),
            ("data file holds", enc(&[0, offsets[1], data_len + 100])),
            ("decrease", enc(&[0, data_len, offsets[1], data_len])),
            ("not a list of 8-byte offsets", Vec::new()),
        ] {
            std::fs::write(&index, &bytes).unwrap();
            let e = store.segment("j", 0, 1, 0).unwrap_err().to_string();
            assert!(
                e.contains(what) && e.contains(&index.display().to_string()),
                "{what}: {e}"
            );
        }
        std::fs::write(&index, &good).unwrap();
        assert_eq!(store.segment("j", 0, 1, 1).unwrap().end, data_len);
    }
}
