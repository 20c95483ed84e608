//! Map output files on an executor's local disk.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow_ipc::CompressionType;

use crate::error::io;
use crate::ShuffleError;

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

    /// Writes one batch per partition as separate LZ4-compressed IPC streams, then the index
    /// of `partitions + 1` little-endian offsets; both land by rename, so readers never see
    /// half a file.
    pub fn write(
        &self,
        job_id: &str,
        map_index: u32,
        attempt: u32,
        partitions: &[RecordBatch],
    ) -> Result<MapOutputInfo, ShuffleError> {
        let base = self.base(job_id, map_index, attempt);
        let dir = base.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io("creating directory", &dir))?;
        let data_path = base.with_extension("data");
        let index_path = base.with_extension("index");
        let tmp_data = base.with_extension("data.tmp");
        let tmp_index = base.with_extension("index.tmp");

        let opts =
            IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME))?;
        let mut file = std::io::BufWriter::with_capacity(
            1 << 20,
            File::create(&tmp_data).map_err(io("creating", &tmp_data))?,
        );
        let mut offsets = Vec::with_capacity(partitions.len() + 1);
        let mut pos = 0u64;
        offsets.push(0u64);
        let mut seg = Vec::new();
        for batch in partitions {
            seg.clear();
            {
                let mut w =
                    StreamWriter::try_new_with_options(&mut seg, &batch.schema(), opts.clone())?;
                w.write(batch)?;
                w.finish()?;
            }
            file.write_all(&seg).map_err(io("writing", &tmp_data))?;
            pos += seg.len() as u64;
            offsets.push(pos);
        }
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

    /// Reads the encoded bytes of one partition of one map output.
    pub fn read_partition(
        &self,
        job_id: &str,
        map_index: u32,
        attempt: u32,
        partition: u32,
    ) -> Result<Vec<u8>, ShuffleError> {
        let base = self.base(job_id, map_index, attempt);
        let index_path = base.with_extension("index");
        let idx = std::fs::read(&index_path).map_err(io("reading", &index_path))?;
        let p = partition as usize;
        if idx.len() % 8 != 0 || (p + 2) * 8 > idx.len() {
            return Err(ShuffleError::Corrupt {
                path: index_path,
                reason: format!(
                    "partition {partition} is out of range ({} partitions)",
                    (idx.len() / 8).saturating_sub(1)
                ),
            });
        }
        let off = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&idx[i * 8..i * 8 + 8]);
            u64::from_le_bytes(b)
        };
        let (start, end) = (off(p), off(p + 1));
        if end < start {
            return Err(ShuffleError::Corrupt {
                path: index_path,
                reason: format!("offsets of partition {partition} decrease"),
            });
        }
        let data_path = base.with_extension("data");
        let f = File::open(&data_path).map_err(io("opening", &data_path))?;
        let mut buf = vec![0u8; (end - start) as usize];
        f.read_exact_at(&mut buf, start)
            .map_err(io("reading", &data_path))?;
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
}
