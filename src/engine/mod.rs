//! The worker thread that owns the models and runs generation jobs.
//!
//! The UI sends immutable [`Job`] snapshots and receives [`Event`]s; it never touches a model.
//! A job with a cast runs StoryMaker (`pipeline::generate_story`: SDXL + the character adapter);
//! a job without one runs plain SDXL with the adapter neutralised.

pub mod build;
pub mod consistency;
pub mod job;
pub mod models;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

pub use job::{CharacterSnapshot, Event, Job, JobId};

use crate::pipeline::{generate, generate_story, SlotCondition, StepControl, Txt2ImgRequest};
use crate::sampling::SchedulerKind;

/// The reason string of a cancelled job (turned into `Event::Cancelled`).
const CANCELLED: &str = "cancelled";

enum Command {
    Submit(Job),
    /// Moves a queued job to the front (the artist is looking at that panel).
    Prioritize(JobId),
    Cancel(JobId),
    Shutdown,
}

/// Handle held by the UI. Dropping it stops the worker after the current step.
pub struct Engine {
    commands: Sender<Command>,
    events: Receiver<Event>,
    cancel_current: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the worker. `wake` is called after every event (the UI passes
    /// `egui::Context::request_repaint`).
    pub fn start(wake: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Engine> {
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let (ev_tx, ev_rx) = crossbeam_channel::unbounded();
        let cancel = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            commands: cmd_rx,
            events: ev_tx,
            wake,
            cancel: cancel.clone(),
            queue: VecDeque::new(),
            models: models::ModelCache::default(),
            faces: None,
            current: None,
        };
        let thread = std::thread::Builder::new().name("storymaker-engine".into()).spawn(move || worker.run())?;
        Ok(Engine { commands: cmd_tx, events: ev_rx, cancel_current: cancel, thread: Some(thread) })
    }

    pub fn submit(&self, job: Job) {
        let _ = self.commands.send(Command::Submit(job));
    }

    pub fn prioritize(&self, id: JobId) {
        let _ = self.commands.send(Command::Prioritize(id));
    }

    /// Cancels a queued or running job; a running one stops within one denoising step.
    pub fn cancel(&self, id: JobId) {
        let _ = self.commands.send(Command::Cancel(id));
    }

    /// Events received so far (non-blocking).
    pub fn poll(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }
}

impl Drop for Engine {
    /// Asks the worker to stop after the current step, without waiting: on the CPU one SDXL step
    /// can take minutes and quitting must not hang. Outputs are written atomically, so a worker
    /// ended by process exit leaves no half-written image.
    fn drop(&mut self) {
        self.cancel_current.store(true, Ordering::SeqCst);
        let _ = self.commands.send(Command::Shutdown);
        // Join only a worker that has already finished (idle or done), to reclaim it cleanly.
        if let Some(t) = self.thread.take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

struct Worker {
    commands: Receiver<Command>,
    events: Sender<Event>,
    wake: Arc<dyn Fn() + Send + Sync>,
    cancel: Arc<AtomicBool>,
    queue: VecDeque<Job>,
    models: models::ModelCache,
    /// Face models for the consistency score, per models folder (`Err`: not installed there).
    faces: Option<(std::path::PathBuf, Result<Arc<crate::face::analysis::FaceAnalyzer>, String>)>,
    /// The job being generated (a Cancel for it sets `cancel`).
    current: Option<JobId>,
}

impl Worker {
    fn send(&self, e: Event) {
        let _ = self.events.send(e);
        (self.wake)();
    }

    /// Applies a command; returns false on shutdown.
    fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Submit(job) => {
                self.send(Event::Queued { job: job.id, panel: job.panel });
                self.queue.push_back(job);
            }
            Command::Prioritize(id) => {
                if let Some(i) = self.queue.iter().position(|j| j.id == id) {
                    if let Some(job) = self.queue.remove(i) {
                        self.queue.push_front(job);
                    }
                }
            }
            Command::Cancel(id) => {
                if self.current == Some(id) {
                    self.cancel.store(true, Ordering::SeqCst);
                }
                if let Some(i) = self.queue.iter().position(|j| j.id == id) {
                    if let Some(job) = self.queue.remove(i) {
                        self.send(Event::Cancelled { job: job.id, panel: job.panel });
                    }
                }
            }
            Command::Shutdown => return false,
        }
        true
    }

