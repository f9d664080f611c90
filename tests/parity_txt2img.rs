//! End to end against `StableDiffusionXLPipeline` (diffusers 0.42.1) on the tiny fixture models:
//! both text encoders → 3 UniPC steps with CFG 5.0 → VAE decode (tools/parity/README.md,
//! "End-to-end: the exact sequence").

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use common::{max_rel_err, parity_fixture};
use storymaker::models::clip_text::{sdxl_text_embeddings, ClipTextConfig, ClipTextModel};
use storymaker::models::unet::{UNet2DConditionModel, UNetConfig};
use storymaker::models::vae::{AutoencoderKlDecoder, VaeConfig};
use storymaker::pipeline::{denoise, SdxlConditioning, StepControl};
use storymaker::sampling::{build_scheduler, Guidance, NoNoise, SchedulerConfig, SchedulerKind};
use storymaker::weights::store::TensorStore;

fn vb(name: &str) -> candle_nn::VarBuilder<'static> {
    TensorStore::open(&[parity_fixture(name)]).expect("weights").into_var_builder(DType::F32, &Device::Cpu)
}

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(parity_fixture(name), &Device::Cpu).expect("fixture")
}

fn text(name: &str) -> String {
    std::fs::read_to_string(parity_fixture(name)).expect("config")
}

#[test]
fn txt2img_matches_the_diffusers_pipeline() {
    let e2e = load("e2e_txt2img.safetensors");
    let ids = load("clip_text.safetensors");

    // Text conditioning from the token ids (row 0 negative, row 1 positive).
    let l_cfg = ClipTextConfig::from_json(&text("clip_l.config.json")).unwrap();
    let g_cfg = ClipTextConfig::from_json(&text("clip_g.config.json")).unwrap();
    let clip_l = ClipTextModel::new(vb("clip_l.weights.safetensors"), &l_cfg, false).unwrap();
    let clip_g = ClipTextModel::new(vb("clip_g.weights.safetensors"), &g_cfg, true).unwrap();
    let l = clip_l.forward(&ids["clip_l.input_ids"]).unwrap();
    let g = clip_g.forward(&ids["clip_g.input_ids"]).unwrap();
    let (prompt_embeds, pooled) = sdxl_text_embeddings(&l, &g).unwrap();
    let e = max_rel_err(&prompt_embeds, &e2e["prompt_embeds"]);
    assert!(e < 1e-4, "prompt_embeds rel err {e}");
    let e = max_rel_err(&pooled, &e2e["add_text_embeds"]);
    assert!(e < 1e-4, "pooled rel err {e}");
    let row = |t: &Tensor, i: usize| t.narrow(0, i, 1).unwrap();
    let cond = SdxlConditioning {
        prompt_embeds: row(&prompt_embeds, 1),
        pooled: row(&pooled, 1),
        negative_prompt_embeds: row(&prompt_embeds, 0),
        negative_pooled: row(&pooled, 0),
    };

    let unet_cfg = UNetConfig::from_json(text("unet.config.json").as_bytes()).unwrap();
    let unet = UNet2DConditionModel::new(vb("unet.weights.safetensors"), &unet_cfg).unwrap();
    let sched_cfg = SchedulerConfig::from_json_str(&text("sched_sdxl_base.config.json")).unwrap();
    let mut sched = build_scheduler(SchedulerKind::UniPc, &sched_cfg, 3).unwrap();
    let mut steps_seen = Vec::new();
    let latents = denoise(
        &unet,
        sched.as_mut(),
        &e2e["init_noise"],
        &cond,
        Guidance::new(5.0),
        (128, 96),
        &mut NoNoise,
        &mut |info| {
            let expect = e2e["step.latents"].get(info.step - 1).unwrap();
            steps_seen.push(max_rel_err(info.latents, &expect));
            StepControl::Continue
        },
    )
    .unwrap();
    println!("per-step latent rel err {steps_seen:?}");
    assert_eq!(steps_seen.len(), 3);
    let e = max_rel_err(&latents, &e2e["final_latents"]);
    println!("final latents rel err {e}");
    assert!(e < 1e-3, "final latents rel err {e}");

    let vae_cfg = VaeConfig::from_json(&text("vae.config.json")).unwrap();
    let vae = AutoencoderKlDecoder::new(vb("vae.weights.safetensors"), &vae_cfg).unwrap();
    let decoded = vae.decode(&latents).unwrap();
    let e = max_rel_err(&decoded, &e2e["decoded"]);
    println!("decoded rel err {e}");
    assert!(e < 1e-3, "decoded rel err {e}");
}

#[test]
fn cancel_stops_before_the_next_unet_call() {
    let e2e = load("e2e_txt2img.safetensors");
    let unet_cfg = UNetConfig::from_json(text("unet.config.json").as_bytes()).unwrap();
    let unet = UNet2DConditionModel::new(vb("unet.weights.safetensors"), &unet_cfg).unwrap();
    let sched_cfg = SchedulerConfig::from_json_str(&text("sched_sdxl_base.config.json")).unwrap();
    let mut sched = build_scheduler(SchedulerKind::UniPc, &sched_cfg, 3).unwrap();
    let embeds = e2e["prompt_embeds"].clone();
    let pooled = e2e["add_text_embeds"].clone();
    let cond = SdxlConditioning {
        prompt_embeds: embeds.narrow(0, 1, 1).unwrap(),
        pooled: pooled.narrow(0, 1, 1).unwrap(),
        negative_prompt_embeds: embeds.narrow(0, 0, 1).unwrap(),
        negative_pooled: pooled.narrow(0, 0, 1).unwrap(),
    };
    let mut calls = 0;
    let r = denoise(
        &unet,
        sched.as_mut(),
        &e2e["init_noise"],
        &cond,
        Guidance::new(5.0),
        (128, 96),
        &mut NoNoise,
        &mut |_| {
            calls += 1;
            StepControl::Cancel
        },
    );
    assert!(matches!(r, Err(storymaker::pipeline::PipelineError::Cancelled)));
    assert_eq!(calls, 1);
}
