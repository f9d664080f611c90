//! Face identity: the ArcFace embedding the StoryMaker adapter is conditioned on (reference spec §1.4).
//!
//! As insightface's `ArcFaceONNX.get`: the photo is similarity-aligned to the 112x112 ArcFace template with the
//! five keypoints ([`crate::imaging::face_align::aligned_face`], insightface `norm_crop`), turned into an RGB blob
//! `(x - 127.5) / 127.5` (raw 0..255 when the graph normalises its own input, insightface's rule for mxnet
//! exports such as SFace), run through the recogniser (`w600k_r50.onnx`: 512 values) and L2-normalised
//! (`normed_embedding`, the vector StoryMaker feeds to the adapter).

use image::RgbImage;

use super::onnx::{FloatTensor, InferenceSession, OnnxModel};
use super::FaceError;
use crate::imaging::face_align::aligned_face;

/// Side of the aligned crop ArcFace-style recognisers take.
pub const RECOGNIZER_SIZE: u32 = 112;

/// A face recogniser on any [`InferenceSession`] with input `[1, 3, 112, 112]`.
pub struct FaceRecognizer {
    session: Box<dyn InferenceSession>,
    mean: f32,
    scale: f32,
}

impl FaceRecognizer {
    /// Loads a recogniser file (input 112x112, one output `[1, D]`).
    pub fn load(path: &std::path::Path) -> Result<FaceRecognizer, FaceError> {
        let model = OnnxModel::read(path)?;
        let outputs = model.info().output_names.clone();
        if outputs.len() != 1 {
            return Err(FaceError::NotARecognizer { path: path.display().to_string(), outputs });
        }
        let normalises = model.info().normalises_input;
        let size = RECOGNIZER_SIZE as usize;
        let session = model.prepare(size, size)?;
        Ok(FaceRecognizer::from_session(Box::new(session), normalises))
    }

    /// `graph_normalises`: the graph subtracts and scales its input itself (feed raw 0..255 RGB).
    pub fn from_session(session: Box<dyn InferenceSession>, graph_normalises: bool) -> FaceRecognizer {
        let (mean, std) = if graph_normalises { (0.0, 1.0) } else { (127.5, 127.5) };
        FaceRecognizer { session, mean, scale: (1.0f64 / std) as f32 }
    }

    /// The network input for an aligned 112x112 RGB crop (OpenCV `blobFromImage`: `(x - mean) * (1 / std)`).
    pub fn blob(&self, crop: &RgbImage) -> FloatTensor {
        super::detect::image_blob(crop, false, self.mean, self.scale)
    }

    /// The recogniser's raw output on an aligned crop (not normalised).
    pub fn raw_embedding(&self, crop: &RgbImage) -> Result<Vec<f32>, FaceError> {
        let s = RECOGNIZER_SIZE;
        if crop.dimensions() != (s, s) {
            return Err(FaceError::CropSize { width: crop.width(), height: crop.height() });
        }
        let outputs = self.session.run(self.blob(crop))?;
        let out = outputs.into_iter().next().ok_or_else(|| FaceError::Outputs {
            path: self.session.source().to_string(),
            detail: "the recogniser returned no output".into(),
        })?;
        let dims_ok = match out.shape.as_slice() {
            [1, d] | [d] => *d >= 2,
            _ => false,
        };
        if !dims_ok {
            return Err(FaceError::Outputs {
                path: self.session.source().to_string(),
                detail: format!("the recogniser output has shape {:?}, expected [1, D]", out.shape),
            });
        }
        Ok(out.data)
    }

    /// The L2-normalised identity of an aligned crop.
    pub fn embed_aligned(&self, crop: &RgbImage) -> Result<Vec<f32>, FaceError> {
        normalize(self.raw_embedding(crop)?)
    }

    /// Aligns the face at `kps` (photo pixels) and returns its L2-normalised identity.
    pub fn embed(&self, img: &RgbImage, kps: &[[f32; 2]; 5]) -> Result<Vec<f32>, FaceError> {
        let crop = aligned_face(img, kps, RECOGNIZER_SIZE)?;
        self.embed_aligned(&crop)
    }
}

/// Divides by the L2 norm (computed in f64); an all-zero or non-finite embedding is an error, not a silent NaN.
pub fn normalize(v: Vec<f32>) -> Result<Vec<f32>, FaceError> {
    let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if !norm.is_finite() || norm <= 1e-12 {
        return Err(FaceError::BadEmbedding { norm });
    }
    Ok(v.into_iter().map(|x| (f64::from(x) / norm) as f32).collect())
}

/// Cosine similarity of two embeddings (1 = same direction); 0 when either is zero or the lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += f64::from(x) * f64::from(y);
        aa += f64::from(x) * f64::from(x);
        bb += f64::from(y) * f64::from(y);
    }
    if aa <= 0.0 || bb <= 0.0 {
        return 0.0;
    }
    (ab / (aa.sqrt() * bb.sqrt())) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_and_cosine() {
        let v = normalize(vec![3.0, 4.0]).expect("norm");
        assert_eq!(v, vec![0.6, 0.8]);
        assert!(matches!(normalize(vec![0.0; 4]), Err(FaceError::BadEmbedding { .. })));
        assert!(matches!(normalize(vec![f32::NAN, 1.0]), Err(FaceError::BadEmbedding { .. })));
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert_eq!(cosine(&[1.0], &[1.0, 2.0]), 0.0);
    }
}
