//! Text for the exported pages: the bundled font, shaping and line wrapping.
//!
//! Both outputs draw the glyphs shaped here (rustybuzz, the shaper krilla uses itself), at the
//! positions computed here, so a caption wraps at the same word in the PDF and in the PNG. The
//! font is DejaVu Sans (`assets/fonts/`, Bitstream Vera licence + public domain changes), chosen
//! for its wide coverage: krilla does no font fallback, so every glyph must come from this font.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use thiserror::Error;

/// DejaVu Sans 2.37 (see `assets/fonts/LICENSE-DejaVu.txt`).
pub static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Line height as a multiple of the font size.
pub const LINE_HEIGHT: f32 = 1.25;

/// Appended to text that was cut to fit.
pub const ELLIPSIS: &str = "…";

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("the bundled font could not be read")]
pub struct FontError;

/// Metrics of the bundled font, in em units (font units / units per em).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FontMetrics {
    pub units_per_em: f32,
    /// Height above the baseline (positive).
    pub ascender: f32,
    /// Depth below the baseline (negative).
    pub descender: f32,
}

/// The font's metrics, read once.
pub fn metrics() -> Result<FontMetrics, FontError> {
    static METRICS: OnceLock<Option<FontMetrics>> = OnceLock::new();
    METRICS
        .get_or_init(|| {
            let face = face().ok()?;
            let upem = face.units_per_em() as f32;
            Some(FontMetrics {
                units_per_em: upem,
                ascender: face.ascender() as f32 / upem,
                descender: face.descender() as f32 / upem,
            })
        })
        .ok_or(FontError)
}

/// One shaped glyph. Advances and offsets are in em units (multiply by the font size).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapedGlyph {
    pub id: u16,
    /// Byte offset of the glyph's cluster in the line's text.
    pub cluster: usize,
    pub x_advance: f32,
    pub x_offset: f32,
    pub y_offset: f32,
}

/// A line of text ready to draw: its text, glyphs and width (em units).
#[derive(Debug, Clone, PartialEq)]
pub struct ShapedLine {
    pub text: String,
    pub glyphs: Vec<ShapedGlyph>,
    pub width_em: f32,
}

impl ShapedLine {
    /// Width at `size` points.
    pub fn width(&self, size: f32) -> f32 {
        self.width_em * size
    }

    /// The byte range of `text` that glyph `i` stands for (its whole cluster), whatever the
    /// direction the shaper ordered the glyphs in.
    pub fn glyph_text_range(&self, i: usize) -> std::ops::Range<usize> {
        let start = self.glyphs[i].cluster.min(self.text.len());
        let end = self.glyphs.iter().map(|g| g.cluster).filter(|&c| c > start).min().unwrap_or(self.text.len());
        start..end.min(self.text.len())
    }
}

/// The font's shaping face, parsed once.
fn face() -> Result<&'static rustybuzz::Face<'static>, FontError> {
    static FACE: OnceLock<Option<rustybuzz::Face<'static>>> = OnceLock::new();
    FACE.get_or_init(|| rustybuzz::Face::from_slice(FONT_BYTES, 0)).as_ref().ok_or(FontError)
}

/// Shapes one line of text (no line breaks inside).
pub fn shape(text: &str) -> Result<ShapedLine, FontError> {
    let face = face()?;
    let upem = face.units_per_em() as f32;
    let mut buffer = rustybuzz::UnicodeBuffer::new();
    buffer.push_str(text);
    buffer.guess_segment_properties();
    let out = rustybuzz::shape(face, &[], buffer);
    let glyphs: Vec<ShapedGlyph> = out
        .glyph_infos()
        .iter()
        .zip(out.glyph_positions())
        .map(|(info, pos)| ShapedGlyph {
            id: u16::try_from(info.glyph_id).unwrap_or(0),
            cluster: info.cluster as usize,
            x_advance: pos.x_advance as f32 / upem,
            x_offset: pos.x_offset as f32 / upem,
            y_offset: pos.y_offset as f32 / upem,
        })
        .collect();
    let width_em = glyphs.iter().map(|g| g.x_advance).sum();
    Ok(ShapedLine { text: text.to_string(), glyphs, width_em })
}

