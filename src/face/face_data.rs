//! Precomputed face data (reference spec §1.4): a `torch.save` file holding
//! `{"id": float tensor [1, 512] (or [512]), "kps": float tensor [5, 2]}` — insightface's
//! `normed_embedding` and `kps` of the character's face (left eye, right eye, nose, left and
//! right mouth corner, in original-image pixels). This is the format of StoryMaker's
//! `examples/datasets/001_faceid/{0,1}.bin`.
//!
//! The file is read with [`crate::weights::torch_pickle`] (nothing in it is executed). The
//! embedding is re-normalised to unit L2 norm (the shipped files already are, to 1e-7).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use thiserror::Error;

use crate::weights::torch_pickle::{TorchCheckpoint, TorchPickleError};

/// Length of the ArcFace identity embedding.
pub const EMBEDDING_DIM: usize = 512;

/// One face: identity embedding and five keypoints.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceData {
    /// 512 values with L2 norm 1.
    pub embedding: Vec<f32>,
    /// `[x, y]` of left eye, right eye, nose, left mouth corner, right mouth corner (pixels).
    pub kps: [[f32; 2]; 5],
}

#[derive(Debug, Error)]
pub enum FaceDataError {
    #[error(transparent)]
    Pickle(#[from] TorchPickleError),
    #[error("{path} is not face data: it has no tensor `{key}` (expected `id` [1, 512] and `kps` [5, 2])")]
    Missing { path: String, key: &'static str },
    #[error("{path}: face data tensor `{key}` has shape {got:?}, expected {expected}")]
    Shape { path: String, key: &'static str, got: Vec<usize>, expected: &'static str },
    #[error("{path}: face data tensor `{key}` cannot be read as numbers: {detail}")]
    Values { path: String, key: &'static str, detail: String },
    #[error("{path}: face data tensor `{key}` holds NaN or infinite values")]
    NotFinite { path: String, key: &'static str },
    #[error("{path}: the face embedding `id` is (nearly) all zeros (L2 norm {norm:.1e}); it identifies no face")]
    ZeroEmbedding { path: String, norm: f64 },
}

/// Reads face data (see the module doc).
pub fn load_face_data(path: &Path) -> Result<FaceData, FaceDataError> {
    let shown = path.display().to_string();
    let tensors = TorchCheckpoint::open(path)?.state_dict(None, &Device::Cpu)?;
    let values = |key: &'static str, shapes: &[&[usize]], expected: &'static str| {
        let t: &Tensor = tensors.get(key).ok_or_else(|| FaceDataError::Missing { path: shown.clone(), key })?;
        if !shapes.contains(&t.dims()) {
            return Err(FaceDataError::Shape { path: shown.clone(), key, got: t.dims().to_vec(), expected });
        }
        let v = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| FaceDataError::Values { path: shown.clone(), key, detail: e.to_string() })?;
        if v.iter().any(|x| !x.is_finite()) {
            return Err(FaceDataError::NotFinite { path: shown.clone(), key });
        }
        Ok(v)
    };
    let id = values("id", &[&[1, EMBEDDING_DIM], &[EMBEDDING_DIM]], "[1, 512] or [512]")?;
    let kps = values("kps", &[&[5, 2]], "[5, 2]")?;
    let norm = id.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt();
    if norm <= 1e-6 {
        return Err(FaceDataError::ZeroEmbedding { path: shown, norm });
    }
    let embedding = id.iter().map(|&x| ((x as f64) / norm) as f32).collect();
    let mut points = [[0f32; 2]; 5];
    for (p, xy) in points.iter_mut().zip(kps.chunks_exact(2)) {
        *p = [xy[0], xy[1]];
    }
    Ok(FaceData { embedding, kps: points })
}
