//! Where each panel's speech bubble goes on export: the bubble's centre, its tail tip and its
//! width, in fractions of the panel frame (shown in the export dialog, next to the preview).

use crate::story::panel::BubblePlacement;
use crate::story::{PanelId, Project};

/// Placement of each panel's speech bubble: centre, tail tip and width in fractions of the frame.
///
/// Returns the new placement of a panel when the artist changed it (`None` inside: automatic).
pub(super) fn show(
    ui: &mut egui::Ui,
    doc: &Project,
    chosen: &mut Option<PanelId>,
) -> Option<(PanelId, Option<BubblePlacement>)> {
    let mut change = None;
    ui.strong("Speech bubbles");
    let talking: Vec<(usize, &crate::story::Panel)> =
        doc.panels.iter().enumerate().filter(|(_, p)| !p.dialogue.trim().is_empty()).collect();
    if talking.is_empty() {
        ui.small("No panel has dialogue.");
        return None;
    }
    if !chosen.is_some_and(|id| talking.iter().any(|(_, p)| p.id == id)) {
        *chosen = Some(talking[0].1.id);
    }
    let name = |i: usize, p: &crate::story::Panel| {
        let mut d: String = p.dialogue.chars().take(28).collect();
        if p.dialogue.chars().count() > 28 {
            d.push('…');
        }
        format!("Panel {}: {d}", i + 1)
    };
    let (i, panel) = talking.iter().find(|(_, p)| Some(p.id) == *chosen).copied()?;
    egui::ComboBox::from_label("Bubble of").selected_text(name(i, panel)).show_ui(ui, |ui| {
        for (i, p) in &talking {
            ui.selectable_value(chosen, Some(p.id), name(*i, p));
        }
    });
    let mut b = panel.bubble.unwrap_or_default();
    let before = b;
    egui::Grid::new("bubble-placement").num_columns(2).show(ui, |ui| {
        let row = |ui: &mut egui::Ui, label: &str, v: &mut f32, lo: f32| {
            let l = ui.label(label);
            ui.add(egui::Slider::new(v, lo..=1.0).fixed_decimals(2)).labelled_by(l.id);
            ui.end_row();
        };
        row(ui, "Bubble across", &mut b.center[0], 0.0);
        row(ui, "Bubble down", &mut b.center[1], 0.0);
        row(ui, "Tail tip across", &mut b.tail[0], 0.0);
        row(ui, "Tail tip down", &mut b.tail[1], 0.0);
        row(ui, "Bubble width", &mut b.width, 0.2);
    });
    if b != before {
        change = Some((panel.id, Some(b)));
    }
    ui.horizontal(|ui| {
        if ui.add_enabled(panel.bubble.is_some(), egui::Button::new("Place automatically")).clicked() {
            change = Some((panel.id, None));
        }
        ui.small(if panel.bubble.is_some() { "placed by hand" } else { "placed automatically" });
    });
    change
}
