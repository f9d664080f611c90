//! Decoding user photos safely.
//!
//! Artists import arbitrary photos: phone pictures with EXIF rotation, 16-bit PNG exports,
//! CMYK JPEGs from print workflows, screenshots, files with the wrong extension, downloads that
//! stopped half-way, and sometimes things that are not images at all. Everything downstream
//! (crop, character mask, face detection, CLIP preprocessing) works on one representation: the
//! **upright** 8-bit sRGB RGBA image produced here. In particular the decoded upright size
//! defines the size of the character's mask, so EXIF orientation must be applied here, once,
//! and never again later.
//!
//! Safety rules:
//! - the format is guessed from the file's bytes (magic numbers), never from its extension;
//! - the size is read from the header and checked against [`MAX_SIDE`] / [`MAX_PIXELS`] *before*
//!   any pixel buffer is allocated, and `image::Limits` is set as a second guard;
//! - nothing here panics on bad data, and a panic inside a third-party decoder is caught and
//!   reported as [`DecodeError::Corrupt`] instead of taking the import thread down;
//! - [`load_image_file`] only ever reads the file: imported files are never modified.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits, RgbaImage};

/// Largest accepted side of a decoded image, in pixels.
///
/// 16384 px is the largest texture side most GPUs accept, and well above any camera sensor's
/// long side that still fits within [`MAX_PIXELS`].
pub const MAX_SIDE: u32 = 16_384;

/// Largest accepted decoded area: 64 Mi pixels (67 108 864, exactly an 8192 × 8192 square).
///
/// That covers a 61-megapixel full-frame camera photo, while bounding memory: the upright RGBA
/// result is at most 256 MiB, and the widest intermediate (16-bit RGBA) at most 512 MiB. Reference
/// photos are downscaled for the models anyway, so nothing is lost by refusing larger ones.
pub const MAX_PIXELS: u64 = 64 * MEBI;

/// One "megapixel" as used in [`MAX_PIXELS`] and its message (2^20 pixels).
const MEBI: u64 = 1024 * 1024;

/// Memory budget given to the decoder (`image::Limits::max_alloc`): the largest decoded buffer
/// ([`MAX_PIXELS`] of 16-bit RGBA, 8 bytes per pixel) plus headroom for metadata such as ICC
/// profiles and EXIF blocks.
const MAX_DECODE_ALLOC: u64 = MAX_PIXELS * 8 + 64 * MEBI;

// Both limits matter: a square at MAX_SIDE is over MAX_PIXELS, and the memory budget holds the
// widest intermediate of the largest accepted image.
const _: () = assert!(MAX_SIDE as u64 * MAX_SIDE as u64 > MAX_PIXELS);
const _: () = assert!(MAX_DECODE_ALLOC >= MAX_PIXELS * 8);

/// The formats StoryMaker imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoFormat {
    Png,
    Jpeg,
    WebP,
}

impl PhotoFormat {
    /// The usual file extension, without the dot (`"png"`, `"jpg"`, `"webp"`).
    pub fn extension(self) -> &'static str {
        match self {
            PhotoFormat::Png => "png",
            PhotoFormat::Jpeg => "jpg",
            PhotoFormat::WebP => "webp",
        }
    }

    /// The name artists know the format by, for messages.
    fn label(self) -> &'static str {
        match self {
            PhotoFormat::Png => "PNG",
            PhotoFormat::Jpeg => "JPEG",
            PhotoFormat::WebP => "WebP",
        }
    }
}

/// A decoded photo, ready for cropping and masking.
#[derive(Clone)]
pub struct DecodedImage {
    /// Upright pixels (EXIF orientation already applied), 8-bit sRGB RGBA. Its size is the size
    /// of the character's mask.
    pub rgba: RgbaImage,
    /// The format found in the file's bytes (not its extension).
    pub format: PhotoFormat,
    /// `[width, height]` as stored in the file, before orientation was applied. Differs from
    /// `rgba`'s size (swapped) for photos taken with the camera held sideways.
    pub original_size: [u32; 2],
    /// True when the file's EXIF orientation was something other than "normal" and the pixels
    /// were rotated and/or mirrored to make them upright.
    pub orientation_applied: bool,
}

