//! StoryMaker's released adapter file `mask.bin` (spec §4.1): a torch zip-pickle holding two
//! state dicts, `image_proj_model` (the PPR resampler) and `ip_adapter` (LoRA + IP projections,
//! keys `{k}.to_q_lora.down.weight` ...). Also accepted: a `.safetensors` conversion with the
//! prefixes `image_proj_model.` / `ip_adapter.`.
//!
//! The pickle is read by [`super::torch_pickle`], which executes nothing and refuses any Python
//! global that is not needed to rebuild tensors. Whether every tensor the model needs is there,
//! with the right shape, is checked when the modules are built from these maps (candle's
//! VarBuilder names the tensor and the expected and found shapes).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::torch_pickle::TorchCheckpoint;
use super::WeightsError;

/// The two state dicts of the adapter.
pub const ADAPTER_KEYS: [&str; 2] = ["image_proj_model", "ip_adapter"];

/// The two state dicts of the adapter, on `device`, in the file's dtype (f32 for mask.bin).
pub struct AdapterWeights {
    pub image_proj_model: HashMap<String, Tensor>,
    pub ip_adapter: HashMap<String, Tensor>,
}

fn bad(path: &Path, detail: impl std::fmt::Display) -> WeightsError {
    WeightsError::BadAdapter { path: path.display().to_string(), detail: detail.to_string() }
}

fn not_an_adapter(path: &Path, missing: &[&str], found: &[String]) -> WeightsError {
    let found = if found.is_empty() { "nothing".to_string() } else { found.join(", ") };
    bad(
        path,
        format!(
            "not a StoryMaker adapter: the state dict(s) `{}` are missing (found: {found}); expected the state dicts \
             `image_proj_model` and `ip_adapter` (FireRedTeam/StoryMaker mask.bin)",
            missing.join("`, `")
        ),
    )
}

/// Loads `mask.bin` (torch pickle) or its safetensors conversion.
pub fn load_adapter(path: &Path, device: &Device) -> Result<AdapterWeights, WeightsError> {
    let is_safetensors = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
    let (image_proj_model, ip_adapter) = if is_safetensors {
        let all = candle_core::safetensors::load(path, device).map_err(|e| bad(path, e))?;
        let mut proj = HashMap::new();
        let mut ip = HashMap::new();
        let mut others = Vec::new();
        for (k, v) in all {
            if let Some(rest) = k.strip_prefix("image_proj_model.") {
                proj.insert(rest.to_string(), v);
            } else if let Some(rest) = k.strip_prefix("ip_adapter.") {
                ip.insert(rest.to_string(), v);
            } else if others.len() < 3 {
                others.push(k);
            }
        }
        let missing: Vec<&str> = [(&proj, ADAPTER_KEYS[0]), (&ip, ADAPTER_KEYS[1])]
            .into_iter()
            .filter(|(m, _)| m.is_empty())
            .map(|(_, k)| k)
            .collect();
        if !missing.is_empty() {
            let mut found: Vec<String> = [(&proj, ADAPTER_KEYS[0]), (&ip, ADAPTER_KEYS[1])]
                .into_iter()
                .filter(|(m, _)| !m.is_empty())
                .map(|(_, k)| format!("{k}.*"))
                .collect();
            found.extend(others.into_iter().map(|k| format!("{k} ...")));
            return Err(not_an_adapter(path, &missing, &found));
        }
        (proj, ip)
    } else {
        let mut ckpt = TorchCheckpoint::open(path).map_err(|e| bad(path, e))?;
        let keys = ckpt.keys();
        let missing: Vec<&str> = ADAPTER_KEYS.into_iter().filter(|k| !keys.iter().any(|f| f == k)).collect();
        if !missing.is_empty() {
            return Err(not_an_adapter(path, &missing, &keys));
        }
        let mut read = |key: &str| -> Result<HashMap<String, Tensor>, WeightsError> {
            let tensors = ckpt.state_dict(Some(key), device).map_err(|e| bad(path, e))?;
            if tensors.is_empty() {
                return Err(bad(path, format!("the `{key}` state dict of the StoryMaker adapter holds no tensors")));
            }
            Ok(tensors)
        };
        (read(ADAPTER_KEYS[0])?, read(ADAPTER_KEYS[1])?)
    };
    Ok(AdapterWeights { image_proj_model, ip_adapter })
}
