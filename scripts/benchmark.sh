#!/usr/bin/env bash
# Set up (idempotent) and run the main job: the default study spec (every family on the embedded
# SYNTHETIC defaults: RGB-T per sensor, image+text per modality and combined, the joint worst case over
# modality subsets), resumable, ending with one combined report. Options pass to `mmfusion-attacks run`
# (a spec file of your own, --out, --device, --only; see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mmfusion-attacks run "$@"
