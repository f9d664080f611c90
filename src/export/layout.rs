//! The page layout shared by the PDF and PNG outputs: page size and orientation, margins, the
//! grid of panels (or a comic-strip row), gutters, where the title, captions and page numbers go.
//!
//! Everything is in PDF points (1/72 inch) with the origin at the top left of the page, y down
//! (krilla uses the same convention). The PNG output scales points to pixels by `dpi / 72`.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::text::LINE_HEIGHT;

/// Points per millimetre.
pub const PT_PER_MM: f32 = 72.0 / 25.4;

/// An axis-aligned rectangle in points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Rect {
    pub const fn new(x: f32, y: f32, w: f32, h: f32) -> Rect {
        Rect { x, y, w, h }
    }

    pub fn right(&self) -> f32 {
        self.x + self.w
    }

    pub fn bottom(&self) -> f32 {
        self.y + self.h
    }

    pub fn center(&self) -> [f32; 2] {
        [self.x + self.w / 2.0, self.y + self.h / 2.0]
    }

    /// Shrunk by `d` on every side (never below zero size).
    pub fn inset(&self, d: f32) -> Rect {
        let dx = d.min(self.w / 2.0);
        let dy = d.min(self.h / 2.0);
        Rect::new(self.x + dx, self.y + dy, self.w - 2.0 * dx, self.h - 2.0 * dy)
    }

    /// True when `other` lies inside this rectangle (with `eps` of slack).
    pub fn contains_rect(&self, other: &Rect, eps: f32) -> bool {
        other.x >= self.x - eps
            && other.y >= self.y - eps
            && other.right() <= self.right() + eps
            && other.bottom() <= self.bottom() + eps
    }

    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let x0 = self.x.max(other.x);
        let y0 = self.y.max(other.y);
        let x1 = self.right().min(other.right());
        let y1 = self.bottom().min(other.bottom());
        (x1 > x0 && y1 > y0).then(|| Rect::new(x0, y0, x1 - x0, y1 - y0))
    }

    pub fn overlaps(&self, other: &Rect) -> bool {
        self.intersect(other).is_some()
    }

    /// The largest rectangle of aspect `w / h` centred in this one.
    pub fn fit_aspect(&self, aspect: f32) -> Rect {
        if !(aspect.is_finite() && aspect > 0.0) || self.w <= 0.0 || self.h <= 0.0 {
            return *self;
        }
        let (w, h) = if self.w / self.h > aspect { (self.h * aspect, self.h) } else { (self.w, self.w / aspect) };
        Rect::new(self.x + (self.w - w) / 2.0, self.y + (self.h - h) / 2.0, w, h)
    }

    /// The smallest rectangle of aspect `w / h` centred on this one that covers it.
    pub fn cover_aspect(&self, aspect: f32) -> Rect {
        if !(aspect.is_finite() && aspect > 0.0) || self.w <= 0.0 || self.h <= 0.0 {
            return *self;
        }
        let (w, h) = if self.w / self.h > aspect { (self.w, self.w / aspect) } else { (self.h * aspect, self.h) };
        Rect::new(self.x + (self.w - w) / 2.0, self.y + (self.h - h) / 2.0, w, h)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum PageSize {
    /// 210 × 297 mm.
    A4,
    /// 8.5 × 11 in.
    Letter,
    /// Portrait width and height in millimetres.
    Custom { width_mm: f32, height_mm: f32 },
}

impl PageSize {
    /// Portrait size in points.
    pub fn portrait_points(self) -> (f32, f32) {
        match self {
            PageSize::A4 => (210.0 * PT_PER_MM, 297.0 * PT_PER_MM),
            PageSize::Letter => (612.0, 792.0),
            PageSize::Custom { width_mm, height_mm } => (width_mm * PT_PER_MM, height_mm * PT_PER_MM),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Orientation {
    Portrait,
    Landscape,
}

/// How panels are arranged on a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arrangement {
    /// `columns × rows` cells per page, in reading order.
    Grid { columns: u32, rows: u32 },
    /// One comic-strip row of `panels` per page, centred vertically.
    Strip { panels: u32 },
}

/// How a panel's image fills its frame when the shapes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AspectMode {
    /// The whole image is shown, with bands where the frame is wider or taller.
    Fit,
    /// The frame is covered; the image is cropped around its centre.
    Fill,
}

/// Everything that decides where things go on a page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutSettings {
    pub page: PageSize,
    pub orientation: Orientation,
    pub margin_mm: f32,
    pub gutter_mm: f32,
    pub arrangement: Arrangement,
    pub aspect: AspectMode,
    /// Shape (width / height) of the panel frames; `None`: frames fill their cells.
    pub frame_aspect: Option<f32>,
    /// The story title at the top of every page.
    pub title: bool,
    /// "Page n of m" at the bottom of every page.
    pub page_numbers: bool,
    /// Caption text under each panel.
    pub captions: bool,
    /// Panel numbers before the captions.
    pub panel_numbers: bool,
    /// Dialogue in speech bubbles on the panels.
    pub bubbles: bool,
    pub title_size_pt: f32,
    pub caption_size_pt: f32,
    /// Lines of caption room under each panel; longer captions are cut with "…".
    pub caption_lines: u32,
    pub bubble_size_pt: f32,
}

impl Default for LayoutSettings {
    fn default() -> Self {
        LayoutSettings {
            page: PageSize::A4,
            orientation: Orientation::Portrait,
            margin_mm: 12.0,
            gutter_mm: 6.0,
            arrangement: Arrangement::Grid { columns: 2, rows: 3 },
            aspect: AspectMode::Fit,
            frame_aspect: Some(1.0),
            title: true,
            page_numbers: true,
            captions: true,
            panel_numbers: true,
            bubbles: true,
            title_size_pt: 16.0,
            caption_size_pt: 9.0,
            caption_lines: 3,
            bubble_size_pt: 9.0,
        }
    }
}

#[derive(Debug, Error, Clone, PartialEq)]
pub enum LayoutError {
    #[error("the page size {0} × {1} mm is not usable (each side must be 50–2000 mm)")]
    PageSize(f32, f32),
    #[error("the grid needs at least one column and one row (at most 12 × 12)")]
    Grid,
    #[error("the margins and gutters leave no room for the panels; make them smaller or use fewer panels per page")]
    NoRoom,
    #[error("{0} must be a number in its range")]
    Invalid(&'static str),
}

/// One panel's place on a page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    /// The panel frame (image area, border drawn around it).
    pub frame: Rect,
    /// The caption area under the frame, when captions are on.
    pub caption: Option<Rect>,
}

/// The fixed parts of every page for given settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PageGeometry {
    /// Page width and height in points.
    pub size: (f32, f32),
    /// Area inside the margins.
    pub content: Rect,
    pub title: Option<Rect>,
    pub footer: Option<Rect>,
    /// Panel places in reading order.
    pub cells: Vec<Cell>,
}

