//! One-click character masks: person/background segmentation with an ONNX model on the CPU (issue 10).
//!
//! StoryMaker conditions on a masked crop of each character (reference spec §1.3) and its authors used an
//! unreleased segmentation model, so artists need a mask they can get in one click and then touch up with the
//! brush. Three published model families are supported, each with the pre/post-processing its own reference code
//! uses (read from rembg, BiRefNet's and briaai's inference scripts), because a model fed the wrong normalisation
//! silently produces a worse mask:
//!
//! | family | size | input resize | normalisation | output |
//! |---|---|---|---|---|
//! | U²-Net human seg (Apache-2.0) | 320² | Lanczos3 (PIL) | `x / max(x)`, ImageNet mean/std | 7 side outputs, first used; min-max |
//! | BiRefNet (MIT) | 1024² | bilinear (PIL, antialiased) | `x / 255`, ImageNet mean/std | logits: sigmoid |
//! | IS-Net / RMBG-1.4 layout | 1024² | bilinear (torch, no antialias) | `x / 255 - 0.5` | probabilities; min-max |
//!
//! All families are brought back to the photo size with bilinear interpolation (torch `align_corners=False`),
//! then quantised to 8 bits with rounding. RMBG-1.4's own weights are licensed for non-commercial use only
//! ([`SegmentFamily::licence`]).
//!
//! Models traced at a fixed size are run at that size; fp16 files are converted to float32 at load time
//! ([`OnnxModel::read_as_f32`]). The work is plain CPU code with no UI types, so the app runs it on a worker
//! thread and tests run it directly.

use std::path::{Path, PathBuf};

use image::RgbImage;
use thiserror::Error;

use crate::face::onnx::{FloatTensor, InferenceSession, ModelInfo, OnnxError, OnnxModel};
use crate::imaging::Mask;

/// Sub-folder of the models folder holding the segmentation model (any `.onnx` file).
pub const SEGMENTATION_DIR: &str = "segmentation";

/// ImageNet channel statistics (U²-Net and BiRefNet are trained with them).
const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A supported model family (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentFamily {
    U2NetHuman,
    BiRefNet,
    IsNet,
}

/// How the photo is resized to the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputResize {
    /// PIL `Image.resize(..., LANCZOS)`, as rembg does.
    Lanczos3,
    /// PIL `Image.resize(..., BILINEAR)` (antialiased on downscale), as torchvision's `Resize` on PIL images.
    PilBilinear,
    /// `torch.nn.functional.interpolate(mode="bilinear")` without antialiasing, as briaai's RMBG script.
    TorchBilinear,
}

impl SegmentFamily {
    pub fn label(self) -> &'static str {
        match self {
            SegmentFamily::U2NetHuman => "U²-Net human segmentation",
            SegmentFamily::BiRefNet => "BiRefNet",
            SegmentFamily::IsNet => "IS-Net / RMBG-1.4",
        }
    }

    /// The input size the family is trained and usually traced at, used when the file leaves it symbolic.
    pub fn default_size(self) -> usize {
        match self {
            SegmentFamily::U2NetHuman => 320,
            SegmentFamily::BiRefNet | SegmentFamily::IsNet => 1024,
        }
    }

    /// The licence of the published weights of the family, shown next to the model.
    pub fn licence(self) -> &'static str {
        match self {
            SegmentFamily::U2NetHuman => "Apache-2.0 (U²-Net human segmentation)",
            SegmentFamily::BiRefNet => "MIT (BiRefNet)",
            SegmentFamily::IsNet => {
                "IS-Net weights: Apache-2.0; briaai RMBG-1.4: non-commercial use only (bria-rmbg-1.4 licence); \
                 the @imgly/background-removal copy: AGPL-3.0"
            }
        }
    }

    fn mean_std(self) -> ([f32; 3], [f32; 3]) {
        match self {
            SegmentFamily::U2NetHuman | SegmentFamily::BiRefNet => (IMAGENET_MEAN, IMAGENET_STD),
            SegmentFamily::IsNet => ([0.5; 3], [1.0; 3]),
        }
    }

    fn resize(self) -> InputResize {
        match self {
            SegmentFamily::U2NetHuman => InputResize::Lanczos3,
            SegmentFamily::BiRefNet => InputResize::PilBilinear,
            SegmentFamily::IsNet => InputResize::TorchBilinear,
        }
    }

    /// BiRefNet's graph ends on logits (its reference applies `sigmoid`); the others end on probabilities.
    fn sigmoid(self) -> bool {
        self == SegmentFamily::BiRefNet
    }

    /// rembg (U²-Net) and briaai (RMBG) stretch the prediction to [0, 1]; BiRefNet uses the sigmoid as is.
    fn min_max(self) -> bool {
        self != SegmentFamily::BiRefNet
    }
}

