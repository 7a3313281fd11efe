"""SYNTHETIC RGB-thermal scene classification (the embedded default of the defences benchmark; not real data).

Each scene holds objects of one kind, which is its label: 0 car, 1 person, 2 cone. The sensors are
informative and only partly redundant, as in the RGB-T segmentation default: cars (boxes) and people
(upright ellipses) are hot in thermal, with different shapes and heat; cones are orange in RGB and at
ambient temperature (a cone scene looks empty in thermal); at night RGB is dark and noisy. So thermal
alone separates cars from people but not cones from a dark road, RGB alone is strong by day and weak
at night, and the fused model beats either. Deterministic per index.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from . import register_dataset
from .synthetic_rgbt import _box, _ellipse, street

__all__ = ["SyntheticRGBTScenes", "SCENE_CLASSES", "render_object_scene"]

SCENE_CLASSES = ("car", "person", "cone")
_SPLIT_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}


def render_object_scene(seed: int, label: int, height: int = 32, width: int = 40) -> dict:
    """One scene of ``SCENE_CLASSES[label]`` objects: ``rgb`` (3, H, W), ``ir`` (1, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    def randint(lo, hi):
        return int(torch.randint(lo, hi, (1,), generator=g))

    H, W = height, width
    night, horizon, rgb, ir, ramp = street(g, H, W)
    empty = torch.zeros(H, W, dtype=torch.bool)
    for _ in range(randint(1, 3)):
        if label == 0:  # car: a coloured box, warm
            h, w = randint(H // 6, H // 3), randint(W // 5, W // 3)
            mask = _box(empty, randint(horizon - h // 2, H - h), randint(0, W - w), h, w)
            colour, heat = rand(3) * 0.8 + 0.1, 0.6 + 0.1 * float(rand(1))
        elif label == 1:  # person: an upright ellipse, hot
            ry, rx = H / randint(5, 8), W / randint(14, 20)
            mask = _ellipse(H, W, randint(horizon, H - int(ry)), randint(int(rx) + 1, W - int(rx) - 1), ry, rx)
            colour, heat = rand(3) * 0.7 + 0.15, 0.9
        else:  # cone: orange, ambient temperature
            mask = _ellipse(H, W, randint(horizon + 2, H - 3), randint(2, W - 3), 3, 2)
            colour, heat = torch.tensor([1.0, 0.45, 0.05]), None
        rgb[:, mask] = colour.view(3, 1)
        base = ramp[mask] if heat is None else heat
        ir[mask] = base + 0.03 * torch.randn(int(mask.sum()), generator=g)
    if night:
        rgb = 0.18 * rgb + 0.04 * torch.randn(3, H, W, generator=g)
    return {"rgb": rgb.clamp(0, 1), "ir": ir.clamp(0, 1).unsqueeze(0), "label": label, "night": night}


@register_dataset("synthetic-rgbt-scenes")
class SyntheticRGBTScenes(Dataset):
    """SYNTHETIC RGB-T scene classification (car / person / cone); ``split`` picks disjoint seeds."""

    synthetic = True
    classes = SCENE_CLASSES

    def __init__(self, split: str = "train", size: int = 600, height: int = 32, width: int = 40, seed: int = 0) -> None:
        if split not in _SPLIT_OFFSET:
            raise ValueError(f"split must be one of {list(_SPLIT_OFFSET)}, got {split!r}")
        if size <= 0:
            raise ValueError(f"size must be > 0, got {size}")
        self.split, self.size, self.height, self.width, self.seed = split, size, height, width, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(index)
        return render_object_scene(self.seed * 10_000_000 + _SPLIT_OFFSET[self.split] + index, index % 3, self.height, self.width)

    def tensors(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The whole split as one named batch and its labels."""
        items = [self[i] for i in range(len(self))]
        batch = {k: torch.stack([it[k] for it in items]) for k in ("rgb", "ir")}
        return batch, torch.tensor([it["label"] for it in items])
