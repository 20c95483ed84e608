//! The MLP's gradient on a GPU against its CPU path. Without a GPU (or built without the `gpu`
//! feature) the test says why and checks nothing else: it is skipped, not faked.

use sluice_udf::train::{generated_rows, Batch, Mlp, Model, Rng};

#[test]
fn mlp_gradient_on_gpu_matches_the_cpu() {
    let devices = match sluice_udf::gpu::discover() {
        Ok(n) => n,
        Err(why) => {
            eprintln!("SKIPPED: no GPU: {why}");
            return;
        }
    };
    assert!(devices > 0);
    let (dim, rows) = (50, 20_000);
    let (x, y) = generated_rows(dim, 9, 0..rows);
    let batch = Batch {
        features: &x,
        labels: &y,
        dim,
    };
    let mlp = Mlp { hidden: 32 };
    let mut params = mlp.init(dim, 4);
    let mut rng = Rng(8);
    for t in &mut params.0 {
        t.data.iter_mut().for_each(|v| *v += 0.05 * rng.normal());
    }
    let (cpu, cpu_m) = mlp.gradient(&batch, &params);
    let (gpu, gpu_m) = sluice_udf::gpu::mlp_gradient(&mlp, &batch, &params, 0).unwrap();
    assert_eq!(cpu_m.rows, gpu_m.rows);
    assert!((cpu_m.loss - gpu_m.loss).abs() <= 1e-3 * cpu_m.loss.abs().max(1.0));
    for (c, g) in cpu.0.iter().zip(&gpu.0) {
        let scale = c.data.iter().fold(1.0f32, |a, v| a.max(v.abs()));
        let diff = c
            .data
            .iter()
            .zip(&g.data)
            .fold(0.0f32, |a, (p, q)| a.max((p - q).abs()));
        assert!(
            diff <= 1e-3 * scale,
            "{}: GPU differs by {diff} (scale {scale})",
            c.name
        );
    }
}
