//! One page of the storyboard as a list of drawing items, in points. The PDF and PNG outputs
//! draw exactly these items, so both show the same page.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::bubbles::{self, Seg};
use super::layout::{self, footer_size, Cell, PageGeometry, Rect};
use super::text::{self, ShapedLine, LINE_HEIGHT};
use super::{ExportError, ExportSettings, MissingImages, PdfImages};
use crate::imaging::decode::decode_image_bytes;
use crate::story::{Panel, Project};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

pub const INK: Rgb = Rgb(25, 25, 25);
pub const GREY: Rgb = Rgb(110, 110, 110);
pub const FRAME: Rgb = Rgb(60, 60, 60);
pub const PLACEHOLDER: Rgb = Rgb(236, 236, 236);
pub const PLACEHOLDER_LINES: Rgb = Rgb(200, 200, 200);
pub const WHITE: Rgb = Rgb(255, 255, 255);

/// Text shown on a panel that has no image yet.
pub const NOT_GENERATED: &str = "Not generated yet";
/// Text shown on a panel whose image file is missing (with [`MissingImages::Mark`]).
pub const IMAGE_MISSING: &str = "Image missing";

/// Pixels of a panel image, in the form the output needs.
pub enum ImagePixels {
    /// Decoded upright RGBA (PNG output).
    Rgba(image::RgbaImage),
    /// Ready to embed in a PDF.
    Pdf(krilla::image::Image),
}

pub struct SourceImage {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    pub pixels: ImagePixels,
}

impl std::fmt::Debug for SourceImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceImage({}, {}×{})", self.path.display(), self.width, self.height)
    }
}

#[derive(Debug)]
pub enum Item {
    Fill {
        segs: Vec<Seg>,
        colour: Rgb,
    },
    Stroke {
        segs: Vec<Seg>,
        colour: Rgb,
        width: f32,
    },
    /// The image drawn into `dest`, clipped to `clip`.
    Image {
        image: Arc<SourceImage>,
        dest: Rect,
        clip: Rect,
    },
    /// One line of text; `origin` is the start of its baseline.
    Text {
        origin: [f32; 2],
        size: f32,
        line: Arc<ShapedLine>,
        colour: Rgb,
    },
}

/// Where a panel landed on a page (for single-panel output and tests).
#[derive(Debug, Clone, PartialEq)]
pub struct PanelOnPage {
    /// Number in the story (from 1).
    pub number: usize,
    pub frame: Rect,
    /// Where the image is drawn (may extend past the frame in fill mode).
    pub image: Option<Rect>,
    /// Native pixel size of the image.
    pub image_pixels: Option<(u32, u32)>,
    pub bubble: Option<Rect>,
    pub caption_lines: Vec<String>,
    /// Range of `Page::items` drawn by the speech bubble.
    pub bubble_items: std::ops::Range<usize>,
}

#[derive(Debug)]
pub struct Page {
    /// Width and height in points.
    pub size: (f32, f32),
    pub items: Vec<Item>,
    pub panels: Vec<PanelOnPage>,
}

pub fn rect_segs(r: &Rect) -> Vec<Seg> {
    vec![
        Seg::MoveTo([r.x, r.y]),
        Seg::LineTo([r.right(), r.y]),
        Seg::LineTo([r.right(), r.bottom()]),
        Seg::LineTo([r.x, r.bottom()]),
        Seg::Close,
    ]
}

/// What the images are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageUse {
    Raster,
    Pdf(PdfImages),
}

enum ImageState {
    Ready(Arc<SourceImage>),
    NotGenerated,
    Missing { path: String },
}

/// Builds pages one at a time (so only one page's images are held decoded).
pub struct PageBuilder<'a> {
    project: &'a Project,
    root: PathBuf,
    settings: &'a ExportSettings,
    geometry: &'a PageGeometry,
    chosen: &'a [usize],
    warnings: Vec<String>,
    /// PDF images by file, shared between pages (cheap: krilla keeps the file's bytes).
    pdf_cache: HashMap<PathBuf, Arc<SourceImage>>,
    metrics: text::FontMetrics,
}

