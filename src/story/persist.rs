//! A project on disk: a folder with `project.json` and `assets/` (photos copied in, masks,
//! generated images).
//!
//! Saving is atomic (temp file + fsync + rename + directory fsync): a crash or a full disk leaves
//! the previous version intact. Loading validates everything before handing the project to the
//! UI and never writes, so a malformed or newer file is reported and left untouched.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use thiserror::Error;

use super::assets::{AssetError, AssetPath};
use super::migrate;
use super::project::{Project, FORMAT_VERSION};
use crate::imaging::Mask;

pub const PROJECT_FILE: &str = "project.json";

#[derive(Debug, Error)]
pub enum ProjectError {
    #[error("{0} is not a StoryMaker project folder (no project.json)")]
    NotAProject(PathBuf),
    #[error("could not read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid project file: {detail}")]
    Malformed { path: PathBuf, detail: String },
    #[error(
        "{path} was saved by a newer StoryMaker Studio (format version {found}; this version reads up to {supported}). \
         Update the application to open it; the file was not changed."
    )]
    NewerVersion { path: PathBuf, found: u32, supported: u32 },
    #[error("{path} cannot be upgraded: {detail}")]
    Migration { path: PathBuf, detail: String },
    #[error("project asset problem: {0}")]
    Asset(#[from] AssetError),
    #[error("mask {path} is unreadable or has the wrong size: {detail}")]
    BadMask { path: String, detail: String },
}

/// Writes `bytes` to `path` atomically. `before_rename` runs after the temp file is complete and
/// synced; tests use it to simulate a crash at the worst moment.
pub fn atomic_write_with(
    path: &Path,
    bytes: &[u8],
    before_rename: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        before_rename()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable. Not every platform can open a directory; that is fine.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    atomic_write_with(path, bytes, || Ok(()))
}

/// Encodes a mask as an 8-bit greyscale PNG.
pub fn encode_mask_png(mask: &Mask) -> Result<Vec<u8>, image::ImageError> {
    let mut out = Vec::new();
    mask.to_gray().write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)?;
    Ok(out)
}

/// Saves the project into `root` (created if needed). Masks first, `project.json` last, so a
/// crash in between leaves a consistent older project.json.
pub fn save_project(root: &Path, project: &Project) -> Result<(), ProjectError> {
    save_project_with(root, project, || Ok(()))
}

/// [`save_project`] with a hook run just before `project.json` is renamed into place.
pub fn save_project_with(
    root: &Path,
    project: &Project,
    before_rename: impl FnOnce() -> std::io::Result<()>,
) -> Result<(), ProjectError> {
    fs::create_dir_all(root.join("assets"))
        .map_err(|source| ProjectError::Write { path: root.join("assets"), source })?;
    for c in &project.characters {
        let path = c.mask_file.resolve_for_write(root)?;
        let png = encode_mask_png(&c.mask)
            .map_err(|e| ProjectError::Write { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
        // Skip rewriting identical masks: saves are frequent (autosave) and masks large.
        if fs::read(&path).map(|old| old == png).unwrap_or(false) {
            continue;
        }
        atomic_write(&path, &png).map_err(|source| ProjectError::Write { path, source })?;
    }
    let mut json = serde_json::to_vec_pretty(project)
        .map_err(|e| ProjectError::Malformed { path: root.join(PROJECT_FILE), detail: e.to_string() })?;
    json.push(b'\n');
    let path = root.join(PROJECT_FILE);
    if let Ok(meta) = fs::symlink_metadata(&path) {
        if meta.file_type().is_symlink() {
            return Err(AssetError::Escapes(PROJECT_FILE.into()).into());
        }
    }
    atomic_write_with(&path, &json, before_rename).map_err(|source| ProjectError::Write { path, source })
}

/// Reads and validates a project. Never writes anything.
pub fn load_project(root: &Path) -> Result<Project, ProjectError> {
    let path = root.join(PROJECT_FILE);
    if !path.is_file() {
        return Err(ProjectError::NotAProject(root.to_path_buf()));
    }
    let bytes = fs::read(&path).map_err(|source| ProjectError::Read { path: path.clone(), source })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ProjectError::Malformed { path: path.clone(), detail: e.to_string() })?;
    let version = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| ProjectError::Malformed { path: path.clone(), detail: "no format_version".into() })?;
    let version = u32::try_from(version).unwrap_or(u32::MAX);
    if version > FORMAT_VERSION {
        return Err(ProjectError::NewerVersion { path, found: version, supported: FORMAT_VERSION });
    }
    let value =
        migrate::upgrade(value, version).map_err(|detail| ProjectError::Migration { path: path.clone(), detail })?;
    let mut project: Project = serde_json::from_value(value)
        .map_err(|e| ProjectError::Malformed { path: path.clone(), detail: e.to_string() })?;
    validate(&path, &mut project)?;
    for p in &project.panels {
        for slot in &p.cast {
            if let Some(cloth) = &slot.cloth {
                cloth.resolve_existing(root)?;
            }
        }
    }
    for c in &mut project.characters {
        c.photo.resolve_existing(root)?;
        let mask_path = c.mask_file.resolve_existing(root)?;
        let bad = |detail: String| ProjectError::BadMask { path: c.mask_file.to_string(), detail };
        let img = image::open(&mask_path).map_err(|e| bad(e.to_string()))?.to_luma8();
        if img.dimensions() != (c.photo_size[0], c.photo_size[1]) {
            return Err(bad(format!(
                "mask is {}x{}, photo is {}x{}",
                img.width(),
                img.height(),
                c.photo_size[0],
                c.photo_size[1]
            )));
        }
        c.mask = Arc::new(Mask::from_gray(img));
    }
    for p in &project.panels {
        for v in &p.variants {
            v.image.resolve_existing(root)?;
        }
    }
    Ok(project)
}

