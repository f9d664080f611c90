//! The worker thread that owns the models and runs generation jobs.
//!
//! The UI sends immutable [`Job`] snapshots and receives [`Event`]s; it never touches a model.
//! The model pipeline lands with the SDXL/StoryMaker issues: until then a job checks the models
//! folder and fails with the real discovery message (never a fake image).

pub mod job;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

pub use job::{CharacterSnapshot, Event, Job, JobId};

use crate::weights;

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
        let worker = Worker { commands: cmd_rx, events: ev_tx, wake, cancel: cancel.clone(), queue: VecDeque::new() };
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
    fn drop(&mut self) {
        self.cancel_current.store(true, Ordering::SeqCst);
        let _ = self.commands.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    commands: Receiver<Command>,
    events: Sender<Event>,
    wake: Arc<dyn Fn() + Send + Sync>,
    cancel: Arc<AtomicBool>,
    queue: VecDeque<Job>,
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
            self.send(Event::Started { job: job.id, panel: job.panel });
            match self.generate(&job) {
                Ok(()) => {}
                Err(reason) => self.send(Event::Failed { job: job.id, panel: job.panel, reason }),
            }
        }
    }

    /// Runs one job. Model loading and denoising land with the pipeline issues; the checks
    /// below are the real first steps of that pipeline.
    fn generate(&mut self, job: &Job) -> Result<(), String> {
        let sdxl = weights::find_sdxl(&job.models_dir).map_err(|e| e.to_string())?;
        let location = match sdxl {
            weights::SdxlSource::Diffusers(p) | weights::SdxlSource::SingleFile(p) => p,
        };
        Err(format!(
            "SDXL was found at {}, but this build of StoryMaker Studio cannot generate images yet: \
             the SDXL/StoryMaker pipeline is not implemented in this version",
            location.display()
        ))
    }
}
