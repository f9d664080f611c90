//! StoryMaker end to end against the unmodified reference pipeline
//! (`StableDiffusionXLStoryMakerPipeline`, RedAIGC/StoryMaker a7ce766) on tiny random weights
//! written in the real layouts (`mask.bin` torch pickle, transformers CLIP folder):
//! tools/parity/gen_storymaker.py. Covers spec §8.1 P1–P20 for two characters, clothing swap and
//! "ID only".

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use common::{max_rel_err, parity_fixture};
use storymaker::imaging::mask::Mask;
use storymaker::models::adapter::{AdapterScales, StoryMakerAttention};
use storymaker::models::attention::Attention;
use storymaker::models::unet::{UNet2DConditionModel, UNetConfig, UNetInput};
use storymaker::pipeline::{
    denoise, with_image_tokens, AdapterFiles, AdapterOptions, CharacterEmbedding, CharacterInput, SdxlConditioning,
    SlotCondition, StepControl, StoryMakerAdapter,
};
use storymaker::sampling::{build_scheduler, Guidance, NoNoise, SchedulerConfig, SchedulerKind};
use storymaker::weights::adapter_bin::load_adapter;
use storymaker::weights::store::TensorStore;

fn fx(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/storymaker").join(name)
}

fn root(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn io() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fx("e2e.safetensors"), &Device::Cpu).expect("e2e fixture")
}

fn rgb(path: PathBuf) -> image::RgbImage {
    image::open(&path).expect("image").to_rgb8()
}

fn mask(path: PathBuf) -> Mask {
    Mask::from_gray(image::open(&path).expect("mask").to_luma8())
}

fn unet() -> UNet2DConditionModel {
    let cfg = UNetConfig::from_json(&std::fs::read(parity_fixture("unet.config.json")).unwrap()).unwrap();
    let vb = TensorStore::open(&[parity_fixture("unet.weights.safetensors")])
        .unwrap()
        .into_var_builder(DType::F32, &Device::Cpu);
    UNet2DConditionModel::new(vb, &cfg).unwrap()
}

fn files() -> AdapterFiles {
    AdapterFiles { adapter: fx("mask.bin"), image_encoder: fx("clip_vision") }
}

fn load(unet: &mut UNet2DConditionModel) -> StoryMakerAdapter {
    StoryMakerAdapter::load(&files(), unet, &Device::Cpu, DType::F32, AdapterOptions { ppr_dim_head: 16 })
        .expect("adapter loads from mask.bin")
}

fn kps(t: &Tensor) -> [[f32; 2]; 5] {
    let v: Vec<Vec<f32>> = t.to_vec2().unwrap();
    std::array::from_fn(|i| [v[i][0], v[i][1]])
}

/// Both characters embedded through the real preprocessing from the sample photos.
fn characters(adapter: &StoryMakerAdapter, io: &HashMap<String, Tensor>) -> Vec<Arc<CharacterEmbedding>> {
    let inputs = [("assets/sample/astronaut.png", "eileen_mask.png"), ("assets/sample/camera.png", "lav_mask.png")];
    inputs
        .iter()
        .enumerate()
        .map(|(i, (photo, m))| {
            let photo = rgb(root(photo));
            let m = mask(fx(m));
            let id: Vec<f32> = io[&format!("char{i}.id")].to_vec1().unwrap();
            let c = CharacterInput {
                photo: &photo,
                mask: &m,
                identity: &id,
                keypoints: kps(&io[&format!("char{i}.kps")]),
                cloth: None,
            };
            Arc::new(adapter.embed_character(&c).expect("character embeds"))
        })
        .collect()
}

fn text(io: &HashMap<String, Tensor>) -> SdxlConditioning {
    SdxlConditioning {
        prompt_embeds: io["prompt_embeds"].clone(),
        pooled: io["pooled_prompt_embeds"].clone(),
        negative_prompt_embeds: io["negative_prompt_embeds"].clone(),
        negative_pooled: io["negative_pooled_prompt_embeds"].clone(),
    }
}

fn max_abs_diff_u8(a: &image::RgbImage, b: &image::RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0)
}

