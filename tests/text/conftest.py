"""Session fixtures for the text tests: a Debian-layout WordNet folder and the default nltk data dir
prepared from local sources (what ``scripts/setup.sh`` does), TextAttack imported once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mmfusion_attacks.text.resources import (
    DEBIAN_WORDNET_DIR,
    DEBIAN_WORDNET_PACKAGES,
    default_data_dir,
    prepare_text_resources,
)

#: Debian ships these; nltk's lexnames, our README and source stamp are not part of its layout
_NOT_DEBIAN = {"lexnames", "README", "LICENSE", "citation.bib", ".mmfusion-source.json"}


def _debian_layout_from(folder: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        if f.is_file() and f.name not in _NOT_DEBIAN:
            shutil.copyfile(f, dest / f.name)
    return dest


_DEBIAN: list = []  # [(path or None, reason)] once computed


def _make_debian_layout(tmp_path_factory) -> tuple[Path | None, str]:
    if _DEBIAN:
        return _DEBIAN[0]
    _DEBIAN.append(_debian_layout(tmp_path_factory))
    return _DEBIAN[0]


def _debian_layout(tmp_path_factory) -> tuple[Path | None, str]:
    if (DEBIAN_WORDNET_DIR / "data.noun").is_file():
        return DEBIAN_WORDNET_DIR, "installed"
    dest = tmp_path_factory.mktemp("debian") / "usr" / "share" / "wordnet"
    prepared = default_data_dir() / "corpora" / "wordnet"
    if (prepared / "data.noun").is_file():
        return _debian_layout_from(prepared, dest), "rebuilt from the prepared WordNet"
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if not apt or not dpkg:
        return None, "no Debian WordNet: not installed, none prepared, and no apt-get / dpkg-deb"
    work = tmp_path_factory.mktemp("debs")
    try:
        r = subprocess.run([apt, "download", *DEBIAN_WORDNET_PACKAGES], cwd=work, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"apt-get download {' '.join(DEBIAN_WORDNET_PACKAGES)} impossible: {exc}"
    debs = sorted(work.glob("*.deb"))
    if r.returncode != 0 or not debs:
        return None, f"apt-get download {' '.join(DEBIAN_WORDNET_PACKAGES)} failed (no network?): {r.stderr.strip()[-200:]}"
    root = work / "root"
    for deb in debs:
        subprocess.run([dpkg, "-x", str(deb), str(root)], check=True, timeout=120)
    return root / "usr" / "share" / "wordnet", "apt-get download"


@pytest.fixture(scope="session")
def debian_wordnet_dir(tmp_path_factory) -> Path:
    """A folder laid out like Debian's /usr/share/wordnet (no lexnames): the real one if installed,
    else rebuilt from an already prepared WordNet, else from ``apt-get download`` + ``dpkg-deb -x``."""
    path, reason = _make_debian_layout(tmp_path_factory)
    if path is None:
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def text_resources():
    """The default nltk data dir, as scripts/setup.sh prepares it (scripts/test.sh runs it first):
    from local sources only: tests never fetch (set-up is the opt-in to that); tests needing WordNet
    are skipped, saying so, when it is missing."""
    return prepare_text_resources(optional=False)


@pytest.fixture(scope="session")
def wordnet_ready(text_resources):
    if not text_resources.wordnet.available:
        pytest.skip(f"WordNet not available offline: {text_resources.wordnet.detail}")
    from mmfusion_attacks.text.resources import require_wordnet

    require_wordnet()
    return text_resources.wordnet


@pytest.fixture(scope="session")
def textattack_module(text_resources):
    from mmfusion_attacks.text.resources import import_textattack

    return import_textattack()


#: 20 words; several with WordNet synonyms; stopwords; a caption-like text; a duplicate
SAMPLE_TEXTS = [
    "The quick brown fox jumps over the lazy dog while a happy child watches the bright sunset near the river",
    "A man is riding a horse on the beach.",
    "Chest x-ray shows mild cardiomegaly without acute pulmonary edema or pleural effusion.",
    "It was a good day",
    "The quick brown fox jumps over the lazy dog while a happy child watches the bright sunset near the river",
]


@pytest.fixture(scope="session")
def sample_texts() -> list[str]:
    return list(SAMPLE_TEXTS)


_FRESH = textwrap.dedent(
    """
    import json, os, socket, sys
    attempts = []
    def connect(self, address):
        attempts.append(repr(address))
        raise OSError("network disabled in this test")
    socket.socket.connect = connect
    from mmfusion_attacks.text.resources import import_textattack
    ta = import_textattack()
    import huggingface_hub.constants as hub
    out = {
        "env": {k: os.environ.get(k) for k in ["HF_HOME", "XDG_CACHE_HOME", "TFHUB_CACHE_DIR", "PYTORCH_TRANSFORMERS_CACHE", "TA_CACHE_DIR"]},
        "hub": hub.HF_HOME,
        "marker": os.path.isfile(os.path.join(os.environ["TA_CACHE_DIR"], "post_install_check_3")),
        "ta_cache": ta.shared.utils.install.TEXTATTACK_CACHE_DIR,
        "attempts": attempts,
        "hashseed": os.environ.get("PYTHONHASHSEED"),
    }
    if sys.argv[1] == "wordnet":
        from mmfusion_attacks.text.augment import SynonymSubstitution, WordDeletion
        texts = json.loads(sys.argv[2])
        out["syn"] = SynonymSubstitution(0.4, seed=3)(texts)
        out["del"] = WordDeletion(0.5, seed=3)(texts)
    print("RESULT" + json.dumps(out))
    """
)


class _FreshProcess:
    def __init__(self, proc: subprocess.Popen, tmp: Path) -> None:
        self.proc, self.tmp = proc, tmp

    def result(self) -> tuple[dict, str, Path]:
        stdout, stderr = self.proc.communicate(timeout=300)
        assert self.proc.returncode == 0, stderr[-3000:]
        return json.loads(stdout.split("RESULT", 1)[1]), stderr, self.tmp


@pytest.fixture(scope="session", autouse=True)
def fresh_process(tmp_path_factory, text_resources):
    """A fresh Python process importing TextAttack through import_textattack (with TA_CACHE_DIR and
    HF_HOME set, XDG_CACHE_HOME & co. unset, another PYTHONHASHSEED) and running the seeded
    augmenters; started when the session starts so it runs beside the other tests."""
    tmp = tmp_path_factory.mktemp("fresh")
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "TFHUB_CACHE_DIR", "PYTORCH_TRANSFORMERS_CACHE")}
    env.update(TA_CACHE_DIR=str(tmp / "ta"), HF_HOME=str(tmp / "user_hf"), PYTHONHASHSEED="12345")
    mode = "wordnet" if text_resources.wordnet.available else "plain"
    proc = subprocess.Popen(
        [sys.executable, "-c", _FRESH, mode, json.dumps(SAMPLE_TEXTS)],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield _FreshProcess(proc, tmp)
    if proc.poll() is None:
        proc.kill()
        proc.communicate()
