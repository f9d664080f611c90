//! Face detection with five keypoints: insightface's SCRFD (`det_10g.onnx` of buffalo_l, reference spec §1.4)
//! and, for the real-model tests, OpenCV Zoo's YuNet, which has the same kind of anchor-per-location heads.
//!
//! SCRFD as insightface's `SCRFD.detect` runs it:
//! 1. **letterbox**: resize the photo, keeping its aspect ratio, to fit the detector's input (640x640), paste it
//!    top-left on a black canvas ([`letterbox`]; `det_scale` = new height / photo height);
//! 2. **blob**: RGB, `(x - 127.5) / 128`, NCHW;
//! 3. **decode** ([`decode_scrfd`]): nine outputs, scores / box distances / keypoint offsets for strides 8, 16, 32
//!    with two anchors per location (`(x, y) * stride` centres, each repeated twice); keep scores ≥ 0.5; box =
//!    centre ∓ distance·stride, keypoints = centre + offset·stride, all divided by `det_scale`;
//! 4. **NMS** ([`nms`]) at IoU 0.4 with insightface's "+1 pixel" box areas, highest score first.
//!
//! The arithmetic is float32 in the order numpy does it there, so the boxes match the reference decode on the
//! same network outputs to float rounding (tests/face_parity.rs: < 0.01 px).

use image::RgbImage;

use super::onnx::{FloatTensor, InferenceSession, OnnxModel};
use super::FaceError;

/// Which detector family a model file is, told from its outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectorKind {
    /// insightface SCRFD with keypoints: 9 outputs (score, bbox, kps for strides 8/16/32), 2 anchors.
    Scrfd,
    /// OpenCV Zoo YuNet: 12 outputs (cls, obj, bbox, kps for strides 8/16/32), 1 anchor, anchor-free boxes.
    YuNet,
}

/// Detection settings; [`DetectorConfig::for_kind`] gives each family's reference values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectorConfig {
    /// Side of the square network input for graphs with a free input size (insightface `det_size`).
    pub input_size: usize,
    pub score_threshold: f32,
    pub nms_threshold: f32,
}

impl DetectorConfig {
    /// SCRFD: 640, 0.5, 0.4 (insightface `FaceAnalysis.prepare(det_size=(640, 640))`, `det_thresh`, SCRFD's NMS);
    /// YuNet: 640, 0.5, 0.3 (OpenCV Zoo's NMS threshold).
    pub fn for_kind(kind: DetectorKind) -> DetectorConfig {
        match kind {
            DetectorKind::Scrfd => DetectorConfig { input_size: 640, score_threshold: 0.5, nms_threshold: 0.4 },
            DetectorKind::YuNet => DetectorConfig { input_size: 640, score_threshold: 0.5, nms_threshold: 0.3 },
        }
    }
}

/// One detected face in photo pixels: box `[x1, y1, x2, y2]`, score, and the five keypoints (left eye, right
/// eye, nose, left and right mouth corner).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectedFace {
    pub bbox: [f32; 4],
    pub score: f32,
    pub kps: [[f32; 2]; 5],
}

impl DetectedFace {
    /// `(x2 - x1) * (y2 - y1)`, the reference's measure for "the largest face".
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1])
    }
}

/// Index of the face with the largest box area (the reference's choice, §1.4); the first one on ties.
pub fn largest_face(faces: &[DetectedFace]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, f) in faces.iter().enumerate() {
        if best.is_none_or(|(_, a)| f.area() > a) {
            best = Some((i, f.area()));
        }
    }
    best.map(|(i, _)| i)
}

/// A face detector on any [`InferenceSession`].
pub struct FaceDetector {
    session: Box<dyn InferenceSession>,
    kind: DetectorKind,
    config: DetectorConfig,
}

impl FaceDetector {
    /// Loads a detector file; the family is told from the outputs, the input size is the graph's own when fixed,
    /// else `config.input_size` (or the family default).
    pub fn load(path: &std::path::Path, config: Option<DetectorConfig>) -> Result<FaceDetector, FaceError> {
        let model = OnnxModel::read(path)?;
        let kind = detector_kind(&model.info().output_names).ok_or_else(|| FaceError::NotADetector {
            path: path.display().to_string(),
            outputs: model.info().output_names.clone(),
        })?;
        let mut config = config.unwrap_or_else(|| DetectorConfig::for_kind(kind));
        let (h, w) = match model.fixed_input_hw() {
            Some((h, w)) if h == w => (h, w),
            Some((h, w)) => {
                return Err(FaceError::NotADetector {
                    path: path.display().to_string(),
                    outputs: vec![format!("a non-square {w}x{h} input")],
                })
            }
            None => (config.input_size, config.input_size),
        };
        if !h.is_multiple_of(32) || h == 0 {
            return Err(FaceError::InputSize { size: h });
        }
        config.input_size = h;
        let session = model.prepare(h, w)?;
        FaceDetector::from_session(Box::new(session), kind, config)
    }

