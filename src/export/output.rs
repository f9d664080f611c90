//! Writing an export's files all-or-nothing: each file goes to a hidden temporary name in the
//! target folder (written and synced), and only when every file is complete are they renamed to
//! their real names. An error or a cancel before that removes the temporaries, so no half-written
//! file (and no partial set of pages) ever appears under a target name.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::ExportError;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_name(folder: &Path, name: &str) -> PathBuf {
    folder.join(format!(".{name}.tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)))
}

pub(crate) struct Staged {
    folder: PathBuf,
    /// The first folder this export created (removed again when the export fails).
    created: Option<PathBuf>,
    /// (temporary, final) pairs.
    files: Vec<(PathBuf, PathBuf)>,
    committed: bool,
}

impl Staged {
    /// Prepares `folder` (created if missing) and checks early that files can be created there,
    /// so a read-only target fails before any work is done.
    pub(crate) fn new(folder: &Path) -> Result<Staged, ExportError> {
        let created = folder.ancestors().filter(|a| !a.as_os_str().is_empty() && !a.exists()).last();
        let created = created.map(Path::to_path_buf);
        let staged = Staged { folder: folder.to_path_buf(), created, files: Vec::new(), committed: false };
        fs::create_dir_all(folder).map_err(|source| ExportError::Write { path: folder.to_path_buf(), source })?;
        let probe = temp_name(folder, "storymaker-export-probe");
        let made = fs::OpenOptions::new().write(true).create_new(true).open(&probe);
        match made {
            Ok(f) => {
                drop(f);
                let _ = fs::remove_file(&probe);
            }
            // Dropping `staged` removes a folder made above.
            Err(source) => return Err(ExportError::Write { path: folder.to_path_buf(), source }),
        }
        Ok(staged)
    }

    /// Writes `bytes` for `path` (a file in the folder) under a temporary name.
    pub(crate) fn add(&mut self, path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = temp_name(&self.folder, &name);
        let result = (|| {
            let mut f = fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        match result {
            Ok(()) => {
                self.files.push((tmp, path.to_path_buf()));
                Ok(())
            }
            Err(source) => {
                let _ = fs::remove_file(&tmp);
                Err(ExportError::Write { path: path.to_path_buf(), source })
            }
        }
    }

    /// Renames every file into place and returns the final paths.
    pub(crate) fn commit(mut self) -> Result<Vec<PathBuf>, ExportError> {
        let mut done = Vec::with_capacity(self.files.len());
        for (tmp, path) in &self.files {
            if let Ok(meta) = fs::symlink_metadata(path) {
                if meta.is_dir() {
                    let source = std::io::Error::other("a folder of that name is in the way");
                    return Err(ExportError::Write { path: path.clone(), source });
                }
            }
            fs::rename(tmp, path).map_err(|source| ExportError::Write { path: path.clone(), source })?;
            done.push(path.clone());
        }
        if let Ok(d) = fs::File::open(&self.folder) {
            let _ = d.sync_all();
        }
        self.committed = true;
        Ok(done)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        for (tmp, _) in &self.files {
            let _ = fs::remove_file(tmp);
        }
        if let Some(dir) = &self.created {
            // Only empty folders go: remove_dir refuses anything else.
            let mut d = self.folder.clone();
            loop {
                if fs::remove_dir(&d).is_err() || d == *dir {
                    break;
                }
                match d.parent() {
                    Some(p) => d = p.to_path_buf(),
                    None => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_appears_until_commit_and_a_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("new/sub");
        let mut s = Staged::new(&out).unwrap();
        s.add(&out.join("a.png"), b"aaa").unwrap();
        assert!(!out.join("a.png").exists());
        drop(s);
        assert!(!dir.path().join("new").exists(), "the folders made for the export are removed again");

        let mut s = Staged::new(&out).unwrap();
        s.add(&out.join("a.png"), b"aaa").unwrap();
        s.add(&out.join("b.png"), b"bbb").unwrap();
        let files = s.commit().unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(fs::read(out.join("b.png")).unwrap(), b"bbb");
        let names: Vec<_> = fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporaries left: {names:?}");
    }
}
