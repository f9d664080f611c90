#!/usr/bin/env bash
# Installs what is missing, then runs StoryMaker Studio (the sample story opens on first run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
exec cargo run --release -- "$@"
