"""Loader for the public MF (MFNet) RGB-thermal segmentation dataset layout.

    root/images/<name>.png   480x640x4 uint8: channels 0-2 RGB, channel 3 thermal
    root/labels/<name>.png   480x640 uint8 class ids (0 unlabeled ... 8 bump)
    root/train.txt, val.txt, test.txt, test_day.txt, test_night.txt   one <name> per line

The dataset is distributed by the MFNet authors (Ha et al., IROS 2017); it is not bundled. Items are
``{"rgb": (3, H, W), "ir": (1, H, W)`` floats in [0, 1], ``"labels": (H, W)`` int64, ``"name": str}``.

Validation: every frame of the chosen split (the first ``limit`` frames) is checked at construction,
before the first item is read, and nothing is repaired silently.

- the split file must list at least one name, each at most once, and every entry must be a plain
  file name (``00001D`` or ``00001D.png``): absolute paths, ``..`` and path separators, which would
  read files outside ``images/`` and ``labels/``, are rejected with the offending entries named;
- ``limit`` is ``None`` (every frame) or a positive int; ``size`` is ``None`` or ``(H, W)`` of positive ints;
- ``validate`` (one of :data:`MF_VALIDATION`) says how much of each frame is checked:
  ``"files"``: the image and the label file exist; ``"headers"``: also each PNG's header (about
  0.3 ms a file; pixels are not decoded): each image has 4 channels (PIL mode ``RGBA``), each label map
  a label mode (``L``, ``P``, ``RGB``, ``I``, ``I;16``), image and labels the same size; ``"pixels"``
  (the default): also decodes every image and label map and runs the per-item checks below on all of
  them (a few seconds for the 393 frames of the test split at 480x640; the alternative is a truncated
  PNG or a bad class id stopping a benchmark minutes in). ``"headers"`` / ``"files"`` opt out: pixels
  are then checked only when ``__getitem__`` reads them;
- ``on_error="raise"`` (default): ONE error lists every bad frame of the selection and why
  (:class:`MFImageError`; ``FileNotFoundError`` when a file is missing, the other problems listed in
  the same message), before any item is read. ``on_error="skip"``: bad frames are left out, counted
  per reason in ``dataset.skipped`` and named in ``dataset.skipped_names`` (see :data:`MF_SKIP_REASONS`),
  and one :class:`MFSkipWarning` says how many and which; as in the IU X-ray loader, ``limit`` then
  counts usable frames (frames are examined in split order until ``limit`` pass). No usable frame at
  all raises :class:`MFImageError`.
- :meth:`MFDataset.validate` runs the same checks later (e.g. ``validate="pixels"`` on a dataset built
  with ``validate="headers"``).

The thermal channel and the alpha rule: the real MF images are 4-channel PNGs whose fourth channel
is the thermal image, so PIL reports them as mode ``RGBA`` (the two published frames of the official
MFNet repository, 01234N.png and 01477D.png, are ``RGBA``, with a fourth channel ranging over 8-243
and 4-245). The mode therefore cannot tell a real frame from an ordinary RGB picture saved with an
alpha channel, whose alpha would silently be read as thermal. What tells them apart is the content:
an opaque picture's alpha is 255 at every pixel, which no thermal image is. An image whose fourth
channel is 255 everywhere is rejected when its pixels are checked, with an error naming the file.
Labels with a class id >= 9 (or < 0) are rejected the same way, and so are label PNGs stored with
several channels (RGB) that differ anywhere: only equal channels are read as class ids, a
colour-coded map is refused. A PNG whose header reads but whose pixels do not (a truncated file) is
rejected naming the file. Each of these is an :class:`MFImageError` (a ``ValueError``).
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from numbers import Integral
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import Dataset

from ..errors import InputError
from . import register_dataset
from .synthetic_rgbt import MF_CLASSES

__all__ = ["MFDataset", "MF_SPLITS", "MF_VALIDATION", "MF_ON_ERROR", "MF_SKIP_REASONS", "MFImageError", "MFSkipWarning", "check_size"]

MF_SPLITS = ("train", "val", "test", "test_day", "test_night")
#: the ``validate=`` levels of :class:`MFDataset`, cheapest first
MF_VALIDATION = ("files", "headers", "pixels")
#: what :class:`MFDataset` does with bad frames
MF_ON_ERROR = ("raise", "skip")
#: why a frame is bad (``dataset.skipped`` keys), in the order they are checked
MF_SKIP_REASONS = ("missing_file", "unreadable", "bad_image", "bad_labels")
_LABEL_MODES = ("L", "P", "RGB", "I", "I;16")
_HOWTO = (
    "Get the MF dataset from the MFNet authors (Ha et al., IROS 2017; linked from the MFNet-pytorch and "
    "RTFNet repository READMEs) and pass its folder, which holds images/, labels/ and the split files"
)
_SHOWN = 5
#: problems spelled out in one validation error (all of them are in ``error.problems``)
_SHOWN_PROBLEMS = 20


class MFImageError(InputError):
    """An MF image or label PNG cannot be decoded (truncated, corrupt) or holds what the layout does not
    allow (not 4 channels, an opaque alpha read as thermal, class ids >= 9 or < 0, labels in channels
    that differ); the message names the file. Raised by validation it lists every bad frame:
    ``problems`` holds ``(name, reason, message)`` for each problem (``reason`` in :data:`MF_SKIP_REASONS`)."""

    def __init__(self, message: str, *, reason: str | None = None, problems=()) -> None:
        super().__init__(message)
        self.reason = reason
        self.problems = list(problems)


class MFSkipWarning(UserWarning):
    """Frames of an MF split were left out (``on_error="skip"``); the message has the counts and names."""


def check_size(size, what: str = "size") -> tuple[int, int] | None:
    """``size`` as ``(H, W)`` of positive ints, or None (no resizing); anything else raises ValueError
    before work starts (``(0, 0)`` would otherwise fail inside ``interpolate`` on the first item)."""
    if size is None:
        return None
    try:
        pair = tuple(size)
    except TypeError:
        pair = ()
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, Integral) or v < 1 for v in pair):
        raise ValueError(f"{what} must be None or (H, W) with two positive ints, got {size!r}")
    return int(pair[0]), int(pair[1])


def _listing(items: list[str]) -> str:
    return ", ".join(items[:_SHOWN]) + (f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else "")


def _unsafe(name: str) -> bool:
    """True when ``name`` is not a plain file name inside one folder."""
    seps = {"/", "\\", os.sep, os.altsep} - {None}
    return (
        name in (".", "..")
        or any(sep in name for sep in seps)
        or "\0" in name
        or Path(name).is_absolute()
        or bool(Path(name).drive)
        or Path(name).name != name
    )


def _check_choice(value, choices: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{what} must be one of {choices}, got {value!r}")
    return value


@register_dataset("mf")
class MFDataset(Dataset):
    """The MF dataset from its public folder layout; ``size=(H, W)`` resizes (bilinear / nearest for labels).

    ``limit``: the first ``limit`` frames of the split (``None``: all; with ``on_error="skip"`` the first
    ``limit`` usable ones). ``validate``: how much of every selected frame is checked at construction, one
    of :data:`MF_VALIDATION` (default ``"pixels"``: everything, decoding each PNG). ``on_error``:
    ``"raise"`` (one error listing every bad frame) or ``"skip"`` (left out, counted in ``skipped``,
    named in ``skipped_names``, one :class:`MFSkipWarning`). See the module docstring."""

    classes = MF_CLASSES
    synthetic = False

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        size: tuple[int, int] | None = None,
        limit: int | None = None,
        validate: str = "pixels",
        on_error: str = "raise",
    ) -> None:
        self.root = Path(root)
        if split not in MF_SPLITS:
            raise ValueError(f"split must be one of {MF_SPLITS}, got {split!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, Integral) or limit < 1):
            raise ValueError(f"limit must be None (every frame) or a positive int, got {limit!r}")
        _check_choice(validate, MF_VALIDATION, "validate")
        _check_choice(on_error, MF_ON_ERROR, "on_error")
        size = check_size(size)
        for folder in ("images", "labels"):
            if not (self.root / folder).is_dir():
                raise FileNotFoundError(f"no MF dataset at {self.root} (missing {folder}/). {_HOWTO}")
        split_file = self.root / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"split file {split_file} not found. {_HOWTO}")
        self.split, self.size = split, size
        names = self._parse(split_file)
        #: reason -> number of frames left out (``on_error="skip"``; nonzero reasons only)
        self.skipped: dict[str, int] = {}
        #: reason -> names of the frames left out
        self.skipped_names: dict[str, list[str]] = {}
        self._frame_sizes: dict[str, tuple[int, int]] | None = None
        self.names = names[:limit] if limit is not None else names
        if on_error == "skip":  # limit counts usable frames: examine frames until enough pass
            self._check(names, validate, on_error, want=None if limit is None else int(limit))
        else:
            self._check(self.names, validate, on_error)

    def validate(self, on_error: str = "raise", level: str = "pixels") -> MFDataset:
        """Check every frame of the dataset now at ``level`` (one of :data:`MF_VALIDATION`; default
        ``"pixels"``: decode every image and label map). ``on_error="raise"``: one error listing every bad
        frame; ``"skip"``: bad frames are dropped (``len()`` shrinks), counted in ``skipped`` and named in
        a :class:`MFSkipWarning`. Returns the dataset."""
        self._check(list(self.names), _check_choice(level, MF_VALIDATION, "level"), _check_choice(on_error, MF_ON_ERROR, "on_error"))
        return self

    # -- validation ------------------------------------------------------------------------------

    def _parse(self, split_file: Path) -> list[str]:
        entries = []  # (line number, name)
        data = split_file.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise ValueError(
                f"split file {split_file} line {line}: byte(s) {data[exc.start:exc.end].hex(' ')} "
                f"are not UTF-8 ({exc.reason}); entries must look like 00001D"
            ) from None
        for number, line in enumerate(text.splitlines(), 1):
            entry = line.strip()
            if entry:
                entries.append((number, entry[:-4] if entry.endswith(".png") else entry))
        if not entries:
            raise ValueError(f"split file {split_file} lists no frame names (it is empty or blank). {_HOWTO}")
        unsafe = [f"line {n}: {e!r}" for n, e in entries if _unsafe(e) or not e]
        if unsafe:
            raise ValueError(
                f"split file {split_file} has {len(unsafe)} "
                + ("entry that is not a plain frame name" if len(unsafe) == 1 else "entries that are not plain frame names")
                + f" "
                f"and would read files outside {self.root / 'images'} ({_listing(unsafe)}); entries must look like 00001D"
            )
        counts = Counter(e for _, e in entries)
        duplicates = [f"{e!r} on lines {', '.join(str(n) for n, x in entries if x == e)}" for e, c in counts.items() if c > 1]
        if duplicates:
            raise ValueError(
                f"split file {split_file} lists {len(duplicates)} frame name(s) more than once ({_listing(duplicates)}); "
                "each frame would be scored twice"
            )
        return [e for _, e in entries]

    def _path(self, folder: str, name: str) -> Path:
        return self.root / folder / f"{name}.png"

    def _frame_problems(self, name: str, level: str, sizes: dict[str, tuple[int, int]]) -> list[tuple[str, str]]:
        """``(reason, message)`` for everything wrong with frame ``name`` at ``level``; records its size."""
        image_path, label_path = self._path("images", name), self._path("labels", name)
        missing = [("missing_file", str(p)) for p in (image_path, label_path) if not p.is_file()]
        if missing or level == "files":
            return missing
        problems = []
        try:
            reading = image_path
            with Image.open(image_path) as image:
                image_mode, image_size = image.mode, image.size
            reading = label_path
            with Image.open(label_path) as labels:
                label_mode, label_size = labels.mode, labels.size
        except (OSError, SyntaxError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            return [("unreadable", f"{name}: cannot read the PNG header of {reading} ({exc})")]
        sizes[name] = (image_size[1], image_size[0])
        if image_mode != "RGBA":
            problems.append(("bad_image", f"MF image '{name}' ({image_path}) must be HxWx4 uint8 (RGB + thermal; PIL mode RGBA), got PIL mode {image_mode}"))
        if label_mode not in _LABEL_MODES:
            problems.append(("bad_labels", f"MF labels '{name}' ({label_path}) have PIL mode {label_mode}, expected one of {_LABEL_MODES}"))
        if label_size != image_size:
            problems.append(("bad_labels", f"MF labels '{name}' are {label_size[1]}x{label_size[0]}, image is {image_size[1]}x{image_size[0]}"))
        if problems or level == "headers":
            return problems
        shape = None
        try:
            shape = self._image(name).shape[:2]
        except MFImageError as exc:
            problems.append((exc.reason or "bad_image", str(exc)))
        try:
            self._labels(name, shape)
        except MFImageError as exc:
            problems.append((exc.reason or "bad_labels", str(exc)))
        return problems

    def _check(self, candidates: list[str], level: str, on_error: str, want: int | None = None) -> None:
        """Check ``candidates`` at ``level``; keep the good ones in ``self.names`` (at most ``want``),
        raise for the bad ones or skip them (``on_error``)."""
        sizes: dict[str, tuple[int, int]] = {}
        kept: list[str] = []
        bad: list[tuple[str, str, str]] = []  # (name, reason, message)
        for name in candidates:
            if want is not None and len(kept) == want:
                break
            problems = self._frame_problems(name, level, sizes)
            if problems:
                bad.extend((name, reason, message) for reason, message in problems)
            else:
                kept.append(name)
        bad_names = list(dict.fromkeys(name for name, _, _ in bad))
        if bad and on_error == "raise":
            raise self._error(bad, bad_names, len(candidates), level)
        if bad:
            first = {name: min((r for n, r, _ in bad if n == name), key=MF_SKIP_REASONS.index) for name in bad_names}
            for reason in MF_SKIP_REASONS:
                names = [n for n in bad_names if first[n] == reason]
                if names:
                    self.skipped[reason] = self.skipped.get(reason, 0) + len(names)
                    self.skipped_names.setdefault(reason, []).extend(names)
            self.names = kept
            shown = "; ".join(f"{r}: {n} ({_listing(self.skipped_names[r])})" for r, n in self.skipped.items())
            detail = "; ".join(m for _, _, m in bad[:_SHOWN])
            warnings.warn(
                f"MF {self.split} at {self.root}: skipped {len(bad_names)} bad frame(s) ({shown}); {len(kept)} frame(s) kept. "
                f"First problems: {detail}" + (f"; ... ({len(bad) - _SHOWN} more)" if len(bad) > _SHOWN else ""),
                MFSkipWarning, stacklevel=4,
            )
            if not kept:
                raise MFImageError(f"MF {self.split} at {self.root}: no usable frame, all {len(bad_names)} examined were bad "
                                   f"({shown}). {_HOWTO}", problems=bad)
        self.names = kept
        if level == "files":
            self._frame_sizes = None
        else:
            self._frame_sizes = {n: sizes[n] for n in kept}

    def _error(self, bad: list[tuple[str, str, str]], bad_names: list[str], checked: int, level: str) -> Exception:
        missing = [m for _, r, m in bad if r == "missing_file"]
        others = [m for _, r, m in bad if r != "missing_file"]
        listed = others[:_SHOWN_PROBLEMS]
        more = f"; ... ({len(others) - len(listed)} more, all in error.problems)" if len(others) > len(listed) else ""
        if missing:
            message = f"MF {self.split}: {len(missing)} file(s) listed by {self.split}.txt are missing ({', '.join(missing)}). {_HOWTO}"
            if others:
                message += f". Also {len(others)} other problem(s): " + "; ".join(listed) + more
            error: Exception = FileNotFoundError(message)
            error.problems = bad  # type: ignore[attr-defined]
            return error
        return MFImageError(
            f"MF {self.split} at {self.root}: {len(bad_names)} of {checked} frame(s) checked ({level}) cannot be used, "
            f"{len(bad)} problem(s): " + "; ".join(listed) + more
            + ". Replace or remove these frames (or pass on_error='skip' to leave them out)",
            problems=bad,
        )

    def frame_size(self) -> tuple[int, int]:
        """(H, W) of every item: ``size`` when given, else the frames' own size, which must be the same for
        all of them (batches of different sizes cannot be stacked); ValueError naming the sizes otherwise."""
        if self.size:
            return self.size
        if self._frame_sizes is None:  # validate="files": read the headers now
            self._check(list(self.names), "headers", "raise")
        sizes = self._frame_sizes
        distinct = sorted(set(sizes.values()))
        if len(distinct) > 1:
            examples = [f"{name} {h}x{w}" for size in distinct for name, (h, w) in list(sizes.items()) if (h, w) == size][:_SHOWN]
            raise ValueError(f"MF {self.split}: the frames differ in size ({', '.join(examples)}); pass size=(H, W) to resize them")
        return distinct[0]

    # -- reading ---------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.names)

    def _read(self, folder: str, name: str) -> np.ndarray:
        path = self._path(folder, name)
        if not path.is_file():
            raise FileNotFoundError(f"MF {self.split} item '{name}': {path} is missing")
        try:
            with Image.open(path) as image:
                return np.array(image)  # a writable copy for torch.from_numpy
        except (OSError, SyntaxError, ValueError) as exc:  # a truncated PNG: OSError "image file is truncated"
            kind = "image" if folder == "images" else "labels"
            raise MFImageError(
                f"MF {kind} '{name}' ({path}) cannot be decoded ({exc}); the file is truncated or corrupt",
                reason="unreadable",
            ) from None

    def _image(self, name: str) -> np.ndarray:
        image = self._read("images", name)
        path = self._path("images", name)
        if image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint8:
            raise MFImageError(f"MF image '{name}' ({path}) must be HxWx4 uint8 (RGB + thermal), got {image.shape} {image.dtype}",
                               reason="bad_image")
        if int(image[..., 3].min()) == 255:
            raise MFImageError(
                f"MF image '{name}' ({path}): channel 3, read as thermal, is 255 at every pixel. That is the alpha "
                "channel of an opaque RGBA picture, not a thermal image; MF frames store thermal in the fourth channel",
                reason="bad_image",
            )
        return image

    def _labels(self, name: str, shape: tuple[int, ...] | None) -> np.ndarray:
        """The class-id map of ``name``, checked (against the image's ``shape`` when given)."""
        labels = self._read("labels", name)
        label_path = self._path("labels", name)
        if labels.ndim == 3:  # some copies store labels as RGB with equal channels: anything else is not class ids
            differ = (labels != labels[..., :1]).any(axis=2)
            if differ.any():
                row, col = np.argwhere(differ)[0]
                raise MFImageError(
                    f"MF labels '{name}' ({label_path}) have {labels.shape[2]} channels that differ at {int(differ.sum())} "
                    f"pixel(s), e.g. (row {row}, column {col}) = {tuple(int(v) for v in labels[row, col])}: class ids must be "
                    "one channel (or equal channels); a colour-coded label image cannot be read as class ids",
                    reason="bad_labels",
                )
            labels = labels[..., 0]
        if shape is not None and labels.shape != tuple(shape):
            raise MFImageError(f"MF labels '{name}' are {labels.shape}, image is {tuple(shape)}", reason="bad_labels")
        if labels.max() >= len(MF_CLASSES):
            raise MFImageError(
                f"MF labels '{name}' ({label_path}) contain class {int(labels.max())}; ids must be < {len(MF_CLASSES)}",
                reason="bad_labels",
            )
        if labels.min() < 0:
            raise MFImageError(f"MF labels '{name}' ({label_path}) contain class {int(labels.min())}; ids must be >= 0",
                               reason="bad_labels")
        return labels

    def _load(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        image = self._image(name)
        return image, self._labels(name, image.shape[:2])

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        image, labels = self._load(name)
        x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        y = torch.from_numpy(labels.astype(np.int64))
        if self.size and tuple(x.shape[1:]) != self.size:
            x = F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
            y = F.interpolate(y[None, None].float(), size=self.size, mode="nearest-exact")[0, 0].long()  # pixel centres, as the image
        return {"rgb": x[:3], "ir": x[3:], "labels": y, "name": name}
