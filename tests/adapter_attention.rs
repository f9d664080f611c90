//! StoryMaker's attention processors (spec §3) on the UNet hooks: key numbering, the decoupled
//! formula re-derived by hand, and neutrality at zero scales. (Parity with the reference
//! processors lands with the adapter fixtures.)

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::{max_rel_err, parity_fixture};
use storymaker::models::adapter::{attach_ip_adapter, processor_names, AdapterScales, StoryMakerAttention};
use storymaker::models::attention::{merge_heads, sdpa, split_heads, Attention};
use storymaker::models::unet::{UNet2DConditionModel, UNetConfig, UNetInput};
use storymaker::weights::store::TensorStore;

fn randn(shape: &[usize], scale: f64) -> Tensor {
    (Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap() * scale).unwrap()
}

#[test]
fn processor_numbering_matches_the_released_checkpoint() {
    let names = processor_names(&UNetConfig::sdxl_base());
    assert_eq!(names.len(), 140);
    assert_eq!(names[0], "down_blocks.1.attentions.0.transformer_blocks.0.attn1");
    assert_eq!(names[1], "down_blocks.1.attentions.0.transformer_blocks.0.attn2");
    assert_eq!(names[47], "down_blocks.2.attentions.1.transformer_blocks.9.attn2");
    assert_eq!(names[48], "up_blocks.0.attentions.0.transformer_blocks.0.attn1");
    assert_eq!(names[119], "up_blocks.1.attentions.2.transformer_blocks.1.attn2");
    assert_eq!(names[120], "mid_block.attentions.0.transformer_blocks.0.attn1");
    assert_eq!(names[139], "mid_block.attentions.0.transformer_blocks.9.attn2");
}

