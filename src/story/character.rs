//! A character: one reference photo, the crop and mask that say which part of it is the
//! character, and the face that gives the ArcFace identity (reference spec §1.3–1.4).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::assets::AssetPath;
use crate::imaging::Mask;

/// Stable id, unique within a project (panels refer to characters by id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CharacterId(pub u64);

/// Crop rectangle in pixels of the upright photo.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CropRect {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl CropRect {
    pub fn full(size: [u32; 2]) -> CropRect {
        CropRect { x: 0.0, y: 0.0, w: size[0] as f32, h: size[1] as f32 }
    }

    /// Clamps into the photo and keeps at least a 16 px square so a stray drag can't make it vanish.
    pub fn clamped(self, size: [u32; 2]) -> CropRect {
        let (pw, ph) = (size[0] as f32, size[1] as f32);
        let min = 16f32.min(pw).min(ph);
        let x = self.x.clamp(0.0, (pw - min).max(0.0));
        let y = self.y.clamp(0.0, (ph - min).max(0.0));
        let w = self.w.clamp(min, pw - x);
        let h = self.h.clamp(min, ph - y);
        CropRect { x, y, w, h }
    }

    /// Normalised `[x0, y0, x1, y1]`.
    pub fn to_uv(self, size: [u32; 2]) -> [f32; 4] {
        let (pw, ph) = (size[0].max(1) as f32, size[1].max(1) as f32);
        [self.x / pw, self.y / ph, (self.x + self.w) / pw, (self.y + self.h) / ph]
    }
}

/// Where a face box came from: the artist trusts a hand-placed box over a detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaceSource {
    Detected,
    Manual,
    Imported,
}

/// The chosen face: box `[x1, y1, x2, y2]` and, when known, the 5 keypoints (eyes, nose, mouth
/// corners) used for ArcFace alignment, all in upright-photo pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceBox {
    pub bbox: [f32; 4],
    #[serde(default)]
    pub keypoints: Option<[[f32; 2]; 5]>,
    #[serde(default)]
    pub score: Option<f32>,
    pub source: FaceSource,
    /// The ArcFace identity (512 values, L2-normalised) the adapter is conditioned on: from face
    /// analysis or imported face data (the reference's `{id, kps}` file, spec §1.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Character {
    pub id: CharacterId,
    pub name: String,
    /// Colour tag (sRGB), used for the mask tint, cast chips and timeline badges.
    pub colour: [u8; 3],
    /// The imported photo, copied byte-for-byte into the project's assets (never modified).
    pub photo: AssetPath,
    /// Size of the upright (EXIF-oriented) photo; the mask has exactly this size.
    pub photo_size: [u32; 2],
    pub crop: CropRect,
    /// Where the mask is stored (8-bit PNG in the project's assets).
    pub mask_file: AssetPath,
    /// The mask pixels. Shared so that undo snapshots of a character stay cheap;
    /// edits go through `Arc::make_mut`.
    #[serde(skip)]
    pub mask: Arc<Mask>,
    #[serde(default)]
    pub face: Option<FaceBox>,
    #[serde(default)]
    pub notes: String,
}

/// Distinct, readable colour tags handed out to new characters in turn.
pub const TAG_COLOURS: [[u8; 3]; 8] = [
    [230, 90, 70],
    [70, 140, 230],
    [90, 190, 110],
    [230, 180, 60],
    [170, 100, 220],
    [60, 190, 200],
    [230, 120, 180],
    [150, 150, 150],
];
