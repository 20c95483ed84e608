//! Where mappers put their key/value pairs.

use std::any::Any;
use std::borrow::Borrow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;

use crate::{Combiner, Counters, TaskContext};

pub(crate) type Table<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Tables larger than this many entries are not kept for the next task.
const KEEP_MAX_CAPACITY: usize = 4 << 20;

thread_local! {
    // One emptied combiner table per thread, reused by the next map task of the same types:
    // growing a fresh table of a million entries per task costs page faults and rehashing.
    static SPARE: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

/// Takes this thread's spare table if it has the right types, else makes one.
pub(crate) fn take_table<K: 'static, V: 'static>(capacity: usize) -> Table<K, V> {
    let spare = SPARE.with(|s| s.borrow_mut().take());
    match spare.map(|b| b.downcast::<Table<K, V>>()) {
        Some(Ok(t)) => *t,
        Some(Err(other)) => {
            SPARE.with(|s| *s.borrow_mut() = Some(other));
            Table::with_capacity_and_hasher(capacity, Default::default())
        }
        None => Table::with_capacity_and_hasher(capacity, Default::default()),
    }
}

/// Keeps an emptied table for the next task on this thread.
pub(crate) fn keep_table<K: 'static, V: 'static>(mut t: Table<K, V>) {
    t.clear();
    if t.capacity() <= KEEP_MAX_CAPACITY {
        SPARE.with(|s| *s.borrow_mut() = Some(Box::new(t)));
    }
}

/// The context of code that runs outside a task (unit tests, doc examples).
static NO_TASK: std::sync::LazyLock<TaskContext> = std::sync::LazyLock::new(TaskContext::default);

/// The context of code that runs outside a task.
pub(crate) fn no_task() -> &'static TaskContext {
    &NO_TASK
}

/// Collects a map task's output; with a combiner it folds values per key as they arrive, so a
/// repeated key costs one hash lookup and no allocation. It also carries the task's context
/// and counters, as Hadoop's `Context`.
///
/// ```
/// use sluice_udf::{Emitter, SumCombiner};
///
/// let mut out: Emitter<'_, String, i64> = Emitter::new(Some(&SumCombiner), 16);
/// out.emit_ref("a", 1);
/// out.emit("a".to_string(), 2);
/// out.count("seen", 2);
/// assert_eq!(out.len(), 1); // combined into ("a", 3)
/// assert_eq!(out.counters().get("seen"), 2);
/// assert_eq!(out.context().attempt(), 1); // outside a task: a first attempt
/// ```
pub struct Emitter<'c, K, V> {
    combiner: Option<&'c dyn Combiner<K, V>>,
    table: Table<K, V>,
    list: Vec<(K, V)>,
    emitted: u64,
    ctx: &'c TaskContext,
    counters: Counters,
}

impl<'c, K: Hash + Eq, V> Emitter<'c, K, V> {
    /// An emitter outside any task, combining with `combiner` when one is given.
    pub fn new(combiner: Option<&'c dyn Combiner<K, V>>, capacity: usize) -> Self {
        Emitter {
            combiner,
            table: Table::with_capacity_and_hasher(
                if combiner.is_some() { capacity } else { 0 },
                Default::default(),
            ),
            list: Vec::new(),
            emitted: 0,
            ctx: &NO_TASK,
            counters: Counters::default(),
        }
    }

    /// Sets the task context user code sees.
    pub(crate) fn in_task(mut self, ctx: &'c TaskContext) -> Self {
        self.ctx = ctx;
        self
    }

