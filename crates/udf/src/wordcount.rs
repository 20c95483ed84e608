//! The built-in word count job: tokens as `str::split_whitespace`, counted exactly.

use serde::{Deserialize, Serialize};

use crate::text::for_each_token;
use crate::{Emitter, JobDef, Mapper, Output, Reducer, SmallString, SumCombiner};

/// Emits `(token, 1)` for every whitespace-separated token, bytes kept as they are.
///
/// Keys are [`SmallString`]s, so the combiner's lookups stay inside its table.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordCountMapper;

impl Mapper for WordCountMapper {
    type In = str;
    type Key = SmallString;
    type Value = i64;

    fn map(&self, line: &str, out: &mut Emitter<'_, SmallString, i64>) {
        for_each_token(line, |t| out.emit_ref(t, 1));
    }

    // Newlines are white space too, so a chunk of lines tokenizes as one text.
    fn map_text(&self, text: &str, out: &mut Emitter<'_, SmallString, i64>) -> bool {
        self.map(text, out);
        true
    }
}

/// One output row: a word and how often it occurred.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordCountRow {
    /// The token.
    pub word: String,
    /// Its number of occurrences.
    pub count: i64,
}

/// Sums the counts of a word.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordCountReducer;

impl Reducer for WordCountReducer {
    type Key = SmallString;
    type Value = i64;
    type Out = WordCountRow;

    fn reduce(
        &self,
        word: SmallString,
        values: &mut dyn Iterator<Item = i64>,
        out: &mut Output<'_, WordCountRow>,
    ) {
        out.push(WordCountRow {
            word: word.into_string(),
            count: values.sum(),
        });
    }
}

/// The word count job definition, registered as `wordcount`.
pub fn job() -> JobDef<WordCountMapper, WordCountReducer> {
    JobDef::new("wordcount", WordCountMapper, WordCountReducer).with_combiner(SumCombiner)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use arrow_array::{Array, BinaryArray, Int64Array, StringArray};

    use crate::Job;

    #[test]
    fn map_then_reduce_counts_exactly() {
        let job = super::job();
        let text = "b a a\nc  b a\r\nä ä\n";
        let out = job.map_text(text, 3).unwrap();
        assert_eq!(out.records_emitted, 8);
        assert_eq!(out.records_out, 4);
        // Every partition is sorted; feed the sorted union to the reducer.
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for b in &out.partitions {
            let k = b.column(0).as_any().downcast_ref::<BinaryArray>().unwrap();
            let v = b.column(1).as_any().downcast_ref::<BinaryArray>().unwrap();
            for i in 0..b.num_rows() {
                if i > 0 {
                    assert!(k.value(i - 1) < k.value(i));
                }
                rows.push((k.value(i).to_vec(), v.value(i).to_vec()));
            }
        }
        rows.sort();
        let mut it = crate::IterInput::new(rows.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        let mut got = BTreeMap::new();
        let counts = job
            .run_reduce(
                &mut it,
                &mut |batch| {
                    let w = batch
                        .column(0)
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .unwrap();
                    let c = batch
                        .column(1)
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .unwrap();
                    for i in 0..w.len() {
                        got.insert(w.value(i).to_string(), c.value(i));
                    }
                    Ok(())
                },
                &crate::TaskContext::default(),
            )
            .unwrap();
        assert_eq!(counts.records_out, 4);
        let want: BTreeMap<String, i64> = [("a", 3), ("b", 2), ("c", 1), ("ä", 2)]
            .map(|(w, c)| (w.to_string(), c))
            .into();
        assert_eq!(got, want);
        let schema = job.output_schema().unwrap();
        assert_eq!(schema.field(0).name(), "word");
        assert_eq!(schema.field(0).data_type(), &arrow_schema::DataType::Utf8);
        assert_eq!(schema.field(1).data_type(), &arrow_schema::DataType::Int64);
    }
}
