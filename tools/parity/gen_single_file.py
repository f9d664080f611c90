#!/usr/bin/env python3
"""Combine the tiny fixture weights into ONE single-file SDXL checkpoint under the original Stability names.

Real users mostly have `sd_xl_base_1.0.safetensors`: one file, every component under its original (SGM / LDM /
OpenCLIP) names. This script writes the same layout for the tiny parity models, from the files `gen_sdxl.py` made:

    model.diffusion_model.*               UNet      unet.sgm.safetensors, tensors stored as float16
    first_stage_model.*                   VAE       vae.weights.safetensors (encoder + decoder), LDM names
    conditioner.embedders.0.transformer.* CLIP-L    clip_l.weights.safetensors, transformers names
    conditioner.embedders.1.model.*       CLIP-G    clip_g.weights.safetensors, OpenCLIP names

The maps below are the inverses of diffusers' own converters (`diffusers.loaders.single_file_utils`:
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`,
`convert_ldm_unet_checkpoint`), written from their documented behaviour. The file is only written after those
converters, run on the new dict, give back every original tensor bit for bit (the UNet's rounded to float16), and it
is verified again after writing by loading it through `UNet2DConditionModel.from_single_file`,
`AutoencoderKL.from_single_file` and diffusers' CLIP single-file loader.

The UNet is stored in float16, as in the published `sd_xl_base_1.0.safetensors` (`.half()`: round to nearest even);
VAE and text encoders stay float32. This keeps the file under the 5 MB fixture limit and makes the Rust loader's
float16 -> float32 path part of the test. Since float16 weights change the UNet's output a little, the output of
diffusers' UNet2DConditionModel loaded from the written file (float32 compute, the inputs of `unet.io.safetensors`)
is saved as `unet.out_f16_weights` in `sdxl_single_file.io.safetensors`.

Usage:
    /root/.cache/parity-venv/bin/python tools/parity/gen_single_file.py [--dir tests/fixtures/parity] [--check]

Deterministic: rerunning gives byte-identical files (`--check` verifies both without writing). It also replaces
its own section at the end of MANIFEST.md (gen_sdxl.py rewrites MANIFEST.md; run this script after it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from collections import OrderedDict

import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import diffusers  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
    create_diffusers_clip_model_from_ldm,
)
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_DIR = os.path.join(REPO, "tests", "fixtures", "parity")
OUT_NAME = "sdxl_single_file.safetensors"
IO_NAME = "sdxl_single_file.io.safetensors"
UNET_DTYPE = torch.float16  # as sd_xl_base_1.0.safetensors ships

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
CLIP_G_PREFIX = "conditioner.embedders.1.model."

MANIFEST_MARK = "<!-- gen_single_file.py -->"
CHECKS: list[str] = []


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError("self-check failed: " + what)
    CHECKS.append(what)
    print("  ok:", what)


def same(a: dict, b: dict) -> bool:
    """Same key set and every tensor torch.equal (dtype and shape included)."""
    return set(a) == set(b) and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in b)


# ---------------------------------------------------------------------------------------------------------
# VAE: diffusers AutoencoderKL names -> LDM names
# ---------------------------------------------------------------------------------------------------------

_VAE_ATTN = (("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out."))


def _ldm_resnet(rest: str) -> str:
    # norm1/conv1/norm2/conv2 keep their names; only the shortcut is renamed.
    return rest.replace("conv_shortcut.", "nin_shortcut.")


def vae_key_to_ldm(key: str, n_up: int) -> str:
    half, _, rest = key.partition(".")
    if half not in ("encoder", "decoder"):
        return key  # quant_conv / post_quant_conv keep their names
    if rest.startswith("conv_norm_out."):
        return f"{half}.norm_out." + rest[len("conv_norm_out."):]
    if rest.startswith("down_blocks."):
        i, _, tail = rest[len("down_blocks."):].partition(".")
        if tail.startswith("resnets."):
            j, _, t = tail[len("resnets."):].partition(".")
            return f"{half}.down.{i}.block.{j}.{_ldm_resnet(t)}"
        if tail.startswith("downsamplers.0.conv."):
            return f"{half}.down.{i}.downsample.conv." + tail[len("downsamplers.0.conv."):]
    if rest.startswith("up_blocks."):
        i, _, tail = rest[len("up_blocks."):].partition(".")
        block = n_up - 1 - int(i)  # LDM numbers decoder levels from the lowest resolution up
        if tail.startswith("resnets."):
            j, _, t = tail[len("resnets."):].partition(".")
            return f"{half}.up.{block}.block.{j}.{_ldm_resnet(t)}"
        if tail.startswith("upsamplers.0.conv."):
            return f"{half}.up.{block}.upsample.conv." + tail[len("upsamplers.0.conv."):]
    if rest.startswith("mid_block.resnets."):
        k, _, t = rest[len("mid_block.resnets."):].partition(".")
        return f"{half}.mid.block_{int(k) + 1}.{_ldm_resnet(t)}"
    if rest.startswith("mid_block.attentions.0."):
        t = rest[len("mid_block.attentions.0."):]
        for new, old in _VAE_ATTN:
            if t.startswith(new):
                return f"{half}.mid.attn_1.{old}{t[len(new):]}"
    if rest.split(".")[0] in ("conv_in", "conv_out"):
        return key
    raise KeyError(f"no LDM name for VAE key {key}")


def vae_to_sgm(sd: dict, n_up: int) -> "OrderedDict[str, torch.Tensor]":
    out = OrderedDict()
    for k, v in sd.items():
        name = VAE_PREFIX + vae_key_to_ldm(k, n_up)
        # LDM attention projections are 1x1 convolutions: [C, C] -> [C, C, 1, 1].
        if ".mid.attn_1." in name and name.endswith(".weight") and v.ndim == 2:
            v = v[:, :, None, None]
        out[name] = v.contiguous()
    return out


# ---------------------------------------------------------------------------------------------------------
# CLIP-G: transformers names -> OpenCLIP names
# ---------------------------------------------------------------------------------------------------------

_OPENCLIP_FIXED = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_OPENCLIP_LAYER = (("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("self_attn.out_proj.", "attn.out_proj."),
                   ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."))


def clip_g_to_sgm(sd: dict) -> "OrderedDict[str, torch.Tensor]":
    out = OrderedDict()
    layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layers.")})
    for k, v in sd.items():
        if k in _OPENCLIP_FIXED:
            out[CLIP_G_PREFIX + _OPENCLIP_FIXED[k]] = v
        elif k == "text_projection.weight":
            # OpenCLIP applies `x @ text_projection`, so it stores [hidden, proj]: transformers' weight transposed.
            out[CLIP_G_PREFIX + "text_projection"] = v.T.contiguous()
        elif k.startswith("text_model.encoder.layers."):
            n, _, t = k[len("text_model.encoder.layers."):].partition(".")
            if t.startswith("self_attn.") and t.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                continue  # fused below
            for new, old in _OPENCLIP_LAYER:
                if t.startswith(new):
                    out[f"{CLIP_G_PREFIX}transformer.resblocks.{n}.{old}{t[len(new):]}"] = v
                    break
            else:
                raise KeyError(f"no OpenCLIP name for CLIP-G key {k}")
        else:
            raise KeyError(f"no OpenCLIP name for CLIP-G key {k}")
    for n in layers:
        p = f"text_model.encoder.layers.{n}.self_attn."
        base = f"{CLIP_G_PREFIX}transformer.resblocks.{n}.attn."
        # nn.MultiheadAttention: q, k, v stacked along dim 0.
        out[base + "in_proj_weight"] = torch.cat([sd[p + f"{x}_proj.weight"] for x in "qkv"], 0).contiguous()
        out[base + "in_proj_bias"] = torch.cat([sd[p + f"{x}_proj.bias"] for x in "qkv"], 0).contiguous()
    return out


# ---------------------------------------------------------------------------------------------------------


def build(d: str):
    ld = lambda name: OrderedDict(load_file(os.path.join(d, name)))  # noqa: E731
    unet_sgm, vae, clip_l, clip_g = (ld("unet.sgm.safetensors"), ld("vae.weights.safetensors"),
                                     ld("clip_l.weights.safetensors"), ld("clip_g.weights.safetensors"))
    with open(os.path.join(d, "vae.config.json")) as f:
        vae_cfg = json.load(f)
    with open(os.path.join(d, "unet.config.json")) as f:
        unet_cfg = json.load(f)
    check(all(k.startswith(UNET_PREFIX) for k in unet_sgm), "unet.sgm.safetensors is all model.diffusion_model.*")
    check(all(v.dtype == torch.float32 for p in (unet_sgm, vae, clip_l, clip_g) for v in p.values()),
          "the tiny weight files are all float32")
    unet_half = OrderedDict((k, v.to(UNET_DTYPE).contiguous()) for k, v in unet_sgm.items())
    check(any(not torch.equal(v.float(), unet_sgm[k]) for k, v in unet_half.items()),
          "rounding the UNet to float16 changes some weights")
    parts = [unet_half, vae_to_sgm(vae, len(vae_cfg["up_block_types"])),
             OrderedDict((CLIP_L_PREFIX + k, v) for k, v in clip_l.items()), clip_g_to_sgm(clip_g)]
    ckpt = OrderedDict()
    for p in parts:
        for k, v in p.items():
            if k in ckpt:
                raise AssertionError(f"self-check failed: key {k} appears in two components")
            ckpt[k] = v
    check(len(ckpt) == sum(len(p) for p in parts), "component key sets are disjoint")
    originals = dict(unet_sgm=unet_sgm, vae=vae, clip_l=clip_l, clip_g=clip_g, vae_cfg=vae_cfg, unet_cfg=unet_cfg)
    return ckpt, originals


def unet_diffusers_half(d: str) -> dict:
    """unet.weights.safetensors (diffusers names) rounded to the single file's UNet dtype."""
    return {k: v.to(UNET_DTYPE) for k, v in load_file(os.path.join(d, "unet.weights.safetensors")).items()}


