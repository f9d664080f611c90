//! Face analysis of a character photo: every face with its box, keypoints and identity (reference spec §1.4),
//! from insightface's buffalo_l files the user already has.
//!
//! The app runs this off the UI thread and caches the result per photo (src/ui/face_panel.rs); the reference
//! picks the face with the largest box, which [`PhotoFaces::largest`] reports, and the character editor lets the
//! artist pick another one or place the keypoints by hand ([`FaceAnalyzer::embed_keypoints`]).

use std::path::{Path, PathBuf};

use image::RgbImage;
use thiserror::Error;

use super::detect::{largest_face, DetectedFace, DetectorConfig, FaceDetector};
use super::onnx::OnnxError;
use super::recognize::FaceRecognizer;
use crate::imaging::face_align::FaceAlignError;

/// Folder of insightface's model pack inside the models folder, and its two files the app uses.
pub const BUFFALO_L_DIR: &str = "buffalo_l";
pub const DETECTOR_FILE: &str = "det_10g.onnx";
pub const RECOGNIZER_FILE: &str = "w600k_r50.onnx";

/// Shown wherever the user points the app at buffalo_l.
pub const BUFFALO_L_LICENCE: &str = "insightface's buffalo_l models are licensed for non-commercial research \
     purposes only; images made with identities from them inherit that restriction.";

/// At most this many faces of one photo get an identity (the largest ones): group photos stay quick to analyse.
pub const MAX_EMBEDDED_FACES: usize = 8;

/// Why face analysis failed.
#[derive(Debug, Error)]
pub enum FaceError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(
        "{path} is not a face detector this app can use: its outputs are {}; insightface's SCRFD \
         (det_10g.onnx, 9 outputs) is expected",
        outputs.join(", ")
    )]
    NotADetector { path: String, outputs: Vec<String> },
    #[error(
        "{path} is not a face recogniser this app can use: it has {} outputs ({}); ArcFace (w600k_r50.onnx) \
         has one, the identity vector",
        outputs.len(),
        outputs.join(", ")
    )]
    NotARecognizer { path: String, outputs: Vec<String> },
    #[error("{path}: unexpected model output: {detail}")]
    Outputs { path: String, detail: String },
    #[error("the detector input must be square and a multiple of 32 pixels, got {size}")]
    InputSize { size: usize },
    #[error("the aligned face crop is {width}x{height}; the recogniser takes 112x112")]
    CropSize { width: u32, height: u32 },
    #[error("the photo is empty (0 pixels)")]
    EmptyImage,
    #[error("no face was found in the photo")]
    NoFace,
    #[error("the recogniser returned an unusable identity (L2 norm {norm:.1e})")]
    BadEmbedding { norm: f64 },
    #[error(transparent)]
    Align(#[from] FaceAlignError),
}

/// The buffalo_l files are not where the app looks for them.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "face analysis is not installed: {} missing in {dir}. Put insightface's buffalo_l model pack there \
     ({BUFFALO_L_DIR}/{DETECTOR_FILE} and {BUFFALO_L_DIR}/{RECOGNIZER_FILE}). Licence: {BUFFALO_L_LICENCE}",
    missing.join(" and ")
)]
pub struct FaceModelsMissing {
    pub dir: String,
    pub missing: Vec<String>,
}

/// Where the detector and recogniser files are.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FaceModelPaths {
    pub detector: PathBuf,
    pub recognizer: PathBuf,
}

/// `<models>/buffalo_l/{det_10g.onnx, w600k_r50.onnx}` when both files exist.
pub fn find_face_models(models_dir: &Path) -> Result<FaceModelPaths, FaceModelsMissing> {
    let dir = models_dir.join(BUFFALO_L_DIR);
    let paths = FaceModelPaths { detector: dir.join(DETECTOR_FILE), recognizer: dir.join(RECOGNIZER_FILE) };
    let missing: Vec<String> = [&paths.detector, &paths.recognizer]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned()))
        .collect();
    if missing.is_empty() {
        Ok(paths)
    } else {
        Err(FaceModelsMissing { dir: dir.display().to_string(), missing })
    }
}

