"""Writes a tiny StoryMaker-style `mask.bin` (torch.save of {"image_proj_model": OrderedDict,
"ip_adapter": OrderedDict}, spec §4.1) for the tiny parity UNet: LoRA (rank 4) on every attention
processor in diffusers' attn_processors order, to_k_ip/to_v_ip on the cross-attentions, and a few
image_proj_model tensors. Random weights; deterministic.

Also writes the small files the loader tests use (tests/adapter_bin.rs):

* `face_data.bin`: face data as in StoryMaker's examples/datasets/001_faceid/*.bin (spec §1.4),
  {"id": float32 [1, 512] with L2 norm 1, "kps": float32 [5, 2]}; `id[i] = cos(0.1 i) / norm`,
  `kps` = the ArcFace 112 template (so the test can recompute both);
* `face_data_flat.bin`: the same face as {"id": float64 [512] scaled by 3, "kps": float64 [5, 2]}
  (the loader converts and re-normalises);
* `face_data_zero.bin`: an all-zero `id` (must be refused);
* `mask_missing_key.bin`: an adapter file without its `ip_adapter` state dict;
* `tensor_layouts.bin`: views and dtypes the reader must handle, all from `a = arange(12.).reshape(3, 4)`:
  a transposed view, a row view at a storage offset, an expanded (stride 0) view, a Parameter,
  float16 / bfloat16 / float64 / int64 / bool copies, a 0-d scalar and an empty tensor;
* `evil.bin`: a torch.save file whose pickle calls `os.system` (spelled `posix.system` on Linux)
  when loaded by Python's pickle; the Rust loader must refuse it without running anything.

    /root/.cache/parity-venv/bin/python tools/parity/gen_adapter_bin.py
    /root/.cache/parity-venv/bin/python tools/parity/gen_adapter_bin.py --extra-only   # only the small files

torch.save output is byte-identical from run to run.
"""
import json
import math
import os
import sys
from collections import OrderedDict

import torch
from diffusers import UNet2DConditionModel

HERE = os.path.dirname(os.path.abspath(__file__))
FX = os.path.join(HERE, "..", "..", "tests", "fixtures")


def main():
    torch.manual_seed(0)
    cfg = json.load(open(os.path.join(FX, "parity", "unet.config.json")))
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    unet = UNet2DConditionModel(**cfg)
    cross = cfg["cross_attention_dim"]
    ip = OrderedDict()
    names = list(unet.attn_processors.keys())  # diffusers' order (down, up, mid), spec §4.3
    for k, name in enumerate(names):
        mod = unet.get_submodule(name.rsplit(".processor", 1)[0])
        h = mod.to_q.out_features
        kv = cross if name.endswith("attn2.processor") else h
        for p, inp in [("to_q_lora", h), ("to_k_lora", kv), ("to_v_lora", kv), ("to_out_lora", h)]:
            ip[f"{k}.{p}.down.weight"] = torch.randn(4, inp) * 0.3
            ip[f"{k}.{p}.up.weight"] = torch.randn(h, 4) * 0.3
        if name.endswith("attn2.processor"):
            ip[f"{k}.to_k_ip.weight"] = torch.randn(h, cross) * 0.3
            ip[f"{k}.to_v_ip.weight"] = torch.randn(h, cross) * 0.3
    proj = OrderedDict()
    proj["bg_embed"] = torch.randn(1, 20, cross)
    proj["pos_embed"] = torch.randn(3, 20, cross)
    out = os.path.join(FX, "adapter", "mask_tiny.bin")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    torch.save({"image_proj_model": proj, "ip_adapter": ip}, out)
    with open(os.path.join(FX, "adapter", "processors.json"), "w") as f:
        json.dump([n.rsplit(".processor", 1)[0] for n in names], f, indent=0)
    print(out, os.path.getsize(out), "bytes,", len(ip), "ip_adapter tensors,", len(names), "processors")


# Marker the evil payload would create; the Rust test checks it never appears.
PWNED_MARKER = "/tmp/storymaker-pickle-pwned"
ARCFACE_112 = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]


class Evil:
    def __reduce__(self):
        return (os.system, (f"echo pwned > {PWNED_MARKER}",))


def layouts():
    a = torch.arange(12.0).reshape(3, 4)
    return OrderedDict(
        a=a,
        t=a.t(),
        row=a[1],
        ex=a[2].expand(2, 4),
        p=torch.nn.Parameter(a[0].clone()),
        f16=a.half(),
        bf16=a.bfloat16(),
        f64=a.double(),
        i64=torch.arange(-3, 3),
        b=torch.tensor([True, False, True]),
        s=torch.tensor(2.5),
        e=torch.zeros(0, 3),
    )


def extra():
    out_dir = os.path.join(FX, "adapter")
    raw = torch.tensor([math.cos(0.1 * i) for i in range(512)], dtype=torch.float64)
    unit = raw / raw.norm()
    kps = torch.tensor(ARCFACE_112, dtype=torch.float64)
    files = {
        "face_data.bin": {"id": unit.float().reshape(1, 512), "kps": kps.float()},
        "face_data_flat.bin": {"id": unit * 3.0, "kps": kps},
        "face_data_zero.bin": {"id": torch.zeros(1, 512), "kps": kps.float()},
        "mask_missing_key.bin": {"image_proj_model": OrderedDict(bg_embed=torch.zeros(1, 20, 8))},
        "tensor_layouts.bin": layouts(),
        "evil.bin": {"image_proj_model": OrderedDict(bg_embed=Evil()), "ip_adapter": OrderedDict()},
    }
    for name, obj in files.items():
        path = os.path.join(out_dir, name)
        torch.save(obj, path)
        print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    if "--extra-only" not in sys.argv[1:]:
        main()
    extra()
