//! Parity of `models::clip_vision` with transformers' `CLIPVisionModelWithProjection` on the tiny
//! random-weight fixture made by `tools/parity/gen_clip_vision.py` (`clip_vision.*`).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use storymaker::models::clip_vision::{ClipVisionConfig, ClipVisionModel};
use storymaker::weights::store::TensorStore;

use common::{max_rel_err, parity_fixture};

const TOL: f32 = 1e-4;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn load_model(with_projection: bool) -> Result<ClipVisionModel, Box<dyn std::error::Error>> {
    let cfg = ClipVisionConfig::from_json_file(&parity_fixture("clip_vision.config.json"))?;
    let vb = TensorStore::open(&[parity_fixture("clip_vision.weights.safetensors")])?
        .into_var_builder(DType::F32, &Device::Cpu);
    Ok(ClipVisionModel::new(vb, &cfg, with_projection)?)
}

fn io() -> Result<HashMap<String, Tensor>, Box<dyn std::error::Error>> {
    Ok(candle_core::safetensors::load(parity_fixture("clip_vision.io.safetensors"), &Device::Cpu)?)
}

fn get<'a>(io: &'a HashMap<String, Tensor>, key: &str) -> &'a Tensor {
    io.get(key).unwrap_or_else(|| panic!("clip_vision.io.safetensors has no {key}"))
}

fn check(what: &str, ours: &Tensor, reference: &Tensor) {
    let err = max_rel_err(ours, reference);
    eprintln!("{what}: max rel err {err:.3e}");
    assert!(err < TOL, "{what}: max rel err {err:e} >= {TOL:e}");
}

#[test]
fn config_is_the_tiny_vit() -> TestResult {
    let cfg = ClipVisionConfig::from_json_file(&parity_fixture("clip_vision.config.json"))?;
    assert_eq!((cfg.image_size, cfg.patch_size, cfg.num_positions()), (56, 14, 17));
    assert_eq!((cfg.hidden_size, cfg.num_hidden_layers, cfg.projection_dim), (32, 3, 24));
    Ok(())
}

#[test]
fn matches_transformers() -> TestResult {
    let io = io()?;
    let model = load_model(true)?;
    let pixels = get(&io, "pixel_values");

    let out = model.forward(pixels)?;
    check("penultimate", &out.penultimate, get(&io, "penultimate"));
    check("pooled (post_layernorm CLS)", out.last_hidden.as_ref().expect("pooled"), get(&io, "pooled"));
    check("image_embeds", out.image_embeds.as_ref().expect("image_embeds"), get(&io, "image_embeds"));

    let hs = model.hidden_states(pixels)?;
    check("hidden_states (all, stacked)", &Tensor::stack(&hs, 0)?, get(&io, "hidden_states"));

    // StoryMaker's path: same penultimate without running the last layer.
    let short = model.forward_penultimate(pixels)?;
    check("forward_penultimate", &short.penultimate, get(&io, "penultimate"));
    assert!(short.last_hidden.is_none() && short.image_embeds.is_none());
    Ok(())
}

#[test]
fn without_projection_has_no_image_embeds() -> TestResult {
    let io = io()?;
    let model = load_model(false)?;
    assert!(!model.has_projection());
    let out = model.forward(get(&io, "pixel_values"))?;
    check("penultimate (no projection)", &out.penultimate, get(&io, "penultimate"));
    assert!(out.image_embeds.is_none());
    Ok(())
}

#[test]
fn wrong_image_size_is_a_clear_error() -> TestResult {
    let model = load_model(true)?;
    let wrong = Tensor::zeros((1, 3, 42, 56), DType::F32, &Device::Cpu)?;
    let err = model.forward(&wrong).expect_err("a 42x56 input must be rejected").to_string();
    assert!(err.contains("[1, 3, 42, 56]") && err.contains("56"), "unhelpful error: {err}");
    let four = Tensor::zeros((1, 4, 56, 56), DType::F32, &Device::Cpu)?;
    let err = model.forward_penultimate(&four).expect_err("4 channels must be rejected").to_string();
    assert!(err.contains("[1, 4, 56, 56]"), "unhelpful error: {err}");
    let flat = Tensor::zeros((3, 56, 56), DType::F32, &Device::Cpu)?;
    let err = model.forward(&flat).expect_err("a 3-d input must be rejected").to_string();
    assert!(err.contains("[3, 56, 56]"), "unhelpful error: {err}");
    eprintln!("wrong-size error: {}", model.forward(&wrong).expect_err("rejected"));
    Ok(())
}