    fn run(mut self) {
        loop {
            if self.queue.is_empty() {
                match self.commands.recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd) {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            while let Ok(cmd) = self.commands.try_recv() {
                if !self.handle(cmd) {
                    return;
                }
            }
            let Some(job) = self.queue.pop_front() else { continue };
            self.cancel.store(false, Ordering::SeqCst);
            self.current = Some(job.id);
            self.send(Event::Started { job: job.id, panel: job.panel });
            match self.generate(&job) {
                Ok(()) => {}
                Err(reason) if reason == CANCELLED => self.send(Event::Cancelled { job: job.id, panel: job.panel }),
                Err(reason) => {
                    if reason.contains("out of memory") || reason.contains("OUT_OF_MEMORY") {
                        // Release VRAM so the app keeps working; the next job reloads.
                        self.models.clear();
                    }
                    self.send(Event::Failed { job: job.id, panel: job.panel, reason })
                }
            }
            self.current = None;
        }
    }

    /// ArcFace similarity of the image's faces with the cast's identities, when buffalo_l is
    /// installed and the cast has identities (a missing face model only skips the score).
    fn consistency(&mut self, job: &Job, image: &image::RgbImage) -> Option<f32> {
        let ids: Vec<&[f32]> =
            job.cast.iter().filter_map(|c| c.face.as_ref().and_then(|f| f.identity.as_deref())).collect();
        if ids.is_empty() {
            return None;
        }
        if self.faces.as_ref().is_none_or(|(dir, _)| *dir != job.models_dir) {
            let loaded = crate::face::analysis::find_face_models(&job.models_dir)
                .map_err(|e| e.to_string())
                .and_then(|paths| crate::face::analysis::FaceAnalyzer::load(&paths).map_err(|e| e.to_string()))
                .map(Arc::new);
            self.faces = Some((job.models_dir.clone(), loaded));
        }
        let analyzer = self.faces.as_ref()?.1.as_ref().ok()?.clone();
        let faces = analyzer.analyze(image).ok()?;
        // The tiny test adapter's 32-value identities cannot be compared with 512-d ArcFace.
        consistency::consistency_score(&faces, &ids)
    }

    /// Runs one job: models (loaded once), SDXL generation with per-step progress and cancel,
    /// the PNG written atomically to the job's output path.
    fn generate(&mut self, job: &Job) -> Result<(), String> {
        let (device, dtype, notice) = models::choose_device();
        if let Some(n) = notice {
            self.send(Event::Status { job: job.id, panel: job.panel, message: n });
        }
        let (events, wake) = (self.events.clone(), self.wake.clone());
        let say = |message: String| {
            let _ = events.send(Event::Status { job: job.id, panel: job.panel, message });
            wake();
        };
        let loaded = self
            .models
            .get(&job.models_dir, &job.style_loras, &device, dtype, &mut |what| say(format!("Loading {what}…")))?;
        let mut slots = Vec::new();
        if !job.cast.is_empty() {
            loaded.ensure_adapter(&job.models_dir, &mut |what| say(format!("Loading {what}…")))?;
            for c in &job.cast {
                let (character, computed) = loaded.embedding(c)?;
                if computed {
                    say(format!("Prepared {} (face, crop, CLIP features)", c.name));
                }
                let blend = match &c.blend {
                    Some((other, w)) => Some((loaded.embedding(other)?.0, *w)),
                    None => None,
                };
                slots.push(SlotCondition { character, id_only: c.id_only, blend });
            }
        }
        // Pose guidance only when a cast member has a pose: otherwise the ControlNet is not even loaded.
        let poses: Vec<&crate::pose::Skeleton> =
            job.cast.iter().filter_map(|c| c.pose.as_ref()).filter(|s| s.visible_count() > 0).collect();
        let pose_image = if poses.is_empty() {
            None
        } else {
            loaded.ensure_controlnet(&job.models_dir, &mut |what| say(format!("Loading {what}…")))?;
            let (w, h) = (job.params.width, job.params.height);
            Some(crate::pose::render::render_pose(&poses, w, h, job.pose_style))
        };
        let control = match (&pose_image, &loaded.controlnet) {
            (Some(img), Some((_, model))) => {
                let image = crate::models::controlnet::conditioning_image(
                    img.as_raw(),
                    img.width() as usize,
                    img.height() as usize,
                    &loaded.sdxl.device,
                )
                .map_err(|e| e.to_string())?;
                let guidance = crate::models::controlnet::ControlGuidance::new(
                    f64::from(job.params.pose_scale),
                    0.0,
                    f64::from(job.params.pose_end),
                )
                .map_err(|e| e.to_string())?;
                Some(crate::pipeline::Control { model, image, guidance })
            }
            _ => None,
        };
        let models = &loaded.sdxl;
        let req = Txt2ImgRequest {
            prompt: job.prompt.clone(),
            negative_prompt: job.negative_prompt.clone(),
            seed: job.seed,
            width: job.params.width as usize,
            height: job.params.height as usize,
            steps: job.params.steps as usize,
            guidance: job.params.guidance as f64,
            scheduler: SchedulerKind::UniPc,
        };
        let cancel = self.cancel.clone();
        let commands = self.commands.clone();
        let mut pending = Vec::new();
        let scales = (job.params.ip_scale, job.params.lora_scale);
        let mut on_step = |info: crate::pipeline::StepInfo| {
            let _ = events.send(Event::Progress {
                job: job.id,
                panel: job.panel,
                step: info.step as u32,
                total: info.total as u32,
            });
            // The x0 prediction shows the final picture early; the latents are noisy until the end.
            if let Ok(frame) =
                crate::pipeline::preview::LatentFrame::from_tensor(info.pred_original.unwrap_or(info.latents))
            {
                let image = Arc::new(frame.to_rgb());
                let _ = events.send(Event::Preview { job: job.id, panel: job.panel, image, latents: Arc::new(frame) });
            }
            wake();
            // A Cancel for this job may be waiting in the command channel.
            while let Ok(cmd) = commands.try_recv() {
                match cmd {
                    Command::Cancel(id) if id == job.id => cancel.store(true, Ordering::SeqCst),
                    other => pending.push(other),
                }
            }
            if cancel.load(Ordering::SeqCst) {
                StepControl::Cancel
            } else {
                StepControl::Continue
            }
        };
        let generated = match &loaded.adapter {
            Some(adapter) => generate_story(models, adapter, &req, &slots, scales, control.as_ref(), &mut on_step),
            None => generate(models, &req, &mut on_step),
        };
        let mut record = vec![format!("sdxl:{}", models.source.display())];
        for (path, w) in &models.style_loras {
            record.push(format!("style-lora:{}@{w}", path.display()));
        }
        if let (Some(_), Some((path, _))) = (&control, &loaded.controlnet) {
            record.push(format!("controlnet-openpose:{}", path.display()));
            record.push(format!("pose: scale {} until {}", job.params.pose_scale, job.params.pose_end));
        }
        if let (Some(a), false) = (&loaded.adapter, slots.is_empty()) {
            record.push(format!("storymaker:{}", a.files().adapter.display()));
            record.push(format!("clip-vision:{}", a.files().image_encoder.display()));
            record.push(format!("scales: ip {} lora {}", scales.0, scales.1));
        }
        for cmd in pending {
            // Submissions/prioritisations that arrived during the job; a Shutdown ends the loop later.
            if !self.handle(cmd) {
                self.queue.clear();
            }
        }
        let generated = match generated {
            Ok(g) => g,
            Err(crate::pipeline::PipelineError::Cancelled) => return Err(CANCELLED.into()),
            Err(e) => return Err(e.to_string()),
        };
        let mut png = Vec::new();
        generated
            .image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| format!("could not encode the image: {e}"))?;
        if let Some(dir) = job.output.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        }
        crate::story::persist::atomic_write(&job.output, &png)
            .map_err(|e| format!("could not save {}: {e}", job.output.display()))?;
        let consistency = self.consistency(job, &generated.image);
        self.send(Event::Done {
            job: job.id,
            panel: job.panel,
            output: job.output.clone(),
            seed: job.seed,
            consistency,
            models: record,
            scheduler: SchedulerKind::UniPc.name().into(),
        });
        Ok(())
    }
}
