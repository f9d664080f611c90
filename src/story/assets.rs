//! Asset paths inside a project folder.
//!
//! A project may come from someone else, so every path in `project.json` is untrusted: it must
//! be relative, use only plain components (no `..`, no root, no drive prefix), and after
//! resolving symlinks it must still lie inside the project folder. Opening a project can then
//! never read or overwrite files elsewhere.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AssetError {
    #[error("asset path “{0}” must be relative to the project folder")]
    Absolute(String),
    #[error("asset path “{0}” leaves the project folder")]
    Escapes(String),
    #[error("asset path “{0}” is empty or malformed")]
    Malformed(String),
    #[error("asset “{0}” is missing from the project folder")]
    Missing(String),
}

/// A validated relative path such as `assets/photos/3-astronaut.png` (always `/`-separated).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AssetPath(String);

impl AssetPath {
    pub fn new(s: &str) -> Result<AssetPath, AssetError> {
        if s.is_empty() || s.contains('\0') || s.contains('\\') {
            return Err(AssetError::Malformed(s.to_string()));
        }
        let p = Path::new(s);
        if p.is_absolute() || s.starts_with('/') {
            return Err(AssetError::Absolute(s.to_string()));
        }
        for c in p.components() {
            match c {
                Component::Normal(_) => {}
                Component::CurDir => return Err(AssetError::Malformed(s.to_string())),
                Component::ParentDir => return Err(AssetError::Escapes(s.to_string())),
                Component::RootDir | Component::Prefix(_) => return Err(AssetError::Absolute(s.to_string())),
            }
        }
        // "C:foo" style drive-relative paths on Windows parse as Normal on Unix: reject colons.
        if s.contains(':') {
            return Err(AssetError::Absolute(s.to_string()));
        }
        Ok(AssetPath(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path under `root` without touching the disk (for writing new files).
    pub fn join(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// Resolves an existing asset, following symlinks, and checks it stays inside `root`.
    pub fn resolve_existing(&self, root: &Path) -> Result<PathBuf, AssetError> {
        let joined = self.join(root);
        let real = joined.canonicalize().map_err(|_| AssetError::Missing(self.0.clone()))?;
        let root_real = root.canonicalize().map_err(|_| AssetError::Missing(self.0.clone()))?;
        if !real.starts_with(&root_real) {
            return Err(AssetError::Escapes(self.0.clone()));
        }
        Ok(real)
    }

    /// Resolves a path to be written: its parent folder (created if needed) must resolve inside
    /// `root`, and an existing file there must not be a symlink.
    pub fn resolve_for_write(&self, root: &Path) -> Result<PathBuf, AssetError> {
        let joined = self.join(root);
        let parent = joined.parent().ok_or_else(|| AssetError::Malformed(self.0.clone()))?;
        std::fs::create_dir_all(parent).map_err(|_| AssetError::Missing(self.0.clone()))?;
        let parent_real = parent.canonicalize().map_err(|_| AssetError::Missing(self.0.clone()))?;
        let root_real = root.canonicalize().map_err(|_| AssetError::Missing(self.0.clone()))?;
        if !parent_real.starts_with(&root_real) {
            return Err(AssetError::Escapes(self.0.clone()));
        }
        let file_name = joined.file_name().ok_or_else(|| AssetError::Malformed(self.0.clone()))?;
        let target = parent_real.join(file_name);
        if let Ok(meta) = std::fs::symlink_metadata(&target) {
            if meta.file_type().is_symlink() {
                return Err(AssetError::Escapes(self.0.clone()));
            }
        }
        Ok(target)
    }
}

impl TryFrom<String> for AssetPath {
    type Error = AssetError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        AssetPath::new(&s)
    }
}

impl From<AssetPath> for String {
    fn from(p: AssetPath) -> String {
        p.0
    }
}

impl fmt::Display for AssetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Turns a user's file name into a safe, readable asset file name component.
pub fn sanitize_file_stem(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c.to_ascii_lowercase() } else { '-' })
        .take(40)
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "photo".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_escapes_and_absolute_paths() {
        assert!(AssetPath::new("assets/photos/a.png").is_ok());
        assert_eq!(AssetPath::new("../x.png"), Err(AssetError::Escapes("../x.png".into())));
        assert_eq!(AssetPath::new("assets/../../x"), Err(AssetError::Escapes("assets/../../x".into())));
        assert!(matches!(AssetPath::new("/etc/passwd"), Err(AssetError::Absolute(_))));
        assert!(matches!(AssetPath::new("C:/x"), Err(AssetError::Absolute(_))));
        assert!(matches!(AssetPath::new("a\\..\\b"), Err(AssetError::Malformed(_))));
        assert!(matches!(AssetPath::new(""), Err(AssetError::Malformed(_))));
        let parsed: Result<AssetPath, _> = serde_json::from_str("\"../../secret\"");
        assert!(parsed.is_err());
    }

    #[cfg(unix)]
    #[test]
    fn symlink_out_of_the_project_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.png"), b"x").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("assets")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.png"), root.path().join("assets/link.png")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("assets/dir")).unwrap();
        let p = AssetPath::new("assets/link.png").unwrap();
        assert!(matches!(p.resolve_existing(root.path()), Err(AssetError::Escapes(_))));
        assert!(matches!(p.resolve_for_write(root.path()), Err(AssetError::Escapes(_))));
        let d = AssetPath::new("assets/dir/new.png").unwrap();
        assert!(matches!(d.resolve_for_write(root.path()), Err(AssetError::Escapes(_))));
        assert_eq!(sanitize_file_stem("My Photo (1)"), "my-photo--1");
    }
}
