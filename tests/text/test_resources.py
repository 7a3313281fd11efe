"""Offline nltk data for TextAttack: each source, idempotence, the marker, the environment, failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nltk
import pytest

from mmfusion_attacks.cli import main as cli_main
from mmfusion_attacks.errors import MissingResourceError
from mmfusion_attacks.text import resources
from mmfusion_attacks.text.resources import (
    TEXTATTACK_MARKER,
    WORDNET_LEXNAMES,
    prepare_text_resources,
    require_stopwords,
    require_wordnet,
)


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """Each test: its own TextAttack cache dir and a private copy of nltk's search path."""
    monkeypatch.setenv("TA_CACHE_DIR", str(tmp_path / "ta_cache"))
    monkeypatch.setattr(nltk.data, "path", list(nltk.data.path))


def _no_nltk_install(monkeypatch, tmp_path):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty_nltk")])


def test_lexnames_table_is_wordnet_3():
    rows = [line.split("\t") for line in WORDNET_LEXNAMES.splitlines()]
    assert len(rows) == 45
    assert [int(r[0]) for r in rows] == list(range(45))
    assert rows[3][1] == "noun.Tops" and rows[29][1] == "verb.body" and rows[44] == ["44", "adj.ppl", "3"]
    cats = {r[1].split(".")[0]: r[2] for r in rows}
    assert cats == {"adj": "3", "adv": "4", "noun": "1", "verb": "2"}


def test_sklearn_stopwords_and_debian_wordnet(monkeypatch, tmp_path, debian_wordnet_dir):
    _no_nltk_install(monkeypatch, tmp_path)
    data = tmp_path / "nltk_data"
    res = prepare_text_resources(data_dir=data, debian_dir=debian_wordnet_dir, optional=False)
    assert res.ok, str(res)
    assert res.stopwords.source == "scikit-learn list" and "318 words" in res.stopwords.detail
    words = (data / "corpora/stopwords/english").read_text().split()
    assert len(words) == 318 and "the" in words
    assert res.wordnet.source == "debian" and res.wordnet.path == data / "corpora/wordnet"
    assert (data / "corpora/wordnet/lexnames").read_text() == WORDNET_LEXNAMES
    assert res.marker.available and (tmp_path / "ta_cache" / TEXTATTACK_MARKER).is_file()
    assert nltk.data.path[0] == str(data)  # nltk now finds it first
    # nltk reads it (a fresh reader: the global `wordnet` loader may already point elsewhere)
    from nltk.corpus.reader import WordNetCorpusReader

    with pytest.warns(UserWarning, match="multilingual"):  # no omw reader given: expected
        wn = WordNetCorpusReader(str(data / "corpora/wordnet"), None)
    assert wn.synsets("happy") and wn.get_version() == "3.0"
    assert {lemma.name() for s in wn.synsets("car") for lemma in s.lemmas()} >= {"auto", "automobile"}
    # idempotent and fast: nothing is rebuilt
    mtime = (data / "corpora/wordnet/data.noun").stat().st_mtime_ns
    t = time.perf_counter()
    again = prepare_text_resources(data_dir=data, debian_dir=debian_wordnet_dir, optional=False)
    assert time.perf_counter() - t < 1.0
    assert again.stopwords.source == "scikit-learn list" and again.wordnet.source == "debian"
    assert (data / "corpora/wordnet/data.noun").stat().st_mtime_ns == mtime
    assert not [p for p in (data / "corpora").iterdir() if p.name.startswith(".")]  # no staging left over