impl std::fmt::Debug for DecodedImage {
    // Summarise: the derived form would print every pixel.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedImage")
            .field("size", &self.rgba.dimensions())
            .field("format", &self.format)
            .field("original_size", &self.original_size)
            .field("orientation_applied", &self.orientation_applied)
            .finish()
    }
}

/// Why a photo could not be imported. The messages are shown to artists as they are, so they are
/// plain English and say what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The input has zero bytes.
    #[error("the file is empty (0 bytes), so there is no picture in it")]
    Empty,
    /// Not PNG, JPEG or WebP (or a variant of them that the decoders can't read).
    #[error("{detail}; StoryMaker can import PNG, JPEG and WebP images")]
    Unsupported { detail: String },
    /// The header announces a picture larger than [`MAX_SIDE`] / [`MAX_PIXELS`]. Decided from the
    /// header, before any pixel memory is allocated.
    #[error(
        "the image is {width} × {height} pixels; the largest supported is {max_mp} megapixels \
         ({max_side} px per side). Please scale it down and import it again",
        max_mp = MAX_PIXELS / MEBI,
        max_side = MAX_SIDE
    )]
    TooLarge { width: u32, height: u32 },
    /// Truncated or damaged data.
    #[error("the image file is damaged or incomplete: {detail}")]
    Corrupt { detail: String },
    /// The file could not be read.
    #[error("couldn't read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Reads the photo at `path` and decodes it with [`decode_image_bytes`].
///
/// The file is opened for reading only; its bytes and modification time are never changed (an
/// artist's original photo is theirs). The extension is ignored: the format comes from the bytes.
pub fn load_image_file(path: &Path) -> Result<DecodedImage, DecodeError> {
    let bytes = std::fs::read(path).map_err(|source| DecodeError::Io { path: path.to_path_buf(), source })?;
    decode_image_bytes(&bytes)
}

/// Decodes a PNG, JPEG or WebP photo into upright 8-bit sRGB RGBA.
///
/// - The format is guessed from the magic bytes.
/// - The size is checked against [`MAX_SIDE`] and [`MAX_PIXELS`] from the header, before
///   decoding; a too-large image fails fast with [`DecodeError::TooLarge`].
/// - EXIF orientation is applied, so the result is the picture as the artist sees it.
/// - 16-bit images are scaled to 8 bits, grey images expanded to RGB(A), CMYK/YCCK JPEGs
///   converted to RGB (treating the data as Adobe-style inverted CMYK, as written by Photoshop
///   and ImageMagick); embedded ICC profiles are not applied.
/// - A JPEG that ends before its end-of-image marker is rejected as incomplete, rather than
///   imported with a grey band where the missing data would have been.
pub fn decode_image_bytes(bytes: &[u8]) -> Result<DecodedImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    // The decoders are third-party code fed with untrusted bytes: if one of them panics on a
    // malformed file, report a damaged file instead of unwinding through the caller (the import
    // worker). Nothing shared is mutated inside, so observing the state after a panic is fine.
    match catch_unwind(AssertUnwindSafe(|| decode_inner(bytes))) {
        Ok(result) => result,
        Err(_) => Err(DecodeError::Corrupt { detail: PANIC_DETAIL.to_string() }),
    }
}

/// Detail of the error reported when a decoder panicked (kept distinct so tests can tell it from
/// ordinary decoding errors).
const PANIC_DETAIL: &str = "the decoder could not make sense of its contents";

