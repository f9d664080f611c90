//! Face analysis in the character editor, driven through the real `StoryApp` (egui_kittest, headless): the
//! automatic detection when a character without a face is opened (largest face, one undo step), picking another
//! detected face, placing a keypoint by hand (the identity is recomputed at it), and the messages without models.
//! The models folder holds the synthetic buffalo_l stand-ins of tests/fixtures/face (real loader, real threads).
#![cfg(feature = "gui")]

mod app_harness;

use std::path::{Path, PathBuf};

use app_harness::{click_at, harness, step_until, undo};
use egui::Modifiers;
use egui_kittest::kittest::Queryable;
use storymaker::face::{find_face_models, FaceAnalyzer};
use storymaker::story::FaceSource;

const SIZE: egui::Vec2 = egui::vec2(1280.0, 800.0);

/// `<home>/data/models/buffalo_l/` with the synthetic detector and recogniser.
fn install_models(home: &Path) -> PathBuf {
    let dir = home.join("data/models/buffalo_l");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/face");
    std::fs::copy(fixtures.join("scrfd_tiny.onnx"), dir.join("det_10g.onnx")).expect("copy");
    std::fs::copy(fixtures.join("arcface_tiny.onnx"), dir.join("w600k_r50.onnx")).expect("copy");
    home.join("data/models")
}

#[test]
fn without_models_the_editor_says_what_is_missing_and_what_to_do() {
    let home = tempfile::tempdir().expect("tmp");
    let mut h = harness(home.path(), None, SIZE);
    h.get_by_label("Lav").click();
    h.run();
    assert!(h.state().project().characters[1].face.is_none());
    h.get_by_label_contains("Automatic face detection is unavailable");
    h.get_by_label_contains("non-commercial research");
    h.get_by_label_contains("cannot be used in panels");
    h.get_by_label("Import face data…");
    assert!(!h.state().is_busy(), "nothing was started");
}

#[test]
fn opening_a_character_without_a_face_takes_the_largest_and_others_can_be_picked() {
    let home = tempfile::tempdir().expect("tmp");
    let models = install_models(home.path());
    let mut h = harness(home.path(), None, SIZE);
    let lav = h.state().project().characters[1].clone();
    assert!(lav.face.is_none());
    h.get_by_label("Lav").click();
    step_until(&mut h, "face detection", |a| a.project().characters[1].face.is_some() && !a.is_busy());
    // The same analysis run directly: the editor applied its largest face with that face's identity.
    let analyzer = FaceAnalyzer::load(&find_face_models(&models).expect("models")).expect("load");
    let photo = image::open(lav.photo.join(h.state().project_root())).expect("photo").to_rgb8();
    let faces = analyzer.analyze(&photo).expect("analyze");
    let largest = &faces.faces[faces.largest().expect("faces")];
    let face = h.state().project().characters[1].face.clone().expect("face");
    assert_eq!(face.source, FaceSource::Detected);
    assert_eq!(face.bbox, largest.face.bbox);
    assert_eq!(face.keypoints, Some(largest.face.kps));
    assert_eq!(face.identity, largest.identity);
    assert_eq!(face.identity.as_ref().map(Vec::len), Some(512));
    // Every face is listed; picking another is one more undo step.
    assert!(faces.faces.len() > 1, "the random detector finds several faces");
    let other = if faces.largest() == Some(0) { 1 } else { 0 };
    h.get_by_label_contains(&format!("Face {}:", other + 1)).click();
    h.run();
    let picked = h.state().project().characters[1].face.clone().expect("face");
    assert_eq!(picked.bbox, faces.faces[other].face.bbox);
    undo(&mut h);
    assert_eq!(h.state().project().characters[1].face.as_ref(), Some(&face));
    undo(&mut h);
    assert_eq!(h.state().project().characters[1], lav, "detection was one undo step");
}