#[test]
fn preprocessing_matches_what_the_reference_fed_to_clip() {
    use storymaker::imaging::character::character_crop;
    use storymaker::imaging::face_align::aligned_face;
    let io = io();
    for (i, (photo, m)) in
        [("assets/sample/astronaut.png", "eileen_mask.png"), ("assets/sample/camera.png", "lav_mask.png")]
            .iter()
            .enumerate()
    {
        let photo = rgb(root(photo));
        let crop = character_crop(&photo, &mask(fx(m))).unwrap();
        let d = max_abs_diff_u8(&crop, &rgb(fx(&format!("crop_{i}.png"))));
        assert!(d <= 1, "character {i}: crop differs by {d} grey levels");
        let face = aligned_face(&photo, &kps(&io[&format!("char{i}.kps")]), 224).unwrap();
        let d = max_abs_diff_u8(&face, &rgb(fx(&format!("face_{i}.png"))));
        assert!(d <= 1, "character {i}: aligned face differs by {d} grey levels");
    }
}

#[test]
fn clip_features_and_image_tokens_match_the_reference() {
    let io = io();
    let mut u = unet();
    let adapter = load(&mut u);
    assert_eq!(adapter.processors(), 56, "every attention of the tiny UNet (28 transformer blocks) gets a processor");
    // CLIP hidden[-2] from the exact images the reference fed to CLIP.
    let crops = [rgb(fx("crop_0.png")), rgb(fx("crop_1.png"))];
    let faces = [rgb(fx("face_0.png")), rgb(fx("face_1.png"))];
    let e = max_rel_err(&adapter.clip_features(&[&crops[0], &crops[1]]).unwrap(), &io["clip_crop_hidden"]);
    eprintln!("CLIP crop hidden[-2] rel err {e:.2e}");
    assert!(e < 1e-4, "CLIP crop hidden[-2] rel err {e}");
    let e = max_rel_err(&adapter.clip_features(&[&faces[0], &faces[1]]).unwrap(), &io["clip_face_hidden"]);
    eprintln!("CLIP face hidden[-2] rel err {e:.2e}");
    assert!(e < 1e-4, "CLIP face hidden[-2] rel err {e}");

    // Image tokens of both branches from the full preprocessing (photos, masks, keypoints).
    let chars = characters(&adapter, &io);
    let slots: Vec<SlotCondition> = chars.iter().cloned().map(SlotCondition::new).collect();
    let tokens = adapter.image_tokens(&slots).unwrap();
    let (n, k, c) = io["ppr2.cond"].dims3().unwrap();
    assert_eq!(tokens.cond.dims(), &[1, n * k, c], "60 tokens for two characters, background first");
    let e = max_rel_err(&tokens.cond, &io["ppr2.cond"].reshape((1, n * k, c)).unwrap());
    eprintln!("cond tokens rel err {e:.2e}");
    assert!(e < 1e-4, "cond tokens rel err {e}");
    let e = max_rel_err(&tokens.uncond, &io["ppr2.uncond"].reshape((1, n * k, c)).unwrap());
    eprintln!("uncond tokens rel err {e:.2e}");
    assert!(e < 1e-4, "uncond tokens rel err {e}");

    // ID only: E2 zeroed (maintainer's recipe), one character.
    let id_only = SlotCondition { id_only: true, ..SlotCondition::new(chars[0].clone()) };
    let t = adapter.image_tokens(&[id_only]).unwrap();
    let e = max_rel_err(&t.cond, &io["idonly.cond"].reshape((1, 40, c)).unwrap());
    eprintln!("ID-only tokens rel err {e:.2e}");
    assert!(e < 1e-4, "ID-only tokens rel err {e}");

    // Interpolation: w = 0 is the first character, w = 1 the second one placed in slot 0.
    let blend = |w: f32| SlotCondition { blend: Some((chars[1].clone(), w)), ..SlotCondition::new(chars[0].clone()) };
    let single = |c: &Arc<CharacterEmbedding>| adapter.image_tokens(&[SlotCondition::new(c.clone())]).unwrap().cond;
    assert!(max_rel_err(&adapter.image_tokens(&[blend(0.0)]).unwrap().cond, &single(&chars[0])) < 1e-6);
    assert!(max_rel_err(&adapter.image_tokens(&[blend(1.0)]).unwrap().cond, &single(&chars[1])) < 1e-6);
    let half = adapter.image_tokens(&[blend(0.5)]).unwrap().cond;
    let mid = ((single(&chars[0]) + single(&chars[1])).unwrap() * 0.5).unwrap();
    assert!(max_rel_err(&half, &mid) < 1e-5, "w = 0.5 is the mean of the two characters' tokens");
}

