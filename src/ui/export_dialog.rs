//! The export dialog (File → Export…, Ctrl+E): output format, panels, page layout, text, where
//! to write; a live preview of page 1 rendered off the UI thread; the speech-bubble placement of
//! each panel; the export itself on a worker thread with progress and cancel.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

use super::app::{Selection, StoryApp};
use super::background::TaskResult;
use crate::export::{
    self, Arrangement, AspectMode, ExportError, ExportFormat, ExportPrefs, ExportReport, ExportSettings, ExportTarget,
    MissingImages, Orientation, PageSize, PanelChoice, PdfImages, Progress,
};
use crate::story::panel::BubblePlacement;
use crate::story::{Edit, PanelId, Project};

/// Width of the preview image in points.
const PREVIEW_WIDTH: f32 = 420.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pdf,
    Sheets,
    Panels,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    All,
    Selected,
    Range,
}

/// What the preview on screen was made from.
#[derive(Clone, PartialEq)]
struct PreviewKey {
    settings: ExportSettings,
    generation: u64,
    root: PathBuf,
}

struct PreviewDone {
    key: PreviewKey,
    result: Result<(egui::ColorImage, usize), String>,
}

struct Running {
    progress: Arc<Mutex<Progress>>,
    cancel: Arc<AtomicBool>,
}

/// Things the dialog asks the app to do after drawing.
enum Action {
    Export,
    Cancel,
    ChooseFolder,
    SetBubble(PanelId, Option<BubblePlacement>),
}

pub struct ExportDialog {
    open: bool,
    kind: Kind,
    panel_bubbles: bool,
    which: Which,
    range: (usize, usize),
    settings: ExportSettings,
    /// Custom page size kept while another size is chosen.
    custom_mm: (f32, f32),
    grid: (u32, u32),
    strip_panels: u32,
    jpeg_quality: u8,
    folder: String,
    name: String,
    /// The project folder the defaults were made for.
    defaults_for: Option<PathBuf>,
    /// The remembered choices were applied (once per run of the app).
    restored: bool,
    preview_tx: Sender<PreviewDone>,
    preview_rx: Receiver<PreviewDone>,
    preview_pending: Option<PreviewKey>,
    preview_key: Option<PreviewKey>,
    preview: Option<(egui::TextureHandle, usize)>,
    preview_error: Option<String>,
    folder_rx: Option<Receiver<Option<PathBuf>>>,
    running: Option<Running>,
    last: Option<Result<ExportReport, String>>,
    bubble_panel: Option<PanelId>,
}

impl Default for ExportDialog {
    fn default() -> Self {
        let (preview_tx, preview_rx) = crossbeam_channel::unbounded();
        ExportDialog {
            open: false,
            kind: Kind::Pdf,
            panel_bubbles: true,
            which: Which::All,
            range: (1, 1),
            settings: ExportSettings::default(),
            custom_mm: (210.0, 297.0),
            grid: (2, 3),
            strip_panels: 4,
            jpeg_quality: 85,
            folder: String::new(),
            name: String::new(),
            defaults_for: None,
            restored: false,
            preview_tx,
            preview_rx,
            preview_pending: None,
            preview_key: None,
            preview: None,
            preview_error: None,
            folder_rx: None,
            running: None,
            last: None,
            bubble_panel: None,
        }
    }
}

impl ExportDialog {
    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// True once a preview for the current settings is on screen (tests).
    pub fn preview_ready(&self) -> bool {
        self.preview.is_some() && self.preview_pending.is_none()
    }

    /// The output kind, layout and image choices as the next export would use them (tests).
    pub fn current_prefs(&self) -> ExportPrefs {
        self.prefs()
    }

    fn format(&self) -> ExportFormat {
        match self.kind {
            Kind::Pdf => ExportFormat::Pdf,
            Kind::Sheets => ExportFormat::PngSheets,
            Kind::Panels => ExportFormat::PngPanels { bubbles: self.panel_bubbles },
        }
    }

    /// What is remembered for the next session.
    fn prefs(&self) -> ExportPrefs {
        ExportPrefs {
            format: self.format(),
            settings: ExportSettings { panels: PanelChoice::All, ..self.settings.clone() },
            jpeg_quality: self.jpeg_quality,
        }
    }

