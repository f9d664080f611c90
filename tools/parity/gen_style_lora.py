#!/usr/bin/env python3
"""Style-LoRA parity fixtures for `src/weights/style_lora.rs` (user LoRAs merged into SDXL at load time).

Two random LoRAs for the tiny parity models of `gen_sdxl.py` (UNet `unet.weights.safetensors`, CLIP-L
`clip_l.weights.safetensors`, CLIP-G `clip_g.weights.safetensors`), in the two formats found on model sites:

    style_kohya.safetensors  kohya / sd-scripts: `lora_unet_<SGM module path with _>` (the original Stability
                             UNet layout that sd-scripts trains SDXL on), `lora_te1_` (CLIP-L), `lora_te2_`
                             (CLIP-G); `.lora_down.weight`, `.lora_up.weight`, `.alpha`; float16 like most
                             published files. Every Linear and Conv2d of the UNet (LoCon style: 3x3 resnet convs,
                             down/up samplers, conv_in/conv_out, time and label embeddings too), every attention
                             and MLP projection of both text encoders. Mostly rank 4, some rank 2; per-module alphas.
    style_peft.safetensors   diffusers / PEFT, written by diffusers' own `save_lora_weights` from PEFT adapters:
                             `unet.<module>.lora_A.weight` / `lora_B.weight`, `text_encoder.` / `text_encoder_2.`;
                             alphas only in the `lora_adapter_metadata` JSON (r 4, lora_alpha 8, a rank_pattern
                             and an alpha_pattern). float32.
    expected.safetensors     what a diffusers user gets (`pipe.load_lora_weights(file, adapter_name=...)` then
                             `pipe.set_adapters(names, adapter_weights=...)`) on the inputs of
                             `tests/fixtures/parity/unet.io.safetensors` and `clip_text.safetensors`:
                               unet.kohya, unet.peft, unet.peft_nometa, unet.mix        [2,4,16,12]
                               clip_l.penultimate.{kohya,peft}                          [2,77,32]
                               clip_g.penultimate.{kohya,peft}, clip_g.text_embeds.{…}  [2,77,48], [2,40]
                             kohya and peft at weight 0.7; `peft_nometa` is the PEFT file without its metadata
                             (so alpha = rank) at 0.7; `mix` is kohya at 0.7 plus PEFT at -0.5.

Self-checks (the script stops with `self-check failed: ...`):
  - the base models reproduce the committed parity outputs;
  - diffusers injects a LoRA layer for every module in each file, and every injected layer's scale is the one the
    file means: kohya alpha/rank per module (sd-scripts' rule), PEFT lora_alpha/r with its patterns;
  - `set_adapters(weight)` equals `fuse_lora(lora_scale=weight)`;
  - a direct merge W + weight·(alpha/rank)·up@down (convs: up [o,r,1,1] times down [r,i,kh,kw]) gives the same
    outputs (so the formula the Rust side implements is the one diffusers runs);
  - each LoRA moves every output by more than 10 % of its range (a loader that ignores it cannot pass).

Note on diffusers 0.42.1: with kohya files whose alphas differ between modules, diffusers applies the most common
alpha to the UNet's `to_q/to_k/to_v/to_out` projections and to every text-encoder module (its alpha_pattern keys
keep the `processor.to_q_lora.down.weight` / `.to_q_lora.down.weight` spelling and never match a module).
sd-scripts, ComfyUI and A1111 use each module's own alpha, and so does the Rust loader. The kohya fixture therefore
gives the UNet attention projections one alpha (the most common one) and each text encoder one alpha, and varies
alpha only where diffusers honours it (other UNet modules); the scale self-check catches any change.

Note on transformers 5.24: its PEFT integration (used by diffusers for text-encoder LoRAs) refuses peft < 0.22.0,
which PyPI does not have; the version gate is lifted below (see `_tf_peft`), and the by-hand merge confirms the
text-encoder references independently.

Usage:
    /root/.cache/parity-venv/bin/python tools/parity/gen_style_lora.py [--out tests/fixtures/lora] [--check]

Deterministic (CPU, one thread, fixed seeds); `--check` regenerates into a temp folder and compares the tensors
and metadata of every file (not the bytes: safetensors orders metadata entries differently from run to run).
Needs `peft` in the venv (tools/parity/requirements.txt).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
from collections import OrderedDict

import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import diffusers  # noqa: E402
import peft  # noqa: E402
import transformers  # noqa: E402
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel  # noqa: E402
from peft import LoraConfig, get_peft_model_state_dict  # noqa: E402
from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

# transformers 5.24 gates its PEFT integration (`CLIPTextModel.add_adapter` / `load_adapter`, which diffusers'
# text-encoder LoRA loader calls) on peft >= 0.22.0, a version PyPI does not have (newest: 0.21.2). Without this,
# `load_lora_weights` raises for any LoRA with text-encoder keys. The gate is lifted here; the text-encoder
# references are then confirmed independently by the by-hand merge check below.
import transformers.integrations.peft as _tf_peft  # noqa: E402

_tf_peft.check_peft_version = lambda min_version: None

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PARITY = os.path.join(REPO, "tests", "fixtures", "parity")
DEFAULT_OUT = os.path.join(REPO, "tests", "fixtures", "lora")
SGM_PREFIX = "model.diffusion_model."

WEIGHT = 0.7
MIX = (0.7, -0.5)
SEED_KOHYA = 1101
SEED_PEFT = 1102
# Changing the LoRA must change the outputs by at least this much (relative to their range).
MIN_EFFECT = 0.10

CHECKS: list[str] = []


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError("self-check failed: " + what)
    CHECKS.append(what)
    print("  [ok]", what)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------------------------------------------------
# base models
# ---------------------------------------------------------------------------------------------------------

def load_unet() -> UNet2DConditionModel:
    with open(os.path.join(PARITY, "unet.config.json")) as f:
        cfg = json.load(f)
    unet = UNet2DConditionModel.from_config(cfg).eval()
    unet.load_state_dict(load_file(os.path.join(PARITY, "unet.weights.safetensors")), strict=True)
    return unet


def load_text_encoder(name: str, cls):
    with tempfile.TemporaryDirectory() as td:
        shutil.copy(os.path.join(PARITY, f"{name}.config.json"), os.path.join(td, "config.json"))
        shutil.copy(os.path.join(PARITY, f"{name}.weights.safetensors"), os.path.join(td, "model.safetensors"))
        return cls.from_pretrained(td).eval()


BASE = {}


def base_models():
    if not BASE:
        BASE["unet"] = load_unet()
        BASE["te1"] = load_text_encoder("clip_l", CLIPTextModel)
        BASE["te2"] = load_text_encoder("clip_g", CLIPTextModelWithProjection)
    return {k: copy.deepcopy(v) for k, v in BASE.items()}


def pipeline(models) -> StableDiffusionXLPipeline:
    # The LoRA loader only needs the three models; no VAE or tokenizers.
    return StableDiffusionXLPipeline(vae=None, text_encoder=models["te1"], text_encoder_2=models["te2"],
                                     tokenizer=None, tokenizer_2=None, unet=models["unet"],
                                     scheduler=EulerDiscreteScheduler())


UNET_IO = load_file(os.path.join(PARITY, "unet.io.safetensors"))
CLIP_IO = load_file(os.path.join(PARITY, "clip_text.safetensors"))


@torch.no_grad()
def outputs(models, dtype=torch.float32) -> "OrderedDict[str, torch.Tensor]":
    io = {k: v.to(dtype) if v.is_floating_point() else v for k, v in UNET_IO.items()}
    out = OrderedDict()
    out["unet"] = models["unet"](io["sample"], io["timesteps"], encoder_hidden_states=io["encoder_hidden_states"],
                                 added_cond_kwargs={"text_embeds": io["text_embeds"], "time_ids": io["time_ids"]}
                                 ).sample
    o1 = models["te1"](CLIP_IO["clip_l.input_ids"], output_hidden_states=True)
    o2 = models["te2"](CLIP_IO["clip_g.input_ids"], output_hidden_states=True)
    out["clip_l.penultimate"] = o1.hidden_states[-2]
    out["clip_g.penultimate"] = o2.hidden_states[-2]
    out["clip_g.text_embeds"] = o2.text_embeds
    return out


def lora_targets(model, text: bool):
    """(module name, module) of every layer a LoRA may target: all Linear/Conv2d of the UNet; the attention and
    MLP projections of a text encoder (what sd-scripts targets)."""
    if text:
        suffixes = (".q_proj", ".k_proj", ".v_proj", ".out_proj", ".fc1", ".fc2")
        return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith(suffixes)]
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]


def text_model_name(name: str) -> str:
    # transformers 5 names CLIPTextModel's modules without `text_model.`; published files carry it.
    return name if name.startswith("text_model.") else "text_model." + name


def random_pair(m, r: int, g: torch.Generator):
    """down [r, in(, kh, kw)] ~ N(0, 1/fan_in), up [out, r(, 1, 1)] ~ N(0, 1/(4r)): the delta is half as large
    as the weight, so every module matters but the UNet stays well conditioned in float32."""
    if isinstance(m, torch.nn.Linear):
        down = torch.randn(r, m.in_features, generator=g) / m.in_features ** 0.5
        up = torch.randn(m.out_features, r, generator=g) / (4 * r) ** 0.5
    else:
        kh, kw = m.kernel_size
        fan = m.in_channels * kh * kw
        down = torch.randn(r, m.in_channels, kh, kw, generator=g) / fan ** 0.5
        up = torch.randn(m.out_channels, r, 1, 1, generator=g) / (4 * r) ** 0.5
    return down, up


def delta(down: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """up @ down, reshaped to the weight (a conv LoRA is a kxk conv to rank r, then a 1x1 conv)."""
    d = up.flatten(1) @ down.flatten(1)
    return d.reshape(up.shape[0], *down.shape[1:]) if down.ndim == 4 else d


# ---------------------------------------------------------------------------------------------------------
# kohya file
# ---------------------------------------------------------------------------------------------------------

ATTN_PROJ = (".to_q", ".to_k", ".to_v", ".to_out.0")


def sgm_module_names(unet) -> dict:
    """diffusers module name -> SGM module name, found by matching tensors with unet.sgm.safetensors (written
    by gen_sdxl.py and checked there against diffusers' own SGM converter), not by re-deriving the map."""
    sgm = load_file(os.path.join(PARITY, "unet.sgm.safetensors"))
    by_value = {}
    for k, v in sgm.items():
        if k.endswith(".weight"):
            by_value.setdefault(tuple(v.shape), []).append((k, v))
    names = {}
    for n, m in lora_targets(unet, text=False):
        hits = [k for k, v in by_value[tuple(m.weight.shape)] if torch.equal(v, m.weight)]
        check_len = len(hits) == 1
        if not check_len:
            raise AssertionError(f"self-check failed: {n}.weight matches {len(hits)} SGM tensors")
        names[n] = hits[0][len(SGM_PREFIX):-len(".weight")]
    return names


def make_kohya(models):
    """Returns (state dict, {(component, diffusers module): (down, up, scale)})."""
    g = torch.Generator().manual_seed(SEED_KOHYA)
    sd = OrderedDict()
    mods = {}
    sgm = sgm_module_names(models["unet"])
    comps = (("unet", models["unet"], "lora_unet_", False, (1.0, 8.0)),
             ("text_encoder", models["te1"], "lora_te1_", True, (1.0,)),
             ("text_encoder_2", models["te2"], "lora_te2_", True, (8.0,)))
    for comp, model, prefix, text, odd_alphas in comps:
        for i, (n, m) in enumerate(lora_targets(model, text)):
            r = 2 if i % 5 == 3 else 4
            down, up = random_pair(m, r, g)
            name = text_model_name(n) if text else n
            kohya = prefix + (name if text else sgm[n]).replace(".", "_")
            # One alpha per text encoder, and one (2, the most common) for every UNet attention projection
            # (see the module docstring); the other UNet alphas vary.
            if text:
                alpha = odd_alphas[0]
            elif n.endswith(ATTN_PROJ):
                alpha = 2.0
            else:
                alpha = (2.0, *odd_alphas)[i % 3]
            down16, up16 = down.half(), up.half()
            sd[kohya + ".alpha"] = torch.tensor(alpha, dtype=torch.float16)
            sd[kohya + ".lora_down.weight"] = down16.contiguous()
            sd[kohya + ".lora_up.weight"] = up16.contiguous()
            mods[(comp, n)] = (down16.float(), up16.float(), alpha / r)
    return sd, mods


# ---------------------------------------------------------------------------------------------------------
# PEFT file (written by diffusers itself)
# ---------------------------------------------------------------------------------------------------------

UNET_PEFT_CONFIG = dict(r=4, lora_alpha=4, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj",
                                        "ff.net.2", "conv1", "conv2", "conv_shortcut", "time_emb_proj"],
                        rank_pattern={"ff.net.2": 2, "^mid_block.attentions.0.proj_in": 3},
                        alpha_pattern={"attn2.to_k": 8, "conv2": 2})
