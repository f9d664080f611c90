//! Exporting the storyboard: PDF pages (krilla: vector text in the bundled font, images at full
//! resolution) and PNG sheets or single panels, both drawn from the same page description.
//!
//! The flow is one way: [`layout`] decides where things go on a page, [`scene`] turns panels
//! into a list of drawing items for one page (images, frames, captions, [`bubbles`]), and
//! [`pdf`] / [`png`] draw those items. [`export`] runs the whole thing; it is meant for a
//! background thread (it reports progress and can be cancelled) and writes its files atomically:
//! on any error (no permission, disk full, missing image) no file is left under a target name.

pub mod bubbles;
pub mod layout;
mod output;
pub mod pdf;
pub mod png;
pub mod scene;
pub mod text;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use layout::{Arrangement, AspectMode, LayoutError, LayoutSettings, Orientation, PageSize, Rect};
pub use scene::{Page, PanelOnPage};

use crate::story::{PanelId, Project};

/// Which panels to export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PanelChoice {
    All,
    /// These panels, in story order.
    Only(Vec<PanelId>),
    /// Panels `first..=last`, numbered from 1 as in the timeline.
    Range {
        first: usize,
        last: usize,
    },
}

/// What to do about a panel whose image file is gone or unreadable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissingImages {
    /// Stop with an error naming the panel and the file.
    Fail,
    /// Export anyway; the panel is drawn as "Image missing" with the file's name.
    Mark,
}

/// How images are stored in the PDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PdfImages {
    /// As they are: JPEG files byte for byte, PNG and WebP losslessly, at full resolution.
    Original,
    /// Non-JPEG images re-encoded as JPEG at this quality (1–100) for a smaller file.
    Jpeg { quality: u8 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportSettings {
    pub layout: LayoutSettings,
    pub panels: PanelChoice,
    pub missing_images: MissingImages,
    pub pdf_images: PdfImages,
    /// Resolution of PNG sheets (and of panels without an image), in dots per inch.
    pub dpi: u32,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            layout: LayoutSettings::default(),
            panels: PanelChoice::All,
            missing_images: MissingImages::Fail,
            pdf_images: PdfImages::Original,
            dpi: 150,
        }
    }
}

/// The export choices remembered between sessions (application settings): output kind, layout, text, images,
/// resolution. Which panels, the folder and the file name belong to a project and are not kept here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportPrefs {
    pub format: ExportFormat,
    pub settings: ExportSettings,
    /// The JPEG quality last chosen, kept while "store as JPEG" is off.
    pub jpeg_quality: u8,
}

/// Highest PNG resolution offered (an A4 sheet at 600 dpi is about 5000 × 7000 pixels).
pub const MAX_DPI: u32 = 600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExportFormat {
    /// One PDF file.
    Pdf,
    /// One PNG per page.
    PngSheets,
    /// One PNG per panel, at the image's own resolution.
    PngPanels { bubbles: bool },
}

/// Where the files go: `folder/name.pdf`, `folder/name-page-01.png`, `folder/name-panel-03.png`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportTarget {
    pub folder: PathBuf,
    /// Base file name without extension (no folder separators).
    pub name: String,
}

impl ExportTarget {
    /// The files an export in `format` writes for `pages` pages and the panel `numbers`.
    pub fn files(&self, format: ExportFormat, pages: usize, numbers: &[usize]) -> Vec<PathBuf> {
        match format {
            ExportFormat::Pdf => vec![self.folder.join(format!("{}.pdf", self.name))],
            ExportFormat::PngSheets => {
                (1..=pages).map(|p| self.folder.join(format!("{}-page-{p:02}.png", self.name))).collect()
            }
            ExportFormat::PngPanels { .. } => {
                numbers.iter().map(|n| self.folder.join(format!("{}-panel-{n:02}.png", self.name))).collect()
            }
        }
    }
}

