//! A job binary: vectorised clean-up of sensor readings in Parquet, with a per-sensor z-score.
//!
//! Input: Parquet files with the columns `sensor` (Utf8, names with stray whitespace and mixed
//! case), `ts` (Int64) and `temp_f` (Float64, nullable); other columns are ignored.
//!
//! The batch mapper works on whole Arrow record batches: it drops the rows without a
//! temperature (counted in the user counter `dropped_null_temp`) or without a sensor
//! (`dropped_null_sensor`), trims and lower-cases the sensor names and converts Fahrenheit to
//! Celsius (`temp_c`). Rows are grouped by the normalised `sensor`. The batch reducer writes,
//! per sensor and sorted by `ts` (nulls first), the columns `sensor, ts, temp_c, temp_z`, where
//! `temp_z` is the z-score of `temp_c` within its sensor (population standard deviation; a
//! sensor whose readings are all equal gets 0.0).
//!
//! The job sets `--input-format parquet` itself. Run it on this machine:
//!
//! ```text
//! cargo run -p sluice-example-parquet-normalise -- run --input readings/ --output normalised/
//! ```
//!
//! or upload it to a cluster whose executors can read `readings/`:
//!
//! ```text
//! cargo build -p sluice-example-parquet-normalise
//! target/debug/parquet-normalise submit --coordinator http://127.0.0.1:7070 \
//!     --input /shared/readings --output /shared/normalised --wait
//! # the same with the sluice command:
//! sluice submit parquet-normalise --binary target/debug/parquet-normalise \
//!     --input /shared/readings --output /shared/normalised --wait
//! ```

use std::ops::Range;
use std::process::ExitCode;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use arrow_select::filter::filter;
use arrow_select::take::take;
use sluice_udf::{
    BatchEmitter, BatchJob, BatchMapper, BatchReducer, InputFormat, Registry, UdfError,
};

/// The column `name` of `batch` as array type `T`, or an error naming what the input lacks.
fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str, ty: &str) -> Result<&'a T, UdfError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            let have: Vec<String> = batch
                .schema()
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect();
            UdfError::User(format!(
                "parquet-normalise: the input needs a column `{name}` of type {ty}; it has {}",
                have.join(", ")
            ))
        })
}

/// The rows between mapper and reducer: the key column `sensor`, `ts` and `temp_c`.
fn mapped_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("sensor", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, true),
        Field::new("temp_c", DataType::Float64, false),
    ]))
}

/// Drops rows without a temperature or sensor, normalises sensor names, converts to Celsius.
struct Normalise;

impl BatchMapper for Normalise {
    fn schema(&self) -> SchemaRef {
        mapped_schema()
    }

    fn map_batch(&self, batch: &RecordBatch, out: &mut BatchEmitter<'_>) -> Result<(), UdfError> {
        let sensor = column::<StringArray>(batch, "sensor", "Utf8")?;
        let ts = column::<Int64Array>(batch, "ts", "Int64")?;
        let temp_f = column::<Float64Array>(batch, "temp_f", "Float64")?;
        let no_sensor = (0..batch.num_rows())
            .filter(|&i| temp_f.is_valid(i) && sensor.is_null(i))
            .count();
        out.count("dropped_null_temp", temp_f.null_count() as i64);
        if no_sensor > 0 {
            out.count("dropped_null_sensor", no_sensor as i64);
        }
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| Some(temp_f.is_valid(i) && sensor.is_valid(i)))
            .collect();
        // `filter` keeps each array's type, so the casts below cannot fail.
        let sensor: StringArray = filter(sensor, &keep)?
            .as_string::<i32>()
            .iter()
            .map(|s| s.map(|s| s.trim().to_lowercase()))
            .collect();
        let ts = filter(ts, &keep)?;
        let temp_c = filter(temp_f, &keep)?
            .as_primitive::<Float64Type>()
            .unary::<_, Float64Type>(|f| (f - 32.0) * 5.0 / 9.0);
        out.emit(RecordBatch::try_new(
            self.schema(),
            vec![Arc::new(sensor), ts, Arc::new(temp_c)],
        )?);
        Ok(())
    }
}

/// Sorts each sensor's rows by `ts` and adds the z-score of `temp_c` within the sensor.
struct ZScores;

