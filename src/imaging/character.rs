//! The character crop fed to the CLIP image encoder (reference spec §1.3) and CLIP pixel
//! normalisation (§1.2).
//!
//! Steps, matching `StableDiffusionXLStoryMakerPipeline.crop_image` of the reference:
//! 1. tight bounding box of the non-zero mask pixels, crop photo and mask to it;
//! 2. soften the cropped mask with OpenCV's 5x5 `GaussianBlur(sigma = 0)` on u8 (separable binomial
//!    `[1,4,6,4,1]/16`, border reflect-101, rounded half up);
//! 3. composite over white, `trunc(255 (1 - a) + a c)` with `a = blur / 255` in f64;
//! 4. resize to 224x224 ignoring aspect ratio with a Pillow-compatible BICUBIC (`a = -0.5`,
//!    support widened by the scale on downscale, 22-bit fixed-point coefficients, horizontal pass
//!    then vertical pass with u8 rounding in between).

use image::RgbImage;

use super::Mask;

/// CLIP input side.
pub const CLIP_SIZE: u32 = 224;
/// CLIP's per-channel mean (RGB), as in transformers' `CLIPImageProcessor` defaults.
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's per-channel std (RGB): 0.26862954, 0.26130258, 0.27577711 rounded to the nearest f32.
pub const CLIP_STD: [f32; 3] = [0.268_629_55, 0.261_302_6, 0.275_777_1];

/// Why a character crop could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreprocessError {
    /// The mask has no painted pixel, so there is no character to crop.
    #[error("the character mask is empty; paint over the character before generating")]
    EmptyMask,
    /// The mask was made for a photo of another size.
    #[error("the mask is {mask_w} × {mask_h} pixels but the photo is {photo_w} × {photo_h}; redo the mask")]
    SizeMismatch { photo_w: u32, photo_h: u32, mask_w: u32, mask_h: u32 },
}

/// The 224x224 white-background character composite (uint8, before CLIP normalisation).
pub fn character_crop(photo: &RgbImage, mask: &Mask) -> Result<RgbImage, PreprocessError> {
    let (pw, ph) = photo.dimensions();
    if (pw, ph) != (mask.width(), mask.height()) {
        return Err(PreprocessError::SizeMismatch {
            photo_w: pw,
            photo_h: ph,
            mask_w: mask.width(),
            mask_h: mask.height(),
        });
    }
    let r = mask.bbox().ok_or(PreprocessError::EmptyMask)?;
    let (w, h) = (r.w as usize, r.h as usize);
    let mut m = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            m[y * w + x] = mask.get(r.x + x as u32, r.y + y as u32);
        }
    }
    let soft = gaussian5_u8(&m, w, h);
    let mut comp = RgbImage::new(r.w, r.h);
    for y in 0..h {
        for x in 0..w {
            let a = f64::from(soft[y * w + x]) / 255.0;
            let src = photo.get_pixel(r.x + x as u32, r.y + y as u32).0;
            let px = src.map(|c| (255.0 * (1.0 - a) + a * f64::from(c)) as u8);
            comp.put_pixel(x as u32, y as u32, image::Rgb(px));
        }
    }
    Ok(resize_bicubic_pil(&comp, CLIP_SIZE, CLIP_SIZE))
}

/// CLIP pixel values, CHW float32 RGB: `(u8 / 255 - mean) / std`. `img` should already be
/// 224x224 (every image StoryMaker feeds to CLIP is), the length is `3 * w * h`.
pub fn clip_pixels(img: &RgbImage) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let plane = w as usize * h as usize;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            let v = f32::from(p.0[c]) * (1.0 / 255.0);
            out[c * plane + i] = (v - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    out
}

/// OpenCV `borderInterpolate` with `BORDER_REFLECT_101`.
fn reflect101(mut p: isize, len: usize) -> usize {
    let len = len as isize;
    if len == 1 {
        return 0;
    }
    while p < 0 || p >= len {
        p = if p < 0 { -p } else { 2 * len - 2 - p };
    }
    p as usize
}

