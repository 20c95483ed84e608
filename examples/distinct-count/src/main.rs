//! A job binary: for input lines `KEY,VALUE`, how many distinct values each key has.
//!
//! A custom partitioner sends every key to the reducer of its first byte, so each output part
//! holds whole initials (say, for a per-initial report).

use std::collections::BTreeSet;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use sluice_udf::{Emitter, JobDef, Mapper, Output, Partitioner, Reducer, Registry};

/// Emits `(key, value)` per line.
struct Pairs;

impl Mapper for Pairs {
    type In = str;
    type Key = String;
    type Value = String;

    fn map(&self, line: &str, out: &mut Emitter<'_, String, String>) {
        if line.trim().is_empty() {
            return;
        }
        // A malformed line fails the task; the error names the task and its split.
        let Some((k, v)) = line.split_once(',') else {
            panic!("distinct-count: line {line:?} is not KEY,VALUE");
        };
        out.emit(k.trim().to_string(), v.trim().to_string());
    }
}

/// One output row.
#[derive(Serialize, Deserialize)]
struct Distinct {
    key: String,
    distinct: i64,
}

/// Counts the distinct values of a key.
struct CountDistinct;

impl Reducer for CountDistinct {
    type Key = String;
    type Value = String;
    type Out = Distinct;

    fn reduce(
        &self,
        key: String,
        values: &mut dyn Iterator<Item = String>,
        out: &mut Output<'_, Distinct>,
    ) {
        let set: BTreeSet<String> = values.collect();
        out.push(Distinct {
            key,
            distinct: set.len() as i64,
        });
    }
}

/// Partition = the key's first byte modulo the number of reducers.
struct ByInitial;

impl Partitioner<String> for ByInitial {
    fn partition(&self, key: &String, partitions: u32) -> u32 {
        u32::from(key.bytes().next().unwrap_or(0)) % partitions
    }
}

fn main() -> ExitCode {
    let mut jobs = Registry::new();
    jobs.register(JobDef::new("distinct-count", Pairs, CountDistinct).with_partitioner(ByInitial));
    sluice_cli::job_main(jobs)
}
