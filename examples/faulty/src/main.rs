//! A job binary whose jobs fail on purpose, to show that a user's crash fails a task attempt
//! and never the executor: `panic` panics, `abort` calls `std::process::abort()`, `oom`
//! allocates until the worker's memory limit stops it. `lines` works: it counts line lengths.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use sluice_udf::{Emitter, JobDef, Mapper, Reducer, Registry, SumCombiner};

/// What the mapper does with its first line.
#[derive(Clone, Copy)]
enum Fault {
    Panic,
    Abort,
    Oom,
    None,
}

struct Faulty(Fault);

impl Mapper for Faulty {
    type Key = u64;
    type Value = i64;

    fn map(&self, line: &str, out: &mut Emitter<'_, u64, i64>) {
        match self.0 {
            Fault::Panic => panic!("faulty job: deliberate panic on line {line:?}"),
            Fault::Abort => std::process::abort(),
            Fault::Oom => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page so the memory is really used.
                    hog.push(vec![1u8; 64 << 20]);
                }
            }
            Fault::None => out.emit(line.len() as u64, 1),
        }
    }
}

/// One output row: a line length and how many lines have it.
#[derive(Serialize, Deserialize)]
struct Row {
    len: u64,
    lines: i64,
}

struct Count;

impl Reducer for Count {
    type Key = u64;
    type Value = i64;
    type Out = Row;

    fn reduce(&self, len: u64, values: &mut dyn Iterator<Item = i64>, out: &mut Vec<Row>) {
        out.push(Row {
            len,
            lines: values.sum(),
        });
    }
}

fn main() -> ExitCode {
    let mut jobs = Registry::new();
    for (name, fault) in [
        ("panic", Fault::Panic),
        ("abort", Fault::Abort),
        ("oom", Fault::Oom),
        ("lines", Fault::None),
    ] {
        jobs.register(JobDef::new(name, Faulty(fault), Count).with_combiner(SumCombiner));
    }
    sluice_worker::main(jobs)
}
