//! The engine runs StoryMaker end to end from a models folder in the documented layout
//! (`sdxl/`, `storymaker/mask.bin`, `clip-vit-h/`) on the tiny fixture models, and reports the
//! missing pieces by name.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{tiny_adapter, tiny_identity, tiny_sdxl};
use storymaker::engine::{CharacterSnapshot, Engine, Event, Job, JobId};
use storymaker::imaging::Mask;
use storymaker::story::{CharacterId, CropRect, FaceBox, FaceSource, GenParams, PanelId};

fn fx(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/storymaker").join(name)
}

fn models(root: &Path, with_adapter: bool) {
    tiny_sdxl(&root.join("sdxl"));
    if with_adapter {
        tiny_adapter(root);
    }
}

fn eileen(identity: Option<Vec<f32>>) -> CharacterSnapshot {
    let mask = Mask::from_gray(image::open(fx("eileen_mask.png")).unwrap().to_luma8());
    CharacterSnapshot {
        id: CharacterId(1),
        name: "Eileen".into(),
        photo: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/sample/astronaut.png"),
        crop: CropRect { x: 0.0, y: 0.0, w: 512.0, h: 512.0 },
        mask: Arc::new(mask),
        face: Some(FaceBox {
            bbox: [179.0, 63.0, 269.0, 174.0],
            keypoints: Some([[202.0, 106.0], [245.0, 105.0], [221.0, 127.0], [204.0, 145.0], [242.0, 145.0]]),
            score: None,
            source: FaceSource::Imported,
            identity,
        }),
        pose: None,
        id_only: false,
        cloth: None,
        blend: None,
    }
}

fn job(id: u64, models_dir: &Path, out: &Path, cast: Vec<CharacterSnapshot>) -> Job {
    Job {
        id: JobId(id),
        panel: PanelId(7),
        prompt: "an astronaut waving".into(),
        negative_prompt: String::new(),
        seed: 3,
        params: GenParams { width: 64, height: 64, steps: 2, guidance: 5.0, ..GenParams::default() },
        cast,
        models_dir: models_dir.to_path_buf(),
        style_loras: Vec::new(),
        pose_style: storymaker::pose::render::PoseStyle::Thick,
        output: out.join(format!("out-{id}.png")),
    }
}

