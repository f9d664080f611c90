//! The comic-strip timeline: panels in story order as tiles; drag to reorder, click to select.

use super::app::{PanelStatus, Selection, StoryApp};
use super::images::ImageEntry;

const TILE: egui::Vec2 = egui::vec2(150.0, 112.0);

pub fn show(app: &mut StoryApp, ui: &mut egui::Ui) {
    ui.horizontal(|ui| {
        ui.heading("Timeline");
        if ui.button("Add panel").on_hover_text("Ctrl+N: insert after the selected panel").clicked() {
            app.add_panel();
        }
        let has_panel = app.selected_panel_index().is_some();
        if ui.add_enabled(has_panel, egui::Button::new("Duplicate panel")).on_hover_text("Ctrl+D").clicked() {
            app.duplicate_panel();
        }
        if ui.add_enabled(has_panel, egui::Button::new("Delete panel")).on_hover_text("Delete").clicked() {
            if let Selection::Panel(id) = app.selection {
                app.delete_panel(id);
            }
        }
        ui.label(format!("{} panels", app.doc.panels.len()));
    });
    let mut select = None;
    let ids: Vec<_> = app.doc.panels.iter().map(|p| p.id).collect();
    egui::ScrollArea::horizontal().show(ui, |ui| {
        ui.horizontal(|ui| {
            let response = egui_dnd::dnd(ui, ui.make_persistent_id("timeline-dnd")).with_animation_time(0.0).show(
                ids.iter().copied(),
                |ui, id, handle, state| {
                    handle.ui(ui, |ui| {
                        if tile(app, ui, id, state.index) {
                            select = Some(id);
                        }
                    });
                },
            );
            if let Some(update) = response.final_update() {
                // egui_dnd's `to` is an insertion index in the list before removal.
                let to = if update.to > update.from { update.to - 1 } else { update.to };
                app.move_panel(update.from, to);
            }
        });
    });
    if let Some(id) = select {
        app.selection = Selection::Panel(id);
    }
}

/// Draws one tile; returns true when clicked.
fn tile(app: &mut StoryApp, ui: &mut egui::Ui, id: crate::story::PanelId, index: usize) -> bool {
    let Some(panel) = app.doc.panel(id).cloned() else { return false };
    let selected = app.selection == Selection::Panel(id);
    let (rect, response) = ui.allocate_exact_size(TILE, egui::Sense::click());
    let label = format!("Panel {}", index + 1);
    response.widget_info(|| egui::WidgetInfo::selected(egui::Role::Button, true, selected, &label));
    let painter = ui.painter_at(rect);
    let visuals = ui.visuals();
    painter.rect_filled(rect, 4.0, visuals.extreme_bg_color);
    let image_rect = rect.shrink(4.0);
    let mut drew_image = false;
    if let Some(v) = panel.chosen_variant() {
        let path = v.image.join(&app.root);
        if let ImageEntry::Ready { thumb, .. } = app.images.get(&app.inbox, &path) {
            let size = thumb.size_vec2();
            let fit = (image_rect.size() / size).min_elem();
            let r = egui::Rect::from_center_size(image_rect.center(), size * fit);
            painter.image(
                thumb.id(),
                r,
                egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0)),
                egui::Color32::WHITE,
            );
            drew_image = true;
        }
    }
    if !drew_image {
        let text: String = panel.prompt.chars().take(60).collect();
        let galley = painter.layout(
            if text.is_empty() { "(empty panel)".into() } else { text },
            egui::FontId::proportional(11.0),
            visuals.weak_text_color(),
            image_rect.width() - 8.0,
        );
        painter.galley(image_rect.min + egui::vec2(4.0, 18.0), galley, visuals.weak_text_color());
    }
    painter.text(
        rect.min + egui::vec2(6.0, 4.0),
        egui::Align2::LEFT_TOP,
        &label,
        egui::FontId::proportional(12.0),
        visuals.strong_text_color(),
    );
    // Cast colour chips along the bottom.
    for (k, slot) in panel.cast.iter().enumerate() {
        if let Some(c) = app.doc.character(slot.character) {
            let [r, g, b] = c.colour;
            let centre = egui::pos2(rect.min.x + 10.0 + 14.0 * k as f32, rect.max.y - 10.0);
            painter.circle_filled(centre, 5.0, egui::Color32::from_rgb(r, g, b));
        }
    }
    let badge = match app.panel_status.get(&id) {
        Some(PanelStatus::Queued(_)) => Some(("queued".to_string(), visuals.warn_fg_color)),
        Some(PanelStatus::Running { step, total, .. }) => Some((format!("{step}/{total}"), visuals.warn_fg_color)),
        Some(PanelStatus::Failed(_)) => Some(("failed".to_string(), visuals.error_fg_color)),
        None => None,
    };
    if let Some((text, colour)) = badge {
        painter.text(
            rect.right_bottom() - egui::vec2(6.0, 4.0),
            egui::Align2::RIGHT_BOTTOM,
            text,
            egui::FontId::proportional(11.0),
            colour,
        );
    }
    let stroke = if selected { visuals.selection.stroke } else { visuals.widgets.noninteractive.bg_stroke };
    painter.rect_stroke(rect, 4.0, stroke, egui::StrokeKind::Inside);
    response.clicked()
}
