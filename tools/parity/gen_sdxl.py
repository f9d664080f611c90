#!/usr/bin/env python3
"""Generate SDXL parity fixtures for the Rust (candle) port.

Every model here is a *tiny* instance of the real reference class (transformers' CLIPTextModel /
CLIPTextModelWithProjection, diffusers' UNet2DConditionModel / AutoencoderKL / schedulers / the
StableDiffusionXLPipeline loop) with deterministic random weights, saved under the real checkpoint key
names. Rust tests load the weights through the real Rust loaders and compare against the tensors saved here.

Usage (see tools/parity/README.md):
    /root/.cache/parity-venv/bin/python tools/parity/gen_sdxl.py [--out tests/fixtures/parity]

All floating tensors are float32; token ids, timesteps of integer schedulers and step orders are int64;
the final 8-bit image is uint8. Everything runs on the CPU with one thread and is bit-for-bit reproducible.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import tempfile
from collections import OrderedDict

import numpy as np
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import diffusers  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "parity")

# ----------------------------------------------------------------------------------------------------------
# Tiny configurations (same structure as SDXL, small widths)
# ----------------------------------------------------------------------------------------------------------

VOCAB = 1000
BOS = 998  # plays the role of <|startoftext|> 49406
EOS = 999  # plays the role of <|endoftext|> 49407 (the largest id, as in the real vocab)
MAX_LEN = 77

# CLIP ViT-L/14 text encoder structure (SDXL text_encoder): quick_gelu, no projection used.
# bos/eos/pad ids 0/2/1 are the (legacy) values of the published SDXL configs; eos_token_id == 2 makes
# transformers pool at argmax(input_ids).
CLIP_L = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=MAX_LEN,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    projection_dim=32,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
# OpenCLIP ViT-bigG/14 text encoder structure (SDXL text_encoder_2): gelu (erf), text_projection (no bias).
# projection_dim differs from hidden_size so a transposed projection cannot go unnoticed.
CLIP_G = dict(
    vocab_size=VOCAB,
    hidden_size=48,
    intermediate_size=61,
    num_hidden_layers=4,
    num_attention_heads=4,
    max_position_embeddings=MAX_LEN,
    hidden_act="gelu",
    layer_norm_eps=1e-5,
    projection_dim=40,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)
CROSS_DIM = CLIP_L["hidden_size"] + CLIP_G["hidden_size"]  # 80 (SDXL: 768 + 1280 = 2048)
POOLED_DIM = CLIP_G["projection_dim"]  # 40 (SDXL: 1280)
ADD_TIME_DIM = 8  # SDXL: 256

# SDXL UNet structure: 3 levels (DownBlock2D, CrossAttnDownBlock2D x2 / CrossAttnUpBlock2D x2, UpBlock2D),
# layers_per_block 2, transformer depth per level (1, 2, 3) like SDXL's (1, 2, 10) (mid block uses the last
# entry, up blocks the reversed list), "attention_head_dim" = number of heads per level like SDXL's (5, 10, 20)
# (head width 8 here, 64 in SDXL), linear proj_in/proj_out, text_time additional embedding.
UNET = dict(
    sample_size=16,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(16, 24, 32),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(2, 3, 4),
    transformer_layers_per_block=(1, 2, 3),
    cross_attention_dim=CROSS_DIM,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_embed_type_num_heads=64,
    addition_time_embed_dim=ADD_TIME_DIM,
    projection_class_embeddings_input_dim=POOLED_DIM + 6 * ADD_TIME_DIM,  # 88 (SDXL: 1280 + 6*256 = 2816)
    flip_sin_to_cos=True,
    freq_shift=0,
    norm_num_groups=8,
    norm_eps=1e-5,
    act_fn="silu",
)

# SDXL VAE structure: 4 levels whose last two widths are equal (SDXL: 128, 256, 512, 512).
VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(16, 24, 32, 32),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=8,
    sample_size=64,
    scaling_factor=0.13025,
    force_upcast=True,
)

# scheduler_config.json of stabilityai/stable-diffusion-xl-base-1.0 (the base-model config StoryMaker's
# infer.py converts with UniPCMultistepScheduler.from_config(pipe.scheduler.config)).
SDXL_BASE_SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}

SGM_PREFIX = "model.diffusion_model."

# ----------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------

MANIFEST: "OrderedDict[str, dict]" = OrderedDict()
CHECKS: list[str] = []


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError("self-check failed: " + what)
    CHECKS.append(what)
    print("  [ok]", what)


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=seeded(seed), dtype=torch.float32) * scale


@torch.no_grad()
def init_weights(model: torch.nn.Module, seed: int, gain: float = 1.0, embed_std: float = 0.5) -> None:
    """Deterministic random init that keeps activations O(1) (the library inits zero some layers).

    Matrices/convs: N(0, gain^2/fan_in); embeddings: N(0, embed_std^2); norm weights 1 + N(0, 0.1^2);
    biases N(0, 0.05^2).
    """
    g = seeded(seed)
    for name, p in model.named_parameters():
        if "embedding" in name and p.ndim == 2 and ("token_embedding" in name or "position_embedding" in name):
            p.copy_(torch.randn(p.shape, generator=g) * embed_std)
        elif p.ndim >= 2:
            fan_in = p[0].numel()
            p.copy_(torch.randn(p.shape, generator=g) * (gain / math.sqrt(fan_in)))
        elif name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))


def maxabs(t: torch.Tensor) -> float:
    return float(t.detach().abs().max().to(torch.float64)) if t.numel() else 0.0


def describe(t: torch.Tensor) -> str:
    if t.dtype in (torch.int64, torch.uint8):
        return f"min {int(t.min())} max {int(t.max())}"
    x = t.detach().to(torch.float64)
    return f"max abs {x.abs().max().item():.4g}, std {x.std().item() if x.numel() > 1 else 0.0:.4g}"


def save_tensors(out_dir: str, fname: str, tensors: "OrderedDict[str, torch.Tensor]", note: str, meta=None):
    clean = OrderedDict()
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        if v.dtype.is_floating_point:
            assert v.dtype == torch.float32, (k, v.dtype)
            assert torch.isfinite(v).all(), f"non-finite values in {k}"
        else:
            assert v.dtype in (torch.int64, torch.uint8), (k, v.dtype)
        clean[k] = v
    # safetensors writes metadata from a hash map (random key order): keep ONE key so files are byte-identical
    # across runs. Weight files carry {"format": "pt"} like the published checkpoints.
    if fname.endswith(".weights.safetensors") or fname.endswith(".sgm.safetensors"):
        md = {"format": "pt"}
    else:
        info = {"generator": "tools/parity/gen_sdxl.py", "torch": torch.__version__,
                "diffusers": diffusers.__version__, "transformers": transformers.__version__}
        info.update({k: str(v) for k, v in (meta or {}).items()})
        md = {"parity": json.dumps(info, sort_keys=True)}
    path = os.path.join(out_dir, fname)
    save_file(clean, path, metadata=md)
    os.chmod(path, 0o644)
    MANIFEST[fname] = {"note": note, "tensors": [(k, tuple(v.shape), str(v.dtype).replace("torch.", ""),
                                                  describe(v)) for k, v in clean.items()]}
    print(f"wrote {fname} ({os.path.getsize(path)} bytes)")
    if fname.endswith(".weights.safetensors") or fname.endswith(".sgm.safetensors"):
        n = sum(v.numel() for v in clean.values())
        print(f"    {len(clean)} tensors, {n} parameters, max|w| {max(maxabs(v) for v in clean.values()):.4g}")
        return
    for k, v in clean.items():
        print(f"    {k:48s} {str(tuple(v.shape)):22s} {describe(v)}")


def save_json(out_dir: str, fname: str, obj: dict, note: str) -> None:
    path = os.path.join(out_dir, fname)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    MANIFEST[fname] = {"note": note, "tensors": None}
    print(f"wrote {fname} ({os.path.getsize(path)} bytes)")


def diffusers_config_json(obj) -> dict:
    """Exactly what diffusers' save_config writes as config.json (with _class_name / _diffusers_version)."""
    return json.loads(obj.to_json_string())


