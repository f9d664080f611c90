//! The SDXL VAE decoder against diffusers 0.42.1 `AutoencoderKL` on the tiny fixture
//! (tools/parity/gen_sdxl.py; MANIFEST.md: `vae.io.safetensors` holds scheduler-space `latents`,
//! `decode_input = latents / scaling_factor` and the raw `decoded` output).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::{max_rel_err, parity_fixture};
use storymaker::models::vae::{raw_to_rgb_images, to_image, to_rgb_images, AutoencoderKlDecoder, VaeConfig};
use storymaker::weights::store::TensorStore;

const TOL: f32 = 1e-4;

fn config() -> VaeConfig {
    VaeConfig::from_json_file(&parity_fixture("vae.config.json")).expect("vae config")
}

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(parity_fixture(name), &Device::Cpu).expect("fixture")
}

fn decoder_from(path: std::path::PathBuf, dtype: DType) -> AutoencoderKlDecoder {
    let vb = TensorStore::open(&[path]).expect("weights").into_var_builder(dtype, &Device::Cpu);
    AutoencoderKlDecoder::new(vb, &config()).expect("build decoder")
}

fn decoder() -> AutoencoderKlDecoder {
    decoder_from(parity_fixture("vae.weights.safetensors"), DType::F32)
}

#[test]
fn vae_decode_matches_diffusers() {
    let cfg = config();
    assert_eq!(cfg.scaling_factor, 0.13025);
    assert!(cfg.force_upcast);
    let vae = decoder();
    let io = load("vae.io.safetensors");

    let unscaled = vae.unscale(&io["latents"]).expect("unscale");
    let e = max_rel_err(&unscaled, &io["decode_input"]);
    println!("unscale rel err {e:.3e}");
    assert!(e < 1e-6, "unscale: {e}");

    let raw = vae.decode(&io["latents"]).expect("decode");
    let e = max_rel_err(&raw, &io["decoded"]);
    println!("decode(latents) rel err {e:.3e}");
    assert!(e < TOL, "decode: {e}");

    let raw2 = vae.forward(&io["decode_input"]).expect("forward");
    let e = max_rel_err(&raw2, &io["decoded"]);
    println!("forward(decode_input) rel err {e:.3e}");
    assert!(e < TOL, "forward: {e}");

    let e = max_rel_err(&to_image(&raw).expect("to_image"), &io["image"]);
    println!("image rel err {e:.3e}");
    assert!(e < TOL, "image: {e}");
}

/// The end-to-end fixture's decode (128x96) and its uint8 image (diffusers `numpy_to_pil`).
#[test]
fn vae_e2e_decode_and_bytes_match_diffusers() {
    let vae = decoder();
    let io = load("e2e_txt2img.safetensors");
    let raw = vae.decode(&io["final_latents"]).expect("decode");
    let e = max_rel_err(&raw, &io["decoded"]);
    println!("e2e decode rel err {e:.3e}");
    assert!(e < TOL, "e2e decode: {e}");

    let expect = io["image_u8"].flatten_all().and_then(|t| t.to_vec1::<u8>()).expect("image_u8");
    // Bytes from the reference float image are exact; from our decode at most 1 off (rounding ties).
    let exact = to_rgb_images(&io["image"]).expect("rgb").remove(0);
    assert_eq!((exact.width(), exact.height()), (96, 128));
    let off = exact.as_raw().iter().zip(&expect).filter(|(a, b)| a != b).count();
    assert!(off == 0, "{off} bytes differ from numpy_to_pil");
    let ours = raw_to_rgb_images(&raw).expect("rgb").remove(0);
    let max_diff = ours.as_raw().iter().zip(&expect).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
    let n_diff = ours.as_raw().iter().zip(&expect).filter(|(a, b)| a != b).count();
    println!("e2e bytes: {n_diff} of {} differ, max {max_diff}", expect.len());
    assert!(max_diff <= 1, "byte diff {max_diff}");
}

