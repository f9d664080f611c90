//! Headless UI tests: the real `StoryApp` driven through egui_kittest (no GPU, no display).

mod app_harness;
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use app_harness::{harness as harness_sized, step_until, undo};
use egui::{Key, Modifiers};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use storymaker::app_dirs::AppPaths;
use storymaker::story::{load_project, Project};
use storymaker::ui::{Selection, StoryApp};

#[derive(Debug)]
struct TestFile(PathBuf);

impl egui::DroppedFile for TestFile {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn harness(home: &Path, open: Option<PathBuf>) -> Harness<'static, StoryApp> {
    harness_sized(home, open, egui::vec2(1280.0, 800.0))
}

fn write_png(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, 128]));
    img.save(path).unwrap();
}

fn redo(h: &mut Harness<'static, StoryApp>) {
    h.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
    h.run();
}

#[test]
fn first_run_opens_the_sample_story() {
    let home = tempfile::tempdir().unwrap();
    let mut h = harness(home.path(), None);
    h.run();
    let app = h.state();
    assert_eq!(app.project().characters.len(), 2);
    assert_eq!(app.project().panels.len(), 4);
    assert!(app.project_root().join("project.json").is_file());
    assert!(app.alert().is_none(), "{:?}", app.alert());
    // The sample project is remembered as the most recent one.
    let settings = std::fs::read_to_string(home.path().join("config/settings.json")).unwrap();
    assert!(settings.contains("Sample story"));
}

#[test]
fn dropped_image_becomes_a_character() {
    let home = tempfile::tempdir().unwrap();
    let photo = home.path().join("Hero_Portrait.png");
    write_png(&photo, 120, 80);
    let original = std::fs::read(&photo).unwrap();
    let mut h = harness(home.path(), None);
    h.run();
    h.input_mut().dropped_files.push(Arc::new(TestFile(photo.clone())));
    step_until(&mut h, "the import", |a| a.project().characters.len() == 3);
    let app = h.state();
    let c = &app.project().characters[2];
    assert_eq!(c.name, "Hero Portrait");
    assert_eq!(c.photo_size, [120, 80]);
    assert_eq!(c.mask.size(), [120, 80]);
    assert_eq!(app.selection(), Selection::Character(c.id));
    let copied = c.photo.join(app.project_root());
    assert_eq!(std::fs::read(copied).unwrap(), original, "the photo is copied byte for byte");
    assert_eq!(std::fs::read(&photo).unwrap(), original, "the imported file is untouched");
    // The character editor shows it.
    h.get_by_label("Character canvas");
    undo(&mut h);
    assert_eq!(h.state().project().characters.len(), 2);
}

#[test]
fn a_bad_drop_is_reported_and_changes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let bad = home.path().join("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let mut h = harness(home.path(), None);
    h.run();
    let before = h.state().project().clone();
    h.input_mut().dropped_files.push(Arc::new(TestFile(bad)));
    step_until(&mut h, "the failed import", |a| a.alert().is_some());
    assert!(h.state().alert().unwrap().contains("broken.png"));
    assert_eq!(h.state().project(), &before);
}

#[test]
fn crop_drag_changes_the_crop_and_undoes() {
    let home = tempfile::tempdir().unwrap();
    let mut h = harness(home.path(), None);
    h.run();
    h.get_by_label("Eileen").click();
    h.run();
    h.get_by_label("Crop (C)").click();
    h.run();
    let id = h.state().project().characters[0].id;
    assert_eq!(h.state().selection(), Selection::Character(id));
    let canvas = h.get_by_label("Character canvas").rect();
    let before = h.state().project().characters[0].crop;
    assert_eq!(before.w, 512.0);
    // Drag the bottom-right handle a quarter of the way in.
    let start = canvas.max - egui::vec2(1.0, 1.0);
    let end = canvas.min + canvas.size() * 0.75;
    h.hover_at(start);
    h.run();
    h.drag_at(start);
    h.run();
    for t in [0.3, 0.6, 1.0] {
        h.hover_at(start + (end - start) * t);
        h.run();
    }
    h.drop_at(end);
    h.run();
    let after = h.state().project().characters[0].crop;
    assert!((after.w - 384.0).abs() < 4.0 && (after.h - 384.0).abs() < 4.0, "{after:?}");
    assert_eq!((after.x, after.y), (0.0, 0.0));
    undo(&mut h);
    assert_eq!(h.state().project().characters[0].crop, before);
    redo(&mut h);
    assert_eq!(h.state().project().characters[0].crop, after);
}

