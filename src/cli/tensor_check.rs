//! `storymaker tensor-check COMPONENT --weights W --inputs IN.safetensors --out OUT.safetensors`:
//! runs one model component from weight files on given input tensors and writes its outputs, so
//! any reference implementation can be compared with ours without writing Rust.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::args::Args;
use crate::models::clip_text::{sdxl_text_embeddings, ClipTextConfig, ClipTextModel};
use crate::models::unet::{UNet2DConditionModel, UNetConfig, UNetInput};
use crate::models::vae::{AutoencoderKlDecoder, VaeConfig};
use crate::sampling::{build_scheduler, NoNoise, NoiseSource, RecordedNoise, SchedulerConfig, SchedulerKind};
use crate::weights::diffusers::{component_config, component_weight_files};
use crate::weights::sgm::{unet_key_to_sgm, UNET_PREFIX};
use crate::weights::single_file::SingleFileSdxl;
use crate::weights::store::TensorStore;

pub const HELP: &str = "storymaker tensor-check COMPONENT --weights W --inputs IN.safetensors --out OUT.safetensors
                        [--dtype f32|f16|bf16] [--device cpu|cuda|auto] [--config CONFIG.json]

Runs one component on the tensors of IN (any float dtype; ids any integer dtype) and writes OUT
(float32). Weight layouts are the diffusers ones (stabilityai/stable-diffusion-xl-base-1.0).

COMPONENT        --weights                         inputs (IN)                          outputs (OUT)
text-encoders    SDXL folder with text_encoder/    input_ids_1 [B,77] (CLIP-L ids,      prompt_embeds [B,77,2048]
                 and text_encoder_2/ (each          padded with EOS), input_ids_2        pooled_prompt_embeds [B,1280]
                 config.json + model[.fp16]         [B,77] (CLIP-G ids, padded with 0)   text_encoder.penultimate,
                 .safetensors), or a single-file                                         text_encoder_2.penultimate
                 SDXL checkpoint (SDXL head counts)
unet             unet/ folder (config.json +       sample [B,4,h,w], timesteps [B],     out [B,4,h,w]
                 diffusion_pytorch_model[.fp16]    encoder_hidden_states [B,77,2048],
                 .safetensors), or one .safetensors text_embeds [B,1280], time_ids [B,6]
                 file: diffusers names, or SGM single-file names (model.diffusion_model.*;
                 SDXL base config unless --config)
vae-decode       vae/ folder (config.json +        latents [B,4,h,w] in scheduler space decoded [B,3,8h,8w] (raw),
                 diffusion_pytorch_model...), or   (divided by scaling_factor inside)   image = (decoded/2+0.5).clamp(0,1)
                 a single-file SDXL checkpoint
                 (base config: --config or SDXL's)
scheduler        scheduler_config.json (or the     sample [...], model_outputs [N,...]  timesteps [N], sigmas [N+1],
                 scheduler/ folder); --scheduler   (one per step), noise [N,...] for    samples [N,...] (after each step),
                 unipc|euler|euler_a, --steps N    euler_a                              init_noise_sigma []
                 (default: N = model_outputs rows)
controlnet       controlnet/ folder (config.json   sample [B,4,h,w], timesteps [B],     down.0 .. down.N [B,C,..]
                 + diffusion_pytorch_model...),    encoder_hidden_states [B,77,2048]    (scaled residuals, UNet
                 or one .safetensors file with     (text tokens only), text_embeds      skip order), mid;
                 diffusers names (SDXL config      [B,1280], time_ids [B,6],            unet_out [B,4,h,w] with
                 inferred unless --config);        controlnet_cond [1|B,3,8h,8w] in     --unet: the UNet step
                 --scale S (else the input         [0,1], or controlnet_cond_u8         with them applied
                 conditioning_scale [1], else 1);  [8h,8w,3] (RGB bytes, /255)
                 --unet DIR|FILE [--unet-config]

StoryMaker adapter (weights in the released layout: mask.bin torch pickle or its .safetensors conversion,
CLIP ViT-H/14 as a transformers folder):
clip-vision      image encoder folder (config.json pixel_values [B,3,224,224]         penultimate [B,257,E] (hidden_states[-2])
                 + model.safetensors)              (CLIP-normalised)
ppr              mask.bin; --dim-head N (PPR       id [N,512] (L2-normalised),          cond [N+1,20,C] (background row first),
                 perceiver head width, default 64) clip_crop [N,257,E],                 uncond [N+1,20,C] (zero features),
                                                   clip_face [N,257,E]                  tokens [1,20(N+1),C]
unet-with-       unet/ folder or file (as unet)    as unet, with encoder_hidden_states  out [B,4,h,w]
adapter          + --adapter mask.bin;             [B,77+M,C] (text then image tokens)
                 --ip-scale S --lora-scale S (0.8)
preprocess       (no weights; --weights ignored)   image [H,W,3] u8 (RGB), mask [H,W]   crop [224,224,3] (u8 values),
                                                   or [H,W,3] u8, kps [5,2] f32;        clip_img [1,3,224,224], face
                                                   optional cloth [h,w,3] u8 (then crop [224,224,3], clip_face [1,3,224,224],
                                                   is cloth resized to 224, no mask)    norm_crop_matrix [2,3], bbox [4]
                                                                                        (x0,y0,x1,y1)";

pub fn run(args: &Args) -> anyhow::Result<()> {
    let Some(component) = args.positional.first().map(String::as_str) else {
        println!("{HELP}");
        return Ok(());
    };
    if args.has("help") {
        println!("{HELP}");
        return Ok(());
    }
    let weights =
        PathBuf::from(if component == "preprocess" { args.get_or("weights", "") } else { args.require("weights")? });
    let inputs_path = PathBuf::from(args.require("inputs")?);
    let out_path = PathBuf::from(args.require("out")?);
    let device = super::parse_device(args.get_or("device", "cpu"))?;
    let dtype = super::parse_dtype(args.get_or("dtype", "f32"))?;
    let inputs = candle_core::safetensors::load(&inputs_path, &device)
        .with_context(|| format!("reading inputs {}", inputs_path.display()))?;
    let outputs = match component {
        "text-encoders" => text_encoders(&weights, &inputs, dtype, &device)?,
        "unet" => unet(&weights, args.get("config"), &inputs, dtype, &device)?,
        "vae-decode" => vae_decode(&weights, args.get("config"), &inputs, dtype, &device)?,
        "scheduler" => scheduler(&weights, args, &inputs)?,
        "controlnet" => super::controlnet_check::controlnet(&weights, args, &inputs, dtype, &device)?,
        "clip-vision" => super::adapter_check::clip_vision(&weights, &inputs, dtype, &device)?,
        "ppr" => super::adapter_check::ppr(&weights, args, &inputs, dtype, &device)?,
        "unet-with-adapter" => super::adapter_check::unet_with_adapter(&weights, args, &inputs, dtype, &device)?,
        "preprocess" => super::adapter_check::preprocess(&inputs)?,
        other => anyhow::bail!(
            "unknown component {other}; one of text-encoders, unet, vae-decode, scheduler, controlnet, clip-vision, \
             ppr, unet-with-adapter, preprocess"
        ),
    };
    let outputs: HashMap<String, Tensor> = outputs
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?.to_device(&Device::Cpu)?)))
        .collect::<candle_core::Result<_>>()?;
    candle_core::safetensors::save(&outputs, &out_path).with_context(|| format!("writing {}", out_path.display()))?;
    let mut names: Vec<_> = outputs.iter().map(|(k, v)| format!("{k} {:?}", v.dims())).collect();
    names.sort();
    println!("wrote {}: {}", out_path.display(), names.join(", "));
    Ok(())
}

