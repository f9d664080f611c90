//! `pipeline::generate` from a diffusers-layout folder of the tiny fixture models: prompt in,
//! image out, deterministic per seed, progress per step, cancel.

mod common;

use std::path::Path;

use common::parity_fixture;
use storymaker::pipeline::{generate, PipelineError, SdxlModels, StepControl, Txt2ImgRequest};
use storymaker::sampling::SchedulerKind;

fn copy(from: &str, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(parity_fixture(from), to).unwrap();
}

/// CLIP's byte alphabet as vocabulary (plus `</w>` forms and the two specials, EOS last) and no
/// merges: every id stays below the tiny models' 1000-token embedding.
fn write_byte_tokenizer(dir: &Path) {
    let mut bytes: Vec<u32> = (u32::from('!')..=u32::from('~')).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = bytes.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut vocab: Vec<String> = chars.iter().map(|&c| char::from_u32(c).unwrap().to_string()).collect();
    let with_suffix: Vec<String> = vocab.iter().map(|c| format!("{c}</w>")).collect();
    vocab.extend(with_suffix);
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    let map: serde_json::Map<String, serde_json::Value> =
        vocab.into_iter().enumerate().map(|(i, t)| (t, serde_json::Value::from(i))).collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("vocab.json"), serde_json::to_vec(&map).unwrap()).unwrap();
    std::fs::write(dir.join("merges.txt"), "#version: 0.2\n").unwrap();
}

fn tiny_sdxl(root: &Path) {
    copy("unet.config.json", &root.join("unet/config.json"));
    copy("unet.weights.safetensors", &root.join("unet/diffusion_pytorch_model.safetensors"));
    copy("vae.config.json", &root.join("vae/config.json"));
    copy("vae.weights.safetensors", &root.join("vae/diffusion_pytorch_model.safetensors"));
    copy("clip_l.config.json", &root.join("text_encoder/config.json"));
    copy("clip_l.weights.safetensors", &root.join("text_encoder/model.safetensors"));
    copy("clip_g.config.json", &root.join("text_encoder_2/config.json"));
    copy("clip_g.weights.safetensors", &root.join("text_encoder_2/model.safetensors"));
    copy("sched_sdxl_base.config.json", &root.join("scheduler/scheduler_config.json"));
    write_byte_tokenizer(&root.join("tokenizer"));
}

fn request(seed: u64, scheduler: SchedulerKind) -> Txt2ImgRequest {
    Txt2ImgRequest {
        prompt: "a red fox on a hill".into(),
        negative_prompt: "blurry".into(),
        seed,
        width: 64,
        height: 48,
        steps: 3,
        guidance: 5.0,
        scheduler,
    }
}

#[test]
fn generates_deterministic_images_with_progress_and_cancel() {
    let d = tempfile::tempdir().unwrap();
    tiny_sdxl(d.path());
    let mut loaded = Vec::new();
    let models = SdxlModels::load_diffusers(d.path(), &candle_core::Device::Cpu, candle_core::DType::F32, &mut |s| {
        loaded.push(s.to_string())
    })
    .unwrap();
    assert_eq!(loaded, ["tokenizer", "text encoders", "UNet", "VAE"]);

    let mut steps = Vec::new();
    let a = generate(&models, &request(7, SchedulerKind::UniPc), &mut |i| {
        steps.push((i.step, i.total));
        StepControl::Continue
    })
    .unwrap();
    assert_eq!(steps, [(1, 3), (2, 3), (3, 3)]);
    assert_eq!(a.image.dimensions(), (64, 48));
    let b = generate(&models, &request(7, SchedulerKind::UniPc), &mut |_| StepControl::Continue).unwrap();
    assert_eq!(a.image, b.image, "same seed, same image");
    let c = generate(&models, &request(8, SchedulerKind::UniPc), &mut |_| StepControl::Continue).unwrap();
    assert_ne!(a.image, c.image, "another seed, another image");
    // The stochastic scheduler draws its step noise from the same seeded stream.
    let e1 = generate(&models, &request(7, SchedulerKind::EulerAncestral), &mut |_| StepControl::Continue).unwrap();
    let e2 = generate(&models, &request(7, SchedulerKind::EulerAncestral), &mut |_| StepControl::Continue).unwrap();
    assert_eq!(e1.image, e2.image);
    assert_ne!(e1.image, a.image);

    let cancelled = generate(&models, &request(7, SchedulerKind::UniPc), &mut |_| StepControl::Cancel);
    assert!(matches!(cancelled, Err(PipelineError::Cancelled)));
    let mut bad = request(7, SchedulerKind::UniPc);
    bad.width = 60;
    assert!(matches!(generate(&models, &bad, &mut |_| StepControl::Continue), Err(PipelineError::Input(_))));
}

#[test]
fn a_missing_component_is_named() {
    let d = tempfile::tempdir().unwrap();
    tiny_sdxl(d.path());
    std::fs::remove_file(d.path().join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    let e = SdxlModels::load_diffusers(d.path(), &candle_core::Device::Cpu, candle_core::DType::F32, &mut |_| {})
        .err()
        .expect("must fail")
        .to_string();
    assert!(e.contains("vae") && e.contains("diffusion_pytorch_model.safetensors"), "{e}");
}
