//! The pose preset library: built-in presets (`assets/poses/*.json`, compiled in) and the
//! artist's own, saved as files of the same format (documented in `assets/poses/README.md`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Skeleton;

/// A named pose for one or more people.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PosePreset {
    pub name: String,
    /// One skeleton per person, as stored: 18 `[x, y]` or `null` each.
    pub people: Vec<Vec<Option<[f32; 2]>>>,
}

impl PosePreset {
    /// The people as normalised skeletons (exactly 18 keypoints, inside the panel).
    pub fn skeletons(&self) -> Vec<Skeleton> {
        self.people.iter().map(|k| Skeleton { keypoints: k.clone() }.normalized()).collect()
    }

    pub fn from_skeletons(name: &str, people: &[Skeleton]) -> PosePreset {
        PosePreset { name: name.to_string(), people: people.iter().map(|s| s.keypoints.clone()).collect() }
    }
}

#[derive(Debug, Error)]
pub enum PresetError {
    #[error("pose preset {path}: {detail}")]
    Bad { path: String, detail: String },
    #[error("could not save the pose preset {path}: {source}")]
    Save { path: String, source: std::io::Error },
}

macro_rules! builtin {
    ($($name:literal),* $(,)?) => {
        [$(($name, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/poses/", $name, ".json")))),*]
    };
}

const BUILTIN: [(&str, &str); 18] = builtin!(
    "standing",
    "walking",
    "running",
    "sitting",
    "kneeling",
    "lying",
    "waving",
    "pointing",
    "arms_crossed",
    "hands_on_hips",
    "looking_back",
    "jumping",
    "cheering",
    "thinking",
    "side_by_side",
    "facing_each_other",
    "hug",
    "handshake",
);

fn parse(label: &str, text: &str) -> Result<PosePreset, PresetError> {
    let bad = |detail: String| PresetError::Bad { path: label.to_string(), detail };
    let p: PosePreset = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    if p.people.is_empty() {
        return Err(bad("it has no people".into()));
    }
    if let Some(k) = p.people.iter().find(|k| k.len() != super::BODY18) {
        return Err(bad(format!("a person has {} keypoints; OpenPose body-18 needs 18", k.len())));
    }
    if p.people.iter().flatten().flatten().any(|v| !v[0].is_finite() || !v[1].is_finite()) {
        return Err(bad("a keypoint is not a number".into()));
    }
    Ok(p)
}

/// The built-in presets, in menu order.
pub fn builtin_presets() -> Vec<PosePreset> {
    // The files are ours and checked by a test; a broken one is skipped rather than crashing the UI.
    BUILTIN.iter().filter_map(|(name, text)| parse(name, text).ok()).collect()
}

/// The artist's presets in `dir` (every `*.json`), sorted by name; unreadable files are reported
/// in the second list and skipped.
pub fn user_presets(dir: &Path) -> (Vec<PosePreset>, Vec<String>) {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return (ok, errors) };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("json")))
        .collect();
    files.sort();
    for f in files {
        let label = f.display().to_string();
        match std::fs::read_to_string(&f).map_err(|e| PresetError::Bad { path: label.clone(), detail: e.to_string() }) {
            Ok(text) => match parse(&label, &text) {
                Ok(p) => ok.push(p),
                Err(e) => errors.push(e.to_string()),
            },
            Err(e) => errors.push(e.to_string()),
        }
    }
    ok.sort_by(|a, b| a.name.cmp(&b.name));
    (ok, errors)
}

/// Saves `preset` as `<dir>/<slug>.json` atomically (a new name if one exists) and returns the path.
pub fn save_user_preset(dir: &Path, preset: &PosePreset) -> Result<PathBuf, PresetError> {
    let slug: String = preset
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
        .collect::<String>()
        .trim_matches('_')
        .to_string();
    let slug = if slug.is_empty() { "pose".to_string() } else { slug };
    let path = (0..)
        .map(|n| if n == 0 { dir.join(format!("{slug}.json")) } else { dir.join(format!("{slug}-{n}.json")) })
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join(format!("{slug}.json")));
    let save_err = |source| PresetError::Save { path: path.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(save_err)?;
    let json = serde_json::to_vec_pretty(preset).map_err(|e| save_err(std::io::Error::other(e)))?;
    crate::story::persist::atomic_write(&path, &json).map_err(save_err)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_builtin_presets_parse_and_cover_the_issue_list() {
        assert_eq!(builtin_presets().len(), BUILTIN.len(), "every built-in file parses");
        let names: Vec<String> = builtin_presets().iter().map(|p| p.name.to_lowercase()).collect();
        for want in [
            "standing",
            "walking",
            "running",
            "sitting",
            "kneeling",
            "lying",
            "waving",
            "pointing",
            "arms crossed",
            "hands on hips",
            "looking back",
            "jumping",
        ] {
            assert!(names.iter().any(|n| n.contains(want)), "missing preset {want}");
        }
        let two = builtin_presets().iter().filter(|p| p.people.len() == 2).count();
        assert!(two >= 4, "at least four two-person presets, found {two}");
        assert!(builtin_presets().iter().all(|p| p.skeletons().iter().all(|s| s.visible_count() >= 12)));
    }

    #[test]
    fn user_presets_round_trip_and_bad_files_are_reported() {
        let d = tempfile::tempdir().unwrap();
        let p = PosePreset::from_skeletons("My Pose!", &builtin_presets()[0].skeletons());
        let path = save_user_preset(d.path(), &p).unwrap();
        assert!(path.ends_with("my_pose.json"));
        let second = save_user_preset(d.path(), &p).unwrap();
        assert_ne!(path, second, "an existing preset is not overwritten");
        std::fs::write(d.path().join("broken.json"), b"{\"name\": 3}").unwrap();
        let (ok, errors) = user_presets(d.path());
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].skeletons(), p.skeletons());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("broken.json"));
    }
}
