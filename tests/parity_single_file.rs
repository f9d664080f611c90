//! A single-file SDXL checkpoint (original Stability names, `sdxl_single_file.safetensors` from
//! `tools/parity/gen_single_file.py`, verified there against diffusers' own converters) must give
//! bit-identical models to the diffusers/transformers-layout fixtures it was made from: same
//! weights, so the same numbers (max rel err 0), for the UNet, the VAE decoder and both text
//! encoders. The file's UNet is stored in float16, as `sd_xl_base_1.0.safetensors` ships, so its
//! reference is the diffusers-layout UNet rounded to float16 (and diffusers' output with those
//! weights, `sdxl_single_file.io.safetensors`). Plus the errors a user sees for an incomplete or
//! damaged file.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use common::{max_rel_err, parity_fixture};
use storymaker::models::clip_text::{ClipTextConfig, ClipTextModel, ClipTextOutput};
use storymaker::models::unet::{UNet2DConditionModel, UNetConfig, UNetInput};
use storymaker::models::vae::{AutoencoderKlDecoder, VaeConfig};
use storymaker::weights::single_file::{SdxlComponent, SingleFileSdxl};
use storymaker::weights::store::TensorStore;

type TestResult = Result<(), Box<dyn std::error::Error>>;
type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn single_file() -> Res<SingleFileSdxl> {
    Ok(SingleFileSdxl::open(&parity_fixture("sdxl_single_file.safetensors"))?)
}

/// A VarBuilder over one diffusers-layout fixture file.
fn diffusers_vb(name: &str) -> Res<candle_nn::VarBuilder<'static>> {
    Ok(TensorStore::open(&[parity_fixture(name)])?.into_var_builder(DType::F32, &Device::Cpu))
}

fn load(name: &str) -> Res<HashMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(parity_fixture(name), &Device::Cpu)?)
}

fn get<'a>(io: &'a HashMap<String, Tensor>, key: &str) -> Res<&'a Tensor> {
    io.get(key).ok_or_else(|| format!("fixture has no {key}").into())
}

/// Same weights, same numbers: `ours` must equal `reference` exactly.
fn identical(what: &str, ours: &Tensor, reference: &Tensor) {
    let e = max_rel_err(ours, reference);
    eprintln!("{what}: single file vs diffusers layout, max rel err {e:e}");
    assert!(e == 0.0, "{what}: max rel err {e:e}, expected identical");
}

/// The diffusers-layout UNet weights rounded to float16 and back, as the single file stores them
/// (round to nearest even, like torch's `.half()`).
fn diffusers_unet_f16_vb() -> Res<candle_nn::VarBuilder<'static>> {
    let rounded = load("unet.weights.safetensors")?
        .into_iter()
        .map(|(k, t)| Ok((k, t.to_dtype(DType::F16)?.to_dtype(DType::F32)?)))
        .collect::<candle_core::Result<HashMap<_, _>>>()?;
    Ok(candle_nn::VarBuilder::from_tensors(rounded, DType::F32, &Device::Cpu))
}

fn clip_config(name: &str) -> Res<ClipTextConfig> {
    Ok(ClipTextConfig::from_json_file(&parity_fixture(&format!("{name}.config.json")))?)
}

/// Stored as float16 (the real file's dtype), so loading in F32 goes through the f16 -> f32 path.
#[test]
fn the_single_file_unet_is_float16_the_rest_float32() -> TestResult {
    let tensors = load("sdxl_single_file.safetensors")?;
    let unet = tensors.iter().filter(|(k, _)| k.starts_with("model.diffusion_model.")).count();
    assert!(unet > 800, "{unet} UNet tensors");
    for (k, t) in &tensors {
        let want = if k.starts_with("model.diffusion_model.") { DType::F16 } else { DType::F32 };
        assert_eq!(t.dtype(), want, "{k}");
    }
    Ok(())
}

