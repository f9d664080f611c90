//! Helpers shared by the integration tests (each test crate includes this with `mod common;`).
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{DType, Tensor};

/// `tests/fixtures/parity/<name>`.
pub fn parity_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity").join(name)
}

/// Relative error `max|a − b| / max|b|` (b is the reference), computed in f32. NaN anywhere gives NaN
/// (so `err < tol` fails). Panics if the shapes differ, since that is a test failure in itself.
pub fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).expect("tensor a");
    let b = b.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).expect("tensor b");
    // f32::max ignores NaN, so propagate it explicitly
    let nan_max = |m: f32, d: f32| if m.is_nan() || d.is_nan() { f32::NAN } else { m.max(d) };
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, nan_max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0f32, f32::max);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}
