//! `pipeline::generate` from a diffusers-layout folder of the tiny fixture models: prompt in,
//! image out, deterministic per seed, progress per step, cancel.

mod common;

use common::tiny_sdxl;
use storymaker::pipeline::{generate, PipelineError, SdxlModels, StepControl, Txt2ImgRequest};
use storymaker::sampling::SchedulerKind;

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
    let models = SdxlModels::load_diffusers(
        d.path(),
        &candle_core::Device::Cpu,
        candle_core::DType::F32,
        &[],
        &mut |s: &str| loaded.push(s.to_string()),
    )
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
    let e = SdxlModels::load_diffusers(d.path(), &candle_core::Device::Cpu, candle_core::DType::F32, &[], &mut |_| {})
        .err()
        .expect("must fail")
        .to_string();
    assert!(e.contains("vae") && e.contains("diffusion_pytorch_model.safetensors"), "{e}");
}

#[test]
fn a_single_file_checkpoint_generates_the_same_image_as_the_diffusers_folder() {
    use storymaker::models::clip_text::ClipTextConfig;
    use storymaker::models::unet::UNetConfig;
    use storymaker::models::vae::VaeConfig;
    use storymaker::pipeline::SingleFileConfigs;
    use storymaker::sampling::SchedulerConfig;
    let fx = |n: &str| std::fs::read_to_string(common::parity_fixture(n)).unwrap();
    let d = tempfile::tempdir().unwrap();
    tiny_sdxl(d.path());
    let (cpu, f32) = (candle_core::Device::Cpu, candle_core::DType::F32);
    // The single file's UNet is float16 (as sd_xl_base_1.0.safetensors ships): give the folder the
    // same float16 UNet weights (a diffusers fp16 variant), so the images must be equal.
    let unet_file = d.path().join("unet/diffusion_pytorch_model.safetensors");
    let half: std::collections::HashMap<_, _> = candle_core::safetensors::load(&unet_file, &cpu)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k, t.to_dtype(candle_core::DType::F16).unwrap()))
        .collect();
    candle_core::safetensors::save(&half, &unet_file).unwrap();
    let folder = SdxlModels::load_diffusers(d.path(), &cpu, f32, &[], &mut |_| {}).unwrap();
    // The tiny models' head counts (not inferable from shapes) and the folder's tokenizer.
    let configs = SingleFileConfigs {
        unet: UNetConfig::from_json(fx("unet.config.json").as_bytes()).unwrap(),
        clip_l: ClipTextConfig::from_json(&fx("clip_l.config.json")).unwrap(),
        clip_g: ClipTextConfig::from_json(&fx("clip_g.config.json")).unwrap(),
        vae: VaeConfig::from_json(&fx("vae.config.json")).unwrap(),
        scheduler: SchedulerConfig::from_json_str(&fx("sched_sdxl_base.config.json")).unwrap(),
    };
    let path = common::parity_fixture("sdxl_single_file.safetensors");
    let mut single = SdxlModels::load_single_file_with(&path, &configs, &cpu, f32, &[], &mut |_| {}).unwrap();
    single.tokenizer = storymaker::models::tokenizer::ClipTokenizer::from_file(d.path().join("tokenizer")).unwrap();
    let a = generate(&folder, &request(11, SchedulerKind::UniPc), &mut |_| StepControl::Continue).unwrap();
    let b = generate(&single, &request(11, SchedulerKind::UniPc), &mut |_| StepControl::Continue).unwrap();
    assert_eq!(a.image, b.image);
}