#[test]
fn unet_from_single_file_is_identical() -> TestResult {
    let cfg = UNetConfig::from_json(&std::fs::read(parity_fixture("unet.config.json"))?)?;
    let ours = UNet2DConditionModel::new(single_file()?.unet(&cfg, DType::F32, &Device::Cpu)?, &cfg)?;
    let reference = UNet2DConditionModel::new(diffusers_unet_f16_vb()?, &cfg)?;
    let io = load("unet.io.safetensors")?;
    let input = UNetInput {
        sample: get(&io, "sample")?,
        timesteps: get(&io, "timesteps")?,
        encoder_hidden_states: get(&io, "encoder_hidden_states")?,
        text_embeds: Some(get(&io, "text_embeds")?),
        time_ids: Some(get(&io, "time_ids")?),
        down_residuals: None,
        mid_residual: None,
    };
    let out = ours.forward(&input)?;
    identical("unet (float16 weights)", &out, &reference.forward(&input)?);
    let e = max_rel_err(&out, get(&load("sdxl_single_file.io.safetensors")?, "unet.out_f16_weights")?);
    eprintln!("unet (float16 weights): vs diffusers, max rel err {e:e}");
    assert!(e < 1e-4, "and it matches diffusers' output with the same weights: {e:e}");
    // The rounding is visible in the output, so the reference above is not the float32 one.
    let f32_dev = max_rel_err(&out, get(&io, "out")?);
    eprintln!("unet (float16 weights): vs the float32 weights' output, max rel dev {f32_dev:e}");
    assert!(f32_dev > 1e-4, "{f32_dev:e}");
    Ok(())
}

#[test]
fn vae_decoder_from_single_file_is_identical() -> TestResult {
    let cfg = VaeConfig::from_json_file(&parity_fixture("vae.config.json"))?;
    let ours = AutoencoderKlDecoder::new(single_file()?.vae(&cfg, DType::F32, &Device::Cpu)?, &cfg)?;
    let reference = AutoencoderKlDecoder::new(diffusers_vb("vae.weights.safetensors")?, &cfg)?;
    let io = load("vae.io.safetensors")?;
    let latents = get(&io, "latents")?;
    let out = ours.decode(latents)?;
    identical("vae decode", &out, &reference.decode(latents)?);
    assert!(max_rel_err(&out, get(&io, "decoded")?) < 1e-4, "and it matches diffusers' output");
    Ok(())
}

fn check_clip(what: &str, ours: &ClipTextOutput, reference: &ClipTextOutput) -> TestResult {
    identical(&format!("{what}.penultimate"), &ours.penultimate, &reference.penultimate);
    let (a, b) = (ours.last_hidden.as_ref(), reference.last_hidden.as_ref());
    identical(&format!("{what}.last_hidden"), a.ok_or("no last_hidden")?, b.ok_or("no last_hidden")?);
    if let (Some(a), Some(b)) = (&ours.pooled, &reference.pooled) {
        identical(&format!("{what}.pooled"), a, b);
    }
    assert_eq!(ours.pooled.is_some(), reference.pooled.is_some());
    Ok(())
}

#[test]
fn clip_l_from_single_file_is_identical() -> TestResult {
    let cfg = clip_config("clip_l")?;
    let ours = ClipTextModel::new(single_file()?.text_encoder(DType::F32, &Device::Cpu)?, &cfg, false)?;
    let reference = ClipTextModel::new(diffusers_vb("clip_l.weights.safetensors")?, &cfg, false)?;
    let io = load("clip_text.safetensors")?;
    let ids = get(&io, "clip_l.input_ids")?;
    let out = ours.forward_all(ids)?;
    check_clip("clip_l", &out, &reference.forward_all(ids)?)?;
    assert!(max_rel_err(&out.penultimate, get(&io, "clip_l.penultimate")?) < 1e-4);
    Ok(())
}

#[test]
fn clip_g_from_single_file_is_identical() -> TestResult {
    let cfg = clip_config("clip_g")?;
    let ours = ClipTextModel::new(single_file()?.text_encoder_2(DType::F32, &Device::Cpu)?, &cfg, true)?;
    let reference = ClipTextModel::new(diffusers_vb("clip_g.weights.safetensors")?, &cfg, true)?;
    let io = load("clip_text.safetensors")?;
    let ids = get(&io, "clip_g.input_ids")?;
    let out = ours.forward(ids)?;
    check_clip("clip_g", &out, &reference.forward(ids)?)?;
    let pooled = out.pooled.as_ref().ok_or("no pooled")?;
    assert!(max_rel_err(pooled, get(&io, "clip_g.text_embeds")?) < 1e-4, "pooled matches transformers");
    Ok(())
}