/// Why a mask could not be made.
#[derive(Debug, Error)]
pub enum SegmentError {
    #[error(
        "no segmentation model is installed: put a person segmentation ONNX file (BiRefNet or U²-Net human \
         segmentation recommended) in {0}; the brush still works without it"
    )]
    NoModel(String),
    #[error("cannot read the models folder {path}: {source}")]
    Folder { path: String, source: std::io::Error },
    #[error(
        "{path} does not look like a supported segmentation model (input `{input}`, outputs {outputs:?}); \
         supported: U²-Net human segmentation, BiRefNet, IS-Net/RMBG-1.4 — or put the family in the file name"
    )]
    UnknownFamily { path: String, input: String, outputs: Vec<String> },
    #[error("the segmentation model {path} produced {detail}; a one-channel mask was expected")]
    BadOutput { path: String, detail: String },
    #[error("the photo is empty")]
    EmptyPhoto,
    #[error(transparent)]
    Onnx(#[from] OnnxError),
}

/// The model file of `<models>/segmentation/`: the first `.onnx` file by name.
pub fn find_segmentation_model(models_dir: &Path) -> Result<PathBuf, SegmentError> {
    let dir = models_dir.join(SEGMENTATION_DIR);
    let shown = dir.display().to_string();
    let entries = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SegmentError::NoModel(shown)),
        Err(source) => return Err(SegmentError::Folder { path: shown, source }),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x.eq_ignore_ascii_case("onnx")))
        .collect();
    files.sort();
    files.into_iter().next().ok_or(SegmentError::NoModel(shown))
}

/// Tells the family from the file name when it says so (`birefnet`, `u2net`, `isnet`, `rmbg`), otherwise from
/// the graph's signature: BiRefNet's exports name their tensors `input_image`/`output_image`, U²-Net returns its
/// seven side outputs d0..d6, IS-Net/RMBG exports take `input` and return `output` first.
pub fn detect_family(info: &ModelInfo, file_name: &str) -> Option<SegmentFamily> {
    let name = file_name.to_ascii_lowercase();
    if name.contains("birefnet") {
        return Some(SegmentFamily::BiRefNet);
    }
    if name.contains("u2net") {
        return Some(SegmentFamily::U2NetHuman);
    }
    if name.contains("isnet") || name.contains("rmbg") {
        return Some(SegmentFamily::IsNet);
    }
    let first_out = info.output_names.first().map(String::as_str).unwrap_or("");
    if info.input_name == "input_image" || first_out == "output_image" {
        Some(SegmentFamily::BiRefNet)
    } else if info.output_names.len() == 7 {
        Some(SegmentFamily::U2NetHuman)
    } else if info.input_name == "input" && first_out == "output" {
        Some(SegmentFamily::IsNet)
    } else {
        None
    }
}

