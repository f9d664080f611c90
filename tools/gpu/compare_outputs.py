"""Compares the tensor-check outputs of a device run (tools/gpu/run_checks.sh writes them to $OUT) with the
diffusers/transformers parity fixtures the CPU tests use, so the CUDA path (f32 and bf16, our fused kernels) is
checked against the same reference numbers as the CPU path.
    python tools/gpu/compare_outputs.py /work/.device/N     (a folder of outputs, or holding tensors.tar)
Prints max |difference| and that difference relative to max |reference| for every tensor; exits 1 when an f32
result is off by more than 1e-3 relative, a bf16 text-encoder or VAE result by more than 5e-2 (bf16 keeps 8 bits of
mantissa), or the bf16 UNet by more than 1.5x the error of diffusers' own UNet run in bf16 on the same inputs (the
yardstick, computed here on the CPU when torch and diffusers are importable; 7.5e-2 otherwise). The bf16 UNet's max
error moved between 4.6e-2 and 5.8e-2 across session 4's builds (one-GEMM projections, fused biases, the cuDNN
algorithm chosen by timing: each accumulates in its own order) while diffusers' own is 4.8e-2."""
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

FX = Path(__file__).resolve().parents[2] / "tests/fixtures/parity"
# (output file stem, output key) -> (fixture file, fixture key)
PAIRS = {
    ("unet", "out"): ("unet.io.safetensors", "out"),
    ("vae-decode", "decoded"): ("e2e_txt2img.safetensors", "decoded"),
    ("text-encoders", "prompt_embeds"): ("clip_text.safetensors", "prompt_embeds"),
    ("text-encoders", "text_encoder.penultimate"): ("clip_text.safetensors", "clip_l.penultimate"),
    ("text-encoders", "text_encoder_2.penultimate"): ("clip_text.safetensors", "clip_g.penultimate"),
    ("text-encoders", "pooled_prompt_embeds"): ("clip_text.safetensors", "clip_g.text_embeds"),
    ("unet-with-adapter", "out"): ("../storymaker/e2e.safetensors", "unet0.eps"),
}
TOL = {"f32": 1e-3, "bf16": 5e-2}


def diffusers_bf16_unet_error() -> tuple[str, float | None]:
    """The yardstick for the bf16 rows: diffusers' own UNet run in bf16 (on the CPU) against the same f32 fixture."""
    try:
        import json

        import torch
        from diffusers import UNet2DConditionModel
        from safetensors.torch import load_file as load_torch
    except ImportError as e:
        return f"(no diffusers bf16 yardstick: {e})", None
    unet = UNet2DConditionModel.from_config(json.loads((FX / "unet.config.json").read_text()))
    unet.load_state_dict(load_torch(str(FX / "unet.weights.safetensors")))
    unet = unet.eval().to(torch.bfloat16)
    io = load_torch(str(FX / "unet.io.safetensors"))
    bf = lambda k: io[k].to(torch.bfloat16)  # noqa: E731
    with torch.no_grad():
        out = unet(bf("sample"), io["timesteps"], encoder_hidden_states=bf("encoder_hidden_states"),
                   added_cond_kwargs={"text_embeds": bf("text_embeds"), "time_ids": bf("time_ids")}).sample
    ref = io["out"].double().numpy()
    diff = np.abs(out.double().numpy() - ref)
    rel = diff.max() / np.abs(ref).max()
    return (f"yardstick: diffusers' own UNet in bf16 (CPU) vs the same fixture: max|diff| {diff.max():.3e} "
            f"relative {rel:.2e}, mean relative {diff.mean() / np.abs(ref).mean():.2e}"), float(rel)


def main(folder: str) -> int:
    failures = 0
    # run_checks.sh packs the outputs into tensors.tar (a device call brings back at most 8 files).
    tar = Path(folder) / "tensors.tar" if Path(folder).is_dir() else Path(folder)
    if tar.suffix == ".tar" and tar.exists():
        import tarfile
        import tempfile

        folder = tempfile.mkdtemp()
        with tarfile.open(tar) as t:
            t.extractall(folder, filter="data")
    yardstick, unet_bf16_rel = diffusers_bf16_unet_error()
    for dt, tol in TOL.items():
        for (stem, key), (fx, fkey) in PAIRS.items():
            if stem.startswith("unet") and dt == "bf16":
                tol = 1.5 * unet_bf16_rel if unet_bf16_rel is not None else 7.5e-2
            path = Path(folder) / f"{stem}.{dt}.safetensors"
            if not path.exists():
                print(f"{stem}.{dt}: MISSING")
                failures += 1
                continue
            got = load_file(str(path))[key].astype(np.float64)
            ref = load_file(str(FX / fx))[fkey].astype(np.float64)
            diff = float(np.abs(got - ref).max())
            rel = diff / max(float(np.abs(ref).max()), 1e-12)
            ok = rel <= tol
            failures += not ok
            print(f"{stem:14} {key:28} {dt:5} max|diff| {diff:.3e} relative {rel:.2e} {'ok' if ok else 'FAIL'}")
    unet_bf16 = Path(folder) / "unet.bf16.safetensors"
    if unet_bf16.exists():
        got = load_file(str(unet_bf16))["out"].astype(np.float64)
        ref = load_file(str(FX / "unet.io.safetensors"))["out"].astype(np.float64)
        print(f"ours: UNet bf16 mean relative {np.abs(got - ref).mean() / np.abs(ref).mean():.2e}")
        print(yardstick)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "."))
