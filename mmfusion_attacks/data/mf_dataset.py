"""Loader for the public MF (MFNet) RGB-thermal segmentation dataset layout.

    root/images/<name>.png   480x640x4 uint8: channels 0-2 RGB, channel 3 thermal
    root/labels/<name>.png   480x640 uint8 class ids (0 unlabeled ... 8 bump)
    root/train.txt, val.txt, test.txt, test_day.txt, test_night.txt   one <name> per line

The dataset is distributed by the MFNet authors (Ha et al., IROS 2017); it is not bundled. Items are
``{"rgb": (3, H, W), "ir": (1, H, W)`` floats in [0, 1], ``"labels": (H, W)`` int64, ``"name": str}``.

Validation (everything that can be checked before work starts is checked at construction, and
nothing is skipped or repaired silently):

- the split file must list at least one name, each at most once, and every entry must be a plain
  file name (``00001D`` or ``00001D.png``): absolute paths, ``..`` and path separators, which would
  read files outside ``images/`` and ``labels/``, are rejected with the offending entries named;
- ``limit`` is ``None`` (every frame) or a positive int; ``size`` is ``None`` or ``(H, W)`` of positive ints;
- ``validate="files"`` checks that the image and the label file of every selected frame exist;
  ``"headers"`` (the default; it opens each PNG's header, about 0.3 ms a file, pixels are not
  decoded) also checks that each image has 4 channels (PIL mode ``RGBA``), that each label map has a
  label mode (``L``, ``P``, ``RGB``, ``I``, ``I;16``) and that image and labels have the same size;
  ``"pixels"`` decodes every frame up front and runs the per-item checks below on all of them.

The thermal channel and the alpha rule: the real MF images are 4-channel PNGs whose fourth channel
is the thermal image, so PIL reports them as mode ``RGBA`` (the two published frames of the official
MFNet repository, 01234N.png and 01477D.png, are ``RGBA``, with a fourth channel ranging over 8-243
and 4-245). The mode therefore cannot tell a real frame from an ordinary RGB picture saved with an
alpha channel, whose alpha would silently be read as thermal. What tells them apart is the content:
an opaque picture's alpha is 255 at every pixel, which no thermal image is. An image whose fourth
channel is 255 everywhere is rejected when it is read (``validate="pixels"``: at construction) with
an error naming the file. Labels with a class id >= 9 (or < 0) are rejected the same way, and so are
label PNGs stored with several channels (RGB) that differ anywhere: only equal channels are read as
class ids, a colour-coded map is refused (:class:`MFImageError`). A PNG whose header reads but whose
pixels do not (a truncated file) raises :class:`MFImageError` naming the file when it is read.
"""

from __future__ import annotations

import os
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

__all__ = ["MFDataset", "MF_SPLITS", "MF_VALIDATION", "MFImageError", "check_size"]

MF_SPLITS = ("train", "val", "test", "test_day", "test_night")
#: the ``validate=`` levels of :class:`MFDataset`, cheapest first
MF_VALIDATION = ("files", "headers", "pixels")
_LABEL_MODES = ("L", "P", "RGB", "I", "I;16")
_HOWTO = (
    "Get the MF dataset from the MFNet authors (Ha et al., IROS 2017; linked from the MFNet-pytorch and "
    "RTFNet repository READMEs) and pass its folder, which holds images/, labels/ and the split files"
)
_SHOWN = 5


class MFImageError(InputError):
    """An MF image or label PNG cannot be decoded (truncated, corrupt) or holds what the layout does not
    allow (labels in channels that differ, negative class ids); the message names the file."""


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


