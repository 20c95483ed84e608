//! A job binary: word count written against the user API with plain `String` keys.
//!
//! Run it on this machine with no servers: `wordcount-typed run --input DIR --output OUT`.
//! Submit it to a cluster: `wordcount-typed submit --coordinator URL --input DIR --output OUT
//! --wait` (or `sluice submit wordcount-typed --binary PATH ...`). Executors fetch the binary
//! by its SHA-256 and run it as a worker process.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use sluice_udf::{Emitter, JobDef, Mapper, Output, Reducer, Registry, SumCombiner};

/// Emits `(word, 1)` per whitespace-separated token.
struct Tokens;

impl Mapper for Tokens {
    type In = str;
    type Key = String;
    type Value = i64;

    fn map(&self, line: &str, out: &mut Emitter<'_, String, i64>) {
        for word in line.split_whitespace() {
            out.emit_ref(word, 1);
        }
    }
}

/// One output row.
#[derive(Serialize, Deserialize)]
struct Count {
    word: String,
    count: i64,
}

/// Sums the counts of a word.
struct Sum;

impl Reducer for Sum {
    type Key = String;
    type Value = i64;
    type Out = Count;

    fn reduce(
        &self,
        word: String,
        counts: &mut dyn Iterator<Item = i64>,
        out: &mut Output<'_, Count>,
    ) {
        out.push(Count {
            word,
            count: counts.sum(),
        });
    }
}

fn main() -> ExitCode {
    let mut jobs = Registry::new();
    jobs.register(
        JobDef::new("wordcount-typed", Tokens, Sum)
            .with_combiner(SumCombiner)
            .reducers(3),
    );
    sluice_cli::job_main(jobs)
}
