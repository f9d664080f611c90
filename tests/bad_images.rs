//! Importing photos must never crash, hang, allocate gigabytes or modify the artist's file, and
//! what does decode must come out upright, 8-bit and in the right colours. These tests go through
//! the public API only (`storymaker::imaging`). Small fixtures made with ImageMagick live in
//! `tests/fixtures/images/` (see the README there); everything that the `image` crate can write
//! is generated here instead.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use image::{ImageEncoder, Rgb, Rgba, RgbaImage};
use storymaker::imaging::decode::{PhotoFormat, MAX_PIXELS, MAX_SIDE};
use storymaker::imaging::{decode_image_bytes, load_image_file, DecodeError, DecodedImage};

// ---------------------------------------------------------------------------------------------
// Helpers

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/images").join(name)
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Deterministic pseudo-random bytes (so noise images compress badly and truncation hits pixels).
fn noise(len: usize, mut seed: u32) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 24) as u8
        })
        .collect()
}

fn encode_png(img: &RgbaImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png).expect("encode png");
    out
}

fn encode_jpeg(img: &image::RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(img).expect("encode jpeg");
    out
}

/// Standard CRC-32 (as used by PNG chunks), bit by bit: tiny and enough for a few bytes.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(kind);
    chunk.extend_from_slice(data);
    let mut crc_input = kind.to_vec();
    crc_input.extend_from_slice(data);
    chunk.extend_from_slice(&crc32(&crc_input).to_be_bytes());
    chunk
}

/// PNG signature plus an IHDR (8-bit RGBA) announcing `width` × `height`, with a valid CRC.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]); // bit depth, colour type RGBA, deflate, filter, no interlace
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&png_chunk(b"IHDR", &ihdr));
    png
}

fn assert_close(actual: &[u8], expected: &[u8], tolerance: u8, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: channel count");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            a.abs_diff(e) <= tolerance,
            "{what}: channel {i} is {a}, expected {e} ± {tolerance} (pixel {actual:?} vs {expected:?})"
        );
    }
}

fn rgb_at(decoded: &DecodedImage, x: u32, y: u32) -> [u8; 3] {
    let p = decoded.rgba.get_pixel(x, y).0;
    [p[0], p[1], p[2]]
}

/// The quadrant colours used by the fixtures (see tests/fixtures/images/README.md).
const RED: [u8; 3] = [220, 40, 40];
const GREEN: [u8; 3] = [40, 180, 60];
const BLUE: [u8; 3] = [40, 60, 200];
const YELLOW: [u8; 3] = [230, 200, 40];

// ---------------------------------------------------------------------------------------------
// Files that must be refused, with a clear reason

#[test]
fn zero_byte_file_is_reported_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("photo.jpg");
    std::fs::write(&path, b"").unwrap();
    let err = load_image_file(&path).unwrap_err();
    assert!(matches!(err, DecodeError::Empty), "{err:?}");
    assert!(err.to_string().contains("empty"), "{err}");
    assert!(matches!(decode_image_bytes(&[]), Err(DecodeError::Empty)));
}

