//! Decoded images and their egui textures, loaded off the UI thread and cached by path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::background::{Inbox, TaskResult};

/// Largest side of the thumbnail textures (library and timeline).
const THUMB: u32 = 256;

pub enum ImageEntry {
    Loading,
    Ready { full: Arc<image::RgbaImage>, thumb: egui::TextureHandle },
    Failed(String),
}

#[derive(Default)]
pub struct ImageCache {
    entries: HashMap<PathBuf, ImageEntry>,
}

fn thumbnail_texture(ctx: &egui::Context, path: &Path, full: &image::RgbaImage) -> egui::TextureHandle {
    let (w, h) = full.dimensions();
    let scale = (THUMB as f32 / w.max(h).max(1) as f32).min(1.0);
    let (tw, th) = (((w as f32 * scale).round() as u32).max(1), ((h as f32 * scale).round() as u32).max(1));
    let small = image::imageops::thumbnail(full, tw, th);
    let img = egui::ColorImage::from_rgba_unmultiplied([tw as usize, th as usize], small.as_raw());
    ctx.load_texture(format!("thumb:{}", path.display()), img, egui::TextureOptions::LINEAR)
}

impl ImageCache {
    /// The entry for `path`, starting a background load the first time it is asked for.
    pub fn get(&mut self, inbox: &Inbox, path: &Path) -> &ImageEntry {
        if !self.entries.contains_key(path) {
            self.entries.insert(path.to_path_buf(), ImageEntry::Loading);
            let p = path.to_path_buf();
            let started = inbox.spawn("load-image", move || {
                let result = crate::imaging::load_image_file(&p).map(|d| Arc::new(d.rgba)).map_err(|e| e.to_string());
                TaskResult::ImageLoaded { path: p, result }
            });
            if let Err(e) = started {
                self.entries.insert(path.to_path_buf(), ImageEntry::Failed(format!("could not start loading: {e}")));
            }
        }
        // Present: inserted above.
        self.entries.get(path).unwrap_or(&ImageEntry::Loading)
    }

    pub fn insert(&mut self, ctx: &egui::Context, path: &Path, result: Result<Arc<image::RgbaImage>, String>) {
        let entry = match result {
            Ok(full) => {
                let thumb = thumbnail_texture(ctx, path, &full);
                ImageEntry::Ready { full, thumb }
            }
            Err(e) => ImageEntry::Failed(e),
        };
        self.entries.insert(path.to_path_buf(), entry);
    }

    /// True while any image is still being decoded.
    pub fn any_loading(&self) -> bool {
        self.entries.values().any(|e| matches!(e, ImageEntry::Loading))
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
