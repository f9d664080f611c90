//! A seeded standard-normal generator for initial latents and stochastic scheduler steps.
//!
//! candle cannot seed its CPU RNG, and a generator that depends on the device would make the
//! same seed give different images on CPU and GPU. So noise is drawn on the host from our own
//! counter-based generator (splitmix64 → Box–Muller) and moved to the device: a panel's seed
//! reproduces the same image on any machine.

use candle_core::{DType, Device, Shape, Tensor};

use crate::sampling::NoiseSource;

#[derive(Debug, Clone)]
pub struct SeededNormal {
    state: u64,
    spare: Option<f32>,
}

impl SeededNormal {
    pub fn new(seed: u64) -> SeededNormal {
        SeededNormal { state: seed ^ 0x5DEE_CE66_D1CE_4E5B, spare: None }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1], never 0 (so the logarithm below is finite).
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    pub fn sample(&mut self) -> f32 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some((r * theta.sin()) as f32);
        (r * theta.cos()) as f32
    }

    /// A tensor of N(0, 1) values of `shape` in `dtype` on `device`.
    pub fn tensor(&mut self, shape: &Shape, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let n = shape.elem_count();
        let values: Vec<f32> = (0..n).map(|_| self.sample()).collect();
        Tensor::from_vec(values, shape.clone(), &Device::Cpu)?.to_dtype(dtype)?.to_device(device)
    }
}

impl NoiseSource for SeededNormal {
    fn noise(&mut self, _: usize, shape: &Shape, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        self.tensor(shape, dtype, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_noise_and_unit_statistics() {
        let mut a = SeededNormal::new(42);
        let mut b = SeededNormal::new(42);
        let xs: Vec<f32> = (0..100_000).map(|_| a.sample()).collect();
        let ys: Vec<f32> = (0..100_000).map(|_| b.sample()).collect();
        assert_eq!(xs, ys);
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "mean {mean} var {var}");
        let mut c = SeededNormal::new(43);
        assert_ne!(c.sample(), xs[0]);
    }
}
