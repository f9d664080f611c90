//! User style LoRAs (`weights::style_lora`) against diffusers 0.42.1 + peft 0.21.2: the tiny parity
//! UNet and text encoders with LoRAs merged at load time must give what
//! `pipe.load_lora_weights(...)` + `set_adapters(weights)` gives (`tools/parity/gen_style_lora.py`,
//! fixtures in `tests/fixtures/lora/`), for kohya (SGM names, per-module alphas, fp16) and
//! diffusers/PEFT files (alphas in the metadata), alone and stacked; plus the key-name mapping and
//! the errors a user sees for files we cannot apply.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{max_rel_err, parity_fixture};
use storymaker::models::clip_text::{ClipTextConfig, ClipTextModel};
use storymaker::models::unet::{UNet2DConditionModel, UNetConfig, UNetInput};
use storymaker::weights::sgm::{clip_g_tensor_source, unet_key_to_sgm};
use storymaker::weights::store::TensorStore;
use storymaker::weights::style_lora::{
    parse_key, peft_pattern_matches, sgm_unet_module_to_diffusers, LoraComponent, LoraError, LoraFormat,
    LoraMergedStore, LoraPart, StyleLora, PEFT_METADATA_KEY,
};

const TOL: f32 = 1e-4;
const WEIGHT: f64 = 0.7;
const MIX: (f64, f64) = (0.7, -0.5);

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn lora_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lora").join(name)
}

fn kohya() -> StyleLora {
    StyleLora::load(&lora_fixture("style_kohya.safetensors")).expect("kohya fixture")
}

fn peft() -> StyleLora {
    StyleLora::load(&lora_fixture("style_peft.safetensors")).expect("peft fixture")
}

fn expected(key: &str) -> Tensor {
    let all = candle_core::safetensors::load(lora_fixture("expected.safetensors"), &Device::Cpu).expect("expected");
    all.get(key).unwrap_or_else(|| panic!("expected.safetensors has no {key}")).clone()
}

fn unet_config() -> UNetConfig {
    let bytes = std::fs::read(parity_fixture("unet.config.json")).expect("config");
    UNetConfig::from_json(&bytes).expect("valid config")
}

fn unet_store() -> TensorStore {
    TensorStore::open(&[parity_fixture("unet.weights.safetensors")]).expect("unet weights")
}

/// The fixture UNet from `store` with `loras` merged, run on the parity inputs.
fn unet_out(store: TensorStore, loras: &[(&StyleLora, f64)]) -> Tensor {
    let merged = LoraMergedStore::new(store, LoraComponent::Unet, loras).expect("merge");
    assert!(merged.warnings().is_empty(), "{:?}", merged.warnings());
    let unet = UNet2DConditionModel::new(merged.into_var_builder(DType::F32, &Device::Cpu), &unet_config())
        .expect("build unet");
    let io = candle_core::safetensors::load(parity_fixture("unet.io.safetensors"), &Device::Cpu).expect("io");
    let input = UNetInput {
        sample: &io["sample"],
        timesteps: &io["timesteps"],
        encoder_hidden_states: &io["encoder_hidden_states"],
        text_embeds: Some(&io["text_embeds"]),
        time_ids: Some(&io["time_ids"]),
        down_residuals: None,
        mid_residual: None,
    };
    unet.forward(&input).expect("forward")
}

fn check(what: &str, ours: &Tensor, reference: &Tensor) {
    let err = max_rel_err(ours, reference);
    println!("{what}: max rel err {err:.2e}");
    assert!(err < TOL, "{what}: max rel err {err:e} >= {TOL:e}");
}

/// The LoRA must matter: without it the output is far from the reference.
fn check_lora_matters(reference: &Tensor) {
    let base = candle_core::safetensors::load(parity_fixture("unet.io.safetensors"), &Device::Cpu).expect("io");
    let off = max_rel_err(&base["out"], reference);
    assert!(off > 0.1, "the LoRA barely changes the output ({off}); the test would not notice it being ignored");
}

/// The tensors of a fixture LoRA file (no metadata).
fn tensors_of(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(lora_fixture(name), &Device::Cpu).expect("lora tensors")
}

