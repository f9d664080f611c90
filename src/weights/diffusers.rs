//! Files of one component of a diffusers pipeline folder (`unet/`, `vae/`, `text_encoder/`, ...):
//! `config.json` plus weights as `<base>.safetensors`, the `<base>.fp16.safetensors` variant, or
//! shards listed in `<base>[.fp16].safetensors.index.json`. `.bin` (torch pickle) weights are
//! reported with a clear message: convert them to safetensors.

use std::path::{Path, PathBuf};

use super::WeightsError;

/// `diffusion_pytorch_model` for unet/vae, `model` for the text encoders.
pub fn component_weight_files(dir: &Path, base: &str) -> Result<Vec<PathBuf>, WeightsError> {
    for variant in ["", ".fp16"] {
        let single = dir.join(format!("{base}{variant}.safetensors"));
        if single.is_file() {
            return Ok(vec![single]);
        }
        let index = dir.join(format!("{base}{variant}.safetensors.index.json"));
        if index.is_file() {
            return shards_from_index(&index);
        }
    }
    let bin = dir.join(format!("{base}.bin"));
    let detail = if bin.is_file() {
        format!("only {} (a torch pickle) is present; StoryMaker Studio reads .safetensors weights", bin.display())
    } else {
        format!("expected {base}.safetensors, {base}.fp16.safetensors or a sharded {base}.safetensors.index.json")
    };
    Err(WeightsError::BadCheckpoint { path: dir.display().to_string(), detail })
}

fn shards_from_index(index: &Path) -> Result<Vec<PathBuf>, WeightsError> {
    let bad = |detail: String| WeightsError::BadCheckpoint { path: index.display().to_string(), detail };
    let bytes = std::fs::read(index).map_err(|e| bad(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no weight_map".into()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for f in map.values().filter_map(|f| f.as_str()) {
        // Shard names come from a file someone else wrote: plain names only.
        if f.contains('/') || f.contains('\\') || f.contains("..") {
            return Err(bad(format!("shard name {f} is not a plain file name")));
        }
        let p = dir.join(f);
        if !files.contains(&p) {
            files.push(p);
        }
    }
    for f in &files {
        if !f.is_file() {
            return Err(bad(format!("shard {} is missing", f.display())));
        }
    }
    files.sort();
    Ok(files)
}

/// `dir/config.json` as text, with a clear error.
pub fn component_config(dir: &Path) -> Result<String, WeightsError> {
    let p = dir.join("config.json");
    std::fs::read_to_string(&p)
        .map_err(|e| WeightsError::BadCheckpoint { path: p.display().to_string(), detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_plain_then_fp16_then_shards_and_explains_bin() {
        let d = tempfile::tempdir().unwrap();
        let err = component_weight_files(d.path(), "model").unwrap_err().to_string();
        assert!(err.contains("model.safetensors"), "{err}");
        std::fs::write(d.path().join("model.bin"), b"x").unwrap();
        assert!(component_weight_files(d.path(), "model").unwrap_err().to_string().contains("torch pickle"));
        std::fs::write(
            d.path().join("model.fp16.safetensors.index.json"),
            br#"{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s1.safetensors"}}"#,
        )
        .unwrap();
        assert!(component_weight_files(d.path(), "model").unwrap_err().to_string().contains("missing"));
        std::fs::write(d.path().join("s1.safetensors"), b"x").unwrap();
        std::fs::write(d.path().join("s2.safetensors"), b"x").unwrap();
        assert_eq!(component_weight_files(d.path(), "model").unwrap().len(), 2);
        std::fs::write(d.path().join("model.fp16.safetensors"), b"x").unwrap();
        assert_eq!(component_weight_files(d.path(), "model").unwrap(), vec![d.path().join("model.fp16.safetensors")]);
        std::fs::write(d.path().join("model.safetensors"), b"x").unwrap();
        assert_eq!(component_weight_files(d.path(), "model").unwrap(), vec![d.path().join("model.safetensors")]);
        std::fs::write(d.path().join("bad.safetensors.index.json"), br#"{"weight_map":{"a":"../x"}}"#).unwrap();
        assert!(component_weight_files(d.path(), "bad").is_err());
    }
}