def transformers_config_json(cfg) -> dict:
    """Exactly what transformers' save_pretrained writes as config.json."""
    with tempfile.TemporaryDirectory() as td:
        cfg.save_pretrained(td)
        with open(os.path.join(td, "config.json")) as f:
            return json.load(f)


def stack(ts) -> torch.Tensor:
    return torch.stack([t.detach().clone() for t in ts])


# ----------------------------------------------------------------------------------------------------------
# 1. Text encoders
# ----------------------------------------------------------------------------------------------------------

def prompt_ids(tokens: list[int], pad: int) -> list[int]:
    """What CLIPTokenizer(padding="max_length", max_length=77, truncation=True) returns for a prompt whose
    BPE tokens are `tokens`: [BOS, tokens..., EOS, pad, pad, ...]."""
    ids = [BOS] + tokens[: MAX_LEN - 2] + [EOS]
    return ids + [pad] * (MAX_LEN - len(ids))


# Row 0 plays the negative prompt, row 1 the positive prompt (the CFG batch order).
NEG_TOKENS = [17, 523, 44]
# Token id 2 (at position 10) is deliberate: it equals the config's legacy eos_token_id, so a port that pools at
# "first input_ids == eos_token_id" instead of argmax(input_ids) picks position 10 instead of the EOS at 13.
POS_TOKENS = [101, 7, 256, 640, 33, 812, 5, 97, 455, 2, 730, 61]


def build_text_encoders():
    cl = CLIPTextConfig(**CLIP_L)
    cl.architectures = ["CLIPTextModel"]
    cg = CLIPTextConfig(**CLIP_G)
    cg.architectures = ["CLIPTextModelWithProjection"]
    te1 = CLIPTextModel(cl).eval()
    te2 = CLIPTextModelWithProjection(cg).eval()
    init_weights(te1, seed=101)
    init_weights(te2, seed=102)
    return te1, te2


def clip_l_state_dict(te1) -> "OrderedDict[str, torch.Tensor]":
    # transformers 5.x names CLIPTextModel's parameters without the "text_model." prefix in memory, but the
    # published checkpoints (SDXL text_encoder/model.safetensors) carry it, and from_pretrained accepts it.
    out = OrderedDict()
    for k, v in te1.state_dict().items():
        out[k if k.startswith("text_model.") else "text_model." + k] = v
    return out


