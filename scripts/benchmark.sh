#!/usr/bin/env bash
# Set up (idempotent) and run the main job: the RGB-T segmentation benchmark on the embedded
# SYNTHETIC default (or real data: pass --model/--weights/--data-root/--images, see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python benchmarks/rgbt_segmentation.py "$@"
