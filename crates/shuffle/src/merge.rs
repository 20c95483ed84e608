//! K-way merge of key-sorted runs.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use arrow_array::{Array, BinaryArray, RecordBatch};

use crate::ShuffleError;

struct Head<'a> {
    key: &'a [u8],
    run: usize,
    row: usize,
}

impl PartialEq for Head<'_> {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Head<'_> {}
impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Head<'_> {
    // Reversed: BinaryHeap is a max-heap and we want the smallest key (then run) first.
    fn cmp(&self, o: &Self) -> Ordering {
        o.key.cmp(self.key).then_with(|| o.run.cmp(&self.run))
    }
}

/// Yields `(key, value)` from many sorted runs in key order; ties keep run order.
pub struct KWayMerge<'a> {
    runs: Vec<(&'a BinaryArray, &'a BinaryArray)>,
    heap: BinaryHeap<Head<'a>>,
}

impl<'a> KWayMerge<'a> {
    /// Merges `batches`, each a run sorted by its Binary key column 0.
    pub fn new(batches: &'a [RecordBatch]) -> Result<Self, ShuffleError> {
        let mut runs = Vec::with_capacity(batches.len());
        for b in batches {
            if b.num_columns() < 2 {
                return Err(ShuffleError::Schema(format!("{} columns", b.num_columns())));
            }
            let k = b.column(0).as_any().downcast_ref::<BinaryArray>();
            let v = b.column(1).as_any().downcast_ref::<BinaryArray>();
            match (k, v) {
                (Some(k), Some(v)) => runs.push((k, v)),
                _ => return Err(ShuffleError::Schema(b.schema().to_string())),
            }
        }
        let mut heap = BinaryHeap::with_capacity(runs.len());
        for (i, (k, _)) in runs.iter().enumerate() {
            if !k.is_empty() {
                heap.push(Head {
                    key: k.value(0),
                    run: i,
                    row: 0,
                });
            }
        }
        Ok(KWayMerge { runs, heap })
    }
}

impl<'a> Iterator for KWayMerge<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let mut top = self.heap.peek_mut()?;
        let (keys, vals) = self.runs[top.run];
        let item = (top.key, vals.value(top.row));
        let next = top.row + 1;
        if next < keys.len() {
            top.row = next;
            top.key = keys.value(next);
        } else {
            std::collections::binary_heap::PeekMut::pop(top);
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::ArrayRef;
    use arrow_schema::{DataType, Field, Schema};

    use super::*;
    use crate::{decode_segment, ShuffleStore};

    fn run(keys: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("key", DataType::Binary, false),
            Field::new("value", DataType::Binary, false),
        ]));
        let k: ArrayRef = Arc::new(BinaryArray::from_iter_values(
            keys.iter().map(|s| s.as_bytes()),
        ));
        let v: ArrayRef = Arc::new(BinaryArray::from_iter_values(keys.iter().map(|_| b"1")));
        RecordBatch::try_new(schema, vec![k, v]).unwrap()
    }

    #[test]
    fn merges_in_order_through_the_store() {
        let d = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new(d.path());
        let a = [run(&["a", "c", "e"]), run(&[])];
        let b = [run(&["b", "c", "d", "f"]), run(&["z"])];
        store.write("j", 0, 1, &a).unwrap();
        store.write("j", 1, 1, &b).unwrap();
        let mut batches = Vec::new();
        for m in 0..2 {
            batches.extend(decode_segment(&store.read_partition("j", m, 1, 0).unwrap()).unwrap());
        }
        let got: Vec<&[u8]> = KWayMerge::new(&batches).unwrap().map(|(k, _)| k).collect();
        let want: Vec<&[u8]> = ["a", "b", "c", "c", "d", "e", "f"]
            .iter()
            .map(|s| s.as_bytes())
            .collect();
        assert_eq!(got, want);
        let p1 = decode_segment(&store.read_partition("j", 1, 1, 1).unwrap()).unwrap();
        assert_eq!(p1[0].num_rows(), 1);
        let e = store.read_partition("j", 1, 1, 2).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
        store.remove_job("j").unwrap();
        assert!(store.read_partition("j", 0, 1, 0).is_err());
    }

    #[test]
    fn spilled_runs_merge_into_the_map_output_combined_or_not() {
        let d = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new(d.path());
        let a = store
            .write_spill("j", 0, 1, 0, &[run(&["a", "b"]), run(&["x"])])
            .unwrap();
        let b = store
            .write_spill("j", 0, 1, 1, &[run(&["b", "c"]), run(&[])])
            .unwrap();
        let c = store
            .write_spill("j", 0, 1, 2, &[run(&["b"]), run(&["x", "y"])])
            .unwrap();
        let runs = [a, b, c];
        let rows = |store: &ShuffleStore, p| {
            let batches = decode_segment(&store.read_partition("j", 0, 1, p).unwrap()).unwrap();
            KWayMerge::new(&batches)
                .unwrap()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.to_vec()))
                .collect::<Vec<_>>()
        };
        store.write_merged("j", 0, 1, &runs, 2, None).unwrap();
        let keys: Vec<String> = rows(&store, 0).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b", "b", "b", "c"]);
        // A combiner that concatenates shows which values were folded together.
        let concat = |vals: &[&[u8]], out: &mut Vec<u8>| -> Result<(), String> {
            vals.iter().for_each(|v| out.extend_from_slice(v));
            Ok(())
        };
        store
            .write_merged("j", 0, 1, &runs, 2, Some(&concat))
            .unwrap();
        assert_eq!(
            rows(&store, 0),
            [
                ("a".to_string(), b"1".to_vec()),
                ("b".to_string(), b"111".to_vec()),
                ("c".to_string(), b"1".to_vec())
            ]
        );
        assert_eq!(
            rows(&store, 1),
            [
                ("x".to_string(), b"11".to_vec()),
                ("y".to_string(), b"1".to_vec())
            ]
        );
        store.remove_spills("j", 0, 1, 3);
        let left: Vec<_> = std::fs::read_dir(d.path().join("j"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.iter().all(|n| !n.contains("spill")), "{left:?}");
    }

    #[test]
    fn a_damaged_index_is_a_clear_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let store = ShuffleStore::new(d.path());
        store
            .write("j", 0, 1, &[run(&["a", "b"]), run(&["c"])])
            .unwrap();
        let index = d.path().join("j").join("map-00000-1.index");
        let good = std::fs::read(&index).unwrap();
        let offsets: Vec<u64> = good
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let enc = |o: &[u64]| o.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let data_len = offsets[2];
        for (what, bytes) in [
            (
                "not a list of 8-byte offsets",
                good[..good.len() - 3].to_vec(),
            ),
            ("data file holds", enc(&[0, offsets[1], data_len + 100])),
            ("decrease", enc(&[0, data_len, offsets[1], data_len])),
            ("not a list of 8-byte offsets", Vec::new()),
        ] {
            std::fs::write(&index, &bytes).unwrap();
            let e = store.segment("j", 0, 1, 0).unwrap_err().to_string();
            assert!(
                e.contains(what) && e.contains(&index.display().to_string()),
                "{what}: {e}"
            );
        }
        std::fs::write(&index, &good).unwrap();
        assert_eq!(store.segment("j", 0, 1, 1).unwrap().end, data_len);
    }
}
