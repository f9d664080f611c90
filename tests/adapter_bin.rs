//! Loading StoryMaker's `mask.bin` layout (torch zip-pickle with two state dicts) and attaching
//! its processors to the UNet, on a tiny file written by torch.save (tools/parity/gen_adapter_bin.py).

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::parity_fixture;
use storymaker::models::adapter::{attach_ip_adapter, processor_names, AdapterScales};
use storymaker::models::unet::{UNet2DConditionModel, UNetConfig};
use storymaker::weights::adapter_bin::load_adapter;
use storymaker::weights::store::TensorStore;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adapter").join(name)
}

fn tiny_unet() -> (UNetConfig, UNet2DConditionModel) {
    let cfg = UNetConfig::from_json(&std::fs::read(parity_fixture("unet.config.json")).unwrap()).unwrap();
    let vb = TensorStore::open(&[parity_fixture("unet.weights.safetensors")])
        .unwrap()
        .into_var_builder(DType::F32, &Device::Cpu);
    let unet = UNet2DConditionModel::new(vb, &cfg).unwrap();
    (cfg, unet)
}

#[test]
fn processor_order_matches_diffusers_attn_processors() {
    let (cfg, _) = tiny_unet();
    let diffusers: Vec<String> = serde_json::from_slice(&std::fs::read(fixture("processors.json")).unwrap()).unwrap();
    assert_eq!(processor_names(&cfg), diffusers);
}

#[test]
fn mask_bin_loads_and_every_processor_attaches() {
    let w = load_adapter(&fixture("mask_tiny.bin"), &Device::Cpu).unwrap();
    assert_eq!(w.image_proj_model["bg_embed"].dims(), &[1, 20, 80]);
    assert_eq!(w.ip_adapter.len(), 504);
    let (cfg, mut unet) = tiny_unet();
    let vb = VarBuilder::from_tensors(w.ip_adapter.clone(), DType::F32, &Device::Cpu);
    let n = attach_ip_adapter(&mut unet, vb, Arc::new(AdapterScales::default())).unwrap();
    assert_eq!(n, processor_names(&cfg).len());

    // The safetensors conversion (prefixed keys) loads the same tensors.
    let d = tempfile::tempdir().unwrap();
    let mut flat = std::collections::HashMap::new();
    for (k, v) in &w.image_proj_model {
        flat.insert(format!("image_proj_model.{k}"), v.clone());
    }
    for (k, v) in &w.ip_adapter {
        flat.insert(format!("ip_adapter.{k}"), v.clone());
    }
    let st = d.path().join("mask.safetensors");
    candle_core::safetensors::save(&flat, &st).unwrap();
    let again = load_adapter(&st, &Device::Cpu).unwrap();
    assert_eq!(again.ip_adapter.len(), w.ip_adapter.len());
    let a = again.ip_adapter["0.to_q_lora.down.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = w.ip_adapter["0.to_q_lora.down.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_file_that_is_not_an_adapter_is_explained() {
    let err = load_adapter(&parity_fixture("unet.weights.safetensors"), &Device::Cpu).err().expect("must fail");
    assert!(err.to_string().contains("not a StoryMaker adapter"), "{err}");
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("mask.bin");
    std::fs::write(&junk, b"not a zip").unwrap();
    assert!(load_adapter(&junk, &Device::Cpu).is_err());
}