pub(super) fn input<'a>(inputs: &'a HashMap<String, Tensor>, name: &str) -> anyhow::Result<&'a Tensor> {
    inputs.get(name).ok_or_else(|| anyhow::anyhow!("the inputs file has no tensor named {name} (see --help)"))
}

fn folder_vb(dir: &Path, base: &str, dtype: DType, dev: &Device) -> anyhow::Result<VarBuilder<'static>> {
    Ok(TensorStore::open(&component_weight_files(dir, base)?)?.into_var_builder(dtype, dev))
}

fn text_encoders(
    root: &Path,
    inputs: &HashMap<String, Tensor>,
    dtype: DType,
    dev: &Device,
) -> anyhow::Result<Vec<(String, Tensor)>> {
    let (m1, m2) = if root.is_file() {
        let file = SingleFileSdxl::open(root)?;
        let c1 = file.text_encoder_config(&ClipTextConfig::sdxl_clip_l())?;
        let c2 = file.text_encoder_2_config(&ClipTextConfig::sdxl_clip_g())?;
        (
            ClipTextModel::new(file.text_encoder(dtype, dev)?, &c1, false)?,
            ClipTextModel::new(file.text_encoder_2(dtype, dev)?, &c2, true)?,
        )
    } else {
        let (d1, d2) = (root.join("text_encoder"), root.join("text_encoder_2"));
        let c1 = ClipTextConfig::from_json(&component_config(&d1)?)?;
        let c2 = ClipTextConfig::from_json(&component_config(&d2)?)?;
        (
            ClipTextModel::new(folder_vb(&d1, "model", dtype, dev)?, &c1, false)?,
            ClipTextModel::new(folder_vb(&d2, "model", dtype, dev)?, &c2, true)?,
        )
    };
    let l = m1.forward(input(inputs, "input_ids_1")?)?;
    let g = m2.forward(input(inputs, "input_ids_2")?)?;
    let (embeds, pooled) = sdxl_text_embeddings(&l, &g)?;
    Ok(vec![
        ("prompt_embeds".into(), embeds),
        ("pooled_prompt_embeds".into(), pooled),
        ("text_encoder.penultimate".into(), l.penultimate),
        ("text_encoder_2.penultimate".into(), g.penultimate),
    ])
}

