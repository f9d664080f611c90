//! Neural networks, one file (or folder) per model. Each has a Config, a `new(vb, cfg)` whose
//! VarBuilder paths mirror the checkpoint's key names, and a `forward`.

pub mod adapter;
pub mod attention;
pub mod clip_encoder;
pub mod clip_text;
pub mod clip_vision;
pub mod controlnet;
pub mod tokenizer;
pub mod unet;
pub mod vae;
