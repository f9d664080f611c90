//! Speech bubbles: an ellipse around the wrapped dialogue with a tail towards the speaker, kept
//! inside the panel frame whatever the placement says (placements come from project files and
//! may hold anything) and however long the dialogue is (the text gets smaller, then is cut).

use std::f32::consts::{FRAC_PI_2, SQRT_2};
use std::sync::Arc;

use super::layout::Rect;
use super::text::{self, FontError, ShapedLine, LINE_HEIGHT};
use crate::story::panel::BubblePlacement;

/// Smallest bubble text, in points, before the text is cut instead.
pub const MIN_BUBBLE_SIZE: f32 = 5.0;

/// One piece of an outline (points, y down).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Seg {
    MoveTo([f32; 2]),
    LineTo([f32; 2]),
    CubicTo([f32; 2], [f32; 2], [f32; 2]),
    Close,
}

/// A bubble laid out on its frame.
#[derive(Debug, Clone, PartialEq)]
pub struct BubbleLayout {
    pub center: [f32; 2],
    pub rx: f32,
    pub ry: f32,
    /// Tip of the tail, when the tail is drawn.
    pub tail: Option<[f32; 2]>,
    pub font_size: f32,
    pub lines: Vec<Arc<ShapedLine>>,
    /// True when dialogue was left out to fit.
    pub truncated: bool,
    /// Outline width in points.
    pub stroke: f32,
}

impl BubbleLayout {
    /// Bounding box of the ellipse, the tail and the outline's stroke.
    pub fn bounds(&self) -> Rect {
        let h = self.stroke / 2.0;
        let mut x0 = self.center[0] - self.rx - h;
        let mut y0 = self.center[1] - self.ry - h;
        let mut x1 = self.center[0] + self.rx + h;
        let mut y1 = self.center[1] + self.ry + h;
        if let Some([tx, ty]) = self.tail {
            // The miter at a sharp tip reaches past it; allow the stroke's miter limit.
            let m = self.stroke * 2.0;
            x0 = x0.min(tx - m);
            y0 = y0.min(ty - m);
            x1 = x1.max(tx + m);
            y1 = y1.max(ty + m);
        }
        Rect::new(x0, y0, x1 - x0, y1 - y0)
    }

    /// Baseline origins `(x, y)` of the text lines, centred in the ellipse.
    pub fn line_origins(&self, ascender: f32, descender: f32) -> Vec<[f32; 2]> {
        let lh = self.font_size * LINE_HEIGHT;
        let block = lh * self.lines.len() as f32;
        // Centre the ink (ascender to descender) of each line box.
        let ink = (ascender - descender) * self.font_size;
        let top = self.center[1] - block / 2.0;
        self.lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let x = self.center[0] - l.width(self.font_size) / 2.0;
                let y = top + i as f32 * lh + (lh - ink) / 2.0 + ascender * self.font_size;
                [x, y]
            })
            .collect()
    }

    /// The outline: the ellipse, opened where the tail leaves it, as one closed path.
    pub fn outline(&self) -> Vec<Seg> {
        let [cx, cy] = self.center;
        let (rx, ry) = (self.rx, self.ry);
        let at = |t: f32| [cx + rx * t.cos(), cy + ry * t.sin()];
        let d = |t: f32| [-rx * t.sin(), ry * t.cos()];
        // Elliptic arc from t0 to t1 (t1 > t0) in cubic pieces of at most 90°.
        let arc = |out: &mut Vec<Seg>, t0: f32, t1: f32| {
            let n = ((t1 - t0) / FRAC_PI_2).ceil().max(1.0) as usize;
            let step = (t1 - t0) / n as f32;
            let k = 4.0 / 3.0 * (step / 4.0).tan();
            for i in 0..n {
                let (a, b) = (t0 + step * i as f32, t0 + step * (i + 1) as f32);
                let (p0, p3, d0, d1) = (at(a), at(b), d(a), d(b));
                out.push(Seg::CubicTo(
                    [p0[0] + k * d0[0], p0[1] + k * d0[1]],
                    [p3[0] - k * d1[0], p3[1] - k * d1[1]],
                    p3,
                ));
            }
        };
        let mut out = Vec::new();
        match self.tail {
            Some([tx, ty]) => {
                // Parametric angle of the tail's direction, and the half-width of its base.
                let t = ((ty - cy) / ry).atan2((tx - cx) / rx);
                let half = 0.22;
                out.push(Seg::MoveTo(at(t + half)));
                arc(&mut out, t + half, t - half + std::f32::consts::TAU);
                out.push(Seg::LineTo([tx, ty]));
                out.push(Seg::Close);
            }
            None => {
                out.push(Seg::MoveTo(at(0.0)));
                arc(&mut out, 0.0, std::f32::consts::TAU);
                out.push(Seg::Close);
            }
        }
        out
    }
}

