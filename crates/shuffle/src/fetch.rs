//! Reducer side: fetch a partition from an executor and decode it.

use sluice_rpc::pb::FetchPartitionRequest;
use sluice_rpc::ShuffleClient;
use tonic::transport::Channel;

use crate::ShuffleError;

/// Streams partition `partition` of map `map_index` (attempt `attempt`) from an executor.
pub async fn fetch_partition(
    client: &mut ShuffleClient<Channel>,
    addr: &str,
    job_id: &str,
    map_index: u32,
    attempt: u32,
    partition: u32,
) -> Result<Vec<u8>, ShuffleError> {
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
    let mut out = Vec::new();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| err(s.message().to_string()))?
    {
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}
