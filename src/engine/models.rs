//! Model lifetime on the worker: load lazily on first use, keep on the device across jobs,
//! reload only when the models folder, device, dtype or style-LoRA set changes (spec §5.1).
//! The StoryMaker adapter is attached on the first job with a cast, and each character's
//! CLIP/ArcFace conditioning is cached by content, so prompt or seed changes never recompute it.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};

use super::job::CharacterSnapshot;
use crate::pipeline::{
    AdapterFiles, AdapterOptions, CharacterEmbedding, CharacterInput, SdxlModels, StoryMakerAdapter,
};
use crate::weights::style_lora::StyleLora;
use crate::weights::{find_adapter, find_sdxl, SdxlSource, LORA_SUBDIR};

/// Picks the device and dtype: CUDA in bf16 when this build has it and a GPU answers, else the
/// CPU in f32 (half precision on the CPU is slower and candle has no CPU bf16 matmul).
pub fn choose_device() -> (Device, DType, Option<String>) {
    match Device::cuda_if_available(0) {
        Ok(d @ Device::Cuda(_)) => (d, DType::BF16, None),
        _ => (
            Device::Cpu,
            DType::F32,
            Some("Running on the CPU: generation is very slow (minutes per step at full size)".into()),
        ),
    }
}

/// What the loaded models were made from; any change reloads them.
#[derive(Debug, Clone, PartialEq)]
struct Key {
    dir: PathBuf,
    dtype: DType,
    loras: Vec<(String, f32)>,
}

pub struct Loaded {
    pub sdxl: SdxlModels,
    pub adapter: Option<StoryMakerAdapter>,
    /// The pose ControlNet, loaded on the first job with a pose (panels without one never load it).
    pub controlnet: Option<(PathBuf, crate::models::controlnet::ControlNetModel)>,
    /// Character conditioning by content hash (photo bytes, mask, crop, face, cloth).
    embeddings: HashMap<u64, Arc<CharacterEmbedding>>,
}

#[derive(Default)]
pub struct ModelCache {
    loaded: Option<(Key, Loaded)>,
}

fn lora_paths(models_dir: &Path, loras: &[(String, f32)]) -> Result<Vec<(StyleLora, f64)>, String> {
    loras
        .iter()
        .map(|(file, w)| {
            let path = models_dir.join(LORA_SUBDIR).join(file);
            let lora = StyleLora::load(&path).map_err(|e| format!("style LoRA {file}: {e}"))?;
            Ok((lora, f64::from(*w)))
        })
        .collect()
}

impl ModelCache {
    /// The models for `models_dir` (with `loras` merged), loading them if needed. `progress` gets
    /// a line per component.
    pub fn get(
        &mut self,
        models_dir: &Path,
        loras: &[(String, f32)],
        device: &Device,
        dtype: DType,
        progress: &mut dyn FnMut(&str),
    ) -> Result<&mut Loaded, String> {
        let key = Key { dir: models_dir.to_path_buf(), dtype, loras: loras.to_vec() };
        let fresh = match &self.loaded {
            Some((k, m)) => *k != key || !m.sdxl.device.same_device(device),
            None => true,
        };
        if fresh {
            // Free the old models before loading new ones (VRAM).
            self.loaded = None;
            let styles = lora_paths(models_dir, loras)?;
            let sdxl = match find_sdxl(models_dir).map_err(|e| e.to_string())? {
                SdxlSource::Diffusers(dir) => SdxlModels::load_diffusers(&dir, device, dtype, &styles, progress),
                SdxlSource::SingleFile(file) => SdxlModels::load_single_file(&file, device, dtype, &styles, progress),
            }
            .map_err(|e| e.to_string())?;
            self.loaded = Some((key, Loaded { sdxl, adapter: None, controlnet: None, embeddings: HashMap::new() }));
        }
        self.loaded.as_mut().map(|(_, m)| m).ok_or_else(|| "models were not loaded".to_string())
    }

    /// Drops the models (after an out-of-memory failure, so VRAM is released).
    pub fn clear(&mut self) {
        self.loaded = None;
    }
}

