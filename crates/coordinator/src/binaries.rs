//! Job binaries, stored by the SHA-256 of their bytes under `STATE_DIR/binaries/`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sluice_core::digest::{is_sha256_hex, to_hex};
use tokio::io::AsyncWriteExt;
use tokio_stream::{Stream, StreamExt};

/// A content-addressed store of uploaded job binaries.
#[derive(Debug, Clone)]
pub(crate) struct BinaryStore {
    dir: PathBuf,
}

impl BinaryStore {
    pub fn new(state_dir: &Path) -> Self {
        BinaryStore {
            dir: state_dir.join("binaries"),
        }
    }

    /// Where the binary with this hash lives, if `sha256` is a well-formed hash.
    pub fn path(&self, sha256: &str) -> Option<PathBuf> {
        is_sha256_hex(sha256).then(|| self.dir.join(sha256.to_ascii_lowercase()))
    }

    /// Writes chunks to a temporary file while hashing them, then renames it to its hash.
    pub async fn put(
        &self,
        mut chunks: impl Stream<Item = Result<Vec<u8>, String>> + Unpin,
    ) -> Result<(String, u64), String> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let tmp = self.dir.join(format!(
            ".upload-{}-{}",
            std::process::id(),
            sluice_core::JobId::generate()
        ));
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        let mut hasher = Sha256::new();
        let mut n = 0u64;
        let res: Result<(), String> = async {
            while let Some(data) = chunks.next().await.transpose()? {
                hasher.update(&data);
                n += data.len() as u64;
                file.write_all(&data).await.map_err(|e| e.to_string())?;
            }
            file.flush().await.map_err(|e| e.to_string())
        }
        .await;
        if let Err(e) = res {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let sha = to_hex(&hasher.finalize());
        let dst = self.dir.join(&sha);
        tokio::fs::rename(&tmp, &dst)
            .await
            .map_err(|e| format!("storing binary {sha}: {e}"))?;
        Ok((sha, n))
    }
}
