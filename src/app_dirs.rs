//! Where the application keeps its own files (not the user's projects): settings, the recent
//! projects list, the default projects folder and the default models folder, under the
//! platform's directories (XDG on Linux, Application Support on macOS, AppData on Windows).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::story::persist::atomic_write;

#[derive(Debug, Clone)]
pub struct AppPaths {
    pub config_dir: PathBuf,
    pub data_dir: PathBuf,
}

impl AppPaths {
    /// The platform directories; `None` only when the OS reports no home directory.
    pub fn platform() -> Option<AppPaths> {
        let dirs = directories::ProjectDirs::from("org", "StoryMaker", "StoryMaker Studio")?;
        Some(AppPaths { config_dir: dirs.config_dir().to_path_buf(), data_dir: dirs.data_dir().to_path_buf() })
    }

    /// Everything under one folder (tests, portable installs).
    pub fn under(root: &Path) -> AppPaths {
        AppPaths { config_dir: root.join("config"), data_dir: root.join("data") }
    }

    pub fn settings_file(&self) -> PathBuf {
        self.config_dir.join("settings.json")
    }

    pub fn projects_dir(&self) -> PathBuf {
        self.data_dir.join("projects")
    }

    pub fn default_models_dir(&self) -> PathBuf {
        self.data_dir.join("models")
    }

    pub fn sample_project_dir(&self) -> PathBuf {
        self.projects_dir().join("Sample story")
    }
}

/// Application settings (not per project).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSettings {
    /// Most recent first.
    pub recent_projects: Vec<PathBuf>,
    /// `None`: the default models folder under the data dir.
    pub models_dir: Option<PathBuf>,
    /// 0 disables timed autosave (saving on quit still happens).
    pub autosave_minutes: u32,
    /// The export dialog's choices at the last export (`None` until the first).
    pub export: Option<crate::export::ExportPrefs>,
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings { recent_projects: Vec::new(), models_dir: None, autosave_minutes: 2, export: None }
    }
}

pub const MAX_RECENT: usize = 10;

impl AppSettings {
    /// Loads settings; a missing file gives defaults, a broken one gives defaults plus a
    /// warning (the broken file is kept aside as `settings.json.broken` for the user).
    pub fn load(paths: &AppPaths) -> (AppSettings, Option<String>) {
        let path = paths.settings_file();
        let Ok(bytes) = std::fs::read(&path) else { return (AppSettings::default(), None) };
        match serde_json::from_slice(&bytes) {
            Ok(s) => (s, None),
            Err(e) => {
                let aside = path.with_extension("json.broken");
                let _ = std::fs::rename(&path, &aside);
                (
                    AppSettings::default(),
                    Some(format!(
                        "Settings file was unreadable ({e}); using defaults. The old file is at {}",
                        aside.display()
                    )),
                )
            }
        }
    }

    pub fn save(&self, paths: &AppPaths) -> std::io::Result<()> {
        std::fs::create_dir_all(&paths.config_dir)?;
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        atomic_write(&paths.settings_file(), &json)
    }

    pub fn note_recent(&mut self, project: &Path) {
        self.recent_projects.retain(|p| p != project);
        self.recent_projects.insert(0, project.to_path_buf());
        self.recent_projects.truncate(MAX_RECENT);
    }

    pub fn models_dir(&self, paths: &AppPaths) -> PathBuf {
        self.models_dir.clone().unwrap_or_else(|| paths.default_models_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_and_broken_file_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let paths = AppPaths::under(dir.path());
        let mut s = AppSettings::default();
        for i in 0..12 {
            s.note_recent(Path::new(&format!("/p/{i}")));
        }
        s.note_recent(Path::new("/p/3"));
        assert_eq!(s.recent_projects.len(), MAX_RECENT);
        assert_eq!(s.recent_projects[0], Path::new("/p/3"));
        s.save(&paths).unwrap();
        assert_eq!(AppSettings::load(&paths), (s, None));
        std::fs::write(paths.settings_file(), b"{ nope").unwrap();
        let (loaded, warning) = AppSettings::load(&paths);
        assert_eq!(loaded, AppSettings::default());
        assert!(warning.unwrap().contains("unreadable"));
        assert!(paths.settings_file().with_extension("json.broken").exists());
    }
}
