//! Sluice wire contracts: the code generated from `proto/sluice/v1`, conversions to
//! `sluice-core` types, and client constructors with errors that name the address tried.

use std::time::Duration;

use sluice_core::{FailureKind, InputFormat, JobSpec, OutputFormat, Split};
use tonic::transport::{Channel, Endpoint};

/// Generated protobuf messages and gRPC services of package `sluice.v1`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("sluice.v1");
}

pub use pb::control_client::ControlClient;
pub use pb::jobs_client::JobsClient;
pub use pb::shuffle_client::ShuffleClient;

/// Errors of the rpc crate.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The address could not be parsed as a URL.
    #[error("invalid address '{addr}': {reason}")]
    BadAddress {
        /// Address as given.
        addr: String,
        /// Parser message.
        reason: String,
    },
    /// Nothing answered at the address.
    #[error("cannot reach {what} at {addr}: {reason} (is it running? check the address)")]
    Unreachable {
        /// Coordinator, executor shuffle service, ...
        what: &'static str,
        /// Address tried.
        addr: String,
        /// Transport message.
        reason: String,
    },
    /// A message field held a value the receiver does not understand.
    #[error("invalid message: {0}")]
    Invalid(#[from] sluice_core::CoreError),
}

/// Adds `http://` when the user gave a bare `host:port`.
pub fn normalize_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// Opens a channel, failing fast with the address in the message.
pub async fn connect(what: &'static str, addr: &str) -> Result<Channel, RpcError> {
    let url = normalize_url(addr);
    let ep = Endpoint::from_shared(url.clone())
        .map_err(|e| RpcError::BadAddress {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    ep.connect().await.map_err(|e| {
        let mut reason = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            reason = s.to_string();
            src = s.source();
        }
        RpcError::Unreachable {
            what,
            addr: url,
            reason,
        }
    })
}

/// A jobs-API client for the coordinator at `addr`.
pub async fn jobs_client(addr: &str) -> Result<JobsClient<Channel>, RpcError> {
    Ok(JobsClient::new(connect("coordinator", addr).await?))
}

/// A control-API client for the coordinator at `addr`.
pub async fn control_client(addr: &str) -> Result<ControlClient<Channel>, RpcError> {
    Ok(ControlClient::new(connect("coordinator", addr).await?))
}

/// A shuffle client for the executor at `addr`, with room for large chunks.
pub async fn shuffle_client(addr: &str) -> Result<ShuffleClient<Channel>, RpcError> {
    Ok(
        ShuffleClient::new(connect("executor shuffle service", addr).await?)
            .max_decoding_message_size(64 << 20),
    )
}

impl From<FailureKind> for pb::FailureKind {
    fn from(k: FailureKind) -> Self {
        match k {
            FailureKind::Retryable => pb::FailureKind::Retryable,
            FailureKind::Permanent => pb::FailureKind::Permanent,
            FailureKind::LostOutput => pb::FailureKind::LostOutput,
            FailureKind::OutOfMemory => pb::FailureKind::OutOfMemory,
            FailureKind::Cancelled => pb::FailureKind::Cancelled,
            FailureKind::ExecutorLost => pb::FailureKind::ExecutorLost,
        }
    }
}

/// The failure kind of a report; an executor that sent none (an older one) is taken as
/// retryable, the cautious reading.
impl From<pb::FailureKind> for FailureKind {
    fn from(k: pb::FailureKind) -> Self {
        match k {
            pb::FailureKind::Unspecified | pb::FailureKind::Retryable => FailureKind::Retryable,
            pb::FailureKind::Permanent => FailureKind::Permanent,
            pb::FailureKind::LostOutput => FailureKind::LostOutput,
            pb::FailureKind::OutOfMemory => FailureKind::OutOfMemory,
            pb::FailureKind::Cancelled => FailureKind::Cancelled,
            pb::FailureKind::ExecutorLost => FailureKind::ExecutorLost,
        }
    }
}

impl From<&JobSpec> for pb::JobSpec {
    fn from(s: &JobSpec) -> Self {
        pb::JobSpec {
            job: s.job.clone(),
            inputs: s.inputs.clone(),
            output: s.output.clone(),
            format: s.format.as_str().to_string(),
            split_size: s.split_size,
            reducers: s.reducers.unwrap_or(0),
            overwrite: s.overwrite,
            params: s.params.clone().into_iter().collect(),
            binary_sha256: s.binary.clone().unwrap_or_default(),
            input_format: s.input_format.as_str().to_string(),
        }
    }
}

impl TryFrom<&pb::JobSpec> for JobSpec {
    type Error = RpcError;
    fn try_from(s: &pb::JobSpec) -> Result<Self, RpcError> {
        Ok(JobSpec {
            job: s.job.clone(),
            inputs: s.inputs.clone(),
            output: s.output.clone(),
            format: OutputFormat::parse(&s.format)?,
            input_format: InputFormat::parse(&s.input_format)?,
            split_size: if s.split_size == 0 {
                sluice_core::DEFAULT_SPLIT_SIZE
            } else {
                s.split_size
            },
            reducers: (s.reducers > 0).then_some(s.reducers),
            overwrite: s.overwrite,
            params: s.params.clone().into_iter().collect(),
            binary: (!s.binary_sha256.is_empty()).then(|| s.binary_sha256.clone()),
        })
    }
}

impl From<&Split> for pb::Split {
    fn from(s: &Split) -> Self {
        pb::Split {
            path: s.path.clone(),
            start: s.start,
            end: s.end,
            file_len: s.file_len,
            rest: s.rest.iter().map(Into::into).collect(),
        }
    }
}

impl From<&pb::Split> for Split {
    fn from(s: &pb::Split) -> Self {
        Split {
            path: s.path.clone(),
            start: s.start,
            end: s.end,
            file_len: s.file_len,
            rest: s.rest.iter().map(Into::into).collect(),
        }
    }
}

impl pb::Stats {
    /// Adds another set of counters into this one.
    pub fn add(&mut self, o: &pb::Stats) {
        self.bytes_read += o.bytes_read;
        self.records_in += o.records_in;
        self.records_out += o.records_out;
        self.shuffle_bytes += o.shuffle_bytes;
        self.bytes_out += o.bytes_out;
        for (name, n) in &o.counters {
            *self.counters.entry(name.clone()).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trips() {
        let spec = JobSpec {
            job: "wordcount".into(),
            inputs: vec!["/a".into(), "/b/*.txt".into()],
            output: "/out".into(),
            format: OutputFormat::Tsv,
            input_format: InputFormat::Csv { header: false },
            split_size: 1 << 20,
            reducers: Some(4),
            overwrite: true,
            params: [("k".to_string(), "v".to_string())].into(),
            binary: Some("ab12".into()),
        };
        let back = JobSpec::try_from(&pb::JobSpec::from(&spec)).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn bare_addresses_get_a_scheme() {
        assert_eq!(normalize_url("127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(normalize_url("http://h:2"), "http://h:2");
    }
}