/// The photo as the family's input tensor `[1, 3, height, width]`.
pub fn preprocess(photo: &RgbImage, family: SegmentFamily, height: usize, width: usize) -> FloatTensor {
    let (w, h) = (width as u32, height as u32);
    let planes: [Vec<f32>; 3] = match family.resize() {
        resize @ (InputResize::Lanczos3 | InputResize::PilBilinear) => {
            let small = pil_resize(photo, w, h, resize == InputResize::Lanczos3);
            std::array::from_fn(|c| small.pixels().map(|p| p.0[c] as f32).collect())
        }
        InputResize::TorchBilinear => std::array::from_fn(|c| {
            let plane: Vec<f32> = photo.pixels().map(|p| p.0[c] as f32).collect();
            resize_bilinear(&plane, photo.width() as usize, photo.height() as usize, width, height)
        }),
    };
    // rembg divides by the brightest value of the resized image rather than by 255.
    let scale = match family {
        SegmentFamily::U2NetHuman => planes.iter().flatten().fold(0f32, |m, &v| m.max(v)).max(1e-6),
        _ => 255.0,
    };
    let (mean, std) = family.mean_std();
    let mut data = Vec::with_capacity(3 * width * height);
    for c in 0..3 {
        data.extend(planes[c].iter().map(|&v| (v / scale - mean[c]) / std[c]));
    }
    FloatTensor { shape: vec![1, 3, height, width], data }
}

/// The model's first output (a `[1, 1, H, W]` or `[1, H, W]` map) as the photo-sized 8-bit mask.
pub fn postprocess(
    output: &FloatTensor,
    family: SegmentFamily,
    photo_width: u32,
    photo_height: u32,
    source: &str,
) -> Result<Mask, SegmentError> {
    let bad = |detail: String| SegmentError::BadOutput { path: source.to_string(), detail };
    let shape = &output.shape;
    let leading_ones = shape.len() >= 3 && shape[..shape.len() - 2].iter().all(|&d| d == 1);
    let (h, w) = match shape.as_slice() {
        [.., h, w] if leading_ones && shape.len() <= 4 && h * w == output.data.len() => (*h, *w),
        _ => return Err(bad(format!("an output of shape {shape:?}"))),
    };
    let mut plane = output.data.clone();
    if family.sigmoid() {
        plane.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
    }
    let mut full = resize_bilinear(&plane, w, h, photo_width as usize, photo_height as usize);
    if family.min_max() {
        let (lo, hi) = full.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let range = hi - lo;
        full.iter_mut().for_each(|v| *v = if range > 0.0 { (*v - lo) / range } else { 0.0 });
    }
    if full.iter().any(|v| !v.is_finite()) {
        return Err(bad("values that are not numbers".into()));
    }
    let bytes = full.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
    Mask::from_raw(photo_width, photo_height, bytes).ok_or_else(|| bad("a mask of the wrong size".into()))
}

