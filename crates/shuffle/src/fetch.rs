//! Reducer side: fetch a partition from an executor and decode it.

use std::io::Cursor;

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamReader;
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

/// Decodes one partition segment (an Arrow IPC stream) into its batches.
pub fn decode_segment(bytes: &[u8]) -> Result<Vec<RecordBatch>, ShuffleError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}