impl PageGeometry {
    pub fn per_page(&self) -> usize {
        self.cells.len()
    }

    /// Pages needed for `panels` panels.
    pub fn page_count(&self, panels: usize) -> usize {
        panels.div_ceil(self.per_page().max(1))
    }
}

fn check(name: &'static str, v: f32, lo: f32, hi: f32) -> Result<f32, LayoutError> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(v)
    } else {
        Err(LayoutError::Invalid(name))
    }
}

/// Space between a frame and its caption.
const CAPTION_GAP: f32 = 3.0;

/// Computes the page geometry for `s`.
pub fn page_geometry(s: &LayoutSettings) -> Result<PageGeometry, LayoutError> {
    let (pw, ph) = s.page.portrait_points();
    let (wmm, hmm) = (pw / PT_PER_MM, ph / PT_PER_MM);
    if !(wmm.is_finite() && hmm.is_finite() && (50.0..=2000.0).contains(&wmm) && (50.0..=2000.0).contains(&hmm)) {
        return Err(LayoutError::PageSize(wmm, hmm));
    }
    let (w, h) = match s.orientation {
        Orientation::Portrait => (pw, ph),
        Orientation::Landscape => (ph, pw),
    };
    let margin = check("the margin", s.margin_mm, 0.0, 100.0)? * PT_PER_MM;
    let gutter = check("the gutter", s.gutter_mm, 0.0, 100.0)? * PT_PER_MM;
    let title_size = check("the title size", s.title_size_pt, 4.0, 72.0)?;
    let caption_size = check("the caption size", s.caption_size_pt, 4.0, 48.0)?;
    check("the bubble text size", s.bubble_size_pt, 4.0, 48.0)?;
    if let Some(a) = s.frame_aspect {
        check("the frame shape", a, 0.1, 10.0)?;
    }
    let content = Rect::new(margin, margin, w - 2.0 * margin, h - 2.0 * margin);
    if content.w <= 0.0 || content.h <= 0.0 {
        return Err(LayoutError::NoRoom);
    }
    let mut area = content;
    let title = s.title.then(|| {
        let r = Rect::new(area.x, area.y, area.w, title_size * LINE_HEIGHT);
        let used = r.h + gutter.max(title_size * 0.5);
        area = Rect::new(area.x, area.y + used, area.w, area.h - used);
        r
    });
    let footer = s.page_numbers.then(|| {
        let fh = footer_size(caption_size) * LINE_HEIGHT;
        let r = Rect::new(area.x, area.bottom() - fh, area.w, fh);
        let used = fh + gutter.max(4.0);
        area = Rect::new(area.x, area.y, area.w, area.h - used);
        r
    });
    let caption_h = if s.captions {
        CAPTION_GAP + check("the caption lines", s.caption_lines as f32, 1.0, 20.0)? * caption_size * LINE_HEIGHT
    } else {
        0.0
    };
    let (columns, rows, strip) = match s.arrangement {
        Arrangement::Grid { columns, rows } => (columns, rows, false),
        Arrangement::Strip { panels } => (panels, 1, true),
    };
    if !(1..=12).contains(&columns) || !(1..=12).contains(&rows) {
        return Err(LayoutError::Grid);
    }
    let cell_w = (area.w - gutter * (columns - 1) as f32) / columns as f32;
    let cell_h = (area.h - gutter * (rows - 1) as f32) / rows as f32;
    let frame_h_max = cell_h - caption_h;
    if cell_w < 12.0 || frame_h_max < 12.0 {
        return Err(LayoutError::NoRoom);
    }
    // Frames keep their shape inside the cell; a strip row takes the height its shape needs and
    // sits in the middle of the page.
    let frame_size = match s.frame_aspect {
        Some(a) => {
            let r = Rect::new(0.0, 0.0, cell_w, frame_h_max).fit_aspect(a);
            (r.w, r.h)
        }
        None if strip => (cell_w, frame_h_max.min(cell_w * 0.75)),
        None => (cell_w, frame_h_max),
    };
    let row_h = frame_size.1 + caption_h;
    let strip_top = area.y + (area.h - row_h).max(0.0) / 2.0;
    let mut cells = Vec::with_capacity((columns * rows) as usize);
    for r in 0..rows {
        for c in 0..columns {
            let cx = area.x + c as f32 * (cell_w + gutter);
            let cy = if strip { strip_top } else { area.y + r as f32 * (cell_h + gutter) };
            // Centre the frame horizontally in its cell; top-align it so captions line up.
            let frame = Rect::new(cx + (cell_w - frame_size.0) / 2.0, cy, frame_size.0, frame_size.1);
            let caption =
                s.captions.then(|| Rect::new(frame.x, frame.bottom() + CAPTION_GAP, frame.w, caption_h - CAPTION_GAP));
            cells.push(Cell { frame, caption });
        }
    }
    Ok(PageGeometry { size: (w, h), content, title, footer, cells })
}