fn decode_inner(bytes: &[u8]) -> Result<DecodedImage, DecodeError> {
    let format = sniff_format(bytes)?;

    // Cheapest possible size check for PNG: the IHDR chunk is at a fixed place, so a PNG that
    // announces a huge size is refused even if the rest of the file is missing or garbage.
    if let Some((width, height)) = png_ihdr_size(bytes) {
        check_size(width, height)?;
    }

    if format == PhotoFormat::Jpeg && !jpeg_has_end_marker(bytes) {
        return Err(DecodeError::Corrupt { detail: TRUNCATED_DETAIL.to_string() });
    }

    // First guard: the decoder gets a memory budget but no size limits yet, so that it can read the
    // header and report the real size (an error from `Limits` wouldn't say how large it was).
    let mut header_limits = Limits::default();
    header_limits.max_alloc = Some(MAX_DECODE_ALLOC);
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(match format {
        PhotoFormat::Png => ImageFormat::Png,
        PhotoFormat::Jpeg => ImageFormat::Jpeg,
        PhotoFormat::WebP => ImageFormat::WebP,
    });
    reader.limits(header_limits);
    // Only the header (and metadata before the pixels) is parsed here.
    let mut decoder = reader.into_decoder().map_err(|e| from_image_error(e, format))?;

    let (width, height) = decoder.dimensions();
    check_size(width, height)?;

    // Second guard: strict size limits plus the memory budget, enforced by `image` itself.
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    limits.reserve(decoder.total_bytes()).map_err(|e| from_image_error(e, format))?;
    decoder.set_limits(limits).map_err(|e| from_image_error(e, format))?;

    // Unreadable EXIF is not a reason to refuse a photo whose pixels are fine: show it as stored.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);

    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| from_image_error(e, format))?;
    image.apply_orientation(orientation);

    Ok(DecodedImage {
        // Scales 16-bit to 8-bit, expands grey to RGB, adds opaque alpha where missing.
        rgba: image.into_rgba8(),
        format,
        original_size: [width, height],
        orientation_applied: orientation != Orientation::NoTransforms,
    })
}

/// Refuses sizes above [`MAX_SIDE`] or [`MAX_PIXELS`] (and empty images, which no decoder should
/// produce but which would make an unusable zero-sized mask).
fn check_size(width: u32, height: u32) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt {
            detail: format!("its header gives an empty size ({width} × {height} pixels)"),
        });
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(DecodeError::TooLarge { width, height });
    }
    Ok(())
}

/// Shown (after "the image file is damaged or incomplete: ") for files that stop early.
const TRUNCATED_DETAIL: &str = "it ends before the picture is complete (was a download or copy interrupted?)";

/// Finds the format from the first bytes of the file.
fn sniff_format(bytes: &[u8]) -> Result<PhotoFormat, DecodeError> {
    match image::guess_format(bytes) {
        Ok(ImageFormat::Png) => return Ok(PhotoFormat::Png),
        Ok(ImageFormat::Jpeg) => return Ok(PhotoFormat::Jpeg),
        Ok(ImageFormat::WebP) => return Ok(PhotoFormat::WebP),
        Ok(other) => {
            return Err(DecodeError::Unsupported { detail: format!("this looks like a {} image", format_label(other)) })
        }
        Err(_) => {}
    }
    // A few formats artists commonly run into that `image` doesn't recognise, for a helpful hint.
    let detail = if is_heif(bytes) {
        "this is a HEIC/HEIF photo (the iPhone camera's default format; share or export it as \
         JPEG instead)"
            .to_string()
    } else if bytes.starts_with(b"8BPS") {
        "this is a Photoshop document (PSD; export it as PNG instead)".to_string()
    } else {
        "this file is not in an image format StoryMaker recognises".to_string()
    };
    Err(DecodeError::Unsupported { detail })
}

/// A readable name for a format `image` recognised but StoryMaker doesn't import.
fn format_label(format: ImageFormat) -> String {
    match format {
        ImageFormat::Pnm => "PNM/PPM".to_string(),
        ImageFormat::OpenExr => "OpenEXR".to_string(),
        ImageFormat::Ico => "ICO (icon)".to_string(),
        other => {
            other.extensions_str().first().map(|ext| ext.to_ascii_uppercase()).unwrap_or_else(|| format!("{other:?}"))
        }
    }
}

/// ISO base media file with a HEIF brand (`....ftypheic` and friends).
fn is_heif(bytes: &[u8]) -> bool {
    const BRANDS: [&[u8; 4]; 8] = [b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"];
    bytes.get(4..8) == Some(b"ftyp".as_slice())
        && bytes.get(8..12).is_some_and(|brand| BRANDS.iter().any(|b| b.as_slice() == brand))
}

/// Width and height from a PNG's IHDR chunk, if `bytes` starts with a PNG signature and IHDR.
fn png_ihdr_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(SIGNATURE) || bytes.get(12..16) != Some(b"IHDR".as_slice()) {
        return None;
    }
    let width = u32::from_be_bytes(bytes.get(16..20)?.try_into().ok()?);
    let height = u32::from_be_bytes(bytes.get(20..24)?.try_into().ok()?);
    Some((width, height))
}

