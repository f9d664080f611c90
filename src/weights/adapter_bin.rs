//! StoryMaker's released adapter file `mask.bin` (spec §4.1): a torch zip-pickle holding two
//! state dicts, `image_proj_model` (the PPR resampler) and `ip_adapter` (LoRA + IP projections,
//! keys `{k}.to_q_lora.down.weight` ...). Also accepted: a `.safetensors` conversion with the
//! prefixes `image_proj_model.` / `ip_adapter.`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::WeightsError;

/// The two state dicts of the adapter, on `device`, in the file's dtype (f32 for mask.bin).
pub struct AdapterWeights {
    pub image_proj_model: HashMap<String, Tensor>,
    pub ip_adapter: HashMap<String, Tensor>,
}

fn bad(path: &Path, detail: impl std::fmt::Display) -> WeightsError {
    WeightsError::BadCheckpoint { path: path.display().to_string(), detail: detail.to_string() }
}

/// Loads `mask.bin` (torch pickle) or its safetensors conversion.
pub fn load_adapter(path: &Path, device: &Device) -> Result<AdapterWeights, WeightsError> {
    let is_safetensors = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let (image_proj_model, ip_adapter) = if is_safetensors {
        let all = candle_core::safetensors::load(path, device).map_err(|e| bad(path, e))?;
        let mut proj = HashMap::new();
        let mut ip = HashMap::new();
        for (k, v) in all {
            if let Some(rest) = k.strip_prefix("image_proj_model.") {
                proj.insert(rest.to_string(), v);
            } else if let Some(rest) = k.strip_prefix("ip_adapter.") {
                ip.insert(rest.to_string(), v);
            }
        }
        (proj, ip)
    } else {
        let read = |key: &str| -> Result<HashMap<String, Tensor>, WeightsError> {
            let tensors = candle_core::pickle::read_all_with_key(path, Some(key))
                .map_err(|e| bad(path, format!("reading the `{key}` state dict: {e}")))?;
            tensors.into_iter().map(|(k, t)| Ok((k, t.to_device(device).map_err(|e| bad(path, e))?))).collect()
        };
        (read("image_proj_model")?, read("ip_adapter")?)
    };
    if ip_adapter.is_empty() || image_proj_model.is_empty() {
        return Err(bad(
            path,
            "not a StoryMaker adapter: expected the state dicts `image_proj_model` and `ip_adapter` \
             (FireRedTeam/StoryMaker mask.bin)",
        ));
    }
    Ok(AdapterWeights { image_proj_model, ip_adapter })
}
