//! The export dialog driven headless through egui_kittest: Ctrl+E opens it, page 1 is previewed,
//! Export writes the PDF off the UI thread, a read-only folder is reported, bubble placement is
//! an undoable edit.

mod app_harness;
mod export_support;

use app_harness::{harness, step_until};
use egui::{Key, Modifiers};
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use storymaker::ui::StoryApp;

const SIZE: egui::Vec2 = egui::vec2(1400.0, 900.0);

/// Opens the dialog with Ctrl+E and waits for the preview of page 1.
fn open_dialog(h: &mut Harness<'static, StoryApp>) {
    h.key_press_modifiers(Modifiers::COMMAND, Key::E);
    // The preview spinner repaints until the page arrives: step, don't settle.
    h.step();
    assert!(h.state().export_dialog().is_open());
    step_until(h, "the preview of page 1", |a| a.export_dialog().preview_ready());
    h.get_by_label("Page 1 preview");
}

#[test]
fn ctrl_e_previews_and_exports_the_story_as_pdf() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("story");
    export_support::sample_with_images(&dir);
    let mut h = harness(home.path(), Some(dir.clone()), SIZE);
    h.run();
    open_dialog(&mut h);
    h.get_by_label("Export").click();
    h.run();
    step_until(&mut h, "the export", |a| !a.export_dialog().is_running());
    let status = h.state().status().clone();
    assert!(!status.error && status.text.starts_with("Exported 4 panel(s)"), "{status:?}");
    let pdf = dir.join("exports/The-Astronaut-and-the-Cameraman.pdf");
    let info = export_support::poppler("pdfinfo", &[pdf.to_str().unwrap()]);
    assert!(info.contains("Pages:           1"), "{info}");
    let text = export_support::poppler("pdftotext", &[pdf.to_str().unwrap(), "-"]);
    assert!(text.contains("Launch day.") && text.contains("Not generated yet"), "{text}");
}

#[test]
fn a_read_only_folder_is_reported_in_the_dialog() {
    let home = tempfile::tempdir().unwrap();
    let ro = export_support::ReadOnlyDir::new();
    let before = export_support::listing(&ro.path);
    let mut h = harness(home.path(), None, SIZE);
    h.run();
    open_dialog(&mut h);
    h.get_by_label("Folder").focus();
    h.run();
    h.key_press_modifiers(Modifiers::COMMAND, Key::A);
    h.run();
    h.get_by_label("Folder").type_text(ro.path.to_str().unwrap());
    h.run();
    h.get_by_label("Export").click();
    h.run();
    step_until(&mut h, "the failed export", |a| !a.export_dialog().is_running());
    let status = h.state().status().clone();
    assert!(status.error && status.text.contains("could not write"), "{status:?}");
    h.get_by_label_contains("Nothing was written");
    assert_eq!(export_support::listing(&ro.path), before);
}

#[test]
fn bubble_placement_is_an_undoable_edit() {
    let home = tempfile::tempdir().unwrap();
    let mut h = harness(home.path(), None, SIZE);
    h.run();
    open_dialog(&mut h);
    assert_eq!(h.state().project().panels[0].bubble, None);
    // The slider, not the number field next to it (both carry the label).
    let slider = h.get_by_role_and_label(egui::Role::Slider, "Bubble across");
    slider.focus();
    h.run();
    for _ in 0..5 {
        h.key_press(Key::ArrowRight);
        h.run();
    }
    let placed = h.state().project().panels[0].bubble.expect("the bubble was placed by hand");
    let default = storymaker::story::panel::BubblePlacement::default();
    assert!(placed.center[0] > default.center[0], "{placed:?}");
    assert_eq!(placed.tail, default.tail);
    // The preview follows the document.
    step_until(&mut h, "the new preview", |a| a.export_dialog().preview_ready());
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.run();
    assert_eq!(h.state().project().panels[0].bubble, None, "one undo step restores automatic placement");
}

#[test]
fn export_choices_are_remembered_by_the_next_run_of_the_app() {
    use storymaker::export::{Arrangement, ExportFormat, Orientation};
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("story");
    export_support::sample_with_images(&dir);
    let chosen = {
        let mut h = harness(home.path(), Some(dir.clone()), SIZE);
        h.run();
        open_dialog(&mut h);
        let defaults = h.state().export_dialog().current_prefs();
        h.get_by_label("PNG sheets (one image per page)").click();
        h.run();
        h.get_by_label("Comic strip (one row)").click();
        h.run();
        h.get_by_label("Landscape").click();
        h.run();
        let chosen = h.state().export_dialog().current_prefs();
        assert_ne!(chosen, defaults, "the clicks changed the choices");
        assert_eq!(chosen.format, ExportFormat::PngSheets);
        assert!(matches!(chosen.settings.layout.arrangement, Arrangement::Strip { .. }));
        assert_eq!(chosen.settings.layout.orientation, Orientation::Landscape);
        h.get_by_label("Export").click();
        h.run();
        step_until(&mut h, "the export", |a| !a.export_dialog().is_running());
        let status = h.state().status().clone();
        assert!(!status.error && status.text.starts_with("Exported"), "{status:?}");
        chosen
    };
    // A new run of the app on the same settings folder opens the dialog with the last export's choices.
    let mut h = harness(home.path(), Some(dir), SIZE);
    h.run();
    open_dialog(&mut h);
    assert_eq!(h.state().export_dialog().current_prefs(), chosen);
}
