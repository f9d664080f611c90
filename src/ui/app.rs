//! The application: owns the document, its history and folder, the engine handle and the
//! background-task inbox; draws the views and executes what they ask for.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::background::{FolderPurpose, Inbox, TaskResult};
use super::character_editor::CharacterEditor;
use super::file_dialog::FileDialog;
use super::images::ImageCache;
use super::overlay::MaskOverlay;
use super::shortcuts::{self, Shortcut};
use crate::app_dirs::{AppPaths, AppSettings};
use crate::engine::{Engine, Event, JobId};
use crate::story::import::import_photo;
use crate::story::persist::save_project;
use crate::story::sample::write_sample_story;
use crate::story::{load_project, CharacterId, Edit, History, PanelId, Project, SeedChoice};

/// What the central area edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    None,
    Character(CharacterId),
    Panel(PanelId),
}

/// How the app is set up: where its files live, which dialogs it may open, what to open first.
pub struct AppEnv {
    pub paths: AppPaths,
    pub dialogs: Arc<dyn FileDialog>,
    /// Project folder to open at start; `None`: the most recent project, else the sample story.
    pub open: Option<PathBuf>,
}

/// The newest live preview of a running panel: the CPU-mapped image (fallback) and the latents
/// (GPU shader), with the fallback's texture once uploaded.
struct Preview {
    image: Arc<image::RgbImage>,
    latents: Arc<crate::pipeline::preview::LatentFrame>,
    texture: Option<egui::TextureHandle>,
}

/// A cached look at the models folder (file-system calls stay off the per-frame path).
#[derive(Debug, Clone)]
pub(crate) struct ModelsProbe {
    dir: PathBuf,
    at: Instant,
    /// Why the StoryMaker adapter cannot be used, if it cannot.
    pub adapter_missing: Option<String>,
    /// Style LoRA files in `<models>/loras/`.
    pub loras: Vec<String>,
}

/// Which variants the artist compares side by side (runtime only).
#[derive(Debug, Default, Clone)]
pub struct CompareState {
    pub enabled: bool,
    pub picked: std::collections::HashSet<(PanelId, usize)>,
}

/// Generation state of a panel (runtime only, not saved).
#[derive(Debug, Clone, PartialEq)]
pub enum PanelStatus {
    Queued(JobId),
    Running { job: JobId, step: u32, total: u32 },
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatusLine {
    pub text: String,
    pub error: bool,
}

pub struct StoryApp {
    pub(crate) doc: Project,
    pub(crate) history: History,
    pub(crate) root: PathBuf,
    saved_generation: u64,
    saving: bool,
    save_again: bool,
    pub(crate) selection: Selection,
    pub(crate) settings: AppSettings,
    paths: AppPaths,
    dialogs: Arc<dyn FileDialog>,
    engine: Option<Engine>,
    pub(crate) panel_status: HashMap<PanelId, PanelStatus>,
    next_job: u64,
    pub(crate) images: ImageCache,
    pub(crate) overlay: MaskOverlay,
    pub(crate) inbox: Inbox,
    pub(crate) status: StatusLine,
    /// A blocking message (failed open, failed import) shown in a window until dismissed.
    pub(crate) alert: Option<String>,
    pending_imports: usize,
    /// Ids handed to imports in flight; the document's `next_id` moves only when an edit lands,
    /// so a failed import leaves the document exactly as it was.
    reserved_id: u64,
    last_autosave: Instant,
    pub(crate) editor: CharacterEditor,
    pub(crate) pose: super::pose_editor::PoseEditor,
    pub(crate) models_view: super::models_view::ModelsView,
    /// Images per Generate press (consecutive seeds).
    pub(crate) variants_per_run: usize,
    /// Variant comparison: on/off and the ticked (panel, variant index) pairs.
    pub(crate) compare: CompareState,
    /// The newest live preview per running panel, and its texture once shown.
    previews: HashMap<PanelId, Preview>,
    /// What the models folder holds, for the panel editor's warnings and LoRA list; re-read at
    /// most every few seconds, never every frame.
    models_probe: std::cell::RefCell<Option<ModelsProbe>>,
    /// Draws the previews (WGSL shader on wgpu, CPU image otherwise).
    pub(crate) latent_view: super::latent_view::LatentView,
    title_shown: String,
    /// The CLIP tokenizer for prompt-length warnings, loaded once in the background.
    pub(crate) tokenizer: Arc<std::sync::OnceLock<Option<crate::models::tokenizer::ClipTokenizer>>>,
    /// What each submitted job was made from, so a finished image records the exact inputs
    /// even if the panel was edited while it ran.
    jobs: HashMap<JobId, crate::story::Panel>,
    /// File → Export… (its settings, preview and running export).
    pub(crate) export_dialog: super::export_dialog::ExportDialog,
    /// Face analysis: per-photo results, tasks in flight, the loaded models (face_panel.rs).
    pub(crate) faces: super::face_panel::FaceState,
    pub(crate) auto_mask: super::auto_mask::AutoMaskState,
}

impl StoryApp {
    /// Creates the app from eframe's creation context (the real window and the kittest harness).
    pub fn new(cc: &eframe::CreationContext<'_>, env: AppEnv) -> StoryApp {
        let overlay = MaskOverlay::new(cc.wgpu_render_state.as_ref());
        let mut app = StoryApp::with_context(&cc.egui_ctx, env, overlay);
        app.latent_view = super::latent_view::LatentView::new(cc.wgpu_render_state.as_ref());
        app
    }