def verify_converters(ckpt: dict, o: dict, d: str) -> None:
    """diffusers' converters, SGM -> diffusers, must give back every original tensor exactly."""
    check(all(v.dtype == (UNET_DTYPE if k.startswith(UNET_PREFIX) else torch.float32) for k, v in ckpt.items()),
          "UNet tensors are float16, VAE and text encoder tensors float32")
    check(same(convert_ldm_unet_checkpoint(dict(ckpt), o["unet_cfg"]), unet_diffusers_half(d)),
          "convert_ldm_unet_checkpoint(single file) == unet.weights.safetensors .half() (keys + torch.equal)")
    check(same(convert_ldm_vae_checkpoint(dict(ckpt), o["vae_cfg"]), o["vae"]),
          "convert_ldm_vae_checkpoint(single file) == vae.weights.safetensors, encoder included (keys + torch.equal)")
    check(same(convert_ldm_clip_checkpoint(dict(ckpt)), o["clip_l"]),
          "convert_ldm_clip_checkpoint(single file) == clip_l.weights.safetensors (keys + torch.equal)")
    # text_model is only consulted when the checkpoint has no text_projection; ours has one.
    back = convert_open_clip_checkpoint(None, dict(ckpt), prefix=CLIP_G_PREFIX)
    check(same(back, o["clip_g"]),
          "convert_open_clip_checkpoint(single file, conditioner.embedders.1.model.) == clip_g.weights.safetensors")
    proj = ckpt[CLIP_G_PREFIX + "text_projection"]
    check(tuple(proj.shape) == tuple(o["clip_g"]["text_projection.weight"].shape[::-1]),
          "OpenCLIP text_projection is stored [hidden, proj] (transposed)")