/// PIL's `Image.resize` with the LANCZOS (`lanczos`) or BILINEAR filter, reproduced exactly: the filter widened
/// by the scale when shrinking, 22-bit fixed-point weights, a horizontal then a vertical pass, each rounded to 8
/// bits. The `image` crate's resize differs by up to 3 grey levels, which the models' references would not see.
fn pil_resize(src: &RgbImage, dw: u32, dh: u32, lanczos: bool) -> RgbImage {
    const BITS: u32 = 22;
    let filter = |x: f64| -> f64 {
        let x = x.abs();
        if lanczos {
            let sinc =
                |x: f64| if x == 0.0 { 1.0 } else { (std::f64::consts::PI * x).sin() / (std::f64::consts::PI * x) };
            if x < 3.0 {
                sinc(x) * sinc(x / 3.0)
            } else {
                0.0
            }
        } else if x < 1.0 {
            1.0 - x
        } else {
            0.0
        }
    };
    let support = if lanczos { 3.0 } else { 1.0 };
    // For each output pixel: first input index and fixed-point weights.
    let coeffs = |in_len: u32, out_len: u32| -> Vec<(usize, Vec<i64>)> {
        let scale = in_len as f64 / out_len as f64;
        let fscale = scale.max(1.0);
        let ss = support * fscale;
        (0..out_len)
            .map(|i| {
                let center = (i as f64 + 0.5) * scale;
                let xmin = ((center - ss + 0.5).floor() as i64).max(0) as usize;
                let xmax = ((center + ss + 0.5).floor() as i64).min(in_len as i64) as usize;
                let w: Vec<f64> = (xmin..xmax).map(|x| filter((x as f64 - center + 0.5) / fscale)).collect();
                let total: f64 = w.iter().sum();
                let k = w
                    .iter()
                    .map(|v| {
                        let v = if total != 0.0 { v / total } else { 0.0 } * (1u64 << BITS) as f64;
                        if v < 0.0 {
                            (v - 0.5).trunc() as i64
                        } else {
                            (v + 0.5).trunc() as i64
                        }
                    })
                    .collect();
                (xmin, k)
            })
            .collect()
    };
    let clip = |v: i64| ((v >> BITS).clamp(0, 255)) as u8;
    let half = 1i64 << (BITS - 1);
    let (sw, sh) = src.dimensions();
    let hc = coeffs(sw, dw);
    let mut tmp = RgbImage::new(dw, sh);
    for y in 0..sh {
        for (x, (x0, k)) in hc.iter().enumerate() {
            let mut acc = [half; 3];
            for (j, &kj) in k.iter().enumerate() {
                let p = src.get_pixel((x0 + j) as u32, y).0;
                (0..3).for_each(|c| acc[c] += p[c] as i64 * kj);
            }
            tmp.put_pixel(x as u32, y, image::Rgb(acc.map(clip)));
        }
    }
    let vc = coeffs(sh, dh);
    let mut out = RgbImage::new(dw, dh);
    for (y, (y0, k)) in vc.iter().enumerate() {
        for x in 0..dw {
            let mut acc = [half; 3];
            for (j, &kj) in k.iter().enumerate() {
                let p = tmp.get_pixel(x, (y0 + j) as u32).0;
                (0..3).for_each(|c| acc[c] += p[c] as i64 * kj);
            }
            out.put_pixel(x, y as u32, image::Rgb(acc.map(clip)));
        }
    }
    out
}

/// Bilinear resize of one plane with half-pixel centres and clamped edges (torch `interpolate(mode="bilinear",
/// align_corners=False)`; equal to PIL's bilinear when enlarging).
pub fn resize_bilinear(src: &[f32], sw: usize, sh: usize, dw: usize, dh: usize) -> Vec<f32> {
    if sw == 0 || sh == 0 || dw == 0 || dh == 0 {
        return vec![0.0; dw * dh];
    }
    let taps = |dst: usize, src_len: usize| -> Vec<(usize, usize, f32)> {
        let scale = src_len as f32 / dst as f32;
        (0..dst)
            .map(|i| {
                let x = ((i as f32 + 0.5) * scale - 0.5).max(0.0);
                let x0 = (x.floor() as usize).min(src_len - 1);
                let x1 = (x0 + 1).min(src_len - 1);
                (x0, x1, x - x0 as f32)
            })
            .collect()
    };
    let xs = taps(dw, sw);
    let ys = taps(dh, sh);
    let mut out = Vec::with_capacity(dw * dh);
    for &(y0, y1, fy) in &ys {
        let (r0, r1) = (&src[y0 * sw..(y0 + 1) * sw], &src[y1 * sw..(y1 + 1) * sw]);
        for &(x0, x1, fx) in &xs {
            let top = r0[x0] + (r0[x1] - r0[x0]) * fx;
            let bottom = r1[x0] + (r1[x1] - r1[x0]) * fx;
            out.push(top + (bottom - top) * fy);
        }
    }
    out
}

