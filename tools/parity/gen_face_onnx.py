#!/usr/bin/env python3
"""Synthetic buffalo_l graphs and the face-analysis parity fixtures for `src/face/` (reference spec §1.4).

insightface's buffalo_l weights (SCRFD `det_10g.onnx`, ArcFace `w600k_r50.onnx`) are on no package registry, so the
Rust face path is checked on ONNX graphs built here with the same interface and the same kinds of operators:

* detector, like det_10g: input `input.1` [1, 3, ?, ?] (dynamic height/width); nine outputs in det_10g's order
  score_8, score_16, score_32, bbox_8, bbox_16, bbox_32, kps_8, kps_16, kps_32 (named as in det_10g: 448, 471, 494,
  451, 474, 497, 454, 477, 500), each 2-D [H/s * W/s * 2, 1 | 4 | 10] (two anchors per location, anchor-major
  inside a location); a ResNet-style backbone (Conv, BatchNormalization, Relu, MaxPool, Add), a PAFPN neck with
  nearest-neighbour Resize, per-level heads (Sigmoid scores, a Mul "scale" on the box distances, Transpose,
  Reshape).
* recogniser, like w600k_r50 (arcface_torch iresnet): input `input.1` [N, 3, 112, 112] -> output `683` [N, 512];
  Conv, BatchNormalization, PRelu, Add, Flatten, Gemm and a final 1-D BatchNormalization.

Random weights from fixed seeds (He-normal convolutions, BatchNorm statistics near 1/0); the score head's bias is
set so that a few percent of the anchors pass insightface's 0.5 threshold and the NMS has real work to do.

Parity fixtures (small widths, `tests/fixtures/face/`), all from `assets/sample/astronaut.png`:
  scrfd_tiny.onnx, arcface_tiny.onnx   the graphs (a few hundred KB)
  scrfd_input_320.png                  insightface's letterbox of the photo for det_size (320, 320):
                                       `cv2.resize` (INTER_LINEAR) to fit, pasted top-left in a black canvas
  scrfd_tiny_out.safetensors           onnxruntime's nine raw outputs on blobFromImage(letterbox, 1/128, 127.5,
                                       swapRB) of that letterbox (BGR in, as insightface), plus `blob`-free
                                       metadata in the JSON below
  arcface_crop_112.png                 insightface norm_crop (112) of the photo at the chosen face's keypoints
  arcface_tiny_out.safetensors         onnxruntime output on that crop (blobFromImages 1/127.5, 127.5, swapRB)
  face_parity.json                     det_scale, the reference decode (SCRFD.detect: threshold 0.5, NMS 0.4):
                                       boxes, scores, keypoints of every kept face, the chosen (largest) face,
                                       and versions
  bad_*.onnx                           tiny graphs a face model must be refused for (two data inputs, a vector
                                       input, float16 weights)

`--full DIR` writes full-size graphs (det_10g-like widths, iresnet-50) with random weights for
`storymaker bench face` instead; nothing else.

Usage:
    /root/.cache/parity-venv/bin/python tools/parity/gen_face_onnx.py            # writes tests/fixtures/face/
    /root/.cache/parity-venv/bin/python tools/parity/gen_face_onnx.py --full /tmp/face-bench
"""

from __future__ import annotations

import argparse
import json
import os

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPSET = 13
DET_OUTPUT_NAMES = ["448", "471", "494", "451", "474", "497", "454", "477", "500"]
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32)


