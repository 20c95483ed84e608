//! Sluice storage: find input files, cut them into line-aligned splits, read a split's lines,
//! write output parts, and commit output so that readers never see partial results.

mod arrow_in;
mod blob;
mod commit;
pub mod datastore;
mod error;
mod input;
pub mod nfs;
mod output;
mod parquet_in;
mod partition;
mod partitioned;
mod read;
mod sample;
mod split;
mod textread;

pub use arrow_in::{plan_arrow_splits, read_arrow_split};
pub use blob::{blob_join, list_blobs, read_blob, remove_blob, write_blob};
pub use commit::{
    Manifest, ManifestFile, OutputCommitter, StagedTask, BAD_RECORDS_DIR, PENDING_DIR,
    SUCCESS_FILE, TEMP_DIR,
};
pub use error::StorageError;
pub use input::{list_inputs, InputFile};
pub use output::{OutputOptions, OutputWriter};
pub use parquet_in::{
    parquet_footer, plan_parquet_splits, read_parquet_split, Filter, WHERE_PARAM,
};
pub use partition::{partition_values, with_partition_columns, PartitionValue};
pub use partitioned::{TaskWriter, WrittenFile, PARTITION_BY_PARAM};
pub use read::read_key_counts;
pub use sample::sample_line_keys;
pub use split::{
    plan_splits, read_split, read_split_text, whole_file_splits, Compression, SplitLines, SplitText,
};