    /// Wraps a prepared session (its input must be square, a multiple of 32).
    pub fn from_session(
        session: Box<dyn InferenceSession>,
        kind: DetectorKind,
        mut config: DetectorConfig,
    ) -> Result<FaceDetector, FaceError> {
        let [_, _, h, w] = session.input_shape();
        if h != w || !h.is_multiple_of(32) || h == 0 {
            return Err(FaceError::InputSize { size: h.max(w) });
        }
        config.input_size = h;
        Ok(FaceDetector { session, kind, config })
    }

    pub fn kind(&self) -> DetectorKind {
        self.kind
    }

    pub fn config(&self) -> DetectorConfig {
        self.config
    }

    /// All faces in the photo, highest score first (after NMS). An empty list means no face was found.
    pub fn detect(&self, img: &RgbImage) -> Result<Vec<DetectedFace>, FaceError> {
        if img.width() == 0 || img.height() == 0 {
            return Err(FaceError::EmptyImage);
        }
        let (canvas, det_scale) = letterbox(img, self.config.input_size);
        let outputs = self.run_network(&canvas)?;
        self.decode(&outputs, det_scale)
    }

    /// The raw network outputs (graph order) for a letterboxed canvas.
    pub fn run_network(&self, canvas: &RgbImage) -> Result<Vec<FloatTensor>, FaceError> {
        Ok(self.session.run(self.blob(canvas))?)
    }

    /// The network input for a letterboxed canvas: SCRFD RGB `(x - 127.5) / 128`; YuNet BGR 0..255.
    pub fn blob(&self, canvas: &RgbImage) -> FloatTensor {
        match self.kind {
            DetectorKind::Scrfd => image_blob(canvas, false, 127.5, 1.0 / 128.0),
            DetectorKind::YuNet => image_blob(canvas, true, 0.0, 1.0),
        }
    }

    /// Boxes from raw network outputs (in graph order) for a canvas made with `det_scale`.
    pub fn decode(&self, outputs: &[FloatTensor], det_scale: f64) -> Result<Vec<DetectedFace>, FaceError> {
        let size = self.config.input_size;
        match self.kind {
            DetectorKind::Scrfd => decode_scrfd(outputs, size, det_scale, &self.config, self.session.source()),
            DetectorKind::YuNet => decode_yunet(outputs, size, det_scale, &self.config, self.session.source()),
        }
    }
}

/// SCRFD with keypoints has 9 outputs; YuNet has 12 named `cls_*`, `obj_*`, `bbox_*`, `kps_*`.
pub fn detector_kind(outputs: &[String]) -> Option<DetectorKind> {
    match outputs.len() {
        9 => Some(DetectorKind::Scrfd),
        12 if outputs.iter().any(|o| o.starts_with("obj_")) => Some(DetectorKind::YuNet),
        _ => None,
    }
}

/// NCHW float blob of an RGB image: `(v - mean) * scale` per value, channels reversed when `bgr`.
pub fn image_blob(img: &RgbImage, bgr: bool, mean: f32, scale: f32) -> FloatTensor {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = w * h;
    let mut data = vec![0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            let src = if bgr { 2 - c } else { c };
            data[c * plane + i] = (f32::from(p.0[src]) - mean) * scale;
        }
    }
    FloatTensor { shape: vec![1, 3, h, w], data }
}

/// insightface's letterbox: the photo resized (aspect kept; the side that fills the square is exactly `size`,
/// the other truncated as Python's `int()` does) and pasted top-left on a black `size`x`size` canvas. Returns
/// the canvas and `det_scale` = resized height / photo height, which maps detections back.
pub fn letterbox(img: &RgbImage, size: usize) -> (RgbImage, f64) {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let ratio = h / w;
    let (new_w, new_h) =
        if ratio > 1.0 { (((size as f64) / ratio) as usize, size) } else { (size, ((size as f64) * ratio) as usize) };
    let (new_w, new_h) = (new_w.clamp(1, size), new_h.clamp(1, size));
    let det_scale = new_h as f64 / h;
    let resized = resize_bilinear(img, new_w as u32, new_h as u32);
    let mut canvas = RgbImage::new(size as u32, size as u32);
    image::imageops::replace(&mut canvas, &resized, 0, 0);
    (canvas, det_scale)
}

