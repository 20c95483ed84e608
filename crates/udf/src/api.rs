//! The traits user code implements.

use std::hash::Hash;
use std::ops::AddAssign;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Emitter, Input, Output, UdfError};

/// Turns input records into key/value pairs.
///
/// `In` is `str` for lines of text, or any serde type for CSV records (fields by position),
/// JSON lines or Parquet rows (columns by name); the job's input format says which.
///
/// ```
/// use sluice_udf::{Emitter, Job, JobDef, Mapper, Output, Reducer};
///
/// #[derive(serde::Deserialize)]
/// struct Sale { store: String, cents: i64 }
///
/// struct ByStore;
/// impl Mapper for ByStore {
///     type In = Sale;
///     type Key = String;
///     type Value = i64;
///     fn map(&self, sale: &Sale, out: &mut Emitter<'_, String, i64>) {
///         if sale.cents < 0 {
///             out.count("refunds", 1); // a user counter, summed over committed attempts
///         }
///         out.emit(sale.store.clone(), sale.cents);
///     }
/// }
/// # struct Total;
/// # impl Reducer for Total {
/// #     type Key = String; type Value = i64; type Out = (String, i64);
/// #     fn reduce(&self, k: String, v: &mut dyn Iterator<Item = i64>, out: &mut Output<'_, (String, i64)>) {
/// #         out.push((k, v.sum()));
/// #     }
/// # }
/// let job = JobDef::new("sales", ByStore, Total).input_format(sluice_core::InputFormat::Csv { header: true });
/// let out = job.map_text("store,cents\na,100\nb,-5\na,7\n", 1).unwrap();
/// assert_eq!(out.records_out, 3);
/// assert_eq!(out.counters.get("refunds"), 1);
/// ```
pub trait Mapper: Send + Sync + 'static {
    /// Input record type.
    type In: Input + ?Sized;
    /// Shuffle key.
    type Key: Serialize + DeserializeOwned + Hash + Eq + Send + 'static;
    /// Shuffle value.
    type Value: Serialize + DeserializeOwned + Send + 'static;

    /// Maps one record (a line comes without its line terminator).
    fn map(&self, record: &Self::In, out: &mut Emitter<'_, Self::Key, Self::Value>);

    /// A fast path for text input: maps a chunk of whole lines in one call and returns `true`,
    /// for mappers that need not cut text into lines first. The default returns `false`, and
    /// the engine calls [`Mapper::map`] per record.
    fn map_text(&self, _text: &str, _out: &mut Emitter<'_, Self::Key, Self::Value>) -> bool {
        false
    }
}

/// Folds a value into the running value of the same key on the map side.
///
/// It must be associative and commutative: the engine may apply it any number of times, in any
/// order, before the reducer sees the values (as Hadoop's combiner).
///
/// ```
/// use sluice_udf::Combiner;
///
/// /// Keeps the largest value of a key.
/// struct Max;
/// impl Combiner<String, u64> for Max {
///     fn combine(&self, acc: &mut u64, value: u64) {
///         *acc = (*acc).max(value);
///     }
/// }
/// let mut acc = 3;
/// Max.combine(&mut acc, 9);
/// assert_eq!(acc, 9);
/// ```
pub trait Combiner<K, V>: Send + Sync {
    /// Adds `value` into `acc`.
    fn combine(&self, acc: &mut V, value: V);
}

/// A combiner that adds values.
///
/// ```
/// use sluice_udf::{Combiner, SumCombiner};
///
/// let mut acc = 2_i64;
/// Combiner::<String, i64>::combine(&SumCombiner, &mut acc, 3);
/// assert_eq!(acc, 5);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SumCombiner;

impl<K, V: AddAssign> Combiner<K, V> for SumCombiner {
    fn combine(&self, acc: &mut V, value: V) {
        *acc += value;
    }
}

