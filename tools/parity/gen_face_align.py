#!/usr/bin/env python3
"""Generate the aligned-face fixtures for `src/imaging/face_align.rs` (reference spec §1.4, §8.1 row P5).

The reference is insightface's `face_align.norm_crop(img, landmark=face_kps, image_size=224)` as called by
`StableDiffusionXLStoryMakerPipeline.crop_image` (RedAIGC/StoryMaker a7ce766) on the original RGB photo.
insightface is not installed here (it needs a C build and onnxruntime), so `arcface_dst`, `estimate_norm` and
`norm_crop` are transcribed below *verbatim* from deepinsight/insightface 7fadd420,
`python-package/insightface/utils/face_align.py`. They call scikit-image's `SimilarityTransform.estimate`
(Umeyama) and OpenCV's `cv2.warpAffine`, both used as installed (versions pinned in requirements.txt).

Two facts the Rust port has to know, both recorded in the JSON:
  * insightface feeds float32 arrays to skimage (`arcface_dst` is float32 and SCRFD's `kps` are float32), so
    skimage's `_umeyama` runs its means, covariance and SVD in float32. `m_ref` is that matrix (what the reference
    really warps with); `m_f64` is the same estimate on the float64 copies of the same points (the Rust
    `umeyama_similarity` computes in f64 and is compared with `m_f64`).
  * OpenCV >= 4.11 (here 5.0.0) no longer runs the fixed-point INTER_BITS=5 bilinear warp for 8-bit images; it
    uses a float32 kernel (`warpAffineLinearInvoker_8UC3`). The legacy fixed-point output is produced on request
    with `--legacy` under an OpenCV 4.10 install (see below) so both emulations are checked.

Input: `assets/sample/astronaut.png` and the keypoint sets in KPS (values committed here; `frontal` refines the
sample story's YuNet keypoints of the astronaut to sub-pixel values by eye).

Usage:
    /root/.cache/parity-venv/bin/python tools/parity/gen_face_align.py [--out tests/fixtures/preprocess]
    # legacy fixed-point fixtures, with OpenCV 4.10 first on the path (not part of the venv):
    pip install --no-deps --target /tmp/cv410 opencv-python-headless==4.10.0.84
    PYTHONPATH=/tmp/cv410 /root/.cache/parity-venv/bin/python tools/parity/gen_face_align.py --legacy

Writes (into --out):
    face_align.json            per set: kps (float32 values), m_ref / m_f64 (2x3, values and IEEE-754 bit
                               patterns as hex), skimage status; ArcFace templates for several sizes
    face_align_<set>.png       224x224 RGB `norm_crop` output (OpenCV 5) for the sets in WARP_SETS
    face_align_<set>_cv4_10.png  (--legacy) `cv2.warpAffine` of OpenCV 4.10 with the same m_ref, LEGACY_SETS
    warp_noise_in.png          64x64 RGB noise (seed 0) and
    warp_noise_31x40.png       its `cv2.warpAffine` by TAIL_M to 31x40 (exercises OpenCV's scalar column tail)
"""

from __future__ import annotations

import argparse
import json
import os
import warnings

import cv2
import numpy as np
from PIL import Image
from skimage import transform as trans
import skimage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# --- insightface python-package/insightface/utils/face_align.py @ 7fadd420 (verbatim) ---
arcface_dst = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
     [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32)

def estimate_norm(lmk, image_size=112,mode='arcface'):
    assert lmk.shape == (5, 2)
    assert image_size%112==0 or image_size%128==0
    if image_size%112==0:
        ratio = float(image_size)/112.0
        diff_x = 0
    else:
        ratio = float(image_size)/128.0
        diff_x = 8.0*ratio
    dst = arcface_dst * ratio
    dst[:,0] += diff_x
    tform = trans.SimilarityTransform()
    tform.estimate(lmk, dst)
    M = tform.params[0:2, :]
    return M

def norm_crop(img, landmark, image_size=112, mode='arcface'):
    M = estimate_norm(landmark, image_size, mode)
    warped = cv2.warpAffine(img, M, (image_size, image_size), borderValue=0.0)
    return warped
