//! The traits user code implements.

use std::hash::Hash;
use std::ops::AddAssign;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Emitter;

/// Turns input records (text lines) into key/value pairs.
pub trait Mapper: Send + Sync + 'static {
    /// Shuffle key.
    type Key: Serialize + DeserializeOwned + Hash + Eq + Send + 'static;
    /// Shuffle value.
    type Value: Serialize + DeserializeOwned + Send + 'static;

    /// Maps one line (without its line terminator).
    fn map(&self, line: &str, out: &mut Emitter<'_, Self::Key, Self::Value>);

    /// Maps a chunk of whole lines; override it when records need not be cut into lines first.
    fn map_lines(&self, text: &str, out: &mut Emitter<'_, Self::Key, Self::Value>) {
        for line in text.lines() {
            self.map(line, out);
        }
    }
}

/// Folds a value into the running value of the same key on the map side.
///
/// It must be associative and commutative: the engine may apply it any number of times, in any
/// order, before the reducer sees the values (as Hadoop's combiner).
pub trait Combiner<K, V>: Send + Sync {
    /// Adds `value` into `acc`.
    fn combine(&self, acc: &mut V, value: V);
}

/// A combiner that adds values.
#[derive(Debug, Clone, Copy, Default)]
pub struct SumCombiner;

impl<K, V: AddAssign> Combiner<K, V> for SumCombiner {
    fn combine(&self, acc: &mut V, value: V) {
        *acc += value;
    }
}

/// Turns all values of one key into output records.
pub trait Reducer: Send + Sync + 'static {
    /// Shuffle key (the mapper's).
    type Key: DeserializeOwned;
    /// Shuffle value (the mapper's).
    type Value: DeserializeOwned;
    /// Output record; its fields become the output columns.
    type Out: Serialize + DeserializeOwned;

    /// Called once per key, in key order, with every value of that key.
    fn reduce(
        &self,
        key: Self::Key,
        values: &mut dyn Iterator<Item = Self::Value>,
        out: &mut Vec<Self::Out>,
    );
}

/// Chooses the reduce partition of a key; every key equal to another must get the same one.
///
/// ```
/// use sluice_udf::{Job, JobDef, Partitioner, SumCombiner};
/// use sluice_udf::wordcount::{WordCountMapper, WordCountReducer};
/// use sluice_udf::SmallString;
///
/// /// Words starting with a-m go to partition 0, all others to 1.
/// struct ByInitial;
/// impl Partitioner<SmallString> for ByInitial {
///     fn partition(&self, key: &SmallString, partitions: u32) -> u32 {
///         let first = key.as_str().bytes().next().unwrap_or(b'a');
///         u32::from(first > b'm') % partitions
///     }
/// }
///
/// let job = JobDef::new("split-by-initial", WordCountMapper, WordCountReducer)
///     .with_combiner(SumCombiner)
///     .with_partitioner(ByInitial);
/// let out = job.run_map("apple zebra mango nut", 2).unwrap();
/// assert_eq!(out.partitions[0].num_rows(), 2); // apple, mango
/// assert_eq!(out.partitions[1].num_rows(), 2); // nut, zebra
/// ```
pub trait Partitioner<K>: Send + Sync {
    /// A partition in `0..partitions`.
    fn partition(&self, key: &K, partitions: u32) -> u32;
}
