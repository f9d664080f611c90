//! The "Models" window: the models folder (changeable), what is found there and what is missing,
//! sizes and licences (`weights::check`). Checking touches only file metadata, and runs when
//! the window opens or on Refresh, not every frame.

use std::path::PathBuf;

use super::app::StoryApp;
use crate::weights::check::{check_models, human_size, ModelStatus};

#[derive(Default)]
pub struct ModelsView {
    pub open: bool,
    checked: Option<(PathBuf, Vec<ModelStatus>)>,
}

impl ModelsView {
    /// Opens the window (re-checking the folder).
    pub fn open(&mut self) {
        self.open = true;
        self.checked = None;
    }

    /// The last check (for tests and the status of the Generate button).
    pub fn statuses(&self) -> Option<&[ModelStatus]> {
        self.checked.as_ref().map(|(_, s)| s.as_slice())
    }
}

pub fn show(app: &mut StoryApp, ctx: &egui::Context) {
    if !app.models_view.open {
        return;
    }
    let dir = app.models_dir();
    if app.models_view.checked.as_ref().is_none_or(|(d, _)| *d != dir) {
        app.models_view.checked = Some((dir.clone(), check_models(&dir)));
    }
    let mut open = app.models_view.open;
    let mut refresh = false;
    let mut choose = false;
    egui::Window::new("Models").open(&mut open).resizable(true).default_width(720.0).show(ctx, |ui| {
        ui.horizontal(|ui| {
            ui.label(format!("Models folder: {}", dir.display()));
            if ui.button("Choose folder…").clicked() {
                choose = true;
            }
            if ui.button("Refresh").clicked() {
                refresh = true;
            }
        });
        ui.small("The README lists the exact download commands for each entry.");
        ui.separator();
        let Some((_, list)) = &app.models_view.checked else { return };
        egui::Grid::new("models-grid").striped(true).num_columns(4).show(ui, |ui| {
            ui.strong("model");
            ui.strong("status");
            ui.strong("source");
            ui.strong("licence");
            ui.end_row();
            for m in list {
                ui.vertical(|ui| {
                    ui.label(m.name);
                    ui.small(m.purpose);
                });
                match &m.found {
                    Ok((path, size)) => {
                        ui.label(format!("found, {}", human_size(*size))).on_hover_text(path.display().to_string());
                    }
                    Err(why) => {
                        let colour = if m.required { ui.visuals().error_fg_color } else { ui.visuals().warn_fg_color };
                        let head = if m.required { "missing" } else { "not installed (optional)" };
                        ui.colored_label(colour, format!("{head}: {why}"));
                    }
                }
                ui.label(m.source);
                ui.label(m.licence);
                ui.end_row();
            }
        });
    });
    app.models_view.open = open;
    if refresh {
        app.models_view.checked = None;
    }
    if choose {
        app.ask_models_folder();
    }
}