#[test]
fn decoupled_cross_attention_follows_the_spec_formula() {
    let (h, c, heads, rank) = (16usize, 12usize, 2usize, 4usize);
    let mut w = HashMap::new();
    for (k, s) in
        [("to_q.weight", [h, h]), ("to_k.weight", [h, c]), ("to_v.weight", [h, c]), ("to_out.0.weight", [h, h])]
    {
        w.insert(format!("attn.{k}"), randn(&s, 0.3));
    }
    w.insert("attn.to_out.0.bias".into(), randn(&[h], 0.1));
    for (p, input) in [("to_q_lora", h), ("to_k_lora", c), ("to_v_lora", c), ("to_out_lora", h)] {
        w.insert(format!("ip.{p}.down.weight"), randn(&[rank, input], 0.3));
        w.insert(format!("ip.{p}.up.weight"), randn(&[h, rank], 0.3));
    }
    w.insert("ip.to_k_ip.weight".into(), randn(&[h, c], 0.3));
    w.insert("ip.to_v_ip.weight".into(), randn(&[h, c], 0.3));
    let vb = VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu);
    let scales = Arc::new(AdapterScales::default());
    scales.set(0.7, 0.6);
    let mut attn = Attention::new(vb.pp("attn"), h, Some(c), heads, h / heads).unwrap();
    attn.set_extension(Some(Box::new(StoryMakerAttention::new(vb.pp("ip"), h, Some(c), scales.clone()).unwrap())));
    let x = randn(&[2, 5, h], 1.0);
    let ctx = randn(&[2, 77 + 20, c], 1.0);
    let got = attn.forward(&x, Some(&ctx)).unwrap();

    // By hand, spec §3.4.
    let lin = |name: &str, t: &Tensor| t.broadcast_matmul(&w[name].t().unwrap()).unwrap();
    let lora = |p: &str, t: &Tensor| {
        let d = lin(&format!("ip.{p}.down.weight"), t);
        (lin(&format!("ip.{p}.up.weight"), &d) * 0.6).unwrap()
    };
    let text = ctx.narrow(1, 0, 77).unwrap();
    let image = ctx.narrow(1, 77, 20).unwrap();
    let q = (lin("attn.to_q.weight", &x) + lora("to_q_lora", &x)).unwrap();
    let k = (lin("attn.to_k.weight", &text) + lora("to_k_lora", &text)).unwrap();
    let v = (lin("attn.to_v.weight", &text) + lora("to_v_lora", &text)).unwrap();
    let mha = |q: &Tensor, k: &Tensor, v: &Tensor| {
        merge_heads(
            &sdpa(&split_heads(q, heads).unwrap(), &split_heads(k, heads).unwrap(), &split_heads(v, heads).unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let z_t = mha(&q, &k, &v);
    let z_i = mha(&q, &lin("ip.to_k_ip.weight", &image), &lin("ip.to_v_ip.weight", &image));
    let z = (z_t + (z_i * 0.7).unwrap()).unwrap();
    let out = (lin("attn.to_out.0.weight", &z).broadcast_add(&w["attn.to_out.0.bias"]).unwrap()
        + lora("to_out_lora", &z))
    .unwrap();
    let e = max_rel_err(&got, &out);
    assert!(e < 1e-5, "rel err {e}");
}

#[test]
fn zero_scales_leave_the_unet_unchanged_and_all_processors_attach() {
    let cfg = UNetConfig::from_json(&std::fs::read(parity_fixture("unet.config.json")).unwrap()).unwrap();
    let vb = || {
        TensorStore::open(&[parity_fixture("unet.weights.safetensors")])
            .unwrap()
            .into_var_builder(DType::F32, &Device::Cpu)
    };
    let plain = UNet2DConditionModel::new(vb(), &cfg).unwrap();
    let mut adapted = UNet2DConditionModel::new(vb(), &cfg).unwrap();
    // Random adapter weights for every processor, shapes as in mask.bin (rank 4 here).
    let mut w = HashMap::new();
    let names = processor_names(&cfg);
    let width_of = |name: &str| {
        let rev = |i: usize| cfg.block_out_channels[cfg.block_out_channels.len() - 1 - i];
        let idx =
            |p: &str| name.strip_prefix(p).and_then(|r| r.split('.').next()).and_then(|n| n.parse::<usize>().ok());
        if let Some(i) = idx("down_blocks.") {
            cfg.block_out_channels[i]
        } else if let Some(i) = idx("up_blocks.") {
            rev(i)
        } else {
            *cfg.block_out_channels.last().unwrap()
        }
    };
    for (k, name) in names.iter().enumerate() {
        let h = width_of(name);
        let kv = if name.ends_with("attn2") { cfg.cross_attention_dim } else { h };
        for (p, input) in [("to_q_lora", h), ("to_k_lora", kv), ("to_v_lora", kv), ("to_out_lora", h)] {
            w.insert(format!("{k}.{p}.down.weight"), randn(&[4, input], 0.3));
            w.insert(format!("{k}.{p}.up.weight"), randn(&[h, 4], 0.3));
        }
        if name.ends_with("attn2") {
            w.insert(format!("{k}.to_k_ip.weight"), randn(&[h, kv], 0.3));
            w.insert(format!("{k}.to_v_ip.weight"), randn(&[h, kv], 0.3));
        }
    }
    let scales = Arc::new(AdapterScales::default());
    let n =
        attach_ip_adapter(&mut adapted, VarBuilder::from_tensors(w, DType::F32, &Device::Cpu), scales.clone()).unwrap();
    assert_eq!(n, names.len());

    let io = candle_core::safetensors::load(parity_fixture("unet.io.safetensors"), &Device::Cpu).unwrap();
    let image_tokens = randn(&[2, 20, cfg.cross_attention_dim], 1.0);
    let ctx = Tensor::cat(&[&io["encoder_hidden_states"], &image_tokens], 1).unwrap();
    let run = |u: &UNet2DConditionModel, c: &Tensor| {
        u.forward(&UNetInput {
            sample: &io["sample"],
            timesteps: &io["timesteps"],
            encoder_hidden_states: c,
            text_embeds: Some(&io["text_embeds"]),
            time_ids: Some(&io["time_ids"]),
            down_residuals: None,
            mid_residual: None,
        })
        .unwrap()
    };
    let base = run(&plain, &io["encoder_hidden_states"]);
    scales.set(0.0, 0.0);
    assert!(max_rel_err(&run(&adapted, &ctx), &base) < 1e-6, "zero scales = plain SDXL");
    scales.set(0.8, 0.8);
    assert!(max_rel_err(&run(&adapted, &ctx), &base) > 1e-3, "the adapter changes the output");
}
