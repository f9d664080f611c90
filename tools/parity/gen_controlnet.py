#!/usr/bin/env python3
"""Parity fixtures for the SDXL ControlNet (diffusers `ControlNetModel`), tiny and random.

What is real and what is tiny:
  * the model classes are diffusers 0.42.1's own `ControlNetModel` and `UNet2DConditionModel`, run
    unchanged; the per-step keep factors come from the real `StableDiffusionXLControlNetPipeline.__call__`;
  * the ControlNet is `ControlNetModel.from_unet(...)` with the SDXL structure of the tiny UNet of
    tests/fixtures/parity/unet.* (widths 16/24/32, heads 2/3/4, cross-attention width 80, text_time) except the
    transformer depth, (1, 2, 1) instead of the UNet's (1, 2, 3): the reduced-depth SDXL ControlNets
    ("-mid", "-small") differ from their UNet the same way, a port that read the depth from the UNet config
    fails, and the weights stay small. Its 4-stage conditioning embedding (4, 8, 8, 16) downsamples the pose
    image by 8 to the latent size like SDXL's (16, 32, 96, 256);
  * EVERY ControlNet weight is randomised with its own seed, including `controlnet_cond_embedding.conv_out`,
    the `controlnet_down_blocks.*` and `controlnet_mid_block` zero convolutions (left at zero, the residuals
    would be zero and a port that forgot them would still pass), and the copied encoder (so a port that read
    the UNet's weights instead of the ControlNet's would fail).

Writes tests/fixtures/controlnet/:
  controlnet/config.json                          what ControlNetModel.save_pretrained writes
  controlnet/diffusion_pytorch_model.safetensors  its weights under the diffusers key names
  io.safetensors        inputs, residuals (`down.{i}`, `mid`), one UNet step with them applied (`unet_out`), the
                        time embedding (`dbg.emb`), and the same at an odd latent size, batch 1, scale 1 (`odd.*`)
  keep.json             per-step conditioning scales the real pipeline passed to the ControlNet for several
                        (steps, control_guidance_start, control_guidance_end) settings

Usage:
    /root/.cache/parity-venv/bin/python tools/parity/gen_controlnet.py          # writes the fixtures
    /root/.cache/parity-venv/bin/python tools/parity/gen_controlnet.py --check  # regenerates and compares bytes
    /root/.cache/parity-venv/bin/python tools/parity/gen_controlnet.py --sdxl-facts  # full-size tensor list facts
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

import diffusers  # noqa: E402
from diffusers import (  # noqa: E402
    ControlNetModel,
    StableDiffusionXLControlNetPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from safetensors.torch import load_file, save_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
PARITY = os.path.join(ROOT, "tests", "fixtures", "parity")
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "controlnet")

COND_CHANNELS = (4, 8, 8, 16)  # SDXL: (16, 32, 96, 256); four entries = three stride-2 convs = /8
SCALE = 0.7
CN_DEPTH = [1, 2, 1]  # the tiny UNet has [1, 2, 3]
MAX_LEN, CROSS, POOLED = 77, 80, 40


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=seeded(seed), dtype=torch.float32)


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int) -> None:
    """The convention of gen_sdxl.py (activations stay O(1)): matrices and convolutions N(0, 1/fan_in),
    norm weights 1 + N(0, 0.1^2), biases N(0, 0.05^2). Applied to every parameter, zero convs included."""
    g = seeded(seed)
    for name, p in model.named_parameters():
        if p.ndim >= 2:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))


def pixels(u8: torch.Tensor) -> torch.Tensor:
    """VaeImageProcessor(do_normalize=False).preprocess of an RGB image already at the target size:
    np.float32 / 255 in HWC, then [1, 3, H, W]."""
    return torch.from_numpy((u8.numpy().astype("float32") / 255.0).transpose(2, 0, 1)[None].copy())


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError("self-check failed: " + what)
    print("  [ok]", what)


def tiny_unet() -> UNet2DConditionModel:
    with open(os.path.join(PARITY, "unet.config.json")) as f:
        cfg = json.load(f)
    unet = UNet2DConditionModel.from_config(cfg).eval()
    sd = load_file(os.path.join(PARITY, "unet.weights.safetensors"))
    unet.load_state_dict(sd, strict=True)
    return unet


def run_pair(cn, unet, sample, t, ehs, text, ids, cond, scale):
    added = {"text_embeds": text, "time_ids": ids}
    with torch.no_grad():
        down, mid = cn(sample, t, encoder_hidden_states=ehs, controlnet_cond=cond, conditioning_scale=scale,
                       added_cond_kwargs=added, return_dict=False)
        out = unet(sample, t, encoder_hidden_states=ehs, added_cond_kwargs=added,
                   down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        plain = unet(sample, t, encoder_hidden_states=ehs, added_cond_kwargs=added).sample
    return down, mid, out, plain


def keep_factors(cn, unet):
    """Runs the real StableDiffusionXLControlNetPipeline loop (latent output, given embeddings, no VAE or
    text encoders) and records the conditioning_scale it hands the ControlNet at every step."""
    sched = UniPCMultistepScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                    timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionXLControlNetPipeline(vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                               tokenizer_2=None, unet=unet, controlnet=cn, scheduler=sched,
                                               force_zeros_for_empty_prompt=True,
                                               add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    seen: list[float] = []
    original = cn.forward

    def recording(*a, **k):
        seen.append(float(k["conditioning_scale"]))
        return original(*a, **k)

    cn.forward = recording
    cases = []
    settings = [(7, 0.0, 1.0, 1.0), (7, 0.2, 0.7, SCALE), (5, 0.25, 0.75, 0.5), (3, 0.0, 0.5, 1.0),
                (10, 0.3, 1.0, 0.9), (4, 0.5, 0.75, 1.0), (6, 0.1, 0.9, 0.8)]
    for steps, start, end, scale in settings:
        seen.clear()
        pipe(prompt_embeds=randn((1, MAX_LEN, CROSS), 11), negative_prompt_embeds=randn((1, MAX_LEN, CROSS), 12),
             pooled_prompt_embeds=randn((1, POOLED), 13), negative_pooled_prompt_embeds=randn((1, POOLED), 14),
             image=torch.rand(1, 3, 64, 64, generator=seeded(15)), height=64, width=64,
             num_inference_steps=steps, guidance_scale=5.0, controlnet_conditioning_scale=scale,
             control_guidance_start=start, control_guidance_end=end, output_type="latent",
             generator=seeded(16))
        check(len(seen) == steps, f"pipeline called the ControlNet once per step ({steps})")
        cases.append({"steps": steps, "start": start, "end": end, "scale": scale, "scales": list(seen)})
    cn.forward = original
    return cases


# config.json of xinsir/controlnet-openpose-sdxl-1.0 (and diffusers/controlnet-*-sdxl-1.0), structural fields.
SDXL_CONTROLNET = {"addition_embed_type": "text_time", "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
                   "block_out_channels": [320, 640, 1280], "conditioning_embedding_out_channels": [16, 32, 96, 256],
                   "cross_attention_dim": 2048, "in_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
                   "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                   "projection_class_embeddings_input_dim": 2816, "transformer_layers_per_block": [1, 2, 10],
                   "use_linear_projection": True}


def sdxl_facts() -> None:
    """The full-size SDXL ControlNet's tensor list, built on the meta device (no memory): the numbers the
    Rust unit test `sdxl_structure_matches_diffusers_tensor_list` asserts (844 tensors, 1,251,014,160 params)."""
    from accelerate import init_empty_weights
    with init_empty_weights():
        m = ControlNetModel(**SDXL_CONTROLNET)
    sd = m.state_dict()
    print(f"{len(sd)} tensors, {sum(v.numel() for v in sd.values())} parameters")
    for k in ("controlnet_cond_embedding.conv_out.weight", "controlnet_down_blocks.8.weight",
              "add_embedding.linear_1.weight", "down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k.weight"):
        print(f"  {k} {tuple(sd[k].shape)}")


def generate(out: str) -> None:
    os.makedirs(os.path.join(out, "controlnet"), exist_ok=True)
    unet = tiny_unet()
    cfg = dict(unet.config)
    cfg["transformer_layers_per_block"] = CN_DEPTH
    shape_donor = UNet2DConditionModel.from_config(cfg)
    cn = ControlNetModel.from_unet(shape_donor, conditioning_embedding_out_channels=COND_CHANNELS,
                                   load_weights_from_unet=False).eval()
    randomise(cn, seed=701)
    check(all(p.abs().sum() > 0 for n, p in cn.named_parameters() if n.startswith("controlnet_")),
          "zero convolutions are randomised (non-zero)")
    cn_sd = cn.state_dict()
    un_sd = unet.state_dict()
    check(not torch.equal(cn_sd["down_blocks.0.resnets.0.conv1.weight"], un_sd["down_blocks.0.resnets.0.conv1.weight"]),
          "the ControlNet's encoder copy differs from the UNet's weights")

    with tempfile.TemporaryDirectory() as td:
        cn.save_pretrained(td, safe_serialization=True)
        with open(os.path.join(td, "config.json")) as f:
            cfg = json.load(f)
        saved = load_file(os.path.join(td, "diffusion_pytorch_model.safetensors"))
    check(set(saved) == set(cn_sd), "save_pretrained writes the state_dict key names")
    wpath = os.path.join(out, "controlnet", "diffusion_pytorch_model.safetensors")
    save_file(OrderedDict(sorted((k, v.contiguous()) for k, v in cn_sd.items())), wpath, metadata={"format": "pt"})
    os.chmod(wpath, 0o644)
    with open(os.path.join(out, "controlnet", "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    back = ControlNetModel.from_pretrained(os.path.join(out, "controlnet"), local_files_only=True).eval()
    check(all(torch.equal(back.state_dict()[k], v) for k, v in cn_sd.items()),
          "ControlNetModel.from_pretrained(controlnet/) loads identical weights")

    t = OrderedDict()
    sample = randn((2, 4, 16, 12), 711)
    timesteps = torch.tensor([999, 421], dtype=torch.int64)
    ehs = randn((2, MAX_LEN, CROSS), 712)
    text = randn((2, POOLED), 713)
    ids = torch.tensor([[1024, 768, 0, 0, 1024, 768], [896, 1152, 32, 16, 1024, 1024]], dtype=torch.float32)
    # A pose image: u8 RGB [H, W, 3], turned into [1, 3, H, W] in [0, 1] as the pipeline's control image
    # processor does (float32 / 255, no normalisation); batch 1, broadcast over the CFG batch as diffusers'
    # `sample + controlnet_cond` does.
    cond_u8 = torch.randint(0, 256, (128, 96, 3), generator=seeded(714), dtype=torch.uint8)
    cond = pixels(cond_u8)
    down, mid, out_, plain = run_pair(back, unet, sample, timesteps, ehs, text, ids, cond, SCALE)
    for k, v in [("sample", sample), ("timesteps", timesteps), ("encoder_hidden_states", ehs), ("text_embeds", text),
                 ("time_ids", ids), ("controlnet_cond_u8", cond_u8),
                 ("conditioning_scale", torch.tensor([SCALE], dtype=torch.float32))]:
        t[k] = v
    for i, d in enumerate(down):
        t[f"down.{i}"] = d
    t["mid"] = mid
    t["unet_out"] = out_
    rel = (out_ - plain).abs().max() / plain.abs().max()
    check(rel > 0.05, f"the residuals change the UNet output (rel {float(rel):.3f})")
    with torch.no_grad():
        emb = back.time_embedding(back.time_proj(timesteps).to(torch.float32))
        tproj = back.add_time_proj(ids.flatten()).reshape(2, -1)
        emb = emb + back.add_embedding(torch.cat([text, tproj], dim=-1))
        t["dbg.emb"] = emb

    # Odd latent size (5x7 -> 3x4 in the encoder), batch 1, scale 1.
    o_sample = randn((1, 4, 10, 14), 721)
    o_cond_u8 = torch.randint(0, 256, (80, 112, 3), generator=seeded(722), dtype=torch.uint8)
    o_cond = pixels(o_cond_u8)
    o_t = torch.tensor([500], dtype=torch.int64)
    o_down, o_mid, o_out, _ = run_pair(back, unet, o_sample, o_t, ehs[1:], text[1:], ids[1:], o_cond, 1.0)
    t["odd.sample"] = o_sample
    t["odd.timesteps"] = o_t
    t["odd.controlnet_cond_u8"] = o_cond_u8
    for i, d in enumerate(o_down):
        t[f"odd.down.{i}"] = d
    t["odd.mid"] = o_mid
    t["odd.unet_out"] = o_out

    info = {"generator": "tools/parity/gen_controlnet.py", "torch": torch.__version__,
            "diffusers": diffusers.__version__, "conditioning_scale": str(SCALE)}
    clean = OrderedDict((k, v.detach().contiguous()) for k, v in t.items())
    for k, v in clean.items():
        assert v.dtype in (torch.float32, torch.int64, torch.uint8), (k, v.dtype)
        assert not v.dtype.is_floating_point or torch.isfinite(v).all(), k
    save_file(clean, os.path.join(out, "io.safetensors"), metadata={"parity": json.dumps(info, sort_keys=True)})
    os.chmod(os.path.join(out, "io.safetensors"), 0o644)
    for k, v in clean.items():
        print(f"    {k:28s} {str(tuple(v.shape)):20s} max abs {float(v.abs().max()):.4g}")

    cases = keep_factors(back, unet)
    with open(os.path.join(out, "keep.json"), "w") as f:
        json.dump({"generator": "tools/parity/gen_controlnet.py (StableDiffusionXLControlNetPipeline "
                                f"{diffusers.__version__})", "cases": cases}, f, indent=1)
        f.write("\n")
    total = 0
    for dirpath, _, files in os.walk(out):
        for fn in files:
            total += os.path.getsize(os.path.join(dirpath, fn))
    print(f"fixtures total {total:,} bytes")
    check(total < 1_500_000, "fixtures stay under 1.5 MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--sdxl-facts", action="store_true", help="print the full-size SDXL ControlNet's tensor count")
    ap.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare bytes with --out")
    args = ap.parse_args()
    if args.sdxl_facts:
        sdxl_facts()
        return 0
    if not args.check:
        generate(args.out)
        return 0
    with tempfile.TemporaryDirectory() as td:
        generate(td)
        bad = []
        for dirpath, _, files in os.walk(td):
            for fn in files:
                rel = os.path.relpath(os.path.join(dirpath, fn), td)
                mine = os.path.join(args.out, rel)
                same = os.path.exists(mine) and open(mine, "rb").read() == open(os.path.join(td, rel), "rb").read()
                if not same:
                    bad.append(rel)
        print("--check:", "differs: " + ", ".join(sorted(bad)) if bad else "all files byte-identical")
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
