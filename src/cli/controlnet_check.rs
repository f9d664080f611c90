//! The `controlnet` component of `storymaker tensor-check` (see its `HELP`): runs the SDXL
//! ControlNet on given tensors and writes its scaled residuals, and with `--unet` also the UNet
//! step with those residuals applied, so a reference implementation can be compared with ours.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::args::Args;
use super::tensor_check::{input, load_unet};
use crate::models::controlnet::{
    conditioning_image, load_controlnet, ControlNetConfig, ControlNetFiles, ControlNetInput,
};
use crate::models::unet::UNetInput;

/// Runs the component; `weights` is the ControlNet folder or file.
pub fn controlnet(
    weights: &Path,
    args: &Args,
    inputs: &HashMap<String, Tensor>,
    dtype: DType,
    dev: &Device,
) -> anyhow::Result<Vec<(String, Tensor)>> {
    let files = ControlNetFiles::from_path(weights)?;
    let config = match args.get("config") {
        Some(p) => Some(ControlNetConfig::from_json(&std::fs::read(p)?).map_err(|e| anyhow::anyhow!("{p}: {e}"))?),
        None => None,
    };
    let model = load_controlnet(&files, config.as_ref(), dtype, dev)?;
    let f = |n: &str| -> anyhow::Result<Tensor> { Ok(input(inputs, n)?.to_dtype(dtype)?) };
    let (sample, ctx, text, ids) = (f("sample")?, f("encoder_hidden_states")?, f("text_embeds")?, f("time_ids")?);
    let cond = match inputs.get("controlnet_cond") {
        Some(c) => c.to_dtype(dtype)?,
        None => {
            let u8s = input(inputs, "controlnet_cond_u8")?;
            let (h, w, c) = u8s.dims3()?;
            anyhow::ensure!(c == 3, "controlnet_cond_u8 must be [H, W, 3]");
            let bytes: Vec<u8> = u8s.to_dtype(DType::U8)?.flatten_all()?.to_vec1()?;
            conditioning_image(&bytes, w, h, dev)?.to_dtype(dtype)?
        }
    };
    let scale: f64 = match (args.get("scale"), inputs.get("conditioning_scale")) {
        (Some(_), _) => args.parse_or("scale", 1.0)?,
        (None, Some(t)) => t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?.first().copied().unwrap_or(1.0),
        (None, None) => 1.0,
    };
    let timesteps = input(inputs, "timesteps")?;
    let (down, mid) = model.forward(&ControlNetInput {
        sample: &sample,
        timesteps,
        encoder_hidden_states: &ctx,
        text_embeds: Some(&text),
        time_ids: Some(&ids),
        cond_image: &cond,
        conditioning_scale: scale,
    })?;
    let mut out: Vec<(String, Tensor)> =
        down.iter().enumerate().map(|(i, d)| (format!("down.{i}"), d.clone())).collect();
    out.push(("mid".into(), mid.clone()));
    if let Some(unet_path) = args.get("unet") {
        let unet = load_unet(Path::new(unet_path), args.get("unet-config"), dtype, dev)?;
        let y = unet.forward(&UNetInput {
            sample: &sample,
            timesteps,
            encoder_hidden_states: &ctx,
            text_embeds: Some(&text),
            time_ids: Some(&ids),
            down_residuals: Some(&down),
            mid_residual: Some(&mid),
        })?;
        out.push(("unet_out".into(), y));
    }
    Ok(out)
}