#[test]
fn single_processors_match_the_reference_lora_and_ip_processors() {
    let io = io();
    let cfg = UNetConfig::from_json(&std::fs::read(parity_fixture("unet.config.json")).unwrap()).unwrap();
    let base = TensorStore::open(&[parity_fixture("unet.weights.safetensors")])
        .unwrap()
        .into_var_builder(DType::F32, &Device::Cpu);
    let ad = load_adapter(&fx("mask.bin"), &Device::Cpu).unwrap();
    let ip = candle_nn::VarBuilder::from_tensors(ad.ip_adapter, DType::F32, &Device::Cpu);
    let prefix = base.pp("down_blocks.1.attentions.0.transformer_blocks.0");
    let hidden = cfg.block_out_channels[1];
    let heads = cfg.heads(1);
    let x = &io["proc.x"];
    let ctx = &io["proc.ctx"];
    let scales = Arc::new(AdapterScales::default());
    let mut attn1 = Attention::new(prefix.pp("attn1"), hidden, None, heads, hidden / heads).unwrap();
    attn1.set_extension(Some(Box::new(StoryMakerAttention::new(ip.pp("0"), hidden, None, scales.clone()).unwrap())));
    for s_l in [0.0f32, 0.8, 1.0] {
        scales.set(0.8, s_l);
        let got = attn1.forward(x, None).unwrap();
        let e = max_rel_err(&got, &io[&format!("proc.self.l{s_l:.1}")]);
        eprintln!("self-attention s_l={s_l} rel err {e:.2e}");
        assert!(e < 1e-5, "self-attention s_l={s_l}: rel err {e}");
    }
    let mut attn2 =
        Attention::new(prefix.pp("attn2"), hidden, Some(cfg.cross_attention_dim), heads, hidden / heads).unwrap();
    attn2.set_extension(Some(Box::new(
        StoryMakerAttention::new(ip.pp("1"), hidden, Some(cfg.cross_attention_dim), scales.clone()).unwrap(),
    )));
    for s_ip in [0.0f32, 0.8] {
        for s_l in [0.0f32, 0.8] {
            scales.set(s_ip, s_l);
            let got = attn2.forward(x, Some(ctx)).unwrap();
            let e = max_rel_err(&got, &io[&format!("proc.cross.ip{s_ip:.1}.l{s_l:.1}")]);
            eprintln!("cross-attention s_ip={s_ip} s_l={s_l} rel err {e:.2e}");
            assert!(e < 1e-5, "cross-attention s_ip={s_ip} s_l={s_l}: rel err {e}");
        }
    }
}

#[test]
fn unet_step_with_the_adapter_matches_the_reference() {
    let io = io();
    let mut u = unet();
    let _adapter = load(&mut u);
    let eps = u
        .forward(&UNetInput {
            sample: &io["unet0.sample"],
            timesteps: &io["unet0.timestep"].broadcast_as(2).unwrap().contiguous().unwrap(),
            encoder_hidden_states: &io["unet0.context"],
            text_embeds: Some(&io["unet0.text_embeds"]),
            time_ids: Some(&io["unet0.time_ids"]),
            down_residuals: None,
            mid_residual: None,
        })
        .unwrap();
    let e = max_rel_err(&eps, &io["unet0.eps"]);
    eprintln!("UNet eps with the adapter rel err {e:.2e}");
    assert!(e < 1e-4, "UNet eps with the adapter: rel err {e}");
}

fn run_loop(
    u: &UNet2DConditionModel,
    io: &HashMap<String, Tensor>,
    cond: &SdxlConditioning,
    steps: usize,
) -> (Tensor, Vec<f64>) {
    let sched_cfg = SchedulerConfig::from_json_str(
        &std::fs::read_to_string(parity_fixture("sched_sdxl_base.config.json")).unwrap(),
    )
    .unwrap();
    let mut sched = build_scheduler(SchedulerKind::UniPc, &sched_cfg, steps).unwrap();
    let timesteps = sched.timesteps().to_vec();
    let latents =
        denoise(u, sched.as_mut(), &io["latents_init"], cond, Guidance::new(7.5), (128, 96), &mut NoNoise, &mut |_| {
            StepControl::Continue
        })
        .unwrap();
    (latents, timesteps)
}

