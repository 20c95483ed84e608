//! A job binary that brings its own model: a linear support-vector machine (squared hinge
//! loss), registered with `Registry::register_model` and trained by Sluice's `train-step`
//! rounds like the built-in models.
//!
//! On this machine, no servers: `train-svm train --input DATA --output OUT --model linear-svm`.
//! On a cluster: add `--coordinator URL`; the binary uploads itself and every executor runs
//! the rounds in one worker process of it, which keeps the decoded data across epochs.
//! Data: `sluice generate-classification DATA --rows 5000000 --features 50`.

use std::process::ExitCode;

use sluice_udf::train::{Batch, Metrics, Model, Params, Tensor};
use sluice_udf::{Registry, UdfError};

/// `z = w·x + b`, predicting 1 when `z > 0`; loss `max(0, 1 - s z)^2` with `s = ±1`.
struct LinearSvm;

impl Model for LinearSvm {
    fn name(&self) -> &str {
        "linear-svm"
    }

    fn init(&self, dim: usize, _seed: u64) -> Params {
        Params(vec![Tensor::zeros("w", &[dim]), Tensor::zeros("b", &[1])])
    }

    fn gradient_into(&self, batch: &Batch<'_>, params: &Params, grad: &mut Params) -> Metrics {
        let (w, b) = (&params.0[0].data, params.0[1].data[0]);
        let mut m = Metrics::default();
        let (gw, gb) = grad.0.split_at_mut(1);
        for (x, &y) in batch.features.chunks_exact(batch.dim).zip(batch.labels) {
            let z = x.iter().zip(w).map(|(a, b)| a * b).sum::<f32>() + b;
            let s = if y > 0.5 { 1.0 } else { -1.0 };
            let slack = (1.0 - s * z).max(0.0);
            let dz = -2.0 * s * slack;
            for (g, a) in gw[0].data.iter_mut().zip(x) {
                *g += dz * a;
            }
            gb[0].data[0] += dz;
            m.loss += f64::from(slack * slack);
            m.correct += u64::from((z > 0.0) == (y > 0.5));
            m.rows += 1;
        }
        m
    }
}

fn main() -> ExitCode {
    let mut jobs = Registry::new();
    jobs.register_model("linear-svm", |args| match args {
        "" => Ok(Box::new(LinearSvm) as Box<dyn Model>),
        other => Err(UdfError::Param(format!(
            "linear-svm takes no arguments, got '{other}'"
        ))),
    });
    sluice_cli::job_main(jobs)
}
