//! Loading StoryMaker's `mask.bin` layout (torch zip-pickle with two state dicts) and attaching
//! its processors to the UNet, on a tiny file written by torch.save (tools/parity/gen_adapter_bin.py);
//! the pickle reader on corrupted and malicious files; the face-data loader.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use common::parity_fixture;
use storymaker::face::{load_face_data, FaceDataError};
use storymaker::models::adapter::{attach_ip_adapter, processor_names, AdapterScales};
use storymaker::models::unet::{UNet2DConditionModel, UNetConfig};
use storymaker::weights::adapter_bin::load_adapter;
use storymaker::weights::store::TensorStore;
use storymaker::weights::torch_pickle::{read_state_dict, TorchCheckpoint, TorchPickleError, Value};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/adapter").join(name)
}

fn tiny_unet() -> (UNetConfig, UNet2DConditionModel) {
    let cfg = UNetConfig::from_json(&std::fs::read(parity_fixture("unet.config.json")).unwrap()).unwrap();
    let vb = TensorStore::open(&[parity_fixture("unet.weights.safetensors")])
        .unwrap()
        .into_var_builder(DType::F32, &Device::Cpu);
    let unet = UNet2DConditionModel::new(vb, &cfg).unwrap();
    (cfg, unet)
}

#[test]
fn processor_order_matches_diffusers_attn_processors() {
    let (cfg, _) = tiny_unet();
    let diffusers: Vec<String> = serde_json::from_slice(&std::fs::read(fixture("processors.json")).unwrap()).unwrap();
    assert_eq!(processor_names(&cfg), diffusers);
}

#[test]
fn mask_bin_loads_and_every_processor_attaches() {
    let w = load_adapter(&fixture("mask_tiny.bin"), &Device::Cpu).unwrap();
    assert_eq!(w.image_proj_model["bg_embed"].dims(), &[1, 20, 80]);
    assert_eq!(w.ip_adapter.len(), 504);
    let (cfg, mut unet) = tiny_unet();
    let vb = VarBuilder::from_tensors(w.ip_adapter.clone(), DType::F32, &Device::Cpu);
    let n = attach_ip_adapter(&mut unet, vb, Arc::new(AdapterScales::default())).unwrap();
    assert_eq!(n, processor_names(&cfg).len());

    // The safetensors conversion (prefixed keys) loads the same tensors.
    let d = tempfile::tempdir().unwrap();
    let mut flat = std::collections::HashMap::new();
    for (k, v) in &w.image_proj_model {
        flat.insert(format!("image_proj_model.{k}"), v.clone());
    }
    for (k, v) in &w.ip_adapter {
        flat.insert(format!("ip_adapter.{k}"), v.clone());
    }
    let st = d.path().join("mask.safetensors");
    candle_core::safetensors::save(&flat, &st).unwrap();
    let again = load_adapter(&st, &Device::Cpu).unwrap();
    assert_eq!(again.ip_adapter.len(), w.ip_adapter.len());
    let a = again.ip_adapter["0.to_q_lora.down.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = w.ip_adapter["0.to_q_lora.down.weight"].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a, b);
}

#[test]
fn a_file_that_is_not_an_adapter_is_explained() {
    let err = load_adapter(&parity_fixture("unet.weights.safetensors"), &Device::Cpu).err().expect("must fail");
    assert!(err.to_string().contains("not a StoryMaker adapter"), "{err}");
    let d = tempfile::tempdir().unwrap();
    let junk = d.path().join("mask.bin");
    std::fs::write(&junk, b"not a zip").unwrap();
    assert!(load_err(&junk).contains("is not a PyTorch checkpoint written by torch.save"));
}

// ------------------------------------------------------------------------------------------------
// The pickle reader (weights::torch_pickle) on real torch.save files and on corrupted ones.

/// Copies a zip archive entry by entry (stored), letting `edit` change an entry's bytes or drop
/// it (`None`).
fn rewrite_zip(src: &Path, dst: &Path, edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(src).unwrap()).unwrap();
    let mut out = zip::ZipWriter::new(std::fs::File::create(dst).unwrap());
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let name = entry.name().unwrap().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if let Some(bytes) = edit(&name, bytes) {
            out.start_file(name, opts).unwrap();
            out.write_all(&bytes).unwrap();
        }
    }
    out.finish().unwrap();
}