#[test]
fn mask_brush_paints_and_undoes_as_one_step() {
    let home = tempfile::tempdir().unwrap();
    let mut h = harness(home.path(), None);
    h.run();
    h.get_by_label("Eileen").click();
    h.run();
    h.get_by_label("Clear mask").click();
    h.run();
    assert_eq!(h.state().project().characters[0].mask.count_nonzero(), 0);
    h.get_by_label("Brush (B)").click();
    h.run();
    let canvas = h.get_by_label("Character canvas").rect();
    let a = canvas.center();
    let b = a + egui::vec2(60.0, 0.0);
    h.hover_at(a);
    h.run();
    h.drag_at(a);
    h.run();
    for t in [0.25, 0.5, 0.75, 1.0] {
        h.hover_at(a + (b - a) * t);
        h.run();
    }
    h.drop_at(b);
    h.run();
    let painted = h.state().project().characters[0].mask.count_nonzero();
    assert!(painted > 500, "painted {painted} pixels");
    undo(&mut h);
    assert_eq!(h.state().project().characters[0].mask.count_nonzero(), 0, "one stroke = one undo step");
    undo(&mut h);
    assert!(h.state().project().characters[0].mask.count_nonzero() > 10_000, "clear mask undone");
}

fn panel_prompts(app: &StoryApp) -> Vec<String> {
    app.project().panels.iter().map(|p| p.prompt.clone()).collect()
}

#[test]
fn panels_are_added_edited_reordered_deleted_and_undone() {
    let home = tempfile::tempdir().unwrap();
    let mut h = harness(home.path(), None);
    h.run();
    let mut states: Vec<Project> = vec![h.state().project().clone()];

    // Add after the selected (first) panel.
    h.get_by_label("Add panel").click();
    h.run();
    assert_eq!(h.state().project().panels.len(), 5);
    let new_id = h.state().project().panels[1].id;
    assert_eq!(h.state().selection(), Selection::Panel(new_id));
    states.push(h.state().project().clone());

    // Edit its prompt.
    let prompt = h.get_by_label("Prompt");
    prompt.focus();
    prompt.type_text("a dragon over the launch pad");
    h.run();
    assert_eq!(h.state().project().panels[1].prompt, "a dragon over the launch pad");
    states.push(h.state().project().clone());

    // Reorder: drag "Panel 1" past "Panel 3".
    let from = h.get_by_label("Panel 1").rect().center();
    let to = h.get_by_label("Panel 3").rect().right_center() + egui::vec2(-5.0, 0.0);
    h.hover_at(from);
    h.step();
    h.drag_at(from);
    h.step();
    for i in 1..=10 {
        h.hover_at(from + (to - from) * (i as f32 / 10.0));
        h.step();
    }
    h.drop_at(to);
    h.step();
    h.run();
    let mut expected = panel_prompts_of(&states[2]);
    let first = expected.remove(0);
    expected.insert(2, first);
    assert_eq!(panel_prompts(h.state()), expected, "panel 1 now comes after panel 3");
    states.push(h.state().project().clone());

    // Delete the selected panel with the Delete key (no text field focused).
    h.get_by_label("Panel 1").click();
    h.run();
    h.key_press(Key::Delete);
    h.run();
    assert_eq!(h.state().project().panels.len(), 4);
    states.push(h.state().project().clone());

    // Undo walks back through every state, redo forward again.
    for expected in states.iter().rev().skip(1) {
        undo(&mut h);
        assert_eq!(&h.state().project().panels, &expected.panels);
    }
    for expected in states.iter().skip(1) {
        redo(&mut h);
        assert_eq!(&h.state().project().panels, &expected.panels);
    }
}

