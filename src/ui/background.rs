//! Results of work the UI sends off its thread (imports, saves, image loads, dialogs).

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::story::import::ImportedPhoto;
use crate::story::Project;

pub enum TaskResult {
    Imported {
        source: String,
        result: Result<ImportedPhoto, String>,
    },
    Saved {
        root: PathBuf,
        generation: u64,
        result: Result<(), String>,
    },
    Opened {
        root: PathBuf,
        result: Result<Project, String>,
    },
    ImageLoaded {
        path: PathBuf,
        result: Result<Arc<image::RgbaImage>, String>,
    },
    PhotosPicked(Vec<PathBuf>),
    /// Face data (`{id, kps}` torch pickle) read for a character; `None` when the dialog was cancelled.
    FaceData {
        character: crate::story::CharacterId,
        result: Option<Result<crate::face::FaceData, String>>,
    },
    FolderPicked {
        purpose: FolderPurpose,
        folder: PathBuf,
    },
    /// A storyboard export finished (or failed, or was cancelled).
    Exported {
        result: Result<crate::export::ExportReport, crate::export::ExportError>,
    },
    /// Face detection of a photo, or an identity at hand-placed keypoints (src/ui/face_panel.rs).
    Faces(super::face_panel::FaceTask),
    /// A person-segmentation mask for a character (src/ui/auto_mask.rs).
    AutoMask(super::auto_mask::AutoMaskDone),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderPurpose {
    Open,
    New,
    Models,
}

/// A channel whose sender wakes the UI when something arrives.
pub struct Inbox {
    tx: Sender<TaskResult>,
    rx: Receiver<TaskResult>,
    ctx: egui::Context,
}

#[derive(Clone)]
pub struct Outbox {
    tx: Sender<TaskResult>,
    ctx: egui::Context,
}

impl Outbox {
    pub fn send(&self, r: TaskResult) {
        let _ = self.tx.send(r);
        self.ctx.request_repaint();
    }
}

impl Inbox {
    pub fn new(ctx: egui::Context) -> Inbox {
        let (tx, rx) = crossbeam_channel::unbounded();
        Inbox { tx, rx, ctx }
    }

    pub fn outbox(&self) -> Outbox {
        Outbox { tx: self.tx.clone(), ctx: self.ctx.clone() }
    }

    pub fn drain(&self) -> Vec<TaskResult> {
        self.rx.try_iter().collect()
    }

    /// Runs `f` on a new thread and delivers its result. Fails only when the OS refuses a
    /// thread; the caller reports that to the user.
    pub fn spawn(&self, name: &str, f: impl FnOnce() -> TaskResult + Send + 'static) -> std::io::Result<()> {
        let out = self.outbox();
        std::thread::Builder::new().name(name.to_string()).spawn(move || out.send(f())).map(|_| ())
    }
}
