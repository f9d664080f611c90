#!/usr/bin/env python3
"""Generate the character-crop preprocessing fixtures for `src/imaging/character.rs` (reference spec §1.3).

The reference is `StableDiffusionXLStoryMakerPipeline.crop_image` in RedAIGC/StoryMaker (commit a7ce766,
`pipeline_sdxl_storymaker.py`). That module imports diffusers at top level, so instead of importing it we:
  * extract the module-level function `bounding_rectangle` *verbatim* from the mirror's source text (via `ast`)
    and exec it with the same globals it uses (cv2, traceback);
  * transcribe the inline character-crop lines of `crop_image` exactly (the face-alignment lines are §1.4 and
    are skipped):
        ori_img = np.array(ori_img); ori_mask = np.array(ori_mask)
        crop, mask = bounding_rectangle(ori_img, ori_mask)
        mask = cv2.GaussianBlur(mask, (5, 5), 0)/255.
        crop = (255*np.ones_like(mask)*(1-mask)+mask*crop).astype(np.uint8)
        ref_img = Image.fromarray(crop); ref_img = ref_img.resize((224, 224))
        clip_img = self.clip_image_processor(images=ref_img, return_tensors="pt").pixel_values
    with `clip_image_processor = CLIPImageProcessor()` (defaults, as in the reference pipeline).

Input: `assets/sample/astronaut.png` (RGB) and a mask built from the sample story's ellipses (src/story/sample.rs,
character "Eileen") supersampled 4x4 so the edge is anti-aliased (17 grey levels, like the shipped masks);
the mask is written as a fixture PNG so the Rust test uses the identical bytes. `infer.py` converts the mask
with `.convert('RGB')`, so it is fed to the reference as 3-channel.

Usage:
    /root/.cache/parity-venv/bin/python tools/parity/gen_preprocess.py [--out tests/fixtures/preprocess]
          [--mirror /work/.mirror/RedAIGC+StoryMaker/repo]

Writes:
    mask.png        8-bit grey mask, same size as the photo
    crop224.png     the 224x224 RGB composite (uint8, before CLIP normalisation)
    clip_img.f32    CLIP pixel_values [1,3,224,224] float32 little-endian, raw
    resize_in.png   a 41x29 random RGB image (seed 0) and, for each (w, h) in RESIZE_TARGETS,
    resize_WxH.png  its PIL `resize((w, h))` (default BICUBIC), covering each pass order
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import traceback

import cv2
import numpy as np
from PIL import Image
from transformers import CLIPImageProcessor

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ELLIPSES = [(227.0, 100.0, 78.0, 88.0), (190.0, 390.0, 175.0, 185.0)]  # src/story/sample.rs (cx, cy, rx, ry)


RESIZE_TARGETS = [(57, 70), (40, 20), (20, 12), (35, 25)]


def load_bounding_rectangle(mirror: str):
    src = subprocess.check_output(["git", "--git-dir", mirror, "show", "a7ce766:pipeline_sdxl_storymaker.py"], text=True)
    tree = ast.parse(src)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "bounding_rectangle")
    code = ast.get_source_segment(src, fn)
    ns = {"cv2": cv2, "traceback": traceback}
    exec(compile(code, "pipeline_sdxl_storymaker.py:bounding_rectangle", "exec"), ns)
    return ns["bounding_rectangle"]


def ellipse_mask(w: int, h: int, ss: int = 4) -> np.ndarray:
    ys, xs = np.mgrid[0:h * ss, 0:w * ss].astype(np.float64)
    px, py = (xs + 0.5) / ss, (ys + 0.5) / ss
    inside = np.zeros_like(px, dtype=bool)
    for cx, cy, rx, ry in ELLIPSES:
        inside |= ((px - cx) / rx) ** 2 + ((py - cy) / ry) ** 2 <= 1.0
    cov = inside.reshape(h, ss, w, ss).sum(axis=(1, 3))
    return ((cov * 255 + (ss * ss) // 2) // (ss * ss)).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "tests/fixtures/preprocess"))
    ap.add_argument("--mirror", default="/work/.mirror/RedAIGC+StoryMaker/repo")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    bounding_rectangle = load_bounding_rectangle(args.mirror)

    photo = Image.open(os.path.join(ROOT, "assets/sample/astronaut.png")).convert("RGB")
    mask_grey = ellipse_mask(*photo.size)
    Image.fromarray(mask_grey, "L").save(os.path.join(args.out, "mask.png"))
    ori_mask_pil = Image.open(os.path.join(args.out, "mask.png")).convert("RGB")  # as infer.py does

    # --- reference crop_image, character part (transcribed) ---
    ori_img = np.array(photo)
    ori_mask = np.array(ori_mask_pil)
    crop, mask = bounding_rectangle(ori_img, ori_mask)
    mask = cv2.GaussianBlur(mask, (5, 5), 0) / 255.
    crop = (255 * np.ones_like(mask) * (1 - mask) + mask * crop).astype(np.uint8)
    ref_img = Image.fromarray(crop)
    ref_img = ref_img.resize((224, 224))
    clip_img = CLIPImageProcessor()(images=ref_img, return_tensors="pt").pixel_values
    # ---

    ref_img.save(os.path.join(args.out, "crop224.png"))
    arr = clip_img.numpy().astype("<f4")
    assert arr.shape == (1, 3, 224, 224), arr.shape
    arr.tofile(os.path.join(args.out, "clip_img.f32"))
    rnd = Image.fromarray(np.random.default_rng(0).integers(0, 256, (29, 41, 3), dtype=np.uint8), "RGB")
    rnd.save(os.path.join(args.out, "resize_in.png"))
    for w, h in RESIZE_TARGETS:
        rnd.resize((w, h)).save(os.path.join(args.out, f"resize_{w}x{h}.png"))
    print("bbox crop", crop.shape, "grey levels", len(np.unique(mask_grey)), "clip range", arr.min(), arr.max())


if __name__ == "__main__":
    main()
