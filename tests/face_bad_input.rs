//! Files that are not usable face models, and photos without a face: each gives a named error, never a panic.

use std::path::PathBuf;

use storymaker::face::onnx::{OnnxError, OnnxModel};
use storymaker::face::{find_face_models, FaceDetector, FaceError, FaceRecognizer};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/face").join(name)
}

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

#[test]
fn files_that_are_not_onnx_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("tmp");
    let png = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/sample/camera.png");
    let text = write(&dir, "notes.onnx", b"this is not a model\n");
    let empty = write(&dir, "empty.onnx", b"");
    let full = std::fs::read(fixture("scrfd_tiny.onnx")).expect("fixture");
    let truncated = write(&dir, "truncated.onnx", &full[..full.len() / 2]);
    for path in [png, text, empty, truncated] {
        let err = OnnxModel::read(&path).err().unwrap_or_else(|| panic!("{} was accepted", path.display()));
        println!("{}: {err}", path.display());
        assert!(matches!(err, OnnxError::NotOnnx { .. } | OnnxError::NoGraph { .. }), "{err:?}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(matches!(FaceDetector::load(&path, None), Err(FaceError::Onnx(_))));
        assert!(matches!(FaceRecognizer::load(&path), Err(FaceError::Onnx(_))));
    }
    let missing = dir.path().join("missing.onnx");
    assert!(matches!(OnnxModel::read(&missing), Err(OnnxError::Io { .. })));
}

#[test]
fn onnx_files_with_the_wrong_inputs_are_refused() {
    let err = OnnxModel::read(&fixture("bad_two_inputs.onnx")).err().expect("two inputs");
    assert!(matches!(&err, OnnxError::Inputs { found, .. } if found == &["a", "b"]), "{err:?}");
    println!("{err}");
    let err = OnnxModel::read(&fixture("bad_vector_input.onnx")).err().expect("vector");
    assert!(matches!(err, OnnxError::InputShape { .. }), "{err:?}");
    println!("{err}");
    let err = OnnxModel::read(&fixture("bad_fp16.onnx")).err().expect("fp16");
    assert!(matches!(err, OnnxError::HalfPrecision { .. }), "{err:?}");
    println!("{err}");
    // A fixed 640x640 graph cannot be prepared for another size.
    let yunet = OnnxModel::read(&fixture("yunet_int8bq.onnx")).expect("YuNet");
    assert!(matches!(yunet.prepare(320, 320), Err(OnnxError::InputSize { .. })));
}

#[test]
fn models_of_the_wrong_kind_are_refused() {
    // A recogniser is not a detector, and a detector (12 outputs) is not a recogniser.
    let err = FaceDetector::load(&fixture("arcface_tiny.onnx"), None).err().expect("not a detector");
    assert!(matches!(err, FaceError::NotADetector { .. }), "{err:?}");
    println!("{err}");
    let err = FaceRecognizer::load(&fixture("yunet_int8bq.onnx")).err().expect("not a recogniser");
    assert!(matches!(err, FaceError::NotARecognizer { .. }), "{err:?}");
    println!("{err}");
    // A graph with two data inputs is refused before its outputs are looked at.
    let rec = FaceRecognizer::load(&fixture("bad_two_inputs.onnx"));
    assert!(matches!(rec, Err(FaceError::Onnx(OnnxError::Inputs { .. }))));
}

#[test]
fn an_empty_models_folder_names_the_path_and_the_licence() {
    let dir = tempfile::tempdir().expect("tmp");
    let err = find_face_models(dir.path()).expect_err("nothing there");
    let text = err.to_string();
    assert!(text.contains("det_10g.onnx") && text.contains("w600k_r50.onnx"), "{text}");
    assert!(text.contains("non-commercial research"), "{text}");
    std::fs::create_dir_all(dir.path().join("buffalo_l")).expect("mkdir");
    std::fs::write(dir.path().join("buffalo_l/det_10g.onnx"), b"x").expect("write");
    let err = find_face_models(dir.path()).expect_err("half installed");
    assert_eq!(err.missing, vec!["w600k_r50.onnx".to_string()]);
    std::fs::write(dir.path().join("buffalo_l/w600k_r50.onnx"), b"x").expect("write");
    let paths = find_face_models(dir.path()).expect("both present");
    assert_eq!(paths.detector, dir.path().join("buffalo_l/det_10g.onnx"));
}
