//! The values that cross between the UI and the worker: immutable snapshots in, events out.

use std::path::PathBuf;
use std::sync::Arc;

use crate::imaging::Mask;
use crate::pose::Skeleton;
use crate::story::{CharacterId, CropRect, FaceBox, GenParams, PanelId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub u64);

/// A cast member as the pipeline needs it, independent of later edits in the UI.
#[derive(Debug, Clone)]
pub struct CharacterSnapshot {
    pub id: CharacterId,
    pub name: String,
    /// Absolute path of the photo inside the project folder (already confined).
    pub photo: PathBuf,
    pub crop: CropRect,
    pub mask: Arc<Mask>,
    pub face: Option<FaceBox>,
    pub pose: Option<Skeleton>,
    /// Adapter modes of the panel's cast slot (spec §5.5).
    pub id_only: bool,
    /// Absolute path of the clothing image (clothing swap).
    pub cloth: Option<PathBuf>,
    /// Character interpolation: the other character and its weight.
    pub blend: Option<(Box<CharacterSnapshot>, f32)>,
}

/// Everything needed to generate one image.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub panel: PanelId,
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub params: GenParams,
    pub cast: Vec<CharacterSnapshot>,
    pub models_dir: PathBuf,
    /// Style LoRAs: file names inside `<models_dir>/loras/` with their weights.
    pub style_loras: Vec<(String, f32)>,
    /// How the cast's poses are drawn for the ControlNet.
    pub pose_style: crate::pose::render::PoseStyle,
    /// Where the finished image goes (inside the project's assets).
    pub output: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Queued {
        job: JobId,
        panel: PanelId,
    },
    Started {
        job: JobId,
        panel: PanelId,
    },
    /// A one-line notice while the job runs (model loading, CPU fallback).
    Status {
        job: JobId,
        panel: PanelId,
        message: String,
    },
    Progress {
        job: JobId,
        panel: PanelId,
        step: u32,
        total: u32,
    },
    /// The image forming: the step's predicted clean latents mapped to RGB (1/8 size).
    Preview {
        job: JobId,
        panel: PanelId,
        image: std::sync::Arc<image::RgbImage>,
        /// The same step's latents, for the GPU preview shader.
        latents: std::sync::Arc<crate::pipeline::preview::LatentFrame>,
    },
    /// The image is written to the job's `output`; everything needed to reproduce it is here.
    Done {
        job: JobId,
        panel: PanelId,
        output: PathBuf,
        seed: u64,
        /// Face match with the cast (0..1), when the face models are installed.
        consistency: Option<f32>,
        models: Vec<String>,
        scheduler: String,
    },
    Failed {
        job: JobId,
        panel: PanelId,
        reason: String,
    },
    Cancelled {
        job: JobId,
        panel: PanelId,
    },
}

impl Event {
    pub fn panel(&self) -> PanelId {
        match self {
            Event::Queued { panel, .. }
            | Event::Started { panel, .. }
            | Event::Status { panel, .. }
            | Event::Progress { panel, .. }
            | Event::Preview { panel, .. }
            | Event::Done { panel, .. }
            | Event::Failed { panel, .. }
            | Event::Cancelled { panel, .. } => *panel,
        }
    }
}
