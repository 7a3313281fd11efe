"""Loader for the Indiana University chest X-ray collection (IU X-ray / OpenI) as commonly distributed.

Layout (the Kaggle "chest-xrays-indiana-university" release; not bundled)::

    root/indiana_reports.csv      uid, MeSH, Problems, image, indication, comparison, findings, impression
    root/indiana_projections.csv  uid, filename, projection ("Frontal" / "Lateral")
    root/images/images_normalized/<filename>     (PNG; also found: root/images_normalized, root/images)

One example per report (uid): ``{"frontal": (1, S, S), "lateral": (1, S, S)`` floats in [0, 1] (the
lateral view only when ``"lateral"`` is in ``views``), ``"text": str, "label": int, "uid": str}``.

- text = indication + findings + impression: missing parts (empty cells; a literal ``nan``, which a
  pandas round trip writes) are left out, the rest joined with one space and all whitespace runs
  collapsed. The release's de-identification placeholders (``XXXX``) are kept as they are: removing
  them would change sentence structure, and a text attack sees what a model trained on the release sees.
- label = 0 (normal) when ``Problems`` is ``normal`` (case-insensitive, stripped), else 1 (abnormal).
- images: the first file by file name of each required projection (a few uids have several frontal or
  lateral images); read with PIL, converted to grayscale (``L``; 16-bit PNGs are scaled by 1/65535),
  resized (bilinear, antialiased, aspect ratio NOT kept) to ``image_size`` x ``image_size``.
- split: ``"all"``, or ``"train"`` / ``"val"`` / ``"test"`` = 80 / 10 / 10 % by a hash of the uid
  (:func:`iu_split_of`: SHA-256 of ``"iu-xray:" + uid``, first 8 bytes mod 100: < 80 train, < 90 val,
  else test). It does not depend on the order, the number or the validity of the rows, so a uid stays
  in its split when rows are added, removed or repaired.

Validation. Structural problems raise at construction, naming the file: a missing CSV or images
folder (:class:`IUXrayMissingFileError`, also a ``FileNotFoundError``), a byte that is not UTF-8 (the
line and column named), a missing column, a row with too many or too few cells, an empty uid, a file
name that is not a plain name inside the images folder, or no usable example (:class:`IUXrayFormatError`,
an ``InputError``). Bad *examples* are skipped and
reported, never silently: each report row of the split ends up either as an example or under exactly
one reason in ``dataset.skipped`` (reason -> count, nonzero reasons only) and ``dataset.skipped_uids``
(reason -> uids), checked in this order:

- ``duplicate_uid``: the uid has more than one row in indiana_reports.csv (all its rows are skipped:
  which one is right cannot be told);
- ``missing_label``: the ``Problems`` cell is empty;
- ``empty_text``: indication, findings and impression are all empty;
- ``missing_projection``: no projection row of a required view (``views``);
- ``shared_image``: an image file of a required view is also named by a projection row of another uid,
  or of another projection of the same uid (compared as files: links count), so whose image or which
  view it is cannot be told; every uid naming it is skipped (``dataset.shared_images`` lists the files);
- ``missing_image``: the chosen image file does not exist;
- ``unreadable_image``: the chosen file is empty, or (``validate="headers"``) PIL cannot read its header
  or it has an unsupported mode, or (``validate="full"``) it cannot be decoded.

Projection rows that cannot be used are counted in ``dataset.ignored_projection_rows`` (over the whole
file): ``unknown_uid`` (no report row has that uid) and ``unknown_projection`` (not Frontal/Lateral).
One ``IUXraySkipWarning`` summarises all counts when anything was skipped or ignored.

``validate``: ``"files"`` (exists and non-empty), ``"headers"`` (default; also opens each PNG header,
about 0.3 ms a file, pixels are not decoded) or ``"full"`` (decodes every chosen image). Pixels are
otherwise decoded lazily in ``__getitem__``; a file that fails there raises :class:`IUXrayImageError`
naming it. ``limit``: the first ``limit`` usable examples of the split in CSV order; rows are examined
(and counted in ``skipped``) only until ``limit`` examples are found.

``dataset.fingerprint()`` digests what the dataset serves (labels, texts, which images, their sizes and
modification times; ``image_contents=True``: their bytes), for keying caches of models trained on it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import stat
import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import InputError, MissingResourceError
from . import register_dataset
from .mf_dataset import _listing, _unsafe  # one rule for file names in both loaders

__all__ = [
    "IUXray",
    "IU_SPLITS",
    "IU_VALIDATION",
    "IU_SKIP_REASONS",
    "IU_REPORT_COLUMNS",
    "IU_PROJECTION_COLUMNS",
    "IU_IMAGE_DIRS",
    "VL_CLASSES",
    "VL_VIEWS",
    "IUXrayFormatError",
    "IUXrayMissingFileError",
    "IUXrayImageError",
    "IUXraySkipWarning",
    "iu_split_of",
    "iu_report_text",
    "iu_label",
    "IU_FORMAT_VERSION",
]

#: classes of every image+text chest X-ray dataset of this package
VL_CLASSES = ("normal", "abnormal")
#: the image views, in canonical order
VL_VIEWS = ("frontal", "lateral")
IU_SPLITS = ("all", "train", "val", "test")
#: the ``validate=`` levels of :class:`IUXray`, cheapest first
IU_VALIDATION = ("files", "headers", "full")
#: skip reasons, in the order they are checked
IU_SKIP_REASONS = (
    "duplicate_uid", "missing_label", "empty_text", "missing_projection", "shared_image", "missing_image", "unreadable_image",
)
#: bump when what the loader serves for the same files changes (decoding, text joining), so fingerprints change
IU_FORMAT_VERSION = 1
#: columns of the release's CSVs, in the release's order
IU_REPORT_COLUMNS = ("uid", "MeSH", "Problems", "image", "indication", "comparison", "findings", "impression")
IU_PROJECTION_COLUMNS = ("uid", "filename", "projection")
REPORTS_CSV = "indiana_reports.csv"
PROJECTIONS_CSV = "indiana_projections.csv"
#: image folders looked for under ``root``, in this order
IU_IMAGE_DIRS = ("images/images_normalized", "images_normalized", "images")
_TEXT_PARTS = ("indication", "findings", "impression")
_PROJECTIONS = {"frontal": "frontal", "lateral": "lateral"}
_SPLIT_BOUNDS = (("train", 80), ("val", 90), ("test", 100))
_HOWTO = (
    "Expected the Indiana University chest X-ray release as distributed on Kaggle "
    "('chest-xrays-indiana-university'): root/indiana_reports.csv, root/indiana_projections.csv and the PNGs in "
    "root/images/images_normalized/ (or pass images_dir=)"
)


class IUXrayFormatError(InputError):
    """The IU X-ray files do not have the release's format (the message names the file), or no row is usable."""


