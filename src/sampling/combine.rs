//! Tensor arithmetic shared by the schedulers: coefficients are computed in f64 and applied as
//! scalars (`affine`), so the latents never leave their floating dtype family.
//!
//! Half-precision latents (f16/bf16) are updated in f32 and rounded back once, which is what
//! diffusers' Euler schedulers do explicitly (`sample.to(torch.float32)`) and what torch's f32
//! "opmath" does for UniPC's scalar products on the GPU. candle would otherwise round every f64
//! coefficient to f16 before use.

use candle_core::{DType, Tensor};

use super::error::{Result, SamplingError};

/// The dtype scheduler arithmetic runs in for latents of `dtype`.
pub(crate) fn compute_dtype(dtype: DType) -> Result<DType> {
    match dtype {
        DType::F16 | DType::BF16 => Ok(DType::F32),
        DType::F32 | DType::F64 => Ok(dtype),
        other => Err(SamplingError::NotFloat(other)),
    }
}

/// `t` converted to the compute dtype for `like` (a no-op clone when it already is).
pub(crate) fn to_compute(t: &Tensor, like: DType) -> Result<Tensor> {
    compute_dtype(t.dtype())?;
    Ok(t.to_dtype(compute_dtype(like)?)?)
}

/// `Σ cᵢ·tᵢ`, evaluated left to right; terms with a zero coefficient are skipped (so `0·x` never
/// turns an infinite `x` into NaN). All-zero coefficients give zeros shaped like the first term.
pub(crate) fn linear_combination(terms: &[(f64, &Tensor)]) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for &(c, t) in terms {
        if c == 0.0 {
            continue;
        }
        let term = if c == 1.0 { t.clone() } else { t.affine(c, 0.0)? };
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    match (acc, terms.first()) {
        (Some(a), _) => Ok(a),
        (None, Some((_, t))) => Ok(t.zeros_like()?),
        (None, None) => Err(SamplingError::Tensor(candle_core::Error::Msg("empty linear combination".into()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn combination_skips_zero_coefficients_and_keeps_dtype() -> Result<()> {
        let x = Tensor::new(&[f32::INFINITY, 2.0], &Device::Cpu)?;
        let m = Tensor::new(&[1.5f32, -3.0], &Device::Cpu)?;
        let r = linear_combination(&[(0.0, &x), (1.0, &m)])?;
        assert_eq!(r.to_vec1::<f32>()?, vec![1.5, -3.0]);
        let r = linear_combination(&[(2.0, &m), (-1.0, &m)])?;
        assert_eq!(r.to_vec1::<f32>()?, vec![1.5, -3.0]);
        assert_eq!(r.dtype(), DType::F32);
        assert_eq!(compute_dtype(DType::BF16)?, DType::F32);
        assert!(compute_dtype(DType::U8).is_err());
        Ok(())
    }
}