/// Whether a JPEG's marker structure reaches its end-of-image marker (EOI).
///
/// The JPEG decoder used by `image` (zune-jpeg, in its lenient mode) fills missing data with
/// grey instead of failing, so a photo whose download stopped half-way would otherwise import
/// "successfully" with a grey band. Walking the segment structure (skipping APPn blocks by their
/// length, so an EXIF thumbnail's own EOI doesn't count) finds the real end; bytes after the EOI
/// (e.g. the video appended to motion photos) are fine.
fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut i = 2;
    while i < bytes.len() {
        if bytes[i] != 0xFF {
            // Entropy-coded scan data (or stray bytes between segments): skip.
            i += 1;
            continue;
        }
        // Any number of 0xFF fill bytes may precede a marker code.
        let mut j = i + 1;
        while bytes.get(j) == Some(&0xFF) {
            j += 1;
        }
        let Some(&marker) = bytes.get(j) else {
            return false;
        };
        i = j + 1;
        match marker {
            0xD9 => return true,
            // Stuffed zero inside scan data, TEM, restart markers: no payload.
            0x00 | 0x01 | 0xD0..=0xD7 => {}
            // Every other marker (SOFn, DHT, DQT, SOS header, APPn, COM, ...) has a length.
            _ => {
                let Some(len) = bytes.get(i..i + 2) else {
                    return false;
                };
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                if len < 2 {
                    return false;
                }
                i += len;
            }
        }
    }
    false
}

