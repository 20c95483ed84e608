//! The Sluice user API: write map, combine and reduce functions over typed (serde) records.
//!
//! A job is a [`Mapper`], an optional [`Combiner`] and a [`Reducer`], put together with
//! [`JobDef`] and registered by name in a [`Registry`]. Keys and values cross the shuffle in a
//! memcomparable encoding, so sorting the encoded bytes groups equal keys in key order.
//!
//! ```
//! use sluice_udf::{Emitter, Job, JobDef, Mapper, Output, Reducer, Registry, SumCombiner};
//!
//! struct Lengths;
//! impl Mapper for Lengths {
//!     type In = str; // lines of text
//!     type Key = u64;
//!     type Value = i64;
//!     fn map(&self, line: &str, out: &mut Emitter<'_, u64, i64>) {
//!         out.emit(line.len() as u64, 1);
//!     }
//! }
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Row { len: u64, lines: i64 }
//!
//! struct CountLines;
//! impl Reducer for CountLines {
//!     type Key = u64;
//!     type Value = i64;
//!     type Out = Row;
//!     fn reduce(&self, len: u64, values: &mut dyn Iterator<Item = i64>, out: &mut Output<'_, Row>) {
//!         out.push(Row { len, lines: values.sum() });
//!     }
//! }
//!
//! let mut registry = Registry::new();
//! registry.register(JobDef::new("line-lengths", Lengths, CountLines).with_combiner(SumCombiner));
//! let job = registry.get("line-lengths").unwrap();
//! let out = job.map_text("ab\ncd\nxyz\n", 2).unwrap();
//! assert_eq!(out.records_out, 2); // combined: (2, 2) and (3, 1)
//! ```

mod api;
mod batch;
mod context;
pub mod count;
mod emit;
mod error;
pub mod gpu;
mod input;
mod job;
mod registry;
mod small;
pub mod sort;
pub mod text;
pub mod train;
pub mod train_step;
pub mod wordcount;

pub use api::{
    decode_sortable, encode_sortable, Combiner, Descending, KeyOrder, Mapper, Partitioner, Reducer,
    SumCombiner,
};
pub use batch::{BatchEmitter, BatchJob, BatchMapper, BatchReducer, CSV_COLUMNS_PARAM};
pub use context::{
    BadRecord, BlobReader, Counters, TaskContext, MAX_BAD_RECORDS_PARAM, MAX_KEPT_BAD_RECORDS,
};
pub use emit::{Emitter, Output};
pub use error::UdfError;
pub use input::{
    panic_message, Input, MapInput, BAD_RECORDS_PARAM, CSV_FLEXIBLE_PARAM, SKIPPED_RECORDS_COUNTER,
};
pub use job::{
    shuffle_schema, IterInput, Job, JobDef, JobDefaults, MapOutput, ReduceCounts, ReduceInput,
};
pub use registry::Registry;
/// Formats and task identities from the engine's core, so job crates need only this crate.
pub use sluice_core::{InputFormat, OutputFormat, Split, TaskId, TaskKind};
pub use small::SmallString;
