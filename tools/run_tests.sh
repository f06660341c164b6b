#!/usr/bin/env bash
# Set up .venv and run the whole test suite (unit tests + end-to-end CLI runs on generated tiny data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest "$@"
