//! A job binary: a reduce-side inner join of two CSV datasets, each with a header line.
//!
//! - `customers*.csv`: `customer_id,name,country`
//! - `orders*.csv`: `order_id,customer_id,amount_cents`
//!
//! The mapper tells the datasets apart by the name of the file a record comes from
//! (`context().input_path()`), keys every record by `customer_id` and tags it as a customer
//! or an order. The reducer of a customer id emits one row per order joined with its
//! customer: `order_id, customer_id, name, country, amount_cents`. Customers without orders
//! are not emitted; orders without a customer are dropped (an inner join). A customer id
//! listed twice joins each of its orders with both rows, as SQL's inner join does.
//!
//! Bad data never fails the job; it is counted in user counters and skipped:
//!
//! - `bad_records`: a record with the wrong number of fields, an empty id or a non-numeric
//!   `amount_cents`;
//! - `orphan_orders`: an order whose customer id no customer has;
//! - `unknown_file_records`: a record of a file named neither `customers*` nor `orders*`.
//!
//! Fields are trimmed; quoted fields may hold commas (`"Smith, Ann"`) but not line breaks.
//! The job sets `--input-format csv` (header lines) itself.
//!
//! Run it on this machine, with in-process executors:
//!
//! ```text
//! cargo run -p sluice-example-csv-join -- run --input data/ --output joined/
//! ```
//!
//! or upload it to a cluster whose executors can read `data/` (it prints the counters):
//!
//! ```text
//! cargo build -p sluice-example-csv-join
//! target/debug/csv-join submit --coordinator http://127.0.0.1:7070 \
//!     --input /shared/data --output /shared/joined --wait
//! # the same with the sluice command:
//! sluice submit csv-join --binary target/debug/csv-join --input /shared/data --output /shared/joined --wait
//! ```

use std::path::Path;
use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use sluice_udf::{Emitter, InputFormat, JobDef, Mapper, Output, Reducer, Registry};

/// The dataset a file holds, from the start of its file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dataset {
    Customers,
    Orders,
}

impl Dataset {
    /// `customers*` or `orders*`; anything else (or no file: outside a map task) is `None`.
    fn of(path: Option<&str>) -> Option<Dataset> {
        let name = Path::new(path?).file_name()?.to_str()?;
        if name.starts_with("customers") {
            Some(Dataset::Customers)
        } else if name.starts_with("orders") {
            Some(Dataset::Orders)
        } else {
            None
        }
    }
}

/// A record of `customers.csv`.
#[derive(Debug, Deserialize)]
struct CustomerRow {
    customer_id: String,
    name: String,
    country: String,
}

/// A record of `orders.csv`.
#[derive(Debug, Deserialize)]
struct OrderRow {
    order_id: String,
    customer_id: String,
    amount_cents: i64,
}

/// A shuffle value: one side of the join, tagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Side {
    Customer { name: String, country: String },
    Order { order_id: String, amount_cents: i64 },
}

/// One CSV line as fields (trimmed, quotes resolved); `None` when it holds no record.
fn fields(line: &str) -> Option<csv::StringRecord> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(line.as_bytes());
    let mut record = csv::StringRecord::new();
    match reader.read_record(&mut record) {
        Ok(true) => Some(record),
        _ => None,
    }
}

/// The record as `T` when it has exactly `n` fields that parse; `None` otherwise.
fn typed<T: serde::de::DeserializeOwned>(record: &csv::StringRecord, n: usize) -> Option<T> {
    if record.len() != n {
        return None;
    }
    record.deserialize(None).ok()
}

/// Keys customers and orders by customer id, tagged by the file they come from.
///
/// It reads raw lines (`type In = str`; the engine drops each file's header line) and parses
/// them itself, so that a record with the wrong number of fields is counted, not fatal: the
/// engine's typed CSV reader fails the task on such a record.
struct TagByFile;

impl Mapper for TagByFile {
    type In = str;
    type Key = String;
    type Value = Side;

    fn map(&self, line: &str, out: &mut Emitter<'_, String, Side>) {
        if line.trim().is_empty() {
            return;
        }
        let Some(dataset) = Dataset::of(out.context().input_path()) else {
            out.count("unknown_file_records", 1);
            return;
        };
        let Some(record) = fields(line) else {
            out.count("bad_records", 1);
            return;
        };
        match dataset {
            Dataset::Customers => match typed::<CustomerRow>(&record, 3) {
                Some(c) if !c.customer_id.is_empty() => out.emit(
                    c.customer_id,
                    Side::Customer {
                        name: c.name,
                        country: c.country,
                    },
                ),
                _ => out.count("bad_records", 1),
            },
            Dataset::Orders => match typed::<OrderRow>(&record, 3) {
                Some(o) if !o.order_id.is_empty() && !o.customer_id.is_empty() => out.emit(
                    o.customer_id,
                    Side::Order {
                        order_id: o.order_id,
                        amount_cents: o.amount_cents,
                    },
                ),
                _ => out.count("bad_records", 1),
            },
        }
    }
}