def gen_text(out_dir: str, te1, te2):
    print("\n== 1. CLIP text encoders")
    sd1 = clip_l_state_dict(te1)
    sd2 = OrderedDict(te2.state_dict())
    check(all(k.startswith("text_model.") for k in sd1), "clip_l keys carry the text_model. prefix")
    check("text_projection.weight" in sd2 and "text_projection.bias" not in sd2,
          "clip_g has text_projection.weight [proj, hidden] and no bias")
    cfg1 = transformers_config_json(te1.config)
    cfg2 = transformers_config_json(te2.config)
    save_tensors(out_dir, "clip_l.weights.safetensors", sd1,
                 "CLIP-L text encoder weights, transformers key names as in SDXL text_encoder/model.safetensors")
    save_tensors(out_dir, "clip_g.weights.safetensors", sd2,
                 "CLIP-G (OpenCLIP bigG structure) CLIPTextModelWithProjection weights, as in SDXL "
                 "text_encoder_2/model.safetensors")
    save_json(out_dir, "clip_l.config.json", cfg1, "transformers CLIPTextConfig of the tiny CLIP-L")
    save_json(out_dir, "clip_g.config.json", cfg2, "transformers CLIPTextConfig of the tiny CLIP-G")

    # Round trip: the saved files load through transformers' own from_pretrained with no missing keys.
    with tempfile.TemporaryDirectory() as td:
        for name, cls, sd, cfg, ref in (("l", CLIPTextModel, sd1, cfg1, te1),
                                        ("g", CLIPTextModelWithProjection, sd2, cfg2, te2)):
            d = os.path.join(td, name)
            os.makedirs(d)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(cfg, f)
            save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(d, "model.safetensors"),
                      metadata={"format": "pt"})
            m, info = cls.from_pretrained(d, output_loading_info=True)
            bad = [k for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)]
            check(not bad, f"clip_{name} file loads in transformers.{cls.__name__}.from_pretrained without "
                  f"missing/unexpected keys")
            rsd = m.state_dict()
            check(all(torch.equal(rsd[k], v) for k, v in ref.state_dict().items()),
                  f"clip_{name} reloaded tensors are identical")

    ids_l = torch.tensor([prompt_ids(NEG_TOKENS, EOS), prompt_ids(POS_TOKENS, EOS)], dtype=torch.int64)
    ids_g = torch.tensor([prompt_ids(NEG_TOKENS, 0), prompt_ids(POS_TOKENS, 0)], dtype=torch.int64)
    with torch.no_grad():
        o1 = te1(ids_l, output_hidden_states=True)
        o2 = te2(ids_g, output_hidden_states=True)
    eos_pos = torch.tensor([len(NEG_TOKENS) + 1, len(POS_TOKENS) + 1], dtype=torch.int64)
    check(torch.equal(ids_g.argmax(-1), eos_pos) and torch.equal(ids_l.to(torch.int32).argmax(-1), eos_pos),
          "argmax(input_ids) = first EOS position for both paddings")
    ln_g = te2.text_model.final_layer_norm(o2.hidden_states[-1])
    pooled_manual = ln_g[torch.arange(2), eos_pos] @ te2.text_projection.weight.T
    check(torch.allclose(pooled_manual, o2.text_embeds, atol=1e-6, rtol=0),
          "text_embeds = final_layer_norm(last)[eos] @ text_projection.weight^T")
    check(torch.equal(o1.last_hidden_state, te1.text_model.final_layer_norm(o1.hidden_states[-1]))
          if hasattr(te1, "text_model") else
          torch.equal(o1.last_hidden_state, te1.final_layer_norm(o1.hidden_states[-1])),
          "clip_l last_hidden_state = final_layer_norm(hidden_states[-1])")
    prompt_embeds = torch.cat([o1.hidden_states[-2], o2.hidden_states[-2]], dim=-1)

    t = OrderedDict()
    t["clip_l.input_ids"] = ids_l
    t["clip_g.input_ids"] = ids_g
    t["eos_index"] = eos_pos
    t["clip_l.hidden_states"] = torch.stack(o1.hidden_states)
    t["clip_l.penultimate"] = o1.hidden_states[-2]
    t["clip_l.last_hidden_state"] = o1.last_hidden_state
    t["clip_l.pooler_output"] = o1.pooler_output
    t["clip_g.hidden_states"] = torch.stack(o2.hidden_states)
    t["clip_g.penultimate"] = o2.hidden_states[-2]
    t["clip_g.last_hidden_state"] = o2.last_hidden_state
    t["clip_g.pooled_unprojected"] = ln_g[torch.arange(2), eos_pos]
    t["clip_g.text_embeds"] = o2.text_embeds
    t["prompt_embeds"] = prompt_embeds
    save_tensors(out_dir, "clip_text.safetensors", t,
                 "Text-encoder inputs/outputs. Row 0 = negative prompt, row 1 = positive prompt. "
                 "hidden_states[0] is the embedding output; penultimate = hidden_states[-2] (no final LN).")
    return ids_l, ids_g, prompt_embeds, o2.text_embeds


# ----------------------------------------------------------------------------------------------------------
# 2. UNet (+ SGM single-file key map)
# ----------------------------------------------------------------------------------------------------------

_RESNET_TO_SGM = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                  ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection"))
_TOP_TO_SGM = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet_rest(rest: str) -> str:
    head, _, tail = rest.partition(".")
    for a, b in _RESNET_TO_SGM:
        if head == a:
            return b + "." + tail
    raise KeyError(rest)


def unet_key_to_sgm(key: str, config) -> str:
    """diffusers UNet2DConditionModel key -> original SGM (Stability generative-models) key, without prefix."""
    n = config["layers_per_block"] + 1  # SGM entries per level (resnets + 1 down/up-sampler slot)
    up_has_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    parts = key.split(".")
    for dk, sk in _TOP_TO_SGM.items():
        if key.startswith(dk + "."):
            return sk + key[len(dk):]
    if parts[0] == "down_blocks":
        i, kind = int(parts[1]), parts[2]
        if kind == "resnets":
            return f"input_blocks.{n * i + int(parts[3]) + 1}.0." + _resnet_rest(".".join(parts[4:]))
        if kind == "attentions":
            return f"input_blocks.{n * i + int(parts[3]) + 1}.1." + ".".join(parts[4:])
        if kind == "downsamplers":  # down_blocks.i.downsamplers.0.conv.X
            assert parts[3] == "0" and parts[4] == "conv"
            return f"input_blocks.{n * (i + 1)}.0.op." + ".".join(parts[5:])
    if parts[0] == "mid_block":
        kind, j = parts[1], int(parts[2])
        rest = ".".join(parts[3:])
        if kind == "resnets":
            return f"middle_block.{2 * j}." + _resnet_rest(rest)
        if kind == "attentions":
            return "middle_block.1." + rest
    if parts[0] == "up_blocks":
        i, kind = int(parts[1]), parts[2]
        if kind == "resnets":
            return f"output_blocks.{n * i + int(parts[3])}.0." + _resnet_rest(".".join(parts[4:]))
        if kind == "attentions":
            return f"output_blocks.{n * i + int(parts[3])}.1." + ".".join(parts[4:])
        if kind == "upsamplers":  # up_blocks.i.upsamplers.0.conv.X
            assert parts[3] == "0" and parts[4] == "conv"
            slot = 2 if up_has_attn[i] else 1
            return f"output_blocks.{n * i + n - 1}.{slot}.conv." + ".".join(parts[5:])
    raise KeyError(key)


def build_unet():
    unet = UNet2DConditionModel(**UNET).eval()
    init_weights(unet, seed=201)
    return unet


def unet_added(text_embeds, time_ids):
    return {"text_embeds": text_embeds, "time_ids": time_ids}


