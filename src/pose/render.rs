//! The ControlNet conditioning image: OpenPose body-18 skeletons drawn with the standard OpenPose
//! colours on black (the scheme the SDXL OpenPose ControlNets were trained on).
//!
//! Limbs are filled ellipses along each bone in 60 % of the limb colour, joints are discs in the
//! full colour drawn on top (OpenPose / controlnet_aux `draw_bodypose` conventions). The width
//! scales with the image: `Standard` is 4 px per 512 px of the longer side; `Thick` follows the
//! stick scaling used for xinsir/controlnet-openpose-sdxl-1.0 (×1 below 500 px, else
//! ×min(2 + side/1000, 7) on a 4 px stick).

use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use super::{Skeleton, BODY18};

/// Bones as keypoint pairs in COCO-18 order (OpenPose's limb sequence).
pub const LIMBS: [(usize, usize); 17] = [
    (1, 2),
    (1, 5),
    (2, 3),
    (3, 4),
    (5, 6),
    (6, 7),
    (1, 8),
    (8, 9),
    (9, 10),
    (1, 11),
    (11, 12),
    (12, 13),
    (1, 0),
    (0, 14),
    (14, 16),
    (0, 15),
    (15, 17),
];

/// OpenPose's 18 colours (RGB): joint `i` and limb `i` use colour `i`.
pub const COLOURS: [[u8; 3]; BODY18] = [
    [255, 0, 0],
    [255, 85, 0],
    [255, 170, 0],
    [255, 255, 0],
    [170, 255, 0],
    [85, 255, 0],
    [0, 255, 0],
    [0, 255, 85],
    [0, 255, 170],
    [0, 255, 255],
    [0, 170, 255],
    [0, 85, 255],
    [0, 0, 255],
    [85, 0, 255],
    [170, 0, 255],
    [255, 0, 255],
    [255, 0, 170],
    [255, 0, 85],
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoseStyle {
    /// 4 px bones per 512 px of the longer side.
    #[default]
    Standard,
    /// The thicker sticks xinsir/controlnet-openpose-sdxl-1.0 was trained with.
    Thick,
}

impl PoseStyle {
    /// Half-width of a bone (the ellipse's minor semi-axis) and the joint radius, in pixels.
    pub fn stick_width(self, width: u32, height: u32) -> f32 {
        let side = width.max(height) as f32;
        match self {
            PoseStyle::Standard => (4.0 * side / 512.0).max(2.0),
            PoseStyle::Thick => {
                let scale = if side < 500.0 { 1.0 } else { (2.0 + (side / 1000.0).floor()).min(7.0) };
                4.0 * scale
            }
        }
    }
}

/// Draws every skeleton (normalised coordinates) into a `width` x `height` black image.
pub fn render_pose(skeletons: &[&Skeleton], width: u32, height: u32, style: PoseStyle) -> RgbImage {
    let mut img = RgbImage::new(width, height);
    let stick = style.stick_width(width, height);
    let to_px = |p: [f32; 2]| [p[0] * width as f32, p[1] * height as f32];
    for s in skeletons {
        let k = |i: usize| s.keypoints.get(i).copied().flatten().map(to_px);
        for (i, &(a, b)) in LIMBS.iter().enumerate() {
            if let (Some(pa), Some(pb)) = (k(a), k(b)) {
                let c = COLOURS[i].map(|v| (f32::from(v) * 0.6) as u8);
                fill_bone(&mut img, pa, pb, stick, c);
            }
        }
        for (i, c) in COLOURS.iter().enumerate() {
            if let Some(p) = k(i) {
                fill_disc(&mut img, p, stick, *c);
            }
        }
    }
    img
}

/// A filled ellipse with its major axis from `a` to `b` and minor semi-axis `half`.
fn fill_bone(img: &mut RgbImage, a: [f32; 2], b: [f32; 2], half: f32, colour: [u8; 3]) {
    let (cx, cy) = ((a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0);
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    let len = (dx * dx + dy * dy).sqrt();
    let major = (len / 2.0).max(half);
    let (cos, sin) = if len > 0.0 { (dx / len, dy / len) } else { (1.0, 0.0) };
    let reach = major.max(half);
    fill_where(img, [cx - reach, cy - reach, cx + reach, cy + reach], colour, |x, y| {
        let (u, v) = (x - cx, y - cy);
        let along = (u * cos + v * sin) / major;
        let across = (-u * sin + v * cos) / half;
        along * along + across * across <= 1.0
    });
}

fn fill_disc(img: &mut RgbImage, c: [f32; 2], r: f32, colour: [u8; 3]) {
    fill_where(img, [c[0] - r, c[1] - r, c[0] + r, c[1] + r], colour, |x, y| {
        (x - c[0]).powi(2) + (y - c[1]).powi(2) <= r * r
    });
}

/// Sets the pixels of the box whose centre satisfies `inside`.
fn fill_where(img: &mut RgbImage, bbox: [f32; 4], colour: [u8; 3], inside: impl Fn(f32, f32) -> bool) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let x0 = (bbox[0].floor() as i64).clamp(0, w);
    let x1 = (bbox[2].ceil() as i64 + 1).clamp(0, w);
    let y0 = (bbox[1].floor() as i64).clamp(0, h);
    let y1 = (bbox[3].ceil() as i64 + 1).clamp(0, h);
    for y in y0..y1 {
        for x in x0..x1 {
            if inside(x as f32 + 0.5, y as f32 + 0.5) {
                img.put_pixel(x as u32, y as u32, Rgb(colour));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_missing_keypoints_draw_nothing() {
        let s = Skeleton { keypoints: vec![None; BODY18] };
        let img = render_pose(&[&s], 64, 48, PoseStyle::Standard);
        assert!(img.pixels().all(|p| p.0 == [0, 0, 0]));
        let mut one = vec![None; BODY18];
        one[0] = Some([0.5, 0.5]);
        let img = render_pose(&[&Skeleton { keypoints: one }], 64, 48, PoseStyle::Standard);
        assert_eq!(img.get_pixel(32, 24).0, COLOURS[0], "a lone nose is a red disc, no bone");
        assert_eq!(img.get_pixel(2, 2).0, [0, 0, 0]);
    }

    #[test]
    fn bones_use_sixty_percent_of_their_colour_and_thick_is_thicker() {
        let mut k = vec![None; BODY18];
        k[1] = Some([0.5, 0.2]); // neck
        k[8] = Some([0.5, 0.8]); // right hip: limb 6 (neck -> right hip)
        let s = Skeleton { keypoints: k };
        let img = render_pose(&[&s], 1024, 1024, PoseStyle::Standard);
        assert_eq!(img.get_pixel(512, 512).0, COLOURS[6].map(|v| (f32::from(v) * 0.6) as u8));
        let count = |i: &RgbImage| i.pixels().filter(|p| p.0 != [0, 0, 0]).count();
        let thick = render_pose(&[&s], 1024, 1024, PoseStyle::Thick);
        assert!(count(&thick) > count(&img), "the xinsir style draws wider bones");
        assert!(PoseStyle::Standard.stick_width(2048, 1024) > PoseStyle::Standard.stick_width(512, 512));
    }
}
