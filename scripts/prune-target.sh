#!/usr/bin/env bash
# Keeps a persistent CARGO_TARGET_DIR from filling the disk across many builds: drops the
# incremental caches and, for every test/bin executable in deps/, all but the newest build
# (each is ~1 GB with debug info; cargo rebuilds what it needs).
set -euo pipefail
dir="${1:-${CARGO_TARGET_DIR:-target}}/debug"
[ -d "$dir" ] || exit 0
rm -rf "$dir/incremental"
[ -d "$dir/deps" ] || exit 0
cd "$dir/deps"
# Executables are the files without an extension named <name>-<16 hex>; newest first per name.
ls -t 2>/dev/null | grep -E '^[A-Za-z0-9_]+-[0-9a-f]{16}$' | awk -F- '{name=$0; sub(/-[0-9a-f]{16}$/, "", name); if (seen[name]++) print $0}' \
  | while read -r f; do rm -f -- "$f"; done
