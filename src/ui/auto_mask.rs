//! "Auto mask" in the character editor (issue 10): a person-segmentation model from `<models>/segmentation/`
//! masks the character's photo on a worker thread, and the result replaces the mask as ONE undoable
//! `Edit::MaskPatch`, so the brush keeps working on it and Ctrl+Z brings the previous mask back.
//!
//! The model is loaded once by the first task and shared (compiling a 1024² graph takes seconds); it is reloaded
//! when the file changes. A missing model is reported at the click, and the manual brush is unaffected.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::app::StoryApp;
use super::background::TaskResult;
use crate::imaging::segment::{find_segmentation_model, SegmentStage, Segmenter};
use crate::imaging::{Mask, PixelRect};
use crate::story::{CharacterId, Edit};

/// The loaded model and the file it came from.
type SharedSegmenter = Arc<Mutex<Option<(PathBuf, Arc<Segmenter>)>>>;

/// Where a running auto mask is; the worker stores it, the editor shows it next to the spinner (a 1024² model
/// takes tens of seconds on a laptop CPU, so "still working, on what" matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AutoMaskStage {
    LoadingModel = 0,
    Preparing = 1,
    Running = 2,
    Finishing = 3,
}

impl AutoMaskStage {
    fn from_u8(v: u8) -> AutoMaskStage {
        match v {
            1 => AutoMaskStage::Preparing,
            2 => AutoMaskStage::Running,
            3 => AutoMaskStage::Finishing,
            _ => AutoMaskStage::LoadingModel,
        }
    }

    fn label(self) -> &'static str {
        match self {
            AutoMaskStage::LoadingModel => "loading the model",
            AutoMaskStage::Preparing => "preparing the photo",
            AutoMaskStage::Running => "segmenting",
            AutoMaskStage::Finishing => "making the mask",
        }
    }
}

impl From<SegmentStage> for AutoMaskStage {
    fn from(s: SegmentStage) -> Self {
        match s {
            SegmentStage::Preparing => AutoMaskStage::Preparing,
            SegmentStage::Running => AutoMaskStage::Running,
            SegmentStage::Finishing => AutoMaskStage::Finishing,
        }
    }
}

/// One running auto mask: its stage (written by the worker), when it started, its ticket (which result is
/// awaited) and the flag that tells its worker to stop.
struct Running {
    stage: Arc<AtomicU8>,
    started: Instant,
    ticket: u64,
    cancelled: Arc<AtomicBool>,
}

/// Auto-mask state of the app (runtime only).
#[derive(Default)]
pub(crate) struct AutoMaskState {
    pending: HashMap<CharacterId, Running>,
    model: SharedSegmenter,
    next_ticket: u64,
}

impl AutoMaskState {
    /// Starts awaiting a new run for `id`: its ticket, stage and cancel flag.
    fn start(&mut self, id: CharacterId) -> (u64, Arc<AtomicU8>, Arc<AtomicBool>) {
        self.next_ticket += 1;
        let stage = Arc::new(AtomicU8::new(AutoMaskStage::LoadingModel as u8));
        let cancelled = Arc::new(AtomicBool::new(false));
        let running = Running {
            stage: stage.clone(),
            started: Instant::now(),
            ticket: self.next_ticket,
            cancelled: cancelled.clone(),
        };
        self.pending.insert(id, running);
        (self.next_ticket, stage, cancelled)
    }

