//! `storymaker render` end to end on the tiny models in the documented folder layout: a two-panel,
//! two-character story rendered to files, variants recorded in the saved project; failures named
//! with a non-zero exit code.

mod common;

use std::path::Path;
use std::process::Command;

use common::{tiny_adapter, tiny_identity, tiny_sdxl};
use storymaker::story::{load_project, save_project, CastSlot, SeedChoice};

fn story(dir: &Path) {
    let mut p = storymaker::story::sample::write_sample_story(dir).unwrap();
    // Both characters get an identity the tiny adapter accepts (and the cameraman a face).
    for c in &mut p.characters {
        let kps = [[202.0, 106.0], [245.0, 105.0], [221.0, 127.0], [204.0, 145.0], [242.0, 145.0]];
        let face = c.face.get_or_insert(storymaker::story::FaceBox {
            bbox: [150.0, 60.0, 300.0, 200.0],
            keypoints: None,
            score: None,
            source: storymaker::story::FaceSource::Manual,
            identity: None,
        });
        if face.keypoints.is_none() {
            // Lav's face in camera.png (profile), inside his mask.
            face.keypoints = Some([[219.0, 147.0], [242.0, 146.0], [247.0, 165.0], [224.0, 182.0], [240.0, 181.0]]);
        } else {
            face.keypoints = Some(kps);
        }
        face.identity = Some(tiny_identity());
    }
    p.panels.truncate(2);
    let (e, l) = (p.characters[0].id, p.characters[1].id);
    for panel in &mut p.panels {
        panel.cast = vec![CastSlot::new(e), CastSlot::new(l)];
        panel.params.width = 256;
        panel.params.height = 256;
        panel.params.steps = 2;
        panel.seed = SeedChoice::Fixed(7);
    }
    save_project(dir, &p).unwrap();
}

fn render(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_storymaker")).arg("render").args(args).output().unwrap()
}

#[test]
fn renders_a_two_panel_two_character_story() {
    let d = tempfile::tempdir().unwrap();
    let (root, models, out) = (d.path().join("story"), d.path().join("models"), d.path().join("out"));
    story(&root);
    tiny_sdxl(&models.join("sdxl"));
    tiny_adapter(&models);
    let o = render(&[
        root.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
        "--variants",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("step 2/2"), "a progress line: {stderr}");
    for (panel, seed) in [(1, 7), (1, 8), (2, 7), (2, 8)] {
        let f = out.join(format!("panel-{panel}-{seed}.png"));
        assert_eq!(image::open(&f).unwrap().to_rgb8().dimensions(), (256, 256), "{}", f.display());
    }
    let p = load_project(&root).unwrap();
    for panel in &p.panels {
        assert_eq!(panel.variants.len(), 2, "two variants per panel with consecutive seeds");
        assert_eq!(panel.variants.iter().map(|v| v.seed).collect::<Vec<_>>(), vec![7, 8]);
        assert!(panel.variants.iter().all(|v| v.models.iter().any(|m| m.starts_with("storymaker:"))));
        assert!(panel.variants.iter().all(|v| v.image.join(&root).is_file()));
    }
}

#[test]
fn a_missing_weight_file_is_named_and_the_exit_code_says_so() {
    let d = tempfile::tempdir().unwrap();
    let (root, models, out) = (d.path().join("story"), d.path().join("models"), d.path().join("out"));
    story(&root);
    tiny_sdxl(&models.join("sdxl"));
    tiny_adapter(&models);
    std::fs::remove_file(models.join("sdxl/vae/diffusion_pytorch_model.safetensors")).unwrap();
    let o = render(&[root.to_str().unwrap(), "--out", out.to_str().unwrap(), "--models", models.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("vae"), "the missing file is named: {stderr}");
    assert!(load_project(&root).unwrap().panels.iter().all(|p| p.variants.is_empty()), "nothing recorded");
    let o = render(&[root.to_str().unwrap(), "--out", out.to_str().unwrap(), "--panels", "9"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("panel 9 does not exist"));
}