#[test]
fn two_characters_three_cfg_steps_match_the_reference_pipeline() {
    let io = io();
    let mut u = unet();
    let adapter = load(&mut u);
    let chars = characters(&adapter, &io);
    let slots: Vec<SlotCondition> = chars.into_iter().map(SlotCondition::new).collect();
    let tokens = adapter.image_tokens(&slots).unwrap();
    adapter.set_scales(0.8, 0.8);
    let cond = with_image_tokens(&text(&io), &tokens).unwrap();
    assert_eq!(cond.prompt_embeds.dim(1).unwrap(), 77 + 60);
    let (latents, timesteps) = run_loop(&u, &io, &cond, 3);
    let expected: Vec<f32> = io["timesteps"].to_vec1().unwrap();
    assert_eq!(timesteps.iter().map(|&t| t as f32).collect::<Vec<_>>(), expected);
    let e = max_rel_err(&latents, &io["e2e2.latents"]);
    eprintln!("final latents rel err {e:.2e}");
    assert!(e < 1e-3, "final latents rel err {e}");
}

#[test]
fn clothing_swap_matches_the_reference_pipeline() {
    let io = io();
    let mut u = unet();
    let adapter = load(&mut u);
    let photo = rgb(root("assets/sample/astronaut.png"));
    let m = mask(fx("eileen_mask.png"));
    let cloth = rgb(fx("cloth.png"));
    let id: Vec<f32> = io["char0.id"].to_vec1().unwrap();
    let c = CharacterInput {
        photo: &photo,
        mask: &m,
        identity: &id,
        keypoints: kps(&io["char0.kps"]),
        cloth: Some(&cloth),
    };
    let emb = Arc::new(adapter.embed_character(&c).unwrap());
    let tokens = adapter.image_tokens(&[SlotCondition::new(emb)]).unwrap();
    let e = max_rel_err(&tokens.cond, &io["cloth.ppr_cond"].reshape((1, 40, 80)).unwrap());
    eprintln!("cloth-swap tokens rel err {e:.2e}");
    assert!(e < 1e-4, "cloth-swap tokens rel err {e}");
    adapter.set_scales(0.8, 0.8);
    let cond = with_image_tokens(&text(&io), &tokens).unwrap();
    let (latents, _) = run_loop(&u, &io, &cond, 2);
    let e = max_rel_err(&latents, &io["cloth.latents"]);
    eprintln!("cloth-swap latents rel err {e:.2e}");
    assert!(e < 1e-3, "cloth-swap latents rel err {e}");
}

#[test]
fn bad_character_inputs_are_clear_errors() {
    let io = io();
    let mut u = unet();
    let adapter = load(&mut u);
    let photo = rgb(root("assets/sample/astronaut.png"));
    let empty = Mask::filled(photo.width(), photo.height(), 0);
    let id: Vec<f32> = io["char0.id"].to_vec1().unwrap();
    let k = kps(&io["char0.kps"]);
    let c = CharacterInput { photo: &photo, mask: &empty, identity: &id, keypoints: k, cloth: None };
    let err = adapter.embed_character(&c).unwrap_err().to_string();
    assert!(err.contains("mask is empty"), "{err}");
    let m = mask(fx("eileen_mask.png"));
    let short = vec![0.1f32; 7];
    let c = CharacterInput { photo: &photo, mask: &m, identity: &short, keypoints: k, cloth: None };
    let err = adapter.embed_character(&c).unwrap_err().to_string();
    assert!(err.contains("7 values") && err.contains("32"), "{err}");
    let zero = vec![0.0f32; 32];
    let c = CharacterInput { photo: &photo, mask: &m, identity: &zero, keypoints: k, cloth: None };
    assert!(adapter.embed_character(&c).is_err(), "a zero identity is refused");
    let err = adapter.image_tokens(&[]).unwrap_err().to_string();
    assert!(err.contains("0 characters"), "{err}");
}

#[test]
fn wrong_image_encoder_or_unet_is_named() {
    // Another adapter file (the loader test's tiny mask.bin, made for other widths) is refused,
    // naming the file and what does not fit.
    let mut u = unet();
    let bad = AdapterFiles {
        adapter: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adapter/mask_tiny.bin"),
        image_encoder: fx("clip_vision"),
    };
    let err = StoryMakerAdapter::load(&bad, &mut u, &Device::Cpu, DType::F32, AdapterOptions { ppr_dim_head: 16 })
        .err()
        .expect("mismatched adapter refused")
        .to_string();
    assert!(err.contains("mask_tiny.bin"), "{err}");
    assert!(err.contains("width") || err.contains("attention") || err.contains("cannot find tensor"), "{err}");
    let missing = AdapterFiles { adapter: fx("mask.bin"), image_encoder: fx("no_such_dir") };
    let err = StoryMakerAdapter::load(&missing, &mut u, &Device::Cpu, DType::F32, AdapterOptions::default())
        .err()
        .expect("missing encoder refused")
        .to_string();
    assert!(err.contains("no_such_dir"), "{err}");
}