TE_PEFT_CONFIG = dict(r=4, lora_alpha=2, init_lora_weights=False,
                      target_modules=["q_proj", "k_proj", "v_proj", "out_proj"], rank_pattern={"out_proj": 2},
                      alpha_pattern={})


def make_peft(models, path: str):
    """Adds PEFT adapters to copies of the models, randomises them, saves them with
    `StableDiffusionXLPipeline.save_lora_weights` (keys and metadata exactly as diffusers writes them).
    Returns {(component, module): (down, up, scale)} from the injected layers."""
    g = torch.Generator().manual_seed(SEED_PEFT)
    mods = {}
    layers, meta = {}, {}
    for comp, key, cfg in (("unet", "unet", UNET_PEFT_CONFIG), ("text_encoder", "te1", TE_PEFT_CONFIG),
                           ("text_encoder_2", "te2", TE_PEFT_CONFIG)):
        model = copy.deepcopy(models[key])
        model.add_adapter(LoraConfig(**cfg))
        with torch.no_grad():
            for n, m in model.named_modules():
                if isinstance(m, BaseTunerLayer) and "default" in m.lora_A:
                    a, b = m.lora_A["default"], m.lora_B["default"]
                    r = a.weight.shape[0]
                    down, up = random_pair(m.get_base_layer(), r, g)
                    a.weight.copy_(down)
                    b.weight.copy_(up)
                    mods[(comp, n)] = (down, up, m.scaling["default"])
        sd = get_peft_model_state_dict(model)
        if comp != "unet":
            sd = {text_model_name(k): v for k, v in sd.items()}
        layers[comp] = sd
        # As diffusers' training scripts do (`peft_config.to_dict()`), minus what would make the file differ
        # between runs: the temp path of the base model, and set order.
        cfg_dict = model.peft_config["default"].to_dict()
        cfg_dict["base_model_name_or_path"] = None
        cfg_dict["target_modules"] = sorted(cfg_dict["target_modules"])
        meta[comp] = cfg_dict
    with tempfile.TemporaryDirectory() as td:
        StableDiffusionXLPipeline.save_lora_weights(
            td, unet_lora_layers=layers["unet"], text_encoder_lora_layers=layers["text_encoder"],
            text_encoder_2_lora_layers=layers["text_encoder_2"], unet_lora_adapter_metadata=meta["unet"],
            text_encoder_lora_adapter_metadata=meta["text_encoder"],
            text_encoder_2_lora_adapter_metadata=meta["text_encoder_2"], weight_name="lora.safetensors")
        shutil.copy(os.path.join(td, "lora.safetensors"), path)
    return mods


