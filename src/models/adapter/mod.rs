//! The StoryMaker character adapter (reference spec §2–4). This version has the attention half:
//! LoRA on every attention projection and the decoupled image-token cross-attention, attached
//! to the UNet's attention hooks. The PPR resampler that makes the image tokens comes next.

pub mod ip_attention;

pub use ip_attention::{attach_ip_adapter, processor_names, AdapterScales, StoryMakerAttention};