/// Published SDXL VAE files use the pre-0.14 attention names (`query`, `key`, `value`, `proj_attn`).
#[test]
fn vae_old_attention_names_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vae_old_names.safetensors");
    let renamed: HashMap<String, Tensor> = load("vae.weights.safetensors")
        .into_iter()
        .map(|(k, v)| {
            let k = k
                .replace("attentions.0.to_q.", "attentions.0.query.")
                .replace("attentions.0.to_k.", "attentions.0.key.")
                .replace("attentions.0.to_v.", "attentions.0.value.")
                .replace("attentions.0.to_out.0.", "attentions.0.proj_attn.");
            (k, v)
        })
        .collect();
    assert!(renamed.contains_key("decoder.mid_block.attentions.0.proj_attn.weight"));
    assert!(!renamed.keys().any(|k| k.contains("to_q")));
    candle_core::safetensors::save(&renamed, &path).expect("save");

    let io = load("vae.io.safetensors");
    let new_names = decoder().decode(&io["latents"]).expect("decode");
    let old_names = decoder_from(path, DType::F32).decode(&io["latents"]).expect("decode old names");
    let e = max_rel_err(&old_names, &new_names);
    assert!(e == 0.0, "old vs new names: {e}");
}

/// An f16 VarBuilder still decodes in f32 (`force_upcast`), giving the f32 result.
#[test]
fn vae_f16_request_is_upcast() {
    let io = load("vae.io.safetensors");
    let vae = decoder_from(parity_fixture("vae.weights.safetensors"), DType::F16);
    assert_eq!(vae.dtype(), DType::F32);
    let raw = vae.decode(&io["latents"].to_dtype(DType::F16).expect("f16")).expect("decode");
    assert_eq!(raw.dtype(), DType::F32);
    // Only the f16 rounding of the input latents differs.
    let e = max_rel_err(&raw, &io["decoded"]);
    println!("f16 latents, f32 decode rel err {e:.3e}");
    assert!(e < 1e-2, "{e}");
}

/// An explicit dtype is honoured (as for an fp16-fixed VAE with `force_upcast: false`); the tiny
/// fixture does not overflow in f16. (bf16 needs the CUDA backend: candle's CPU matmul lacks it.)
#[test]
fn vae_explicit_f16_decode_is_close() {
    let io = load("vae.io.safetensors");
    let vb = TensorStore::open(&[parity_fixture("vae.weights.safetensors")])
        .expect("weights")
        .into_var_builder(DType::F32, &Device::Cpu);
    let vae = AutoencoderKlDecoder::new_with_dtype(vb, &config(), DType::F16).expect("f16 decoder");
    let raw = vae.decode(&io["latents"]).expect("decode");
    assert_eq!(raw.dtype(), DType::F16);
    let e = max_rel_err(&raw, &io["decoded"]);
    println!("explicit f16 decode rel err {e:.3e}");
    assert!(e < 2e-2, "{e}");
    let tiled = vae.decode_tiled(&io["latents"], 4, 2).expect("f16 tiled");
    assert_eq!(tiled.dims(), raw.dims());
}

#[test]
fn vae_tiled_decode() {
    let vae = decoder();
    let io = load("e2e_txt2img.safetensors");
    let latents = &io["final_latents"]; // [1, 4, 16, 12]
    let full = vae.decode(latents).expect("decode");
    // A tile covering the whole latent is the plain decode.
    let one = vae.decode_tiled(latents, 16, 4).expect("one tile");
    assert_eq!(max_rel_err(&one, &full), 0.0);
    // Real tiling: same shape, close to the untiled image (GroupNorm and attention see one tile).
    let tiled = vae.decode_tiled(latents, 8, 2).expect("tiled");
    assert_eq!(tiled.dims(), full.dims());
    let e = max_rel_err(&tiled, &full);
    println!("tiled (8/2) vs untiled rel err {e:.3e}");
    assert!(e < 0.5, "tiled vs untiled: {e}");
    // The top-left tile is never blended: its kept 48x48 corner is that tile decoded alone.
    let corner = latents.narrow(2, 0, 8).and_then(|t| t.narrow(3, 0, 8)).expect("corner");
    let alone = vae.decode(&corner).and_then(|t| t.narrow(2, 0, 48)).and_then(|t| t.narrow(3, 0, 48)).expect("alone");
    let kept = tiled.narrow(2, 0, 48).and_then(|t| t.narrow(3, 0, 48)).expect("kept");
    assert_eq!(max_rel_err(&kept, &alone), 0.0);
    assert!(vae.decode_tiled(latents, 8, 8).is_err());
}
