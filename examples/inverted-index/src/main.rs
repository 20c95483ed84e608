//! A job binary: an inverted index. Input lines are `DOC_ID<TAB>text`; the output has one row
//! per word with the sorted, de-duplicated list of the documents that contain it.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use sluice_udf::{Emitter, JobDef, Mapper, Output, Reducer, Registry};

/// Emits `(word, doc_id)` once per distinct word of a line.
struct Postings;

impl Mapper for Postings {
    type In = str;
    type Key = String;
    type Value = String;

    fn map(&self, line: &str, out: &mut Emitter<'_, String, String>) {
        if line.trim().is_empty() {
            return;
        }
        let Some((doc, text)) = line.split_once('\t') else {
            panic!("inverted-index: line {line:?} is not DOC_ID<TAB>text");
        };
        let mut words: Vec<&str> = text.split_whitespace().collect();
        words.sort_unstable();
        words.dedup();
        for w in words {
            out.emit(w.to_string(), doc.to_string());
        }
    }
}

/// One output row: a word and the documents that hold it, sorted.
#[derive(Serialize, Deserialize)]
struct Entry {
    word: String,
    docs: Vec<String>,
}

/// Collects, sorts and de-duplicates the documents of a word.
struct Collect;

impl Reducer for Collect {
    type Key = String;
    type Value = String;
    type Out = Entry;

    fn reduce(
        &self,
        word: String,
        docs: &mut dyn Iterator<Item = String>,
        out: &mut Output<'_, Entry>,
    ) {
        let mut docs: Vec<String> = docs.collect();
        docs.sort_unstable();
        docs.dedup();
        out.push(Entry { word, docs });
    }
}

fn main() -> ExitCode {
    let mut jobs = Registry::new();
    jobs.register(JobDef::new("inverted-index", Postings, Collect));
    sluice_cli::job_main(jobs)
}