#[test]
fn truncated_png_is_corrupt() {
    let img = RgbaImage::from_raw(64, 48, noise(64 * 48 * 4, 7)).unwrap();
    let png = encode_png(&img);
    assert!(decode_image_bytes(&png).is_ok(), "the untruncated PNG decodes");

    let err = decode_image_bytes(&png[..png.len() / 2]).unwrap_err();
    assert!(matches!(err, DecodeError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("damaged or incomplete"), "{err}");

    // Any cut that loses pixel data fails cleanly (the last 12 bytes are the IEND chunk). Every
    // 17th length, plus each of the last ones before IEND.
    let iend = png.len() - 12;
    for len in (1..iend).step_by(17).chain(iend - 40..iend) {
        let result = decode_image_bytes(&png[..len]);
        assert!(
            matches!(result, Err(DecodeError::Corrupt { .. } | DecodeError::Unsupported { .. })),
            "PNG cut to {len} of {} bytes: {result:?}",
            png.len()
        );
    }
}

#[test]
fn truncated_jpeg_is_corrupt_not_grey_filled() {
    let img = image::RgbImage::from_raw(64, 48, noise(64 * 48 * 3, 11)).unwrap();
    let jpeg = encode_jpeg(&img, 90);
    assert!(decode_image_bytes(&jpeg).is_ok(), "the untruncated JPEG decodes");

    let err = decode_image_bytes(&jpeg[..jpeg.len() * 6 / 10]).unwrap_err();
    assert!(matches!(err, DecodeError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("ends before the picture is complete"), "{err}");

    // Any cut at all, EOI marker included: every 7th length plus each of the last 40.
    for len in (1..jpeg.len()).step_by(7).chain(jpeg.len() - 40..jpeg.len()) {
        let result = decode_image_bytes(&jpeg[..len]);
        assert!(
            matches!(result, Err(DecodeError::Corrupt { .. } | DecodeError::Unsupported { .. })),
            "JPEG cut to {len} of {} bytes: {result:?}",
            jpeg.len()
        );
    }

    // The same holds for a real-world-style fixture (CMYK, Adobe APP14 segment).
    let cmyk = fixture_bytes("cmyk_ycck.jpg");
    let err = decode_image_bytes(&cmyk[..cmyk.len() - 40]).unwrap_err();
    assert!(matches!(err, DecodeError::Corrupt { .. }), "{err:?}");
}

#[test]
fn png_header_claiming_30000_square_fails_fast() {
    let start = Instant::now();
    // Only the signature and IHDR: nothing else is needed to refuse it.
    let header_only = png_header(30_000, 30_000);
    let err = decode_image_bytes(&header_only).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { width: 30_000, height: 30_000 }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("30000 × 30000 pixels") && msg.contains("64 megapixels") && msg.contains("16384 px per side"),
        "{msg}"
    );

    // Followed by a (bogus) IDAT and IEND, as a real file would be: still refused from the header.
    let mut full = header_only.clone();
    full.extend_from_slice(&png_chunk(b"IDAT", &[0x78, 0x9C, 0x03, 0x00]));
    full.extend_from_slice(&png_chunk(b"IEND", &[]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.png");
    std::fs::write(&path, &full).unwrap();
    let err = load_image_file(&path).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { width: 30_000, height: 30_000 }), "{err:?}");

    // 30000² RGBA would be 3.6 GB; refusing it from the header takes no time at all.
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
}

#[test]
fn jpeg_header_too_large_is_refused_by_the_decoder_check() {
    let jpeg = encode_jpeg(&image::RgbImage::from_pixel(16, 16, Rgb([9, 9, 9])), 80);
    // Baseline SOF0: FF C0, length (2), precision (1), height (2), width (2).
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).expect("SOF0 marker");
    let with_size = |width: u16, height: u16| {
        let mut patched = jpeg.clone();
        patched[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        patched[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        patched
    };
    assert!(decode_image_bytes(&with_size(16, 16)).is_ok(), "patching itself is sound");

    let start = Instant::now();
    let err = decode_image_bytes(&with_size(30_000, 30_000)).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { width: 30_000, height: 30_000 }), "{err:?}");
    // Small in area but longer than MAX_SIDE on one side.
    let err = decode_image_bytes(&with_size(20_000, 8)).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { width: 20_000, height: 8 }), "{err:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
    const { assert!(20_000 > MAX_SIDE && 20_000 * 8 < MAX_PIXELS) };
}

#[test]
fn webp_header_too_large_is_refused() {
    // A lossless WebP (VP8L) header announcing 12000 × 12000: each side is allowed, the area
    // (144 million pixels) is not. The header stores width - 1 and height - 1 in 14 bits each.
    let bits: u32 = 11_999 | (11_999 << 14);
    let mut vp8l = vec![0x2F];
    vp8l.extend_from_slice(&bits.to_le_bytes());
    let mut webp = b"RIFF".to_vec();
    webp.extend_from_slice(&(4u32 + 8 + 6).to_le_bytes());
    webp.extend_from_slice(b"WEBPVP8L");
    webp.extend_from_slice(&5u32.to_le_bytes());
    webp.extend_from_slice(&vp8l);
    webp.push(0); // chunk padding to an even size
    let err = decode_image_bytes(&webp).unwrap_err();
    assert!(matches!(err, DecodeError::TooLarge { width: 12_000, height: 12_000 }), "{err:?}");
    const { assert!(12_000 < MAX_SIDE && 12_000 * 12_000 > MAX_PIXELS) };
}