# --- end of transcription ---


def template(image_size: int) -> np.ndarray:
    """The `dst` of `estimate_norm` (same lines, without the estimate)."""
    if image_size % 112 == 0:
        ratio = float(image_size) / 112.0
        diff_x = 0
    else:
        ratio = float(image_size) / 128.0
        diff_x = 8.0 * ratio
    dst = arcface_dst * ratio
    dst[:, 0] += diff_x
    return dst


# Keypoints (left eye, right eye, nose, left mouth corner, right mouth corner), pixels of the 512x512 photo.
KPS = {
    # the astronaut's face (sample story keypoints, refined to sub-pixel by eye)
    "frontal": [[202.41, 105.87], [245.12, 104.63], [221.35, 127.28], [204.56, 145.19], [242.08, 144.71]],
    # frontal rotated by 25 degrees about the nose, scaled 1.4, shifted (8.3, -5.1), rounded to 0.01
    "rotated": [[218.29, 83.81], [273.21, 107.5], [229.65, 122.18], [197.75, 134.97], [245.64, 156.56]],
    # a small face cut by the top-left corner: the crop is mostly black border
    "corner": [[8.62, 20.31], [40.18, 18.94], [24.07, 37.52], [11.03, 51.26], [38.71, 50.38]],
    # a huge, tilted face (template x2.6, -15 degrees, noise): the crop window overhangs all four image edges
    "huge": [[148.35, 169.99], [321.83, 125.57], [259.39, 251.47], [211.31, 374.53], [359.97, 341.56]],
    # frontal mirrored left-right (eyes swapped): det(A) < 0, skimage's reflection-avoiding branch
    "mirrored": [[299.59, 105.87], [256.88, 104.63], [280.65, 127.28], [297.44, 145.19], [259.92, 144.71]],
    # all five on one line: rank-1 covariance, skimage's rank == dim - 1 branch
    "collinear": [[100.0, 200.0], [140.0, 210.0], [120.0, 205.0], [90.0, 197.5], [150.0, 212.5]],
    # all five at the same spot: skimage returns NaN (no transform), Rust must refuse
    "identical": [[250.5, 250.5]] * 5,
}
WARP_SETS = ["frontal", "rotated", "corner", "huge"]
# OpenCV's AVX2 kernel warps blocks of 16 columns with SIMD and the remaining columns with scalar code whose
# float arithmetic differs (coordinates `fma(x, M0, y*M1) + M2`). A 31-column warp of a noise image has a
# 15-column scalar tail; this matrix (found by an offline search over random similarity transforms) is one where
# plain or differently fused tail arithmetic changes a value, so the fixture pins the tail down.
TAIL_M = [[1.579951047661219, 1.7993715066933837, 7.094628247156226],
          [-1.7993715066933837, 1.579951047661219, 21.119490562270812]]
TAIL_OUT = (31, 40)  # (width, height)
LEGACY_SETS = ["rotated", "huge"]
SIZE = 224
TEMPLATE_SIZES = [112, 224, 128, 256, 336]


def hexbits(a: np.ndarray) -> list[str]:
    return [format(int(v), "016x") for v in np.asarray(a, dtype="<f8").reshape(-1).view("<u8")]


