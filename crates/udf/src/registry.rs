//! Jobs by name.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::Job;

/// A set of jobs that an executor can run, by name.
///
/// ```
/// use sluice_udf::{JobDef, Registry, SumCombiner};
/// use sluice_udf::wordcount::{WordCountMapper, WordCountReducer};
///
/// let mut jobs = Registry::new();
/// jobs.register(JobDef::new("wc", WordCountMapper, WordCountReducer).with_combiner(SumCombiner));
/// assert_eq!(jobs.names(), ["wc"]);
/// assert!(jobs.get("wc").is_some());
/// assert_eq!(Registry::builtin().names(), ["count", "sort", "train-step", "wordcount"]);
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    jobs: BTreeMap<String, Arc<dyn Job>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The jobs that ship with Sluice.
    pub fn builtin() -> Self {
        let mut r = Self::new();
        r.register(crate::wordcount::job());
        r.register(crate::count::job());
        r.register(crate::sort::job());
        r.register(crate::train_step::job());
        r
    }

    /// Adds (or replaces) a job under its own name.
    pub fn register(&mut self, job: impl Job + 'static) {
        self.jobs.insert(job.name().to_string(), Arc::new(job));
    }

    /// The job called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Job>> {
        self.jobs.get(name).cloned()
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.jobs.keys().cloned().collect()
    }
}