/// Font size of the page numbers.
pub fn footer_size(caption_size: f32) -> f32 {
    (caption_size * 0.9).max(6.0)
}

/// Where the image goes for a frame: the whole image inside it (fit) or covering it (fill).
/// Drawing is clipped to the frame either way.
pub fn image_rect(frame: &Rect, image_size: (u32, u32), mode: AspectMode) -> Rect {
    let aspect = image_size.0.max(1) as f32 / image_size.1.max(1) as f32;
    match mode {
        AspectMode::Fit => frame.fit_aspect(aspect),
        AspectMode::Fill => frame.cover_aspect(aspect),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a4_two_by_three_fills_the_content_area() {
        let g = page_geometry(&LayoutSettings { frame_aspect: None, ..Default::default() }).unwrap();
        assert!((g.size.0 - 595.2756).abs() < 0.01 && (g.size.1 - 841.8898).abs() < 0.01);
        assert_eq!(g.cells.len(), 6);
        let margin = 12.0 * PT_PER_MM;
        let gutter = 6.0 * PT_PER_MM;
        assert!((g.cells[0].frame.x - margin).abs() < 1e-3);
        assert!((g.cells[1].frame.right() - (g.size.0 - margin)).abs() < 1e-3);
        assert!((g.cells[1].frame.x - g.cells[0].frame.right() - gutter).abs() < 1e-3);
        assert_eq!(g.page_count(7), 2);
    }
}
