//! The SDXL ControlNet against diffusers 0.42.1 (tools/parity/gen_controlnet.py): its residuals,
//! one UNet step with them applied, the per-step guidance window of the real
//! `StableDiffusionXLControlNetPipeline`, the loaders, and `tensor-check controlnet`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use common::{max_rel_err, parity_fixture};
use storymaker::models::controlnet::{
    conditioning_image, load_controlnet, ControlGuidance, ControlNetConfig, ControlNetFiles, ControlNetInput,
    ControlNetModel,
};
use storymaker::models::unet::{UNet2DConditionModel, UNetConfig, UNetInput};
use storymaker::weights::store::TensorStore;

const TOL: f32 = 1e-4;

fn fx(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/controlnet").join(name)
}

fn io() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fx("io.safetensors"), &Device::Cpu).expect("io fixture")
}

fn controlnet() -> ControlNetModel {
    let files = ControlNetFiles::from_path(&fx("controlnet")).expect("folder");
    assert_eq!(files.config, Some(fx("controlnet/config.json")));
    load_controlnet(&files, None, DType::F32, &Device::Cpu).expect("load controlnet")
}

fn unet() -> UNet2DConditionModel {
    let cfg = UNetConfig::from_json(&std::fs::read(parity_fixture("unet.config.json")).unwrap()).unwrap();
    let vb = TensorStore::open(&[parity_fixture("unet.weights.safetensors")])
        .unwrap()
        .into_var_builder(DType::F32, &Device::Cpu);
    UNet2DConditionModel::new(vb, &cfg).expect("unet")
}

/// `[H, W, 3]` u8 fixture → `[1, 3, H, W]` in [0, 1] through the public helper.
fn cond(io: &HashMap<String, Tensor>, key: &str) -> Tensor {
    let t = &io[key];
    let (h, w, _) = t.dims3().unwrap();
    let bytes: Vec<u8> = t.flatten_all().unwrap().to_vec1().unwrap();
    conditioning_image(&bytes, w, h, &Device::Cpu).unwrap()
}

struct Case<'a> {
    sample: &'a Tensor,
    timesteps: &'a Tensor,
    ctx: Tensor,
    text: Tensor,
    ids: Tensor,
    cond: Tensor,
    scale: f64,
}

fn main_case(io: &HashMap<String, Tensor>) -> Case<'_> {
    Case {
        sample: &io["sample"],
        timesteps: &io["timesteps"],
        ctx: io["encoder_hidden_states"].clone(),
        text: io["text_embeds"].clone(),
        ids: io["time_ids"].clone(),
        cond: cond(io, "controlnet_cond_u8"),
        scale: io["conditioning_scale"].to_vec1::<f32>().unwrap()[0] as f64,
    }
}

/// Batch 1 at latent 10x14: row 1 of the main conditioning, scale 1.
fn odd_case(io: &HashMap<String, Tensor>) -> Case<'_> {
    let row = |k: &str| io[k].narrow(0, 1, 1).unwrap();
    Case {
        sample: &io["odd.sample"],
        timesteps: &io["odd.timesteps"],
        ctx: row("encoder_hidden_states"),
        text: row("text_embeds"),
        ids: row("time_ids"),
        cond: cond(io, "odd.controlnet_cond_u8"),
        scale: 1.0,
    }
}

fn cn_input<'a>(c: &'a Case) -> ControlNetInput<'a> {
    ControlNetInput {
        sample: c.sample,
        timesteps: c.timesteps,
        encoder_hidden_states: &c.ctx,
        text_embeds: Some(&c.text),
        time_ids: Some(&c.ids),
        cond_image: &c.cond,
        conditioning_scale: c.scale,
    }
}

