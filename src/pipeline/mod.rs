//! SDXL generation: text conditioning → denoising loop with progress/cancel → VAE decode.
//! (Character conditioning for StoryMaker plugs into the UNet's attention hooks; spec §5.3.)

pub mod noise;
pub mod sdxl;
pub mod txt2img;

pub use noise::SeededNormal;
pub use sdxl::{generate, Generated, SdxlModels, SingleFileConfigs, Txt2ImgRequest};
pub use txt2img::{denoise, sdxl_time_ids, PipelineError, SdxlConditioning, StepControl, StepInfo};
