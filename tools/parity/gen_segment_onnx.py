"""Synthetic person-segmentation graphs with each supported family's interface (issue 10), and onnxruntime
references for tests/segment_parity.rs.

Random weights, 4 channels: what is tested is the loader, the engine and the pre/post-processing, not the quality.
For each family two files are written: `<family>_dyn.onnx` (symbolic height/width, run small for raw parity) and
`<family>.onnx` (the family's fixed traced size, as published files are). The astronaut masks are made with the
families' reference pre/post-processing written independently here with PIL and torch:
  u2net:    PIL LANCZOS to 320, x/max(x), ImageNet mean/std; first of 7 outputs; min-max
  birefnet: PIL BILINEAR to 1024, x/255, ImageNet mean/std; sigmoid of the logits
  isnet:    torch bilinear (no antialias) to 1024, x/255 - 0.5; min-max
then torch bilinear (align_corners=False) back to the photo size and rounding to 8 bits.
Also writes `isnet_fp16.onnx`, an fp16-weight graph (Cast to fp16 → Conv → Sigmoid → Cast to fp32).

usage: /root/.cache/parity-venv/bin/python tools/parity/gen_segment_onnx.py [OUT_DIR]
"""
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper, TensorProto
from PIL import Image
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests/fixtures/segment")
os.makedirs(OUT, exist_ok=True)
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


class Head(torch.nn.Module):
    def __init__(self, sigmoid):
        super().__init__()
        self.down = torch.nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.mid = torch.nn.Conv2d(4, 4, 3, padding=1)
        self.out = torch.nn.Conv2d(4, 1, 1)
        self.sigmoid = sigmoid

    def forward(self, x):
        h, w = x.shape[2], x.shape[3]
        y = torch.relu(self.down(x))
        y = torch.relu(self.mid(y)) + y
        y = F.interpolate(self.out(y), size=(h, w), mode="bilinear", align_corners=False)
        return torch.sigmoid(y) if self.sigmoid else y


class U2Net(torch.nn.Module):
    """Seven side outputs d0..d6 like U²-Net; all sigmoid probabilities."""

    def __init__(self):
        super().__init__()
        self.heads = torch.nn.ModuleList([Head(True) for _ in range(7)])

    def forward(self, x):
        return tuple(h(x) for h in self.heads)


FAMILIES = {
    # name: (module, input name, output names, fixed size)
    "u2net": (U2Net, "input.1", [f"d{i}" for i in range(7)], 320),
    "birefnet": (lambda: Head(False), "input_image", ["output_image"], 1024),
    "isnet": (lambda: Head(True), "input", ["output"], 1024),
}


def export(name):
    make, inp, outs, size = FAMILIES[name]
    torch.manual_seed({"u2net": 1, "birefnet": 2, "isnet": 3}[name])
    m = make().eval()
    dyn = os.path.join(OUT, f"{name}_dyn.onnx")
    axes = {inp: {2: "height", 3: "width"}}
    axes.update({o: {2: "height", 3: "width"} for o in outs})
    torch.onnx.export(m, torch.zeros(1, 3, 64, 48), dyn, input_names=[inp], output_names=outs,
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    model = onnx.load(dyn)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].Clear(); dims[2].dim_value = size
    dims[3].Clear(); dims[3].dim_value = size
    onnx.save(model, os.path.join(OUT, f"{name}.onnx"))
    return dyn


def raw_parity(name, dyn):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 3, 64, 48)).astype(np.float32)
    sess = ort.InferenceSession(dyn, providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: x})
    save_file({"input": x, **{f"out{i}": o for i, o in enumerate(outs)}}, os.path.join(OUT, f"{name}_raw.safetensors"))


def preprocess(name, img):
    size = FAMILIES[name][3]
    if name == "u2net":
        a = np.asarray(img.resize((size, size), Image.LANCZOS), np.float32)
        a = (a / max(a.max(), 1e-6) - MEAN) / STD
    elif name == "birefnet":
        a = np.asarray(img.resize((size, size), Image.BILINEAR), np.float32)
        a = (a / 255.0 - MEAN) / STD
    else:
        t = torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1)[None]
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        return (t / 255.0 - 0.5).numpy()
    return a.transpose(2, 0, 1)[None].astype(np.float32)


def astronaut_mask(name, img):
    sess = ort.InferenceSession(os.path.join(OUT, f"{name}.onnx"), providers=["CPUExecutionProvider"])
    pred = torch.from_numpy(sess.run(None, {sess.get_inputs()[0].name: preprocess(name, img)})[0])
    if name == "birefnet":
        pred = pred.sigmoid()
    pred = F.interpolate(pred, size=(img.height, img.width), mode="bilinear", align_corners=False)[0, 0].numpy()
    if name != "birefnet":
        pred = (pred - pred.min()) / (pred.max() - pred.min())
    mask = np.round(np.clip(pred, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(mask).save(os.path.join(OUT, f"{name}_astronaut_mask.png"))


def fp16_graph():
    rng = np.random.default_rng(11)
    w = rng.standard_normal((1, 3, 3, 3)).astype(np.float16)
    b = rng.standard_normal((1,)).astype(np.float16)
    nodes = [
        helper.make_node("Cast", ["input"], ["x16"], to=TensorProto.FLOAT16),
        helper.make_node("Conv", ["x16", "w", "b"], ["y16"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["y16"], ["s16"]),
        helper.make_node("Cast", ["s16"], ["output"], to=TensorProto.FLOAT),
    ]
    g = helper.make_graph(
        nodes, "fp16", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, "h", "w"])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = os.path.join(OUT, "isnet_fp16.onnx")
    onnx.save(model, path)
    x = np.random.default_rng(12).standard_normal((1, 3, 32, 24)).astype(np.float32)
    # The float32 reference: the same weights widened to float32 (what the loader is meant to produce).
    ref = 1.0 / (1.0 + np.exp(-(torch.nn.functional.conv2d(
        torch.from_numpy(x), torch.from_numpy(w.astype(np.float32)), torch.from_numpy(b.astype(np.float32)),
        padding=1).numpy())))
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    half = sess.run(None, {"input": x})[0]
    assert np.abs(half - ref).max() < 5e-3
    save_file({"input": x, "out0": ref.astype(np.float32)}, os.path.join(OUT, "isnet_fp16_raw.safetensors"))


if __name__ == "__main__":
    img = Image.open(os.path.join(ROOT, "assets/sample/astronaut.png")).convert("RGB")
    for name in FAMILIES:
        raw_parity(name, export(name))
        astronaut_mask(name, img)
    fp16_graph()
    print("wrote", sorted(os.listdir(OUT)))