/// A file-name-safe version of a story title (letters, digits, `-`, `_`; never empty).
pub fn file_name_for(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_alphanumeric() || c == '-' || c == '_' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
        if out.chars().count() >= 60 {
            break;
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "storyboard".into()
    } else {
        out
    }
}

/// How far an export is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub stage: String,
}

/// What an export produced.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    pub files: Vec<PathBuf>,
    pub pages: usize,
    pub panels: usize,
    /// Things the artist may want to fix (cut captions, marked panels).
    pub warnings: Vec<String>,
}

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("there are no panels to export")]
    NoPanels,
    #[error("the panel range {first}–{last} is not in the story (it has {count} panels)")]
    BadRange { first: usize, last: usize, count: usize },
    #[error("page layout: {0}")]
    Layout(#[from] LayoutError),
    #[error("panel {panel}: its image {path} is missing ({reason})")]
    MissingImage { panel: usize, path: String, reason: String },
    #[error("panel {panel}: its image {path} cannot be read: {reason}")]
    BadImage { panel: usize, path: String, reason: String },
    #[error("the bundled font could not be used: {0}")]
    Font(String),
    #[error("the resolution must be 10–{MAX_DPI} dpi (got {0})")]
    Dpi(u32),
    #[error("the file name “{0}” is not usable (empty, or it contains a folder separator)")]
    FileName(String),
    #[error("the page is too large to draw at this resolution ({0} × {1} pixels)")]
    TooLarge(u32, u32),
    #[error("could not create the PDF: {0}")]
    Pdf(String),
    #[error("could not encode {what}: {reason}")]
    Encode { what: String, reason: String },
    #[error("could not write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("the export was cancelled")]
    Cancelled,
}

impl From<text::FontError> for ExportError {
    fn from(e: text::FontError) -> Self {
        ExportError::Font(e.to_string())
    }
}

/// The project's panels chosen by `choice`, as indices in story order.
pub fn chosen_panels(project: &Project, choice: &PanelChoice) -> Result<Vec<usize>, ExportError> {
    let count = project.panels.len();
    let chosen: Vec<usize> = match choice {
        PanelChoice::All => (0..count).collect(),
        PanelChoice::Only(ids) => (0..count).filter(|&i| ids.contains(&project.panels[i].id)).collect(),
        PanelChoice::Range { first, last } => {
            if *first < 1 || first > last || *last > count {
                return Err(ExportError::BadRange { first: *first, last: *last, count });
            }
            (first - 1..*last).collect()
        }
    };
    if chosen.is_empty() {
        return Err(ExportError::NoPanels);
    }
    Ok(chosen)
}

fn check_cancel(cancel: &AtomicBool) -> Result<(), ExportError> {
    if cancel.load(Ordering::Relaxed) {
        Err(ExportError::Cancelled)
    } else {
        Ok(())
    }
}