/// Bilinear resize with OpenCV's `INTER_LINEAR` geometry (pixel centres at +0.5, edge pixels repeated, two taps
/// per axis even when shrinking), computed in f32 and rounded. OpenCV's own 8-bit kernel is fixed-point (and
/// differs between builds), so values can differ by one grey level; detection does not depend on that.
pub fn resize_bilinear(img: &RgbImage, new_w: u32, new_h: u32) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    if (w, h) == (new_w, new_h) || w == 0 || h == 0 {
        return if w == 0 || h == 0 { RgbImage::new(new_w, new_h) } else { img.clone() };
    }
    let taps = |dst: u32, src: u32| -> Vec<(u32, u32, f32)> {
        let scale = f64::from(src) / f64::from(dst);
        (0..dst)
            .map(|d| {
                let f = ((f64::from(d) + 0.5) * scale - 0.5) as f32;
                let mut i = f.floor();
                let mut a = f - i;
                if i < 0.0 {
                    i = 0.0;
                    a = 0.0;
                }
                let i = i as u32;
                if i >= src - 1 {
                    (src - 1, src - 1, 0.0)
                } else {
                    (i, i + 1, a)
                }
            })
            .collect()
    };
    let xs = taps(new_w, w);
    let ys = taps(new_h, h);
    let src = img.as_raw();
    let stride = w as usize * 3;
    // Horizontal pass into f32 rows, then vertical.
    let mut rows = vec![0f32; h as usize * new_w as usize * 3];
    for y in 0..h as usize {
        let line = &src[y * stride..(y + 1) * stride];
        let out = &mut rows[y * new_w as usize * 3..(y + 1) * new_w as usize * 3];
        for (x, &(x0, x1, a)) in xs.iter().enumerate() {
            for c in 0..3 {
                let p0 = f32::from(line[x0 as usize * 3 + c]);
                let p1 = f32::from(line[x1 as usize * 3 + c]);
                out[x * 3 + c] = p0 + a * (p1 - p0);
            }
        }
    }
    let row_len = new_w as usize * 3;
    let mut out = vec![0u8; new_h as usize * row_len];
    for (y, &(y0, y1, b)) in ys.iter().enumerate() {
        let r0 = &rows[y0 as usize * row_len..(y0 as usize + 1) * row_len];
        let r1 = &rows[y1 as usize * row_len..(y1 as usize + 1) * row_len];
        for (i, o) in out[y * row_len..(y + 1) * row_len].iter_mut().enumerate() {
            *o = (r0[i] + b * (r1[i] - r0[i])).round().clamp(0.0, 255.0) as u8;
        }
    }
    RgbImage::from_raw(new_w, new_h, out).unwrap_or_else(|| RgbImage::new(new_w, new_h))
}

/// Rows of one output, checked to be `[N, width]` or `[1, N, width]` with `N` = `rows`.
fn rows<'a>(
    outputs: &'a [FloatTensor],
    index: usize,
    rows: usize,
    width: usize,
    source: &str,
) -> Result<&'a [f32], FaceError> {
    let t = outputs.get(index).ok_or_else(|| FaceError::Outputs {
        path: source.to_string(),
        detail: format!("{} outputs, expected at least {}", outputs.len(), index + 1),
    })?;
    let ok = match t.shape.as_slice() {
        [n, c] => *n == rows && *c == width,
        [1, n, c] => *n == rows && *c == width,
        _ => false,
    };
    if !ok || t.data.len() != rows * width {
        return Err(FaceError::Outputs {
            path: source.to_string(),
            detail: format!("output {index} has shape {:?}, expected [{rows}, {width}]", t.shape),
        });
    }
    Ok(&t.data)
}

const STRIDES: [usize; 3] = [8, 16, 32];

/// SCRFD decode + NMS (module doc, steps 3–4) on outputs for a `size`x`size` input.
pub fn decode_scrfd(
    outputs: &[FloatTensor],
    size: usize,
    det_scale: f64,
    config: &DetectorConfig,
    source: &str,
) -> Result<Vec<DetectedFace>, FaceError> {
    const ANCHORS: usize = 2;
    let mut candidates = Vec::new();
    for (level, &stride) in STRIDES.iter().enumerate() {
        let side = size / stride;
        let n = side * side * ANCHORS;
        let scores = rows(outputs, level, n, 1, source)?;
        let boxes = rows(outputs, level + 3, n, 4, source)?;
        let kps = rows(outputs, level + 6, n, 10, source)?;
        let s = stride as f32;
        for (i, &score) in scores.iter().enumerate() {
            if score.is_nan() || score < config.score_threshold {
                continue;
            }
            let loc = i / ANCHORS;
            let (cx, cy) = (((loc % side) * stride) as f32, ((loc / side) * stride) as f32);
            let d = &boxes[i * 4..i * 4 + 4];
            let bbox = [cx - d[0] * s, cy - d[1] * s, cx + d[2] * s, cy + d[3] * s];
            let k = &kps[i * 10..i * 10 + 10];
            let pts = std::array::from_fn(|j| [cx + k[2 * j] * s, cy + k[2 * j + 1] * s]);
            candidates.push(DetectedFace { bbox, score, kps: pts });
        }
    }
    Ok(finish(candidates, det_scale, config.nms_threshold, true))
}

