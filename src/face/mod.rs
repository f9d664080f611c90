//! Faces: the identity of a character as the StoryMaker adapter sees it (reference spec §1.4).
//!
//! For now a character's face comes as precomputed *face data* ([`face_data`]): the L2-normalised
//! 512-d ArcFace embedding and the five SCRFD keypoints, in the format of StoryMaker's
//! `examples/datasets/001_faceid/*.bin`. Face analysis itself (SCRFD-10G detection with five
//! keypoints and ArcFace `w600k_r50` recognition, insightface `buffalo_l`) will live here too.
//!
//! Face analysis in process, on the CPU: [`onnx`] (the ONNX engine behind a small trait), [`detect`] (SCRFD,
//! letterbox, decode, NMS), [`recognize`] (112x112 alignment and the L2-normalised identity) and [`analysis`]
//! (both models together, where the buffalo_l files are, what a photo holds).

pub mod face_data;

pub use face_data::{load_face_data, FaceData, FaceDataError};
pub mod analysis;
pub mod detect;
pub mod onnx;
pub mod recognize;

pub use analysis::{
    find_face_models, AnalyzedFace, FaceAnalyzer, FaceError, FaceModelPaths, FaceModelsMissing, PhotoFaces,
    BUFFALO_L_LICENCE,
};
pub use detect::{DetectedFace, DetectorConfig, DetectorKind, FaceDetector};
pub use recognize::{cosine, FaceRecognizer};
