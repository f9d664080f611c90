//! Finding model files in the models folder and telling the user exactly what is missing.
//!
//! Layout of the models folder (documented in the README):
//!
//! ```text
//! <models>/sdxl/                 diffusers folder of stabilityai/stable-diffusion-xl-base-1.0
//!                                (model_index.json, unet/, vae/, text_encoder/, text_encoder_2/,
//!                                 tokenizer/, tokenizer_2/, scheduler/)
//!   or <models>/sdxl/<name>.safetensors   a single-file SDXL checkpoint
//! <models>/storymaker/mask.bin   the StoryMaker adapter (FireRedTeam/StoryMaker)
//! ```

pub mod adapter_bin;
pub mod check;
pub mod diffusers;
pub mod safetensors_header;
pub mod sgm;
pub mod single_file;
pub mod store;
pub mod style_lora;
pub mod torch_pickle;

use std::path::{Path, PathBuf};

use thiserror::Error;

pub const SDXL_SUBDIR: &str = "sdxl";

/// Sub-folders of a diffusers SDXL pipeline that inference needs.
pub const SDXL_DIFFUSERS_PARTS: [&str; 7] =
    ["unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"];

/// A key every single-file SDXL checkpoint has (the UNet's first conv in the original layout).
pub const SDXL_SINGLE_FILE_KEY: &str = "model.diffusion_model.input_blocks.0.0.weight";

#[derive(Debug, Clone, PartialEq)]
pub enum SdxlSource {
    Diffusers(PathBuf),
    SingleFile(PathBuf),
}

#[derive(Debug, Error)]
pub enum WeightsError {
    #[error(
        "no SDXL model found in {dir}; expected either a diffusers folder {dir}/sdxl/ (model_index.json, unet/, vae/, \
         text_encoder/, text_encoder_2/, tokenizer/, tokenizer_2/, scheduler/ — e.g. stabilityai/stable-diffusion-xl-base-1.0) \
         or a single-file checkpoint {dir}/sdxl/<name>.safetensors"
    )]
    NoSdxl { dir: String },
    #[error("the SDXL folder {dir} is incomplete: missing {}", missing.join(", "))]
    IncompleteDiffusers { dir: String, missing: Vec<String> },
    #[error("{path} is not a usable SDXL checkpoint: {detail}")]
    BadCheckpoint { path: String, detail: String },
    #[error("{path} is not a usable StoryMaker adapter: {detail}")]
    BadAdapter { path: String, detail: String },
}

/// Looks for SDXL under `<models_dir>/sdxl/`.
pub fn find_sdxl(models_dir: &Path) -> Result<SdxlSource, WeightsError> {
    let dir = models_dir.join(SDXL_SUBDIR);
    let no_sdxl = || WeightsError::NoSdxl { dir: models_dir.display().to_string() };
    if !dir.is_dir() {
        return Err(no_sdxl());
    }
    if dir.join("model_index.json").is_file() {
        let missing: Vec<String> =
            SDXL_DIFFUSERS_PARTS.iter().filter(|p| !dir.join(p).is_dir()).map(|p| format!("{p}/")).collect();
        if !missing.is_empty() {
            return Err(WeightsError::IncompleteDiffusers { dir: dir.display().to_string(), missing });
        }
        return Ok(SdxlSource::Diffusers(dir));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|_| no_sdxl())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("safetensors")))
        .collect();
    files.sort();
    let Some(file) = files.into_iter().next() else { return Err(no_sdxl()) };
    let header = safetensors_header::read_header(&file)
        .map_err(|e| WeightsError::BadCheckpoint { path: file.display().to_string(), detail: e.to_string() })?;
    if !header.tensors.contains_key(SDXL_SINGLE_FILE_KEY) {
        return Err(WeightsError::BadCheckpoint {
            path: file.display().to_string(),
            detail: format!("it has no tensor {SDXL_SINGLE_FILE_KEY}; is it an SDXL checkpoint?"),
        });
    }
    Ok(SdxlSource::SingleFile(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_incomplete_sdxl_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let msg = find_sdxl(dir.path()).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("no SDXL model found in {}", dir.path().display())), "{msg}");
        assert!(msg.contains("model_index.json") && msg.contains(".safetensors"));
        let sdxl = dir.path().join("sdxl");
        std::fs::create_dir_all(sdxl.join("unet")).unwrap();
        std::fs::write(sdxl.join("model_index.json"), b"{}").unwrap();
        let msg = find_sdxl(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("missing vae/, text_encoder/"), "{msg}");
        for p in SDXL_DIFFUSERS_PARTS {
            std::fs::create_dir_all(sdxl.join(p)).unwrap();
        }
        assert_eq!(find_sdxl(dir.path()).unwrap(), SdxlSource::Diffusers(sdxl));
    }

    #[test]
    fn single_file_checkpoint_is_checked_by_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let sdxl = dir.path().join("sdxl");
        std::fs::create_dir_all(&sdxl).unwrap();
        let write = |key: &str| {
            let header = format!(r#"{{"{key}":{{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}}}"#);
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(&[0, 0]);
            std::fs::write(sdxl.join("model.safetensors"), bytes).unwrap();
        };
        write("first_stage_model.decoder.conv_in.weight");
        assert!(find_sdxl(dir.path()).unwrap_err().to_string().contains("is it an SDXL checkpoint"));
        write(SDXL_SINGLE_FILE_KEY);
        assert_eq!(find_sdxl(dir.path()).unwrap(), SdxlSource::SingleFile(sdxl.join("model.safetensors")));
        std::fs::write(sdxl.join("model.safetensors"), b"\x05").unwrap();
        assert!(matches!(find_sdxl(dir.path()), Err(WeightsError::BadCheckpoint { .. })));
    }
}

