//! Classifier-free guidance (reference spec §5.3 step 8; `SDXL-FACTS.md`, CFG).
//!
//! The UNet batch is `cat([uncond, cond])` (`[2B, ...]`, unconditional rows first) and the guided
//! prediction is `uncond + g·(cond − uncond)`. As in diffusers (`do_classifier_free_guidance`),
//! guidance is active only for `g > 1`; otherwise the UNet runs on the conditional rows alone and
//! its output is used unchanged.

use candle_core::Tensor;

use super::combine::to_compute;
use super::error::{Result, SamplingError};

/// A guidance scale and what it implies for the UNet batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    pub scale: f64,
}

impl Guidance {
    pub fn new(scale: f64) -> Self {
        Guidance { scale }
    }

    /// diffusers' `do_classifier_free_guidance`: `guidance_scale > 1`. When false, skip the
    /// unconditional pass (and the negative prompt's text encoding) entirely.
    pub fn is_active(&self) -> bool {
        self.scale > 1.0
    }

    /// Rows per sample in the UNet batch: 2 with guidance, 1 without.
    pub fn batch_multiplier(&self) -> usize {
        if self.is_active() {
            2
        } else {
            1
        }
    }

    /// The UNet batch for one input: `cat([uncond, cond], 0)` with guidance, `cond` without
    /// (for latents pass the same tensor twice).
    pub fn batch(&self, uncond: &Tensor, cond: &Tensor) -> Result<Tensor> {
        if self.is_active() {
            Ok(Tensor::cat(&[uncond, cond], 0)?)
        } else {
            Ok(cond.clone())
        }
    }

    /// Combines the UNet output of a [`Guidance::batch`] into the guided prediction `[B, ...]`:
    /// `uncond + g·(cond − uncond)` with guidance, the output unchanged without. Keeps the dtype.
    pub fn combine(&self, model_output: &Tensor) -> Result<Tensor> {
        if !self.is_active() {
            return Ok(model_output.clone());
        }
        let rows = model_output.dims().first().copied().unwrap_or(0);
        if rows == 0 || rows % 2 != 0 {
            return Err(SamplingError::OddGuidanceBatch(rows));
        }
        let uncond = model_output.narrow(0, 0, rows / 2)?;
        let cond = model_output.narrow(0, rows / 2, rows / 2)?;
        guide(&uncond, &cond, self.scale)
    }
}

/// `uncond + g·(cond − uncond)`, in the output dtype of `cond` (half precision is combined in f32).
pub fn guide(uncond: &Tensor, cond: &Tensor, scale: f64) -> Result<Tensor> {
    let dtype = cond.dtype();
    let u = to_compute(uncond, dtype)?;
    let c = to_compute(cond, dtype)?;
    Ok(((c - &u)?.affine(scale, 0.0)? + u)?.to_dtype(dtype)?)
}

/// Splits a `[2B, ...]` UNet output into its `(uncond, cond)` halves.
pub fn split_uncond_cond(model_output: &Tensor) -> Result<(Tensor, Tensor)> {
    let rows = model_output.dims().first().copied().unwrap_or(0);
    if rows == 0 || rows % 2 != 0 {
        return Err(SamplingError::OddGuidanceBatch(rows));
    }
    let halves = model_output.chunk(2, 0)?;
    match halves.as_slice() {
        [u, c] => Ok((u.clone(), c.clone())),
        _ => Err(SamplingError::OddGuidanceBatch(rows)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn guidance_activity_follows_diffusers() {
        assert!(!Guidance::new(1.0).is_active());
        assert!(!Guidance::new(0.5).is_active());
        assert!(Guidance::new(1.01).is_active());
        assert_eq!(Guidance::new(7.5).batch_multiplier(), 2);
        assert_eq!(Guidance::new(1.0).batch_multiplier(), 1);
    }

    #[test]
    fn combines_uncond_then_cond() -> Result<()> {
        let dev = Device::Cpu;
        let out = Tensor::new(&[[1.0f32, 2.0], [3.0, 6.0]], &dev)?; // row 0 uncond, row 1 cond
        let g = Guidance::new(5.0).combine(&out)?;
        assert_eq!(g.to_vec2::<f32>()?, vec![vec![11.0, 22.0]]);
        assert_eq!(Guidance::new(1.0).combine(&out)?.to_vec2::<f32>()?, out.to_vec2::<f32>()?);
        let odd = Tensor::zeros((3, 2), DType::F32, &dev)?;
        assert!(matches!(Guidance::new(2.0).combine(&odd), Err(SamplingError::OddGuidanceBatch(3))));
        let (u, c) = split_uncond_cond(&out)?;
        assert_eq!((u.dims(), c.dims()), (&[1usize, 2][..], &[1usize, 2][..]));
        let half = Guidance::new(5.0).combine(&out.to_dtype(DType::F16)?)?;
        assert_eq!(half.dtype(), DType::F16);
        let batch = Guidance::new(5.0).batch(&u, &c)?;
        assert_eq!(batch.to_vec2::<f32>()?, out.to_vec2::<f32>()?);
        Ok(())
    }
}
