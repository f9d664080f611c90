//! "Check models": what the models folder holds, what is missing, sizes and licences — the same
//! lookups the engine uses, so the list never disagrees with what a generation will find.

use std::path::{Path, PathBuf};

use super::{find_adapter, find_sdxl, list_style_loras, SdxlSource, LORA_SUBDIR};

/// One model the app can use.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelStatus {
    pub name: &'static str,
    /// What it is for, in the artist's words.
    pub purpose: &'static str,
    /// Where it came from (Hugging Face repository or project) and its licence.
    pub source: &'static str,
    pub licence: &'static str,
    pub required: bool,
    /// Found: the files' location and total size in bytes; missing: why and where to put it.
    pub found: Result<(PathBuf, u64), String>,
}

/// Total size of a file, or of every file under a folder.
pub fn disk_size(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(m) if m.is_dir() => {
            std::fs::read_dir(path).map(|rd| rd.filter_map(|e| e.ok()).map(|e| disk_size(&e.path())).sum()).unwrap_or(0)
        }
        _ => 0,
    }
}

/// `1.2 GB` style sizes.
pub fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else {
        format!("{:.0} kB", (b / 1e3).ceil())
    }
}

fn found(path: PathBuf) -> Result<(PathBuf, u64), String> {
    let size = disk_size(&path);
    Ok((path, size))
}

/// Every model the app knows, checked in `models_dir`.
pub fn check_models(models_dir: &Path) -> Vec<ModelStatus> {
    let dir = models_dir.display();
    let sdxl = match find_sdxl(models_dir) {
        Ok(SdxlSource::Diffusers(p)) | Ok(SdxlSource::SingleFile(p)) => found(p),
        Err(e) => Err(e.to_string()),
    };
    let (adapter, encoder) = match find_adapter(models_dir) {
        Ok((a, e)) => (found(a), found(e)),
        Err(e) => {
            let a = models_dir.join("storymaker/mask.bin");
            let enc = ["clip-vit-h", "image_encoder"]
                .iter()
                .map(|n| models_dir.join(n))
                .find(|p| p.join("config.json").is_file());
            (
                if a.is_file() { found(a) } else { Err(format!("put mask.bin in {dir}/storymaker/")) },
                match enc {
                    Some(p) => found(p),
                    None => Err(if e.to_string().contains("CLIP") {
                        e.to_string()
                    } else {
                        format!("put config.json + model.safetensors in {dir}/clip-vit-h/")
                    }),
                },
            )
        }
    };
    let buffalo = models_dir.join("buffalo_l");
    let face = if buffalo.join("det_10g.onnx").is_file() && buffalo.join("w600k_r50.onnx").is_file() {
        found(buffalo)
    } else {
        Err(format!("put det_10g.onnx and w600k_r50.onnx in {dir}/buffalo_l/"))
    };
    let segmentation = crate::imaging::segment::find_segmentation_model(models_dir)
        .map_err(|_| format!("optional: put a person segmentation .onnx file in {dir}/segmentation/"))
        .and_then(found);
    let cn = models_dir.join("controlnet-openpose");
    let has_weights = std::fs::read_dir(&cn)
        .map(|rd| rd.filter_map(|e| e.ok()).any(|e| e.path().extension().is_some_and(|x| x == "safetensors")))
        .unwrap_or(false);
    let controlnet = if has_weights {
        found(cn)
    } else {
        Err(format!("put config.json + diffusion_pytorch_model.safetensors in {dir}/controlnet-openpose/"))
    };
    let loras = list_style_loras(models_dir);
    let lora_dir = models_dir.join(LORA_SUBDIR);
    let style = if loras.is_empty() {
        Err(format!("none; optional .safetensors files go in {dir}/loras/"))
    } else {
        found(lora_dir)
    };
    vec![
        ModelStatus {
            name: "SDXL base model",
            purpose: "draws the panels",
            source: "stabilityai/stable-diffusion-xl-base-1.0 (diffusers folder or one .safetensors)",
            licence: "CreativeML Open RAIL++-M",
            required: true,
            found: sdxl,
        },
        ModelStatus {
            name: "StoryMaker adapter (mask.bin)",
            purpose: "keeps characters consistent",
            source: "RED-AIGC/StoryMaker",
            licence: "Apache-2.0",
            required: true,
            found: adapter,
        },
        ModelStatus {
            name: "CLIP ViT-H/14 image encoder",
            purpose: "reads the characters' photos for the adapter",
            source: "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
            licence: "MIT",
            required: true,
            found: encoder,
        },
        ModelStatus {
            name: "insightface buffalo_l",
            purpose: "finds faces and their identity",
            source: "deepinsight/insightface buffalo_l",
            licence: "non-commercial research only",
            required: false,
            found: face,
        },
        ModelStatus {
            name: "Person segmentation (Auto mask)",
            purpose: "masks a character's photo in one click",
            source: "BiRefNet or U²-Net human segmentation ONNX (IS-Net/RMBG-1.4 layout also read)",
            licence: "BiRefNet: MIT; U²-Net: Apache-2.0; RMBG-1.4: non-commercial only",
            required: false,
            found: segmentation,
        },
        ModelStatus {
            name: "OpenPose ControlNet for SDXL",
            purpose: "makes characters take the panel's poses",
            source: "xinsir/controlnet-openpose-sdxl-1.0",
            licence: "Apache-2.0",
            required: false,
            found: controlnet,
        },
        ModelStatus {
            name: "Style LoRAs",
            purpose: "optional styles (see the panel editor)",
            source: "your own files",
            licence: "their authors'",
            required: false,
            found: style,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_folder_lists_everything_missing_with_the_place_to_put_it() {
        let d = tempfile::tempdir().unwrap();
        let list = check_models(d.path());
        assert_eq!(list.len(), 7);
        assert!(list.iter().all(|m| m.found.is_err()));
        let adapter = list.iter().find(|m| m.name.starts_with("StoryMaker")).unwrap();
        assert!(adapter.found.as_ref().unwrap_err().contains("storymaker"));
        assert!(list.iter().all(|m| !m.licence.is_empty() && !m.source.is_empty()));
    }

    #[test]
    fn found_models_report_their_size() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("storymaker")).unwrap();
        std::fs::write(d.path().join("storymaker/mask.bin"), vec![0u8; 1234]).unwrap();
        std::fs::create_dir_all(d.path().join("loras")).unwrap();
        std::fs::write(d.path().join("loras/ink.safetensors"), vec![0u8; 10]).unwrap();
        let list = check_models(d.path());
        let adapter = list.iter().find(|m| m.name.starts_with("StoryMaker")).unwrap();
        assert_eq!(adapter.found.as_ref().unwrap().1, 1234);
        let loras = list.iter().find(|m| m.name == "Style LoRAs").unwrap();
        assert_eq!(loras.found.as_ref().unwrap().1, 10);
        assert_eq!(human_size(1234), "2 kB");
        assert_eq!(human_size(3_300_000_000), "3.3 GB");
    }
}
