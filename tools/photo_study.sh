#!/usr/bin/env bash
# The completion study of docs/results.md: build the photo dataset from the Debian wallpaper packages
# (train/test split by source picture), pretrain the inpainting generator on the training pictures,
# then `ssl evaluate` it against classical inpainting on the held-out pictures, for a 64x64 centre
# hole and for random 32-48 px rectangles. A finished pretrain run is reused (pretrain also resumes
# an interrupted one). About 45 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh

if [ ! -d /usr/share/wallpapers/Path ] || [ ! -d /usr/share/backgrounds/mate/nature ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages plasma-workspace-wallpapers mate-backgrounds ..."
    (apt-get install -y -q plasma-workspace-wallpapers mate-backgrounds \
      || { apt-get update -q && apt-get install -y -q plasma-workspace-wallpapers mate-backgrounds; }) >/dev/null
  else
    echo "error: the photographs come from the Debian packages plasma-workspace-wallpapers and mate-backgrounds;" >&2
    echo "install them (sudo apt-get install plasma-workspace-wallpapers mate-backgrounds) and rerun" >&2
    exit 2
  fi
fi

SSL=.venv/bin/ssl
[ -d data/photos/test ] || .venv/bin/python tools/make_photo_dataset.py --out data/photos
if [ -f runs/pretrain_photos_128/encoder.pt ]; then
  echo "reusing runs/pretrain_photos_128 (delete it to pretrain again)"
else
  $SSL pretrain --recipe recipes/pretrain_photos_128.yaml
fi
# --overwrite: a rerun after a new pretext replaces the earlier scores instead of stopping at them
$SSL evaluate --recipe recipes/evaluate_photos_centre64.yaml --overwrite
$SSL evaluate --recipe recipes/evaluate_photos_rect32_48.yaml --overwrite
echo "TensorBoard: .venv/bin/tensorboard --logdir runs"