/// In a pickle, after the BINUNICODE string `key`, replaces the first `from` with `to`.
fn patch_after_key(pkl: &[u8], key: &str, from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut needle = vec![b'X'];
    needle.extend_from_slice(&(key.len() as u32).to_le_bytes());
    needle.extend_from_slice(key.as_bytes());
    let at = pkl.windows(needle.len()).position(|w| w == needle).expect("key in pickle") + needle.len();
    let off = pkl[at..].windows(from.len()).position(|w| w == from).expect("pattern after key") + at;
    let mut out = pkl.to_vec();
    out.splice(off..off + from.len(), to.iter().copied());
    out
}

/// mask_tiny.bin with its pickle edited by `patch`, in a temp dir.
fn patched_mask(patch: impl Fn(&[u8]) -> Vec<u8>) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("mask.bin");
    rewrite_zip(&fixture("mask_tiny.bin"), &p, |name, b| Some(if name.ends_with("/data.pkl") { patch(&b) } else { b }));
    (d, p)
}

fn load_err(path: &Path) -> String {
    match load_adapter(path, &Device::Cpu) {
        Ok(_) => panic!("{} must not load", path.display()),
        Err(e) => e.to_string(),
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn our_reader_returns_the_same_tensors_as_candles() {
    let path = fixture("mask_tiny.bin");
    let mut ckpt = TorchCheckpoint::open(&path).unwrap();
    assert_eq!(ckpt.keys(), ["image_proj_model", "ip_adapter"]);
    for key in ["image_proj_model", "ip_adapter"] {
        let ours = ckpt.state_dict(Some(key), &Device::Cpu).unwrap();
        let theirs: HashMap<String, Tensor> =
            candle_core::pickle::read_all_with_key(&path, Some(key)).unwrap().into_iter().collect();
        assert_eq!(ours.len(), theirs.len(), "{key}");
        for (name, t) in &theirs {
            let o = &ours[name];
            assert_eq!((o.dims(), o.dtype()), (t.dims(), t.dtype()), "{key}.{name}");
            assert_eq!(values(o), values(t), "{key}.{name}");
        }
    }
    assert_eq!(read_state_dict(&path, Some("ip_adapter"), &Device::Cpu).unwrap().len(), 504);
}

#[test]
fn views_dtypes_and_shared_storages_are_rebuilt() {
    let path = fixture("tensor_layouts.bin");
    let t = read_state_dict(&path, None, &Device::Cpu).unwrap();
    let a: Vec<f32> = (0..12).map(|v| v as f32).collect();
    assert_eq!(t["a"].dims(), &[3, 4]);
    assert_eq!(values(&t["a"]), a);
    assert_eq!(t["t"].dims(), &[4, 3]);
    assert_eq!(values(&t["t"]), [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]);
    assert_eq!(values(&t["row"]), [4., 5., 6., 7.]);
    assert_eq!(t["ex"].dims(), &[2, 4]);
    assert_eq!(values(&t["ex"]), [8., 9., 10., 11., 8., 9., 10., 11.]);
    assert_eq!(values(&t["p"]), [0., 1., 2., 3.]);
    for (name, dtype) in [("f16", DType::F16), ("bf16", DType::BF16), ("f64", DType::F64)] {
        assert_eq!(t[name].dtype(), dtype, "{name}");
        assert_eq!(values(&t[name]), a, "{name}");
    }
    assert_eq!(t["i64"].to_vec1::<i64>().unwrap(), [-3, -2, -1, 0, 1, 2]);
    assert_eq!(t["b"].to_vec1::<u8>().unwrap(), [1, 0, 1]);
    assert_eq!(t["s"].dims(), &[] as &[usize]);
    assert_eq!(t["s"].to_scalar::<f32>().unwrap(), 2.5);
    assert_eq!(t["e"].dims(), &[0, 3]);
    // A small structure can be read without tensor bytes.
    let ckpt = TorchCheckpoint::open(&path).unwrap();
    let Value::Tensor(info) = ckpt.value(Some("t")).unwrap() else { panic!("not a tensor") };
    assert_eq!(info.shape, [4, 3]);
}

#[test]
fn missing_state_dict_is_named() {
    let msg = load_err(&fixture("mask_missing_key.bin"));
    assert!(msg.contains("not a StoryMaker adapter"), "{msg}");
    assert!(msg.contains("`ip_adapter` are missing (found: image_proj_model)"), "{msg}");
    let err =
        TorchCheckpoint::open(&fixture("mask_missing_key.bin")).unwrap().state_dict(Some("ip_adapter"), &Device::Cpu);
    let msg = err.expect_err("no ip_adapter").to_string();
    assert!(msg.contains("has no entry `ip_adapter` (it has: image_proj_model)"), "{msg}");
}

#[test]
fn truncated_files_are_refused() {
    let bytes = std::fs::read(fixture("mask_tiny.bin")).unwrap();
    let d = tempfile::tempdir().unwrap();
    for keep in [0, 3, 100, bytes.len() / 2, bytes.len() - 30, bytes.len() - 1] {
        let p = d.path().join(format!("mask_{keep}.bin"));
        std::fs::write(&p, &bytes[..keep]).unwrap();
        let msg = load_err(&p);
        assert!(
            msg.contains("not a PyTorch checkpoint written by torch.save, or it is truncated or corrupt"),
            "{keep}: {msg}"
        );
    }
    // A storage record shorter than the pickle declares (data lost inside the archive).
    let p = d.path().join("short_storage.bin");
    rewrite_zip(&fixture("mask_tiny.bin"), &p, |name, mut b| {
        if name.ends_with("/data/1") {
            b.truncate(b.len() - 100);
        }
        Some(b)
    });
    let msg = load_err(&p);
    assert!(msg.contains("tensor `pos_embed`"), "{msg}");
    assert!(msg.contains("declared as 19200 bytes but record mask_tiny/data/1 has 19100 bytes"), "{msg}");
    // A storage record that is gone.
    let p = d.path().join("no_storage.bin");
    rewrite_zip(&fixture("mask_tiny.bin"), &p, |name, b| (!name.ends_with("/data/3")).then_some(b));
    let msg = load_err(&p);
    assert!(msg.contains("storage `3` (record mask_tiny/data/3, used by `"), "{msg}");
    assert!(msg.contains("is missing"), "{msg}");
}

#[test]
fn corrupted_tensor_bytes_fail_the_checksum() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("mask.bin");
    let mut bytes = std::fs::read(fixture("mask_tiny.bin")).unwrap();
    let start = {
        let mut archive = zip::ZipArchive::new(std::fs::File::open(fixture("mask_tiny.bin")).unwrap()).unwrap();
        let entry = archive.by_name("mask_tiny/data/1").unwrap();
        entry.data_start().expect("data start") as usize
    };
    bytes[start + 10] ^= 0x40;
    std::fs::write(&p, bytes).unwrap();
    let msg = load_err(&p);
    assert!(msg.contains("record mask_tiny/data/1 cannot be read"), "{msg}");
    assert!(msg.to_lowercase().contains("checksum"), "{msg}");
}

#[test]
fn shape_beyond_its_storage_is_refused_before_reading() {
    // bg_embed is [1, 20, 80] over 1600 floats; declare [2, 20, 80].
    let (_d, p) = patched_mask(|pkl| patch_after_key(pkl, "bg_embed", b"K\x01K\x14K\x50\x87", b"K\x02K\x14K\x50\x87"));
    let msg = load_err(&p);
    assert!(msg.contains("tensor `bg_embed`: shape [2, 20, 80] with strides [1600, 80, 1]"), "{msg}");
    assert!(msg.contains("reaches element 3199, but its storage `0` holds 1600 torch.float32 elements"), "{msg}");
    // An absurd declared size is caught by the storage check, before any allocation.
    let (_d, p) = patched_mask(|pkl| patch_after_key(pkl, "bg_embed", b"M\x40\x06t", b"J\xff\xff\xff\x7ft"));
    let msg = load_err(&p);
    assert!(msg.contains("declared as 8589934588 bytes but record mask_tiny/data/0 has 6400 bytes"), "{msg}");
}

#[test]
fn wrong_shape_is_named_when_the_processors_attach() {
    // 0.to_q_lora.down.weight is [4, 24]; declare [4, 23] (still inside its storage).
    let (_d, p) =
        patched_mask(|pkl| patch_after_key(pkl, "0.to_q_lora.down.weight", b"K\x04K\x18\x86", b"K\x04K\x17\x86"));
    let w = load_adapter(&p, &Device::Cpu).unwrap();
    assert_eq!(w.ip_adapter["0.to_q_lora.down.weight"].dims(), &[4, 23]);
    let (_, mut unet) = tiny_unet();
    let vb = VarBuilder::from_tensors(w.ip_adapter, DType::F32, &Device::Cpu);
    let msg = attach_ip_adapter(&mut unet, vb, Arc::new(AdapterScales::default())).expect_err("must fail").to_string();
    assert!(msg.contains("0.to_q_lora.down.weight"), "{msg}");
    assert!(msg.contains("[4, 24]") && msg.contains("[4, 23]"), "{msg}");
}

#[test]
fn malicious_pickles_are_refused_and_nothing_runs() {
    // evil.bin's pickle calls os.system("echo pwned > MARKER") under Python's pickle.
    let marker = Path::new("/tmp/storymaker-pickle-pwned");
    let _ = std::fs::remove_file(marker);
    let path = fixture("evil.bin");
    let msg = load_err(&path);
    assert!(msg.contains(&format!("refusing to load {}", path.display())), "{msg}");
    assert!(msg.contains("the Python global `posix.system`, which a weight file never needs"), "{msg}");
    assert!(
        matches!(TorchCheckpoint::open(&path), Err(TorchPickleError::ForbiddenGlobal { ref global, .. }) if global == "posix.system")
    );
    assert!(matches!(load_face_data(&path), Err(FaceDataError::Pickle(TorchPickleError::ForbiddenGlobal { .. }))));
    assert!(!marker.exists(), "the payload ran");

    // The protocol-4 spelling (STACK_GLOBAL), as Python's own pickle.dumps writes it.
    let (_d, p) = patched_mask(|_| b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x8c\x04argv\x85R.".to_vec());
    assert!(load_err(&p).contains("the Python global `builtins.eval`"));
    // Allowed globals used the wrong way are refused too.
    let (_d, p) = patched_mask(|_| b"\x80\x02ctorch\nFloatStorage\n)R.".to_vec());
    assert!(load_err(&p).contains("is corrupt or not a plain PyTorch state dict"));
}

#[test]
fn legacy_and_non_torch_files_are_explained() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("old.bin");
    std::fs::write(&p, b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.").unwrap();
    assert!(load_err(&p).contains("legacy format"));
    let p = d.path().join("other.zip");
    rewrite_zip(&fixture("mask_tiny.bin"), &p, |name, b| (!name.ends_with("data.pkl")).then_some(b));
    assert!(load_err(&p).contains("it has no data.pkl record"));
}

#[test]
fn face_data_loads_normalised() {
    let raw: Vec<f64> = (0..512).map(|i| (0.1 * i as f64).cos()).collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    let template = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]];
    for name in ["face_data.bin", "face_data_flat.bin"] {
        let f = load_face_data(&fixture(name)).unwrap();
        assert_eq!(f.embedding.len(), 512);
        let max_err = f.embedding.iter().zip(&raw).map(|(&e, &r)| (e as f64 - r / norm).abs()).fold(0.0, f64::max);
        assert!(max_err < 1e-6, "{name}: {max_err}");
        let n = f.embedding.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((n - 1.0).abs() < 1e-6, "{name}: norm {n}");
        for (got, want) in f.kps.iter().zip(template) {
            assert!((got[0] as f64 - want[0]).abs() < 1e-4 && (got[1] as f64 - want[1]).abs() < 1e-4, "{name}");
        }
    }
    let msg = load_face_data(&fixture("face_data_zero.bin")).expect_err("zero id").to_string();
    assert!(msg.contains("the face embedding `id` is (nearly) all zeros"), "{msg}");
    let msg = load_face_data(&fixture("mask_tiny.bin")).expect_err("not face data").to_string();
    assert!(msg.contains("it has no tensor `id`"), "{msg}");
    let msg = load_face_data(&fixture("tensor_layouts.bin")).expect_err("not face data").to_string();
    assert!(msg.contains("no tensor `id`"), "{msg}");
}

