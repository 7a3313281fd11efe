"""Loader for the public MF (MFNet) RGB-thermal segmentation dataset layout.

    root/images/<name>.png   480x640x4 uint8: channels 0-2 RGB, channel 3 thermal
    root/labels/<name>.png   480x640 uint8 class ids (0 unlabeled ... 8 bump)
    root/train.txt, val.txt, test.txt, test_day.txt, test_night.txt   one <name> per line

The dataset is distributed by the MFNet authors (Ha et al., IROS 2017); it is not bundled. Items are
``{"rgb": (3, H, W), "ir": (1, H, W)`` floats in [0, 1], ``"labels": (H, W)`` int64, ``"name": str}``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import Dataset

from . import register_dataset
from .synthetic_rgbt import MF_CLASSES

__all__ = ["MFDataset", "MF_SPLITS"]

MF_SPLITS = ("train", "val", "test", "test_day", "test_night")
_HOWTO = (
    "Get the MF dataset from the MFNet authors (Ha et al., IROS 2017; linked from the MFNet-pytorch and "
    "RTFNet repository READMEs) and pass its folder, which holds images/, labels/ and the split files"
)


@register_dataset("mf")
class MFDataset(Dataset):
    """The MF dataset from its public folder layout; ``size=(H, W)`` resizes (bilinear / nearest for labels)."""

    classes = MF_CLASSES
    synthetic = False

    def __init__(self, root: str | Path, split: str = "test", size: tuple[int, int] | None = None, limit: int | None = None) -> None:
        self.root = Path(root)
        if split not in MF_SPLITS:
            raise ValueError(f"split must be one of {MF_SPLITS}, got {split!r}")
        if not (self.root / "images").is_dir():
            raise FileNotFoundError(f"no MF dataset at {self.root} (missing images/). {_HOWTO}")
        split_file = self.root / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"split file {split_file} not found. {_HOWTO}")
        names = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        self.names = [n[:-4] if n.endswith(".png") else n for n in names][: limit if limit else None]
        self.split, self.size = split, tuple(size) if size else None

    def __len__(self) -> int:
        return len(self.names)

    def _read(self, folder: str, name: str) -> np.ndarray:
        path = self.root / folder / f"{name}.png"
        if not path.is_file():
            raise FileNotFoundError(f"MF {self.split} item '{name}': {path} is missing")
        return np.array(Image.open(path))  # a writable copy for torch.from_numpy

    def __getitem__(self, index: int) -> dict:
        name = self.names[index]
        image = self._read("images", name)
        if image.ndim != 3 or image.shape[2] != 4 or image.dtype != np.uint8:
            raise ValueError(f"MF image '{name}' must be HxWx4 uint8 (RGB + thermal), got {image.shape} {image.dtype}")
        labels = self._read("labels", name)
        if labels.ndim == 3:  # some copies store labels as RGB with equal channels
            labels = labels[..., 0]
        if labels.shape != image.shape[:2]:
            raise ValueError(f"MF labels '{name}' are {labels.shape}, image is {image.shape[:2]}")
        if labels.max() >= len(MF_CLASSES):
            raise ValueError(f"MF labels '{name}' contain class {int(labels.max())}; ids must be < {len(MF_CLASSES)}")
        x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
        y = torch.from_numpy(labels.astype(np.int64))
        if self.size and tuple(x.shape[1:]) != self.size:
            x = F.interpolate(x[None], size=self.size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)
            y = F.interpolate(y[None, None].float(), size=self.size, mode="nearest")[0, 0].long()
        return {"rgb": x[:3], "ir": x[3:], "labels": y, "name": name}
