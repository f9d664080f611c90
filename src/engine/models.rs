//! Model lifetime on the worker: load lazily on first use, keep on the device across jobs,
//! reload only when the models folder, device or dtype changes (issue 7's plan, spec §5.1).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::pipeline::SdxlModels;
use crate::weights::{find_sdxl, SdxlSource};

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

#[derive(Default)]
pub struct ModelCache {
    loaded: Option<(PathBuf, SdxlModels)>,
}

impl ModelCache {
    /// The models for `models_dir`, loading them if needed. `progress` gets a line per component.
    pub fn get(
        &mut self,
        models_dir: &Path,
        device: &Device,
        dtype: DType,
        progress: &mut dyn FnMut(&str),
    ) -> Result<&SdxlModels, String> {
        let fresh = match &self.loaded {
            Some((dir, m)) => dir != models_dir || m.dtype != dtype || !m.device.same_device(device),
            None => true,
        };
        if fresh {
            // Free the old models before loading new ones (VRAM).
            self.loaded = None;
            let models = match find_sdxl(models_dir).map_err(|e| e.to_string())? {
                SdxlSource::Diffusers(dir) => SdxlModels::load_diffusers(&dir, device, dtype, progress),
                SdxlSource::SingleFile(file) => SdxlModels::load_single_file(&file, device, dtype, progress),
            }
            .map_err(|e| e.to_string())?;
            self.loaded = Some((models_dir.to_path_buf(), models));
        }
        self.loaded.as_ref().map(|(_, m)| m).ok_or_else(|| "models were not loaded".to_string())
    }

    /// Drops the models (after an out-of-memory failure, so VRAM is released).
    pub fn clear(&mut self) {
        self.loaded = None;
    }
}
