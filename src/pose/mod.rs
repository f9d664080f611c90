//! Pose skeletons for the OpenPose ControlNet: the body-18 model, whole-skeleton edits, the
//! conditioning-image renderer ([`render`]) and the preset library ([`presets`]).
//!
//! The document stores one OpenPose body-18 skeleton (COCO keypoint order) per cast slot, in
//! normalised panel coordinates so it survives panel size changes.

pub mod presets;
pub mod render;

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

    /// Centre of the visible keypoints' bounding box (the pivot of scale/rotate/mirror).
    pub fn center(&self) -> Option<[f32; 2]> {
        let mut it = self.keypoints.iter().flatten();
        let first = *it.next()?;
        let (mut lo, mut hi) = (first, first);
        for p in it {
            lo = [lo[0].min(p[0]), lo[1].min(p[1])];
            hi = [hi[0].max(p[0]), hi[1].max(p[1])];
        }
        Some([(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0])
    }

    /// Moves every keypoint by `d` (panel units), stopping at the panel frame so nothing is lost.
    pub fn translated(mut self, d: [f32; 2]) -> Skeleton {
        let (mut dx, mut dy) = (d[0], d[1]);
        for p in self.keypoints.iter().flatten() {
            dx = dx.clamp(-p[0], 1.0 - p[0]);
            dy = dy.clamp(-p[1], 1.0 - p[1]);
        }
        for p in self.keypoints.iter_mut().flatten() {
            *p = [p[0] + dx, p[1] + dy];
        }
        self
    }

    /// Scales about the centre by `factor` (`aspect` = panel width / height, so shapes keep
    /// their proportions on a non-square panel), snapping to the frame.
    pub fn scaled(self, factor: f32) -> Skeleton {
        self.map_about_center(|v| [v[0] * factor, v[1] * factor], 1.0)
    }

    /// Rotates about the centre by `radians` (clockwise on screen) on a panel of the given aspect.
    pub fn rotated(self, radians: f32, aspect: f32) -> Skeleton {
        let (s, c) = radians.sin_cos();
        self.map_about_center(|v| [v[0] * c - v[1] * s, v[0] * s + v[1] * c], aspect)
    }

    /// Mirrors left-right about the centre: x flips and the left/right keypoints swap names, so a
    /// raised right arm becomes a raised left arm (what the ControlNet's colours encode).
    pub fn mirrored(self) -> Skeleton {
        let mut m = self.map_about_center(|v| [-v[0], v[1]], 1.0);
        for (a, b) in MIRROR_PAIRS {
            m.keypoints.swap(a, b);
        }
        m
    }

    fn map_about_center(mut self, f: impl Fn([f32; 2]) -> [f32; 2], aspect: f32) -> Skeleton {
        self.keypoints.resize(BODY18, None);
        let Some(c) = self.center() else { return self };
        let aspect = if aspect.is_finite() && aspect > 0.0 { aspect } else { 1.0 };
        for p in self.keypoints.iter_mut().flatten() {
            // Work in square units (x scaled by the aspect) so rotations keep angles.
            let v = f([(p[0] - c[0]) * aspect, p[1] - c[1]]);
            *p = [(c[0] + v[0] / aspect).clamp(0.0, 1.0), (c[1] + v[1]).clamp(0.0, 1.0)];
        }
        self
    }
}

/// Left/right keypoint pairs in COCO-18 order (shoulders, elbows, wrists, hips, knees, ankles,
/// eyes, ears).
pub const MIRROR_PAIRS: [(usize, usize); 8] = [(2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (14, 15), (16, 17)];

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

    fn person() -> Skeleton {
        let mut k = vec![None; BODY18];
        k[1] = Some([0.5, 0.3]); // neck
        k[2] = Some([0.45, 0.3]); // right shoulder (image left)
        k[4] = Some([0.4, 0.2]); // right wrist raised
        k[5] = Some([0.55, 0.3]);
        k[7] = Some([0.6, 0.45]);
        Skeleton { keypoints: k }
    }

    #[test]
    fn mirror_flips_x_and_swaps_sides() {
        let m = person().mirrored();
        let near = |a: Option<[f32; 2]>, b: [f32; 2]| {
            let a = a.expect("visible");
            assert!((a[0] - b[0]).abs() < 1e-6 && (a[1] - b[1]).abs() < 1e-6, "{a:?} vs {b:?}");
        };
        // The raised wrist is now the LEFT wrist, on the other side of the centre.
        near(m.keypoints[7], [0.6, 0.2]);
        near(m.keypoints[4], [0.4, 0.45]);
        let back = person().mirrored().mirrored();
        for (a, b) in back.keypoints.iter().zip(person().keypoints.iter()) {
            if let Some(b) = b {
                near(*a, *b);
            }
        }
    }

    #[test]
    fn move_scale_rotate_keep_the_skeleton_in_the_frame() {
        let moved = person().translated([0.9, 0.0]);
        let xs: Vec<f32> = moved.keypoints.iter().flatten().map(|p| p[0]).collect();
        assert!(xs.iter().all(|&x| x <= 1.0) && xs.contains(&1.0), "snapped to the frame: {xs:?}");
        let big = person().scaled(2.0);
        assert_eq!(big.center(), person().center());
        let r = person().rotated(std::f32::consts::PI, 1.0).rotated(std::f32::consts::PI, 1.0);
        for (a, b) in r.keypoints.iter().zip(person().keypoints.iter()) {
            match (a, b) {
                (Some(a), Some(b)) => assert!((a[0] - b[0]).abs() < 1e-5 && (a[1] - b[1]).abs() < 1e-5),
                (None, None) => {}
                _ => panic!("visibility changed"),
            }
        }
    }
}