/// Loads a UNet from a diffusers folder or a single file (diffusers or SGM key names).
pub fn load_unet(
    weights: &Path,
    config: Option<&str>,
    dtype: DType,
    dev: &Device,
) -> anyhow::Result<UNet2DConditionModel> {
    let (store, folder_config) = if weights.is_dir() {
        (
            TensorStore::open(&component_weight_files(weights, "diffusion_pytorch_model")?)?,
            Some(component_config(weights)?),
        )
    } else {
        (TensorStore::open(&[weights.to_path_buf()])?, None)
    };
    let cfg = match (config, folder_config) {
        (Some(path), _) => UNetConfig::from_json(&std::fs::read(path)?).map_err(anyhow::Error::msg)?,
        (None, Some(json)) => UNetConfig::from_json(json.as_bytes()).map_err(anyhow::Error::msg)?,
        (None, None) => UNetConfig::sdxl_base(),
    };
    let sgm = store.names().any(|n| n.starts_with(UNET_PREFIX));
    let store = if sgm {
        let attn: Vec<bool> = cfg.up_block_types.iter().map(|t| t == "CrossAttnUpBlock2D").collect();
        let lpb = cfg.layers_per_block;
        store.with_key_map(move |k| unet_key_to_sgm(k, lpb, &attn))
    } else {
        store
    };
    Ok(UNet2DConditionModel::new(store.into_var_builder(dtype, dev), &cfg)?)
}

fn unet(
    weights: &Path,
    config: Option<&str>,
    inputs: &HashMap<String, Tensor>,
    dtype: DType,
    dev: &Device,
) -> anyhow::Result<Vec<(String, Tensor)>> {
    let model = load_unet(weights, config, dtype, dev)?;
    let f = |n: &str| -> anyhow::Result<Tensor> { Ok(input(inputs, n)?.to_dtype(dtype)?) };
    let (sample, ctx, text, ids) = (f("sample")?, f("encoder_hidden_states")?, f("text_embeds")?, f("time_ids")?);
    let out = model.forward(&UNetInput {
        sample: &sample,
        timesteps: input(inputs, "timesteps")?,
        encoder_hidden_states: &ctx,
        text_embeds: Some(&text),
        time_ids: Some(&ids),
        down_residuals: None,
        mid_residual: None,
    })?;
    Ok(vec![("out".into(), out)])
}

fn vae_decode(
    dir: &Path,
    config: Option<&str>,
    inputs: &HashMap<String, Tensor>,
    dtype: DType,
    dev: &Device,
) -> anyhow::Result<Vec<(String, Tensor)>> {
    let vae = if dir.is_file() {
        let file = SingleFileSdxl::open(dir)?;
        // Sizes come from the tensors; group count and scaling factor from --config or SDXL's.
        let base = match config {
            Some(p) => VaeConfig::from_json(&std::fs::read_to_string(p)?)?,
            None => VaeConfig::sdxl(),
        };
        let cfg = file.vae_config(&base)?;
        AutoencoderKlDecoder::new(file.vae(&cfg, dtype, dev)?, &cfg)?
    } else {
        let cfg = VaeConfig::from_json(&component_config(dir)?)?;
        AutoencoderKlDecoder::new(folder_vb(dir, "diffusion_pytorch_model", dtype, dev)?, &cfg)?
    };
    let decoded = vae.decode(&input(inputs, "latents")?.to_dtype(dtype)?)?;
    let image = crate::models::vae::to_image(&decoded)?;
    Ok(vec![("decoded".into(), decoded), ("image".into(), image)])
}

fn scheduler(weights: &Path, args: &Args, inputs: &HashMap<String, Tensor>) -> anyhow::Result<Vec<(String, Tensor)>> {
    let path = if weights.is_dir() { weights.join("scheduler_config.json") } else { weights.to_path_buf() };
    let cfg = SchedulerConfig::from_json_file(&path)?;
    let kind: SchedulerKind = args.get_or("scheduler", "unipc").parse()?;
    let outputs = input(inputs, "model_outputs")?;
    let n_rows = outputs.dim(0)?;
    let steps: usize = args.parse_or("steps", n_rows)?;
    anyhow::ensure!(steps <= n_rows, "--steps {steps} but model_outputs has {n_rows} rows");
    let mut sched = build_scheduler(kind, &cfg, steps)?;
    let mut noise: Box<dyn NoiseSource> = match inputs.get("noise") {
        Some(n) => Box::new(RecordedNoise::new(n.clone())),
        None => Box::new(NoNoise),
    };
    let mut x = input(inputs, "sample")?.clone();
    let mut samples = Vec::with_capacity(steps);
    for i in 0..steps {
        x = sched.step(&outputs.get(i)?, i, &x, noise.as_mut())?;
        samples.push(x.clone());
    }
    let dev = Device::Cpu;
    let ts: Vec<f32> = sched.timesteps().iter().map(|&t| t as f32).collect();
    let sigmas: Vec<f32> = sched.sigmas().iter().map(|&s| s as f32).collect();
    Ok(vec![
        ("timesteps".into(), Tensor::new(ts, &dev)?),
        ("sigmas".into(), Tensor::new(sigmas, &dev)?),
        ("samples".into(), Tensor::stack(&samples, 0)?),
        ("init_noise_sigma".into(), Tensor::new(sched.init_noise_sigma() as f32, &dev)?),
    ])
}
