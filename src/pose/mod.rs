//! Pose skeletons for the OpenPose ControlNet (the editor and presets land with the pose issue).
//!
//! The document stores one OpenPose body-18 skeleton (COCO keypoint order) per cast slot, in
//! normalised panel coordinates so it survives panel size changes.

use serde::{Deserialize, Serialize};

/// Number of OpenPose body keypoints (COCO-18 order: nose, neck, r-shoulder, r-elbow, r-wrist,
/// l-shoulder, l-elbow, l-wrist, r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye,
/// r-ear, l-ear).
pub const BODY18: usize = 18;

/// Keypoint names in COCO-18 order.
pub const KEYPOINT_NAMES: [&str; BODY18] = [
    "nose",
    "neck",
    "right shoulder",
    "right elbow",
    "right wrist",
    "left shoulder",
    "left elbow",
    "left wrist",
    "right hip",
    "right knee",
    "right ankle",
    "left hip",
    "left knee",
    "left ankle",
    "right eye",
    "left eye",
    "right ear",
    "left ear",
];

/// A body skeleton; `None` keypoints are missing (not drawn, not conditioned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skeleton {
    pub keypoints: Vec<Option<[f32; 2]>>,
}

impl Skeleton {
    /// Keeps exactly 18 keypoints and clamps them into the panel, so a hand-edited or older
    /// file can't produce out-of-range indices downstream.
    pub fn normalized(mut self) -> Skeleton {
        self.keypoints.resize(BODY18, None);
        for p in self.keypoints.iter_mut().flatten() {
            p[0] = if p[0].is_finite() { p[0].clamp(0.0, 1.0) } else { 0.5 };
            p[1] = if p[1].is_finite() { p[1].clamp(0.0, 1.0) } else { 0.5 };
        }
        self
    }

    pub fn visible_count(&self) -> usize {
        self.keypoints.iter().filter(|p| p.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_fixes_length_and_range() {
        let s = Skeleton { keypoints: vec![Some([2.0, -1.0]), None, Some([f32::NAN, 0.3])] }.normalized();
        assert_eq!(s.keypoints.len(), BODY18);
        assert_eq!(s.keypoints[0], Some([1.0, 0.0]));
        assert_eq!(s.keypoints[2], Some([0.5, 0.3]));
        assert_eq!(s.visible_count(), 2);
    }
}