    fn with_context(ctx: &egui::Context, env: AppEnv, overlay: MaskOverlay) -> StoryApp {
        let (settings, settings_warning) = AppSettings::load(&env.paths);
        let wake_ctx = ctx.clone();
        let engine = Engine::start(Arc::new(move || wake_ctx.request_repaint())).ok();
        let mut app = StoryApp {
            doc: Project::default(),
            history: History::new(),
            root: env.paths.sample_project_dir(),
            saved_generation: 0,
            saving: false,
            save_again: false,
            selection: Selection::None,
            settings,
            paths: env.paths,
            dialogs: env.dialogs,
            engine,
            panel_status: HashMap::new(),
            next_job: 1,
            images: ImageCache::default(),
            overlay,
            inbox: Inbox::new(ctx.clone()),
            status: StatusLine { text: "Ready".into(), error: false },
            alert: settings_warning,
            pending_imports: 0,
            reserved_id: 0,
            last_autosave: Instant::now(),
            editor: CharacterEditor::default(),
            pose: Default::default(),
            models_view: Default::default(),
            variants_per_run: 1,
            previews: HashMap::new(),
            latent_view: super::latent_view::LatentView::new(None),
            models_probe: std::cell::RefCell::new(None),
            compare: CompareState::default(),
            title_shown: String::new(),
            tokenizer: Arc::new(std::sync::OnceLock::new()),
            jobs: HashMap::new(),
            export_dialog: Default::default(),
            faces: Default::default(),
            auto_mask: Default::default(),
        };
        let cell = app.tokenizer.clone();
        let repaint = ctx.clone();
        // Building the BPE tables takes a moment; the prompt fields work without it meanwhile.
        let _ = std::thread::Builder::new().name("tokenizer".into()).spawn(move || {
            let _ = cell.set(crate::models::tokenizer::ClipTokenizer::bundled().ok());
            repaint.request_repaint();
        });
        if app.engine.is_none() {
            app.set_error("Could not start the generation worker thread; generation is unavailable.".into());
        }
        app.open_initial(env.open);
        app
    }

    /// Opens the requested project, else the most recent one, else the sample story (written
    /// on first run). A project that fails to open is reported and left untouched.
    fn open_initial(&mut self, requested: Option<PathBuf>) {
        let candidates: Vec<PathBuf> = match requested {
            Some(p) => vec![p],
            None => self.settings.recent_projects.iter().take(1).cloned().collect(),
        };
        for root in candidates {
            match load_project(&root) {
                Ok(doc) => {
                    self.install_project(root, doc);
                    return;
                }
                Err(e) => self.alert = Some(format!("Could not open the project: {e}")),
            }
        }
        let sample = self.paths.sample_project_dir();
        let loaded = match load_project(&sample) {
            Ok(doc) => Ok(doc),
            Err(crate::story::ProjectError::NotAProject(_)) => write_sample_story(&sample),
            Err(e) => Err(e),
        };
        match loaded {
            Ok(doc) => self.install_project(sample, doc),
            Err(e) => {
                // Keep working in memory; saving will report the problem again.
                self.alert.get_or_insert(format!("Could not open the sample story: {e}"));
                self.doc = Project::default();
            }
        }
    }

    fn install_project(&mut self, root: PathBuf, doc: Project) {
        // Cached GPU/CPU copies are keyed by character id, which the next project reuses.
        for c in &self.doc.characters {
            self.overlay.forget(c.id.0);
        }
        self.doc = doc;
        self.root = root.clone();
        self.history = History::new();
        self.saved_generation = self.history.generation();
        self.selection = self.doc.panels.first().map_or(Selection::None, |p| Selection::Panel(p.id));
        self.panel_status.clear();
        self.images.clear();
        self.settings.note_recent(&root);
        self.persist_settings();
        self.set_status(format!("Opened {}", root.display()));
    }

    pub(crate) fn persist_settings(&mut self) {
        if let Err(e) = self.settings.save(&self.paths) {
            self.set_error(format!("Could not save the application settings: {e}"));
        }
    }

    // ----- accessors used by views and tests -------------------------------------------------

    pub fn project(&self) -> &Project {
        &self.doc
    }

