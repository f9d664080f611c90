#!/usr/bin/env bash
# Assembles .gpu/ (ignored by git) for one prepared device run: the CUDA binary (gzipped: its
# embedded PTX makes it ~50 MB, over the 64 MiB transfer limit with the tree), the tensor-check
# inputs from the parity fixtures, gpu-run.sh, and the wheels diffusers needs on the device
# (its torch env: Python 3.12, an older transformers that needs huggingface_hub < 2).
# Build the binary first with tools/gpu/build-cuda.sh (cuda + cudnn features, our kernels).
#   bash tools/gpu/prepare.sh [CUDA_TARGET_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${1:-/root/.cache/storymaker-cuda-target}
py=${PYTHON:-/root/.cache/parity-venv/bin/python}
mkdir -p .gpu/wheels .gpu/inputs
grep -q '^/.gpu/' .gitignore || echo '/.gpu/' >> .gitignore
cp ../shared/cuda/gpu-run.sh .gpu/
strip -o .gpu/storymaker.bin "$target/release/storymaker" && gzip -9 -c .gpu/storymaker.bin > .gpu/storymaker.gz && rm .gpu/storymaker.bin
plat=(--python-version 312 --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux_2_28_x86_64 --platform any)
tmp=$(mktemp -d)
"$py" -m pip download -q diffusers==0.42.1 "huggingface_hub>=1.5,<2" "${plat[@]}" -d "$tmp"
# Only what the device image lacks or has too old (its package list: the device tool's KINDS.md); the rest of
# diffusers' dependencies are there, and the whole tree must stay under the 64 MiB a device call carries.
rm -f .gpu/wheels/*.whl
for f in "$tmp"/*.whl; do
  case $(basename "$f") in diffusers-*|huggingface_hub-1*|importlib_metadata-*|lazy_importer-*|safetensors-*) cp "$f" .gpu/wheels/;; esac
done
rm -rf "$tmp"
"$py" - <<'PY'
from safetensors.torch import load_file, save_file
fx = 'tests/fixtures/parity/'
c = load_file(fx + 'clip_text.safetensors'); e = load_file(fx + 'e2e_txt2img.safetensors'); u = load_file(fx + 'unet.io.safetensors')
save_file({'input_ids_1': c['clip_l.input_ids'].contiguous(), 'input_ids_2': c['clip_g.input_ids'].contiguous()}, '.gpu/inputs/text-encoders.safetensors')
save_file({k: u[k].contiguous() for k in ['sample', 'timesteps', 'encoder_hidden_states', 'text_embeds', 'time_ids']}, '.gpu/inputs/unet.safetensors')
save_file({'latents': e['final_latents'].contiguous()}, '.gpu/inputs/vae-decode.safetensors')
s = load_file('tests/fixtures/storymaker/e2e.safetensors')
save_file({'sample': s['unet0.sample'].contiguous(), 'timesteps': s['unet0.timestep'].reshape(-1).expand(2).contiguous(),
           'encoder_hidden_states': s['unet0.context'].contiguous(), 'text_embeds': s['unet0.text_embeds'].contiguous(),
           'time_ids': s['unet0.time_ids'].contiguous()}, '.gpu/inputs/unet-with-adapter.safetensors')
PY
du -sh .gpu
echo "device run: carry [\".gpu\"], command: gunzip -c .gpu/storymaker.gz > .gpu/storymaker && chmod +x .gpu/storymaker && bash tools/gpu/run_checks.sh .gpu/storymaker"