fn panel_prompts_of(p: &Project) -> Vec<String> {
    p.panels.iter().map(|p| p.prompt.clone()).collect()
}

#[test]
fn save_then_reopen_gives_an_equal_document() {
    let home = tempfile::tempdir().unwrap();
    let mut h = harness(home.path(), None);
    h.run();
    h.get_by_label("Add panel").click();
    h.run();
    let caption = h.get_by_label("Caption");
    caption.focus();
    caption.type_text("The end?");
    h.run();
    assert!(h.state().is_dirty());
    h.key_press_modifiers(Modifiers::COMMAND, Key::S);
    h.step();
    step_until(&mut h, "the save", |a| !a.is_dirty() && !a.is_busy());
    let root = h.state().project_root().to_path_buf();
    let saved = h.state().project().clone();
    assert_eq!(load_project(&root).unwrap(), saved);
    drop(h);
    // A fresh app on the same home reopens the most recent project.
    let mut again = harness(home.path(), None);
    again.run();
    assert_eq!(again.state().project(), &saved);
    assert_eq!(again.state().project_root(), root.as_path());
}

#[test]
fn generate_without_models_fails_with_the_discovery_message() {
    let home = tempfile::tempdir().unwrap();
    let mut h = harness(home.path(), None);
    h.run();
    let id = h.state().project().panels[0].id;
    h.get_by_label("Generate").click();
    step_until(&mut h, "the failed job", |a| {
        matches!(a.panel_status(id), Some(storymaker::ui::app::PanelStatus::Failed(_)))
    });
    let Some(storymaker::ui::app::PanelStatus::Failed(reason)) = h.state().panel_status(id) else { unreachable!() };
    let models = home.path().join("data/models");
    assert!(reason.starts_with(&format!("no SDXL model found in {}", models.display())), "{reason}");
    assert!(h.state().project().panels[0].variants.is_empty(), "no fake image");
}

#[test]
fn a_broken_project_is_reported_and_left_untouched() {
    let home = tempfile::tempdir().unwrap();
    let broken = home.path().join("broken-project");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("project.json"), b"{\"format_version\": 1, \"title\": ").unwrap();
    let before = std::fs::read(broken.join("project.json")).unwrap();
    let mut h = harness(home.path(), Some(broken.clone()));
    h.run();
    let alert = h.state().alert().expect("an alert").to_string();
    assert!(alert.contains("not a valid project file"), "{alert}");
    // The app falls back to the sample story and never writes the broken file.
    assert_ne!(h.state().project_root(), broken.as_path());
    h.key_press_modifiers(Modifiers::COMMAND, Key::S);
    h.step();
    step_until(&mut h, "the save", |a| !a.is_busy());
    drop(h);
    assert_eq!(std::fs::read(broken.join("project.json")).unwrap(), before);
}

#[test]
fn deleting_a_character_clears_its_cast_slots_and_undoes_as_one_step() {
    let home = tempfile::tempdir().unwrap();
    let mut h = harness(home.path(), None);
    h.run();
    let before = h.state().project().clone();
    let lav = before.characters[1].id;
    assert!(before.panels.iter().any(|p| p.cast.iter().any(|s| s.character == lav)));
    h.get_by_label("Delete Lav").click();
    h.run();
    let after = h.state().project();
    assert_eq!(after.characters.len(), 1);
    assert!(after.panels.iter().all(|p| p.cast.iter().all(|s| s.character != lav)));
    undo(&mut h);
    assert_eq!(h.state().project(), &before);
}