    pub fn project_root(&self) -> &Path {
        &self.root
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    pub fn selection(&self) -> Selection {
        self.selection
    }

    pub fn status(&self) -> &StatusLine {
        &self.status
    }

    pub fn alert(&self) -> Option<&str> {
        self.alert.as_deref()
    }

    pub fn is_dirty(&self) -> bool {
        self.history.generation() != self.saved_generation
    }

    pub fn is_busy(&self) -> bool {
        self.saving
            || self.pending_imports > 0
            || self.images.any_loading()
            || self.faces.is_busy()
            || self.auto_mask.is_busy()
    }

    pub fn panel_status(&self, id: PanelId) -> Option<&PanelStatus> {
        self.panel_status.get(&id)
    }

    /// True once the background tokenizer load finished (successfully or not).
    pub fn tokenizer_ready(&self) -> bool {
        self.tokenizer.get().is_some()
    }

    pub fn export_dialog(&self) -> &super::export_dialog::ExportDialog {
        &self.export_dialog
    }

    pub(crate) fn file_dialogs(&self) -> Arc<dyn FileDialog> {
        self.dialogs.clone()
    }

    pub fn uses_gpu_overlay(&self) -> bool {
        self.overlay.uses_gpu()
    }

    pub(crate) fn set_status(&mut self, text: String) {
        self.status = StatusLine { text, error: false };
    }

    pub(crate) fn set_error(&mut self, text: String) {
        self.status = StatusLine { text, error: true };
    }

    // ----- document edits -------------------------------------------------------------------

    /// Applies an edit through the history and reports failures in the status bar.
    pub(crate) fn edit(&mut self, edit: Edit) {
        self.edit_merging(edit, None);
    }

    pub(crate) fn edit_merging(&mut self, edit: Edit, key: Option<String>) {
        if let Err(e) = self.history.apply_merging(&mut self.doc, edit, key) {
            self.set_error(format!("Could not apply the change: {e}"));
        }
    }

    pub fn undo(&mut self) {
        match self.history.undo(&mut self.doc) {
            Ok(Some(label)) => self.set_status(format!("Undid {label}")),
            Ok(None) => self.set_status("Nothing to undo".into()),
            Err(e) => self.set_error(format!("Could not undo: {e}")),
        }
        self.fix_selection();
    }

    pub fn redo(&mut self) {
        match self.history.redo(&mut self.doc) {
            Ok(Some(label)) => self.set_status(format!("Redid {label}")),
            Ok(None) => self.set_status("Nothing to redo".into()),
            Err(e) => self.set_error(format!("Could not redo: {e}")),
        }
        self.fix_selection();
    }

    fn fix_selection(&mut self) {
        let valid = match self.selection {
            Selection::None => true,
            Selection::Character(id) => self.doc.character(id).is_some(),
            Selection::Panel(id) => self.doc.panel(id).is_some(),
        };
        if !valid {
            self.selection = self.doc.panels.first().map_or(Selection::None, |p| Selection::Panel(p.id));
        }
    }

    fn reserve_id(&mut self) -> u64 {
        let id = self.doc.next_id.max(self.reserved_id);
        self.reserved_id = id + 1;
        id
    }

    pub(crate) fn selected_panel_index(&self) -> Option<usize> {
        match self.selection {
            Selection::Panel(id) => self.doc.panel_index(id),
            _ => None,
        }
    }

    /// Adds an empty panel after the selected one (or at the end) and selects it.
    pub(crate) fn add_panel(&mut self) {
        let index = self.selected_panel_index().map_or(self.doc.panels.len(), |i| i + 1);
        let id = PanelId(self.reserve_id());
        let panel = self.doc.panel_with_id(id);
        let id = panel.id;
        self.edit(Edit::InsertPanel { index, panel: Box::new(panel) });
        self.selection = Selection::Panel(id);
    }

    /// Duplicates the selected panel's settings (not its generated variants).
    pub(crate) fn duplicate_panel(&mut self) {
        let Some(i) = self.selected_panel_index() else { return };
        let mut copy = self.doc.panels[i].clone();
        copy.id = PanelId(self.reserve_id());
        copy.variants.clear();
        copy.chosen = None;
        let id = copy.id;
        self.edit(Edit::InsertPanel { index: i + 1, panel: Box::new(copy) });
        self.selection = Selection::Panel(id);
    }

    pub(crate) fn delete_panel(&mut self, id: PanelId) {
        let Some(i) = self.doc.panel_index(id) else { return };
        let panel = Box::new(self.doc.panels[i].clone());
        self.edit(Edit::RemovePanel { index: i, panel });
        let next = self.doc.panels.get(i).or_else(|| self.doc.panels.last());
        self.selection = next.map_or(Selection::None, |p| Selection::Panel(p.id));
        self.set_status("Panel deleted (Ctrl+Z to undo)".into());
    }

    pub(crate) fn move_panel(&mut self, from: usize, to: usize) {
        if from != to && from < self.doc.panels.len() && to < self.doc.panels.len() {
            self.edit(Edit::MovePanel { from, to });
        }
    }

    /// Draws the live preview of a running panel into `rect` (false when there is none).
    pub(crate) fn paint_preview(&mut self, ui: &mut egui::Ui, panel: PanelId, rect: egui::Rect) -> bool {
        let Some(p) = self.previews.get_mut(&panel) else { return false };
        if !self.latent_view.uses_gpu() && p.texture.is_none() {
            let size = [p.image.width() as usize, p.image.height() as usize];
            let color = egui::ColorImage::from_rgb(size, p.image.as_raw());
            p.texture =
                Some(ui.ctx().load_texture(format!("preview-{}", panel.0), color, egui::TextureOptions::LINEAR));
        }
        self.latent_view.paint(ui, rect, &p.latents, p.texture.as_ref());
        true
    }

    /// The variants of `panel` ticked for side-by-side comparison (when comparing is on).
    pub fn compared(&self, panel: PanelId) -> Vec<usize> {
        let mut v: Vec<usize> =
            self.compare.picked.iter().filter(|(p, _)| self.compare.enabled && *p == panel).map(|(_, i)| *i).collect();
        v.sort_unstable();
        v
    }

    /// Whether a live preview is waiting to be shown for `panel` (tests).
    pub fn has_preview(&self, panel: PanelId) -> bool {
        self.previews.contains_key(&panel)
    }

    /// The last "Models" window check (`None` until it was opened).
    pub fn model_statuses(&self) -> Option<&[crate::weights::check::ModelStatus]> {
        self.models_view.statuses()
    }

    /// Asks for another models folder (the Models window's "Choose folder…").
    pub(crate) fn ask_models_folder(&mut self) {
        self.ask_folder(FolderPurpose::Models);
    }

    /// Uses `folder` as the models folder from now on (saved in the settings; the engine reloads
    /// on the next job).
    pub fn set_models_dir(&mut self, folder: PathBuf) {
        self.settings.models_dir = Some(folder.clone());
        self.persist_settings();
        self.models_view.open();
        self.set_status(format!("Models folder: {}", folder.display()));
    }

    /// Where the artist's own pose presets are saved.
    pub fn pose_presets_dir(&self) -> PathBuf {
        self.paths.data_dir.join("poses")
    }

    /// The models folder's adapter status and LoRA list, re-read when older than 3 s.
    pub(crate) fn models_probe(&self) -> ModelsProbe {
        let dir = self.models_dir();
        let mut cache = self.models_probe.borrow_mut();
        let fresh = cache.as_ref().is_some_and(|p| p.dir == dir && p.at.elapsed() < Duration::from_secs(3));
        if !fresh {
            *cache = Some(ModelsProbe {
                adapter_missing: crate::weights::find_adapter(&dir).err().map(|e| e.to_string()),
                loras: crate::weights::list_style_loras(&dir),
                dir,
                at: Instant::now(),
            });
        }
        cache.clone().unwrap_or_else(|| ModelsProbe {
            dir: PathBuf::new(),
            at: Instant::now(),
            adapter_missing: None,
            loras: Vec::new(),
        })
    }

    /// The models folder in use (settings, else the platform default).
    pub fn models_dir(&self) -> PathBuf {
        self.settings.models_dir(&self.paths)
    }

    /// Deletes a character and, in the same undo step, removes it from every panel's cast.
    pub(crate) fn delete_character(&mut self, id: CharacterId) {
        let Some(index) = self.doc.character_index(id) else { return };
        let character = self.doc.characters[index].clone();
        let mut edits = Vec::new();
        for p in &self.doc.panels {
            if p.cast.iter().any(|s| s.character == id || s.blend.is_some_and(|b| b.with == id)) {
                let mut after = p.clone();
                after.cast.retain(|s| s.character != id);
                for s in &mut after.cast {
                    if s.blend.is_some_and(|b| b.with == id) {
                        s.blend = None;
                    }
                }
                edits.push(Edit::UpdatePanel { before: Box::new(p.clone()), after: Box::new(after) });
            }
        }
        let name = character.name.clone();
        edits.push(Edit::RemoveCharacter { index, character });
        self.edit(Edit::Batch { label: format!("delete character “{name}”"), edits });
        self.overlay.forget(id.0);
        self.fix_selection();
        self.set_status(format!("Deleted {name} (Ctrl+Z to undo)"));
    }

    // ----- files ------------------------------------------------------------------------------

    /// Imports photos as new characters, off the UI thread.
    pub fn import_paths(&mut self, paths: Vec<PathBuf>) {
        for source in paths {
            let id = CharacterId(self.reserve_id());
            let colour_index = self.doc.characters.len() + self.pending_imports;
            let root = self.root.clone();
            let name = source.display().to_string();
            self.pending_imports += 1;
            let started = self.inbox.spawn("import", move || {
                let result = import_photo(&root, &source, id, colour_index).map_err(|e| e.to_string());
                TaskResult::Imported { source: name, result }
            });
            if let Err(e) = started {
                self.pending_imports -= 1;
                self.set_error(format!("Could not start the import: {e}"));
            }
        }
        if self.pending_imports > 0 {
            self.set_status(format!("Importing {} photo(s)…", self.pending_imports));
        }
    }

    /// Starts a background save of a snapshot of the document.
    pub fn save(&mut self) {
        if self.saving {
            self.save_again = true;
            return;
        }
        self.saving = true;
        let snapshot = self.doc.clone();
        let root = self.root.clone();
        let generation = self.history.generation();
        let started = self.inbox.spawn("save", move || {
            let result = save_project(&root, &snapshot).map_err(|e| e.to_string());
            TaskResult::Saved { root, generation, result }
        });
        if let Err(e) = started {
            self.saving = false;
            self.set_error(format!("Could not start saving: {e}"));
        }
    }

    /// Saves on the calling thread (quit).
    pub fn save_now(&mut self) -> Result<(), String> {
        save_project(&self.root, &self.doc).map_err(|e| e.to_string())?;
        self.saved_generation = self.history.generation();
        Ok(())
    }

    pub fn open_project(&mut self, root: PathBuf) {
        let started = self.inbox.spawn("open", {
            let root = root.clone();
            move || {
                let result = load_project(&root).map_err(|e| e.to_string());
                TaskResult::Opened { root, result }
            }
        });
        match started {
            Ok(()) => self.set_status(format!("Opening {}…", root.display())),
            Err(e) => self.set_error(format!("Could not start opening: {e}")),
        }
    }

    /// Saves the current project, then starts an empty one in `folder`.
    pub fn new_project(&mut self, folder: PathBuf) {
        if self.is_dirty() {
            if let Err(e) = self.save_now() {
                self.alert =
                    Some(format!("The current project could not be saved, so no new project was started: {e}"));
                return;
            }
        }
        if folder.join(crate::story::persist::PROJECT_FILE).exists() {
            self.open_project(folder);
            return;
        }
        let title = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "Untitled".into());
        let doc = Project::new(&title);
        match save_project(&folder, &doc) {
            Ok(()) => self.install_project(folder, doc),
            Err(e) => self.alert = Some(format!("Could not create the project: {e}")),
        }
    }

