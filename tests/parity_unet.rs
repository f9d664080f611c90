//! The SDXL UNet against diffusers 0.42.1 on the tiny fixture (tools/parity/gen_sdxl.py):
//! per-sample timesteps, text_time conditioning, odd latent sizes, and the SGM single-file
//! layout of the same weights.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{max_rel_err, parity_fixture};
use storymaker::models::unet::{UNet2DConditionModel, UNetConfig, UNetInput};
use storymaker::weights::sgm::unet_key_to_sgm;
use storymaker::weights::store::TensorStore;

const TOL: f32 = 1e-4;

fn config() -> UNetConfig {
    let bytes = std::fs::read(parity_fixture("unet.config.json")).expect("config");
    UNetConfig::from_json(&bytes).expect("valid config")
}

fn io() -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(parity_fixture("unet.io.safetensors"), &Device::Cpu).expect("io fixture")
}

fn run(unet: &UNet2DConditionModel, io: &std::collections::HashMap<String, Tensor>, sample: &str) -> Tensor {
    let input = UNetInput {
        sample: &io[sample],
        timesteps: &io["timesteps"],
        encoder_hidden_states: &io["encoder_hidden_states"],
        text_embeds: Some(&io["text_embeds"]),
        time_ids: Some(&io["time_ids"]),
        down_residuals: None,
        mid_residual: None,
    };
    unet.forward(&input).expect("forward")
}

fn diffusers_unet(cfg: &UNetConfig) -> UNet2DConditionModel {
    let vb = TensorStore::open(&[parity_fixture("unet.weights.safetensors")])
        .expect("weights")
        .into_var_builder(DType::F32, &Device::Cpu);
    UNet2DConditionModel::new(vb, cfg).expect("build unet")
}

#[test]
fn unet_matches_diffusers() {
    let cfg = config();
    let unet = diffusers_unet(&cfg);
    let io = io();
    let emb = unet
        .time_embedding(&UNetInput {
            sample: &io["sample"],
            timesteps: &io["timesteps"],
            encoder_hidden_states: &io["encoder_hidden_states"],
            text_embeds: Some(&io["text_embeds"]),
            time_ids: Some(&io["time_ids"]),
            down_residuals: None,
            mid_residual: None,
        })
        .unwrap();
    let e = max_rel_err(&emb, &io["dbg.emb"]);
    assert!(e < TOL, "time embedding rel err {e}");
    let out = run(&unet, &io, "sample");
    let e = max_rel_err(&out, &io["out"]);
    println!("unet rel err {e}");
    assert!(e < TOL, "unet rel err {e}");
}

#[test]
fn unet_matches_diffusers_at_an_odd_latent_size() {
    let cfg = config();
    let unet = diffusers_unet(&cfg);
    let io = io();
    let out = run(&unet, &io, "odd.sample");
    let e = max_rel_err(&out, &io["odd.out"]);
    println!("odd-size unet rel err {e}");
    assert!(e < TOL, "odd-size rel err {e}");
}

#[test]
fn single_file_sgm_layout_gives_identical_output() {
    let cfg = config();
    let attn: Vec<bool> = cfg.up_block_types.iter().map(|t| t == "CrossAttnUpBlock2D").collect();
    let lpb = cfg.layers_per_block;
    let vb = TensorStore::open(&[parity_fixture("unet.sgm.safetensors")])
        .expect("sgm weights")
        .with_key_map(move |k| unet_key_to_sgm(k, lpb, &attn))
        .into_var_builder(DType::F32, &Device::Cpu);
    let sgm = UNet2DConditionModel::new(vb, &cfg).expect("build from SGM names");
    let io = io();
    let a = run(&sgm, &io, "sample");
    let b = run(&diffusers_unet(&cfg), &io, "sample");
    assert_eq!(max_rel_err(&a, &b), 0.0, "same weights, same numbers");
}

#[test]
fn a_mis_shaped_tensor_is_named_with_file_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = candle_core::safetensors::load(parity_fixture("unet.weights.safetensors"), &Device::Cpu).unwrap();
    tensors.insert("conv_in.weight".into(), Tensor::zeros((16, 4, 1, 1), DType::F32, &Device::Cpu).unwrap());
    let path = dir.path().join("bad.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let vb = TensorStore::open(std::slice::from_ref(&path)).unwrap().into_var_builder(DType::F32, &Device::Cpu);
    let err = UNet2DConditionModel::new(vb, &config()).err().expect("must fail").to_string();
    assert!(err.contains("bad.safetensors"), "{err}");
    assert!(err.contains("conv_in.weight") && err.contains("[16, 4, 1, 1]") && err.contains("[16, 4, 3, 3]"), "{err}");
}