class IUXrayMissingFileError(MissingResourceError, FileNotFoundError):
    """A CSV or the images folder of the IU X-ray release is missing (the message names it)."""


class IUXrayImageError(InputError):
    """An IU X-ray image could not be decoded when an item was read (the message names the file)."""


class IUXraySkipWarning(UserWarning):
    """Rows of the IU X-ray release were skipped or ignored; the message has the counts per reason."""


def check_views(views: Sequence[str]) -> tuple[str, ...]:
    """``views`` as a canonical tuple: ``("frontal", "lateral")`` or ``("frontal",)``."""
    if isinstance(views, str):
        views = (views,)
    try:
        given = tuple(views)
    except TypeError:
        raise ValueError(f"views must be ('frontal', 'lateral') or ('frontal',), got {views!r}") from None
    if "frontal" not in given or len(set(given)) != len(given) or not set(given) <= set(VL_VIEWS):
        raise ValueError(f"views must be ('frontal', 'lateral') or ('frontal',), got {views!r}")
    return tuple(v for v in VL_VIEWS if v in given)


def check_image_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, Integral) or image_size < 1:
        raise ValueError(f"image_size must be a positive int (the side of the square images), got {image_size!r}")
    return int(image_size)


def stack_items(items: Sequence[dict], views: Sequence[str]) -> tuple[dict, torch.Tensor]:
    """Items of the shared image+text format as one named batch and its labels (LongTensor (N,))."""
    if not items:
        raise ValueError("tensors() needs at least one index")
    batch: dict = {v: torch.stack([it[v] for it in items]).float() for v in views}
    batch["text"] = [it["text"] for it in items]
    return batch, torch.tensor([it["label"] for it in items], dtype=torch.long)


