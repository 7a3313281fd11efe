"""Fashion-MNIST, offline: real images from Debian's ``dataset-fashion-mnist``, captions from templates.

Why this data: the CLIP-like model (:mod:`mmfusion_attacks.models.clip_like`) needs real images that are
available without a download at run time. Debian ships Zalando's Fashion-MNIST (60,000 train + 10,000
test grayscale 28x28 images, 10 classes) as IDX files in ``/usr/share/datasets/fashion-mnist/``
(``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``, ``t10k-...``); :func:`read_idx` reads
them, gzip or raw.

Captions are written from :data:`CAPTION_TEMPLATES` ("a photo of a {}.", ...) with the class's name
(:data:`CLASS_NAMES`); :data:`HELD_OUT_CLASSES` are the classes a CLIP-like model is *not* trained on, so
its zero-shot accuracy on them measures transfer to unseen class names, not memorised ones.

:class:`FashionMNISTZeroShot` (registered as ``"fashion-mnist-zero-shot"``) serves the same images with each
example's zero-shot prompt set (the text modality of :func:`~mmfusion_attacks.models.contrastive.zero_shot_model`),
so a spec can attack a CLIP-like model on them.

Where the package is not installed, ``source="auto"`` (the default) warns with how to get it
(``apt-get install dataset-fashion-mnist``) and serves a SYNTHETIC stand-in: procedural silhouettes of
the same ten classes (:func:`synthetic_item`), labelled SYNTHETIC in :attr:`FashionMNIST.description`
and :attr:`FashionMNIST.source`. ``source="debian"`` raises instead.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError, MissingResourceError
from . import register_dataset

__all__ = [
    "FashionMNIST",
    "FashionMNISTZeroShot",
    "CLASS_NAMES",
    "CAPTION_TEMPLATES",
    "HELD_OUT_CLASSES",
    "DEBIAN_ROOT",
    "INSTALL_HINT",
    "FM_SPLITS",
    "IDXFormatError",
    "FashionMNISTMissingError",
    "SyntheticDataWarning",
    "read_idx",
    "write_idx",
    "caption",
    "seen_classes",
    "synthetic_item",
    "debian_available",
]

#: the ten classes, in label order (names used in prompts and captions)
CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
#: caption templates; ``{}`` is the class name
CAPTION_TEMPLATES = (
    "a photo of a {}.",
    "a picture of a {}.",
    "a grayscale photo of a {}.",
    "a low resolution photo of a {}.",
    "a product photo of a {}.",
    "an image of a {}.",
    "a small photo of a {}.",
    "a photo of the {}, a piece of clothing.",
)
#: classes a CLIP-like model is not trained on (zero-shot accuracy is reported on them)
HELD_OUT_CLASSES = ("trouser", "sneaker", "shirt")
#: where Debian's ``dataset-fashion-mnist`` installs the IDX files
DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install dataset-fashion-mnist"
FM_SPLITS = ("train", "test")
_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
# IDX element types: code -> big-endian numpy dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IDXFormatError(InputError):
    """A file that is not a valid IDX file (bad magic, unknown type, truncated); the message names it."""


class FashionMNISTMissingError(MissingResourceError, FileNotFoundError):
    """The Fashion-MNIST IDX files are not where they were looked for; the message says how to install them."""


class SyntheticDataWarning(UserWarning):
    """Real data was asked for by default but is not installed: a SYNTHETIC stand-in is served instead."""


# ---------------------------------------------------------------------------------------------- IDX files
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in an IDX file (``.gz`` or raw, decided by the file's first bytes, not its name)."""
    path = Path(path)
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    try:
        data = gzip.open(path, "rb").read() if gz else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise IDXFormatError(f"IDX file {str(path)!r}: cannot read it ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IDXFormatError(f"IDX file {str(path)!r}: bad magic number {data[:4].hex()} (expected 0000 then type and rank)")
    code, rank = data[2], data[3]
    if code not in _IDX_TYPES:
        raise IDXFormatError(f"IDX file {str(path)!r}: unknown element type 0x{code:02x} (known: {sorted(hex(c) for c in _IDX_TYPES)})")
    if len(data) < 4 + 4 * rank:
        raise IDXFormatError(f"IDX file {str(path)!r}: truncated header ({len(data)} bytes for rank {rank})")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=rank, offset=4))
    dtype = np.dtype(_IDX_TYPES[code])
    want = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = len(data) - 4 - 4 * rank
    if body != want:
        raise IDXFormatError(
            f"IDX file {str(path)!r}: header says shape {shape} ({want} bytes of data), the file holds {body} "
            f"({'truncated' if body < want else 'trailing bytes'})"
        )
    return np.frombuffer(data, dtype, offset=4 + 4 * rank).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzip when ``compress`` or the name ends in ``.gz``): for fixtures."""
    path = Path(path)
    array = np.asarray(array)
    code = next((c for c, t in _IDX_TYPES.items() if np.dtype(t).newbyteorder("=") == array.dtype.newbyteorder("=")), None)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + array.astype(_IDX_TYPES[code]).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path


def _find(root: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem):
        if (root / name).is_file():
            return root / name
    return None


def debian_available(root: str | os.PathLike | None = None) -> bool:
    """Whether the four IDX files are under ``root`` (default: :data:`DEBIAN_ROOT`)."""
    root = Path(root) if root is not None else DEBIAN_ROOT
    return all(_find(root, stem) is not None for files in _FILES.values() for stem in files)


# ---------------------------------------------------------------------------------------------- captions
def caption(label: int, template: int = 0, names: Sequence[str] = CLASS_NAMES) -> str:
    """The caption of class ``label`` from template number ``template``."""
    return CAPTION_TEMPLATES[template % len(CAPTION_TEMPLATES)].format(names[label])


def seen_classes(held_out: Sequence[str] = HELD_OUT_CLASSES) -> tuple[str, ...]:
    """The classes a model is trained on when ``held_out`` are kept for zero-shot evaluation."""
    unknown = [c for c in held_out if c not in CLASS_NAMES]
    if unknown:
        raise ValueError(f"held-out classes {unknown} are not Fashion-MNIST classes {CLASS_NAMES}")
    return tuple(c for c in CLASS_NAMES if c not in held_out)


# ---------------------------------------------------------------------------------------------- synthetic
def _silhouette(label: int, g: np.random.Generator) -> np.ndarray:
    """A filled 28x28 silhouette of class ``label`` with random size, position and proportions."""
    yy, xx = np.mgrid[0:28, 0:28].astype(np.float32)
    u = g.uniform(-1, 1, 6)
    cx, cy, s = 14 + 1.5 * u[0], 14 + 1.5 * u[1], 1 + 0.12 * u[2]
    x, y = (xx - cx) / s, (yy - cy) / s

    def box(x0, x1, y0, y1):
        return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)

    w = 1 + 0.1 * u[3]
    if label in (0, 2, 4, 6):  # tops: body + sleeves (short for t-shirt), collar / opening marks
        m = box(-6 * w, 6 * w, -9, 10)
        sleeve = 6 if label == 0 else 17
        m |= ((np.abs(x) > 5) & (np.abs(x) < 11 * w) & (y > -9) & (y < -9 + sleeve) & (np.abs(x) - 5 < (y + 12) * 0.9))
        img = m.astype(np.float32) * (0.55 + 0.3 * g.random())
        if label == 4:
            img[(np.abs(x) < 0.8) & (y > -7)] *= 0.3  # the coat's opening
        if label == 6:
            img[(np.abs(x) < 3) & (y < -6) & (np.abs(x) > y + 9)] = 1.0  # collar
            img[(np.abs(x) < 0.5) & (y > -6)] *= 0.5  # buttons line
        if label == 2:
            img[(y > 8) & m] *= 0.7  # ribbed hem
        return img
    if label == 1:  # trousers: two legs
        m = box(-6 * w, 6 * w, -11, -6) | (box(-6 * w, -0.8, -6, 12)) | (box(0.8, 6 * w, -6, 12))
        return m.astype(np.float32) * (0.5 + 0.3 * g.random())
    if label == 3:  # dress: narrow top widening downwards
        half = 3 + (y + 11) * 0.35 * w
        m = (np.abs(x) <= half) & (y >= -11) & (y <= 12)
        return m.astype(np.float32) * (0.5 + 0.4 * g.random())
    if label == 5:  # sandal: straps over a sole
        img = box(-11, 11, 3, 5).astype(np.float32) * 0.8
        for k in range(3):
            img[box(-9 + 7 * k, -7 + 7 * k + u[4], -3, 3)] = 0.6
        return img * (0.6 + 0.4 * g.random())
    if label == 7:  # sneaker: low shoe, toe to the left, light sole
        m = (y >= -3 + 0.25 * (x + 11) * (x < 0)) & (y <= 5) & (x >= -12) & (x <= 12)
        img = m.astype(np.float32) * (0.5 + 0.3 * g.random())
        img[box(-12, 12, 4, 6)] = 0.95
        return img
    if label == 8:  # bag: box with a handle
        img = box(-10 * w, 10 * w, -2, 10).astype(np.float32) * (0.45 + 0.4 * g.random())
        r = np.sqrt(x**2 + (y + 2) ** 2)
        img[(r > 6) & (r < 8) & (y < -2)] = 0.7
        return img
    # ankle boot: shaft + foot
    m = box(2, 9, -11, 6) | box(-11, 9, 0, 6)
    img = m.astype(np.float32) * (0.4 + 0.3 * g.random())
    img[box(-11, 9, 5, 7)] = 0.9
    return img


def synthetic_item(index: int, split: str = "train", seed: int = 0) -> tuple[np.ndarray, int]:
    """SYNTHETIC item ``index``: a uint8 28x28 silhouette of class ``index % 10`` with noise; deterministic
    per ``(seed, split, index)``."""
    label = index % len(CLASS_NAMES)
    g = np.random.default_rng([seed, FM_SPLITS.index(split), index])
    img = _silhouette(label, g)
    img = img * (0.8 + 0.4 * g.random()) + g.normal(0, 0.04, img.shape)
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), label


# ---------------------------------------------------------------------------------------------- dataset
@register_dataset("fashion-mnist")
class FashionMNIST(Dataset):
    """Fashion-MNIST images ``(1, 28, 28)`` in [0, 1] with labels and template captions.

    Args:
        split: ``"train"`` (60,000 real images) or ``"test"`` (10,000).
        root: a folder with the four IDX files (gzip or raw); default :data:`DEBIAN_ROOT`.
        source: ``"auto"`` (real when installed, else SYNTHETIC with a :class:`SyntheticDataWarning`),
            ``"debian"`` (real, else :class:`FashionMNISTMissingError`) or ``"synthetic"``.
        classes: keep only these classes (names or ids; labels stay the ten-class ids).
        size: the first ``size`` images after the class filter (``None``: all; SYNTHETIC: required
            size, default 2,000).
        seed: the SYNTHETIC generator's seed and the caption template draw.

    ``item = (image, label)``; :meth:`tensors` gives ``({"image": (N, 1, 28, 28)}, labels)`` and
    :meth:`captions` one template caption per item.
    """

    def __init__(
        self,
        split: str = "train",
        *,
        root: str | os.PathLike | None = None,
        source: str = "auto",
        classes: Sequence[str | int] | None = None,
        size: int | None = None,
        seed: int = 0,
    ) -> None:
        if split not in FM_SPLITS:
            raise ValueError(f"split must be one of {FM_SPLITS}, got {split!r}")
        if source not in ("auto", "debian", "synthetic"):
            raise ValueError(f"source must be 'auto', 'debian' or 'synthetic', got {source!r}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive int or None, got {size!r}")
        self.split, self.seed = split, seed
        self.class_ids = self._class_ids(classes)
        where = Path(root) if root is not None else DEBIAN_ROOT
        if source != "synthetic" and not debian_available(where):
            missing = [stem for files in _FILES.values() for stem in files if _find(where, stem) is None]
            msg = (
                f"Fashion-MNIST is not installed: {missing[0]}(.gz) is not in {str(where)!r}. Install Debian's "
                f"package with `{INSTALL_HINT}` (real images in {DEBIAN_ROOT}/), or pass root= to a folder "
                "holding the four IDX files"
            )
            if source == "debian" or root is not None:
                raise FashionMNISTMissingError(msg)
            warnings.warn(msg + "; serving a SYNTHETIC stand-in (procedural silhouettes, not real data)", SyntheticDataWarning, stacklevel=2)
            source = "synthetic"
        if source == "synthetic":
            self.source = "synthetic"
            self.root = None
            count = size or 2000
            items, i = [], 0
            while len(items) < count:  # labels cycle, so the class filter takes every 10th index per class
                if i % len(CLASS_NAMES) in self.class_ids:
                    items.append(synthetic_item(i, split, seed))
                i += 1
            self.images = np.stack([im for im, _ in items])
            self.labels = np.asarray([lb for _, lb in items], dtype=np.int64)
            self.description = f"SYNTHETIC Fashion-MNIST stand-in ({split}): procedural silhouettes, not real data; `{INSTALL_HINT}` for the real images"
        else:
            self.source = "fashion-mnist"
            self.root = where
            img_stem, lab_stem = _FILES[split]
            images, labels = read_idx(_find(where, img_stem)), read_idx(_find(where, lab_stem))
            if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
                raise IDXFormatError(f"Fashion-MNIST images in {str(where)!r} have shape {images.shape} / {images.dtype}, expected (N, 28, 28) uint8")
            if labels.ndim != 1 or len(labels) != len(images):
                raise IDXFormatError(f"Fashion-MNIST labels in {str(where)!r} have shape {labels.shape} for {len(images)} images")
            if not np.issubdtype(labels.dtype, np.integer):
                raise IDXFormatError(f"Fashion-MNIST labels in {str(where)!r} are {labels.dtype}, not class ids (integers)")
            if len(labels) and (labels.max() >= len(CLASS_NAMES) or labels.min() < 0):
                bad = int(labels.max()) if labels.max() >= len(CLASS_NAMES) else int(labels.min())
                raise IDXFormatError(f"Fashion-MNIST labels in {str(where)!r} hold class {bad}, ids must be in 0..{len(CLASS_NAMES) - 1}")
            keep = np.isin(labels, list(self.class_ids))
            self.images, self.labels = images[keep], labels[keep].astype(np.int64)
            if size is not None:
                self.images, self.labels = self.images[:size], self.labels[:size]
            self.description = f"Fashion-MNIST ({split}, real images from {str(where)})"
        g = np.random.default_rng([seed, 7, FM_SPLITS.index(split)])
        self.templates = g.integers(0, len(CAPTION_TEMPLATES), len(self.labels))

    @staticmethod
    def _class_ids(classes: Sequence[str | int] | None) -> tuple[int, ...]:
        if classes is None:
            return tuple(range(len(CLASS_NAMES)))
        ids = []
        for c in classes:
            if isinstance(c, str):
                if c not in CLASS_NAMES:
                    raise ValueError(f"unknown Fashion-MNIST class {c!r}; classes are {CLASS_NAMES}")
                ids.append(CLASS_NAMES.index(c))
            elif isinstance(c, (int, np.integer)) and 0 <= int(c) < len(CLASS_NAMES):
                ids.append(int(c))
            else:
                raise ValueError(f"classes must be names or ids in [0, {len(CLASS_NAMES)}), got {c!r}")
        if not ids:
            raise ValueError("classes= selects no class")
        return tuple(sorted(set(ids)))

    @property
    def synthetic(self) -> bool:
        return self.source == "synthetic"

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.images[i]).float().div(255).unsqueeze(0), int(self.labels[i])

    def captions(self, indices: Sequence[int] | None = None) -> list[str]:
        """One caption per item (its template drawn once per item from ``seed``)."""
        idx = range(len(self)) if indices is None else indices
        return [caption(int(self.labels[i]), int(self.templates[i])) for i in idx]

    def tensors(self, indices: Sequence[int] | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """``({"image": (N, 1, 28, 28) float in [0, 1]}, labels (N,))``."""
        idx = np.arange(len(self)) if indices is None else np.asarray(list(indices), dtype=np.int64)
        images = torch.from_numpy(self.images[idx].copy()).float().div(255).unsqueeze(1)
        return {"image": images}, torch.from_numpy(self.labels[idx].copy())

    def fingerprint(self) -> str:
        """Digest of the served images and labels (keys caches by content, never by path)."""
        h = hashlib.sha256()
        h.update(self.source.encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()[:16]


@register_dataset("fashion-mnist-zero-shot")
class FashionMNISTZeroShot(Dataset):
    """Fashion-MNIST for zero-shot classification: each example is ``{"image": (1, 28, 28) in [0, 1],
    "prompts": the class prompt set, "label": class id}``, the prompt set being one prompt per class
    (``template`` with the class's name, in label order) joined by
    :data:`~mmfusion_attacks.models.contrastive.PROMPT_SEPARATOR`: exactly what
    ``ZeroShotClassifier.batch`` gives a zero-shot FusionModel over the ten classes.

    ``split``, ``root``, ``source`` (``"auto"``: real when installed, else a SYNTHETIC stand-in with a
    :class:`SyntheticDataWarning`), ``size`` and ``seed`` are :class:`FashionMNIST`'s; :attr:`synthetic`
    and :attr:`description` say which images are served.
    """

    def __init__(
        self,
        split: str = "test",
        *,
        root: str | os.PathLike | None = None,
        source: str = "auto",
        size: int | None = None,
        seed: int = 0,
        template: str | None = None,
    ) -> None:
        from ..models.contrastive import DEFAULT_TEMPLATE, PROMPT_SEPARATOR

        template = DEFAULT_TEMPLATE if template is None else template
        if "{}" not in template or PROMPT_SEPARATOR.strip() in template:
            raise ValueError(f"template must hold '{{}}' (the class name) and no {PROMPT_SEPARATOR.strip()!r}, got {template!r}")
        self.images = FashionMNIST(split, root=root, source=source, size=size, seed=seed)  # warns when SYNTHETIC
        self.template = template
        self.prompt_text = PROMPT_SEPARATOR.join(template.format(name).strip() for name in CLASS_NAMES)
        self.split, self.seed, self.source = split, seed, self.images.source
        self.description = self.images.description + f"; zero-shot prompts {template!r} over the ten classes"

    @property
    def synthetic(self) -> bool:
        return self.images.synthetic

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image, label = self.images[i]
        return {"image": image, "prompts": self.prompt_text, "label": label}

    def tensors(self, indices: Sequence[int] | None = None) -> tuple[dict, torch.Tensor]:
        """``({"image": (N, 1, 28, 28), "prompts": N prompt sets}, labels (N,))``."""
        inputs, labels = self.images.tensors(indices)
        return {"image": inputs["image"], "prompts": [self.prompt_text] * len(labels)}, labels