def unet_reference(path: str, o: dict, d: str) -> "OrderedDict[str, torch.Tensor]":
    """UNet2DConditionModel.from_single_file(written file) in float32: its weights must be the float16-rounded ones;
    returns its output for the inputs of unet.io.safetensors (the Rust test's reference for the single-file UNet)."""
    with tempfile.TemporaryDirectory() as td:
        os.makedirs(os.path.join(td, "unet"))
        with open(os.path.join(td, "unet", "config.json"), "w") as f:
            json.dump(o["unet_cfg"], f)
        unet = UNet2DConditionModel.from_single_file(path, config=td, subfolder="unet", local_files_only=True,
                                                     torch_dtype=torch.float32).eval()
    want = {k: v.float() for k, v in unet_diffusers_half(d).items()}
    check(same(dict(unet.state_dict()), want), "UNet2DConditionModel.from_single_file(single file, float32) loads "
                                               "unet.weights.safetensors .half().float()")
    io = load_file(os.path.join(d, "unet.io.safetensors"))
    with torch.no_grad():
        out = unet(io["sample"], io["timesteps"], encoder_hidden_states=io["encoder_hidden_states"],
                   added_cond_kwargs={"text_embeds": io["text_embeds"], "time_ids": io["time_ids"]}).sample
    check(out.dtype == torch.float32 and torch.isfinite(out).all().item(), "UNet output is finite float32")
    dev = ((out - io["out"]).abs().max() / io["out"].abs().max()).item()
    check(not torch.equal(out, io["out"]), f"float16 weights change the UNet output (max rel dev {dev:.1e} from "
                                           "unet.io.safetensors out)")
    return OrderedDict([("unet.out_f16_weights", out.contiguous())])


