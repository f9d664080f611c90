//! `storymaker tensor-check` for the StoryMaker components (clip-vision, ppr, unet-with-adapter,
//! preprocess), through the real binary with weights in the released layouts (`mask.bin` torch
//! pickle, transformers CLIP folder), against the reference pipeline's tensors
//! (tools/parity/gen_storymaker.py).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};
use common::{max_rel_err, parity_fixture};
use storymaker::imaging::character::clip_pixels;

fn fx(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/storymaker").join(name)
}

fn io() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fx("e2e.safetensors"), &Device::Cpu).unwrap()
}

fn run(
    component: &str,
    weights: &Path,
    extra: &[&str],
    inputs: &HashMap<String, Tensor>,
    dir: &Path,
) -> HashMap<String, Tensor> {
    let inp = dir.join(format!("{component}.in.safetensors"));
    let out = dir.join(format!("{component}.out.safetensors"));
    candle_core::safetensors::save(inputs, &inp).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_storymaker"))
        .args(["tensor-check", component, "--weights"])
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

fn pixels(name: &str) -> Tensor {
    let img = image::open(fx(name)).unwrap().to_rgb8();
    Tensor::from_vec(clip_pixels(&img), (1, 3, 224, 224), &Device::Cpu).unwrap()
}

fn u8_tensor(img: &image::RgbImage) -> Tensor {
    let (w, h) = img.dimensions();
    Tensor::from_vec(img.as_raw().clone(), (h as usize, w as usize, 3), &Device::Cpu).unwrap()
}

#[test]
fn clip_vision_and_ppr_match_the_reference() {
    let d = tempfile::tempdir().unwrap();
    let io = io();
    let px = Tensor::cat(&[pixels("crop_0.png"), pixels("crop_1.png")], 0).unwrap();
    let out = run("clip-vision", &fx("clip_vision"), &[], &HashMap::from([("pixel_values".to_string(), px)]), d.path());
    let e = max_rel_err(&out["penultimate"], &io["clip_crop_hidden"]);
    assert!(e < 1e-4, "clip-vision rel err {e}");

    let ids = Tensor::stack(&[&io["char0.id"], &io["char1.id"]], 0).unwrap();
    let inputs = HashMap::from([
        ("id".to_string(), ids),
        ("clip_crop".to_string(), io["clip_crop_hidden"].clone()),
        ("clip_face".to_string(), io["clip_face_hidden"].clone()),
    ]);
    let out = run("ppr", &fx("mask.bin"), &["--dim-head", "16"], &inputs, d.path());
    assert!(max_rel_err(&out["cond"], &io["ppr2.cond"]) < 1e-4);
    assert!(max_rel_err(&out["uncond"], &io["ppr2.uncond"]) < 1e-4);
    assert_eq!(out["tokens"].dims(), &[1, 60, 80]);
}

#[test]
fn unet_with_adapter_matches_the_reference() {
    let d = tempfile::tempdir().unwrap();
    let io = io();
    let unet = d.path().join("unet");
    std::fs::create_dir_all(&unet).unwrap();
    std::fs::copy(parity_fixture("unet.config.json"), unet.join("config.json")).unwrap();
    std::fs::copy(parity_fixture("unet.weights.safetensors"), unet.join("diffusion_pytorch_model.safetensors"))
        .unwrap();
    let inputs = HashMap::from([
        ("sample".to_string(), io["unet0.sample"].clone()),
        ("timesteps".to_string(), io["unet0.timestep"].broadcast_as(2).unwrap().contiguous().unwrap()),
        ("encoder_hidden_states".to_string(), io["unet0.context"].clone()),
        ("text_embeds".to_string(), io["unet0.text_embeds"].clone()),
        ("time_ids".to_string(), io["unet0.time_ids"].clone()),
    ]);
    let adapter = fx("mask.bin");
    let out = run("unet-with-adapter", &unet, &["--adapter", adapter.to_str().unwrap()], &inputs, d.path());
    let e = max_rel_err(&out["out"], &io["unet0.eps"]);
    assert!(e < 1e-4, "unet-with-adapter rel err {e}");
}

#[test]
fn preprocess_matches_what_the_reference_fed_to_clip() {
    let d = tempfile::tempdir().unwrap();
    let io = io();
    let photo =
        image::open(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/sample/astronaut.png")).unwrap().to_rgb8();
    let mask = image::open(fx("eileen_mask.png")).unwrap().to_luma8();
    let (w, h) = mask.dimensions();
    let inputs = HashMap::from([
        ("image".to_string(), u8_tensor(&photo)),
        ("mask".to_string(), Tensor::from_vec(mask.into_raw(), (h as usize, w as usize), &Device::Cpu).unwrap()),
        ("kps".to_string(), io["char0.kps"].clone()),
    ]);
    let out = run("preprocess", Path::new(""), &[], &inputs, d.path());
    let as_u8 = |t: &Tensor| -> Vec<u8> { t.to_dtype(DType::U8).unwrap().flatten_all().unwrap().to_vec1().unwrap() };
    let max_diff = |a: &[u8], b: &[u8]| a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    let crop = image::open(fx("crop_0.png")).unwrap().to_rgb8().into_raw();
    assert!(max_diff(&as_u8(&out["crop"]), &crop) <= 1, "crop within 1 grey level");
    let face = image::open(fx("face_0.png")).unwrap().to_rgb8().into_raw();
    assert!(max_diff(&as_u8(&out["face"]), &face) <= 1, "aligned face within 1 grey level");
    let m = (&out["norm_crop_matrix"] - &io["char0.norm_crop_matrix"]).unwrap().abs().unwrap();
    let m: f32 = m.max_all().unwrap().to_scalar().unwrap();
    assert!(m < 1e-3, "similarity matrix differs by {m}");
    assert_eq!(out["clip_img"].dims(), &[1, 3, 224, 224]);
    assert_eq!(out["bbox"].dims(), &[4]);
}