def gen_unet(out_dir: str, unet):
    print("\n== 2. UNet")
    sd = OrderedDict(unet.state_dict())
    cfg = diffusers_config_json(unet)
    save_tensors(out_dir, "unet.weights.safetensors", sd,
                 "SDXL-structured UNet2DConditionModel weights, diffusers key names "
                 "(as in unet/diffusion_pytorch_model.safetensors)")
    save_json(out_dir, "unet.config.json", cfg, "diffusers UNet2DConditionModel config of the tiny UNet")

    sgm = OrderedDict((SGM_PREFIX + unet_key_to_sgm(k, cfg), v) for k, v in sd.items())
    check(len(sgm) == len(sd), "SGM key map is injective")
    save_tensors(out_dir, "unet.sgm.safetensors", sgm,
                 "The same UNet weights under the original SGM single-file names (model.diffusion_model.*)")

    # Verification 1: diffusers' own single-file converter maps the SGM dict back to exactly our dict.
    back = convert_ldm_unet_checkpoint(dict(load_file(os.path.join(out_dir, "unet.sgm.safetensors"))), cfg)
    check(set(back) == set(sd), "convert_ldm_unet_checkpoint(SGM) reproduces the diffusers key set")
    check(all(torch.equal(back[k], v) for k, v in sd.items()), "convert_ldm_unet_checkpoint(SGM) tensors identical")
    # Verification 2: UNet2DConditionModel.from_single_file on the SGM file (with the local config).
    with tempfile.TemporaryDirectory() as td:
        os.makedirs(os.path.join(td, "unet"))
        unet.save_config(os.path.join(td, "unet"))
        u2 = UNet2DConditionModel.from_single_file(os.path.join(out_dir, "unet.sgm.safetensors"), config=td,
                                                   subfolder="unet", local_files_only=True).eval()
        s2 = u2.state_dict()
        check(all(torch.equal(s2[k], v) for k, v in sd.items()) and set(s2) == set(sd),
              "UNet2DConditionModel.from_single_file(unet.sgm.safetensors) loads identical weights")

    # Intermediate activations (to localise a Rust bug), captured with forward hooks.
    caps = OrderedDict()

    def hook(name):
        def f(_m, _inp, out):
            caps[name] = out[0] if isinstance(out, tuple) else out
        return f

    handles = [unet.time_proj.register_forward_hook(hook("t_proj")),
               unet.time_embedding.register_forward_hook(hook("t_emb")),
               unet.add_time_proj.register_forward_hook(hook("time_ids_proj")),
               unet.add_embedding.register_forward_hook(hook("aug_emb")),
               unet.conv_in.register_forward_hook(hook("conv_in"))]
    for i, b in enumerate(unet.down_blocks):
        handles.append(b.register_forward_hook(hook(f"down_blocks.{i}")))
    handles.append(unet.mid_block.register_forward_hook(hook("mid_block")))
    for i, b in enumerate(unet.up_blocks):
        handles.append(b.register_forward_hook(hook(f"up_blocks.{i}")))

    t = OrderedDict()
    sample = randn((2, 4, 16, 12), seed=211)
    timesteps = torch.tensor([999, 421], dtype=torch.int64)
    ehs = randn((2, MAX_LEN, CROSS_DIM), seed=212)
    text_embeds = randn((2, POOLED_DIM), seed=213)
    time_ids = torch.tensor([[1024, 768, 0, 0, 1024, 768], [896, 1152, 32, 16, 1024, 1024]], dtype=torch.float32)
    with torch.no_grad():
        out = unet(sample, timesteps, encoder_hidden_states=ehs,
                   added_cond_kwargs=unet_added(text_embeds, time_ids)).sample
    for h in handles:
        h.remove()
    t["sample"] = sample
    t["timesteps"] = timesteps
    t["encoder_hidden_states"] = ehs
    t["text_embeds"] = text_embeds
    t["time_ids"] = time_ids
    t["out"] = out
    t["dbg.t_proj"] = caps["t_proj"]
    t["dbg.t_emb"] = caps["t_emb"]
    t["dbg.time_ids_proj"] = caps["time_ids_proj"]
    t["dbg.aug_emb"] = caps["aug_emb"]
    t["dbg.emb"] = caps["t_emb"] + caps["aug_emb"]
    for k in list(caps):
        if k.startswith(("conv_in", "down_blocks", "mid_block", "up_blocks")):
            t["dbg." + k] = caps[k]
    # Float timesteps (what Euler passes) give the same embedding for integer values.
    with torch.no_grad():
        out_f = unet(sample, timesteps.to(torch.float32), encoder_hidden_states=ehs,
                     added_cond_kwargs=unet_added(text_embeds, time_ids)).sample
    check(torch.equal(out_f, out), "UNet output identical for int64 and float32 timesteps")

    # Odd latent size: 10x14 -> 5x7 -> 3x4 and back (diffusers upsamples to the skip's exact size).
    sample_odd = randn((2, 4, 10, 14), seed=214)
    with torch.no_grad():
        out_odd = unet(sample_odd, timesteps, encoder_hidden_states=ehs,
                       added_cond_kwargs=unet_added(text_embeds, time_ids)).sample
    t["odd.sample"] = sample_odd
    t["odd.out"] = out_odd
    save_tensors(out_dir, "unet.io.safetensors", t,
                 "UNet inputs/outputs: per-sample int64 timesteps, text_time conditioning; dbg.* are hooked "
                 "intermediates (t_proj = sinusoid [2,16], t_emb = time_embedding out, time_ids_proj = "
                 "add_time_proj(time_ids.flatten()) [12,8], aug_emb = add_embedding out, emb = t_emb + aug_emb, "
                 "block outputs = first tuple element); odd.* = same conditioning at latent size 10x14")


# ----------------------------------------------------------------------------------------------------------
# 3. VAE
# ----------------------------------------------------------------------------------------------------------

def build_vae():
    vae = AutoencoderKL(**VAE).eval()
    init_weights(vae, seed=301)
    return vae