/// Turns an `image` error into a message for artists.
fn from_image_error(error: ImageError, format: PhotoFormat) -> DecodeError {
    let label = format.label();
    match error {
        // The size was already checked against our limits (or is not known yet), so a limit hit
        // here means the file asks for far more memory than its picture needs: e.g. a gigantic
        // metadata chunk. Saying "too large" with a small size would only confuse.
        ImageError::Limits(limit) => DecodeError::Corrupt {
            detail: format!("its {label} data asks for far more memory than a picture of its size needs ({limit})"),
        },
        ImageError::Unsupported(e) => {
            DecodeError::Unsupported { detail: format!("this {label} file uses a variant StoryMaker can't read ({e})") }
        }
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Corrupt { detail: TRUNCATED_DETAIL.to_string() }
        }
        ImageError::IoError(e) => DecodeError::Corrupt { detail: format!("its {label} data could not be read ({e})") },
        other => DecodeError::Corrupt { detail: format!("its {label} data could not be decoded ({other})") },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageEncoder, Rgba};

    #[test]
    fn extensions() {
        assert_eq!(PhotoFormat::Png.extension(), "png");
        assert_eq!(PhotoFormat::Jpeg.extension(), "jpg");
        assert_eq!(PhotoFormat::WebP.extension(), "webp");
    }

    #[test]
    fn limits_are_as_documented() {
        assert_eq!(MAX_PIXELS, 8192 * 8192);
        assert_eq!(MAX_SIDE, 16_384);
    }

    #[test]
    fn check_size_boundaries() {
        assert!(check_size(8192, 8192).is_ok(), "exactly MAX_PIXELS is accepted");
        assert!(check_size(MAX_SIDE, 4096).is_ok(), "exactly MAX_SIDE is accepted");
        assert!(check_size(1, 1).is_ok());
        assert!(matches!(check_size(8193, 8192), Err(DecodeError::TooLarge { width: 8193, height: 8192 })));
        assert!(matches!(check_size(MAX_SIDE + 1, 2), Err(DecodeError::TooLarge { width: 16385, height: 2 })));
        assert!(matches!(check_size(2, MAX_SIDE + 1), Err(DecodeError::TooLarge { width: 2, height: 16385 })));
        assert!(matches!(check_size(u32::MAX, u32::MAX), Err(DecodeError::TooLarge { .. })));
        assert!(matches!(check_size(0, 10), Err(DecodeError::Corrupt { .. })));
    }

    #[test]
    fn too_large_message_names_size_and_limit() {
        let msg = DecodeError::TooLarge { width: 30000, height: 30000 }.to_string();
        assert!(msg.starts_with(
            "the image is 30000 × 30000 pixels; the largest supported is 64 megapixels \
             (16384 px per side)"
        ));
    }

    #[test]
    fn sniffing_names_other_formats() {
        let gif = sniff_format(b"GIF89a\x01\x00\x01\x00").unwrap_err().to_string();
        assert!(gif.contains("GIF"), "{gif}");
        assert!(gif.contains("PNG, JPEG and WebP"), "{gif}");
        let heic = sniff_format(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic").unwrap_err().to_string();
        assert!(heic.contains("HEIC"), "{heic}");
        let psd = sniff_format(b"8BPS\0\x01").unwrap_err().to_string();
        assert!(psd.contains("Photoshop"), "{psd}");
        let text = sniff_format(b"hello").unwrap_err().to_string();
        assert!(text.contains("not in an image format"), "{text}");
        assert_eq!(sniff_format(b"\x89PNG\r\n\x1a\n").unwrap(), PhotoFormat::Png);
        assert_eq!(sniff_format(&[0xFF, 0xD8, 0xFF, 0xE0]).unwrap(), PhotoFormat::Jpeg);
        assert_eq!(sniff_format(b"RIFF\x10\0\0\0WEBPVP8L").unwrap(), PhotoFormat::WebP);
    }

    #[test]
    fn png_ihdr_size_reads_header_and_ignores_short_input() {
        let mut header = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        header.extend_from_slice(&640u32.to_be_bytes());
        assert_eq!(png_ihdr_size(&header), None, "height missing");
        header.extend_from_slice(&480u32.to_be_bytes());
        assert_eq!(png_ihdr_size(&header), Some((640, 480)));
        assert_eq!(png_ihdr_size(b"\x89PNG"), None);
    }

    #[test]
    fn jpeg_end_marker_walk() {
        // SOI, APP1 whose payload contains a fake EOI (as an EXIF thumbnail would), no real EOI.
        let with_thumbnail_eoi = [0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x06, 0xFF, 0xD9, 0x00, 0x00];
        assert!(!jpeg_has_end_marker(&with_thumbnail_eoi));
        // Same plus a real EOI and trailing bytes (like a motion photo's video).
        let mut complete = with_thumbnail_eoi.to_vec();
        complete.extend_from_slice(&[0xFF, 0xFF, 0xD9, 1, 2, 3]);
        assert!(jpeg_has_end_marker(&complete));
        // Scan data with stuffed zeros and a restart marker, then EOI.
        let scan = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0xFF, 0x00, 0xFF, 0xD3, 0x34, 0xFF, 0xD9];
        assert!(jpeg_has_end_marker(&scan));
        assert!(!jpeg_has_end_marker(&scan[..scan.len() - 1]));
        // Segment length running past the end, and a length below 2.
        assert!(!jpeg_has_end_marker(&[0xFF, 0xD8, 0xFF, 0xE0, 0x40, 0x00]));
        assert!(!jpeg_has_end_marker(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x01, 0xFF, 0xD9]));
        assert!(!jpeg_has_end_marker(&[0xFF, 0xD8, 0xFF]));
    }

    /// A 2×2 PNG (TL red, TR green, BL blue, BR white) with an eXIf chunk holding `orientation`.
    fn png_with_orientation(orientation: u16) -> Vec<u8> {
        let img = RgbaImage::from_fn(2, 2, |x, y| match (x, y) {
            (0, 0) => Rgba([255, 0, 0, 255]),
            (1, 0) => Rgba([0, 255, 0, 255]),
            (0, 1) => Rgba([0, 0, 255, 255]),
            _ => Rgba([255, 255, 255, 255]),
        });
        // Little-endian TIFF header, one IFD entry: tag 0x0112 (Orientation), SHORT, count 1.
        let mut exif = b"II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
        exif.extend_from_slice(&orientation.to_le_bytes());
        exif.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut out = Vec::new();
        let mut encoder = image::codecs::png::PngEncoder::new(&mut out);
        encoder.set_exif_metadata(exif).unwrap();
        encoder.write_image(img.as_raw(), 2, 2, image::ExtendedColorType::Rgba8).unwrap();
        out
    }

    #[test]
    fn png_exif_rotate_180() {
        let decoded = decode_image_bytes(&png_with_orientation(3)).unwrap();
        assert!(decoded.orientation_applied);
        assert_eq!(decoded.rgba.get_pixel(0, 0), &Rgba([255, 255, 255, 255]));
        assert_eq!(decoded.rgba.get_pixel(1, 1), &Rgba([255, 0, 0, 255]));
        assert_eq!(decoded.rgba.get_pixel(1, 0), &Rgba([0, 0, 255, 255]));
    }

    #[test]
    fn png_exif_mirror() {
        let decoded = decode_image_bytes(&png_with_orientation(2)).unwrap();
        assert!(decoded.orientation_applied);
        assert_eq!(decoded.rgba.get_pixel(0, 0), &Rgba([0, 255, 0, 255]));
        assert_eq!(decoded.rgba.get_pixel(1, 0), &Rgba([255, 0, 0, 255]));
    }

    #[test]
    fn png_exif_normal_is_not_reported_as_applied() {
        let decoded = decode_image_bytes(&png_with_orientation(1)).unwrap();
        assert!(!decoded.orientation_applied);
        assert_eq!(decoded.rgba.get_pixel(0, 0), &Rgba([255, 0, 0, 255]));
        // An out-of-range value is ignored rather than failing the import.
        let decoded = decode_image_bytes(&png_with_orientation(42)).unwrap();
        assert!(!decoded.orientation_applied);
        assert_eq!(decoded.rgba.get_pixel(0, 0), &Rgba([255, 0, 0, 255]));
    }

    /// Deterministic pseudo-random numbers for the robustness test.
    fn lcg(seed: &mut u32) -> u32 {
        *seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *seed >> 8
    }

    /// Truncations and byte flips of valid PNG, JPEG and WebP files. Calls `decode_inner`, i.e.
    /// *without* the `catch_unwind` safety net, so a panic in a decoder fails this test instead of
    /// being hidden.
    #[test]
    fn damaged_files_never_panic() {
        let mut seed = 1;
        let noise = RgbaImage::from_fn(24, 16, |_, _| {
            let v = lcg(&mut seed).to_le_bytes();
            Rgba([v[0], v[1], v[2], 255])
        });
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(noise.as_raw(), 24, 16, image::ExtendedColorType::Rgba8)
            .unwrap();
        let mut jpeg = Vec::new();
        let rgb = DynamicImage::ImageRgba8(noise.clone()).into_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85)
            .write_image(rgb.as_raw(), 24, 16, image::ExtendedColorType::Rgb8)
            .unwrap();
        let mut webp = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
            .write_image(noise.as_raw(), 24, 16, image::ExtendedColorType::Rgba8)
            .unwrap();
        let fixtures: [&[u8]; 4] = [
            include_bytes!("../../tests/fixtures/images/quadrants_lossy.webp"),
            include_bytes!("../../tests/fixtures/images/cmyk_ycck.jpg"),
            include_bytes!("../../tests/fixtures/images/cmyk_plain.jpg"),
            include_bytes!("../../tests/fixtures/images/exif_orientation6.jpg"),
        ];

        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for original in [png.as_slice(), jpeg.as_slice(), webp.as_slice()].into_iter().chain(fixtures) {
            assert!(decode_inner(original).is_ok(), "the undamaged file decodes");
            let step = (original.len() / 200).max(1);
            inputs.extend((1..original.len()).step_by(step).map(|len| original[..len].to_vec()));
            for _ in 0..400 {
                let mut damaged = original.to_vec();
                for _ in 0..1 + lcg(&mut seed) % 4 {
                    let at = lcg(&mut seed) as usize % damaged.len();
                    damaged[at] ^= (lcg(&mut seed) % 255 + 1) as u8;
                }
                inputs.push(damaged);
            }
        }
        let mut decoded = 0;
        for input in &inputs {
            // Ok is fine too (a flipped bit in pixel data is still a picture); it must not panic,
            // and whatever decodes respects the size limits.
            if let Ok(image) = decode_inner(input) {
                decoded += 1;
                assert!(image.rgba.width() <= MAX_SIDE && image.rgba.height() <= MAX_SIDE);
            }
        }
        assert!(decoded > 0 && decoded < inputs.len(), "{decoded} of {} decoded", inputs.len());
    }

    #[test]
    fn empty_input() {
        assert!(matches!(decode_image_bytes(&[]), Err(DecodeError::Empty)));
    }
}