/// Keeps the person under a click: the 8-connected region of mask values ≥ 128 containing `(x, y)`, plus the
/// soft (< 128) edge pixels touching it, so anti-aliased outlines survive. `None` when the click is not on the
/// mask. For photos with several people, where the model masks all of them.
pub fn keep_region_at(mask: &Mask, x: u32, y: u32) -> Option<Mask> {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    if mask.get(x, y) < 128 {
        return None;
    }
    let data = mask.data();
    let mut inside = vec![false; w * h];
    let mut stack = vec![(x as usize, y as usize)];
    inside[y as usize * w + x as usize] = true;
    let neighbours = |cx: usize, cy: usize| {
        (-1i64..=1)
            .flat_map(move |dy| (-1i64..=1).map(move |dx| (cx as i64 + dx, cy as i64 + dy)))
            .filter(move |&(nx, ny)| nx >= 0 && ny >= 0 && (nx as usize) < w && (ny as usize) < h && (nx, ny) != (0, 0))
    };
    while let Some((cx, cy)) = stack.pop() {
        for (nx, ny) in neighbours(cx, cy) {
            let i = ny as usize * w + nx as usize;
            if !inside[i] && data[i] >= 128 {
                inside[i] = true;
                stack.push((nx as usize, ny as usize));
            }
        }
    }
    let mut out = vec![0u8; w * h];
    for (i, &v) in data.iter().enumerate() {
        let (cx, cy) = (i % w, i / w);
        let keep = inside[i] || (v > 0 && neighbours(cx, cy).any(|(nx, ny)| inside[ny as usize * w + nx as usize]));
        if keep {
            out[i] = v;
        }
    }
    Mask::from_raw(mask.width(), mask.height(), out)
}

/// Where a running [`Segmenter::mask`] is, for a progress line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentStage {
    Preparing,
    Running,
    Finishing,
}

/// A loaded segmentation model, ready to mask photos of any size.
pub struct Segmenter {
    session: Box<dyn InferenceSession>,
    family: SegmentFamily,
}

impl Segmenter {
    /// Loads a model file (fp16 converted to float32), tells its family and compiles it for its fixed input
    /// size, or the family's usual size when the file leaves it open. Runs on the shared pool of every core.
    pub fn load(path: &Path) -> Result<Segmenter, SegmentError> {
        Self::load_with(path, None)
    }

    /// [`Self::load`] with the network's matrix products on a private pool of `threads` threads (benchmarks).
    pub fn load_with_threads(path: &Path, threads: usize) -> Result<Segmenter, SegmentError> {
        Self::load_with(path, Some(threads))
    }

    fn load_with(path: &Path, threads: Option<usize>) -> Result<Segmenter, SegmentError> {
        let model = OnnxModel::read_as_f32(path)?;
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let family = detect_family(model.info(), &file).ok_or_else(|| SegmentError::UnknownFamily {
            path: path.display().to_string(),
            input: model.info().input_name.clone(),
            outputs: model.info().output_names.clone(),
        })?;
        let (h, w) = model.fixed_input_hw().unwrap_or((family.default_size(), family.default_size()));
        let session = model.prepare(h, w)?;
        let session = match threads {
            Some(n) => session.with_threads(n),
            None => session,
        };
        Ok(Segmenter { session: Box::new(session), family })
    }

    /// Wraps an already prepared session (another engine, or a test double).
    pub fn from_session(session: Box<dyn InferenceSession>, family: SegmentFamily) -> Segmenter {
        Segmenter { session, family }
    }

    pub fn family(&self) -> SegmentFamily {
        self.family
    }

    pub fn source(&self) -> &str {
        self.session.source()
    }

