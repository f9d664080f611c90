//! `storymaker tensor-check` on a diffusers-layout folder built from the parity fixtures: the
//! real binary, the real folder loaders, outputs equal to the reference tensors.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use candle_core::{Device, Tensor};
use common::{max_rel_err, parity_fixture};

fn copy(from: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(parity_fixture(from), to).unwrap();
}

fn load(p: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(p, &Device::Cpu).unwrap()
}

fn tensor_check(
    component: &str,
    weights: &Path,
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
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    load(&out)
}

#[test]
fn every_component_matches_the_reference_through_the_cli() {
    let d = tempfile::tempdir().unwrap();
    let sdxl = d.path().join("sdxl");
    copy("unet.config.json", &sdxl.join("unet/config.json"));
    copy("unet.weights.safetensors", &sdxl.join("unet/diffusion_pytorch_model.fp16.safetensors"));
    copy("vae.config.json", &sdxl.join("vae/config.json"));
    copy("vae.weights.safetensors", &sdxl.join("vae/diffusion_pytorch_model.safetensors"));
    copy("clip_l.config.json", &sdxl.join("text_encoder/config.json"));
    copy("clip_l.weights.safetensors", &sdxl.join("text_encoder/model.safetensors"));
    copy("clip_g.config.json", &sdxl.join("text_encoder_2/config.json"));
    copy("clip_g.weights.safetensors", &sdxl.join("text_encoder_2/model.safetensors"));

    let clip = load(&parity_fixture("clip_text.safetensors"));
    let e2e = load(&parity_fixture("e2e_txt2img.safetensors"));
    let ins = HashMap::from([
        ("input_ids_1".to_string(), clip["clip_l.input_ids"].clone()),
        ("input_ids_2".to_string(), clip["clip_g.input_ids"].clone()),
    ]);
    let out = tensor_check("text-encoders", &sdxl, &ins, d.path());
    assert!(max_rel_err(&out["prompt_embeds"], &e2e["prompt_embeds"]) < 1e-4);
    assert!(max_rel_err(&out["pooled_prompt_embeds"], &e2e["add_text_embeds"]) < 1e-4);

    let io = load(&parity_fixture("unet.io.safetensors"));
    let ins: HashMap<String, Tensor> = ["sample", "timesteps", "encoder_hidden_states", "text_embeds", "time_ids"]
        .iter()
        .map(|k| (k.to_string(), io[*k].clone()))
        .collect();
    let out = tensor_check("unet", &sdxl.join("unet"), &ins, d.path());
    assert!(max_rel_err(&out["out"], &io["out"]) < 1e-4);
    // The SGM single file, with the tiny config passed explicitly.
    let sgm_in = d.path().join("sgm.in.safetensors");
    let sgm_out = d.path().join("sgm.out.safetensors");
    candle_core::safetensors::save(&ins, &sgm_in).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_storymaker"))
        .args(["tensor-check", "unet", "--weights"])
        .arg(parity_fixture("unet.sgm.safetensors"))
        .arg("--config")
        .arg(parity_fixture("unet.config.json"))
        .arg("--inputs")
        .arg(&sgm_in)
        .arg("--out")
        .arg(&sgm_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(max_rel_err(&load(&sgm_out)["out"], &io["out"]) < 1e-4);

    let ins = HashMap::from([("latents".to_string(), e2e["final_latents"].clone())]);
    let out = tensor_check("vae-decode", &sdxl.join("vae"), &ins, d.path());
    assert!(max_rel_err(&out["decoded"], &e2e["decoded"]) < 1e-4);
    assert!(max_rel_err(&out["image"], &e2e["image"]) < 1e-4);
    // The VAE of a single-file checkpoint (its sizes are read from the tensors).
    let single_out = d.path().join("single.out.safetensors");
    let o = Command::new(env!("CARGO_BIN_EXE_storymaker"))
        .args(["tensor-check", "vae-decode", "--weights"])
        .arg(parity_fixture("sdxl_single_file.safetensors"))
        .arg("--config")
        .arg(parity_fixture("vae.config.json"))
        .arg("--inputs")
        .arg(d.path().join("vae-decode.in.safetensors"))
        .arg("--out")
        .arg(&single_out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(max_rel_err(&load(&single_out)["decoded"], &e2e["decoded"]) < 1e-4);
}

#[test]
fn scheduler_component_replays_the_unipc_fixture() {
    let d = tempfile::tempdir().unwrap();
    let f = load(&parity_fixture("sched_unipc.safetensors"));
    let names: Vec<_> = f.keys().cloned().collect();
    let get = |k: &str| f.get(k).unwrap_or_else(|| panic!("fixture lacks {k}; has {names:?}")).clone();
    // n25.samples holds the initial sample followed by the sample after each of the 25 steps.
    let all = get("n25.samples");
    let ins = HashMap::from([
        ("sample".to_string(), all.get(0).unwrap()),
        ("model_outputs".to_string(), get("n25.model_outputs")),
    ]);
    let out = tensor_check("scheduler", &parity_fixture("sched_unipc.config.json"), &ins, d.path());
    let samples = all.narrow(0, 1, 25).unwrap();
    let e = max_rel_err(&out["samples"], &samples);
    assert!(e < 1e-4, "{e}");
}

#[test]
fn missing_inputs_and_bad_components_are_explained() {
    let d = tempfile::tempdir().unwrap();
    let inp = d.path().join("in.safetensors");
    candle_core::safetensors::save(
        &HashMap::from([("x".to_string(), Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap())]),
        &inp,
    )
    .unwrap();
    let run = |component: &str, weights: &Path| {
        Command::new(env!("CARGO_BIN_EXE_storymaker"))
            .args(["tensor-check", component, "--weights"])
            .arg(weights)
            .arg("--inputs")
            .arg(&inp)
            .arg("--out")
            .arg(d.path().join("o.safetensors"))
            .output()
            .unwrap()
    };
    let o = run("vae-decode", d.path());
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("config.json"));
    let o = run("teleport", d.path());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown component teleport"));
    let help = Command::new(env!("CARGO_BIN_EXE_storymaker")).args(["tensor-check", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for word in ["text-encoders", "unet", "vae-decode", "scheduler", "input_ids_1", "time_ids", "model_outputs"] {
        assert!(text.contains(word), "--help lacks {word}");
    }
}
