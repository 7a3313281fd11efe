#!/usr/bin/env bash
# Idempotent set-up: .venv with mmfusion-attacks (editable) with every extra ([all]: the text side) and its dev tools.
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
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[all,dev]"
  echo "$want" > "$stamp"
fi
# Offline nltk data for TextAttack: stopwords and WordNet 3.0 (from Debian's wordnet-base packages,
# fetched with `apt-get download`, no root) in <cache>/nltk_data, and TextAttack's post-install marker
# (docs/text-resources.md). Running this set-up is the opt-in to that fetch. Fast when prepared: the
# files are checked here without starting Python. A failed fetch warns, does not fail the set-up, and
# is retried only when the set-up changes (or by hand: .venv/bin/mmfusion-attacks text-resources --download).
nltk_dir="${MMFUSION_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mmfusion_attacks}/nltk_data"
ta_marker="${TA_CACHE_DIR:-$HOME/.cache/textattack}/post_install_check_3"
text_failed=.venv/.mmfusion-text-resources-failed
if [ -f "$nltk_dir/corpora/stopwords/english" ] && [ -f "$ta_marker" ] \
  && { [ -f "$nltk_dir/corpora/wordnet/lexnames" ] && [ -f "$nltk_dir/corpora/wordnet/data.noun" ] || [ -f "$nltk_dir/corpora/wordnet.zip" ]; }; then
  rm -f "$text_failed"
elif [ -f "$text_failed" ] && [ "$(cat "$text_failed")" = "$want" ]; then
  echo "warning: offline text resources incomplete (see: .venv/bin/mmfusion-attacks text-resources --download)" >&2
else
  echo "preparing offline nltk data for TextAttack (stopwords; WordNet via apt-get download)..." >&2
  if .venv/bin/mmfusion-attacks text-resources --download >&2; then
    rm -f "$text_failed"
  else
    echo "$want" > "$text_failed"
    echo "warning: could not prepare every text resource (above); text attacks that need them raise" \
      "MissingResourceError. Retry: .venv/bin/mmfusion-attacks text-resources --download" >&2
  fi
fi
# `import textattack` (the first line a TextAttack user writes) reads stopwords through nltk's own search
# path, which includes <venv>/share/nltk_data: expose the prepared folder there (a folder of the user's own
# at that place is left alone).
if [ -f "$nltk_dir/corpora/stopwords/english" ] && { [ -L .venv/share/nltk_data ] || [ ! -e .venv/share/nltk_data ]; }; then
  mkdir -p .venv/share && ln -sfn "$nltk_dir" .venv/share/nltk_data
fi
