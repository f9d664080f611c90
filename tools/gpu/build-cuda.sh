#!/usr/bin/env bash
# Builds the GPU binary here (no GPU, no CUDA from apt): the verified recipe of shared/cuda/README.md (nvcc 13.0
# from PyPI, link stubs) plus a link-time stub for cuDNN, because the `cudnn` feature (src/kernels/conv.rs) links
# libcudnn.so.9 (the GPU machine has the real one in its torch site-packages; gpu-run.sh finds it).
#   bash tools/gpu/build-cuda.sh [features]        default features: cudnn (implies cuda)
# Output: $CARGO_TARGET_DIR/release/storymaker (default target dir /root/.cache/storymaker-cuda-target), then
# bash tools/gpu/prepare.sh packs it for the device run.
set -euo pipefail
cd "$(dirname "$0")/../.."
features=${1:-cudnn}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/root/.cache/storymaker-cuda-target}
bash ../shared/cuda/setup-cuda13.sh >/dev/null
# shellcheck disable=SC1091
source ../shared/cuda/env-cuda13.sh >/dev/null
stubs="${CUDA13_PREFIX:-/tmp/cuda13/site}/nvidia/cu13/lib/stubs"
if [[ $features == *cudnn* && ! -e $stubs/libcudnn.so ]]; then
  src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort -V | tail -1)
  {
    echo "/* generated stub: link-time only; never loaded (the real libcudnn.so.9 is on the GPU machine) */"
    grep -oE '^\s+fn (cudnn[A-Za-z0-9_]+)\(' "$src/src/cudnn/sys/mod.rs" | sed -E 's/^\s+fn //; s/\($//' | sort -u \
      | while read -r f; do echo "int $f(void){return 999;}"; done
  } > "$stubs/libcudnn_stub.c"
  gcc -shared -fPIC -O0 -Wl,-soname,libcudnn.so.9 -o "$stubs/libcudnn.so" "$stubs/libcudnn_stub.c"
fi
cargo build --release --no-default-features --features "$features" --bin storymaker
ls -l "$CARGO_TARGET_DIR/release/storymaker"