class Graph:
    """A tiny ONNX graph builder: every helper appends nodes and random initializers, returns the output name."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0
        self.flops = 0
        self.params = 0

    def name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}_{self.n}"

    def const(self, value: np.ndarray, kind: str = "w") -> str:
        name = self.name(kind)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        self.params += value.size
        return name

    def node(self, op: str, inputs: list, out: str | None = None, **attrs) -> str:
        out = out or self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op), **attrs))
        return out

    def conv(self, x, cin, cout, k, stride, hw, bias=None, w_std=None):
        std = w_std if w_std is not None else np.sqrt(2.0 / (cin * k * k))
        w = (self.rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32)
        ins = [x, self.const(w)]
        if bias is not None:
            b = np.broadcast_to(np.asarray(bias, np.float32), (cout,))
            ins.append(self.const((b + 0.05 * self.rng.standard_normal(cout)).astype(np.float32), "b"))
        hw = (hw[0] // stride, hw[1] // stride)
        self.flops += 2 * cin * cout * k * k * hw[0] * hw[1]
        return self.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4), hw

    def bn(self, x, c):
        r = self.rng
        gamma = (1.0 + 0.1 * r.standard_normal(c)).astype(np.float32)
        beta = (0.1 * r.standard_normal(c)).astype(np.float32)
        mean = (0.1 * r.standard_normal(c)).astype(np.float32)
        var = (1.0 + 0.1 * np.abs(r.standard_normal(c))).astype(np.float32)
        ins = [x] + [self.const(v, "bn") for v in (gamma, beta, mean, var)]
        return self.node("BatchNormalization", ins, epsilon=1e-5)

    def prelu(self, x, c):
        slope = (0.25 + 0.05 * self.rng.standard_normal((c, 1, 1))).astype(np.float32)
        return self.node("PRelu", [x, self.const(slope, "prelu")])

    def conv_bn_relu(self, x, cin, cout, k, stride, hw):
        y, hw = self.conv(x, cin, cout, k, stride, hw)
        return self.node("Relu", [self.bn(y, cout)]), hw


# ----- detector (SCRFD-10G-like) ----------------------------------------------------------------------------------

def basic_block(g: Graph, x, cin, cout, stride, hw):
    y, hw2 = g.conv_bn_relu(x, cin, cout, 3, stride, hw)
    y, _ = g.conv(y, cout, cout, 3, 1, hw2)
    y = g.bn(y, cout)
    if stride != 1 or cin != cout:
        s, _ = g.conv(x, cin, cout, 1, stride, hw)
        x = g.bn(s, cout)
    return g.node("Relu", [g.node("Add", [x, y])]), hw2


def build_scrfd(cfg: dict, seed: int, head_rms=(1.0, 1.0, 1.0), probe: bool = False):
    """`head_rms`: the root-mean-square of each level's head features (measured by a first build with
    `probe=True`, which exposes them as extra outputs), so the random heads give O(1) logits and distances."""
    g = Graph(seed)
    hw = (640, 640)  # only for the FLOP count; the graph's spatial size is dynamic
    stem = cfg["stem"]
    x, hw = g.conv_bn_relu("input.1", 3, stem[0], 3, 2, hw)
    x, hw = g.conv_bn_relu(x, stem[0], stem[1], 3, 1, hw)
    x, hw = g.conv_bn_relu(x, stem[1], stem[2], 3, 1, hw)
    x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
    hw = (hw[0] // 2, hw[1] // 2)
    cin = stem[2]
    feats = []
    for i, (blocks, planes) in enumerate(zip(cfg["blocks"], cfg["planes"])):
        for b in range(blocks):
            stride = 2 if (b == 0 and i > 0) else 1
            x, hw = basic_block(g, x, cin, planes, stride, hw)
            cin = planes
        if i > 0:
            feats.append((x, planes, hw))
    c = cfg["neck"]
    lat = []
    for f, planes, fhw in feats:
        y, _ = g.conv(f, planes, c, 1, 1, fhw, bias=0.0)
        lat.append((y, fhw))
    scales = g.const(np.array([1, 1, 2, 2], np.float32), "scales")
    roi = g.const(np.zeros(0, np.float32), "roi")
    for i in (2, 1):  # top-down: nearest 2x upsample and add
        up = g.node("Resize", [lat[i][0], roi, scales], mode="nearest", coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor")
        lat[i - 1] = (g.node("Add", [lat[i - 1][0], up]), lat[i - 1][1])
    outs = []
    for y, fhw in lat:
        z, _ = g.conv(y, c, c, 3, 1, fhw, bias=0.0)
        outs.append((z, fhw))
    for i in (1, 2):  # bottom-up path aggregation
        down, _ = g.conv(outs[i - 1][0], c, c, 3, 2, outs[i - 1][1], bias=0.0)
        outs[i] = (g.node("Add", [outs[i][0], down]), outs[i][1])
    pa = []
    for y, fhw in outs:
        z, _ = g.conv(y, c, c, 3, 1, fhw, bias=0.0)
        pa.append((z, fhw))
    heads = {"score": [], "bbox": [], "kps": []}
    probes = []
    f = cfg["head"]
    # Keypoint offsets (in strides) of a face-like pattern around the anchor: eyes, nose, mouth corners.
    face = np.array([[-0.5, -0.4], [0.5, -0.4], [0.0, 0.1], [-0.4, 0.6], [0.4, 0.6]], np.float32).ravel()
    for level, (y, fhw) in enumerate(pa):
        h, cur = y, c
        for _ in range(cfg["stacked"]):
            h, _ = g.conv_bn_relu(h, cur, f, 3, 1, fhw)
            cur = f
        probes.append(h)
        unit = 1.0 / (np.sqrt(9 * f) * head_rms[level])
        # Random-weight heads tuned for a useful spread: a few percent of the anchors score >= 0.5; box distances
        # about 2 strides each side; keypoints in a face-like pattern near the anchor.
        cls, _ = g.conv(h, f, 2, 3, 1, fhw, bias=-2.0, w_std=1.5 * unit)
        reg, _ = g.conv(h, f, 8, 3, 1, fhw, bias=2.0, w_std=0.3 * unit)
        reg = g.node("Mul", [reg, g.const(np.array(1.0 + 0.1 * level, np.float32), "scale")])
        kps, _ = g.conv(h, f, 20, 3, 1, fhw, bias=np.tile(2.0 * face, 2), w_std=0.3 * unit)
        for key, t, width in (("score", g.node("Sigmoid", [cls]), 1), ("bbox", reg, 4), ("kps", kps, 10)):
            nhwc = g.node("Transpose", [t], perm=[0, 2, 3, 1])
            heads[key].append((nhwc, width))
    shape_cache = {}
    outputs = []
    names = iter(DET_OUTPUT_NAMES)
    for key in ("score", "bbox", "kps"):
        for t, width in heads[key]:
            if width not in shape_cache:
                shape_cache[width] = g.const(np.array([-1, width], np.int64), "shape")
            name = next(names)
            g.node("Reshape", [t, shape_cache[width]], out=name)
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["?", width]))
    if probe:
        outputs += [helper.make_tensor_value_info(p, TensorProto.FLOAT, [1, f, "h", "w"]) for p in probes]
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])
    graph = helper.make_graph(g.nodes, "scrfd_like", [inp], outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gen_face_onnx")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, g


def build_scrfd_calibrated(cfg: dict, seed: int, blob: np.ndarray):
    """Builds the detector twice with the same seed: once to measure the head features on `blob`, once to use them."""
    probe, _ = build_scrfd(cfg, seed, probe=True)
    outs = session(probe).run(None, {"input.1": blob})
    rms = tuple(float(np.sqrt(np.mean(np.square(o)))) for o in outs[9:])
    return build_scrfd(cfg, seed, head_rms=rms)


# ----- recogniser (iresnet / w600k_r50-like) ----------------------------------------------------------------------

def build_arcface(cfg: dict, seed: int) -> tuple[onnx.ModelProto, Graph]:
    g = Graph(seed)
    hw = (112, 112)
    w = cfg["widths"]
    x, hw = g.conv("input.1", 3, w[0], 3, 1, hw)
    x = g.prelu(g.bn(x, w[0]), w[0])
    cin = w[0]
    for blocks, planes in zip(cfg["layers"], w):
        for b in range(blocks):
            stride = 2 if b == 0 else 1
            y = g.bn(x, cin)
            y, _ = g.conv(y, cin, planes, 3, 1, hw)
            y = g.prelu(g.bn(y, planes), planes)
            y, hw2 = g.conv(y, planes, planes, 3, stride, hw)
            y = g.bn(y, planes)
            if stride != 1 or cin != planes:
                s, _ = g.conv(x, cin, planes, 1, stride, hw)
                x = g.bn(s, planes)
            x = g.node("Add", [x, y])
            cin, hw = planes, hw2
    x = g.bn(x, cin)
    x = g.node("Flatten", [x], axis=1)
    k = cin * hw[0] * hw[1]
    emb = cfg["embedding"]
    wfc = (g.rng.standard_normal((emb, k)) / np.sqrt(k)).astype(np.float32)
    g.flops += 2 * k * emb
    x = g.node("Gemm", [x, g.const(wfc), g.const((0.01 * g.rng.standard_normal(emb)).astype(np.float32), "b")],
               transB=1)
    g.node("BatchNormalization", [x] + [g.const(v, "bn") for v in (
        (1.0 + 0.1 * g.rng.standard_normal(emb)).astype(np.float32),
        (0.1 * g.rng.standard_normal(emb)).astype(np.float32),
        (0.1 * g.rng.standard_normal(emb)).astype(np.float32),
        (1.0 + 0.1 * np.abs(g.rng.standard_normal(emb))).astype(np.float32))], out="683", epsilon=1e-5)
    inp = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])
    out = helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", emb])
    graph = helper.make_graph(g.nodes, "iresnet_like", [inp], [out], g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gen_face_onnx")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, g


TINY_SCRFD = dict(stem=(4, 4, 8), blocks=(1, 1, 1, 1), planes=(8, 12, 12, 16), neck=8, head=8, stacked=1)
FULL_SCRFD = dict(stem=(28, 28, 56), blocks=(3, 4, 2, 3), planes=(56, 88, 88, 224), neck=56, head=80, stacked=3)
TINY_ARCFACE = dict(widths=(8, 8, 8, 4), layers=(1, 1, 1, 1), embedding=512)
FULL_ARCFACE = dict(widths=(64, 128, 256, 512), layers=(3, 4, 14, 3), embedding=512)


# ----- the reference pipeline (insightface SCRFD.detect / ArcFaceONNX.get, reimplemented step by step) -----------

def letterbox(img_bgr: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """SCRFD.detect's resize: keep the aspect ratio, fit into size x size, paste top-left on black."""
    im_ratio = float(img_bgr.shape[0]) / img_bgr.shape[1]
    if im_ratio > 1.0:
        new_h = size
        new_w = int(new_h / im_ratio)
    else:
        new_w = size
        new_h = int(new_w * im_ratio)
    det_scale = float(new_h) / img_bgr.shape[0]
    canvas = np.zeros((size, size, 3), np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(img_bgr, (new_w, new_h))
    return canvas, det_scale


def scrfd_decode(outs: list[np.ndarray], size: int, det_scale: float, thresh: float = 0.5, nms_thresh: float = 0.4):
    """SCRFD.forward + SCRFD.detect after the network: float32 arithmetic as numpy does it there."""
    scores_l, boxes_l, kps_l = [], [], []
    for idx, stride in enumerate((8, 16, 32)):
        scores = outs[idx]
        bbox = outs[idx + 3] * stride
        kps = outs[idx + 6] * stride
        h = w = size // stride
        centers = np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float32)
        centers = (centers * stride).reshape((-1, 2))
        centers = np.stack([centers] * 2, axis=1).reshape((-1, 2))
        pos = np.where(scores >= thresh)[0]
        boxes = np.stack([centers[:, 0] - bbox[:, 0], centers[:, 1] - bbox[:, 1],
                          centers[:, 0] + bbox[:, 2], centers[:, 1] + bbox[:, 3]], axis=-1)
        pts = []
        for i in range(0, 10, 2):
            pts.append(centers[:, 0] + kps[:, i])
            pts.append(centers[:, 1] + kps[:, i + 1])
        pts = np.stack(pts, axis=-1).reshape((-1, 5, 2))
        scores_l.append(scores[pos])
        boxes_l.append(boxes[pos])
        kps_l.append(pts[pos])
    scores = np.vstack(scores_l)
    order = scores.ravel().argsort()[::-1]
    boxes = np.vstack(boxes_l) / det_scale
    kpss = np.vstack(kps_l) / det_scale
    pre = np.hstack((boxes, scores)).astype(np.float32, copy=False)[order, :]
    kpss = kpss[order]
    keep = nms(pre, nms_thresh)
    return pre[keep], kpss[keep], int(len(order))