/// Width of `text` on one line at `size` points. Widths are remembered per thread (line
/// breaking and bubble fitting measure the same words at many sizes).
pub fn measure(text: &str, size: f32) -> Result<f32, FontError> {
    thread_local! {
        static WIDTHS: RefCell<HashMap<String, f32>> = RefCell::new(HashMap::new());
    }
    if let Some(em) = WIDTHS.with(|w| w.borrow().get(text).copied()) {
        return Ok(em * size);
    }
    let em = shape(text)?.width_em;
    WIDTHS.with(|w| {
        let mut w = w.borrow_mut();
        if w.len() >= 20_000 {
            w.clear();
        }
        w.insert(text.to_string(), em);
    });
    Ok(em * size)
}

/// Text broken into lines that fit a width.
#[derive(Debug, Clone, PartialEq)]
pub struct Wrapped {
    pub lines: Vec<Arc<ShapedLine>>,
    /// True when text was left out (more lines than allowed); the last line then ends in "…".
    pub truncated: bool,
}

impl Wrapped {
    /// Width of the widest line at `size` points.
    pub fn width(&self, size: f32) -> f32 {
        self.lines.iter().map(|l| l.width(size)).fold(0.0, f32::max)
    }
}

/// Breaks `text` into lines no wider than `max_width` points at `size` points: at spaces, at
/// the text's own line breaks, and inside words longer than a line. At most `max_lines` lines
/// are kept; when text is left out the last line ends in an ellipsis.
pub fn wrap(text: &str, size: f32, max_width: f32, max_lines: usize) -> Result<Wrapped, FontError> {
    // Lines are first filled from word widths (fast); shaping every finished line checks them,
    // and in the rare case kerning across a space made one too wide, whole lines are measured.
    let quick = finish(break_lines(text, size, max_width, max_lines, false)?, size, max_width, max_lines)?;
    if quick.lines.iter().all(|l| l.width(size) <= max_width || !l.text.contains(' ')) {
        return Ok(quick);
    }
    finish(break_lines(text, size, max_width, max_lines, true)?, size, max_width, max_lines)
}

/// Greedy line breaking; stops once there are more than `max_lines` lines. `exact` measures each
/// candidate line by shaping it, otherwise word widths are added up.
fn break_lines(text: &str, size: f32, max_width: f32, max_lines: usize, exact: bool) -> Result<Vec<String>, FontError> {
    let mut lines: Vec<String> = Vec::new();
    let space = measure(" ", size)?;
    let fits = |s: &str| -> Result<bool, FontError> { Ok(measure(s, size)? <= max_width) };
    'paragraphs: for paragraph in text.lines() {
        let mut current = String::new();
        let mut current_w = 0.0;
        for word in paragraph.split_whitespace() {
            let word_w = measure(word, size)?;
            if !current.is_empty() {
                let candidate = format!("{current} {word}");
                let w = if exact { measure(&candidate, size)? } else { current_w + space + word_w };
                if w <= max_width {
                    current = candidate;
                    current_w = w;
                    continue;
                }
                lines.push(std::mem::take(&mut current));
                if lines.len() > max_lines {
                    break 'paragraphs;
                }
            }
            // The word starts a line; split it where it overflows.
            let mut rest = word;
            while !fits(rest)? {
                let cut = longest_fitting_prefix(rest, size, max_width)?;
                lines.push(rest[..cut].to_string());
                rest = &rest[cut..];
                if lines.len() > max_lines {
                    break 'paragraphs;
                }
            }
            current = rest.to_string();
            current_w = if rest.len() == word.len() { word_w } else { measure(rest, size)? };
        }
        if !current.is_empty() || paragraph.trim().is_empty() {
            lines.push(current);
        }
        if lines.len() > max_lines {
            break;
        }
    }
    Ok(lines)
}

