//! The character mask: one 8-bit plane the size of the (upright) reference photo.
//!
//! StoryMaker conditions the character resampler on the masked crop (reference spec §1.3), so the
//! mask is part of the document. Brush strokes return the dirty rectangle so the undo history can
//! store only the changed patch instead of whole masks.

use serde::{Deserialize, Serialize};

/// An axis-aligned rectangle in pixel coordinates (`x`,`y` top-left; `w`,`h` > 0 when non-empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PixelRect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl PixelRect {
    pub fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0
    }

    /// Smallest rectangle containing both.
    pub fn union(&self, other: &PixelRect) -> PixelRect {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        let x0 = self.x.min(other.x);
        let y0 = self.y.min(other.y);
        let x1 = (self.x + self.w).max(other.x + other.w);
        let y1 = (self.y + self.h).max(other.y + other.h);
        PixelRect { x: x0, y: y0, w: x1 - x0, h: y1 - y0 }
    }
}

/// An 8-bit mask (0 = background, 255 = character).
#[derive(Clone, PartialEq, Eq)]
pub struct Mask {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl std::fmt::Debug for Mask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mask({}x{}, {} set)", self.width, self.height, self.count_nonzero())
    }
}

impl Default for Mask {
    fn default() -> Self {
        Mask::filled(0, 0, 0)
    }
}

impl Mask {
    pub fn filled(width: u32, height: u32, value: u8) -> Mask {
        Mask { width, height, data: vec![value; width as usize * height as usize] }
    }

    /// Wraps raw bytes; `None` when the length does not match `width * height`.
    pub fn from_raw(width: u32, height: u32, data: Vec<u8>) -> Option<Mask> {
        (data.len() == width as usize * height as usize).then_some(Mask { width, height, data })
    }

    pub fn from_gray(img: image::GrayImage) -> Mask {
        let (width, height) = img.dimensions();
        Mask { width, height, data: img.into_raw() }
    }

    pub fn to_gray(&self) -> image::GrayImage {
        // Length always matches by construction.
        image::GrayImage::from_raw(self.width, self.height, self.data.clone())
            .unwrap_or_else(|| image::GrayImage::new(self.width, self.height))
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn size(&self) -> [u32; 2] {
        [self.width, self.height]
    }

    pub fn data(&self) -> &[u8] {
        &self.data
    }

    pub fn get(&self, x: u32, y: u32) -> u8 {
        if x < self.width && y < self.height {
            self.data[(y * self.width + x) as usize]
        } else {
            0
        }
    }

    pub fn count_nonzero(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }

    /// Tight bounding box of the non-zero pixels (the reference crops the character to it, §1.3).
    pub fn bbox(&self) -> Option<PixelRect> {
        let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0u32, 0u32);
        for y in 0..self.height {
            let row = &self.data[(y * self.width) as usize..((y + 1) * self.width) as usize];
            if let Some(first) = row.iter().position(|&v| v != 0) {
                let last = row.iter().rposition(|&v| v != 0).unwrap_or(first);
                x0 = x0.min(first as u32);
                x1 = x1.max(last as u32);
                y0 = y0.min(y);
                y1 = y;
            }
        }
        (x0 != u32::MAX).then(|| PixelRect { x: x0, y: y0, w: x1 - x0 + 1, h: y1 - y0 + 1 })
    }

    /// Clamps a rectangle to the mask.
    pub fn clamp_rect(&self, r: PixelRect) -> PixelRect {
        let x = r.x.min(self.width);
        let y = r.y.min(self.height);
        let w = r.w.min(self.width - x);
        let h = r.h.min(self.height - y);
        PixelRect { x, y, w, h }
    }

    /// Copies out the pixels of `r` (clamped), row-major.
    pub fn extract(&self, r: PixelRect) -> Vec<u8> {
        let r = self.clamp_rect(r);
        let mut out = Vec::with_capacity(r.w as usize * r.h as usize);
        for y in r.y..r.y + r.h {
            let start = (y * self.width + r.x) as usize;
            out.extend_from_slice(&self.data[start..start + r.w as usize]);
        }
        out
    }

    /// Writes a patch previously produced by [`Mask::extract`] with the same rectangle.
    /// Returns false (and changes nothing) when the patch does not fit.
    pub fn write(&mut self, r: PixelRect, patch: &[u8]) -> bool {
        if self.clamp_rect(r) != r || patch.len() != r.w as usize * r.h as usize {
            return false;
        }
        for (row, y) in (r.y..r.y + r.h).enumerate() {
            let start = (y * self.width + r.x) as usize;
            self.data[start..start + r.w as usize]
                .copy_from_slice(&patch[row * r.w as usize..(row + 1) * r.w as usize]);
        }
        true
    }

    /// Paints a round brush segment from `a` to `b` (pixel coordinates) with `value`
    /// (255 paints the character, 0 erases). Returns the touched rectangle, if any.
    pub fn stroke(&mut self, a: [f32; 2], b: [f32; 2], radius: f32, value: u8) -> Option<PixelRect> {
        let radius = radius.max(0.5);
        let minx = (a[0].min(b[0]) - radius).floor().max(0.0);
        let miny = (a[1].min(b[1]) - radius).floor().max(0.0);
        let maxx = (a[0].max(b[0]) + radius).ceil().min(self.width as f32 - 1.0);
        let maxy = (a[1].max(b[1]) + radius).ceil().min(self.height as f32 - 1.0);
        if maxx < minx || maxy < miny || self.width == 0 || self.height == 0 {
            return None;
        }
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let len2 = dx * dx + dy * dy;
        let r2 = radius * radius;
        let mut touched: Option<PixelRect> = None;
        for y in miny as u32..=maxy as u32 {
            for x in minx as u32..=maxx as u32 {
                // Pixel centre distance to the segment.
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let t = if len2 > 0.0 { (((px - a[0]) * dx + (py - a[1]) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
                let (cx, cy) = (a[0] + t * dx - px, a[1] + t * dy - py);
                if cx * cx + cy * cy <= r2 {
                    let i = (y * self.width + x) as usize;
                    if self.data[i] != value {
                        self.data[i] = value;
                        let p = PixelRect { x, y, w: 1, h: 1 };
                        touched = Some(touched.map_or(p, |t| t.union(&p)));
                    }
                }
            }
        }
        touched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stroke_reports_dirty_rect_and_patch_roundtrips() {
        let mut m = Mask::filled(64, 48, 0);
        let before = m.clone();
        let r = m.stroke([10.0, 10.0], [30.0, 12.0], 3.0, 255).expect("touched");
        assert!(r.x <= 7 && r.x + r.w >= 33, "{r:?}");
        assert_eq!(m.bbox(), Some(r));
        let after_patch = m.extract(r);
        let before_patch = before.extract(r);
        assert!(m.write(r, &before_patch));
        assert_eq!(m, before);
        assert!(m.write(r, &after_patch));
        assert_eq!(m.bbox(), Some(r));
        // Erasing exactly the same stroke empties the mask again.
        m.stroke([10.0, 10.0], [30.0, 12.0], 3.0, 0);
        assert_eq!(m.bbox(), None);
    }

    #[test]
    fn stroke_outside_is_none_and_write_rejects_bad_patch() {
        let mut m = Mask::filled(8, 8, 0);
        assert_eq!(m.stroke([-50.0, -50.0], [-40.0, -40.0], 2.0, 255), None);
        let r = PixelRect { x: 6, y: 6, w: 4, h: 4 };
        assert!(!m.write(r, &[0; 16]));
        assert!(!m.write(PixelRect { x: 0, y: 0, w: 2, h: 2 }, &[0; 3]));
    }
}