/// A placement with every value made usable: finite and inside the frame.
pub fn sanitize(p: &BubblePlacement) -> BubblePlacement {
    let d = BubblePlacement::default();
    let f = |v: f32, dv: f32, lo: f32, hi: f32| if v.is_finite() { v.clamp(lo, hi) } else { dv };
    BubblePlacement {
        center: [f(p.center[0], d.center[0], 0.0, 1.0), f(p.center[1], d.center[1], 0.0, 1.0)],
        tail: [f(p.tail[0], d.tail[0], 0.0, 1.0), f(p.tail[1], d.tail[1], 0.0, 1.0)],
        width: f(p.width, d.width, 0.2, 1.0),
    }
}

/// Air between the text and the outline, as a multiple of the font size.
const PAD: f32 = 0.6;

/// Text block shape (width / height) aimed for: comic bubbles are round-ish, not long slivers.
const BLOCK_ASPECT: f32 = 3.0;

/// Radii of the ellipse around a `w` × `h` text block at `font_size`. The block's corners lie on
/// the ellipse of radii (w/√2, h/√2); the padding keeps them inside.
fn radii(w: f32, h: f32, font_size: f32) -> (f32, f32) {
    let pad = PAD * font_size;
    ((w / SQRT_2 + pad).max(font_size * 1.5), h / SQRT_2 + pad)
}

/// The dialogue wrapped for an ellipse of radii at most `max_rx` × `max_ry`, at `size` points or
/// smaller (cut with "…" at the smallest size), with the font size used. `None` when not even
/// one line fits.
fn fit_text(
    dialogue: &str,
    size: f32,
    max_rx: f32,
    max_ry: f32,
) -> Result<Option<(text::Wrapped, f32, f32)>, FontError> {
    let mut font_size = size.max(MIN_BUBBLE_SIZE);
    loop {
        let pad = PAD * font_size;
        let max_text_w = (max_rx - pad) * SQRT_2;
        let max_text_h = (max_ry - pad) * SQRT_2;
        let lh = font_size * LINE_HEIGHT;
        if max_text_w > 0.0 && max_text_h >= lh {
            let max_lines = (max_text_h / lh).floor() as usize;
            // Aim for a block about BLOCK_ASPECT times wider than tall, never narrower than a word.
            let one_line = text::measure(&dialogue.split_whitespace().collect::<Vec<_>>().join(" "), font_size)?;
            let mut word = 0.0f32;
            for w in dialogue.split_whitespace() {
                word = word.max(text::measure(w, font_size)?);
            }
            let target = (one_line * lh * BLOCK_ASPECT).sqrt().max(word).min(max_text_w);
            let mut w = text::wrap(dialogue, font_size, target, max_lines)?;
            if w.truncated && target < max_text_w {
                w = text::wrap(dialogue, font_size, max_text_w, max_lines)?;
            }
            let fits = w.width(font_size) <= max_text_w && w.lines.len() as f32 * lh <= max_text_h;
            if fits && !w.lines.is_empty() && (!w.truncated || font_size <= MIN_BUBBLE_SIZE) {
                return Ok(Some((w, font_size, max_rx)));
            }
        }
        if font_size <= MIN_BUBBLE_SIZE {
            return Ok(None);
        }
        font_size = (font_size - 0.5).max(MIN_BUBBLE_SIZE);
    }
}

