//! Training as a job type: models with named f32 parameters, their gradients on CPU (rayon,
//! with a fixed reduction order so results do not depend on thread timing), the optimizers
//! that turn averaged gradients into updates, checkpoints in the safetensors format, and a
//! generated classification dataset with known structure.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::UdfError;

/// Rows per unit of parallel gradient work: the partial sums are added in chunk order, so the
/// result is the same whatever the number of threads.
const GRAD_CHUNK_ROWS: usize = 4096;

/// One named parameter tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Its name (`w`, `b`, `w1`, ...).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(name: &str, shape: &[usize]) -> Self {
        Tensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }
}

/// A model's parameters (or gradients, or optimizer moments of the same shapes), in a fixed
/// order.
#[derive(Debug, Clone, PartialEq)]
pub struct Params(pub Vec<Tensor>);

impl Params {
    /// The same shapes, all zeros.
    pub fn zeros_like(&self) -> Params {
        Params(
            self.0
                .iter()
                .map(|t| Tensor::zeros(&t.name, &t.shape))
                .collect(),
        )
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.0.iter().find(|t| t.name == name)
    }

    /// `self += a * other`, tensor by tensor.
    pub fn add_scaled(&mut self, a: f32, other: &Params) {
        for (t, o) in self.0.iter_mut().zip(&other.0) {
            for (x, y) in t.data.iter_mut().zip(&o.data) {
                *x += a * y;
            }
        }
    }

    /// The largest absolute difference from `other` (shapes must match).
    pub fn max_abs_diff(&self, other: &Params) -> f32 {
        self.0
            .iter()
            .zip(&other.0)
            .flat_map(|(a, b)| a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()))
            .fold(0.0, f32::max)
    }
}

/// A mini-batch of dense features (row-major, `rows` × `dim`) and 0/1 labels.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Features, row-major.
    pub features: &'a [f32],
    /// One label per row, 0 or 1.
    pub labels: &'a [f32],
    /// Features per row.
    pub dim: usize,
}

impl Batch<'_> {
    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    fn slice(&self, from: usize, to: usize) -> Batch<'_> {
        Batch {
            features: &self.features[from * self.dim..to * self.dim],
            labels: &self.labels[from..to],
            dim: self.dim,
        }
    }
}

/// What a gradient pass measured besides the gradient.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metrics {
    /// Summed loss over the rows.
    pub loss: f64,
    /// Rows predicted right.
    pub correct: u64,
    /// Rows seen.
    pub rows: u64,
}

impl Metrics {
    fn add(&mut self, o: &Metrics) {
        self.loss += o.loss;
        self.correct += o.correct;
        self.rows += o.rows;
    }
}

/// A model trained by Sluice: parameters as named f32 tensors and the gradient of its loss.
pub trait Model: Send + Sync {
    /// The model's name, for checkpoints.
    fn name(&self) -> &str;

    /// Initial parameters for `dim` features, from `seed` (the same seed gives the same values).
    fn init(&self, dim: usize, seed: u64) -> Params;

