//! PDF output through krilla: vector text in the bundled font (subset and embedded), panel
//! images at full resolution (JPEG files embedded byte for byte, PNG/WebP losslessly, or
//! re-encoded as JPEG when asked), frames and bubbles as vector paths.

use krilla::color::rgb;
use krilla::geom::{Path, PathBuilder, Point, Size, Transform};
use krilla::image::Image;
use krilla::metadata::Metadata;
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, FillRule, LineCap, LineJoin, Stroke};
use krilla::surface::Surface;
use krilla::text::{Font, GlyphId, KrillaGlyph};
use krilla::Document;

use super::bubbles::Seg;
use super::scene::{ImagePixels, Item, Page, Rgb};
use super::text::{ShapedLine, FONT_BYTES};
use super::{ExportError, PdfImages};
use crate::imaging::decode::{DecodedImage, PhotoFormat};

/// Makes the PDF image for a panel's file. `bytes` are the file's contents, `decoded` its
/// upright pixels (used when the file cannot be embedded as it is).
pub fn embed_image(bytes: Vec<u8>, decoded: DecodedImage, mode: PdfImages) -> Result<Image, String> {
    let as_stored = !decoded.orientation_applied;
    match (decoded.format, mode) {
        // A JPEG is never re-encoded: that would only lose quality.
        (PhotoFormat::Jpeg, _) if as_stored => Image::from_jpeg(bytes.into(), true),
        (PhotoFormat::Png, PdfImages::Original) if as_stored => Image::from_png(bytes.into(), true),
        (PhotoFormat::WebP, PdfImages::Original) if as_stored => Image::from_webp(bytes.into(), true),
        (_, PdfImages::Original) => {
            let (w, h) = decoded.rgba.dimensions();
            Ok(Image::from_rgba8(decoded.rgba.into_raw(), w, h))
        }
        (_, PdfImages::Jpeg { quality }) => {
            // JPEG has no alpha: flatten onto the white page.
            let rgba = decoded.rgba;
            let rgb = image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
                let p = rgba.get_pixel(x, y).0;
                let a = p[3] as u32;
                let mix = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
                image::Rgb([mix(p[0]), mix(p[1]), mix(p[2])])
            });
            let mut out = Vec::new();
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100));
            rgb.write_with_encoder(enc).map_err(|e| format!("JPEG encoding failed: {e}"))?;
            Image::from_jpeg(out.into(), true)
        }
    }
}

fn colour(c: Rgb) -> rgb::Color {
    rgb::Color::new(c.0, c.1, c.2)
}

fn path(segs: &[Seg]) -> Option<Path> {
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

fn glyphs(line: &ShapedLine) -> Vec<KrillaGlyph> {
    (0..line.glyphs.len())
        .map(|i| {
            let g = line.glyphs[i];
            KrillaGlyph::new(
                GlyphId::new(g.id as u32),
                g.x_advance,
                g.x_offset,
                g.y_offset,
                0.0,
                line.glyph_text_range(i),
                None,
            )
        })
        .collect()
}

/// A PDF being built page by page.
pub struct PdfWriter {
    doc: Document,
    font: Font,
}

impl PdfWriter {
    pub fn new(title: &str) -> Result<PdfWriter, ExportError> {
        let mut doc = Document::new();
        doc.set_metadata(Metadata::new().title(title.to_string()).creator("StoryMaker Studio".to_string()));
        let font = Font::new(FONT_BYTES.into(), 0).ok_or_else(|| ExportError::Font("not a usable font".into()))?;
        Ok(PdfWriter { doc, font })
    }

    pub fn add_page(&mut self, page: &Page) -> Result<(), ExportError> {
        let settings = PageSettings::from_wh(page.size.0, page.size.1)
            .ok_or_else(|| ExportError::Pdf(format!("bad page size {:?}", page.size)))?;
        let mut p = self.doc.start_page_with(settings);
        let mut surface = p.surface();
        for item in &page.items {
            draw_item(&mut surface, &self.font, item)?;
        }
        surface.finish();
        p.finish();
        Ok(())
    }

    /// The finished file's bytes.
    pub fn finish(self) -> Result<Vec<u8>, ExportError> {
        self.doc.finish().map_err(|e| ExportError::Pdf(format!("{e:?}")))
    }
}

fn draw_item(surface: &mut Surface<'_>, font: &Font, item: &Item) -> Result<(), ExportError> {
    let bad_path = || ExportError::Pdf("a shape on the page has no area".into());
    match item {
        Item::Fill { segs, colour: c } => {
            let p = path(segs).ok_or_else(bad_path)?;
            surface.set_stroke(None);
            surface.set_fill(Some(Fill {
                paint: colour(*c).into(),
                opacity: NormalizedF32::ONE,
                rule: FillRule::NonZero,
            }));
            surface.draw_path(&p);
        }
        Item::Stroke { segs, colour: c, width } => {
            let p = path(segs).ok_or_else(bad_path)?;
            surface.set_fill(None);
            surface.set_stroke(Some(Stroke {
                paint: colour(*c).into(),
                width: *width,
                line_join: LineJoin::Round,
                line_cap: LineCap::Butt,
                ..Default::default()
            }));
            surface.draw_path(&p);
            surface.set_stroke(None);
        }
        Item::Image { image, dest, clip } => {
            let ImagePixels::Pdf(img) = &image.pixels else {
                return Err(ExportError::Pdf(format!("{} was not prepared for the PDF", image.path.display())));
            };
            let clip_path = path(&super::scene::rect_segs(clip)).ok_or_else(bad_path)?;
            let size = Size::from_wh(dest.w, dest.h).ok_or_else(bad_path)?;
            surface.push_clip_path(&clip_path, &FillRule::NonZero);
            surface.push_transform(&Transform::from_translate(dest.x, dest.y));
            surface.draw_image(img.clone(), size);
            surface.pop();
            surface.pop();
        }
        Item::Text { origin, size, line, colour: c } => {
            surface.set_stroke(None);
            surface.set_fill(Some(Fill {
                paint: colour(*c).into(),
                opacity: NormalizedF32::ONE,
                rule: FillRule::NonZero,
            }));
            let g = glyphs(line);
            surface.draw_glyphs(Point::from_xy(origin[0], origin[1]), &g, font.clone(), &line.text, *size, false);
        }
    }
    Ok(())
}