def nms(dets: np.ndarray, thresh: float) -> list[int]:
    x1, y1, x2, y2, s = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = s.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def norm_crop_112(img: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """insightface face_align.norm_crop(img, kps) (112): skimage similarity on float32 points, cv2.warpAffine."""
    from skimage import transform as trans
    tform = trans.SimilarityTransform.from_estimate(kps.astype(np.float32), ARCFACE_TEMPLATE)
    return cv2.warpAffine(img, tform.params[0:2, :], (112, 112), borderValue=0.0)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def write_fixtures(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    bgr = cv2.imread(os.path.join(ROOT, "assets/sample/astronaut.png"), cv2.IMREAD_COLOR)
    size = 320
    canvas_bgr, det_scale = letterbox(bgr, size)
    cv2.imwrite(os.path.join(out, "scrfd_input_320.png"), canvas_bgr)
    blob = cv2.dnn.blobFromImage(canvas_bgr, 1.0 / 128, (size, size), (127.5, 127.5, 127.5), swapRB=True)
    det, gd = build_scrfd_calibrated(TINY_SCRFD, 5, blob)
    rec, gr = build_arcface(TINY_ARCFACE, seed=6)
    onnx.save(det, os.path.join(out, "scrfd_tiny.onnx"))
    onnx.save(rec, os.path.join(out, "arcface_tiny.onnx"))
    det_out = session(det).run(None, {"input.1": blob})
    save_file({n: np.ascontiguousarray(o) for n, o in zip(DET_OUTPUT_NAMES, det_out)},
              os.path.join(out, "scrfd_tiny_out.safetensors"))
    dets, kpss, n_pos = scrfd_decode(det_out, size, det_scale)
    if n_pos < 20 or len(dets) < 5 or len(dets) == n_pos:
        raise SystemExit(f"self-check failed: decode should pass some anchors and suppress some ({n_pos} -> {len(dets)})")
    areas = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
    chosen = int(np.argmax(areas))
    crop_bgr = norm_crop_112(bgr, kpss[chosen])
    cv2.imwrite(os.path.join(out, "arcface_crop_112.png"), crop_bgr)
    rblob = cv2.dnn.blobFromImages([crop_bgr], 1.0 / 127.5, (112, 112), (127.5, 127.5, 127.5), swapRB=True)
    emb = session(rec).run(None, {"input.1": rblob})[0]
    save_file({"683": np.ascontiguousarray(emb)}, os.path.join(out, "arcface_tiny_out.safetensors"))
    meta = {
        "det_size": size,
        "det_scale": det_scale,
        "positives": n_pos,
        "faces": [{"bbox": [float(v) for v in d[:4]], "score": float(d[4]), "kps": k.astype(float).tolist()}
                  for d, k in zip(dets, kpss)],
        "chosen": chosen,
        "detector": {"params": gd.params, "gflops_640": gd.flops / 1e9},
        "recognizer": {"params": gr.params, "gflops": gr.flops / 1e9},
        "versions": {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "opencv": cv2.__version__,
                     "numpy": np.__version__},
    }
    with open(os.path.join(out, "face_parity.json"), "w") as f:
        json.dump(meta, f, indent=1)
    write_bad_models(out)
    print(f"{n_pos} anchors >= 0.5, {len(dets)} faces after NMS, chosen #{chosen} area {areas[chosen]:.1f}")
    print(f"detector {gd.params} params, recogniser {gr.params} params -> {out}")


def write_bad_models(out: str) -> None:
    """Small ONNX files a face model must be refused for, each with a named error in Rust."""
    def save(name, nodes, inputs, outputs, inits=()):
        graph = helper.make_graph(nodes, name, inputs, outputs, list(inits))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="gen_face_onnx")
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, os.path.join(out, f"bad_{name}.onnx"))

    img = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 112, 112])
    out_v = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 112, 112])
    # two data inputs
    save("two_inputs", [helper.make_node("Add", ["a", "b"], ["y"])], [img("a"), img("b")], [out_v])
    # a vector input instead of an image
    vec = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 512])
    save("vector_input", [helper.make_node("Relu", ["x"], ["y"])], [vec],
         [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512])])
    # half-precision weights
    w = numpy_helper.from_array(np.ones((3, 1, 1, 1), np.float16), "w")
    save("fp16", [helper.make_node("Cast", ["x"], ["xh"], to=TensorProto.FLOAT16),
                  helper.make_node("Conv", ["xh", "w"], ["yh"], group=3),
                  helper.make_node("Cast", ["yh"], ["y"], to=TensorProto.FLOAT)],
         [img("x")], [out_v], [w])


