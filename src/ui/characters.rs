//! The cast library: every character with its thumbnail; import by drop or dialog.

use super::app::{Selection, StoryApp};
use super::images::ImageEntry;

pub fn show(app: &mut StoryApp, ui: &mut egui::Ui) {
    ui.heading("Cast");
    ui.horizontal(|ui| {
        if ui.button("Import photo…").on_hover_text("Ctrl+I — or drop photos onto the window").clicked() {
            app.ask_photos_from_ui();
        }
    });
    ui.separator();
    if app.doc.characters.is_empty() {
        ui.label("No characters yet. Drop a photo of each character onto the window.");
    }
    let mut select = None;
    let mut delete = None;
    egui::ScrollArea::vertical().show(ui, |ui| {
        for c in &app.doc.characters {
            let selected = app.selection == Selection::Character(c.id);
            let path = c.photo.join(&app.root);
            let frame = egui::Frame::group(ui.style()).fill(if selected {
                ui.visuals().selection.bg_fill
            } else {
                ui.visuals().panel_fill
            });
            frame.show(ui, |ui| {
                ui.horizontal(|ui| {
                    let size = egui::vec2(64.0, 64.0);
                    match app.images.get(&app.inbox, &path) {
                        ImageEntry::Ready { thumb, .. } => {
                            ui.add(
                                egui::Image::new(thumb).fit_to_exact_size(size).alt_text(format!("{} photo", c.name)),
                            );
                        }
                        ImageEntry::Loading => {
                            ui.add_sized(size, egui::Spinner::new());
                        }
                        ImageEntry::Failed(e) => {
                            ui.add_sized(size, egui::Label::new("⚠")).on_hover_text(format!("Photo unavailable: {e}"));
                        }
                    }
                    ui.vertical(|ui| {
                        let [r, g, b] = c.colour;
                        ui.horizontal(|ui| {
                            let (rect, _) = ui.allocate_exact_size(egui::vec2(10.0, 10.0), egui::Sense::hover());
                            ui.painter().circle_filled(rect.center(), 5.0, egui::Color32::from_rgb(r, g, b));
                            if ui.selectable_label(selected, &c.name).clicked() {
                                select = Some(c.id);
                            }
                        });
                        let face = if c.face.is_some() { "face set" } else { "no face" };
                        ui.small(format!("{}×{} · {face}", c.photo_size[0], c.photo_size[1]));
                        if ui.small_button(format!("Delete {}", c.name)).clicked() {
                            delete = Some(c.id);
                        }
                    });
                });
            });
        }
    });
    if let Some(id) = select {
        app.selection = Selection::Character(id);
    }
    if let Some(id) = delete {
        app.delete_character(id);
    }
}