def test_staging_is_atomic_and_first_finisher_wins(tmp_path):
    target = tmp_path / "corpora" / "thing"
    with resources._staging(target) as tmp:
        (tmp / "a").write_text("ours")
        target.mkdir()  # another process finished first
        (target / "b").write_text("theirs")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    with resources._staging(target) as tmp:  # existed before: replaced (an incomplete copy, an upgrade)
        (tmp / "c").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    with pytest.raises(RuntimeError), resources._staging(target) as tmp:
        (tmp / "d").write_text("half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in target.iterdir()) == ["c"]
    assert [p.name for p in target.parent.iterdir()] == ["thing"]  # no staging folders left


def test_existing_nltk_install_is_preferred(monkeypatch, tmp_path, debian_wordnet_dir):
    install = tmp_path / "user_nltk"
    (install / "corpora/stopwords").mkdir(parents=True)
    (install / "corpora/stopwords/english").write_text("i\nme\nmy\nthe\n")
    wn = install / "corpora/wordnet"
    wn.mkdir(parents=True)
    for f in debian_wordnet_dir.iterdir():
        if f.is_file():
            (wn / f.name).symlink_to(f)
    (wn / "lexnames").write_text(WORDNET_LEXNAMES)
    monkeypatch.setattr(nltk.data, "path", [str(install)])
    data = tmp_path / "nltk_data"
    res = prepare_text_resources(data_dir=data, debian_dir=tmp_path / "no_debian", optional=False)
    assert res.stopwords.source == "nltk install" and res.wordnet.source == "nltk install", str(res)
    assert (data / "corpora/stopwords/english").read_text().split() == ["i", "me", "my", "the"]
    assert (data / "corpora/wordnet/data.noun").is_file() and not (data / "corpora/wordnet/data.noun").is_symlink()


def test_nltk_download_route(monkeypatch, tmp_path, debian_wordnet_dir):
    """download=True on a machine with internet: nltk.download (mocked: it writes what nltk would, a
    stopwords folder and wordnet.zip) into a temporary folder, copied atomically from there."""
    import zipfile

    _no_nltk_install(monkeypatch, tmp_path)
    calls = []

    def fake_download(package, target):
        calls.append(package)
        if package == "stopwords":
            (target / "corpora/stopwords").mkdir(parents=True)
            (target / "corpora/stopwords/english").write_text("a\nthe\n")
            return True, ""
        if package == "wordnet":
            (target / "corpora").mkdir(parents=True)
            with zipfile.ZipFile(target / "corpora/wordnet.zip", "w", zipfile.ZIP_STORED) as zf:
                zf.writestr("wordnet/", "")  # nltk's zips list their folder
                for f in debian_wordnet_dir.iterdir():
                    zf.write(f, f"wordnet/{f.name}")
                zf.writestr("wordnet/lexnames", WORDNET_LEXNAMES)
            return True, ""
        return False, "offline"

    monkeypatch.setattr(resources, "_nltk_download", fake_download)
    monkeypatch.setattr(resources, "_apt_download_wordnet", lambda d, tried: tried.append("apt mocked away"))
    data = tmp_path / "d"
    res = prepare_text_resources(data_dir=data, download=True, debian_dir=tmp_path / "none")
    assert calls[:2] == ["stopwords", "wordnet"]
    assert res.stopwords.source == "nltk.download" and (data / "corpora/stopwords/english").read_text().split() == ["a", "the"]
    assert res.wordnet.source == "nltk.download" and (data / "corpora/wordnet/data.noun").is_file()
    assert (data / "corpora/wordnet/lexnames").read_text() == WORDNET_LEXNAMES
    assert sorted(p.name for p in (data / "corpora").iterdir()) == ["stopwords", "wordnet"]
    assert not [p for p in data.iterdir() if p.name.startswith(".")]  # temporary download folders removed
    assert [r.name for r in res.optional] == list(resources.OPTIONAL_NLTK_PACKAGES)
    assert not any(r.available for r in res.optional) and "offline" in res.optional[0].detail


def test_nothing_fetchable(monkeypatch, tmp_path):
    _no_nltk_install(monkeypatch, tmp_path)
    monkeypatch.setattr(resources, "_nltk_download", lambda package, target: (False, "offline"))
    monkeypatch.setattr(resources, "_apt_download_wordnet", lambda d, tried: tried.append("apt mocked away"))
    res = prepare_text_resources(data_dir=tmp_path / "d", download=True, debian_dir=tmp_path / "none", optional=False)
    assert res.stopwords.source == "scikit-learn list" and not res.wordnet.available
    assert "apt mocked away" in res.wordnet.detail and "nltk.download('wordnet') failed: offline" in res.wordnet.detail
    assert "text-resources --download" in res.wordnet.detail


def test_apt_download_route(monkeypatch, tmp_path):
    """download=True without an installed WordNet: apt-get download + dpkg-deb -x. Uses the network, so it
    runs only when MMFUSION_NETWORK_TESTS=1 (the set-up exercises the same route)."""
    if os.environ.get("MMFUSION_NETWORK_TESTS") != "1":
        pytest.skip("needs the network (apt-get download); set MMFUSION_NETWORK_TESTS=1 to run it")
    _no_nltk_install(monkeypatch, tmp_path)
    monkeypatch.setattr(resources, "_nltk_download", lambda package, d: (False, "mocked"))
    monkeypatch.setattr(resources, "APT_TIMEOUT_S", 30)
    res = prepare_text_resources(data_dir=tmp_path / "d", download=True, debian_dir=tmp_path / "none", optional=False)
    if not res.wordnet.available:
        pytest.skip(f"apt-get download not possible here: {res.wordnet.detail[:300]}")
    assert res.wordnet.source == "debian package" and "wordnet-base" in res.wordnet.detail
    assert (tmp_path / "d/corpora/wordnet/LICENSE").is_file()
    stamp = json.loads((tmp_path / "d/corpora/wordnet/.mmfusion-source.json").read_text())
    assert stamp["source"] == "debian package"


def test_missing_stopwords_raise_with_instructions(monkeypatch, tmp_path):
    _no_nltk_install(monkeypatch, tmp_path)
    monkeypatch.setattr(resources, "_sklearn_stop_words", lambda: None)
    res = prepare_text_resources(data_dir=tmp_path / "d", debian_dir=tmp_path / "none", optional=False)
    assert not res.stopwords.available and not res.ok and res.missing() == ["stopwords", "wordnet"]
    with pytest.raises(MissingResourceError) as err:
        require_stopwords(tmp_path / "d")
    msg = str(err.value)
    assert "stopwords" in msg and "mmfusion-attacks text-resources --download" in msg
    assert "python -m nltk.downloader" in msg
    monkeypatch.setattr(resources, "_TEXTATTACK", None)  # as in a fresh process
    with pytest.raises(MissingResourceError, match="stopwords"):
        resources.import_textattack(tmp_path / "d")
    with pytest.raises(MissingResourceError, match="wordnet") as err:
        require_wordnet(tmp_path / "d")
    assert "text-resources --download" in str(err.value)


def test_cli_text_resources(monkeypatch, tmp_path, capsys, debian_wordnet_dir):
    _no_nltk_install(monkeypatch, tmp_path)
    monkeypatch.setattr(resources, "DEBIAN_WORDNET_DIR", debian_wordnet_dir)
    assert cli_main(["text-resources", "--dir", str(tmp_path / "d")]) == 0
    out = capsys.readouterr().out
    assert "stopwords" in out and "scikit-learn list" in out and "wordnet" in out and "debian" in out
    monkeypatch.setattr(resources, "DEBIAN_WORDNET_DIR", tmp_path / "none")
    _no_nltk_install(monkeypatch, tmp_path)  # the first call put d on nltk's path
    assert cli_main(["text-resources", "--dir", str(tmp_path / "e")]) == 1
    captured = capsys.readouterr()
    assert "MISSING" in captured.out and "missing: wordnet" in captured.err


def test_import_textattack_keeps_environment(fresh_process, sample_texts):
    """In a fresh process with TA_CACHE_DIR and HF_HOME set (and PYTHONHASHSEED=12345; started at the
    beginning of the session, see conftest): no download tried, the variables TextAttack overwrites are
    restored (unset ones stay unset), hub constants are the user's; the seeded augmenters give this
    process's output."""
    out, stderr, tmp = fresh_process.result()
    assert out["env"] == {
        "HF_HOME": str(tmp / "user_hf"),
        "XDG_CACHE_HOME": None,
        "TFHUB_CACHE_DIR": None,
        "PYTORCH_TRANSFORMERS_CACHE": None,
        "TA_CACHE_DIR": str(tmp / "ta"),
    }
    assert out["hub"] == str(tmp / "user_hf")
    assert out["marker"] and out["ta_cache"] == str(tmp / "ta")
    assert out["attempts"] == []
    assert "[nltk_data]" not in stderr  # no "[nltk_data] Error loading ..." download attempts
    assert out["hashseed"] == "12345"
    if "syn" not in out:
        pytest.skip("WordNet not available: only the environment was checked")
    from mmfusion_attacks.text.augment import SynonymSubstitution, WordDeletion

    assert out["syn"] == SynonymSubstitution(0.4, seed=3)(sample_texts)
    assert out["del"] == WordDeletion(0.5, seed=3)(sample_texts)


def test_import_textattack_once(textattack_module):
    assert resources.import_textattack() is textattack_module is sys.modules["textattack"]
    assert str(resources.default_data_dir().resolve()) in nltk.data.path


def test_plain_import_textattack_works_after_the_setup(tmp_path):
    """The first line a TextAttack user writes, in the project's environment, offline, before our adapter."""
    venv = Path(sys.prefix)
    if not (venv / ".mmfusion-setup").is_file():
        pytest.skip("not the environment scripts/setup.sh made")
    link = venv / "share" / "nltk_data"
    assert (link / "corpora" / "stopwords" / "english").is_file(), f"{link} does not expose the prepared nltk data"
    env = {k: v for k, v in os.environ.items() if k not in ("NLTK_DATA", "PYTHONPATH")}
    r = subprocess.run([sys.executable, "-c", "import textattack; print('imported')"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "imported" in r.stdout, r.stderr[-2000:]