impl Loaded {
    /// Loads and attaches the StoryMaker adapter from `<models>/storymaker/` and
    /// `<models>/clip-vit-h/` unless it is already attached.
    pub fn ensure_adapter(&mut self, models_dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<(), String> {
        if self.adapter.is_some() {
            return Ok(());
        }
        let (adapter, image_encoder) = find_adapter(models_dir).map_err(|e| e.to_string())?;
        progress("StoryMaker adapter");
        let opts = adapter_options(&adapter)?;
        let files = AdapterFiles { adapter, image_encoder };
        let (device, dtype) = (self.sdxl.device.clone(), self.sdxl.dtype);
        let a =
            StoryMakerAdapter::load(&files, &mut self.sdxl.unet, &device, dtype, opts).map_err(|e| e.to_string())?;
        self.adapter = Some(a);
        self.embeddings.clear();
        Ok(())
    }

    /// Loads the OpenPose ControlNet from `<models>/controlnet-openpose/` unless already loaded.
    pub fn ensure_controlnet(&mut self, models_dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<(), String> {
        if self.controlnet.is_some() {
            return Ok(());
        }
        let files = crate::models::controlnet::find_controlnet(models_dir).map_err(|e| e.to_string())?;
        progress("pose ControlNet");
        let model = crate::models::controlnet::load_controlnet(&files, None, self.sdxl.dtype, &self.sdxl.device)
            .map_err(|e| e.to_string())?;
        let source = files.weights.first().cloned().unwrap_or_else(|| models_dir.to_path_buf());
        self.controlnet = Some((source, model));
        Ok(())
    }

    /// The conditioning of one cast member, from the cache when its content is unchanged
    /// (`computed` is false then: prompt and seed changes never recompute it).
    pub fn embedding(&mut self, c: &CharacterSnapshot) -> Result<(Arc<CharacterEmbedding>, bool), String> {
        let adapter = self.adapter.as_ref().ok_or("the StoryMaker adapter is not loaded")?;
        let photo_bytes = std::fs::read(&c.photo)
            .map_err(|e| format!("{}: cannot read the photo {}: {e}", c.name, c.photo.display()))?;
        let cloth_bytes = match &c.cloth {
            Some(p) => Some(
                std::fs::read(p)
                    .map_err(|e| format!("{}: cannot read the clothing image {}: {e}", c.name, p.display()))?,
            ),
            None => None,
        };
        let key = content_key(c, &photo_bytes, cloth_bytes.as_deref());
        if let Some(e) = self.embeddings.get(&key) {
            return Ok((e.clone(), false));
        }
        let face = c.face.as_ref().ok_or_else(|| no_face(&c.name))?;
        let identity = face.identity.as_deref().ok_or_else(|| no_face(&c.name))?;
        let keypoints = face.keypoints.ok_or_else(|| {
            format!(
                "{}: the face has no keypoints (eyes, nose, mouth corners); place them in the character editor",
                c.name
            )
        })?;
        let decode = |bytes: &[u8], what: &str| {
            crate::imaging::decode_image_bytes(bytes)
                .map(|d| image::DynamicImage::ImageRgba8(d.rgba).to_rgb8())
                .map_err(|e| format!("{}: {what}: {e}", c.name))
        };
        let photo = decode(&photo_bytes, "photo")?;
        let cloth = cloth_bytes.as_deref().map(|b| decode(b, "clothing image")).transpose()?;
        let mask = masked_to_crop(c);
        let input = CharacterInput { photo: &photo, mask: &mask, identity, keypoints, cloth: cloth.as_ref() };
        let emb = Arc::new(adapter.embed_character(&input).map_err(|e| format!("{}: {e}", c.name))?);
        self.embeddings.insert(key, emb.clone());
        Ok((emb, true))
    }
}

/// `adapter_config.json` next to the adapter file, for adapters whose PPR head width differs from
/// the released 64 (`{"ppr_dim_head": 16}`); absent for the released checkpoint.
fn adapter_options(adapter: &Path) -> Result<AdapterOptions, String> {
    let mut opts = AdapterOptions::default();
    let Some(path) = adapter.parent().map(|d| d.join("adapter_config.json")) else { return Ok(opts) };
    if !path.is_file() {
        return Ok(opts);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(d) = v.get("ppr_dim_head") {
        let d = d.as_u64().filter(|d| (1..=1024).contains(d));
        opts.ppr_dim_head =
            d.ok_or_else(|| format!("{}: ppr_dim_head must be a positive integer", path.display()))? as usize;
    }
    Ok(opts)
}

fn no_face(name: &str) -> String {
    format!(
        "{name} has no face identity: open the character, let it find the face (needs buffalo_l in the models \
         folder), place the 5 keypoints with the Face tool, or import its face data ({{id, kps}} .bin)"
    )
}

/// The mask limited to the character's crop rectangle (the artist's crop frames the character).
fn masked_to_crop(c: &CharacterSnapshot) -> crate::imaging::Mask {
    let m = c.mask.as_ref();
    let (x0, y0) = (c.crop.x.max(0.0) as u32, c.crop.y.max(0.0) as u32);
    let (x1, y1) = ((c.crop.x + c.crop.w).max(0.0) as u32, (c.crop.y + c.crop.h).max(0.0) as u32);
    let mut data = m.data().to_vec();
    let w = m.width() as usize;
    for (i, v) in data.iter_mut().enumerate() {
        let (x, y) = ((i % w) as u32, (i / w) as u32);
        if x < x0 || x >= x1 || y < y0 || y >= y1 {
            *v = 0;
        }
    }
    crate::imaging::Mask::from_raw(m.width(), m.height(), data).unwrap_or_else(|| m.clone())
}

/// Hash of everything a character's conditioning depends on.
fn content_key(c: &CharacterSnapshot, photo: &[u8], cloth: Option<&[u8]>) -> u64 {
    let mut h = DefaultHasher::new();
    photo.hash(&mut h);
    c.mask.data().hash(&mut h);
    c.mask.size().hash(&mut h);
    [c.crop.x, c.crop.y, c.crop.w, c.crop.h].map(f32::to_bits).hash(&mut h);
    if let Some(f) = &c.face {
        f.keypoints.map(|k| k.map(|p| p.map(f32::to_bits))).hash(&mut h);
        f.identity.as_ref().map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()).hash(&mut h);
    }
    cloth.hash(&mut h);
    h.finish()
}