impl<'a> PageBuilder<'a> {
    pub fn new(
        project: &'a Project,
        root: &std::path::Path,
        settings: &'a ExportSettings,
        geometry: &'a PageGeometry,
        chosen: &'a [usize],
    ) -> Result<PageBuilder<'a>, ExportError> {
        Ok(PageBuilder {
            project,
            root: root.to_path_buf(),
            settings,
            geometry,
            chosen,
            warnings: Vec::new(),
            pdf_cache: HashMap::new(),
            metrics: text::metrics()?,
        })
    }

    pub fn into_warnings(self) -> Vec<String> {
        self.warnings
    }

    fn load_image(&mut self, number: usize, panel: &Panel, usage: ImageUse) -> Result<ImageState, ExportError> {
        let Some(variant) = panel.chosen_variant() else { return Ok(ImageState::NotGenerated) };
        let shown = variant.image.to_string();
        let missing = |reason: String| ExportError::MissingImage { panel: number, path: shown.clone(), reason };
        let path = match variant.image.resolve_existing(&self.root) {
            Ok(p) => p,
            Err(e) => return self.missing_or(missing(e.to_string()), &shown),
        };
        if let (ImageUse::Pdf(_), Some(hit)) = (usage, self.pdf_cache.get(&path)) {
            return Ok(ImageState::Ready(hit.clone()));
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => return self.missing_or(missing(e.to_string()), &shown),
        };
        let bad = |reason: String| ExportError::BadImage { panel: number, path: shown.clone(), reason };
        let decoded = match decode_image_bytes(&bytes) {
            Ok(d) => d,
            Err(e) => return self.missing_or(bad(e.to_string()), &shown),
        };
        let (width, height) = decoded.rgba.dimensions();
        let pixels = match usage {
            ImageUse::Raster => ImagePixels::Rgba(decoded.rgba),
            ImageUse::Pdf(mode) => {
                let pdf = super::pdf::embed_image(bytes, decoded, mode).map_err(bad)?;
                ImagePixels::Pdf(pdf)
            }
        };
        let image = Arc::new(SourceImage { path: path.clone(), width, height, pixels });
        if matches!(usage, ImageUse::Pdf(_)) {
            self.pdf_cache.insert(path, image.clone());
        }
        Ok(ImageState::Ready(image))
    }

    /// Warns (once) when `line` has characters the bundled font cannot draw: they print as boxes.
    fn check_glyphs(&mut self, what: &str, line: &ShapedLine) {
        let missing: String = line
            .glyphs
            .iter()
            .enumerate()
            .filter(|(_, g)| g.id == 0)
            .filter_map(|(i, _)| line.text.get(line.glyph_text_range(i)))
            .filter(|s| !s.trim().is_empty())
            .collect();
        if missing.is_empty() {
            return;
        }
        let msg = format!("{what} has characters the bundled font (DejaVu Sans) lacks; they print as boxes: {missing}");
        if !self.warnings.contains(&msg) {
            self.warnings.push(msg);
        }
    }

    fn missing_or(&mut self, err: ExportError, shown: &str) -> Result<ImageState, ExportError> {
        match self.settings.missing_images {
            MissingImages::Fail => Err(err),
            MissingImages::Mark => {
                self.warnings.push(err.to_string());
                Ok(ImageState::Missing { path: shown.to_string() })
            }
        }
    }

    /// Page `index` (from 0).
    pub fn page(&mut self, index: usize, usage: ImageUse) -> Result<Page, ExportError> {
        let g = self.geometry;
        let settings: &'a ExportSettings = self.settings;
        let s = &settings.layout;
        let per_page = g.per_page().max(1);
        let pages = g.page_count(self.chosen.len());
        let mut page = Page { size: g.size, items: Vec::new(), panels: Vec::new() };
        if let Some(r) = g.title {
            let w = text::wrap(&self.project.title, s.title_size_pt, r.w, 1)?;
            for line in w.lines {
                self.check_glyphs("the title", &line);
                let origin = [r.x, r.y + self.metrics.ascender * s.title_size_pt];
                page.items.push(Item::Text { origin, size: s.title_size_pt, line, colour: INK });
            }
        }
        if let Some(r) = g.footer {
            let size = footer_size(s.caption_size_pt);
            let line = Arc::new(text::shape(&format!("Page {} of {}", index + 1, pages))?);
            let origin = [r.x + (r.w - line.width(size)) / 2.0, r.y + self.metrics.ascender * size];
            page.items.push(Item::Text { origin, size, line, colour: GREY });
        }
        let chosen = self.chosen;
        let on_page = chosen.iter().skip(index * per_page).take(per_page);
        for (cell, &panel_index) in g.cells.iter().zip(on_page) {
            let project: &'a Project = self.project;
            let panel = &project.panels[panel_index];
            let number = panel_index + 1;
            let state = self.load_image(number, panel, usage)?;
            let placed = self.draw_panel(&mut page.items, cell, number, panel, state)?;
            page.panels.push(placed);
        }
        Ok(page)
    }

    fn draw_panel(
        &mut self,
        items: &mut Vec<Item>,
        cell: &Cell,
        number: usize,
        panel: &Panel,
        state: ImageState,
    ) -> Result<PanelOnPage, ExportError> {
        let settings: &'a ExportSettings = self.settings;
        let s = &settings.layout;
        let frame = cell.frame;
        let mut placed = PanelOnPage {
            number,
            frame,
            image: None,
            image_pixels: None,
            bubble: None,
            caption_lines: Vec::new(),
            bubble_items: 0..0,
        };
        items.push(Item::Fill { segs: rect_segs(&frame), colour: WHITE });
        match state {
            ImageState::Ready(image) => {
                let dest = layout::image_rect(&frame, (image.width, image.height), s.aspect);
                placed.image = Some(dest);
                placed.image_pixels = Some((image.width, image.height));
                items.push(Item::Image { image, dest, clip: frame });
            }
            ImageState::NotGenerated => self.placeholder(items, &frame, NOT_GENERATED, None)?,
            ImageState::Missing { path } => self.placeholder(items, &frame, IMAGE_MISSING, Some(&path))?,
        }
        if s.bubbles {
            let start = items.len();
            if let Some(b) = bubbles::layout_bubble(&frame, &panel.dialogue, panel.bubble.as_ref(), s.bubble_size_pt)? {
                if b.truncated {
                    self.warnings.push(format!("panel {number}: the dialogue was cut to fit its speech bubble"));
                }
                let outline = b.outline();
                items.push(Item::Fill { segs: outline.clone(), colour: WHITE });
                items.push(Item::Stroke { segs: outline, colour: INK, width: b.stroke });
                let origins = b.line_origins(self.metrics.ascender, self.metrics.descender);
                for (line, origin) in b.lines.iter().zip(origins) {
                    self.check_glyphs(&format!("panel {number}'s dialogue"), line);
                    items.push(Item::Text { origin, size: b.font_size, line: line.clone(), colour: INK });
                }
                placed.bubble = Some(b.bounds());
            } else if !panel.dialogue.trim().is_empty() {
                self.warnings.push(format!("panel {number}: the frame is too small for a speech bubble"));
            }
            placed.bubble_items = start..items.len();
        }
        items.push(Item::Stroke { segs: rect_segs(&frame), colour: FRAME, width: 0.75 });
        if let Some(area) = cell.caption {
            placed.caption_lines = self.caption(items, &area, number, panel)?;
        }
        Ok(placed)
    }

    /// The caption under a frame, with the panel number hanging in front. Returns its lines.
    fn caption(
        &mut self,
        items: &mut Vec<Item>,
        area: &Rect,
        number: usize,
        panel: &Panel,
    ) -> Result<Vec<String>, ExportError> {
        let settings: &'a ExportSettings = self.settings;
        let s = &settings.layout;
        let size = s.caption_size_pt;
        let lh = size * LINE_HEIGHT;
        let ascent = self.metrics.ascender * size;
        let mut x = area.x;
        if s.panel_numbers {
            let label = Arc::new(text::shape(&format!("{number}."))?);
            let w = label.width(size);
            items.push(Item::Text { origin: [x, area.y + ascent], size, line: label, colour: GREY });
            x += w + size * 0.4;
        }
        let width = (area.right() - x).max(size);
        let max_lines = ((area.h + 0.01) / lh).floor().max(1.0) as usize;
        let wrapped = text::wrap(&panel.caption, size, width, max_lines)?;
        if wrapped.truncated {
            self.warnings.push(format!("panel {number}: the caption was cut to fit {max_lines} line(s)"));
        }
        let mut lines = Vec::new();
        for (i, line) in wrapped.lines.into_iter().enumerate() {
            self.check_glyphs(&format!("panel {number}'s caption"), &line);
            lines.push(line.text.clone());
            let origin = [x, area.y + i as f32 * lh + ascent];
            items.push(Item::Text { origin, size, line, colour: INK });
        }
        Ok(lines)
    }

    /// A grey, crossed-out frame with a label, for panels that have no image to show.
    fn placeholder(
        &mut self,
        items: &mut Vec<Item>,
        frame: &Rect,
        label: &str,
        detail: Option<&str>,
    ) -> Result<(), ExportError> {
        items.push(Item::Fill { segs: rect_segs(frame), colour: PLACEHOLDER });
        let cross = vec![
            Seg::MoveTo([frame.x, frame.y]),
            Seg::LineTo([frame.right(), frame.bottom()]),
            Seg::MoveTo([frame.right(), frame.y]),
            Seg::LineTo([frame.x, frame.bottom()]),
        ];
        items.push(Item::Stroke { segs: cross, colour: PLACEHOLDER_LINES, width: 0.75 });
        let size = (self.settings.layout.caption_size_pt * 1.2).min(frame.w / 9.0).max(4.0);
        let small = size * 0.8;
        let mut rows: Vec<(Arc<ShapedLine>, f32)> =
            text::wrap(label, size, frame.w * 0.9, 2)?.lines.into_iter().map(|l| (l, size)).collect();
        if let Some(d) = detail {
            rows.extend(text::wrap(d, small, frame.w * 0.9, 3)?.lines.into_iter().map(|l| (l, small)));
        }
        let total: f32 = rows.iter().map(|(_, sz)| sz * LINE_HEIGHT).sum();
        let mut y = frame.center()[1] - total / 2.0;
        for (line, sz) in rows {
            let origin = [frame.center()[0] - line.width(sz) / 2.0, y + self.metrics.ascender * sz];
            y += sz * LINE_HEIGHT;
            items.push(Item::Text { origin, size: sz, line, colour: GREY });
        }
        Ok(())
    }
}
