"""Offline nltk data for TextAttack: stopwords and WordNet in a project-owned nltk data directory.

``import textattack`` (0.3.11) tries six ``nltk.download`` calls and ``stanza.download`` once, then
needs the nltk ``stopwords`` corpus or crashes; WordNet synonym swaps (PWWS, LEAP, the synonym
augmenter) need ``corpora/wordnet``. Neither download works offline. This module assembles both
from what the machine has, in this order:

- stopwords: an existing nltk install (``nltk.data.find``: 179 English words) ->
  with ``download=True`` ``nltk.download("stopwords")`` -> scikit-learn's ``ENGLISH_STOP_WORDS``
  (318 words: a larger protected set, so fewer words are eligible for substitution than with nltk's
  list — results are comparable only between runs that used the same list; the source is recorded).
- WordNet: an existing nltk install -> Debian's WordNet 3.0 in ``/usr/share/wordnet`` (packages
  ``wordnet-base`` + ``wordnet-sense-index``; copied, plus the ``lexnames`` table nltk needs and
  Debian lacks) -> with ``download=True``: ``apt-get download`` of those two packages unpacked with
  ``dpkg-deb -x`` (no root needed), then ``nltk.download("wordnet")`` (the ordinary route on a
  machine with internet).

Everything is copied into one directory (default ``cache_dir() / "nltk_data"``) with atomic
renames, so repeated or concurrent calls are safe and fast once prepared. Nothing is downloaded
unless ``download=True`` (the CLI ``mmfusion-attacks text-resources --download`` and
``scripts/setup.sh`` are the explicit opt-ins).

:func:`import_textattack` imports TextAttack once, offline, without letting it rewrite the user's
cache environment variables.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from ..errors import MissingResourceError
from ..extras import ensure, require

__all__ = [
    "TextResource",
    "TextResources",
    "prepare_text_resources",
    "default_data_dir",
    "textattack_cache_dir",
    "import_textattack",
    "require_stopwords",
    "require_wordnet",
    "find_nltk_resource",
    "GET_RESOURCES_HINT",
    "WORDNET_LEXNAMES",
    "TEXTATTACK_MARKER",
    "TEXTATTACK_ENV_VARS",
    "OPTIONAL_NLTK_PACKAGES",
]

#: how to get the resources, quoted in every MissingResourceError
GET_RESOURCES_HINT = (
    "run `mmfusion-attacks text-resources --download` (fetches Debian's WordNet with apt-get download; "
    "on a machine with internet it also runs nltk.download), or on a machine with internet run "
    "`python -m nltk.downloader -d DIR stopwords wordnet` and pass DIR to "
    "`mmfusion-attacks text-resources --dir DIR` (or set NLTK_DATA=DIR)"
)

#: TextAttack 0.3.11's post-install marker (shared/utils/install.py): while it exists in TextAttack's
#: cache dir, ``import textattack`` downloads nothing
TEXTATTACK_MARKER = "post_install_check_3"

#: variables ``import textattack`` overwrites with ``TA_CACHE_DIR`` (TOKENIZERS_PARALLELISM it sets
#: to "True" unconditionally); :func:`import_textattack` restores them
TEXTATTACK_ENV_VARS = ("HF_HOME", "XDG_CACHE_HOME", "TFHUB_CACHE_DIR", "PYTORCH_TRANSFORMERS_CACHE")

#: nltk packages some TextAttack recipes need and that have no offline source (fetched only with
#: ``download=True``): name -> resource path for ``nltk.data.find``
OPTIONAL_NLTK_PACKAGES = {
    "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng",
    "universal_tagset": "taggers/universal_tagset",
    "punkt_tab": "tokenizers/punkt_tab",
    "omw-1.4": "corpora/omw-1.4",
}

#: WordNet 3.0 lexicographer files (lexnames(5WN)): number, name, syntactic category
#: (1 noun, 2 verb, 3 adjective, 4 adverb) — the ``lexnames`` file nltk reads and Debian does not ship
WORDNET_LEXNAMES = """\
00	adj.all	3
01	adj.pert	3
02	adv.all	4
03	noun.Tops	1
04	noun.act	1
05	noun.animal	1
06	noun.artifact	1
07	noun.attribute	1
08	noun.body	1
09	noun.cognition	1
10	noun.communication	1
11	noun.event	1
12	noun.feeling	1
13	noun.food	1
14	noun.group	1
15	noun.location	1
16	noun.motive	1
17	noun.object	1
18	noun.person	1
19	noun.phenomenon	1
20	noun.plant	1
21	noun.possession	1
22	noun.process	1
23	noun.quantity	1
24	noun.relation	1
25	noun.shape	1
26	noun.state	1
27	noun.substance	1
28	noun.time	1
29	verb.body	2
30	verb.change	2
31	verb.cognition	2
32	verb.communication	2
33	verb.competition	2
34	verb.consumption	2
35	verb.contact	2
36	verb.creation	2
37	verb.emotion	2
38	verb.motion	2
39	verb.perception	2
40	verb.possession	2
41	verb.social	2
42	verb.stative	2
43	verb.weather	2
44	adj.ppl	3
"""

DEBIAN_WORDNET_DIR = Path("/usr/share/wordnet")
DEBIAN_WORDNET_PACKAGES = ("wordnet-base", "wordnet-sense-index")
#: seconds allowed for ``apt-get download`` (8 MB) and each ``dpkg-deb -x``
APT_TIMEOUT_S = 180
#: files nltk's WordNetCorpusReader opens at load time (index.sense only for sense keys)
WORDNET_REQUIRED = tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")) + tuple(
    f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")
) + ("lexnames",)
_STAMP = ".mmfusion-source.json"


@dataclass(frozen=True)
class TextResource:
    """One resource: whether it is available, where, and where it came from."""

    name: str
    available: bool
    path: Path | None = None
    source: str | None = None  # "nltk install", "debian", "debian package", "nltk.download", "scikit-learn list", ...
    detail: str = ""  # size / origin when available, what was tried and how to get it when not

    def __str__(self) -> str:
        if self.available:
            return f"{self.name:<32} ok       {self.source} -> {self.path}" + (f" ({self.detail})" if self.detail else "")
        return f"{self.name:<32} MISSING  {self.detail}"


@dataclass(frozen=True)
class TextResources:
    """What :func:`prepare_text_resources` made: required resources, TextAttack's marker, optional nltk packages."""

    data_dir: Path
    stopwords: TextResource
    wordnet: TextResource
    marker: TextResource
    optional: tuple[TextResource, ...] = field(default_factory=tuple)

    def __iter__(self) -> Iterator[TextResource]:
        yield from (self.stopwords, self.wordnet, self.marker, *self.optional)

    @property
    def ok(self) -> bool:
        """Stopwords, WordNet and the marker are all in place (optional packages do not count)."""
        return self.stopwords.available and self.wordnet.available and self.marker.available

    def missing(self) -> list[str]:
        return [r.name for r in (self.stopwords, self.wordnet, self.marker) if not r.available]

    def __str__(self) -> str:
        lines = [f"nltk data dir: {self.data_dir}", *(str(r) for r in (self.stopwords, self.wordnet, self.marker))]
        if self.optional:
            lines.append("optional (only recipes that also need online models use them):")
            lines += [f"  {r}" for r in self.optional]
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------- paths