    /// Applies remembered choices, with the widgets' own copies (grid, strip, custom page) following them.
    fn restore(&mut self, prefs: &ExportPrefs) {
        (self.kind, self.panel_bubbles) = match prefs.format {
            ExportFormat::Pdf => (Kind::Pdf, self.panel_bubbles),
            ExportFormat::PngSheets => (Kind::Sheets, self.panel_bubbles),
            ExportFormat::PngPanels { bubbles } => (Kind::Panels, bubbles),
        };
        self.settings = ExportSettings { panels: PanelChoice::All, ..prefs.settings.clone() };
        self.settings.dpi = self.settings.dpi.clamp(30, export::MAX_DPI);
        self.jpeg_quality = match prefs.settings.pdf_images {
            PdfImages::Jpeg { quality } => quality,
            PdfImages::Original => prefs.jpeg_quality,
        }
        .clamp(30, 100);
        match self.settings.layout.arrangement {
            Arrangement::Grid { columns, rows } => self.grid = (columns.clamp(1, 12), rows.clamp(1, 12)),
            Arrangement::Strip { panels } => self.strip_panels = panels.clamp(1, 12),
        }
        if let PageSize::Custom { width_mm, height_mm } = self.settings.layout.page {
            self.custom_mm = (width_mm, height_mm);
        }
    }

    fn effective(&self, doc: &Project, selection: Selection) -> ExportSettings {
        let panels = match self.which {
            Which::All => PanelChoice::All,
            Which::Selected => match selection {
                Selection::Panel(id) => PanelChoice::Only(vec![id]),
                _ => PanelChoice::Only(Vec::new()),
            },
            Which::Range => {
                let n = doc.panels.len().max(1);
                let first = self.range.0.clamp(1, n);
                PanelChoice::Range { first, last: self.range.1.clamp(first, n) }
            }
        };
        ExportSettings { panels, ..self.settings.clone() }
    }
}

/// Opens the dialog: the choices of the last export (application settings) the first time, then defaults for
/// the project (folder, name, panel shape, range) the first time for each project.
pub fn open(app: &mut StoryApp) {
    if !app.export_dialog.restored {
        app.export_dialog.restored = true;
        if let Some(prefs) = app.settings.export.clone() {
            app.export_dialog.restore(&prefs);
        }
    }
    defaults_for_project(app);
    app.export_dialog.open = true;
}

/// Target folder, file name, panel shape and range for the open project (once per project).
fn defaults_for_project(app: &mut StoryApp) {
    let d = &mut app.export_dialog;
    if d.defaults_for.as_ref() != Some(&app.root) {
        d.folder = app.root.join("exports").display().to_string();
        d.name = export::file_name_for(&app.doc.title);
        let p = &app.doc.settings.default_params;
        d.settings.layout.frame_aspect = Some(p.width.max(1) as f32 / p.height.max(1) as f32);
        d.range = (1, app.doc.panels.len().max(1));
        d.defaults_for = Some(app.root.clone());
        d.last = None;
        d.bubble_panel = None;
    }
}

/// A finished export arrived from the worker.
pub fn finished(app: &mut StoryApp, result: Result<ExportReport, ExportError>) {
    app.export_dialog.running = None;
    match result {
        Ok(report) => {
            let first = report.files.first().map(|f| f.display().to_string()).unwrap_or_default();
            let what =
                if report.files.len() == 1 { first } else { format!("{} files ({first} …)", report.files.len()) };
            let warn = if report.warnings.is_empty() {
                String::new()
            } else {
                format!("; {} warning(s)", report.warnings.len())
            };
            app.set_status(format!("Exported {} panel(s) to {what}{warn}", report.panels));
            app.export_dialog.last = Some(Ok(report));
        }
        Err(ExportError::Cancelled) => {
            app.set_status("Export cancelled; nothing was written".into());
            app.export_dialog.last = Some(Err("Cancelled; nothing was written.".into()));
        }
        Err(e) => {
            app.set_error(format!("Export failed: {e}"));
            app.export_dialog.last = Some(Err(format!("{e}. Nothing was written.")));
        }
    }
}