    /// A fresh folder under the projects directory for "New project" without a dialog.
    pub fn next_untitled_folder(&self) -> PathBuf {
        let base = self.paths.projects_dir();
        (1..)
            .map(|n| base.join(format!("Untitled story {n}")))
            .find(|p| !p.exists())
            .unwrap_or_else(|| base.join("Untitled story"))
    }

    pub(crate) fn ask_photos_from_ui(&mut self) {
        let dialogs = self.dialogs.clone();
        let started =
            self.inbox.spawn("dialog", move || TaskResult::PhotosPicked(dialogs.pick_photos().unwrap_or_default()));
        if let Err(e) = started {
            self.set_error(format!("Could not open the file dialog: {e}"));
        }
    }

    /// Asks for a face-data file (the reference's `{id, kps}` .bin) and reads it off the UI thread.
    pub(crate) fn ask_face_data(&mut self, character: CharacterId) {
        let dialogs = self.dialogs.clone();
        let started = self.inbox.spawn("dialog", move || {
            let picked = dialogs.pick_file("Import face data ({id, kps} .bin)", ("Face data", &["bin", "pt", "pth"]));
            TaskResult::FaceData {
                character,
                result: picked.map(|p| crate::face::load_face_data(&p).map_err(|e| e.to_string())),
            }
        });
        if let Err(e) = started {
            self.set_error(format!("Could not open the file dialog: {e}"));
        }
    }