/// One output row: an order with its customer's name and country.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct JoinedOrder {
    order_id: String,
    customer_id: String,
    name: String,
    country: String,
    amount_cents: i64,
}

/// Joins the orders of one customer id with its customer rows.
struct JoinOrders;

impl Reducer for JoinOrders {
    type Key = String;
    type Value = Side;
    type Out = JoinedOrder;

    fn reduce(
        &self,
        customer_id: String,
        values: &mut dyn Iterator<Item = Side>,
        out: &mut Output<'_, JoinedOrder>,
    ) {
        // Values come in no particular order: buffer both sides of this one key.
        let mut customers = Vec::new();
        let mut orders = Vec::new();
        for v in values {
            match v {
                Side::Customer { name, country } => customers.push((name, country)),
                Side::Order {
                    order_id,
                    amount_cents,
                } => orders.push((order_id, amount_cents)),
            }
        }
        if customers.is_empty() {
            out.count("orphan_orders", orders.len() as i64);
            return;
        }
        customers.sort_unstable();
        orders.sort_unstable();
        for (order_id, amount_cents) in orders {
            for (name, country) in &customers {
                out.push(JoinedOrder {
                    order_id: order_id.clone(),
                    customer_id: customer_id.clone(),
                    name: name.clone(),
                    country: country.clone(),
                    amount_cents,
                });
            }
        }
    }
}

/// The job, with its input format set. Its records never hold line breaks, so it tells the
/// planner to cut its CSV at lines (the default reads each CSV file whole).
fn job() -> JobDef<TagByFile, JoinOrders> {
    JobDef::new("csv-join", TagByFile, JoinOrders)
        .input_format(InputFormat::Csv { header: true })
        .param("sluice.csv.multiline", "false")
}

fn main() -> ExitCode {
    let mut jobs = Registry::new();
    jobs.register(job());
    sluice_cli::job_main(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_udf::{InputFormat, Split, TaskId};
    use sluice_udf::{Job, MapInput, TaskContext};

    /// Maps `text` as the whole file `name`; returns (pairs written, counters).
    fn map_file(name: &str, text: &str) -> (u64, sluice_udf::Counters) {
        let split = Split {
            path: format!("/data/{name}"),
            start: 0,
            end: text.len() as u64,
            file_len: text.len() as u64,
            rest: Vec::new(),
        };
        let ctx = TaskContext::new("t", TaskId::map(0), 0).with_split(split);
        let input = MapInput::text(text, InputFormat::Csv { header: true }, 0);
        let out = job().run_map(input, 2, &ctx).unwrap();
        (out.records_out, out.counters)
    }

    #[test]
    fn reads_csv_with_header_lines_by_default() {
        assert_eq!(
            job().defaults().input_format,
            Some(InputFormat::Csv { header: true })
        );
    }

    #[test]
    fn tags_records_by_file_and_counts_bad_ones() {
        let (n, c) = map_file(
            "customers.csv",
            "customer_id,name,country\nC1,\"Smith, Ann\",NO\nC2,Bob\n,Nobody,SE\nC3,Eve,DK\n",
        );
        assert_eq!((n, c.get("bad_records")), (2, 2));
        let (n, c) = map_file(
            "orders-2024.csv",
            "order_id,customer_id,amount_cents\nO1,C1,100\nO2,C1,12x\nO3,C2,5,extra\nO4,C9,-7\n",
        );
        assert_eq!((n, c.get("bad_records")), (2, 2));
        let (n, c) = map_file("notes.csv", "a,b\n1,2\n3,4\n");
        assert_eq!((n, c.get("unknown_file_records")), (0, 2));
    }

    #[test]
    fn joins_orders_with_their_customer_and_counts_orphans() {
        let order = |id: &str, cents| Side::Order {
            order_id: id.into(),
            amount_cents: cents,
        };
        let mut out = Output::default();
        let values = vec![
            order("O2", 5),
            Side::Customer {
                name: "Smith, Ann".into(),
                country: "NO".into(),
            },
            order("O1", 7),
        ];
        JoinOrders.reduce("C1".into(), &mut values.into_iter(), &mut out);
        let ids: Vec<_> = out.rows().iter().map(|r| r.order_id.as_str()).collect();
        assert_eq!(ids, ["O1", "O2"]);
        assert_eq!(out.rows()[0].name, "Smith, Ann");
        JoinOrders.reduce(
            "C9".into(),
            &mut vec![order("O3", 1), order("O4", 2)].into_iter(),
            &mut out,
        );
        assert_eq!(out.rows().len(), 2);
        assert_eq!(out.counters().get("orphan_orders"), 2);
    }
}