/// Lays out `dialogue` in a bubble on `frame`, starting at `size` points. `None` when there is
/// no dialogue or the frame is too small to hold any bubble.
pub fn layout_bubble(
    frame: &Rect,
    dialogue: &str,
    placement: Option<&BubblePlacement>,
    size: f32,
) -> Result<Option<BubbleLayout>, FontError> {
    if dialogue.trim().is_empty() {
        return Ok(None);
    }
    let p = sanitize(&placement.copied().unwrap_or_default());
    let pad = (frame.w.min(frame.h) * 0.03).clamp(1.5, 8.0);
    let room = frame.inset(pad);
    if room.w < 16.0 || room.h < 10.0 {
        return Ok(None);
    }
    let stroke = (size * 0.09).clamp(0.5, 1.2);
    let max_ry = room.h / 2.0 - stroke;
    // As wide as the placement asks; up to the frame's width when the dialogue does not fit.
    let narrow = fit_text(dialogue, size, (p.width * frame.w).min(room.w) / 2.0 - stroke, max_ry)?;
    let fitted = match narrow {
        Some(n) if !n.0.truncated => Some(n),
        n => fit_text(dialogue, size, room.w / 2.0 - stroke, max_ry)?.or(n),
    };
    let Some((wrapped, font_size, max_rx)) = fitted else { return Ok(None) };
    let lh = font_size * LINE_HEIGHT;
    let text_w = wrapped.width(font_size);
    let text_h = wrapped.lines.len() as f32 * lh;
    let (rx, ry) = radii(text_w, text_h, font_size);
    let (rx, ry) = (rx.min(max_rx), ry.min(max_ry));
    let h = stroke / 2.0;
    let clamp_axis = |v: f32, r: f32, lo: f32, hi: f32| {
        let (a, b) = (lo + r + h, hi - r - h);
        if a > b {
            (lo + hi) / 2.0
        } else {
            v.clamp(a, b)
        }
    };
    let center = [
        clamp_axis(frame.x + p.center[0] * frame.w, rx, room.x, room.right()),
        clamp_axis(frame.y + p.center[1] * frame.h, ry, room.y, room.bottom()),
    ];
    // The tip stays inside the room (less the miter at the sharp tip).
    let m = stroke * 2.0;
    let tip = [
        (frame.x + p.tail[0] * frame.w).clamp(room.x + m, room.right() - m),
        (frame.y + p.tail[1] * frame.h).clamp(room.y + m, room.bottom() - m),
    ];
    let (nx, ny) = ((tip[0] - center[0]) / rx, (tip[1] - center[1]) / ry);
    // A tip inside (or barely outside) the ellipse gets no tail.
    let tail = (nx * nx + ny * ny > 1.15 * 1.15).then_some(tip);
    Ok(Some(BubbleLayout {
        center,
        rx,
        ry,
        tail,
        font_size,
        lines: wrapped.lines,
        truncated: wrapped.truncated,
        stroke,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outline_closes_and_tail_reaches_the_tip() {
        let frame = Rect::new(10.0, 20.0, 200.0, 150.0);
        let b = layout_bubble(&frame, "Right on schedule.", None, 9.0).unwrap().unwrap();
        let tip = b.tail.expect("the default tail points away from the bubble");
        let outline = b.outline();
        assert!(matches!(outline.first(), Some(Seg::MoveTo(_))));
        assert_eq!(outline.last(), Some(&Seg::Close));
        assert!(outline.contains(&Seg::LineTo(tip)));
        assert!(frame.contains_rect(&b.bounds(), 1e-3));
    }

    #[test]
    fn no_dialogue_no_bubble() {
        let frame = Rect::new(0.0, 0.0, 100.0, 100.0);
        assert!(layout_bubble(&frame, "  \n ", None, 9.0).unwrap().is_none());
    }
}
