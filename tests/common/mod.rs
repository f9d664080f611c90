//! Helpers shared by the integration tests (each test crate includes this with `mod common;`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};

/// `tests/fixtures/parity/<name>`.
pub fn parity_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity").join(name)
}

/// Relative error `max|a − b| / max|b|` (b is the reference), computed in f32. NaN anywhere gives NaN
/// (so `err < tol` fails). Panics if the shapes differ, since that is a test failure in itself.
pub fn max_rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = a.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).expect("tensor a");
    let b = b.to_dtype(DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).expect("tensor b");
    // f32::max ignores NaN, so propagate it explicitly
    let nan_max = |m: f32, d: f32| if m.is_nan() || d.is_nan() { f32::NAN } else { m.max(d) };
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, nan_max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0f32, f32::max);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

pub fn copy_fixture(from: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(parity_fixture(from), to).unwrap();
}

/// CLIP's byte alphabet as vocabulary (plus `</w>` forms and the two specials, EOS last) and no
/// merges: every id stays below the tiny models' 1000-token embedding.
pub fn write_byte_tokenizer(dir: &Path) {
    let mut bytes: Vec<u32> = (u32::from('!')..=u32::from('~')).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = bytes.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut vocab: Vec<String> = chars.iter().map(|&c| char::from_u32(c).unwrap().to_string()).collect();
    let with_suffix: Vec<String> = vocab.iter().map(|c| format!("{c}</w>")).collect();
    vocab.extend(with_suffix);
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    let map: serde_json::Map<String, serde_json::Value> =
        vocab.into_iter().enumerate().map(|(i, t)| (t, serde_json::Value::from(i))).collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("vocab.json"), serde_json::to_vec(&map).unwrap()).unwrap();
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\n").unwrap();
}

/// A diffusers-layout SDXL folder (`model_index.json`, unet/, vae/, text encoders, scheduler/,
/// tokenizer/) made of the tiny parity fixture models.
pub fn tiny_sdxl(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("model_index.json"), b"{\"_class_name\": \"StableDiffusionXLPipeline\"}").unwrap();
    std::fs::create_dir_all(root.join("tokenizer_2")).unwrap();
    copy_fixture("unet.config.json", &root.join("unet/config.json"));
    copy_fixture("unet.weights.safetensors", &root.join("unet/diffusion_pytorch_model.safetensors"));
    copy_fixture("vae.config.json", &root.join("vae/config.json"));
    copy_fixture("vae.weights.safetensors", &root.join("vae/diffusion_pytorch_model.safetensors"));
    copy_fixture("clip_l.config.json", &root.join("text_encoder/config.json"));
    copy_fixture("clip_l.weights.safetensors", &root.join("text_encoder/model.safetensors"));
    copy_fixture("clip_g.config.json", &root.join("text_encoder_2/config.json"));
    copy_fixture("clip_g.weights.safetensors", &root.join("text_encoder_2/model.safetensors"));
    copy_fixture("sched_sdxl_base.config.json", &root.join("scheduler/scheduler_config.json"));
    write_byte_tokenizer(&root.join("tokenizer"));
}

/// The tiny StoryMaker adapter in the documented models-folder layout: `storymaker/mask.bin`
/// (+ `adapter_config.json`: the tiny PPR's 16-wide heads) and `clip-vit-h/` (transformers CLIP).
#[allow(dead_code)]
pub fn tiny_adapter(models: &Path) {
    let fx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/storymaker");
    std::fs::create_dir_all(models.join("storymaker")).unwrap();
    std::fs::copy(fx.join("mask.bin"), models.join("storymaker/mask.bin")).unwrap();
    std::fs::write(models.join("storymaker/adapter_config.json"), br#"{"ppr_dim_head": 16}"#).unwrap();
    std::fs::create_dir_all(models.join("clip-vit-h")).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fx.join("clip_vision").join(f), models.join("clip-vit-h").join(f)).unwrap();
    }
}

/// A 32-value identity that fits the tiny adapter (character 0 of the StoryMaker fixture).
#[allow(dead_code)]
pub fn tiny_identity() -> Vec<f32> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/storymaker/e2e.safetensors");
    let io = candle_core::safetensors::load(p, &candle_core::Device::Cpu).unwrap();
    io["char0.id"].to_vec1().unwrap()
}