/// YuNet decode (OpenCV `FaceDetectorYN`): score `sqrt(cls * obj)`, box centre `(col + dx, row + dy) * stride`,
/// size `exp(dw, dh) * stride`, keypoints `(col + kx, row + ky) * stride`; NMS without the "+1".
pub fn decode_yunet(
    outputs: &[FloatTensor],
    size: usize,
    det_scale: f64,
    config: &DetectorConfig,
    source: &str,
) -> Result<Vec<DetectedFace>, FaceError> {
    let mut candidates = Vec::new();
    for (level, &stride) in STRIDES.iter().enumerate() {
        let side = size / stride;
        let n = side * side;
        let cls = rows(outputs, level, n, 1, source)?;
        let obj = rows(outputs, level + 3, n, 1, source)?;
        let boxes = rows(outputs, level + 6, n, 4, source)?;
        let kps = rows(outputs, level + 9, n, 10, source)?;
        let s = stride as f32;
        for i in 0..n {
            let score = (cls[i].clamp(0.0, 1.0) * obj[i].clamp(0.0, 1.0)).sqrt();
            if score.is_nan() || score < config.score_threshold {
                continue;
            }
            let (col, row) = ((i % side) as f32, (i / side) as f32);
            let d = &boxes[i * 4..i * 4 + 4];
            let (cx, cy) = ((col + d[0]) * s, (row + d[1]) * s);
            let (w, h) = (d[2].exp() * s, d[3].exp() * s);
            let (x1, y1) = (cx - w / 2.0, cy - h / 2.0);
            let k = &kps[i * 10..i * 10 + 10];
            let pts = std::array::from_fn(|j| [(col + k[2 * j]) * s, (row + k[2 * j + 1]) * s]);
            candidates.push(DetectedFace { bbox: [x1, y1, x1 + w, y1 + h], score, kps: pts });
        }
    }
    Ok(finish(candidates, det_scale, config.nms_threshold, false))
}

/// Maps candidates back to photo pixels, orders them by score (highest first) and runs NMS.
fn finish(mut faces: Vec<DetectedFace>, det_scale: f64, iou: f32, plus_one: bool) -> Vec<DetectedFace> {
    // numpy divides the float32 arrays by the Python float det_scale in float32.
    let scale = det_scale as f32;
    for f in &mut faces {
        f.bbox = f.bbox.map(|v| v / scale);
        f.kps = f.kps.map(|p| p.map(|v| v / scale));
    }
    // Stable sort: equal scores keep anchor order (numpy's argsort is not stable; exact ties are not expected
    // from a network's float outputs).
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let keep = nms(&faces, iou, plus_one);
    keep.into_iter().map(|i| faces[i].clone()).collect()
}