#[test]
fn an_over_long_prompt_shows_a_truncation_warning() {
    let home = tempfile::tempdir().unwrap();
    let mut h = harness(home.path(), None);
    step_until(&mut h, "the tokenizer", |a| a.tokenizer_ready());
    const WARNING: &str = "the end of this prompt will be ignored";
    assert!(
        h.query_all_by_label_contains("/75 tokens").count() == 2,
        "prompt and negative prompt show their token counts"
    );
    assert_eq!(h.query_all_by_label_contains(WARNING).count(), 0, "a short prompt is not truncated");
    let prompt = h.get_by_label("Prompt");
    prompt.focus();
    prompt.type_text(&" and a red balloon".repeat(20));
    h.run();
    assert_eq!(h.query_all_by_label_contains(WARNING).count(), 1, "an 80+ token prompt warns");
}

#[test]
fn generate_with_models_adds_a_reproducible_variant() {
    let home = tempfile::tempdir().unwrap();
    let models = home.path().join("models");
    common::tiny_sdxl(&models.join("sdxl"));
    common::tiny_adapter(&models);
    let paths = AppPaths::under(home.path());
    let settings = storymaker::app_dirs::AppSettings { models_dir: Some(models), ..Default::default() };
    settings.save(&paths).unwrap();
    // A small, quick panel: 256x256 (the smallest size the editor allows), 2 steps, fixed seed;
    // Eileen (in its cast) gets an identity the tiny adapter accepts.
    let story = home.path().join("story");
    let mut project = storymaker::story::sample::write_sample_story(&story).unwrap();
    project.characters[0].face.as_mut().unwrap().identity = Some(common::tiny_identity());
    project.panels[0].params.width = 256;
    project.panels[0].params.height = 256;
    project.panels[0].params.steps = 2;
    storymaker::story::save_project(&story, &project).unwrap();

    let mut h = harness_sized(home.path(), Some(story.clone()), egui::vec2(1280.0, 2400.0));
    let id = h.state().project().panels[0].id;
    h.get_by_label("Generate").click();
    step_until(&mut h, "the generated image", |a| !a.project().panels[0].variants.is_empty());
    let p = &h.state().project().panels[0];
    let v = &p.variants[0];
    assert_eq!(p.chosen, Some(0));
    assert_eq!(v.seed, 42, "the locked seed is recorded");
    assert_eq!((v.params.width, v.params.height, v.params.steps), (256, 256, 2));
    assert!(v.models.iter().any(|m| m.starts_with("storymaker:")), "the adapter is applied: {:?}", v.models);
    let file = v.image.join(&story);
    let img = image::open(&file).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (256, 256));
    assert!(h.state().panel_status(id).is_none());
    // Generating again with the locked seed reproduces the image exactly.
    h.get_by_label("Generate").click();
    step_until(&mut h, "the second image", |a| a.project().panels[0].variants.len() == 2);
    let second = h.state().project().panels[0].variants[1].image.join(&story);
    assert_ne!(second, file);
    assert_eq!(image::open(&second).unwrap().to_rgb8(), img);
    // Compare the two side by side.
    h.get_by_label("Compare side by side").click();
    h.run();
    h.get_by_label("compare 1").click();
    h.run();
    h.get_by_label("compare 2").click();
    h.run();
    assert_eq!(h.state().compared(id), vec![0, 1]);
    // Undo removes the variant from the panel (the file stays in the assets).
    undo(&mut h);
    assert_eq!(h.state().project().panels[0].variants.len(), 1);
}

#[test]
fn imported_face_data_sets_the_identity_and_undoes() {
    let home = tempfile::tempdir().unwrap();
    let mut h = harness(home.path(), None);
    h.run();
    let lav = h.state().project().characters[1].clone();
    assert!(lav.face.is_none(), "the sample's cameraman starts without a face");
    let data = storymaker::face::load_face_data(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adapter/face_data.bin"),
    )
    .unwrap();
    let kps = data.kps;
    h.state_mut().apply_face_data(lav.id, data);
    h.run();
    let face = h.state().project().characters[1].face.clone().expect("face set");
    assert_eq!(face.keypoints, Some(kps));
    assert_eq!(face.identity.as_ref().map(Vec::len), Some(512));
    let [x0, y0, x1, y1] = face.bbox;
    assert!(kps.iter().all(|p| p[0] > x0 && p[0] < x1 && p[1] > y0 && p[1] < y1), "box around the keypoints");
    undo(&mut h);
    assert_eq!(h.state().project().characters[1], lav);
}