/// One face of a photo with its identity (`None` past [`MAX_EMBEDDED_FACES`] or when its keypoints cannot be
/// aligned).
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzedFace {
    pub face: DetectedFace,
    pub identity: Option<Vec<f32>>,
}

/// Every face found in one photo, highest detection score first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PhotoFaces {
    pub faces: Vec<AnalyzedFace>,
}

impl PhotoFaces {
    /// The reference's choice: the largest box.
    pub fn largest(&self) -> Option<usize> {
        let detected: Vec<DetectedFace> = self.faces.iter().map(|f| f.face.clone()).collect();
        largest_face(&detected)
    }
}

/// Detector + recogniser, loaded once and shared by the background tasks.
pub struct FaceAnalyzer {
    pub detector: FaceDetector,
    pub recognizer: FaceRecognizer,
}

impl FaceAnalyzer {
    /// Loads both models (a few seconds for w600k_r50's 166 MB).
    pub fn load(paths: &FaceModelPaths) -> Result<FaceAnalyzer, FaceError> {
        let detector = FaceDetector::load(&paths.detector, None::<DetectorConfig>)?;
        let recognizer = FaceRecognizer::load(&paths.recognizer)?;
        Ok(FaceAnalyzer { detector, recognizer })
    }

    /// Every face in `img` (upright RGB photo) with identities for the [`MAX_EMBEDDED_FACES`] largest.
    pub fn analyze(&self, img: &RgbImage) -> Result<PhotoFaces, FaceError> {
        let found = self.detector.detect(img)?;
        let mut by_area: Vec<usize> = (0..found.len()).collect();
        by_area.sort_by(|&a, &b| found[b].area().total_cmp(&found[a].area()));
        let mut identities: Vec<Option<Vec<f32>>> = vec![None; found.len()];
        for &i in by_area.iter().take(MAX_EMBEDDED_FACES) {
            identities[i] = match self.recognizer.embed(img, &found[i].kps) {
                Ok(v) => Some(v),
                // Degenerate keypoints of one candidate must not sink the whole photo.
                Err(FaceError::Align(_)) => None,
                Err(e) => return Err(e),
            };
        }
        let faces = found.into_iter().zip(identities).map(|(face, identity)| AnalyzedFace { face, identity }).collect();
        Ok(PhotoFaces { faces })
    }

    /// The largest face with its identity; [`FaceError::NoFace`] when there is none.
    pub fn largest(&self, img: &RgbImage) -> Result<AnalyzedFace, FaceError> {
        let faces = self.analyze(img)?;
        let i = faces.largest().ok_or(FaceError::NoFace)?;
        let face = faces.faces[i].clone();
        if face.identity.is_none() {
            let identity = self.recognizer.embed(img, &face.face.kps)?;
            return Ok(AnalyzedFace { identity: Some(identity), ..face });
        }
        Ok(face)
    }

    /// The identity at hand-placed keypoints (the artist moved them in the character editor).
    pub fn embed_keypoints(&self, img: &RgbImage, kps: &[[f32; 2]; 5]) -> Result<Vec<f32>, FaceError> {
        self.recognizer.embed(img, kps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_models_name_the_path_and_the_licence() {
        let dir = std::env::temp_dir().join("storymaker-no-models-here");
        let err = find_face_models(&dir).expect_err("nothing installed");
        assert_eq!(err.missing, vec![DETECTOR_FILE.to_string(), RECOGNIZER_FILE.to_string()]);
        let text = err.to_string();
        assert!(text.contains("buffalo_l"), "{text}");
        assert!(text.contains("non-commercial research"), "{text}");
        assert!(text.contains(&dir.join("buffalo_l").display().to_string()), "{text}");
    }
}