def without_metadata(src: str, dst: str) -> None:
    save_file(load_file(src), dst)


# ---------------------------------------------------------------------------------------------------------
# references
# ---------------------------------------------------------------------------------------------------------

def component_model(models, comp):
    return models[{"unet": "unet", "text_encoder": "te1", "text_encoder_2": "te2"}[comp]]


def check_injected(models, name: str, mods: dict, label: str) -> None:
    want = {k: v[2] for k, v in mods.items()}
    got = {}
    for comp in ("unet", "text_encoder", "text_encoder_2"):
        for n, m in component_model(models, comp).named_modules():
            if isinstance(m, BaseTunerLayer) and name in m.scaling:
                got[(comp, n)] = m.scaling[name]
    check(set(got) == set(want), f"{label}: diffusers injects exactly the {len(want)} LoRA modules of the file")
    bad = [(k, want[k], got[k]) for k in want if abs(want[k] - got[k]) > 1e-9]
    check(not bad, f"{label}: every injected layer's scale is the file's alpha/rank ({bad[:3]})")


def reference(files: list, label: str, expect_mods: list) -> "OrderedDict[str, torch.Tensor]":
    """Outputs after `load_lora_weights` + `set_adapters(weights)` for files [(path, weight)]."""
    models = base_models()
    pipe = pipeline(models)
    names = []
    for i, (path, _) in enumerate(files):
        name = f"style{i}"
        pipe.load_lora_weights(path, adapter_name=name)
        if expect_mods[i] is not None:
            check_injected(models, name, expect_mods[i], f"{label} file {i}")
        names.append(name)
    pipe.set_adapters(names, adapter_weights=[w for _, w in files])
    out = outputs(models)
    if len(files) == 1:
        fused_models = base_models()
        fp = pipeline(fused_models)
        fp.load_lora_weights(files[0][0], adapter_name="f")
        fp.fuse_lora(lora_scale=files[0][1], adapter_names=["f"])
        fp.unload_lora_weights()
        fused = outputs(fused_models)
        print("   fuse_lora vs set_adapters, max rel err:", {k: f"{rel(fused[k], out[k]):.1e}" for k in out})
        check(all(rel(fused[k], out[k]) < 5e-5 for k in out),
              f"{label}: set_adapters({files[0][1]}) == fuse_lora(lora_scale={files[0][1]}) (rel < 5e-5)")
    return out