fn write(dir: &Path, name: &str, tensors: &HashMap<String, Tensor>) -> PathBuf {
    let path = dir.join(name);
    candle_core::safetensors::save(tensors, &path).expect("save");
    path
}

// ---------------------------------------------------------------------------------------------
// UNet parity
// ---------------------------------------------------------------------------------------------

#[test]
fn kohya_sgm_lora_on_the_unet_matches_diffusers() {
    let lora = kohya();
    assert_eq!(lora.formats(), [LoraFormat::Kohya]);
    assert!(lora.warnings().is_empty(), "{:?}", lora.warnings());
    assert_eq!(lora.modules(LoraComponent::Unet).count(), 374, "every Linear and Conv2d of the tiny UNet");
    assert_eq!(lora.modules(LoraComponent::TextEncoder).count(), 18);
    assert_eq!(lora.modules(LoraComponent::TextEncoder2).count(), 24);
    // a 3x3 resnet conv from `input_blocks_1_0_in_layers_2` (LoCon), rank 4
    let conv = lora.module(LoraComponent::Unet, "down_blocks.0.resnets.0.conv1").expect("SGM in_layers.2 = conv1");
    assert_eq!(
        (conv.down.dims(), conv.up.dims(), conv.delta_shape()),
        (&[4, 16, 3, 3][..], &[16, 4, 1, 1][..], vec![16, 16, 3, 3])
    );
    assert!(lora.module(LoraComponent::Unet, "up_blocks.0.upsamplers.0.conv").is_some());
    assert!(lora.module(LoraComponent::Unet, "add_embedding.linear_1").is_some());

    let reference = expected("unet.kohya");
    check_lora_matters(&reference);
    check("unet + kohya LoRA @0.7", &unet_out(unet_store(), &[(&lora, WEIGHT)]), &reference);
}

#[test]
fn peft_lora_with_metadata_alphas_matches_diffusers() {
    let lora = peft();
    assert_eq!(lora.formats(), [LoraFormat::Peft]);
    assert!(lora.warnings().is_empty(), "{:?}", lora.warnings());
    let m = |name: &str| lora.module(LoraComponent::Unet, name).unwrap_or_else(|| panic!("no module {name}"));
    let tb = "down_blocks.1.attentions.0.transformer_blocks.0";
    // lora_alpha 4, r 4; alpha_pattern {attn2.to_k: 8, conv2: 2}; rank_pattern {ff.net.2: 2, ^mid…proj_in: 3}
    assert_eq!((m(&format!("{tb}.attn1.to_q")).alpha, m(&format!("{tb}.attn1.to_q")).scale), (4.0, 1.0));
    assert_eq!(m(&format!("{tb}.attn2.to_k")).scale, 2.0);
    assert_eq!(m("down_blocks.0.resnets.1.conv2").scale, 0.5);
    assert_eq!((m(&format!("{tb}.ff.net.2")).rank, m(&format!("{tb}.ff.net.2")).scale), (2, 2.0));
    assert_eq!(m("mid_block.attentions.0.proj_in").rank, 3);
    assert_eq!(m("down_blocks.1.attentions.0.proj_in").rank, 4);

    let reference = expected("unet.peft");
    check_lora_matters(&reference);
    check("unet + PEFT LoRA @0.7", &unet_out(unet_store(), &[(&lora, WEIGHT)]), &reference);
}

#[test]
fn peft_lora_without_metadata_has_alpha_equal_to_rank() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "nometa.safetensors", &tensors_of("style_peft.safetensors"));
    let lora = StyleLora::load(&path).expect("load");
    assert!(lora.modules(LoraComponent::Unet).all(|(_, m)| m.scale == 1.0));
    check(
        "unet + PEFT LoRA without metadata @0.7",
        &unet_out(unet_store(), &[(&lora, WEIGHT)]),
        &expected("unet.peft_nometa"),
    );
}