/// Exports the chosen panels of `project` (its files under `root`) as `format` into `target`.
///
/// Runs on the calling thread; call it from a worker. `progress` is called after each page or
/// panel; setting `cancel` stops the export before the next one. On any error nothing is left
/// under the target names (files already there stay as they were).
pub fn export(
    project: &Project,
    root: &Path,
    settings: &ExportSettings,
    format: ExportFormat,
    target: &ExportTarget,
    progress: &mut dyn FnMut(Progress),
    cancel: &AtomicBool,
) -> Result<ExportReport, ExportError> {
    if target.name.trim().is_empty() || target.name.contains(['/', '\\']) || target.name.starts_with('.') {
        return Err(ExportError::FileName(target.name.clone()));
    }
    if format != ExportFormat::Pdf && !(10..=MAX_DPI).contains(&settings.dpi) {
        return Err(ExportError::Dpi(settings.dpi));
    }
    let geometry = layout::page_geometry(&settings.layout)?;
    let chosen = chosen_panels(project, &settings.panels)?;
    let numbers: Vec<usize> = chosen.iter().map(|i| i + 1).collect();
    let pages = geometry.page_count(chosen.len());
    let files = target.files(format, pages, &numbers);
    let mut staged = output::Staged::new(&target.folder)?;
    let mut builder = scene::PageBuilder::new(project, root, settings, &geometry, &chosen)?;
    let total = match format {
        ExportFormat::PngPanels { .. } => chosen.len(),
        _ => pages,
    };
    let mut report = |done: usize, stage: String| progress(Progress { done, total, stage });
    report(0, "Starting".into());
    match format {
        ExportFormat::Pdf => {
            let mut doc = pdf::PdfWriter::new(&project.title)?;
            for p in 0..pages {
                check_cancel(cancel)?;
                let page = builder.page(p, scene::ImageUse::Pdf(settings.pdf_images))?;
                doc.add_page(&page)?;
                report(p + 1, format!("Page {} of {pages}", p + 1));
            }
            check_cancel(cancel)?;
            let bytes = doc.finish()?;
            staged.add(&files[0], &bytes)?;
        }
        ExportFormat::PngSheets => {
            for (p, file) in files.iter().enumerate() {
                check_cancel(cancel)?;
                let page = builder.page(p, scene::ImageUse::Raster)?;
                let bytes = png::encode(&png::render_page(&page, settings.dpi as f32)?)?;
                staged.add(file, &bytes)?;
                report(p + 1, format!("Page {} of {pages}", p + 1));
            }
        }
        ExportFormat::PngPanels { bubbles } => {
            let mut done = 0;
            for p in 0..pages {
                check_cancel(cancel)?;
                let page = builder.page(p, scene::ImageUse::Raster)?;
                for panel in &page.panels {
                    check_cancel(cancel)?;
                    let Some(i) = numbers.iter().position(|&n| n == panel.number) else { continue };
                    let image = png::render_panel(&page, panel, bubbles, settings.dpi as f32)?;
                    staged.add(&files[i], &png::encode(&image)?)?;
                    done += 1;
                    report(done, format!("Panel {} ({done} of {total})", panel.number));
                }
            }
        }
    }
    check_cancel(cancel)?;
    let files = staged.commit()?;
    Ok(ExportReport { files, pages, panels: chosen.len(), warnings: builder.into_warnings() })
}

/// Page `index` (from 0) of the export as it would be printed, drawn `width_px` pixels wide:
/// the export dialog's preview. Slow (it decodes the page's images): call it off the UI thread.
pub fn render_preview(
    project: &Project,
    root: &Path,
    settings: &ExportSettings,
    index: usize,
    width_px: u32,
) -> Result<(image::RgbaImage, usize), ExportError> {
    let geometry = layout::page_geometry(&settings.layout)?;
    let chosen = chosen_panels(project, &settings.panels)?;
    let pages = geometry.page_count(chosen.len());
    // The preview marks missing images rather than failing: the dialog lists them instead.
    let preview_settings = ExportSettings { missing_images: MissingImages::Mark, ..settings.clone() };
    let mut builder = scene::PageBuilder::new(project, root, &preview_settings, &geometry, &chosen)?;
    let page = builder.page(index.min(pages.saturating_sub(1)), scene::ImageUse::Raster)?;
    let dpi = (width_px.clamp(16, 4096) as f32 * 72.0 / page.size.0).clamp(2.0, MAX_DPI as f32);
    let pixmap = png::render_page(&page, dpi)?;
    Ok((png::to_rgba_image(&pixmap), pages))
}

/// Builds the pages of an export without writing anything (tests, tools).
pub fn build_pages(project: &Project, root: &Path, settings: &ExportSettings) -> Result<Vec<Page>, ExportError> {
    let geometry = layout::page_geometry(&settings.layout)?;
    let chosen = chosen_panels(project, &settings.panels)?;
    let mut builder = scene::PageBuilder::new(project, root, settings, &geometry, &chosen)?;
    (0..geometry.page_count(chosen.len())).map(|p| builder.page(p, scene::ImageUse::Raster)).collect()
}