/// Draws the dialog (when open) and carries out what it asks for.
pub fn show(app: &mut StoryApp, ctx: &egui::Context) {
    if !app.export_dialog.open {
        return;
    }
    // Another project was opened while the dialog was up.
    defaults_for_project(app);
    let generation = app.history.generation();
    let actions = app.export_dialog.ui(ctx, &app.doc, &app.root, app.selection, generation);
    for a in actions {
        match a {
            Action::Export => start(app, ctx),
            Action::Cancel => {
                if let Some(r) = &app.export_dialog.running {
                    r.cancel.store(true, Ordering::Relaxed);
                }
            }
            Action::ChooseFolder => {
                let dialogs = app.file_dialogs();
                let (tx, rx) = crossbeam_channel::bounded(1);
                let repaint = ctx.clone();
                let started = std::thread::Builder::new().name("dialog".into()).spawn(move || {
                    let _ = tx.send(dialogs.pick_folder("Export into this folder"));
                    repaint.request_repaint();
                });
                match started {
                    Ok(_) => app.export_dialog.folder_rx = Some(rx),
                    Err(e) => app.set_error(format!("Could not open the folder dialog: {e}")),
                }
            }
            Action::SetBubble(id, bubble) => {
                let Some(before) = app.doc.panel(id).cloned() else { continue };
                let after = crate::story::Panel { bubble, ..before.clone() };
                if after != before {
                    let key = format!("panel:{}:bubble", id.0);
                    app.edit_merging(Edit::UpdatePanel { before: Box::new(before), after: Box::new(after) }, Some(key));
                }
            }
        }
    }
}

/// Starts the export of a snapshot of the document on a worker thread.
fn start(app: &mut StoryApp, ctx: &egui::Context) {
    if app.export_dialog.running.is_some() {
        return;
    }
    let prefs = app.export_dialog.prefs();
    if app.settings.export.as_ref() != Some(&prefs) {
        app.settings.export = Some(prefs);
        app.persist_settings();
    }
    let d = &app.export_dialog;
    let settings = d.effective(&app.doc, app.selection);
    let format = d.format();
    let target = ExportTarget { folder: PathBuf::from(d.folder.trim()), name: d.name.trim().to_string() };
    let project = app.doc.clone();
    let root = app.root.clone();
    let progress = Arc::new(Mutex::new(Progress { done: 0, total: 0, stage: "Starting".into() }));
    let cancel = Arc::new(AtomicBool::new(false));
    let (p, c, repaint) = (progress.clone(), cancel.clone(), ctx.clone());
    let started = app.inbox.spawn("export", move || {
        let mut report = |now: Progress| {
            if let Ok(mut slot) = p.lock() {
                *slot = now;
            }
            repaint.request_repaint();
        };
        let result = export::export(&project, &root, &settings, format, &target, &mut report, &c);
        TaskResult::Exported { result }
    });
    match started {
        Ok(()) => {
            app.export_dialog.running = Some(Running { progress, cancel });
            app.export_dialog.last = None;
            app.set_status("Exporting…".into());
        }
        Err(e) => app.set_error(format!("Could not start the export: {e}")),
    }
}

fn labelled_drag<N: egui::emath::Numeric>(
    ui: &mut egui::Ui,
    label: &str,
    value: &mut N,
    range: std::ops::RangeInclusive<N>,
    suffix: &str,
) -> bool {
    let l = ui.label(label);
    ui.add(egui::DragValue::new(value).range(range).suffix(suffix)).labelled_by(l.id).changed()
}

impl ExportDialog {
    fn ui(
        &mut self,
        ctx: &egui::Context,
        doc: &Project,
        root: &std::path::Path,
        selection: Selection,
        generation: u64,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        self.poll(ctx);
        let key = PreviewKey { settings: self.effective(doc, selection), generation, root: root.to_path_buf() };
        if self.preview_pending.is_none() && self.preview_key.as_ref() != Some(&key) {
            self.request_preview(ctx, doc, key);
        }
        let mut open = self.open;
        egui::Window::new("Export storyboard").open(&mut open).default_size([900.0, 640.0]).collapsible(false).show(
            ctx,
            |ui| {
                ui.horizontal_top(|ui| {
                    ui.vertical(|ui| {
                        ui.set_width(380.0);
                        egui::ScrollArea::vertical().max_height(560.0).show(ui, |ui| {
                            self.settings_ui(ui, doc, selection, &mut actions);
                        });
                    });
                    ui.separator();
                    ui.vertical(|ui| self.preview_ui(ui, doc, selection, &mut actions));
                });
            },
        );
        // Closing the window while exporting leaves the export running; it reports in the status bar.
        self.open = open;
        actions
    }

