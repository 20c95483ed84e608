//! GPUs for models, through cudarc with the CUDA libraries loaded at run time: a build (the
//! `gpu` feature) needs no CUDA, and a machine without a GPU or driver reports none and why.
//! The MLP's GPU path runs its two large matrix products in cuBLAS and the rest on the host,
//! with the CPU path's numerics within float tolerance.

use crate::train::{Batch, Metrics, Mlp, Params};

/// The GPUs this process can use, or why none.
pub fn discover() -> Result<usize, String> {
    imp::discover()
}

/// The MLP's summed gradient over `batch` on GPU `device`, as [`crate::train::Model::gradient`]
/// computes it on the CPU.
pub fn mlp_gradient(
    mlp: &Mlp,
    batch: &Batch<'_>,
    params: &Params,
    device: usize,
) -> Result<(Params, Metrics), String> {
    imp::mlp_gradient(mlp, batch, params, device)
}

#[cfg(not(feature = "gpu"))]
mod imp {
    use super::*;

    pub fn discover() -> Result<usize, String> {
        Err("this build has no GPU support (build sluice-udf with the `gpu` feature)".into())
    }

    pub fn mlp_gradient(
        _: &Mlp,
        _: &Batch<'_>,
        _: &Params,
        _: usize,
    ) -> Result<(Params, Metrics), String> {
        Err(discover().unwrap_err())
    }
}

#[cfg(feature = "gpu")]
// cudarc's library probe and cuBLAS calls are `unsafe fn`s; each use says why it holds.
#[allow(unsafe_code)]
mod imp {
    use cudarc::cublas::sys::cublasOperation_t::{CUBLAS_OP_N, CUBLAS_OP_T};
    use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
    use cudarc::driver::CudaContext;

    use super::*;
    use crate::train::Tensor;

    pub fn discover() -> Result<usize, String> {
        // SAFETY: only tries to load the driver library (dlopen), calling nothing in it.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("no CUDA driver library (libcuda.so) on this machine".into());
        }
        // SAFETY: as above, for cuBLAS.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err("no cuBLAS library (libcublas.so) on this machine".into());
        }
        match CudaContext::device_count() {
            Ok(n) if n > 0 => Ok(n as usize),
            Ok(_) => Err("the CUDA driver reports no GPU".into()),
            Err(e) => Err(format!("the CUDA driver failed: {e:?}")),
        }
    }

    fn fail(device: usize, what: &str, err: impl std::fmt::Debug) -> String {
        format!("GPU {device}: {what}: {err:?}")
    }

    fn sigmoid(z: f32) -> f32 {
        1.0 / (1.0 + (-z).exp())
    }

    pub fn mlp_gradient(
        mlp: &Mlp,
        batch: &Batch<'_>,
        params: &Params,
        device: usize,
    ) -> Result<(Params, Metrics), String> {
        discover()?;
        let (rows, d, h) = (batch.rows(), batch.dim, mlp.hidden);
        let (w1, b1, w2, b2) = (
            &params.0[0].data,
            &params.0[1].data,
            &params.0[2].data,
            params.0[3].data[0],
        );
        let ctx = CudaContext::new(device).map_err(|x| fail(device, "opening", x))?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(|x| fail(device, "cuBLAS", x))?;
        let x_dev = stream
            .clone_htod(batch.features)
            .map_err(|x| fail(device, "copying X", x))?;
        let w1_dev = stream
            .clone_htod(w1.as_slice())
            .map_err(|x| fail(device, "copying W1", x))?;
        let mut pre_dev = stream
            .alloc_zeros::<f32>(rows * h)
            .map_err(|x| fail(device, "allocating", x))?;
        // Row-major H_pre (rows x h) = X (rows x d) . W1^T (d x h): in cuBLAS's column-major
        // terms, H_pre^T (h x rows) = op(W1 buffer, a d x h matrix)^T . X buffer (d x rows).
        let forward = GemmConfig {
            transa: CUBLAS_OP_T,
            transb: CUBLAS_OP_N,
            m: h as i32,
            n: rows as i32,
            k: d as i32,
            alpha: 1.0f32,
            lda: d as i32,
            ldb: d as i32,
            beta: 0.0f32,
            ldc: h as i32,
        };
        // SAFETY: the buffers hold h*d, d*rows and h*rows floats, as the sizes above say.
        unsafe { blas.gemm(forward, &w1_dev, &x_dev, &mut pre_dev) }
            .map_err(|x| fail(device, "forward gemm", x))?;
        let pre = stream
            .clone_dtoh(&pre_dev)
            .map_err(|x| fail(device, "copying back", x))?;
        let mut grad = params.zeros_like();
        let mut m = Metrics::default();
        let mut dh = vec![0f32; rows * h];
        let mut hid = vec![0f32; h];
        for r in 0..rows {
            for j in 0..h {
                hid[j] = (pre[r * h + j] + b1[j]).max(0.0);
            }
            let z = hid.iter().zip(w2).map(|(a, b)| a * b).sum::<f32>() + b2;
            let y = batch.labels[r];
            let dz = sigmoid(z) - y;
            for j in 0..h {
                grad.0[2].data[j] += dz * hid[j];
                if hid[j] > 0.0 {
                    dh[r * h + j] = dz * w2[j];
                    grad.0[1].data[j] += dz * w2[j];
                }
            }
            grad.0[3].data[0] += dz;
            let (zf, yf) = (z as f64, y as f64);
            m.loss += zf.max(0.0) - zf * yf + (-zf.abs()).exp().ln_1p();
            m.correct += u64::from((z > 0.0) == (y > 0.5));
            m.rows += 1;
        }
        // Row-major dW1 (h x d) = dH^T (h x rows) . X (rows x d): column-major dW1^T (d x h) =
        // X buffer (d x rows) . op(dH buffer, an h x rows matrix)^T.
        let dh_dev = stream
            .clone_htod(dh.as_slice())
            .map_err(|x| fail(device, "copying dH", x))?;
        let mut gw1_dev = stream
            .alloc_zeros::<f32>(h * d)
            .map_err(|x| fail(device, "allocating", x))?;
        let backward = GemmConfig {
            transa: CUBLAS_OP_N,
            transb: CUBLAS_OP_T,
            m: d as i32,
            n: h as i32,
            k: rows as i32,
            alpha: 1.0f32,
            lda: d as i32,
            ldb: h as i32,
            beta: 0.0f32,
            ldc: d as i32,
        };
        // SAFETY: d*rows, h*rows and d*h floats, as the sizes above say.
        unsafe { blas.gemm(backward, &x_dev, &dh_dev, &mut gw1_dev) }
            .map_err(|x| fail(device, "backward gemm", x))?;
        grad.0[0] = Tensor {
            data: stream
                .clone_dtoh(&gw1_dev)
                .map_err(|x| fail(device, "copying back", x))?,
            ..grad.0[0].clone()
        };
        Ok((grad, m))
    }
}
