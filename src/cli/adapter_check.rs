//! The StoryMaker components of `storymaker tensor-check` (see its `HELP`): CLIP vision, the PPR,
//! the UNet with the adapter's processors attached, and the character preprocessing — each run on
//! given tensors so the reference implementation can be compared with ours without Rust.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;

use super::args::Args;
use super::tensor_check::{input, load_unet};
use crate::imaging::character::{character_crop, clip_pixels, resize_bicubic_pil, CLIP_SIZE};
use crate::imaging::face_align::{aligned_face, estimate_norm};
use crate::imaging::mask::Mask;
use crate::models::adapter::{attach_ip_adapter, AdapterScales, PositionalPerceiverResampler};
use crate::models::unet::UNetInput;
use crate::pipeline::storymaker::load_image_encoder;
use crate::weights::adapter_bin::load_adapter;

type Outputs = Vec<(String, Tensor)>;

pub fn clip_vision(
    dir: &Path,
    inputs: &HashMap<String, Tensor>,
    dtype: DType,
    dev: &Device,
) -> anyhow::Result<Outputs> {
    let clip = load_image_encoder(dir, dev, dtype)?;
    let px = input(inputs, "pixel_values")?.to_dtype(dtype)?;
    Ok(vec![("penultimate".into(), clip.forward_penultimate(&px)?.penultimate)])
}

pub fn ppr(
    weights: &Path,
    args: &Args,
    inputs: &HashMap<String, Tensor>,
    dtype: DType,
    dev: &Device,
) -> anyhow::Result<Outputs> {
    let w = load_adapter(weights, dev)?;
    let dim_head: usize = args.parse_or("dim-head", crate::models::adapter::resampler::DIM_HEAD)?;
    let ppr =
        PositionalPerceiverResampler::with_dim_head(VarBuilder::from_tensors(w.image_proj_model, dtype, dev), dim_head)
            .with_context(|| format!("image_proj_model of {}", weights.display()))?;
    let f = |n: &str| -> anyhow::Result<Tensor> { Ok(input(inputs, n)?.to_dtype(dtype)?) };
    let (id, crop, face) = (f("id")?, f("clip_crop")?, f("clip_face")?);
    let cond = ppr.forward(&id, &face, &crop)?;
    let uncond = ppr.forward(&id.zeros_like()?, &face.zeros_like()?, &crop.zeros_like()?)?;
    let (n, k, c) = cond.dims3()?;
    let tokens = cond.reshape((1, n * k, c))?;
    Ok(vec![("cond".into(), cond), ("uncond".into(), uncond), ("tokens".into(), tokens)])
}

