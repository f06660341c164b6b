#!/usr/bin/env bash
# Create .venv (once) and install ssl_inpaint into it, editable, with the test dependencies.
# Skipped when .venv already imports ssl_inpaint from this checkout with its dependencies.
# PINNED=1 installs (or moves .venv to) the exact versions in constraints.txt, the stack the docs' photo
# study ran on.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if PINNED=${PINNED:-0} .venv/bin/python - <<'PY' 2>/dev/null
import importlib.metadata, os, pathlib, ssl_inpaint, pytest, torchvision, timm, pycocotools, sklearn, tensorboard, typer, cv2, skimage, matplotlib  # noqa: F401
assert pathlib.Path(ssl_inpaint.__file__).resolve().parents[1] == pathlib.Path.cwd().resolve()
if os.environ["PINNED"] == "1":  # and every version as constraints.txt pins it
    pins = [line.split("#")[0].strip().split("==") for line in open("constraints.txt")]
    assert all(importlib.metadata.version(name) == version for name, version in (p for p in pins if len(p) == 2))
PY
then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if [ "${PINNED:-0}" = 1 ]; then pins=(-c constraints.txt); else pins=(); fi
.venv/bin/python -m pip install --quiet -e ".[dev]" "${pins[@]}"