    /// Takes in finished previews and a picked folder.
    fn poll(&mut self, ctx: &egui::Context) {
        for done in self.preview_rx.try_iter().collect::<Vec<_>>() {
            if self.preview_pending.as_ref() == Some(&done.key) {
                self.preview_pending = None;
            }
            self.preview_key = Some(done.key);
            match done.result {
                Ok((image, pages)) => {
                    let tex = ctx.load_texture("export-preview", image, egui::TextureOptions::LINEAR);
                    self.preview = Some((tex, pages));
                    self.preview_error = None;
                }
                Err(e) => {
                    self.preview = None;
                    self.preview_error = Some(e);
                }
            }
        }
        if let Some(rx) = &self.folder_rx {
            if let Ok(picked) = rx.try_recv() {
                if let Some(folder) = picked {
                    self.folder = folder.display().to_string();
                }
                self.folder_rx = None;
            }
        }
    }

    fn request_preview(&mut self, ctx: &egui::Context, doc: &Project, key: PreviewKey) {
        let project = doc.clone();
        let tx = self.preview_tx.clone();
        let repaint = ctx.clone();
        let width = (PREVIEW_WIDTH * ctx.pixels_per_point()).round() as u32;
        let job = key.clone();
        let started = std::thread::Builder::new().name("export-preview".into()).spawn(move || {
            let result = export::render_preview(&project, &job.root, &job.settings, 0, width)
                .map(|(img, pages)| {
                    let size = [img.width() as usize, img.height() as usize];
                    (egui::ColorImage::from_rgba_unmultiplied(size, img.as_raw()), pages)
                })
                .map_err(|e| e.to_string());
            let _ = tx.send(PreviewDone { key: job, result });
            repaint.request_repaint();
        });
        match started {
            Ok(_) => self.preview_pending = Some(key),
            Err(e) => {
                self.preview_key = Some(key);
                self.preview_error = Some(format!("could not start the preview: {e}"));
            }
        }
    }

    fn settings_ui(&mut self, ui: &mut egui::Ui, doc: &Project, selection: Selection, actions: &mut Vec<Action>) {
        ui.strong("Output");
        ui.radio_value(&mut self.kind, Kind::Pdf, "PDF (vector text, full-resolution images)");
        ui.radio_value(&mut self.kind, Kind::Sheets, "PNG sheets (one image per page)");
        ui.radio_value(&mut self.kind, Kind::Panels, "PNG panels (one image per panel)");
        if self.kind == Kind::Panels {
            ui.checkbox(&mut self.panel_bubbles, "Panels with their speech bubbles");
        }
        if self.kind == Kind::Pdf {
            let mut jpeg = matches!(self.settings.pdf_images, PdfImages::Jpeg { .. });
            ui.checkbox(&mut jpeg, "Smaller file: store PNG images as JPEG")
                .on_hover_text("Off: JPEG files are embedded as they are and PNG images losslessly");
            if jpeg {
                ui.horizontal(|ui| labelled_drag(ui, "JPEG quality", &mut self.jpeg_quality, 30..=100, ""));
            }
            self.settings.pdf_images =
                if jpeg { PdfImages::Jpeg { quality: self.jpeg_quality } } else { PdfImages::Original };
        } else {
            ui.horizontal(|ui| labelled_drag(ui, "Resolution", &mut self.settings.dpi, 30..=export::MAX_DPI, " dpi"));
        }
        ui.separator();
        ui.strong("Panels");
        ui.horizontal(|ui| {
            ui.radio_value(&mut self.which, Which::All, "All");
            ui.radio_value(&mut self.which, Which::Selected, "Selected panel");
            ui.radio_value(&mut self.which, Which::Range, "Range");
        });
        let n = doc.panels.len().max(1);
        if self.which == Which::Range {
            ui.horizontal(|ui| {
                labelled_drag(ui, "From panel", &mut self.range.0, 1..=n, "");
                labelled_drag(ui, "to", &mut self.range.1, 1..=n, "");
            });
        }
        if self.which == Which::Selected && !matches!(selection, Selection::Panel(_)) {
            ui.colored_label(ui.visuals().warn_fg_color, "Select a panel in the timeline first.");
        }
        ui.separator();
        self.page_ui(ui);
        ui.separator();
        self.text_ui(ui);
        ui.separator();
        let mut mark = self.settings.missing_images == MissingImages::Mark;
        ui.checkbox(&mut mark, "Mark missing image files instead of stopping");
        self.settings.missing_images = if mark { MissingImages::Mark } else { MissingImages::Fail };
        ui.separator();
        if let Some((id, bubble)) = super::bubble_editor::show(ui, doc, &mut self.bubble_panel) {
            actions.push(Action::SetBubble(id, bubble));
        }
    }

