//! The aligned face crop fed to the CLIP image encoder (reference spec §1.4, parity row P5 of §8.1).
//!
//! The reference calls insightface's `face_align.norm_crop(img, kps, image_size=224)` on the original
//! RGB photo:
//! 1. destination = the ArcFace 112x112 five-point template scaled to the crop size
//!    ([`arcface_template`]);
//! 2. a similarity transform (rotation, uniform scale, translation) from the five keypoints to that
//!    template, least squares as scikit-image's `SimilarityTransform.estimate` (Umeyama 1991,
//!    [`umeyama_similarity`]);
//! 3. OpenCV `cv2.warpAffine(img, M, (size, size), borderValue=0)`: bilinear, constant black border
//!    ([`warp_affine_bilinear`]).
//!
//! Parity notes (measured by `tests/face_align.rs` against `tools/parity/gen_face_align.py`):
//! * insightface hands float32 arrays to scikit-image, which then runs its means and SVD in float32. We
//!   compute in f64, which equals scikit-image's estimate on the same points in f64 to ~1e-13; the
//!   reference's own float32 matrix differs from it by up to ~3e-5, which moves a handful of output
//!   values (tens out of 150 528) by one grey level.
//! * OpenCV 4.11 replaced the fixed-point bilinear warp (`INTER_BITS` 5, 15-bit weights) by a float32
//!   kernel for 8-bit images. [`warp_affine_bilinear`] reproduces the new kernel as it runs on x86-64
//!   with AVX2 (OpenCV 4.11 … 5.x; 5.0 is the version pinned for parity) bit for bit;
//!   [`warp_affine_bilinear_fixed_point`] reproduces the old one (OpenCV ≤ 4.10) bit for bit. The two
//!   differ by up to 3–4 grey levels on ~10% of the values, so the emulation must match the OpenCV the
//!   reference ran with; the spec's "fixed-point" note (§8.1 P5) predates OpenCV 4.11.

use image::RgbImage;

use super::Mask;

/// Side of the square face crop StoryMaker feeds to CLIP.
pub const CLIP_FACE_SIZE: u32 = 224;

/// insightface's `arcface_dst`: left eye, right eye, nose tip, left and right mouth corner of the
/// canonical 112x112 ArcFace crop (float32 in the reference, as here).
pub const ARCFACE_TEMPLATE_112: [[f32; 2]; 5] =
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];

/// How many of the five keypoints must lie on painted mask pixels ([`check_face_in_mask`]).
pub const MIN_KEYPOINTS_IN_MASK: usize = 3;

/// Why a face could not be aligned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaceAlignError {
    /// A keypoint coordinate is NaN or infinite.
    #[error("the face keypoints contain invalid numbers (NaN or infinity); detect the face again")]
    NonFinite,
    /// Source and destination point lists do not pair up.
    #[error(
        "cannot fit a face transform to {src} keypoints and {dst} template points (need the same number, at least 2)"
    )]
    PointCount { src: usize, dst: usize },
    /// The keypoints (or the template) collapse to one spot, so no rotation and scale fits them.
    #[error("the face keypoints are degenerate (they all lie on the same spot); detect the face again")]
    Degenerate,
    /// insightface's template rule only covers multiples of 112 and of 128.
    #[error("a {0} pixel face crop is not supported: the size must be a positive multiple of 112 or 128")]
    UnsupportedSize(u32),
    /// The photo has no pixels.
    #[error("the photo is empty (0 pixels), so there is no face to crop")]
    EmptyImage,
    /// The selected face does not lie on the character's mask (§1.3 crops the character by the mask; a face
    /// elsewhere in the photo would pair one person's face with another person's body).
    #[error(
        "the selected face is not on the character mask: only {inside} of its 5 landmarks (eyes, nose, mouth \
         corners) fall on painted pixels, {min} are needed; paint over this character's face or pick the face \
         of the masked person"
    )]
    FaceOutsideMask { inside: usize, min: usize },
}

