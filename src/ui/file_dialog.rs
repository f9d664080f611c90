//! File dialogs behind a trait: the app calls them on a background thread (rfd can block), and
//! tests substitute scripted answers (they must never open a real dialog).

use std::path::PathBuf;

pub trait FileDialog: Send + Sync {
    /// Photos to import (PNG, JPEG, WebP); `None` when cancelled.
    fn pick_photos(&self) -> Option<Vec<PathBuf>>;
    /// A project folder to open or create; `None` when cancelled.
    fn pick_folder(&self, title: &str) -> Option<PathBuf>;
    /// One file of the given kind (`filter`: label and extensions); `None` when cancelled.
    fn pick_file(&self, _title: &str, _filter: (&str, &[&str])) -> Option<PathBuf> {
        None
    }
}

/// The platform dialogs (xdg-portal / zenity on Linux, native elsewhere) through rfd.
pub struct NativeDialogs;

impl FileDialog for NativeDialogs {
    fn pick_photos(&self) -> Option<Vec<PathBuf>> {
        rfd::FileDialog::new()
            .set_title("Import reference photos")
            .add_filter("Images", &["png", "jpg", "jpeg", "webp"])
            .pick_files()
    }

    fn pick_folder(&self, title: &str) -> Option<PathBuf> {
        rfd::FileDialog::new().set_title(title).pick_folder()
    }

    fn pick_file(&self, title: &str, filter: (&str, &[&str])) -> Option<PathBuf> {
        rfd::FileDialog::new().set_title(title).add_filter(filter.0, filter.1).pick_file()
    }
}

/// No dialogs available (headless runs): every request answers "cancelled".
pub struct NoDialogs;

impl FileDialog for NoDialogs {
    fn pick_photos(&self) -> Option<Vec<PathBuf>> {
        None
    }

    fn pick_folder(&self, _title: &str) -> Option<PathBuf> {
        None
    }
}