    /// Sets a character's face identity and keypoints from face data, as one undoable step. The
    /// face box is kept when there is one, else drawn around the keypoints.
    pub fn apply_face_data(&mut self, character: CharacterId, data: crate::face::FaceData) {
        let Some(before) = self.doc.character(character).cloned() else { return };
        let mut after = before.clone();
        let bbox = before.face.as_ref().map(|f| f.bbox).unwrap_or_else(|| {
            let (xs, ys): (Vec<f32>, Vec<f32>) = data.kps.iter().map(|p| (p[0], p[1])).unzip();
            let (x0, x1) = (xs.iter().cloned().fold(f32::MAX, f32::min), xs.iter().cloned().fold(f32::MIN, f32::max));
            let (y0, y1) = (ys.iter().cloned().fold(f32::MAX, f32::min), ys.iter().cloned().fold(f32::MIN, f32::max));
            let pad = 0.6 * (x1 - x0).max(y1 - y0);
            [x0 - pad, y0 - pad, x1 + pad, y1 + pad]
        });
        after.face = Some(crate::story::FaceBox {
            bbox,
            keypoints: Some(data.kps),
            score: None,
            source: crate::story::FaceSource::Imported,
            identity: Some(data.embedding),
        });
        let name = after.name.clone();
        self.edit(Edit::UpdateCharacter { before: Box::new(before), after: Box::new(after) });
        self.set_status(format!("Face data imported for {name} (Ctrl+Z to undo)"));
    }

    /// Detects the faces of a character's photo off the UI thread (cached per photo); the character takes the
    /// largest one when it has no face yet (reference spec §1.4). Needs insightface's buffalo_l in the models
    /// folder; a missing model or a photo without a face is reported, never blocking.
    pub fn analyze_faces(&mut self, character: CharacterId) {
        super::face_panel::request_analysis(self, character, true);
    }

    pub(crate) fn ask_folder(&mut self, purpose: FolderPurpose) {
        let dialogs = self.dialogs.clone();
        let title = match purpose {
            FolderPurpose::Open => "Open a StoryMaker project folder",
            FolderPurpose::New => "Choose a folder for the new project",
            FolderPurpose::Models => "Choose the models folder",
        };
        let started = self.inbox.spawn("dialog", move || match dialogs.pick_folder(title) {
            Some(folder) => TaskResult::FolderPicked { purpose, folder },
            None => TaskResult::PhotosPicked(Vec::new()),
        });
        if let Err(e) = started {
            self.set_error(format!("Could not open the folder dialog: {e}"));
        }
    }

