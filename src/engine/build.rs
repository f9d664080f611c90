//! Turning a panel of a project into an immutable [`Job`], and a finished job back into a
//! [`Variant`]: shared by the editor and `storymaker render`, so both generate the same thing.

use std::path::{Path, PathBuf};

use super::job::{CharacterSnapshot, Job, JobId};
use crate::story::persist::unique_asset;
use crate::story::{AssetPath, CastSlot, Character, Panel, PanelId, Project, Variant};

fn snapshot(root: &Path, c: &Character, slot: Option<&CastSlot>) -> CharacterSnapshot {
    CharacterSnapshot {
        id: c.id,
        name: c.name.clone(),
        photo: c.photo.join(root),
        crop: c.crop,
        mask: c.mask.clone(),
        face: c.face.clone(),
        pose: slot.and_then(|s| s.pose.clone()),
        id_only: slot.is_some_and(|s| s.id_only),
        cloth: slot.and_then(|s| s.cloth.as_ref()).map(|p| p.join(root)),
        blend: None,
    }
}

/// The job that generates `panel` with `seed`, its image going to a fresh
/// `assets/images/panel-<id>-<seed>.png` of the project at `root`.
pub fn job_for_panel(
    project: &Project,
    root: &Path,
    panel: PanelId,
    seed: u64,
    id: JobId,
    models_dir: PathBuf,
) -> Result<Job, String> {
    let p = project.panel(panel).ok_or("the panel no longer exists")?;
    if p.prompt.trim().is_empty() {
        return Err("write a prompt first".into());
    }
    let mut cast = Vec::new();
    for slot in &p.cast {
        let c = project.character(slot.character).ok_or("a cast member no longer exists")?;
        let mut snap = snapshot(root, c, Some(slot));
        if let Some(b) = slot.blend {
            let other = project.character(b.with).ok_or("the blended character no longer exists")?;
            snap.blend = Some((Box::new(snapshot(root, other, None)), b.weight));
        }
        cast.push(snap);
    }
    // The job id keeps two queued jobs with the same (locked) seed apart.
    let output = unique_asset(root, "images", &format!("panel-{}-{seed}-{}", panel.0, id.0), "png")
        .map_err(|e| e.to_string())?
        .join(root);
    Ok(Job {
        id,
        panel,
        prompt: p.prompt.clone(),
        negative_prompt: p.negative_prompt.clone(),
        seed,
        params: p.params.clone(),
        cast,
        models_dir,
        style_loras: p
            .style_loras
            .as_ref()
            .unwrap_or(&project.settings.style_loras)
            .iter()
            .map(|l| (l.file.clone(), l.weight))
            .collect(),
        pose_style: project.settings.pose_style,
        output,
    })
}

/// The variant recording a finished image: everything needed to reproduce it (`made_from` is the
/// panel as it was when the job was made).
pub fn variant_for(
    root: &Path,
    made_from: &Panel,
    output: &Path,
    seed: u64,
    models: Vec<String>,
    scheduler: String,
) -> Result<Variant, String> {
    let rel = output.strip_prefix(root).ok().and_then(|p| p.to_str()).map(|s| s.replace('\\', "/"));
    let image = rel
        .and_then(|r| AssetPath::new(&r).ok())
        .ok_or_else(|| format!("the generated image {} is outside the project folder", output.display()))?;
    Ok(Variant {
        image,
        prompt: made_from.prompt.clone(),
        negative_prompt: made_from.negative_prompt.clone(),
        seed,
        params: made_from.params.clone(),
        cast: made_from.cast.clone(),
        models,
        scheduler,
        consistency: None,
    })
}

/// `n` consecutive seeds from `first` (a locked seed gives `seed, seed+1, ...`).
pub fn consecutive_seeds(first: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| first.wrapping_add(i)).collect()
}