    /// Stops awaiting `id`'s run and tells its worker to stop (it skips the network if it has not started it;
    /// tract cannot interrupt one that has, and its result is then dropped). False when none was running.
    fn cancel(&mut self, id: CharacterId) -> bool {
        match self.pending.remove(&id) {
            Some(r) => {
                r.cancelled.store(true, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Whether a finished run is the one still awaited for its character (it then stops being pending); a
    /// cancelled or superseded run's result is not.
    fn finish(&mut self, id: CharacterId, ticket: u64) -> bool {
        if self.pending.get(&id).is_some_and(|r| r.ticket == ticket) {
            self.pending.remove(&id);
            return true;
        }
        false
    }

    pub(crate) fn is_busy(&self) -> bool {
        !self.pending.is_empty()
    }

    pub(crate) fn is_running(&self, id: CharacterId) -> bool {
        self.pending.contains_key(&id)
    }

    /// "Auto mask: segmenting… 12 s" for a running auto mask.
    pub(crate) fn progress_text(&self, id: CharacterId) -> Option<String> {
        let r = self.pending.get(&id)?;
        let stage = AutoMaskStage::from_u8(r.stage.load(Ordering::Relaxed));
        Some(format!("{}… {:.0} s", capitalised(stage.label()), r.started.elapsed().as_secs_f32()))
    }
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// A finished auto mask: the photo-sized mask, or why there is none.
pub(crate) struct AutoMaskDone {
    character: CharacterId,
    ticket: u64,
    result: Result<Mask, String>,
}

fn segmenter(slot: &SharedSegmenter, path: &std::path::Path) -> Result<Arc<Segmenter>, String> {
    // Loading holds the lock, so two characters masked together compile the model once.
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((p, s)) = guard.as_ref() {
        if p == path {
            return Ok(s.clone());
        }
    }
    let loaded = Arc::new(Segmenter::load(path).map_err(|e| e.to_string())?);
    *guard = Some((path.to_path_buf(), loaded.clone()));
    Ok(loaded)
}

/// Starts masking a character's photo unless it is already running; the model's absence is reported at once.
pub(crate) fn request(app: &mut StoryApp, id: CharacterId) {
    let Some(c) = app.doc.character(id) else { return };
    let photo = c.photo.join(&app.root);
    let model = match find_segmentation_model(&app.models_dir()) {
        Ok(m) => m,
        Err(e) => {
            app.set_error(e.to_string());
            return;
        }
    };
    if app.auto_mask.is_running(id) {
        return;
    }
    let (ticket, stage, cancelled) = app.auto_mask.start(id);
    let slot = app.auto_mask.model.clone();
    let started = app.inbox.spawn("auto-mask", move || {
        let result = (|| {
            let seg = segmenter(&slot, &model)?;
            let decoded = crate::imaging::load_image_file(&photo).map_err(|e| e.to_string())?;
            if cancelled.load(Ordering::Relaxed) {
                return Err("cancelled".to_string());
            }
            let rgb = image::DynamicImage::ImageRgba8(decoded.rgba).to_rgb8();
            let progress = |s: SegmentStage| stage.store(AutoMaskStage::from(s) as u8, Ordering::Relaxed);
            seg.mask(&rgb, &progress).map_err(|e| e.to_string())
        })();
        TaskResult::AutoMask(AutoMaskDone { character: id, ticket, result })
    });
    match started {
        Ok(()) => app.set_status("Auto mask: segmenting the photo on the CPU…".into()),
        Err(e) => {
            app.auto_mask.cancel(id);
            app.set_error(format!("Could not start the auto mask: {e}"));
        }
    }
}

/// Applies a finished mask as one undo step (or reports why there is none).
pub(crate) fn handle(app: &mut StoryApp, done: AutoMaskDone) {
    let id = done.character;
    if !app.auto_mask.finish(id, done.ticket) {
        return; // cancelled (the artist has moved on): dropped without a word
    }
    let Some(c) = app.doc.character(id) else { return };
    let mask = match done.result {
        Ok(m) => m,
        Err(e) => {
            app.set_error(format!("Auto mask failed: {e}"));
            return;
        }
    };
    if mask.size() != c.mask.size() {
        app.set_error(format!(
            "Auto mask: the photo is {}×{} but the character's mask is {}×{}; the photo changed on disk?",
            mask.width(),
            mask.height(),
            c.mask.width(),
            c.mask.height()
        ));
        return;
    }
    let rect = PixelRect { x: 0, y: 0, w: mask.width(), h: mask.height() };
    let before = c.mask.extract(rect);
    let name = c.name.clone();
    app.edit(Edit::MaskPatch { id, rect, before, after: mask.data().to_vec() });
    app.set_status(format!("Auto mask made for {name}: refine it with the brush (Ctrl+Z to undo)"));
}

/// Cancels a character's running auto mask: the mask stays as it is, a late result is dropped.
pub(crate) fn cancel(app: &mut StoryApp, id: CharacterId) {
    if app.auto_mask.cancel(id) {
        app.set_status("Auto mask cancelled: the mask is unchanged.".into());
    }
}

/// "Keep clicked person": the mask reduced to the connected region under `point` (photo pixels), one undo step.
pub(crate) fn keep_region(app: &mut StoryApp, id: CharacterId, point: [f32; 2]) {
    let Some(c) = app.doc.character(id) else { return };
    let (x, y) = (point[0].max(0.0) as u32, point[1].max(0.0) as u32);
    let Some(kept) = crate::imaging::segment::keep_region_at(&c.mask, x, y) else {
        app.set_error("Click inside the masked person to keep only them.".into());
        return;
    };
    let rect = PixelRect { x: 0, y: 0, w: kept.width(), h: kept.height() };
    let edit = Edit::MaskPatch { id, rect, before: c.mask.extract(rect), after: kept.data().to_vec() };
    app.edit(edit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_awaited_run_of_a_character_is_applied() {
        let mut st = AutoMaskState::default();
        let (a, b) = (CharacterId(1), CharacterId(2));
        let (t1, _, flag1) = st.start(a);
        let (t2, _, _) = st.start(b);
        assert!(st.is_running(a) && st.is_running(b));
        // Cancelling tells the worker to stop and stops awaiting it: its late result is dropped.
        assert!(st.cancel(a));
        assert!(flag1.load(Ordering::Relaxed));
        assert!(!st.is_running(a));
        assert!(!st.finish(a, t1));
        assert!(!st.cancel(a), "nothing left to cancel");
        // A new run for the same character is awaited under a new ticket; the cancelled one never matches it.
        let (t3, _, flag3) = st.start(a);
        assert_ne!(t3, t1);
        assert!(!st.finish(a, t1));
        assert!(st.is_running(a) && !flag3.load(Ordering::Relaxed));
        assert!(st.finish(a, t3));
        assert!(!st.is_running(a));
        // The other character's run was untouched.
        assert!(st.finish(b, t2));
        assert!(!st.is_busy());
    }
}