/// `<models>/storymaker/`: StoryMaker's `mask.bin` (RED-AIGC/StoryMaker on Hugging Face).
pub const ADAPTER_SUBDIR: &str = "storymaker";
/// `<models>/clip-vit-h/`: CLIP ViT-H/14 image encoder, transformers layout (config.json +
/// model.safetensors; laion/CLIP-ViT-H-14-laion2B-s32B-b79K or h94/IP-Adapter models/image_encoder).
pub const IMAGE_ENCODER_SUBDIR: &str = "clip-vit-h";
/// `<models>/loras/`: the artist's SDXL style LoRAs (`.safetensors`, kohya or diffusers/PEFT).
pub const LORA_SUBDIR: &str = "loras";

/// Why the StoryMaker adapter cannot be used from a models folder.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AdapterMissing {
    #[error(
        "the StoryMaker adapter is not installed: put mask.bin (huggingface.co/RED-AIGC/StoryMaker) at \
         {dir}/storymaker/mask.bin"
    )]
    Adapter { dir: String },
    #[error(
        "the CLIP ViT-H/14 image encoder is not installed: put config.json and model.safetensors of \
         laion/CLIP-ViT-H-14-laion2B-s32B-b79K (or h94/IP-Adapter models/image_encoder) in {dir}/clip-vit-h/"
    )]
    ImageEncoder { dir: String },
}

/// Finds `<models>/storymaker/mask.bin` (or `mask.safetensors`, or the only `.bin`/`.safetensors`
/// there) and the CLIP image encoder folder.
pub fn find_adapter(models_dir: &Path) -> Result<(PathBuf, PathBuf), AdapterMissing> {
    let dir = models_dir.join(ADAPTER_SUBDIR);
    let display = models_dir.display().to_string();
    let preferred = ["mask.bin", "mask.safetensors"].iter().map(|n| dir.join(n)).find(|p| p.is_file());
    let adapter = match preferred {
        Some(p) => p,
        None => {
            let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|_| AdapterMissing::Adapter { dir: display.clone() })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|x| x.eq_ignore_ascii_case("bin") || x.eq_ignore_ascii_case("safetensors"))
                })
                .collect();
            found.sort();
            found.into_iter().next().ok_or(AdapterMissing::Adapter { dir: display.clone() })?
        }
    };
    let encoder = [IMAGE_ENCODER_SUBDIR, "image_encoder"]
        .iter()
        .map(|n| models_dir.join(n))
        .find(|p| p.join("config.json").is_file())
        .ok_or(AdapterMissing::ImageEncoder { dir: display })?;
    Ok((adapter, encoder))
}

/// The style LoRA files in `<models>/loras/`, by file name.
pub fn list_style_loras(models_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(models_dir.join(LORA_SUBDIR))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x.eq_ignore_ascii_case("safetensors")))
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