/// Greedy non-maximum suppression over faces already sorted by score: keeps a face unless it overlaps a kept one
/// by IoU above `threshold`. `plus_one`: insightface's areas `(x2 - x1 + 1) * (y2 - y1 + 1)` (pixel-inclusive
/// boxes), computed in f32 as numpy does.
pub fn nms(faces: &[DetectedFace], threshold: f32, plus_one: bool) -> Vec<usize> {
    let one = if plus_one { 1.0f32 } else { 0.0 };
    let area = |b: &[f32; 4]| (b[2] - b[0] + one) * (b[3] - b[1] + one);
    let mut suppressed = vec![false; faces.len()];
    let mut keep = Vec::new();
    for i in 0..faces.len() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let a = &faces[i].bbox;
        let area_a = area(a);
        for j in i + 1..faces.len() {
            if suppressed[j] {
                continue;
            }
            let b = &faces[j].bbox;
            let w = (a[2].min(b[2]) - a[0].max(b[0]) + one).max(0.0);
            let h = (a[3].min(b[3]) - a[1].max(b[1]) + one).max(0.0);
            let inter = w * h;
            let ovr = inter / (area_a + area(b) - inter);
            // numpy keeps `ovr <= thresh`; a NaN overlap (degenerate boxes) is not `<=` and is suppressed.
            if ovr.is_nan() || ovr > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(bbox: [f32; 4], score: f32) -> DetectedFace {
        DetectedFace { bbox, score, kps: [[0.0; 2]; 5] }
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes() {
        let faces = [
            face([0.0, 0.0, 10.0, 10.0], 0.9),
            face([1.0, 1.0, 11.0, 11.0], 0.8), // IoU with the first ~0.70: suppressed
            face([20.0, 20.0, 30.0, 30.0], 0.7),
            face([0.0, 0.0, 10.0, 4.0], 0.6), // inside the first, IoU (11*5)/121 = 0.45 > 0.4
            face([0.0, 0.0, 10.0, 3.0], 0.5), // IoU 44/121 = 0.36: kept
        ];
        assert_eq!(nms(&faces, 0.4, true), vec![0, 2, 4]);
        // Without the +1, the fourth box has IoU 40/100 = 0.4 with the first, which is kept (`<=`), and then
        // suppresses the fifth (IoU 30/40).
        assert_eq!(nms(&faces, 0.4, false), vec![0, 2, 3]);
    }

    #[test]
    fn largest_face_uses_box_area() {
        let faces = [face([0.0, 0.0, 10.0, 10.0], 0.9), face([0.0, 0.0, 20.0, 6.0], 0.6)];
        assert_eq!(largest_face(&faces), Some(1));
        assert_eq!(largest_face(&[]), None);
    }

    #[test]
    fn letterbox_keeps_aspect_and_pastes_top_left() {
        let img = RgbImage::from_pixel(200, 100, image::Rgb([200, 100, 50]));
        let (canvas, scale) = letterbox(&img, 64);
        assert_eq!(canvas.dimensions(), (64, 64));
        assert_eq!(scale, 32.0 / 100.0);
        assert_eq!(canvas.get_pixel(63, 31).0, [200, 100, 50]);
        assert_eq!(canvas.get_pixel(0, 32).0, [0, 0, 0]);
        let tall = RgbImage::from_pixel(30, 100, image::Rgb([9, 9, 9]));
        let (canvas, scale) = letterbox(&tall, 64);
        assert_eq!(scale, 0.64);
        // int(64 / (100 / 30)) = int(19.2) = 19 columns.
        assert_eq!(canvas.get_pixel(18, 63).0, [9, 9, 9]);
        assert_eq!(canvas.get_pixel(19, 0).0, [0, 0, 0]);
    }

    #[test]
    fn bilinear_resize_matches_hand_values() {
        // 2 -> 4 columns: centres map to -0.25, 0.25, 0.75, 1.25 -> clamp, 0.25, 0.75, clamp.
        let img = RgbImage::from_fn(2, 1, |x, _| image::Rgb([if x == 0 { 0 } else { 200 }; 3]));
        let out = resize_bilinear(&img, 4, 1);
        let row: Vec<u8> = out.pixels().map(|p| p.0[0]).collect();
        assert_eq!(row, vec![0, 50, 150, 200]);
    }

    #[test]
    fn scrfd_decode_maps_anchor_to_photo_pixels() {
        // size 32: stride 8 has 4x4 locations x 2 anchors = 32 rows; stride 16: 8; stride 32: 2.
        let mut outs = Vec::new();
        for (n, width) in [(32, 1), (8, 1), (2, 1), (32, 4), (8, 4), (2, 4), (32, 10), (8, 10), (2, 10)] {
            outs.push(FloatTensor { shape: vec![n, width], data: vec![0.0; n * width] });
        }
        // Anchor 1 of location (x=2, y=1) at stride 8: row (1*4 + 2)*2 + 1 = 13, centre (16, 8).
        outs[0].data[13] = 0.9;
        outs[3].data[13 * 4..13 * 4 + 4].copy_from_slice(&[1.0, 0.5, 2.0, 1.5]);
        outs[6].data[13 * 10] = 0.25;
        let cfg = DetectorConfig::for_kind(DetectorKind::Scrfd);
        let faces = decode_scrfd(&outs, 32, 0.5, &cfg, "test").expect("decode");
        assert_eq!(faces.len(), 1);
        assert_eq!(faces[0].bbox, [16.0, 8.0, 64.0, 40.0]);
        assert_eq!(faces[0].kps[0], [36.0, 16.0]);
        outs[4].shape = vec![7, 4];
        assert!(matches!(decode_scrfd(&outs, 32, 0.5, &cfg, "test"), Err(FaceError::Outputs { .. })));
    }
}