fn unet_step(unet: &UNet2DConditionModel, c: &Case, res: Option<(&[Tensor], &Tensor)>) -> Tensor {
    unet.forward(&UNetInput {
        sample: c.sample,
        timesteps: c.timesteps,
        encoder_hidden_states: &c.ctx,
        text_embeds: Some(&c.text),
        time_ids: Some(&c.ids),
        down_residuals: res.map(|r| r.0),
        mid_residual: res.map(|r| r.1),
    })
    .expect("unet forward")
}

fn check_residuals(prefix: &str, down: &[Tensor], mid: &Tensor, io: &HashMap<String, Tensor>) -> f32 {
    let n = io.keys().filter(|k| k.starts_with(&format!("{prefix}down."))).count();
    assert_eq!(down.len(), n, "residual count");
    let mut worst = 0f32;
    for (i, d) in down.iter().enumerate() {
        let e = max_rel_err(d, &io[&format!("{prefix}down.{i}")]);
        assert!(e < TOL, "{prefix}down.{i} rel err {e}");
        worst = worst.max(e);
    }
    let e = max_rel_err(mid, &io[&format!("{prefix}mid")]);
    assert!(e < TOL, "{prefix}mid rel err {e}");
    worst.max(e)
}

#[test]
fn controlnet_residuals_and_unet_step_match_diffusers() {
    let io = io();
    let cn = controlnet();
    assert_eq!(cn.config().transformer_layers_per_block.get(2), 1, "depth comes from the ControlNet's own config");
    let c = main_case(&io);
    assert!((c.scale - 0.7).abs() < 1e-6);
    let emb = cn.time_embedding(&cn_input(&c)).unwrap();
    let e = max_rel_err(&emb, &io["dbg.emb"]);
    assert!(e < TOL, "time embedding rel err {e}");
    let (down, mid) = cn.forward(&cn_input(&c)).expect("controlnet forward");
    let worst = check_residuals("", &down, &mid, &io);
    println!("controlnet residuals: worst rel err {worst:e}");

    let unet = unet();
    let out = unet_step(&unet, &c, Some((&down, &mid)));
    let e = max_rel_err(&out, &io["unet_out"]);
    println!("unet step with residuals: rel err {e:e}");
    assert!(e < TOL, "unet with residuals rel err {e}");
    // The residuals matter: without them the same step is far from the reference.
    let plain = unet_step(&unet, &c, None);
    assert!(max_rel_err(&plain, &io["unet_out"]) > 0.05);
}

#[test]
fn controlnet_matches_diffusers_at_an_odd_latent_size() {
    let io = io();
    let cn = controlnet();
    let c = odd_case(&io);
    let (down, mid) = cn.forward(&cn_input(&c)).unwrap();
    let worst = check_residuals("odd.", &down, &mid, &io);
    let out = unet_step(&unet(), &c, Some((&down, &mid)));
    let e = max_rel_err(&out, &io["odd.unet_out"]);
    println!("odd size: residuals worst rel err {worst:e}, unet step rel err {e:e}");
    assert!(e < TOL, "odd-size unet with residuals rel err {e}");
}

#[test]
fn a_batch_of_one_image_serves_the_cfg_batch_and_bad_sizes_are_explained() {
    let io = io();
    let cn = controlnet();
    let c = main_case(&io);
    let (one, _) = cn.forward(&cn_input(&c)).unwrap();
    let both = Case { cond: Tensor::cat(&[&c.cond, &c.cond], 0).unwrap(), ..main_case(&io) };
    let (two, _) = cn.forward(&cn_input(&both)).unwrap();
    assert_eq!(max_rel_err(&one[0], &two[0]), 0.0);

    let small = Case { cond: c.cond.narrow(2, 0, 64).unwrap(), ..main_case(&io) };
    let err = cn.forward(&cn_input(&small)).expect_err("must fail").to_string();
    assert!(err.contains("128x96"), "{err}");
}