/// Turns all values of one key into output records.
///
/// ```
/// use sluice_udf::{Output, Reducer};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Stat { store: String, total: i64, sales: u64 }
///
/// struct Totals;
/// impl Reducer for Totals {
///     type Key = String;
///     type Value = i64;
///     type Out = Stat;
///     fn reduce(&self, store: String, cents: &mut dyn Iterator<Item = i64>, out: &mut Output<'_, Stat>) {
///         let (mut total, mut sales) = (0, 0);
///         for c in cents {
///             total += c;
///             sales += 1;
///         }
///         out.push(Stat { store, total, sales });
///     }
/// }
///
/// let mut out = Output::default();
/// Totals.reduce("a".into(), &mut [100, 7].into_iter(), &mut out);
/// assert_eq!(out.rows()[0].total, 107);
/// ```
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
        out: &mut Output<'_, Self::Out>,
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
/// let out = job.map_text("apple zebra mango nut", 2).unwrap();
/// assert_eq!(out.partitions[0].num_rows(), 2); // apple, mango
/// assert_eq!(out.partitions[1].num_rows(), 2); // nut, zebra
/// ```
pub trait Partitioner<K>: Send + Sync {
    /// A partition in `0..partitions`.
    fn partition(&self, key: &K, partitions: u32) -> u32;
}

/// Encodes `value` so that byte order is the value's natural order (integers numerically,
/// strings bytewise, tuples field by field), appending to `buf`: the building block of
/// [`KeyOrder`]s.
pub fn encode_sortable<T: Serialize + ?Sized>(
    value: &T,
    buf: &mut Vec<u8>,
) -> Result<(), UdfError> {
    let mut ser = memcomparable::Serializer::new(buf);
    value
        .serialize(&mut ser)
        .map_err(|e| UdfError::Encode(e.to_string()))
}

/// Decodes what [`encode_sortable`] wrote; the bytes must hold exactly one value.
pub fn decode_sortable<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, UdfError> {
    memcomparable::from_slice(bytes).map_err(|e| UdfError::Decode(e.to_string()))
}

/// The order keys reach reducers in: the shuffle sorts and groups keys by the bytes `encode`
/// writes, and `decode` gives the key back. Keys equal as values must encode equal.
///
/// The default is the key's natural order ([`encode_sortable`]); [`Descending`] reverses it.
/// A custom order encodes a sort key first and the key itself after it:
///
/// ```
/// use sluice_udf::{decode_sortable, encode_sortable, KeyOrder, UdfError};
///
/// /// Case-insensitive order; keys differing only in case stay apart, "Apple" before "apple".
/// struct CaseInsensitive;
/// impl KeyOrder<String> for CaseInsensitive {
///     fn encode(&self, key: &String, buf: &mut Vec<u8>) -> Result<(), UdfError> {
///         encode_sortable(&(key.to_lowercase(), key), buf)
///     }
///     fn decode(&self, bytes: &[u8]) -> Result<String, UdfError> {
///         Ok(decode_sortable::<(String, String)>(bytes)?.1)
///     }
/// }
///
/// let mut keys: Vec<Vec<u8>> = ["b", "Apple", "apple", "C"].iter().map(|k| {
///     let mut buf = Vec::new();
///     CaseInsensitive.encode(&k.to_string(), &mut buf).unwrap();
///     buf
/// }).collect();
/// keys.sort();
/// let sorted: Vec<String> = keys.iter().map(|b| CaseInsensitive.decode(b).unwrap()).collect();
/// assert_eq!(sorted, ["Apple", "apple", "b", "C"]);
/// ```
pub trait KeyOrder<K>: Send + Sync {
    /// Appends the sortable bytes of `key` to `buf`.
    fn encode(&self, key: &K, buf: &mut Vec<u8>) -> Result<(), UdfError>;
    /// The key whose bytes these are.
    fn decode(&self, bytes: &[u8]) -> Result<K, UdfError>;
}

/// Keys in reverse natural order: largest first (as Hadoop's decreasing sort comparator).
///
/// It complements the natural encoding, which reverses the byte order because no key's
/// encoding is a prefix of another's.
///
/// ```
/// use sluice_udf::{Descending, KeyOrder};
///
/// let enc = |k: u64| { let mut b = Vec::new(); Descending.encode(&k, &mut b).unwrap(); b };
/// assert!(enc(10) < enc(2));
/// assert_eq!(KeyOrder::<u64>::decode(&Descending, &enc(10)).unwrap(), 10);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Descending;

impl<K: Serialize + DeserializeOwned> KeyOrder<K> for Descending {
    fn encode(&self, key: &K, buf: &mut Vec<u8>) -> Result<(), UdfError> {
        let start = buf.len();
        encode_sortable(key, buf)?;
        buf[start..].iter_mut().for_each(|b| *b = !*b);
        Ok(())
    }

    fn decode(&self, bytes: &[u8]) -> Result<K, UdfError> {
        let plain: Vec<u8> = bytes.iter().map(|b| !b).collect();
        decode_sortable(&plain)
    }
}