#[test]
fn non_image_files_are_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.png");
    std::fs::write(&path, "Chapter 1: the dragon wakes up.\n").unwrap();
    let err = load_image_file(&path).unwrap_err();
    assert!(matches!(err, DecodeError::Unsupported { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("PNG, JPEG and WebP"), "names the supported formats: {msg}");

    // A real image in a format StoryMaker doesn't import is named.
    let err = decode_image_bytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").unwrap_err();
    assert!(matches!(err, DecodeError::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("GIF"), "{err}");
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone.jpg");
    let err = load_image_file(&path).unwrap_err();
    match &err {
        DecodeError::Io { path: p, source } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Io, got {other:?}"),
    }
    assert!(err.to_string().contains("gone.jpg"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Files that must decode, upright and in the right colours

/// Decodes a CMYK fixture and checks it against the RGB colours it was separated from and, pixel
/// by pixel, against ImageMagick's RGB conversion of the same file (`<name>_imagemagick.png`).
fn check_cmyk_fixture(name: &str, adobe_transform: u8) {
    let bytes = fixture_bytes(&format!("{name}.jpg"));
    // The fixture is what the README says: 4 components with an Adobe APP14 segment whose
    // transform byte says how they are stored (0 = plain CMYK, 2 = YCCK).
    let app14 = bytes.windows(5).position(|w| w == b"Adobe").expect("Adobe APP14 segment");
    assert_eq!(bytes[app14 + 11], adobe_transform, "{name}: APP14 transform");

    let decoded = decode_image_bytes(&bytes).unwrap();
    assert_eq!(decoded.format, PhotoFormat::Jpeg);
    assert_eq!(decoded.rgba.dimensions(), (64, 64));
    assert_eq!(decoded.original_size, [64, 64]);
    assert!(!decoded.orientation_applied);
    assert!(decoded.rgba.pixels().all(|p| p[3] == 255), "{name}: opaque");

    // Quadrant centres against the RGB colours the CMYK file was made from. An inverted or
    // un-inverted-by-mistake CMYK decode would be off by 100+ here.
    for (x, y, colour) in [(16, 12, RED), (48, 12, GREEN), (16, 36, BLUE), (48, 36, YELLOW)] {
        assert_close(&rgb_at(&decoded, x, y), &colour, 8, &format!("{name}: quadrant at ({x}, {y})"));
    }
    // Bottom strip: a hue ramp at full saturation; its top-left pixel is pure red, its
    // bottom-right a dark red (brightness 25 %), which needs the K channel.
    assert_close(&rgb_at(&decoded, 0, 48), &[255, 0, 0], 8, &format!("{name}: ramp start"));
    assert_close(&rgb_at(&decoded, 63, 63), &[64, 0, 0], 8, &format!("{name}: ramp end"));

    let reference = image::open(fixture(&format!("{name}_imagemagick.png"))).unwrap().into_rgb8();
    assert_eq!(reference.dimensions(), decoded.rgba.dimensions());
    let mut total = 0u64;
    let mut worst = 0u8;
    for (ours, theirs) in decoded.rgba.pixels().zip(reference.pixels()) {
        for c in 0..3 {
            let d = ours[c].abs_diff(theirs[c]);
            total += u64::from(d);
            worst = worst.max(d);
        }
    }
    let mean = total as f64 / (64.0 * 64.0 * 3.0);
    // Measured: mean ≈ 0.3, worst 2 (rounding in the two decoders' colour conversions).
    assert!(mean < 1.0, "{name}: mean difference from ImageMagick {mean:.2}");
    assert!(worst <= 6, "{name}: largest difference from ImageMagick {worst}");
}

#[test]
fn cmyk_jpeg_stored_as_ycck_decodes_to_plausible_rgb() {
    // What ImageMagick and Photoshop write by default for CMYK JPEGs.
    check_cmyk_fixture("cmyk_ycck", 2);
}

#[test]
fn cmyk_jpeg_stored_as_plain_cmyk_decodes_to_plausible_rgb() {
    check_cmyk_fixture("cmyk_plain", 0);
}

#[test]
fn sixteen_bit_png_is_scaled_to_eight_bits() {
    let values: [u16; 6] = [0, 0x00FF, 0x1234, 0x8000, 0xABCD, 0xFFFF];
    let img = image::ImageBuffer::<Rgb<u16>, Vec<u16>>::from_fn(6, 2, |x, y| {
        let v = values[x as usize];
        if y == 0 {
            Rgb([v, 0xFFFF - v, v / 2])
        } else {
            Rgb([0xFFFF, 0, 0x7FFF])
        }
    });
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(u16_ne_bytes(img.as_raw()).as_slice(), 6, 2, image::ExtendedColorType::Rgb16)
        .unwrap();
    assert_eq!(png[24], 16, "IHDR bit depth of the test file is 16");

    let decoded = decode_image_bytes(&png).unwrap();
    assert_eq!(decoded.format, PhotoFormat::Png);
    assert_eq!(decoded.rgba.dimensions(), (6, 2));
    let to8 = |v: u16| ((f64::from(v) / 257.0).round()) as u8;
    for (x, &v) in values.iter().enumerate() {
        let expected = [to8(v), to8(0xFFFF - v), to8(v / 2), 255];
        assert_close(&decoded.rgba.get_pixel(x as u32, 0).0, &expected, 1, &format!("value {v:#06x}"));
    }
    assert_eq!(decoded.rgba.get_pixel(0, 1).0, [255, 0, 127, 255]);

    // 16-bit grey with alpha → grey replicated into RGB, alpha kept.
    let grey = image::ImageBuffer::<image::LumaA<u16>, Vec<u16>>::from_fn(2, 1, |x, _| {
        if x == 0 {
            image::LumaA([0x8080, 0xFFFF])
        } else {
            image::LumaA([0xFFFF, 0x4000])
        }
    });
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(u16_ne_bytes(grey.as_raw()).as_slice(), 2, 1, image::ExtendedColorType::La16)
        .unwrap();
    let decoded = decode_image_bytes(&png).unwrap();
    assert_eq!(decoded.rgba.get_pixel(0, 0).0, [128, 128, 128, 255]);
    assert_eq!(decoded.rgba.get_pixel(1, 0).0, [255, 255, 255, 64]);
}

/// `u16` samples as the native-endian bytes `ImageEncoder::write_image` expects.
fn u16_ne_bytes(samples: &[u16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_ne_bytes()).collect()
}

#[test]
fn grayscale_png_becomes_opaque_rgba() {
    let grey = image::GrayImage::from_fn(3, 1, |x, _| image::Luma([[0, 77, 255][x as usize]]));
    let mut png = Vec::new();
    grey.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    let decoded = decode_image_bytes(&png).unwrap();
    assert_eq!(decoded.rgba.get_pixel(0, 0).0, [0, 0, 0, 255]);
    assert_eq!(decoded.rgba.get_pixel(1, 0).0, [77, 77, 77, 255]);
    assert_eq!(decoded.rgba.get_pixel(2, 0).0, [255, 255, 255, 255]);
}

#[test]
fn exif_orientation_6_jpeg_is_turned_upright() {
    // Stored 64 × 48 (the upright picture turned 90° counter-clockwise), EXIF Orientation = 6
    // ("right-top": rotate 90° clockwise to display), like a phone photo taken in portrait.
    let decoded = load_image_file(&fixture("exif_orientation6.jpg")).unwrap();
    assert_eq!(decoded.format, PhotoFormat::Jpeg);
    assert_eq!(decoded.original_size, [64, 48], "as stored");
    assert_eq!(decoded.rgba.dimensions(), (48, 64), "upright: width and height swapped");
    assert!(decoded.orientation_applied);

    // Upright, the picture is red | green over blue | yellow (as ImageMagick's -auto-orient shows).
    for (x, y, colour, name) in [
        (2, 2, RED, "top-left"),
        (45, 2, GREEN, "top-right"),
        (2, 61, BLUE, "bottom-left"),
        (45, 61, YELLOW, "bottom-right"),
    ] {
        assert_close(&rgb_at(&decoded, x, y), &colour, 8, name);
    }
}

#[test]
fn webp_lossless_decodes_exactly() {
    let img = RgbaImage::from_fn(5, 3, |x, y| Rgba([x as u8 * 50, y as u8 * 100, 7, 255 - x as u8 * 40]));
    let mut webp = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut webp)
        .write_image(img.as_raw(), 5, 3, image::ExtendedColorType::Rgba8)
        .unwrap();
    let decoded = decode_image_bytes(&webp).unwrap();
    assert_eq!(decoded.format, PhotoFormat::WebP);
    assert_eq!(decoded.format.extension(), "webp");
    assert_eq!(decoded.rgba, img, "lossless round trip, alpha included");
}

#[test]
fn webp_lossy_fixture_decodes() {
    let decoded = load_image_file(&fixture("quadrants_lossy.webp")).unwrap();
    assert_eq!(decoded.format, PhotoFormat::WebP);
    assert_eq!(decoded.rgba.dimensions(), (64, 48));
    for (x, y, colour) in [(16, 12, RED), (48, 12, GREEN), (16, 36, BLUE), (48, 36, YELLOW)] {
        assert_close(&rgb_at(&decoded, x, y), &colour, 10, &format!("quadrant at ({x}, {y})"));
    }
}

#[test]
fn format_comes_from_the_bytes_not_the_extension() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("actually_a_png.jpg");
    let img = RgbaImage::from_pixel(4, 4, Rgba([10, 20, 30, 128]));
    std::fs::write(&path, encode_png(&img)).unwrap();
    let decoded = load_image_file(&path).unwrap();
    assert_eq!(decoded.format, PhotoFormat::Png);
    assert_eq!(decoded.rgba, img, "alpha kept");
}

#[test]
fn loading_never_modifies_the_source_file() {
    let dir = tempfile::tempdir().unwrap();
    // Fixed, old modification time: any write would move it to "now".
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    for name in ["exif_orientation6.jpg", "cmyk_plain.jpg", "quadrants_lossy.webp"] {
        let path = dir.path().join(name);
        let original = fixture_bytes(name);
        std::fs::write(&path, &original).unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), old);

        load_image_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));

        assert_eq!(std::fs::read(&path).unwrap(), original, "{name}: bytes unchanged");
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), old, "{name}: mtime unchanged");
    }
}