def estimate(src: np.ndarray, dst: np.ndarray) -> tuple[bool, np.ndarray]:
    tform = trans.SimilarityTransform()
    ok = tform.estimate(src, dst)
    return bool(ok), tform.params[0:2, :].copy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/preprocess"))
    ap.add_argument("--legacy", action="store_true", help="write the OpenCV <= 4.10 fixed-point fixtures only")
    args = ap.parse_args()
    # `SimilarityTransform.estimate` is deprecated in skimage 0.26 but it is what insightface calls
    warnings.filterwarnings("ignore", category=FutureWarning, module="skimage")
    warnings.filterwarnings("ignore", message=".*estimate.*deprecated", category=FutureWarning)
    os.makedirs(args.out, exist_ok=True)
    img = np.array(Image.open(os.path.join(ROOT, "assets/sample/astronaut.png")).convert("RGB"))
    json_path = os.path.join(args.out, "face_align.json")

    if args.legacy:
        major, minor = (int(v) for v in cv2.__version__.split(".")[:2])
        assert (major, minor) < (4, 11), f"--legacy needs OpenCV <= 4.10 first on the path, got {cv2.__version__}"
        with open(json_path) as f:
            sets = json.load(f)["sets"]
        for name in LEGACY_SETS:
            bits = np.array([int(h, 16) for h in sets[name]["m_ref_bits"]], dtype="<u8")
            m = bits.view("<f8").reshape(2, 3)
            out = cv2.warpAffine(img, m, (SIZE, SIZE), borderValue=0.0)
            Image.fromarray(out).save(os.path.join(args.out, f"face_align_{name}_cv4_10.png"))
        print("legacy fixtures written with OpenCV", cv2.__version__)
        return

    dst32 = template(SIZE)
    sets = {}
    for name, pts in KPS.items():
        kps = np.array(pts, dtype=np.float32)  # SCRFD keypoints are float32
        ok_ref, m_ref = estimate(kps, dst32)  # what estimate_norm does
        ok_64, m_64 = estimate(kps.astype(np.float64), dst32.astype(np.float64))
        entry = {"kps": kps.astype(np.float64).tolist(), "skimage_ok": ok_ref and ok_64}
        if ok_ref and ok_64:
            assert np.array_equal(m_ref, estimate_norm(kps, SIZE))
            entry.update(m_ref=m_ref.tolist(), m_ref_bits=hexbits(m_ref), m_f64=m_64.tolist(), m_f64_bits=hexbits(m_64),
                         max_abs_ref_minus_f64=float(np.abs(m_ref - m_64).max()))
        sets[name] = entry
        if name in WARP_SETS:
            face = norm_crop(img, kps, image_size=SIZE)
            assert face.shape == (SIZE, SIZE, 3) and face.dtype == np.uint8
            assert np.array_equal(face, cv2.warpAffine(img, m_ref, (SIZE, SIZE), borderValue=0.0))
            Image.fromarray(face).save(os.path.join(args.out, f"face_align_{name}.png"))
            f64_face = cv2.warpAffine(img, m_64, (SIZE, SIZE), borderValue=0.0)
            d = np.abs(face.astype(int) - f64_face.astype(int))
            entry["warp_m_f64_vs_ref"] = {"max_abs": int(d.max()), "values_differing": int((d > 0).sum())}
            print(f"{name}: |m_ref - m_f64| {entry['max_abs_ref_minus_f64']:.3g}, "
                  f"warp with m_f64 differs in {int((d > 0).sum())} values (max {int(d.max())})")
    assert not sets["identical"]["skimage_ok"]
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(os.path.join(args.out, "warp_noise_in.png"))
    tail_m = np.array(TAIL_M, dtype=np.float64)
    tail_out = cv2.warpAffine(noise, tail_m, TAIL_OUT, borderValue=0.0)
    Image.fromarray(tail_out).save(os.path.join(args.out, f"warp_noise_{TAIL_OUT[0]}x{TAIL_OUT[1]}.png"))
    templates = {str(s): template(s).astype(np.float64).tolist() for s in TEMPLATE_SIZES}
    doc = {
        "source": "tools/parity/gen_face_align.py",
        "versions": {"opencv": cv2.__version__, "scikit-image": skimage.__version__, "numpy": np.__version__},
        "image": "assets/sample/astronaut.png",
        "size": SIZE,
        "templates": templates,
        "sets": sets,
        "tail": {"m": TAIL_M, "m_bits": hexbits(tail_m), "width": TAIL_OUT[0], "height": TAIL_OUT[1],
                 "input": "warp_noise_in.png", "output": f"warp_noise_{TAIL_OUT[0]}x{TAIL_OUT[1]}.png"},
    }
    with open(json_path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
