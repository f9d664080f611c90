//! PNG output: the page's items rasterised with tiny-skia (anti-aliased paths, glyph outlines of
//! the bundled font), images resampled to their place with a Catmull-Rom filter.

use std::collections::HashMap;
use std::ops::Range;

use image::imageops::{self, FilterType};
use tiny_skia::{FillRule, IntSize, LineJoin, Paint, PathBuilder, Pixmap, PixmapPaint, Transform};

use super::bubbles::Seg;
use super::layout::Rect;
use super::scene::{ImagePixels, Item, Page, PanelOnPage, Rgb, SourceImage};
use super::text::{self, ShapedLine};
use super::ExportError;

/// Largest side of a rendered PNG, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Largest rendered area, in pixels (about 1 GiB of RGBA while drawing).
const MAX_PIXELS: u64 = 256 * 1024 * 1024;

/// The whole page at `dpi`.
pub fn render_page(page: &Page, dpi: f32) -> Result<Pixmap, ExportError> {
    let view = Rect::new(0.0, 0.0, page.size.0, page.size.1);
    render_view(page, &view, dpi / 72.0, 0..0)
}

/// One panel's frame on its own: at the image's own resolution when it has one (else at
/// `dpi`), with or without its speech bubble. Captions are not part of it.
pub fn render_panel(page: &Page, panel: &PanelOnPage, bubbles: bool, dpi: f32) -> Result<Pixmap, ExportError> {
    let mut scale = match (panel.image, panel.image_pixels) {
        (Some(dest), Some((w, _))) if dest.w > 0.0 => w as f32 / dest.w,
        _ => dpi / 72.0,
    };
    // Keep huge fill-mode crops within limits.
    let longest = panel.frame.w.max(panel.frame.h) * scale;
    if longest > 8192.0 {
        scale *= 8192.0 / longest;
    }
    let skip = if bubbles { 0..0 } else { panel.bubble_items.clone() };
    render_view(page, &panel.frame, scale, skip)
}

fn paint(c: Rgb) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color_rgba8(c.0, c.1, c.2, 255);
    p.anti_alias = true;
    p
}

fn path(segs: &[Seg]) -> Option<tiny_skia::Path> {
    let mut b = PathBuilder::new();
    for s in segs {
        match *s {
            Seg::MoveTo([x, y]) => b.move_to(x, y),
            Seg::LineTo([x, y]) => b.line_to(x, y),
            Seg::CubicTo([x1, y1], [x2, y2], [x, y]) => b.cubic_to(x1, y1, x2, y2, x, y),
            Seg::Close => b.close(),
        }
    }
    b.finish()
}

/// Draws the part `view` (points) of the page at `scale` pixels per point, leaving out the items
/// with indices in `skip`.
fn render_view(page: &Page, view: &Rect, scale: f32, skip: Range<usize>) -> Result<Pixmap, ExportError> {
    let w = (view.w * scale).ceil().max(1.0) as u64;
    let h = (view.h * scale).ceil().max(1.0) as u64;
    if !(scale.is_finite() && scale > 0.0) || w > MAX_SIDE as u64 || h > MAX_SIDE as u64 || w * h > MAX_PIXELS {
        return Err(ExportError::TooLarge(w.min(u32::MAX as u64) as u32, h.min(u32::MAX as u64) as u32));
    }
    let mut pixmap = Pixmap::new(w as u32, h as u32).ok_or(ExportError::TooLarge(w as u32, h as u32))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    let ts = Transform::from_row(scale, 0.0, 0.0, scale, -view.x * scale, -view.y * scale);
    let mut glyphs: HashMap<u16, Option<tiny_skia::Path>> = HashMap::new();
    for (i, item) in page.items.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        match item {
            Item::Fill { segs, colour } => {
                if let Some(p) = path(segs) {
                    pixmap.fill_path(&p, &paint(*colour), FillRule::Winding, ts, None);
                }
            }
            Item::Stroke { segs, colour, width } => {
                if let Some(p) = path(segs) {
                    let stroke = tiny_skia::Stroke { width: *width, line_join: LineJoin::Round, ..Default::default() };
                    pixmap.stroke_path(&p, &paint(*colour), &stroke, ts, None);
                }
            }
            Item::Image { image, dest, clip } => draw_image(&mut pixmap, image, dest, clip, view, scale)?,
            Item::Text { origin, size, line, colour } => {
                draw_text(&mut pixmap, &mut glyphs, ts, *origin, *size, line, *colour);
            }
        }
    }
    Ok(pixmap)
}