/// The PEFT file renamed to diffusers' older attention-processor naming (no alphas).
#[test]
fn legacy_diffusers_names_give_the_same_result() {
    let mut renamed = HashMap::new();
    for (k, v) in tensors_of("style_peft.safetensors") {
        let (stem, part) = match (k.strip_suffix(".lora_A.weight"), k.strip_suffix(".lora_B.weight")) {
            (Some(s), _) => (s.to_string(), "down"),
            (_, Some(s)) => (s.to_string(), "up"),
            _ => panic!("unexpected key {k}"),
        };
        let attention = ["to_q", "to_k", "to_v", "to_out.0"].iter().find_map(|p| {
            let head = stem.strip_suffix(&format!(".{p}"))?;
            Some(format!("{head}.processor.{}_lora.{part}.weight", p.trim_end_matches(".0")))
        });
        let key = match attention {
            Some(k) if stem.starts_with("unet.") => k,
            _ => format!("{stem}.lora.{part}.weight"),
        };
        renamed.insert(key, v);
    }
    assert!(
        renamed.contains_key("unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight")
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let lora = StyleLora::load(&write(dir.path(), "legacy.safetensors", &renamed)).expect("load");
    assert_eq!(lora.formats(), [LoraFormat::DiffusersLegacy]);
    assert!(lora.warnings().is_empty(), "{:?}", lora.warnings());
    check(
        "unet + legacy diffusers LoRA @0.7",
        &unet_out(unet_store(), &[(&lora, WEIGHT)]),
        &expected("unet.peft_nometa"),
    );
}

/// The PEFT file renamed to kohya keys in *diffusers* layout (`lora_unet_down_blocks_…`), with
/// `alpha = 2·rank`: at weight 0.35 it must equal the alpha-less file at 0.7.
#[test]
fn kohya_names_in_diffusers_layout_and_alpha() {
    let mut renamed = HashMap::new();
    for (k, v) in tensors_of("style_peft.safetensors") {
        let (stem, part) = match (k.strip_suffix(".lora_A.weight"), k.strip_suffix(".lora_B.weight")) {
            (Some(s), _) => (s, "lora_down"),
            (_, Some(s)) => (s, "lora_up"),
            _ => panic!("unexpected key {k}"),
        };
        let stem = stem
            .replacen("unet.", "lora_unet_", 1)
            .replacen("text_encoder_2.", "lora_te2_", 1)
            .replacen("text_encoder.", "lora_te1_", 1)
            .replace('.', "_");
        if part == "lora_down" {
            let rank = v.dims()[0] as f32;
            renamed.insert(format!("{stem}.alpha"), Tensor::new(2.0 * rank, &Device::Cpu).expect("alpha"));
        }
        renamed.insert(format!("{stem}.{part}.weight"), v);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let lora = StyleLora::load(&write(dir.path(), "kohya_diffusers.safetensors", &renamed)).expect("load");
    assert!(lora.warnings().is_empty(), "{:?}", lora.warnings());
    assert_eq!(lora.len(), peft().len());
    check(
        "unet + kohya (diffusers layout, alpha 2·rank) @0.35",
        &unet_out(unet_store(), &[(&lora, WEIGHT / 2.0)]),
        &expected("unet.peft_nometa"),
    );
}

#[test]
fn stacked_loras_add_with_their_weights() {
    let (k, p) = (kohya(), peft());
    check(
        "unet + kohya @0.7 + PEFT @-0.5",
        &unet_out(unet_store(), &[(&k, MIX.0), (&p, MIX.1)]),
        &expected("unet.mix"),
    );
}

/// The SGM single-file layout (a key map) takes the same LoRA and gives identical numbers.
#[test]
fn single_file_unet_takes_the_same_lora() {
    let cfg = unet_config();
    let attn: Vec<bool> = cfg.up_block_types.iter().map(|t| t == "CrossAttnUpBlock2D").collect();
    let lpb = cfg.layers_per_block;
    let sgm = TensorStore::open(&[parity_fixture("unet.sgm.safetensors")])
        .expect("sgm weights")
        .with_key_map(move |k| unet_key_to_sgm(k, lpb, &attn));
    let lora = kohya();
    let a = unet_out(sgm, &[(&lora, WEIGHT)]);
    let b = unet_out(unet_store(), &[(&lora, WEIGHT)]);
    assert_eq!(max_rel_err(&a, &b), 0.0, "same weights, same deltas, same numbers");
}

/// Weights are merged in f32 and then cast: an f16 model gets exactly the rounded f32 merge.
#[test]
fn half_precision_models_get_the_f32_merge_rounded() -> TestResult {
    let lora = kohya();
    let name = "down_blocks.0.resnets.0.conv1.weight";
    let vb = |dtype| {
        LoraMergedStore::new(unet_store(), LoraComponent::Unet, &[(&lora, WEIGHT)])
            .expect("merge")
            .into_var_builder(dtype, &Device::Cpu)
    };
    let f32w = vb(DType::F32).get((16, 16, 3, 3), name)?;
    let f16w = vb(DType::F16).get((16, 16, 3, 3), name)?;
    assert_eq!(f16w.dtype(), DType::F16);
    assert_eq!(max_rel_err(&f16w, &f32w.to_dtype(DType::F16)?), 0.0);
    let base = unet_store().into_var_builder(DType::F32, &Device::Cpu).get((16, 16, 3, 3), name)?;
    assert!(max_rel_err(&f32w, &base) > 0.05, "the weight changed");
    // untouched weights come through unchanged
    let norm = "down_blocks.0.resnets.0.norm1.weight";
    let merged = vb(DType::F32).get(16, norm)?;
    assert_eq!(max_rel_err(&merged, &unet_store().into_var_builder(DType::F32, &Device::Cpu).get(16, norm)?), 0.0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// text encoders
// ---------------------------------------------------------------------------------------------

fn clip(name: &str, store: TensorStore, component: LoraComponent, lora: &StyleLora) -> ClipTextModel {
    let cfg = ClipTextConfig::from_json_file(&parity_fixture(&format!("{name}.config.json"))).expect("config");
    let merged = LoraMergedStore::new(store, component, &[(lora, WEIGHT)]).expect("merge");
    assert!(merged.warnings().is_empty(), "{:?}", merged.warnings());
    ClipTextModel::new(merged.into_var_builder(DType::F32, &Device::Cpu), &cfg, name == "clip_g").expect("build")
}

fn clip_store(name: &str) -> TensorStore {
    TensorStore::open(&[parity_fixture(&format!("{name}.weights.safetensors"))]).expect("clip weights")
}

#[test]
fn text_encoder_loras_match_diffusers() -> TestResult {
    let io = candle_core::safetensors::load(parity_fixture("clip_text.safetensors"), &Device::Cpu)?;
    for (label, lora) in [("kohya", kohya()), ("peft", peft())] {
        let l =
            clip("clip_l", clip_store("clip_l"), LoraComponent::TextEncoder, &lora).forward(&io["clip_l.input_ids"])?;
        check(
            &format!("clip_l.penultimate + {label}"),
            &l.penultimate,
            &expected(&format!("clip_l.penultimate.{label}")),
        );
        let g = clip("clip_g", clip_store("clip_g"), LoraComponent::TextEncoder2, &lora)
            .forward(&io["clip_g.input_ids"])?;
        check(
            &format!("clip_g.penultimate + {label}"),
            &g.penultimate,
            &expected(&format!("clip_g.penultimate.{label}")),
        );
        let pooled = g.pooled.as_ref().ok_or("no pooled")?;
        check(&format!("clip_g.text_embeds + {label}"), pooled, &expected(&format!("clip_g.text_embeds.{label}")));
        assert!(max_rel_err(&g.penultimate, &io["clip_g.penultimate"]) > 0.1, "the LoRA matters");
    }
    Ok(())
}

/// OpenCLIP single files store q/k/v fused (`in_proj_weight` row thirds): the deltas land on the
/// model's view of each third.
#[test]
fn single_file_clip_g_takes_the_same_lora() -> TestResult {
    let io = candle_core::safetensors::load(parity_fixture("clip_text.safetensors"), &Device::Cpu)?;
    let store =
        TensorStore::open(&[parity_fixture("sdxl_single_file.safetensors")])?.with_tensor_map(clip_g_tensor_source);
    let g = clip("clip_g", store, LoraComponent::TextEncoder2, &kohya()).forward(&io["clip_g.input_ids"])?;
    check("single-file clip_g.penultimate + kohya", &g.penultimate, &expected("clip_g.penultimate.kohya"));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// key names
// ---------------------------------------------------------------------------------------------

fn unet_module(key: &str) -> Option<String> {
    parse_key(key).filter(|k| k.component == LoraComponent::Unet).map(|k| k.module)
}

/// Every module of the fixture UNet (its block indices are SDXL's), written the way kohya writes
/// SGM names and diffusers names, comes back as the diffusers name; the SGM side is made with the
/// single-file loader's own map, so the two maps are inverses.
#[test]
fn kohya_unet_names_of_every_module_map_back() {
    let cfg = unet_config();
    let attn: Vec<bool> = cfg.up_block_types.iter().map(|t| t == "CrossAttnUpBlock2D").collect();
    let store = unet_store();
    let mut n = 0;
    for name in store.names().filter(|n| n.ends_with(".weight")) {
        let module = name.trim_end_matches(".weight");
        let sgm = unet_key_to_sgm(name, cfg.layers_per_block, &attn);
        let sgm = sgm.trim_start_matches("model.diffusion_model.").trim_end_matches(".weight");
        assert_eq!(sgm_unet_module_to_diffusers(sgm, 2).as_deref(), Some(module), "SGM {sgm}");
        for stem in [sgm, module] {
            let key = format!("lora_unet_{}.lora_down.weight", stem.replace('.', "_"));
            assert_eq!(unet_module(&key).as_deref(), Some(module), "{key}");
        }
        assert_eq!(unet_module(&format!("unet.{module}.lora_B.weight")).as_deref(), Some(module));
        assert_eq!(unet_module(&format!("model.diffusion_model.{sgm}.lora_up.weight")).as_deref(), Some(module));
        n += 1;
    }
    assert!(n > 300, "{n} modules checked");
}

#[test]
fn kohya_text_encoder_names_of_every_module_map_back() {
    for (name, prefix, component) in
        [("clip_l", "lora_te1_", LoraComponent::TextEncoder), ("clip_g", "lora_te2_", LoraComponent::TextEncoder2)]
    {
        for tensor in clip_store(name).names().filter(|n| n.ends_with(".weight")) {
            let module = tensor.trim_end_matches(".weight");
            let key = format!("{prefix}{}.alpha", module.replace('.', "_"));
            let parsed = parse_key(&key).unwrap_or_else(|| panic!("{key} not parsed"));
            assert_eq!((parsed.component, parsed.module.as_str(), parsed.part), (component, module, LoraPart::Alpha));
        }
    }
    let sd15 = parse_key("lora_te_text_model_encoder_layers_11_mlp_fc2.lora_up.weight").expect("lora_te_");
    assert_eq!(
        (sd15.component, sd15.module.as_str()),
        (LoraComponent::TextEncoder, "text_model.encoder.layers.11.mlp.fc2")
    );
}

#[test]
fn published_key_spellings_map_to_model_names() {
    let cases = [
        (
            "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
        ),
        (
            "lora_unet_input_blocks_7_1_transformer_blocks_9_ff_net_0_proj.lora_up.weight",
            "down_blocks.2.attentions.0.transformer_blocks.9.ff.net.0.proj",
        ),
        ("lora_unet_middle_block_1_proj_out.alpha", "mid_block.attentions.0.proj_out"),
        ("lora_unet_middle_block_2_emb_layers_1.lora_down.weight", "mid_block.resnets.1.time_emb_proj"),
        (
            "lora_unet_output_blocks_5_1_transformer_blocks_1_attn2_to_out_0.lora_down.weight",
            "up_blocks.1.attentions.2.transformer_blocks.1.attn2.to_out.0",
        ),
        ("lora_unet_output_blocks_2_2_conv.lora_down.weight", "up_blocks.0.upsamplers.0.conv"),
        ("lora_unet_output_blocks_3_0_skip_connection.lora_down.weight", "up_blocks.1.resnets.0.conv_shortcut"),
        ("lora_unet_input_blocks_6_0_op.lora_down.weight", "down_blocks.1.downsamplers.0.conv"),
        ("lora_unet_time_embed_2.lora_down.weight", "time_embedding.linear_2"),
        ("lora_unet_label_emb_0_0.lora_down.weight", "add_embedding.linear_1"),
        (
            "lora_unet_down_blocks_2_attentions_1_transformer_blocks_3_attn2_to_k.lora_down.weight",
            "down_blocks.2.attentions.1.transformer_blocks.3.attn2.to_k",
        ),
        ("lora_unet_up_blocks_0_resnets_2_time_emb_proj.lora_down.weight", "up_blocks.0.resnets.2.time_emb_proj"),
        ("lora_unet_time_embedding_linear_1.lora_down.weight", "time_embedding.linear_1"),
        (
            "unet.up_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0.lora_A.weight",
            "up_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0",
        ),
        (
            "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.down.weight",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
        ),
        (
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor.to_k_lora.up.weight",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k",
        ),
        ("unet.mid_block.resnets.0.conv1.lora.down.weight", "mid_block.resnets.0.conv1"),
    ];
    for (key, module) in cases {
        assert_eq!(unet_module(key).as_deref(), Some(module), "{key}");
    }
    let te = |key: &str| parse_key(key).map(|k| (k.component, k.module));
    assert_eq!(
        te("text_encoder.text_model.encoder.layers.0.self_attn.to_out_lora.down.weight"),
        Some((LoraComponent::TextEncoder, "text_model.encoder.layers.0.self_attn.out_proj".into()))
    );
    assert_eq!(
        te("text_encoder_2.encoder.layers.3.mlp.fc1.lora_linear_layer.up.weight"),
        Some((LoraComponent::TextEncoder2, "text_model.encoder.layers.3.mlp.fc1".into()))
    );
    assert_eq!(
        te("lora_te2_text_projection.lora_down.weight"),
        Some((LoraComponent::TextEncoder2, "text_projection".into()))
    );
    for other in [
        "clip_l.embedding",
        "lora_unet_input_blocks_4_1_proj_in.weight",
        "transformer.blocks.0.lora_A.weight",
        "unet.lora_A.weight",
    ] {
        assert_eq!(parse_key(other), None, "{other}");
    }
    assert_eq!(LoraComponent::from_name("text_encoder_2"), Some(LoraComponent::TextEncoder2));
}

#[test]
fn peft_patterns_follow_peft_matching() {
    let m = "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k";
    assert!(peft_pattern_matches("attn2.to_k", m));
    assert!(peft_pattern_matches("to_k", m));
    assert!(peft_pattern_matches(m, m));
    assert!(!peft_pattern_matches("o_k", m), "a pattern starts after a dot");
    assert!(!peft_pattern_matches("attn2", m), "a pattern ends at the end");
    assert!(peft_pattern_matches("^mid_block.attentions.0.proj_in", "mid_block.attentions.0.proj_in"));
    assert!(!peft_pattern_matches("^attentions.0.proj_in", "mid_block.attentions.0.proj_in"));
    assert!(peft_pattern_matches("attn.", "transformer_blocks.0.attn2"), "'.' is the regex wildcard");
}

// ---------------------------------------------------------------------------------------------
// LoCon Tucker convs
// ---------------------------------------------------------------------------------------------

/// Deterministic values in [-1, 1).
fn pseudo(shape: &[usize], seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..shape.iter().product::<usize>())
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(pseudo(shape, seed), shape, &Device::Cpu).expect("tensor")
}

#[test]
fn tucker_conv_delta_is_up_mid_down() -> TestResult {
    let (r, cin, cout, k) = (3, 5, 4, 3);
    let (down, mid, up) = (pseudo(&[r, cin, 1, 1], 1), pseudo(&[r, r, k, k], 2), pseudo(&[cout, r, 1, 1], 3));
    let stem = "lora_unet_input_blocks_1_0_in_layers_2";
    let tensors = HashMap::from([
        (format!("{stem}.lora_down.weight"), Tensor::from_vec(down.clone(), (r, cin, 1, 1), &Device::Cpu)?),
        (format!("{stem}.lora_mid.weight"), Tensor::from_vec(mid.clone(), (r, r, k, k), &Device::Cpu)?),
        (format!("{stem}.lora_up.weight"), Tensor::from_vec(up.clone(), (cout, r, 1, 1), &Device::Cpu)?),
        (format!("{stem}.alpha"), Tensor::new(1.5f32, &Device::Cpu)?),
    ]);
    let lora = StyleLora::from_tensors(Path::new("tucker.safetensors"), tensors, &BTreeMap::new())?;
    let m = lora.module(LoraComponent::Unet, "down_blocks.0.resnets.0.conv1").ok_or("module")?;
    assert_eq!(m.delta_shape(), [cout, cin, k, k]);
    let got = m.delta(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    let mut want = vec![0f32; cout * cin * k * k];
    for o in 0..cout {
        for c in 0..cin {
            for h in 0..k * k {
                let mut acc = 0f32;
                for i in 0..r {
                    for j in 0..r {
                        acc += up[o * r + i] * mid[(i * r + j) * k * k + h] * down[j * cin + c];
                    }
                }
                want[(o * cin + c) * k * k + h] = acc * 1.5 / r as f32;
            }
        }
    }
    let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "max abs diff {diff}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------------------------

fn from(tensors: Vec<(&str, Tensor)>, metadata: &[(&str, &str)]) -> Result<StyleLora, LoraError> {
    let tensors = tensors.into_iter().map(|(k, t)| (k.to_string(), t)).collect();
    let metadata = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    StyleLora::from_tensors(Path::new("user.safetensors"), tensors, &metadata)
}

/// A valid rank-2 pair for the tiny UNet's `down_blocks.1.attentions.0.proj_in` ([24, 24]).
fn proj_in_pair(prefix: &str) -> Vec<(String, Tensor)> {
    vec![
        (format!("{prefix}.lora_down.weight"), tensor(&[2, 24], 5)),
        (format!("{prefix}.lora_up.weight"), tensor(&[24, 2], 6)),
    ]
}

fn owned(v: &[(String, Tensor)]) -> Vec<(&str, Tensor)> {
    v.iter().map(|(k, t)| (k.as_str(), t.clone())).collect()
}

#[test]
fn lycoris_and_dora_files_are_refused_by_name() {
    let t = || tensor(&[2, 2], 1);
    for (key, kind) in [
        ("lora_unet_input_blocks_4_1_proj_in.hada_w1_a", "LoHa"),
        ("lora_unet_input_blocks_4_1_proj_in.lokr_w1", "LoKr"),
        ("lora_unet_input_blocks_4_1_proj_in.dora_scale", "DoRA"),
        ("unet.down_blocks.1.attentions.0.proj_in.lora_magnitude_vector", "DoRA"),
        ("lora_unet_input_blocks_4_1_proj_in.diff", "full weight difference"),
        ("unet.down_blocks.1.attentions.0.proj_in.lora_B.bias", "bias"),
    ] {
        let err = from(vec![(key, t())], &[]).expect_err(key);
        let msg = err.to_string();
        assert!(matches!(err, LoraError::Unsupported { .. }), "{msg}");
        assert!(msg.contains("unsupported LoRA type") && msg.contains(kind) && msg.contains(key), "{msg}");
    }
    let meta = PEFT_METADATA_KEY;
    let pair = proj_in_pair("unet.down_blocks.1.attentions.0.proj_in");
    let err = from(owned(&pair), &[(meta, r#"{"unet.use_dora": true, "unet.r": 2}"#)]).expect_err("dora");
    assert!(err.to_string().contains("DoRA"), "{err}");
    let err = from(owned(&pair), &[(meta, r#"{"unet.alpha_pattern": {"attn.*to_k": 2}}"#)]).expect_err("regex");
    assert!(err.to_string().contains("regular expression") && err.to_string().contains("attn.*to_k"), "{err}");
}

#[test]
fn a_file_with_no_sdxl_lora_keys_names_some_of_them() {
    let err = from(vec![("clip_l", tensor(&[2, 8], 1)), ("emb_params", tensor(&[1, 8], 2))], &[]).expect_err("nothing");
    let msg = err.to_string();
    assert!(matches!(err, LoraError::NothingRecognised { total: 2, .. }), "{msg}");
    assert!(msg.contains("user.safetensors") && msg.contains("clip_l") && msg.contains("emb_params"), "{msg}");

    let err = StyleLora::load(Path::new("/nonexistent/style.safetensors")).expect_err("missing file");
    assert!(matches!(err, LoraError::Read { .. }) && err.to_string().contains("/nonexistent/style.safetensors"));
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file").expect("write");
    assert!(matches!(StyleLora::load(&junk), Err(LoraError::Read { .. })));
}

#[test]
fn unknown_keys_and_half_modules_are_warnings() {
    let mut t = proj_in_pair("lora_unet_input_blocks_4_1_proj_in");
    t.push(("lora_unet_input_blocks_5_1_proj_in.lora_down.weight".into(), tensor(&[2, 24], 7)));
    t.push(("bundle_emb.clip_l".into(), tensor(&[1, 8], 8)));
    let lora = from(owned(&t), &[]).expect("partly usable");
    assert_eq!(lora.len(), 1);
    let w = lora.warnings().join("\n");
    assert!(w.contains("bundle_emb.clip_l") && w.contains("input_blocks_5_1_proj_in.lora_down.weight"), "{w}");
}

#[test]
fn malformed_modules_are_errors() {
    let stem = "lora_unet_input_blocks_4_1_proj_in";
    let t = |part: &str, shape: &[usize], seed| (format!("{stem}.{part}"), tensor(shape, seed));
    let err = from(owned(&[t("lora_down.weight", &[2, 24], 1), t("lora_up.weight", &[24, 3], 2)]), &[])
        .expect_err("rank mismatch");
    assert!(matches!(err, LoraError::BadModule { .. }), "{err}");
    assert!(err.to_string().contains("down_blocks.1.attentions.0.proj_in"), "{err}");
    let two_alphas = [t("lora_down.weight", &[2, 24], 1), t("lora_up.weight", &[24, 2], 2), t("alpha", &[2], 3)];
    let err = from(owned(&two_alphas), &[]).expect_err("two alphas");
    assert!(err.to_string().contains("alpha has 2 values"), "{err}");
    // the same module under two spellings (SGM and diffusers layout)
    let mut both = proj_in_pair(stem);
    both.extend(proj_in_pair("lora_unet_down_blocks_1_attentions_0_proj_in"));
    let err = from(owned(&both), &[]).expect_err("duplicate");
    assert!(err.to_string().contains("two tensors for the same part"), "{err}");
}

#[test]
fn loras_for_another_model_are_refused_or_trimmed() {
    // SD 1.5 has attentions in down block 0; SDXL does not.
    let sd15 = from(owned(&proj_in_pair("lora_unet_down_blocks_0_attentions_0_proj_in")), &[]).expect("parsed");
    let err = LoraMergedStore::new(unet_store(), LoraComponent::Unet, &[(&sd15, 1.0)]).err().expect("no module fits");
    let msg = err.to_string();
    assert!(matches!(err, LoraError::WrongModel { .. }), "{msg}");
    assert!(msg.contains("none of its 1 unet modules") && msg.contains("down_blocks.0.attentions.0.proj_in"), "{msg}");

    // right name, wrong width
    let wide = vec![
        ("lora_unet_input_blocks_4_1_proj_in.lora_down.weight", tensor(&[2, 640], 1)),
        ("lora_unet_input_blocks_4_1_proj_in.lora_up.weight", tensor(&[640, 2], 2)),
    ];
    let wide = from(wide, &[]).expect("parsed");
    let msg =
        LoraMergedStore::new(unet_store(), LoraComponent::Unet, &[(&wide, 1.0)]).err().expect("shape").to_string();
    assert!(
        msg.contains("down_blocks.1.attentions.0.proj_in") && msg.contains("[640, 640]") && msg.contains("[24, 24]"),
        "{msg}"
    );

    // one fitting module and one the model lacks: merged, with a warning
    let mut t = proj_in_pair("lora_unet_input_blocks_4_1_proj_in");
    t.extend(proj_in_pair("lora_unet_down_blocks_0_attentions_0_proj_in"));
    let partial = from(owned(&t), &[]).expect("parsed");
    let merged = LoraMergedStore::new(unet_store(), LoraComponent::Unet, &[(&partial, 1.0)]).expect("partial");
    assert_eq!(merged.changed_weights().collect::<Vec<_>>(), ["down_blocks.1.attentions.0.proj_in.weight"]);
    let w = merged.warnings().join("\n");
    assert!(w.contains("down_blocks.0.attentions.0.proj_in") && w.contains("user.safetensors"), "{w}");

    // a UNet-only LoRA leaves the text encoders alone
    let te = LoraMergedStore::new(clip_store("clip_l"), LoraComponent::TextEncoder, &[(&partial, 1.0)]).expect("te");
    assert_eq!(te.changed_weights().count(), 0);
    assert!(te.warnings().is_empty());
}