#[test]
fn cast_slot_modes_are_edited_and_undone() {
    let home = tempfile::tempdir().unwrap();
    let mut h = harness(home.path(), None);
    h.run();
    h.get_by_label("Panel 1").click();
    h.run();
    let before = h.state().project().panels[0].clone();
    assert!(!before.cast[0].id_only);
    h.get_by_label("Eileen: face only").click();
    h.run();
    assert!(h.state().project().panels[0].cast[0].id_only, "ID-only mode set");
    undo(&mut h);
    assert_eq!(h.state().project().panels[0], before);
}

#[test]
fn pose_editor_applies_presets_drags_joints_mirrors_and_undoes() {
    let home = tempfile::tempdir().unwrap();
    // Tall enough that the pose canvas is on screen without scrolling.
    let mut h = harness_sized(home.path(), None, egui::vec2(1280.0, 1800.0));
    h.run();
    h.get_by_label("Panel 1").click();
    h.run();
    let before = h.state().project().panels[0].clone();
    assert!(before.cast[0].pose.is_none());
    let pose = |h: &Harness<'static, StoryApp>| h.state().project().panels[0].cast[0].pose.clone();

    // Apply a preset from the menu.
    h.get_by_label("Pose preset").click();
    h.run();
    h.get_by_label("Waving").click();
    h.run();
    let waving = storymaker::pose::presets::builtin_presets().into_iter().find(|p| p.name == "Waving").unwrap();
    assert_eq!(pose(&h), waving.skeletons().into_iter().next(), "the preset is applied to the slot");

    // Drag the nose joint.
    let canvas = h.get_by_label("Pose canvas").rect();
    let nose = pose(&h).unwrap().keypoints[0].unwrap();
    let start = canvas.min + egui::vec2(nose[0] * canvas.width(), nose[1] * canvas.height());
    let end = start + egui::vec2(30.0, 15.0);
    h.hover_at(start);
    h.run();
    h.drag_at(start);
    h.run();
    for t in [0.3, 0.6, 1.0] {
        h.hover_at(start + (end - start) * t);
        h.run();
    }
    h.drop_at(end);
    h.run();
    let dragged = pose(&h).unwrap();
    let moved = dragged.keypoints[0].unwrap();
    let want = [nose[0] + 30.0 / canvas.width(), nose[1] + 15.0 / canvas.height()];
    assert!((moved[0] - want[0]).abs() < 0.01 && (moved[1] - want[1]).abs() < 0.01, "{moved:?} vs {want:?}");
    assert_eq!(dragged.keypoints[1], waving.skeletons()[0].keypoints[1], "only the nose moved");

    // Mirror.
    h.get_by_label("Mirror").click();
    h.run();
    assert_eq!(pose(&h), Some(dragged.clone().mirrored()));

    // Each action is one undo step.
    undo(&mut h);
    assert_eq!(pose(&h), Some(dragged));
    undo(&mut h);
    assert_eq!(pose(&h), waving.skeletons().into_iter().next());
    undo(&mut h);
    assert_eq!(h.state().project().panels[0], before);
}

#[test]
fn the_models_window_lists_what_is_missing_and_where_it_goes() {
    let home = tempfile::tempdir().unwrap();
    let mut h = harness(home.path(), None);
    h.run();
    h.get_by_label("Story").click();
    h.run();
    h.get_by_label("Models…").click();
    h.run();
    let list = h.state().model_statuses().expect("checked when the window opens").to_vec();
    let sdxl = list.iter().find(|m| m.name == "SDXL base model").unwrap();
    assert!(sdxl.found.as_ref().unwrap_err().contains("no SDXL model found"), "{:?}", sdxl.found);
    assert!(list.iter().any(|m| m.licence.contains("non-commercial")), "buffalo_l's licence is shown");
    h.get_by_label("Models");
}