fn draw_text(
    pixmap: &mut Pixmap,
    cache: &mut HashMap<u16, Option<tiny_skia::Path>>,
    ts: Transform,
    origin: [f32; 2],
    size: f32,
    line: &ShapedLine,
    colour: Rgb,
) {
    let paint = paint(colour);
    let mut x = origin[0];
    for g in &line.glyphs {
        let outline = cache.entry(g.id).or_insert_with(|| text::glyph_outline(g.id));
        if let Some(p) = outline {
            // Glyph outlines are in em units with y up.
            let at = Transform::from_row(size, 0.0, 0.0, -size, x + g.x_offset * size, origin[1] - g.y_offset * size);
            pixmap.fill_path(p, &paint, FillRule::Winding, ts.pre_concat(at), None);
        }
        x += g.x_advance * size;
    }
}

/// Pixel column/row of a point coordinate.
fn px(v: f32, origin: f32, scale: f32) -> i64 {
    ((v - origin) * scale).round() as i64
}

fn draw_image(
    pixmap: &mut Pixmap,
    image: &SourceImage,
    dest: &Rect,
    clip: &Rect,
    view: &Rect,
    scale: f32,
) -> Result<(), ExportError> {
    let ImagePixels::Rgba(rgba) = &image.pixels else {
        return Err(ExportError::Encode {
            what: image.path.display().to_string(),
            reason: "the image was not decoded for drawing".into(),
        });
    };
    let Some(visible) = clip.intersect(view).and_then(|v| v.intersect(dest)) else { return Ok(()) };
    // Where the whole image lands, in whole pixels, and the part of it that shows.
    let (x0, y0) = (px(dest.x, view.x, scale), px(dest.y, view.y, scale));
    let (x1, y1) = (px(dest.right(), view.x, scale), px(dest.bottom(), view.y, scale));
    let (tw, th) = ((x1 - x0).max(1) as u64, (y1 - y0).max(1) as u64);
    if tw > MAX_SIDE as u64 * 4 || th > MAX_SIDE as u64 * 4 || tw * th > MAX_PIXELS {
        return Err(ExportError::TooLarge(tw as u32, th as u32));
    }
    let vx0 = px(visible.x, view.x, scale).clamp(0, pixmap.width() as i64);
    let vy0 = px(visible.y, view.y, scale).clamp(0, pixmap.height() as i64);
    let vx1 = px(visible.right(), view.x, scale).clamp(0, pixmap.width() as i64);
    let vy1 = px(visible.bottom(), view.y, scale).clamp(0, pixmap.height() as i64);
    if vx1 <= vx0 || vy1 <= vy0 {
        return Ok(());
    }
    let scaled;
    let full = if rgba.dimensions() == (tw as u32, th as u32) {
        rgba
    } else {
        scaled = imageops::resize(rgba, tw as u32, th as u32, FilterType::CatmullRom);
        &scaled
    };
    let (cx, cy) = ((vx0 - x0).max(0) as u32, (vy0 - y0).max(0) as u32);
    let cw = ((vx1 - vx0) as u32).min(full.width().saturating_sub(cx));
    let ch = ((vy1 - vy0) as u32).min(full.height().saturating_sub(cy));
    if cw == 0 || ch == 0 {
        return Ok(());
    }
    let part = imageops::crop_imm(full, cx, cy, cw, ch).to_image();
    let src = premultiplied(&part).ok_or(ExportError::TooLarge(cw, ch))?;
    pixmap.draw_pixmap(vx0 as i32, vy0 as i32, src.as_ref(), &PixmapPaint::default(), Transform::identity(), None);
    Ok(())
}

fn premultiplied(img: &image::RgbaImage) -> Option<Pixmap> {
    let mut data = img.as_raw().clone();
    for p in data.chunks_exact_mut(4) {
        let a = p[3] as u32;
        if a < 255 {
            for c in &mut p[..3] {
                *c = ((*c as u32 * a + 127) / 255) as u8;
            }
        }
    }
    Pixmap::from_vec(data, IntSize::from_wh(img.width(), img.height())?)
}

/// The pixmap as plain RGBA (not premultiplied).
pub fn to_rgba_image(pixmap: &Pixmap) -> image::RgbaImage {
    let mut out = image::RgbaImage::new(pixmap.width(), pixmap.height());
    for (dst, src) in out.pixels_mut().zip(pixmap.pixels()) {
        let c = src.demultiply();
        *dst = image::Rgba([c.red(), c.green(), c.blue(), c.alpha()]);
    }
    out
}

/// PNG bytes of a rendered page or panel (RGB: pages are opaque).
pub fn encode(pixmap: &Pixmap) -> Result<Vec<u8>, ExportError> {
    let rgba = to_rgba_image(pixmap);
    let rgb = image::DynamicImage::ImageRgba8(rgba).into_rgb8();
    let mut out = Vec::new();
    rgb.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| ExportError::Encode { what: "a PNG".into(), reason: e.to_string() })?;
    Ok(out)
}