/// OpenCV `GaussianBlur(src, (5, 5), 0)` on one u8 plane: exact `(Σ k_i k_j p + 128) >> 8`.
fn gaussian5_u8(src: &[u8], w: usize, h: usize) -> Vec<u8> {
    const K: [u32; 5] = [1, 4, 6, 4, 1];
    let mut tmp = vec![0u32; w * h];
    for y in 0..h {
        for x in 0..w {
            tmp[y * w + x] =
                (0..5).map(|i| K[i] * u32::from(src[y * w + reflect101(x as isize + i as isize - 2, w)])).sum();
        }
    }
    let mut out = vec![0u8; w * h];
    for y in 0..h {
        for x in 0..w {
            let s: u32 = (0..5).map(|i| K[i] * tmp[reflect101(y as isize + i as isize - 2, h) * w + x]).sum();
            out[y * w + x] = ((s + 128) >> 8) as u8;
        }
    }
    out
}

/// Pillow's bicubic kernel (`a = -0.5`).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow `precompute_coeffs` + `normalize_coeffs_8bpc`: per output index, the first input index and
/// the fixed-point weights.
fn pil_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C `(int)` truncation toward zero, then clamping, as Pillow does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut k: Vec<f64> = (xmin..xmax).map(|x| bicubic((x as f64 - center + 0.5) * ss)).collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|v| *v /= ww);
            }
            let fixed = k
                .iter()
                .map(|&v| {
                    let s = v * f64::from(1u32 << PRECISION_BITS);
                    (if v < 0.0 { s - 0.5 } else { s + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One Pillow 8-bit convolution pass along x (`horizontal`) or y, with u8 rounding.
fn resample_pass(src: &RgbImage, out_w: u32, out_h: u32, horizontal: bool) -> RgbImage {
    let (in_len, out_len) =
        if horizontal { (src.width() as usize, out_w as usize) } else { (src.height() as usize, out_h as usize) };
    let coeffs = pil_coeffs(in_len, out_len);
    let mut out = RgbImage::new(out_w, out_h);
    for y in 0..out_h {
        for x in 0..out_w {
            let (i, fixed) = if horizontal { (x, y) } else { (y, x) };
            let (start, k) = &coeffs[i as usize];
            let mut acc = [1i32 << (PRECISION_BITS - 1); 3];
            for (j, &w) in k.iter().enumerate() {
                let p = if horizontal {
                    src.get_pixel((start + j) as u32, fixed)
                } else {
                    src.get_pixel(fixed, (start + j) as u32)
                };
                for (a, &v) in acc.iter_mut().zip(&p.0) {
                    *a += i32::from(v) * w;
                }
            }
            out.put_pixel(x, y, image::Rgb(acc.map(clip8)));
        }
    }
    out
}

/// `PIL.Image.resize((w, h))` with the default BICUBIC filter on an RGB image: two separable 8-bit
/// passes with u8 rounding between them (a pass is skipped when that side is unchanged).
///
/// Pass order (measured against Pillow 13.0, whose C source is not at hand): horizontal first when the
/// height grows; vertical first when the height shrinks and the width grows or stays. When both shrink
/// we run the vertical pass first if it reduces more. That reproduces the reference crop
/// (500x350 -> 224x224) bit-exactly, but Pillow's rule for *both-downscale* shapes is not fully
/// identified: for some near-equal ratios (e.g. 346x329 -> 224x224) Pillow runs horizontal first and
/// this differs from Pillow by a few grey levels (up to 13 on random-noise images).
pub fn resize_bicubic_pil(img: &RgbImage, out_w: u32, out_h: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    let vertical_first = h > out_h && (w <= out_w || f64::from(h) / f64::from(out_h) > f64::from(w) / f64::from(out_w));
    let mut cur = img.clone();
    if vertical_first && h != out_h {
        cur = resample_pass(&cur, cur.width(), out_h, false);
    }
    if cur.width() != out_w {
        cur = resample_pass(&cur, out_w, cur.height(), true);
    }
    if cur.height() != out_h {
        cur = resample_pass(&cur, out_w, out_h, false);
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect101_matches_opencv() {
        assert_eq!([-2, -1, 0, 4, 5, 6].map(|p| reflect101(p, 5)), [2, 1, 0, 4, 3, 2]);
        assert_eq!(reflect101(-2, 1), 0);
    }

    #[test]
    fn blur_keeps_constant_and_resize_keeps_constant() {
        let src = vec![200u8; 7 * 3];
        assert!(gaussian5_u8(&src, 7, 3).iter().all(|&v| v == 200));
        let img = RgbImage::from_pixel(37, 91, image::Rgb([10, 128, 250]));
        let out = resize_bicubic_pil(&img, 224, 224);
        assert!(out.pixels().all(|p| p.0 == [10, 128, 250]));
    }
}