pub fn unet_with_adapter(
    weights: &Path,
    args: &Args,
    inputs: &HashMap<String, Tensor>,
    dtype: DType,
    dev: &Device,
) -> anyhow::Result<Outputs> {
    let mut unet = load_unet(weights, args.get("config"), dtype, dev)?;
    let adapter = Path::new(args.require("adapter")?);
    let w = load_adapter(adapter, dev)?;
    let scales = Arc::new(AdapterScales::default());
    scales.set(args.parse_or("ip-scale", 0.8f32)?, args.parse_or("lora-scale", 0.8f32)?);
    let n = attach_ip_adapter(&mut unet, VarBuilder::from_tensors(w.ip_adapter, dtype, dev), scales)
        .with_context(|| format!("ip_adapter of {}", adapter.display()))?;
    eprintln!("attached {n} attention processors");
    let f = |n: &str| -> anyhow::Result<Tensor> { Ok(input(inputs, n)?.to_dtype(dtype)?) };
    let (sample, ctx, text, ids) = (f("sample")?, f("encoder_hidden_states")?, f("text_embeds")?, f("time_ids")?);
    let out = unet.forward(&UNetInput {
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

/// `[H, W, 3]` (or `[H, W]` for masks) integer tensor → bytes, refusing other shapes.
fn u8_image(t: &Tensor, what: &str) -> anyhow::Result<(u32, u32, usize, Vec<u8>)> {
    let dims = t.dims().to_vec();
    let (h, w, c) = match dims.as_slice() {
        [h, w] => (*h, *w, 1),
        [h, w, c] if *c == 1 || *c == 3 => (*h, *w, *c),
        _ => anyhow::bail!("{what} must be [H, W, 3] or [H, W] uint8, got {dims:?}"),
    };
    let data: Vec<u8> = t.to_dtype(DType::U8)?.flatten_all()?.to_vec1()?;
    Ok((w as u32, h as u32, c, data))
}

fn rgb(t: &Tensor, what: &str) -> anyhow::Result<RgbImage> {
    let (w, h, c, data) = u8_image(t, what)?;
    anyhow::ensure!(c == 3, "{what} must have 3 channels (RGB)");
    RgbImage::from_raw(w, h, data).ok_or_else(|| anyhow::anyhow!("{what}: bad size"))
}

fn image_tensor(img: &RgbImage) -> anyhow::Result<Tensor> {
    let (w, h) = img.dimensions();
    let v: Vec<f32> = img.as_raw().iter().map(|&b| f32::from(b)).collect();
    Ok(Tensor::from_vec(v, (h as usize, w as usize, 3), &Device::Cpu)?)
}

fn clip_tensor(img: &RgbImage) -> anyhow::Result<Tensor> {
    let s = CLIP_SIZE as usize;
    Ok(Tensor::from_vec(clip_pixels(img), (1, 3, s, s), &Device::Cpu)?)
}

pub fn preprocess(inputs: &HashMap<String, Tensor>) -> anyhow::Result<Outputs> {
    let photo = rgb(input(inputs, "image")?, "image")?;
    let (mw, mh, mc, mdata) = u8_image(input(inputs, "mask")?, "mask")?;
    // A 3-channel mask (as `infer.py` feeds it) uses its first channel, like the reference's `mask[:,:,0]`.
    let grey: Vec<u8> = mdata.chunks(mc).map(|p| p[0]).collect();
    let mask = Mask::from_raw(mw, mh, grey).ok_or_else(|| anyhow::anyhow!("mask: bad size"))?;
    let mut out = Vec::new();
    let bbox = mask.bbox().ok_or_else(|| anyhow::anyhow!("the mask is empty"))?;
    out.push((
        "bbox".to_string(),
        Tensor::new(&[bbox.x as f32, bbox.y as f32, (bbox.x + bbox.w) as f32, (bbox.y + bbox.h) as f32], &Device::Cpu)?,
    ));
    let crop = match inputs.get("cloth") {
        Some(c) => resize_bicubic_pil(&rgb(c, "cloth")?, CLIP_SIZE, CLIP_SIZE),
        None => character_crop(&photo, &mask)?,
    };
    out.push(("crop".into(), image_tensor(&crop)?));
    out.push(("clip_img".into(), clip_tensor(&crop)?));
    if let Some(k) = inputs.get("kps") {
        let v: Vec<Vec<f32>> = k.to_dtype(DType::F32)?.to_vec2().context("kps must be [5, 2]")?;
        anyhow::ensure!(v.len() == 5 && v.iter().all(|r| r.len() == 2), "kps must be [5, 2]");
        let kps: [[f32; 2]; 5] = std::array::from_fn(|i| [v[i][0], v[i][1]]);
        let face = aligned_face(&photo, &kps, CLIP_SIZE)?;
        let m = estimate_norm(&kps, CLIP_SIZE)?;
        let flat: Vec<f32> = m.iter().flat_map(|r| r.iter().map(|&x| x as f32)).collect();
        out.push(("face".into(), image_tensor(&face)?));
        out.push(("clip_face".into(), clip_tensor(&face)?));
        out.push(("norm_crop_matrix".into(), Tensor::from_vec(flat, (2, 3), &Device::Cpu)?));
    }
    Ok(out)
}