    /// The task this map runs in.
    pub fn context(&self) -> &'c TaskContext {
        self.ctx
    }

    /// Adds `n` to the user counter `name`.
    pub fn count(&mut self, name: &str, n: i64) {
        self.counters.add(name, n);
    }

    /// The user counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Takes the user counters out.
    pub(crate) fn take_counters(&mut self) -> Counters {
        std::mem::take(&mut self.counters)
    }

    /// Emits an owned key.
    #[inline]
    pub fn emit(&mut self, key: K, value: V) {
        self.emitted += 1;
        match self.combiner {
            Some(c) => match self.table.get_mut(&key) {
                Some(acc) => c.combine(acc, value),
                None => {
                    self.table.insert(key, value);
                }
            },
            None => self.list.push((key, value)),
        }
    }

    /// Emits a borrowed key (a `&str` for a `String` key); it is copied only when first seen.
    #[inline]
    pub fn emit_ref<Q>(&mut self, key: &Q, value: V)
    where
        K: Borrow<Q> + for<'q> From<&'q Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.emitted += 1;
        match self.combiner {
            Some(c) => match self.table.get_mut(key) {
                Some(acc) => c.combine(acc, value),
                None => {
                    self.table.insert(K::from(key), value);
                }
            },
            None => self.list.push((K::from(key), value)),
        }
    }

    /// An emitter that combines into `table` (which must be empty).
    pub(crate) fn with_table(combiner: &'c dyn Combiner<K, V>, table: Table<K, V>) -> Self {
        Emitter {
            combiner: Some(combiner),
            table,
            list: Vec::new(),
            emitted: 0,
            ctx: &NO_TASK,
            counters: Counters::default(),
        }
    }

    /// Gives back the combining table (emptied by [`Emitter::drain`]).
    pub(crate) fn into_table(self) -> Table<K, V> {
        self.table
    }

    /// Pairs emitted so far, before combining.
    pub fn emitted(&self) -> u64 {
        self.emitted
    }

    /// Pairs held now (after combining).
    pub fn len(&self) -> usize {
        self.table.len() + self.list.len()
    }

    /// True when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes every held pair out.
    pub fn drain(&mut self) -> impl Iterator<Item = (K, V)> + '_ {
        self.table.drain().chain(self.list.drain(..))
    }
}

/// Collects a reduce task's output records, with the task's context and counters.
///
/// ```
/// use sluice_udf::Output;
///
/// let mut out: Output<'_, (String, i64)> = Output::default();
/// out.push(("a".into(), 3));
/// out.count("groups", 1);
/// assert_eq!(out.rows().len(), 1);
/// assert_eq!(out.counters().get("groups"), 1);
/// ```
pub struct Output<'c, T> {
    rows: Vec<T>,
    ctx: &'c TaskContext,
    counters: Counters,
}

impl<T> Default for Output<'_, T> {
    fn default() -> Self {
        Output {
            rows: Vec::new(),
            ctx: &NO_TASK,
            counters: Counters::default(),
        }
    }
}

impl<'c, T> Output<'c, T> {
    /// An output for a reduce that runs in `ctx`.
    pub(crate) fn in_task(ctx: &'c TaskContext) -> Self {
        Output {
            rows: Vec::new(),
            ctx,
            counters: Counters::default(),
        }
    }

    /// Adds an output record.
    pub fn push(&mut self, row: T) {
        self.rows.push(row);
    }

    /// The records pushed and not yet written.
    pub fn rows(&self) -> &[T] {
        &self.rows
    }

    /// The task this reduce runs in.
    pub fn context(&self) -> &'c TaskContext {
        self.ctx
    }

    /// Adds `n` to the user counter `name`.
    pub fn count(&mut self, name: &str, n: i64) {
        self.counters.add(name, n);
    }

    /// The user counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn rows_mut(&mut self) -> &mut Vec<T> {
        &mut self.rows
    }

    pub(crate) fn take_counters(&mut self) -> Counters {
        std::mem::take(&mut self.counters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SumCombiner;

    #[test]
    fn combines_borrowed_keys() {
        let mut e: Emitter<'_, String, i64> = Emitter::new(Some(&SumCombiner), 4);
        for w in ["a", "b", "a", "a"] {
            e.emit_ref(w, 1);
        }
        e.emit("b".to_string(), 5);
        assert_eq!(e.emitted(), 5);
        let mut got: Vec<_> = e.drain().collect();
        got.sort();
        assert_eq!(got, vec![("a".into(), 3), ("b".into(), 6)]);
    }

    #[test]
    fn without_combiner_keeps_every_pair() {
        let mut e: Emitter<'_, String, i64> = Emitter::new(None, 0);
        e.emit_ref("a", 1);
        e.emit_ref("a", 1);
        assert_eq!(e.len(), 2);
    }
}
