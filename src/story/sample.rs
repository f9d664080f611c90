//! The bundled sample story, so the first launch shows something real: two public-domain / CC0
//! reference photos (see `assets/sample/LICENSES.md`) with rough masks and a few panels.

use std::path::Path;
use std::sync::Arc;

use super::assets::AssetPath;
use super::character::{Character, CharacterId, CropRect, FaceBox, FaceSource, TAG_COLOURS};
use super::panel::{CastSlot, SeedChoice};
use super::persist::{atomic_write, save_project, ProjectError};
use super::project::Project;
use crate::imaging::Mask;

const ASTRONAUT_PNG: &[u8] = include_bytes!("../../assets/sample/astronaut.png");
const CAMERA_PNG: &[u8] = include_bytes!("../../assets/sample/camera.png");

/// A rough mask made of ellipses `(cx, cy, rx, ry)`: a starting point the artist refines.
fn ellipse_mask(size: [u32; 2], ellipses: &[(f32, f32, f32, f32)]) -> Mask {
    let mut m = Mask::filled(size[0], size[1], 0);
    let mut data = m.data().to_vec();
    for y in 0..size[1] {
        for x in 0..size[0] {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            if ellipses.iter().any(|&(cx, cy, rx, ry)| ((px - cx) / rx).powi(2) + ((py - cy) / ry).powi(2) <= 1.0) {
                data[(y * size[0] + x) as usize] = 255;
            }
        }
    }
    if let Some(full) = Mask::from_raw(size[0], size[1], data) {
        m = full;
    }
    m
}

fn asset(s: &str) -> AssetPath {
    // The literals below are valid by construction.
    AssetPath::new(s).unwrap_or_else(|e| panic!("bad built-in asset path {s}: {e}"))
}

/// Builds the sample project in memory (photos must be written with [`write_sample_story`]).
pub fn sample_project() -> Project {
    let mut p = Project::new("The Astronaut and the Cameraman");
    let size = [512, 512];
    let eileen = Character {
        id: CharacterId(p.alloc_id()),
        name: "Eileen".into(),
        colour: TAG_COLOURS[0],
        photo: asset("assets/photos/astronaut.png"),
        photo_size: size,
        crop: CropRect { x: 0.0, y: 0.0, w: 512.0, h: 512.0 },
        mask_file: asset("assets/masks/eileen-mask.png"),
        mask: Arc::new(ellipse_mask(size, &[(227.0, 100.0, 78.0, 88.0), (190.0, 390.0, 175.0, 185.0)])),
        face: Some(FaceBox {
            bbox: [179.0, 63.0, 269.0, 174.0],
            keypoints: Some([[202.0, 106.0], [245.0, 105.0], [221.0, 127.0], [204.0, 145.0], [242.0, 145.0]]),
            score: Some(0.943),
            source: FaceSource::Imported,
            identity: None,
        }),
        notes: "Orange launch-and-entry suit, short light-brown hair.".into(),
    };
    let cameraman = Character {
        id: CharacterId(p.alloc_id()),
        name: "Lav".into(),
        colour: TAG_COLOURS[1],
        photo: asset("assets/photos/camera.png"),
        photo_size: size,
        crop: CropRect { x: 0.0, y: 50.0, w: 340.0, h: 462.0 },
        mask_file: asset("assets/masks/lav-mask.png"),
        mask: Arc::new(ellipse_mask(
            size,
            &[(212.0, 130.0, 58.0, 68.0), (130.0, 340.0, 150.0, 200.0), (255.0, 205.0, 75.0, 40.0)],
        )),
        face: None,
        notes: "Long dark coat; always carries his camera.".into(),
    };
    let (e, l) = (eileen.id, cameraman.id);
    p.characters = vec![eileen, cameraman];
    /// prompt, caption, dialogue, cast, fixed seed
    type Scene<'a> = (&'a str, &'a str, &'a str, Vec<CharacterId>, Option<u64>);
    let scenes: [Scene; 4] = [
        (
            "a woman astronaut in an orange spacesuit walking towards a launch pad at dawn, comic book style",
            "Launch day.",
            "Eileen: Right on schedule.",
            vec![e],
            Some(42),
        ),
        (
            "a man in a long black coat filming with a camera on a tripod, grassy field, rocket in the distance, comic book style",
            "Lav has waited years for this shot.",
            "",
            vec![l],
            Some(7),
        ),
        (
            "a woman astronaut and a man with a camera shaking hands in front of a rocket, comic book style",
            "They meet at the fence.",
            "Lav: Smile for the archive!",
            vec![e, l],
            None,
        ),
        (
            "a rocket lifting off into a clear sky, crowd watching, comic book style",
            "Lift-off.",
            "",
            vec![],
            None,
        ),
    ];
    for (prompt, caption, dialogue, cast, seed) in scenes {
        let mut panel = p.make_panel();
        panel.prompt = prompt.into();
        panel.caption = caption.into();
        panel.dialogue = dialogue.into();
        panel.cast = cast.into_iter().map(CastSlot::new).collect();
        panel.seed = seed.map_or(SeedChoice::Random, SeedChoice::Fixed);
        p.panels.push(panel);
    }
    p
}

/// Writes the sample story into `root` (photos, masks, project.json) and returns it.
pub fn write_sample_story(root: &Path) -> Result<Project, ProjectError> {
    let project = sample_project();
    for (c, bytes) in project.characters.iter().zip([ASTRONAUT_PNG, CAMERA_PNG]) {
        let path = c.photo.resolve_for_write(root)?;
        atomic_write(&path, bytes).map_err(|source| ProjectError::Write { path, source })?;
    }
    save_project(root, &project)?;
    Ok(project)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_story_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_sample_story(dir.path()).unwrap();
        let loaded = super::super::load_project(dir.path()).unwrap();
        assert_eq!(written, loaded);
        assert_eq!(loaded.characters.len(), 2);
        assert!(loaded.characters.iter().all(|c| c.mask.count_nonzero() > 10_000));
        assert_eq!(loaded.panels.len(), 4);
    }
}
