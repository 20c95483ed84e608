//! The error type of the core crate.

/// Errors raised while validating domain values.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A size such as `64MiB` could not be parsed.
    #[error("invalid size '{input}': {reason} (use a number with an optional unit, e.g. 64MiB, 256KiB, 1GiB)")]
    InvalidSize {
        /// What the user wrote.
        input: String,
        /// Why it was refused.
        reason: String,
    },
    /// A job parameter Sluice sets or reads that does not hold what it must.
    #[error("invalid job parameter {0}")]
    InvalidParam(String),
    /// An output format Sluice cannot write.
    #[error("unknown output format '{0}' (use parquet, tsv, csv, jsonl or text)")]
    UnknownFormat(String),
    /// An input format Sluice cannot read.
    #[error("unknown input format '{0}' (use text, csv, csv-noheader, jsonl or parquet)")]
    UnknownInputFormat(String),
    /// A state name that is not part of a state machine.
    #[error("unknown {machine} state '{value}'")]
    UnknownState {
        /// Which state machine.
        machine: &'static str,
        /// The value received.
        value: String,
    },
    /// A task kind other than map or reduce.
    #[error("unknown task kind '{0}' (expected map or reduce)")]
    UnknownTaskKind(String),
    /// A transition that the state machine does not allow.
    #[error("illegal {machine} transition {from} -> {to}")]
    IllegalTransition {
        /// Which state machine.
        machine: &'static str,
        /// Current state.
        from: &'static str,
        /// Requested state.
        to: &'static str,
    },
}