    /// Adds the gradient of the loss summed over `batch` to `grad` (same shapes as `params`)
    /// and returns the summed loss and the rows predicted right; one thread.
    fn gradient_into(&self, batch: &Batch<'_>, params: &Params, grad: &mut Params) -> Metrics;

    /// The summed gradient over `batch` on all cores: chunks of `GRAD_CHUNK_ROWS` (4096) rows in
    /// parallel, their sums added in chunk order (deterministic).
    fn gradient(&self, batch: &Batch<'_>, params: &Params) -> (Params, Metrics) {
        let chunks: Vec<(Params, Metrics)> = (0..batch.rows().div_ceil(GRAD_CHUNK_ROWS))
            .into_par_iter()
            .map(|c| {
                let from = c * GRAD_CHUNK_ROWS;
                let to = (from + GRAD_CHUNK_ROWS).min(batch.rows());
                let mut g = params.zeros_like();
                let m = self.gradient_into(&batch.slice(from, to), params, &mut g);
                (g, m)
            })
            .collect();
        let mut grad = params.zeros_like();
        let mut metrics = Metrics::default();
        for (g, m) in &chunks {
            grad.add_scaled(1.0, g);
            metrics.add(m);
        }
        (grad, metrics)
    }

    /// The summed gradient over `batch` on CUDA device `device` (an ordinal of this process,
    /// as [`crate::TaskContext::gpus`] gives), with [`Model::gradient`]'s numerics within
    /// float tolerance; `None` when the model has no GPU path (it runs on the CPU then).
    fn gradient_gpu(
        &self,
        batch: &Batch<'_>,
        params: &Params,
        device: u32,
    ) -> Option<Result<(Params, Metrics), String>> {
        let _ = (batch, params, device);
        None
    }
}

/// `a · b` with eight partial sums, which the compiler keeps in vector registers (one running
/// sum is a chain of dependent adds that it may not reorder, so cannot vectorise).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Binary cross-entropy of a logit `z` against label `y`, computed stably.
fn bce_with_logits(z: f32, y: f32) -> f64 {
    let z = z as f64;
    let y = y as f64;
    z.max(0.0) - z * y + (-z.abs()).exp().ln_1p()
}

/// The seeded generator of initial weights and generated data.
pub use sluice_core::rng::SplitMix as Rng;

/// Logistic regression: `p = sigmoid(w·x + b)`, binary cross-entropy.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogisticRegression;

impl Model for LogisticRegression {
    fn name(&self) -> &str {
        "logistic-regression"
    }

    fn init(&self, dim: usize, _seed: u64) -> Params {
        Params(vec![Tensor::zeros("w", &[dim]), Tensor::zeros("b", &[1])])
    }

    fn gradient_into(&self, batch: &Batch<'_>, params: &Params, grad: &mut Params) -> Metrics {
        let (w, b) = (&params.0[0].data, params.0[1].data[0]);
        let mut m = Metrics::default();
        let (gw, rest) = grad.0.split_at_mut(1);
        let (gw, gb) = (&mut gw[0].data, &mut rest[0].data);
        for (x, &y) in batch.features.chunks_exact(batch.dim).zip(batch.labels) {
            let z = dot(x, w) + b;
            let d = sigmoid(z) - y;
            for (g, a) in gw.iter_mut().zip(x) {
                *g += d * a;
            }
            gb[0] += d;
            m.loss += bce_with_logits(z, y);
            m.correct += u64::from((z > 0.0) == (y > 0.5));
            m.rows += 1;
        }
        m
    }
}

/// A two-layer perceptron: `h = relu(W1 x + b1)`, `p = sigmoid(w2·h + b2)`.
#[derive(Debug, Clone, Copy)]
pub struct Mlp {
    /// Hidden units.
    pub hidden: usize,
}

impl Model for Mlp {
    fn name(&self) -> &str {
        "mlp"
    }

    fn init(&self, dim: usize, seed: u64) -> Params {
        let mut rng = Rng(seed);
        let mut w1 = Tensor::zeros("w1", &[self.hidden, dim]);
        let scale = (2.0 / dim as f32).sqrt();
        w1.data.iter_mut().for_each(|v| *v = rng.normal() * scale);
        let mut w2 = Tensor::zeros("w2", &[self.hidden]);
        let scale = (1.0 / self.hidden as f32).sqrt();
        w2.data.iter_mut().for_each(|v| *v = rng.normal() * scale);
        Params(vec![
            w1,
            Tensor::zeros("b1", &[self.hidden]),
            w2,
            Tensor::zeros("b2", &[1]),
        ])
    }

