"""SYNTHETIC RGB-thermal street scenes (the embedded default; not real data).

Deterministic per index. The two sensors are complementary, as in the MF dataset: people and cars are
hot in thermal and visible at night only there; colour cones are at ambient temperature (invisible
in thermal) and visible only in RGB; at night the RGB image is dark and noisy. Labels use the MF
class ids (0 unlabeled, 1 car, 2 person, 3 bike, 4 curve, 5 car_stop, 6 guardrail, 7 color_cone, 8 bump);
the generator draws cars, people, bikes, curves and cones.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from . import register_dataset

__all__ = ["SyntheticRGBT", "MF_CLASSES"]

MF_CLASSES = ("unlabeled", "car", "person", "bike", "curve", "car_stop", "guardrail", "color_cone", "bump")
_SPLIT_OFFSET = {"train": 0, "val": 1_000_000, "test": 2_000_000}


def _box(mask: torch.Tensor, top: int, left: int, h: int, w: int) -> torch.Tensor:
    H, W = mask.shape
    out = torch.zeros_like(mask)
    out[max(top, 0) : min(top + h, H), max(left, 0) : min(left + w, W)] = True
    return out


def _ellipse(H: int, W: int, cy: float, cx: float, ry: float, rx: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def street(g: torch.Generator, H: int, W: int, night: bool | None = None):
    """The empty street every scene starts from: ``night, horizon, rgb (3, H, W), ir (H, W), ramp`` —
    sky and road in RGB, a vertical temperature ramp in thermal (draws from ``g`` in a fixed order)."""
    night = bool(torch.rand(1, generator=g) < 0.5) if night is None else night
    horizon = int(torch.randint(H // 4, H // 2, (1,), generator=g))
    rgb = torch.empty(3, H, W)
    sky = torch.tensor([0.55, 0.7, 0.9]) + 0.05 * (torch.rand(3, generator=g) - 0.5)
    road = torch.tensor([0.35, 0.35, 0.37]) + 0.05 * (torch.rand(3, generator=g) - 0.5)
    rgb[:, :horizon] = sky.view(3, 1, 1)
    rgb[:, horizon:] = road.view(3, 1, 1)
    rgb += 0.03 * torch.randn(3, H, W, generator=g)
    ramp = torch.linspace(0.15, 0.35, H).view(H, 1).expand(H, W)
    ir = (ramp + 0.02 * torch.randn(H, W, generator=g)).clone()
    return night, horizon, rgb, ir, ramp


def render_scene(seed: int, height: int = 48, width: int = 64, night: bool | None = None) -> dict:
    """One scene: ``rgb`` (3, H, W) and ``ir`` (1, H, W) in [0, 1], ``labels`` (H, W) int64, ``night``."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    def randint(lo, hi):
        return int(torch.randint(lo, hi, (1,), generator=g))

    H, W = height, width
    night, horizon, rgb, ir, ramp = street(g, H, W, night)
    labels = torch.zeros(H, W, dtype=torch.long)

    # curve: a bright kerb line on the road, slightly warm in thermal
    row = randint(horizon + 2, H - 2)
    kerb = _box(labels.bool(), row, 0, 2, W)
    labels[kerb] = 4
    rgb[:, kerb] = 0.85
    ir[kerb] += 0.08

    def place(cls: int, mask: torch.Tensor, colour: torch.Tensor, heat: float | None) -> None:
        """Draw an object; ``heat=None`` means ambient temperature (the background ramp shows through)."""
        labels[mask] = cls
        rgb[:, mask] = colour.view(3, 1)
        base = ramp[mask] if heat is None else heat
        ir[mask] = base + 0.03 * torch.randn(int(mask.sum()), generator=g)

    for _ in range(randint(1, 3)):  # cars: coloured boxes with dark windows, warm
        h, w = randint(H // 8, H // 4), randint(W // 6, W // 3)
        top, left = randint(horizon - h // 2, H - h), randint(0, W - w)
        body = _box(labels.bool(), top, left, h, w)
        place(1, body, rand(3) * 0.8 + 0.1, 0.6 + 0.1 * float(rand(1)))
        window = _box(labels.bool(), top + 1, left + w // 5, max(h // 3, 1), max(3 * w // 5, 1)) & body
        rgb[:, window] = 0.1
    for _ in range(randint(0, 3)):  # people: upright ellipses, hot
        ry, rx = H / randint(7, 10), W / randint(24, 32)
        cy, cx = randint(horizon, H - int(ry)), randint(int(rx), W - int(rx))
        place(2, _ellipse(H, W, cy, cx, ry, rx), rand(3) * 0.7 + 0.15, 0.9)
    if rand(1) < 0.4:  # a bike: two small wheels, mildly warm (rider-less, just ridden)
        cy, cx = randint(horizon + 2, H - 3), randint(4, W - 8)
        wheels = _ellipse(H, W, cy, cx, 2, 2) | _ellipse(H, W, cy, cx + 5, 2, 2)
        place(3, wheels, torch.tensor([0.1, 0.1, 0.1]), 0.45)
    for _ in range(randint(0, 3)):  # colour cones: orange, ambient temperature (invisible in thermal)
        cy, cx = randint(horizon + 2, H - 3), randint(2, W - 3)
        cone = _ellipse(H, W, cy, cx, 3, 2)
        place(7, cone, torch.tensor([1.0, 0.45, 0.05]), None)

    if night:
        rgb = 0.18 * rgb + 0.04 * torch.randn(3, H, W, generator=g)
    return {"rgb": rgb.clamp(0, 1), "ir": ir.clamp(0, 1).unsqueeze(0), "labels": labels, "night": night}


@register_dataset("synthetic-rgbt")
class SyntheticRGBT(Dataset):
    """SYNTHETIC RGB-T segmentation scenes with MF class ids; ``split`` picks disjoint seeds."""

    synthetic = True
    classes = MF_CLASSES

    def __init__(self, split: str = "train", size: int = 64, height: int = 48, width: int = 64, seed: int = 0) -> None:
        if split not in _SPLIT_OFFSET:
            raise ValueError(f"split must be one of {list(_SPLIT_OFFSET)}, got {split!r}")
        self.split, self.size, self.height, self.width, self.seed = split, size, height, width, seed

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(index)
        return render_scene(self.seed * 10_000_000 + _SPLIT_OFFSET[self.split] + index, self.height, self.width)