/// Trims blank lines at the ends, cuts to `max_lines` (with "…") and shapes the lines.
fn finish(mut lines: Vec<String>, size: f32, max_width: f32, max_lines: usize) -> Result<Wrapped, FontError> {
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    while lines.first().is_some_and(|l| l.is_empty()) {
        lines.remove(0);
    }
    let truncated = lines.len() > max_lines;
    lines.truncate(max_lines);
    if truncated {
        if let Some(last) = lines.last_mut() {
            *last = with_ellipsis(last, size, max_width)?;
        }
    }
    let lines = lines.iter().map(|l| shape(l).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
    Ok(Wrapped { lines, truncated })
}

/// Byte length of the longest prefix of `word` (at least one character) that fits.
fn longest_fitting_prefix(word: &str, size: f32, max_width: f32) -> Result<usize, FontError> {
    let bounds: Vec<usize> = word.char_indices().map(|(i, _)| i).skip(1).chain([word.len()]).collect();
    let mut best = bounds.first().copied().unwrap_or(word.len());
    for &b in &bounds {
        if measure(&word[..b], size)? <= max_width {
            best = b;
        } else {
            break;
        }
    }
    Ok(best)
}

/// `line` shortened until it fits with "…" after it.
fn with_ellipsis(line: &str, size: f32, max_width: f32) -> Result<String, FontError> {
    let mut s = line.trim_end().to_string();
    loop {
        let candidate = format!("{s}{ELLIPSIS}");
        if s.is_empty() || measure(&candidate, size)? <= max_width {
            return Ok(candidate);
        }
        s.pop();
        let trimmed = s.trim_end().len();
        s.truncate(trimmed);
    }
}

/// Glyph outlines in em units (y up), for the PNG rasteriser.
pub fn glyph_outline(id: u16) -> Option<tiny_skia::Path> {
    struct Builder(tiny_skia::PathBuilder, f32);
    impl rustybuzz::ttf_parser::OutlineBuilder for Builder {
        fn move_to(&mut self, x: f32, y: f32) {
            self.0.move_to(x / self.1, y / self.1);
        }
        fn line_to(&mut self, x: f32, y: f32) {
            self.0.line_to(x / self.1, y / self.1);
        }
        fn quad_to(&mut self, x1: f32, y1: f32, x: f32, y: f32) {
            self.0.quad_to(x1 / self.1, y1 / self.1, x / self.1, y / self.1);
        }
        fn curve_to(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, x: f32, y: f32) {
            self.0.cubic_to(x1 / self.1, y1 / self.1, x2 / self.1, y2 / self.1, x / self.1, y / self.1);
        }
        fn close(&mut self) {
            self.0.close();
        }
    }
    let face = face().ok()?;
    let mut b = Builder(tiny_skia::PathBuilder::new(), face.units_per_em() as f32);
    face.outline_glyph(rustybuzz::ttf_parser::GlyphId(id), &mut b)?;
    b.0.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_spaces_and_within_the_width() {
        let text = "The quick brown fox jumps over the lazy dog and keeps running far away";
        let w = wrap(text, 10.0, 100.0, 20).unwrap();
        assert!(w.lines.len() >= 3, "{:?}", w.lines.iter().map(|l| &l.text).collect::<Vec<_>>());
        assert!(!w.truncated);
        for l in &w.lines {
            assert!(l.width(10.0) <= 100.0 + 1e-3, "{} is {} wide", l.text, l.width(10.0));
        }
        let joined: Vec<&str> = w.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(joined.join(" "), text);
    }

    #[test]
    fn long_words_are_split_and_overflow_gets_an_ellipsis() {
        let w = wrap(&"x".repeat(200), 10.0, 50.0, 3).unwrap();
        assert_eq!(w.lines.len(), 3);
        assert!(w.truncated);
        assert!(w.lines[2].text.ends_with(ELLIPSIS));
        assert!(w.lines.iter().all(|l| l.width(10.0) <= 50.0 + 1e-3));
    }

    #[test]
    fn keeps_line_breaks_and_shapes_glyphs() {
        let w = wrap("Eileen: Hi!\nLav: Hello.", 12.0, 500.0, 5).unwrap();
        assert_eq!(w.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["Eileen: Hi!", "Lav: Hello."]);
        let line = &w.lines[0];
        assert!(line.glyphs.iter().all(|g| g.id != 0), "every glyph is in the font");
        assert_eq!(line.glyph_text_range(0), 0..1);
        assert!(glyph_outline(line.glyphs[0].id).is_some());
        let m = metrics().unwrap();
        assert!(m.ascender > 0.5 && m.descender < 0.0);
    }
}
