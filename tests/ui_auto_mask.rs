//! "Auto mask" in the character editor (issue 10), headless: with a synthetic U²-Net-layout model in a temporary
//! models folder, Auto mask → eraser stroke → undo restores the auto mask, and one more undo the original mask;
//! without a model the click says where to put one.
#![cfg(feature = "gui")]

mod app_harness;

use std::path::{Path, PathBuf};

use app_harness::{click_at, harness, step_until, undo};
use egui::Modifiers;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use storymaker::imaging::segment::Segmenter;
use storymaker::ui::StoryApp;

const SIZE: egui::Vec2 = egui::vec2(1280.0, 800.0);

/// Opens Lav in the character editor and waits until nothing loads in the background: the photo's texture
/// arrives off the UI thread and changes the canvas layout, which the clicks and strokes below rely on.
fn open_lav(h: &mut Harness<'static, StoryApp>) {
    h.get_by_label("Lav").click();
    h.step();
    step_until(h, "Lav's photo", |a| !a.is_busy());
}

fn install_model(home: &Path) -> PathBuf {
    let dir = home.join("data/models/segmentation");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/segment/u2net.onnx");
    let model = dir.join("person.onnx");
    std::fs::copy(fixture, &model).expect("copy");
    model
}

#[test]
fn without_a_model_auto_mask_says_where_to_put_one() {
    let home = tempfile::tempdir().expect("tmp");
    let mut h = harness(home.path(), None, SIZE);
    open_lav(&mut h);
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
    let mut h = harness(home.path(), None, SIZE);
    open_lav(&mut h);
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

/// A brush stroke across the canvas from `a` to `b` (screen points).
fn stroke(h: &mut Harness<'static, StoryApp>, a: egui::Pos2, b: egui::Pos2) {
    h.hover_at(a);
    h.run();
    h.drag_at(a);
    h.run();
    h.hover_at(b);
    h.run();
    h.drop_at(b);
    h.run();
}

#[test]
fn alt_click_keeps_only_the_person_under_the_click_as_one_undo_step() {
    let home = tempfile::tempdir().expect("tmp");
    let mut h = harness(home.path(), None, SIZE);
    open_lav(&mut h);
    // Two separate "people" on an empty mask: two vertical brush strokes far apart.
    h.get_by_label("Clear mask").click();
    h.run();
    h.get_by_label("Brush (B)").click();
    h.run();
    let canvas = h.get_by_label("Character canvas").rect();
    let (left, right) = (canvas.center() - egui::vec2(120.0, 0.0), canvas.center() + egui::vec2(120.0, 0.0));
    stroke(&mut h, left - egui::vec2(0.0, 60.0), left + egui::vec2(0.0, 60.0));
    stroke(&mut h, right - egui::vec2(0.0, 60.0), right + egui::vec2(0.0, 60.0));
    let two = h.state().project().characters[1].mask.clone();
    assert!(two.count_nonzero() > 0, "the strokes painted");

    // Alt+click on the left stroke (the modifier held through press and release, as a user does).
    click_at(&mut h, left, Modifiers::ALT);
    let kept = h.state().project().characters[1].mask.clone();
    let (n_two, n_kept) = (two.count_nonzero(), kept.count_nonzero());
    assert!(n_kept > 0 && n_kept < n_two, "one of the two strokes is kept: {n_kept} of {n_two} pixels");
    // About half: the strokes are the same length and width.
    assert!((n_kept as f64 / n_two as f64 - 0.5).abs() < 0.1, "{n_kept} of {n_two}");
    assert!(kept.data().iter().zip(two.data()).all(|(&k, &t)| k == 0 || k == t), "nothing new is painted");
    // The kept stroke is the left one: the leftmost painted column survives.
    let w = two.width() as usize;
    let leftmost = |m: &[u8]| m.iter().enumerate().filter(|(_, &v)| v > 0).map(|(i, _)| i % w).min();
    assert_eq!(leftmost(kept.data()), leftmost(two.data()));

    undo(&mut h);
    assert_eq!(h.state().project().characters[1].mask, two, "one undo brings the other person back");
}

/// Cancel while the worker is still reading the photo: the photo file is swapped for a named pipe, so the worker
/// waits for this test to feed it and the button is there to click — no race with a fast model.
#[cfg(unix)]
#[test]
fn cancel_leaves_the_mask_unchanged_and_drops_the_late_result() {
    cancel_flow(|h| h.get_by_label("Cancel auto mask").click());
}

/// Escape (no text field focused) cancels the selected character's auto mask like the button.
#[cfg(unix)]
#[test]
fn escape_cancels_the_auto_mask_too() {
    cancel_flow(|h| h.key_press(egui::Key::Escape));
}

#[cfg(unix)]
fn cancel_flow(cancel: impl Fn(&mut Harness<'static, StoryApp>)) {
    let home = tempfile::tempdir().expect("tmp");
    install_model(home.path());
    let mut h = harness(home.path(), None, SIZE);
    open_lav(&mut h);
    let original = h.state().project().characters[1].clone();
    let photo = original.photo.join(h.state().project_root());
    let bytes = std::fs::read(&photo).expect("photo");
    std::fs::remove_file(&photo).expect("rm photo");
    let made = std::process::Command::new("mkfifo").arg(&photo).status().expect("mkfifo");
    assert!(made.success(), "mkfifo {}", photo.display());

    h.get_by_label("Auto mask").click();
    h.step();
    h.step();
    assert!(h.state().is_busy(), "the auto mask is running (its worker waits on the pipe)");
    cancel(&mut h);
    step_until(&mut h, "the cancel", |a| !a.is_busy());
    assert!(!h.state().is_busy(), "nothing is awaited any more; status: {}", h.state().status().text);
    let status = h.state().status().text.clone();
    assert!(status.contains("cancelled") && status.contains("unchanged"), "{status}");
    assert_eq!(h.state().project().characters[1].mask, original.mask);

    // Feed the pipe: the worker reads the photo, sees the cancel and returns; its result is dropped.
    let fifo = photo.clone();
    let feeder = std::thread::spawn(move || std::fs::write(&fifo, &bytes).map(|()| bytes));
    let bytes = feeder.join().expect("feeder").expect("write to the pipe");
    std::fs::remove_file(&photo).expect("rm pipe");
    std::fs::write(&photo, &bytes).expect("restore photo");
    for _ in 0..5 {
        h.step();
    }
    assert_eq!(h.state().project().characters[1].mask, original.mask, "the cancelled run changed nothing");
    assert!(!h.state().status().text.contains("failed"), "{}", h.state().status().text);

    // A new auto mask works and is one undo step: the cancelled run added none.
    h.get_by_label("Auto mask").click();
    h.step();
    step_until(&mut h, "the second auto mask", |a| a.project().characters[1].mask != original.mask && !a.is_busy());
    undo(&mut h);
    assert_eq!(h.state().project().characters[1].mask, original.mask, "one undo step for one applied auto mask");
}
