#!/usr/bin/env bash
# Installs what is missing, then runs every test (CPU only, headless: no GPU, no display needed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/fetch-test-models.sh
cargo test --all-targets "$@"