    fn handle_task(&mut self, ctx: &egui::Context, r: TaskResult) {
        match r {
            TaskResult::FaceData { character, result } => match result {
                None => {}
                Some(Ok(data)) => self.apply_face_data(character, data),
                Some(Err(e)) => self.set_error(format!("Could not import the face data: {e}")),
            },
            TaskResult::Imported { source, result } => {
                self.pending_imports = self.pending_imports.saturating_sub(1);
                match result {
                    Ok(imported) => {
                        let c = imported.character;
                        let path = c.photo.join(&self.root);
                        self.images.insert(ctx, &path, Ok(imported.pixels));
                        let id = c.id;
                        let name = c.name.clone();
                        let index = self.doc.characters.len();
                        self.edit(Edit::InsertCharacter { index, character: c });
                        self.selection = Selection::Character(id);
                        self.set_status(format!("Imported {name}. Paint the mask over the character, then crop."));
                    }
                    Err(e) => {
                        self.set_error(format!("Could not import {source}: {e}"));
                        self.alert = Some(format!("Could not import {source}:\n{e}"));
                    }
                }
            }
            TaskResult::Saved { root, generation, result } => {
                self.saving = false;
                match result {
                    Ok(()) if root == self.root => {
                        self.saved_generation = self.saved_generation.max(generation);
                        self.set_status(format!("Saved {}", root.display()));
                    }
                    Ok(()) => {}
                    Err(e) => self.set_error(format!("Save failed — your work is still open, nothing was lost: {e}")),
                }
                if self.save_again {
                    self.save_again = false;
                    self.save();
                }
            }
            TaskResult::Opened { root, result } => match result {
                Ok(doc) => {
                    if self.is_dirty() {
                        if let Err(e) = self.save_now() {
                            self.alert = Some(format!("The current project could not be saved, so it stays open: {e}"));
                            return;
                        }
                    }
                    self.install_project(root, doc);
                }
                Err(e) => self.alert = Some(format!("Could not open the project (it was not changed): {e}")),
            },
            TaskResult::ImageLoaded { path, result } => self.images.insert(ctx, &path, result),
            TaskResult::Exported { result } => super::export_dialog::finished(self, result),
            TaskResult::PhotosPicked(paths) => {
                if !paths.is_empty() {
                    self.import_paths(paths);
                }
            }
            TaskResult::FolderPicked { purpose: FolderPurpose::Open, folder } => self.open_project(folder),
            TaskResult::FolderPicked { purpose: FolderPurpose::New, folder } => self.new_project(folder),
            TaskResult::FolderPicked { purpose: FolderPurpose::Models, folder } => self.set_models_dir(folder),
            TaskResult::Faces(task) => super::face_panel::handle(self, task),
            TaskResult::AutoMask(done) => super::auto_mask::handle(self, done),
        }
    }

    // ----- generation -------------------------------------------------------------------------

