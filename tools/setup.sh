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
if [ -z "${PINNED:-}" ] && .venv/bin/python - <<'PY' 2>/dev/null
import pathlib, ssl_inpaint, pytest, torchvision, timm, pycocotools, sklearn, tensorboard, typer, cv2, skimage, matplotlib  # noqa: F401
assert pathlib.Path(ssl_inpaint.__file__).resolve().parents[1] == pathlib.Path.cwd().resolve()
PY
then
  exit 0
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]" ${PINNED:+-c constraints.txt}
