#!/usr/bin/env bash
# Set up (idempotent) and run the main job on the embedded SYNTHETIC default. Extra arguments go to
# `mmfusion-attacks demo` (e.g. --toolkit art --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mmfusion-attacks demo --out runs/demo "$@"