    fn random_seed(&mut self) -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // splitmix64 of time and a counter: distinct seeds for jobs queued in the same instant.
        let mut z = nanos ^ self.next_job.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) >> 1
    }

    /// Snapshots the panel into a job and sends it to the engine.
    pub fn generate(&mut self, id: PanelId) {
        self.generate_variants(id, 1);
    }

    /// Queues `n` images of the panel with consecutive seeds (from the locked seed, or a fresh
    /// random one).
    pub fn generate_variants(&mut self, id: PanelId, n: usize) {
        let Some(panel) = self.doc.panel(id).cloned() else { return };
        if self.engine.is_none() {
            self.panel_status.insert(id, PanelStatus::Failed("the generation worker is not running".into()));
            return;
        }
        let first = match panel.seed {
            SeedChoice::Fixed(s) => s,
            SeedChoice::Random => self.random_seed(),
        };
        let models_dir = self.settings.models_dir(&self.paths);
        for seed in crate::engine::build::consecutive_seeds(first, n.max(1)) {
            let job_id = JobId(self.next_job);
            let job = match crate::engine::build::job_for_panel(
                &self.doc,
                &self.root,
                id,
                seed,
                job_id,
                models_dir.clone(),
            ) {
                Ok(j) => j,
                Err(reason) => {
                    self.panel_status.insert(id, PanelStatus::Failed(reason));
                    return;
                }
            };
            self.next_job += 1;
            self.panel_status.insert(id, PanelStatus::Queued(job_id));
            self.jobs.insert(job_id, panel.clone());
            if let Some(engine) = &self.engine {
                engine.submit(job);
                if self.selection == Selection::Panel(id) {
                    engine.prioritize(job_id);
                }
            }
        }
    }

    /// Queues every panel that has a prompt, in timeline order (the selected one first).
    pub fn generate_all(&mut self) {
        let ids: Vec<PanelId> = self.doc.panels.iter().filter(|p| !p.prompt.trim().is_empty()).map(|p| p.id).collect();
        for id in &ids {
            self.generate(*id);
        }
        self.set_status(format!("Queued {} panels", ids.len()));
    }

    pub fn cancel(&mut self, id: PanelId) {
        let job = match self.panel_status.get(&id) {
            Some(PanelStatus::Queued(j)) => *j,
            Some(PanelStatus::Running { job, .. }) => *job,
            _ => return,
        };
        if let Some(e) = &self.engine {
            e.cancel(job);
        }
    }

    fn handle_event(&mut self, e: Event) {
        let panel = e.panel();
        match e {
            Event::Queued { job, .. } => {
                self.panel_status.insert(panel, PanelStatus::Queued(job));
            }
            Event::Started { job, .. } => {
                self.panel_status.insert(panel, PanelStatus::Running { job, step: 0, total: 0 });
            }
            Event::Progress { job, step, total, .. } => {
                self.panel_status.insert(panel, PanelStatus::Running { job, step, total });
            }
            Event::Preview { image, latents, .. } => {
                self.previews.insert(panel, Preview { image, latents, texture: None });
            }
            Event::Failed { job, reason, .. } => {
                self.jobs.remove(&job);
                self.previews.remove(&panel);
                self.set_error(format!("Generation failed: {reason}"));
                self.panel_status.insert(panel, PanelStatus::Failed(reason));
            }
            Event::Cancelled { job, .. } => {
                self.jobs.remove(&job);
                self.previews.remove(&panel);
                self.panel_status.remove(&panel);
                self.set_status("Generation cancelled".into());
            }
            Event::Status { message, .. } => self.set_status(message),
            Event::Done { job, output, seed, models, scheduler, consistency, .. } => {
                self.panel_status.remove(&panel);
                self.previews.remove(&panel);
                let made_from = self.jobs.remove(&job);
                let src = made_from.or_else(|| self.doc.panel(panel).cloned());
                match src
                    .map(|src| crate::engine::build::variant_for(&self.root, &src, &output, seed, models, scheduler))
                {
                    Some(Ok(v)) => self.add_variant(panel, crate::story::Variant { consistency, ..v }),
                    Some(Err(e)) => self.set_error(e),
                    None => self.set_status(
                        "A generated image arrived for a panel that was deleted; it is kept in assets/images".into(),
                    ),
                }
            }
        }
    }

    /// Records a finished image as the panel's newest variant (one undoable step; the file stays
    /// in the project's assets either way).
    fn add_variant(&mut self, panel: PanelId, variant: crate::story::Variant) {
        let Some(i) = self.doc.panel_index(panel) else {
            self.set_status(
                "A generated image arrived for a panel that was deleted; it is kept in assets/images".into(),
            );
            return;
        };
        let seed = variant.seed;
        let before = self.doc.panels[i].clone();
        let mut after = before.clone();
        after.variants.push(variant);
        after.chosen = Some(after.variants.len() - 1);
        self.edit(Edit::UpdatePanel { before: Box::new(before), after: Box::new(after) });
        self.set_status(format!("Panel {} generated (seed {seed})", i + 1));
    }

    // ----- frame ------------------------------------------------------------------------------

    fn handle_shortcuts(&mut self, ctx: &egui::Context) {
        for s in shortcuts::take(ctx) {
            match s {
                Shortcut::Save => self.save(),
                Shortcut::Open => self.ask_folder(FolderPurpose::Open),
                Shortcut::Undo => self.undo(),
                Shortcut::Redo => self.redo(),
                Shortcut::NewPanel => self.add_panel(),
                Shortcut::DuplicatePanel => self.duplicate_panel(),
                Shortcut::Import => self.ask_photos_from_ui(),
                Shortcut::Export => super::export_dialog::open(self),
                Shortcut::Generate => {
                    if let Selection::Panel(id) = self.selection {
                        self.generate(id);
                    }
                }
                Shortcut::Delete => match self.selection {
                    Selection::Panel(id) => self.delete_panel(id),
                    Selection::Character(id) => self.delete_character(id),
                    Selection::None => {}
                },
                Shortcut::Cancel => match self.selection {
                    Selection::Panel(id) => self.cancel(id),
                    Selection::Character(id) => super::auto_mask::cancel(self, id),
                    Selection::None => {}
                },
                Shortcut::Previous | Shortcut::Next => {
                    let n = self.doc.panels.len();
                    if n > 0 {
                        let i = self.selected_panel_index().unwrap_or(0);
                        let j = if s == Shortcut::Next { (i + 1).min(n - 1) } else { i.saturating_sub(1) };
                        self.selection = Selection::Panel(self.doc.panels[j].id);
                    }
                }
            }
        }
    }

    fn handle_dropped_files(&mut self, ctx: &egui::Context) {
        let dropped = ctx.input(|i| i.raw.dropped_files.clone());
        let mut paths = Vec::new();
        for f in dropped {
            let p = f.path();
            if p.as_os_str().is_empty() {
                self.set_error("Could not import the dropped item: it carried no file path".into());
            } else {
                paths.push(p.to_path_buf());
            }
        }
        if !paths.is_empty() {
            self.import_paths(paths);
        }
    }

    /// Background results, engine events and timed autosave; runs every frame before drawing.
    fn pump(&mut self, ctx: &egui::Context) {
        for r in self.inbox.drain() {
            self.handle_task(ctx, r);
        }
        let events = self.engine.as_ref().map(|e| e.poll()).unwrap_or_default();
        for e in events {
            self.handle_event(e);
        }
        let minutes = self.settings.autosave_minutes;
        if minutes > 0 && self.last_autosave.elapsed() >= Duration::from_secs(60 * minutes as u64) {
            self.last_autosave = Instant::now();
            if self.is_dirty() && !self.editor.is_dragging() {
                self.save();
            }
        }
        if minutes > 0 && self.is_dirty() {
            // Wake up for the next autosave even when the user is idle.
            ctx.request_repaint_after(Duration::from_secs(30));
        }
    }

    fn update_title(&mut self, ctx: &egui::Context) {
        let title = format!("{}{} — StoryMaker Studio", if self.is_dirty() { "• " } else { "" }, self.doc.title);
        if title != self.title_shown {
            ctx.send_viewport_cmd(egui::ViewportCommand::Title(title.clone()));
            self.title_shown = title;
        }
    }

    fn menu_bar(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("New project…").clicked() {
                    self.ask_folder(FolderPurpose::New);
                }
                if ui.button("New project in the projects folder").clicked() {
                    let folder = self.next_untitled_folder();
                    self.new_project(folder);
                }
                if ui.button("Open project…  (Ctrl+O)").clicked() {
                    self.ask_folder(FolderPurpose::Open);
                }
                ui.menu_button("Open recent", |ui| {
                    let recent = self.settings.recent_projects.clone();
                    if recent.is_empty() {
                        ui.label("No recent projects");
                    }
                    for p in recent {
                        if ui.button(p.display().to_string()).clicked() {
                            self.open_project(p);
                        }
                    }
                });
                ui.separator();
                if ui.button("Save  (Ctrl+S)").clicked() {
                    self.save();
                }
                if ui.button("Import photos…  (Ctrl+I)").clicked() {
                    self.ask_photos_from_ui();
                }
                if ui.button("Export…  (Ctrl+E)").clicked() {
                    super::export_dialog::open(self);
                }
            });
            ui.menu_button("Edit", |ui| {
                let undo = self.history.undo_label().map_or("Undo".to_string(), |l| format!("Undo {l}"));
                if ui.add_enabled(self.history.can_undo(), egui::Button::new(undo)).clicked() {
                    self.undo();
                }
                let redo = self.history.redo_label().map_or("Redo".to_string(), |l| format!("Redo {l}"));
                if ui.add_enabled(self.history.can_redo(), egui::Button::new(redo)).clicked() {
                    self.redo();
                }
            });
            ui.menu_button("Story", |ui| {
                if ui.button("Generate all panels").clicked() {
                    self.generate_all();
                }
                if ui.button("Models…").clicked() {
                    self.models_view.open();
                }
            });
            ui.menu_button("Help", |ui| {
                ui.label("Keyboard shortcuts");
                egui::Grid::new("shortcuts").show(ui, |ui| {
                    for (k, what) in shortcuts::HELP {
                        ui.monospace(*k);
                        ui.label(*what);
                        ui.end_row();
                    }
                });
            });
        });
    }

    fn status_bar(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let colour = if self.status.error { ui.visuals().error_fg_color } else { ui.visuals().text_color() };
            ui.colored_label(colour, &self.status.text);
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.label(self.root.display().to_string());
                ui.separator();
                if self.saving {
                    ui.label("Saving…");
                } else if self.is_dirty() {
                    ui.label("Unsaved changes");
                } else {
                    ui.label("All changes saved");
                }
                if self.pending_imports > 0 {
                    ui.separator();
                    ui.spinner();
                }
            });
        });
    }

    fn alert_window(&mut self, ctx: &egui::Context) {
        let Some(text) = self.alert.clone() else { return };
        let mut open = true;
        egui::Window::new("Problem").collapsible(false).resizable(false).open(&mut open).show(ctx, |ui| {
            ui.label(text);
            if ui.button("OK").clicked() {
                self.alert = None;
            }
        });
        if !open {
            self.alert = None;
        }
    }

    fn drop_hint(&self, ctx: &egui::Context) {
        if ctx.input(|i| i.raw.hovered_files.is_empty()) {
            return;
        }
        let screen = ctx.content_rect();
        let painter = ctx.layer_painter(egui::LayerId::new(egui::Order::Foreground, egui::Id::unique("drop-hint")));
        painter.rect_filled(screen, 0.0, egui::Color32::from_black_alpha(160));
        painter.text(
            screen.center(),
            egui::Align2::CENTER_CENTER,
            "Drop photos to add characters",
            egui::FontId::proportional(28.0),
            egui::Color32::WHITE,
        );
    }
}