def direct_merge(weighted_mods: list) -> "OrderedDict[str, torch.Tensor]":
    """W + sum of weight * scale * up@down, done by hand in float64 (models and inputs), so the comparison with
    diffusers' float32 result also measures the float32 noise floor of these fixtures."""
    models = {k: v.double() for k, v in base_models().items()}
    with torch.no_grad():
        for mods, weight in weighted_mods:
            for (comp, n), (down, up, scale) in mods.items():
                m = component_model(models, comp).get_submodule(n)
                m.weight += weight * scale * delta(down.double(), up.double())
    return outputs(models, torch.float64)


def generate(out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    print(f"diffusers {diffusers.__version__}, peft {peft.__version__}, transformers {transformers.__version__}, "
          f"torch {torch.__version__}")
    base = outputs(base_models())
    check(rel(base["unet"], UNET_IO["out"]) < 1e-6, "base UNet reproduces unet.io.safetensors `out`")
    for k in ("clip_l.penultimate", "clip_g.penultimate", "clip_g.text_embeds"):
        check(rel(base[k], CLIP_IO[k]) < 1e-5, f"base {k} reproduces clip_text.safetensors")

    kohya_path = os.path.join(out_dir, "style_kohya.safetensors")
    peft_path = os.path.join(out_dir, "style_peft.safetensors")
    kohya_sd, kohya_mods = make_kohya(base_models())
    save_file(kohya_sd, kohya_path, metadata={"ss_network_module": "networks.lora", "ss_base_model_version":
                                              "sdxl_base_v1-0"})
    peft_mods = make_peft(base_models(), peft_path)
    with safe_open(peft_path, "pt") as f:
        meta = f.metadata()
    check("lora_adapter_metadata" in meta, "the PEFT file carries diffusers' lora_adapter_metadata")
    nometa_mods = {k: (d, u, 1.0) for k, (d, u, _) in peft_mods.items()}

    expected = OrderedDict()
    with tempfile.TemporaryDirectory() as td:
        nometa = os.path.join(td, "nometa.safetensors")
        without_metadata(peft_path, nometa)
        cases = [
            ("kohya", [(kohya_path, WEIGHT)], [kohya_mods], [(kohya_mods, WEIGHT)]),
            ("peft", [(peft_path, WEIGHT)], [peft_mods], [(peft_mods, WEIGHT)]),
            ("peft_nometa", [(nometa, WEIGHT)], [None], [(nometa_mods, WEIGHT)]),
            ("mix", [(kohya_path, MIX[0]), (peft_path, MIX[1])], [kohya_mods, peft_mods],
             [(kohya_mods, MIX[0]), (peft_mods, MIX[1])]),
        ]
        for label, files, mods, merge in cases:
            print(f"\n== {label}")
            ref = reference(files, label, mods)
            by_hand = direct_merge(merge)
            errs = {k: rel(ref[k].double(), by_hand[k]) for k in ref}
            print("   diffusers (float32) vs by-hand float64 merge, max rel err:",
                  {k: f"{e:.1e}" for k, e in errs.items()})
            check(max(errs.values()) < 2e-5,
                  f"{label}: W + weight*(alpha/rank)*up@down by hand (float64) == diffusers (rel < 2e-5)")
            effect = min(rel(ref[k], base[k]) for k in ref)
            check(effect > MIN_EFFECT, f"{label}: the LoRA moves every output by > {MIN_EFFECT} (min {effect:.3f})")
            expected[f"unet.{label}"] = ref["unet"]
            if label in ("kohya", "peft"):
                for k in ("clip_l.penultimate", "clip_g.penultimate", "clip_g.text_embeds"):
                    expected[f"{k}.{label}"] = ref[k]
    save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(out_dir, "expected.safetensors"),
              metadata={"weight": str(WEIGHT), "mix": json.dumps(MIX), "diffusers": diffusers.__version__,
                        "peft": peft.__version__, "torch": torch.__version__.split("+")[0]})
    for f in os.listdir(out_dir):
        os.chmod(os.path.join(out_dir, f), 0o644)
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    print(f"\n{len(CHECKS)} self-checks passed; fixtures {total} bytes in {out_dir}")


def same_content(new: str, old: str) -> bool:
    """Same tensors (names, order, dtypes, bytes) and metadata. Not a byte comparison: safetensors writes the
    metadata entries from a hash map, so their order in the header changes from run to run."""
    if not os.path.exists(old):
        return False
    with safe_open(new, "pt") as a, safe_open(old, "pt") as b:
        if a.metadata() != b.metadata() or list(a.keys()) != list(b.keys()):
            return False
        return all(a.get_tensor(k).dtype == b.get_tensor(k).dtype and torch.equal(a.get_tensor(k), b.get_tensor(k))
                   for k in a.keys())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="regenerate into a temp folder and compare contents")
    args = ap.parse_args()
    if not args.check:
        generate(args.out)
        return 0
    with tempfile.TemporaryDirectory() as td:
        generate(td)
        bad = [f for f in sorted(os.listdir(td)) if not same_content(os.path.join(td, f), os.path.join(args.out, f))]
        print("--check:", "differs: " + ", ".join(bad) if bad else "all files identical")
        return 1 if bad else 0

if __name__ == "__main__":
    sys.exit(main())