    fn page_ui(&mut self, ui: &mut egui::Ui) {
        let l = &mut self.settings.layout;
        ui.strong("Page");
        let label = match l.page {
            PageSize::A4 => "A4",
            PageSize::Letter => "Letter",
            PageSize::Custom { .. } => "Custom",
        };
        egui::ComboBox::from_label("Page size").selected_text(label).show_ui(ui, |ui| {
            ui.selectable_value(&mut l.page, PageSize::A4, "A4 (210 × 297 mm)");
            ui.selectable_value(&mut l.page, PageSize::Letter, "Letter (8.5 × 11 in)");
            let custom = PageSize::Custom { width_mm: self.custom_mm.0, height_mm: self.custom_mm.1 };
            ui.selectable_value(&mut l.page, custom, "Custom");
        });
        if let PageSize::Custom { .. } = l.page {
            ui.horizontal(|ui| {
                labelled_drag(ui, "Width", &mut self.custom_mm.0, 50.0..=2000.0, " mm");
                labelled_drag(ui, "Height", &mut self.custom_mm.1, 50.0..=2000.0, " mm");
            });
            l.page = PageSize::Custom { width_mm: self.custom_mm.0, height_mm: self.custom_mm.1 };
        }
        ui.horizontal(|ui| {
            ui.radio_value(&mut l.orientation, Orientation::Portrait, "Portrait");
            ui.radio_value(&mut l.orientation, Orientation::Landscape, "Landscape");
        });
        let mut strip = matches!(l.arrangement, Arrangement::Strip { .. });
        ui.horizontal(|ui| {
            ui.radio_value(&mut strip, false, "Grid");
            ui.radio_value(&mut strip, true, "Comic strip (one row)");
        });
        ui.horizontal(|ui| {
            if strip {
                labelled_drag(ui, "Panels per strip", &mut self.strip_panels, 1..=12, "");
            } else {
                labelled_drag(ui, "Columns", &mut self.grid.0, 1..=12, "");
                labelled_drag(ui, "Rows", &mut self.grid.1, 1..=12, "");
            }
        });
        l.arrangement = if strip {
            Arrangement::Strip { panels: self.strip_panels }
        } else {
            Arrangement::Grid { columns: self.grid.0, rows: self.grid.1 }
        };
        ui.horizontal(|ui| {
            labelled_drag(ui, "Margin", &mut l.margin_mm, 0.0..=60.0, " mm");
            labelled_drag(ui, "Gutter", &mut l.gutter_mm, 0.0..=40.0, " mm");
        });
        let shapes: [(&str, Option<f32>); 5] = [
            ("Square", Some(1.0)),
            ("4:3", Some(4.0 / 3.0)),
            ("3:4", Some(0.75)),
            ("16:9", Some(16.0 / 9.0)),
            ("Fill the cell", None),
        ];
        let current = shapes
            .iter()
            .find(|(_, a)| match (a, l.frame_aspect) {
                (Some(x), Some(y)) => (x - y).abs() < 1e-3,
                (None, None) => true,
                _ => false,
            })
            .map_or_else(|| format!("{:.2}:1", l.frame_aspect.unwrap_or(1.0)), |(n, _)| n.to_string());
        egui::ComboBox::from_label("Panel shape").selected_text(current).show_ui(ui, |ui| {
            for (name, aspect) in shapes {
                ui.selectable_value(&mut l.frame_aspect, aspect, name);
            }
        });
        ui.horizontal(|ui| {
            ui.radio_value(&mut l.aspect, AspectMode::Fit, "Fit whole image");
            ui.radio_value(&mut l.aspect, AspectMode::Fill, "Fill frame (crop)");
        });
    }

