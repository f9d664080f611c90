#!/usr/bin/env bash
# One prepared run on the lent GPU machine (see shared/cuda/README.md): CUDA correctness of every
# SDXL component and of the UNet with the StoryMaker adapter on the tiny parity fixtures (f32 and
# bf16; outputs in $OUT/tensors.tar, compared here by tools/gpu/compare_outputs.py), our fused
# kernels against the reference paths (bench kernels), then the 1024x1024 CFG UNet step time (fused
# with a per-layer profile, fused with the adapter, candle ops) next to diffusers eager and compiled.
#   bash tools/gpu/run_checks.sh .gpu/storymaker
set -uo pipefail
bin=${1:-.gpu/storymaker}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
# Everything also goes to $OUT/run.log, which comes back even when the call is cut off.
exec > >(tee "$OUT/run.log") 2>&1
export PYTHONUNBUFFERED=1
FX=tests/fixtures/parity
G=.gpu/sdxl-tiny
# The tiny models in a diffusers folder layout.
mkdir -p $G/unet $G/vae $G/text_encoder $G/text_encoder_2
cp $FX/unet.config.json $G/unet/config.json; cp $FX/unet.weights.safetensors $G/unet/diffusion_pytorch_model.safetensors
cp $FX/vae.config.json $G/vae/config.json; cp $FX/vae.weights.safetensors $G/vae/diffusion_pytorch_model.safetensors
cp $FX/clip_l.config.json $G/text_encoder/config.json; cp $FX/clip_l.weights.safetensors $G/text_encoder/model.safetensors
cp $FX/clip_g.config.json $G/text_encoder_2/config.json; cp $FX/clip_g.weights.safetensors $G/text_encoder_2/model.safetensors
# The outputs go into one tar ($OUT may bring back at most 8 files): tools/gpu/compare_outputs.py reads it.
T=$(mktemp -d)
for dt in f32 bf16; do
  for c in text-encoders unet vae-decode unet-with-adapter; do
    w=$G; extra=()
    case $c in
      unet) w=$G/unet ;;
      vae-decode) w=$G/vae ;;
      unet-with-adapter) w=$G/unet; extra=(--adapter tests/fixtures/storymaker/mask.bin) ;;
    esac
    timeout 60 bash .gpu/gpu-run.sh "$bin" tensor-check $c --device cuda --dtype $dt --weights $w "${extra[@]}" \
      --inputs .gpu/inputs/$c.safetensors --out "$T/$c.$dt.safetensors" 2>&1 | grep -E "wrote|error|Error|panic" | tail -3
  done
done
tar -C "$T" -cf "$OUT/tensors.tar" . && rm -rf "$T"
echo "== fused kernels vs reference paths (accuracy vs f32, time)"
timeout 120 bash .gpu/gpu-run.sh "$bin" bench kernels --dtype bf16 --runs 20 2>&1 | grep -E "ms|tolerance|rror" | tail -40
echo "== storymaker bench (candle, ours): fused kernels, then the candle-ops paths in the same run"
for opts in "fused --profile 2" "fused --adapter 60" "reference"; do
  # shellcheck disable=SC2086
  timeout 150 bash .gpu/gpu-run.sh "$bin" bench unet --size 1024 --batch 2 --dtype bf16 --steps 20 --device cuda \
    --kernels $opts 2>&1 | sed -n '/^unet:/,$p'
done
[ -n "${SKIP_DIFFUSERS:-}" ] && exit 0
echo "== diffusers eager (same GPU, same shapes)"
PY=""
for p in python3 /opt/torch/.venv/bin/python3 python; do
  if "$p" -c "import torch" 2>/dev/null; then PY=$p; break; fi
done
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)"
# The carried wheels (see prepare.sh) go into a private folder; nothing is installed system-wide.
[ -d .gpu/py ] || "$PY" -m pip install -q --no-index --no-deps --target .gpu/py .gpu/wheels/*.whl 2>&1 | tail -2
PYTHONPATH=.gpu/py:${PYTHONPATH:-} timeout 240 "$PY" tools/gpu/diffusers_unet_bench.py --size 1024 --batch 2 --dtype bf16 --steps 20 --compile 2>&1 | grep "ms/step"
nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