/// Sizes come from tensor shapes; what shapes cannot tell (heads, activation, norm groups) from
/// the base config. With the SDXL defaults as base and only the heads / groups changed, the
/// fixture configs come back.
#[test]
fn configs_are_inferred_from_shapes() -> TestResult {
    let sf = single_file()?;
    assert!(sf.missing().is_empty());

    let fixture_l = clip_config("clip_l")?;
    let base_l = ClipTextConfig { num_attention_heads: 4, ..ClipTextConfig::sdxl_clip_l() };
    // CLIP-L has no projection in SDXL, so projection_dim is the base's.
    let expect_l = ClipTextConfig { projection_dim: base_l.projection_dim, ..fixture_l };
    assert_eq!(sf.text_encoder_config(&base_l)?, expect_l);

    let base_g = ClipTextConfig { num_attention_heads: 4, ..ClipTextConfig::sdxl_clip_g() };
    assert_eq!(sf.text_encoder_2_config(&base_g)?, clip_config("clip_g")?);
    // 20 heads (SDXL's) do not divide the tiny hidden size 48: a clear error, not a panic.
    let err = sf.text_encoder_2_config(&ClipTextConfig::sdxl_clip_g()).expect_err("48 % 20 != 0").to_string();
    assert!(err.contains("text encoder 2") && err.contains("48") && err.contains("20 attention heads"), "{err}");

    let fixture_vae = VaeConfig::from_json_file(&parity_fixture("vae.config.json"))?;
    let base_vae = VaeConfig { norm_num_groups: 8, ..VaeConfig::sdxl() };
    assert_eq!(sf.vae_config(&base_vae)?, fixture_vae);

    // Models built from inferred configs load and run (same numbers as above).
    let cfg = sf.text_encoder_2_config(&base_g)?;
    let model = ClipTextModel::new(sf.text_encoder_2(DType::F32, &Device::Cpu)?, &cfg, true)?;
    model.forward(get(&load("clip_text.safetensors")?, "clip_g.input_ids")?)?;
    Ok(())
}

/// The single-file fixture with `drop` left out and `replace` swapped in, saved in `dir`.
fn altered_copy(dir: &tempfile::TempDir, drop: &str, replace: Option<(&str, Tensor)>) -> Res<PathBuf> {
    let mut tensors = load("sdxl_single_file.safetensors")?;
    tensors.retain(|k, _| !k.starts_with(drop));
    if let Some((k, t)) = replace {
        tensors.insert(k.to_string(), t);
    }
    let path = dir.path().join("incomplete_sdxl.safetensors");
    candle_core::safetensors::save(&tensors, &path)?;
    Ok(path)
}

#[test]
fn a_file_without_the_vae_names_the_missing_prefix() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = altered_copy(&dir, "first_stage_model.", None)?;
    let sf = SingleFileSdxl::open(&path)?;
    assert_eq!(sf.missing(), vec![SdxlComponent::Vae]);
    let cfg = VaeConfig::from_json_file(&parity_fixture("vae.config.json"))?;
    let err = sf.vae(&cfg, DType::F32, &Device::Cpu).err().ok_or("a file without VAE gave a VarBuilder")?.to_string();
    eprintln!("{err}");
    assert!(err.contains(&path.display().to_string()), "file not named: {err}");
    assert!(err.contains("no VAE") && err.contains("`first_stage_model.`"), "prefix not named: {err}");
    assert!(sf.vae_config(&cfg).is_err());
    // The other components still load.
    sf.text_encoder(DType::F32, &Device::Cpu)?;
    Ok(())
}

#[test]
fn a_mis_shaped_fused_tensor_names_file_tensor_and_shapes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let key = "conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight";
    let bad = Tensor::zeros((141, 48), DType::F32, &Device::Cpu)?; // 3 x 47 rows instead of 3 x 48
    let path = altered_copy(&dir, "first_stage_model.", Some((key, bad)))?;
    let sf = SingleFileSdxl::open(&path)?;
    let err = match ClipTextModel::new(sf.text_encoder_2(DType::F32, &Device::Cpu)?, &clip_config("clip_g")?, true) {
        Ok(_) => return Err("a mis-shaped in_proj_weight was accepted".into()),
        Err(e) => e.to_string(),
    };
    eprintln!("{err}");
    assert!(err.contains(&path.display().to_string()), "file not named: {err}");
    assert!(err.contains(key) && err.contains("[141, 48]"), "tensor / stored shape not named: {err}");
    assert!(err.contains("[47, 48]") && err.contains("expected [48, 48]"), "shapes not named: {err}");
    Ok(())
}