def verify_loaders(path: str, o: dict, d: str) -> None:
    """The written file through diffusers' own single-file loaders (local configs, nothing downloaded)."""
    with tempfile.TemporaryDirectory() as td:
        os.makedirs(os.path.join(td, "vae"))
        with open(os.path.join(td, "vae", "config.json"), "w") as f:
            json.dump(o["vae_cfg"], f)
        vae = AutoencoderKL.from_single_file(path, config=td, subfolder="vae", local_files_only=True)
        check(same(dict(vae.state_dict()), o["vae"]), "AutoencoderKL.from_single_file(single file) loads identical "
                                                       "weights")
    ckpt = load_file(path)
    for cls, name in ((CLIPTextModel, "clip_l"), (CLIPTextModelWithProjection, "clip_g")):
        with tempfile.TemporaryDirectory() as td:
            with open(os.path.join(d, f"{name}.config.json")) as f:
                cfg = json.load(f)
            with open(os.path.join(td, "config.json"), "w") as f:
                json.dump(cfg, f)
            model = create_diffusers_clip_model_from_ldm(cls, ckpt, config=td, local_files_only=True)
            # transformers >= 5.6 keeps CLIPTextModel's parameters without the "text_model." prefix in memory.
            sd = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
                  for k, v in model.state_dict().items()}
            check(same(sd, o[name]), f"diffusers' single-file CLIP loader ({cls.__name__}) loads identical {name} "
                                     "weights")