@register_dataset("mf")
class MFDataset(Dataset):
    """The MF dataset from its public folder layout; ``size=(H, W)`` resizes (bilinear / nearest for labels).

    ``limit``: the first ``limit`` frames of the split (``None``: all). ``validate``: how much is checked
    at construction, one of :data:`MF_VALIDATION` (see the module docstring)."""

    classes = MF_CLASSES
    synthetic = False

    def __init__(
        self,
        root: str | Path,
        split: str = "test",
        size: tuple[int, int] | None = None,
        limit: int | None = None,
        validate: str = "headers",
    ) -> None:
        self.root = Path(root)
        if split not in MF_SPLITS:
            raise ValueError(f"split must be one of {MF_SPLITS}, got {split!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, Integral) or limit < 1):
            raise ValueError(f"limit must be None (every frame) or a positive int, got {limit!r}")
        if validate not in MF_VALIDATION:
            raise ValueError(f"validate must be one of {MF_VALIDATION}, got {validate!r}")
        size = check_size(size)
        for folder in ("images", "labels"):
            if not (self.root / folder).is_dir():
                raise FileNotFoundError(f"no MF dataset at {self.root} (missing {folder}/). {_HOWTO}")
        split_file = self.root / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"split file {split_file} not found. {_HOWTO}")
        self.split, self.size = split, size
        names = self._parse(split_file)
        self.names = names[:limit] if limit is not None else names
        self._check_files()
        if validate in ("headers", "pixels"):
            self._check_headers()
        if validate == "pixels":
            for name in self.names:
                self._load(name)

    # -- validation at construction ------------------------------------------------------------

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

    def _check_files(self) -> None:
        missing = [str(self._path(folder, name)) for name in self.names for folder in ("images", "labels") if not self._path(folder, name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"MF {self.split}: {len(missing)} file(s) listed by {self.split}.txt are missing ({_listing(missing)}). {_HOWTO}"
            )

    def _check_headers(self) -> None:
        problems = []
        self._frame_sizes: dict[str, tuple[int, int]] = {}
        for name in self.names:
            image_path, label_path = self._path("images", name), self._path("labels", name)
            try:
                reading = image_path
                with Image.open(image_path) as image:
                    image_mode, image_size = image.mode, image.size
                reading = label_path
                with Image.open(label_path) as labels:
                    label_mode, label_size = labels.mode, labels.size
            except (OSError, SyntaxError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
                problems.append(f"{name}: cannot read the PNG header of {reading} ({exc})")
                continue
            self._frame_sizes[name] = (image_size[1], image_size[0])
            if image_mode != "RGBA":
                problems.append(
                    f"MF image '{name}' ({image_path}) must be HxWx4 uint8 (RGB + thermal; PIL mode RGBA), got PIL mode {image_mode}"
                )
            if label_mode not in _LABEL_MODES:
                problems.append(f"MF labels '{name}' ({label_path}) have PIL mode {label_mode}, expected one of {_LABEL_MODES}")
            if label_size != image_size:
                problems.append(
                    f"MF labels '{name}' are {label_size[1]}x{label_size[0]}, image is {image_size[1]}x{image_size[0]}"
                )
        if problems:
            raise ValueError(f"MF {self.split}: {len(problems)} problem(s) in the frames: " + "; ".join(problems[:_SHOWN])
                             + (f"; ... ({len(problems) - _SHOWN} more)" if len(problems) > _SHOWN else ""))

    def frame_size(self) -> tuple[int, int]:
        """(H, W) of every item: ``size`` when given, else the frames' own size, which must be the same for
        all of them (batches of different sizes cannot be stacked); ValueError naming the sizes otherwise."""
        if self.size:
            return self.size
        sizes = getattr(self, "_frame_sizes", None)
        if sizes is None:  # validate="files": read the headers now
            self._check_headers()
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
                f"MF {kind} '{name}' ({path}) cannot be decoded ({exc}); the file is truncated or corrupt. "
                "validate='pixels' decodes every frame at construction"
            ) from None

    def _load(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        image = self._read("images", name)
        path = self._path("images", name)
        if image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint8:
            raise ValueError(f"MF image '{name}' ({path}) must be HxWx4 uint8 (RGB + thermal), got {image.shape} {image.dtype}")
        if int(image[..., 3].min()) == 255:
            raise ValueError(
                f"MF image '{name}' ({path}): channel 3, read as thermal, is 255 at every pixel. That is the alpha "
                "channel of an opaque RGBA picture, not a thermal image; MF frames store thermal in the fourth channel"
            )
        labels = self._read("labels", name)
        label_path = self._path("labels", name)
        if labels.ndim == 3:  # some copies store labels as RGB with equal channels: anything else is not class ids
            differ = (labels != labels[..., :1]).any(axis=2)
            if differ.any():
                row, col = np.argwhere(differ)[0]
                raise MFImageError(
                    f"MF labels '{name}' ({label_path}) have {labels.shape[2]} channels that differ at {int(differ.sum())} "
                    f"pixel(s), e.g. (row {row}, column {col}) = {tuple(int(v) for v in labels[row, col])}: class ids must be "
                    "one channel (or equal channels); a colour-coded label image cannot be read as class ids"
                )
            labels = labels[..., 0]
        if labels.shape != image.shape[:2]:
            raise ValueError(f"MF labels '{name}' are {labels.shape}, image is {image.shape[:2]}")
        if labels.max() >= len(MF_CLASSES):
            raise ValueError(
                f"MF labels '{name}' ({label_path}) contain class {int(labels.max())}; ids must be < {len(MF_CLASSES)}"
            )
        if labels.min() < 0:
            raise MFImageError(f"MF labels '{name}' ({label_path}) contain class {int(labels.min())}; ids must be >= 0")
        return image, labels

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        image, labels = self._load(name)
        x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        y = torch.from_numpy(labels.astype(np.int64))
        if self.size and tuple(x.shape[1:]) != self.size:
            x = F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
            y = F.interpolate(y[None, None].float(), size=self.size, mode="nearest")[0, 0].long()
        return {"rgb": x[:3], "ir": x[3:], "labels": y, "name": name}
