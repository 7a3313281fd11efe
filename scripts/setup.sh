#!/usr/bin/env bash
# Idempotent set-up: .venv with mmfusion-attacks (editable) and its dev tools.
# Re-installs only when pyproject.toml changed since the last successful set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "mmfusion-attacks needs Python >= 3.10" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv 2>/dev/null || { "$PY" -m pip install -q --user virtualenv && "$PY" -m virtualenv -q .venv; }
fi
stamp=.venv/.mmfusion-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setting up .venv (first run downloads torch and the toolkits: a few minutes)..." >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
  echo "$want" > "$stamp"
fi