/// Structural checks serde can't express; fixes only harmless things (out-of-range pose points).
fn validate(path: &Path, project: &mut Project) -> Result<(), ProjectError> {
    let bad = |detail: String| ProjectError::Malformed { path: path.to_path_buf(), detail };
    let mut ids = HashSet::new();
    let mut max_id = 0;
    for c in &project.characters {
        if !ids.insert(c.id.0) {
            return Err(bad(format!("duplicate id {}", c.id.0)));
        }
        max_id = max_id.max(c.id.0);
        if c.photo_size[0] == 0 || c.photo_size[1] == 0 {
            return Err(bad(format!("character “{}” has an empty photo size", c.name)));
        }
    }
    let characters: HashSet<u64> = project.characters.iter().map(|c| c.id.0).collect();
    let bad_lora = |l: &super::panel::StyleLoraRef| {
        bad(format!("style LoRA “{}” (weight {}) is not a plain file name with a weight in [-4, 4]", l.file, l.weight))
    };
    if let Some(l) = project.settings.style_loras.iter().find(|l| !l.is_valid()) {
        return Err(bad_lora(l));
    }
    for p in &mut project.panels {
        if !ids.insert(p.id.0) {
            return Err(bad(format!("duplicate id {}", p.id.0)));
        }
        max_id = max_id.max(p.id.0);
        if p.cast.len() > super::MAX_CAST {
            return Err(bad(format!(
                "a panel has {} characters; at most {} are supported",
                p.cast.len(),
                super::MAX_CAST
            )));
        }
        if let Some(l) = p.style_loras.iter().flatten().find(|l| !l.is_valid()) {
            return Err(bad_lora(l));
        }
        for slot in &mut p.cast {
            if !characters.contains(&slot.character.0) {
                return Err(bad(format!("a panel refers to character {} which is not in the cast", slot.character.0)));
            }
            if let Some(s) = slot.pose.take() {
                slot.pose = Some(s.normalized());
            }
            if let Some(b) = slot.blend {
                if !characters.contains(&b.with.0) {
                    return Err(bad(format!("a panel blends with character {} which is not in the cast", b.with.0)));
                }
                if !b.weight.is_finite() {
                    return Err(bad("a character blend weight is not a number".into()));
                }
                slot.blend = Some(super::panel::CharacterBlend { weight: b.weight.clamp(0.0, 1.0), ..b });
            }
        }
        if let Some(i) = p.chosen {
            if i >= p.variants.len() {
                p.chosen = None;
            }
        }
        p.params = p.params.clone().sanitized();
    }
    project.next_id = project.next_id.max(max_id + 1);
    Ok(())
}

/// Finds a free `assets/<sub>/<stem>.<ext>` name.
pub fn unique_asset(root: &Path, sub: &str, stem: &str, ext: &str) -> Result<AssetPath, AssetError> {
    for n in 0u32.. {
        let name = if n == 0 { format!("assets/{sub}/{stem}.{ext}") } else { format!("assets/{sub}/{stem}-{n}.{ext}") };
        let p = AssetPath::new(&name)?;
        if !p.join(root).exists() {
            return Ok(p);
        }
    }
    Err(AssetError::Malformed(stem.into()))
}