def default_data_dir() -> Path:
    """``cache_dir() / "nltk_data"`` (``$MMFUSION_CACHE``, else ``$XDG_CACHE_HOME/mmfusion_attacks``...)."""
    from ..zoo import cache_dir

    return cache_dir() / "nltk_data"


def _nltk() -> ModuleType:
    """nltk (installed with TextAttack by the 'text' extra), or :class:`MissingExtraError` naming the extra."""
    return require("nltk", feature="the offline text resources (nltk)")


def textattack_cache_dir() -> Path:
    """TextAttack's own cache dir, as it computes it: ``$TA_CACHE_DIR`` else ``~/.cache/textattack``."""
    return Path(os.environ.get("TA_CACHE_DIR", os.path.expanduser("~/.cache/textattack")))


def _resolve(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser().resolve() if data_dir is not None else default_data_dir().expanduser().resolve()


def _other_nltk_paths(data_dir: Path) -> list[str]:
    """nltk's search path without our own directory (sources to copy from)."""
    nltk = _nltk()

    out = []
    for p in nltk.data.path:
        try:
            if Path(p).expanduser().resolve() == data_dir:
                continue
        except (OSError, RuntimeError):
            pass
        out.append(p)
    return out


def find_nltk_resource(resource: str, paths: list[str] | None = None):
    """``nltk.data.find`` that returns None instead of raising (``paths`` None: nltk's search path)."""
    nltk = _nltk()

    try:
        return nltk.data.find(resource, paths=paths)
    except LookupError:
        return None


@contextlib.contextmanager
def _on_nltk_path(folder: str | Path) -> Iterator[None]:
    """``folder`` on nltk's search path for the duration of the block."""
    nltk = _nltk()

    s = str(folder)
    nltk.data.path.append(s)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            nltk.data.path.remove(s)


def _use_data_dir(data_dir: Path) -> None:
    """Put ``data_dir`` first on nltk's search path (this process only; subprocesses: NLTK_DATA)."""
    nltk = _nltk()

    s = str(data_dir)
    if s in nltk.data.path:
        nltk.data.path.remove(s)
    nltk.data.path.insert(0, s)


# ------------------------------------------------------------------------------- atomic writes


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target``, renamed onto it when the block succeeds. A ``target``
    that existed before (incomplete, or a list being upgraded) is replaced; one that another process
    created meanwhile wins the race and ours is discarded."""
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.exists()
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the corpus is shared data
        yield tmp
        if existed and target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
            os.replace(target, old / target.name)
            try:
                os.replace(tmp, target)
            except OSError:
                if not target.exists():
                    os.replace(old / target.name, target)
                raise
            finally:
                shutil.rmtree(old, ignore_errors=True)
        else:
            try:
                os.replace(tmp, target)
            except OSError:
                if not target.exists():  # not a lost race: a real error
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _stamp(folder: Path, source: str, origin: str, **extra) -> None:
    (folder / _STAMP).write_text(json.dumps({"source": source, "origin": origin, **extra}, indent=1) + "\n")


def _read_stamp(folder: Path) -> dict:
    try:
        return json.loads((folder / _STAMP).read_text())
    except (OSError, ValueError):
        return {}


# ----------------------------------------------------------------------------------- stopwords


def _sklearn_stop_words() -> list[str] | None:
    try:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
    except ImportError:
        return None
    return sorted(ENGLISH_STOP_WORDS)


def _stopwords_present(data_dir: Path) -> TextResource | None:
    folder = data_dir / "corpora" / "stopwords"
    english = folder / "english"
    if english.is_file():
        stamp = _read_stamp(folder)
        n = sum(1 for w in english.read_text(encoding="utf-8").split("\n") if w.strip())
        return TextResource("stopwords", True, english, stamp.get("source", "present in data dir"), f"{n} words" + (f", from {stamp['origin']}" if stamp.get("origin") else ""))
    if (data_dir / "corpora" / "stopwords.zip").is_file():  # e.g. `python -m nltk.downloader -d DIR`
        return TextResource("stopwords", True, data_dir / "corpora" / "stopwords.zip", "present in data dir", "zip")
    return None


def _write_stopwords(data_dir: Path, words: list[str], source: str, origin: str) -> TextResource:
    folder = data_dir / "corpora" / "stopwords"
    with _staging(folder) as tmp:
        (tmp / "english").write_text("\n".join(words) + "\n", encoding="utf-8")
        (tmp / "README").write_text(
            f"English stopwords for nltk, written by mmfusion-attacks from {source} ({origin}).\n", encoding="utf-8"
        )
        _stamp(tmp, source, origin, words=len(words))
    return TextResource("stopwords", True, folder / "english", source, f"{len(words)} words, from {origin}")


def _nltk_download(package: str, data_dir: Path) -> tuple[bool, str]:
    """``nltk.download`` into ``data_dir``; returns (ok, its messages). Offline it fails in milliseconds."""
    nltk = _nltk()

    buf = io.StringIO()
    paths = list(nltk.data.path)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            extra = {"print_error_to": buf} if "print_error_to" in inspect.signature(nltk.download).parameters else {}
            ok = bool(nltk.download(package, download_dir=str(data_dir), quiet=True, raise_on_error=False, **extra))
    except Exception as exc:  # any network / parsing failure means "not downloaded"
        ok, buf = False, io.StringIO(f"{type(exc).__name__}: {exc}")
    finally:
        nltk.data.path[:] = paths  # nltk.download appends download_dir to the search path
    msg = " ".join(line.replace("[nltk_data]", "").strip() for line in buf.getvalue().splitlines())
    return ok, msg


def _read_words(ptr) -> list[str]:
    """The lines of an nltk word list (a file, or a zip entry), read directly: nltk's own
    ``PathPointer.open`` refuses paths outside ``nltk.data.path`` (nltk >= 3.9 pathsec)."""
    from nltk.data import ZipFilePathPointer

    raw = ptr.zipfile.read(ptr.entry) if isinstance(ptr, ZipFilePathPointer) else Path(ptr.path).read_bytes()
    return [w.strip() for w in raw.decode("utf-8").splitlines() if w.strip()]


def _prepare_stopwords(data_dir: Path, download: bool, tried: list[str]) -> TextResource:
    present = _stopwords_present(data_dir)
    if present is not None and not (download and present.source == "scikit-learn list"):
        return present
    ptr = find_nltk_resource("corpora/stopwords/english", _other_nltk_paths(data_dir))
    if ptr is not None:
        words = _read_words(ptr)
        return _write_stopwords(data_dir, words, "nltk install", str(ptr))
    tried.append("no nltk install on nltk.data.path has corpora/stopwords/english")
    if download:  # into a temporary folder, then written atomically like the other sources
        with tempfile.TemporaryDirectory(dir=data_dir, prefix=".nltk-download-") as tmp:
            ok, msg = _nltk_download("stopwords", Path(tmp))
            got = find_nltk_resource("corpora/stopwords/english", [tmp]) if ok else None
            if got is not None:
                words = _read_words(got)
                return _write_stopwords(data_dir, words, "nltk.download", "nltk.download('stopwords')")
        tried.append(f"nltk.download('stopwords') failed: {msg or 'no data'}")
    if present is not None:  # keep the scikit-learn list we already had
        return present
    words = _sklearn_stop_words()
    if words is not None:
        return _write_stopwords(data_dir, words, "scikit-learn list", "sklearn.feature_extraction.text.ENGLISH_STOP_WORDS")
    tried.append("scikit-learn is not importable (its ENGLISH_STOP_WORDS is the offline fallback)")
    return TextResource("stopwords", False, None, None, "; ".join(tried) + f". To get it: {GET_RESOURCES_HINT}")


# ------------------------------------------------------------------------------------- wordnet


def _find_wordnet(paths: list[str]):
    """WordNet as a folder or inside ``wordnet.zip`` (the entry spelled as nltk's corpus loader does)."""
    return find_nltk_resource("corpora/wordnet", paths) or find_nltk_resource("corpora/wordnet.zip/wordnet/", paths)


def _wordnet_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in WORDNET_REQUIRED)


def _wordnet_present(data_dir: Path) -> TextResource | None:
    folder = data_dir / "corpora" / "wordnet"
    if folder.is_dir() and _wordnet_complete(folder):
        stamp = _read_stamp(folder)
        return TextResource("wordnet", True, folder, stamp.get("source", "present in data dir"), "WordNet 3.0" + (f", from {stamp['origin']}" if stamp.get("origin") else ""))
    if (data_dir / "corpora" / "wordnet.zip").is_file():  # e.g. `python -m nltk.downloader -d DIR`
        return TextResource("wordnet", True, data_dir / "corpora" / "wordnet.zip", "present in data dir", "zip")
    return None


def _debian_wordnet_ok(root: Path) -> bool:
    return all((root / f).is_file() for f in WORDNET_REQUIRED if f != "lexnames")


def _copy_debian_wordnet(data_dir: Path, root: Path, source: str, origin: str, license_file: Path | None) -> TextResource:
    folder = data_dir / "corpora" / "wordnet"
    with _staging(folder) as tmp:
        for f in sorted(root.iterdir()):
            if f.is_file() and ("." in f.name or f.name.startswith("cntlist")):
                shutil.copyfile(f, tmp / f.name)
        (tmp / "lexnames").write_text(WORDNET_LEXNAMES, encoding="utf-8")
        if license_file is not None and license_file.is_file():
            shutil.copyfile(license_file, tmp / "LICENSE")
        (tmp / "README").write_text(
            f"Princeton WordNet 3.0 for nltk, copied by mmfusion-attacks from {origin} (Debian packages "
            f"{' + '.join(DEBIAN_WORDNET_PACKAGES)}); lexnames written from the lexnames(5WN) table.\n",
            encoding="utf-8",
        )
        _stamp(tmp, source, origin)
    return TextResource("wordnet", True, folder, source, f"WordNet 3.0, from {origin}")


def _copy_nltk_wordnet(data_dir: Path, ptr, source: str = "nltk install", origin: str | None = None) -> TextResource:
    """Copy an nltk-installed WordNet (a folder, or the ``wordnet/`` entry of ``wordnet.zip``)."""
    from nltk.data import FileSystemPathPointer, ZipFilePathPointer

    folder = data_dir / "corpora" / "wordnet"
    with _staging(folder) as tmp:
        if isinstance(ptr, ZipFilePathPointer):
            zf: zipfile.ZipFile = ptr.zipfile
            prefix = ptr.entry if ptr.entry.endswith("/") else ptr.entry + "/"
            for name in zf.namelist():
                if name.startswith(prefix) and not name.endswith("/") and "/" not in name[len(prefix):]:
                    (tmp / name[len(prefix):]).write_bytes(zf.read(name))  # nltk's zip reopens per read
        elif isinstance(ptr, FileSystemPathPointer):
            for f in Path(ptr.path).iterdir():
                if f.is_file():
                    shutil.copyfile(f, tmp / f.name)
        if not (tmp / "lexnames").is_file():
            (tmp / "lexnames").write_text(WORDNET_LEXNAMES, encoding="utf-8")
        if not _wordnet_complete(tmp):
            raise OSError(f"incomplete WordNet at {ptr}")
        origin = origin or str(ptr)
        _stamp(tmp, source, origin)
    return TextResource("wordnet", True, folder, source, f"from {origin}")


def _apt_download_wordnet(data_dir: Path, tried: list[str]) -> TextResource | None:
    apt, dpkg = shutil.which("apt-get"), shutil.which("dpkg-deb")
    if not apt or not dpkg:
        tried.append("apt-get download impossible (apt-get / dpkg-deb not on PATH)")
        return None
    with tempfile.TemporaryDirectory(prefix="mmfusion-wordnet-") as tmp:
        try:
            r = subprocess.run([apt, "download", *DEBIAN_WORDNET_PACKAGES], cwd=tmp, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            tried.append(f"apt-get download {' '.join(DEBIAN_WORDNET_PACKAGES)} failed: {exc}")
            return None
        debs = sorted(Path(tmp).glob("*.deb"))
        if r.returncode != 0 or not any(d.name.startswith("wordnet-base") for d in debs):
            err = (r.stderr or r.stdout).strip().splitlines()
            tried.append(f"apt-get download {' '.join(DEBIAN_WORDNET_PACKAGES)} failed: {err[-1] if err else r.returncode}")
            return None
        root = Path(tmp) / "root"
        for deb in debs:
            try:
                r = subprocess.run([dpkg, "-x", str(deb), str(root)], capture_output=True, text=True, timeout=APT_TIMEOUT_S)
            except (OSError, subprocess.SubprocessError) as exc:
                tried.append(f"dpkg-deb -x {deb.name} failed: {exc}")
                return None
            if r.returncode != 0:
                tried.append(f"dpkg-deb -x {deb.name} failed: {r.stderr.strip()}")
                return None
        wn = root / "usr" / "share" / "wordnet"
        if not _debian_wordnet_ok(wn):
            tried.append(f"the downloaded packages lack WordNet files ({', '.join(d.name for d in debs)})")
            return None
        origin = "apt-get download " + " ".join(d.name for d in debs)
        return _copy_debian_wordnet(data_dir, wn, "debian package", origin, root / "usr/share/doc/wordnet-base/copyright")


def _prepare_wordnet(data_dir: Path, download: bool, debian_dir: Path, tried: list[str]) -> TextResource:
    present = _wordnet_present(data_dir)
    if present is not None:
        return present
    ptr = _find_wordnet(_other_nltk_paths(data_dir))
    if ptr is not None:
        try:
            return _copy_nltk_wordnet(data_dir, ptr)
        except OSError as exc:
            tried.append(f"copying the nltk install at {ptr} failed: {exc}")
    else:
        tried.append("no nltk install on nltk.data.path has corpora/wordnet")
    if _debian_wordnet_ok(debian_dir):
        return _copy_debian_wordnet(data_dir, debian_dir, "debian", str(debian_dir), Path("/usr/share/doc/wordnet-base/copyright"))
    tried.append(f"no Debian WordNet in {debian_dir} (apt-get install {' '.join(DEBIAN_WORDNET_PACKAGES)})")
    if download:
        got = _apt_download_wordnet(data_dir, tried)
        if got is not None:
            return got
        with tempfile.TemporaryDirectory(dir=data_dir, prefix=".nltk-download-") as tmp:
            ok, msg = _nltk_download("wordnet", Path(tmp))
            with _on_nltk_path(tmp):  # nltk >= 3.9 opens zips only under nltk.data.path
                got = _find_wordnet([tmp]) if ok else None
                if got is not None:
                    try:
                        return _copy_nltk_wordnet(data_dir, got, "nltk.download", "nltk.download('wordnet')")
                    except OSError as exc:
                        msg = f"the download is unusable: {exc}"
        tried.append(f"nltk.download('wordnet') failed: {msg or 'no data'}")
    else:
        tried.append("downloads not allowed (download=False)")
    return TextResource("wordnet", False, None, None, "; ".join(tried) + f". To get it: {GET_RESOURCES_HINT}")


# ------------------------------------------------------------------------------------- marker


def _prepare_marker() -> TextResource:
    ta = textattack_cache_dir()
    marker = ta / TEXTATTACK_MARKER
    if marker.is_file():
        return TextResource("textattack post-install marker", True, marker, "present", "")
    try:
        ta.mkdir(parents=True, exist_ok=True)
        _write_atomic(marker, "")
    except OSError as exc:
        return TextResource(
            "textattack post-install marker", False, marker, None,
            f"cannot write {marker} ({exc}): `import textattack` would try its nltk/stanza downloads; set TA_CACHE_DIR to a writable folder",
        )
    return TextResource(
        "textattack post-install marker", True, marker, "written",
        "import textattack skips its nltk/stanza downloads",
    )


def _optional(data_dir: Path, download: bool) -> tuple[TextResource, ...]:
    out = []
    for name, res in OPTIONAL_NLTK_PACKAGES.items():
        ptr = find_nltk_resource(res, [str(data_dir), *_other_nltk_paths(data_dir)])
        if ptr is None and download:
            ok, msg = _nltk_download(name, data_dir)
            ptr = find_nltk_resource(res, [str(data_dir)]) if ok else None
            if ptr is None:
                out.append(TextResource(name, False, None, None, f"nltk.download('{name}') failed: {msg or 'no data'} (no offline source)"))
                continue
            out.append(TextResource(name, True, Path(str(ptr)), "nltk.download", ""))
        elif ptr is None:
            out.append(TextResource(name, False, None, None, f"not installed (no offline source; `python -m nltk.downloader {name}` with internet)"))
        else:
            out.append(TextResource(name, True, Path(str(ptr)), "nltk install", ""))
    return tuple(out)


_PREPARE_LOCK = threading.Lock()


def prepare_text_resources(
    *,
    download: bool = False,
    data_dir: str | Path | None = None,
    debian_dir: str | Path | None = None,
    optional: bool = True,
) -> TextResources:
    """Make the nltk data directory (default ``cache_dir() / "nltk_data"``) hold
    ``corpora/stopwords/english`` and ``corpora/wordnet``, write TextAttack's post-install marker, and
    put the directory first on ``nltk.data.path``. Returns what is available, where and from which
    source; never raises for a missing resource (see :func:`require_stopwords`, :func:`require_wordnet`).

    ``download=True`` allows network fetches (apt-get download of Debian's WordNet, nltk.download);
    ``debian_dir`` is where Debian installs WordNet (``/usr/share/wordnet``); ``optional=False``
    skips the report on (and, with ``download``, the fetching of) optional nltk packages.
    Idempotent: a prepared directory is reused as is (delete a resource's folder to rebuild it).
    """
    d = _resolve(data_dir)
    debian = Path(debian_dir) if debian_dir is not None else DEBIAN_WORDNET_DIR
    with _PREPARE_LOCK:
        d.mkdir(parents=True, exist_ok=True)
        tried_sw: list[str] = []
        tried_wn: list[str] = []
        stopwords = _prepare_stopwords(d, download, tried_sw)
        wordnet = _prepare_wordnet(d, download, debian, tried_wn)
        marker = _prepare_marker()
        opt = _optional(d, download) if optional else ()
        _use_data_dir(d)
    return TextResources(d, stopwords, wordnet, marker, opt)


# ------------------------------------------------------------------------------ checks, import


def require_stopwords(data_dir: str | Path | None = None) -> TextResource:
    """The prepared stopwords resource, or :class:`MissingResourceError` naming it and how to get it."""
    res = prepare_text_resources(data_dir=data_dir, optional=False)
    if not res.stopwords.available:
        raise MissingResourceError(
            f"nltk 'stopwords' corpus (corpora/stopwords/english) is not available offline, and TextAttack "
            f"cannot be imported without it: {res.stopwords.detail}"
        )
    return res.stopwords


_WORDNET_OK: set[Path] = set()


def require_wordnet(data_dir: str | Path | None = None) -> TextResource:
    """Check that nltk's WordNet loads (``wordnet.synsets("happy")`` is not empty); else
    :class:`MissingResourceError` naming it and how to get it. The first load takes a few seconds."""
    res = prepare_text_resources(data_dir=data_dir, optional=False)
    if not res.wordnet.available:
        raise MissingResourceError(
            f"nltk 'wordnet' corpus (corpora/wordnet, WordNet 3.0) is not available offline; WordNet synonym "
            f"swaps (PWWS, LEAP, SynonymSubstitution) need it: {res.wordnet.detail}"
        )
    if res.data_dir in _WORDNET_OK:
        return res.wordnet
    try:
        from nltk.corpus import wordnet

        ok = bool(wordnet.synsets("happy"))
    except (LookupError, OSError, ValueError, AssertionError) as exc:
        raise MissingResourceError(
            f"nltk 'wordnet' corpus at {res.wordnet.path} does not load ({type(exc).__name__}: {exc}); delete "
            f"that folder and prepare it again. To get it: {GET_RESOURCES_HINT}"
        ) from exc
    if not ok:
        raise MissingResourceError(f"nltk 'wordnet' corpus at {res.wordnet.path} has no synsets for 'happy'; delete it and prepare it again")
    _WORDNET_OK.add(res.data_dir)
    return res.wordnet


_TEXTATTACK: ModuleType | None = None
_IMPORT_LOCK = threading.Lock()


def import_textattack(data_dir: str | Path | None = None, *, feature: str = "TextAttack") -> ModuleType:
    """The ``textattack`` module, imported once, offline.

    Without the 'text' extra raises :class:`~mmfusion_attacks.extras.MissingExtraError` naming
    ``feature`` and the extra, before anything is prepared.

    Before the import: prepares the resources (no download), puts the nltk data dir first on
    ``nltk.data.path``, makes sure TextAttack's post-install marker exists (so it never tries its six
    nltk downloads and stanza), and imports huggingface_hub / transformers / datasets with the user's
    environment so their cache constants are the user's. TextAttack overwrites ``HF_HOME``,
    ``XDG_CACHE_HOME``, ``TFHUB_CACHE_DIR``, ``PYTORCH_TRANSFORMERS_CACHE`` when ``TA_CACHE_DIR`` is set
    (and ``TOKENIZERS_PARALLELISM``): they are restored to what they were (a variable the user had not set
    stays unset; ``TOKENIZERS_PARALLELISM`` keeps TextAttack's "True" only if the user had not set it).
    Raises :class:`MissingResourceError` when the stopwords cannot be provided.
    """
    global _TEXTATTACK
    with _IMPORT_LOCK:
        if _TEXTATTACK is not None:
            if data_dir is not None:
                _use_data_dir(_resolve(data_dir))
            return _TEXTATTACK
        ensure("textattack", feature=feature)  # fail fast, before the resources are prepared
        require_stopwords(data_dir)  # also prepares WordNet when present, writes the marker, sets nltk's path
        marker = textattack_cache_dir() / TEXTATTACK_MARKER
        if not marker.is_file():
            raise MissingResourceError(
                f"TextAttack's post-install marker {marker} cannot be written: `import textattack` would try to "
                f"download nltk data and stanza models; set TA_CACHE_DIR to a writable folder"
            )
        if "textattack" in sys.modules:  # imported by the user before us: nothing left to protect
            _TEXTATTACK = sys.modules["textattack"]
            return _TEXTATTACK
        for name in ("huggingface_hub", "huggingface_hub.constants", "transformers", "transformers.utils.hub", "datasets"):
            with contextlib.suppress(ImportError):
                __import__(name)
        keys = (*TEXTATTACK_ENV_VARS, "TOKENIZERS_PARALLELISM")
        saved = {k: os.environ.get(k) for k in keys}
        try:
            textattack = require("textattack", feature=feature)
        finally:
            for k, v in saved.items():
                if v is not None:
                    os.environ[k] = v
                elif k != "TOKENIZERS_PARALLELISM":
                    os.environ.pop(k, None)
        _TEXTATTACK = textattack
        return textattack
