//! "Auto mask" in the character editor (issue 10), headless: with a synthetic U²-Net-layout model in a temporary
//! models folder, Auto mask → eraser stroke → undo restores the auto mask, and one more undo the original mask;
//! without a model the click says where to put one.
#![cfg(feature = "gui")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{Key, Modifiers};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use storymaker::app_dirs::AppPaths;
use storymaker::imaging::segment::Segmenter;
use storymaker::ui::{AppEnv, NoDialogs, StoryApp};

fn harness(home: &Path) -> Harness<'static, StoryApp> {
    let paths = AppPaths::under(home);
    let mut h = Harness::builder()
        .with_size(egui::vec2(1280.0, 800.0))
        .with_max_steps(16)
        .build_eframe(move |cc| StoryApp::new(cc, AppEnv { paths, dialogs: Arc::new(NoDialogs), open: None }));
    step_until(&mut h, "the photos to load", |a| !a.is_busy());
    h
}

fn step_until(h: &mut Harness<'static, StoryApp>, what: &str, done: impl Fn(&StoryApp) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(h.state()) {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    h.run();
}

fn install_model(home: &Path) -> PathBuf {
    let dir = home.join("data/models/segmentation");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/segment/u2net.onnx");
    let model = dir.join("person.onnx");
    std::fs::copy(fixture, &model).expect("copy");
    model
}

fn undo(h: &mut Harness<'static, StoryApp>) {
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
}

#[test]
fn without_a_model_auto_mask_says_where_to_put_one() {
    let home = tempfile::tempdir().expect("tmp");
    let mut h = harness(home.path());
    h.get_by_label("Lav").click();
    h.run();
    let before = h.state().project().characters[1].mask.clone();
    h.get_by_label("Auto mask").click();
    h.run();
    let alert = h.state().status().text.clone();
    assert!(alert.contains("no segmentation model") && alert.contains("segmentation"), "{alert}");
    assert!(!h.state().is_busy(), "nothing was started");
    assert_eq!(h.state().project().characters[1].mask, before);
}

#[test]
fn auto_mask_then_eraser_then_undo_restores_the_auto_mask() {
    let home = tempfile::tempdir().expect("tmp");
    let model = install_model(home.path());
    let mut h = harness(home.path());
    h.get_by_label("Lav").click();
    h.run();
    let original = h.state().project().characters[1].clone();
    h.get_by_label("Auto mask").click();
    h.step();
    step_until(&mut h, "the auto mask", |a| a.project().characters[1].mask != original.mask && !a.is_busy());
    let auto = h.state().project().characters[1].mask.clone();
    // The same model run directly gives the same mask: the app applied the model's result as is.
    let photo = image::open(original.photo.join(h.state().project_root())).expect("photo").to_rgb8();
    let expected = Segmenter::load(&model).expect("model").mask(&photo, &|_| {}).expect("mask");
    assert_eq!(*auto, expected);

    h.get_by_label("Eraser (E)").click();
    h.run();
    let canvas = h.get_by_label("Character canvas").rect();
    let (start, end) = (canvas.center() - egui::vec2(40.0, 0.0), canvas.center() + egui::vec2(40.0, 0.0));
    h.hover_at(start);
    h.run();
    h.drag_at(start);
    h.run();
    h.hover_at(end);
    h.run();
    h.drop_at(end);
    h.run();
    let erased = h.state().project().characters[1].mask.clone();
    assert_ne!(erased, auto, "the eraser works on the auto mask");
    assert!(erased.count_nonzero() < auto.count_nonzero());

    undo(&mut h);
    assert_eq!(h.state().project().characters[1].mask, auto, "undo removes the stroke only");
    undo(&mut h);
    assert_eq!(h.state().project().characters[1].mask, original.mask, "the auto mask was one undo step");
}
