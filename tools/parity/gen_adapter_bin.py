"""Writes a tiny StoryMaker-style `mask.bin` (torch.save of {"image_proj_model": OrderedDict,
"ip_adapter": OrderedDict}, spec §4.1) for the tiny parity UNet: LoRA (rank 4) on every attention
processor in diffusers' attn_processors order, to_k_ip/to_v_ip on the cross-attentions, and a few
image_proj_model tensors. Random weights; deterministic.

    /root/.cache/parity-venv/bin/python tools/parity/gen_adapter_bin.py
"""
import json
import os
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


if __name__ == "__main__":
    main()