#[test]
fn guidance_window_matches_the_diffusers_pipeline() {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(fx("keep.json")).unwrap()).unwrap();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let f = |k: &str| case[k].as_f64().unwrap();
        let steps = case["steps"].as_u64().unwrap() as usize;
        let g = ControlGuidance::new(f("scale"), f("start"), f("end")).unwrap();
        let ours: Vec<f64> = (0..steps).map(|i| g.scale_at(i, steps)).collect();
        let theirs: Vec<f64> = case["scales"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(ours, theirs, "{case}");
    }
}

#[test]
fn single_file_loads_with_a_config_and_explains_without_one() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("OpenPoseXL-tiny.safetensors");
    std::fs::copy(fx("controlnet/diffusion_pytorch_model.safetensors"), &file).unwrap();
    let files = ControlNetFiles::from_path(&file).unwrap();
    assert_eq!(files.config, None);
    // No config: the SDXL config is checked against the shapes, and the tiny model is not SDXL.
    let err = load_controlnet(&files, None, DType::F32, &Device::Cpu).err().expect("must fail").to_string();
    assert!(err.contains("conv_in.weight") && err.contains("[16, 4, 3, 3]") && err.contains("config.json"), "{err}");
    // With its config the single file gives the folder's numbers.
    let cfg = ControlNetConfig::from_json(&std::fs::read(fx("controlnet/config.json")).unwrap()).unwrap();
    let single = load_controlnet(&files, Some(&cfg), DType::F32, &Device::Cpu).unwrap();
    let io = io();
    let c = main_case(&io);
    let (a, _) = single.forward(&cn_input(&c)).unwrap();
    let (b, _) = controlnet().forward(&cn_input(&c)).unwrap();
    assert_eq!(max_rel_err(&a[8], &b[8]), 0.0);
    // Something that is not a diffusers ControlNet is named as such.
    let not_cn = TensorStore::open(&[parity_fixture("unet.weights.safetensors")]).unwrap();
    assert!(not_cn.contains("conv_in.weight"));
    let files = ControlNetFiles { weights: vec![parity_fixture("unet.weights.safetensors")], config: None };
    let err = load_controlnet(&files, None, DType::F32, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("controlnet_cond_embedding.conv_in.weight"), "{err}");
}

fn tensor_check(
    weights: &Path,
    extra: &[&str],
    inputs: &HashMap<String, Tensor>,
    dir: &Path,
) -> HashMap<String, Tensor> {
    let inp = dir.join("in.safetensors");
    let out = dir.join("out.safetensors");
    candle_core::safetensors::save(inputs, &inp).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_storymaker"))
        .args(["tensor-check", "controlnet", "--weights"])
        .arg(weights)
        .arg("--inputs")
        .arg(&inp)
        .arg("--out")
        .arg(&out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    candle_core::safetensors::load(&out, &Device::Cpu).unwrap()
}

#[test]
fn tensor_check_controlnet_component() {
    let d = tempfile::tempdir().unwrap();
    let io = io();
    let unet_w = parity_fixture("unet.weights.safetensors");
    let unet_c = parity_fixture("unet.config.json");
    let out = tensor_check(
        &fx("controlnet"),
        &["--unet", unet_w.to_str().unwrap(), "--unet-config", unet_c.to_str().unwrap()],
        &io,
        d.path(),
    );
    let down: Vec<Tensor> = (0..9).map(|i| out[&format!("down.{i}")].clone()).collect();
    check_residuals("", &down, &out["mid"], &io);
    let e = max_rel_err(&out["unet_out"], &io["unet_out"]);
    assert!(e < TOL, "tensor-check unet_out rel err {e}");
    // --scale overrides the inputs' conditioning_scale (residuals are linear in it).
    let out2 = tensor_check(&fx("controlnet"), &["--scale", "1.4"], &io, d.path());
    assert!(!out2.contains_key("unet_out"));
    let doubled = (&io["mid"] * 2.0).unwrap();
    assert!(max_rel_err(&out2["mid"], &doubled) < TOL);
}
