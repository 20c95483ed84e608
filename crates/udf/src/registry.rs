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
    models: crate::train_step::Models,
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

    /// Adds a model that `sluice train --model NAME[:ARGS]` (run through this binary) can
    /// train: `factory` makes it from `ARGS`. This (re)registers the `train-step` job with the
    /// models registered so far.
    ///
    /// ```
    /// use sluice_udf::train::LogisticRegression;
    /// let mut jobs = sluice_udf::Registry::new();
    /// jobs.register_model("my-linear", |_args| Ok(Box::new(LogisticRegression)));
    /// assert!(jobs.models().get("my-linear").is_ok());
    /// assert_eq!(jobs.names(), ["train-step"]);
    /// ```
    pub fn register_model(
        &mut self,
        name: &str,
        factory: impl Fn(&str) -> Result<Box<dyn crate::train::Model>, crate::UdfError>
            + Send
            + Sync
            + 'static,
    ) {
        self.models.add(name, factory);
        self.register(crate::train_step::job_with(self.models.clone()));
    }

    /// The models registered with [`Registry::register_model`] (the built-in ones are always
    /// known too).
    pub fn models(&self) -> &crate::train_step::Models {
        &self.models
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
