"""Model wrappers for the segmentation-robustness analyses (Arnab et al., CVPR 2018).

Each wraps any segmentation :class:`FusionModel` and returns a new one with the same modalities,
so attacks, metrics and the grid treat them like any model:

- :func:`at_scale`: the model run on inputs resized by ``scale``, logits resized back (the 50% / 75%
  / 100% models of the transfer matrix).
- :func:`multiscale`: logits averaged over several scales (multiscale processing).
- :func:`random_resize_pad`: a randomised-input defence (Xie et al., ICLR 2018): each forward
  resizes by a random factor and pads at a random offset, then maps logits back. Attack it with EOT
  (``torchattacks.EOTPGD``), which averages gradients over the randomness.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..fusion import FusionModel

__all__ = ["at_scale", "multiscale", "random_resize_pad", "ScaledFusion", "RandomResizePad"]


def _round(value: float, multiple: int) -> int:
    """Nearest positive multiple of ``multiple`` (encoder-decoder nets need sizes divisible by their stride)."""
    return max(multiple, multiple * round(value / multiple))


def _resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))


def _image_size(fusion: FusionModel, inputs: dict) -> tuple[int, int]:
    for name, mod in fusion.modalities.items():
        if mod.kind == "image":
            return tuple(inputs[name].shape[-2:])
    raise ValueError("scale wrappers need at least one image modality")


def _resized_inputs(fusion: FusionModel, inputs: dict, size: tuple[int, int]) -> dict:
    return {n: (_resize(v, size) if fusion.modalities[n].kind == "image" else v) for n, v in inputs.items()}


class ScaledFusion(nn.Module):
    """Average of the wrapped model's logits over ``scales`` (one scale: a fixed-scale model)."""

    def __init__(self, fusion: FusionModel, scales: Sequence[float], size_multiple: int = 32) -> None:
        super().__init__()
        if fusion.task != "segmentation" or not scales or min(scales) <= 0:
            raise ValueError("ScaledFusion wraps a segmentation FusionModel with positive scales")
        self.fusion, self.scales, self.size_multiple = fusion, tuple(float(s) for s in scales), size_multiple

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        h, w = _image_size(self.fusion, inputs)
        total = 0
        for s in self.scales:
            size = (_round(h * s, self.size_multiple), _round(w * s, self.size_multiple))
            total = total + _resize(self.fusion(_resized_inputs(self.fusion, inputs, size)), (h, w))
        return total / len(self.scales)


class RandomResizePad(nn.Module):
    """Random resize to ``[min_scale, max_scale]`` and random zero-pad to ``max_scale``, logits mapped back."""

    def __init__(
        self, fusion: FusionModel, min_scale: float = 0.8, max_scale: float = 1.2, size_multiple: int = 32, mode: str = "nearest"
    ) -> None:
        super().__init__()
        if not 0 < min_scale <= max_scale:
            raise ValueError("need 0 < min_scale <= max_scale")
        self.fusion, self.min_scale, self.max_scale, self.size_multiple = fusion, min_scale, max_scale, size_multiple
        self.mode = mode

    def _one(self, inputs: dict, h: int, w: int) -> torch.Tensor:
        s = self.min_scale + (self.max_scale - self.min_scale) * float(torch.rand(()))
        rh, rw = max(1, round(h * s)), max(1, round(w * s))
        m = self.size_multiple
        ph, pw = m * -(-max(rh, round(h * self.max_scale)) // m), m * -(-max(rw, round(w * self.max_scale)) // m)
        top, left = int(torch.randint(0, ph - rh + 1, ())), int(torch.randint(0, pw - rw + 1, ()))
        pad = (left, pw - rw - left, top, ph - rh - top)
        padded = {
            n: (F.pad(_resize(v, (rh, rw), self.mode), pad) if self.fusion.modalities[n].kind == "image" else v)
            for n, v in inputs.items()
        }
        logits = self.fusion(padded)[..., top : top + rh, left : left + rw]
        return _resize(logits, (h, w))

    def forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """A fresh random transform for every sample (as the defence is applied per image)."""
        h, w = _image_size(self.fusion, inputs)
        n = next(v.shape[0] for v in inputs.values() if isinstance(v, torch.Tensor))
        rows = [self._one({k: v[i : i + 1] for k, v in inputs.items()}, h, w) for i in range(n)]
        return torch.cat(rows) if rows else self.fusion(inputs)


def _rewrap(fusion: FusionModel, module: nn.Module) -> FusionModel:
    return FusionModel(
        module,
        list(fusion.modalities.values()),
        task="segmentation",
        num_classes=fusion.num_classes,
        ignore_index=fusion.ignore_index,
    )


def at_scale(fusion: FusionModel, scale: float, size_multiple: int = 32) -> FusionModel:
    """``fusion`` evaluated at ``scale`` times the input resolution (rounded to ``size_multiple``)."""
    return _rewrap(fusion, ScaledFusion(fusion, [scale], size_multiple))


def multiscale(fusion: FusionModel, scales: Sequence[float] = (0.5, 0.75, 1.0), size_multiple: int = 32) -> FusionModel:
    """``fusion`` with logits averaged over ``scales``."""
    return _rewrap(fusion, ScaledFusion(fusion, scales, size_multiple))


def random_resize_pad(
    fusion: FusionModel, min_scale: float = 0.8, max_scale: float = 1.2, size_multiple: int = 32, mode: str = "nearest"
) -> FusionModel:
    """``fusion`` behind a random resize-and-pad input transform (a new draw at every forward); the
    input resize is nearest-neighbour as in Xie et al. (``mode="bilinear"`` also smooths perturbations)."""
    return _rewrap(fusion, RandomResizePad(fusion, min_scale, max_scale, size_multiple, mode))
