//! Reducer side: fetch a partition from an executor into a local file.

use std::path::Path;

use sluice_rpc::pb::FetchPartitionRequest;
use sluice_rpc::ShuffleClient;
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

use crate::stream::SegmentRef;
use crate::ShuffleError;

/// Streams partition `partition` of map `map_index` (attempt `attempt`) from an executor into
/// `dest`, chunk by chunk (gRPC's flow control bounds the bytes in flight), and returns the
/// run it now holds.
pub async fn fetch_partition(
    client: &mut ShuffleClient<Channel>,
    addr: &str,
    job_id: &str,
    map_index: u32,
    attempt: u32,
    partition: u32,
    dest: &Path,
) -> Result<SegmentRef, ShuffleError> {
    let err = |reason: String| ShuffleError::Fetch {
        job_id: job_id.to_string(),
        map_index,
        partition,
        addr: addr.to_string(),
        reason,
    };
    let mut stream = client
        .fetch_partition(FetchPartitionRequest {
            job_id: job_id.to_string(),
            map_index,
            attempt,
            partition,
        })
        .await
        .map_err(|s| err(s.message().to_string()))?
        .into_inner();
    let local = |e: std::io::Error| err(format!("writing {}: {e}", dest.display()));
    let mut file = tokio::io::BufWriter::with_capacity(
        1 << 20,
        tokio::fs::File::create(dest).await.map_err(local)?,
    );
    let mut len = 0u64;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| err(s.message().to_string()))?
    {
        file.write_all(&chunk.data).await.map_err(local)?;
        len += chunk.data.len() as u64;
    }
    file.flush().await.map_err(local)?;
    Ok(SegmentRef {
        path: dest.to_path_buf(),
        start: 0,
        end: len,
    })
}
