#!/usr/bin/env bash
# Trains edgecam's plate recogniser from scratch: renders the plates, trains, and
# writes models/edgecam-plate-rec.onnx with its recipe (models/edgecam-plate-rec.json).
#
#   bash train/train.sh [ARGS for train/train.py]
#
# Installs what it needs on Debian 12: the fonts the renderer draws with, and a
# Python environment with torch, onnx, Pillow and numpy from PyPI (in
# target/train/venv; EDGECAM_TRAIN_VENV elsewhere). CPU only by default (about 50
# minutes on two cores, rendering included); the same command trains on a GPU where
# torch finds one.
set -euo pipefail
cd "$(dirname "$0")/.."
fonts=(fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 fonts-urw-base35 fonts-croscore
  fonts-liberation fonts-open-sans fonts-lato fonts-inter fonts-b612 fonts-league-spartan fonts-cantarell
  fonts-roboto-unhinted fonts-freefont-ttf python3-venv)
missing=()
for p in "${fonts[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "${missing[@]}"
fi
venv="${EDGECAM_TRAIN_VENV:-target/train/venv}"
if ! "$venv/bin/python" -c "import torch, onnx, PIL, numpy" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "torch==2.15.0" "onnx==1.23.2" "pillow==13.0.0" "numpy==2.4.6"
fi
exec "$venv/bin/python" train/train.py --out models/edgecam-plate-rec.onnx "$@"