impl BatchReducer for ZScores {
    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("sensor", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, true),
            Field::new("temp_c", DataType::Float64, false),
            Field::new("temp_z", DataType::Float64, false),
        ]))
    }

    fn reduce_batch(
        &self,
        rows: &RecordBatch,
        groups: &[Range<usize>],
        out: &mut BatchEmitter<'_>,
    ) -> Result<(), UdfError> {
        let ts = column::<Int64Array>(rows, "ts", "Int64")?;
        let temp = column::<Float64Array>(rows, "temp_c", "Float64")?.values();
        let ts_at = |i: u32| ts.is_valid(i as usize).then(|| ts.value(i as usize));
        // One take over the whole batch: the row order of every group, and the z-scores in it.
        let mut order: Vec<u32> = Vec::with_capacity(rows.num_rows());
        let mut z: Vec<f64> = Vec::with_capacity(rows.num_rows());
        for g in groups {
            let start = order.len();
            order.extend(g.start as u32..g.end as u32);
            let idx = &mut order[start..];
            // Equal timestamps fall back to the temperature, so the output is deterministic.
            idx.sort_unstable_by(|&a, &b| {
                ts_at(a)
                    .cmp(&ts_at(b))
                    .then(temp[a as usize].total_cmp(&temp[b as usize]))
            });
            let t: Vec<f64> = idx.iter().map(|&i| temp[i as usize]).collect();
            z.extend(z_scores(&t));
        }
        let indices = UInt32Array::from(order);
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(4);
        for c in rows.columns() {
            cols.push(take(c, &indices, None)?);
        }
        cols.push(Arc::new(Float64Array::from(z)));
        out.emit(RecordBatch::try_new(self.schema(), cols)?);
        Ok(())
    }
}

/// Population z-scores of `t`; all zero when every value is the same (standard deviation 0).
fn z_scores(t: &[f64]) -> impl Iterator<Item = f64> + '_ {
    let n = t.len() as f64;
    let constant = t.windows(2).all(|w| w[0] == w[1]);
    let mean = t.iter().sum::<f64>() / n;
    let std = (t.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    t.iter().map(move |x| {
        if constant || std == 0.0 {
            0.0
        } else {
            (x - mean) / std
        }
    })
}

/// The job, with its input format set.
fn job() -> BatchJob<Normalise, ZScores> {
    BatchJob::new("parquet-normalise", Normalise, ZScores, &["sensor"])
        .input_format(InputFormat::Parquet)
}

fn main() -> ExitCode {
    let mut jobs = Registry::new();
    jobs.register(job());
    sluice_cli::job_main(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings(sensor: Vec<Option<&str>>, ts: Vec<i64>, temp_f: Vec<Option<f64>>) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("sensor", Arc::new(StringArray::from(sensor)) as ArrayRef),
            ("ts", Arc::new(Int64Array::from(ts)) as ArrayRef),
            ("temp_f", Arc::new(Float64Array::from(temp_f)) as ArrayRef),
        ])
        .unwrap()
    }

    #[test]
    fn reads_parquet_by_default() {
        use sluice_udf::Job;
        assert_eq!(
            job().defaults().input_format,
            Some(sluice_udf::InputFormat::Parquet)
        );
    }

    #[test]
    fn mapper_normalises_and_drops_rows_without_temperature() {
        let input = readings(
            vec![Some(" Kitchen "), Some("kitchen"), None, Some("HALL")],
            vec![3, 1, 2, 4],
            vec![Some(212.0), None, Some(50.0), Some(32.0)],
        );
        let mut out = BatchEmitter::default();
        Normalise.map_batch(&input, &mut out).unwrap();
        let b = &out.batches()[0];
        let sensors = column::<StringArray>(b, "sensor", "Utf8").unwrap();
        assert_eq!(
            sensors.iter().flatten().collect::<Vec<_>>(),
            ["kitchen", "hall"]
        );
        let temp_c = column::<Float64Array>(b, "temp_c", "Float64").unwrap();
        assert_eq!(temp_c.values().to_vec(), [100.0, 0.0]);
        assert_eq!(out.counters().get("dropped_null_temp"), 1);
        assert_eq!(out.counters().get("dropped_null_sensor"), 1);
    }

    #[test]
    fn mapper_names_a_missing_column() {
        let input = RecordBatch::try_from_iter(vec![(
            "sensor",
            Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
        )])
        .unwrap();
        let e = Normalise
            .map_batch(&input, &mut BatchEmitter::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`ts`") && e.contains("sensor: Utf8"), "{e}");
    }

    #[test]
    fn reducer_sorts_by_ts_and_scores_each_group() {
        let rows = RecordBatch::try_new(
            mapped_schema(),
            vec![
                Arc::new(StringArray::from(vec!["a", "a", "a", "b", "b"])),
                Arc::new(Int64Array::from(vec![
                    Some(30),
                    Some(10),
                    None,
                    Some(2),
                    Some(1),
                ])),
                Arc::new(Float64Array::from(vec![3.0, 1.0, 2.0, 7.5, 7.5])),
            ],
        )
        .unwrap();
        let mut out = BatchEmitter::default();
        ZScores
            .reduce_batch(&rows, &[0..3, 3..5], &mut out)
            .unwrap();
        let b = &out.batches()[0];
        let ts = column::<Int64Array>(b, "ts", "Int64").unwrap();
        assert_eq!(
            ts.iter().collect::<Vec<_>>(),
            [None, Some(10), Some(30), Some(1), Some(2)]
        );
        let z = column::<Float64Array>(b, "temp_z", "Float64")
            .unwrap()
            .values();
        let s = (2.0f64 / 3.0).sqrt();
        for (got, want) in z.iter().zip([0.0, -1.0 / s, 1.0 / s, 0.0, 0.0]) {
            assert!((got - want).abs() < 1e-12, "{z:?}");
        }
    }
}
