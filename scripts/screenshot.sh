#!/usr/bin/env bash
# Runs the real app window under Xvfb (software Vulkan through lavapipe) with a fresh home, so it
# opens the bundled sample story, and saves a screenshot. Fails if the window is blank.
#
#   scripts/screenshot.sh [OUT.png] [BINARY]
#
# Needs: xvfb xauth x11-utils xdotool imagemagick libvulkan1 mesa-vulkan-drivers (see .ci/run).
set -euo pipefail
out=${1:-docs/screenshot.png}
bin=${2:-${CARGO_TARGET_DIR:-target}/debug/storymaker}
[ -x "$bin" ] || { echo "screenshot: no binary at $bin (cargo build first)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
work=$(mktemp -d)
trap 'kill ${app:-} ${xvfb:-} 2>/dev/null || true; rm -rf "$work"' EXIT
display=:$(( 90 + RANDOM % 9 ))
Xvfb "$display" -screen 0 1280x800x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
xvfb=$!
sleep 1
mkdir -p "$work/runtime" && chmod 700 "$work/runtime"
# A fresh home: first run writes and opens the sample story.
HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" XDG_DATA_HOME="$work/home/.local/share" \
  XDG_RUNTIME_DIR="$work/runtime" DISPLAY="$display" WGPU_BACKEND=${WGPU_BACKEND:-vulkan} \
  "$bin" >"$work/app.log" 2>&1 &
app=$!
# Wait for the window to map (up to 60 s: the first lavapipe pipeline compile is slow).
for _ in $(seq 1 60); do
  if DISPLAY="$display" xdotool search --name "StoryMaker Studio" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$app" 2>/dev/null; then echo "screenshot: the app exited:" >&2; cat "$work/app.log" >&2; exit 1; fi
  sleep 1
done
sleep 6
DISPLAY="$display" import -window root "$out"
sd=$(convert "$out" -format '%[fx:standard_deviation]' info:)
echo "screenshot: $out (pixel standard deviation $sd)"
if ! awk -v s="$sd" 'BEGIN { exit !(s > 0.01) }'; then
  echo "screenshot: the window looks blank" >&2
  cat "$work/app.log" >&2
  exit 1
fi
