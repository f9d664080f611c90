//! The StoryMaker character adapter (reference spec §2–4): the Positional-aware Perceiver
//! Resampler that makes the image tokens, and the attention processors (LoRA on every attention
//! projection, decoupled image-token cross-attention) attached to the UNet's hooks.

pub mod ip_attention;
pub mod resampler;

pub use ip_attention::{attach_ip_adapter, processor_names, AdapterScales, StoryMakerAttention};
pub use resampler::{PositionalPerceiverResampler, PprConfig};