    fn gradient_into(&self, batch: &Batch<'_>, params: &Params, grad: &mut Params) -> Metrics {
        let h_n = self.hidden;
        let (w1, b1, w2, b2) = (
            &params.0[0].data,
            &params.0[1].data,
            &params.0[2].data,
            params.0[3].data[0],
        );
        let mut h = vec![0.0f32; h_n];
        let mut m = Metrics::default();
        for (x, &y) in batch.features.chunks_exact(batch.dim).zip(batch.labels) {
            for (j, hj) in h.iter_mut().enumerate() {
                let row = &w1[j * batch.dim..(j + 1) * batch.dim];
                *hj = (dot(row, x) + b1[j]).max(0.0);
            }
            let z = dot(&h, w2) + b2;
            let d = sigmoid(z) - y;
            {
                let [gw1, gb1, gw2, gb2] = &mut grad.0[..] else {
                    unreachable!("an MLP has four tensors")
                };
                for j in 0..h_n {
                    gw2.data[j] += d * h[j];
                    if h[j] > 0.0 {
                        let dh = d * w2[j];
                        gb1.data[j] += dh;
                        for (g, a) in gw1.data[j * batch.dim..(j + 1) * batch.dim]
                            .iter_mut()
                            .zip(x)
                        {
                            *g += dh * a;
                        }
                    }
                }
                gb2.data[0] += d;
            }
            m.loss += bce_with_logits(z, y);
            m.correct += u64::from((z > 0.0) == (y > 0.5));
            m.rows += 1;
        }
        m
    }

    fn gradient_gpu(
        &self,
        batch: &Batch<'_>,
        params: &Params,
        device: u32,
    ) -> Option<Result<(Params, Metrics), String>> {
        Some(crate::gpu::mlp_gradient(
            self,
            batch,
            params,
            device as usize,
        ))
    }
}

/// How averaged gradients become parameter updates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// Stochastic gradient descent with (heavy-ball) momentum.
    Sgd {
        /// Learning rate.
        lr: f32,
        /// Momentum (0 for plain SGD).
        momentum: f32,
    },
    /// Adam (Kingma & Ba), with bias correction.
    Adam {
        /// Learning rate.
        lr: f32,
        /// First-moment decay.
        beta1: f32,
        /// Second-moment decay.
        beta2: f32,
        /// Denominator guard.
        eps: f32,
    },
}

/// An optimizer's state: the step count and its moments (shapes of the parameters).
#[derive(Debug, Clone, PartialEq)]
pub struct OptState {
    /// Updates applied so far.
    pub step: u64,
    /// Momentum, or Adam's first moment.
    pub m: Params,
    /// Adam's second moment (zeros for SGD).
    pub v: Params,
}

impl OptState {
    /// The state before the first step.
    pub fn new(params: &Params) -> Self {
        OptState {
            step: 0,
            m: params.zeros_like(),
            v: params.zeros_like(),
        }
    }
}

impl Optimizer {
    /// Applies one update from `grad` (the mean gradient) with learning rate scaled by
    /// `lr_scale` (the schedule's factor for this step).
    pub fn apply(&self, params: &mut Params, grad: &Params, state: &mut OptState, lr_scale: f32) {
        state.step += 1;
        let tensors = params
            .0
            .iter_mut()
            .zip(&grad.0)
            .zip(state.m.0.iter_mut().zip(state.v.0.iter_mut()));
        for ((p, g), (m, v)) in tensors {
            match *self {
                Optimizer::Sgd { lr, momentum } => {
                    for ((p, g), m) in p.data.iter_mut().zip(&g.data).zip(m.data.iter_mut()) {
                        *m = momentum * *m + g;
                        *p -= lr * lr_scale * *m;
                    }
                }
                Optimizer::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                } => {
                    let t = state.step as i32;
                    let c1 = 1.0 - beta1.powi(t);
                    let c2 = 1.0 - beta2.powi(t);
                    let it = p
                        .data
                        .iter_mut()
                        .zip(&g.data)
                        .zip(m.data.iter_mut().zip(v.data.iter_mut()));
                    for ((p, g), (m, v)) in it {
                        *m = beta1 * *m + (1.0 - beta1) * g;
                        *v = beta2 * *v + (1.0 - beta2) * g * g;
                        *p -= lr * lr_scale * (*m / c1) / ((*v / c2).sqrt() + eps);
                    }
                }
            }
        }
    }
}

