//! Parity of the character crop (reference spec §1.3) against fixtures made by
//! `tools/parity/gen_preprocess.py` from the reference StoryMaker code (astronaut sample photo,
//! anti-aliased ellipse mask).

use std::path::PathBuf;

use storymaker::imaging::character::{character_crop, clip_pixels, resize_bicubic_pil, PreprocessError};
use storymaker::imaging::Mask;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/preprocess").join(name)
}

fn inputs() -> (image::RgbImage, Mask) {
    let photo = image::open(root().join("assets/sample/astronaut.png")).expect("photo").to_rgb8();
    let mask = Mask::from_gray(image::open(fixture("mask.png")).expect("mask").to_luma8());
    (photo, mask)
}

#[test]
fn crop_and_clip_pixels_match_reference() {
    let (photo, mask) = inputs();
    let crop = character_crop(&photo, &mask).expect("crop");
    let want = image::open(fixture("crop224.png")).expect("crop fixture").to_rgb8();
    assert_eq!(crop.dimensions(), (224, 224));
    assert_eq!(want.dimensions(), (224, 224));
    let diffs: Vec<u8> = crop.as_raw().iter().zip(want.as_raw()).map(|(a, b)| a.abs_diff(*b)).collect();
    let max_u8 = diffs.iter().copied().max().unwrap_or(0);
    let n_off = diffs.iter().filter(|&&d| d != 0).count();
    println!("crop: max abs diff {max_u8}, {n_off} of {} values differ", diffs.len());
    assert!(max_u8 <= 1, "crop max abs diff {max_u8} > 1");

    let bytes = std::fs::read(fixture("clip_img.f32")).expect("clip fixture");
    let want_px: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let got_px = clip_pixels(&crop);
    assert_eq!(got_px.len(), 3 * 224 * 224);
    assert_eq!(want_px.len(), got_px.len());
    let max_f = got_px.iter().zip(&want_px).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("clip pixels: max abs diff {max_f:e}");
    assert!(max_f.is_finite() && max_f <= 1e-2, "clip max abs diff {max_f}");

    // Normalisation alone, on the reference's own uint8 crop.
    let own = clip_pixels(&want);
    let max_n = own.iter().zip(&want_px).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    println!("clip normalisation of reference crop: max abs diff {max_n:e}");
    assert!(max_n <= 1e-5, "normalisation max abs diff {max_n}");
}

#[test]
fn empty_mask_is_an_error() {
    let (photo, mask) = inputs();
    let empty = Mask::filled(mask.width(), mask.height(), 0);
    assert_eq!(character_crop(&photo, &empty), Err(PreprocessError::EmptyMask));
}

#[test]
fn mask_of_another_size_is_an_error() {
    let (photo, _) = inputs();
    let small = Mask::filled(10, 10, 255);
    assert!(matches!(character_crop(&photo, &small), Err(PreprocessError::SizeMismatch { .. })));
}

/// Pillow-compatible BICUBIC on noise. Upscales and vertical-down/horizontal-up shapes are bit-exact;
/// for shapes that shrink both ways Pillow's pass-order rule is not fully identified (see
/// `resize_bicubic_pil`), so those get the crop's 1-level tolerance.
#[test]
fn resize_matches_pillow_bicubic() {
    let src = image::open(fixture("resize_in.png")).expect("resize_in").to_rgb8();
    for (w, h, tol) in [(57u32, 70u32, 0u8), (40, 20, 0), (20, 12, 1), (35, 25, 1)] {
        let want = image::open(fixture(&format!("resize_{w}x{h}.png"))).expect("resize fixture").to_rgb8();
        let got = resize_bicubic_pil(&src, w, h);
        assert_eq!(got.dimensions(), (w, h));
        let max = got.as_raw().iter().zip(want.as_raw()).map(|(a, b)| a.abs_diff(*b)).max().unwrap_or(0);
        println!("resize 41x29 -> {w}x{h}: max abs diff {max}");
        assert!(max <= tol, "41x29 -> {w}x{h} differs from Pillow by {max} > {tol}");
    }
}