def gen_vae(out_dir: str, vae):
    print("\n== 3. VAE")
    sd = OrderedDict(vae.state_dict())
    save_tensors(out_dir, "vae.weights.safetensors", sd,
                 "SDXL-structured AutoencoderKL weights (encoder + decoder), diffusers key names "
                 "(attention: to_q/to_k/to_v/to_out.0, group_norm)")
    save_json(out_dir, "vae.config.json", diffusers_config_json(vae), "diffusers AutoencoderKL config of the tiny VAE")
    latents = randn((1, 4, 8, 6), seed=311)
    dec_in = latents / vae.config.scaling_factor
    caps = {}
    h = vae.post_quant_conv.register_forward_hook(lambda m, i, o: caps.__setitem__("pq", o))
    with torch.no_grad():
        decoded = vae.decode(dec_in).sample
    h.remove()
    t = OrderedDict()
    t["latents"] = latents
    t["decode_input"] = dec_in
    t["dbg.post_quant_conv"] = caps["pq"]
    t["decoded"] = decoded
    t["image"] = (decoded * 0.5 + 0.5).clamp(0, 1)
    save_tensors(out_dir, "vae.io.safetensors", t,
                 "latents (scheduler space) -> decode_input = latents / scaling_factor (exactly what vae.decode "
                 "receives) -> decoded (raw decoder output, [-1,1] range for a trained VAE) -> "
                 "image = (decoded*0.5+0.5).clamp(0,1)")


# ----------------------------------------------------------------------------------------------------------
# 4. Schedulers
# ----------------------------------------------------------------------------------------------------------

def pseudo_model(x: torch.Tensor, i: int) -> torch.Tensor:
    """Deterministic stand-in for the UNet: eps = 0.9*tanh(x) + 0.3*sin(0.5*i + x) (float32 ops)."""
    return 0.9 * torch.tanh(x) + 0.3 * torch.sin(0.5 * i + x)


def base_scheduler_config():
    return EulerDiscreteScheduler.from_config(SDXL_BASE_SCHEDULER).config


def unipc_reference_f64(sigmas: np.ndarray, x: np.ndarray, eps_list) -> list:
    """Independent float64 transcription of diffusers' UniPC (bh2, order 2, predict_x0, lower_order_final,
    final sigma 0), as documented in tools/parity/README.md. Returns [x_0, x_1, ..., x_n]."""
    sig = sigmas.astype(np.float64)
    n = len(eps_list)
    a = 1.0 / np.sqrt(sig ** 2 + 1.0)
    s = sig * a
    with np.errstate(divide="ignore"):
        lam = np.log(a) - np.log(s)  # lam[n] = +inf (sigma 0)
    x = x.astype(np.float64)
    out, hist, last, prev_order, lower = [x], [], None, 0, 0
    for i, eps in enumerate(eps_list):
        x0 = (x - s[i] * eps.astype(np.float64)) / a[i]  # from the *uncorrected* sample (the model input)
        if i > 0:  # corrector, with the previous step's order
            m0 = hist[-1]
            h = lam[i] - lam[i - 1]
            hh = -h
            phi1 = np.expm1(hh)
            big_b = phi1  # bh2
            g, fact, b = phi1 / hh - 1.0, 1.0, []
            for q in range(1, prev_order + 1):
                b.append(g * fact / big_b)
                fact *= q + 1
                g = g / hh - 1.0 / fact
            if prev_order == 1:
                rho, corr = [0.5], 0.0
            else:
                r1 = (lam[i - 2] - lam[i - 1]) / h
                rho = np.linalg.solve(np.array([[1.0, 1.0], [r1, 1.0]]), np.array(b))
                corr = rho[0] * (hist[-2] - m0) / r1
            x = s[i] / s[i - 1] * last - a[i] * phi1 * m0 - a[i] * big_b * (corr + rho[-1] * (x0 - m0))
        hist = (hist + [x0])[-2:]
        order = min(2, n - i, lower + 1)
        last = x
        h = lam[i + 1] - lam[i]
        hh = -h
        phi1 = np.expm1(hh)
        xn = s[i + 1] / s[i] * x - a[i + 1] * phi1 * x0  # s[n] = 0: 0 * x, phi1 = -1 -> xn = x0
        if order == 2:
            r1 = (lam[i - 1] - lam[i]) / h
            xn = xn - a[i + 1] * phi1 * 0.5 * (hist[-2] - x0) / r1
        lower = min(lower + 1, 2)
        prev_order = order
        x = xn
        out.append(x)
    return out


def run_unipc(out_dir, steps_list=(25, 2)):
    print("\n== 4a. UniPC")
    sched = UniPCMultistepScheduler.from_config(base_scheduler_config())
    cfg = dict(sched.config)
    check(cfg["solver_type"] == "bh2" and cfg["solver_order"] == 2 and cfg["predict_x0"]
          and cfg["lower_order_final"] and cfg["timestep_spacing"] == "leading" and cfg["steps_offset"] == 1
          and cfg["final_sigmas_type"] == "zero" and not cfg["use_karras_sigmas"],
          "UniPC.from_config(SDXL base config): bh2, order 2, predict_x0, lower_order_final, leading, offset 1")
    save_json(out_dir, "sched_sdxl_base.config.json", SDXL_BASE_SCHEDULER,
              "scheduler_config.json of SDXL base 1.0 (EulerDiscreteScheduler); the input of every from_config")
    save_json(out_dir, "sched_unipc.config.json", diffusers_config_json(sched), "UniPCMultistepScheduler.from_config(SDXL base)")
    t = OrderedDict()
    for n in steps_list:
        s = UniPCMultistepScheduler.from_config(base_scheduler_config())
        s.set_timesteps(n)
        s.set_begin_index(0)
        sample = randn((2, 4, 8, 6), seed=400 + n) * s.init_noise_sigma
        samples, outs, x0s, corrected, orders = [sample], [], [], [], []
        for i, ts in enumerate(s.timesteps):
            x_in = s.scale_model_input(sample, ts)
            eps = pseudo_model(x_in, i)
            sample = s.step(eps, ts, sample).prev_sample
            outs.append(eps)
            x0s.append(s.model_outputs[-1])
            corrected.append(s.last_sample)
            orders.append(s.this_order)
            samples.append(sample)
        p = f"n{n}."
        t[p + "timesteps"] = s.timesteps.clone()
        t[p + "sigmas"] = s.sigmas.clone()
        t[p + "samples"] = stack(samples)
        t[p + "model_outputs"] = stack(outs)
        t[p + "x0"] = stack(x0s)
        t[p + "corrected"] = stack(corrected)
        t[p + "orders"] = torch.tensor(orders, dtype=torch.int64)
        check(s.timesteps.dtype == torch.int64, f"UniPC n={n} timesteps are int64")
        check(torch.equal(samples[-1], x0s[-1]), f"UniPC n={n}: last step returns exactly the last x0")
        ref = unipc_reference_f64(s.sigmas.numpy(), samples[0].numpy(), [e.numpy() for e in outs])
        err = max(float(np.abs(r - q.numpy()).max() / max(1.0, np.abs(r).max())) for r, q in zip(ref, samples))
        print(f"    UniPC n={n}: float64 transcription vs diffusers, max error relative to max(1,|x|): {err:.2e}")
        check(err < 2e-5, f"UniPC n={n}: independent float64 transcription of the README equations tracks "
              f"diffusers (max rel. err {err:.1e})")
    check(t["n25.timesteps"].tolist() == [951, 913, 875, 837, 799, 761, 723, 685, 647, 609, 571, 533, 495, 457,
                                          419, 381, 343, 305, 267, 229, 191, 153, 115, 77, 39],
          "UniPC 25-step leading timesteps match the reference doc")
    # Timestep / sigma tables for other step counts (cheap, catches off-by-one in the spacing rule).
    for n in (1, 3, 4, 5, 7, 10, 30, 50):
        s = UniPCMultistepScheduler.from_config(base_scheduler_config())
        s.set_timesteps(n)
        t[f"table.n{n}.timesteps"] = s.timesteps.clone()
        t[f"table.n{n}.sigmas"] = s.sigmas.clone()
    t["alphas_cumprod"] = sched.alphas_cumprod.clone()
    t["init_noise_sigma"] = torch.tensor([float(sched.init_noise_sigma)], dtype=torch.float32)
    save_tensors(out_dir, "sched_unipc.safetensors", t,
                 "UniPC teacher-forced runs (n25.*, n2.*): samples[0] = initial sample, samples[i+1] = step(i) "
                 "output, model_outputs[i] = eps fed at step i (pseudo_model of the scaled input, see README), "
                 "x0[i] = converted model output, corrected[i] = sample after the corrector (== input at i=0), "
                 "orders[i] = predictor order; table.* = set_timesteps(n) only")