def write_full(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    # Calibrated on a random 640x640 blob: the benchmark times the network, whatever it finds.
    blob = np.random.default_rng(9).uniform(-1, 1, (1, 3, 640, 640)).astype(np.float32)
    det, gd = build_scrfd_calibrated(FULL_SCRFD, 7, blob)
    rec, gr = build_arcface(FULL_ARCFACE, seed=8)
    onnx.save(det, os.path.join(out, "det_10g.onnx"))
    onnx.save(rec, os.path.join(out, "w600k_r50.onnx"))
    # SCRFD's paper counts multiply-adds: SCRFD-10G is 9.98 G at 640x480, i.e. ~13.3 G at 640x640.
    print(f"detector: {gd.params / 1e6:.2f} M params, {gd.flops / 2e9:.2f} G multiply-adds at 640x640 "
          "(det_10g: 3.86 M params, ~13.3 G)")
    print(f"recogniser: {gr.params / 1e6:.2f} M params, {gr.flops / 2e9:.2f} G multiply-adds at 112x112 "
          "(w600k_r50 / iresnet-50: 43.6 M params, ~6.3 G)")
    print(f"written to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/face"))
    ap.add_argument("--full", metavar="DIR", help="write full-size random-weight graphs for the benchmark only")
    args = ap.parse_args()
    if args.full:
        write_full(args.full)
    else:
        write_fixtures(args.out)


if __name__ == "__main__":
    main()
