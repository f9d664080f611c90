//! Golden images of the ControlNet pose renderer: three presets at two sizes, pixel-exact against
//! committed PNGs (regenerate deliberately with `UPDATE_GOLDEN=1 cargo test --test pose_render`
//! after a reviewed change to the renderer, and look at the new files).

use std::path::PathBuf;

use storymaker::pose::presets::builtin_presets;
use storymaker::pose::render::{render_pose, PoseStyle};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/poses").join(name)
}

#[test]
fn presets_render_exactly_as_the_golden_images() {
    let presets = builtin_presets();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut checked = 0;
    for key in ["Standing", "Waving", "Two: handshake"] {
        let p = presets.iter().find(|p| p.name == key).expect("preset");
        let people = p.skeletons();
        let refs: Vec<_> = people.iter().collect();
        for (w, h, style) in [(512, 512, PoseStyle::Standard), (832, 1216, PoseStyle::Thick)] {
            let img = render_pose(&refs, w, h, style);
            let file = golden(&format!("{}_{w}x{h}.png", key.to_lowercase().replace([' ', ':'], "")));
            if update {
                img.save(&file).unwrap();
            }
            let want = image::open(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())).to_rgb8();
            assert_eq!(img.dimensions(), want.dimensions());
            let diff = img.pixels().zip(want.pixels()).filter(|(a, b)| a != b).count();
            assert_eq!(diff, 0, "{} differs in {diff} pixels", file.display());
            assert!(img.pixels().filter(|p| p.0 != [0, 0, 0]).count() > 500, "something is drawn");
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}
