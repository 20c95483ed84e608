//! The shuffle gRPC service every executor runs.

use std::pin::Pin;

use futures::Stream;
use sluice_rpc::pb::shuffle_server::Shuffle;
use sluice_rpc::pb::{FetchPartitionRequest, ShuffleChunk};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::ShuffleStore;

/// Bytes per streamed message.
const CHUNK: usize = 1 << 20;

/// Serves partitions of the map outputs in a [`ShuffleStore`].
#[derive(Debug, Clone)]
pub struct ShuffleService {
    store: ShuffleStore,
}

impl ShuffleService {
    /// A service over `store`.
    pub fn new(store: ShuffleStore) -> Self {
        ShuffleService { store }
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<ShuffleChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Shuffle for ShuffleService {
    type FetchPartitionStream = ChunkStream;

    async fn fetch_partition(
        &self,
        req: Request<FetchPartitionRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            store.read_partition(&r.job_id, r.map_index, r.attempt, r.partition)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::not_found(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for c in bytes.chunks(CHUNK) {
                if tx
                    .send(Ok(ShuffleChunk { data: c.to_vec() }))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