/// Writes parameters and optimizer state as safetensors (`NAME`, `m.NAME`, `v.NAME`) with
/// `metadata` (epoch, metrics, data hash, ...) in the header.
pub fn checkpoint_bytes(
    params: &Params,
    state: &OptState,
    metadata: HashMap<String, String>,
) -> Result<Vec<u8>, UdfError> {
    use safetensors::tensor::{Dtype, TensorView};
    let mut metadata = metadata;
    metadata.insert("optimizer_step".into(), state.step.to_string());
    let mut named: Vec<(String, &Tensor)> = Vec::new();
    for t in &params.0 {
        named.push((t.name.clone(), t));
    }
    for t in &state.m.0 {
        named.push((format!("m.{}", t.name), t));
    }
    for t in &state.v.0 {
        named.push((format!("v.{}", t.name), t));
    }
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = named
        .into_iter()
        .map(|(n, t)| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (n, b, t.shape.clone())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| UdfError::Output(format!("checkpoint tensor {n}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, Some(metadata))
        .map_err(|e| UdfError::Output(format!("writing a checkpoint: {e}")))
}

/// Reads a checkpoint written by [`checkpoint_bytes`] for parameters shaped like `like`.
pub fn read_checkpoint(
    bytes: &[u8],
    like: &Params,
) -> Result<(Params, OptState, HashMap<String, String>), UdfError> {
    use safetensors::SafeTensors;
    let bad = |e: String| UdfError::Input(format!("reading a checkpoint: {e}"));
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let load = |prefix: &str| -> Result<Params, UdfError> {
        like.0
            .iter()
            .map(|t| {
                let name = format!("{prefix}{}", t.name);
                let v = st.tensor(&name).map_err(|e| bad(format!("{name}: {e}")))?;
                if v.shape() != t.shape.as_slice() {
                    return Err(bad(format!(
                        "{name} has shape {:?}, the model {:?}",
                        v.shape(),
                        t.shape
                    )));
                }
                let data = v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                Ok(Tensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    data,
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Params)
    };
    let step = metadata
        .get("optimizer_step")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let state = OptState {
        step,
        m: load("m.")?,
        v: load("v.")?,
    };
    Ok((load("")?, state, metadata))
}

/// A generated binary classification dataset with known structure: features standard normal,
/// label 1 when `w*·x + noise > 0` for a hidden `w*` drawn from `seed`. Row `i` depends only
/// on `(seed, i)`, so any range of rows can be generated alone.
pub fn generated_rows(dim: usize, seed: u64, rows: std::ops::Range<u64>) -> (Vec<f32>, Vec<f32>) {
    let mut truth = Rng(seed ^ 0x5EED);
    let w: Vec<f32> = (0..dim).map(|_| truth.normal()).collect();
    let mut features = Vec::with_capacity((rows.end - rows.start) as usize * dim);
    let mut labels = Vec::with_capacity((rows.end - rows.start) as usize);
    for i in rows {
        let mut rng = Rng(seed.wrapping_mul(0x100_0000_01B3) ^ i.wrapping_mul(0x9E37_79B9));
        let start = features.len();
        features.extend((0..dim).map(|_| rng.normal()));
        let z: f32 = features[start..].iter().zip(&w).map(|(a, b)| a * b).sum();
        labels.push(if z + 0.5 * rng.normal() > 0.0 {
            1.0
        } else {
            0.0
        });
    }
    (features, labels)
}

#[cfg(test)]
mod tests {

    #[test]
    fn dot_matches_the_plain_sum() {
        for n in [0, 1, 7, 8, 9, 50, 133] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| f64::from(x * y)).sum();
            assert!((f64::from(dot(&a, &b)) - plain).abs() < 1e-4, "n = {n}");
        }
    }

    use super::*;

    /// The analytic gradient agrees with central finite differences of the loss.
    fn check_gradient(model: &dyn Model, dim: usize) {
        let (x, y) = generated_rows(dim, 7, 0..64);
        let batch = Batch {
            features: &x,
            labels: &y,
            dim,
        };
        let mut params = model.init(dim, 3);
        let mut rng = Rng(11);
        for t in &mut params.0 {
            t.data.iter_mut().for_each(|v| *v += 0.1 * rng.normal());
        }
        let (grad, _) = model.gradient(&batch, &params);
        let loss = |p: &Params| model.gradient(&batch, p).1.loss;
        for (ti, t) in params.0.iter().enumerate() {
            for i in (0..t.data.len()).step_by((t.data.len() / 5).max(1)) {
                let h = 1e-2f32;
                let mut plus = params.clone();
                plus.0[ti].data[i] += h;
                let mut minus = params.clone();
                minus.0[ti].data[i] -= h;
                let numeric = (loss(&plus) - loss(&minus)) / (2.0 * h as f64);
                let analytic = grad.0[ti].data[i] as f64;
                assert!(
                    (numeric - analytic).abs() <= 2e-2 * (1.0 + numeric.abs()),
                    "{} {}[{i}]: numeric {numeric} analytic {analytic}",
                    model.name(),
                    t.name
                );
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_gradient(&LogisticRegression, 6);
        check_gradient(&Mlp { hidden: 5 }, 6);
    }

    #[test]
    fn the_parallel_gradient_is_the_ordered_sum_of_chunks() {
        let dim = 8;
        let (x, y) = generated_rows(dim, 1, 0..10_000);
        let batch = Batch {
            features: &x,
            labels: &y,
            dim,
        };
        let model = Mlp { hidden: 4 };
        let p = model.init(dim, 2);
        let (a, ma) = model.gradient(&batch, &p);
        let (b, mb) = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| model.gradient(&batch, &p));
        assert_eq!(a, b, "the same bits on any number of threads");
        assert_eq!(ma, mb);
    }

    #[test]
    fn training_learns_the_generated_structure() {
        let dim = 10;
        let (x, y) = generated_rows(dim, 5, 0..20_000);
        let batch = Batch {
            features: &x,
            labels: &y,
            dim,
        };
        for (model, opt) in [
            (
                &LogisticRegression as &dyn Model,
                Optimizer::Sgd {
                    lr: 0.5,
                    momentum: 0.9,
                },
            ),
            (
                &Mlp { hidden: 8 } as &dyn Model,
                Optimizer::Adam {
                    lr: 0.05,
                    beta1: 0.9,
                    beta2: 0.999,
                    eps: 1e-8,
                },
            ),
        ] {
            let mut p = model.init(dim, 1);
            let mut st = OptState::new(&p);
            let mut last = Metrics::default();
            for _ in 0..60 {
                let (mut g, m) = model.gradient(&batch, &p);
                for t in &mut g.0 {
                    t.data.iter_mut().for_each(|v| *v /= m.rows as f32);
                }
                opt.apply(&mut p, &g, &mut st, 1.0);
                last = m;
            }
            let acc = last.correct as f64 / last.rows as f64;
            assert!(acc > 0.85, "{} reached only {acc}", model.name());
        }
    }

    #[test]
    fn checkpoints_round_trip_parameters_state_and_metadata() {
        let model = Mlp { hidden: 3 };
        let mut p = model.init(4, 9);
        let mut st = OptState::new(&p);
        let g = {
            let (x, y) = generated_rows(4, 2, 0..100);
            model
                .gradient(
                    &Batch {
                        features: &x,
                        labels: &y,
                        dim: 4,
                    },
                    &p,
                )
                .0
        };
        Optimizer::Adam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
        }
        .apply(&mut p, &g, &mut st, 1.0);
        let meta = HashMap::from([("epoch".to_string(), "2".to_string())]);
        let bytes = checkpoint_bytes(&p, &st, meta).unwrap();
        let (p2, st2, meta2) = read_checkpoint(&bytes, &model.init(4, 0)).unwrap();
        assert_eq!(p2, p);
        assert_eq!(st2, st);
        assert_eq!(meta2.get("epoch").map(String::as_str), Some("2"));
        // A checkpoint of another shape is refused, naming the tensor.
        let err = read_checkpoint(&bytes, &Mlp { hidden: 4 }.init(4, 0)).unwrap_err();
        assert!(err.to_string().contains("w1"), "{err}");
    }
}