/// `(name, storage key, storage elements, shape, stride)` of a float32 tensor, storage offset 0.
type TensorSpec<'a> = (&'a str, &'a str, u32, &'a [u32], &'a [u32]);

/// A `torch.save`-style pickle of a dict of float32 tensors.
fn tensors_pickle(tensors: &[TensorSpec]) -> Vec<u8> {
    let s = |p: &mut Vec<u8>, v: &str| {
        p.push(b'X');
        p.extend_from_slice(&(v.len() as u32).to_le_bytes());
        p.extend_from_slice(v.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: u32| {
        p.push(b'J');
        p.extend_from_slice(&(v as i32).to_le_bytes());
    };
    let mut p = b"\x80\x02}(".to_vec();
    for &(name, key, numel, shape, stride) in tensors {
        s(&mut p, name);
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        s(&mut p, "storage");
        p.extend_from_slice(b"ctorch\nFloatStorage\n");
        s(&mut p, key);
        s(&mut p, "cpu");
        int(&mut p, numel);
        p.extend_from_slice(b"tQ");
        int(&mut p, 0);
        for dims in [shape, stride] {
            p.push(b'(');
            dims.iter().for_each(|&d| int(&mut p, d));
            p.push(b't');
        }
        p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend_from_slice(b"u.");
    p
}

/// A torch-style archive `a/data.pkl` + `a/data/<key>` records; `copies` adds records that
/// share the bytes of the record they name (`shallow`: the same bytes in the file, i.e.
/// overlapping zip records; otherwise a real copy).
fn torch_zip(path: &Path, pkl: &[u8], records: &[(&str, Vec<u8>)], copies: &[(&str, &str)], shallow: bool) {
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("a/data.pkl", opts).unwrap();
    w.write_all(pkl).unwrap();
    for (key, bytes) in records {
        w.start_file(format!("a/data/{key}"), opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    for (from, to) in copies {
        let (from, to) = (format!("a/data/{from}"), format!("a/data/{to}"));
        if shallow {
            w.shallow_copy_file(&from, &to).unwrap();
        } else {
            w.deep_copy_file(&from, &to).unwrap();
        }
    }
    std::fs::write(path, w.finish().unwrap().into_inner()).unwrap();
}

#[test]
fn overlapping_records_cannot_multiply_the_file() {
    let d = tempfile::tempdir().unwrap();
    let pkl = tensors_pickle(&[
        ("w0", "0", 1000, &[1000], &[1]),
        ("w1", "1", 1000, &[1000], &[1]),
        ("w2", "2", 1000, &[1000], &[1]),
    ]);
    let data: Vec<u8> = (0..1000u32).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let copies = [("0", "1"), ("0", "2")];
    // Real copies load (and check the hand-written pickle).
    let p = d.path().join("copies.bin");
    torch_zip(&p, &pkl, &[("0", data.clone())], &copies, false);
    let t = read_state_dict(&p, None, &Device::Cpu).unwrap();
    assert_eq!(values(&t["w2"])[999], 999.0);
    // Three records over the same bytes do not.
    let p = d.path().join("overlap.bin");
    torch_zip(&p, &pkl, &[("0", data)], &copies, true);
    let msg = read_state_dict(&p, None, &Device::Cpu).expect_err("overlapping records").to_string();
    assert!(msg.contains("storage records add up to more bytes than the file has"), "{msg}");
}

#[test]
fn an_expanded_view_cannot_claim_more_than_the_file() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bomb.bin");
    // One float viewed as [65536, 65536] (16 GiB) through zero strides.
    let pkl = tensors_pickle(&[("x", "0", 1, &[65536, 65536], &[0, 0]), ("ok", "0", 1, &[3], &[0])]);
    torch_zip(&p, &pkl, &[("0", 1.5f32.to_le_bytes().to_vec())], &[], false);
    let msg = read_state_dict(&p, None, &Device::Cpu).expect_err("expansion").to_string();
    assert!(msg.contains("tensor `x`: its strided layout (shape [65536, 65536], strides [0, 0])"), "{msg}");
    assert!(msg.contains("would expand to more data than the whole file holds"), "{msg}");
    // A small expansion is fine.
    let pkl = tensors_pickle(&[("ok", "0", 1, &[3], &[0])]);
    torch_zip(&p, &pkl, &[("0", 1.5f32.to_le_bytes().to_vec())], &[], false);
    assert_eq!(values(&read_state_dict(&p, None, &Device::Cpu).unwrap()["ok"]), [1.5, 1.5, 1.5]);
}