/// insightface `estimate_norm`'s destination points for a `size`x`size` crop: for a multiple of 112 the
/// template times `size / 112`; otherwise, for a multiple of 128, the template times `size / 128`, shifted
/// right by `8 * size / 128`. Arithmetic in f32 as numpy does on the float32 template (so 224 gives exactly
/// twice [`ARCFACE_TEMPLATE_112`]).
pub fn arcface_template(size: u32) -> Result<[[f32; 2]; 5], FaceAlignError> {
    let (ratio, diff_x) = if size > 0 && size.is_multiple_of(112) {
        (f64::from(size) / 112.0, 0.0f64)
    } else if size > 0 && size.is_multiple_of(128) {
        let r = f64::from(size) / 128.0;
        (r, 8.0 * r)
    } else {
        return Err(FaceAlignError::UnsupportedSize(size));
    };
    let (ratio, diff_x) = (ratio as f32, diff_x as f32);
    Ok(ARCFACE_TEMPLATE_112.map(|[x, y]| [x * ratio + diff_x, y * ratio]))
}

/// Least-squares similarity transform (rotation, uniform scale, translation; no reflection) mapping `src`
/// onto `dst`, as scikit-image's `SimilarityTransform.estimate` (Umeyama 1991, eqs. 38–43) computes it in
/// f64. Returns the top two rows of the homogeneous matrix: `dst ≈ M · [x, y, 1]`.
///
/// In two dimensions Umeyama's SVD solution has a closed form: with the centred cross-covariance
/// `A = Σ d̃ s̃ᵀ / n` and the source variance `σ² = Σ |s̃|² / n`, the transform's linear part is
/// `[[a, -b], [b, a]]` with `a = (A₀₀ + A₁₁) / σ²`, `b = (A₁₀ − A₀₁) / σ²` (this is also what the
/// reflection-avoiding and rank-deficient branches of scikit-image reduce to).
///
/// Errors: [`FaceAlignError::PointCount`] unless both lists have the same length ≥ 2,
/// [`FaceAlignError::NonFinite`] for NaN/infinite coordinates, [`FaceAlignError::Degenerate`] when the
/// source points coincide (scikit-image returns NaN there), the destination points coincide, or the
/// best rotation fit has zero scale (a pure mirror image).
pub fn umeyama_similarity(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Result<[[f64; 3]; 2], FaceAlignError> {
    if src.len() != dst.len() || src.len() < 2 {
        return Err(FaceAlignError::PointCount { src: src.len(), dst: dst.len() });
    }
    if src.iter().chain(dst).flatten().any(|v| !v.is_finite()) {
        return Err(FaceAlignError::NonFinite);
    }
    let n = src.len() as f64;
    let mean = |pts: &[[f64; 2]]| {
        let s = pts.iter().fold([0.0f64; 2], |acc, p| [acc[0] + p[0], acc[1] + p[1]]);
        [s[0] / n, s[1] / n]
    };
    let (sm, dm) = (mean(src), mean(dst));
    let mut a = [[0.0f64; 2]; 2];
    let mut var = 0.0f64;
    for (s, d) in src.iter().zip(dst) {
        let (sx, sy) = (s[0] - sm[0], s[1] - sm[1]);
        let (dx, dy) = (d[0] - dm[0], d[1] - dm[1]);
        a[0][0] += dx * sx;
        a[0][1] += dx * sy;
        a[1][0] += dy * sx;
        a[1][1] += dy * sy;
        var += sx * sx + sy * sy;
    }
    let a = a.map(|row| row.map(|v| v / n));
    let var = var / n;
    // Source points on one spot (relative to their magnitude): no scale can be estimated.
    let src_mag = src.iter().flatten().fold(1.0f64, |m, v| m.max(v.abs()));
    if var.is_nan() || var.sqrt() <= 1e-9 * src_mag {
        return Err(FaceAlignError::Degenerate);
    }
    let p = a[0][0] + a[1][1];
    let q = a[1][0] - a[0][1];
    let fro = a.iter().flatten().map(|v| v * v).sum::<f64>().sqrt();
    let fit = p.hypot(q);
    if fit.is_nan() || fit <= 1e-12 * fro {
        return Err(FaceAlignError::Degenerate);
    }
    let (ca, cb) = (p / var, q / var);
    let tx = dm[0] - (ca * sm[0] - cb * sm[1]);
    let ty = dm[1] - (cb * sm[0] + ca * sm[1]);
    let m = [[ca, -cb, tx], [cb, ca, ty]];
    if m.iter().flatten().all(|v| v.is_finite()) && ca.hypot(cb) > 0.0 {
        Ok(m)
    } else {
        Err(FaceAlignError::Degenerate)
    }
}

/// insightface `estimate_norm(kps, size)`: the similarity matrix taking the five keypoints (photo pixels)
/// to the ArcFace template for a `size`x`size` crop.
pub fn estimate_norm(kps: &[[f32; 2]; 5], size: u32) -> Result<[[f64; 3]; 2], FaceAlignError> {
    let dst = arcface_template(size)?;
    umeyama_similarity(&kps.map(|p| p.map(f64::from)), &dst.map(|p| p.map(f64::from)))
}

/// insightface `norm_crop(img, kps, image_size=size)`: the `size`x`size` aligned face (224 for CLIP,
/// 112 for ArcFace), warped with [`warp_affine_bilinear`].
pub fn aligned_face(img: &RgbImage, kps: &[[f32; 2]; 5], size: u32) -> Result<RgbImage, FaceAlignError> {
    if img.width() == 0 || img.height() == 0 {
        return Err(FaceAlignError::EmptyImage);
    }
    let m = estimate_norm(kps, size)?;
    Ok(warp_affine_bilinear(img, &m, size, size))
}

/// How many keypoints lie on painted mask pixels: a keypoint counts when it is finite, inside the mask and
/// the pixel containing it (`floor(x)`, `floor(y)`) is non-zero — the same "any non-zero value is the
/// character" rule the reference uses for the crop box (§1.3).
pub fn keypoints_in_mask(kps: &[[f32; 2]; 5], mask: &Mask) -> usize {
    kps.iter()
        .filter(|[x, y]| {
            x.is_finite()
                && y.is_finite()
                && *x >= 0.0
                && *y >= 0.0
                && *x < mask.width() as f32
                && *y < mask.height() as f32
                && mask.get(x.floor() as u32, y.floor() as u32) != 0
        })
        .count()
}

/// The reference never checks that the chosen face belongs to the masked character (§1.3 failure modes);
/// we refuse a face that is clearly elsewhere: at least [`MIN_KEYPOINTS_IN_MASK`] (3) of the 5 keypoints
/// must fall on painted pixels. A majority rule tolerates a landmark on an anti-aliased or slightly too
/// tight mask edge (a mouth corner, an eye of a turned head), and still rejects a face of another person,
/// whose landmarks all lie on background.
pub fn check_face_in_mask(kps: &[[f32; 2]; 5], mask: &Mask) -> Result<(), FaceAlignError> {
    let inside = keypoints_in_mask(kps, mask);
    if inside >= MIN_KEYPOINTS_IN_MASK {
        Ok(())
    } else {
        Err(FaceAlignError::FaceOutsideMask { inside, min: MIN_KEYPOINTS_IN_MASK })
    }
}

/// `cv::invertAffineTransform` as `cv::warpAffine` does it inline (f64, a singular matrix gives zeros):
/// the destination-to-source map `[m0, m1, m2, m3, m4, m5]`.
fn invert_affine_opencv(m: &[[f64; 3]; 2]) -> [f64; 6] {
    let [[m0, m1, m2], [m3, m4, m5]] = *m;
    let d = m0 * m4 - m1 * m3;
    let d = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (i0, i1, i3, i4) = (m4 * d, m1 * -d, m3 * -d, m0 * d);
    let i2 = -i0 * m2 - i1 * m5;
    let i5 = -i3 * m2 - i4 * m5;
    [i0, i1, i2, i3, i4, i5]
}

/// The source pixel at (`x`, `y`), or the black border outside the image.
fn tap(img: &RgbImage, x: i64, y: i64) -> [u8; 3] {
    if x >= 0 && y >= 0 && x < i64::from(img.width()) && y < i64::from(img.height()) {
        img.get_pixel(x as u32, y as u32).0
    } else {
        [0; 3]
    }
}

/// `floor` to an integer; `None` for NaN or values beyond the i32 range OpenCV converts to.
fn floor_i32(v: f32) -> Option<i64> {
    let f = v.floor();
    (-2_147_483_648.0..2_147_483_648.0).contains(&f).then_some(f as i64)
}

/// Columns per SIMD block in OpenCV's x86 AVX2 warp kernel (`2 × 8` f32 lanes); the kernel is dispatched
/// for SSE2, SSE4.1 and AVX2 only (not AVX-512), so every AVX2 CPU uses this block.
const OPENCV_SIMD_COLUMNS: u32 = 16;

/// `cv2.warpAffine(img, m, (out_w, out_h), flags=INTER_LINEAR, borderMode=BORDER_CONSTANT, borderValue=0)`
/// on an 8-bit RGB image as OpenCV 4.11 … 5.x computes it on x86-64 with AVX2
/// (`warpAffineLinearInvoker_8UC3`, the default "accurate" algorithm hint):
/// * `m` (source → destination) is inverted in f64, then each entry is rounded to f32;
/// * SIMD columns (whole blocks of 16): per row `bx = f32(y)·M1 + M2`, `by = f32(y)·M4 + M5` (two
///   roundings each), per pixel `sx = fma(M0, x, bx)`, `sy = fma(M3, x, by)`; the remaining
///   `out_w mod 16` columns (OpenCV's scalar tail, compiled with FMA contraction):
///   `sx = fma(x, M0, y·M1) + M2`, `sy = fma(x, M3, y·M4) + M5`;
/// * `ix = floor(sx)`, `ax = sx − ix` (likewise y); a pixel whose 2x2 neighbourhood misses the image
///   entirely (`ix ∉ [−1, w−1]` or `iy ∉ [−1, h−1]`) is black, otherwise each outside tap reads 0;
/// * `v0 = fma(ax, p01 − p00, p00)`, `v1 = fma(ax, p11 − p10, p10)`, `v = fma(ay, v1 − v0, v0)` in f32,
///   rounded half to even and saturated to u8.
///
/// OpenCV itself computes differently on CPUs without AVX2 (8-column SSE blocks, no FMA) and on ARM.
pub fn warp_affine_bilinear(img: &RgbImage, m: &[[f64; 3]; 2], out_w: u32, out_h: u32) -> RgbImage {
    let mut out = RgbImage::new(out_w, out_h);
    if img.width() == 0 || img.height() == 0 {
        return out;
    }
    let mf = invert_affine_opencv(m).map(|v| v as f32);
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let simd_cols = out_w - out_w % OPENCV_SIMD_COLUMNS;
    for y in 0..out_h {
        let yf = y as f32;
        let bx = yf * mf[1] + mf[2];
        let by = yf * mf[4] + mf[5];
        for x in 0..out_w {
            let xf = x as f32;
            let (sx, sy) = if x < simd_cols {
                (mf[0].mul_add(xf, bx), mf[3].mul_add(xf, by))
            } else {
                (xf.mul_add(mf[0], yf * mf[1]) + mf[2], xf.mul_add(mf[3], yf * mf[4]) + mf[5])
            };
            let (Some(ix), Some(iy)) = (floor_i32(sx), floor_i32(sy)) else { continue };
            if ix < -1 || ix >= w || iy < -1 || iy >= h {
                continue; // all four taps outside: the border value, already 0
            }
            let (ax, ay) = (sx - ix as f32, sy - iy as f32);
            let (p00, p01, p10, p11) =
                (tap(img, ix, iy), tap(img, ix + 1, iy), tap(img, ix, iy + 1), tap(img, ix + 1, iy + 1));
            let px = std::array::from_fn(|c| {
                let (a, b, cc, d) = (f32::from(p00[c]), f32::from(p01[c]), f32::from(p10[c]), f32::from(p11[c]));
                let v0 = ax.mul_add(b - a, a);
                let v1 = ax.mul_add(d - cc, cc);
                let v = ay.mul_add(v1 - v0, v0);
                v.round_ties_even().clamp(0.0, 255.0) as u8
            });
            out.put_pixel(x, y, image::Rgb(px));
        }
    }
    out
}

/// `cv2.warpAffine` bilinear with a constant black border as OpenCV ≤ 4.10 computes it for 8-bit images
/// (`WarpAffineInvoker` + `remapBilinear`), all in integers after the f64 inversion:
/// * `adelta[x] = round(M0·x·1024)`, `bdelta[x] = round(M3·x·1024)` and per row
///   `X0 = round((M1·y + M2)·1024) + 16`, `Y0 = round((M4·y + M5)·1024) + 16` (`AB_BITS` 10, rounding
///   half to even, the 16 centres the 1/32 cell);
/// * `X = (X0 + adelta[x]) >> 5`: integer part `X >> 5` (saturated to i16), fraction `ax = X & 31`
///   (`INTER_BITS` 5), likewise `Y`;
/// * weights `(32−ax)(32−ay)·32`, `ax(32−ay)·32`, `(32−ax)ay·32`, `ax·ay·32` (OpenCV's 15-bit table, exact
///   for bilinear), result `(Σ w·p + 2¹⁴) >> 15` saturated;
/// * a pixel whose neighbourhood misses the image is black; partly outside, the outside taps read 0.
pub fn warp_affine_bilinear_fixed_point(img: &RgbImage, m: &[[f64; 3]; 2], out_w: u32, out_h: u32) -> RgbImage {
    const AB_SCALE: f64 = 1024.0;
    const ROUND_DELTA: i32 = 16;
    let mut out = RgbImage::new(out_w, out_h);
    if img.width() == 0 || img.height() == 0 {
        return out;
    }
    // `as i32` saturates where OpenCV's cvRound would overflow; only absurd matrices get there.
    let round = |v: f64| v.round_ties_even() as i32;
    let inv = invert_affine_opencv(m);
    let adelta: Vec<i32> = (0..out_w).map(|x| round(inv[0] * f64::from(x) * AB_SCALE)).collect();
    let bdelta: Vec<i32> = (0..out_w).map(|x| round(inv[3] * f64::from(x) * AB_SCALE)).collect();
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    for y in 0..out_h {
        let yd = f64::from(y);
        let x0 = round((inv[1] * yd + inv[2]) * AB_SCALE).wrapping_add(ROUND_DELTA);
        let y0 = round((inv[4] * yd + inv[5]) * AB_SCALE).wrapping_add(ROUND_DELTA);
        for x in 0..out_w {
            let xx = x0.wrapping_add(adelta[x as usize]) >> 5;
            let yy = y0.wrapping_add(bdelta[x as usize]) >> 5;
            let sx = i64::from((xx >> 5).clamp(i32::from(i16::MIN), i32::from(i16::MAX)));
            let sy = i64::from((yy >> 5).clamp(i32::from(i16::MIN), i32::from(i16::MAX)));
            if sx + 1 < 0 || sx >= w || sy + 1 < 0 || sy >= h {
                continue;
            }
            let (ax, ay) = (xx & 31, yy & 31);
            let wt = [(32 - ax) * (32 - ay) * 32, ax * (32 - ay) * 32, (32 - ax) * ay * 32, ax * ay * 32];
            let taps = [tap(img, sx, sy), tap(img, sx + 1, sy), tap(img, sx, sy + 1), tap(img, sx + 1, sy + 1)];
            let px = std::array::from_fn(|c| {
                let sum: i32 = taps.iter().zip(&wt).map(|(t, &k)| i32::from(t[c]) * k).sum();
                ((sum + (1 << 14)) >> 15).clamp(0, 255) as u8
            });
            out.put_pixel(x, y, image::Rgb(px));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(w: u32, h: u32) -> RgbImage {
        let mut s = 0x2545_f491_u32;
        RgbImage::from_fn(w, h, |_, _| {
            image::Rgb(std::array::from_fn(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 24) as u8
            }))
        })
    }

    #[test]
    fn templates_follow_insightface_rule() {
        assert_eq!(arcface_template(112), Ok(ARCFACE_TEMPLATE_112));
        let t224 = arcface_template(224).expect("224");
        for (a, b) in t224.iter().zip(&ARCFACE_TEMPLATE_112) {
            assert_eq!(*a, [b[0] * 2.0, b[1] * 2.0]);
        }
        let t128 = arcface_template(128).expect("128");
        assert_eq!(t128[0], [38.2946 + 8.0, 51.6963]);
        for bad in [0, 100, 200] {
            assert_eq!(arcface_template(bad), Err(FaceAlignError::UnsupportedSize(bad)));
        }
    }

    #[test]
    fn umeyama_recovers_exact_similarity_and_inverse_roundtrips() {
        let m = [[1.2f64, -0.5, 30.0], [0.5, 1.2, -12.5]];
        let src = [[10.0, 20.0], [50.0, 22.0], [31.0, 40.0], [15.0, 61.0], [48.0, 60.0]];
        let dst = src.map(|[x, y]| [m[0][0] * x + m[0][1] * y + m[0][2], m[1][0] * x + m[1][1] * y + m[1][2]]);
        let got = umeyama_similarity(&src, &dst).expect("fit");
        for (g, e) in got.iter().flatten().zip(m.iter().flatten()) {
            assert!((g - e).abs() < 1e-12, "{got:?}");
        }
        let inv = invert_affine_opencv(&m);
        let p = [7.0, -3.0];
        let q = [m[0][0] * p[0] + m[0][1] * p[1] + m[0][2], m[1][0] * p[0] + m[1][1] * p[1] + m[1][2]];
        let back = [inv[0] * q[0] + inv[1] * q[1] + inv[2], inv[3] * q[0] + inv[4] * q[1] + inv[5]];
        assert!((back[0] - p[0]).abs() < 1e-12 && (back[1] - p[1]).abs() < 1e-12);
    }

    #[test]
    fn umeyama_rejects_bad_input() {
        let dst = ARCFACE_TEMPLATE_112.map(|p| p.map(f64::from));
        assert_eq!(umeyama_similarity(&[[5.0, 5.0]; 5], &dst), Err(FaceAlignError::Degenerate));
        assert_eq!(umeyama_similarity(&dst, &[[5.0, 5.0]; 5]), Err(FaceAlignError::Degenerate));
        let mut nan = dst;
        nan[2][1] = f64::NAN;
        assert_eq!(umeyama_similarity(&nan, &dst), Err(FaceAlignError::NonFinite));
        assert_eq!(umeyama_similarity(&dst[..3], &dst), Err(FaceAlignError::PointCount { src: 3, dst: 5 }));
        // A pure mirror image: the best rotation has zero scale.
        let src = [[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]];
        let mirrored = src.map(|[x, y]| [x, -y]);
        assert_eq!(umeyama_similarity(&src, &mirrored), Err(FaceAlignError::Degenerate));
    }

    #[test]
    fn identity_and_integer_shift_copy_pixels() {
        let img = noise(37, 29);
        let id = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        assert_eq!(warp_affine_bilinear(&img, &id, 37, 29), img);
        assert_eq!(warp_affine_bilinear_fixed_point(&img, &id, 37, 29), img);
        // Shift right/down by (3, 2): the first columns/rows are border.
        let shift = [[1.0, 0.0, 3.0], [0.0, 1.0, 2.0]];
        for out in [warp_affine_bilinear(&img, &shift, 37, 29), warp_affine_bilinear_fixed_point(&img, &shift, 37, 29)]
        {
            assert_eq!(out.get_pixel(0, 0).0, [0, 0, 0]);
            assert_eq!(out.get_pixel(10, 7), img.get_pixel(7, 5));
        }
    }

    #[test]
    fn half_pixel_shift_averages_with_border_on_the_edge() {
        let img = RgbImage::from_pixel(8, 8, image::Rgb([100, 200, 255]));
        // dst(x, y) = src(x - 0.5, y): column 0 mixes the border (0) and the image half and half.
        let m = [[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]];
        for out in [warp_affine_bilinear(&img, &m, 8, 8), warp_affine_bilinear_fixed_point(&img, &m, 8, 8)] {
            assert_eq!(out.get_pixel(0, 3).0, [50, 100, 128]);
            assert_eq!(out.get_pixel(4, 3).0, [100, 200, 255]);
        }
    }

    #[test]
    fn mask_rule_needs_three_landmarks() {
        let kps = [[10.5, 10.5], [20.5, 10.5], [15.5, 15.5], [11.5, 20.5], [19.5, 20.5]];
        let mut mask = Mask::filled(32, 32, 0);
        assert_eq!(check_face_in_mask(&kps, &mask), Err(FaceAlignError::FaceOutsideMask { inside: 0, min: 3 }));
        mask.stroke([10.5, 10.5], [20.5, 10.5], 1.0, 255);
        assert_eq!(keypoints_in_mask(&kps, &mask), 2);
        assert!(check_face_in_mask(&kps, &mask).is_err());
        mask.stroke([15.5, 15.5], [15.5, 15.5], 1.0, 255);
        assert_eq!(check_face_in_mask(&kps, &mask), Ok(()));
        let outside = [[-5.0, 1.0], [40.0, 1.0], [f32::NAN, 3.0], [1.0, 99.0], [3.0, -0.5]];
        assert_eq!(keypoints_in_mask(&outside, &Mask::filled(32, 32, 255)), 0);
    }
}
