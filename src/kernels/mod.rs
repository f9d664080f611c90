//! Our own GPU kernels (issue 9): candle's CUDA path is launch-bound and unfused for SDXL (attention through a
//! materialised score matrix, ../shared/cuda/README.md), so the hot spots get kernels written for this model.
//! Each kernel has a reference path on candle ops that the CPU build uses and that the device checks compare with.

use std::sync::atomic::{AtomicBool, Ordering};

pub mod conv;
pub mod elementwise;
pub mod flash_attention;
pub mod group_norm;
pub mod profile;

static FUSED: AtomicBool = AtomicBool::new(true);

/// Turns every fused kernel on or off process-wide (`bench unet --kernels reference` times the candle-ops path in
/// the same run).
pub fn set_fused(on: bool) {
    FUSED.store(on, Ordering::Relaxed);
}

pub fn fused_enabled() -> bool {
    FUSED.load(Ordering::Relaxed)
}

/// Whether the fused CUDA kernels apply to this tensor: a `cuda` build, fusing on, a CUDA tensor. Everywhere else
/// the layers run their reference candle ops, exactly as the CPU parity tests pin them.
pub fn fuse_on(x: &candle_core::Tensor) -> bool {
    cfg!(feature = "cuda") && fused_enabled() && x.device().is_cuda()
}
