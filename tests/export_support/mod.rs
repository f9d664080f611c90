//! Helpers for the export tests: the sample story with images for its panels, and poppler.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use storymaker::export::{self, ExportError, ExportFormat, ExportReport, ExportSettings, ExportTarget};
use storymaker::story::persist::save_project;
use storymaker::story::sample::write_sample_story;
use storymaker::story::{AssetPath, Project, Variant};

pub const ASTRONAUT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/sample/astronaut.png");
pub const CAMERA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/sample/camera.png");

fn variant(image: &str) -> Variant {
    Variant {
        image: AssetPath::new(image).unwrap(),
        prompt: "test".into(),
        negative_prompt: String::new(),
        seed: 1,
        params: Default::default(),
        cast: Vec::new(),
        models: Vec::new(),
        scheduler: String::new(),
        consistency: None,
    }
}

/// The sample story in `root` with images for panels 1–3 (panel 4 stays "not generated"):
/// 1 the astronaut photo as PNG (512²), 2 the camera photo re-encoded as JPEG (512²),
/// 3 a 640 × 400 PNG cut from the camera photo (another shape, for fit/fill).
pub fn sample_with_images(root: &Path) -> Project {
    let mut project = write_sample_story(root).unwrap();
    let images = root.join("assets/images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::copy(ASTRONAUT, images.join("panel-1.png")).unwrap();
    let camera = image::open(CAMERA).unwrap().to_rgb8();
    camera.save_with_format(images.join("panel-2.jpg"), image::ImageFormat::Jpeg).unwrap();
    let wide = image::imageops::resize(&camera, 640, 400, image::imageops::FilterType::Triangle);
    wide.save(images.join("panel-3.png")).unwrap();
    for (i, file) in ["panel-1.png", "panel-2.jpg", "panel-3.png"].iter().enumerate() {
        project.panels[i].variants.push(variant(&format!("assets/images/{file}")));
        project.panels[i].chosen = Some(0);
    }
    save_project(root, &project).unwrap();
    project
}

pub fn run_export(
    project: &Project,
    root: &Path,
    settings: &ExportSettings,
    format: ExportFormat,
    folder: &Path,
) -> Result<ExportReport, ExportError> {
    let target = ExportTarget { folder: folder.to_path_buf(), name: "story".into() };
    export::export(project, root, settings, format, &target, &mut |_| {}, &AtomicBool::new(false))
}

/// Runs a poppler-utils tool and returns its standard output.
pub fn poppler(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not run `{tool}` ({e}): install poppler-utils (scripts/deps.sh does it)"));
    assert!(out.status.success(), "{tool} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// File names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Mean absolute difference (0–255) of the RGB channels of two equally sized regions.
pub fn mean_abs_diff(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let sum: u64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (*x as i32 - *y as i32).unsigned_abs() as u64).sum();
    sum as f64 / a.as_raw().len() as f64
}

/// The image averaged over `b` × `b` blocks: compares structure, not resampling noise.
pub fn block_mean(a: &image::RgbImage, b: u32) -> image::RgbImage {
    let (w, h) = (a.width() / b, a.height() / b);
    image::RgbImage::from_fn(w, h, |x, y| {
        let mut sum = [0u32; 3];
        for dy in 0..b {
            for dx in 0..b {
                let p = a.get_pixel(x * b + dx, y * b + dy);
                for c in 0..3 {
                    sum[c] += p[c] as u32;
                }
            }
        }
        image::Rgb(sum.map(|s| (s / (b * b)) as u8))
    })
}

/// Standard deviation of the grey levels of a region (0 for a blank area).
pub fn std_dev(a: &image::RgbImage) -> f64 {
    let g: Vec<f64> = a.pixels().map(|p| (p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0).collect();
    let mean = g.iter().sum::<f64>() / g.len() as f64;
    (g.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / g.len() as f64).sqrt()
}

/// `rect` (points) of a page image rendered at `dpi`, shrunk by `inset` pixels on each side.
pub fn region(img: &image::RgbImage, rect: &export::Rect, dpi: f32, inset: u32) -> image::RgbImage {
    let s = dpi / 72.0;
    let x = (rect.x * s).round() as u32 + inset;
    let y = (rect.y * s).round() as u32 + inset;
    let w = (rect.w * s).round() as u32 - 2 * inset;
    let h = (rect.h * s).round() as u32 - 2 * inset;
    image::imageops::crop_imm(img, x, y, w, h).to_image()
}

/// A folder nothing can be created in, even by root: mode 0555, and when that is not enough
/// (root ignores permissions) also the immutable attribute. Undone on drop.
pub struct ReadOnlyDir {
    pub path: PathBuf,
    immutable: bool,
    _parent: tempfile::TempDir,
}

impl ReadOnlyDir {
    pub fn new() -> ReadOnlyDir {
        use std::os::unix::fs::PermissionsExt;
        // Under the target folder, not /tmp: tmpfs has no immutable attribute.
        let parent = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let path = parent.path().join("read-only");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("existing.txt"), b"already here").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o555)).unwrap();
        let probe = path.join("probe");
        let mut immutable = false;
        if std::fs::write(&probe, b"x").is_ok() {
            std::fs::remove_file(&probe).unwrap();
            let ok = Command::new("chattr").arg("+i").arg(&path).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "running as root and `chattr +i` failed: cannot make a read-only folder for this test");
            immutable = true;
            assert!(std::fs::write(&probe, b"x").is_err(), "the folder is still writable");
        }
        ReadOnlyDir { path, immutable, _parent: parent }
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
        }
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755));
    }
}