/// Waits for the end of job `id`; every event seen goes to `seen`.
fn finish_seeing(engine: &Engine, id: u64, seen: &mut Vec<Event>) -> Event {
    let start = Instant::now();
    loop {
        for e in engine.poll() {
            seen.push(e.clone());
            match &e {
                Event::Done { job, .. } | Event::Failed { job, .. } | Event::Cancelled { job, .. }
                    if *job == JobId(id) =>
                {
                    return e
                }
                _ => {}
            }
        }
        assert!(start.elapsed() < Duration::from_secs(300), "job {id} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn finish(engine: &Engine, id: u64) -> Event {
    finish_seeing(engine, id, &mut Vec::new())
}

fn prepared(seen: &[Event]) -> usize {
    seen.iter().filter(|e| matches!(e, Event::Status { message, .. } if message.starts_with("Prepared Eileen"))).count()
}

fn identity() -> Vec<f32> {
    tiny_identity()
}

#[test]
fn a_panel_with_a_character_runs_storymaker_and_records_it() {
    let d = tempfile::tempdir().unwrap();
    models(&d.path().join("models"), true);
    let engine = Engine::start(Arc::new(|| {})).unwrap();
    engine.submit(job(1, &d.path().join("models"), d.path(), vec![eileen(Some(identity()))]));
    let mut seen = Vec::new();
    match finish_seeing(&engine, 1, &mut seen) {
        Event::Done { output, models, .. } => {
            let img = image::open(&output).unwrap();
            assert_eq!((img.width(), img.height()), (64, 64));
            assert!(models.iter().any(|m| m.starts_with("storymaker:")), "{models:?}");
            assert!(models.iter().any(|m| m.contains("ip 0.8 lora 0.8")), "{models:?}");
        }
        other => panic!("expected an image, got {other:?}"),
    }
    assert_eq!(prepared(&seen), 1, "the character is prepared for the first job");
    let previews = seen.iter().filter(|e| matches!(e, Event::Preview { .. })).count();
    assert_eq!(previews, 2, "one live preview per step");
    seen.clear();
    // Same character, another seed: the character conditioning comes from the cache and the
    // image still differs from a plain-SDXL panel (the adapter is applied).
    let mut with_cast = job(2, &d.path().join("models"), d.path(), vec![eileen(Some(identity()))]);
    with_cast.seed = 4;
    engine.submit(with_cast);
    let mut plain = job(3, &d.path().join("models"), d.path(), Vec::new());
    plain.seed = 4;
    engine.submit(plain);
    let (Event::Done { output: a, .. }, Event::Done { output: b, models, .. }) =
        (finish_seeing(&engine, 2, &mut seen), finish(&engine, 3))
    else {
        panic!("both jobs should finish")
    };
    assert_eq!(prepared(&seen), 0, "a new seed reuses the cached character conditioning");
    assert!(!models.iter().any(|m| m.starts_with("storymaker:")), "no cast: plain SDXL ({models:?})");
    assert_ne!(image::open(a).unwrap().to_rgb8(), image::open(b).unwrap().to_rgb8());
}

#[test]
fn missing_adapter_or_identity_fail_with_the_fix() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("models");
    models(&dir, false);
    let engine = Engine::start(Arc::new(|| {})).unwrap();
    engine.submit(job(1, &dir, d.path(), vec![eileen(Some(identity()))]));
    match finish(&engine, 1) {
        Event::Failed { reason, .. } => {
            assert!(reason.contains("storymaker/mask.bin"), "{reason}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let d2 = tempfile::tempdir().unwrap();
    let dir2 = d2.path().join("models");
    models(&dir2, true);
    engine.submit(job(2, &dir2, d2.path(), vec![eileen(None)]));
    match finish(&engine, 2) {
        Event::Failed { reason, .. } => assert!(reason.contains("Eileen has no face identity"), "{reason}"),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn cancel_mid_job_stops_within_a_step_and_the_worker_keeps_going() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("models");
    models(&dir, true);
    let engine = Engine::start(Arc::new(|| {})).unwrap();
    let mut long = job(1, &dir, d.path(), vec![eileen(Some(identity()))]);
    long.params.steps = 400;
    engine.submit(long);
    // Cancel as soon as the first step is reported.
    let start = Instant::now();
    let mut cancelled_at = None;
    let end = loop {
        let mut end = None;
        for e in engine.poll() {
            match e {
                Event::Progress { step, .. } if cancelled_at.is_none() => {
                    engine.cancel(JobId(1));
                    cancelled_at = Some(step);
                }
                Event::Progress { step, .. } => {
                    let at = cancelled_at.unwrap_or(0);
                    assert!(step <= at + 2, "steps keep coming after the cancel ({at} -> {step})");
                }
                e @ (Event::Done { .. } | Event::Failed { .. } | Event::Cancelled { .. }) => end = Some(e),
                _ => {}
            }
        }
        if let Some(e) = end {
            break e;
        }
        assert!(start.elapsed() < Duration::from_secs(300));
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(matches!(end, Event::Cancelled { .. }), "{end:?}");
    assert!(!d.path().join("out-1.png").exists(), "no image for a cancelled job");
    engine.submit(job(2, &dir, d.path(), vec![eileen(Some(identity()))]));
    assert!(matches!(finish(&engine, 2), Event::Done { .. }), "the worker is ready for the next job");
}

fn with_pose(mut c: CharacterSnapshot) -> CharacterSnapshot {
    let waving = storymaker::pose::presets::builtin_presets().into_iter().find(|p| p.name == "Waving").unwrap();
    c.pose = waving.skeletons().into_iter().next();
    c
}

#[test]
fn a_posed_character_runs_the_controlnet_and_a_missing_one_is_named() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("models");
    models(&dir, true);
    let engine = Engine::start(Arc::new(|| {})).unwrap();
    // No ControlNet installed: a posed panel says where to put it, an unposed one does not need it.
    engine.submit(job(1, &dir, d.path(), vec![with_pose(eileen(Some(identity())))]));
    match finish(&engine, 1) {
        Event::Failed { reason, .. } => assert!(reason.contains("controlnet-openpose"), "{reason}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    engine.submit(job(2, &dir, d.path(), vec![eileen(Some(identity()))]));
    assert!(matches!(finish(&engine, 2), Event::Done { .. }), "no pose: no ControlNet needed");

    let cn = dir.join("controlnet-openpose");
    std::fs::create_dir_all(&cn).unwrap();
    let fx = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/controlnet/controlnet");
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fx.join(f), cn.join(f)).unwrap();
    }
    engine.submit(job(3, &dir, d.path(), vec![with_pose(eileen(Some(identity())))]));
    let (posed, models) = match finish(&engine, 3) {
        Event::Done { output, models, .. } => (image::open(output).unwrap().to_rgb8(), models),
        other => panic!("expected an image, got {other:?}"),
    };
    assert!(models.iter().any(|m| m.starts_with("controlnet-openpose:")), "{models:?}");
    let mut same_seed = job(4, &dir, d.path(), vec![eileen(Some(identity()))]);
    same_seed.seed = 3;
    engine.submit(same_seed);
    let Event::Done { output, models, .. } = finish(&engine, 4) else { panic!("unposed job should finish") };
    assert!(!models.iter().any(|m| m.starts_with("controlnet")), "{models:?}");
    assert_ne!(image::open(output).unwrap().to_rgb8(), posed, "the pose changes the image");
}

#[test]
fn a_job_with_a_missing_weight_file_fails_by_name_and_the_next_job_runs() {
    let d = tempfile::tempdir().unwrap();
    let (broken, good) = (d.path().join("broken"), d.path().join("good"));
    models(&broken, true);
    models(&good, true);
    std::fs::remove_file(broken.join("sdxl/unet/diffusion_pytorch_model.safetensors")).unwrap();
    let engine = Engine::start(Arc::new(|| {})).unwrap();
    // Both queued at once: the failure must not stall or poison the queue.
    engine.submit(job(1, &broken, d.path(), vec![eileen(Some(identity()))]));
    engine.submit(job(2, &good, d.path(), vec![eileen(Some(identity()))]));
    match finish(&engine, 1) {
        Event::Failed { reason, .. } => assert!(reason.contains("unet"), "the missing file is named: {reason}"),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(matches!(finish(&engine, 2), Event::Done { .. }), "the next job still runs");
}