impl eframe::App for StoryApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.pump(ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.handle_shortcuts(&ctx);
        self.handle_dropped_files(&ctx);
        egui::Panel::top("menu").show(ui, |ui| self.menu_bar(ui));
        egui::Panel::bottom("status").show(ui, |ui| self.status_bar(ui));
        egui::Panel::bottom("timeline").resizable(true).min_size(150.0).show(ui, |ui| super::timeline::show(self, ui));
        egui::Panel::left("cast").resizable(true).default_size(220.0).show(ui, |ui| super::characters::show(self, ui));
        egui::CentralPanel::default().show(ui, |ui| match self.selection {
            Selection::Character(id) => super::character_editor::show(self, ui, id),
            Selection::Panel(id) => super::panel_editor::show(self, ui, id),
            Selection::None => {
                ui.centered_and_justified(|ui| {
                    ui.label("Select a panel in the timeline or a character in the cast — or drop photos here to add characters.");
                });
            }
        });
        super::export_dialog::show(self, &ctx);
        super::models_view::show(self, &ctx);
        self.alert_window(&ctx);
        self.drop_hint(&ctx);
        self.update_title(&ctx);
    }

    fn on_exit(&mut self) {
        if self.is_dirty() {
            if let Err(e) = self.save_now() {
                eprintln!("StoryMaker Studio: could not save on quit: {e}");
            }
        }
    }
}
