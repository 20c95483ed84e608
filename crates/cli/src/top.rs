//! The most frequent rows of a `(key, count)` output, printed after `run`.

use sluice_core::OutputFormat;

use crate::error::CliError;

/// Prints the `n` rows with the largest second column, ties broken by the first.
pub fn print_top(output: &str, format: OutputFormat, n: usize) -> Result<(), CliError> {
    let mut rows = sluice_storage::read_key_counts(output, format)?;
    if rows.is_empty() {
        return Ok(());
    }
    let n = n.min(rows.len());
    rows.select_nth_unstable_by(n - 1, |a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(n);
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    println!("top {n}:");
    for (k, c) in rows {
        println!("{c:>12}  {k}");
    }
    Ok(())
}