def run_euler(out_dir, ancestral: bool):
    name = "euler_a" if ancestral else "euler"
    print(f"\n== 4{'c' if ancestral else 'b'}. {name}")
    cls = EulerAncestralDiscreteScheduler if ancestral else EulerDiscreteScheduler
    s = cls.from_config(base_scheduler_config())
    save_json(out_dir, f"sched_{name}.config.json", diffusers_config_json(s), f"{cls.__name__}.from_config(SDXL base)")
    n = 25
    s.set_timesteps(n)
    s.set_begin_index(0)
    check(s.timesteps.dtype == torch.float32, f"{name} timesteps are float32")
    init_sigma = s.init_noise_sigma
    sample = randn((2, 4, 8, 6), seed=500 + int(ancestral)) * init_sigma
    samples, scaled, outs, preds, noises = [sample], [], [], [], []

    # Record the generator draws that the scheduler makes (diffusers' randn_tensor) so Rust can replay them.
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as ea_mod
    import diffusers.schedulers.scheduling_euler_discrete as e_mod
    mod = ea_mod if ancestral else e_mod
    orig = getattr(mod, "randn_tensor")
    draws = []

    def recording(*a, **k):
        r = orig(*a, **k)
        draws.append(r.clone())
        return r

    mod.randn_tensor = recording
    gen = torch.Generator().manual_seed(1234)
    try:
        for i, ts in enumerate(s.timesteps):
            x_in = s.scale_model_input(sample, ts)
            eps = pseudo_model(x_in, i)
            nd = len(draws)
            out = s.step(eps, ts, sample, generator=gen)
            noises.append(draws[-1] if len(draws) > nd else torch.zeros_like(sample))
            # Replay check: the documented formula with the recorded noise reproduces the scheduler exactly.
            sig, sig_next = s.sigmas[i], s.sigmas[i + 1]
            pred = sample - sig * eps
            if ancestral:
                up = (sig_next ** 2 * (sig ** 2 - sig_next ** 2) / sig ** 2) ** 0.5
                down = (sig_next ** 2 - up ** 2) ** 0.5
                manual = sample + (sample - pred) / sig * (down - sig) + noises[-1] * up
            else:
                manual = sample + (sample - pred) / sig * (sig_next - sig)
            check(torch.equal(manual, out.prev_sample), f"{name} step {i}: replay formula is bit-exact")
            sample = out.prev_sample
            scaled.append(x_in)
            outs.append(eps)
            preds.append(out.pred_original_sample)
            samples.append(sample)
    finally:
        mod.randn_tensor = orig
    if ancestral:
        check(len(draws) == n, "euler_a draws one randn per step (including the last, where sigma_up = 0)")
    else:
        check(len(draws) == 0, "euler (s_churn = 0) draws no noise")
    t = OrderedDict()
    t["timesteps"] = s.timesteps.clone()
    t["sigmas"] = s.sigmas.clone()
    t["init_noise_sigma"] = torch.tensor([float(init_sigma)], dtype=torch.float32)
    t["samples"] = stack(samples)
    t["scaled_inputs"] = stack(scaled)
    t["model_outputs"] = stack(outs)
    t["pred_original"] = stack(preds)
    if ancestral:
        t["noise"] = stack(noises)
    for nn in (1, 3, 10, 50):
        s2 = cls.from_config(base_scheduler_config())
        s2.set_timesteps(nn)
        t[f"table.n{nn}.timesteps"] = s2.timesteps.clone()
        t[f"table.n{nn}.sigmas"] = s2.sigmas.clone()
    save_tensors(out_dir, f"sched_{name}.safetensors", t,
                 f"{cls.__name__} 25-step teacher-forced run: samples[0] = initial (randn * init_noise_sigma), "
                 "scaled_inputs[i] = scale_model_input(samples[i]), model_outputs[i] = pseudo_model(scaled_inputs[i], "
                 "i), samples[i+1] = step output" + ("; noise[i] = the randn draw of step i (torch CPU generator "
                                                     "seed 1234)" if ancestral else ""))


# ----------------------------------------------------------------------------------------------------------
# 5. End-to-end txt2img (3 UniPC steps, CFG 5.0)
# ----------------------------------------------------------------------------------------------------------