#[test]
fn a_keypoint_dragged_by_hand_gets_a_new_identity_in_the_same_undo_step() {
    let home = tempfile::tempdir().expect("tmp");
    install_models(home.path());
    let mut h = harness(home.path(), None, SIZE);
    h.get_by_label("Lav").click();
    step_until(&mut h, "face detection", |a| a.project().characters[1].face.is_some() && !a.is_busy());
    let detected = h.state().project().characters[1].clone();
    let face = detected.face.clone().expect("face");
    h.get_by_label("Face (F)").click();
    h.run();
    // The nose keypoint, on screen.
    let canvas = h.get_by_label("Character canvas").rect();
    let scale = canvas.width() / detected.photo_size[0] as f32;
    let nose = face.keypoints.expect("kps")[2];
    let start = canvas.min + egui::vec2(nose[0], nose[1]) * scale;
    let end = start + egui::vec2(12.0, -8.0);
    h.hover_at(start);
    h.run();
    h.drag_at(start);
    h.run();
    for t in [0.5, 1.0] {
        h.hover_at(start + (end - start) * t);
        h.run();
    }
    h.drop_at(end);
    // The drop starts the identity worker (a spinner repaints until it is done): step, don't run to rest.
    h.step();
    step_until(&mut h, "the new identity", |a| {
        a.project().characters[1].face.as_ref().is_some_and(|f| f.identity.is_some()) && !a.is_busy()
    });
    let moved = h.state().project().characters[1].face.clone().expect("face");
    assert_eq!(moved.source, FaceSource::Manual);
    let kps = moved.keypoints.expect("kps");
    assert!((kps[2][0] - (nose[0] + 12.0 / scale)).abs() < 2.0 / scale + 0.5, "{kps:?}");
    assert_eq!(kps[0], face.keypoints.expect("kps")[0], "only the dragged keypoint moved");
    assert_ne!(moved.identity, face.identity, "the identity follows the keypoints");
    let norm: f32 = moved.identity.as_ref().expect("identity").iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4);
    undo(&mut h);
    assert_eq!(h.state().project().characters[1], detected, "drag + identity undo as one step");
}

#[test]
fn a_click_on_a_detected_face_in_the_photo_picks_it_as_one_undo_step() {
    let home = tempfile::tempdir().expect("tmp");
    let models = install_models(home.path());
    let mut h = harness(home.path(), None, SIZE);
    h.get_by_label("Lav").click();
    step_until(&mut h, "face detection", |a| a.project().characters[1].face.is_some() && !a.is_busy());
    let detected = h.state().project().characters[1].clone();
    let analyzer = FaceAnalyzer::load(&find_face_models(&models).expect("models")).expect("load");
    let photo = image::open(detected.photo.join(h.state().project_root())).expect("photo").to_rgb8();
    let faces = analyzer.analyze(&photo).expect("analyze");
    let current = detected.face.as_ref().expect("face").bbox;
    // A detected face other than the applied one, whose centre lies in no smaller box (what a click there picks).
    let area = |b: [f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let inside = |b: [f32; 4], p: [f32; 2]| (b[0]..=b[2]).contains(&p[0]) && (b[1]..=b[3]).contains(&p[1]);
    let (target, centre) = faces
        .faces
        .iter()
        .enumerate()
        .filter(|(_, f)| f.face.bbox != current)
        .map(|(i, f)| {
            let b = f.face.bbox;
            (i, [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0])
        })
        .find(|(i, c)| {
            let own = area(faces.faces[*i].face.bbox);
            faces.faces.iter().all(|g| !inside(g.face.bbox, *c) || area(g.face.bbox) >= own)
        })
        .expect("the random detector finds another clickable face");
    h.get_by_label("Face (F)").click();
    h.run();
    let canvas = h.get_by_label("Character canvas").rect();
    let scale = canvas.width() / detected.photo_size[0] as f32;
    click_at(&mut h, canvas.min + egui::vec2(centre[0], centre[1]) * scale, Modifiers::NONE);
    let picked = h.state().project().characters[1].face.clone().expect("face");
    assert_eq!(picked.bbox, faces.faces[target].face.bbox, "the clicked face is applied");
    assert_eq!(picked.identity, faces.faces[target].identity);
    undo(&mut h);
    assert_eq!(h.state().project().characters[1], detected, "picking was one undo step");
}
