#!/usr/bin/env python3
"""Generate the CLIP vision-tower parity fixtures for `src/models/clip_vision.rs`.

A *tiny* transformers `CLIPVisionModelWithProjection` (same structure as laion/CLIP-ViT-H-14: pre-LN ViT,
exact GELU, class embedding + bias-free patch conv + learned position embedding, `pre_layrnorm`,
`post_layernorm` on the CLS token, bias-free `visual_projection`) with deterministic random weights, saved
under the real checkpoint key names. StoryMaker consumes `hidden_states[-2]` (reference spec §1.2).

Usage:
    /root/.cache/parity-venv/bin/python tools/parity/gen_clip_vision.py [--out tests/fixtures/parity]

Writes (all float32, CPU, one thread, deterministic):
    clip_vision.config.json           transformers CLIPVisionConfig.save_pretrained() output
    clip_vision.weights.safetensors   model state dict (vision_model.*, visual_projection.weight)
    clip_vision.io.safetensors        pixel_values [2,3,56,56], hidden_states [L+1,2,17,32] (stacked; [0] is
                                      the pre_layrnorm output), penultimate = hidden_states[-2],
                                      last_hidden_state, pooled (post_layernorm(last[:,0])), image_embeds
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections import OrderedDict

import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import transformers  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "parity")

# ViT-H/14 structure at tiny width: 56/14 = 4x4 = 16 patches + CLS = 17 tokens. projection_dim differs from
# hidden_size so a transposed projection cannot go unnoticed; intermediate 37 is deliberately odd.
CONFIG = dict(
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_channels=3,
    image_size=56,
    patch_size=14,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    projection_dim=24,
)
WEIGHT_SEED = 901
PIXEL_SEED = 902


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError("self-check failed: " + what)
    print("  [ok]", what)


@torch.no_grad()
def init_weights(model: torch.nn.Module, seed: int) -> None:
    """Activations stay O(1): matrices/convs N(0, 1/fan_in); class and position embeddings N(0, 0.5^2);
    norm weights 1 + N(0, 0.1^2); biases N(0, 0.05^2)."""
    g = seeded(seed)
    for name, p in model.named_parameters():
        if name.endswith("class_embedding") or name.endswith("position_embedding.weight"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        elif p.ndim >= 2:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))


def save(out: str, fname: str, tensors: "OrderedDict[str, torch.Tensor]", weights: bool) -> None:
    clean = OrderedDict((k, v.detach().cpu().contiguous()) for k, v in tensors.items())
    for k, v in clean.items():
        assert v.dtype == torch.float32 and torch.isfinite(v).all(), k
    # one metadata key only, so files are byte-identical across runs
    md = {"format": "pt"} if weights else {"parity": json.dumps(
        {"generator": "tools/parity/gen_clip_vision.py", "torch": torch.__version__,
         "transformers": transformers.__version__}, sort_keys=True)}
    path = os.path.join(out, fname)
    save_file(clean, path, metadata=md)
    os.chmod(path, 0o644)
    print(f"wrote {fname} ({os.path.getsize(path)} bytes)")
    for k, v in clean.items():
        print(f"    {k:60s} {str(tuple(v.shape)):20s} max abs {v.abs().max().item():.4g} std {v.std().item():.4g}")


def generate(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    cfg = CLIPVisionConfig(**CONFIG)
    cfg._attn_implementation = "eager"
    model = CLIPVisionModelWithProjection(cfg).eval()
    init_weights(model, WEIGHT_SEED)

    with tempfile.TemporaryDirectory() as td:
        cfg.save_pretrained(td)
        with open(os.path.join(td, "config.json")) as f:
            cfg_json = json.load(f)
    path = os.path.join(out, "clip_vision.config.json")
    with open(path, "w") as f:
        json.dump(cfg_json, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote clip_vision.config.json ({os.path.getsize(path)} bytes)")

    sd = OrderedDict(sorted(model.state_dict().items()))
    check(all(k.startswith("vision_model.") or k == "visual_projection.weight" for k in sd),
          "state dict keys are vision_model.* and visual_projection.weight")
    check("vision_model.embeddings.patch_embedding.bias" not in sd, "patch conv has no bias")
    save(out, "clip_vision.weights.safetensors", sd, weights=True)

    # CLIP-normalised-looking pixels: roughly N(0, 1), like (u8/255 - mean)/std.
    s = CONFIG["image_size"]
    pixel_values = torch.randn(2, 3, s, s, generator=seeded(PIXEL_SEED))
    with torch.no_grad():
        o = model(pixel_values=pixel_values, output_hidden_states=True)
    hs = o.hidden_states
    check(len(hs) == CONFIG["num_hidden_layers"] + 1, "hidden_states = embeddings output + one per layer")
    vm = model.vision_model
    pooled = vm.post_layernorm(o.last_hidden_state[:, 0, :])
    check(torch.equal(o.last_hidden_state, hs[-1]), "last_hidden_state = hidden_states[-1] (no final LN)")
    check(torch.allclose(model.visual_projection(pooled), o.image_embeds, atol=0, rtol=0),
          "image_embeds = visual_projection(post_layernorm(last[:, 0]))")
    emb = vm.pre_layrnorm(vm.embeddings(pixel_values))
    check(torch.equal(emb, hs[0]), "hidden_states[0] = pre_layrnorm(embeddings)")

    t = OrderedDict()
    t["pixel_values"] = pixel_values
    t["hidden_states"] = torch.stack(hs)
    t["penultimate"] = hs[-2]
    t["last_hidden_state"] = o.last_hidden_state
    t["pooled"] = pooled
    t["image_embeds"] = o.image_embeds
    save(out, "clip_vision.io.safetensors", t, weights=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