class StubTokenizer:
    """Stands in for CLIPTokenizer inside the real StableDiffusionXLPipeline: maps fixed prompt strings to the
    fixture token ids (no BPE vocab can be downloaded here)."""

    model_max_length = MAX_LEN

    def __init__(self, table):
        self.table = table

    def __call__(self, prompt, padding=None, max_length=None, truncation=None, return_tensors=None):
        prompts = [prompt] if isinstance(prompt, str) else prompt
        ids = torch.stack([self.table[p] for p in prompts])

        class Out:
            input_ids = ids
        return Out()

    def batch_decode(self, *a, **k):
        return []

    # used by the pipeline's textual-inversion hook (maybe_convert_prompt)
    added_tokens_encoder: dict = {}

    def tokenize(self, prompt):
        return [prompt]


E2E_H, E2E_W, E2E_STEPS, E2E_CFG = 128, 96, 3, 5.0


def gen_e2e(out_dir, te1, te2, unet, vae, ids_l, ids_g):
    print("\n== 5. end-to-end txt2img")
    tok1 = StubTokenizer({"neg": ids_l[0], "pos": ids_l[1]})
    tok2 = StubTokenizer({"neg": ids_g[0], "pos": ids_g[1]})
    sched = UniPCMultistepScheduler.from_config(base_scheduler_config())
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1,
                                     tokenizer_2=tok2, unet=unet, scheduler=sched, force_zeros_for_empty_prompt=True,
                                     add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)

    # Text: diffusers' encode_prompt on the fixture ids must equal clip_text.safetensors.
    with torch.no_grad():
        pe, npe, pooled, npooled = pipe.encode_prompt("pos", device=torch.device("cpu"), num_images_per_prompt=1,
                                                      do_classifier_free_guidance=True, negative_prompt="neg")
    clip_io = load_file(os.path.join(out_dir, "clip_text.safetensors"))
    check(torch.equal(pe[0], clip_io["prompt_embeds"][1]) and torch.equal(npe[0], clip_io["prompt_embeds"][0]),
          "pipeline.encode_prompt prompt_embeds == clip_text prompt_embeds (rows neg, pos)")
    # (batch 1 vs batch 2 matmul in text_projection: equal to float32 rounding, not bitwise)
    check(torch.allclose(pooled[0], clip_io["clip_g.text_embeds"][1], atol=1e-6, rtol=0) and
          torch.allclose(npooled[0], clip_io["clip_g.text_embeds"][0], atol=1e-6, rtol=0),
          "pipeline.encode_prompt pooled == clip_g.text_embeds (atol 1e-6)")

    init_noise = randn((1, 4, E2E_H // 8, E2E_W // 8), seed=601)

    # ---- the explicit loop (what Rust mirrors) ----
    s = UniPCMultistepScheduler.from_config(base_scheduler_config())
    s.set_timesteps(E2E_STEPS)
    latents = init_noise * s.init_noise_sigma
    latents0 = latents.clone()
    add_time_ids = torch.tensor([[E2E_H, E2E_W, 0, 0, E2E_H, E2E_W]], dtype=torch.float32)
    prompt_embeds = torch.cat([npe, pe], dim=0)
    add_text_embeds = torch.cat([npooled, pooled], dim=0)
    add_time_ids = torch.cat([add_time_ids, add_time_ids], dim=0)
    s.set_begin_index(0)
    step_lat, step_raw, step_guided = [], [], []
    with torch.no_grad():
        for t in s.timesteps:
            x_in = torch.cat([latents] * 2)
            x_in = s.scale_model_input(x_in, t)
            raw = unet(x_in, t, encoder_hidden_states=prompt_embeds,
                       added_cond_kwargs={"text_embeds": add_text_embeds, "time_ids": add_time_ids}).sample
            u, c = raw.chunk(2)
            guided = u + E2E_CFG * (c - u)
            latents = s.step(guided, t, latents).prev_sample
            step_raw.append(raw)
            step_guided.append(guided)
            step_lat.append(latents)
        decode_in = latents / vae.config.scaling_factor
        decoded = vae.decode(decode_in).sample
    image = (decoded * 0.5 + 0.5).clamp(0, 1)
    image_u8 = (image.permute(0, 2, 3, 1) * 255).round().to(torch.uint8)  # numpy_to_pil's rounding

    # ---- the real pipeline with the same inputs ----
    with torch.no_grad():
        lat_p = pipe(prompt="pos", negative_prompt="neg", height=E2E_H, width=E2E_W,
                     num_inference_steps=E2E_STEPS, guidance_scale=E2E_CFG, latents=init_noise.clone(),
                     output_type="latent").images
        img_p = pipe(prompt="pos", negative_prompt="neg", height=E2E_H, width=E2E_W,
                     num_inference_steps=E2E_STEPS, guidance_scale=E2E_CFG, latents=init_noise.clone(),
                     output_type="pt").images
        img_np = pipe(prompt="pos", negative_prompt="neg", height=E2E_H, width=E2E_W,
                      num_inference_steps=E2E_STEPS, guidance_scale=E2E_CFG, latents=init_noise.clone(),
                      output_type="np").images
    check(torch.equal(lat_p, latents), "explicit loop final latents == StableDiffusionXLPipeline(output_type=latent)")
    check(torch.equal(img_p, image), "explicit decode == StableDiffusionXLPipeline(output_type=pt)")
    check(np.array_equal((img_np * 255).round().astype("uint8"), image_u8.numpy()),
          "uint8 image == pipeline numpy_to_pil rounding")
    check(s.timesteps.tolist() == [751, 501, 251], "3-step UniPC timesteps are 751, 501, 251")

    t = OrderedDict()
    t["init_noise"] = init_noise
    t["latents_0"] = latents0
    t["prompt_embeds"] = prompt_embeds
    t["add_text_embeds"] = add_text_embeds
    t["add_time_ids"] = add_time_ids
    t["timesteps"] = s.timesteps.clone()
    t["sigmas"] = s.sigmas.clone()
    t["step.unet_out"] = stack(step_raw)
    t["step.guided"] = stack(step_guided)
    t["step.latents"] = stack(step_lat)
    t["final_latents"] = latents
    t["decode_input"] = decode_in
    t["decoded"] = decoded
    t["image"] = image
    t["image_u8"] = image_u8
    save_tensors(out_dir, "e2e_txt2img.safetensors", t,
                 f"{E2E_STEPS}-step CFG ({E2E_CFG}) txt2img {E2E_H}x{E2E_W} with the fixture CLIP-L/CLIP-G/UNet/VAE "
                 "weights and UniPC.from_config(SDXL base); batch row 0 = negative, row 1 = positive; step.*[i] are "
                 "per-step values; image_u8 is NHWC", meta={"height": E2E_H, "width": E2E_W,
                                                            "guidance_scale": E2E_CFG, "steps": E2E_STEPS})


# ----------------------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------------------

def write_manifest(out_dir: str) -> None:
    lines = ["# SDXL parity fixtures", "",
             "Generated by `tools/parity/gen_sdxl.py` (see `tools/parity/README.md` for the setup, the padding/pooling",
             "rules, the SGM key map and the exact end-to-end sequence). Do not edit by hand: regenerate.", "",
             "## Versions", "",
             f"- python {platform.python_version()}",
             f"- torch {torch.__version__} (CPU, 1 thread, deterministic algorithms)",
             f"- diffusers {diffusers.__version__}",
             f"- transformers {transformers.__version__}",
             f"- safetensors {safetensors.__version__}",
             f"- numpy {np.__version__}", "",
             "Dtypes: all floating tensors are F32; token ids, UniPC timesteps and orders are I64; `image_u8` is U8.",
             "", "## Files", ""]
    total = 0
    for fname, info in MANIFEST.items():
        size = os.path.getsize(os.path.join(out_dir, fname))
        total += size
        with open(os.path.join(out_dir, fname), "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()[:16]
        lines.append(f"### `{fname}` ({size:,} bytes, sha256 {sha}…)")
        lines.append("")
        lines.append(info["note"])
        lines.append("")
        if info["tensors"] is not None:
            if ".weights." in fname or ".sgm." in fname:  # weight files: summarise
                ts = info["tensors"]
                n = sum(int(np.prod(shp)) for _, shp, _, _ in ts)
                dts = sorted({dt for _, _, dt, _ in ts})
                lines.append(f"{len(ts)} tensors, {n:,} parameters, dtypes {', '.join(dts)}. Full list: the "
                             "safetensors header (`python -c \"import safetensors; "
                             "print(list(safetensors.safe_open('FILE','np').keys()))\"`). Examples:")
                lines.append("")
                pats = ("input_blocks.0.0.weight", "conv_in.weight", "token_embedding", "label_emb.0.0.weight",
                        "add_embedding.linear_1.weight", "input_blocks.1.0.in_layers.0.weight",
                        "down_blocks.0.resnets.0.norm1.weight", "op.weight", "downsamplers.0.conv.weight",
                        "transformer_blocks.0.attn2.to_k.weight", "transformer_blocks.0.ff.net.0.proj.weight",
                        "middle_block.1.proj_in.weight", "mid_block.attentions.0.proj_in.weight",
                        "output_blocks.2.2.conv.weight", "up_blocks.0.upsamplers.0.conv.weight",
                        "skip_connection.weight", "conv_shortcut.weight", "layers.0.self_attn.q_proj.weight",
                        "mlp.fc1.weight", "text_projection.weight", "final_layer_norm.weight",
                        "decoder.mid_block.attentions.0.to_q.weight", "post_quant_conv.weight")
                shown = []
                for pat in pats:
                    hit = next((x for x in ts if pat in x[0]), None)
                    if hit is not None and hit not in shown:
                        shown.append(hit)
            else:
                shown = info["tensors"]
            lines.append("| tensor | shape | dtype | stats |")
            lines.append("|---|---|---|---|")
            for k, shp, dt, st in shown:
                lines.append(f"| `{k}` | {list(shp)} | {dt} | {st} |")
            lines.append("")
    lines.insert(lines.index("## Files") + 2, f"Total: {total:,} bytes in {len(MANIFEST)} files.\n")
    lines.append("## Self-checks that passed during generation")
    lines.append("")
    lines.extend(f"- {c}" for c in CHECKS if "replay formula" not in c)
    n_steps = sum(1 for c in CHECKS if "replay formula" in c)
    lines.append(f"- ({n_steps} per-step Euler/Euler-A replay checks: formula with the recorded noise is bit-exact)")
    lines.append("")
    # gen_single_file.py appends its own section after this marker; keep it when rewriting.
    manifest = os.path.join(out_dir, "MANIFEST.md")
    marker = "<!-- gen_single_file.py -->"
    tail = ""
    for src in (manifest, os.path.join(DEFAULT_OUT, "MANIFEST.md")):
        if os.path.exists(src):
            old = open(src).read()
            if marker in old:
                tail = old[old.index(marker):]
                break
    body = "\n".join(lines)
    if tail:
        body = body.rstrip("\n") + "\n\n" + tail
    with open(manifest, "w") as f:
        f.write(body)
    print(f"\nwrote MANIFEST.md; fixtures total {total:,} bytes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true",
                    help="regenerate into a temporary folder and verify that --out holds byte-identical files")
    args = ap.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as td:
            generate(td)
            bad = []
            for fname in sorted(os.listdir(td)):
                mine = os.path.join(args.out, fname)
                with open(os.path.join(td, fname), "rb") as a:
                    new = a.read()
                old = open(mine, "rb").read() if os.path.exists(mine) else None
                if old != new:
                    bad.append(fname)
            extra = sorted(set(os.listdir(args.out)) - set(os.listdir(td)))
            print("\n--check:", "differs: " + ", ".join(bad) if bad else "all files byte-identical",
                  ("; not generated by this script: " + ", ".join(extra)) if extra else "")
            return 1 if bad else 0
    generate(args.out)
    return 0


def generate(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    te1, te2 = build_text_encoders()
    ids_l, ids_g, _, _ = gen_text(out, te1, te2)
    unet = build_unet()
    gen_unet(out, unet)
    vae = build_vae()
    gen_vae(out, vae)
    run_unipc(out)
    run_euler(out, ancestral=False)
    run_euler(out, ancestral=True)
    gen_e2e(out, te1, te2, unet, vae, ids_l, ids_g)
    write_manifest(out)

if __name__ == "__main__":
    sys.exit(main())