def _indices(n: int, indices) -> list[int]:
    if indices is None:
        return list(range(n))
    if isinstance(indices, torch.Tensor):
        indices = indices.tolist()
    return [int(i) for i in indices]


def iu_split_of(uid: str) -> str:
    """``"train"`` / ``"val"`` / ``"test"`` (80 / 10 / 10 %) for ``uid``, from a SHA-256 hash: stable across runs."""
    bucket = int.from_bytes(hashlib.sha256(f"iu-xray:{uid.strip()}".encode()).digest()[:8], "big") % 100
    return next(name for name, bound in _SPLIT_BOUNDS if bucket < bound)


def _missing(cell: str | None) -> bool:
    return cell is None or not cell.strip() or cell.strip().lower() == "nan"


def iu_report_text(row: dict) -> str:
    """indication + findings + impression of a reports row: missing parts left out, whitespace normalised."""
    parts = [row.get(k) for k in _TEXT_PARTS]
    return re.sub(r"\s+", " ", " ".join(p for p in parts if not _missing(p))).strip()


def iu_label(problems: str) -> int:
    """0 (normal) when the Problems cell is ``normal`` (case-insensitive, stripped), else 1 (abnormal)."""
    return 0 if problems.strip().lower() == "normal" else 1


def _decode_csv(path: Path) -> str:
    """The text of a CSV as UTF-8 (a byte-order mark dropped); a byte that is not UTF-8 raises
    :class:`IUXrayFormatError` naming the file, the line and the column (decoding the whole file first:
    a text handle decodes in chunks, so its error names no line)."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        bad = data[exc.start:exc.end].hex(" ")
        raise IUXrayFormatError(
            f"IU X-ray: {path} line {line}, column {column} (byte offset {exc.start}): byte(s) {bad} are not UTF-8 "
            f"({exc.reason}); the release's CSVs are UTF-8: re-encode the file (e.g. iconv -f latin1 -t utf-8) or repair the line"
        ) from None


def _read_csv(path: Path, columns: Sequence[str]) -> list[tuple[int, dict]]:
    """(line number, row) of a CSV, after checking it exists, is UTF-8, has ``columns`` and no ragged row."""
    if not path.is_file():
        raise IUXrayMissingFileError(f"IU X-ray: {path} not found. {_HOWTO}")
    rows = []
    with io.StringIO(_decode_csv(path), newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise IUXrayFormatError(f"IU X-ray: {path} is empty; it needs the columns {list(columns)}") from None
        except csv.Error as exc:
            raise IUXrayFormatError(f"IU X-ray: {path} cannot be parsed as CSV ({exc})") from None
        header = [h.strip() for h in header]
        missing = [c for c in columns if c not in header]
        if missing:
            raise IUXrayFormatError(f"IU X-ray: {path} lacks the column(s) {missing}; it has {header}, expected {list(columns)}")
        position = {c: header.index(c) for c in columns}
        line = reader.line_num
        try:
            for cells in reader:
                start, line = line + 1, reader.line_num
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise IUXrayFormatError(
                        f"IU X-ray: {path} line {start}: {len(cells)} cells, the header has {len(header)}; the file is not "
                        "in the release's CSV format (a quote left open or a stray delimiter)"
                    )
                rows.append((start, {c: cells[i] for c, i in position.items()}))
        except csv.Error as exc:
            raise IUXrayFormatError(f"IU X-ray: {path} line {reader.line_num} cannot be parsed as CSV ({exc})") from None
    return rows


@dataclass(frozen=True)
class _Record:
    uid: str
    text: str
    label: int
    files: dict  # view -> Path


@register_dataset("iu-xray")
class IUXray(Dataset):
    """Indiana University chest X-rays with reports (real data; see the module docstring for the format).

    ``IUXray(root, split="all", views=("frontal", "lateral"), image_size=224, limit=None,
    validate="headers", images_dir=None)``. Items: ``{"frontal", ["lateral",] "text", "label", "uid"}``.
    """

    classes = VL_CLASSES
    synthetic = False
    description = "IU X-ray (Indiana University chest radiographs with reports; real data)"

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        views: Sequence[str] = VL_VIEWS,
        image_size: int = 224,
        limit: int | None = None,
        validate: str = "headers",
        images_dir: str | Path | None = None,
    ) -> None:
        self.root = Path(root)
        if split not in IU_SPLITS:
            raise ValueError(f"split must be one of {IU_SPLITS}, got {split!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, Integral) or limit < 1):
            raise ValueError(f"limit must be None (every example) or a positive int, got {limit!r}")
        if validate not in IU_VALIDATION:
            raise ValueError(f"validate must be one of {IU_VALIDATION}, got {validate!r}")
        self.split, self.views, self.image_size, self.validate = split, check_views(views), check_image_size(image_size), validate
        if not self.root.is_dir():
            raise IUXrayMissingFileError(f"IU X-ray: no folder at {self.root}. {_HOWTO}")
        reports = _read_csv(self.root / REPORTS_CSV, IU_REPORT_COLUMNS)
        projections = _read_csv(self.root / PROJECTIONS_CSV, IU_PROJECTION_COLUMNS)
        self.images_dir = self._find_images_dir(images_dir)
        for path, rows in ((self.root / REPORTS_CSV, reports), (self.root / PROJECTIONS_CSV, projections)):
            empty = [str(line) for line, row in rows if not row["uid"].strip()]
            if empty:
                raise IUXrayFormatError(f"IU X-ray: {path} has an empty uid on line(s) {_listing(empty)}")
        files = self._parse_projections(reports, projections)

        self.skipped_uids: dict[str, list[str]] = defaultdict(list)
        self.records: list[_Record] = []
        uid_counts = Counter(row["uid"].strip() for _, row in reports)
        for _, row in reports:
            if limit is not None and len(self.records) >= limit:
                break
            uid = row["uid"].strip()
            if split != "all" and iu_split_of(uid) != split:
                continue
            reason, record = self._examine(uid, row, uid_counts[uid], files.get(uid, {}))
            if reason is None:
                self.records.append(record)
            else:
                self.skipped_uids[reason].append(uid)
        self.skipped_uids = {r: self.skipped_uids[r] for r in IU_SKIP_REASONS if self.skipped_uids.get(r)}
        self.skipped = {r: len(u) for r, u in self.skipped_uids.items()}
        self._report()
        if not self.records:
            raise IUXrayFormatError(
                f"IU X-ray: no usable example in {self.root / REPORTS_CSV} (split {split!r}, views {self.views}); "
                f"skipped: {self.skipped or 'none'}; ignored projection rows: {self.ignored_projection_rows or 'none'}"
            )

    # -- validation at construction ------------------------------------------------------------

    def _find_images_dir(self, images_dir) -> Path:
        if images_dir is not None:
            path = Path(images_dir)
            path = path if path.is_absolute() else self.root / path
            if not path.is_dir():
                raise IUXrayMissingFileError(f"IU X-ray: images_dir {path} is not a folder. {_HOWTO}")
            return path
        for candidate in IU_IMAGE_DIRS:
            if (self.root / candidate).is_dir():
                return self.root / candidate
        raise IUXrayMissingFileError(
            f"IU X-ray: no images folder under {self.root} (looked for {', '.join(IU_IMAGE_DIRS)}). {_HOWTO}"
        )

    def _parse_projections(self, reports, projections) -> dict[str, dict[str, list[str]]]:
        """uid -> view -> file names (sorted); counts unusable projection rows and finds image files that
        rows of different uids (or of different projections of one uid) name: whose image (which view)
        such a file is cannot be told."""
        path = self.root / PROJECTIONS_CSV
        unsafe = [f"line {line}: {row['filename']!r}" for line, row in projections if _unsafe(row["filename"].strip())]
        if unsafe:
            raise IUXrayFormatError(
                f"IU X-ray: {path} has {len(unsafe)} file name(s) that are not plain names inside {self.images_dir} "
                f"({_listing(unsafe)})"
            )
        known = {row["uid"].strip() for _, row in reports}
        ignored: Counter = Counter()
        files: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        for _, row in projections:
            uid, projection = row["uid"].strip(), row["projection"].strip().lower()
            if uid not in known:
                ignored["unknown_uid"] += 1
            elif projection not in _PROJECTIONS:
                ignored["unknown_projection"] += 1
            else:
                files[uid][_PROJECTIONS[projection]].append(row["filename"].strip())
        self.ignored_projection_rows: dict[str, int] = dict(sorted(ignored.items()))
        self._find_shared_images(projections)
        return {uid: {view: sorted(names) for view, names in by_view.items()} for uid, by_view in files.items()}

    def _find_shared_images(self, projections) -> None:
        """``shared_images``: file name(s) -> the ``"uid projection"`` claims of every existing image file
        that more than one uid, or more than one projection of one uid, names, over the whole projections
        file. Files are compared by identity (device, inode), so a symbolic or hard link to another
        patient's image, or a name differing only in case on a case-insensitive file system, is caught
        too; one ``stat`` per file name (measured: +66 ms for 6,000 rows, so ~80 ms for the release's 7,470)."""
        identity: dict[str, tuple | None] = {}
        claims: dict[tuple, set] = defaultdict(set)
        names: dict[tuple, set] = defaultdict(set)
        for _, row in projections:
            name = row["filename"].strip()
            if name not in identity:
                identity[name] = _file_identity(self.images_dir / name)
            key = identity[name]
            if key is not None:  # a missing file is not shared: its rows are skipped as missing_image
                claims[key].add((row["uid"].strip(), row["projection"].strip().lower()))
                names[key].add(name)
        shared = {key for key, c in claims.items() if len(c) > 1}
        self._shared_names = {name for name, key in identity.items() if key in shared}
        self.shared_images: dict[str, list[str]] = {
            " = ".join(sorted(names[key])): [f"{uid} {projection}" for uid, projection in sorted(claims[key])] for key in shared
        }

    def _examine(self, uid: str, row: dict, count: int, files: dict) -> tuple[str | None, _Record | None]:
        if count > 1:
            return "duplicate_uid", None
        if _missing(row["Problems"]):
            return "missing_label", None
        text = iu_report_text(row)
        if not text:
            return "empty_text", None
        if any(not files.get(view) for view in self.views):
            return "missing_projection", None
        if any(name in self._shared_names for view in self.views for name in files[view]):
            return "shared_image", None
        chosen = {view: self.images_dir / files[view][0] for view in self.views}
        if any(not p.is_file() for p in chosen.values()):
            return "missing_image", None
        for path in chosen.values():
            if path.stat().st_size == 0:
                return "unreadable_image", None
            if self.validate == "headers":
                try:
                    with Image.open(path) as image:
                        _check_mode(image, path)
                except (OSError, SyntaxError, ValueError):  # PIL's UnidentifiedImageError is an OSError
                    return "unreadable_image", None
            elif self.validate == "full":
                try:
                    self._decode(path)
                except IUXrayImageError:
                    return "unreadable_image", None
        return None, _Record(uid, text, iu_label(row["Problems"]), chosen)

    def _report(self) -> None:
        if not self.skipped and not self.ignored_projection_rows:
            return
        parts = []
        if self.skipped:
            total = sum(self.skipped.values())
            shown = "; ".join(f"{r}: {n} ({_listing(self.skipped_uids[r])})" for r, n in self.skipped.items())
            parts.append(f"skipped {total} report row(s) of split {self.split!r} ({shown})")
            if self.skipped.get("shared_image"):
                shared = [f"{name}: {', '.join(who)}" for name, who in sorted(self.shared_images.items())]
                parts.append(f"image file(s) named for more than one uid or view ({_listing(shared)})")
        if self.ignored_projection_rows:
            ignored = ", ".join(f"{r}: {n}" for r, n in self.ignored_projection_rows.items())
            parts.append(f"ignored {sum(self.ignored_projection_rows.values())} row(s) of {PROJECTIONS_CSV} ({ignored})")
        warnings.warn(f"IU X-ray at {self.root}: " + "; ".join(parts) + f"; {len(self.records)} example(s) kept",
                      IUXraySkipWarning, stacklevel=3)

    # -- reading ---------------------------------------------------------------------------------

    @property
    def uids(self) -> list[str]:
        return [r.uid for r in self.records]

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    @property
    def texts(self) -> list[str]:
        return [r.text for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def fingerprint(self, image_contents: bool = False) -> str:
        """SHA-256 (hex) of what this dataset serves: the loader's format version, views and image size,
        and per example its uid, label and text and, per view, the image's file name, size and
        modification time (``st_mtime_ns``), or with ``image_contents`` the SHA-256 of its bytes.

        For keying caches of models trained on the data: any change of a label, a report or which
        image is used changes it, and so does rewriting an image (its modification time changes). The
        default costs one ``stat`` per image (48 ms for 2,400 examples of a fixture); it misses only an image
        replaced by one of the same size with its modification time set back (``cp -p`` / ``rsync -t``
        of other content, or a file system with a coarse clock rewriting it within one tick), which
        ``image_contents=True`` also catches, at the cost of reading every image."""
        digest = hashlib.sha256()
        digest.update(json.dumps({"format": IU_FORMAT_VERSION, "views": self.views, "image_size": self.image_size}).encode())
        for record in self.records:
            entry: list = [record.uid, record.label, record.text]
            for view in self.views:
                path = record.files[view]
                try:
                    st = path.stat()
                    entry += [view, path.name, st.st_size, _content_digest(path) if image_contents else st.st_mtime_ns]
                except OSError as exc:
                    raise IUXrayImageError(f"IU X-ray image {path} (uid {record.uid}, {view}) cannot be read for the fingerprint ({exc})") from None
            digest.update(json.dumps(entry).encode() + b"\n")
        return digest.hexdigest()

    def _decode(self, path: Path) -> torch.Tensor:
        try:
            with Image.open(path) as image:
                _check_mode(image, path)
                if image.mode.startswith("I;16"):
                    pixels = np.asarray(image, dtype=np.float32) / 65535.0
                    image = Image.fromarray(pixels)  # mode F
                else:
                    image = image.convert("L")
                if image.size != (self.image_size, self.image_size):
                    image = image.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.float32)
        except (OSError, SyntaxError, ValueError) as exc:
            raise IUXrayImageError(
                f"IU X-ray image {path} cannot be decoded ({exc}); validate='full' checks every image at construction"
            ) from None
        if image.mode == "L":
            pixels = pixels / 255.0
        return torch.from_numpy(np.clip(pixels, 0.0, 1.0)).unsqueeze(0)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        item: dict = {view: self._decode(record.files[view]) for view in self.views}
        item.update(text=record.text, label=record.label, uid=record.uid)
        return item

    def tensors(self, indices=None) -> tuple[dict, torch.Tensor]:
        """The examples at ``indices`` (default: all) as ``({"frontal", ["lateral",] "text"}, labels)``."""
        return stack_items([self[i] for i in _indices(len(self), indices)], self.views)


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a regular file (links followed), None when there is none."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None


def _content_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_mode(image: Image.Image, path: Path) -> None:
    if image.mode in ("I", "F", "CMYK", "YCbCr", "LAB", "HSV") or image.mode.startswith("BGR"):
        raise ValueError(f"{path}: unsupported PIL mode {image.mode} for a radiograph (expected L, I;16, RGB, RGBA, P)")
