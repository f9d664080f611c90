//! Person segmentation (issue 10) against `tools/parity/gen_segment_onnx.py`: random-weight graphs with the
//! U²-Net human seg, BiRefNet and IS-Net/RMBG interfaces.
//!
//! * the graphs, loaded through the real loader, reproduce onnxruntime's outputs (≤ 1e-4);
//! * the family is told from the graph's signature alone (files renamed to `model.onnx`);
//! * the whole pipeline (pre-processing, network, post-processing) on the astronaut photo is within one grey
//!   level of the Python reference written with PIL/torch;
//! * an fp16-weight graph is refused by the face loader but converted to float32 by the segmentation loader.

use std::path::PathBuf;

use candle_core::Device;
use storymaker::face::onnx::{FloatTensor, InferenceSession, OnnxError, OnnxModel};
use storymaker::imaging::segment::{SegmentFamily, SegmentStage, Segmenter};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/segment").join(name)
}

fn tensors(file: &str) -> (FloatTensor, Vec<FloatTensor>) {
    let map = candle_core::safetensors::load(fixture(file), &Device::Cpu).expect("safetensors");
    let get = |k: &str| {
        let t = &map[k];
        let data = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("f32");
        FloatTensor::new(t.dims().to_vec(), data).expect("shape")
    };
    let outs = (0..).map(|i| format!("out{i}")).take_while(|k| map.contains_key(k)).map(|k| get(&k)).collect();
    (get("input"), outs)
}

fn max_abs_diff(a: &FloatTensor, b: &FloatTensor) -> f32 {
    assert_eq!(a.shape, b.shape);
    a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn each_family_graph_matches_onnxruntime() {
    for name in ["u2net", "birefnet", "isnet"] {
        let (input, want) = tensors(&format!("{name}_raw.safetensors"));
        let session = OnnxModel::read(&fixture(&format!("{name}_dyn.onnx")))
            .and_then(|m| m.prepare(64, 48))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = session.run(input).expect("runs");
        assert_eq!(got.len(), want.len(), "{name}: output count");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let d = max_abs_diff(g, w);
            println!("{name} output {i}: max |tract - onnxruntime| = {d:.2e}");
            assert!(d <= 1e-4, "{name} output {i}: {d}");
        }
    }
}

#[test]
fn families_are_recognised_from_the_signature_and_run_at_their_traced_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, family, size) in [
        ("u2net", SegmentFamily::U2NetHuman, 320),
        ("birefnet", SegmentFamily::BiRefNet, 1024),
        ("isnet", SegmentFamily::IsNet, 1024),
    ] {
        // A neutral file name, so only the graph's input/output signature can tell the family.
        let path = dir.path().join("model.onnx");
        std::fs::copy(fixture(&format!("{name}.onnx")), &path).expect("copy");
        let seg = Segmenter::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(seg.family(), family, "{name}");
        let stages = std::cell::RefCell::new(Vec::new());
        let photo = image::RgbImage::from_pixel(40, 30, image::Rgb([200, 100, 50]));
        let mask = seg.mask(&photo, &|s| stages.borrow_mut().push(s)).expect("mask");
        assert_eq!(mask.size(), [40, 30]);
        assert_eq!(*stages.borrow(), [SegmentStage::Preparing, SegmentStage::Running, SegmentStage::Finishing]);
        let _ = size;
    }
}

#[test]
fn astronaut_masks_match_the_python_reference_within_one_grey_level() {
    let photo = image::open(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/sample/astronaut.png"))
        .expect("astronaut")
        .to_rgb8();
    for name in ["u2net", "birefnet", "isnet"] {
        let seg = Segmenter::load(&fixture(&format!("{name}.onnx"))).expect("loads");
        let got = seg.mask(&photo, &|_| {}).expect("mask");
        let want = image::open(fixture(&format!("{name}_astronaut_mask.png"))).expect("png").to_luma8();
        assert_eq!(got.size(), [want.width(), want.height()]);
        let diffs: Vec<i32> =
            got.data().iter().zip(want.as_raw()).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
        let max = diffs.iter().copied().max().unwrap_or(0);
        let off = diffs.iter().filter(|&&d| d > 0).count();
        println!("{name}: max grey difference {max}, {off} of {} pixels differ", diffs.len());
        assert!(max <= 1, "{name}: max difference {max} grey levels");
        // A mask that ignores the photo would not be within one level of the reference.
        let (lo, hi) = want.as_raw().iter().fold((255u8, 0u8), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(hi - lo > 16, "{name}: the reference mask is almost flat ({lo}..{hi})");
    }
}

#[test]
fn fp16_weights_are_converted_to_float32_at_load() {
    let path = fixture("isnet_fp16.onnx");
    let refused = OnnxModel::read(&path).err();
    assert!(matches!(refused, Some(OnnxError::HalfPrecision { .. })), "{refused:?}");
    let model = OnnxModel::read_as_f32(&path).expect("converted");
    assert!(model.info().half_converted == 3, "{:?}", model.info());
    let (input, want) = tensors("isnet_fp16_raw.safetensors");
    let session = model.prepare(32, 24).expect("prepares");
    let got = session.run(input).expect("runs");
    let d = max_abs_diff(&got[0], &want[0]);
    println!("fp16 graph converted: max |tract - float32 reference| = {d:.2e}");
    assert!(d <= 1e-4, "{d}");
}
