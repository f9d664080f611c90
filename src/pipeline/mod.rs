//! Generation: text conditioning → denoising loop with progress/cancel → VAE decode, and the
//! StoryMaker character adapter on top (spec §5.3).

pub mod noise;
pub mod preview;
pub mod sdxl;
pub mod storymaker;
pub mod txt2img;

pub use noise::SeededNormal;
pub use sdxl::{generate, generate_conditioned, Generated, SdxlModels, SingleFileConfigs, Txt2ImgRequest};
pub use storymaker::{
    generate_story, with_image_tokens, AdapterFiles, AdapterOptions, CharacterEmbedding, CharacterInput, ImageTokens,
    SlotCondition, StoryMakerAdapter,
};
pub use txt2img::{
    denoise, denoise_with_control, sdxl_time_ids, Control, PipelineError, SdxlConditioning, StepControl, StepInfo,
};