    /// The photo's mask (its size), calling `progress` as the stages start.
    pub fn mask(&self, photo: &RgbImage, progress: &dyn Fn(SegmentStage)) -> Result<Mask, SegmentError> {
        if photo.width() == 0 || photo.height() == 0 {
            return Err(SegmentError::EmptyPhoto);
        }
        progress(SegmentStage::Preparing);
        let [_, _, h, w] = self.session.input_shape();
        let input = preprocess(photo, self.family, h, w);
        progress(SegmentStage::Running);
        let outputs = self.session.run(input)?;
        progress(SegmentStage::Finishing);
        let first = outputs
            .first()
            .ok_or_else(|| SegmentError::BadOutput { path: self.source().to_string(), detail: "no output".into() })?;
        postprocess(first, self.family, photo.width(), photo.height(), self.source())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(input: &str, outputs: &[&str]) -> ModelInfo {
        ModelInfo {
            input_name: input.into(),
            input_dims: vec![Some(1), Some(3), Some(1024), Some(1024)],
            output_names: outputs.iter().map(|s| s.to_string()).collect(),
            normalises_input: false,
            dequantized: 0,
            half_converted: 0,
        }
    }

    #[test]
    fn families_are_told_by_signature_or_file_name() {
        assert_eq!(detect_family(&info("input_image", &["output_image"]), "m.onnx"), Some(SegmentFamily::BiRefNet));
        let seven = ["1959", "1960", "1961", "1962", "1963", "1964", "1965"];
        assert_eq!(detect_family(&info("input.1", &seven), "m.onnx"), Some(SegmentFamily::U2NetHuman));
        assert_eq!(detect_family(&info("input", &["output"]), "m.onnx"), Some(SegmentFamily::IsNet));
        assert_eq!(detect_family(&info("x", &["y"]), "m.onnx"), None);
        assert_eq!(detect_family(&info("x", &["y"]), "RMBG-1.4.onnx"), Some(SegmentFamily::IsNet));
    }

    #[test]
    fn bilinear_matches_hand_computed_values() {
        // 2x1 → 4x1: torch gives [a, a+0.25(b-a), a+0.75(b-a), b].
        let out = resize_bilinear(&[0.0, 4.0], 2, 1, 4, 1);
        assert_eq!(out, vec![0.0, 1.0, 3.0, 4.0]);
    }

    #[test]
    fn keep_region_keeps_only_the_clicked_person_with_its_soft_edge() {
        let mut m = Mask::filled(10, 4, 0);
        let mut raw = m.data().to_vec();
        for y in 0..4 {
            raw[y * 10 + 1] = 255;
            raw[y * 10 + 2] = 60; // soft edge of the left person
            raw[y * 10 + 7] = 255;
        }
        m = Mask::from_raw(10, 4, raw).expect("size");
        let left = keep_region_at(&m, 1, 2).expect("on the mask");
        assert_eq!(left.get(1, 0), 255);
        assert_eq!(left.get(2, 3), 60);
        assert_eq!(left.get(7, 1), 0);
        assert!(keep_region_at(&m, 5, 1).is_none());
    }

    #[test]
    fn birefnet_logits_go_through_a_sigmoid_and_others_are_stretched() {
        let out = FloatTensor { shape: vec![1, 1, 1, 2], data: vec![0.0, 100.0] };
        let b = postprocess(&out, SegmentFamily::BiRefNet, 2, 1, "t").expect("mask");
        assert_eq!(b.data(), &[128, 255]);
        let out = FloatTensor { shape: vec![1, 1, 1, 2], data: vec![0.2, 0.4] };
        let i = postprocess(&out, SegmentFamily::IsNet, 2, 1, "t").expect("mask");
        assert_eq!(i.data(), &[0, 255]);
        let bad = FloatTensor { shape: vec![1, 2, 2, 2], data: vec![0.0; 8] };
        assert!(postprocess(&bad, SegmentFamily::IsNet, 2, 2, "t").is_err());
    }

    #[test]
    fn a_missing_folder_says_where_to_put_the_model() {
        let d = tempfile::tempdir().expect("tempdir");
        let err = find_segmentation_model(d.path()).expect_err("no model");
        assert!(err.to_string().contains("segmentation"), "{err}");
        std::fs::create_dir_all(d.path().join(SEGMENTATION_DIR)).expect("mkdir");
        std::fs::write(d.path().join("segmentation/b.onnx"), b"x").expect("write");
        std::fs::write(d.path().join("segmentation/a.onnx"), b"x").expect("write");
        assert!(find_segmentation_model(d.path()).expect("found").ends_with("a.onnx"));
    }
}
