//! `storymaker render PROJECT [--panels 1,3] [--variants N] --out DIR [--models DIR]`: the same
//! engine as the editor, without a window. Each image becomes a variant of its panel in the
//! project (saved atomically at the end) and is copied to `DIR/panel-<n>-<seed>.png`. A terminal
//! progress line shows the current step; the exit code is non-zero, with the reasons, when any
//! image failed.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::args::Args;
use crate::app_dirs::{AppPaths, AppSettings};
use crate::engine::build::{consecutive_seeds, job_for_panel, variant_for};
use crate::engine::{Engine, Event, JobId};
use crate::story::{load_project, save_project, PanelId, SeedChoice};

pub const HELP: &str = "storymaker render PROJECT [--panels 1,3,5] [--variants N] --out DIR [--models DIR]

Generates panels of a project without opening the editor. PROJECT is the project folder (or its
project.json). --panels takes 1-based panel numbers (default: every panel with a prompt);
--variants N makes N images per panel with consecutive seeds (from the panel's locked seed, else
from a seed derived from the clock). Images are added to the panels as variants (the project is
saved) and copied to DIR as panel-<number>-<seed>.png. --models defaults to the editor's models
folder.";

fn parse_panels(spec: &str, count: usize) -> anyhow::Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let n: usize = part.parse().with_context(|| format!("--panels: {part:?} is not a panel number"))?;
        anyhow::ensure!(n >= 1 && n <= count, "--panels: panel {n} does not exist (the story has {count})");
        out.push(n - 1);
    }
    Ok(out)
}

fn clock_seed() -> u64 {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    (n as u64 ^ (n >> 64) as u64) >> 1
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.has("help") || args.positional.is_empty() {
        println!("{HELP}");
        return Ok(());
    }
    let given = PathBuf::from(&args.positional[0]);
    let root = if given.is_file() { given.parent().map(Path::to_path_buf).unwrap_or_default() } else { given };
    let out_dir = PathBuf::from(args.require("out")?);
    let mut project = load_project(&root).with_context(|| format!("opening {}", root.display()))?;
    let models_dir = match args.get("models") {
        Some(m) => PathBuf::from(m),
        None => {
            let paths = AppPaths::platform().context("no home directory: pass --models")?;
            AppSettings::load(&paths).0.models_dir(&paths)
        }
    };
    let variants: usize = args.parse_or("variants", 1usize)?;
    anyhow::ensure!((1..=64).contains(&variants), "--variants must be 1 to 64");
    let indices = match args.get("panels") {
        Some(spec) => parse_panels(spec, project.panels.len())?,
        None => (0..project.panels.len()).filter(|&i| !project.panels[i].prompt.trim().is_empty()).collect(),
    };
    anyhow::ensure!(!indices.is_empty(), "no panel to render (write a prompt first)");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    let engine = Engine::start(Arc::new(|| {})).context("starting the generation worker")?;
    let mut pending: HashMap<JobId, (usize, PanelId)> = HashMap::new();
    let mut next = 0u64;
    for &i in &indices {
        let panel = &project.panels[i];
        let first = match panel.seed {
            SeedChoice::Fixed(s) => s,
            SeedChoice::Random => clock_seed(),
        };
        for seed in consecutive_seeds(first, variants) {
            let id = JobId(next);
            next += 1;
            let job = job_for_panel(&project, &root, panel.id, seed, id, models_dir.clone())
                .map_err(|e| anyhow::anyhow!("panel {}: {e}", i + 1))?;
            engine.submit(job);
            pending.insert(id, (i, panel.id));
        }
    }
    let total = pending.len();
    let made_from: HashMap<PanelId, crate::story::Panel> =
        indices.iter().map(|&i| (project.panels[i].id, project.panels[i].clone())).collect();
    let mut done = 0;
    let mut failures = Vec::new();
    let mut err = std::io::stderr();
    while !pending.is_empty() {
        for e in engine.poll() {
            match e {
                Event::Progress { job, step, total: steps, .. } => {
                    if let Some((i, _)) = pending.get(&job) {
                        let width = 30;
                        let filled = if steps > 0 { (step as usize * width) / steps as usize } else { 0 };
                        let _ = write!(
                            err,
                            "\r[{}/{}] panel {} [{}{}] step {step}/{steps}   ",
                            done + 1,
                            total,
                            i + 1,
                            "#".repeat(filled),
                            "-".repeat(width - filled)
                        );
                        let _ = err.flush();
                    }
                }
                Event::Status { job, message, .. } if pending.contains_key(&job) => {
                    let _ = writeln!(err, "\r{message}");
                }
                Event::Done { job, output, seed, models, scheduler, consistency, .. } => {
                    let Some((i, panel)) = pending.remove(&job) else { continue };
                    done += 1;
                    let v = variant_for(&root, &made_from[&panel], &output, seed, models, scheduler)
                        .map_err(anyhow::Error::msg)?;
                    let v = crate::story::Variant { consistency, ..v };
                    if let Some(c) = consistency {
                        let _ = writeln!(err, "\rpanel {}: face match with the cast {c:.2}", i + 1);
                    }
                    let copy = out_dir.join(format!("panel-{}-{seed}.png", i + 1));
                    std::fs::copy(&output, &copy).with_context(|| format!("copying to {}", copy.display()))?;
                    if let Some(p) = project.panels.iter_mut().find(|p| p.id == panel) {
                        p.variants.push(v);
                        p.chosen = Some(p.variants.len() - 1);
                    }
                    let _ = writeln!(err, "\rpanel {}: {}", i + 1, copy.display());
                }
                Event::Failed { job, reason, .. } => {
                    if let Some((i, _)) = pending.remove(&job) {
                        done += 1;
                        let _ = writeln!(err, "\rpanel {}: failed: {reason}", i + 1);
                        failures.push(format!("panel {}: {reason}", i + 1));
                    }
                }
                Event::Cancelled { job, .. } => {
                    if let Some((i, _)) = pending.remove(&job) {
                        failures.push(format!("panel {}: cancelled", i + 1));
                    }
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if done > failures.len() {
        save_project(&root, &project).with_context(|| format!("saving {}", root.display()))?;
    }
    println!("rendered {} of {total} images into {}", total - failures.len(), out_dir.display());
    anyhow::ensure!(failures.is_empty(), "{} of {total} images failed:\n  {}", failures.len(), failures.join("\n  "));
    Ok(())
}