    fn text_ui(&mut self, ui: &mut egui::Ui) {
        let l = &mut self.settings.layout;
        ui.strong("Text");
        ui.horizontal_wrapped(|ui| {
            ui.checkbox(&mut l.title, "Title");
            ui.checkbox(&mut l.page_numbers, "Page numbers");
            ui.checkbox(&mut l.captions, "Captions");
            ui.checkbox(&mut l.panel_numbers, "Panel numbers");
            ui.checkbox(&mut l.bubbles, "Speech bubbles");
        });
        ui.horizontal(|ui| {
            labelled_drag(ui, "Caption size", &mut l.caption_size_pt, 5.0..=24.0, " pt");
            labelled_drag(ui, "Caption lines", &mut l.caption_lines, 1..=10, "");
        });
        ui.horizontal(|ui| {
            labelled_drag(ui, "Bubble text", &mut l.bubble_size_pt, 5.0..=24.0, " pt");
            labelled_drag(ui, "Title size", &mut l.title_size_pt, 8.0..=40.0, " pt");
        });
    }

    fn preview_ui(&mut self, ui: &mut egui::Ui, doc: &Project, selection: Selection, actions: &mut Vec<Action>) {
        ui.strong("Preview of page 1");
        match (&self.preview, &self.preview_error) {
            (_, Some(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, format!("No preview: {e}"));
            }
            (Some((tex, pages)), None) => {
                ui.add(egui::Image::new(tex).max_width(PREVIEW_WIDTH).alt_text("Page 1 preview"));
                ui.label(format!("{pages} page(s)"));
            }
            (None, None) => {
                ui.spinner();
            }
        }
        if let Ok(chosen) = export::chosen_panels(doc, &self.effective(doc, selection).panels) {
            let missing = chosen.iter().filter(|&&i| doc.panels[i].chosen_variant().is_none()).count();
            if missing > 0 {
                ui.small(format!("{missing} panel(s) not generated yet: marked as such on the pages."));
            }
        }
        ui.separator();
        ui.horizontal(|ui| {
            let l = ui.label("Folder");
            ui.add(egui::TextEdit::singleline(&mut self.folder).desired_width(260.0)).labelled_by(l.id);
            if ui.add_enabled(self.folder_rx.is_none(), egui::Button::new("Choose…")).clicked() {
                actions.push(Action::ChooseFolder);
            }
        });
        ui.horizontal(|ui| {
            let l = ui.label("File name");
            ui.add(egui::TextEdit::singleline(&mut self.name).desired_width(200.0)).labelled_by(l.id);
            let ext = if self.kind == Kind::Pdf { ".pdf" } else { "-….png" };
            ui.label(ext);
        });
        ui.horizontal(|ui| match &self.running {
            Some(r) => {
                let p = r.progress.lock().map(|p| p.clone()).unwrap_or(Progress {
                    done: 0,
                    total: 0,
                    stage: String::new(),
                });
                let f = if p.total > 0 { p.done as f32 / p.total as f32 } else { 0.0 };
                ui.add(egui::ProgressBar::new(f).text(p.stage).desired_width(240.0));
                if ui.button("Cancel export").clicked() {
                    actions.push(Action::Cancel);
                }
            }
            None => {
                let ready = !self.folder.trim().is_empty() && !self.name.trim().is_empty();
                if ui.add_enabled(ready, egui::Button::new("Export")).clicked() {
                    actions.push(Action::Export);
                }
            }
        });
        match &self.last {
            Some(Ok(report)) => {
                ui.label(format!("Wrote {} file(s):", report.files.len()));
                for f in report.files.iter().take(4) {
                    ui.small(f.display().to_string());
                }
                for w in &report.warnings {
                    ui.colored_label(ui.visuals().warn_fg_color, w);
                }
            }
            Some(Err(e)) => {
                ui.colored_label(ui.visuals().error_fg_color, e);
            }
            None => {}
        }
    }
}