def manifest_section(path: str, ckpt: dict, io_path: str, io: dict) -> str:
    with open(path, "rb") as f:
        data = f.read()
    with open(io_path, "rb") as f:
        io_data = f.read()
    groups = OrderedDict((p, [k for k in ckpt if k.startswith(p)])
                         for p in (UNET_PREFIX, VAE_PREFIX, CLIP_L_PREFIX, CLIP_G_PREFIX))
    sha = hashlib.sha256(data).hexdigest()[:16]
    lines = [MANIFEST_MARK, "", f"### `{OUT_NAME}` ({len(data):,} bytes, sha256 {sha}…)",
             "", "Generated by `tools/parity/gen_single_file.py` from the four tiny weight files above: one "
             "single-file SDXL checkpoint under the original Stability names (see tools/parity/README.md, "
             "\"Single-file SDXL checkpoint\").", "",
             "| prefix | from | tensors |", "|---|---|---|"]
    src = {UNET_PREFIX: "unet.sgm.safetensors (same names, stored float16)",
           VAE_PREFIX: "vae.weights.safetensors (LDM names, encoder too)",
           CLIP_L_PREFIX: "clip_l.weights.safetensors (same names)",
           CLIP_G_PREFIX: "clip_g.weights.safetensors (OpenCLIP names, fused in_proj, transposed text_projection)"}
    for p, ks in groups.items():
        lines.append(f"| `{p}` | {src[p]} | {len(ks)} |")
    lines += ["", "Examples:", "", "| tensor | shape | dtype |", "|---|---|---|"]
    for k in (UNET_PREFIX + "input_blocks.1.0.in_layers.2.weight",
              VAE_PREFIX + "decoder.up.0.block.0.nin_shortcut.weight", VAE_PREFIX + "decoder.mid.attn_1.q.weight",
              CLIP_G_PREFIX + "positional_embedding", CLIP_G_PREFIX + "transformer.resblocks.0.attn.in_proj_weight",
              CLIP_G_PREFIX + "text_projection"):
        if k in ckpt:
            lines.append(f"| `{k}` | {list(ckpt[k].shape)} | {str(ckpt[k].dtype).replace('torch.', '')} |")
    lines += ["", f"### `{IO_NAME}` ({len(io_data):,} bytes, sha256 {hashlib.sha256(io_data).hexdigest()[:16]}…)",
              "", "The reference output for the single file's float16 UNet: diffusers' UNet2DConditionModel loaded "
              f"from `{OUT_NAME}` in float32, run on the inputs of `unet.io.safetensors` (sample, timesteps, "
              "encoder_hidden_states, text_embeds, time_ids).", "", "| tensor | shape | dtype |", "|---|---|---|"]
    for k, v in io.items():
        lines.append(f"| `{k}` | {list(v.shape)} | {str(v.dtype).replace('torch.', '')} |")
    lines += ["", "Self-checks that passed:", ""] + [f"- {c}" for c in CHECKS] + [""]
    return "\n".join(lines)


def update_manifest(d: str, section: str) -> None:
    path = os.path.join(d, "MANIFEST.md")
    with open(path) as f:
        text = f.read()
    head = text.split(MANIFEST_MARK)[0].rstrip("\n") + "\n\n"
    with open(path, "w") as f:
        f.write(head + section)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=DEFAULT_DIR,
                    help="fixture folder (read the tiny files, write the single file and its io file)")
    ap.add_argument("--check", action="store_true", help="regenerate into a temp file and compare bytes; write nothing")
    args = ap.parse_args()
    ckpt, originals = build(args.dir)
    verify_converters(ckpt, originals, args.dir)
    # One metadata key (safetensors writes a hash map in random order), so reruns are byte-identical.
    io_meta = {"parity": json.dumps({"generator": "tools/parity/gen_single_file.py", "torch": torch.__version__,
                                     "diffusers": diffusers.__version__}, sort_keys=True)}
    with tempfile.TemporaryDirectory() as td:
        tmp, tmp_io = os.path.join(td, OUT_NAME), os.path.join(td, IO_NAME)
        save_file(dict(ckpt), tmp, metadata={"format": "pt"})
        io = unet_reference(tmp, originals, args.dir)
        save_file(dict(io), tmp_io, metadata=io_meta)
        verify_loaders(tmp, originals, args.dir)
        new = {name: open(p, "rb").read() for name, p in ((OUT_NAME, tmp), (IO_NAME, tmp_io))}
    if args.check:
        bad = [n for n, data in new.items()
               if not os.path.exists(os.path.join(args.dir, n)) or open(os.path.join(args.dir, n), "rb").read() != data]
        print("--check:", f"{', '.join(bad)} differ" if bad else "byte-identical")
        return 1 if bad else 0
    for name, data in new.items():
        path = os.path.join(args.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)
        print(f"wrote {name} ({len(data):,} bytes)")
    out = os.path.join(args.dir, OUT_NAME)
    update_manifest(args.dir, manifest_section(out, ckpt, os.path.join(args.dir, IO_NAME), io))
    print("updated MANIFEST.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
