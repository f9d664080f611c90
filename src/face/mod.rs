//! Faces: the identity of a character as the StoryMaker adapter sees it (reference spec §1.4).
//!
//! For now a character's face comes as precomputed *face data* ([`face_data`]): the L2-normalised
//! 512-d ArcFace embedding and the five SCRFD keypoints, in the format of StoryMaker's
//! `examples/datasets/001_faceid/*.bin`. Face analysis itself (SCRFD-10G detection with five
//! keypoints and ArcFace `w600k_r50` recognition, insightface `buffalo_l`) will live here too.

pub mod face_data;

pub use face_data::{load_face_data, FaceData, FaceDataError};
